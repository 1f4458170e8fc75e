// CNI requests, as forwarded by kelp-cni, served by the endpoint manager.
import path from 'node:path';
import {
  ActionRequest,
  CniCode,
  CniError,
  CniResult,
  decodeRequest,
  encodeResponse,
  pluginSocket,
  serveCni,
} from '../cni';
import { execDelegate } from '../cni/delegate';
import { EndpointError, EndpointManager } from '../endpoint/manager';
import type { EndpointRecord } from '../endpoint/state';
import { delQueueDirFor } from './delqueue';
import type { ApiRequest, ApiResponse } from './server';
import type { ObjectStore } from '../sources/store';
import type { Logger } from '../log';

const BUILTIN_IPAM = new Set(['kelp', 'kelp-ipam']);
/** Distinct ignored delQueueDir values logged, at most. */
const MAX_QUEUE_DIRS_LOGGED = 64;

export interface CniHandlerDeps {
  manager: EndpointManager;
  store: ObjectStore;
  log: Logger;
  /** False while the agent is starting or shutting down: ADD gets "try again later". */
  ready: () => boolean;
  /**
   * Runs after an endpoint exists and before ADD answers: the new pod's policy is programmed
   * (the datapath drops its traffic until then). A failure rolls the ADD back.
   */
  afterAdd?: (rec: EndpointRecord) => Promise<void>;
  /** After a DEL or GC removed endpoints (their policy entries go with the next run). */
  afterDel?: () => void;
  /** The node's routing settings (agent flags), which a config's VXLAN fields must agree with. */
  routing?: { mode: 'vxlan' | 'native'; vni: number; port: number };
  /** Each request served: its CNI_COMMAND, the plugin's exit code and the time taken (metrics). */
  onServed?: (command: string, exit: number, seconds: number) => void;
}

/**
 * A config's VXLAN fields against the agent's settings: they are the node's (one device, one
 * routing mode for every pod), so a config that says otherwise is a mistake to report, not a
 * setting to follow. Undefined when they agree or are absent.
 */
export function routingMismatch(conf: { vxlanId?: number; port?: number; directRouting?: boolean }, r: NonNullable<CniHandlerDeps['routing']>): CniError | undefined {
  const bad = (field: string, value: unknown, flag: string) =>
    new CniError(CniCode.InvalidConfig, `invalid ${field}`, `${JSON.stringify(value)} differs from the agent's ${flag}: routing to other nodes is the node's, set by the agent's flags`);
  if (conf.directRouting !== undefined && conf.directRouting !== (r.mode === 'native')) return bad('directRouting', conf.directRouting, `--routing-mode ${r.mode}`);
  if (r.mode === 'vxlan' && conf.vxlanId !== undefined && conf.vxlanId !== r.vni) return bad('vxlanId', conf.vxlanId, `--vxlan-id ${r.vni}`);
  if (r.mode === 'vxlan' && conf.port !== undefined && conf.port !== r.port) return bad('port', conf.port, `--vxlan-port ${r.port}`);
  return undefined;
}

/** The ipam section for kelp's own IPAM; undefined when there is none or it is delegated. */
function rawIpam(req: ActionRequest): unknown {
  const ipam = req.config.ipam;
  if (!ipam || !BUILTIN_IPAM.has(ipam.type)) return undefined;
  const { type: _type, ...rest } = ipam.raw;
  return rest;
}

/** The IPAM plugin to delegate to (SPEC §4), when `ipam.type` names one. */
function delegateType(req: ActionRequest): string | undefined {
  const type = req.config.ipam?.type;
  return type && !BUILTIN_IPAM.has(type) ? type : undefined;
}

function delegate(req: ActionRequest, command: 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC', log: Logger): Promise<CniResult | undefined> {
  return execDelegate({
    type: delegateType(req)!,
    command,
    path: req.path,
    // Marks the delegate as ours: kelp-cni refuses to run as one (it would loop back to us).
    env: { ...req.env, KELP_DELEGATED_BY: String(process.pid) },
    stdin: req.stdin,
    cniVersion: req.cniVersion,
    onStderr: (text) => log.info({ delegate: req.config.ipam?.type, command, stderr: text.trim() }, 'delegated plugin stderr'),
  });
}

/** Chained after an interface plugin: prevResult already has CNI_IFNAME inside CNI_NETNS. */
function chainedInterface(req: { config: { prevResult?: CniResult }; ifname: string; netns: string }): number | undefined {
  const prev = req.config.prevResult;
  if (!prev) return undefined;
  const i = prev.interfaces.findIndex((itf) => itf.name === req.ifname && itf.sandbox !== undefined);
  return i >= 0 ? i : undefined;
}

function toCni(e: unknown): unknown {
  if (!(e instanceof EndpointError)) return e;
  switch (e.kind) {
    case 'invalid-netns':
      return new CniError(CniCode.InvalidEnv, 'invalid CNI_NETNS', e.message);
    case 'unknown':
      return new CniError(CniCode.UnknownContainer, e.message);
    case 'ipam':
      if (e.ipamKind === 'exhausted') return new CniError(CniCode.FirstPluginCode + 10, 'no IP addresses available', e.message);
      if (e.ipamKind === 'invalid') return new CniError(CniCode.InvalidConfig, 'invalid ipam configuration', e.message);
      return new CniError(CniCode.FirstPluginCode + 11, 'IP address conflict', e.message);
    case 'exists':
      return new CniError(CniCode.FirstPluginCode + 12, 'attachment exists', e.message);
    case 'invalid':
      return new CniError(CniCode.InvalidConfig, 'kelp cannot attach to this interface', e.message);
    default:
      return new CniError(CniCode.FirstPluginCode, 'kelp could not set up the pod network', e.message);
  }
}

export function resultFor(rec: EndpointRecord): CniResult {
  return {
    interfaces: [
      { name: rec.hostIfname, mac: rec.hostMac },
      { name: rec.ifname, mac: rec.podMac, mtu: rec.mtu, sandbox: rec.netns },
    ],
    ips: rec.ips.map((ip) => ({ address: ip.address, gateway: ip.gateway, interface: 1 })),
    routes: rec.routes.map((r) => ({ dst: r.dst, gw: r.gw })),
    dns: {},
  };
}

/**
 * SPEC §2 ADD: a plugin given a prevResult outputs all of it plus its own changes. Our
 * interfaces go after the earlier ones, so our ips[].interface indexes move by as many.
 */
export function withPrevResult(prev: CniResult, ours: CniResult): CniResult {
  const offset = prev.interfaces.length;
  return {
    interfaces: [...prev.interfaces, ...ours.interfaces],
    ips: [...prev.ips, ...ours.ips.map((ip) => ({ ...ip, interface: ip.interface === undefined ? undefined : ip.interface + offset }))],
    routes: [...prev.routes, ...ours.routes],
    dns: Object.keys(ours.dns).length > 0 ? ours.dns : prev.dns,
  };
}

export function makeCniHandler(deps: CniHandlerDeps): (req: ApiRequest) => Promise<ApiResponse> {
  const { manager } = deps;
  /**
   * Configs from older agents (or written after their example) name a delQueueDir. kelp-cni
   * ignores it and queues next to the socket it tried, where this agent replays from: a config
   * cannot send DELs where no agent looks. Said once per value.
   */
  const queueDirsLogged = new Set<string>();
  const noteQueueDir = (req: ActionRequest): void => {
    const given = req.config.raw.delQueueDir;
    if (typeof given !== 'string' || given === '' || queueDirsLogged.has(given) || queueDirsLogged.size >= MAX_QUEUE_DIRS_LOGGED) return;
    const queue = delQueueDirFor(pluginSocket(req.config.agentSocket, req.env));
    if (path.resolve(given) === queue) return;
    queueDirsLogged.add(given);
    deps.log.warn({ delQueueDir: given, queue, network: req.config.name }, 'delQueueDir in the network config is ignored: kelp-cni queues DELs next to the agent socket');
  };
  /** afterAdd, undoing the ADD when it fails (the endpoint, then what a delegate allocated). */
  const settle = async (rec: EndpointRecord, dtype: string | undefined, req: ActionRequest): Promise<void> => {
    if (!deps.afterAdd) return;
    try {
      await deps.afterAdd(rec);
    } catch (e) {
      deps.log.error({ err: e, containerId: rec.containerId }, 'ADD rolled back: the endpoint could not be completed');
      await manager.del({ network: rec.network, containerId: rec.containerId, ifname: rec.ifname }, rawIpamLenient(req)).catch((err: unknown) => deps.log.error({ err }, 'rolling back the ADD failed'));
      if (dtype) await delegate(req, 'DEL', deps.log).catch(() => undefined);
      throw new CniError(CniCode.FirstPluginCode, 'kelp could not program the pod\'s policy', (e as Error).message);
    }
  };
  const handle = async (req: ActionRequest): Promise<CniResult | void> => {
    const network = req.config.name;
    noteQueueDir(req);
    try {
      switch (req.command) {
        case 'ADD': {
          if (!deps.ready()) throw new CniError(CniCode.TryAgainLater, 'kelp agent is starting; try again later');
          const mismatch = deps.routing && routingMismatch(req.config, deps.routing);
          if (mismatch) throw mismatch;
          const pod = req.args.podNamespace && req.args.podName ? { namespace: req.args.podNamespace, name: req.args.podName, uid: req.args.podUid } : undefined;
          const chained = chainedInterface(req);
          if (chained !== undefined) {
            const prev = req.config.prevResult!;
            // ips without an interface index are taken as the chained interface's (older plugins).
            const ips = prev.ips.filter((ip) => ip.interface === undefined || ip.interface === chained).map((ip) => ({ address: ip.address, gateway: ip.gateway }));
            const rec = await manager.addChained({ network, containerId: req.containerId, ifname: req.ifname, netns: req.netns, ips, pod, hook: req.config.podHook });
            await settle(rec, undefined, req);
            // kelp changes no interface, address or route: the result is the earlier plugin's.
            return prev;
          }
          let delegated: { type: string; ips: Array<{ address: string; gateway?: string }>; routes: Array<{ dst: string; gw?: string }> } | undefined;
          const dtype = delegateType(req);
          if (dtype) {
            const res = (await delegate(req, 'ADD', deps.log))!;
            delegated = { type: dtype, ips: res.ips.map((ip) => ({ address: ip.address, gateway: ip.gateway })), routes: res.routes.map((r) => ({ dst: r.dst, gw: r.gw })) };
            if (!delegated.ips.some((ip) => !ip.address.includes(':') && ip.gateway)) {
              await delegate(req, 'DEL', deps.log).catch(() => undefined);
              throw new CniError(CniCode.InvalidConfig, `ipam plugin ${dtype} returned no IPv4 address with a gateway`, JSON.stringify(res.ips));
            }
          }
          const ipam = rawIpam(req);
          const requestedIps = [...(req.args.ips ?? []), ...(req.config.runtimeConfig.ips ?? []), ...(req.config.argsIps ?? [])].map((ip) => ip.split('/')[0]);
          let rec;
          try {
            rec = await manager.add({
              delegated,
              network,
              containerId: req.containerId,
              ifname: req.ifname,
              netns: req.netns,
              mtu: req.config.mtu,
              ipam,
              requestedIps: [...new Set(requestedIps)],
              mac: req.config.runtimeConfig.mac,
              pod,
              hook: req.config.podHook,
            });
          } catch (e) {
            // SPEC §4: what the delegate allocated is released when a later step of the ADD fails.
            if (dtype) await delegate(req, 'DEL', deps.log).catch((err: unknown) => deps.log.error({ err }, 'delegated IPAM DEL after a failed ADD failed'));
            throw e;
          }
          await settle(rec, dtype, req);
          const result = resultFor(rec);
          if (req.config.dns && Object.keys(req.config.dns).length > 0) result.dns = req.config.dns;
          return req.config.prevResult ? withPrevResult(req.config.prevResult, result) : result;
        }
        case 'DEL':
          // Our own resources first, whatever the delegate then says (SPEC §4).
          await manager.del({ network, containerId: req.containerId, ifname: req.ifname }, rawIpamLenient(req));
          deps.afterDel?.();
          if (delegateType(req)) await delegate(req, 'DEL', deps.log);
          return;
        case 'CHECK': {
          const prev = req.prevResult;
          const ips = prev.ips.map((ip) => ip.address);
          const problems = await manager.check({ network, containerId: req.containerId, ifname: req.ifname }, { ips, netns: req.netns });
          if (problems.length > 0) throw new CniError(CniCode.FirstPluginCode + 20, 'kelp endpoint is not healthy', problems.join('; '));
          if (delegateType(req)) await delegate(req, 'CHECK', deps.log);
          return;
        }
        case 'STATUS':
          if (!deps.ready()) throw new CniError(CniCode.NotAvailable, 'kelp agent is not ready');
          if (delegateType(req)) await delegate(req, 'STATUS', deps.log);
          return;
        case 'GC': {
          // The delegate gets GC with the same stdin, list or not (SPEC §2 GC); it decides.
          const delegateGc = delegateType(req) ? delegate(req, 'GC', deps.log).then(() => undefined, (e: unknown) => e) : Promise.resolve(undefined);
          if (!req.validAttachments) {
            const err = await delegateGc;
            if (err) throw err;
            return;
          }
          const errors = await manager.gc(
            network,
            req.validAttachments.map((a) => ({ containerId: a.containerID, ifname: a.ifname })),
            rawIpamLenient(req),
          );
          deps.afterDel?.();
          const derr = await delegateGc;
          if (derr) errors.push(`delegated IPAM: ${(derr as Error).message}`);
          if (errors.length) throw new CniError(CniCode.FirstPluginCode + 30, 'GC finished with errors', errors.join('; '));
          return;
        }
      }
    } catch (e) {
      throw toCni(e);
    }
  };
  return async (api) => {
    let wire;
    try {
      wire = decodeRequest(api.body);
    } catch (e) {
      const err = e as CniError;
      return encodeResponse({ exit: 1, stdout: JSON.stringify(err.toCniJson('1.1.0')) + '\n' });
    }
    const t0 = process.hrtime.bigint();
    const res = await serveCni(wire.env, wire.stdin, handle);
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    deps.log.debug({ cmd: wire.env.CNI_COMMAND, containerId: wire.env.CNI_CONTAINERID, exit: res.exit, ms }, 'cni request');
    deps.onServed?.(wire.env.CNI_COMMAND ?? 'unknown', res.exit, ms / 1e3);
    return encodeResponse(res);
  };
}

/** DEL and GC must not fail on an ipam section kelp would refuse on ADD. */
function rawIpamLenient(req: ActionRequest): unknown {
  try {
    return rawIpam(req);
  } catch {
    return undefined;
  }
}
