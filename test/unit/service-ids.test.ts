// ServiceIds.snapshot keeps each allocator's JSON until its assignment changes: the text must stay
// what JSON.stringify of the whole snapshot gives, before and after changes and a restore.
import { describe, expect, it } from 'vitest';
import { RotatingNumbers, ServiceIds } from '../../src/service/ids';
import { Rng } from '../support/rng';

const whole = (ids: ServiceIds) =>
  JSON.stringify({ version: 1, svc: ids.svc.snapshot(), sets: ids.sets.snapshot(), backends: ids.backends.snapshot() });

describe('ServiceIds.snapshot', () => {
  it('is JSON.stringify of the three allocators, through changes, unchanged runs and a restore', () => {
    const ids = new ServiceIds();
    expect(ids.snapshot()).toBe(whole(ids));
    ids.svc.assign(['a/x', 'a/y']);
    ids.backends.assign(['10.0.0.1:80/TCP', '10.0.0.2:80/TCP']);
    const first = ids.snapshot();
    expect(first).toBe(whole(ids));
    // Nothing changed: the same text.
    ids.svc.assign(['a/y', 'a/x']);
    expect(ids.snapshot()).toBe(first);
    // One allocator changed: its part follows, the others' are kept.
    ids.backends.assign(['10.0.0.2:80/TCP', '10.0.0.3:80/TCP']);
    expect(ids.snapshot()).not.toBe(first);
    expect(ids.snapshot()).toBe(whole(ids));
    const copy = new ServiceIds();
    copy.restore(ids.snapshot());
    expect(copy.snapshot()).toBe(ids.snapshot());
    expect(copy.backends.get('10.0.0.3:80/TCP')).toBe(ids.backends.get('10.0.0.3:80/TCP'));
  });

  it('update with keys the caller sorted (a first compile) numbers them as update sorting them itself', () => {
    const r = new Rng(3);
    const keys = Array.from({ length: 300 }, (_, i) => `10.${r.int(4)}.${i % 7}.${r.int(256)}:${80 + r.int(3)}/TCP`);
    const distinct = [...new Set(keys)];
    const a = new RotatingNumbers(1, 1000, 'a');
    const b = new RotatingNumbers(1, 1000, 'b');
    a.update(distinct.slice(), []);
    b.update(distinct.slice().sort(), [], true);
    expect(b.snapshot()).toEqual(a.snapshot());
    expect(b.get(distinct[0])).toBe(a.get(distinct[0]));
  });

  it('stays JSON.stringify of the snapshot through changes by difference (update), with a quote or a wrap in the way', () => {
    for (let seed = 1; seed <= 30; seed++) {
      const r = new Rng(seed);
      // A small range: the cursor wraps and numbers are searched for, now and then.
      const n = new RotatingNumbers(1, seed % 2 ? 40 : 1_000_000, 'test');
      const live = new Set<string>();
      for (let step = 0; step < 40; step++) {
        const gone = [...live].filter(() => r.chance(0.2)).slice(0, 1 + r.int(20));
        for (const k of gone) live.delete(k);
        const fresh: string[] = [];
        for (let i = r.int(6); i > 0; i--) {
          const k = r.pick(['10.0.0.', 'a"b', '[fd00::', 'x\\y']) + r.int(60);
          if (!live.has(k) && !fresh.includes(k) && live.size + fresh.length < 38) fresh.push(k);
        }
        n.update(fresh, gone);
        for (const k of fresh) live.add(k);
        const text = n.snapshotJson();
        expect({ seed, step, text }).toEqual({ seed, step, text: JSON.stringify(n.snapshot()) });
        expect(new Set(n.snapshot().entries.map(([k]) => k))).toEqual(live);
        const back = new RotatingNumbers(1, 1_000_000, 'test');
        back.load(JSON.parse(text) as { cursor: number; entries: Array<[string, number]> });
        expect(back.snapshotJson()).toBe(text);
      }
    }
  });
});
