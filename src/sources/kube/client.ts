// The thin adapter between kelp and the Kubernetes API: `@kubernetes/client-node` (1.4.x; 2.x
// does not load on Node 20) for what it is good at — kubeconfig and in-cluster config, TLS,
// credentials, and its Watch — and one list call over the same credentials. Everything above
// this file (src/sources/kubernetes.ts) sees paths, JSON and three calls: list, watch, and a
// merge patch of a custom resource's status (src/sources/kube/status.ts).
import http from 'node:http';
import https from 'node:https';
import { ApiException, CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions, Watch } from '@kubernetes/client-node';

export interface KubeList {
  items: unknown[];
  resourceVersion: string;
}

export interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: { metadata?: { resourceVersion?: string }; code?: number; reason?: string; message?: string } & Record<string, unknown>;
}

/** The message of an error answer: a Status object's, else the body's text. */
function statusMessage(body: string): string {
  try {
    const message = (JSON.parse(body) as { message?: unknown }).message;
    if (typeof message === 'string') return message;
  } catch {
    /* not a Status object */
  }
  return body.trim();
}

export class KubeApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'KubeApiError';
  }
}

export interface WatchHandle {
  /** Resolves when the watch ends: null when the server closed it, else the error. */
  done: Promise<Error | null>;
  abort(): void;
}

/** A custom resource's object, by API group, version, plural and name (namespace when namespaced). */
export interface CustomObjectRef {
  group: string;
  version: string;
  plural: string;
  namespace?: string;
  name: string;
}

export class KubeClient {
  private custom?: CustomObjectsApi;

  private constructor(private readonly kc: KubeConfig) {}

  /** From a kubeconfig file, or (no path) the pod's service account: token, CA and the API address. */
  static load(kubeconfig?: string): KubeClient {
    const kc = new KubeConfig();
    if (kubeconfig) kc.loadFromFile(kubeconfig);
    else kc.loadFromCluster();
    if (!kc.getCurrentCluster()) throw new Error(kubeconfig ? `${kubeconfig}: no current cluster` : 'no in-cluster configuration');
    return new KubeClient(kc);
  }

  get server(): string {
    return this.kc.getCurrentCluster()!.server;
  }

  /** GET a list; its items and the resourceVersion to watch from. */
  async list(path: string, query: Record<string, string> = {}, timeoutMs = 60_000): Promise<KubeList> {
    const url = new URL(this.server + path);
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    const opts: https.RequestOptions = { method: 'GET', headers: { accept: 'application/json' } };
    await this.kc.applyToHTTPSOptions(opts);
    const body = await new Promise<string>((resolve, reject) => {
      const req = (url.protocol === 'https:' ? https : http).request(url, opts, (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (data += d));
        res.on('end', () => {
          if (res.statusCode === 200) return resolve(data);
          reject(new KubeApiError(res.statusCode ?? 0, `GET ${path}: ${res.statusCode} ${statusMessage(data)}`));
        });
        res.on('error', reject);
      });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${path}: no answer in ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end();
    });
    const list = JSON.parse(body) as { items?: unknown[]; metadata?: { resourceVersion?: string } };
    return { items: list.items ?? [], resourceVersion: list.metadata?.resourceVersion ?? '' };
  }

  /** Watches `path` from `query.resourceVersion`; every event goes to `onEvent`. */
  async watch(path: string, query: Record<string, string | number | boolean>, onEvent: (ev: WatchEvent) => void): Promise<WatchHandle> {
    let finish!: (err: Error | null) => void;
    const done = new Promise<Error | null>((r) => (finish = r));
    const controller = await new Watch(this.kc).watch(
      path,
      query,
      (type: string, object: WatchEvent['object']) => onEvent({ type: type as WatchEvent['type'], object }),
      (err: unknown) => finish(err ? (err instanceof Error ? err : new Error(String(err))) : null),
    );
    return { done, abort: () => controller.abort() };
  }

  /**
   * A JSON merge patch of a custom resource's status subresource; the object as the server
   * returns it. A `metadata.resourceVersion` in the patch is a precondition (409 when stale).
   */
  async patchStatus(ref: CustomObjectRef, patch: unknown): Promise<unknown> {
    const api = (this.custom ??= this.kc.makeApiClient(CustomObjectsApi));
    // client-node's patch calls send a JSON patch unless told otherwise.
    const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
    const { group, version, plural, namespace, name } = ref;
    try {
      return namespace === undefined
        ? await api.patchClusterCustomObjectStatus({ group, version, plural, name, body: patch }, merge)
        : await api.patchNamespacedCustomObjectStatus({ group, version, plural, namespace, name, body: patch }, merge);
    } catch (e) {
      if (!(e instanceof ApiException)) throw e;
      const where = namespace === undefined ? `${plural}/${name}` : `${namespace}/${plural}/${name}`;
      throw new KubeApiError(e.code, `PATCH ${group}/${version} ${where}/status: ${e.code} ${statusMessage(String(e.body ?? ''))}`);
    }
  }
}
