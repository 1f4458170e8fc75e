// The contract of issue 14 (observability) between the datapath's events (bpf/lib/events.h,
// src/datapath/events.ts), the agent's flow store (src/observe/), `kelp observe`, the Prometheus
// exporter and the node page: what a flow record is, how it is asked for, and how every event is
// accounted for.
//
// Events from BPF (one ring buffer, kelp_events):
//   - every record starts with a versioned header { version, type, size, ts_ns }: an agent meeting
//     a version or a size it does not know counts the record as `unknown`, never misreads it;
//   - FLOW_START when a flow gets its conntrack entry (kelp_pct4: the first packet of every pod
//     flow, with the verdict and, under policy, the policy and rule that decided; the service it was
//     translated from, when it was), FLOW_END when the flow closes (TCP FIN both ways / RST seen by
//     BPF) or its entry expires (the agent's conntrack GC emits it from the entry's counters), with
//     packets and bytes each way; DROP per dropped packet (reason; the policy for policy drops);
//     TRACE per packet only when asked for (the agent's --trace-events), AUDIT as today.
//   - rate-limited in BPF per CPU and per event class (drop, flow, trace) by a token bucket whose
//     rate and burst the agent sets (kelp_event_config); per CPU and class, kelp_event_stats counts
//     `emitted` (submitted to the ring), `suppressed` (the bucket was empty) and `lost` (the ring
//     buffer was full). The agent counts what it `received`, and `unknown`. So for every class:
//     attempted = emitted + suppressed + lost, and emitted = received + (in flight) — totals are
//     exact even when events are not all delivered.
//   - policy verdicts are also counted exactly in BPF (per policy, rule and action), independent
//     of event delivery: the Prometheus series come from those counters, not from events.
//
// As built (src/datapath/events.ts, flows.ts, src/observe/):
//   - records: struct kelp_event (DROP, AUDIT, TRACE; 64 bytes) and struct kelp_flow_event
//     (FLOW_START, FLOW_END; 104 bytes), each after the 16-byte header; the decoder checks version,
//     type and size before reading anything else (UnknownEventError, counted as `unknown`).
//   - flows exist where kelp_pct4 tracks them: pod flows once policy enforcement is on; a pod's
//     traffic with its own node is untracked (always allowed) and has no flow events.
//   - FLOW_END is claimed once per flow in kelp_flow_end ((flow, created), BPF_NOEXIST) by BPF (FIN
//     both ways, RST, a revision that denies it: 'revoked') or by the agent's conntrack collector
//     ('timeout'); an entry the LRU evicts ends without an event. FLOW_END carries no service:
//     the agent copies it from the flow's start.
//   - a flow names its Service when kelp_from_pod translated it (per-packet path); a connection
//     the socket load balancer translated at connect() is seen with its backend only.
//   - classes: drop = DROP and AUDIT records, flow = FLOW_START and FLOW_END, trace = TRACE (only
//     with the agent's trace option). kelp_event_config per class { rate, burst } per CPU (agent
//     flags --event-rate, --event-burst; burst 0 = the datapath's defaults, 10,000/s and 1,000).
//   - GET /v1/events/stats counts from the agent's start (kelp_event_stats is pinned and outlives
//     agents; the agent subtracts what it held when it started).
//   - kelp_policy_verdicts: packets and bytes per (policy, rule, action, direction), read with
//     src/datapath/flows.ts readPolicyVerdicts(): the first packet of each allowed flow, a flow
//     decided again after a revision, every dropped or audited packet.

export const EVENT_VERSION = 2;

export type EventClass = 'drop' | 'flow' | 'trace';

export interface EventClassStats {
  emitted: number;
  suppressed: number;
  lost: number;
  received: number;
}

export interface EventStats {
  byClass: Record<EventClass, EventClassStats>;
  /** Records with an unknown version, type or size. */
  unknown: number;
}

export type Verdict = 'forwarded' | 'dropped' | 'audit';

/** One side of a flow as the agent names it. */
export interface FlowPeer {
  address: string;
  port: number;
  /** A pod (on this node or known from the store). */
  pod?: { namespace: string; name: string };
  /** This node, another node (by name), or outside the cluster. */
  node?: string;
  world?: boolean;
}

/** What `GET /v1/flows` returns, one JSON object per line (NDJSON), oldest first. */
export interface FlowRecord {
  /** RFC 3339 with nanoseconds (from the event's ts_ns on the node's monotonic clock). */
  time: string;
  type: 'flow-start' | 'flow-end' | 'drop' | 'audit' | 'trace';
  verdict: Verdict;
  /** Drop reason name (e.g. POLICY_DENY, LB_NO_BACKEND); audit: the drop it would have been. */
  reason?: string;
  direction: 'ingress' | 'egress';
  protocol: 'TCP' | 'UDP' | 'SCTP' | 'ICMP' | string;
  source: FlowPeer;
  destination: FlowPeer;
  /** The Service the flow was translated from: namespace/name and the frontend it hit. */
  service?: { namespace: string; name: string; address: string; port: number };
  /** The policy that decided (drops, audits, flow starts under policy). */
  policy?: { kind: string; namespace?: string; name: string; rule: number; tier: string; action: string };
  /** flow-end: packets and bytes each way (original direction = the flow's opener). */
  counters?: { packetsOut: number; bytesOut: number; packetsIn: number; bytesIn: number; durationMs: number; closedBy: 'fin' | 'rst' | 'timeout' | 'revoked' };
  /** Endpoint id the event was charged to (0: none). */
  endpoint: number;
}

/** `GET /v1/flows` query parameters (all optional; repeated = any of). */
export interface FlowQuery {
  /** Follow: keep the response open and stream new records. */
  follow?: boolean;
  /** The last N stored records first (default 20; the store keeps the last 4,096). */
  last?: number;
  namespace?: string[];
  /** namespace/name, or name within `namespace`. */
  pod?: string[];
  /** namespace/name. */
  service?: string[];
  verdict?: Verdict[];
  reason?: string[];
  protocol?: string[];
  port?: number[];
  type?: FlowRecord['type'][];
  /** Filters match either side unless `direction` narrows them to source or destination. */
  side?: 'either' | 'source' | 'destination';
}

/** `GET /v1/flows/summary?window=60` — top talkers and top drop reasons over the last window seconds. */
export interface FlowSummary {
  windowSeconds: number;
  talkers: Array<{ source: string; destination: string; flows: number; bytes: number; drops: number }>;
  dropReasons: Array<{ reason: string; count: number; policy?: string }>;
  stats: EventStats;
}
