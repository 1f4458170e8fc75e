// Timed process execution the way a runtime execs CNI plugins (clean environment, config on
// stdin), a bounded-concurrency map, and load generators and their servers, tracked for cleanup.
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { defer, throwIfInterrupted } from './cleanup';

export interface TimedRun {
  ms: number;
  code: number;
  stdout: string;
  stderr: string;
}

const PATH = '/usr/sbin:/usr/bin:/sbin:/bin';

/** Wall time from spawn to exit with all output read, as a runtime waiting for the plugin sees it. */
export function timedExec(cmd: string, args: string[], env: Record<string, string>, stdin: string): Promise<TimedRun> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = execFile(cmd, args, { env: { PATH, ...env }, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      let code = 0;
      if (err) {
        const c = (err as { code?: unknown }).code;
        if (typeof c !== 'number') return reject(err);
        code = c;
      }
      resolve({ ms, code, stdout, stderr });
    });
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(stdin);
  });
}

/** fn over items with at most `limit` in flight; results in item order. */
export async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * Runs a command to completion and returns its stdout; a non-zero exit, a signal or running
 * past timeoutMs (then SIGKILL'd) throws with its stderr. The process is killed by the
 * benchmark's cleanup if the run is interrupted meanwhile.
 */
export function run(cmd: string, args: string[], opts: { timeoutMs: number }): Promise<string> {
  throwIfInterrupted();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const untrack = defer(() => killChild(child));
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      void untrack(false);
      if (code === 0) resolve(stdout);
      else reject(new Error(`${cmd} ${args.join(' ')}: ${signal ? `killed by ${signal}` : `exit ${code}`}: ${stderr.trim() || stdout.trim()}`));
    });
  });
}

export interface Server {
  pid: number;
  /** SIGTERM by PID and wait for the exit (SIGKILL after a second). Stopping twice is harmless. */
  stop(): Promise<void>;
}

/** Starts a server process and resolves once a line of its stdout matches `ready`. */
export function startServer(cmd: string, args: string[], ready: RegExp, opts: { timeoutMs: number }): Promise<Server> {
  throwIfInterrupted();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const stop = defer(() => killChild(child));
    let out = '';
    let err = '';
    let started = false;
    const fail = (why: string) => {
      if (started) return;
      started = true;
      clearTimeout(timer);
      void stop().then(() => reject(new Error(`${cmd} ${args.join(' ')}: ${why}: ${err.trim() || out.trim()}`)));
    };
    const timer = setTimeout(() => fail(`not ready after ${opts.timeoutMs} ms`), opts.timeoutMs);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (!started && ready.test(out)) {
        started = true;
        clearTimeout(timer);
        resolve({ pid: child.pid!, stop: () => stop() });
      }
    });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => fail(e.message));
    child.on('exit', (code, signal) => fail(`exited (${signal ?? code}) before it was ready`));
  });
}

async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const late = setTimeout(() => child.kill('SIGKILL'), 1000);
  await exited;
  clearTimeout(late);
}
