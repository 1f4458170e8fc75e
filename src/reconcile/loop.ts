// Reconcilers, level-triggered: a store change only marks the reconcilers that care about its
// kind dirty; a short debounce later each dirty one recomputes the full desired content of its
// maps from the store and applies the difference (src/datapath/maps/sync.ts). Nothing runs
// before every source has synced. A failing reconcile is retried with backoff; the others go on.
//
// The loop reports the programmed revision: the store revision every reconciler has written
// into the kernel. `waitFor(rev)` resolves once the datapath enforces that revision.
import type { Logger } from '../log';
import type { Kind } from '../sources/objects';
import type { ObjectStore, StoreEvent } from '../sources/store';
import { allSynced, StateSource } from '../sources/source';

export interface Reconciler {
  readonly name: string;
  /** Kinds whose changes make this reconciler dirty. */
  readonly kinds: readonly Kind[];
  /** Computes the desired state from the store and applies the difference. */
  reconcile(): Promise<void> | void;
}

export interface ReconcilerStatus {
  name: string;
  /** Store revision of the last successful run (-1: never ran). */
  applied: number;
  dirty: boolean;
  runs: number;
  failures: number;
  lastError?: string;
}

interface State {
  r: Reconciler;
  dirty: boolean;
  /** When a change (not a resync) first made it dirty since its last successful run (ms, monotonic). */
  changedAt?: number;
  applied: number;
  /** A run is in progress: it may not have written what the store holds now. */
  inRun?: boolean;
  runs: number;
  failures: number;
  backoffMs: number;
  lastError?: string;
}

export interface LoopOptions {
  log: Logger;
  /** Wait after the first change of a burst before reconciling (default 10 ms). */
  debounceMs?: number;
  /** Retry delays after a failure: doubling from min to max (defaults 100 ms, 5 s). */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Every reconciler runs again this often even without a change (drift repair; 0: never). */
  resyncMs?: number;
  /** After every run (metrics): its duration and, when a change led to it, the time since that change. */
  onRun?: (run: { name: string; ok: boolean; seconds: number; sinceChangeSeconds?: number }) => void;
}

export class ReconcileLoop {
  private readonly states: State[] = [];
  private readonly waiters: Array<{ rev: number; resolve: () => void }> = [];
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private started = false;
  private stopped = false;
  private unsubscribe?: () => void;
  private resync?: NodeJS.Timeout;

  constructor(
    private readonly store: ObjectStore,
    private readonly opts: LoopOptions,
  ) {}

  add(r: Reconciler): this {
    if (this.states.some((s) => s.r.name === r.name)) throw new Error(`reconciler ${r.name} added twice`);
    this.states.push({ r, dirty: true, applied: -1, runs: 0, failures: 0, backoffMs: 0 });
    return this;
  }

  /** Waits for every source to sync, then reconciles everything once and follows the store. */
  async start(sources: readonly StateSource[]): Promise<void> {
    this.unsubscribe = this.store.subscribe((events) => this.onEvents(events));
    await allSynced(sources);
    if (this.stopped) return;
    this.started = true;
    if (this.opts.resyncMs) {
      this.resync = setInterval(() => {
        for (const s of this.states) s.dirty = true;
        this.schedule(0);
      }, this.opts.resyncMs);
      this.resync.unref();
    }
    await this.runNow();
  }

  /**
   * Marks a reconciler dirty from outside the store (a CNI ADD, a timer). `urgent`: someone waits
   * on it (an ADD answers only once its pod's policy is in), so no debounce.
   */
  markDirty(name: string, urgent = false): void {
    const s = this.states.find((x) => x.r.name === name);
    if (!s) throw new Error(`no reconciler named ${name}`);
    s.dirty = true;
    s.changedAt ??= performance.now();
    if (urgent && this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.schedule(urgent ? 0 : (this.opts.debounceMs ?? 10));
  }

  /** The store revision every reconciler has applied. */
  get programmedRevision(): number {
    if (this.states.length === 0) return this.store.revision;
    // A reconciler in the middle of a run is not dirty, but has not written the change that woke
    // it yet: counted at what it last applied (`kelp apply --wait` answered during the services
    // run's first await, before the maps held the change).
    return Math.min(...this.states.map((s) => (s.dirty || s.inRun ? s.applied : Math.max(s.applied, this.store.revision))));
  }

  /** Resolves once the programmed revision reaches `rev` (default: the store's revision now). */
  waitFor(rev = this.store.revision): Promise<void> {
    if (this.programmedRevision >= rev) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ rev, resolve }));
  }

  /** waitFor with a deadline: true once reached, false at the timeout (the waiter is dropped). */
  waitForWithin(rev: number, timeoutMs: number): Promise<boolean> {
    if (this.programmedRevision >= rev) return Promise.resolve(true);
    return new Promise((resolve) => {
      const w = { rev, resolve: () => (clearTimeout(t), resolve(true)) };
      const t = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        resolve(false);
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  status(): ReconcilerStatus[] {
    return this.states.map((s) => ({ name: s.r.name, applied: s.applied, dirty: s.dirty, runs: s.runs, failures: s.failures, lastError: s.lastError }));
  }

  /** Runs every dirty reconciler now (tests, start-up); resolves when they are done. */
  async runNow(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.running) await this.running;
    this.running = this.runDirty().finally(() => (this.running = undefined));
    await this.running;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    if (this.resync) clearInterval(this.resync);
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    while (this.running) await this.running;
  }

  private onEvents(events: StoreEvent[]): void {
    const kinds = new Set(events.map((e) => e.object.kind));
    let any = false;
    for (const s of this.states) {
      if (s.r.kinds.some((k) => kinds.has(k))) {
        s.dirty = true;
        s.changedAt ??= performance.now();
        any = true;
      }
    }
    if (any) this.schedule(this.opts.debounceMs ?? 10);
    else this.settle();
  }

  private schedule(ms: number): void {
    if (!this.started || this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.runNow();
    }, ms);
  }

  private async runDirty(): Promise<void> {
    let retryIn = Infinity;
    for (const s of this.states) {
      if (!s.dirty || this.stopped) continue;
      // What the run reads: changes after this point mark it dirty again.
      const rev = this.store.revision;
      s.dirty = false;
      s.runs++;
      const changedAt = s.changedAt;
      s.changedAt = undefined;
      const t0 = performance.now();
      s.inRun = true;
      try {
        await s.r.reconcile();
        const t1 = performance.now();
        this.opts.onRun?.({ name: s.r.name, ok: true, seconds: (t1 - t0) / 1e3, sinceChangeSeconds: changedAt === undefined ? undefined : (t1 - changedAt) / 1e3 });
        s.applied = rev;
        s.backoffMs = 0;
        s.lastError = undefined;
      } catch (err) {
        this.opts.onRun?.({ name: s.r.name, ok: false, seconds: (performance.now() - t0) / 1e3 });
        // The change is still not in: it is timed from when it came, whenever a run writes it.
        if (changedAt !== undefined) s.changedAt = Math.min(changedAt, s.changedAt ?? Infinity);
        s.dirty = true;
        s.failures++;
        s.lastError = (err as Error).message;
        const min = this.opts.retryMinMs ?? 100;
        s.backoffMs = Math.min(s.backoffMs ? s.backoffMs * 2 : min, this.opts.retryMaxMs ?? 5000);
        retryIn = Math.min(retryIn, s.backoffMs);
        this.opts.log.error({ err, reconciler: s.r.name, retryInMs: s.backoffMs }, 'reconcile failed; retrying');
      } finally {
        s.inRun = false;
      }
    }
    this.settle();
    if (this.states.some((s) => s.dirty)) this.schedule(retryIn === Infinity ? (this.opts.debounceMs ?? 10) : retryIn);
  }

  private settle(): void {
    const rev = this.programmedRevision;
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      if (this.waiters[i].rev <= rev) {
        this.waiters[i].resolve();
        this.waiters.splice(i, 1);
      }
    }
  }
}
