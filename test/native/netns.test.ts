// inNetns: the calling thread switches namespace for the duration of a synchronous function only.
import { readlinkSync, statSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { inNetns } from '../../src/bpf';
import { caught } from '../support/bpf-error';
import { cleanupAll, createNetns } from '../support/netns';

afterAll(cleanupAll);

const current = () => readlinkSync('/proc/thread-self/ns/net');

describe('inNetns', () => {
  it('runs inside the namespace and comes back', () => {
    const ns = createNetns('kln');
    const home = current();
    const inside = inNetns(ns.path, current);
    expect(inside).toBe(`net:[${statSync(ns.path).ino}]`);
    expect(inside).not.toBe(home);
    expect(inNetns(ns.path, current)).toBe(inside);
    expect(current()).toBe(home);
  });

  it('comes back when the function throws', () => {
    const ns = createNetns('kln');
    const home = current();
    expect(() =>
      inNetns(ns.path, () => {
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(current()).toBe(home);
  });

  it('refuses an async function', () => {
    const ns = createNetns('kln');
    expect(() => inNetns(ns.path, async () => 1)).toThrow(
      `in netns ${ns.path}: fn returned a Promise; it must be synchronous`,
    );
  });

  it('fails with the error shape for a missing namespace', () => {
    expect(caught(() => inNetns('/var/run/netns/kelp-does-not-exist', () => 1))).toMatchObject({
      code: 'ENOENT',
      operation: 'open netns /var/run/netns/kelp-does-not-exist',
    });
  });
});
