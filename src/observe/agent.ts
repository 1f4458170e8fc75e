// The agent's observability wiring: the rate limits written to kelp_event_config, the flow store
// fed by the ring reader and by the policy conntrack's collector, its directory over the agent's
// parts. Structural types only, so this folder imports nothing from src/agent.
import type { BpfMap } from '../bpf';
import type { EventCounter, FlowEvent, ReceivedCounts } from '../datapath/events';
import { EVENT_CLASSES, readEventStats, writeEventConfig } from '../datapath/events';
import type { PolicyModel } from '../policy/model';
import type { ServiceModel } from '../service/compile';
import type { ObjectStore } from '../sources/store';
import { agentDirectory, DirectorySources } from './enrich';
import { Observe } from './index';

export interface ObserveAgentDeps {
  datapath: { map(name: string): BpfMap; onFlowTimeout(onEnd: (ev: FlowEvent) => void): void };
  manager: { list(): Array<{ id: number; ips: Array<{ address: string }>; pod?: { namespace: string; name: string } }> };
  objects: ObjectStore;
  /** Read at each rebuild of the directory: the reconcilers start after the reader. */
  policyModel(): PolicyModel | undefined;
  serviceModel(): ServiceModel | undefined;
  /** The ring reader's counter (Datapath.watchEvents), once it is open. */
  counter(): EventCounter | undefined;
  eventRate: number;
  eventBurst: number;
}

export function startObserve(d: ObserveAgentDeps): Observe {
  const bucket = { rate: d.eventRate, burst: d.eventBurst };
  writeEventConfig(d.datapath.map('kelp_event_config'), { drop: bucket, flow: bucket, trace: bucket });
  const sources: DirectorySources = {
    endpoints: () => d.manager.list(),
    pods: () => d.objects.list('Pod'),
    nodes: () => d.objects.list('Node'),
    services: () => d.serviceModel()?.ports ?? [],
    policies: () => (d.policyModel()?.policies ?? []).map((p) => ({ id: p.id, kind: p.spec.kind, ref: p.spec.ref })),
    version: () => {
      const eps = d.manager.list().map((r) => `${r.id}${r.pod ? `=${r.pod.namespace}/${r.pod.name}` : ''}`);
      return `${d.objects.revision}|${eps.join(',')}|${modelId(d.policyModel())}|${modelId(d.serviceModel())}`;
    },
  };
  // kelp_event_stats is pinned and outlives an agent; what this agent received starts at 0: both
  // count from here (a record in the ring at this instant is received without its emission).
  const stats = d.datapath.map('kelp_event_stats');
  const base = readEventStats(stats);
  const received = (): ReceivedCounts => d.counter()?.counts ?? { received: { drop: 0, flow: 0, trace: 0 }, unknown: 0 };
  const baseReceived = structuredClone(received());
  const observe = new Observe({
    directory: agentDirectory(sources),
    datapathStats: () => {
      const now = readEventStats(stats);
      for (const cls of EVENT_CLASSES) for (const k of ['emitted', 'suppressed', 'lost'] as const) now[cls][k] -= base[cls][k];
      return now;
    },
    received: () => {
      const r = received();
      return {
        received: { drop: r.received.drop - baseReceived.received.drop, flow: r.received.flow - baseReceived.received.flow, trace: r.received.trace - baseReceived.received.trace },
        unknown: r.unknown - baseReceived.unknown,
      };
    },
  });
  d.datapath.onFlowTimeout((ev) => observe.onEvent(ev));
  return observe;
}

/** A model object's identity: each compile makes a new one. */
const ids = new WeakMap<object, number>();
let nextId = 1;
function modelId(m: object | undefined): number {
  if (!m) return 0;
  let id = ids.get(m);
  if (id === undefined) ids.set(m, (id = nextId++));
  return id;
}
