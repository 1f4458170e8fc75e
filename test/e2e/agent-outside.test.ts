// Defects found by running the agent from the outside, as a new user would: the bpffs it pins
// under (missing, or private to `ip netns exec`'s mount namespace), the API socket's exposure
// to other users, and floods of idle or half-sent connections. Each agent runs in a network
// namespace of this file's own, with every path under a temporary directory.
import { ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync } from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KELP_BIN, Sandbox, sh } from '../../src/sandbox';
import { e2ePrefix, startSandbox } from '../support/e2e';

const prefix = e2ePrefix('out');
const NETNS = `${prefix}-n`;
const NETNS_PATH = `/var/run/netns/${NETNS}`;
const dirs: string[] = [];
const children = new Set<ChildProcess>();
const mounts: string[] = [];

function tempDir(mode = 0o700): string {
  const d = mkdtempSync(path.join(tmpdir(), `kelp-${prefix}-`));
  chmodSync(d, mode);
  dirs.push(d);
  return d;
}

beforeAll(() => {
  sh('ip', ['netns', 'add', NETNS]);
});

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 100));
  for (const m of mounts) sh('umount', ['-l', m], { allowFail: true });
  sh('ip', ['netns', 'del', NETNS], { allowFail: true });
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Started {
  child: ChildProcess;
  dir: string;
  socket: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** `kelp agent` in this file's netns, entered the way the caller says; every path but the bpf root under `dir`. */
function spawnAgent(opts: { via: 'ip-netns-exec' | 'nsenter'; dir?: string; bpfRoot?: string; runDir?: string; umask?: string }): Started {
  const dir = opts.dir ?? tempDir();
  const runDir = opts.runDir ?? path.join(dir, 'run');
  const args = [
    KELP_BIN,
    'agent',
    `--run-dir=${runDir}`,
    `--state-dir=${path.join(dir, 'state')}`,
    `--cni-bin-dir=${path.join(dir, 'bin')}`,
    `--cni-conf-dir=${path.join(dir, 'net.d')}`,
    `--log-file=${path.join(dir, 'agent.log')}`,
    ...(opts.bpfRoot ? [`--bpf-root=${opts.bpfRoot}`] : []),
  ];
  const enter = opts.via === 'ip-netns-exec' ? ['ip', 'netns', 'exec', NETNS] : ['nsenter', `--net=${NETNS_PATH}`];
  const argv = [...enter, process.execPath, ...args];
  const child = opts.umask
    ? spawn('sh', ['-c', `umask ${opts.umask} && exec "$@"`, 'sh', ...argv], { stdio: ['ignore', 'ignore', 'pipe'] })
    : spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  return { child, dir, socket: path.join(runDir, 'kelp.sock'), stderr: () => err, exited };
}

function get(socket: string, p: string): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath: socket, path: p, timeout: 2000 }, (res) => {
      let b = '';
      res.on('data', (d) => (b += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b ? JSON.parse(b) : undefined }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

async function waitReady(a: Started, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (a.child.exitCode !== null) throw new Error(`agent exited with ${a.child.exitCode}: ${a.stderr()}`);
    try {
      if ((await get(a.socket, '/v1/healthz')).status === 200) return;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`agent not ready after ${ms} ms: ${a.stderr()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** SIGTERM, and how long the agent took to exit (null: it did not within 5 s). */
async function term(a: Started): Promise<{ code: number | null; ms: number | null }> {
  const t0 = Date.now();
  a.child.kill('SIGTERM');
  const code = await Promise.race([a.exited, new Promise<'late'>((r) => setTimeout(() => r('late'), 5000))]);
  if (code === 'late') {
    a.child.kill('SIGKILL');
    await a.exited;
    return { code: null, ms: null };
  }
  return { code, ms: Date.now() - t0 };
}

describe('the bpffs the agent pins under', () => {
  it('with the default root and nothing at /sys/fs/bpf (under ip netns exec): mounts one, starts, says the pins will not outlive it, stops on SIGTERM', async () => {
    // /sys inside `ip netns exec` is a fresh sysfs of its own mount namespace: the mount the
    // agent makes at /sys/fs/bpf there never reaches the machine's.
    const a = spawnAgent({ via: 'ip-netns-exec' });
    await waitReady(a);
    const st = (await get(a.socket, '/v1/status')).body;
    expect(st.bpffs).toMatchObject({ root: '/sys/fs/bpf/kelp', mounted: '/sys/fs/bpf', persistent: 'no' });
    expect(st.bpffs.reason).toMatch(/private mount namespace/);
    const table = sh(process.execPath, [KELP_BIN, 'status', `--socket=${a.socket}`]);
    expect(table).toMatch(/bpf root: +\/sys\/fs\/bpf\/kelp \(PINS DO NOT OUTLIVE THE AGENT\)/);
    expect(table).toMatch(/WARNING: .*nsenter --net/);
    expect(readFileSync(path.join(a.dir, 'agent.log'), 'utf8')).toMatch(/PINS WILL NOT OUTLIVE THIS AGENT/);
    const t = await term(a);
    expect(t.code).toBe(0);
    expect(t.ms).toBeLessThan(3000);
    expect(readFileSync(path.join(a.dir, 'agent.log'), 'utf8')).toMatch(/its pins go with its mount namespace/);
  });

  it('a root that cannot be made fails at once and says what to do', async () => {
    const t0 = Date.now();
    const a = spawnAgent({ via: 'ip-netns-exec', bpfRoot: '/sys/kernel/kelp-nope/pins' });
    const code = await Promise.race([a.exited, new Promise<'late'>((r) => setTimeout(() => r('late'), 10_000))]);
    expect(code).toBe(1);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(a.stderr()).toMatch(/kelp agent: --bpf-root \/sys\/kernel\/kelp-nope\/pins: \/sys\/kernel is on sysfs.*\/sys\/fs\/bpf/);
  });

  it('a plain directory under ip netns exec: the agent mounts a bpffs there and reports that its pins die with it', async () => {
    const dir = tempDir();
    const a = spawnAgent({ via: 'ip-netns-exec', dir, bpfRoot: path.join(dir, 'bpf') });
    await waitReady(a);
    expect((await get(a.socket, '/v1/status')).body.bpffs).toMatchObject({ persistent: 'no', mounted: path.join(dir, 'bpf') });
    expect((await term(a)).code).toBe(0);
    // What the warning said: nothing of it is left in the machine's mount namespace.
    expect(readdirSync(path.join(dir, 'bpf'))).toEqual([]);
  });

  it('the README way (nsenter --net): the bpffs is mounted where it outlives the agent, and a restart finds its pins', async () => {
    const dir = tempDir();
    const root = path.join(dir, 'bpf');
    mounts.push(root);
    const a = spawnAgent({ via: 'nsenter', dir, bpfRoot: root });
    await waitReady(a);
    expect((await get(a.socket, '/v1/status')).body.bpffs).toMatchObject({ persistent: 'yes', mounted: root });
    expect((await term(a)).code).toBe(0);
    expect(readdirSync(root)).toEqual(expect.arrayContaining(['kelp_endpoints', 'kelp_metrics']));
    const b = spawnAgent({ via: 'nsenter', dir, bpfRoot: root });
    await waitReady(b);
    const st = (await get(b.socket, '/v1/status')).body.bpffs;
    expect(st.persistent).toBe('yes');
    expect(st.mounted).toBeUndefined();
    expect((await term(b)).code).toBe(0);
  });

  it('a bpffs mounted before the agent from the machine\'s namespace counts as lasting (the test harness\'s way)', async () => {
    const dir = tempDir();
    const root = path.join(dir, 'bpf');
    mkdirSync(root);
    sh('mount', ['-t', 'bpf', 'bpf', root]);
    mounts.push(root);
    const a = spawnAgent({ via: 'ip-netns-exec', dir, bpfRoot: root });
    await waitReady(a);
    const st = (await get(a.socket, '/v1/status')).body.bpffs;
    expect(st.persistent).toBe('yes');
    expect(st.reason).toMatch(/also mounted in mount namespace/);
    expect((await term(a)).code).toBe(0);
  });
});

describe('the API socket is root\'s alone', () => {
  it('refuses a run directory others can write, or a symlink, before creating anything', async () => {
    for (const [mode, what] of [
      [0o777, /writable by everyone \(mode 777\)/],
      [0o1777, /writable by everyone \(mode 1777\)/],
      [0o775, /writable by its group \(mode 775\)/],
    ] as const) {
      const dir = tempDir(0o755);
      const runDir = path.join(dir, 'run');
      mkdirSync(runDir);
      chmodSync(runDir, mode);
      const a = spawnAgent({ via: 'ip-netns-exec', dir, runDir, bpfRoot: path.join(dir, 'bpf') });
      expect(await a.exited).toBe(1);
      expect(a.stderr()).toMatch(what);
      expect(existsSync(path.join(dir, 'state'))).toBe(false);
    }
    const dir = tempDir(0o755);
    mkdirSync(path.join(dir, 'real'), { mode: 0o700 });
    symlinkSync(path.join(dir, 'real'), path.join(dir, 'run'));
    const a = spawnAgent({ via: 'ip-netns-exec', dir, bpfRoot: path.join(dir, 'bpf') });
    expect(await a.exited).toBe(1);
    expect(a.stderr()).toMatch(/is not a directory \(a symlink\?\)/);
  });

  it('under umask 000 in an existing world-searchable run dir, another user never connects, not even while it starts', async () => {
    const dir = tempDir(0o755);
    const runDir = path.join(dir, 'run');
    mkdirSync(runDir, { mode: 0o755 });
    chmodSync(runDir, 0o755);
    const socket = path.join(runDir, 'kelp.sock');
    // `nobody` hammers connect() on the socket path for as long as the agent starts and runs.
    const probe = spawn(
      'setpriv',
      [
        '--reuid=65534',
        '--regid=65534',
        '--clear-groups',
        process.execPath,
        '-e',
        `const net = require('net'); let ok = 0, tries = 0; const end = Date.now() + 12000;
         const once = () => { if (Date.now() > end) { console.log(JSON.stringify({ ok, tries })); return; }
           tries++; const s = net.connect(${JSON.stringify(socket)});
           s.on('connect', () => { ok++; s.destroy(); setImmediate(once); }); s.on('error', () => setImmediate(once)); };
         once();`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.add(probe);
    let out = '';
    probe.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const probeDone = new Promise<void>((r) => probe.once('exit', () => r()));
    await new Promise((r) => setTimeout(r, 200));
    for (let i = 0; i < 3; i++) {
      const a = spawnAgent({ via: 'ip-netns-exec', dir, runDir, bpfRoot: path.join(dir, 'bpf'), umask: '000' });
      await waitReady(a);
      expect(statSync(socket).mode & 0o777).toBe(0o600);
      expect((await term(a)).code).toBe(0);
    }
    await probeDone;
    const r = JSON.parse(out) as { ok: number; tries: number };
    expect(r.tries).toBeGreaterThan(100);
    expect(r.ok).toBe(0);
  });
});

describe('floods of connections', () => {
  let sb: Sandbox;
  beforeAll(async () => {
    sb = await startSandbox('ofl');
  });
  afterAll(async () => {
    await sb?.stop();
  });

  function agentSockets(): number {
    const pid = sb.agent!.pid!;
    return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:');
      } catch {
        return false;
      }
    }).length;
  }

  it('3,000 half-sent requests neither exhaust the agent nor crowd out CNI, and cost a few log lines', async () => {
    const before = agentSockets();
    const clients: net.Socket[] = [];
    for (let i = 0; i < 3000; i++) {
      const s = net.connect(sb.socketPath);
      s.on('error', () => undefined);
      clients.push(s);
      s.on('connect', () => s.write(`POST /v1/cni HTTP/1.1\r\nhost: kelp\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{"half":`));
      if (i % 200 === 199) await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 500));
    // Bounded: the oldest unserved connections make room for new ones.
    expect(agentSockets() - before).toBeLessThanOrEqual(512);
    const pod = await sb.addPod('flood-a');
    expect(pod.ip).toMatch(/^10\.244\.0\./);
    for (const s of clients) s.destroy();
    await new Promise((r) => setTimeout(r, 500));
    const log = sb.agentLog();
    expect(log).not.toMatch(/api request failed/);
    const lines = log.split('\n').filter((l) => /API connections/.test(l));
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.length).toBeLessThanOrEqual(6);
    expect(agentSockets()).toBeLessThanOrEqual(before + 2);
  });

  it('a connection that sends nothing is closed by the agent within its header timeout', async () => {
    const s = net.connect(sb.socketPath);
    s.on('error', () => undefined);
    s.resume(); // without a reader, Node may never report the agent's EOF
    const t0 = Date.now();
    await new Promise<void>((r) => s.once('close', () => r()));
    const ms = Date.now() - t0;
    expect(ms).toBeGreaterThan(5_000);
    expect(ms).toBeLessThan(20_000);
  }, 30_000);
});
