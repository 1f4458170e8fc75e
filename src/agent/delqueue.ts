// The DEL queue: where kelp-cni leaves a DEL it could not deliver (agent down or restarting).
// A runtime that got "success" for such a DEL never sends it again and will delete the pod's
// netns, so the agent must carry it out later. Each entry is the request body exactly as
// kelp-cni would have posted it (env entries, NUL, stdin), in `<ns since epoch>-<pid>.del`,
// written as `.<name>.tmp` and renamed, so a visible entry is always complete.
// It lives next to the agent socket, `<run dir>/del-queue`: kelp-cni finds it from the socket it
// tried (native/cni/kelp-cni.c queue_dir_for), so no config can send DELs where the agent does
// not look. (Older agents kept it in `<state dir>/del-queue` and named it in the conflist; see
// adopt().)
// The agent replays entries through the live request handler (one code path for both) before
// it accepts ADDs, and sweeps the directory again periodically for DELs queued in the instant
// between its start-up replay and its socket accepting connections.
import type { ReplayOutcome } from '../endpoint/restore';
export type { ReplayOutcome };
import { closeSync, copyFileSync, fsyncSync, mkdirSync, openSync, promises as fsp, readdirSync, renameSync, rmdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { CNI_HTTP_PATH, decodeRequest, EXIT_HEADER } from '../cni';
import type { Logger } from '../log';
import type { ApiRequest, ApiResponse } from './server';

const ENTRY = /^(\d{19})-(\d+)\.del$/;
export const DEL_QUEUE_NAME = 'del-queue';
const TMP = /^\..*\.tmp$/;
/** A kelp-cni still writing its temp file must not lose it; one this old was killed mid-write. */
const STALE_TMP_MS = 60_000;
/** Exit codes worth retrying: the agent's own "try again later". */
const RETRY_CODES = new Set([11]);

export interface QueuedDel {
  file: string;
  /** Wall-clock time kelp-cni queued it, in ms since the epoch. */
  queuedAtMs: number;
}

export interface DelQueueOptions {
  dir: string;
  log: Logger;
  /** The live CNI request handler (the agent's POST /v1/cni route). */
  handle: (req: ApiRequest) => Promise<ApiResponse>;
  /**
   * When the attachment's current endpoint was created (ms since the epoch), undefined when
   * there is none: a DEL queued before that belongs to an earlier incarnation and must not run.
   */
  createdAt: (ref: { network: string; containerId: string; ifname: string }) => number | undefined;
}

/** Where kelp-cni queues the DELs it could not deliver to the agent listening on `socketPath`. */
export function delQueueDirFor(socketPath: string): string {
  return path.join(path.dirname(socketPath), DEL_QUEUE_NAME);
}

/** Moves `from` to `to` (a directory entry of this queue), also across file systems. */
function moveEntry(from: string, to: string): void {
  try {
    renameSync(from, to);
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
  }
  // A temp name first, as kelp-cni writes: a visible entry is always complete.
  const tmp = path.join(path.dirname(to), `.${path.basename(to)}.${process.pid}.tmp`);
  copyFileSync(from, tmp);
  const fd = openSync(tmp, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, to);
  rmSync(from);
}

export class DelQueue {
  private timer?: NodeJS.Timeout;
  private running?: Promise<ReplayOutcome>;

  constructor(private readonly opts: DelQueueOptions) {}

  get dir(): string {
    return this.opts.dir;
  }

  /** Creates the directory: kelp-cni only queues into an existing one. */
  ensure(): void {
    mkdirSync(this.opts.dir, { recursive: true, mode: 0o700 });
  }

  /**
   * Takes over the entries of the queue directory an older agent used (`<state dir>/del-queue`),
   * keeping their names (their times order the queue and date them against later ADDs), and
   * removes that directory, so this happens once. An older kelp-cni still installed (it is
   * replaced once this agent is ready) can be writing there meanwhile: the directory goes only
   * by rmdir, which fails while an entry it renamed in is there, so none is lost; after that,
   * its DEL fails with code 11 and the runtime retries it here. Returns how many moved.
   */
  adopt(legacyDir: string): number {
    if (path.resolve(legacyDir) === path.resolve(this.opts.dir)) return 0;
    const log = this.opts.log.child({ from: legacyDir, to: this.opts.dir });
    let moved = 0;
    for (let round = 0; round < 5; round++) {
      let names: string[];
      try {
        names = readdirSync(legacyDir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ err }, 'cannot read the old DEL queue');
        break;
      }
      for (const name of names) {
        const file = path.join(legacyDir, name);
        try {
          if (ENTRY.test(name)) {
            moveEntry(file, path.join(this.opts.dir, name));
            moved += 1;
          } else if (TMP.test(name)) {
            // Its writer died, or fails now and reports it.
            rmSync(file, { force: true });
          }
        } catch (err) {
          log.warn({ err, file }, 'cannot move a queued DEL out of the old queue');
        }
      }
      try {
        rmdirSync(legacyDir);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        if (code === 'ENOTEMPTY' && round < 4) continue;
        log.warn({ err }, 'the old DEL queue stays; its entries move at the next start');
        break;
      }
    }
    if (moved > 0) log.info({ moved }, 'queued DELs moved from the old queue directory');
    return moved;
  }

  list(): QueuedDel[] {
    const out: QueuedDel[] = [];
    for (const name of readdirSync(this.opts.dir)) {
      const m = ENTRY.exec(name);
      if (m) out.push({ file: path.join(this.opts.dir, name), queuedAtMs: Number(BigInt(m[1]) / 1_000_000n) });
    }
    // Fixed-width timestamps: name order is queue order.
    return out.sort((a, b) => (a.file < b.file ? -1 : 1));
  }

  /** Replays every entry, oldest first; concurrent calls share one pass. */
  replay(): Promise<ReplayOutcome> {
    if (!this.running) {
      this.running = this.replayOnce().finally(() => (this.running = undefined));
    }
    return this.running;
  }

  /** Replays again every `intervalMs` until stop(). */
  startSweeping(intervalMs: number): void {
    this.timer = setInterval(() => {
      this.replay().catch((err: unknown) => this.opts.log.warn({ err }, 'DEL queue sweep failed'));
    }, intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => undefined);
  }

  private async replayOnce(): Promise<ReplayOutcome> {
    const outcome: ReplayOutcome = { done: 0, skipped: 0, kept: 0 };
    this.removeStaleTemps();
    for (const entry of this.list()) {
      const verdict = await this.replayEntry(entry);
      outcome[verdict] += 1;
      if (verdict !== 'kept') await fsp.rm(entry.file, { force: true });
    }
    if (outcome.done || outcome.skipped || outcome.kept) this.opts.log.info({ queue: this.opts.dir, ...outcome }, 'queued DELs replayed');
    return outcome;
  }

  private async replayEntry(entry: QueuedDel): Promise<keyof ReplayOutcome> {
    const log = this.opts.log.child({ queued: path.basename(entry.file) });
    let body: Buffer;
    try {
      body = await fsp.readFile(entry.file);
    } catch (err) {
      // Gone already (a concurrent sweep or an operator): nothing to do.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'skipped';
      log.warn({ err }, 'cannot read queued DEL; will retry');
      return 'kept';
    }
    let env: Record<string, string>;
    let stdin: Buffer;
    try {
      ({ env, stdin } = decodeRequest(body));
    } catch (err) {
      log.warn({ err }, 'queued DEL is not a kelp-cni request; dropped');
      return 'skipped';
    }
    // The directory is root's, but only a DEL may ever come out of it.
    if (env.CNI_COMMAND !== 'DEL') {
      log.warn({ command: env.CNI_COMMAND }, 'queued request is not a DEL; dropped');
      return 'skipped';
    }
    const ref = { network: networkName(stdin), containerId: env.CNI_CONTAINERID ?? '', ifname: env.CNI_IFNAME ?? '' };
    const created = ref.network ? this.opts.createdAt(ref) : undefined;
    if (created !== undefined && created > entry.queuedAtMs) {
      log.info({ ...ref }, 'queued DEL predates the current endpoint of its attachment; dropped');
      return 'skipped';
    }
    let res: ApiResponse;
    try {
      res = await this.opts.handle({ method: 'POST', path: CNI_HTTP_PATH, params: {}, query: new URLSearchParams(), body });
    } catch (err) {
      log.warn({ err, ...ref }, 'queued DEL failed; will retry');
      return 'kept';
    }
    const exit = Number(res.headers?.[EXIT_HEADER] ?? NaN);
    if (exit === 0) {
      log.info({ ...ref }, 'queued DEL done');
      return 'done';
    }
    const stdout = Buffer.isBuffer(res.body) ? res.body.toString('utf8') : String(res.body ?? '');
    const code = errorCode(stdout);
    if (code !== undefined && RETRY_CODES.has(code)) {
      log.warn({ ...ref, answer: stdout.trim() }, 'queued DEL: try again later');
      return 'kept';
    }
    // The runtime was told "success" long ago; an answer that will never change is only logged.
    log.warn({ ...ref, exit, answer: stdout.trim() }, 'queued DEL failed; dropped');
    return 'done';
  }

  private removeStaleTemps(): void {
    const now = Date.now();
    for (const name of readdirSync(this.opts.dir)) {
      if (!TMP.test(name)) continue;
      const file = path.join(this.opts.dir, name);
      try {
        if (now - statSync(file).mtimeMs > STALE_TMP_MS) rmSync(file, { force: true });
      } catch {
        // renamed or removed meanwhile
      }
    }
  }
}

function networkName(stdin: Buffer): string {
  try {
    const name = (JSON.parse(stdin.toString('utf8')) as { name?: unknown }).name;
    return typeof name === 'string' ? name : '';
  } catch {
    return '';
  }
}

function errorCode(stdout: string): number | undefined {
  try {
    const code = (JSON.parse(stdout) as { code?: unknown }).code;
    return typeof code === 'number' ? code : undefined;
  } catch {
    return undefined;
  }
}
