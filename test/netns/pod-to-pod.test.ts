// Two pods on one node, joined to it by veths only: no bridge, no address or route for the pods in
// the node, IP forwarding off. Their gateway .1 belongs to nobody: kelp answers ARP for it. So any
// packet that crosses from one pod to the other was carried by kelp_from_pod's redirect.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attachTc, BpfLink, BpfMap, BpfObject, inNetns } from '../../src/bpf';
import { DropReason } from '../../src/datapath/drop';
import type { KelpEvent } from '../../src/datapath/events';
import { Direction } from '../../src/datapath/structs';
import {
  deleteEndpoint,
  EventCollector,
  loadWithVerifierLog,
  LXC_OBJECT,
  metricsId,
  metricsMaps,
  putEndpoint,
  readMetrics,
  TestEndpoint,
} from '../support/datapath';
import { cleanupAll, createNetns, createVeth, mountBpffs, Netns, onCleanup, uniqueName } from '../support/netns';

const GATEWAY = '10.78.0.1';

interface Pod {
  ns: Netns;
  hostVeth: string;
  ep: TestEndpoint;
}

let node: Netns;
let podA: Pod;
let podB: Pod;
let obj: BpfObject;
let endpoints: BpfMap;
let metrics: { hash: BpfMap; fwd: BpfMap };
let collector: EventCollector;

function makePod(ip: string, epId: number): Pod {
  const ns = createNetns('kp');
  const hostVeth = uniqueName('kh');
  createVeth(node, hostVeth, ns, 'eth0');
  ns.ip('addr', 'add', `${ip}/24`, 'dev', 'eth0');
  ns.ip('route', 'add', 'default', 'via', GATEWAY);
  const ep: TestEndpoint = {
    ip,
    epId,
    flags: 0,
    ifindex: node.ifindex(hostVeth),
    mac: ns.mac('eth0'),
    nodeMac: node.mac(hostVeth),
  };
  return { ns, hostVeth, ep };
}

function ping(from: Pod, to: string, count: number, opts: string[] = []): { ok: boolean; out: string } {
  const out = from.ns.exec('ping', ['-n', '-c', String(count), '-i', '0.2', '-W', '1', ...opts, to], { allowFail: true });
  return { ok: / 0% packet loss/.test(out), out };
}

function count(epId: number, dir: number, reason = 0): number {
  return readMetrics(metrics)[metricsId(epId, dir, reason)]?.packets ?? 0;
}

beforeAll(() => {
  node = createNetns('kn');
  // A new namespace copies the machine's IPv4 settings (devconf_inherit_init_net=0): the node
  // must not forward by itself, whatever the machine does, or kelp's part proves nothing.
  node.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
  podA = makePod('10.78.0.2', 201);
  podB = makePod('10.78.0.3', 202);

  obj = loadWithVerifierLog(LXC_OBJECT, { pinRoot: mountBpffs() });
  const links: BpfLink[] = [];
  onCleanup(() => {
    for (const l of links) l.close();
    obj.close();
  });
  inNetns(node.path, () => {
    for (const pod of [podA, podB]) {
      links.push(attachTc(obj.program('kelp_from_pod'), pod.ep.ifindex, 'ingress', { mode: 'tcx' }));
      links.push(attachTc(obj.program('kelp_to_pod'), pod.ep.ifindex, 'egress', { mode: 'tcx' }));
    }
  });
  endpoints = obj.map('kelp_endpoints');
  metrics = metricsMaps(obj);
  putEndpoint(endpoints, podA.ep);
  putEndpoint(endpoints, podB.ep);
  collector = new EventCollector(obj.map('kelp_events'));
  onCleanup(() => collector.close());
});

afterAll(cleanupAll);

describe('pod to pod on one node through kelp', () => {
  it('the node itself could not carry the traffic', () => {
    expect(node.exec('sysctl', ['-n', 'net.ipv4.ip_forward']).trim()).toBe('0');
    expect(node.ip('-4', 'route', 'show', 'table', 'all').includes('10.78.')).toBe(false);
    const addrs = JSON.parse(node.ip('-j', '-4', 'addr', 'show')) as Array<{ addr_info: Array<{ local: string }> }>;
    expect(addrs.flatMap((l) => l.addr_info.map((a) => a.local))).toEqual(['127.0.0.1']);
    expect(node.ip('link', 'show', 'type', 'bridge').trim()).toBe('');
  });

  it('ping works both ways, one routed hop, with ARP answered by kelp', () => {
    const before = {
      aOut: count(podA.ep.epId, Direction.FROM_POD),
      bIn: count(podB.ep.epId, Direction.TO_POD),
      bOut: count(podB.ep.epId, Direction.FROM_POD),
      aIn: count(podA.ep.epId, Direction.TO_POD),
    };
    const ab = ping(podA, podB.ep.ip, 3);
    expect(ab.ok, ab.out).toBe(true);
    expect(ab.out).toMatch(/ttl=63/);
    const ba = ping(podB, podA.ep.ip, 3);
    expect(ba.ok, ba.out).toBe(true);

    // On-link neighbours and the gateway resolve to the host veth's MAC: only kelp answers with it
    // (the node has no address to answer from). Nobody owns the gateway, so its own ping fails.
    expect(podA.ns.ip('neigh', 'show', podB.ep.ip)).toContain(podA.ep.nodeMac);
    expect(ping(podA, GATEWAY, 1).ok).toBe(false);
    expect(podA.ns.ip('neigh', 'show', GATEWAY)).toContain(podA.ep.nodeMac);

    // 6 echo requests and 6 replies each way through the redirect, plus ARP from each pod.
    expect(count(podA.ep.epId, Direction.FROM_POD) - before.aOut).toBeGreaterThanOrEqual(6);
    expect(count(podB.ep.epId, Direction.TO_POD) - before.bIn).toBeGreaterThanOrEqual(6);
    expect(count(podB.ep.epId, Direction.FROM_POD) - before.bOut).toBeGreaterThanOrEqual(6);
    expect(count(podA.ep.epId, Direction.TO_POD) - before.aIn).toBeGreaterThanOrEqual(6);
  });

  it('a TCP exchange of 1 MiB each way succeeds (GSO-sized packets through the redirect)', async () => {
    const port = 7000 + (process.pid % 1000);
    const server = podB.ns.spawn(process.execPath, [
      '-e',
      `require('net').createServer((s) => s.pipe(s)).listen(${port}, '${podB.ep.ip}', () => console.log('listening'))`,
    ]);
    await new Promise<void>((resolve, reject) => {
      let out = '';
      server.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('listening')) resolve();
      });
      server.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
    });
    const client = `
      const net = require('net');
      const crypto = require('crypto');
      const sent = crypto.randomBytes(1 << 20);
      const got = [];
      let n = 0;
      const timer = setTimeout(() => { console.log('timeout after ' + n + ' bytes'); process.exit(1); }, 20000);
      const s = net.connect(${port}, '${podB.ep.ip}', () => s.write(sent));
      s.on('data', (d) => {
        got.push(d);
        n += d.length;
        if (n >= sent.length) {
          clearTimeout(timer);
          console.log(Buffer.concat(got).equals(sent) ? 'echo ok' : 'echo differs');
          s.destroy();
        }
      });
      s.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
    `;
    const out = podA.ns.exec(process.execPath, ['-e', client], { allowFail: true });
    expect(out.trim()).toBe('echo ok');
  });

  it('removing the destination endpoint stops delivery; restoring it brings it back', () => {
    const bIn = count(podB.ep.epId, Direction.TO_POD);
    expect(deleteEndpoint(endpoints, podB.ep.ip)).toBe(true);
    try {
      expect(ping(podA, podB.ep.ip, 2).ok).toBe(false);
      expect(count(podB.ep.epId, Direction.TO_POD)).toBe(bIn);
    } finally {
      putEndpoint(endpoints, podB.ep);
    }
    const again = ping(podA, podB.ep.ip, 2);
    expect(again.ok, again.out).toBe(true);
  });

  it('removing the source endpoint drops its packets, counted and reported', async () => {
    const unknown = DropReason.SRC_UNKNOWN;
    const drops = count(0, Direction.FROM_POD, unknown);
    collector.events.length = 0;
    expect(deleteEndpoint(endpoints, podA.ep.ip)).toBe(true);
    try {
      expect(ping(podA, podB.ep.ip, 2).ok).toBe(false);
    } finally {
      putEndpoint(endpoints, podA.ep);
    }
    expect(count(0, Direction.FROM_POD, unknown)).toBeGreaterThanOrEqual(drops + 2);
    const isDrop = (e: KelpEvent) =>
      e.kind === 'drop' && e.reasonName === 'SRC_UNKNOWN' && e.ifindex === podA.ep.ifindex && e.saddr === podA.ep.ip;
    await collector.takeUntil(isDrop);
  });

  it('a pod sending from an address it does not own is dropped', () => {
    podA.ns.ip('addr', 'add', '10.78.0.50/32', 'dev', 'eth0');
    const drops = count(0, Direction.FROM_POD, DropReason.SRC_UNKNOWN);
    expect(ping(podA, podB.ep.ip, 2, ['-I', '10.78.0.50']).ok).toBe(false);
    expect(count(0, Direction.FROM_POD, DropReason.SRC_UNKNOWN)).toBeGreaterThanOrEqual(drops + 2);
    expect(ping(podA, podB.ep.ip, 1).ok).toBe(true);
  });
});
