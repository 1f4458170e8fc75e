// The runtime side of CNI, as libcni does it (libcni/api.go, pkg/invoke at HEAD): run a
// conflist's plugins for ADD (in order, each getting the previous result as prevResult), CHECK
// (in order, with the cached result) and DEL (in reverse, with the cached result), keep the
// result cache in <cacheDir>/results, and ask plugins which versions they support (VERSION), so
// `kelp cni` reproduces what a runtime would do and see.
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ConfList, goCompareVersions, LIBCNI_CURRENT, PluginEntry, Problem } from './conflist';
import { findPlugin } from './delegate';
import { ID_PATTERN, ifnameProblem } from './env';
import { isRecord } from './fields';
import { formatResult, parseResult } from './result';

export const DEFAULT_CACHE_DIR = '/var/lib/cni';
export const CACHE_KIND = 'cniCacheV1';

/** libcni's RuntimeConf: one attachment and what the runtime passes with it. */
export interface RuntimeConf {
  containerId: string;
  netns: string;
  ifname: string;
  /** CNI_ARGS pairs, in order. */
  args: Array<[string, string]>;
  /** Capability values, injected as runtimeConfig for plugins that declare the capability. */
  capabilityArgs?: Record<string, unknown>;
}

/** The spec's error object, as libcni reads it from a failed plugin (types.Error). */
export interface PluginError {
  code: number;
  msg: string;
  details?: string;
}

export interface ExecOptions {
  /** CNI_PATH directories, searched in order. */
  cniPath: string[];
  timeoutMs?: number;
}

interface ExecOutcome {
  stdout: string;
  stderr: string;
  error?: PluginError;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function spawnOnce(binary: string, env: NodeJS.ProcessEnv, stdin: Buffer, timeoutMs: number): Promise<{ code: number | null; signal: string | null; stdout: Buffer; stderr: Buffer; spawnError?: NodeJS.ErrnoException; timedOut: boolean }> {
  return new Promise((resolve) => {
    const child = spawn(binary, [], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let spawnError: NodeJS.ErrnoException | undefined;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e) => (spawnError = e));
    // A plugin may exit without reading all of stdin.
    child.stdin.on('error', () => undefined);
    child.stdin.end(stdin);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err), spawnError, timedOut });
    });
  });
}

/**
 * Execs a plugin like invoke.RawExec: retries "text file busy" (a binary being installed) five
 * times a second apart, and turns a failure into the plugin's error object, or libcni's wording
 * when stdout has none.
 */
export async function execPlugin(binary: string, env: NodeJS.ProcessEnv, stdin: Buffer, timeoutMs = 60_000): Promise<ExecOutcome> {
  for (let attempt = 0; ; attempt++) {
    const r = await spawnOnce(binary, env, stdin, timeoutMs);
    if (r.spawnError?.code === 'ETXTBSY' && attempt < 5) {
      await sleep(1000);
      continue;
    }
    const stdout = r.stdout.toString('utf8');
    const stderr = r.stderr.toString('utf8');
    if (!r.spawnError && r.code === 0) return { stdout, stderr };
    const why = r.spawnError ? r.spawnError.message : r.timedOut ? `timed out after ${timeoutMs / 1000} s` : r.signal ? `signal: ${r.signal}` : `exit status ${r.code}`;
    return { stdout, stderr, error: pluginError(why, stdout, stderr) };
  }
}

/** invoke.RawExec.pluginErr. */
function pluginError(why: string, stdout: string, stderr: string): PluginError {
  if (stdout.length === 0) {
    return { code: 0, msg: stderr.length === 0 ? `netplugin failed with no error message: ${why}` : `netplugin failed: ${JSON.stringify(stderr)}: ${why}` };
  }
  try {
    const o = JSON.parse(stdout) as unknown;
    if (isRecord(o)) {
      const code = o.code ?? 0;
      const msg = o.msg ?? '';
      const details = o.details ?? '';
      if (typeof code === 'number' && Number.isInteger(code) && code >= 0 && typeof msg === 'string' && typeof details === 'string') {
        return details === '' ? { code, msg } : { code, msg, details };
      }
    }
    throw new Error('not an error object');
  } catch (e) {
    return { code: 0, msg: `netplugin failed but error parsing its diagnostic message ${JSON.stringify(stdout)}: ${(e as Error).message}` };
  }
}

/** invoke.Args.AsEnv: the caller's environment with every CNI_* variable set (empty when unused). */
function cniEnv(command: string, rt: Partial<RuntimeConf>, cniPath: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    CNI_COMMAND: command,
    CNI_CONTAINERID: rt.containerId ?? '',
    CNI_NETNS: rt.netns ?? '',
    CNI_ARGS: (rt.args ?? []).map(([k, v]) => `${k}=${v}`).join(';'),
    CNI_IFNAME: rt.ifname ?? '',
    CNI_PATH: cniPath,
  };
}

/** Supported versions from a plugin's VERSION answer (invoke.GetVersionInfo + PluginDecoder). */
export async function getVersionInfo(binary: string, timeoutMs?: number): Promise<{ supportedVersions: string[] } | { error: string }> {
  // libcni sets dummies for plugins built against an old skel, which wanted them for VERSION too.
  const env = cniEnv('VERSION', { netns: 'dummy', ifname: 'dummy' }, 'dummy');
  const r = await execPlugin(binary, env, Buffer.from(JSON.stringify({ cniVersion: LIBCNI_CURRENT })), timeoutMs);
  if (r.error) {
    // A plugin older than VERSION answers this way; libcni takes it as "0.1.0 only".
    if (r.error.msg === 'unknown CNI_COMMAND: VERSION') return { supportedVersions: ['0.1.0'] };
    return { error: r.error.msg };
  }
  let info: unknown;
  try {
    info = JSON.parse(r.stdout);
  } catch (e) {
    return { error: `decoding version info: ${(e as Error).message}` };
  }
  if (!isRecord(info) || typeof info.cniVersion !== 'string' || info.cniVersion === '') return { error: 'decoding version info: missing field cniVersion' };
  const list = info.supportedVersions;
  if (!Array.isArray(list) || list.length === 0) {
    if (info.cniVersion === '0.2.0') return { supportedVersions: ['0.1.0', '0.2.0'] };
    return { error: 'decoding version info: missing field supportedVersions' };
  }
  if (!list.every((v) => typeof v === 'string')) return { error: 'decoding version info: supportedVersions must be strings' };
  return { supportedVersions: list as string[] };
}

/** libcni's buildOneConfig: name, cniVersion, prevResult, and runtimeConfig for declared capabilities. */
export function buildPluginConfig(list: ConfList, plugin: PluginEntry, prevResult: Record<string, unknown> | undefined, rt: RuntimeConf): Record<string, unknown> {
  const conf: Record<string, unknown> = { ...plugin.conf, name: list.name, cniVersion: list.cniVersion };
  if (prevResult !== undefined) conf.prevResult = prevResult;
  const runtimeConfig: Record<string, unknown> = {};
  const caps = isRecord(plugin.conf.capabilities) ? plugin.conf.capabilities : {};
  for (const [cap, on] of Object.entries(caps)) {
    if (on === true && rt.capabilityArgs && Object.prototype.hasOwnProperty.call(rt.capabilityArgs, cap)) runtimeConfig[cap] = rt.capabilityArgs[cap];
  }
  // Only when something matched: otherwise a runtimeConfig written in the file stays as it is.
  if (Object.keys(runtimeConfig).length > 0) conf.runtimeConfig = runtimeConfig;
  return conf;
}

// ---- result cache ---------------------------------------------------------------------------

/** What libcni keeps per attachment (cachedInfo in libcni/api.go). */
export interface CacheEntry {
  kind: string;
  containerId: string;
  /** The conflist's bytes, base64 (Go encodes []byte so). */
  config: string;
  ifName: string;
  networkName: string;
  netns?: string;
  cniArgs?: Array<[string, string]>;
  capabilityArgs?: Record<string, unknown>;
  result?: Record<string, unknown>;
}

export function cacheFile(cacheDir: string, network: string, rt: Pick<RuntimeConf, 'containerId' | 'ifname'>): string {
  if (!network || !rt.containerId || !rt.ifname) {
    throw new Error(`cache file path requires network name ("${network}"), container ID ("${rt.containerId}"), and interface name ("${rt.ifname}")`);
  }
  return path.join(cacheDir, 'results', `${network}-${rt.containerId}-${rt.ifname}`);
}

function writeCache(cacheDir: string, list: ConfList, rt: RuntimeConf, result: Record<string, unknown>): string {
  const file = cacheFile(cacheDir, list.name, rt);
  // Field order and omissions as Go marshals cachedInfo (omitempty drops empty lists and maps).
  const entry: CacheEntry = {
    kind: CACHE_KIND,
    containerId: rt.containerId,
    config: list.bytes.toString('base64'),
    ifName: rt.ifname,
    networkName: list.name,
  };
  if (rt.netns) entry.netns = rt.netns;
  if (rt.args.length > 0) entry.cniArgs = rt.args;
  if (rt.capabilityArgs && Object.keys(rt.capabilityArgs).length > 0) entry.capabilityArgs = rt.capabilityArgs;
  entry.result = result;
  mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, JSON.stringify(entry), { mode: 0o600 });
  return file;
}

/** The cache entry of an attachment; undefined when there is none or it is not a cniCacheV1 entry. */
export function readCacheEntry(cacheDir: string, network: string, rt: Pick<RuntimeConf, 'containerId' | 'ifname'>): CacheEntry | undefined {
  let text: string;
  try {
    text = readFileSync(cacheFile(cacheDir, network, rt), 'utf8');
  } catch {
    return undefined;
  }
  try {
    const o = JSON.parse(text) as unknown;
    return isRecord(o) && o.kind === CACHE_KIND ? (o as unknown as CacheEntry) : undefined;
  } catch {
    return undefined;
  }
}

/** A result converted to `version` (types.Result.GetAsVersion); unchanged when already in it. */
function resultAsVersion(raw: Record<string, unknown>, version: string): Record<string, unknown> {
  const from = typeof raw.cniVersion === 'string' && raw.cniVersion !== '' ? raw.cniVersion : '0.1.0';
  const to = version === '' ? '0.1.0' : version;
  if (from === to) return raw;
  return formatResult(parseResult(raw, from, 'result'), to);
}

/**
 * libcni's getCachedResult: undefined when there is no cache file; a file that is not a
 * cniCacheV1 entry is read as a bare result (the format before 0.8); either is converted to the
 * list's version.
 */
function cachedResult(cacheDir: string, list: ConfList, rt: RuntimeConf): Record<string, unknown> | undefined {
  let text: string;
  try {
    text = readFileSync(cacheFile(cacheDir, list.name, rt), 'utf8');
  } catch {
    return undefined;
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`failed to read cached result: ${(e as Error).message}`);
  }
  const raw = isRecord(doc) && doc.kind === CACHE_KIND ? doc.result : doc;
  if (!isRecord(raw)) throw new Error('failed to read cached result: not a result object');
  try {
    return resultAsVersion(raw, list.cniVersion);
  } catch (e) {
    throw new Error(`failed to convert cached result to config version "${list.cniVersion}": ${(e as Error).message}`);
  }
}

function deleteCache(cacheDir: string, network: string, rt: RuntimeConf): void {
  try {
    rmSync(cacheFile(cacheDir, network, rt), { force: true });
  } catch {
    // libcni ignores these too
  }
}

// ---- running a list ----------------------------------------------------------------------------

export type ChainCommand = 'ADD' | 'CHECK' | 'DEL';

/** One plugin run of a chain. */
export interface ChainStep {
  /** Position in the list (DEL counts down). */
  index: number;
  type: string;
  path: string;
  binary?: string;
  command: ChainCommand;
  /** Exactly what the plugin got on stdin. */
  stdin?: Record<string, unknown>;
  /** ADD: the plugin's result (with cniVersion filled in as libcni does). */
  result?: Record<string, unknown>;
  error?: PluginError;
  stderr: string;
  durationMs: number;
}

export interface ChainOutcome {
  command: ChainCommand;
  ok: boolean;
  steps: ChainStep[];
  /** ADD: the final result, which is what gets cached. */
  result?: Record<string, unknown>;
  /** Why the chain failed, worded as libcni wraps it. */
  error?: string;
  cacheFile?: string;
  /** What the runner did besides running plugins (cache read, written, removed; CHECK skipped). */
  notes: string[];
}

export interface ChainOptions extends ExecOptions {
  cacheDir: string;
  /** Called after every plugin run, so a caller can print as it goes. */
  onStep?: (step: ChainStep) => void;
  /** Called with every note as it is made. */
  onNote?: (note: string) => void;
}

function note(out: ChainOutcome, opts: ChainOptions, text: string): void {
  out.notes.push(text);
  opts.onNote?.(text);
}

function pluginDescription(p: PluginEntry): string {
  const name = typeof p.conf.name === 'string' && p.conf.name !== '' ? ` name=${JSON.stringify(p.conf.name)}` : '';
  return `type=${JSON.stringify(p.type)}${name}`;
}

/** libcni's fixupResultVersion, then a check that the result reads in its version (create.Create). */
function decodeResult(stdout: string, confVersion: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(stdout);
  } catch (e) {
    throw new Error(`failed to unmarshal raw result: ${(e as Error).message} result ${JSON.stringify(stdout)}`);
  }
  const raw: Record<string, unknown> = isRecord(doc) ? doc : {};
  if (typeof raw.cniVersion !== 'string' || raw.cniVersion === '') raw.cniVersion = confVersion;
  parseResult(raw, raw.cniVersion as string, 'result');
  return raw;
}

/** Validations libcni's addNetwork makes before running a plugin (pkg/utils). */
function attachmentProblem(list: ConfList, rt: RuntimeConf): string | undefined {
  if (!rt.containerId) return 'missing containerID';
  if (!ID_PATTERN.test(rt.containerId)) return `error: invalid characters in containerID "${rt.containerId}"`;
  if (!list.name) return 'missing network name';
  if (!ID_PATTERN.test(list.name)) return `error: invalid characters found in network name "${list.name}"`;
  if (!rt.ifname) return 'interface name is empty';
  const bad = ifnameProblem(rt.ifname);
  return bad === undefined ? undefined : `interface name "${rt.ifname}" ${bad}`;
}

async function runStep(command: ChainCommand, index: number, list: ConfList, plugin: PluginEntry, prev: Record<string, unknown> | undefined, rt: RuntimeConf, opts: ChainOptions): Promise<ChainStep> {
  const started = Date.now();
  const step: ChainStep = { index, type: plugin.type, path: plugin.path, command, stderr: '', durationMs: 0 };
  const finish = (): ChainStep => {
    step.durationMs = Date.now() - started;
    opts.onStep?.(step);
    return step;
  };
  try {
    step.binary = findPlugin(plugin.type, opts.cniPath);
  } catch {
    step.error = { code: 0, msg: `failed to find plugin ${JSON.stringify(plugin.type)} in path [${opts.cniPath.join(' ')}]` };
    return finish();
  }
  const invalid = command === 'ADD' ? attachmentProblem(list, rt) : undefined;
  if (invalid !== undefined) {
    step.error = { code: 0, msg: invalid };
    return finish();
  }
  step.stdin = buildPluginConfig(list, plugin, prev, rt);
  const r = await execPlugin(step.binary, cniEnv(command, rt, opts.cniPath.join(':')), Buffer.from(JSON.stringify(step.stdin)), opts.timeoutMs);
  step.stderr = r.stderr;
  if (r.error) step.error = r.error;
  else if (command === 'ADD') {
    try {
      step.result = decodeResult(r.stdout, list.cniVersion);
    } catch (e) {
      step.error = { code: 0, msg: (e as Error).message };
    }
  }
  return finish();
}

/** AddNetworkList: plugins in order, each given the previous result; the final result is cached. */
async function addList(list: ConfList, rt: RuntimeConf, opts: ChainOptions): Promise<ChainOutcome> {
  const out: ChainOutcome = { command: 'ADD', ok: false, steps: [], notes: [] };
  let prev: Record<string, unknown> | undefined;
  for (const [i, plugin] of list.plugins.entries()) {
    const step = await runStep('ADD', i, list, plugin, prev, rt, opts);
    out.steps.push(step);
    if (step.error) {
      out.error = `plugin ${pluginDescription(plugin)} failed (add): ${step.error.msg}`;
      note(out, opts, 'nothing cached: a runtime would now call DEL for this attachment');
      return out;
    }
    prev = step.result;
  }
  out.result = prev;
  try {
    out.cacheFile = writeCache(opts.cacheDir, list, rt, prev!);
    note(out, opts, `result cached in ${out.cacheFile}`);
  } catch (e) {
    out.error = `failed to set network ${JSON.stringify(list.name)} cached result: ${(e as Error).message}`;
    return out;
  }
  out.ok = true;
  return out;
}

/** CheckNetworkList: needs 0.4.0, honours disableCheck, plugins in order with the cached result. */
async function checkList(list: ConfList, rt: RuntimeConf, opts: ChainOptions): Promise<ChainOutcome> {
  const out: ChainOutcome = { command: 'CHECK', ok: false, steps: [], notes: [] };
  const cmp = goCompareVersions(list.cniVersion, '0.4.0');
  if (cmp === undefined || cmp < 0) {
    out.error = `configuration version ${JSON.stringify(list.cniVersion)} does not support the CHECK command`;
    return out;
  }
  if (list.disableCheck) {
    note(out, opts, 'CHECK skipped: the list sets disableCheck');
    out.ok = true;
    return out;
  }
  let prev: Record<string, unknown> | undefined;
  try {
    prev = cachedResult(opts.cacheDir, list, rt);
  } catch (e) {
    out.error = `failed to get network ${JSON.stringify(list.name)} cached result: ${(e as Error).message}`;
    return out;
  }
  out.cacheFile = cacheFile(opts.cacheDir, list.name, rt);
  note(out, opts, prev ? `prevResult from ${out.cacheFile}` : `no cached result at ${out.cacheFile}: plugins get no prevResult`);
  for (const [i, plugin] of list.plugins.entries()) {
    const step = await runStep('CHECK', i, list, plugin, prev, rt, opts);
    out.steps.push(step);
    if (step.error) {
      out.error = `plugin ${pluginDescription(plugin)} failed (check): ${step.error.msg}`;
      return out;
    }
  }
  out.ok = true;
  return out;
}

/** DelNetworkList: plugins in reverse with the cached result (0.4.0 and later), then the cache goes. */
async function delList(list: ConfList, rt: RuntimeConf, opts: ChainOptions): Promise<ChainOutcome> {
  const out: ChainOutcome = { command: 'DEL', ok: false, steps: [], notes: [] };
  let prev: Record<string, unknown> | undefined;
  const cmp = goCompareVersions(list.cniVersion, '0.4.0');
  if (cmp === undefined) {
    out.error = `invalid version ${JSON.stringify(list.cniVersion)}`;
    return out;
  }
  out.cacheFile = cacheFile(opts.cacheDir, list.name, rt);
  if (cmp >= 0) {
    try {
      prev = cachedResult(opts.cacheDir, list, rt);
      note(out, opts, prev ? `prevResult from ${out.cacheFile}` : `no cached result at ${out.cacheFile}: plugins get no prevResult`);
    } catch (e) {
      // An unreadable cache entry is dropped and DEL goes on without it, as in libcni.
      deleteCache(opts.cacheDir, list.name, rt);
      note(out, opts, `unreadable cache entry ${out.cacheFile} removed (${(e as Error).message}); plugins get no prevResult`);
    }
  } else {
    note(out, opts, `cniVersion ${JSON.stringify(list.cniVersion)} is before 0.4.0: DEL gets no prevResult, and libcni leaves any cache entry in place`);
  }
  for (let i = list.plugins.length - 1; i >= 0; i--) {
    const plugin = list.plugins[i];
    const step = await runStep('DEL', i, list, plugin, prev, rt, opts);
    out.steps.push(step);
    if (step.error) {
      out.error = `plugin ${pluginDescription(plugin)} failed (delete): ${step.error.msg}`;
      return out;
    }
  }
  if (prev !== undefined) {
    deleteCache(opts.cacheDir, list.name, rt);
    note(out, opts, `cache entry ${out.cacheFile} removed`);
  }
  out.ok = true;
  return out;
}

export function runNetworkList(command: ChainCommand, list: ConfList, rt: RuntimeConf, opts: ChainOptions): Promise<ChainOutcome> {
  if (command === 'ADD') return addList(list, rt, opts);
  if (command === 'CHECK') return checkList(list, rt, opts);
  return delList(list, rt, opts);
}

// ---- validation -----------------------------------------------------------------------------------

/** A plugin binary as found in the CNI path, with what its VERSION answered. */
export interface PluginProbe {
  /** `plugins[1]`, or `plugins[1].ipam` for a delegated IPAM plugin. */
  path: string;
  type: string;
  binary?: string;
  supportedVersions?: string[];
  /** Why there are no supportedVersions (not found, VERSION failed). */
  error?: string;
}

/**
 * libcni's ValidateNetworkList and more: every plugin (and delegated IPAM plugin, which must
 * answer in the same version) found in the CNI path and supporting the list's cniVersion.
 * `builtinIpam` names `ipam.type`s a plugin serves itself, keyed by plugin type.
 */
export async function probePlugins(list: ConfList, opts: ExecOptions & { builtinIpam?: Record<string, readonly string[]> }): Promise<{ probes: PluginProbe[]; problems: Problem[] }> {
  const probes: PluginProbe[] = [];
  const problems: Problem[] = [];
  const versions = new Map<string, Promise<{ supportedVersions: string[] } | { error: string }>>();
  const probe = async (type: string, at: string): Promise<void> => {
    const p: PluginProbe = { path: at, type };
    probes.push(p);
    try {
      p.binary = findPlugin(type, opts.cniPath);
    } catch {
      p.error = `not found in the CNI path [${opts.cniPath.join(' ')}]`;
      problems.push({ severity: 'error', path: `${at}.type`, message: `plugin ${JSON.stringify(type)} ${p.error}`, fatal: false });
      return;
    }
    if (!versions.has(p.binary)) versions.set(p.binary, getVersionInfo(p.binary, opts.timeoutMs));
    const info = await versions.get(p.binary)!;
    if ('error' in info) {
      p.error = `VERSION failed: ${info.error}`;
      problems.push({ severity: 'error', path: at, message: `${type} (${p.binary}): ${p.error}`, fatal: false });
      return;
    }
    p.supportedVersions = info.supportedVersions;
    const want = list.cniVersion === '' ? '0.1.0' : list.cniVersion;
    const supported = (v: string) => info.supportedVersions.includes(v);
    if (!supported(want)) {
      problems.push({ severity: 'error', path: at, message: `plugin ${type} does not support config version ${JSON.stringify(want)} (it supports ${info.supportedVersions.join(', ')})`, fatal: false });
    } else if (list.declaredVersion !== '' && list.declaredVersion !== want && !supported(list.declaredVersion)) {
      problems.push({ severity: 'warning', path: at, message: `plugin ${type} does not support ${JSON.stringify(list.declaredVersion)}, the cniVersion older runtimes send (it supports ${info.supportedVersions.join(', ')})`, fatal: false });
    }
  };
  for (const plugin of list.plugins) {
    await probe(plugin.type, plugin.path);
    const ipam = isRecord(plugin.conf.ipam) ? plugin.conf.ipam.type : undefined;
    if (typeof ipam === 'string' && ipam !== '' && !(opts.builtinIpam?.[plugin.type] ?? []).includes(ipam)) {
      await probe(ipam, `${plugin.path}.ipam`);
    }
  }
  return { probes, problems };
}

/** Capabilities any plugin of the list declares (what ValidateNetworkList returns). */
export function listCapabilities(list: ConfList): string[] {
  const caps = new Set<string>();
  for (const p of list.plugins) {
    if (isRecord(p.conf.capabilities)) for (const [k, on] of Object.entries(p.conf.capabilities)) if (on === true) caps.add(k);
  }
  return [...caps].sort();
}

