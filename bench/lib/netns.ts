// Pod network namespaces in bulk: one `ip -batch` per set (~1.5 ms a namespace, where an `ip`
// process each costs several), all tracked so a failed or interrupted run removes them.
import { existsSync } from 'node:fs';
import { sh } from '../../src/sandbox';
import { defer, throwIfInterrupted } from './cleanup';

export const NETNS_DIR = '/var/run/netns';

export class NetnsSet {
  private readonly live = new Set<string>();
  private readonly release: () => Promise<void>;

  constructor() {
    this.release = defer(() => this.removeAll());
  }

  create(names: string[]): string[] {
    if (names.length === 0) return [];
    throwIfInterrupted();
    for (const n of names) if (this.live.has(n)) throw new Error(`netns ${n} exists already`);
    try {
      sh('ip', ['-batch', '-'], { input: names.map((n) => `netns add ${n}\n`).join('') });
    } finally {
      // A partial batch leaves some of them: track all, removal ignores the missing ones.
      for (const n of names) this.live.add(n);
    }
    return names.map((n) => `${NETNS_DIR}/${n}`);
  }

  remove(names: string[]): void {
    const present = names.filter((n) => this.live.has(n));
    if (present.length === 0) return;
    // Twice at most: a signal to our process group can kill the first `ip` midway.
    for (let attempt = 0; attempt < 2; attempt++) {
      const left = present.filter((n) => existsSync(`${NETNS_DIR}/${n}`));
      if (left.length === 0) break;
      sh('ip', ['-force', '-batch', '-'], { input: left.map((n) => `netns del ${n}\n`).join(''), allowFail: true });
    }
    for (const n of present) this.live.delete(n);
  }

  removeAll(): void {
    this.remove([...this.live]);
  }

  /** Removes every namespace and the cleanup registration. */
  close(): Promise<void> {
    return this.release();
  }
}
