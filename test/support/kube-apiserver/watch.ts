// One watch stream: newline-delimited JSON watch events over a chunked 200 answer, with the
// real server's semantics:
// - resourceVersion unset or "0": synthetic ADDED events for every matching object, then
//   changes (both start "now"; this server has no stale cache to serve "0" from);
// - resourceVersion N: the changes after N, replayed from the store's history; N older than
//   that history → one ERROR event carrying a 410 Expired Status, then the stream ends;
//   N newer than the store → ERROR 504 "Too large resource version";
// - a change that makes an object stop matching the selectors is a DELETED event with the
//   previous content and the change's resourceVersion, one that makes it match is ADDED;
// - allowWatchBookmarks → BOOKMARK events carrying the current resourceVersion every
//   `bookmarkIntervalMs`; sendInitialEvents=true ends the initial ADDED events with a bookmark
//   annotated `k8s.io/initial-events-end`;
// - timeoutSeconds ends the stream cleanly.
import type http from 'node:http';
import type { Registry } from './registry';
import { apiVersionOf, Obj, ResourceType } from './resources';
import { errors, Status } from './status';
import type { StoreEvent } from './store';
import { IncludeObject, toTable } from './table';

export interface WatchRequest {
  /** The URL path watched, for the test's bookkeeping. */
  path: string;
  type: ResourceType;
  namespace?: string;
  match: (obj: Obj) => boolean;
  /** undefined: unset. */
  resourceVersion?: string;
  allowBookmarks: boolean;
  sendInitialEvents?: boolean;
  timeoutSeconds?: number;
  /** kubectl get -w: each event's object is a one-row Table. */
  table?: { includeObject: IncludeObject };
}

export interface WatchTuning {
  /** Delay before each event is written (fault injection: a slow stream). */
  eventDelayMs(): number;
  bookmarkIntervalMs: number;
}

type WireEvent = { type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR'; object: Obj };

export class WatchStream {
  private unsubscribe?: () => void;
  private timers: NodeJS.Timeout[] = [];
  private pending: Promise<void> = Promise.resolve();
  private queued = 0;
  /** No more events are taken (the stream is ending or gone); queued ones still drain. */
  private stopped = false;
  private sentColumns = false;
  private closeHandlers: (() => void)[] = [];

  constructor(
    private readonly res: http.ServerResponse,
    private readonly registry: Registry,
    readonly req: WatchRequest,
    private readonly tuning: WatchTuning,
  ) {
    res.on('close', () => this.cleanup());
  }

  onClose(fn: () => void): void {
    this.closeHandlers.push(fn);
  }

  start(): void {
    const { req, registry } = this;
    const store = registry.store;
    this.res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    this.res.flushHeaders();

    const rv = req.resourceVersion;
    const fromNow = rv === undefined || rv === '' || rv === '0';
    if (!fromNow) {
      const n = Number(rv);
      const current = store.currentRv();
      if (n > current) return this.fail(errors.tooLargeResourceVersion(n, current).status);
      const replay = store.since(n);
      if (!replay) return this.fail(errors.expired(`too old resource version: ${n} (${store.oldestRv()})`).status);
      this.unsubscribe = store.subscribe((e) => this.onChange(e));
      for (const e of replay) this.onChange(e);
    } else {
      // Subscribing and listing in one tick: no change can fall between the two.
      this.unsubscribe = store.subscribe((e) => this.onChange(e));
      if (req.sendInitialEvents !== false) {
        for (const o of store.list(req.type.bucket, req.namespace)) {
          if (req.match(o)) this.send({ type: 'ADDED', object: registry.present(req.type, o) });
        }
      }
    }
    if (req.sendInitialEvents && req.allowBookmarks) {
      this.send(this.bookmark({ 'k8s.io/initial-events-end': 'true' }));
    }
    if (req.allowBookmarks) {
      this.timers.push(setInterval(() => this.send(this.bookmark()), this.tuning.bookmarkIntervalMs));
    }
    if (req.timeoutSeconds !== undefined && req.timeoutSeconds > 0) {
      this.timers.push(setTimeout(() => this.end(false), req.timeoutSeconds * 1000));
    }
  }

  /** Ends the stream: cleanly (the client sees the body end) or by resetting the connection. */
  end(reset: boolean): void {
    if (reset) this.res.destroy();
    else if (!this.stopped) this.pending.then(() => this.res.end());
    this.cleanup();
  }

  private cleanup(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.unsubscribe?.();
    for (const t of this.timers) clearTimeout(t);
    for (const fn of this.closeHandlers) fn();
  }

  private fail(status: Status): void {
    this.send({ type: 'ERROR', object: status });
    this.end(false);
  }

  private bookmark(annotations?: Record<string, string>): WireEvent {
    const metadata: Obj = { resourceVersion: String(this.registry.store.currentRv()) };
    if (annotations) metadata.annotations = annotations;
    return { type: 'BOOKMARK', object: { kind: this.req.type.kind, apiVersion: apiVersionOf(this.req.type), metadata } };
  }

  private inScope(o: Obj): boolean {
    return this.req.namespace === undefined || o.metadata.namespace === this.req.namespace;
  }

  private onChange(e: StoreEvent): void {
    const { req, registry } = this;
    if (e.bucket !== req.type.bucket || !this.inScope(e.object)) return;
    if (e.type === 'DELETED') {
      if (req.match(e.object)) this.send({ type: 'DELETED', object: registry.present(req.type, e.object) });
      return;
    }
    const now = req.match(e.object);
    const before = e.prev !== undefined && req.match(e.prev);
    if (now) {
      this.send({ type: before ? 'MODIFIED' : 'ADDED', object: registry.present(req.type, e.object) });
    } else if (before) {
      const last = registry.present(req.type, e.prev!);
      last.metadata.resourceVersion = String(e.rv);
      this.send({ type: 'DELETED', object: last });
    }
  }

  private encode(e: WireEvent): string {
    let object = e.object;
    if (this.req.table && e.type !== 'ERROR' && e.type !== 'BOOKMARK') {
      object = toTable(this.req.type, [e.object], {
        includeObject: this.req.table.includeObject,
        withColumns: !this.sentColumns,
        resourceVersion: e.object.metadata?.resourceVersion,
      });
      this.sentColumns = true;
    }
    return `${JSON.stringify({ type: e.type, object })}\n`;
  }

  private send(e: WireEvent): void {
    if (this.stopped) return;
    const line = this.encode(e);
    const delay = this.tuning.eventDelayMs();
    if (delay <= 0 && this.queued === 0) {
      this.res.write(line);
      return;
    }
    this.queued += 1;
    this.pending = this.pending.then(
      () =>
        new Promise<void>((resolve) =>
          setTimeout(() => {
            this.queued -= 1;
            if (!this.res.destroyed && !this.res.writableEnded) this.res.write(line);
            resolve();
          }, Math.max(0, delay)),
        ),
    );
  }
}
