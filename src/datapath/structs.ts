// Codecs for every struct shared with the BPF programs (bpf/lib/*.h). Each codec lists its C
// fields with offsets and sizes; test/unit/btf-layout.test.ts checks that list against the BTF of
// every object that uses the struct, and encode/decode only use offsets from that list.
// Byte order: host (little-endian) for counters and ids, network order for addresses and ports.
import { ipToBytes, tryParseIp } from '../ipam/ip';
import { formatMac, parseMac } from '../netlink/mac';

export interface StructField {
  name: string;
  offset: number;
  size: number;
}

export interface StructCodec<T> {
  /** The C struct's name, as in BTF. */
  cName: string;
  size: number;
  fields: readonly StructField[];
  encode(value: T): Buffer;
  decode(buf: Buffer): T;
}

/**
 * Builds a field table from C declaration order, for every codec of a struct shared with C
 * (here and in nat.ts). The C structs spell out their padding, so the fields must tile the struct
 * exactly: anything else is a typo here. `off` is keyed by the declared names only.
 */
export function layout<const N extends string>(
  cName: string,
  size: number,
  decl: ReadonlyArray<readonly [name: N, size: number, offset: number]>,
): { cName: string; size: number; fields: readonly StructField[]; off: Record<N, number> } {
  const fields = decl.map(([name, fieldSize, offset]) => ({ name, offset, size: fieldSize }));
  const off = {} as Record<N, number>;
  let end = 0;
  for (const f of fields) {
    if (f.offset !== end) throw new Error(`${cName}.${f.name}: offset ${f.offset}, expected ${end}`);
    end = f.offset + f.size;
    off[f.name] = f.offset;
  }
  if (end !== size) throw new Error(`${cName}: fields end at ${end}, size is ${size}`);
  return { cName, size, fields, off };
}

/** Throws unless `buf` holds at least the `size` bytes of struct `cName`. */
export function checkLength(cName: string, buf: Buffer, size: number): void {
  if (buf.length < size) throw new RangeError(`${cName}: need ${size} bytes, got ${buf.length}`);
}

const UINT_MAX = { 1: 0xff, 2: 0xffff, 4: 0xffffffff } as const;

/** `v`, if it fits an unsigned C field of `bytes` bytes; else a RangeError naming `name`. */
export function checkUint(name: string, v: number, bytes: 1 | 2 | 4): number {
  if (!Number.isInteger(v) || v < 0 || v > UINT_MAX[bytes]) throw new RangeError(`${name} must be a u${bytes * 8}, got ${v}`);
  return v;
}

/** Network order, as the C structs hold it. */
export function ip4ToBuffer(ip: string): Buffer {
  const addr = tryParseIp(ip);
  if (addr?.family !== 4) throw new TypeError(`invalid IPv4 address ${JSON.stringify(ip)}`);
  return ipToBytes(addr);
}

export function ip4FromBuffer(buf: Buffer, offset = 0): string {
  return Array.from(buf.subarray(offset, offset + 4)).join('.');
}

const u32 = (name: string, v: number) => checkUint(name, v, 4);

// enum kelp_dir (bpf/lib/common.h)
export const Direction = { FROM_POD: 1, TO_POD: 2 } as const;
export type Direction = (typeof Direction)[keyof typeof Direction];

// enum kelp_event_type, enum kelp_trace_point, enum kelp_event_class, enum kelp_flow_close
// (bpf/lib/events.h)
export const EventType = { DROP: 1, TRACE: 2, AUDIT: 3, FLOW_START: 4, FLOW_END: 5 } as const;
/** kelp_event_stats and kelp_event_config index: drop (drops and audits), flow, trace. */
export const EventClassIndex = { drop: 0, flow: 1, trace: 2 } as const;
export const FlowClose = { OPEN: 0, FIN: 1, RST: 2, TIMEOUT: 3, REVOKED: 4 } as const;
export const TracePoint = { NONE: 0, TO_ENDPOINT: 1, ARP_REPLY: 2, TO_OVERLAY: 3 } as const;

// --- kelp_endpoints -------------------------------------------------------------------------

export interface EndpointKey {
  ip4: string;
}

// IPv4 only: the bare address (IPv6 endpoints will get a map of their own, kelp_endpoints6).
const epKey = layout('endpoint_key', 4, [['ip4', 4, 0]]);

export const endpointKey: StructCodec<EndpointKey> = {
  ...epKey,
  encode(v) {
    const b = Buffer.alloc(epKey.size);
    ip4ToBuffer(v.ip4).copy(b, epKey.off.ip4);
    return b;
  },
  decode(b) {
    checkLength(epKey.cName, b, epKey.size);
    return { ip4: ip4FromBuffer(b, epKey.off.ip4) };
  },
};

export interface EndpointInfo {
  /** Host-side veth. */
  ifindex: number;
  /** The agent's endpoint id; never 0 (0 means "not attributed" in metrics and events). */
  epId: number;
  flags: number;
  /** Pod-side veth MAC. */
  mac: string;
  /** Host-side veth MAC, which the pod sees as its gateway's. */
  nodeMac: string;
}

const epInfo = layout('endpoint_info', 24, [
  ['ifindex', 4, 0],
  ['ep_id', 4, 4],
  ['flags', 4, 8],
  ['mac', 6, 12],
  ['node_mac', 6, 18],
]);

export const endpointInfo: StructCodec<EndpointInfo> = {
  ...epInfo,
  encode(v) {
    if (v.epId === 0) throw new RangeError('endpoint_info: ep_id 0 is reserved for unattributed traffic');
    const b = Buffer.alloc(epInfo.size);
    b.writeUInt32LE(u32('ifindex', v.ifindex), epInfo.off.ifindex);
    b.writeUInt32LE(u32('epId', v.epId), epInfo.off.ep_id);
    b.writeUInt32LE(u32('flags', v.flags), epInfo.off.flags);
    parseMac(v.mac).copy(b, epInfo.off.mac);
    parseMac(v.nodeMac).copy(b, epInfo.off.node_mac);
    return b;
  },
  decode(b) {
    checkLength(epInfo.cName, b, epInfo.size);
    return {
      ifindex: b.readUInt32LE(epInfo.off.ifindex),
      epId: b.readUInt32LE(epInfo.off.ep_id),
      flags: b.readUInt32LE(epInfo.off.flags),
      mac: formatMac(b.subarray(epInfo.off.mac, epInfo.off.mac + 6)),
      nodeMac: formatMac(b.subarray(epInfo.off.node_mac, epInfo.off.node_mac + 6)),
    };
  },
};

// --- kelp_endpoint_cache -------------------------------------------------------------------
// A direct-mapped cache in front of kelp_endpoints (bpf/lib/endpoint.h); endpoints.ts writes it.

// enum kelp_endpoint_cache_params
export const EP_CACHE_BITS = 14;
export const EP_CACHE_MUL = 0x61c88647;
export const EP_CACHE_SLOTS = 1 << EP_CACHE_BITS;

/** The slot of an IPv4 address: endpoint4_slot() in C, hash_32 of the address in host order. */
export function endpointCacheIndex(ip4: string): number {
  return Math.imul(ip4ToBuffer(ip4).readUInt32BE(0), EP_CACHE_MUL) >>> (32 - EP_CACHE_BITS);
}

export function endpointCacheKey(index: number): Buffer {
  if (!Number.isInteger(index) || index < 0 || index >= EP_CACHE_SLOTS) throw new RangeError(`kelp_endpoint_cache has slots 0..${EP_CACHE_SLOTS - 1}, got ${index}`);
  const b = Buffer.alloc(4);
  b.writeUInt32LE(index);
  return b;
}

export interface EndpointSlot {
  ip4: string;
  /** Only a live slot is read by the programs; see endpoints.ts for the write protocol. */
  live: boolean;
  info: EndpointInfo;
}

const epSlot = layout('endpoint_slot', 32, [
  ['ip4', 4, 0],
  ['live', 1, 4],
  ['pad', 3, 5],
  ['info', epInfo.size, 8],
]);

/** Byte offset of `live`: the one byte a slot's state changes by. */
export const EP_SLOT_LIVE_OFFSET = epSlot.off.live;

export const endpointSlot: StructCodec<EndpointSlot> = {
  ...epSlot,
  encode(v) {
    const b = Buffer.alloc(epSlot.size);
    ip4ToBuffer(v.ip4).copy(b, epSlot.off.ip4);
    b.writeUInt8(v.live ? 1 : 0, epSlot.off.live);
    endpointInfo.encode(v.info).copy(b, epSlot.off.info);
    return b;
  },
  decode(b) {
    checkLength(epSlot.cName, b, epSlot.size);
    return {
      ip4: ip4FromBuffer(b, epSlot.off.ip4),
      live: b.readUInt8(epSlot.off.live) !== 0,
      info: endpointInfo.decode(b.subarray(epSlot.off.info, epSlot.off.info + epInfo.size)),
    };
  },
};

// --- kelp_metrics, kelp_metrics_fwd --------------------------------------------------------
// A counter (ep, dir, reason) lives in kelp_metrics_fwd when reason is 0 and ep < METRICS_FWD_EPS,
// else in kelp_metrics; readers add both maps up (bpf/lib/metrics.h).

// enum kelp_metrics_limits
export const METRICS_FWD_EPS = 4096;

/** Index into kelp_metrics_fwd of the forwarded counter of (epId, dir). */
export function metricsFwdIndex(epId: number, dir: Direction): number {
  if (!Number.isInteger(epId) || epId < 0 || epId >= METRICS_FWD_EPS) {
    throw new RangeError(`kelp_metrics_fwd holds ep_id 0..${METRICS_FWD_EPS - 1}, got ${epId}`);
  }
  if (dir !== Direction.FROM_POD && dir !== Direction.TO_POD) throw new RangeError(`bad direction ${dir}`);
  return epId * 2 + dir - 1;
}

export function metricsFwdKey(epId: number, dir: Direction): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(metricsFwdIndex(epId, dir));
  return b;
}

/** The (epId, dir) a kelp_metrics_fwd index counts. */
export function metricsFwdSlot(index: number): { epId: number; dir: Direction } {
  if (!Number.isInteger(index) || index < 0 || index >= METRICS_FWD_EPS * 2) throw new RangeError(`bad index ${index}`);
  return { epId: Math.floor(index / 2), dir: ((index % 2) + 1) as Direction };
}

export interface MetricsKey {
  /** 0: not attributed to an endpoint. */
  epId: number;
  dir: Direction;
  /** 0 forwarded, negative: a DropReason, positive: a MetricsReason (passed, counted apart). */
  reason: number;
}

const mKey = layout('metrics_key', 8, [
  ['ep_id', 4, 0],
  ['dir', 1, 4],
  ['pad', 1, 5],
  ['reason', 2, 6],
]);

export const metricsKey: StructCodec<MetricsKey> = {
  ...mKey,
  encode(v) {
    const b = Buffer.alloc(mKey.size);
    b.writeUInt32LE(u32('epId', v.epId), mKey.off.ep_id);
    b.writeUInt8(v.dir, mKey.off.dir);
    b.writeInt16LE(v.reason, mKey.off.reason);
    return b;
  },
  decode(b) {
    checkLength(mKey.cName, b, mKey.size);
    return {
      epId: b.readUInt32LE(mKey.off.ep_id),
      dir: b.readUInt8(mKey.off.dir) as Direction,
      reason: b.readInt16LE(mKey.off.reason),
    };
  },
};

export interface MetricsValue {
  packets: bigint;
  bytes: bigint;
}

const mValue = layout('metrics_value', 16, [
  ['packets', 8, 0],
  ['bytes', 8, 8],
]);

export const metricsValue: StructCodec<MetricsValue> = {
  ...mValue,
  encode(v) {
    const b = Buffer.alloc(mValue.size);
    b.writeBigUInt64LE(v.packets, mValue.off.packets);
    b.writeBigUInt64LE(v.bytes, mValue.off.bytes);
    return b;
  },
  decode(b) {
    checkLength(mValue.cName, b, mValue.size);
    return { packets: b.readBigUInt64LE(mValue.off.packets), bytes: b.readBigUInt64LE(mValue.off.bytes) };
  },
};

/** Sums a per-CPU lookup result (one 8-byte-aligned slot per possible CPU). */
export function sumPerCpuMetrics(buf: Buffer, numCpus: number): MetricsValue {
  const slot = Math.ceil(mValue.size / 8) * 8;
  if (buf.length < slot * numCpus) throw new RangeError(`per-CPU metrics: need ${slot * numCpus} bytes, got ${buf.length}`);
  const total = { packets: 0n, bytes: 0n };
  for (let cpu = 0; cpu < numCpus; cpu++) {
    const v = metricsValue.decode(buf.subarray(cpu * slot, cpu * slot + mValue.size));
    total.packets += v.packets;
    total.bytes += v.bytes;
  }
  return total;
}

export interface MetricsEntry {
  key: MetricsKey;
  value: MetricsValue;
}

/**
 * The counters of both maps as one table, from their [key, value] pairs (BpfMap.lookupBatch()):
 * per-CPU values summed, the two maps added up, zero counters left out, sorted by key.
 */
export function mergeMetrics(
  hash: ReadonlyArray<readonly [Buffer, Buffer]>,
  fwd: ReadonlyArray<readonly [Buffer, Buffer]>,
  numCpus: number,
): MetricsEntry[] {
  const table = new Map<string, MetricsEntry>();
  const add = (key: MetricsKey, value: Buffer) => {
    const v = sumPerCpuMetrics(value, numCpus);
    if (v.packets === 0n && v.bytes === 0n) return;
    const id = `${key.epId}/${key.dir}/${key.reason}`;
    const entry = table.get(id);
    if (entry) {
      entry.value.packets += v.packets;
      entry.value.bytes += v.bytes;
    } else {
      table.set(id, { key, value: v });
    }
  };
  for (const [k, v] of hash) add(metricsKey.decode(k), v);
  for (const [k, v] of fwd) add({ ...metricsFwdSlot(k.readUInt32LE(0)), reason: 0 }, v);
  return [...table.values()].sort(
    (a, b) => a.key.epId - b.key.epId || a.key.dir - b.key.dir || b.key.reason - a.key.reason,
  );
}

// --- kelp_events ----------------------------------------------------------------------------

/** struct kelp_event_hdr: the first 16 bytes of every kelp_events record. */
export interface EventHeader {
  version: number;
  type: number;
  /** Of the whole record. */
  size: number;
  cpu: number;
  tsNs: bigint;
}

const evHdr = layout('kelp_event_hdr', 16, [
  ['version', 1, 0],
  ['type', 1, 1],
  ['size', 2, 2],
  ['cpu', 4, 4],
  ['ts_ns', 8, 8],
]);

export const kelpEventHdr: StructCodec<EventHeader> = {
  ...evHdr,
  encode(v) {
    const b = Buffer.alloc(evHdr.size);
    b.writeUInt8(checkUint('version', v.version, 1), evHdr.off.version);
    b.writeUInt8(checkUint('type', v.type, 1), evHdr.off.type);
    b.writeUInt16LE(checkUint('size', v.size, 2), evHdr.off.size);
    b.writeUInt32LE(u32('cpu', v.cpu), evHdr.off.cpu);
    b.writeBigUInt64LE(v.tsNs, evHdr.off.ts_ns);
    return b;
  },
  decode(b) {
    checkLength(evHdr.cName, b, evHdr.size);
    return {
      version: b.readUInt8(evHdr.off.version),
      type: b.readUInt8(evHdr.off.type),
      size: b.readUInt16LE(evHdr.off.size),
      cpu: b.readUInt32LE(evHdr.off.cpu),
      tsNs: b.readBigUInt64LE(evHdr.off.ts_ns),
    };
  },
};

/** struct kelp_event (DROP, AUDIT, TRACE), header included. */
export interface RawEvent {
  tsNs: bigint;
  type: number;
  /** Defaults to the CPU 0 when encoding. */
  cpu?: number;
  dir: number;
  reason: number;
  ifindex: number;
  targetIfindex: number;
  epId: number;
  len: number;
  ethProto: number;
  proto: number;
  tracePoint: number;
  /** For ARP: sender and target protocol addresses. */
  saddr: string;
  daddr: string;
  /** Host order. For ICMP: sport = type and code bytes, dport = echo identifier. */
  sport: number;
  dport: number;
  /** Policy drops and audits: the decision (struct kelp_event_policy); zero in other events. */
  policyId: number;
  rule: number;
  /** enum policy_tier, enum policy_action (src/datapath/policy.ts). */
  tier: number;
  action: number;
}

/** EVENT_VERSION of src/datapath/flow-types.ts, as KELP_EVENT_VERSION in bpf/lib/events.h. */
export const KELP_EVENT_VERSION = 2;

const evPolicy = layout('kelp_event_policy', 8, [
  ['policy_id', 4, 0],
  ['rule', 2, 4],
  ['tier', 1, 6],
  ['action', 1, 7],
]);

const ev = layout('kelp_event', 64, [
  ['hdr', evHdr.size, 0],
  ['dir', 1, 16],
  ['trace_point', 1, 17],
  ['reason', 2, 18],
  ['ifindex', 4, 20],
  ['target_ifindex', 4, 24],
  ['ep_id', 4, 28],
  ['len', 4, 32],
  ['eth_proto', 2, 36],
  ['proto', 1, 38],
  ['pad1', 1, 39],
  ['saddr', 4, 40],
  ['daddr', 4, 44],
  ['sport', 2, 48],
  ['dport', 2, 50],
  ['policy', evPolicy.size, 52],
  ['pad2', 4, 60],
]);

type PolicyFields = Pick<RawEvent, 'policyId' | 'rule' | 'tier' | 'action'>;

/** struct kelp_event_policy, on its own for the layout test; the event codecs read it in place. */
export const kelpEventPolicy: StructCodec<PolicyFields> = {
  ...evPolicy,
  encode(v) {
    const b = Buffer.alloc(evPolicy.size);
    b.writeUInt32LE(u32('policyId', v.policyId), evPolicy.off.policy_id);
    b.writeUInt16LE(checkUint('rule', v.rule, 2), evPolicy.off.rule);
    b.writeUInt8(checkUint('tier', v.tier, 1), evPolicy.off.tier);
    b.writeUInt8(checkUint('action', v.action, 1), evPolicy.off.action);
    return b;
  },
  decode(b) {
    checkLength(evPolicy.cName, b, evPolicy.size);
    return {
      policyId: b.readUInt32LE(evPolicy.off.policy_id),
      rule: b.readUInt16LE(evPolicy.off.rule),
      tier: b.readUInt8(evPolicy.off.tier),
      action: b.readUInt8(evPolicy.off.action),
    };
  },
};

function policyAt(b: Buffer, off: number): PolicyFields {
  return kelpEventPolicy.decode(b.subarray(off, off + evPolicy.size));
}

export const kelpEvent: StructCodec<RawEvent> = {
  ...ev,
  encode(v) {
    const b = Buffer.alloc(ev.size);
    kelpEventHdr.encode({ version: KELP_EVENT_VERSION, type: v.type, size: ev.size, cpu: v.cpu ?? 0, tsNs: v.tsNs }).copy(b, ev.off.hdr);
    b.writeUInt8(v.dir, ev.off.dir);
    b.writeUInt8(v.tracePoint, ev.off.trace_point);
    b.writeInt16LE(v.reason, ev.off.reason);
    b.writeUInt32LE(v.ifindex, ev.off.ifindex);
    b.writeUInt32LE(v.targetIfindex, ev.off.target_ifindex);
    b.writeUInt32LE(v.epId, ev.off.ep_id);
    b.writeUInt32LE(v.len, ev.off.len);
    b.writeUInt16BE(v.ethProto, ev.off.eth_proto);
    b.writeUInt8(v.proto, ev.off.proto);
    ip4ToBuffer(v.saddr).copy(b, ev.off.saddr);
    ip4ToBuffer(v.daddr).copy(b, ev.off.daddr);
    b.writeUInt16BE(v.sport, ev.off.sport);
    b.writeUInt16BE(v.dport, ev.off.dport);
    kelpEventPolicy.encode(v).copy(b, ev.off.policy);
    return b;
  },
  /** The record's header is not checked here: decodeEvent does (version, type, size). */
  decode(b) {
    checkLength(ev.cName, b, ev.size);
    const h = kelpEventHdr.decode(b);
    return {
      tsNs: h.tsNs,
      type: h.type,
      cpu: h.cpu,
      dir: b.readUInt8(ev.off.dir),
      reason: b.readInt16LE(ev.off.reason),
      ifindex: b.readUInt32LE(ev.off.ifindex),
      targetIfindex: b.readUInt32LE(ev.off.target_ifindex),
      epId: b.readUInt32LE(ev.off.ep_id),
      len: b.readUInt32LE(ev.off.len),
      ethProto: b.readUInt16BE(ev.off.eth_proto),
      proto: b.readUInt8(ev.off.proto),
      tracePoint: b.readUInt8(ev.off.trace_point),
      saddr: ip4FromBuffer(b, ev.off.saddr),
      daddr: ip4FromBuffer(b, ev.off.daddr),
      sport: b.readUInt16BE(ev.off.sport),
      dport: b.readUInt16BE(ev.off.dport),
      ...policyAt(b, ev.off.policy),
    };
  },
};

/** struct kelp_flow_event (FLOW_START, FLOW_END), header included. */
export interface RawFlowEvent extends PolicyFields {
  tsNs: bigint;
  type: number;
  cpu?: number;
  /** The originator and the responder (a service flow's backend). Ports host order. */
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
  /** enum policy_dir of the side whose verdict the flow keeps. */
  dir: number;
  /** enum kelp_flow_close (FlowClose). */
  closedBy: number;
  epId: number;
  svcId: number;
  svcAddr: string;
  svcPort: number;
  ifindex: number;
  /** kelp_pct4's clock (coarse CLOCK_MONOTONIC ns). */
  created: bigint;
  txPackets: bigint;
  txBytes: bigint;
  rxPackets: bigint;
  rxBytes: bigint;
}

const flowEv = layout('kelp_flow_event', 104, [
  ['hdr', evHdr.size, 0],
  ['saddr', 4, 16],
  ['daddr', 4, 20],
  ['sport', 2, 24],
  ['dport', 2, 26],
  ['proto', 1, 28],
  ['dir', 1, 29],
  ['closed_by', 1, 30],
  ['pad1', 1, 31],
  ['ep_id', 4, 32],
  ['policy', evPolicy.size, 36],
  ['svc_id', 4, 44],
  ['svc_addr', 4, 48],
  ['svc_port', 2, 52],
  ['pad2', 2, 54],
  ['ifindex', 4, 56],
  ['pad3', 4, 60],
  ['created', 8, 64],
  ['tx_packets', 8, 72],
  ['tx_bytes', 8, 80],
  ['rx_packets', 8, 88],
  ['rx_bytes', 8, 96],
]);

export const kelpFlowEvent: StructCodec<RawFlowEvent> = {
  ...flowEv,
  encode(v) {
    const b = Buffer.alloc(flowEv.size);
    const o = flowEv.off;
    kelpEventHdr.encode({ version: KELP_EVENT_VERSION, type: v.type, size: flowEv.size, cpu: v.cpu ?? 0, tsNs: v.tsNs }).copy(b, o.hdr);
    ip4ToBuffer(v.saddr).copy(b, o.saddr);
    ip4ToBuffer(v.daddr).copy(b, o.daddr);
    b.writeUInt16BE(v.sport, o.sport);
    b.writeUInt16BE(v.dport, o.dport);
    b.writeUInt8(v.proto, o.proto);
    b.writeUInt8(v.dir, o.dir);
    b.writeUInt8(v.closedBy, o.closed_by);
    b.writeUInt32LE(u32('epId', v.epId), o.ep_id);
    kelpEventPolicy.encode(v).copy(b, o.policy);
    b.writeUInt32LE(u32('svcId', v.svcId), o.svc_id);
    ip4ToBuffer(v.svcAddr).copy(b, o.svc_addr);
    b.writeUInt16BE(v.svcPort, o.svc_port);
    b.writeUInt32LE(u32('ifindex', v.ifindex), o.ifindex);
    b.writeBigUInt64LE(v.created, o.created);
    b.writeBigUInt64LE(v.txPackets, o.tx_packets);
    b.writeBigUInt64LE(v.txBytes, o.tx_bytes);
    b.writeBigUInt64LE(v.rxPackets, o.rx_packets);
    b.writeBigUInt64LE(v.rxBytes, o.rx_bytes);
    return b;
  },
  decode(b) {
    checkLength(flowEv.cName, b, flowEv.size);
    const o = flowEv.off;
    const h = kelpEventHdr.decode(b);
    return {
      tsNs: h.tsNs,
      type: h.type,
      cpu: h.cpu,
      saddr: ip4FromBuffer(b, o.saddr),
      daddr: ip4FromBuffer(b, o.daddr),
      sport: b.readUInt16BE(o.sport),
      dport: b.readUInt16BE(o.dport),
      proto: b.readUInt8(o.proto),
      dir: b.readUInt8(o.dir),
      closedBy: b.readUInt8(o.closed_by),
      epId: b.readUInt32LE(o.ep_id),
      ...policyAt(b, o.policy),
      svcId: b.readUInt32LE(o.svc_id),
      svcAddr: ip4FromBuffer(b, o.svc_addr),
      svcPort: b.readUInt16BE(o.svc_port),
      ifindex: b.readUInt32LE(o.ifindex),
      created: b.readBigUInt64LE(o.created),
      txPackets: b.readBigUInt64LE(o.tx_packets),
      txBytes: b.readBigUInt64LE(o.tx_bytes),
      rxPackets: b.readBigUInt64LE(o.rx_packets),
      rxBytes: b.readBigUInt64LE(o.rx_bytes),
    };
  },
};

/** struct kelp_event_config: one class's token bucket (0 burst: the datapath's defaults). */
export interface EventConfig {
  /** Events per second per CPU. */
  rate: number;
  burst: number;
}

const evConfig = layout('kelp_event_config', 8, [
  ['rate', 4, 0],
  ['burst', 4, 4],
]);

export const kelpEventConfig: StructCodec<EventConfig> = {
  ...evConfig,
  encode(v) {
    const b = Buffer.alloc(evConfig.size);
    b.writeUInt32LE(u32('rate', v.rate), evConfig.off.rate);
    b.writeUInt32LE(u32('burst', v.burst), evConfig.off.burst);
    return b;
  },
  decode(b) {
    checkLength(evConfig.cName, b, evConfig.size);
    return { rate: b.readUInt32LE(evConfig.off.rate), burst: b.readUInt32LE(evConfig.off.burst) };
  },
};

/** struct kelp_event_stats of one CPU and class; tokens and lastNs are the bucket's state. */
export interface EventStatsValue {
  emitted: bigint;
  suppressed: bigint;
  lost: bigint;
  tokens: bigint;
  lastNs: bigint;
}

const evStats = layout('kelp_event_stats', 40, [
  ['emitted', 8, 0],
  ['suppressed', 8, 8],
  ['lost', 8, 16],
  ['tokens', 8, 24],
  ['last_ns', 8, 32],
]);

export const kelpEventStats: StructCodec<EventStatsValue> = {
  ...evStats,
  encode(v) {
    const b = Buffer.alloc(evStats.size);
    b.writeBigUInt64LE(v.emitted, evStats.off.emitted);
    b.writeBigUInt64LE(v.suppressed, evStats.off.suppressed);
    b.writeBigUInt64LE(v.lost, evStats.off.lost);
    b.writeBigUInt64LE(v.tokens, evStats.off.tokens);
    b.writeBigUInt64LE(v.lastNs, evStats.off.last_ns);
    return b;
  },
  decode(b) {
    checkLength(evStats.cName, b, evStats.size);
    return {
      emitted: b.readBigUInt64LE(evStats.off.emitted),
      suppressed: b.readBigUInt64LE(evStats.off.suppressed),
      lost: b.readBigUInt64LE(evStats.off.lost),
      tokens: b.readBigUInt64LE(evStats.off.tokens),
      lastNs: b.readBigUInt64LE(evStats.off.last_ns),
    };
  },
};

/** Every codec, for the BTF layout test. */
export const ALL_STRUCTS: ReadonlyArray<StructCodec<unknown>> = [
  endpointKey,
  endpointInfo,
  endpointSlot,
  metricsKey,
  metricsValue,
  kelpEventHdr,
  kelpEvent,
  kelpEventPolicy,
  kelpFlowEvent,
  kelpEventConfig,
  kelpEventStats,
] as ReadonlyArray<StructCodec<unknown>>;

/** The C enums mirrored above, by BTF enum name: enumerator name -> value. */
export const MIRRORED_ENUMS: Record<string, Record<string, number>> = {
  kelp_dir: { KELP_DIR_FROM_POD: Direction.FROM_POD, KELP_DIR_TO_POD: Direction.TO_POD },
  kelp_endpoint_cache_params: { KELP_EP_CACHE_BITS: EP_CACHE_BITS, KELP_EP_CACHE_MUL: EP_CACHE_MUL },
  kelp_event_type: {
    KELP_EVENT_DROP: EventType.DROP,
    KELP_EVENT_TRACE: EventType.TRACE,
    KELP_EVENT_AUDIT: EventType.AUDIT,
    KELP_EVENT_FLOW_START: EventType.FLOW_START,
    KELP_EVENT_FLOW_END: EventType.FLOW_END,
  },
  kelp_metrics_limits: { KELP_METRICS_FWD_EPS: METRICS_FWD_EPS },
  kelp_trace_point: {
    KELP_TRACE_NONE: TracePoint.NONE,
    KELP_TRACE_TO_ENDPOINT: TracePoint.TO_ENDPOINT,
    KELP_TRACE_ARP_REPLY: TracePoint.ARP_REPLY,
    KELP_TRACE_TO_OVERLAY: TracePoint.TO_OVERLAY,
  },
};
