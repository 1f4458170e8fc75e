// The agent's datapath: loads kelp's BPF objects once (maps pinned under the bpffs root, so a
// restarted agent finds its state), attaches the shared program instances to each pod's host
// veth as clsact filters at kelp's own handle and priority (they need no pin to outlive the
// agent and die with the veth), and programs the maps. Nothing here runs clang: objects are
// built at build time.
// Pod veths use clsact rather than tcx because every tcx attach waits for a kernel RCU grace
// period under rtnl_lock (10-15 ms per direction measured, most of an ADD), and a veth with tcx
// links takes ~70 ms instead of ~29 ms to delete; a clsact filter attaches in 0.1-0.4 ms.
// The uplink keeps pinned tcx links (attached once per agent start), and so does a pod of a
// network configured with `podHook: "tcx"`: clsact takes the ingress qdisc's place, which
// the bandwidth plugin's egress shaping needs for itself.
// A restarted agent loads new program instances and swaps them into the filters (and the
// uplink's links) in one step, never detaching and re-attaching.
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import {
  attachTc,
  attachTcAsync,
  attachTcFilter,
  BpfLink,
  BpfMap,
  BpfObject,
  BpfProgram,
  detachTcFilter,
  KelpBpfError,
  listAttached,
  loadObject,
  openPinnedLink,
  openRingBuffer,
  MapType,
  queryTcFilter,
} from '../bpf';
import type { TcFilterSlot } from '../bpf';
import type { DatapathEndpoint, PodHook } from './types';
import type { Logger } from '../log';
import { Direction, EndpointInfo, mergeMetrics, MetricsEntry, metricsFwdKey, metricsKey, METRICS_FWD_EPS } from './structs';
import { EndpointMaps } from './endpoints';
import { decodeEvent, DropEvent, formatEvent } from './events';
import { gcNat, masqConstants, monotonicNs, nomasq4Key } from './nat';
import { BpffsStatus, openBpfRoot } from './bpffs';
import { MAP_DESCRIPTIONS, MapRow, mapRows } from './dump';
import { syncMap } from './maps/sync';

/** Errors of detaching a link whose device (and with it the attachment) is already gone. */
const GONE = ['ENOENT', 'ENOLINK', 'EINVAL', 'ENODEV'];
/** Pod veths' pinned tcx links: podHook "tcx", or an older kelp's (removed once filters replace them). */
const POD_PIN = /^(kelp[0-9a-f]{11})-(ingress|egress)$/;
const UPLINK_PIN = /^uplink-(.+)-(ingress|egress)$/;
const POD_PROGRAMS = [
  ['ingress', 'kelp_from_pod'],
  ['egress', 'kelp_to_pod'],
] as const;
/** kelp's clsact filter on each pod veth hook: 0x4b is 'K'; a fixed slot lets kelp find it again. */
export const POD_FILTER: TcFilterSlot = { handle: 0x4b, priority: 1 };

/** A link pinned under <bpfRoot>/links by kelp: the uplink's, or a pod veth's left by an older kelp. */
export interface PinnedLink {
  path: string;
  kind: 'pod' | 'uplink';
  /** The host veth or uplink device the pin is named after. */
  ifname: string;
  dir: 'ingress' | 'egress';
}

/** What happened to one hook at restart: it already ran this program, got it swapped in, or had none. */
export type RelinkOutcome = 'kept' | 'updated' | 'attached';

export function objectPath(name: string): string {
  return path.join(__dirname, '../../build/bpf', `${name}.o`);
}

export interface MasqueradeOptions {
  uplinkIfindex: number;
  uplinkIfname: string;
  masqIp: string;
  podCidr: string;
  /** Destinations never masqueraded besides the pod CIDR (cluster CIDRs, node networks). */
  noMasquerade?: string[];
}

export interface DatapathOptions {
  bpfRoot: string;
  log: Logger;
  trace?: boolean;
}

export class Datapath {
  readonly lxc: BpfObject;
  /** kelp_endpoints and its cache: written only through this. */
  readonly endpoints: EndpointMaps;
  host?: BpfObject;
  masq?: MasqueradeOptions;
  private readonly linkDir: string;
  private readonly uplinkLinks: BpfLink[] = [];
  private ring?: { close(): void };
  private gcTimer?: NodeJS.Timeout;
  /** The pin root's bpffs, and whether it outlives this agent. */
  readonly bpffs: BpffsStatus;

  constructor(private readonly opts: DatapathOptions) {
    this.bpffs = openBpfRoot(opts.bpfRoot);
    this.linkDir = path.join(opts.bpfRoot, 'links');
    mkdirSync(this.linkDir, { recursive: true });
    this.lxc = loadObject(objectPath('lxc'), {
      pinRoot: opts.bpfRoot,
      constants: { KELP_TRACE: opts.trace ? 1 : 0 },
      logger: opts.log,
    });
    this.endpoints = EndpointMaps.of(this.lxc);
    // Before any program of this agent runs: the pinned cache may be a crashed or older agent's.
    this.reconcileEndpointCache();
  }

  /** Makes kelp_endpoint_cache agree with kelp_endpoints; returns how many slots changed. */
  reconcileEndpointCache(): number {
    const changed = this.endpoints.reconcileCache();
    if (changed) this.opts.log.info({ slots: changed }, 'kelp_endpoint_cache reconciled with kelp_endpoints');
    return changed;
  }

  map(name: string): BpfMap {
    for (const obj of [this.lxc, this.host]) {
      if (obj && obj.maps().includes(name)) return obj.map(name);
    }
    throw new Error(`no map named ${name}`);
  }

  mapNames(): string[] {
    const names = new Set<string>();
    for (const obj of [this.lxc, this.host]) obj?.maps().filter((m) => m.startsWith('kelp_')).forEach((m) => names.add(m));
    return [...names].sort();
  }

  /** Logs drop events as they arrive (the ring buffer is serviced on the event loop). */
  /** Logs datapath events; `onDrop` hears every drop (serviced on the event loop). */
  watchEvents(onDrop?: (ev: DropEvent) => void): void {
    this.ring = openRingBuffer(this.lxc.map('kelp_events'), (rec) => {
      try {
        const ev = decodeEvent(rec);
        this.opts.log.debug({ event: ev }, formatEvent(ev));
        if (ev.kind === 'drop') onDrop?.(ev);
      } catch (err) {
        this.opts.log.warn({ err }, 'undecodable datapath event');
      }
    });
  }

  private linkPaths(hostIfname: string): { ingress: string; egress: string } {
    return { ingress: path.join(this.linkDir, `${hostIfname}-ingress`), egress: path.join(this.linkDir, `${hostIfname}-egress`) };
  }

  /**
   * Attaches both programs to a host veth (just made, or the previous plugin's in chained mode).
   * Without replace: a kelp filter already there means an attachment kelp does not know of,
   * better reported (EEXIST) than silently taken over.
   */
  async attach(hostIfindex: number, hostIfname: string, hook: PodHook = 'clsact'): Promise<void> {
    // A pin under the veth's name is a leftover (a crash mid-ADD).
    for (const pin of Object.values(this.linkPaths(hostIfname))) removePin(pin);
    if (hook === 'tcx') return this.attachTcx(hostIfindex, hostIfname);
    const done: Array<'ingress' | 'egress'> = [];
    try {
      for (const [dir, prog] of POD_PROGRAMS) {
        attachTcFilter(this.lxc.program(prog), hostIfindex, dir, POD_FILTER);
        done.push(dir);
      }
    } catch (e) {
      for (const dir of done) detachTcFilter(hostIfindex, dir, POD_FILTER);
      throw e;
    }
  }

  /**
   * Pinned tcx links, attached off the event loop: each attach waits for a kernel RCU grace
   * period (~10-15 ms here) while holding rtnl_lock.
   */
  private async attachTcx(hostIfindex: number, hostIfname: string): Promise<void> {
    const pins = this.linkPaths(hostIfname);
    const results = await Promise.allSettled(POD_PROGRAMS.map(([dir, prog]) => attachTcAsync(this.lxc.program(prog), hostIfindex, dir)));
    const done = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    try {
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      POD_PROGRAMS.forEach(([dir], i) => {
        if (done[i].kind === 'tcx') done[i].pin(pins[dir]);
      });
    } catch (e) {
      for (const l of done) {
        l.detach();
        l.unpin();
        l.close();
      }
      throw e;
    }
    for (const l of done) l.close();
  }

  /**
   * Takes kelp's programs off a host veth; harmless when they (or the veth) are gone. Without an
   * ifindex only an older kelp's pins are removed (a deleted veth took its filters with it).
   */
  detach(hostIfname: string, hostIfindex?: number): void {
    if (hostIfindex) {
      for (const [dir] of POD_PROGRAMS) detachTcFilter(hostIfindex, dir, POD_FILTER);
    }
    for (const pin of Object.values(this.linkPaths(hostIfname))) removePin(pin);
  }

  /**
   * After a restart: makes sure a pod's host veth runs this agent's program instances. The
   * filter's program is replaced in one step (the hook never runs without a program). An
   * older kelp's pinned tcx link is removed only after the filter is there: until then tcx
   * runs first and its verdict stands, so no packet is left unhandled.
   */
  relink(hostIfindex: number, hostIfname: string, hook: PodHook = 'clsact'): Record<'ingress' | 'egress', RelinkOutcome> {
    const pins = this.linkPaths(hostIfname);
    const out = {} as Record<'ingress' | 'egress', RelinkOutcome>;
    for (const [dir, name] of POD_PROGRAMS) {
      const prog = this.lxc.program(name);
      if (hook === 'tcx') {
        // The pinned link moves onto the new instance in place; a missing or dead one is attached anew.
        const reused = reuseLink(pins[dir], hostIfindex, prog);
        if (reused) {
          out[dir] = reused.outcome;
          reused.link.close();
          continue;
        }
        const link = attachTc(prog, hostIfindex, dir);
        try {
          if (link.kind === 'tcx') link.pin(pins[dir]);
        } catch (e) {
          link.detach();
          link.close();
          throw e;
        }
        link.close();
        out[dir] = 'attached';
        continue;
      }
      const before = queryTcFilter(hostIfindex, dir, POD_FILTER);
      if (before?.id === prog.id) out[dir] = 'kept';
      else {
        attachTcFilter(prog, hostIfindex, dir, POD_FILTER, { replace: true });
        out[dir] = before ? 'updated' : 'attached';
      }
      removePin(pins[dir]);
    }
    return out;
  }

  /** Whether both of kelp's filters are on a host veth (whatever program instance they run). */
  hasPodFilters(hostIfindex: number): boolean {
    if (!hostIfindex) return false;
    return POD_PROGRAMS.every(([dir, name]) => queryTcFilter(hostIfindex, dir, POD_FILTER)?.name === name);
  }

  /** Links under <bpfRoot>/links whose names kelp gives; anything else there is not ours. */
  pinnedLinks(): PinnedLink[] {
    const out: PinnedLink[] = [];
    for (const name of readdirSync(this.linkDir)) {
      const pod = POD_PIN.exec(name);
      const up = pod ? null : UPLINK_PIN.exec(name);
      const m = pod ?? up;
      if (!m) continue;
      out.push({ path: path.join(this.linkDir, name), kind: pod ? 'pod' : 'uplink', ifname: m[1], dir: m[2] as 'ingress' | 'egress' });
    }
    return out;
  }

  /** The ifindex a pinned link is attached to; 0 once its device is gone. */
  pinnedLinkIfindex(pin: string): number {
    const link = openPinnedLink(pin);
    try {
      return link.info().ifindex ?? 0;
    } finally {
      link.close();
    }
  }

  /** Detaches a pinned link and removes its pin; harmless when either is gone already. */
  removePinnedLink(pin: string): void {
    removePin(pin);
  }

  /** Every kelp_endpoints key (IPv4) with the endpoint id and ifindex it points to. */
  endpointEntries(): Array<{ ip: string; ifindex: number; epId: number }> {
    return this.endpoints.entries().map(({ ip, info }) => ({ ip, ifindex: info.ifindex, epId: info.epId }));
  }

  /** Removes a kelp_endpoints entry (and its cache slot) by pod IPv4 address. */
  removeEndpointIp(ip: string): boolean {
    return this.endpoints.remove(ip);
  }

  /** Zeroes the counters of every endpoint id not in `live` (ids of endpoints gone while down). */
  clearCountersExcept(live: Set<number>): number {
    const hash = this.lxc.map('kelp_metrics');
    const stale = new Set<number>();
    for (const k of hash.keys()) {
      const id = metricsKey.decode(k).epId;
      if (id !== 0 && !live.has(id)) stale.add(id);
    }
    for (const id of stale) this.clearCounters(id);
    return stale.size;
  }

  upsertEndpoint(rec: DatapathEndpoint): void {
    const info = endpointInfoOf(rec);
    for (const ip of ipv4Addresses(rec)) this.endpoints.put(ip, info);
  }

  removeEndpoint(rec: Pick<DatapathEndpoint, 'ips' | 'id'>): void {
    for (const ip of ipv4Addresses(rec)) this.endpoints.remove(ip);
    this.clearCounters(rec.id);
  }

  /** An endpoint id is reused after its endpoint is gone: its counters must start from zero. */
  private clearCounters(epId: number): void {
    const hash = this.lxc.map('kelp_metrics');
    for (const k of hash.keys()) if (metricsKey.decode(k).epId === epId) hash.delete(k);
    if (epId < METRICS_FWD_EPS) {
      const fwd = this.lxc.map('kelp_metrics_fwd');
      const zero = Buffer.alloc(Math.ceil(fwd.valueSize / 8) * 8 * fwd.numCpus);
      for (const dir of [Direction.FROM_POD, Direction.TO_POD]) fwd.update(metricsFwdKey(epId, dir), zero);
    }
  }

  /** Every non-zero counter: forwarded and dropped packets per endpoint, direction and reason. */
  metrics(): MetricsEntry[] {
    const hash = this.lxc.map('kelp_metrics');
    const fwd = this.lxc.map('kelp_metrics_fwd');
    return mergeMetrics(hash.lookupBatch(), fwd.lookupBatch(), hash.numCpus);
  }

  check(rec: DatapathEndpoint): string[] {
    const problems: string[] = [];
    for (const ip of ipv4Addresses(rec)) {
      const v = this.endpoints.get(ip);
      if (!v) {
        problems.push(`datapath: no kelp_endpoints entry for ${ip}`);
        continue;
      }
      if (v.ifindex !== rec.hostIfindex || v.epId !== rec.id) problems.push(`datapath: kelp_endpoints entry for ${ip} points at ifindex ${v.ifindex}, id ${v.epId}`);
      const slot = this.endpoints.checkSlot(ip, v);
      if (slot) problems.push(`datapath: ${slot}, kelp_endpoints has ${JSON.stringify(v)}`);
    }
    try {
      const tcx = rec.hook === 'tcx' ? listAttached(rec.hostIfindex).tcx : undefined;
      for (const [dir, name] of POD_PROGRAMS) {
        const on = tcx ? tcx[dir].some((p) => p.name === name) : queryTcFilter(rec.hostIfindex, dir, POD_FILTER)?.name === name;
        if (!on) problems.push(`datapath: ${name} is not attached to ${rec.hostIfname} ${dir}`);
      }
    } catch (e) {
      problems.push(`datapath: cannot query ${rec.hostIfname}: ${(e as Error).message}`);
    }
    return problems;
  }

  /** Masquerade on the uplink: SNAT pod sources to the uplink's address, GC'd every 10 s. */
  enableMasquerade(m: MasqueradeOptions): void {
    this.host = loadObject(objectPath('host'), {
      pinRoot: this.opts.bpfRoot,
      constants: masqConstants({ podCidr: m.podCidr, masqIp: m.masqIp }),
      logger: this.opts.log,
    });
    // Exactly these CIDRs: a pinned map may hold an earlier configuration's (another pod CIDR),
    // which would otherwise stay exempt from masquerade for ever.
    const exempt = [...new Set([m.podCidr, ...(m.noMasquerade ?? [])])];
    syncMap(this.host.map('kelp_nomasq4'), exempt.map((cidr) => [nomasq4Key.encode({ cidr }), Buffer.from([1])] as const));
    const pins = this.linkPaths(`uplink-${m.uplinkIfname}`);
    for (const [dir, name] of [
      ['ingress', 'kelp_host_ingress'],
      ['egress', 'kelp_host_egress'],
    ] as const) {
      const prog = this.host.program(name);
      // A previous agent's links keep translating until the new program takes their place in
      // one step; detaching first would let established flows' packets through untranslated.
      const reused = reuseLink(pins[dir], m.uplinkIfindex, prog);
      if (reused) {
        this.uplinkLinks.push(reused.link);
        continue;
      }
      const link = attachTc(prog, m.uplinkIfindex, dir);
      if (link.kind === 'tcx') link.pin(pins[dir]);
      this.uplinkLinks.push(link);
    }
    this.masq = m;
    const maps = { ct: this.host.map('kelp_ct4'), snat: this.host.map('kelp_snat4') };
    this.gcTimer = setInterval(() => {
      try {
        const r = gcNat(maps, monotonicNs());
        if (r.expired || r.natDeleted) this.opts.log.debug({ gc: r }, 'conntrack/NAT GC');
      } catch (err) {
        this.opts.log.warn({ err }, 'conntrack/NAT GC failed');
      }
    }, 10_000);
    this.gcTimer.unref();
  }

  mapStats(): Array<{ name: string; type: string; entries: number; maxEntries: number; fixed: boolean; description?: string }> {
    return this.mapNames().map((name) => {
      const m = this.map(name);
      const typeName = Object.entries(MapType).find(([, v]) => v === m.type)?.[0] ?? String(m.type);
      // Arrays always hold max_entries slots: their "fill" is not a meaningful figure, but the
      // rows `kelp map dump` lists (live or non-zero slots) are counted like any map's.
      const fixed = m.type === MapType.ARRAY || m.type === MapType.PERCPU_ARRAY || m.type === MapType.RINGBUF;
      return { name, type: typeName, entries: mapRows(name, m).length, maxEntries: m.maxEntries, fixed, description: MAP_DESCRIPTIONS[name] };
    });
  }

  /** A map's rows as `kelp map dump` lists them. */
  dump(name: string): MapRow[] {
    return mapRows(name, this.map(name));
  }

  /** The uplink device masquerade is attached to, if any. */
  get uplinkIfname(): string | undefined {
    return this.masq?.uplinkIfname;
  }

  /** Closes handles; pinned maps and links stay, so pods keep their network. */
  close(): void {
    if (this.gcTimer) clearInterval(this.gcTimer);
    this.ring?.close();
    for (const l of this.uplinkLinks) l.close();
    this.host?.close();
    this.lxc.close();
  }
}

function endpointInfoOf(rec: DatapathEndpoint): EndpointInfo {
  return { ifindex: rec.hostIfindex, epId: rec.id, flags: 0, mac: rec.podMac, nodeMac: rec.hostMac };
}

/** The record's IPv4 addresses, without prefix length. */
function ipv4Addresses(rec: Pick<DatapathEndpoint, 'ips'>): string[] {
  return rec.ips.filter((ip) => !ip.address.includes(':')).map((ip) => ip.address.split('/')[0]);
}

/**
 * Re-uses the link pinned at `pin` if it is attached to `ifindex`, moving it onto `prog` with
 * link update when it runs another program instance. A pin whose link is attached elsewhere or
 * whose device is gone is removed, and undefined returned: the caller attaches anew.
 */
function reuseLink(pin: string, ifindex: number, prog: BpfProgram): { link: BpfLink; outcome: RelinkOutcome } | undefined {
  if (!existsSync(pin)) return undefined;
  const link = openPinnedLink(pin);
  try {
    const info = link.info();
    if (info.ifindex === ifindex) {
      if (info.progId === prog.id) return { link, outcome: 'kept' };
      link.update(prog);
      return { link, outcome: 'updated' };
    }
    detachQuietly(link);
    link.unpin();
  } catch (e) {
    link.close();
    throw e;
  }
  link.close();
  return undefined;
}

function detachQuietly(link: BpfLink): void {
  try {
    link.detach();
  } catch (e) {
    // The device (and with it the attachment) may already be gone.
    if (!(e instanceof KelpBpfError) || !GONE.includes(e.code)) throw e;
  }
}

function removePin(pin: string): void {
  if (!existsSync(pin)) return;
  const link = openPinnedLink(pin);
  try {
    detachQuietly(link);
    link.unpin();
  } finally {
    link.close();
  }
}
