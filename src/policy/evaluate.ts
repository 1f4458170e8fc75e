// One side of a connection (a pod's ingress or egress) decided from kelp's policy model: the tier
// walk of DESIGN.md's "Policy model", written once for the compiler (which runs it per identity
// class and port interval) and the trace (which runs it for one connection and shows its steps).
//
// The caller hands `decide` the rules that may apply — in evaluation order: admin by priority and
// name, then the networkpolicy tier by ref, then baseline, each policy's rules in written order —
// and says which of them match the packet; `decide` resolves precedence, isolation and audit.
import { IPPROTO, POLICY_ID_NONE, PolicyDirection, PolicyVerdict, RULE_ISOLATED } from '../datapath/policy-types';
import type { Protocol } from '../sources/objects/net';
import { selectorMatches } from '../sources/objects/labels';
import type { Member, ModelPolicy, NamedPorts } from './model';
import { directionOf, PodSet, RuleSpec, SpecTier } from './spec';

export interface SideRule {
  policy: ModelPolicy;
  rule: RuleSpec;
  tier: SpecTier;
}

/** The policies selecting a pod in one direction, as `decide` reads them. */
export interface Side {
  rules: SideRule[];
  /** In ref order: the first one is named when isolation denies. */
  isolatedBy: ModelPolicy[];
  /** Whether an audit-only policy takes part (else one evaluation is enough). */
  audit: boolean;
}

/** `policies` are those selecting the pod, in evaluation order. */
export function sideOf(policies: readonly ModelPolicy[], dir: PolicyDirection): Side {
  const side: Side = { rules: [], isolatedBy: [], audit: false };
  for (const policy of policies) {
    const d = directionOf(policy.spec, dir);
    if (!d) continue;
    for (const rule of d.rules) side.rules.push({ policy, rule, tier: policy.spec.tier });
    if (d.isolates) side.isolatedBy.push(policy);
    if (policy.spec.audit) side.audit = true;
  }
  return side;
}

export const DEFAULT_ALLOW: PolicyVerdict = Object.freeze({ action: 'allow', tier: 'default', policyId: POLICY_ID_NONE, rule: 0 });

const verdictOf = (r: SideRule): PolicyVerdict => ({ action: r.rule.action === 'accept' ? 'allow' : 'deny', tier: r.tier, policyId: r.policy.id, rule: r.rule.index });

function decideOnce(rules: readonly SideRule[], isolatedBy: readonly ModelPolicy[], matches: (i: number) => boolean, withAudit: boolean): PolicyVerdict {
  const live = (p: ModelPolicy) => withAudit || !p.spec.audit;
  /** First matching rule of an admin-like tier; 'pass' leaves the tier. */
  const firstOf = (tier: SpecTier): PolicyVerdict | undefined => {
    for (let i = 0; i < rules.length; i++) {
      const r = rules[i];
      if (r.tier !== tier || !live(r.policy) || !matches(i)) continue;
      return r.rule.action === 'pass' ? undefined : verdictOf(r);
    }
    return undefined;
  };
  const admin = firstOf('admin');
  if (admin) return admin;
  let accept: SideRule | undefined;
  for (let i = 0; i < rules.length; i++) {
    const r = rules[i];
    if (r.tier !== 'networkpolicy' || !live(r.policy) || !matches(i)) continue;
    if (r.rule.action === 'deny') return verdictOf(r);
    accept ??= r;
  }
  if (accept) return verdictOf(accept);
  const isolating = isolatedBy.find(live);
  if (isolating) return { action: 'deny', tier: 'networkpolicy', policyId: isolating.id, rule: RULE_ISOLATED };
  return firstOf('baseline') ?? DEFAULT_ALLOW;
}

/**
 * The verdict for one packet: `matches(i)` says whether rules[i] matches it (peer and port).
 * Audit: an enforced deny is a deny; an enforced allow that the audit-only policies would turn
 * into a deny is 'audit', naming what would have denied it.
 */
export function decide(rules: readonly SideRule[], isolatedBy: readonly ModelPolicy[], audit: boolean, matches: (i: number) => boolean): PolicyVerdict {
  const enforced = decideOnce(rules, isolatedBy, matches, false);
  if (!audit || enforced.action === 'deny') return enforced;
  const wouldBe = decideOnce(rules, isolatedBy, matches, true);
  return wouldBe.action === 'deny' ? { ...wouldBe, action: 'audit' } : enforced;
}

export const sameVerdict = (a: PolicyVerdict, b: PolicyVerdict): boolean => a.action === b.action && a.tier === b.tier && a.policyId === b.policyId && a.rule === b.rule;

/** Whether a pod set holds a pod of `namespace` with `labels`. */
export function podSetMatches(set: PodSet, namespace: string, labels: Record<string, string>, namespaceLabels: (ns: string) => Record<string, string>): boolean {
  const nsOk = 'name' in set.namespaces ? set.namespaces.name === namespace : selectorMatches(set.namespaces.selector, namespaceLabels(namespace));
  return nsOk && selectorMatches(set.pods, labels);
}

export const selects = (policy: ModelPolicy, pod: Member, namespaceLabels: (ns: string) => Record<string, string>): boolean =>
  podSetMatches(policy.spec.subject, pod.namespace, pod.labels, namespaceLabels);

/** A port block a rule matches: `protocol` undefined is every protocol and port. */
export interface PortBlock {
  protocol?: number;
  first: number;
  last: number;
}

const ALL_PORTS: PortBlock = Object.freeze({ first: 0, last: 65535 });

export const protocolNumber = (p: Protocol): number => IPPROTO[p];

/**
 * The ports a rule matches for a destination whose names mean `named` (undefined: the
 * destination is not a pod, and no name means anything there).
 */
export function portBlocks(rule: RuleSpec, named: NamedPorts | undefined): PortBlock[] {
  const out: PortBlock[] = [];
  for (const p of rule.ports) {
    if (p.kind === 'all') out.push(ALL_PORTS);
    else if (p.kind === 'range') out.push({ protocol: protocolNumber(p.protocol), first: p.first, last: p.last });
    else for (const e of named?.get(p.name) ?? []) if (p.protocol === undefined || p.protocol === e.protocol) out.push({ protocol: protocolNumber(e.protocol), first: e.port, last: e.port });
  }
  return out;
}

/** Whether blocks match a packet (`port` ignored for protocols without ports). */
export const blocksMatch = (blocks: readonly PortBlock[], protocol: number, port: number): boolean =>
  blocks.some((b) => b.protocol === undefined || (b.protocol === protocol && b.first <= port && port <= b.last));
