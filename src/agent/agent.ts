// The agent process: owns every piece of kernel state kelp creates on this node.
// Start-up: datapath (re-opening pins) → endpoint records → masquerade (pinned uplink links
// updated in place) → sources → restore (endpoints, queued DELs, sweep of leftovers; see
// src/endpoint/restore.ts) → API socket → CNI files. ADDs are refused until the socket is
// listening and restore is done; once the conflist is written runtimes may call us, so it comes
// last. A SIGKILL at any point leaves pods connected: maps and links are pinned.
import { mkdirSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { createLogger, Logger } from '../log';
import { Datapath } from '../datapath/loader';
import { EndpointManager } from '../endpoint/manager';
import { EndpointStore } from '../endpoint/state';
import { Ipam, parseIpamConfig } from '../ipam';
import { restoreNode } from '../endpoint/restore';
import { Rtnl, setIpv4Forwarding } from '../netlink';
import { ObjectStore } from '../sources/store';
import { ManifestDir, parseManifests } from '../sources/manifests';
import { IMPLICIT_NAMESPACES, KelpObject, objectKey, objectRef } from '../sources/objects';
import { ApiServer, checkRunDir, HttpError } from './server';
import { makeCniHandler } from './cni-handler';
import { DEL_QUEUE_NAME, DelQueue, delQueueDirFor } from './delqueue';
import { buildConflist, installCni } from './install';
import { AgentOptions } from './options';
import type { CounterView, EndpointView, PodView } from './views';
import { dropReasonName } from '../datapath/drop';
import { MAP_DESCRIPTIONS } from '../datapath/dump';
import { CNI_HTTP_PATH } from '../cni';

export interface Agent {
  socketPath: string;
  stop(): Promise<void>;
}

/** Finds the masquerade uplink: the flag, else the device of the IPv4 default route. */
async function findUplink(rtnl: Rtnl, name: string | undefined): Promise<{ ifindex: number; ifname: string; ip: string } | undefined> {
  let link;
  if (name) {
    link = await rtnl.link(name);
    if (!link) throw new Error(`--uplink ${name}: no such interface`);
  } else {
    const def = (await rtnl.listRoutes({ family: 4 })).find((r) => r.dst === '0.0.0.0/0' && r.dev);
    if (!def) return undefined;
    link = await rtnl.link(def.dev!);
    if (!link) return undefined;
  }
  const addr = (await rtnl.listAddresses(link.index, 4)).find((a) => a.scope === 0);
  if (!addr) throw new Error(`uplink ${link.name} has no IPv4 address to masquerade to`);
  return { ifindex: link.index, ifname: link.name, ip: addr.address };
}

export async function startAgent(opts: AgentOptions, log: Logger = createLogger({ level: opts.logLevel, file: opts.logFile })): Promise<Agent> {
  const socketPath = path.join(opts.runDir, 'kelp.sock');
  checkRunDir(opts.runDir); // refuses a run dir others could write, before anything is made
  mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
  let ready = false;

  // Pods reach beyond the node through its stack: this node (network namespace) forwards.
  setIpv4Forwarding(true);

  const datapath = new Datapath({ bpfRoot: opts.bpfRoot, log });
  const { bpffs } = datapath;
  if (bpffs.mounted) log.info({ mountpoint: bpffs.mounted }, 'mounted a bpffs for the pin root');
  if (bpffs.persistent === 'yes') log.info({ bpfRoot: bpffs.root, why: bpffs.reason }, 'pins outlive the agent');
  else if (bpffs.persistent === 'unknown') log.warn({ bpfRoot: bpffs.root }, `pins may not outlive this agent: ${bpffs.reason}`);
  else log.warn({ bpfRoot: bpffs.root }, `PINS WILL NOT OUTLIVE THIS AGENT: ${bpffs.reason}`);
  const store = new EndpointStore(opts.stateDir);
  const { loaded, broken } = store.load();
  if (broken.length) log.warn({ broken }, 'unreadable endpoint records ignored');
  const ipamDir = path.join(opts.stateDir, 'ipam');
  const defaultIpam = (network: string) => parseIpamConfig(network, { ranges: [[{ subnet: opts.podCidr }]], dataDir: ipamDir });
  defaultIpam(opts.networkName); // validates --pod-cidr before anything else is created
  const ipam = new Ipam();
  const manager = new EndpointManager(store, ipam, datapath, { defaultMtu: opts.mtu, defaultIpam, log });
  // A plugin after kelp may change the pod's MAC (tuning): anti-spoofing reports it as SRC_MAC
  // drops, and the endpoint follows the interface. At most one refresh in flight per endpoint.
  const refreshing = new Set<number>();
  datapath.watchEvents((ev) => {
    // ARP_SPOOF charged to an endpoint is its own address from another MAC: the pod's first ARP
    // after such a change (its neighbour entry for the gateway may be gone) reports it so.
    const macChange = ev.reasonName === 'SRC_MAC' || ev.reasonName === 'ARP_SPOOF';
    if (!macChange || ev.epId === 0 || refreshing.has(ev.epId)) return;
    refreshing.add(ev.epId);
    void manager
      .refreshPodMac(ev.epId)
      .catch((err: unknown) => log.warn({ err, epId: ev.epId }, 'could not refresh the pod MAC'))
      .finally(() => refreshing.delete(ev.epId));
  });

  let masq: { uplink: string; address: string } | null = null;
  if (opts.masquerade) {
    const up = await findUplink(manager.hostNs, opts.uplink);
    if (up) {
      datapath.enableMasquerade({ uplinkIfindex: up.ifindex, uplinkIfname: up.ifname, masqIp: up.ip, podCidr: opts.podCidr });
      masq = { uplink: up.ifname, address: up.ip };
      log.info({ uplink: up.ifname, address: up.ip }, 'masquerade enabled');
    } else {
      log.warn('no default route: masquerade disabled');
    }
  }

  const objects = new ObjectStore();
  const manifests = opts.manifests ? new ManifestDir(opts.manifests, objects, log) : undefined;
  await manifests?.start();

  const handleCni = makeCniHandler({ manager, store: objects, log, ready: () => ready });
  const queue = new DelQueue({
    dir: delQueueDirFor(socketPath),
    log,
    handle: handleCni,
    createdAt: (ref) => {
      const rec = manager.get(ref);
      return rec ? Date.parse(rec.createdAt) : undefined;
    },
  });
  queue.ensure();
  // Where agents before the queue moved next to the socket kept it.
  queue.adopt(path.join(opts.stateDir, DEL_QUEUE_NAME));
  const restored = await restoreNode({ manager, store, datapath, ipam, ipamDir, defaultIpam, stateDir: opts.stateDir, queue, log });

  const server = new ApiServer(log);
  server.route('POST', CNI_HTTP_PATH, handleCni);
  server.route('GET', '/v1/healthz', () => ({ status: ready ? 200 : 503, body: { ready } }));
  server.route('GET', '/v1/endpoints', () => ({
    status: 200,
    body: manager.list().map((r): EndpointView => ({
      id: r.id,
      network: r.network,
      containerId: r.containerId,
      ifname: r.ifname,
      ip: r.ips.map((i) => i.address).join(','),
      hostIfname: r.hostIfname,
      hostIfindex: r.hostIfindex,
      pod: r.pod ? `${r.pod.namespace}/${r.pod.name}` : null,
      state: 'ready',
    })),
  }));
  server.route('GET', '/v1/pods', () => {
    const eps = manager.list();
    const rows = objects.list('Pod').map((p): PodView => {
      const ep = eps.find((e) => e.pod?.namespace === p.metadata.namespace && e.pod?.name === p.metadata.name);
      return {
        namespace: p.metadata.namespace,
        name: p.metadata.name,
        ip: ep?.ips.map((i) => i.address.split('/')[0]).join(','),
        interface: ep ? `${ep.ifname}@${ep.hostIfname}` : undefined,
        containerId: ep?.containerId,
        state: ep ? 'Running' : 'Pending',
        labels: p.metadata.labels,
      };
    });
    // Pods that arrived by CNI without a Pod object still show up, so nothing is hidden.
    for (const ep of eps) {
      if (ep.pod && objects.get('Pod', ep.pod.namespace, ep.pod.name)) continue;
      rows.push({
        namespace: ep.pod?.namespace ?? null,
        name: ep.pod?.name ?? ep.containerId.slice(0, 12),
        ip: ep.ips.map((i) => i.address.split('/')[0]).join(','),
        interface: `${ep.ifname}@${ep.hostIfname}`,
        containerId: ep.containerId,
        state: 'Running (no Pod object)',
        labels: {},
      });
    }
    return { status: 200, body: rows };
  });
  server.route('GET', '/v1/status', () => ({
    status: 200,
    body: {
      ready,
      node: opts.nodeName,
      podCidr: opts.podCidr,
      endpoints: manager.list().length,
      masquerade: masq,
      bpffs,
      maps: datapath.mapStats(),
      attached: manager.list().map((r) => {
        const problems = datapath.check(r);
        return {
          ifname: r.hostIfname,
          ifindex: r.hostIfindex,
          ingress: problems.some((p) => p.includes('kelp_from_pod')) ? [] : ['kelp_from_pod'],
          egress: problems.some((p) => p.includes('kelp_to_pod')) ? [] : ['kelp_to_pod'],
        };
      }),
      problems: manifests ? [...manifests.problems.values()] : [],
    },
  }));
  // Every non-zero counter, kelp_metrics and kelp_metrics_fwd added up, with the pod it belongs to.
  server.route('GET', '/v1/counters', () => {
    const eps = new Map(manager.list().map((r) => [r.id, r]));
    return {
      status: 200,
      body: datapath.metrics().map((e): CounterView => {
        const pod = eps.get(e.key.epId)?.pod;
        return {
          endpoint: e.key.epId,
          pod: pod ? `${pod.namespace}/${pod.name}` : null,
          direction: e.key.dir === 1 ? 'from-pod' : 'to-pod',
          reason: e.key.reason === 0 ? 'forwarded' : dropReasonName(e.key.reason),
          packets: e.value.packets.toString(),
          bytes: e.value.bytes.toString(),
        };
      }),
    };
  });
  server.route('GET', '/v1/maps/:name', (req) => {
    const name = req.params.name;
    if (!datapath.mapNames().includes(name)) throw new HttpError(404, `no map named ${name} (maps: ${datapath.mapNames().join(', ')})`);
    return { status: 200, body: { name, description: MAP_DESCRIPTIONS[name], entries: datapath.dump(name) } };
  });
  const applyObjects = async (body: Buffer, remove: boolean) => {
    if (!manifests) throw new HttpError(409, 'the agent has no manifest directory (start it with --manifests DIR)');
    let docs: unknown;
    try {
      docs = (JSON.parse(body.toString('utf8')) as { objects?: unknown }).objects;
    } catch {
      throw new HttpError(400, 'body must be JSON {"objects": [...]}');
    }
    let parsed: KelpObject[];
    try {
      parsed = parseManifests(JSON.stringify({ kind: 'List', items: docs }), 'request');
    } catch (e) {
      throw new HttpError(400, (e as Error).message);
    }
    if (!remove) {
      // As the API server does: a namespaced object needs its namespace, here or in this request.
      const known = new Set([...IMPLICIT_NAMESPACES, ...objects.list('Namespace').map((n) => n.metadata.name)]);
      for (const o of parsed) if (o.kind === 'Namespace') known.add(o.metadata.name);
      for (const o of parsed) {
        const ns = o.metadata.namespace;
        if (ns !== undefined && !known.has(ns)) throw new HttpError(404, `${objectRef(o)}: metadata.namespace: namespace ${JSON.stringify(ns)} not found (create it first, or in the same apply)`);
      }
    }
    const results: Array<{ key: string; action: string }> = [];
    for (const o of parsed) {
      const key = objectKey(o);
      const ref = objectRef(o);
      const file = path.join(manifests.dir, `${key.replace(/\//g, '_').replace(/__/g, '_')}.json`);
      if (remove) {
        await fsp.rm(file, { force: true });
        results.push({ key: ref, action: 'deleted' });
      } else {
        const existed = objects.get(o.kind, o.metadata.namespace, o.metadata.name) !== undefined;
        const tmp = path.join(manifests.dir, `.${path.basename(file)}.tmp`);
        await fsp.writeFile(tmp, JSON.stringify(o, null, 2));
        await fsp.rename(tmp, file);
        results.push({ key: ref, action: existed ? 'configured' : 'created' });
      }
    }
    await manifests.scan();
    return { status: 200, body: { results } };
  };
  server.route('POST', '/v1/objects', (req) => applyObjects(req.body, false));
  server.route('DELETE', '/v1/objects', (req) => applyObjects(req.body, true));

  await server.listen(socketPath);
  ready = true;
  // A DEL queued in the instant between the replay in restore and the socket accepting
  // connections would wait for the next sweep: look once more now.
  await queue.replay().catch((err: unknown) => log.warn({ err }, 'DEL queue replay failed'));
  queue.startSweeping(5_000);
  if (opts.installCni) {
    const installed = installCni(
      opts.cniBinDir,
      opts.cniConfDir,
      buildConflist({ networkName: opts.networkName, socketPath, mtu: opts.mtu, podCidr: opts.podCidr, masquerade: opts.masquerade }),
    );
    log.info(installed, 'CNI plugin and network config installed');
  }
  log.info({ socket: socketPath, endpoints: loaded, restored: restored.restored, podCidr: opts.podCidr }, 'kelp agent ready');

  return {
    socketPath,
    async stop() {
      ready = false;
      await queue.stop();
      await server.close();
      manifests?.stop();
      manager.close();
      datapath.close();
      if (bpffs.persistent !== 'no') log.info('kelp agent stopped; pinned maps and links keep pods connected');
      else log.warn(`kelp agent stopped; its pins go with its mount namespace: ${bpffs.reason}`);
    },
  };
}

export async function runAgent(opts: AgentOptions): Promise<void> {
  const log = createLogger({ level: opts.logLevel, file: opts.logFile });
  // Handlers first: a signal during start-up stops the agent too. Start-up leaves nothing a
  // SIGKILL would not (pins, records), so exiting then is as safe as after it.
  let agent: Agent | undefined;
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, agent ? 'stopping' : 'stopping during start-up');
    if (!agent) process.exit(0);
    void agent.stop().finally(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  try {
    agent = await startAgent(opts, log);
  } catch (err) {
    log.fatal({ err }, 'kelp agent could not start');
    throw err;
  }
  if (stopping) void agent.stop().finally(() => process.exit(0));
}
