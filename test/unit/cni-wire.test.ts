import { describe, expect, it } from 'vitest';
import { CniError } from '../../src/cni/errors';
import { decodeRequest, encodeRequest, encodeResponse } from '../../src/cni/wire';

const b = (s: string) => Buffer.from(s, 'utf8');

describe('request body', () => {
  it.each([
    ['env and stdin', 'CNI_COMMAND=ADD\0KELP_X=a=b\0\0{"a":1}', { CNI_COMMAND: 'ADD', KELP_X: 'a=b' }, '{"a":1}'],
    ['empty values', 'CNI_ARGS=\0\0', { CNI_ARGS: '' }, ''],
    ['no env', '\0stdin', {}, 'stdin'],
    ['stdin with NULs', 'CNI_COMMAND=DEL\0\0\0a\0\0', { CNI_COMMAND: 'DEL' }, '\0a\0\0'],
    ['only CNI_* and KELP_* kept', 'PATH=/bin\0CNI_X=1\0cni_y=2\0KELPX=3\0\0', { CNI_X: '1' }, ''],
    ['first of duplicates (like getenv)', 'CNI_COMMAND=ADD\0CNI_COMMAND=DEL\0\0', { CNI_COMMAND: 'ADD' }, ''],
    ['UTF-8 values', 'CNI_NETNS=/run/netns/é\0\0', { CNI_NETNS: '/run/netns/é' }, ''],
  ])('decodes %s', (_name, body, env, stdin) => {
    const req = decodeRequest(b(body));
    expect(req.env).toEqual(env);
    expect(req.stdin.equals(b(stdin))).toBe(true);
  });

  it.each([
    ['', 'the environment is not terminated by an empty entry'],
    ['CNI_COMMAND=ADD\0', 'the environment is not terminated by an empty entry'],
    ['CNI_COMMAND=ADD', 'an environment entry is not NUL-terminated'],
    ['CNI_COMMAND\0\0', 'environment entry without a name: "CNI_COMMAND"'],
    ['=x\0\0', 'environment entry without a name: "=x"'],
  ])('refuses %j with code 5', (body, details) => {
    try {
      decodeRequest(b(body));
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(CniError);
      expect([(e as CniError).code, (e as CniError).details]).toEqual([5, details]);
    }
  });

  it('encodeRequest round-trips through decodeRequest and drops other variables', () => {
    const stdin = Buffer.from([0, 1, 2, 255, 0]);
    const body = encodeRequest({ CNI_COMMAND: 'ADD', CNI_ARGS: '', KELP_AGENT_SOCKET: '/s', HOME: '/root', CNI_UNSET: undefined }, stdin);
    expect(body.equals(Buffer.concat([b('CNI_COMMAND=ADD\0CNI_ARGS=\0KELP_AGENT_SOCKET=/s\0\0'), stdin]))).toBe(true);
    const back = decodeRequest(body);
    expect(back.env).toEqual({ CNI_COMMAND: 'ADD', CNI_ARGS: '', KELP_AGENT_SOCKET: '/s' });
    expect(back.stdin.equals(stdin)).toBe(true);
  });
});

describe('response', () => {
  it.each([
    [{ exit: 0, stdout: '' }, '0', ''],
    [{ exit: 1, stdout: '{"code":7}\n' }, '1', '{"code":7}\n'],
    [{ exit: 255, stdout: 'é' }, '255', 'é'],
  ])('encodes %j', (res, exit, body) => {
    const http = encodeResponse(res);
    expect(http.status).toBe(200);
    expect(http.headers['X-CNI-Exit']).toBe(exit);
    expect(http.headers['Content-Length']).toBe(String(Buffer.byteLength(body)));
    expect(http.body.toString('utf8')).toBe(body);
  });

  it.each([-1, 256, 1.5])('refuses exit %s', (exit) => {
    expect(() => encodeResponse({ exit, stdout: '' })).toThrow(RangeError);
  });
});
