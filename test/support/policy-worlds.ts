// Generated policy worlds for the policy property tests: namespaces, pods on two nodes (named
// ports that differ per pod, host-network and finished ones), and a mix of NetworkPolicies,
// ClusterNetworkPolicies and KelpNetworkPolicies (tiers, tied priorities, Pass, unknown peers,
// nested CIDRs, ranges, named ports, audit annotations), plus packets aimed at them.
import { cidrCovers, parseCidr } from '../../src/ipam/ip';
import type { ClusterNetworkPolicyObject, PolicyPeer, PolicyProtocol, PolicyRule } from '../../src/sources/objects/clusternetworkpolicy';
import type { KelpNetworkPolicyObject } from '../../src/sources/objects/kelpnetworkpolicy';
import type { LabelSelector } from '../../src/sources/objects/labels';
import type { NamespaceObject } from '../../src/sources/objects/namespace';
import type { Protocol } from '../../src/sources/objects/net';
import type { NetworkPolicyObject, NetworkPolicyPeer, NetworkPolicyPort } from '../../src/sources/objects/networkpolicy';
import type { PodObject } from '../../src/sources/objects/pod';
import type { PolicyCompileInputs } from '../../src/policy';
import type { RefPacket, RefWorld } from './policy-reference';
import { Rng } from './rng';

const LABEL_KEYS = ['app', 'tier'];
const LABEL_VALUES = ['a', 'b', 'c'];
const NAMESPACES = ['n0', 'n1', 'n2'];
const PORT_NAMES = ['http', 'dns', 'metrics'];
const PORTS = [53, 80, 81, 443, 8080];
const PROTOS: Protocol[] = ['TCP', 'TCP', 'TCP', 'UDP', 'SCTP'];
/** Nested and overlapping, pods' and nodes' addresses inside some. */
const CIDRS = ['0.0.0.0/0', '10.0.0.0/8', '10.0.0.0/16', '10.0.0.0/24', '10.0.0.0/28', '10.0.0.4/30', '10.0.0.5/32', '10.0.1.0/24', '10.0.9.0/24', '192.0.2.0/24', '192.0.2.128/25', 'fd00::/64'];
export const NODES: Record<string, string[]> = { A: ['10.0.9.1'], B: ['10.0.9.2'] };
const EXTERNALS = ['192.0.2.1', '192.0.2.200', '198.51.100.7', '10.0.0.14', '10.2.3.4'];

export interface World extends RefWorld {
  seed: number;
}

export function generateWorld(seed: number): World {
  const r = new Rng(seed);
  const labels = (): Record<string, string> => {
    const out: Record<string, string> = {};
    for (const k of LABEL_KEYS) if (r.chance(0.6)) out[k] = r.pick(LABEL_VALUES);
    return out;
  };
  const selector = (): LabelSelector => {
    if (r.chance(0.3)) return { matchLabels: {}, matchExpressions: [] };
    const s: LabelSelector = { matchLabels: {}, matchExpressions: [] };
    if (r.chance(0.7)) s.matchLabels[r.pick(LABEL_KEYS)] = r.pick(LABEL_VALUES);
    if (r.chance(0.3)) {
      const operator = r.pick(['In', 'NotIn', 'Exists', 'DoesNotExist'] as const);
      const key = r.pick(LABEL_KEYS);
      s.matchExpressions.push({ key, operator, values: operator === 'In' || operator === 'NotIn' ? [r.pick(LABEL_VALUES)] : [] });
    }
    return s;
  };
  const nsSelector = (): LabelSelector => (r.chance(0.4) ? { matchLabels: {}, matchExpressions: [] } : { matchLabels: { 'kubernetes.io/metadata.name': r.pick(NAMESPACES) }, matchExpressions: [] });
  const meta = (name: string) => ({
    name,
    labels: {},
    annotations: (r.chance(0.12) ? { 'policy.kelp.dev/audit': 'true' } : {}) as Record<string, string>,
  });

  const namespaces: NamespaceObject[] = NAMESPACES.map((name) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { ...labels(), 'kubernetes.io/metadata.name': name }, annotations: {} } }));
  const pods: PodObject[] = [];
  const podCount = 4 + r.int(6);
  for (let i = 0; i < podCount; i++) {
    const node = r.pick(['A', 'B']);
    const hostNetwork = r.chance(0.07);
    const containers = Array.from({ length: 1 + r.int(2) }, (_, c) => {
      const names = new Set<string>();
      return {
        name: `c${c}`,
        ports: Array.from({ length: r.int(3) }, () => {
          const name = r.pick(PORT_NAMES);
          const port = { containerPort: r.pick(PORTS), protocol: r.pick(PROTOS) } as { containerPort: number; protocol: Protocol; name?: string };
          if (r.chance(0.8) && !names.has(name)) {
            names.add(name);
            port.name = name;
          }
          return port;
        }),
      };
    });
    // Addresses in nested policy CIDRs: 10.0.0.1..9 (inside /28, some in /30, one the /32), 10.0.1.x.
    const ip = hostNetwork ? NODES[node][0] : i < 7 ? `10.0.0.${i + 1}` : `10.0.1.${i}`;
    pods.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { namespace: r.pick(NAMESPACES), name: `p${i}`, labels: labels(), annotations: {} },
      spec: { nodeName: node, containers, ...(hostNetwork ? { hostNetwork: true } : {}) },
      status: { phase: r.chance(0.04) ? 'Failed' : 'Running', podIP: ip, podIPs: [{ ip }] },
    });
  }

  const range = (): { first: number; last: number } => {
    const first = r.pick(PORTS);
    return { first, last: r.chance(0.5) ? r.pick(PORTS.filter((p) => p >= first)) : first + r.int(50) };
  };
  const sharedPeer = (dir: 'ingress' | 'egress'): PolicyPeer => {
    const k = r.int(dir === 'egress' ? 8 : 5);
    if (k === 0) return { namespaces: nsSelector() };
    if (k <= 2) return { pods: { namespaceSelector: nsSelector(), podSelector: selector() } };
    if (k === 3 && r.chance(0.4)) return { unknown: true };
    if (k <= 4) return { pods: { namespaceSelector: { matchLabels: {}, matchExpressions: [] }, podSelector: selector() } };
    return { networks: Array.from({ length: 1 + r.int(2), }, () => r.pick(CIDRS)) };
  };
  const sharedProtocols = (): PolicyProtocol[] => {
    if (r.chance(0.35)) return [];
    return Array.from({ length: 1 + r.int(2) }, (): PolicyProtocol => {
      const k = r.int(4);
      if (k === 0) return { namedPort: r.pick(PORT_NAMES) };
      const protocol = r.pick(PROTOS);
      if (k === 1) return { protocol };
      if (k === 2) return { protocol, port: { number: r.pick(PORTS) } };
      const { first, last } = range();
      return { protocol, port: { range: { start: first, end: last } } };
    });
  };
  const sharedRules = (dir: 'ingress' | 'egress', actions: readonly ('Accept' | 'Deny' | 'Pass')[]): PolicyRule[] =>
    Array.from({ length: r.chance(0.25) ? 0 : 1 + r.int(3) }, (_, i) => ({
      name: r.chance(0.5) ? `r${i}` : '',
      action: r.pick(actions),
      peers: Array.from({ length: 1 + r.int(2) }, () => sharedPeer(dir)),
      protocols: sharedProtocols(),
    }));

  const clusterNetworkPolicies: ClusterNetworkPolicyObject[] = Array.from({ length: r.int(4) }, (_, i) => ({
    apiVersion: 'policy.networking.k8s.io/v1alpha2',
    kind: 'ClusterNetworkPolicy',
    metadata: meta(`cnp${i}`),
    spec: {
      tier: r.pick(['Admin', 'Baseline'] as const),
      priority: r.int(3),
      subject: r.chance(0.4) ? { namespaces: nsSelector() } : { pods: { namespaceSelector: nsSelector(), podSelector: selector() } },
      ingress: sharedRules('ingress', ['Accept', 'Deny', 'Pass']),
      egress: sharedRules('egress', ['Accept', 'Deny', 'Pass']),
    },
  }));
  const kelpNetworkPolicies: KelpNetworkPolicyObject[] = Array.from({ length: r.int(3) }, (_, i) => ({
    apiVersion: 'policy.kelp.dev/v1alpha1',
    kind: 'KelpNetworkPolicy',
    metadata: { ...meta(`knp${i}`), namespace: r.pick(NAMESPACES) },
    spec: { subject: { podSelector: selector() }, ingress: sharedRules('ingress', ['Accept', 'Deny']), egress: sharedRules('egress', ['Accept', 'Deny']) },
  }));

  const npPeer = (): NetworkPolicyPeer => {
    const k = r.int(4);
    if (k === 0) return { podSelector: selector() };
    if (k === 1) return { namespaceSelector: nsSelector() };
    if (k === 2) return { podSelector: selector(), namespaceSelector: nsSelector() };
    const cidr = r.pick(CIDRS);
    const except = CIDRS.filter((e) => inside(e, cidr) && r.chance(0.4));
    return { ipBlock: { cidr, except } };
  };
  const npPort = (): NetworkPolicyPort => {
    const protocol = r.pick(PROTOS);
    const k = r.int(4);
    if (k === 0) return { protocol };
    if (k === 1) return { protocol, port: r.pick(PORTS) };
    if (k === 2) return { protocol, port: r.pick(PORT_NAMES) };
    const { first, last } = range();
    return { protocol, port: first, endPort: last };
  };
  const npRules = () =>
    Array.from({ length: r.int(3) }, () => ({
      peers: r.chance(0.75) ? Array.from({ length: 1 + r.int(2) }, npPeer) : [],
      ports: r.chance(0.65) ? Array.from({ length: 1 + r.int(2) }, npPort) : [],
    }));
  const networkPolicies: NetworkPolicyObject[] = Array.from({ length: r.int(4) }, (_, i) => {
    const ingress = npRules().map((x) => ({ from: x.peers, ports: x.ports }));
    const egress = npRules().map((x) => ({ to: x.peers, ports: x.ports }));
    const types = r.pick([['Ingress'], ['Egress'], ['Ingress', 'Egress']] as const);
    return {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { ...meta(`np${i}`), namespace: r.pick(NAMESPACES) },
      spec: { podSelector: r.chance(0.4) ? { matchLabels: {}, matchExpressions: [] } : selector(), policyTypes: [...types], ingress, egress },
    };
  });
  return { seed, namespaces, pods, nodes: NODES, networkPolicies, clusterNetworkPolicies, kelpNetworkPolicies };
}

/** Whether CIDR `inner` lies strictly inside `outer`, as an except must. */
function inside(inner: string, outer: string): boolean {
  const i = parseCidr(inner);
  const o = parseCidr(outer);
  return i.family === o.family && i.prefix > o.prefix && cidrCovers(o, i);
}

/** What node `node`'s agent compiles: its pods (policy pods only) as endpoints 100, 101, …. */
export function inputsFor(w: World, node: string): PolicyCompileInputs {
  const local = w.pods.filter((p) => p.spec.nodeName === node && !p.spec.hostNetwork && p.status?.phase !== 'Failed' && p.status?.phase !== 'Succeeded');
  return {
    namespaces: w.namespaces,
    pods: w.pods,
    localEndpoints: local.map((p, i) => ({ epId: 100 + i, pod: `${p.metadata.namespace}/${p.metadata.name}`, ips: p.status!.podIPs.map((e) => e.ip) })),
    nodeIps: w.nodes[node],
    networkPolicies: w.networkPolicies,
    clusterNetworkPolicies: w.clusterNetworkPolicies,
    kelpNetworkPolicies: w.kelpNetworkPolicies,
  };
}

export function generatePackets(w: World, seed: number, count: number): RefPacket[] {
  const r = new Rng(seed ^ 0x2545f491);
  const addresses = [...new Set([...w.pods.map((p) => p.status!.podIPs[0].ip), ...Object.values(w.nodes).flat(), ...EXTERNALS])];
  const out: RefPacket[] = [];
  for (let i = 0; i < count; i++) {
    const src = r.pick(addresses);
    const dst = r.pick(addresses);
    const target = w.pods.find((p) => p.status!.podIPs[0].ip === dst);
    const own = target ? target.spec.containers.flatMap((c) => c.ports) : [];
    if (r.chance(0.08)) {
      out.push({ src, dst, protocol: 'ICMP', port: 0 });
    } else if (own.length > 0 && r.chance(0.5)) {
      const cp = r.pick(own);
      out.push({ src, dst, protocol: cp.protocol, port: cp.containerPort });
    } else {
      const port = r.chance(0.7) ? r.pick(PORTS) + r.pick([0, 0, 0, -1, 1, 30]) : r.chance(0.5) ? r.pick([0, 1, 65535]) : 1 + r.int(65535);
      out.push({ src, dst, protocol: r.pick(PROTOS), port });
    }
  }
  return out;
}
