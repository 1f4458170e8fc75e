// policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy (the Kubernetes network-policy-api
// project's cluster-scoped admin API, release v0.2.0, standard channel), normalised.
//
// Validated as the API server does with the upstream CRD (standard channel) installed, limits
// included, and the field at fault named by its JSON path. The rule parts (peers, protocols,
// rules) are shared with kelp's KelpNetworkPolicy (./kelpnetworkpolicy.ts), which takes them
// over with fewer actions and two restrictions of its own.
//
// The normalised spelling differs from the API's in two places: a rule's `from`/`to` is `peers`,
// and a protocol entry is `{protocol, port}` or `{namedPort}` where the API writes
// `{tcp: {destinationPort}}` or `{destinationNamedPort}`. So that a normalised object stays a
// valid manifest (`kelp apply` stores that form, see ./index.ts), the validator also reads the
// normalised spelling; the API server never sends it (its schema prunes those fields), and
// mixing both in one rule or entry is refused.
//
// Where kelp differs from the bare CRD schema: label selectors are checked as the API server
// checks a built-in selector (keys, values, operator and values agreeing); a port name must be
// an IANA service name (the only names a container port can have); duplicate CIDRs after
// canonicalisation are folded into one; an empty `protocols` list is the same as an absent one
// (the schema refuses `[]`, but a normalised rule without protocols carries it).
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
//   carrying it matches nothing through it, a Deny or Pass rule becomes "deny everything"), as
//   the API text asks of an implementation that sees no field it knows. Unknown here is every
//   field outside the standard channel for that direction: the experimental `nodes` and
//   `domainNames`, and `networks` in an ingress peer. A peer that has a known field and others
//   besides is that known peer (the API server prunes fields its schema does not declare).
// - protocols: absent or empty = every protocol and port. Each one is a transport with an
//   optional destination port (a number or an inclusive range) or a named port resolved on each
//   destination pod. A named port beside a `networks` peer is accepted, as the standard-channel
//   schema accepts it (only the experimental one refuses it): refusing would drop the whole
//   policy, Deny rules included. It can match only where the address is a pod's.
import { expectEnum, expectInteger, expectObject, expectString, fail, Json, ObjectMeta, optArray, optString, validateMeta } from './meta';
import { LabelSelector, optLabelSelector, validateLabelSelector } from './labels';
import { checkPortName, cidrField, PROTOCOLS, Protocol } from './net';

export const API_VERSION_POLICY_NETWORKING = 'policy.networking.k8s.io/v1alpha2';
export const CNP_TIERS = ['Admin', 'Baseline'] as const;
export type CnpTier = (typeof CNP_TIERS)[number];
export const CNP_ACTIONS = ['Accept', 'Deny', 'Pass'] as const;
export type CnpAction = (typeof CNP_ACTIONS)[number];
export const CNP_MAX_PRIORITY = 1000;

/**
 * Marks a policy of any of the three kinds audit-only: evaluated, its would-be drops reported,
 * nothing dropped. "true" or "false" (validated on ClusterNetworkPolicy and KelpNetworkPolicy).
 */
export const ANNOTATION_POLICY_AUDIT = 'policy.kelp.dev/audit';

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

/** Upstream's limit on rules per direction, peers per rule, protocols per rule and CIDRs per peer. */
export const CNP_MAX_ITEMS = 25;
export const CNP_MAX_RULE_NAME = 100;
/** The CRD's limit on one CIDR's text. */
const MAX_CIDR_LENGTH = 43;

export type RuleDirection = 'ingress' | 'egress';

/** What a kind allows beyond the shared rule shapes. */
export interface RuleDialect {
  actions: readonly CnpAction[];
  /** `networks` in an ingress peer: unknown (fails closed) or an error with this reason. */
  ingressNetworks: 'unknown' | { refuse: string };
  /** A rule with a `networks` peer and a `destinationNamedPort` protocol: allowed, or refused with this reason. */
  networksWithNamedPort: 'allow' | { refuse: string };
}

const present = (v: Json): boolean => v !== undefined && v !== null;

function limitItems(list: Json[], field: string, min: number): void {
  if (list.length < min) fail(field, `must have at least ${min} item${min === 1 ? '' : 's'}`);
  if (list.length > CNP_MAX_ITEMS) fail(field, `must have at most ${CNP_MAX_ITEMS} items, got ${list.length}`);
}

/** Exactly one of `fields` present (null is absent); its name, or undefined when none is. */
function oneOf(o: Record<string, Json>, field: string, fields: readonly string[]): string | undefined {
  const set = fields.filter((k) => present(o[k]));
  if (set.length > 1) fail(field, `must specify exactly one of ${fields.join(', ')}, got ${set.join(' and ')}`);
  return set[0];
}

function validateNamespacedPods(v: Json, f: string): NamespacedPodSelector {
  const p = expectObject(v, f);
  return {
    // Omitted, it selects every namespace (the API's zero value, an empty selector).
    namespaceSelector: optLabelSelector(p.namespaceSelector, `${f}.namespaceSelector`) ?? { matchLabels: {}, matchExpressions: [] },
    podSelector: validateLabelSelector(p.podSelector, `${f}.podSelector`),
  };
}

export function validateSubject(v: Json, f: string): PolicySubject {
  const s = expectObject(v, f);
  const which = oneOf(s, f, ['namespaces', 'pods']);
  if (which === 'namespaces') return { namespaces: validateLabelSelector(s.namespaces, `${f}.namespaces`) };
  if (which === 'pods') return { pods: validateNamespacedPods(s.pods, `${f}.pods`) };
  return fail(f, 'must specify exactly one of namespaces, pods');
}

function validateNetworks(v: Json, f: string): string[] {
  const list = optArray(v, f);
  limitItems(list, f, 1);
  const seen = new Set<string>();
  const out: string[] = [];
  list.forEach((c, i) => {
    const cf = `${f}[${i}]`;
    const text = expectString(c, cf);
    if (text.length > MAX_CIDR_LENGTH) fail(cf, `may be at most ${MAX_CIDR_LENGTH} characters, got ${text.length}`);
    if (seen.has(text)) fail(cf, `duplicate value ${JSON.stringify(text)}`);
    seen.add(text);
    const canonical = cidrField(text, cf);
    if (!out.includes(canonical)) out.push(canonical);
  });
  return out;
}

function validatePeer(v: Json, f: string, dir: RuleDirection, dialect: RuleDialect): PolicyPeer {
  const p = expectObject(v, f);
  if (dir === 'ingress' && present(p.networks) && dialect.ingressNetworks !== 'unknown') fail(`${f}.networks`, dialect.ingressNetworks.refuse);
  const known = dir === 'egress' ? ['namespaces', 'pods', 'networks'] : ['namespaces', 'pods'];
  const which = oneOf(p, f, known);
  if (which === 'namespaces') return { namespaces: validateLabelSelector(p.namespaces, `${f}.namespaces`) };
  if (which === 'pods') return { pods: validateNamespacedPods(p.pods, `${f}.pods`) };
  if (which === 'networks') return { networks: validateNetworks(p.networks, `${f}.networks`) };
  if (Object.keys(p).some((k) => present(p[k]))) return { unknown: true };
  return fail(f, `must specify exactly one of ${known.join(', ')}`);
}

type PortMatch = NonNullable<Extract<PolicyProtocol, { protocol: Protocol }>['port']>;

function validatePortMatch(v: Json, f: string): PortMatch {
  const d = expectObject(v, f);
  const which = oneOf(d, f, ['number', 'range']);
  if (which === 'number') return { number: expectInteger(d.number, `${f}.number`, 1, 65535) };
  if (which === 'range') {
    const r = expectObject(d.range, `${f}.range`);
    const start = expectInteger(r.start, `${f}.range.start`, 1, 65535);
    const end = expectInteger(r.end, `${f}.range.end`, 1, 65535);
    if (start >= end) fail(`${f}.range`, `start (${start}) must be less than end (${end})`);
    return { range: { start, end } };
  }
  return fail(f, 'must specify exactly one of number, range');
}

const TRANSPORTS: Record<string, Protocol> = { tcp: 'TCP', udp: 'UDP', sctp: 'SCTP' };
/** The API's spelling of a protocol entry, then kelp's normalised one (see the file's head). */
const PROTOCOL_FIELDS = ['tcp', 'udp', 'sctp', 'destinationNamedPort', 'protocol', 'namedPort'];

function validateProtocol(v: Json, f: string): PolicyProtocol {
  const p = expectObject(v, f);
  const set = PROTOCOL_FIELDS.filter((k) => present(p[k]));
  if (set.length !== 1) {
    fail(f, `must specify exactly one of tcp, udp, sctp, destinationNamedPort${set.length > 1 ? `, got ${set.join(' and ')}` : ''}`);
  }
  const [which] = set;
  if (which === 'destinationNamedPort' || which === 'namedPort') return { namedPort: checkPortName(expectString(p[which], `${f}.${which}`), `${f}.${which}`) };
  if (which === 'protocol') {
    const protocol = expectEnum(p.protocol, `${f}.protocol`, PROTOCOLS);
    return present(p.port) ? { protocol, port: validatePortMatch(p.port, `${f}.port`) } : { protocol };
  }
  const t = expectObject(p[which], `${f}.${which}`);
  // The API has no "every port of TCP": an entry names a port or a range.
  return { protocol: TRANSPORTS[which], port: validatePortMatch(t.destinationPort, `${f}.${which}.destinationPort`) };
}

function validateRule(v: Json, rf: string, dir: RuleDirection, dialect: RuleDialect): PolicyRule {
  const r = expectObject(v, rf);
  const name = optString(r.name, `${rf}.name`) ?? '';
  if (name.length > CNP_MAX_RULE_NAME) fail(`${rf}.name`, `may be at most ${CNP_MAX_RULE_NAME} characters, got ${name.length}`);
  const action = expectEnum(r.action, `${rf}.action`, dialect.actions);
  const api = dir === 'ingress' ? 'from' : 'to';
  if (present(r[api]) && present(r.peers)) fail(`${rf}.peers`, `may not be given with \`${api}\` (it is kelp's stored spelling of it)`);
  const key = present(r.peers) ? 'peers' : api;
  if (!present(r[key])) fail(`${rf}.${api}`, 'required, missing');
  const peerList = optArray(r[key], `${rf}.${key}`);
  limitItems(peerList, `${rf}.${key}`, 1);
  const peers = peerList.map((p, i) => validatePeer(p, `${rf}.${key}[${i}]`, dir, dialect));
  const protocolList = optArray(r.protocols, `${rf}.protocols`);
  limitItems(protocolList, `${rf}.protocols`, 0);
  const protocols = protocolList.map((p, i) => validateProtocol(p, `${rf}.protocols[${i}]`));
  if (dialect.networksWithNamedPort !== 'allow' && peers.some((p) => 'networks' in p) && protocols.some((p) => 'namedPort' in p)) {
    fail(rf, dialect.networksWithNamedPort.refuse);
  }
  return { name, action, peers, protocols };
}

/** A direction's rule list (`spec.ingress`, `spec.egress`): at most 25 rules. */
export function validateRules(v: Json, field: string, dir: RuleDirection, dialect: RuleDialect): PolicyRule[] {
  const list = optArray(v, field);
  limitItems(list, field, 0);
  return list.map((r, i) => validateRule(r, `${field}[${i}]`, dir, dialect));
}

/** ANNOTATION_POLICY_AUDIT, when set, is "true" or "false": anything else is refused rather than guessed at. */
export function checkAuditAnnotation(meta: ObjectMeta): void {
  const v = meta.annotations[ANNOTATION_POLICY_AUDIT];
  if (v !== undefined && v !== 'true' && v !== 'false') fail(`metadata.annotations[${JSON.stringify(ANNOTATION_POLICY_AUDIT)}]`, `must be "true" or "false", got ${JSON.stringify(v)}`);
}

const CNP_DIALECT: RuleDialect = { actions: CNP_ACTIONS, ingressNetworks: 'unknown', networksWithNamedPort: 'allow' };

export function validateClusterNetworkPolicy(o: Record<string, Json>): ClusterNetworkPolicyObject {
  const metadata = validateMeta(o.metadata, { namespaced: false, name: 'DNS1123Subdomain' });
  checkAuditAnnotation(metadata);
  const spec = expectObject(o.spec, 'spec');
  return {
    apiVersion: API_VERSION_POLICY_NETWORKING,
    kind: 'ClusterNetworkPolicy',
    metadata,
    spec: {
      tier: expectEnum(spec.tier, 'spec.tier', CNP_TIERS),
      priority: expectInteger(spec.priority, 'spec.priority', 0, CNP_MAX_PRIORITY),
      subject: validateSubject(spec.subject, 'spec.subject'),
      ingress: validateRules(spec.ingress, 'spec.ingress', 'ingress', CNP_DIALECT),
      egress: validateRules(spec.egress, 'spec.egress', 'egress', CNP_DIALECT),
    },
  };
}
