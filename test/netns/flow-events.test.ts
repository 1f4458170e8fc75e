// Flow events with real pods and real packets (issue 14): namespaces joined to a node namespace
// by veths, lxc.o attached with tcx, policy and a ClusterIP Service written by the agent's
// writers, the ring read as the agent reads it. A TCP connection gives one flow start (verdict,
// the policy that allowed it) and one end whose bytes each way are exactly what the pods' own
// interfaces sent; a denied connection gives drops naming the policy; a connection to the
// Service's address names the Service; a flow class past its rate limit is accounted exactly.
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { attachTc, BpfLink, BpfObject, inNetns, openRingBuffer } from '../../src/bpf';
import { EventCounter, FlowEvent, KelpEvent, readEventStats, writeEventConfig } from '../../src/datapath/events';
import { applyPolicyMaps, policyMapsOf, setPolicyEnforcement } from '../../src/datapath/policy';
import { IDENTITY_HOST, IPPROTO, PolicyEntry, RULE_ISOLATED } from '../../src/datapath/policy-types';
import { serviceMapsOf, ServiceWriter } from '../../src/datapath/service';
import { Enricher, FlowDirectory } from '../../src/observe/enrich';
import { EventCollector, loadWithVerifierLog, LXC_OBJECT, makeTestPod, putEndpoint, TestEndpoint, TestPod } from '../support/datapath';
import { cleanupAll, createNetns, mountBpffs, Netns, onCleanup } from '../support/netns';

const GATEWAY = '10.84.0.1';
const VIP = '10.96.84.84';
const ID = { A: 600, B: 601, C: 602 };
const ALLOW_POLICY = 42;
const ISOLATE_POLICY = 43;
const SVC_ID = 5;

type Pod = TestPod;

let node: Netns;
let a: Pod;
let b: Pod;
let c: Pod;
let obj: BpfObject;
let collector: EventCollector;

function makePod(ip: string, epId: number): Pod {
  return makeTestPod(node, { ip, epId, gateway: GATEWAY, prefix: 'kfp', quiet: true });
}

/** Bytes and packets the pod's eth0 has sent (veth_xmit counts each frame, Ethernet header included). */
function txOf(pod: Pod): { bytes: number; packets: number } {
  const [link] = JSON.parse(pod.ns.exec('ip', ['-s', '-j', 'link', 'show', 'eth0'])) as Array<{ stats64: { tx: { bytes: number; packets: number } } }>;
  return { bytes: link.stats64.tx.bytes, packets: link.stats64.tx.packets };
}

/** An echo server on TCP 8080. */
async function serve(pod: Pod): Promise<ChildProcess> {
  const script = `
    require('net').createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen(8080, '0.0.0.0', () => console.log('listening'));
  `;
  const child = pod.ns.spawn(process.execPath, ['-e', script]);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('listening')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`server in ${pod.ns.name} exited with ${code}`)));
  });
  return child;
}

/**
 * One TCP connection: sends `bytes` bytes, reads them all back, then ends it with a RST (so the
 * RST is the flow's last packet). Prints 'ok', or what went wrong.
 */
function exchange(from: Pod, ip: string, port: number, bytes: number, timeoutMs = 3000): string {
  const script = `
    const s = require('net').connect(${port}, '${ip}'); let got = 0;
    const t = setTimeout(() => { console.log('timeout'); process.exit(0); }, ${timeoutMs});
    s.on('connect', () => s.write(Buffer.alloc(${bytes}, 0x6b)));
    s.on('data', (d) => { got += d.length; if (got === ${bytes}) { clearTimeout(t); s.resetAndDestroy(); console.log('ok'); } });
    s.on('error', (e) => { clearTimeout(t); console.log('error ' + e.code); });
  `;
  return from.ns.exec(process.execPath, ['-e', script], { allowFail: true }).trim();
}

const ipcache = () =>
  new Map<string, number>([
    [`${a.ep.ip}/32`, ID.A],
    [`${b.ep.ip}/32`, ID.B],
    [`${c.ep.ip}/32`, ID.C],
    [`${GATEWAY}/32`, IDENTITY_HOST],
  ]);

function policyEntries(): PolicyEntry[] {
  const all = (ep: TestEndpoint, direction: 'ingress' | 'egress'): PolicyEntry => ({
    epId: ep.epId, identity: 0, direction, port: 0, portPrefix: 0, verdict: { action: 'allow', tier: 'networkpolicy', policyId: 1, rule: 0 },
  });
  return [
    all(a.ep, 'ingress'), all(a.ep, 'egress'), all(c.ep, 'ingress'), all(c.ep, 'egress'), all(b.ep, 'egress'),
    // B's ingress: A on TCP 8080 by policy 42's rule 0, everything else isolated by policy 43.
    { epId: b.ep.epId, identity: ID.A, direction: 'ingress', protocol: IPPROTO.TCP, port: 8080, portPrefix: 16, verdict: { action: 'allow', tier: 'networkpolicy', policyId: ALLOW_POLICY, rule: 0 } },
    { epId: b.ep.epId, identity: 0, direction: 'ingress', port: 0, portPrefix: 0, verdict: { action: 'deny', tier: 'networkpolicy', policyId: ISOLATE_POLICY, rule: RULE_ISOLATED } },
  ];
}

beforeAll(async () => {
  node = createNetns('kfn');
  node.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
  a = makePod('10.84.0.2', 401);
  b = makePod('10.84.0.3', 402);
  c = makePod('10.84.0.4', 403);
  obj = loadWithVerifierLog(LXC_OBJECT, { pinRoot: mountBpffs() });
  const links: BpfLink[] = [];
  collector = new EventCollector(obj.map('kelp_events'));
  onCleanup(() => {
    collector.close();
    for (const l of links) l.close();
    obj.close();
  });
  inNetns(node.path, () => {
    for (const pod of [a, b, c]) {
      links.push(attachTc(obj.program('kelp_from_pod'), pod.ep.ifindex, 'ingress', { mode: 'tcx' }));
      links.push(attachTc(obj.program('kelp_to_pod'), pod.ep.ifindex, 'egress', { mode: 'tcx' }));
    }
  });
  for (const pod of [a, b, c]) putEndpoint(obj.map('kelp_endpoints'), pod.ep);
  const maps = policyMapsOf(obj);
  applyPolicyMaps(maps, { ipcache: ipcache(), policy: policyEntries(), policies: new Map() });
  setPolicyEnforcement(maps, true);
  new ServiceWriter(serviceMapsOf(obj)).apply({
    frontends: [{ address: VIP, port: 80, protocol: 'TCP', svcId: SVC_ID, setId: 1, count: 1, flags: 0, affinityTimeout: 0 }],
    sets: [{ setId: 1, backends: [{ backendId: 1, address: b.ep.ip, port: 8080, flags: 1 }] }],
    sourceRanges: new Map(),
    names: new Map([[SVC_ID, 'shop/web:http']]),
  });
  const server = await serve(b);
  onCleanup(() => server.kill('SIGKILL'));
});

afterAll(cleanupAll);

/** Every event so far (the ring is read on the event loop: give it a turn until `until` holds). */
async function drain(until: (evs: KelpEvent[]) => boolean): Promise<KelpEvent[]> {
  for (let i = 0; i < 400 && !until(collector.events); i++) await new Promise((r) => setTimeout(r, 5));
  return collector.events.splice(0);
}

const flowsOf = (evs: KelpEvent[], pod: Pod) => evs.filter((e): e is FlowEvent => (e.kind === 'flow-start' || e.kind === 'flow-end') && e.saddr === pod.ep.ip);
const ended = (pod: Pod) => (evs: KelpEvent[]) => flowsOf(evs, pod).some((e) => e.kind === 'flow-end');

const directory: FlowDirectory = {
  podByEndpoint: () => undefined,
  podByIp: (ip) => (ip === a.ep.ip ? { namespace: 'shop', name: 'api' } : ip === b.ep.ip ? { namespace: 'shop', name: 'db' } : undefined),
  nodeByIp: () => undefined,
  serviceById: (id) => (id === SVC_ID ? { namespace: 'shop', name: 'web' } : undefined),
  policyById: (id) => (id === ALLOW_POLICY ? { kind: 'NetworkPolicy', namespace: 'shop', name: 'db-from-api' } : id === ISOLATE_POLICY ? { kind: 'NetworkPolicy', namespace: 'shop', name: 'db-isolated' } : undefined),
};

describe('flow events from real connections', () => {
  it('an allowed TCP connection: one start with its policy, one end with exactly the bytes each pod sent', async () => {
    collector.events.splice(0);
    const [txA, txB] = [txOf(a), txOf(b)];
    expect(exchange(a, b.ep.ip, 8080, 3000)).toBe('ok');
    const evs = await drain(ended(a));
    const [sentA, sentB] = [txOf(a), txOf(b)];
    const flows = flowsOf(evs, a);
    expect(flows.map((f) => f.kind)).toEqual(['flow-start', 'flow-end']);
    const [start, end] = flows;
    expect(start).toMatchObject({ daddr: b.ep.ip, dport: 8080, proto: 6, direction: 'ingress', epId: b.ep.epId, policy: { policyId: ALLOW_POLICY, rule: 0, action: 'allow' } });
    expect(end.closedBy).toBe('rst');
    expect({ packetsOut: Number(end.txPackets), bytesOut: Number(end.txBytes), packetsIn: Number(end.rxPackets), bytesIn: Number(end.rxBytes) }).toEqual({
      packetsOut: sentA.packets - txA.packets,
      bytesOut: sentA.bytes - txA.bytes,
      packetsIn: sentB.packets - txB.packets,
      bytesIn: sentB.bytes - txB.bytes,
    });
    // 3,000 bytes each way, in frames with their headers.
    expect(Number(end.txBytes)).toBeGreaterThan(3000);
    expect(Number(end.rxBytes)).toBeGreaterThan(3000);
    const rec = new Enricher(directory).record(start);
    expect(rec).toMatchObject({
      type: 'flow-start',
      verdict: 'forwarded',
      source: { pod: { namespace: 'shop', name: 'api' } },
      destination: { pod: { namespace: 'shop', name: 'db' }, port: 8080 },
      policy: { kind: 'NetworkPolicy', namespace: 'shop', name: 'db-from-api', action: 'allow' },
    });
  });

  it('a denied connection: drops with the reason and the policy that isolates the pod, and no flow', async () => {
    collector.events.splice(0);
    expect(exchange(c, b.ep.ip, 8080, 10, 700)).toBe('timeout');
    const evs = await drain((e) => e.some((x) => x.kind === 'drop'));
    const drops = evs.filter((e) => e.kind === 'drop' && e.saddr === c.ep.ip);
    expect(drops.length).toBeGreaterThanOrEqual(1);
    expect(drops[0]).toMatchObject({ kind: 'drop', reasonName: 'POLICY_DENY', epId: b.ep.epId, dir: 'to-pod', policy: { policyId: ISOLATE_POLICY, rule: RULE_ISOLATED, action: 'deny' } });
    expect(flowsOf(evs, c)).toEqual([]);
    expect(new Enricher(directory).record(drops[0])).toMatchObject({
      type: 'drop',
      verdict: 'dropped',
      reason: 'POLICY_DENY',
      direction: 'ingress',
      destination: { pod: { namespace: 'shop', name: 'db' } },
      policy: { name: 'db-isolated', rule: RULE_ISOLATED },
    });
  });

  it("a connection to the Service's address: its flow names the Service and the frontend, and goes to the backend", async () => {
    collector.events.splice(0);
    expect(exchange(a, VIP, 80, 500)).toBe('ok');
    const flows = flowsOf(await drain(ended(a)), a);
    expect(flows.map((f) => f.kind)).toEqual(['flow-start', 'flow-end']);
    expect(flows[0]).toMatchObject({ daddr: b.ep.ip, dport: 8080, service: { svcId: SVC_ID, address: VIP, port: 80 } });
    expect(new Enricher(directory).record(flows[0]).service).toEqual({ namespace: 'shop', name: 'web', address: VIP, port: 80 });
  });

  it('a flow class past its rate limit: emitted + suppressed + lost == attempted, and the reader receives every emitted event', async () => {
    const stats = obj.map('kelp_event_stats');
    const config = obj.map('kelp_event_config');
    const before = readEventStats(stats).flow;
    const counter = new EventCounter();
    collector.close();
    const rb = openRingBuffer(obj.map('kelp_events'), (r) => counter.take(r));
    // No refill: at most the 2 tokens each CPU's bucket keeps.
    writeEventConfig(config, { flow: { rate: 0, burst: 2 } });
    try {
      const n = 6;
      for (let i = 0; i < n; i++) expect(exchange(a, b.ep.ip, 8080, 100)).toBe('ok');
      const s = readEventStats(stats).flow;
      const d = { emitted: s.emitted - before.emitted, suppressed: s.suppressed - before.suppressed, lost: s.lost - before.lost };
      // Each connection wants a start and an end.
      expect(d.emitted + d.suppressed + d.lost).toBe(2 * n);
      expect(d.emitted).toBeLessThanOrEqual(2 * stats.numCpus);
      expect(d.suppressed).toBeGreaterThanOrEqual(2 * n - 2 * stats.numCpus);
      expect(d.lost).toBe(0);
      for (let i = 0; i < 400 && counter.counts.received.flow < d.emitted; i++) await new Promise((r) => setTimeout(r, 5));
      expect(counter.counts.received.flow).toBe(d.emitted);
      expect(counter.counts.unknown).toBe(0);
    } finally {
      writeEventConfig(config, { flow: { rate: 10_000, burst: 1_000 } });
      rb.close();
      collector = new EventCollector(obj.map('kelp_events'));
    }
  });
});
