// The Kubernetes API as a source of desired state: one reflector per kind kelp knows, each a
// list followed by a watch from the list's resourceVersion, feeding the object store.
// - A watch that ends (timeout, server close) resumes from the last resourceVersion seen
//   (events and bookmarks both move it).
// - 410 Gone (the version is older than the server's history) relists; the relist replaces the
//   kind's whole contribution, so objects deleted meanwhile are removed from the store.
// - Any other failure (server down, 5xx, TLS, a dropped connection) retries with jittered
//   exponential backoff; until the watch is back, the store — and so the datapath — is left as
//   it was. client-node 1.4's informers stop for good after a watch error; this loop is kelp's
//   own for that reason.
// - An object that fails validation is rejected by name and field; its last good version stays.
// All pods are watched, not only this node's: policy and services need every peer's labels and
// addresses, and a second, node-filtered watch would only double the load on the API server.
import type { Logger } from '../log';
import { KelpObject, Kind, kindInfo, ManifestError, supportedKinds, validateObject } from './objects';
import type { StateSource } from './source';
import type { ObjectStore } from './store';
import { KubeApiError, KubeClient, WatchEvent, WatchHandle } from './kube/client';

/** Where each kind lives in the API. */
const RESOURCES: Record<string, string> = {
  Namespace: '/api/v1/namespaces',
  Pod: '/api/v1/pods',
  Node: '/api/v1/nodes',
  Service: '/api/v1/services',
  EndpointSlice: '/apis/discovery.k8s.io/v1/endpointslices',
  NetworkPolicy: '/apis/networking.k8s.io/v1/networkpolicies',
};

export interface KubernetesSourceOptions {
  client: KubeClient;
  log: Logger;
  /** Backoff after a failure: doubling from min to max, with jitter (defaults 200 ms, 30 s). */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** Ask the server to end each watch after about this long (client-go's 5–10 min by default). */
  watchTimeoutSeconds?: number;
}

class Gone extends Error {}

interface ReflectorState {
  kind: Kind;
  synced: boolean;
  resourceVersion?: string;
  lists: number;
  watches: number;
  errors: number;
  lastError?: string;
}

export class KubernetesSource implements StateSource {
  readonly name = 'kubernetes';
  /** Rejected objects, by `Kind/namespace/name`: the reason, and that the last good version stays. */
  readonly problems = new Map<string, string>();
  private readonly states: ReflectorState[];
  private readonly aborts = new Set<() => void>();
  private readonly sleeps = new Set<() => void>();
  private stopped = false;
  private markSynced!: () => void;
  private readonly syncedP = new Promise<void>((r) => (this.markSynced = r));
  private loops: Promise<void>[] = [];

  constructor(
    private readonly store: ObjectStore,
    private readonly opts: KubernetesSourceOptions,
  ) {
    this.states = (supportedKinds as Kind[]).filter((k) => RESOURCES[k]).map((kind) => ({ kind, synced: false, lists: 0, watches: 0, errors: 0 }));
  }

  async start(): Promise<void> {
    this.opts.log.info({ server: this.opts.client.server, kinds: this.states.map((s) => s.kind) }, 'watching the Kubernetes API');
    this.loops = this.states.map((s) => this.reflect(s));
  }

  synced(): Promise<void> {
    return this.syncedP;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const a of this.aborts) a();
    for (const s of this.sleeps) s();
    await Promise.all(this.loops);
  }

  status(): ReflectorState[] {
    return this.states.map((s) => ({ ...s }));
  }

  private sourceOf(kind: Kind): string {
    return `kubernetes:${kind}`;
  }

  private async reflect(st: ReflectorState): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        if (st.resourceVersion === undefined) await this.list(st);
        failures = 0;
        await this.watch(st);
      } catch (err) {
        if (this.stopped) return;
        if (err instanceof Gone) {
          this.opts.log.info({ kind: st.kind, resourceVersion: st.resourceVersion }, 'watch history expired (410): relisting');
          st.resourceVersion = undefined;
          continue;
        }
        st.errors++;
        st.lastError = (err as Error).message;
        failures++;
        const min = this.opts.backoffMinMs ?? 200;
        const cap = Math.min(min * 2 ** (failures - 1), this.opts.backoffMaxMs ?? 30_000);
        const delay = cap / 2 + Math.random() * (cap / 2);
        this.opts.log.warn({ kind: st.kind, err: st.lastError, retryInMs: Math.round(delay) }, 'Kubernetes API error; the datapath keeps its state until the watch is back');
        await this.sleep(delay);
      }
    }
  }

  private async list(st: ReflectorState): Promise<void> {
    const list = await this.opts.client.list(RESOURCES[st.kind]);
    st.lists++;
    const objects: KelpObject[] = [];
    for (const item of list.items) {
      const o = this.accept(st.kind, item);
      if (o) objects.push(o);
    }
    this.store.replaceFrom(this.sourceOf(st.kind), objects);
    st.resourceVersion = list.resourceVersion;
    this.store.noteVersion(this.sourceOf(st.kind), list.resourceVersion);
    if (!st.synced) {
      st.synced = true;
      this.opts.log.info({ kind: st.kind, objects: objects.length, resourceVersion: list.resourceVersion }, 'synced');
      if (this.states.every((s) => s.synced)) this.markSynced();
    }
  }

  private async watch(st: ReflectorState): Promise<void> {
    const timeout = this.opts.watchTimeoutSeconds ?? Math.round(300 + Math.random() * 300);
    let gone = false;
    let failed: Error | undefined;
    let handle: WatchHandle | undefined;
    handle = await this.opts.client.watch(
      RESOURCES[st.kind],
      { resourceVersion: st.resourceVersion!, allowWatchBookmarks: true, timeoutSeconds: timeout },
      (ev) => {
        try {
          if (!gone && !failed) this.onEvent(st, ev);
        } catch (err) {
          if (err instanceof Gone) gone = true;
          else failed = err as Error;
          handle?.abort();
        }
      },
    );
    st.watches++;
    const abort = handle.abort;
    this.aborts.add(abort);
    // An event that arrived before the handle did asked for an abort it could not make.
    if (gone || failed) abort();
    try {
      const err = await handle.done;
      if (gone) throw new Gone();
      if (failed) throw failed;
      if (err && !this.stopped) {
        if ((err as { statusCode?: number }).statusCode === 410) throw new Gone();
        throw err;
      }
    } finally {
      this.aborts.delete(abort);
    }
  }

  private onEvent(st: ReflectorState, ev: WatchEvent): void {
    const source = this.sourceOf(st.kind);
    const rv = ev.object?.metadata?.resourceVersion;
    switch (ev.type) {
      case 'ADDED':
      case 'MODIFIED': {
        const o = this.accept(st.kind, ev.object);
        if (o) this.store.upsert(source, o);
        break;
      }
      case 'DELETED': {
        const meta = (ev.object as { metadata?: { name?: string; namespace?: string } }).metadata;
        if (meta?.name) {
          this.store.remove(source, st.kind, meta.namespace, meta.name);
          this.problems.delete(`${st.kind}/${meta.namespace ?? ''}/${meta.name}`);
        }
        break;
      }
      case 'BOOKMARK':
        break;
      case 'ERROR':
        if (ev.object.code === 410) throw new Gone();
        throw new KubeApiError(ev.object.code ?? 0, `watch ${RESOURCES[st.kind]}: ${ev.object.message ?? 'error event'}`);
      default:
        return;
    }
    if (rv) {
      st.resourceVersion = rv;
      this.store.noteVersion(source, rv);
    }
  }

  /** Validates an API object; a rejected one keeps its last good version (returned instead). */
  private accept(kind: Kind, raw: unknown): KelpObject | undefined {
    // List items come without apiVersion and kind.
    const doc = { apiVersion: kindInfo(kind).apiVersion, kind, ...(raw as Record<string, unknown>) };
    const meta = (raw as { metadata?: { name?: string; namespace?: string } }).metadata ?? {};
    const key = `${kind}/${meta.namespace ?? ''}/${meta.name ?? '?'}`;
    try {
      const o = validateObject(doc);
      this.problems.delete(key);
      return o;
    } catch (e) {
      if (!(e instanceof ManifestError)) throw e;
      const msg = `${key}: ${e.message}`;
      if (this.problems.get(key) !== msg) this.opts.log.error({ object: key, error: e.message }, 'API object rejected; keeping its last good version');
      this.problems.set(key, msg);
      return meta.name ? this.store.get(kind, meta.namespace, meta.name) : undefined;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      const sleeps = this.sleeps;
      function done() {
        clearTimeout(t);
        sleeps.delete(done);
        resolve();
      }
      sleeps.add(done);
    });
  }
}
