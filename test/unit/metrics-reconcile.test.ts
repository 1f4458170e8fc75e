// The reconcile loop's hook for the metrics: every run reported with its duration; the time from
// a change to its map update only for runs a change caused (not the start, not the resync), and
// measured from the change itself when a run failed in between.
import { describe, expect, it } from 'vitest';
import { ReconcileLoop } from '../../src/reconcile/loop';
import { ObjectStore } from '../../src/sources/store';
import type { StateSource } from '../../src/sources/source';
import type { KelpObject } from '../../src/sources/objects';
import { silentLogger } from '../../src/log';
import { until } from '../support/kelp-cli';

const ns = (name: string): KelpObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: {}, annotations: {} } });
const synced: StateSource = { name: 'test', start: async () => undefined, synced: async () => undefined, stop: async () => undefined };

type Run = { name: string; ok: boolean; seconds: number; sinceChangeSeconds?: number };

describe('ReconcileLoop onRun', () => {
  it('times change-to-apply for runs a change caused, not for the first run or resyncs', async () => {
    const store = new ObjectStore();
    const runs: Run[] = [];
    const loop = new ReconcileLoop(store, { log: silentLogger, debounceMs: 5, resyncMs: 30, onRun: (r) => runs.push(r) });
    loop.add({ name: 'ns', kinds: ['Namespace'], reconcile: () => undefined });
    await loop.start([synced]);
    expect(runs).toEqual([{ name: 'ns', ok: true, seconds: expect.any(Number) }]);
    // Resyncs: runs without a change.
    await until('two resyncs', () => runs.length >= 3);
    expect(runs.every((r) => r.sinceChangeSeconds === undefined)).toBe(true);
    const n = runs.length;
    store.upsert('test', ns('one'));
    const changed = await until('the run of the change', () => runs.slice(n).find((r) => r.sinceChangeSeconds !== undefined));
    // The change came before the run began: its wait includes the run.
    expect(changed.sinceChangeSeconds!).toBeGreaterThanOrEqual(changed.seconds);
    await loop.stop();
  });

  it('a failed run is reported as such, and the change is timed from when it came until a run writes it', async () => {
    const store = new ObjectStore();
    const runs: Run[] = [];
    let failures = 0;
    const loop = new ReconcileLoop(store, { log: silentLogger, debounceMs: 1, retryMinMs: 60, onRun: (r) => runs.push(r) });
    loop.add({
      name: 'ns',
      kinds: ['Namespace'],
      reconcile: () => {
        if (store.list('Namespace').length > 0 && failures++ === 0) throw new Error('once');
      },
    });
    await loop.start([synced]);
    store.upsert('test', ns('one'));
    const ok = await until('the successful run after the failure', () => runs.find((r) => r.ok && r.sinceChangeSeconds !== undefined));
    const failed = runs.find((r) => !r.ok);
    expect(failed).toMatchObject({ name: 'ns', ok: false });
    expect(failed!.sinceChangeSeconds).toBeUndefined();
    // It waited out the retry backoff (60 ms; timers may fire a millisecond early) after the failed run.
    expect(ok.sinceChangeSeconds!).toBeGreaterThanOrEqual(0.05);
    await loop.stop();
  });
});
