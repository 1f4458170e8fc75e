// The service compiler: Services, EndpointSlices and this node → the contents of the
// load-balancing maps (src/datapath/service-types.ts says what they mean to the datapath) and
// the model `kelp get services` shows. kube-proxy's semantics (Kubernetes 1.34, its iptables and
// nftables proxiers agree on each point below):
//   - a Service is skipped when it has no cluster IP (headless, or none allocated) or is
//     ExternalName (ShouldSkipService), or when it is labelled service.kubernetes.io/service-proxy-name
//     (kube-proxy's informer never sees it); EndpointSlices with that label or
//     service.kubernetes.io/headless are ignored the same way;
//   - frontends per Service port: each IPv4 cluster IP; the NodePort on each of this node's
//     addresses; each IPv4 externalIP; each IPv4 LoadBalancer ingress IP of ipMode VIP (a Proxy
//     balancer rewrites the destination itself);
//   - the endpoints of a port are ./endpoints.ts's backendsForPort (backend port from the slice's
//     port of the same name and protocol) and categorizeEndpoints (ready, else serving and
//     terminating, per view; topology hints);
//   - the cluster IP chooses among the Cluster view, or the Local view with internalTrafficPolicy
//     Local; external frontends among the Cluster view, or the Local view with
//     externalTrafficPolicy Local;
//   - an empty view: no usable endpoint anywhere → count 0, rejected ("has no endpoints": REJECT);
//     usable endpoints elsewhere but none here under a Local policy → count 0 with
//     FRONTEND_DROP_NO_LOCAL ("has no local endpoints": DROP), internal and external alike;
//   - sessionAffinity ClientIP on every frontend of the port, with its timeout;
//   - loadBalancerSourceRanges (the IPv4 ones; none of this family: unrestricted) on the
//     LoadBalancer ingress IPs only; when a range holds one of this node's addresses the ingress
//     IPs themselves are allowed too (a VIP held locally loops back with itself as the source).
// kube-proxy sends pods' and the node's own traffic to an externalTrafficPolicy Local address
// through the Cluster view; the contract gives a frontend one set, so here every client of an
// external frontend sees the Local view.
import { maglevTable } from './maglev';
import { Backend, backendKey, backendsForPort, categorizeEndpoints, NodeTopology, portTrafficPolicy, TopologyMode } from './endpoints';
import type { ServiceIds } from './ids';
import {
  BACKEND_LOCAL,
  BACKEND_TERMINATING,
  BackendEntry,
  BackendSet,
  FRONTEND_AFFINITY,
  FRONTEND_DROP_NO_LOCAL,
  FRONTEND_EXTERNAL,
  FRONTEND_NODEPORT,
  FRONTEND_SOURCE_RANGES,
  FrontendEntry,
  L4Protocol,
  ServiceMapsDesired,
} from '../datapath/service-types';
import { LABEL_SERVICE_NAME, EndpointSliceObject } from '../sources/objects/endpointslice';
import { LABEL_ZONE, NodeObject } from '../sources/objects/node';
import { LABEL_HEADLESS, LABEL_SERVICE_PROXY_NAME, ServiceObject, ServicePort } from '../sources/objects/service';
import { cidrContains, parseCidr, parseIp } from '../ipam/ip';

export interface ServiceCompileInputs {
  services: readonly ServiceObject[];
  /** The API's slices (Kubernetes mode), or the manifests' plus ./slices.ts's derived ones (standalone). */
  endpointSlices: readonly EndpointSliceObject[];
  nodes: readonly NodeObject[];
  /** This node's name: endpoints with this nodeName are local. */
  nodeName: string;
  /** This node's zone; default: its Node's topology.kubernetes.io/zone label. */
  zone?: string;
  /**
   * Addresses NodePorts are served on besides the Node's InternalIP/ExternalIP: the agent passes
   * its interfaces' addresses. IPv6 ones are ignored.
   */
  nodeAddresses: readonly string[];
}

export interface ServiceCompileOptions {
  /** Maglev table size M (prime); default maglev.ts's. */
  maglevTableSize?: number;
  /** Tables of the last compile, reused when a set's backends are unchanged (the agent keeps one). */
  maglevCache?: MaglevCache;
}

export type FrontendKind = 'ClusterIP' | 'NodePort' | 'ExternalIP' | 'LoadBalancer';

export interface ModelBackend {
  backendId: number;
  address: string;
  port: number;
  local: boolean;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
}

export interface ModelSet {
  setId: number;
  view: 'Cluster' | 'Local';
  backends: ModelBackend[];
}

export interface ModelFrontend extends FrontendEntry {
  kind: FrontendKind;
}

/** One Service port as programmed on this node. */
export interface ServicePortModel {
  svcId: number;
  /** `namespace/name`. */
  service: string;
  /** The port's name ("" for an unnamed port). */
  portName: string;
  port: number;
  protocol: L4Protocol;
  type: ServiceObject['spec']['type'];
  frontends: ModelFrontend[];
  /** The views its frontends use (absent: that view is not used, or is empty). */
  cluster?: ModelSet;
  local?: ModelSet;
  /** A usable endpoint exists somewhere in the cluster. */
  hasAnyEndpoints: boolean;
  topologyMode: TopologyMode;
}

export interface ServiceModel {
  ports: ServicePortModel[];
  /** Services not programmed, and why. */
  skipped: Array<{ service: string; reason: string }>;
  /** Frontends two Service ports claim: the first (in `ports` order) keeps it. */
  conflicts: Array<{ frontend: string; kept: string; dropped: string }>;
  /** Every backend in some set: `address:port/PROTOCOL` → backendId. */
  backends: Map<string, number>;
}

export interface ServiceCompileResult {
  desired: ServiceMapsDesired;
  model: ServiceModel;
}

/** Maglev tables by M and slot names, kept from one compile to the next. */
export class MaglevCache {
  private current = new Map<string, Uint16Array>();
  private next = new Map<string, Uint16Array>();
  hits = 0;
  misses = 0;

  table(names: readonly string[], m: number | undefined): Uint16Array {
    const key = `${m ?? ''}|${names.join(',')}`;
    let t = this.next.get(key) ?? this.current.get(key);
    if (t) this.hits++;
    else {
      this.misses++;
      t = Uint16Array.from(maglevTable(names, { tableSize: m }));
    }
    this.next.set(key, t);
    return t;
  }

  /** Ends a compile: tables it did not use are dropped. */
  swap(): void {
    this.current = this.next;
    this.next = new Map();
  }

  get size(): number {
    return this.current.size;
  }
}

const svcRef = (svc: ServiceObject) => `${svc.metadata.namespace}/${svc.metadata.name}`;

/** Why kube-proxy leaves a Service alone, or undefined. */
export function skipReason(svc: ServiceObject): string | undefined {
  if (svc.metadata.labels[LABEL_SERVICE_PROXY_NAME] !== undefined) return `labelled ${LABEL_SERVICE_PROXY_NAME}: not for the default proxy`;
  if (svc.spec.type === 'ExternalName') return 'ExternalName';
  const ip = svc.spec.clusterIP;
  if (ip === undefined || ip === '' || ip === 'None') return ip === 'None' ? 'headless' : 'no cluster IP';
  return undefined;
}

/** Slices kube-proxy reads, by `namespace/service`. */
export function slicesByService(slices: readonly EndpointSliceObject[]): Map<string, EndpointSliceObject[]> {
  const out = new Map<string, EndpointSliceObject[]>();
  for (const s of slices) {
    const labels = s.metadata.labels;
    const svc = labels[LABEL_SERVICE_NAME];
    if (!svc || labels[LABEL_SERVICE_PROXY_NAME] !== undefined || labels[LABEL_HEADLESS] !== undefined) continue;
    const key = `${s.metadata.namespace}/${svc}`;
    const list = out.get(key);
    if (list) list.push(s);
    else out.set(key, [s]);
  }
  // Slices in name order: which duplicate of an endpoint wins must not depend on arrival order.
  for (const list of out.values()) list.sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
  return out;
}

// Inputs are validated: canonical text, so an address without ':' is IPv4.
const isV4 = (ip: string) => !ip.includes(':');

function v4Number(ip: string): number {
  const p = ip.split('.');
  return ((+p[0] << 24) | (+p[1] << 16) | (+p[2] << 8) | +p[3]) >>> 0;
}

const cidrHolds = (cidr: string, ip: string): boolean => cidrContains(parseCidr(cidr), parseIp(ip));

/** This node's NodePort addresses: the given ones and its Node's InternalIP/ExternalIP, IPv4, sorted. */
function nodePortAddresses(node: NodeObject | undefined, given: readonly string[]): string[] {
  const out = new Set(given.filter(isV4));
  for (const a of node?.status.addresses ?? []) if ((a.type === 'InternalIP' || a.type === 'ExternalIP') && isV4(a.address)) out.add(a.address);
  return [...out].sort((a, b) => v4Number(a) - v4Number(b));
}

interface PendingFrontend {
  kind: FrontendKind;
  address: string;
  port: number;
  external: boolean;
}

interface PendingPort {
  svc: ServiceObject;
  ref: string;
  sp: ServicePort;
  key: string;
  name: string;
  frontends: PendingFrontend[];
  clusterView: Backend[] | undefined;
  localView: Backend[] | undefined;
  internalLocal: boolean;
  externalLocal: boolean;
  hasAnyEndpoints: boolean;
  topologyMode: TopologyMode;
  sourceRanges: string[];
}

const protoOf = (p: string): L4Protocol => p as L4Protocol;
const bkKey = (b: Pick<Backend, 'address' | 'port'>, protocol: string) => `${backendKey(b)}/${protocol}`;

export function compileServices(inputs: ServiceCompileInputs, ids: ServiceIds, options: ServiceCompileOptions = {}): ServiceCompileResult {
  const thisNode = inputs.nodes.find((n) => n.metadata.name === inputs.nodeName);
  const topo: NodeTopology = { name: inputs.nodeName, zone: inputs.zone ?? thisNode?.metadata.labels[LABEL_ZONE] ?? '' };
  const nodeIps = nodePortAddresses(thisNode, inputs.nodeAddresses);
  const slices = slicesByService(inputs.endpointSlices);
  const skipped: ServiceModel['skipped'] = [];

  // Pass 1: every Service port's frontends and views, keyed by strings.
  const pending: PendingPort[] = [];
  const services = inputs.services.map((svc) => ({ svc, ref: svcRef(svc) })).sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0));
  for (const { svc, ref } of services) {
    const why = skipReason(svc);
    if (why) {
      skipped.push({ service: ref, reason: why });
      continue;
    }
    const clusterIPs = svc.spec.clusterIPs.filter(isV4);
    if (clusterIPs.length === 0) {
      skipped.push({ service: ref, reason: 'no IPv4 cluster IP' });
      continue;
    }
    const own = slices.get(ref) ?? [];
    const externalIPs = svc.spec.externalIPs.filter(isV4);
    const lbIPs = svc.status.loadBalancer.ingress.filter((i) => i.ip !== undefined && (i.ipMode ?? 'VIP') === 'VIP' && isV4(i.ip)).map((i) => i.ip!);
    const ranges = svc.spec.loadBalancerSourceRanges.filter((c) => parseCidr(c).family === 4);
    const sourceRanges = [...ranges];
    if (ranges.some((c) => nodeIps.some((ip) => cidrHolds(c, ip)))) for (const ip of lbIPs) sourceRanges.push(`${ip}/32`);
    for (const sp of svc.spec.ports) {
      const portName = sp.name ?? '';
      const frontends: PendingFrontend[] = clusterIPs.map((address) => ({ kind: 'ClusterIP', address, port: sp.port, external: false }));
      if (sp.nodePort) for (const address of nodeIps) frontends.push({ kind: 'NodePort', address, port: sp.nodePort, external: true });
      for (const address of externalIPs) frontends.push({ kind: 'ExternalIP', address, port: sp.port, external: true });
      for (const address of lbIPs) frontends.push({ kind: 'LoadBalancer', address, port: sp.port, external: true });
      const policy = portTrafficPolicy(svc, sp, 4);
      const cat = categorizeEndpoints(backendsForPort(sp, own, 4, inputs.nodeName), policy, topo);
      const internalLocal = svc.spec.internalTrafficPolicy === 'Local';
      const externalLocal = svc.spec.externalTrafficPolicy === 'Local';
      const usesExternal = frontends.some((f) => f.external);
      pending.push({
        svc,
        ref,
        sp,
        key: `${ref}/${portName}/${sp.protocol}`,
        name: `${ref}:${portName || sp.port}`,
        frontends,
        clusterView: !internalLocal || (usesExternal && !externalLocal) ? cat.cluster : undefined,
        localView: internalLocal || (usesExternal && externalLocal) ? cat.local : undefined,
        internalLocal,
        externalLocal,
        hasAnyEndpoints: cat.hasAnyEndpoints,
        topologyMode: cat.topologyMode,
        sourceRanges: lbIPs.length > 0 ? sourceRanges : [],
      });
    }
  }

  // Pass 2: ids for everything in use, new ones in key order.
  const svcIds = ids.svc.assign(pending.map((p) => p.key));
  const setKeys: string[] = [];
  const backendKeys = new Set<string>();
  for (const p of pending) {
    for (const [view, list] of [
      ['cluster', p.clusterView],
      ['local', p.localView],
    ] as const) {
      if (!list || list.length === 0) continue;
      setKeys.push(`${p.key}|${view}`);
      for (const b of list) backendKeys.add(bkKey(b, p.sp.protocol));
    }
  }
  const setIds = ids.sets.assign(setKeys);
  const backendIds = ids.backends.assign(backendKeys);

  // Pass 3: entries.
  const m = options.maglevTableSize;
  const cache = options.maglevCache ?? new MaglevCache();
  const frontends: FrontendEntry[] = [];
  const sets: BackendSet[] = [];
  const sourceRanges = new Map<number, string[]>();
  const names = new Map<number, string>();
  const ports: ServicePortModel[] = [];
  const conflicts: ServiceModel['conflicts'] = [];
  const claimed = new Map<string, string>();

  const buildSet = (p: PendingPort, view: 'Cluster' | 'Local', list: Backend[] | undefined): ModelSet | undefined => {
    if (!list || list.length === 0) return undefined;
    const setId = setIds.get(`${p.key}|${view === 'Cluster' ? 'cluster' : 'local'}`)!;
    // Slots in backend id order: a newcomer (a higher id, mostly) joins at the end.
    const backends = list
      .map((b): ModelBackend => ({ backendId: backendIds.get(bkKey(b, p.sp.protocol))!, address: b.address, port: b.port, local: b.local, ready: b.ready, serving: b.serving, terminating: b.terminating }))
      .sort((a, b) => a.backendId - b.backendId);
    const entries = backends.map((b): BackendEntry => ({ backendId: b.backendId, address: b.address, port: b.port, flags: (b.local ? BACKEND_LOCAL : 0) | (b.terminating ? BACKEND_TERMINATING : 0) }));
    const set: BackendSet = { setId, backends: entries };
    if (entries.length > 1) set.maglev = cache.table(entries.map(backendKey), m);
    sets.push(set);
    return { setId, view, backends };
  };

  for (const p of pending) {
    const svcId = svcIds.get(p.key)!;
    names.set(svcId, p.name);
    const cluster = buildSet(p, 'Cluster', p.clusterView);
    const local = buildSet(p, 'Local', p.localView);
    const affinity = p.svc.spec.sessionAffinity === 'ClientIP';
    const timeout = p.svc.spec.sessionAffinityConfig?.clientIP.timeoutSeconds ?? 0;
    if (p.sourceRanges.length > 0) sourceRanges.set(svcId, p.sourceRanges);
    const model: ServicePortModel = {
      svcId,
      service: p.ref,
      portName: p.sp.name ?? '',
      port: p.sp.port,
      protocol: protoOf(p.sp.protocol),
      type: p.svc.spec.type,
      frontends: [],
      hasAnyEndpoints: p.hasAnyEndpoints,
      topologyMode: p.topologyMode,
    };
    if (cluster) model.cluster = cluster;
    if (local) model.local = local;
    for (const f of p.frontends) {
      const isLocal = f.external ? p.externalLocal : p.internalLocal;
      const set = isLocal ? local : cluster;
      let flags = 0;
      if (affinity) flags |= FRONTEND_AFFINITY;
      if (f.external) flags |= FRONTEND_EXTERNAL;
      if (f.kind === 'NodePort') flags |= FRONTEND_NODEPORT;
      if (f.kind === 'LoadBalancer' && p.sourceRanges.length > 0) flags |= FRONTEND_SOURCE_RANGES;
      // Endpoints elsewhere but none here under a Local policy: dropped, as kube-proxy does.
      if (!set && isLocal && p.hasAnyEndpoints) flags |= FRONTEND_DROP_NO_LOCAL;
      const entry: FrontendEntry = {
        address: f.address,
        port: f.port,
        protocol: protoOf(p.sp.protocol),
        svcId,
        setId: set?.setId ?? 0,
        count: set?.backends.length ?? 0,
        flags,
        affinityTimeout: affinity ? timeout : 0,
      };
      const fkey = `${f.address}:${f.port}/${p.sp.protocol}`;
      const holder = claimed.get(fkey);
      if (holder !== undefined) {
        conflicts.push({ frontend: fkey, kept: holder, dropped: p.name });
        continue;
      }
      claimed.set(fkey, p.name);
      model.frontends.push({ ...entry, kind: f.kind });
      frontends.push(entry);
    }
    ports.push(model);
  }
  cache.swap();

  const backends = new Map<string, number>();
  for (const [k, id] of backendIds) backends.set(k, id);
  return { desired: { frontends, sets, sourceRanges, names }, model: { ports, skipped, conflicts, backends } };
}

/** Backends (`address:port/PROTOCOL`) in `before` that `after` no longer has. */
export function removedBackends(before: ServiceModel | undefined, after: ServiceModel): Array<{ address: string; port: number; protocol: L4Protocol }> {
  if (!before) return [];
  const out: Array<{ address: string; port: number; protocol: L4Protocol }> = [];
  for (const k of before.backends.keys()) {
    if (after.backends.has(k)) continue;
    const m = /^(.*):(\d+)\/(TCP|UDP|SCTP)$/.exec(k)!;
    out.push({ address: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]), protocol: m[3] as L4Protocol });
  }
  return out;
}
