// Timed process execution the way a runtime execs CNI plugins (clean environment, config on
// stdin), and a bounded-concurrency map.
import { execFile } from 'node:child_process';

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
