// Kubernetes NetworkPolicy (networking.k8s.io/v1, as src/sources/objects normalises it) into
// kelp's policy model (./spec.ts), with upstream's semantics:
// - the policy selects pods of its own namespace (spec.podSelector, `{}`: all of them) and, in
//   each direction of its policyTypes (defaulted by the validator), isolates them: only what one
//   of its rules — or another policy's — allows gets through. An empty rule list allows nothing;
// - a rule allows its peers (OR) on its ports (OR); a missing list is every peer or every port;
// - peer podSelector alone: those pods of the policy's namespace; namespaceSelector alone: every
//   pod of the matching namespaces; both: AND; ipBlock: every address in cidr and no except,
//   whoever holds it;
// - port: protocol (TCP by default, defaulted by the validator) with a number, a number..endPort
//   range, no number (every port), or a container port name on the destination pod with that
//   protocol.
import type { NetworkPolicyObject, NetworkPolicyPeer, NetworkPolicyPort } from '../sources/objects/networkpolicy';
import { isAudit, PeerSpec, PolicySpec, PortSpec, RuleSpec } from './spec';

const EMPTY_SELECTOR = { matchLabels: {}, matchExpressions: [] };

function peerOf(peer: NetworkPolicyPeer, namespace: string): PeerSpec {
  if (peer.ipBlock) return { kind: 'cidr', cidr: peer.ipBlock.cidr, except: [...peer.ipBlock.except] };
  return {
    kind: 'pods',
    set: { namespaces: peer.namespaceSelector ? { selector: peer.namespaceSelector } : { name: namespace }, pods: peer.podSelector ?? EMPTY_SELECTOR },
  };
}

function portOf(port: NetworkPolicyPort): PortSpec {
  if (typeof port.port === 'string') return { kind: 'named', name: port.port, protocol: port.protocol };
  if (port.port === undefined) return { kind: 'range', protocol: port.protocol, first: 0, last: 65535 };
  return { kind: 'range', protocol: port.protocol, first: port.port, last: port.endPort ?? port.port };
}

function rulesOf(rules: ReadonlyArray<{ peers: NetworkPolicyPeer[]; ports: NetworkPolicyPort[] }>, namespace: string): RuleSpec[] {
  return rules.map((r, index) => ({
    index,
    name: '',
    action: 'accept',
    peers: r.peers.length === 0 ? [{ kind: 'all' }] : r.peers.map((p) => peerOf(p, namespace)),
    ports: r.ports.length === 0 ? [{ kind: 'all' }] : r.ports.map(portOf),
  }));
}

export function fromNetworkPolicy(np: NetworkPolicyObject): PolicySpec {
  const ns = np.metadata.namespace;
  const spec: PolicySpec = {
    kind: 'NetworkPolicy',
    ref: `NetworkPolicy/${ns}/${np.metadata.name}`,
    tier: 'networkpolicy',
    priority: 0,
    subject: { namespaces: { name: ns }, pods: np.spec.podSelector },
    audit: isAudit(np.metadata),
  };
  if (np.spec.policyTypes.includes('Ingress')) spec.ingress = { isolates: true, rules: rulesOf(np.spec.ingress.map((r) => ({ peers: r.from, ports: r.ports })), ns) };
  if (np.spec.policyTypes.includes('Egress')) spec.egress = { isolates: true, rules: rulesOf(np.spec.egress.map((r) => ({ peers: r.to, ports: r.ports })), ns) };
  return spec;
}
