// Helpers for restart, stress and fuzz tests (and bench/restart.ts): waiting for a restarted
// agent, traffic that must survive it (a sequence-checked TCP stream, a fast ping), and a
// snapshot of every place kelp leaves state on a node, to assert "nothing leaked".
import { ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { openPinnedMap } from '../../src/bpf';
import { endpointKey } from '../../src/datapath/structs';
import { VXLAN_DEVICE } from '../../src/datapath/node-types';
import type { EndpointRecord } from '../../src/endpoint/state';
import { Sandbox, sh } from '../../src/sandbox';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A sandbox prefix (≤ 6 chars) unique to this process, so parallel runs never share names. */
export function prefixFor(tag: string): string {
  if (tag.length > 3) throw new Error(`tag too long: ${tag}`);
  return tag + (process.pid % 1296).toString(36).padStart(2, '0');
}

export function agentPid(sb: Sandbox): number {
  const pid = sb.agent?.pid;
  if (!pid || sb.agent?.exitCode !== null || sb.agent?.signalCode !== null) throw new Error('kelp agent is not running');
  return pid;
}

/** Open file descriptors of a process. */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** What each open file descriptor of a process refers to ('socket:[123]', a path …). */
export function fdTargets(pid: number): string[] {
  return readdirSync(`/proc/${pid}/fd`).map((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      return '?';
    }
  });
}

/** Targets in `now` beyond those in `before` (a multiset difference), to name leaked fds. */
export function extraFds(before: string[], now: string[]): string[] {
  const left = [...before];
  return now.filter((t) => {
    const i = left.indexOf(t);
    if (i < 0) return true;
    left.splice(i, 1);
    return false;
  });
}

/**
 * Waits until the agent answers STATUS through kelp-cni. A restarted agent finds the old
 * conflist in place (Sandbox.startAgent returns at once), so this is how to know it is ready.
 */
export async function waitReady(sb: Sandbox, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const agent = sb.agent;
    if (!agent || agent.exitCode !== null || agent.signalCode !== null) throw new Error(`kelp agent is not running\n${sb.agentLog().slice(-4000)}`);
    const res = await sb.cni('STATUS', {}, sb.pluginConfig({ cniVersion: '1.1.0' }));
    if (res.code === 0) return;
    if (Date.now() > deadline) throw new Error(`kelp agent not ready: ${res.stdout}\n${sb.agentLog().slice(-4000)}`);
    await sleep(50);
  }
}

export function stateDir(sb: Sandbox): string {
  return sb.stateDir;
}

/** Where kelp-cni queues DELs for this agent: next to its socket, in its --run-dir. */
export function queueDir(sb: Sandbox): string {
  return path.join(path.dirname(sb.socketPath), 'del-queue');
}

const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/** Everything kelp keeps per attachment on a node, by where it lives. */
export interface NodeState {
  /** Links in the node namespace whose name starts with "kelp". */
  veths: string[];
  /** Names under <bpfRoot>/links. */
  pins: string[];
  /** IPv4 keys of kelp_endpoints. */
  endpoints: string[];
  /** `<network>/<ip>` lease files in the agent's IPAM directory (and in `extraIpamDirs`). */
  leases: string[];
  /** `<network>/<containerId>/<ifname>` of the endpoint records. */
  records: string[];
  /** Names in the DEL queue directory (entries and temp files). */
  queue: string[];
  /** Node routes with kelp's protocol (0x4b): `<dst> dev <ifindex>`. */
  routes: string[];
}

function listDir(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

function leasesIn(dir: string): string[] {
  const out: string[] = [];
  for (const net of listDir(dir)) {
    const sub = path.join(dir, net);
    try {
      for (const name of readdirSync(sub)) if (IPV4.test(name)) out.push(`${net}/${name}`);
    } catch {
      // not a directory
    }
  }
  return out.sort();
}

export function nodeState(sb: Sandbox, extraIpamDirs: string[] = []): NodeState {
  const links = JSON.parse(sh('ip', ['-n', sb.node, '-j', 'link', 'show'])) as Array<{ ifname: string }>;
  const epMap = openPinnedMap(path.join(sb.bpfRoot, 'kelp_endpoints'));
  let endpoints: string[];
  try {
    endpoints = epMap.keys().map((k) => endpointKey.decode(k).ip4).sort();
  } finally {
    epMap.close();
  }
  const records = listDir(path.join(stateDir(sb), 'endpoints'))
    .filter((n) => n.endsWith('.json'))
    .map((n) => {
      const r = JSON.parse(readFileSync(path.join(stateDir(sb), 'endpoints', n), 'utf8')) as EndpointRecord;
      return `${r.network}/${r.containerId}/${r.ifname}`;
    })
    .sort();
  const routes = (JSON.parse(sh('ip', ['-n', sb.node, '-j', 'route', 'show', 'proto', '75'])) as Array<{ dst: string; dev: string }>)
    .map((r) => `${r.dst} dev ${r.dev}`)
    .sort();
  return {
    // kelp's host veths: kelp_vxlan (the VXLAN device, VXLAN mode) is no veth.
    veths: links.map((l) => l.ifname).filter((n) => n.startsWith('kelp') && n !== VXLAN_DEVICE).sort(),
    pins: listDir(path.join(sb.bpfRoot, 'links')).sort(),
    endpoints,
    leases: [path.join(stateDir(sb), 'ipam'), ...extraIpamDirs].flatMap(leasesIn).sort(),
    records,
    queue: listDir(queueDir(sb)).sort(),
    routes,
  };
}

/** Lines of a child's stdout, with a way to wait for one. */
class Lines {
  readonly lines: string[] = [];
  private waiters: Array<() => void> = [];
  private buf = '';

  constructor(stream: NodeJS.ReadableStream) {
    stream.on('data', (d: Buffer) => {
      this.buf += d.toString();
      const parts = this.buf.split('\n');
      this.buf = parts.pop()!;
      this.lines.push(...parts);
      for (const w of this.waiters.splice(0)) w();
    });
    stream.on('end', () => {
      if (this.buf) this.lines.push(this.buf);
      this.buf = '';
      for (const w of this.waiters.splice(0)) w();
    });
  }

  async waitFor(pred: (line: string) => boolean, child: ChildProcess, timeoutMs = 20_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find(pred);
      if (hit !== undefined) return hit;
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`process exited before the expected output: ${this.lines.join('\n')}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for output: ${this.lines.join('\n')}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
  }
}

/** Every process started here, killed (by PID) by killAll(). */
const children = new Set<ChildProcess>();

export function killAll(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.clear();
}

function spawnIn(netns: string, cmd: string, args: string[]): { child: ChildProcess; out: Lines } {
  // `ip netns exec` execs the command in place: the child's PID is the command's.
  const child = spawn('ip', ['netns', 'exec', netns, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  child.stdin!.on('error', () => undefined);
  return { child, out: new Lines(child.stdout!) };
}

function exited(child: ChildProcess, timeoutMs = 20_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('process did not exit')), timeoutMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

// A TCP stream whose bytes are consecutive little-endian 32-bit counters: a lost, repeated or
// reordered byte anywhere shows as the first offset where the pattern breaks. The client
// writes 16 KiB every 5 ms (a steady flow, not a CPU hog) until told to stop on stdin, then
// half-closes; the server reports what it received when the stream ends.
const STREAM_PEER = String.raw`
const net = require('net');
const [mode, a, b] = process.argv.slice(1);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
if (mode === 'server') {
  const srv = net.createServer((sock) => {
    let off = 0, bad = -1;
    const peer = sock.remoteAddress;
    sock.on('data', (d) => {
      if (bad < 0) {
        for (let j = 0; j < d.length; j++) {
          const i = off + j;
          if (d[j] !== ((Math.floor(i / 4) >>> ((i % 4) * 8)) & 0xff)) { bad = i; break; }
        }
      }
      off += d.length;
    });
    sock.on('end', () => { out({ received: off, bad, peer }); sock.end(); srv.close(); });
    sock.on('error', (e) => { out({ received: off, bad, peer, error: e.code || e.message }); srv.close(); });
  });
  srv.listen(Number(a), () => out({ listening: true }));
} else {
  const CHUNK = 16384;
  let off = 0, stopping = false, error = null;
  const sock = net.connect(Number(b), a, () => { out({ connected: true }); pump(); });
  const make = (o) => { const buf = Buffer.alloc(CHUNK); for (let k = 0; k < CHUNK; k += 4) buf.writeUInt32LE(((o + k) / 4) >>> 0, k); return buf; };
  const pump = () => {
    if (stopping || error) { sock.end(); return; }
    const more = sock.write(make(off));
    off += CHUNK;
    if (more) setTimeout(pump, 5); else sock.once('drain', () => setTimeout(pump, 5));
  };
  sock.on('error', (e) => { error = e.code || e.message; });
  sock.on('close', () => { out({ sent: off, error }); process.exit(0); });
  process.stdin.on('data', () => { stopping = true; });
  process.stdin.on('end', () => { stopping = true; });
}
`;

export interface StreamResult {
  sent: number;
  received: number;
  /** First offset where the bytes were not the expected ones; -1 when all were. */
  bad: number;
  /** The source address the server saw (the node's address when masqueraded). */
  peer: string;
  clientError: string | null;
  serverError?: string;
}

export interface Stream {
  /** Ends the stream cleanly and reports both sides. */
  stop(): Promise<StreamResult>;
}

/** Starts a server in `serverNs` on `port` and a client in `clientNs` streaming to `ip:port`. */
export async function startStream(serverNs: string, clientNs: string, ip: string, port: number): Promise<Stream> {
  const server = spawnIn(serverNs, process.execPath, ['-e', STREAM_PEER, 'server', String(port)]);
  await server.out.waitFor((l) => l.includes('listening'), server.child);
  const client = spawnIn(clientNs, process.execPath, ['-e', STREAM_PEER, 'client', ip, String(port)]);
  await client.out.waitFor((l) => l.includes('connected'), client.child);
  return {
    async stop() {
      client.child.stdin!.end('stop\n');
      const c = JSON.parse(await client.out.waitFor((l) => l.includes('"sent"'), client.child, 60_000)) as { sent: number; error: string | null };
      const s = JSON.parse(await server.out.waitFor((l) => l.includes('"received"'), server.child, 60_000)) as {
        received: number;
        bad: number;
        peer: string;
        error?: string;
      };
      await Promise.all([exited(client.child), exited(server.child)]);
      return { sent: c.sent, received: s.received, bad: s.bad, peer: s.peer.replace(/^::ffff:/, ''), clientError: c.error, serverError: s.error };
    },
  };
}

export interface PingResult {
  transmitted: number;
  /** Sequence numbers up to the last one answered that never got an answer. */
  lost: number;
  received: number;
}

export interface Pinger {
  /** Replies so far. */
  received(): number;
  stop(): Promise<PingResult>;
}

/**
 * `ping -i 0.01` from `netns` to `ip`. Loss counts the gaps below the highest answered sequence
 * number, so the one request in flight when ping is stopped is not counted as lost.
 */
export async function startPing(netns: string, ip: string): Promise<Pinger> {
  const p = spawnIn(netns, 'ping', ['-n', '-i', '0.01', '-W', '1', ip]);
  const seqs = () => p.out.lines.map((l) => /icmp_seq=(\d+)/.exec(l)?.[1]).filter((s): s is string => s !== undefined).map(Number);
  await p.out.waitFor((l) => /icmp_seq=/.test(l), p.child);
  return {
    received: () => seqs().length,
    async stop() {
      p.child.kill('SIGINT');
      await exited(p.child);
      const got = new Set(seqs());
      const max = Math.max(...got);
      let lost = 0;
      for (let s = 1; s <= max; s++) if (!got.has(s)) lost += 1;
      const summary = p.out.lines.find((l) => /packets transmitted/.test(l)) ?? '';
      const transmitted = Number(/(\d+) packets transmitted/.exec(summary)?.[1] ?? max);
      return { transmitted, lost, received: got.size };
    },
  };
}

/**
 * Stops the streams and pings and asserts that nothing was lost: every byte sent came back
 * unaltered with no error on either side, and no ping went unanswered (more than 100 answered).
 */
export async function stopAndExpectNoLoss(streams: Stream[], pings: Pinger[]): Promise<StreamResult[]> {
  // Loaded here, not at the top: bench/restart.ts uses this file's helpers outside vitest.
  const { expect } = await import('vitest');
  const results = await Promise.all(streams.map((s) => s.stop()));
  const pinged = await Promise.all(pings.map((p) => p.stop()));
  const report = JSON.stringify({ streams: results, pings: pinged });
  for (const s of results) {
    expect(s.clientError, report).toBeNull();
    expect(s.serverError, report).toBeUndefined();
    expect(s.sent, report).toBeGreaterThan(0);
    expect(s.received, report).toBe(s.sent);
    expect(s.bad, report).toBe(-1);
  }
  for (const p of pinged) {
    expect(p.received, report).toBeGreaterThan(100);
    expect(p.lost, report).toBe(0);
  }
  return results;
}
