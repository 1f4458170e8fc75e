// Just enough IP address arithmetic to validate CNI documents (no I/O).
import { isIP } from 'node:net';

export type Family = 4 | 6;

/** 4 or 6 for a literal address without zone or prefix, else undefined. */
export function ipFamily(s: string): Family | undefined {
  if (s.includes('%')) return undefined;
  const f = isIP(s);
  return f === 4 || f === 6 ? f : undefined;
}

export interface Cidr {
  /** The address as written (may have host bits set, like "10.0.0.5/24" in a result). */
  ip: string;
  prefix: number;
  family: Family;
}

export function parseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = s.slice(0, slash);
  const bits = s.slice(slash + 1);
  const family = ipFamily(ip);
  if (family === undefined || !/^\d{1,3}$/.test(bits)) return undefined;
  const prefix = Number(bits);
  if (prefix > (family === 4 ? 32 : 128)) return undefined;
  return { ip, prefix, family };
}

/** An address with an optional prefix, as in CNI_ARGS `IP=` and the `ips` capability. */
export function parseIpOrCidr(s: string): Cidr | undefined {
  if (s.includes('/')) return parseCidr(s);
  const family = ipFamily(s);
  return family === undefined ? undefined : { ip: s, prefix: family === 4 ? 32 : 128, family };
}

export function ipToBigInt(ip: string): bigint {
  const family = ipFamily(ip);
  if (family === 4) return ip.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n);
  if (family !== 6) throw new Error(`not an IP address: ${ip}`);
  // Embedded IPv4 ("::ffff:10.0.0.1") stands for the last two groups.
  const groupsOf = (part: string): number[] =>
    part === ''
      ? []
      : part.split(':').flatMap((g) => {
          if (!g.includes('.')) return [parseInt(g, 16)];
          const v4 = Number(ipToBigInt(g));
          return [v4 >>> 16, v4 & 0xffff];
        });
  const [head, tail] = ip.split('::') as [string, string | undefined];
  const left = groupsOf(head);
  const right = tail === undefined ? [] : groupsOf(tail);
  const groups = [...left, ...Array<number>(8 - left.length - right.length).fill(0), ...right];
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
}

/** Whether `ip` lies in the network `cidr` (host bits of the CIDR are ignored). */
export function cidrContains(cidr: Cidr, ip: string): boolean {
  const family = ipFamily(ip);
  if (family !== cidr.family) return false;
  const width = family === 4 ? 32n : 128n;
  const hostBits = width - BigInt(cidr.prefix);
  return ipToBigInt(ip) >> hostBits === ipToBigInt(cidr.ip) >> hostBits;
}
