// Policy in kelp_from_pod / kelp_to_pod (bpf/lxc.c, bpf/lib/policy.h) through BPF_PROG_TEST_RUN:
// real packets, the policy maps written by the agent's writer (applyPolicyMaps), and per row the
// verdict, the counters, the events (with the deciding policy and rule) and the conntrack.
//
// Pods A and B live behind veths of a test netns (the anti-spoofing check compares skb->ifindex,
// which bpf_prog_test_run_skb looks up in the caller's netns). Identities: A 300, B 301, the
// documentation net 192.0.2.0/24 400 with 192.0.2.99/32 401 inside it, the node 10.79.0.1 HOST,
// everything else WORLD.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BpfMap, BpfObject, inNetns } from '../../src/bpf';
import { DropReason, DropReasonName, MetricsReason } from '../../src/datapath/drop';
import { decodeEvent, KelpEvent, UnknownEventError } from '../../src/datapath/events';
import { mapRowCount, mapRows } from '../../src/datapath/dump';
import {
  applyPolicyMaps,
  gcPolicyCt,
  pct4Entry,
  pct4Key,
  pct4KeyOf,
  PolicyFlow,
  PolicyMaps,
  policyMapsOf,
  readPolicyRevision,
  setPolicyEnforcement,
} from '../../src/datapath/policy';
import { IDENTITY_HOST, PolicyEntry, PolicyVerdict, RULE_ISOLATED } from '../../src/datapath/policy-types';
import { masqConstants, monotonicNs } from '../../src/datapath/nat';
import { Direction, kelpEvent } from '../../src/datapath/structs';
import { EventCollector, loadWithVerifierLog, LXC_OBJECT, metricsId, metricsMaps, putEndpoint, readMetrics, TestEndpoint } from '../support/datapath';
import { cleanupAll, createNetns, mountBpffs, Netns, onCleanup, tempDir } from '../support/netns';
import * as P from '../support/packet';

const FROM = Direction.FROM_POD;
const TO = Direction.TO_POD;
const IF = { a: 0, b: 0, s: 0 };
const A: TestEndpoint = { ip: '10.79.0.2', ifindex: 0, epId: 11, flags: 0, mac: '02:aa:00:00:01:02', nodeMac: '02:ee:00:00:01:02' };
const B: TestEndpoint = { ip: '10.79.0.3', ifindex: 0, epId: 12, flags: 0, mac: '02:aa:00:00:01:03', nodeMac: '02:ee:00:00:01:03' };
const NODE = '10.79.0.1';
const DOC = '192.0.2.10';
const DOC_SPECIAL = '192.0.2.99';
const WORLD_IP = '198.51.100.1';
const ID = { A: 300, B: 301, DOC: 400, DOC_SPECIAL: 401 };
const SENTINEL_SRC = '10.79.0.250';

const IPCACHE = new Map<string, number>([
  [`${A.ip}/32`, ID.A],
  [`${B.ip}/32`, ID.B],
  ['192.0.2.0/24', ID.DOC],
  [`${DOC_SPECIAL}/32`, ID.DOC_SPECIAL],
  [`${NODE}/32`, IDENTITY_HOST],
]);

interface Loaded {
  obj: BpfObject;
  maps: PolicyMaps;
  pct: BpfMap;
  frag: BpfMap;
  endpoints: BpfMap;
  metrics: { hash: BpfMap; fwd: BpfMap };
  collector: EventCollector;
}

let node: Netns;
let L: Loaded;
let pinRoot: string;

function load(file: string, pinRoot = mountBpffs()): Loaded {
  const obj = loadWithVerifierLog(file, { pinRoot });
  const l: Loaded = {
    obj,
    maps: policyMapsOf(obj),
    pct: obj.map('kelp_pct4'),
    frag: obj.map('kelp_frag4'),
    endpoints: obj.map('kelp_endpoints'),
    metrics: metricsMaps(obj),
    collector: new EventCollector(obj.map('kelp_events')),
  };
  onCleanup(() => {
    l.collector.close();
    obj.close();
  });
  putEndpoint(l.endpoints, A);
  putEndpoint(l.endpoints, B);
  return l;
}

beforeAll(() => {
  node = createNetns('kpo');
  for (const k of ['a', 'b', 's'] as const) {
    node.ip('link', 'add', `h${k}`, 'type', 'veth', 'peer', 'name', `p${k}`);
    IF[k] = node.ifindex(`h${k}`);
  }
  A.ifindex = IF.a;
  B.ifindex = IF.b;
  pinRoot = mountBpffs();
  L = load(LXC_OBJECT, pinRoot);
});

afterAll(cleanupAll);

/** Empty maps, enforcement off, and no event of an earlier test left in the ring. */
async function resetMaps(l: Loaded): Promise<void> {
  for (const m of [l.maps.policy, l.maps.ipcache, l.pct, l.frag]) m.clear();
  l.maps.config.update(Buffer.alloc(4), Buffer.alloc(8));
  await events(l);
  l.metrics.hash.clear();
  l.metrics.fwd.clear();
}

beforeEach(() => resetMaps(L));

// --- policy ----------------------------------------------------------------------------------

const verdict = (action: PolicyVerdict['action'], policyId: number, rule: number): PolicyVerdict => ({ action, tier: 'networkpolicy', policyId, rule });
const allow = (policyId = 7, rule = 0) => verdict('allow', policyId, rule);
const deny = (policyId = 7, rule = RULE_ISOLATED) => verdict('deny', policyId, rule);

interface Rule {
  ep: TestEndpoint;
  dir: 'ingress' | 'egress';
  /** Peer identity; default any. */
  peer?: number;
  proto?: number;
  port?: number;
  portPrefix?: number;
  v: PolicyVerdict;
}

function entry(r: Rule): PolicyEntry {
  return {
    epId: r.ep.epId,
    identity: r.peer ?? 0,
    direction: r.dir,
    protocol: r.proto,
    port: r.port ?? 0,
    portPrefix: r.proto === undefined ? 0 : (r.portPrefix ?? (r.port === undefined ? 0 : 16)),
    verdict: r.v,
  };
}

/** Writes the rules (plus allow-all catch-alls for each side not named) and switches enforcement on. */
function program(rules: Rule[], l: Loaded = L, catchAll = true): void {
  const entries = rules.map(entry);
  if (catchAll) {
    for (const ep of [A, B]) {
      for (const dir of ['ingress', 'egress'] as const) {
        if (!rules.some((r) => r.ep === ep && r.dir === dir && r.peer === undefined && r.proto === undefined)) entries.push(entry({ ep, dir, v: allow(1, 0) }));
      }
    }
  }
  applyPolicyMaps(l.maps, { ipcache: IPCACHE, policy: entries, policies: new Map() });
  setPolicyEnforcement(l.maps, true);
}

// --- packets ---------------------------------------------------------------------------------

interface Eth {
  src: string;
  dst: string;
}
const ethFrom = (ep: TestEndpoint): Eth => ({ src: ep.mac, dst: ep.nodeMac });
const ethTo = (ep: TestEndpoint): Eth => ({ src: ep.nodeMac, dst: ep.mac });
const PAYLOAD = Buffer.from('kelp policy test');

function udp(eth: Eth, src: string, dst: string, sport: number, dport: number, ip: Partial<P.Ipv4Opts> = {}): Buffer {
  return P.ethernet({ ...eth, type: P.ETH_P_IP }, P.ipv4({ src, dst, proto: P.IPPROTO_UDP, ...ip }, P.udp({ sport, dport, src, dst }, PAYLOAD)));
}

function tcp(eth: Eth, src: string, dst: string, sport: number, dport: number, flags = 0x02): Buffer {
  return P.ethernet({ ...eth, type: P.ETH_P_IP }, P.ipv4({ src, dst, proto: P.IPPROTO_TCP }, P.tcp({ sport, dport, src, dst, flags })));
}

function echo(eth: Eth, src: string, dst: string, type: number, id: number): Buffer {
  return P.ethernet({ ...eth, type: P.ETH_P_IP }, P.ipv4({ src, dst, proto: P.IPPROTO_ICMP }, P.icmp({ type, id, seq: 1 }, PAYLOAD)));
}

/** An ICMP error from `src` to `dst` quoting `quoted` (an IPv4 packet, Ethernet header off). */
function icmpError(eth: Eth, src: string, dst: string, quoted: Buffer, type = 3, code = 3): Buffer {
  const body = quoted.subarray(0, 28);
  return P.ethernet({ ...eth, type: P.ETH_P_IP }, P.ipv4({ src, dst, proto: P.IPPROTO_ICMP }, P.icmp({ type, code, id: 0, seq: 0 }, body)));
}

type Prog = 'kelp_from_pod' | 'kelp_to_pod';

function run(prog: Prog, data: Buffer, ifindex: number, l: Loaded = L): number {
  return inNetns(node.path, () => l.obj.program(prog).testRun({ data, ctx: P.skbCtx({ ifindex }) })).retval;
}

/** A's packet out of A's veth. */
const fromA = (data: Buffer, l?: Loaded) => run('kelp_from_pod', data, IF.a, l);
const fromB = (data: Buffer, l?: Loaded) => run('kelp_from_pod', data, IF.b, l);

const isSentinel = (e: KelpEvent) => e.kind === 'drop' && e.ifindex === IF.s && e.saddr === SENTINEL_SRC;

/** Every event since the last call. */
async function events(l: Loaded = L): Promise<KelpEvent[]> {
  run('kelp_from_pod', udp(ethFrom(A), SENTINEL_SRC, B.ip, 1, 1), IF.s, l);
  return l.collector.takeUntil(isSentinel);
}

function count(epId: number, dir: number, reason: number, l: Loaded = L): number {
  return readMetrics(l.metrics)[metricsId(epId, dir, reason)]?.packets ?? 0;
}

function ctOf(f: PolicyFlow, l: Loaded = L) {
  const v = l.pct.lookup(pct4Key.encode(pct4KeyOf(f).key));
  return v && pct4Entry.decode(v);
}

async function expectDrop(reason: DropReasonName, epId: number, dir: number, policy?: { policyId: number; rule: number }) {
  const evs = (await events()).filter((e) => e.kind === 'drop');
  expect(evs.map((e) => e.kind === 'drop' && e.reasonName)).toEqual([reason]);
  const e = evs[0];
  expect(e.epId).toBe(epId);
  expect(e.dir).toBe(dir === FROM ? 'from-pod' : 'to-pod');
  if (policy && e.kind === 'drop') expect({ policyId: e.policy?.policyId, rule: e.policy?.rule }).toEqual(policy);
  expect(count(epId, dir, DropReason[reason])).toBe(1);
}

// --- tests -----------------------------------------------------------------------------------

describe('enforcement off', () => {
  it('changes nothing: no lookup, no conntrack, even with deny-all entries and no entries at all', async () => {
    applyPolicyMaps(L.maps, { ipcache: IPCACHE, policy: [entry({ ep: B, dir: 'ingress', v: deny() })], policies: new Map() });
    expect(fromA(udp(ethFrom(A), A.ip, B.ip, 4000, 53))).toBe(P.TC_ACT_REDIRECT);
    expect(fromA(udp(ethFrom(A), A.ip, WORLD_IP, 4000, 53))).toBe(P.TC_ACT_OK);
    expect(run('kelp_to_pod', udp(ethTo(A), WORLD_IP, A.ip, 53, 4000), IF.a)).toBe(P.TC_ACT_OK);
    expect(L.pct.keys()).toEqual([]);
    expect((await events()).filter((e) => e.kind !== 'trace')).toEqual([]);
  });
});

describe('decisions', () => {
  it('an endpoint with no entry at all is not ready: dropped, charged to its side', async () => {
    setPolicyEnforcement(L.maps, true);
    expect(fromA(udp(ethFrom(A), A.ip, WORLD_IP, 4000, 53))).toBe(P.TC_ACT_SHOT);
    await expectDrop('POLICY_NOT_READY', A.epId, FROM, { policyId: 0, rule: 0 });

    // A is programmed, B is not: B's ingress fails closed.
    applyPolicyMaps(L.maps, { ipcache: IPCACHE, policy: [entry({ ep: A, dir: 'egress', v: allow() })], policies: new Map() });
    expect(fromA(udp(ethFrom(A), A.ip, B.ip, 4000, 53))).toBe(P.TC_ACT_SHOT);
    await expectDrop('POLICY_NOT_READY', B.epId, TO);
    expect(L.pct.keys()).toEqual([]);
  });

  it('by peer identity and port: allowed is delivered and tracked, denied is dropped with its policy and rule and leaves nothing', async () => {
    program([
      { ep: B, dir: 'ingress', peer: ID.A, proto: P.IPPROTO_TCP, port: 80, v: allow(21, 3) },
      { ep: B, dir: 'ingress', v: deny(21, RULE_ISOLATED) },
    ]);
    expect(fromA(tcp(ethFrom(A), A.ip, B.ip, 40000, 80))).toBe(P.TC_ACT_REDIRECT);
    const ct = ctOf({ saddr: A.ip, daddr: B.ip, sport: 40000, dport: 80, proto: P.IPPROTO_TCP });
    expect(ct).toMatchObject({ action: 1, policyId: 21, rule: 3, epId: B.epId, revision: readPolicyRevision(L.maps), txPackets: 1n, txFlags: 0x02 });

    expect(fromA(tcp(ethFrom(A), A.ip, B.ip, 40001, 81))).toBe(P.TC_ACT_SHOT);
    await expectDrop('POLICY_DENY', B.epId, TO, { policyId: 21, rule: RULE_ISOLATED });
    expect(ctOf({ saddr: A.ip, daddr: B.ip, sport: 40001, dport: 81, proto: P.IPPROTO_TCP })).toBeUndefined();
    // The egress side denies first and is charged as such.
    program([{ ep: A, dir: 'egress', peer: ID.B, v: deny(5, 2) }]);
    expect(fromA(udp(ethFrom(A), A.ip, B.ip, 4000, 53))).toBe(P.TC_ACT_SHOT);
    await expectDrop('POLICY_DENY', A.epId, FROM, { policyId: 5, rule: 2 });
  });

  it('by CIDR: the longest ipcache prefix gives the identity; an address no prefix covers is WORLD', () => {
    program([
      { ep: A, dir: 'egress', peer: ID.DOC, v: allow(30, 0) },
      { ep: A, dir: 'egress', peer: ID.DOC_SPECIAL, v: deny(30, 1) },
      { ep: A, dir: 'egress', v: deny(30, RULE_ISOLATED) },
    ]);
    expect(fromA(udp(ethFrom(A), A.ip, DOC, 4000, 53))).toBe(P.TC_ACT_OK);
    expect(fromA(udp(ethFrom(A), A.ip, DOC_SPECIAL, 4000, 53))).toBe(P.TC_ACT_SHOT);
    expect(fromA(udp(ethFrom(A), A.ip, WORLD_IP, 4000, 53))).toBe(P.TC_ACT_SHOT);
    expect(count(A.epId, FROM, DropReason.POLICY_DENY)).toBe(2);
  });

  it('port prefixes: 8080/13 is 8080-8087', () => {
    program([
      { ep: B, dir: 'ingress', peer: ID.A, proto: P.IPPROTO_TCP, port: 8080, portPrefix: 13, v: allow(40, 0) },
      { ep: B, dir: 'ingress', v: deny(40, RULE_ISOLATED) },
    ]);
    const verdicts = [8079, 8080, 8083, 8087, 8088].map((port, i) => fromA(tcp(ethFrom(A), A.ip, B.ip, 41000 + i, port)));
    expect(verdicts).toEqual([P.TC_ACT_SHOT, P.TC_ACT_REDIRECT, P.TC_ACT_REDIRECT, P.TC_ACT_REDIRECT, P.TC_ACT_SHOT]);
  });

  it('an all-protocols entry under port entries: the longest match decides', () => {
    program([
      { ep: B, dir: 'ingress', peer: ID.A, v: allow(50, 0) },
      { ep: B, dir: 'ingress', peer: ID.A, proto: P.IPPROTO_TCP, port: 22, v: deny(50, 1) },
      { ep: B, dir: 'ingress', v: deny(50, RULE_ISOLATED) },
    ]);
    expect(fromA(udp(ethFrom(A), A.ip, B.ip, 4000, 22))).toBe(P.TC_ACT_REDIRECT);
    expect(fromA(tcp(ethFrom(A), A.ip, B.ip, 40000, 22))).toBe(P.TC_ACT_SHOT);
    expect(fromA(tcp(ethFrom(A), A.ip, B.ip, 40000, 23))).toBe(P.TC_ACT_REDIRECT);
    expect(fromA(echo(ethFrom(A), A.ip, B.ip, 8, 77))).toBe(P.TC_ACT_REDIRECT);
  });

  it('SCTP is matched on its ports', () => {
    program([
      { ep: B, dir: 'ingress', peer: ID.A, proto: 132, port: 3868, v: allow(45, 0) },
      { ep: B, dir: 'ingress', v: deny(45, RULE_ISOLATED) },
    ]);
    const sctp = (dport: number) => {
      const common = Buffer.alloc(12);
      common.writeUInt16BE(5000, 0);
      common.writeUInt16BE(dport, 2);
      common.writeUInt32BE(0xdeadbeef, 4);
      return P.ethernet({ ...ethFrom(A), type: P.ETH_P_IP }, P.ipv4({ src: A.ip, dst: B.ip, proto: 132 }, Buffer.concat([common, PAYLOAD])));
    };
    expect(fromA(sctp(3868))).toBe(P.TC_ACT_REDIRECT);
    expect(fromA(sctp(3869))).toBe(P.TC_ACT_SHOT);
    expect(ctOf({ saddr: A.ip, daddr: B.ip, sport: 5000, dport: 3868, proto: 132 })).toMatchObject({ policyId: 45 });
  });

  it('the node (HOST) is always allowed, both ways, and never tracked', () => {
    program([
      { ep: A, dir: 'ingress', v: deny() },
      { ep: A, dir: 'egress', v: deny() },
    ]);
    expect(run('kelp_to_pod', tcp(ethTo(A), NODE, A.ip, 50000, 8080), IF.a)).toBe(P.TC_ACT_OK);
    expect(fromA(tcp(ethFrom(A), A.ip, NODE, 8080, 50000, 0x12))).toBe(P.TC_ACT_OK);
    expect(L.pct.keys()).toEqual([]);
    expect(run('kelp_to_pod', tcp(ethTo(A), WORLD_IP, A.ip, 50000, 8080), IF.a)).toBe(P.TC_ACT_SHOT);
  });

  it("kelp_to_pod decides a local sender's egress too (a packet the node's stack routed, e.g. after its DNAT)", async () => {
    program([{ ep: A, dir: 'egress', peer: ID.B, v: deny(60, 4) }]);
    expect(run('kelp_to_pod', udp(ethTo(B), A.ip, B.ip, 4000, 53), IF.b)).toBe(P.TC_ACT_SHOT);
    await expectDrop('POLICY_DENY', A.epId, FROM, { policyId: 60, rule: 4 });
  });
});

describe('conntrack', () => {
  const flow: PolicyFlow = { saddr: A.ip, daddr: B.ip, sport: 40000, dport: 80, proto: P.IPPROTO_TCP };
  const oneWay: Rule[] = [
    { ep: B, dir: 'ingress', peer: ID.A, proto: P.IPPROTO_TCP, port: 80, v: allow(70, 0) },
    { ep: B, dir: 'ingress', v: deny(70, RULE_ISOLATED) },
    { ep: B, dir: 'egress', v: deny(71, RULE_ISOLATED) },
    { ep: A, dir: 'ingress', v: deny(72, RULE_ISOLATED) },
  ];

  it('replies to an allowed flow pass whatever the reply direction says; a new flow that way does not', () => {
    program(oneWay);
    expect(fromA(tcp(ethFrom(A), A.ip, B.ip, 40000, 80, 0x02))).toBe(P.TC_ACT_REDIRECT);
    expect(fromB(tcp(ethFrom(B), B.ip, A.ip, 80, 40000, 0x12))).toBe(P.TC_ACT_REDIRECT);
    expect(fromA(tcp(ethFrom(A), A.ip, B.ip, 40000, 80, 0x10))).toBe(P.TC_ACT_REDIRECT);
    expect(ctOf(flow)).toMatchObject({ txPackets: 2n, rxPackets: 1n, txFlags: 0x12, rxFlags: 0x12 });
    expect(fromB(tcp(ethFrom(B), B.ip, A.ip, 80, 40001, 0x02))).toBe(P.TC_ACT_SHOT);
    expect(count(B.epId, FROM, DropReason.POLICY_DENY)).toBe(1);
  });

  it('a revision bump decides live flows again: a revoked connection is cut on its next packet, both ways', async () => {
    program(oneWay);
    expect(fromA(tcp(ethFrom(A), A.ip, B.ip, 40000, 80, 0x02))).toBe(P.TC_ACT_REDIRECT);
    expect(fromB(tcp(ethFrom(B), B.ip, A.ip, 80, 40000, 0x12))).toBe(P.TC_ACT_REDIRECT);
    const before = readPolicyRevision(L.maps);
    // The same content again changes nothing, not even the revision.
    program(oneWay);
    expect(readPolicyRevision(L.maps)).toBe(before);

    program([{ ep: B, dir: 'ingress', v: deny(73, RULE_ISOLATED) }, ...oneWay.slice(2)]);
    expect(readPolicyRevision(L.maps)).toBe(before + 1);
    await events();
    // The responder's packet re-decides the original direction (B's ingress) and is cut too.
    expect(fromB(tcp(ethFrom(B), B.ip, A.ip, 80, 40000, 0x10))).toBe(P.TC_ACT_SHOT);
    await expectDrop('POLICY_DENY', B.epId, TO, { policyId: 73, rule: RULE_ISOLATED });
    expect(fromA(tcp(ethFrom(A), A.ip, B.ip, 40000, 80, 0x10))).toBe(P.TC_ACT_SHOT);
    expect(ctOf(flow)).toMatchObject({ action: 2, policyId: 73, revision: before + 1 });

    // Allowed again at the next revision: the flow resumes.
    program(oneWay);
    expect(fromA(tcp(ethFrom(A), A.ip, B.ip, 40000, 80, 0x10))).toBe(P.TC_ACT_REDIRECT);
  });

  it('ICMP errors: about a tracked flow they pass; about anything else they are decided as ICMP', () => {
    program([
      { ep: B, dir: 'ingress', peer: ID.A, proto: P.IPPROTO_UDP, port: 53, v: allow(80, 0) },
      { ep: B, dir: 'ingress', v: deny(80, RULE_ISOLATED) },
      { ep: A, dir: 'ingress', v: deny(81, RULE_ISOLATED) },
    ]);
    const query = udp(ethFrom(A), A.ip, B.ip, 4000, 53);
    expect(fromA(query)).toBe(P.TC_ACT_REDIRECT);
    expect(fromB(icmpError(ethFrom(B), B.ip, A.ip, query.subarray(P.ETH_HLEN)))).toBe(P.TC_ACT_REDIRECT);
    const untracked = udp(ethFrom(A), A.ip, B.ip, 4001, 54);
    expect(fromB(icmpError(ethFrom(B), B.ip, A.ip, untracked.subarray(P.ETH_HLEN)))).toBe(P.TC_ACT_SHOT);
    expect(count(A.epId, TO, DropReason.POLICY_DENY)).toBe(1);
    expect(L.pct.keys().length).toBe(1);
  });

  it('ICMP echo is tracked by its identifier: the reply passes on the request', () => {
    program([
      { ep: A, dir: 'ingress', v: deny() },
      { ep: B, dir: 'egress', v: deny() },
    ]);
    expect(fromA(echo(ethFrom(A), A.ip, B.ip, 8, 0x4242))).toBe(P.TC_ACT_REDIRECT);
    expect(fromB(echo(ethFrom(B), B.ip, A.ip, 0, 0x4242))).toBe(P.TC_ACT_REDIRECT);
    expect(fromB(echo(ethFrom(B), B.ip, A.ip, 0, 0x4243))).toBe(P.TC_ACT_SHOT);
    expect(ctOf({ saddr: A.ip, daddr: B.ip, sport: 0x4242, dport: 0x4242, proto: P.IPPROTO_ICMP })).toMatchObject({ txPackets: 1n, rxPackets: 1n });
  });

  it('fragments: later ones follow their first fragment; one without it is dropped', async () => {
    program([
      { ep: B, dir: 'ingress', peer: ID.A, proto: P.IPPROTO_UDP, port: 53, v: allow(90, 0) },
      { ep: B, dir: 'ingress', v: deny(90, RULE_ISOLATED) },
    ]);
    const first = udp(ethFrom(A), A.ip, B.ip, 4000, 53, { id: 0x77, moreFragments: true });
    const later = (id: number) =>
      P.ethernet({ ...ethFrom(A), type: P.ETH_P_IP }, P.ipv4({ src: A.ip, dst: B.ip, proto: P.IPPROTO_UDP, id, fragOffset: 3 }, Buffer.alloc(40, 0xab)));
    expect(fromA(first)).toBe(P.TC_ACT_REDIRECT);
    expect(fromA(later(0x77))).toBe(P.TC_ACT_REDIRECT);
    expect(ctOf({ saddr: A.ip, daddr: B.ip, sport: 4000, dport: 53, proto: P.IPPROTO_UDP })).toMatchObject({ txPackets: 2n });
    await events();
    expect(fromA(later(0x78))).toBe(P.TC_ACT_SHOT);
    await expectDrop('FRAG_NO_FLOW', A.epId, FROM);
    // The first fragment of a denied flow is denied, and so are its later fragments.
    const denied = udp(ethFrom(A), A.ip, B.ip, 4000, 54, { id: 0x79, moreFragments: true });
    expect(fromA(denied)).toBe(P.TC_ACT_SHOT);
    expect(fromA(later(0x79))).toBe(P.TC_ACT_SHOT);
    expect(count(B.epId, TO, DropReason.POLICY_DENY)).toBe(2);
  });

  it('the collector removes idle flows by state and keeps live ones', () => {
    program(oneWay);
    expect(fromA(tcp(ethFrom(A), A.ip, B.ip, 40000, 80, 0x02))).toBe(P.TC_ACT_REDIRECT);
    expect(fromA(udp(ethFrom(A), A.ip, DOC, 4000, 53))).toBe(P.TC_ACT_OK);
    const now = monotonicNs();
    expect(gcPolicyCt(L.pct, now)).toEqual({ scanned: 2, deleted: 0 });
    // 61 s later the UDP flow and the unanswered SYN (60 s) are idle past their timeouts.
    expect(gcPolicyCt(L.pct, now + 61_000_000_000n)).toEqual({ scanned: 2, deleted: 2 });
    expect(L.pct.keys()).toEqual([]);
  });
});

describe('what the agent shows', () => {
  it('kelp map dump lists flows as their originator opened them, with the verdict; status counts the same rows', () => {
    program([{ ep: B, dir: 'ingress', peer: ID.A, proto: P.IPPROTO_UDP, port: 53, v: allow(120, 1) }]);
    // B (the higher address) opens this one: the key holds A first.
    expect(fromB(udp(ethFrom(B), B.ip, A.ip, 5000, 7000))).toBe(P.TC_ACT_REDIRECT);
    const rows = mapRows('kelp_pct4', L.pct);
    expect(rows).toMatchObject([
      { key: { saddr: B.ip, daddr: A.ip, sport: 5000, dport: 7000, proto: P.IPPROTO_UDP }, value: { action: 'allow', verdict: { policyId: 1, epId: A.epId, direction: 'ingress' } } },
    ]);
    expect(mapRowCount('kelp_pct4', L.pct)).toBe(1);
    const policy = mapRows('kelp_policy4', L.maps.policy);
    expect(policy).toContainEqual({
      key: { epId: B.epId, identity: ID.A, direction: 'ingress', protocol: P.IPPROTO_UDP, port: 53, portPrefix: 16 },
      value: { action: 'allow', tier: 'networkpolicy', policyId: 120, rule: 1 },
    });
    expect(mapRowCount('kelp_policy4', L.maps.policy)).toBe(policy.length);
    expect(mapRows('kelp_ipcache4', L.maps.ipcache)).toContainEqual({ key: { cidr: '192.0.2.0/24' }, value: { identity: ID.DOC, tunnelIp: '0.0.0.0', flags: 0 } });
    expect(mapRows('kelp_policy_config', L.maps.config)).toEqual([{ key: 0, value: { revision: readPolicyRevision(L.maps), flags: 1 } }]);
  });

  it('a policy drop event decodes with its policy; an older datapath\'s record (no versioned header) is unknown, not misread', () => {
    const raw = kelpEvent.encode({
      tsNs: 1n, type: 1, dir: 1, reason: DropReason.POLICY_DENY, ifindex: 3, targetIfindex: 0, epId: 4, len: 60, ethProto: 0x800, proto: 17,
      tracePoint: 0, saddr: A.ip, daddr: B.ip, sport: 1, dport: 2, policyId: 9, rule: 9, tier: 2, action: 2,
    });
    expect(raw.length).toBe(64);
    expect(decodeEvent(raw)).toMatchObject({ kind: 'drop', reasonName: 'POLICY_DENY', epId: 4, policy: { policyId: 9, rule: 9, tier: 'networkpolicy', action: 'deny' } });
    // Version 1 began with ts_ns: its first byte is not 2 here, and its 48/56 bytes match no type.
    const v1 = Buffer.alloc(56);
    v1.writeBigUInt64LE(0x1234_5678_9abc_def1n, 0);
    expect(() => decodeEvent(v1)).toThrow(UnknownEventError);
  });
});

describe('audit', () => {
  it('an audit verdict passes, is reported once as an audit event with its policy, and counted apart from drops', async () => {
    program([
      { ep: B, dir: 'ingress', peer: ID.A, proto: P.IPPROTO_TCP, port: 80, v: verdict('audit', 99, 2) },
      { ep: B, dir: 'ingress', v: deny(98, RULE_ISOLATED) },
    ]);
    expect(fromA(tcp(ethFrom(A), A.ip, B.ip, 40000, 80, 0x02))).toBe(P.TC_ACT_REDIRECT);
    expect(fromB(tcp(ethFrom(B), B.ip, A.ip, 80, 40000, 0x12))).toBe(P.TC_ACT_REDIRECT);
    expect(fromA(tcp(ethFrom(A), A.ip, B.ip, 40000, 80, 0x10))).toBe(P.TC_ACT_REDIRECT);
    const all = (await events()).filter((e) => e.kind !== 'trace');
    // The flow's start carries the audit verdict too (test/datapath/flow-events.test.ts).
    expect(all.filter((e) => e.kind === 'flow-start')).toMatchObject([{ policy: { policyId: 99, rule: 2, action: 'audit' } }]);
    const evs = all.filter((e) => e.kind !== 'flow-start');
    expect(evs).toHaveLength(1);
    expect(evs[0]).toMatchObject({ kind: 'audit', reasonName: 'POLICY_DENY', epId: B.epId, dir: 'to-pod', policy: { policyId: 99, rule: 2, action: 'audit', tier: 'networkpolicy' } });
    // Both packets of the opening direction would have been dropped; the reply would not.
    expect(count(B.epId, TO, MetricsReason.POLICY_AUDIT)).toBe(2);
    const podDrops = Object.keys(readMetrics(L.metrics)).filter((k) => k.split('/')[0] !== '0' && Number(k.split('/')[2]) < 0);
    expect(podDrops).toEqual([]);
  });
});

describe('host.c: replies delivered into a pod after reverse NAT', () => {
  const MASQ = '192.168.79.2';
  let host: BpfObject;
  beforeAll(() => {
    // Pinned under the same root as lxc.o: one set of policy maps for both objects.
    host = loadWithVerifierLog(path.join(__dirname, '../../build/bpf/host.o'), {
      pinRoot,
      constants: masqConstants({ podCidr: '10.79.0.0/24', masqIp: MASQ }),
    });
    onCleanup(() => host.close());
  });
  beforeEach(() => {
    host.map('kelp_ct4').clear();
    host.map('kelp_snat4').clear();
  });

  it('pass on the flow the pod opened though its ingress denies; without that flow they are dropped there', async () => {
    program([{ ep: A, dir: 'ingress', v: deny(110, RULE_ISOLATED) }]);
    const out = udp(ethFrom(A), A.ip, WORLD_IP, 4000, 53);
    expect(fromA(out)).toBe(P.TC_ACT_OK);
    const masq = host.program('kelp_host_egress').testRun({ data: out });
    expect(masq.retval).toBe(P.TC_ACT_OK);
    const natPort = P.parseIpv4(P.parseEthernet(masq.data).payload).payload.readUInt16BE(0);
    const reply = () => host.program('kelp_host_ingress').testRun({ data: udp({ src: '02:00:00:00:00:fe', dst: '02:00:00:00:00:01' }, WORLD_IP, MASQ, 53, natPort) }).retval;

    expect(reply()).toBe(P.TC_ACT_REDIRECT);
    expect(ctOf({ saddr: A.ip, daddr: WORLD_IP, sport: 4000, dport: 53, proto: P.IPPROTO_UDP })).toMatchObject({ txPackets: 1n, rxPackets: 1n });
    await events();
    L.pct.clear();
    expect(reply()).toBe(P.TC_ACT_SHOT);
    await expectDrop('POLICY_DENY', A.epId, TO, { policyId: 110, rule: RULE_ISOLATED });
  });
});

describe('a conntrack that refuses an entry', () => {
  // A build of lxc.o whose kelp_pct4 is a plain 2-entry hash (KELP_TEST_PCT4_FULL): an LRU evicts
  // instead of refusing, so this is the only way to see the refusal.
  let full: Loaded;
  beforeAll(() => {
    const out = path.join(tempDir('kelp-pct4-full-'), 'lxc.o');
    const root = path.join(__dirname, '../..');
    execFileSync('clang-19', [
      ...['-O2', '-g', '-target', 'bpf', '-Wall', '-Werror', '-Wno-unused-function', '-D__TARGET_ARCH_x86', '-DKELP_TEST_PCT4_FULL'],
      ...['-I', path.join(root, 'bpf'), '-I', `/usr/include/${execFileSync('uname', ['-m']).toString().trim()}-linux-gnu`],
      ...['-c', path.join(root, 'bpf/lxc.c'), '-o', out],
    ]);
    full = load(out);
  });
  beforeEach(() => resetMaps(full));

  it('drops an allowed new flow with POLICY_CT_FULL, never passes it untracked', async () => {
    program([], full);
    expect(fromA(udp(ethFrom(A), A.ip, DOC, 4000, 53), full)).toBe(P.TC_ACT_OK);
    expect(fromA(udp(ethFrom(A), A.ip, DOC, 4001, 53), full)).toBe(P.TC_ACT_OK);
    expect(fromA(udp(ethFrom(A), A.ip, DOC, 4002, 53), full)).toBe(P.TC_ACT_SHOT);
    expect(count(A.epId, FROM, DropReason.POLICY_CT_FULL, full)).toBe(1);
    const drops = (await events(full)).filter((e) => e.kind === 'drop');
    expect(drops).toMatchObject([{ reasonName: 'POLICY_CT_FULL', epId: A.epId, policy: { policyId: 1, rule: 0, action: 'allow' } }]);
    // Tracked flows go on.
    expect(fromA(udp(ethFrom(A), A.ip, DOC, 4000, 53), full)).toBe(P.TC_ACT_OK);
  });
});
