// `kelp policy trace`: why a connection is allowed or dropped, from the compiler's model. For each
// side (the source pod's egress, the destination pod's ingress) it lists the policies selecting
// the pod in that direction, every rule considered with whether its peer and its port matched,
// and the verdict with the tier, policy and rule that decided — or why none did. It evaluates
// addresses directly (no identities, no map entries), with the same tier walk as the compiler
// (./evaluate.ts), so a disagreement with the datapath points at the maps, not the semantics.
import { canonicalIp, cidrContains, parseCidr, parseIp } from '../ipam/ip';
import { IPPROTO, PolicyDirection, PolicyVerdict, RULE_ISOLATED } from '../datapath/policy-types';
import { blocksMatch, decide, podSetMatches, portBlocks, selects, sideOf } from './evaluate';
import { Member, namedPortsOf, PolicyModel } from './model';
import type { PeerSpec, RuleAction, SpecTier } from './spec';

export type TraceProtocol = 'TCP' | 'UDP' | 'SCTP' | 'ICMP';

export interface TraceQuery {
  /** `namespace/pod` or an address. */
  from: string;
  to: string;
  protocol: TraceProtocol;
  /** Destination port (ignored for ICMP). */
  port: number;
}

export interface RuleTrace {
  policy: string;
  tier: SpecTier;
  rule: number;
  name: string;
  action: RuleAction;
  audit: boolean;
  peerMatched: boolean;
  portMatched: boolean;
  /** A Deny or Pass rule holding a peer kelp does not know: it denies everything. */
  failClosed: boolean;
}

export interface SideTrace {
  direction: PolicyDirection;
  /** `namespace/name` of the pod this side belongs to. */
  pod: string;
  /** Whether the pod is on this node (its verdict is in this node's maps). */
  local: boolean;
  peer: { ip: string; pod?: string };
  /** The peer is one of this node's addresses: allowed before any policy. */
  host: boolean;
  /** Policies selecting the pod in this direction, in evaluation order. */
  policies: Array<{ ref: string; tier: SpecTier; priority: number; audit: boolean; isolates: boolean }>;
  rules: RuleTrace[];
  verdict: PolicyVerdict;
  /** The deciding policy's ref ('' for the default). */
  decidedBy: string;
  reason: string;
}

export interface Explanation {
  from: { ip: string; pod?: string };
  to: { ip: string; pod?: string };
  protocol: TraceProtocol;
  port: number;
  /** Present when the source is a pod. */
  egress?: SideTrace;
  /** Present when the destination is a pod. */
  ingress?: SideTrace;
  allowed: boolean;
}

function endpoint(model: PolicyModel, s: string): { ip: string; member?: Member } {
  if (s.includes('/')) {
    const member = model.pods.get(s);
    if (!member) throw new Error(`policy trace: no pod ${s} takes part in policy (unknown, host-network or finished)`);
    const ip = member.ips.find((a) => !a.includes(':')) ?? member.ips[0];
    if (ip === undefined) throw new Error(`policy trace: pod ${s} has no address`);
    return { ip, member };
  }
  const ip = canonicalIp(s);
  if (ip === undefined) throw new Error(`policy trace: ${JSON.stringify(s)} is neither namespace/pod nor an IP address`);
  return { ip, member: model.podByIp.get(ip) };
}

function peerMatches(model: PolicyModel, peer: PeerSpec, ip: string, pod: Member | undefined): boolean {
  switch (peer.kind) {
    case 'all':
      return true;
    case 'unknown':
      return false;
    case 'pods':
      return pod !== undefined && podSetMatches(peer.set, pod.namespace, pod.labels, model.namespaceLabels);
    case 'cidr': {
      const addr = parseIp(ip);
      const inside = (c: string) => {
        const cidr = parseCidr(c);
        return cidr.family === addr.family && cidrContains(cidr, addr);
      };
      return inside(peer.cidr) && !peer.except.some(inside);
    }
  }
}

function traceSide(model: PolicyModel, pod: Member, dir: PolicyDirection, peerIp: string, peerPod: Member | undefined, dstPod: Member | undefined, q: TraceQuery): SideTrace {
  const selecting = model.policies.filter((p) => selects(p, pod, model.namespaceLabels));
  const side = sideOf(selecting, dir);
  const policies = selecting
    .filter((p) => (dir === 'ingress' ? p.spec.ingress : p.spec.egress) !== undefined)
    .map((p) => ({ ref: p.spec.ref, tier: p.spec.tier, priority: p.spec.priority, audit: p.spec.audit, isolates: side.isolatedBy.includes(p) }));
  const base = { direction: dir, pod: pod.key, local: pod.epId !== undefined, peer: { ip: peerIp, ...(peerPod ? { pod: peerPod.key } : {}) }, policies };
  if (pod.epId !== undefined && model.nodeIps.has(peerIp)) {
    return { ...base, host: true, rules: [], verdict: { action: 'allow', tier: 'default', policyId: 0, rule: 0 }, decidedBy: '', reason: "the peer is this node: a pod and its own node always talk" };
  }
  const named = dstPod ? namedPortsOf(dstPod.ports) : undefined;
  const protocol = IPPROTO[q.protocol];
  const rules: RuleTrace[] = side.rules.map((r) => {
    const peerMatched = r.rule.peers.some((p) => peerMatches(model, p, peerIp, peerPod));
    return {
      policy: r.policy.spec.ref,
      tier: r.tier,
      rule: r.rule.index,
      name: r.rule.name,
      action: r.rule.action,
      audit: r.policy.spec.audit,
      peerMatched,
      portMatched: blocksMatch(portBlocks(r.rule, named), protocol, q.protocol === 'ICMP' ? 0 : q.port),
      failClosed: r.rule.failClosed === true,
    };
  });
  const verdict = decide(side.rules, side.isolatedBy, side.audit, (i) => rules[i].peerMatched && rules[i].portMatched);
  const policy = model.policies.find((p) => p.id === verdict.policyId);
  const decidedBy = policy?.spec.ref ?? '';
  let reason: string;
  if (verdict.tier === 'default') reason = policies.length === 0 ? 'no policy selects the pod in this direction: allowed' : 'no rule decided and nothing isolates the pod: allowed by default';
  else if (verdict.rule === RULE_ISOLATED) reason = `isolated by ${decidedBy} and no rule of its tier allowed this`;
  else {
    const r = rules.find((x) => x.policy === decidedBy && x.rule === verdict.rule)!;
    const label = `${decidedBy} ${dir} rule ${r.rule}${r.name ? ` (${r.name})` : ''}`;
    reason = r.failClosed ? `${label} holds a peer kelp does not know: it denies everything (fail closed)` : `${r.action === 'accept' ? 'accepted' : 'denied'} by ${label}`;
  }
  if (verdict.action === 'audit') reason = `allowed; audit-only policy would have denied it: ${reason}`;
  return { ...base, host: false, rules, verdict, decidedBy, reason };
}

/** Explains a connection between two pods or addresses (see the file's head). */
export function explain(model: PolicyModel, q: TraceQuery): Explanation {
  const from = endpoint(model, q.from);
  const to = endpoint(model, q.to);
  const out: Explanation = {
    from: { ip: from.ip, ...(from.member ? { pod: from.member.key } : {}) },
    to: { ip: to.ip, ...(to.member ? { pod: to.member.key } : {}) },
    protocol: q.protocol,
    port: q.port,
    allowed: true,
  };
  if (from.member) out.egress = traceSide(model, from.member, 'egress', to.ip, to.member, to.member, q);
  if (to.member) out.ingress = traceSide(model, to.member, 'ingress', from.ip, from.member, to.member, q);
  out.allowed = [out.egress, out.ingress].every((s) => s === undefined || s.verdict.action !== 'deny');
  return out;
}

function formatSide(s: SideTrace): string[] {
  const peer = s.peer.pod ? `${s.peer.pod} (${s.peer.ip})` : s.peer.ip;
  const out = [`${s.direction} of ${s.pod}${s.local ? '' : ' (not on this node)'}, peer ${peer}:`];
  if (s.host) return [...out, `  ${s.reason}`];
  if (s.policies.length === 0) out.push('  no policy selects the pod in this direction');
  for (const p of s.policies) {
    const notes = [...(p.tier !== 'networkpolicy' ? [`priority ${p.priority}`] : []), ...(p.isolates ? ['isolates'] : []), ...(p.audit ? ['audit only'] : [])];
    out.push(`  ${p.tier} tier: ${p.ref}${notes.length > 0 ? ` (${notes.join(', ')})` : ''}`);
    for (const r of s.rules.filter((x) => x.policy === p.ref)) {
      const what = r.failClosed ? 'fail closed: unknown peer' : !r.peerMatched ? 'peer does not match' : !r.portMatched ? 'port does not match' : 'matches';
      out.push(`    rule ${r.rule}${r.name ? ` (${r.name})` : ''} ${r.action}: ${what}`);
    }
  }
  out.push(`  → ${s.verdict.action.toUpperCase()} (${s.verdict.tier}): ${s.reason}`);
  return out;
}

/** The explanation as `kelp policy trace` prints it. */
export function formatExplanation(ex: Explanation): string {
  const end = (e: { ip: string; pod?: string }) => (e.pod ? `${e.pod} (${e.ip})` : e.ip);
  const lines = [`${end(ex.from)} → ${end(ex.to)} ${ex.protocol === 'ICMP' ? 'ICMP' : `${ex.port}/${ex.protocol.toLowerCase()}`}: ${ex.allowed ? 'allowed' : 'DENIED'}`];
  for (const s of [ex.egress, ex.ingress]) if (s) lines.push(...formatSide(s));
  if (!ex.egress && !ex.ingress) lines.push('neither end is a pod: no policy applies');
  return lines.join('\n');
}
