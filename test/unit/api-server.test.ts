// The agent's API server on a real unix socket: timeouts never cut off a request being served,
// idle and half-sent connections go, and the connection bound makes room for newcomers.
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ApiServer } from '../../src/agent/server';
import { silentLogger } from '../../src/log';
import { cleanupAll, tempDir } from '../support/netns';

afterAll(cleanupAll);

const LIMITS = { maxConnections: 8, headersTimeoutMs: 300, requestTimeoutMs: 600, keepAliveTimeoutMs: 200 };

async function server(): Promise<{ api: ApiServer; socket: string }> {
  const socket = path.join(tempDir('kelp-api-'), 'run', 'kelp.sock');
  const api = new ApiServer(silentLogger, LIMITS);
  api.route('GET', '/slow', async () => {
    await new Promise((r) => setTimeout(r, 1000));
    return { status: 200, body: { done: true } };
  });
  api.route('GET', '/fast', () => ({ status: 200, body: { done: true } }));
  api.route('GET', '/big', () => ({ status: 200, body: { pad: 'x'.repeat(4 << 20) } }));
  await api.listen(socket);
  return { api, socket };
}

function get(socket: string, p: string, agent?: http.Agent): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get({ socketPath: socket, path: p, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    }).on('error', reject);
  });
}

/** The client sees the agent close the connection (read on, or Node never reports the EOF). */
function closedWithin(s: net.Socket, ms: number): Promise<boolean> {
  s.resume();
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    s.once('close', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

describe('API server limits', () => {
  it('serves a request that takes longer than every timeout', async () => {
    const { api, socket } = await server();
    try {
      expect(await get(socket, '/slow')).toBe(200);
      // Twice on one kept-alive connection: the timer Node re-arms after a response is honoured too.
      const agent = new http.Agent({ keepAlive: true });
      expect(await get(socket, '/slow', agent)).toBe(200);
      expect(await get(socket, '/slow', agent)).toBe(200);
      agent.destroy();
    } finally {
      await api.close();
    }
  });

  it('closes a silent connection, a half-sent request and an idle kept-alive one', async () => {
    const { api, socket } = await server();
    try {
      const silent = net.connect(socket).on('error', () => undefined);
      const half = net.connect(socket).on('error', () => undefined);
      half.on('connect', () => half.write('GET /fast HTTP/1.1\r\nhost: k\r\n'));
      expect(await Promise.all([closedWithin(silent, 3000), closedWithin(half, 3000)])).toEqual([true, true]);
      const agent = new http.Agent({ keepAlive: true });
      expect(await get(socket, '/fast', agent)).toBe(200);
      await new Promise((r) => setTimeout(r, 1500));
      expect(api.connections).toBe(0);
      agent.destroy();
    } finally {
      await api.close();
    }
  });

  it('at the bound, closes the oldest unserved connection so a new request is served', async () => {
    const { api, socket } = await server();
    try {
      const idle: net.Socket[] = [];
      for (let i = 0; i < 20; i++) {
        const s = net.connect(socket).on('error', () => undefined);
        await new Promise((r) => s.once('connect', r));
        idle.push(s);
      }
      await new Promise((r) => setTimeout(r, 50));
      expect(api.connections).toBeLessThanOrEqual(LIMITS.maxConnections);
      expect(await get(socket, '/fast')).toBe(200);
      for (const s of idle) s.destroy();
    } finally {
      await api.close();
    }
  });

  it('answers every request pipelined on one connection, a large answer first included', async () => {
    const { api, socket } = await server();
    try {
      const c = net.connect(socket);
      let got = '';
      c.setEncoding('latin1');
      c.on('data', (d: string) => (got += d));
      await new Promise((r) => c.once('connect', r));
      c.write('GET /big HTTP/1.1\r\nhost: k\r\n\r\nGET /fast HTTP/1.1\r\nhost: k\r\n\r\nGET /fast HTTP/1.1\r\nhost: k\r\n\r\n');
      const deadline = Date.now() + 5000;
      while ((got.match(/HTTP\/1\.1 200/g) ?? []).length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      c.destroy();
      expect((got.match(/HTTP\/1\.1 200/g) ?? []).length).toBe(3);
      expect(got.endsWith('{"done":true}\n')).toBe(true);
    } finally {
      await api.close();
    }
  });
});
