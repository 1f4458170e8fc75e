// `kelp apply` and `kelp delete` into the manifest directory (the objects route calls this inside
// ManifestDir.writing): the directory stays the source of truth, each object defined in one place.
//
// Where an object goes:
//   - an object a kelp bulk file already defines is rewritten in that file (delete: taken out of
//     it, the file removed once empty);
//   - objects no file defines yet, when a request brings at least BULK_MIN of them, go into new
//     bulk files of at most BULK_MAX objects: one write and one rename per file instead of one
//     per object (20,000 files cost ~5 s on this disk, ~0.25 ms each, mostly the renames);
//   - anything else into its own file named after the object, as one `kelp apply` always did.
// Files are written to a dot-file first and renamed over: a reader never sees half a file. A bulk
// file holds one object per line: as compact as JSON gets (it is half the size of indented JSON and
// written in half the time), and still one grep or diff line per object.
import { existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ManifestDir } from './manifests';
import { KelpObject, objectKey, objectRef } from './objects';
import { sameJson } from './store';

/** From this many new objects in one request, bulk files. */
export const BULK_MIN = 64;
/** Objects per bulk file: ~200 KiB of JSON for EndpointSlices, well under MAX_MANIFEST_BYTES, and cheap to rewrite for one change. */
export const BULK_MAX = 500;

const BULK_NAME = /^kelp-apply-[0-9a-z]+-\d+\.json$/;

/** Whether a file name is one of the bulk files kelp writes (and may rewrite). */
export function isBulkFile(name: string): boolean {
  return BULK_NAME.test(name);
}

/** The file one object is written to on its own. */
export function objectFileName(o: KelpObject): string {
  return `${objectKey(o).replace(/\//g, '_').replace(/__/g, '_')}.json`;
}

export interface ApplyToDirResult {
  results: Array<{ key: string; action: 'created' | 'configured' | 'deleted' }>;
}

export interface ApplyToDirOptions {
  remove: boolean;
  /** Whether the store holds the object now (the answer says created or configured). */
  exists: (o: KelpObject) => boolean;
  /** Called between slices of synchronous file work, to let the event loop run (CNI requests). */
  yieldNow?: () => Promise<void>;
}

/**
 * Whether bulk file `name` holds `o` exactly as sent, resourceVersion included. A file whose
 * current text was rejected (a bad hand edit) is rewritten whatever it held: a restarted agent
 * would read that text, not the last good version the store keeps.
 */
function unchanged(md: ManifestDir, name: string, key: string, o: KelpObject): boolean {
  if (md.problems.has(name)) return false;
  const cur = md.fileObject(name, key);
  return cur !== undefined && cur.metadata.resourceVersion === o.metadata.resourceVersion && sameJson(cur, o);
}

function writeAtomically(dir: string, name: string, text: string): void {
  const tmp = path.join(dir, `.${name}.tmp`);
  writeFileSync(tmp, text);
  renameSync(tmp, path.join(dir, name));
}

/** A bulk file's text: a `kind: List`, one object per line. */
export function bulkFileText(items: readonly KelpObject[]): string {
  let text = '{"apiVersion":"v1","kind":"List","items":[\n';
  items.forEach((o, i) => (text += (i === 0 ? '' : ',\n') + JSON.stringify(o)));
  return text + '\n]}\n';
}

/** Applies (or deletes) `objects` in the directory and hands the files it wrote to the store. */
export async function applyToDir(md: ManifestDir, objects: readonly KelpObject[], opts: ApplyToDirOptions): Promise<ApplyToDirResult> {
  const results: ApplyToDirResult['results'] = [];
  const pause = opts.yieldNow ?? (() => new Promise<void>((r) => setImmediate(r)));
  // The request's last word on each object, in request order.
  const last = new Map<string, KelpObject>();
  for (const o of objects) last.set(objectKey(o), o);
  // Bulk files touched by this request: their new content, by file name.
  const bulk = new Map<string, Map<string, KelpObject>>();
  const bulkContent = (name: string) => {
    let m = bulk.get(name);
    if (!m) {
      m = new Map((md.fileObjects(name) ?? []).map((o) => [objectKey(o), o]));
      bulk.set(name, m);
    }
    return m;
  };
  const fresh: Array<[string, KelpObject]> = [];
  const single: KelpObject[] = [];
  for (const [key, o] of last) {
    const definers = md.filesDefining(key);
    if (!opts.remove && definers.length === 0) {
      fresh.push([key, o]);
      continue;
    }
    const inBulk = definers.filter(isBulkFile);
    if (opts.remove) {
      for (const name of inBulk) bulkContent(name).delete(key);
      single.push(o);
      continue;
    }
    if (inBulk.length === 1 && unchanged(md, inBulk[0], key, o)) {
      // Already there as sent: the file is not rewritten for it (a repeated bulk apply writes nothing).
    } else if (inBulk.length > 0) {
      // Rewritten where it is; any other bulk copy (a hand edit made one) goes.
      bulkContent(inBulk[0]).set(key, o);
      for (const name of inBulk.slice(1)) bulkContent(name).delete(key);
    } else {
      single.push(o);
    }
  }
  if (!opts.remove && fresh.length >= BULK_MIN) {
    // Named by the time, and past any stamp whose files exist (two requests in one millisecond;
    // files of an earlier one that deletes have thinned out): a new bulk file never replaces one.
    const files = Math.ceil(fresh.length / BULK_MAX);
    const taken = (stamp: number) => Array.from({ length: files }, (_, i) => `kelp-apply-${stamp.toString(36)}-${i}.json`).some((name) => existsSync(path.join(md.dir, name)));
    let stamp = Date.now();
    while (taken(stamp)) stamp++;
    for (let i = 0; i < files; i++) {
      const name = `kelp-apply-${stamp.toString(36)}-${i}.json`;
      bulk.set(name, new Map(fresh.slice(i * BULK_MAX, (i + 1) * BULK_MAX)));
    }
  } else {
    for (const [, o] of fresh) single.push(o);
  }

  const written: Array<{ name: string; objects?: KelpObject[]; keys?: string[] }> = [];
  let work = 0;
  const step = async () => {
    if (++work % 256 === 0) await pause();
  };
  for (const [name, content] of bulk) {
    const items = [...content.values()];
    if (items.length === 0) {
      rmSync(path.join(md.dir, name), { force: true });
      written.push({ name });
    } else {
      writeAtomically(md.dir, name, bulkFileText(items));
      written.push({ name, objects: items, keys: [...content.keys()] });
    }
    await step();
  }
  for (const o of single) {
    const name = objectFileName(o);
    if (opts.remove) {
      rmSync(path.join(md.dir, name), { force: true });
      written.push({ name });
    } else {
      writeAtomically(md.dir, name, JSON.stringify(o, null, 2));
      written.push({ name, objects: [o] });
    }
    await step();
  }
  for (const o of last.values()) {
    results.push({ key: objectRef(o), action: opts.remove ? 'deleted' : opts.exists(o) ? 'configured' : 'created' });
  }
  // Into the store now, so the revision answered holds this change (--wait waits for it).
  await md.applyWritten(written);
  return { results };
}
