// syncMap on a real kernel map: after a sync the map holds exactly the desired content, whatever
// it held before (generated cases against a plain reference), writing only the difference; a
// map too small for the desired content is an error that names it.
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BpfMap, BpfObject, loadObject } from '../../src/bpf';
import { diffEntries, MapFullError, syncMap } from '../../src/datapath/maps/sync';
import { cleanupAll, mountBpffs } from '../support/netns';
import { rng } from '../support/rng';

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const u64 = (n: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};

let obj: BpfObject;
let map: BpfMap; // fx_hash: HASH, 64 entries, u32 -> u64

beforeAll(() => {
  obj = loadObject(path.join(__dirname, '../../build/bpf/fixture_maps.o'), { pinRoot: mountBpffs() });
  map = obj.map('fx_hash');
});
afterAll(() => {
  obj?.close();
  cleanupAll();
});
beforeEach(() => map.clear());

function content(): Record<number, number> {
  const out: Record<number, number> = {};
  for (const k of map.keys()) out[k.readUInt32LE()] = Number(map.lookup(k)!.readBigUInt64LE());
  return out;
}

describe('syncMap', () => {
  it('adds, updates and removes only what differs', () => {
    map.update(u32(1), u64(10));
    map.update(u32(2), u64(20));
    map.update(u32(3), u64(30));
    const stats = syncMap(map, [
      [u32(1), u64(10)],
      [u32(2), u64(21)],
      [u32(4), u64(40)],
    ]);
    expect(stats).toEqual({ added: 1, updated: 1, removed: 1, unchanged: 1 });
    expect(content()).toEqual({ 1: 10, 2: 21, 4: 40 });
    expect(syncMap(map, [[u32(1), u64(10)], [u32(2), u64(21)], [u32(4), u64(40)]])).toEqual({ added: 0, updated: 0, removed: 0, unchanged: 3 });
  });

  it('leaves the map equal to the desired content in 300 generated cases (reference: a plain object)', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const r = rng(seed);
      map.clear();
      const before: Record<number, number> = {};
      for (let i = 0; i < Math.floor(r() * 40); i++) before[Math.floor(r() * 60)] = Math.floor(r() * 5);
      for (const [k, v] of Object.entries(before)) map.update(u32(Number(k)), u64(v));
      const want: Record<number, number> = {};
      for (let i = 0; i < Math.floor(r() * 64); i++) want[Math.floor(r() * 60)] = Math.floor(r() * 5);
      const stats = syncMap(map, Object.entries(want).map(([k, v]) => [u32(Number(k)), u64(v)] as const));
      expect(content(), `seed ${seed}`).toEqual(want);
      const keys = new Set([...Object.keys(before), ...Object.keys(want)]);
      let added = 0, updated = 0, removed = 0, unchanged = 0;
      for (const k of keys) {
        if (!(k in want)) removed++;
        else if (!(k in before)) added++;
        else if (before[+k] === want[+k]) unchanged++;
        else updated++;
      }
      expect(stats, `seed ${seed}`).toEqual({ added, updated, removed, unchanged });
    }
  });

  it('a desired content larger than the map is a MapFullError naming it', () => {
    const desired = Array.from({ length: 65 }, (_, i) => [u32(i), u64(i)] as const);
    let err: unknown;
    try {
      syncMap(map, desired);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MapFullError);
    expect((err as Error).message).toMatch(/^fx_hash is full: 65 entries wanted, room for 64/);
  });

  it('a key named twice in the desired content is a bug, reported', () => {
    expect(() => diffEntries([], [[u32(1), u64(1)], [u32(1), u64(2)]])).toThrow(/names key 01000000 twice/);
  });
});
