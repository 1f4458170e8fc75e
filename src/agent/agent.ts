// The agent process: owns every piece of kernel state kelp creates on this node. This file is
// wiring; the API's routes are in ./routes/.
// Start-up: datapath (re-opening pins) → endpoint records → masquerade (pinned uplink links
// updated in place) → sources, synced → reconcilers → restore (endpoints, queued DELs, sweep of
// leftovers; see src/endpoint/restore.ts) → API socket → CNI files. ADDs are refused until the socket is
// listening and restore is done; once the conflist is written runtimes may call us, so it comes
// last. A SIGKILL at any point leaves pods connected: maps and links are pinned.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { createLogger, Logger } from '../log';
import { Datapath } from '../datapath/loader';
import { EndpointManager } from '../endpoint/manager';
import { EndpointStore } from '../endpoint/state';
import { Ipam, parseIpamConfig } from '../ipam';
import { restoreNode } from '../endpoint/restore';
import { Rtnl, setIpv4Forwarding } from '../netlink';
import { ObjectStore } from '../sources/store';
import { ManifestDir } from '../sources/manifests';
import type { KubernetesSource } from '../sources/kubernetes';
import { allSynced, StateSource } from '../sources/source';
import { ReconcileLoop } from '../reconcile/loop';
import { nodeAddress } from '../sources/objects/node';
import { endpointsReconciler } from '../reconcile/endpoints';
import { AgentPolicy, startPolicy } from './policy';
import { AgentServices, serviceHooks, startServices, startSocketLb } from './services';
import { AgentNodes, nodeNoMasquerade, podMtuFor, startNodes } from './nodes';
import { ApiServer, checkRunDir } from './server';
import type { RouteContext } from './routes/context';
import { statusRoutes } from './routes/status';
import { viewRoutes } from './routes/views';
import { objectRoutes } from './routes/objects';
import { policyRoutes } from './routes/policy';
import { serviceRoutes } from './routes/services';
import { nodeRoutes } from './routes/nodes';
import { flowRoutes } from './routes/flows';
import { pageRoutes } from './routes/page';
import type { EventCounter } from '../datapath/events';
import type { Observe } from '../observe';
import { startObserve } from '../observe/agent';
import { makeCniHandler } from './cni-handler';
import { DEL_QUEUE_NAME, DelQueue, delQueueDirFor } from './delqueue';
import { buildConflist, installCni } from './install';
import { AgentOptions, DEFAULT_POD_CIDR, policyMapSizes } from './options';
import { CNI_HTTP_PATH } from '../cni';
import { KelpMetrics } from '../metrics/exporter';
import { formatAddress, MetricsServer, parseMetricsAddress } from '../metrics/server';
import { PolicyVerdictNames, readVerdictCounters } from '../metrics/verdicts';
import { mapPressure } from '../metrics/maps';

export interface Agent {
  socketPath: string;
  /** Where /metrics (and the node page) are served; undefined with --metrics-address ''. */
  metricsAddress?: string;
  stop(): Promise<void>;
}

/**
 * The node's pod CIDR: the flag; else this node's Node object's first IPv4 spec.podCIDRs
 * (allocated by the controller manager in Kubernetes mode, written in its manifest standalone);
 * else, standalone, the default.
 */
function resolvePodCidr(opts: AgentOptions, objects: ObjectStore, kubernetes: boolean): string {
  if (opts.podCidr) return opts.podCidr;
  const node = objects.get('Node', undefined, opts.nodeName);
  if (!node) {
    if (!kubernetes) return DEFAULT_POD_CIDR;
    throw new Error(`no --pod-cidr, and the API has no Node named ${JSON.stringify(opts.nodeName)} to take it from (is --node-name right?)`);
  }
  const cidr = node.spec.podCIDRs.find((c) => !c.includes(':'));
  if (!cidr) {
    if (!kubernetes && node.spec.podCIDRs.length === 0) return DEFAULT_POD_CIDR;
    throw new Error(`no --pod-cidr, and Node ${opts.nodeName} has no IPv4 spec.podCIDRs (does the controller manager allocate node CIDRs?)`);
  }
  return cidr;
}

/**
 * Finds the uplink (masquerade, the VXLAN overhead's MTU, native routes): the flag; else the
 * device holding the Node's InternalIP, masquerading to that address (a standalone Node whose
 * address no interface holds falls through: its manifest may describe another machine); else
 * the device of the IPv4 default route.
 */
async function findUplink(rtnl: Rtnl, name: string | undefined, nodeIp: string | undefined, kubernetes: boolean): Promise<{ ifindex: number; ifname: string; ip?: string; mtu: number } | undefined> {
  let link;
  const held = nodeIp && !nodeIp.includes(':') && !name ? (await rtnl.listAddresses(undefined, 4)).find((a) => a.address === nodeIp) : undefined;
  if (name) {
    link = await rtnl.link(name);
    if (!link) throw new Error(`--uplink ${name}: no such interface`);
  } else if (held || (kubernetes && nodeIp && !nodeIp.includes(':'))) {
    if (!held) throw new Error(`the Node's InternalIP ${nodeIp} is on no interface of this node (pass --uplink)`);
    link = await rtnl.link(held.ifindex);
    if (!link) throw new Error(`the Node's InternalIP ${nodeIp}: its interface vanished`);
    return { ifindex: link.index, ifname: link.name, ip: held.address, mtu: link.mtu };
  } else {
    const def = (await rtnl.listRoutes({ family: 4 })).find((r) => r.dst === '0.0.0.0/0' && r.dev);
    if (!def) return undefined;
    link = await rtnl.link(def.dev!);
    if (!link) return undefined;
  }
  const addr = (await rtnl.listAddresses(link.index, 4)).find((a) => a.scope === 0);
  // No address is an error only for masquerade (below): the MTU and native routes need none.
  return { ifindex: link.index, ifname: link.name, ip: addr?.address, mtu: link.mtu };
}

export async function startAgent(opts: AgentOptions, log: Logger = createLogger({ level: opts.logLevel, file: opts.logFile })): Promise<Agent> {
  const socketPath = path.join(opts.runDir, 'kelp.sock');
  checkRunDir(opts.runDir); // refuses a run dir others could write, before anything is made
  mkdirSync(opts.stateDir, { recursive: true, mode: 0o700 });
  let ready = false;

  // Pods reach beyond the node through its stack: this node (network namespace) forwards.
  setIpv4Forwarding(true);

  const datapath = new Datapath({ bpfRoot: opts.bpfRoot, log, mapSizes: policyMapSizes(opts) });
  const { bpffs } = datapath;
  // Read on scrape (the server listens once policy and observe below exist); the timings below
  // are observed into it as they happen.
  const verdictNames = new PolicyVerdictNames();
  const metrics = new KelpMetrics({
    counters: () => datapath.metrics(),
    maps: () => mapPressure(datapath),
    verdicts: () =>
      verdictNames.samples(
        readVerdictCounters(datapath.map('kelp_policy_verdicts')),
        (policy?.model()?.policies ?? []).map((p) => ({ id: p.id, kind: p.spec.kind, ref: p.spec.ref })),
      ),
    events: () => observe?.stats(),
  });
  // Other read-only pages mount on it with metricsServer.route() before it listens.
  const metricsAt = parseMetricsAddress(opts.metricsAddress);
  const metricsServer = metricsAt ? new MetricsServer(metrics.registry, log) : undefined;
  if (bpffs.mounted) log.info({ mountpoint: bpffs.mounted }, 'mounted a bpffs for the pin root');
  if (bpffs.persistent === 'yes') log.info({ bpfRoot: bpffs.root, why: bpffs.reason }, 'pins outlive the agent');
  else if (bpffs.persistent === 'unknown') log.warn({ bpfRoot: bpffs.root }, `pins may not outlive this agent: ${bpffs.reason}`);
  else log.warn({ bpfRoot: bpffs.root }, `PINS WILL NOT OUTLIVE THIS AGENT: ${bpffs.reason}`);
  // A --pod-cidr given is checked before anything waits for a source.
  if (opts.podCidr) parseIpamConfig(opts.networkName, { ranges: [[{ subnet: opts.podCidr }]] });

  // Sources → store → reconcilers. Nothing is restored, swept or reconciled before every source
  // has synced; until then pods run on the pinned datapath and CNI waits (the socket is not yet
  // listening: kelp-cni answers ADD with code 11 and queues DELs).
  const objects = new ObjectStore();
  const manifests = opts.manifests ? new ManifestDir(opts.manifests, objects, log) : undefined;
  // The client library is loaded in Kubernetes mode only (its ESM graph costs memory and start time).
  let kube: KubernetesSource | undefined;
  if (opts.kubeconfig || opts.inCluster) {
    const [{ KubernetesSource: Source }, { KubeClient }] = await Promise.all([import('../sources/kubernetes'), import('../sources/kube/client')]);
    kube = new Source(objects, { client: KubeClient.load(opts.kubeconfig), log });
  }
  const sources: StateSource[] = [manifests, kube].filter((x): x is NonNullable<typeof x> => x !== undefined);
  for (const src of sources) await src.start();
  if (kube) log.info('waiting for the Kubernetes API to sync');
  await allSynced(sources);
  const reconcilers = new ReconcileLoop(objects, {
    log,
    resyncMs: opts.resyncInterval * 1000,
    onRun: (r) => metrics.observeReconcile(r.name, r.ok, r.seconds, r.sinceChangeSeconds),
  });
  await reconcilers.start(sources);

  const podCidr = resolvePodCidr(opts, objects, kube !== undefined);
  // The node's own address as the cluster knows it: masquerade goes out there.
  const nodeObj = objects.get('Node', undefined, opts.nodeName);
  const nodeIp = nodeObj ? nodeAddress(nodeObj, 'InternalIP') : undefined;
  // The underlay, before any pod is set up: the pod MTU follows its MTU.
  const hostNs = Rtnl.open();
  const up = await findUplink(hostNs, opts.uplink, nodeIp, kube !== undefined);
  const podMtu = podMtuFor(opts, up?.mtu);
  const eff = { ...opts, podCidr, mtu: podMtu };

  const store = new EndpointStore(opts.stateDir);
  const { loaded, broken } = store.load();
  if (broken.length) log.warn({ broken }, 'unreadable endpoint records ignored');
  const ipamDir = path.join(opts.stateDir, 'ipam');
  const defaultIpam = (network: string) => parseIpamConfig(network, { ranges: [[{ subnet: podCidr }]], dataDir: ipamDir });
  defaultIpam(opts.networkName); // validates the pod CIDR before anything else is created
  const ipam = new Ipam();
  const manager = new EndpointManager(store, ipam, datapath, { defaultMtu: podMtu, defaultIpam, log });
  // A plugin after kelp may change the pod's MAC (tuning): anti-spoofing reports it as SRC_MAC
  // drops, and the endpoint follows the interface. At most one refresh in flight per endpoint.
  const refreshing = new Set<number>();
  // Observability (src/observe): every event and every flow the policy GC expires, enriched, in
  // the flow store GET /v1/flows serves; started below, once policy and services are declared.
  let observe: Observe | undefined;
  const eventCounter: EventCounter = datapath.watchEvents((ev) => {
    observe?.onEvent(ev);
    if (ev.kind !== 'drop') return;
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
  const natGcMetrics = (r: { ctDeleted: number; natDeleted: number }) => {
    metrics.conntrackGc('kelp_ct4', r.ctDeleted);
    metrics.conntrackGc('kelp_snat4', r.natDeleted);
  };
  // VXLAN mode: the uplink's programs let node-to-node tunnel packets through at once.
  const vxlanPort = opts.routingMode === 'vxlan' ? opts.vxlanPort : undefined;
  if (opts.masquerade) {
    if (up) {
      if (!up.ip) throw new Error(`uplink ${up.ifname} has no IPv4 address to masquerade to`);
      // Every node's pod CIDR (natively its address too) exempt from the start: a restart masquerades no cross-node flow.
      datapath.enableMasquerade({ uplinkIfindex: up.ifindex, uplinkIfname: up.ifname, masqIp: up.ip, podCidr, noMasquerade: nodeNoMasquerade(objects, { name: opts.nodeName, podCidr }, opts.routingMode), onGc: natGcMetrics, vxlanPort });
      masq = { uplink: up.ifname, address: up.ip };
      log.info({ uplink: up.ifname, address: up.ip }, 'masquerade enabled');
    } else {
      log.warn('no default route: masquerade disabled');
    }
  } else if (up) {
    // Masquerade off: the uplink still carries Services (NodePorts from outside, the node's own clients).
    datapath.enableUplink({ uplinkIfindex: up.ifindex, uplinkIfname: up.ifname, podCidr, onGc: natGcMetrics, vxlanPort });
  }

  // Remote nodes: the VXLAN device and overlay programs (VXLAN mode), the node reconciler.
  const nodes: AgentNodes = await startNodes({ opts, objects, datapath, rtnl: hostNs, reconcilers, podCidr, podMtu, uplink: up, masquerade: masq !== null, log });

  // Created once restore is done (below); ADD is refused until then, so afterAdd always has it.
  let policy: AgentPolicy | undefined;
  let services: AgentServices | undefined;
  observe = startObserve({
    datapath,
    manager,
    objects,
    policyModel: () => policy?.model(),
    serviceModel: () => services?.model(),
    counter: () => eventCounter,
    eventRate: opts.eventRate,
    eventBurst: opts.eventBurst,
  });
  const handleCni = makeCniHandler({
    manager,
    store: objects,
    log,
    ready: () => ready,
    afterAdd: (rec) => {
      services?.endpointsChanged();
      return policy ? policy.afterAdd(rec) : Promise.reject(new Error('policy is not started yet'));
    },
    routing: { mode: opts.routingMode, vni: opts.vxlanId, port: opts.vxlanPort },
    onServed: (command, exit, seconds) => metrics.observeCni(command, exit === 0, seconds),
    afterDel: () => {
      services?.endpointsChanged();
      if (policy) reconcilers.markDirty('policy');
    },
  });
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
  // Joins once restore has reported (and swept) what it found: from here on it keeps
  // kelp_endpoints equal to the records at every resync.
  reconcilers.add(endpointsReconciler({ manager, maps: datapath.endpoints, log }));
  reconcilers.markDirty('endpoints');
  // Policy for every endpoint the records hold, before ADDs are served; enforcement is switched
  // on by its first successful run (an agent upgraded from one without policy drops nothing
  // before every running pod is programmed).
  policy = startPolicy({ objects, manager, datapath, reconcilers, rtnl: manager.hostNs, nodeName: opts.nodeName, stateDir: opts.stateDir, resyncMs: opts.resyncInterval * 1000, log, onCtGc: (n) => metrics.conntrackGc('kelp_pct4', n) });
  services = startServices({
    objects,
    manager,
    reconcilers,
    rtnl: manager.hostNs,
    nodeName: opts.nodeName,
    stateDir: opts.stateDir,
    standalone: kube === undefined,
    maglevTableSize: opts.maglevTableSize,
    resyncMs: opts.resyncInterval * 1000,
    log,
    ...serviceHooks(datapath, opts.maglevTableSize),
    gcServiceCt: () => metrics.conntrackGc('kelp_lb4_ct', datapath.gcServiceCt().deleted),
  });
  await reconcilers.runNow();
  // The socket hooks find the service maps written.
  startSocketLb(datapath, opts, log);

  const server = new ApiServer(log);
  server.route('POST', CNI_HTTP_PATH, handleCni);
  const ctx: RouteContext = { opts: eff, manager, datapath, objects, manifests, kube, sources, reconcilers, policy, services, nodes, ready: () => ready, masquerade: () => masq };
  statusRoutes(server, ctx);
  viewRoutes(server, ctx);
  objectRoutes(server, ctx);
  policyRoutes(server, ctx);
  serviceRoutes(server, ctx);
  nodeRoutes(server, ctx);
  const observing = observe;
  flowRoutes(server, () => observing);
  // The node page on the metrics address, beside /metrics (read-only like it).
  if (metricsServer) pageRoutes(metricsServer, ctx, () => observing);

  // Before the API socket: an address in use fails the start, naming the flag.
  const metricsBound = metricsServer && metricsAt ? formatAddress(await metricsServer.listen(metricsAt)) : undefined;
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
      buildConflist({ networkName: opts.networkName, socketPath, mtu: podMtu, podCidr, masquerade: opts.masquerade, routing: { mode: opts.routingMode, vni: opts.vxlanId, port: opts.vxlanPort } }),
    );
    log.info(installed, 'CNI plugin and network config installed');
  }
  log.info({ socket: socketPath, metrics: metricsBound ?? 'off', endpoints: loaded, restored: restored.restored, podCidr, podMtu, routingMode: nodes.mode }, 'kelp agent ready');

  return {
    socketPath,
    metricsAddress: metricsBound,
    async stop() {
      ready = false;
      await queue.stop();
      await server.close();
      await metricsServer?.close();
      await reconcilers.stop();
      policy?.stop();
      services?.stop();
      for (const src of sources) await src.stop();
      manager.close();
      hostNs.close();
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
