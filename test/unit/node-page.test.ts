// The node page's routes on a real MetricsServer (loopback, port 0) over a real FlowStore: the
// page itself and nothing else at '/', the snapshot as JSON, the flow stream as server-sent events
// (backlog of ?last=N, then records added later, in order), ?last checked naming the parameter.
import http from 'node:http';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import type { FlowRecord } from '../../src/datapath/flow-types';
import { silentLogger } from '../../src/log';
import { MetricsServer } from '../../src/metrics/server';
import { FlowStore } from '../../src/observe/store';
import { mountNodePage, NodePageSnapshot, parseLast, sseEvent } from '../../src/observe/page';
import { until } from '../support/kelp-cli';

const servers: MetricsServer[] = [];
afterEach(async () => {
  while (servers.length) await servers.pop()!.close();
});

function record(i: number, verdict: FlowRecord['verdict'] = 'forwarded'): FlowRecord {
  return {
    time: `2026-12-06T10:00:0${i % 10}.000000000Z`,
    type: verdict === 'dropped' ? 'drop' : 'flow-start',
    verdict,
    direction: 'ingress',
    protocol: 'TCP',
    source: { address: '10.0.0.1', port: 40000 + i, pod: { namespace: 'ns', name: 'a' } },
    destination: { address: '10.0.0.2', port: 80, pod: { namespace: 'ns', name: 'b' } },
    endpoint: 2,
    ...(verdict === 'dropped' ? { reason: 'POLICY_DENY' } : {}),
  };
}

const SNAPSHOT: NodePageSnapshot = { node: 'n1', pods: [{ namespace: 'ns', name: 'a', ip: '10.0.0.1', state: 'Running' }], services: [], policies: [] };

async function serve(store: FlowStore | undefined): Promise<string> {
  const s = new MetricsServer(new Registry(), silentLogger);
  servers.push(s);
  mountNodePage(s, { snapshot: () => SNAPSHOT, store: () => store });
  const at = await s.listen({ host: '127.0.0.1', port: 0 });
  return `http://127.0.0.1:${at.port}`;
}

function get(url: string): Promise<{ status: number; type: string; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type']), body, headers: res.headers }));
      })
      .on('error', reject);
  });
}

/** Reads server-sent events until `n` flow events have come, then closes. */
function stream(url: string, n: number, onOpen: () => void = () => undefined): Promise<{ type: string; flows: FlowRecord[]; raw: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, (res) => {
      let raw = '';
      onOpen();
      res.on('data', (d: Buffer) => {
        raw += d.toString();
        const flows = raw
          .split('\n\n')
          .filter((e) => e.startsWith('event: flow\n'))
          .map((e) => JSON.parse(e.slice('event: flow\ndata: '.length)) as FlowRecord);
        if (flows.length >= n) {
          req.destroy();
          resolve({ type: String(res.headers['content-type']), flows, raw });
        }
      });
    });
    req.on('error', (e) => (req.destroyed ? undefined : reject(e)));
  });
}

describe('node page routes', () => {
  it('serves the page at / only, self-contained, and the snapshot at /api/node', async () => {
    const base = await serve(new FlowStore(16));
    const page = await get(`${base}/`);
    expect(page.status).toBe(200);
    expect(page.type).toBe('text/html; charset=utf-8');
    expect(page.headers['content-security-policy']).toMatch(/^default-src 'none'/);
    expect(page.body).toContain('<svg id="graph"');
    // Nothing from outside: no absolute URL but the SVG namespace.
    expect(page.body.match(/https?:\/\/[^'" )]+/g)).toEqual(['http://www.w3.org/2000/svg']);
    expect((await get(`${base}/elsewhere`)).status).toBe(404);
    const node = await get(`${base}/api/node`);
    expect(node.type).toBe('application/json');
    expect(JSON.parse(node.body)).toEqual(SNAPSHOT);
  });

  it('streams the backlog of ?last=N, then new records as they are added', async () => {
    const store = new FlowStore(16);
    for (let i = 0; i < 5; i++) store.add(record(i));
    const base = await serve(store);
    const got = await stream(`${base}/api/flows?last=2`, 4, () => {
      // Added once the response has begun: the stream's subscriber hears them.
      setImmediate(() => {
        store.add(record(5, 'dropped'));
        store.add(record(6));
      });
    });
    expect(got.type).toBe('text/event-stream; charset=utf-8');
    expect(got.raw.startsWith('retry: 2000\n\n')).toBe(true);
    expect(got.flows.map((f) => f.source.port)).toEqual([40003, 40004, 40005, 40006]);
    expect(got.flows[2].reason).toBe('POLICY_DENY');
    // The browser left: its subscription goes with the connection.
    await until('the stream unsubscribed', () => store.subscriberCount === 0);
  });

  it('refuses a bad ?last naming it, and answers 503 before events are read', async () => {
    const base = await serve(new FlowStore(16));
    const bad = await get(`${base}/api/flows?last=-1`);
    expect(bad.status).toBe(400);
    expect(bad.body).toBe('last: "-1" is not an integer 0..16\n');
    expect((await get(`${base}/api/flows?last=17`)).body).toBe('last: "17" is not an integer 0..16\n');
    const none = await serve(undefined);
    const r = await get(`${none}/api/flows`);
    expect(r.status).toBe(503);
  });

  it('parseLast and sseEvent', () => {
    expect(parseLast(null, 4096)).toBe(200);
    expect(parseLast(null, 50)).toBe(50);
    expect(parseLast('0', 50)).toBe(0);
    expect(() => parseLast('1.5', 50)).toThrow('last: "1.5" is not an integer 0..50');
    expect(sseEvent('flow', { a: 'x\ny' })).toBe('event: flow\ndata: {"a":"x\\ny"}\n\n');
  });
});
