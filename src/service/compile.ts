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
//     externalTrafficPolicy Local — for clients from outside the cluster. Clients inside it (this
//     node's pods and the node itself) reaching an external frontend get the Cluster view
//     whatever externalTrafficPolicy says (the in-cluster view, inSetId/inCount): kube-proxy's
//     KUBE-EXT chain of a Local Service sends traffic its local-traffic detector matches, and
//     traffic of src-type LOCAL, to the Service's cluster chain ("pod traffic for … external
//     destinations should go to cluster endpoints");
//   - an empty view: no usable endpoint anywhere → count 0, rejected ("has no endpoints": REJECT);
//     usable endpoints elsewhere but none here under a Local policy → count 0 with
//     FRONTEND_DROP_NO_LOCAL ("has no local endpoints": DROP), internal and external alike;
//   - sessionAffinity ClientIP on every frontend of the port, with its timeout;
//   - loadBalancerSourceRanges (the IPv4 ones; none of this family: unrestricted) on the
//     LoadBalancer ingress IPs only; when a range holds one of this node's addresses the ingress
//     IPs themselves are allowed too (a VIP held locally loops back with itself as the source).
import { DEFAULT_MAGLEV_TABLE_SIZE, maglevFillTables } from './maglev';
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
  FRONTEND_IN_DROP_NO_LOCAL,
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
  backends: ReadonlyMap<string, number>;
}

export interface ServiceCompileResult {
  desired: ServiceMapsDesired;
  model: ServiceModel;
}

/**
 * Maglev tables by M and slot names, kept from one compile to the next. A table asked for and not
 * kept is handed out at once, unfilled, and filled with the compile's other new tables in one call
 * to the addon at flush(): 10,000 new tables cost one native call, not 10,000 TypeScript loops.
 */
export class MaglevCache {
  private current = new Map<string, Uint16Array>();
  private next = new Map<string, Uint16Array>();
  private pending = new Map<number | undefined, Array<{ key: string; names: readonly string[]; out: Uint16Array }>>();
  private chunk?: { m: number; buf: Uint16Array; used: number };
  hits = 0;
  misses = 0;

  /** The table over `names` (slot order) and its cache key; new tables are filled at flush(). */
  table(names: readonly string[], m: number | undefined): [string, Uint16Array] {
    const key = `${m ?? ''}|${names.join(',')}`;
    let t = this.next.get(key) ?? this.current.get(key);
    if (t) this.hits++;
    else {
      this.misses++;
      t = this.slots(m ?? DEFAULT_MAGLEV_TABLE_SIZE);
      const list = this.pending.get(m) ?? [];
      list.push({ key, names, out: t });
      this.pending.set(m, list);
    }
    this.next.set(key, t);
    return [key, t];
  }

  /** Fills the tables handed out since the last flush; on failure they are forgotten, and it throws. */
  flush(): void {
    const pending = this.pending;
    this.pending = new Map();
    try {
      for (const [m, list] of pending) maglevFillTables(list, { tableSize: m });
    } catch (e) {
      for (const list of pending.values()) for (const { key } of list) this.next.delete(key);
      throw e;
    }
  }

  /** Forgets tables handed out but not filled (a compile that failed before flush()). */
  discard(): void {
    for (const list of this.pending.values()) for (const { key } of list) this.next.delete(key);
    this.pending = new Map();
  }

  /** Keeps a table this compile uses without asking for it by name. */
  retain(key: string, table: Uint16Array): void {
    this.next.set(key, table);
  }

  /** Ends a compile: tables it did not use are dropped. */
  swap(): void {
    this.current = this.next;
    this.next = new Map();
  }

  get size(): number {
    return this.current.size;
  }

  /** m u16 slots out of a shared buffer of ~4 MiB: one allocation per few hundred tables. */
  private slots(m: number): Uint16Array {
    let c = this.chunk;
    if (!c || c.m !== m || c.used + m > c.buf.length) {
      // Not zeroed: flush() writes every slot, and a table not filled is never handed on.
      const bytes = Buffer.allocUnsafeSlow(2 * m * Math.max(1, Math.floor((4 << 20) / (2 * m))));
      c = { m, buf: new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2), used: 0 };
      this.chunk = c;
    }
    const out = c.buf.subarray(c.used, c.used + m);
    c.used += m;
    return out;
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
  /** `address:port/PROTOCOL`: what two Service ports may both claim. */
  fkey: string;
}

/** What one compile made of a Service port, kept for the next while the port's ids hold. */
interface BuiltPort {
  svcId: number;
  clusterSetId: number;
  localSetId: number;
  /** The backend ids of the cluster then the local view, in view order. */
  backendIds: number[];
  /** Every frontend, before conflicts with other ports are settled. */
  frontends: ModelFrontend[];
  entries: FrontendEntry[];
  sets: BackendSet[];
  /** The Maglev cache keys of its tables. */
  tables: Array<[string, Uint16Array]>;
  model: ServicePortModel;
}

/** One Service port's frontends and views, keyed by strings: everything but the ids. */
interface PendingPort {
  svc: ServiceObject;
  ref: string;
  sp: ServicePort;
  key: string;
  name: string;
  frontends: PendingFrontend[];
  /** The views its frontends use, when not empty. */
  cluster?: Backend[];
  local?: Backend[];
  /** Backend id keys (`address:port/PROTOCOL`), index for index with the views. */
  clusterKeys: string[];
  localKeys: string[];
  setKeyCluster: string;
  setKeyLocal: string;
  internalLocal: boolean;
  externalLocal: boolean;
  hasAnyEndpoints: boolean;
  topologyMode: TopologyMode;
  sourceRanges: string[];
  built?: BuiltPort;
}

/** A Service's ports as compiled from exactly these objects in this node's context. */
interface ServiceMemo {
  svc: ServiceObject;
  slices: readonly EndpointSliceObject[];
  context: string;
  ports: PendingPort[];
  skipped?: string;
}

const protoOf = (p: string): L4Protocol => p as L4Protocol;
const bkKey = (b: Pick<Backend, 'address' | 'port'>, protocol: string) => `${backendKey(b)}/${protocol}`;
const sameList = <T>(a: readonly T[], b: readonly T[]) => a.length === b.length && a.every((x, i) => x === b[i]);

function pendingPorts(svc: ServiceObject, ref: string, own: readonly EndpointSliceObject[], nodeIps: readonly string[], topo: NodeTopology): PendingPort[] | string {
  const why = skipReason(svc);
  if (why) return why;
  const clusterIPs = svc.spec.clusterIPs.filter(isV4);
  if (clusterIPs.length === 0) return 'no IPv4 cluster IP';
  const externalIPs = svc.spec.externalIPs.filter(isV4);
  const lbIPs = svc.status.loadBalancer.ingress.filter((i) => i.ip !== undefined && (i.ipMode ?? 'VIP') === 'VIP' && isV4(i.ip)).map((i) => i.ip!);
  const ranges = svc.spec.loadBalancerSourceRanges.filter((c) => parseCidr(c).family === 4);
  const sourceRanges = [...ranges];
  if (ranges.some((c) => nodeIps.some((ip) => cidrHolds(c, ip)))) for (const ip of lbIPs) sourceRanges.push(`${ip}/32`);
  const internalLocal = svc.spec.internalTrafficPolicy === 'Local';
  const externalLocal = svc.spec.externalTrafficPolicy === 'Local';
  return svc.spec.ports.map((sp): PendingPort => {
    const portName = sp.name ?? '';
    const fe = (kind: FrontendKind, address: string, port: number, external: boolean): PendingFrontend => ({ kind, address, port, external, fkey: `${address}:${port}/${sp.protocol}` });
    const frontends = clusterIPs.map((address) => fe('ClusterIP', address, sp.port, false));
    if (sp.nodePort) for (const address of nodeIps) frontends.push(fe('NodePort', address, sp.nodePort, true));
    for (const address of externalIPs) frontends.push(fe('ExternalIP', address, sp.port, true));
    for (const address of lbIPs) frontends.push(fe('LoadBalancer', address, sp.port, true));
    const cat = categorizeEndpoints(backendsForPort(sp, own, 4, topo.name), portTrafficPolicy(svc, sp, 4), topo);
    const usesExternal = frontends.some((f) => f.external);
    // External frontends use the Cluster view under either policy: in-cluster clients get it.
    const cluster = (!internalLocal || usesExternal) && cat.cluster.length > 0 ? cat.cluster : undefined;
    const local = (internalLocal || (usesExternal && externalLocal)) && cat.local.length > 0 ? cat.local : undefined;
    const key = `${ref}/${portName}/${sp.protocol}`;
    const p: PendingPort = {
      svc,
      ref,
      sp,
      key,
      name: `${ref}:${portName || sp.port}`,
      frontends,
      clusterKeys: (cluster ?? []).map((b) => bkKey(b, sp.protocol)),
      localKeys: (local ?? []).map((b) => bkKey(b, sp.protocol)),
      setKeyCluster: `${key}|cluster`,
      setKeyLocal: `${key}|local`,
      internalLocal,
      externalLocal,
      hasAnyEndpoints: cat.hasAnyEndpoints,
      topologyMode: cat.topologyMode,
      sourceRanges: lbIPs.length > 0 ? sourceRanges : [],
    };
    if (cluster) p.cluster = cluster;
    if (local) p.local = local;
    return p;
  });
}

/**
 * The compiler with its memory: the ids, the Maglev tables and each Service's compiled ports,
 * so a compile after a change redoes only the Services whose objects (or slices) changed. The
 * store replaces an object on every change, so identity is the test.
 */
export class ServiceCompiler {
  private memo = new Map<string, ServiceMemo>();
  readonly maglev: MaglevCache;

  constructor(
    readonly ids: ServiceIds,
    private readonly options: ServiceCompileOptions = {},
  ) {
    this.maglev = options.maglevCache ?? new MaglevCache();
  }

  compile(inputs: ServiceCompileInputs): ServiceCompileResult {
    const thisNode = inputs.nodes.find((n) => n.metadata.name === inputs.nodeName);
    const topo: NodeTopology = { name: inputs.nodeName, zone: inputs.zone ?? thisNode?.metadata.labels[LABEL_ZONE] ?? '' };
    const nodeIps = nodePortAddresses(thisNode, inputs.nodeAddresses);
    const context = `${topo.name}|${topo.zone}|${nodeIps.join(',')}`;
    const slices = slicesByService(inputs.endpointSlices);
    const skipped: ServiceModel['skipped'] = [];
    const NO_SLICES: EndpointSliceObject[] = [];

    // Pass 1: every Service port's frontends and views, from the memo where nothing changed.
    const pending: PendingPort[] = [];
    const memo = new Map<string, ServiceMemo>();
    const services = inputs.services.map((svc) => ({ svc, ref: svcRef(svc) })).sort((a, b) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0));
    for (const { svc, ref } of services) {
      const own = slices.get(ref) ?? NO_SLICES;
      let m = this.memo.get(ref);
      if (!m || m.svc !== svc || m.context !== context || !sameList(m.slices, own)) {
        const ports = pendingPorts(svc, ref, own, nodeIps, topo);
        m = typeof ports === 'string' ? { svc, slices: own, context, ports: [], skipped: ports } : { svc, slices: own, context, ports };
      }
      memo.set(ref, m);
      if (m.skipped) skipped.push({ service: ref, reason: m.skipped });
      for (const p of m.ports) pending.push(p);
    }
    this.memo = memo;

    // Pass 2: ids for everything in use, new ones in key order.
    const svcIds = this.ids.svc.assign(new Set(pending.map((p) => p.key)));
    const setKeys = new Set<string>();
    const backendKeys = new Set<string>();
    for (const p of pending) {
      if (p.cluster) setKeys.add(p.setKeyCluster);
      if (p.local) setKeys.add(p.setKeyLocal);
      for (const k of p.clusterKeys) backendKeys.add(k);
      for (const k of p.localKeys) backendKeys.add(k);
    }
    const setIds = this.ids.sets.assign(setKeys);
    const backendIds = this.ids.backends.assign(backendKeys);

    // Pass 3: entries; a port whose ids are all as last time is taken as built.
    const frontends: FrontendEntry[] = [];
    const sets: BackendSet[] = [];
    const sourceRanges = new Map<number, string[]>();
    const names = new Map<number, string>();
    const ports: ServicePortModel[] = [];
    const conflicts: ServiceModel['conflicts'] = [];
    const claimed = new Map<string, string>();
    // Ports built here hold tables filled only at flush(): if anything throws first, they are
    // forgotten with them, and the next compile builds them again.
    const builtNow: PendingPort[] = [];
    try {
      for (const p of pending) {
        const svcId = svcIds.get(p.key)!;
        const clusterSetId = p.cluster ? setIds.get(p.setKeyCluster)! : 0;
        const localSetId = p.local ? setIds.get(p.setKeyLocal)! : 0;
        let b = p.built;
        if (!b || b.svcId !== svcId || b.clusterSetId !== clusterSetId || b.localSetId !== localSetId || !this.sameBackendIds(b, p, backendIds)) {
          b = this.build(p, svcId, clusterSetId, localSetId, backendIds);
          p.built = b;
          builtNow.push(p);
        } else {
          for (const [key, table] of b.tables) this.maglev.retain(key, table);
        }
        names.set(svcId, p.name);
        if (p.sourceRanges.length > 0) sourceRanges.set(svcId, p.sourceRanges);
        for (const s of b.sets) sets.push(s);
        let lost = 0;
        const kept = p.frontends.map((f, i) => {
          const holder = claimed.get(f.fkey);
          if (holder === undefined) {
            claimed.set(f.fkey, p.name);
            frontends.push(b.entries[i]);
            return true;
          }
          conflicts.push({ frontend: f.fkey, kept: holder, dropped: p.name });
          lost++;
          return false;
        });
        const model = lost === 0 ? b.model : { ...b.model, frontends: b.frontends.filter((_, i) => kept[i]) };
        ports.push(model);
      }
      this.maglev.flush();
    } catch (e) {
      this.maglev.discard();
      for (const p of builtNow) p.built = undefined;
      throw e;
    }
    this.maglev.swap();

    return { desired: { frontends, sets, sourceRanges, names }, model: { ports, skipped, conflicts, backends: backendIds } };
  }

  private sameBackendIds(b: BuiltPort, p: PendingPort, backendIds: ReadonlyMap<string, number>): boolean {
    const n = p.clusterKeys.length;
    if (b.backendIds.length !== n + p.localKeys.length) return false;
    for (let i = 0; i < n; i++) if (backendIds.get(p.clusterKeys[i]) !== b.backendIds[i]) return false;
    for (let i = 0; i < p.localKeys.length; i++) if (backendIds.get(p.localKeys[i]) !== b.backendIds[n + i]) return false;
    return true;
  }

  private build(p: PendingPort, svcId: number, clusterSetId: number, localSetId: number, backendIds: ReadonlyMap<string, number>): BuiltPort {
    const m = this.options.maglevTableSize;
    const built: BuiltPort = { svcId, clusterSetId, localSetId, backendIds: [], frontends: [], entries: [], sets: [], tables: [], model: undefined as unknown as ServicePortModel };
    const buildSet = (view: 'Cluster' | 'Local', setId: number, list: Backend[] | undefined, keys: string[]): ModelSet | undefined => {
      if (!list) return undefined;
      const ids = keys.map((k) => backendIds.get(k)!);
      built.backendIds.push(...ids);
      // Slots in backend id order: a newcomer (a higher id, mostly) joins at the end.
      const backends = list
        .map((b, i): ModelBackend => ({ backendId: ids[i], address: b.address, port: b.port, local: b.local, ready: b.ready, serving: b.serving, terminating: b.terminating }))
        .sort((x, y) => x.backendId - y.backendId);
      const entries = backends.map((b): BackendEntry => ({ backendId: b.backendId, address: b.address, port: b.port, flags: (b.local ? BACKEND_LOCAL : 0) | (b.terminating ? BACKEND_TERMINATING : 0) }));
      const set: BackendSet = { setId, backends: entries };
      if (entries.length > 1) {
        // Backends named by address when that tells them apart (hostNetwork pods share one):
        // the ports of a Service over the same pods then share one table, computed once.
        let names = entries.map((e) => e.address);
        if (new Set(names).size !== names.length) names = entries.map(backendKey);
        const [key, table] = this.maglev.table(names, m);
        set.maglev = table;
        built.tables.push([key, table]);
      }
      built.sets.push(set);
      return { setId, view, backends };
    };
    const cluster = buildSet('Cluster', clusterSetId, p.cluster, p.clusterKeys);
    const local = buildSet('Local', localSetId, p.local, p.localKeys);
    const affinity = p.svc.spec.sessionAffinity === 'ClientIP';
    const timeout = p.svc.spec.sessionAffinityConfig?.clientIP.timeoutSeconds ?? 0;
    const model: ServicePortModel = {
      svcId,
      service: p.ref,
      portName: p.sp.name ?? '',
      port: p.sp.port,
      protocol: protoOf(p.sp.protocol),
      type: p.svc.spec.type,
      frontends: built.frontends,
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
      // In-cluster clients: the cluster IP's view; an external address's Cluster view.
      const inSet = f.external ? cluster : set;
      if (!inSet && !f.external && isLocal && p.hasAnyEndpoints) flags |= FRONTEND_IN_DROP_NO_LOCAL;
      const entry: FrontendEntry = {
        address: f.address,
        port: f.port,
        protocol: protoOf(p.sp.protocol),
        svcId,
        setId: set?.setId ?? 0,
        count: set?.backends.length ?? 0,
        inSetId: inSet?.setId ?? 0,
        inCount: inSet?.backends.length ?? 0,
        flags,
        affinityTimeout: affinity ? timeout : 0,
      };
      built.entries.push(entry);
      built.frontends.push({ ...entry, kind: f.kind });
    }
    built.model = model;
    return built;
  }
}

/** One compile with no memory but `ids` (and `options.maglevCache`): tests, tools. */
export function compileServices(inputs: ServiceCompileInputs, ids: ServiceIds, options: ServiceCompileOptions = {}): ServiceCompileResult {
  return new ServiceCompiler(ids, options).compile(inputs);
}

/** Backends (`address:port/PROTOCOL`) in `before` that `after` no longer has. */
export function removedBackends(before: ServiceModel | undefined, after: ServiceModel): Array<{ address: string; port: number; protocol: L4Protocol }> {
  // The same id map: no backend came or went (the ids hand it back unchanged).
  if (!before || before.backends === after.backends) return [];
  const out: Array<{ address: string; port: number; protocol: L4Protocol }> = [];
  for (const k of before.backends.keys()) {
    if (after.backends.has(k)) continue;
    const m = /^(.*):(\d+)\/(TCP|UDP|SCTP)$/.exec(k)!;
    out.push({ address: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]), protocol: m[3] as L4Protocol });
  }
  return out;
}
