import { describe, expect, it, afterAll } from 'vitest';
import { mkdirSync, symlinkSync, writeFileSync, unlinkSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { parseManifests, ManifestDir, MAX_MANIFEST_BYTES, readManifestFileSync } from '../../src/sources/manifests';
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

  // Found by the policy benchmark: scan() handed a caller the scan already running, which could
  // have read the directory before the caller's write, so `kelp apply --wait` answered a
  // revision without the change (100 of 160 times under load).
  it('scan() resolves only after a scan that began after the call: a write just before it is in the store', async () => {
    const dir = tempDir();
    const store = new ObjectStore();
    const md = new ManifestDir(dir, store, silentLogger);
    await md.start();
    try {
      for (let i = 0; i < 200; i++) writeFileSync(path.join(dir, `ns-${i}.yaml`), `apiVersion: v1\nkind: Namespace\nmetadata: {name: ns-${i}}\n`);
      const running = md.scan(); // reads 200 files: past its readdir and still running at the write below
      await new Promise((r) => setTimeout(r, 3));
      writeFileSync(path.join(dir, 'late.yaml'), 'apiVersion: v1\nkind: Namespace\nmetadata: {name: late}\n');
      await md.scan();
      expect(store.get('Namespace', undefined, 'late')).toBeDefined();
      await running;
    } finally {
      md.stop();
    }
  });

  it('applyWritten takes files kelp apply wrote into the store at once, as a scan would, and a delete out', async () => {
    const dir = tempDir();
    const store = new ObjectStore();
    const md = new ManifestDir(dir, store, silentLogger);
    await md.start();
    try {
      const text = 'apiVersion: v1\nkind: Namespace\nmetadata: {name: direct, labels: {a: b}}\n';
      writeFileSync(path.join(dir, 'direct.yaml'), text);
      const rev = store.revision;
      await md.applyWritten([{ name: 'direct.yaml', objects: parseManifests(text, 'direct.yaml') }]);
      expect(store.get('Namespace', undefined, 'direct')?.metadata.labels).toMatchObject({ a: 'b' });
      expect(store.revision).toBe(rev + 1);
      await md.scan(); // finds the file as applyWritten recorded it: nothing changes
      expect(store.revision).toBe(rev + 1);
      unlinkSync(path.join(dir, 'direct.yaml'));
      await md.applyWritten([{ name: 'direct.yaml' }]);
      expect(store.get('Namespace', undefined, 'direct')).toBeUndefined();
    } finally {
      md.stop();
    }
  });

  // Found from outside: a FIFO named *.yaml blocked the scan for good, a symlink to /dev/zero
  // was read until V8's string limit, and a 50 MB file took the agent to 2 GB.
  it('reads only regular files under the size limit; a bad file is rejected by name and the rest applied', async () => {
    const dir = tempDir('kelp-manifests-');
    const ns = (name: string) => `apiVersion: v1\nkind: Namespace\nmetadata: {name: ${name}}\n`;
    writeFileSync(path.join(dir, 'a-good.yaml'), ns('before'));
    execFileSync('mkfifo', [path.join(dir, 'b-fifo.yaml')]);
    symlinkSync('/dev/zero', path.join(dir, 'c-zero.yaml'));
    mkdirSync(path.join(dir, 'd-dir.yaml'));
    // A valid manifest that is merely too big: one Namespace padded with a long comment.
    writeFileSync(path.join(dir, 'e-big.yaml'), ns('big') + '#' + 'x'.repeat(MAX_MANIFEST_BYTES) + '\n');
    symlinkSync(path.join(dir, 'a-good.yaml'), path.join(dir, 'f-link.yaml.tmp'));
    symlinkSync('a-good.yaml', path.join(dir, 'g-link.json'));
    writeFileSync(path.join(dir, 'z-good.yaml'), ns('after'));
    const store = new ObjectStore();
    const md = new ManifestDir(dir, store, silentLogger);
    // The scan must finish, not hang on the FIFO: bounded here so a regression fails, not stalls.
    await Promise.race([md.start(), new Promise((_r, rej) => setTimeout(() => rej(new Error('manifest scan hung')), 10_000))]);
    try {
      expect(store.list('Namespace').map((n) => n.metadata.name).sort()).toEqual(['after', 'before']);
      expect([...md.problems.keys()].sort()).toEqual(['b-fifo.yaml', 'c-zero.yaml', 'd-dir.yaml', 'e-big.yaml']);
      expect(md.problems.get('b-fifo.yaml')).toMatch(/b-fifo\.yaml: \(file\): is a FIFO, not a regular file/);
      expect(md.problems.get('c-zero.yaml')).toMatch(/c-zero\.yaml: \(file\): is a character device/);
      expect(md.problems.get('d-dir.yaml')).toMatch(/is a directory/);
      expect(md.problems.get('e-big.yaml')).toMatch(new RegExp(`over the limit of ${MAX_MANIFEST_BYTES} bytes`));
      // A symlink to a regular file is followed, like kubectl -f does (g-link.json = a-good.yaml).
      expect(() => readManifestFileSync(path.join(dir, 'g-link.json'))).not.toThrow();
      // The same rules for `kelp apply -f`.
      expect(() => readManifestFileSync(path.join(dir, 'b-fifo.yaml'))).toThrow(/FIFO/);
      expect(() => readManifestFileSync(path.join(dir, 'c-zero.yaml'))).toThrow(/character device/);
      // A later scan still runs (nothing is stuck) and picks up a new file.
      writeFileSync(path.join(dir, 'y-new.yaml'), ns('later'));
      await md.scan();
      expect(store.list('Namespace').map((n) => n.metadata.name).sort()).toEqual(['after', 'before', 'later']);
    } finally {
      md.stop();
    }
  });

  it('says a required field is missing, not "undefined"', () => {
    expect(() => validateObject({ apiVersion: 'v1', kind: 'Pod', metadata: {} })).toThrow(/^metadata\.name: required, missing$/);
    expect(() => validateObject({ apiVersion: 'v1', kind: 'Pod' })).toThrow(/^metadata: required, missing$/);
    expect(() => validateObject({ kind: 'Pod', metadata: { name: 'a' } })).toThrow(/^apiVersion: required, missing$/);
  });
});
