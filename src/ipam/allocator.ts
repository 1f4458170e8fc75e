// host-local's allocation semantics over an IpamStore: one address per range set, handed out
// round-robin after the last reserved one, never the gateway, a reserved address or a used one.
// Every operation on a network runs under that network's mutex, so concurrent CNI ADDs in the
// agent are serialised; the store's atomic reserve settles races with other processes.
import {
  cidrContains, familyBits, IpAddress, ipEquals, ipOffset, ipToString, tryParseIp,
} from './ip';
import { IpamConfig, IpRange, RangeSet, rangeSetToString, Route } from './config';
import { IpamError } from './errors';
import { FileIpamStore } from './file-store';
import { IpamStore, leaseMatches, StoredLease } from './store';

export interface Owner {
  network: string;
  containerId: string;
  ifname: string;
}

export interface AllocateOptions {
  /** Addresses asked for (CNI_ARGS `IP=`, runtimeConfig `ips`), bare or with a prefix length. */
  ips?: string[];
}

export interface AllocatedIp {
  /** With the prefix length of its subnet, e.g. `10.244.0.5/24`. */
  address: string;
  gateway?: string;
  /** Range set the address belongs to; -1 if it lies in no range of the current config. */
  rangeIndex: number;
}

export interface Allocation {
  owner: Owner;
  /** Ordered by range set. */
  ips: AllocatedIp[];
  routes: Route[];
}

class Mutex {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn);
    this.tail = p.catch(() => undefined);
    return p;
  }
}

interface State {
  leases: Map<string, StoredLease>;
  lastReserved: Map<number, string>;
}

interface Placed {
  setIndex: number;
  range: IpRange;
}

function rangeContains(r: IpRange, ip: IpAddress): boolean {
  return ip.family === r.subnet.family && ip.value >= r.rangeStart.value && ip.value <= r.rangeEnd.value;
}

function rangeSize(r: IpRange): bigint {
  return r.rangeEnd.value - r.rangeStart.value + 1n;
}

function ownerLabel(l: { containerId: string; ifname: string }): string {
  return l.ifname ? `${l.containerId}/${l.ifname}` : l.containerId;
}

// Lease files hold "<containerId>\r\n<ifname>": neither may contain line breaks or spaces at the ends.
const OWNER_FIELD = /^[^\s]+$/;

export class NetworkAllocator {
  private state?: State;
  private gateways = new Set<string>();

  constructor(
    private config: IpamConfig,
    private readonly store: IpamStore,
    private readonly mutex = new Mutex(),
  ) {
    this.configure(config);
  }

  get network(): string {
    return this.config.network;
  }

  /** Swaps the config (a changed network definition); leases and round-robin positions are kept. */
  configure(config: IpamConfig): void {
    if (config.network !== this.config.network) {
      throw new IpamError('invalid', `allocator of network ${this.config.network} given config of ${config.network}`);
    }
    this.config = config;
    this.gateways = new Set(config.rangeSets.flat().map((r) => ipToString(r.gateway)));
  }

  /** Forgets the in-memory state; the next operation reads the store again. */
  reload(): Promise<void> {
    return this.mutex.run(async () => {
      this.state = undefined;
    });
  }

  /**
   * One address per range set for `owner`. Idempotent: an owner that already holds an address
   * in a range set gets it back. All or nothing: on failure, the addresses this call reserved
   * are released again.
   */
  allocate(owner: Owner, opts: AllocateOptions = {}): Promise<Allocation> {
    return this.mutex.run(async () => {
      this.checkOwner(owner);
      const state = await this.load();
      const requested = this.placeRequested(opts.ips ?? []);
      const held = new Map<number, string>();
      for (const l of state.leases.values()) {
        if (!leaseMatches(l, owner.containerId, owner.ifname)) continue;
        const placed = this.place(tryParseIp(l.ip)!);
        if (placed && !held.has(placed.setIndex)) held.set(placed.setIndex, l.ip);
      }

      const fresh: StoredLease[] = [];
      try {
        for (let s = 0; s < this.config.rangeSets.length; s++) {
          const want = requested.get(s);
          const have = held.get(s);
          if (have !== undefined) {
            if (want && ipToString(want) !== have) {
              throw new IpamError('conflict', `${ownerLabel(owner)} already holds ${have} in range set ${s}` +
                ` of network ${owner.network}; cannot also take requested ${ipToString(want)}`);
            }
            continue;
          }
          const lease = want
            ? await this.reserveRequested(state, s, want, owner)
            : await this.reserveNext(state, s, owner);
          fresh.push(lease);
          held.set(s, lease.ip);
        }
      } catch (e) {
        for (const l of fresh) await this.drop(state, l);
        throw e;
      }
      return this.describe(owner, [...held.values()]);
    });
  }

  /** Releases every address of `owner`; returns them. Unknown owners are not an error. */
  release(owner: Owner): Promise<string[]> {
    return this.mutex.run(async () => {
      this.checkOwner(owner);
      const state = await this.load();
      const mine = [...state.leases.values()].filter((l) => leaseMatches(l, owner.containerId, owner.ifname));
      for (const l of mine) await this.drop(state, l);
      return mine.map((l) => l.ip);
    });
  }

  /** What `owner` holds (for CNI CHECK), or undefined if nothing. */
  get(owner: Owner): Promise<Allocation | undefined> {
    return this.mutex.run(async () => {
      this.checkOwner(owner);
      const state = await this.load();
      const ips = [...state.leases.values()]
        .filter((l) => leaseMatches(l, owner.containerId, owner.ifname))
        .map((l) => l.ip);
      return ips.length ? this.describe(owner, ips) : undefined;
    });
  }

  /** All allocations of the network, one per owner. */
  list(): Promise<Allocation[]> {
    return this.mutex.run(async () => this.groupByOwner([...(await this.load()).leases.values()]));
  }

  /**
   * CNI GC: releases every lease whose owner is not among `valid` (owners of other networks in
   * `valid` are ignored). Returns what was released.
   */
  releaseAllExcept(valid: Array<Pick<Owner, 'containerId' | 'ifname'> & { network?: string }>): Promise<Allocation[]> {
    return this.mutex.run(async () => {
      const state = await this.load();
      const keep = valid.filter((o) => o.network === undefined || o.network === this.config.network);
      const stale = [...state.leases.values()]
        .filter((l) => !keep.some((o) => leaseMatches(l, o.containerId, o.ifname)));
      for (const l of stale) await this.drop(state, l);
      return this.groupByOwner(stale);
    });
  }

  private checkOwner(owner: Owner): void {
    if (owner.network !== this.config.network) {
      throw new IpamError('invalid', `owner of network ${JSON.stringify(owner.network)} given to the allocator of ${this.config.network}`);
    }
    if (!OWNER_FIELD.test(owner.containerId)) {
      throw new IpamError('invalid', `container id ${JSON.stringify(owner.containerId)} is empty or contains white space`);
    }
    if (!OWNER_FIELD.test(owner.ifname)) {
      throw new IpamError('invalid', `interface name ${JSON.stringify(owner.ifname)} is empty or contains white space`);
    }
  }

  private async load(): Promise<State> {
    if (!this.state) {
      const snap = await this.store.load(this.config.network);
      this.state = {
        leases: new Map(snap.leases.map((l) => [l.ip, l])),
        lastReserved: snap.lastReserved,
      };
    }
    return this.state;
  }

  private place(ip: IpAddress): Placed | undefined {
    for (const [setIndex, set] of this.config.rangeSets.entries()) {
      const range = set.find((r) => rangeContains(r, ip));
      if (range) return { setIndex, range };
    }
    return undefined;
  }

  private placeRequested(ips: string[]): Map<number, IpAddress> {
    const out = new Map<number, IpAddress>();
    for (const s of ips) {
      const ip = tryParseIp(typeof s === 'string' ? s.split('/')[0] : '');
      if (!ip) throw new IpamError('invalid', `requested IP ${JSON.stringify(s)} is not an IP address`);
      const placed = this.place(ip);
      if (!placed) {
        throw new IpamError('invalid', `requested IP ${ipToString(ip)} is outside every range of network ` +
          `${this.config.network} (${this.config.rangeSets.map(rangeSetToString).join('; ')})`);
      }
      const other = out.get(placed.setIndex);
      if (other) {
        throw new IpamError('invalid', `requested IPs ${ipToString(other)} and ${ipToString(ip)} are both in ` +
          `range set ${placed.setIndex}; one address per range set`);
      }
      out.set(placed.setIndex, ip);
    }
    return out;
  }

  private isReserved(ip: IpAddress): boolean {
    return this.gateways.has(ipToString(ip)) || this.config.reserved.some((c) => cidrContains(c, ip));
  }

  private async reserveRequested(state: State, setIndex: number, ip: IpAddress, owner: Owner): Promise<StoredLease> {
    const text = ipToString(ip);
    if (this.gateways.has(text)) throw new IpamError('conflict', `requested IP ${text} is a gateway of network ${owner.network}`);
    if (this.isReserved(ip)) throw new IpamError('conflict', `requested IP ${text} is reserved in network ${owner.network}`);
    const lease = { ip: text, containerId: owner.containerId, ifname: owner.ifname };
    if (!state.leases.has(text) && await this.tryReserve(state, setIndex, lease)) return lease;
    const holder = state.leases.get(text);
    throw new IpamError('conflict', `requested IP ${text} is already allocated` +
      (holder ? ` to ${ownerLabel(holder)}` : '') + ` in network ${owner.network}`);
  }

  private async reserveNext(state: State, setIndex: number, owner: Owner): Promise<StoredLease> {
    const set = this.config.rangeSets[setIndex];
    const total = set.reduce((n, r) => n + rangeSize(r), 0n);
    // Round-robin: start right after the last address reserved in this set, if it is still in it.
    let start = 0n;
    const last = tryParseIp(state.lastReserved.get(setIndex) ?? '');
    if (last) {
      let before = 0n;
      for (const r of set) {
        if (rangeContains(r, last)) {
          start = (before + (last.value - r.rangeStart.value) + 1n) % total;
          break;
        }
        before += rangeSize(r);
      }
    }
    for (let k = 0n; k < total; k++) {
      const ip = nth(set, (start + k) % total);
      const text = ipToString(ip);
      if (state.leases.has(text) || this.isReserved(ip)) continue;
      const lease = { ip: text, containerId: owner.containerId, ifname: owner.ifname };
      if (await this.tryReserve(state, setIndex, lease)) return lease;
    }
    throw new IpamError('exhausted', `no IP addresses available in range set ${setIndex} ` +
      `(${rangeSetToString(set)}) of network ${owner.network}`);
  }

  /** Reserves in the store; when another process got there first, learns its lease instead. */
  private async tryReserve(state: State, setIndex: number, lease: StoredLease): Promise<boolean> {
    if (await this.store.reserve(this.config.network, setIndex, lease)) {
      state.leases.set(lease.ip, lease);
      state.lastReserved.set(setIndex, lease.ip);
      return true;
    }
    const theirs = await this.store.read(this.config.network, lease.ip);
    if (theirs) state.leases.set(lease.ip, theirs);
    return false;
  }

  private async drop(state: State, lease: StoredLease): Promise<void> {
    await this.store.release(this.config.network, lease);
    state.leases.delete(lease.ip);
  }

  private describe(owner: Owner, ips: string[]): Allocation {
    const out = ips.map((text): AllocatedIp => {
      const ip = tryParseIp(text)!;
      const placed = this.place(ip);
      if (!placed) return { address: `${text}/${familyBits(ip.family)}`, rangeIndex: -1 };
      return {
        address: `${text}/${placed.range.subnet.prefix}`,
        gateway: ipToString(placed.range.gateway),
        rangeIndex: placed.setIndex,
      };
    });
    // Unplaced (-1) leases go last.
    const key = (a: AllocatedIp) => (a.rangeIndex < 0 ? Number.MAX_SAFE_INTEGER : a.rangeIndex);
    out.sort((a, b) => key(a) - key(b));
    return { owner, ips: out, routes: this.config.routes.map((r) => ({ ...r })) };
  }

  private groupByOwner(leases: StoredLease[]): Allocation[] {
    const byOwner = new Map<string, { owner: Owner; ips: string[] }>();
    for (const l of leases) {
      const key = `${l.containerId}\n${l.ifname}`;
      let g = byOwner.get(key);
      if (!g) {
        g = { owner: { network: this.config.network, containerId: l.containerId, ifname: l.ifname }, ips: [] };
        byOwner.set(key, g);
      }
      g.ips.push(l.ip);
    }
    return [...byOwner.values()].map((g) => this.describe(g.owner, g.ips));
  }
}

/** The `i`-th address of a range set, counting through its ranges in order. */
function nth(set: RangeSet, i: bigint): IpAddress {
  for (const r of set) {
    const size = rangeSize(r);
    if (i < size) return ipOffset(r.rangeStart, i);
    i -= size;
  }
  throw new RangeError('index past the end of the range set');
}

/**
 * The agent's entry point: one allocator per (dataDir, network), so every request for a network
 * shares one mutex and one in-memory state. Pass `store` to use it for every network (tests);
 * otherwise each config's dataDir gets a FileIpamStore.
 */
export class Ipam {
  private readonly allocators = new Map<string, NetworkAllocator>();
  private readonly stores = new Map<string, IpamStore>();

  constructor(private readonly opts: { store?: IpamStore } = {}) {}

  network(config: IpamConfig): NetworkAllocator {
    const key = `${this.opts.store ? '' : config.dataDir}\0${config.network}`;
    let a = this.allocators.get(key);
    if (a) {
      a.configure(config);
      return a;
    }
    a = new NetworkAllocator(config, this.storeFor(config.dataDir));
    this.allocators.set(key, a);
    return a;
  }

  private storeFor(dataDir: string): IpamStore {
    if (this.opts.store) return this.opts.store;
    let s = this.stores.get(dataDir);
    if (!s) {
      s = new FileIpamStore(dataDir);
      this.stores.set(dataDir, s);
    }
    return s;
  }
}
