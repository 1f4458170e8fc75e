// The agent through the spine: maps whose content is derived from configuration and objects are
// synced to exactly that content (stale entries of an earlier run go), and the agent reports the
// revision it has programmed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Sandbox } from '../../src/sandbox';
import { startSandbox } from '../support/e2e';

let sb: Sandbox;
beforeAll(async () => {
  sb = await startSandbox('spn');
});
afterAll(async () => {
  await sb?.stop();
});

function nomasq(): string[] {
  const dump = JSON.parse(sb.kelp('map', 'dump', 'kelp_nomasq4', '-o', 'json')) as { entries: Array<{ key: { cidr: string } }> };
  return dump.entries.map((e) => e.key.cidr).sort();
}

describe('maps synced to their desired content', () => {
  it('a restart with another pod CIDR leaves only that CIDR exempt from masquerade', async () => {
    expect(nomasq()).toEqual(['10.244.0.0/24']);
    await sb.stopAgent();
    sb.opts.agentArgs = [...(sb.opts.agentArgs ?? []), '--pod-cidr=10.250.0.0/24'];
    await sb.startAgent();
    expect(nomasq()).toEqual(['10.250.0.0/24']);
  });
});
