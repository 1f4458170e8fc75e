// The agent's metrics listener: plain HTTP on a TCP address (--metrics-address), apart from the
// CNI/API unix socket, so a scraper never gets near the socket that can run CNI DEL. Read-only:
// GET and HEAD only, nothing here changes state. /metrics is the Prometheus exposition of the
// registry (collected on scrape); other read-only pages (the node page) mount on it with route().
import http from 'node:http';
import net from 'node:net';
import type { Registry } from 'prom-client';
import type { Logger } from '../log';

/**
 * A handler of a mounted path. It owns the response (a page may stream, e.g. server-sent
 * events); a thrown error or rejected promise becomes a 500 when nothing was sent yet.
 */
export type MetricsRouteHandler = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => void | Promise<void>;

export interface ListenAddress {
  host: string;
  port: number;
}

/**
 * `host:port`, `[v6]:port` or `:port` (every address); '' means off (undefined). Throws with the
 * flag's name and the value at fault.
 */
export function parseMetricsAddress(value: string, flag = '--metrics-address'): ListenAddress | undefined {
  if (value === '') return undefined;
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d+)$/.exec(value);
  if (!m) throw new Error(`${flag}: expected HOST:PORT, [IPv6]:PORT or :PORT (empty: off), got ${JSON.stringify(value)}`);
  const host = m[1] ?? (m[2] || '0.0.0.0');
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`${flag}: port must be in 0..65535, got ${m[3]}`);
  if (m[1] !== undefined && net.isIPv6(host) === false) throw new Error(`${flag}: ${JSON.stringify(host)} in brackets is not an IPv6 address`);
  if (m[1] === undefined && host !== 'localhost' && !net.isIPv4(host)) throw new Error(`${flag}: host must be an IPv4 address, localhost or [IPv6], got ${JSON.stringify(host)}`);
  return { host, port };
}

export function formatAddress(a: ListenAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

export class MetricsServer {
  private readonly routes = new Map<string, MetricsRouteHandler>();
  private server?: http.Server;

  constructor(
    private readonly registry: Registry,
    private readonly log: Logger,
  ) {
    this.routes.set('/metrics', async (_req, res) => {
      const text = await this.registry.metrics();
      res.writeHead(200, { 'content-type': this.registry.contentType, 'content-length': String(Buffer.byteLength(text)) });
      res.end(text);
    });
  }

  /**
   * Mounts a read-only page at `path` (exact match on the URL's path; one ending in '/' matches
   * everything under it too). Routes may be mounted before or after listen().
   */
  route(path: string, handler: MetricsRouteHandler): this {
    if (!path.startsWith('/')) throw new Error(`metrics route ${JSON.stringify(path)}: must start with '/'`);
    if (this.routes.has(path)) throw new Error(`metrics route ${path} is mounted already`);
    this.routes.set(path, handler);
    return this;
  }

  /** The bound address (the real port when asked for port 0); undefined before listen(). */
  get address(): ListenAddress | undefined {
    const a = this.server?.address();
    return a && typeof a === 'object' ? { host: a.address, port: a.port } : undefined;
  }

  async listen(at: ListenAddress): Promise<ListenAddress> {
    const server = http.createServer({ headersTimeout: 10_000, requestTimeout: 15_000 }, (req, res) => void this.dispatch(req, res));
    server.keepAliveTimeout = 5_000;
    // Scrapers and browsers are few; a flood of idle connections must not eat the agent's descriptors.
    server.maxConnections = 64;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`--metrics-address ${formatAddress(at)}: ${e.code ?? e.message}`)));
      server.listen(at.port, at.host, () => resolve());
    });
    server.removeAllListeners('error');
    server.on('error', (err) => this.log.warn({ err }, 'metrics listener error'));
    this.server = server;
    return this.address!;
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private handlerFor(pathname: string): MetricsRouteHandler | undefined {
    const exact = this.routes.get(pathname);
    if (exact) return exact;
    let best: string | undefined;
    for (const p of this.routes.keys()) if (p.endsWith('/') && pathname.startsWith(p) && (!best || p.length > best.length)) best = p;
    return best ? this.routes.get(best) : undefined;
  }

  private async dispatch(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://kelp');
    const plain = (status: number, text: string, extra: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(Buffer.byteLength(text)), ...extra });
      res.end(text);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return plain(405, `${req.method} not allowed: the metrics address is read-only\n`, { allow: 'GET, HEAD' });
    const handler = this.handlerFor(url.pathname);
    if (!handler) return plain(404, `no such page: ${url.pathname} (pages: ${[...this.routes.keys()].sort().join(', ')})\n`);
    try {
      await handler(req, res, url);
    } catch (err) {
      this.log.error({ err, path: url.pathname }, 'metrics page failed');
      if (!res.headersSent) plain(500, `${(err as Error).message}\n`);
      else res.destroy();
    }
  }
}
