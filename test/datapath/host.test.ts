// Masquerade on the uplink (bpf/host.c) through BPF_PROG_TEST_RUN: translated bytes and checksums,
// port allocation, reverse translation, the pass-through cases, drops with their reasons, the
// conntrack/NAT map contents, and the agent's collector (gcNat) on the real maps.
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BpfMap, BpfObject, BpfProgram, loadObject } from '../../src/bpf';
import {
  CtDir,
  NatDir,
  TcpFlag,
  ct4Entry,
  dumpNat,
  gcNat,
  masqConstants,
  monotonicNs,
  nat4Entry,
  nomasq4Key,
  tuple4,
  Tuple4,
} from '../../src/datapath/nat';
import { DropReason } from '../../src/datapath/drop';
import { Direction, endpointInfo, endpointKey } from '../../src/datapath/structs';
import { metricsId, metricsMaps, readMetrics } from '../support/datapath';
import { cleanupAll, mountBpffs } from '../support/netns';
import {
  ETH_P_IP,
  IPPROTO_ICMP,
  IPPROTO_TCP,
  IPPROTO_UDP,
  TC_ACT_OK,
  TC_ACT_REDIRECT,
  TC_ACT_SHOT,
  ethernet,
  icmp,
  inetChecksum,
  ipBytes,
  ipv4,
  parseEthernet,
  parseIpv4,
  ParsedIpv4,
  tcp,
  udp,
} from '../support/packet';

const OBJ = path.join(__dirname, '../../build/bpf/host.o');
const MASQ = '192.168.50.2';
const POD_CIDR = '10.244.1.0/24';
const POD_A = '10.244.1.5';
const POD_B = '10.244.1.6';
const REMOTE = '93.184.216.34';
const REMOTE2 = '93.184.216.35';
const NODE_MAC = '02:00:00:00:00:01';
const GW_MAC = '02:00:00:00:00:fe';
const POD_MAC = '02:00:00:00:01:05';
const VETH_MAC = '02:00:00:00:02:05';
const PORT_MIN = 61000;
const PORT_MAX = 65535;
const S = 1_000_000_000n;

interface Host {
  obj: BpfObject;
  egress: BpfProgram;
  ingress: BpfProgram;
  ct: BpfMap;
  snat: BpfMap;
  nomasq: BpfMap;
  endpoints: BpfMap;
  metrics: { hash: BpfMap; fwd: BpfMap };
}

function load(portMin: number, portMax: number): Host {
  const obj = loadObject(OBJ, {
    pinRoot: mountBpffs(),
    constants: masqConstants({ podCidr: POD_CIDR, masqIp: MASQ, portMin, portMax }),
  });
  return {
    obj,
    egress: obj.program('kelp_host_egress'),
    ingress: obj.program('kelp_host_ingress'),
    ct: obj.map('kelp_ct4'),
    snat: obj.map('kelp_snat4'),
    nomasq: obj.map('kelp_nomasq4'),
    endpoints: obj.map('kelp_endpoints'),
    metrics: metricsMaps(obj),
  };
}

function reset(h: Host): void {
  for (const m of [h.ct, h.snat, h.nomasq, h.endpoints, h.metrics.hash]) for (const k of m.keys()) m.delete(k);
  h.metrics.fwd.clear();
  for (const cidr of ['10.244.0.0/16', '172.20.0.0/16']) h.nomasq.update(nomasq4Key.encode({ cidr }), Buffer.from([1]));
}

// --- packets ---------------------------------------------------------------------------------

interface Flow {
  src: string;
  dst: string;
  sport: number;
  dport: number;
}

const frame = (ip: Buffer) => ethernet({ dst: GW_MAC, src: NODE_MAC, type: ETH_P_IP }, ip);
const tcpPkt = (f: Flow, flags: number = TcpFlag.SYN, payload = Buffer.alloc(0), ttl = 64) =>
  frame(ipv4({ src: f.src, dst: f.dst, proto: IPPROTO_TCP, ttl }, tcp({ ...f, flags }, payload)));
const udpPkt = (f: Flow, payload = Buffer.from('kelp says hi')) =>
  frame(ipv4({ src: f.src, dst: f.dst, proto: IPPROTO_UDP }, udp({ ...f }, payload)));
const echo = (src: string, dst: string, type: number, id: number) =>
  frame(ipv4({ src, dst, proto: IPPROTO_ICMP }, icmp({ type, id, seq: 7 }, Buffer.from('ping-payload'))));

function pseudo(src: string, dst: string, proto: number, len: number): Buffer {
  const b = Buffer.alloc(12);
  ipBytes(src).copy(b, 0);
  ipBytes(dst).copy(b, 4);
  b[9] = proto;
  b.writeUInt16BE(len, 10);
  return b;
}

/** Recomputes every checksum the packet carries: IPv4 header and TCP/UDP (pseudo-header) or ICMP. */
function expectChecksumsValid(ip: ParsedIpv4): void {
  expect(ip.checksumOk, 'IPv4 header checksum').toBe(true);
  const l4 = ip.payload;
  if (ip.proto === IPPROTO_ICMP) {
    expect(inetChecksum(l4), 'ICMP checksum').toBe(0);
  } else if (ip.proto === IPPROTO_UDP && l4.readUInt16BE(6) === 0) {
    // no checksum: nothing to verify
  } else {
    expect(inetChecksum(Buffer.concat([pseudo(ip.src, ip.dst, ip.proto, l4.length), l4])), 'L4 checksum').toBe(0);
  }
}

function run(prog: BpfProgram, data: Buffer) {
  const r = prog.testRun({ data });
  return { retval: r.retval, data: r.data, eth: parseEthernet(r.data), ip: parseIpv4(parseEthernet(r.data).payload) };
}

const ports = (ip: ParsedIpv4) => ({ sport: ip.payload.readUInt16BE(0), dport: ip.payload.readUInt16BE(2) });
const icmpId = (ip: ParsedIpv4) => ip.payload.readUInt16BE(4);

function dropCount(h: Host, reason: number, epId = 0, dir: number = Direction.FROM_POD): number {
  return readMetrics(h.metrics)[metricsId(epId, dir, reason)]?.packets ?? 0;
}

function natLookup(h: Host, t: Tuple4) {
  const v = h.snat.lookup(tuple4.encode(t));
  return v && nat4Entry.decode(v);
}

function ctLookup(h: Host, t: Tuple4) {
  const v = h.ct.lookup(tuple4.encode(t));
  return v && ct4Entry.decode(v);
}

const orig = (f: Flow, proto: number): Tuple4 => ({ saddr: f.src, daddr: f.dst, sport: f.sport, dport: f.dport, proto, dir: CtDir.EGRESS });

// --- tests -----------------------------------------------------------------------------------

let h: Host;
let narrow: Host;

beforeAll(() => {
  h = load(PORT_MIN, PORT_MAX);
  narrow = load(62000, 62000);
});

afterAll(() => {
  h?.obj.close();
  narrow?.obj.close();
  cleanupAll();
});

beforeEach(() => {
  reset(h);
  reset(narrow);
});

describe('kelp_host_egress: SNAT of pod traffic', () => {
  const cases = [
    { name: 'TCP SYN', proto: IPPROTO_TCP, pkt: (f: Flow) => tcpPkt(f) },
    { name: 'TCP with payload', proto: IPPROTO_TCP, pkt: (f: Flow) => tcpPkt(f, TcpFlag.ACK, Buffer.from('GET / HTTP/1.1\r\n\r\n')) },
    { name: 'UDP', proto: IPPROTO_UDP, pkt: (f: Flow) => udpPkt(f) },
    { name: 'UDP with an odd-length payload', proto: IPPROTO_UDP, pkt: (f: Flow) => udpPkt(f, Buffer.from('abc')) },
  ];
  it.each(cases)('$name: source becomes the node address and a NAT port; checksums stay valid', ({ proto, pkt }) => {
    const f = { src: POD_A, dst: REMOTE, sport: 40000, dport: 443 };
    const before = monotonicNs();
    const input = pkt(f);
    const out = run(h.egress, input);
    const after = monotonicNs();

    expect(out.retval).toBe(TC_ACT_OK);
    expect(out.data.length).toBe(input.length);
    expect(out.ip.src).toBe(MASQ);
    expect(out.ip.dst).toBe(REMOTE);
    const p = ports(out.ip);
    expect(p.dport).toBe(443);
    expect(p.sport).toBeGreaterThanOrEqual(PORT_MIN);
    expect(p.sport).toBeLessThanOrEqual(PORT_MAX);
    expectChecksumsValid(out.ip);
    // Everything but addresses, ports and checksums is as sent.
    const inIp = parseIpv4(parseEthernet(input).payload);
    expect(out.ip.payload.subarray(proto === IPPROTO_TCP ? 20 : 8)).toEqual(inIp.payload.subarray(proto === IPPROTO_TCP ? 20 : 8));
    expect(out.ip.ttl).toBe(inIp.ttl);

    // Both halves of the mapping, and the flow's conntrack entry.
    const fwd = natLookup(h, orig(f, proto));
    expect(fwd).toMatchObject({ addr: MASQ, port: p.sport });
    const rev = natLookup(h, { saddr: REMOTE, daddr: MASQ, sport: 443, dport: p.sport, proto, dir: NatDir.INGRESS });
    expect(rev).toMatchObject({ addr: POD_A, port: 40000 });
    const ct = ctLookup(h, orig(f, proto))!;
    expect(ct).toMatchObject({ txPackets: 1n, txBytes: BigInt(input.length), rxPackets: 0n, rxBytes: 0n });
    // bpf_ktime_get_ns and the agent's clock are the same clock.
    expect(ct.created).toBeGreaterThanOrEqual(before);
    expect(ct.created).toBeLessThanOrEqual(after);
    expect(ct.lastSeen).toBe(ct.created);
    expect(h.ct.keys()).toHaveLength(1);
    expect(h.snat.keys()).toHaveLength(2);
  });

  it('keeps the mapping of an existing flow and counts its packets', () => {
    const f = { src: POD_A, dst: REMOTE, sport: 40001, dport: 80 };
    const first = ports(run(h.egress, tcpPkt(f, TcpFlag.SYN)).ip).sport;
    for (let i = 0; i < 5; i++) {
      expect(ports(run(h.egress, tcpPkt(f, TcpFlag.ACK, Buffer.from(`seg${i}`))).ip).sport).toBe(first);
    }
    const ct = ctLookup(h, orig(f, IPPROTO_TCP))!;
    expect(ct.txPackets).toBe(6n);
    expect(ct.txFlags).toBe(TcpFlag.SYN | TcpFlag.ACK);
    expect(h.snat.keys()).toHaveLength(2);
  });

  it('gives two pods using the same source port to the same destination different NAT ports', () => {
    const a = { src: POD_A, dst: REMOTE, sport: 5555, dport: 53 };
    const b = { ...a, src: POD_B };
    const pa = ports(run(h.egress, udpPkt(a)).ip).sport;
    const pb = ports(run(h.egress, udpPkt(b)).ip).sport;
    expect(pa).not.toBe(pb);
    for (const [pod, p] of [[POD_A, pa], [POD_B, pb]] as const) {
      expect(natLookup(h, { saddr: REMOTE, daddr: MASQ, sport: 53, dport: p, proto: IPPROTO_UDP, dir: NatDir.INGRESS })).toMatchObject({
        addr: pod,
        port: 5555,
      });
    }
  });

  it('leaves a zero UDP checksum zero', () => {
    const f = { src: POD_A, dst: REMOTE, sport: 40002, dport: 9999 };
    const input = udpPkt(f);
    input.writeUInt16BE(0, 14 + 20 + 6);
    const out = run(h.egress, input);
    expect(out.ip.src).toBe(MASQ);
    expect(out.ip.payload.readUInt16BE(6)).toBe(0);
    expect(out.ip.checksumOk).toBe(true);
  });

  it('translates a packet with IP options (L4 after a 24-byte header)', () => {
    const f = { src: POD_A, dst: REMOTE, sport: 40003, dport: 443 };
    const input = frame(ipv4({ src: f.src, dst: f.dst, proto: IPPROTO_TCP, options: Buffer.from([1, 1, 1, 0]) }, tcp({ ...f, flags: TcpFlag.SYN })));
    const out = run(h.egress, input);
    expect(out.ip.ihl).toBe(6);
    expect(out.ip.src).toBe(MASQ);
    expect(ports(out.ip).sport).toBeGreaterThanOrEqual(PORT_MIN);
    expectChecksumsValid(out.ip);
  });

  it('ICMP echo: the identifier is the port', () => {
    const out = run(h.egress, echo(POD_A, REMOTE, 8, 0x1234));
    expect(out.retval).toBe(TC_ACT_OK);
    expect(out.ip.src).toBe(MASQ);
    const id = icmpId(out.ip);
    expect(id).toBeGreaterThanOrEqual(PORT_MIN);
    expect(id).toBeLessThanOrEqual(PORT_MAX);
    expect(out.ip.payload.readUInt16BE(6)).toBe(7); // sequence untouched
    expectChecksumsValid(out.ip);
    expect(natLookup(h, { saddr: POD_A, daddr: REMOTE, sport: 0x1234, dport: 0, proto: IPPROTO_ICMP, dir: NatDir.EGRESS })).toMatchObject({ addr: MASQ, port: id });
    expect(natLookup(h, { saddr: REMOTE, daddr: MASQ, sport: 0, dport: id, proto: IPPROTO_ICMP, dir: NatDir.INGRESS })).toMatchObject({ addr: POD_A, port: 0x1234 });
  });
});

describe('kelp_host_egress: what passes untouched', () => {
  const cases = [
    { name: "the node's own traffic", pkt: () => tcpPkt({ src: MASQ, dst: REMOTE, sport: 45000, dport: 443 }) },
    { name: 'a source outside the pod CIDR', pkt: () => udpPkt({ src: '10.245.0.9', dst: REMOTE, sport: 1000, dport: 53 }) },
    { name: 'pod to a pod on another node (no-masquerade range)', pkt: () => tcpPkt({ src: POD_A, dst: '10.244.2.7', sport: 40000, dport: 80 }) },
    { name: 'pod to another no-masquerade CIDR', pkt: () => udpPkt({ src: POD_A, dst: '172.20.3.4', sport: 40000, dport: 53 }) },
    { name: "the node's own fragments", pkt: () => frame(ipv4({ src: MASQ, dst: REMOTE, proto: IPPROTO_UDP, moreFragments: true }, Buffer.alloc(64))) },
    { name: 'IPv6', pkt: () => ethernet({ dst: GW_MAC, src: NODE_MAC, type: 0x86dd }, Buffer.alloc(60)) },
  ];
  it.each(cases)('$name', ({ pkt }) => {
    const input = pkt();
    const r = h.egress.testRun({ data: input });
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.data).toEqual(input);
    expect(h.snat.keys()).toHaveLength(0);
    expect(h.ct.keys()).toHaveLength(0);
  });
});

describe('kelp_host_egress: pod packets it cannot translate are dropped with a reason', () => {
  const cases = [
    {
      name: 'first fragment',
      reason: DropReason.NAT_FRAG,
      pkt: () => frame(ipv4({ src: POD_A, dst: REMOTE, proto: IPPROTO_UDP, moreFragments: true }, udp({ src: POD_A, dst: REMOTE, sport: 1, dport: 2 }, Buffer.alloc(64)))),
    },
    {
      name: 'later fragment',
      reason: DropReason.NAT_FRAG,
      pkt: () => frame(ipv4({ src: POD_A, dst: REMOTE, proto: IPPROTO_UDP, fragOffset: 9 }, Buffer.alloc(64))),
    },
    { name: 'GRE', reason: DropReason.NAT_UNSUPP_PROTO, pkt: () => frame(ipv4({ src: POD_A, dst: REMOTE, proto: 47 }, Buffer.alloc(24))) },
    { name: 'ICMP timestamp request', reason: DropReason.NAT_UNSUPP_PROTO, pkt: () => echo(POD_A, REMOTE, 13, 1) },
    {
      name: 'truncated TCP header',
      reason: -5, // DROP_L4_TRUNCATED from ipv4_parse
      pkt: () => frame(ipv4({ src: POD_A, dst: REMOTE, proto: IPPROTO_TCP }, Buffer.alloc(10))),
    },
    {
      name: 'ICMP error about a flow that has no mapping',
      reason: DropReason.NAT_NO_MAPPING,
      pkt: () =>
        frame(
          ipv4(
            { src: POD_A, dst: REMOTE, proto: IPPROTO_ICMP },
            icmp({ type: 3, code: 3, id: 0, seq: 0 }, ipv4({ src: REMOTE, dst: POD_A, proto: IPPROTO_UDP }, udp({ src: REMOTE, dst: POD_A, sport: 53, dport: 40000 }))),
          ),
        ),
    },
  ];
  it.each(cases)('$name', ({ reason, pkt }) => {
    const r = h.egress.testRun({ data: pkt() });
    expect(r.retval).toBe(TC_ACT_SHOT);
    expect(dropCount(h, reason)).toBe(1);
    expect(h.snat.keys()).toHaveLength(0);
  });

  it('charges the drop to the pod when it is a local endpoint', () => {
    h.endpoints.update(endpointKey.encode({ ip4: POD_A }), endpointInfo.encode({ ifindex: 42, epId: 7, flags: 0, mac: POD_MAC, nodeMac: VETH_MAC }));
    const r = h.egress.testRun({ data: frame(ipv4({ src: POD_A, dst: REMOTE, proto: 47 }, Buffer.alloc(24))) });
    expect(r.retval).toBe(TC_ACT_SHOT);
    expect(dropCount(h, DropReason.NAT_UNSUPP_PROTO, 7)).toBe(1);
  });

  it('port exhaustion is a drop, never an untranslated pass', () => {
    const f = { src: POD_A, dst: REMOTE, sport: 1111, dport: 443 };
    const first = run(narrow.egress, tcpPkt(f));
    expect(first.retval).toBe(TC_ACT_OK);
    expect(ports(first.ip).sport).toBe(62000);

    const r = narrow.egress.testRun({ data: tcpPkt({ ...f, src: POD_B }) });
    expect(r.retval).toBe(TC_ACT_SHOT);
    expect(dropCount(narrow, DropReason.NAT_NO_PORT)).toBe(1);

    // The port is only taken towards that remote endpoint.
    const other = run(narrow.egress, tcpPkt({ ...f, src: POD_B, dst: REMOTE2 }));
    expect(other.retval).toBe(TC_ACT_OK);
    expect(ports(other.ip).sport).toBe(62000);
  });
});

describe('kelp_host_ingress: reverse translation', () => {
  function mapOut(pkt: Buffer) {
    const out = run(h.egress, pkt);
    expect(out.retval).toBe(TC_ACT_OK);
    return out.ip;
  }

  it('TCP reply: restores the pod address and port exactly and accounts the reply', () => {
    const f = { src: POD_A, dst: REMOTE, sport: 40000, dport: 443 };
    const natPort = ports(mapOut(tcpPkt(f))).sport;
    const reply = tcpPkt({ src: REMOTE, dst: MASQ, sport: 443, dport: natPort }, TcpFlag.SYN | TcpFlag.ACK, Buffer.from('hello pod'));
    const out = run(h.ingress, reply);
    expect(out.retval).toBe(TC_ACT_OK);
    // The very packet the remote would have sent the pod directly.
    const expected = tcpPkt({ src: REMOTE, dst: POD_A, sport: 443, dport: 40000 }, TcpFlag.SYN | TcpFlag.ACK, Buffer.from('hello pod'));
    expect(out.data).toEqual(expected);
    const ct = ctLookup(h, orig(f, IPPROTO_TCP))!;
    expect(ct).toMatchObject({ txPackets: 1n, rxPackets: 1n, rxBytes: BigInt(reply.length), txFlags: TcpFlag.SYN, rxFlags: TcpFlag.SYN | TcpFlag.ACK });
  });

  it('UDP reply', () => {
    const f = { src: POD_B, dst: REMOTE, sport: 5353, dport: 53 };
    const natPort = ports(mapOut(udpPkt(f))).sport;
    const out = run(h.ingress, udpPkt({ src: REMOTE, dst: MASQ, sport: 53, dport: natPort }, Buffer.from('answer')));
    expect(out.data).toEqual(udpPkt({ src: REMOTE, dst: POD_B, sport: 53, dport: 5353 }, Buffer.from('answer')));
  });

  it('ICMP echo reply', () => {
    const id = icmpId(mapOut(echo(POD_A, REMOTE, 8, 0x4242)));
    const out = run(h.ingress, echo(REMOTE, MASQ, 0, id));
    expect(out.data).toEqual(echo(REMOTE, POD_A, 0, 0x4242));
  });

  it('delivers straight into a local pod: MACs, TTL, bpf_redirect_peer', () => {
    h.endpoints.update(endpointKey.encode({ ip4: POD_A }), endpointInfo.encode({ ifindex: 42, epId: 7, flags: 0, mac: POD_MAC, nodeMac: VETH_MAC }));
    const f = { src: POD_A, dst: REMOTE, sport: 40000, dport: 443 };
    const natPort = ports(mapOut(tcpPkt(f))).sport;
    const reply = tcpPkt({ src: REMOTE, dst: MASQ, sport: 443, dport: natPort }, TcpFlag.ACK, Buffer.alloc(0), 50);
    const out = run(h.ingress, reply);
    expect(out.retval).toBe(TC_ACT_REDIRECT);
    expect(out.eth).toMatchObject({ dst: POD_MAC, src: VETH_MAC });
    expect(out.ip).toMatchObject({ dst: POD_A, ttl: 49 });
    expect(ports(out.ip).dport).toBe(40000);
    expectChecksumsValid(out.ip);
    // Counted once, as forwarded into endpoint 7, by endpoint4_deliver().
    expect(readMetrics(h.metrics)).toEqual({ [metricsId(7, Direction.TO_POD, 0)]: { packets: 1, bytes: reply.length } });
  });

  it('leaves TTL 1 to the node stack (which sends the time-exceeded)', () => {
    h.endpoints.update(endpointKey.encode({ ip4: POD_A }), endpointInfo.encode({ ifindex: 42, epId: 7, flags: 0, mac: POD_MAC, nodeMac: VETH_MAC }));
    const natPort = ports(mapOut(tcpPkt({ src: POD_A, dst: REMOTE, sport: 40000, dport: 443 }))).sport;
    const out = run(h.ingress, tcpPkt({ src: REMOTE, dst: MASQ, sport: 443, dport: natPort }, TcpFlag.ACK, Buffer.alloc(0), 1));
    expect(out.retval).toBe(TC_ACT_OK);
    expect(out.ip).toMatchObject({ dst: POD_A, ttl: 1 });
  });

  const untouched = [
    { name: 'a port below the NAT range (the node’s own service)', pkt: () => tcpPkt({ src: REMOTE, dst: MASQ, sport: 443, dport: 22 }) },
    { name: 'a NAT port with no mapping', pkt: () => tcpPkt({ src: REMOTE, dst: MASQ, sport: 443, dport: 61234 }) },
    { name: 'another address', pkt: () => udpPkt({ src: REMOTE, dst: '192.168.50.3', sport: 53, dport: 61234 }) },
    { name: 'an echo request to the node', pkt: () => echo(REMOTE, MASQ, 8, 61234) },
    { name: 'a fragment', pkt: () => frame(ipv4({ src: REMOTE, dst: MASQ, proto: IPPROTO_UDP, fragOffset: 3 }, Buffer.alloc(40))) },
  ];
  it.each(untouched)('passes untouched: $name', ({ pkt }) => {
    const input = pkt();
    const r = h.ingress.testRun({ data: input });
    expect(r.retval).toBe(TC_ACT_OK);
    expect(r.data).toEqual(input);
  });

  it('a reply from another remote port is not the flow’s', () => {
    const natPort = ports(mapOut(udpPkt({ src: POD_A, dst: REMOTE, sport: 5000, dport: 53 }))).sport;
    const input = udpPkt({ src: REMOTE, dst: MASQ, sport: 54, dport: natPort });
    expect(h.ingress.testRun({ data: input }).data).toEqual(input);
  });
});

describe('ICMP errors about translated flows', () => {
  const payload = Buffer.from('query-bytes');

  it('inbound: the quoted packet is translated back to the pod’s view', () => {
    const f = { src: POD_A, dst: REMOTE, sport: 40000, dport: 53 };
    const natPort = ports(run(h.egress, udpPkt(f, payload)).ip).sport;
    // What the remote got from us, quoted whole in its port-unreachable.
    const quoted = ipv4({ src: MASQ, dst: REMOTE, proto: IPPROTO_UDP }, udp({ src: MASQ, dst: REMOTE, sport: natPort, dport: 53 }, payload));
    const err = frame(ipv4({ src: REMOTE, dst: MASQ, proto: IPPROTO_ICMP }, icmp({ type: 3, code: 3, id: 0, seq: 0 }, quoted)));
    const out = run(h.ingress, err);
    expect(out.retval).toBe(TC_ACT_OK);

    // Byte for byte the error the pod would get without NAT.
    const direct = ipv4({ src: POD_A, dst: REMOTE, proto: IPPROTO_UDP }, udp({ src: POD_A, dst: REMOTE, sport: 40000, dport: 53 }, payload));
    expect(out.data).toEqual(frame(ipv4({ src: REMOTE, dst: POD_A, proto: IPPROTO_ICMP }, icmp({ type: 3, code: 3, id: 0, seq: 0 }, direct))));
    expectChecksumsValid(out.ip);
  });

  it('inbound: a quote cut after 8 bytes of TCP (no TCP checksum in it)', () => {
    const f = { src: POD_A, dst: REMOTE, sport: 40010, dport: 443 };
    const natPort = ports(run(h.egress, tcpPkt(f)).ip).sport;
    const full = ipv4({ src: MASQ, dst: REMOTE, proto: IPPROTO_TCP }, tcp({ src: MASQ, dst: REMOTE, sport: natPort, dport: 443, flags: TcpFlag.SYN }));
    const err = frame(ipv4({ src: '198.51.100.1', dst: MASQ, proto: IPPROTO_ICMP }, icmp({ type: 11, code: 0, id: 0, seq: 0 }, full.subarray(0, 28))));
    const out = run(h.ingress, err);
    const q = parseIpv4(out.ip.payload.subarray(8));
    expect(out.ip.dst).toBe(POD_A);
    expect(q.src).toBe(POD_A);
    expect(q.checksumOk).toBe(true);
    expect(ports(q)).toEqual({ sport: 40010, dport: 443 });
    expectChecksumsValid(out.ip);
  });

  it('inbound: an error quoting an echo request', () => {
    const id = icmpId(run(h.egress, echo(POD_A, REMOTE, 8, 0x0abc)).ip);
    const quoted = ipv4({ src: MASQ, dst: REMOTE, proto: IPPROTO_ICMP }, icmp({ type: 8, id, seq: 7 }, Buffer.from('ping-payload')));
    const out = run(h.ingress, frame(ipv4({ src: '198.51.100.1', dst: MASQ, proto: IPPROTO_ICMP }, icmp({ type: 3, code: 1, id: 0, seq: 0 }, quoted))));
    const direct = ipv4({ src: POD_A, dst: REMOTE, proto: IPPROTO_ICMP }, icmp({ type: 8, id: 0x0abc, seq: 7 }, Buffer.from('ping-payload')));
    expect(out.data).toEqual(frame(ipv4({ src: '198.51.100.1', dst: POD_A, proto: IPPROTO_ICMP }, icmp({ type: 3, code: 1, id: 0, seq: 0 }, direct))));
  });

  it('inbound: an error about the node’s own flow passes untouched', () => {
    const quoted = ipv4({ src: MASQ, dst: REMOTE, proto: IPPROTO_UDP }, udp({ src: MASQ, dst: REMOTE, sport: 45000, dport: 53 }));
    const input = frame(ipv4({ src: REMOTE, dst: MASQ, proto: IPPROTO_ICMP }, icmp({ type: 3, code: 3, id: 0, seq: 0 }, quoted)));
    expect(h.ingress.testRun({ data: input }).data).toEqual(input);
  });

  it('outbound: a pod’s error about a reply it received leaves as the node’s', () => {
    const f = { src: POD_A, dst: REMOTE, sport: 40020, dport: 53 };
    const natPort = ports(run(h.egress, udpPkt(f, payload)).ip).sport;
    // The pod's socket is gone when the answer arrives: the pod reports port unreachable.
    const quotedAtPod = ipv4({ src: REMOTE, dst: POD_A, proto: IPPROTO_UDP }, udp({ src: REMOTE, dst: POD_A, sport: 53, dport: 40020 }, payload));
    const out = run(h.egress, frame(ipv4({ src: POD_A, dst: REMOTE, proto: IPPROTO_ICMP }, icmp({ type: 3, code: 3, id: 0, seq: 0 }, quotedAtPod))));
    expect(out.retval).toBe(TC_ACT_OK);
    const asRemoteSees = ipv4({ src: REMOTE, dst: MASQ, proto: IPPROTO_UDP }, udp({ src: REMOTE, dst: MASQ, sport: 53, dport: natPort }, payload));
    expect(out.data).toEqual(frame(ipv4({ src: MASQ, dst: REMOTE, proto: IPPROTO_ICMP }, icmp({ type: 3, code: 3, id: 0, seq: 0 }, asRemoteSees))));
  });
});

describe('gcNat: the agent’s collector on the real maps', () => {
  const maps = () => ({ ct: h.ct, snat: h.snat });

  function openFlows() {
    const udpFlow = { src: POD_A, dst: REMOTE, sport: 7000, dport: 53 };
    const tcpEst = { src: POD_A, dst: REMOTE, sport: 7001, dport: 443 };
    const tcpRst = { src: POD_B, dst: REMOTE, sport: 7002, dport: 443 };
    run(h.egress, udpPkt(udpFlow));
    const est = ports(run(h.egress, tcpPkt(tcpEst)).ip).sport;
    run(h.ingress, tcpPkt({ src: REMOTE, dst: MASQ, sport: 443, dport: est }, TcpFlag.SYN | TcpFlag.ACK));
    run(h.egress, tcpPkt(tcpEst, TcpFlag.ACK));
    run(h.egress, tcpPkt(tcpRst));
    run(h.egress, tcpPkt(tcpRst, TcpFlag.RST));
    return { udpFlow, tcpEst, tcpRst };
  }

  it('keeps live flows, then expires each by its state, always both NAT halves with the flow', () => {
    const { udpFlow, tcpEst, tcpRst } = openFlows();
    const now = monotonicNs();
    expect(h.ct.keys()).toHaveLength(3);
    expect(h.snat.keys()).toHaveLength(6);

    expect(gcNat(maps(), now)).toEqual({ expired: 0, ctDeleted: 0, natDeleted: 0 });

    // 11 s: only the reset TCP flow (closing, 10 s).
    expect(gcNat(maps(), now + 11n * S)).toEqual({ expired: 1, ctDeleted: 1, natDeleted: 2 });
    expect(ctLookup(h, orig(tcpRst, IPPROTO_TCP))).toBeUndefined();
    expect(natLookup(h, orig(tcpRst, IPPROTO_TCP))).toBeUndefined();

    // 61 s: the UDP flow.
    expect(gcNat(maps(), now + 61n * S)).toEqual({ expired: 1, ctDeleted: 1, natDeleted: 2 });
    expect(ctLookup(h, orig(udpFlow, IPPROTO_UDP))).toBeUndefined();

    // An established TCP flow lives 6 h.
    expect(gcNat(maps(), now + 5n * 3600n * S).expired).toBe(0);
    expect(gcNat(maps(), now + 6n * 3600n * S + S)).toEqual({ expired: 1, ctDeleted: 1, natDeleted: 2 });
    expect(ctLookup(h, orig(tcpEst, IPPROTO_TCP))).toBeUndefined();
    expect(h.ct.keys()).toHaveLength(0);
    expect(h.snat.keys()).toHaveLength(0);
  });

  it('a flow whose port was freed maps afresh on its next packet', () => {
    const f = { src: POD_A, dst: REMOTE, sport: 7100, dport: 53 };
    run(h.egress, udpPkt(f));
    gcNat(maps(), monotonicNs() + 120n * S);
    expect(h.snat.keys()).toHaveLength(0);
    const out = run(h.egress, udpPkt(f));
    expect(out.ip.src).toBe(MASQ);
    expect(h.snat.keys()).toHaveLength(2);
    expect(h.ct.keys()).toHaveLength(1);
  });

  it('removes halves left without their flow or their partner, after the grace period', () => {
    const now = monotonicNs();
    const lonelyRev = tuple4.encode({ saddr: REMOTE, daddr: MASQ, sport: 80, dport: 63000, proto: IPPROTO_TCP, dir: NatDir.INGRESS });
    h.snat.update(lonelyRev, nat4Entry.encode({ addr: POD_A, port: 1234, created: now - 60n * S }));
    const youngRev = tuple4.encode({ saddr: REMOTE, daddr: MASQ, sport: 80, dport: 63001, proto: IPPROTO_TCP, dir: NatDir.INGRESS });
    // 5 s old when the collector runs: possibly a mapping being created right now.
    h.snat.update(youngRev, nat4Entry.encode({ addr: POD_A, port: 1235, created: now + 25n * S }));
    // A mapped flow whose conntrack entry was evicted.
    const f = { src: POD_B, dst: REMOTE, sport: 7200, dport: 443 };
    run(h.egress, tcpPkt(f));
    h.ct.delete(tuple4.encode(orig(f, IPPROTO_TCP)));

    expect(gcNat(maps(), now + 30n * S)).toEqual({ expired: 0, ctDeleted: 0, natDeleted: 3 });
    expect(h.snat.lookup(lonelyRev)).toBeUndefined();
    expect(h.snat.lookup(youngRev)).toBeDefined();
    expect(natLookup(h, orig(f, IPPROTO_TCP))).toBeUndefined();
    expect(h.snat.keys()).toHaveLength(1);
  });

  it('dumpNat joins each flow’s mapping and conntrack entry', () => {
    const f = { src: POD_A, dst: REMOTE, sport: 7300, dport: 443 };
    const natPort = ports(run(h.egress, tcpPkt(f)).ip).sport;
    const flows = dumpNat(maps());
    expect(flows).toHaveLength(1);
    expect(flows[0].orig).toEqual(orig(f, IPPROTO_TCP));
    expect(flows[0].nat).toMatchObject({ addr: MASQ, port: natPort });
    expect(flows[0].ct).toMatchObject({ txPackets: 1n, txFlags: TcpFlag.SYN });
  });
});

describe('conntrack TCP re-open', () => {
  it('a new SYN on a closed flow restarts its entry', () => {
    const f = { src: POD_A, dst: REMOTE, sport: 7400, dport: 443 };
    run(h.egress, tcpPkt(f));
    run(h.egress, tcpPkt(f, TcpFlag.RST));
    const closed = ctLookup(h, orig(f, IPPROTO_TCP))!;
    expect(closed.txFlags & TcpFlag.RST).toBe(TcpFlag.RST);
    run(h.egress, tcpPkt(f, TcpFlag.SYN));
    const reopened = ctLookup(h, orig(f, IPPROTO_TCP))!;
    expect(reopened.txFlags).toBe(TcpFlag.SYN);
    expect(reopened.created).toBeGreaterThan(closed.created);
  });
});
