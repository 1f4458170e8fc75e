// Packet builder and parser for datapath tests: Ethernet (VLAN tags too), ARP, IPv4 (options,
// fragments), a plain IPv6 header, TCP, UDP, ICMP, Internet checksums, and the `struct __sk_buff`
// context for BPF_PROG_TEST_RUN.
// Builders compute lengths and checksums unless a field is overridden, so tests can make broken
// packets on purpose.

import { parseIp } from '../../src/ipam/ip';

export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const ETH_P_IPV6 = 0x86dd;
export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const ARPOP_REQUEST = 1;
export const ARPOP_REPLY = 2;

export const TC_ACT_OK = 0;
export const TC_ACT_SHOT = 2;
export const TC_ACT_REDIRECT = 7;

export const ETH_HLEN = 14;

export function macBytes(mac: string): Buffer {
  const parts = mac.split(':');
  if (parts.length !== 6) throw new TypeError(`bad MAC ${mac}`);
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

export function macString(b: Buffer): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}

export function ipBytes(ip: string): Buffer {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !(p >= 0 && p <= 255))) throw new TypeError(`bad IPv4 ${ip}`);
  return Buffer.from(parts);
}

export function ipString(b: Buffer): string {
  return Array.from(b.subarray(0, 4)).join('.');
}

/** RFC 1071 sum, folded and complemented. `initial` carries a pseudo-header sum. */
export function inetChecksum(buf: Buffer, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2) sum += buf[buf.length - 1] << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

function pseudoHeaderSum(src: string, dst: string, proto: number, len: number): number {
  const s = ipBytes(src);
  const d = ipBytes(dst);
  return s.readUInt16BE(0) + s.readUInt16BE(2) + d.readUInt16BE(0) + d.readUInt16BE(2) + proto + len;
}

// --- builders --------------------------------------------------------------------------------

export interface EthOpts {
  dst: string;
  src: string;
  type: number;
}

export function ethernet(o: EthOpts, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(ETH_HLEN);
  macBytes(o.dst).copy(h, 0);
  macBytes(o.src).copy(h, 6);
  h.writeUInt16BE(o.type, 12);
  return Buffer.concat([h, payload]);
}

export interface VlanTag {
  /** ETH_P_8021Q, ETH_P_8021AD, or anything a test wants in the TPID field. */
  tpid: number;
  vid?: number;
  pcp?: number;
}

/** An Ethernet frame with VLAN tags, outermost first, between the source MAC and `type`. */
export function ethernetTagged(o: EthOpts & { tags: VlanTag[] }, payload: Buffer = Buffer.alloc(0)): Buffer {
  const tags = Buffer.alloc(4 * o.tags.length);
  o.tags.forEach((t, i) => {
    tags.writeUInt16BE(t.tpid, 4 * i);
    tags.writeUInt16BE(((t.pcp ?? 0) << 13) | ((t.vid ?? 0) & 0xfff), 4 * i + 2);
  });
  const plain = ethernet(o, payload);
  return Buffer.concat([plain.subarray(0, 12), tags, plain.subarray(12)]);
}

export interface ArpOpts {
  op?: number;
  sha: string;
  spa: string;
  tha?: string;
  tpa: string;
  hrd?: number;
  pro?: number;
  hln?: number;
  pln?: number;
}

export function arp(o: ArpOpts): Buffer {
  const b = Buffer.alloc(28);
  b.writeUInt16BE(o.hrd ?? 1, 0);
  b.writeUInt16BE(o.pro ?? ETH_P_IP, 2);
  b.writeUInt8(o.hln ?? 6, 4);
  b.writeUInt8(o.pln ?? 4, 5);
  b.writeUInt16BE(o.op ?? ARPOP_REQUEST, 6);
  macBytes(o.sha).copy(b, 8);
  ipBytes(o.spa).copy(b, 14);
  macBytes(o.tha ?? '00:00:00:00:00:00').copy(b, 18);
  ipBytes(o.tpa).copy(b, 24);
  return b;
}

export interface Ipv4Opts {
  src: string;
  dst: string;
  proto: number;
  ttl?: number;
  tos?: number;
  id?: number;
  dontFragment?: boolean;
  moreFragments?: boolean;
  /** In 8-byte units. */
  fragOffset?: number;
  /** Raw option bytes; padded to a multiple of 4. */
  options?: Buffer;
  // Overrides for malformed packets:
  version?: number;
  ihl?: number;
  totalLength?: number;
  checksum?: number;
}

export function ipv4(o: Ipv4Opts, payload: Buffer = Buffer.alloc(0)): Buffer {
  const opts = o.options ?? Buffer.alloc(0);
  const padded = Buffer.concat([opts, Buffer.alloc((4 - (opts.length % 4)) % 4)]);
  const hlen = 20 + padded.length;
  const h = Buffer.alloc(hlen);
  h.writeUInt8(((o.version ?? 4) << 4) | ((o.ihl ?? hlen / 4) & 0xf), 0);
  h.writeUInt8(o.tos ?? 0, 1);
  h.writeUInt16BE(o.totalLength ?? hlen + payload.length, 2);
  h.writeUInt16BE(o.id ?? 0x1234, 4);
  const flags = (o.dontFragment ? 0x4000 : 0) | (o.moreFragments ? 0x2000 : 0);
  h.writeUInt16BE(flags | ((o.fragOffset ?? 0) & 0x1fff), 6);
  h.writeUInt8(o.ttl ?? 64, 8);
  h.writeUInt8(o.proto, 9);
  ipBytes(o.src).copy(h, 12);
  ipBytes(o.dst).copy(h, 16);
  padded.copy(h, 20);
  h.writeUInt16BE(o.checksum ?? inetChecksum(h), 10);
  return Buffer.concat([h, payload]);
}

export interface Ipv6Opts {
  src: string;
  dst: string;
  /** Next header. */
  proto: number;
  hopLimit?: number;
}

export function ip6Bytes(ip: string): Buffer {
  const a = parseIp(ip);
  if (a.family !== 6) throw new TypeError(`bad IPv6 ${ip}`);
  return Buffer.from(a.value.toString(16).padStart(32, '0'), 'hex');
}

/** A fixed IPv6 header, no extension headers. */
export function ipv6(o: Ipv6Opts, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(40);
  h.writeUInt32BE(0x60000000, 0);
  h.writeUInt16BE(payload.length, 4);
  h.writeUInt8(o.proto, 6);
  h.writeUInt8(o.hopLimit ?? 64, 7);
  ip6Bytes(o.src).copy(h, 8);
  ip6Bytes(o.dst).copy(h, 24);
  return Buffer.concat([h, payload]);
}

/** UDP over IPv6; the checksum is mandatory there (RFC 8200 8.1). */
export function udp6(o: UdpOpts, payload: Buffer = Buffer.alloc(0)): Buffer {
  const seg = Buffer.alloc(8 + payload.length);
  seg.writeUInt16BE(o.sport, 0);
  seg.writeUInt16BE(o.dport, 2);
  seg.writeUInt16BE(seg.length, 4);
  payload.copy(seg, 8);
  const pseudo = Buffer.concat([ip6Bytes(o.src), ip6Bytes(o.dst), Buffer.from([0, 0, seg.length >> 8, seg.length & 0xff, 0, 0, 0, IPPROTO_UDP])]);
  const sum = inetChecksum(Buffer.concat([pseudo, seg]));
  seg.writeUInt16BE(sum === 0 ? 0xffff : sum, 6);
  return seg;
}

export interface TcpOpts {
  sport: number;
  dport: number;
  seq?: number;
  ack?: number;
  /** FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10. */
  flags?: number;
  window?: number;
  /** For the pseudo-header checksum. */
  src: string;
  dst: string;
}

export function tcp(o: TcpOpts, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(20);
  h.writeUInt16BE(o.sport, 0);
  h.writeUInt16BE(o.dport, 2);
  h.writeUInt32BE(o.seq ?? 1, 4);
  h.writeUInt32BE(o.ack ?? 0, 8);
  h.writeUInt8(5 << 4, 12);
  h.writeUInt8(o.flags ?? 0x02, 13);
  h.writeUInt16BE(o.window ?? 65535, 14);
  const seg = Buffer.concat([h, payload]);
  seg.writeUInt16BE(inetChecksum(seg, pseudoHeaderSum(o.src, o.dst, IPPROTO_TCP, seg.length)), 16);
  return seg;
}

export interface UdpOpts {
  sport: number;
  dport: number;
  src: string;
  dst: string;
}

export function udp(o: UdpOpts, payload: Buffer = Buffer.alloc(0)): Buffer {
  const seg = Buffer.alloc(8 + payload.length);
  seg.writeUInt16BE(o.sport, 0);
  seg.writeUInt16BE(o.dport, 2);
  seg.writeUInt16BE(seg.length, 4);
  payload.copy(seg, 8);
  const sum = inetChecksum(seg, pseudoHeaderSum(o.src, o.dst, IPPROTO_UDP, seg.length));
  seg.writeUInt16BE(sum === 0 ? 0xffff : sum, 6);
  return seg;
}

export interface IcmpOpts {
  type?: number;
  code?: number;
  id?: number;
  seq?: number;
}

/** ICMP echo request by default. */
export function icmp(o: IcmpOpts = {}, payload: Buffer = Buffer.alloc(0)): Buffer {
  const m = Buffer.alloc(8 + payload.length);
  m.writeUInt8(o.type ?? 8, 0);
  m.writeUInt8(o.code ?? 0, 1);
  m.writeUInt16BE(o.id ?? 1, 4);
  m.writeUInt16BE(o.seq ?? 1, 6);
  payload.copy(m, 8);
  m.writeUInt16BE(inetChecksum(m), 2);
  return m;
}

// --- parsers ---------------------------------------------------------------------------------

export interface ParsedEth {
  dst: string;
  src: string;
  type: number;
  payload: Buffer;
}

export function parseEthernet(b: Buffer): ParsedEth {
  if (b.length < ETH_HLEN) throw new RangeError(`frame of ${b.length} bytes`);
  return { dst: macString(b.subarray(0, 6)), src: macString(b.subarray(6, 12)), type: b.readUInt16BE(12), payload: b.subarray(ETH_HLEN) };
}

export interface ParsedArp {
  hrd: number;
  pro: number;
  hln: number;
  pln: number;
  op: number;
  sha: string;
  spa: string;
  tha: string;
  tpa: string;
}

export function parseArp(b: Buffer): ParsedArp {
  if (b.length < 28) throw new RangeError(`ARP of ${b.length} bytes`);
  return {
    hrd: b.readUInt16BE(0),
    pro: b.readUInt16BE(2),
    hln: b[4],
    pln: b[5],
    op: b.readUInt16BE(6),
    sha: macString(b.subarray(8, 14)),
    spa: ipString(b.subarray(14, 18)),
    tha: macString(b.subarray(18, 24)),
    tpa: ipString(b.subarray(24, 28)),
  };
}

export interface ParsedIpv4 {
  version: number;
  ihl: number;
  tos: number;
  totalLength: number;
  id: number;
  flags: number;
  fragOffset: number;
  ttl: number;
  proto: number;
  checksum: number;
  src: string;
  dst: string;
  options: Buffer;
  /** True when the header checksum verifies. */
  checksumOk: boolean;
  payload: Buffer;
}

export function parseIpv4(b: Buffer): ParsedIpv4 {
  if (b.length < 20) throw new RangeError(`IPv4 of ${b.length} bytes`);
  const ihl = b[0] & 0xf;
  const hlen = ihl * 4;
  const totalLength = b.readUInt16BE(2);
  const fo = b.readUInt16BE(6);
  return {
    version: b[0] >> 4,
    ihl,
    tos: b[1],
    totalLength,
    id: b.readUInt16BE(4),
    flags: fo >> 13,
    fragOffset: fo & 0x1fff,
    ttl: b[8],
    proto: b[9],
    checksum: b.readUInt16BE(10),
    src: ipString(b.subarray(12, 16)),
    dst: ipString(b.subarray(16, 20)),
    options: b.subarray(20, hlen),
    checksumOk: hlen >= 20 && b.length >= hlen && inetChecksum(b.subarray(0, hlen)) === 0,
    payload: b.subarray(hlen, Math.min(b.length, totalLength)),
  };
}

export interface ParsedPorts {
  sport: number;
  dport: number;
}

export function parsePorts(b: Buffer): ParsedPorts {
  return { sport: b.readUInt16BE(0), dport: b.readUInt16BE(2) };
}

// --- BPF_PROG_TEST_RUN context -----------------------------------------------------------------

/** sizeof(struct __sk_buff) in the UAPI of the kernels kelp supports. */
export const SKB_CTX_SIZE = 192;

export interface SkbCtxOpts {
  /** skb->dev: must name a device in the netns that runs the test. */
  ifindex?: number;
  ingressIfindex?: number;
  mark?: number;
  priority?: number;
  /** A GSO packet (GRO'd or from a TSO socket): its segment size and count. */
  gsoSize?: number;
  gsoSegs?: number;
}

/**
 * A `struct __sk_buff` for ctx_in. bpf_prog_test_run_skb only accepts a few fields (mark, priority,
 * ingress_ifindex, ifindex, cb, tstamp, wire_len, gso_*, hwtstamp) and rejects non-zero bytes
 * elsewhere; ifindex > 1 makes it look the device up in the caller's netns (ENODEV if absent).
 */
export function skbCtx(o: SkbCtxOpts): Buffer {
  const b = Buffer.alloc(SKB_CTX_SIZE);
  b.writeUInt32LE(o.mark ?? 0, 8);
  b.writeUInt32LE(o.priority ?? 0, 32);
  b.writeUInt32LE(o.ingressIfindex ?? 0, 36);
  b.writeUInt32LE(o.ifindex ?? 0, 40);
  b.writeUInt32LE(o.gsoSegs ?? 0, 164);
  b.writeUInt32LE(o.gsoSize ?? 0, 176);
  return b;
}
