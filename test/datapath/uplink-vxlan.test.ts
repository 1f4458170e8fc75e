// VXLAN mode: the uplink's programs (bpf/host.c, loaded with the VXLAN port) let the encapsulated
// packets between this node and another through before any other work, through
// BPF_PROG_TEST_RUN. Each row pairs the tunnel packet with one the programs do work on, so a
// row fails when the early return is gone (a frontend on the tunnel's port would translate it)
// or too wide (a pod's datagram to that port would leave unmasqueraded).
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BpfObject, BpfProgram } from '../../src/bpf';
import { masqConstants } from '../../src/datapath/nat';
import { DEFAULT_VXLAN_PORT, TUNNEL_F_ENCAP } from '../../src/datapath/node-types';
import { serviceMapsOf, ServiceWriter } from '../../src/datapath/service';
import { FRONTEND_EXTERNAL, FRONTEND_NODEPORT } from '../../src/datapath/service-types';
import { OverlayMaps, tunnelMapsOf } from '../../src/datapath/tunnel';
import { loadWithVerifierLog, LXC_OBJECT, putEndpoint, TestEndpoint } from '../support/datapath';
import { cleanupAll, mountBpffs } from '../support/netns';
import * as P from '../support/packet';

const HOST_OBJECT = path.join(path.dirname(LXC_OBJECT), 'host.o');
const POD_CIDR = '10.80.0.0/24';
const POD: TestEndpoint = { ip: '10.80.0.2', ifindex: 1, epId: 101, flags: 0, mac: '02:aa:00:00:00:02', nodeMac: '02:ee:00:00:00:02' };
const NODE_IP = '192.0.2.1';
const NODE2 = '192.0.2.2';
const OUTSIDE = '198.51.100.7';
const PORT = DEFAULT_VXLAN_PORT;

let host: BpfObject;
let tunnel: OverlayMaps;
let services: ServiceWriter;

beforeAll(() => {
  host = loadWithVerifierLog(HOST_OBJECT, { pinRoot: mountBpffs(), constants: masqConstants({ podCidr: POD_CIDR, masqIp: NODE_IP, vxlanPort: PORT }) });
  tunnel = tunnelMapsOf(host);
  services = new ServiceWriter(serviceMapsOf(host));
  putEndpoint(host.map('kelp_endpoints'), POD);
  tunnel.put({ cidr: '10.80.1.0/24', nodeIp: NODE2, flags: TUNNEL_F_ENCAP });
  tunnel.put({ cidr: `${NODE2}/32`, nodeIp: NODE2, flags: TUNNEL_F_ENCAP });
});

afterAll(() => {
  host?.close();
  cleanupAll();
});

beforeEach(() => {
  for (const m of ['kelp_ct4', 'kelp_snat4', 'kelp_lb4_ct']) host.map(m).clear();
});

/** A UDP datagram to `dst`:PORT, as the VXLAN device sends them (any payload: the programs look no further). */
function toVxlanPort(src: string, dst: string): Buffer {
  return P.ethernet(
    { src: '02:dd:00:00:00:01', dst: '02:dd:00:00:00:02', type: P.ETH_P_IP },
    P.ipv4({ src, dst, proto: P.IPPROTO_UDP }, P.udp({ sport: 51234, dport: PORT, src, dst }, Buffer.alloc(64, 0x11))),
  );
}

function run(prog: BpfProgram, data: Buffer) {
  const r = prog.testRun({ data });
  return { retval: r.retval, data: r.data, ip: P.parseIpv4(r.data.subarray(P.ETH_HLEN)) };
}

/** A frontend on the VXLAN port at `address`, its backend the local pod. */
function frontendOnPort(address: string, flags: number): void {
  services.apply({
    frontends: [{ address, port: PORT, protocol: 'UDP', svcId: 1, setId: 1, count: 1, flags, affinityTimeout: 0 }],
    sets: [{ setId: 1, backends: [{ backendId: 1, address: POD.ip, port: 9000, flags: 0 }] }],
    sourceRanges: new Map(),
    names: new Map(),
  });
}

const noServices = () => services.apply({ frontends: [], sets: [], sourceRanges: new Map(), names: new Map() });

describe('VXLAN between nodes on the uplink', () => {
  it('ingress: from another node to the VXLAN port, passed untouched before the frontend lookup; from elsewhere, translated', () => {
    frontendOnPort(NODE_IP, FRONTEND_EXTERNAL | FRONTEND_NODEPORT);
    try {
      const tunnelled = toVxlanPort(NODE2, NODE_IP);
      const r = run(host.program('kelp_host_ingress'), tunnelled);
      expect(r.retval).toBe(P.TC_ACT_OK);
      expect(r.data.equals(tunnelled)).toBe(true);

      const other = run(host.program('kelp_host_ingress'), toVxlanPort(OUTSIDE, NODE_IP));
      expect(other.retval).toBe(P.TC_ACT_REDIRECT);
      expect(other.ip.dst).toBe(POD.ip);
    } finally {
      noServices();
    }
  });

  it('egress: the node to another node\'s VXLAN port, passed untouched; a pod\'s datagram to that port, masqueraded', () => {
    frontendOnPort(NODE2, 0);
    try {
      const tunnelled = toVxlanPort(NODE_IP, NODE2);
      const r = run(host.program('kelp_host_egress'), tunnelled);
      expect(r.retval).toBe(P.TC_ACT_OK);
      expect(r.data.equals(tunnelled)).toBe(true);
    } finally {
      noServices();
    }
    const pod = run(host.program('kelp_host_egress'), toVxlanPort(POD.ip, OUTSIDE));
    expect(pod.retval).toBe(P.TC_ACT_OK);
    expect(pod.ip.src).toBe(NODE_IP);
  });

  it('a host without the VXLAN port loaded (native mode) does its usual work on the same packet', () => {
    const native = loadWithVerifierLog(HOST_OBJECT, { pinRoot: mountBpffs(), constants: masqConstants({ podCidr: POD_CIDR, masqIp: NODE_IP }) });
    try {
      tunnelMapsOf(native).put({ cidr: `${NODE2}/32`, nodeIp: NODE2, flags: TUNNEL_F_ENCAP });
      putEndpoint(native.map('kelp_endpoints'), POD);
      const writer = new ServiceWriter(serviceMapsOf(native));
      writer.apply({
        frontends: [{ address: NODE_IP, port: PORT, protocol: 'UDP', svcId: 1, setId: 1, count: 1, flags: FRONTEND_EXTERNAL | FRONTEND_NODEPORT, affinityTimeout: 0 }],
        sets: [{ setId: 1, backends: [{ backendId: 1, address: POD.ip, port: 9000, flags: 0 }] }],
        sourceRanges: new Map(),
        names: new Map(),
      });
      const r = run(native.program('kelp_host_ingress'), toVxlanPort(NODE2, NODE_IP));
      expect(r.retval).toBe(P.TC_ACT_REDIRECT);
      expect(r.ip.dst).toBe(POD.ip);
    } finally {
      native.close();
    }
  });
});
