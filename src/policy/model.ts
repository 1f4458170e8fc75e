// kelp's compiled policy model, as the datapath will hold it, and the lookup that answers a
// connection from it (the lookup is what the BPF programs will do, written plainly).
//
// Shape. For every pod the model knows (`PodPolicy`) and each direction (ingress: traffic into the
// pod, egress: traffic out of it) there is a `DirectionRules`: whether the pod is isolated in that
// direction, and the flat list of what is allowed. Each `AllowEntry` is a key a BPF map can hold
// as it is:
//
//   (endpoint, direction, peer, protocol, first..last port) → allow, cookie = origin (policy, rule)
//
// where `peer` is one of
//   - `any`:      every peer (a rule without `from`/`to`): one wildcard entry;
//   - `identity`: a numeric label identity. Pods with the same namespace and the same labels get
//                 the same identity (`identities`), so a peer selector compiles to the set of
//                 identities it matches, and the datapath maps a source/destination IP to its
//                 identity once (an ipcache) and looks up (endpoint, dir, identity, proto, port)
//                 in a hash map;
//   - `cidr`:     an LPM prefix. ipBlock `except`s are already subtracted (`cidrMinus`), so every
//                 CIDR entry is a plain allow and no entry ever needs to shadow another one.
//                 An LPM trie returns only the longest match, though: where prefixes nest (one
//                 rule allows 10.0.0.0/8 port 80, another 10.0.1.0/24 port 443), the value
//                 stored for the narrower prefix must carry the union of the allows of every
//                 prefix covering it, or the narrower key would shadow the broader one. The
//                 map builder does that push-down; the entries here stay as the rules said.
//                 Named ports in egress (they resolve per destination pod) compile to host
//                 prefixes (/32, /128) of each destination pod with the number that pod gives
//                 the name, since pods with one identity may number a name differently.
// Ports are inclusive ranges; `portRangePrefixes` turns one into (value, prefix length) pairs for
// an LPM-style port match. Everything in one direction is a union of allows (NetworkPolicy has
// no deny), so the order of entries does not matter and overlapping entries cannot shadow each
// other. The tiers, priorities and Deny/Pass actions of ClusterNetworkPolicy and
// KelpNetworkPolicy are not in this model yet.
//
// Reserved: traffic between a pod and its own node is always allowed (`hostIps`: the addresses of
// the node the pod runs on); in the datapath that is a reserved "host" identity checked first.
// Any address that is not a pod's is the reserved identity WORLD, matched only by `any` and
// `cidr` entries.
import { canonicalIp, Cidr, cidrContains, cidrToString, familyBits, networkAddress, parseCidr, tryParseIp } from '../ipam/ip';
import type { Protocol } from '../sources/objects';

export type Direction = 'ingress' | 'egress';

/** Reserved identities, below the first pod identity. */
export const IDENTITY_HOST = 1;
export const IDENTITY_WORLD = 2;
export const FIRST_POD_IDENTITY = 256;

export type Peer = { kind: 'any' } | { kind: 'identity'; identity: number } | { kind: 'cidr'; cidr: string };

export interface RuleOrigin {
  /** `namespace/name` of the NetworkPolicy. */
  policy: string;
  direction: Direction;
  /** Index of the rule in the policy's ingress or egress list. */
  rule: number;
}

export interface AllowEntry {
  peer: Peer;
  protocol: Protocol;
  /** Inclusive; 0..65535 when the rule names no port. */
  first: number;
  last: number;
  origin: RuleOrigin;
}

export interface DirectionRules {
  /** Selected by at least one policy for this direction: only `allow` gets through. */
  isolated: boolean;
  /** `namespace/name` of the policies isolating the pod in this direction. */
  isolatedBy: string[];
  allow: AllowEntry[];
}

export interface PodPolicy {
  /** `namespace/name`. */
  pod: string;
  identity: number;
  /** The pod's own addresses, canonical. */
  ips: string[];
  /** The addresses of the pod's node: always allowed both ways. */
  hostIps: string[];
  ingress: DirectionRules;
  egress: DirectionRules;
}

export interface IdentityInfo {
  namespace: string;
  labels: Record<string, string>;
}

export interface CompiledPolicy {
  identities: Map<number, IdentityInfo>;
  /** By `namespace/name`. */
  pods: Map<string, PodPolicy>;
  /** Pod address → `namespace/name` (the datapath's ipcache, with `identity` from `pods`). */
  podByIp: Map<string, string>;
}

export interface Connection {
  src: string;
  dst: string;
  protocol: Protocol;
  /** Destination port, 1..65535. */
  port: number;
}

export type SideDecision =
  | { decision: 'not-a-pod' }
  | { decision: 'host' }
  | { decision: 'unrestricted' }
  | { decision: 'allowed'; by: RuleOrigin }
  | { decision: 'denied'; isolatedBy: string[] };

export interface Verdict {
  allowed: boolean;
  /** The source pod's egress. */
  egress: SideDecision;
  /** The destination pod's ingress. */
  ingress: SideDecision;
}

function canonical(s: string): string {
  const ip = canonicalIp(s);
  if (ip === undefined) throw new Error(`not an IP address: ${JSON.stringify(s)}`);
  return ip;
}

function peerMatches(peer: Peer, identity: number, ip: string): boolean {
  switch (peer.kind) {
    case 'any':
      return true;
    case 'identity':
      return peer.identity === identity;
    case 'cidr': {
      const addr = tryParseIp(ip);
      return addr !== undefined && cidrContains(parseCidr(peer.cidr), addr);
    }
  }
}

function decideSide(pod: PodPolicy | undefined, dir: Direction, peerIp: string, peerIdentity: number, protocol: Protocol, port: number): SideDecision {
  if (!pod) return { decision: 'not-a-pod' };
  if (pod.hostIps.includes(peerIp)) return { decision: 'host' };
  const rules = pod[dir];
  if (!rules.isolated) return { decision: 'unrestricted' };
  for (const e of rules.allow) {
    if (e.protocol === protocol && e.first <= port && port <= e.last && peerMatches(e.peer, peerIdentity, peerIp)) return { decision: 'allowed', by: e.origin };
  }
  return { decision: 'denied', isolatedBy: rules.isolatedBy };
}

const passes = (d: SideDecision) => d.decision !== 'denied';

/** The verdict for a new connection: the source pod's egress and the destination pod's ingress. */
export function lookup(model: CompiledPolicy, conn: Connection): Verdict {
  const src = canonical(conn.src);
  const dst = canonical(conn.dst);
  const srcPod = model.pods.get(model.podByIp.get(src) ?? '');
  const dstPod = model.pods.get(model.podByIp.get(dst) ?? '');
  const egress = decideSide(srcPod, 'egress', dst, dstPod?.identity ?? IDENTITY_WORLD, conn.protocol, conn.port);
  const ingress = decideSide(dstPod, 'ingress', src, srcPod?.identity ?? IDENTITY_WORLD, conn.protocol, conn.port);
  return { allowed: passes(egress) && passes(ingress), egress, ingress };
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
