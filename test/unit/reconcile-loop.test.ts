// The reconcile loop's contract: nothing before every source has synced; a change wakes only
// the reconcilers of its kind, once per burst; failures retry with backoff while the others go
// on; the programmed revision tells when a change holds.
import { describe, expect, it } from 'vitest';
import { ReconcileLoop, Reconciler } from '../../src/reconcile/loop';
import { ObjectStore } from '../../src/sources/store';
import type { StateSource } from '../../src/sources/source';
import type { KelpObject, Kind } from '../../src/sources/objects';
import { silentLogger } from '../../src/log';

const ns = (name: string, labels: Record<string, string> = {}): KelpObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels, annotations: {} } });
const pod = (name: string): KelpObject => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'default', labels: {}, annotations: {} }, spec: { containers: [] } });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A source whose sync the test controls. */
function source(): StateSource & { sync(): void } {
  let done!: () => void;
  const p = new Promise<void>((r) => (done = r));
  return { name: 'test', start: async () => undefined, synced: () => p, stop: async () => undefined, sync: () => done() };
}

/** A reconciler that records what it saw in the store each run. */
function recorder(store: ObjectStore, name: string, kinds: Kind[], fail?: () => boolean) {
  const runs: string[][] = [];
  const r: Reconciler = {
    name,
    kinds,
    reconcile: async () => {
      await sleep(1);
      if (fail?.()) throw new Error(`${name} failed`);
      runs.push(kinds.flatMap((k) => store.list(k).map((o) => o.metadata.name)).sort());
    },
  };
  return { r, runs };
}

describe('ReconcileLoop', () => {
  // Found by the services benchmark: `kelp apply --wait` answered while the services run awaited
  // the node's addresses, before it had written the change.
  it('a change is not programmed while the run it woke is still in progress', async () => {
    const store = new ObjectStore();
    const src = source();
    src.sync();
    let release!: () => void;
    let held = false;
    const r: Reconciler = {
      name: 'services',
      kinds: ['Namespace'],
      reconcile: async () => {
        if (!held) return;
        await new Promise<void>((resolve) => (release = resolve));
      },
    };
    const loop = new ReconcileLoop(store, { log: silentLogger, debounceMs: 1 }).add(r);
    await loop.start([src]);
    held = true;
    store.upsert('test', ns('a'));
    const rev = store.revision;
    let answered = false;
    void loop.waitFor(rev).then(() => (answered = true));
    await sleep(50);
    expect(loop.status()[0]).toMatchObject({ dirty: false, runs: 2 });
    expect(loop.programmedRevision).toBeLessThan(rev);
    expect(answered).toBe(false);
    release();
    await sleep(20);
    expect(answered).toBe(true);
    expect(loop.programmedRevision).toBe(rev);
    await loop.stop();
  });

  it('markDirty(name, true) runs at once, without the debounce a change waits (a CNI ADD waits on it)', async () => {
    const store = new ObjectStore();
    const src = source();
    src.sync();
    const rec = recorder(store, 'policy', []);
    const loop = new ReconcileLoop(store, { log: silentLogger, debounceMs: 2_000 }).add(rec.r);
    await loop.start([src]);
    expect(rec.runs.length).toBe(1);
    loop.markDirty('policy');
    await sleep(100);
    expect(rec.runs.length).toBe(1); // still debounced
    loop.markDirty('policy', true);
    await sleep(100);
    expect(rec.runs.length).toBe(2);
    await loop.stop();
  });

  it('runs nothing before every source has synced, then everything once', async () => {
    const store = new ObjectStore();
    const a = source();
    const b = source();
    const ns1 = recorder(store, 'ns', ['Namespace']);
    const loop = new ReconcileLoop(store, { log: silentLogger, debounceMs: 5 }).add(ns1.r);
    const started = loop.start([a, b]);
    store.upsert('test', ns('one'));
    a.sync();
    await sleep(30);
    expect(ns1.runs).toEqual([]);
    b.sync();
    await started;
    expect(ns1.runs).toEqual([['one']]);
    await loop.stop();
  });

  it('a burst of changes wakes only the reconcilers of those kinds, once', async () => {
    const store = new ObjectStore();
    const nsR = recorder(store, 'ns', ['Namespace']);
    const podR = recorder(store, 'pods', ['Pod']);
    const loop = new ReconcileLoop(store, { log: silentLogger, debounceMs: 20 }).add(nsR.r).add(podR.r);
    await loop.start([]);
    for (let i = 0; i < 50; i++) store.upsert('test', ns(`n${i}`));
    await loop.waitFor();
    expect(nsR.runs.length).toBe(2); // start + one for the burst
    expect(nsR.runs[1].length).toBe(50);
    expect(podR.runs.length).toBe(1); // start only
    store.upsert('test', pod('p'));
    await loop.waitFor();
    expect(podR.runs).toEqual([[], ['p']]);
    expect(nsR.runs.length).toBe(2);
    await loop.stop();
  });

  it('a change during a run makes it run again; waitFor resolves only once that change is applied', async () => {
    const store = new ObjectStore();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const seen: number[] = [];
    const loop = new ReconcileLoop(store, { log: silentLogger, debounceMs: 1 }).add({
      name: 'slow',
      kinds: ['Namespace'],
      reconcile: async () => {
        seen.push(store.list('Namespace').length);
        if (seen.length === 2) await gate;
      },
    });
    await loop.start([]);
    store.upsert('test', ns('a'));
    await sleep(20); // run 2 is inside reconcile, holding the gate
    store.upsert('test', ns('b'));
    const rev = store.revision;
    let done = false;
    const w = loop.waitFor(rev).then(() => (done = true));
    await sleep(20);
    expect(done).toBe(false);
    expect(loop.programmedRevision).toBeLessThan(rev);
    release();
    await w;
    expect(seen).toEqual([0, 1, 2]);
    expect(loop.programmedRevision).toBe(rev);
    await loop.stop();
  });

  it('a failing reconciler retries with backoff and does not hold the others back', async () => {
    const store = new ObjectStore();
    let failures = 3;
    const bad = recorder(store, 'bad', ['Namespace'], () => failures-- > 0);
    const good = recorder(store, 'good', ['Namespace']);
    const loop = new ReconcileLoop(store, { log: silentLogger, debounceMs: 1, retryMinMs: 10, retryMaxMs: 40 }).add(bad.r).add(good.r);
    await loop.start([]);
    expect(good.runs).toEqual([[]]);
    expect(loop.status().find((s) => s.name === 'bad')).toMatchObject({ dirty: true, failures: 1, lastError: 'bad failed', applied: -1 });
    store.upsert('test', ns('x'));
    await loop.waitFor();
    expect(bad.runs.at(-1)).toEqual(['x']);
    expect(good.runs.at(-1)).toEqual(['x']);
    expect(loop.status().find((s) => s.name === 'bad')).toMatchObject({ dirty: false, failures: 3 });
    await loop.stop();
  });

  it('store: each change has its own revision; an unchanged object or another source\'s removal is no change', () => {
    const store = new ObjectStore();
    const seen: Array<[string, number]> = [];
    store.subscribe((evs) => evs.forEach((e) => seen.push([`${e.type} ${e.key}`, e.revision])), ['Namespace']);
    store.upsert('a', ns('one'));
    expect(store.upsert('a', ns('one'))).toBeUndefined();
    store.upsert('a', ns('one', { x: 'y' }));
    expect(store.remove('b', 'Namespace', undefined, 'one')).toBeUndefined();
    store.upsert('a', pod('p'));
    store.replaceFrom('a', [ns('two')]);
    expect(seen).toEqual([
      ['upsert Namespace//one', 1],
      ['upsert Namespace//one', 2],
      ['delete Namespace//one', 4],
      ['upsert Namespace//two', 6],
    ]);
    expect(store.revision).toBe(6);
    expect(store.list('Pod')).toEqual([]);
    expect(store.revisionOf('Namespace', undefined, 'two')).toBe(6);
  });
});

describe('ReconcileLoop.waitForWithin', () => {
  it('is true once the revision is programmed, false at its deadline, and leaves no waiter behind', async () => {
    const store = new ObjectStore();
    const loop = new ReconcileLoop(store, { log: silentLogger, debounceMs: 1 }).add({ name: 'n', kinds: ['Namespace'], reconcile: () => undefined });
    await loop.start([]);
    store.upsert('test', ns('a'));
    expect(await loop.waitForWithin(store.revision, 1000)).toBe(true);
    expect(await loop.waitForWithin(store.revision + 5, 30)).toBe(false);
    expect((loop as unknown as { waiters: unknown[] }).waiters).toEqual([]);
    await loop.stop();
  });
});
