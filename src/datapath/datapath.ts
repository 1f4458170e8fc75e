// The agent's datapath, as the layers above see it: one facade composing the parts, each in a
// file of its own concern:
//   objects.ts        loading build/bpf/*.o with maps pinned under the bpffs root, a pin per
//                     layout version, older layouts migrated (maps/pins.ts, maps/registry.ts)
//   attach/pod.ts     lxc.o's programs on pod veths (clsact filters, or tcx links), relink at restart
//   attach/uplink.ts  host.o on the uplink (masquerade): pinned links, kelp_nomasq4, NAT GC
//   attach/pins.ts    pinned links under <bpfRoot>/links
//   endpoints.ts      kelp_endpoints and its cache (their one writer)
//   counters.ts       kelp_metrics and kelp_metrics_fwd
//   maps/view.ts      status and dump of the maps (maps/registry.ts declares them)
//   events.ts         the kelp_events ring
//   policy.ts         the policy maps' writer, enforcement switch and conntrack collector
//   service.ts        the load-balancing maps' writer (ServiceWriter) and service conntrack collector
//   tunnel.ts         kelp_tunnel4 and kelp_overlay_config (TunnelMaps, for the node reconciler)
//   attach/overlay.ts overlay.o on the kelp VXLAN device: pinned tcx links
// Load balancing and overlays add files beside these and a few lines here.
// Invariants: lxc.o is loaded (and the endpoint cache made to agree with kelp_endpoints) before
// any program of this agent is attached; close() releases handles only, so pods keep their
// network on the pinned maps and links.
import type { BpfMap, BpfObject, RingBuffer } from '../bpf';
import type { Logger } from '../log';
import { PodAttach } from './attach/pod';
import { LinkPins, PinnedLink, RelinkOutcome } from './attach/pins';
import { MasqueradeOptions, Uplink } from './attach/uplink';
import { Overlay, OverlayAttachOptions } from './attach/overlay';
import { enableSocketLb, SocketLbOptions } from './attach/cgroup';
import type { BpffsStatus } from './bpffs';
import { Counters } from './counters';
import type { MapRow } from './dump';
import { EndpointMaps, endpointInfoOf, endpointProblems, ipv4Addresses } from './endpoints';
import { EventCounter, FlowEvent, KelpEvent, watchEvents } from './events';
import { flowEndClaims } from './flows';
import { dumpMap, MapStat, mapStats } from './maps/view';
import { monotonicNs } from './nat';
import { gcPolicyCt, PolicyCtEnds, PolicyCtGcOptions, PolicyCtGcResult, PolicyMaps, policyMapsOf } from './policy';
import { DatapathObjects } from './objects';
import { gcServiceCt, ServiceCtGcOptions, ServiceMaps, serviceMapsOf } from './service';
import { DestroyedSocket, DestroyOptions, GoneBackend, UdpSocketReaper } from './sock';
import type { MetricsEntry } from './structs';
import { OverlayMaps, tunnelMapsOf } from './tunnel';
import type { DatapathEndpoint, PodHook } from './types';

export interface DatapathOptions {
  bpfRoot: string;
  log: Logger;
  trace?: boolean;
  /** Where the BPF objects are; default build/bpf. */
  objectDir?: string;
  /** Per-node sizes of the maps the registry marks sizable (policy maps), by name. */
  mapSizes?: Record<string, number>;
}

export class Datapath {
  readonly lxc: BpfObject;
  /** kelp_endpoints and its cache: written only through this. */
  readonly endpoints: EndpointMaps;
  /** The pin root's bpffs, and whether it outlives this agent. */
  readonly bpffs: BpffsStatus;
  private readonly objects: DatapathObjects;
  private readonly pins: LinkPins;
  private readonly pods: PodAttach;
  private readonly counters: Counters;
  private uplink?: Uplink;
  private overlay?: Overlay;
  private ring?: RingBuffer;
  private flowEnds?: PolicyCtEnds;
  private socketLb?: SocketLbOptions['mode'];
  private reaper?: UdpSocketReaper;

  constructor(private readonly opts: DatapathOptions) {
    this.objects = new DatapathObjects(opts.bpfRoot, opts.log, opts.objectDir, opts.mapSizes);
    this.bpffs = this.objects.bpffs;
    this.pins = new LinkPins(opts.bpfRoot);
    this.lxc = this.objects.load('lxc', { KELP_TRACE: opts.trace ? 1 : 0 });
    this.endpoints = EndpointMaps.of(this.lxc);
    this.pods = new PodAttach(this.lxc, this.pins);
    this.counters = new Counters(this.lxc);
    // Before any program of this agent runs: the pinned cache may be a crashed or older agent's.
    this.reconcileEndpointCache();
  }

  /** host.o, once masquerade is enabled. */
  get host(): BpfObject | undefined {
    return this.uplink?.host;
  }

  get masq(): MasqueradeOptions | undefined {
    return this.uplink?.opts;
  }

  /** The uplink device masquerade is attached to, if any. */
  get uplinkIfname(): string | undefined {
    return this.uplink?.opts.uplinkIfname;
  }

  // --- maps ------------------------------------------------------------------------------------

  map(name: string): BpfMap {
    return this.objects.map(name);
  }

  mapNames(): string[] {
    return this.objects.mapNames();
  }

  mapStats(): MapStat[] {
    return mapStats(this.objects);
  }

  /** A map's rows as `kelp map dump` lists them. */
  dump(name: string): MapRow[] {
    return dumpMap(this.objects, name);
  }

  /** Reads kelp_events: `onEvent` hears every event (serviced on the event loop). Returns the
   * reader's counts (received per class, unknown records). */
  watchEvents(onEvent?: (ev: KelpEvent) => void): EventCounter {
    const w = watchEvents(this.lxc.map('kelp_events'), this.opts.log, onEvent);
    this.ring = w.ring;
    return w.counter;
  }

  // --- pods ------------------------------------------------------------------------------------

  attach(hostIfindex: number, hostIfname: string, hook: PodHook = 'clsact'): Promise<void> {
    return this.pods.attach(hostIfindex, hostIfname, hook);
  }

  detach(hostIfname: string, hostIfindex?: number): void {
    this.pods.detach(hostIfname, hostIfindex);
  }

  relink(hostIfindex: number, hostIfname: string, hook: PodHook = 'clsact'): Record<'ingress' | 'egress', RelinkOutcome> {
    return this.pods.relink(hostIfindex, hostIfname, hook);
  }

  /** Whether both of kelp's filters are on a host veth (whatever program instance they run). */
  hasPodFilters(hostIfindex: number): boolean {
    return this.pods.hasFilters(hostIfindex);
  }

  upsertEndpoint(rec: DatapathEndpoint): void {
    const info = endpointInfoOf(rec);
    for (const ip of ipv4Addresses(rec)) this.endpoints.put(ip, info);
  }

  removeEndpoint(rec: Pick<DatapathEndpoint, 'ips' | 'id'>): void {
    for (const ip of ipv4Addresses(rec)) this.endpoints.remove(ip);
    this.counters.clear(rec.id);
  }

  /** Problems with an endpoint's map entries and hooks; empty when all is well. */
  check(rec: DatapathEndpoint): string[] {
    return [...endpointProblems(this.endpoints, rec), ...this.pods.problems(rec)];
  }

  /** Every non-zero counter: forwarded and dropped packets per endpoint, direction and reason. */
  metrics(): MetricsEntry[] {
    return this.counters.all();
  }

  // --- policy ----------------------------------------------------------------------------------

  /** kelp_ipcache4, kelp_policy4 and kelp_policy_config (one of each, shared by lxc.o and host.o),
   * for applyPolicyMaps, setPolicyEnforcement and readPolicyRevision (policy.ts). */
  policyMaps(): PolicyMaps {
    return policyMapsOf(this.objects);
  }

  /** One collection pass over the policy conntrack; the caller runs it periodically (every 10 s).
   * With onFlowTimeout set, each expired flow not ended by BPF gets its flow-end there. */
  gcPolicyCt(opts?: PolicyCtGcOptions): PolicyCtGcResult {
    return gcPolicyCt(this.objects.map('kelp_pct4'), monotonicNs(), { flowEnds: this.flowEnds, ...opts });
  }

  /** Where the policy conntrack's collector reports the flows it expires (src/observe). */
  onFlowTimeout(onEnd: (ev: FlowEvent) => void): void {
    this.flowEnds = flowEndClaims(this.objects.map('kelp_flow_end'), onEnd);
  }

  // --- services --------------------------------------------------------------------------------

  /** The load-balancing maps, for one ServiceWriter (service.ts) kept for the agent's lifetime:
   * new ServiceWriter(dp.serviceMaps(), { maglevTableSize }).apply(desired). */
  serviceMaps(): ServiceMaps {
    return serviceMapsOf(this.objects);
  }

  /** One collection pass over the service conntrack; the caller runs it periodically (every 10 s). */
  gcServiceCt(opts?: ServiceCtGcOptions): { scanned: number; deleted: number } {
    return gcServiceCt(this.objects.map('kelp_lb4_ct'), monotonicNs(), opts);
  }

  // --- other nodes (node-types.ts) ---------------------------------------------------------------

  /** kelp_tunnel4 and kelp_overlay_config (shared by lxc.o and overlay.o), for the node reconciler. */
  tunnelMaps(): OverlayMaps {
    return tunnelMapsOf(this.objects);
  }

  /**
   * overlay.o on the kelp VXLAN device (VXLAN mode), once per agent: pinned tcx links, moved in
   * place onto this agent's programs when an earlier agent left them. After enableMasquerade:
   * a remote backend's answers to clients the uplink translated come back through the tunnel,
   * and overlay.o hands them to the uplink (its address and port range are set at load).
   */
  attachOverlay(o: OverlayAttachOptions): void {
    if (this.overlay) throw new Error(`the overlay programs are attached already (on ${this.overlay.opts.ifname})`);
    this.overlay = Overlay.attach(this.objects, this.pins, o, this.opts.log, this.opts.trace, this.uplink?.opts);
  }

  /** overlay.o, once attachOverlay ran. */
  get overlayObject(): BpfObject | undefined {
    return this.overlay?.obj;
  }

  // --- uplink ----------------------------------------------------------------------------------

  /**
   * The uplink's programs without masquerade: NodePorts and external IPs from outside, and the
   * node's own packets to VIPs (host.o with KELP_MASQ_IP 0).
   */
  enableUplink(u: Omit<MasqueradeOptions, 'masqIp' | 'noMasquerade'>): void {
    this.enableMasquerade({ ...u, masqIp: '0.0.0.0' });
  }

  /** Masquerade on the uplink: SNAT pod sources to the uplink's address, GC'd every 10 s. */
  enableMasquerade(m: MasqueradeOptions): void {
    if (this.uplink) throw new Error(`masquerade is enabled already (on ${this.uplink.opts.uplinkIfname})`);
    this.uplink = Uplink.enable(this.objects, this.pins, m, this.opts.log);
  }

  /** kelp_nomasq4 besides the pod CIDR (every node's pod CIDR, natively its address too: the node reconciler's); needs the uplink programs. */
  setNoMasquerade(cidrs: readonly string[]): void {
    if (!this.uplink) throw new Error('masquerade is not enabled: no kelp_nomasq4 to write');
    this.uplink.setNoMasquerade(cidrs);
  }

  // --- restart sweep (src/endpoint/restore.ts) ---------------------------------------------------

  /** Makes kelp_endpoint_cache agree with kelp_endpoints; returns how many slots changed. */
  reconcileEndpointCache(): number {
    const changed = this.endpoints.reconcileCache();
    if (changed) this.opts.log.info({ slots: changed }, 'kelp_endpoint_cache reconciled with kelp_endpoints');
    return changed;
  }

  /** Links under <bpfRoot>/links whose names kelp gives; anything else there is not ours. */
  pinnedLinks(): PinnedLink[] {
    return this.pins.list();
  }

  /** The ifindex a pinned link is attached to; 0 once its device is gone. */
  pinnedLinkIfindex(pin: string): number {
    return this.pins.ifindexOf(pin);
  }

  /** Detaches a pinned link and removes its pin; harmless when either is gone already. */
  removePinnedLink(pin: string): void {
    this.pins.remove(pin);
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
    return this.counters.clearExcept(live);
  }

  /** Closes handles; pinned maps and links stay, so pods keep their network. */
  // --- socket LB (attach/cgroup.ts, sock.ts) ---------------------------------------------------

  /**
   * Socket LB on the cgroup (--cgroup-root) in mode 'all' or 'host-only' (the node's namespace:
   * this agent's), or 'off' (an earlier agent's links detached). Once per agent, after the
   * service maps are written: the hooks act on them at once.
   */
  enableSocketLb(o: SocketLbOptions): void {
    if (this.socketLb) throw new Error(`socket LB is set already (${this.socketLb})`);
    enableSocketLb(this.objects, this.pins, o, this.opts.log);
    this.socketLb = o.mode;
  }

  /**
   * Destroys the connected UDP sockets whose peer is a backend that left, in this agent's
   * namespace and in each of opts.netns (the endpoints' namespaces); see sock.ts for which
   * sockets that reaches. Pass only backends no set holds any more.
   */
  destroyUdpSocketsTo(backends: readonly GoneBackend[], opts: DestroyOptions = {}): DestroyedSocket[] {
    this.reaper ??= UdpSocketReaper.of(this.objects.load('iter_udp', {}), this.opts.log);
    return this.reaper.destroyUdpSocketsTo(backends, opts);
  }

  close(): void {
    this.reaper?.close();
    this.overlay?.close();
    this.uplink?.close();
    this.ring?.close();
    this.objects.close();
  }
}
