import { describe, expect, it } from 'vitest';
import {
  Allocation, Ipam, IpamError, MemoryIpamStore, NetworkAllocator, Owner, parseIpamConfig,
} from '../../src/ipam';

const NET = 'kelp-net';
const owner = (containerId: string, ifname = 'eth0'): Owner => ({ network: NET, containerId, ifname });

function allocator(ipam: object, store = new MemoryIpamStore()): NetworkAllocator {
  return new NetworkAllocator(parseIpamConfig(NET, ipam), store);
}

const addrs = (a: Allocation) => a.ips.map((i) => i.address);

async function ipamError(p: Promise<unknown>): Promise<IpamError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(IpamError);
    return e as IpamError;
  }
  throw new Error('expected an IpamError');
}

describe('NetworkAllocator', () => {
  it('hands out .2 first (gateway .1 skipped), with the result shape the CNI layer needs', async () => {
    const a = allocator({ subnet: '10.244.0.0/24', routes: [{ dst: '0.0.0.0/0' }] });
    expect(await a.allocate(owner('c1'))).toEqual({
      owner: owner('c1'),
      ips: [{ address: '10.244.0.2/24', gateway: '10.244.0.1', rangeIndex: 0 }],
      routes: [{ dst: '0.0.0.0/0' }],
    });
    expect(addrs(await a.allocate(owner('c2')))).toEqual(['10.244.0.3/24']);
  });

  it('uses .1 when the gateway is elsewhere, and never the gateway', async () => {
    const a = allocator({ subnet: '10.0.0.0/29', gateway: '10.0.0.3' });
    const got = [];
    for (let i = 0; i < 5; i++) got.push(addrs(await a.allocate(owner(`c${i}`)))[0]);
    // /29: .0 network, .7 broadcast, .3 gateway → five addresses.
    expect(got).toEqual(['10.0.0.1/29', '10.0.0.2/29', '10.0.0.4/29', '10.0.0.5/29', '10.0.0.6/29']);
    expect((await ipamError(a.allocate(owner('c5')))).kind).toBe('exhausted');
  });

  it('stays within rangeStart..rangeEnd and reports exhaustion with a typed error', async () => {
    const a = allocator({ subnet: '10.0.0.0/24', rangeStart: '10.0.0.100', rangeEnd: '10.0.0.101' });
    expect(addrs(await a.allocate(owner('a')))).toEqual(['10.0.0.100/24']);
    expect(addrs(await a.allocate(owner('b')))).toEqual(['10.0.0.101/24']);
    const err = await ipamError(a.allocate(owner('c')));
    expect(err.kind).toBe('exhausted');
    expect(err.message).toMatch(/no IP addresses available in range set 0 \(10.0.0.100-10.0.0.101\)/);
  });

  it('spills over to the next range of a set when the first is full', async () => {
    const a = allocator({ ranges: [[{ subnet: '10.0.0.0/30' }, { subnet: '10.0.1.0/30' }]] });
    // Each /30 has one address besides its gateway.
    expect(addrs(await a.allocate(owner('a')))).toEqual(['10.0.0.2/30']);
    expect((await a.allocate(owner('b'))).ips).toEqual([{ address: '10.0.1.2/30', gateway: '10.0.1.1', rangeIndex: 0 }]);
    expect((await ipamError(a.allocate(owner('c')))).message)
      .toMatch(/no IP addresses available in range set 0 \(10.0.0.1-10.0.0.2,10.0.1.1-10.0.1.2\)/);
  });

  it('gives one address per range set, each with its own gateway', async () => {
    const a = allocator({
      ranges: [[{ subnet: '10.0.0.0/24' }], [{ subnet: '10.1.0.0/24', gateway: '10.1.0.254' }], [{ subnet: 'fd00::/120' }]],
      routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }],
    });
    const r = await a.allocate(owner('c1'));
    expect(r.ips).toEqual([
      { address: '10.0.0.2/24', gateway: '10.0.0.1', rangeIndex: 0 },
      { address: '10.1.0.1/24', gateway: '10.1.0.254', rangeIndex: 1 },
      { address: 'fd00::2/120', gateway: 'fd00::1', rangeIndex: 2 },
    ]);
    expect(r.routes).toHaveLength(2);
  });

  it('never hands out reserved IPs or CIDRs', async () => {
    const a = allocator({ subnet: '10.0.0.0/28', reserved: ['10.0.0.2', '10.0.0.4/30', '10.0.0.13'] });
    const got = [];
    for (let i = 0; ; i++) {
      try {
        got.push(addrs(await a.allocate(owner(`c${i}`)))[0]);
      } catch (e) {
        expect((e as IpamError).kind).toBe('exhausted');
        break;
      }
    }
    expect(got).toEqual(['10.0.0.3/28', '10.0.0.8/28', '10.0.0.9/28', '10.0.0.10/28', '10.0.0.11/28',
      '10.0.0.12/28', '10.0.0.14/28']);
  });

  it('is idempotent for the same owner, distinct per ifname', async () => {
    const a = allocator({ subnet: '10.0.0.0/24' });
    const first = await a.allocate(owner('c1'));
    expect(await a.allocate(owner('c1'))).toEqual(first);
    expect(await a.allocate(owner('c1'), { ips: ['10.0.0.2'] })).toEqual(first);
    expect(addrs(await a.allocate(owner('c1', 'net1')))).toEqual(['10.0.0.3/24']);
    expect(await a.list()).toHaveLength(2);
    const err = await ipamError(a.allocate(owner('c1'), { ips: ['10.0.0.50'] }));
    expect(err.kind).toBe('conflict');
    expect(err.message).toMatch(/c1\/eth0 already holds 10.0.0.2/);
  });

  it('gives a requested IP, and refuses it clearly when taken, reserved, a gateway or outside', async () => {
    const a = allocator({ ranges: [[{ subnet: '10.0.0.0/24' }], [{ subnet: 'fd00::/64' }]], reserved: ['10.0.0.9'] });
    const r = await a.allocate(owner('c1'), { ips: ['10.0.0.50/24'] });
    expect(addrs(r)).toEqual(['10.0.0.50/24', 'fd00::2/64']);
    // The request does not move the round-robin of the other set, nor bypass it for the next owner.
    expect(addrs(await a.allocate(owner('c2'), { ips: ['fd00::99'] }))).toEqual(['10.0.0.51/24', 'fd00::99/64']);

    const cases: Array<[string[], IpamError['kind'], RegExp]> = [
      [['10.0.0.50'], 'conflict', /requested IP 10.0.0.50 is already allocated to c1\/eth0/],
      [['10.0.0.1'], 'conflict', /10.0.0.1 is a gateway/],
      [['10.0.0.9'], 'conflict', /10.0.0.9 is reserved/],
      [['10.0.0.255'], 'invalid', /10.0.0.255 is outside every range/],
      [['192.168.0.1'], 'invalid', /192.168.0.1 is outside every range of network kelp-net \(10.0.0.1-10.0.0.254; fd00::1-fd00::ffff:ffff:ffff:ffff\)/],
      [['10.0.0.60', '10.0.0.61'], 'invalid', /both in range set 0/],
      [['bogus'], 'invalid', /requested IP "bogus" is not an IP address/],
    ];
    for (const [ips, kind, message] of cases) {
      const err = await ipamError(a.allocate(owner('c3'), { ips }));
      expect([err.kind, err.message]).toEqual([kind, expect.stringMatching(message)]);
    }
    // Failed requests left nothing behind for c3.
    expect(await a.get(owner('c3'))).toBeUndefined();
  });

  it('rolls back the sets it reserved when a later set fails', async () => {
    const a = allocator({ ranges: [[{ subnet: '10.0.0.0/24' }], [{ subnet: '10.1.0.0/30' }]] });
    await a.allocate(owner('c1'));
    const err = await ipamError(a.allocate(owner('c2')));
    expect(err.kind).toBe('exhausted');
    expect(err.message).toMatch(/range set 1/);
    expect(await a.get(owner('c2'))).toBeUndefined();
    expect((await a.list()).map((x) => x.owner.containerId)).toEqual(['c1']);
  });

  it('releases idempotently and does not reuse the just-released address next (round-robin)', async () => {
    const a = allocator({ subnet: '10.0.0.0/29' }); // .2-.6 allocatable
    for (const c of ['a', 'b', 'c']) await a.allocate(owner(c)); // .2 .3 .4
    expect(await a.release(owner('b'))).toEqual(['10.0.0.3']);
    expect(await a.release(owner('b'))).toEqual([]);
    expect(await a.release(owner('never-seen'))).toEqual([]);
    expect(addrs(await a.allocate(owner('d')))).toEqual(['10.0.0.5/29']);
    expect(addrs(await a.allocate(owner('e')))).toEqual(['10.0.0.6/29']);
    // Wraps around past the gateway to the freed hole.
    expect(addrs(await a.allocate(owner('f')))).toEqual(['10.0.0.3/29']);
    expect((await ipamError(a.allocate(owner('g')))).kind).toBe('exhausted');
  });

  it('get() and list() describe allocations; releaseAllExcept() keeps only valid owners', async () => {
    const a = allocator({ subnet: '10.0.0.0/24' });
    for (const c of ['a', 'b', 'c', 'd']) await a.allocate(owner(c));
    expect(await a.get(owner('c'))).toEqual({
      owner: owner('c'), ips: [{ address: '10.0.0.4/24', gateway: '10.0.0.1', rangeIndex: 0 }], routes: [],
    });
    expect(await a.get(owner('c', 'eth1'))).toBeUndefined();
    const released = await a.releaseAllExcept([
      owner('a'), { containerId: 'c', ifname: 'eth0' }, { network: 'other', containerId: 'd', ifname: 'eth0' },
    ]);
    expect(released.map((x) => [x.owner.containerId, addrs(x)]).sort()).toEqual([
      ['b', ['10.0.0.3/24']], ['d', ['10.0.0.5/24']],
    ]);
    expect((await a.list()).map((x) => x.owner.containerId).sort()).toEqual(['a', 'c']);
    expect(await a.releaseAllExcept([])).toHaveLength(2);
    expect(await a.list()).toEqual([]);
  });

  it('validates owners', async () => {
    const a = allocator({ subnet: '10.0.0.0/24' });
    for (const o of [{ ...owner('c1'), network: 'other' }, owner(''), owner('c 1'), owner('c1', ''), owner('c1', 'eth\n0')]) {
      expect((await ipamError(a.allocate(o))).kind).toBe('invalid');
    }
  });

  it('serialises 200 concurrent allocations into 200 distinct addresses', async () => {
    const a = allocator({ subnet: '10.0.0.0/16' });
    const all = await Promise.all(Array.from({ length: 200 }, (_, i) => a.allocate(owner(`c${i}`))));
    const ips = all.map((r) => r.ips[0].address);
    expect(new Set(ips).size).toBe(200);
    // Interleaved retries of the same owners are idempotent.
    const again = await Promise.all(Array.from({ length: 200 }, (_, i) => a.allocate(owner(`c${i}`))));
    expect(again.map((r) => r.ips[0].address)).toEqual(ips);
  });

  it('concurrent retries of one owner get one address', async () => {
    const a = allocator({ subnet: '10.0.0.0/24' });
    const all = await Promise.all(Array.from({ length: 20 }, () => a.allocate(owner('c1'))));
    expect(new Set(all.map((r) => r.ips[0].address))).toEqual(new Set(['10.0.0.2/24']));
    expect(await a.list()).toHaveLength(1);
  });

  it('two allocators sharing one store never hand out the same address', async () => {
    let lost = 0;
    const store = new (class extends MemoryIpamStore {
      override async reserve(...args: Parameters<MemoryIpamStore['reserve']>): Promise<boolean> {
        const ok = await super.reserve(...args);
        if (!ok) lost++;
        return ok;
      }
    })();
    const cfg = { subnet: '10.0.0.0/24' };
    const a = allocator(cfg, store);
    const b = allocator(cfg, store);
    // Both load the empty state first, so each must collide with what the other reserved.
    await Promise.all([a.list(), b.list()]);
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) =>
      (i % 2 ? a : b).allocate(owner(`c${i}`))));
    const ips = results.map((r) => r.ips[0].address);
    expect(new Set(ips).size).toBe(100);
    expect(lost).toBeGreaterThan(0);
    // Each learnt the other's leases while colliding; a fresh allocator sees them all.
    expect(await allocator(cfg, store).list()).toHaveLength(100);
  });

  it('Ipam shares one allocator per network and picks up config changes', async () => {
    const store = new MemoryIpamStore();
    const ipam = new Ipam({ store });
    const a1 = ipam.network(parseIpamConfig(NET, { subnet: '10.0.0.0/24' }));
    await a1.allocate(owner('c1'));
    const a2 = ipam.network(parseIpamConfig(NET, { subnet: '10.0.0.0/24', rangeStart: '10.0.0.100' }));
    expect(a2).toBe(a1);
    expect(addrs(await a2.allocate(owner('c2')))).toEqual(['10.0.0.100/24']);
    // A lease outside the new ranges is still reported, without a range.
    expect((await a2.get(owner('c1')))!.ips).toEqual([{ address: '10.0.0.2/32', rangeIndex: -1 }]);
    expect(ipam.network(parseIpamConfig('other', { subnet: '10.0.0.0/24' }))).not.toBe(a1);
  });
});
