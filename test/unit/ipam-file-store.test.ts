import { afterEach, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { buildSync } from 'esbuild';
import { FileIpamStore, NetworkAllocator, Owner, parseIpamConfig } from '../../src/ipam';

const NET = 'kelp-test';
const owner = (containerId: string, ifname = 'eth0'): Owner => ({ network: NET, containerId, ifname });

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'kelp-ipam-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function allocator(dataDir: string, ipam: object = { subnet: '10.0.0.0/24' }): NetworkAllocator {
  return new NetworkAllocator(parseIpamConfig(NET, { ...ipam, dataDir }), new FileIpamStore(dataDir));
}

const first = async (p: Promise<{ ips: Array<{ address: string }> }>) => (await p).ips[0].address;

describe('FileIpamStore', () => {
  it('writes host-local\'s layout atomically and leaves no temp files', async () => {
    const dataDir = tempDir();
    const a = allocator(dataDir, { ranges: [[{ subnet: '10.0.0.0/24' }], [{ subnet: 'fd00::/120' }]] });
    await a.allocate(owner('c1'));
    const dir = path.join(dataDir, NET);
    expect(readdirSync(dir).sort()).toEqual(['10.0.0.2', 'fd00::2', 'last_reserved_ip.0', 'last_reserved_ip.1']);
    expect(readFileSync(path.join(dir, '10.0.0.2'), 'utf8')).toBe('c1\r\neth0');
    expect(readFileSync(path.join(dir, 'last_reserved_ip.1'), 'utf8')).toBe('fd00::2');
    await a.release(owner('c1'));
    expect(readdirSync(dir).sort()).toEqual(['last_reserved_ip.0', 'last_reserved_ip.1']);
  });

  it('a new allocator on the same dataDir resumes leases and the round-robin position', async () => {
    const dataDir = tempDir();
    const a = allocator(dataDir);
    for (const c of ['a', 'b', 'c']) await a.allocate(owner(c));
    await a.release(owner('b'));

    const b = allocator(dataDir);
    expect(await b.get(owner('a'))).toEqual({
      owner: owner('a'), ips: [{ address: '10.0.0.2/24', gateway: '10.0.0.1', rangeIndex: 0 }], routes: [],
    });
    expect(await first(b.allocate(owner('c')))).toBe('10.0.0.4/24');
    expect(await first(b.allocate(owner('d')))).toBe('10.0.0.5/24');
    expect((await b.list()).map((x) => x.owner.containerId).sort()).toEqual(['a', 'c', 'd']);
    expect((await b.releaseAllExcept([owner('d')])).map((x) => x.owner.containerId).sort()).toEqual(['a', 'c']);
    expect(readdirSync(path.join(dataDir, NET)).sort()).toEqual(['10.0.0.5', 'last_reserved_ip.0']);
  });

  it('release leaves a file that another owner has taken since', async () => {
    const dataDir = tempDir();
    const store = new FileIpamStore(dataDir);
    expect(await store.reserve(NET, 0, { ip: '10.0.0.7', containerId: 'x', ifname: 'eth0' })).toBe(true);
    expect(await store.reserve(NET, 0, { ip: '10.0.0.7', containerId: 'y', ifname: 'eth0' })).toBe(false);
    await store.release(NET, { ip: '10.0.0.7', containerId: 'y', ifname: 'eth0' });
    expect(await store.read(NET, '10.0.0.7')).toEqual({ ip: '10.0.0.7', containerId: 'x', ifname: 'eth0' });
    await store.release(NET, { ip: '10.0.0.9', containerId: 'y', ifname: 'eth0' });
  });

  it('an allocator with a stale view skips a file another process created (link/EEXIST arbitration)', async () => {
    const dataDir = tempDir();
    const a = allocator(dataDir);
    await a.list(); // loads the (empty) state
    // Another process takes .2 and .3 behind a's back, one in the old ifname-less format.
    mkdirSync(path.join(dataDir, NET), { recursive: true });
    writeFileSync(path.join(dataDir, NET, '10.0.0.2'), 'other\r\neth0');
    writeFileSync(path.join(dataDir, NET, '10.0.0.3'), 'older');
    expect(await first(a.allocate(owner('c1')))).toBe('10.0.0.4/24');
    expect((await a.list()).map((x) => x.owner).sort((x, y) => x.containerId.localeCompare(y.containerId))).toEqual([
      owner('c1'), owner('older', ''), owner('other'),
    ]);
    expect(readFileSync(path.join(dataDir, NET, '10.0.0.2'), 'utf8')).toBe('other\r\neth0');
  });

  it('200 concurrent allocations through two instances on one dataDir are distinct', async () => {
    const dataDir = tempDir();
    const a = allocator(dataDir, { subnet: '10.0.0.0/16' });
    const b = allocator(dataDir, { subnet: '10.0.0.0/16' });
    await Promise.all([a.list(), b.list()]);
    const got = await Promise.all(Array.from({ length: 200 }, (_, i) => first((i % 2 ? a : b).allocate(owner(`c${i}`)))));
    expect(new Set(got).size).toBe(200);
    const files = readdirSync(path.join(dataDir, NET)).filter((f) => !f.startsWith('last_'));
    expect(files).toHaveLength(200);
    for (const [i, addr] of got.entries()) {
      expect(readFileSync(path.join(dataDir, NET, addr.split('/')[0]), 'utf8')).toBe(`c${i}\r\neth0`);
    }
  });

  it('four processes allocating at once never share an address', async () => {
    const work = tempDir();
    const dataDir = path.join(work, 'data');
    const bundle = path.join(work, 'ipam.js');
    buildSync({ entryPoints: [path.join(__dirname, '../../src/ipam/index.ts')], bundle: true, platform: 'node',
      format: 'cjs', outfile: bundle, logLevel: 'silent' });
    // Each child loads the empty state, waits for "go", then allocates 50 concurrently and
    // reports its addresses and how many reserves lost a race to another process.
    const child = `
      const { FileIpamStore, NetworkAllocator, parseIpamConfig } = require(${JSON.stringify(bundle)});
      const [dataDir, tag] = process.argv.slice(1);
      let lost = 0;
      class Counting extends FileIpamStore {
        async reserve(...args) { const ok = await super.reserve(...args); if (!ok) lost++; return ok; }
      }
      const a = new NetworkAllocator(parseIpamConfig(${JSON.stringify(NET)}, { subnet: '10.0.0.0/16', dataDir }),
        new Counting(dataDir));
      a.list().then(() => {
        process.stdout.write('ready\\n');
        process.stdin.once('data', async () => {
          const r = await Promise.all(Array.from({ length: 50 }, (_, i) =>
            a.allocate({ network: ${JSON.stringify(NET)}, containerId: tag + '-' + i, ifname: 'eth0' })));
          process.stdout.write(JSON.stringify({ lost, ips: r.map((x) => x.ips[0].address) }) + '\\n');
          process.exit(0);
        });
      });`;
    const procs = ['p0', 'p1', 'p2', 'p3'].map((tag) => {
      const p = spawn(process.execPath, ['-e', child, dataDir, tag], { stdio: ['pipe', 'pipe', 'inherit'] });
      let out = '';
      p.stdout.on('data', (d) => { out += d; });
      const ready = new Promise<void>((resolve) => {
        const check = () => (out.startsWith('ready\n') ? resolve() : p.stdout.once('data', check));
        check();
      });
      const done = new Promise<{ lost: number; ips: string[] }>((resolve, reject) => p.on('exit', (code) =>
        (code === 0 ? resolve(JSON.parse(out.slice('ready\n'.length))) : reject(new Error(`child exited ${code}`)))));
      return { p, ready, done, tag };
    });
    try {
      await Promise.all(procs.map((c) => c.ready));
      for (const c of procs) c.p.stdin.write('go\n');
      const results = await Promise.all(procs.map((c) => c.done));
      const ips = results.flatMap((r) => r.ips);
      expect(new Set(ips).size).toBe(200);
      // All started from the same empty view, so the later ones must have lost races and moved on.
      expect(results.reduce((n, r) => n + r.lost, 0)).toBeGreaterThan(0);
      for (const [k, r] of results.entries()) {
        for (const [i, addr] of r.ips.entries()) {
          expect(readFileSync(path.join(dataDir, NET, addr.split('/')[0]), 'utf8')).toBe(`p${k}-${i}\r\neth0`);
        }
      }
    } finally {
      for (const c of procs) if (c.p.exitCode === null) c.p.kill();
    }
  });
});

describe('interoperation with the reference host-local plugin', () => {
  const HOST_LOCAL = '/usr/lib/cni/host-local';

  function hostLocal(command: 'ADD' | 'DEL', dataDir: string, containerId: string): string {
    const conf = { cniVersion: '1.0.0', name: NET, type: 'host-local',
      ipam: { type: 'host-local', subnet: '10.0.0.0/24', dataDir } };
    return execFileSync(HOST_LOCAL, [], {
      input: JSON.stringify(conf),
      env: { CNI_COMMAND: command, CNI_CONTAINERID: containerId, CNI_NETNS: '/var/run/netns/kelp-none',
        CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' },
      encoding: 'utf8',
    });
  }

  it('each reads the other\'s leases and round-robin position', async () => {
    expect(existsSync(HOST_LOCAL)).toBe(true);
    const dataDir = tempDir();
    expect(JSON.parse(hostLocal('ADD', dataDir, 'hl1')).ips[0].address).toBe('10.0.0.2/24');

    const a = allocator(dataDir);
    expect(await a.get(owner('hl1'))).toMatchObject({ ips: [{ address: '10.0.0.2/24' }] });
    expect(await first(a.allocate(owner('k1')))).toBe('10.0.0.3/24');

    // host-local continues after kelp's last reserved address and skips kelp's leases.
    expect(JSON.parse(hostLocal('ADD', dataDir, 'hl2')).ips[0].address).toBe('10.0.0.4/24');
    // host-local recognises kelp's lease file as k1's and releases it.
    hostLocal('DEL', dataDir, 'k1');
    expect(existsSync(path.join(dataDir, NET, '10.0.0.3'))).toBe(false);

    await a.reload();
    expect(await first(a.allocate(owner('k2')))).toBe('10.0.0.5/24');
    expect((await a.list()).map((x) => x.owner.containerId).sort()).toEqual(['hl1', 'hl2', 'k2']);
  });
});
