// Services in the agent: the reconciler's inputs (Services, EndpointSlices, Nodes; in standalone
// mode Pods and this node's endpoints for the derived slices; this node's addresses for
// NodePorts), the service ids persisted across restarts, the Maglev tables kept from one run to
// the next, UDP sockets to backends that left destroyed, and what the API shows.
//
// One run: compile everything (src/service/compile.ts) → the writer applies the difference
// (src/datapath/service.ts, make before break) → backends that left every set: their connected
// UDP sockets are destroyed, so clients (DNS above all) reconnect to a live backend.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Datapath } from '../datapath/loader';
import { ServiceWriter } from '../datapath/service';
import type { SocketLbMode } from '../datapath/sock';
import type { ServiceMapsDesired } from '../datapath/service-types';
import type { EndpointManager } from '../endpoint/manager';
import type { Logger } from '../log';
import type { AgentOptions, SocketLbChoice } from './options';
import type { Rtnl } from '../netlink';
import type { Reconciler, ReconcileLoop } from '../reconcile/loop';
import { removedBackends, ServiceCompiler, ServiceModel } from '../service/compile';
import { ServiceIds } from '../service/ids';
import { selectsAny, SliceDeriver } from '../service/slices';
import { KnownNodeFilter } from '../service/endpoints';
import type { Kind } from '../sources/objects';
import type { ObjectStore } from '../sources/store';

const IDS_FILE = 'service-ids.json';
/** Service conntrack collection interval (the maps are LRU: this only keeps them small). */
const CT_GC_MS = 10_000;

/** The one writer of the load-balancing maps: src/datapath/service.ts's ServiceWriter. */
export interface ServiceMapsWriter {
  apply(desired: ServiceMapsDesired, opts?: { resync?: boolean }): unknown;
}

/** Socket LB's reaper: destroys connected UDP sockets whose peer is one of `backends`. */
export type DestroyUdpSockets = (backends: Array<{ address: string; port: number }>, opts: { netns: string[] }) => unknown;

export interface ServiceRunStats {
  at: string;
  ms: number;
  /** Where the run's time went: reading its inputs (addresses, the store, derived slices), compiling, writing the maps; the rest is saving ids and destroying sockets. */
  inputsMs: number;
  compileMs: number;
  writeMs: number;
  frontends: number;
  sets: number;
  backends: number;
  /** Maglev tables computed this run (the rest came from the last run). */
  maglevComputed: number;
  /** Backends that left every set this run. */
  removed: number;
  /** The maps were written (false: no writer yet, compiled only). */
  programmed: boolean;
}

export interface AgentServices {
  reconciler: Reconciler;
  model(): ServiceModel | undefined;
  desired(): ServiceMapsDesired | undefined;
  last(): ServiceRunStats | undefined;
  /** A CNI ADD or DEL changed this node's endpoints (standalone: the derived slices follow). */
  endpointsChanged(): void;
  stop(): void;
}

export interface AgentServicesDeps {
  objects: ObjectStore;
  manager: Pick<EndpointManager, 'list'>;
  reconcilers: ReconcileLoop;
  rtnl: Rtnl;
  nodeName: string;
  stateDir: string;
  /** Standalone (a manifest directory): slices are derived for Services the manifests give none. */
  standalone: boolean;
  maglevTableSize: number;
  /** The loop's resync interval: at least this often the writer reads the maps back. */
  resyncMs: number;
  /** Absent: the datapath has no service maps yet; runs compile only (the API still shows them). */
  writer?: ServiceMapsWriter;
  destroyUdpSocketsTo?: DestroyUdpSockets;
  /** Collects the service conntrack (Datapath.gcServiceCt), when there is one. */
  gcServiceCt?: () => unknown;
  log: Logger;
}

type ServiceDatapath = Pick<Datapath, 'serviceMaps' | 'gcServiceCt' | 'destroyUdpSocketsTo'>;

/** What the datapath offers Services: the writer of its service maps, its conntrack collector and its reaper of UDP sockets. */
export function serviceHooks(datapath: ServiceDatapath, maglevTableSize: number): Pick<AgentServicesDeps, 'writer' | 'destroyUdpSocketsTo' | 'gcServiceCt'> {
  // A first collection now opens kelp_lb4_ct: the agent's descriptors are all open from the start.
  datapath.gcServiceCt();
  return {
    writer: new ServiceWriter(datapath.serviceMaps(), { maglevTableSize }),
    gcServiceCt: () => datapath.gcServiceCt(),
    destroyUdpSocketsTo: (backends, opts) => datapath.destroyUdpSocketsTo(backends, opts),
  };
}

/** --socket-lb in socket LB's terms. */
export function socketLbMode(choice: SocketLbChoice): SocketLbMode {
  return choice === 'on' ? 'all' : choice === 'hostns' ? 'host-only' : 'off';
}

/**
 * Socket LB as the flags say, once the service maps are written. Without --cgroup-root it is off
 * (an earlier agent's hooks detached): attaching to the machine's root cgroup would put this
 * agent's hooks on every process of the machine, other nodes' agents' (tests, benchmarks) too.
 */
export function startSocketLb(datapath: Pick<Datapath, 'enableSocketLb'>, opts: Pick<AgentOptions, 'socketLb' | 'cgroupRoot'>, log: Logger): SocketLbMode {
  let mode = socketLbMode(opts.socketLb);
  if (mode !== 'off' && !opts.cgroupRoot) {
    log.warn({ socketLb: opts.socketLb }, 'socket LB needs --cgroup-root: Services are balanced per packet only');
    mode = 'off';
  }
  datapath.enableSocketLb(mode === 'off' ? { mode } : { mode, cgroupRoot: opts.cgroupRoot });
  return mode;
}

export const SERVICE_KINDS: readonly Kind[] = ['Service', 'EndpointSlice', 'Node'];

const isLoopback = (ip: string) => ip.startsWith('127.');

export function startServices(deps: AgentServicesDeps): AgentServices {
  const { objects, log } = deps;
  const ids = new ServiceIds();
  const file = path.join(deps.stateDir, IDS_FILE);
  try {
    ids.restore(readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ err, file }, 'service ids not restored: numbering afresh');
  }
  let saved = ids.snapshot();
  const compiler = new ServiceCompiler(ids, { maglevTableSize: deps.maglevTableSize });
  const deriver = new SliceDeriver();
  // Endpoints on nodes the store no longer has drop out (src/service/endpoints.ts).
  const nodeFilter = new KnownNodeFilter();
  let model: ServiceModel | undefined;
  let desired: ServiceMapsDesired | undefined;
  let last: ServiceRunStats | undefined;
  let lastReadBack = 0;
  // The ids are saved once the run has reported, on the next turn of the event loop, not within
  // it: their JSON costs ~20 ms after a first run of 10,000 Services, time the run's caller would
  // wait for nothing. A crash in between loses only that run's numbering, as a crash between the
  // write and a save made in line already could: the next start restores the last saved ids (or
  // none), numbers the keys it meets afresh where they differ, and its first apply rewrites the
  // entries the maps hold under the old numbers (the writer reads the maps back and replaces what
  // differs).
  let saveAt: NodeJS.Immediate | undefined;
  const saveIds = () => {
    saveAt = undefined;
    try {
      const snap = ids.snapshot();
      if (snap === saved) return;
      writeFileSync(file + '.tmp', snap, { mode: 0o600 });
      renameSync(file + '.tmp', file);
      saved = snap;
    } catch (err) {
      // Tried again after the next run (saved is still the old text).
      log.warn({ err, file }, 'service ids not saved');
    }
  };

  const run = async () => {
    const t0 = process.hrtime.bigint();
    const nodeAddresses = (await deps.rtnl.listAddresses(undefined, 4)).map((a) => a.address).filter((ip) => !isLoopback(ip));
    const services = objects.list('Service');
    const nodes = objects.list('Node');
    let endpointSlices = objects.list('EndpointSlice');
    const endpoints = deps.manager.list();
    if (deps.standalone) {
      const localPodIps = new Map<string, string[]>();
      for (const rec of endpoints) {
        if (!rec.pod) continue;
        const key = `${rec.pod.namespace}/${rec.pod.name}`;
        localPodIps.set(key, [...(localPodIps.get(key) ?? []), ...rec.ips.map((i) => i.address.split('/')[0])]);
      }
      // Pods matter only to a Service with a selector (the store is listed whole for each kind).
      const pods = selectsAny(services) ? objects.list('Pod') : [];
      const derived = deriver.derive({ services, pods, nodes, slices: endpointSlices, localPodIps, nodeName: deps.nodeName });
      if (derived.length > 0) endpointSlices = [...endpointSlices, ...derived];
    }
    const misses = compiler.maglev.misses;
    endpointSlices = nodeFilter.apply(endpointSlices, nodes, deps.nodeName);
    const since = (t: bigint) => Number(process.hrtime.bigint() - t) / 1e6;
    const inputsMs = since(t0);
    const t1 = process.hrtime.bigint();
    const res = compiler.compile({ services, endpointSlices, nodes, nodeName: deps.nodeName, nodeAddresses });
    const compileMs = since(t1);
    const t2 = process.hrtime.bigint();
    if (deps.writer) {
      const resync = Date.now() - lastReadBack >= deps.resyncMs;
      deps.writer.apply(res.desired, { resync });
      if (resync) lastReadBack = Date.now();
    }
    const writeMs = since(t2);
    const gone = removedBackends(model, res.model);
    model = res.model;
    desired = res.desired;
    saveAt ??= setImmediate(saveIds);
    const udp = gone.filter((b) => b.protocol === 'UDP').map(({ address, port }) => ({ address, port }));
    if (udp.length > 0 && deps.destroyUdpSocketsTo) {
      // After the maps no longer hold them: a client reconnecting at once meets the new sets.
      try {
        deps.destroyUdpSocketsTo(udp, { netns: endpoints.map((e) => e.netns) });
      } catch (err) {
        log.warn({ err, backends: udp }, 'could not destroy UDP sockets to backends that left');
      }
    }
    for (const c of res.model.conflicts) log.warn(c, 'two Service ports claim one frontend: the first keeps it');
    last = {
      at: new Date().toISOString(),
      ms: since(t0),
      inputsMs,
      compileMs,
      writeMs,
      frontends: res.desired.frontends.length,
      sets: res.desired.sets.length,
      backends: res.model.backends.size,
      maglevComputed: compiler.maglev.misses - misses,
      removed: gone.length,
      programmed: deps.writer !== undefined,
    };
    log.debug(last, 'services reconciled');
  };

  const reconciler: Reconciler = {
    name: 'services',
    kinds: deps.standalone ? [...SERVICE_KINDS, 'Pod'] : SERVICE_KINDS,
    reconcile: run,
  };
  deps.reconcilers.add(reconciler);
  if (!deps.writer) log.warn('the datapath has no service maps: Services are compiled, not programmed');

  let gc: NodeJS.Timeout | undefined;
  if (deps.gcServiceCt) {
    const collect = deps.gcServiceCt;
    gc = setInterval(() => {
      try {
        collect();
      } catch (err) {
        log.warn({ err }, 'service conntrack collection failed');
      }
    }, CT_GC_MS);
    gc.unref();
  }

  return {
    reconciler,
    model: () => model,
    desired: () => desired,
    last: () => last,
    endpointsChanged: () => {
      if (deps.standalone) deps.reconcilers.markDirty('services');
    },
    stop: () => {
      if (gc) clearInterval(gc);
      if (saveAt) {
        clearImmediate(saveAt);
        saveIds();
      }
    },
  };
}
