// `kelp cni`: cnitool for kelp's users. `validate` reads a configuration file as libcni and kelp
// will (field-level problems, plugins found in the CNI path and the versions they support);
// `add`, `check` and `del` run a network's whole chain against a network namespace as a runtime
// does, result cache included, printing what every plugin answered.
import { createHash } from 'node:crypto';
import path from 'node:path';
import { UsageError } from '../agent/options';
import { CniError, parseConfig } from '../cni';
import { ConfList, findNetwork, Problem, readConfFile } from '../cni/conflist';
import { ChainCommand, ChainStep, DEFAULT_CACHE_DIR, listCapabilities, PluginProbe, probePlugins, readCacheEntry, RuntimeConf, runNetworkList } from '../cni/libcni';
import { formatTable } from './table';

export const CNI_USAGE = `Usage:
  kelp cni validate FILE [--cni-path P] [-o table|json]
  kelp cni add|check|del NETWORK NETNS [flags]

validate reads FILE as libcni does (*.conflist as a list, *.conf/*.json as one plugin), reports
problems by field, finds every plugin (and delegated IPAM plugin) in the CNI path, asks it for
the versions it supports (VERSION) and checks kelp-cni's own settings. Exit 1 when invalid.

add|check|del run the chain of the network named NETWORK, found in the configuration directory
as libcni finds it, for interface --ifname in NETNS (a path, or a name under /var/run/netns):
ADD in order, each plugin getting the previous result, the final result cached; CHECK in order
and DEL in reverse, both with the cached result; DEL then drops the cache entry. Plugins run in
this process's network namespace, as they would in the runtime's.

Flags:
  --cni-path P             plugin directories, ':'-separated (default $CNI_PATH or /opt/cni/bin)
  --conf-dir DIR           configuration directory (default $NETCONFPATH or /etc/cni/net.d)
  --cache-dir DIR          libcni's cache directory; results live in DIR/results (default ${DEFAULT_CACHE_DIR})
  --ifname NAME            interface in the namespace (default $CNI_IFNAME or eth0)
  --container-id ID        default: cnitool's, "cnitool-" + 20 hex digits of sha512(NETNS path)
  --args 'K=V;K2=V2'       CNI_ARGS (default $CNI_ARGS; check/del: the ones cached by add)
  --capability-args JSON   runtime values of capabilities, e.g. '{"portMappings":[...]}'
                           (default $CAP_ARGS; check/del: the ones cached by add)
  --timeout SECONDS        per plugin run (default 60)
  -v, --verbose            print the configuration each plugin gets on stdin
  -o table|json            output format (default table)
`;

/** ipam.type values a plugin serves itself instead of delegating (kelp's agent, src/agent/cni-handler.ts). */
const BUILTIN_IPAM: Record<string, readonly string[]> = { 'kelp-cni': ['kelp', 'kelp-ipam'] };

interface CniFlags {
  cniPath: string[];
  confDir: string;
  cacheDir: string;
  ifname: string;
  containerId?: string;
  args?: string;
  capabilityArgs?: string;
  timeoutMs: number;
  verbose: boolean;
  output: 'table' | 'json';
  rest: string[];
}

function env(key: string): string | undefined {
  const v = process.env[key];
  return v === undefined || v === '' ? undefined : v;
}

function splitPath(p: string): string[] {
  return p.split(':').filter((d) => d !== '');
}

function parseFlags(argv: string[]): CniFlags {
  const f: CniFlags = {
    cniPath: splitPath(env('CNI_PATH') ?? '/opt/cni/bin'),
    confDir: path.resolve(env('NETCONFPATH') ?? '/etc/cni/net.d'),
    cacheDir: DEFAULT_CACHE_DIR,
    ifname: env('CNI_IFNAME') ?? 'eth0',
    args: env('CNI_ARGS'),
    capabilityArgs: env('CAP_ARGS'),
    timeoutMs: 60_000,
    verbose: false,
    output: 'table',
    rest: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const value = (): string => {
      if (eq > 0) return arg.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--cni-path':
        f.cniPath = splitPath(value());
        break;
      case '--conf-dir':
        f.confDir = path.resolve(value());
        break;
      case '--cache-dir':
        f.cacheDir = path.resolve(value());
        break;
      case '--ifname':
        f.ifname = value();
        break;
      case '--container-id':
        f.containerId = value();
        break;
      case '--args':
        f.args = value();
        break;
      case '--capability-args':
        f.capabilityArgs = value();
        break;
      case '--timeout': {
        const s = Number(value());
        if (!Number.isFinite(s) || s <= 0) throw new UsageError(`--timeout takes a number of seconds, got ${JSON.stringify(argv[i])}`);
        f.timeoutMs = s * 1000;
        break;
      }
      case '-v':
      case '--verbose':
        f.verbose = true;
        break;
      case '-o':
      case '--output': {
        const v = value();
        if (v !== 'table' && v !== 'json') throw new UsageError(`-o must be table or json, got ${JSON.stringify(v)}`);
        f.output = v;
        break;
      }
      default:
        if (arg.startsWith('-') && arg !== '-') throw new UsageError(`unknown flag ${JSON.stringify(arg)}\n\n${CNI_USAGE}`);
        f.rest.push(arg);
    }
  }
  return f;
}

/** CNI_ARGS as cnitool takes them: `K=V` pairs separated by ';', kept in order. */
export function parseArgsFlag(raw: string): Array<[string, string]> {
  if (raw === '') return [];
  return raw.split(';').map((pair) => {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`invalid CNI_ARGS pair ${JSON.stringify(pair)}: want KEY=VALUE`);
    return [pair.slice(0, eq), pair.slice(eq + 1)];
  });
}

function parseCapabilityArgs(raw: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch (e) {
    throw new UsageError(`--capability-args: not JSON: ${(e as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new UsageError('--capability-args must be a JSON object, e.g. {"portMappings":[...]}');
  return v as Record<string, unknown>;
}

/** A netns path as cnitool makes it absolute; a bare name is one made by `ip netns add`. */
export function netnsPath(arg: string): string {
  return arg.includes('/') ? path.resolve(arg) : path.join('/var/run/netns', arg);
}

/** cnitool's container ID: stable per netns path, so add, check and del find the same cache entry. */
export function defaultContainerId(netns: string): string {
  return 'cnitool-' + createHash('sha512').update(netns).digest('hex').slice(0, 20);
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

// ---- validate -----------------------------------------------------------------------------------

/** kelp-cni's own settings, read by the same parser the agent uses; its first problem, by field. */
function kelpProblems(list: ConfList): Problem[] {
  const out: Problem[] = [];
  for (const plugin of list.plugins) {
    if (plugin.type !== 'kelp-cni') continue;
    try {
      parseConfig({ ...plugin.conf, name: list.name, cniVersion: list.cniVersion });
    } catch (e) {
      if (!(e instanceof CniError)) throw e;
      const field = /^invalid (\S+)$/.exec(e.msg)?.[1] ?? /^missing (ipam\.type)$/.exec(e.msg)?.[1];
      if (e.msg === 'missing network name') continue; // reported for the list
      out.push({
        severity: 'error',
        path: field ? `${plugin.path}.${field}` : plugin.path,
        message: field ? (e.details ?? (e.msg.startsWith('missing') ? 'missing' : e.msg)) : e.message,
        fatal: false,
      });
    }
  }
  return out;
}

interface ValidateReport {
  file: string;
  valid: boolean;
  kind?: 'conflist' | 'conf';
  name?: string;
  cniVersion?: string;
  declaredCniVersion?: string;
  cniVersions?: string[];
  disableCheck?: boolean;
  disableGC?: boolean;
  capabilities?: string[];
  cniPath: string[];
  plugins: PluginProbe[];
  problems: Array<Omit<Problem, 'fatal'> & { libcniRefuses: boolean }>;
}

async function validate(f: CniFlags): Promise<number> {
  if (f.rest.length !== 1) throw new UsageError(`usage: kelp cni validate FILE`);
  const file = path.resolve(f.rest[0]);
  const read = readConfFile(file);
  const problems = [...read.problems];
  const report: ValidateReport = { file, valid: false, cniPath: f.cniPath, plugins: [], problems: [] };
  const list = read.list;
  if (list) {
    const probed = await probePlugins(list, { cniPath: f.cniPath, timeoutMs: f.timeoutMs, builtinIpam: BUILTIN_IPAM });
    problems.push(...probed.problems, ...kelpProblems(list));
    Object.assign(report, {
      kind: list.kind,
      name: list.name,
      cniVersion: list.cniVersion,
      declaredCniVersion: list.declaredVersion,
      cniVersions: list.cniVersions,
      disableCheck: list.disableCheck,
      disableGC: list.disableGC,
      capabilities: listCapabilities(list),
      plugins: probed.probes,
    });
  }
  report.problems = problems.map(({ fatal, ...p }) => ({ ...p, libcniRefuses: fatal }));
  const errors = problems.filter((p) => p.severity === 'error').length;
  const warnings = problems.length - errors;
  report.valid = errors === 0;
  if (f.output === 'json') {
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    return report.valid ? 0 : 1;
  }
  let out = '';
  if (list) {
    out += `${file}: ${list.kind} ${JSON.stringify(list.name)}, cniVersion ${list.cniVersion || '(none: 0.1.0)'}\n`;
    if (list.cniVersions) out += `cniVersions: ${list.cniVersions.join(', ') || '-'} (cniVersion ${JSON.stringify(list.declaredVersion)})\n`;
    if (list.kind === 'conflist') out += `disableCheck: ${list.disableCheck}, disableGC: ${list.disableGC}\n`;
    out += `capabilities: ${report.capabilities!.join(', ') || '-'}\n`;
    out += `CNI path: ${f.cniPath.join(':') || '-'}\n\n`;
    out += formatTable(
      ['PLUGIN', 'TYPE', 'BINARY', 'SUPPORTED VERSIONS'],
      report.plugins.map((p) => [p.path, p.type, p.binary ?? 'missing', p.supportedVersions?.join(' ') ?? p.error]),
    );
  } else {
    out += `${file}: libcni cannot load this file\n`;
  }
  if (problems.length > 0) {
    out += '\n' + problems.map((p) => `${p.severity.padEnd(7)}  ${p.path}: ${p.message}${p.fatal ? ' [libcni refuses the file]' : ''}\n`).join('');
  }
  out += `\n${report.valid ? 'valid' : `invalid: ${plural(errors, 'error')}`}${warnings > 0 ? `${report.valid ? ',' : ','} ${plural(warnings, 'warning')}` : ''}\n`;
  process.stdout.write(out);
  return report.valid ? 0 : 1;
}

// ---- add / check / del ----------------------------------------------------------------------------

function printStep(step: ChainStep, total: number, verbose: boolean): void {
  const where = step.binary ? ` (${step.binary})` : '';
  let out = '';
  if (verbose && step.stdin) out += `[${step.index + 1}/${total}] ${step.type} stdin:\n${JSON.stringify(step.stdin, null, 2)}\n`;
  out += `[${step.index + 1}/${total}] ${step.command} ${step.type}${where}: ${step.error ? 'failed' : 'ok'}, ${step.durationMs} ms\n`;
  for (const line of step.stderr.split('\n').filter((l) => l.trim() !== '')) out += `  stderr| ${line}\n`;
  if (step.error) out += JSON.stringify(step.error, null, 2) + '\n';
  else if (step.result) out += JSON.stringify(step.result, null, 2) + '\n';
  process.stdout.write(out);
}

async function runChain(command: ChainCommand, f: CniFlags): Promise<number> {
  if (f.rest.length !== 2) throw new UsageError(`usage: kelp cni ${command.toLowerCase()} NETWORK NETNS`);
  const [network, nsArg] = f.rest;
  const found = findNetwork(f.confDir, network);
  const list = found.list!;
  const netns = netnsPath(nsArg);
  const containerId = f.containerId ?? defaultContainerId(netns);
  const rt: RuntimeConf = { containerId, netns, ifname: f.ifname, args: [] };
  const notes: string[] = [];
  // CHECK and DEL replay what ADD was given unless told otherwise (libcni's GetNetworkListCachedConfig).
  const cached = command === 'ADD' ? undefined : readCacheEntry(f.cacheDir, list.name, rt);
  if (f.args !== undefined) rt.args = parseArgsFlag(f.args);
  else if (cached?.cniArgs) {
    rt.args = cached.cniArgs;
    notes.push('CNI_ARGS from the cache entry');
  }
  if (f.capabilityArgs !== undefined) rt.capabilityArgs = parseCapabilityArgs(f.capabilityArgs);
  else if (cached?.capabilityArgs) {
    rt.capabilityArgs = cached.capabilityArgs;
    notes.push('capability args from the cache entry');
  }
  if (command === 'ADD' && readCacheEntry(f.cacheDir, list.name, rt)) {
    notes.push('a cached result exists for this attachment already: a runtime would not ADD again before DEL');
  }
  const json = f.output === 'json';
  const total = list.plugins.length;
  if (!json) {
    for (const p of found.problems) process.stderr.write(`${p.severity}: ${path.basename(list.file)}: ${p.path}: ${p.message}\n`);
    let head = `${command} network ${JSON.stringify(list.name)} from ${list.file} (cniVersion ${list.cniVersion || '0.1.0'}, ${plural(total, 'plugin')})\n`;
    head += `container ${containerId}, netns ${netns}, ifname ${rt.ifname}\n`;
    if (rt.args.length > 0) head += `CNI_ARGS ${rt.args.map(([k, v]) => `${k}=${v}`).join(';')}\n`;
    if (rt.capabilityArgs) head += `capability args ${JSON.stringify(rt.capabilityArgs)}\n`;
    for (const n of notes) head += `note: ${n}\n`;
    process.stdout.write(head);
  }
  const outcome = await runNetworkList(command, list, rt, {
    cniPath: f.cniPath,
    cacheDir: f.cacheDir,
    timeoutMs: f.timeoutMs,
    onStep: json ? undefined : (step) => printStep(step, total, f.verbose),
    onNote: json ? undefined : (n) => process.stdout.write(`${n}\n`),
  });
  if (json) {
    const report = {
      command,
      network: list.name,
      file: list.file,
      cniVersion: list.cniVersion,
      containerId,
      netns,
      ifname: rt.ifname,
      cniArgs: rt.args,
      capabilityArgs: rt.capabilityArgs,
      cniPath: f.cniPath,
      ok: outcome.ok,
      steps: outcome.steps,
      result: outcome.result,
      error: outcome.error,
      cacheFile: outcome.cacheFile,
      notes: [...notes, ...outcome.notes],
      problems: found.problems.map(({ fatal: _fatal, ...p }) => p),
    };
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  } else {
    if (outcome.error) process.stderr.write(`kelp cni ${command.toLowerCase()}: ${outcome.error}\n`);
    else process.stdout.write(`${command} ok\n`);
  }
  return outcome.ok ? 0 : 1;
}

/** `kelp cni ...`; resolves with the exit code. */
export async function cniCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === 'help' || sub === '--help' || sub === '-h' || rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(CNI_USAGE);
    return sub === undefined ? 2 : 0;
  }
  // Flags may come before the subcommand too (`kelp -o json cni validate F` arrives so).
  const f = parseFlags(argv);
  const [verb, ...operands] = f.rest;
  f.rest = operands;
  switch (verb) {
    case 'validate':
      return validate(f);
    case 'add':
    case 'check':
    case 'del':
      return runChain(verb.toUpperCase() as ChainCommand, f);
    default:
      throw new UsageError(`kelp cni: unknown command ${JSON.stringify(verb ?? '')}\n\n${CNI_USAGE}`);
  }
}
