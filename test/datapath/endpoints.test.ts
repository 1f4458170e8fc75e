// EndpointMaps (src/datapath/endpoints.ts), the one writer of kelp_endpoints and its cache, on
// the maps of a loaded lxc.o. Every write is recorded and checked against the two rules the
// programs rely on (bpf/lib/endpoint.h): after any write, a live slot says exactly what
// kelp_endpoints says for its address, at that address's index; and a write that touches a live
// slot, or makes one live, changes no byte but `live`.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { BpfMap, BpfObject } from '../../src/bpf';
import { EndpointMaps } from '../../src/datapath/endpoints';
import {
  EndpointInfo,
  EP_SLOT_LIVE_OFFSET,
  endpointCacheIndex,
  endpointCacheKey,
  endpointInfo,
  endpointKey,
  endpointSlot,
} from '../../src/datapath/structs';
import { loadWithVerifierLog, LXC_OBJECT } from '../support/datapath';

let obj: BpfObject;
let hash: BpfMap;
let cache: BpfMap;
let maps: EndpointMaps;
let violations: string[];
let writes: number;

const info = (epId: number, ifindex = 10 + epId, mac = `02:aa:00:00:00:${epId.toString(16).padStart(2, '0')}`): EndpointInfo => ({
  ifindex,
  epId,
  flags: 0,
  mac,
  nodeMac: '02:ee:00:00:00:01',
});

/** An address in 10.90.0.0/16 other than `ip` whose slot is `ip`'s. */
function collidingIp(ip: string): string {
  for (let n = 1; n < 1 << 16; n++) {
    const other = `10.90.${n >> 8}.${n & 255}`;
    if (other !== ip && endpointCacheIndex(other) === endpointCacheIndex(ip)) return other;
  }
  throw new Error(`no address collides with ${ip}`);
}

function slotAt(index: number): Buffer {
  return cache.lookup(endpointCacheKey(index))!;
}

/** Every live slot that does not say what kelp_endpoints says. */
function incoherentSlots(): string[] {
  const out: string[] = [];
  for (const [k, v] of cache.lookupBatch()) {
    if (v[EP_SLOT_LIVE_OFFSET] === 0) continue;
    const slot = endpointSlot.decode(v);
    const index = k.readUInt32LE(0);
    const entry = hash.lookup(endpointKey.encode({ ip4: slot.ip4 }));
    if (endpointCacheIndex(slot.ip4) !== index) out.push(`slot ${index}: ${slot.ip4} belongs in ${endpointCacheIndex(slot.ip4)}`);
    else if (!entry || !entry.equals(endpointInfo.encode(slot.info))) out.push(`slot ${index}: ${slot.ip4} disagrees with kelp_endpoints`);
  }
  return out;
}

function liveByteOnly(a: Buffer, b: Buffer): boolean {
  const x = Buffer.from(a);
  x[EP_SLOT_LIVE_OFFSET] = b[EP_SLOT_LIVE_OFFSET];
  return x.equals(b);
}

/** `map`, with every update checked by `check` once it is done. */
function watched(map: BpfMap, check: (key: Buffer, before: Buffer | undefined, after: Buffer) => void): BpfMap {
  return new Proxy(map, {
    get(target, prop) {
      if (prop === 'update' || prop === 'delete') {
        return (key: Buffer, value?: Buffer, flags?: number) => {
          const before = target.lookup(key);
          const r = prop === 'update' ? target.update(key, value!, flags) : target.delete(key);
          writes++;
          check(key, before, prop === 'update' ? value! : Buffer.alloc(0));
          return r;
        };
      }
      const v = Reflect.get(target, prop, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

function expectClean(): void {
  expect(violations).toEqual([]);
  expect(incoherentSlots()).toEqual([]);
}

beforeAll(() => {
  obj = loadWithVerifierLog(LXC_OBJECT);
  hash = obj.map('kelp_endpoints');
  cache = obj.map('kelp_endpoint_cache');
  const coherent = (what: string) => {
    for (const problem of incoherentSlots()) violations.push(`after ${what}: ${problem}`);
  };
  maps = new EndpointMaps(
    watched(hash, (key) => coherent(`kelp_endpoints write of ${endpointKey.decode(key).ip4}`)),
    watched(cache, (key, before, after) => {
      const index = key.readUInt32LE(0);
      const wasLive = before !== undefined && before[EP_SLOT_LIVE_OFFSET] !== 0;
      const isLive = after[EP_SLOT_LIVE_OFFSET] !== 0;
      if ((wasLive || isLive) && !liveByteOnly(before!, after)) violations.push(`slot ${index}: a live slot rewritten beyond its live byte`);
      coherent(`slot ${index} write`);
    }),
  );
});

afterAll(() => obj?.close());

beforeEach(() => {
  hash.clear();
  cache.clear();
  violations = [];
  writes = 0;
});

describe('put and remove', () => {
  it('put writes the entry and a live slot that copies it; remove empties both', () => {
    maps.put('10.244.0.5', info(1));
    expect(maps.get('10.244.0.5')).toEqual(info(1));
    expect(maps.slotOf('10.244.0.5').slot).toEqual({ ip4: '10.244.0.5', live: true, info: info(1) });
    expectClean();

    expect(maps.remove('10.244.0.5')).toBe(true);
    expect(maps.get('10.244.0.5')).toBeUndefined();
    expect(slotAt(endpointCacheIndex('10.244.0.5')).equals(Buffer.alloc(endpointSlot.size))).toBe(true);
    expect(maps.remove('10.244.0.5')).toBe(false);
    expectClean();
  });

  it('a changed MAC reaches the slot, which never serves the old one once kelp_endpoints has the new', () => {
    maps.put('10.244.0.5', info(1));
    maps.put('10.244.0.5', info(1, 11, '02:cc:00:00:00:01'));
    expect(maps.slotOf('10.244.0.5').slot).toEqual({ ip4: '10.244.0.5', live: true, info: info(1, 11, '02:cc:00:00:00:01') });
    expectClean();
  });

  it('an unchanged put writes nothing to the cache', () => {
    maps.put('10.244.0.5', info(1));
    const before = writes;
    maps.put('10.244.0.5', info(1));
    expect(writes - before).toBe(1); // the kelp_endpoints update alone
  });

  it('several addresses of one endpoint each get their own slot', () => {
    for (const ip of ['10.244.0.5', '10.244.1.5', '10.245.0.5']) maps.put(ip, info(1));
    for (const ip of ['10.244.0.5', '10.244.1.5', '10.245.0.5']) expect(maps.slotOf(ip).slot).toMatchObject({ ip4: ip, live: true });
    expectClean();
  });

  it('refuses 0.0.0.0, which no slot may hold', () => {
    expect(() => maps.put('0.0.0.0', info(1))).toThrow(/0\.0\.0\.0/);
  });
});

describe('collisions', () => {
  const a = '10.244.0.5';
  const b = collidingIp(a);

  it('the first address keeps the slot; the second is served by kelp_endpoints alone', () => {
    maps.put(a, info(1));
    maps.put(b, info(2));
    expect(maps.get(b)).toEqual(info(2));
    expect(maps.slotOf(b).slot).toMatchObject({ ip4: a, live: true, info: info(1) });
    expectClean();
  });

  it("removing the second leaves the first's slot alone", () => {
    maps.put(a, info(1));
    maps.put(b, info(2));
    maps.remove(b);
    expect(maps.slotOf(a).slot).toMatchObject({ ip4: a, live: true });
    expectClean();
  });

  it('a freed slot goes to the colliding address at the next reconcile', () => {
    maps.put(a, info(1));
    maps.put(b, info(2));
    maps.remove(a);
    expect(maps.slotOf(b).slot.live).toBe(false);
    expect(maps.reconcileCache()).toBe(1);
    expect(maps.slotOf(b).slot).toEqual({ ip4: b, live: true, info: info(2) });
    expect(maps.reconcileCache()).toBe(0);
    expectClean();
  });

  it("a put takes a slot whose owner kelp_endpoints no longer has (a crashed agent's)", () => {
    maps.put(a, info(1));
    hash.delete(endpointKey.encode({ ip4: a })); // behind EndpointMaps' back
    maps.put(b, info(2));
    expect(maps.slotOf(b).slot).toEqual({ ip4: b, live: true, info: info(2) });
    expect(incoherentSlots()).toEqual([]);
    expect(violations.filter((v) => v.includes('beyond its live byte'))).toEqual([]);
  });
});

describe('reconcileCache', () => {
  it('repairs every kind of disagreement and leaves agreeing slots alone', () => {
    const kept = '10.244.0.2';
    const orphan = '10.244.0.3'; // live slot, no entry
    const wrong = '10.244.0.4'; // live slot with other info than its entry
    const uncached = '10.244.0.6'; // entry, no slot
    const misplaced = '10.244.0.7'; // live slot at another address's index
    const deadLeftover = '10.244.0.8'; // dead slot, no entry
    maps.put(kept, info(1));
    const raw = (ip: string, live: boolean, i: EndpointInfo, index = endpointCacheIndex(ip)) =>
      cache.update(endpointCacheKey(index), endpointSlot.encode({ ip4: ip, live, info: i }));
    raw(orphan, true, info(2));
    hash.update(endpointKey.encode({ ip4: wrong }), endpointInfo.encode(info(3)));
    raw(wrong, true, info(3, 99));
    hash.update(endpointKey.encode({ ip4: uncached }), endpointInfo.encode(info(4)));
    hash.update(endpointKey.encode({ ip4: misplaced }), endpointInfo.encode(info(5)));
    const foreignIndex = endpointCacheIndex('10.244.0.200');
    raw(misplaced, true, info(5), foreignIndex);
    raw(deadLeftover, false, info(6));
    const keptSlot = slotAt(endpointCacheIndex(kept));

    expect(maps.reconcileCache()).toBe(6);
    expect(incoherentSlots()).toEqual([]);
    expect(slotAt(endpointCacheIndex(kept)).equals(keptSlot)).toBe(true);
    const empty = Buffer.alloc(endpointSlot.size);
    for (const index of [endpointCacheIndex(orphan), endpointCacheIndex(deadLeftover), foreignIndex]) expect(slotAt(index).equals(empty)).toBe(true);
    expect(maps.slotOf(wrong).slot).toEqual({ ip4: wrong, live: true, info: info(3) });
    expect(maps.slotOf(uncached).slot).toEqual({ ip4: uncached, live: true, info: info(4) });
    expect(maps.slotOf(misplaced).slot).toEqual({ ip4: misplaced, live: true, info: info(5) });
    expect(violations.filter((v) => v.includes('beyond its live byte'))).toEqual([]);
    expect(maps.reconcileCache()).toBe(0);
  });

  it('gives a contested slot to the lowest address', () => {
    const high = '10.244.0.5';
    const low = collidingIp(high); // in 10.90/16, below 10.244/16
    for (const [ip, id] of [[high, 1], [low, 2]] as const) hash.update(endpointKey.encode({ ip4: ip }), endpointInfo.encode(info(id)));
    expect(maps.reconcileCache()).toBe(1);
    expect(maps.slotOf(high).slot).toEqual({ ip4: low, live: true, info: info(2) });
  });
});

describe('checkSlot', () => {
  it('reports a live slot that disagrees, nothing otherwise', () => {
    maps.put('10.244.0.5', info(1));
    expect(maps.checkSlot('10.244.0.5', info(1))).toBeUndefined();
    expect(maps.checkSlot('10.244.0.5', info(1, 12))).toMatch(/kelp_endpoint_cache slot \d+ for 10\.244\.0\.5 holds/);
    expect(maps.checkSlot('10.244.0.9', info(1))).toBeUndefined();
  });
});
