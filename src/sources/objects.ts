// The Kubernetes-shaped objects kelp consumes, and their validation. Every source (manifest
// directory today, the Kubernetes API later) hands the reconcilers these same shapes.
// Validation names the field at fault with a JSON path, like the API server does.

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface NamespaceObject {
  apiVersion: 'v1';
  kind: 'Namespace';
  metadata: ObjectMeta;
}

export interface PodObject {
  apiVersion: 'v1';
  kind: 'Pod';
  metadata: ObjectMeta & { namespace: string };
  spec: { nodeName?: string; hostNetwork?: boolean; containers: Array<{ name: string; ports: Array<{ containerPort: number; protocol: string; name?: string }> }> };
}

export type KelpObject = NamespaceObject | PodObject;
export type Kind = KelpObject['kind'];

export class ManifestError extends Error {
  constructor(
    readonly field: string,
    readonly reason: string,
    readonly source?: string,
  ) {
    super(`${source ? `${source}: ` : ''}${field}: ${reason}`);
    this.name = 'ManifestError';
  }

  /** The same error, attributed to a file (and document) it came from. */
  at(source: string): ManifestError {
    return new ManifestError(this.field, this.reason, source);
  }
}

// RFC 1123 label / subdomain, as Kubernetes validates names.
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$/;
const LABEL_VALUE = /^(([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?)$/;

type Json = unknown;

function isObject(v: Json): v is Record<string, Json> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function expectObject(v: Json, field: string): Record<string, Json> {
  if (v === undefined) throw new ManifestError(field, 'required, missing');
  if (!isObject(v)) throw new ManifestError(field, `must be an object, got ${describe(v)}`);
  return v;
}

function expectString(v: Json, field: string): string {
  if (v === undefined) throw new ManifestError(field, 'required, missing');
  if (typeof v !== 'string') throw new ManifestError(field, `must be a string, got ${describe(v)}`);
  return v;
}

function describe(v: Json): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'string' ? `string ${JSON.stringify(v)}` : `${typeof v} ${JSON.stringify(v)}`;
}

function stringMap(v: Json, field: string, keyRule?: (k: string, f: string) => void, valueRule?: (val: string, f: string) => void): Record<string, string> {
  if (v === undefined || v === null) return {};
  const obj = expectObject(v, field);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(obj)) {
    const f = `${field}[${JSON.stringify(k)}]`;
    const s = expectString(val, f);
    keyRule?.(k, f);
    valueRule?.(s, f);
    out[k] = s;
  }
  return out;
}

function labelKey(k: string, field: string): void {
  const slash = k.lastIndexOf('/');
  const prefix = slash >= 0 ? k.slice(0, slash) : '';
  const name = slash >= 0 ? k.slice(slash + 1) : k;
  if (prefix && (prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix))) {
    throw new ManifestError(field, `label key prefix ${JSON.stringify(prefix)} must be a DNS subdomain`);
  }
  if (name.length === 0 || name.length > 63 || !LABEL_NAME.test(name)) {
    throw new ManifestError(field, `label key ${JSON.stringify(k)} is invalid (alphanumerics, '-', '_', '.', at most 63 characters)`);
  }
}

function labelValue(v: string, field: string): void {
  if (v.length > 63 || !LABEL_VALUE.test(v)) {
    throw new ManifestError(field, `label value ${JSON.stringify(v)} is invalid (alphanumerics, '-', '_', '.', at most 63 characters)`);
  }
}

function validateMeta(v: Json, namespaced: boolean): ObjectMeta {
  const m = expectObject(v, 'metadata');
  const name = expectString(m.name, 'metadata.name');
  if (name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) {
    throw new ManifestError('metadata.name', `${JSON.stringify(name)} must be a lowercase RFC 1123 subdomain`);
  }
  const meta: ObjectMeta = {
    name,
    labels: stringMap(m.labels, 'metadata.labels', labelKey, labelValue),
    annotations: stringMap(m.annotations, 'metadata.annotations'),
  };
  if (m.uid !== undefined) meta.uid = expectString(m.uid, 'metadata.uid');
  if (namespaced) {
    const ns = m.namespace === undefined ? 'default' : expectString(m.namespace, 'metadata.namespace');
    if (ns.length > 63 || !DNS1123_LABEL.test(ns)) {
      throw new ManifestError('metadata.namespace', `${JSON.stringify(ns)} must be a lowercase RFC 1123 label`);
    }
    meta.namespace = ns;
  } else if (m.namespace !== undefined) {
    throw new ManifestError('metadata.namespace', 'must not be set on a cluster-scoped object');
  }
  return meta;
}

function validateNamespace(o: Record<string, Json>): NamespaceObject {
  const metadata = validateMeta(o.metadata, false);
  if (!DNS1123_LABEL.test(metadata.name) || metadata.name.length > 63) {
    throw new ManifestError('metadata.name', `${JSON.stringify(metadata.name)} must be a lowercase RFC 1123 label`);
  }
  return { apiVersion: 'v1', kind: 'Namespace', metadata };
}

function validatePod(o: Record<string, Json>): PodObject {
  const metadata = validateMeta(o.metadata, true) as PodObject['metadata'];
  const specIn = o.spec === undefined ? {} : expectObject(o.spec, 'spec');
  const spec: PodObject['spec'] = { containers: [] };
  if (specIn.nodeName !== undefined) spec.nodeName = expectString(specIn.nodeName, 'spec.nodeName');
  if (specIn.hostNetwork !== undefined) {
    if (typeof specIn.hostNetwork !== 'boolean') throw new ManifestError('spec.hostNetwork', `must be a boolean, got ${describe(specIn.hostNetwork)}`);
    spec.hostNetwork = specIn.hostNetwork;
  }
  if (specIn.containers !== undefined) {
    if (!Array.isArray(specIn.containers)) throw new ManifestError('spec.containers', `must be an array, got ${describe(specIn.containers)}`);
    specIn.containers.forEach((c: Json, i: number) => {
      const f = `spec.containers[${i}]`;
      const co = expectObject(c, f);
      const name = expectString(co.name, `${f}.name`);
      const ports: PodObject['spec']['containers'][number]['ports'] = [];
      if (co.ports !== undefined) {
        if (!Array.isArray(co.ports)) throw new ManifestError(`${f}.ports`, `must be an array, got ${describe(co.ports)}`);
        co.ports.forEach((p: Json, j: number) => {
          const pf = `${f}.ports[${j}]`;
          const po = expectObject(p, pf);
          const port = po.containerPort;
          if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
            throw new ManifestError(`${pf}.containerPort`, `must be an integer in 1..65535, got ${describe(port)}`);
          }
          const protocol = po.protocol === undefined ? 'TCP' : expectString(po.protocol, `${pf}.protocol`);
          if (!['TCP', 'UDP', 'SCTP'].includes(protocol)) {
            throw new ManifestError(`${pf}.protocol`, `must be one of TCP, UDP, SCTP, got ${JSON.stringify(protocol)}`);
          }
          const entry: { containerPort: number; protocol: string; name?: string } = { containerPort: port, protocol };
          if (po.name !== undefined) entry.name = expectString(po.name, `${pf}.name`);
          ports.push(entry);
        });
      }
      spec.containers.push({ name, ports });
    });
  }
  return { apiVersion: 'v1', kind: 'Pod', metadata, spec };
}

const validators: Record<string, { apiVersion: string; validate: (o: Record<string, Json>) => KelpObject }> = {
  Namespace: { apiVersion: 'v1', validate: validateNamespace },
  Pod: { apiVersion: 'v1', validate: validatePod },
};

export const supportedKinds = Object.keys(validators);

/** Validates one decoded manifest document; throws ManifestError naming the field at fault. */
export function validateObject(doc: Json): KelpObject {
  const o = expectObject(doc, '(document)');
  const kind = expectString(o.kind, 'kind');
  const v = validators[kind];
  if (!v) throw new ManifestError('kind', `${JSON.stringify(kind)} is not supported (supported: ${supportedKinds.join(', ')})`);
  const apiVersion = expectString(o.apiVersion, 'apiVersion');
  if (apiVersion !== v.apiVersion) {
    throw new ManifestError('apiVersion', `${JSON.stringify(apiVersion)} is not supported for ${kind} (expected ${JSON.stringify(v.apiVersion)})`);
  }
  return v.validate(o);
}

/** How kubectl names an object to people: `Kind/name`, or `Kind/namespace/name` when namespaced. */
export function objectRef(o: { kind: string; metadata: { name: string; namespace?: string } }): string {
  return o.metadata.namespace === undefined ? `${o.kind}/${o.metadata.name}` : `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`;
}

/** Namespaces that exist in every cluster without a manifest, as Kubernetes creates them. */
export const IMPLICIT_NAMESPACES: ReadonlySet<string> = new Set(['default', 'kube-system', 'kube-public', 'kube-node-lease']);

/** Store key: `Kind/namespace/name` (namespace empty for cluster-scoped objects). */
export function objectKey(o: { kind: string; metadata: { name: string; namespace?: string } }): string {
  return `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}
