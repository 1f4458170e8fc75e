// The benchmark's C tools (bench/tools/*.c → build/bench/*): the Makefile builds them for
// `make bench`; a run started another way builds one here when it is missing or older than its
// source.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { progress } from './progress';

const ROOT = path.join(__dirname, '../..');

/** The path of build/bench/<name>, built from bench/tools/<name>.c first when needed. */
export function benchTool(name: string): string {
  const src = path.join(ROOT, 'bench/tools', `${name}.c`);
  const bin = path.join(ROOT, 'build/bench', name);
  if (existsSync(bin) && statSync(bin).mtimeMs >= statSync(src).mtimeMs) return bin;
  progress(`building ${path.relative(ROOT, bin)}`);
  mkdirSync(path.dirname(bin), { recursive: true });
  execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', bin, src], { stdio: 'inherit' });
  return bin;
}
