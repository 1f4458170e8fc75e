// Stable numbers for the load balancer's keys: service ids (one per Service port), backend set
// ids (one per Service port and view) and backend ids (one per address, port and protocol).
//
// A key keeps its number while it stays in use from one compile to the next. Unlike policy's
// StableNumbers (lowest free number first), a new key takes the next free number after the last
// one handed out, wrapping at the limit: a number freed by a backend that left is reused as late
// as possible, so a conntrack entry or a socket still naming the old backend (or set) does not
// find a newcomer under its number at once. `snapshot`/`restore` carry the assignment and the
// cursor across agent restarts.

export class RotatingNumbers {
  private byKey = new Map<string, number>();
  private used = new Set<number>();
  /** The next number to try for a new key. */
  private cursor: number;
  /** snapshot() as JSON, kept until the assignment changes: the agent saves after every run. */
  private json?: string;

  constructor(
    readonly first: number,
    readonly limit: number,
    private readonly what: string,
  ) {
    this.cursor = first;
  }

  /**
   * Numbers for exactly `keys`: kept where a key had one; new keys, in sorted order (so the
   * answer does not depend on the order keys are listed in), take the next free numbers.
   */
  assign(keys: Iterable<string>): ReadonlyMap<string, number> {
    const wanted = keys instanceof Set ? (keys as Set<string>) : new Set(keys);
    // Nothing new and nothing gone (a compile after a small change, mostly): the same map. It is
    // never changed in place, so a caller may keep it as a snapshot.
    if (wanted.size === this.byKey.size) {
      let same = true;
      for (const k of wanted) {
        if (!this.byKey.has(k)) {
          same = false;
          break;
        }
      }
      if (same) return this.byKey;
    }
    const next = new Map<string, number>();
    const fresh: string[] = [];
    for (const k of wanted) {
      const n = this.byKey.get(k);
      if (n === undefined) {
        next.set(k, 0);
        fresh.push(k);
      } else {
        next.set(k, n);
      }
    }
    const used = new Set<number>();
    for (const n of next.values()) if (n !== 0) used.add(n);
    const span = this.limit - this.first + 1;
    if (used.size + fresh.length > span) throw new Error(`${this.what}: ${used.size + fresh.length} wanted, only ${span} numbers exist`);
    fresh.sort();
    let c = this.cursor;
    for (const k of fresh) {
      while (used.has(c)) c = c === this.limit ? this.first : c + 1;
      next.set(k, c);
      used.add(c);
      c = c === this.limit ? this.first : c + 1;
    }
    this.cursor = c;
    this.byKey = next;
    this.used = used;
    this.json = undefined;
    return next;
  }

  get(key: string): number | undefined {
    return this.byKey.get(key);
  }

  get size(): number {
    return this.used.size;
  }

  snapshot(): { cursor: number; entries: Array<[string, number]> } {
    return { cursor: this.cursor, entries: [...this.byKey].sort((a, b) => a[1] - b[1]) };
  }

  /** JSON.stringify(snapshot()), computed once per assignment (sorting 20,000 entries costs ~10 ms). */
  snapshotJson(): string {
    return (this.json ??= JSON.stringify(this.snapshot()));
  }

  load(s: { cursor?: unknown; entries?: unknown }): void {
    if (!Number.isInteger(s.cursor) || (s.cursor as number) < this.first || (s.cursor as number) > this.limit || !Array.isArray(s.entries)) {
      throw new Error(`${this.what}: bad snapshot`);
    }
    const byKey = new Map<string, number>();
    const used = new Set<number>();
    for (const e of s.entries as unknown[]) {
      const [k, n] = Array.isArray(e) ? (e as [unknown, unknown]) : [undefined, undefined];
      if (typeof k !== 'string' || !Number.isInteger(n) || (n as number) < this.first || (n as number) > this.limit || used.has(n as number) || byKey.has(k)) {
        throw new Error(`${this.what}: bad snapshot entry ${JSON.stringify(e)}`);
      }
      byKey.set(k, n as number);
      used.add(n as number);
    }
    this.byKey = byKey;
    this.used = used;
    this.cursor = s.cursor as number;
    this.json = undefined;
  }
}

/**
 * Id ranges: the 32-bit fields of bpf/lib/lb.h (svc_id, set_id, backend_id). 0 is never an id
 * (setId 0 is "no set" in a frontend with count 0).
 */
export const MAX_SVC_ID = 0xffffffff;
export const MAX_SET_ID = 0xffffffff;
export const MAX_BACKEND_ID = 0xffffffff;

export class ServiceIds {
  readonly svc = new RotatingNumbers(1, MAX_SVC_ID, 'service ids');
  readonly sets = new RotatingNumbers(1, MAX_SET_ID, 'backend set ids');
  readonly backends = new RotatingNumbers(1, MAX_BACKEND_ID, 'backend ids');

  /** JSON the agent persists; `restore` takes it back. */
  snapshot(): string {
    // JSON.stringify's own output, from the parts that did not change kept as text.
    return `{"version":1,"svc":${this.svc.snapshotJson()},"sets":${this.sets.snapshotJson()},"backends":${this.backends.snapshotJson()}}`;
  }

  restore(json: string): void {
    const s = JSON.parse(json) as { version?: unknown; svc?: object; sets?: object; backends?: object };
    if (s.version !== 1 || !s.svc || !s.sets || !s.backends) throw new Error('service ids: not a snapshot of version 1');
    this.svc.load(s.svc);
    this.sets.load(s.sets);
    this.backends.load(s.backends);
  }
}
