// Standalone mode's source of desired state: a watched directory of YAML/JSON manifests.
// A file that fails to parse or validate is rejected as a whole, with the file, document and
// field named; the last good version of that file stays in effect, so a typo never deletes pods'
// state. The agent keeps running.
import { constants as fsc, watch, FSWatcher, mkdirSync, closeSync, fstatSync, openSync, readdirSync, readSync, statSync, Stats } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { KelpObject, ManifestError, objectKey, validateObject } from './objects';
import { ObjectStore } from './store';
import type { StateSource } from './source';
import type { Logger } from '../log';

const MANIFEST_EXT = /\.(ya?ml|json)$/i;

/**
 * The largest manifest file read, as the Kubernetes API server's default request limit (3 MiB):
 * a file is parsed whole, and YAML parsing costs tens of times its size in memory.
 */
export const MAX_MANIFEST_BYTES = 3 << 20;

/** Opened without blocking (a FIFO has no writer) and checked before a byte is read. */
const OPEN_FLAGS = fsc.O_RDONLY | fsc.O_NONBLOCK | fsc.O_NOCTTY;

function notRegular(st: Stats): string | undefined {
  if (st.isFile()) return undefined;
  const what = st.isFIFO() ? 'a FIFO' : st.isCharacterDevice() ? 'a character device' : st.isBlockDevice() ? 'a block device' : st.isSocket() ? 'a socket' : st.isDirectory() ? 'a directory' : 'not a regular file';
  return `is ${what}, not a regular file: skipped`;
}

function checkManifestStat(st: Stats, file: string): void {
  const bad = notRegular(st);
  if (bad) throw new ManifestError('(file)', bad, file);
  if (st.size > MAX_MANIFEST_BYTES) throw new ManifestError('(file)', `${st.size} bytes, over the limit of ${MAX_MANIFEST_BYTES} bytes per manifest file: split it`, file);
}

/**
 * Reads a manifest file: regular files only (symlinks followed), at most MAX_MANIFEST_BYTES.
 * Synchronous, for the agent's directory scan too: a FIFO is opened without blocking and refused
 * before any read, and a regular file of at most 3 MiB reads in about a millisecond.
 */
export function readManifestFileSync(file: string): string {
  const fd = openSync(file, OPEN_FLAGS);
  try {
    checkManifestStat(fstatSync(fd), file);
    const buf = Buffer.alloc(MAX_MANIFEST_BYTES + 1);
    let n = 0;
    for (;;) {
      const got = readSync(fd, buf, n, buf.length - n, n);
      if (got === 0) break;
      n += got;
      if (n > MAX_MANIFEST_BYTES) throw new ManifestError('(file)', `over the limit of ${MAX_MANIFEST_BYTES} bytes per manifest file: split it`, file);
    }
    return buf.subarray(0, n).toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** Parses a manifest file's text into validated objects (multi-document YAML, JSON, `kind: List`). */
export function parseManifests(text: string, source: string): KelpObject[] {
  const docs: unknown[] = [];
  if (/^\s*[[{]/.test(text)) {
    try {
      docs.push(JSON.parse(text));
    } catch (e) {
      throw new ManifestError('(document)', `invalid JSON: ${(e as Error).message}`, source);
    }
  } else {
    for (const [i, doc] of parseAllDocuments(text).entries()) {
      if (doc.errors.length > 0) {
        throw new ManifestError('(document)', `invalid YAML: ${doc.errors[0].message}`, `${source}#${i}`);
      }
      const value = doc.toJS();
      if (value !== null && value !== undefined) docs.push(value);
    }
  }
  return parseManifestDocs(docs, source);
}

/** Validates decoded documents (a `kind: List` expanded) as parseManifests does a file's. */
export function parseManifestDocs(docs: readonly unknown[], source: string): KelpObject[] {
  const out: KelpObject[] = [];
  // Where a document is (`file#0.items[12]`) is spelled out only for an error: a bulk apply of
  // 20,000 objects would otherwise build 20,000 strings nobody reads.
  const validate = (doc: unknown, where: () => string) => {
    try {
      out.push(validateObject(doc));
    } catch (e) {
      if (e instanceof ManifestError) throw e.at(where());
      throw e;
    }
  };
  docs.forEach((doc, i) => {
    const d = doc as { kind?: unknown; items?: unknown };
    if (d && typeof d === 'object' && d.kind === 'List') {
      if (!Array.isArray(d.items)) throw new ManifestError('items', 'must be an array', `${source}#${i}`);
      const items: unknown[] = d.items;
      for (let j = 0; j < items.length; j++) validate(items[j], () => `${source}#${i}.items[${j}]`);
    } else {
      validate(doc, () => (docs.length > 1 ? `${source}#${i}` : source));
    }
  });
  return out;
}

export interface ManifestProblem {
  file: string;
  error: string;
}

/** A file that parsed and validated: its objects, with each one's store key computed once. */
interface GoodFile {
  mtimeMs: number;
  size: number;
  objects: KelpObject[];
  keys: string[];
  /** Key → position in `objects`, built on first lookup (fileObject). */
  at?: Map<string, number>;
}

/** Watches a directory and keeps the store in sync with it. */
export class ManifestDir implements StateSource {
  private watcher?: FSWatcher;
  private timer?: NodeJS.Timeout;
  private scanning?: Promise<void>;
  private nextScan?: Promise<void>;
  private writers = 0;
  /** The last writer queued (writing): the next one starts once it is done. */
  private writeTail: Promise<void> = Promise.resolve();
  private scanDeferred = false;
  private readonly good = new Map<string, GoodFile>();
  readonly problems = new Map<string, string>();
  /** Object key → the good files defining it; rebuilt when asked after a change. */
  private definers?: Map<string, string[]>;
  private markSynced!: () => void;
  private readonly firstScan = new Promise<void>((r) => (this.markSynced = r));

  constructor(
    readonly dir: string,
    private readonly store: ObjectStore,
    private readonly log: Logger,
  ) {}

  get name(): string {
    return `manifests:${this.dir}`;
  }

  /** Scans the directory once (the source is then synced) and watches it. */
  async start(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    await this.scan();
    this.markSynced();
    this.watcher = watch(this.dir, () => this.schedule());
    this.watcher.on('error', (err) => this.log.warn({ err, dir: this.dir }, 'manifest watch error'));
  }

  /** A directory is read whole by start()'s first scan: synced once that is done. */
  synced(): Promise<void> {
    return this.firstScan;
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    if (this.timer) clearTimeout(this.timer);
  }

  /** Debounced: editors write files in several steps. Deferred while kelp apply writes (`writing`). */
  private schedule(): void {
    if (this.writers > 0) {
      this.scanDeferred = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.scan(), 50);
  }

  /**
   * Runs `fn`, which writes files into the directory and hands them to applyWritten, with the
   * watcher's scans held back: scans of a directory half written (10,000 objects take a while
   * even written synchronously) would read and compare everything again and again.
   */
  async writing<T>(fn: () => Promise<T>): Promise<T> {
    this.writers++;
    // One writer at a time, in arrival order: a writer reads the files it rewrites (a bulk file's
    // other objects) and names the files it makes; two at once would write over each other.
    const turn = this.writeTail.then(fn);
    this.writeTail = turn.then(
      () => undefined,
      () => undefined,
    );
    try {
      return await turn;
    } finally {
      this.writers--;
      if (this.writers === 0 && this.scanDeferred) {
        this.scanDeferred = false;
        this.schedule();
      }
    }
  }

  /**
   * Re-reads changed files and applies the union of all good files to the store. Resolves once a
   * scan that started after the call is done: a scan already running may have read the
   * directory before the caller's change (callers share the one scan queued behind it).
   */
  scan(): Promise<void> {
    if (!this.scanning) {
      this.scanning = this.doScan().finally(() => {
        this.scanning = undefined;
      });
      return this.scanning;
    }
    this.nextScan ??= this.scanning
      .catch(() => undefined)
      .then(() => {
        this.nextScan = undefined;
        return this.scan();
      });
    return this.nextScan;
  }

  /** The objects of a good file, or undefined. */
  fileObjects(name: string): readonly KelpObject[] | undefined {
    return this.good.get(name)?.objects;
  }

  /** The object with store key `key` in good file `name`, or undefined. */
  fileObject(name: string, key: string): KelpObject | undefined {
    const f = this.good.get(name);
    if (!f) return undefined;
    // A bulk re-apply asks for every object of each file: positions indexed once per file.
    f.at ??= new Map(f.keys.map((k, i) => [k, i]));
    const i = f.at.get(key);
    return i === undefined ? undefined : f.objects[i];
  }

  /** The good files that define the object with this store key, in name order. */
  filesDefining(key: string): readonly string[] {
    if (!this.definers) {
      const index = new Map<string, string[]>();
      for (const name of [...this.good.keys()].sort()) {
        for (const k of this.good.get(name)!.keys) {
          const list = index.get(k);
          if (list) list.push(name);
          else index.set(k, [name]);
        }
      }
      this.definers = index;
    }
    return this.definers.get(key) ?? [];
  }

  /**
   * Files `kelp apply`/`kelp delete` has just written (`objects`) or removed (none), taken into
   * the store at once as the next scan would take them, without re-reading the directory (a
   * scan stats every file: ~60 ms at 2,000 of them). The watcher's scan that follows finds them
   * unchanged.
   */
  async applyWritten(changes: ReadonlyArray<{ name: string; objects?: KelpObject[]; keys?: string[] }>): Promise<void> {
    // A scan that began before the files were written may still put what it read then: let it
    // finish first. One beginning later reads the new files, as this does.
    while (this.scanning) await this.scanning.catch(() => undefined);
    this.definers = undefined;
    // Every object a changed file defined before or defines now, by key.
    const touched = new Set<string>();
    for (const ch of changes) {
      this.good.get(ch.name)?.keys.forEach((k) => touched.add(k));
      this.problems.delete(ch.name);
      if (ch.objects) {
        const st = statSync(path.join(this.dir, ch.name));
        const keys = ch.keys ?? ch.objects.map(objectKey);
        this.good.set(ch.name, { mtimeMs: st.mtimeMs, size: st.size, objects: ch.objects, keys });
        keys.forEach((k) => touched.add(k));
      } else {
        this.good.delete(ch.name);
      }
    }
    // The union's answer for each touched object: the last good file defining it, as in doScan.
    const winner = new Map<string, KelpObject>();
    for (const { objects, keys } of this.good.values()) keys.forEach((k, i) => touched.has(k) && winner.set(k, objects[i]));
    const gone = [...touched].filter((k) => !winner.has(k));
    // One batch: listeners (the reconcile loop) hear the whole apply at once.
    this.store.update(this.name, winner, gone);
  }

  // Synchronous on purpose: a stat through libuv's thread pool costs ~30 µs of hops, one on the
  // main thread ~2 µs, and a scan stats every file (2,000 files: ~60 ms async, ~4 ms sync). Reads
  // are sync already (readManifestFileSync) and only for changed files.
  private async doScan(): Promise<void> {
    const names = readdirSync(this.dir)
      .filter((n) => MANIFEST_EXT.test(n) && !n.startsWith('.'))
      .sort();
    const present = new Set(names);
    // Whether the union of good files changed: when not, the store already holds it (comparing
    // 20,000 objects again costs ~0.4 s).
    let changed = false;
    for (const name of [...this.good.keys()]) {
      if (!present.has(name)) {
        this.good.delete(name);
        changed = true;
      }
    }
    for (const name of [...this.problems.keys()]) if (!present.has(name)) this.problems.delete(name);
    for (const name of names) {
      const file = path.join(this.dir, name);
      let st;
      try {
        st = statSync(file);
      } catch {
        continue;
      }
      const prev = this.good.get(name);
      if (prev && prev.mtimeMs === st.mtimeMs && prev.size === st.size && !this.problems.has(name)) continue;
      try {
        const objects = parseManifests(readManifestFileSync(file), file);
        this.good.set(name, { mtimeMs: st.mtimeMs, size: st.size, objects, keys: objects.map(objectKey) });
        this.problems.delete(name);
        changed = true;
      } catch (e) {
        const msg = (e as Error).message;
        if (this.problems.get(name) !== msg) this.log.error({ file, error: msg }, 'manifest rejected; keeping its last good version');
        this.problems.set(name, msg);
      }
    }
    if (!changed) return;
    this.definers = undefined;
    const all: KelpObject[] = [];
    for (const { objects } of this.good.values()) all.push(...objects);
    const events = this.store.replaceFrom(this.name, all);
    if (events.length > 0) this.log.info({ changes: events.length }, 'manifests applied');
  }
}
