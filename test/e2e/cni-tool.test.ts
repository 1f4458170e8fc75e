// `kelp cni` (src/cli/cni-tool.ts) run as an operator runs it: the real CLI, Debian's reference
// plugins from /usr/lib/cni and kelp-cni against a real agent. validate must name the field of
// every problem, the missing plugin and the unsupported version; add/check/del must run a chain
// as libcni does (order, prevResult, runtimeConfig, result cache) in namespaces this file makes.
// The reference chains run inside a "node" namespace of their own, so bridges, veths and
// iptables rules never touch the machine's network.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { KELP_BIN, Sandbox, sh } from '../../src/sandbox';
import { addresses, e2ePrefix, NETWORK } from '../support/e2e';
import { cleanupAll, createNetns, Netns, tempDir, uniqueName } from '../support/netns';

const REF = '/usr/lib/cni';
const PATH = '/usr/sbin:/usr/bin:/sbin:/bin';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
  json: any;
}

/** `kelp cni ARGS`, inside `netns` when given, with nothing of the test's environment. */
function kelpCni(args: string[], netns?: Netns): Promise<Run> {
  const cli = [process.execPath, KELP_BIN, 'cni', ...args];
  const [cmd, ...argv] = netns ? ['ip', 'netns', 'exec', netns.name, ...cli] : cli;
  return new Promise((resolve) => {
    execFile(cmd, argv, { env: { PATH }, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: number }).code ?? 1) : 0;
      let json: unknown;
      try {
        json = JSON.parse(stdout);
      } catch {
        json = undefined;
      }
      resolve({ code, stdout, stderr, json });
    });
  });
}

function writeJson(dir: string, name: string, doc: unknown): string {
  const file = path.join(dir, name);
  writeFileSync(file, JSON.stringify(doc, null, 2) + '\n');
  return file;
}

/** cnitool's container ID for a netns path, computed independently of the tool. */
function cnitoolId(netnsPath: string): string {
  return 'cnitool-' + createHash('sha512').update(netnsPath).digest('hex').slice(0, 20);
}

const problemPaths = (r: Run): string[] => (r.json.problems as Array<{ path: string }>).map((p) => p.path);
const problem = (r: Run, p: string): { severity: string; message: string } | undefined => r.json.problems.find((x: { path: string }) => x.path === p);

afterAll(cleanupAll);

describe('kelp cni validate', () => {
  const dir = tempDir('kelp-cnitool-');
  const bridgeChain = (extra: Record<string, unknown> = {}): Record<string, any> => ({
    cniVersion: '1.0.0',
    name: 'refnet',
    plugins: [
      { type: 'bridge', bridge: 'kctbr0', ipam: { type: 'host-local', subnet: '10.251.0.0/24' } },
      { type: 'tuning', capabilities: { mac: true } },
    ],
    ...extra,
  });

  it('accepts bridge + host-local + tuning, listing every binary found and the versions it supports', async () => {
    const file = writeJson(dir, 'good.conflist', bridgeChain());
    const r = await kelpCni(['validate', file, '--cni-path', `/nonexistent:${REF}`, '-o', 'json']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.json).toMatchObject({ valid: true, kind: 'conflist', name: 'refnet', cniVersion: '1.0.0', capabilities: ['mac'], problems: [] });
    expect(r.json.plugins.map((p: { path: string; type: string; binary: string }) => [p.path, p.type, p.binary])).toEqual([
      ['plugins[0]', 'bridge', `${REF}/bridge`],
      ['plugins[0].ipam', 'host-local', `${REF}/host-local`],
      ['plugins[1]', 'tuning', `${REF}/tuning`],
    ]);
    for (const p of r.json.plugins) expect(p.supportedVersions).toContain('1.0.0');

    const text = await kelpCni(['validate', file, '--cni-path', REF]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/plugins\[0\]\.ipam\s+host-local\s+\/usr\/lib\/cni\/host-local\s+0\.1\.0 .*1\.0\.0/);
    expect(text.stdout.trimEnd().split('\n').pop()).toBe('valid');
  });

  it('names the field of every problem, and says which ones make libcni refuse the file', async () => {
    const file = writeJson(dir, 'fields.conflist', {
      cniVersion: '1.0.0',
      cniVersions: ['1.0.0', 5],
      name: 'bad name',
      disableCheck: 'yes',
      plugins: [
        { type: 'bridge', dns: { nameservers: '10.0.0.1' } },
        { ipam: { type: 'host-local' } },
        { type: 'tuning', capabilities: { mac: 'yes' } },
      ],
    });
    const r = await kelpCni(['validate', file, '--cni-path', REF, '-o', 'json']);
    expect(r.code).toBe(1);
    expect(r.json.valid).toBe(false);
    expect(problemPaths(r)).toEqual(
      expect.arrayContaining(['name', 'cniVersions[1]', 'disableCheck', 'plugins[0].dns.nameservers', 'plugins[1].type', 'plugins[2].capabilities.mac']),
    );
    expect(problem(r, 'plugins[1].type')).toMatchObject({ severity: 'error', message: 'missing', libcniRefuses: true });
    expect(problem(r, 'disableCheck')?.message).toBe('must be true or false, got "yes"');
    // A name libcni loads but refuses on ADD is an error too, without making the file unloadable.
    expect(problem(r, 'name')).toMatchObject({ severity: 'error', libcniRefuses: false });

    const text = await kelpCni(['validate', file, '--cni-path', REF]);
    expect(text.code).toBe(1);
    expect(text.stdout).toContain('plugins[1].type: missing [libcni refuses the file]');
    expect(text.stdout).toContain('plugins[2].capabilities.mac: must be true or false, got "yes"');
    expect(text.stdout).toMatch(/invalid: \d+ errors/);
  });

  it('reads a .conf as one plugin, as libcni does, and says so when it holds a conflist', async () => {
    const file = writeJson(dir, '10-list.conf', bridgeChain());
    const r = await kelpCni(['validate', file, '--cni-path', REF, '-o', 'json']);
    expect(r.code).toBe(1);
    expect(problem(r, 'type')?.message).toMatch(/^missing \(a \.conf or \.json file is read as one plugin config; this one has "plugins": name it \.conflist\)/);
  });

  it('reports a plugin missing from the CNI path, delegated IPAM plugins included', async () => {
    const chain = bridgeChain();
    chain.plugins[0].ipam.type = 'kelp-no-such-ipam';
    chain.plugins.push({ type: 'kelp-no-such-plugin' });
    const file = writeJson(dir, 'missing.conflist', chain);
    const r = await kelpCni(['validate', file, '--cni-path', REF, '-o', 'json']);
    expect(r.code).toBe(1);
    expect(problem(r, 'plugins[2].type')?.message).toBe(`plugin "kelp-no-such-plugin" not found in the CNI path [${REF}]`);
    expect(problem(r, 'plugins[0].ipam.type')?.message).toMatch(/"kelp-no-such-ipam" not found/);
    expect(r.json.plugins.find((p: { path: string }) => p.path === 'plugins[2]')).toEqual({ path: 'plugins[2]', type: 'kelp-no-such-plugin', error: `not found in the CNI path [${REF}]` });
  });

  it('flags a cniVersion a plugin does not support, by asking it (VERSION)', async () => {
    // Debian's 1.1.1 plugins support up to 1.0.0.
    const r = await kelpCni(['validate', writeJson(dir, 'v110.conflist', bridgeChain({ cniVersion: '1.1.0' })), '--cni-path', REF, '-o', 'json']);
    expect(r.code).toBe(1);
    expect(problem(r, 'plugins[0]')?.message).toBe('plugin bridge does not support config version "1.1.0" (it supports 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0)');
    expect(problem(r, 'plugins[1]')?.message).toMatch(/^plugin tuning does not support config version "1.1.0"/);

    // cniVersions: libcni 1.2+ sends the highest usable entry, here 1.1.0, which bridge refuses.
    const list = await kelpCni(['validate', writeJson(dir, 'vlist.conflist', bridgeChain({ cniVersions: ['1.0.0', '1.1.0'] })), '--cni-path', REF, '-o', 'json']);
    expect(list.code).toBe(1);
    expect(list.json).toMatchObject({ cniVersion: '1.1.0', declaredCniVersion: '1.0.0', cniVersions: ['1.0.0', '1.1.0'] });
    expect(problem(list, 'cniVersions')).toMatchObject({ severity: 'warning' });
    expect(problem(list, 'plugins[0]')?.message).toMatch(/does not support config version "1.1.0"/);
  });
});

describe('kelp cni add/check/del with the reference plugins', () => {
  let node: Netns;
  let confDir: string;
  let ipamDir: string;
  let cacheDir: string;

  beforeAll(() => {
    node = createNetns('kcn');
    confDir = tempDir('kelp-cnitool-conf-');
    ipamDir = tempDir('kelp-cnitool-ipam-');
    cacheDir = tempDir('kelp-cnitool-cache-');
    // Another network sorted first: the lookup by name must pass over it.
    writeJson(confDir, '00-other.conflist', { cniVersion: '1.0.0', name: 'other', plugins: [{ type: 'loopback' }] });
  });

  const common = () => ['--conf-dir', confDir, '--cni-path', REF, '--cache-dir', cacheDir];

  it('bridge + host-local + tuning: ADD in order with prevResult, cached; CHECK passes, then fails once tampered; DEL in reverse', async () => {
    const pod = createNetns('kcp');
    const conflist = writeJson(confDir, '10-ref.conflist', {
      cniVersion: '1.0.0',
      name: 'refnet',
      plugins: [
        { type: 'bridge', bridge: uniqueName('kcb'), isGateway: true, ipam: { type: 'host-local', subnet: '10.251.1.0/24', dataDir: ipamDir } },
        { type: 'tuning', capabilities: { mac: true } },
      ],
    });
    const mac = 'c2:00:00:00:12:34';
    const add = await kelpCni(['add', 'refnet', pod.name, ...common(), '--args', 'IgnoreUnknown=1;K8S_POD_NAME=web', '--capability-args', JSON.stringify({ mac }), '-o', 'json'], node);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    const cid = cnitoolId(pod.path);
    expect(add.json).toMatchObject({ ok: true, containerId: cid, netns: pod.path, ifname: 'eth0', cniVersion: '1.0.0' });
    const [bridge, tuning] = add.json.steps;
    expect([bridge.type, tuning.type]).toEqual(['bridge', 'tuning']);
    // What each plugin got: the list's name and version; prevResult only after the first;
    // runtimeConfig only for the plugin declaring the capability.
    expect(bridge.stdin).toMatchObject({ name: 'refnet', cniVersion: '1.0.0' });
    expect(bridge.stdin).not.toHaveProperty('prevResult');
    expect(bridge.stdin).not.toHaveProperty('runtimeConfig');
    expect(tuning.stdin.prevResult).toEqual(bridge.result);
    expect(tuning.stdin.runtimeConfig).toEqual({ mac });
    expect(add.json.result).toEqual(tuning.result);

    // The attachment is real: the address of the result on eth0, with the MAC asked for.
    const ip = add.json.result.ips[0].address as string;
    expect(ip).toMatch(/^10\.251\.1\.\d+\/24$/);
    expect(addresses(pod.name, 'eth0')).toEqual([ip]);
    expect(pod.mac('eth0')).toBe(mac);
    expect(existsSync(path.join(ipamDir, 'refnet', ip.split('/')[0]))).toBe(true);

    // libcni's cache entry, byte for byte where it matters.
    const cacheFile = path.join(cacheDir, 'results', `refnet-${cid}-eth0`);
    expect(add.json.cacheFile).toBe(cacheFile);
    const cached = JSON.parse(readFileSync(cacheFile, 'utf8'));
    expect(Object.keys(cached)).toEqual(['kind', 'containerId', 'config', 'ifName', 'networkName', 'netns', 'cniArgs', 'capabilityArgs', 'result']);
    expect(cached).toMatchObject({
      kind: 'cniCacheV1',
      containerId: cid,
      ifName: 'eth0',
      networkName: 'refnet',
      netns: pod.path,
      cniArgs: [['IgnoreUnknown', '1'], ['K8S_POD_NAME', 'web']],
      capabilityArgs: { mac },
    });
    expect(cached.result).toEqual(add.json.result);
    expect(Buffer.from(cached.config, 'base64')).toEqual(readFileSync(conflist));

    // CHECK gets the cached result (bridge refuses CHECK without prevResult) and the cached args.
    const check = await kelpCni(['check', 'refnet', pod.name, ...common()], node);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toMatch(/\[1\/2\] CHECK bridge .*: ok/);
    expect(check.stdout).toMatch(/\[2\/2\] CHECK tuning .*: ok/);
    expect(check.stdout).toContain(`prevResult from ${cacheFile}`);
    expect(check.stdout).toContain('note: CNI_ARGS from the cache entry');

    pod.ip('link', 'del', 'eth0');
    const broken = await kelpCni(['check', 'refnet', pod.name, ...common(), '-o', 'json'], node);
    expect(broken.code).toBe(1);
    expect(broken.json.ok).toBe(false);
    expect(broken.json.steps).toHaveLength(1);
    expect(broken.json.steps[0].error).toMatchObject({ code: expect.any(Number), msg: expect.stringMatching(/eth0/) });
    expect(broken.json.error).toMatch(/^plugin type="bridge" failed \(check\): /);
    const brokenText = await kelpCni(['check', 'refnet', pod.name, ...common()], node);
    expect(brokenText.code).toBe(1);
    expect(brokenText.stdout).toMatch(/\[1\/2\] CHECK bridge .*: failed/);
    expect(brokenText.stdout).toContain('"msg": ');
    expect(brokenText.stderr).toMatch(/kelp cni check: plugin type="bridge" failed \(check\)/);

    const del = await kelpCni(['del', 'refnet', pod.name, ...common(), '-o', 'json'], node);
    expect(del.code, del.stdout + del.stderr).toBe(0);
    expect(del.json.steps.map((s: { type: string; command: string }) => `${s.command} ${s.type}`)).toEqual(['DEL tuning', 'DEL bridge']);
    for (const s of del.json.steps) expect(s.stdin.prevResult).toEqual(add.json.result);
    expect(existsSync(cacheFile)).toBe(false);
    expect(existsSync(path.join(ipamDir, 'refnet', ip.split('/')[0]))).toBe(false);

    // DEL again, as runtimes do: nothing cached, still success.
    const again = await kelpCni(['del', 'refnet', pod.name, ...common(), '-o', 'json'], node);
    expect(again.code).toBe(0);
    expect(again.json.notes).toContain(`no cached result at ${cacheFile}: plugins get no prevResult`);
  });

  it('ptp + portmap with disableCheck: capability args become runtimeConfig, CHECK is skipped, DEL removes the mapping', async () => {
    const pod = createNetns('kcp');
    writeJson(confDir, '20-pm.conflist', {
      cniVersion: '1.0.0',
      name: 'pmnet',
      // Debian's portmap 1.1.1 fails CHECK on IPv4-only results (plugins issue #819).
      disableCheck: true,
      plugins: [
        { type: 'ptp', ipam: { type: 'host-local', subnet: '10.251.2.0/24', dataDir: ipamDir } },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    });
    const mapping = { hostPort: 18093, containerPort: 80, protocol: 'tcp' };
    const id = 'kelp-cnitool-pm';
    const add = await kelpCni(['add', 'pmnet', pod.path, ...common(), '--container-id', id, '--capability-args', JSON.stringify({ portMappings: [mapping] }), '-o', 'json'], node);
    expect(add.code, add.stdout + add.stderr).toBe(0);
    expect(add.json.steps[1].stdin.runtimeConfig).toEqual({ portMappings: [mapping] });
    expect(sh('ip', ['netns', 'exec', node.name, 'iptables-save', '-t', 'nat'])).toContain('--dport 18093');

    const check = await kelpCni(['check', 'pmnet', pod.path, ...common(), '--container-id', id, '-o', 'json'], node);
    expect(check.code).toBe(0);
    expect(check.json.steps).toEqual([]);
    expect(check.json.notes).toEqual(['capability args from the cache entry', 'CHECK skipped: the list sets disableCheck']);

    const del = await kelpCni(['del', 'pmnet', pod.path, ...common(), '--container-id', id, '-o', 'json'], node);
    expect(del.code, del.stdout + del.stderr).toBe(0);
    // The cached capability args reach portmap's DEL, which removes exactly that mapping.
    expect(del.json.steps[0]).toMatchObject({ type: 'portmap', stdin: { runtimeConfig: { portMappings: [mapping] } } });
    expect(sh('ip', ['netns', 'exec', node.name, 'iptables-save', '-t', 'nat'])).not.toContain('--dport 18093');
    expect(existsSync(path.join(cacheDir, 'results', `pmnet-${id}-eth0`))).toBe(false);
  });

  it('stops ADD at the first failing plugin, prints its error object and caches nothing', async () => {
    const pod = createNetns('kcp');
    writeJson(confDir, '30-fail.conflist', {
      cniVersion: '1.0.0',
      name: 'failnet',
      plugins: [
        { type: 'bridge', bridge: uniqueName('kcb'), ipam: { type: 'host-local', subnet: '10.251.3.0/24', dataDir: ipamDir } },
        { type: 'tuning', sysctl: { 'net.ipv4.kelp_no_such_knob': '1' } },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    });
    const add = await kelpCni(['add', 'failnet', pod.name, ...common()], node);
    expect(add.code).toBe(1);
    expect(add.stdout).toMatch(/\[1\/3\] ADD bridge .*: ok/);
    expect(add.stdout).toMatch(/\[2\/3\] ADD tuning .*: failed/);
    expect(add.stdout).not.toContain('[3/3]');
    const errorJson = add.stdout.slice(add.stdout.indexOf('{', add.stdout.indexOf('[2/3]')), add.stdout.indexOf('\n}', add.stdout.indexOf('[2/3]')) + 2);
    expect(JSON.parse(errorJson)).toMatchObject({ code: expect.any(Number), msg: expect.stringMatching(/kelp_no_such_knob/) });
    expect(add.stderr).toMatch(/kelp cni add: plugin type="tuning" failed \(add\): /);
    expect(existsSync(path.join(cacheDir, 'results', `failnet-${cnitoolId(pod.path)}-eth0`))).toBe(false);
    // What a runtime does next: DEL, which cleans up after bridge and host-local.
    const del = await kelpCni(['del', 'failnet', pod.name, ...common()], node);
    expect(del.code, del.stdout + del.stderr).toBe(0);
    expect(pod.ip('-j', 'link', 'show')).not.toContain('"eth0"');
  });

  it('says which network it could not find, after looking where libcni looks', async () => {
    const r = await kelpCni(['add', 'nosuchnet', 'whatever', ...common()], node);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`no net configuration with name "nosuchnet" in ${confDir}`);
  });
});

describe('kelp cni with kelp-cni and a real agent', () => {
  let sb: Sandbox;
  let cacheDir: string;

  beforeAll(async () => {
    sb = await Sandbox.start({ prefix: e2ePrefix('ct'), podCidr: '10.244.7.0/24' });
    cacheDir = tempDir('kelp-cnitool-cache-');
  });
  afterAll(async () => {
    await sb?.stop();
  });

  const common = () => ['--conf-dir', sb.cniConfDir, '--cni-path', sb.cniBinDir, '--cache-dir', cacheDir];
  const endpoints = () => JSON.parse(sb.kelp('get', 'endpoints', '-o', 'json')) as Array<{ containerId: string; ip: string }>;

  it("validates the agent's conflist, and kelp's own settings by field", async () => {
    const file = path.join(sb.cniConfDir, '05-kelp.conflist');
    const r = await kelpCni(['validate', file, '--cni-path', sb.cniBinDir, '-o', 'json']);
    expect(r.code, r.stdout).toBe(0);
    expect(r.json).toMatchObject({ valid: true, name: NETWORK, cniVersion: '1.1.0' });
    // ipam "kelp" is served by the agent: no delegated plugin to look for.
    expect(r.json.plugins).toEqual([{ path: 'plugins[0]', type: 'kelp-cni', binary: path.join(sb.cniBinDir, 'kelp-cni'), supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] }]);

    const dir = tempDir('kelp-cnitool-');
    const doc = JSON.parse(readFileSync(file, 'utf8'));
    doc.plugins[0].podHook = 'xdp';
    const bad = await kelpCni(['validate', writeJson(dir, 'bad.conflist', doc), '--cni-path', sb.cniBinDir]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain('plugins[0].podHook: must be "clsact" or "tcx", got "xdp"');
    doc.plugins[0].podHook = 'tcx';
    doc.plugins[0].ipam.ranges[0][0].subnet = '10.244.7.0';
    const badRange = await kelpCni(['validate', writeJson(dir, 'bad.conflist', doc), '--cni-path', sb.cniBinDir]);
    expect(badRange.stdout).toContain('plugins[0].ipam.ranges[0][0].subnet: must be an address with prefix length (CIDR), got "10.244.7.0"');
  });

  it('adds two pods through kelp-cni, which reach each other; check passes; del removes endpoint and cache', async () => {
    const pods = [`${sb.opts.prefix}-c1`, `${sb.opts.prefix}-c2`].map((name) => ({ name, path: sb.createNetns(name) }));
    const results = [];
    for (const p of pods) {
      const add = await kelpCni(['add', NETWORK, p.path, ...common(), '--args', `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=${p.name}`, '-o', 'json']);
      expect(add.code, add.stdout + add.stderr).toBe(0);
      expect(add.json.steps).toHaveLength(1);
      expect(add.json.steps[0].stdin).toMatchObject({ type: 'kelp-cni', name: NETWORK, cniVersion: '1.1.0' });
      results.push(add.json.result);
    }
    const ips = results.map((r) => (r.ips[0].address as string).split('/')[0]);
    for (const [i, p] of pods.entries()) {
      expect(addresses(p.name, 'eth0')[0]).toBe(results[i].ips[0].address);
      expect(endpoints().find((e) => e.containerId === cnitoolId(p.path))?.ip).toContain(ips[i]);
      expect(existsSync(path.join(cacheDir, 'results', `${NETWORK}-${cnitoolId(p.path)}-eth0`))).toBe(true);
    }
    expect(sb.exec(pods[0].name, 'ping', ['-c2', '-i0.2', '-W1', ips[1]])).toContain(' 0% packet loss');

    const check = await kelpCni(['check', NETWORK, pods[0].path, ...common()]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toMatch(/\[1\/1\] CHECK kelp-cni .*: ok/);

    for (const p of pods) {
      const del = await kelpCni(['del', NETWORK, p.path, ...common()]);
      expect(del.code, del.stdout + del.stderr).toBe(0);
      expect(existsSync(path.join(cacheDir, 'results', `${NETWORK}-${cnitoolId(p.path)}-eth0`))).toBe(false);
    }
    expect(endpoints().filter((e) => pods.some((p) => e.containerId === cnitoolId(p.path)))).toEqual([]);
  });
});
