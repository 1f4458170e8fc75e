// HTTP routes of the agent's API: endpoints, pods and counters, as `kelp get` shows them. Registered by the agent's entry file.
import type { ApiServer } from '../server';
import type { RouteContext } from './context';
import type { CounterView, EndpointView, PodView } from '../views';
import { dropReasonName } from '../../datapath/drop';

export function viewRoutes(server: ApiServer, c: RouteContext): void {
  server.route('GET', '/v1/endpoints', () => ({
    status: 200,
    body: c.manager.list().map((r): EndpointView => ({
      id: r.id,
      network: r.network,
      containerId: r.containerId,
      ifname: r.ifname,
      ip: r.ips.map((i) => i.address).join(','),
      hostIfname: r.hostIfname,
      hostIfindex: r.hostIfindex,
      pod: r.pod ? `${r.pod.namespace}/${r.pod.name}` : null,
      state: 'ready',
    })),
  }));
  server.route('GET', '/v1/pods', () => ({ status: 200, body: podViews(c) }));
  // Every non-zero counter, kelp_metrics and kelp_metrics_fwd added up, with the pod it belongs to.
  server.route('GET', '/v1/counters', () => {
    const eps = new Map(c.manager.list().map((r) => [r.id, r]));
    return {
      status: 200,
      body: c.datapath.metrics().map((e): CounterView => {
        const pod = eps.get(e.key.epId)?.pod;
        return {
          endpoint: e.key.epId,
          pod: pod ? `${pod.namespace}/${pod.name}` : null,
          direction: e.key.dir === 1 ? 'from-pod' : 'to-pod',
          reason: e.key.reason === 0 ? 'forwarded' : dropReasonName(e.key.reason),
          packets: e.value.packets.toString(),
          bytes: e.value.bytes.toString(),
        };
      }),
    };
  });
}

/** Every Pod object with its endpoint, and endpoints without one (`kelp get pods`, the node page). */
export function podViews(c: Pick<RouteContext, 'manager' | 'objects'>): PodView[] {
  const eps = c.manager.list();
  const rows = c.objects.list('Pod').map((p): PodView => {
    const ep = eps.find((e) => e.pod?.namespace === p.metadata.namespace && e.pod?.name === p.metadata.name);
    return {
      namespace: p.metadata.namespace,
      name: p.metadata.name,
      ip: ep?.ips.map((i) => i.address.split('/')[0]).join(','),
      interface: ep ? `${ep.ifname}@${ep.hostIfname}` : undefined,
      containerId: ep?.containerId,
      state: ep ? 'Running' : 'Pending',
      labels: p.metadata.labels,
    };
  });
  // Pods that arrived by CNI without a Pod object still show up, so nothing is hidden.
  for (const ep of eps) {
    if (ep.pod && c.objects.get('Pod', ep.pod.namespace, ep.pod.name)) continue;
    rows.push({
      namespace: ep.pod?.namespace ?? null,
      name: ep.pod?.name ?? ep.containerId.slice(0, 12),
      ip: ep.ips.map((i) => i.address.split('/')[0]).join(','),
      interface: `${ep.ifname}@${ep.hostIfname}`,
      containerId: ep.containerId,
      state: 'Running (no Pod object)',
      labels: {},
    });
  }
  return rows;
}
