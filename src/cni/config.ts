// The network configuration a runtime writes on stdin (SPEC §1, §3; CONVENTIONS for
// runtimeConfig and args). Unknown top-level keys are ignored for forward compatibility.
import { cidrContains, compareIp, ipFamily, parseCidr, parseIp, parseIpOrCidr } from '../ipam/ip';
import { CniCode, CniError } from './errors';
import { Check, isRecord } from './fields';
import { CniDns, CniResult, parseDns, parseResult } from './result';
import { ID_PATTERN } from './env';
import { IMPLICIT_VERSION, requireSupportedVersion } from './version';

export interface IpamRange {
  subnet: string;
  rangeStart?: string;
  rangeEnd?: string;
  gateway?: string;
}

/** One address is allocated per range set, from any of its ranges. */
export type IpamRangeSet = IpamRange[];

export interface IpamRoute {
  dst: string;
  gw?: string;
}

/** `ipam` in host-local's shape; the top-level `subnet` form becomes the first range set. */
export interface IpamConfig {
  type: string;
  ranges: IpamRangeSet[];
  routes: IpamRoute[];
  dataDir?: string;
  resolvConf?: string;
  /** The section as written, for keys kelp does not interpret. */
  raw: Record<string, unknown>;
}

export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: 'tcp' | 'udp' | 'sctp';
  hostIP?: string;
}

/** Bits per second and bits. containerd sends 0 for unset rates and 4294967295 for unset bursts. */
export interface Bandwidth {
  ingressRate?: number;
  ingressBurst?: number;
  egressRate?: number;
  egressBurst?: number;
}

/** The `dns` capability (note: not the result's nameservers/search names). */
export interface RuntimeDns {
  servers?: string[];
  searches?: string[];
  options?: string[];
}

export interface RuntimeConfig {
  portMappings?: PortMapping[];
  ipRanges?: IpamRangeSet[];
  bandwidth?: Bandwidth;
  dns?: RuntimeDns;
  ips?: string[];
  mac?: string;
  cgroupPath?: string;
  /** The whole section with well-known keys normalised to their lowerCamel spelling. */
  raw: Record<string, unknown>;
}

export interface Attachment {
  containerID: string;
  ifname: string;
}

export interface NetConf {
  cniVersion: string;
  name: string;
  type: string;
  mtu?: number;
  ipMasq?: boolean;
  isGateway?: boolean;
  isDefaultGateway?: boolean;
  hairpinMode?: boolean;
  agentSocket?: string;
  /**
   * How kelp hooks its programs to the pod's host veth: 'clsact' (default) or 'tcx'. tcx leaves
   * tc's ingress qdisc free for plugins that need one (bandwidth's egress shaping), at ~25 ms
   * more per ADD (each tcx attach waits for an RCU grace period).
   */
  podHook?: 'clsact' | 'tcx';
  /**
   * The seeds' VXLAN fields (flannel's VXLAN plugin: vxlanId, port, directRouting). Routing to
   * other nodes is the node's, not a pod's: the agent's flags set it (--vxlan-id, --vxlan-port,
   * --routing-mode), the conflist it installs states them, and an ADD whose config says
   * otherwise is refused. `gbp: true` is refused here (docs/nodes.md).
   */
  vxlanId?: number;
  port?: number;
  directRouting?: boolean;
  ipam?: IpamConfig;
  dns: CniDns;
  runtimeConfig: RuntimeConfig;
  prevResult?: CniResult;
  /** `args.cni.ips` and `args.cni.labels` when well-formed; `args` never causes an error. */
  argsIps?: string[];
  argsLabels?: { key: string; value: string }[];
  capabilities: Record<string, boolean>;
  /** GC only: attachments to keep. Undefined when the runtime sent no list: delete nothing. */
  validAttachments?: Attachment[];
  /** The whole document as parsed. */
  raw: Record<string, unknown>;
}

const check: Check = new Check(CniCode.InvalidConfig);
// sizeof(sockaddr_un.sun_path) including the terminating NUL.
const SUN_PATH_MAX = 108;

/**
 * stdin as a JSON object; anything else (including empty stdin) is code 6, carrying the
 * config's cniVersion to answer in when it can be read (readableVersion).
 */
export function decodeConfig(stdin: Buffer): Record<string, unknown> {
  const text = stdin.toString('utf8');
  if (text.trim() === '') throw new CniError(CniCode.DecodeFailure, 'cannot decode network config', 'stdin is empty');
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new CniError(CniCode.DecodeFailure, 'cannot decode network config', (e as Error).message, readableVersion(text));
  }
  if (!isRecord(doc)) throw new CniError(CniCode.DecodeFailure, 'cannot decode network config', 'not a JSON object');
  return doc;
}

const WS = /[ \t\n\r]*/y;
const STRING = /"(?:[^"\\\u0000-\u001f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"/y;
const SCALAR = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null/y;

/**
 * The cniVersion of a document JSON.parse refused, as kelp-cni reads it (native/cni/kelp-cni.c
 * json_inspect): the last top-level string member "cniVersion", non-empty, among the members
 * complete and well-formed before the first syntax error.
 */
export function readableVersion(text: string): string | undefined {
  let pos = 0;
  const match = (re: RegExp): string | undefined => {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (m) pos = re.lastIndex;
    return m?.[0];
  };
  /** The extent of the value at pos, found by bracket depth over strings; JSON.parse judges it. */
  const value = (): string | undefined => {
    const start = pos;
    if (text[pos] !== '{' && text[pos] !== '[') {
      if (match(STRING) === undefined && match(SCALAR) === undefined) return undefined;
    } else {
      let depth = 0;
      do {
        if (text[pos] === '"') {
          if (match(STRING) === undefined) return undefined;
          continue;
        }
        if (pos >= text.length) return undefined;
        if (text[pos] === '{' || text[pos] === '[') depth++;
        else if (text[pos] === '}' || text[pos] === ']') depth--;
        pos++;
      } while (depth > 0);
    }
    try {
      JSON.parse(text.slice(start, pos));
      return text.slice(start, pos);
    } catch {
      return undefined;
    }
  };
  let found: string | undefined;
  match(WS);
  if (text[pos] !== '{') return undefined;
  pos++;
  for (;;) {
    match(WS);
    const key = match(STRING);
    match(WS);
    if (key === undefined || text[pos] !== ':') return found;
    pos++;
    match(WS);
    const v = value();
    if (v === undefined) return found;
    if (JSON.parse(key) === 'cniVersion') {
      const version: unknown = JSON.parse(v);
      found = typeof version === 'string' && version !== '' ? version : undefined;
    }
    match(WS);
    if (text[pos] !== ',') return found;
    pos++;
  }
}

/** The cniVersion to answer in: the config's when it has a usable one, else `fallback`. */
export function peekVersion(doc: Record<string, unknown> | undefined, fallback: string): string {
  const v = doc?.cniVersion;
  return typeof v === 'string' && v !== '' ? v : fallback;
}

/** VXLAN-GBP would carry a sender's identity in the packet; kelp looks it up (docs/nodes.md). */
function refuseGbp(v: unknown): void {
  if (check.optBool(v, 'gbp') !== true) return;
  throw new CniError(
    CniCode.InvalidConfig,
    'invalid gbp',
    'VXLAN-GBP is not supported: kelp carries no identity in packets, the receiving node looks the sender up in its ip cache (identities are per node, so a group ID in the packet would mean nothing there)',
  );
}

function parsePodHook(v: unknown): 'clsact' | 'tcx' | undefined {
  const s = check.optString(v, 'podHook');
  if (s !== undefined && s !== 'clsact' && s !== 'tcx') check.fail('podHook', '"clsact" or "tcx"', s);
  return s as 'clsact' | 'tcx' | undefined;
}

export function parseConfig(doc: Record<string, unknown>): NetConf {
  const rawVersion = check.optString(doc.cniVersion, 'cniVersion');
  const cniVersion = rawVersion === undefined || rawVersion === '' ? IMPLICIT_VERSION : rawVersion;
  requireSupportedVersion(cniVersion);

  const name = check.optString(doc.name, 'name');
  if (name === undefined || name === '') throw new CniError(CniCode.InvalidConfig, 'missing network name');
  if (!ID_PATTERN.test(name)) {
    check.fail('name', 'a letter or digit followed by letters, digits, "_", "." or "-"', name);
  }
  const type = check.optString(doc.type, 'type');
  if (type === undefined || type === '') throw new CniError(CniCode.InvalidConfig, 'missing plugin type');

  const agentSocket = check.optString(doc.agentSocket, 'agentSocket');
  if (agentSocket !== undefined && (!agentSocket.startsWith('/') || Buffer.byteLength(agentSocket) >= SUN_PATH_MAX)) {
    check.fail('agentSocket', `an absolute path shorter than ${SUN_PATH_MAX} bytes`, agentSocket);
  }
  const conf: NetConf = {
    cniVersion,
    name,
    type,
    mtu: check.optInt(doc.mtu, 'mtu', 68, 65535),
    ipMasq: check.optBool(doc.ipMasq, 'ipMasq'),
    isGateway: check.optBool(doc.isGateway, 'isGateway'),
    isDefaultGateway: check.optBool(doc.isDefaultGateway, 'isDefaultGateway'),
    hairpinMode: check.optBool(doc.hairpinMode, 'hairpinMode'),
    agentSocket,
    podHook: parsePodHook(doc.podHook),
    vxlanId: check.optInt(doc.vxlanId, 'vxlanId', 1, 0xffffff),
    port: check.optInt(doc.port, 'port', 1, 65535),
    directRouting: check.optBool(doc.directRouting, 'directRouting'),
    ipam: parseIpam(doc.ipam),
    dns: parseDns(doc.dns, check, 'dns'),
    runtimeConfig: parseRuntimeConfig(doc.runtimeConfig),
    prevResult: check.absent(doc.prevResult) ? undefined : parseResult(doc.prevResult, cniVersion, 'prevResult'),
    capabilities: parseCapabilities(doc.capabilities),
    validAttachments: parseAttachments(doc),
    raw: doc,
  };
  refuseGbp(doc.gbp);
  parseArgs(doc.args, conf);
  return conf;
}

function parseRange(v: unknown, path: string): IpamRange {
  const o = check.record(v, path);
  const subnet = check.cidr(o.subnet, `${path}.subnet`);
  const net = parseCidr(subnet);
  const inSubnet = (key: 'rangeStart' | 'rangeEnd'): string | undefined => {
    const ip = check.optIp(o[key], `${path}.${key}`);
    if (ip !== undefined && !cidrContains(net, parseIp(ip))) check.fail(`${path}.${key}`, `an address inside ${subnet}`, ip);
    return ip;
  };
  const range: IpamRange = { subnet, rangeStart: inSubnet('rangeStart'), rangeEnd: inSubnet('rangeEnd') };
  if (range.rangeStart !== undefined && range.rangeEnd !== undefined && compareIp(parseIp(range.rangeStart), parseIp(range.rangeEnd)) > 0) {
    check.fail(`${path}.rangeEnd`, `not below rangeStart ${range.rangeStart}`, range.rangeEnd);
  }
  // A gateway outside the subnet is legitimate (e.g. a link-local next hop for /32 pod addresses).
  range.gateway = check.optIp(o.gateway, `${path}.gateway`);
  if (range.gateway !== undefined && ipFamily(range.gateway) !== net.family) {
    check.fail(`${path}.gateway`, `an IPv${net.family} address like the subnet`, range.gateway);
  }
  return range;
}

function parseRangeSets(v: unknown, path: string): IpamRangeSet[] {
  return check.array(v, path).map((set, i) => {
    const ranges = check.array(set, `${path}[${i}]`).map((r, j) => parseRange(r, `${path}[${i}][${j}]`));
    if (ranges.length === 0) check.fail(`${path}[${i}]`, 'a non-empty list of ranges', set);
    const families = new Set(ranges.map((r) => parseCidr(r.subnet).family));
    if (families.size > 1) check.fail(`${path}[${i}]`, 'ranges of one address family', set);
    return ranges;
  });
}

function parseIpam(v: unknown): IpamConfig | undefined {
  const o = check.optRecord(v, 'ipam');
  if (o === undefined) return undefined;
  const type = check.optString(o.type, 'ipam.type');
  if (type === undefined || type === '') throw new CniError(CniCode.InvalidConfig, 'missing ipam.type');
  const ranges = check.absent(o.ranges) ? [] : parseRangeSets(o.ranges, 'ipam.ranges');
  if (!check.absent(o.subnet)) {
    ranges.unshift([parseRange({ subnet: o.subnet, rangeStart: o.rangeStart, rangeEnd: o.rangeEnd, gateway: o.gateway }, 'ipam')]);
  } else {
    const orphan = ['rangeStart', 'rangeEnd', 'gateway'].find((k) => !check.absent(o[k]));
    if (orphan !== undefined) throw new CniError(CniCode.InvalidConfig, `invalid ipam.${orphan}`, 'needs ipam.subnet beside it');
  }
  const routes = (check.optArray(o.routes, 'ipam.routes') ?? []).map((r, i) => {
    const route = check.record(r, `ipam.routes[${i}]`);
    return { dst: check.cidr(route.dst, `ipam.routes[${i}].dst`), gw: check.optIp(route.gw, `ipam.routes[${i}].gw`) };
  });
  return {
    type,
    ranges,
    routes,
    dataDir: check.optNonEmpty(o.dataDir, 'ipam.dataDir'),
    resolvConf: check.optNonEmpty(o.resolvConf, 'ipam.resolvConf'),
    raw: o,
  };
}

// Well-known capability keys and the keys of their values (CONVENTIONS). containerd's go-cni
// has no JSON tags and sends Go field names ("HostPort", "IngressRate"); Go plugins match keys
// case-insensitively, so kelp does too.
const RC_KEYS = ['portMappings', 'ipRanges', 'bandwidth', 'dns', 'ips', 'mac', 'infinibandGUID', 'deviceID', 'aliases', 'cgroupPath'];
const PORT_KEYS = ['hostPort', 'containerPort', 'protocol', 'hostIP'];
const RANGE_KEYS = ['subnet', 'rangeStart', 'rangeEnd', 'gateway'];
const BANDWIDTH_KEYS = ['ingressRate', 'ingressBurst', 'egressRate', 'egressBurst'];
const DNS_KEYS = ['servers', 'searches', 'options'];

/** A copy of `o` with keys matching `known` case-insensitively renamed to that spelling. */
function canonicalKeys(o: Record<string, unknown>, known: string[]): Record<string, unknown> {
  // No prototype, so a "__proto__" key from JSON stays data.
  const out = Object.create(null) as Record<string, unknown>;
  for (const [k, v] of Object.entries(o)) {
    const lower = k.toLowerCase();
    out[known.find((name) => name.toLowerCase() === lower) ?? k] = v;
  }
  return out;
}

/** Normalises records inside a list (or list of lists), leaving anything else for validation. */
function canonicalList(v: unknown, known: string[], depth: 1 | 2): unknown {
  if (!Array.isArray(v)) return v;
  return v.map((item) => (depth === 2 ? canonicalList(item, known, 1) : isRecord(item) ? canonicalKeys(item, known) : item));
}

/** runtimeConfig with every well-known key, at every level, in its lowerCamel spelling. */
export function normaliseRuntimeConfig(o: Record<string, unknown>): Record<string, unknown> {
  const rc = canonicalKeys(o, RC_KEYS);
  if (rc.portMappings !== undefined) rc.portMappings = canonicalList(rc.portMappings, PORT_KEYS, 1);
  if (rc.ipRanges !== undefined) rc.ipRanges = canonicalList(rc.ipRanges, RANGE_KEYS, 2);
  if (isRecord(rc.bandwidth)) rc.bandwidth = canonicalKeys(rc.bandwidth, BANDWIDTH_KEYS);
  if (isRecord(rc.dns)) rc.dns = canonicalKeys(rc.dns, DNS_KEYS);
  return rc;
}

const PROTOCOLS = ['tcp', 'udp', 'sctp'] as const;
const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

function parseRuntimeConfig(v: unknown): RuntimeConfig {
  const given = check.optRecord(v, 'runtimeConfig');
  const raw = given === undefined ? {} : normaliseRuntimeConfig(given);
  const rc: RuntimeConfig = { raw };
  const p = 'runtimeConfig';
  rc.portMappings = check.optArray(raw.portMappings, `${p}.portMappings`)?.map((item, i) => {
    const at = `${p}.portMappings[${i}]`;
    const o = check.record(item, at);
    const protocol = (check.optNonEmpty(o.protocol, `${at}.protocol`) ?? 'tcp').toLowerCase();
    if (!(PROTOCOLS as readonly string[]).includes(protocol)) check.fail(`${at}.protocol`, '"tcp", "udp" or "sctp"', o.protocol);
    const hostPort = check.optInt(o.hostPort, `${at}.hostPort`, 1, 65535);
    const containerPort = check.optInt(o.containerPort, `${at}.containerPort`, 1, 65535);
    if (hostPort === undefined) check.fail(`${at}.hostPort`, 'a port number', o.hostPort);
    if (containerPort === undefined) check.fail(`${at}.containerPort`, 'a port number', o.containerPort);
    return { hostPort, containerPort, protocol: protocol as PortMapping['protocol'], hostIP: check.optIp(o.hostIP, `${at}.hostIP`) };
  });
  if (!check.absent(raw.ipRanges)) rc.ipRanges = parseRangeSets(raw.ipRanges, `${p}.ipRanges`);
  const bw = check.optRecord(raw.bandwidth, `${p}.bandwidth`);
  if (bw !== undefined) {
    rc.bandwidth = {};
    for (const key of BANDWIDTH_KEYS as (keyof Bandwidth)[]) rc.bandwidth[key] = check.optInt(bw[key], `${p}.bandwidth.${key}`, 0);
  }
  const dns = check.optRecord(raw.dns, `${p}.dns`);
  if (dns !== undefined) {
    rc.dns = {
      servers: check.optStringArray(dns.servers, `${p}.dns.servers`),
      searches: check.optStringArray(dns.searches, `${p}.dns.searches`),
      options: check.optStringArray(dns.options, `${p}.dns.options`),
    };
  }
  rc.ips = check.optStringArray(raw.ips, `${p}.ips`);
  rc.ips?.forEach((ip, i) => {
    if (parseIpOrCidr(ip) === undefined) check.fail(`${p}.ips[${i}]`, 'an IP address with optional prefix length', ip);
  });
  rc.mac = check.optNonEmpty(raw.mac, `${p}.mac`);
  if (rc.mac !== undefined && !MAC.test(rc.mac)) check.fail(`${p}.mac`, 'a MAC address like "c2:00:00:00:00:01"', rc.mac);
  rc.cgroupPath = check.optNonEmpty(raw.cgroupPath, `${p}.cgroupPath`);
  // aliases, infinibandGUID and deviceID stay in `raw` unchecked: kelp does not use them, and
  // podman sends aliases as a map rather than the convention's list.
  return rc;
}

function parseCapabilities(v: unknown): Record<string, boolean> {
  const out: Record<string, boolean> = {};
  if (isRecord(v)) for (const [k, on] of Object.entries(v)) if (typeof on === 'boolean') out[k] = on;
  return out;
}

// libcni HEAD sends the list under both names (spec naming bug, containernetworking/cni#1101).
const ATTACHMENT_KEYS = ['cni.dev/valid-attachments', 'cni.dev/attachments'];

function parseAttachments(doc: Record<string, unknown>): Attachment[] | undefined {
  const key = ATTACHMENT_KEYS.find((k) => !check.absent(doc[k]));
  if (key === undefined) return undefined;
  return check.array(doc[key], key).map((item, i) => {
    const o = check.record(item, `${key}[${i}]`);
    return { containerID: check.string(o.containerID, `${key}[${i}].containerID`), ifname: check.string(o.ifname, `${key}[${i}].ifname`) };
  });
}

/** CONVENTIONS "args in network config": take what is well-formed, never fail. */
function parseArgs(v: unknown, conf: NetConf): void {
  const cni = isRecord(v) && isRecord(v.cni) ? v.cni : undefined;
  if (cni === undefined) return;
  if (Array.isArray(cni.ips) && cni.ips.every((ip) => typeof ip === 'string')) conf.argsIps = cni.ips as string[];
  if (Array.isArray(cni.labels)) {
    conf.argsLabels = cni.labels.filter(
      (l): l is { key: string; value: string } => isRecord(l) && typeof l.key === 'string' && typeof l.value === 'string',
    ).map((l) => ({ key: l.key, value: l.value }));
  }
}
