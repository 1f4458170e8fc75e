// IP address and CIDR parsing and arithmetic for all of kelp (IPAM, CNI documents, netlink,
// datapath keys). Addresses are bigints so that the same code serves IPv4 and IPv6; strings are
// only produced at the edges (configs, results, file names). Text forms are strict: no zones, no
// leading zeros, as Go's net.ParseIP/ParseCIDR in the CNI reference plugins.

export type IpFamily = 4 | 6;

export interface IpAddress {
  family: IpFamily;
  value: bigint;
}

/** An address with a prefix length, as written: `10.244.0.5/24` keeps the host bits. */
export interface Cidr {
  family: IpFamily;
  address: bigint;
  prefix: number;
}

export function familyBits(family: IpFamily): number {
  return family === 4 ? 32 : 128;
}

function allOnes(bits: number): bigint {
  return (1n << BigInt(bits)) - 1n;
}

function parseIpv4(s: string): bigint | undefined {
  const parts = s.split('.');
  if (parts.length !== 4) return undefined;
  let v = 0n;
  for (const p of parts) {
    // Leading zeros are rejected because some parsers read them as octal.
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
    const n = Number(p);
    if (n > 255) return undefined;
    v = (v << 8n) | BigInt(n);
  }
  return v;
}

function parseIpv6(s: string): bigint | undefined {
  let groups: number[] = [];
  let tail = s;
  // An embedded IPv4 suffix (::ffff:1.2.3.4) stands for the last two groups.
  const lastColon = s.lastIndexOf(':');
  if (lastColon >= 0 && s.indexOf('.', lastColon) >= 0) {
    const v4 = parseIpv4(s.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    tail = s.slice(0, lastColon + 1) + '0:0';
    groups = [Number(v4 >> 16n), Number(v4 & 0xffffn)];
  }
  const halves = tail.split('::');
  if (halves.length > 2) return undefined;
  const parseGroups = (h: string): number[] | undefined => {
    if (h === '') return [];
    const out: number[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const head = parseGroups(halves[0]);
  const rest = halves.length === 2 ? parseGroups(halves[1]) : [];
  if (!head || !rest) return undefined;
  let all: number[];
  if (halves.length === 2) {
    const missing = 8 - head.length - rest.length;
    if (missing < 1) return undefined;
    all = [...head, ...new Array<number>(missing).fill(0), ...rest];
  } else {
    all = head;
  }
  if (all.length !== 8) return undefined;
  if (groups.length) all.splice(6, 2, ...groups);
  return all.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

export function tryParseIp(s: string): IpAddress | undefined {
  if (typeof s !== 'string') return undefined;
  if (s.includes(':')) {
    const v = parseIpv6(s);
    return v === undefined ? undefined : { family: 6, value: v };
  }
  const v = parseIpv4(s);
  return v === undefined ? undefined : { family: 4, value: v };
}

export function parseIp(s: string): IpAddress {
  const ip = tryParseIp(s);
  if (!ip) throw new TypeError(`invalid IP address ${JSON.stringify(s)}`);
  return ip;
}

/** 4 or 6 for an address literal (no prefix, no zone), else undefined. */
export function ipFamily(s: string): IpFamily | undefined {
  return tryParseIp(s)?.family;
}

export function tryParseCidr(s: string): Cidr | undefined {
  if (typeof s !== 'string') return undefined;
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = tryParseIp(s.slice(0, slash));
  const p = s.slice(slash + 1);
  if (!ip || !/^(0|[1-9][0-9]{0,2})$/.test(p)) return undefined;
  const prefix = Number(p);
  if (prefix > familyBits(ip.family)) return undefined;
  return { family: ip.family, address: ip.value, prefix };
}

export function parseCidr(s: string): Cidr {
  const c = tryParseCidr(s);
  if (!c) throw new TypeError(`invalid CIDR ${JSON.stringify(s)}`);
  return c;
}

/** An address with an optional prefix length, as CNI_ARGS `IP=` and the `ips` capability carry
 * them; a bare address is a host prefix (/32, /128). Undefined when invalid. */
export function parseIpOrCidr(s: string): Cidr | undefined {
  if (typeof s === 'string' && s.includes('/')) return tryParseCidr(s);
  const ip = tryParseIp(s);
  return ip && { family: ip.family, address: ip.value, prefix: familyBits(ip.family) };
}

export function ipToString(ip: IpAddress): string {
  if (ip.family === 4) {
    const v = ip.value;
    return [24n, 16n, 8n, 0n].map((sh) => String((v >> sh) & 0xffn)).join('.');
  }
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((ip.value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (at least two) of zero groups, the first on ties.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

export function cidrToString(c: Cidr): string {
  return `${ipToString({ family: c.family, value: c.address })}/${c.prefix}`;
}

function hostMask(c: Cidr): bigint {
  return allOnes(familyBits(c.family) - c.prefix);
}

/** The first address of the prefix (host bits cleared). */
export function networkAddress(c: Cidr): IpAddress {
  return { family: c.family, value: c.address & ~hostMask(c) };
}

/** The last address of the prefix (host bits set); for IPv6 this is just the last address. */
export function broadcastAddress(c: Cidr): IpAddress {
  return { family: c.family, value: c.address | hostMask(c) };
}

export function cidrContains(c: Cidr, ip: IpAddress): boolean {
  return ip.family === c.family && (ip.value & ~hostMask(c)) === networkAddress(c).value;
}

/** Every address of `inner` is in `outer`. */
export function cidrCovers(outer: Cidr, inner: Cidr): boolean {
  return inner.prefix >= outer.prefix && cidrContains(outer, networkAddress(inner));
}

/** Number of addresses in the prefix. */
export function cidrSize(c: Cidr): bigint {
  return 1n << BigInt(familyBits(c.family) - c.prefix);
}

/** ip + n; throws when the result leaves the family's address space. */
export function ipOffset(ip: IpAddress, n: bigint | number): IpAddress {
  const value = ip.value + BigInt(n);
  if (value < 0n || value > allOnes(familyBits(ip.family))) {
    throw new RangeError(`${ipToString(ip)} + ${n} is outside the IPv${ip.family} address space`);
  }
  return { family: ip.family, value };
}

export function compareIp(a: IpAddress, b: IpAddress): number {
  if (a.family !== b.family) return a.family - b.family;
  return a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
}

export function ipEquals(a: IpAddress, b: IpAddress): boolean {
  return a.family === b.family && a.value === b.value;
}

/** Network byte order, 4 or 16 bytes, as BPF map keys want it. */
export function ipToBytes(ip: IpAddress): Buffer {
  const len = familyBits(ip.family) / 8;
  const buf = Buffer.alloc(len);
  let v = ip.value;
  for (let i = len - 1; i >= 0; i--) {
    buf[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return buf;
}

export function ipFromBytes(buf: Uint8Array): IpAddress {
  if (buf.length !== 4 && buf.length !== 16) {
    throw new TypeError(`an IP address is 4 or 16 bytes, got ${buf.length}`);
  }
  let v = 0n;
  for (const b of buf) v = (v << 8n) | BigInt(b);
  return { family: buf.length === 4 ? 4 : 6, value: v };
}

/** Canonical text form of an address string (`fd00:0::1` → `fd00::1`), or undefined if invalid. */
export function canonicalIp(s: string): string | undefined {
  const ip = tryParseIp(s);
  return ip && ipToString(ip);
}
