// kelp's Prometheus metrics (docs/observability.md lists them). What the kernel counts is read
// when Prometheus scrapes (collect() callbacks), never on a timer, so a scrape shows the maps as
// they are and an idle agent does no work for metrics. What the agent times (CNI operations,
// reconcile runs) is observed as it happens into histograms.
// Cardinality is bounded by what the node is configured with — drop reasons, directions, maps,
// policies and their rules, reconcilers — never by pods: a pod's counters are folded into node
// totals (monotonic.ts), and a deleted policy's series go with it at the next scrape.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { dropReasonName, isDropReason, MetricsReason } from '../datapath/drop';
import type { EventClass, EventStats } from '../datapath/flow-types';
import type { MapStat } from '../datapath/maps/view';
import { Direction, type MetricsEntry } from '../datapath/structs';
import { MonotonicSums } from './monotonic';

/** One BPF policy verdict counter: packets a policy rule decided, by action. */
export interface PolicyVerdictSample {
  kind: string;
  /** '' for cluster-scoped policies. */
  namespace?: string;
  name: string;
  /** Rule index (or a name such as "isolated" for the default deny of a selected pod). */
  rule: number | string;
  action: string;
  /** The direction the rule is for (ingress/egress), when the counter knows it. */
  direction?: string;
  packets: number | bigint;
}

/** Where the metrics come from; each is read on scrape. */
export interface MetricsSources {
  /** kelp_metrics and kelp_metrics_fwd, summed (Datapath.metrics()). */
  counters(): MetricsEntry[];
  /** Entries and capacity of every loaded map (Datapath.mapStats()). */
  maps(): MapStat[];
  /** The BPF policy verdict counters; absent until the datapath has them. */
  verdicts?(): readonly PolicyVerdictSample[];
  /** Event accounting (flow-types.ts); undefined while events are not read. */
  events?(): EventStats | undefined;
}

/** Commands get their own series; anything else a client sends is 'other' (labels stay bounded). */
const CNI_COMMANDS = new Set(['ADD', 'DEL', 'CHECK', 'STATUS', 'GC', 'VERSION']);

const EVENT_CLASSES: readonly EventClass[] = ['drop', 'flow', 'trace'];
const EVENT_FATES = ['emitted', 'suppressed', 'lost', 'received'] as const;

/** Direction from the pod's point of view, as flow records name it. */
function directionLabel(dir: number): string {
  return dir === Direction.FROM_POD ? 'egress' : dir === Direction.TO_POD ? 'ingress' : `unknown(${dir})`;
}

export class KelpMetrics {
  readonly registry = new Registry();
  private readonly cni: Histogram<'command' | 'result'>;
  private readonly reconcile: Histogram<'reconciler' | 'result'>;
  private readonly changeToApply: Histogram<'reconciler'>;
  private readonly gcDeleted: Counter<'map'>;
  private readonly sums = new MonotonicSums();
  // One read of the counter maps serves every series of a scrape: collect() callbacks of one
  // scrape all start in the same turn of the event loop, so the memo lives until the next one.
  private snapshot?: Map<string, { packets: bigint; bytes: bigint }>;

  constructor(private readonly sources: MetricsSources) {
    const registers = [this.registry];

    // Series that come from one read share one fill function, which each of them calls as its
    // collect() (registry.getSingleMetric may ask for any one alone); within a scrape the read
    // itself is memoised, so the repeats cost a few map writes.
    const fillCounters = () => {
      const totals = this.counterTotals();
      for (const c of [dropPackets, dropBytes, fwdPackets, fwdBytes, auditPackets]) c.reset();
      for (const [group, t] of totals) {
        const [code, dir] = group.split('/').map(Number);
        const direction = directionLabel(dir);
        if (isDropReason(code)) {
          dropPackets.inc({ reason: dropReasonName(code), direction }, Number(t.packets));
          dropBytes.inc({ reason: dropReasonName(code), direction }, Number(t.bytes));
        } else if (code === MetricsReason.FORWARDED) {
          fwdPackets.inc({ direction }, Number(t.packets));
          fwdBytes.inc({ direction }, Number(t.bytes));
        } else if (code === MetricsReason.POLICY_AUDIT) {
          auditPackets.inc({ direction }, Number(t.packets));
        }
      }
    };
    const dropPackets = new Counter({ name: 'kelp_drop_packets_total', help: 'Packets dropped by the datapath, by drop reason and direction (egress: leaving the pod)', labelNames: ['reason', 'direction'] as const, registers, collect: fillCounters });
    const dropBytes = new Counter({ name: 'kelp_drop_bytes_total', help: 'Bytes dropped by the datapath, by drop reason and direction', labelNames: ['reason', 'direction'] as const, registers, collect: fillCounters });
    const fwdPackets = new Counter({ name: 'kelp_forward_packets_total', help: "Packets the pods' programs passed on, by direction (a packet between two pods of this node counts once egress and once ingress)", labelNames: ['direction'] as const, registers, collect: fillCounters });
    const fwdBytes = new Counter({ name: 'kelp_forward_bytes_total', help: "Bytes the pods' programs passed on, by direction", labelNames: ['direction'] as const, registers, collect: fillCounters });
    const auditPackets = new Counter({ name: 'kelp_policy_audit_packets_total', help: 'Packets passed that an audit-only policy would have dropped, by direction', labelNames: ['direction'] as const, registers, collect: fillCounters });

    const fillMaps = () => {
      for (const g of [mapEntries, mapCapacity, mapFill]) g.reset();
      for (const m of this.sources.maps()) {
        if (m.fixed) continue;
        mapEntries.set({ map: m.name }, m.entries);
        mapCapacity.set({ map: m.name }, m.maxEntries);
        mapFill.set({ map: m.name }, m.maxEntries ? m.entries / m.maxEntries : 0);
      }
    };
    const mapEntries = new Gauge({ name: 'kelp_map_entries', help: 'Entries in a BPF map (hash, LRU and LPM maps; arrays, always full, are left out)', labelNames: ['map'] as const, registers, collect: fillMaps });
    const mapCapacity = new Gauge({ name: 'kelp_map_capacity', help: 'max_entries of a BPF map', labelNames: ['map'] as const, registers, collect: fillMaps });
    const mapFill = new Gauge({ name: 'kelp_map_fill_ratio', help: 'Entries / capacity of a BPF map (conntrack: kelp_ct4, kelp_pct4, kelp_lb4_ct; NAT: kelp_snat4)', labelNames: ['map'] as const, registers, collect: fillMaps });

    const verdicts: Counter<'policy_kind' | 'policy_namespace' | 'policy_name' | 'rule' | 'direction' | 'action'> = new Counter({
      name: 'kelp_policy_verdicts_total',
      help: "Packets decided by a policy rule, by policy (kind, namespace, name), rule, direction and action; a deleted policy's series go with it",
      labelNames: ['policy_kind', 'policy_namespace', 'policy_name', 'rule', 'direction', 'action'] as const,
      registers,
      collect: () => {
        verdicts.reset();
        for (const v of this.sources.verdicts?.() ?? []) {
          const n = Number(v.packets);
          if (n <= 0) continue;
          verdicts.inc({ policy_kind: v.kind, policy_namespace: v.namespace ?? '', policy_name: v.name, rule: String(v.rule), direction: v.direction ?? '', action: v.action }, n);
        }
      },
    });

    const fillEvents = () => {
      events.reset();
      unknown.reset();
      const st = this.sources.events?.();
      if (!st) return;
      for (const cls of EVENT_CLASSES) {
        const c = st.byClass[cls];
        if (!c) continue;
        for (const fate of EVENT_FATES) events.inc({ class: cls, fate }, c[fate]);
      }
      unknown.inc(st.unknown);
    };
    const events = new Counter({ name: 'kelp_events_total', help: 'Datapath events by class (drop, flow, trace) and fate: emitted to the ring, suppressed by the rate limit, lost (ring full), received by the agent', labelNames: ['class', 'fate'] as const, registers, collect: fillEvents });
    const unknown = new Counter({ name: 'kelp_events_unknown_total', help: 'Event records with a version, type or size this agent does not know (counted, never misread)', registers, collect: fillEvents });

    this.cni = new Histogram({
      name: 'kelp_cni_operation_duration_seconds',
      help: 'Time the agent took to serve a CNI operation (ADD includes the new pod\'s policy being programmed), by command and result',
      labelNames: ['command', 'result'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.reconcile = new Histogram({
      name: 'kelp_reconcile_duration_seconds',
      help: 'Duration of one reconciler run (desired state computed and applied to the maps), by reconciler and result',
      labelNames: ['reconciler', 'result'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.changeToApply = new Histogram({
      name: 'kelp_reconcile_change_to_apply_seconds',
      help: "Time from an object change (the first one that made the reconciler dirty) to the end of the run that wrote it into the maps",
      labelNames: ['reconciler'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.gcDeleted = new Counter({ name: 'kelp_conntrack_gc_deleted_total', help: 'Entries removed by the agent\'s conntrack/NAT garbage collector, by map', labelNames: ['map'] as const, registers });
  }

  observeCni(command: string, ok: boolean, seconds: number): void {
    this.cni.observe({ command: CNI_COMMANDS.has(command) ? command : 'other', result: ok ? 'success' : 'error' }, seconds);
  }

  /** One reconciler run; `sinceChangeSeconds` when the run followed an object change. */
  observeReconcile(reconciler: string, ok: boolean, seconds: number, sinceChangeSeconds?: number): void {
    this.reconcile.observe({ reconciler, result: ok ? 'success' : 'error' }, seconds);
    if (ok && sinceChangeSeconds !== undefined) this.changeToApply.observe({ reconciler }, sinceChangeSeconds);
  }

  conntrackGc(map: string, deleted: number): void {
    // Zero too: the series exists from the first pass, so rate() works from the start.
    this.gcDeleted.inc({ map }, deleted);
  }

  /** Node totals by `reason/dir`, from one read of the counter maps per scrape. */
  private counterTotals(): Map<string, { packets: bigint; bytes: bigint }> {
    if (this.snapshot) return this.snapshot;
    const samples = this.sources.counters().map((e) => ({
      key: `${e.key.epId}/${e.key.dir}/${e.key.reason}`,
      group: `${e.key.reason}/${e.key.dir}`,
      packets: e.value.packets,
      bytes: e.value.bytes,
    }));
    const totals = this.sums.update(samples);
    this.snapshot = totals;
    setImmediate(() => (this.snapshot = undefined));
    return totals;
  }
}
