// The agent through the spine: maps whose content is derived from configuration and objects are
// synced to exactly that content (stale entries of an earlier run go), and the agent reports the
// revision it has programmed.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox } from '../../src/sandbox';
import { openPinnedMap } from '../../src/bpf';
import { EndpointMaps } from '../../src/datapath/endpoints';
import { e2ePrefix, startSandbox } from '../support/e2e';

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

describe('level-triggered: drift is repaired at the next resync', () => {
  let node: Sandbox;
  beforeAll(async () => {
    node = await Sandbox.start({ prefix: e2ePrefix('spd'), logLevel: 'debug', agentArgs: ['--resync-interval=1'] });
  });
  afterAll(async () => {
    await node?.stop();
  });

  it('an endpoint entry removed behind the agent\'s back comes back, a foreign one goes', async () => {
    const a = await node.addPod('a');
    const b = await node.addPod('b');
    const map = openPinnedMap(path.join(node.bpfRoot, 'kelp_endpoints'));
    const endpoints = new EndpointMaps(map, openPinnedMap(path.join(node.bpfRoot, 'kelp_endpoint_cache')));
    try {
      const aInfo = endpoints.get(a.ip)!;
      expect(aInfo).toBeDefined();
      endpoints.remove(a.ip);
      endpoints.put('10.244.0.200', { ...aInfo, epId: 4000, ifindex: 9999 });
      expect(node.exec(b.netns, 'ping', ['-c', '1', '-W', '1', a.ip], { allowFail: true })).not.toMatch(/1 received/);
      const deadline = Date.now() + 10_000;
      while ((endpoints.get(a.ip) === undefined || endpoints.get('10.244.0.200') !== undefined) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(endpoints.get(a.ip)).toEqual(aInfo);
      expect(endpoints.get('10.244.0.200')).toBeUndefined();
      expect(endpoints.checkSlot(a.ip, aInfo)).toBeUndefined();
      expect(node.exec(b.netns, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', a.ip])).toMatch(/2 received/);
      expect(node.agentLog()).toMatch(/kelp_endpoints drifted from the endpoint records: repaired/);
    } finally {
      map.close();
    }
  });
});
