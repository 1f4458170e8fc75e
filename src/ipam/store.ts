// Persistence for the allocator. The allocator keeps its working state in memory and uses the
// store as the record and as the final arbiter: `reserve` must be atomic across every process
// sharing the store, so two allocators can never hand out the same address.

export interface StoredLease {
  /** Canonical text form of the address; it is also the key. */
  ip: string;
  containerId: string;
  /** '' when the record predates interface names (old host-local files). */
  ifname: string;
}

export interface StoreSnapshot {
  leases: StoredLease[];
  /** Last address reserved in each range set, by range set index. */
  lastReserved: Map<number, string>;
}

export interface IpamStore {
  load(network: string): Promise<StoreSnapshot>;
  /** Reads one lease, undefined when the address is free. */
  read(network: string, ip: string): Promise<StoredLease | undefined>;
  /**
   * Records the lease unless the address is already recorded (then returns false and changes
   * nothing), and remembers it as the last reserved address of range set `rangeIndex`.
   */
  reserve(network: string, rangeIndex: number, lease: StoredLease): Promise<boolean>;
  /** Removes the lease if it is still the one given; a missing lease is not an error. */
  release(network: string, lease: StoredLease): Promise<void>;
}

/** The ifname-less records of old host-local versions match any interface of the container. */
export function leaseMatches(lease: StoredLease, containerId: string, ifname: string): boolean {
  return lease.containerId === containerId && (lease.ifname === ifname || lease.ifname === '');
}

/** For unit tests and for agents that keep no state across restarts. */
export class MemoryIpamStore implements IpamStore {
  private readonly networks = new Map<string, { leases: Map<string, StoredLease>; last: Map<number, string> }>();

  private net(network: string) {
    let n = this.networks.get(network);
    if (!n) {
      n = { leases: new Map(), last: new Map() };
      this.networks.set(network, n);
    }
    return n;
  }

  async load(network: string): Promise<StoreSnapshot> {
    const n = this.net(network);
    return { leases: [...n.leases.values()].map((l) => ({ ...l })), lastReserved: new Map(n.last) };
  }

  async read(network: string, ip: string): Promise<StoredLease | undefined> {
    const l = this.net(network).leases.get(ip);
    return l && { ...l };
  }

  async reserve(network: string, rangeIndex: number, lease: StoredLease): Promise<boolean> {
    const n = this.net(network);
    if (n.leases.has(lease.ip)) return false;
    n.leases.set(lease.ip, { ...lease });
    n.last.set(rangeIndex, lease.ip);
    return true;
  }

  async release(network: string, lease: StoredLease): Promise<void> {
    const n = this.net(network);
    const cur = n.leases.get(lease.ip);
    if (cur && cur.containerId === lease.containerId && cur.ifname === lease.ifname) n.leases.delete(lease.ip);
  }
}
