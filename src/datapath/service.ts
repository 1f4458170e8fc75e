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
import type { BpfMap } from '../bpf';
import { maglevFirstSlotAtLeast } from '../bpf/maglev';
import { networkAddress, parseCidr, ipToBytes } from '../ipam/ip';
import { applyPuts, applyRemoves, diffStats, isMapFull, MapDiff, MapFullError, readEntries, SyncStats } from './maps/sync';
import { ct4Deadline, Ct4Entry, CtTimeouts, DEFAULT_CT_TIMEOUTS, tuple4 } from './nat';
import { FRONTEND_DROP_NO_LOCAL, FRONTEND_IN_DROP_NO_LOCAL, type BackendSet, type FrontendEntry, type L4Protocol, type ServiceMapsDesired } from './service-types';
import { StructCodec, checkLength, checkUint, ip4FromBuffer, ip4ToBuffer, layout } from './structs';

// --- enums (bpf/lib/lb.h) ---------------------------------------------------------------------

export const LbLimits = {
  LB_FRONTENDS_MAX: 65536,
  LB_BACKENDS_MAX: 131072,
  LB_MAGLEV_MAX: 32768,
  LB_AFFINITY_MAX: 65536,
  LB_SOURCE_RANGES_MAX: 16384,
  LB_CT_MAX: 262144,
  LB_MAGLEV_M_DEFAULT: 4057,
} as const;

/** The Maglev table size compiled in (--maglev-table-size default); see bpf/lib/lb.h for why. */
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
 * Writes a dotted-quad IPv4 address at `off`, as ip4ToBuffer would: the writer encodes tens of
 * thousands of addresses per apply, and the general parser costs several µs each.
 */
function writeIp4(b: Buffer, off: number, ip: string): void {
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= ip.length; i++) {
    const c = i < ip.length ? ip.charCodeAt(i) : 46;
    if (c === 46) {
      if (digits === 0 || value > 255 || part > 3 || (digits > 1 && ip.charCodeAt(i - digits) === 48)) return void ip4ToBuffer(ip).copy(b, off);
      b[off + part++] = value;
      value = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57 && digits < 3) {
      value = value * 10 + (c - 48);
      digits++;
    } else {
      return void ip4ToBuffer(ip).copy(b, off);
    }
  }
  if (part !== 4) ip4ToBuffer(ip).copy(b, off);
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
  /** The in-cluster view (pods, the node); absent when encoding: the outside view's. */
  inSetId?: number;
  inCount?: number;
  inTableId?: number;
}

const feVal = layout('lb4_frontend', 32, [
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
]);

export const lb4Frontend: StructCodec<Lb4Frontend> = {
  ...feVal,
  encode(v) {
    const b = Buffer.alloc(feVal.size);
    const same = v.inSetId === undefined;
    let flags = u16('flags', v.flags);
    // One view for every client: the in-cluster one drops where the outside one does.
    if (same && flags & FRONTEND_DROP_NO_LOCAL) flags |= FRONTEND_IN_DROP_NO_LOCAL;
    b.writeUInt32LE(u32('svcId', v.svcId), feVal.off.svc_id);
    b.writeUInt32LE(u32('setId', v.setId), feVal.off.set_id);
    b.writeUInt16LE(u16('count', v.count), feVal.off.count);
    b.writeUInt16LE(flags, feVal.off.flags);
    b.writeUInt32LE(u32('affinityTimeout', v.affinityTimeout), feVal.off.affinity_timeout);
    b.writeUInt32LE(u32('tableId', v.tableId ?? 0), feVal.off.table_id);
    b.writeUInt32LE(u32('inSetId', same ? v.setId : v.inSetId!), feVal.off.in_set_id);
    b.writeUInt16LE(u16('inCount', same ? v.count : (v.inCount ?? 0)), feVal.off.in_count);
    b.writeUInt32LE(u32('inTableId', same ? (v.tableId ?? 0) : (v.inTableId ?? 0)), feVal.off.in_table_id);
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
    };
  },
};

// --- kelp_lb4_backends, kelp_lb4_members ---------------------------------------------------------

export interface Lb4BackendKey {
  setId: number;
  slot: number;
}

const beKey = layout('lb4_backend_key', 8, [
  ['set_id', 4, 0],
  ['slot', 4, 4],
]);

// The backend and member codecs write into a Buffer given them too: the writer packs a set's
// entries into one allocation (10,000 sets are 40,000 small Buffers otherwise, each its own
// ArrayBuffer for the collector to track).
function writeBackendKey(b: Buffer, v: Lb4BackendKey): Buffer {
  b.writeUInt32LE(u32('setId', v.setId), beKey.off.set_id);
  b.writeUInt32LE(u32('slot', v.slot), beKey.off.slot);
  return b;
}

export const lb4BackendKey: StructCodec<Lb4BackendKey> = {
  ...beKey,
  encode: (v) => writeBackendKey(Buffer.alloc(beKey.size), v),
  decode(b) {
    checkLength(beKey.cName, b, beKey.size);
    return { setId: b.readUInt32LE(beKey.off.set_id), slot: b.readUInt32LE(beKey.off.slot) };
  },
};

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

function writeBackend(b: Buffer, v: Lb4Backend): Buffer {
  writeIp4(b, beVal.off.addr, v.address);
  b.writeUInt16BE(u16('port', v.port), beVal.off.port);
  b.writeUInt8(u8('flags', v.flags), beVal.off.flags);
  b.writeUInt32LE(u32('backendId', v.backendId), beVal.off.backend_id);
  return b;
}

export const lb4Backend: StructCodec<Lb4Backend> = {
  ...beVal,
  encode: (v) => writeBackend(Buffer.alloc(beVal.size), v),
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

const memKey = layout('lb4_member_key', 8, [
  ['set_id', 4, 0],
  ['backend_id', 4, 4],
]);

function writeMemberKey(b: Buffer, v: Lb4MemberKey): Buffer {
  b.writeUInt32LE(u32('setId', v.setId), memKey.off.set_id);
  b.writeUInt32LE(u32('backendId', v.backendId), memKey.off.backend_id);
  return b;
}

export const lb4MemberKey: StructCodec<Lb4MemberKey> = {
  ...memKey,
  encode: (v) => writeMemberKey(Buffer.alloc(memKey.size), v),
  decode(b) {
    checkLength(memKey.cName, b, memKey.size);
    return { setId: b.readUInt32LE(memKey.off.set_id), backendId: b.readUInt32LE(memKey.off.backend_id) };
  },
};

// --- kelp_lb4_maglev ------------------------------------------------------------------------------

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Encoded tables by the compiler's table object (it keeps them across runs): a table is encoded once. */
const encodedTables = new WeakMap<Uint16Array | Uint32Array, { m: number; count: number; buf: Buffer }>();

/** A Maglev table as the map holds it: `m` little-endian u16 slots. */
export function encodeMaglevTable(table: Uint16Array | Uint32Array, m: number, count: number): Buffer {
  const cached = encodedTables.get(table);
  if (cached && cached.m === m && cached.count === count) return cached.buf;
  if (table.length !== m) throw new RangeError(`maglev table has ${table.length} slots, the datapath's size is ${m} (--maglev-table-size)`);
  if (!(table instanceof Uint16Array)) {
    for (let i = 0; i < m; i++) if (table[i] > 0xffff) throw new RangeError(`maglev table slot ${i} names backend ${table[i]} of a set of ${count}`);
  }
  const t16 = table instanceof Uint16Array ? table : Uint16Array.from(table);
  const bad = maglevFirstSlotAtLeast(t16, count);
  if (bad >= 0) throw new RangeError(`maglev table slot ${bad} names backend ${t16[bad]} of a set of ${count}`);
  let buf: Buffer;
  if (LITTLE_ENDIAN) {
    // A view, not a copy: tables are not changed once made (the compiler makes new ones).
    buf = Buffer.from(t16.buffer, t16.byteOffset, t16.byteLength);
  } else {
    buf = Buffer.alloc(2 * m);
    for (let i = 0; i < m; i++) buf.writeUInt16LE(t16[i], 2 * i);
  }
  encodedTables.set(table, { m, count, buf });
  return buf;
}

export function decodeMaglevTable(b: Buffer): Uint16Array {
  const t = new Uint16Array(b.length >> 1);
  for (let i = 0; i < t.length; i++) t[i] = b.readUInt16LE(2 * i);
  return t;
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
}

const ctVal = layout('lb4_ct_entry', 40, [
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
    };
  },
};

export const LB_STRUCTS: ReadonlyArray<StructCodec<unknown>> = [
  lb4FrontendKey,
  lb4Frontend,
  lb4BackendKey,
  lb4Backend,
  lb4MemberKey,
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

type Entries = Array<readonly [Buffer, Buffer]>;

/**
 * The desired content as groups of entries, by map: a group is what one object of the desired
 * content encodes to (a set's backends, its members, a table, a frontend, a service's source
 * ranges), the same array while the object is the same.
 */
interface EncodedService {
  frontends: Entries[];
  backends: Entries[];
  members: Entries[];
  maglev: Entries[];
  sourceRanges: Entries[];
}

const MAP_ORDER = ['backends', 'members', 'maglev', 'sourceRanges'] as const;

export interface ServiceWriterOptions {
  /** The datapath's Maglev table size (--maglev-table-size); default the size compiled in. */
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
  /** Of which writing new and changed Maglev tables (8 KiB each at the default size). */
  tablesMs: number;
}

const ONE = Buffer.from([1]);

// Encodings remembered by the desired content's objects: the compiler hands the same objects back
// for what did not change (and builds new ones for what did), so a run after one change encodes one
// Service, not 10,000. Objects given to apply() must not be changed afterwards.
const encodedSets = new WeakMap<BackendSet, { setId: number; backends: Entries; members: Entries }>();
const encodedFrontends = new WeakMap<FrontendEntry, { tableId: number; inTableId: number; group: Entries }>();
const tableGroups = new WeakMap<Uint16Array | Uint32Array, { tableId: number; count: number; group: Entries }>();
const encodedRanges = new WeakMap<string[], { svcId: number; entries: Entries }>();
const tableKeys = new Map<number, Buffer>();

function setEntries(set: BackendSet): { backends: Entries; members: Entries } {
  const memo = encodedSets.get(set);
  if (memo && memo.setId === set.setId) return memo;
  const backends: Entries = [];
  const members: Entries = [];
  // One zeroed slab for every entry of the set (pads stay zero), cut into views.
  const per = beKey.size + beVal.size + memKey.size + 4;
  const slab = Buffer.alloc(per * set.backends.length);
  set.backends.forEach((be, slot) => {
    let at = slot * per;
    const cut = (n: number) => slab.subarray(at, (at += n));
    backends.push([writeBackendKey(cut(beKey.size), { setId: set.setId, slot }), writeBackend(cut(beVal.size), be)]);
    const member = cut(memKey.size);
    const value = cut(4);
    value.writeUInt32LE(slot, 0);
    members.push([writeMemberKey(member, { setId: set.setId, backendId: be.backendId }), value]);
  });
  encodedSets.set(set, { setId: set.setId, backends, members });
  return { backends, members };
}

function tableKey(tableId: number): Buffer {
  let k = tableKeys.get(tableId);
  if (!k) {
    k = u32Value(tableId);
    // Bounded by the map's size: table ids are set ids in use.
    if (tableKeys.size < LbLimits.LB_MAGLEV_MAX * 2) tableKeys.set(tableId, k);
  }
  return k;
}

/**
 * The desired content as map entries; a set named twice, or a frontend whose count is not its
 * set's, is an error. Sets handed the same table object (the compiler shares one among the ports
 * of a Service over the same pods) share one kelp_lb4_maglev entry, keyed by the first such set's
 * id: a 10,000-service write is mostly its tables.
 */
export function encodeServiceDesired(desired: ServiceMapsDesired, maglevTableSize: number): EncodedService {
  const out: EncodedService = { frontends: [], backends: [], members: [], maglev: [], sourceRanges: [] };
  const sets = new Map<number, { count: number; tableId: number }>();
  const tableIds = new Map<Uint16Array, { id: number; count: number }>();
  for (const set of desired.sets) {
    if (sets.has(set.setId)) throw new Error(`backend set ${set.setId} is listed twice`);
    const count = set.backends.length;
    const enc = setEntries(set);
    out.backends.push(enc.backends);
    out.members.push(enc.members);
    let tableId = 0;
    if (count > 1 && set.maglev) {
      const shared = tableIds.get(set.maglev);
      if (shared?.count === count) {
        tableId = shared.id;
      } else {
        tableId = set.setId;
        tableIds.set(set.maglev, { id: tableId, count });
        let memo = tableGroups.get(set.maglev);
        if (memo?.tableId !== tableId || memo.count !== count) {
          memo = { tableId, count, group: [[tableKey(tableId), encodeMaglevTable(set.maglev, maglevTableSize, count)]] };
          tableGroups.set(set.maglev, memo);
        }
        out.maglev.push(memo.group);
      }
    }
    sets.set(set.setId, { count, tableId });
  }
  // The table of one of a frontend's views (outside, in-cluster), its count checked against the set's.
  const viewTable = (fe: FrontendEntry, setId: number, count: number, view: string) => {
    const set = sets.get(setId);
    if (count > 0 && set?.count !== count) {
      throw new Error(`frontend ${fe.address}:${fe.port}/${fe.protocol} names set ${setId} with ${count} backends in its ${view} view; the set has ${set?.count ?? 'no entry'}`);
    }
    return count > 1 ? (set?.tableId ?? 0) : 0;
  };
  for (const fe of desired.frontends) {
    const tableId = viewTable(fe, fe.setId, fe.count, 'outside');
    const inTableId = fe.inSetId === undefined ? tableId : viewTable(fe, fe.inSetId, fe.inCount ?? 0, 'in-cluster');
    const memo = encodedFrontends.get(fe);
    if (memo?.tableId === tableId && memo.inTableId === inTableId) {
      out.frontends.push(memo.group);
      continue;
    }
    const entry = [lb4FrontendKey.encode(fe), lb4Frontend.encode({ ...fe, tableId, ...(fe.inSetId === undefined ? {} : { inTableId }) })] as const;
    const group: Entries = [entry];
    encodedFrontends.set(fe, { tableId, inTableId, group });
    out.frontends.push(group);
  }
  for (const [svcId, cidrs] of desired.sourceRanges) {
    const memo = encodedRanges.get(cidrs);
    if (memo?.svcId === svcId) {
      out.sourceRanges.push(memo.entries);
      continue;
    }
    const entries: Entries = cidrs.map((cidr) => [lb4SourceRangeKey.encode({ svcId, cidr }), ONE] as const);
    encodedRanges.set(cidrs, { svcId, entries });
    out.sourceRanges.push(entries);
  }
  return out;
}

function u32Value(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0, 0);
  return b;
}

/** A map's content as the writer last left it: key bytes (latin1) → entry. */
type MapIndex = Map<string, readonly [Buffer, Buffer]>;

/** Key Buffer → its latin1 text, for the Buffers remembered above: one conversion per key. */
const keyIds = new WeakMap<Buffer, string>();

function keyId(k: Buffer): string {
  let id = keyIds.get(k);
  if (id === undefined) {
    id = k.toString('latin1');
    keyIds.set(k, id);
  }
  return id;
}

function indexOf(entries: Entries): MapIndex {
  const index: MapIndex = new Map();
  for (const e of entries) index.set(keyId(e[0]), e);
  return index;
}

/** A map as the writer last left it: the groups written, and every entry by key. */
interface MapState {
  groups: Set<Entries>;
  index: MapIndex;
}

/**
 * What to put and remove so a map holding `before` holds the groups of `want`. A group written
 * last time and wanted again is unchanged without looking at its entries: after one change among
 * 10,000 Services only the changed groups are compared entry by entry. `before` as read back from
 * the map (no groups) compares every entry. A key two groups name is an error.
 */
function diffGroups(before: MapState, want: Entries[]): { diff: MapDiff; state: MapState } {
  const groups = new Set(want);
  if (groups.size !== want.length) throw new Error('desired content names one group of entries twice');
  const index = before.index;
  // Entries of groups no longer wanted: removed unless a new group puts their key again.
  const stale: MapIndex = new Map();
  for (const g of before.groups) {
    if (groups.has(g)) continue;
    for (const e of g) {
      const id = keyId(e[0]);
      index.delete(id);
      stale.set(id, e);
    }
  }
  if (before.groups.size === 0) for (const [id, e] of index) stale.set(id, e);
  if (before.groups.size === 0) index.clear();
  const put: Array<readonly [Buffer, Buffer]> = [];
  let added = 0;
  let updated = 0;
  for (const g of want) {
    if (before.groups.has(g)) continue;
    for (const e of g) {
      const id = keyId(e[0]);
      if (index.has(id)) throw new Error(`desired content names key ${e[0].toString('hex')} twice`);
      index.set(id, e);
      const old = stale.get(id);
      added++;
      if (!old) {
        put.push(e);
        continue;
      }
      stale.delete(id);
      if (old[1] === e[1] || old[1].equals(e[1])) continue;
      updated++;
      put.push(e);
    }
  }
  const remove = Array.from(stale.values(), (e) => e[0]);
  return { diff: { put, remove, unchanged: index.size - put.length, updated }, state: { groups, index } };
}

/** A map's entries, in batches where the map has batch operations (an LPM trie has none). */
function readBack(map: BpfMap): Entries {
  try {
    return map.lookupBatch();
  } catch {
    return readEntries(map);
  }
}

/** Puts a diff's entries: one batch call (a syscall per ~thousand entries rather than per entry). */
function putBatch(map: BpfMap, diff: MapDiff, wanted: number): void {
  if (diff.put.length === 0) return;
  try {
    map.updateBatch(diff.put);
  } catch (e) {
    if (isMapFull(e)) throw new MapFullError(map.name, wanted, map.maxEntries, e);
    // LPM tries have no batch operations (EINVAL/ENOTSUPP): entry by entry.
    applyPuts(map, diff, wanted);
  }
}

/**
 * putBatch for large values (Maglev tables): entries whose values lie back to back in one buffer
 * (the compiler fills its tables in shared chunks, in set order) go in one call each run, the
 * values written from where they lie.
 */
function putRuns(map: BpfMap, diff: MapDiff, wanted: number): void {
  const put = diff.put;
  try {
    for (let i = 0; i < put.length; ) {
      const first = put[i][1];
      let j = i + 1;
      while (j < put.length && put[j][1].buffer === first.buffer && put[j][1].byteOffset === first.byteOffset + (j - i) * first.length) j++;
      const values = Buffer.from(first.buffer, first.byteOffset, (j - i) * first.length);
      map.updateBatchPacked(Buffer.concat(put.slice(i, j).map((e) => e[0])), values, j - i);
      i = j;
    }
  } catch (e) {
    if (isMapFull(e)) throw new MapFullError(map.name, wanted, map.maxEntries, e);
    throw e;
  }
}

function removeBatch(map: BpfMap, diff: MapDiff): void {
  if (diff.remove.length === 0) return;
  try {
    map.deleteBatch(diff.remove);
  } catch {
    applyRemoves(map, diff);
  }
}

/**
 * The one writer of the load-balancing maps. apply() makes them hold exactly `desired`, make before
 * break:
 *   1. new and changed backends, members, Maglev tables and source ranges;
 *   2. new and changed frontends (a frontend now names only complete sets);
 *   3. stale frontends, then stale source ranges, tables, members and backends.
 * It diffs against what it wrote last; the first apply, one with `resync`, and the one after a
 * failed apply read the maps back. A MapFullError leaves a superset of the old and new content.
 */
export class ServiceWriter {
  readonly maglevTableSize: number;
  /** What the maps hold after the last apply, by map: absent at first, after a failure. */
  private written?: Record<keyof EncodedService, MapState>;

  constructor(
    readonly maps: ServiceMaps,
    opts: ServiceWriterOptions = {},
  ) {
    this.maglevTableSize = opts.maglevTableSize ?? DEFAULT_LB_MAGLEV_TABLE_SIZE;
    const tableBytes = 2 * this.maglevTableSize;
    if (maps.maglev.valueLen !== tableBytes) {
      throw new Error(
        `kelp_lb4_maglev holds tables of ${maps.maglev.valueLen / 2} slots, not ${this.maglevTableSize}: load the objects with the same --maglev-table-size`,
      );
    }
  }

  apply(desired: ServiceMapsDesired, opts: { resync?: boolean } = {}): ApplyServiceResult {
    const want = encodeServiceDesired(desired, this.maglevTableSize);
    const current = opts.resync ? undefined : this.written;
    this.written = undefined;
    const have = (name: keyof EncodedService): MapState => current?.[name] ?? { groups: new Set(), index: indexOf(readBack(this.maps[name])) };
    const step = (name: keyof EncodedService) => diffGroups(have(name), want[name]);
    const d = { frontends: step('frontends'), backends: step('backends'), members: step('members'), maglev: step('maglev'), sourceRanges: step('sourceRanges') };
    const t0 = process.hrtime.bigint();
    let tablesNs = 0n;
    for (const name of MAP_ORDER) {
      const t = process.hrtime.bigint();
      (name === 'maglev' ? putRuns : putBatch)(this.maps[name], d[name].diff, d[name].state.index.size);
      if (name === 'maglev') tablesNs += process.hrtime.bigint() - t;
    }
    putBatch(this.maps.frontends, d.frontends.diff, d.frontends.state.index.size);
    removeBatch(this.maps.frontends, d.frontends.diff);
    for (const name of [...MAP_ORDER].reverse()) removeBatch(this.maps[name], d[name].diff);
    const writeMs = Number(process.hrtime.bigint() - t0) / 1e6;
    this.written = { frontends: d.frontends.state, backends: d.backends.state, members: d.members.state, maglev: d.maglev.state, sourceRanges: d.sourceRanges.state };
    return {
      frontends: diffStats(d.frontends.diff),
      backends: diffStats(d.backends.diff),
      members: diffStats(d.members.diff),
      maglev: diffStats(d.maglev.diff),
      sourceRanges: diffStats(d.sourceRanges.diff),
      writeMs,
      tablesMs: Number(tablesNs) / 1e6,
    };
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
    const rid = id(e.address, e.port, e.flags & LbCtFlag.HAIRPIN ? key.daddr : key.saddr, key.sport, key.proto);
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
