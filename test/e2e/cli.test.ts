// The `kelp` command line against a real agent: what a user reads must be right — messages that
// name the field at fault, kubectl's refusals and spelling, status and map dumps that agree.
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KELP_BIN, Sandbox, SandboxPod } from '../../src/sandbox';
import { startSandbox } from '../support/e2e';
import { cleanupAll, tempDir } from '../support/netns';

let sb: Sandbox;
beforeAll(async () => {
  sb = await startSandbox('cli');
});
afterAll(async () => {
  await sb?.stop();
  cleanupAll();
});

/** Runs `kelp ARGS` against the sandbox's agent: exit code, stdout and stderr. */
function kelp(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [KELP_BIN, ...args, `--socket=${sb.socketPath}`], { encoding: 'utf8' });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

function manifest(name: string, text: string): string {
  const dir = tempDir('kelp-cli-');
  const f = path.join(dir, name);
  writeFileSync(f, text);
  return f;
}

describe('kelp apply', () => {
  it('says a missing field is missing', () => {
    const r = kelp('apply', '-f', manifest('nameless.yaml', 'apiVersion: v1\nkind: Pod\nmetadata:\n  namespace: default\n'));
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/nameless\.yaml: metadata\.name: required, missing/);
    expect(r.err).not.toMatch(/undefined/);
  });

  it('refuses a Pod whose namespace does not exist, as kubectl would, and creates nothing', () => {
    const r = kelp('apply', '-f', manifest('orphan.yaml', 'apiVersion: v1\nkind: Pod\nmetadata: {name: lost, namespace: nowhere}\n'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/Pod\/nowhere\/lost: metadata\.namespace: namespace "nowhere" not found/);
    expect(JSON.parse(kelp('get', 'pods', '-o', 'json').out)).not.toContainEqual(expect.objectContaining({ name: 'lost' }));
  });

  it('accepts the namespace in the same apply and names objects as kubectl does', () => {
    const r = kelp(
      'apply',
      '-f',
      manifest('shop.yaml', 'apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop, labels: {app: web}}\n'),
    );
    expect(r.err).toBe('');
    expect(r.out).toBe('Namespace/shop created\nPod/shop/web created\n');
    // `default` exists without a manifest, as in every cluster.
    expect(kelp('apply', '-f', manifest('d.yaml', 'apiVersion: v1\nkind: Pod\nmetadata: {name: plain}\n')).out).toBe('Pod/default/plain created\n');
  });
});

describe('kelp apply --wait', () => {
  it('returns once the change is programmed, and says at which revision', () => {
    const r = kelp('apply', '--wait', '-f', manifest('wait.yaml', 'apiVersion: v1\nkind: Namespace\nmetadata: {name: waited}\n'));
    expect(r.err).toBe('');
    const m = /^Namespace\/waited created\nprogrammed \(revision (\d+)\)\n$/.exec(r.out);
    expect(m).not.toBeNull();
    const st = JSON.parse(kelp('status', '-o', 'json').out) as { store: { revision: number; programmed: number } };
    expect(st.store.programmed).toBeGreaterThanOrEqual(Number(m![1]));
  });

  it('a revision the store has not reached times out with 504, not a hang', async () => {
    const http = await import('node:http');
    const status = await new Promise<number>((resolve, reject) => {
      http.get({ socketPath: sb.socketPath, path: '/v1/programmed?revision=999999&timeoutMs=200' }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      }).on('error', reject);
    });
    expect(status).toBe(504);
  });
});

describe('kelp status, map dump and get counters', () => {
  let a: SandboxPod;
  let b: SandboxPod;
  beforeAll(async () => {
    a = await sb.addPod('web', 'shop');
    b = await sb.addPod('plain', 'default');
    sb.exec(a.netns, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', b.ip]);
  });

  it('every map\'s ENTRIES in status is the number of rows its dump lists', () => {
    const st = JSON.parse(kelp('status', '-o', 'json').out) as { maps: Array<{ name: string; entries: number; description?: string }> };
    expect(st.maps.map((m) => m.name)).toEqual(expect.arrayContaining(['kelp_endpoints', 'kelp_metrics', 'kelp_metrics_fwd', 'kelp_endpoint_cache']));
    for (const m of st.maps) {
      const dump = JSON.parse(kelp('map', 'dump', m.name, '-o', 'json').out) as { entries: unknown[]; description?: string };
      expect(dump.entries.length, m.name).toBe(m.entries);
      expect(m.description, m.name).toBeTruthy();
      expect(dump.description).toBe(m.description);
    }
    // Traffic happened: forwarded counters of these endpoints live in kelp_metrics_fwd.
    expect(st.maps.find((m) => m.name === 'kelp_metrics_fwd')!.entries).toBeGreaterThanOrEqual(4);
    const table = kelp('status').out;
    expect(table).toMatch(/kelp_metrics_fwd +PERCPU_ARRAY +\d+ +8192 +- +forwarded packets\/bytes per endpoint/);
  });

  it('get counters adds both maps up, per pod', () => {
    const rows = JSON.parse(kelp('get', 'counters', '-o', 'json').out) as Array<{ pod: string | null; direction: string; reason: string; packets: string }>;
    const fwd = (pod: string, dir: string) => rows.filter((r) => r.pod === pod && r.direction === dir && r.reason === 'forwarded').reduce((n, r) => n + Number(r.packets), 0);
    expect(fwd('shop/web', 'from-pod')).toBeGreaterThanOrEqual(3);
    expect(fwd('shop/web', 'to-pod')).toBeGreaterThanOrEqual(3);
    expect(fwd('default/plain', 'from-pod')).toBeGreaterThanOrEqual(3);
    expect(kelp('get', 'counters').out).toMatch(/^ENDPOINT +POD +DIRECTION +REASON +PACKETS +BYTES\n/);
  });
});

describe('kelp health', () => {
  it('exits 0 for a ready agent and 1 for one that is not there', () => {
    expect(kelp('health')).toMatchObject({ code: 0, out: 'ready\n' });
    const r = spawnSync(process.execPath, [KELP_BIN, 'health', '--socket=/nonexistent/kelp.sock'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/not reachable at \/nonexistent\/kelp\.sock/);
  });
});

describe('kelp itself', () => {
  it('agent --help names each default once', () => {
    const help = execFileSync(process.execPath, [KELP_BIN, 'agent', '--help'], { encoding: 'utf8' });
    expect(help.split('/run/kelp/state').length - 1).toBe(1);
  });

  it('before `make build`, says to run it instead of a stack trace', () => {
    const root = tempDir('kelp-unbuilt-');
    mkdirSync(path.join(root, 'bin'));
    copyFileSync(KELP_BIN, path.join(root, 'bin/kelp'));
    const r = spawnSync(process.execPath, [path.join(root, 'bin/kelp'), 'status'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^kelp: not built yet .*: run `make build` in .* first\n$/);
  });
});
