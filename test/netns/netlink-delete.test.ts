// Batched link deletion (Rtnl.deleteLinks, BatchedLinkDeleter) against the real kernel, in
// namespaces the tests create: what is named goes, both veth ends; what is not named stays,
// whatever its device group; absent links report false.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { cleanupAll, createNetns, Netns, onCleanup, uniqueName } from '../support/netns';
import { BatchedLinkDeleter, podInterfaceTeardown, Rtnl } from '../../src/netlink';
import { inNetns } from '../../src/bpf';

interface IpLink {
  ifname: string;
  group: string;
}

function linkNames(ns: Netns): string[] {
  return (JSON.parse(ns.ip('-j', 'link', 'show')) as IpLink[]).map((l) => l.ifname).sort();
}

function groupOf(ns: Netns, name: string): string {
  return (JSON.parse(ns.ip('-j', '-d', 'link', 'show', 'dev', name)) as IpLink[])[0].group;
}

/** A node netns with an Rtnl inside it, a pod netns, and `n` veth pairs between them. */
async function world(n: number): Promise<{ node: Netns; pod: Netns; host: Rtnl; names: string[] }> {
  const node = createNetns('kdn');
  const pod = createNetns('kdp');
  const host = Rtnl.inNetns(node.path);
  onCleanup(() => host.close());
  const names = Array.from({ length: n }, () => uniqueName('kd'));
  await Promise.all(names.map((hostName, i) => host.createVethPair({ hostName, peerName: `p${i}`, peerNetnsPath: pod.path })));
  return { node, pod, host, names };
}

afterEach(() => cleanupAll());

describe('deletions off the event loop', () => {
  it('a request issued after a veth deletion is answered first: the deletion waits on a pool thread', async () => {
    const { node, host, names } = await world(1);
    const order: string[] = [];
    const deleted = host.deleteLink(names[0]).then((existed) => order.push(`deleted ${existed}`));
    const looked = host.link('lo').then((l) => order.push(`looked up ${l?.name}`));
    await Promise.all([deleted, looked]);
    // In the sendmsg of the agent's thread, the deletion (~20 ms of rcu_barrier) came first.
    expect(order).toEqual(['looked up lo', 'deleted true']);
    expect(linkNames(node)).toEqual(['lo']);
  });

  it('acts in the namespace the socket was opened in, wherever the thread is when it deletes', async () => {
    const a = createNetns('kda');
    const b = createNetns('kdb');
    for (const ns of [a, b]) ns.ip('link', 'add', 'kdsame', 'type', 'veth', 'peer', 'name', 'kdpeer');
    // Opened while the thread visits b; used after it is back in the machine's namespace.
    const inB = inNetns(b.path, () => Rtnl.open());
    onCleanup(() => inB.close());
    expect(await inB.deleteLink('kdsame')).toBe(true);
    expect(linkNames(b)).toEqual(['lo']);
    expect(linkNames(a)).toEqual(['kdpeer', 'kdsame', 'lo']);
    expect(await inB.deleteLinks(['kdsame', 'kdpeer'])).toEqual([false, false]);
    expect(linkNames(a)).toEqual(['kdpeer', 'kdsame', 'lo']);
  });
});

describe('Rtnl.deleteLinks', () => {
  it('deletes every named link, both ends, and leaves the others, grouped or not', async () => {
    const { node, pod, host, names } = await world(6);
    const [kept, grouped, ...doomed] = names;
    // An administrator's group on a device kelp does not name: it must survive.
    node.ip('link', 'set', 'dev', grouped, 'group', '7');
    const existed = await host.deleteLinks([...doomed, 'kdabsent', 999_999]);
    expect(existed).toEqual([true, true, true, true, false, false]);
    expect(linkNames(node)).toEqual(['lo', kept, grouped].sort());
    expect(linkNames(pod)).toEqual(['lo', 'p0', 'p1']);
    expect(groupOf(node, grouped)).toBe('7');
    expect(groupOf(node, kept)).toBe('default');
  });

  it('by ifindex too, and again: all false, nothing else touched', async () => {
    const { node, host, names } = await world(3);
    const indexes = await Promise.all(names.slice(0, 2).map(async (n) => (await host.link(n))!.index));
    expect(await host.deleteLinks(indexes)).toEqual([true, true]);
    expect(await host.deleteLinks(names.slice(0, 2))).toEqual([false, false]);
    expect(linkNames(node)).toEqual(['lo', names[2]].sort());
  });

  it('one or none: as deleteLink', async () => {
    const { node, host, names } = await world(1);
    expect(await host.deleteLinks([])).toEqual([]);
    expect(await host.deleteLinks([names[0]])).toEqual([true]);
    expect(await host.deleteLinks([names[0]])).toEqual([false]);
    expect(linkNames(node)).toEqual(['lo']);
  });
});

describe('BatchedLinkDeleter', () => {
  it('20 deletions asked for in one turn go in one kernel batch', async () => {
    const { node, pod, host, names } = await world(20);
    const batches = vi.spyOn(host, 'deleteLinks');
    const deleter = new BatchedLinkDeleter(host);
    const existed = await Promise.all([...names.map((n) => podInterfaceTeardown(deleter, n)), deleter.deleteLink('kdabsent')]);
    expect(existed).toEqual([...names.map(() => true), false]);
    expect(batches).toHaveBeenCalledTimes(1);
    expect(batches.mock.calls[0][0]).toHaveLength(21);
    expect(linkNames(node)).toEqual(['lo']);
    expect(linkNames(pod)).toEqual(['lo']);
  });

  it('while busy, a later deletion joins the waiting batch; when not, each goes alone', async () => {
    const { node, host, names } = await world(4);
    const batches = vi.spyOn(host, 'deleteLinks');
    let busy = true;
    // Long enough that the second call, one event-loop turn later, always finds the batch waiting.
    const deleter = new BatchedLinkDeleter(host, { gatherMs: 2000, busy: () => busy });
    const first = deleter.deleteLink(names[0]);
    await new Promise((r) => setImmediate(r));
    const second = deleter.deleteLink(names[1]);
    expect(await Promise.all([first, second])).toEqual([true, true]);
    expect(batches.mock.calls.map((c) => c[0])).toEqual([[names[0], names[1]]]);

    busy = false;
    expect(await deleter.deleteLink(names[2])).toBe(true);
    expect(await deleter.deleteLink(names[3])).toBe(true);
    expect(batches.mock.calls.slice(1).map((c) => c[0])).toEqual([[names[2]], [names[3]]]);
    expect(linkNames(node)).toEqual(['lo']);
  });

  it('splits at maxBatch', async () => {
    const { node, host, names } = await world(5);
    const batches = vi.spyOn(host, 'deleteLinks');
    const deleter = new BatchedLinkDeleter(host, { maxBatch: 2 });
    expect(await Promise.all(names.map((n) => deleter.deleteLink(n)))).toEqual(names.map(() => true));
    expect(batches.mock.calls.map((c) => c[0].length)).toEqual([2, 2, 1]);
    expect(linkNames(node)).toEqual(['lo']);
  });
});
