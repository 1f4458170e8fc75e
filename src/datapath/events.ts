// Decoder for kelp_events ring buffer records (`struct kelp_event`, bpf/lib/events.h), and the
// agent's reader of that ring.
import { openRingBuffer } from '../bpf';
import type { BpfMap, RingBuffer } from '../bpf';
import type { Logger } from '../log';
import { dropReasonName, isPolicyDropReason } from './drop';
import { POLICY_ACTION_NAMES, POLICY_TIER_NAMES } from './policy';
import type { PolicyAction, PolicyTier } from './policy-types';
import { Direction, EventType, TracePoint, kelpEvent, RawEvent } from './structs';

export type EventDirection = 'from-pod' | 'to-pod';
export type TracePointName = 'to-endpoint' | 'arp-reply' | 'to-overlay';

interface EventCommon {
  tsNs: bigint;
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

/** The policy decision a policy drop or an audit event carries. */
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

export type KelpEvent = DropEvent | AuditEvent | TraceEvent;

const POINTS: Record<number, TracePointName> = {
  [TracePoint.TO_ENDPOINT]: 'to-endpoint',
  [TracePoint.ARP_REPLY]: 'arp-reply',
  [TracePoint.TO_OVERLAY]: 'to-overlay',
};

function direction(raw: RawEvent): EventDirection {
  if (raw.dir === Direction.FROM_POD) return 'from-pod';
  if (raw.dir === Direction.TO_POD) return 'to-pod';
  throw new RangeError(`kelp_event: unknown direction ${raw.dir}`);
}

function eventPolicy(raw: RawEvent): EventPolicy {
  return {
    policyId: raw.policyId,
    rule: raw.rule,
    tier: POLICY_TIER_NAMES[raw.tier] ?? 'none',
    action: POLICY_ACTION_NAMES[raw.action] ?? 'none',
  };
}

/** Throws RangeError on a record this build cannot read (short, or unknown type/direction/point). */
export function decodeEvent(buf: Buffer): KelpEvent {
  const raw = kelpEvent.decode(buf);
  const common: EventCommon = {
    tsNs: raw.tsNs,
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
  if (raw.type === EventType.TRACE) {
    const point = POINTS[raw.tracePoint];
    if (!point) throw new RangeError(`kelp_event: unknown trace point ${raw.tracePoint}`);
    return { kind: 'trace', ...common, point, targetIfindex: raw.targetIfindex };
  }
  throw new RangeError(`kelp_event: unknown type ${raw.type}`);
}

/** One line for logs and the CLI. */
export function formatEvent(e: KelpEvent): string {
  const flow = `${e.saddr}:${e.sport} -> ${e.daddr}:${e.dport} proto ${e.proto}`;
  const where = `${e.dir} if ${e.ifindex} ep ${e.epId}`;
  const policy = (p: EventPolicy) => ` policy ${p.policyId} rule ${p.rule} tier ${p.tier}`;
  if (e.kind === 'drop') return `drop ${e.reasonName} ${where} ${flow} len ${e.len}${e.policy ? policy(e.policy) : ''}`;
  if (e.kind === 'audit') return `audit (would drop: ${e.reasonName}) ${where} ${flow} len ${e.len}${policy(e.policy)}`;
  return `trace ${e.point} ${where} -> if ${e.targetIfindex} ${flow} len ${e.len}`;
}

/**
 * Reads kelp_events on the event loop: every event is logged at debug, every drop also goes to
 * `onDrop`; a record this build cannot decode is logged, never thrown.
 */
export function watchEvents(ring: BpfMap, log: Logger, onDrop?: (ev: DropEvent) => void): RingBuffer {
  return openRingBuffer(ring, (rec) => {
    try {
      const ev = decodeEvent(rec);
      log.debug({ event: ev }, formatEvent(ev));
      if (ev.kind === 'drop') onDrop?.(ev);
    } catch (err) {
      log.warn({ err }, 'undecodable datapath event');
    }
  });
}
