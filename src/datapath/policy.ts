// The policy datapath's maps, from the agent's side: codecs for the structs of bpf/lib/ipcache.h
// and bpf/lib/policy.h (checked against the objects' BTF by test/unit/btf-layout.test.ts), the
// one writer of kelp_ipcache4, kelp_policy4 and kelp_policy_config (applyPolicyMaps), the
// enforcement switch, and the collector of the policy conntrack kelp_pct4 (gcPolicyCt).
//
// Invariants, stated on both sides (bpf/lib/policy.h has the datapath's):
//  - kelp_policy4 and kelp_ipcache4 hold exactly the last PolicyMapsDesired applied, once
//    applyPolicyMaps returns; while it runs, an entry that stays is never absent (make before
//    break: new and changed policy entries, then the ipcache, then stale policy entries).
//  - kelp_policy_config.revision changes after a write that changed something, and only then:
//    every tracked flow is decided again on its next packet, so a revocation reaches live flows.
//  - Enforcement is switched on only by setPolicyEnforcement(true), after a complete apply: with
//    it on, an endpoint without entries is dropped (fail closed).
//
// How the agent drives it (Datapath.policyMaps() / Datapath.gcPolicyCt()):
//  1. after its sources synced: new PolicyWriter(maps).apply(desired) with every local endpoint's
//     entries (at least its catch-alls) and every node address as IDENTITY_HOST in the ipcache,
//     then setPolicyEnforcement(maps, true) once; the flag and the maps are pinned and survive a
//     restart, so a restarted agent only applies again;
//  2. on every change: the whole desired content again through one PolicyWriter (it writes the
//     difference from what it wrote last; `resync: true` at the periodic resync re-reads the
//     maps); the returned revision is what the datapath enforces from then on;
//  3. before a CNI ADD returns: the new endpoint's entries applied (until then it is not ready);
//  4. every ~10 s: gcPolicyCt (kelp_frag4 needs none: tiny, LRU, overwritten per datagram).
// A MapFullError leaves the maps a superset of the old and new content with the old revision:
// log it, count it, report it in status, and retry on the next change.
import type { BpfMap } from '../bpf';
import { networkAddress, parseCidr, ipToBytes } from '../ipam/ip';
import { applyPuts, applyRemoves, diffEntries, diffStats, readEntries, SyncStats } from './maps/sync';
import { ct4Deadline, CtTimeouts, DEFAULT_CT_TIMEOUTS } from './nat';
import {
  FIRST_ALLOCATED_IDENTITY,
  IDENTITY_ANY,
  IDENTITY_HOST,
  IDENTITY_WORLD,
  PolicyAction,
  PolicyDirection,
  PolicyEntry,
  PolicyMapsDesired,
  PolicyTier,
  PolicyVerdict,
  RULE_ISOLATED,
} from './policy-types';
import { StructCodec, checkLength, checkUint, ip4FromBuffer, ip4ToBuffer, layout } from './structs';

// --- enums (bpf/lib/ipcache.h, bpf/lib/policy.h) --------------------------------------------

export const PolicyDir = { INGRESS: 1, EGRESS: 2 } as const;
export const PolicyActionCode = { ALLOW: 1, DENY: 2, AUDIT: 3 } as const;
export const PolicyTierCode = { NONE: 0, ADMIN: 1, NETWORKPOLICY: 2, BASELINE: 3, DEFAULT: 4 } as const;
/** kelp_policy4 prefix lengths: every protocol, every port of one protocol, one port. */
export const PolicyPrefix = { ANY_PROTO: 72, ANY_PORT: 80, FULL: 96 } as const;
export const PolicyConfigFlag = { ENFORCE: 1 } as const;

const DIR_CODES: Record<PolicyDirection, number> = { ingress: PolicyDir.INGRESS, egress: PolicyDir.EGRESS };
const ACTION_CODES: Record<PolicyAction, number> = { allow: PolicyActionCode.ALLOW, deny: PolicyActionCode.DENY, audit: PolicyActionCode.AUDIT };
const TIER_CODES: Record<PolicyTier, number> = {
  admin: PolicyTierCode.ADMIN,
  networkpolicy: PolicyTierCode.NETWORKPOLICY,
  baseline: PolicyTierCode.BASELINE,
  default: PolicyTierCode.DEFAULT,
};

const invert = <K extends string>(r: Record<K, number>): Record<number, K> =>
  Object.fromEntries(Object.entries(r).map(([k, v]) => [v, k])) as Record<number, K>;

export const POLICY_DIR_NAMES = invert(DIR_CODES);
export const POLICY_ACTION_NAMES = invert(ACTION_CODES);
export const POLICY_TIER_NAMES = invert(TIER_CODES);

const prefixed = (prefix: string, values: Record<string, number>) =>
  Object.fromEntries(Object.entries(values).map(([name, v]) => [prefix + name, v]));

/** The C enums mirrored here and in policy-types.ts, by BTF enum name. */
export const POLICY_ENUMS: Record<string, Record<string, number>> = {
  kelp_identity: {
    KELP_IDENTITY_ANY: IDENTITY_ANY,
    KELP_IDENTITY_HOST: IDENTITY_HOST,
    KELP_IDENTITY_WORLD: IDENTITY_WORLD,
    KELP_IDENTITY_FIRST: FIRST_ALLOCATED_IDENTITY,
  },
  policy_dir: prefixed('POLICY_', PolicyDir),
  policy_action: prefixed('POLICY_ACTION_', PolicyActionCode),
  policy_tier: prefixed('POLICY_TIER_', PolicyTierCode),
  policy_prefix: prefixed('POLICY_PREFIX_', PolicyPrefix),
  policy_config_flag: { POLICY_F_ENFORCE: PolicyConfigFlag.ENFORCE },
  policy_limits: { POLICY_RULE_ISOLATED: RULE_ISOLATED },
};

const u8 = (name: string, v: number) => checkUint(name, v, 1);
const u16 = (name: string, v: number) => checkUint(name, v, 2);
const u32 = (name: string, v: number) => checkUint(name, v, 4);

/** An IPv4 CIDR without host bits: its prefix length and address bytes. */
function cidr4(cidr: string): { prefix: number; addr: Buffer } {
  const c = parseCidr(cidr);
  if (c.family !== 4) throw new TypeError(`invalid IPv4 CIDR ${JSON.stringify(cidr)}`);
  if (networkAddress(c).value !== c.address) throw new TypeError(`CIDR ${cidr} has host bits set`);
  return { prefix: c.prefix, addr: ipToBytes({ family: 4, value: c.address }) };
}

// --- kelp_ipcache4 ---------------------------------------------------------------------------

export interface Ipcache4Key {
  /** `10.0.0.0/8`; host bits must be zero. */
  cidr: string;
}

const icKey = layout('ipcache4_key', 8, [
  ['prefixlen', 4, 0],
  ['addr', 4, 4],
]);

export const ipcache4Key: StructCodec<Ipcache4Key> = {
  ...icKey,
  encode(v) {
    const { prefix, addr } = cidr4(v.cidr);
    const b = Buffer.alloc(icKey.size);
    // The trie's prefix length is a host-order u32; the bytes after it are matched in order.
    b.writeUInt32LE(prefix, icKey.off.prefixlen);
    addr.copy(b, icKey.off.addr);
    return b;
  },
  decode(b) {
    checkLength(icKey.cName, b, icKey.size);
    return { cidr: `${ip4FromBuffer(b, icKey.off.addr)}/${b.readUInt32LE(icKey.off.prefixlen)}` };
  },
};

export interface Ipcache4Info {
  identity: number;
  /** The node behind the address; `0.0.0.0`: this node, or none. */
  tunnelIp: string;
  flags: number;
}

const icInfo = layout('ipcache4_info', 16, [
  ['identity', 4, 0],
  ['tunnel_ip', 4, 4],
  ['flags', 4, 8],
  ['pad', 4, 12],
]);

export const ipcache4Info: StructCodec<Ipcache4Info> = {
  ...icInfo,
  encode(v) {
    if (v.identity === IDENTITY_ANY) throw new RangeError('ipcache4_info: identity 0 is the wildcard of policy keys, never an address\'s');
    const b = Buffer.alloc(icInfo.size);
    b.writeUInt32LE(u32('identity', v.identity), icInfo.off.identity);
    ip4ToBuffer(v.tunnelIp).copy(b, icInfo.off.tunnel_ip);
    b.writeUInt32LE(u32('flags', v.flags), icInfo.off.flags);
    return b;
  },
  decode(b) {
    checkLength(icInfo.cName, b, icInfo.size);
    return {
      identity: b.readUInt32LE(icInfo.off.identity),
      tunnelIp: ip4FromBuffer(b, icInfo.off.tunnel_ip),
      flags: b.readUInt32LE(icInfo.off.flags),
    };
  },
};

// --- kelp_policy4 ----------------------------------------------------------------------------

/** A kelp_policy4 key: a PolicyEntry without its verdict. */
export type Policy4Key = Omit<PolicyEntry, 'verdict'>;

// Every field after prefixlen in network order: the trie matches bytes in order, so the
// endpoint, identity, direction, protocol and port bits come in the contract's order.
const pKey = layout('policy4_key', 16, [
  ['prefixlen', 4, 0],
  ['ep_id', 4, 4],
  ['identity', 4, 8],
  ['dir', 1, 12],
  ['proto', 1, 13],
  ['dport', 2, 14],
]);

/** The prefix length of a policy entry: 72 every protocol, 80 + portPrefix one protocol. */
export function policyPrefixLength(k: Pick<Policy4Key, 'protocol' | 'portPrefix'>): number {
  return k.protocol === undefined ? PolicyPrefix.ANY_PROTO : PolicyPrefix.ANY_PORT + k.portPrefix;
}

export const policy4Key: StructCodec<Policy4Key> = {
  ...pKey,
  encode(v) {
    const dir = DIR_CODES[v.direction];
    if (dir === undefined) throw new RangeError(`policy4_key: direction must be ingress or egress, got ${JSON.stringify(v.direction)}`);
    if (!Number.isInteger(v.portPrefix) || v.portPrefix < 0 || v.portPrefix > 16) throw new RangeError(`policy4_key: portPrefix must be 0..16, got ${v.portPrefix}`);
    const port = u16('port', v.port);
    const b = Buffer.alloc(pKey.size);
    b.writeUInt32LE(policyPrefixLength(v), pKey.off.prefixlen);
    b.writeUInt32BE(u32('epId', v.epId), pKey.off.ep_id);
    b.writeUInt32BE(u32('identity', v.identity), pKey.off.identity);
    b.writeUInt8(dir, pKey.off.dir);
    if (v.protocol !== undefined) {
      b.writeUInt8(u8('protocol', v.protocol), pKey.off.proto);
      const mask = v.portPrefix === 0 ? 0 : (0xffff << (16 - v.portPrefix)) & 0xffff;
      if ((port & ~mask) !== 0) throw new RangeError(`policy4_key: port ${port}/${v.portPrefix} has bits below its prefix set`);
      b.writeUInt16BE(port, pKey.off.dport);
    } else if (port !== 0 || v.portPrefix !== 0) {
      throw new RangeError('policy4_key: an every-protocol entry has port 0 and portPrefix 0');
    }
    return b;
  },
  decode(b) {
    checkLength(pKey.cName, b, pKey.size);
    const prefixlen = b.readUInt32LE(pKey.off.prefixlen);
    const any = prefixlen <= PolicyPrefix.ANY_PROTO;
    return {
      epId: b.readUInt32BE(pKey.off.ep_id),
      identity: b.readUInt32BE(pKey.off.identity),
      direction: POLICY_DIR_NAMES[b.readUInt8(pKey.off.dir)] ?? (String(b.readUInt8(pKey.off.dir)) as PolicyDirection),
      protocol: any ? undefined : b.readUInt8(pKey.off.proto),
      port: any ? 0 : b.readUInt16BE(pKey.off.dport),
      portPrefix: any ? 0 : prefixlen - PolicyPrefix.ANY_PORT,
    };
  },
};

const pVerdict = layout('policy4_verdict', 8, [
  ['action', 1, 0],
  ['tier', 1, 1],
  ['rule', 2, 2],
  ['policy_id', 4, 4],
]);

export const policy4Verdict: StructCodec<PolicyVerdict> = {
  ...pVerdict,
  encode(v) {
    const action = ACTION_CODES[v.action];
    const tier = TIER_CODES[v.tier];
    if (action === undefined) throw new RangeError(`policy4_verdict: action must be allow, deny or audit, got ${JSON.stringify(v.action)}`);
    if (tier === undefined) throw new RangeError(`policy4_verdict: tier must be admin, networkpolicy, baseline or default, got ${JSON.stringify(v.tier)}`);
    const b = Buffer.alloc(pVerdict.size);
    b.writeUInt8(action, pVerdict.off.action);
    b.writeUInt8(tier, pVerdict.off.tier);
    b.writeUInt16LE(u16('rule', v.rule), pVerdict.off.rule);
    b.writeUInt32LE(u32('policyId', v.policyId), pVerdict.off.policy_id);
    return b;
  },
  decode(b) {
    checkLength(pVerdict.cName, b, pVerdict.size);
    return {
      action: POLICY_ACTION_NAMES[b.readUInt8(pVerdict.off.action)] ?? 'deny',
      tier: POLICY_TIER_NAMES[b.readUInt8(pVerdict.off.tier)] ?? 'default',
      rule: b.readUInt16LE(pVerdict.off.rule),
      policyId: b.readUInt32LE(pVerdict.off.policy_id),
    };
  },
};

// --- kelp_policy_config ----------------------------------------------------------------------

export interface PolicyConfig {
  revision: number;
  /** PolicyConfigFlag bits. */
  flags: number;
}

const pCfg = layout('policy_config', 8, [
  ['revision', 4, 0],
  ['flags', 4, 4],
]);

export const policyConfig: StructCodec<PolicyConfig> = {
  ...pCfg,
  encode(v) {
    const b = Buffer.alloc(pCfg.size);
    b.writeUInt32LE(u32('revision', v.revision), pCfg.off.revision);
    b.writeUInt32LE(u32('flags', v.flags), pCfg.off.flags);
    return b;
  },
  decode(b) {
    checkLength(pCfg.cName, b, pCfg.size);
    return { revision: b.readUInt32LE(pCfg.off.revision), flags: b.readUInt32LE(pCfg.off.flags) };
  },
};

// --- kelp_pct4: policy conntrack -------------------------------------------------------------

export interface PolicyFlow {
  saddr: string;
  daddr: string;
  /** Host order; ICMP echo: the identifier in both. */
  sport: number;
  dport: number;
  proto: number;
}

/** A kelp_pct4 key: the two (address, port) sides of a flow, in the datapath's order. */
export interface Pct4Key {
  addr: [string, string];
  port: [number, number];
  proto: number;
}

const ctKey = layout('pct4_key', 16, [
  ['addr', 8, 0],
  ['port', 4, 8],
  ['proto', 1, 12],
  ['pad', 3, 13],
]);

export const pct4Key: StructCodec<Pct4Key> = {
  ...ctKey,
  encode(v) {
    const b = Buffer.alloc(ctKey.size);
    ip4ToBuffer(v.addr[0]).copy(b, ctKey.off.addr);
    ip4ToBuffer(v.addr[1]).copy(b, ctKey.off.addr + 4);
    b.writeUInt16BE(u16('port', v.port[0]), ctKey.off.port);
    b.writeUInt16BE(u16('port', v.port[1]), ctKey.off.port + 2);
    b.writeUInt8(u8('proto', v.proto), ctKey.off.proto);
    return b;
  },
  decode(b) {
    checkLength(ctKey.cName, b, ctKey.size);
    return {
      addr: [ip4FromBuffer(b, ctKey.off.addr), ip4FromBuffer(b, ctKey.off.addr + 4)],
      port: [b.readUInt16BE(ctKey.off.port), b.readUInt16BE(ctKey.off.port + 2)],
      proto: b.readUInt8(ctKey.off.proto),
    };
  },
};

/**
 * The kelp_pct4 key of a packet's flow and the slot of its source, as pct4_key_of() makes them:
 * the datapath compares the raw network-order words as the (little-endian) CPU loads them.
 */
export function pct4KeyOf(f: PolicyFlow): { key: Pct4Key; side: 0 | 1 } {
  const raw32 = (ip: string) => ip4ToBuffer(ip).readUInt32LE(0);
  const raw16 = (port: number) => ((port & 0xff) << 8) | (port >> 8);
  const s = raw32(f.saddr);
  const d = raw32(f.daddr);
  const swap = s > d || (s === d && raw16(f.sport) > raw16(f.dport));
  return swap
    ? { key: { addr: [f.daddr, f.saddr], port: [f.dport, f.sport], proto: f.proto }, side: 1 }
    : { key: { addr: [f.saddr, f.daddr], port: [f.sport, f.dport], proto: f.proto }, side: 0 };
}

export interface Pct4Entry {
  /** CLOCK_MONOTONIC ns at tick resolution (bpf_ktime_get_coarse_ns): compare with monotonicNs(). */
  created: bigint;
  lastSeen: bigint;
  /** Originator to responder. */
  txPackets: bigint;
  txBytes: bigint;
  rxPackets: bigint;
  rxBytes: bigint;
  /** kelp_policy_config revision of the verdict. */
  revision: number;
  policyId: number;
  /** The endpoint whose side gave the verdict kept. */
  epId: number;
  rule: number;
  action: number;
  tier: number;
  /** PolicyDir of that side. */
  dir: number;
  /** Key slot (0, 1) of the originator. */
  orig: number;
  txFlags: number;
  rxFlags: number;
  /** enum pct4_flag: PCT4_F_ENDED (1), its FLOW_END is claimed. Encoded as 0 when left out. */
  flags?: number;
}

const ctEntry = layout('pct4_entry', 72, [
  ['created', 8, 0],
  ['last_seen', 8, 8],
  ['tx_packets', 8, 16],
  ['tx_bytes', 8, 24],
  ['rx_packets', 8, 32],
  ['rx_bytes', 8, 40],
  ['revision', 4, 48],
  ['policy_id', 4, 52],
  ['ep_id', 4, 56],
  ['rule', 2, 60],
  ['action', 1, 62],
  ['tier', 1, 63],
  ['dir', 1, 64],
  ['orig', 1, 65],
  ['tx_flags', 1, 66],
  ['rx_flags', 1, 67],
  ['flags', 4, 68],
]);

export const pct4Entry: StructCodec<Pct4Entry> = {
  ...ctEntry,
  encode(v) {
    const b = Buffer.alloc(ctEntry.size);
    const o = ctEntry.off;
    b.writeBigUInt64LE(v.created, o.created);
    b.writeBigUInt64LE(v.lastSeen, o.last_seen);
    b.writeBigUInt64LE(v.txPackets, o.tx_packets);
    b.writeBigUInt64LE(v.txBytes, o.tx_bytes);
    b.writeBigUInt64LE(v.rxPackets, o.rx_packets);
    b.writeBigUInt64LE(v.rxBytes, o.rx_bytes);
    b.writeUInt32LE(u32('revision', v.revision), o.revision);
    b.writeUInt32LE(u32('policyId', v.policyId), o.policy_id);
    b.writeUInt32LE(u32('epId', v.epId), o.ep_id);
    b.writeUInt16LE(u16('rule', v.rule), o.rule);
    b.writeUInt8(u8('action', v.action), o.action);
    b.writeUInt8(u8('tier', v.tier), o.tier);
    b.writeUInt8(u8('dir', v.dir), o.dir);
    b.writeUInt8(u8('orig', v.orig), o.orig);
    b.writeUInt8(u8('txFlags', v.txFlags), o.tx_flags);
    b.writeUInt8(u8('rxFlags', v.rxFlags), o.rx_flags);
    b.writeUInt32LE(u32('flags', v.flags ?? 0), o.flags);
    return b;
  },
  decode(b) {
    checkLength(ctEntry.cName, b, ctEntry.size);
    const o = ctEntry.off;
    return {
      created: b.readBigUInt64LE(o.created),
      lastSeen: b.readBigUInt64LE(o.last_seen),
      txPackets: b.readBigUInt64LE(o.tx_packets),
      txBytes: b.readBigUInt64LE(o.tx_bytes),
      rxPackets: b.readBigUInt64LE(o.rx_packets),
      rxBytes: b.readBigUInt64LE(o.rx_bytes),
      revision: b.readUInt32LE(o.revision),
      policyId: b.readUInt32LE(o.policy_id),
      epId: b.readUInt32LE(o.ep_id),
      rule: b.readUInt16LE(o.rule),
      action: b.readUInt8(o.action),
      tier: b.readUInt8(o.tier),
      dir: b.readUInt8(o.dir),
      orig: b.readUInt8(o.orig),
      txFlags: b.readUInt8(o.tx_flags),
      rxFlags: b.readUInt8(o.rx_flags),
      flags: b.readUInt32LE(o.flags),
    };
  },
};

// --- kelp_frag4 ------------------------------------------------------------------------------

export interface Frag4Key {
  saddr: string;
  daddr: string;
  /** IPv4 identification, host order. */
  id: number;
  proto: number;
}

const fKey = layout('frag4_key', 12, [
  ['saddr', 4, 0],
  ['daddr', 4, 4],
  ['id', 2, 8],
  ['proto', 1, 10],
  ['pad', 1, 11],
]);

export const frag4Key: StructCodec<Frag4Key> = {
  ...fKey,
  encode(v) {
    const b = Buffer.alloc(fKey.size);
    ip4ToBuffer(v.saddr).copy(b, fKey.off.saddr);
    ip4ToBuffer(v.daddr).copy(b, fKey.off.daddr);
    b.writeUInt16BE(u16('id', v.id), fKey.off.id);
    b.writeUInt8(u8('proto', v.proto), fKey.off.proto);
    return b;
  },
  decode(b) {
    checkLength(fKey.cName, b, fKey.size);
    return {
      saddr: ip4FromBuffer(b, fKey.off.saddr),
      daddr: ip4FromBuffer(b, fKey.off.daddr),
      id: b.readUInt16BE(fKey.off.id),
      proto: b.readUInt8(fKey.off.proto),
    };
  },
};

export interface Frag4Ports {
  sport: number;
  dport: number;
}

const fPorts = layout('frag4_ports', 4, [
  ['sport', 2, 0],
  ['dport', 2, 2],
]);

export const frag4Ports: StructCodec<Frag4Ports> = {
  ...fPorts,
  encode(v) {
    const b = Buffer.alloc(fPorts.size);
    b.writeUInt16BE(u16('sport', v.sport), fPorts.off.sport);
    b.writeUInt16BE(u16('dport', v.dport), fPorts.off.dport);
    return b;
  },
  decode(b) {
    checkLength(fPorts.cName, b, fPorts.size);
    return { sport: b.readUInt16BE(fPorts.off.sport), dport: b.readUInt16BE(fPorts.off.dport) };
  },
};

export const POLICY_STRUCTS: ReadonlyArray<StructCodec<unknown>> = [
  ipcache4Key,
  ipcache4Info,
  policy4Key,
  policy4Verdict,
  policyConfig,
  pct4Key,
  pct4Entry,
  frag4Key,
  frag4Ports,
] as ReadonlyArray<StructCodec<unknown>>;

// --- the writer --------------------------------------------------------------------------------

/** The maps applyPolicyMaps writes; lxc.o and host.o share them (one pinned map each). */
export interface PolicyMaps {
  ipcache: BpfMap;
  policy: BpfMap;
  config: BpfMap;
}

export function policyMapsOf(obj: { map(name: string): BpfMap }): PolicyMaps {
  return { ipcache: obj.map('kelp_ipcache4'), policy: obj.map('kelp_policy4'), config: obj.map('kelp_policy_config') };
}

const CONFIG_KEY = Buffer.alloc(4);

export function readPolicyConfig(maps: Pick<PolicyMaps, 'config'>): PolicyConfig {
  const v = maps.config.lookup(CONFIG_KEY);
  return v ? policyConfig.decode(v) : { revision: 0, flags: 0 };
}

/** The revision the datapath decides flows at: bumped by every applyPolicyMaps that changed something. */
export function readPolicyRevision(maps: Pick<PolicyMaps, 'config'>): number {
  return readPolicyConfig(maps).revision;
}

function writePolicyConfig(maps: Pick<PolicyMaps, 'config'>, cfg: PolicyConfig): void {
  maps.config.update(CONFIG_KEY, policyConfig.encode(cfg));
}

/**
 * Switches enforcement. On: every packet of a local endpoint is decided by the maps, and an
 * endpoint without entries is dropped, so switch it on only after an applyPolicyMaps that holds
 * an entry (at least the catch-all) for every endpoint. Off: no lookup, no conntrack, nothing
 * dropped by policy. The revision is left as it is.
 */
export function setPolicyEnforcement(maps: Pick<PolicyMaps, 'config'>, on: boolean): void {
  const cfg = readPolicyConfig(maps);
  const flags = on ? cfg.flags | PolicyConfigFlag.ENFORCE : cfg.flags & ~PolicyConfigFlag.ENFORCE;
  writePolicyConfig(maps, { revision: cfg.revision, flags: flags >>> 0 });
}

export function policyEnforced(maps: Pick<PolicyMaps, 'config'>): boolean {
  return (readPolicyConfig(maps).flags & PolicyConfigFlag.ENFORCE) !== 0;
}

export interface ApplyPolicyOptions {
  /**
   * The revision to write (e.g. the store revision the content was computed from); default the
   * current one plus 1. Written only when something changed, unless `bump` says otherwise.
   */
  revision?: number;
  /** Write the revision even when the maps already held the desired content. Default false. */
  bump?: boolean;
}

export interface ApplyPolicyResult {
  policy: SyncStats;
  ipcache: SyncStats;
  /** The revision kelp_policy_config holds now. */
  revision: number;
  /** Whether the revision was written (something changed, or `bump`). */
  bumped: boolean;
}

function describeEntry(e: PolicyEntry): string {
  const proto = e.protocol === undefined ? 'any' : `${e.protocol}/${e.port}/${e.portPrefix}`;
  return `ep ${e.epId} ${e.direction} identity ${e.identity} ${proto}`;
}

/** The desired content as map entries; a key named twice is an error naming the entry. */
export function encodePolicyDesired(desired: PolicyMapsDesired): { policy: Array<[Buffer, Buffer]>; ipcache: Array<[Buffer, Buffer]> } {
  const seen = new Map<string, PolicyEntry>();
  const policy: Array<[Buffer, Buffer]> = [];
  for (const e of desired.policy) {
    const key = policy4Key.encode(e);
    const id = key.toString('hex');
    const other = seen.get(id);
    if (other) throw new Error(`kelp_policy4: two entries for one key: ${describeEntry(other)} and ${describeEntry(e)}`);
    seen.set(id, e);
    policy.push([key, policy4Verdict.encode(e.verdict)]);
  }
  const ipcache: Array<[Buffer, Buffer]> = [];
  for (const [cidr, identity] of desired.ipcache) {
    ipcache.push([ipcache4Key.encode({ cidr }), ipcache4Info.encode({ identity, tunnelIp: '0.0.0.0', flags: 0 })]);
  }
  return { policy, ipcache };
}

type Encoded = ReturnType<typeof encodePolicyDesired>;

/**
 * Makes kelp_policy4 and kelp_ipcache4 hold exactly `desired`, make before break:
 *   1. new and changed kelp_policy4 entries,
 *   2. kelp_ipcache4: new and changed prefixes, then the stale ones,
 *   3. stale kelp_policy4 entries,
 *   4. the revision in kelp_policy_config, when anything changed: live flows are decided again.
 * A full map throws MapFullError (maps/sync.ts) before any removal or the revision: what was put
 * stays (it is part of the desired state), nothing desired is missing that was there before.
 * Diffs against what the maps hold, read back (about 10 µs an entry): PolicyWriter diffs against
 * what it wrote last instead.
 */
export function applyPolicyMaps(maps: PolicyMaps, desired: PolicyMapsDesired, opts: ApplyPolicyOptions = {}): ApplyPolicyResult {
  return applyEncoded(maps, encodePolicyDesired(desired), undefined, opts);
}

function applyEncoded(maps: PolicyMaps, want: Encoded, current: Encoded | undefined, opts: ApplyPolicyOptions): ApplyPolicyResult {
  const policyDiff = diffEntries(current?.policy ?? readEntries(maps.policy), want.policy);
  const ipcacheDiff = diffEntries(current?.ipcache ?? readEntries(maps.ipcache), want.ipcache);

  applyPuts(maps.policy, policyDiff, want.policy.length);
  applyPuts(maps.ipcache, ipcacheDiff, want.ipcache.length);
  applyRemoves(maps.ipcache, ipcacheDiff);
  applyRemoves(maps.policy, policyDiff);

  const changed = policyDiff.put.length + policyDiff.remove.length + ipcacheDiff.put.length + ipcacheDiff.remove.length > 0;
  const cfg = readPolicyConfig(maps);
  let revision = cfg.revision;
  const bumped = changed || opts.bump === true;
  if (bumped) {
    revision = opts.revision ?? (cfg.revision + 1) >>> 0;
    writePolicyConfig(maps, { revision: u32('revision', revision), flags: cfg.flags });
  }
  return { policy: diffStats(policyDiff), ipcache: diffStats(ipcacheDiff), revision, bumped };
}

/**
 * The writer the agent keeps for the maps' lifetime: applyPolicyMaps, diffing against the content
 * it wrote last rather than reading the maps back (50,000 entries read back cost ~0.5 s here; the
 * whole apply of a small change is then the encoding and the diff). The first apply, one with
 * `resync`, and the one after a failed apply read the maps: a resync repairs what changed
 * behind the writer's back.
 */
export class PolicyWriter {
  private written?: Encoded;

  constructor(readonly maps: PolicyMaps) {}

  apply(desired: PolicyMapsDesired, opts: ApplyPolicyOptions & { resync?: boolean } = {}): ApplyPolicyResult {
    const want = encodePolicyDesired(desired);
    const current = opts.resync ? undefined : this.written;
    this.written = undefined;
    const res = applyEncoded(this.maps, want, current, opts);
    this.written = want;
    return res;
  }
}

// --- policy conntrack: collection and inspection ------------------------------------------------

export interface PolicyCtGcOptions {
  /** Idle timeouts by state; default nat.ts's DEFAULT_CT_TIMEOUTS (TCP established 6 h, closing 10 s, UDP 60 s, ICMP 30 s). */
  timeouts?: Partial<CtTimeouts>;
  /** FLOW_END of expired flows (src/datapath/flows.ts): claimed before the delete, so BPF and the GC never both end a flow. */
  flowEnds?: PolicyCtEnds;
}

/** What the collector asks of whoever reports flow ends. */
export interface PolicyCtEnds {
  /** Claims the end of the flow `key` (false: it was ended already, by BPF or an earlier pass). */
  claim(key: Buffer, entry: Pct4Entry): boolean;
  /** The flow whose end was claimed is gone: report it. */
  ended(key: Buffer, entry: Pct4Entry): void;
  /** Forgets the flow's claim once its entry is deleted. */
  release(key: Buffer, entry: Pct4Entry): void;
}

export interface PolicyCtGcResult {
  scanned: number;
  deleted: number;
}

/** The part of a BpfMap the collector uses. */
export interface PolicyCtMap {
  keys(): Buffer[];
  lookup(key: Buffer): Buffer | undefined;
  delete(key: Buffer): boolean;
}

/**
 * One collection pass over kelp_pct4 at monotonic time `nowNs` (nat.ts monotonicNs()): a flow
 * idle past its state's timeout goes. (A packet between the read and the delete loses its
 * entry: its flow is decided again on the next one, as after an eviction.) Denied flows (a revocation cut them) age like any other: while
 * the peer keeps retrying, the entry keeps them cut. The agent runs it periodically, as the NAT
 * collector (every 10 s or so): LRU eviction is only the safety net.
 */
export function gcPolicyCt(map: PolicyCtMap, nowNs: bigint, opts: PolicyCtGcOptions = {}): PolicyCtGcResult {
  const t: CtTimeouts = { ...DEFAULT_CT_TIMEOUTS, ...opts.timeouts };
  const res: PolicyCtGcResult = { scanned: 0, deleted: 0 };
  const ends = opts.flowEnds;
  for (const key of map.keys()) {
    const buf = map.lookup(key);
    if (!buf) continue;
    res.scanned += 1;
    const entry = pct4Entry.decode(buf);
    if (nowNs < ct4Deadline(key.readUInt8(ctKey.off.proto), entry, t)) continue;
    const claimed = ends?.claim(key, entry) ?? false;
    if (map.delete(key)) res.deleted += 1;
    if (claimed) ends!.ended(key, entry);
    ends?.release(key, entry);
  }
  return res;
}

export interface PolicyCtFlow {
  /** The flow as its originator opened it. */
  orig: PolicyFlow;
  action: PolicyAction | 'none';
  verdict: { policyId: number; rule: number; tier: PolicyTier | 'none'; epId: number; direction: PolicyDirection | 'none' };
  revision: number;
  entry: Pct4Entry;
}

/** A kelp_pct4 entry in the agent's terms. */
export function describePolicyCt(k: Pct4Key, e: Pct4Entry): PolicyCtFlow {
  const o = e.orig & 1;
  const r = 1 - o;
  return {
    orig: { saddr: k.addr[o], daddr: k.addr[r], sport: k.port[o], dport: k.port[r], proto: k.proto },
    action: POLICY_ACTION_NAMES[e.action] ?? 'none',
    verdict: {
      policyId: e.policyId,
      rule: e.rule,
      tier: POLICY_TIER_NAMES[e.tier] ?? 'none',
      epId: e.epId,
      direction: POLICY_DIR_NAMES[e.dir] ?? 'none',
    },
    revision: e.revision,
    entry: e,
  };
}
