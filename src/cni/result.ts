// One internal result model, read from and written to every CNI result format
// (SPEC §5 "ADD Success"; Go types in containernetworking/cni pkg/types/{020,040,100}).
import { tryParseCidr } from '../ipam/ip';
import { CniCode, CniError } from './errors';
import { Check } from './fields';

export interface CniInterface {
  name: string;
  mac?: string;
  /** 1.x only, like socketPath and pciID. */
  mtu?: number;
  /** Path of the netns for container-side interfaces; absent for host-side ones. */
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}

export interface CniIpConfig {
  /** Address with prefix length, e.g. "10.22.0.5/24". */
  address: string;
  gateway?: string;
  /** Index into `interfaces`. */
  interface?: number;
}

export interface CniRoute {
  dst: string;
  gw?: string;
  /** The rest are 1.x only. */
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface CniDns {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

export interface CniResult {
  interfaces: CniInterface[];
  ips: CniIpConfig[];
  routes: CniRoute[];
  dns: CniDns;
}

export function emptyResult(): CniResult {
  return { interfaces: [], ips: [], routes: [], dns: {} };
}

type Json = Record<string, unknown>;

/** Copies the defined entries only, so absent fields stay absent in the JSON. */
function defined(o: Json): Json {
  const out: Json = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return out;
}

function nonEmpty<T>(list: T[] | undefined): T[] | undefined {
  return list !== undefined && list.length > 0 ? list : undefined;
}

function dnsJson(dns: CniDns): Json | undefined {
  const out = defined({
    nameservers: nonEmpty(dns.nameservers),
    domain: dns.domain === '' ? undefined : dns.domain,
    search: nonEmpty(dns.search),
    options: nonEmpty(dns.options),
  });
  return Object.keys(out).length > 0 ? out : undefined;
}

function family(address: string): 4 | 6 {
  const cidr = tryParseCidr(address);
  if (cidr === undefined) throw new CniError(CniCode.Internal, 'invalid result', `ips address "${address}" is not a CIDR`);
  return cidr.family;
}

// The result layout of each version: 0.1.0/0.2.0 `ip4`/`ip6`, 0.3.x/0.4.0 `ips[].version`, 1.x neither.
const LAYOUT: Readonly<Record<string, 'legacy' | 'v04' | 'v1'>> = {
  '0.1.0': 'legacy',
  '0.2.0': 'legacy',
  '0.3.0': 'v04',
  '0.3.1': 'v04',
  '0.4.0': 'v04',
  '1.0.0': 'v1',
  '1.1.0': 'v1',
};

function layout(cniVersion: string): 'legacy' | 'v04' | 'v1' {
  const l = LAYOUT[cniVersion];
  if (l === undefined) {
    throw new CniError(CniCode.IncompatibleVersion, 'incompatible CNI versions', `no result format for cniVersion "${cniVersion}"`);
  }
  return l;
}

/** The result document for `cniVersion`, ready for JSON.stringify. */
export function formatResult(result: CniResult, cniVersion: string): Json {
  const l = layout(cniVersion);
  if (l === 'legacy') return formatLegacy(result, cniVersion);
  const v1 = l === 'v1';
  return defined({
    cniVersion,
    interfaces: nonEmpty(
      result.interfaces.map((i) =>
        defined({
          name: i.name,
          mac: i.mac || undefined,
          mtu: v1 && i.mtu ? i.mtu : undefined,
          sandbox: i.sandbox || undefined,
          socketPath: v1 && i.socketPath ? i.socketPath : undefined,
          pciID: v1 && i.pciID ? i.pciID : undefined,
        }),
      ),
    ),
    ips: nonEmpty(
      result.ips.map((ip) =>
        defined({
          // 0.3.0–0.4.0 carry the family as a string; 1.0.0 dropped it.
          version: v1 ? undefined : String(family(ip.address)),
          interface: ip.interface,
          address: ip.address,
          gateway: ip.gateway || undefined,
        }),
      ),
    ),
    routes: nonEmpty(result.routes.map((r) => routeJson(r, v1))),
    dns: dnsJson(result.dns),
  });
}

function routeJson(r: CniRoute, v1: boolean): Json {
  const extra = v1 ? { mtu: r.mtu, advmss: r.advmss, priority: r.priority, table: r.table, scope: r.scope } : {};
  return defined({ dst: r.dst, gw: r.gw || undefined, ...extra });
}

// 0.1.0/0.2.0 have room for one IPv4 and one IPv6 address and no interfaces (Go's convertTo02x).
function formatLegacy(result: CniResult, cniVersion: string): Json {
  const byFamily = new Map<4 | 6, Json>();
  for (const ip of result.ips) {
    const f = family(ip.address);
    if (!byFamily.has(f)) byFamily.set(f, defined({ ip: ip.address, gateway: ip.gateway || undefined }));
  }
  if (byFamily.size === 0) {
    throw new CniError(CniCode.IncompatibleVersion, `cannot convert result to ${cniVersion}`, 'no valid IP addresses');
  }
  for (const r of result.routes) {
    const target = byFamily.get(family(r.dst));
    if (target === undefined) continue;
    target.routes = [...((target.routes as Json[] | undefined) ?? []), defined({ dst: r.dst, gw: r.gw || undefined })];
  }
  return defined({ cniVersion, ip4: byFamily.get(4), ip6: byFamily.get(6), dns: dnsJson(result.dns) });
}

/**
 * Reads a result (a `prevResult`, or a delegated plugin's answer) into the model. The document
 * is read as the config's version, whatever its own `cniVersion` says or when it has none
 * (libcni converts cached results to the list's version before passing them on). Failures are
 * code 6 and name the field under `path`.
 */
export function parseResult(raw: unknown, cniVersion: string, path = 'prevResult'): CniResult {
  const c = new Check(CniCode.DecodeFailure);
  const doc = c.record(raw, path);
  const legacyShape = (doc.ip4 !== undefined || doc.ip6 !== undefined) && doc.ips === undefined;
  if (cniVersion === '0.1.0' || cniVersion === '0.2.0' || legacyShape) return parseLegacy(doc, c, path);

  const interfaces = (c.optArray(doc.interfaces, `${path}.interfaces`) ?? []).map((item, i) => {
    const p = `${path}.interfaces[${i}]`;
    const o = c.record(item, p);
    const iface: CniInterface = {
      name: c.optString(o.name, `${p}.name`) ?? '',
      mac: c.optNonEmpty(o.mac, `${p}.mac`),
      mtu: c.optInt(o.mtu, `${p}.mtu`, 0) || undefined,
      sandbox: c.optNonEmpty(o.sandbox, `${p}.sandbox`),
      socketPath: c.optNonEmpty(o.socketPath, `${p}.socketPath`),
      pciID: c.optNonEmpty(o.pciID, `${p}.pciID`),
    };
    return iface;
  });
  const ips = (c.optArray(doc.ips, `${path}.ips`) ?? []).map((item, i) => {
    const p = `${path}.ips[${i}]`;
    const o = c.record(item, p);
    const index = c.optInt(o.interface, `${p}.interface`);
    const ip: CniIpConfig = {
      address: c.cidr(o.address, `${p}.address`),
      gateway: c.optIp(o.gateway, `${p}.gateway`),
      // Older plugins wrote -1 for "no interface" (Documentation/spec-upgrades.md).
      interface: index !== undefined && index >= 0 ? index : undefined,
    };
    return ip;
  });
  const routes = (c.optArray(doc.routes, `${path}.routes`) ?? []).map((item, i) => parseRoute(item, c, `${path}.routes[${i}]`));
  return { interfaces, ips, routes, dns: parseDns(doc.dns, c, `${path}.dns`) };
}

function parseRoute(item: unknown, c: Check, p: string): CniRoute {
  const o = c.record(item, p);
  return {
    dst: c.cidr(o.dst, `${p}.dst`),
    gw: c.optIp(o.gw, `${p}.gw`),
    mtu: c.optInt(o.mtu, `${p}.mtu`, 0) || undefined,
    advmss: c.optInt(o.advmss, `${p}.advmss`, 0) || undefined,
    priority: c.optInt(o.priority, `${p}.priority`, 0) || undefined,
    // 0 is a real table and scope (Go keeps them as *int), so only absence is dropped.
    table: c.optInt(o.table, `${p}.table`, 0),
    scope: c.optInt(o.scope, `${p}.scope`, 0, 255),
  };
}

/** `dns` of a result or of a network config; `{}`, null and absence all mean "none". */
export function parseDns(raw: unknown, c: Check, path: string): CniDns {
  const o = c.optRecord(raw, path);
  if (o === undefined) return {};
  return {
    nameservers: c.optStringArray(o.nameservers, `${path}.nameservers`),
    domain: c.optNonEmpty(o.domain, `${path}.domain`),
    search: c.optStringArray(o.search, `${path}.search`),
    options: c.optStringArray(o.options, `${path}.options`),
  };
}

function parseLegacy(doc: Json, c: Check, path: string): CniResult {
  const result = emptyResult();
  for (const key of ['ip4', 'ip6'] as const) {
    const p = `${path}.${key}`;
    const o = c.optRecord(doc[key], p);
    if (o === undefined) continue;
    result.ips.push({ address: c.cidr(o.ip, `${p}.ip`), gateway: c.optIp(o.gateway, `${p}.gateway`) });
    (c.optArray(o.routes, `${p}.routes`) ?? []).forEach((r, i) => result.routes.push(parseRoute(r, c, `${p}.routes[${i}]`)));
  }
  result.dns = parseDns(doc.dns, c, `${path}.dns`);
  return result;
}
