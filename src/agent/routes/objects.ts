// HTTP routes of the agent's API: `kelp apply` / `kelp delete` into the manifest directory. Registered by the agent's entry file.
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { HttpError } from '../server';
import type { ApiServer } from '../server';
import type { RouteContext } from './context';
import { parseManifests } from '../../sources/manifests';
import { IMPLICIT_NAMESPACES, KelpObject, objectKey, objectRef } from '../../sources/objects';

export function objectRoutes(server: ApiServer, c: RouteContext): void {
  const applyObjects = async (body: Buffer, remove: boolean) => {
    if (!c.manifests) throw new HttpError(409, 'the agent has no manifest directory (start it with --manifests DIR)');
    let docs: unknown;
    try {
      docs = (JSON.parse(body.toString('utf8')) as { objects?: unknown }).objects;
    } catch {
      throw new HttpError(400, 'body must be JSON {"objects": [...]}');
    }
    let parsed: KelpObject[];
    try {
      parsed = parseManifests(JSON.stringify({ kind: 'List', items: docs }), 'request');
    } catch (e) {
      throw new HttpError(400, (e as Error).message);
    }
    if (!remove) {
      // As the API server does: a namespaced object needs its namespace, here or in this request.
      const known = new Set([...IMPLICIT_NAMESPACES, ...c.objects.list('Namespace').map((n) => n.metadata.name)]);
      for (const o of parsed) if (o.kind === 'Namespace') known.add(o.metadata.name);
      for (const o of parsed) {
        const ns = o.metadata.namespace;
        if (ns !== undefined && !known.has(ns)) throw new HttpError(404, `${objectRef(o)}: metadata.namespace: namespace ${JSON.stringify(ns)} not found (create it first, or in the same apply)`);
      }
    }
    const manifests = c.manifests;
    return manifests.writing(async () => {
      const results: Array<{ key: string; action: string }> = [];
      const written = new Map<string, KelpObject[] | undefined>();
      // Synchronous file operations, in slices with a yield between them: through the thread pool
      // each costs ~0.5 ms of hops here (10,000 Services and their slices took ~10 s), on the main
      // thread ~20-50 µs; the yields keep CNI requests answered during a large apply.
      for (const [i, o] of parsed.entries()) {
        if (i > 0 && i % 256 === 0) await new Promise((r) => setImmediate(r));
        const key = objectKey(o);
        const ref = objectRef(o);
        const file = path.join(manifests.dir, `${key.replace(/\//g, '_').replace(/__/g, '_')}.json`);
        if (remove) {
          rmSync(file, { force: true });
          written.set(path.basename(file), undefined);
          results.push({ key: ref, action: 'deleted' });
        } else {
          const existed = c.objects.get(o.kind, o.metadata.namespace, o.metadata.name) !== undefined;
          const tmp = path.join(manifests.dir, `.${path.basename(file)}.tmp`);
          writeFileSync(tmp, JSON.stringify(o, null, 2));
          renameSync(tmp, file);
          written.set(path.basename(file), [o]);
          results.push({ key: ref, action: existed ? 'configured' : 'created' });
        }
      }
      // Into the store now, so the revision answered holds this change (--wait waits for it).
      await manifests.applyWritten([...written].map(([name, objects]) => ({ name, objects })));
      // The store revision that holds this change: `kelp apply --wait` waits until it is programmed.
      return { status: 200, body: { results, revision: c.objects.revision } };
    });
  };
  server.route('POST', '/v1/objects', (req) => applyObjects(req.body, false));
  // Resolves once every reconciler has programmed store revision `rev` (or at the timeout, 504).
  server.route('GET', '/v1/programmed', async (req) => {
    const rev = Number(req.query.get('revision') ?? c.objects.revision);
    const timeoutMs = Math.min(Number(req.query.get('timeoutMs') ?? 30_000), 300_000);
    if (!Number.isInteger(rev) || rev < 0 || !Number.isFinite(timeoutMs)) throw new HttpError(400, 'revision must be a whole number');
    const reached = await c.reconcilers.waitForWithin(rev, timeoutMs);
    const body = { revision: rev, programmed: c.reconcilers.programmedRevision };
    return { status: reached ? 200 : 504, body: reached ? body : { ...body, error: `revision ${rev} not programmed within ${timeoutMs} ms` } };
  });
  server.route('DELETE', '/v1/objects', (req) => applyObjects(req.body, true));
}
