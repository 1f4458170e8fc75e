// The agent's cache of desired-state objects, whatever source fills it. Sources replace
// their whole contribution at once (`replaceFrom`); listeners hear only real changes, so
// reconcilers are woken by diffs and then recompute their full desired state.
import { KelpObject, Kind, objectKey } from './objects';

export type StoreEvent = { type: 'upsert' | 'delete'; key: string; object: KelpObject };
export type StoreListener = (events: StoreEvent[]) => void;

export class ObjectStore {
  private readonly objects = new Map<string, { object: KelpObject; source: string; json: string }>();
  private readonly listeners = new Set<StoreListener>();

  subscribe(fn: StoreListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  get<K extends Kind>(kind: K, namespace: string | undefined, name: string): Extract<KelpObject, { kind: K }> | undefined {
    return this.objects.get(`${kind}/${namespace ?? ''}/${name}`)?.object as Extract<KelpObject, { kind: K }> | undefined;
  }

  list<K extends Kind>(kind: K): Array<Extract<KelpObject, { kind: K }>> {
    const out: Array<Extract<KelpObject, { kind: K }>> = [];
    for (const { object } of this.objects.values()) if (object.kind === kind) out.push(object as Extract<KelpObject, { kind: K }>);
    return out;
  }

  /** Replaces everything `source` contributed with `objects`; returns the changes applied. */
  replaceFrom(source: string, objects: KelpObject[]): StoreEvent[] {
    const next = new Map<string, KelpObject>();
    for (const o of objects) next.set(objectKey(o), o);
    const events: StoreEvent[] = [];
    for (const [key, cur] of this.objects) {
      if (cur.source === source && !next.has(key)) {
        this.objects.delete(key);
        events.push({ type: 'delete', key, object: cur.object });
      }
    }
    for (const [key, object] of next) {
      const json = JSON.stringify(object);
      const cur = this.objects.get(key);
      if (cur && cur.json === json && cur.source === source) continue;
      this.objects.set(key, { object, source, json });
      events.push({ type: 'upsert', key, object });
    }
    if (events.length > 0) for (const l of this.listeners) l(events);
    return events;
  }
}
