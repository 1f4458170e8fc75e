// Runs bin/kelp-cni the way a runtime does: a crafted environment (nothing inherited) and stdin.
import { spawn } from 'node:child_process';
import path from 'node:path';

export const REPO_ROOT = path.join(__dirname, '../..');
export const KELP_CNI_BIN = path.join(REPO_ROOT, 'bin/kelp-cni');

export interface CniExecResult {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON, or undefined when it is not JSON. */
  json: any;
}

export interface CniExecOptions {
  env: Record<string, string>;
  /** 'closed' runs the plugin with file descriptor 0 closed. */
  stdin?: Buffer | string | 'closed';
  bin?: string;
  /** Arguments for `bin` (plugins get none; this is for wrappers such as unshare). */
  args?: string[];
  /** Kills the plugin (by PID) after this long; a hung plugin fails the test, not the run. */
  killAfterMs?: number;
}

export function execCni(opts: CniExecOptions): Promise<CniExecResult> {
  const bin = opts.bin ?? KELP_CNI_BIN;
  const closed = opts.stdin === 'closed';
  const child = closed
    ? spawn('/bin/sh', ['-c', 'exec "$0" <&-', bin], { env: opts.env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(bin, opts.args ?? [], { env: opts.env, stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout!.on('data', (d: Buffer) => out.push(d));
  child.stderr!.on('data', (d: Buffer) => err.push(d));
  if (!closed) {
    // The plugin may exit without reading stdin (no CNI_COMMAND, oversized input): EPIPE is fine.
    child.stdin!.on('error', () => {});
    child.stdin!.end(opts.stdin ?? '');
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.killAfterMs ?? 20_000);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === null) return reject(new Error(`kelp-cni killed by ${signal}`));
      const stdout = Buffer.concat(out).toString('utf8');
      let json: unknown;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code, stdout, stderr: Buffer.concat(err).toString('utf8'), json });
    });
  });
}
