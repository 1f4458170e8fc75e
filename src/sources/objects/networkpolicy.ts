// networking.k8s.io/v1 NetworkPolicy, validated as the API server does (ValidateNetworkPolicy) and
// defaulted as it does (policyTypes, port protocol).
//
// What the normalised fields mean (the NetworkPolicy API's semantics, which the policy compiler
// implements):
// - spec.podSelector: the pods of the policy's namespace it applies to; `{}` selects them all.
// - policyTypes: the directions in which the selected pods are isolated. Unset, it is Ingress,
//   plus Egress when the policy has egress rules.
// - An isolated direction allows only what some rule (of any policy selecting the pod) allows;
//   an empty rule list allows nothing.
// - A rule's `from`/`to` empty: every peer; `ports` empty: every port. Peers and ports are each
//   alternatives (OR), a peer and a port both have to match (AND).
// - A peer is either an ipBlock or selectors:
//   - podSelector only: those pods in the policy's own namespace (an absent namespaceSelector
//     means the policy's namespace, not every namespace);
//   - namespaceSelector only: every pod in the matching namespaces (`{}`: all namespaces);
//   - both: the pods matching podSelector within the matching namespaces;
//   - ipBlock: addresses in cidr and not in any except, whoever holds them.
import { expectEnum, expectObject, expectString, fail, Json, NamespacedMeta, optArray, optInteger, optObject, validateMeta } from './meta';
import { LabelSelector, optLabelSelector, validateLabelSelector } from './labels';
import { Cidr, cidrCovers, cidrToString } from '../../ipam/ip';
import { parseCidrField, portNumber, portNumberOrName, Protocol, protocolOf } from './net';

export const API_VERSION_NETWORKING = 'networking.k8s.io/v1';
export const POLICY_TYPES = ['Ingress', 'Egress'] as const;
export type PolicyType = (typeof POLICY_TYPES)[number];

export interface IPBlock {
  /** Canonical, host bits cleared. */
  cidr: string;
  /** Each a strict subset of cidr, canonical. */
  except: string[];
}

/** Exactly one of: ipBlock; or podSelector and/or namespaceSelector (see the file's head). */
export interface NetworkPolicyPeer {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
  ipBlock?: IPBlock;
}

export interface NetworkPolicyPort {
  protocol: Protocol;
  /** Absent: every port of the protocol. A string names a container port of the destination pod. */
  port?: number | string;
  /** With a numeric port only: the range port..endPort. */
  endPort?: number;
}

export interface NetworkPolicyIngressRule {
  from: NetworkPolicyPeer[];
  ports: NetworkPolicyPort[];
}

export interface NetworkPolicyEgressRule {
  to: NetworkPolicyPeer[];
  ports: NetworkPolicyPort[];
}

export interface NetworkPolicyObject {
  apiVersion: typeof API_VERSION_NETWORKING;
  kind: 'NetworkPolicy';
  metadata: NamespacedMeta;
  spec: {
    podSelector: LabelSelector;
    /** Defaulted; without duplicates. */
    policyTypes: PolicyType[];
    ingress: NetworkPolicyIngressRule[];
    egress: NetworkPolicyEgressRule[];
  };
}

function validateIPBlock(v: Json, f: string): IPBlock {
  const b = expectObject(v, f);
  if (b.cidr === undefined || b.cidr === null || b.cidr === '') fail(`${f}.cidr`, 'required, missing');
  const cidr = parseCidrField(b.cidr, `${f}.cidr`);
  const except = optArray(b.except, `${f}.except`).map((e, i) => {
    const ef = `${f}.except[${i}]`;
    const ex = parseCidrField(e, ef);
    if (!strictlyInside(cidr, ex)) fail(ef, `${JSON.stringify(expectString(e, ef))} must be a strict subset of \`cidr\` (${cidrToString(cidr)})`);
    return cidrToString(ex);
  });
  return { cidr: cidrToString(cidr), except };
}

/** `inner` lies in `outer` and is smaller, as the API server requires of an except. */
function strictlyInside(outer: Cidr, inner: Cidr): boolean {
  return inner.prefix > outer.prefix && cidrCovers(outer, inner);
}

function validatePeer(v: Json, f: string): NetworkPolicyPeer {
  const p = expectObject(v, f);
  const peer: NetworkPolicyPeer = {};
  const podSelector = optLabelSelector(p.podSelector, `${f}.podSelector`);
  if (podSelector) peer.podSelector = podSelector;
  const namespaceSelector = optLabelSelector(p.namespaceSelector, `${f}.namespaceSelector`);
  if (namespaceSelector) peer.namespaceSelector = namespaceSelector;
  if (optObject(p.ipBlock, `${f}.ipBlock`)) peer.ipBlock = validateIPBlock(p.ipBlock, `${f}.ipBlock`);
  if (!podSelector && !namespaceSelector && !peer.ipBlock) fail(f, 'must specify a peer (podSelector, namespaceSelector or ipBlock)');
  if (peer.ipBlock && (podSelector || namespaceSelector)) fail(f, 'may not specify both ipBlock and another peer');
  return peer;
}

function validatePort(v: Json, f: string): NetworkPolicyPort {
  const p = expectObject(v, f);
  const out: NetworkPolicyPort = { protocol: protocolOf(p.protocol, `${f}.protocol`) };
  const endPort = optInteger(p.endPort, `${f}.endPort`, -(2 ** 31), 2 ** 31 - 1);
  if (p.port === undefined || p.port === null) {
    if (endPort !== undefined) fail(`${f}.endPort`, 'may not be specified when `port` is not specified');
    return out;
  }
  const port = portNumberOrName(p.port, `${f}.port`);
  out.port = port;
  if (endPort !== undefined) {
    if (typeof port === 'string') fail(`${f}.endPort`, 'may not be specified when `port` is non-numeric');
    if (endPort < port) fail(`${f}.endPort`, `must be greater than or equal to \`port\` (${port}), got ${endPort}`);
    out.endPort = portNumber(endPort, `${f}.endPort`);
  }
  return out;
}

function validateRules<D extends 'from' | 'to'>(v: Json, field: string, peers: D): Array<Record<D, NetworkPolicyPeer[]> & { ports: NetworkPolicyPort[] }> {
  return optArray(v, field).map((r, i) => {
    const rf = `${field}[${i}]`;
    const rule = expectObject(r, rf);
    // Upstream checks ports before peers; kept so, the first error found is the API server's.
    const ports = optArray(rule.ports, `${rf}.ports`).map((p, j) => validatePort(p, `${rf}.ports[${j}]`));
    const list = optArray(rule[peers], `${rf}.${peers}`).map((p, j) => validatePeer(p, `${rf}.${peers}[${j}]`));
    return { [peers]: list, ports } as Record<D, NetworkPolicyPeer[]> & { ports: NetworkPolicyPort[] };
  });
}

export function validateNetworkPolicy(o: Record<string, Json>): NetworkPolicyObject {
  const metadata = validateMeta(o.metadata, { namespaced: true, name: 'DNS1123Subdomain' });
  const specIn = expectObject(o.spec, 'spec');
  // Not optional in networking.k8s.io/v1: `{}` is how a policy selects every pod.
  const podSelector = validateLabelSelector(specIn.podSelector, 'spec.podSelector');
  const ingress = validateRules(specIn.ingress, 'spec.ingress', 'from');
  const egress = validateRules(specIn.egress, 'spec.egress', 'to');
  const typesIn = optArray(specIn.policyTypes, 'spec.policyTypes');
  if (typesIn.length > POLICY_TYPES.length) fail('spec.policyTypes', `may not specify more than two policyTypes, got ${typesIn.length}`);
  let policyTypes = typesIn.map((t, i) => expectEnum(t, `spec.policyTypes[${i}]`, POLICY_TYPES));
  if (policyTypes.length === 0) policyTypes = egress.length > 0 ? ['Ingress', 'Egress'] : ['Ingress'];
  return {
    apiVersion: API_VERSION_NETWORKING,
    kind: 'NetworkPolicy',
    metadata,
    spec: { podSelector, policyTypes: [...new Set(policyTypes)], ingress, egress },
  };
}
