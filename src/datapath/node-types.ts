// The contract between the node reconciler (src/reconcile/nodes.ts: Node objects → remote nodes)
// and the cross-node datapath (bpf/overlay.c, the remote branch of bpf/lxc.c, src/datapath/tunnel.ts
// and src/datapath/attach/overlay.ts): what the maps hold and what the agent sets up, in the
// agent's terms.
//
// Every node runs its own agent; the cluster's shared state is the object store (Node and Pod
// objects from the Kubernetes API, or Node/Pod manifests in standalone mode). Nothing is
// negotiated between agents: each derives the same tables from the same objects.
//
// Routing a packet from a local pod to an address that is not a local endpoint:
//   1. one LPM lookup of the destination in kelp_tunnel4 (remote pod CIDRs → the node holding it).
//   2. hit, routing mode VXLAN: egress policy decided as today (policy4_check with the peer's
//      identity from kelp_ipcache4), then the tunnel key is set (bpf_skb_set_tunnel_key: remote =
//      the node's underlay address, VNI from kelp_overlay_config) and the packet is redirected to
//      the kelp VXLAN device (collect_md / "external" mode: one device per node, no per-peer
//      devices, no FDB entries). The inner MAC addresses are rewritten to the VXLAN device's own.
//   3. hit, routing mode native: egress policy, then routed by the node's route (the agent installs
//      a route per remote pod CIDR via the node's underlay address), looked up by kelp_from_pod
//      itself (bpf_fib_lookup) and sent to the uplink past the stack. No masquerade between pod
//      CIDRs: every known node's pod CIDR is in kelp_nomasq4.
//   4. miss: as today (the node's stack; masquerade when it leaves by the uplink).
// Receiving (VXLAN): kelp_from_overlay (tc ingress of the VXLAN device) takes the decapsulated
// packet for a local endpoint, decides the receiver's ingress policy with the sender's identity
// from kelp_ipcache4 (remote pods are in the ip cache: the policy compiler sees every Pod in the
// store, not only local ones), reverse-NATs a service reply (lb4_reverse) and delivers it with
// bpf_redirect_peer; anything else goes to the node's stack. Native routing receives on the uplink:
// kelp_host_ingress takes a packet from a native kelp_tunnel4 pod CIDR to a local endpoint and
// does the same (lb4_reverse, ingress policy, redirect_peer); other traffic to a pod goes through
// the stack and kelp_to_pod.
// The node's own traffic to a remote pod (socket LB to a remote backend, probes) follows the
// node's routes: VXLAN mode routes each remote pod CIDR onto the VXLAN device (NOARP), whose tc
// egress program (kelp_to_overlay) sets the tunnel key from kelp_tunnel4 (a miss is dropped,
// DROP_NO_TUNNEL); native mode routes via the node's underlay address. Its source is the node's
// underlay address (the VXLAN device has none), so the pod's answer goes to that address: in
// VXLAN mode kelp_tunnel4 also holds each remote node's address as a /32 (TUNNEL_F_ENCAP, the
// node itself as nodeIp), so the answer comes back through the tunnel (kelp_from_overlay hands
// it to the stack) instead of leaving a pod source on the underlay, which a strict rp_filter on
// the node (its route to that pod CIDR is the VXLAN device) or the underlay would drop. Pods
// reaching another node's own address (kubelet, host-network pods) take the same tunnel.
// Pins: overlay.o's links are pinned as <bpfRoot>/links/overlay-<device>-<ingress|egress>.
//
// Identity does not ride in the packet (no VXLAN-GBP): identities are node-local numbers, and the
// receiver's ip cache lookup (one LPM lookup it does anyway for local senders) is exact without
// any cross-node agreement on numbers. GBP would save nothing and would need one.

export type RoutingMode = 'vxlan' | 'native';

/** Defaults as flannel's VXLAN backend has them (the seeds' `vxlanId`, `port`). */
export const DEFAULT_VNI = 1;
export const DEFAULT_VXLAN_PORT = 8472;
/** Outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8. */
export const VXLAN_OVERHEAD = 50;
/** The kelp VXLAN device in each node's namespace. */
export const VXLAN_DEVICE = 'kelp_vxlan';

/** kelp_tunnel4 value flags. */
/** Reached through the VXLAN device (VXLAN mode); without it the kernel routes (native). */
export const TUNNEL_F_ENCAP = 1 << 0;

/** One remote pod CIDR: kelp_tunnel4 (LPM trie, key = IPv4 prefix). */
export interface TunnelEntry {
  /** A remote node's pod CIDR (IPv4, canonical), or, in VXLAN mode, its address as a /32 (a
   * pod's reply to the node goes back through the tunnel: src/reconcile/nodes.ts). */
  cidr: string;
  /** That node's underlay address (its InternalIP): the outer destination, or the next hop. */
  nodeIp: string;
  flags: number;
}

/** kelp_overlay_config (array, one entry): what kelp_from_pod and kelp_to_overlay need. */
export interface OverlayConfig {
  mode: RoutingMode;
  vni: number;
  /** The VXLAN device's ifindex in the node's namespace (0 in native mode). */
  vxlanIfindex: number;
  /**
   * The VXLAN device's MAC (required in VXLAN mode; rtnl.createVxlan returns it): kelp_from_pod
   * writes it as the inner frame's source and destination, as the kernel does for the node's own
   * packets on the NOARP device.
   */
  vxlanMac?: string;
}

/** A node other than this one, as the node reconciler derives it from a Node object. */
export interface RemoteNode {
  name: string;
  /** InternalIP (else ExternalIP): the underlay address. */
  address: string;
  /** IPv4 pod CIDRs (spec.podCIDRs). */
  podCidrs: string[];
}

/** What the datapath offers the node reconciler (src/datapath/tunnel.ts implements it). */
export interface TunnelMaps {
  /** kelp_tunnel4's current contents. */
  entries(): TunnelEntry[];
  put(e: TunnelEntry): void;
  remove(cidr: string): void;
  setOverlayConfig(c: OverlayConfig): void;
}

// Agent surface (flags; src/agent/options.ts), shared by the node reconciler, the tests and the
// benchmark:
//   --routing-mode vxlan|native   (default vxlan; the seeds' `directRouting: true` means native)
//   --vxlan-id N                  (VNI, default 1; the seeds' `vxlanId`)
//   --vxlan-port N                (UDP port, default 8472; the seeds' `port`)
//   --uplink IFNAME               (the underlay device, as for masquerade: default the default
//                                  route's device)
//   --node-name NAME              (this node's Node object: its podCIDRs give --pod-cidr and its
//                                  InternalIP the node address, in both source modes)
//   --mtu N                       (pod MTU; default: the uplink's MTU, minus VXLAN_OVERHEAD in
//                                  VXLAN mode)
// Datapath surface (src/datapath/datapath.ts):
//   datapath.tunnelMaps(): TunnelMaps
//   datapath.attachOverlay({ ifindex, ifname }): attaches kelp_from_overlay / kelp_to_overlay
//     (tcx ingress / egress, pinned links: an agent restart moves them in place, no gap). Call it
//     after enableMasquerade: overlay.o takes the masquerade address at load, to hand a remote
//     backend's answers to NodePort clients (SNAT'd by host.c) back to the uplink.
// Netlink surface (src/netlink/rtnl.ts):
//   rtnl.createVxlan({ name, port, mtu, local? }) → LinkInfo (ifindex, mac): an "external"
//     (collect_md) VXLAN device, NOARP, learning off, up; existing with the same settings = no
//     change, different = error. No VNI: an external device has none (iproute2 refuses both; the
//     device receives every VNI on its port); the VNI rides per packet, from kelp_overlay_config.
