import { describe, expect, it } from 'vitest';
import { CniError } from '../../src/cni/errors';
import { formatResponse, parseRequest, serveCni } from '../../src/cni/request';
import { CniResult } from '../../src/cni/result';

const ATTACH = { CNI_CONTAINERID: 'c1', CNI_NETNS: '/var/run/netns/x', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' };
const CONF = { cniVersion: '1.0.0', name: 'kelp', type: 'kelp-cni' };
const PREV = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: '/var/run/netns/x' }], ips: [{ address: '10.0.0.2/24', interface: 0 }] };
const RESULT: CniResult = { interfaces: [{ name: 'eth0', sandbox: '/var/run/netns/x' }], ips: [{ address: '10.0.0.2/24', interface: 0 }], routes: [], dns: {} };

const json = (o: unknown) => Buffer.from(JSON.stringify(o));

describe('parseRequest', () => {
  it('builds an ADD request', () => {
    const stdin = json(CONF);
    const env = { CNI_COMMAND: 'ADD', ...ATTACH, CNI_ARGS: 'K8S_POD_NAME=p', KELP_X: '1' };
    const req = parseRequest(env, stdin);
    if (req instanceof CniError || req.command !== 'ADD') throw new Error(`unexpected ${JSON.stringify(req)}`);
    expect(req).toMatchObject({ cniVersion: '1.0.0', containerId: 'c1', netns: '/var/run/netns/x', ifname: 'eth0', path: ['/usr/lib/cni'] });
    expect(req.args.podName).toBe('p');
    expect(req.config.name).toBe('kelp');
    expect(req.env).toBe(env);
    expect(req.stdin).toBe(stdin);
  });

  it.each([
    ['DEL without netns', { CNI_COMMAND: 'DEL', ...ATTACH, CNI_NETNS: '' }, CONF, { command: 'DEL', netns: undefined }],
    ['CHECK with prevResult', { CNI_COMMAND: 'CHECK', ...ATTACH }, { ...CONF, prevResult: PREV }, { command: 'CHECK', prevResult: RESULT }],
    ['STATUS', { CNI_COMMAND: 'STATUS', CNI_CONTAINERID: '', CNI_NETNS: '', CNI_IFNAME: '' }, { ...CONF, cniVersion: '1.1.0' }, { command: 'STATUS' }],
    [
      'GC with a list',
      { CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' },
      { ...CONF, cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 'c1', ifname: 'eth0' }] },
      { command: 'GC', validAttachments: [{ containerID: 'c1', ifname: 'eth0' }] },
    ],
    ['GC without a list', { CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' }, { ...CONF, cniVersion: '1.1.0' }, { command: 'GC', validAttachments: undefined }],
    ['VERSION with empty stdin', { CNI_COMMAND: 'VERSION' }, undefined, { command: 'VERSION', cniVersion: '1.1.0' }],
    ['VERSION with malformed stdin', { CNI_COMMAND: 'VERSION' }, '{', { command: 'VERSION', cniVersion: '1.1.0' }],
    ['VERSION with malformed stdin whose version is readable', { CNI_COMMAND: 'VERSION' }, '{"cniVersion":"0.4.0",', { command: 'VERSION', cniVersion: '0.4.0' }],
    ['VERSION with a config', { CNI_COMMAND: 'VERSION' }, { cniVersion: '0.4.0' }, { command: 'VERSION', cniVersion: '0.4.0' }],
  ])('%s', (_name, env, conf, want) => {
    const stdin = conf === undefined ? Buffer.alloc(0) : typeof conf === 'string' ? Buffer.from(conf) : json(conf);
    expect(parseRequest(env, stdin)).toMatchObject(want);
  });

  // Each row shows which check comes first when several fail (skel's order).
  it.each([
    ['unknown command before anything else', { CNI_COMMAND: 'FOO' }, '{', 4, 'unknown CNI_COMMAND: FOO', '1.1.0'],
    ['missing variables before bad JSON', { CNI_COMMAND: 'ADD' }, '{', 4, 'required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME] missing', '1.1.0'],
    ['bad JSON', { CNI_COMMAND: 'ADD', ...ATTACH }, '{', 6, 'cannot decode network config', '1.1.0'],
    ['bad JSON after a readable version, answered in it', { CNI_COMMAND: 'ADD', ...ATTACH }, '{"cniVersion":"0.4.0","name":', 6, 'cannot decode network config', '0.4.0'],
    // CNI_ARGS comes after every check kelp-cni makes itself, so both answer a request alike.
    ['bad JSON before a bad CNI_ARGS', { CNI_COMMAND: 'ADD', ...ATTACH, CNI_ARGS: 'IP=nope' }, '{', 6, 'cannot decode network config', '1.1.0'],
    ['a bad name before a bad CNI_ARGS', { CNI_COMMAND: 'ADD', ...ATTACH, CNI_ARGS: 'IP=nope' }, { ...CONF, name: 'a b' }, 7, 'invalid name', '1.0.0'],
    ['a bad CNI_ARGS', { CNI_COMMAND: 'ADD', ...ATTACH, CNI_ARGS: 'IP=nope' }, CONF, 4, 'invalid CNI_ARGS', '1.0.0'],
    ['empty stdin', { CNI_COMMAND: 'DEL', ...ATTACH }, '', 6, 'cannot decode network config', '1.1.0'],
    ['unsupported version, answered in it', { CNI_COMMAND: 'ADD', ...ATTACH }, { ...CONF, cniVersion: '9.9.9', name: 'bad name' }, 1, 'incompatible CNI versions', '9.9.9'],
    ['bad name', { CNI_COMMAND: 'ADD', ...ATTACH }, { ...CONF, name: 'bad name' }, 7, 'invalid name', '1.0.0'],
    ['CHECK below 0.4.0', { CNI_COMMAND: 'CHECK', ...ATTACH }, { ...CONF, cniVersion: '0.3.1', prevResult: PREV }, 1, 'config version does not allow CHECK', '0.3.1'],
    ['CHECK without prevResult', { CNI_COMMAND: 'CHECK', ...ATTACH }, CONF, 7, 'CHECK needs prevResult', '1.0.0'],
    ['STATUS below 1.1.0', { CNI_COMMAND: 'STATUS' }, CONF, 1, 'config version does not allow STATUS', '1.0.0'],
    ['GC below 1.1.0', { CNI_COMMAND: 'GC', CNI_PATH: '/x' }, CONF, 1, 'config version does not allow GC', '1.0.0'],
    ['GC without CNI_PATH', { CNI_COMMAND: 'GC' }, { ...CONF, cniVersion: '1.1.0' }, 4, 'required env variables [CNI_PATH] missing', '1.1.0'],
  ])('%s → code %i', (_name, env, conf, code, msg, answerIn) => {
    const stdin = typeof conf === 'string' ? Buffer.from(conf) : json(conf);
    const err = parseRequest(env, stdin);
    if (!(err instanceof CniError)) throw new Error(`expected an error, got ${JSON.stringify(err)}`);
    expect([err.code, err.msg, err.cniVersion]).toEqual([code, msg, answerIn]);
    expect(formatResponse(err)).toEqual({ exit: 1, stdout: JSON.stringify(err.toCniJson(answerIn)) + '\n' });
  });
});

describe('formatResponse', () => {
  const add = parseRequest({ CNI_COMMAND: 'ADD', ...ATTACH }, json({ ...CONF, cniVersion: '0.4.0' }));
  const del = parseRequest({ CNI_COMMAND: 'DEL', ...ATTACH }, json(CONF));

  it('ADD: the result in the config version', () => {
    const res = formatResponse(add, RESULT);
    expect(res.exit).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({
      cniVersion: '0.4.0',
      interfaces: [{ name: 'eth0', sandbox: '/var/run/netns/x' }],
      ips: [{ version: '4', interface: 0, address: '10.0.0.2/24' }],
    });
  });

  it('ADD without a result is an internal error', () => {
    expect(JSON.parse(formatResponse(add).stdout)).toMatchObject({ cniVersion: '0.4.0', code: 999 });
  });

  it('errors: exit 1 and the error object in the config version', () => {
    expect(formatResponse(del, new CniError(11, 'busy'))).toEqual({ exit: 1, stdout: '{"cniVersion":"1.0.0","code":11,"msg":"busy"}\n' });
  });

  it.each(['DEL', 'CHECK', 'STATUS', 'GC'])('%s success: no stdout, exit 0', (cmd) => {
    const req = parseRequest(
      { CNI_COMMAND: cmd, ...ATTACH },
      json({ ...CONF, cniVersion: '1.1.0', prevResult: PREV }),
    );
    expect(formatResponse(req, RESULT)).toEqual({ exit: 0, stdout: '' });
    expect(formatResponse(req)).toEqual({ exit: 0, stdout: '' });
  });

  it('VERSION: the version document', () => {
    const res = formatResponse(parseRequest({ CNI_COMMAND: 'VERSION' }, json({ cniVersion: '0.3.1' })));
    expect(res.exit).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({ cniVersion: '0.3.1', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] });
  });
});

describe('serveCni', () => {
  it('runs the handler with the typed request and formats its result', async () => {
    const seen: string[] = [];
    const res = await serveCni({ CNI_COMMAND: 'ADD', ...ATTACH }, json(CONF), async (req) => {
      seen.push(`${req.command} ${req.config.name}`);
      return RESULT;
    });
    expect(seen).toEqual(['ADD kelp']);
    expect(JSON.parse(res.stdout).ips).toEqual([{ interface: 0, address: '10.0.0.2/24' }]);
  });

  it.each([
    ['a CniError', new CniError(3, 'unknown container'), { cniVersion: '1.0.0', code: 3, msg: 'unknown container' }],
    ['anything else', new Error('boom'), { cniVersion: '1.0.0', code: 999, msg: 'kelp internal error', details: 'boom' }],
  ])('turns %s thrown by the handler into an error answer', async (_name, thrown, want) => {
    const res = await serveCni({ CNI_COMMAND: 'DEL', ...ATTACH }, json(CONF), async () => {
      throw thrown;
    });
    expect(res.exit).toBe(1);
    expect(JSON.parse(res.stdout)).toEqual(want);
  });

  it('never calls the handler for VERSION or an invalid request', async () => {
    let calls = 0;
    const handler = async () => {
      calls++;
    };
    await serveCni({ CNI_COMMAND: 'VERSION' }, Buffer.alloc(0), handler);
    await serveCni({ CNI_COMMAND: 'ADD' }, json(CONF), handler);
    expect(calls).toBe(0);
  });
});
