// Observability in the agent (issue 14): every datapath event and every flow the conntrack
// collector expires becomes an enriched FlowRecord in the flow store; the event counters of the
// datapath and of the reader make up EventStats. Wired by src/agent/agent.ts, served by
// src/agent/routes/flows.ts.
import type { EventStats } from '../datapath/flow-types';
import type { KelpEvent, ReceivedCounts, DatapathEventStats } from '../datapath/events';
import { eventStats } from '../datapath/events';
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

export class Observe {
  readonly store: FlowStore;
  private readonly enricher: Enricher;

  constructor(private readonly deps: ObserveDeps) {
    this.store = new FlowStore(deps.capacity);
    this.enricher = new Enricher(deps.directory);
  }

  /** A datapath event (from the ring or the conntrack collector). Traces are stored too: they
   * only exist when the agent was asked for them. */
  onEvent(ev: KelpEvent): void {
    this.store.add(this.enricher.record(ev));
  }

  stats(): EventStats {
    return eventStats(this.deps.datapathStats(), this.deps.received());
  }
}
