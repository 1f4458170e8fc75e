// CNI ADD as a transaction: every acquired resource registers its undo; unless the ADD
// commits, the undos run newest first. An undo that fails is logged and the rest still run.
import type { Logger } from '../log';

export class Transaction {
  private undos: Array<{ what: string; fn: () => unknown }> = [];

  constructor(private readonly log: Logger) {}

  onRollback(what: string, fn: () => unknown): void {
    this.undos.push({ what, fn });
  }

  commit(): void {
    this.undos = [];
  }

  async rollback(): Promise<void> {
    const undos = this.undos.reverse();
    this.undos = [];
    for (const u of undos) {
      try {
        await u.fn();
      } catch (err) {
        this.log.error({ err, step: u.what }, 'rollback step failed');
      }
    }
  }
}

/** Serialises async work per key (one attachment at a time), without blocking other keys. */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();
  /** The last exclusive section: every run started after it waits for it. */
  private gate: Promise<unknown> = Promise.resolve();

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = Promise.all([this.tails.get(key), this.gate]);
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }

  /**
   * Runs `fn` alone: after every run already started (whatever its key) has settled, and before
   * any run started later. A reconciler that reads all records and writes their maps uses it, so
   * it never sees an ADD or DEL half done.
   */
  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const prev = Promise.all([...this.tails.values(), this.gate]);
    const next = prev.then(fn, fn);
    this.gate = next.catch(() => undefined);
    return next;
  }
}
