// The live node page (issue 14): one read-only page on the metrics address that draws this node's
// pods, services and policies and the flows between them as they arrive. Three routes:
//   GET /           the page (HTML, its script and style inline: no external resource, works offline);
//   GET /api/node   this node's pods, services, policies and the event accounting (JSON);
//   GET /api/flows  server-sent events: the last ?last=N stored records (default 200), then every
//                   new one, each `event: flow` with a FlowRecord as its data.
// Structural types only: the agent (src/agent/routes/page.ts) hands in its views and flow store.
import type http from 'node:http';
import type { EventStats, FlowRecord } from '../datapath/flow-types';
import type { FlowStore } from './store';
import { NODE_PAGE_HTML } from './page-asset';

export interface NodePagePod {
  namespace: string | null;
  name: string;
  ip?: string;
  state: string;
}

export interface NodePageService {
  /** `namespace/name`. */
  service: string;
  kind: string;
  address: string;
  port: number;
  protocol: string;
  backends: Array<{ address: string; port: number }>;
}

export interface NodePagePolicy {
  kind: string;
  name: string;
  tier: string;
  audit: boolean;
  localPods: number;
}

/** What GET /api/node answers. */
export interface NodePageSnapshot {
  node: string;
  pods: NodePagePod[];
  services: NodePageService[];
  policies: NodePagePolicy[];
  /** undefined while the agent does not read events yet. */
  stats?: EventStats;
}

export type PageHandler = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => void | Promise<void>;

/** The metrics server's mount point (src/metrics/server.ts MetricsServer.route). */
export interface PageRouter {
  route(path: string, handler: PageHandler): unknown;
}

export interface NodePageDeps {
  snapshot(): NodePageSnapshot;
  /** The flow store, once the agent reads events. */
  store(): FlowStore | undefined;
}

export const PAGE_BACKLOG = 200;
/** A browser this far behind (bytes it has not read) misses records until it catches up. */
const MAX_PENDING = 1 << 20;
/** Proxies and browsers close a silent stream after a while: a comment line keeps it open. */
const HEARTBEAT_MS = 15_000;

/** Parses ?last=N of /api/flows; throws naming the parameter. */
export function parseLast(raw: string | null, capacity: number): number {
  if (raw === null) return Math.min(PAGE_BACKLOG, capacity);
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n > capacity) throw new RangeError(`last: ${JSON.stringify(raw)} is not an integer 0..${capacity}`);
  return n;
}

/** One server-sent event; JSON has no raw newline, so one data line carries it. */
export function sseEvent(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

export function mountNodePage(server: PageRouter, deps: NodePageDeps): void {
  const page = Buffer.from(NODE_PAGE_HTML);
  const head = (req: http.IncomingMessage) => req.method === 'HEAD';

  server.route('/', (req, res, url) => {
    // '/' is also the metrics server's fallback for every path under it: only the page itself here.
    if (url.pathname !== '/') return text(res, 404, `no such page: ${url.pathname} (the node page is /)\n`);
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-length': String(page.length),
      // Everything is inline: the page may load nothing from anywhere, even by accident.
      'content-security-policy': "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
      'cache-control': 'no-store',
    });
    res.end(head(req) ? undefined : page);
  });

  server.route('/api/node', (req, res) => {
    const body = Buffer.from(JSON.stringify(deps.snapshot()) + '\n');
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(body.length), 'cache-control': 'no-store' });
    res.end(head(req) ? undefined : body);
  });

  server.route('/api/flows', (req, res, url) => {
    const store = deps.store();
    if (!store) return text(res, 503, 'flow events are not being read yet\n');
    let last: number;
    try {
      last = parseLast(url.searchParams.get('last'), store.capacity);
    } catch (e) {
      return text(res, 400, `${(e as Error).message}\n`);
    }
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' });
    if (head(req)) return void res.end();
    streamFlows(store, res, last);
  });
}

function streamFlows(store: FlowStore, res: http.ServerResponse, last: number): void {
  let missed = 0;
  const send = (r: FlowRecord) => {
    // A browser that does not keep up misses records (counted and told), never grows the agent.
    if (res.writableLength > MAX_PENDING) {
      missed++;
      return;
    }
    if (missed) {
      res.write(sseEvent('missed', missed));
      missed = 0;
    }
    res.write(sseEvent('flow', r));
  };
  // The browser retries 2 s after a cut; the backlog it gets then may repeat records it has.
  res.write('retry: 2000\n\n');
  for (const r of last > 0 ? store.last(last) : []) send(r);
  const unsubscribe = store.subscribe(send);
  const beat = setInterval(() => res.write(': keep-alive\n\n'), HEARTBEAT_MS);
  beat.unref();
  res.once('close', () => {
    clearInterval(beat);
    unsubscribe();
  });
}

function text(res: http.ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(Buffer.byteLength(body)) });
  res.end(body);
}
