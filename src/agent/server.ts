// The agent's API: HTTP/1.x on a unix socket that only root may open (mode 0600).
// kelp-cni posts CNI requests here; the CLI reads status and applies manifests.
import http from 'node:http';
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log';

export interface ApiRequest {
  method: string;
  path: string;
  params: Record<string, string>;
  query: URLSearchParams;
  body: Buffer;
}

export interface ApiResponse {
  status: number;
  headers?: Record<string, string>;
  body?: unknown;
}

export type Handler = (req: ApiRequest) => Promise<ApiResponse> | ApiResponse;

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

// kelp-cni forwards up to 16 MiB of stdin plus the CNI environment: leave room for the latter.
const MAX_BODY = (16 << 20) + (1 << 20);

export class ApiServer {
  private readonly routes: Array<{ method: string; re: RegExp; names: string[]; handler: Handler }> = [];
  private server?: http.Server;

  constructor(private readonly log: Logger) {}

  route(method: string, pattern: string, handler: Handler): this {
    const names: string[] = [];
    const re = new RegExp(
      '^' +
        pattern.replace(/:([a-zA-Z]+)/g, (_m, n: string) => {
          names.push(n);
          return '([^/]+)';
        }) +
        '$',
    );
    this.routes.push({ method, re, names, handler });
    return this;
  }

  async listen(socketPath: string): Promise<void> {
    mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o700 });
    rmSync(socketPath, { force: true });
    const server = http.createServer((req, res) => void this.dispatch(req, res));
    server.keepAliveTimeout = 5000;
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // umask-independent: the socket is created, then narrowed before anyone is told it exists.
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    chmodSync(socketPath, 0o600);
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private async dispatch(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://kelp');
    let status = 500;
    let headers: Record<string, string> = {};
    let payload: Buffer;
    try {
      const body = await readBody(req);
      const route = this.routes.find((r) => r.method === req.method && r.re.test(url.pathname));
      if (!route) throw new HttpError(404, `no such endpoint: ${req.method} ${url.pathname}`);
      const m = route.re.exec(url.pathname)!;
      const params: Record<string, string> = {};
      route.names.forEach((n, i) => (params[n] = decodeURIComponent(m[i + 1])));
      const out = await route.handler({ method: req.method ?? 'GET', path: url.pathname, params, query: url.searchParams, body });
      status = out.status;
      headers = out.headers ?? {};
      if (Buffer.isBuffer(out.body)) payload = out.body;
      else if (typeof out.body === 'string') payload = Buffer.from(out.body);
      else {
        payload = Buffer.from(JSON.stringify(out.body ?? null, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
        headers['content-type'] ??= 'application/json';
      }
    } catch (e) {
      const err = e as Error;
      status = e instanceof HttpError ? e.status : 500;
      if (status >= 500) this.log.error({ err, path: url.pathname }, 'api request failed');
      payload = Buffer.from(JSON.stringify({ error: err.message }) + '\n');
      headers = { 'content-type': 'application/json' };
    }
    res.writeHead(status, { ...headers, 'content-length': String(payload.length) });
    res.end(payload);
  }
}

function readBody(req: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new HttpError(413, 'request body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}
