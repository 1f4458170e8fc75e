// Map operations on a real kernel: CRUD, flags, iteration, batches, per-CPU values, pins.
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  BPF_EXIST,
  BPF_NOEXIST,
  BpfObject,
  loadObject,
  openPinnedMap,
} from '../../src/bpf';
import { caught } from '../support/bpf-error';
import { cleanupAll, mountBpffs } from '../support/netns';

const fixture = (name: string) => path.join(__dirname, '../../build/bpf', `fixture_${name}.o`);
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const u64 = (n: number | bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};
const sortedNums = (keys: Buffer[]) => keys.map((k) => k.readUInt32LE()).sort((a, b) => a - b);

let obj: BpfObject;
let pinRoot: string;

beforeAll(() => {
  pinRoot = mountBpffs();
  obj = loadObject(fixture('maps'), { pinRoot });
});
afterAll(() => {
  obj?.close();
  cleanupAll();
});
beforeEach(() => {
  for (const name of ['fx_hash', 'fx_percpu', 'fx_percpu_hash', 'fx_pinned']) obj.map(name).clear();
});

describe('BpfMap CRUD', () => {
  it('looks up, updates and deletes; absent keys are undefined / false', () => {
    const m = obj.map('fx_hash');
    expect(m).toMatchObject({ name: 'fx_hash', type: 1, keySize: 4, valueSize: 8, maxEntries: 64, perCpu: false });
    expect(m.lookup(u32(5))).toBeUndefined();
    m.update(u32(5), u64(55));
    expect(m.lookup(u32(5))).toEqual(u64(55));
    m.update(u32(5), u64(56));
    expect(m.lookup(u32(5))).toEqual(u64(56));
    expect(m.delete(u32(5))).toBe(true);
    expect(m.delete(u32(5))).toBe(false);
    expect(m.lookup(u32(5))).toBeUndefined();
  });

  it('honours NOEXIST and EXIST with the error shape', () => {
    const m = obj.map('fx_hash');
    m.update(u32(1), u64(1), BPF_NOEXIST);
    const e = caught(() => m.update(u32(1), u64(2), BPF_NOEXIST));
    expect(e).toMatchObject({ errno: 17, code: 'EEXIST', operation: 'update fx_hash' });
    expect(e.message).toBe('update fx_hash: EEXIST (File exists)');
    expect(m.lookup(u32(1))).toEqual(u64(1));
    m.update(u32(1), u64(3), BPF_EXIST);
    expect(m.lookup(u32(1))).toEqual(u64(3));
    expect(caught(() => m.update(u32(2), u64(3), BPF_EXIST)).code).toBe('ENOENT');
    expect(m.lookup(u32(2))).toBeUndefined();
  });

  it('checks buffer sizes before the kernel does, with exact messages', () => {
    const m = obj.map('fx_hash');
    expect(caught(() => m.lookup(Buffer.alloc(3))).message).toBe('lookup fx_hash: key is 3 bytes, expected 4');
    expect(caught(() => m.update(u32(1), Buffer.alloc(4))).message).toBe(
      'update fx_hash: value is 4 bytes, expected 8',
    );
    expect(caught(() => m.delete(Buffer.alloc(5))).code).toBe('EINVAL');
    expect(caught(() => m.update(u32(1), u64(1), -1)).message).toBe(
      'update fx_hash: flags must be a non-negative integer, got -1',
    );
    expect(m.keys()).toEqual([]);
  });

  it('iterates keys', () => {
    const m = obj.map('fx_hash');
    for (let i = 0; i < 10; i++) m.update(u32(i * 3), u64(i));
    expect(sortedNums(m.keys())).toEqual([0, 3, 6, 9, 12, 15, 18, 21, 24, 27]);
    const arr = obj.map('fx_array');
    expect(sortedNums(arr.keys())).toEqual([0, 1, 2, 3]);
  });

  it('fails with E2BIG when a hash map is full', () => {
    const m = obj.map('fx_hash');
    for (let i = 0; i < m.maxEntries; i++) m.update(u32(i), u64(i));
    expect(caught(() => m.update(u32(1000), u64(1))).code).toBe('E2BIG');
  });
});

describe('BpfMap batches', () => {
  it('updates, reads and deletes in batches', () => {
    const m = obj.map('fx_hash');
    const entries = Array.from({ length: 40 }, (_, i) => [u32(100 + i), u64(i * i)] as const);
    m.updateBatch(entries);
    const read = m.lookupBatch({ batchSize: 7 });
    expect(read).toHaveLength(40);
    for (const [k, v] of read) {
      const i = k.readUInt32LE() - 100;
      expect(v.readBigUInt64LE()).toBe(BigInt(i * i));
    }
    // Absent keys (100000, 100001) are skipped and not counted.
    const del = [u32(100), u32(100000), u32(101), u32(100001), u32(102)];
    expect(m.deleteBatch(del)).toBe(3);
    expect(m.lookup(u32(101))).toBeUndefined();
    expect(m.keys()).toHaveLength(37);
    const drained = m.lookupAndDeleteBatch({ batchSize: 5 });
    expect(drained).toHaveLength(37);
    expect(m.keys()).toEqual([]);
    expect(m.lookupBatch()).toEqual([]);
  });

  it('overwrites in a batch update and refuses per-element flags', () => {
    const m = obj.map('fx_hash');
    m.update(u32(7), u64(7));
    m.updateBatch([
      [u32(6), u64(6)],
      [u32(7), u64(70)],
    ]);
    expect(m.lookup(u32(7))).toEqual(u64(70));
    expect(m.lookup(u32(6))).toEqual(u64(6));
    expect(caught(() => m.updateBatch([[u32(8), u64(8)]], BPF_NOEXIST)).message).toBe(
      'update batch fx_hash: flags must be BPF_ANY or BPF_F_LOCK, got 1',
    );
  });

  it('reads an array in batches', () => {
    const m = obj.map('fx_array');
    const value = (n: number) => Buffer.alloc(24, n);
    for (let i = 0; i < 4; i++) m.update(u32(i), value(i + 1));
    const read = m.lookupBatch({ batchSize: 3 });
    expect(read.map(([k, v]) => [k.readUInt32LE(), v[0]])).toEqual([
      [0, 1],
      [1, 2],
      [2, 3],
      [3, 4],
    ]);
  });

  it('checks sizes in batches with the entry index', () => {
    const m = obj.map('fx_hash');
    expect(caught(() => m.updateBatch([[u32(1), u64(1)], [u32(2), Buffer.alloc(7)]])).message).toBe(
      'update batch fx_hash: value 1 is 7 bytes, expected 8',
    );
  });
});

describe('per-CPU maps', () => {
  it('sizes values as round_up(valueSize, 8) per possible CPU', () => {
    const m = obj.map('fx_percpu');
    expect(m.perCpu).toBe(true);
    expect(m.valueSize).toBe(12);
    expect(m.numCpus).toBeGreaterThanOrEqual(1);
    expect(m.valueLen).toBe(16 * m.numCpus);
    expect(caught(() => m.update(u32(0), Buffer.alloc(12))).message).toBe(
      `update fx_percpu: value is 12 bytes, expected ${16 * m.numCpus} (per-CPU: round_up(12, 8) * ${m.numCpus} CPUs)`,
    );
  });

  it('writes and reads one slot per CPU', () => {
    const m = obj.map('fx_percpu_hash');
    const value = Buffer.alloc(m.valueLen);
    for (let cpu = 0; cpu < m.numCpus; cpu++) value.writeUInt32LE(1000 + cpu, cpu * 16 + 8);
    m.update(u32(3), value);
    const slots = m.lookupPerCpu(u32(3))!;
    expect(slots).toHaveLength(m.numCpus);
    slots.forEach((s, cpu) => {
      expect(s).toHaveLength(12);
      expect(s.readUInt32LE(8)).toBe(1000 + cpu);
    });
    expect(m.lookupPerCpu(u32(4))).toBeUndefined();
    const batch = m.lookupBatch();
    expect(batch).toHaveLength(1);
    expect(batch[0][1]).toEqual(value);
  });

  it('sums what a program counted on each CPU', () => {
    const m = obj.map('fx_percpu');
    const prog = obj.program('fx_classify');
    prog.testRun({ data: Buffer.alloc(60), repeat: 5 });
    prog.testRun({ data: Buffer.alloc(80) });
    const slots = m.lookupPerCpu(u32(0))!;
    expect(slots.reduce((sum, s) => sum + s.readUInt32LE(0), 0)).toBe(6);
    expect(slots.some((s) => s.readUInt32LE(4) === 80)).toBe(true);
  });
});

describe('pinned maps', () => {
  it('opens a pinned map by path and shares its contents', () => {
    const pinned = openPinnedMap(path.join(pinRoot, 'fx_pinned'));
    try {
      expect(pinned).toMatchObject({ name: 'fx_pinned', keySize: 4, valueSize: 8 });
      obj.map('fx_pinned').update(u32(4), u64(44));
      expect(pinned.lookup(u32(4))).toEqual(u64(44));
      pinned.close();
      pinned.close();
      expect(caught(() => pinned.lookup(u32(4))).code).toBe('EBADF');
    } finally {
      pinned.close();
    }
  });

  it('pins a map explicitly and refuses a pinned program as a map', () => {
    const p = path.join(pinRoot, 'hash_by_hand');
    obj.map('fx_hash').pin(p);
    obj.map('fx_hash').update(u32(8), u64(88));
    const again = openPinnedMap(p);
    expect(again.lookup(u32(8))).toEqual(u64(88));
    again.close();
    const progPath = path.join(pinRoot, 'prog');
    obj.program('fx_classify').pin(progPath);
    const e = caught(() => openPinnedMap(progPath));
    expect(e.message).toBe(`open pinned map ${progPath}: not a BPF map (it is prog)`);
    expect(caught(() => openPinnedMap(path.join(pinRoot, 'nothing'))).code).toBe('ENOENT');
  });
});
