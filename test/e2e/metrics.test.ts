// The Prometheus exporter of a real agent, scraped over HTTP by curl inside the node's network
// namespace (the agent's --metrics-address default, 127.0.0.1:9962 there) and parsed as the
// text exposition format: forwarded packets and bytes equal to pings actually sent between two
// pods, a denied flow's drops counted under POLICY_DENY and under its policy and rule (series
// gone with the policy), event accounting, histograms after ADD and DEL, map pressure equal to
// the endpoints made, totals that do not fall when a pod goes.
import { ChildProcess, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KELP_BIN, Sandbox, SandboxPod } from '../../src/sandbox';
import { kelpApplyWait, ping, startEchoServer, startSandbox, stopServer, tcpAsk } from '../support/e2e';
import { until } from '../support/kelp-cli';
import { cleanupAll, tempDir } from '../support/netns';

const METRICS_URL = 'http://127.0.0.1:9962/metrics';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Exposition {
  types: Map<string, string>;
  samples: Sample[];
}

/**
 * The Prometheus text format (version 0.0.4), strictly: HELP and TYPE lines, then samples
 * `name{label="value",...} number` whose family was declared; anything else is an error.
 */
function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
  const sampleRe = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (\\S+)$`);
  const labelRe = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y;
  if (!text.endsWith('\n')) throw new Error('exposition does not end with a newline');
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m: RegExpExecArray | null;
    if ((m = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`).exec(line))) {
      if (types.has(m[1])) throw new Error(`TYPE of ${m[1]} twice`);
      types.set(m[1], m[2]);
      continue;
    }
    if (new RegExp(`^# HELP ${NAME} `).test(line)) continue;
    if (!(m = sampleRe.exec(line))) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    if (m[2]) {
      labelRe.lastIndex = 0;
      while (labelRe.lastIndex < m[2].length) {
        const l = labelRe.exec(m[2]);
        if (!l) throw new Error(`bad labels in ${JSON.stringify(line)}`);
        labels[l[1]] = l[2].replace(/\\(.)/g, (_x, c: string) => (c === 'n' ? '\n' : c));
      }
    }
    const value = m[3] === '+Inf' ? Infinity : Number(m[3]);
    if (Number.isNaN(value) && m[3] !== 'NaN') throw new Error(`bad value in ${JSON.stringify(line)}`);
    const family = [m[1], m[1].replace(/_(bucket|sum|count)$/, '')].find((n) => types.has(n));
    if (!family) throw new Error(`sample ${m[1]} of an undeclared family`);
    samples.push({ name: m[1], labels, value });
  }
  return { types, samples };
}

let sb: Sandbox;
let a: SandboxPod;
let b: SandboxPod;
let c: SandboxPod;
let server: ChildProcess | undefined;

function scrape(): Exposition {
  const r = spawnSync('ip', ['netns', 'exec', sb.node, 'curl', '-sS', '--fail', '-w', '%{stderr}%{content_type}', METRICS_URL], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`curl ${METRICS_URL} in ${sb.node}: exit ${r.status ?? r.signal}: ${r.stderr}`);
  expect(r.stderr).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseExposition(r.stdout);
}

/** The sum of the samples named `name` whose labels include `labels`. */
function value(e: Exposition, name: string, labels: Record<string, string> = {}): number {
  return e.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((n, s) => n + s.value, 0);
}

function series(e: Exposition, name: string): Sample[] {
  return e.samples.filter((s) => s.name === name);
}

/**
 * Makes every neighbour a pod has learnt permanent: ARP requests are answered by kelp_from_pod
 * and counted as forwarded, so a neighbour re-validated in the middle of a measurement would add
 * a packet the test did not send.
 */
function pinNeighbours(pod: SandboxPod): void {
  const out = JSON.parse(sb.exec(pod.netns, 'ip', ['-j', '-4', 'neigh', 'show', 'dev', 'eth0'])) as Array<{ dst: string; lladdr?: string }>;
  for (const n of out) if (n.lladdr) sb.exec(pod.netns, 'ip', ['neigh', 'replace', n.dst, 'lladdr', n.lladdr, 'dev', 'eth0', 'nud', 'permanent']);
}

function apply(name: string, yaml: string, verb: 'apply' | 'delete' = 'apply'): Promise<void> {
  const dir = tempDir('kelp-metrics-');
  writeFileSync(path.join(dir, name), yaml);
  return kelpApplyWait(sb, dir, verb);
}

const PODS = `apiVersion: v1
kind: Namespace
metadata: {name: mx}
${['a', 'b', 'c'].map((n) => `---\napiVersion: v1\nkind: Pod\nmetadata: {name: ${n}, namespace: mx, labels: {app: ${n}}}\nspec: {containers: [{name: ${n}}]}\n`).join('')}`;

/** Only app=a may reach b: c's packets to b are dropped with POLICY_DENY. */
const POLICY = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: mx}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {app: a}}}]
`;

beforeAll(async () => {
  sb = await startSandbox('met');
  await apply('pods.yaml', PODS);
  a = await sb.addPod('a', 'mx');
  b = await sb.addPod('b', 'mx');
  c = await sb.addPod('c', 'mx');
  // Every pod learns its neighbours before anything is measured.
  for (const [from, to] of [
    [a, b],
    [c, b],
    [b, a],
    [b, c],
  ]) expect(ping(sb, from.netns, to.ip), `${from.name} -> ${to.name}`).toBe(true);
  for (const p of [a, b, c]) {
    pinNeighbours(p);
    // Nothing but the test's traffic leaves a pod: no IPv6 router or neighbour solicitations.
    sb.exec(p.netns, 'sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1', 'net.ipv6.conf.eth0.disable_ipv6=1']);
  }
  server = await startEchoServer(sb, b.netns, 8080);
});

afterAll(async () => {
  stopServer(server);
  await sb?.stop();
  cleanupAll();
});

describe('kelp metrics', () => {
  it('scrapes cleanly: every family typed, every sample parsed', () => {
    const e = scrape();
    expect(e.types.get('kelp_forward_packets_total')).toBe('counter');
    expect(e.types.get('kelp_drop_packets_total')).toBe('counter');
    expect(e.types.get('kelp_map_entries')).toBe('gauge');
    expect(e.types.get('kelp_cni_operation_duration_seconds')).toBe('histogram');
    expect(e.types.get('kelp_reconcile_duration_seconds')).toBe('histogram');
    // No series is labelled by pod.
    for (const s of e.samples) expect(Object.keys(s.labels), s.name).not.toContain('pod');
  });

  it('forwarded packets and bytes are exactly the pings sent between two pods', () => {
    const before = scrape();
    const n = 7;
    const out = sb.exec(a.netns, 'ping', ['-c', String(n), '-i', '0.05', '-s', '100', '-W', '2', b.ip]);
    expect(out).toContain(`${n} packets transmitted, ${n} received`);
    const after = scrape();
    // Same node: each echo request leaves a and each reply leaves b through kelp_from_pod
    // (delivered to the peer's namespace directly), counted once each, egress. A frame is
    // 14 (Ethernet) + 20 (IPv4) + 8 (ICMP) + 100 bytes.
    const d = (name: string) => value(after, name, { direction: 'egress' }) - value(before, name, { direction: 'egress' });
    expect(d('kelp_forward_packets_total')).toBe(2 * n);
    expect(d('kelp_forward_bytes_total')).toBe(2 * n * 142);
  });

  it('forwarded packets and bytes of TCP exchanges are what the pods transmitted (their interfaces\' tx counters)', () => {
    // Frames a pod sends are counted by its veth (tx, Ethernet header included, as skb->len at
    // kelp_from_pod) and, each once, by kelp as forwarded egress or as a drop.
    const tx = () =>
      [a, b, c].reduce(
        (t, p) => {
          const stat = (f: string) => Number(sb.exec(p.netns, 'cat', [`/sys/class/net/eth0/statistics/${f}`]));
          return { packets: t.packets + stat('tx_packets'), bytes: t.bytes + stat('tx_bytes') };
        },
        { packets: 0, bytes: 0 },
      );
    const egress = (e: Exposition) => ({
      packets: value(e, 'kelp_forward_packets_total', { direction: 'egress' }),
      bytes: value(e, 'kelp_forward_bytes_total', { direction: 'egress' }),
      drops: value(e, 'kelp_drop_packets_total', { direction: 'egress' }),
    });
    const tx0 = tx();
    const before = egress(scrape());
    for (const p of [a, c]) for (let i = 0; i < 3; i++) expect(tcpAsk(sb, p.netns, b.ip, 8080)).toBe(p.ip);
    // The pods' counters first: every frame they count has then been through kelp_from_pod.
    const tx1 = tx();
    const after = egress(scrape());
    // Six connections: at least SYN, ACK, FIN, ACK from each client, and as many from b.
    expect(tx1.packets - tx0.packets).toBeGreaterThanOrEqual(6 * 8);
    expect(after.drops - before.drops).toBe(0);
    expect(after.packets - before.packets).toBe(tx1.packets - tx0.packets);
    expect(after.bytes - before.bytes).toBe(tx1.bytes - tx0.bytes);
  });

  it('a denied flow is counted under POLICY_DENY, packet by packet', async () => {
    await apply('policy.yaml', POLICY);
    const before = scrape();
    expect(ping(sb, a.netns, b.ip)).toBe(true);
    // ping exits 1 when nothing came back: its summary is read, not its status.
    const out = spawnSync('ip', ['netns', 'exec', c.netns, 'ping', '-c', '3', '-i', '0.2', '-W', '1', b.ip], { encoding: 'utf8' }).stdout;
    expect(out).toContain('3 packets transmitted, 0 received');
    const after = scrape();
    const deny = (e: Exposition) => value(e, 'kelp_drop_packets_total', { reason: 'POLICY_DENY' });
    expect(deny(after) - deny(before)).toBe(3);
    expect(value(after, 'kelp_drop_bytes_total', { reason: 'POLICY_DENY' }) - value(before, 'kelp_drop_bytes_total', { reason: 'POLICY_DENY' })).toBe(3 * 98);
    // The policy's own counters: each denied echo once (isolated: rule 65535), a's echo as a new
    // flow under rule 0 (its reply is the flow's, not decided again).
    const verdict = (e: Exposition, labels: Record<string, string>) => value(e, 'kelp_policy_verdicts_total', { policy_kind: 'NetworkPolicy', policy_namespace: 'mx', policy_name: 'b-from-a', direction: 'ingress', ...labels });
    expect(verdict(after, { action: 'deny', rule: '65535' }) - verdict(before, { action: 'deny', rule: '65535' })).toBe(3);
    expect(verdict(after, { action: 'allow', rule: '0' }) - verdict(before, { action: 'allow', rule: '0' })).toBe(1);
    // Every drop event is accounted for: emitted ones were received or are in flight.
    const ev = (e: Exposition, fate: string) => value(e, 'kelp_events_total', { class: 'drop', fate });
    expect(ev(after, 'emitted') + ev(after, 'suppressed') + ev(after, 'lost') - (ev(before, 'emitted') + ev(before, 'suppressed') + ev(before, 'lost'))).toBeGreaterThanOrEqual(3);
    expect(ev(after, 'emitted')).toBeGreaterThanOrEqual(ev(after, 'received'));
    // The policy reconciler ran for the change, and the time to its map update was observed.
    expect(value(after, 'kelp_reconcile_change_to_apply_seconds_count', { reconciler: 'policy' })).toBeGreaterThan(0);
    expect(value(after, 'kelp_reconcile_duration_seconds_count', { reconciler: 'policy', result: 'success' })).toBeGreaterThan(0);
    await apply('policy.yaml', POLICY, 'delete');
    // A deleted policy's series are gone at the next scrape.
    expect(series(scrape(), 'kelp_policy_verdicts_total').filter((x) => x.labels.policy_name === 'b-from-a')).toEqual([]);
  });

  it('map pressure: kelp_endpoints holds one entry per pod, against its capacity', () => {
    const e = scrape();
    expect(value(e, 'kelp_map_entries', { map: 'kelp_endpoints' })).toBe(3);
    const status = JSON.parse(sb.kelp('status', '-o', 'json')) as { maps: Array<{ name: string; maxEntries: number; fixed: boolean }> };
    const eps = status.maps.find((m) => m.name === 'kelp_endpoints')!;
    expect(value(e, 'kelp_map_capacity', { map: 'kelp_endpoints' })).toBe(eps.maxEntries);
    expect(value(e, 'kelp_map_fill_ratio', { map: 'kelp_endpoints' })).toBeCloseTo(3 / eps.maxEntries, 12);
    // Conntrack tables are there with their fill; arrays (always full) are not.
    expect(series(e, 'kelp_map_capacity').map((s) => s.labels.map)).toEqual(expect.arrayContaining(['kelp_pct4', 'kelp_lb4_ct']));
    for (const m of status.maps.filter((x) => x.fixed)) expect(value(e, 'kelp_map_capacity', { map: m.name }), m.name).toBe(0);
  });

  it('CNI latency histograms after ADD and DEL; node totals do not fall when a pod and its counters go', async () => {
    const before = scrape();
    expect(value(before, 'kelp_cni_operation_duration_seconds_count', { command: 'ADD', result: 'success' })).toBe(3);
    const buckets = series(before, 'kelp_cni_operation_duration_seconds_bucket').filter((s) => s.labels.command === 'ADD');
    expect(buckets.find((s) => s.labels.le === '+Inf')!.value).toBe(3);
    // Cumulative buckets never decrease.
    const les = buckets.map((s) => s.value);
    expect([...les].sort((x, y) => x - y)).toEqual(les);
    const fwd = value(before, 'kelp_forward_packets_total', { direction: 'egress' });
    const bytes = value(before, 'kelp_forward_bytes_total', { direction: 'egress' });
    const res = await sb.delPod(c);
    expect(res.code).toBe(0);
    const after = scrape();
    expect(value(after, 'kelp_cni_operation_duration_seconds_count', { command: 'DEL', result: 'success' })).toBe(1);
    expect(value(after, 'kelp_forward_packets_total', { direction: 'egress' })).toBeGreaterThanOrEqual(fwd);
    expect(value(after, 'kelp_forward_bytes_total', { direction: 'egress' })).toBeGreaterThanOrEqual(bytes);
    expect(value(after, 'kelp_map_entries', { map: 'kelp_endpoints' })).toBe(2);
  });

  it('the conntrack and NAT collectors report every pass, by map', async () => {
    // Each collector runs every 10 s; its series exists from its first pass (deleting nothing yet).
    const maps = ['kelp_pct4', 'kelp_lb4_ct', 'kelp_ct4', 'kelp_snat4'];
    const e = await until('a pass of every collector', () => {
      const x = scrape();
      return maps.every((m) => series(x, 'kelp_conntrack_gc_deleted_total').some((s) => s.labels.map === m)) && x;
    }, 30_000);
    expect(series(e, 'kelp_conntrack_gc_deleted_total').map((s) => s.labels.map).sort()).toEqual([...maps].sort());
  });

  it('is read-only, and refuses a bad --metrics-address naming the flag', () => {
    const post = spawnSync('ip', ['netns', 'exec', sb.node, 'curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', METRICS_URL], { encoding: 'utf8' });
    expect(post.stdout).toBe('405');
    const bad = spawnSync(process.execPath, [KELP_BIN, 'agent', '--metrics-address', 'localhost'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--metrics-address: expected HOST:PORT, \[IPv6\]:PORT or :PORT \(empty: off\), got "localhost"/);
  });
});
