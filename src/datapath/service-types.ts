// The contract between the service compiler (src/service) and the service datapath (bpf/lib/lb.h,
// the tc programs, bpf/sock.c; src/datapath/service.ts writes the maps): what the load-balancing
// maps hold, in the agent's terms.
//
// A packet or a connect() to (address, port, protocol) is load-balanced when kelp_lb4_frontends
// has that key:
//   1. frontend → { svcId, two views, flags, affinityTimeout }. A view is a backend set and its
//      count: (setId, count) for clients from outside the cluster (packets arriving on the
//      uplink), (inSetId, inCount) for clients inside it (this node's pods, at kelp_from_pod or
//      their sockets; the node itself, at its sockets or its own packets). They differ only on an
//      external address of an externalTrafficPolicy Local Service: outside clients get its Local
//      view, inside ones its Cluster view, as kube-proxy short-circuits pod and node traffic to an
//      external destination to the Service's cluster chain. count 0: no usable backend — the
//      client is rejected at once (TCP RST / ICMP port unreachable per packet, ECONNREFUSED at
//      connect()), unless FRONTEND_DROP_NO_LOCAL (FRONTEND_IN_DROP_NO_LOCAL for the in-cluster
//      view) says to drop silently (a Local policy on a node without a local endpoint, as
//      kube-proxy does).
//   2. FRONTEND_SOURCE_RANGES: the client address must be in kelp_lb4_source_ranges for svcId
//      (loadBalancerSourceRanges), else dropped.
//   3. FRONTEND_AFFINITY: a client seen within affinityTimeout seconds (kelp_lb4_affinity, keyed by
//      svcId and client address) goes to the same backend while it is still in the set.
//   4. else the slot is Maglev's: kelp_lb4_maglev[setId][hash(flow) % M] when the set has a table
//      (count > 1), slot 0 otherwise; kelp_lb4_backends[(setId, slot)] is the backend (setId,
//      count: the client's view).
//   5. the flow keeps its backend (the service conntrack) until it ends, even when the tables
//      change; a flow whose backend left the set is moved at its next packet (UDP above all).
// A backend set is the ordered list of backends one frontend chooses among: the Cluster view of a
// Service port, or its Local view (externalTrafficPolicy / internalTrafficPolicy Local), already
// filtered by kube-proxy's endpoint categorisation (ready, else serving-terminating; topology
// hints). Frontends of one Service port sharing a view share its set.

/** Frontend flags (kelp_lb4_frontends value). */
export const FRONTEND_AFFINITY = 1 << 0;
export const FRONTEND_SOURCE_RANGES = 1 << 1;
/** No local backend under externalTrafficPolicy Local: drop, do not reject. */
export const FRONTEND_DROP_NO_LOCAL = 1 << 2;
/** NodePort, LoadBalancer ingress or externalIP: reached from outside the cluster. */
export const FRONTEND_EXTERNAL = 1 << 3;
/** NodePort on one of this node's addresses. */
export const FRONTEND_NODEPORT = 1 << 4;
/** FRONTEND_DROP_NO_LOCAL of the in-cluster view (internalTrafficPolicy Local on a node without a local endpoint). */
export const FRONTEND_IN_DROP_NO_LOCAL = 1 << 5;

/** Backend flags. */
export const BACKEND_LOCAL = 1 << 0;
export const BACKEND_TERMINATING = 1 << 1;

export type L4Protocol = 'TCP' | 'UDP' | 'SCTP';

export interface FrontendEntry {
  /** IPv4 address: the ClusterIP, a node address (NodePort), an externalIP or an LB ingress IP. */
  address: string;
  port: number;
  protocol: L4Protocol;
  /** Names the Service port (reverse NAT, affinity, `kelp get services`); stable while it exists. */
  svcId: number;
  /** The backend set clients from outside the cluster choose among (0 with count 0). */
  setId: number;
  /** Backends in the set; 0: reject (or drop with FRONTEND_DROP_NO_LOCAL). */
  count: number;
  /**
   * The in-cluster view (pods, the node): its set and count. Absent: the same as setId and count,
   * with FRONTEND_IN_DROP_NO_LOCAL as FRONTEND_DROP_NO_LOCAL is (the writer fills them in).
   */
  inSetId?: number;
  inCount?: number;
  flags: number;
  /** Seconds, with FRONTEND_AFFINITY. */
  affinityTimeout: number;
}

export interface BackendEntry {
  /** Unique per (address, port, protocol) while it exists: conntrack and socket destruction name it. */
  backendId: number;
  address: string;
  port: number;
  flags: number;
}

export interface BackendSet {
  setId: number;
  /** Slot order: slot i is backends[i]. */
  backends: BackendEntry[];
  /**
   * Maglev table over the slots, present when backends.length > 1. Its length is the set's M:
   * maglevTableSizeFor(backends.length, --maglev-table-size) (src/service/maglev.ts), so sets differ.
   */
  maglev?: Uint16Array;
}

export interface ServiceMapsDesired {
  frontends: FrontendEntry[];
  sets: BackendSet[];
  /** svcId → the client CIDRs loadBalancerSourceRanges allows (canonical IPv4 CIDRs). */
  sourceRanges: Map<number, string[]>;
  /** svcId → `namespace/name:port` for tools and events. */
  names: Map<number, string>;
}
