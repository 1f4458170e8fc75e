// Decoder for kelp_events ring buffer records (bpf/lib/events.h: struct kelp_event_hdr first, then
// struct kelp_event or struct kelp_flow_event), and the agent's reader of that ring, which counts
// every record it receives per event class and every record it cannot read.
import { openRingBuffer } from '../bpf';
import type { BpfMap, RingBuffer } from '../bpf';
import type { Logger } from '../log';
import { RepeatedLog } from '../log';
import { dropReasonName, isPolicyDropReason } from './drop';
import type { EventClass, EventStats } from './flow-types';
import { POLICY_ACTION_NAMES, POLICY_DIR_NAMES, POLICY_TIER_NAMES } from './policy';
import type { PolicyAction, PolicyDirection, PolicyTier } from './policy-types';
import {
  Direction,
  EventClassIndex,
  EventConfig,
  EventType,
  FlowClose,
  KELP_EVENT_VERSION,
  TracePoint,
  kelpEvent,
  kelpEventConfig,
  kelpEventHdr,
  kelpEventStats,
  kelpFlowEvent,
  RawEvent,
  RawFlowEvent,
} from './structs';

export type EventDirection = 'from-pod' | 'to-pod';
export type TracePointName = 'to-endpoint' | 'arp-reply' | 'to-overlay';

interface EventCommon {
  tsNs: bigint;
  /** The CPU that sent it. */
  cpu: number;
  dir: EventDirection;
  /** Interface the packet was seen on (the pod's host-side veth). */
  ifindex: number;
  /** 0: not attributed to an endpoint. */
  epId: number;
  len: number;
  ethProto: number;
  proto: number;
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
}

/** The policy decision a policy drop, an audit event or a flow carries. */
export interface EventPolicy {
  /** 0: no policy decided (the endpoint's policy was not programmed). */
  policyId: number;
  /** Rule index in the policy's list for the direction; RULE_ISOLATED (65535): no rule allowed it. */
  rule: number;
  tier: PolicyTier | 'none';
  action: PolicyAction | 'none';
}

export interface DropEvent extends EventCommon {
  kind: 'drop';
  reason: number;
  /** DropReason name, e.g. `SRC_MAC`. */
  reasonName: string;
  /** Drops by policy (POLICY_* reasons and those of its fragments and conntrack). */
  policy?: EventPolicy;
}

/** Passed: an audit-only policy would have dropped it (reason: the drop it would have been). */
export interface AuditEvent extends EventCommon {
  kind: 'audit';
  reason: number;
  reasonName: string;
  policy: EventPolicy;
}

export interface TraceEvent extends EventCommon {
  kind: 'trace';
  point: TracePointName;
  /** Where the packet was redirected to. */
  targetIfindex: number;
}

export type FlowClosedBy = 'fin' | 'rst' | 'timeout' | 'revoked';

/** A kelp_pct4 flow opened (flow-start) or ended (flow-end), in its originator's direction. */
export interface FlowEvent {
  kind: 'flow-start' | 'flow-end';
  tsNs: bigint;
  cpu: number;
  saddr: string;
  daddr: string;
  sport: number;
  dport: number;
  proto: number;
  /** The side whose verdict the flow keeps, and its endpoint. */
  direction: PolicyDirection | 'none';
  epId: number;
  policy: EventPolicy;
  /** A flow translated from a Service (starts only): its svc_id and the frontend addressed. */
  service?: { svcId: number; address: string; port: number };
  ifindex: number;
  /** The entry's creation, on kelp_pct4's clock (coarse CLOCK_MONOTONIC). */
  createdNs: bigint;
  closedBy?: FlowClosedBy;
  txPackets: bigint;
  txBytes: bigint;
  rxPackets: bigint;
  rxBytes: bigint;
}

export type KelpEvent = DropEvent | AuditEvent | TraceEvent | FlowEvent;

const POINTS: Record<number, TracePointName> = {
  [TracePoint.TO_ENDPOINT]: 'to-endpoint',
  [TracePoint.ARP_REPLY]: 'arp-reply',
  [TracePoint.TO_OVERLAY]: 'to-overlay',
};

const CLOSED_BY: Record<number, FlowClosedBy> = {
  [FlowClose.FIN]: 'fin',
  [FlowClose.RST]: 'rst',
  [FlowClose.TIMEOUT]: 'timeout',
  [FlowClose.REVOKED]: 'revoked',
};

/** A record this build cannot read: counted as `unknown`, never misread. */
export class UnknownEventError extends RangeError {}

function direction(raw: RawEvent): EventDirection {
  if (raw.dir === Direction.FROM_POD) return 'from-pod';
  if (raw.dir === Direction.TO_POD) return 'to-pod';
  throw new UnknownEventError(`kelp_event: unknown direction ${raw.dir}`);
}

function eventPolicy(raw: { policyId: number; rule: number; tier: number; action: number }): EventPolicy {
  return {
    policyId: raw.policyId,
    rule: raw.rule,
    tier: POLICY_TIER_NAMES[raw.tier] ?? 'none',
    action: POLICY_ACTION_NAMES[raw.action] ?? 'none',
  };
}

/** The record sizes of this build's version, by type. */
const SIZES: Record<number, number> = {
  [EventType.DROP]: kelpEvent.size,
  [EventType.AUDIT]: kelpEvent.size,
  [EventType.TRACE]: kelpEvent.size,
  [EventType.FLOW_START]: kelpFlowEvent.size,
  [EventType.FLOW_END]: kelpFlowEvent.size,
};

/** The class a record type is rate-limited and counted in. */
export function eventClassOf(type: number): EventClass | undefined {
  if (type === EventType.DROP || type === EventType.AUDIT) return 'drop';
  if (type === EventType.FLOW_START || type === EventType.FLOW_END) return 'flow';
  if (type === EventType.TRACE) return 'trace';
  return undefined;
}

function decodeFlow(buf: Buffer): FlowEvent {
  const raw: RawFlowEvent = kelpFlowEvent.decode(buf);
  const end = raw.type === EventType.FLOW_END;
  const closedBy = CLOSED_BY[raw.closedBy];
  if (end ? !closedBy : raw.closedBy !== FlowClose.OPEN) throw new UnknownEventError(`kelp_flow_event: unknown closed_by ${raw.closedBy}`);
  const ev: FlowEvent = {
    kind: end ? 'flow-end' : 'flow-start',
    tsNs: raw.tsNs,
    cpu: raw.cpu ?? 0,
    saddr: raw.saddr,
    daddr: raw.daddr,
    sport: raw.sport,
    dport: raw.dport,
    proto: raw.proto,
    direction: POLICY_DIR_NAMES[raw.dir] ?? 'none',
    epId: raw.epId,
    policy: eventPolicy(raw),
    ifindex: raw.ifindex,
    createdNs: raw.created,
    txPackets: raw.txPackets,
    txBytes: raw.txBytes,
    rxPackets: raw.rxPackets,
    rxBytes: raw.rxBytes,
  };
  if (raw.svcId !== 0) ev.service = { svcId: raw.svcId, address: raw.svcAddr, port: raw.svcPort };
  if (closedBy) ev.closedBy = closedBy;
  return ev;
}

/**
 * Throws UnknownEventError on a record this build cannot read: another version, an unknown type,
 * a size that is not its type's, or a field value it does not know.
 */
export function decodeEvent(buf: Buffer): KelpEvent {
  if (buf.length < kelpEventHdr.size) throw new UnknownEventError(`kelp_events: record of ${buf.length} bytes is shorter than its header`);
  const h = kelpEventHdr.decode(buf);
  if (h.version !== KELP_EVENT_VERSION) throw new UnknownEventError(`kelp_events: record version ${h.version}, this agent reads ${KELP_EVENT_VERSION}`);
  const size = SIZES[h.type];
  if (size === undefined) throw new UnknownEventError(`kelp_events: unknown type ${h.type}`);
  // The ring buffer pads records to 8 bytes: the header's size is the record's own.
  if (h.size !== size || buf.length < size) throw new UnknownEventError(`kelp_events: type ${h.type} record of ${h.size} bytes (${buf.length} read), expected ${size}`);
  if (h.type === EventType.FLOW_START || h.type === EventType.FLOW_END) return decodeFlow(buf);

  const raw = kelpEvent.decode(buf);
  const common: EventCommon = {
    tsNs: raw.tsNs,
    cpu: raw.cpu ?? 0,
    dir: direction(raw),
    ifindex: raw.ifindex,
    epId: raw.epId,
    len: raw.len,
    ethProto: raw.ethProto,
    proto: raw.proto,
    saddr: raw.saddr,
    daddr: raw.daddr,
    sport: raw.sport,
    dport: raw.dport,
  };
  if (raw.type === EventType.DROP) {
    const drop: DropEvent = { kind: 'drop', ...common, reason: raw.reason, reasonName: dropReasonName(raw.reason) };
    if (isPolicyDropReason(raw.reason)) drop.policy = eventPolicy(raw);
    return drop;
  }
  if (raw.type === EventType.AUDIT) {
    return { kind: 'audit', ...common, reason: raw.reason, reasonName: dropReasonName(raw.reason), policy: eventPolicy(raw) };
  }
  const point = POINTS[raw.tracePoint];
  if (!point) throw new UnknownEventError(`kelp_event: unknown trace point ${raw.tracePoint}`);
  return { kind: 'trace', ...common, point, targetIfindex: raw.targetIfindex };
}

export function isFlowEvent(e: KelpEvent): e is FlowEvent {
  return e.kind === 'flow-start' || e.kind === 'flow-end';
}

/** One line for logs and the CLI. */
export function formatEvent(e: KelpEvent): string {
  const flow = `${e.saddr}:${e.sport} -> ${e.daddr}:${e.dport} proto ${e.proto}`;
  const policy = (p: EventPolicy) => ` policy ${p.policyId} rule ${p.rule} tier ${p.tier}`;
  if (isFlowEvent(e)) {
    const counters = e.kind === 'flow-end' ? ` closed ${e.closedBy} tx ${e.txPackets}/${e.txBytes} rx ${e.rxPackets}/${e.rxBytes}` : '';
    return `${e.kind} ${e.policy.action} ${e.direction} ep ${e.epId} ${flow}${policy(e.policy)}${counters}`;
  }
  const where = `${e.dir} if ${e.ifindex} ep ${e.epId}`;
  if (e.kind === 'drop') return `drop ${e.reasonName} ${where} ${flow} len ${e.len}${e.policy ? policy(e.policy) : ''}`;
  if (e.kind === 'audit') return `audit (would drop: ${e.reasonName}) ${where} ${flow} len ${e.len}${policy(e.policy)}`;
  return `trace ${e.point} ${where} -> if ${e.targetIfindex} ${flow} len ${e.len}`;
}

/** What the reader counted: received per class, and records it could not read. */
export interface ReceivedCounts {
  received: Record<EventClass, number>;
  unknown: number;
}

/**
 * Decodes records as a ring delivers them, counting each: `received` by the class of its type,
 * `unknown` when it cannot be read. Shared by the agent's reader and the tests' collectors, so
 * both count the same way.
 */
export class EventCounter {
  readonly counts: ReceivedCounts = { received: { drop: 0, flow: 0, trace: 0 }, unknown: 0 };

  /** The event, or undefined (counted as unknown) with the reason in `onUnknown`. */
  take(rec: Buffer, onUnknown?: (err: Error) => void): KelpEvent | undefined {
    try {
      const ev = decodeEvent(rec);
      const cls = eventClassOf(rec.readUInt8(1));
      if (cls) this.counts.received[cls] += 1;
      return ev;
    } catch (err) {
      this.counts.unknown += 1;
      onUnknown?.(err as Error);
      return undefined;
    }
  }
}

export interface EventWatch {
  ring: RingBuffer;
  counter: EventCounter;
}

/**
 * Reads kelp_events on the event loop: every event goes to `onEvent` and is logged at debug;
 * a record this build cannot decode is counted and logged (one line per burst), never thrown.
 */
export function watchEvents(ring: BpfMap, log: Logger, onEvent?: (ev: KelpEvent) => void): EventWatch {
  const counter = new EventCounter();
  const unknown = new RepeatedLog(log, 'warn', 'kelp_events records this agent cannot read (another version?) counted as unknown');
  const rb = openRingBuffer(ring, (rec) => {
    const ev = counter.take(rec, () => unknown.hit());
    if (!ev) return;
    if (log.isLevelEnabled('debug')) log.debug({ event: ev }, formatEvent(ev));
    try {
      onEvent?.(ev);
    } catch (err) {
      log.warn({ err }, 'datapath event handler failed');
    }
  });
  return { ring: rb, counter };
}

// --- kelp_event_config, kelp_event_stats ------------------------------------------------------

export const EVENT_CLASSES: readonly EventClass[] = ['drop', 'flow', 'trace'];

/** The largest rate the datapath's refill arithmetic is sized for (bpf/lib/events.h). */
export const MAX_EVENT_RATE = 10_000_000;

/** Writes each class's token bucket; checks the values first (the field at fault named). */
export function writeEventConfig(map: BpfMap, cfg: Partial<Record<EventClass, EventConfig>>): void {
  for (const cls of EVENT_CLASSES) {
    const c = cfg[cls];
    if (!c) continue;
    if (!Number.isInteger(c.rate) || c.rate < 0 || c.rate > MAX_EVENT_RATE) throw new RangeError(`event rate (${cls}) must be an integer 0..${MAX_EVENT_RATE}, got ${c.rate}`);
    if (!Number.isInteger(c.burst) || c.burst < 1 || c.burst > 1_000_000) throw new RangeError(`event burst (${cls}) must be an integer 1..1000000, got ${c.burst}`);
  }
  for (const cls of EVENT_CLASSES) {
    const c = cfg[cls];
    if (c) map.update(u32Key(EventClassIndex[cls]), kelpEventConfig.encode(c));
  }
}

function u32Key(i: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(i, 0);
  return b;
}

export type DatapathEventStats = Record<EventClass, { emitted: number; suppressed: number; lost: number }>;

/** kelp_event_stats summed over CPUs. */
export function readEventStats(map: BpfMap): DatapathEventStats {
  const out = {} as DatapathEventStats;
  for (const cls of EVENT_CLASSES) {
    const t = { emitted: 0, suppressed: 0, lost: 0 };
    for (const v of map.lookupPerCpu(u32Key(EventClassIndex[cls])) ?? []) {
      const s = kelpEventStats.decode(v);
      t.emitted += Number(s.emitted);
      t.suppressed += Number(s.suppressed);
      t.lost += Number(s.lost);
    }
    out[cls] = t;
  }
  return out;
}

/** The contract's EventStats: the datapath's counters with what this reader received. */
export function eventStats(dp: DatapathEventStats, counts: ReceivedCounts): EventStats {
  const byClass = {} as EventStats['byClass'];
  for (const cls of EVENT_CLASSES) byClass[cls] = { ...dp[cls], received: counts.received[cls] };
  return { byClass, unknown: counts.unknown };
}
