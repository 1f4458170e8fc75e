// CNI requests, as forwarded by kelp-cni, served by the endpoint manager.
import {
  ActionRequest,
  CniCode,
  CniError,
  CniResult,
  decodeRequest,
  encodeResponse,
  serveCni,
} from '../cni';
import { EndpointError, EndpointManager } from '../endpoint/manager';
import type { EndpointRecord } from '../endpoint/state';
import type { ApiRequest, ApiResponse } from './server';
import type { ObjectStore } from '../sources/store';
import type { Logger } from '../log';

const BUILTIN_IPAM = new Set(['kelp', 'kelp-ipam']);

export interface CniHandlerDeps {
  manager: EndpointManager;
  store: ObjectStore;
  log: Logger;
  /** False while the agent is starting or shutting down: ADD gets "try again later". */
  ready: () => boolean;
}

function rawIpam(req: ActionRequest): unknown {
  const ipam = req.config.ipam;
  if (!ipam) return undefined;
  if (!BUILTIN_IPAM.has(ipam.type)) {
    throw new CniError(CniCode.UnsupportedField, `ipam.type ${JSON.stringify(ipam.type)} is not supported`, 'kelp allocates addresses itself (ipam.type "kelp", or no ipam section); delegating to IPAM plugins is not implemented yet');
  }
  const { type: _type, ...rest } = ipam.raw;
  return rest;
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
  const handle = async (req: ActionRequest): Promise<CniResult | void> => {
    const network = req.config.name;
    try {
      switch (req.command) {
        case 'ADD': {
          if (!deps.ready()) throw new CniError(CniCode.TryAgainLater, 'kelp agent is starting; try again later');
          const ipam = rawIpam(req);
          const requestedIps = [...(req.args.ips ?? []), ...(req.config.runtimeConfig.ips ?? []), ...(req.config.argsIps ?? [])].map((ip) => ip.split('/')[0]);
          const pod = req.args.podNamespace && req.args.podName ? { namespace: req.args.podNamespace, name: req.args.podName, uid: req.args.podUid } : undefined;
          const rec = await manager.add({
            network,
            containerId: req.containerId,
            ifname: req.ifname,
            netns: req.netns,
            mtu: req.config.mtu,
            ipam,
            requestedIps: [...new Set(requestedIps)],
            mac: req.config.runtimeConfig.mac,
            pod,
          });
          const result = resultFor(rec);
          if (req.config.dns && Object.keys(req.config.dns).length > 0) result.dns = req.config.dns;
          return req.config.prevResult ? withPrevResult(req.config.prevResult, result) : result;
        }
        case 'DEL':
          await manager.del({ network, containerId: req.containerId, ifname: req.ifname }, rawIpamLenient(req));
          return;
        case 'CHECK': {
          const prev = req.prevResult;
          const ips = prev.ips.map((ip) => ip.address);
          const problems = await manager.check({ network, containerId: req.containerId, ifname: req.ifname }, { ips, netns: req.netns });
          if (problems.length > 0) throw new CniError(CniCode.FirstPluginCode + 20, 'kelp endpoint is not healthy', problems.join('; '));
          return;
        }
        case 'STATUS':
          if (!deps.ready()) throw new CniError(CniCode.NotAvailable, 'kelp agent is not ready');
          return;
        case 'GC': {
          if (!req.validAttachments) return;
          const errors = await manager.gc(
            network,
            req.validAttachments.map((a) => ({ containerId: a.containerID, ifname: a.ifname })),
            rawIpamLenient(req),
          );
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
    deps.log.debug({ cmd: wire.env.CNI_COMMAND, containerId: wire.env.CNI_CONTAINERID, exit: res.exit, ms: Number(process.hrtime.bigint() - t0) / 1e6 }, 'cni request');
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
