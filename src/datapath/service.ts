// The service datapath's maps, from the agent's side: codecs for the structs of bpf/lib/lb.h
// (checked against the objects' BTF by test/unit/btf-layout.test.ts), the flow hash Maglev
// indexes with, and the one writer of the load-balancing maps (ServiceWriter).
//
// Invariants, stated on both sides (bpf/lib/lb.h has the datapath's):
//  - once apply() returns, kelp_lb4_frontends, kelp_lb4_backends, kelp_lb4_members,
//    kelp_lb4_maglev and kelp_lb4_source_ranges hold exactly the last ServiceMapsDesired applied;
//  - while it runs, a frontend never names a set whose slots or table are not written (make before
//    break: backends, members, tables and source ranges first, then frontends, then the stale
//    entries of every map);
//  - a backend leaves kelp_lb4_members when it leaves its set: the datapath moves its flows (and
//    affinities) at their next packet.
// How the agent drives it (Datapath.serviceMaps()):
//  1. after its sources synced: new ServiceWriter(maps, { maglevTableSize }).apply(desired);
//  2. on every change: apply(desired) again with the whole desired content (it writes the
//     difference from what it wrote last; `resync: true` at the periodic resync re-reads the maps);
//  3. periodically (every ~10 s): gcServiceCt (kelp_lb4_ct and kelp_lb4_affinity are LRU: the
//     collector only keeps them small).
// A MapFullError leaves the maps a superset of the old and new content: log, count, retry.
import { BpfMap } from '../bpf';
import { maglevFirstBadTable } from '../bpf/maglev';
import { networkAddress, parseCidr, ipToBytes } from '../ipam/ip';
import { isMapFull, MapFullError, readEntries, SyncStats } from './maps/sync';
import { ct4Deadline, Ct4Entry, CtTimeouts, DEFAULT_CT_TIMEOUTS, tuple4 } from './nat';
import { FRONTEND_DROP_NO_LOCAL, FRONTEND_IN_DROP_NO_LOCAL, type BackendSet, type FrontendEntry, type L4Protocol, type ServiceMapsDesired } from './service-types';
import { StructCodec, checkLength, checkUint, ip4FromBuffer, ip4ToBuffer, layout } from './structs';

// --- enums (bpf/lib/lb.h) ---------------------------------------------------------------------

export const LbLimits = {
  LB_FRONTENDS_MAX: 65536,
  LB_BACKENDS_MAX: 131072,
  LB_MAGLEV_MAX: 262144,
  LB_MAGLEV_CHUNK: 256,
  LB_AFFINITY_MAX: 65536,
  LB_SOURCE_RANGES_MAX: 16384,
  LB_CT_MAX: 262144,
  LB_MAGLEV_M_DEFAULT: 16381,
} as const;

/** --maglev-table-size's default: the largest table a set gets (Cilium's default size). */
export const DEFAULT_LB_MAGLEV_TABLE_SIZE = LbLimits.LB_MAGLEV_M_DEFAULT;

export const LbCtDir = { FORWARD: 0, REVERSE: 1 } as const;
export const LbCtFlag = { HAIRPIN: 1, EXTERNAL: 2, HOST: 4 } as const;

export const PROTOCOL_NUMBERS: Record<L4Protocol, number> = { TCP: 6, UDP: 17, SCTP: 132 };
const PROTOCOL_NAMES: Record<number, L4Protocol> = { 6: 'TCP', 17: 'UDP', 132: 'SCTP' };

/** The C enums mirrored here and in service-types.ts, by BTF enum name. */
export const LB_ENUMS: Record<string, Record<string, number>> = {
  lb_frontend_flag: { LB_FE_AFFINITY: 1, LB_FE_SOURCE_RANGES: 2, LB_FE_DROP_NO_LOCAL: 4, LB_FE_EXTERNAL: 8, LB_FE_NODEPORT: 16, LB_FE_IN_DROP_NO_LOCAL: 32 },
  lb_backend_flag: { LB_BE_LOCAL: 1, LB_BE_TERMINATING: 2 },
  lb_limits: { ...LbLimits },
  lb_select_result: { LB_SELECTED: 0, LB_NO_BACKEND: 1, LB_NO_LOCAL: 2, LB_SOURCE_DENIED: 3 },
  lb_ct_dir: { LB_CT_FORWARD: LbCtDir.FORWARD, LB_CT_REVERSE: LbCtDir.REVERSE },
  lb_ct_flag: { LB_CT_F_HAIRPIN: LbCtFlag.HAIRPIN, LB_CT_F_EXTERNAL: LbCtFlag.EXTERNAL, LB_CT_F_HOST: LbCtFlag.HOST },
};

const u8 = (name: string, v: number) => checkUint(name, v, 1);
const u16 = (name: string, v: number) => checkUint(name, v, 2);
const u32 = (name: string, v: number) => checkUint(name, v, 4);

/**
 * A dotted quad as the u32 whose little-endian bytes are the address in network order, as
 * ip4ToBuffer would read it: the writer encodes tens of thousands of addresses per apply, and the
 * general parser costs several µs each.
 */
function ip4Word(ip: string): number {
  let word = 0;
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= ip.length; i++) {
    const c = i < ip.length ? ip.charCodeAt(i) : 46;
    if (c === 46) {
      if (digits === 0 || value > 255 || part > 3 || (digits > 1 && ip.charCodeAt(i - digits) === 48)) return ip4ToBuffer(ip).readUInt32LE(0);
      word |= value << (8 * part++);
      value = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57 && digits < 3) {
      value = value * 10 + (c - 48);
      digits++;
    } else {
      return ip4ToBuffer(ip).readUInt32LE(0);
    }
  }
  return part === 4 ? word >>> 0 : ip4ToBuffer(ip).readUInt32LE(0);
}

/** Writes a dotted-quad IPv4 address at `off`. */
function writeIp4(b: Buffer, off: number, ip: string): void {
  b.writeUInt32LE(ip4Word(ip), off);
}

function protoNumber(p: L4Protocol): number {
  const n = PROTOCOL_NUMBERS[p];
  if (n === undefined) throw new RangeError(`protocol must be TCP, UDP or SCTP, got ${JSON.stringify(p)}`);
  return n;
}

// --- kelp_lb4_frontends -------------------------------------------------------------------------

export interface Lb4FrontendKey {
  address: string;
  port: number;
  protocol: L4Protocol;
}

const feKey = layout('lb4_frontend_key', 8, [
  ['addr', 4, 0],
  ['port', 2, 4],
  ['proto', 1, 6],
  ['pad', 1, 7],
]);

export const lb4FrontendKey: StructCodec<Lb4FrontendKey> = {
  ...feKey,
  encode(v) {
    const b = Buffer.alloc(feKey.size);
    writeIp4(b, feKey.off.addr, v.address);
    b.writeUInt16BE(u16('port', v.port), feKey.off.port);
    b.writeUInt8(protoNumber(v.protocol), feKey.off.proto);
    return b;
  },
  decode(b) {
    checkLength(feKey.cName, b, feKey.size);
    const proto = b.readUInt8(feKey.off.proto);
    return { address: ip4FromBuffer(b, feKey.off.addr), port: b.readUInt16BE(feKey.off.port), protocol: PROTOCOL_NAMES[proto] ?? (String(proto) as L4Protocol) };
  },
};

export interface Lb4Frontend {
  svcId: number;
  /** The outside view: clients arriving on the uplink. */
  setId: number;
  count: number;
  flags: number;
  affinityTimeout: number;
  /** kelp_lb4_maglev key of the set's table (the writer's choice: sets sharing a table share it); 0: none. */
  tableId?: number;
  /** Slots of the outside view's table (0: none). */
  m?: number;
  /** The in-cluster view (pods, the node); absent when encoding: the outside view's. */
  inSetId?: number;
  inCount?: number;
  inTableId?: number;
  inM?: number;
}

const feVal = layout('lb4_frontend', 40, [
  ['svc_id', 4, 0],
  ['set_id', 4, 4],
  ['count', 2, 8],
  ['flags', 2, 10],
  ['affinity_timeout', 4, 12],
  ['table_id', 4, 16],
  ['in_set_id', 4, 20],
  ['in_count', 2, 24],
  ['pad', 2, 26],
  ['in_table_id', 4, 28],
  ['m', 4, 32],
  ['in_m', 4, 36],
]);

export const lb4Frontend: StructCodec<Lb4Frontend> = {
  ...feVal,
  encode(v) {
    const b = Buffer.alloc(feVal.size);
    const o = feVal.off;
    const same = v.inSetId === undefined;
    let flags = u16('flags', v.flags);
    // One view for every client: the in-cluster one drops where the outside one does.
    if (same && flags & FRONTEND_DROP_NO_LOCAL) flags |= FRONTEND_IN_DROP_NO_LOCAL;
    b.writeUInt32LE(u32('svcId', v.svcId), o.svc_id);
    b.writeUInt32LE(u32('setId', v.setId), o.set_id);
    b.writeUInt16LE(u16('count', v.count), o.count);
    b.writeUInt16LE(flags, o.flags);
    b.writeUInt32LE(u32('affinityTimeout', v.affinityTimeout), o.affinity_timeout);
    b.writeUInt32LE(u32('tableId', v.tableId ?? 0), o.table_id);
    b.writeUInt32LE(u32('inSetId', same ? v.setId : v.inSetId!), o.in_set_id);
    b.writeUInt16LE(u16('inCount', same ? v.count : (v.inCount ?? 0)), o.in_count);
    b.writeUInt32LE(u32('inTableId', same ? (v.tableId ?? 0) : (v.inTableId ?? 0)), o.in_table_id);
    b.writeUInt32LE(u32('m', v.m ?? 0), o.m);
    b.writeUInt32LE(u32('inM', same ? (v.m ?? 0) : (v.inM ?? 0)), o.in_m);
    return b;
  },
  decode(b) {
    checkLength(feVal.cName, b, feVal.size);
    return {
      svcId: b.readUInt32LE(feVal.off.svc_id),
      setId: b.readUInt32LE(feVal.off.set_id),
      count: b.readUInt16LE(feVal.off.count),
      flags: b.readUInt16LE(feVal.off.flags),
      affinityTimeout: b.readUInt32LE(feVal.off.affinity_timeout),
      tableId: b.readUInt32LE(feVal.off.table_id),
      inSetId: b.readUInt32LE(feVal.off.in_set_id),
      inCount: b.readUInt16LE(feVal.off.in_count),
      inTableId: b.readUInt32LE(feVal.off.in_table_id),
      m: b.readUInt32LE(feVal.off.m),
      inM: b.readUInt32LE(feVal.off.in_m),
    };
  },
};


// --- kelp_lb4_backends, kelp_lb4_members ---------------------------------------------------------

export interface Lb4BackendKey {
  setId: number;
  slot: number;
}

/**
 * A struct of two u32 fields, by C name and TypeScript name: the keys of backends, members and
 * Maglev chunks.
 */
function u32Pair<A extends string, B extends string>(cName: string, a: readonly [string, A], b: readonly [string, B]): StructCodec<Record<A | B, number>> {
  const l = layout(cName, 8, [
    [a[0], 4, 0],
    [b[0], 4, 4],
  ]);
  return {
    ...l,
    encode(v) {
      const buf = Buffer.alloc(8);
      buf.writeUInt32LE(u32(a[1], v[a[1]]), 0);
      buf.writeUInt32LE(u32(b[1], v[b[1]]), 4);
      return buf;
    },
    decode(buf) {
      checkLength(cName, buf, 8);
      return { [a[1]]: buf.readUInt32LE(0), [b[1]]: buf.readUInt32LE(4) } as Record<A | B, number>;
    },
  };
}

export const lb4BackendKey: StructCodec<Lb4BackendKey> = u32Pair('lb4_backend_key', ['set_id', 'setId'], ['slot', 'slot']);

export interface Lb4Backend {
  address: string;
  port: number;
  flags: number;
  backendId: number;
}

const beVal = layout('lb4_backend', 12, [
  ['addr', 4, 0],
  ['port', 2, 4],
  ['flags', 1, 6],
  ['pad', 1, 7],
  ['backend_id', 4, 8],
]);

export const lb4Backend: StructCodec<Lb4Backend> = {
  ...beVal,
  encode(v) {
    const b = Buffer.alloc(beVal.size);
    writeIp4(b, beVal.off.addr, v.address);
    b.writeUInt16BE(u16('port', v.port), beVal.off.port);
    b.writeUInt8(u8('flags', v.flags), beVal.off.flags);
    b.writeUInt32LE(u32('backendId', v.backendId), beVal.off.backend_id);
    return b;
  },
  decode(b) {
    checkLength(beVal.cName, b, beVal.size);
    return {
      address: ip4FromBuffer(b, beVal.off.addr),
      port: b.readUInt16BE(beVal.off.port),
      flags: b.readUInt8(beVal.off.flags),
      backendId: b.readUInt32LE(beVal.off.backend_id),
    };
  },
};

export interface Lb4MemberKey {
  setId: number;
  backendId: number;
}

export const lb4MemberKey: StructCodec<Lb4MemberKey> = u32Pair('lb4_member_key', ['set_id', 'setId'], ['backend_id', 'backendId']);

// --- kelp_lb4_maglev ------------------------------------------------------------------------------

/** Slots per kelp_lb4_maglev value (LB_MAGLEV_CHUNK). */
export const MAGLEV_CHUNK = LbLimits.LB_MAGLEV_CHUNK;
/** The slots past a table's end in its last chunk (LB_MAGLEV_NO_SLOT): never a backend's. */
export const MAGLEV_NO_SLOT = 0xffff;

/** Chunks of a table of `m` slots. */
export const maglevChunks = (m: number): number => Math.ceil(m / MAGLEV_CHUNK);

export interface Lb4MaglevKey {
  tableId: number;
  chunk: number;
}

export const lb4MaglevKey: StructCodec<Lb4MaglevKey> = u32Pair('lb4_maglev_key', ['table_id', 'tableId'], ['chunk', 'chunk']);

const mgChunk = layout('lb4_maglev_chunk', 2 * MAGLEV_CHUNK, [['slot', 2 * MAGLEV_CHUNK, 0]]);

/** One chunk: 256 little-endian u16 slots (MAGLEV_NO_SLOT past the table's end). */
export const lb4MaglevChunk: StructCodec<Uint16Array> = {
  ...mgChunk,
  encode(v) {
    if (v.length > MAGLEV_CHUNK) throw new RangeError(`a maglev chunk holds ${MAGLEV_CHUNK} slots, not ${v.length}`);
    const b = Buffer.alloc(mgChunk.size, 0xff);
    for (let i = 0; i < v.length; i++) b.writeUInt16LE(v[i], 2 * i);
    return b;
  },
  decode(b) {
    checkLength(mgChunk.cName, b, mgChunk.size);
    const t = new Uint16Array(MAGLEV_CHUNK);
    for (let i = 0; i < MAGLEV_CHUNK; i++) t[i] = b.readUInt16LE(2 * i);
    return t;
  },
};

/** A table as the map holds it: its chunks' values back to back, in chunk order (the last padded with MAGLEV_NO_SLOT). */
export function encodeMaglevTable(table: Uint16Array): Buffer {
  const chunks: Buffer[] = [];
  for (let c = 0; c < maglevChunks(table.length); c++) chunks.push(lb4MaglevChunk.encode(table.subarray(c * MAGLEV_CHUNK, (c + 1) * MAGLEV_CHUNK)));
  return Buffer.concat(chunks);
}

/** A table from its chunks' values, in chunk order: the slots before the padding of the last. */
export function decodeMaglevTable(chunks: readonly Buffer[]): Uint16Array {
  const slots: number[] = [];
  for (const c of chunks) for (const s of lb4MaglevChunk.decode(c)) slots.push(s);
  let m = slots.length;
  while (m > 0 && slots[m - 1] === MAGLEV_NO_SLOT) m--;
  return Uint16Array.from(slots.slice(0, m));
}

// --- kelp_lb4_affinity ---------------------------------------------------------------------------

export interface Lb4AffinityKey {
  svcId: number;
  client: string;
}

const affKey = layout('lb4_affinity_key', 8, [
  ['svc_id', 4, 0],
  ['client', 4, 4],
]);

export const lb4AffinityKey: StructCodec<Lb4AffinityKey> = {
  ...affKey,
  encode(v) {
    const b = Buffer.alloc(affKey.size);
    b.writeUInt32LE(u32('svcId', v.svcId), affKey.off.svc_id);
    ip4ToBuffer(v.client).copy(b, affKey.off.client);
    return b;
  },
  decode(b) {
    checkLength(affKey.cName, b, affKey.size);
    return { svcId: b.readUInt32LE(affKey.off.svc_id), client: ip4FromBuffer(b, affKey.off.client) };
  },
};

export interface Lb4Affinity {
  /** bpf_ktime_get_ns() (CLOCK_MONOTONIC) of the last new flow. */
  lastUsed: bigint;
  backendId: number;
  address: string;
  port: number;
}

const affVal = layout('lb4_affinity', 24, [
  ['last_used', 8, 0],
  ['backend_id', 4, 8],
  ['addr', 4, 12],
  ['port', 2, 16],
  ['pad', 2, 18],
  ['pad2', 4, 20],
]);

export const lb4Affinity: StructCodec<Lb4Affinity> = {
  ...affVal,
  encode(v) {
    const b = Buffer.alloc(affVal.size);
    b.writeBigUInt64LE(v.lastUsed, affVal.off.last_used);
    b.writeUInt32LE(u32('backendId', v.backendId), affVal.off.backend_id);
    ip4ToBuffer(v.address).copy(b, affVal.off.addr);
    b.writeUInt16BE(u16('port', v.port), affVal.off.port);
    return b;
  },
  decode(b) {
    checkLength(affVal.cName, b, affVal.size);
    return {
      lastUsed: b.readBigUInt64LE(affVal.off.last_used),
      backendId: b.readUInt32LE(affVal.off.backend_id),
      address: ip4FromBuffer(b, affVal.off.addr),
      port: b.readUInt16BE(affVal.off.port),
    };
  },
};

// --- kelp_lb4_source_ranges ----------------------------------------------------------------------

export interface Lb4SourceRangeKey {
  svcId: number;
  /** Canonical IPv4 CIDR (no host bits). */
  cidr: string;
}

const srKey = layout('lb4_source_range_key', 12, [
  ['prefixlen', 4, 0],
  ['svc_id', 4, 4],
  ['addr', 4, 8],
]);

export const lb4SourceRangeKey: StructCodec<Lb4SourceRangeKey> = {
  ...srKey,
  encode(v) {
    const c = parseCidr(v.cidr);
    if (c.family !== 4) throw new TypeError(`invalid IPv4 CIDR ${JSON.stringify(v.cidr)}`);
    if (networkAddress(c).value !== c.address) throw new TypeError(`CIDR ${v.cidr} has host bits set`);
    const b = Buffer.alloc(srKey.size);
    b.writeUInt32LE(32 + c.prefix, srKey.off.prefixlen);
    b.writeUInt32BE(u32('svcId', v.svcId), srKey.off.svc_id);
    ipToBytes({ family: 4, value: c.address }).copy(b, srKey.off.addr);
    return b;
  },
  decode(b) {
    checkLength(srKey.cName, b, srKey.size);
    return { svcId: b.readUInt32BE(srKey.off.svc_id), cidr: `${ip4FromBuffer(b, srKey.off.addr)}/${b.readUInt32LE(srKey.off.prefixlen) - 32}` };
  },
};

// --- kelp_lb4_ct ------------------------------------------------------------------------------------

export interface Lb4CtEntry {
  created: bigint;
  lastSeen: bigint;
  /** Forward: the backend; reverse: the frontend. */
  address: string;
  port: number;
  flags: number;
  tcpFlags: number;
  /** Forward: the hairpin source written; reverse: the client's address. */
  natAddress: string;
  backendId: number;
  setId: number;
  svcId: number;
  /** Forward: the client port written when the flow clashed with another at its backend (0: none); reverse: the client's own port. */
  natPort: number;
}

const ctVal = layout('lb4_ct_entry', 48, [
  ['created', 8, 0],
  ['last_seen', 8, 8],
  ['addr', 4, 16],
  ['port', 2, 20],
  ['flags', 1, 22],
  ['tcp_flags', 1, 23],
  ['nat_addr', 4, 24],
  ['backend_id', 4, 28],
  ['set_id', 4, 32],
  ['svc_id', 4, 36],
  ['nat_port', 2, 40],
  ['pad', 2, 42],
  ['pad2', 4, 44],
]);

export const lb4CtEntry: StructCodec<Lb4CtEntry> = {
  ...ctVal,
  encode(v) {
    const b = Buffer.alloc(ctVal.size);
    const o = ctVal.off;
    b.writeBigUInt64LE(v.created, o.created);
    b.writeBigUInt64LE(v.lastSeen, o.last_seen);
    ip4ToBuffer(v.address).copy(b, o.addr);
    b.writeUInt16BE(u16('port', v.port), o.port);
    b.writeUInt8(u8('flags', v.flags), o.flags);
    b.writeUInt8(u8('tcpFlags', v.tcpFlags), o.tcp_flags);
    ip4ToBuffer(v.natAddress).copy(b, o.nat_addr);
    b.writeUInt32LE(u32('backendId', v.backendId), o.backend_id);
    b.writeUInt32LE(u32('setId', v.setId), o.set_id);
    b.writeUInt32LE(u32('svcId', v.svcId), o.svc_id);
    b.writeUInt16BE(u16('natPort', v.natPort), o.nat_port);
    return b;
  },
  decode(b) {
    checkLength(ctVal.cName, b, ctVal.size);
    const o = ctVal.off;
    return {
      created: b.readBigUInt64LE(o.created),
      lastSeen: b.readBigUInt64LE(o.last_seen),
      address: ip4FromBuffer(b, o.addr),
      port: b.readUInt16BE(o.port),
      flags: b.readUInt8(o.flags),
      tcpFlags: b.readUInt8(o.tcp_flags),
      natAddress: ip4FromBuffer(b, o.nat_addr),
      backendId: b.readUInt32LE(o.backend_id),
      setId: b.readUInt32LE(o.set_id),
      svcId: b.readUInt32LE(o.svc_id),
      natPort: b.readUInt16BE(o.nat_port),
    };
  },
};

export const LB_STRUCTS: ReadonlyArray<StructCodec<unknown>> = [
  lb4FrontendKey,
  lb4Frontend,
  lb4BackendKey,
  lb4Backend,
  lb4MemberKey,
  lb4MaglevKey,
  lb4MaglevChunk,
  lb4AffinityKey,
  lb4Affinity,
  lb4SourceRangeKey,
  lb4CtEntry,
] as ReadonlyArray<StructCodec<unknown>>;

// --- the flow hash (lb4_hash) --------------------------------------------------------------------------

function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const ip4Number = (ip: string) => ip4ToBuffer(ip).readUInt32BE(0);

/** lb4_hash() of bpf/lib/lb.h: the hash the per-packet path indexes Maglev tables with. */
export function lb4FlowHash(f: { saddr: string; daddr: string; sport: number; dport: number; proto: number }): number {
  let h = 0x6b656c70;
  h = mix32(h ^ ip4Number(f.saddr));
  h = mix32(h ^ ip4Number(f.daddr));
  h = mix32(h ^ (((f.sport & 0xffff) << 16) | (f.dport & 0xffff)));
  return mix32(h ^ f.proto);
}

// --- the writer ------------------------------------------------------------------------------------

/** The maps ServiceWriter writes (one of each, shared by every object declaring them). */
export interface ServiceMaps {
  frontends: BpfMap;
  backends: BpfMap;
  members: BpfMap;
  maglev: BpfMap;
  sourceRanges: BpfMap;
}

export function serviceMapsOf(obj: { map(name: string): BpfMap }): ServiceMaps {
  return {
    frontends: obj.map('kelp_lb4_frontends'),
    backends: obj.map('kelp_lb4_backends'),
    members: obj.map('kelp_lb4_members'),
    maglev: obj.map('kelp_lb4_maglev'),
    sourceRanges: obj.map('kelp_lb4_source_ranges'),
  };
}

type MapName = keyof ServiceMaps;

/**
 * Entries of one map back to back, as the batch calls take them: keys in `keys`, values in
 * `values`. Blocks the writer encodes also have 32-bit views of both (every key and value here
 * is a whole number of 4-byte words at 4-byte offsets): a word store costs a fraction of a
 * Buffer.writeUInt32LE, which counts at 100,000 fields in a process whose code is not warm yet.
 */
interface Block {
  keys: Buffer;
  values: Buffer;
}

interface Words {
  keys: Buffer;
  values: Buffer;
  k32: Uint32Array;
  v32: Uint32Array;
}

/**
 * The entries one object of the desired content encodes to (a set's backends, its members, a
 * table's chunks, a frontend, a service's source ranges): `n` entries of `block` from entry `at`.
 * The same object while the desired object is the same, so the writer tells what changed by
 * identity, without looking at bytes. One apply's new encodings share one block per map: written
 * into large buffers at offsets, put in one batch call without copying when they are all that is
 * put (the first write of 10,000 Services).
 */
interface Group {
  block: Block;
  at: number;
  n: number;
  /** The apply (a number unique among all writers) that last wanted it: unchanged or gone, without a Set per map. */
  mark: number;
}

/** Apply numbers, unique among all writers (a group may be written by several: tests, tools). */
let applies = 0;

type EncodedService = Record<MapName, Group[]>;

interface Sizes {
  key: number;
  value: number;
}

/** Key and value sizes by map (bpf/lib/lb.h). */
const SIZES: Record<MapName, Sizes> = {
  frontends: { key: feKey.size, value: feVal.size },
  backends: { key: lb4BackendKey.size, value: beVal.size },
  members: { key: lb4MemberKey.size, value: 4 },
  maglev: { key: lb4MaglevKey.size, value: mgChunk.size },
  sourceRanges: { key: srKey.size, value: 1 },
};

const MAP_ORDER = ['backends', 'members', 'maglev', 'sourceRanges'] as const;
/** The maps of backend sets, written side by side before frontends name them. */
const SET_MAPS = ['backends', 'members', 'maglev'] as const;

export interface ServiceWriterOptions {
  /** --maglev-table-size: no table may be larger; default the size compiled in. */
  maglevTableSize?: number;
}

export interface ApplyServiceResult {
  frontends: SyncStats;
  backends: SyncStats;
  members: SyncStats;
  maglev: SyncStats;
  sourceRanges: SyncStats;
  /** Time spent writing the maps (after encoding and diffing), ms. */
  writeMs: number;
  /** Of which writing backends, members and Maglev chunks (side by side, before the frontends). */
  setsMs: number;
}

function newBlock(n: number, sizes: Sizes): Words {
  const keys = new ArrayBuffer(n * sizes.key);
  const values = new ArrayBuffer(n * sizes.value);
  // Source ranges' one-byte values have no word view (they are written byte by byte).
  const words = (ab: ArrayBuffer) => new Uint32Array(ab, 0, ab.byteLength >> 2);
  return { keys: Buffer.from(keys), values: Buffer.from(values), k32: words(keys), v32: words(values) };
}

// The words below are in host order, as the kernel reads the structs: kelp's agent and datapath
// share the host, which is little-endian wherever kelp runs (x86-64, arm64); network-order fields
// (addresses, ports) are laid out byte by byte within their words accordingly.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error('kelp\'s service writer assumes a little-endian host');

/** A port (network order) then a byte, as the low three bytes of a word. */
const portWord = (port: number, byte: number) => ((port >>> 8) | ((port & 0xff) << 8) | (byte << 16)) >>> 0;

/** `v` if it fits an unsigned field of `bits` bits (one compare on the way: the writer checks ~100,000 fields on a first write). */
function word(name: string, v: number, bits: 8 | 16 | 32): number {
  const fits = bits === 32 ? v >>> 0 === v : bits === 16 ? (v & 0xffff) === v : (v & 0xff) === v;
  if (!fits) throw new RangeError(`${name} must be a u${bits}, got ${v}`);
  return v;
}

// Encodings remembered by the desired content's objects: the compiler hands the same objects back
// for what did not change (and builds new ones for what did), so a run after one change encodes one
// Service, not 10,000. Objects given to apply() must not be changed afterwards.
const encodedSets = new WeakMap<BackendSet, { setId: number; backends: Group; members: Group }>();
const encodedFrontends = new WeakMap<FrontendEntry, { tableId: number; inTableId: number; group: Group }>();
const encodedTables = new WeakMap<Uint16Array, { tableId: number; count: number; group: Group }>();
const encodedRanges = new WeakMap<string[], { svcId: number; group: Group }>();

/** A set's backends (lb4_backend_key → lb4_backend) and members (lb4_member_key → slot) at entry `at` of their blocks. */
function writeSet(backends: Words, members: Words, at: number, set: BackendSet): void {
  const setId = word('setId', set.setId, 32);
  for (let slot = 0; slot < set.backends.length; slot++) {
    const be = set.backends[slot];
    const i = at + slot;
    const id = word('backendId', be.backendId, 32);
    backends.k32[2 * i] = setId;
    backends.k32[2 * i + 1] = slot;
    backends.v32[3 * i] = ip4Word(be.address);
    backends.v32[3 * i + 1] = portWord(word('port', be.port, 16), word('flags', be.flags, 8));
    backends.v32[3 * i + 2] = id;
    members.k32[2 * i] = setId;
    members.k32[2 * i + 1] = id;
    members.v32[i] = slot;
  }
}

/** A frontend (lb4_frontend_key → lb4_frontend) at entry `at` of its block; the views' table ids and sizes as the writer chose them. */
function writeFrontendAt(b: Words, at: number, fe: FrontendEntry, tableId: number, m: number, inTableId: number, inM: number): void {
  b.k32[2 * at] = ip4Word(fe.address);
  b.k32[2 * at + 1] = portWord(word('port', fe.port, 16), protoNumber(fe.protocol));
  const same = fe.inSetId === undefined;
  let flags = word('flags', fe.flags, 16);
  // One view for every client: the in-cluster one drops where the outside one does.
  if (same && flags & FRONTEND_DROP_NO_LOCAL) flags |= FRONTEND_IN_DROP_NO_LOCAL;
  const v = b.v32;
  const o = 10 * at;
  v[o] = word('svcId', fe.svcId, 32);
  v[o + 1] = word('setId', fe.setId, 32);
  v[o + 2] = (word('count', fe.count, 16) | (flags << 16)) >>> 0;
  v[o + 3] = word('affinityTimeout', fe.affinityTimeout, 32);
  v[o + 4] = tableId;
  v[o + 5] = same ? fe.setId : word('inSetId', fe.inSetId!, 32);
  v[o + 6] = same ? fe.count : word('inCount', fe.inCount ?? 0, 16);
  v[o + 7] = inTableId;
  v[o + 8] = m;
  v[o + 9] = inM;
}

/** What the writer knows of the sets it wrote: each one's count and table, and who uses each table. */
interface SetsInfo {
  sets: Map<number, { count: number; tableId: number; m: number }>;
  /** Table object → its id (the first set using it), the count of its sets and how many sets use it. */
  tables: Map<Uint16Array, { id: number; count: number; users: number }>;
  /** Table id → its chunks' group and where it is in the maglev groups. */
  tableGroups: Map<number, { group: Group; index: number }>;
}

/** New sets' backends and members, encoded into one block each; `put(i, backends, members)` receives each set's groups. */
function encodeSets(list: ReadonlyArray<{ set: BackendSet; index: number }>, put: (index: number, backends: Group, members: Group) => void): void {
  if (list.length === 0) return;
  let entries = 0;
  for (const { set } of list) entries += set.backends.length;
  const backends = newBlock(entries, SIZES.backends);
  const members = newBlock(entries, SIZES.members);
  let at = 0;
  for (const { set, index } of list) {
    writeSet(backends, members, at, set);
    const enc = { setId: set.setId, backends: { block: backends, at, n: set.backends.length, mark: 0 }, members: { block: members, at, n: set.backends.length, mark: 0 } };
    encodedSets.set(set, enc);
    put(index, enc.backends, enc.members);
    at += set.backends.length;
  }
}

/**
 * New tables' chunks, encoded into one block and checked: every slot names one of its set's
 * backends (one native pass over a first run's 2.5 million slots).
 */
function encodeTables(list: ReadonlyArray<{ table: Uint16Array; tableId: number; count: number; index: number }>, put: (index: number, group: Group, tableId: number) => void): void {
  if (list.length === 0) return;
  let chunks = 0;
  for (let t = 0; t < list.length; t++) chunks += maglevChunks(list[t].table.length);
  const block = newBlock(chunks, SIZES.maglev);
  const slots = new Uint16Array(block.v32.buffer);
  const starts = new Uint32Array(list.length);
  const lengths = new Uint32Array(list.length);
  const counts = new Uint32Array(list.length);
  let at = 0;
  for (let t = 0; t < list.length; t++) {
    const { table, tableId, count } = list[t];
    const n = maglevChunks(table.length);
    for (let c = 0; c < n; c++) {
      block.k32[2 * (at + c)] = tableId;
      block.k32[2 * (at + c) + 1] = c;
    }
    const from = at * MAGLEV_CHUNK;
    slots.set(table, from);
    if (table.length < n * MAGLEV_CHUNK) slots.fill(MAGLEV_NO_SLOT, from + table.length, from + n * MAGLEV_CHUNK);
    starts[t] = from;
    lengths[t] = table.length;
    counts[t] = count;
    at += n;
  }
  const bad = maglevFirstBadTable(slots, starts, lengths, counts);
  if (bad >= 0) {
    const { table, tableId, count } = list[bad];
    const i = table.findIndex((v) => v >= count);
    throw new RangeError(`maglev table slot ${i} of set ${tableId} names backend ${table[i]} of a set of ${count}`);
  }
  at = 0;
  for (let t = 0; t < list.length; t++) {
    const { table, tableId, count, index } = list[t];
    const group = { block, at, n: maglevChunks(table.length), mark: 0 };
    encodedTables.set(table, { tableId, count, group });
    put(index, group, tableId);
    at += group.n;
  }
}

interface NewFrontend {
  fe: FrontendEntry;
  index: number;
  tableId: number;
  m: number;
  inTableId: number;
  inM: number;
}

function encodeFrontends(list: readonly NewFrontend[], put: (index: number, group: Group) => void): void {
  if (list.length === 0) return;
  const block = newBlock(list.length, SIZES.frontends);
  list.forEach(({ fe, index, tableId, m, inTableId, inM }, at) => {
    writeFrontendAt(block, at, fe, tableId, m, inTableId, inM);
    const group = { block, at, n: 1, mark: 0 };
    encodedFrontends.set(fe, { tableId, inTableId, group });
    put(index, group);
  });
}

/** One of a frontend's views (outside, in-cluster): its set, the count checked against the set's. */
function frontendView(sets: SetsInfo['sets'], fe: FrontendEntry, setId: number, count: number, which: string) {
  const set = sets.get(setId);
  if (count > 0 && set?.count !== count) {
    throw new Error(`frontend ${fe.address}:${fe.port}/${fe.protocol} names set ${setId} with ${count} backends in its ${which} view; the set has ${set?.count ?? 'no entry'}`);
  }
  return count > 1 ? set : undefined;
}

/** A frontend to encode, with its views' tables, or its encoding when it has one for those tables. */
function frontendWork(sets: SetsInfo['sets'], fe: FrontendEntry, index: number): NewFrontend | Group {
  const outside = frontendView(sets, fe, fe.setId, fe.count, 'outside');
  const inside = fe.inSetId === undefined ? outside : frontendView(sets, fe, fe.inSetId, fe.inCount ?? 0, 'in-cluster');
  const tableId = outside?.tableId ?? 0;
  const inTableId = inside?.tableId ?? 0;
  const memo = encodedFrontends.get(fe);
  // A set's table and its size change only with its backends: a new count, or a new table object under a new id.
  if (memo?.tableId === tableId && memo.inTableId === inTableId) return memo.group;
  return { fe, index, tableId, m: outside?.m ?? 0, inTableId, inM: inside?.m ?? 0 };
}

/** Called by encodeServiceDesired once the backends and members (`sets`), then the tables, are encoded. */
interface EncodeHooks {
  sets?: (out: EncodedService) => void;
  tables?: (out: EncodedService) => void;
}

/**
 * The desired content as groups of entries by map (frontends in the order of desired.frontends,
 * backends and members in the order of desired.sets); a set named twice, a frontend whose count
 * is not its set's, or a table that does not fit its set is an error. Sets handed the same table
 * object (the compiler shares one among the ports of a Service over the same pods) share its
 * kelp_lb4_maglev chunks, keyed by the first such set's id.
 */
function encodeServiceDesired(desired: ServiceMapsDesired, maxTableSize: number, hooks: EncodeHooks = {}): { out: EncodedService; info: SetsInfo } {
  const out: EncodedService = { frontends: [], backends: [], members: [], maglev: [], sourceRanges: [] };
  const info: SetsInfo = { sets: new Map(), tables: new Map(), tableGroups: new Map() };
  // Sets and tables first: what is already encoded is taken as it is, the rest is encoded below
  // into one new block per map.
  const newSets: Array<{ set: BackendSet; index: number }> = [];
  const newTables: Array<{ table: Uint16Array; tableId: number; count: number; index: number }> = [];
  for (const set of desired.sets) {
    if (info.sets.has(set.setId)) throw new Error(`backend set ${set.setId} is listed twice`);
    const count = set.backends.length;
    const memo = encodedSets.get(set);
    if (memo && memo.setId === set.setId) {
      out.backends.push(memo.backends);
      out.members.push(memo.members);
    } else {
      newSets.push({ set, index: out.backends.length });
      out.backends.push(undefined as unknown as Group);
      out.members.push(undefined as unknown as Group);
    }
    let tableId = 0;
    let m = 0;
    const table = set.maglev;
    if (count > 1 && table) {
      m = table.length;
      const shared = info.tables.get(table);
      if (shared?.count === count) {
        tableId = shared.id;
        shared.users++;
      } else {
        tableId = set.setId;
        info.tables.set(table, { id: tableId, count, users: 1 });
        const tm = encodedTables.get(table);
        if (tm && tm.tableId === tableId && tm.count === count) {
          info.tableGroups.set(tableId, { group: tm.group, index: out.maglev.length });
          out.maglev.push(tm.group);
        } else {
          if (!(table instanceof Uint16Array)) throw new TypeError(`the maglev table of set ${tableId} is not a Uint16Array`);
          if (m < count || m > maxTableSize) throw new RangeError(`maglev table of set ${tableId} has ${m} slots: want ${count} (its backends) to ${maxTableSize} (--maglev-table-size)`);
          newTables.push({ table, tableId, count, index: out.maglev.length });
          out.maglev.push(undefined as unknown as Group);
        }
      }
    }
    info.sets.set(set.setId, { count, tableId, m });
  }
  encodeSets(newSets, (i, b, mb) => {
    out.backends[i] = b;
    out.members[i] = mb;
  });
  hooks.sets?.(out);
  encodeTables(newTables, (i, g, tableId) => {
    out.maglev[i] = g;
    info.tableGroups.set(tableId, { group: g, index: i });
  });
  hooks.tables?.(out);
  const newFrontends: NewFrontend[] = [];
  desired.frontends.forEach((fe, i) => {
    const w = frontendWork(info.sets, fe, i);
    if ('block' in w) out.frontends.push(w);
    else {
      newFrontends.push(w);
      out.frontends.push(undefined as unknown as Group);
    }
  });
  encodeFrontends(newFrontends, (i, g) => (out.frontends[i] = g));
  for (const [svcId, cidrs] of desired.sourceRanges) {
    const memo = encodedRanges.get(cidrs);
    if (memo?.svcId === svcId) {
      out.sourceRanges.push(memo.group);
      continue;
    }
    const block = newBlock(cidrs.length, SIZES.sourceRanges);
    cidrs.forEach((cidr, i) => {
      lb4SourceRangeKey.encode({ svcId, cidr }).copy(block.keys, i * srKey.size);
      block.values[i] = 1;
    });
    const group = { block, at: 0, n: cidrs.length, mark: 0 };
    encodedRanges.set(cidrs, { svcId, group });
    out.sourceRanges.push(group);
  }
  return { out, info };
}

/** Entry i's key as a string of its bytes two by two: an exact identity, cheap to make. */
function keyId(keys: Buffer, i: number, size: number): string {
  let s = '';
  for (let o = i * size, end = o + size; o < end; o += 2) s += String.fromCharCode(keys[o] | (keys[o + 1] << 8));
  return s;
}

/**
 * A map as the writer last left it: the groups of the apply numbered `mark`, or (first apply,
 * resync, after a failure) its content read back.
 */
interface MapState {
  groups: Group[];
  mark: number;
  readBack?: Group;
}

interface GroupDiff {
  /** Groups (or single entries of them) to put, and keys to remove. */
  put: Group[];
  remove: Group[];
  stats: SyncStats;
}

/** Puts of sets' maps under way (ServiceWriter.startPuts). */
interface SetsWriting {
  names: MapName[];
  writing: { wait(): void };
}

/** Entries the map holds once a diff is written: what a MapFullError reports as wanted. */
const wantedSize = (d: GroupDiff) => d.stats.added + d.stats.updated + d.stats.unchanged;

/**
 * What to put and remove so a map holding `before` holds the groups of `want`. A group written
 * last time and wanted again is unchanged without looking at its entries; only the entries of
 * groups that come and go are compared, by key: a key a new group puts again is not removed, and
 * is not written when its value is the same. With nothing gone (the first write into empty maps,
 * additions) nothing is compared at all. Keys are unique by construction (the compiler's frontend
 * claims, set ids); a key two new groups both name is an error.
 */
function diffGroups(before: MapState, want: Group[], sizes: Sizes, mark: number): GroupDiff {
  const added: Group[] = [];
  let unchanged = 0;
  for (const g of want) {
    if (g.mark === mark) throw new Error('desired content names one group of entries twice');
    if (g.mark === before.mark && !before.readBack) unchanged += g.n;
    else added.push(g);
    g.mark = mark;
  }
  const gone: Group[] = [];
  if (before.readBack) {
    if (before.readBack.n > 0) gone.push(before.readBack);
  } else {
    for (const g of before.groups) if (g.mark !== mark) gone.push(g);
  }
  return keyedDiff(added, gone, sizes, unchanged);
}

/**
 * Puts and removals that turn the entries of groups `gone` into those of groups `added`, by key:
 * a key put again is not removed, and not written when its value is the same. `unchanged`:
 * entries of the map not in either. A key two added groups both name is an error.
 */
function keyedDiff(added: Group[], gone: Group[], sizes: Sizes, unchanged: number): GroupDiff {
  let putCount = 0;
  for (const g of added) putCount += g.n;
  if (gone.length === 0) return { put: added, remove: [], stats: { added: putCount, updated: 0, removed: 0, unchanged } };
  // Every entry about to be put, by key: (index in `added`) × 2^20 + entry.
  const SHIFT = 2 ** 20;
  const next = new Map<string, number>();
  added.forEach((g, gi) => {
    for (let i = 0; i < g.n; i++) {
      const id = keyId(g.block.keys, g.at + i, sizes.key);
      if (next.has(id)) throw new Error(`desired content names key ${Buffer.from(id, 'utf16le').toString('hex')} twice`);
      next.set(id, gi * SHIFT + i);
    }
  });
  const remove: Group[] = [];
  const skip = new Set<number>();
  let updated = 0;
  for (const g of gone) {
    for (let i = 0; i < g.n; i++) {
      const e = g.at + i;
      const hit = next.get(keyId(g.block.keys, e, sizes.key));
      if (hit === undefined) {
        remove.push({ block: g.block, at: e, n: 1, mark: 0 });
        continue;
      }
      const ng = added[Math.floor(hit / SHIFT)];
      const ne = ng.at + (hit % SHIFT);
      const vs = sizes.value;
      if (ng.block.values.compare(g.block.values, e * vs, (e + 1) * vs, ne * vs, (ne + 1) * vs) === 0) skip.add(hit);
      else updated++;
    }
  }
  const stats = (written: number): SyncStats => ({ added: written - updated, updated, removed: remove.length, unchanged: unchanged + putCount - written });
  if (skip.size === 0) return { put: added, remove, stats: stats(putCount) };
  const put: Group[] = [];
  added.forEach((g, gi) => {
    for (let i = 0; i < g.n; i++) if (!skip.has(gi * SHIFT + i)) put.push({ block: g.block, at: g.at + i, n: 1, mark: 0 });
  });
  return { put, remove, stats: stats(putCount - skip.size) };
}

/** The keys (and values) of `groups` packed: a view when they are one run of one block, else a copy. */
function pack(groups: Group[], sizes: Sizes, withValues: boolean): { keys: Buffer; values: Buffer; n: number } {
  let n = 0;
  let run = true;
  for (let i = 0; i < groups.length; i++) {
    n += groups[i].n;
    if (i > 0 && (groups[i].block !== groups[0].block || groups[i].at !== groups[i - 1].at + groups[i - 1].n)) run = false;
  }
  if (run && groups.length > 0) {
    const { block, at } = groups[0];
    const whole = at === 0 && n * sizes.key === block.keys.length;
    return {
      keys: whole ? block.keys : block.keys.subarray(at * sizes.key, (at + n) * sizes.key),
      values: !withValues ? Buffer.alloc(0) : whole ? block.values : block.values.subarray(at * sizes.value, (at + n) * sizes.value),
      n,
    };
  }
  const keys = Buffer.allocUnsafe(n * sizes.key);
  const values = Buffer.allocUnsafe(withValues ? n * sizes.value : 0);
  let o = 0;
  for (const g of groups) {
    g.block.keys.copy(keys, o * sizes.key, g.at * sizes.key, (g.at + g.n) * sizes.key);
    if (withValues) g.block.values.copy(values, o * sizes.value, g.at * sizes.value, (g.at + g.n) * sizes.value);
    o += g.n;
  }
  return { keys, values, n };
}

/** A map's content as one group (batches where the map has them: an LPM trie has none). */
function readBack(map: BpfMap): Group {
  try {
    const { keys, values, count } = map.lookupBatchRaw();
    return { block: { keys, values }, at: 0, n: count, mark: 0 };
  } catch {
    const entries = readEntries(map);
    return { block: { keys: Buffer.concat(entries.map((e) => e[0])), values: Buffer.concat(entries.map((e) => e[1])) }, at: 0, n: entries.length, mark: 0 };
  }
}

/** Puts groups in one batch call (a syscall per ~thousand entries); entry by entry where the map has no batches. */
function putGroups(map: BpfMap, put: Group[], sizes: Sizes, wanted: number): void {
  if (put.length === 0) return;
  const { keys, values, n } = pack(put, sizes, true);
  try {
    try {
      map.updateBatchPacked(keys, values, n);
    } catch (e) {
      if (isMapFull(e)) throw e;
      // LPM tries have no batch operations (EINVAL/ENOTSUPP).
      for (let i = 0; i < n; i++) map.update(keys.subarray(i * sizes.key, (i + 1) * sizes.key), values.subarray(i * sizes.value, (i + 1) * sizes.value));
    }
  } catch (e) {
    if (isMapFull(e)) throw new MapFullError(map.name, wanted, map.maxEntries, e);
    throw e;
  }
}

function removeGroups(map: BpfMap, remove: Group[], sizes: Sizes): void {
  if (remove.length === 0) return;
  const { keys, n } = pack(remove, sizes, false);
  try {
    map.deleteBatchPacked(keys, n);
  } catch {
    for (let i = 0; i < n; i++) map.delete(keys.subarray(i * sizes.key, (i + 1) * sizes.key));
  }
}

/**
 * The one writer of the load-balancing maps. apply() makes them hold exactly `desired`, make before
 * break:
 *   1. new and changed backends, members, Maglev chunks and source ranges;
 *   2. new and changed frontends (a frontend now names only complete sets);
 *   3. stale frontends, then stale source ranges, chunks, members and backends.
 * It diffs against what it wrote last; the first apply, one with `resync`, and the one after a
 * failed apply read the maps back. A MapFullError leaves a superset of the old and new content.
 */
/** At most this many changed frontends (and sets) for a patch; more: the full diff. */
const PATCH_MAX = 256;

export class ServiceWriter {
  readonly maglevTableSize: number;
  /** What the maps hold after the last apply, by map: absent at first, after a failure. */
  private written?: Record<MapName, MapState>;
  /** Applies written as patches (only the changed entries looked at) and in full. */
  readonly counts = { patches: 0, full: 0 };
  /** The content of the last apply as given, and what the writer knows of its sets (for patches). */
  private last?: { frontends: FrontendEntry[]; sets: BackendSet[]; sourceRanges: ServiceMapsDesired['sourceRanges']; info: SetsInfo };

  constructor(
    readonly maps: ServiceMaps,
    opts: ServiceWriterOptions = {},
  ) {
    this.maglevTableSize = opts.maglevTableSize ?? DEFAULT_LB_MAGLEV_TABLE_SIZE;
    if (maps.maglev.valueLen !== mgChunk.size || maps.maglev.keySize !== lb4MaglevKey.size) {
      throw new Error(`kelp_lb4_maglev has ${maps.maglev.keySize}-byte keys and ${maps.maglev.valueLen}-byte values, not the chunks of this agent (${lb4MaglevKey.size}, ${mgChunk.size})`);
    }
  }

  apply(desired: ServiceMapsDesired, opts: { resync?: boolean } = {}): ApplyServiceResult {
    if (!opts.resync) {
      const patched = this.patch(desired);
      if (patched) {
        this.counts.patches++;
        return patched;
      }
    }
    this.counts.full++;
    const current = opts.resync ? undefined : this.written;
    this.written = undefined;
    this.last = undefined;
    const have = (name: MapName): MapState => current?.[name] ?? { groups: [], mark: 0, readBack: readBack(this.maps[name]) };
    const mark = ++applies;
    const d = {} as Record<MapName, GroupDiff>;
    const t0 = process.hrtime.bigint();
    // The kernel's inserts of backends and members (then of tables) go on beside the encoding of
    // what follows them (BpfMap.updateBatchesStart: threads of the addon): a first write of
    // 10,000 Services spends ~20 ms in the kernel. Frontends are encoded meanwhile and written
    // once the sets are complete (make before break).
    const started: SetsWriting[] = [];
    const start = (names: readonly MapName[], want: EncodedService) => {
      for (const name of names) d[name] = diffGroups(have(name), want[name], SIZES[name], mark);
      started.push(this.startPuts(d, names));
    };
    let encoded: ReturnType<typeof encodeServiceDesired> | undefined;
    try {
      encoded = encodeServiceDesired(desired, this.maglevTableSize, {
        sets: (out) => start(['backends', 'members'], out),
        tables: (out) => start(['maglev'], out),
      });
    } finally {
      // Whatever happened, nothing is left writing. A content refused after its sets went out
      // leaves them written (no frontend names them): `written` is unset, so the next apply reads
      // the maps back. A write's own failure is thrown only for a content that was not refused.
      const failed = this.finishPuts(d, started);
      if (failed !== undefined && encoded) throw failed;
    }
    const { out: want, info } = encoded!;
    for (const name of ['frontends', 'sourceRanges'] as const) d[name] = diffGroups(have(name), want[name], SIZES[name], mark);
    const result = this.write(d, t0, process.hrtime.bigint() - t0);
    const state = (name: MapName): MapState => ({ groups: want[name], mark });
    this.written = { frontends: state('frontends'), backends: state('backends'), members: state('members'), maglev: state('maglev'), sourceRanges: state('sourceRanges') };
    this.last = { frontends: desired.frontends.slice(), sets: desired.sets.slice(), sourceRanges: desired.sourceRanges, info };
    return result;
  }

  /**
   * Starts putting the diffs of `names` (sets' maps) on threads of the addon (one batch call for
   * all: BpfMap.updateBatchesStart), for finishPuts.
   */
  private startPuts(d: Record<MapName, GroupDiff>, names: readonly MapName[]): SetsWriting {
    const todo = names.filter((name) => d[name].put.length > 0);
    const batches = todo.map((name) => ({ map: this.maps[name], ...pack(d[name].put, SIZES[name], true) }));
    return { names: todo, writing: BpfMap.updateBatchesStart(batches.map(({ map, keys, values, n }) => ({ map, keys, values, count: n }))) };
  }

  /**
   * Waits for puts started by startPuts; a failed one is done again map by map, for that map's
   * error (MapFullError). Returns the first error, or undefined.
   */
  private finishPuts(d: Record<MapName, GroupDiff>, started: readonly SetsWriting[]): unknown {
    let failed: unknown;
    for (const { names, writing } of started) {
      try {
        writing.wait();
      } catch {
        for (const name of names) {
          try {
            putGroups(this.maps[name], d[name].put, SIZES[name], wantedSize(d[name]));
          } catch (e) {
            failed ??= e;
          }
        }
      }
    }
    return failed;
  }

  /**
   * Writes diffs, make before break; any failure leaves `written` unset (the next apply reads the
   * maps back). `setsNs`: the sets were written already (apply: beside the encoding), that long
   * after `t0`; else they are written here first, side by side.
   */
  private write(d: Record<MapName, GroupDiff>, t0 = process.hrtime.bigint(), setsNs?: bigint): ApplyServiceResult {
    if (setsNs === undefined) {
      const failed = this.finishPuts(d, [this.startPuts(d, SET_MAPS)]);
      if (failed !== undefined) throw failed;
      setsNs = process.hrtime.bigint() - t0;
    }
    // Source ranges entry by entry (an LPM trie has no batches), then frontends.
    putGroups(this.maps.sourceRanges, d.sourceRanges.put, SIZES.sourceRanges, wantedSize(d.sourceRanges));
    putGroups(this.maps.frontends, d.frontends.put, SIZES.frontends, wantedSize(d.frontends));
    removeGroups(this.maps.frontends, d.frontends.remove, SIZES.frontends);
    for (const name of [...MAP_ORDER].reverse()) removeGroups(this.maps[name], d[name].remove, SIZES[name]);
    return {
      frontends: d.frontends.stats,
      backends: d.backends.stats,
      members: d.members.stats,
      maglev: d.maglev.stats,
      sourceRanges: d.sourceRanges.stats,
      writeMs: Number(process.hrtime.bigint() - t0) / 1e6,
      setsMs: Number(setsNs) / 1e6,
    };
  }

  /**
   * A change among many, written by looking at what changed only: when `desired` holds the
   * frontends and sets of the last apply at the same places but for a few (the compiler hands
   * back the same objects for the rest), with the same set ids and counts, the same frontend
   * keys, the same source ranges, and tables used by changed sets only. Then only the changed
   * entries are encoded and compared (no pass over 10,000 frontends and sets); undefined when
   * the content does not qualify, for apply's full diff.
   */
  private patch(desired: ServiceMapsDesired): ApplyServiceResult | undefined {
    const last = this.last;
    const st = this.written;
    if (!last || !st || desired.sourceRanges !== last.sourceRanges) return undefined;
    if (desired.frontends.length !== last.frontends.length || desired.sets.length !== last.sets.length) return undefined;
    const chSets: number[] = [];
    const chFe: number[] = [];
    for (let i = 0; i < desired.sets.length; i++) if (desired.sets[i] !== last.sets[i] && chSets.push(i) > PATCH_MAX) return undefined;
    for (let i = 0; i < desired.frontends.length; i++) if (desired.frontends[i] !== last.frontends[i] && chFe.push(i) > PATCH_MAX) return undefined;
    const { info } = last;
    // Tables the changed sets used and use: no unchanged set may use one (its owner, so its id, would move).
    const oldUse = new Map<Uint16Array, number>();
    const newUse = new Map<Uint16Array, { users: number; count: number; id: number }>();
    const tableOf = (set: BackendSet) => (set.backends.length > 1 ? set.maglev : undefined);
    for (const i of chSets) {
      const o = last.sets[i];
      const n = desired.sets[i];
      if (n.setId !== o.setId || n.backends.length !== o.backends.length || tableOf(n)?.length !== tableOf(o)?.length) return undefined;
      const ot = tableOf(o);
      if (ot) oldUse.set(ot, (oldUse.get(ot) ?? 0) + 1);
      const nt = tableOf(n);
      if (nt) {
        const u = newUse.get(nt);
        if (u && u.count !== n.backends.length) return undefined;
        if (u) u.users++;
        else newUse.set(nt, { users: 1, count: n.backends.length, id: n.setId });
      }
    }
    for (const [t, k] of oldUse) if ((info.tables.get(t)?.users ?? 0) !== k) return undefined;
    for (const t of newUse.keys()) if ((info.tables.get(t)?.users ?? 0) !== (oldUse.get(t) ?? 0)) return undefined;
    // Each changed set keeps its table id: a frontend of it that did not change stays right.
    for (const i of chSets) {
      const n = desired.sets[i];
      const nt = tableOf(n);
      if ((nt ? newUse.get(nt)!.id : 0) !== info.sets.get(n.setId)?.tableId) return undefined;
    }
    for (const i of chFe) {
      const o = last.frontends[i];
      const n = desired.frontends[i];
      if (n.address !== o.address || n.port !== o.port || n.protocol !== o.protocol) return undefined;
    }
    // Encode what is new; its old counterparts go. The sets' info is as before (ids, counts, tables' ids and sizes).
    const want = { frontends: [] as Group[], backends: [] as Group[], members: [] as Group[], maglev: [] as Group[] };
    const gone = { frontends: [] as Group[], backends: [] as Group[], members: [] as Group[], maglev: [] as Group[] };
    const newSets: Array<{ set: BackendSet; index: number }> = [];
    for (const i of chSets) {
      const set = desired.sets[i];
      const memo = encodedSets.get(set);
      if (memo && memo.setId === set.setId) {
        want.backends.push(memo.backends);
        want.members.push(memo.members);
      } else newSets.push({ set, index: i });
      gone.backends.push(st.backends.groups[i]);
      gone.members.push(st.members.groups[i]);
    }
    const setGroupsAt = new Map<number, [Group, Group]>();
    encodeSets(newSets, (i, b, m) => {
      want.backends.push(b);
      want.members.push(m);
      setGroupsAt.set(i, [b, m]);
    });
    const newTables: Array<{ table: Uint16Array; tableId: number; count: number; index: number }> = [];
    const tableAt = new Map<number, Group>();
    for (const [t, u] of newUse) {
      if (t.length > this.maglevTableSize) return undefined;
      const tm = encodedTables.get(t);
      if (tm && tm.tableId === u.id && tm.count === u.count) tableAt.set(u.id, tm.group);
      else newTables.push({ table: t, tableId: u.id, count: u.count, index: u.id });
    }
    for (const t of oldUse.keys()) gone.maglev.push(info.tableGroups.get(info.tables.get(t)!.id)!.group);
    encodeTables(newTables, (id, g) => tableAt.set(id, g));
    for (const g of tableAt.values()) want.maglev.push(g);
    const newFrontends: NewFrontend[] = [];
    const feAt = new Map<number, Group>();
    for (const i of chFe) {
      const w = frontendWork(info.sets, desired.frontends[i], i);
      if ('block' in w) feAt.set(i, w);
      else newFrontends.push(w);
      gone.frontends.push(st.frontends.groups[i]);
    }
    encodeFrontends(newFrontends, (i, g) => feAt.set(i, g));
    for (const g of feAt.values()) want.frontends.push(g);
    // Groups both gone and wanted (an unchanged object at a changed place) are left alone.
    const d = {} as Record<MapName, GroupDiff>;
    for (const name of ['frontends', 'backends', 'members', 'maglev'] as const) {
      const keep = new Set(gone[name]);
      const added = want[name].filter((g) => !keep.delete(g));
      d[name] = keyedDiff(added, [...keep], SIZES[name], 0);
      // Entries there before and neither removed nor rewritten.
      const s = d[name].stats;
      s.unchanged = st[name].groups.reduce((n, g) => n + g.n, 0) - s.removed - s.updated;
    }
    d.sourceRanges = { put: [], remove: [], stats: { added: 0, updated: 0, removed: 0, unchanged: st.sourceRanges.groups.reduce((n, g) => n + g.n, 0) } };
    this.written = undefined;
    const result = this.write(d);
    // The state as a full apply would leave it: the new groups in the old ones' places, marked as written.
    for (const name of ['frontends', 'backends', 'members', 'maglev'] as const) for (const g of want[name]) g.mark = st[name].mark;
    for (const i of chSets) {
      const set = desired.sets[i];
      const [b, m] = setGroupsAt.get(i) ?? [encodedSets.get(set)!.backends, encodedSets.get(set)!.members];
      st.backends.groups[i] = b;
      st.members.groups[i] = m;
    }
    for (const i of chFe) st.frontends.groups[i] = feAt.get(i)!;
    // The old tables' ids are the new ones' (each changed set kept its table id): each new table takes its old one's place.
    for (const t of oldUse.keys()) info.tables.delete(t);
    for (const [t, u] of newUse) {
      const g = tableAt.get(u.id)!;
      const place = info.tableGroups.get(u.id)!;
      st.maglev.groups[place.index] = g;
      place.group = g;
      info.tables.set(t, { id: u.id, count: u.count, users: u.users });
    }
    this.written = st;
    this.last = { frontends: desired.frontends.slice(), sets: desired.sets.slice(), sourceRanges: desired.sourceRanges, info };
    return result;
  }
}

// --- service conntrack: collection -----------------------------------------------------------------

export interface ServiceCtGcOptions {
  timeouts?: Partial<CtTimeouts>;
}

/**
 * One collection pass over kelp_lb4_ct at monotonic time `nowNs`: a forward entry idle past its
 * state's timeout goes with its reverse entry; a reverse entry whose forward entry is gone goes
 * too. (Both are LRU: this keeps them small, eviction is the safety net.)
 */
export function gcServiceCt(map: BpfMap, nowNs: bigint, opts: ServiceCtGcOptions = {}): { scanned: number; deleted: number } {
  const t: CtTimeouts = { ...DEFAULT_CT_TIMEOUTS, ...opts.timeouts };
  const res = { scanned: 0, deleted: 0 };
  const rows = map.lookupBatch().map(([k, v]) => ({ raw: k, key: tuple4.decode(k), e: lb4CtEntry.decode(v) }));
  res.scanned = rows.length;
  // A flow's reverse entry by the reply tuple it is keyed by, for its last packet that way.
  const id = (saddr: string, sport: number, daddr: string, dport: number, proto: number) => `${saddr}:${sport}>${daddr}:${dport}/${proto}`;
  const reverse = new Map(rows.filter((r) => r.key.dir === LbCtDir.REVERSE).map((r) => [id(r.key.saddr, r.key.sport, r.key.daddr, r.key.dport, r.key.proto), r]));
  const live = new Set<string>();
  const stale: Buffer[] = [];
  for (const { raw, key, e } of rows) {
    if (key.dir !== LbCtDir.FORWARD) continue;
    const rid = id(e.address, e.port, e.flags & LbCtFlag.HAIRPIN ? key.daddr : key.saddr, e.natPort || key.sport, key.proto);
    const rev = reverse.get(rid);
    const lastSeen = rev && rev.e.lastSeen > e.lastSeen ? rev.e.lastSeen : e.lastSeen;
    const asCt = { lastSeen, txFlags: e.tcpFlags, rxFlags: 0, rxPackets: 1n } as Ct4Entry;
    if (nowNs >= ct4Deadline(key.proto, asCt, t)) stale.push(raw);
    else live.add(rid);
  }
  for (const [rid, r] of reverse) if (!live.has(rid)) stale.push(r.raw);
  for (const k of stale) if (map.delete(k)) res.deleted++;
  return res;
}
