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
import { checkMaglevTableSize, DEFAULT_MAGLEV_TABLE_SIZE, maglevFillIntoStart, maglevTableSizeFor } from './maglev';
import type { MaglevFilling } from '../bpf/maglev';
import { Backend, backendKey, backendsForPort, CategorizedEndpoints, categorizeEndpoints, NodeTopology, TopologyMode } from './endpoints';
import { NumbersView, type RotatingNumbers, type ServiceIds } from './ids';
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
  /**
   * The largest Maglev table (a prime, --maglev-table-size); default maglev.ts's. Each set's table
   * has maglevTableSizeFor(its backends, this) slots: what its backends need, at most this.
   */
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

/** A Maglev table the cache holds: its key (M and slot names) and the compile that last used it. */
export interface MaglevEntry {
  readonly key: string;
  readonly table: Uint16Array;
  gen: number;
  /** Live ports holding it (a compiler's count: what a compile after a change may drop). */
  refs: number;
}

/**
 * Maglev tables by M and slot names, kept from one compile to the next. A table asked for and not
 * kept is handed out at once, unfilled, and filled with the compile's other new tables of its M
 * in one call to the addon at flush(): 10,000 new tables cost one native call per table size, not
 * 10,000 TypeScript loops.
 */
export class MaglevCache {
  private entries = new Map<string, MaglevEntry>();
  /** Tables handed out and not filled yet, by M: the entries, their slot names and their tables, side by side (no object per table). */
  private pending = new Map<number, { entries: MaglevEntry[]; names: Array<readonly string[]>; outs: Uint16Array[] }>();
  private chunk?: { m: number; buf: Uint16Array; used: number };
  /** The current compile: an entry whose gen is older at swap() was not used by it. */
  private gen = 1;
  /** Entries used by the current compile. */
  private live = 0;
  hits = 0;
  misses = 0;

  /** The table over `names` (slot order) and its cache key; new tables are filled at flush(). */
  table(names: readonly string[], m: number | undefined): [string, Uint16Array] {
    const e = this.entry(names, m ?? DEFAULT_MAGLEV_TABLE_SIZE);
    return [e.key, e.table];
  }

  /** table() as the compiler keeps it: the entry, which keep() marks as used again. */
  entry(names: readonly string[], m: number): MaglevEntry {
    const key = names.length === 2 ? `${m}|${names[0]},${names[1]}` : `${m}|${names.join(',')}`;
    let e = this.entries.get(key);
    if (e) {
      this.hits++;
      this.keep(e);
      return e;
    }
    this.misses++;
    e = { key, table: this.slots(m), gen: this.gen, refs: 0 };
    this.live++;
    this.entries.set(key, e);
    let list = this.pending.get(m);
    if (!list) this.pending.set(m, (list = { entries: [], names: [], outs: [] }));
    list.entries.push(e);
    list.names.push(names);
    list.outs.push(e.table);
    return e;
  }

  /** Fills the tables handed out since the last flush, one addon call per M; on failure they are forgotten, and it throws. */
  flush(): void {
    this.fillStart().wait();
  }

  /**
   * flush() with a large fill (a first run's thousands of tables) left to threads of the addon:
   * its tables are written once the returned wait() has returned, which the caller must call
   * whatever happens in between, and must not read them before.
   */
  fillStart(): MaglevFilling {
    const pending = this.pending;
    this.pending = new Map();
    const started: MaglevFilling[] = [];
    try {
      for (const [m, list] of pending) started.push(maglevFillIntoStart(list.names, list.outs, { tableSize: m }));
    } catch (e) {
      for (const f of started) f.wait();
      this.forget(pending);
      throw e;
    }
    return started.length === 1 ? started[0] : { wait: () => started.forEach((f) => f.wait()) };
  }

  /** Forgets tables handed out but not filled (a compile that failed before flush()). */
  discard(): void {
    this.forget(this.pending);
    this.pending = new Map();
  }

  /** Keeps an entry this compile uses without asking for it by name. */
  keep(e: MaglevEntry): void {
    if (e.gen !== this.gen) {
      e.gen = this.gen;
      this.live++;
    }
  }

  /** Keeps a table this compile uses without asking for it by name. */
  retain(key: string, table: Uint16Array): void {
    const e = this.entries.get(key);
    if (e?.table === table) this.keep(e);
  }

  /**
   * Ends a compile that visited only what changed: of `maybe` (the tables of ports that went),
   * those no live port holds and this compile did not ask for are dropped.
   */
  swapSome(maybe: readonly MaglevEntry[]): void {
    for (const e of maybe) if (e.refs <= 0 && e.gen !== this.gen && this.entries.get(e.key) === e) this.entries.delete(e.key);
    this.gen++;
    this.live = 0;
  }

  /** Ends a compile: tables it did not use are dropped. */
  swap(): void {
    if (this.live !== this.entries.size) {
      for (const [key, e] of this.entries) if (e.gen !== this.gen) this.entries.delete(key);
    }
    this.gen++;
    this.live = 0;
  }

  get size(): number {
    return this.entries.size;
  }

  private forget(pending: Map<number, { entries: MaglevEntry[] }>): void {
    for (const list of pending.values()) {
      for (const entry of list.entries) {
        if (this.entries.get(entry.key) === entry) {
          this.entries.delete(entry.key);
          if (entry.gen === this.gen) this.live--;
        }
      }
    }
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

/** Why kube-proxy leaves a Service alone, or undefined. */
export function skipReason(svc: ServiceObject): string | undefined {
  if (svc.metadata.labels[LABEL_SERVICE_PROXY_NAME] !== undefined) return `labelled ${LABEL_SERVICE_PROXY_NAME}: not for the default proxy`;
  if (svc.spec.type === 'ExternalName') return 'ExternalName';
  const ip = svc.spec.clusterIP;
  if (ip === undefined || ip === '' || ip === 'None') return ip === 'None' ? 'headless' : 'no cluster IP';
  return undefined;
}

const byName = (a: EndpointSliceObject, b: EndpointSliceObject) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0);

/** A slice's Service, `namespace/service`, or undefined for a slice kube-proxy does not read (no service name, another proxy's, headless). */
function groupKey(s: EndpointSliceObject): string | undefined {
  const labels = s.metadata.labels;
  const svc = labels[LABEL_SERVICE_NAME];
  if (!svc || labels[LABEL_SERVICE_PROXY_NAME] !== undefined || labels[LABEL_HEADLESS] !== undefined) return undefined;
  return `${s.metadata.namespace}/${svc}`;
}

/**
 * The slices kube-proxy reads, by `namespace/service`, each Service's in name order (which
 * duplicate of an endpoint wins must not depend on arrival order), kept from one compile to the
 * next. The store lists objects in a stable order
 * and replaces one object per change, so a compile after a change mostly meets the same slices at
 * the same places but a few: only those few slices' Services are grouped again.
 */
class SliceGroups {
  private list: EndpointSliceObject[] = [];
  private keys: Array<string | undefined> = [];
  groups = new Map<string, EndpointSliceObject[]>();
  /** Bumped when the groups are made whole again: every Service looks its list up. */
  version = 0;

  /** Takes this compile's slices; returns the keys whose list changed, or undefined when all may have. */
  update(slices: readonly EndpointSliceObject[]): Set<string> | undefined {
    const n = slices.length;
    const list = this.list;
    if (n === list.length && n > 0) {
      let changed = 0;
      for (let i = 0; i < n && changed <= 64; i++) if (slices[i] !== list[i]) changed++;
      if (changed <= 64) {
        const dirty = new Set<string>();
        if (changed === 0) return dirty;
        for (let i = 0; i < n; i++) {
          const s = slices[i];
          if (s === list[i]) continue;
          const before = this.keys[i];
          const after = groupKey(s);
          list[i] = s;
          this.keys[i] = after;
          if (before !== undefined) dirty.add(before);
          if (after !== undefined) dirty.add(after);
        }
        for (const key of dirty) {
          const own: EndpointSliceObject[] = [];
          for (let i = 0; i < n; i++) if (this.keys[i] === key) own.push(list[i]);
          if (own.length === 0) this.groups.delete(key);
          else this.groups.set(key, own.length > 1 ? own.sort(byName) : own);
        }
        return dirty;
      }
    }
    this.list = slices.slice();
    const keys = (this.keys = new Array<string | undefined>(n));
    const groups = (this.groups = new Map());
    let several: EndpointSliceObject[][] | undefined;
    for (let i = 0; i < n; i++) {
      const s = this.list[i];
      const key = (keys[i] = groupKey(s));
      if (key === undefined) continue;
      const own = groups.get(key);
      if (!own) groups.set(key, [s]);
      else {
        if (own.length === 1) (several ??= []).push(own);
        own.push(s);
      }
    }
    // In name order (see above).
    if (several) for (const own of several) own.sort(byName);
    this.version++;
    return undefined;
  }
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

/**
 * One Service port: its frontends and views, the ids of its keys once counted, and the writer's
 * entries once built. A port lives (the same object) while its Service, its slices and this
 * node's context are the same objects; its keys keep their numbers and its entries stay the same
 * objects all that time, so the writer skips it. Kept lean: 10,000 of them survive a cold start.
 */
interface PendingPort {
  svc: ServiceObject;
  ref: string;
  sp: ServicePort;
  /** Its service id key, `namespace/name/port/PROTOCOL`. */
  key: string;
  name: string;
  frontends: PendingFrontend[];
  /** The views its frontends use, when not empty. */
  cluster: Backend[] | undefined;
  local: Backend[] | undefined;
  internalLocal: boolean;
  externalLocal: boolean;
  hasAnyEndpoints: boolean;
  topologyMode: TopologyMode;
  sourceRanges: string[];
  svcId: number;
  clusterSetId: number;
  localSetId: number;
  /** Its backend id keys (`address:port/PROTOCOL`), cluster view then local, until it is built. */
  keys: string[] | undefined;
  /** Every frontend's entry, before conflicts with other ports are settled. */
  entries: FrontendEntry[];
  clusterSet: BackendSet | undefined;
  localSet: BackendSet | undefined;
  clusterTable: MaglevEntry | undefined;
  localTable: MaglevEntry | undefined;
  /** Its model, made when first asked for. */
  model: ServicePortModel | undefined;
  /** Where the last compile put its first frontend, its first set and its model (a compile after a change patches them in place). */
  feAt: number;
  setAt: number;
  modelAt: number;
}

/** A Service (by `namespace/name`) and the ports compiled from exactly these objects in this node's context. */
interface ServiceSlot {
  ref: string;
  svc: ServiceObject;
  slices: readonly EndpointSliceObject[];
  /** The SliceGroups version `slices` was read from. */
  version: number;
  context: string;
  ports: PendingPort[];
  skipped: string | undefined;
  /** The compile that last saw it. */
  gen: number;
}

const NO_PORTS: PendingPort[] = [];
const NO_SLICES: EndpointSliceObject[] = [];
const NO_KEYS: string[] = [];
const NO_ENTRIES: FrontendEntry[] = [];
const bySlotRef = (a: ServiceSlot, b: ServiceSlot) => (a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0);

function pushAll<T>(to: T[], from: readonly T[]): void {
  for (let i = 0; i < from.length; i++) to.push(from[i]);
}

function sameList<T>(a: readonly T[], b: readonly T[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

const bkKey = (b: Backend, protocol: string) => (b.address.includes(':') ? `[${b.address}]:${b.port}/${protocol}` : `${b.address}:${b.port}/${protocol}`);

/** A port's backend id keys: its cluster view's, then its local view's; with `sets`, then its set keys. */
function portKeys(p: PendingPort, sets = false): string[] {
  const c = p.cluster?.length ?? 0;
  const l = p.local?.length ?? 0;
  const n = sets ? c + l + (c > 0 ? 1 : 0) + (l > 0 ? 1 : 0) : c + l;
  if (n === 0) return NO_KEYS;
  const out = new Array<string>(n);
  for (let i = 0; i < c; i++) out[i] = bkKey(p.cluster![i], p.sp.protocol);
  for (let i = 0; i < l; i++) out[c + i] = bkKey(p.local![i], p.sp.protocol);
  if (sets) {
    let at = c + l;
    if (c > 0) out[at++] = `${p.key}|cluster`;
    if (l > 0) out[at] = `${p.key}|local`;
  }
  return out;
}

function frontendsOf(out: PendingFrontend[], kind: FrontendKind, list: readonly string[], port: number, external: boolean, protocol: string): void {
  for (let i = 0; i < list.length; i++) out.push({ kind, address: list[i], port, external, fkey: `${list[i]}:${port}/${protocol}` });
}

/** The IPv4 ones of `ips`: `ips` itself when all are (no array per Service). */
function v4Only(ips: readonly string[]): readonly string[] {
  for (let i = 0; i < ips.length; i++) if (!isV4(ips[i])) return ips.filter(isV4);
  return ips;
}

/** Every backend ready and without hints: the usual case, where categorizeEndpoints' Cluster view is all of them. */
function allReadyUnhinted(backends: readonly Backend[]): boolean {
  for (let i = 0; i < backends.length; i++) {
    const b = backends[i];
    if (!b.ready || b.zoneHints.size > 0 || b.nodeHints.size > 0) return false;
  }
  return true;
}

const NO_BACKENDS: Backend[] = [];

/**
 * categorizeEndpoints of backends allReadyUnhinted holds, for a port that uses only the Cluster
 * policy: no hints, so no topology; every backend ready, so all of them, in order (the list
 * itself: backendsForPort made it for this port alone); no Local view.
 */
function clusterOnly(backends: Backend[]): Pick<CategorizedEndpoints, 'cluster' | 'local' | 'hasAnyEndpoints' | 'topologyMode'> {
  return { cluster: backends, local: NO_BACKENDS, hasAnyEndpoints: backends.length > 0, topologyMode: '' };
}

function pendingPorts(svc: ServiceObject, ref: string, own: readonly EndpointSliceObject[], nodeIps: readonly string[], topo: NodeTopology): PendingPort[] | string {
  const why = skipReason(svc);
  if (why) return why;
  const clusterIPs = v4Only(svc.spec.clusterIPs);
  if (clusterIPs.length === 0) return 'no IPv4 cluster IP';
  const externalIPs = svc.spec.externalIPs.length > 0 ? svc.spec.externalIPs.filter(isV4) : NO_KEYS;
  const ingress = svc.status.loadBalancer.ingress;
  const lbIPs = ingress.length > 0 ? ingress.filter((i) => i.ip !== undefined && (i.ipMode ?? 'VIP') === 'VIP' && isV4(i.ip)).map((i) => i.ip!) : NO_KEYS;
  let sourceRanges = NO_KEYS;
  if (lbIPs.length > 0 && svc.spec.loadBalancerSourceRanges.length > 0) {
    const ranges = svc.spec.loadBalancerSourceRanges.filter((c) => parseCidr(c).family === 4);
    sourceRanges = [...ranges];
    if (ranges.some((c) => nodeIps.some((ip) => cidrHolds(c, ip)))) for (const ip of lbIPs) sourceRanges.push(`${ip}/32`);
  }
  const internalLocal = svc.spec.internalTrafficPolicy === 'Local';
  const externalLocal = svc.spec.externalTrafficPolicy === 'Local';
  const specPorts = svc.spec.ports;
  const out = new Array<PendingPort>(specPorts.length);
  for (let j = 0; j < specPorts.length; j++) {
    const sp = specPorts[j];
    const portName = sp.name ?? '';
    const protocol = sp.protocol;
    let frontends: PendingFrontend[];
    if (clusterIPs.length === 1 && !sp.nodePort && externalIPs.length === 0 && lbIPs.length === 0) {
      // The usual port: one frontend, an array of exactly one (a pushed-to array keeps room for 16).
      frontends = [{ kind: 'ClusterIP', address: clusterIPs[0], port: sp.port, external: false, fkey: `${clusterIPs[0]}:${sp.port}/${protocol}` }];
    } else {
      frontends = [];
      frontendsOf(frontends, 'ClusterIP', clusterIPs, sp.port, false, protocol);
      if (sp.nodePort) frontendsOf(frontends, 'NodePort', nodeIps, sp.nodePort, true, protocol);
      frontendsOf(frontends, 'ExternalIP', externalIPs, sp.port, true, protocol);
      frontendsOf(frontends, 'LoadBalancer', lbIPs, sp.port, true, protocol);
    }
    const usesExternal = frontends.length > clusterIPs.length;
    // portTrafficPolicy(svc, sp, 4), from what is already at hand (its externallyAccessible is
    // a NodePort, or an IPv4 externalIP or VIP-mode ingress IP, as filtered above).
    const external = !!sp.nodePort || externalIPs.length > 0 || lbIPs.length > 0;
    const usesCluster = !internalLocal || external;
    const usesLocal = internalLocal || (externalLocal && external);
    const backends = backendsForPort(sp, own, 4, topo.name);
    const cat = usesCluster && !usesLocal && allReadyUnhinted(backends) ? clusterOnly(backends) : categorizeEndpoints(backends, { usesCluster, usesLocal }, topo);
    // External frontends use the Cluster view under either policy: in-cluster clients get it.
    const cluster = (!internalLocal || usesExternal) && cat.cluster.length > 0 ? cat.cluster : undefined;
    const local = (internalLocal || (usesExternal && externalLocal)) && cat.local.length > 0 ? cat.local : undefined;
    out[j] = {
      svc,
      ref,
      sp,
      key: `${ref}/${portName}/${protocol}`,
      name: `${ref}:${portName || sp.port}`,
      frontends,
      cluster,
      local,
      internalLocal,
      externalLocal,
      hasAnyEndpoints: cat.hasAnyEndpoints,
      topologyMode: cat.topologyMode,
      sourceRanges,
      svcId: 0,
      clusterSetId: 0,
      localSetId: 0,
      keys: undefined,
      entries: NO_ENTRIES,
      clusterSet: undefined,
      localSet: undefined,
      clusterTable: undefined,
      localTable: undefined,
      model: undefined,
      feAt: -1,
      setAt: -1,
      modelAt: -1,
    };
  }
  return out;
}

/**
 * The keys of one kind of id and how many live ports hold each, so a compile after a change
 * counts only the ports that came or went. `held` is the first compile's (or one after a reset):
 * it lists every key in use, and the allocator's keys it does not list are let go.
 */
class KeyCount {
  /** Keys held by more than one port, and by how many. */
  private shared = new Map<string, number>();
  private fresh = new Set<string>();
  private gone: string[] = [];
  private held?: Set<string>;
  /** The first compile into an empty allocator: every key as held, repeats included (sorted, not hashed, at commit). */
  private listed?: string[];
  /** The allocator's revision after this account last changed it. */
  revision: number;

  constructor(readonly numbers: RotatingNumbers) {
    this.revision = numbers.revision;
  }

  /** Starts over: the next commit() will have been told of every key in use. */
  reset(): void {
    this.shared = new Map();
    this.fresh = new Set();
    this.gone = [];
    if (this.numbers.size === 0) this.listed = [];
    else this.held = new Set();
  }

  hold(key: string): void {
    if (this.listed) {
      this.listed.push(key);
      return;
    }
    const held = this.held;
    if (held) {
      const n = held.size;
      held.add(key);
      if (held.size === n) this.shared.set(key, (this.shared.get(key) ?? 1) + 1);
    } else if (this.numbers.has(key) || this.fresh.has(key)) {
      this.shared.set(key, (this.shared.get(key) ?? 1) + 1);
    } else {
      this.fresh.add(key);
    }
  }

  /** After every hold() of the compile. */
  release(key: string): void {
    const n = this.shared.get(key);
    if (n === undefined) this.gone.push(key);
    else if (n === 2) this.shared.delete(key);
    else this.shared.set(key, n - 1);
  }

  commit(): void {
    const listed = this.listed;
    if (listed) {
      // Sorted, repeats side by side: the distinct keys in the order update() wants, and the repeats counted.
      this.listed = undefined;
      listed.sort();
      let w = 0;
      for (let i = 0; i < listed.length; i++) {
        const k = listed[i];
        if (w > 0 && listed[w - 1] === k) this.shared.set(k, (this.shared.get(k) ?? 1) + 1);
        else listed[w++] = k;
      }
      listed.length = w;
      this.numbers.update(listed, [], true);
      this.revision = this.numbers.revision;
      return;
    }
    const held = this.held;
    let fresh: Iterable<string> = this.fresh;
    let gone = this.gone;
    if (held) {
      if (this.numbers.size === 0) fresh = held;
      else {
        const f: string[] = [];
        for (const k of held) if (!this.numbers.has(k)) f.push(k);
        fresh = f;
        gone = [];
        for (const k of this.numbers.keys()) if (!held.has(k)) gone.push(k);
      }
    }
    this.fresh = new Set();
    this.gone = [];
    this.held = undefined;
    this.numbers.update(fresh, gone);
    this.revision = this.numbers.revision;
  }
}

type Counts = { svc: KeyCount; sets: KeyCount; backends: KeyCount };

function holdPort(counts: Counts, p: PendingPort): void {
  counts.svc.hold(p.key);
  const keys = (p.keys = portKeys(p, true));
  const n = (p.cluster?.length ?? 0) + (p.local?.length ?? 0);
  for (let k = 0; k < n; k++) counts.backends.hold(keys[k]);
  // The set keys after the backend keys: held now, looked up by build() as the same strings.
  for (let k = n; k < keys.length; k++) counts.sets.hold(keys[k]);
}

function releasePort(counts: Counts, p: PendingPort): void {
  if (p.clusterTable) p.clusterTable.refs--;
  if (p.localTable) p.localTable.refs--;
  counts.svc.release(p.key);
  if (p.cluster) counts.sets.release(`${p.key}|cluster`);
  if (p.local) counts.sets.release(`${p.key}|local`);
  const keys = portKeys(p);
  for (let k = 0; k < keys.length; k++) counts.backends.release(keys[k]);
}

/** The model `kelp get services` shows of one port, from what its compile kept. */
function portModel(p: PendingPort): ServicePortModel {
  const modelSet = (view: 'Cluster' | 'Local', set: BackendSet | undefined, list: Backend[] | undefined): ModelSet | undefined => {
    if (!set || !list) return undefined;
    return {
      setId: set.setId,
      view,
      backends: set.backends.map((e): ModelBackend => {
        const x = list.find((b) => b.address === e.address && b.port === e.port)!;
        return { backendId: e.backendId, address: x.address, port: x.port, local: x.local, ready: x.ready, serving: x.serving, terminating: x.terminating };
      }),
    };
  };
  const model: ServicePortModel = {
    svcId: p.svcId,
    service: p.ref,
    portName: p.sp.name ?? '',
    port: p.sp.port,
    protocol: protoOf(p.sp.protocol),
    type: p.svc.spec.type,
    frontends: p.entries.map((e, i) => ({ ...e, kind: p.frontends[i].kind })),
    hasAnyEndpoints: p.hasAnyEndpoints,
    topologyMode: p.topologyMode,
  };
  const cluster = modelSet('Cluster', p.clusterSet, p.cluster);
  const local = modelSet('Local', p.localSet, p.local);
  if (cluster) model.cluster = cluster;
  if (local) model.local = local;
  return model;
}

const protoOf = (p: string): L4Protocol => p as L4Protocol;

/**
 * Pass 1 of a compile, one Service at a time (a small method the JIT optimises within the first
 * compile, where a loop in the compile itself would run unoptimised through all 10,000).
 */
class Visit {
  readonly added: PendingPort[] = [];
  readonly removed: PendingPort[] = [];
  /** Slots seen before whose ports were made again: their ports and skip reason before. */
  readonly changed: Array<{ slot: ServiceSlot; before: PendingPort[]; skipped: string | undefined }> = [];
  extra: Array<{ slot: ServiceSlot; at: number }> | undefined;
  seen = 0;
  reorder = false;
  readonly svcSlots: Array<ServiceSlot | undefined>;

  constructor(
    private readonly slots: Map<string, ServiceSlot>,
    private readonly slices: ReadonlyMap<string, EndpointSliceObject[]>,
    private readonly dirty: ReadonlySet<string> | undefined,
    private readonly version: number,
    private readonly context: string,
    private readonly gen: number,
    private readonly nodeIps: readonly string[],
    private readonly topo: NodeTopology,
    count: number,
  ) {
    this.svcSlots = new Array<ServiceSlot | undefined>(count);
  }

  /** The Service listed at `i`; `last`: the slot of the same object at the same place last time. */
  service(svc: ServiceObject, i: number, last: ServiceSlot | undefined): void {
    const { gen, context, version } = this;
    if (last && last.svc === svc && last.gen !== gen && last.version === version && last.context === context && (this.dirty === undefined || !this.dirty.has(last.ref))) {
      // Nothing of it changed: no name to make, nothing to look up.
      last.gen = gen;
      this.seen++;
      this.svcSlots[i] = last;
      return;
    }
    const ref = `${svc.metadata.namespace}/${svc.metadata.name}`;
    const own = this.slices.get(ref) ?? NO_SLICES;
    let slot = this.slots.get(ref);
    if (slot && slot.gen === gen) {
      // A name listed twice: compiled on its own every time, after the first in listing order.
      const ports = pendingPorts(svc, ref, own, this.nodeIps, this.topo);
      const s: ServiceSlot = { ref, svc, slices: own, version: 0, context, ports: NO_PORTS, skipped: undefined, gen };
      if (typeof ports === 'string') s.skipped = ports;
      else s.ports = ports;
      pushAll(this.added, s.ports);
      (this.extra ??= []).push({ slot: s, at: i });
      return;
    }
    if (!slot) {
      // Nothing yet: compiled below.
      slot = { ref, svc, slices: own, version: 0, context: '', ports: NO_PORTS, skipped: undefined, gen };
      this.slots.set(ref, slot);
      this.reorder = true;
    } else {
      this.seen++;
      slot.gen = gen;
    }
    this.svcSlots[i] = slot;
    slot.version = version;
    if (slot.context !== context || slot.svc !== svc || !sameList(slot.slices, own)) {
      if (slot.context !== '') this.changed.push({ slot, before: slot.ports, skipped: slot.skipped });
      pushAll(this.removed, slot.ports);
      const ports = pendingPorts(svc, ref, own, this.nodeIps, this.topo);
      slot.svc = svc;
      slot.slices = own;
      slot.context = context;
      if (typeof ports === 'string') {
        slot.ports = NO_PORTS;
        slot.skipped = ports;
      } else {
        slot.ports = ports;
        slot.skipped = undefined;
        pushAll(this.added, ports);
      }
    }
  }
}

/** What a compile hands out, kept for the next. */
interface Output {
  frontends: FrontendEntry[];
  sets: BackendSet[];
  sourceRanges: Map<number, string[]>;
  names: Map<number, string>;
  skipped: ServiceModel['skipped'];
  conflicts: ServiceModel['conflicts'];
  modelPorts: PendingPort[];
  lost: Map<number, boolean[]> | undefined;
}

/** A port made again that claims what its predecessor did: the same name and id, frontends, views and no source ranges. */
function samePlace(was: PendingPort, p: PendingPort): boolean {
  if (was.name !== p.name || was.svcId !== p.svcId || was.feAt < 0 || was.frontends.length !== p.frontends.length) return false;
  if ((was.clusterSet === undefined) !== (p.clusterSet === undefined) || (was.localSet === undefined) !== (p.localSet === undefined)) return false;
  if (was.sourceRanges.length > 0 || p.sourceRanges.length > 0) return false;
  for (let i = 0; i < p.frontends.length; i++) if (was.frontends[i].fkey !== p.frontends[i].fkey) return false;
  return true;
}

/** Pass 3 of a compile, one port at a time: the maps' contents, conflicts settled in port order. */
class Emit {
  readonly frontends: FrontendEntry[] = [];
  readonly sets: BackendSet[] = [];
  readonly sourceRanges = new Map<number, string[]>();
  readonly names = new Map<number, string>();
  readonly skipped: ServiceModel['skipped'] = [];
  readonly conflicts: ServiceModel['conflicts'] = [];
  readonly modelPorts: PendingPort[] = [];
  lost: Map<number, boolean[]> | undefined;
  private readonly claimed = new Map<string, string>();

  constructor(private readonly maglev: MaglevCache) {}

  port(p: PendingPort): void {
    p.feAt = this.frontends.length;
    p.setAt = this.sets.length;
    p.modelAt = this.modelPorts.length;
    if (p.clusterTable) this.maglev.keep(p.clusterTable);
    if (p.localTable) this.maglev.keep(p.localTable);
    this.names.set(p.svcId, p.name);
    if (p.sourceRanges.length > 0) this.sourceRanges.set(p.svcId, p.sourceRanges);
    if (p.clusterSet) this.sets.push(p.clusterSet);
    if (p.localSet) this.sets.push(p.localSet);
    const fes = p.frontends;
    let kept: boolean[] | undefined;
    for (let i = 0; i < fes.length; i++) {
      const fkey = fes[i].fkey;
      const holder = this.claimed.get(fkey);
      if (holder === undefined) {
        this.claimed.set(fkey, p.name);
        this.frontends.push(p.entries[i]);
      } else {
        this.conflicts.push({ frontend: fkey, kept: holder, dropped: p.name });
        kept ??= fes.map(() => true);
        kept[i] = false;
      }
    }
    if (kept) (this.lost ??= new Map()).set(this.modelPorts.length, kept);
    this.modelPorts.push(p);
  }
}

/**
 * The compiler with its memory: the ids, the Maglev tables and each Service's compiled ports,
 * so a compile after a change redoes only the Services whose objects (or slices) changed, and
 * counts only their keys. The store replaces an object on every change, so identity is the test.
 */
export class ServiceCompiler {
  /** Services by `namespace/name`, kept across compiles. */
  private slots = new Map<string, ServiceSlot>();
  /** The last compile's services in `namespace/name` order. */
  private order: ServiceSlot[] = [];
  /** Ports of a name listed twice (compiled afresh each time). */
  private extra: PendingPort[] = [];
  /** The last compile's Services as listed, and each one's slot. */
  private svcList: ServiceObject[] = [];
  private svcSlots: Array<ServiceSlot | undefined> = [];
  private groups = new SliceGroups();
  /** The last compile's contents. */
  private last?: Output;
  private gen = 0;
  private fresh = true;
  private readonly counts: Counts;
  private readonly cap: number;
  /** maglevTableSizeFor(n, cap) for small n. */
  private readonly sizes = new Array<number>(256).fill(0);
  readonly maglev: MaglevCache;

  constructor(
    readonly ids: ServiceIds,
    options: ServiceCompileOptions = {},
  ) {
    this.maglev = options.maglevCache ?? new MaglevCache();
    this.cap = checkMaglevTableSize(options.maglevTableSize ?? DEFAULT_MAGLEV_TABLE_SIZE);
    this.counts = { svc: new KeyCount(ids.svc), sets: new KeyCount(ids.sets), backends: new KeyCount(ids.backends) };
  }

  /** Forgets every Service: the next compile counts every key again. */
  private reset(): void {
    this.slots = new Map();
    this.order = [];
    this.extra = [];
    this.svcList = [];
    this.svcSlots = [];
    this.groups = new SliceGroups();
    this.last = undefined;
    this.fresh = true;
  }

  compile(inputs: ServiceCompileInputs): ServiceCompileResult {
    const { counts } = this;
    // The ids changed under the compiler (restored): its account of them is void.
    if (counts.svc.revision !== this.ids.svc.revision || counts.sets.revision !== this.ids.sets.revision || counts.backends.revision !== this.ids.backends.revision) this.reset();
    try {
      return this.run(inputs);
    } catch (e) {
      // Ports built here hold tables filled only at flush(): forgotten with everything else,
      // and the next compile builds them again.
      this.maglev.discard();
      this.reset();
      throw e;
    }
  }

  private run(inputs: ServiceCompileInputs): ServiceCompileResult {
    const thisNode = inputs.nodes.find((n) => n.metadata.name === inputs.nodeName);
    const topo: NodeTopology = { name: inputs.nodeName, zone: inputs.zone ?? thisNode?.metadata.labels[LABEL_ZONE] ?? '' };
    const nodeIps = nodePortAddresses(thisNode, inputs.nodeAddresses);
    const context = `${topo.name}|${topo.zone}|${nodeIps.join(',')}`;
    const groups = this.groups;
    const dirty = groups.update(inputs.endpointSlices);
    const slices = groups.groups;
    const version = groups.version;
    const gen = ++this.gen;
    const { counts } = this;
    const cold = this.fresh;
    this.fresh = false;

    // Pass 1: every Service's ports, from its slot where nothing changed; the ports that came and went.
    const services = inputs.services;
    const lastList = this.svcList;
    const visit = new Visit(this.slots, slices, dirty, version, context, gen, nodeIps, topo, services.length);
    // The last compile's Services by place: the same object at the same place is the same slot.
    if (lastList.length === services.length) for (let i = 0; i < services.length; i++) visit.service(services[i], i, lastList[i] === services[i] ? this.svcSlots[i] : undefined);
    else for (let i = 0; i < services.length; i++) visit.service(services[i], i, undefined);
    const { added, removed, extra, seen, reorder, svcSlots } = visit;
    const slots = this.slots;
    // The same Services in the same order as last time: the maps' contents can be patched.
    const stable = !cold && !reorder && seen === this.order.length && !extra && this.extra.length === 0;
    pushAll(removed, this.extra);
    let order = this.order;
    if (seen !== order.length || reorder) {
      // Services came or went: drop the gone, sort again.
      order = [];
      for (const slot of slots.values()) {
        if (slot.gen !== gen) {
          slots.delete(slot.ref);
          pushAll(removed, slot.ports);
        } else order.push(slot);
      }
      order.sort(bySlotRef);
    }
    let listed = order;
    const extraPorts: PendingPort[] = [];
    if (extra) {
      // Repeated names after the first of theirs, in listing order (a stable sort by name).
      const firstAt = new Map<string, number>();
      for (let i = services.length - 1; i >= 0; i--) firstAt.set(`${services[i].metadata.namespace}/${services[i].metadata.name}`, i);
      const all = order.map((slot) => ({ slot, at: firstAt.get(slot.ref)! }));
      for (const e of extra) {
        all.push(e);
        pushAll(extraPorts, e.slot.ports);
      }
      all.sort((a, b) => bySlotRef(a.slot, b.slot) || a.at - b.at);
      listed = all.map((e) => e.slot);
    }
    this.order = order;
    this.extra = extraPorts;
    this.svcList = services.slice();
    this.svcSlots = svcSlots;

    // Pass 2: ids. New ports hold their keys before gone ones let go of theirs, so a key that
    // moves from one to the other keeps its number; new keys take theirs in key order.
    if (cold) {
      counts.svc.reset();
      counts.sets.reset();
      counts.backends.reset();
    }
    for (let i = 0; i < added.length; i++) holdPort(counts, added[i]);
    for (let i = 0; i < removed.length; i++) releasePort(counts, removed[i]);
    counts.svc.commit();
    counts.sets.commit();
    counts.backends.commit();
    // New ports: their ids and entries.
    const svcIds = this.ids.svc;
    const setIds = this.ids.sets;
    for (let i = 0; i < added.length; i++) this.build(added[i], svcIds, setIds);
    // The new tables are filled beside what follows (by threads of the addon, for a first run's
    // thousands): the frontends and the maps' contents hold the tables without reading them.
    const filling = this.maglev.fillStart();
    try {
      for (let i = 0; i < added.length; i++) this.buildFrontends(added[i]);
      return this.emit(stable, visit.changed, removed, listed);
    } finally {
      filling.wait();
    }
  }

  /** Pass 3, or the last compile's contents patched. */
  private emit(stable: boolean, changed: Visit['changed'], removed: readonly PendingPort[], listed: readonly ServiceSlot[]): ServiceCompileResult {
    const quick = stable ? this.patch(changed, removed) : undefined;
    if (quick) return quick;

    // Pass 3: the maps' contents in port order; a frontend two ports claim goes to the first.
    const out = new Emit(this.maglev);
    for (let si = 0; si < listed.length; si++) {
      const slot = listed[si];
      if (slot.skipped !== undefined) out.skipped.push({ service: slot.ref, reason: slot.skipped });
      const ports = slot.ports;
      for (let pi = 0; pi < ports.length; pi++) out.port(ports[pi]);
    }
    this.maglev.swap();
    const done: Output = { frontends: out.frontends, sets: out.sets, sourceRanges: out.sourceRanges, names: out.names, skipped: out.skipped, conflicts: out.conflicts, modelPorts: out.modelPorts, lost: out.lost };
    this.last = done;
    return this.result(done);
  }

  /**
   * A compile after a change that kept every Service in its place: when each changed Service's
   * ports claim the same frontends, sets and names as before (new endpoints, mostly), the last
   * compile's contents with those ports' entries put in their places, not all 10,000 again.
   * Undefined when the change is of another kind.
   */
  private patch(changed: Visit['changed'], removed: readonly PendingPort[]): ServiceCompileResult | undefined {
    const last = this.last;
    if (!last || last.lost) return undefined;
    for (const c of changed) {
      const after = c.slot.ports;
      if (c.skipped !== c.slot.skipped || c.before.length !== after.length) return undefined;
      for (let j = 0; j < after.length; j++) if (!samePlace(c.before[j], after[j])) return undefined;
    }
    const frontends = last.frontends.slice();
    const sets = last.sets.slice();
    const modelPorts = last.modelPorts.slice();
    for (const c of changed) {
      for (let j = 0; j < c.before.length; j++) {
        const was = c.before[j];
        const p = c.slot.ports[j];
        for (let i = 0; i < p.entries.length; i++) frontends[was.feAt + i] = p.entries[i];
        let at = was.setAt;
        if (p.clusterSet) sets[at++] = p.clusterSet;
        if (p.localSet) sets[at++] = p.localSet;
        modelPorts[was.modelAt] = p;
        p.feAt = was.feAt;
        p.setAt = was.setAt;
        p.modelAt = was.modelAt;
      }
    }
    const maybe: MaglevEntry[] = [];
    for (const p of removed) {
      if (p.clusterTable) maybe.push(p.clusterTable);
      if (p.localTable) maybe.push(p.localTable);
    }
    this.maglev.swapSome(maybe);
    // Names and source ranges are as they were (same ids, same names, none of the changed ports has ranges).
    const out: Output = { frontends, sets, sourceRanges: last.sourceRanges, names: last.names, skipped: last.skipped, conflicts: [], modelPorts, lost: undefined };
    this.last = out;
    return this.result(out);
  }

  private result(out: Output): ServiceCompileResult {
    const { frontends, sets, sourceRanges, names, skipped, conflicts, modelPorts, lost } = out;
    const model: ServiceModel = {
      // Made when first read (`kelp get services`), not by every compile. A port's model is
      // made from what the port keeps, which does not change while it lives.
      get ports(): ServicePortModel[] {
        const ports = modelPorts.map((p, i) => {
          const m = (p.model ??= portModel(p));
          const kept = lost?.get(i);
          return kept ? { ...m, frontends: m.frontends.filter((_, k) => kept[k]) } : m;
        });
        Object.defineProperty(this, 'ports', { value: ports, enumerable: true, writable: true, configurable: true });
        return ports;
      },
      set ports(ports: ServicePortModel[]) {
        Object.defineProperty(this, 'ports', { value: ports, enumerable: true, writable: true, configurable: true });
      },
      skipped,
      conflicts,
      backends: this.ids.backends.view(),
    };
    return { desired: { frontends, sets, sourceRanges, names }, model };
  }

  /** A new port's ids, sets and tables (handed out, filled later), its keys counted. */
  private build(p: PendingPort, svcIds: RotatingNumbers, setIds: RotatingNumbers): void {
    const keys = p.keys ?? portKeys(p, true);
    p.keys = undefined;
    let at = (p.cluster?.length ?? 0) + (p.local?.length ?? 0);
    p.svcId = svcIds.get(p.key)!;
    if (p.cluster) p.clusterSetId = setIds.get(keys[at++])!;
    if (p.local) p.localSetId = setIds.get(keys[at])!;
    const nc = p.cluster ? p.cluster.length : 0;
    const cluster = p.cluster ? this.buildSet(p, p.clusterSetId, p.cluster, keys, 0) : undefined;
    const local = p.local ? this.buildSet(p, p.localSetId, p.local, keys, nc) : undefined;
    p.clusterSet = cluster;
    p.localSet = local;
  }

  /** A built port's frontend entries. */
  private buildFrontends(p: PendingPort): void {
    const cluster = p.clusterSet;
    const local = p.localSet;
    const affinity = p.svc.spec.sessionAffinity === 'ClientIP';
    const timeout = affinity ? (p.svc.spec.sessionAffinityConfig?.clientIP.timeoutSeconds ?? 0) : 0;
    const protocol = protoOf(p.sp.protocol);
    const entries = new Array<FrontendEntry>(p.frontends.length);
    for (let i = 0; i < p.frontends.length; i++) {
      const f = p.frontends[i];
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
      entries[i] = {
        address: f.address,
        port: f.port,
        protocol,
        svcId: p.svcId,
        setId: set ? set.setId : 0,
        count: set ? set.backends.length : 0,
        inSetId: inSet ? inSet.setId : 0,
        inCount: inSet ? inSet.backends.length : 0,
        flags,
        affinityTimeout: timeout,
      };
    }
    p.entries = entries;
  }

  /**
   * A view's set: slots in backend id order (a newcomer, a higher id mostly, joins at the end),
   * and its Maglev table of the size its backends need. `keys[at…]` are the view's backend keys.
   */
  private buildSet(p: PendingPort, setId: number, list: readonly Backend[], keys: readonly string[], at: number): BackendSet {
    const n = list.length;
    const backendIds = this.ids.backends;
    const entries = new Array<BackendEntry>(n);
    let sorted = true;
    for (let i = 0; i < n; i++) {
      const b = list[i];
      entries[i] = { backendId: backendIds.get(keys[at + i])!, address: b.address, port: b.port, flags: (b.local ? BACKEND_LOCAL : 0) | (b.terminating ? BACKEND_TERMINATING : 0) };
      if (i > 0 && entries[i].backendId < entries[i - 1].backendId) sorted = false;
    }
    if (!sorted) entries.sort((x, y) => x.backendId - y.backendId);
    if (n < 2) return { setId, backends: entries };
    // Backends named by address when that tells them apart (hostNetwork pods share one):
    // the ports of a Service over the same pods then share one table, computed once.
    const names = new Array<string>(n);
    for (let i = 0; i < n; i++) names[i] = entries[i].address;
    if (!distinct(names)) for (let i = 0; i < n; i++) names[i] = backendKey(entries[i]);
    const e = this.maglev.entry(names, n < this.sizes.length ? (this.sizes[n] ||= maglevTableSizeFor(n, this.cap)) : maglevTableSizeFor(n, this.cap));
    e.refs++;
    if (at === 0) p.clusterTable = e;
    else p.localTable = e;
    return { setId, backends: entries, maglev: e.table };
  }
}

function distinct(names: readonly string[]): boolean {
  const n = names.length;
  if (n > 16) return new Set(names).size === n;
  for (let i = 1; i < n; i++) for (let j = 0; j < i; j++) if (names[i] === names[j]) return false;
  return true;
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
  // The compile right after: what it let go, without comparing 20,000 keys.
  const gone = before.backends instanceof NumbersView ? before.backends.removedBy(after.backends) : undefined;
  for (const k of gone ?? before.backends.keys()) {
    if (!gone && after.backends.has(k)) continue;
    const m = /^(.*):(\d+)\/(TCP|UDP|SCTP)$/.exec(k)!;
    out.push({ address: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]), protocol: m[3] as L4Protocol });
  }
  return out;
}
