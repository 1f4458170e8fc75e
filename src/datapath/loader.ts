// The agent's datapath: loads kelp's BPF objects once (maps pinned under the bpffs root, so a
// restarted agent finds its state), attaches the shared program instances to each pod's host
// veth with pinned tcx links (the datapath keeps forwarding while the agent is down), and
// programs the maps. Nothing here runs clang: objects are built at build time.
import { existsSync, mkdirSync, readdirSync, statfsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import {
  attachTc,
  BpfLink,
  BpfMap,
  BpfObject,
  KelpBpfError,
  listAttached,
  loadObject,
  openPinnedLink,
  openRingBuffer,
  MapType,
} from '../bpf';
import type { EndpointDatapath } from '../endpoint/manager';
import type { EndpointRecord } from '../endpoint/state';
import type { Logger } from '../log';
import { Direction, endpointInfo, endpointKey, mergeMetrics, MetricsEntry, metricsFwdKey, metricsKey, METRICS_FWD_EPS } from './structs';
import { decodeEvent, formatEvent } from './events';
import { gcNat, masqConstants, monotonicNs, nomasq4Key } from './nat';

const BPF_FS_MAGIC = 0xcafe4a11;

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

/** Makes sure `dir` is on a bpffs, mounting one there if its filesystem is something else. */
export function ensureBpffs(dir: string): void {
  mkdirSync(dir, { recursive: true });
  if (statfsSync(dir).type === BPF_FS_MAGIC) return;
  execFileSync('mount', ['-t', 'bpf', 'bpf', dir]);
}

export class Datapath implements EndpointDatapath {
  readonly lxc: BpfObject;
  host?: BpfObject;
  masq?: MasqueradeOptions;
  private readonly linkDir: string;
  private readonly uplinkLinks: BpfLink[] = [];
  private ring?: { close(): void };
  private gcTimer?: NodeJS.Timeout;

  constructor(private readonly opts: DatapathOptions) {
    ensureBpffs(opts.bpfRoot);
    this.linkDir = path.join(opts.bpfRoot, 'links');
    mkdirSync(this.linkDir, { recursive: true });
    this.lxc = loadObject(objectPath('lxc'), {
      pinRoot: opts.bpfRoot,
      constants: { KELP_TRACE: opts.trace ? 1 : 0 },
      logger: opts.log,
    });
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
  watchEvents(): void {
    this.ring = openRingBuffer(this.lxc.map('kelp_events'), (rec) => {
      try {
        const ev = decodeEvent(rec);
        this.opts.log.debug({ event: ev }, formatEvent(ev));
      } catch (err) {
        this.opts.log.warn({ err }, 'undecodable datapath event');
      }
    });
  }

  private linkPaths(hostIfname: string): { ingress: string; egress: string } {
    return { ingress: path.join(this.linkDir, `${hostIfname}-ingress`), egress: path.join(this.linkDir, `${hostIfname}-egress`) };
  }

  attach(hostIfindex: number, hostIfname: string): void {
    const pins = this.linkPaths(hostIfname);
    const done: BpfLink[] = [];
    try {
      for (const [dir, prog] of [
        ['ingress', 'kelp_from_pod'],
        ['egress', 'kelp_to_pod'],
      ] as const) {
        const link = attachTc(this.lxc.program(prog), hostIfindex, dir);
        done.push(link);
        if (link.kind === 'tcx') link.pin(pins[dir]);
      }
    } catch (e) {
      for (const l of done) {
        l.detach();
        l.unpin();
        l.close();
      }
      throw e;
    }
    // Pinned tcx links stay attached without our fds; a clsact filter stays until detached.
    for (const l of done) l.close();
  }

  detach(hostIfname: string): void {
    for (const pin of Object.values(this.linkPaths(hostIfname))) {
      if (!existsSync(pin)) continue;
      const link = openPinnedLink(pin);
      try {
        try {
          link.detach();
        } catch (e) {
          // The veth (and with it the attachment) may already be gone.
          if (!(e instanceof KelpBpfError) || !['ENOENT', 'ENOLINK', 'EINVAL', 'ENODEV'].includes(e.code)) throw e;
        }
        link.unpin();
      } finally {
        link.close();
      }
    }
  }

  /** Host veths that have pinned links (for GC of leftovers). */
  pinnedLinkOwners(): string[] {
    return [...new Set(readdirSync(this.linkDir).map((n) => n.replace(/-(ingress|egress)$/, '')))];
  }

  upsertEndpoint(rec: EndpointRecord): void {
    const map = this.lxc.map('kelp_endpoints');
    const value = endpointInfo.encode({ ifindex: rec.hostIfindex, epId: rec.id, flags: 0, mac: rec.podMac, nodeMac: rec.hostMac });
    for (const ip of rec.ips) {
      if (ip.address.includes(':')) continue;
      map.update(endpointKey.encode({ ip4: ip.address.split('/')[0] }), value);
    }
  }

  removeEndpoint(rec: Pick<EndpointRecord, 'ips' | 'id'>): void {
    const map = this.lxc.map('kelp_endpoints');
    for (const ip of rec.ips) {
      if (ip.address.includes(':')) continue;
      map.delete(endpointKey.encode({ ip4: ip.address.split('/')[0] }));
    }
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

  check(rec: EndpointRecord): string[] {
    const problems: string[] = [];
    const map = this.lxc.map('kelp_endpoints');
    for (const ip of rec.ips) {
      if (ip.address.includes(':')) continue;
      const raw = map.lookup(endpointKey.encode({ ip4: ip.address.split('/')[0] }));
      if (!raw) {
        problems.push(`datapath: no kelp_endpoints entry for ${ip.address}`);
        continue;
      }
      const v = endpointInfo.decode(raw);
      if (v.ifindex !== rec.hostIfindex || v.epId !== rec.id) problems.push(`datapath: kelp_endpoints entry for ${ip.address} points at ifindex ${v.ifindex}, id ${v.epId}`);
    }
    try {
      const att = listAttached(rec.hostIfindex);
      if (!att.tcx.ingress.some((p) => p.name === 'kelp_from_pod')) problems.push(`datapath: kelp_from_pod is not attached to ${rec.hostIfname} ingress`);
      if (!att.tcx.egress.some((p) => p.name === 'kelp_to_pod')) problems.push(`datapath: kelp_to_pod is not attached to ${rec.hostIfname} egress`);
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
    const nomasq = this.host.map('kelp_nomasq4');
    for (const cidr of [m.podCidr, ...(m.noMasquerade ?? [])]) nomasq.update(nomasq4Key.encode({ cidr }), Buffer.from([1]));
    const pins = this.linkPaths(`uplink-${m.uplinkIfname}`);
    for (const [dir, prog] of [
      ['ingress', 'kelp_host_ingress'],
      ['egress', 'kelp_host_egress'],
    ] as const) {
      // A previous agent's uplink links carry the previous program: replace them.
      if (existsSync(pins[dir])) {
        const old = openPinnedLink(pins[dir]);
        try {
          old.detach();
        } catch {
          // already detached
        }
        old.unpin();
        old.close();
      }
      const link = attachTc(this.host.program(prog), m.uplinkIfindex, dir);
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

  mapStats(): Array<{ name: string; type: string; entries: number; maxEntries: number; fixed: boolean }> {
    return this.mapNames().map((name) => {
      const m = this.map(name);
      const typeName = Object.entries(MapType).find(([, v]) => v === m.type)?.[0] ?? String(m.type);
      // Arrays always hold max_entries slots; their fill is not a meaningful figure.
      const fixed = m.type === MapType.ARRAY || m.type === MapType.PERCPU_ARRAY || m.type === MapType.RINGBUF;
      const entries = fixed ? 0 : m.keys().length;
      return { name, type: typeName, entries, maxEntries: m.maxEntries, fixed };
    });
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
