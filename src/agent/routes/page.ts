// The node page's routes on the metrics address (src/observe/page.ts): its snapshot from the same
// views the API answers with (`kelp get pods`, services, policies), its flows from the flow store.
// Registered by the agent's entry file when --metrics-address is on.
import type { Observe } from '../../observe';
import { mountNodePage, NodePageSnapshot, PageRouter } from '../../observe/page';
import type { RouteContext } from './context';
import { podViews } from './views';
import { serviceViews } from './services';
import { policyViews } from './policy';

export function pageRoutes(server: PageRouter, c: RouteContext, observe: () => Observe | undefined): void {
  mountNodePage(server, {
    store: () => observe()?.store,
    snapshot: (): NodePageSnapshot => ({
      node: c.opts.nodeName,
      // Pod objects of other nodes are in the store too: this node's are those with an endpoint.
      pods: podViews(c)
        .filter((p) => p.ip)
        .map((p) => ({ namespace: p.namespace, name: p.name, ip: p.ip, state: p.state })),
      services: serviceViews(c.services?.model()).map((f) => ({
        service: f.service,
        kind: f.kind,
        address: f.address,
        port: f.frontendPort,
        protocol: f.protocol,
        backends: f.backends.map((b) => ({ address: b.address, port: b.port })),
      })),
      policies: policyViews(c).map((p) => ({ kind: p.kind, name: p.name, tier: p.tier, audit: p.audit, localPods: p.localPods })),
      stats: observe()?.stats(),
    }),
  });
}
