// Masquerade state shared with bpf/host.c: codecs for the structs of bpf/lib/conntrack.h and
// bpf/lib/nat.h, the .rodata settings, the agent's garbage collector for kelp_ct4/kelp_snat4 and
// a dump of the translated flows. test/unit/nat-structs.test.ts checks the layouts against the
// BTF of build/bpf/host.o. Drop reasons of masquerade are in drop.ts with the others.
import { ipToBytes, networkAddress, parseCidr } from '../ipam/ip';
import { StructCodec, checkLength, checkUint, ip4FromBuffer, ip4ToBuffer, layout } from './structs';

export const IpProto = { ICMP: 1, TCP: 6, UDP: 17 } as const;

/** `tuple4.dir` in kelp_ct4 keys: which side opened the flow (enum ct_dir). */
export const CtDir = { EGRESS: 0, INGRESS: 1 } as const;
/** `tuple4.dir` in kelp_snat4 keys: forward (original tuple) or reverse (reply tuple) half (enum nat_dir). */
export const NatDir = { EGRESS: 0, INGRESS: 1 } as const;
/** TCP header flag bits, as OR'd into ct4_entry.tx_flags / rx_flags (enum ct_tcp_flag). */
export const TcpFlag = { FIN: 0x01, SYN: 0x02, RST: 0x04, ACK: 0x10 } as const;

const prefixed = (prefix: string, values: Record<string, number>) =>
  Object.fromEntries(Object.entries(values).map(([name, v]) => [prefix + name, v]));

/** The C enums mirrored above, by BTF enum name: enumerator name -> value. */
export const NAT_ENUMS: Record<string, Record<string, number>> = {
  ct_dir: prefixed('CT_', CtDir),
  nat_dir: prefixed('NAT_DIR_', NatDir),
  ct_tcp_flag: prefixed('CT_TCP_', TcpFlag),
};

const port = (name: string, v: number) => checkUint(name, v, 2);
const u8 = (name: string, v: number) => checkUint(name, v, 1);

// --- struct tuple4: kelp_ct4 and kelp_snat4 keys -------------------------------------------

export interface Tuple4 {
  saddr: string;
  daddr: string;
  /** Host order. ICMP echo: the identifier is sport in a request's tuple, dport in a reply's. */
  sport: number;
  dport: number;
  proto: number;
  /** CtDir in kelp_ct4, NatDir in kelp_snat4. */
  dir: number;
}

const tup = layout('tuple4', 16, [
  ['saddr', 4, 0],
  ['daddr', 4, 4],
  ['sport', 2, 8],
  ['dport', 2, 10],
  ['proto', 1, 12],
  ['dir', 1, 13],
  ['pad', 2, 14],
]);

export const tuple4: StructCodec<Tuple4> = {
  ...tup,
  encode(v) {
    const b = Buffer.alloc(tup.size);
    ip4ToBuffer(v.saddr).copy(b, tup.off.saddr);
    ip4ToBuffer(v.daddr).copy(b, tup.off.daddr);
    b.writeUInt16BE(port('sport', v.sport), tup.off.sport);
    b.writeUInt16BE(port('dport', v.dport), tup.off.dport);
    b.writeUInt8(u8('proto', v.proto), tup.off.proto);
    b.writeUInt8(u8('dir', v.dir), tup.off.dir);
    return b;
  },
  decode(b) {
    checkLength(tup.cName, b, tup.size);
    return {
      saddr: ip4FromBuffer(b, tup.off.saddr),
      daddr: ip4FromBuffer(b, tup.off.daddr),
      sport: b.readUInt16BE(tup.off.sport),
      dport: b.readUInt16BE(tup.off.dport),
      proto: b.readUInt8(tup.off.proto),
      dir: b.readUInt8(tup.off.dir),
    };
  },
};

// --- struct ct4_entry: kelp_ct4 values -----------------------------------------------------

export interface Ct4Entry {
  /** bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the first packet, or of a TCP re-open. */
  created: bigint;
  lastSeen: bigint;
  txPackets: bigint;
  txBytes: bigint;
  rxPackets: bigint;
  rxBytes: bigint;
  /** TcpFlag bits seen in the original / reply direction. */
  txFlags: number;
  rxFlags: number;
}

const ct = layout('ct4_entry', 56, [
  ['created', 8, 0],
  ['last_seen', 8, 8],
  ['tx_packets', 8, 16],
  ['tx_bytes', 8, 24],
  ['rx_packets', 8, 32],
  ['rx_bytes', 8, 40],
  ['tx_flags', 1, 48],
  ['rx_flags', 1, 49],
  ['pad', 6, 50],
]);

export const ct4Entry: StructCodec<Ct4Entry> = {
  ...ct,
  encode(v) {
    const b = Buffer.alloc(ct.size);
    b.writeBigUInt64LE(v.created, ct.off.created);
    b.writeBigUInt64LE(v.lastSeen, ct.off.last_seen);
    b.writeBigUInt64LE(v.txPackets, ct.off.tx_packets);
    b.writeBigUInt64LE(v.txBytes, ct.off.tx_bytes);
    b.writeBigUInt64LE(v.rxPackets, ct.off.rx_packets);
    b.writeBigUInt64LE(v.rxBytes, ct.off.rx_bytes);
    b.writeUInt8(u8('txFlags', v.txFlags), ct.off.tx_flags);
    b.writeUInt8(u8('rxFlags', v.rxFlags), ct.off.rx_flags);
    return b;
  },
  decode(b) {
    checkLength(ct.cName, b, ct.size);
    return {
      created: b.readBigUInt64LE(ct.off.created),
      lastSeen: b.readBigUInt64LE(ct.off.last_seen),
      txPackets: b.readBigUInt64LE(ct.off.tx_packets),
      txBytes: b.readBigUInt64LE(ct.off.tx_bytes),
      rxPackets: b.readBigUInt64LE(ct.off.rx_packets),
      rxBytes: b.readBigUInt64LE(ct.off.rx_bytes),
      txFlags: b.readUInt8(ct.off.tx_flags),
      rxFlags: b.readUInt8(ct.off.rx_flags),
    };
  },
};

// --- struct nat4_entry: kelp_snat4 values --------------------------------------------------

export interface Nat4Entry {
  /** Forward half: the masquerade address; reverse half: the pod's address. */
  addr: string;
  /** Host order; the ICMP echo identifier for ICMP. */
  port: number;
  created: bigint;
}

const nat = layout('nat4_entry', 16, [
  ['addr', 4, 0],
  ['port', 2, 4],
  ['pad', 2, 6],
  ['created', 8, 8],
]);

export const nat4Entry: StructCodec<Nat4Entry> = {
  ...nat,
  encode(v) {
    const b = Buffer.alloc(nat.size);
    ip4ToBuffer(v.addr).copy(b, nat.off.addr);
    b.writeUInt16BE(port('port', v.port), nat.off.port);
    b.writeBigUInt64LE(v.created, nat.off.created);
    return b;
  },
  decode(b) {
    checkLength(nat.cName, b, nat.size);
    return { addr: ip4FromBuffer(b, nat.off.addr), port: b.readUInt16BE(nat.off.port), created: b.readBigUInt64LE(nat.off.created) };
  },
};

// --- struct nomasq4_key: kelp_nomasq4 (LPM trie) keys ---------------------------------------

export interface Nomasq4Key {
  /** `10.0.0.0/8`; host bits must be zero. */
  cidr: string;
}

const nm = layout('nomasq4_key', 8, [
  ['prefixlen', 4, 0],
  ['addr', 4, 4],
]);

export const nomasq4Key: StructCodec<Nomasq4Key> = {
  ...nm,
  encode(v) {
    const c = parseCidr(v.cidr);
    if (c.family !== 4) throw new TypeError(`invalid IPv4 CIDR ${JSON.stringify(v.cidr)}`);
    if (networkAddress(c).value !== c.address) throw new TypeError(`CIDR ${v.cidr} has host bits set`);
    const b = Buffer.alloc(nm.size);
    // The LPM trie's prefix length is a host-order u32; the data after it is matched as bytes.
    b.writeUInt32LE(c.prefix, nm.off.prefixlen);
    ipToBytes({ family: 4, value: c.address }).copy(b, nm.off.addr);
    return b;
  },
  decode(b) {
    checkLength(nm.cName, b, nm.size);
    return { cidr: `${ip4FromBuffer(b, nm.off.addr)}/${b.readUInt32LE(nm.off.prefixlen)}` };
  },
};

export const NAT_STRUCTS: ReadonlyArray<StructCodec<unknown>> = [tuple4, ct4Entry, nat4Entry, nomasq4Key] as ReadonlyArray<
  StructCodec<unknown>
>;

// --- load-time settings ----------------------------------------------------------------------

/**
 * Default NAT port range: above the kernel's default ephemeral range (32768-60999), so a reply to
 * one of the node's own connections can never match a pod's mapping. A node whose
 * ip_local_port_range reaches into it must be given another range.
 */
export const DEFAULT_NAT_PORTS = { min: 61000, max: 65535 } as const;

export interface MasqConfig {
  /** Pod sources that get masqueraded, e.g. `10.244.1.0/24`. */
  podCidr: string;
  /** The uplink's IPv4 address. */
  masqIp: string;
  portMin?: number;
  portMax?: number;
  /** VXLAN mode: the kelp VXLAN device's UDP port, whose node-to-node packets the uplink's
   * programs pass before any other work (bpf/host.c, host4_is_vxlan). Absent: none. */
  vxlanPort?: number;
}

/** The `.rodata` constants of build/bpf/host.o for `loadObject(..., { constants })`. */
export function masqConstants(cfg: MasqConfig): Record<string, number | Buffer> {
  const key = nomasq4Key.encode({ cidr: cfg.podCidr });
  const portMin = port('portMin', cfg.portMin ?? DEFAULT_NAT_PORTS.min);
  const portMax = port('portMax', cfg.portMax ?? DEFAULT_NAT_PORTS.max);
  const vxlanPort = cfg.vxlanPort === undefined ? 0 : port('vxlanPort', cfg.vxlanPort);
  const prefix = key.readUInt32LE(nm.off.prefixlen);
  if (prefix === 0) throw new RangeError('podCidr: a /0 pod range would masquerade every source');
  if (portMin === 0 || portMin > portMax) throw new RangeError(`NAT port range ${portMin}-${portMax} is empty or starts at 0`);
  return {
    KELP_POD_CIDR: key.subarray(nm.off.addr, nm.off.addr + 4),
    KELP_POD_PREFIX: prefix,
    KELP_MASQ_IP: ip4ToBuffer(cfg.masqIp),
    KELP_NAT_PORT_MIN: portMin,
    KELP_NAT_PORT_MAX: portMax,
    KELP_VXLAN_PORT: vxlanPort,
  };
}

// --- garbage collection ----------------------------------------------------------------------

const S = 1_000_000_000n;

/** How long a flow may stay idle, by state, in ns (bpf_ktime_get_ns units). */
export interface CtTimeouts {
  /** SYN sent, no reply yet. */
  tcpSyn: bigint;
  /** Replies seen, no FIN or RST. */
  tcpEstablished: bigint;
  /** FIN seen in one direction only. */
  tcpHalfClosed: bigint;
  /** RST seen, or FIN in both directions. */
  tcpClosing: bigint;
  udp: bigint;
  icmp: bigint;
  other: bigint;
}

/**
 * Cilium's established/closing/SYN values (6 h, 10 s, 60 s). Linux keeps established TCP for
 * 5 days; 6 h still outlasts any keepalive default while bounding what a silently vanished
 * peer costs. A half-closed flow gets the order of Linux's FIN_WAIT/CLOSE_WAIT minutes.
 */
export const DEFAULT_CT_TIMEOUTS: CtTimeouts = {
  tcpSyn: 60n * S,
  tcpEstablished: 6n * 3600n * S,
  tcpHalfClosed: 10n * 60n * S,
  tcpClosing: 10n * S,
  udp: 60n * S,
  icmp: 30n * S,
  other: 60n * S,
};

/** The CLOCK_MONOTONIC nanoseconds bpf_ktime_get_ns() reads (libuv's hrtime is that clock). */
export function monotonicNs(): bigint {
  return process.hrtime.bigint();
}

/** When an entry expires if no further packet comes. */
export function ct4Deadline(proto: number, e: Ct4Entry, t: CtTimeouts = DEFAULT_CT_TIMEOUTS): bigint {
  let idle: bigint;
  if (proto === IpProto.TCP) {
    const all = e.txFlags | e.rxFlags;
    const finTx = (e.txFlags & TcpFlag.FIN) !== 0;
    const finRx = (e.rxFlags & TcpFlag.FIN) !== 0;
    if (all & TcpFlag.RST || (finTx && finRx)) idle = t.tcpClosing;
    else if (finTx || finRx) idle = t.tcpHalfClosed;
    else if (e.rxPackets > 0n) idle = t.tcpEstablished;
    else idle = t.tcpSyn;
  } else if (proto === IpProto.UDP) idle = t.udp;
  else if (proto === IpProto.ICMP) idle = t.icmp;
  else idle = t.other;
  return e.lastSeen + idle;
}

/** The part of a BpfMap the collector uses (src/bpf's BpfMap has it). */
export interface NatMap {
  lookup(key: Buffer): Buffer | undefined;
  delete(key: Buffer): boolean;
  keys(): Buffer[];
}

export interface NatMaps {
  ct: NatMap;
  snat: NatMap;
}

/** The value codecs of kelp_ct4 and kelp_snat4 in the layout loaded (maps/registry.ts). */
export interface NatCodecs {
  ct: StructCodec<Ct4Entry>;
  nat: StructCodec<Nat4Entry>;
}

const NAT_CODECS: NatCodecs = { ct: ct4Entry, nat: nat4Entry };

export interface GcOptions {
  timeouts?: Partial<CtTimeouts>;
  /** Default: the layout bpf/ builds. */
  codecs?: NatCodecs;
  /**
   * A NAT half with no flow, or a reverse half without its forward half, is removed only once
   * this old: the datapath writes reverse, forward, then conntrack, and the collector must not
   * take a mapping that is being created. Default 10 s.
   */
  orphanGraceNs?: bigint;
}

export interface GcResult {
  /** Flows whose idle time ran out. */
  expired: number;
  ctDeleted: number;
  natDeleted: number;
}

function reverseKeyOf(orig: Tuple4, fwd: Nat4Entry): Tuple4 {
  return { saddr: orig.daddr, daddr: fwd.addr, sport: orig.dport, dport: fwd.port, proto: orig.proto, dir: NatDir.INGRESS };
}

function origKeyOf(rev: Tuple4, v: Nat4Entry): Tuple4 {
  return { saddr: v.addr, daddr: rev.saddr, sport: v.port, dport: rev.sport, proto: rev.proto, dir: NatDir.EGRESS };
}

/** Deletes a flow's forward half and the reverse half that belongs to it. Returns how many went. */
function deleteNatPair(snat: NatMap, orig: Tuple4, fwdKey: Buffer, nat: StructCodec<Nat4Entry>): number {
  const fwdBuf = snat.lookup(fwdKey);
  if (!fwdBuf) return 0;
  const fwd = nat.decode(fwdBuf);
  let n = snat.delete(fwdKey) ? 1 : 0;
  const revKey = tuple4.encode(reverseKeyOf(orig, fwd));
  const revBuf = snat.lookup(revKey);
  if (revBuf) {
    const rev = nat.decode(revBuf);
    // Only our own reverse half: once the forward half is gone the port may be re-taken.
    if (rev.addr === orig.saddr && rev.port === orig.sport && snat.delete(revKey)) n += 1;
  }
  return n;
}

/**
 * One collection pass over kelp_ct4 and kelp_snat4 at monotonic time `nowNs`:
 *  1. a flow idle past its timeout loses its conntrack entry and both NAT halves;
 *  2. NAT halves left without their flow or their other half (LRU eviction, a crash mid-pass)
 *     are removed after the grace period, so a port is never held by half a mapping.
 * Flows the datapath touches during the pass are re-read before deletion and kept.
 */
export function gcNat(maps: NatMaps, nowNs: bigint, opts: GcOptions = {}): GcResult {
  const t: CtTimeouts = { ...DEFAULT_CT_TIMEOUTS, ...opts.timeouts };
  const grace = opts.orphanGraceNs ?? 10n * S;
  const { ct, nat } = opts.codecs ?? NAT_CODECS;
  const res: GcResult = { expired: 0, ctDeleted: 0, natDeleted: 0 };
  const old = (created: bigint) => nowNs - created >= grace;

  for (const key of maps.ct.keys()) {
    const orig = tuple4.decode(key);
    if (orig.dir !== CtDir.EGRESS) continue;
    const buf = maps.ct.lookup(key);
    if (!buf || nowNs < ct4Deadline(orig.proto, ct.decode(buf), t)) continue;
    res.expired += 1;
    // The CT key is the forward NAT key (CtDir.EGRESS === NatDir.EGRESS).
    res.natDeleted += deleteNatPair(maps.snat, orig, key, nat);
    // A packet between our read and the NAT delete would have refreshed last_seen: keep the
    // entry then; the next packet maps the flow afresh.
    const again = maps.ct.lookup(key);
    if (again && nowNs >= ct4Deadline(orig.proto, ct.decode(again), t) && maps.ct.delete(key)) res.ctDeleted += 1;
  }

  for (const key of maps.snat.keys()) {
    const k = tuple4.decode(key);
    const buf = maps.snat.lookup(key);
    if (!buf) continue;
    const v = nat.decode(buf);
    if (!old(v.created)) continue;
    if (k.dir === NatDir.EGRESS) {
      if (!maps.ct.lookup(key)) {
        res.natDeleted += deleteNatPair(maps.snat, k, key, nat);
        continue;
      }
      const rev = maps.snat.lookup(tuple4.encode(reverseKeyOf(k, v)));
      const back = rev && nat.decode(rev);
      if (!back || back.addr !== k.saddr || back.port !== k.sport) {
        if (maps.snat.delete(key)) res.natDeleted += 1;
      }
    } else if (k.dir === NatDir.INGRESS) {
      const fwdBuf = maps.snat.lookup(tuple4.encode(origKeyOf(k, v)));
      const fwd = fwdBuf && nat.decode(fwdBuf);
      if (!fwd || fwd.addr !== k.daddr || fwd.port !== k.dport) {
        if (maps.snat.delete(key)) res.natDeleted += 1;
      }
    }
  }
  return res;
}

// --- inspection ------------------------------------------------------------------------------

export interface NatFlow {
  /** The flow as the pod sent it. */
  orig: Tuple4;
  /** What it leaves the node as, when mapped. */
  nat?: { addr: string; port: number; created: bigint };
  ct?: Ct4Entry;
}

/** Every translated or tracked flow, forward NAT half joined with its conntrack entry. */
export function dumpNat(maps: NatMaps, codecs: NatCodecs = NAT_CODECS): NatFlow[] {
  const flows = new Map<string, NatFlow>();
  const at = (key: Buffer): NatFlow => {
    const id = key.toString('hex');
    let f = flows.get(id);
    if (!f) {
      f = { orig: tuple4.decode(key) };
      flows.set(id, f);
    }
    return f;
  };
  for (const key of maps.snat.keys()) {
    if (key.readUInt8(tup.off.dir) !== NatDir.EGRESS) continue;
    const buf = maps.snat.lookup(key);
    if (buf) at(key).nat = codecs.nat.decode(buf);
  }
  for (const key of maps.ct.keys()) {
    const buf = maps.ct.lookup(key);
    if (buf) at(key).ct = codecs.ct.decode(buf);
  }
  return [...flows.values()];
}
