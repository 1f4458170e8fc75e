// GET /v1/flows, /v1/flows/summary and /v1/events/stats over a real ApiServer on a unix socket:
// NDJSON oldest first, filters (a bad one refused naming the parameter), follow streams that
// get each new matching record and end when the client leaves.
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log';
import { ApiServer } from '../../src/agent/server';
import { flowRoutes } from '../../src/agent/routes/flows';
import type { FlowRecord } from '../../src/datapath/flow-types';
import { Observe } from '../../src/observe';

const dir = mkdtempSync(path.join(tmpdir(), 'kelp-flows-route-'));
const socketPath = path.join(dir, 'run', 'api.sock');
const server = new ApiServer(createLogger({ level: 'silent' }));
const observe = new Observe({
  directory: { podByEndpoint: () => undefined, podByIp: () => undefined, nodeByIp: () => undefined, serviceById: () => undefined, policyById: () => undefined },
  datapathStats: () => ({ drop: { emitted: 3, suppressed: 1, lost: 0 }, flow: { emitted: 0, suppressed: 0, lost: 0 }, trace: { emitted: 0, suppressed: 0, lost: 0 } }),
  received: () => ({ received: { drop: 3, flow: 0, trace: 0 }, unknown: 0 }),
});

function rec(i: number, verdict: FlowRecord['verdict']): FlowRecord {
  return {
    time: new Date().toISOString().replace('Z', '000000Z'),
    type: verdict === 'dropped' ? 'drop' : 'flow-start',
    verdict,
    reason: verdict === 'dropped' ? 'POLICY_DENY' : undefined,
    direction: 'egress',
    protocol: 'TCP',
    source: { address: '10.0.0.1', port: 1000 + i, pod: { namespace: 'a', name: 'web' } },
    destination: { address: '10.0.0.2', port: 80, pod: { namespace: 'b', name: 'db' } },
    endpoint: i,
  };
}

function get(p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get({ socketPath, path: p }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

beforeAll(async () => {
  flowRoutes(server, () => observe);
  await server.listen(socketPath);
  for (let i = 1; i <= 5; i++) observe.store.add(rec(i, i % 2 ? 'forwarded' : 'dropped'));
});

afterAll(async () => {
  await server.close();
  rmSync(dir, { recursive: true, force: true });
});

const lines = (body: string) => body.split('\n').filter(Boolean).map((l) => JSON.parse(l) as FlowRecord);

describe('GET /v1/flows', () => {
  it('returns the last N matching records as NDJSON, oldest first', async () => {
    expect(lines((await get('/v1/flows?last=3')).body).map((r) => r.endpoint)).toEqual([3, 4, 5]);
    expect(lines((await get('/v1/flows?verdict=dropped')).body).map((r) => r.endpoint)).toEqual([2, 4]);
    expect(lines((await get('/v1/flows?pod=b/db&side=source')).body)).toEqual([]);
    expect(lines((await get('/v1/flows?pod=db&namespace=b&last=1')).body).map((r) => r.endpoint)).toEqual([5]);
  });

  it('refuses a bad filter naming it', async () => {
    const r = await get('/v1/flows?verdict=maybe');
    expect(r.status).toBe(400);
    expect(JSON.parse(r.body).error).toMatch(/^verdict: "maybe"/);
  });

  it('follows: the backlog, then each new matching record, until the client leaves', async () => {
    const got: FlowRecord[] = [];
    let buf = '';
    const req = http.get({ socketPath, path: '/v1/flows?follow=1&last=1&verdict=dropped' });
    const res = await new Promise<http.IncomingMessage>((resolve) => req.on('response', resolve));
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('application/x-ndjson');
    const arrived = (n: number) =>
      new Promise<void>((resolve) => {
        const check = () => (got.length >= n ? resolve() : setTimeout(check, 5));
        check();
      });
    res.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const p of parts) if (p) got.push(JSON.parse(p));
    });
    await arrived(1);
    expect(got.map((r) => r.endpoint)).toEqual([4]);
    expect(observe.store.subscriberCount).toBe(1);
    observe.store.add(rec(6, 'dropped'));
    observe.store.add(rec(7, 'forwarded'));
    observe.store.add(rec(8, 'dropped'));
    await arrived(3);
    expect(got.map((r) => r.endpoint)).toEqual([4, 6, 8]);
    req.destroy();
    for (let i = 0; i < 200 && observe.store.subscriberCount > 0; i++) await new Promise((r) => setTimeout(r, 5));
    expect(observe.store.subscriberCount).toBe(0);
  });
});

describe('GET /v1/flows/summary and /v1/events/stats', () => {
  it('summarises the window and reports every class', async () => {
    const s = JSON.parse((await get('/v1/flows/summary?window=60')).body);
    expect(s.windowSeconds).toBe(60);
    expect(s.talkers[0]).toMatchObject({ source: 'a/web', destination: 'b/db' });
    expect(s.dropReasons).toEqual([{ reason: 'POLICY_DENY', count: 4 }]);
    expect((await get('/v1/flows/summary?window=0')).status).toBe(400);
    expect(JSON.parse((await get('/v1/events/stats')).body)).toEqual({
      byClass: {
        drop: { emitted: 3, suppressed: 1, lost: 0, received: 3 },
        flow: { emitted: 0, suppressed: 0, lost: 0, received: 0 },
        trace: { emitted: 0, suppressed: 0, lost: 0, received: 0 },
      },
      unknown: 0,
    });
  });
});
