import { describe, expect, it } from 'vitest';
import { cidrContains, parseCidr, parseIp } from '../../src/ipam/ip';
import { IPPROTO, PolicyDirection, PolicyVerdict, RULE_ISOLATED } from '../../src/datapath/policy-types';
import { cidrMinus, compilePolicy, DesiredLookup, explain, IdentityAllocator, PolicyCompileResult, policyPod, portRangePrefixes } from '../../src/policy';
import { NamespaceObject, NetworkPolicyObject, PodObject, Protocol, selectorMatches, validateObject } from '../../src/sources/objects';
import { Rng } from '../support/rng';

// Kubernetes NetworkPolicy alone, through the tiered compiler (src/policy/compile.ts): each node's
// maps, read as the datapath reads them, against a literal reference evaluator of the
// NetworkPolicy API text (the three-API property test is test/unit/policy-compile.test.ts).

// ---------------------------------------------------------------------------------------------
// The world, as raw manifests (what a user or the API server hands kelp). The implementation reads
// them validated (defaults applied by src/sources/objects); the reference evaluator below reads
// the raw JSON and applies the documented defaults itself.

type Raw = Record<string, any>;

interface World {
  namespaces: Raw[];
  pods: Raw[];
  policies: Raw[];
  nodeIps: Record<string, string[]>;
}

interface Connection {
  src: string;
  dst: string;
  protocol: Protocol;
  port: number;
}

interface NodeCompile extends PolicyCompileResult {
  maps: DesiredLookup;
}

/** What each node's agent compiles: its own pods as endpoints, its own addresses as the host. */
function compileNodes(w: World): NodeCompile[] {
  const namespaces = w.namespaces.map((o) => validateObject(o) as NamespaceObject);
  const pods = w.pods.map((o) => validateObject(o) as PodObject);
  const networkPolicies = w.policies.map((o) => validateObject(o) as NetworkPolicyObject);
  return Object.entries(w.nodeIps).map(([node, nodeIps]) => {
    const local = pods.filter((p) => p.spec.nodeName === node && policyPod(p));
    const localEndpoints = local.map((p, i) => ({ epId: 1 + i, pod: `${p.metadata.namespace}/${p.metadata.name}`, ips: p.status!.podIPs.map((e) => e.ip) }));
    const result = compilePolicy({ namespaces, pods, localEndpoints, nodeIps, networkPolicies, clusterNetworkPolicies: [], kelpNetworkPolicies: [] }, new IdentityAllocator());
    return { ...result, maps: new DesiredLookup(result.desired) };
  });
}

/** One side's verdict from the node its pod runs on: the maps for IPv4, the trace for IPv6 (the maps are IPv4 only). */
function sideVerdict(nodes: NodeCompile[], c: Connection, dir: PolicyDirection): PolicyVerdict | 'host' | undefined {
  const own = dir === 'egress' ? c.src : c.dst;
  const peer = dir === 'egress' ? c.dst : c.src;
  const n = nodes.find((x) => x.model.podByIp.get(own)?.epId !== undefined);
  if (!n) return undefined;
  if (!own.includes(':') && !peer.includes(':')) {
    const a = n.maps.decide(n.model.podByIp.get(own)!.epId!, dir, peer, IPPROTO[c.protocol], c.port);
    if (!a || a.kind === 'unprogrammed') throw new Error(`no answer from the maps for ${JSON.stringify(c)} ${dir}`);
    return a.kind === 'host' ? 'host' : a.entry.verdict;
  }
  const side = explain(n.model, { from: c.src, to: c.dst, protocol: c.protocol, port: c.port })[dir]!;
  return side.host ? 'host' : side.verdict;
}

const passes = (v: PolicyVerdict | 'host' | undefined) => v === undefined || v === 'host' || v.action !== 'deny';

function compiledAllowed(nodes: NodeCompile[], c: Connection): boolean {
  return passes(sideVerdict(nodes, c, 'egress')) && passes(sideVerdict(nodes, c, 'ingress'));
}

// ---------------------------------------------------------------------------------------------
// Reference evaluator: the API documentation's wording, read as literally as possible, over the
// raw manifests. No compilation, no identities, no prefixes.

const TERMINAL = ['Succeeded', 'Failed'];

/** Deliberate misreadings, switched on one at a time to show the generated comparison catches them. */
const MUTATIONS = ['peer-without-namespaceSelector-is-every-namespace', 'except-ignored', 'endPort-exclusive', 'named-port-ignores-protocol', 'no-node-exception', 'policyTypes-ignored', 'empty-ports-is-TCP-only'] as const;
let mutation: (typeof MUTATIONS)[number] | undefined;

/** "The pod at this address": a pod (not on the host network, not finished) listing it. */
function refPodAt(w: World, ip: string): Raw | undefined {
  return w.pods.find(
    (p) => !p.spec?.hostNetwork && !TERMINAL.includes(p.status?.phase) && (p.status?.podIPs ?? []).some((e: Raw) => parseIp(e.ip).value === parseIp(ip).value && parseIp(e.ip).family === parseIp(ip).family),
  );
}

function refLabelsOfNamespace(w: World, name: string): Record<string, string> {
  const ns = w.namespaces.find((n) => n.metadata.name === name);
  // The API server sets kubernetes.io/metadata.name on every namespace.
  return { ...(ns?.metadata.labels ?? {}), 'kubernetes.io/metadata.name': name };
}

function refSelector(raw: Raw | undefined): { matchLabels: Record<string, string>; matchExpressions: any[] } {
  return { matchLabels: raw?.matchLabels ?? {}, matchExpressions: (raw?.matchExpressions ?? []).map((e: Raw) => ({ ...e, values: e.values ?? [] })) };
}

/** "policyTypes … If this field is not specified, it will default based on the existence of ingress or egress rules". */
function refPolicyTypes(p: Raw): string[] {
  if (mutation === 'policyTypes-ignored') return ['Ingress', 'Egress'];
  if (p.spec.policyTypes && p.spec.policyTypes.length > 0) return p.spec.policyTypes;
  return (p.spec.egress ?? []).length > 0 ? ['Ingress', 'Egress'] : ['Ingress'];
}

/**
 * A peer, from the API reference:
 * - ipBlock: "a particular IP CIDR range … except: CIDRs that should not be included";
 * - podSelector: "selects Pods. If namespaceSelector is also set, then … the Pods matching
 *   podSelector in the Namespaces selected by NamespaceSelector. Otherwise it selects the Pods
 *   matching podSelector in the policy's own Namespace";
 * - namespaceSelector: "selects Namespaces … If podSelector is also set, … Otherwise it selects all
 *   Pods in the Namespaces selected by namespaceSelector".
 */
function refPeerMatches(w: World, policy: Raw, peer: Raw, otherPod: Raw | undefined, otherIp: string): boolean {
  if (peer.ipBlock) {
    const ip = parseIp(otherIp);
    if (mutation === 'except-ignored') return cidrContains(parseCidr(peer.ipBlock.cidr), ip);
    return cidrContains(parseCidr(peer.ipBlock.cidr), ip) && !(peer.ipBlock.except ?? []).some((e: string) => cidrContains(parseCidr(e), ip));
  }
  if (!otherPod) return false;
  let namespaceOk: boolean;
  if (peer.namespaceSelector) namespaceOk = selectorMatches(refSelector(peer.namespaceSelector), refLabelsOfNamespace(w, otherPod.metadata.namespace));
  else namespaceOk = mutation === 'peer-without-namespaceSelector-is-every-namespace' || otherPod.metadata.namespace === policy.metadata.namespace;
  let podOk = true;
  if (peer.podSelector) podOk = selectorMatches(refSelector(peer.podSelector), otherPod.metadata.labels ?? {});
  return namespaceOk && podOk;
}

/**
 * A port: "protocol … If not specified, this field defaults to TCP"; "port … If this field is not
 * provided, this matches all port names and numbers. If present, only traffic on the specified
 * protocol AND port will be matched"; "endPort indicates that the range of ports from port to
 * endPort if set, inclusive"; a named port is a container port name on the destination pod.
 */
function refPortMatches(port: Raw, c: Connection, destinationPod: Raw | undefined): boolean {
  const protocol = port.protocol ?? 'TCP';
  if (protocol !== c.protocol && !(mutation === 'named-port-ignores-protocol' && typeof port.port === 'string')) return false;
  if (port.port === undefined) return true;
  if (typeof port.port === 'number') {
    if (mutation === 'endPort-exclusive' && port.endPort !== undefined) return port.port <= c.port && c.port < port.endPort;
    return port.endPort === undefined ? c.port === port.port : port.port <= c.port && c.port <= port.endPort;
  }
  if (!destinationPod) return false;
  for (const container of destinationPod.spec?.containers ?? []) {
    for (const cp of container.ports ?? []) {
      const protocolOk = mutation === 'named-port-ignores-protocol' || (cp.protocol ?? 'TCP') === c.protocol;
      if (cp.name === port.port && protocolOk && cp.containerPort === c.port) return true;
    }
  }
  return false;
}

/**
 * "Traffic to and from the node where a Pod is running is always allowed"; otherwise a pod is
 * isolated in a direction when "any NetworkPolicy that both selects the pod and has <Direction> in
 * its policyTypes" exists, and then "the only allowed connections … are those allowed by the
 * <direction> list of some NetworkPolicy that applies to the pod". A rule: "traffic is allowed if
 * it matches at least one item in from/to and at least one item in ports; an empty or missing
 * list matches all".
 */
function refSideAllows(w: World, pod: Raw, type: 'Ingress' | 'Egress', otherPod: Raw | undefined, otherIp: string, c: Connection, destinationPod: Raw | undefined): boolean {
  const nodeIps = w.nodeIps[pod.spec?.nodeName] ?? [];
  if (mutation !== 'no-node-exception' && nodeIps.some((ip) => parseIp(ip).value === parseIp(otherIp).value && parseIp(ip).family === parseIp(otherIp).family)) return true;
  const applying = w.policies.filter(
    (p) => p.metadata.namespace === pod.metadata.namespace && selectorMatches(refSelector(p.spec.podSelector), pod.metadata.labels ?? {}) && refPolicyTypes(p).includes(type),
  );
  if (applying.length === 0) return true;
  for (const policy of applying) {
    const rules: Raw[] = (type === 'Ingress' ? policy.spec.ingress : policy.spec.egress) ?? [];
    for (const rule of rules) {
      const peers: Raw[] = (type === 'Ingress' ? rule.from : rule.to) ?? [];
      const ports: Raw[] = rule.ports ?? [];
      const peerOk = peers.length === 0 || peers.some((peer) => refPeerMatches(w, policy, peer, otherPod, otherIp));
      const portOk = (ports.length === 0 && (mutation !== 'empty-ports-is-TCP-only' || c.protocol === 'TCP')) || ports.some((port) => refPortMatches(port, c, destinationPod));
      if (peerOk && portOk) return true;
    }
  }
  return false;
}

/** "For a connection … both the egress policy on the source pod and the ingress policy on the destination pod need to allow". */
function referenceVerdict(w: World, c: Connection): boolean {
  const srcPod = refPodAt(w, c.src);
  const dstPod = refPodAt(w, c.dst);
  const egressOk = srcPod === undefined || refSideAllows(w, srcPod, 'Egress', dstPod, c.dst, c, dstPod);
  const ingressOk = dstPod === undefined || refSideAllows(w, dstPod, 'Ingress', srcPod, c.src, c, dstPod);
  return egressOk && ingressOk;
}

// ---------------------------------------------------------------------------------------------
// Table cases over a fixed world.

const ns = (name: string, labels: Record<string, string> = {}): Raw => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
const pod = (namespace: string, name: string, labels: Record<string, string>, ips: string[], node: string, containers: Raw[] = [], extra: { hostNetwork?: boolean; phase?: string } = {}): Raw => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { namespace, name, labels },
  spec: { nodeName: node, containers: containers.map((ports, i) => ({ name: `c${i}`, ports })), ...(extra.hostNetwork ? { hostNetwork: true } : {}) },
  status: { phase: extra.phase ?? 'Running', podIPs: ips.map((ip) => ({ ip })) },
});
const policy = (namespace: string, name: string, spec: Raw): Raw => ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace, name }, spec });

const N1 = '192.168.0.1';
const N2 = '192.168.0.2';
const EXT = '203.0.113.5';
const BASE: World = {
  namespaces: [ns('a', { team: 'x' }), ns('b', { team: 'y' }), ns('c')],
  pods: [
    pod('a', 'web', { app: 'web' }, ['10.0.1.1'], 'n1', [[{ name: 'http', containerPort: 80 }, { name: 'dns', containerPort: 53, protocol: 'UDP' }]]),
    pod('a', 'db', { app: 'db' }, ['10.0.1.2'], 'n2', [[{ name: 'http', containerPort: 8080 }]]),
    pod('a', 'client', { app: 'client' }, ['10.0.1.3'], 'n1'),
    pod('b', 'web', { app: 'web' }, ['10.0.2.1'], 'n1', [[{ name: 'http', containerPort: 81 }]]),
    pod('b', 'client', { app: 'client', tier: 'front' }, ['10.0.2.2'], 'n2'),
    pod('c', 'x', { app: 'x' }, ['10.0.3.1', 'fd00::31'], 'n1', [[{ name: 'http', containerPort: 80 }], [{ name: 'http', containerPort: 8080 }]]),
    pod('c', 'hostnet', { app: 'hostnet' }, [N2], 'n2', [], { hostNetwork: true }),
  ],
  policies: [],
  nodeIps: { n1: [N1], n2: [N2] },
};
const IPS: Record<string, string> = {};
for (const p of BASE.pods) if (!p.spec.hostNetwork) IPS[`${p.metadata.namespace}/${p.metadata.name}`] = p.status.podIPs[0].ip;
const at = (s: string) => IPS[s] ?? s;

type Check = [from: string, to: string, port: `${number}/${Protocol}`, allowed: boolean];

function table(name: string, policies: Raw[], checks: Check[], world: Partial<World> = {}) {
  it(name, () => {
    const w: World = { ...BASE, ...world, policies };
    const nodes = compileNodes(w);
    const rows = checks.map(([from, to, pp, expected]) => {
      const [port, protocol] = pp.split('/') as [string, Protocol];
      const c: Connection = { src: at(from), dst: at(to), protocol, port: Number(port) };
      return { conn: `${from} -> ${to} ${pp}`, expected, compiled: compiledAllowed(nodes, c), reference: referenceVerdict(w, c) };
    });
    expect(rows.filter((r) => r.compiled !== r.expected || r.reference !== r.expected)).toEqual([]);
  });
}

const ingressOnly = (namespace: string, name: string, podSelector: Raw, ingress: Raw[] | undefined, policyTypes?: string[]) =>
  policy(namespace, name, { podSelector, ...(ingress ? { ingress } : {}), ...(policyTypes ? { policyTypes } : {}) });
const egressOnly = (namespace: string, name: string, podSelector: Raw, egress: Raw[]) => policy(namespace, name, { podSelector, egress, policyTypes: ['Egress'] });

describe('NetworkPolicy semantics (table)', () => {
  table('no policy: everything is allowed', [], [
    ['b/client', 'a/web', '80/TCP', true],
    [EXT, 'a/db', '9/UDP', true],
    ['a/web', EXT, '443/TCP', true],
  ]);

  table('an empty ingress list isolates every pod of the namespace, and only that namespace, only ingress', [ingressOnly('a', 'deny', {}, [])], [
    ['b/client', 'a/web', '80/TCP', false],
    ['a/client', 'a/web', '80/TCP', false],
    [EXT, 'a/db', '8080/TCP', false],
    ['a/web', 'b/web', '81/TCP', true],
    ['a/web', EXT, '80/TCP', true],
    ['b/client', 'b/web', '81/TCP', true],
  ]);

  table('podSelector picks the pods of its own namespace; NotIn and DoesNotExist match pods without the key', [
    ingressOnly('a', 'web', { matchLabels: { app: 'web' } }, []),
    ingressOnly('b', 'not-front', { matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['front'] }] }, []),
  ], [
    ['a/client', 'a/web', '80/TCP', false],
    ['a/client', 'a/db', '8080/TCP', true],
    ['a/client', 'b/web', '81/TCP', false],
    ['a/client', 'b/client', '80/TCP', true],
    ['a/client', 'c/x', '80/TCP', true],
  ]);

  table('policyTypes unset: Ingress always, Egress only with egress rules', [
    policy('a', 'egress-rules', { podSelector: { matchLabels: { app: 'web' } }, egress: [{ to: [{ podSelector: { matchLabels: { app: 'db' } } }] }] }),
    policy('b', 'ingress-rules', { podSelector: {}, ingress: [{}] }),
  ], [
    ['a/client', 'a/web', '80/TCP', false],
    ['a/web', 'a/db', '8080/TCP', true],
    ['a/web', 'a/client', '80/TCP', false],
    ['b/web', EXT, '80/TCP', true],
    [EXT, 'b/web', '81/TCP', true],
  ]);

  table('policyTypes [Egress] with no egress rule denies all egress and leaves ingress alone', [policy('a', 'deny-egress', { podSelector: {}, policyTypes: ['Egress'] })], [
    ['a/web', 'b/web', '81/TCP', false],
    ['a/web', EXT, '53/UDP', false],
    ['b/web', 'a/web', '80/TCP', true],
    [EXT, 'a/db', '8080/TCP', true],
  ]);

  table('a rule without peers and ports allows everything', [ingressOnly('a', 'deny', {}, []), ingressOnly('a', 'all', { matchLabels: { app: 'db' } }, [{}])], [
    [EXT, 'a/db', '1/SCTP', true],
    ['b/client', 'a/db', '65535/UDP', true],
    ['b/client', 'a/web', '80/TCP', false],
  ]);

  table('several policies selecting a pod are a union', [
    ingressOnly('a', 'from-b-client', { matchLabels: { app: 'web' } }, [{ from: [{ namespaceSelector: { matchLabels: { team: 'y' } }, podSelector: { matchLabels: { app: 'client' } } }], ports: [{ port: 80 }] }]),
    ingressOnly('a', 'from-db', {}, [{ from: [{ podSelector: { matchLabels: { app: 'db' } } }], ports: [{ port: 81 }] }]),
  ], [
    ['b/client', 'a/web', '80/TCP', true],
    ['b/client', 'a/web', '81/TCP', false],
    ['a/db', 'a/web', '81/TCP', true],
    ['a/db', 'a/web', '80/TCP', false],
    ['a/client', 'a/web', '80/TCP', false],
  ]);

  table('peer podSelector alone means the policy namespace', [ingressOnly('a', 'clients', {}, [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }] }])], [
    ['a/client', 'a/web', '80/TCP', true],
    ['b/client', 'a/web', '80/TCP', false],
  ]);

  table('peer namespaceSelector alone: every pod of those namespaces', [ingressOnly('a', 'team-y', {}, [{ from: [{ namespaceSelector: { matchLabels: { team: 'y' } } }] }])], [
    ['b/client', 'a/web', '80/TCP', true],
    ['b/web', 'a/web', '80/TCP', true],
    ['a/client', 'a/web', '80/TCP', false],
    ['c/x', 'a/web', '80/TCP', false],
  ]);

  table('namespaceSelector and podSelector in one peer: AND', [
    ingressOnly('a', 'and', {}, [{ from: [{ namespaceSelector: { matchLabels: { team: 'y' } }, podSelector: { matchLabels: { app: 'client' } } }] }]),
  ], [
    ['b/client', 'a/web', '80/TCP', true],
    ['b/web', 'a/web', '80/TCP', false],
    ['a/client', 'a/web', '80/TCP', false],
  ]);

  table('namespaceSelector and podSelector in separate peers: OR', [
    ingressOnly('a', 'or', {}, [{ from: [{ namespaceSelector: { matchLabels: { team: 'y' } } }, { podSelector: { matchLabels: { app: 'client' } } }] }]),
  ], [
    ['b/client', 'a/web', '80/TCP', true],
    ['b/web', 'a/web', '80/TCP', true],
    ['a/client', 'a/web', '80/TCP', true],
    ['a/db', 'a/web', '80/TCP', false],
    ['c/x', 'a/web', '80/TCP', false],
  ]);

  table('namespaceSelector {} is every namespace; kubernetes.io/metadata.name is always there', [
    ingressOnly('a', 'any-ns', { matchLabels: { app: 'web' } }, [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: 'client' } } }] }]),
    ingressOnly('a', 'ns-c', { matchLabels: { app: 'db' } }, [{ from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'c' } } }] }]),
  ], [
    ['b/client', 'a/web', '80/TCP', true],
    ['a/client', 'a/web', '80/TCP', true],
    ['b/web', 'a/web', '80/TCP', false],
    ['c/x', 'a/db', '8080/TCP', true],
    ['b/client', 'a/db', '8080/TCP', false],
  ]);

  table('ipBlock with except matches every address in it, pods and other nodes included', [
    ingressOnly('a', 'block', { matchLabels: { app: 'web' } }, [{ from: [{ ipBlock: { cidr: '10.0.0.0/16', except: ['10.0.2.0/24'] } }, { ipBlock: { cidr: '192.168.0.0/24' } }] }]),
    ingressOnly('a', 'world', { matchLabels: { app: 'db' } }, [{ from: [{ ipBlock: { cidr: '0.0.0.0/0', except: ['10.0.0.0/8'] } }] }]),
  ], [
    ['a/db', 'a/web', '80/TCP', true],
    ['c/x', 'a/web', '80/TCP', true],
    ['b/client', 'a/web', '80/TCP', false],
    [N2, 'a/web', '80/TCP', true],
    [EXT, 'a/web', '80/TCP', false],
    [EXT, 'a/db', '8080/TCP', true],
    [N1, 'a/db', '8080/TCP', true],
    ['a/web', 'a/db', '8080/TCP', false],
  ]);

  table('a pod and its own node may always talk; another node is a peer like any other', [
    policy('a', 'deny-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] }),
  ], [
    [N1, 'a/web', '80/TCP', true],
    ['a/web', N1, '10250/TCP', true],
    [N2, 'a/web', '80/TCP', false],
    ['a/web', N2, '80/TCP', false],
    [N2, 'a/db', '8080/TCP', true],
  ]);

  table('ports: protocol defaults to TCP; endPort ranges; a protocol without a port is all its ports', [
    ingressOnly('a', 'ports', {}, [{ ports: [{ port: 80 }, { port: 8000, endPort: 8100, protocol: 'UDP' }, { protocol: 'SCTP' }] }]),
  ], [
    [EXT, 'a/web', '80/TCP', true],
    [EXT, 'a/web', '80/UDP', false],
    [EXT, 'a/web', '81/TCP', false],
    [EXT, 'a/web', '8000/UDP', true],
    [EXT, 'a/web', '8100/UDP', true],
    [EXT, 'a/web', '8101/UDP', false],
    [EXT, 'a/web', '8080/TCP', false],
    [EXT, 'a/web', '9/SCTP', true],
  ]);

  table('named ports in ingress resolve on each selected pod; a name with the wrong protocol matches nothing', [
    ingressOnly('a', 'named', {}, [{ ports: [{ port: 'http' }, { port: 'dns', protocol: 'TCP' }] }]),
  ], [
    [EXT, 'a/web', '80/TCP', true],
    [EXT, 'a/web', '8080/TCP', false],
    [EXT, 'a/db', '8080/TCP', true],
    [EXT, 'a/db', '80/TCP', false],
    [EXT, 'a/web', '53/TCP', false],
    [EXT, 'a/web', '53/UDP', false],
    [EXT, 'a/client', '80/TCP', false],
  ]);

  table('named ports in egress resolve on each destination pod; a non-pod destination matches no name', [
    egressOnly('b', 'named-out', { matchLabels: { app: 'client' } }, [{ ports: [{ port: 'http' }, { port: 'dns', protocol: 'UDP' }] }]),
  ], [
    ['b/client', 'a/web', '80/TCP', true],
    ['b/client', 'a/web', '8080/TCP', false],
    ['b/client', 'a/db', '8080/TCP', true],
    ['b/client', 'a/db', '80/TCP', false],
    ['b/client', 'b/web', '81/TCP', true],
    ['b/client', 'a/web', '53/UDP', true],
    ['b/client', 'a/db', '53/UDP', false],
    ['b/client', EXT, '80/TCP', false],
    ['b/client', N1, '80/TCP', false],
  ]);

  table('a name two containers of one pod give different numbers allows both', [ingressOnly('c', 'http', {}, [{ ports: [{ port: 'http' }] }])], [
    [EXT, 'c/x', '80/TCP', true],
    [EXT, 'c/x', '8080/TCP', true],
    [EXT, 'c/x', '81/TCP', false],
  ]);

  table('named egress port with a peer: only matching destination pods, each with its own number', [
    egressOnly('b', 'to-web', { matchLabels: { app: 'client' } }, [{ to: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: 'web' } } }, { ipBlock: { cidr: '10.0.1.2/32' } }], ports: [{ port: 'http' }] }]),
  ], [
    ['b/client', 'a/web', '80/TCP', true],
    ['b/client', 'b/web', '81/TCP', true],
    ['b/client', 'b/web', '80/TCP', false],
    ['b/client', 'a/db', '8080/TCP', true],
    ['b/client', 'c/x', '80/TCP', false],
  ]);

  table('both sides must allow; each side only when it is a pod', [
    egressOnly('b', 'client-out', { matchLabels: { app: 'client' } }, [{ to: [{ namespaceSelector: { matchLabels: { team: 'x' } } }] }]),
    ingressOnly('a', 'web-in', { matchLabels: { app: 'web' } }, [{ from: [{ ipBlock: { cidr: '203.0.113.0/24' } }] }]),
  ], [
    ['b/client', 'a/web', '80/TCP', false],
    ['b/client', 'a/db', '8080/TCP', true],
    ['b/client', EXT, '80/TCP', false],
    ['b/client', 'b/web', '81/TCP', false],
    [EXT, 'a/web', '80/TCP', true],
    ['b/web', 'a/web', '80/TCP', false],
  ]);

  table('IPv6: an ipBlock of one family matches only addresses of that family', [
    egressOnly('c', 'v6-out', {}, [{ to: [{ ipBlock: { cidr: 'fd00::/16', except: ['fd00::/120'] } }] }]),
  ], [
    ['fd00::31', 'fd00:1::9', '80/TCP', true],
    ['fd00::31', 'fd00::9', '80/TCP', false],
    ['c/x', EXT, '80/TCP', false],
    ['c/x', 'a/web', '80/TCP', false],
  ]);

  table('host-network and finished pods are not pods to policy', [
    ingressOnly('c', 'all', {}, []),
    ingressOnly('a', 'clients', {}, [{ from: [{ namespaceSelector: {} }] }]),
  ], [
    [N2, 'a/web', '80/TCP', false],
    ['b/client', 'a/web', '80/TCP', true],
    ['10.0.9.9', 'a/web', '80/TCP', false],
  ], { pods: [...BASE.pods, pod('c', 'done', { app: 'x' }, ['10.0.9.9'], 'n1', [], { phase: 'Succeeded' })] });
});

describe('model helpers', () => {
  it('cidrMinus yields disjoint prefixes covering exactly cidr without the excepts', () => {
    expect(cidrMinus('10.0.0.0/8', [])).toEqual(['10.0.0.0/8']);
    expect(cidrMinus('10.0.0.0/30', ['10.0.0.1/32'])).toEqual(['10.0.0.0/32', '10.0.0.2/31']);
    expect(cidrMinus('10.0.0.0/24', ['10.0.0.0/25', '10.0.0.128/25'])).toEqual([]);
    const parts = cidrMinus('10.0.0.0/24', ['10.0.0.16/28', '10.0.0.200/29', '10.0.0.17/32']);
    for (let i = 0; i < 256; i++) {
      const ip = parseIp(`10.0.0.${i}`);
      const inExcept = (i >= 16 && i < 32) || (i >= 200 && i < 208);
      expect(parts.filter((p) => cidrContains(parseCidr(p), ip)).length).toBe(inExcept ? 0 : 1);
    }
    expect(cidrMinus('fd00::/64', ['fd00::/65'])).toEqual(['fd00::8000:0:0:0/65']);
  });

  it('portRangePrefixes covers exactly the range', () => {
    expect(portRangePrefixes(0, 65535)).toEqual([{ port: 0, prefix: 0 }]);
    expect(portRangePrefixes(80, 80)).toEqual([{ port: 80, prefix: 16 }]);
    expect(portRangePrefixes(8000, 8100).length).toBeLessThanOrEqual(30);
    for (const [a, b] of [[1, 65535], [8000, 8100], [1023, 1025], [32768, 60999]]) {
      const covered = new Set<number>();
      for (const { port, prefix } of portRangePrefixes(a, b)) for (let p = port; p < port + 2 ** (16 - prefix); p++) covered.add(p);
      expect(covered.size).toBe(b - a + 1);
      expect(Math.min(...covered)).toBe(a);
      expect(Math.max(...covered)).toBe(b);
    }
  });

  it('egress named ports resolve per destination pod even between pods with the same labels', () => {
    const w: World = {
      ...BASE,
      pods: [...BASE.pods, pod('a', 'web2', { app: 'web' }, ['10.0.1.9'], 'n2', [[{ name: 'http', containerPort: 9090 }]])],
      policies: [egressOnly('b', 'out', { matchLabels: { app: 'client' } }, [{ to: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: 'web' } } }], ports: [{ port: 'http' }] }])],
    };
    const nodes = compileNodes(w);
    const allowed = (dst: string, port: number) => compiledAllowed(nodes, { src: at('b/client'), dst, protocol: 'TCP', port });
    expect([allowed('10.0.1.1', 80), allowed('10.0.1.1', 9090), allowed('10.0.1.9', 9090), allowed('10.0.1.9', 80)]).toEqual([true, false, true, false]);
    const n2 = nodes[1];
    expect(n2.model.pods.get('a/web2')!.identity).not.toBe(n2.model.pods.get('a/web')!.identity);
  });

  it('the maps name the rule that allowed and the policy that isolated', () => {
    const w: World = { ...BASE, policies: [ingressOnly('a', 'p', {}, [{ ports: [{ port: 9 }] }, { ports: [{ port: 80 }] }])] };
    const nodes = compileNodes(w);
    const ref = (v: PolicyVerdict | 'host' | undefined) => (typeof v === 'object' ? { ...v, policy: nodes[0].desired.policies.get(v.policyId)?.ref } : v);
    expect(ref(sideVerdict(nodes, { src: EXT, dst: at('a/web'), protocol: 'TCP', port: 80 }, 'ingress'))).toMatchObject({ action: 'allow', tier: 'networkpolicy', policy: 'NetworkPolicy/a/p', rule: 1 });
    expect(ref(sideVerdict(nodes, { src: EXT, dst: at('a/web'), protocol: 'TCP', port: 81 }, 'ingress'))).toMatchObject({ action: 'deny', tier: 'networkpolicy', policy: 'NetworkPolicy/a/p', rule: RULE_ISOLATED });
    expect(sideVerdict(nodes, { src: N1, dst: at('a/web'), protocol: 'TCP', port: 81 }, 'ingress')).toBe('host');
    expect(sideVerdict(nodes, { src: at('a/web'), dst: EXT, protocol: 'TCP', port: 81 }, 'egress')).toMatchObject({ action: 'allow', tier: 'default' });
  });
});

// ---------------------------------------------------------------------------------------------
// Generated worlds: the compiled model against the reference on every generated connection.

const LABEL_KEYS = ['app', 'tier', 'env'];
const LABEL_VALUES = ['a', 'b', 'c'];
const PORT_NAMES = ['http', 'dns', 'metrics'];
const PORT_NUMBERS = [53, 80, 81, 8080, 9000];
const PROTOS: Protocol[] = ['TCP', 'UDP', 'SCTP'];
/** Weighted towards TCP, so that names and ports of generated rules and pods meet often enough. */
const PROTOS_WEIGHTED: Protocol[] = ['TCP', 'TCP', 'TCP', 'UDP', 'SCTP'];
const BLOCKS = ['10.0.0.0/24', '10.0.0.0/29', '10.0.0.0/8', '0.0.0.0/0', '10.1.0.0/16', '192.0.2.0/25', 'fd00::/64', '::/0'];
const EXCEPTS = ['10.0.0.0/30', '10.0.0.4/30', '10.0.0.2/31', '10.0.0.0/25', '10.0.0.3/32', '10.1.0.1/32', '192.0.2.0/26', 'fd00::1/128', 'fd00::/120', '10.0.0.0/16'];
const GEN_NODES: Record<string, string[]> = { n1: ['10.1.0.1', 'fd01::1'], n2: ['10.1.0.2'] };
const EXTERNALS = ['192.0.2.1', '192.0.2.200', '2001:db8::1', 'fd00::99'];

function generateWorld(seed: number): World {
  const r = new Rng(seed);
  const labels = () => {
    const out: Record<string, string> = {};
    for (const k of LABEL_KEYS) if (r.chance(0.5)) out[k] = r.pick(LABEL_VALUES);
    return out;
  };
  const selector = (): Raw => {
    const s: Raw = {};
    if (r.chance(0.5)) s.matchLabels = Object.fromEntries(LABEL_KEYS.filter(() => r.chance(0.3)).map((k) => [k, r.pick(LABEL_VALUES)]));
    if (r.chance(0.4)) {
      s.matchExpressions = Array.from({ length: 1 + r.int(2) }, () => {
        const operator = r.pick(['In', 'NotIn', 'Exists', 'DoesNotExist']);
        const key = r.pick(LABEL_KEYS);
        return operator === 'In' || operator === 'NotIn' ? { key, operator, values: LABEL_VALUES.filter(() => r.chance(0.5)).concat(r.pick(LABEL_VALUES)) } : { key, operator };
      });
    }
    return s;
  };
  const namespaces = ['n0', 'n1', 'n2'].map((name) => ns(name, labels()));
  const pods: Raw[] = [];
  const podCount = 4 + r.int(6);
  for (let i = 0; i < podCount; i++) {
    const node = r.pick(['n1', 'n2']);
    const containers = Array.from({ length: 1 + r.int(2) }, () => {
      const names = new Set<string>();
      return Array.from({ length: r.int(3) }, () => {
        const port: Raw = { containerPort: r.pick(PORT_NUMBERS) };
        if (r.chance(0.5)) port.protocol = r.pick(PROTOS_WEIGHTED);
        const name = r.pick(PORT_NAMES);
        if (r.chance(0.8) && !names.has(name)) {
          names.add(name);
          port.name = name;
        }
        return port;
      });
    });
    const hostNetwork = r.chance(0.08);
    const ips = hostNetwork ? [GEN_NODES[node][0]] : r.chance(0.3) ? [`10.0.0.${i + 1}`, `fd00::${i + 1}`] : [`10.0.0.${i + 1}`];
    pods.push(pod(r.pick(['n0', 'n1', 'n2']), `p${i}`, labels(), ips, node, containers, { hostNetwork, phase: r.chance(0.05) ? 'Failed' : 'Running' }));
  }
  const peer = (): Raw => {
    switch (r.int(4)) {
      case 0:
        return { podSelector: selector() };
      case 1:
        return { namespaceSelector: selector() };
      case 2:
        return { podSelector: selector(), namespaceSelector: selector() };
      default: {
        const cidr = r.pick(BLOCKS);
        const outer = parseCidr(cidr);
        const except = EXCEPTS.filter((e) => {
          const inner = parseCidr(e);
          return inner.family === outer.family && inner.prefix > outer.prefix && cidrContains(outer, { family: inner.family, value: inner.address }) && r.chance(0.5);
        });
        return { ipBlock: except.length > 0 ? { cidr, except } : { cidr } };
      }
    }
  };
  const port = (): Raw => {
    const p: Raw = {};
    if (r.chance(0.5)) p.protocol = r.pick(PROTOS_WEIGHTED);
    const kind = r.int(5);
    if (kind === 1) p.port = r.pick(PORT_NUMBERS);
    if (kind === 2 || kind === 4) p.port = r.pick(PORT_NAMES);
    if (kind === 3) {
      p.port = r.pick(PORT_NUMBERS);
      // Often another port of the pool, so that connections land on the range's ends.
      p.endPort = r.chance(0.6) ? r.pick(PORT_NUMBERS.filter((n) => n >= p.port)) : p.port + r.int(100);
    }
    return p;
  };
  const rules = (peerField: 'from' | 'to') =>
    Array.from({ length: r.int(3) }, () => {
      const rule: Raw = {};
      if (r.chance(0.7)) rule[peerField] = Array.from({ length: 1 + r.int(2) }, peer);
      if (r.chance(0.7)) rule.ports = Array.from({ length: 1 + r.int(2) }, port);
      return rule;
    });
  const policies = Array.from({ length: r.int(6) }, (_, i) => {
    const spec: Raw = { podSelector: r.chance(0.4) ? {} : selector() };
    if (r.chance(0.8)) spec.ingress = rules('from');
    if (r.chance(0.6)) spec.egress = rules('to');
    const types = r.int(4);
    if (types === 1) spec.policyTypes = ['Ingress'];
    if (types === 2) spec.policyTypes = ['Egress'];
    if (types === 3) spec.policyTypes = ['Ingress', 'Egress'];
    return policy(r.pick(['n0', 'n1', 'n2']), `np${i}`, spec);
  });
  return { namespaces, pods, policies, nodeIps: GEN_NODES };
}

function generateConnections(w: World, seed: number, count: number): Connection[] {
  const r = new Rng(seed ^ 0x5bd1e995);
  const addresses = [...w.pods.flatMap((p) => p.status.podIPs.map((e: Raw) => e.ip as string)), ...Object.values(GEN_NODES).flat(), ...EXTERNALS];
  const out: Connection[] = [];
  while (out.length < count) {
    const src = r.pick(addresses);
    const dst = r.pick(addresses);
    if (parseIp(src).family !== parseIp(dst).family) continue;
    // Often one of the destination pod's own container ports, so that named ports meet their pods.
    const target = w.pods.find((p) => p.status.podIPs.some((e: Raw) => e.ip === dst));
    const own: Raw[] = target ? target.spec.containers.flatMap((c: Raw) => c.ports) : [];
    if (own.length > 0 && r.chance(0.6)) {
      const cp = r.pick(own);
      out.push({ src, dst, protocol: cp.protocol ?? 'TCP', port: cp.containerPort });
    } else {
      out.push({ src, dst, protocol: r.pick(PROTOS_WEIGHTED), port: r.pick([...PORT_NUMBERS, 82, 8100, 1234, 9050]) });
    }
  }
  return out;
}

/** The rule a side's verdict names, when a rule allowed it. */
function decidingRule(w: World, nodes: NodeCompile[], v: PolicyVerdict | 'host' | undefined, dir: PolicyDirection): Raw | undefined {
  if (typeof v !== 'object' || v.action !== 'allow' || v.tier !== 'networkpolicy') return undefined;
  const ref = nodes[0].desired.policies.get(v.policyId)!.ref;
  const p = w.policies.find((x) => `NetworkPolicy/${x.metadata.namespace}/${x.metadata.name}` === ref)!;
  return (dir === 'ingress' ? p.spec.ingress : p.spec.egress)[v.rule];
}

function compareOnGeneratedWorlds(worlds: number) {
  const stats = { checked: 0, allowed: 0, isolatedSides: 0, byNamedPort: 0, byIpBlock: 0, byEndPort: 0 };
  const mismatches: unknown[] = [];
  for (let seed = 1; seed <= worlds; seed++) {
    const w = generateWorld(seed);
    const nodes = compileNodes(w);
    for (const c of generateConnections(w, seed, 40)) {
      const allowed = compiledAllowed(nodes, c);
      const ref = referenceVerdict(w, c);
      stats.checked++;
      if (allowed) stats.allowed++;
      for (const dir of ['ingress', 'egress'] as const) {
        const side = sideVerdict(nodes, c, dir);
        if (typeof side === 'object' && side.tier === 'networkpolicy') stats.isolatedSides++;
        const rule = decidingRule(w, nodes, side, dir);
        if (!rule) continue;
        if ((rule.ports ?? []).length > 0 && rule.ports.every((p: Raw) => typeof p.port === 'string')) stats.byNamedPort++;
        if ((rule.ports ?? []).some((p: Raw) => p.endPort !== undefined)) stats.byEndPort++;
        const peers: Raw[] = rule.from ?? rule.to ?? [];
        if (peers.length > 0 && peers.every((p) => p.ipBlock)) stats.byIpBlock++;
      }
      if (allowed !== ref && mismatches.length < 3) mismatches.push({ seed, connection: c, compiled: allowed, reference: ref, world: w });
    }
  }
  return { stats, mismatches };
}

describe('NetworkPolicy: compiled model agrees with the reference evaluator on generated worlds', () => {
  it('every generated connection of 1,000 worlds (40,000 connections)', () => {
    const { stats, mismatches } = compareOnGeneratedWorlds(1000);
    expect(mismatches).toEqual([]);
    expect(stats.checked).toBe(40_000);
    // The generator exercises both outcomes, isolated pods and each kind of rule, not just the open default.
    expect(stats.allowed).toBeGreaterThan(stats.checked * 0.2);
    expect(stats.allowed).toBeLessThan(stats.checked * 0.9);
    expect(stats.isolatedSides).toBeGreaterThan(stats.checked * 0.1);
    expect(stats.byNamedPort).toBeGreaterThan(50);
    expect(stats.byIpBlock).toBeGreaterThan(50);
    expect(stats.byEndPort).toBeGreaterThan(50);
  });

  // The comparison would catch a wrong semantic: each plausible misreading, put into the
  // reference, disagrees with the compiled model on some generated connection.
  it.each(MUTATIONS)('notices the misreading %s', (m) => {
    mutation = m;
    try {
      expect(compareOnGeneratedWorlds(500).mismatches.length).toBeGreaterThan(0);
    } finally {
      mutation = undefined;
    }
  });
});
