// Compiles Kubernetes NetworkPolicies (networking.k8s.io/v1, as src/sources/objects normalises
// them) into kelp's policy model (./model.ts), with upstream's semantics:
//
// - A policy selects pods of its own namespace only (spec.podSelector; `{}`: all of them), and
//   isolates them in the directions of its policyTypes (defaulted by the validator: Ingress,
//   plus Egress when it has egress rules).
// - A pod no policy isolates in a direction is unrestricted in it. An isolated pod gets the union
//   of every rule of every policy isolating it in that direction; an empty rule list adds nothing.
// - A rule: peers (OR) × ports (OR); no peers = every peer, no ports = every port and protocol.
// - Peer: podSelector alone = those pods of the policy's namespace; namespaceSelector alone =
//   every pod of the matching namespaces; both = AND; ipBlock = the addresses in cidr and not in
//   an except, whoever holds them (pod and node addresses included).
// - Port: protocol (TCP by default, defaulted by the validator), number, number..endPort, or a
//   name. A name is resolved on the destination pod — the selected pod for ingress, each peer pod
//   for egress — to the container ports of that pod with that name and that protocol (every
//   container's, so a name two containers use differently allows both numbers, and no rule is
//   dropped over it). A name the pod lacks for the protocol, or a non-pod destination, matches
//   nothing.
// - Traffic between a pod and its own node's addresses is always allowed (`nodeIps`).
//
// Which pods take part: a pod with addresses in status, not on the host network (a hostNetwork
// pod has its node's address and is, to policy, the node), and not finished (Succeeded/Failed: its
// address may already be someone else's). A namespace without an object has the one label the
// API server always sets (kubernetes.io/metadata.name).
import { cidrContains, canonicalIp, parseCidr, parseIp } from '../ipam/ip';
import {
  LABEL_METADATA_NAME,
  NamespaceObject,
  NetworkPolicyObject,
  NetworkPolicyPeer,
  NetworkPolicyPort,
  PodObject,
  Protocol,
  PROTOCOLS,
  selectorMatches,
} from '../sources/objects';
import { AllowEntry, cidrMinus, CompiledPolicy, Direction, DirectionRules, FIRST_POD_IDENTITY, IdentityInfo, Peer, PodPolicy, RuleOrigin } from './model';

export interface PolicyInputs {
  namespaces: readonly NamespaceObject[];
  pods: readonly PodObject[];
  policies: readonly NetworkPolicyObject[];
  /** Node name → its addresses (InternalIP and any other the node sends from). */
  nodeIps: Readonly<Record<string, readonly string[]>>;
}

/** Whether a pod takes part in policy (see the file's head). */
export function policyPod(pod: PodObject): boolean {
  const phase = pod.status?.phase;
  return !pod.spec.hostNetwork && phase !== 'Succeeded' && phase !== 'Failed' && (pod.status?.podIPs.length ?? 0) > 0;
}

const podKey = (p: PodObject) => `${p.metadata.namespace}/${p.metadata.name}`;
const policyKey = (p: NetworkPolicyObject) => `${p.metadata.namespace}/${p.metadata.name}`;
const identityKey = (namespace: string, labels: Record<string, string>) =>
  JSON.stringify([namespace, Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))]);

/** The numbers a name means on `pod` for `protocol`, over all its containers, ascending. */
export function namedPortNumbers(pod: PodObject, name: string, protocol: Protocol): number[] {
  const out = new Set<number>();
  for (const c of pod.spec.containers) for (const p of c.ports) if (p.name === name && p.protocol === protocol) out.add(p.containerPort);
  return [...out].sort((a, b) => a - b);
}

interface Member {
  pod: PodObject;
  key: string;
  identity: number;
  ips: string[];
}

export function compileNetworkPolicies(inputs: PolicyInputs): CompiledPolicy {
  const nsLabels = new Map<string, Record<string, string>>();
  for (const ns of inputs.namespaces) nsLabels.set(ns.metadata.name, ns.metadata.labels);
  const labelsOfNamespace = (name: string) => nsLabels.get(name) ?? { [LABEL_METADATA_NAME]: name };

  // Identities: one per distinct (namespace, labels), numbered in a stable order.
  const members: Member[] = [];
  const keys = new Map<string, IdentityInfo>();
  const pods = inputs.pods.filter(policyPod);
  for (const pod of pods) keys.set(identityKey(pod.metadata.namespace, pod.metadata.labels), { namespace: pod.metadata.namespace, labels: { ...pod.metadata.labels } });
  const sorted = [...keys.keys()].sort();
  const idOf = new Map(sorted.map((k, i) => [k, FIRST_POD_IDENTITY + i]));
  const identities = new Map(sorted.map((k, i) => [FIRST_POD_IDENTITY + i, keys.get(k)!]));
  const podByIp = new Map<string, string>();
  for (const pod of pods) {
    const ips = pod.status!.podIPs.map((e) => canonicalIp(e.ip)!);
    const key = podKey(pod);
    members.push({ pod, key, identity: idOf.get(identityKey(pod.metadata.namespace, pod.metadata.labels))!, ips });
    for (const ip of ips) if (!podByIp.has(ip)) podByIp.set(ip, key);
  }

  /** Whether a selector peer (no ipBlock) of a policy in `policyNs` matches a pod. */
  const selectorPeerMatches = (peer: NetworkPolicyPeer, policyNs: string, pod: PodObject): boolean => {
    const inNamespace = peer.namespaceSelector ? selectorMatches(peer.namespaceSelector, labelsOfNamespace(pod.metadata.namespace)) : pod.metadata.namespace === policyNs;
    return inNamespace && (peer.podSelector ? selectorMatches(peer.podSelector, pod.metadata.labels) : true);
  };

  /** A peer list as model peers (empty list: every peer). */
  const compilePeers = (peers: readonly NetworkPolicyPeer[], policyNs: string): Peer[] => {
    if (peers.length === 0) return [{ kind: 'any' }];
    const out: Peer[] = [];
    const ids = new Set<number>();
    for (const peer of peers) {
      if (peer.ipBlock) {
        for (const cidr of cidrMinus(peer.ipBlock.cidr, peer.ipBlock.except)) out.push({ kind: 'cidr', cidr });
      } else {
        for (const m of members) if (selectorPeerMatches(peer, policyNs, m.pod)) ids.add(m.identity);
      }
    }
    for (const identity of [...ids].sort((a, b) => a - b)) out.push({ kind: 'identity', identity });
    return out;
  };

  /** The addresses of `m` a peer list lets through (named egress ports are per destination pod). */
  const memberAddressesMatched = (peers: readonly NetworkPolicyPeer[], policyNs: string, m: Member): string[] => {
    if (peers.length === 0) return m.ips;
    const out = new Set<string>();
    for (const peer of peers) {
      if (peer.ipBlock) {
        const block = peer.ipBlock;
        for (const ip of m.ips) {
          const addr = parseIp(ip);
          if (cidrContains(parseCidr(block.cidr), addr) && !block.except.some((e) => cidrContains(parseCidr(e), addr))) out.add(ip);
        }
      } else if (selectorPeerMatches(peer, policyNs, m.pod)) {
        for (const ip of m.ips) out.add(ip);
      }
    }
    return [...out];
  };

  const compileDirection = (self: Member, dir: Direction): DirectionRules => {
    const ns = self.pod.metadata.namespace;
    const selecting = inputs.policies.filter(
      (p) => p.metadata.namespace === ns && p.spec.policyTypes.includes(dir === 'ingress' ? 'Ingress' : 'Egress') && selectorMatches(p.spec.podSelector, self.pod.metadata.labels),
    );
    const allow: AllowEntry[] = [];
    for (const policy of selecting) {
      const rules = dir === 'ingress' ? policy.spec.ingress.map((r) => ({ peers: r.from, ports: r.ports })) : policy.spec.egress.map((r) => ({ peers: r.to, ports: r.ports }));
      rules.forEach((rule, index) => {
        const origin: RuleOrigin = { policy: policyKey(policy), direction: dir, rule: index };
        const ports: NetworkPolicyPort[] = rule.ports.length > 0 ? rule.ports : PROTOCOLS.map((protocol) => ({ protocol }));
        let peers: Peer[] | undefined;
        for (const port of ports) {
          if (typeof port.port === 'string') {
            const name = port.port;
            if (dir === 'ingress') {
              peers ??= compilePeers(rule.peers, ns);
              for (const n of namedPortNumbers(self.pod, name, port.protocol)) for (const peer of peers) allow.push({ peer, protocol: port.protocol, first: n, last: n, origin });
            } else {
              for (const m of members) {
                const numbers = namedPortNumbers(m.pod, name, port.protocol);
                if (numbers.length === 0) continue;
                for (const ip of memberAddressesMatched(rule.peers, ns, m)) {
                  const cidr = `${ip}/${ip.includes(':') ? 128 : 32}`;
                  for (const n of numbers) allow.push({ peer: { kind: 'cidr', cidr }, protocol: port.protocol, first: n, last: n, origin });
                }
              }
            }
            continue;
          }
          const first = port.port ?? 0;
          const last = port.port === undefined ? 65535 : (port.endPort ?? port.port);
          peers ??= compilePeers(rule.peers, ns);
          for (const peer of peers) allow.push({ peer, protocol: port.protocol, first, last, origin });
        }
      });
    }
    return { isolated: selecting.length > 0, isolatedBy: selecting.map(policyKey), allow };
  };

  const out = new Map<string, PodPolicy>();
  for (const m of members) {
    const hostIps = (m.pod.spec.nodeName !== undefined ? (inputs.nodeIps[m.pod.spec.nodeName] ?? []) : []).map((ip) => canonicalIp(ip)).filter((ip): ip is string => ip !== undefined);
    out.set(m.key, { pod: m.key, identity: m.identity, ips: m.ips, hostIps, ingress: compileDirection(m, 'ingress'), egress: compileDirection(m, 'egress') });
  }
  return { identities, pods: out, podByIp };
}
