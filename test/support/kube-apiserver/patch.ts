// The PATCH bodies Kubernetes clients send: JSON merge patch (RFC 7386), JSON patch
// (RFC 6902, client-node 1.x's default content type for every patch* call) and strategic
// merge patch (kubectl label/annotate/apply/patch on built-in kinds).
//
// Strategic merge patch is approximated: the real server reads each Go field's
// patchStrategy/patchMergeKey tags; here a list merges by key only where `mergeKeys` names
// it (the fields of the kinds this server serves that carry such tags), and every other
// list is replaced, as it is for untagged fields. Directives `$patch` (replace/delete/merge),
// `$retainKeys`, `$deleteFromPrimitiveList/<f>` and `$setElementOrder/<f>` are honoured;
// `$setElementOrder` puts the listed elements first in its order, then the rest in their
// previous order (the real server interleaves server-only elements by position).
import { errors } from './status';

export type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  }
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    if (ka.length !== Object.keys(b).length) return false;
    return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
}

export function mergePatch(target: Json | undefined, patch: Json): Json {
  if (!isObject(patch)) return patch;
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

// ---- JSON patch ----

function parsePointer(pointer: string): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw invalidPatch(`invalid JSON pointer "${pointer}"`);
  return pointer
    .slice(1)
    .split('/')
    .map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function invalidPatch(message: string) {
  return errors.invalid('Patch', '', '', [{ reason: 'FieldValueInvalid', field: 'patch', message }]);
}

/** The container holding the pointer's last token, and that token. */
function locate(doc: Json, tokens: string[], op: string): { parent: Json; key: string } {
  let cur: Json = doc;
  for (const t of tokens.slice(0, -1)) {
    const next: Json | undefined = Array.isArray(cur) ? cur[Number(t)] : isObject(cur) ? cur[t] : undefined;
    if (next === undefined) throw invalidPatch(`jsonpatch ${op} operation does not apply: doc is missing path: "/${tokens.join('/')}"`);
    cur = next;
  }
  return { parent: cur, key: tokens[tokens.length - 1] };
}

function arrayIndex(arr: Json[], key: string, forAdd: boolean, op: string): number {
  if (forAdd && key === '-') return arr.length;
  if (!/^(0|[1-9]\d*)$/.test(key)) throw invalidPatch(`jsonpatch ${op}: invalid array index "${key}"`);
  const i = Number(key);
  if (i > arr.length || (!forAdd && i === arr.length)) throw invalidPatch(`jsonpatch ${op}: index ${i} out of bounds`);
  return i;
}

function getAt(doc: Json, tokens: string[], op: string): Json {
  if (tokens.length === 0) return doc;
  const { parent, key } = locate(doc, tokens, op);
  const v = Array.isArray(parent) ? parent[arrayIndex(parent, key, false, op)] : isObject(parent) ? parent[key] : undefined;
  if (v === undefined) throw invalidPatch(`jsonpatch ${op} operation does not apply: doc is missing key: /${tokens.join('/')}`);
  return v;
}

function addAt(doc: Json, tokens: string[], value: Json, op: string): Json {
  if (tokens.length === 0) return value;
  const { parent, key } = locate(doc, tokens, op);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, key, true, op), 0, value);
  else if (isObject(parent)) parent[key] = value;
  else throw invalidPatch(`jsonpatch ${op} operation does not apply: doc is missing path: /${tokens.join('/')}`);
  return doc;
}

function removeAt(doc: Json, tokens: string[], op: string): Json {
  getAt(doc, tokens, op);
  const { parent, key } = locate(doc, tokens, op);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, key, false, op), 1);
  else delete (parent as JsonObject)[key];
  return doc;
}

export function jsonPatch(target: Json, ops: Json): Json {
  if (!Array.isArray(ops)) throw errors.badRequest('json patch must be a list of operations');
  let doc = structuredClone(target);
  for (const raw of ops) {
    if (!isObject(raw) || typeof raw.op !== 'string' || typeof raw.path !== 'string') {
      throw errors.badRequest(`invalid json patch operation: ${JSON.stringify(raw)}`);
    }
    const path = parsePointer(raw.path);
    const from = typeof raw.from === 'string' ? parsePointer(raw.from) : undefined;
    const value = raw.value === undefined ? undefined : structuredClone(raw.value);
    switch (raw.op) {
      case 'add':
        if (value === undefined) throw invalidPatch('jsonpatch add operation requires a value');
        doc = addAt(doc, path, value, 'add');
        break;
      case 'remove':
        doc = removeAt(doc, path, 'remove');
        break;
      case 'replace':
        if (value === undefined) throw invalidPatch('jsonpatch replace operation requires a value');
        doc = addAt(removeAt(doc, path, 'replace'), path, value, 'replace');
        break;
      case 'move': {
        if (!from) throw invalidPatch('jsonpatch move operation requires "from"');
        const moved = getAt(doc, from, 'move');
        doc = addAt(removeAt(doc, from, 'move'), path, moved, 'move');
        break;
      }
      case 'copy':
        if (!from) throw invalidPatch('jsonpatch copy operation requires "from"');
        doc = addAt(doc, path, structuredClone(getAt(doc, from, 'copy')), 'copy');
        break;
      case 'test':
        if (!deepEqual(getAt(doc, path, 'test'), value)) {
          throw invalidPatch(`testing value ${raw.path} failed: test failed`);
        }
        break;
      default:
        throw errors.badRequest(`Unexpected kind: ${raw.op}`);
    }
  }
  return doc;
}

// ---- strategic merge patch (approximation, see the file comment) ----

/**
 * Lists merged rather than replaced, by path (`[]` marks "each element of"): the merge key,
 * or `''` for a list of scalars merged as a set.
 */
export type MergeKeys = Readonly<Record<string, string>>;

const DIRECTIVE_ORDER = '$setElementOrder/';
const DIRECTIVE_DELETE_PRIMITIVE = '$deleteFromPrimitiveList/';

export function strategicMergePatch(target: Json | undefined, patch: Json, mergeKeys: MergeKeys): Json {
  const out = smpValue(target, patch, '', mergeKeys);
  return out === undefined ? {} : out;
}

/** `undefined` means "delete this value" (`$patch: delete`). */
function smpValue(target: Json | undefined, patch: Json, path: string, keys: MergeKeys): Json | undefined {
  if (isObject(patch)) return smpObject(isObject(target) ? target : undefined, patch, path, keys);
  if (Array.isArray(patch)) return smpList(Array.isArray(target) ? target : undefined, patch, path, keys);
  return patch;
}

function stripDirectives(v: Json): Json {
  if (Array.isArray(v)) return v.map(stripDirectives);
  if (!isObject(v)) return v;
  const out: JsonObject = {};
  for (const [k, x] of Object.entries(v)) if (!k.startsWith('$')) out[k] = stripDirectives(x);
  return out;
}

function smpObject(target: JsonObject | undefined, patch: JsonObject, path: string, keys: MergeKeys): Json | undefined {
  const directive = patch.$patch;
  if (directive === 'delete') return undefined;
  if (directive === 'replace') return stripDirectives(patch);
  const out: JsonObject = { ...(target ?? {}) };
  const child = (k: string) => (path ? `${path}.${k}` : k);
  for (const [k, v] of Object.entries(patch)) {
    if (k === '$patch' || k === '$retainKeys' || k.startsWith(DIRECTIVE_ORDER)) continue;
    if (k.startsWith(DIRECTIVE_DELETE_PRIMITIVE)) {
      const field = k.slice(DIRECTIVE_DELETE_PRIMITIVE.length);
      const drop = Array.isArray(v) ? v : [];
      const cur = out[field];
      if (Array.isArray(cur)) out[field] = cur.filter((x) => !drop.some((d) => deepEqual(d, x)));
      continue;
    }
    if (v === null) {
      delete out[k];
      continue;
    }
    const merged = smpValue(out[k], v, child(k), keys);
    if (merged === undefined) delete out[k];
    else out[k] = merged;
  }
  for (const [k, order] of Object.entries(patch)) {
    if (!k.startsWith(DIRECTIVE_ORDER) || !Array.isArray(order)) continue;
    const field = k.slice(DIRECTIVE_ORDER.length);
    const list = out[field];
    if (Array.isArray(list)) out[field] = applyOrder(list, order, keys[child(field)]);
  }
  const retain = patch.$retainKeys;
  if (Array.isArray(retain)) {
    for (const k of Object.keys(out)) if (!retain.includes(k)) delete out[k];
  }
  return out;
}

function applyOrder(list: Json[], order: Json[], key: string | undefined): Json[] {
  const id = (x: Json) => (key && isObject(x) ? x[key] : x);
  const wanted = order.map((o) => (key && isObject(o) ? o[key] : o));
  const first: Json[] = [];
  for (const w of wanted) {
    const found = list.find((x) => deepEqual(id(x), w));
    if (found !== undefined) first.push(found);
  }
  return [...first, ...list.filter((x) => !first.includes(x))];
}

function smpList(target: Json[] | undefined, patch: Json[], path: string, keys: MergeKeys): Json[] {
  const key = keys[path];
  if (key === undefined) return stripDirectives(patch) as Json[];
  const out = [...(target ?? [])];
  if (key === '') {
    for (const v of patch) if (!out.some((x) => deepEqual(x, v))) out.push(v);
    return out;
  }
  if (patch.some((p) => isObject(p) && p.$patch === 'replace')) {
    return patch.filter((p) => !(isObject(p) && p.$patch === 'replace')).map(stripDirectives);
  }
  for (const p of patch) {
    if (!isObject(p) || p[key] === undefined) {
      throw errors.badRequest(`map: ${JSON.stringify(p)} does not contain declared merge key: ${key}`);
    }
    const at = out.findIndex((x) => isObject(x) && deepEqual(x[key], p[key]));
    if (p.$patch === 'delete') {
      if (at >= 0) out.splice(at, 1);
      continue;
    }
    const merged = smpValue(at >= 0 ? out[at] : undefined, p, `${path}[]`, keys);
    if (merged === undefined) {
      if (at >= 0) out.splice(at, 1);
    } else if (at >= 0) out[at] = merged;
    else out.push(merged);
  }
  return out;
}
