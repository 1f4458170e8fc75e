// Stable numbers for the load balancer's keys: service ids (one per Service port), backend set
// ids (one per Service port and view) and backend ids (one per address, port and protocol).
//
// A key keeps its number while it stays in use from one compile to the next. Unlike policy's
// StableNumbers (lowest free number first), a new key takes the next free number after the last
// one handed out, wrapping at the limit: a number freed by a backend that left is reused as late
// as possible, so a conntrack entry or a socket still naming the old backend (or set) does not
// find a newcomer under its number at once. `snapshot`/`restore` carry the assignment and the
// cursor across agent restarts.

/**
 * One state of an allocator's map, and the change that followed it (in place, by update()): how a
 * view taken then is answered after the map moved on. The chain runs forward only, so states no
 * view holds any more are collected.
 */
class NumbersVersion {
  next?: NumbersVersion;
  /** The change to `next`: keys that came, keys (and their numbers) that went. */
  added?: readonly string[];
  removed?: ReadonlyArray<readonly [string, number]>;
  view?: NumbersView;
  constructor(readonly map: Map<string, number>) {}
}

/**
 * The allocator's map as it was when taken, without a copy: while the map has not changed it is
 * read as it is; after, the first read makes it again from the map and the changes since.
 */
export class NumbersView implements ReadonlyMap<string, number> {
  private copy?: Map<string, number>;

  constructor(
    private readonly version: NumbersVersion,
    readonly size: number,
  ) {}

  /** The keys a view taken right after this one no longer has, or undefined when `after` is not that. */
  removedBy(after: ReadonlyMap<string, number>): string[] | undefined {
    const v = this.version;
    if (!(after instanceof NumbersView) || v.next === undefined || after.version !== v.next) return undefined;
    return (v.removed ?? []).map(([k]) => k);
  }

  private map(): Map<string, number> {
    const v = this.version;
    if (v.next === undefined) return v.map;
    if (!this.copy) {
      const changes: NumbersVersion[] = [];
      for (let at: NumbersVersion | undefined = v; at?.next; at = at.next) changes.push(at);
      const m = new Map(v.map);
      for (let i = changes.length - 1; i >= 0; i--) {
        for (const k of changes[i].added ?? []) m.delete(k);
        for (const [k, n] of changes[i].removed ?? []) m.set(k, n);
      }
      this.copy = m;
    }
    return this.copy;
  }

  get(key: string): number | undefined {
    return this.map().get(key);
  }

  has(key: string): boolean {
    return this.map().has(key);
  }

  forEach(fn: (value: number, key: string, map: ReadonlyMap<string, number>) => void, thisArg?: unknown): void {
    for (const [k, n] of this.map()) fn.call(thisArg, n, k, this);
  }

  keys(): MapIterator<string> {
    return this.map().keys();
  }

  values(): MapIterator<number> {
    return this.map().values();
  }

  entries(): MapIterator<[string, number]> {
    return this.map().entries();
  }

  [Symbol.iterator](): MapIterator<[string, number]> {
    return this.map().entries();
  }
}

export class RotatingNumbers {
  private byKey = new Map<string, number>();
  private version = new NumbersVersion(this.byKey);
  /** The next number to try for a new key. */
  private cursor: number;
  /** No number in use is above this one: while the cursor is past it, new keys need no search. */
  private top = 0;
  /** byKey iterates in number order (new keys were appended in order): the snapshot needs no sort. */
  private ordered = true;
  /** byKey was handed to a caller: copied before it changes, so what they hold stays as it was. */
  private lent = false;
  /** snapshot() as JSON, kept until the assignment changes: the agent saves after every run. */
  private json?: string;
  /** The snapshot's entries as JSON (between the brackets), while `ordered`: patched by update(), not made again. */
  private entriesJson?: string;
  /** Bumped by every change: a caller keeping its own account of keys sees that it changed under it. */
  revision = 0;

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
      if (same) {
        this.lent = true;
        return this.byKey;
      }
    }
    const next = new Map<string, number>();
    const fresh: string[] = [];
    for (const k of wanted) {
      const n = this.byKey.get(k);
      if (n === undefined) fresh.push(k);
      next.set(k, n ?? 0);
    }
    this.checkRoom(next.size);
    fresh.sort();
    const numbers = this.numbers(fresh.length, next.size - fresh.length, () => next.values());
    for (let i = 0; i < fresh.length; i++) next.set(fresh[i], numbers[i]);
    this.byKey = next;
    this.version = new NumbersVersion(next);
    this.ordered = false;
    this.entriesJson = undefined;
    this.changed();
    this.lent = true;
    return next;
  }

  /**
   * A change by difference, for a caller that keeps count of its keys: `gone` lose their numbers,
   * then `fresh` (keys without one) take the next free numbers in sorted order, as assign() with
   * the keys kept plus `fresh` would (`sorted`: the caller's array of them is in that order already,
   * and may be kept). Nothing changes when it throws.
   */
  update(fresh: Iterable<string>, gone: readonly string[], sorted = false): void {
    const add = Array.isArray(fresh) ? (fresh as string[]) : [...fresh];
    if (add.length === 0 && gone.length === 0) return;
    const kept = this.byKey.size - gone.length;
    this.checkRoom(kept + add.length);
    if (this.lent) {
      // A caller holds the map itself: changed from here on as a copy, with views of its own.
      this.byKey = new Map(this.byKey);
      this.version = new NumbersVersion(this.byKey);
      this.lent = false;
    }
    const removed = new Array<readonly [string, number]>(gone.length);
    for (let i = 0; i < gone.length; i++) {
      removed[i] = [gone[i], this.byKey.get(gone[i])!];
      this.byKey.delete(gone[i]);
    }
    if (!sorted) add.sort();
    const fast = this.top < this.cursor && this.cursor + add.length - 1 <= this.limit;
    const numbers = this.numbers(add.length, kept, () => this.byKey.values());
    for (let i = 0; i < add.length; i++) this.byKey.set(add[i], numbers[i]);
    // Appended in rising numbers above every number in use: still in number order.
    if (!fast) {
      this.ordered = false;
      this.entriesJson = undefined;
    } else if (this.entriesJson !== undefined) this.entriesJson = patchEntriesJson(this.entriesJson, removed, add, numbers);
    const v = this.version;
    v.added = add;
    v.removed = removed;
    this.version = v.next = new NumbersVersion(this.byKey);
    this.changed();
  }

  /** `count` numbers for new keys, from the cursor on, skipping those in use. */
  private numbers(count: number, inUse: number, used: () => Iterable<number>): number[] {
    const out = new Array<number>(count);
    let c = this.cursor;
    if (this.top < c && c + count - 1 <= this.limit) {
      // Every number in use is below the cursor and the run does not wrap: no search.
      for (let i = 0; i < count; i++) out[i] = c++;
      if (count > 0) this.top = c - 1;
    } else {
      const taken = new Set<number>();
      if (inUse > 0) for (const n of used()) if (n !== 0) taken.add(n);
      for (let i = 0; i < count; i++) {
        while (taken.has(c)) c = c === this.limit ? this.first : c + 1;
        out[i] = c;
        taken.add(c);
        if (c > this.top) this.top = c;
        c = c === this.limit ? this.first : c + 1;
      }
    }
    if (c > this.limit) c = this.first;
    this.cursor = c;
    return out;
  }

  private checkRoom(wanted: number): void {
    const span = this.limit - this.first + 1;
    if (wanted > span) throw new Error(`${this.what}: ${wanted} wanted, only ${span} numbers exist`);
  }

  private changed(): void {
    this.json = undefined;
    this.revision++;
  }

  get(key: string): number | undefined {
    return this.byKey.get(key);
  }

  has(key: string): boolean {
    return this.byKey.has(key);
  }

  keys(): IterableIterator<string> {
    return this.byKey.keys();
  }

  /** Every key and its number, as a map the caller may keep: it is never changed in place. */
  map(): ReadonlyMap<string, number> {
    this.lent = true;
    return this.byKey;
  }

  /** map() without a copy ever: a view that answers as the map was when taken (the same view while it is unchanged). */
  view(): ReadonlyMap<string, number> {
    const v = this.version;
    return (v.view ??= new NumbersView(v, this.byKey.size));
  }

  get size(): number {
    return this.byKey.size;
  }

  snapshot(): { cursor: number; entries: Array<[string, number]> } {
    const entries = [...this.byKey];
    return { cursor: this.cursor, entries: this.ordered ? entries : entries.sort((a, b) => a[1] - b[1]) };
  }

  /** JSON.stringify(snapshot()), computed once per assignment (sorting 20,000 entries costs ~10 ms). */
  snapshotJson(): string {
    if (this.json !== undefined) return this.json;
    if (!this.ordered) return (this.json = JSON.stringify(this.snapshot()));
    // JSON.stringify(snapshot())'s text, its entries kept from one change to the next.
    this.entriesJson ??= JSON.stringify([...this.byKey]).slice(1, -1);
    return (this.json = `{"cursor":${this.cursor},"entries":[${this.entriesJson}]}`);
  }

  load(s: { cursor?: unknown; entries?: unknown }): void {
    if (!Number.isInteger(s.cursor) || (s.cursor as number) < this.first || (s.cursor as number) > this.limit || !Array.isArray(s.entries)) {
      throw new Error(`${this.what}: bad snapshot`);
    }
    const byKey = new Map<string, number>();
    const used = new Set<number>();
    let top = 0;
    let ordered = true;
    for (const e of s.entries as unknown[]) {
      const [k, n] = Array.isArray(e) ? (e as [unknown, unknown]) : [undefined, undefined];
      if (typeof k !== 'string' || !Number.isInteger(n) || (n as number) < this.first || (n as number) > this.limit || used.has(n as number) || byKey.has(k)) {
        throw new Error(`${this.what}: bad snapshot entry ${JSON.stringify(e)}`);
      }
      byKey.set(k, n as number);
      used.add(n as number);
      if ((n as number) < top) ordered = false;
      else top = n as number;
    }
    this.byKey = byKey;
    this.version = new NumbersVersion(byKey);
    this.cursor = s.cursor as number;
    this.top = top;
    this.ordered = ordered;
    this.entriesJson = undefined;
    this.lent = false;
    this.changed();
  }
}

/**
 * Entries JSON (`["key",n],…`, in number order) after `removed` went and `added` came with
 * `numbers` (above every number in it): each removed entry cut out where it is (its text occurs
 * once: a key's quote inside JSON text is escaped), the new ones appended. Undefined (make it
 * again) when many went.
 */
function patchEntriesJson(text: string, removed: ReadonlyArray<readonly [string, number]>, added: readonly string[], numbers: readonly number[]): string | undefined {
  if (removed.length > 16) return undefined;
  for (const [k, n] of removed) {
    const item = JSON.stringify([k, n]);
    const at = text.indexOf(item);
    if (at < 0) return undefined;
    const end = at + item.length;
    // The entry and the comma after it, or before it when it is the last.
    text = end < text.length ? text.slice(0, at) + text.slice(end + 1) : text.slice(0, Math.max(0, at - 1));
  }
  if (added.length === 0) return text;
  const more = added.map((k, i) => JSON.stringify([k, numbers[i]])).join(',');
  return text.length > 0 ? `${text},${more}` : more;
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
