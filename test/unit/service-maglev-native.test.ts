// The addon's Maglev population (native/maglev.cc, through src/bpf/maglev.ts) against the
// TypeScript reference (src/service/maglev.ts maglevTable16), slot for slot, on generated sets;
// and the compiler's batched cache (MaglevCache.flush) against tables computed one by one.
import { describe, expect, it } from 'vitest';
import { KelpBpfError } from '../../src/bpf';
import { addon } from '../../src/bpf/native';
import { maglevFillFlat, maglevFirstBadTable } from '../../src/bpf/maglev';
import { decodeMaglevTable, encodeMaglevTable, MAGLEV_NO_SLOT } from '../../src/datapath/service';
import { MaglevCache } from '../../src/service/compile';
import { maglevFillIntoStart, maglevFillTables, maglevTable16, maglevTables16 } from '../../src/service/maglev';
import { Rng } from '../support/rng';

const PRIMES = [2, 3, 7, 251, 1021, 4057, 16381];

/** Backend names as the compiler makes them, and a few it does not (any text may be a name). */
function nameOf(r: Rng): string {
  switch (r.int(4)) {
    case 0:
      return `10.${r.int(256)}.${r.int(256)}.${r.int(256)}`;
    case 1:
      return `10.${r.int(256)}.${r.int(256)}.${r.int(256)}:${1 + r.int(65535)}`;
    case 2:
      return `[fd00::${r.int(65536).toString(16)}]:${r.int(65536)}`;
    default:
      // Non-ASCII and longer than one SHA-256 block: the native hash must see the same UTF-8 bytes.
      return `bäckend-${'x'.repeat(r.int(120))}-${r.int(1e9)}`;
  }
}

function distinctNames(r: Rng, n: number): string[] {
  const out = new Set<string>();
  while (out.size < n) out.add(nameOf(r));
  return [...out];
}

describe('native Maglev population', () => {
  it('equals the TypeScript reference slot for slot (generated sets, M from 2 to 16381)', () => {
    for (let seed = 1; seed <= 40; seed++) {
      const r = new Rng(seed);
      const m = PRIMES[r.int(PRIMES.length)];
      const sets = Array.from({ length: 1 + r.int(6) }, () => distinctNames(r, 1 + r.int(Math.min(m, 40))));
      const native = maglevTables16(sets, { tableSize: m });
      sets.forEach((names, i) => {
        expect(Array.from(native[i]), `seed ${seed}, set ${i} (${names.length} of M=${m})`).toEqual(Array.from(maglevTable16(names, { tableSize: m })));
      });
    }
  });

  it('a set filling every slot (N = M), a large set, and a batch big enough for the threaded path', () => {
    const r = new Rng(99);
    const full = distinctNames(r, 251);
    expect(Array.from(maglevTables16([full], { tableSize: 251 })[0])).toEqual(Array.from(maglevTable16(full, { tableSize: 251 })));
    const big = distinctNames(r, 3000);
    expect(Array.from(maglevTables16([big], { tableSize: 65537 })[0])).toEqual(Array.from(maglevTable16(big, { tableSize: 65537 })));
    // 300 sets × 4057 slots is over the native side's threshold for splitting work over threads.
    const many = Array.from({ length: 300 }, () => distinctNames(r, 2 + r.int(3)));
    const tables = maglevTables16(many, { tableSize: 4057 });
    for (const i of [0, 1, 74, 75, 150, 225, 299]) expect(Array.from(tables[i]), `set ${i}`).toEqual(Array.from(maglevTable16(many[i], { tableSize: 4057 })));
  });

  it('a fill started beside the caller (threads left running) writes what the fill in one call does, by wait()', () => {
    const r = new Rng(5);
    // Over the threshold for threads (300 × 4093 slots) and under it (3 × 251): both wait the same way.
    for (const [count, m] of [
      [300, 4093],
      [3, 251],
    ]) {
      const sets = Array.from({ length: count }, () => distinctNames(r, 2 + r.int(4)));
      const outs = sets.map(() => new Uint16Array(m).fill(0xffff));
      const filling = maglevFillIntoStart(sets, outs, { tableSize: m });
      filling.wait();
      filling.wait();
      const want = maglevTables16(sets, { tableSize: m });
      outs.forEach((out, i) => expect(Array.from(out), `${count} sets, set ${i}`).toEqual(Array.from(want[i])));
    }
    // Checked before any thread starts: nothing is left running to wait for.
    expect(() => maglevFillIntoStart([['a', 'a']], [new Uint16Array(251)], { tableSize: 251 })).toThrow(/"a" is listed twice/);
    // The addon's own check of where a table lies: never written past its buffer.
    const buf = new ArrayBuffer(2 * 251 + 2);
    const start = (where: number[]) => addon.maglevFillStart(Buffer.from('a\0b\0'), Uint32Array.of(2), Uint16Array.of(0, 1), 251, [buf], Uint32Array.from(where));
    expect(() => start([0, 4])).toThrow(/set 0's table lies outside its buffer/);
    expect(() => start([0, 1])).toThrow(/outside its buffer/);
    expect(() => start([1, 0])).toThrow(/outside its buffer/);
    addon.maglevFillWait(start([0, 2]));
    expect(Array.from(new Uint16Array(buf, 2, 251))).toEqual(Array.from(maglevTable16(['a', 'b'], { tableSize: 251 })));
  });

  it('listing order does not matter: the same names in any order own the same slots', () => {
    const names = distinctNames(new Rng(7), 9);
    const [a, b] = maglevTables16([names, [...names].reverse()], { tableSize: 1021 });
    const owners = (list: string[], t: Uint16Array) => Array.from(t, (i) => list[i]);
    expect(owners([...names].reverse(), b)).toEqual(owners(names, a));
  });

  it('rejects what the reference rejects, naming the problem', () => {
    expect(() => maglevTables16([['a', 'b', 'a']], { tableSize: 251 })).toThrow(/"a" is listed twice/);
    expect(() => maglevTables16([[]], { tableSize: 251 })).toThrow(/at least one backend/);
    expect(() => maglevTables16([['a', 'b', 'c']], { tableSize: 2 })).toThrow(/smaller than the 3 backends/);
    expect(() => maglevTables16([['a']], { tableSize: 4096 })).toThrow(/not prime/);
    expect(() => maglevFillTables([{ names: ['a', 'b'], out: new Uint16Array(10) }], { tableSize: 251 })).toThrow(KelpBpfError);
    expect(() => maglevFillFlat(['a\0b'], Uint32Array.of(1), Uint16Array.of(0), [new Uint16Array(7)], 7)).toThrow(/contains NUL/);
    expect(() => maglevFillFlat(['a', 'b'], Uint32Array.of(2), Uint16Array.of(0, 2), [new Uint16Array(7)], 7)).toThrow(/input index 2 is outside a set of 2/);
  });
});

describe('MaglevCache', () => {
  it('hands tables out at once and fills them at flush(), as computed one by one; a hit returns the same table', () => {
    const cache = new MaglevCache();
    const r = new Rng(3);
    const sets = Array.from({ length: 50 }, () => distinctNames(r, 2 + r.int(5)));
    const got = sets.map((names) => cache.table(names, 251)[1]);
    cache.flush();
    sets.forEach((names, i) => expect(Array.from(got[i]), `set ${i}`).toEqual(Array.from(maglevTable16(names, { tableSize: 251 }))));
    expect(cache.misses).toBe(50);
    cache.swap();
    expect(cache.table(sets[0], 251)[1]).toBe(got[0]);
    expect(cache.hits).toBe(1);
  });

  it('fillStart: tables of several sizes filled by wait(), as flush() fills them', () => {
    const cache = new MaglevCache();
    const r = new Rng(8);
    const sets = Array.from({ length: 400 }, (_, i) => ({ names: distinctNames(r, 2 + r.int(3)), m: i % 2 === 0 ? 4093 : 251 }));
    const got = sets.map(({ names, m }) => cache.table(names, m)[1]);
    cache.fillStart().wait();
    for (const i of [0, 1, 2, 3, 198, 199, 398, 399]) expect(Array.from(got[i]), `set ${i}`).toEqual(Array.from(maglevTable16(sets[i].names, { tableSize: sets[i].m })));
  });

  it('a flush that fails forgets the tables it could not fill: asked again, they are computed afresh', () => {
    const cache = new MaglevCache();
    const [, good] = cache.table(['a', 'b'], 251);
    cache.table(['c', 'c'], 251);
    expect(() => cache.flush()).toThrow(/"c" is listed twice/);
    // Both were in the failed batch: neither is served unfilled.
    const [, again] = cache.table(['a', 'b'], 251);
    expect(again).not.toBe(good);
    cache.flush();
    expect(Array.from(again)).toEqual(Array.from(maglevTable16(['a', 'b'], { tableSize: 251 })));
  });
});

describe('a table as kelp_lb4_maglev holds it', () => {
  it('finds a slot naming a backend beyond the set, wherever it is in the table', () => {
    const t = new Uint16Array(4057);
    const one = (u: Uint16Array, count: number) => maglevFirstBadTable(u, Uint32Array.of(0), Uint32Array.of(u.length), Uint32Array.of(count));
    expect(one(t, 1)).toBe(-1);
    for (const at of [0, 1, 15, 16, 2000, 4056]) {
      const u = t.slice();
      u[at] = 3;
      u[4056 - (at % 7)] = 3;
      expect(one(u, 3), `slot ${at}`).toBe(0);
      expect(one(u, 4)).toBe(-1);
    }
  });

  it('finds the first of many tables laid side by side that names a backend beyond its set, against a plain scan', () => {
    // 300 tables of varied sizes and counts in one buffer, with gaps between them (chunk padding)
    // holding large values that belong to no table: only slots inside a table count.
    const rng = { s: 7, int(n: number) { this.s = (this.s * 1103515245 + 12345) >>> 0; return this.s % n; } };
    const lengths = Uint32Array.from({ length: 300 }, () => 1 + rng.int(600));
    const counts = Uint32Array.from(lengths, () => 1 + rng.int(40));
    const starts = new Uint32Array(300);
    let at = 0;
    for (let i = 0; i < 300; i++) {
      starts[i] = at;
      at += lengths[i] + rng.int(5);
    }
    const slots = new Uint16Array(at).fill(0xffff);
    for (let i = 0; i < 300; i++) for (let k = 0; k < lengths[i]; k++) slots[starts[i] + k] = rng.int(counts[i]);
    const plain = (s: Uint16Array) => {
      for (let i = 0; i < 300; i++) for (let k = 0; k < lengths[i]; k++) if (s[starts[i] + k] >= counts[i]) return i;
      return -1;
    };
    expect(maglevFirstBadTable(slots, starts, lengths, counts)).toBe(-1);
    for (let round = 0; round < 50; round++) {
      const s = slots.slice();
      for (let bad = rng.int(3); bad >= 0; bad--) {
        const i = rng.int(300);
        s[starts[i] + rng.int(lengths[i])] = counts[i] + rng.int(3);
      }
      expect(maglevFirstBadTable(s, starts, lengths, counts), `round ${round}`).toBe(plain(s));
    }
    expect(() => maglevFirstBadTable(slots, Uint32Array.of(at - 2), Uint32Array.of(3), Uint32Array.of(1))).toThrow(/lies outside/);
    expect(() => maglevFirstBadTable(slots, starts, lengths.subarray(1), counts)).toThrow(/300 starts, 299 lengths/);
  });

  it('encodes a table as its chunks: little-endian slots, the last chunk padded with MAGLEV_NO_SLOT, and back', () => {
    const good = maglevTables16([['a', 'b', 'c']], { tableSize: 509 })[0];
    const buf = encodeMaglevTable(good);
    expect(buf.length).toBe(2 * 512);
    expect(buf.readUInt16LE(2 * 100)).toBe(good[100]);
    expect(buf.readUInt16LE(2 * 508)).toBe(good[508]);
    for (let i = 509; i < 512; i++) expect(buf.readUInt16LE(2 * i)).toBe(MAGLEV_NO_SLOT);
    expect(decodeMaglevTable([buf.subarray(0, 512), buf.subarray(512)])).toEqual(good);
  });
});
