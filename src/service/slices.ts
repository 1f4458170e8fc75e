// Standalone mode: EndpointSlices derived from Service selectors and known pods, as Kubernetes'
// EndpointSlice controller makes them (pkg/controller/endpointslice), for Services whose
// manifests come with no slice of their own. In Kubernetes mode the API's slices are the truth
// and nothing here runs.
//
// As the controller does:
//   - only Services with a selector, not ExternalName; a pod of the Service's namespace whose
//     labels hold every selector pair;
//   - pods in a terminal phase (Succeeded, Failed) and pods without an address of the slice's
//     family are left out;
//   - each Service port resolves per pod: a number as is, a name through the pod's container
//     ports of that name and protocol; a port that does not resolve is left out of that pod's
//     list, and pods are grouped into slices by their resolved port list (at most 100 endpoints
//     a slice);
//   - trafficDistribution PreferClose / PreferSameZone hints each endpoint for its zone,
//     PreferSameNode for its node and zone.
// A Pod object has no readiness or deletion here, so a known pod is ready and serving. A pod's
// addresses are its status.podIPs, else those its kelp endpoint on this node holds (standalone
// pods seldom carry a status); such a pod is on this node.
import { createHash } from 'node:crypto';
import { IpFamily, tryParseIp } from '../ipam/ip';
import { API_VERSION_DISCOVERY, Endpoint, EndpointPort, EndpointSliceObject, LABEL_MANAGED_BY, LABEL_SERVICE_NAME } from '../sources/objects/endpointslice';
import { LABEL_ZONE, NodeObject } from '../sources/objects/node';
import { namedPort, PodObject } from '../sources/objects/pod';
import type { ServiceObject } from '../sources/objects/service';

/** The managed-by label value of the slices kelp derives. */
export const KELP_SLICE_MANAGER = 'kelp';
export const MAX_ENDPOINTS_PER_SLICE = 100;

export interface DeriveInputs {
  services: readonly ServiceObject[];
  pods: readonly PodObject[];
  nodes: readonly NodeObject[];
  /** The slices the manifests hold: a Service with any of its own gets none derived. */
  slices: readonly EndpointSliceObject[];
  /** Pods with an endpoint on this node: `namespace/name` → its addresses. */
  localPodIps: ReadonlyMap<string, readonly string[]>;
  nodeName: string;
}

function podAddress(pod: PodObject, family: IpFamily, local: readonly string[] | undefined): string | undefined {
  const own = pod.status?.podIPs.map((p) => p.ip) ?? [];
  const all = own.length > 0 ? own : (local ?? []);
  return all.find((ip) => tryParseIp(ip)?.family === family);
}

function endpointPorts(svc: ServiceObject, pod: PodObject): EndpointPort[] {
  const out: EndpointPort[] = [];
  for (const sp of svc.spec.ports) {
    const port = typeof sp.targetPort === 'number' ? sp.targetPort : namedPort(pod, sp.targetPort, sp.protocol);
    if (port === undefined) continue;
    out.push({ name: sp.name ?? '', protocol: sp.protocol, port });
  }
  return out;
}

/** Families the Service is served in: its cluster IPs', IPv4 when it has none. */
function families(svc: ServiceObject): IpFamily[] {
  const out = new Set<IpFamily>();
  for (const ip of svc.spec.clusterIPs) {
    const f = tryParseIp(ip)?.family;
    if (f) out.add(f);
  }
  return out.size > 0 ? [...out] : [4];
}

/** Some Service has a selector and is not ExternalName: the only ones slices are derived for. */
export function selectsAny(services: readonly ServiceObject[]): boolean {
  for (let i = 0; i < services.length; i++) if (services[i].spec.selector && services[i].spec.type !== 'ExternalName') return true;
  return false;
}

const shortHash = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 8);

/** The derived slices of every selected Service without slices of its own, in a stable order. */
export function deriveEndpointSlices(inputs: DeriveInputs): EndpointSliceObject[] {
  // No Service to derive for (10,000 Services from manifests with slices of their own, say):
  // nothing to index.
  if (!selectsAny(inputs.services)) return [];
  const hasOwn = new Set<string>();
  for (const s of inputs.slices) {
    const svc = s.metadata.labels[LABEL_SERVICE_NAME];
    if (svc) hasOwn.add(`${s.metadata.namespace}/${svc}`);
  }
  const zoneOf = new Map<string, string>();
  for (const n of inputs.nodes) {
    const z = n.metadata.labels[LABEL_ZONE];
    if (z) zoneOf.set(n.metadata.name, z);
  }
  const podsByNs = new Map<string, PodObject[]>();
  for (const p of inputs.pods) {
    const list = podsByNs.get(p.metadata.namespace);
    if (list) list.push(p);
    else podsByNs.set(p.metadata.namespace, [p]);
  }
  for (const list of podsByNs.values()) list.sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));

  const out: EndpointSliceObject[] = [];
  for (const svc of inputs.services) {
    const { namespace, name } = svc.metadata;
    const selector = svc.spec.selector;
    if (!selector || svc.spec.type === 'ExternalName' || hasOwn.has(`${namespace}/${name}`)) continue;
    const pairs = Object.entries(selector);
    const selected = (podsByNs.get(namespace) ?? []).filter(
      (p) => p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed' && pairs.every(([k, v]) => p.metadata.labels[k] === v),
    );
    const td = svc.spec.trafficDistribution;
    for (const family of families(svc)) {
      // Pods grouped by their resolved port list, as the controller's endpoint meta does.
      const groups = new Map<string, { ports: EndpointPort[]; endpoints: Endpoint[] }>();
      for (const pod of selected) {
        const ref = `${namespace}/${pod.metadata.name}`;
        const local = inputs.localPodIps.get(ref);
        const address = podAddress(pod, family, local);
        if (!address) continue;
        const ports = endpointPorts(svc, pod);
        const key = JSON.stringify(ports);
        let g = groups.get(key);
        if (!g) groups.set(key, (g = { ports, endpoints: [] }));
        // An endpoint of kelp's here is a pod on this node, whatever its manifest says.
        const nodeName = local ? inputs.nodeName : pod.spec.nodeName;
        const ep: Endpoint = { addresses: [address], conditions: { ready: true, serving: true, terminating: false } };
        if (nodeName) ep.nodeName = nodeName;
        const zone = nodeName ? zoneOf.get(nodeName) : undefined;
        if (zone) ep.zone = zone;
        if (td === 'PreferClose' || td === 'PreferSameZone') {
          if (zone) ep.hints = { forZones: [{ name: zone }], forNodes: [] };
        } else if (td === 'PreferSameNode' && nodeName) {
          ep.hints = { forZones: zone ? [{ name: zone }] : [], forNodes: [{ name: nodeName }] };
        }
        ep.targetRef = { kind: 'Pod', namespace, name: pod.metadata.name, ...(pod.metadata.uid ? { uid: pod.metadata.uid } : {}) };
        g.endpoints.push(ep);
      }
      const addressType = family === 4 ? 'IPv4' : 'IPv6';
      for (const [key, g] of [...groups].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
        for (let i = 0; i * MAX_ENDPOINTS_PER_SLICE < g.endpoints.length; i++) {
          out.push({
            apiVersion: API_VERSION_DISCOVERY,
            kind: 'EndpointSlice',
            metadata: {
              namespace,
              // The Service name is a DNS-1035 label (≤ 63): the slice name stays a valid subdomain.
              name: `${name}-kelp-${family === 4 ? 'v4' : 'v6'}-${shortHash(key)}-${i}`,
              labels: { [LABEL_SERVICE_NAME]: name, [LABEL_MANAGED_BY]: KELP_SLICE_MANAGER },
              annotations: {},
            },
            addressType,
            endpoints: g.endpoints.slice(i * MAX_ENDPOINTS_PER_SLICE, (i + 1) * MAX_ENDPOINTS_PER_SLICE),
            ports: g.ports,
          });
        }
      }
    }
  }
  return out;
}

/**
 * deriveEndpointSlices with memory: a slice whose content is as last time comes back as the same
 * object, so the compiler (which keys its memory on object identity, as the store's objects
 * are) redoes only the Services whose derived slices changed.
 */
export class SliceDeriver {
  private last = new Map<string, { json: string; slice: EndpointSliceObject }>();

  derive(inputs: DeriveInputs): EndpointSliceObject[] {
    const next = new Map<string, { json: string; slice: EndpointSliceObject }>();
    const out = deriveEndpointSlices(inputs).map((slice) => {
      const key = `${slice.metadata.namespace}/${slice.metadata.name}`;
      const json = JSON.stringify(slice);
      const prev = this.last.get(key);
      const kept = prev && prev.json === json ? prev : { json, slice };
      next.set(key, kept);
      return kept.slice;
    });
    this.last = next;
    return out;
  }
}
