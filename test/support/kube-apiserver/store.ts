// The storage under the registry, standing in for etcd: objects as JSON keyed by
// group/resource, namespace and name, one global resourceVersion that every write advances,
// and a bounded history of changes that watches replay (what etcd keeps until compaction).
import type { Obj } from './resources';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  rv: number;
  type: EventType;
  bucket: string;
  /** The object after the change; for DELETED, its last state stamped with the delete's rv. */
  object: Obj;
  /** The object before the change (MODIFIED), so a filtered watch can tell "stopped matching". */
  prev?: Obj;
}

export function objectKey(namespace: string | undefined, name: string): string {
  return `${namespace ?? ''}/${name}`;
}

export class ObjectStore {
  private rv: number;
  private buckets = new Map<string, Map<string, Obj>>();
  private history: StoreEvent[] = [];
  /** A watch may start from any rv ≥ this: every change after it is still in `history`. */
  private oldest: number;
  private subscribers = new Set<(e: StoreEvent) => void>();

  constructor(
    private readonly historySize: number,
    firstRv = 1000,
  ) {
    this.rv = firstRv;
    this.oldest = firstRv;
  }

  currentRv(): number {
    return this.rv;
  }

  oldestRv(): number {
    return this.oldest;
  }

  /** The stored object itself: callers copy before changing it. */
  get(bucket: string, namespace: string | undefined, name: string): Obj | undefined {
    return this.buckets.get(bucket)?.get(objectKey(namespace, name));
  }

  /** Objects in key order (namespace, then name), as etcd lists them. */
  list(bucket: string, namespace?: string): Obj[] {
    const b = this.buckets.get(bucket);
    if (!b) return [];
    return [...b.entries()]
      .filter(([k]) => namespace === undefined || k.startsWith(`${namespace}/`))
      .sort(([a], [b2]) => (a < b2 ? -1 : a > b2 ? 1 : 0))
      .map(([, o]) => o);
  }

  /** Stores `object` (or deletes the key when it is undefined), stamping the next rv. */
  write(bucket: string, namespace: string | undefined, name: string, object: Obj | undefined): StoreEvent {
    const key = objectKey(namespace, name);
    let b = this.buckets.get(bucket);
    if (!b) {
      b = new Map();
      this.buckets.set(bucket, b);
    }
    const prev = b.get(key);
    this.rv += 1;
    let event: StoreEvent;
    if (object === undefined) {
      if (!prev) throw new Error(`store: delete of missing ${bucket} ${key}`);
      b.delete(key);
      const last = structuredClone(prev);
      last.metadata.resourceVersion = String(this.rv);
      event = { rv: this.rv, type: 'DELETED', bucket, object: last };
    } else {
      object.metadata.resourceVersion = String(this.rv);
      b.set(key, object);
      event = { rv: this.rv, type: prev ? 'MODIFIED' : 'ADDED', bucket, object, prev };
    }
    this.history.push(event);
    if (this.history.length > this.historySize) {
      const dropped = this.history.shift()!;
      this.oldest = dropped.rv;
    }
    for (const s of this.subscribers) s(event);
    return event;
  }

  /** Changes after `rv`, or `undefined` when some of them are no longer kept. */
  since(rv: number): StoreEvent[] | undefined {
    if (rv < this.oldest) return undefined;
    return this.history.filter((e) => e.rv > rv);
  }

  /**
   * Forgets the history, as an etcd compaction does, and advances the rv once (as writes to
   * other kinds do in a real cluster): a watch from any rv seen so far gets 410, while the
   * rv a fresh list returns stays watchable.
   */
  compact(): void {
    this.rv += 1;
    this.history = [];
    this.oldest = this.rv;
  }

  subscribe(fn: (e: StoreEvent) => void): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }
}
