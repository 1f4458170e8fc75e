// kelp_tunnel4 and kelp_overlay_config (bpf/lib/tunnel.h): their codecs and their one writer,
// TunnelMaps (node-types.ts), which the node reconciler drives. The maps are shared by lxc.o,
// which reads them for pods' packets to other nodes, and overlay.o, on the VXLAN device.
// Invariants: a kelp_tunnel4 entry is only ever written whole (one update per CIDR), so a packet
// sees a remote CIDR's old node or its new one, never a mix; every value is validated here,
// before any write, with an error naming the field at fault.
import type { BpfMap } from '../bpf';
import { ipToBytes, networkAddress, tryParseCidr, tryParseIp } from '../ipam/ip';
import { formatMac, parseMac } from '../netlink/mac';
import type { OverlayConfig, RoutingMode, TunnelEntry, TunnelMaps } from './node-types';
import { TUNNEL_F_ENCAP } from './node-types';
import { checkLength, ip4FromBuffer, layout, StructCodec } from './structs';

/** enum overlay_mode (bpf/lib/tunnel.h). */
export const OverlayMode = { NONE: 0, VXLAN: 1, NATIVE: 2 } as const;

const MODE_CODES: Record<RoutingMode, number> = { vxlan: OverlayMode.VXLAN, native: OverlayMode.NATIVE };

/** The largest VXLAN network identifier: 24 bits. */
export const MAX_VNI = 0xffffff;

/** Every flag kelp_tunnel4 values may carry. */
const KNOWN_FLAGS = TUNNEL_F_ENCAP;

/** A canonical IPv4 CIDR's prefix length and network bytes; `what` names the field in errors. */
function cidr4(what: string, cidr: string): { prefix: number; addr: Buffer } {
  const c = typeof cidr === 'string' ? tryParseCidr(cidr) : undefined;
  if (c?.family !== 4) throw new TypeError(`${what}: ${JSON.stringify(cidr)} is not an IPv4 CIDR`);
  if (networkAddress(c).value !== c.address) throw new TypeError(`${what}: ${cidr} has host bits set`);
  return { prefix: c.prefix, addr: ipToBytes({ family: 4, value: c.address }) };
}

/** A unicast IPv4 address's bytes; `what` names the field in errors. */
function nodeIp4(what: string, ip: string): Buffer {
  const a = tryParseIp(ip);
  if (a?.family !== 4) throw new TypeError(`${what}: ${JSON.stringify(ip)} is not an IPv4 address`);
  const b = ipToBytes(a);
  if (b.readUInt32BE(0) === 0) throw new TypeError(`${what}: 0.0.0.0 is not a node address`);
  return b;
}

// --- kelp_tunnel4 ------------------------------------------------------------------------------

const tKey = layout('tunnel4_key', 8, [
  ['prefixlen', 4, 0],
  ['addr', 4, 4],
]);

export const tunnel4Key: StructCodec<{ cidr: string }> = {
  ...tKey,
  encode(v) {
    const { prefix, addr } = cidr4('tunnel entry cidr', v.cidr);
    const b = Buffer.alloc(tKey.size);
    // The trie's prefix length is a host-order u32; the bytes after it are matched in order.
    b.writeUInt32LE(prefix, tKey.off.prefixlen);
    addr.copy(b, tKey.off.addr);
    return b;
  },
  decode(b) {
    checkLength(tKey.cName, b, tKey.size);
    return { cidr: `${ip4FromBuffer(b, tKey.off.addr)}/${b.readUInt32LE(tKey.off.prefixlen)}` };
  },
};

const tInfo = layout('tunnel4_info', 8, [
  ['node_ip', 4, 0],
  ['flags', 4, 4],
]);

export const tunnel4Info: StructCodec<{ nodeIp: string; flags: number }> = {
  ...tInfo,
  encode(v) {
    if (!Number.isInteger(v.flags) || (v.flags & ~KNOWN_FLAGS) !== 0 || v.flags < 0) {
      throw new RangeError(`tunnel entry flags: ${v.flags} has bits other than TUNNEL_F_ENCAP (${TUNNEL_F_ENCAP})`);
    }
    const b = Buffer.alloc(tInfo.size);
    nodeIp4('tunnel entry nodeIp', v.nodeIp).copy(b, tInfo.off.node_ip);
    b.writeUInt32LE(v.flags, tInfo.off.flags);
    return b;
  },
  decode(b) {
    checkLength(tInfo.cName, b, tInfo.size);
    return { nodeIp: ip4FromBuffer(b, tInfo.off.node_ip), flags: b.readUInt32LE(tInfo.off.flags) };
  },
};

// --- kelp_overlay_config ---------------------------------------------------------------------

export interface OverlayConfigValue {
  /** enum overlay_mode: NONE before the agent wrote it. */
  mode: number;
  vni: number;
  ifindex: number;
  mac: string;
}

const oCfg = layout('overlay_config', 16, [
  ['vni', 4, 0],
  ['ifindex', 4, 4],
  ['mac', 6, 8],
  ['mode', 1, 14],
  ['pad', 1, 15],
]);

export const overlayConfig: StructCodec<OverlayConfigValue> = {
  ...oCfg,
  encode(v) {
    const b = Buffer.alloc(oCfg.size);
    b.writeUInt32LE(v.vni, oCfg.off.vni);
    b.writeUInt32LE(v.ifindex, oCfg.off.ifindex);
    parseMac(v.mac).copy(b, oCfg.off.mac);
    b.writeUInt8(v.mode, oCfg.off.mode);
    return b;
  },
  decode(b) {
    checkLength(oCfg.cName, b, oCfg.size);
    return {
      mode: b.readUInt8(oCfg.off.mode),
      vni: b.readUInt32LE(oCfg.off.vni),
      ifindex: b.readUInt32LE(oCfg.off.ifindex),
      mac: formatMac(b.subarray(oCfg.off.mac, oCfg.off.mac + 6)),
    };
  },
};

const CONFIG_KEY = Buffer.alloc(4);
const NO_MAC = '00:00:00:00:00:00';

/** Checks an OverlayConfig and encodes it; every error names the field. */
export function encodeOverlayConfig(c: OverlayConfig): Buffer {
  const mode = MODE_CODES[c.mode];
  if (mode === undefined) throw new TypeError(`overlay config mode: ${JSON.stringify(c.mode)} is not one of vxlan, native`);
  if (!Number.isInteger(c.vni) || c.vni < 0 || c.vni > MAX_VNI) throw new RangeError(`overlay config vni: ${c.vni} is not an integer in 0..${MAX_VNI}`);
  if (!Number.isInteger(c.vxlanIfindex) || c.vxlanIfindex < 0 || c.vxlanIfindex > 0x7fffffff) {
    throw new RangeError(`overlay config vxlanIfindex: ${c.vxlanIfindex} is not an ifindex`);
  }
  if (c.mode === 'vxlan') {
    if (c.vxlanIfindex === 0) throw new RangeError('overlay config vxlanIfindex: VXLAN mode needs the VXLAN device (0 given)');
    if (c.vxlanMac === undefined) throw new TypeError('overlay config vxlanMac: VXLAN mode needs the VXLAN device\'s MAC');
  }
  let mac = NO_MAC;
  if (c.vxlanMac !== undefined) {
    try {
      mac = formatMac(parseMac(c.vxlanMac));
    } catch {
      throw new TypeError(`overlay config vxlanMac: ${JSON.stringify(c.vxlanMac)} is not a MAC address`);
    }
  }
  return overlayConfig.encode({ mode, vni: c.vni, ifindex: c.vxlanIfindex, mac });
}

// --- the writer ----------------------------------------------------------------------------------

export class OverlayMaps implements TunnelMaps {
  constructor(
    readonly tunnel: BpfMap,
    readonly config: BpfMap,
  ) {}

  entries(): TunnelEntry[] {
    // An LPM trie has no batch lookup: one lookup per key (a key gone meanwhile is skipped).
    return this.tunnel.keys().flatMap((k) => {
      const v = this.tunnel.lookup(k);
      return v ? [{ cidr: tunnel4Key.decode(k).cidr, ...tunnel4Info.decode(v) }] : [];
    });
  }

  /** Adds or replaces the entry of `e.cidr` in one update. */
  put(e: TunnelEntry): void {
    // Both encoded before the write: a bad field writes nothing.
    const key = tunnel4Key.encode({ cidr: e.cidr });
    const value = tunnel4Info.encode({ nodeIp: e.nodeIp, flags: e.flags });
    this.tunnel.update(key, value);
  }

  /** Removes the entry of exactly `cidr`; nothing when there is none. */
  remove(cidr: string): void {
    this.tunnel.delete(tunnel4Key.encode({ cidr }));
  }

  setOverlayConfig(c: OverlayConfig): void {
    this.config.update(CONFIG_KEY, encodeOverlayConfig(c));
  }

  /** What kelp_overlay_config holds; undefined before the first setOverlayConfig. */
  overlayConfig(): OverlayConfig | undefined {
    const raw = this.config.lookup(CONFIG_KEY);
    if (!raw) return undefined;
    const v = overlayConfig.decode(raw);
    const mode = (Object.keys(MODE_CODES) as RoutingMode[]).find((m) => MODE_CODES[m] === v.mode);
    if (!mode) return undefined;
    return { mode, vni: v.vni, vxlanIfindex: v.ifindex, ...(v.mac !== NO_MAC ? { vxlanMac: v.mac } : {}) };
  }
}

export function tunnelMapsOf(obj: { map(name: string): BpfMap }): OverlayMaps {
  return new OverlayMaps(obj.map('kelp_tunnel4'), obj.map('kelp_overlay_config'));
}

/** Structs test/unit/btf-layout.test.ts checks against lxc.o's and overlay.o's BTF. */
export const TUNNEL_STRUCTS = [tunnel4Key, tunnel4Info, overlayConfig] as ReadonlyArray<StructCodec<unknown>>;

/** Enums mirrored from bpf/lib/tunnel.h. */
export const TUNNEL_ENUMS: Record<string, Record<string, number>> = {
  tunnel_flag: { TUNNEL_F_ENCAP },
  overlay_mode: { OVERLAY_MODE_NONE: OverlayMode.NONE, OVERLAY_MODE_VXLAN: OverlayMode.VXLAN, OVERLAY_MODE_NATIVE: OverlayMode.NATIVE },
};
