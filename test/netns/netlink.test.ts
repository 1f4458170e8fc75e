// src/netlink against the real kernel. Every test works in namespaces it creates: a "node"
// netns (the host Rtnl is opened there, never in the machine's own namespace) and pod netns.
// `ip -j` is only used to observe.
import { afterEach, describe, expect, it } from 'vitest';
import { closeSync, openSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { cleanupAll, createNetns, Netns, onCleanup, uniqueName } from '../support/netns';
import {
  confKey,
  disableIpv6,
  NetlinkError,
  podInterfaceCheck,
  podInterfaceSetup,
  podInterfaceTeardown,
  PodInterfaceConfig,
  readSysctl,
  Rtnl,
  writeSysctl,
  writeSysctls,
} from '../../src/netlink';

interface IpLink {
  ifindex: number;
  ifname: string;
  address: string;
  mtu: number;
  flags: string[];
}
interface IpAddr {
  ifname: string;
  addr_info: Array<{ family: string; local: string; prefixlen: number }>;
}
interface IpRoute {
  dst: string;
  gateway?: string;
  dev: string;
  scope?: string;
  flags: string[];
}

function links(ns: Netns): IpLink[] {
  return JSON.parse(ns.ip('-j', 'link', 'show')) as IpLink[];
}
function linkNamed(ns: Netns, name: string): IpLink | undefined {
  return links(ns).find((l) => l.ifname === name);
}
function addrs(ns: Netns, dev: string, family = '-4'): string[] {
  const out = JSON.parse(ns.ip('-j', family, 'addr', 'show', 'dev', dev)) as IpAddr[];
  return out.flatMap((a) => a.addr_info.map((i) => `${i.local}/${i.prefixlen}`));
}
function routes(ns: Netns, family = '-4'): IpRoute[] {
  return JSON.parse(ns.ip('-j', family, 'route', 'show', 'table', 'main')) as IpRoute[];
}

/** A node netns with an Rtnl open inside it, and a pod netns. */
function world(): { node: Netns; pod: Netns; host: Rtnl } {
  const node = createNetns('kln');
  const pod = createNetns('klp');
  const host = Rtnl.inNetns(node.path);
  onCleanup(() => host.close());
  return { node, pod, host };
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection');
}

afterEach(() => cleanupAll());

describe('veth pairs', () => {
  it('creates the peer in the pod netns under its final name in one message', async () => {
    const { node, pod, host } = world();
    const hostName = uniqueName('kv');
    const link = await host.createVethPair({
      hostName,
      peerName: 'eth0',
      peerNetnsPath: pod.path,
      hostMac: '02:00:00:00:aa:01',
      peerMac: '02:00:00:00:bb:02',
      mtu: 1400,
      hostUp: true,
    });

    const h = linkNamed(node, hostName)!;
    expect(h).toBeDefined();
    expect(link).toMatchObject({ index: h.ifindex, name: hostName, mac: '02:00:00:00:aa:01', mtu: 1400, up: true, kind: 'veth' });
    expect(h.mtu).toBe(1400);
    expect(h.flags).toContain('UP');

    const p = linkNamed(pod, 'eth0')!;
    expect(p).toBeDefined();
    expect(p.address).toBe('02:00:00:00:bb:02');
    expect(p.mtu).toBe(1400);
    expect(p.flags).not.toContain('UP');
    expect(link.peerIndex).toBe(p.ifindex);

    // The peer comes up from its own namespace; then the pair has carrier on both ends.
    const inPod = Rtnl.inNetns(pod.path);
    onCleanup(() => inPod.close());
    await inPod.setUp('eth0');
    expect(linkNamed(pod, 'eth0')!.flags).toEqual(expect.arrayContaining(['UP', 'LOWER_UP']));
    expect(linkNamed(node, hostName)!.flags).toEqual(expect.arrayContaining(['UP', 'LOWER_UP']));
    expect(await inPod.link('eth0')).toMatchObject({ index: p.ifindex, up: true, lowerUp: true, kind: 'veth', peerIndex: h.ifindex });
    // Born in place: never present under another name or in the other namespace.
    expect(linkNamed(node, 'eth0')).toBeUndefined();
    expect(linkNamed(pod, hostName)).toBeUndefined();
  });

  it('leaves both ends down unless asked, and changes state, MTU and MAC', async () => {
    const { node, pod, host } = world();
    const hostName = uniqueName('kv');
    const fd = openSync(pod.path, 'r');
    onCleanup(() => closeSync(fd));
    const link = await host.createVethPair({ hostName, peerName: 'eth1', peerNetnsFd: fd });
    expect(linkNamed(node, hostName)!.flags).not.toContain('UP');
    expect(linkNamed(pod, 'eth1')!.flags).not.toContain('UP');
    expect(link.up).toBe(false);

    await host.setUp(hostName);
    await host.setMtu(link.index, 9000);
    await host.setMac(hostName, '02:11:22:33:44:55');
    const h = linkNamed(node, hostName)!;
    expect(h.flags).toContain('UP');
    expect(h.mtu).toBe(9000);
    expect(h.address).toBe('02:11:22:33:44:55');
    expect(await host.linkByName(hostName)).toMatchObject({ up: true, mtu: 9000, mac: '02:11:22:33:44:55' });

    await host.setLink(hostName, { up: false, mtu: 1500 });
    expect(linkNamed(node, hostName)).toMatchObject({ mtu: 1500 });
    expect(linkNamed(node, hostName)!.flags).not.toContain('UP');
  });

  it('deletes both ends and treats an absent link as done', async () => {
    const { node, pod, host } = world();
    const hostName = uniqueName('kv');
    const link = await host.createVethPair({ hostName, peerName: 'eth0', peerNetnsPath: pod.path });
    expect(await host.deleteLink(hostName)).toBe(true);
    expect(linkNamed(node, hostName)).toBeUndefined();
    expect(linkNamed(pod, 'eth0')).toBeUndefined();
    expect(await host.deleteLink(hostName)).toBe(false);
    expect(await host.deleteLink(link.index)).toBe(false);
    expect(await host.linkByName(hostName)).toBeUndefined();
    expect(await host.link(link.index)).toBeUndefined();
  });

  it('reports EEXIST with the operation and creates nothing on a clash at either end', async () => {
    const { node, pod, host } = world();
    const taken = uniqueName('kv');
    await host.createVethPair({ hostName: taken, peerName: 'eth0', peerNetnsPath: pod.path });
    const before = { node: links(node).length, pod: links(pod).length };

    // Host name taken: no peer appears in the pod.
    const e1 = await rejection(host.createVethPair({ hostName: taken, peerName: 'eth9', peerNetnsPath: pod.path }));
    expect(e1).toBeInstanceOf(NetlinkError);
    expect(e1).toMatchObject({ code: 'EEXIST', errno: 17, operation: `netlink newlink ${taken}` });
    expect((e1 as Error).message).toBe(`netlink newlink ${taken}: EEXIST`);

    // Peer name taken in the pod: the host end is not created either.
    const other = uniqueName('kv');
    const e2 = await rejection(host.createVethPair({ hostName: other, peerName: 'eth0', peerNetnsPath: pod.path }));
    expect(e2).toMatchObject({ code: 'EEXIST' });
    expect(linkNamed(node, other)).toBeUndefined();

    expect({ node: links(node).length, pod: links(pod).length }).toEqual(before);
  });

  it('rejects a missing netns and invalid options, creating nothing', async () => {
    const { node, host } = world();
    const missing = `/var/run/netns/${uniqueName('none')}`;
    expect(() => Rtnl.inNetns(missing)).toThrow(
      expect.objectContaining({ name: 'NetlinkError', code: 'ENOENT', errno: 2, message: `netlink socket in netns ${missing}: ENOENT` }));
    const hostName = uniqueName('kv');
    const e = await rejection(host.createVethPair({ hostName, peerName: 'eth0', peerNetnsPath: missing }));
    expect(e).toMatchObject({ code: 'ENOENT' });
    expect(linkNamed(node, hostName)).toBeUndefined();

    await expect(host.createVethPair({ hostName: 'this-name-is-too-long', peerName: 'eth0' })).rejects.toThrow(TypeError);
    await expect(host.createVethPair({ hostName, peerName: 'a/b' })).rejects.toThrow(/not a valid interface name/);
    await expect(host.createVethPair({ hostName, peerName: 'eth0', mtu: 20 })).rejects.toThrow(RangeError);
    await expect(host.createVethPair({ hostName, peerName: 'eth0', peerMac: '01:00:5e:00:00:01' })).rejects.toThrow(/multicast/);
    expect(linkNamed(node, hostName)).toBeUndefined();
  });
});

describe('addresses and routes', () => {
  it('adds, lists and deletes with the chosen EEXIST policy', async () => {
    const { node, pod, host } = world();
    const hostName = uniqueName('kv');
    const link = await host.createVethPair({ hostName, peerName: 'eth0', peerNetnsPath: pod.path, hostUp: true });

    await host.addAddress(link.index, '10.77.0.1/24');
    const dup = await rejection(host.addAddress(link.index, '10.77.0.1/24'));
    expect(dup).toMatchObject({ code: 'EEXIST', operation: `netlink newaddr 10.77.0.1/24 dev ${link.index}` });
    await host.addAddress(link.index, '10.77.0.1/24', { exist: 'ignore' });
    await host.addAddress(link.index, '10.77.0.1/24', { exist: 'replace' });
    await host.addAddress(link.index, '10.78.0.9/16');
    expect(addrs(node, hostName).sort()).toEqual(['10.77.0.1/24', '10.78.0.9/16']);
    const listed = await host.listAddresses(link.index, 4);
    expect(listed.map((a) => a.cidr).sort()).toEqual(['10.77.0.1/24', '10.78.0.9/16']);
    expect(listed.every((a) => a.ifindex === link.index && a.family === 4)).toBe(true);

    await host.addRoute({ dst: '10.90.0.0/16', gw: '10.77.0.2', dev: link.index });
    await host.addRoute({ dst: '192.0.2.7/32', dev: link.index, scope: 'link' });
    await host.addRoute({ dst: 'default', gw: '198.51.100.1', dev: link.index, onlink: true });
    await expect(host.addRoute({ dst: '10.90.0.0/16', gw: '10.77.0.2', dev: link.index })).rejects.toMatchObject({ code: 'EEXIST' });
    await host.addRoute({ dst: '10.90.0.0/16', gw: '10.77.0.2', dev: link.index }, { exist: 'ignore' });
    await host.addRoute({ dst: '10.90.0.0/16', gw: '10.77.0.3', dev: link.index }, { exist: 'replace' });

    const seen = routes(node);
    expect(seen).toContainEqual(expect.objectContaining({ dst: '10.90.0.0/16', gateway: '10.77.0.3', dev: hostName }));
    expect(seen).toContainEqual(expect.objectContaining({ dst: '192.0.2.7', dev: hostName, scope: 'link' }));
    expect(seen).toContainEqual(expect.objectContaining({ dst: 'default', gateway: '198.51.100.1', dev: hostName, flags: expect.arrayContaining(['onlink']) }));

    const mine = await host.listRoutes({ ifindex: link.index });
    expect(mine).toContainEqual(expect.objectContaining({ dst: '0.0.0.0/0', gw: '198.51.100.1', dev: link.index, onlink: true, table: 254 }));
    expect(mine).toContainEqual(expect.objectContaining({ dst: '192.0.2.7/32', scope: 253, protocol: 4 }));
    expect(mine).toContainEqual(expect.objectContaining({ dst: '10.77.0.0/24', protocol: 2 }));

    expect(await host.deleteRoute({ dst: '10.90.0.0/16', dev: link.index })).toBe(true);
    expect(await host.deleteRoute({ dst: '10.90.0.0/16', dev: link.index })).toBe(false);
    expect(await host.deleteAddress(link.index, '10.78.0.9/16')).toBe(true);
    expect(await host.deleteAddress(link.index, '10.78.0.9/16')).toBe(false);
    expect(routes(node).find((r) => r.dst === '10.90.0.0/16')).toBeUndefined();
    expect(addrs(node, hostName)).toEqual(['10.77.0.1/24']);
  });

  it('keeps requests and dumps apart when they are issued together on one socket', async () => {
    const { host } = world();
    const names = [uniqueName('kv'), uniqueName('kv'), uniqueName('kv')];
    // Creations, lookups and dumps interleaved without awaiting: dumps queue, the rest batch.
    const results = await Promise.all([
      host.createVethPair({ hostName: names[0], peerName: `${names[0]}p` }),
      host.listLinks(),
      host.createVethPair({ hostName: names[1], peerName: `${names[1]}p` }),
      host.listAddresses(),
      host.linkByName(names[0]),
      host.listRoutes({ table: 'all' }),
      host.createVethPair({ hostName: names[2], peerName: `${names[2]}p` }),
      host.listLinks(),
    ]);
    const all = results[7] as Awaited<ReturnType<Rtnl['listLinks']>>;
    for (const n of names) expect(all.map((l) => l.name)).toContain(n);
    expect(results[4]).toMatchObject({ name: names[0] });
  });

  it('hundreds of requests issued at once on one socket all get their replies', async () => {
    // Unbounded, their replies overran the socket's receive buffer: a socket error, which the
    // netlink package turns into a process abort (this test's worker would die).
    const { host } = world();
    const replies = await Promise.all(Array.from({ length: 400 }, () => host.link('lo')));
    expect(replies.every((l) => l?.name === 'lo')).toBe(true);
  });

  it('keeps replies out of dumps that span several datagrams', async () => {
    const { node, host } = world();
    // ~1 KiB per link: 200 links take several dump datagrams, so the kernel sends the rest
    // of the dump only as the socket reads, after replies to requests sent meanwhile.
    node.exec('ip', ['-batch', '-'], {
      input: Array.from({ length: 100 }, (_, i) => `link add kd${i}a type veth peer name kd${i}b\n`).join(''),
    });
    const jobs: Promise<unknown>[] = [];
    for (let i = 0; i < 4; i++) {
      jobs.push(host.listLinks(), host.link('kd7a'), host.link(`kd${i}b`), host.listLinks());
    }
    const out = await Promise.all(jobs);
    for (let i = 0; i < 4; i++) {
      expect((out[4 * i] as unknown[]).length).toBe(201);
      expect(out[4 * i + 1]).toMatchObject({ name: 'kd7a', kind: 'veth' });
      expect(out[4 * i + 2]).toMatchObject({ name: `kd${i}b` });
      expect((out[4 * i + 3] as unknown[]).length).toBe(201);
    }
  });

  it('two sockets in two namespaces at once act each in its own', async () => {
    const a = createNetns('kla');
    const b = createNetns('klb');
    const ra = Rtnl.inNetns(a.path);
    const rb = Rtnl.inNetns(b.path);
    onCleanup(() => ra.close());
    onCleanup(() => rb.close());
    const jobs: Promise<unknown>[] = [];
    for (let i = 1; i <= 5; i++) {
      jobs.push(ra.addAddress(1, `10.1.0.${i}/32`), rb.addAddress(1, `10.2.0.${i}/32`));
    }
    jobs.push(ra.addRoute({ dst: '10.11.0.0/16', dev: 1 }), rb.addRoute({ dst: '10.22.0.0/16', dev: 1 }));
    await Promise.all(jobs);
    const [la, lb] = await Promise.all([ra.listAddresses(1, 4), rb.listAddresses(1, 4)]);
    expect(la.map((x) => x.address).filter((x) => x !== '127.0.0.1').sort()).toEqual(['10.1.0.1', '10.1.0.2', '10.1.0.3', '10.1.0.4', '10.1.0.5']);
    expect(lb.map((x) => x.address).filter((x) => x !== '127.0.0.1').sort()).toEqual(['10.2.0.1', '10.2.0.2', '10.2.0.3', '10.2.0.4', '10.2.0.5']);
    expect(addrs(a, 'lo').filter((x) => x.startsWith('10.2.'))).toEqual([]);
    expect(addrs(b, 'lo').filter((x) => x.startsWith('10.1.'))).toEqual([]);
    expect(routes(a).map((r) => r.dst)).toEqual(['10.11.0.0/16']);
    expect(routes(b).map((r) => r.dst)).toEqual(['10.22.0.0/16']);
  });
});

describe('pod interface', () => {
  function podConfig(pod: Netns, over: Partial<PodInterfaceConfig> = {}): PodInterfaceConfig {
    return {
      netns: pod.path,
      ifname: 'eth0',
      hostIfname: uniqueName('kx'),
      address: '10.244.0.5/24',
      gateway: '10.244.0.1',
      mtu: 1450,
      ...over,
    };
  }

  it('sets up the pair, address and routes, and the pod reaches the gateway', async () => {
    const { node, pod, host } = world();
    const cfg = podConfig(pod, { podMac: '02:42:0a:f4:00:05' });
    const res = await podInterfaceSetup(host, cfg);

    const p = linkNamed(pod, 'eth0')!;
    const h = linkNamed(node, cfg.hostIfname)!;
    expect(res).toEqual({
      host: { name: cfg.hostIfname, index: h.ifindex, mac: h.address },
      pod: { name: 'eth0', index: p.ifindex, mac: '02:42:0a:f4:00:05', netns: pod.path },
    });
    expect(p.address).toBe('02:42:0a:f4:00:05');
    expect(p.mtu).toBe(1450);
    expect(p.flags).toEqual(expect.arrayContaining(['UP', 'LOWER_UP']));
    expect(h.flags).toEqual(expect.arrayContaining(['UP', 'LOWER_UP']));
    expect(h.mtu).toBe(1450);
    expect(addrs(pod, 'eth0')).toEqual(['10.244.0.5/24']);
    const r = routes(pod);
    expect(r).toContainEqual(expect.objectContaining({ dst: 'default', gateway: '10.244.0.1', dev: 'eth0' }));
    expect(r).toContainEqual(expect.objectContaining({ dst: '10.244.0.0/24', dev: 'eth0', scope: 'link' }));
    expect(await podInterfaceCheck(host, cfg)).toEqual([]);

    // Real traffic over the pair: the gateway address on the host end answers the pod.
    node.ip('addr', 'add', '10.244.0.1/24', 'dev', cfg.hostIfname);
    expect(pod.exec('ping', ['-c', '1', '-W', '2', '10.244.0.1'])).toContain('1 received');
  });

  it('adds an on-link route when the gateway is outside the subnet, and extra routes', async () => {
    const { pod, host } = world();
    const cfg = podConfig(pod, {
      address: '10.244.1.9/32',
      gateway: '169.254.1.1',
      routes: [{ dst: '0.0.0.0/0' }, { dst: '10.96.0.0/12' }],
    });
    await podInterfaceSetup(host, cfg);
    const r = routes(pod);
    expect(r).toContainEqual(expect.objectContaining({ dst: '169.254.1.1', dev: 'eth0', scope: 'link' }));
    expect(r).toContainEqual(expect.objectContaining({ dst: 'default', gateway: '169.254.1.1', dev: 'eth0' }));
    expect(r).toContainEqual(expect.objectContaining({ dst: '10.96.0.0/12', gateway: '169.254.1.1', dev: 'eth0' }));
    expect(addrs(pod, 'eth0')).toEqual(['10.244.1.9/32']);
    expect(await podInterfaceCheck(host, cfg)).toEqual([]);
  });

  it('undoes the veth pair when a later step fails', async () => {
    const { node, pod, host } = world();
    // A route via a gateway that is not on the link: the kernel refuses it after the pair,
    // the address and the default route exist.
    const cfg = podConfig(pod, { routes: [{ dst: 'default' }, { dst: '10.96.0.0/12', gw: '192.0.2.1' }] });
    const before = { node: links(node).map((l) => l.ifname), pod: links(pod).map((l) => l.ifname) };
    const e = await rejection(podInterfaceSetup(host, cfg));
    expect(e).toBeInstanceOf(NetlinkError);
    expect((e as NetlinkError).operation).toMatch(/^netlink newroute 10\.96\.0\.0\/12 via 192\.0\.2\.1 dev \d+$/);
    expect({ node: links(node).map((l) => l.ifname), pod: links(pod).map((l) => l.ifname) }).toEqual(before);
    expect(routes(pod)).toEqual([]);
  });

  it('fails cleanly when the host name is taken or the netns is missing', async () => {
    const { node, pod, host } = world();
    const cfg = podConfig(pod);
    await podInterfaceSetup(host, cfg);
    const pod2 = createNetns('klp');
    const e = await rejection(podInterfaceSetup(host, podConfig(pod2, { hostIfname: cfg.hostIfname })));
    expect(e).toMatchObject({ code: 'EEXIST', operation: `netlink newlink ${cfg.hostIfname}` });
    expect(linkNamed(pod2, 'eth0')).toBeUndefined();
    expect(await podInterfaceCheck(host, cfg)).toEqual([]);

    const gone = podConfig(pod2, { netns: `/var/run/netns/${uniqueName('none')}` });
    await expect(podInterfaceSetup(host, gone)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(linkNamed(node, gone.hostIfname)).toBeUndefined();
  });

  it('tears down idempotently', async () => {
    const { node, pod, host } = world();
    const cfg = podConfig(pod);
    await podInterfaceSetup(host, cfg);
    expect(await podInterfaceTeardown(host, cfg.hostIfname)).toBe(true);
    expect(linkNamed(node, cfg.hostIfname)).toBeUndefined();
    expect(linkNamed(pod, 'eth0')).toBeUndefined();
    expect(await podInterfaceTeardown(host, cfg.hostIfname)).toBe(false);
    // The pod namespace being gone already is also "done".
    await podInterfaceSetup(host, cfg);
    pod.destroy();
    await podInterfaceTeardown(host, cfg.hostIfname);
    expect(linkNamed(node, cfg.hostIfname)).toBeUndefined();
  });

  it('check reports what is missing or different', async () => {
    const { node, pod, host } = world();
    const cfg = podConfig(pod, { hostMac: '02:00:00:00:00:11' });
    await podInterfaceSetup(host, cfg);
    expect(await podInterfaceCheck(host, cfg)).toEqual([]);

    pod.ip('route', 'del', 'default');
    pod.ip('addr', 'del', '10.244.0.5/24', 'dev', 'eth0');
    pod.ip('link', 'set', 'eth0', 'mtu', '1300');
    node.ip('link', 'set', cfg.hostIfname, 'down');
    const problems = await podInterfaceCheck(host, cfg);
    expect(problems).toEqual(expect.arrayContaining([
      { subject: 'host-link', message: `${cfg.hostIfname} is down` },
      { subject: 'pod-link', message: 'eth0 has MTU 1300, expected 1450' },
      { subject: 'address', message: '10.244.0.5/24 is not on eth0' },
      { subject: 'route', message: 'route default via 10.244.0.1 dev eth0 is missing' },
    ]));
    expect(problems).toHaveLength(4);

    expect(await podInterfaceCheck(host, { ...cfg, hostMac: '02:00:00:00:00:12' })).toContainEqual(
      { subject: 'host-link', message: `${cfg.hostIfname} has MAC 02:00:00:00:00:11, expected 02:00:00:00:00:12` });
    await podInterfaceTeardown(host, cfg.hostIfname);
    expect((await podInterfaceCheck(host, cfg)).map((p) => p.subject)).toEqual(['host-link', 'pod-link']);
    const missing = await podInterfaceCheck(host, { ...cfg, netns: '/var/run/netns/kelp-none' });
    expect(missing.map((p) => p.subject)).toEqual(['host-link', 'netns']);
  });

  it('two pods set up at once through one host socket get their own interfaces', async () => {
    const { node, host } = world();
    const pods = [createNetns('klp'), createNetns('klp'), createNetns('klp')];
    const cfgs = pods.map((p, i) => podConfig(p, { address: `10.244.0.${10 + i}/24` }));
    const res = await Promise.all(cfgs.map((c) => podInterfaceSetup(host, c)));
    pods.forEach((p, i) => {
      expect(addrs(p, 'eth0')).toEqual([cfgs[i].address]);
      expect(linkNamed(p, 'eth0')!.address).toBe(res[i].pod.mac);
      expect(linkNamed(node, cfgs[i].hostIfname)!.ifindex).toBe(res[i].host.index);
    });
  });

  it('measures podInterfaceSetup', async () => {
    const { pod, host } = world();
    const times: number[] = [];
    for (let i = 0; i < 30; i++) {
      const cfg = podConfig(pod);
      const t0 = performance.now();
      await podInterfaceSetup(host, cfg);
      times.push(performance.now() - t0);
      await podInterfaceTeardown(host, cfg.hostIfname);
    }
    times.sort((x, y) => x - y);
    const q = (f: number) => times[Math.min(times.length - 1, Math.floor(f * times.length))].toFixed(2);
    console.log(`podInterfaceSetup ms over ${times.length} runs: min ${q(0)} median ${q(0.5)} p90 ${q(0.9)} max ${q(1)}`);
    expect(times).toHaveLength(30);
  });
});

describe('sysctls', () => {
  it('writes and reads in the namespace given, not in the caller\'s', async () => {
    const { node, pod, host } = world();
    const res = await podInterfaceSetup(host, {
      netns: pod.path, ifname: 'eth0', hostIfname: uniqueName('kx'), address: '10.244.0.5/24', gateway: '10.244.0.1', mtu: 1500,
    });
    // A new namespace starts with the machine's value (net.core.devconf_inherit_init_net=0 copies
    // init_net's IPv4 settings): start both from 0, whatever the machine has.
    for (const ns of [node, pod]) ns.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
    writeSysctl('net.ipv4.ip_forward', 1, node.path);
    expect(node.exec('sysctl', ['-n', 'net.ipv4.ip_forward']).trim()).toBe('1');
    expect(pod.exec('sysctl', ['-n', 'net.ipv4.ip_forward']).trim()).toBe('0');
    expect(readSysctl('net.ipv4.ip_forward', node.path)).toBe('1');
    expect(readSysctl('net.ipv4.ip_forward', pod.path)).toBe('0');

    writeSysctls({
      [confKey('ipv4', res.host.name, 'rp_filter')]: 0,
      [confKey('ipv4', res.host.name, 'accept_local')]: 1,
    }, node.path);
    expect(node.exec('sysctl', ['-n', `net.ipv4.conf.${res.host.name}.rp_filter`]).trim()).toBe('0');
    expect(node.exec('sysctl', ['-n', `net.ipv4.conf.${res.host.name}.accept_local`]).trim()).toBe('1');

    expect(disableIpv6('eth0', pod.path)).toBe(true);
    expect(pod.exec('sysctl', ['-n', 'net.ipv6.conf.eth0.disable_ipv6']).trim()).toBe('1');
    expect(addrs(pod, 'eth0', '-6')).toEqual([]);
    expect(disableIpv6('nosuchif', pod.path)).toBe(false);

    expect(() => writeSysctl(confKey('ipv4', 'nosuchif', 'rp_filter'), 0, pod.path)).toThrow(
      expect.objectContaining({ code: 'ENOENT', message: `sysctl net.ipv4.conf.nosuchif.rp_filter=0 in ${pod.path}: ENOENT` }));
    expect(() => writeSysctl('kernel.hostname', 'x', pod.path)).toThrow(TypeError);
  });
});
