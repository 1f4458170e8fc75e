// Policy with real pods and real traffic: two pods on one node (veths only, IP forwarding off, as
// in pod-to-pod.test.ts), kelp_from_pod/kelp_to_pod attached, the policy maps written by the
// agent's writer (applyPolicyMaps) and enforcement switched on. Real TCP and UDP through the
// kernel's sockets: allowed connections work and their replies pass on the conntrack though the
// reply direction denies; denied ones never connect and are reported with the deciding policy and
// rule; a revocation cuts a live connection.
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attachTc, BpfLink, BpfObject, inNetns } from '../../src/bpf';
import { DropReason } from '../../src/datapath/drop';
import type { KelpEvent } from '../../src/datapath/events';
import { applyPolicyMaps, PolicyMaps, policyMapsOf, setPolicyEnforcement } from '../../src/datapath/policy';
import { IPPROTO, PolicyEntry, RULE_ISOLATED } from '../../src/datapath/policy-types';
import { Direction } from '../../src/datapath/structs';
import { EventCollector, loadWithVerifierLog, LXC_OBJECT, metricsId, metricsMaps, makeTestPod, putEndpoint, readMetrics, TestPod } from '../support/datapath';
import { cleanupAll, createNetns, mountBpffs, Netns, onCleanup } from '../support/netns';

const GATEWAY = '10.81.0.1';
const ID_A = 300;
const ID_B = 301;
const POLICY = 42;

type Pod = TestPod;

let node: Netns;
let podA: Pod;
let podB: Pod;
let obj: BpfObject;
let maps: PolicyMaps;
let metrics: ReturnType<typeof metricsMaps>;
let collector: EventCollector;

function makePod(ip: string, epId: number): Pod {
  return makeTestPod(node, { ip, epId, gateway: GATEWAY, prefix: 'kpp' });
}

/** Echo servers: TCP on each port, UDP on each port; resolves once all listen. */
async function serve(pod: Pod, tcp: number[], udp: number[]): Promise<ChildProcess> {
  const script = `
    const net = require('net'), dgram = require('dgram');
    let n = 0; const want = ${tcp.length + udp.length};
    const up = () => { if (++n === want) console.log('listening'); };
    for (const p of ${JSON.stringify(tcp)}) net.createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen(p, '${pod.ep.ip}', up);
    for (const p of ${JSON.stringify(udp)}) { const u = dgram.createSocket('udp4'); u.on('message', (m, r) => u.send(m, r.port, r.address)); u.bind(p, '${pod.ep.ip}', up); }
  `;
  const child = pod.ns.spawn(process.execPath, ['-e', script]);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('listening')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`servers in ${pod.ns.name} exited with ${code}`)));
  });
  return child;
}

/** One TCP connection: connect, send, read the echo. 'ok' or what went wrong. */
function tcpExchange(from: Pod, to: Pod, port: number): string {
  const script = `
    const s = require('net').connect(${port}, '${to.ep.ip}');
    const t = setTimeout(() => { console.log('timeout'); process.exit(0); }, 1500);
    s.on('connect', () => s.write('kelp'));
    s.on('data', (d) => { clearTimeout(t); console.log(d.toString() === 'kelp' ? 'ok' : 'garbled'); s.destroy(); });
    s.on('error', (e) => { clearTimeout(t); console.log('error ' + e.code); });
  `;
  return from.ns.exec(process.execPath, ['-e', script], { allowFail: true }).trim();
}

/** One UDP request and its echo. */
function udpExchange(from: Pod, to: Pod, port: number): string {
  const script = `
    const u = require('dgram').createSocket('udp4');
    const t = setTimeout(() => { console.log('timeout'); process.exit(0); }, 1000);
    u.on('message', (m) => { clearTimeout(t); console.log(m.toString() === 'kelp' ? 'ok' : 'garbled'); u.close(); });
    u.send('kelp', ${port}, '${to.ep.ip}');
  `;
  return from.ns.exec(process.execPath, ['-e', script], { allowFail: true }).trim();
}

function count(epId: number, dir: number, reason: number): number {
  return readMetrics(metrics)[metricsId(epId, dir, reason)]?.packets ?? 0;
}

const allowV = (rule: number) => ({ action: 'allow' as const, tier: 'networkpolicy' as const, policyId: POLICY, rule });
const isolated = { action: 'deny' as const, tier: 'networkpolicy' as const, policyId: POLICY, rule: RULE_ISOLATED };

/**
 * Both pods may send anything; A accepts nothing (replies pass on the conntrack), B accepts from A
 * only what `bIngress` lists (TCP or UDP port → rule index).
 */
function program(bIngress: Array<{ proto: number; port: number }>): void {
  const policy: PolicyEntry[] = [
    { epId: podA.ep.epId, identity: 0, direction: 'egress', port: 0, portPrefix: 0, verdict: allowV(0) },
    { epId: podB.ep.epId, identity: 0, direction: 'egress', port: 0, portPrefix: 0, verdict: allowV(0) },
    { epId: podA.ep.epId, identity: 0, direction: 'ingress', port: 0, portPrefix: 0, verdict: isolated },
    { epId: podB.ep.epId, identity: 0, direction: 'ingress', port: 0, portPrefix: 0, verdict: isolated },
    ...bIngress.map(({ proto, port }, i): PolicyEntry => ({
      epId: podB.ep.epId,
      identity: ID_A,
      direction: 'ingress',
      protocol: proto,
      port,
      portPrefix: 16,
      verdict: allowV(i),
    })),
  ];
  const ipcache = new Map([
    [`${podA.ep.ip}/32`, ID_A],
    [`${podB.ep.ip}/32`, ID_B],
  ]);
  applyPolicyMaps(maps, { ipcache, policy, policies: new Map([[POLICY, { ref: 'KelpNetworkPolicy/default/test', ingress: [], egress: [] }]]) });
}

beforeAll(async () => {
  node = createNetns('kpn');
  node.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
  podA = makePod('10.81.0.2', 301);
  podB = makePod('10.81.0.3', 302);
  for (const pod of [podA, podB]) pod.ns.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=0']);

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
  maps = policyMapsOf(obj);
  metrics = metricsMaps(obj);
  putEndpoint(obj.map('kelp_endpoints'), podA.ep);
  putEndpoint(obj.map('kelp_endpoints'), podB.ep);
  collector = new EventCollector(obj.map('kelp_events'));
  onCleanup(() => collector.close());

  await serve(podB, [8080, 8081], [9090, 9091]);
  await serve(podA, [7070], []);
});

afterAll(cleanupAll);

describe('policy between two pods with real sockets', () => {
  it('before enforcement everything connects, and nothing is tracked', () => {
    program([]);
    expect(tcpExchange(podA, podB, 8081)).toBe('ok');
    expect(tcpExchange(podB, podA, 7070)).toBe('ok');
    expect(obj.map('kelp_pct4').keys()).toEqual([]);
  });

  it('enforced: only what B accepts from A connects; replies pass though A accepts nothing', async () => {
    program([
      { proto: IPPROTO.TCP, port: 8080 },
      { proto: IPPROTO.UDP, port: 9090 },
    ]);
    setPolicyEnforcement(maps, true);
    expect(tcpExchange(podA, podB, 8080)).toBe('ok');
    expect(udpExchange(podA, podB, 9090)).toBe('ok');

    const denied = count(podB.ep.epId, Direction.TO_POD, DropReason.POLICY_DENY);
    collector.events.length = 0;
    expect(tcpExchange(podA, podB, 8081)).toBe('timeout');
    expect(udpExchange(podA, podB, 9091)).toBe('timeout');
    expect(tcpExchange(podB, podA, 7070)).toBe('timeout');
    expect(count(podB.ep.epId, Direction.TO_POD, DropReason.POLICY_DENY)).toBeGreaterThan(denied);
    expect(count(podA.ep.epId, Direction.TO_POD, DropReason.POLICY_DENY)).toBeGreaterThan(0);
    let deny: KelpEvent | undefined;
    await collector.takeUntil((e) => {
      if (e.kind === 'drop' && e.reasonName === 'POLICY_DENY' && e.dport === 8081) deny = e;
      return deny !== undefined;
    });
    expect(deny).toMatchObject({ epId: podB.ep.epId, dir: 'to-pod', saddr: podA.ep.ip, policy: { policyId: POLICY, rule: RULE_ISOLATED, tier: 'networkpolicy', action: 'deny' } });
  });

  it('a revocation cuts a live connection on its next packet; allowing it again lets new connections through', async () => {
    program([{ proto: IPPROTO.TCP, port: 8080 }]);
    setPolicyEnforcement(maps, true);
    const script = `
      const s = require('net').connect(8080, '${podB.ep.ip}');
      let n = 0;
      s.on('connect', () => setInterval(() => s.write('x'), 100));
      s.on('data', (d) => { n += d.length; console.log('echo ' + n); });
      s.on('error', (e) => console.log('error ' + e.code));
    `;
    const client = podA.ns.spawn(process.execPath, ['-e', script]);
    let out = '';
    client.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const echoes = () => (out.match(/echo/g) ?? []).length;
    const waitFor = async (cond: () => boolean, ms: number) => {
      const deadline = Date.now() + ms;
      while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      return cond();
    };
    expect(await waitFor(() => echoes() >= 5, 5000), out).toBe(true);

    program([]);
    await new Promise((r) => setTimeout(r, 300));
    const atCut = echoes();
    await new Promise((r) => setTimeout(r, 1000));
    expect(echoes() - atCut, 'echoes after the cut').toBeLessThanOrEqual(1);
    expect(count(podB.ep.epId, Direction.TO_POD, DropReason.POLICY_DENY)).toBeGreaterThan(0);
    client.kill('SIGKILL');

    program([{ proto: IPPROTO.TCP, port: 8080 }]);
    expect(tcpExchange(podA, podB, 8080)).toBe('ok');
  });
});
