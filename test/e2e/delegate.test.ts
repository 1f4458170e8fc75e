// Delegation to a real IPAM plugin (Debian's host-local) and to small scripted delegates that
// record what they were given, exactly as SPEC §4 describes.
import { afterAll, describe, expect, it } from 'vitest';
import { chmodSync, existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execDelegate, findPlugin } from '../../src/cni/delegate';
import { CniError } from '../../src/cni';
import { cleanupAll, tempDir } from '../support/netns';

afterAll(cleanupAll);

const REF = '/usr/lib/cni';

function config(dataDir: string, extra: Record<string, unknown> = {}): Buffer {
  return Buffer.from(
    JSON.stringify({ cniVersion: '1.0.0', name: 'deltest', type: 'kelp-cni', ipam: { type: 'host-local', subnet: '10.77.0.0/29', dataDir }, ...extra }),
  );
}

const env = (cid: string) => ({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: cid, CNI_NETNS: '/var/run/netns/none', CNI_IFNAME: 'eth0', CNI_PATH: REF });

describe('delegated IPAM', () => {
  it('finds the plugin in CNI_PATH order, skipping missing dirs', () => {
    expect(findPlugin('host-local', ['/nonexistent', REF])).toBe(path.join(REF, 'host-local'));
    expect(() => findPlugin('host-local', ['/nonexistent'])).toThrow(/failed to find plugin "host-local" in path \[\/nonexistent\]/);
    expect(() => findPlugin('../bin/sh', [REF])).toThrow(CniError);
  });

  it('runs host-local ADD and DEL with the same env and stdin, and uses its result', async () => {
    const dir = tempDir();
    const stdin = config(dir);
    const res = await execDelegate({ type: 'host-local', command: 'ADD', path: ['/nonexistent', REF], env: env('c1'), stdin, cniVersion: '1.0.0' });
    expect(res?.ips[0].address).toBe('10.77.0.2/29');
    expect(res?.ips[0].gateway).toBe('10.77.0.1');
    expect(readFileSync(path.join(dir, 'deltest', '10.77.0.2'), 'utf8')).toMatch(/^c1/);
    await execDelegate({ type: 'host-local', command: 'DEL', path: [REF], env: env('c1'), stdin, cniVersion: '1.0.0' });
    expect(existsSync(path.join(dir, 'deltest', '10.77.0.2'))).toBe(false);
  });

  it("passes the delegate's error object on as ours", async () => {
    const dir = tempDir();
    const stdin = config(dir);
    // A /29 has 5 usable addresses after the gateway: the sixth ADD must fail inside host-local.
    for (let i = 0; i < 5; i++) await execDelegate({ type: 'host-local', command: 'ADD', path: [REF], env: env(`c${i}`), stdin, cniVersion: '1.0.0' });
    const err = await execDelegate({ type: 'host-local', command: 'ADD', path: [REF], env: env('c9'), stdin, cniVersion: '1.0.0' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).msg).toMatch(/no IP addresses available/);
    expect(readdirSync(path.join(dir, 'deltest')).filter((f) => f.startsWith('10.'))).toHaveLength(5);
  });

  it('gives the delegate exactly our environment and stdin, with only CNI_COMMAND changed', async () => {
    const dir = tempDir();
    const spy = path.join(dir, 'spy-ipam');
    writeFileSync(
      spy,
      `#!/bin/sh\nenv | grep '^CNI_' | sort > ${dir}/env.$CNI_COMMAND\ncat > ${dir}/stdin.$CNI_COMMAND\n` +
        `[ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"1.0.0","ips":[{"address":"10.1.2.3/24","gateway":"10.1.2.1"}],"dns":{}}'\nexit 0\n`,
    );
    chmodSync(spy, 0o755);
    const stdin = config(dir, { ipam: { type: 'spy-ipam' }, extra: 'é' });
    const e = { ...env('abc'), CNI_ARGS: 'K8S_POD_NAME=p;IgnoreUnknown=1', CNI_PATH: `/nonexistent:${dir}` };
    const res = await execDelegate({ type: 'spy-ipam', command: 'ADD', path: ['/nonexistent', dir], env: e, stdin, cniVersion: '1.0.0' });
    expect(res?.ips).toEqual([{ address: '10.1.2.3/24', gateway: '10.1.2.1', interface: undefined }]);
    expect(readFileSync(path.join(dir, 'stdin.ADD'))).toEqual(stdin);
    const seen = readFileSync(path.join(dir, 'env.ADD'), 'utf8').trim().split('\n');
    expect(seen).toEqual(Object.entries(e).map(([k, v]) => `${k}=${v}`).sort());
    await execDelegate({ type: 'spy-ipam', command: 'DEL', path: [dir], env: e, stdin, cniVersion: '1.0.0' });
    expect(readFileSync(path.join(dir, 'env.DEL'), 'utf8')).toContain('CNI_COMMAND=DEL');
  });

  it('reports a delegate that dies without an error object', async () => {
    const dir = tempDir();
    const bad = path.join(dir, 'bad-ipam');
    writeFileSync(bad, '#!/bin/sh\necho boom >&2\nexit 3\n');
    chmodSync(bad, 0o755);
    let stderr = '';
    const err = await execDelegate({ type: 'bad-ipam', command: 'ADD', path: [dir], env: env('x'), stdin: config(dir), cniVersion: '1.0.0', onStderr: (t) => (stderr += t) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CniError);
    expect((err as CniError).msg).toBe('delegated plugin bad-ipam ADD failed: exit status 3');
    expect(stderr).toBe('boom\n');
  });
});
