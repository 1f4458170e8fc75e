// HTTP routes of the agent's API for other nodes: every Node object as the node reconciler last
// judged it, with what the kernel holds for it now (its kelp_tunnel4 entries and kelp's routes
// to its pod CIDRs), as `kelp get nodes` shows them. Registered by the agent's entry file.
import type { ApiServer } from '../server';
import type { RouteContext } from './context';
import type { RoutingMode } from '../../datapath/node-types';
import { RTPROT_KELP_NODE } from '../../reconcile/nodes';

export interface NodeView {
  name: string;
  /** This agent's node. */
  self: boolean;
  address: string | null;
  podCidrs: string[];
  /** Every pod CIDR has its kelp_tunnel4 entry to this address (null: this node, or skipped). */
  tunnel: boolean | null;
  /** Every pod CIDR has kelp's route. */
  route: boolean | null;
  /** Why the node is not routed to. */
  skipped: string | null;
}

export interface NodesStatus {
  mode: RoutingMode;
  vni: number;
  port: number;
  device: string | null;
  uplink: string | null;
  /** Remote nodes routed to, as of the last run. */
  remote: number;
  skipped: number;
  lastRun: { at: string; ms: number } | null;
}

export function nodesStatus(c: RouteContext): NodesStatus | null {
  const n = c.nodes;
  if (!n) return null;
  const last = n.reconciler.last();
  const table = n.reconciler.table();
  return {
    mode: n.mode,
    vni: n.vni,
    port: n.port,
    device: n.vxlan?.ifname ?? null,
    uplink: n.uplink ?? null,
    remote: table?.remote.length ?? 0,
    skipped: table?.rows.filter((r) => r.skipped).length ?? 0,
    lastRun: last ? { at: last.at, ms: last.ms } : null,
  };
}

export function nodeRoutes(server: ApiServer, c: RouteContext): void {
  server.route('GET', '/v1/nodes', async () => {
    const n = c.nodes;
    const table = n?.reconciler.table();
    if (!n || !table) return { status: 200, body: [] };
    const entries = new Map(c.datapath.tunnelMaps().entries().map((e) => [e.cidr, e]));
    const routes = new Set((await c.manager.hostNs.listRoutes({ family: 4 })).filter((r) => r.protocol === RTPROT_KELP_NODE).map((r) => r.dst));
    const body: NodeView[] = table.rows.map((r) => {
      const routed = !r.self && !r.skipped;
      return {
        name: r.name,
        self: r.self,
        address: r.address ?? null,
        podCidrs: r.podCidrs,
        tunnel: routed ? r.podCidrs.every((cidr) => entries.get(cidr)?.nodeIp === r.address) : null,
        route: routed ? r.podCidrs.every((cidr) => routes.has(cidr)) : null,
        skipped: r.skipped ?? null,
      };
    });
    return { status: 200, body };
  });
}
