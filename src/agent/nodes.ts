// Several nodes, the agent's wiring: the pod MTU, the kelp VXLAN device and the overlay
// programs (VXLAN mode), kelp_overlay_config, and the node reconciler (src/reconcile/nodes.ts)
// that keeps kelp_tunnel4, the routes to other nodes' pod CIDRs and kelp_nomasq4 equal to the
// store's Node objects. docs/nodes.md says what each mode does.
// Restart: the device is kept when its settings match (only its MTU is changed in place), the
// overlay programs move onto the new agent's instances in place, and the reconciler's first run
// finds the maps and routes as they were: cross-node flows see no gap.
import path from 'node:path';
import type { Datapath } from '../datapath/loader';
import { RoutingMode, VXLAN_DEVICE, VXLAN_OVERHEAD } from '../datapath/node-types';
import type { Logger } from '../log';
import type { Rtnl } from '../netlink';
import type { ReconcileLoop } from '../reconcile/loop';
import { desiredNoMasquerade, nodeTable, nodesReconciler, NodesReconciler } from '../reconcile/nodes';
import type { ObjectStore } from '../sources/store';
import type { AgentOptions } from './options';

/** The MTU pods get when neither --mtu nor an uplink says otherwise. */
const FALLBACK_UPLINK_MTU = 1500;

/**
 * The pod MTU: --mtu; else the uplink's MTU, less the VXLAN overhead in VXLAN mode (a pod packet
 * and its outer headers must fit the underlay: 1450 on a 1500 underlay).
 */
export function podMtuFor(o: Pick<AgentOptions, 'mtu' | 'routingMode'>, uplinkMtu: number | undefined): number {
  if (o.mtu !== undefined) return o.mtu;
  const base = uplinkMtu ?? FALLBACK_UPLINK_MTU;
  return o.routingMode === 'vxlan' ? base - VXLAN_OVERHEAD : base;
}

/**
 * kelp_nomasq4's node part before masquerade is enabled (as the node reconciler keeps it), so an
 * agent restart never masquerades a cross-node flow while its reconciler has not run yet.
 */
export function nodeNoMasquerade(objects: Pick<ObjectStore, 'list'>, self: { name: string; podCidr: string }, mode: RoutingMode): string[] {
  return desiredNoMasquerade(nodeTable(objects.list('Node'), self), mode);
}

export interface AgentNodesDeps {
  opts: Pick<AgentOptions, 'routingMode' | 'vxlanId' | 'vxlanPort' | 'nodeName' | 'bpfRoot'>;
  objects: ObjectStore;
  datapath: Datapath;
  rtnl: Rtnl;
  reconcilers: ReconcileLoop;
  podCidr: string;
  podMtu: number;
  /** The underlay device (findUplink in agent.ts); native mode routes over it. */
  uplink?: { ifindex: number; ifname: string; mtu: number };
  /** kelp_nomasq4 is there to keep (masquerade enabled). */
  masquerade: boolean;
  log: Logger;
}

export interface AgentNodes {
  mode: RoutingMode;
  vni: number;
  port: number;
  /** The kelp VXLAN device (VXLAN mode). */
  vxlan?: { ifindex: number; ifname: string; mtu: number };
  uplink?: string;
  reconciler: NodesReconciler;
}

/** Sets up the routing mode and adds the node reconciler to the loop (it runs with the next runNow). */
export async function startNodes(d: AgentNodesDeps): Promise<AgentNodes> {
  const { opts, log } = d;
  const mode = opts.routingMode;
  const tunnel = d.datapath.tunnelMaps();
  let vxlan: AgentNodes['vxlan'];
  if (mode === 'vxlan') {
    if (d.uplink && d.podMtu > d.uplink.mtu - VXLAN_OVERHEAD) {
      log.warn({ podMtu: d.podMtu, uplink: d.uplink.ifname, uplinkMtu: d.uplink.mtu }, `pod MTU above the uplink's less the VXLAN overhead (${d.uplink.mtu - VXLAN_OVERHEAD}): large packets to other nodes will not fit`);
    }
    // The one setting an existing device may change without a gap: its MTU (--mtu, or the uplink's).
    const found = await d.rtnl.vxlanOf(VXLAN_DEVICE);
    if (found?.vxlan && found.vxlan.mtu !== d.podMtu) {
      await d.rtnl.setMtu(found.link.index, d.podMtu);
      log.info({ device: VXLAN_DEVICE, from: found.vxlan.mtu, to: d.podMtu }, 'VXLAN device MTU changed');
    }
    const dev = await d.rtnl.createVxlan({ name: VXLAN_DEVICE, port: opts.vxlanPort, mtu: d.podMtu });
    d.datapath.attachOverlay({ ifindex: dev.index, ifname: dev.name });
    tunnel.setOverlayConfig({ mode, vni: opts.vxlanId, vxlanIfindex: dev.index, vxlanMac: dev.mac });
    vxlan = { ifindex: dev.index, ifname: dev.name, mtu: d.podMtu };
    log.info({ device: dev.name, ifindex: dev.index, vni: opts.vxlanId, port: opts.vxlanPort, mtu: d.podMtu }, 'VXLAN routing');
  } else {
    if (!d.uplink) throw new Error('--routing-mode native: no uplink to route other nodes\' pod CIDRs over (no default route; pass --uplink)');
    // An earlier agent's VXLAN device (the mode was switched): nothing routes onto it any more.
    // Its overlay links go with it; their pins (<bpfRoot>/links/overlay-<device>-<dir>) are
    // removed too, or they would outlive every later agent.
    const old = await d.rtnl.vxlanOf(VXLAN_DEVICE);
    if (old?.vxlan) {
      await d.rtnl.deleteLink(old.link.index);
      log.info({ device: VXLAN_DEVICE }, 'native routing: the VXLAN device of an earlier VXLAN-mode agent removed');
    }
    for (const dir of ['ingress', 'egress']) d.datapath.removePinnedLink(path.join(opts.bpfRoot, 'links', `overlay-${VXLAN_DEVICE}-${dir}`));
    tunnel.setOverlayConfig({ mode, vni: opts.vxlanId, vxlanIfindex: 0 });
    log.info({ uplink: d.uplink.ifname }, 'native routing');
  }

  const reconciler = nodesReconciler({
    objects: d.objects,
    self: { name: opts.nodeName, podCidr: d.podCidr },
    routing: { mode, vxlanIfindex: vxlan?.ifindex ?? 0, uplinkIfindex: d.uplink?.ifindex ?? 0 },
    tunnel,
    routes: d.rtnl,
    setNoMasquerade: d.masquerade ? (cidrs) => d.datapath.setNoMasquerade(cidrs) : undefined,
    log,
  });
  d.reconcilers.add(reconciler);
  return { mode, vni: opts.vxlanId, port: opts.vxlanPort, vxlan, uplink: d.uplink?.ifname, reconciler };
}
