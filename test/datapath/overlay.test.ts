// The cross-node datapath through BPF_PROG_TEST_RUN: kelp_from_pod's remote branch (bpf/lxc.c)
// and kelp_from_overlay / kelp_to_overlay (bpf/overlay.c), one row per packet, asserting
// verdict, output bytes, the event and kelp_metrics. lxc.o and overlay.o share their maps by
// pinning, as the agent loads them; the tunnel maps are written through their writer
// (OverlayMaps). BPF_PROG_TEST_RUN looks skb->ifindex up in the caller's netns, so the runs
// happen inside a test netns holding the veths and a real VXLAN device.
//
// What a run cannot show, the tunnel key the packet leaves with, test/netns/overlay.test.ts
// shows with real packets between nodes.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BpfObject, BpfProgram, inNetns } from '../../src/bpf';
import { DropReason, DropReasonName } from '../../src/datapath/drop';
import type { KelpEvent } from '../../src/datapath/events';
import { TUNNEL_F_ENCAP } from '../../src/datapath/node-types';
import { applyPolicyMaps, policyMapsOf, setPolicyEnforcement } from '../../src/datapath/policy';
import type { PolicyEntry } from '../../src/datapath/policy-types';
import { IDENTITY_WORLD } from '../../src/datapath/policy-types';
import { serviceMapsOf, ServiceWriter } from '../../src/datapath/service';
import { FRONTEND_EXTERNAL, FRONTEND_NODEPORT } from '../../src/datapath/service-types';
import { Direction } from '../../src/datapath/structs';
import { OverlayMaps, tunnelMapsOf } from '../../src/datapath/tunnel';
import {
  EventCollector,
  loadWithVerifierLog,
  LXC_OBJECT,
  metricsId,
  metricsMaps,
  MetricsSnapshot,
  putEndpoint,
  readMetrics,
  TestEndpoint,
} from '../support/datapath';
import { cleanupAll, createNetns, mountBpffs, Netns, onCleanup } from '../support/netns';
import * as P from '../support/packet';

const OVERLAY_OBJECT = LXC_OBJECT.replace(/lxc\.o$/, 'overlay.o');
const FROM = Direction.FROM_POD;
const TO = Direction.TO_POD;

// Pods A and B on this node (10.78.0.0/24); node 2 holds 10.78.1.0/24 (VXLAN), node 3
// 10.78.2.0/24 (native).
const A: TestEndpoint = { ip: '10.78.0.2', ifindex: 0, epId: 101, flags: 0, mac: '02:aa:00:00:00:02', nodeMac: '02:ee:00:00:00:02' };
const B: TestEndpoint = { ip: '10.78.0.3', ifindex: 0, epId: 102, flags: 0, mac: '02:aa:00:00:00:03', nodeMac: '02:ee:00:00:00:03' };
const REMOTE_VXLAN = '10.78.1.5';
const REMOTE_NATIVE = '10.78.2.5';
const UNKNOWN_REMOTE = '10.78.9.5';
const NODE2 = '192.0.2.2';
const NODE3 = '192.0.2.3';
const VNI = 42;
const VXLAN_MAC = '02:cc:00:00:00:01';
/** The sending node's VXLAN MAC, as inner frames arrive here. */
const PEER_VXLAN_MAC = '02:cc:00:00:00:02';
/** Identities this node's policy compiler gives the remote pods. */
const ID_REMOTE_OK = 300;
const ID_REMOTE_DENIED = 301;

let node: Netns;
let lxc: BpfObject;
let overlay: BpfObject;
let tunnel: OverlayMaps;
let metrics: ReturnType<typeof metricsMaps>;
let collector: EventCollector;
let vxlanIfindex: number;

beforeAll(() => {
  node = createNetns('kov');
  for (const k of ['a', 'b'] as const) node.ip('link', 'add', `h${k}`, 'type', 'veth', 'peer', 'name', `p${k}`);
  node.ip('link', 'add', 'kelp_vxlan', 'type', 'vxlan', 'external', 'dstport', '8472', 'nolearning');
  node.ip('link', 'set', 'kelp_vxlan', 'address', VXLAN_MAC, 'up');
  A.ifindex = node.ifindex('ha');
  B.ifindex = node.ifindex('hb');
  vxlanIfindex = node.ifindex('kelp_vxlan');

  const pinRoot = mountBpffs();
  lxc = loadWithVerifierLog(LXC_OBJECT, { pinRoot, constants: { KELP_TRACE: 1 } });
  overlay = loadWithVerifierLog(OVERLAY_OBJECT, { pinRoot, constants: { KELP_TRACE: 1 } });
  onCleanup(() => {
    collector.close();
    overlay.close();
    lxc.close();
  });
  tunnel = tunnelMapsOf(lxc);
  metrics = metricsMaps(lxc);
  collector = new EventCollector(lxc.map('kelp_events'));
  putEndpoint(lxc.map('kelp_endpoints'), A);
  putEndpoint(lxc.map('kelp_endpoints'), B);
});

afterAll(cleanupAll);

beforeEach(() => {
  metrics.hash.clear();
  metrics.fwd.clear();
  collector.events.length = 0;
  for (const e of tunnel.entries()) tunnel.remove(e.cidr);
  tunnel.put({ cidr: '10.78.1.0/24', nodeIp: NODE2, flags: TUNNEL_F_ENCAP });
  tunnel.put({ cidr: '10.78.2.0/24', nodeIp: NODE3, flags: 0 });
  tunnel.setOverlayConfig({ mode: 'vxlan', vni: VNI, vxlanIfindex, vxlanMac: VXLAN_MAC });
  setPolicyEnforcement(policyMapsOf(lxc), false);
});

// --- packets ---------------------------------------------------------------------------------

interface Eth {
  src: string;
  dst: string;
}
const fromA: Eth = { src: A.mac, dst: A.nodeMac };
const overVxlan: Eth = { src: VXLAN_MAC, dst: VXLAN_MAC };
const arrived: Eth = { src: PEER_VXLAN_MAC, dst: PEER_VXLAN_MAC };
const intoB: Eth = { src: B.nodeMac, dst: B.mac };

function udp(eth: Eth, src: string, dst: string, ttl = 64): Buffer {
  return P.ethernet(
    { ...eth, type: P.ETH_P_IP },
    P.ipv4({ src, dst, proto: P.IPPROTO_UDP, ttl }, P.udp({ sport: 40000, dport: 53, src, dst }, Buffer.from('kelp overlay test'))),
  );
}

function tcpSyn(eth: Eth, src: string, dst: string, ttl = 64, dport = 8080): Buffer {
  return P.ethernet({ ...eth, type: P.ETH_P_IP }, P.ipv4({ src, dst, proto: P.IPPROTO_TCP, ttl }, P.tcp({ sport: 43210, dport, src, dst, flags: 0x02 })));
}

// --- runs ------------------------------------------------------------------------------------

interface RunResult {
  retval: number;
  data: Buffer;
  metrics: MetricsSnapshot;
}

function run(prog: BpfProgram, data: Buffer, ifindex: number): RunResult {
  const r = inNetns(node.path, () => prog.testRun({ data, ctx: P.skbCtx({ ifindex }) }));
  return { retval: r.retval, data: r.data, metrics: readMetrics(metrics) };
}

const fwd = (epId: number, dir: number) => metricsId(epId, dir, 0);
const dropped = (epId: number, dir: number, reason: DropReasonName) => metricsId(epId, dir, DropReason[reason]);

/** The first event so far (or arriving within 5 s) that matches. */
async function nextEvent(match: (e: KelpEvent) => boolean): Promise<KelpEvent> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const e = collector.events.find(match);
    if (e) return e;
    if (Date.now() > deadline) throw new Error(`no matching event; got ${JSON.stringify(collector.events)}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('kelp_from_pod to a pod on another node', () => {
  it('VXLAN: redirected to the VXLAN device, inner MACs the device\'s own, TTL-1, counted, traced', async () => {
    const r = run(lxc.program('kelp_from_pod'), udp(fromA, A.ip, REMOTE_VXLAN), A.ifindex);
    expect(r.retval).toBe(P.TC_ACT_REDIRECT);
    expect(r.data.equals(udp(overVxlan, A.ip, REMOTE_VXLAN, 63))).toBe(true);
    expect(P.parseIpv4(r.data.subarray(P.ETH_HLEN)).checksumOk).toBe(true);
    expect(r.metrics).toEqual({ [fwd(A.epId, FROM)]: { packets: 1, bytes: r.data.length } });
    const ev = await nextEvent((e) => e.kind === 'trace' && e.point === 'to-overlay');
    expect(ev).toMatchObject({ kind: 'trace', point: 'to-overlay', targetIfindex: vxlanIfindex, epId: A.epId, saddr: A.ip, daddr: REMOTE_VXLAN });
  });

  it('native, no route to it here: passed to the stack unchanged (native.test.ts: the routed rows)', () => {
    const pkt = tcpSyn(fromA, A.ip, REMOTE_NATIVE);
    const r = run(lxc.program('kelp_from_pod'), pkt, A.ifindex);
    expect(r.retval).toBe(P.TC_ACT_OK);
    expect(r.data.equals(pkt)).toBe(true);
    expect(r.metrics).toEqual({ [fwd(A.epId, FROM)]: { packets: 1, bytes: pkt.length } });
  });

  it('an address no tunnel entry covers is the stack\'s, as before', () => {
    const pkt = udp(fromA, A.ip, UNKNOWN_REMOTE);
    const r = run(lxc.program('kelp_from_pod'), pkt, A.ifindex);
    expect(r.retval).toBe(P.TC_ACT_OK);
    expect(r.data.equals(pkt)).toBe(true);
  });

  it('a VXLAN entry while no VXLAN device is configured: dropped, NO_TUNNEL', async () => {
    tunnel.setOverlayConfig({ mode: 'native', vni: VNI, vxlanIfindex: 0 });
    const r = run(lxc.program('kelp_from_pod'), udp(fromA, A.ip, REMOTE_VXLAN), A.ifindex);
    expect(r.retval).toBe(P.TC_ACT_SHOT);
    expect(r.metrics).toEqual({ [dropped(A.epId, FROM, 'NO_TUNNEL')]: { packets: 1, bytes: expect.any(Number) } });
    const ev = await nextEvent((e) => e.kind === 'drop' && e.reasonName === 'NO_TUNNEL');
    expect(ev).toMatchObject({ reasonName: 'NO_TUNNEL', epId: A.epId, daddr: REMOTE_VXLAN });
  });

  it('TTL 1: dropped, TTL_EXCEEDED', () => {
    const r = run(lxc.program('kelp_from_pod'), udp(fromA, A.ip, REMOTE_VXLAN, 1), A.ifindex);
    expect(r.retval).toBe(P.TC_ACT_SHOT);
    expect(Object.keys(r.metrics)).toEqual([dropped(A.epId, FROM, 'TTL_EXCEEDED')]);
  });

  it("egress policy: a remote identity A may not reach is dropped before it leaves, one it may reach is encapsulated", async () => {
    policy([
      egress(A.epId, ID_REMOTE_OK, 'allow'),
      egress(A.epId, ID_REMOTE_DENIED, 'deny'),
      ingress(B.epId, ID_REMOTE_OK, 'allow'),
      ingress(B.epId, ID_REMOTE_DENIED, 'deny'),
    ]);
    const denied = run(lxc.program('kelp_from_pod'), udp(fromA, A.ip, '10.78.1.66'), A.ifindex);
    expect(denied.retval).toBe(P.TC_ACT_SHOT);
    expect(Object.keys(denied.metrics)).toEqual([dropped(A.epId, FROM, 'POLICY_DENY')]);
    const ev = await nextEvent((e) => e.kind === 'drop' && e.reasonName === 'POLICY_DENY');
    expect(ev).toMatchObject({ reasonName: 'POLICY_DENY', epId: A.epId, daddr: '10.78.1.66', policy: { policyId: 7, action: 'deny' } });

    const allowed = run(lxc.program('kelp_from_pod'), udp(fromA, A.ip, REMOTE_VXLAN), A.ifindex);
    expect(allowed.retval).toBe(P.TC_ACT_REDIRECT);
  });
});

describe('kelp_from_overlay: decapsulated packets from other nodes', () => {
  it('to a local endpoint: into its pod (redirect_peer), MACs the pod\'s, TTL-1, counted to the pod', async () => {
    const r = run(overlay.program('kelp_from_overlay'), udp(arrived, REMOTE_VXLAN, B.ip), vxlanIfindex);
    expect(r.retval).toBe(P.TC_ACT_REDIRECT);
    expect(r.data.equals(udp(intoB, REMOTE_VXLAN, B.ip, 63))).toBe(true);
    expect(r.metrics).toEqual({ [fwd(B.epId, TO)]: { packets: 1, bytes: r.data.length } });
    const ev = await nextEvent((e) => e.kind === 'trace' && e.point === 'to-endpoint');
    expect(ev).toMatchObject({ point: 'to-endpoint', targetIfindex: B.ifindex, epId: B.epId });
  });

  it('to anything else: the node\'s stack, untouched', () => {
    for (const dst of ['10.78.0.99', '192.0.2.1']) {
      const pkt = udp(arrived, REMOTE_VXLAN, dst);
      const r = run(overlay.program('kelp_from_overlay'), pkt, vxlanIfindex);
      expect(r.retval, dst).toBe(P.TC_ACT_OK);
      expect(r.data.equals(pkt), dst).toBe(true);
      expect(r.metrics, dst).toEqual({});
    }
  });

  it("the receiver's ingress policy decides with the sender's identity from kelp_ipcache4", async () => {
    policy([ingress(B.epId, ID_REMOTE_OK, 'allow'), ingress(B.epId, ID_REMOTE_DENIED, 'deny'), egress(A.epId, ID_REMOTE_OK, 'allow')]);
    const denied = run(overlay.program('kelp_from_overlay'), tcpSyn(arrived, '10.78.1.66', B.ip), vxlanIfindex);
    expect(denied.retval).toBe(P.TC_ACT_SHOT);
    expect(Object.keys(denied.metrics)).toEqual([dropped(B.epId, TO, 'POLICY_DENY')]);
    const ev = await nextEvent((e) => e.kind === 'drop' && e.reasonName === 'POLICY_DENY');
    expect(ev).toMatchObject({ reasonName: 'POLICY_DENY', epId: B.epId, saddr: '10.78.1.66', policy: { policyId: 7, action: 'deny' } });

    const allowed = run(overlay.program('kelp_from_overlay'), tcpSyn(arrived, REMOTE_VXLAN, B.ip), vxlanIfindex);
    expect(allowed.retval).toBe(P.TC_ACT_REDIRECT);
  });

  it("to this node's NodePort with a local backend (a remote pod's packet to the node address rides the tunnel): translated and delivered", () => {
    const NODE_IP = '192.0.2.1';
    const writer = new ServiceWriter(serviceMapsOf(lxc));
    const nodePort = { address: NODE_IP, port: 30080, protocol: 'TCP' as const, svcId: 1, setId: 1, count: 1, flags: FRONTEND_EXTERNAL | FRONTEND_NODEPORT, affinityTimeout: 0 };
    writer.apply({ frontends: [nodePort], sets: [{ setId: 1, backends: [{ backendId: 1, address: B.ip, port: 8080, flags: 0 }] }], sourceRanges: new Map(), names: new Map() });
    try {
      const r = run(overlay.program('kelp_from_overlay'), tcpSyn(arrived, REMOTE_VXLAN, NODE_IP, 64, 30080), vxlanIfindex);
      expect(r.retval).toBe(P.TC_ACT_REDIRECT);
      const eth = P.parseEthernet(r.data);
      expect({ src: eth.src, dst: eth.dst }).toEqual(intoB);
      const ip = P.parseIpv4(r.data.subarray(P.ETH_HLEN));
      expect({ src: ip.src, dst: ip.dst, ttl: ip.ttl, ok: ip.checksumOk }).toEqual({ src: REMOTE_VXLAN, dst: B.ip, ttl: 63, ok: true });
      expect(P.parsePorts(ip.payload)).toEqual({ sport: 43210, dport: 8080 });
      expect(r.metrics).toEqual({ [fwd(B.epId, TO)]: { packets: 1, bytes: r.data.length } });
      // Without a backend: dropped (unanswered), counted.
      writer.apply({ frontends: [{ ...nodePort, setId: 0, count: 0 }], sets: [], sourceRanges: new Map(), names: new Map() });
      metrics.hash.clear();
      metrics.fwd.clear();
      const none = run(overlay.program('kelp_from_overlay'), tcpSyn(arrived, REMOTE_VXLAN, NODE_IP, 64, 30080), vxlanIfindex);
      expect(none.retval).toBe(P.TC_ACT_SHOT);
      expect(Object.keys(none.metrics)).toEqual([dropped(0, TO, 'LB_NO_BACKEND')]);
    } finally {
      writer.apply({ frontends: [], sets: [], sourceRanges: new Map(), names: new Map() });
      lxc.map('kelp_lb4_ct').clear();
    }
  });

  it('a malformed packet is dropped and charged to the pod it was for', () => {
    const bad = udp(arrived, REMOTE_VXLAN, B.ip);
    bad.writeUInt8(0x45 - 1, P.ETH_HLEN); // IHL 4
    const r = run(overlay.program('kelp_from_overlay'), bad, vxlanIfindex);
    expect(r.retval).toBe(P.TC_ACT_SHOT);
    expect(Object.keys(r.metrics)).toEqual([dropped(0, TO, 'IPV4_IHL')]);
  });
});

describe("kelp_to_overlay: the node's own packets routed onto the VXLAN device", () => {
  it('to a remote pod with a VXLAN entry: passed (its tunnel key set)', () => {
    const pkt = tcpSyn(overVxlan, '192.0.2.1', REMOTE_VXLAN);
    const r = run(overlay.program('kelp_to_overlay'), pkt, vxlanIfindex);
    expect(r.retval).toBe(P.TC_ACT_OK);
    expect(r.data.equals(pkt)).toBe(true);
    expect(r.metrics).toEqual({});
  });

  it('without an entry (or to a native one): dropped, NO_TUNNEL, counted and reported', async () => {
    for (const dst of [UNKNOWN_REMOTE, REMOTE_NATIVE]) {
      metrics.hash.clear();
      const r = run(overlay.program('kelp_to_overlay'), tcpSyn(overVxlan, '192.0.2.1', dst), vxlanIfindex);
      expect(r.retval, dst).toBe(P.TC_ACT_SHOT);
      expect(Object.keys(r.metrics), dst).toEqual([dropped(0, FROM, 'NO_TUNNEL')]);
      const ev = await nextEvent((e) => e.kind === 'drop' && e.daddr === dst);
      expect(ev).toMatchObject({ reasonName: 'NO_TUNNEL', epId: 0, saddr: '192.0.2.1' });
    }
  });

  it('anything but IPv4 passes (the collect_md device drops what has no tunnel key)', () => {
    const pkt = P.ethernet({ ...overVxlan, type: P.ETH_P_IPV6 }, Buffer.alloc(40));
    expect(run(overlay.program('kelp_to_overlay'), pkt, vxlanIfindex).retval).toBe(P.TC_ACT_OK);
  });
});

// --- policy ------------------------------------------------------------------------------------

/** The remote pods' identities (10.78.1.66 denied, the rest of node 2's CIDR allowed) and `entries`, enforced. */
function policy(entries: PolicyEntry[]): void {
  const maps = policyMapsOf(lxc);
  applyPolicyMaps(maps, {
    ipcache: new Map([
      ['0.0.0.0/0', IDENTITY_WORLD],
      ['10.78.1.0/24', ID_REMOTE_OK],
      ['10.78.1.66/32', ID_REMOTE_DENIED],
    ]),
    policy: entries,
    policies: new Map([[7, { ref: 'NetworkPolicy/default/t', ingress: [''], egress: [''] }]]),
  });
  setPolicyEnforcement(maps, true);
  // Flows decided by an earlier row are decided again.
  lxc.map('kelp_pct4').clear();
}

function side(direction: 'ingress' | 'egress', epId: number, identity: number, action: 'allow' | 'deny'): PolicyEntry {
  return { epId, identity, direction, port: 0, portPrefix: 0, verdict: { action, tier: 'networkpolicy', policyId: 7, rule: 0 } };
}
const egress = (epId: number, identity: number, action: 'allow' | 'deny') => side('egress', epId, identity, action);
const ingress = (epId: number, identity: number, action: 'allow' | 'deny') => side('ingress', epId, identity, action);
