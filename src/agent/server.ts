// The agent's API: HTTP/1.x on a unix socket that only root may open (mode 0600).
// kelp-cni posts CNI requests here; the CLI reads status and applies manifests.
// Whoever can connect can run CNI DEL on any pod, so the socket is never connectable by anyone
// else, not even for an instant: it is bound under umask 0177 in a run directory that only
// root may write. Connections are bounded and time out, so a flood of idle or half-sent ones
// can neither exhaust the agent's file descriptors nor crowd out kelp-cni.
import http from 'node:http';
import net from 'node:net';
import { chmodSync, lstatSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { RepeatedLog, type Logger } from '../log';

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
  /**
   * A streamed response (e.g. GET /v1/flows?follow): called once the headers are sent, instead
   * of sending `body`; the response stays open until the stream ends it or the client leaves.
   */
  stream?: (out: ApiStream) => void;
}

/** The open end of a streamed response. */
export interface ApiStream {
  /** Queues a chunk; false when the client is not keeping up (what it has not read yet is buffered). */
  write(chunk: string): boolean;
  /** Bytes written and not yet taken by the client. */
  readonly pending: number;
  end(): void;
  /** Runs once the response is over, whoever ended it. */
  onClose(fn: () => void): void;
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

export interface ServerLimits {
  /** Open connections at most; past it the oldest one not being served is closed. */
  maxConnections: number;
  /** A request's headers must arrive within this (ms). */
  headersTimeoutMs: number;
  /** A whole request must arrive within this (ms); kelp-cni sends it in one go. */
  requestTimeoutMs: number;
  /** An idle kept-alive connection is closed after this (ms). */
  keepAliveTimeoutMs: number;
}

export const DEFAULT_LIMITS: ServerLimits = { maxConnections: 512, headersTimeoutMs: 10_000, requestTimeoutMs: 15_000, keepAliveTimeoutMs: 5_000 };

/**
 * Refuses a run directory others could use to swap the socket for their own: it must be a real
 * directory (not a symlink) owned by root and writable by no one else. Creates it (0700) when
 * missing.
 */
export function checkRunDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new Error(`run directory ${dir} is not a directory (a symlink?): refusing to put the API socket there`);
  const uid = process.getuid?.() ?? 0;
  if (st.uid !== uid) throw new Error(`run directory ${dir} belongs to uid ${st.uid}, not to the agent (uid ${uid}): refusing to put the API socket there`);
  if (st.mode & 0o022) {
    throw new Error(
      `run directory ${dir} is writable by ${st.mode & 0o002 ? 'everyone' : 'its group'} (mode ${(st.mode & 0o7777).toString(8)}): ` +
        `others could replace the API socket; chmod go-w ${dir} or use another --run-dir`,
    );
  }
}

/** What the server knows of a connection: is a request of it being served right now? */
interface ConnState {
  serving: number;
  since: number;
  requests: number;
}

export class ApiServer {
  private readonly routes: Array<{ method: string; re: RegExp; names: string[]; handler: Handler }> = [];
  private server?: http.Server;
  private readonly conns = new Map<net.Socket, ConnState>();
  private readonly aborted: RepeatedLog;
  private readonly evicted: RepeatedLog;
  private readonly malformed: RepeatedLog;

  constructor(
    private readonly log: Logger,
    private readonly limits: ServerLimits = DEFAULT_LIMITS,
  ) {
    this.aborted = new RepeatedLog(log, 'warn', 'API connections closed by the client before their request was complete');
    this.evicted = new RepeatedLog(log, 'warn', `API connections over the limit of ${limits.maxConnections}: oldest idle ones closed`);
    this.malformed = new RepeatedLog(log, 'warn', 'malformed API requests refused');
  }

  /** Open connections (for tests and status). */
  get connections(): number {
    return this.conns.size;
  }

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
    checkRunDir(path.dirname(socketPath));
    rmSync(socketPath, { force: true });
    const l = this.limits;
    const server = http.createServer(
      { headersTimeout: l.headersTimeoutMs, requestTimeout: l.requestTimeoutMs, connectionsCheckingInterval: Math.min(1000, l.headersTimeoutMs) },
      (req, res) => void this.dispatch(req, res),
    );
    server.keepAliveTimeout = l.keepAliveTimeoutMs;
    server.on('connection', (sock: net.Socket) => this.admit(sock));
    // With a listener here, Node leaves timed-out sockets to admit()'s handler instead of
    // destroying them, which would cut a client off while its request is being served.
    server.on('timeout', () => undefined);
    server.on('clientError', (err: NodeJS.ErrnoException, sock: net.Socket) => {
      // Timeouts and resets of clients that never finished a request: one log line per burst.
      if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ECONNRESET' || !sock.writable) this.aborted.hit();
      else this.malformed.hit();
      if (sock.writable) sock.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      sock.destroy();
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // bind(2) happens inside listen(), synchronously: under umask 0177 the socket is born
      // 0600, so there is no moment at which another user could connect.
      const umask = process.umask(0o177);
      try {
        server.listen(socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      } finally {
        process.umask(umask);
      }
    });
    chmodSync(socketPath, 0o600);
  }

  /** Tracks a new connection; at the limit, closes the oldest one that is not being served. */
  private admit(sock: net.Socket): void {
    if (this.conns.size >= this.limits.maxConnections) {
      let victim: net.Socket | undefined;
      let oldest = Infinity;
      for (const [s, st] of this.conns) {
        if (st.serving === 0 && st.since < oldest) {
          oldest = st.since;
          victim = s;
        }
      }
      this.evicted.hit();
      // Every connection is in the middle of being served: the newcomer waits its turn by
      // being refused (kelp-cni reports the agent unreachable; runtimes retry).
      (victim ?? sock).destroy();
      if (!victim) return;
    }
    const st: ConnState = { serving: 0, since: Date.now(), requests: 0 };
    this.conns.set(sock, st);
    sock.once('close', () => this.conns.delete(sock));
    // Node's headersTimeout only runs once a request has begun: a connection that sends
    // nothing would stay for ever. Node re-arms this timer itself (keepAliveTimeout after a
    // response, none while a request is in the works).
    sock.setTimeout(this.limits.headersTimeoutMs);
    sock.on('timeout', () => {
      if (st.serving > 0) return; // a long CNI operation: the client is waiting for us
      if (st.requests === 0) this.aborted.hit();
      sock.destroy();
    });
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
    for (const r of [this.aborted, this.evicted, this.malformed]) r.flush();
  }

  private async dispatch(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://kelp');
    let status = 500;
    let headers: Record<string, string> = {};
    let payload: Buffer;
    let body: Buffer;
    try {
      body = await readBody(req);
    } catch (e) {
      if (e instanceof HttpError) {
        this.respond(res, e.status, { 'content-type': 'application/json' }, Buffer.from(JSON.stringify({ error: e.message }) + '\n'));
      } else {
        // The client went away mid-request: nothing to answer, nothing worth a stack trace.
        this.aborted.hit();
        res.destroy();
      }
      return;
    }
    const conn = this.conns.get(req.socket);
    if (conn) conn.serving++;
    let stream: ApiResponse['stream'];
    try {
      const route = this.routes.find((r) => r.method === req.method && r.re.test(url.pathname));
      if (!route) throw new HttpError(404, `no such endpoint: ${req.method} ${url.pathname}`);
      const m = route.re.exec(url.pathname)!;
      const params: Record<string, string> = {};
      route.names.forEach((n, i) => (params[n] = decodeURIComponent(m[i + 1])));
      const out = await route.handler({ method: req.method ?? 'GET', path: url.pathname, params, query: url.searchParams, body });
      status = out.status;
      headers = out.headers ?? {};
      stream = out.stream;
      if (stream) payload = Buffer.alloc(0);
      else if (Buffer.isBuffer(out.body)) payload = out.body;
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
    } finally {
      // A stream is being served until it ends: the idle timeout must not cut it.
      if (conn && !stream) {
        conn.serving--;
        conn.requests++;
        conn.since = Date.now();
      }
    }
    if (stream) this.startStream(res, status, headers, stream, conn);
    else this.respond(res, status, headers, payload);
  }

  private startStream(res: http.ServerResponse, status: number, headers: Record<string, string>, stream: NonNullable<ApiResponse['stream']>, conn?: ConnState): void {
    let closed = false;
    const closers: Array<() => void> = [];
    res.once('close', () => {
      closed = true;
      if (conn) {
        conn.serving--;
        conn.requests++;
        conn.since = Date.now();
      }
      for (const fn of closers) fn();
    });
    if (res.destroyed) {
      this.aborted.hit();
      return;
    }
    res.writeHead(status, headers);
    // Headers out now: a follower with nothing matching yet still sees the response begin.
    res.flushHeaders();
    stream({
      write: (chunk) => (closed ? false : res.write(chunk)),
      get pending() {
        return res.writableLength;
      },
      end: () => {
        if (!closed) res.end();
      },
      onClose: (fn) => {
        if (closed) fn();
        else closers.push(fn);
      },
    });
  }

  private respond(res: http.ServerResponse, status: number, headers: Record<string, string>, payload: Buffer): void {
    // Only a destroyed response is lost. A response queued behind an earlier one on the same
    // kept-alive connection has no socket yet (res.socket is null): Node sends it in turn.
    if (res.destroyed) {
      this.aborted.hit();
      return;
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
    // 'aborted' comes without 'error' on some paths: a request that will never end.
    req.on('close', () => {
      if (!req.complete) reject(new Error('request aborted'));
    });
  });
}
