// Where the DEL queue lives, and the move of an older agent's queue (DelQueue.adopt), on real
// directories: a temp dir and /dev/shm (tmpfs, so a move between them crosses file systems).
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DelQueue, delQueueDirFor } from '../../src/agent/delqueue';
import { buildConflist } from '../../src/agent/install';
import { silentLogger } from '../../src/log';

const roots: string[] = [];
let n = 0;

beforeAll(() => {
  roots.push(mkdtempSync(path.join(tmpdir(), 'kelp-dq-unit-')));
  if (existsSync('/dev/shm')) roots.push(mkdtempSync('/dev/shm/kelp-dq-unit-'));
});
afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

function queueIn(root: string): DelQueue {
  n += 1;
  const q = new DelQueue({
    dir: path.join(root, `run${n}`, 'del-queue'),
    log: silentLogger,
    handle: () => Promise.reject(new Error('no replay here')),
    createdAt: () => undefined,
  });
  q.ensure();
  return q;
}

/** An older agent's queue with `entries` (name → body) and `others` (name → body). */
function legacy(root: string, entries: Record<string, string>, others: Record<string, string> = {}): string {
  n += 1;
  const dir = path.join(root, `state${n}`, 'del-queue');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const [name, body] of Object.entries({ ...entries, ...others })) writeFileSync(path.join(dir, name), body, { mode: 0o600 });
  return dir;
}

const E1 = '1764990000000000000-11.del';
const E2 = '1764990000000000001-12.del';

describe('delQueueDirFor', () => {
  it.each([
    ['/run/kelp/kelp.sock', '/run/kelp/del-queue'],
    ['/tmp/x/run/kelp.sock', '/tmp/x/run/del-queue'],
    ['/kelp.sock', '/del-queue'],
  ])('%s → %s (as kelp-cni derives it)', (socket, dir) => {
    expect(delQueueDirFor(socket)).toBe(dir);
  });

  it('the conflist names no queue', () => {
    const conf = buildConflist({ networkName: 'kelp', socketPath: '/run/kelp/kelp.sock', mtu: 1500, podCidr: '10.244.0.0/24', masquerade: true });
    expect(JSON.stringify(conf)).not.toContain('delQueueDir');
  });
});

describe('DelQueue.adopt', () => {
  it('moves the entries under their names, drops temp files, removes the old directory', () => {
    for (const [from, to] of [[roots[0], roots[0]], [roots[roots.length - 1], roots[0]]]) {
      const q = queueIn(to);
      const old = legacy(from, { [E1]: 'one', [E2]: 'two' }, { '.1764990000000000002-13.del.tmp': 'half' });
      expect(q.adopt(old)).toBe(2);
      expect(existsSync(old)).toBe(false);
      expect(readdirSync(q.dir).sort()).toEqual([E1, E2]);
      expect(q.list().map((e) => path.basename(e.file))).toEqual([E1, E2]);
      expect(readFileSync(path.join(q.dir, E2), 'utf8')).toBe('two');
      expect(statSync(path.join(q.dir, E1)).mode & 0o777).toBe(0o600);
    }
  });

  it('keeps the old directory while it holds something else', () => {
    const q = queueIn(roots[0]);
    const old = legacy(roots[0], { [E1]: 'one' }, { 'README': 'not ours' });
    expect(q.adopt(old)).toBe(1);
    expect(readdirSync(old)).toEqual(['README']);
    expect(readdirSync(q.dir)).toEqual([E1]);
  });

  it('no old directory, or the same one: nothing to do', () => {
    const q = queueIn(roots[0]);
    expect(q.adopt(path.join(roots[0], 'never-made'))).toBe(0);
    writeFileSync(path.join(q.dir, E1), 'mine');
    expect(q.adopt(path.join(q.dir, '.'))).toBe(0);
    expect(readdirSync(q.dir)).toEqual([E1]);
  });
});
