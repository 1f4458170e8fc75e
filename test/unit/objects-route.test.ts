// POST and DELETE /v1/objects (src/agent/routes/objects.ts) over a real ApiServer on a unix
// socket, into a real manifest directory: a bulk apply is all or nothing (one bad object among
// 2,000 rejects the request naming it, and leaves the directory and the store as they were), its
// answer gives the actions as runs, a repeat of it changes nothing and wakes nobody, and a
// directory re-read by a fresh agent holds what the store holds.
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiServer } from '../../src/agent/server';
import { objectRoutes, RESULTS_MAX } from '../../src/agent/routes/objects';
import type { RouteContext } from '../../src/agent/routes/context';
import { applyLines } from '../../src/cli/apply';
import { request } from '../../src/cli/client';
import { silentLogger } from '../../src/log';
import { ReconcileLoop } from '../../src/reconcile/loop';
import { ManifestDir } from '../../src/sources/manifests';
import { isBulkFile } from '../../src/sources/manifests-apply';
import { KelpObject, objectKey, validateObject } from '../../src/sources/objects';
import { ObjectStore, StoreEvent } from '../../src/sources/store';
import { cleanupAll, tempDir } from '../support/netns';

const dir = tempDir('kelp-objects-route-');
const socketPath = path.join(dir, 'run', 'api.sock');
const manifestDir = path.join(dir, 'manifests');
const server = new ApiServer(silentLogger);
const store = new ObjectStore();
const md = new ManifestDir(manifestDir, store, silentLogger);
const batches: StoreEvent[][] = [];

beforeAll(async () => {
  await md.start();
  const reconcilers = new ReconcileLoop(store, { log: silentLogger });
  objectRoutes(server, { manifests: md, objects: store, reconcilers } as unknown as RouteContext);
  await server.listen(socketPath);
  store.subscribe((events) => batches.push(events));
});

afterAll(async () => {
  await server.close();
  await md.stop();
  cleanupAll();
});

type Doc = Record<string, unknown>;
const ns: Doc = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'bulk' } };
const service = (i: number, port: unknown = 80): Doc => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: `svc-${i}`, namespace: 'bulk' },
  spec: { clusterIP: `10.96.${i >> 8}.${i & 255}`, ports: [{ name: 'rr', port, targetPort: 8080 }] },
});
const slice = (i: number, address = `10.200.${i >> 8}.${i & 255}`): Doc => ({
  apiVersion: 'discovery.k8s.io/v1',
  kind: 'EndpointSlice',
  metadata: { name: `svc-${i}-a`, namespace: 'bulk', labels: { 'kubernetes.io/service-name': `svc-${i}` } },
  addressType: 'IPv4',
  ports: [{ name: 'rr', port: 8080, protocol: 'TCP' }],
  endpoints: [{ addresses: [address], conditions: { ready: true } }],
});
const bulk = (n: number, at?: (i: number) => Doc[] | undefined): Doc[] => [ns, ...Array.from({ length: n }, (_, i) => at?.(i) ?? [service(i), slice(i)]).flat()];

async function send(method: 'POST' | 'DELETE', objects: Doc[]): Promise<{ status: number; body: { revision?: number; actions?: Array<{ action: string; count: number }>; results?: unknown[]; error?: string } }> {
  const res = await request(socketPath, method, '/v1/objects', JSON.stringify({ objects }));
  return { status: res.status, body: JSON.parse(res.body.toString('utf8')) };
}

/** The files and their mtimes: what a request wrote. */
const listing = () => new Map(readdirSync(manifestDir).map((n) => [n, statSync(path.join(manifestDir, n)).mtimeMs]));

/** What a fresh agent reading the directory would hold. */
async function reread(): Promise<Map<string, KelpObject>> {
  const s = new ObjectStore();
  const fresh = new ManifestDir(manifestDir, s, silentLogger);
  await fresh.start();
  await fresh.stop();
  return new Map([...s.list('Service'), ...s.list('EndpointSlice'), ...s.list('Namespace')].map((o) => [objectKey(o), o]));
}
const held = () => new Map([...store.list('Service'), ...store.list('EndpointSlice'), ...store.list('Namespace')].map((o) => [objectKey(o), o]));

describe('POST /v1/objects, in bulk', () => {
  it('one bad object among 2,000 rejects the request naming it; nothing is written or stored', async () => {
    const rev = store.revision;
    const before = listing();
    const bad = await send('POST', bulk(1000, (i) => (i === 617 ? [service(i), slice(i, '127.0.0.1')] : undefined)));
    expect(bad.status).toBe(400);
    expect(bad.body.error).toBe('request#0.items[1236]: endpoints[0].addresses[0]: "127.0.0.1" may not be in the loopback range (127.0.0.0/8, ::1/128)');
    const port = await send('POST', bulk(1000, (i) => (i === 999 ? [service(i, 70000), slice(i)] : undefined)));
    expect(port.body.error).toBe('request#0.items[1999]: spec.ports[0].port: must be an integer in 1..65535, got number 70000');
    expect(listing()).toEqual(before);
    expect(store.revision).toBe(rev);
    expect(batches).toHaveLength(0);
  });

  it('2,000 objects: bulk files, one store batch, actions as runs; the directory re-read holds the same', async () => {
    const objects = bulk(1000);
    const res = await send('POST', objects);
    expect(res.status).toBe(200);
    expect(res.body.actions).toEqual([{ action: 'created', count: 2001 }]);
    // Over RESULTS_MAX: no per-object list (the client has the keys).
    expect(2001).toBeGreaterThan(RESULTS_MAX);
    expect(res.body.results).toBeUndefined();
    expect(res.body.revision).toBe(store.revision);
    expect(batches).toHaveLength(1);
    expect(batches[0]).toHaveLength(2001);
    expect([...listing().keys()].every(isBulkFile)).toBe(true);
    expect(held().size).toBe(2001);
    expect(await reread()).toEqual(held());
    // What `kelp apply` prints from that answer: a line per object, in request order.
    const lines = applyLines(objects.map(validateObject), res.body as Parameters<typeof applyLines>[1]);
    expect(lines).toHaveLength(2001);
    expect(lines.slice(0, 3)).toEqual(['Namespace/bulk created', 'Service/bulk/svc-0 created', 'EndpointSlice/bulk/svc-0-a created']);
  });

  it('the same again: no file rewritten, no store change, nobody woken', async () => {
    const before = listing();
    const rev = store.revision;
    const res = await send('POST', bulk(1000));
    expect(res.body.actions).toEqual([{ action: 'configured', count: 2001 }]);
    expect(res.body.revision).toBe(rev);
    expect(listing()).toEqual(before);
    expect(batches).toHaveLength(1);
  });

  it('one changed among them: only its bulk file rewritten, one event; kelp delete of one takes it out of its file', async () => {
    const before = listing();
    const res = await send('POST', bulk(1000, (i) => (i === 500 ? [service(i), slice(i, '10.201.0.1')] : undefined)));
    expect(res.body.revision).toBe(store.revision);
    expect(batches).toHaveLength(2);
    expect(batches[1].map((e) => e.key)).toEqual(['EndpointSlice/bulk/svc-500-a']);
    const after = listing();
    expect([...after.keys()]).toEqual([...before.keys()]);
    expect([...after].filter(([n, t]) => before.get(n) !== t)).toHaveLength(1);
    expect(store.get('EndpointSlice', 'bulk', 'svc-500-a')?.endpoints[0].addresses).toEqual(['10.201.0.1']);

    const del = await send('DELETE', [service(7)]);
    expect(del.body).toEqual({ revision: store.revision, actions: [{ action: 'deleted', count: 1 }], results: [{ key: 'Service/bulk/svc-7', action: 'deleted' }] });
    expect(store.get('Service', 'bulk', 'svc-7')).toBeUndefined();
    expect(store.get('Service', 'bulk', 'svc-8')).toBeDefined();
    expect(await reread()).toEqual(held());
  });
});

describe('applyLines', () => {
  const objs = [service(1), slice(1), service(1, 81), service(2)].map(validateObject);
  it('expands runs over the distinct objects in request order; a repeated object is one line', () => {
    const lines = applyLines(objs, { revision: 3, actions: [{ action: 'created', count: 2 }, { action: 'configured', count: 1 }] });
    expect(lines).toEqual(['Service/bulk/svc-1 created', 'EndpointSlice/bulk/svc-1-a created', 'Service/bulk/svc-2 configured']);
  });
  it('an answer that does not fit the request is an error, not wrong lines', () => {
    expect(() => applyLines(objs, { revision: 3, actions: [{ action: 'created', count: 4 }] })).toThrow('the agent answered for 4 objects, the request had 3');
  });
});
