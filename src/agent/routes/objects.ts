// HTTP routes of the agent's API: `kelp apply` / `kelp delete` into the manifest directory. Registered by the agent's entry file.
import { HttpError } from '../server';
import type { ApiServer } from '../server';
import type { RouteContext } from './context';
import { parseManifestDocs } from '../../sources/manifests';
import { applyToDir } from '../../sources/manifests-apply';
import type { ApplyToDirResult } from '../../sources/manifests-apply';
import { IMPLICIT_NAMESPACES, KelpObject, objectRef } from '../../sources/objects';

/**
 * Up to this many objects, the answer lists each one's key and action (`results`, ≤ ~60 KB). A
 * bulk apply gets the actions only, as runs over its objects in request order (`actions`): a
 * client has the keys already, and 20,000 keys make a ~1.2 MB answer, larger than a unix
 * socket takes in one write; its tail then waits for the event loop, behind the reconcilers' run
 * that the change has just woken (seconds for 10,000 Services).
 */
export const RESULTS_MAX = 1000;

/** The answer's JSON: the revision, the actions as runs, and each object's result when few. */
export function applyAnswer(results: ApplyToDirResult['results'], revision: number): string {
  const actions: Array<{ action: string; count: number }> = [];
  for (const r of results) {
    const run = actions[actions.length - 1];
    if (run?.action === r.action) run.count++;
    else actions.push({ action: r.action, count: 1 });
  }
  return JSON.stringify(results.length <= RESULTS_MAX ? { revision, actions, results } : { revision, actions }) + '\n';
}

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
      parsed = parseManifestDocs([{ kind: 'List', items: docs }], 'request');
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
      // Files written synchronously, in slices with a yield between them (applyToDir): through the
      // thread pool each costs ~0.5 ms of hops here, and the yields keep CNI requests answered
      // during a large apply. Many new objects go into a few bulk files (src/sources/manifests-apply.ts).
      const { results } = await applyToDir(manifests, parsed, {
        remove,
        exists: (o) => c.objects.get(o.kind, o.metadata.namespace, o.metadata.name) !== undefined,
      });
      // The store revision that holds this change: `kelp apply --wait` waits until it is programmed.
      // Nothing between the store's change (which wakes the reconcilers) and the answer but this.
      return { status: 200, headers: { 'content-type': 'application/json' }, body: applyAnswer(results, c.objects.revision) };
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
