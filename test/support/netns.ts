// Network namespace fixtures for tests. Every object gets a unique, short name (interface
// names are limited to 15 bytes) and is registered for removal, so a failing test still
// cleans up when `cleanupAll()` runs in afterAll/afterEach.
import { spawn, ChildProcess } from 'node:child_process';
import { sh } from '../../src/sandbox';

export { sh };
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

let counter = 0;
const runTag = (process.pid % 46656).toString(36).padStart(3, '0');

/** A name unique to this process: `<prefix><pid36><n36>`, at most 15 bytes for prefixes ≤ 8. */
export function uniqueName(prefix = 'kt'): string {
  counter += 1;
  const name = `${prefix}${runTag}${counter.toString(36)}`;
  if (name.length > 15) throw new Error(`name too long for an interface: ${name}`);
  return name;
}

type Cleanup = () => void;
const cleanups: Cleanup[] = [];

/** Registers an undo step; `cleanupAll` runs them newest first and never throws. */
export function onCleanup(fn: Cleanup): void {
  cleanups.push(fn);
}

export function cleanupAll(): void {
  while (cleanups.length > 0) {
    const fn = cleanups.pop()!;
    try {
      fn();
    } catch {
      // best effort: later steps must still run
    }
  }
}

export class Netns {
  readonly path: string;
  constructor(readonly name: string) {
    this.path = `/var/run/netns/${name}`;
  }

  /** Runs a command inside the namespace and returns its stdout. */
  exec(cmd: string, args: string[] = [], opts: { input?: string; allowFail?: boolean } = {}): string {
    return sh('ip', ['netns', 'exec', this.name, cmd, ...args], opts);
  }

  ip(...args: string[]): string {
    return sh('ip', ['-n', this.name, ...args]);
  }

  /** Starts a long-running command inside the namespace; it is killed (by PID) at cleanup. */
  spawn(cmd: string, args: string[] = []): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.name, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    onCleanup(() => {
      if (child.exitCode === null && child.pid) child.kill('SIGKILL');
    });
    return child;
  }

  ifindex(ifname: string): number {
    const out = JSON.parse(this.ip('-j', 'link', 'show', 'dev', ifname)) as Array<{ ifindex: number }>;
    return out[0].ifindex;
  }

  mac(ifname: string): string {
    const out = JSON.parse(this.ip('-j', 'link', 'show', 'dev', ifname)) as Array<{ address: string }>;
    return out[0].address;
  }

  destroy(): void {
    sh('ip', ['netns', 'del', this.name], { allowFail: true });
  }
}

/** Creates a network namespace with loopback up, removed at cleanup. */
export function createNetns(prefix = 'kt'): Netns {
  const ns = new Netns(uniqueName(prefix));
  sh('ip', ['netns', 'add', ns.name]);
  onCleanup(() => ns.destroy());
  ns.ip('link', 'set', 'lo', 'up');
  return ns;
}

/** A veth pair with one end in each namespace, both up. */
export function createVeth(a: Netns, aName: string, b: Netns, bName: string): void {
  sh('ip', ['-n', a.name, 'link', 'add', aName, 'type', 'veth', 'peer', 'name', bName, 'netns', b.name]);
  a.ip('link', 'set', aName, 'up');
  b.ip('link', 'set', bName, 'up');
}

/** A private bpffs instance in a temporary directory (each bpffs mount is its own instance). */
export function mountBpffs(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'kelp-bpffs-'));
  sh('mount', ['-t', 'bpf', 'bpf', dir]);
  onCleanup(() => {
    sh('umount', ['-l', dir], { allowFail: true });
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** A temporary directory removed at cleanup. */
export function tempDir(prefix = 'kelp-test-'): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
