// kelp's own policy model: one PolicySpec per policy object, whatever API it came from. The
// adapters (./from-networkpolicy.ts, ./from-clusternetworkpolicy.ts, ./from-kelpnetworkpolicy.ts)
// read each API's normalised objects into it; the compiler (./compile.ts), the side evaluator
// (./evaluate.ts) and the trace (./trace.ts) read only this, so a later API revision is a change
// to its adapter alone.
//
// Meaning, for one pod and one direction (DESIGN.md, "Policy model"):
// - a policy takes part when its subject selects the pod and it has a DirectionSpec for that
//   direction (`undefined`: the policy does not affect the direction at all);
// - tier admin, then networkpolicy, then baseline, then allow. In admin and baseline, policies by
//   priority then ref (`compareInTier`), rules in written order, the first matching rule decides;
//   pass leaves the tier. In the networkpolicy tier a matching deny wins over a matching accept,
//   and a direction that `isolates` denies what no rule accepted;
// - a rule matches when one of its peers matches the peer and one of its ports the destination
//   port. An empty peer or port list matches nothing: "everything" is spelt `{kind: 'all'}`;
// - audit policies are evaluated twice, once left out (what is enforced) and once in (what would be).
import type { LabelSelector } from '../sources/objects/labels';
import type { Protocol } from '../sources/objects/net';
import type { ObjectMeta } from '../sources/objects/meta';
import { ANNOTATION_POLICY_AUDIT } from '../sources/objects/kelpnetworkpolicy';
import type { PolicyDirection, PolicyTier } from '../datapath/policy-types';

export type PolicyKind = 'NetworkPolicy' | 'ClusterNetworkPolicy' | 'KelpNetworkPolicy';
export type SpecTier = Exclude<PolicyTier, 'default'>;
export type RuleAction = 'accept' | 'deny' | 'pass';

/** Pods (never host-network ones) matching `pods` in the namespaces `namespaces` names or selects. */
export interface PodSet {
  namespaces: { name: string } | { selector: LabelSelector };
  /** Selects every pod when empty. */
  pods: LabelSelector;
}

export type PeerSpec =
  | { kind: 'all' }
  | { kind: 'pods'; set: PodSet }
  /** Every address in cidr and in no except, pods' and nodes' included. Canonical text. */
  | { kind: 'cidr'; cidr: string; except: string[] }
  /** A peer of a newer API revision: matches nothing (see RuleSpec.failClosed for Deny/Pass). */
  | { kind: 'unknown' };

export type PortSpec =
  /** Every protocol and port (ICMP and the rest included). */
  | { kind: 'all' }
  /** Inclusive. 0..65535 for "every port of the protocol". */
  | { kind: 'range'; protocol: Protocol; first: number; last: number }
  /** A container port name on the destination pod; no protocol: the container port's own. */
  | { kind: 'named'; name: string; protocol?: Protocol };

export interface RuleSpec {
  /** Index in the object's ingress or egress list (what verdicts and traces name). */
  index: number;
  /** '' when unnamed. */
  name: string;
  action: RuleAction;
  /** Any of them (empty: nothing). */
  peers: PeerSpec[];
  /** Any of them (empty: nothing). */
  ports: PortSpec[];
  /** A Deny or Pass rule with an unknown peer, turned into "deny everything" by its adapter. */
  failClosed?: true;
}

export interface DirectionSpec {
  rules: RuleSpec[];
  /** The selected pods are denied, in this tier, what no rule of the tier accepted. */
  isolates: boolean;
}

export interface PolicySpec {
  kind: PolicyKind;
  /** `Kind/namespace/name`, or `Kind/name` for a cluster-scoped object. Unique. */
  ref: string;
  tier: SpecTier;
  /** 0..1000 for ClusterNetworkPolicy, 0 in the networkpolicy tier (unused there). */
  priority: number;
  subject: PodSet;
  /** Undefined: the policy does not affect this direction. */
  ingress?: DirectionSpec;
  egress?: DirectionSpec;
  audit: boolean;
}

export const EVERYTHING: { peers: PeerSpec[]; ports: PortSpec[] } = { peers: [{ kind: 'all' }], ports: [{ kind: 'all' }] };

/** A policy of any kind is audit-only when annotated so. */
export const isAudit = (meta: ObjectMeta): boolean => meta.annotations?.[ANNOTATION_POLICY_AUDIT] === 'true';

export const directionOf = (spec: PolicySpec, dir: PolicyDirection): DirectionSpec | undefined => (dir === 'ingress' ? spec.ingress : spec.egress);

/** Evaluation order inside a tier: priority, then ref (for ClusterNetworkPolicies, the name). */
export function compareInTier(a: PolicySpec, b: PolicySpec): number {
  if (a.priority !== b.priority) return a.priority - b.priority;
  return a.ref < b.ref ? -1 : a.ref > b.ref ? 1 : 0;
}

const TIER_ORDER: Record<SpecTier, number> = { admin: 0, networkpolicy: 1, baseline: 2 };

/** Every policy in evaluation order: tier, then compareInTier. */
export function sortPolicies<T extends { spec: PolicySpec }>(policies: readonly T[]): T[] {
  return [...policies].sort((a, b) => TIER_ORDER[a.spec.tier] - TIER_ORDER[b.spec.tier] || compareInTier(a.spec, b.spec));
}
