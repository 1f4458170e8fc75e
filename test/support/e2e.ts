// Helpers for the agent end-to-end tests (test/e2e/agent-*.test.ts): a Sandbox node running the
// real agent, CNI calls through the installed kelp-cni, and readers for every place an
// attachment leaves a trace (node links, IPAM leases, endpoint records, pinned links, the
// kelp_endpoints map), so a test can assert "created" and "nothing left behind" alike.
import { ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { CniCall, Sandbox, sh } from '../../src/sandbox';
import { e2ePrefix } from './kelp-cli';
import type { EndpointRecord } from '../../src/endpoint/state';
import { inNetns, queryTcFilter } from '../../src/bpf';
import { POD_FILTER } from '../../src/datapath/loader';

export { hostIfnameFor } from '../../src/endpoint/state';
export { e2ePrefix, kelpApplyWait, kelpAsync } from './kelp-cli';

/** The network name of the conflist the agent installs (`--network-name` default). */
export const NETWORK = 'kelp';

/** Starts a sandbox; the caller stops it in afterAll (Sandbox.stop tolerates a failed start). */
export function startSandbox(tag: string, opts: { podCidr?: string } = {}): Promise<Sandbox> {
  return Sandbox.start({ prefix: e2ePrefix(tag), podCidr: opts.podCidr, logLevel: 'debug' });
}

let podNs = 0;
let cid = 0;

/** A fresh pod network namespace, removed by `sb.stop()`. */
export function podNetns(sb: Sandbox): { name: string; path: string } {
  podNs += 1;
  const name = `${sb.opts.prefix}-n${podNs}`;
  return { name, path: sb.createNetns(name) };
}

/** A container id unique in this file, in the 64-hex shape runtimes use. */
export function containerId(label = 'c'): string {
  cid += 1;
  const id = `${label}${cid}`;
  return id + 'f'.repeat(Math.max(0, 64 - id.length));
}

export interface Attachment {
  containerId: string;
  netns: string;
  netnsPath: string;
  ifname: string;
}

export function attachmentEnv(a: Attachment, extra: Record<string, string> = {}): Record<string, string> {
  return { CNI_CONTAINERID: a.containerId, CNI_NETNS: a.netnsPath, CNI_IFNAME: a.ifname, ...extra };
}

/** A new attachment: its own netns and container id. */
export function newAttachment(sb: Sandbox, ifname = 'eth0'): Attachment {
  const ns = podNetns(sb);
  return { containerId: containerId(), netns: ns.name, netnsPath: ns.path, ifname };
}

export async function add(sb: Sandbox, a: Attachment, opts: { args?: string; config?: Record<string, unknown> | string } = {}): Promise<CniCall> {
  const env = attachmentEnv(a, opts.args === undefined ? {} : { CNI_ARGS: opts.args });
  return sb.cni('ADD', env, opts.config ?? sb.pluginConfig());
}

/** ADD that must succeed; returns the parsed result. */
export async function mustAdd(sb: Sandbox, a: Attachment, opts: { args?: string; config?: Record<string, unknown> } = {}): Promise<Record<string, any>> {
  const res = await add(sb, a, opts);
  expect(res.code, `ADD ${a.containerId}/${a.ifname}: ${res.stdout}${res.stderr}`).toBe(0);
  return res.json as Record<string, any>;
}

export async function del(sb: Sandbox, a: Attachment, opts: { netnsPath?: string; config?: Record<string, unknown> } = {}): Promise<CniCall> {
  return sb.cni('DEL', { CNI_CONTAINERID: a.containerId, CNI_NETNS: opts.netnsPath ?? a.netnsPath, CNI_IFNAME: a.ifname }, opts.config ?? sb.pluginConfig());
}

/** The pod's IPv4 address (without prefix) from an ADD result. */
export function resultIp(result: Record<string, any>): string {
  return (result.ips[0].address as string).split('/')[0];
}

/** A failed CNI call: non-zero exit and exactly one spec error object on stdout. */
export function expectCniError(res: CniCall, code: number, msg?: RegExp): Record<string, any> {
  expect(res.code, `stdout: ${res.stdout} stderr: ${res.stderr}`).not.toBe(0);
  expect(res.stdout.trimEnd().split('\n')).toHaveLength(1);
  const err = res.json as Record<string, any>;
  expect(err).toBeTypeOf('object');
  expect(typeof err.msg).toBe('string');
  expect(err.code, JSON.stringify(err)).toBe(code);
  if (msg) expect(`${err.msg} ${err.details ?? ''}`).toMatch(msg);
  return err;
}

/** Success of a verb without output (DEL, CHECK, STATUS, GC). */
export function expectSilentSuccess(res: CniCall): void {
  expect(res.code, `stdout: ${res.stdout} stderr: ${res.stderr}`).toBe(0);
  expect(res.stdout).toBe('');
}

/** `ip -n ns -j ARGS` parsed. */
export function ipJson(netns: string, ...args: string[]): any[] {
  const out = sh('ip', ['-n', netns, '-j', ...args]).trim();
  return out ? (JSON.parse(out) as any[]) : [];
}

export function linkNames(netns: string): string[] {
  return ipJson(netns, 'link', 'show').map((l) => l.ifname as string).sort();
}

/** IPv4 addresses of `dev` in `netns`, as `a.b.c.d/len`. */
export function addresses(netns: string, dev: string): string[] {
  return ipJson(netns, '-4', 'addr', 'show', 'dev', dev).flatMap((l) => (l.addr_info as any[]).map((i) => `${i.local}/${i.prefixlen}`));
}

export function stateDir(sb: Sandbox): string {
  return sb.stateDir;
}

/** IPAM lease files of a network: ip → "containerId/ifname". */
export function leases(sb: Sandbox, network = NETWORK): Record<string, string> {
  const dir = path.join(stateDir(sb), 'ipam', network);
  const out: Record<string, string> = {};
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    if (!/^\d+\.\d+\.\d+\.\d+$/.test(name)) continue;
    const [id, ifname] = readFileSync(path.join(dir, name), 'utf8').split(/\r?\n/);
    out[name] = `${id}/${ifname}`;
  }
  return out;
}

/** Endpoint records the agent keeps on disk. */
export function records(sb: Sandbox): EndpointRecord[] {
  const dir = path.join(stateDir(sb), 'endpoints');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => n.endsWith('.json'))
    .map((n) => JSON.parse(readFileSync(path.join(dir, n), 'utf8')) as EndpointRecord);
}

export function recordOf(sb: Sandbox, a: Pick<Attachment, 'containerId' | 'ifname'>): EndpointRecord | undefined {
  return records(sb).find((r) => r.containerId === a.containerId && r.ifname === a.ifname);
}

/** Names of the pinned links under the sandbox's bpffs. */
export function pinnedLinks(sb: Sandbox): string[] {
  const dir = path.join(sb.bpfRoot, 'links');
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

/** kelp's clsact filters on a host veth of the node, as `direction:program`; [] once the veth is gone. */
export function podFilters(sb: Sandbox, hostIfname: string): string[] {
  const link = ipJson(sb.node, 'link', 'show').find((l) => l.ifname === hostIfname);
  if (!link) return [];
  return inNetns(`/var/run/netns/${sb.node}`, () =>
    (['egress', 'ingress'] as const).flatMap((dir) => {
      const p = queryTcFilter(link.ifindex as number, dir, POD_FILTER);
      return p ? [`${dir}:${p.name}`] : [];
    }),
  );
}

/** podFilters of an attached pod. */
export const POD_FILTERS = ['egress:kelp_to_pod', 'ingress:kelp_from_pod'];

export interface EndpointEntry {
  key: { ip4: string };
  value: { ifindex: number; epId: number; flags: number; mac: string; nodeMac: string };
}

/** kelp_endpoints as the CLI dumps it. */
export function endpointMap(sb: Sandbox): EndpointEntry[] {
  return (JSON.parse(sb.kelp('map', 'dump', 'kelp_endpoints', '-o', 'json')) as { entries: EndpointEntry[] }).entries;
}

export function endpointEntry(sb: Sandbox, ip: string): EndpointEntry | undefined {
  return endpointMap(sb).find((e) => e.key.ip4 === ip);
}

/** Everything an attachment can leave on a node, for before/after comparisons. */
export interface NodeTrace {
  links: string[];
  leases: Record<string, string>;
  records: string[];
  pins: string[];
  endpoints: string[];
}

export function nodeTrace(sb: Sandbox): NodeTrace {
  return {
    links: linkNames(sb.node),
    leases: leases(sb),
    records: records(sb).map((r) => `${r.containerId}/${r.ifname}`).sort(),
    pins: pinnedLinks(sb),
    endpoints: endpointMap(sb).map((e) => e.key.ip4).sort(),
  };
}

/** What one attachment left behind (empty lists when nothing). */
export function traceOf(sb: Sandbox, a: Pick<Attachment, 'containerId' | 'ifname'>, ip?: string, hostIfname?: string): {
  link: boolean;
  leases: string[];
  record: boolean;
  pins: string[];
  filters: string[];
  endpoint: boolean;
} {
  const owner = `${a.containerId}/${a.ifname}`;
  return {
    link: hostIfname ? linkNames(sb.node).includes(hostIfname) : false,
    leases: Object.entries(leases(sb)).filter(([, o]) => o === owner).map(([i]) => i),
    record: recordOf(sb, a) !== undefined,
    pins: hostIfname ? pinnedLinks(sb).filter((p) => p.startsWith(hostIfname)) : [],
    filters: hostIfname ? podFilters(sb, hostIfname) : [],
    endpoint: ip ? endpointEntry(sb, ip) !== undefined : false,
  };
}

export const GONE = { link: false, leases: [], record: false, pins: [], filters: [], endpoint: false };

export function ping(sb: Sandbox, netns: string, ip: string): boolean {
  return sb.exec(netns, 'ping', ['-c1', '-W2', ip], { allowFail: true }).includes(' 0% packet loss');
}

/** Stops the agent and starts it again, waiting until the new one has reinstalled the conflist. */
export async function restartAgent(sb: Sandbox): Promise<void> {
  await sb.stopAgent();
  rmSync(path.join(sb.cniConfDir, '05-kelp.conflist'), { force: true });
  await sb.startAgent();
}

/**
 * A TCP server in `netns` that answers every connection with the client's address and closes.
 * Resolves once it listens; the caller kills it (by PID) with `stopServer`.
 */
export function startEchoServer(sb: Sandbox, netns: string, port: number): Promise<ChildProcess> {
  const script = `require('net').createServer((s) => { s.on('error', () => {}); s.end(s.remoteAddress + '\\n'); })` +
    `.listen(${port}, '0.0.0.0', () => console.log('listening'))`;
  const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout!.once('data', () => resolve(child));
    child.once('exit', (code) => reject(new Error(`echo server in ${netns} exited with ${code}: ${err}`)));
  });
}

export function stopServer(child: ChildProcess | undefined): void {
  if (child?.pid && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

/** Connects with nc from `netns` and returns what the server sent ('' when the connection failed). */
export function tcpAsk(sb: Sandbox, netns: string, ip: string, port: number): string {
  return sb.exec(netns, 'nc', ['-w2', ip, String(port)], { allowFail: true }).trim();
}

/** Polls `fn` until it returns something truthy, which it resolves with; fails after `ms`. */
export async function eventually<T>(what: string, fn: () => T | undefined | false, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
