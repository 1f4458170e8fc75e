// The per-packet service path of lxc.o (bpf/lib/lb_nat.h, bpf/lib/lb.h) through
// BPF_PROG_TEST_RUN: real frames in, the maps written by the agent's ServiceWriter, and per row the
// verdict, the bytes out (checksums verified by recomputing them), the service conntrack and the
// counters. Runs inside a test netns holding real veths (skb->ifindex must name a device there).
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BpfMap, BpfObject, inNetns, loadObject } from '../../src/bpf';
import { caught } from '../support/bpf-error';
import { DropReason } from '../../src/datapath/drop';
import { applyPolicyMaps, policyMapsOf, setPolicyEnforcement } from '../../src/datapath/policy';
import type { PolicyEntry } from '../../src/datapath/policy-types';
import { mapRows } from '../../src/datapath/dump';
import { monotonicNs } from '../../src/datapath/nat';
import { DEFAULT_LB_MAGLEV_TABLE_SIZE, encodeMaglevTable, gcServiceCt, lb4Backend, lb4BackendKey, lb4Frontend, lb4FrontendKey, lb4MaglevKey, lb4MemberKey, maglevChunks, lb4Affinity, lb4CtEntry, lb4FlowHash, LbCtDir, serviceMapsOf, ServiceWriter } from '../../src/datapath/service';
import {
  BackendEntry,
  BackendSet,
  FRONTEND_AFFINITY,
  FRONTEND_DROP_NO_LOCAL,
  FRONTEND_IN_DROP_NO_LOCAL,
  FRONTEND_SOURCE_RANGES,
  FrontendEntry,
  ServiceMapsDesired,
} from '../../src/datapath/service-types';
import { tuple4 } from '../../src/datapath/nat';
import { Direction, endpointInfo, endpointKey } from '../../src/datapath/structs';
import { maglevTable, maglevTables16, maglevTableSizeFor } from '../../src/service/maglev';
import { Rng } from '../support/rng';
import { loadWithVerifierLog, LXC_OBJECT, metricsId, metricsMaps, readMetrics, TestEndpoint } from '../support/datapath';
import { cleanupAll, createNetns, mountBpffs, Netns, onCleanup } from '../support/netns';
import * as P from '../support/packet';

const M = DEFAULT_LB_MAGLEV_TABLE_SIZE;
const A: TestEndpoint = { ip: '10.78.0.2', ifindex: 0, epId: 201, flags: 0, mac: '02:aa:00:00:01:02', nodeMac: '02:ee:00:00:01:02' };
const B: TestEndpoint = { ip: '10.78.0.3', ifindex: 0, epId: 202, flags: 0, mac: '02:aa:00:00:01:03', nodeMac: '02:ee:00:00:01:03' };
const C: TestEndpoint = { ip: '10.78.0.4', ifindex: 0, epId: 203, flags: 0, mac: '02:aa:00:00:01:04', nodeMac: '02:ee:00:00:01:04' };
const VIP = '10.96.0.10';
const IPPROTO_SCTP = 132;

let node: Netns;
let obj: BpfObject;
let writer: ServiceWriter;
let ct: BpfMap;
let metrics: { hash: BpfMap; fwd: BpfMap };

beforeAll(() => {
  node = createNetns('klb');
  for (const [k, ep] of [['a', A], ['b', B], ['c', C]] as const) {
    node.ip('link', 'add', `h${k}`, 'type', 'veth', 'peer', 'name', `p${k}`);
    ep.ifindex = node.ifindex(`h${k}`);
  }
  obj = loadWithVerifierLog(LXC_OBJECT, { pinRoot: mountBpffs() });
  const eps = obj.map('kelp_endpoints');
  for (const ep of [A, B, C]) eps.update(endpointKey.encode({ ip4: ep.ip }), endpointInfo.encode(ep));
  writer = new ServiceWriter(serviceMapsOf(obj));
  ct = obj.map('kelp_lb4_ct');
  metrics = metricsMaps(obj);
  onCleanup(() => obj.close());
});

afterAll(cleanupAll);

beforeEach(() => {
  for (const m of [ct, obj.map('kelp_lb4_affinity'), metrics.hash, metrics.fwd]) m.clear();
  setPolicyEnforcement(policyMapsOf(obj), false);
});

// --- services --------------------------------------------------------------------------------

const be = (ep: TestEndpoint, port: number, backendId: number): BackendEntry => ({ backendId, address: ep.ip, port, flags: 1 });

function service(backends: BackendEntry[], fe: Partial<FrontendEntry> = {}, more: Partial<ServiceMapsDesired> = {}): ServiceMapsDesired {
  const names = backends.map((b) => `${b.address}:${b.port}`);
  const table = backends.length > 1 ? Uint16Array.from(maglevTable(names, { tableSize: M })) : undefined;
  const frontend: FrontendEntry = {
    address: VIP,
    port: 80,
    protocol: 'TCP',
    svcId: 1,
    setId: backends.length ? 10 : 0,
    count: backends.length,
    flags: 0,
    affinityTimeout: 0,
    ...fe,
  };
  return {
    frontends: [frontend, { ...frontend, protocol: 'UDP' }, { ...frontend, protocol: 'SCTP' }],
    sets: backends.length ? [{ setId: 10, backends, maglev: table }] : [],
    sourceRanges: new Map(),
    names: new Map([[1, 'default/web:http']]),
    ...more,
  };
}

// --- packets ---------------------------------------------------------------------------------

interface Flow {
  from: TestEndpoint;
  src?: string;
  dst: string;
  sport: number;
  dport: number;
}

const l2 = (from: TestEndpoint) => ({ src: from.mac, dst: from.nodeMac, type: P.ETH_P_IP });

function tcpFrame(f: Flow, o: { flags?: number; seq?: number; ack?: number } = {}, payload = Buffer.alloc(0)): Buffer {
  const src = f.src ?? f.from.ip;
  return P.ethernet(l2(f.from), P.ipv4({ src, dst: f.dst, proto: P.IPPROTO_TCP }, P.tcp({ src, dst: f.dst, sport: f.sport, dport: f.dport, ...o }, payload)));
}

function udpFrame(f: Flow, payload = Buffer.from('hello'), zeroCsum = false): Buffer {
  const src = f.src ?? f.from.ip;
  const seg = P.udp({ src, dst: f.dst, sport: f.sport, dport: f.dport }, payload);
  if (zeroCsum) seg.writeUInt16BE(0, 6);
  return P.ethernet(l2(f.from), P.ipv4({ src, dst: f.dst, proto: P.IPPROTO_UDP }, seg));
}

function sctpFrame(f: Flow): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(f.sport, 0);
  h.writeUInt16BE(f.dport, 2);
  h.writeUInt32BE(0xdeadbeef, 4);
  h.writeUInt32BE(0x12345678, 8);
  return P.ethernet(l2(f.from), P.ipv4({ src: f.from.ip, dst: f.dst, proto: IPPROTO_SCTP }, h));
}

function pseudoSum(src: string, dst: string, proto: number, len: number): Buffer {
  return Buffer.concat([P.ipBytes(src), P.ipBytes(dst), Buffer.from([0, proto, len >> 8, len & 0xff])]);
}

interface Out {
  retval: number;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  ttl: number;
  proto: number;
  ip: P.ParsedIpv4;
  eth: P.ParsedEth;
}

/** Parses the output and checks every checksum by recomputing it. */
function parseOut(retval: number, data: Buffer): Out {
  const eth = P.parseEthernet(data);
  const ip = P.parseIpv4(eth.payload);
  expect(ip.checksumOk, 'IPv4 header checksum').toBe(true);
  const l4 = ip.payload;
  if (ip.proto === P.IPPROTO_TCP) {
    expect(P.inetChecksum(Buffer.concat([pseudoSum(ip.src, ip.dst, ip.proto, l4.length), l4])), 'TCP checksum').toBe(0);
  } else if (ip.proto === P.IPPROTO_UDP && l4.readUInt16BE(6) !== 0) {
    expect(P.inetChecksum(Buffer.concat([pseudoSum(ip.src, ip.dst, ip.proto, l4.length), l4])), 'UDP checksum').toBe(0);
  } else if (ip.proto === P.IPPROTO_ICMP) {
    expect(P.inetChecksum(l4), 'ICMP checksum').toBe(0);
  }
  const ports = ip.proto === P.IPPROTO_ICMP ? { sport: 0, dport: 0 } : P.parsePorts(l4);
  return { retval, src: ip.src, dst: ip.dst, ...ports, ttl: ip.ttl, proto: ip.proto, ip, eth };
}

function fromPod(frame: Buffer, ifindex: number): Out & { raw: Buffer } {
  const r = inNetns(node.path, () => obj.program('kelp_from_pod').testRun({ data: frame, ctx: P.skbCtx({ ifindex }) }));
  return { ...parseOut(r.retval, r.data), raw: r.data };
}

function verdictOnly(frame: Buffer, ifindex: number): number {
  return inNetns(node.path, () => obj.program('kelp_from_pod').testRun({ data: frame, ctx: P.skbCtx({ ifindex }) })).retval;
}

const toVip = (sport: number, from = A, dport = 80): Flow => ({ from, dst: VIP, sport, dport });

function ctEntries() {
  return ct.lookupBatch().map(([k, v]) => ({ key: tuple4.decode(k), value: lb4CtEntry.decode(v) }));
}

const drops = (reason: number, epId = A.epId) => readMetrics(metrics)[metricsId(epId, Direction.FROM_POD, reason)]?.packets ?? 0;

// --- rows --------------------------------------------------------------------------------------

describe('DNAT and reverse NAT', () => {
  it('TCP to the frontend goes to the backend (address, port, checksums), straight into its pod; the reply comes back from the frontend', () => {
    writer.apply(service([be(B, 8080, 1)]));
    const out = fromPod(tcpFrame(toVip(40000), { flags: 0x02, seq: 1000 }), A.ifindex);
    expect(out).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: A.ip, dst: B.ip, sport: 40000, dport: 8080, ttl: 63 });
    expect(out.eth.dst).toBe(B.mac);

    const fwd = ctEntries().find((e) => e.key.dir === LbCtDir.FORWARD)!;
    expect(fwd.key).toMatchObject({ saddr: A.ip, daddr: VIP, sport: 40000, dport: 80, proto: P.IPPROTO_TCP });
    expect(fwd.value).toMatchObject({ address: B.ip, port: 8080, backendId: 1, setId: 10, svcId: 1 });

    const reply = fromPod(tcpFrame({ from: B, dst: A.ip, sport: 8080, dport: 40000 }, { flags: 0x12, seq: 5000, ack: 1001 }), B.ifindex);
    expect(reply).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: VIP, dst: A.ip, sport: 80, dport: 40000 });
    expect(reply.eth.dst).toBe(A.mac);
  });

  it('UDP: checksum rewritten and verified; a zero checksum stays zero', () => {
    writer.apply(service([be(B, 5353, 1)]));
    const out = fromPod(udpFrame(toVip(41000)), A.ifindex);
    expect(out).toMatchObject({ retval: P.TC_ACT_REDIRECT, dst: B.ip, dport: 5353, proto: P.IPPROTO_UDP });
    expect(out.ip.payload.readUInt16BE(6)).not.toBe(0);
    const zero = fromPod(udpFrame(toVip(41001), Buffer.from('x'), true), A.ifindex);
    expect(zero).toMatchObject({ dst: B.ip, dport: 5353 });
    expect(zero.ip.payload.readUInt16BE(6)).toBe(0);
  });

  it('one client port to one backend through two frontends: the second flow gets a port of 61000-65535 (checksums right), its replies and ICMP errors go back to the client port and frontend it used, the first flow is undisturbed, and collection keeps and drops the pair together', () => {
    const VIP2 = '10.96.0.11';
    const d = service([be(B, 8080, 1)]);
    d.frontends.push({ ...d.frontends[0], address: VIP2, svcId: 2 }, { ...d.frontends[1], address: VIP2, svcId: 2 });
    d.names.set(2, 'default/web2:http');
    writer.apply(d);
    for (const [frame, proto] of [
      [(dst: string) => tcpFrame({ from: A, dst, sport: 40100, dport: 80 }, { flags: 0x02, seq: 1000 }), P.IPPROTO_TCP],
      [(dst: string) => udpFrame({ from: A, dst, sport: 40100, dport: 80 }, Buffer.from('q')), P.IPPROTO_UDP],
    ] as const) {
      const first = fromPod(frame(VIP), A.ifindex);
      expect(first).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: A.ip, dst: B.ip, sport: 40100, dport: 8080 });
      const second = fromPod(frame(VIP2), A.ifindex);
      expect(second).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: A.ip, dst: B.ip, dport: 8080 });
      expect(second.sport).toBeGreaterThanOrEqual(61000);
      // Its next packet keeps the moved port; the first flow's keeps its own.
      expect(fromPod(frame(VIP2), A.ifindex).sport).toBe(second.sport);
      expect(fromPod(frame(VIP), A.ifindex).sport).toBe(40100);
      // Replies: each to the client port and frontend of its own flow.
      const reply = (dport: number) =>
        fromPod(proto === P.IPPROTO_TCP ? tcpFrame({ from: B, dst: A.ip, sport: 8080, dport }, { flags: 0x12, seq: 5000, ack: 1001 }) : udpFrame({ from: B, dst: A.ip, sport: 8080, dport }), B.ifindex);
      expect(reply(second.sport)).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: VIP2, dst: A.ip, sport: 80, dport: 40100 });
      expect(reply(40100)).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: VIP, dst: A.ip, sport: 80, dport: 40100 });
      if (proto === P.IPPROTO_UDP) {
        // B's port unreachable quotes the moved port: the client's socket must hear it as its own flow.
        const quoted = P.ipv4({ src: A.ip, dst: B.ip, proto }, P.udp({ src: A.ip, dst: B.ip, sport: second.sport, dport: 8080 }, Buffer.from('q')));
        const err = fromPod(P.ethernet(l2(B), P.ipv4({ src: B.ip, dst: A.ip, proto: P.IPPROTO_ICMP }, P.icmp({ type: 3, code: 3, id: 0, seq: 0 }, quoted))), B.ifindex);
        expect(err).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: VIP2, dst: A.ip, proto: P.IPPROTO_ICMP });
        const q = P.parseIpv4(err.ip.payload.subarray(8));
        expect(q).toMatchObject({ src: A.ip, dst: VIP2, checksumOk: true });
        expect(P.parsePorts(q.payload)).toEqual({ sport: 40100, dport: 80 });
      }
      const rows = ctEntries().filter((e) => e.key.proto === proto);
      expect(rows.find((e) => e.key.dir === LbCtDir.FORWARD && e.key.daddr === VIP2)?.value.natPort).toBe(second.sport);
      expect(rows.find((e) => e.key.dir === LbCtDir.REVERSE && e.key.dport === second.sport)?.value).toMatchObject({ address: VIP2, port: 80, natPort: 40100 });
      expect(rows.find((e) => e.key.dir === LbCtDir.FORWARD && e.key.daddr === VIP)?.value.natPort).toBe(0);
    }
    // Collection pairs a moved flow's entries by the moved port: live, all kept (a reverse entry
    // it could not pair would go at once); idle past TCP's established timeout (6 h), all gone.
    expect(gcServiceCt(ct, monotonicNs())).toEqual({ scanned: 8, deleted: 0 });
    expect(gcServiceCt(ct, monotonicNs() + 7n * 3_600_000_000_000n)).toEqual({ scanned: 8, deleted: 8 });
  });

  it("an ICMP error from the backend about the flow reaches the client as the frontend's: source, quote and every checksum", () => {
    writer.apply(service([be(B, 5353, 1)]));
    fromPod(udpFrame(toVip(41500), Buffer.from('q')), A.ifindex);
    // B's kernel answers the translated datagram (A:41500 -> B:5353) with port unreachable, quoting all of it.
    const quoted = P.ipv4({ src: A.ip, dst: B.ip, proto: P.IPPROTO_UDP }, P.udp({ src: A.ip, dst: B.ip, sport: 41500, dport: 5353 }, Buffer.from('q')));
    const err = P.ethernet(l2(B), P.ipv4({ src: B.ip, dst: A.ip, proto: P.IPPROTO_ICMP }, P.icmp({ type: 3, code: 3, id: 0, seq: 0 }, quoted)));
    const out = fromPod(err, B.ifindex);
    expect(out).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: VIP, dst: A.ip, proto: P.IPPROTO_ICMP });
    const q = P.parseIpv4(out.ip.payload.subarray(8));
    expect(q).toMatchObject({ src: A.ip, dst: VIP, checksumOk: true });
    expect(P.parsePorts(q.payload)).toEqual({ sport: 41500, dport: 80 });
    expect(P.inetChecksum(Buffer.concat([pseudoSum(q.src, q.dst, P.IPPROTO_UDP, q.payload.length), q.payload])), 'quoted UDP checksum').toBe(0);
  });

  it('SCTP: the address is translated (its CRC32c does not cover it); another backend port is refused with LB_SCTP_PORT', () => {
    writer.apply(service([be(B, 80, 1)]));
    const out = fromPod(sctpFrame(toVip(42000)), A.ifindex);
    expect(out).toMatchObject({ retval: P.TC_ACT_REDIRECT, dst: B.ip, dport: 80, proto: IPPROTO_SCTP });
    expect(out.ip.payload.readUInt32BE(8)).toBe(0x12345678);
    writer.apply(service([be(B, 9000, 1)]));
    expect(verdictOnly(sctpFrame(toVip(42001)), A.ifindex)).toBe(P.TC_ACT_SHOT);
    expect(drops(DropReason.LB_SCTP_PORT)).toBe(1);
  });

  it("a pod meets the frontend's in-cluster view, not the outside one (externalTrafficPolicy Local seen from inside); an empty in-cluster view drops only with its own flag", () => {
    // Outside: set 10 (B), empty and dropping; inside: set 11 (C).
    const desired = service([be(B, 8080, 1)], { setId: 0, count: 0, flags: FRONTEND_DROP_NO_LOCAL, inSetId: 11, inCount: 1 });
    desired.sets.push({ setId: 11, backends: [be(C, 8080, 2)] });
    writer.apply(desired);
    expect(fromPod(tcpFrame(toVip(40100), { flags: 0x02 }), A.ifindex)).toMatchObject({ retval: P.TC_ACT_REDIRECT, dst: C.ip, dport: 8080 });
    expect(ctEntries().find((e) => e.key.dir === LbCtDir.FORWARD)!.value).toMatchObject({ setId: 11, backendId: 2 });
    // The in-cluster view empty: rejected at once (a RST back into the pod), unless it drops itself.
    writer.apply(service([], { flags: FRONTEND_DROP_NO_LOCAL, inSetId: 0, inCount: 0 }));
    expect(fromPod(tcpFrame(toVip(40101), { flags: 0x02, seq: 7 }), A.ifindex)).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: VIP, dst: A.ip });
    writer.apply(service([], { flags: FRONTEND_DROP_NO_LOCAL | FRONTEND_IN_DROP_NO_LOCAL, inSetId: 0, inCount: 0 }));
    expect(verdictOnly(tcpFrame(toVip(40102), { flags: 0x02 }), A.ifindex)).toBe(P.TC_ACT_SHOT);
    expect(drops(DropReason.LB_NO_LOCAL)).toBe(1);
  });

  it('a packet that is not to a frontend is untouched', () => {
    writer.apply(service([be(B, 8080, 1)]));
    const out = fromPod(tcpFrame({ from: A, dst: VIP, sport: 40000, dport: 81 }), A.ifindex);
    expect(out).toMatchObject({ retval: P.TC_ACT_OK, dst: VIP, dport: 81 });
    expect(ctEntries()).toHaveLength(0);
  });
});

describe('backend choice', () => {
  const three = () => [be(B, 8080, 1), be(C, 8080, 2), be(B, 8081, 3)];

  it("a new flow gets Maglev's slot for its hash", () => {
    const backends = three();
    const desired = service(backends);
    writer.apply(desired);
    const table = desired.sets[0].maglev!;
    for (let sport = 43000; sport < 43040; sport++) {
      const h = lb4FlowHash({ saddr: A.ip, daddr: VIP, sport, dport: 80, proto: P.IPPROTO_TCP });
      const want = backends[table[h % M]];
      const out = fromPod(tcpFrame(toVip(sport)), A.ifindex);
      expect({ dst: out.dst, dport: out.dport }).toEqual({ dst: want.address, dport: want.port });
    }
  });

  it('a tracked flow keeps its backend when the table changes; when its backend leaves the set, its next packet moves (UDP)', () => {
    const backends = three();
    writer.apply(service(backends));
    const first = fromPod(udpFrame(toVip(44000)), A.ifindex);
    const chosen = backends.find((b) => b.address === first.dst && b.port === first.dport)!;
    // Every slot of a new table points at another backend: a new flow would move, this one stays.
    const others = backends.filter((b) => b !== chosen);
    const desired = service(backends);
    desired.sets[0].maglev = desired.sets[0].maglev!.map(() => backends.indexOf(others[0]));
    writer.apply(desired);
    for (let i = 0; i < 3; i++) expect(fromPod(udpFrame(toVip(44000)), A.ifindex)).toMatchObject({ dst: chosen.address, dport: chosen.port });
    // The backend goes: the same flow's next packet lands on a live one, and its replies come back.
    writer.apply(service(others));
    const moved = fromPod(udpFrame(toVip(44000)), A.ifindex);
    expect(others.map((b) => `${b.address}:${b.port}`)).toContain(`${moved.dst}:${moved.dport}`);
    const reply = fromPod(udpFrame({ from: moved.dst === B.ip ? B : C, dst: A.ip, sport: moved.dport, dport: 44000 }), moved.dst === B.ip ? B.ifindex : C.ifindex);
    expect(reply).toMatchObject({ src: VIP, sport: 80, dst: A.ip });
    // Only the live flow's reverse entry is left.
    expect(ctEntries().filter((e) => e.key.dir === LbCtDir.REVERSE).map((e) => e.key.saddr + ':' + e.key.sport)).toEqual([`${moved.dst}:${moved.dport}`]);
  });

  it('sessionAffinity ClientIP: every flow of a client goes to its backend while it stays in the set', () => {
    const backends = three();
    writer.apply(service(backends, { flags: FRONTEND_AFFINITY, affinityTimeout: 60 }));
    const seen = new Set<string>();
    for (let sport = 45000; sport < 45020; sport++) {
      const out = fromPod(tcpFrame(toVip(sport)), A.ifindex);
      seen.add(`${out.dst}:${out.dport}`);
    }
    expect(seen.size).toBe(1);
    // Its backend goes: the next new flow chooses again, and sticks there.
    const [gone] = [...seen];
    writer.apply(service(backends.filter((b) => `${b.address}:${b.port}` !== gone), { flags: FRONTEND_AFFINITY, affinityTimeout: 60 }));
    const again = new Set<string>();
    for (let sport = 45100; sport < 45110; sport++) {
      const out = fromPod(tcpFrame(toVip(sport)), A.ifindex);
      again.add(`${out.dst}:${out.dport}`);
    }
    expect(again.size).toBe(1);
    expect(again.has(gone)).toBe(false);
  });

  it('sessionAffinity timeout: a client not seen for longer than timeoutSeconds is balanced afresh', () => {
    const backends = three();
    const desired = service(backends, { flags: FRONTEND_AFFINITY, affinityTimeout: 5 });
    writer.apply(desired);
    const table = desired.sets[0].maglev!;
    const maglevChoice = (sport: number) => backends[table[lb4FlowHash({ saddr: A.ip, daddr: VIP, sport, dport: 80, proto: P.IPPROTO_TCP }) % M]];
    // Two source ports Maglev sends to different backends.
    const first = 45200;
    let second = 45201;
    while (maglevChoice(second) === maglevChoice(first)) second++;
    expect(fromPod(tcpFrame(toVip(first)), A.ifindex)).toMatchObject({ dst: maglevChoice(first).address, dport: maglevChoice(first).port });
    // Within the timeout the second flow follows the first's backend.
    expect(fromPod(tcpFrame(toVip(second)), A.ifindex)).toMatchObject({ dst: maglevChoice(first).address, dport: maglevChoice(first).port });
    // Its record aged past 5 s: the next new flow gets its own Maglev slot.
    const aff = obj.map('kelp_lb4_affinity');
    const [[k, v]] = aff.lookupBatch();
    const rec = lb4Affinity.decode(v);
    aff.update(k, lb4Affinity.encode({ ...rec, lastUsed: rec.lastUsed - 6_000_000_000n }));
    const third = fromPod(tcpFrame(toVip(second + 1000)), A.ifindex);
    expect({ dst: third.dst, dport: third.dport }).toEqual({ dst: maglevChoice(second + 1000).address, dport: maglevChoice(second + 1000).port });
  });

  it('loadBalancerSourceRanges: a client outside them is dropped (LB_SOURCE_RANGE), one inside is balanced', () => {
    writer.apply(service([be(B, 8080, 1)], { flags: FRONTEND_SOURCE_RANGES }, { sourceRanges: new Map([[1, ['10.78.0.4/32', '192.0.2.0/24']]]) }));
    expect(verdictOnly(tcpFrame(toVip(46000)), A.ifindex)).toBe(P.TC_ACT_SHOT);
    expect(drops(DropReason.LB_SOURCE_RANGE)).toBe(1);
    expect(fromPod(tcpFrame(toVip(46000, C)), C.ifindex)).toMatchObject({ retval: P.TC_ACT_REDIRECT, dst: B.ip });
  });
});

describe('no usable backend', () => {
  it('TCP SYN: a RST from the frontend goes straight back into the client (seq 0, ack = seq + 1), counted as LB_NO_BACKEND', () => {
    writer.apply(service([]));
    const out = fromPod(tcpFrame(toVip(47000), { flags: 0x02, seq: 777 }), A.ifindex);
    expect(out).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: VIP, dst: A.ip, sport: 80, dport: 47000, proto: P.IPPROTO_TCP });
    expect(out.eth).toMatchObject({ dst: A.mac, src: A.nodeMac });
    const tcp = out.ip.payload;
    expect(tcp.length).toBe(20);
    expect(tcp[13]).toBe(0x14); // RST|ACK
    expect(tcp.readUInt32BE(4)).toBe(0);
    expect(tcp.readUInt32BE(8)).toBe(778);
    expect(out.ip.totalLength).toBe(40);
    expect(drops(DropReason.LB_NO_BACKEND)).toBe(1);
    expect(ctEntries()).toHaveLength(0);
  });

  it('TCP with ACK and data: the RST takes its ack as seq', () => {
    writer.apply(service([]));
    const out = fromPod(tcpFrame(toVip(47001), { flags: 0x18, seq: 10, ack: 99999 }, Buffer.from('GET /')), A.ifindex);
    expect(out.ip.payload[13]).toBe(0x04);
    expect(out.ip.payload.readUInt32BE(4)).toBe(99999);
  });

  it('a RST is never answered', () => {
    writer.apply(service([]));
    expect(verdictOnly(tcpFrame(toVip(47002), { flags: 0x04 }), A.ifindex)).toBe(P.TC_ACT_SHOT);
  });

  it('UDP: ICMP port unreachable from the frontend, quoting the datagram as sent', () => {
    writer.apply(service([]));
    const sent = udpFrame(toVip(47003), Buffer.from('a DNS query'));
    const out = fromPod(sent, A.ifindex);
    expect(out).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: VIP, dst: A.ip, proto: P.IPPROTO_ICMP });
    const icmp = out.ip.payload;
    expect([icmp[0], icmp[1]]).toEqual([3, 3]);
    expect(icmp.subarray(8)).toEqual(sent.subarray(P.ETH_HLEN, P.ETH_HLEN + 28));
    expect(out.ip.totalLength).toBe(56);
  });

  it('externalTrafficPolicy Local without a local backend: dropped silently (LB_NO_LOCAL)', () => {
    writer.apply(service([], { flags: FRONTEND_DROP_NO_LOCAL }));
    expect(verdictOnly(tcpFrame(toVip(47004)), A.ifindex)).toBe(P.TC_ACT_SHOT);
    expect(drops(DropReason.LB_NO_LOCAL)).toBe(1);
  });
});

describe('hairpin', () => {
  it("a pod reaching itself through its Service gets the packet from the frontend's address, and its reply goes back as the frontend", () => {
    writer.apply(service([be(A, 8080, 1)]));
    const out = fromPod(tcpFrame(toVip(48000)), A.ifindex);
    expect(out).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: VIP, sport: 48000, dst: A.ip, dport: 8080 });
    expect(out.eth.dst).toBe(A.mac);
    const reply = fromPod(tcpFrame({ from: A, dst: VIP, sport: 8080, dport: 48000 }, { flags: 0x12 }), A.ifindex);
    expect(reply).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: VIP, sport: 80, dst: A.ip, dport: 48000 });
  });
});

describe('policy after translation', () => {
  const entry = (ep: TestEndpoint, direction: 'ingress' | 'egress', port: number | undefined, action: 'allow' | 'deny'): PolicyEntry => ({
    epId: ep.epId,
    identity: 0,
    direction,
    protocol: port === undefined ? undefined : P.IPPROTO_TCP,
    port: port ?? 0,
    portPrefix: port === undefined ? 0 : 16,
    verdict: { action, tier: 'networkpolicy', policyId: 9, rule: port === undefined ? 0xffff : 0 },
  });

  function enforce(entries: PolicyEntry[]): void {
    const maps = policyMapsOf(obj);
    applyPolicyMaps(maps, { ipcache: new Map([['0.0.0.0/0', 2], [`${A.ip}/32`, 300], [`${B.ip}/32`, 301], [`${C.ip}/32`, 302]]), policy: entries, policies: new Map() });
    setPolicyEnforcement(maps, true);
    obj.map('kelp_pct4').clear();
  }

  it("is decided on the backend's port: B allows 8080 only, so a Service on port 80 in front of it passes, and its replies", () => {
    writer.apply(service([be(B, 8080, 1)]));
    enforce([entry(A, 'egress', undefined, 'allow'), entry(B, 'ingress', undefined, 'deny'), entry(B, 'ingress', 8080, 'allow'), entry(B, 'egress', undefined, 'deny'), entry(A, 'ingress', undefined, 'deny')]);
    expect(fromPod(tcpFrame(toVip(49000)), A.ifindex)).toMatchObject({ retval: P.TC_ACT_REDIRECT, dst: B.ip, dport: 8080 });
    expect(fromPod(tcpFrame({ from: B, dst: A.ip, sport: 8080, dport: 49000 }, { flags: 0x12 }), B.ifindex)).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: VIP });
    // Direct to port 80 of B is what its policy denies.
    expect(verdictOnly(tcpFrame({ from: A, dst: B.ip, sport: 49001, dport: 80 }), A.ifindex)).toBe(P.TC_ACT_SHOT);
  });

  it('a backend port the policy denies is dropped after translation', () => {
    writer.apply(service([be(B, 9090, 1)]));
    enforce([entry(A, 'egress', undefined, 'allow'), entry(B, 'ingress', undefined, 'deny'), entry(B, 'ingress', 80, 'allow')]);
    expect(verdictOnly(tcpFrame(toVip(49002)), A.ifindex)).toBe(P.TC_ACT_SHOT);
    expect(readMetrics(metrics)[metricsId(B.epId, Direction.TO_POD, DropReason.POLICY_DENY)]?.packets).toBe(1);
  });

  it('hairpin under policy: the pod is its own peer, allowed by its own ingress rule for the backend port', () => {
    writer.apply(service([be(A, 8080, 1)]));
    enforce([entry(A, 'egress', undefined, 'allow'), entry(A, 'ingress', undefined, 'deny'), entry(A, 'ingress', 8080, 'allow')]);
    expect(fromPod(tcpFrame(toVip(49003)), A.ifindex)).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: VIP, dst: A.ip, dport: 8080 });
    expect(fromPod(tcpFrame({ from: A, dst: VIP, sport: 8080, dport: 49003 }, { flags: 0x12 }), A.ifindex)).toMatchObject({ retval: P.TC_ACT_REDIRECT, src: VIP, sport: 80 });
  });
});

describe('service conntrack collection and map views', () => {
  it('gcServiceCt keeps a live flow and removes an idle one with its reverse entry', () => {
    writer.apply(service([be(B, 8080, 1)]));
    fromPod(udpFrame(toVip(50000)), A.ifindex);
    expect(ctEntries()).toHaveLength(2);
    expect(gcServiceCt(ct, monotonicNs())).toEqual({ scanned: 2, deleted: 0 });
    expect(gcServiceCt(ct, monotonicNs() + 3_600_000_000_000n)).toEqual({ scanned: 2, deleted: 2 });
    expect(ctEntries()).toHaveLength(0);
  });

  it('kelp map dump shows frontends, backends, members and tables decoded', () => {
    writer.apply(service([be(B, 8080, 1), be(C, 8080, 2)]));
    expect(mapRows('kelp_lb4_frontends', obj.map('kelp_lb4_frontends'))).toContainEqual({
      key: { address: VIP, port: 80, protocol: 'TCP' },
      value: { svcId: 1, setId: 10, count: 2, flags: 0, affinityTimeout: 0, tableId: 10, m: M, inSetId: 10, inCount: 2, inTableId: 10, inM: M },
    });
    expect(mapRows('kelp_lb4_backends', obj.map('kelp_lb4_backends'))).toContainEqual({
      key: { setId: 10, slot: 1 },
      value: { address: C.ip, port: 8080, flags: 1, backendId: 2 },
    });
    expect(mapRows('kelp_lb4_members', obj.map('kelp_lb4_members'))).toContainEqual({ key: { setId: 10, backendId: 2 }, value: { slot: 1 } });
    const [table] = mapRows('kelp_lb4_maglev', obj.map('kelp_lb4_maglev')) as Array<{ key: { tableId: number }; value: { size: number; chunks: number; slotsPerBackend: Record<number, number> } }>;
    expect(table.key.tableId).toBe(10);
    expect(table.value).toMatchObject({ size: M, chunks: maglevChunks(M) });
    expect(Math.abs(table.value.slotsPerBackend[0] - table.value.slotsPerBackend[1])).toBeLessThanOrEqual(1);
  });
});

describe('ServiceWriter', () => {
  it("sets handed one table object share one kelp_lb4_maglev entry, and both frontends follow it", () => {
    const backends = [be(B, 8080, 1), be(C, 8080, 2)];
    const table = Uint16Array.from(maglevTable(['x', 'y'], { tableSize: M }));
    const d = service(backends);
    d.sets = [
      { setId: 10, backends, maglev: table },
      { setId: 11, backends: [be(B, 9090, 3), be(C, 9090, 4)], maglev: table },
    ];
    d.frontends.push({ address: VIP, port: 90, protocol: 'TCP', svcId: 2, setId: 11, count: 2, flags: 0, affinityTimeout: 0 });
    writer.apply(d);
    expect(obj.map('kelp_lb4_maglev').keys()).toHaveLength(maglevChunks(M));
    for (let sport = 51000; sport < 51010; sport++) {
      const slot = table[lb4FlowHash({ saddr: A.ip, daddr: VIP, sport, dport: 90, proto: P.IPPROTO_TCP }) % M];
      expect(fromPod(tcpFrame(toVip(sport, A, 90)), A.ifindex)).toMatchObject({ dst: [B, C][slot].ip, dport: 9090 });
    }
    // The set owning the entry goes: the other one's table is written under its own id first.
    d.sets = [d.sets[1]];
    d.frontends = d.frontends.filter((f) => f.setId === 11);
    writer.apply(d);
    expect(new Set(obj.map('kelp_lb4_maglev').keys().map((k) => k.readUInt32LE(0)))).toEqual(new Set([11]));
    expect(fromPod(tcpFrame(toVip(51000, A, 90)), A.ifindex).dport).toBe(9090);
  });

  it('holds exactly the desired content after every apply of a generated sequence: changes, shared tables, resync repairing tampering', () => {
    const maps = serviceMapsOf(obj);
    for (const m of Object.values(maps)) m.clear();
    const w = new ServiceWriter(maps);
    const rng = new Rng(1206);
    // The reference: every entry the desired content means, encoded entry by entry with the codecs.
    const expected = (d: ServiceMapsDesired) => {
      const rows: Record<string, string[]> = { frontends: [], backends: [], members: [], maglev: [] };
      const tableOf = new Map<number, { id: number; m: number }>();
      const firstSet = new Map<Uint16Array, { id: number; count: number }>();
      for (const set of d.sets) {
        set.backends.forEach((b, slot) => {
          rows.backends.push(lb4BackendKey.encode({ setId: set.setId, slot }).toString('hex') + '=' + lb4Backend.encode(b).toString('hex'));
          const v = Buffer.alloc(4);
          v.writeUInt32LE(slot);
          rows.members.push(lb4MemberKey.encode({ setId: set.setId, backendId: b.backendId }).toString('hex') + '=' + v.toString('hex'));
        });
        if (set.backends.length > 1 && set.maglev) {
          const owner = firstSet.get(set.maglev);
          const id = owner?.count === set.backends.length ? owner.id : set.setId;
          if (id === set.setId) {
            firstSet.set(set.maglev, { id, count: set.backends.length });
            const chunks = encodeMaglevTable(set.maglev);
            for (let c = 0; c < chunks.length / 512; c++) rows.maglev.push(lb4MaglevKey.encode({ tableId: id, chunk: c }).toString('hex') + '=' + chunks.subarray(512 * c, 512 * (c + 1)).toString('hex'));
          }
          tableOf.set(set.setId, { id, m: set.maglev.length });
        }
      }
      for (const fe of d.frontends) {
        const t = fe.count > 1 ? tableOf.get(fe.setId) : undefined;
        rows.frontends.push(lb4FrontendKey.encode(fe).toString('hex') + '=' + lb4Frontend.encode({ ...fe, tableId: t?.id ?? 0, m: t?.m ?? 0 }).toString('hex'));
      }
      return Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, v.sort()]));
    };
    const held = () =>
      Object.fromEntries(
        (['frontends', 'backends', 'members', 'maglev'] as const).map((k) => [k, maps[k].lookupBatch().map(([a, b]) => a.toString('hex') + '=' + b.toString('hex')).sort()]),
      );
    const tables = [2, 3, 2, 5].map((n, i) => maglevTables16([Array.from({ length: n }, (_, k) => `t${i}-${k}`)], { tableSize: maglevTableSizeFor(n, M) })[0]);
    let sets = new Map<number, BackendSet>();
    let fes = new Map<string, FrontendEntry>();
    let nextBackend = 1;
    for (let step = 0; step < 40; step++) {
      // Change a few sets (new objects: new backends, another table, gone) and frontends.
      for (let k = 0; k < 1 + rng.int(4); k++) {
        const setId = 1 + rng.int(8);
        if (rng.chance(0.2)) {
          sets.delete(setId);
          continue;
        }
        const table = rng.pick(tables);
        const n = rng.chance(0.2) ? 1 : tables.indexOf(table) === 1 ? 3 : tables.indexOf(table) === 3 ? 5 : 2;
        const backends = Array.from({ length: n }, () => ({ backendId: nextBackend++, address: `10.77.${rng.int(4)}.${1 + rng.int(200)}`, port: 8000 + rng.int(3), flags: rng.int(4) }));
        sets.set(setId, n > 1 ? { setId, backends, maglev: table } : { setId, backends });
      }
      sets = new Map([...sets].sort((a, b) => a[0] - b[0]));
      for (const key of [...fes.keys()]) {
        const fe = fes.get(key)!;
        if (fe.count > 0 && sets.get(fe.setId)?.backends.length !== fe.count) fes.delete(key);
      }
      for (let k = 0; k < 1 + rng.int(3); k++) {
        const port = 80 + rng.int(6);
        const protocol = rng.pick(['TCP', 'UDP'] as const);
        const key = `${port}/${protocol}`;
        const set = rng.chance(0.15) ? undefined : rng.pick([...sets.values()]);
        fes.set(key, { address: VIP, port, protocol, svcId: port, setId: set?.setId ?? 0, count: set?.backends.length ?? 0, flags: rng.int(4), affinityTimeout: 0 });
      }
      fes = new Map([...fes]);
      const d: ServiceMapsDesired = { frontends: [...fes.values()], sets: [...sets.values()], sourceRanges: new Map(), names: new Map() };
      const resync = step % 7 === 6;
      if (resync) {
        // Someone else's writes: an entry more, an entry gone; the periodic resync repairs both.
        maps.frontends.update(lb4FrontendKey.encode({ address: '10.96.9.9', port: 1, protocol: 'TCP' }), lb4Frontend.encode({ svcId: 9, setId: 0, count: 0, flags: 0, affinityTimeout: 0 }));
        const some = maps.backends.keys()[0];
        if (some) maps.backends.delete(some);
      }
      w.apply(d, { resync });
      expect(held(), `step ${step}`).toEqual(expected(d));
    }
    const again = w.apply({ frontends: [...fes.values()], sets: [...sets.values()], sourceRanges: new Map(), names: new Map() }, { resync: true });
    expect([again.frontends.added, again.frontends.updated, again.frontends.removed, again.backends.added, again.maglev.added]).toEqual([0, 0, 0, 0, 0]);
  });

  it('a change among many is written as a patch (changed entries only) and leaves exactly what a full apply would, through a generated sequence', () => {
    const maps = serviceMapsOf(obj);
    for (const m of Object.values(maps)) m.clear();
    const w = new ServiceWriter(maps);
    const rng = new Rng(61206);
    const held = () =>
      Object.fromEntries((['frontends', 'backends', 'members', 'maglev'] as const).map((k) => [k, maps[k].lookupBatch().map(([a, b]) => a.toString('hex') + '=' + b.toString('hex')).sort()]));
    const table = (names: string[]) => maglevTables16([names], { tableSize: maglevTableSizeFor(names.length, M) })[0];
    const sourceRanges = new Map([[7, ['10.9.0.0/16']]]);
    // 60 Services of 1 to 4 backends; some pairs share a table (two ports over the same pods).
    let nextBackend = 1;
    const mkSet = (setId: number, n: number, shared?: Uint16Array): BackendSet => {
      const backends = Array.from({ length: n }, () => ({ backendId: nextBackend++, address: `10.66.${rng.int(8)}.${1 + rng.int(250)}`, port: 9000, flags: rng.int(2) }));
      return n > 1 ? { setId, backends, maglev: shared ?? table(backends.map((b) => `${b.address}:${b.backendId}`)) } : { setId, backends };
    };
    let sets: BackendSet[] = [];
    for (let i = 0; i < 60; i += 2) {
      const n = 1 + rng.int(4);
      const a = mkSet(i + 1, n);
      sets.push(a, rng.chance(0.5) && a.maglev ? { ...mkSet(i + 2, n), maglev: a.maglev } : mkSet(i + 2, n));
    }
    const mkFe = (set: BackendSet, k: number, flags = 0): FrontendEntry => ({ address: `10.96.1.${set.setId}`, port: 80 + k, protocol: 'TCP', svcId: set.setId, setId: set.setId, count: set.backends.length, flags, affinityTimeout: 0 });
    let frontends = sets.flatMap((set) => [mkFe(set, 0), mkFe(set, 1)]);
    const desired = (): ServiceMapsDesired => ({ frontends, sets, sourceRanges, names: new Map() });
    const reference = new ServiceWriter(maps);
    w.apply(desired());
    for (let step = 0; step < 60; step++) {
      const kind = rng.int(10);
      sets = sets.slice();
      frontends = frontends.slice();
      if (kind < 6) {
        // Endpoints replaced: the same set id and count, new backends and table (a shared table: both sets).
        const i = rng.int(sets.length);
        const o = sets[i];
        const partner = o.maglev ? sets.findIndex((x, j) => j !== i && x.maglev === o.maglev) : -1;
        sets[i] = mkSet(o.setId, o.backends.length);
        if (partner >= 0) sets[partner] = { ...mkSet(sets[partner].setId, o.backends.length), maglev: sets[i].maglev };
      } else if (kind < 8) {
        // A frontend's flags change (its value only).
        const i = rng.int(frontends.length);
        frontends[i] = { ...frontends[i], flags: frontends[i].flags ^ 1 };
      } else if (kind < 9) {
        // A set grows: its count changes (and its frontends with it): not a patch.
        const i = rng.int(sets.length);
        const o = sets[i];
        if (!sets.some((x, j) => j !== i && o.maglev && x.maglev === o.maglev)) {
          sets[i] = mkSet(o.setId, o.backends.length + 1);
          frontends = frontends.map((f) => (f.setId === o.setId ? { ...f, count: sets[i].backends.length } : f));
        }
      } else {
        // A tampered map and a periodic resync: read back and repaired.
        maps.backends.delete(maps.backends.keys()[0]);
        w.apply(desired(), { resync: true });
      }
      w.apply(desired());
      const got = held();
      for (const m of Object.values(maps)) m.clear();
      reference.apply(desired(), { resync: true });
      expect(got, `step ${step}`).toEqual(held());
    }
    expect(w.counts.patches).toBeGreaterThan(30);
    expect(w.counts.full).toBeGreaterThan(5);
  });

  it('refuses a field that does not fit its struct, naming it, and writes nothing', () => {
    const maps = serviceMapsOf(obj);
    for (const m of Object.values(maps)) m.clear();
    const w = new ServiceWriter(maps);
    const good = service([be(B, 8080, 1), be(C, 8080, 2)]);
    w.apply(good);
    const before = maps.frontends.lookupBatch().length;
    const cases: Array<[ServiceMapsDesired, RegExp]> = [
      [{ ...good, frontends: [{ ...good.frontends[0], port: 70000 }] }, /port must be a u16, got 70000/],
      [{ ...good, frontends: [{ ...good.frontends[0], svcId: -1 }] }, /svcId must be a u32, got -1/],
      [{ ...good, sets: [{ ...good.sets[0], backends: [be(B, 8080, 1.5), be(C, 8080, 2)] }] }, /backendId must be a u32, got 1.5/],
      [{ ...good, sets: [{ ...good.sets[0], backends: [{ ...be(B, 8080, 1), flags: 256 }, be(C, 8080, 2)] }] }, /flags must be a u8, got 256/],
    ];
    for (const [bad, why] of cases) {
      expect(() => w.apply(bad)).toThrow(why);
      expect(maps.frontends.lookupBatch()).toHaveLength(before);
    }
  });

  it('refuses a Maglev table naming a backend its set does not have, among many new tables, naming the set, and writes no frontend', () => {
    const maps = serviceMapsOf(obj);
    for (const m of Object.values(maps)) m.clear();
    const w = new ServiceWriter(maps);
    const desired = (bad?: number): ServiceMapsDesired => {
      const out: ServiceMapsDesired = { frontends: [], sets: [], sourceRanges: new Map(), names: new Map() };
      for (let i = 0; i < 400; i++) {
        const setId = 100 + i;
        const t = new Uint16Array(251).map((_, k) => (k + i) % 2);
        if (i === bad) t[250] = 2;
        out.sets.push({ setId, backends: [be(B, 7000 + i, 2 * i + 1), be(C, 7000 + i, 2 * i + 2)], maglev: t });
        out.frontends.push({ address: `10.96.${i >> 8}.${i & 255}`, port: 80, protocol: 'TCP', svcId: i + 1, setId, count: 2, flags: 0, affinityTimeout: 0 });
      }
      return out;
    };
    expect(() => w.apply(desired(321))).toThrow('maglev table slot 250 of set 421 names backend 2 of a set of 2');
    expect(maps.frontends.lookupBatch()).toHaveLength(0);
    // The same content with good tables is written whole.
    w.apply(desired());
    expect(maps.frontends.lookupBatch()).toHaveLength(400);
    expect(maps.maglev.lookupBatch()).toHaveLength(400);
  });

  it('BpfMap.updateBatchesStart writes large batches of several maps side by side; a full map fails with its own error, the others are written', () => {
    const small = loadObject(LXC_OBJECT, { maxEntries: { kelp_lb4_members: 1000 } });
    onCleanup(() => small.close());
    const packed = (n: number, ks: number, vs: number, key: (i: number, b: Buffer) => void) => {
      const keys = Buffer.alloc(n * ks);
      const values = Buffer.alloc(n * vs);
      for (let i = 0; i < n; i++) {
        key(i, keys.subarray(i * ks, (i + 1) * ks));
        values.writeUInt32LE(i * 7, i * vs);
      }
      return { keys, values, count: n };
    };
    const be = small.map('kelp_lb4_backends');
    const fe = small.map('kelp_lb4_frontends');
    const backends = packed(20_000, 8, 12, (i, k) => (k.writeUInt32LE(1 + (i >> 1)), k.writeUInt32LE(i & 1, 4)));
    const frontends = packed(9_000, 8, 40, (i, k) => (k.writeUInt32BE(0x0a600000 + i), k.writeUInt16BE(80, 4), (k[6] = 6)));
    // 5,000 members into a map of 1,000: E2BIG for that map (below).
    const members = packed(5_000, 8, 4, (i, k) => (k.writeUInt32LE(1), k.writeUInt32LE(i + 1, 4)));
    // Left to threads while JavaScript goes on: nothing is promised before wait(); after it, the
    // batches are written, and a failed one throws its own error, the others written all the same.
    const writing = BpfMap.updateBatchesStart([
      { map: be, ...backends },
      { map: fe, ...frontends },
    ]);
    writing.wait();
    writing.wait();
    const again = be.lookupBatch();
    expect(again).toHaveLength(20_000);
    for (const [k, v] of again) expect(v.readUInt32LE(0)).toBe(7 * (2 * (k.readUInt32LE(0) - 1) + k.readUInt32LE(4)));
    expect(fe.lookupBatch()).toHaveLength(9_000);
    be.clear();
    const failing = BpfMap.updateBatchesStart([{ map: small.map('kelp_lb4_members'), ...members }, { map: be, ...backends }]);
    const err = caught(() => failing.wait());
    // (The kernel keeps 15 characters of a map's name.)
    expect([err.code, err.operation]).toEqual(['E2BIG', 'update batch kelp_lb4_member (1000 of 5000 written)']);
    expect(be.lookupBatch()).toHaveLength(20_000);
    // Sizes are checked before anything is started.
    expect(() => BpfMap.updateBatchesStart([{ map: be, keys: backends.keys.subarray(8), values: backends.values, count: 20_000 }])).toThrow(/keys/);
  });

  it('programs 10,000 services (3 frontends, 3 backends and a table each), and an unchanged apply writes nothing', () => {
    const desired: ServiceMapsDesired = { frontends: [], sets: [], sourceRanges: new Map(), names: new Map() };
    // Sized as the compiler sizes a three-backend set's table: 509 slots, two chunks.
    const size = maglevTableSizeFor(3, M);
    const table = Uint16Array.from(maglevTable(['a', 'b', 'c'], { tableSize: size }));
    for (let i = 0; i < 10_000; i++) {
      const setId = i + 1;
      const ip = `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
      // A table of its own per set, as sets over different pods have.
      desired.sets.push({ setId, backends: [0, 1, 2].map((k) => ({ backendId: 3 * i + k + 1, address: `10.200.${k}.${(i % 250) + 1}`, port: 8000 + (i % 1000), flags: 0 })), maglev: table.slice() });
      for (const [port, protocol] of [[80, 'TCP'], [443, 'TCP'], [53, 'UDP']] as const) {
        desired.frontends.push({ address: ip, port, protocol, svcId: setId, setId, count: 3, flags: 0, affinityTimeout: 0 });
      }
    }
    const maps = serviceMapsOf(obj);
    for (const m of Object.values(maps)) m.clear();
    const w = new ServiceWriter(maps);
    const first = w.apply(desired);
    expect(first.frontends.added).toBe(30_000);
    expect(first.backends.added).toBe(30_000);
    expect(first.maglev.added).toBe(10_000 * maglevChunks(size));
    const again = w.apply(desired);
    expect(again.frontends).toMatchObject({ added: 0, updated: 0, removed: 0, unchanged: 30_000 });
    w.apply({ frontends: [], sets: [], sourceRanges: new Map(), names: new Map() });
    expect(obj.map('kelp_lb4_maglev').keys()).toHaveLength(0);
    expect(obj.map('kelp_lb4_frontends').keys()).toHaveLength(0);
  });
});
