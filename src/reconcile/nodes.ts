// Other nodes: kelp_tunnel4, the node's routes to their pod CIDRs and kelp_nomasq4, from the
// store's Node objects, level-triggered like every reconciler (src/datapath/node-types.ts is
// the datapath's side of the contract).
//
// Each run derives the remote nodes from the Node objects (this node's excluded), computes the
// desired tunnel entries, routes and no-masquerade set, reads what the kernel holds and applies
// the difference; a resync repairs whatever drifted. What it owns and nothing else:
//   - every kelp_tunnel4 entry (one writer);
//   - routes of protocol RTPROT_KELP_NODE in the main table. Pod /32 routes are RTPROT_KELP,
//     which restore sweeps at start: node routes carry their own number so a restart never
//     touches them. A route to the same prefix that someone else installed is left alone and
//     reported;
//   - kelp_nomasq4 beyond the masquerade configuration (through the uplink's writer).
// Besides the pod CIDRs, each remote node's own address (/32) is in kelp_tunnel4 (VXLAN mode) or
// exempt from masquerade (native): a pod's packet to another node (its reply to that node's
// probe, or to the node's own traffic through the VXLAN device) then goes back the way the
// node's came, through the tunnel, or routed with the pod's own address. Without it the reply
// would leave by the uplink masqueraded (the node sees another source and drops it), or
// unencapsulated onto an underlay that may not carry pod addresses. One place per mode keeps
// kelp_nomasq4 (1,024 entries) for the pod CIDRs in VXLAN mode.
// Order within a run: no-masquerade first (a remote pod is never masqueraded to once it is
// reachable), then tunnel entries, then routes added, then routes and entries removed. A full
// kelp_nomasq4 is reported, not fatal: the tunnel entries and routes still go in.
//
// A Node that cannot be used (no IPv4 InternalIP/ExternalIP, no IPv4 pod CIDR, a CIDR that
// overlaps an older node's or this node's) is skipped and reported once per problem; the others
// go on. "Older" is the order this agent first saw the nodes in, then the name: Node manifests
// carry no creation time, and every agent that watched both appear agrees.
import type { Logger } from '../log';
import { cidrToString, IpAddress, parseCidr, parseIp, tryParseCidr, tryParseIp } from '../ipam/ip';
import type { RouteEntry, RouteSpec } from '../netlink';
import type { NodeObject } from '../sources/objects/node';
import type { RemoteNode, RoutingMode, TunnelEntry, TunnelMaps } from '../datapath/node-types';
import { TUNNEL_F_ENCAP } from '../datapath/node-types';
import type { Reconciler } from './loop';

/** Route protocol of the routes to other nodes' pod CIDRs ('N'); pod routes are RTPROT_KELP ('K'). */
export const RTPROT_KELP_NODE = 0x4e;

/** One Node object as the reconciler judged it. */
export interface NodeRow {
  name: string;
  self: boolean;
  /** The underlay address chosen (IPv4 InternalIP, else ExternalIP). */
  address?: string;
  /** IPv4 pod CIDRs. */
  podCidrs: string[];
  /** Why the node is not routed to (remote nodes only). */
  skipped?: string;
}

export interface NodeTable {
  rows: NodeRow[];
  remote: RemoteNode[];
  /** This node's pod CIDR and every routed node's. */
  podCidrs: string[];
  /** The routed nodes' addresses as /32s, each once, this node's own never. */
  hosts: string[];
  problems: string[];
}

type Special = 'unspecified' | 'loopback' | 'link-local' | 'multicast' | 'broadcast';

function specialIpv4(ip: IpAddress): Special | undefined {
  const v = Number(ip.value);
  if (v === 0) return 'unspecified';
  if (v >>> 24 === 127) return 'loopback';
  if (v >>> 16 === 0xa9fe) return 'link-local';
  if (v >>> 28 === 0xe) return 'multicast';
  if (v === 0xffffffff) return 'broadcast';
  return undefined;
}

/** IPv4 InternalIP, else IPv4 ExternalIP, with the field at fault when neither is usable. */
function underlayAddress(n: NodeObject): { address: string } | { problem: string } {
  for (const type of ['InternalIP', 'ExternalIP'] as const) {
    const i = n.status.addresses.findIndex((a) => a.type === type && tryParseIp(a.address)?.family === 4);
    if (i < 0) continue;
    const address = n.status.addresses[i].address;
    const special = specialIpv4(parseIp(address));
    if (special) return { problem: `status.addresses[${i}] ${type} ${address} is ${special}, not an underlay address` };
    return { address };
  }
  return { problem: 'status.addresses has no IPv4 InternalIP or ExternalIP' };
}

/** An IPv4 CIDR as its first and last address (numbers: compared without parsing again). */
function range4(cidr: string): { lo: number; hi: number } {
  const c = parseCidr(cidr);
  const lo = Number(c.address);
  return { lo, hi: lo + 2 ** (32 - c.prefix) - 1 };
}

/**
 * The remote nodes and the pod CIDRs between which nothing is masqueraded (pure). `firstSeen`
 * orders the nodes by age (lower: older); nodes it does not hold are newest, by name.
 */
export function nodeTable(nodes: readonly NodeObject[], self: { name: string; podCidr: string }, firstSeen: ReadonlyMap<string, number> = new Map()): NodeTable {
  const selfCidr = cidrToString(parseCidr(self.podCidr));
  const out: NodeTable = { rows: [], remote: [], podCidrs: [selfCidr], hosts: [], problems: [] };
  const claimed: Array<{ cidr: string; by: string; lo: number; hi: number }> = [{ cidr: selfCidr, by: 'this node', ...range4(selfCidr) }];
  const age = (n: NodeObject) => firstSeen.get(n.metadata.name) ?? Infinity;
  const ordered = [...nodes].sort((a, b) => age(a) - age(b) || (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
  for (const n of ordered) {
    const name = n.metadata.name;
    const podCidrs = n.spec.podCIDRs.filter((c) => tryParseCidr(c)?.family === 4);
    const addr = underlayAddress(n);
    const row: NodeRow = { name, self: name === self.name, podCidrs, ...('address' in addr ? { address: addr.address } : {}) };
    out.rows.push(row);
    if (row.self) continue;
    const skip = (why: string) => {
      row.skipped = why;
      out.problems.push(`Node ${name}: ${why}: skipped`);
    };
    if ('problem' in addr) {
      skip(addr.problem);
      continue;
    }
    if (podCidrs.length === 0) {
      skip(n.spec.podCIDRs.length ? `spec.podCIDRs has no IPv4 CIDR (${n.spec.podCIDRs.join(', ')})` : 'spec.podCIDRs is empty');
      continue;
    }
    const clash = podCidrs.flatMap((c) => {
      const r = range4(c);
      return claimed.filter((k) => r.lo <= k.hi && k.lo <= r.hi).map((k) => ({ c, k }));
    })[0];
    if (clash) {
      const holder = clash.k.by === 'this node' ? "this node's pod CIDR" : `Node ${clash.k.by}'s ${clash.k.cidr} (older, kept)`;
      skip(`spec.podCIDRs ${clash.c} overlaps ${clash.k.by === 'this node' ? `${holder} ${clash.k.cidr}` : holder}`);
      continue;
    }
    for (const cidr of podCidrs) claimed.push({ cidr, by: name, ...range4(cidr) });
    out.remote.push({ name, address: addr.address, podCidrs });
    out.podCidrs.push(...podCidrs);
  }
  const own = out.rows.find((r) => r.self)?.address;
  out.hosts = [...new Set(out.remote.map((n) => n.address).filter((a) => a !== own))].map((a) => `${a}/32`);
  return out;
}

/**
 * kelp_tunnel4 as it should be (pure): every remote pod CIDR → its node; in VXLAN mode each
 * remote node's address too (ENCAP), so pods' answers to it take the tunnel.
 */
export function desiredTunnel(t: Pick<NodeTable, 'remote' | 'hosts'>, mode: RoutingMode): TunnelEntry[] {
  const flags = mode === 'vxlan' ? TUNNEL_F_ENCAP : 0;
  const out = t.remote.flatMap((n) => n.podCidrs.map((cidr) => ({ cidr, nodeIp: n.address, flags })));
  if (mode !== 'vxlan') return out;
  const taken = new Set(out.map((e) => e.cidr));
  for (const cidr of t.hosts) {
    // A node address inside a remote pod CIDR (a misconfiguration) is still sent to that node.
    if (!taken.has(cidr)) out.push({ cidr, nodeIp: cidr.slice(0, -3), flags });
  }
  return out;
}

/**
 * What is never masqueraded to besides the masquerade configuration (pure): every usable node's
 * pod CIDR, and natively each remote node's address (its pods' answers to it keep their source).
 */
export function desiredNoMasquerade(t: Pick<NodeTable, 'podCidrs' | 'hosts'>, mode: RoutingMode): string[] {
  return mode === 'native' ? [...t.podCidrs, ...t.hosts] : [...t.podCidrs];
}

export function tunnelDiff(desired: readonly TunnelEntry[], current: readonly TunnelEntry[]): { put: TunnelEntry[]; remove: string[] } {
  const have = new Map(current.map((e) => [e.cidr, e]));
  const want = new Set(desired.map((e) => e.cidr));
  return {
    put: desired.filter((e) => {
      const h = have.get(e.cidr);
      return !h || h.nodeIp !== e.nodeIp || h.flags !== e.flags;
    }),
    remove: current.filter((e) => !want.has(e.cidr)).map((e) => e.cidr),
  };
}

/** The devices node routes go out of. */
export interface NodeRouting {
  mode: RoutingMode;
  /** kelp_vxlan (VXLAN mode). */
  vxlanIfindex: number;
  /** The underlay device (native mode: the next hop is a remote node's address on it). */
  uplinkIfindex: number;
}

/**
 * The node's own routes to remote pods (pure): VXLAN, onto kelp_vxlan (kelp_to_overlay sets the
 * tunnel key); native, via the node's underlay address.
 */
export function desiredRoutes(remote: readonly RemoteNode[], r: NodeRouting): RouteSpec[] {
  return remote.flatMap((n) =>
    n.podCidrs.map((dst): RouteSpec =>
      r.mode === 'vxlan'
        ? { dst, dev: r.vxlanIfindex, scope: 'link', protocol: RTPROT_KELP_NODE }
        : { dst, gw: n.address, dev: r.uplinkIfindex, protocol: RTPROT_KELP_NODE },
    ),
  );
}

export interface RoutesDiff {
  /** Added, or replacing kelp's route to the same prefix in place (no moment without one). */
  replace: RouteSpec[];
  remove: RouteEntry[];
  /** Desired prefixes someone else holds a route to: left alone. */
  conflicts: Array<{ want: RouteSpec; theirs: RouteEntry }>;
}

const sameNexthop = (r: RouteEntry, d: RouteSpec) => r.dev === d.dev && (r.gw ?? '') === (d.gw ?? '');

/**
 * What makes the main table's IPv4 routes (`current`, all of them) hold `desired` (pure): kelp's
 * own routes (RTPROT_KELP_NODE) are replaced or removed; a route of any other protocol to a
 * desired prefix at the same metric is a conflict, never touched.
 */
export function routesDiff(desired: readonly RouteSpec[], current: readonly RouteEntry[]): RoutesDiff {
  const out: RoutesDiff = { replace: [], remove: [], conflicts: [] };
  const ours = current.filter((r) => r.protocol === RTPROT_KELP_NODE);
  const byDst = new Map<string, RouteEntry[]>();
  for (const r of current) byDst.set(r.dst, [...(byDst.get(r.dst) ?? []), r]);
  const kept = new Set<RouteEntry>();
  for (const d of desired) {
    const atDst = byDst.get(d.dst) ?? [];
    const theirs = atDst.find((r) => r.protocol !== RTPROT_KELP_NODE && (r.metric ?? 0) === 0);
    if (theirs) {
      out.conflicts.push({ want: d, theirs });
      continue;
    }
    const same = atDst.filter((r) => r.protocol === RTPROT_KELP_NODE);
    const good = same.find((r) => (r.metric ?? 0) === 0 && sameNexthop(r, d));
    if (good) kept.add(good);
    else {
      out.replace.push(d);
      // The replace takes the metric-0 route's place; any other of ours to the prefix goes.
      const inPlace = same.find((r) => (r.metric ?? 0) === 0);
      if (inPlace) kept.add(inPlace);
    }
  }
  out.remove = ours.filter((r) => !kept.has(r));
  return out;
}

export interface NodesRun {
  at: string;
  ms: number;
  mode: RoutingMode;
  remote: number;
  tunnel: { put: number; removed: number };
  routes: { replaced: number; removed: number };
  problems: string[];
}

export interface NodesReconcilerDeps {
  objects: { list(kind: 'Node'): NodeObject[] };
  self: { name: string; podCidr: string };
  routing: NodeRouting;
  tunnel: TunnelMaps;
  routes: {
    listRoutes(f: { family: 4 }): Promise<RouteEntry[]>;
    addRoute(r: RouteSpec, o: { exist: 'replace' }): Promise<void>;
    deleteRoute(r: RouteSpec): Promise<boolean>;
  };
  /** kelp_nomasq4's node part; absent when masquerade is off. */
  setNoMasquerade?: (cidrs: string[]) => void;
  log: Logger;
}

export interface NodesReconciler extends Reconciler {
  last(): NodesRun | undefined;
  /** The Node objects as the last run judged them. */
  table(): NodeTable | undefined;
}

export function nodesReconciler(deps: NodesReconcilerDeps): NodesReconciler {
  const firstSeen = new Map<string, number>();
  let seq = 0;
  let last: NodesRun | undefined;
  let table: NodeTable | undefined;
  let reported = new Set<string>();
  const routeText = (r: RouteSpec | RouteEntry) => `${r.dst}${r.gw ? ` via ${r.gw}` : ''} dev ${r.dev}`;

  return {
    name: 'nodes',
    kinds: ['Node'],
    last: () => last,
    table: () => table,
    async reconcile() {
      const t0 = performance.now();
      const nodes = deps.objects.list('Node');
      // Every node present now and unseen before shares one age: a start sees all as equals.
      seq++;
      for (const n of nodes) if (!firstSeen.has(n.metadata.name)) firstSeen.set(n.metadata.name, seq);
      const live = new Set(nodes.map((n) => n.metadata.name));
      for (const name of firstSeen.keys()) if (!live.has(name)) firstSeen.delete(name);

      const t = nodeTable(nodes, deps.self, firstSeen);
      const problems = [...t.problems];
      try {
        deps.setNoMasquerade?.(desiredNoMasquerade(t, deps.routing.mode));
      } catch (err) {
        // kelp_nomasq4 full (or refused): the rest goes in all the same; the run says why.
        problems.push(`kelp_nomasq4 not updated: ${(err as Error).message}; traffic to the pod CIDRs it lacks is masqueraded`);
      }

      const tunnel = tunnelDiff(desiredTunnel(t, deps.routing.mode), deps.tunnel.entries());
      for (const e of tunnel.put) deps.tunnel.put(e);

      const routes = routesDiff(desiredRoutes(t.remote, deps.routing), await deps.routes.listRoutes({ family: 4 }));
      const owner = (dst: string) => t.remote.find((n) => n.podCidrs.includes(dst))?.name ?? '?';
      for (const c of routes.conflicts) {
        problems.push(`Node ${owner(c.want.dst)}: a route to ${c.want.dst} exists already (protocol ${c.theirs.protocol}, ${routeText(c.theirs)}), not kelp's: left alone, the node's own traffic to those pods follows it`);
      }
      let replaced = 0;
      for (const r of routes.replace) {
        try {
          await deps.routes.addRoute(r, { exist: 'replace' });
          replaced++;
        } catch (err) {
          problems.push(`Node ${owner(r.dst)}: route ${routeText(r)}: ${(err as Error).message}`);
        }
      }
      let removed = 0;
      for (const r of routes.remove) {
        // The protocol makes the kernel delete only kelp's route to the prefix.
        if (await deps.routes.deleteRoute({ dst: r.dst, dev: r.dev ?? 0, gw: r.gw, metric: r.metric, protocol: RTPROT_KELP_NODE })) removed++;
      }
      for (const cidr of tunnel.remove) deps.tunnel.remove(cidr);

      const now = new Set(problems);
      for (const p of now) if (!reported.has(p)) deps.log.warn({ problem: p }, p);
      reported = now;
      table = t;
      last = {
        at: new Date().toISOString(),
        ms: performance.now() - t0,
        mode: deps.routing.mode,
        remote: t.remote.length,
        tunnel: { put: tunnel.put.length, removed: tunnel.remove.length },
        routes: { replaced, removed },
        problems,
      };
      if (tunnel.put.length || tunnel.remove.length || replaced || removed) {
        deps.log.info({ remote: t.remote.map((n) => n.name), tunnel: last.tunnel, routes: last.routes }, 'remote nodes programmed');
      }
    },
  };
}
