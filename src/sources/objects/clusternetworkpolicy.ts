// policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy (the Kubernetes network-policy-api
// project's cluster-scoped admin API, release v0.2.0, standard channel), normalised.
//
// Types first: the validator (validateClusterNetworkPolicy) and the KINDS row come with the
// object support. The shapes of peers and protocols are shared with kelp's KelpNetworkPolicy
// (./kelpnetworkpolicy.ts), which takes them over as they are.
//
// What the normalised fields mean (the API's semantics, which src/policy implements):
// - tier Admin is evaluated before the NetworkPolicy tier, Baseline after it; in a tier,
//   policies by priority (0..1000, lower first), then rules in written order; the first rule
//   whose peer and protocol match decides: Accept and Deny are final, Pass skips the rest of the
//   tier. A direction with no rules is not affected by the policy.
// - subject: exactly one of `namespaces` (every pod of the matching namespaces) or `pods` (pods
//   matching podSelector in namespaces matching namespaceSelector). Host-network pods never.
// - peers: exactly one of `namespaces`, `pods`, or (egress only) `networks` (CIDRs, matching every
//   address they contain, pods' and nodes' included). A peer with none of the known fields (an
//   object of a newer API revision) is `{ unknown: true }`: it fails closed (an Accept rule
//   carrying it matches nothing through it, a Deny or Pass rule becomes "deny everything").
// - protocols: absent or empty = every protocol and port. Each one is a transport with an
//   optional destination port (a number or an inclusive range) or a named port resolved on each
//   destination pod.
import type { LabelSelector } from './labels';
import type { ObjectMeta } from './meta';
import type { Protocol } from './net';

export const API_VERSION_POLICY_NETWORKING = 'policy.networking.k8s.io/v1alpha2';
export const CNP_TIERS = ['Admin', 'Baseline'] as const;
export type CnpTier = (typeof CNP_TIERS)[number];
export const CNP_ACTIONS = ['Accept', 'Deny', 'Pass'] as const;
export type CnpAction = (typeof CNP_ACTIONS)[number];
export const CNP_MAX_PRIORITY = 1000;

/** Pods matching podSelector in the namespaces namespaceSelector matches (`{}`: all of them). */
export interface NamespacedPodSelector {
  namespaceSelector: LabelSelector;
  podSelector: LabelSelector;
}

/** Exactly one field (see the file's head). */
export type PolicySubject = { namespaces: LabelSelector } | { pods: NamespacedPodSelector };

/** Exactly one field; `networks` only in egress rules; canonical CIDRs (host bits cleared). */
export type PolicyPeer = { namespaces: LabelSelector } | { pods: NamespacedPodSelector } | { networks: string[] } | { unknown: true };

/** One protocol entry: a transport with an optional port or range, or a named port. */
export type PolicyProtocol =
  | { protocol: Protocol; port?: { number: number } | { range: { start: number; end: number } } }
  | { namedPort: string };

export interface PolicyRule {
  /** '' when the rule has none. */
  name: string;
  action: CnpAction;
  /** `from` for ingress, `to` for egress; at least one. */
  peers: PolicyPeer[];
  /** Empty: every protocol and port. */
  protocols: PolicyProtocol[];
}

export interface ClusterNetworkPolicyObject {
  apiVersion: typeof API_VERSION_POLICY_NETWORKING;
  kind: 'ClusterNetworkPolicy';
  metadata: ObjectMeta;
  spec: {
    tier: CnpTier;
    priority: number;
    subject: PolicySubject;
    ingress: PolicyRule[];
    egress: PolicyRule[];
  };
}
