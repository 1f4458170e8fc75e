// The exporter's arithmetic and exposition, fed plain snapshots (the e2e test reads real maps):
// per-endpoint counters folded into node totals that never fall, series that follow their
// sources, the metrics server's routes and address parsing.
import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { KelpMetrics, MetricsSources, PolicyVerdictSample } from '../../src/metrics/exporter';
import { MonotonicSums } from '../../src/metrics/monotonic';
import { MetricsServer, parseMetricsAddress } from '../../src/metrics/server';
import { DropReason } from '../../src/datapath/drop';
import { Direction, MetricsEntry } from '../../src/datapath/structs';
import { silentLogger } from '../../src/log';

const entry = (epId: number, dir: number, reason: number, packets: number, bytes: number): MetricsEntry =>
  ({ key: { epId, dir, reason }, value: { packets: BigInt(packets), bytes: BigInt(bytes) } }) as MetricsEntry;

/** Sample lines of one exposition as name{labels} -> value. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

describe('MonotonicSums', () => {
  it('keeps a group total when an endpoint counter is deleted or its id reused', () => {
    const m = new MonotonicSums();
    const s = (key: string, packets: number) => ({ key, group: 'g', packets: BigInt(packets), bytes: BigInt(packets * 100) });
    expect(m.update([s('1', 5), s('2', 3)]).get('g')).toEqual({ packets: 8n, bytes: 800n });
    // Endpoint 2 went: its 3 stay in the total.
    expect(m.update([s('1', 7)]).get('g')).toEqual({ packets: 10n, bytes: 1000n });
    // Id 1 reused by a new endpoint counting from 0.
    expect(m.update([s('1', 2)]).get('g')).toEqual({ packets: 12n, bytes: 1200n });
    expect(m.update([]).get('g')).toEqual({ packets: 12n, bytes: 1200n });
  });
});

describe('KelpMetrics', () => {
  it('exports drops by reason and direction and forwarded totals, summed over endpoints', async () => {
    let counters = [
      entry(5, Direction.FROM_POD, 0, 10, 1000),
      entry(6, Direction.FROM_POD, 0, 4, 400),
      entry(6, Direction.TO_POD, 0, 14, 1400),
      entry(5, Direction.TO_POD, DropReason.POLICY_DENY, 3, 180),
      entry(0, Direction.FROM_POD, DropReason.SRC_MAC, 1, 60),
    ];
    const m = new KelpMetrics({ counters: () => counters, maps: () => [] });
    let got = samples(await m.registry.metrics());
    expect(got.get('kelp_forward_packets_total{direction="egress"}')).toBe(14);
    expect(got.get('kelp_forward_bytes_total{direction="egress"}')).toBe(1400);
    expect(got.get('kelp_forward_packets_total{direction="ingress"}')).toBe(14);
    expect(got.get('kelp_drop_packets_total{reason="POLICY_DENY",direction="ingress"}')).toBe(3);
    expect(got.get('kelp_drop_bytes_total{reason="POLICY_DENY",direction="ingress"}')).toBe(180);
    expect(got.get('kelp_drop_packets_total{reason="SRC_MAC",direction="egress"}')).toBe(1);
    // Endpoint 6 deleted: the node's totals do not fall.
    counters = counters.filter((e) => e.key.epId !== 6);
    await new Promise((r) => setImmediate(r));
    got = samples(await m.registry.metrics());
    expect(got.get('kelp_forward_packets_total{direction="egress"}')).toBe(14);
    expect(got.get('kelp_forward_packets_total{direction="ingress"}')).toBe(14);
  });

  it('exports map pressure for maps that can fill, and drops the series of deleted policies', async () => {
    let verdicts: PolicyVerdictSample[] = [
      { kind: 'NetworkPolicy', namespace: 'db', name: 'only-api', rule: 0, action: 'allow', direction: 'ingress', packets: 7 },
      { kind: 'NetworkPolicy', namespace: 'db', name: 'only-api', rule: 'isolated', action: 'deny', direction: 'ingress', packets: 2 },
      { kind: 'ClusterNetworkPolicy', name: 'admin', rule: 1, action: 'deny', direction: 'egress', packets: 1 },
    ];
    const sources: MetricsSources = {
      counters: () => [],
      maps: () => [
        { name: 'kelp_pct4', type: 'LRU_HASH', entries: 25, maxEntries: 100, fixed: false },
        { name: 'kelp_metrics_fwd', type: 'PERCPU_ARRAY', entries: 3, maxEntries: 8192, fixed: true },
      ],
      verdicts: () => verdicts,
      events: () => ({ byClass: { drop: { emitted: 9, suppressed: 2, lost: 1, received: 8 }, flow: { emitted: 0, suppressed: 0, lost: 0, received: 0 }, trace: { emitted: 0, suppressed: 0, lost: 0, received: 0 } }, unknown: 0 }),
    };
    const m = new KelpMetrics(sources);
    let got = samples(await m.registry.metrics());
    expect(got.get('kelp_map_entries{map="kelp_pct4"}')).toBe(25);
    expect(got.get('kelp_map_capacity{map="kelp_pct4"}')).toBe(100);
    expect(got.get('kelp_map_fill_ratio{map="kelp_pct4"}')).toBe(0.25);
    expect([...got.keys()].some((k) => k.includes('kelp_metrics_fwd'))).toBe(false);
    expect(got.get('kelp_policy_verdicts_total{policy_kind="NetworkPolicy",policy_namespace="db",policy_name="only-api",rule="isolated",direction="ingress",action="deny"}')).toBe(2);
    expect(got.get('kelp_policy_verdicts_total{policy_kind="ClusterNetworkPolicy",policy_namespace="",policy_name="admin",rule="1",direction="egress",action="deny"}')).toBe(1);
    expect(got.get('kelp_events_total{class="drop",fate="suppressed"}')).toBe(2);
    expect(got.get('kelp_events_total{class="drop",fate="lost"}')).toBe(1);
    verdicts = verdicts.filter((v) => v.name !== 'only-api');
    got = samples(await m.registry.metrics());
    expect([...got.keys()].filter((k) => k.includes('only-api'))).toEqual([]);
    expect(got.get('kelp_policy_verdicts_total{policy_kind="ClusterNetworkPolicy",policy_namespace="",policy_name="admin",rule="1",direction="egress",action="deny"}')).toBe(1);
  });

  it('keeps CNI command labels bounded and times changes to their apply', async () => {
    const m = new KelpMetrics({ counters: () => [], maps: () => [] });
    m.observeCni('ADD', true, 0.02);
    m.observeCni('BOGUS', false, 0.001);
    m.observeReconcile('policy', true, 0.003, 0.05);
    m.observeReconcile('policy', true, 0.003);
    const got = samples(await m.registry.metrics());
    expect(got.get('kelp_cni_operation_duration_seconds_count{command="ADD",result="success"}')).toBe(1);
    expect(got.get('kelp_cni_operation_duration_seconds_count{command="other",result="error"}')).toBe(1);
    expect(got.get('kelp_reconcile_duration_seconds_count{reconciler="policy",result="success"}')).toBe(2);
    expect(got.get('kelp_reconcile_change_to_apply_seconds_count{reconciler="policy"}')).toBe(1);
  });
});

describe('metrics address', () => {
  it('parses host:port, [v6]:port and :port, and names the flag on bad input', () => {
    expect(parseMetricsAddress('127.0.0.1:9962')).toEqual({ host: '127.0.0.1', port: 9962 });
    expect(parseMetricsAddress('[::1]:9962')).toEqual({ host: '::1', port: 9962 });
    expect(parseMetricsAddress(':9100')).toEqual({ host: '0.0.0.0', port: 9100 });
    expect(parseMetricsAddress('')).toBeUndefined();
    expect(() => parseMetricsAddress('9962')).toThrow(/--metrics-address: expected HOST:PORT/);
    expect(() => parseMetricsAddress('1.2.3.4:70000')).toThrow(/--metrics-address: port must be in 0\.\.65535/);
    expect(() => parseMetricsAddress('node1:9962')).toThrow(/--metrics-address: host must be/);
    expect(() => parseMetricsAddress('[1.2.3.4]:9962')).toThrow(/not an IPv6 address/);
  });
});

describe('MetricsServer', () => {
  let server: MetricsServer | undefined;
  afterEach(async () => server?.close());
  const get = (port: number, path: string, method = 'GET') =>
    new Promise<{ status: number; type?: string; body: string }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path, method }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body }));
      });
      req.on('error', reject);
      req.end();
    });

  it('serves /metrics and mounted pages, read-only', async () => {
    const m = new KelpMetrics({ counters: () => [entry(1, Direction.FROM_POD, 0, 2, 200)], maps: () => [] });
    server = new MetricsServer(m.registry, silentLogger);
    server.route('/node/', (_req, res, url) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`page ${url.pathname}`);
    });
    const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
    const metrics = await get(port, '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.type).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(samples(metrics.body).get('kelp_forward_packets_total{direction="egress"}')).toBe(2);
    expect(await get(port, '/node/x')).toMatchObject({ status: 200, body: 'page /node/x' });
    expect((await get(port, '/nope')).status).toBe(404);
    expect((await get(port, '/metrics', 'POST')).status).toBe(405);
    expect(() => server!.route('/metrics', () => undefined)).toThrow(/mounted already/);
  });

  it('fails to listen on an address in use, naming the flag', async () => {
    const m = new KelpMetrics({ counters: () => [], maps: () => [] });
    server = new MetricsServer(m.registry, silentLogger);
    const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
    const other = new MetricsServer(m.registry, silentLogger);
    await expect(other.listen({ host: '127.0.0.1', port })).rejects.toThrow(/--metrics-address 127\.0\.0\.1:\d+: EADDRINUSE/);
  });
});
