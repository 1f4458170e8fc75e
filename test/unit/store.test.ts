// The object store (src/sources/store.ts): listeners hear only real changes, and a batch of
// them (`update`) once; what counts as a change is the object as JSON without resourceVersion.
import { describe, expect, it } from 'vitest';
import { ObjectStore, sameJson, StoreEvent } from '../../src/sources/store';
import { KelpObject, objectKey, validateObject } from '../../src/sources/objects';
import { Rng } from '../support/rng';

const svc = (i: number, port = 80, resourceVersion?: string): KelpObject =>
  validateObject({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: `svc-${i}`, namespace: 'default', ...(resourceVersion ? { resourceVersion } : {}) },
    spec: { clusterIP: `10.96.${i >> 8}.${i & 255}`, ports: [{ port, targetPort: 8080 }] },
  });

function heard(store: ObjectStore): StoreEvent[][] {
  const batches: StoreEvent[][] = [];
  store.subscribe((events) => batches.push(events));
  return batches;
}

describe('sameJson', () => {
  it('equal as JSON.stringify would write them, resourceVersion aside', () => {
    const table: Array<[unknown, unknown, boolean]> = [
      [{ a: 1, b: [1, 2] }, { b: [1, 2], a: 1 }, true], // key order does not matter
      [{ a: 1, b: undefined }, { a: 1 }, true], // an undefined property is absent
      [{ a: 1 }, { a: 1, b: undefined }, true],
      [{ a: 1 }, { a: 1, b: null }, false], // null is a value
      [[1, undefined], [1, null], true], // JSON writes an undefined element as null
      [[1, 2], [2, 1], false],
      [[1, 2], [1, 2, 3], false],
      [{ a: [] }, { a: {} }, false],
      [{ a: { b: { c: 'x' } } }, { a: { b: { c: 'y' } } }, false],
      [{ a: '1' }, { a: 1 }, false],
      [{ metadata: { name: 'n', resourceVersion: '1' } }, { metadata: { name: 'n', resourceVersion: '2' } }, true],
      [{ metadata: { name: 'n', resourceVersion: '1' } }, { metadata: { name: 'n' } }, true],
      [{ spec: { x: { resourceVersion: 'a' } } }, { spec: { x: {} } }, true], // at any depth, as the old replacer
      [{ a: 1 }, { a: 1, c: 2 }, false],
      [{ a: 1, c: 2 }, { a: 1 }, false],
      [null, null, true],
      [null, {}, false],
      [0, -0, true],
    ];
    for (const [a, b, same] of table) {
      expect(sameJson(a, b), `${JSON.stringify(a)} vs ${JSON.stringify(b)}`).toBe(same);
      expect(sameJson(b, a), `${JSON.stringify(b)} vs ${JSON.stringify(a)}`).toBe(same);
    }
  });
});

describe('ObjectStore', () => {
  it('update: one batch per call, with only the real changes; an unchanged repeat is silent', () => {
    const store = new ObjectStore();
    const batches = heard(store);
    const objs = Array.from({ length: 2000 }, (_, i) => svc(i));
    const created = store.update('m', objs);
    expect(created).toHaveLength(2000);
    expect(batches).toHaveLength(1);
    expect(store.revision).toBe(2000);

    // The same content again, as new objects (a re-apply parses afresh), resourceVersion bumped: nothing.
    expect(store.update('m', Array.from({ length: 2000 }, (_, i) => svc(i, 80, '7')))).toEqual([]);
    expect(batches).toHaveLength(1);
    expect(store.revision).toBe(2000);

    // One changed among 2,000, one removed: one batch of two events.
    const again = Array.from({ length: 2000 }, (_, i) => svc(i, i === 1234 ? 81 : 80)).filter((_, i) => i !== 5);
    const events = store.update('m', again, ['Service/default/svc-5']);
    expect(events.map((e) => [e.type, e.key, e.revision])).toEqual([
      ['delete', 'Service/default/svc-5', 2001],
      ['upsert', 'Service/default/svc-1234', 2002],
    ]);
    expect(batches).toHaveLength(2);
    expect(store.revisionOf('Service', 'default', 'svc-1234')).toBe(2002);
    expect(store.revisionOf('Service', 'default', 'svc-0')).toBe(1);
  });

  it("another source's object of the same key is a change, and not removed by this source", () => {
    const store = new ObjectStore();
    store.upsert('a', svc(1));
    const batches = heard(store);
    expect(store.update('b', [svc(1)])).toHaveLength(1);
    expect(store.update('a', [], ['Service/default/svc-1'])).toEqual([]);
    expect(store.get('Service', 'default', 'svc-1')).toBeDefined();
    expect(batches).toHaveLength(1);
  });

  it('upsert and replaceFrom compare the same way: a resourceVersion alone is no change', () => {
    const store = new ObjectStore();
    store.replaceFrom('m', [svc(1, 80, '1'), svc(2)]);
    const batches = heard(store);
    expect(store.upsert('m', svc(1, 80, '2'))).toBeUndefined();
    expect(store.replaceFrom('m', [svc(1, 80, '3'), svc(2)])).toEqual([]);
    expect(store.upsert('m', svc(1, 81))?.revision).toBe(3);
    expect(batches).toHaveLength(1);
  });

  it('list(kind): the objects of that kind in the order the whole store holds them, through updates, removals and re-adds', () => {
    const store = new ObjectStore();
    const r = new Rng(7);
    const slice = (i: number, v: number): KelpObject =>
      validateObject({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: `svc-${i}-a`, namespace: 'default', labels: { 'kubernetes.io/service-name': `svc-${i}` } },
        addressType: 'IPv4',
        endpoints: [{ addresses: [`10.1.${v & 255}.${i & 255}`] }],
      });
    // What list() answered before it had an index: every entry, filtered by kind, in store order.
    const all = new Map<string, KelpObject>();
    for (let step = 0; step < 400; step++) {
      const i = r.int(40);
      const o = r.int(2) === 0 ? svc(i, 80 + r.int(3)) : slice(i, r.int(3));
      const key = objectKey(o);
      const source = r.int(5) === 0 ? 'b' : 'a';
      if (r.int(3) === 0) {
        if (store.remove(source, o.kind, 'default', o.metadata.name)) all.delete(key);
      } else if (store.upsert(source, o)) all.set(key, o);
      for (const kind of ['Service', 'EndpointSlice', 'Node'] as const) {
        expect(store.list(kind), `step ${step} ${kind}`).toEqual([...all.values()].filter((x) => x.kind === kind));
      }
    }
    expect(store.list('Service').length).toBeGreaterThan(0);
    expect(store.list('EndpointSlice').length).toBeGreaterThan(0);
  });
});
