// Network fields shared by the kinds: protocols, port numbers and names, addresses and CIDRs.
//
// Addresses and CIDRs are parsed strictly (src/ipam/ip.ts: no leading zeros, no zones) and kept in
// canonical text, so that two spellings of one address are one key in every map kelp builds.
// The API server's legacy fields still accept `010.0.0.1`-style octets; kelp rejects them rather
// than guess whether they are decimal or octal.
import { Cidr, cidrToString, ipToString, IpFamily, networkAddress, tryParseCidr, tryParseIp } from '../../ipam/ip';
import { expectInteger, expectString, fail, Json, optEnum } from './meta';

export const PROTOCOLS = ['TCP', 'UDP', 'SCTP'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

/** A port's protocol; Kubernetes defaults it to TCP. */
export function protocolOf(v: Json, field: string): Protocol {
  return optEnum(v, field, PROTOCOLS) ?? 'TCP';
}

export function portNumber(v: Json, field: string): number {
  return expectInteger(v, field, 1, 65535);
}

/**
 * IANA_SVC_NAME (RFC 6335), the rule for a container port's name and for a port referred to by
 * name (a Service's targetPort, a NetworkPolicy port).
 */
export function portNameProblem(s: string): string | undefined {
  const q = JSON.stringify(s);
  if (s.length === 0 || s.length > 15) return `port name ${q} must be 1 to 15 characters`;
  if (!/^[-a-z0-9]+$/.test(s)) return `port name ${q} must contain only a-z, 0-9 and '-'`;
  if (!/[a-z]/.test(s)) return `port name ${q} must contain at least one letter (a-z)`;
  if (s.includes('--')) return `port name ${q} must not contain consecutive hyphens`;
  if (s.startsWith('-') || s.endsWith('-')) return `port name ${q} must not begin or end with a hyphen`;
  return undefined;
}

export function checkPortName(s: string, field: string): string {
  const problem = portNameProblem(s);
  if (problem) fail(field, problem);
  return s;
}

/** An int-or-string port: a number 1..65535, or an IANA_SVC_NAME naming a container port. */
export function portNumberOrName(v: Json, field: string): number | string {
  if (typeof v === 'string') return checkPortName(v, field);
  return portNumber(v, field);
}

/**
 * An IPv4 address in the strict dotted form tryParseIp accepts (four decimal octets, no leading
 * zeros), as a number; undefined for anything else. Such text is already canonical. A bulk apply
 * validates ~40,000 addresses: this costs ~0.1 µs each, the BigInt parse and re-print ~2 µs.
 */
function strictIpv4(s: string): number | undefined {
  let v = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || ++dots > 3) return undefined;
      v = v * 256 + octet;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return undefined; // a leading zero
      octet = octet * 10 + (c - 48);
      if (++digits > 3 || octet > 255) return undefined;
    } else {
      return undefined;
    }
  }
  if (dots !== 3 || digits === 0) return undefined;
  return v * 256 + octet;
}

export function parseIpField(v: Json, field: string): { text: string; family: IpFamily; value: bigint } {
  const s = expectString(v, field);
  const v4 = strictIpv4(s);
  if (v4 !== undefined) return { text: s, family: 4, value: BigInt(v4) };
  const ip = tryParseIp(s);
  if (!ip) fail(field, `${JSON.stringify(s)} must be a valid IP address`);
  return { text: ipToString(ip), family: ip.family, value: ip.value };
}

/** An IP address, in canonical text. */
export function ipField(v: Json, field: string): string {
  return parseIpField(v, field).text;
}

/**
 * An address that may be routed to: not unspecified, loopback or link-local (unicast or
 * multicast), as the API server requires of external IPs and endpoint addresses.
 */
export function nonSpecialIpField(v: Json, field: string, family?: IpFamily): string {
  const v4 = typeof v === 'string' ? strictIpv4(v) : undefined;
  if (v4 !== undefined && family !== 6) {
    // The IPv4 checks below on a number, without a BigInt.
    const q = () => JSON.stringify(v);
    if (v4 === 0) fail(field, `${q()} may not be unspecified (0.0.0.0, ::)`);
    if (v4 >>> 24 === 127) fail(field, `${q()} may not be in the loopback range (127.0.0.0/8, ::1/128)`);
    if (v4 >>> 16 === 0xa9fe) fail(field, `${q()} may not be in the link-local range (169.254.0.0/16, fe80::/10)`);
    if (v4 >>> 8 === 0xe00000) fail(field, `${q()} may not be in the link-local multicast range (224.0.0.0/24, ffx2::/16)`);
    return v as string;
  }
  const ip = parseIpField(v, field);
  if (family !== undefined && ip.family !== family) fail(field, `${JSON.stringify(ip.text)} must be an IPv${family} address`);
  const q = JSON.stringify(ip.text);
  const bits = ip.family === 4 ? 32n : 128n;
  const top = (n: bigint) => ip.value >> (bits - n);
  if (ip.value === 0n) fail(field, `${q} may not be unspecified (0.0.0.0, ::)`);
  if (ip.family === 4 ? top(8n) === 127n : ip.value === 1n) fail(field, `${q} may not be in the loopback range (127.0.0.0/8, ::1/128)`);
  if (ip.family === 4 ? top(16n) === 0xa9fen : top(10n) === 0x3fan) fail(field, `${q} may not be in the link-local range (169.254.0.0/16, fe80::/10)`);
  // IPv6 link-local multicast is ff02::/16 with any flags nibble (ff12::, ff32::, …), as Go reads it.
  if (ip.family === 4 ? top(24n) === 0xe00000n : (top(16n) & 0xff0fn) === 0xff02n) {
    fail(field, `${q} may not be in the link-local multicast range (224.0.0.0/24, ffx2::/16)`);
  }
  return ip.text;
}

export function parseCidrField(v: Json, field: string): Cidr {
  const s = expectString(v, field).trim();
  const c = tryParseCidr(s);
  if (!c) fail(field, `${JSON.stringify(s)} must be a valid CIDR (address/prefix length)`);
  return { family: c.family, address: networkAddress(c).value, prefix: c.prefix };
}

/**
 * A CIDR in canonical text, host bits cleared: `10.0.0.7/24` means 10.0.0.0/24, as Go's
 * ParseCIDR (which the API server validates with) reads it.
 */
export function cidrField(v: Json, field: string): string {
  return cidrToString(parseCidrField(v, field));
}

/**
 * A dual-stack list (pod IPs, pod CIDRs, cluster IPs): at most one entry per IP family (which
 * also rules out duplicates). `familyOf` reads an entry's family; entries are already valid.
 */
export function checkDualStack(list: readonly string[], field: string, what: string, familyOf: (s: string) => IpFamily): void {
  if (list.length > 2 || (list.length === 2 && familyOf(list[0]) === familyOf(list[1]))) {
    fail(field, `may specify no more than one ${what} for each IP family, got ${list.join(', ')}`);
  }
}

export const ipFamilyOf = (s: string): IpFamily => tryParseIp(s)!.family;
export const cidrFamilyOf = (s: string): IpFamily => tryParseCidr(s)!.family;
