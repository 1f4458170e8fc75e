// The shapes ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) and KelpNetworkPolicy share
// — rules, peers, protocols — into kelp's policy model (./spec.ts), and ClusterNetworkPolicy
// itself:
// - tier Admin or Baseline, priority 0..1000; a direction with no rules does not affect the
//   subject, and a direction with rules never isolates it (what no rule matched goes on to the
//   next tier);
// - subject `namespaces` (every pod of those namespaces) or `pods` (namespaceSelector AND
//   podSelector, cluster-wide);
// - peers `namespaces`, `pods` (an omitted namespaceSelector is already `{}`: every namespace),
//   `networks` (each CIDR every address in it). A peer of a newer revision (`unknown`) fails
//   closed: in an Accept rule it matches nothing, and a Deny or Pass rule holding one denies
//   everything;
// - protocols: none = every protocol and port; a transport with a port, a range, or none (all of
//   its ports); a named port, resolved on the destination pod with the container port's protocol.
import type { ClusterNetworkPolicyObject, PolicyPeer, PolicyProtocol, PolicyRule } from '../sources/objects/clusternetworkpolicy';
import { EVERYTHING, isAudit, PeerSpec, PolicySpec, PortSpec, RuleAction, RuleSpec } from './spec';

const EMPTY_SELECTOR = { matchLabels: {}, matchExpressions: [] };

function peersOf(peer: PolicyPeer): PeerSpec[] {
  if ('unknown' in peer) return [{ kind: 'unknown' }];
  if ('namespaces' in peer) return [{ kind: 'pods', set: { namespaces: { selector: peer.namespaces }, pods: EMPTY_SELECTOR } }];
  if ('pods' in peer) return [{ kind: 'pods', set: { namespaces: { selector: peer.pods.namespaceSelector }, pods: peer.pods.podSelector } }];
  return peer.networks.map((cidr) => ({ kind: 'cidr', cidr, except: [] }));
}

function portOf(p: PolicyProtocol): PortSpec {
  if ('namedPort' in p) return { kind: 'named', name: p.namedPort };
  if (!p.port) return { kind: 'range', protocol: p.protocol, first: 0, last: 65535 };
  if ('number' in p.port) return { kind: 'range', protocol: p.protocol, first: p.port.number, last: p.port.number };
  return { kind: 'range', protocol: p.protocol, first: p.port.range.start, last: p.port.range.end };
}

/** Rules of either kind; an unknown peer makes a Deny or Pass rule deny everything. */
export function sharedRulesOf(rules: readonly PolicyRule[]): RuleSpec[] {
  return rules.map((r, index) => {
    const action = r.action.toLowerCase() as RuleAction;
    const base = { index, name: r.name };
    if (action !== 'accept' && r.peers.some((p) => 'unknown' in p)) return { ...base, action: 'deny', ...EVERYTHING, failClosed: true };
    return { ...base, action, peers: r.peers.flatMap(peersOf), ports: r.protocols.length === 0 ? [{ kind: 'all' }] : r.protocols.map(portOf) };
  });
}

export function fromClusterNetworkPolicy(cnp: ClusterNetworkPolicyObject): PolicySpec {
  const s = cnp.spec;
  const subject = 'namespaces' in s.subject
    ? { namespaces: { selector: s.subject.namespaces }, pods: EMPTY_SELECTOR }
    : { namespaces: { selector: s.subject.pods.namespaceSelector }, pods: s.subject.pods.podSelector };
  const spec: PolicySpec = {
    kind: 'ClusterNetworkPolicy',
    ref: `ClusterNetworkPolicy/${cnp.metadata.name}`,
    tier: s.tier === 'Admin' ? 'admin' : 'baseline',
    priority: s.priority,
    subject,
    audit: isAudit(cnp.metadata),
  };
  if (s.ingress.length > 0) spec.ingress = { isolates: false, rules: sharedRulesOf(s.ingress) };
  if (s.egress.length > 0) spec.egress = { isolates: false, rules: sharedRulesOf(s.egress) };
  return spec;
}
