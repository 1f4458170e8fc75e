// What the compiler (./compile.ts) knows after a compile, kept for the trace (./trace.ts) and
// for the agent: the policies in evaluation order with their ids, the pods that take part, the
// identities, this node's addresses. Plus the small helpers every part shares.
//
// Which pods take part: a pod with addresses in status, not on the host network (a hostNetwork
// pod has its node's address and is, to policy, the node), and not finished (Succeeded/Failed: its
// address may already be someone else's) — and every local endpoint, whatever its Pod object
// says (one without a Pod object is a pod without labels in its namespace).
import { Cidr, cidrContains, cidrToString, familyBits, networkAddress, parseCidr } from '../ipam/ip';
import type { ContainerPort, PodObject } from '../sources/objects/pod';
import type { Protocol } from '../sources/objects/net';
import type { PolicySpec } from './spec';

export interface ModelPolicy {
  spec: PolicySpec;
  /** Stable while the policy exists; the datapath's cookie. */
  id: number;
}

/** A pod that takes part in policy. */
export interface Member {
  /** `namespace/name`. */
  key: string;
  namespace: string;
  labels: Record<string, string>;
  /** Every container's ports. */
  ports: ContainerPort[];
  /** Canonical; a local endpoint's are its endpoint's addresses. */
  ips: string[];
  /** The identity of its IPv4 address (none without one: the maps are IPv4 only). */
  identity?: number;
  /** Datapath endpoint id, for the pods on this node. */
  epId?: number;
  /** The pod's other endpoints on this node (one per further kelp interface): the same entries. */
  moreEpIds?: number[];
}

/** What an identity stands for. */
export interface IdentityInfo {
  /** The pods' namespace and labels, for a pod identity. */
  pod?: { namespace: string; labels: Record<string, string> };
  /** The policy CIDRs containing its addresses, shortest first. */
  cidrs: string[];
  /** For a pod identity: what each name used by an egress named port means on its pods. */
  named?: NamedPorts;
}

/** Port name → every (protocol, number) a pod's containers give it. */
export type NamedPorts = ReadonlyMap<string, ReadonlyArray<{ protocol: Protocol; port: number }>>;

export interface PolicyModel {
  /** Evaluation order: tier, priority, ref. */
  policies: ModelPolicy[];
  pods: Map<string, Member>;
  podByIp: Map<string, Member>;
  namespaceLabels: (namespace: string) => Record<string, string>;
  /** This node's addresses (canonical): always allowed to and from its pods. */
  nodeIps: Set<string>;
  identities: Map<number, IdentityInfo>;
}

/** Whether a Pod object takes part in policy (see the file's head). */
export function policyPod(pod: PodObject): boolean {
  const phase = pod.status?.phase;
  return !pod.spec.hostNetwork && phase !== 'Succeeded' && phase !== 'Failed' && (pod.status?.podIPs.length ?? 0) > 0;
}

export function namedPortsOf(ports: readonly ContainerPort[]): NamedPorts {
  const out = new Map<string, Array<{ protocol: Protocol; port: number }>>();
  for (const p of ports) {
    if (p.name === undefined) continue;
    const list = out.get(p.name) ?? [];
    if (!list.some((e) => e.protocol === p.protocol && e.port === p.containerPort)) list.push({ protocol: p.protocol, port: p.containerPort });
    out.set(p.name, list);
  }
  return out;
}

/**
 * `cidr` without the `except` prefixes, as disjoint prefixes (canonical text). Each except is
 * inside cidr (the validator guarantees it; others are ignored where they do not overlap).
 */
export function cidrMinus(cidr: string, except: readonly string[]): string[] {
  const outer = parseCidr(cidr);
  const holes = except.map(parseCidr).filter((h) => h.family === outer.family);
  const out: string[] = [];
  const bits = familyBits(outer.family);
  const covers = (a: Cidr, b: Cidr) => b.prefix >= a.prefix && cidrContains(a, networkAddress(b));
  const walk = (c: Cidr) => {
    if (holes.some((h) => covers(h, c))) return;
    if (!holes.some((h) => covers(c, h))) {
      out.push(cidrToString(c));
      return;
    }
    const prefix = c.prefix + 1;
    const base = networkAddress(c).value;
    walk({ family: c.family, address: base, prefix });
    walk({ family: c.family, address: base | (1n << BigInt(bits - prefix)), prefix });
  };
  walk({ ...outer, address: networkAddress(outer).value });
  return out;
}

/** An inclusive port range as (value, prefix length over 16 bits) pairs covering exactly it. */
export function portRangePrefixes(first: number, last: number): Array<{ port: number; prefix: number }> {
  const out: Array<{ port: number; prefix: number }> = [];
  let p = first;
  while (p <= last) {
    let size = 1;
    // Grow the block while it stays aligned and inside the range.
    while (size < 65536 && p % (size * 2) === 0 && p + size * 2 - 1 <= last) size *= 2;
    out.push({ port: p, prefix: 16 - Math.log2(size) });
    p += size;
  }
  return out;
}
