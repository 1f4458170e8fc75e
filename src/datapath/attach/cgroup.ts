// Socket LB attach: sock.o's eight programs (connect, sendmsg, recvmsg, getpeername; IPv4 and dual-stack) on the cgroup v2 directory the agent is given
// (--cgroup-root), as pinned cgroup links under <bpfRoot>/links/cgroup-<hook>. Pinned, they
// outlive the agent (clients keep being balanced while it restarts), and a restarted agent moves
// them onto its new programs with link update: a connect() meets the old program or the new one,
// never none. Socket LB off detaches them and removes their pins.
// Invariants: kelp only touches pins it names (CGROUP_PROGRAMS); a pin attached to another cgroup
// than the configured one, or at another hook, is detached and attached anew, never updated in
// place (the cgroup root changed); the maps sock.o reads are written by their writers whatever
// the mode (the per-packet path reads the same ones).
import { statSync } from 'node:fs';
import path from 'node:path';
import { attachCgroup, AttachType, BpfObject, BpfProgram, openPinnedLink } from '../../bpf';
import type { Logger } from '../../log';
import type { DatapathObjects } from '../objects';
import { sockConstants, SocketLbMode } from '../sock';
import { LinkPins, RelinkOutcome, removePin } from './pins';

/** sock.o's programs, the hook each goes on, and the name of its pin under <bpfRoot>/links. */
export const CGROUP_PROGRAMS = [
  { prog: 'kelp_sock_connect4', attachType: AttachType.CGROUP_INET4_CONNECT, pin: 'cgroup-connect4' },
  { prog: 'kelp_sock_sendmsg4', attachType: AttachType.CGROUP_UDP4_SENDMSG, pin: 'cgroup-sendmsg4' },
  { prog: 'kelp_sock_recvmsg4', attachType: AttachType.CGROUP_UDP4_RECVMSG, pin: 'cgroup-recvmsg4' },
  { prog: 'kelp_sock_getpeername4', attachType: AttachType.CGROUP_INET4_GETPEERNAME, pin: 'cgroup-getpeername4' },
  // Dual-stack sockets reaching IPv4 services at v4-mapped addresses.
  { prog: 'kelp_sock_connect6', attachType: AttachType.CGROUP_INET6_CONNECT, pin: 'cgroup-connect6' },
  { prog: 'kelp_sock_sendmsg6', attachType: AttachType.CGROUP_UDP6_SENDMSG, pin: 'cgroup-sendmsg6' },
  { prog: 'kelp_sock_recvmsg6', attachType: AttachType.CGROUP_UDP6_RECVMSG, pin: 'cgroup-recvmsg6' },
  { prog: 'kelp_sock_getpeername6', attachType: AttachType.CGROUP_INET6_GETPEERNAME, pin: 'cgroup-getpeername6' },
] as const;

export interface SocketLbOptions {
  mode: SocketLbMode;
  /** A cgroup v2 directory (--cgroup-root): the hooks apply to its processes and its descendants'. */
  cgroupRoot?: string;
  /** The node's network namespace for host-only mode; default: the agent's (the calling thread's). */
  hostNetns?: string;
}

/**
 * The agent's one call: sock.o loaded for the mode and on the cgroup, its pins moved onto it at a
 * restart; or, with mode 'off', an earlier agent's links detached. Returns sock.o when loaded.
 */
export function enableSocketLb(objects: DatapathObjects, pins: LinkPins, o: SocketLbOptions, log: Logger): BpfObject | undefined {
  if (o.mode === 'off') {
    const removed = detachSocketLb(pins);
    if (removed.length) log.info({ removed }, 'socket LB off: links detached');
    return undefined;
  }
  if (!o.cgroupRoot) throw new Error(`socket LB mode ${o.mode} needs a cgroup root (--cgroup-root)`);
  checkCgroupRoot(o.cgroupRoot);
  const sock = objects.load('sock', sockConstants(o.mode, o.hostNetns));
  const hooks = attachSocketLb(sock, pins, o.cgroupRoot);
  objects.swapped('sock');
  log.info({ mode: o.mode, cgroupRoot: o.cgroupRoot, hooks }, 'socket LB attached');
  return sock;
}

/** A cgroup v2 directory's cgroup id (its inode on cgroup2fs), as a cgroup link reports it. */
export function cgroupId(dir: string): number {
  return Number(statSync(dir, { bigint: true }).ino);
}

function checkCgroupRoot(dir: string): void {
  if (typeof dir !== 'string' || !path.isAbsolute(dir)) throw new Error(`cgroupRoot must be an absolute path, got ${String(dir)}`);
  if (!statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`cgroupRoot ${dir} is not a directory`);
  if (!statSync(path.join(dir, 'cgroup.procs'), { throwIfNoEntry: false })) {
    throw new Error(`cgroupRoot ${dir} is not a cgroup v2 directory (no cgroup.procs)`);
  }
}

/**
 * Puts sock.o's programs (loaded by the caller with sockConstants) on the cgroup, or moves the
 * links an earlier agent pinned there onto them. The caller then calls objects.swapped('sock').
 */
export function attachSocketLb(sock: BpfObject, pins: LinkPins, cgroupRoot: string): Record<string, RelinkOutcome> {
  checkCgroupRoot(cgroupRoot);
  const id = cgroupId(cgroupRoot);
  const hooks: Record<string, RelinkOutcome> = {};
  for (const h of CGROUP_PROGRAMS) hooks[h.prog] = attachPinned(sock.program(h.prog), cgroupRoot, id, h.attachType, path.join(pins.dir, h.pin));
  return hooks;
}

/** Socket LB off: detaches the pinned links an earlier agent left; returns the pins removed. */
export function detachSocketLb(pins: LinkPins): string[] {
  const removed = CGROUP_PROGRAMS.map((h) => path.join(pins.dir, h.pin)).filter((p) => statSync(p, { throwIfNoEntry: false }));
  for (const p of removed) removePin(p);
  return removed;
}

/**
 * The link pinned at `pin` moved onto `prog` when it is on this cgroup and hook; otherwise
 * detached, and a new link attached and pinned there.
 */
function attachPinned(prog: BpfProgram, cgroupRoot: string, id: number, attachType: number, pin: string): RelinkOutcome {
  if (statSync(pin, { throwIfNoEntry: false })) {
    const old = openPinnedLink(pin);
    try {
      const info = old.info();
      if (old.kind === 'cgroup' && info.cgroupId === id && info.attachType === attachType) {
        if (info.progId === prog.id) return 'kept';
        old.update(prog);
        return 'updated';
      }
    } finally {
      old.close();
    }
    removePin(pin);
  }
  const link = attachCgroup(prog, cgroupRoot, attachType);
  try {
    link.pin(pin);
  } catch (e) {
    link.detach();
    throw e;
  } finally {
    link.close();
  }
  return 'attached';
}
