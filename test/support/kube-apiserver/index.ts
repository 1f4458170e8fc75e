// A Kubernetes API server for tests, in-process: start one, point kubectl or client-node at
// its kubeconfig, drive objects directly through `objects`, and break it on purpose through
// `faults` (dropped watches, failing requests, slow streams, compaction) or by taking it
// down and up on the same port with its store kept.
//
//   const api = await startKubeApiServer();
//   execFileSync('kubectl', ['--kubeconfig', api.kubeconfigPath, 'get', 'pods']);
//   await api.stop();
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { NAMESPACES, Obj, ResourceType } from './resources';
import { ApiHandler, RequestRecord } from './server';
import { makeServingCert } from './tls';

export type { Obj } from './resources';
export type { RequestRecord } from './server';

export interface StartOptions {
  /** HTTPS with a CA made for this server (default); false serves plain HTTP. */
  tls?: boolean;
  /**
   * The bearer token required on every request; false: no authentication. Default: a random
   * one with TLS, none over plain HTTP (kubectl sends no bearer token over plain HTTP).
   */
  token?: string | false;
  /** Changes kept for watches to replay (default 1000); older resourceVersions get 410. */
  historySize?: number;
  /** How often a watch with allowWatchBookmarks gets a BOOKMARK (default 1000 ms; a real server: ~1 min). */
  bookmarkIntervalMs?: number;
  /** Serve apidiscovery.k8s.io/v2 to clients that ask (default); false makes kubectl use legacy discovery. */
  aggregatedDiscovery?: boolean;
  /** How long a deleted namespace stays Terminating before it and its contents go (default 1000 ms). */
  namespaceTerminationMs?: number;
  /** Reserve the port but do not listen until `up()`. */
  down?: boolean;
  /** Listen on this port of 127.0.0.1 (default: an ephemeral one). */
  port?: number;
  /** Namespaces present at start (default: default, kube-system, kube-public, kube-node-lease). */
  namespaces?: string[];
}

/** Names an object for the helpers: its apiVersion and kind choose the type. */
export interface ObjectRef {
  apiVersion: string;
  kind: string;
  namespace?: string;
  name: string;
}

export interface Faults {
  /** Ends every open watch now: cleanly (the client sees the stream end) or, with `reset`, by resetting the connection. Returns how many. */
  dropWatches(opts?: { reset?: boolean }): number;
  /** The next `n` requests (those `match` accepts) are answered with `code` (default 500) and a Status. */
  failNext(n: number, opts?: { code?: number; match?: (r: { method: string; path: string }) => boolean }): void;
  /** Every watch event waits this long before it is written (0: off). */
  slowWatches(delayMs: number): void;
  /** Forgets the change history: a watch from any resourceVersion seen so far gets 410 Expired. */
  compact(): void;
}

export interface ObjectHelpers {
  /** Creates as the API would, except that a given status is kept (the test plays kubelet and controllers). */
  create(obj: Obj): Obj;
  /** Replaces the object, status included; without metadata.resourceVersion the update is unconditional. */
  update(obj: Obj): Obj;
  /** Replaces only the status. */
  updateStatus(obj: Obj): Obj;
  /** A JSON merge patch, status included. */
  patch(ref: ObjectRef, patch: Obj): Obj;
  delete(ref: ObjectRef): Obj;
  get(ref: ObjectRef): Obj | undefined;
  list(apiVersion: string, kind: string, namespace?: string): Obj[];
  /** The store's current resourceVersion. */
  resourceVersion(): string;
}

export interface TestKubeApiServer {
  /** `https://127.0.0.1:<port>` (or http://). */
  readonly url: string;
  readonly port: number;
  /** The required bearer token, or undefined when authentication is off. */
  readonly token: string | undefined;
  /** PEM of the CA that signed the serving certificate (TLS only). */
  readonly caPem: string | undefined;
  /** A kubeconfig with the server, its CA and the token; its context's namespace is `default`. */
  readonly kubeconfigPath: string;
  /** A temporary directory removed by `stop()`; tests may put files in it. */
  readonly dir: string;
  readonly isUp: boolean;
  readonly faults: Faults;
  readonly objects: ObjectHelpers;
  /** Every request so far (the last 5000), in arrival order. */
  readonly requests: RequestRecord[];
  /** Watches streaming now (of this URL path only, when given). */
  openWatches(path?: string): number;
  /** Writes another kubeconfig for this server (e.g. `{ token: null }` for none, or a wrong one). */
  writeKubeconfig(file: string, opts?: { token?: string | null }): string;
  /** Stops listening and closes every connection; the store is kept. */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  restart(): Promise<void>;
  /** Down for good, temporary files removed. Safe to call twice and after a failed start. */
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export async function startKubeApiServer(opts: StartOptions = {}): Promise<TestKubeApiServer> {
  const dir = mkdtempSync(path.join(tmpdir(), 'kelp-kube-'));
  try {
    return await start(dir, opts);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

async function start(dir: string, opts: StartOptions): Promise<TestKubeApiServer> {
  const tls = opts.tls !== false;
  const token = opts.token === false || (!tls && opts.token === undefined) ? undefined : (opts.token ?? randomBytes(16).toString('hex'));
  const handler = new ApiHandler({
    token,
    historySize: opts.historySize ?? 1000,
    bookmarkIntervalMs: opts.bookmarkIntervalMs ?? 1000,
    aggregatedDiscovery: opts.aggregatedDiscovery !== false,
    namespaceTerminationMs: opts.namespaceTerminationMs ?? 1000,
  });
  for (const ns of opts.namespaces ?? ['default', 'kube-system', 'kube-public', 'kube-node-lease']) {
    handler.registry.create(NAMESPACES, undefined, { metadata: { name: ns } });
  }
  const cert = tls ? makeServingCert(dir) : undefined;
  const port = opts.port ?? (await freePort());
  const url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  handler.serverAddress = `127.0.0.1:${port}`;

  let server: http.Server | undefined;
  const sockets = new Set<net.Socket>();

  const up = async () => {
    if (server) return;
    const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => void handler.handle(req, res);
    // No request timeout: Node's default (300 s) is meant for slow uploads, and watches are long.
    const serverOpts = { requestTimeout: 0 };
    const s = cert
      ? https.createServer({ ...serverOpts, key: cert.keyPem, cert: cert.certPem }, onRequest)
      : http.createServer(serverOpts, onRequest);
    s.on('connection', (sock: net.Socket) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
    });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => {
        s.off('error', reject);
        resolve();
      });
    });
    server = s;
  };

  const down = async () => {
    const s = server;
    if (!s) return;
    server = undefined;
    const closed = new Promise<void>((resolve) => s.close(() => resolve()));
    for (const sock of sockets) sock.destroy();
    await closed;
  };

  const typeOf = (apiVersion: string, kind: string): ResourceType => {
    const t = handler.types.byKind(apiVersion, kind);
    if (!t) throw new Error(`kube-apiserver: no served type ${apiVersion} ${kind}`);
    return t;
  };
  const nsOf = (t: ResourceType, ns: string | undefined) => (t.namespaced ? (ns ?? 'default') : undefined);
  const reg = handler.registry;

  const objects: ObjectHelpers = {
    create: (obj) => {
      const t = typeOf(obj.apiVersion, obj.kind);
      return reg.create(t, nsOf(t, obj.metadata?.namespace), obj, { keepStatus: true });
    },
    update: (obj) => {
      const t = typeOf(obj.apiVersion, obj.kind);
      const ns = nsOf(t, obj.metadata?.namespace);
      const current = reg.get(t, ns, obj.metadata.name);
      const body = { ...obj, metadata: { resourceVersion: current.metadata.resourceVersion, ...obj.metadata } };
      return reg.update(t, ns, obj.metadata.name, body, { keepStatus: true });
    },
    updateStatus: (obj) => {
      const t = typeOf(obj.apiVersion, obj.kind);
      const ns = nsOf(t, obj.metadata?.namespace);
      const current = reg.get(t, ns, obj.metadata.name);
      const body = { ...current, status: obj.status };
      return reg.update(t, ns, obj.metadata.name, body, { subresource: t.statusSubresource ? 'status' : undefined, keepStatus: true });
    },
    patch: (ref, patch) => {
      const t = typeOf(ref.apiVersion, ref.kind);
      return reg.patch(t, nsOf(t, ref.namespace), ref.name, 'application/merge-patch+json', patch, { keepStatus: true });
    },
    delete: (ref) => {
      const t = typeOf(ref.apiVersion, ref.kind);
      return reg.delete(t, nsOf(t, ref.namespace), ref.name);
    },
    get: (ref) => {
      const t = typeOf(ref.apiVersion, ref.kind);
      const o = handler.store.get(t.bucket, nsOf(t, ref.namespace), ref.name);
      return o && reg.present(t, o);
    },
    list: (apiVersion, kind, namespace) => {
      const t = typeOf(apiVersion, kind);
      return reg.list(t, namespace).items;
    },
    resourceVersion: () => String(handler.store.currentRv()),
  };

  const faults: Faults = {
    dropWatches: ({ reset = false } = {}) => {
      const open = [...handler.watches];
      for (const w of open) w.end(reset);
      return open.length;
    },
    failNext: (n, { code = 500, match } = {}) => handler.failNext(n, code, match),
    slowWatches: (delayMs) => {
      handler.eventDelayMs = delayMs;
    },
    compact: () => handler.store.compact(),
  };

  const writeKubeconfig = (file: string, o: { token?: string | null } = {}) => {
    const userToken = o.token === null ? undefined : (o.token ?? token);
    const config = {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [
        {
          name: 'kelp-test',
          // client-node 1.4 refuses an http:// server unless told to skip TLS verification.
          cluster: cert
            ? { server: url, 'certificate-authority-data': Buffer.from(cert.caPem).toString('base64') }
            : { server: url, 'insecure-skip-tls-verify': true },
        },
      ],
      users: [{ name: 'kelp-test', user: userToken ? { token: userToken } : {} }],
      contexts: [{ name: 'kelp-test', context: { cluster: 'kelp-test', user: 'kelp-test', namespace: 'default' } }],
      'current-context': 'kelp-test',
      preferences: {},
    };
    writeFileSync(file, stringify(config), { mode: 0o600 });
    return file;
  };
  const kubeconfigPath = writeKubeconfig(path.join(dir, 'kubeconfig'));

  let stopped = false;
  if (!opts.down) await up();

  return {
    url,
    port,
    token,
    caPem: cert?.caPem,
    kubeconfigPath,
    dir,
    get isUp() {
      return server !== undefined;
    },
    faults,
    objects,
    requests: handler.requests,
    openWatches: (p) => [...handler.watches].filter((w) => p === undefined || w.req.path === p).length,
    writeKubeconfig,
    down,
    up: async () => {
      if (stopped) throw new Error('kube-apiserver: up() after stop()');
      await up();
    },
    restart: async () => {
      await down();
      await up();
    },
    stop: async () => {
      stopped = true;
      handler.registry.dispose();
      await down();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

