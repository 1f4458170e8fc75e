// Observability in the agent (issue 14): every datapath event and every flow the conntrack
// collector expires becomes an enriched FlowRecord in the flow store; the event counters of the
// datapath and of the reader make up EventStats. Wired by src/agent/agent.ts, served by
// src/agent/routes/flows.ts.
import type { EventStats } from '../datapath/flow-types';
import type { DatapathEventStats, FlowEvent, KelpEvent, ReceivedCounts } from '../datapath/events';
import { eventStats, isFlowEvent } from '../datapath/events';
import { Enricher, FlowDirectory } from './enrich';
import { FlowStore } from './store';

export { FlowStore } from './store';
export { Enricher, agentDirectory, EventClock } from './enrich';
export type { FlowDirectory, DirectorySources } from './enrich';
export { matchFlow, parseFlowQuery, FlowQueryError, DEFAULT_LAST } from './filter';
export { summarize, peerLabel } from './summary';

export interface ObserveDeps {
  directory: FlowDirectory;
  /** The datapath's kelp_event_stats summed over CPUs. */
  datapathStats(): DatapathEventStats;
  /** The ring reader's counts. */
  received(): ReceivedCounts;
  capacity?: number;
}

/** Open flows remembered for their service (FLOW_END does not carry it), at most this many. */
const MAX_OPEN_SERVICE_FLOWS = 65_536;

export class Observe {
  readonly store: FlowStore;
  private readonly enricher: Enricher;
  /** Service flows started and not ended yet: their end names the Service too. */
  private readonly openServices = new Map<string, NonNullable<FlowEvent['service']>>();

  constructor(private readonly deps: ObserveDeps) {
    this.store = new FlowStore(deps.capacity);
    this.enricher = new Enricher(deps.directory);
  }

  /** A datapath event (from the ring or the conntrack collector). Traces are stored too: they
   * only exist when the agent was asked for them. */
  onEvent(ev: KelpEvent): void {
    if (isFlowEvent(ev)) this.joinService(ev);
    this.store.add(this.enricher.record(ev));
  }

  private joinService(ev: FlowEvent): void {
    const key = `${ev.saddr}:${ev.sport}>${ev.daddr}:${ev.dport}/${ev.proto}@${ev.createdNs}`;
    if (ev.kind === 'flow-start') {
      if (!ev.service) return;
      // The oldest goes first: a start whose end was lost (suppressed, or evicted) must not stay.
      if (this.openServices.size >= MAX_OPEN_SERVICE_FLOWS) this.openServices.delete(this.openServices.keys().next().value!);
      this.openServices.set(key, ev.service);
      return;
    }
    const svc = this.openServices.get(key);
    if (!svc) return;
    this.openServices.delete(key);
    ev.service ??= svc;
  }

  stats(): EventStats {
    return eventStats(this.deps.datapathStats(), this.deps.received());
  }
}
