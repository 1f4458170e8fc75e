// bin/kelp-cni exec'd for real, alone (no agent) and against a stand-in agent on a unix socket.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serveCni } from '../../src/cni/request';
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
    ['an empty cniVersion', '{"cniVersion":""}', '1.1.0'],
    // Echoed whole, as the agent does: never cut short.
    ['a 64-byte cniVersion', `{"cniVersion":"${'9'.repeat(64)}"}`, '9'.repeat(64)],
    ['a 5000-byte cniVersion', `{"cniVersion":"${'9'.repeat(5000)}"}`, '9'.repeat(5000)],
    ['a cniVersion with escapes', '{"cniVersion":"1\\"\\u00e9\\n\\u0000"}', '1"é\n\u0000'],
    ['a version read before malformed JSON', '{"cniVersion":"0.4.0","name":', '0.4.0'],
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
  it.each(verbs)('%s: no socket file (and no DEL queue beside it) → code %i on stdout, exit ≠ 0', async (verb, code) => {
    // No del-queue directory beside the socket: DEL cannot be queued (test/e2e/restart-delqueue covers queueing).
    const res = await execCni({ env: { CNI_COMMAND: verb, ...ATTACH, KELP_AGENT_SOCKET: nowhere }, stdin: JSON.stringify({ ...CONF, cniVersion: '1.1.0' }) });
    expect(res.code).not.toBe(0);
    expectOneJsonDocument(res);
    expect(res.json).toEqual({
      cniVersion: '1.1.0',
      code,
      msg: `kelp agent is not reachable at ${nowhere}: No such file or directory`,
      ...(verb === 'DEL' ? { details: `cannot queue the DEL: ${path.join(scratch, 'del-queue')}: No such file or directory` } : {}),
    });
    expect(res.stderr).toContain(nowhere);
  });

  it('a path that is not a listening socket → connection refused', async () => {
    const file = path.join(scratch, 'plain-file');
    writeFileSync(file, '');
    const res = await execCni({ env: { CNI_COMMAND: 'ADD', ...ATTACH }, stdin: JSON.stringify({ ...CONF, agentSocket: file }) });
    expect(res.json).toMatchObject({ code: 11, msg: `kelp agent is not reachable at ${file}: Connection refused` });
  });

  it('a config without cniVersion means 0.1.0: code 1, answered in 1.1.0, without the agent', async () => {
    const res = await execCni({ env: { CNI_COMMAND: 'DEL', ...ATTACH, KELP_AGENT_SOCKET: nowhere }, stdin: JSON.stringify({ name: 'n', type: 't' }) });
    expect(res.json).toMatchObject({ cniVersion: '1.1.0', code: 1, msg: 'incompatible CNI versions' });
  });

  it('uses /run/kelp/kelp.sock when nothing else names a socket', async () => {
    // A private mount namespace with an empty /run: the machine's own /run (and any agent
    // listening there) is neither seen nor touched.
    const res = await inPrivateRun({ env: { CNI_COMMAND: 'STATUS' }, stdin: JSON.stringify({ ...CONF, cniVersion: '1.1.0' }) });
    expect(res.code).toBe(1);
    expect(res.json).toEqual({
      cniVersion: '1.1.0',
      code: 50,
      msg: 'kelp agent is not reachable at /run/kelp/kelp.sock: No such file or directory',
    });
  });
});

/** Runs kelp-cni with an empty private /run (see 'uses /run/kelp/kelp.sock …'). */
function inPrivateRun(opts: { env: Record<string, string>; stdin: string }): Promise<CniExecResult> {
  return execCni({
    env: { ...opts.env, PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
    stdin: opts.stdin,
    bin: '/usr/bin/unshare',
    args: ['--mount', '--propagation', 'private', '/bin/sh', '-c', 'mount -t tmpfs tmpfs /run && exec "$0"', KELP_CNI_BIN],
  });
}

// kelp-cni answers what it can tell from the request alone before reaching for the agent: the
// variables, JSON that does not decode, and cniVersion, name, type and agentSocket (the fields
// it needs itself, checked in the agent's order). Its answer must be the one the agent would
// give: compared here with the agent's own request parser (src/cni/request.ts).
describe('requests kelp-cni rejects by itself', () => {
  const env = (verb: string, extra: Record<string, string> = {}) => ({ CNI_COMMAND: verb, ...ATTACH, ...extra });
  const conf = (extra: Record<string, unknown> = {}) => JSON.stringify({ ...CONF, ...extra });
  // [what, env, stdin, code, cniVersion answered in]
  const cases: Array<[string, Record<string, string>, string | Buffer, number, string]> = [
    ['empty stdin', env('ADD'), '', 6, '1.1.0'],
    ['only whitespace', env('DEL'), ' \n\t\r ', 6, '1.1.0'],
    ['"{"', env('ADD'), '{', 6, '1.1.0'],
    ['a JSON array', env('ADD'), '[]', 6, '1.1.0'],
    ['a JSON string', env('DEL'), '"x"', 6, '1.1.0'],
    ['null', env('CHECK'), 'null', 6, '1.1.0'],
    ['truncated after cniVersion', env('ADD'), '{"cniVersion":"1.0.0","name":"n","type":"t"', 6, '1.0.0'],
    ['a missing comma after cniVersion', env('DEL'), '{"cniVersion":"0.4.0","name":"n" "type":"t"}', 6, '0.4.0'],
    ['data after the object', env('ADD'), `${conf()} x`, 6, '1.0.0'],
    ['a second document', env('ADD'), `${conf()}{}`, 6, '1.0.0'],
    ['a bad number before cniVersion', env('ADD'), '{"mtu":01,"cniVersion":"1.0.0","name":"n","type":"t"}', 6, '1.1.0'],
    ['a bad value inside an earlier member', env('ADD'), '{"ipam":{"a":[1,}],"cniVersion":"1.0.0","name":"n","type":"t"}', 6, '1.1.0'],
    ['a trailing comma', env('ADD'), '{"cniVersion":"1.0.0","name":"n","type":"t",}', 6, '1.0.0'],
    ['a raw control character in a string', env('ADD'), '{"cniVersion":"1.0.0","name":"a\u0001","type":"t"}', 6, '1.0.0'],
    ['a bad escape', env('ADD'), '{"cniVersion":"1.0.0","x":"\\x","name":"n","type":"t"}', 6, '1.0.0'],
    ['a bad literal', env('ADD'), '{"cniVersion":"1.0.0","x":tru,"name":"n","type":"t"}', 6, '1.0.0'],
    ['single quotes', env('ADD'), "{'cniVersion':'1.0.0'}", 6, '1.1.0'],
    ['unbalanced nesting', env('ADD'), `{"cniVersion":"1.0.0","x":${'['.repeat(10000)}}`, 6, '1.0.0'],
    ['a byte order mark', env('ADD'), `\ufeff${conf()}`, 6, '1.1.0'],
    ['a NUL byte', env('DEL'), Buffer.concat([Buffer.from(conf()), Buffer.from([0])]), 6, '1.0.0'],
    ['no cniVersion (0.1.0)', env('ADD'), JSON.stringify({ name: 'n', type: 't' }), 1, '1.1.0'],
    ['cniVersion null', env('ADD'), conf({ cniVersion: null }), 1, '1.1.0'],
    ['an empty cniVersion', env('DEL'), conf({ cniVersion: '' }), 1, '1.1.0'],
    ['an unknown cniVersion', env('DEL'), conf({ cniVersion: '9.9.9' }), 1, '9.9.9'],
    ['cniVersion "1.0"', env('ADD'), conf({ cniVersion: '1.0' }), 1, '1.0'],
    ['a cniVersion with a quote', env('ADD'), conf({ cniVersion: '1"0' }), 1, '1"0'],
    ['a numeric cniVersion', env('ADD'), conf({ cniVersion: 1 }), 7, '1.1.0'],
    ['the last of two cniVersions', env('ADD'), '{"cniVersion":"1.0.0","cniVersion":"7","name":"n","type":"t"}', 1, '7'],
    ['no name', env('DEL'), JSON.stringify({ cniVersion: '1.0.0', type: 't' }), 7, '1.0.0'],
    ['name null', env('ADD'), conf({ name: null }), 7, '1.0.0'],
    ['an empty name', env('ADD'), conf({ name: '' }), 7, '1.0.0'],
    ['a numeric name', env('ADD'), conf({ name: 5 }), 7, '1.0.0'],
    ['an object as name', env('ADD'), conf({ name: { a: [1, true, null] } }), 7, '1.0.0'],
    ['a name with a space', env('DEL'), conf({ name: 'bad name' }), 7, '1.0.0'],
    ['a name starting with "-"', env('ADD'), conf({ name: '-x' }), 7, '1.0.0'],
    ['a name with a slash', env('ADD'), conf({ name: '../x' }), 7, '1.0.0'],
    ['a non-ASCII name', env('ADD'), conf({ name: 'né' }), 7, '1.0.0'],
    ['an escaped name', env('ADD'), '{"cniVersion":"1.0.0","name":"a\\u0000b","type":"t"}', 7, '1.0.0'],
    ['a long bad name', env('ADD'), conf({ name: `${'x'.repeat(100)} ` }), 7, '1.0.0'],
    ['no type', env('DEL'), JSON.stringify({ cniVersion: '1.0.0', name: 'n' }), 7, '1.0.0'],
    ['an empty type', env('ADD'), conf({ type: '' }), 7, '1.0.0'],
    ['a list as type', env('ADD'), conf({ type: [] }), 7, '1.0.0'],
    ['an empty agentSocket', env('ADD'), conf({ agentSocket: '' }), 7, '1.0.0'],
    ['a relative agentSocket', env('DEL'), conf({ agentSocket: 'run/kelp.sock' }), 7, '1.0.0'],
    ['a numeric agentSocket', env('ADD'), conf({ agentSocket: 7 }), 7, '1.0.0'],
    ['a 108-byte agentSocket', env('ADD'), conf({ agentSocket: `/${'s'.repeat(107)}` }), 7, '1.0.0'],
    ['no CNI_CONTAINERID (DEL)', env('DEL', { CNI_CONTAINERID: '' }), conf(), 4, '1.0.0'],
    ['no CNI_IFNAME (DEL)', env('DEL', { CNI_IFNAME: '' }), conf(), 4, '1.0.0'],
    ['no CNI_NETNS (ADD), before bad JSON', env('ADD', { CNI_NETNS: '' }), '{', 4, '1.1.0'],
    ['none of the variables (CHECK)', { CNI_COMMAND: 'CHECK' }, conf(), 4, '1.0.0'],
    ['GC without CNI_PATH', { CNI_COMMAND: 'GC' }, conf({ cniVersion: '1.1.0' }), 4, '1.1.0'],
    ['CNI_CONTAINERID "-x"', env('DEL', { CNI_CONTAINERID: '-x' }), conf(), 4, '1.0.0'],
    ['CNI_CONTAINERID "a/b"', env('ADD', { CNI_CONTAINERID: 'a/b' }), conf(), 4, '1.0.0'],
    ['a 16-byte CNI_IFNAME', env('ADD', { CNI_IFNAME: 'abcdefghijklmnop' }), conf(), 4, '1.0.0'],
    ['CNI_IFNAME "."', env('DEL', { CNI_IFNAME: '.' }), conf(), 4, '1.0.0'],
    ['CNI_IFNAME with a colon', env('ADD', { CNI_IFNAME: 'eth0:1' }), conf(), 4, '1.0.0'],
    ['CNI_IFNAME with a no-break space', env('ADD', { CNI_IFNAME: 'a\u00a0b' }), conf(), 4, '1.0.0'],
    ['CNI_IFNAME with an ideographic space', env('ADD', { CNI_IFNAME: 'a\u3000b' }), conf(), 4, '1.0.0'],
    ['STATUS with bad JSON', { CNI_COMMAND: 'STATUS' }, '{"cniVersion":"1.1.0",', 6, '1.1.0'],
    // The agent checks CNI_ARGS after the fields kelp-cni checks, so both answer alike.
    ['bad JSON and a bad CNI_ARGS IP', env('ADD', { CNI_ARGS: 'IP=nope' }), '{', 6, '1.1.0'],
    ['a bad name and a bad CNI_ARGS IP', env('ADD', { CNI_ARGS: 'IP=nope' }), conf({ name: 'a b' }), 7, '1.0.0'],
  ];

  let server: CniTestServer;
  beforeAll(async () => {
    server = await startCniServer(() => ({ exit: 0, stdout: '' }));
  });
  afterAll(() => server.close());

  it.each(cases.map(([what, ...rest]) => [`${what} → code ${rest[2]}`, ...rest] as const))('%s, without contacting the agent', async (_name, env, stdin, code, version) => {
    server.requests.length = 0;
    const res = await execCni({ env: { ...env, KELP_AGENT_SOCKET: server.socketPath }, stdin });
    expect(res.code, res.stdout + res.stderr).toBe(1);
    expectOneJsonDocument(res);
    expect(server.requests).toHaveLength(0);
    expect(res.json).toMatchObject({ cniVersion: version, code });
    // The agent's parser answers the same request alike: the same code, message and version,
    // and the same details but for JSON syntax errors (V8 words those its own way).
    const agent = await serveCni(env, Buffer.from(stdin), () => Promise.reject(new Error('the request parsed')));
    const want = JSON.parse(agent.stdout) as Record<string, unknown>;
    if (code === 6 && want.details !== 'stdin is empty' && want.details !== 'not a JSON object') {
      expect(res.json.details).toMatch(/^invalid JSON at byte \d+: /);
      delete want.details;
      delete res.json.details;
    }
    expect(res.json).toEqual(want);
  });

  it('malformed JSON naming another socket is a decode failure, not an unreachable default socket', async () => {
    // The socket is named after the syntax error; kelp-cni used to fall back to the default.
    server.requests.length = 0;
    const stdin = `{"cniVersion":"1.0.0","name":"n" "type":"t","agentSocket":${JSON.stringify(server.socketPath)}}`;
    const res = await inPrivateRun({ env: { CNI_COMMAND: 'ADD', ...ATTACH }, stdin });
    expect(res.code).toBe(1);
    expect(res.json).toMatchObject({ cniVersion: '1.0.0', code: 6, msg: 'cannot decode network config' });
    expect(server.requests).toHaveLength(0);
  });

  it('deep nesting that is well-formed is forwarded', async () => {
    server.requests.length = 0;
    const n = 200_000;
    const stdin = conf({ x: 1 }).replace('"x":1', `"x":${'[{"a":'.repeat(n)}1${'}]'.repeat(n)}`);
    const res = await execCni({ env: { ...env('ADD'), KELP_AGENT_SOCKET: server.socketPath }, stdin });
    expect(res.code, res.stdout + res.stderr).toBe(0);
    expect(server.requests).toHaveLength(1);
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

  // Anything JSON allows, byte for byte: escapes, raw non-ASCII, raw invalid UTF-8 in a string,
  // whitespace of every kind, and up to the 16 MiB limit.
  const big = `{"cniVersion":"1.0.0","name":"kelp-test","type":"kelp-cni","blob":"${randomBytes(3 << 20).toString('base64')}"}`;
  const exact = `{"cniVersion":"1.0.0","name":"kelp-test","type":"kelp-cni"}`;
  const stdins: Array<[string, Buffer]> = [
    ['a config', Buffer.from(JSON.stringify(CONF))],
    ['escapes, non-ASCII and odd whitespace', Buffer.from(` \r\n\t{"cniVersion" : "1.0.0","name":"kelp-test","type":"kelp-cni","x":"\\u0000\\ud800é😀\\"\\/","n":[-0.5e+3,0,1E2,true,false,null,{}]}\n`)],
    ['invalid UTF-8 inside a string', Buffer.concat([Buffer.from('{"cniVersion":"1.0.0","name":"kelp-test","type":"kelp-cni","x":"'), Buffer.from([0xff, 0xc3]), Buffer.from('"}')])],
    ['3 MiB', Buffer.from(big)],
    ['exactly 16 MiB', Buffer.from(exact + ' '.repeat((16 << 20) - exact.length))],
  ];  describe('agentSocket from stdin wins over KELP_AGENT_SOCKET', () => {
    // Each case builds stdin around the JSON-encoded socket path `s`.
    // A valid config around the member under test.
    const ID = '"cniVersion":"1.0.0","name":"kelp-test","type":"kelp-cni"';
    const cases: Array<[string, (s: string) => string]> = [
      ['plain', (s) => `{${ID},"agentSocket":${s}}`],
      ['escaped slashes', (s) => `{${ID},"agentSocket":${s.replace(/\//g, '\\/')}}`],
      ['unicode escapes', (s) => `{"agentSocket":${s.replace(/k/g, '\\u006b').replace(/\//g, '\\u002F')},${ID}}`],
      ['escaped key', (s) => `{${ID},"agent\\u0053ocket":${s}}`],
      ['whitespace everywhere', (s) => ` \n{ \t"agentSocket" \r\n : \n ${s} \n,${ID}} `],
      [
        'after nested decoys',
        (s) =>
          `{${ID},"ipam":{"agentSocket":"/nope/1","x":[{"agentSocket":"/nope/2"}],"note":"{["},"s":"\\"agentSocket\\":\\"/nope/3\\"",` +
          `"b":"]}{[","n":-1.5e3,"t":true,"z":null,"agentSocket":${s},"after":{"agentSocket":"/nope/4"}}`,
      ],
      ['a duplicated key (last wins)', (s) => `{${ID},"agentSocket":"/nope/first","agentSocket":${s}}`],
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
            stdin: `{"cniVersion":"1.0.0","name":"n","type":"t","agentSocket":${encode(odd.socketPath)}}`,
          });
          expect(res.stdout).toBe('odd');
        }
        expect(odd.requests).toHaveLength(2);
      } finally {
        await odd.close();
      }
    });

    it('falls back to KELP_AGENT_SOCKET when agentSocket is only nested, null or no usable path', async () => {
      // (An empty, relative or overlong agentSocket is a config error: see 'requests kelp-cni rejects by itself'.)
      const stdins = [
        `{${ID},"ipam":{"agentSocket":"/nope"}}`,
        `{${ID},"agentSocket":null}`,
        `{${ID},"agentSocket":"/nope","agentSocket":null}`,
        `{${ID},"agentSocket":"/nope\\u0000"}`,
        `{${ID},"agentSocket":"/nope\\ud800"}`,
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
