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
// - The policy kinds are custom resources: a cluster may lack their CRD (upstream's
//   ClusterNetworkPolicy is installed separately). A 404 on the list is logged once and taken as
//   an empty, synced kind, and the list is retried every `absentRetryMs`; a CRD deleted later
//   removes its objects the same way.
// - Each KelpNetworkPolicy gets a `Valid` status condition (./kube/status.ts): True, or False
//   with the field at fault.
// All pods are watched, not only this node's: policy and services need every peer's labels and
// addresses, and a second, node-filtered watch would only double the load on the API server.
import type { Logger } from '../log';
import { KelpObject, Kind, kindInfo, ManifestError, objectKey, supportedKinds, validateObject } from './objects';
import type { StateSource } from './source';
import type { ObjectStore } from './store';
import { KubeApiError, KubeClient, WatchEvent, WatchHandle } from './kube/client';
import { Condition, CONDITION_VALID, PolicyStatusWriter } from './kube/status';

interface Resource {
  plural: string;
  /** A custom resource: its CRD may be missing. */
  crd?: boolean;
  /** Gets the Valid condition. */
  validStatus?: boolean;
}

/** Where each kind lives in the API, under the group and version of its kindInfo apiVersion. */
const RESOURCES: Partial<Record<Kind, Resource>> = {
  Namespace: { plural: 'namespaces' },
  Pod: { plural: 'pods' },
  Node: { plural: 'nodes' },
  Service: { plural: 'services' },
  EndpointSlice: { plural: 'endpointslices' },
  NetworkPolicy: { plural: 'networkpolicies' },
  ClusterNetworkPolicy: { plural: 'clusternetworkpolicies', crd: true },
  KelpNetworkPolicy: { plural: 'kelpnetworkpolicies', crd: true, validStatus: true },
};

function resourceOf(kind: Kind): Resource & { group: string; version: string } {
  const apiVersion = kindInfo(kind).apiVersion;
  const slash = apiVersion.indexOf('/');
  return { ...RESOURCES[kind]!, group: slash < 0 ? '' : apiVersion.slice(0, slash), version: apiVersion.slice(slash + 1) };
}

/** The URL path of a kind's collection, across all namespaces. */
export function resourcePath(kind: Kind): string {
  const r = resourceOf(kind);
  return r.group ? `/apis/${r.group}/${r.version}/${r.plural}` : `/api/${r.version}/${r.plural}`;
}

export interface KubernetesSourceOptions {
  client: KubeClient;
  log: Logger;
  /** Backoff after a failure: doubling from min to max, with jitter (defaults 200 ms, 30 s). */
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** Ask the server to end each watch after about this long (client-go's 5–10 min by default). */
  watchTimeoutSeconds?: number;
  /** How often the list of a kind whose CRD is missing is retried (default 30 s). */
  absentRetryMs?: number;
  /** Write the Valid condition of KelpNetworkPolicies (default true). */
  writeStatus?: boolean;
  /** Longest random wait before a status write, so that nodes' agents do not all write (default 1000 ms). */
  statusJitterMs?: number;
}

class Gone extends Error {}

interface ReflectorState {
  kind: Kind;
  synced: boolean;
  /** The kind's CRD is not installed: empty until a retried list finds it. */
  absent?: boolean;
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
  private readonly statusWriter?: PolicyStatusWriter;

  constructor(
    private readonly store: ObjectStore,
    private readonly opts: KubernetesSourceOptions,
  ) {
    this.states = (supportedKinds as Kind[]).filter((k) => RESOURCES[k]).map((kind) => ({ kind, synced: false, lists: 0, watches: 0, errors: 0 }));
    if (opts.writeStatus !== false) this.statusWriter = new PolicyStatusWriter({ client: opts.client, log: opts.log, jitterMs: opts.statusJitterMs });
  }

  /** Status writes made and failed (Valid conditions). */
  statusWrites(): { written: number; failed: number } {
    return { written: this.statusWriter?.written ?? 0, failed: this.statusWriter?.failed ?? 0 };
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
    this.statusWriter?.stop();
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
        if (st.resourceVersion === undefined && !(await this.list(st))) {
          failures = 0;
          await this.sleep(this.opts.absentRetryMs ?? 30_000);
          continue;
        }
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

  /** Lists the kind into the store; false when its CRD is missing (then it is empty and synced). */
  private async list(st: ReflectorState): Promise<boolean> {
    let list;
    try {
      list = await this.opts.client.list(resourcePath(st.kind));
    } catch (err) {
      if (!(err instanceof KubeApiError && err.status === 404 && RESOURCES[st.kind]!.crd)) throw err;
      st.lists++;
      this.markAbsent(st);
      return false;
    }
    st.lists++;
    if (st.absent) this.opts.log.info({ kind: st.kind }, 'CustomResourceDefinition found: watching');
    st.absent = false;
    const objects: KelpObject[] = [];
    for (const item of list.items) {
      const o = this.accept(st.kind, item);
      if (o) objects.push(o);
    }
    this.store.replaceFrom(this.sourceOf(st.kind), objects);
    st.resourceVersion = list.resourceVersion;
    this.store.noteVersion(this.sourceOf(st.kind), list.resourceVersion);
    if (!st.synced) this.noteSynced(st, { objects: objects.length, resourceVersion: list.resourceVersion });
    return true;
  }

  private noteSynced(st: ReflectorState, detail: Record<string, unknown>): void {
    st.synced = true;
    this.opts.log.info({ kind: st.kind, ...detail }, 'synced');
    if (this.states.every((s) => s.synced)) this.markSynced();
  }

  /** No CRD for the kind: it holds no objects (those of a deleted CRD go), and it does not hold up sync. */
  private markAbsent(st: ReflectorState): void {
    if (!st.absent) {
      const r = resourceOf(st.kind);
      this.opts.log.warn(
        { kind: st.kind, resource: `${r.plural}.${r.group}`, retryInMs: this.opts.absentRetryMs ?? 30_000 },
        'the API does not serve this kind (its CustomResourceDefinition is not installed): treated as empty',
      );
    }
    st.absent = true;
    for (const o of this.store.list(st.kind)) this.statusWriter?.forget(objectKey(o));
    for (const key of [...this.problems.keys()]) if (key.startsWith(`${st.kind}/`)) this.problems.delete(key);
    this.store.replaceFrom(this.sourceOf(st.kind), []);
    if (!st.synced) this.noteSynced(st, { objects: 0, absent: true });
  }

  private async watch(st: ReflectorState): Promise<void> {
    const timeout = this.opts.watchTimeoutSeconds ?? Math.round(300 + Math.random() * 300);
    let gone = false;
    let failed: Error | undefined;
    let handle: WatchHandle | undefined;
    handle = await this.opts.client.watch(
      resourcePath(st.kind),
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
        const code = (err as { statusCode?: number }).statusCode;
        // 404: the kind's CRD went away while watching; the relist finds out.
        if (code === 410 || (code === 404 && RESOURCES[st.kind]!.crd)) throw new Gone();
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
          this.statusWriter?.forget(`${st.kind}/${meta.namespace ?? ''}/${meta.name}`);
        }
        break;
      }
      case 'BOOKMARK':
        break;
      case 'ERROR':
        if (ev.object.code === 410) throw new Gone();
        throw new KubeApiError(ev.object.code ?? 0, `watch ${resourcePath(st.kind)}: ${ev.object.message ?? 'error event'}`);
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
      this.reportValid(kind, raw, { type: CONDITION_VALID, status: 'True', reason: 'Valid', message: 'kelp accepts this policy' });
      return o;
    } catch (e) {
      if (!(e instanceof ManifestError)) throw e;
      const msg = `${key}: ${e.message}`;
      if (this.problems.get(key) !== msg) this.opts.log.error({ object: key, error: e.message }, 'API object rejected; keeping its last good version');
      this.problems.set(key, msg);
      this.reportValid(kind, raw, { type: CONDITION_VALID, status: 'False', reason: 'Invalid', message: e.message });
      return meta.name ? this.store.get(kind, meta.namespace, meta.name) : undefined;
    }
  }

  /** The Valid condition of a kind that has it, for the generation `raw` holds. */
  private reportValid(kind: Kind, raw: unknown, c: Condition): void {
    const r = resourceOf(kind);
    const meta = (raw as { metadata?: { name?: unknown; namespace?: unknown; generation?: unknown } }).metadata;
    if (!this.statusWriter || !r.validStatus || typeof meta?.name !== 'string' || meta.name === '') return;
    const namespace = typeof meta.namespace === 'string' && meta.namespace !== '' ? meta.namespace : undefined;
    const generation = typeof meta.generation === 'number' ? meta.generation : undefined;
    const target = { group: r.group, version: r.version, plural: r.plural, namespace, name: meta.name };
    this.statusWriter.report(`${kind}/${namespace ?? ''}/${meta.name}`, target, { ...c, observedGeneration: generation }, raw);
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
