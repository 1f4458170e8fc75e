// The generic registry: get, list, create, update, patch and delete of any served type, with
// the real server's rules (k8s.io/apiserver registry/generic): uid, creationTimestamp and
// generation owned by the server, resourceVersion preconditions (409 Conflict), status
// writes only through `/status` where a type has it, no-op writes leave the object (and its
// resourceVersion) alone, objects go only into existing namespaces, and deleting a CRD deletes
// its objects. Deletion is immediate (no finalizers, no deletionTimestamp) except for
// namespaces, which terminate as the real ones do: a deleted namespace turns Terminating (with
// a deletionTimestamp, refusing new content), and after `namespaceTerminationMs` its contents
// and then itself are deleted — so `kubectl delete -f dir/` still finds the objects it names.
import { randomUUID, randomBytes } from 'node:crypto';
import { applyDefaults, AllocationView, timestampNow, validateName } from './defaults';
import { deepEqual, Json, jsonPatch, mergePatch, strategicMergePatch } from './patch';
import { apiVersionOf, CRDS, NAMESPACES, Obj, ResourceType, ResourceTypes, SERVICES } from './resources';
import { parseFieldSelector, parseLabelSelector } from './selectors';
import { ApiError, errors, StatusCause } from './status';
import { ObjectStore, objectKey } from './store';

export interface ListOptions {
  labelSelector?: string;
  fieldSelector?: string;
  limit?: number;
  continue?: string;
}

export interface ListResult {
  items: Obj[];
  resourceVersion: string;
  continue?: string;
  remainingItemCount?: number;
}

export interface WriteOptions {
  dryRun?: boolean;
  /** Only `/status` changes: the rest of the object stays as stored. */
  subresource?: 'status';
  /** Keep the status sent on create and main-resource updates (the test's own "kubelet" writes). */
  keepStatus?: boolean;
}

export interface DeleteOptions {
  dryRun?: boolean;
  preconditions?: { uid?: string; resourceVersion?: string };
}

export const PATCH_TYPES = [
  'application/json-patch+json',
  'application/merge-patch+json',
  'application/strategic-merge-patch+json',
] as const;
export type PatchType = (typeof PATCH_TYPES)[number];

/** What the no-op check compares: everything but the resourceVersion. */
function withoutRv(obj: Obj): Obj {
  const { resourceVersion: _rv, ...metadata } = obj.metadata ?? {};
  return { ...obj, metadata };
}

/** What generation follows: everything but metadata and status. */
function specOf(obj: Obj): Obj {
  const { metadata: _m, status: _s, ...rest } = obj;
  return rest;
}

export class Registry {
  private terminating = new Map<string, NodeJS.Timeout>();

  /** Told the types a deleted CRD took away (their watches end, as the real server's do). */
  onTypesGone?: (types: ResourceType[]) => void;

  constructor(
    readonly store: ObjectStore,
    readonly types: ResourceTypes,
    private readonly namespaceTerminationMs: number,
  ) {}

  /** Stops pending namespace terminations (the server is going away for good). */
  dispose(): void {
    for (const timer of this.terminating.values()) clearTimeout(timer);
    this.terminating.clear();
  }

  /** A copy of a stored object as `t`'s version presents it (None conversion: only apiVersion changes). */
  present(t: ResourceType, obj: Obj): Obj {
    const out = structuredClone(obj);
    out.apiVersion = apiVersionOf(t);
    out.kind = t.kind;
    return out;
  }

  fieldSet(t: ResourceType, obj: Obj): Record<string, string> {
    const fields: Record<string, string> = { 'metadata.name': obj.metadata.name };
    if (t.namespaced) fields['metadata.namespace'] = obj.metadata.namespace ?? '';
    for (const [f, get] of Object.entries(t.fields)) fields[f] = get(obj);
    return fields;
  }

  /** A predicate for both selectors; throws 400 on a malformed or unsupported selector. */
  matcher(t: ResourceType, labelSelector?: string, fieldSelector?: string): (obj: Obj) => boolean {
    const supported = ['metadata.name', ...(t.namespaced ? ['metadata.namespace'] : []), ...Object.keys(t.fields)];
    const labels = parseLabelSelector(labelSelector);
    const fields = parseFieldSelector(fieldSelector, supported);
    return (obj) => labels(obj.metadata?.labels) && fields(this.fieldSet(t, obj));
  }

  get(t: ResourceType, namespace: string | undefined, name: string): Obj {
    const obj = this.store.get(t.bucket, namespace, name);
    if (!obj) throw errors.notFound(t, name);
    return this.present(t, obj);
  }

  list(t: ResourceType, namespace: string | undefined, opts: ListOptions = {}): ListResult {
    const match = this.matcher(t, opts.labelSelector, opts.fieldSelector);
    let listRv = this.store.currentRv();
    let after = '';
    if (opts.continue) {
      let token: { rv: number; start: string };
      try {
        token = JSON.parse(Buffer.from(opts.continue, 'base64').toString('utf8'));
      } catch {
        throw errors.badRequest('continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)');
      }
      if (token.rv < this.store.oldestRv()) {
        throw errors.expired(
          'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.',
        );
      }
      listRv = token.rv;
      after = token.start;
    }
    const all = this.store
      .list(t.bucket, namespace)
      .filter((o) => objectKey(o.metadata.namespace, o.metadata.name) > after && match(o));
    const limit = opts.limit && opts.limit > 0 ? opts.limit : all.length;
    const page = all.slice(0, limit);
    const result: ListResult = { items: page.map((o) => this.present(t, o)), resourceVersion: String(listRv) };
    if (page.length < all.length) {
      const last = page[page.length - 1].metadata;
      result.continue = Buffer.from(
        JSON.stringify({ rv: listRv, start: objectKey(last.namespace, last.name) }),
      ).toString('base64');
      result.remainingItemCount = all.length - page.length;
    }
    return result;
  }

  private allocation(): AllocationView {
    return {
      servicesInUse: (except) => {
        const ips = new Set<string>();
        const nodePorts = new Set<number>();
        for (const s of this.store.list(SERVICES.bucket)) {
          if (objectKey(s.metadata.namespace, s.metadata.name) === except) continue;
          for (const ip of s.spec?.clusterIPs ?? []) if (ip !== 'None') ips.add(ip);
          for (const p of s.spec?.ports ?? []) if (p.nodePort) nodePorts.add(p.nodePort);
        }
        return { ips, nodePorts };
      },
    };
  }

  private checkTypeMeta(t: ResourceType, body: Obj): void {
    if (body.apiVersion !== undefined && body.apiVersion !== apiVersionOf(t)) {
      throw errors.badRequest(
        `the API version in the data (${body.apiVersion}) does not match the expected API version (${apiVersionOf(t)})`,
      );
    }
    if (body.kind !== undefined && body.kind !== t.kind) {
      throw errors.badRequest(`the kind in the data (${body.kind}) does not match the expected kind (${t.kind})`);
    }
  }

  private checkBody(t: ResourceType, body: unknown, namespace: string | undefined): Obj {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw errors.badRequest(`the body of the request was not a ${t.kind} object`);
    }
    const obj = structuredClone(body) as Obj;
    this.checkTypeMeta(t, obj);
    obj.apiVersion = apiVersionOf(t);
    obj.kind = t.kind;
    const meta = (obj.metadata ??= {});
    if (t.namespaced) {
      if (meta.namespace && meta.namespace !== namespace) {
        throw errors.badRequest('the namespace of the provided object does not match the namespace sent on the request');
      }
      meta.namespace = namespace;
    } else {
      delete meta.namespace;
    }
    return obj;
  }

  private invalid(t: ResourceType, name: string, causes: StatusCause[]): ApiError {
    return errors.invalid(t.kind, t.group, name, causes);
  }

  create(t: ResourceType, namespace: string | undefined, body: unknown, opts: WriteOptions = {}): Obj {
    const obj = this.checkBody(t, body, namespace);
    const meta = obj.metadata;
    if (!meta.name && meta.generateName) {
      do {
        meta.name = meta.generateName + randomBytes(4).toString('hex').slice(0, 5);
      } while (this.store.get(t.bucket, namespace, meta.name));
    }
    if (!meta.name) {
      throw this.invalid(t, '', [{ reason: 'FieldValueRequired', field: 'metadata.name', message: 'Required value: name or generateName is required' }]);
    }
    const bad = validateName(t, meta.name);
    if (bad) throw this.invalid(t, meta.name, [bad]);
    if (t.namespaced) {
      const ns = this.store.get(NAMESPACES.bucket, undefined, namespace!);
      if (!ns) throw errors.notFound(NAMESPACES, namespace!);
      if (ns.metadata.deletionTimestamp) {
        throw errors.forbidden(t, meta.name, `unable to create new content in namespace ${namespace} because it is being terminated`);
      }
    }
    if (this.store.get(t.bucket, namespace, meta.name)) throw errors.alreadyExists(t, meta.name);
    if (t.statusSubresource && !t.statusOnCreate && !opts.keepStatus) delete obj.status;
    const causes = applyDefaults(t, obj, undefined, this.allocation());
    if (causes.length) throw this.invalid(t, meta.name, causes);
    meta.uid = randomUUID();
    meta.creationTimestamp = timestampNow();
    meta.generation = 1;
    delete meta.resourceVersion;
    delete meta.deletionTimestamp;
    delete meta.deletionGracePeriodSeconds;
    if (opts.dryRun) return this.present(t, obj);
    this.store.write(t.bucket, namespace, meta.name, obj);
    if (t === CRDS) this.types.setCrd(obj);
    return this.present(t, obj);
  }

  update(t: ResourceType, namespace: string | undefined, name: string, body: unknown, opts: WriteOptions = {}): Obj {
    const obj = this.checkBody(t, body, namespace);
    if (obj.metadata.name && obj.metadata.name !== name) {
      throw errors.badRequest(`the name of the object (${obj.metadata.name}) does not match the name on the URL (${name})`);
    }
    obj.metadata.name = name;
    const old = this.store.get(t.bucket, namespace, name);
    if (!old) throw errors.notFound(t, name);
    const rv = obj.metadata.resourceVersion;
    if (rv !== undefined && rv !== '' && rv !== old.metadata.resourceVersion) {
      throw errors.conflict(t, name, 'the object has been modified; please apply your changes to the latest version and try again');
    }
    if (t.custom && (rv === undefined || rv === '')) {
      throw this.invalid(t, name, [
        { reason: 'FieldValueInvalid', field: 'metadata.resourceVersion', message: 'Invalid value: 0x0: must be specified for an update' },
      ]);
    }
    let next: Obj;
    if (opts.subresource === 'status') {
      next = structuredClone(old);
      if (obj.status === undefined) delete next.status;
      else next.status = obj.status;
    } else {
      next = obj;
      if (t.statusSubresource && !opts.keepStatus) {
        if (old.status === undefined) delete next.status;
        else next.status = structuredClone(old.status);
      }
      const causes = applyDefaults(t, next, old, this.allocation());
      if (causes.length) throw this.invalid(t, name, causes);
    }
    const meta = next.metadata;
    meta.uid = old.metadata.uid;
    meta.creationTimestamp = old.metadata.creationTimestamp;
    if (old.metadata.deletionTimestamp) meta.deletionTimestamp = old.metadata.deletionTimestamp;
    else delete meta.deletionTimestamp;
    meta.generation = deepEqual(specOf(next), specOf(old)) ? old.metadata.generation : (old.metadata.generation ?? 0) + 1;
    if (deepEqual(withoutRv(next), withoutRv(old))) return this.present(t, old);
    if (opts.dryRun) return this.present(t, { ...next, metadata: { ...meta, resourceVersion: old.metadata.resourceVersion } });
    this.store.write(t.bucket, namespace, name, next);
    if (t === CRDS) this.types.setCrd(next);
    return this.present(t, next);
  }

  patch(
    t: ResourceType,
    namespace: string | undefined,
    name: string,
    type: PatchType,
    patch: Json,
    opts: WriteOptions = {},
  ): Obj {
    const old = this.store.get(t.bucket, namespace, name);
    if (!old) throw errors.notFound(t, name);
    const current = this.present(t, old) as Json;
    let patched: Json;
    if (type === 'application/json-patch+json') patched = jsonPatch(current, patch);
    else if (type === 'application/merge-patch+json') patched = mergePatch(current, patch);
    else {
      if (!t.mergeKeys) {
        throw errors.unsupportedMediaType(
          'the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml',
        );
      }
      patched = strategicMergePatch(current, patch, t.mergeKeys);
    }
    const body = patched as Obj;
    // A patch that names a resourceVersion makes it a precondition; otherwise the patch applies
    // to the version just read (the real server retries internally on a race; here none can happen).
    if (body?.metadata && body.metadata.resourceVersion === undefined) body.metadata.resourceVersion = old.metadata.resourceVersion;
    return this.update(t, namespace, name, body, opts);
  }

  delete(t: ResourceType, namespace: string | undefined, name: string, opts: DeleteOptions = {}): Obj {
    const old = this.store.get(t.bucket, namespace, name);
    if (!old) throw errors.notFound(t, name);
    const pre = opts.preconditions ?? {};
    if (pre.uid && pre.uid !== old.metadata.uid) {
      throw errors.conflict(
        t,
        name,
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${old.metadata.uid}`,
      );
    }
    if (pre.resourceVersion && pre.resourceVersion !== old.metadata.resourceVersion) {
      throw errors.conflict(
        t,
        name,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${old.metadata.resourceVersion}`,
      );
    }
    if (opts.dryRun) return this.present(t, old);
    if (t === NAMESPACES) return this.terminateNamespace(old);
    if (t === CRDS) this.deleteCrdContents(old);
    const event = this.store.write(t.bucket, namespace, name, undefined);
    return this.present(t, event.object);
  }

  deleteCollection(t: ResourceType, namespace: string | undefined, list: ListOptions, opts: DeleteOptions = {}): Obj[] {
    const { items } = this.list(t, namespace, { labelSelector: list.labelSelector, fieldSelector: list.fieldSelector });
    return items.map((o) => this.delete(t, o.metadata.namespace, o.metadata.name, { dryRun: opts.dryRun }));
  }

  private terminateNamespace(ns: Obj): Obj {
    const name: string = ns.metadata.name;
    if (ns.metadata.deletionTimestamp) return this.present(NAMESPACES, ns);
    const next = structuredClone(ns);
    next.metadata.deletionTimestamp = timestampNow();
    next.status = { ...next.status, phase: 'Terminating' };
    this.store.write(NAMESPACES.bucket, undefined, name, next);
    const timer = setTimeout(() => this.finalizeNamespace(name), this.namespaceTerminationMs);
    timer.unref();
    this.terminating.set(name, timer);
    return this.present(NAMESPACES, next);
  }

  /** The namespace controller's work: everything in the namespace goes first, then the namespace. */
  private finalizeNamespace(namespace: string): void {
    this.terminating.delete(namespace);
    if (!this.store.get(NAMESPACES.bucket, undefined, namespace)) return;
    const buckets = new Set(this.types.all().filter((t) => t.namespaced).map((t) => t.bucket));
    for (const bucket of buckets) {
      for (const o of this.store.list(bucket, namespace)) this.store.write(bucket, namespace, o.metadata.name, undefined);
    }
    this.store.write(NAMESPACES.bucket, undefined, namespace, undefined);
  }

  private deleteCrdContents(crd: Obj): void {
    const gone = this.types.removeCrd(crd.metadata.name);
    const buckets = new Set(gone.map((t) => t.bucket));
    for (const bucket of buckets) {
      for (const o of this.store.list(bucket)) this.store.write(bucket, o.metadata.namespace, o.metadata.name, undefined);
    }
    this.onTypesGone?.(gone);
  }
}
