// One rtnetlink socket and the link/address/route operations kelp needs. The socket is the
// addon's (openRtnlSocket, native/rtnl.cc); the `netlink` package encodes and decodes the
// messages. Its own socket layer is never loaded: on a socket error (an overrun receive buffer:
// EPOLLERR) its native poll handler threw a C++ exception out of a libuv callback, and the
// process aborted. A socket made inside another network namespace stays bound to it, so every
// request on `Rtnl.inNetns(path)` acts there without switching namespaces again.
//
// Requests are sent synchronously when called (the kernel handles rtnetlink inside the sender's
// sendmsg), so several calls issued before the first await are one batch: the kernel applies
// them in order and one event-loop wake-up collects the replies. Beyond MAX_IN_FLIGHT unanswered
// requests on a socket, the next ones wait their turn, still in call order. Link deletions go
// from a pool thread instead (requestOffLoop).
//
// A socket error fails every request waiting for a reply on the socket with its errno (ENOBUFS:
// the receive buffer overran, replies were dropped) and retires the socket; the next request
// opens a new one in the same namespace.
import { randomInt } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { constants } from 'node:os';
import { Flags, FlagsGet, FlagsNew, MessageType as NlMessageType } from 'netlink/dist/constants';
import { AttrStream, formatMessage, NetlinkMessage, parseError, parseMessages } from 'netlink/dist/structs';
import * as rt from 'netlink/dist/rt/structs';
import type * as ifla from 'netlink/dist/rt/ifla';
import { ipFromBytes, ipToBytes, ipToString, parseCidr, parseIp, tryParseIp, IpFamily } from '../ipam/ip';
import { asNetlinkError, isGone, hasCode, NetlinkError } from './errors';
import { formatMac, parseMac } from './mac';
import { openRtnlSocket, rtnlRequestAsync, type RtnlSocket } from '../bpf';

const AF_INET = 2;
const AF_INET6 = 10;
const IFF_UP = 0x1;
const IFF_LOWER_UP = 0x10000;
const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFLA_LINK = 5;
const IFLA_LINKINFO = 18;
const IFLA_LINK_NETNSID = 37;
const IFLA_NET_NS_FD = 28;
const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const VETH_INFO_PEER = 1;
const IFF_NOARP = 0x80;
// IFLA_VXLAN_* of <linux/if_link.h>.
const IFLA_VXLAN_LOCAL = 4;
const IFLA_VXLAN_LEARNING = 7;
const IFLA_VXLAN_PORT = 15;
const IFLA_VXLAN_COLLECT_METADATA = 25;
const NLA_F_NESTED = 0x8000;
const RTEXT_FILTER_SKIP_STATS = 8;
const RTNH_F_ONLINK = 4;
const RT_TABLE_MAIN = 254;
const RT_SCOPE_NOWHERE = 255;
const RTPROT_STATIC = 4;
const IFNAMSIZ = 16;
const IFINFOMSG_LEN = 16; // struct ifinfomsg
// Device groups for batched deletion: drawn at random from the top half of the u32 range, far
// from the small numbers administrators give groups (0 is every device's default, and `ip`
// names groups from /etc/iproute2/group, all small).
const DELETE_GROUP_MIN = 0x80000000;
const DELETE_GROUP_MAX = 0xffffffff;

/** What to do when the object being added already exists. */
export type ExistPolicy = 'error' | 'ignore' | 'replace';

export type LinkRef = string | number;

export interface LinkInfo {
  index: number;
  name: string;
  /** Lower-case colon form; '' when the link has no L2 address. */
  mac: string;
  mtu: number;
  /** Administratively up (IFF_UP). */
  up: boolean;
  /** Carrier up too (IFF_LOWER_UP): for a veth, both ends are up. */
  lowerUp: boolean;
  /** IFLA_INFO_KIND: 'veth', 'vxlan' …; undefined for physical devices and loopback. */
  kind?: string;
  /** IFLA_LINK: for a veth, the peer's ifindex in the peer's namespace (for a VLAN, its parent). */
  peerIndex?: number;
  /** IFLA_LINK_NETNSID: set when the peer lives in another namespace. */
  peerNetnsId?: number;
}

export interface VethPairOptions {
  hostName: string;
  peerName: string;
  /** Where the peer is created; default: this socket's namespace. */
  peerNetnsPath?: string;
  peerNetnsFd?: number;
  hostMac?: string;
  peerMac?: string;
  mtu?: number;
  /**
   * Create the host end administratively up (default false). The peer cannot be: veth_open
   * refuses with ENOTCONN while the pair is still being linked, so it is set up afterwards
   * from its own namespace.
   */
  hostUp?: boolean;
}

/** A kelp VXLAN device: external (collect_md), learning off, NOARP, up. */
export interface VxlanOptions {
  name: string;
  /** UDP port it sends to and listens on (IANA's is 4789; flannel's and kelp's default 8472). */
  port: number;
  mtu: number;
  /** The underlay address the device binds to; default any. */
  local?: string;
}

/** What a VXLAN device is configured with, as createVxlan compares it. */
export interface VxlanSettings {
  collectMetadata: boolean;
  port: number;
  learning: boolean;
  noarp: boolean;
  mtu: number;
  /** Undefined when it is bound to no address. */
  local?: string;
}

export interface LinkChanges {
  up?: boolean;
  mtu?: number;
  mac?: string;
}

export interface AddressEntry {
  ifindex: number;
  family: IpFamily;
  /** The address with its prefix, as configured: `10.244.0.5/24`. */
  cidr: string;
  address: string;
  prefixLen: number;
  scope: number;
}

export type RouteScope = 'universe' | 'site' | 'link' | 'host';

export interface RouteSpec {
  /** A CIDR, or 'default' (the family then follows `gw`, IPv4 without one). */
  dst: string;
  gw?: string;
  /** Output interface index. */
  dev: number;
  /** Default: 'universe' with a gateway, 'link' without. */
  scope?: RouteScope;
  /** Use the gateway even if no route says it is on the link (RTNH_F_ONLINK). */
  onlink?: boolean;
  /** Routing table; default main (254). */
  table?: number;
  /** Preferred source address. */
  src?: string;
  metric?: number;
  /** RTPROT_*; default static (4). */
  protocol?: number;
}

export interface RouteEntry {
  family: IpFamily;
  /** Always a CIDR: the default route is `0.0.0.0/0` (or `::/0`). */
  dst: string;
  gw?: string;
  dev?: number;
  scope: number;
  table: number;
  protocol: number;
  /** RTN_*: 1 unicast, 2 local, 3 broadcast … */
  type: number;
  src?: string;
  metric?: number;
  onlink: boolean;
}

export interface RouteFilter {
  family?: IpFamily;
  /** Only routes whose output interface is this one. */
  ifindex?: number;
  /** Default main (254); `'all'` for every table. */
  table?: number | 'all';
}

const SCOPES: Record<RouteScope, number> = { universe: 0, site: 200, link: 253, host: 254 };

/** Linux's rules for an interface name (dev_valid_name). */
export function isValidIfname(name: string): boolean {
  return (
    typeof name === 'string' &&
    name.length > 0 &&
    Buffer.byteLength(name) < IFNAMSIZ &&
    name !== '.' &&
    name !== '..' &&
    !/[/:\s]/.test(name)
  );
}

export interface RtnlOptions {
  /**
   * Rejects a request with ETIMEDOUT when no reply came (default 10 s). The kernel answers
   * rtnetlink at once, so this only fires when the kernel is stuck (waiting for the rtnl lock).
   */
  timeoutMs?: number;
  /**
   * SO_RCVBUF of the socket in bytes (the kernel doubles it and keeps a minimum of ~2.3 KiB);
   * default: the kernel's (net.core.rmem_default). Replies that do not fit are dropped, and the
   * requests waiting for them fail with ENOBUFS.
   */
  receiveBufferBytes?: number;
}

/**
 * Requests in flight per socket. Their replies wait in the socket's receive buffer until the
 * event loop reads them (the kernel answers inside sendmsg); dozens of concurrent ADDs could
 * overrun the default 208 KiB (a reply costs ~1-4 KiB of it), and the requests whose replies
 * were dropped would fail with ENOBUFS.
 */
const MAX_IN_FLIGHT = 16;
const MAX_RECEIVE_BUFFER = 2 ** 30;

/**
 * Test only: the receive buffer, in bytes, of the sockets Rtnl.inNetns opens (the pods'), until
 * the first netlink socket error in the process. Lets a test provoke one overrun inside a
 * running agent (test/netns/netlink-abort.test.ts); never set in production.
 */
let testReceiveBufferBytes = process.env.KELP_TEST_NETLINK_RCVBUF || undefined;

/** How a request ends: a change on its ACK, a lookup on its one reply, a dump on NLMSG_DONE. */
type Exchange = 'change' | 'get' | 'dump';

const EXCHANGE_FLAGS: Record<Exchange, number> = {
  change: Flags.REQUEST | Flags.ACK,
  get: Flags.REQUEST,
  dump: Flags.REQUEST | FlagsGet.DUMP,
};

interface Pending {
  op: string;
  exchange: Exchange;
  msgs: NetlinkMessage[];
  resolve: (msgs: NetlinkMessage[]) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class Rtnl {
  private closed = false;
  /** Undefined after a socket error, until the next request opens another one. */
  private sock: RtnlSocket | undefined;
  /** Requests sent and not answered, by sequence number. */
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private inFlight = 0;
  private readonly waiting: Array<() => void> = [];
  private dumpsPending = 0;
  private dumpTail: Promise<unknown> = Promise.resolve();
  private readonly timeoutMs: number;

  private constructor(
    /** The namespace this socket acts in, held: sockets are made there, and requestOffLoop's too. */
    private readonly nsFd: number,
    /** Its path; undefined for the one the Rtnl was opened in (Rtnl.open). */
    readonly netns: string | undefined,
    private readonly opts: RtnlOptions,
  ) {
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    if (opts.receiveBufferBytes !== undefined) checkReceiveBuffer('Rtnl: receiveBufferBytes', opts.receiveBufferBytes);
    this.sock = this.openSocket();
  }

  /** A socket in the calling thread's current network namespace. */
  static open(opts: RtnlOptions = {}): Rtnl {
    // The namespace the thread is in now: it may be elsewhere later (inNetns).
    const fd = openSync('/proc/thread-self/ns/net', 'r');
    try {
      return new Rtnl(fd, undefined, opts);
    } catch (e) {
      closeSync(fd);
      throw asNetlinkError(e, 'netlink socket');
    }
  }

  /** A socket bound to the namespace at `netnsPath` (e.g. /var/run/netns/x or /proc/<pid>/ns/net). */
  static inNetns(netnsPath: string, opts: RtnlOptions = {}): Rtnl {
    let fd: number | undefined;
    try {
      fd = openSync(netnsPath, 'r');
      return new Rtnl(fd, netnsPath, opts);
    } catch (e) {
      if (fd !== undefined) closeSync(fd);
      throw asNetlinkError(e, `netlink socket in netns ${netnsPath}`);
    }
  }

  /** Closes the socket; requests still waiting for a reply reject with ECANCELED. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.retireSocket(constants.errno.ECANCELED, 'the socket was closed');
    closeSync(this.nsFd);
  }

  // ---- links ----

  /**
   * Creates a veth pair in one RTM_NEWLINK: the peer is born in its namespace under its final
   * name (no rename or move step, so no half-configured interface is ever visible). Returns
   * the host end; its `peerIndex` is the peer's ifindex. Nothing is left behind when it throws.
   */
  async createVethPair(o: VethPairOptions): Promise<LinkInfo> {
    checkIfname('createVethPair', 'hostName', o.hostName);
    checkIfname('createVethPair', 'peerName', o.peerName);
    if (o.peerNetnsPath !== undefined && o.peerNetnsFd !== undefined) {
      throw new TypeError('createVethPair: give peerNetnsPath or peerNetnsFd, not both');
    }
    if (o.mtu !== undefined) checkMtu('createVethPair', o.mtu);
    const hostMac = o.hostMac === undefined ? undefined : parseMac(o.hostMac);
    const peerMac = o.peerMac === undefined ? undefined : parseMac(o.peerMac);

    let fd = o.peerNetnsFd;
    if (o.peerNetnsPath !== undefined) {
      try {
        fd = openSync(o.peerNetnsPath, 'r');
      } catch (e) {
        throw asNetlinkError(e, `netlink newlink ${o.hostName}: open netns ${o.peerNetnsPath}`);
      }
    }
    try {
      // VETH_INFO_PEER holds a struct ifinfomsg (all zero here) followed by the peer's attributes.
      const peer: Buffer[] = [Buffer.alloc(IFINFOMSG_LEN), rtattr(IFLA_IFNAME, cstring(o.peerName))];
      if (fd !== undefined) peer.push(rtattr(IFLA_NET_NS_FD, u32(fd)));
      if (peerMac) peer.push(rtattr(IFLA_ADDRESS, peerMac));
      if (o.mtu !== undefined) peer.push(rtattr(IFLA_MTU, u32(o.mtu)));
      const linkinfo = Buffer.concat([
        rtattr(IFLA_INFO_KIND, cstring('veth')),
        rtattr(IFLA_INFO_DATA | NLA_F_NESTED, rtattr(VETH_INFO_PEER, Buffer.concat(peer))),
      ]);
      const payload = linkMessage(
        { flags: o.hostUp ? { up: true } : {}, change: o.hostUp ? { up: true } : {} },
        { ifname: o.hostName, mtu: o.mtu, address: hostMac, linkinfo },
      );
      const created = this.request(rt.MessageType.NEWLINK, payload, FlagsNew.CREATE | FlagsNew.EXCL,
        `netlink newlink ${o.hostName}`);
      // Same batch: read back the ifindex and MAC the kernel chose.
      const fetched = this.link(o.hostName);
      fetched.catch(() => undefined);
      await created;
      try {
        const link = await fetched;
        if (!link) throw new NetlinkError(`netlink getlink ${o.hostName}`, constants.errno.ENODEV);
        return link;
      } catch (e) {
        await this.deleteLink(o.hostName).catch(() => undefined);
        throw e;
      }
    } finally {
      if (o.peerNetnsPath !== undefined && fd !== undefined) closeSync(fd);
    }
  }

  /**
   * Creates a VXLAN device in external (collect_md) mode: no VNI, remote or FDB of its own, the
   * tunnel key of each packet set by BPF (bpf_skb_set_tunnel_key); learning off; NOARP, since
   * nothing on it has a neighbour to resolve; up. A device of that name with the same settings
   * is left as it is (an agent restart); one with other settings (or not a VXLAN device) is an
   * error naming what differs, and is left alone. Returns the device (its ifindex and MAC).
   */
  async createVxlan(o: VxlanOptions): Promise<LinkInfo> {
    checkIfname('createVxlan', 'name', o.name);
    if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) throw new RangeError(`createVxlan: port ${o.port} is not in 1..65535`);
    checkMtu('createVxlan', o.mtu);
    let local: Buffer | undefined;
    if (o.local !== undefined) {
      const ip = tryParseIp(o.local);
      if (ip?.family !== 4) throw new TypeError(`createVxlan: local ${JSON.stringify(o.local)} is not an IPv4 address`);
      local = ipToBytes(ip);
    }
    const want: VxlanSettings = { collectMetadata: true, port: o.port, learning: false, noarp: true, mtu: o.mtu, ...(o.local !== undefined ? { local: o.local } : {}) };

    const existing = await this.vxlanOf(o.name);
    if (existing) return this.checkVxlan(o.name, existing, want);

    const port = Buffer.alloc(2);
    port.writeUInt16BE(o.port);
    const data = [rtattr(IFLA_VXLAN_COLLECT_METADATA, Buffer.from([1])), rtattr(IFLA_VXLAN_PORT, port), rtattr(IFLA_VXLAN_LEARNING, Buffer.from([0]))];
    if (local) data.push(rtattr(IFLA_VXLAN_LOCAL, local));
    const linkinfo = Buffer.concat([rtattr(IFLA_INFO_KIND, cstring('vxlan')), rtattr(IFLA_INFO_DATA | NLA_F_NESTED, Buffer.concat(data))]);
    const payload = linkMessage(
      { flags: { up: true, noarp: true }, change: { up: true, noarp: true } },
      { ifname: o.name, mtu: o.mtu, linkinfo },
    );
    try {
      await this.request(rt.MessageType.NEWLINK, payload, FlagsNew.CREATE | FlagsNew.EXCL, `netlink newlink ${o.name} type vxlan`);
    } catch (e) {
      // Made meanwhile by someone else: judged as any existing device.
      const raced = hasCode(e, 'EEXIST') ? await this.vxlanOf(o.name) : undefined;
      if (!raced) throw e;
      return this.checkVxlan(o.name, raced, want);
    }
    const link = await this.link(o.name);
    if (!link) throw new NetlinkError(`netlink getlink ${o.name}`, constants.errno.ENODEV);
    return link;
  }

  /** A link and, when it is a VXLAN device, its settings; undefined when there is no such link. */
  async vxlanOf(ref: LinkRef): Promise<{ link: LinkInfo; vxlan?: VxlanSettings } | undefined> {
    const [data, attrs] = linkRef(ref);
    let msgs: NetlinkMessage[];
    try {
      msgs = await this.get(rt.MessageType.GETLINK, linkMessage(data, { ...attrs, extMask: u32(RTEXT_FILTER_SKIP_STATS) }), `netlink getlink ${ref}`);
    } catch (e) {
      if (isGone(e)) return undefined;
      throw e;
    }
    if (!msgs.length) return undefined;
    const link = parseLink(msgs[0]);
    return link.kind === 'vxlan' ? { link, vxlan: parseVxlan(msgs[0], link.mtu) } : { link };
  }

  private async checkVxlan(name: string, found: { link: LinkInfo; vxlan?: VxlanSettings }, want: VxlanSettings): Promise<LinkInfo> {
    if (!found.vxlan) throw new Error(`createVxlan: ${name} exists and is not a VXLAN device (kind ${found.link.kind ?? 'none'})`);
    const have = found.vxlan;
    const differs = (Object.keys(want) as Array<keyof VxlanSettings>)
      .concat(have.local !== undefined && want.local === undefined ? ['local'] : [])
      .filter((k) => have[k] !== want[k])
      .map((k) => `${k} ${String(have[k])} (want ${String(want[k])})`);
    if (differs.length) throw new Error(`createVxlan: ${name} exists with other settings: ${differs.join(', ')}; remove it or configure kelp to match`);
    if (!found.link.up) await this.setUp(found.link.index);
    return { ...found.link, up: true };
  }

  /** The link with this name or ifindex, or undefined if there is none. */
  async link(ref: LinkRef): Promise<LinkInfo | undefined> {
    const data = typeof ref === 'number' ? { index: ref } : {};
    const attrs: ifla.LinkAttrs = { extMask: u32(RTEXT_FILTER_SKIP_STATS) };
    if (typeof ref === 'string') attrs.ifname = ref;
    try {
      const msgs = await this.get(rt.MessageType.GETLINK, linkMessage(data, attrs), `netlink getlink ${ref}`);
      return msgs.length ? parseLink(msgs[0]) : undefined;
    } catch (e) {
      if (isGone(e)) return undefined;
      throw e;
    }
  }

  linkByName(name: string): Promise<LinkInfo | undefined> {
    return this.link(name);
  }

  async listLinks(): Promise<LinkInfo[]> {
    const msgs = await this.dump(rt.MessageType.GETLINK,
      linkMessage({}, { extMask: u32(RTEXT_FILTER_SKIP_STATS) }), 'netlink getlink dump');
    return msgs.map(parseLink);
  }

  /** Deletes a link (for a veth, both ends). Returns false when it did not exist. */
  /** Off the event loop: a veth's unregistration waits ~20 ms in the kernel (see requestOffLoop). */
  async deleteLink(ref: LinkRef): Promise<boolean> {
    const [data, attrs] = linkRef(ref);
    try {
      await this.requestOffLoop(rt.MessageType.DELLINK, linkMessage(data, attrs), `netlink dellink ${ref}`);
      return true;
    } catch (e) {
      if (isGone(e)) return false;
      throw e;
    }
  }

  /**
   * Deletes several links in one unregistration; per ref, false when it did not exist.
   * A device's unregistration ends in rcu_barrier() (netdev_run_todo), ~20 ms the sender of the
   * RTM_DELLINK waits for inside sendmsg, whatever the number of devices. The kernel unregisters
   * every device of a group together (rtnl_group_dellink), so the links are put into a fresh
   * group and the group is deleted: one barrier for all. Only links named here are put into
   * it, and its number is drawn per call from a range nobody numbers groups in: another
   * device (or one left in an earlier group by a crash mid-call) shares it with odds of 2^-31.
   */
  async deleteLinks(refs: LinkRef[]): Promise<boolean[]> {
    if (refs.length <= 1) return Promise.all(refs.map((r) => this.deleteLink(r)));
    const group = randomInt(DELETE_GROUP_MIN, DELETE_GROUP_MAX);
    const marks = await Promise.all(refs.map((ref) => {
      const [data, attrs] = linkRef(ref);
      attrs.group = group;
      return settle(this.request(rt.MessageType.SETLINK, linkMessage(data, attrs), 0, `netlink setlink ${ref} group ${group}`));
    }));
    // Only once every mark is answered (a request may wait for a slot or a dump), so the group
    // holds every link that still existed when it goes.
    const err = await settle(this.requestOffLoop(rt.MessageType.DELLINK, linkMessage({}, { group }), `netlink dellink group ${group}`));
    return Promise.all(refs.map(async (ref, i) => {
      const mark = marks[i];
      if (mark !== undefined) {
        if (isGone(mark)) return false;
        // Not in the group: deleted on its own, which reports its own error.
        return this.deleteLink(ref);
      }
      if (err === undefined) return true;
      // ENODEV: something else removed every link of the group in between.
      if (isGone(err)) return false;
      return this.deleteLink(ref);
    }));
  }

  /** Changes state, MTU and MAC in one message. */
  async setLink(ref: LinkRef, c: LinkChanges): Promise<void> {
    if (c.mtu !== undefined) checkMtu('setLink', c.mtu);
    const [data, attrs] = linkRef(ref);
    if (c.up !== undefined) {
      data.flags = c.up ? { up: true } : {};
      data.change = { up: true };
    }
    if (c.mtu !== undefined) attrs.mtu = c.mtu;
    if (c.mac !== undefined) attrs.address = parseMac(c.mac);
    await this.request(rt.MessageType.SETLINK, linkMessage(data, attrs), 0, `netlink setlink ${ref}`);
  }

  setUp(ref: LinkRef, up = true): Promise<void> {
    return this.setLink(ref, { up });
  }

  setMtu(ref: LinkRef, mtu: number): Promise<void> {
    return this.setLink(ref, { mtu });
  }

  setMac(ref: LinkRef, mac: string): Promise<void> {
    return this.setLink(ref, { mac });
  }

  // ---- addresses ----

  /** Adds `cidr` (host bits kept: 10.244.0.5/24) to the link; the kernel adds the prefix route. */
  /**
   * Adds `cidr` (host bits kept: 10.244.0.5/24) to the link; the kernel adds the prefix route.
   * `nodad` skips IPv6 duplicate address detection, so the address is usable at once.
   */
  async addAddress(ifindex: number, cidr: string, opts: { exist?: ExistPolicy; nodad?: boolean } = {}): Promise<void> {
    return this.add(rt.MessageType.NEWADDR, addressMessage(ifindex, cidr, opts.nodad),
      `netlink newaddr ${cidr} dev ${ifindex}`, opts.exist);
  }

  /** Returns false when the address was not there. */
  async deleteAddress(ifindex: number, cidr: string): Promise<boolean> {
    return this.remove(rt.MessageType.DELADDR, addressMessage(ifindex, cidr), `netlink deladdr ${cidr} dev ${ifindex}`);
  }

  async listAddresses(ifindex?: number, family?: IpFamily): Promise<AddressEntry[]> {
    const msg = new AttrStream();
    rt.formatAddressMessage({ kind: 'address', data: { family: family ? af(family) : 0 }, attrs: {} }, msg);
    const msgs = await this.dump(rt.MessageType.GETADDR, msg.bufs, 'netlink getaddr dump');
    const out: AddressEntry[] = [];
    for (const m of msgs) {
      const { data, attrs } = rt.parseAddressMessage(m.data);
      const raw = attrs.local ?? attrs.address;
      if (!raw || (ifindex !== undefined && data.index !== ifindex)) continue;
      const ip = ipFromBytes(raw);
      const address = ipToString(ip);
      out.push({
        ifindex: data.index ?? 0,
        family: ip.family,
        cidr: `${address}/${data.prefixlen}`,
        address,
        prefixLen: data.prefixlen ?? 0,
        scope: data.scope ?? 0,
      });
    }
    return out;
  }

  // ---- routes ----

  async addRoute(r: RouteSpec, opts: { exist?: ExistPolicy } = {}): Promise<void> {
    return this.add(rt.MessageType.NEWROUTE, routeMessage(r, false), `netlink newroute ${describeRoute(r)}`, opts.exist);
  }

  /** Deletes the route matching dst, table, dev and (if given) gw. Returns false when absent. */
  async deleteRoute(r: RouteSpec): Promise<boolean> {
    return this.remove(rt.MessageType.DELROUTE, routeMessage(r, true), `netlink delroute ${describeRoute(r)}`);
  }

  async listRoutes(filter: RouteFilter = {}): Promise<RouteEntry[]> {
    const family = filter.family ?? 4;
    const table = filter.table ?? RT_TABLE_MAIN;
    const msg = new AttrStream();
    rt.formatRouteMessage({ kind: 'route', data: { family: af(family) }, attrs: {} }, msg);
    const msgs = await this.dump(rt.MessageType.GETROUTE, msg.bufs, 'netlink getroute dump');
    const out: RouteEntry[] = [];
    for (const m of msgs) {
      const e = parseRoute(m, family);
      if (table !== 'all' && e.table !== table) continue;
      if (filter.ifindex !== undefined && e.dev !== filter.ifindex) continue;
      out.push(e);
    }
    return out;
  }

  // ---- transport ----

  private assertOpen(): void {
    if (this.closed) throw new Error('Rtnl: socket is closed');
  }

  private async add(type: number, payload: Uint8Array[], op: string, exist: ExistPolicy = 'error'): Promise<void> {
    const flags = FlagsNew.CREATE | (exist === 'replace' ? FlagsNew.REPLACE : FlagsNew.EXCL);
    try {
      await this.request(type, payload, flags, op);
    } catch (e) {
      if (exist !== 'ignore' || !hasCode(e, 'EEXIST')) throw e;
    }
  }

  /** Deletes; false when the object was already gone. */
  private async remove(type: number, payload: Uint8Array[], op: string): Promise<boolean> {
    try {
      await this.request(type, payload, 0, op);
      return true;
    } catch (e) {
      if (isGone(e)) return false;
      throw e;
    }
  }

  /**
   * One request from a socket on a libuv pool thread in this socket's namespace: the kernel
   * does a request's work inside sendmsg, and this socket sends on the event loop's thread, so a
   * slow request (a link deletion waits for an rcu_barrier(), ~20 ms here) would stall every
   * other CNI call meanwhile. Ordered after every request sent before it on this socket (those
   * were done inside their own sendmsg).
   */
  private async requestOffLoop(type: number, payload: Uint8Array[], op: string): Promise<void> {
    this.assertOpen();
    const rc = await rtnlRequestAsync(this.nsFd, encodeMessage(type, EXCHANGE_FLAGS.change, 1, payload), op);
    if (rc !== 0) throw new NetlinkError(op, -rc);
  }

  // An async function runs synchronously up to its first await, and so does every caller on
  // the way here: the message leaves in the caller's tick (see the top of this file).
  private request(type: number, payload: Uint8Array[], flags: number, op: string): Promise<NetlinkMessage[]> {
    return this.issue('change', type, payload, flags, op);
  }

  private get(type: number, payload: Uint8Array[], op: string): Promise<NetlinkMessage[]> {
    return this.issue('get', type, payload, 0, op);
  }

  private async issue(exchange: Exchange, type: number, payload: Uint8Array[], flags: number, op: string): Promise<NetlinkMessage[]> {
    this.assertOpen();
    const send = () => this.exchange(exchange, type, payload, flags, op);
    // A dump shows the effect of every request issued before it and of none issued after it.
    return this.dumpsPending > 0 ? this.dumpTail.then(send) : send();
  }

  // The kernel runs one dump per socket at a time (a second one gets EBUSY): dumps queue.
  private async dump(type: number, payload: Uint8Array[], op: string): Promise<NetlinkMessage[]> {
    this.assertOpen();
    const start = async (): Promise<NetlinkMessage[]> => {
      // A dump interrupted by a concurrent change (NLM_F_DUMP_INTR) may miss entries: retry.
      for (let attempt = 0; ; attempt++) {
        const msgs = await this.exchange('dump', type, payload, 0, op);
        if (attempt < 3 && msgs.some((m) => m.flags & Flags.DUMP_INTR)) continue;
        return msgs;
      }
    };
    this.dumpsPending += 1;
    const run = this.dumpsPending === 1 ? start() : this.dumpTail.then(start);
    const done = () => {
      this.dumpsPending -= 1;
    };
    this.dumpTail = run.then(done, done);
    return run;
  }

  private async exchange(exchange: Exchange, type: number, payload: Uint8Array[], flags: number, op: string): Promise<NetlinkMessage[]> {
    // A finished request hands its slot straight to the next waiter.
    if (this.inFlight < MAX_IN_FLIGHT) this.inFlight += 1;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    try {
      return await this.transmit(exchange, type, payload, flags, op);
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.inFlight -= 1;
    }
  }

  /** Sends now; settles when the reply that ends the exchange is read, or with the socket's error. */
  private transmit(exchange: Exchange, type: number, payload: Uint8Array[], flags: number, op: string): Promise<NetlinkMessage[]> {
    return new Promise((resolve, reject) => {
      try {
        // A request that waited for a slot may find the Rtnl closed meanwhile.
        this.assertOpen();
        const sock = this.socket(op);
        this.seq = (this.seq % 0xffffffff) + 1;
        const seq = this.seq;
        sock.send(encodeMessage(type, EXCHANGE_FLAGS[exchange] | flags, seq, payload), op);
        const timer = setTimeout(() => this.finish(seq, new NetlinkError(op, constants.errno.ETIMEDOUT, `no reply in ${this.timeoutMs} ms`)), this.timeoutMs);
        this.pending.set(seq, { op, exchange, msgs: [], resolve, reject, timer });
      } catch (e) {
        reject(e instanceof NetlinkError ? e : asNetlinkError(e, op));
      }
    });
  }

  private openSocket(): RtnlSocket {
    let receiveBufferBytes = this.opts.receiveBufferBytes;
    if (receiveBufferBytes === undefined && this.netns !== undefined && testReceiveBufferBytes !== undefined) {
      receiveBufferBytes = checkReceiveBuffer('KELP_TEST_NETLINK_RCVBUF', Number(testReceiveBufferBytes));
    }
    const sock: RtnlSocket = openRtnlSocket(this.nsFd, (datagrams, errno) => this.onSocketEvent(sock, datagrams, errno), { receiveBufferBytes });
    return sock;
  }

  private socket(op: string): RtnlSocket {
    if (this.sock) return this.sock;
    try {
      this.sock = this.openSocket();
    } catch (e) {
      throw asNetlinkError(e, `${op}: new netlink socket`);
    }
    return this.sock;
  }

  private onSocketEvent(sock: RtnlSocket, datagrams: Buffer[], errno: number): void {
    if (sock !== this.sock) return;
    let err = errno;
    for (const datagram of datagrams) {
      let msgs: NetlinkMessage[];
      try {
        msgs = parseMessages(datagram);
      } catch {
        // Undecodable: whose reply it held is unknown, so it counts as lost.
        err ||= constants.errno.EBADMSG;
        continue;
      }
      for (const m of msgs) this.onMessage(m);
    }
    if (err !== 0) {
      testReceiveBufferBytes = undefined;
      const why = err === constants.errno.ENOBUFS ? "reply lost: the socket's receive buffer overran" : 'reply lost: netlink socket error';
      this.retireSocket(err, `${why}; the next request uses a new socket`);
    }
  }

  private onMessage(m: NetlinkMessage): void {
    const p = this.pending.get(m.seq);
    // A late reply to a request that timed out, or the kernel's answer to nobody.
    if (!p) return;
    if (m.type === NlMessageType.ERROR) {
      let errno: number;
      try {
        errno = parseError(m.data, m.flags).errno;
      } catch {
        errno = -constants.errno.EBADMSG;
      }
      // Error 0 is the ACK that ends a change.
      this.finish(m.seq, errno === 0 ? undefined : new NetlinkError(p.op, -errno));
      return;
    }
    if (p.exchange === 'dump' && m.type === NlMessageType.DONE) {
      // NLMSG_DONE carries the dump's own result: 0, or a negative errno when it failed midway.
      const status = m.data.length >= 4 ? m.data.readInt32LE(0) : 0;
      this.finish(m.seq, status < 0 ? new NetlinkError(p.op, -status) : undefined);
      return;
    }
    p.msgs.push(m);
    if (p.exchange === 'get') this.finish(m.seq);
  }

  private finish(seq: number, err?: Error): void {
    const p = this.pending.get(seq);
    if (!p) return;
    this.pending.delete(seq);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(p.msgs);
  }

  /** Closes the socket and fails every request waiting for a reply on it. */
  private retireSocket(errno: number, why: string): void {
    this.sock?.close();
    this.sock = undefined;
    for (const [seq, p] of [...this.pending]) this.finish(seq, new NetlinkError(p.op, errno, why));
  }
}

/** The error a promise rejects with, undefined when it resolves; never rejects itself. */
function settle(p: Promise<unknown>): Promise<unknown> {
  return p.then(() => undefined, (e: unknown) => e ?? new Error('rejected without a reason'));
}

// ---- encoding ----

function encodeMessage(type: number, flags: number, seq: number, payload: Uint8Array[]): Buffer {
  return Buffer.concat(formatMessage({ type, flags, seq, port: 0, data: payload }));
}

function checkIfname(fn: string, field: string, name: string): void {
  if (!isValidIfname(name)) throw new TypeError(`${fn}: ${field} ${JSON.stringify(name)} is not a valid interface name`);
}

function checkReceiveBuffer(what: string, bytes: number): number {
  if (!Number.isInteger(bytes) || bytes < 1 || bytes > MAX_RECEIVE_BUFFER) {
    throw new RangeError(`${what} ${bytes} is not a byte count in 1..${MAX_RECEIVE_BUFFER}`);
  }
  return bytes;
}

function checkMtu(fn: string, mtu: number): void {
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new RangeError(`${fn}: mtu ${mtu} is not in 68..65535`);
}

function af(family: IpFamily): number {
  return family === 4 ? AF_INET : AF_INET6;
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}

function cstring(s: string): Buffer {
  return Buffer.from(s + '\0');
}

/** struct rtattr with payload, padded to 4 bytes. */
function rtattr(type: number, payload: Buffer): Buffer {
  const len = 4 + payload.length;
  const b = Buffer.alloc((len + 3) & ~3);
  b.writeUInt16LE(len, 0);
  b.writeUInt16LE(type, 2);
  payload.copy(b, 4);
  return b;
}

function linkMessage(data: rt.Link, attrs: ifla.LinkAttrs): Uint8Array[] {
  const msg = new AttrStream();
  rt.formatLinkMessage({ kind: 'link', data, attrs: stripUndefined(attrs) }, msg);
  return msg.bufs;
}

function stripUndefined<T extends object>(o: T): T {
  for (const k of Object.keys(o) as (keyof T)[]) if (o[k] === undefined) delete o[k];
  return o;
}

function linkRef(ref: LinkRef): [rt.Link, ifla.LinkAttrs] {
  return typeof ref === 'number' ? [{ index: ref }, {}] : [{}, { ifname: ref }];
}

// Hand-decoded: the package's generic parser decodes every attribute of a ~1 KiB link message
// (about 25 µs); these are the few a pod setup reads back.
function parseLink(m: NetlinkMessage): LinkInfo {
  const b = m.data;
  const info: LinkInfo = { index: b.readInt32LE(4), name: '', mac: '', mtu: 0, up: false, lowerUp: false };
  const flags = b.readUInt32LE(8);
  info.up = (flags & IFF_UP) !== 0;
  info.lowerUp = (flags & IFF_LOWER_UP) !== 0;
  forEachAttr(b, IFINFOMSG_LEN, (type, v) => {
    switch (type) {
      case IFLA_IFNAME: info.name = cstringAt(v); break;
      case IFLA_ADDRESS: info.mac = formatMac(v); break;
      case IFLA_MTU: info.mtu = v.readUInt32LE(0); break;
      case IFLA_LINK: info.peerIndex = v.readUInt32LE(0); break;
      case IFLA_LINK_NETNSID: info.peerNetnsId = v.readInt32LE(0); break;
      case IFLA_LINKINFO:
        forEachAttr(v, 0, (t, kind) => {
          if (t === IFLA_INFO_KIND) info.kind = cstringAt(kind);
        });
        break;
    }
  });
  return info;
}

/** The settings createVxlan compares, from a VXLAN device's link message. */
function parseVxlan(m: NetlinkMessage, mtu: number): VxlanSettings {
  const b = m.data;
  const s: VxlanSettings = { collectMetadata: false, port: 0, learning: false, noarp: (b.readUInt32LE(8) & IFF_NOARP) !== 0, mtu };
  forEachAttr(b, IFINFOMSG_LEN, (type, v) => {
    if (type !== IFLA_LINKINFO) return;
    forEachAttr(v, 0, (t, info) => {
      if (t !== IFLA_INFO_DATA) return;
      forEachAttr(info, 0, (a, val) => {
        switch (a) {
          case IFLA_VXLAN_COLLECT_METADATA: s.collectMetadata = val.readUInt8(0) !== 0; break;
          case IFLA_VXLAN_PORT: s.port = val.readUInt16BE(0); break;
          case IFLA_VXLAN_LEARNING: s.learning = val.readUInt8(0) !== 0; break;
          case IFLA_VXLAN_LOCAL: if (val.readUInt32BE(0) !== 0) s.local = ipToString(ipFromBytes(val.subarray(0, 4))); break;
        }
      });
    });
  });
  return s;
}

function forEachAttr(b: Buffer, offset: number, fn: (type: number, value: Buffer) => void): void {
  for (let off = offset; off + 4 <= b.length; ) {
    const len = b.readUInt16LE(off);
    if (len < 4 || off + len > b.length) break;
    fn(b.readUInt16LE(off + 2) & 0x3fff, b.subarray(off + 4, off + len));
    off += (len + 3) & ~3;
  }
}

function cstringAt(v: Buffer): string {
  const end = v.indexOf(0);
  return v.toString('utf8', 0, end < 0 ? v.length : end);
}

function addressMessage(ifindex: number, cidr: string, nodad?: boolean): Uint8Array[] {
  const c = parseCidr(cidr);
  const bytes = ipToBytes({ family: c.family, value: c.address });
  const msg = new AttrStream();
  rt.formatAddressMessage({
    kind: 'address',
    data: { family: af(c.family), prefixlen: c.prefix, index: ifindex, flags: nodad ? { nodad: true } : {} },
    attrs: { local: bytes, address: bytes },
  }, msg);
  return msg.bufs;
}

function routeFamily(r: RouteSpec): IpFamily {
  if (r.dst !== 'default') return parseCidr(r.dst).family;
  return r.gw !== undefined ? parseIp(r.gw).family : 4;
}

function routeMessage(r: RouteSpec, forDelete: boolean): Uint8Array[] {
  const family = routeFamily(r);
  const table = r.table ?? RT_TABLE_MAIN;
  const attrs: rt.RouteAttrs = { oif: r.dev, table };
  let dstLen = 0;
  if (r.dst !== 'default') {
    const c = parseCidr(r.dst);
    dstLen = c.prefix;
    if (dstLen > 0) attrs.dst = ipToBytes({ family, value: c.address });
  }
  if (r.gw !== undefined) {
    const gw = parseIp(r.gw);
    if (gw.family !== family) throw new TypeError(`route ${describeRoute(r)}: gateway family differs from destination`);
    attrs.gateway = ipToBytes(gw);
  }
  if (r.src !== undefined) attrs.prefsrc = ipToBytes(parseIp(r.src));
  if (r.metric !== undefined) attrs.priority = r.metric;
  const data: rt.Route = {
    family: af(family),
    dstLen,
    table: table < 256 ? table : 0,
    flags: r.onlink ? { __unknown: RTNH_F_ONLINK } : {},
  };
  if (forDelete) {
    // Match any scope, protocol and type, as `ip route del` does.
    data.scope = r.scope ? SCOPES[r.scope] : RT_SCOPE_NOWHERE;
    data.protocol = r.protocol ?? 0;
    data.type = 0;
  } else {
    data.scope = SCOPES[r.scope ?? (r.gw !== undefined ? 'universe' : 'link')];
    data.protocol = r.protocol ?? RTPROT_STATIC;
    data.type = rt.RouteType.UNICAST;
  }
  const msg = new AttrStream();
  rt.formatRouteMessage({ kind: 'route', data, attrs }, msg);
  return msg.bufs;
}

function parseRoute(m: NetlinkMessage, family: IpFamily): RouteEntry {
  const { data, attrs } = rt.parseRouteMessage(m.data);
  const dstLen = data.dstLen ?? 0;
  const dst = attrs.dst
    ? `${ipToString(ipFromBytes(attrs.dst))}/${dstLen}`
    : `${family === 4 ? '0.0.0.0' : '::'}/${dstLen}`;
  const e: RouteEntry = {
    family,
    dst,
    scope: enumValue(rt.RouteScope, data.scope),
    table: attrs.table ?? data.table ?? 0,
    protocol: enumValue(rt.RouteProtocol, data.protocol),
    type: enumValue(rt.RouteType, data.type),
    onlink: ((data.flags?.__unknown ?? 0) & RTNH_F_ONLINK) !== 0,
  };
  if (attrs.gateway) e.gw = ipToString(ipFromBytes(attrs.gateway));
  if (attrs.oif !== undefined) e.dev = attrs.oif;
  if (attrs.prefsrc) e.src = ipToString(ipFromBytes(attrs.prefsrc));
  if (attrs.priority !== undefined) e.metric = attrs.priority;
  return e;
}

// The package decodes known enum values to their names; the numbers are what callers compare.
function enumValue(e: object, v: unknown): number {
  if (typeof v === 'number') return v;
  const n = typeof v === 'string' ? (e as Record<string, unknown>)[v] : undefined;
  return typeof n === 'number' ? n : 0;
}

function describeRoute(r: RouteSpec): string {
  return `${r.dst}${r.gw !== undefined ? ` via ${r.gw}` : ''} dev ${r.dev}${r.table !== undefined ? ` table ${r.table}` : ''}`;
}
