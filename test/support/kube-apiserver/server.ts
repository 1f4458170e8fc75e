// The HTTP face of the test API server: authentication, fault injection, discovery, and the
// REST paths (/api/v1/..., /apis/<group>/<version>/..., [namespaces/<ns>/]<resource>[/<name>
// [/status]], the legacy /watch/ prefix) mapped onto the registry and watch streams.
import type http from 'node:http';
import {
  aggregated,
  aggregatedContentType,
  aggregatedVersion,
  apiGroup,
  apiGroupList,
  apiResourceList,
  apiVersions,
} from './discovery';
import { openApiV3Doc, openApiV3Root } from './openapi';
import type { Json } from './patch';
import { decodeProtobuf, PROTOBUF } from './protobuf';
import { DeleteOptions, ListOptions, PATCH_TYPES, PatchType, Registry } from './registry';
import { apiVersionOf, Obj, ResourceType, ResourceTypes } from './resources';
import { ApiError, errors, Status } from './status';
import { ObjectStore } from './store';
import { IncludeObject, toTable, wantsTable } from './table';
import { WatchStream } from './watch';

/**
 * What /version answers. The machine's kubectl is Google Cloud SDK's dispatcher, which asks
 * /version first and runs the kubectl release nearest the server's: 1.32 for this answer.
 */
export const SERVER_VERSION = {
  major: '1',
  minor: '32',
  gitVersion: 'v1.32.0',
  gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean',
  buildDate: '2024-12-11T00:00:00Z',
  goVersion: 'go1.23.3',
  compiler: 'gc',
  platform: 'linux/amd64',
};

export interface RequestRecord {
  method: string;
  path: string;
  /** The query string, `?` included ('' when none). */
  query: string;
  /** 0 until answered; a watch's is 200 once its stream starts. */
  status: number;
  watch: boolean;
}

export interface HandlerOptions {
  /** Required bearer token; `undefined` accepts every request. */
  token?: string;
  historySize: number;
  bookmarkIntervalMs: number;
  /** Answer kubectl's aggregated discovery request; false answers only the legacy documents. */
  aggregatedDiscovery: boolean;
  namespaceTerminationMs: number;
}

interface FaultRule {
  remaining: number;
  code: number;
  match?: (r: { method: string; path: string }) => boolean;
}

const MAX_BODY = 3 * 1024 * 1024;
const MAX_RECORDS = 5000;

function send(res: http.ServerResponse, code: number, body: unknown, contentType = 'application/json'): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': contentType, 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-cache, private' });
  res.end(text);
}

function sendStatus(res: http.ServerResponse, status: Status): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  send(res, status.code, status);
}

async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) throw errors.badRequest('request entity too large');
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

function parseJson(body: Buffer): Json {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw errors.badRequest(`couldn't get version/kind; json parse error: ${(e as Error).message}`);
  }
}

function mediaType(header: string | undefined): string {
  return (header ?? '').split(';')[0].trim().toLowerCase();
}

/** A resourceVersion query value: unset, "", "0" or a decimal integer. */
function checkRv(rv: string | null): string | undefined {
  if (rv === null) return undefined;
  if (rv !== '' && !/^\d+$/.test(rv)) {
    throw errors.badRequest(`resourceVersion: Invalid value: "${rv}": strconv.ParseUint: parsing "${rv}": invalid syntax`);
  }
  return rv;
}

function boolParam(q: URLSearchParams, name: string): boolean | undefined {
  const v = q.get(name);
  if (v === null) return undefined;
  return v === 'true' || v === '1';
}

export class ApiHandler {
  readonly store: ObjectStore;
  readonly types = new ResourceTypes();
  readonly registry: Registry;
  readonly watches = new Set<WatchStream>();
  readonly requests: RequestRecord[] = [];
  /** host:port the discovery answer names; set by whoever listens. */
  serverAddress = '127.0.0.1:0';
  eventDelayMs = 0;
  private faults: FaultRule[] = [];

  constructor(private readonly opts: HandlerOptions) {
    this.store = new ObjectStore(opts.historySize);
    this.registry = new Registry(this.store, this.types, opts.namespaceTerminationMs);
    // A deleted CRD's watches end once its objects' DELETED events are sent; a client that
    // watches again gets 404.
    this.registry.onTypesGone = (gone) => {
      for (const w of [...this.watches]) if (gone.some((t) => t.bucket === w.req.type.bucket && t.version === w.req.type.version)) w.end(false);
    };
  }

  /** The next `n` requests that `match` (all, by default) are answered `code` instead. */
  failNext(n: number, code: number, match?: FaultRule['match']): void {
    this.faults.push({ remaining: n, code, match });
  }

  private takeFault(method: string, path: string): number | undefined {
    const rule = this.faults.find((f) => f.remaining > 0 && (!f.match || f.match({ method, path })));
    if (!rule) return undefined;
    rule.remaining -= 1;
    this.faults = this.faults.filter((f) => f.remaining > 0);
    return rule.code;
  }

  async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const method = req.method ?? 'GET';
    const watch = boolParam(url.searchParams, 'watch') === true || /^\/apis?\/(?:[^/]+\/)?v[^/]*\/watch\//.test(url.pathname);
    const record: RequestRecord = { method, path: url.pathname, query: url.search, status: 0, watch };
    this.requests.push(record);
    if (this.requests.length > MAX_RECORDS) this.requests.shift();
    const done = () => {
      if (!record.status && res.headersSent) record.status = res.statusCode;
    };
    res.on('finish', done);
    res.on('close', done);
    try {
      if (this.opts.token !== undefined && req.headers.authorization !== `Bearer ${this.opts.token}`) {
        throw errors.unauthorized();
      }
      const fault = this.takeFault(method, url.pathname);
      if (fault !== undefined) throw errors.injected(fault);
      await this.route(req, res, url);
    } catch (e) {
      sendStatus(res, e instanceof ApiError ? e.status : errors.internal(String((e as Error)?.stack ?? e)).status);
    }
    if (res.headersSent) record.status = res.statusCode;
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const method = req.method ?? 'GET';
    const accept = req.headers.accept;
    if (['/healthz', '/livez', '/readyz'].includes(path)) {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('ok');
      return;
    }
    if (path === '/version') return send(res, 200, SERVER_VERSION);
    if (path === '/openapi/v3') return send(res, 200, openApiV3Root(this.types));
    if (path.startsWith('/openapi/v3/')) {
      const m = /^\/openapi\/v3\/(?:api\/([^/]+)|apis\/([^/]+)\/([^/]+))$/.exec(path);
      const doc = m && (m[1] ? openApiV3Doc(this.types, '', m[1]) : openApiV3Doc(this.types, m[2], m[3]));
      if (!doc) throw errors.pathNotFound();
      return send(res, 200, doc);
    }
    if (path === '/api' || path === '/apis') {
      if (method !== 'GET') throw errors.methodNotAllowed(method, path);
      const v2 = this.opts.aggregatedDiscovery ? aggregatedVersion(accept) : undefined;
      if (v2) return send(res, 200, aggregated(this.types, path === '/api', v2), aggregatedContentType(v2));
      return send(res, 200, path === '/api' ? apiVersions(this.serverAddress) : apiGroupList(this.types));
    }
    const segs = path.split('/').filter(Boolean);
    let group: string;
    let version: string;
    let rest: string[];
    if (segs[0] === 'api' && segs.length >= 2) {
      group = '';
      version = segs[1];
      rest = segs.slice(2);
    } else if (segs[0] === 'apis' && segs.length >= 2) {
      if (segs.length === 2) {
        const doc = apiGroup(this.types, segs[1]);
        if (!doc) throw errors.pathNotFound();
        return send(res, 200, doc);
      }
      group = segs[1];
      version = segs[2];
      rest = segs.slice(3);
    } else {
      throw errors.pathNotFound();
    }
    if (rest.length === 0) {
      const doc = apiResourceList(this.types, group, version);
      if (!doc) throw errors.pathNotFound();
      return send(res, 200, doc);
    }
    const legacyWatch = rest[0] === 'watch';
    if (legacyWatch) rest = rest.slice(1);
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3 && this.types.find(group, version, rest[2])?.namespaced) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const [resource, name, subresource, ...extra] = rest;
    const t = this.types.find(group, version, resource);
    if (!t || extra.length) throw errors.pathNotFound();
    if ((t.namespaced && namespace === undefined && name !== undefined) || (!t.namespaced && namespace !== undefined)) {
      throw errors.pathNotFound();
    }
    if (subresource !== undefined && !(subresource === 'status' && t.statusSubresource)) throw errors.pathNotFound();
    const q = url.searchParams;
    const isWatch = legacyWatch || boolParam(q, 'watch') === true;
    if (isWatch) {
      if (method !== 'GET' || subresource) throw errors.methodNotAllowed(method, path);
      return this.watch(url.pathname, res, t, namespace, name, q, accept);
    }
    const dryRun = q.getAll('dryRun').includes('All');
    switch (method) {
      case 'GET': {
        if (name === undefined) return this.list(res, t, namespace, q, accept);
        const obj = this.registry.get(t, namespace, name);
        if (wantsTable(accept)) {
          return send(res, 200, toTable(t, [obj], { includeObject: this.includeObject(q), withColumns: true, resourceVersion: obj.metadata.resourceVersion }));
        }
        return send(res, 200, obj);
      }
      case 'POST': {
        if (name !== undefined || (t.namespaced && namespace === undefined)) throw errors.methodNotAllowed(method, path);
        const body = await this.objectBody(req);
        return send(res, 201, this.registry.create(t, namespace, body, { dryRun }));
      }
      case 'PUT': {
        if (name === undefined) throw errors.methodNotAllowed(method, path);
        const body = await this.objectBody(req);
        const sub = subresource === 'status' ? 'status' : undefined;
        return send(res, 200, this.registry.update(t, namespace, name, body, { dryRun, subresource: sub }));
      }
      case 'PATCH': {
        if (name === undefined) throw errors.methodNotAllowed(method, path);
        const type = mediaType(req.headers['content-type']);
        if (!(PATCH_TYPES as readonly string[]).includes(type)) {
          throw errors.unsupportedMediaType(
            `the body of the request was in an unknown format - accepted media types include: ${PATCH_TYPES.join(', ')}` +
              (type.startsWith('application/apply-patch') ? ' (server-side apply is not implemented by this test server)' : ''),
          );
        }
        const patch = parseJson(await readBody(req));
        const sub = subresource === 'status' ? 'status' : undefined;
        return send(res, 200, this.registry.patch(t, namespace, name, type as PatchType, patch, { dryRun, subresource: sub }));
      }
      case 'DELETE': {
        if (subresource) throw errors.methodNotAllowed(method, path);
        const raw = await readBody(req);
        const body = raw.length ? (parseJson(raw) as Obj) : {};
        const opts: DeleteOptions = {
          dryRun: dryRun || (Array.isArray(body.dryRun) && body.dryRun.includes('All')),
          preconditions: body.preconditions ?? undefined,
        };
        if (name !== undefined) return send(res, 200, this.registry.delete(t, namespace, name, opts));
        const deleted = this.registry.deleteCollection(t, namespace, this.listOptions(q), opts);
        return send(res, 200, this.listBody(t, deleted, String(this.store.currentRv())));
      }
      default:
        throw errors.methodNotAllowed(method, path);
    }
  }

  /** A create or update body: JSON, or the protobuf kubectl's typed clients send. */
  private async objectBody(req: http.IncomingMessage): Promise<Json> {
    const type = mediaType(req.headers['content-type']);
    if (type === PROTOBUF) return decodeProtobuf(await readBody(req)) as Json;
    if (type && type !== 'application/json' && type !== '*/*') {
      throw errors.unsupportedMediaType(
        `the body of the request was in an unknown format - accepted media types include: application/json, ${PROTOBUF}`,
      );
    }
    return parseJson(await readBody(req));
  }

  private includeObject(q: URLSearchParams): IncludeObject {
    const v = q.get('includeObject');
    return v === 'None' || v === 'Object' ? v : 'Metadata';
  }

  private listOptions(q: URLSearchParams): ListOptions {
    const limit = q.get('limit');
    return {
      labelSelector: q.get('labelSelector') ?? undefined,
      fieldSelector: q.get('fieldSelector') ?? undefined,
      limit: limit && /^\d+$/.test(limit) ? Number(limit) : undefined,
      continue: q.get('continue') ?? undefined,
    };
  }

  private listBody(t: ResourceType, items: Obj[], resourceVersion: string, more: { continue?: string; remainingItemCount?: number } = {}): Obj {
    const metadata: Obj = { resourceVersion };
    if (more.continue) metadata.continue = more.continue;
    if (more.remainingItemCount !== undefined) metadata.remainingItemCount = more.remainingItemCount;
    return {
      kind: t.listKind,
      apiVersion: apiVersionOf(t),
      metadata,
      // Typed lists carry no kind/apiVersion per item on the wire; unstructured (custom) ones do.
      items: t.custom ? items : items.map(({ kind: _k, apiVersion: _a, ...rest }) => rest),
    };
  }

  private list(res: http.ServerResponse, t: ResourceType, namespace: string | undefined, q: URLSearchParams, accept?: string): void {
    const rv = checkRv(q.get('resourceVersion'));
    if (rv && rv !== '0' && Number(rv) > this.store.currentRv()) {
      throw errors.tooLargeResourceVersion(Number(rv), this.store.currentRv());
    }
    const result = this.registry.list(t, namespace, this.listOptions(q));
    if (wantsTable(accept)) {
      return send(
        res,
        200,
        toTable(t, result.items, {
          includeObject: this.includeObject(q),
          withColumns: true,
          resourceVersion: result.resourceVersion,
          continue: result.continue,
        }),
      );
    }
    send(res, 200, this.listBody(t, result.items, result.resourceVersion, result));
  }

  private watch(
    path: string,
    res: http.ServerResponse,
    t: ResourceType,
    namespace: string | undefined,
    name: string | undefined,
    q: URLSearchParams,
    accept?: string,
  ): void {
    const selects = this.registry.matcher(t, q.get('labelSelector') ?? undefined, q.get('fieldSelector') ?? undefined);
    const match = name === undefined ? selects : (o: Obj) => o.metadata.name === name && selects(o);
    const timeout = q.get('timeoutSeconds');
    const stream = new WatchStream(
      res,
      this.registry,
      {
        path,
        type: t,
        namespace,
        match,
        resourceVersion: checkRv(q.get('resourceVersion')),
        allowBookmarks: boolParam(q, 'allowWatchBookmarks') === true,
        sendInitialEvents: boolParam(q, 'sendInitialEvents'),
        timeoutSeconds: timeout && /^\d+$/.test(timeout) ? Number(timeout) : undefined,
        table: wantsTable(accept) ? { includeObject: this.includeObject(q) } : undefined,
      },
      { eventDelayMs: () => this.eventDelayMs, bookmarkIntervalMs: this.opts.bookmarkIntervalMs },
    );
    this.watches.add(stream);
    stream.onClose(() => this.watches.delete(stream));
    stream.start();
  }
}
