// HTTP routes of the agent's API: health, status, maps. Registered by the agent's entry file.
import { HttpError } from '../server';
import type { ApiServer } from '../server';
import type { RouteContext } from './context';
import { MAP_DESCRIPTIONS } from '../../datapath/dump';
import { policyEnforced, readPolicyRevision } from '../../datapath/policy';
import { nodesStatus } from './nodes';

export function statusRoutes(server: ApiServer, c: RouteContext): void {
  server.route('GET', '/v1/healthz', () => ({ status: c.ready() ? 200 : 503, body: { ready: c.ready() } }));
  server.route('GET', '/v1/status', () => ({
    status: 200,
    body: {
      ready: c.ready(),
      node: c.opts.nodeName,
      podCidr: c.opts.podCidr,
      mtu: c.opts.mtu,
      endpoints: c.manager.list().length,
      masquerade: c.masquerade(),
      bpffs: c.datapath.bpffs,
      maps: c.datapath.mapStats(),
      attached: c.manager.list().map((r) => {
        const problems = c.datapath.check(r);
        return {
          ifname: r.hostIfname,
          ifindex: r.hostIfindex,
          ingress: problems.some((p) => p.includes('kelp_from_pod')) ? [] : ['kelp_from_pod'],
          egress: problems.some((p) => p.includes('kelp_to_pod')) ? [] : ['kelp_to_pod'],
        };
      }),
      problems: [
        ...(c.manifests?.problems.values() ?? []),
        ...(c.kube?.problems.values() ?? []),
        ...(c.policy?.reconciler.lastError ? [`policy not programmed: ${c.policy.reconciler.lastError}`] : []),
        ...(c.nodes?.reconciler.last()?.problems ?? []),
      ],
      nodes: nodesStatus(c),
      services: c.services ? { lastRun: c.services.last() ?? null, lastError: c.reconcilers.status().find((r) => r.name === c.services!.reconciler.name)?.lastError ?? null } : null,
      policy: c.policy
        ? { enforced: policyEnforced(c.policy.maps), revision: readPolicyRevision(c.policy.maps), lastRun: c.policy.last() ?? null, lastError: c.policy.reconciler.lastError ?? null }
        : null,
      store: { revision: c.objects.revision, programmed: c.reconcilers.programmedRevision },
      sources: c.sources.map((src) => ({ name: src.name, ...(src === c.kube ? { reflectors: c.kube.status() } : {}) })),
      reconcilers: c.reconcilers.status(),
    },
  }));
  server.route('GET', '/v1/maps/:name', (req) => {
    const name = req.params.name;
    if (!c.datapath.mapNames().includes(name)) throw new HttpError(404, `no map named ${name} (maps: ${c.datapath.mapNames().join(', ')})`);
    return { status: 200, body: { name, description: MAP_DESCRIPTIONS[name], entries: c.datapath.dump(name) } };
  });
}
