// A reference evaluator for kelp's three policy APIs, written plainly from their texts (the
// NetworkPolicy API reference, the network-policy-api ClusterNetworkPolicy v1alpha2 text, and
// DESIGN.md's "Policy model" for KelpNetworkPolicy and audit), over the objects as they are:
// no compilation, no identities, no intervals, no code shared with src/policy. One connection,
// one side, decided by walking the objects.
import { cidrContains, parseCidr, parseIp } from '../../src/ipam/ip';
import type { ClusterNetworkPolicyObject, PolicyRule } from '../../src/sources/objects/clusternetworkpolicy';
import type { KelpNetworkPolicyObject } from '../../src/sources/objects/kelpnetworkpolicy';
import { LabelSelector, selectorMatches } from '../../src/sources/objects/labels';
import type { NamespaceObject } from '../../src/sources/objects/namespace';
import type { NetworkPolicyObject, NetworkPolicyPeer, NetworkPolicyPort } from '../../src/sources/objects/networkpolicy';
import type { PodObject } from '../../src/sources/objects/pod';

export interface RefWorld {
  namespaces: NamespaceObject[];
  pods: PodObject[];
  /** Node name → its addresses. */
  nodes: Record<string, string[]>;
  networkPolicies: NetworkPolicyObject[];
  clusterNetworkPolicies: ClusterNetworkPolicyObject[];
  kelpNetworkPolicies: KelpNetworkPolicyObject[];
}

export interface RefPacket {
  src: string;
  dst: string;
  protocol: 'TCP' | 'UDP' | 'SCTP' | 'ICMP';
  /** Destination port; 0 for ICMP. */
  port: number;
}

export interface RefVerdict {
  action: 'allow' | 'deny' | 'audit';
  tier: 'admin' | 'networkpolicy' | 'baseline' | 'default';
  /** `Kind/namespace/name` or `ClusterNetworkPolicy/name`; '' for the default. */
  policy: string;
  /** Rule index, or 'isolated' ("no rule allowed"); 0 for the default. */
  rule: number | 'isolated';
}

export type RefSide = RefVerdict | 'host' | 'not-a-pod';

/** Deliberate misreadings, for tests showing the comparison notices each. */
export type RefMutation =
  | 'pass-is-accept'
  | 'priority-descending'
  | 'knp-accept-beats-deny'
  | 'audit-enforced'
  | 'unknown-peer-ignored'
  | 'named-port-any-protocol'
  | 'except-ignored'
  | 'no-host-exception'
  | 'knp-deny-only-does-not-isolate';

export class PolicyReference {
  constructor(
    private readonly w: RefWorld,
    private readonly mutation?: RefMutation,
  ) {}

  /** "A pod at this address": not on the host network, not finished, listing it in status. */
  podAt(ip: string): PodObject | undefined {
    const a = parseIp(ip);
    return this.w.pods.find(
      (p) =>
        !p.spec.hostNetwork &&
        p.status?.phase !== 'Succeeded' &&
        p.status?.phase !== 'Failed' &&
        (p.status?.podIPs ?? []).some((e) => {
          const b = parseIp(e.ip);
          return b.family === a.family && b.value === a.value;
        }),
    );
  }

  private nsLabels(name: string): Record<string, string> {
    const ns = this.w.namespaces.find((n) => n.metadata.name === name);
    return { ...(ns?.metadata.labels ?? {}), 'kubernetes.io/metadata.name': name };
  }

  private audit(meta: { annotations: Record<string, string> }): boolean {
    return meta.annotations['policy.kelp.dev/audit'] === 'true';
  }

  private inCidr(cidr: string, ip: string): boolean {
    const c = parseCidr(cidr);
    const a = parseIp(ip);
    return c.family === a.family && cidrContains(c, a);
  }

  /** A named port: the destination pod has a container port of that name, protocol and number. */
  private namedPortIs(dstPod: PodObject | undefined, name: string, protocol: string | undefined, pkt: RefPacket): boolean {
    if (!dstPod) return false;
    for (const c of dstPod.spec.containers) {
      for (const cp of c.ports) {
        if (cp.name !== name || cp.containerPort !== pkt.port) continue;
        if (this.mutation === 'named-port-any-protocol' || (cp.protocol === pkt.protocol && (protocol === undefined || protocol === pkt.protocol))) return true;
      }
    }
    return false;
  }

  // --- NetworkPolicy ---------------------------------------------------------------------

  private npPeer(np: NetworkPolicyObject, peer: NetworkPolicyPeer, peerPod: PodObject | undefined, peerIp: string): boolean {
    if (peer.ipBlock) {
      if (!this.inCidr(peer.ipBlock.cidr, peerIp)) return false;
      return this.mutation === 'except-ignored' || !peer.ipBlock.except.some((e) => this.inCidr(e, peerIp));
    }
    if (!peerPod) return false;
    const nsOk = peer.namespaceSelector ? selectorMatches(peer.namespaceSelector, this.nsLabels(peerPod.metadata.namespace)) : peerPod.metadata.namespace === np.metadata.namespace;
    const podOk = peer.podSelector ? selectorMatches(peer.podSelector, peerPod.metadata.labels) : true;
    return nsOk && podOk;
  }

  private npPort(port: NetworkPolicyPort, pkt: RefPacket, dstPod: PodObject | undefined): boolean {
    if (typeof port.port === 'string') return this.namedPortIs(dstPod, port.port, port.protocol, pkt);
    if (port.protocol !== pkt.protocol) return false;
    if (port.port === undefined) return true;
    return port.port <= pkt.port && pkt.port <= (port.endPort ?? port.port);
  }

  // --- ClusterNetworkPolicy and KelpNetworkPolicy rules ------------------------------------------

  /** 'match' / 'no'; a Deny or Pass rule with an unrecognised peer denies everything ('fail-closed'). */
  private sharedRule(rule: PolicyRule, peerPod: PodObject | undefined, peerIp: string, pkt: RefPacket, dstPod: PodObject | undefined): 'match' | 'no' | 'fail-closed' {
    if (rule.action !== 'Accept' && this.mutation !== 'unknown-peer-ignored' && rule.peers.some((p) => 'unknown' in p)) return 'fail-closed';
    const peerOk = rule.peers.some((p) => {
      if ('unknown' in p) return false;
      if ('networks' in p) return p.networks.some((c) => this.inCidr(c, peerIp));
      if (!peerPod) return false;
      if ('namespaces' in p) return selectorMatches(p.namespaces, this.nsLabels(peerPod.metadata.namespace));
      return selectorMatches(p.pods.namespaceSelector, this.nsLabels(peerPod.metadata.namespace)) && selectorMatches(p.pods.podSelector, peerPod.metadata.labels);
    });
    if (!peerOk) return 'no';
    if (rule.protocols.length === 0) return 'match';
    const portOk = rule.protocols.some((p) => {
      if ('namedPort' in p) return this.namedPortIs(dstPod, p.namedPort, undefined, pkt);
      if (p.protocol !== pkt.protocol) return false;
      if (!p.port) return true;
      if ('number' in p.port) return p.port.number === pkt.port;
      return p.port.range.start <= pkt.port && pkt.port <= p.port.range.end;
    });
    return portOk ? 'match' : 'no';
  }

  private cnpSelects(cnp: ClusterNetworkPolicyObject, pod: PodObject): boolean {
    const s = cnp.spec.subject;
    const nsLabels = this.nsLabels(pod.metadata.namespace);
    if ('namespaces' in s) return selectorMatches(s.namespaces, nsLabels);
    return selectorMatches(s.pods.namespaceSelector, nsLabels) && selectorMatches(s.pods.podSelector, pod.metadata.labels);
  }

  /** One CNP tier: Accept/Deny decide, Pass leaves the tier, nothing matching goes on too. */
  private cnpTier(tier: 'Admin' | 'Baseline', withAudit: boolean, pod: PodObject, dir: 'ingress' | 'egress', peerPod: PodObject | undefined, peerIp: string, pkt: RefPacket, dstPod: PodObject | undefined): RefVerdict | undefined {
    const name = tier === 'Admin' ? 'admin' : 'baseline';
    const cnps = this.w.clusterNetworkPolicies
      .filter((c) => c.spec.tier === tier && (withAudit || !this.audit(c.metadata)) && c.spec[dir].length > 0 && this.cnpSelects(c, pod))
      .sort((a, b) => {
        const byPriority = this.mutation === 'priority-descending' ? b.spec.priority - a.spec.priority : a.spec.priority - b.spec.priority;
        return byPriority !== 0 ? byPriority : a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0;
      });
    for (const cnp of cnps) {
      const rules = cnp.spec[dir];
      for (let i = 0; i < rules.length; i++) {
        const m = this.sharedRule(rules[i], peerPod, peerIp, pkt, dstPod);
        if (m === 'no') continue;
        const policy = `ClusterNetworkPolicy/${cnp.metadata.name}`;
        if (m === 'fail-closed' || rules[i].action === 'Deny') return { action: 'deny', tier: name, policy, rule: i };
        if (rules[i].action === 'Pass' && this.mutation !== 'pass-is-accept') return undefined;
        return { action: 'allow', tier: name, policy, rule: i };
      }
    }
    return undefined;
  }

  private networkPolicyTier(withAudit: boolean, pod: PodObject, dir: 'ingress' | 'egress', peerPod: PodObject | undefined, peerIp: string, pkt: RefPacket, dstPod: PodObject | undefined): RefVerdict | undefined {
    const ns = pod.metadata.namespace;
    const knps = this.w.kelpNetworkPolicies.filter((k) => k.metadata.namespace === ns && (withAudit || !this.audit(k.metadata)) && selectorMatches(k.spec.subject.podSelector, pod.metadata.labels));
    const type = dir === 'ingress' ? 'Ingress' : 'Egress';
    const nps = this.w.networkPolicies.filter(
      (n) => n.metadata.namespace === ns && (withAudit || !this.audit(n.metadata)) && n.spec.policyTypes.includes(type) && selectorMatches(n.spec.podSelector, pod.metadata.labels),
    );
    const denies: Array<[string, number]> = [];
    const accepts: Array<[string, number]> = [];
    const isolating: string[] = [];
    for (const k of knps) {
      const ref = `KelpNetworkPolicy/${ns}/${k.metadata.name}`;
      const rules = k.spec[dir];
      if (rules.length > 0 && !(this.mutation === 'knp-deny-only-does-not-isolate' && rules.every((r) => r.action === 'Deny'))) isolating.push(ref);
      rules.forEach((r, i) => {
        const m = this.sharedRule(r, peerPod, peerIp, pkt, dstPod);
        if (m === 'fail-closed' || (m === 'match' && r.action === 'Deny')) denies.push([ref, i]);
        else if (m === 'match') accepts.push([ref, i]);
      });
    }
    for (const n of nps) {
      const ref = `NetworkPolicy/${ns}/${n.metadata.name}`;
      isolating.push(ref);
      const rules = dir === 'ingress' ? n.spec.ingress.map((r) => ({ peers: r.from, ports: r.ports })) : n.spec.egress.map((r) => ({ peers: r.to, ports: r.ports }));
      rules.forEach((r, i) => {
        const peerOk = r.peers.length === 0 || r.peers.some((p) => this.npPeer(n, p, peerPod, peerIp));
        const portOk = r.ports.length === 0 || r.ports.some((p) => this.npPort(p, pkt, dstPod));
        if (peerOk && portOk) accepts.push([ref, i]);
      });
    }
    // Several policies deciding alike: the one named is the first by ref, then rule index.
    const first = (xs: Array<[string, number]>) => [...xs].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] - b[1]))[0];
    const deny = first(denies);
    const accept = first(accepts);
    if (this.mutation === 'knp-accept-beats-deny' && accept) return { action: 'allow', tier: 'networkpolicy', policy: accept[0], rule: accept[1] };
    if (deny) return { action: 'deny', tier: 'networkpolicy', policy: deny[0], rule: deny[1] };
    if (accept) return { action: 'allow', tier: 'networkpolicy', policy: accept[0], rule: accept[1] };
    if (isolating.length > 0) return { action: 'deny', tier: 'networkpolicy', policy: [...isolating].sort()[0], rule: 'isolated' };
    return undefined;
  }

  private evaluate(withAudit: boolean, pod: PodObject, dir: 'ingress' | 'egress', peerPod: PodObject | undefined, peerIp: string, pkt: RefPacket, dstPod: PodObject | undefined): RefVerdict {
    return (
      this.cnpTier('Admin', withAudit, pod, dir, peerPod, peerIp, pkt, dstPod) ??
      this.networkPolicyTier(withAudit, pod, dir, peerPod, peerIp, pkt, dstPod) ??
      this.cnpTier('Baseline', withAudit, pod, dir, peerPod, peerIp, pkt, dstPod) ?? { action: 'allow', tier: 'default', policy: '', rule: 0 }
    );
  }

  /** The verdict of one side: the source pod's egress, or the destination pod's ingress. */
  side(pkt: RefPacket, dir: 'ingress' | 'egress'): RefSide {
    const pod = this.podAt(dir === 'egress' ? pkt.src : pkt.dst);
    if (!pod) return 'not-a-pod';
    const peerIp = dir === 'egress' ? pkt.dst : pkt.src;
    // "Traffic to and from the node where a Pod is running is always allowed."
    const own = this.w.nodes[pod.spec.nodeName ?? ''] ?? [];
    if (this.mutation !== 'no-host-exception' && own.some((ip) => parseIp(ip).value === parseIp(peerIp).value && parseIp(ip).family === parseIp(peerIp).family)) return 'host';
    const peerPod = this.podAt(peerIp);
    const dstPod = this.podAt(pkt.dst);
    const enforced = this.evaluate(this.mutation === 'audit-enforced', pod, dir, peerPod, peerIp, pkt, dstPod);
    if (enforced.action === 'deny') return enforced;
    const wouldBe = this.evaluate(true, pod, dir, peerPod, peerIp, pkt, dstPod);
    return wouldBe.action === 'deny' ? { ...wouldBe, action: 'audit' } : enforced;
  }
}

export const EMPTY: LabelSelector = { matchLabels: {}, matchExpressions: [] };
