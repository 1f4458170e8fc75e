// One rtnetlink socket and the link/address/route operations kelp needs, over the `netlink`
// package. A socket created inside another network namespace stays bound to it, so every
// request on `Rtnl.inNetns(path)` acts there without switching namespaces again.
//
// Requests are sent synchronously when called (the package's sendmsg is immediate and the
// kernel handles rtnetlink in the sender's context), so several calls issued before the first
// await are one batch: the kernel applies them in order and one event-loop wake-up collects
// the replies. Beyond MAX_IN_FLIGHT unanswered requests on a socket, the next ones wait their
// turn, still in call order. Link deletions go from a pool thread instead (requestOffLoop).
import { randomInt } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { constants } from 'node:os';
import {
  createNetlink,
  Flags,
  FlagsGet,
  FlagsNew,
  MessageType as NlMessageType,
  NetlinkMessage,
  NetlinkSocket,
  parseError,
  Protocol,
  AttrStream,
  rt,
  ifla,
} from 'netlink';
import { ipFromBytes, ipToBytes, ipToString, parseCidr, parseIp, IpFamily } from '../ipam/ip';
import { asNetlinkError, isGone, hasCode, NetlinkError } from './errors';
import { formatMac, parseMac } from './mac';
import { inNetns, rtnlRequestAsync } from '../bpf';

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
   * rtnetlink at once, so this only fires when a reply was lost (receive queue overflow).
   */
  timeoutMs?: number;
}

/**
 * Requests in flight per socket. Each one's replies wait in the socket's receive buffer until the
 * event loop reads them (the kernel answers inside sendmsg); dozens of concurrent ADDs could
 * overrun the default 208 KiB (an skb per reply costs several KiB), and an overrun is a socket
 * error, which the `netlink` package's poll handler turns into a process abort.
 */
const MAX_IN_FLIGHT = 16;
const NLMSG_HDRLEN = 16;

export class Rtnl {
  private closed = false;
  private inFlight = 0;
  private readonly waiting: Array<() => void> = [];
  private dumpsPending = 0;
  private dumpTail: Promise<unknown> = Promise.resolve();
  private readonly timeoutMs: number;

  private constructor(
    private readonly sock: NetlinkSocket,
    /** The namespace this socket acts in; undefined for the agent's own. */
    readonly netns: string | undefined,
    opts: RtnlOptions,
    /** That namespace, for requests sent off the event loop; opened on first use when netns is set. */
    private nsFd?: number,
  ) {
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    // The package emits receive errors as 'error' events, which would crash the process
    // without a listener; the lost replies surface as timeouts of their requests instead.
    sock.on('error', () => undefined);
  }

  /** A socket in the calling thread's current network namespace. */
  static open(opts: RtnlOptions = {}): Rtnl {
    const sock = createNetlink(Protocol.ROUTE);
    try {
      // The namespace the socket was made in, held: the thread may be elsewhere later (inNetns).
      return new Rtnl(sock, undefined, opts, openSync('/proc/thread-self/ns/net', 'r'));
    } catch (e) {
      sock.close();
      throw e;
    }
  }

  /** A socket bound to the namespace at `netnsPath` (e.g. /var/run/netns/x or /proc/<pid>/ns/net). */
  static inNetns(netnsPath: string, opts: RtnlOptions = {}): Rtnl {
    let sock: NetlinkSocket;
    try {
      sock = inNetns(netnsPath, () => createNetlink(Protocol.ROUTE));
    } catch (e) {
      throw asNetlinkError(e, `netlink socket in netns ${netnsPath}`);
    }
    return new Rtnl(sock, netnsPath, opts);
  }

  /** Closes the socket; requests still in flight never settle, so await them first. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sock.close();
    if (this.nsFd !== undefined) closeSync(this.nsFd);
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

  /** The link with this name or ifindex, or undefined if there is none. */
  async link(ref: LinkRef): Promise<LinkInfo | undefined> {
    const data = typeof ref === 'number' ? { index: ref } : {};
    const attrs: ifla.LinkAttrs = { extMask: u32(RTEXT_FILTER_SKIP_STATS) };
    if (typeof ref === 'string') attrs.ifname = ref;
    try {
      const msgs = await this.request(rt.MessageType.GETLINK, linkMessage(data, attrs), 0,
        `netlink getlink ${ref}`);
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
   * does a request's work inside sendmsg, and the package's sockets send on this thread, so a
   * slow request (a link deletion waits for an rcu_barrier(), ~20 ms here) would stall every
   * other CNI call meanwhile. Ordered after every request sent before it on this socket (those
   * were done inside their own sendmsg).
   */
  private async requestOffLoop(type: number, payload: Uint8Array[], op: string): Promise<void> {
    this.assertOpen();
    const body = Buffer.concat(payload);
    const header = Buffer.alloc(NLMSG_HDRLEN);
    header.writeUInt32LE(NLMSG_HDRLEN + body.length, 0);
    header.writeUInt16LE(type, 4);
    header.writeUInt16LE(Flags.REQUEST | Flags.ACK, 6);
    header.writeUInt32LE(1, 8);
    if (this.nsFd === undefined) {
      try {
        this.nsFd = openSync(this.netns!, 'r');
      } catch (e) {
        throw asNetlinkError(e, `${op}: open netns ${this.netns}`);
      }
    }
    const rc = await rtnlRequestAsync(this.nsFd, Buffer.concat([header, body]), op);
    if (rc !== 0) throw new NetlinkError(op, -rc);
  }

  // An async function runs synchronously up to its first await, and so does every caller on
  // the way here: the message leaves in the caller's tick (see the top of this file).
  private async request(type: number, payload: Uint8Array[], flags: number, op: string): Promise<NetlinkMessage[]> {
    this.assertOpen();
    const send = () => this.exchange(type, payload, flags, op);
    // A reply arriving between the parts of a dump would break the package's multipart
    // assembly, so nothing is sent while a dump is running.
    return this.dumpsPending > 0 ? this.dumpTail.then(send) : send();
  }

  // The kernel runs one dump per socket at a time (a second one gets EBUSY): dumps queue.
  private async dump(type: number, payload: Uint8Array[], op: string): Promise<NetlinkMessage[]> {
    this.assertOpen();
    const start = async (): Promise<NetlinkMessage[]> => {
      // A dump interrupted by a concurrent change (NLM_F_DUMP_INTR) may miss entries: retry.
      for (let attempt = 0; ; attempt++) {
        const msgs = await this.exchange(type, payload, FlagsGet.DUMP, op);
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

  private async exchange(type: number, payload: Uint8Array[], flags: number, op: string): Promise<NetlinkMessage[]> {
    // A finished request hands its slot straight to the next waiter.
    if (this.inFlight < MAX_IN_FLIGHT) this.inFlight += 1;
    else await new Promise<void>((resolve) => this.waiting.push(resolve));
    let msgs: NetlinkMessage[];
    try {
      [msgs] = await this.sock.request(type, payload, { flags, checkError: false, timeout: this.timeoutMs });
    } catch (e) {
      if (typeof (e as { errno?: unknown }).errno === 'number') throw asNetlinkError(e, op);
      // The package's own failures are plain Errors; its timeout is told by its message.
      const message = (e as Error).message;
      if (message === 'Timeout has been reached') throw new NetlinkError(op, constants.errno.ETIMEDOUT);
      throw new Error(`${op}: ${message}`);
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.inFlight -= 1;
    }
    return checkReply(msgs, op);
  }
}

/** The error a promise rejects with, undefined when it resolves; never rejects itself. */
function settle(p: Promise<unknown>): Promise<unknown> {
  return p.then(() => undefined, (e: unknown) => e ?? new Error('rejected without a reason'));
}

function checkReply(msgs: NetlinkMessage[], op: string): NetlinkMessage[] {
  const first = msgs[0];
  if (first && first.type === NlMessageType.ERROR) {
    const { errno } = parseError(first.data, first.flags);
    if (errno !== 0) throw new NetlinkError(op, -errno);
    return [];
  }
  return msgs;
}

// ---- encoding ----

function checkIfname(fn: string, field: string, name: string): void {
  if (!isValidIfname(name)) throw new TypeError(`${fn}: ${field} ${JSON.stringify(name)} is not a valid interface name`);
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
