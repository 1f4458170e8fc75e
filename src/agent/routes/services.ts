// HTTP routes of the agent's API for Services: every frontend this node programs, with its
// Service port, its backend set and the backends' state, as `kelp get services` shows them.
// Registered by the agent's entry file.
import type { ApiServer } from '../server';
import type { RouteContext } from './context';
import type { ServiceModel } from '../../service/compile';
import { FRONTEND_AFFINITY, FRONTEND_DROP_NO_LOCAL, FRONTEND_EXTERNAL, FRONTEND_IN_DROP_NO_LOCAL, FRONTEND_NODEPORT, FRONTEND_SOURCE_RANGES } from '../../datapath/service-types';

export interface ServiceBackendView {
  backendId: number;
  address: string;
  port: number;
  /** `local` (on this node), `terminating` (serving while terminating: no ready endpoint in its view). */
  state: string[];
}

export interface ServiceFrontendView {
  /** `namespace/name`. */
  service: string;
  /** The Service port's name, or its number when unnamed. */
  port: string;
  type: string;
  /** ClusterIP, NodePort, ExternalIP or LoadBalancer. */
  kind: string;
  address: string;
  frontendPort: number;
  protocol: string;
  svcId: number;
  /** 0: no backend (see `empty`). */
  setId: number;
  /** Which of the port's endpoints the set holds: Cluster or Local. */
  view: 'Cluster' | 'Local' | null;
  flags: string[];
  affinityTimeout: number | null;
  /** With no backend: what a client meets (reject: no endpoint anywhere; drop: none on this node under a Local policy). */
  empty: 'reject' | 'drop' | null;
  backends: ServiceBackendView[];
  /**
   * What clients inside the cluster (this node's pods, the node) choose among when it is not the
   * set above: an externalTrafficPolicy Local address's Cluster view. null: the same set.
   */
  inCluster: { setId: number; view: 'Cluster' | 'Local' | null; empty: 'reject' | 'drop' | null; backends: ServiceBackendView[] } | null;
}

const FLAGS: Array<[number, string]> = [
  [FRONTEND_EXTERNAL, 'external'],
  [FRONTEND_NODEPORT, 'nodeport'],
  [FRONTEND_AFFINITY, 'affinity'],
  [FRONTEND_SOURCE_RANGES, 'source-ranges'],
  [FRONTEND_DROP_NO_LOCAL, 'drop-no-local'],
];

export function serviceViews(model: ServiceModel | undefined): ServiceFrontendView[] {
  const rows: ServiceFrontendView[] = [];
  for (const p of model?.ports ?? []) {
    const sets = [p.cluster, p.local].filter((s) => s !== undefined);
    const backendViews = (set: (typeof sets)[number] | undefined): ServiceBackendView[] =>
      (set?.backends ?? []).map((b) => ({
        backendId: b.backendId,
        address: b.address,
        port: b.port,
        state: [...(b.local ? ['local'] : []), ...(b.terminating ? ['terminating'] : [])],
      }));
    for (const f of p.frontends) {
      const set = f.count > 0 ? sets.find((s) => s.setId === f.setId) : undefined;
      const inSetId = f.inSetId ?? f.setId;
      const inCount = f.inCount ?? f.count;
      const inSet = inCount > 0 ? sets.find((s) => s.setId === inSetId) : undefined;
      const differs = inSetId !== f.setId || inCount !== f.count;
      rows.push({
        service: p.service,
        port: p.portName || String(p.port),
        type: p.type,
        kind: f.kind,
        address: f.address,
        frontendPort: f.port,
        protocol: f.protocol,
        svcId: f.svcId,
        setId: f.setId,
        view: set?.view ?? null,
        flags: FLAGS.filter(([bit]) => f.flags & bit).map(([, n]) => n),
        affinityTimeout: f.flags & FRONTEND_AFFINITY ? f.affinityTimeout : null,
        empty: f.count > 0 ? null : f.flags & FRONTEND_DROP_NO_LOCAL ? 'drop' : 'reject',
        backends: backendViews(set),
        inCluster: differs
          ? { setId: inSetId, view: inSet?.view ?? null, empty: inCount > 0 ? null : f.flags & FRONTEND_IN_DROP_NO_LOCAL ? 'drop' : 'reject', backends: backendViews(inSet) }
          : null,
      });
    }
  }
  return rows;
}

export function serviceRoutes(server: ApiServer, c: RouteContext): void {
  server.route('GET', '/v1/services', () => ({ status: 200, body: serviceViews(c.services?.model()) }));
}
