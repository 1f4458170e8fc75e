// The node's own service clients, per packet (bpf/host.c's kelp_host_egress and kelp_host_lo,
// the reply in lxc.o's kelp_from_pod) through BPF_PROG_TEST_RUN: the node's packet to a frontend
// is translated with checksums, handed to the backend's host veth with its MACs, tracked as the
// node's (LB_CT_F_HOST); what answers the node goes back into its stack as if it came in on lo
// (MACs zeroed). Both objects share the pinned maps, as on a node; the load-balancing maps are
// written by the agent's ServiceWriter.
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BpfMap, BpfObject, inNetns } from '../../src/bpf';
import { masqConstants, tuple4 } from '../../src/datapath/nat';
import { lb4CtEntry, LbCtDir, LbCtFlag, serviceMapsOf, ServiceWriter } from '../../src/datapath/service';
import { FRONTEND_EXTERNAL, FRONTEND_NODEPORT, FrontendEntry, ServiceMapsDesired } from '../../src/datapath/service-types';
import { endpointInfo, endpointKey } from '../../src/datapath/structs';
import { loadWithVerifierLog, LXC_OBJECT, TestEndpoint } from '../support/datapath';
import { cleanupAll, createNetns, mountBpffs, Netns, onCleanup } from '../support/netns';
import * as P from '../support/packet';

const HOST_OBJECT = path.join(__dirname, '../../build/bpf/host.o');
const NODE_IP = '192.168.50.2';
const POD_CIDR = '10.244.1.0/24';
const POD_A = '10.244.1.5';
const NODE_MAC = '02:00:00:00:00:01';
const GW_MAC = '02:00:00:00:00:fe';
const ZERO_MAC = '00:00:00:00:00:00';
const LO = 1;
const B: TestEndpoint = { ip: '10.244.1.7', ifindex: 0, epId: 301, flags: 0, mac: '02:aa:00:00:02:07', nodeMac: '02:ee:00:00:02:07' };
const VIP = '10.96.0.10';
const VIP_EMPTY = '10.96.0.11';
const VIP_SELF = '10.96.0.12';
const NODEPORT = 30080;

let node: Netns;
let host: BpfObject;
let lxc: BpfObject;
let ct: BpfMap;

beforeAll(() => {
  node = createNetns('khs');
  node.ip('link', 'add', 'hb', 'type', 'veth', 'peer', 'name', 'pb');
  B.ifindex = node.ifindex('hb');
  const pinRoot = mountBpffs();
  host = loadWithVerifierLog(HOST_OBJECT, { pinRoot, constants: masqConstants({ podCidr: POD_CIDR, masqIp: NODE_IP }) });
  lxc = loadWithVerifierLog(LXC_OBJECT, { pinRoot });
  host.map('kelp_endpoints').update(endpointKey.encode({ ip4: B.ip }), endpointInfo.encode(B));
  ct = host.map('kelp_lb4_ct');
  const fe = (address: string, port: number, setId: number, count: number, flags = 0): FrontendEntry => ({ address, port, protocol: 'TCP', svcId: setId || 3, setId, count, flags, affinityTimeout: 0 });
  const desired: ServiceMapsDesired = {
    frontends: [
      fe(VIP, 80, 10, 1),
      fe(NODE_IP, NODEPORT, 10, 1, FRONTEND_EXTERNAL | FRONTEND_NODEPORT),
      fe(VIP_EMPTY, 80, 0, 0),
      fe(VIP_SELF, 80, 11, 1),
    ],
    sets: [
      { setId: 10, backends: [{ backendId: 1, address: B.ip, port: 8080, flags: 1 }] },
      // A hostNetwork backend: the node itself.
      { setId: 11, backends: [{ backendId: 2, address: NODE_IP, port: 8080, flags: 1 }] },
    ],
    sourceRanges: new Map(),
    names: new Map([
      [10, 'default/web:http'],
      [3, 'default/empty:http'],
      [11, 'default/self:http'],
    ]),
  };
  new ServiceWriter(serviceMapsOf(host)).apply(desired);
  onCleanup(() => {
    lxc.close();
    host.close();
  });
});

afterAll(cleanupAll);

beforeEach(() => ct.clear());

interface Out {
  retval: number;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  eth: P.ParsedEth;
  tcp: Buffer;
}

function pseudoSum(src: string, dst: string, proto: number, len: number): Buffer {
  return Buffer.concat([P.ipBytes(src), P.ipBytes(dst), Buffer.from([0, proto, len >> 8, len & 0xff])]);
}

function run(prog: string, frame: Buffer, ifindex: number): Out {
  const obj = prog === 'kelp_from_pod' ? lxc : host;
  const r = inNetns(node.path, () => obj.program(prog).testRun({ data: frame, ctx: P.skbCtx({ ifindex }) }));
  const eth = P.parseEthernet(r.data);
  const ip = P.parseIpv4(eth.payload);
  expect(ip.checksumOk, 'IPv4 header checksum').toBe(true);
  expect(P.inetChecksum(Buffer.concat([pseudoSum(ip.src, ip.dst, ip.proto, ip.payload.length), ip.payload])), 'TCP checksum').toBe(0);
  return { retval: r.retval, src: ip.src, dst: ip.dst, ...P.parsePorts(ip.payload), eth, tcp: ip.payload };
}

function segment(l2: { src: string; dst: string }, src: string, dst: string, sport: number, dport: number, o: { flags?: number; seq?: number; ack?: number } = {}): Buffer {
  return P.ethernet({ ...l2, type: P.ETH_P_IP }, P.ipv4({ src, dst, proto: P.IPPROTO_TCP }, P.tcp({ src, dst, sport, dport, ...o })));
}

/** The node's own packet: on lo (MACs zero) or leaving by the uplink (its MAC, the gateway's). */
const onLo = (dst: string, sport: number, dport: number, o = {}) => segment({ src: ZERO_MAC, dst: ZERO_MAC }, NODE_IP, dst, sport, dport, o);
const outUplink = (src: string, dst: string, sport: number, dport: number, o = {}) => segment({ src: NODE_MAC, dst: GW_MAC }, src, dst, sport, dport, o);

function forwardEntry(frontend: string) {
  return ct
    .lookupBatch()
    .map(([k, v]) => ({ key: tuple4.decode(k), value: lb4CtEntry.decode(v) }))
    .find((e) => e.key.dir === LbCtDir.FORWARD && e.key.daddr === frontend);
}

describe("the node's own clients, per packet", () => {
  it("kelp_host_lo: the node's packet to its own NodePort goes to the backend pod's host veth (address, port, MACs, checksums), tracked as the node's; the reply comes back into its stack through lo with the NodePort as its source", () => {
    const out = run('kelp_host_lo', onLo(NODE_IP, 40000, NODEPORT, { flags: 0x02, seq: 100 }), LO);
    expect(out).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: NODE_IP, dst: B.ip, sport: 40000, dport: 8080 });
    expect({ dst: out.eth.dst, src: out.eth.src }).toEqual({ dst: B.mac, src: B.nodeMac });
    expect(forwardEntry(NODE_IP)?.value).toMatchObject({ address: B.ip, port: 8080, flags: LbCtFlag.HOST });

    const reply = run('kelp_from_pod', segment({ src: B.mac, dst: B.nodeMac }, B.ip, NODE_IP, 8080, 40000, { flags: 0x12, seq: 900, ack: 101 }), B.ifindex);
    expect(reply).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: NODE_IP, dst: NODE_IP, sport: NODEPORT, dport: 40000 });
    expect({ dst: reply.eth.dst, src: reply.eth.src }).toEqual({ dst: ZERO_MAC, src: ZERO_MAC });
  });

  it("kelp_host_egress: the node's packet to a VIP it routes out of the uplink is translated into the backend's veth; a pod's packet to it is kelp_from_pod's business and only masqueraded", () => {
    const out = run('kelp_host_egress', outUplink(NODE_IP, VIP, 40001, 80, { flags: 0x02 }), B.ifindex);
    expect(out).toMatchObject({ retval: P.TC_ACT_REDIRECT, dst: B.ip, dport: 8080 });
    expect(out.eth.dst).toBe(B.mac);
    expect(forwardEntry(VIP)?.value.flags).toBe(LbCtFlag.HOST);

    const pod = run('kelp_host_egress', outUplink(POD_A, VIP, 40002, 80, { flags: 0x02 }), B.ifindex);
    expect(pod).toMatchObject({ retval: P.TC_ACT_OK, src: NODE_IP, dst: VIP, dport: 80 });
  });

  it('no backend: the SYN comes back as a RST from the frontend, into the node\'s stack (MACs zero)', () => {
    const out = run('kelp_host_egress', outUplink(NODE_IP, VIP_EMPTY, 40003, 80, { flags: 0x02, seq: 5000 }), B.ifindex);
    expect(out).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: VIP_EMPTY, dst: NODE_IP, sport: 80, dport: 40003 });
    expect({ dst: out.eth.dst, src: out.eth.src }).toEqual({ dst: ZERO_MAC, src: ZERO_MAC });
    const flags = out.tcp.readUInt8(13);
    expect({ rst: (flags & 0x04) !== 0, ack: out.tcp.readUInt32BE(8) }).toEqual({ rst: true, ack: 5001 });
  });

  it('a backend on the node itself (hostNetwork): back into its stack, the frontend as the source (hairpin)', () => {
    const out = run('kelp_host_egress', outUplink(NODE_IP, VIP_SELF, 40004, 80, { flags: 0x02 }), B.ifindex);
    expect(out).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: VIP_SELF, dst: NODE_IP, sport: 40004, dport: 8080 });
    expect({ dst: out.eth.dst, src: out.eth.src }).toEqual({ dst: ZERO_MAC, src: ZERO_MAC });
  });

  it('the rest of the node\'s loopback traffic passes untouched and untracked', () => {
    const out = run('kelp_host_lo', onLo('127.0.0.1', 40005, 8080), LO);
    expect(out).toMatchObject({ retval: P.TC_ACT_OK, dst: '127.0.0.1', dport: 8080 });
    expect(ct.keys()).toHaveLength(0);
  });
});
