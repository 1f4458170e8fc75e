// Flow events and event accounting through BPF_PROG_TEST_RUN on lxc.o (issue 14): every record
// starts with the versioned header; FLOW_START when a flow gets its kelp_pct4 entry, one FLOW_END
// per flow whoever sees its end first (BPF at FIN both ways / RST / a revocation, or the agent's
// collector at expiry, claimed in kelp_flow_end); the per-CPU token bucket of each class; and
// emitted + suppressed + lost == attempted with received == emitted when the ring overflows.
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BpfMap, BpfObject, inNetns, loadObject, openRingBuffer } from '../../src/bpf';
import { EventCounter, FlowEvent, KelpEvent, readEventStats, writeEventConfig } from '../../src/datapath/events';
import { flowEndClaims, readPolicyVerdicts } from '../../src/datapath/flows';
import { applyPolicyMaps, gcPolicyCt, pct4Entry, PolicyMaps, policyMapsOf, readPolicyRevision, setPolicyEnforcement } from '../../src/datapath/policy';
import { IDENTITY_HOST, PolicyEntry, RULE_ISOLATED } from '../../src/datapath/policy-types';
import { monotonicNs } from '../../src/datapath/nat';
import { EventType, kelpEventHdr, kelpEventStats } from '../../src/datapath/structs';
import { EventCollector, loadWithVerifierLog, LXC_OBJECT, putEndpoint, TestEndpoint } from '../support/datapath';
import { cleanupAll, createNetns, mountBpffs, Netns } from '../support/netns';
import * as P from '../support/packet';

const A: TestEndpoint = { ip: '10.83.0.2', ifindex: 0, epId: 21, flags: 0, mac: '02:aa:00:00:02:02', nodeMac: '02:ee:00:00:02:02' };
const B: TestEndpoint = { ip: '10.83.0.3', ifindex: 0, epId: 22, flags: 0, mac: '02:aa:00:00:02:03', nodeMac: '02:ee:00:00:02:03' };
const ID = { A: 500, B: 501 };
const IPCACHE = new Map<string, number>([
  [`${A.ip}/32`, ID.A],
  [`${B.ip}/32`, ID.B],
  ['10.83.0.1/32', IDENTITY_HOST],
]);
const POLICY = 77;

let node: Netns;
let IF_A = 0;
let IF_B = 0;

interface Loaded {
  obj: BpfObject;
  maps: PolicyMaps;
  pct: BpfMap;
  stats: BpfMap;
  config: BpfMap;
  claims: BpfMap;
}

function load(): Loaded {
  const obj = loadWithVerifierLog(LXC_OBJECT, { pinRoot: mountBpffs() });
  putEndpoint(obj.map('kelp_endpoints'), { ...A, ifindex: IF_A });
  putEndpoint(obj.map('kelp_endpoints'), { ...B, ifindex: IF_B });
  return { obj, maps: policyMapsOf(obj), pct: obj.map('kelp_pct4'), stats: obj.map('kelp_event_stats'), config: obj.map('kelp_event_config'), claims: obj.map('kelp_flow_end') };
}

let L: Loaded;
let collector: EventCollector;

beforeAll(() => {
  node = createNetns('kfe');
  for (const k of ['a', 'b']) node.ip('link', 'add', `h${k}`, 'type', 'veth', 'peer', 'name', `p${k}`);
  IF_A = node.ifindex('ha');
  IF_B = node.ifindex('hb');
  L = load();
  collector = new EventCollector(L.obj.map('kelp_events'));
});

afterAll(() => {
  collector?.close();
  L?.obj.close();
  cleanupAll();
});

function entries(v: 'allow' | 'deny'): PolicyEntry[] {
  const out: PolicyEntry[] = [];
  for (const ep of [A, B]) {
    for (const direction of ['ingress', 'egress'] as const) {
      const decides = ep === B && direction === 'ingress';
      out.push({
        epId: ep.epId,
        identity: 0,
        direction,
        port: 0,
        portPrefix: 0,
        verdict: { action: decides ? v : 'allow', tier: 'networkpolicy', policyId: decides ? POLICY : 1, rule: decides && v === 'deny' ? RULE_ISOLATED : 0 },
      });
    }
  }
  return out;
}

function program(v: 'allow' | 'deny', l: Loaded = L): void {
  applyPolicyMaps(l.maps, { ipcache: IPCACHE, policy: entries(v), policies: new Map() });
  setPolicyEnforcement(l.maps, true);
}

function resetStats(l: Loaded): void {
  const zero = Buffer.concat(Array.from({ length: l.stats.numCpus }, () => Buffer.alloc(40)));
  for (let i = 0; i < 3; i++) l.stats.update(u32(i), zero);
}

function u32(i: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(i, 0);
  return b;
}

const PAYLOAD = Buffer.alloc(100, 0x6b);
function tcp(from: TestEndpoint, to: TestEndpoint, sport: number, dport: number, flags: number, payload = Buffer.alloc(0)): Buffer {
  return P.ethernet(
    { src: from.mac, dst: from.nodeMac, type: P.ETH_P_IP },
    P.ipv4({ src: from.ip, dst: to.ip, proto: P.IPPROTO_TCP }, P.tcp({ sport, dport, src: from.ip, dst: to.ip, flags }, payload)),
  );
}
function udp(from: TestEndpoint, to: TestEndpoint, sport: number, dport: number): Buffer {
  return P.ethernet({ src: from.mac, dst: from.nodeMac, type: P.ETH_P_IP }, P.ipv4({ src: from.ip, dst: to.ip, proto: P.IPPROTO_UDP }, P.udp({ sport, dport, src: from.ip, dst: to.ip }, PAYLOAD)));
}

function send(l: Loaded, from: TestEndpoint, data: Buffer, repeat = 1): number {
  return inNetns(node.path, () => l.obj.program('kelp_from_pod').testRun({ data, ctx: P.skbCtx({ ifindex: from === A ? IF_A : IF_B }), repeat })).retval;
}

/** IPv6 from a pod: a drop (IPV6) charged to no endpoint, the cheapest event to provoke. */
const V6 = P.ethernet({ src: A.mac, dst: A.nodeMac, type: 0x86dd }, Buffer.alloc(40));

/** Every event up to a sentinel drop. */
async function events(): Promise<KelpEvent[]> {
  send(L, A, P.ethernet({ src: A.mac, dst: A.nodeMac, type: 0x88b5 }));
  return collector.takeUntil((e) => e.kind === 'drop' && e.reasonName === 'ETHERTYPE');
}

const flows = (evs: KelpEvent[]) => evs.filter((e): e is FlowEvent => e.kind === 'flow-start' || e.kind === 'flow-end');

beforeEach(async () => {
  for (const m of [L.maps.policy, L.maps.ipcache, L.pct, L.claims]) m.clear();
  L.config.update(u32(1), Buffer.alloc(8));
  resetStats(L);
  await events();
});

describe('the versioned header', () => {
  it('starts every record: version 2, its type, its size, the CPU and the time', async () => {
    const raw: Buffer[] = [];
    const rb = openRingBuffer(L.obj.map('kelp_events'), (r) => raw.push(r));
    try {
      collector.close();
      const before = monotonicNs();
      send(L, A, V6);
      const after = monotonicNs();
      for (let i = 0; i < 200 && raw.length === 0; i++) await new Promise((r) => setTimeout(r, 5));
      expect(raw).toHaveLength(1);
      const h = kelpEventHdr.decode(raw[0]);
      expect({ version: h.version, type: h.type, size: h.size }).toEqual({ version: 2, type: EventType.DROP, size: 64 });
      expect(h.cpu).toBeLessThan(L.stats.numCpus);
      expect(h.tsNs >= before && h.tsNs <= after).toBe(true);
    } finally {
      rb.close();
      collector = new EventCollector(L.obj.map('kelp_events'));
    }
  });

  it("a record of another version, written by another program into a ring, is counted as unknown, not misread", async () => {
    // fixture_pkt.o's fx_event starts with the frame length (60): read as a header, version 60.
    const fx = loadObject(path.join(__dirname, '../../build/bpf/fixture_pkt.o'));
    const counter = new EventCounter();
    const rb = openRingBuffer(fx.map('fx_events'), (r) => counter.take(r));
    try {
      fx.program('fx_event').testRun({ data: Buffer.alloc(60) });
      for (let i = 0; i < 200 && counter.counts.unknown === 0; i++) await new Promise((r) => setTimeout(r, 5));
      expect(counter.counts).toEqual({ received: { drop: 0, flow: 0, trace: 0 }, unknown: 1 });
    } finally {
      rb.close();
      fx.close();
    }
  });
});

describe('flow events', () => {
  it('one start with the verdict and policy, one end at FIN both ways with the counters of every packet', async () => {
    program('allow');
    const pkts = [
      [A, tcp(A, B, 40000, 80, 0x02)],
      [B, tcp(B, A, 80, 40000, 0x12)],
      [A, tcp(A, B, 40000, 80, 0x18, PAYLOAD)],
      [B, tcp(B, A, 80, 40000, 0x10)],
      [A, tcp(A, B, 40000, 80, 0x11)],
      [B, tcp(B, A, 80, 40000, 0x11)],
    ] as const;
    for (const [from, data] of pkts) expect(send(L, from, data)).toBe(P.TC_ACT_REDIRECT);
    // The last ACK, after the end: counted in the entry, no second end.
    expect(send(L, A, tcp(A, B, 40000, 80, 0x10))).toBe(P.TC_ACT_REDIRECT);
    const fl = flows(await events());
    const len = (from: TestEndpoint) => pkts.filter(([f]) => f === from).reduce((n, [, d]) => n + d.length, 0);
    expect(fl).toMatchObject([
      { kind: 'flow-start', saddr: A.ip, daddr: B.ip, sport: 40000, dport: 80, proto: 6, direction: 'ingress', epId: B.epId, policy: { policyId: POLICY, rule: 0, tier: 'networkpolicy', action: 'allow' }, txPackets: 1n, txBytes: BigInt(pkts[0][1].length), rxPackets: 0n },
      { kind: 'flow-end', closedBy: 'fin', saddr: A.ip, daddr: B.ip, txPackets: 3n, txBytes: BigInt(len(A)), rxPackets: 3n, rxBytes: BigInt(len(B)) },
    ]);
    expect(fl[1].createdNs).toBe(fl[0].createdNs);
    expect(fl).toHaveLength(2);
    // The collector expires the closed entry without a second end.
    const ends: FlowEvent[] = [];
    expect(gcPolicyCt(L.pct, monotonicNs() + 3_600_000_000_000n, { flowEnds: flowEndClaims(L.claims, (e) => ends.push(e)) }).deleted).toBe(1);
    expect(ends).toEqual([]);
    expect(L.claims.keys()).toEqual([]);
    expect(flows(await events())).toEqual([]);
  });

  it('a RST ends the flow at once; a new SYN on the closed tuple is a new flow with its own start and end', async () => {
    program('allow');
    send(L, A, tcp(A, B, 40001, 80, 0x02));
    send(L, B, tcp(B, A, 80, 40001, 0x14));
    send(L, A, tcp(A, B, 40001, 80, 0x02));
    send(L, B, tcp(B, A, 80, 40001, 0x04));
    const fl = flows(await events());
    expect(fl.map((e) => `${e.kind}${e.closedBy ? ` ${e.closedBy}` : ''}`)).toEqual(['flow-start', 'flow-end rst', 'flow-start', 'flow-end rst']);
    expect(fl[2].createdNs).not.toBe(fl[0].createdNs);
    expect(fl[3]).toMatchObject({ txPackets: 1n, rxPackets: 1n });
  });

  it('a revocation ends the flow (revoked) once, and its packets are dropped with the policy', async () => {
    program('allow');
    send(L, A, udp(A, B, 5000, 53));
    program('deny');
    expect(send(L, A, udp(A, B, 5000, 53))).toBe(P.TC_ACT_SHOT);
    expect(send(L, A, udp(A, B, 5000, 53))).toBe(P.TC_ACT_SHOT);
    const evs = await events();
    expect(flows(evs).map((e) => `${e.kind}${e.closedBy ? ` ${e.closedBy}` : ''}`)).toEqual(['flow-start', 'flow-end revoked']);
    expect(flows(evs)[1]).toMatchObject({ policy: { policyId: POLICY, action: 'deny' }, txPackets: 1n });
    expect(evs.filter((e) => e.kind === 'drop').map((e) => e.kind === 'drop' && [e.reasonName, e.policy?.policyId])).toEqual([
      ['POLICY_DENY', POLICY],
      ['POLICY_DENY', POLICY],
    ]);
    expect(readPolicyRevision(L.maps)).toBeGreaterThan(0);
  });

  it('the collector ends an expired flow once (timeout), and never one BPF ends or has claimed', async () => {
    program('allow');
    send(L, A, udp(A, B, 5001, 53));
    send(L, B, udp(B, A, 53, 5001));
    send(L, A, udp(A, B, 5002, 53));
    // The collector claims 5002 first (as it would at its expiry), then BPF sees it close: no end from BPF.
    const ends: FlowEvent[] = [];
    const claims = flowEndClaims(L.claims, (e) => ends.push(e));
    const k5002 = L.pct.keys().find((k) => k.readUInt16BE(8) === 5002 || k.readUInt16BE(10) === 5002)!;
    expect(claims.claim(k5002, pct4Entry.decode(L.pct.lookup(k5002)!))).toBe(true);
    expect(flows(await events()).map((e) => e.kind)).toEqual(['flow-start', 'flow-start']);
    const far = monotonicNs() + 3_600_000_000_000n;
    expect(gcPolicyCt(L.pct, far, { flowEnds: claims }).deleted).toBe(2);
    // 5001 ends here; 5002's claim was taken already, by the same collector: not reported twice.
    expect(ends).toMatchObject([{ kind: 'flow-end', closedBy: 'timeout', saddr: A.ip, sport: 5001, txPackets: 1n, rxPackets: 1n }]);
    expect(gcPolicyCt(L.pct, far, { flowEnds: claims }).deleted).toBe(0);
    expect(ends).toHaveLength(1);
    expect(L.claims.keys()).toEqual([]);
  });

  it('policy decisions are counted per (policy, rule, action, direction), whatever the events', async () => {
    const verdicts = L.obj.map('kelp_policy_verdicts');
    verdicts.clear();
    program('allow');
    send(L, A, udp(A, B, 6000, 53));
    send(L, A, udp(A, B, 6000, 53));
    send(L, A, udp(A, B, 6001, 53));
    program('deny');
    send(L, A, udp(A, B, 6002, 53));
    send(L, A, udp(A, B, 6002, 53));
    await events();
    // New flows allowed: 2 (6000, 6001); dropped: 2 packets of 6002 (ingress of B, isolated).
    expect(readPolicyVerdicts(verdicts).map(({ bytes, ...r }) => ({ ...r, perPacket: bytes / r.packets }))).toEqual([
      { policyId: POLICY, rule: 0, action: 'allow', direction: 'ingress', packets: 2, perPacket: udp(A, B, 1, 1).length },
      { policyId: POLICY, rule: RULE_ISOLATED, action: 'deny', direction: 'ingress', packets: 2, perPacket: udp(A, B, 1, 1).length },
    ]);
  });
});

describe('rate limits and loss accounting', () => {
  it('a class past its bucket is suppressed and counted; the others are not touched', async () => {
    writeEventConfig(L.config, { drop: { rate: 1, burst: 3 } });
    try {
      resetStats(L);
      // One test run of 10 repeats runs on one CPU, within far less than the second a token takes.
      send(L, A, V6, 10);
      const s = readEventStats(L.stats);
      expect(s.drop).toEqual({ emitted: 3, suppressed: 7, lost: 0 });
      expect(s.flow).toEqual({ emitted: 0, suppressed: 0, lost: 0 });
    } finally {
      writeEventConfig(L.config, { drop: { rate: 10_000, burst: 1_000 } });
      resetStats(L);
    }
    const evs = await events();
    expect(evs.filter((e) => e.kind === 'drop' && e.reasonName === 'IPV6')).toHaveLength(3);
  });

  it('a full ring: emitted + suppressed + lost == attempted, and the reader receives every emitted record', async () => {
    // Its own maps and no reader until the burst is over: the ring (256 KiB) takes ~3,600 records.
    const l = load();
    try {
      writeEventConfig(l.config, { drop: { rate: 10_000_000, burst: 1_000_000 } });
      const attempted = 5000;
      send(l, A, V6, attempted);
      const s = readEventStats(l.stats).drop;
      expect(s.emitted + s.suppressed + s.lost).toBe(attempted);
      expect(s.lost).toBeGreaterThan(0);
      expect(s.suppressed).toBe(0);
      const counter = new EventCounter();
      const rb = openRingBuffer(l.obj.map('kelp_events'), (r) => counter.take(r));
      try {
        for (let i = 0; i < 400 && counter.counts.received.drop < s.emitted; i++) await new Promise((r) => setTimeout(r, 5));
        expect(counter.counts).toEqual({ received: { drop: s.emitted, flow: 0, trace: 0 }, unknown: 0 });
      } finally {
        rb.close();
      }
    } finally {
      l.obj.close();
    }
  });
});
