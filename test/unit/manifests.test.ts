import { describe, expect, it, afterAll } from 'vitest';
import { writeFileSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { parseManifests, ManifestDir } from '../../src/sources/manifests';
import { ObjectStore, StoreEvent } from '../../src/sources/store';
import { validateObject, ManifestError } from '../../src/sources/objects';
import { silentLogger } from '../../src/log';
import { cleanupAll, tempDir } from '../support/netns';

afterAll(cleanupAll);

const pod = (extra = '') => `apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  labels:
    app: web
${extra}`;

describe('manifest validation', () => {
  it('accepts a Pod and defaults its namespace', () => {
    const [p] = parseManifests('apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {x: y}}\n', 'f.yaml');
    expect(p).toMatchObject({ kind: 'Pod', metadata: { name: 'a', namespace: 'default', labels: { x: 'y' } } });
  });

  it('parses multi-document YAML, JSON and List', () => {
    const multi = parseManifests(`${pod()}---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n`, 'm.yaml');
    expect(multi.map((o) => o.kind)).toEqual(['Pod', 'Namespace']);
    const json = parseManifests(JSON.stringify({ kind: 'List', items: [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'n1' } }] }), 'l.json');
    expect(json[0]).toMatchObject({ kind: 'Namespace', metadata: { name: 'n1' } });
  });

  const bad: Array<[string, unknown, string]> = [
    ['missing kind', { apiVersion: 'v1', metadata: { name: 'a' } }, 'kind'],
    ['unknown kind', { apiVersion: 'v1', kind: 'Gadget', metadata: { name: 'a' } }, 'kind'],
    ['wrong apiVersion', { apiVersion: 'v2', kind: 'Pod', metadata: { name: 'a' } }, 'apiVersion'],
    ['uppercase name', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'Web' } }, 'metadata.name'],
    ['numeric label value', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'a', labels: { app: 5 } } }, 'metadata.labels["app"]'],
    ['bad label key', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'a', labels: { 'a b': 'x' } } }, 'metadata.labels["a b"]'],
    ['bad namespace', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'a', namespace: 'A_B' } }, 'metadata.namespace'],
    ['namespaced Namespace', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'a', namespace: 'x' } }, 'metadata.namespace'],
    ['port out of range', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'a' }, spec: { containers: [{ name: 'c', ports: [{ containerPort: 70000 }] }] } }, 'spec.containers[0].ports[0].containerPort'],
    ['bad protocol', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'a' }, spec: { containers: [{ name: 'c', ports: [{ containerPort: 80, protocol: 'ICMP' }] }] } }, 'spec.containers[0].ports[0].protocol'],
  ];
  it.each(bad)('rejects %s naming the field', (_label, doc, field) => {
    let err: unknown;
    try {
      validateObject(doc);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ManifestError);
    expect((err as ManifestError).field).toBe(field);
  });

  it('names the file and document of a bad object', () => {
    expect(() => parseManifests(`${pod()}---\napiVersion: v1\nkind: Pod\nmetadata: {name: Bad}\n`, '/x/p.yaml')).toThrow(/^\/x\/p\.yaml#1: metadata\.name:/);
  });
});

describe('ManifestDir', () => {
  it('applies files, keeps the last good version of a broken file, and deletes on removal', async () => {
    const dir = tempDir();
    const store = new ObjectStore();
    const seen: StoreEvent[] = [];
    store.subscribe((ev) => seen.push(...ev));
    const md = new ManifestDir(dir, store, silentLogger);
    const file = path.join(dir, 'pods.yaml');
    writeFileSync(file, pod());
    await md.start();
    try {
      expect(store.get('Pod', 'shop', 'web-1')?.metadata.labels).toEqual({ app: 'web' });
      expect(seen.map((e) => e.type)).toEqual(['upsert']);

      writeFileSync(file, pod().replace('app: web', 'app: [oops'));
      await md.scan();
      expect(md.problems.get('pods.yaml')).toMatch(/pods\.yaml/);
      expect(store.get('Pod', 'shop', 'web-1')?.metadata.labels).toEqual({ app: 'web' });

      writeFileSync(file, pod().replace('app: web', 'app: api'));
      await md.scan();
      expect(md.problems.size).toBe(0);
      expect(store.get('Pod', 'shop', 'web-1')?.metadata.labels).toEqual({ app: 'api' });

      unlinkSync(file);
      await md.scan();
      expect(store.get('Pod', 'shop', 'web-1')).toBeUndefined();
      expect(seen.map((e) => e.type)).toEqual(['upsert', 'upsert', 'delete']);
    } finally {
      md.stop();
    }
  });
});
