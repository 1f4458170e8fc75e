// KeyedMutex: runs of one key are serial, of different keys concurrent; an exclusive section
// waits for every run already started and holds back every run started after it.
import { describe, expect, it } from 'vitest';
import { KeyedMutex } from '../../src/endpoint/txn';

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

describe('KeyedMutex', () => {
  it('exclusive runs after every earlier run and before every later one, whatever their keys', async () => {
    const m = new KeyedMutex();
    const log: string[] = [];
    const job = (name: string, ms: number) => async () => {
      log.push(`${name}+`);
      await tick(ms);
      log.push(`${name}-`);
    };
    const runs = [m.run('a', job('a1', 20)), m.run('b', job('b1', 5))];
    runs.push(m.exclusive(job('X', 10)));
    runs.push(m.run('a', job('a2', 1)), m.run('c', job('c1', 1)));
    await Promise.all(runs);
    const at = (e: string) => log.indexOf(e);
    expect(at('X+')).toBeGreaterThan(at('a1-'));
    expect(at('X+')).toBeGreaterThan(at('b1-'));
    expect(at('a2+')).toBeGreaterThan(at('X-'));
    expect(at('c1+')).toBeGreaterThan(at('X-'));
    // Different keys still overlap outside exclusive sections.
    expect(at('b1+')).toBeLessThan(at('a1-'));
  });

  it('a failing section releases the others', async () => {
    const m = new KeyedMutex();
    await expect(m.exclusive(async () => {
      throw new Error('boom');
    })).rejects.toThrow('boom');
    expect(await m.run('a', async () => 7)).toBe(7);
  });
});
