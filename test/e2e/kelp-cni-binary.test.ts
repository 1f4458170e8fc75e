// bin/kelp-cni exec'd for real, alone (no agent) and against a stand-in agent on a unix socket.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SUPPORTED_VERSIONS } from '../../src/cni/version';
import { CniExecResult, execCni, KELP_CNI_BIN, REPO_ROOT } from '../support/cni-exec';
import { CniTestServer, Reply, startCniServer } from '../support/cni-server';

const CONF = { cniVersion: '1.0.0', name: 'kelp-test', type: 'kelp-cni' };
const ATTACH = { CNI_CONTAINERID: 'c1', CNI_NETNS: '/var/run/netns/nope', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' };

let scratch: string;
let nowhere: string;

beforeAll(() => {
  execFileSync('make', ['-s', 'cni'], { cwd: REPO_ROOT, stdio: 'inherit' });
  scratch = mkdtempSync(path.join(tmpdir(), 'kelp-cni-e2e-'));
  nowhere = path.join(scratch, 'missing.sock');
});

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function expectOneJsonDocument(res: CniExecResult): void {
  expect(res.json, `stdout: ${res.stdout}`).toBeTypeOf('object');
  expect(res.stdout.trimEnd().split('\n')).toHaveLength(1);
}

describe('VERSION, answered without the agent', () => {
  const cases: Array<[string, string | 'closed', string]> = [
    ['the stdin version', '{"cniVersion":"1.0.0"}', '1.0.0'],
    ['an unsupported stdin version, echoed', '{"cniVersion":"9.9.9"}', '9.9.9'],
    ['empty stdin', '', '1.1.0'],
    ['closed stdin', 'closed', '1.1.0'],
    ['malformed stdin', '{', '1.1.0'],
    ['an escaped version', '{"cniVersion":"0.4\\u002e0"}', '0.4.0'],
    ['a nested cniVersion only', '{"plugins":[{"cniVersion":"0.3.1"}]}', '1.1.0'],
    ['a cniVersion inside a string only', '{"x":"\\"cniVersion\\":\\"0.3.1\\""}', '1.1.0'],
    ['a duplicated key (last wins)', '{"cniVersion":"0.3.1","name":"n","cniVersion":"1.0.0"}', '1.0.0'],
    ['a non-string cniVersion', '{"cniVersion":1}', '1.1.0'],
    // The plugin keeps up to 63 bytes; a longer value is not cut short but ignored.
    ['a 63-byte cniVersion', `{"cniVersion":"${'9'.repeat(63)}"}`, '9'.repeat(63)],
    ['a 64-byte cniVersion', `{"cniVersion":"${'9'.repeat(64)}"}`, '1.1.0'],
  ];
  it.each(cases)('%s', async (_name, stdin, want) => {
    const res = await execCni({ env: { CNI_COMMAND: 'VERSION' }, stdin });
    expect(res.code).toBe(0);
    expectOneJsonDocument(res);
    expect(res.json).toEqual({ cniVersion: want, supportedVersions: [...SUPPORTED_VERSIONS] });
  });

  it("works with libcni's dummy variables and never contacts the agent", async () => {
    const server = await startCniServer(() => ({ exit: 0, stdout: 'agent' }));
    try {
      const res = await execCni({
        env: { CNI_COMMAND: 'VERSION', CNI_NETNS: 'dummy', CNI_IFNAME: 'dummy', CNI_PATH: 'dummy', KELP_AGENT_SOCKET: server.socketPath },
        stdin: JSON.stringify({ ...CONF, agentSocket: server.socketPath }),
      });
      expect(res.code).toBe(0);
      expect(res.json.supportedVersions).toEqual([...SUPPORTED_VERSIONS]);
      expect(server.requests).toHaveLength(0);
    } finally {
      await server.close();
    }
  });
});

describe('without CNI_COMMAND', () => {
  it.each([
    ['unset', {}],
    ['empty', { CNI_COMMAND: '' }],
  ])('%s: prints an about line and the versions on stderr, exit 0', async (_name, env) => {
    const res = await execCni({ env, stdin: '{"cniVersion":"1.0.0"}' });
    expect(res.code).toBe(0);
    expect(res.stdout).toBe('');
    expect(res.stderr).toMatch(/^kelp-cni .*kelp agent/);
    for (const v of SUPPORTED_VERSIONS) expect(res.stderr).toContain(v);
  });
});

describe('answered locally', () => {
  it('an unknown CNI_COMMAND is code 4 and never reaches the agent', async () => {
    const server = await startCniServer(() => ({ exit: 0, stdout: '' }));
    try {
      const res = await execCni({ env: { CNI_COMMAND: 'FOO', KELP_AGENT_SOCKET: server.socketPath }, stdin: JSON.stringify(CONF) });
      expect(res.code).not.toBe(0);
      expectOneJsonDocument(res);
      expect(res.json).toEqual({ cniVersion: '1.0.0', code: 4, msg: 'unknown CNI_COMMAND: FOO' });
      expect(server.requests).toHaveLength(0);
    } finally {
      await server.close();
    }
  });

  it('stdin over 16 MiB is code 5 and never reaches the agent', async () => {
    const server = await startCniServer(() => ({ exit: 0, stdout: '' }));
    try {
      const res = await execCni({
        env: { CNI_COMMAND: 'ADD', ...ATTACH, KELP_AGENT_SOCKET: server.socketPath },
        stdin: Buffer.alloc((16 << 20) + 1, 0x20),
      });
      expect(res.code).not.toBe(0);
      expect(res.json).toMatchObject({ cniVersion: '1.1.0', code: 5 });
      expect(server.requests).toHaveLength(0);
    } finally {
      await server.close();
    }
  });
});

describe('agent not reachable', () => {
  const verbs: Array<[string, number]> = [
    ['ADD', 11],
    ['CHECK', 11],
    ['DEL', 11],
    ['GC', 11],
    ['STATUS', 50],
  ];
  it.each(verbs)('%s: no socket file (and no DEL queue) → code %i on stdout, exit ≠ 0', async (verb, code) => {
    // A queue directory that does not exist: DEL cannot be queued (test/e2e/restart-delqueue covers queueing).
    const queue = path.join(scratch, 'no-queue');
    const res = await execCni({ env: { CNI_COMMAND: verb, ...ATTACH, KELP_AGENT_SOCKET: nowhere }, stdin: JSON.stringify({ ...CONF, delQueueDir: queue }) });
    expect(res.code).not.toBe(0);
    expectOneJsonDocument(res);
    expect(res.json).toEqual({
      cniVersion: '1.0.0',
      code,
      msg: `kelp agent is not reachable at ${nowhere}: No such file or directory`,
      ...(verb === 'DEL' ? { details: `cannot queue the DEL: ${queue}: No such file or directory` } : {}),
    });
    expect(res.stderr).toContain(nowhere);
  });

  it('a path that is not a listening socket → connection refused', async () => {
    const file = path.join(scratch, 'plain-file');
    writeFileSync(file, '');
    const res = await execCni({ env: { CNI_COMMAND: 'ADD', ...ATTACH }, stdin: JSON.stringify({ ...CONF, agentSocket: file }) });
    expect(res.json).toMatchObject({ code: 11, msg: `kelp agent is not reachable at ${file}: Connection refused` });
  });

  it('answers in 1.1.0 when stdin has no cniVersion', async () => {
    const res = await execCni({ env: { CNI_COMMAND: 'DEL', ...ATTACH, KELP_AGENT_SOCKET: nowhere }, stdin: '' });
    expect(res.json).toMatchObject({ cniVersion: '1.1.0', code: 11 });
  });

  it('uses /run/kelp/kelp.sock when nothing else names a socket', async () => {
    // A private mount namespace with an empty /run: the machine's own /run (and any agent
    // listening there) is neither seen nor touched.
    const res = await execCni({
      env: { CNI_COMMAND: 'STATUS', PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
      stdin: JSON.stringify({ ...CONF, cniVersion: '1.1.0' }),
      bin: '/usr/bin/unshare',
      args: ['--mount', '--propagation', 'private', '/bin/sh', '-c', 'mount -t tmpfs tmpfs /run && exec "$0"', KELP_CNI_BIN],
    });
    expect(res.code).toBe(1);
    expect(res.json).toEqual({
      cniVersion: '1.1.0',
      code: 50,
      msg: 'kelp agent is not reachable at /run/kelp/kelp.sock: No such file or directory',
    });
  });
});

describe('with an agent', () => {
  let server: CniTestServer;
  let nextReply: (req: unknown) => Reply = () => ({ exit: 0, stdout: '' });

  beforeAll(async () => {
    server = await startCniServer((req) => nextReply(req));
  });
  afterAll(() => server.close());

  function run(env: Record<string, string>, stdin: Buffer | string, reply: Reply = { exit: 0, stdout: '' }): Promise<CniExecResult> {
    nextReply = () => reply;
    server.requests.length = 0;
    return execCni({ env: { KELP_AGENT_SOCKET: server.socketPath, ...env }, stdin });
  }

  it('forwards exactly the CNI_* and KELP_* variables, as HTTP/1.0 POST /v1/cni', async () => {
    const env = {
      CNI_COMMAND: 'ADD',
      ...ATTACH,
      CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=p;X=a=b',
      CNI_EMPTY: '',
      KELP_AGENT_SOCKET: server.socketPath,
      KELP_TRACE: 'x y\tz',
      PATH: '/usr/bin',
      HOME: '/root',
      FOO: 'CNI_NOT=1',
      CNIX: 'no',
      XCNI_A: 'no',
      kelp_lower: 'no',
    };
    const res = await run(env, JSON.stringify(CONF));
    expect(res.code).toBe(0);
    expect(server.requests).toHaveLength(1);
    const req = server.requests[0];
    expect(req.method).toBe('POST');
    expect(req.url).toBe('/v1/cni');
    expect(req.headers['content-length']).toBe(String(req.body.length));
    const forwarded = Object.entries(env).filter(([k]) => k.startsWith('CNI_') || k.startsWith('KELP_'));
    expect(req.entries.sort()).toEqual(forwarded.map(([k, v]) => `${k}=${v}`).sort());
    expect(req.env).toEqual(Object.fromEntries(forwarded));
  });

  const bigBinary = randomBytes(3 << 20);
  bigBinary[0] = 0;
  bigBinary[bigBinary.length - 1] = 0;
  const stdins: Array<[string, Buffer]> = [
    ['a config', Buffer.from(JSON.stringify(CONF))],
    ['empty', Buffer.alloc(0)],
    ['binary with NULs, 3 MiB', bigBinary],
    ['exactly 16 MiB', Buffer.alloc(16 << 20, 0x41)],
  ];
  it.each(stdins)('forwards stdin byte for byte: %s', async (_name, stdin) => {
    const res = await run({ CNI_COMMAND: 'DEL', ...ATTACH }, stdin);
    expect(res.code).toBe(0);
    expect(server.requests).toHaveLength(1);
    expect(server.requests[0].stdin.equals(stdin)).toBe(true);
  });

  describe('agentSocket from stdin wins over KELP_AGENT_SOCKET', () => {
    // Each case builds stdin around the JSON-encoded socket path `s`.
    const cases: Array<[string, (s: string) => string]> = [
      ['plain', (s) => `{"cniVersion":"1.0.0","agentSocket":${s}}`],
      ['escaped slashes', (s) => `{"agentSocket":${s.replace(/\//g, '\\/')}}`],
      ['unicode escapes', (s) => `{"agentSocket":${s.replace(/k/g, '\\u006b').replace(/\//g, '\\u002F')}}`],
      ['escaped key', (s) => `{"agent\\u0053ocket":${s}}`],
      ['whitespace everywhere', (s) => ` \n{ \t"agentSocket" \r\n : \n ${s} \n} `],
      [
        'after nested decoys',
        (s) =>
          `{"ipam":{"agentSocket":"/nope/1","x":[{"agentSocket":"/nope/2"}],"note":"{["},"s":"\\"agentSocket\\":\\"/nope/3\\"",` +
          `"b":"]}{[","n":-1.5e3,"t":true,"z":null,"agentSocket":${s},"after":{"agentSocket":"/nope/4"}}`,
      ],
      ['a duplicated key (last wins)', (s) => `{"agentSocket":"/nope/first","agentSocket":${s}}`],
    ];
    it.each(cases)('%s', async (_name, build) => {
      const res = await run({ CNI_COMMAND: 'ADD', ...ATTACH, KELP_AGENT_SOCKET: nowhere }, build(JSON.stringify(server.socketPath)), {
        exit: 0,
        stdout: '{"cniVersion":"1.0.0"}',
      });
      expect(res.stdout).toBe('{"cniVersion":"1.0.0"}');
      expect(server.requests).toHaveLength(1);
    });

    it('a socket path with a quote and non-ASCII characters', async () => {
      const odd = await startCniServer(() => ({ exit: 0, stdout: 'odd' }), { dirName: 'kelp "é😀\\ ' });
      // Every UTF-16 code unit beyond ASCII as \uXXXX, so 😀 becomes a surrogate pair.
      const escapeAll = (s: string) => JSON.stringify(s).replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
      try {
        for (const encode of [JSON.stringify, escapeAll]) {
          const res = await execCni({
            env: { CNI_COMMAND: 'ADD', ...ATTACH, KELP_AGENT_SOCKET: nowhere },
            stdin: `{"agentSocket":${encode(odd.socketPath)}}`,
          });
          expect(res.stdout).toBe('odd');
        }
        expect(odd.requests).toHaveLength(2);
      } finally {
        await odd.close();
      }
    });

    it('falls back to KELP_AGENT_SOCKET when agentSocket is only nested, empty or not a string', async () => {
      const stdins = [
        '{"ipam":{"agentSocket":"/nope"}}',
        '{"agentSocket":""}',
        '{"agentSocket":7}',
        '{"agentSocket":"/nope","agentSocket":null}',
        '{"agentSocket":"/nope","agentSocket":""}',
        '{"agentSocket":"/nope\\u0000"}',
        `{"agentSocket":"/${'x'.repeat(5000)}"}`,
      ];
      for (const stdin of stdins) {
        const res = await run({ CNI_COMMAND: 'ADD', ...ATTACH }, stdin, { exit: 0, stdout: 'env' });
        expect(res.stdout, stdin).toBe('env');
      }
    });
  });

  const answers: Array<[string, string, number]> = [
    ['an ADD result', '{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}\n', 0],
    ['an error object', '{"cniVersion":"1.0.0","code":7,"msg":"invalid mtu"}\n', 1],
    ['anything, with any exit code', 'not JSON \u0000 at all\r\n\r\n', 7],
    ['nothing', '', 0],
    ['a large body', 'x'.repeat(2 << 20), 0],
  ];
  it.each(answers)('prints the answer verbatim and exits with X-CNI-Exit: %s', async (_name, body, exit) => {
    const res = await run({ CNI_COMMAND: 'ADD', ...ATTACH }, JSON.stringify(CONF), { exit, stdout: body });
    expect(res.stdout).toBe(body);
    expect(res.code).toBe(exit);
  });

  const broken: Array<[string, Reply, string]> = [
    ['no X-CNI-Exit header', { raw: 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello' }, 'no X-CNI-Exit header'],
    ['a non-200 status', { raw: 'HTTP/1.1 500 Internal Server Error\r\nX-CNI-Exit: 0\r\n\r\n' }, 'HTTP status is not 200'],
    ['an exit code out of range', { raw: 'HTTP/1.1 200 OK\r\nX-CNI-Exit: 256\r\n\r\n' }, 'X-CNI-Exit is not a number from 0 to 255'],
    ['a truncated body', { raw: 'HTTP/1.1 200 OK\r\nX-CNI-Exit: 0\r\nContent-Length: 10\r\n\r\n{"cniV' }, 'answer shorter than its Content-Length'],
    ['a closed connection', { drop: true }, 'connection closed without an answer'],
    ['a header cut short', { raw: 'HTTP/1.1 200 OK\r\nX-CNI-' }, 'incomplete HTTP header'],
  ];
  it.each(broken)('an invalid answer (%s) is code 11, and nothing of it reaches stdout', async (_name, reply, why) => {
    const res = await run({ CNI_COMMAND: 'ADD', ...ATTACH }, JSON.stringify(CONF), reply);
    expect(res.code).not.toBe(0);
    expectOneJsonDocument(res);
    expect(res.json).toEqual({
      cniVersion: '1.0.0',
      code: 11,
      msg: `kelp agent at ${server.socketPath} sent an invalid answer`,
      details: why,
    });
  });

  it('STATUS with an invalid answer is code 50', async () => {
    const res = await run({ CNI_COMMAND: 'STATUS' }, JSON.stringify({ ...CONF, cniVersion: '1.1.0' }), { drop: true });
    expect(res.json).toMatchObject({ cniVersion: '1.1.0', code: 50 });
  });

  it('an agent that never answers times out (KELP_CNI_TIMEOUT_MS) with code 11', async () => {
    const res = await run({ CNI_COMMAND: 'ADD', ...ATTACH, KELP_CNI_TIMEOUT_MS: '200' }, JSON.stringify(CONF), { hang: true });
    expect(res.json).toEqual({
      cniVersion: '1.0.0',
      code: 11,
      msg: `kelp agent is not reachable at ${server.socketPath}: reading the answer: timed out`,
    });
  });

  it('logs to CNI_LOG_FILE at CNI_LOG_LEVEL, never to stdout', async () => {
    const log = path.join(scratch, 'debug.log');
    const ok = await run({ CNI_COMMAND: 'ADD', ...ATTACH, CNI_LOG_FILE: log, CNI_LOG_LEVEL: 'debug' }, JSON.stringify(CONF), {
      exit: 0,
      stdout: 'result',
    });
    expect(ok.stdout).toBe('result');
    expect(ok.stderr).toBe('');
    const failed = await execCni({
      env: { CNI_COMMAND: 'ADD', ...ATTACH, KELP_AGENT_SOCKET: nowhere, CNI_LOG_FILE: log },
      stdin: JSON.stringify(CONF),
    });
    expectOneJsonDocument(failed);
    expect(failed.stderr).toBe('');
    const lines = readFileSync(log, 'utf8').trimEnd().split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z kelp-cni\[\d+\] debug: ADD: forwarding \d+ env bytes and \d+ stdin bytes to /);
    expect(lines[1]).toMatch(/debug: ADD: agent answered exit 0 with 6 bytes$/);
    expect(lines[2]).toMatch(/error: code 11: kelp agent is not reachable at .*missing\.sock/);
  });
});
