// kelp-cni's side of the DEL queue, against a stand-in agent that dies in every way an agent
// can while being restarted: a DEL it could not deliver is written, byte for byte, into the
// queue directory and answered with success; what cannot be queued, and every other verb, fails
// with "try again later" as before; an agent that is up and answers wrongly is not "down".
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { splitRequest } from '../../src/cni';
import { execCni, REPO_ROOT } from '../support/cni-exec';
import { CniTestServer, Reply, startCniServer } from '../support/cni-server';

let scratch: string;
let queue: string;
const CONF = (extra: Record<string, unknown> = {}) => ({ cniVersion: '1.0.0', name: 'kelp-test', type: 'kelp-cni', delQueueDir: queue, ...extra });
const ATTACH = { CNI_CONTAINERID: 'c1', CNI_NETNS: '/var/run/netns/nope', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' };

beforeAll(() => {
  execFileSync('make', ['-s', 'cni'], { cwd: REPO_ROOT, stdio: 'inherit' });
  scratch = mkdtempSync(path.join(tmpdir(), 'kelp-delq-'));
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

beforeEach(() => {
  queue = path.join(scratch, `q${Math.random().toString(36).slice(2)}`);
  mkdirSync(queue, { mode: 0o700 });
});

let server: CniTestServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function agent(reply: Reply): Promise<string> {
  server = await startCniServer(() => reply);
  return server.socketPath;
}

const nowhere = () => path.join(scratch, 'no-agent.sock');

describe('a DEL the agent cannot take is queued and succeeds', () => {
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
    const files = readdirSync(queue);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^\d{19}-\d+\.del$/);
    const file = path.join(queue, files[0]);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const body = readFileSync(file);
    const { entries, stdin: queuedStdin } = splitRequest(body);
    expect(entries.sort()).toEqual(['CNI_COMMAND=DEL', 'CNI_CONTAINERID=c1', 'CNI_IFNAME=eth0', 'CNI_NETNS=/var/run/netns/nope', 'CNI_PATH=/usr/lib/cni', 'KELP_X=y']);
    expect(queuedStdin.toString()).toBe(stdin);
    // When the agent received it, the queued bytes are exactly what it got.
    if (server && server.requests.length) expect(body.equals(server.requests[0].body)).toBe(true);
    // Named by wall-clock time, so the agent can tell it from a later ADD of the attachment.
    const queuedAtMs = Number(BigInt(files[0].slice(0, 19)) / 1_000_000n);
    expect(Math.abs(queuedAtMs - Date.now())).toBeLessThan(60_000);
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
  const unqueueable: Array<[string, Record<string, string>, () => Record<string, unknown> | string, RegExp]> = [
    ['no CNI_CONTAINERID', { CNI_IFNAME: 'eth0' }, () => CONF({ agentSocket: nowhere() }), /CNI_CONTAINERID and CNI_IFNAME are required/],
    ['an empty CNI_IFNAME', { CNI_CONTAINERID: 'c1', CNI_IFNAME: '' }, () => CONF({ agentSocket: nowhere() }), /CNI_CONTAINERID and CNI_IFNAME are required/],
    ['no network name', { ...ATTACH }, () => ({ cniVersion: '1.0.0', delQueueDir: queue, agentSocket: nowhere() }), /no network name/],
    ['stdin that is no JSON', { ...ATTACH }, () => '\u0000\u0001garbage', /no network name/],
    ['a missing queue directory', { ...ATTACH }, () => CONF({ agentSocket: nowhere(), delQueueDir: path.join(scratch, 'missing') }), /cannot queue the DEL: .*missing: No such file or directory/],
    ['a relative queue directory', { ...ATTACH }, () => CONF({ agentSocket: nowhere(), delQueueDir: 'del-queue' }), /not an absolute path/],
    ['a queue "directory" that is a file', { ...ATTACH }, () => CONF({ agentSocket: nowhere(), delQueueDir: '/dev/null' }), /Not a directory/],
  ];
  it.each(unqueueable)('a DEL with %s → code 11 saying why, nothing queued', async (_name, env, conf, why) => {
    const c = conf();
    const res = await execCni({ env: { CNI_COMMAND: 'DEL', KELP_AGENT_SOCKET: nowhere(), ...env }, stdin: typeof c === 'string' ? c : JSON.stringify(c) });
    expect(res.code).not.toBe(0);
    expect(res.json).toMatchObject({ code: 11 });
    expect(`${res.json.msg} ${res.json.details ?? ''}`).toMatch(why);
    expect(readdirSync(queue)).toEqual([]);
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
