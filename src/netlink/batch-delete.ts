// Link deletions gathered into kernel batches. Each RTM_DELLINK blocks its sender in sendmsg
// for the device's unregistration, ~20 ms of which is one rcu_barrier() whatever the number of
// devices (see Rtnl.deleteLinks); on the agent's one thread, deleting pods one by one
// serialised those waits and stalled every other request meanwhile.
import type { LinkRef, Rtnl } from './rtnl';

interface Pending {
  ref: LinkRef;
  resolve: (existed: boolean) => void;
  reject: (e: unknown) => void;
}

export interface BatchOptions {
  /** Most links per kernel batch (default 64). */
  maxBatch?: number;
  /** How long a deletion waits for others to join it while `busy()` says more are coming. */
  gatherMs?: number;
  /** True while further deletions are likely soon (e.g. other DELs in progress). */
  busy?: () => boolean;
}

export class BatchedLinkDeleter {
  private queue: Pending[] = [];
  private readonly maxBatch: number;

  constructor(
    private readonly rtnl: Rtnl,
    private readonly opts: BatchOptions = {},
  ) {
    this.maxBatch = opts.maxBatch ?? 64;
  }

  /**
   * Deletes a link together with the others asked for before the batch goes: in the same
   * event-loop turn, or within gatherMs while busy. A lone one goes as Rtnl.deleteLink.
   * False when it did not exist.
   */
  deleteLink(ref: LinkRef): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.queue.push({ ref, resolve, reject });
      if (this.queue.length !== 1) return;
      // Under a burst, requests came in about one per deletion (the runtime's plugin
      // processes, exec'd with `ip netns exec`, wait for the same kernel RCU grace periods
      // each deletion takes), so without a wait every batch held one link.
      if (this.opts.gatherMs && this.opts.busy?.()) setTimeout(() => this.flush(), this.opts.gatherMs);
      else setImmediate(() => this.flush());
    });
  }

  private flush(): void {
    const all = this.queue;
    this.queue = [];
    for (let i = 0; i < all.length; i += this.maxBatch) {
      const batch = all.slice(i, i + this.maxBatch);
      this.rtnl.deleteLinks(batch.map((p) => p.ref)).then(
        (existed) => batch.forEach((p, j) => p.resolve(existed[j])),
        (e: unknown) => batch.forEach((p) => p.reject(e)),
      );
    }
  }
}
