// Endpoint selection for one Service port, as kube-proxy does it (Kubernetes 1.34):
// - backendsForPort mirrors EndpointSliceCache.addEndpoints (pkg/proxy/endpointslicecache.go):
//   the backend port comes from the slice's port of the same name and protocol, so a named
//   targetPort may resolve differently per slice; only the first address of an endpoint is used;
//   duplicates (an endpoint moving between slices, a reused pod IP) keep a non-terminating one.
// - portTrafficPolicy mirrors BaseServicePortInfo.UsesClusterEndpoints/UsesLocalEndpoints
//   (pkg/proxy/serviceport.go).
// - categorizeEndpoints mirrors CategorizeEndpoints and topologyModeFromHints
//   (pkg/proxy/topology.go) with the PreferSameTrafficDistribution gate on (beta, default since 1.34).
// As upstream, the Service's trafficDistribution is not read here: the EndpointSlice controller
// turns it into hints (zone hints for PreferClose/PreferSameZone, node and zone hints for
// PreferSameNode), and the proxy follows the hints, checked over the ready endpoints only.
import { IpFamily, tryParseIp } from '../ipam/ip';
import { EndpointSliceObject } from '../sources/objects/endpointslice';
import { ServiceObject, ServicePort } from '../sources/objects/service';

/** One endpoint of a Service port, as the proxy sees it. */
export interface Backend {
  /** The endpoint's first address: addresses are fungible (https://issue.k8s.io/106267). */
  address: string;
  port: number;
  /** On this node: its nodeName is this node's (non-empty) name. */
  local: boolean;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  /** Zones the endpoint is hinted for; empty: no zone hint. */
  zoneHints: ReadonlySet<string>;
  /** Nodes the endpoint is hinted for; empty: no node hint. */
  nodeHints: ReadonlySet<string>;
}

/**
 * The slices as the proxy should see them once Node objects are in use (the store holds any):
 * an endpoint whose nodeName names no known Node is left out, so a node that goes away takes its
 * backends with it at once, not when something deletes its pods (in standalone mode nothing
 * does). Endpoints without a nodeName, or on this node, always stay. A slice with nothing to
 * leave out is passed on as the same object, and a filtered one is reused while its input and
 * the known nodes are unchanged, so the compiler's per-Service memo still holds.
 */
export class KnownNodeFilter {
  private memo = new WeakMap<EndpointSliceObject, { known: string; out: EndpointSliceObject }>();

  apply(slices: readonly EndpointSliceObject[], nodes: readonly { metadata: { name: string } }[], nodeName: string): EndpointSliceObject[] {
    if (nodes.length === 0) return [...slices];
    const names = new Set(nodes.map((n) => n.metadata.name));
    const keep = (nn: string | undefined) => nn === undefined || nn === '' || nn === nodeName || names.has(nn);
    let known: string | undefined;
    // Indexed loops, no closure per slice: 10,000 slices a run, most with nothing to drop.
    const out = new Array<EndpointSliceObject>(slices.length);
    for (let i = 0; i < slices.length; i++) {
      const slice = slices[i];
      const eps = slice.endpoints;
      let all = true;
      for (let k = 0; k < eps.length; k++) {
        // keep(), written out: this loop meets 20,000 endpoints on a cold start.
        const nn = eps[k].nodeName;
        if (nn !== undefined && nn !== '' && nn !== nodeName && !names.has(nn)) {
          all = false;
          break;
        }
      }
      if (all) {
        out[i] = slice;
        continue;
      }
      known ??= [...names].sort().join(',');
      const m = this.memo.get(slice);
      if (m?.known === known) {
        out[i] = m.out;
        continue;
      }
      const filtered = { ...slice, endpoints: eps.filter((ep) => keep(ep.nodeName)) };
      this.memo.set(slice, { known, out: filtered });
      out[i] = filtered;
    }
    return out;
  }
}

/** "address:port", "[address]:port" for IPv6: the identity of a backend. */
export function backendKey(b: Pick<Backend, 'address' | 'port'>): string {
  return b.address.includes(':') ? `[${b.address}]:${b.port}` : `${b.address}:${b.port}`;
}

const NO_HINTS: ReadonlySet<string> = new Set();

/**
 * The backends of `port` for one address family, from the Service's slices in the order given.
 * A slice without a port of the same name ("" for an unnamed one) and protocol, or whose
 * matching port has no number, contributes nothing to this port.
 */
export function backendsForPort(port: Pick<ServicePort, 'name' | 'protocol'>, slices: readonly EndpointSliceObject[], family: IpFamily, nodeName: string): Backend[] {
  const name = port.name ?? '';
  const addressType = family === 4 ? 'IPv4' : 'IPv6';
  // Indexed loops and no map for a few endpoints: this runs once per Service port on a cold
  // start (10,000 times), mostly before the JIT has optimised it, where each for-of step and
  // each small Map is an allocation.
  const out: Backend[] = [];
  let byKey: Map<string, number> | undefined;
  for (let s = 0; s < slices.length; s++) {
    const slice = slices[s];
    if (slice.addressType !== addressType) continue;
    let match: number | undefined;
    for (let k = 0; k < slice.ports.length; k++) {
      const p = slice.ports[k];
      if (p.name === name && p.protocol === port.protocol) {
        match = p.port;
        break;
      }
    }
    if (match === undefined) continue;
    const eps = slice.endpoints;
    for (let e = 0; e < eps.length; e++) {
      const ep = eps[e];
      const c = ep.conditions;
      const h = ep.hints;
      // Validated slices hold canonical addresses of their addressType.
      const b: Backend = {
        address: ep.addresses[0],
        port: match,
        local: nodeName !== '' && ep.nodeName === nodeName,
        ready: c.ready,
        serving: c.serving,
        terminating: c.terminating,
        zoneHints: h?.forZones.length ? new Set(h.forZones.map((z) => z.name)) : NO_HINTS,
        nodeHints: h?.forNodes.length ? new Set(h.forNodes.map((n) => n.name)) : NO_HINTS,
      };
      // The same address and port again (backendKey's identity): a non-terminating one replaces it in place.
      let at = -1;
      if (byKey) at = byKey.get(backendKey(b)) ?? -1;
      else {
        for (let i = 0; i < out.length; i++) {
          if (out[i].address === b.address && out[i].port === b.port) {
            at = i;
            break;
          }
        }
      }
      if (at < 0) {
        out.push(b);
        if (byKey) byKey.set(backendKey(b), out.length - 1);
        else if (out.length === 16) {
          byKey = new Map();
          for (let i = 0; i < out.length; i++) byKey.set(backendKey(out[i]), i);
        }
      } else if (!b.terminating) out[at] = b;
    }
  }
  return out;
}

/** Which views of its endpoints a Service port needs on this node. */
export interface PortTrafficPolicy {
  /** Traffic follows the Cluster policy somewhere (internal Cluster, or reachable from outside). */
  usesCluster: boolean;
  /** Traffic follows the Local policy somewhere (internal Local, or external Local from outside). */
  usesLocal: boolean;
}

/** Reachable by something other than its cluster IP, for this address family. */
export function externallyAccessible(svc: ServiceObject, port: Pick<ServicePort, 'nodePort'>, family: IpFamily): boolean {
  if (port.nodePort !== undefined && port.nodePort !== 0) return true;
  if (svc.spec.externalIPs.some((ip) => tryParseIp(ip)?.family === family)) return true;
  // Only VIP-mode ingress IPs are the proxy's to program; a Proxy-mode balancer rewrites the destination.
  return svc.status.loadBalancer.ingress.some((ing) => ing.ip !== undefined && (ing.ipMode ?? 'VIP') === 'VIP' && tryParseIp(ing.ip)?.family === family);
}

export function portTrafficPolicy(svc: ServiceObject, port: Pick<ServicePort, 'nodePort'>, family: IpFamily): PortTrafficPolicy {
  const internalLocal = svc.spec.internalTrafficPolicy === 'Local';
  // The normalised Service has externalTrafficPolicy exactly when the Service is externally accessible.
  const externalLocal = svc.spec.externalTrafficPolicy === 'Local';
  const external = externallyAccessible(svc, port, family);
  // Even with externalTrafficPolicy Local, traffic from pods on this node to an external address
  // short-circuits to the Cluster view.
  return { usesCluster: !internalLocal || external, usesLocal: internalLocal || (externalLocal && external) };
}

export type TopologyMode = '' | 'PreferSameZone' | 'PreferSameNode';

/** This node: its name, and its topology.kubernetes.io/zone label ("" or absent when unset). */
export interface NodeTopology {
  name: string;
  zone?: string;
}

export interface CategorizedEndpoints {
  /** The Cluster view, topology applied; empty when the port never uses the Cluster policy. */
  cluster: Backend[];
  /** The Local view; empty when the port never uses the Local policy or has no usable local endpoint. */
  local: Backend[];
  /** Every backend this node may send to: the union of both views, in input order. */
  allReachable: Backend[];
  /** A usable endpoint exists somewhere in the cluster (even if none is reachable from here). */
  hasAnyEndpoints: boolean;
  /** How the Cluster view was narrowed by hints ("" when it was not, or not computed). */
  topologyMode: TopologyMode;
}

const servingTerminating = (b: Backend): boolean => b.serving && b.terminating;

/**
 * The topology the hints allow: same node when every ready endpoint has a node hint and one names
 * this node, else same zone when every ready endpoint has a zone hint and one names this zone,
 * else none. Non-ready endpoints neither need nor count hints.
 */
export function topologyModeFromHints(backends: readonly Backend[], node: NodeTopology): TopologyMode {
  const zone = node.zone ?? '';
  let ready = 0;
  let allNode = true;
  let anyNode = false;
  let allZone = true;
  let anyZone = false;
  for (let i = 0; i < backends.length; i++) {
    const b = backends[i];
    if (!b.ready) continue;
    ready++;
    if (b.nodeHints.size === 0) allNode = false;
    else if (!anyNode && b.nodeHints.has(node.name)) anyNode = true;
    if (b.zoneHints.size === 0) allZone = false;
    else if (!anyZone && b.zoneHints.has(zone)) anyZone = true;
  }
  if (ready === 0) return '';
  if (allNode && anyNode) return 'PreferSameNode';
  if (allZone && anyZone) return 'PreferSameZone';
  return '';
}

function availableForTopology(b: Backend, mode: TopologyMode, node: NodeTopology): boolean {
  switch (mode) {
    case '':
      return true;
    case 'PreferSameNode':
      return b.nodeHints.has(node.name);
    case 'PreferSameZone':
      return b.zoneHints.has(node.zone ?? '');
  }
}

/**
 * The usable endpoints of a Service port on this node. Ready endpoints serve; when none is
 * (in that view), serving terminating ones do, decided separately for the Cluster and the Local view.
 */
export function categorizeEndpoints(backends: readonly Backend[], policy: PortTrafficPolicy, node: NodeTopology): CategorizedEndpoints {
  const out: CategorizedEndpoints = { cluster: [], local: [], allReachable: [], hasAnyEndpoints: false, topologyMode: '' };
  if (backends.length === 0) return out;

  const n = backends.length;
  if (policy.usesCluster) {
    const mode = (out.topologyMode = topologyModeFromHints(backends, node));
    const cluster: Backend[] = [];
    for (let i = 0; i < n; i++) if (backends[i].ready && availableForTopology(backends[i], mode, node)) cluster.push(backends[i]);
    // A hinted mode always keeps a ready endpoint, so an empty view means none is ready anywhere.
    if (cluster.length === 0) for (let i = 0; i < n; i++) if (servingTerminating(backends[i])) cluster.push(backends[i]);
    out.cluster = cluster;
    out.hasAnyEndpoints = cluster.length > 0;
  }
  if (policy.usesLocal) {
    const local: Backend[] = [];
    for (let i = 0; i < n; i++) {
      const b = backends[i];
      if (b.ready || servingTerminating(b)) out.hasAnyEndpoints = true;
      if (b.local && b.ready) local.push(b);
    }
    if (local.length === 0) for (let i = 0; i < n; i++) if (backends[i].local && servingTerminating(backends[i])) local.push(backends[i]);
    out.local = local;
  }
  // Both views keep input order: their union in input order is a merge, no set needed.
  const { cluster, local } = out;
  if (local.length === 0) out.allReachable = cluster.slice();
  else if (cluster.length === 0) out.allReachable = local.slice();
  else {
    const all: Backend[] = [];
    let c = 0;
    let l = 0;
    for (let i = 0; i < n && (c < cluster.length || l < local.length); i++) {
      const b = backends[i];
      let hit = false;
      if (c < cluster.length && cluster[c] === b) {
        c++;
        hit = true;
      }
      if (l < local.length && local[l] === b) {
        l++;
        hit = true;
      }
      if (hit) all.push(b);
    }
    out.allReachable = all;
  }
  return out;
}
