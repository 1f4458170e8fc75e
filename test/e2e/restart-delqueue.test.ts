// The DEL queue. kelp-cni's side, against a stand-in agent that dies in every way an agent can
// while being restarted: a DEL it could not deliver is written, byte for byte, into the queue
// next to the agent socket (`<dirname(agentSocket)>/del-queue`, the agent's --run-dir) and
// answered with success; a DEL that cannot be parsed, what cannot be queued, and every other
// verb fail as before; an agent that is up and answers wrongly is not "down". The agent's side,
// with a real agent: where it keeps the queue, and the queue an older agent left in its state dir.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { encodeRequest, splitRequest } from '../../src/cni';
import type { Sandbox } from '../../src/sandbox';
import { execCni, REPO_ROOT } from '../support/cni-exec';
import { CniTestServer, Reply, startCniServer } from '../support/cni-server';
import { del, expectSilentSuccess, hostIfnameFor, linkNames, mustAdd, NETWORK, newAttachment, recordOf, restartAgent, startSandbox } from '../support/e2e';

let scratch: string;
/** Stands for the agent's --run-dir: the socket (`nowhere()` when no agent listens) and the queue beside it. */
let runDir: string;
let queue: string;
const CONF = (extra: Record<string, unknown> = {}) => ({ cniVersion: '1.0.0', name: 'kelp-test', type: 'kelp-cni', ...extra });
const ATTACH = { CNI_CONTAINERID: 'c1', CNI_NETNS: '/var/run/netns/nope', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' };

beforeAll(() => {
  execFileSync('make', ['-s', 'cni'], { cwd: REPO_ROOT, stdio: 'inherit' });
  scratch = mkdtempSync(path.join(tmpdir(), 'kelp-delq-'));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

beforeEach(() => {
  runDir = path.join(scratch, `r${Math.random().toString(36).slice(2)}`);
  queue = path.join(runDir, 'del-queue');
  mkdirSync(queue, { recursive: true, mode: 0o700 });
});

let server: CniTestServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

/** A stand-in agent listening in the run dir, next to the queue. */
async function agent(reply: Reply): Promise<string> {
  server = await startCniServer(() => reply, { dir: runDir });
  return server.socketPath;
}

const nowhere = () => path.join(runDir, 'kelp.sock');

function expectQueued(stdin: string): Buffer {
  const files = readdirSync(queue);
  expect(files).toHaveLength(1);
  expect(files[0]).toMatch(/^\d{19}-\d+\.del$/);
  const file = path.join(queue, files[0]);
  expect(statSync(file).mode & 0o777).toBe(0o600);
  const body = readFileSync(file);
  expect(splitRequest(body).stdin.toString()).toBe(stdin);
  // Named by wall-clock time, so the agent can tell it from a later ADD of the attachment.
  const queuedAtMs = Number(BigInt(files[0].slice(0, 19)) / 1_000_000n);
  expect(Math.abs(queuedAtMs - Date.now())).toBeLessThan(60_000);
  return body;
}

describe('a DEL the agent cannot take is queued next to its socket and succeeds', () => {
  const downs: Array<[string, () => Promise<string>]> = [
    ['no socket', async () => nowhere()],
    ['connection closed without an answer', () => agent({ drop: true })],
    ['answer cut inside the header', () => agent({ raw: 'HTTP/1.0 200 OK\r\nX-CNI-Ex' })],
    ['answer shorter than its Content-Length', () => agent({ raw: 'HTTP/1.0 200 OK\r\nX-CNI-Exit: 0\r\nContent-Length: 50\r\n\r\n{"cniV' })],
  ];
  it.each(downs)('%s', async (_name, socket) => {
    const agentSocket = await socket();
    const stdin = JSON.stringify(CONF({ agentSocket }));
    const res = await execCni({ env: { CNI_COMMAND: 'DEL', ...ATTACH, KELP_X: 'y', OTHER: 'not forwarded' }, stdin });
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(res.stdout).toBe('');
    expect(res.stderr).toMatch(/DEL of c1\/eth0 queued as /);
    const body = expectQueued(stdin);
    expect(splitRequest(body).entries.sort()).toEqual(['CNI_COMMAND=DEL', 'CNI_CONTAINERID=c1', 'CNI_IFNAME=eth0', 'CNI_NETNS=/var/run/netns/nope', 'CNI_PATH=/usr/lib/cni', 'KELP_X=y']);
    // When the agent received it, the queued bytes are exactly what it got.
    if (server && server.requests.length) expect(body.equals(server.requests[0].body)).toBe(true);
  });

  it('the socket named by KELP_AGENT_SOCKET has its queue beside it too', async () => {
    const stdin = JSON.stringify(CONF());
    const res = await execCni({ env: { CNI_COMMAND: 'DEL', ...ATTACH, KELP_AGENT_SOCKET: nowhere() }, stdin });
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expectQueued(stdin);
  });

  it('a delQueueDir in the config is ignored: one source of truth, the socket', async () => {
    const other = path.join(scratch, `other${Math.random().toString(36).slice(2)}`);
    mkdirSync(other);
    const stdin = JSON.stringify(CONF({ agentSocket: nowhere(), delQueueDir: other }));
    const res = await execCni({ env: { CNI_COMMAND: 'DEL', ...ATTACH }, stdin });
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expectQueued(stdin);
    expect(readdirSync(other)).toEqual([]);
  });
});

describe('what is not queued', () => {
  it.each(['ADD', 'CHECK', 'GC'])('%s with the agent down → code 11, nothing queued', async (verb) => {
    const res = await execCni({ env: { CNI_COMMAND: verb, ...ATTACH }, stdin: JSON.stringify(CONF({ agentSocket: nowhere() })) });
    expect(res.code).not.toBe(0);
    expect(res.json).toMatchObject({ code: 11 });
    expect(readdirSync(queue)).toEqual([]);
  });

  it('STATUS with the agent down → code 50, nothing queued', async () => {
    const res = await execCni({ env: { CNI_COMMAND: 'STATUS' }, stdin: JSON.stringify(CONF({ cniVersion: '1.1.0', agentSocket: nowhere() })) });
    expect(res.json).toMatchObject({ code: 50 });
    expect(readdirSync(queue)).toEqual([]);
  });

  // The agent is down for all of them (no socket at `nowhere()`, resolved when each case runs).
  const unparsable: Array<[string, Record<string, string>, () => Record<string, unknown> | string, number, RegExp]> = [
    ['no CNI_CONTAINERID', { CNI_IFNAME: 'eth0' }, () => CONF({ agentSocket: nowhere() }), 4, /required env variables \[CNI_CONTAINERID\] missing/],
    ['an empty CNI_IFNAME', { CNI_CONTAINERID: 'c1', CNI_IFNAME: '' }, () => CONF({ agentSocket: nowhere() }), 4, /required env variables \[CNI_IFNAME\] missing/],
    ['an invalid CNI_CONTAINERID', { ...ATTACH, CNI_CONTAINERID: '../c1' }, () => CONF({ agentSocket: nowhere() }), 4, /invalid CNI_CONTAINERID/],
    ['stdin that is no JSON', { ...ATTACH }, () => '\u0000\u0001garbage', 6, /cannot decode network config/],
    ['truncated JSON', { ...ATTACH }, () => JSON.stringify(CONF({ agentSocket: nowhere() })).slice(0, -1), 6, /cannot decode network config/],
    ['a JSON list', { ...ATTACH }, () => '[]', 6, /not a JSON object/],
    ['no cniVersion', { ...ATTACH }, () => ({ name: 'kelp-test', type: 'kelp-cni', agentSocket: nowhere() }), 1, /config is "0\.1\.0"/],
    ['an unsupported cniVersion', { ...ATTACH }, () => CONF({ cniVersion: '2.0.0', agentSocket: nowhere() }), 1, /config is "2\.0\.0"/],
    ['no network name', { ...ATTACH }, () => ({ cniVersion: '1.0.0', type: 'kelp-cni', agentSocket: nowhere() }), 7, /missing network name/],
    ['an invalid network name', { ...ATTACH }, () => CONF({ name: 'kelp test', agentSocket: nowhere() }), 7, /invalid name/],
    ['no type', { ...ATTACH }, () => ({ cniVersion: '1.0.0', name: 'kelp-test', agentSocket: nowhere() }), 7, /missing plugin type/],
  ];
  it.each(unparsable.map(([what, ...rest]) => [`${what} is an error (code ${rest[2]})`, ...rest] as const))('a DEL with %s and not queued', async (_name, env, conf, code, why) => {
    const c = conf();
    const res = await execCni({ env: { CNI_COMMAND: 'DEL', KELP_AGENT_SOCKET: nowhere(), ...env }, stdin: typeof c === 'string' ? c : JSON.stringify(c) });
    expect(res.code).toBe(1);
    expect(res.json).toMatchObject({ code });
    expect(`${res.json.msg} ${res.json.details ?? ''}`).toMatch(why);
    expect(readdirSync(queue)).toEqual([]);
  });

  const unqueueable: Array<[string, () => Record<string, string>, RegExp]> = [
    ['no del-queue beside the socket', () => ({ KELP_AGENT_SOCKET: path.join(scratch, 'elsewhere', 'kelp.sock') }), /cannot queue the DEL: .*elsewhere\/del-queue: No such file or directory/],
    ['a relative socket path', () => ({ KELP_AGENT_SOCKET: 'kelp.sock' }), /cannot queue the DEL: \.\/del-queue is not an absolute path/],
    ['a del-queue that is a file', () => {
      rmSync(queue, { recursive: true });
      writeFileSync(queue, '');
      return { KELP_AGENT_SOCKET: nowhere() };
    }, /del-queue: Not a directory/],
  ];
  it.each(unqueueable)('a DEL with %s → code 11 saying why', async (_name, env, why) => {
    const res = await execCni({ env: { CNI_COMMAND: 'DEL', ...ATTACH, ...env() }, stdin: JSON.stringify(CONF()) });
    expect(res.code).not.toBe(0);
    expect(res.json).toMatchObject({ code: 11 });
    expect(`${res.json.msg} ${res.json.details ?? ''}`).toMatch(why);
  });

  it('an agent that is up but answers wrongly is not down: code 11, nothing queued', async () => {
    const agentSocket = await agent({ raw: 'HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n' });
    const res = await execCni({ env: { CNI_COMMAND: 'DEL', ...ATTACH }, stdin: JSON.stringify(CONF({ agentSocket })) });
    expect(res.json).toMatchObject({ code: 11, details: 'HTTP status is not 200' });
    expect(readdirSync(queue)).toEqual([]);
  });

  it('a DEL the agent answers is not queued, whatever the answer', async () => {
    const agentSocket = await agent({ exit: 1, stdout: '{"cniVersion":"1.0.0","code":7,"msg":"no"}\n' });
    const res = await execCni({ env: { CNI_COMMAND: 'DEL', ...ATTACH }, stdin: JSON.stringify(CONF({ agentSocket })) });
    expect(res.code).toBe(1);
    expect(res.json).toEqual({ cniVersion: '1.0.0', code: 7, msg: 'no' });
    expect(readdirSync(queue)).toEqual([]);
  });
});

describe('as a plugin the agent delegates to', () => {
  it.each(['ADD', 'DEL', 'CHECK', 'STATUS', 'GC'])('%s: refused with code 7, without contacting the agent', async (verb) => {
    const agentSocket = await agent({ exit: 0, stdout: '' });
    const res = await execCni({ env: { CNI_COMMAND: verb, ...ATTACH, KELP_DELEGATED_BY: '1234' }, stdin: JSON.stringify(CONF({ cniVersion: '1.1.0', agentSocket })) });
    expect(res.code).not.toBe(0);
    expect(res.json).toMatchObject({ code: 7, msg: 'kelp-cni cannot be a plugin the kelp agent delegates to' });
    expect(server!.requests).toHaveLength(0);
    expect(readdirSync(queue)).toEqual([]);
  });
});

describe('with a real agent', () => {
  let sb: Sandbox;
  const agentQueue = () => path.join(path.dirname(sb.socketPath), 'del-queue');
  const oldQueue = () => path.join(sb.stateDir, 'del-queue');
  const queued = () => (existsSync(agentQueue()) ? readdirSync(agentQueue()) : []);

  beforeAll(async () => {
    sb = await startSandbox('dq');
  });
  afterAll(async () => {
    await sb?.stop();
  });

  // Each test starts with the agent running, whatever an earlier one left.
  beforeEach(async () => {
    if (!sb.agent) await restartAgent(sb);
  });

  it('queues in <run-dir>/del-queue whatever the config says about a queue, and carries the DELs out when back', async () => {
    const a = newAttachment(sb);
    const b = newAttachment(sb);
    await mustAdd(sb, a);
    await mustAdd(sb, b);
    await sb.stopAgent();
    // Written by hand, as the README shows it: no delQueueDir.
    const byHand = { cniVersion: '1.0.0', name: NETWORK, type: 'kelp-cni', agentSocket: sb.socketPath };
    const resA = await del(sb, a, { config: byHand });
    expect(resA.code, resA.stdout + resA.stderr).toBe(0);
    expect(queued()).toHaveLength(1);
    // An older agent's conflist, naming its queue in the state dir.
    const resB = await del(sb, b, { config: sb.pluginConfig({ delQueueDir: oldQueue() }) });
    expect(resB.code, resB.stdout + resB.stderr).toBe(0);
    expect(queued()).toHaveLength(2);
    expect(existsSync(oldQueue())).toBe(false);

    await restartAgent(sb);
    expect(queued()).toEqual([]);
    for (const x of [a, b]) {
      expect(recordOf(sb, x)).toBeUndefined();
      expect(linkNames(sb.node)).not.toContain(hostIfnameFor(NETWORK, x.containerId, x.ifname));
    }
    // The conflist the agent writes names no queue.
    expect(sb.pluginConfig()).not.toHaveProperty('delQueueDir');
  });

  it('an agent upgraded from one that queued in <state-dir>/del-queue replays those DELs and removes that directory', async () => {
    const c = newAttachment(sb);
    await mustAdd(sb, c);
    await sb.stopAgent();
    mkdirSync(oldQueue(), { recursive: true, mode: 0o700 });
    const body = encodeRequest(
      { CNI_COMMAND: 'DEL', CNI_CONTAINERID: c.containerId, CNI_NETNS: c.netnsPath, CNI_IFNAME: c.ifname, CNI_PATH: sb.cniBinDir },
      Buffer.from(JSON.stringify(sb.pluginConfig())),
    );
    writeFileSync(path.join(oldQueue(), `${(BigInt(Date.now()) * 1_000_000n).toString().padStart(19, '0')}-4194399.del`), body, { mode: 0o600 });
    writeFileSync(path.join(oldQueue(), '.17000000000000000000-1.del.tmp'), 'half written');

    await restartAgent(sb);
    expect(existsSync(oldQueue())).toBe(false);
    expect(queued()).toEqual([]);
    expect(recordOf(sb, c)).toBeUndefined();
    expect(linkNames(sb.node)).not.toContain(hostIfnameFor(NETWORK, c.containerId, c.ifname));
    expect(sb.agentLog()).toContain('queued DELs moved');
  });

  it('a delQueueDir in a config is ignored, said once in the agent log', async () => {
    const stray = path.join(sb.dir, 'stray-queue');
    const a = newAttachment(sb);
    for (let i = 0; i < 3; i++) expectSilentSuccess(await del(sb, a, { config: sb.pluginConfig({ delQueueDir: stray }) }));
    const lines = sb.agentLog().split('\n').filter((l) => l.includes(stray));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('ignored');
    expect(existsSync(stray)).toBe(false);
  });
});
