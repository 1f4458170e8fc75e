// Native routing through BPF_PROG_TEST_RUN: kelp_from_pod's native branch (bpf/lxc.c, routed past
// the node's stack to the uplink with the neighbour's MAC) and kelp_host_ingress's delivery of
// another node's pod's packet into a local pod (bpf/host.c: reverse translation, ingress policy,
// redirect_peer). lxc.o and host.o share their maps by pinning, as the agent loads them. The
// route lookup is the kernel's own (bpf_fib_lookup): the runs happen inside a test netns holding
// the pods' host veths, an uplink with an address, the routes to the other nodes' pod CIDRs and
// a neighbour entry, with forwarding on.
//
// What a run cannot show, the packet arriving in the other node's pod, test/netns/overlay.test.ts
// and test/e2e/multinode*.test.ts show with real packets between nodes in native mode.
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BpfObject, BpfProgram, inNetns } from '../../src/bpf';
import { DropReason, DropReasonName } from '../../src/datapath/drop';
import { masqConstants } from '../../src/datapath/nat';
import { TUNNEL_F_ENCAP } from '../../src/datapath/node-types';
import { applyPolicyMaps, policyMapsOf, setPolicyEnforcement } from '../../src/datapath/policy';
import type { PolicyEntry } from '../../src/datapath/policy-types';
import { IDENTITY_WORLD } from '../../src/datapath/policy-types';
import { serviceMapsOf, ServiceWriter } from '../../src/datapath/service';
import { Direction } from '../../src/datapath/structs';
import { OverlayMaps, tunnelMapsOf } from '../../src/datapath/tunnel';
import { loadWithVerifierLog, LXC_OBJECT, metricsId, metricsMaps, MetricsSnapshot, putEndpoint, readMetrics, TestEndpoint } from '../support/datapath';
import { cleanupAll, createNetns, mountBpffs, Netns } from '../support/netns';
import * as P from '../support/packet';

const HOST_OBJECT = path.join(path.dirname(LXC_OBJECT), 'host.o');
const FROM = Direction.FROM_POD;
const TO = Direction.TO_POD;

// This node: pods A and B in 10.79.0.0/24, uplink address 192.0.2.1. Node 3 (native, neighbour
// known) holds 10.79.2.0/24, node 4 (native, neighbour not yet resolved) 10.79.4.0/24, node 2
// (VXLAN) 10.79.1.0/24; 10.79.9.0/24 has a native entry but no route.
const POD_CIDR = '10.79.0.0/24';
const A: TestEndpoint = { ip: '10.79.0.2', ifindex: 0, epId: 101, flags: 0, mac: '02:aa:00:00:00:02', nodeMac: '02:ee:00:00:00:02' };
const B: TestEndpoint = { ip: '10.79.0.3', ifindex: 0, epId: 102, flags: 0, mac: '02:aa:00:00:00:03', nodeMac: '02:ee:00:00:00:03' };
const NODE_IP = '192.0.2.1';
const UPLINK_MAC = '02:dd:00:00:00:01';
const NODE3 = '192.0.2.3';
const NODE3_MAC = '02:dd:00:00:00:03';
const NODE4 = '192.0.2.4';
const REMOTE3 = '10.79.2.5';
const REMOTE3_DENIED = '10.79.2.66';
const REMOTE4 = '10.79.4.5';
const REMOTE_VXLAN = '10.79.1.5';
const UNROUTED = '10.79.9.5';
const ID_REMOTE_OK = 300;
const ID_REMOTE_DENIED = 301;

let node: Netns;
let lxc: BpfObject;
let host: BpfObject;
let tunnel: OverlayMaps;
let metrics: ReturnType<typeof metricsMaps>;
let uplink: number;

beforeAll(() => {
  node = createNetns('knt');
  for (const k of ['a', 'b'] as const) {
    node.ip('link', 'add', `h${k}`, 'type', 'veth', 'peer', 'name', `p${k}`);
    node.ip('link', 'set', `h${k}`, 'up');
  }
  node.ip('link', 'add', 'up0', 'address', UPLINK_MAC, 'mtu', '1500', 'type', 'veth', 'peer', 'name', 'up1');
  node.ip('link', 'set', 'up0', 'up');
  node.ip('link', 'set', 'up1', 'up');
  node.ip('addr', 'add', `${NODE_IP}/24`, 'dev', 'up0');
  node.ip('neigh', 'replace', NODE3, 'lladdr', NODE3_MAC, 'dev', 'up0', 'nud', 'permanent');
  node.ip('route', 'add', '10.79.2.0/24', 'via', NODE3, 'dev', 'up0');
  node.ip('route', 'add', '10.79.4.0/24', 'via', NODE4, 'dev', 'up0');
  node.exec('sysctl', ['-qw', 'net.ipv4.conf.all.forwarding=1']);
  A.ifindex = node.ifindex('ha');
  B.ifindex = node.ifindex('hb');
  uplink = node.ifindex('up0');

  const pinRoot = mountBpffs();
  lxc = loadWithVerifierLog(LXC_OBJECT, { pinRoot });
  host = loadWithVerifierLog(HOST_OBJECT, { pinRoot, constants: masqConstants({ podCidr: POD_CIDR, masqIp: NODE_IP }) });
  tunnel = tunnelMapsOf(lxc);
  metrics = metricsMaps(lxc);
  putEndpoint(lxc.map('kelp_endpoints'), A);
  putEndpoint(lxc.map('kelp_endpoints'), B);
});

afterAll(() => {
  host?.close();
  lxc?.close();
  cleanupAll();
});

beforeEach(() => {
  metrics.hash.clear();
  metrics.fwd.clear();
  for (const e of tunnel.entries()) tunnel.remove(e.cidr);
  tunnel.put({ cidr: '10.79.1.0/24', nodeIp: '192.0.2.2', flags: TUNNEL_F_ENCAP });
  for (const [cidr, nodeIp] of [['10.79.2.0/24', NODE3], ['10.79.4.0/24', NODE4], ['10.79.9.0/24', '192.0.2.9']]) tunnel.put({ cidr, nodeIp, flags: 0 });
  tunnel.setOverlayConfig({ mode: 'native', vni: 1, vxlanIfindex: 0 });
  setPolicyEnforcement(policyMapsOf(lxc), false);
  lxc.map('kelp_pct4').clear();
});

// --- packets and runs ------------------------------------------------------------------------

interface Eth {
  src: string;
  dst: string;
}
const fromA: Eth = { src: A.mac, dst: A.nodeMac };
const toNode3: Eth = { src: UPLINK_MAC, dst: NODE3_MAC };
/** As node 3's uplink sends it to this node. */
const arrived: Eth = { src: NODE3_MAC, dst: UPLINK_MAC };
const intoB: Eth = { src: B.nodeMac, dst: B.mac };

function tcp(eth: Eth, src: string, dst: string, o: { ttl?: number; sport?: number; dport?: number; flags?: number; payload?: number } = {}): Buffer {
  const { ttl = 64, sport = 43210, dport = 8080, flags = 0x02, payload = 0 } = o;
  return P.ethernet(
    { ...eth, type: P.ETH_P_IP },
    P.ipv4({ src, dst, proto: P.IPPROTO_TCP, ttl }, P.tcp({ sport, dport, src, dst, flags }, Buffer.alloc(payload, 0x6b))),
  );
}

interface RunResult {
  retval: number;
  data: Buffer;
  metrics: MetricsSnapshot;
}

function run(prog: BpfProgram, data: Buffer, ifindex: number, gso?: { size: number; segs: number }): RunResult {
  const ctx = P.skbCtx({ ifindex, gsoSize: gso?.size, gsoSegs: gso?.segs });
  const r = inNetns(node.path, () => prog.testRun({ data, ctx }));
  return { retval: r.retval, data: r.data, metrics: readMetrics(metrics) };
}

const fwd = (epId: number, dir: number) => metricsId(epId, dir, 0);
const dropped = (epId: number, dir: number, reason: DropReasonName) => metricsId(epId, dir, DropReason[reason]);

function policy(entries: PolicyEntry[]): void {
  const maps = policyMapsOf(lxc);
  applyPolicyMaps(maps, {
    ipcache: new Map([
      ['0.0.0.0/0', IDENTITY_WORLD],
      ['10.79.2.0/24', ID_REMOTE_OK],
      [`${REMOTE3_DENIED}/32`, ID_REMOTE_DENIED],
    ]),
    policy: entries,
    policies: new Map([[7, { ref: 'NetworkPolicy/default/t', ingress: [''], egress: [''] }]]),
  });
  setPolicyEnforcement(maps, true);
}

const ingress = (epId: number, identity: number, action: 'allow' | 'deny'): PolicyEntry => ({
  epId,
  identity,
  direction: 'ingress',
  port: 0,
  portPrefix: 0,
  verdict: { action, tier: 'networkpolicy', policyId: 7, rule: 0 },
});

// --- kelp_from_pod ---------------------------------------------------------------------------

describe('kelp_from_pod to a pod on another node, native routing', () => {
  it("routed here: to the uplink's egress with the neighbour's MAC and the uplink's, TTL-1, counted", () => {
    const r = run(lxc.program('kelp_from_pod'), tcp(fromA, A.ip, REMOTE3), A.ifindex);
    expect(r.retval).toBe(P.TC_ACT_REDIRECT);
    expect(r.data.equals(tcp(toNode3, A.ip, REMOTE3, { ttl: 63 }))).toBe(true);
    expect(P.parseIpv4(r.data.subarray(P.ETH_HLEN)).checksumOk).toBe(true);
    expect(r.metrics).toEqual({ [fwd(A.epId, FROM)]: { packets: 1, bytes: r.data.length } });
  });

  it('a next hop not resolved yet: redirected for the kernel to resolve (bpf_redirect_neigh), MACs untouched, TTL-1', () => {
    const r = run(lxc.program('kelp_from_pod'), tcp(fromA, A.ip, REMOTE4), A.ifindex);
    expect(r.retval).toBe(P.TC_ACT_REDIRECT);
    expect(r.data.equals(tcp(fromA, A.ip, REMOTE4, { ttl: 63 }))).toBe(true);
  });

  it('a pod CIDR the node has no route to, or a packet over the MTU: the stack\'s, untouched', () => {
    for (const [what, pkt] of [
      ['no route', tcp(fromA, A.ip, UNROUTED)],
      ['over the MTU', tcp(fromA, A.ip, REMOTE3, { flags: 0x18, payload: 1600 })],
    ] as const) {
      metrics.hash.clear();
      metrics.fwd.clear();
      const r = run(lxc.program('kelp_from_pod'), pkt, A.ifindex);
      expect(r.retval, what).toBe(P.TC_ACT_OK);
      expect(r.data.equals(pkt), what).toBe(true);
      expect(r.metrics, what).toEqual({ [fwd(A.epId, FROM)]: { packets: 1, bytes: pkt.length } });
    }
  });

  it('a GSO packet over the MTU is routed all the same (cut to its segments on the way out)', () => {
    const pkt = tcp(fromA, A.ip, REMOTE3, { flags: 0x18, payload: 2896 });
    const r = run(lxc.program('kelp_from_pod'), pkt, A.ifindex, { size: 1448, segs: 2 });
    expect(r.retval).toBe(P.TC_ACT_REDIRECT);
    expect(r.data.equals(tcp(toNode3, A.ip, REMOTE3, { flags: 0x18, payload: 2896, ttl: 63 }))).toBe(true);
  });

  it('TTL 1: dropped, TTL_EXCEEDED, as in VXLAN mode', () => {
    const r = run(lxc.program('kelp_from_pod'), tcp(fromA, A.ip, REMOTE3, { ttl: 1 }), A.ifindex);
    expect(r.retval).toBe(P.TC_ACT_SHOT);
    expect(Object.keys(r.metrics)).toEqual([dropped(A.epId, FROM, 'TTL_EXCEEDED')]);
  });
});

// --- kelp_host_ingress -----------------------------------------------------------------------

describe("kelp_host_ingress: another node's pod to a pod here, native routing", () => {
  it("straight into the pod (redirect_peer): the pod's MACs, TTL-1, counted to the pod", () => {
    const r = run(host.program('kelp_host_ingress'), tcp(arrived, REMOTE3, B.ip), uplink);
    expect(r.retval).toBe(P.TC_ACT_REDIRECT);
    expect(r.data.equals(tcp(intoB, REMOTE3, B.ip, { ttl: 63 }))).toBe(true);
    expect(P.parseIpv4(r.data.subarray(P.ETH_HLEN)).checksumOk).toBe(true);
    expect(r.metrics).toEqual({ [fwd(B.epId, TO)]: { packets: 1, bytes: r.data.length } });
  });

  it("the pod's ingress policy decides with the sender's identity: a denied one is dropped", () => {
    policy([ingress(B.epId, ID_REMOTE_OK, 'allow'), ingress(B.epId, ID_REMOTE_DENIED, 'deny')]);
    const denied = run(host.program('kelp_host_ingress'), tcp(arrived, REMOTE3_DENIED, B.ip), uplink);
    expect(denied.retval).toBe(P.TC_ACT_SHOT);
    expect(denied.metrics).toEqual({ [dropped(B.epId, TO, 'POLICY_DENY')]: { packets: 1, bytes: expect.any(Number) } });
    metrics.hash.clear();
    const allowed = run(host.program('kelp_host_ingress'), tcp(arrived, REMOTE3, B.ip), uplink);
    expect(allowed.retval).toBe(P.TC_ACT_REDIRECT);
    expect(allowed.metrics).toEqual({ [fwd(B.epId, TO)]: { packets: 1, bytes: allowed.data.length } });
  });

  it("the answer of a Service backend there to a pod here: the frontend put back as its source, then delivered", () => {
    const VIP = '10.96.0.10';
    const writer = new ServiceWriter(serviceMapsOf(lxc));
    const fe = { address: VIP, port: 80, protocol: 'TCP' as const, svcId: 1, setId: 1, count: 1, flags: 0, affinityTimeout: 0 };
    writer.apply({ frontends: [fe], sets: [{ setId: 1, backends: [{ backendId: 1, address: REMOTE3, port: 8080, flags: 0 }] }], sourceRanges: new Map(), names: new Map() });
    try {
      // A's SYN to the frontend: translated to the backend on node 3 and routed out.
      const out = run(lxc.program('kelp_from_pod'), tcp(fromA, A.ip, VIP, { dport: 80 }), A.ifindex);
      expect(out.retval).toBe(P.TC_ACT_REDIRECT);
      expect(P.parseIpv4(out.data.subarray(P.ETH_HLEN)).dst).toBe(REMOTE3);
      const back = run(host.program('kelp_host_ingress'), tcp(arrived, REMOTE3, A.ip, { sport: 8080, dport: 43210, flags: 0x12 }), uplink);
      expect(back.retval).toBe(P.TC_ACT_REDIRECT);
      const ip = P.parseIpv4(back.data.subarray(P.ETH_HLEN));
      expect({ src: ip.src, dst: ip.dst, ttl: ip.ttl, ok: ip.checksumOk }).toEqual({ src: VIP, dst: A.ip, ttl: 63, ok: true });
      expect(P.parsePorts(ip.payload)).toEqual({ sport: 80, dport: 43210 });
    } finally {
      writer.apply({ frontends: [], sets: [], sourceRanges: new Map(), names: new Map() });
      lxc.map('kelp_lb4_ct').clear();
    }
  });

  it("anything else addressed to a pod here is the stack's, untouched: a sender outside any native pod CIDR, a VXLAN entry's, TTL 1, no such pod", () => {
    for (const [what, pkt] of [
      ['outside sender', tcp(arrived, '198.51.100.7', B.ip)],
      ['VXLAN entry', tcp(arrived, REMOTE_VXLAN, B.ip)],
      ['TTL 1', tcp(arrived, REMOTE3, B.ip, { ttl: 1 })],
      ['no such pod', tcp(arrived, REMOTE3, '10.79.0.99')],
    ] as const) {
      const r = run(host.program('kelp_host_ingress'), pkt, uplink);
      expect(r.retval, what).toBe(P.TC_ACT_OK);
      expect(r.data.equals(pkt), what).toBe(true);
      expect(r.metrics, what).toEqual({});
    }
  });
});
