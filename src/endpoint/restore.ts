// Start-up after a restart (or a crash): make the agent's view and the node agree again without
// disturbing a single running pod. In order:
//  1. restore: every record whose host veth is still there gets its programs (its clsact
//     filters' programs swapped for the new instances in place; an older kelp's pinned tcx
//     links removed once the filters are there), its map entry and its node route re-asserted;
//  2. replay the DELs kelp-cni queued while we were unreachable (they carry the runtime's
//     config, which a delegated IPAM plugin needs to release its addresses);
//  3. collect: a record whose host veth is gone (pod netns deleted while we were down) gets a
//     full DEL; then only what kelp recognises as its own by name or mark is swept: host veths
//     `kelp` + 11 hex digits without a record, pod veths' pinned links of an older kelp (pods
//     now use clsact filters, which die with their veth) and uplink links masquerade no longer
//     uses, kelp_endpoints entries (and their cache slots) and
//     counters of no record, leases in kelp's own IPAM directory owned by no record, node
//     routes with kelp's protocol to no endpoint, and kelp's temp files.
// Runs before the agent accepts CNI requests, so nothing here races an ADD. Every step is best
// effort: a failure is logged and reported, never fatal (a crash loop would help nobody).
import { readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Datapath } from '../datapath/loader';
/** What a replay of the DELs queued while the agent was down did. */
export interface ReplayOutcome {
  done: number;
  /** Entries dropped without running: a later ADD recreated the attachment, or not a DEL. */
  skipped: number;
  /** Entries left for the next sweep. */
  kept: number;
}

/** The DEL queue as restore sees it (the agent's DelQueue). */
export interface QueuedDels {
  replay(): Promise<ReplayOutcome>;
}
import { Ipam, IpamConfig } from '../ipam';
import type { Logger } from '../log';
import { EndpointManager, RTPROT_KELP } from './manager';
import type { EndpointRecord, EndpointStore } from './state';

/** Host-side veth names kelp gives (see hostIfnameFor). */
export const HOST_VETH = /^kelp[0-9a-f]{11}$/;

export interface RestoreDeps {
  manager: EndpointManager;
  store: EndpointStore;
  datapath: Datapath;
  ipam: Ipam;
  /** kelp's own IPAM data directory: the only one whose leases are swept. */
  ipamDir: string;
  /** The IPAM config of a network without one of its own (kelp's pod CIDR, in ipamDir). */
  defaultIpam: (network: string) => IpamConfig;
  /** The agent's state directory (endpoint records live in <stateDir>/endpoints). */
  stateDir: string;
  queue: QueuedDels;
  log: Logger;
}

export interface SweepReport {
  veths: string[];
  pins: string[];
  mapEntries: string[];
  counters: number;
  leases: string[];
  routes: string[];
  files: string[];
}

export interface RestoreReport {
  restored: number;
  /** Hooks whose program was swapped for the new instance, or attached anew. */
  relinked: number;
  /** Attachments whose host veth disappeared while the agent was down: fully deleted. */
  gone: string[];
  queue: ReplayOutcome;
  swept: SweepReport;
  problems: string[];
}

export async function restoreNode(deps: RestoreDeps): Promise<RestoreReport> {
  const problems: string[] = [];
  const { restored, relinked, gone: vanished } = await restoreEndpoints(deps, problems);
  let queue: ReplayOutcome = { done: 0, skipped: 0, kept: 0 };
  try {
    queue = await deps.queue.replay();
  } catch (e) {
    problems.push(`DEL queue: ${(e as Error).message}`);
  }
  const gone = await deleteVanished(deps, vanished, problems);
  const swept = await sweepLeftovers(deps, problems);
  const report = { restored, relinked, gone, queue, swept, problems };
  const level = problems.length ? 'warn' : 'info';
  deps.log[level]({ ...report }, 'node state restored');
  return report;
}

function label(rec: Pick<EndpointRecord, 'network' | 'containerId' | 'ifname'>): string {
  return `${rec.network}/${rec.containerId}/${rec.ifname}`;
}

function ipv4s(rec: EndpointRecord): string[] {
  return rec.ips.filter((i) => !i.address.includes(':')).map((i) => i.address.split('/')[0]);
}

async function restoreEndpoints(deps: RestoreDeps, problems: string[]): Promise<{ restored: number; relinked: number; gone: EndpointRecord[] }> {
  const { manager, datapath } = deps;
  const host = manager.hostNs;
  let restored = 0;
  let relinked = 0;
  const gone: EndpointRecord[] = [];
  for (const rec of deps.store.list()) {
    let link;
    try {
      link = await host.link(rec.hostIfname);
    } catch (e) {
      // Not knowing is not "gone": deleting a live pod's network would be the worse mistake.
      problems.push(`look up ${rec.hostIfname} of ${label(rec)}: ${(e as Error).message}`);
      continue;
    }
    // Another index under the same name is a veth made after the record: the recorded one is gone.
    if (!link || link.index !== rec.hostIfindex) {
      gone.push(rec);
      continue;
    }
    try {
      const hooks = datapath.relink(rec.hostIfindex, rec.hostIfname, rec.hook);
      relinked += Object.values(hooks).filter((o) => o !== 'kept').length;
      datapath.upsertEndpoint(rec);
      for (const ip of ipv4s(rec)) {
        await host.addRoute({ dst: `${ip}/32`, dev: rec.hostIfindex, scope: 'link', protocol: RTPROT_KELP }, { exist: 'replace' });
      }
      restored += 1;
    } catch (e) {
      problems.push(`restore ${label(rec)}: ${(e as Error).message}`);
    }
  }
  return { restored, relinked, gone };
}

/** Full DEL of the records whose host veth disappeared, unless a queued DEL already did it. */
async function deleteVanished(deps: RestoreDeps, vanished: EndpointRecord[], problems: string[]): Promise<string[]> {
  const done: string[] = [];
  for (const rec of vanished) {
    if (!deps.manager.get(rec)) continue;
    try {
      await deps.manager.del({ network: rec.network, containerId: rec.containerId, ifname: rec.ifname });
      deps.log.info({ attachment: label(rec), hostIfname: rec.hostIfname }, 'host veth gone while the agent was down: endpoint deleted');
      done.push(label(rec));
    } catch (e) {
      problems.push(`delete ${label(rec)}: ${(e as Error).message}`);
    }
  }
  return done;
}

async function sweepLeftovers(deps: RestoreDeps, problems: string[]): Promise<SweepReport> {
  const { manager, datapath } = deps;
  const host = manager.hostNs;
  const swept: SweepReport = { veths: [], pins: [], mapEntries: [], counters: 0, leases: [], routes: [], files: [] };
  const records = deps.store.list();
  const step = async (what: string, fn: () => unknown) => {
    try {
      await fn();
    } catch (e) {
      problems.push(`${what}: ${(e as Error).message}`);
    }
  };

  const byVeth = new Map(records.map((r) => [r.hostIfname, r]));
  await step('host veths', async () => {
    const stray = (await host.listLinks()).filter((l) => l.kind === 'veth' && HOST_VETH.test(l.name) && !byVeth.has(l.name));
    // One kernel unregistration for all of them (each alone waits ~20 ms for an rcu_barrier).
    const existed = await host.deleteLinks(stray.map((l) => l.index));
    stray.forEach((l, i) => existed[i] && swept.veths.push(l.name));
  });

  await step('pinned links', async () => {
    const live = new Map((await host.listLinks()).map((l) => [l.name, l.index]));
    for (const pin of datapath.pinnedLinks()) {
      await step(`pinned link ${path.basename(pin.path)}`, () => {
        let keep: boolean;
        if (pin.kind === 'uplink') {
          keep = pin.ifname === datapath.uplinkIfname;
        } else {
          // A tcx pod's own link, or an older kelp's while it is all a live pod has (its
          // restore failed before the filters were in place).
          const rec = byVeth.get(pin.ifname);
          keep =
            rec !== undefined &&
            live.get(pin.ifname) === rec.hostIfindex &&
            datapath.pinnedLinkIfindex(pin.path) === rec.hostIfindex &&
            (rec.hook === 'tcx' || !datapath.hasPodFilters(rec.hostIfindex));
        }
        if (keep) return;
        datapath.removePinnedLink(pin.path);
        swept.pins.push(path.basename(pin.path));
      });
    }
  });

  const ips = new Set(records.flatMap(ipv4s));
  await step('kelp_endpoints', async () => {
    for (const e of datapath.endpointEntries()) {
      if (ips.has(e.ip)) continue;
      await step(`kelp_endpoints ${e.ip}`, () => {
        datapath.removeEndpointIp(e.ip);
        swept.mapEntries.push(e.ip);
      });
    }
  });
  // The cache was made to agree with kelp_endpoints when the datapath loaded; slots the sweep
  // freed go to addresses that collided with their old owners.
  await step('kelp_endpoint_cache', () => datapath.reconcileEndpointCache());
  await step('counters', () => {
    swept.counters = datapath.clearCountersExcept(new Set(records.map((r) => r.id)));
  });

  await step('IPAM leases', () => sweepLeases(deps, records, swept));

  await step('node routes', async () => {
    const want = new Set(records.flatMap((r) => ipv4s(r).map((ip) => `${ip}/32@${r.hostIfindex}`)));
    for (const r of await host.listRoutes({ family: 4 })) {
      if (r.protocol !== RTPROT_KELP || r.dev === undefined || want.has(`${r.dst}@${r.dev}`)) continue;
      await host.deleteRoute({ dst: r.dst, dev: r.dev });
      swept.routes.push(r.dst);
    }
  });

  await step('temp files', () => sweepTempFiles(deps, swept));
  return swept;
}

async function sweepLeases(deps: RestoreDeps, records: EndpointRecord[], swept: SweepReport): Promise<void> {
  let networks: string[];
  try {
    networks = readdirSync(deps.ipamDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  const ipamDir = path.resolve(deps.ipamDir);
  for (const network of networks) {
    const valid = records
      .filter((r) => r.network === network && r.ipam.kind === 'builtin' && path.resolve(r.ipam.dataDir) === ipamDir)
      .map((r) => ({ containerId: r.containerId, ifname: r.ifname }));
    // Through the agent's allocator, so its in-memory view forgets the addresses too.
    const released = await deps.ipam.network({ ...deps.defaultIpam(network), dataDir: deps.ipamDir }).releaseAllExcept(valid);
    for (const a of released) swept.leases.push(...a.ips.map((ip) => `${network}/${ip.address.split('/')[0]}`));
  }
}

/** Temp files of writers that died mid-write: ours by name, and never another live process's. */
function sweepTempFiles(deps: RestoreDeps, swept: SweepReport): void {
  const remove = (dir: string, match: (name: string) => boolean) => {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) {
      if (!match(name)) continue;
      const file = path.join(dir, name);
      if (!statSync(file).isFile()) continue;
      rmSync(file, { force: true });
      swept.files.push(file);
    }
  };
  const notMine = (pid: string | undefined) => pid !== undefined && Number(pid) !== process.pid;
  // EndpointStore writes <hash>.json.<pid>.tmp.
  remove(path.join(deps.stateDir, 'endpoints'), (n) => notMine(/^[0-9a-f]{32}\.json\.(\d+)\.tmp$/.exec(n)?.[1]));
  // FileIpamStore writes .kelp-tmp-<pid>-<hex>.
  let nets: string[] = [];
  try {
    nets = readdirSync(deps.ipamDir);
  } catch {
    return;
  }
  for (const net of nets) remove(path.join(deps.ipamDir, net), (n) => notMine(/^\.kelp-tmp-(\d+)-[0-9a-f]+$/.exec(n)?.[1]));
}
