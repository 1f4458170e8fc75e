// The bpffs kelp pins under. Pins are what keep pods connected across an agent restart, so the
// root must (1) be on a bpffs and (2) be a bpffs that outlives the agent. Neither is a given:
// - On a machine where nothing is mounted at /sys/fs/bpf, sysfs refuses mkdir with ENOENT, and
//   Node's recursive mkdirSync retries that for ever (100 % CPU, signals never handled). kelp
//   never mkdirs recursively here: it walks the path itself and mounts bpffs at /sys/fs/bpf
//   where that is the missing piece, as Cilium does.
// - `ip netns exec` runs its command in a fresh mount namespace (to remount /sys for the
//   netns). A bpffs the agent mounts there exists in that namespace only and is gone when the
//   agent exits, pins and all. kelp cannot move a mount into another namespace from a
//   multi-threaded process, so it finds out (is this bpffs instance mounted in any mount
//   namespace that does not die with the agent?) and says so: a loud warning, `kelp status`,
//   and the README's way of starting an agent that keeps its pins.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statfsSync, statSync } from 'node:fs';
import path from 'node:path';

const BPF_FS_MAGIC = 0xcafe4a11;
const SYSFS_MAGIC = 0x62656572;
/** Where the kernel's sysfs offers an empty directory for bpffs, and where Cilium mounts it. */
export const SYS_FS_BPF = '/sys/fs/bpf';

export interface BpffsStatus {
  /** The pin root (absolute). */
  root: string;
  /** Whether this agent mounted the bpffs under the root (at the root or at /sys/fs/bpf). */
  mounted?: string;
  /** Whether the bpffs outlives the agent (pins survive a restart). */
  persistent: Persistence;
  /** Why it does or does not, in words for the log and `kelp status`. */
  reason: string;
}

export class BpffsError extends Error {}

function fsType(p: string): number {
  return Number(statfsSync(p).type);
}

function isBpffs(p: string): boolean {
  return fsType(p) === BPF_FS_MAGIC;
}

function mountBpffs(dir: string): void {
  try {
    execFileSync('mount', ['-t', 'bpf', 'bpf', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    const stderr = (e as { stderr?: Buffer }).stderr?.toString().trim();
    throw new BpffsError(`cannot mount a bpffs at ${dir}: ${stderr || (e as Error).message}`);
  }
}

function mkdirOne(dir: string, root: string): void {
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST' && statSync(dir).isDirectory()) return;
    throw new BpffsError(
      `--bpf-root ${root}: cannot create ${dir} (${code}). Mount a bpffs at the root or at a parent ` +
        `(e.g. mount -t bpf bpf ${SYS_FS_BPF}) or pass --bpf-root a directory on one`,
    );
  }
}

/**
 * Makes `root` a directory on a bpffs: creates it (one level at a time), mounting bpffs at
 * /sys/fs/bpf when that is what is missing, or on the root itself when it sits on an ordinary
 * file system. Returns the mountpoint it mounted, if any. Fails at once, with what to do, when
 * the path cannot be made.
 */
export function prepareBpfRoot(rootIn: string): string | undefined {
  const root = path.resolve(rootIn);
  const missing: string[] = [];
  let anc = root;
  while (!existsSync(anc)) {
    missing.unshift(anc);
    anc = path.dirname(anc);
  }
  if (!statSync(anc).isDirectory()) throw new BpffsError(`--bpf-root ${root}: ${anc} is not a directory`);
  let mounted: string | undefined;
  if (missing.length === 0) {
    if (isBpffs(root)) return undefined;
    mountBpffs(root);
    return root;
  }
  if (!isBpffs(anc)) {
    if (anc === SYS_FS_BPF && fsType(anc) === SYSFS_MAGIC) {
      mountBpffs(anc);
      mounted = anc;
    } else if (fsType(anc) === SYSFS_MAGIC) {
      throw new BpffsError(`--bpf-root ${root}: ${anc} is on sysfs, where nothing can be created; use a path under ${SYS_FS_BPF} or on a bpffs`);
    }
  }
  for (const dir of missing) mkdirOne(dir, root);
  if (!isBpffs(root)) {
    mountBpffs(root);
    mounted = root;
  }
  return mounted;
}

/** major:minor of the file system holding `p`, as /proc/PID/mountinfo writes it. */
function devOf(p: string): string {
  const dev = statSync(p, { bigint: true }).dev;
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

function readlinkOrUndefined(p: string): string | undefined {
  try {
    return readlinkSync(p);
  } catch {
    return undefined;
  }
}

/** Our own PID and our ancestors': they do not keep our mount namespace alive after we exit. */
function selfAndAncestors(): Set<number> {
  const out = new Set<number>([process.pid]);
  let pid = process.pid;
  for (let i = 0; i < 64 && pid > 1; i++) {
    try {
      // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      pid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      out.add(pid);
    } catch {
      break;
    }
  }
  return out;
}

export type Persistence = 'yes' | 'no' | 'unknown';

/** The mountinfo line of the mount holding `p` in our own mount namespace. */
function ownMount(dev: string): string[] | undefined {
  let found: string[] | undefined;
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    // The last (topmost) mount of that device wins, as path lookup would.
    if (f[2] === dev) found = f;
  }
  return found;
}

/**
 * Does the bpffs holding `root` outlive this process? Yes when our mount namespace is shared
 * with a process that is not one of our ancestors (kernel threads included: they live in the
 * machine's initial one), when the same bpffs instance is mounted in another mount namespace we
 * can see, or when its mount propagates to or from another namespace (shared/master, as a
 * Kubernetes hostPath with mount propagation is). No when the agent mounted it itself in a
 * namespace of its own. Unknown when it was there before the agent and no namespace we can see
 * holds it (a container without the host's PIDs): it may well be the host's.
 */
export function bpffsPersistence(rootIn: string, mountedByUs: boolean): { persistent: Persistence; reason: string } {
  const root = path.resolve(rootIn);
  const dev = devOf(root);
  const ownNs = readlinkOrUndefined('/proc/self/ns/mnt');
  const skip = selfAndAncestors();
  const otherNs = new Map<string, number>();
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || skip.has(pid)) continue;
    const ns = readlinkOrUndefined(`/proc/${pid}/ns/mnt`);
    if (!ns) continue;
    if (ns === ownNs) return { persistent: 'yes', reason: `this agent's mount namespace is shared with other processes (PID ${pid})` };
    if (!otherNs.has(ns)) otherNs.set(ns, pid);
  }
  const mine = ownMount(dev);
  const sep = mine?.indexOf('-') ?? -1;
  const propagation = mine && sep > 0 ? mine.slice(6, sep).find((o) => o.startsWith('shared:') || o.startsWith('master:')) : undefined;
  if (propagation) return { persistent: 'yes', reason: `the bpffs mount at ${mine![4]} propagates to other mount namespaces (${propagation})` };
  for (const [ns, pid] of otherNs) {
    let info: string;
    try {
      info = readFileSync(`/proc/${pid}/mountinfo`, 'utf8');
    } catch {
      continue;
    }
    for (const line of info.split('\n')) {
      const f = line.split(' ');
      const i = f.indexOf('-');
      if (f[2] === dev && i > 0 && f[i + 1] === 'bpf') {
        return { persistent: 'yes', reason: `the bpffs is also mounted in mount namespace ${ns} (PID ${pid}, at ${f[4]})` };
      }
    }
  }
  if (!mountedByUs) {
    return {
      persistent: 'unknown',
      reason: `the bpffs under ${root} was mounted before the agent started, but no mount namespace this agent can see holds it: pins outlive the agent only if it is the host's`,
    };
  }
  return {
    persistent: 'no',
    reason:
      `the bpffs under ${root} exists only in this agent's private mount namespace (as under \`ip netns exec\`): ` +
      'pinned maps and links vanish when the agent exits, so a restart rebuilds endpoints from its records and resets counters. ' +
      'Mount the bpffs from the host mount namespace before starting the agent, or start it with `nsenter --net=/run/netns/NAME` ' +
      'instead of `ip netns exec NAME` (see the README, "Running an agent by hand")',
  };
}

/** prepareBpfRoot + bpffsPersistence, for the agent's start. */
export function openBpfRoot(root: string): BpffsStatus {
  const mounted = prepareBpfRoot(root);
  return { root: path.resolve(root), mounted, ...bpffsPersistence(root, mounted !== undefined) };
}
