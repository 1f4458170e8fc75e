// The contract between the policy compiler (src/policy) and the policy datapath (bpf/lib/ipcache.h,
// bpf/lib/policy.h, src/datapath/policy.ts): what the maps hold, in the agent's terms.
//
// A side of a connection (an endpoint's ingress or egress) is decided in the datapath by
//   1. the peer's identity: one LPM lookup of the peer address in kelp_ipcache4 (a /0 entry
//      always exists: WORLD unless a policy CIDR gives it another identity);
//   2. IDENTITY_HOST: allowed, nothing else looked at (a pod and its own node always talk);
//   3. one LPM lookup in kelp_policy4 of (endpoint, identity, direction, protocol, port), and when
//      that misses, one of (endpoint, IDENTITY_ANY, direction, protocol, port);
//   4. both missing: the endpoint's policy is not programmed: dropped (fail closed).
// The LPM key's bit order is endpoint (32) · identity (32) · direction (8) · protocol (8) ·
// destination port (16, network order): an entry covering every protocol has prefix length 72,
// one covering every port of a protocol 80, one exact port 96. The compiler resolves all
// precedence (tiers, priorities, rule order, deny over accept, audit) itself and emits, per
// (endpoint, direction, identity), disjoint port blocks on top of one all-protocols entry, so the
// longest match is always the answer and no entry shadows another.
//
// Identities are node-local numbers: pods with the same namespace, labels and set of policy CIDRs
// containing their address share one; every other address gets the identity of the longest
// policy CIDR containing it (or WORLD). The compiler keeps them stable across recompiles.

/** Reserved identities. 0 is the wildcard of kelp_policy4 keys, never an address's identity. */
export const IDENTITY_ANY = 0;
export const IDENTITY_HOST = 1;
export const IDENTITY_WORLD = 2;
/** First identity handed to pods and CIDRs. */
export const FIRST_ALLOCATED_IDENTITY = 256;

export type PolicyDirection = 'ingress' | 'egress';

/** What a kelp_policy4 entry says. */
export type PolicyAction =
  /** Allowed. */
  | 'allow'
  /** Dropped. */
  | 'deny'
  /** Allowed, but an audit-only policy would have dropped it: reported as such. */
  | 'audit';

/** Which tier decided (for drops, events and traces). */
export type PolicyTier = 'admin' | 'networkpolicy' | 'baseline' | 'default';

/** Rule index meaning "the pod is isolated and no rule allowed this" (policy: the first isolating one). */
export const RULE_ISOLATED = 0xffff;
/** Policy id 0: no policy decided (default allow, or an unrestricted endpoint). */
export const POLICY_ID_NONE = 0;

export interface PolicyVerdict {
  action: PolicyAction;
  tier: PolicyTier;
  /** Compiler-assigned, stable while the policy exists; names in PolicyMapsDesired.policies. */
  policyId: number;
  /** Index of the rule in the policy's ingress or egress list, or RULE_ISOLATED. */
  rule: number;
}

export interface PolicyEntry {
  epId: number;
  identity: number;
  direction: PolicyDirection;
  /** IP protocol number; undefined: every protocol (prefix 72, port ignored). */
  protocol?: number;
  /** Host order; with protocol only. */
  port: number;
  /** Bits of `port` that are significant, 0..16 (0: every port of the protocol). */
  portPrefix: number;
  verdict: PolicyVerdict;
}

export interface PolicyMapsDesired {
  /** Canonical IPv4 CIDR ("10.0.0.0/8", "10.1.2.3/32", "0.0.0.0/0") → identity. */
  ipcache: Map<string, number>;
  /** Unique per (epId, identity, direction, protocol, port, portPrefix). */
  policy: PolicyEntry[];
  /** Policy id → `Kind/namespace/name` and its rules' names ('' when unnamed). */
  policies: Map<number, { ref: string; ingress: string[]; egress: string[] }>;
}

/** IP protocol numbers of the transports policy matches ports on. */
export const IPPROTO = { ICMP: 1, TCP: 6, UDP: 17, SCTP: 132 } as const;
