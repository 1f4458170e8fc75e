// The `ipam` section of a network config, in the shape of the reference host-local plugin, plus
// kelp's `reserved`. Parsing canonicalises everything so that the allocator never sees a string.
import {
  broadcastAddress, cidrContains, cidrCovers, cidrToString, Cidr, compareIp, familyBits, IpAddress, ipEquals,
  ipOffset, ipToString, networkAddress, tryParseIp, parseCidr,
} from './ip';
import { IpamError } from './errors';

/** Where host-local keeps its state; sharing it means a switch between the two keeps leases. */
export const DEFAULT_DATA_DIR = '/var/lib/cni/networks';

export interface IpRange {
  /** Network form: host bits cleared. */
  subnet: Cidr;
  /** Inclusive bounds of the addresses handed out. */
  rangeStart: IpAddress;
  rangeEnd: IpAddress;
  /** Returned in results and never allocated. */
  gateway: IpAddress;
}

/** Alternatives for one address, tried in order; one address is allocated per range set. */
export type RangeSet = IpRange[];

export interface Route {
  dst: string;
  gw?: string;
}

export interface IpamConfig {
  network: string;
  rangeSets: RangeSet[];
  /** Never handed out; single IPs become host prefixes. */
  reserved: Cidr[];
  routes: Route[];
  dataDir: string;
}

// The CNI spec's network name syntax; it also keeps the name safe as a directory name.
const NETWORK_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

function invalid(msg: string): IpamError {
  return new IpamError('invalid', `ipam config: ${msg}`);
}

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optString(o: Obj, key: string, field: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw invalid(`${field} must be a string`);
  return v;
}

function ipField(o: Obj, key: string, field: string): IpAddress | undefined {
  const s = optString(o, key, field);
  if (s === undefined) return undefined;
  const ip = tryParseIp(s);
  if (!ip) throw invalid(`${field} ${JSON.stringify(s)} is not an IP address`);
  return ip;
}

export function rangeToString(r: IpRange): string {
  return `${ipToString(r.rangeStart)}-${ipToString(r.rangeEnd)}`;
}

export function rangeSetToString(set: RangeSet): string {
  return set.map(rangeToString).join(',');
}

/** `prefix` is the path of the range in the config, '' for the legacy top-level fields. */
function parseRange(o: unknown, prefix: string): IpRange {
  if (!isObj(o)) throw invalid(`${prefix} must be an object`);
  const field = (name: string) => (prefix ? `${prefix}.${name}` : name);
  const subnetStr = optString(o, 'subnet', field('subnet'));
  if (subnetStr === undefined) throw invalid(`${field('subnet')} is required`);
  let subnet: Cidr;
  try {
    subnet = parseCidr(subnetStr);
  } catch {
    throw invalid(`${field('subnet')} ${JSON.stringify(subnetStr)} is not a CIDR`);
  }
  const net = networkAddress(subnet);
  if (net.value !== subnet.address) {
    throw invalid(`${field('subnet')} ${subnetStr} has host bits set; the network is ` +
      `${ipToString(net)}/${subnet.prefix}`);
  }
  // Mirrors host-local: a /31 or /32 (/127, /128) leaves nothing once the gateway is taken.
  if (subnet.prefix > familyBits(subnet.family) - 2) {
    throw invalid(`${field('subnet')} ${subnetStr} is too small to allocate from`);
  }
  const sub = cidrToString(subnet);
  const bcast = broadcastAddress(subnet);
  const hasBroadcast = subnet.family === 4;
  const inside = (ip: IpAddress, name: string) => {
    if (!cidrContains(subnet, ip)) throw invalid(`${field(name)} ${ipToString(ip)} is outside subnet ${sub}`);
    if (ipEquals(ip, net)) throw invalid(`${field(name)} ${ipToString(ip)} is the network address of ${sub}`);
    if (hasBroadcast && ipEquals(ip, bcast)) {
      throw invalid(`${field(name)} ${ipToString(ip)} is the broadcast address of ${sub}`);
    }
  };
  const first = ipOffset(net, 1);
  const last = hasBroadcast ? ipOffset(bcast, -1) : bcast;
  const rangeStart = ipField(o, 'rangeStart', field('rangeStart')) ?? first;
  const rangeEnd = ipField(o, 'rangeEnd', field('rangeEnd')) ?? last;
  const gateway = ipField(o, 'gateway', field('gateway')) ?? first;
  inside(rangeStart, 'rangeStart');
  inside(rangeEnd, 'rangeEnd');
  inside(gateway, 'gateway');
  if (compareIp(rangeStart, rangeEnd) > 0) {
    throw invalid(`${field('rangeStart')} ${ipToString(rangeStart)} is after rangeEnd ${ipToString(rangeEnd)}`);
  }
  return { subnet, rangeStart, rangeEnd, gateway };
}

function overlaps(a: IpRange, b: IpRange): boolean {
  return a.subnet.family === b.subnet.family &&
    compareIp(a.rangeStart, b.rangeEnd) <= 0 && compareIp(b.rangeStart, a.rangeEnd) <= 0;
}

function parseReserved(v: unknown): Cidr[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw invalid('reserved must be a list of IPs or CIDRs');
  return v.map((e, i) => {
    if (typeof e !== 'string') throw invalid(`reserved[${i}] must be a string`);
    const ip = tryParseIp(e);
    if (ip) return { family: ip.family, address: ip.value, prefix: familyBits(ip.family) };
    try {
      return parseCidr(e);
    } catch {
      throw invalid(`reserved[${i}] ${JSON.stringify(e)} is neither an IP nor a CIDR`);
    }
  });
}

function parseRoutes(v: unknown): Route[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw invalid('routes must be a list');
  return v.map((r, i) => {
    if (!isObj(r)) throw invalid(`routes[${i}] must be an object`);
    const dst = optString(r, 'dst', `routes[${i}].dst`);
    if (dst === undefined) throw invalid(`routes[${i}].dst is required`);
    let dstCidr: Cidr;
    try {
      dstCidr = parseCidr(dst);
    } catch {
      throw invalid(`routes[${i}].dst ${JSON.stringify(dst)} is not a CIDR`);
    }
    const gw = ipField(r, 'gw', `routes[${i}].gw`);
    if (gw && gw.family !== dstCidr.family) {
      throw invalid(`routes[${i}].gw ${ipToString(gw)} is not of the family of dst ${dst}`);
    }
    return gw ? { dst: cidrToString(dstCidr), gw: ipToString(gw) } : { dst: cidrToString(dstCidr) };
  });
}

export interface IpamConfigOptions {
  /**
   * Prefixes every range's subnet must lie in: the node's pod CIDR, for a config to allocate
   * from. kelp's IPAM hands out addresses the node routes (and masquerades) as its pods'; one
   * outside would get an address nothing routes back. Unset for a config only read (DEL, GC).
   */
  within?: Cidr[];
}

/**
 * Parses and validates the `ipam` object of network `network`. Throws IpamError('invalid') whose
 * message names the offending field.
 */
export function parseIpamConfig(network: string, raw: unknown, opts: IpamConfigOptions = {}): IpamConfig {
  if (typeof network !== 'string' || !NETWORK_NAME.test(network)) {
    throw invalid(`network name ${JSON.stringify(network)} is not a valid CNI network name`);
  }
  if (!isObj(raw)) throw invalid('ipam must be an object');

  const rangeSets: RangeSet[] = [];
  // Config paths of each range, for error messages: set indexes shift when the legacy range exists.
  const paths: string[][] = [];
  // host-local puts the legacy single range first, before `ranges`.
  if (optString(raw, 'subnet', 'subnet') !== undefined) {
    rangeSets.push([parseRange(raw, '')]);
    paths.push(['subnet']);
  } else {
    for (const k of ['rangeStart', 'rangeEnd', 'gateway']) {
      if (optString(raw, k, k) !== undefined) throw invalid(`${k} is set but subnet is not`);
    }
  }
  const ranges = raw.ranges;
  if (ranges !== undefined && ranges !== null) {
    if (!Array.isArray(ranges)) throw invalid('ranges must be a list of range sets (lists of ranges)');
    ranges.forEach((set, i) => {
      if (!Array.isArray(set) || set.length === 0) throw invalid(`ranges[${i}] must be a non-empty list of ranges`);
      rangeSets.push(set.map((r, j) => parseRange(r, `ranges[${i}][${j}]`)));
      paths.push(set.map((_, j) => `ranges[${i}][${j}]`));
    });
  }
  if (rangeSets.length === 0) throw invalid('no IP ranges specified (set subnet or ranges)');

  const all = rangeSets.flatMap((set, s) => set.map((r, j) => ({ r, path: paths[s][j] })));
  const within = opts.within;
  if (within) {
    const outside = all.find(({ r }) => !within.some((w) => cidrCovers(w, r.subnet)));
    if (outside) {
      const field = outside.path === 'subnet' ? 'ipam.subnet' : `ipam.${outside.path}.subnet`;
      throw new IpamError('invalid', `${field} ${cidrToString(outside.r.subnet)} is outside this node's pod CIDR ${within.map(cidrToString).join(', ')}`);
    }
  }
  for (const [s, set] of rangeSets.entries()) {
    if (set.some((r) => r.subnet.family !== set[0].subnet.family)) {
      throw invalid(`${paths[s][0].replace(/\[0\]$/, '')} mixes IPv4 and IPv6 ranges`);
    }
  }
  for (let a = 0; a < all.length; a++) {
    for (let b = a + 1; b < all.length; b++) {
      const x = all[a];
      const y = all[b];
      if (overlaps(x.r, y.r)) {
        throw invalid(`${x.path} (${rangeToString(x.r)}) overlaps ${y.path} (${rangeToString(y.r)})`);
      }
    }
  }

  const dataDir = optString(raw, 'dataDir', 'dataDir') ?? DEFAULT_DATA_DIR;
  return {
    network,
    rangeSets,
    reserved: parseReserved(raw.reserved),
    routes: parseRoutes(raw.routes),
    dataDir,
  };
}
