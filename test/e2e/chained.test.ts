// kelp in a conflist with Debian's reference plugins, run the way libcni runs a chain: ADD in
// order, each plugin getting the previous result as prevResult; DEL in reverse order with the
// final result. kelp after an interface plugin (ptp, bridge), kelp with delegated IPAM
// (host-local), and reference plugins after kelp (tuning, bandwidth, portmap).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { CniCall, Sandbox } from '../../src/sandbox';
import { containerId, e2ePrefix, expectCniError, linkNames, podFilters, POD_FILTERS, podNetns } from '../support/e2e';
import { tempDir, cleanupAll } from '../support/netns';

const REF = '/usr/lib/cni';
let sb: Sandbox;

beforeAll(async () => {
  sb = await Sandbox.start({ prefix: e2ePrefix('ch'), podCidr: '10.244.0.0/24' });
});
afterAll(async () => {
  await sb?.stop();
  cleanupAll();
});

/** Runs one plugin as a runtime on the node would: inside the node's netns, clean env. */
function runPlugin(type: string, env: Record<string, string>, conf: Record<string, unknown>): Promise<CniCall> {
  const binary = type === 'kelp-cni' ? path.join(sb.cniBinDir, 'kelp-cni') : path.join(REF, type);
  return new Promise((resolve) => {
    const child = execFile('ip', ['netns', 'exec', sb.node, binary], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', CNI_PATH: `${REF}:${sb.cniBinDir}`, ...env } }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: number }).code ?? 1) : 0;
      let json: Record<string, unknown> | undefined;
      try {
        json = stdout.trim() ? JSON.parse(stdout) : undefined;
      } catch {
        json = undefined;
      }
      resolve({ code, stdout, stderr, json });
    });
    child.stdin!.end(JSON.stringify(conf));
  });
}

interface Chain {
  name: string;
  cniVersion: string;
  plugins: Array<Record<string, unknown>>;
}

async function chainAdd(chain: Chain, env: Record<string, string>): Promise<Record<string, unknown>> {
  let prev: Record<string, unknown> | undefined;
  for (const p of chain.plugins) {
    const conf = { ...p, name: chain.name, cniVersion: chain.cniVersion, ...(prev ? { prevResult: prev } : {}) };
    const res = await runPlugin(p.type as string, { ...env, CNI_COMMAND: 'ADD' }, conf);
    expect(res.code, `${p.type} ADD: ${res.stdout} ${res.stderr}`).toBe(0);
    prev = res.json;
  }
  return prev!;
}

async function chainRun(command: 'DEL' | 'CHECK', chain: Chain, env: Record<string, string>, result: Record<string, unknown>): Promise<CniCall[]> {
  const order = command === 'DEL' ? [...chain.plugins].reverse() : chain.plugins;
  const out: CniCall[] = [];
  for (const p of order) out.push(await runPlugin(p.type as string, { ...env, CNI_COMMAND: command }, { ...p, name: chain.name, cniVersion: chain.cniVersion, prevResult: result }));
  return out;
}

function endpoints(): Array<{ ip: string; hostIfname: string; containerId: string }> {
  return JSON.parse(sb.kelp('get', 'endpoints', '-o', 'json'));
}

function mapIps(): string[] {
  const dump = JSON.parse(sb.kelp('map', 'dump', 'kelp_endpoints', '-o', 'json')) as { entries: Array<{ key: { ip4: string } }> };
  return dump.entries.map((e) => e.key.ip4).sort();
}

function forwarded(epHostIfname: string): bigint {
  const ep = endpoints().find((e) => e.hostIfname === epHostIfname)!;
  const rows = JSON.parse(sb.kelp('get', 'counters', '-o', 'json')) as Array<{ endpoint: number; direction: string; reason: string; packets: string }>;
  const id = (ep as unknown as { id: number }).id;
  return rows.filter((c) => c.endpoint === id && c.direction === 'from-pod' && c.reason === 'forwarded').reduce((a, c) => a + BigInt(c.packets), 0n);
}

/** What the agent sees attached (BPF_PROG_QUERY on tcx; bpftool 7.1 does not list tcx links). */
function attachedPrograms(ifname: string): string {
  const st = JSON.parse(sb.kelp('status', '-o', 'json')) as { attached: Array<{ ifname: string; ingress: string[]; egress: string[] }> };
  const a = st.attached.find((x) => x.ifname === ifname);
  return a ? [...a.ingress, ...a.egress].join(',') : '';
}

function pod(): { env: Record<string, string>; netns: string } {
  const ns = podNetns(sb);
  return { env: { CNI_CONTAINERID: containerId('k'), CNI_NETNS: ns.path, CNI_IFNAME: 'eth0' }, netns: ns.name };
}

describe('kelp chained after ptp', () => {
  const dataDir = () => tempDir();
  it('attaches to the veth ptp made, keeps its result, carries pod traffic, and cleans only its own state', async () => {
    const dir = dataDir();
    const chain: Chain = {
      name: 'ptpnet',
      cniVersion: '1.0.0',
      plugins: [
        { type: 'ptp', ipMasq: false, ipam: { type: 'host-local', subnet: '10.246.0.0/24', dataDir: dir } },
        { type: 'kelp-cni', agentSocket: sb.socketPath },
      ],
    };
    const a = pod();
    const b = pod();
    const ra = await chainAdd(chain, a.env);
    const rb = await chainAdd(chain, b.env);
    // kelp added nothing to ptp's result: interface, address and routes are ptp's.
    const hostA = (ra.interfaces as Array<{ name: string; sandbox?: string }>).find((i) => !i.sandbox)!.name;
    const ipA = (ra.ips as Array<{ address: string }>)[0].address.split('/')[0];
    const ipB = (rb.ips as Array<{ address: string }>)[0].address.split('/')[0];
    expect(mapIps()).toEqual(expect.arrayContaining([ipA, ipB]));
    expect(endpoints().find((e) => e.ip.startsWith(ipA))?.hostIfname).toBe(hostA);
    expect(attachedPrograms(hostA)).toMatch(/kelp_from_pod/);
    expect(attachedPrograms(hostA)).toMatch(/kelp_to_pod/);
    expect(podFilters(sb, hostA)).toEqual(POD_FILTERS);

    const before = forwarded(hostA);
    expect(sb.exec(a.netns, 'ping', ['-c3', '-i0.2', '-W1', ipB])).toContain(' 0% packet loss');
    expect(forwarded(hostA) - before).toBeGreaterThanOrEqual(3n);

    for (const r of await chainRun('CHECK', chain, a.env, ra)) expect(r.code, r.stdout).toBe(0);

    // kelp's DEL (first in reverse order) takes its filters off the veth ptp still owns.
    const kelp = chain.plugins[chain.plugins.length - 1];
    const kelpDel = await runPlugin(kelp.type as string, { ...a.env, CNI_COMMAND: 'DEL' }, { ...kelp, name: chain.name, cniVersion: chain.cniVersion, prevResult: ra });
    expect(kelpDel.code, kelpDel.stdout).toBe(0);
    expect(linkNames(sb.node)).toContain(hostA);
    expect(podFilters(sb, hostA)).toEqual([]);
    for (const r of await chainRun('DEL', chain, a.env, ra)) expect(r.code, r.stdout).toBe(0);
    expect(mapIps()).not.toContain(ipA);
    expect(existsSync(path.join(sb.bpfRoot, 'links', `${hostA}-ingress`))).toBe(false);
    expect(readdirSync(path.join(dir, 'ptpnet'))).not.toContain(ipA);
    // DEL again (runtimes repeat it) succeeds for both plugins.
    for (const r of await chainRun('DEL', chain, a.env, ra)) expect(r.code, r.stdout).toBe(0);
    for (const r of await chainRun('DEL', chain, b.env, rb)) expect(r.code, r.stdout).toBe(0);
    expect(mapIps()).not.toContain(ipB);
  });

  it('refuses to chain onto an interface that is not a veth, leaving nothing behind', async () => {
    const a = pod();
    sb.exec(a.netns, 'ip', ['link', 'add', 'eth0', 'type', 'bridge']);
    const prev = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: a.env.CNI_NETNS }], ips: [{ address: '10.246.1.5/24', interface: 0 }] };
    const res = await runPlugin('kelp-cni', { ...a.env, CNI_COMMAND: 'ADD' }, { type: 'kelp-cni', name: 'x', cniVersion: '1.0.0', agentSocket: sb.socketPath, prevResult: prev });
    expectCniError(res, 7, /bridge; kelp chains onto veth/);
    expect(mapIps()).not.toContain('10.246.1.5');
  });
});

describe('kelp chained after bridge', () => {
  it('pods on a bridge reach each other through kelp', async () => {
    const dir = tempDir();
    const chain: Chain = {
      name: 'brnet',
      cniVersion: '1.0.0',
      plugins: [
        { type: 'bridge', bridge: `${sb.opts.prefix}br`, isGateway: true, ipam: { type: 'host-local', subnet: '10.247.0.0/24', dataDir: dir } },
        { type: 'kelp-cni', agentSocket: sb.socketPath },
      ],
    };
    const a = pod();
    const b = pod();
    const ra = await chainAdd(chain, a.env);
    const rb = await chainAdd(chain, b.env);
    const ipB = (rb.ips as Array<{ address: string }>)[0].address.split('/')[0];
    expect(sb.exec(a.netns, 'ping', ['-c2', '-i0.2', '-W1', ipB])).toContain(' 0% packet loss');
    for (const [p, r] of [[a, ra], [b, rb]] as const) for (const x of await chainRun('DEL', chain, p.env, r)) expect(x.code, x.stdout).toBe(0);
    expect(mapIps().filter((ip) => ip.startsWith('10.247.'))).toEqual([]);
  });
});

describe('delegated IPAM', () => {
  it('uses host-local for addresses and releases them on DEL and on a failed ADD', async () => {
    const dir = tempDir();
    const conf = sb.pluginConfig({ ipam: { type: 'host-local', subnet: '10.248.0.0/24', dataDir: dir } });
    const a = pod();
    const env = { ...a.env, CNI_PATH: `${REF}:${sb.cniBinDir}` };
    const res = await sb.cni('ADD', env, conf);
    expect(res.code, res.stdout).toBe(0);
    const ip = ((res.json!.ips as Array<{ address: string }>)[0].address).split('/')[0];
    expect(ip).toBe('10.248.0.2');
    expect(readdirSync(path.join(dir, conf.name as string))).toContain(ip);
    expect(mapIps()).toContain(ip);
    expect(sb.exec(sb.node, 'ping', ['-c1', '-W1', ip])).toContain(' 0% packet loss');

    // A failed ADD (the pod already has an eth0) gives the delegated address back.
    const b = pod();
    sb.exec(b.netns, 'ip', ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'other0']);
    const failed = await sb.cni('ADD', { ...b.env, CNI_PATH: `${REF}:${sb.cniBinDir}` }, conf);
    expect(failed.code).not.toBe(0);
    expect(readdirSync(path.join(dir, conf.name as string)).filter((f) => f.startsWith('10.'))).toEqual([ip]);

    const d = await sb.cni('DEL', env, conf);
    expect(d.code, d.stdout).toBe(0);
    expect(readdirSync(path.join(dir, conf.name as string)).filter((f) => f.startsWith('10.'))).toEqual([]);
    expect(mapIps()).not.toContain(ip);
  });
});

describe('reference plugins chained after kelp', () => {
  it('tuning, bandwidth and portmap work on kelp\'s result, and the chain DELs cleanly', async () => {
    const chain: Chain = {
      name: sb.pluginConfig().name as string,
      cniVersion: '1.0.0',
      plugins: [
        // bandwidth's egress shaping needs tc's ingress qdisc, which clsact would hold: tcx leaves it free.
        { ...sb.pluginConfig(), cniVersion: undefined, name: undefined, podHook: 'tcx' },
        { type: 'tuning', sysctl: { 'net.ipv4.conf.eth0.rp_filter': '2' } },
        { type: 'bandwidth', ingressRate: 100_000_000, ingressBurst: 1_000_000, egressRate: 100_000_000, egressBurst: 1_000_000 },
        { type: 'portmap', capabilities: { portMappings: true }, runtimeConfig: { portMappings: [{ hostPort: 18080, containerPort: 80, protocol: 'tcp' }] } },
      ],
    };
    const a = pod();
    const result = await chainAdd(chain, a.env);
    const ip = ((result.ips as Array<{ address: string }>)[0].address).split('/')[0];
    expect(sb.exec(a.netns, 'sysctl', ['-n', 'net.ipv4.conf.eth0.rp_filter']).trim()).toBe('2');
    const hostIf = (result.interfaces as Array<{ name: string; sandbox?: string }>).find((i) => !i.sandbox)!.name;
    expect(sb.exec(sb.node, 'tc', ['qdisc', 'show', 'dev', hostIf])).toMatch(/tbf/);
    expect(sb.exec(sb.node, 'tc', ['qdisc', 'show', 'dev', hostIf])).toMatch(/qdisc ingress ffff:/);
    expect(attachedPrograms(hostIf)).toBe('kelp_from_pod,kelp_to_pod');
    expect(existsSync(path.join(sb.bpfRoot, 'links', `${hostIf}-ingress`))).toBe(true);
    expect(podFilters(sb, hostIf)).toEqual([]);
    expect(sb.exec(sb.node, 'ping', ['-c1', '-W1', ip])).toContain(' 0% packet loss');
    for (const r of await chainRun('DEL', chain, a.env, result)) expect(r.code, `${r.stdout}${r.stderr}`).toBe(0);
    expect(mapIps()).not.toContain(ip);
    expect(existsSync(path.join(sb.bpfRoot, 'links', `${hostIf}-ingress`))).toBe(false);
  });
});
