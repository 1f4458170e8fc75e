// The CNI request environment (SPEC §2 "Parameters") and CNI_ARGS (CONVENTIONS, runtimes).
import { parseIpOrCidr } from '../ipam/ip';
import { CniCode, CniError } from './errors';

export const CNI_COMMANDS = ['ADD', 'DEL', 'CHECK', 'STATUS', 'GC', 'VERSION'] as const;
export type CniCommand = (typeof CNI_COMMANDS)[number];

/**
 * Variables each verb needs (SPEC §2). libcni's skel also wants CNI_PATH everywhere; kelp does
 * not, because it only needs CNI_PATH when delegating, and runtimes always send it anyway.
 */
export const REQUIRED_ENV: Readonly<Record<CniCommand, readonly string[]>> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME'],
  STATUS: [],
  GC: ['CNI_PATH'],
  VERSION: [],
};

/** Well-known CNI_ARGS. Unknown keys are kept in `all` and never rejected. */
export interface CniArgs {
  /** `IgnoreUnknown=1|true|True`: kelp ignores unknown keys anyway; kept for delegation. */
  ignoreUnknown: boolean;
  podNamespace?: string;
  podName?: string;
  podUid?: string;
  podInfraContainerId?: string;
  /** `IP=` addresses (comma-separated, optional prefix) asked for by the caller. */
  ips?: string[];
  /** Every pair, in order of appearance; a repeated key keeps its last value. */
  all: Record<string, string>;
}

export interface CniEnv {
  command: CniCommand;
  containerId?: string;
  netns?: string;
  ifname?: string;
  args: CniArgs;
  /** CNI_ARGS exactly as received, for delegation. */
  argsRaw?: string;
  /** CNI_PATH split on ':' with empty entries dropped. */
  path: string[];
}

// pkg/utils/utils.go: network names and container IDs share these rules.
export const ID_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
const IFNAMSIZ = 16;

/** libcni exports every CNI_* variable, empty for unused ones: empty is unset. */
function get(env: Record<string, string | undefined>, key: string): string | undefined {
  const v = env[key];
  return v === undefined || v === '' ? undefined : v;
}

export function parseCommand(env: Record<string, string | undefined>): CniCommand {
  const command = get(env, 'CNI_COMMAND');
  if (command === undefined) throw new CniError(CniCode.InvalidEnv, 'required env variables [CNI_COMMAND] missing');
  // libcni reads this exact message as "legacy plugin" only for VERSION, which never gets here.
  if (!(CNI_COMMANDS as readonly string[]).includes(command)) {
    throw new CniError(CniCode.InvalidEnv, `unknown CNI_COMMAND: ${command}`);
  }
  return command as CniCommand;
}

/** Why `name` cannot be an interface name, or undefined when it can. */
export function ifnameProblem(name: string): string | undefined {
  if (Buffer.byteLength(name) >= IFNAMSIZ) return `longer than ${IFNAMSIZ - 1} bytes`;
  if (name === '.' || name === '..') return 'is "." or ".."';
  if (/[/:\s]/.test(name)) return 'contains "/", ":" or whitespace';
  return undefined;
}

/**
 * The command, the variables its verb needs and the attachment's names: what kelp-cni checks
 * itself before stdin (native/cni/kelp-cni.c env_invalid), with the same words.
 */
export function checkEnv(env: Record<string, string | undefined>): CniCommand {
  const command = parseCommand(env);
  const missing = REQUIRED_ENV[command].filter((k) => get(env, k) === undefined);
  if (missing.length > 0) {
    throw new CniError(CniCode.InvalidEnv, `required env variables [${missing.join(',')}] missing`);
  }
  const containerId = get(env, 'CNI_CONTAINERID');
  const ifname = get(env, 'CNI_IFNAME');
  // Only verbs that act on one attachment validate it; libcni sends dummies elsewhere.
  const perAttachment = REQUIRED_ENV[command].includes('CNI_CONTAINERID');
  if (perAttachment && containerId !== undefined && !ID_PATTERN.test(containerId)) {
    throw new CniError(
      CniCode.InvalidEnv,
      'invalid CNI_CONTAINERID',
      `"${containerId}" must start with a letter or digit and contain only letters, digits, "_", "." and "-"`,
    );
  }
  const ifnameIssue = ifname === undefined ? undefined : ifnameProblem(ifname);
  if (perAttachment && ifnameIssue !== undefined) {
    throw new CniError(CniCode.InvalidEnv, 'invalid CNI_IFNAME', `"${ifname}" ${ifnameIssue}`);
  }
  return command;
}

/** checkEnv, then the rest: CNI_ARGS (code 4 when malformed) and CNI_PATH. */
export function parseEnv(env: Record<string, string | undefined>): CniEnv {
  const command = checkEnv(env);
  const argsRaw = get(env, 'CNI_ARGS');
  return {
    command,
    containerId: get(env, 'CNI_CONTAINERID'),
    netns: get(env, 'CNI_NETNS'),
    ifname: get(env, 'CNI_IFNAME'),
    args: parseCniArgs(argsRaw ?? ''),
    argsRaw,
    path: (get(env, 'CNI_PATH') ?? '').split(':').filter((p) => p !== ''),
  };
}

/**
 * `K=V;K2=V2` in any order. Split on ';' then on the first '=' so values may contain '='
 * (libcni's LoadArgs rejects them); segments without '=' are ignored.
 */
export function parseCniArgs(raw: string): CniArgs {
  // No prototype: keys come from the caller and "__proto__" must stay an ordinary key.
  const all: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const pair of raw.split(';')) {
    const eq = pair.indexOf('=');
    if (eq <= 0) continue;
    all[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const args: CniArgs = { ignoreUnknown: ['1', 'true', 'True'].includes(all.IgnoreUnknown ?? ''), all };
  const set = (key: string): string | undefined => (all[key] === '' ? undefined : all[key]);
  args.podNamespace = set('K8S_POD_NAMESPACE');
  args.podName = set('K8S_POD_NAME');
  args.podUid = set('K8S_POD_UID');
  args.podInfraContainerId = set('K8S_POD_INFRA_CONTAINER_ID');
  const ip = set('IP');
  if (ip !== undefined) {
    args.ips = ip.split(',').map((s) => s.trim());
    const bad = args.ips.find((s) => parseIpOrCidr(s) === undefined);
    if (bad !== undefined) {
      throw new CniError(CniCode.InvalidEnv, 'invalid CNI_ARGS', `IP=${ip}: "${bad}" is not an IP address`);
    }
  }
  return args;
}
