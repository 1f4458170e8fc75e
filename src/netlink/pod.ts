// A pod's network interface: a veth pair whose peer is the pod's CNI_IFNAME, with the pod's
// address and routes. Host-local style: the address keeps its subnet prefix (10.244.0.5/24)
// and the pod's routes go via the gateway.
import { constants } from 'node:os';
import { cidrContains, cidrToString, ipToString, networkAddress, parseCidr, parseIp } from '../ipam/ip';
import { NetlinkError } from './errors';
import { parseMac, formatMac } from './mac';
import { LinkInfo, RouteEntry, RouteSpec, Rtnl } from './rtnl';
import { disableIpv6 } from './sysctl';

export interface PodRoute {
  /** A CIDR or 'default'. */
  dst: string;
  /** Default: the interface's gateway. */
  gw?: string;
}

export interface PodInterfaceConfig {
  /** The pod's network namespace (CNI_NETNS). */
  netns: string;
  /** The interface name inside the pod (CNI_IFNAME). */
  ifname: string;
  /** The host end of the veth, created in the namespace of the Rtnl passed in. */
  hostIfname: string;
  /** The pod's address with its subnet prefix: 10.244.0.5/24. */
  address: string;
  gateway: string;
  mtu: number;
  podMac?: string;
  hostMac?: string;
  /** Routes in the pod; default: one default route via the gateway. */
  routes?: PodRoute[];
}

export interface PodInterface {
  host: { name: string; index: number; mac: string };
  pod: { name: string; index: number; mac: string; netns: string };
}

export type CheckSubject = 'host-link' | 'netns' | 'pod-link' | 'address' | 'route';

export interface CheckProblem {
  subject: CheckSubject;
  message: string;
}

/**
 * The routes a pod gets on `dev`. The gateway must be on the link: the kernel's prefix route
 * covers it when it is inside the address's subnet; otherwise (a link-local gateway, a /32
 * address) a scope-link host route to it comes first.
 */
export function podRoutes(cfg: Pick<PodInterfaceConfig, 'address' | 'gateway' | 'routes'>, dev: number): RouteSpec[] {
  const addr = parseCidr(cfg.address);
  const gw = parseIp(cfg.gateway);
  if (gw.family !== addr.family) {
    throw new TypeError(`pod interface: gateway ${cfg.gateway} is not of the family of ${cfg.address}`);
  }
  const out: RouteSpec[] = [];
  if (!cidrContains(addr, gw)) {
    out.push({ dst: `${ipToString(gw)}/${gw.family === 4 ? 32 : 128}`, dev, scope: 'link' });
  }
  for (const r of cfg.routes ?? [{ dst: 'default' }]) {
    out.push({ dst: r.dst, gw: r.gw ?? cfg.gateway, dev });
  }
  return out;
}

/**
 * Creates and configures the pod's interface, IPv6 off on it. On failure, whatever it created is
 * removed (deleting the host end removes the pair) before the error is thrown.
 */
export async function podInterfaceSetup(host: Rtnl, cfg: PodInterfaceConfig): Promise<PodInterface> {
  // Everything that can be checked without the kernel is checked before anything is created.
  podRoutes(cfg, 0);
  const pod = Rtnl.inNetns(cfg.netns);
  try {
    const hostLink = await host.createVethPair({
      hostName: cfg.hostIfname,
      peerName: cfg.ifname,
      peerNetnsPath: cfg.netns,
      hostMac: cfg.hostMac,
      peerMac: cfg.podMac,
      mtu: cfg.mtu,
      hostUp: true,
    });
    try {
      // kelp gives pods no IPv6, and kelp_from_pod drops all of it: left on, the pod's kernel
      // would send MLD reports, a DAD solicitation and router solicitations as soon as the link
      // is up, each one a drop. Off while the link is still down, so none is sent. One sysctl
      // write in the pod's namespace (a synchronous switch, undone before it returns); false
      // (nothing to do) on a kernel without IPv6.
      disableIpv6(cfg.ifname, cfg.netns);
      const podLink = await configurePodSide(pod, hostLink.peerIndex ?? cfg.ifname, cfg);
      return {
        host: { name: hostLink.name, index: hostLink.index, mac: hostLink.mac },
        pod: { name: podLink.name, index: podLink.index, mac: podLink.mac, netns: cfg.netns },
      };
    } catch (e) {
      await undo(e, () => host.deleteLink(hostLink.index));
      throw e;
    }
  } finally {
    pod.close();
  }
}

/**
 * The pod half of the setup, on a socket in the pod's namespace: link up, address, routes,
 * then a read-back of the link — one batch, so one round trip. The first failure in that
 * order is thrown once every reply is in.
 */
export async function configurePodSide(
  pod: Rtnl,
  link: number | string,
  cfg: Pick<PodInterfaceConfig, 'address' | 'gateway' | 'routes'>,
): Promise<LinkInfo> {
  let index: number;
  if (typeof link === 'number') {
    index = link;
  } else {
    const l = await pod.link(link);
    if (!l) throw new NetlinkError(`netlink getlink ${link}`, constants.errno.ENODEV);
    index = l.index;
  }
  const routes = podRoutes(cfg, index);
  // Up first: IPv4 adds the prefix route only on an up interface, and a route via the
  // gateway is refused while no route says the gateway is on the link.
  const steps: Promise<unknown>[] = [pod.setUp(index), pod.addAddress(index, cfg.address)];
  for (const r of routes) steps.push(pod.addRoute(r));
  const readBack = pod.link(index);
  steps.push(readBack);
  const results = await Promise.allSettled(steps);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
  const info = await readBack;
  if (!info) throw new NetlinkError(`netlink getlink ${index}`, constants.errno.ENODEV);
  return info;
}

/**
 * Removes the pod's interface through its host end (an Rtnl, or a BatchedLinkDeleter over one).
 * Returns false when it was already gone. Its tc filters and addresses and the node routes
 * through it go with the device.
 */
export function podInterfaceTeardown(host: Pick<Rtnl, 'deleteLink'>, hostIfname: string): Promise<boolean> {
  return host.deleteLink(hostIfname);
}

/** Compares the pod's interface with `cfg` and lists what is missing or different. */
export async function podInterfaceCheck(host: Rtnl, cfg: PodInterfaceConfig): Promise<CheckProblem[]> {
  const problems: CheckProblem[] = [];
  const report = (subject: CheckSubject, message: string) => problems.push({ subject, message });

  const h = await host.link(cfg.hostIfname);
  if (!h) {
    report('host-link', `host interface ${cfg.hostIfname} is missing`);
  } else {
    compareLink('host-link', h, { mtu: cfg.mtu, mac: cfg.hostMac }, report);
    if (h.kind !== 'veth') report('host-link', `${h.name} is ${h.kind ? `a ${h.kind}` : 'not a veth'}`);
  }

  let pod: Rtnl;
  try {
    pod = Rtnl.inNetns(cfg.netns);
  } catch (e) {
    report('netns', (e as Error).message);
    return problems;
  }
  try {
    const family = parseCidr(cfg.address).family;
    const [p, addresses, routes] = await Promise.all([
      pod.link(cfg.ifname),
      pod.listAddresses(undefined, family),
      pod.listRoutes({ family }),
    ]);
    if (!p) {
      report('pod-link', `${cfg.ifname} is missing in ${cfg.netns}`);
      return problems;
    }
    compareLink('pod-link', p, { mtu: cfg.mtu, mac: cfg.podMac }, report);
    if (h && (h.peerIndex !== p.index || p.peerIndex !== h.index)) {
      report('pod-link', `${cfg.ifname} is not the peer of ${cfg.hostIfname}`);
    }
    const want = canonicalCidr(cfg.address);
    if (!addresses.some((a) => a.ifindex === p.index && canonicalCidr(a.cidr) === want)) {
      report('address', `${cfg.address} is not on ${cfg.ifname}`);
    }
    for (const r of podRoutes(cfg, p.index)) {
      if (!routes.some((e) => routeMatches(e, r))) {
        report('route', `route ${r.dst}${r.gw ? ` via ${r.gw}` : ''} dev ${cfg.ifname} is missing`);
      }
    }
  } finally {
    pod.close();
  }
  return problems;
}

function compareLink(
  subject: CheckSubject,
  l: LinkInfo,
  want: { mtu: number; mac?: string },
  report: (s: CheckSubject, m: string) => void,
): void {
  if (!l.up) report(subject, `${l.name} is down`);
  if (l.mtu !== want.mtu) report(subject, `${l.name} has MTU ${l.mtu}, expected ${want.mtu}`);
  if (want.mac !== undefined && l.mac !== formatMac(parseMac(want.mac))) {
    report(subject, `${l.name} has MAC ${l.mac}, expected ${want.mac}`);
  }
}

function canonicalCidr(cidr: string): string {
  return cidrToString(parseCidr(cidr));
}

function canonicalPrefix(dst: string, family: 4 | 6): string {
  if (dst === 'default') return family === 4 ? '0.0.0.0/0' : '::/0';
  const c = parseCidr(dst);
  return `${ipToString(networkAddress(c))}/${c.prefix}`;
}

function routeMatches(e: RouteEntry, r: RouteSpec): boolean {
  if (e.dev !== r.dev || canonicalPrefix(e.dst, e.family) !== canonicalPrefix(r.dst, e.family)) return false;
  if (r.gw === undefined) return e.gw === undefined;
  return e.gw !== undefined && ipToString(parseIp(e.gw)) === ipToString(parseIp(r.gw));
}

/** Runs an undo step; if it fails too, both errors are reported together. */
async function undo(original: unknown, step: () => Promise<unknown>): Promise<void> {
  try {
    await step();
  } catch (e) {
    const msg = (x: unknown) => (x instanceof Error ? x.message : String(x));
    throw new AggregateError([original, e], `${msg(original)}; undo failed: ${msg(e)}`);
  }
}
