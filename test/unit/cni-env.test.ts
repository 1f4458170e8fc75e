import { describe, expect, it } from 'vitest';
import { ifnameProblem, parseCniArgs, parseEnv } from '../../src/cni/env';
import { CniError } from '../../src/cni/errors';

const ATTACH = { CNI_CONTAINERID: 'c1', CNI_NETNS: '/var/run/netns/x', CNI_IFNAME: 'eth0', CNI_PATH: '/usr/lib/cni' };

function error(fn: () => unknown): CniError {
  try {
    fn();
  } catch (e) {
    if (e instanceof CniError) return e;
    throw e;
  }
  throw new Error('expected a CniError');
}

describe('CNI_COMMAND', () => {
  it.each(['ADD', 'DEL', 'CHECK', 'STATUS', 'GC', 'VERSION'])('accepts %s', (cmd) => {
    expect(parseEnv({ CNI_COMMAND: cmd, ...ATTACH }).command).toBe(cmd);
  });

  it.each([
    [{ CNI_COMMAND: 'FOO' }, 'unknown CNI_COMMAND: FOO'],
    [{ CNI_COMMAND: 'add' }, 'unknown CNI_COMMAND: add'],
    [{}, 'required env variables [CNI_COMMAND] missing'],
    [{ CNI_COMMAND: '' }, 'required env variables [CNI_COMMAND] missing'],
  ])('%j → code 4 "%s"', (env, msg) => {
    const err = error(() => parseEnv({ ...env, ...ATTACH }));
    expect(err.code).toBe(4);
    expect(err.msg).toBe(msg);
  });
});

describe('required variables per verb (empty counts as unset)', () => {
  const cases: Array<[string, Record<string, string>, string[]]> = [
    ['ADD', {}, ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']],
    ['ADD', { CNI_NETNS: '/n', CNI_IFNAME: 'eth0' }, ['CNI_CONTAINERID']],
    ['ADD', { CNI_CONTAINERID: 'c', CNI_NETNS: '', CNI_IFNAME: 'eth0' }, ['CNI_NETNS']],
    ['CHECK', { CNI_CONTAINERID: 'c', CNI_NETNS: '/n' }, ['CNI_IFNAME']],
    ['DEL', {}, ['CNI_CONTAINERID', 'CNI_IFNAME']],
    ['GC', { CNI_PATH: '' }, ['CNI_PATH']],
  ];
  it.each(cases)('%s with %j → code 4 naming %j', (cmd, env, missing) => {
    const err = error(() => parseEnv({ CNI_COMMAND: cmd, ...env }));
    expect(err.code).toBe(4);
    expect(err.msg).toBe(`required env variables [${missing.join(',')}] missing`);
  });

  it.each<[string, Record<string, string>]>([
    ['DEL', { CNI_CONTAINERID: 'c', CNI_IFNAME: 'eth0', CNI_NETNS: '' }],
    ['STATUS', { CNI_CONTAINERID: '', CNI_NETNS: '', CNI_IFNAME: '', CNI_ARGS: '' }],
    ['GC', { CNI_PATH: '/opt/cni/bin', CNI_CONTAINERID: '', CNI_NETNS: '', CNI_IFNAME: '' }],
    ['VERSION', {}],
  ])('%s accepts %j', (cmd, env) => {
    const parsed = parseEnv({ CNI_COMMAND: cmd, ...env });
    expect(parsed.containerId).toBe(env.CNI_CONTAINERID || undefined);
    expect(parsed.netns).toBeUndefined();
  });

  it('reads every variable and splits CNI_PATH', () => {
    expect(parseEnv({ CNI_COMMAND: 'ADD', ...ATTACH, CNI_PATH: '/a::/b:', CNI_ARGS: 'A=1' })).toEqual({
      command: 'ADD',
      containerId: 'c1',
      netns: '/var/run/netns/x',
      ifname: 'eth0',
      args: expect.objectContaining({ all: { A: '1' } }),
      argsRaw: 'A=1',
      path: ['/a', '/b'],
    });
  });
});

describe('CNI_CONTAINERID', () => {
  it.each(['c1', 'a_b.c-1', 'A', '0'.repeat(64), 'cnitool-0123456789abcdef0123'])('accepts %s', (id) => {
    expect(parseEnv({ CNI_COMMAND: 'ADD', ...ATTACH, CNI_CONTAINERID: id }).containerId).toBe(id);
  });
  it.each(['-x', '_x', '.x', 'a b', 'a/b', 'a:b', 'é'])('rejects %j with code 4', (id) => {
    const err = error(() => parseEnv({ CNI_COMMAND: 'DEL', ...ATTACH, CNI_CONTAINERID: id }));
    expect(err.code).toBe(4);
    expect(err.msg).toBe('invalid CNI_CONTAINERID');
  });
  it('is not checked for verbs that do not use it', () => {
    expect(parseEnv({ CNI_COMMAND: 'STATUS', CNI_CONTAINERID: '-x', CNI_IFNAME: 'a/b' }).command).toBe('STATUS');
  });
});

describe('CNI_IFNAME', () => {
  it.each([
    ['eth0', undefined],
    ['abcdefghijklmno', undefined],
    ['abcdefghijklmnop', 'longer than 15 bytes'],
    ['ééééééééé', 'longer than 15 bytes'],
    ['.', 'is "." or ".."'],
    ['..', 'is "." or ".."'],
    ['a/b', 'contains "/", ":" or whitespace'],
    ['a:b', 'contains "/", ":" or whitespace'],
    ['a b', 'contains "/", ":" or whitespace'],
    ['a\tb', 'contains "/", ":" or whitespace'],
  ])('%j → %s', (name, problem) => {
    expect(ifnameProblem(name)).toBe(problem);
    if (problem !== undefined) {
      const err = error(() => parseEnv({ CNI_COMMAND: 'ADD', ...ATTACH, CNI_IFNAME: name }));
      expect(err.code).toBe(4);
      expect(err.msg).toBe('invalid CNI_IFNAME');
    }
  });
});

describe('CNI_ARGS', () => {
  const containerd = 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1';
  it('reads the Kubernetes keys in any order', () => {
    const forward = parseCniArgs(containerd);
    const reversed = parseCniArgs(containerd.split(';').reverse().join(';'));
    expect(forward).toEqual(reversed);
    expect(forward).toMatchObject({
      ignoreUnknown: true,
      podNamespace: 'default',
      podName: 'web-0',
      podInfraContainerId: 'abc123',
      podUid: 'u-1',
    });
  });

  it.each([
    ['', { ignoreUnknown: false, all: {} }],
    ['IgnoreUnknown=1;K8S_POD_NAME=ctr', { ignoreUnknown: true, podName: 'ctr' }],
    ['IgnoreUnknown=true', { ignoreUnknown: true }],
    ['IgnoreUnknown=True', { ignoreUnknown: true }],
    ['IgnoreUnknown=0', { ignoreUnknown: false }],
    ['IgnoreUnknown=yes', { ignoreUnknown: false }],
    ['FOO=bar;K8S_POD_NAME=p', { podName: 'p', all: { FOO: 'bar', K8S_POD_NAME: 'p' } }],
    ['A=x=y;;B=;noequals;=v', { all: { A: 'x=y', B: '' } }],
    ['K8S_POD_NAME=a;K8S_POD_NAME=b', { podName: 'b' }],
    ['K8S_POD_NAME=', { podName: undefined }],
    ['IP=10.1.0.5', { ips: ['10.1.0.5'] }],
    ['IP=10.1.0.5/24, fd00::5', { ips: ['10.1.0.5/24', 'fd00::5'] }],
  ])('%j', (raw, want) => {
    expect(parseCniArgs(raw)).toMatchObject(want);
  });

  it('keeps "__proto__" as an ordinary key', () => {
    expect(parseCniArgs('__proto__=x').all.__proto__).toBe('x');
  });

  it.each(['IP=10.1.0', 'IP=10.1.0.5/33', 'IP=10.1.0.5,nope'])('%j → code 4', (raw) => {
    const err = error(() => parseCniArgs(raw));
    expect(err.code).toBe(4);
    expect(err.msg).toBe('invalid CNI_ARGS');
  });
});
