// kelp apply / kelp delete into the manifest directory (src/sources/manifests-apply.ts): many new
// objects go into a few bulk files, one object defined in one place, and the directory alone
// (read by a fresh ManifestDir) always gives what the store holds.
import { afterAll, describe, expect, it } from 'vitest';
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ManifestDir } from '../../src/sources/manifests';
import { applyToDir, BULK_MAX, BULK_MIN, isBulkFile } from '../../src/sources/manifests-apply';
import { ObjectStore } from '../../src/sources/store';
import { KelpObject, objectKey, validateObject } from '../../src/sources/objects';
import type { ServiceObject } from '../../src/sources/objects/service';
import { silentLogger } from '../../src/log';
import { cleanupAll, tempDir } from '../support/netns';

afterAll(cleanupAll);

const svc = (i: number, port = 80): KelpObject =>
  validateObject({ apiVersion: 'v1', kind: 'Service', metadata: { name: `svc-${i}`, namespace: 'default' }, spec: { clusterIP: `10.96.${i >> 8}.${i & 255}`, ports: [{ port, targetPort: 8080 }] } });

/** Runs `fn` on a fresh manifest directory and the store it feeds, stopped afterwards whatever happens. */
async function withDir(fn: (w: { dir: string; store: ObjectStore; md: ManifestDir }) => Promise<void>): Promise<void> {
  const dir = tempDir();
  const store = new ObjectStore();
  const md = new ManifestDir(dir, store, silentLogger);
  await md.start();
  try {
    await fn({ dir, store, md });
  } finally {
    await md.stop();
  }
}

const apply = (md: ManifestDir, store: ObjectStore, objects: KelpObject[], remove = false) =>
  md.writing(() => applyToDir(md, objects, { remove, exists: (o) => store.get(o.kind, o.metadata.namespace, o.metadata.name) !== undefined }));

/** What a fresh agent reading the directory would hold: the store content, key → object. */
async function reread(dir: string): Promise<Map<string, KelpObject>> {
  const store = new ObjectStore();
  const md = new ManifestDir(dir, store, silentLogger);
  await md.start();
  await md.stop();
  return new Map(store.list('Service').map((o) => [objectKey(o), o]));
}

const services = (store: ObjectStore) => new Map(store.list('Service').map((o) => [objectKey(o), o]));

describe('applyToDir', () => {
  it('many new objects: a few bulk files, the store and a re-read directory agree; one changed: rewritten in its bulk file; one deleted: taken out of it', () =>
    withDir(async ({ dir, store, md }) => {
      const n = 2 * BULK_MAX + 7;
      const { results } = await apply(md, store, Array.from({ length: n }, (_, i) => svc(i)));
      expect(results).toHaveLength(n);
      expect(results.every((r) => r.action === 'created')).toBe(true);
      const files = readdirSync(dir).filter((f) => !f.startsWith('.'));
      expect(files).toHaveLength(3);
      expect(files.every(isBulkFile)).toBe(true);
      expect(store.list('Service')).toHaveLength(n);
      expect(await reread(dir)).toEqual(services(store));

      // A change of one: the same files, the object rewritten in place.
      const { results: changed } = await apply(md, store, [svc(5, 81)]);
      expect(changed).toEqual([{ key: 'Service/default/svc-5', action: 'configured' }]);
      expect(readdirSync(dir).filter((f) => !f.startsWith('.')).sort()).toEqual(files.sort());
      expect(store.get('Service', 'default', 'svc-5')?.spec.ports[0].port).toBe(81);
      expect(md.filesDefining('Service/default/svc-5')).toHaveLength(1);
      expect(await reread(dir)).toEqual(services(store));

      // kelp delete of one: gone from its bulk file, the others stay.
      await apply(md, store, [svc(6)], true);
      expect(store.get('Service', 'default', 'svc-6')).toBeUndefined();
      expect(store.list('Service')).toHaveLength(n - 1);
      expect(md.filesDefining('Service/default/svc-6')).toEqual([]);
      expect(await reread(dir)).toEqual(services(store));
    }));

  it('a bulk file emptied by deletes is removed; a few new objects get a file each, as before', () =>
    withDir(async ({ dir, store, md }) => {
      const objs = Array.from({ length: BULK_MIN }, (_, i) => svc(i));
      await apply(md, store, objs);
      expect(readdirSync(dir).filter((f) => !f.startsWith('.'))).toHaveLength(1);
      await apply(md, store, objs, true);
      expect(readdirSync(dir).filter((f) => !f.startsWith('.'))).toEqual([]);
      expect(store.list('Service')).toEqual([]);

      await apply(md, store, [svc(1), svc(2)]);
      expect(readdirSync(dir).filter((f) => !f.startsWith('.')).sort()).toEqual(['Service_default_svc-1.json', 'Service_default_svc-2.json']);
      expect(await reread(dir)).toEqual(services(store));
    }));

  it('an object already in a file of its own stays there when it comes again in a bulk request; a hand-made duplicate in two bulk files is folded into one', () =>
    withDir(async ({ dir, store, md }) => {
      await apply(md, store, [svc(0)]);
      await apply(md, store, Array.from({ length: BULK_MIN + 1 }, (_, i) => svc(i, 90)));
      expect(md.filesDefining('Service/default/svc-0')).toEqual(['Service_default_svc-0.json']);
      expect(store.get('Service', 'default', 'svc-0')?.spec.ports[0].port).toBe(90);
      expect(await reread(dir)).toEqual(services(store));

      // A copy of a bulk file under another bulk name (a hand edit): the next apply leaves one definition.
      const bulkName = md.filesDefining('Service/default/svc-1')[0];
      const copy = bulkName.replace(/-0\.json$/, '-9.json');
      writeFileSync(path.join(dir, copy), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [svc(1, 70)] }));
      await md.scan();
      expect(md.filesDefining('Service/default/svc-1')).toHaveLength(2);
      await apply(md, store, [svc(1, 71)]);
      expect(md.filesDefining('Service/default/svc-1')).toEqual([bulkName]);
      expect(store.get('Service', 'default', 'svc-1')?.spec.ports[0].port).toBe(71);
      expect(readdirSync(dir)).not.toContain(copy);
      expect(await reread(dir)).toEqual(services(store));
    }));

  it('a repeated bulk apply rewrites no file, unless one was broken by hand since: that one is written again whole', () =>
    withDir(async ({ dir, store, md }) => {
      const objs = Array.from({ length: BULK_MAX + 1 }, (_, i) => svc(i));
      await apply(md, store, objs);
      const names = readdirSync(dir).filter((f) => !f.startsWith('.')).sort();
      expect(names).toHaveLength(2);
      const mtimes = () => names.map((n) => statSync(path.join(dir, n)).mtimeMs);
      const before = mtimes();
      const rev = store.revision;
      await apply(md, store, Array.from({ length: BULK_MAX + 1 }, (_, i) => svc(i)));
      expect(mtimes()).toEqual(before);
      expect(store.revision).toBe(rev);

      // A bulk file cut short by hand: rejected, the store keeps its last good version...
      writeFileSync(path.join(dir, names[1]), '{"apiVersion":"v1","kind":"List","items":[');
      await md.scan();
      expect(md.problems.has(names[1])).toBe(true);
      expect(store.list('Service')).toHaveLength(BULK_MAX + 1);
      // ...and the same apply again repairs the file, so that a restarted agent reads it all back.
      await apply(md, store, objs);
      expect(md.problems.size).toBe(0);
      expect(store.revision).toBe(rev);
      expect(await reread(dir)).toEqual(services(store));
    }));

  it('concurrent applies do not lose each other: new objects of two requests in the same millisecond, and changes of two requests to one bulk file, all reach the directory', () =>
    withDir(async ({ dir, store, md }) => {
      // Two requests of new objects started together (one tick apart at most): each its own bulk files.
      const a = Array.from({ length: BULK_MIN + 10 }, (_, i) => svc(i));
      const b = Array.from({ length: BULK_MIN + 10 }, (_, i) => svc(1000 + i));
      await Promise.all([apply(md, store, a), apply(md, store, b)]);
      expect(store.list('Service')).toHaveLength(a.length + b.length);
      expect(await reread(dir)).toEqual(services(store));
      // Two requests changing different objects of one bulk file, started together: both changes kept.
      const c = Array.from({ length: 20 }, (_, i) => svc(i, 81));
      const d = Array.from({ length: 20 }, (_, i) => svc(40 + i, 82));
      await Promise.all([apply(md, store, c), apply(md, store, d)]);
      expect(store.get('Service', 'default', 'svc-3')?.spec.ports[0].port).toBe(81);
      expect(store.get('Service', 'default', 'svc-43')?.spec.ports[0].port).toBe(82);
      const again = await reread(dir);
      const port = (key: string) => (again.get(key) as ServiceObject | undefined)?.spec.ports[0].port;
      expect(port('Service/default/svc-3')).toBe(81);
      expect(port('Service/default/svc-43')).toBe(82);
      expect(again).toEqual(services(store));
    }));
});
