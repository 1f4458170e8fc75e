// The agent's cache of desired-state objects, whatever source fills it (a manifest directory,
// the Kubernetes API). Sources write incrementally (`upsert`, `remove`) or replace their whole
// contribution at once (`replaceFrom`); listeners hear only real changes, so reconcilers are
// woken by diffs and then recompute their full desired state from here.
//
// Every change bumps the store's revision; each object remembers the revision that last changed
// it and the resourceVersion its source gave it. Reconcilers report the revision they have
// written into the maps ("programmed revision"), so a caller can wait until a change holds.
import { KelpObject, Kind, objectKey } from './objects';

export interface StoreEvent {
  type: 'upsert' | 'delete';
  key: string;
  object: KelpObject;
  /** The store revision this change made. */
  revision: number;
}
export type StoreListener = (events: StoreEvent[]) => void;

interface Entry {
  object: KelpObject;
  source: string;
  revision: number;
}

/**
 * Whether two objects say the same thing as JSON: values compared as JSON.stringify would write
 * them (a property holding undefined is absent), object keys in any order, and no `resourceVersion`
 * at any depth: every write bumps it, and a write that changed nothing kelp reads (a status field
 * it ignores) must not wake reconcilers. Walks both without building strings: a bulk apply
 * compares 20,000 objects, and only those whose key the store already holds.
 */
export function sameJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) {
      // JSON writes an undefined array element as null.
      if (!sameJson(a[i] ?? null, b[i] ?? null)) return false;
    }
    return true;
  }
  if (Array.isArray(b)) return false;
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  let n = 0;
  for (const k in x) {
    if (!Object.prototype.hasOwnProperty.call(x, k) || x[k] === undefined || k === 'resourceVersion') continue;
    n++;
    if (!Object.prototype.hasOwnProperty.call(y, k) || !sameJson(x[k], y[k])) return false;
  }
  for (const k in y) {
    if (Object.prototype.hasOwnProperty.call(y, k) && y[k] !== undefined && k !== 'resourceVersion') n--;
  }
  return n === 0;
}

export class ObjectStore {
  private readonly objects = new Map<string, Entry>();
  /**
   * The same entries by kind, each map in the order `objects` holds them (a key's kind never
   * changes, and both maps are set and deleted together): list() of one kind reads only its own,
   * not the 20,000 entries of every kind, three times per services run.
   */
  private readonly byKind = new Map<string, Map<string, Entry>>();
  private readonly listeners = new Set<{ fn: StoreListener; kinds?: ReadonlySet<string> }>();
  /** The highest resourceVersion each source has delivered (a watch resumes from it). */
  private readonly sourceVersions = new Map<string, string>();
  private rev = 0;

  /** The revision of the last change (0: nothing yet). */
  get revision(): number {
    return this.rev;
  }

  /** Hears every batch of changes, or only those of `kinds`. Returns the unsubscribe call. */
  subscribe(fn: StoreListener, kinds?: readonly Kind[]): () => void {
    const l = { fn, kinds: kinds ? new Set<string>(kinds) : undefined };
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  get<K extends Kind>(kind: K, namespace: string | undefined, name: string): Extract<KelpObject, { kind: K }> | undefined {
    return this.objects.get(`${kind}/${namespace ?? ''}/${name}`)?.object as Extract<KelpObject, { kind: K }> | undefined;
  }

  list<K extends Kind>(kind: K): Array<Extract<KelpObject, { kind: K }>> {
    const own = this.byKind.get(kind);
    const out = new Array<Extract<KelpObject, { kind: K }>>(own?.size ?? 0);
    if (!own) return out;
    let i = 0;
    for (const e of own.values()) out[i++] = e.object as Extract<KelpObject, { kind: K }>;
    return out;
  }

  /** The revision that last changed an object (undefined: not in the store). */
  revisionOf(kind: Kind, namespace: string | undefined, name: string): number | undefined {
    return this.objects.get(`${kind}/${namespace ?? ''}/${name}`)?.revision;
  }

  /** The last resourceVersion `source` recorded with `noteVersion`. */
  sourceVersion(source: string): string | undefined {
    return this.sourceVersions.get(source);
  }

  noteVersion(source: string, resourceVersion: string): void {
    this.sourceVersions.set(source, resourceVersion);
  }

  /** Adds or replaces one object of `source`; returns the change, or undefined when nothing changed. */
  upsert(source: string, object: KelpObject): StoreEvent | undefined {
    const ev = this.put(source, object);
    if (ev) this.emit([ev]);
    return ev;
  }

  /** Removes one object of `source`; returns the change, or undefined when it was not there. */
  remove(source: string, kind: Kind, namespace: string | undefined, name: string): StoreEvent | undefined {
    const ev = this.drop(source, `${kind}/${namespace ?? ''}/${name}`);
    if (ev) this.emit([ev]);
    return ev;
  }

  /**
   * Adds or replaces `put` and removes the objects with keys `remove`, all of `source`, as one
   * batch: listeners hear the real changes once (a bulk apply of 20,000 objects is one wake-up,
   * not 20,000). `put` may come keyed by store key (objectKey), as a caller that has the keys
   * already gives it. Returns the changes.
   */
  update(source: string, put: readonly KelpObject[] | ReadonlyMap<string, KelpObject>, remove: readonly string[] = []): StoreEvent[] {
    const events: StoreEvent[] = [];
    for (const key of remove) {
      const ev = this.drop(source, key);
      if (ev) events.push(ev);
    }
    const keyed = Array.isArray(put) ? undefined : (put as ReadonlyMap<string, KelpObject>);
    for (const [key, object] of keyed ?? (put as readonly KelpObject[]).map((o) => [objectKey(o), o] as const)) {
      const ev = this.put(source, object, key);
      if (ev) events.push(ev);
    }
    this.emit(events);
    return events;
  }

  /** Replaces everything `source` contributed with `objects`; returns the changes applied. */
  replaceFrom(source: string, objects: KelpObject[]): StoreEvent[] {
    const next = new Map<string, KelpObject>();
    for (const o of objects) next.set(objectKey(o), o);
    const events: StoreEvent[] = [];
    for (const [key, cur] of [...this.objects]) {
      if (cur.source === source && !next.has(key)) {
        const ev = this.drop(source, key);
        if (ev) events.push(ev);
      }
    }
    for (const object of next.values()) {
      const ev = this.put(source, object);
      if (ev) events.push(ev);
    }
    this.emit(events);
    return events;
  }

  private put(source: string, object: KelpObject, key = objectKey(object)): StoreEvent | undefined {
    const cur = this.objects.get(key);
    // A key the store does not hold yet is a change without looking at the object.
    if (cur && cur.source === source && sameJson(cur.object, object)) return undefined;
    const revision = ++this.rev;
    const entry = { object, source, revision };
    this.objects.set(key, entry);
    let own = this.byKind.get(object.kind);
    if (!own) this.byKind.set(object.kind, (own = new Map()));
    own.set(key, entry);
    return { type: 'upsert', key, object, revision };
  }

  private drop(source: string, key: string): StoreEvent | undefined {
    const cur = this.objects.get(key);
    // Another source's object of the same name is not this source's to remove.
    if (!cur || cur.source !== source) return undefined;
    this.objects.delete(key);
    this.byKind.get(cur.object.kind)?.delete(key);
    return { type: 'delete', key, object: cur.object, revision: ++this.rev };
  }

  private emit(events: StoreEvent[]): void {
    if (events.length === 0) return;
    for (const l of this.listeners) {
      const mine = l.kinds ? events.filter((e) => l.kinds!.has(e.object.kind)) : events;
      if (mine.length > 0) l.fn(mine);
    }
  }
}
