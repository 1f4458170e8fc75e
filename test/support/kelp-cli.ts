// The kelp CLI and names for end-to-end fixtures, without vitest: the test support files that
// the demo and the benchmarks load as well (test/support/cluster.ts, services.ts) take these
// from here; test/support/e2e.ts re-exports them for the tests.
import { execFile } from 'node:child_process';
import { KELP_BIN, Sandbox } from '../../src/sandbox';

/**
 * A sandbox prefix unique to this process: `tag` (≤ 3 chars) + the PID in base 36, so
 * concurrent runs on one machine never share namespace names.
 */
export function e2ePrefix(tag: string): string {
  if (tag.length > 3) throw new Error(`prefix tag too long: ${tag}`);
  return tag + (process.pid % 1296).toString(36).padStart(2, '0');
}

/** `kelp ARGS --socket=<the sandbox's>`, without blocking the event loop (servers in this process keep answering). */
export function kelpAsync(sb: Sandbox, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [KELP_BIN, ...args, `--socket=${sb.socketPath}`], { encoding: 'utf8', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`kelp ${args.join(' ')} failed: ${stderr || err.message}`));
      else resolve(stdout);
    });
  });
}

/** `kelp apply|delete -f DIR --wait`: resolves once the agent says the change is programmed. */
export async function kelpApplyWait(sb: Sandbox, dir: string, verb: 'apply' | 'delete'): Promise<void> {
  const out = await kelpAsync(sb, [verb, '-f', dir, '--wait']);
  if (!/^programmed \(revision \d+\)$/m.test(out)) throw new Error(`kelp ${verb} -f ${dir} --wait did not say it was programmed: ${out}`);
}

/** Polls `fn` (which may be async) until it returns something truthy, which it resolves with; fails after `ms`. */
export async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
