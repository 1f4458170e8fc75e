// The agent keeps kelp_endpoint_cache in step with kelp_endpoints: a pod's slot is written on
// ADD and emptied on DEL, and a restarted agent rebuilds the cache from kelp_endpoints whatever
// it finds there (a crash can leave a slot cleared, wrong, or live for an address that is no
// longer an endpoint). A real agent in a sandbox node, pods through kelp-cni.
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BpfMap, openPinnedMap } from '../../src/bpf';
import { EndpointMaps } from '../../src/datapath/endpoints';
import { endpointCacheIndex, endpointCacheKey, endpointSlot } from '../../src/datapath/structs';
import type { Sandbox, SandboxPod } from '../../src/sandbox';
import { ping, recordOf, startSandbox } from '../support/e2e';

let sb: Sandbox;
const opened: BpfMap[] = [];

beforeAll(async () => {
  sb = await startSandbox('dc');
});

afterAll(async () => {
  for (const m of opened) m.close();
  await sb?.stop();
});

/** The node's pinned maps, as the agent's programs see them. */
function nodeMaps(): EndpointMaps {
  const [hash, cache] = ['kelp_endpoints', 'kelp_endpoint_cache'].map((name) => openPinnedMap(path.join(sb.bpfRoot, name)));
  opened.push(hash, cache);
  return new EndpointMaps(hash, cache);
}

/** The slot a pod's record says it should have. */
function expectedSlot(pod: SandboxPod) {
  const rec = recordOf(sb, pod)!;
  return { ip4: pod.ip, live: true, info: { ifindex: rec.hostIfindex, epId: rec.id, flags: 0, mac: rec.podMac, nodeMac: rec.hostMac } };
}

const EMPTY = { ip4: '0.0.0.0', live: false };

it('ADD writes the live slot, DEL empties it', async () => {
  const maps = nodeMaps();
  const pod = await sb.addPod('cache-one');
  expect(maps.slotOf(pod.ip).slot).toEqual(expectedSlot(pod));

  expect((await sb.delPod(pod)).code).toBe(0);
  expect(maps.get(pod.ip)).toBeUndefined();
  expect(maps.slotOf(pod.ip).slot).toMatchObject(EMPTY);
});

it('a restarted agent rebuilds the cache from kelp_endpoints; traffic flows before and after', async () => {
  const maps = nodeMaps();
  const p1 = await sb.addPod('cache-p1');
  const p2 = await sb.addPod('cache-p2');
  const p3 = await sb.addPod('cache-p3');
  expect(ping(sb, p1.netns, p2.ip)).toBe(true);

  await sb.stopAgent(true);
  // What a crash could leave: p1's slot cleared, p2's live but wrong (another MAC), and a live
  // slot for an address kelp_endpoints does not have.
  const write = (ip: string, slot: Buffer) => maps.cache.update(endpointCacheKey(endpointCacheIndex(ip)), slot);
  write(p1.ip, Buffer.alloc(endpointSlot.size));
  const p2Slot = expectedSlot(p2);
  write(p2.ip, endpointSlot.encode({ ...p2Slot, info: { ...p2Slot.info, mac: '02:66:66:66:66:66' } }));
  const stray = ['10.99.0.7', '10.99.0.8'].find((ip) => ![p1, p2, p3].some((p) => endpointCacheIndex(p.ip) === endpointCacheIndex(ip)))!;
  write(stray, endpointSlot.encode({ ...expectedSlot(p3), ip4: stray }));

  await sb.startAgent();
  expect(maps.slotOf(p1.ip).slot).toEqual(expectedSlot(p1));
  expect(maps.slotOf(p2.ip).slot).toEqual(expectedSlot(p2));
  expect(maps.slotOf(p3.ip).slot).toEqual(expectedSlot(p3));
  expect(maps.slotOf(stray).slot).toMatchObject(EMPTY);
  expect(ping(sb, p1.netns, p2.ip)).toBe(true);
  expect(ping(sb, p2.netns, p3.ip)).toBe(true);
});
