// Network configuration files as a runtime reads them through libcni (libcni/conf.go at HEAD):
// a conflist (`*.conflist`) or a single plugin config (`*.conf`, `*.json`) upconverted to a
// list of one, the effective cniVersion picked from `cniVersion` and `cniVersions`, and the
// search of a configuration directory by network name. Every problem is reported with the JSON
// path of its field, and marked `fatal` when libcni itself refuses to load the file for it; the
// others are what breaks later (a name ADD refuses, a version no plugin answers in).
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ID_PATTERN } from './env';
import { isRecord } from './fields';

/** The spec version libcni HEAD implements (version.Current()); newer `cniVersions` are skipped. */
export const LIBCNI_CURRENT = '1.1.0';
/** Every CNI spec version there is a result format for. */
export const SPEC_VERSIONS: readonly string[] = ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];

export interface Problem {
  severity: 'error' | 'warning';
  /** JSON path of the field (`plugins[1].type`), or a file name for problems of a whole file. */
  path: string;
  message: string;
  /** libcni refuses to load the configuration for this one. */
  fatal: boolean;
}

export interface PluginEntry {
  /** The plugin object as written; the runtime injects name, cniVersion, prevResult, runtimeConfig. */
  conf: Record<string, unknown>;
  type: string;
  /** Where it came from: `plugins[1]`, or `<network>/<file>.conf` for plugins kept beside the list. */
  path: string;
}

export interface ConfList {
  file: string;
  /** How libcni read the file: a list, or one plugin config upconverted to a list of one. */
  kind: 'conflist' | 'conf';
  name: string;
  /** What libcni sends to every plugin: the highest usable of cniVersion and cniVersions. */
  cniVersion: string;
  /** `cniVersion` as written ("" when absent). */
  declaredVersion: string;
  cniVersions?: string[];
  disableCheck: boolean;
  disableGC: boolean;
  loadOnlyInlinedPlugins: boolean;
  plugins: PluginEntry[];
  /** What libcni keeps as the list's bytes, and caches as `config` after ADD. */
  bytes: Buffer;
}

export interface ConfRead {
  /** Undefined when libcni would refuse the file (a fatal problem). */
  list?: ConfList;
  problems: Problem[];
}

/** libcni's version.ParseVersion: "" is 0.1.0, up to three numeric parts, missing parts are 0. */
export function goParseVersion(v: string): [number, number, number] | undefined {
  if (v === '') return [0, 1, 0];
  const parts = v.split('.');
  if (parts.length > 3 || parts.some((p) => !/^\d+$/.test(p))) return undefined;
  const [major, minor = 0, micro = 0] = parts.map(Number);
  return [major, minor, micro];
}

/** Compares like libcni's version.GreaterThan family; undefined when either does not parse. */
export function goCompareVersions(a: string, b: string): number | undefined {
  const pa = goParseVersion(a);
  const pb = goParseVersion(b);
  if (!pa || !pb) return undefined;
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pa[i] < pb[i] ? -1 : 1;
  return 0;
}

function show(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

const join = (base: string, key: string): string => (base === '' ? key : `${base}.${key}`);

class Problems {
  readonly list: Problem[] = [];
  error(p: string, message: string, fatal = false): void {
    this.list.push({ severity: 'error', path: p, message, fatal });
  }
  warning(p: string, message: string): void {
    this.list.push({ severity: 'warning', path: p, message, fatal: false });
  }
  get fatal(): boolean {
    return this.list.some((p) => p.fatal);
  }
}

/** A string field libcni decodes with Go types: other JSON types fail the whole file. */
function typedString(doc: Record<string, unknown>, key: string, base: string, out: Problems): string | undefined {
  const v = doc[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') {
    out.error(join(base, key), `must be a string, got ${show(v)}`, true);
    return undefined;
  }
  return v;
}

function stringList(v: unknown, p: string, out: Problems): void {
  if (v === undefined || v === null) return;
  if (!Array.isArray(v)) return out.error(p, `must be a list of strings, got ${show(v)}`, true);
  v.forEach((item, i) => {
    if (typeof item !== 'string') out.error(`${p}[${i}]`, `must be a string, got ${show(item)}`, true);
  });
}

/**
 * One plugin object, checked as libcni decodes it into types.PluginConf (wrong JSON types and a
 * missing `type` fail loading) plus what the runtime does with it later.
 */
function checkPlugin(raw: unknown, base: string, list: { cniVersion: string } | undefined, out: Problems): PluginEntry | undefined {
  if (!isRecord(raw)) {
    out.error(base || '(file)', `must be an object, got ${show(raw)}`, true);
    return undefined;
  }
  const type = typedString(raw, 'type', base, out);
  if (type === undefined || type === '') {
    const hint = base === '' && raw.plugins !== undefined ? ' (a .conf or .json file is read as one plugin config; this one has "plugins": name it .conflist)' : '';
    if (raw.type === undefined || raw.type === null || raw.type === '') out.error(join(base, 'type'), `missing${hint}`, true);
  } else if (type.includes('/') || type === '.' || type === '..') {
    out.error(join(base, 'type'), `must be a file name in the CNI path, got ${show(type)}`);
  }
  typedString(raw, 'name', base, out);
  const version = typedString(raw, 'cniVersion', base, out);
  if (list && version !== undefined && version !== '' && version !== list.cniVersion) {
    out.warning(join(base, 'cniVersion'), `${show(version)} is replaced by the list's ${show(list.cniVersion)} when the plugin runs`);
  }
  if (raw.capabilities !== undefined && raw.capabilities !== null) {
    if (!isRecord(raw.capabilities)) out.error(join(base, 'capabilities'), `must be an object of true/false, got ${show(raw.capabilities)}`, true);
    else {
      for (const [k, on] of Object.entries(raw.capabilities)) {
        if (on !== null && typeof on !== 'boolean') out.error(join(base, `capabilities.${k}`), `must be true or false, got ${show(on)}`, true);
      }
    }
  }
  if (raw.ipam !== undefined && raw.ipam !== null) {
    if (!isRecord(raw.ipam)) out.error(join(base, 'ipam'), `must be an object, got ${show(raw.ipam)}`, true);
    else typedString(raw.ipam, 'type', join(base, 'ipam'), out);
  }
  if (raw.dns !== undefined && raw.dns !== null) {
    const p = join(base, 'dns');
    if (!isRecord(raw.dns)) out.error(p, `must be an object, got ${show(raw.dns)}`, true);
    else {
      typedString(raw.dns, 'domain', p, out);
      for (const k of ['nameservers', 'search', 'options']) stringList(raw.dns[k], `${p}.${k}`, out);
    }
  }
  if (base !== '') {
    for (const k of ['prevResult', 'runtimeConfig']) {
      if (raw[k] !== undefined) out.warning(join(base, k), 'set by the runtime, not by the configuration (libcni sends or replaces it as it sees fit)');
    }
  }
  return type ? { conf: raw, type, path: base || '(plugin)' } : undefined;
}

/** Network names follow container ID rules (pkg/utils); libcni refuses others on ADD. */
function checkName(doc: Record<string, unknown>, out: Problems, missingFatal: boolean): string | undefined {
  if (doc.name === undefined) {
    out.error('name', 'missing', missingFatal);
    return undefined;
  }
  if (typeof doc.name !== 'string') {
    out.error('name', `must be a string, got ${show(doc.name)}`, true);
    return undefined;
  }
  if (doc.name === '') out.error('name', 'empty');
  else if (!ID_PATTERN.test(doc.name)) {
    out.error('name', `${show(doc.name)} must start with a letter or digit and contain only letters, digits, "_", "." and "-" (libcni refuses it on ADD)`);
  }
  return doc.name;
}

/** A cniVersion value: numeric x.y.z, and one the spec defines (non-fatal: libcni only parses it). */
function checkVersionValue(v: string, p: string, out: Problems): void {
  if (!/^\d+\.\d+\.\d+$/.test(v)) out.error(p, `${show(v)} is not a version like "1.0.0"`);
  else if (!SPEC_VERSIONS.includes(v)) {
    const newer = (goCompareVersions(v, LIBCNI_CURRENT) ?? 0) > 0;
    if (newer) out.warning(p, `${show(v)} is newer than the spec libcni implements (${LIBCNI_CURRENT})`);
    else out.error(p, `${show(v)} is not a CNI spec version (${SPEC_VERSIONS.join(', ')})`);
  }
}

/** `cniVersion` as written; "" when absent. Missing is legal for libcni (it means 0.1.0). */
function checkVersion(doc: Record<string, unknown>, out: Problems): string {
  if (doc.cniVersion === undefined || doc.cniVersion === null) {
    out.error('cniVersion', 'missing (libcni then assumes 0.1.0: no CHECK, and DEL gets no cached result)');
    return '';
  }
  if (typeof doc.cniVersion !== 'string') {
    out.error('cniVersion', `must be a string, got ${show(doc.cniVersion)}`, true);
    return '';
  }
  if (doc.cniVersion === '') out.error('cniVersion', 'empty (libcni then assumes 0.1.0)');
  else checkVersionValue(doc.cniVersion, 'cniVersion', out);
  return doc.cniVersion;
}

/**
 * The version libcni sends (conf.go): with `cniVersions`, the highest of it and `cniVersion`
 * that is not newer than libcni's own spec version; otherwise `cniVersion`.
 */
function effectiveVersion(doc: Record<string, unknown>, declared: string, out: Problems): { version: string; list?: string[] } {
  const raw = doc.cniVersions;
  if (raw === undefined || raw === null) return { version: declared };
  if (!Array.isArray(raw)) {
    out.error('cniVersions', `must be a list of versions, got ${show(raw)}`, true);
    return { version: declared };
  }
  const usable: string[] = [];
  const all: string[] = [];
  raw.forEach((v, i) => {
    const p = `cniVersions[${i}]`;
    if (typeof v !== 'string') return out.error(p, `must be a string, got ${show(v)}`, true);
    all.push(v);
    const cmp = goCompareVersions(v, LIBCNI_CURRENT);
    if (cmp === undefined) return out.error(p, `${show(v)} is not a version`, true);
    checkVersionValue(v, p, out);
    if (cmp <= 0) usable.push(v);
  });
  if (declared !== '') {
    const cmp = goCompareVersions(declared, LIBCNI_CURRENT);
    if (cmp === undefined) out.error('cniVersion', `${show(declared)} is not a version`, true);
    else if (cmp <= 0) usable.push(declared);
  }
  usable.sort((a, b) => goCompareVersions(a, b) ?? 0);
  const version = usable.length > 0 ? usable[usable.length - 1] : declared;
  if (declared !== '' && version !== declared) {
    out.warning('cniVersions', `plugins get cniVersion ${show(version)} from libcni 1.2 and later; older runtimes (libcni 1.1 and before) ignore cniVersions and send ${show(declared)}`);
  }
  return { version, list: all };
}

/** libcni's readBool: true/false, or the strings "true"/"false" in any case. */
function readBool(doc: Record<string, unknown>, key: string, out: Problems): boolean {
  const v = doc[key];
  if (v === undefined) return false;
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string' && ['true', 'false'].includes(v.toLowerCase())) {
    out.warning(key, `${show(v)} is a string; libcni accepts it, the spec wants true or false`);
    return v.toLowerCase() === 'true';
  }
  out.error(key, `must be true or false, got ${show(v)}`, true);
  return false;
}

/** libcni's ConfFiles: regular entries of `dir` with one of `exts`, sorted; none if `dir` is missing. */
export function confFiles(dir: string, exts: string[]): string[] {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return entries
    .filter((e) => !e.isDirectory() && exts.includes(path.extname(e.name)))
    .map((e) => path.join(dir, e.name))
    .sort();
}

function decode(bytes: Buffer, out: Problems): Record<string, unknown> | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    out.error('(file)', `not JSON: ${(e as Error).message}`, true);
    return undefined;
  }
  if (!isRecord(doc)) {
    out.error('(file)', `must be a JSON object, got ${show(doc)}`, true);
    return undefined;
  }
  return doc;
}

function parseList(file: string, bytes: Buffer, out: Problems): ConfList | undefined {
  const doc = decode(bytes, out);
  if (!doc) return undefined;
  const name = checkName(doc, out, true);
  const declared = checkVersion(doc, out);
  const { version, list: cniVersions } = effectiveVersion(doc, declared, out);
  const disableCheck = readBool(doc, 'disableCheck', out);
  const disableGC = readBool(doc, 'disableGC', out);
  const loadOnlyInlinedPlugins = readBool(doc, 'loadOnlyInlinedPlugins', out);
  if (doc.type !== undefined && doc.plugins === undefined) {
    out.warning('type', 'a conflist keeps its plugins in "plugins"; this looks like a single plugin config (name it .conf)');
  }
  const plugins: PluginEntry[] = [];
  if (doc.plugins === undefined || doc.plugins === null) {
    if (loadOnlyInlinedPlugins) out.error('plugins', 'missing, and loadOnlyInlinedPlugins is true', true);
  } else if (!Array.isArray(doc.plugins)) {
    out.error('plugins', `must be a list, got ${show(doc.plugins)}`, true);
  } else if (doc.plugins.length === 0) {
    out.error('plugins', 'empty: a conflist needs at least one plugin', true);
  } else {
    doc.plugins.forEach((p, i) => {
      const entry = checkPlugin(p, `plugins[${i}]`, { cniVersion: version }, out);
      if (entry) plugins.push(entry);
    });
  }
  // libcni 1.3 also loads <dir>/<network name>/*.conf as further plugins of the list.
  if (name !== undefined && name !== '' && !loadOnlyInlinedPlugins) {
    for (const f of confFiles(path.join(path.dirname(file), name), ['.conf'])) {
      const rel = path.join(name, path.basename(f));
      const sub = new Problems();
      const doc = decode(readFileSync(f), sub);
      const entry = doc && checkPlugin(doc, '', { cniVersion: version }, sub);
      for (const p of sub.list) out.list.push({ ...p, path: `${rel}:${p.path}` });
      if (entry) plugins.push({ ...entry, path: rel });
    }
  }
  if (plugins.length === 0 && !out.fatal) out.error('plugins', 'missing: a conflist needs at least one plugin', true);
  if (out.fatal || name === undefined) return undefined;
  return { file, kind: 'conflist', name, cniVersion: version, declaredVersion: declared, cniVersions, disableCheck, disableGC, loadOnlyInlinedPlugins, plugins, bytes };
}

/** A single plugin config: libcni's ConfFromBytes, then ConfListFromConf. */
function parseSingle(file: string, bytes: Buffer, out: Problems): ConfList | undefined {
  const doc = decode(bytes, out);
  if (!doc) return undefined;
  const name = checkName(doc, out, false);
  const declared = checkVersion(doc, out);
  const entry = checkPlugin(doc, '', undefined, out);
  if (out.fatal || !entry) return undefined;
  const listDoc = { name: name ?? '', cniVersion: declared, plugins: [doc] };
  return {
    file,
    kind: 'conf',
    name: name ?? '',
    cniVersion: declared,
    declaredVersion: declared,
    disableCheck: false,
    disableGC: false,
    loadOnlyInlinedPlugins: false,
    plugins: [{ ...entry, path: 'plugins[0]' }],
    bytes: Buffer.from(JSON.stringify(listDoc)),
  };
}

/**
 * Reads one configuration file the way libcni would find it in a configuration directory:
 * `*.conflist` as a list, `*.conf` and `*.json` as one plugin config. Other names are read by
 * their content, with a warning that runtimes never load them.
 */
export function readConfFile(file: string): ConfRead {
  const out = new Problems();
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (e) {
    out.error('(file)', (e as Error).message, true);
    return { problems: out.list };
  }
  const ext = path.extname(file);
  let asList = ext === '.conflist';
  if (ext !== '.conflist' && ext !== '.conf' && ext !== '.json') {
    out.warning('(file)', 'libcni loads only *.conflist, *.conf and *.json from a configuration directory; runtimes ignore this file');
    asList = /"plugins"\s*:/.test(bytes.toString('utf8'));
  }
  const list = asList ? parseList(file, bytes, out) : parseSingle(file, bytes, out);
  return { list, problems: out.list };
}

export class ConfNotFound extends Error {
  override readonly name = 'ConfNotFound';
}

function firstFatal(file: string, problems: Problem[]): Error {
  const p = problems.find((x) => x.fatal)!;
  return new Error(`${file}: ${p.path}: ${p.message}`);
}

/**
 * libcni's LoadNetworkConf: the first `*.conflist` (sorted) named `name`, else the first
 * `*.conf`/`*.json` upconverted. Like libcni, a file it cannot load stops the search.
 */
export function findNetwork(dir: string, name: string): ConfRead {
  const lists = confFiles(dir, ['.conflist']);
  for (const f of lists) {
    const r = readConfFile(f);
    if (!r.list) throw firstFatal(f, r.problems);
    if (r.list.name === name) return r;
  }
  const singles = confFiles(dir, ['.conf', '.json']);
  if (singles.length === 0 && lists.length === 0) throw new ConfNotFound(`no net configurations found in ${dir}`);
  for (const f of singles) {
    const r = readConfFile(f);
    if (!r.list) throw firstFatal(f, r.problems);
    if (r.list.name === name) return r;
  }
  throw new ConfNotFound(`no net configuration with name "${name}" in ${dir}`);
}
