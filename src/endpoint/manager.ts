// The endpoint manager: CNI ADD/DEL/CHECK/GC over netlink, IPAM and the datapath maps.
// ADD is a transaction (a failure at any step undoes the steps before it); DEL is idempotent
// and best effort (a missing netns, link, map entry or lease is already done).
import { statSync, statfsSync } from 'node:fs';
import { inNetns } from '../bpf';
import { Ipam, IpamConfig, IpamError, parseIpamConfig } from '../ipam';
import { BatchedLinkDeleter, isGone, NetlinkError, podInterfaceCheck, podInterfaceSetup, podInterfaceTeardown, podRoutes, RouteSpec, Rtnl } from '../netlink';
import type { Logger } from '../log';
import { EndpointRecord, EndpointStore, PodHook, attachmentKey, hostIfnameFor } from './state';
import { KeyedMutex, Transaction } from './txn';

const NSFS_MAGIC = 0x6e736673;
/** Routes kelp installs in the node carry this protocol number, so GC can tell them apart. */
export const RTPROT_KELP = 0x4b; // 'K'
/**
 * While other DELs are in progress, a DEL's veth waits this long for more to share its kernel
 * batch: 100 concurrent DELs went from ~33 to ~110 pods/s. A lone DEL does not wait.
 */
const DEL_GATHER_MS = 10;

/** What the endpoint manager needs from the BPF side (implemented in src/datapath). */
export interface EndpointDatapath {
  /** Attaches kelp's programs to the host-side veth (clsact filters: they outlive the agent). */
  attach(hostIfindex: number, hostIfname: string, hook?: PodHook): Promise<void>;
  /** Takes kelp's programs off a host veth (by ifindex; by name only an older kelp's pins); harmless when gone. */
  detach(hostIfname: string, hostIfindex?: number): void;
  upsertEndpoint(rec: EndpointRecord): void;
  removeEndpoint(rec: Pick<EndpointRecord, 'ips' | 'id'>): void;
  /** Problems with the datapath state of this endpoint, empty when all is well. */
  check(rec: EndpointRecord): string[];
}

export class EndpointError extends Error {
  constructor(
    readonly kind: 'invalid-netns' | 'unknown' | 'ipam' | 'exists' | 'broken' | 'invalid' | 'internal',
    message: string,
    readonly ipamKind?: IpamError['kind'],
  ) {
    super(message);
  }
}

export interface AddRequest {
  network: string;
  containerId: string;
  ifname: string;
  netns: string;
  mtu?: number;
  /** The config's raw `ipam` section (host-local shape); undefined: the agent's pod CIDR. */
  ipam?: unknown;
  requestedIps: string[];
  mac?: string;
  pod?: { namespace: string; name: string; uid?: string };
  hook?: PodHook;
  /** Addresses from a delegated IPAM plugin (already allocated by the caller, who releases them). */
  delegated?: { type: string; ips: Array<{ address: string; gateway?: string }>; routes: Array<{ dst: string; gw?: string }> };
}

/** Chained mode: another plugin made the interface and its addresses; kelp adds its datapath. */
export interface ChainedAddRequest {
  network: string;
  containerId: string;
  ifname: string;
  netns: string;
  /** The addresses of CNI_IFNAME from the previous plugin's result. */
  ips: Array<{ address: string; gateway?: string }>;
  pod?: { namespace: string; name: string; uid?: string };
  hook?: PodHook;
}

export interface AttachmentRef {
  network: string;
  containerId: string;
  ifname: string;
}

export interface ManagerOptions {
  defaultMtu: number;
  /** IPAM config used when the CNI config has none (the node's pod CIDR). */
  defaultIpam: (network: string) => IpamConfig;
  log: Logger;
}

export class EndpointManager {
  private readonly mutex = new KeyedMutex();
  private readonly pendingIds = new Set<number>();
  /** Host veth names of ADDs in progress: created, not yet recorded, not leftovers. */
  private readonly pendingVeths = new Set<string>();
  readonly hostNs: Rtnl;
  /** DELs' veth deletions, batched: concurrent DELs share one kernel unregistration. */
  private readonly linkDeleter: BatchedLinkDeleter;
  /** DELs received and not yet answered, those waiting for their attachment's turn included. */
  private delsInProgress = 0;

  constructor(
    private readonly store: EndpointStore,
    private readonly ipam: Ipam,
    private readonly datapath: EndpointDatapath,
    private readonly opts: ManagerOptions,
  ) {
    this.hostNs = Rtnl.open();
    this.linkDeleter = new BatchedLinkDeleter(this.hostNs, { gatherMs: DEL_GATHER_MS, busy: () => this.delsInProgress > 1 });
  }

  close(): void {
    this.hostNs.close();
  }

  /** Runs `fn` with no ADD, DEL or MAC refresh in progress, and none starting until it is done. */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.mutex.exclusive(fn);
  }

  list(): EndpointRecord[] {
    return this.store.list();
  }

  get(ref: AttachmentRef): EndpointRecord | undefined {
    return this.store.get(ref.network, ref.containerId, ref.ifname);
  }

  /**
   * The IPAM config of a request; `forAdd`: one to allocate from, so its ranges must lie in
   * this node's pod CIDR (the ranges of the default config, made from --pod-cidr).
   */
  ipamConfig(network: string, raw: unknown, forAdd = false): IpamConfig {
    if (raw === undefined || raw === null) return this.opts.defaultIpam(network);
    try {
      const within = forAdd ? this.opts.defaultIpam(network).rangeSets.flat().map((r) => r.subnet) : undefined;
      const cfg = parseIpamConfig(network, raw, { within });
      // kelp's IPAM keeps its leases under the agent's state dir unless the config says otherwise.
      // null and "" count as absent: never fall through to host-local's machine-wide default.
      const dd = (raw as { dataDir?: unknown }).dataDir;
      if (dd === undefined || dd === null || dd === '') cfg.dataDir = this.opts.defaultIpam(network).dataDir;
      return cfg;
    } catch (e) {
      if (e instanceof IpamError) throw new EndpointError('ipam', e.message, e.kind);
      throw e;
    }
  }

  add(req: AddRequest): Promise<EndpointRecord> {
    return this.mutex.run(attachmentKey(req.network, req.containerId, req.ifname), () => this.doAdd(req));
  }

  private async doAdd(req: AddRequest): Promise<EndpointRecord> {
    const log = this.opts.log.child({ op: 'ADD', containerId: req.containerId, ifname: req.ifname });
    const t0 = process.hrtime.bigint();
    const existing = this.store.get(req.network, req.containerId, req.ifname);
    if (existing) {
      // SPEC §2 ADD: an existing CNI_IFNAME in the container is an error, also when it is ours
      // (runtimes DEL before they retry a failed ADD); the live attachment is left as it is.
      throw new EndpointError('exists', `attachment ${req.containerId}/${req.ifname} already exists in netns ${existing.netns}`);
    }
    checkNetns(req.netns);
    const ipamCfg = req.delegated ? undefined : this.ipamConfig(req.network, req.ipam, true);
    const owner = { network: req.network, containerId: req.containerId, ifname: req.ifname };
    const id = this.store.nextId(this.pendingIds);
    this.pendingIds.add(id);
    const txn = new Transaction(log);
    const steps: Record<string, number> = {};
    const mark = (name: string, since: bigint) => (steps[name] = Number(process.hrtime.bigint() - since) / 1e6);
    try {
      let t = process.hrtime.bigint();
      let alloc: { ips: Array<{ address: string; gateway?: string }>; routes: Array<{ dst: string; gw?: string }> };
      if (req.delegated) {
        alloc = req.delegated;
      } else {
        const allocator = this.ipam.network(ipamCfg!);
        try {
          alloc = await allocator.allocate(owner, { ips: req.requestedIps });
        } catch (e) {
          if (e instanceof IpamError) throw new EndpointError('ipam', e.message, e.kind);
          throw e;
        }
        txn.onRollback('ipam release', () => allocator.release(owner));
      }
      const v4 = alloc.ips.find((ip) => !ip.address.includes(':'));
      if (!v4 || !v4.gateway) throw new EndpointError('ipam', 'kelp needs an IPv4 address with a gateway (IPv6 is not supported yet)');
      mark('ipam', t);

      t = process.hrtime.bigint();
      const hostIfname = hostIfnameFor(req.network, req.containerId, req.ifname);
      this.pendingVeths.add(hostIfname);
      const mtu = req.mtu ?? this.opts.defaultMtu;
      const routes = alloc.routes.length > 0 ? alloc.routes.map((r) => ({ dst: r.dst === '0.0.0.0/0' ? 'default' : r.dst, gw: r.gw })) : undefined;
      // A second kelp interface in the same pod (c1/eth0, c1/net1) has the same routes as the
      // first: the kernel refuses a duplicate (dst, metric), so its routes get their own metric.
      const sibling = this.store.list().some((r) => r.netns === req.netns && !(r.containerId === req.containerId && r.ifname === req.ifname));
      const gateway = v4.gateway;
      const setup = () =>
        podInterfaceSetup(this.hostNs, {
          netns: req.netns,
          ifname: req.ifname,
          hostIfname,
          address: v4.address,
          gateway,
          mtu,
          podMac: req.mac,
          routes: sibling ? [] : routes,
        });
      let iface;
      try {
        try {
          iface = await setup();
        } catch (e) {
          // A host veth left by an attempt that crashed midway holds our name: remove it and go
          // again. Looked for only after a failure, so a normal ADD pays no extra round trip.
          if (!(e instanceof NetlinkError && e.code === 'EEXIST') || !(await this.hostNs.deleteLink(hostIfname).catch(() => false))) throw e;
          iface = await setup();
        }
      } catch (e) {
        throw new EndpointError('internal', `setting up ${req.ifname} in ${req.netns}: ${(e as Error).message}`);
      }
      txn.onRollback('delete veth', () => podInterfaceTeardown(this.hostNs, hostIfname));
      if (sibling) {
        try {
          await addPodRoutes(req.netns, podRoutes({ address: v4.address, gateway: v4.gateway, routes }, iface.pod.index), iface.pod.index);
        } catch (e) {
          throw new EndpointError('internal', `routes for ${req.ifname} in ${req.netns}: ${(e as Error).message}`);
        }
      }
      mark('veth', t);

      t = process.hrtime.bigint();
      const podIp = v4.address.split('/')[0];
      await this.hostNs.addRoute({ dst: `${podIp}/32`, dev: iface.host.index, scope: 'link', protocol: RTPROT_KELP }, { exist: 'replace' });
      txn.onRollback('delete node route', () => this.hostNs.deleteRoute({ dst: `${podIp}/32`, dev: iface.host.index }));
      mark('route', t);

      const rec: EndpointRecord = {
        id,
        network: req.network,
        containerId: req.containerId,
        ifname: req.ifname,
        netns: req.netns,
        hostIfname,
        hostIfindex: iface.host.index,
        hostMac: iface.host.mac,
        podMac: iface.pod.mac,
        podIfindex: iface.pod.index,
        mtu,
        ips: alloc.ips.map((ip) => ({ address: ip.address, gateway: ip.gateway })),
        routes: alloc.routes.length > 0 ? alloc.routes : [{ dst: '0.0.0.0/0', gw: v4.gateway }],
        ipam: req.delegated ? { kind: 'delegated', type: req.delegated.type } : { kind: 'builtin', dataDir: ipamCfg!.dataDir },
        pod: req.pod,
        ...(req.hook === 'tcx' ? { hook: 'tcx' as const } : {}),
        createdAt: new Date().toISOString(),
      };

      t = process.hrtime.bigint();
      await this.program(rec, txn);
      mark('datapath', t);

      t = process.hrtime.bigint();
      await this.store.put(rec);
      mark('state', t);
      txn.commit();
      log.info({ ip: v4.address, hostIfname, id, ms: Number(process.hrtime.bigint() - t0) / 1e6, steps }, 'endpoint added');
      return rec;
    } catch (e) {
      log.warn({ err: e }, 'ADD failed; rolling back');
      await txn.rollback();
      throw e;
    } finally {
      this.pendingIds.delete(id);
      this.pendingVeths.delete(hostIfnameFor(req.network, req.containerId, req.ifname));
    }
  }

  /** Hooks kelp's programs onto the record's host veth and writes its map entries, undoably. */
  private async program(rec: EndpointRecord, txn: Transaction): Promise<void> {
    await this.datapath.attach(rec.hostIfindex, rec.hostIfname, rec.hook);
    txn.onRollback('detach programs', () => this.datapath.detach(rec.hostIfname, rec.hostIfindex));
    this.datapath.upsertEndpoint(rec);
    txn.onRollback('remove endpoint from maps', () => this.datapath.removeEndpoint(rec));
  }

  addChained(req: ChainedAddRequest): Promise<EndpointRecord> {
    return this.mutex.run(attachmentKey(req.network, req.containerId, req.ifname), () => this.doAddChained(req));
  }

  /**
   * Chained mode (like Cilium's generic-veth chaining): the pod's CNI_IFNAME is a veth made by
   * an earlier plugin; its peer, found through IFLA_LINK, is the host side kelp attaches to.
   * Addresses, routes and the interface stay the earlier plugin's.
   */
  private async doAddChained(req: ChainedAddRequest): Promise<EndpointRecord> {
    const log = this.opts.log.child({ op: 'ADD', mode: 'chained', containerId: req.containerId, ifname: req.ifname });
    if (this.store.get(req.network, req.containerId, req.ifname)) {
      throw new EndpointError('exists', `attachment ${req.containerId}/${req.ifname} already exists`);
    }
    checkNetns(req.netns);
    const v4 = req.ips.filter((ip) => !ip.address.includes(':'));
    if (v4.length === 0) throw new EndpointError('invalid', `chained mode: prevResult has no IPv4 address for ${req.ifname}`);
    const podNs = Rtnl.inNetns(req.netns);
    let pod;
    try {
      pod = await podNs.link(req.ifname);
    } finally {
      podNs.close();
    }
    if (!pod) throw new EndpointError('invalid', `chained mode: no interface ${req.ifname} in ${req.netns}`);
    if (pod.kind !== 'veth' || !pod.peerIndex) throw new EndpointError('invalid', `chained mode: ${req.ifname} in ${req.netns} is ${pod.kind ?? 'not a veth'}; kelp chains onto veth pairs`);
    const host = await this.hostNs.link(pod.peerIndex);
    if (!host || host.kind !== 'veth') throw new EndpointError('invalid', `chained mode: the peer of ${req.ifname} (ifindex ${pod.peerIndex}) is not a veth in the agent's network namespace`);
    const id = this.store.nextId(this.pendingIds);
    this.pendingIds.add(id);
    const txn = new Transaction(log);
    try {
      const rec: EndpointRecord = {
        id,
        network: req.network,
        containerId: req.containerId,
        ifname: req.ifname,
        netns: req.netns,
        mode: 'chained',
        hostIfname: host.name,
        hostIfindex: host.index,
        hostMac: host.mac,
        podMac: pod.mac,
        podIfindex: pod.index,
        mtu: pod.mtu,
        ips: v4,
        routes: [],
        ipam: { kind: 'external' },
        pod: req.pod,
        ...(req.hook === 'tcx' ? { hook: 'tcx' as const } : {}),
        createdAt: new Date().toISOString(),
      };
      await this.program(rec, txn);
      await this.store.put(rec);
      txn.commit();
      log.info({ ips: v4.map((i) => i.address), hostIfname: host.name, id }, 'chained endpoint added');
      return rec;
    } catch (e) {
      await txn.rollback();
      throw e;
    } finally {
      this.pendingIds.delete(id);
    }
  }

  del(ref: AttachmentRef, rawIpam?: unknown): Promise<void> {
    this.delsInProgress += 1;
    return this.mutex.run(attachmentKey(ref.network, ref.containerId, ref.ifname), () => this.doDel(ref, rawIpam)).finally(() => {
      this.delsInProgress -= 1;
    });
  }

  /** Best effort: each step runs even when an earlier one fails; only IPAM errors are reported. */
  private async doDel(ref: AttachmentRef, rawIpam?: unknown): Promise<void> {
    const log = this.opts.log.child({ op: 'DEL', containerId: ref.containerId, ifname: ref.ifname });
    const t0 = process.hrtime.bigint();
    const steps: Record<string, number> = {};
    let t = t0;
    const mark = (name: string) => {
      const now = process.hrtime.bigint();
      steps[name] = Number(now - t) / 1e6;
      t = now;
    };
    const rec = this.store.get(ref.network, ref.containerId, ref.ifname);
    const hostIfname = rec?.hostIfname ?? hostIfnameFor(ref.network, ref.containerId, ref.ifname);
    const problems: string[] = [];
    /** False when the step failed for another reason than its object being gone already. */
    const attempt = async (what: string, fn: () => unknown): Promise<boolean> => {
      try {
        await fn();
        return true;
      } catch (e) {
        if (isGone(e)) return true;
        problems.push(`${what}: ${(e as Error).message}`);
        return false;
      }
    };
    if (rec) await attempt('datapath', () => this.datapath.removeEndpoint(rec));
    mark('maps');
    // Deleting the host end removes the pair, the pod side's addresses, the node route and
    // kelp's clsact filters. tcx links are taken off before (a veth deleted with tcx links
    // attached took ~70 ms instead of ~29), and a chained pod's veth is the earlier plugin's.
    // Without those, only pins by name go first (an older kelp's tcx links).
    const chained = rec?.mode === 'chained';
    if (rec && (chained || rec.hook === 'tcx')) await attempt('detach', () => this.datapath.detach(hostIfname, rec.hostIfindex));
    else await attempt('detach', () => this.datapath.detach(hostIfname));
    mark('detach');
    if (!chained) {
      const deleted = await attempt('veth', () => podInterfaceTeardown(this.linkDeleter, hostIfname));
      // The veth stays: kelp's programs must not stay on it. Without a record it is found by name.
      if (!deleted) await attempt('detach', async () => this.datapath.detach(hostIfname, rec?.hostIfindex ?? (await this.hostNs.link(hostIfname))?.index));
    }
    mark('veth');
    let ipamErr: unknown;
    // Addresses kelp did not allocate are released by whoever did (the delegate, the previous plugin).
    if (!rec || rec.ipam.kind === 'builtin') {
      try {
        const cfg = rec?.ipam.kind === 'builtin' ? { ...this.ipamConfig(ref.network, rawIpam), dataDir: rec.ipam.dataDir } : this.ipamConfig(ref.network, rawIpam);
        await this.ipam.network(cfg).release({ network: ref.network, containerId: ref.containerId, ifname: ref.ifname });
      } catch (e) {
        ipamErr = e;
      }
    }
    mark('ipam');
    await this.store.remove(ref.network, ref.containerId, ref.ifname);
    mark('state');
    const ms = Number(t - t0) / 1e6;
    if (problems.length) log.warn({ problems, ms, steps }, 'DEL finished with problems');
    else log.info({ hostIfname, had: !!rec, ms, steps }, 'endpoint deleted');
    if (ipamErr && !(ipamErr instanceof EndpointError && ipamErr.kind === 'ipam')) throw ipamErr;
  }

  /** Problems with an attachment, compared with what the runtime believes (its prevResult). */
  async check(ref: AttachmentRef, expected: { ips: string[]; netns: string }): Promise<string[]> {
    const found = this.store.get(ref.network, ref.containerId, ref.ifname);
    if (!found) throw new EndpointError('unknown', `no kelp endpoint for container ${ref.containerId} interface ${ref.ifname}`);
    // A later plugin may have changed the MAC (SPEC: CHECK tolerates that); follow it.
    await this.refreshPodMac(found.id).catch(() => false);
    const rec = this.store.get(ref.network, ref.containerId, ref.ifname) ?? found;
    const problems: string[] = [];
    if (expected.netns && expected.netns !== rec.netns) problems.push(`netns is ${rec.netns}, runtime expects ${expected.netns}`);
    for (const ip of expected.ips) {
      if (!rec.ips.some((r) => r.address === ip)) problems.push(`address ${ip} is not kelp's (${rec.ips.map((r) => r.address).join(', ')})`);
    }
    if (rec.mode === 'chained') {
      // The interface and its addresses are the earlier plugin's (it CHECKs them); kelp checks
      // that the veth it attached to is still the pod's and that its datapath is in place.
      const host = await this.hostNs.link(rec.hostIfindex);
      if (!host || host.name !== rec.hostIfname) problems.push(`host veth ${rec.hostIfname} (ifindex ${rec.hostIfindex}) is gone`);
      problems.push(...this.datapath.check(rec));
      return problems;
    }
    const v4 = rec.ips.find((i) => !i.address.includes(':'))!;
    const netProblems = await podInterfaceCheck(this.hostNs, {
      netns: rec.netns,
      ifname: rec.ifname,
      hostIfname: rec.hostIfname,
      address: v4.address,
      gateway: v4.gateway ?? '',
      mtu: rec.mtu,
      // What ADD installed (the IPAM's routes), not the default route podRoutes assumes without them.
      routes: rec.routes.map((r) => ({ dst: r.dst, gw: r.gw })),
    });
    problems.push(...netProblems.map((p) => `${p.subject}: ${p.message}`));
    problems.push(...this.datapath.check(rec));
    if (rec.ipam.kind === 'builtin') {
      const allocator = this.ipam.network({ ...this.ipamConfig(ref.network, undefined), dataDir: rec.ipam.dataDir });
      // The lease files are the reservation; the allocator's cached view would not see one removed.
      await allocator.reload();
      if (!(await allocator.get(ref))) problems.push('IPAM reservation is gone');
    }
    return problems;
  }

  /**
   * A plugin chained after kelp (tuning's `mac`) may change the pod's MAC after kelp wrote it
   * into the endpoint map; anti-spoofing would then drop everything the pod sends. The
   * datapath reports such drops; this re-reads the pod interface and, when its MAC really
   * changed, updates the record and the map. Returns whether anything changed.
   */
  refreshPodMac(epId: number): Promise<boolean> {
    const rec = this.store.list().find((r) => r.id === epId);
    if (!rec) return Promise.resolve(false);
    return this.mutex.run(attachmentKey(rec.network, rec.containerId, rec.ifname), async () => {
      const cur = this.store.get(rec.network, rec.containerId, rec.ifname);
      if (!cur || cur.id !== epId) return false;
      const podNs = Rtnl.inNetns(cur.netns);
      let link;
      try {
        link = await podNs.link(cur.podIfindex);
      } finally {
        podNs.close();
      }
      if (!link || link.name !== cur.ifname || !link.mac || link.mac === cur.podMac) return false;
      const next = { ...cur, podMac: link.mac };
      this.datapath.upsertEndpoint(next);
      await this.store.put(next);
      this.opts.log.info({ containerId: cur.containerId, ifname: cur.ifname, from: cur.podMac, to: link.mac }, 'pod MAC changed after ADD; endpoint updated');
      return true;
    });
  }

  /** CNI GC: releases every attachment of `network` that is not in `valid`. */
  async gc(network: string, valid: Array<{ containerId: string; ifname: string }>, rawIpam?: unknown): Promise<string[]> {
    const keep = new Set(valid.map((v) => attachmentKey(network, v.containerId, v.ifname)));
    const errors: string[] = [];
    // All at once: their veths go in shared kernel batches.
    const stale = this.store.list().filter((rec) => rec.network === network && !keep.has(attachmentKey(rec.network, rec.containerId, rec.ifname)));
    await Promise.all(stale.map((rec) => this.del(rec, rawIpam).catch((e: Error) => errors.push(`${rec.containerId}/${rec.ifname}: ${e.message}`))));
    try {
      const allocator = this.ipam.network(this.ipamConfig(network, rawIpam));
      // GC is the safety net: it works from the lease files, not the allocator's cached view.
      await allocator.reload();
      await allocator.releaseAllExcept(valid.map((v) => ({ ...v, network })));
    } catch (e) {
      errors.push(`ipam: ${(e as Error).message}`);
    }
    // Host veths that look like ours but belong to no record (a crash mid-ADD); an ADD still in
    // progress (of any network) has made its veth and not yet written its record.
    const known = new Set(this.store.list().map((r) => r.hostIfname));
    for (const link of await this.hostNs.listLinks()) {
      if (/^kelp[0-9a-f]{11}$/.test(link.name) && link.kind === 'veth' && !known.has(link.name) && !this.pendingVeths.has(link.name)) {
        await this.hostNs.deleteLink(link.index).catch((e: Error) => errors.push(`${link.name}: ${e.message}`));
        this.datapath.detach(link.name);
      }
    }
    return errors;
  }
}

/**
 * The gateway routes of a pod's additional interface, with the interface's index as metric:
 * unique within the netns and never 0, the metric of the first interface's routes.
 */
async function addPodRoutes(netns: string, routes: RouteSpec[], podIfindex: number): Promise<void> {
  const pod = Rtnl.inNetns(netns);
  try {
    // The route to an off-subnet gateway (no gw) was added by the setup already.
    for (const r of routes) if (r.gw !== undefined) await pod.addRoute({ ...r, metric: podIfindex });
  } finally {
    pod.close();
  }
}

/** CNI_NETNS must name a network namespace that is not the agent's own. */
function checkNetns(netns: string): void {
  let st;
  try {
    if (statfsSync(netns).type !== NSFS_MAGIC) throw new EndpointError('invalid-netns', `CNI_NETNS ${netns} is not a network namespace`);
    st = statSync(netns);
  } catch (e) {
    if (e instanceof EndpointError) throw e;
    throw new EndpointError('invalid-netns', `CNI_NETNS ${netns}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  // Other namespace types are nsfs files too: entering it as a netns tells them apart.
  try {
    inNetns(netns, () => undefined);
  } catch (e) {
    throw new EndpointError('invalid-netns', `CNI_NETNS ${netns} is not a network namespace (${(e as { code?: string }).code ?? (e as Error).message})`);
  }
  const own = statSync('/proc/self/ns/net');
  if (st.ino === own.ino && st.dev === own.dev) throw new EndpointError('invalid-netns', `CNI_NETNS ${netns} is the agent's own network namespace`);
}
