// What every kind shares: the error that names the field at fault, the expect* readers of
// decoded JSON, Kubernetes' name and label rules, and ObjectMeta.
//
// Field paths are the API server's (`spec.ports[1].targetPort`), with one deliberate difference:
// a bad entry of a string map is named by its key (`metadata.labels["app"]`), where the API
// server names only the map.
//
// Readers follow Go's JSON decoding, which the API server uses: an optional field that is null
// is the same as one that is absent; a present field of the wrong type is an error.

export type Json = unknown;

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

export function fail(field: string, reason: string): never {
  throw new ManifestError(field, reason);
}

/**
 * An error from validating a part (its field named relative to the part: `addresses[0]`, or ""
 * for the part itself) renamed to the whole's path, `prefix` + the part's field. Lists of parts
 * are validated this way so that their paths (`endpoints[7].conditions.ready`) are spelled out
 * only on error: a bulk apply reads hundreds of thousands of fields.
 */
export function under(e: unknown, prefix: string): unknown {
  if (!(e instanceof ManifestError)) return e;
  const f = e.field;
  return new ManifestError(f === '' ? prefix : f.startsWith('[') ? `${prefix}${f}` : `${prefix}.${f}`, e.reason, e.source);
}

/** `fn` on each item of `list`, an error naming its field under `${field}[i]`. */
export function eachItem<T>(list: readonly Json[], field: string, fn: (item: Json) => T): T[] {
  const out: T[] = [];
  for (let i = 0; i < list.length; i++) {
    try {
      out.push(fn(list[i]));
    } catch (e) {
      throw under(e, `${field}[${i}]`);
    }
  }
  return out;
}

export function isObject(v: Json): v is Record<string, Json> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function describe(v: Json): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (isObject(v)) return 'an object';
  return typeof v === 'string' ? `string ${JSON.stringify(v)}` : `${typeof v} ${JSON.stringify(v)}`;
}

const absent = (v: Json): v is null | undefined => v === undefined || v === null;

export function expectObject(v: Json, field: string): Record<string, Json> {
  if (v === undefined) fail(field, 'required, missing');
  if (!isObject(v)) fail(field, `must be an object, got ${describe(v)}`);
  return v;
}

export function optObject(v: Json, field: string): Record<string, Json> | undefined {
  return absent(v) ? undefined : expectObject(v, field);
}

export function expectString(v: Json, field: string): string {
  if (v === undefined) fail(field, 'required, missing');
  if (typeof v !== 'string') fail(field, `must be a string, got ${describe(v)}`);
  return v;
}

/** An optional string; the empty string counts as unset, as Go's zero value does. */
export function optString(v: Json, field: string): string | undefined {
  if (absent(v)) return undefined;
  const s = expectString(v, field);
  return s === '' ? undefined : s;
}

export function optBoolean(v: Json, field: string): boolean | undefined {
  if (absent(v)) return undefined;
  if (typeof v !== 'boolean') fail(field, `must be a boolean, got ${describe(v)}`);
  return v;
}

export function expectInteger(v: Json, field: string, min: number, max: number): number {
  if (v === undefined) fail(field, 'required, missing');
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    fail(field, `must be an integer in ${min}..${max}, got ${describe(v)}`);
  }
  return v;
}

export function optInteger(v: Json, field: string, min: number, max: number): number | undefined {
  return absent(v) ? undefined : expectInteger(v, field, min, max);
}

/** An optional list; absent and null are the empty list. */
export function optArray(v: Json, field: string): Json[] {
  if (absent(v)) return [];
  if (!Array.isArray(v)) fail(field, `must be an array, got ${describe(v)}`);
  return v;
}

export function expectEnum<T extends string>(v: Json, field: string, allowed: readonly T[]): T {
  const s = expectString(v, field);
  if (!(allowed as readonly string[]).includes(s)) fail(field, `must be one of ${allowed.join(', ')}, got ${JSON.stringify(s)}`);
  return s as T;
}

/** An optional enum; absent, null and "" take the default (Kubernetes defaults them so). */
export function optEnum<T extends string>(v: Json, field: string, allowed: readonly T[]): T | undefined {
  return absent(v) || v === '' ? undefined : expectEnum(v, field, allowed);
}

/** A list of strings (absent or null: empty). */
export function stringList(v: Json, field: string): string[] {
  const list = optArray(v, field);
  for (let i = 0; i < list.length; i++) if (typeof list[i] !== 'string') expectString(list[i], `${field}[${i}]`);
  return list.slice() as string[];
}

/**
 * A map of strings (absent or null: empty); `problem` checks each entry, its field named by key.
 * The field's name is spelled out only for an error: maps are read for every object of a bulk apply.
 */
export function stringMap(v: Json, field: string, problem?: (key: string, value: string) => string | undefined): Record<string, string> {
  const obj = optObject(v, field);
  const out: Record<string, string> = {};
  if (!obj) return out;
  for (const k in obj) {
    if (!Object.prototype.hasOwnProperty.call(obj, k)) continue;
    const val = obj[k];
    const f = () => `${field}[${JSON.stringify(k)}]`;
    if (typeof val !== 'string') expectString(val, f());
    const p = problem?.(k, val as string);
    if (p) fail(f(), p);
    out[k] = val as string;
  }
  return out;
}

// Names, as k8s.io/apimachinery/pkg/util/validation defines them.
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const QUALIFIED_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

export type NameRule = 'DNS1123Label' | 'DNS1123Subdomain' | 'DNS1035Label';

const NAME_RULES: Record<NameRule, { max: number; re: RegExp; says: string }> = {
  DNS1123Label: { max: 63, re: DNS1123_LABEL, says: "a lowercase RFC 1123 label (at most 63 characters of a-z, 0-9 and '-', starting and ending with an alphanumeric)" },
  DNS1123Subdomain: {
    max: 253,
    re: DNS1123_SUBDOMAIN,
    says: "a lowercase RFC 1123 subdomain (at most 253 characters of a-z, 0-9, '-' and '.', each dot-separated part starting and ending with an alphanumeric)",
  },
  DNS1035Label: { max: 63, re: DNS1035_LABEL, says: "a lowercase RFC 1035 label (at most 63 characters of a-z, 0-9 and '-', starting with a letter and ending with an alphanumeric)" },
};

export function nameProblem(s: string, rule: NameRule): string | undefined {
  const r = NAME_RULES[rule];
  return s.length <= r.max && r.re.test(s) ? undefined : `${JSON.stringify(s)} must be ${r.says}`;
}

export function checkName(s: string, field: string, rule: NameRule): string {
  const problem = nameProblem(s, rule);
  if (problem) fail(field, problem);
  return s;
}

/** A qualified name: `[prefix/]name`, prefix a DNS subdomain, name at most 63 characters. */
export function qualifiedNameProblem(s: string): string | undefined {
  const slash = s.indexOf('/');
  if (slash >= 0 && s.indexOf('/', slash + 1) >= 0) return `${JSON.stringify(s)} must be a qualified name: an optional DNS subdomain prefix and '/', then a name`;
  const name = slash < 0 ? s : s.slice(slash + 1);
  if (slash >= 0) {
    const prefix = s.slice(0, slash);
    if (prefix === '') return `${JSON.stringify(s)} must be a qualified name: the prefix before '/' must be non-empty`;
    if (nameProblem(prefix, 'DNS1123Subdomain')) return `${JSON.stringify(s)} must be a qualified name: the prefix ${JSON.stringify(prefix)} must be a lowercase RFC 1123 subdomain`;
  }
  if (name.length === 0 || name.length > 63 || !QUALIFIED_NAME.test(name)) {
    return `${JSON.stringify(s)} must be a qualified name: the name part must be 1 to 63 characters of alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric`;
  }
  return undefined;
}

export function labelValueProblem(s: string): string | undefined {
  return s === '' || (s.length <= 63 && QUALIFIED_NAME.test(s))
    ? undefined
    : `label value ${JSON.stringify(s)} is invalid (empty, or at most 63 characters of alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric)`;
}

export function labelProblem(key: string, value: string): string | undefined {
  return qualifiedNameProblem(key) ?? labelValueProblem(value);
}

export function checkLabel(key: string, value: string, field: string): void {
  const problem = labelProblem(key, value);
  if (problem) fail(field, problem);
}

/** A label map (metadata.labels, a Service's selector, a selector's matchLabels). */
export function labelMap(v: Json, field: string): Record<string, string> {
  return stringMap(v, field, labelProblem);
}

const MAX_ANNOTATIONS_BYTES = 256 * 1024;

function annotationMap(v: Json, field: string): Record<string, string> {
  let total = 0;
  const out = stringMap(v, field, (key, value) => {
    total += key.length + value.length;
    // The API server checks annotation keys in lower case: upper case is allowed in the name part.
    return qualifiedNameProblem(key.toLowerCase());
  });
  if (total > MAX_ANNOTATIONS_BYTES) fail(field, `may not be more than ${MAX_ANNOTATIONS_BYTES} bytes in total, got ${total}`);
  return out;
}

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  /** Opaque, from the API server; a watch resumes from it. Never compared for order. */
  resourceVersion?: string;
  /** The spec's generation, from the API server; a status condition reports which one it saw. */
  generation?: number;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export type NamespacedMeta = ObjectMeta & { namespace: string };

/**
 * Validates metadata, keeping what kelp uses. A namespaced object without a namespace is in
 * `default`, as kubectl puts it there; the rest of real API metadata (managedFields,
 * ownerReferences, creationTimestamp, …) is tolerated and dropped.
 */
export function validateMeta(v: Json, scope: { namespaced: true; name: NameRule }): NamespacedMeta;
export function validateMeta(v: Json, scope: { namespaced: false; name: NameRule }): ObjectMeta;
export function validateMeta(v: Json, scope: { namespaced: boolean; name: NameRule }): ObjectMeta {
  const m = expectObject(v, 'metadata');
  const name = checkName(expectString(m.name, 'metadata.name'), 'metadata.name', scope.name);
  const meta: ObjectMeta = { name, labels: {}, annotations: {} };
  if (scope.namespaced) {
    meta.namespace = checkName(optString(m.namespace, 'metadata.namespace') ?? 'default', 'metadata.namespace', 'DNS1123Label');
  } else if (optString(m.namespace, 'metadata.namespace') !== undefined) {
    fail('metadata.namespace', 'must not be set on a cluster-scoped object');
  }
  const uid = optString(m.uid, 'metadata.uid');
  if (uid !== undefined) meta.uid = uid;
  const resourceVersion = optString(m.resourceVersion, 'metadata.resourceVersion');
  if (resourceVersion !== undefined) meta.resourceVersion = resourceVersion;
  const generation = optInteger(m.generation, 'metadata.generation', 0, Number.MAX_SAFE_INTEGER);
  if (generation !== undefined) meta.generation = generation;
  meta.labels = labelMap(m.labels, 'metadata.labels');
  meta.annotations = annotationMap(m.annotations, 'metadata.annotations');
  return meta;
}
