// The policy compiler: every policy object of the three APIs, the pods, this node's endpoints →
// the contents of kelp_ipcache4 and kelp_policy4 (src/datapath/policy-types.ts says what they
// mean to the datapath) and the model the trace explains from.
//
// Identities. A peer is known to the datapath only by its identity, so two addresses share one
// only when no policy can tell them apart:
//   - a pod's identity is keyed by its namespace, its labels, the set of policy CIDRs (every
//     ipBlock cidr and except, every network) containing its IPv4 address, and what the port
//     names used by egress named ports mean on it (egress names resolve on the destination pod);
//   - any other address belongs to the longest policy CIDR p containing it (its ipcache entry),
//     whose identity is keyed by the set of policy CIDRs containing p — which is exactly the set
//     containing the address: policy CIDRs nest or are disjoint, so one containing the address
//     either contains p or lies inside p, and inside p it would be a longer match than p. So
//     the longest ipcache match always lies in every policy CIDR containing the address, and a
//     CIDR peer matches an identity iff its cidr is in the identity's set and none of its excepts.
//     No policy CIDR: 0.0.0.0/0 → WORLD (the empty set).
//
// Entries. For each local endpoint and direction the rules that may apply (`Side`) are decided
// per identity class: identities matched by the same rules (with the same named-port meanings)
// get the same verdicts, so verdict blocks are computed once per class and stamped out per
// identity. The largest class is the IDENTITY_ANY entry — usually the identities no peer names,
// but the pods when a rule names every pod — and an identity in it gets no entries of its own. Each class gets one all-protocols entry — the
// verdict of a packet no port-specific rule matches — plus, for TCP, UDP and SCTP, the
// elementary port intervals between every rule boundary, merged where adjacent verdicts agree,
// as port prefixes wherever they differ from the all-protocols verdict. Every (endpoint,
// direction, identity) with entries has its own all-protocols entry, so the datapath never
// falls back to IDENTITY_ANY for it, and each packet's longest match carries the verdict of
// every tier at once: no narrower key can shadow a broader one of higher precedence.
import { canonicalIp, parseCidr } from '../ipam/ip';
import { IDENTITY_ANY, IDENTITY_HOST, IDENTITY_WORLD, IPPROTO, PolicyDirection, PolicyEntry, PolicyMapsDesired, PolicyVerdict } from '../datapath/policy-types';
import type { ClusterNetworkPolicyObject } from '../sources/objects/clusternetworkpolicy';
import type { KelpNetworkPolicyObject } from '../sources/objects/kelpnetworkpolicy';
import { LABEL_METADATA_NAME, NamespaceObject } from '../sources/objects/namespace';
import type { NetworkPolicyObject } from '../sources/objects/networkpolicy';
import type { PodObject } from '../sources/objects/pod';
import { selectorMatches } from '../sources/objects/labels';
import { blocksMatch, decide, PortBlock, portBlocks, sameVerdict, Side, SideRule, sideOf } from './evaluate';
import { fromClusterNetworkPolicy } from './from-clusternetworkpolicy';
import { fromKelpNetworkPolicy } from './from-kelpnetworkpolicy';
import { fromNetworkPolicy } from './from-networkpolicy';
import type { IdentityAllocator } from './identity';
import { IdentityInfo, Member, ModelPolicy, NamedPorts, namedPortsOf, PolicyModel, policyPod, portRangePrefixes } from './model';
import { PodSet, PolicySpec, RuleSpec, sortPolicies } from './spec';

export interface LocalEndpoint {
  epId: number;
  /** `namespace/name` of its pod. */
  pod: string;
  ips: string[];
}

export interface PolicyCompileInputs {
  namespaces: readonly NamespaceObject[];
  /** Every pod of the cluster (remote ones included). */
  pods: readonly PodObject[];
  /** The pods on this node, with their datapath ids. */
  localEndpoints: readonly LocalEndpoint[];
  /** This node's addresses: IDENTITY_HOST. */
  nodeIps: readonly string[];
  networkPolicies: readonly NetworkPolicyObject[];
  clusterNetworkPolicies: readonly ClusterNetworkPolicyObject[];
  kelpNetworkPolicies: readonly KelpNetworkPolicyObject[];
}

export interface PolicyCompileResult {
  desired: PolicyMapsDesired;
  model: PolicyModel;
}

const DIRECTIONS: readonly PolicyDirection[] = ['ingress', 'egress'];
const PORT_PROTOCOLS = [IPPROTO.TCP, IPPROTO.UDP, IPPROTO.SCTP];
/** A protocol no rule names a port of: what the all-protocols entry answers. */
const OTHER_PROTOCOL = -1;

const byKey = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const sortedLabels = (labels: Record<string, string>) => Object.entries(labels).sort(([a], [b]) => byKey(a, b));

/** Canonical IPv4 text → 32-bit unsigned number (undefined for IPv6). Hot: every pod, every compile. */
function v4(ip: string): number | undefined {
  if (ip.includes(':')) return undefined;
  const parts = ip.split('.');
  return ((Number(parts[0]) << 24) | (Number(parts[1]) << 16) | (Number(parts[2]) << 8) | Number(parts[3])) >>> 0;
}

const maskOf = (prefix: number) => (prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0);

/** The IPv4 policy CIDRs, answering "which of them contain this address or prefix". */
class PolicyCidrs {
  /** Prefix length → network → canonical text; lengths ascending. */
  private readonly byLength = new Map<number, Map<number, string>>();
  private sortedLengths?: number[];

  /** The text every map here keys an IPv4 CIDR by (host bits cleared); undefined for IPv6. */
  static text(cidr: string): { text: string; net: number; prefix: number } | undefined {
    const c = parseCidr(cidr);
    if (c.family !== 4) return undefined;
    const net = (Number(c.address) & maskOf(c.prefix)) >>> 0;
    return { text: `${[24, 16, 8, 0].map((s) => (net >>> s) & 0xff).join('.')}/${c.prefix}`, net, prefix: c.prefix };
  }

  add(cidr: string): void {
    const c = PolicyCidrs.text(cidr);
    if (!c) return;
    let m = this.byLength.get(c.prefix);
    if (!m) this.byLength.set(c.prefix, (m = new Map()));
    m.set(c.net, c.text);
    this.sortedLengths = undefined;
  }

  private get lengths(): number[] {
    return (this.sortedLengths ??= [...this.byLength.keys()].sort((a, b) => a - b));
  }

  /** The policy CIDRs containing addr/prefix, shortest first. */
  containing(addr: number, prefix = 32): string[] {
    const out: string[] = [];
    for (const len of this.lengths) {
      if (len > prefix) break;
      const hit = this.byLength.get(len)!.get((addr & maskOf(len)) >>> 0);
      if (hit !== undefined) out.push(hit);
    }
    return out;
  }

  all(): Array<{ cidr: string; net: number; prefix: number }> {
    return this.lengths.flatMap((prefix) => [...this.byLength.get(prefix)!].map(([net, cidr]) => ({ cidr, net, prefix })));
  }
}

/** Every spec of the inputs, with stable ids, in evaluation order. */
function policiesOf(inputs: PolicyCompileInputs, allocator: IdentityAllocator): ModelPolicy[] {
  const specs: PolicySpec[] = [
    ...inputs.networkPolicies.map(fromNetworkPolicy),
    ...inputs.clusterNetworkPolicies.map(fromClusterNetworkPolicy),
    ...inputs.kelpNetworkPolicies.map(fromKelpNetworkPolicy),
  ];
  const ids = allocator.policyIds.assign(specs.map((s) => s.ref));
  return sortPolicies(specs.map((spec) => ({ spec, id: ids.get(spec.ref)! })));
}

const canonical = (ips: readonly string[]): string[] => ips.map((ip) => canonicalIp(ip)).filter((ip): ip is string => ip !== undefined);

/** The pods taking part, local endpoints first (they own their addresses). */
function membersOf(inputs: PolicyCompileInputs): Member[] {
  const podByKey = new Map(inputs.pods.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p]));
  const member = (key: string, pod: PodObject | undefined, ips: string[]): Member => ({
    key,
    namespace: pod?.metadata.namespace ?? key.slice(0, key.indexOf('/')),
    labels: pod?.metadata.labels ?? {},
    ports: pod?.spec.containers.flatMap((c) => c.ports) ?? [],
    ips,
  });
  const out: Member[] = [];
  const seen = new Set<string>();
  const local = new Map<string, Member>();
  for (const ep of [...inputs.localEndpoints].sort((a, b) => a.epId - b.epId)) {
    // A pod with several interfaces on kelp networks (podman network connect, Multus) is one
    // member: its addresses are all its own, and every one of its endpoints gets its entries.
    const same = local.get(ep.pod);
    if (same) {
      same.ips = [...new Set([...same.ips, ...canonical(ep.ips)])];
      (same.moreEpIds ??= []).push(ep.epId);
      continue;
    }
    seen.add(ep.pod);
    const m: Member = { ...member(ep.pod, podByKey.get(ep.pod), canonical(ep.ips)), epId: ep.epId };
    local.set(ep.pod, m);
    out.push(m);
  }
  for (const [key, pod] of [...podByKey].sort(([a], [b]) => byKey(a, b))) {
    if (seen.has(key) || !policyPod(pod)) continue;
    // The validator keeps podIPs canonical.
    out.push(member(key, pod, pod.status!.podIPs.map((e) => e.ip)));
  }
  return out;
}

/** Every CIDR (cidr and except) in a peer of some policy. */
function policyCidrsOf(policies: readonly ModelPolicy[]): PolicyCidrs {
  const out = new PolicyCidrs();
  for (const { spec } of policies) {
    for (const d of [spec.ingress, spec.egress]) {
      for (const rule of d?.rules ?? []) for (const peer of rule.peers) if (peer.kind === 'cidr') for (const c of [peer.cidr, ...peer.except]) out.add(c);
    }
  }
  return out;
}

/** Port names some egress rule resolves on its destination pods. */
function egressNamesOf(policies: readonly ModelPolicy[]): string[] {
  const names = new Set<string>();
  for (const { spec } of policies) for (const rule of spec.egress?.rules ?? []) for (const p of rule.ports) if (p.kind === 'named') names.add(p.name);
  return [...names].sort(byKey);
}

interface Identities {
  info: Map<number, IdentityInfo>;
  /** Pod identities by namespace. */
  podsByNamespace: Map<string, number[]>;
  /** Policy CIDR → every identity whose set holds it. */
  byCidr: Map<string, number[]>;
  ipcache: Map<string, number>;
}

function identitiesOf(members: Member[], cidrs: PolicyCidrs, egressNames: readonly string[], nodeIps: readonly string[], allocator: IdentityAllocator): Identities {
  const keys = new Map<string, IdentityInfo>();
  const memberKey = new Map<Member, { key: string; ip: string }>();
  const ipOwner = new Map<number, Member>();
  for (const m of members) {
    const ip = m.ips.find((a) => !a.includes(':'));
    const addr = ip === undefined ? undefined : v4(ip);
    if (ip === undefined || addr === undefined || ipOwner.has(addr)) continue;
    ipOwner.set(addr, m);
    const inside = cidrs.containing(addr);
    const all = namedPortsOf(m.ports);
    const named = new Map(egressNames.filter((n) => all.has(n)).map((n) => [n, [...all.get(n)!].sort((a, b) => byKey(a.protocol, b.protocol) || a.port - b.port)]));
    const key = JSON.stringify(['pod', m.namespace, sortedLabels(m.labels), inside, [...named]]);
    memberKey.set(m, { key, ip });
    if (!keys.has(key)) keys.set(key, { pod: { namespace: m.namespace, labels: { ...m.labels } }, cidrs: inside, named });
  }
  const cidrKey = new Map<string, string>();
  for (const c of cidrs.all()) {
    const inside = cidrs.containing(c.net, c.prefix);
    const key = JSON.stringify(['cidr', inside]);
    cidrKey.set(c.cidr, key);
    keys.set(key, { cidrs: inside });
  }
  const numbers = allocator.identities.assign(keys.keys());
  const ids: Identities = { info: new Map([[IDENTITY_WORLD, { cidrs: [] }]]), podsByNamespace: new Map(), byCidr: new Map(), ipcache: new Map() };
  for (const [key, info] of keys) {
    const id = numbers.get(key)!;
    ids.info.set(id, info);
    if (info.pod) {
      const list = ids.podsByNamespace.get(info.pod.namespace) ?? [];
      list.push(id);
      ids.podsByNamespace.set(info.pod.namespace, list);
    }
    for (const c of info.cidrs) {
      const list = ids.byCidr.get(c) ?? [];
      list.push(id);
      ids.byCidr.set(c, list);
    }
  }
  const cache = ids.ipcache;
  cache.set('0.0.0.0/0', IDENTITY_WORLD);
  for (const [cidr, key] of cidrKey) cache.set(cidr, numbers.get(key)!);
  for (const m of members) {
    const own = memberKey.get(m);
    if (own === undefined) continue;
    m.identity = numbers.get(own.key)!;
    cache.set(`${own.ip}/32`, m.identity);
    // A pod's further IPv4 addresses (a second kelp interface) are the same peer. Known limit:
    // its identity's CIDR set is its first address's, so an ipBlock telling the pod's two
    // addresses apart sees both as the first.
    for (const ip of m.ips) {
      const addr = ip.includes(':') ? undefined : v4(ip);
      if (addr === undefined || ip === own.ip || ipOwner.has(addr)) continue;
      ipOwner.set(addr, m);
      cache.set(`${ip}/32`, m.identity);
    }
  }
  for (const ip of canonical(nodeIps)) if (!ip.includes(':')) cache.set(`${ip}/32`, IDENTITY_HOST);
  return ids;
}

/**
 * The members of a pod set among things grouped by namespace (pod identities for peers, local
 * endpoints for subjects). Policies repeat selectors, so answers are kept per selector.
 */
class PodSetIndex<T> {
  private readonly memo = new Map<string, T[]>();

  constructor(
    private readonly byNamespace: ReadonlyMap<string, readonly T[]>,
    private readonly namespaceLabels: (ns: string) => Record<string, string>,
    private readonly labelsOf: (t: T) => Record<string, string>,
  ) {}

  members(set: PodSet): T[] {
    const key = JSON.stringify(set);
    let hit = this.memo.get(key);
    if (!hit) {
      const ns = set.namespaces;
      const names = 'name' in ns ? [ns.name] : [...this.byNamespace.keys()].filter((n) => selectorMatches(ns.selector, this.namespaceLabels(n)));
      hit = names.flatMap((n) => (this.byNamespace.get(n) ?? []).filter((t) => selectorMatches(set.pods, this.labelsOf(t))));
      this.memo.set(key, hit);
    }
    return hit;
  }
}

/** Per rule, the identities one of its peers matches ('all': every peer, addresses without identity too). */
class RuleMatches {
  private readonly cache = new Map<RuleSpec, Set<number> | 'all'>();
  private readonly pods: PodSetIndex<number>;

  constructor(
    private readonly ids: Identities,
    namespaceLabels: (ns: string) => Record<string, string>,
  ) {
    this.pods = new PodSetIndex(ids.podsByNamespace, namespaceLabels, (id) => ids.info.get(id)!.pod!.labels);
  }

  of(rule: RuleSpec): Set<number> | 'all' {
    let hit = this.cache.get(rule);
    if (hit === undefined) this.cache.set(rule, (hit = this.compute(rule)));
    return hit;
  }

  private compute(rule: RuleSpec): Set<number> | 'all' {
    const out = new Set<number>();
    for (const peer of rule.peers) {
      if (peer.kind === 'all') return 'all';
      if (peer.kind === 'pods') {
        for (const id of this.pods.members(peer.set)) out.add(id);
      } else if (peer.kind === 'cidr') {
        const cidr = PolicyCidrs.text(peer.cidr);
        if (!cidr) continue;
        const except = peer.except.map((e) => PolicyCidrs.text(e)?.text);
        for (const id of this.ids.byCidr.get(cidr.text) ?? []) {
          const inside = this.ids.info.get(id)!.cidrs;
          if (!except.some((e) => e !== undefined && inside.includes(e))) out.add(id);
        }
      }
    }
    return out;
  }
}

/** One class's entries, identity and endpoint left out. */
type Block = Pick<PolicyEntry, 'protocol' | 'port' | 'portPrefix' | 'verdict'>;

/** The entries for packets matched (by peer) by `rules`, whose ports are `ports`. */
function blocksOf(rules: readonly SideRule[], ports: readonly PortBlock[][], side: Side): Block[] {
  const at = (protocol: number, port: number) => decide(rules, side.isolatedBy, side.audit, (i) => blocksMatch(ports[i], protocol, port));
  const base = at(OTHER_PROTOCOL, 0);
  const out: Block[] = [{ protocol: undefined, port: 0, portPrefix: 0, verdict: base }];
  for (const protocol of PORT_PROTOCOLS) {
    const cuts = new Set<number>([0]);
    let mentioned = false;
    for (const list of ports) {
      for (const b of list) {
        if (b.protocol !== protocol) continue;
        mentioned = true;
        cuts.add(b.first);
        if (b.last < 65535) cuts.add(b.last + 1);
      }
    }
    if (!mentioned) continue;
    const starts = [...cuts].sort((a, b) => a - b);
    let runStart = 0;
    let runVerdict: PolicyVerdict | undefined;
    const flush = (end: number) => {
      if (runVerdict && !sameVerdict(runVerdict, base)) for (const p of portRangePrefixes(runStart, end)) out.push({ protocol, port: p.port, portPrefix: p.prefix, verdict: runVerdict });
    };
    for (const start of starts) {
      const v = at(protocol, start);
      if (runVerdict && sameVerdict(v, runVerdict)) continue;
      flush(start - 1);
      runStart = start;
      runVerdict = v;
    }
    flush(65535);
  }
  return out;
}

/** The entries of one endpoint and direction (see the file's head), appended to `out`. */
function sideEntries(ep: Member, dir: PolicyDirection, side: Side, matches: RuleMatches, ids: Identities, out: PolicyEntry[]): void {
  const peerSets = side.rules.map((r) => matches.of(r.rule));
  const namedByPeer = side.rules.map((r) => dir === 'egress' && r.rule.ports.some((p) => p.kind === 'named'));
  // Ingress names resolve on this endpoint; egress names on each peer (none for a non-pod).
  const ownNames = dir === 'ingress' ? namedPortsOf(ep.ports) : undefined;
  const fixedPorts = side.rules.map((r) => portBlocks(r.rule, ownNames));
  const forAll = peerSets.flatMap((s, i) => (s === 'all' ? [i] : []));
  // Identity → the rules (indices into side.rules) whose peers select it by name, CIDR or selector.
  const touched = new Map<number, number[]>();
  for (let i = 0; i < peerSets.length; i++) {
    const s = peerSets[i];
    if (s === 'all') continue;
    for (const id of s) {
      const list = touched.get(id);
      if (list) list.push(i);
      else touched.set(id, [i]);
    }
  }
  // A rule for every peer with egress names still means something different per pod.
  if (forAll.some((i) => namedByPeer[i])) for (const [id, info] of ids.info) if (info.pod && !touched.has(id)) touched.set(id, []);

  const cache = new Map<string, Block[]>();
  const classBlocks = (indices: number[], named: NamedPorts | undefined) => {
    const ports = indices.map((i) => (namedByPeer[i] ? portBlocks(side.rules[i].rule, named) : fixedPorts[i]));
    const key = indices.map((i, j) => (namedByPeer[i] ? `${i}:${JSON.stringify(ports[j])}` : `${i}`)).join(',');
    let blocks = cache.get(key);
    if (!blocks) cache.set(key, (blocks = blocksOf(indices.map((i) => side.rules[i]), ports, side)));
    return { key, blocks };
  };
  // The class of the identities no peer names (matched by rules for every peer alone), then
  // each named identity's; IDENTITY_ANY stands for the largest class — the unnamed one on ties —
  // so a rule selecting every pod costs entries only for the identities it leaves out.
  const unnamed = classBlocks(forAll, undefined);
  const classOf = new Map<number, { key: string; blocks: Block[] }>();
  const size = new Map<string, number>([[unnamed.key, ids.info.size - touched.size]]);
  for (const [id, own] of touched) {
    const indices = own.length === 0 ? forAll : forAll.length === 0 ? own : [...new Set([...forAll, ...own])].sort((x, y) => x - y);
    const cls = classBlocks(indices, ids.info.get(id)!.named);
    classOf.set(id, cls);
    size.set(cls.key, (size.get(cls.key) ?? 0) + 1);
  }
  let any = unnamed;
  for (const cls of [...new Map([...classOf.values()].map((c) => [c.key, c])).values()].sort((x, y) => byKey(x.key, y.key))) {
    if (size.get(cls.key)! > size.get(any.key)!) any = cls;
  }
  for (const b of any.blocks) out.push({ epId: ep.epId!, identity: IDENTITY_ANY, direction: dir, ...b });
  const others = any === unnamed ? [...touched.keys()] : [...ids.info.keys()];
  for (const id of others.sort((x, y) => x - y)) {
    const cls = classOf.get(id) ?? unnamed;
    if (cls.key === any.key) continue;
    for (const b of cls.blocks) out.push({ epId: ep.epId!, identity: id, direction: dir, ...b });
  }
}

export function compilePolicy(inputs: PolicyCompileInputs, allocator: IdentityAllocator): PolicyCompileResult {
  const nsLabels = new Map(inputs.namespaces.map((n) => [n.metadata.name, n.metadata.labels]));
  const namespaceLabels = (name: string) => nsLabels.get(name) ?? { [LABEL_METADATA_NAME]: name };
  const policies = policiesOf(inputs, allocator);
  const members = membersOf(inputs);
  const ids = identitiesOf(members, policyCidrsOf(policies), egressNamesOf(policies), inputs.nodeIps, allocator);
  const matches = new RuleMatches(ids, namespaceLabels);

  // Which policies select each local endpoint, in evaluation order.
  const locals = members.filter((m) => m.epId !== undefined);
  const localsByNs = new Map<string, Member[]>();
  for (const m of locals) {
    const list = localsByNs.get(m.namespace);
    if (list) list.push(m);
    else localsByNs.set(m.namespace, [m]);
  }
  const subjects = new PodSetIndex(localsByNs, namespaceLabels, (m) => m.labels);
  const selecting = new Map<Member, ModelPolicy[]>(locals.map((m) => [m, []]));
  for (const p of policies) for (const m of subjects.members(p.spec.subject)) selecting.get(m)!.push(p);

  const entries: PolicyEntry[] = [];
  for (const ep of locals) {
    for (const dir of DIRECTIONS) {
      const first = entries.length;
      sideEntries(ep, dir, sideOf(selecting.get(ep)!, dir), matches, ids, entries);
      const last = entries.length;
      for (const epId of ep.moreEpIds ?? []) for (let i = first; i < last; i++) entries.push({ ...entries[i], epId });
    }
  }

  const desired: PolicyMapsDesired = {
    ipcache: ids.ipcache,
    policy: entries,
    policies: new Map(policies.map((p) => [p.id, { ref: p.spec.ref, ingress: p.spec.ingress?.rules.map((r) => r.name) ?? [], egress: p.spec.egress?.rules.map((r) => r.name) ?? [] }])),
  };
  const podByIp = new Map<string, Member>();
  for (const m of members) for (const ip of m.ips) if (!podByIp.has(ip)) podByIp.set(ip, m);
  const model: PolicyModel = {
    policies,
    pods: new Map(members.map((m) => [m.key, m])),
    podByIp,
    namespaceLabels,
    nodeIps: new Set(canonical(inputs.nodeIps)),
    identities: ids.info,
  };
  return { desired, model };
}
