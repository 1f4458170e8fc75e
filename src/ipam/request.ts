// Where a CNI request can ask for specific addresses, as host-local reads them: CNI_ARGS `IP=`
// (comma-separated), the `ips` capability (runtimeConfig.ips) and `args.cni.ips`.
import { canonicalIp } from './ip';
import { IpamError } from './errors';

export interface IpRequestSources {
  /** The raw CNI_ARGS value, `K=V;K=V`. */
  cniArgs?: string;
  /** The network config's `runtimeConfig`. */
  runtimeConfig?: unknown;
  /** The network config's `args`. */
  args?: unknown;
}

function stringList(v: unknown, field: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) {
    throw new IpamError('invalid', `${field} must be a list of IP addresses`);
  }
  return v as string[];
}

function get(o: unknown, ...keys: string[]): unknown {
  for (const k of keys) {
    if (typeof o !== 'object' || o === null) return undefined;
    o = (o as Record<string, unknown>)[k];
  }
  return o;
}

/** The requested addresses in canonical form, duplicates removed; prefixes are dropped. */
export function requestedIps(src: IpRequestSources): string[] {
  const raw: Array<[string, string]> = [];
  for (const kv of (src.cniArgs ?? '').split(';')) {
    const eq = kv.indexOf('=');
    if (eq > 0 && kv.slice(0, eq) === 'IP') {
      for (const ip of kv.slice(eq + 1).split(',')) if (ip) raw.push([ip, 'CNI_ARGS IP']);
    }
  }
  for (const ip of stringList(get(src.runtimeConfig, 'ips'), 'runtimeConfig.ips')) raw.push([ip, 'runtimeConfig.ips']);
  for (const ip of stringList(get(src.args, 'cni', 'ips'), 'args.cni.ips')) raw.push([ip, 'args.cni.ips']);
  const out = new Set<string>();
  for (const [text, field] of raw) {
    const ip = canonicalIp(text.trim().split('/')[0]);
    if (!ip) throw new IpamError('invalid', `${field}: ${JSON.stringify(text)} is not an IP address`);
    out.add(ip);
  }
  return [...out];
}
