// Attaching programs: tcx links (falling back to clsact + cls_bpf where the kernel has no tcx),
// XDP and cgroup links, pins, and what is attached to an interface.
// Interfaces are found by ifindex in the calling thread's network namespace: attach inside
// inNetns() to reach an interface of another namespace.
import { closeSync, openSync, unlinkSync } from 'node:fs';
import type { FdHandle, LinkInfo, ProgInfo } from './addon';
import { KelpBpfError, invalidArgument } from './errors';
import { openPinned } from './fd';
import { withLibbpfLog } from './log';
import { addon } from './native';
import type { BpfProgram } from './program';

/** enum bpf_attach_type values used here. BPF_TCX_* are newer than libbpf 1.1's headers. */
export const AttachType = {
  CGROUP_INET_INGRESS: 0,
  CGROUP_INET_EGRESS: 1,
  CGROUP_INET_SOCK_CREATE: 2,
  CGROUP_SOCK_OPS: 3,
  CGROUP_DEVICE: 6,
  CGROUP_INET4_BIND: 8,
  CGROUP_INET6_BIND: 9,
  CGROUP_INET4_CONNECT: 10,
  CGROUP_INET6_CONNECT: 11,
  CGROUP_INET4_POST_BIND: 12,
  CGROUP_INET6_POST_BIND: 13,
  CGROUP_UDP4_SENDMSG: 14,
  CGROUP_UDP6_SENDMSG: 15,
  CGROUP_SYSCTL: 18,
  CGROUP_UDP4_RECVMSG: 19,
  CGROUP_UDP6_RECVMSG: 20,
  CGROUP_GETSOCKOPT: 21,
  CGROUP_SETSOCKOPT: 22,
  CGROUP_INET4_GETPEERNAME: 29,
  CGROUP_INET6_GETPEERNAME: 30,
  CGROUP_INET4_GETSOCKNAME: 31,
  CGROUP_INET6_GETSOCKNAME: 32,
  CGROUP_INET_SOCK_RELEASE: 34,
  XDP: 37,
  TCX_INGRESS: 46,
  TCX_EGRESS: 47,
} as const;

const LINK_TYPE_CGROUP = 3;
const LINK_TYPE_XDP = 6;
const LINK_TYPE_TCX = 11;
const XDP_FLAGS_SKB_MODE = 1 << 1;
const XDP_FLAGS_DRV_MODE = 1 << 2;
// Errors meaning "this kernel has no tcx" (ENOTSUPP is the kernel-internal 524).
const NO_TCX = new Set(['EINVAL', 'ENOTSUP', 'ENOTSUPP']);

export type TcDirection = 'ingress' | 'egress';
export type LinkKind = 'tcx' | 'tc' | 'xdp' | 'cgroup';

export interface AttachTcOptions {
  /** 'auto' (default): tcx, or clsact + cls_bpf when tcx fails with EINVAL/ENOTSUP. */
  mode?: 'auto' | 'tcx' | 'tc';
}

interface TcFilter {
  ifindex: number;
  egress: boolean;
  handle: number;
  priority: number;
  netns: FdHandle;
}

/**
 * An attachment. For tcx, XDP and cgroup links it owns the link fd: closing an unpinned link
 * detaches it, a pinned one stays until detach() or its pin is removed. A 'tc' (clsact) filter is
 * no kernel link: it stays until detach(), whatever happens to this handle, and cannot be pinned.
 */
export class BpfLink {
  readonly kind: LinkKind;
  /** Where this handle pinned the link, or opened it from. */
  pinPath?: string;
  private readonly handle?: FdHandle;
  private readonly tc?: TcFilter;
  private detached = false;

  /** @internal */
  constructor(kind: LinkKind, from: { handle: FdHandle; pinPath?: string } | { tc: TcFilter }) {
    this.kind = kind;
    if ('tc' in from) this.tc = from.tc;
    else {
      this.handle = from.handle;
      this.pinPath = from.pinPath;
    }
  }

  /** The link fd; -1 once closed and for 'tc' filters. */
  get fd(): number {
    return this.handle ? this.handle.fd : -1;
  }

  /** Kernel's view of the link (id, program id, ifindex for tcx/XDP). */
  info(): LinkInfo {
    if (this.tc) throw invalidArgument('link info', 'a tc filter is not a BPF link');
    return addon.linkInfo(this.fd);
  }

  /** Pins the link on a bpffs, so it outlives this process. */
  pin(path: string): void {
    if (this.tc) {
      throw invalidArgument(`pin ${path}`, 'a tc filter is not a BPF link; it stays attached until detached');
    }
    addon.objPin(this.fd, path);
    this.pinPath = path;
  }

  /** Removes the pin this handle made or was opened from (the link then lives as long as its fd). */
  unpin(): void {
    if (!this.pinPath) return;
    try {
      unlinkSync(this.pinPath);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    this.pinPath = undefined;
  }

  /** Takes the program off its hook, pinned or not. Detaching twice is harmless. */
  detach(): void {
    if (this.detached) return;
    if (this.tc) {
      const t = this.tc;
      addon.tcDetach(t.netns.fd, t.ifindex, t.egress, t.handle, t.priority);
    } else {
      addon.linkDetach(this.fd, `detach ${this.kind} link`);
    }
    this.detached = true;
  }

  /**
   * Replaces the link's program in one step (bpf_link_update): the hook runs the old program
   * until the new one takes over, never neither; the link (id, pin) stays the same. With
   * `expected`, fails with EPERM unless the link still runs that program.
   */
  update(prog: BpfProgram, opts: { expected?: BpfProgram } = {}): void {
    const op = `update ${this.kind} link`;
    if (this.tc) throw invalidArgument(op, 'a tc filter is not a BPF link; attach the new program instead');
    if (this.fd < 0) throw invalidArgument(op, 'the link is closed');
    checkProgram(op, prog);
    if (opts.expected) checkProgram(op, opts.expected);
    linkUpdate(this.fd, prog.fd, opts.expected ? opts.expected.fd : -1, `${op} to program ${prog.id}`);
  }

  /** Releases the handle (see the class comment for what stays attached). Closing twice is harmless. */
  close(): void {
    this.handle?.close();
    this.tc?.netns.close();
  }
}

// Raw ABI of bpf_link_update; declared here until src/bpf/addon.d.ts carries it.
const linkUpdate = addon.linkUpdate;

function checkIfindex(op: string, ifindex: number): void {
  if (!Number.isInteger(ifindex) || ifindex < 1 || ifindex > 0x7fff_ffff) {
    throw invalidArgument(op, `ifindex must be a positive integer, got ${ifindex}`);
  }
}

function checkProgram(op: string, prog: BpfProgram): void {
  if (!prog || typeof prog.fd !== 'number' || prog.fd < 0) throw invalidArgument(op, 'the program is closed');
}

/** Attaches a tc program to an interface's ingress or egress. */
export function attachTc(
  prog: BpfProgram,
  ifindex: number,
  direction: TcDirection,
  opts: AttachTcOptions = {},
): BpfLink {
  const mode = opts.mode ?? 'auto';
  const op = `attach tc ${direction} ifindex ${ifindex}`;
  checkProgram(op, prog);
  checkIfindex(op, ifindex);
  if (direction !== 'ingress' && direction !== 'egress') {
    throw invalidArgument(op, `direction must be 'ingress' or 'egress', got ${String(direction)}`);
  }
  if (mode !== 'auto' && mode !== 'tcx' && mode !== 'tc') {
    throw invalidArgument(op, `mode must be 'auto', 'tcx' or 'tc', got ${String(mode)}`);
  }
  const egress = direction === 'egress';
  if (mode !== 'tc') {
    try {
      const type = egress ? AttachType.TCX_EGRESS : AttachType.TCX_INGRESS;
      const handle = addon.linkCreate(prog.fd, ifindex, type, 0, `attach tcx ${direction} ifindex ${ifindex}`);
      return new BpfLink('tcx', { handle });
    } catch (e) {
      if (mode === 'tcx' || !(e instanceof KelpBpfError) || !NO_TCX.has(e.code)) throw e;
    }
  }
  const t = withLibbpfLog(undefined, () => addon.tcAttach(prog.fd, ifindex, egress));
  return new BpfLink('tc', { tc: { ifindex, egress, handle: t.handle, priority: t.priority, netns: t.netns } });
}

/**
 * attachTc without blocking the event loop: the tcx attach (which waits for a kernel RCU grace
 * period) runs on the thread pool. Falls back to the synchronous clsact path where tcx is missing.
 */
export async function attachTcAsync(prog: BpfProgram, ifindex: number, direction: TcDirection): Promise<BpfLink> {
  const op = `attach tcx ${direction} ifindex ${ifindex}`;
  checkProgram(op, prog);
  checkIfindex(op, ifindex);
  if (direction !== 'ingress' && direction !== 'egress') {
    throw invalidArgument(op, `direction must be 'ingress' or 'egress', got ${String(direction)}`);
  }
  const type = direction === 'egress' ? AttachType.TCX_EGRESS : AttachType.TCX_INGRESS;
  try {
    return new BpfLink('tcx', { handle: await addon.linkCreateAsync(prog.fd, ifindex, type, 0, op) });
  } catch (e) {
    if (!(e instanceof KelpBpfError) || !NO_TCX.has(e.code)) throw e;
    return attachTc(prog, ifindex, direction, { mode: 'tc' });
  }
}

/** Where a clsact filter sits: a handle and priority its owner chooses, so it can find it again. */
export interface TcFilterSlot {
  handle: number;
  priority: number;
}

function checkSlot(op: string, ifindex: number, direction: TcDirection, slot: TcFilterSlot): void {
  checkIfindex(op, ifindex);
  if (direction !== 'ingress' && direction !== 'egress') {
    throw invalidArgument(op, `direction must be 'ingress' or 'egress', got ${String(direction)}`);
  }
  if (!Number.isInteger(slot.handle) || slot.handle < 1 || slot.handle > 0xffff_ffff) {
    throw invalidArgument(op, `handle must be a positive 32-bit integer, got ${slot.handle}`);
  }
  if (!Number.isInteger(slot.priority) || slot.priority < 1 || slot.priority > 0xffff) {
    throw invalidArgument(op, `priority must be 1..65535, got ${slot.priority}`);
  }
}

/**
 * Attaches a direct-action cls_bpf filter under clsact at `slot` (creating the qdisc if needed).
 * No RCU grace period, unlike tcx. The filter has no fd and no pin: it stays until
 * detachTcFilter or until its device is deleted. With `replace`, a filter already at the slot
 * gets the new program in one step; without, it makes the attach fail with EEXIST.
 */
export function attachTcFilter(prog: BpfProgram, ifindex: number, direction: TcDirection, slot: TcFilterSlot, opts: { replace?: boolean } = {}): void {
  const op = `attach tc ${direction} ifindex ${ifindex}`;
  checkProgram(op, prog);
  checkSlot(op, ifindex, direction, slot);
  withLibbpfLog(undefined, () => addon.tcFilterAttach(prog.fd, ifindex, direction === 'egress', slot.handle, slot.priority, !!opts.replace));
}

/** The program of the clsact filter at `slot`, undefined when there is none. */
export function queryTcFilter(ifindex: number, direction: TcDirection, slot: TcFilterSlot): AttachedProgram | undefined {
  checkSlot('query tc filter', ifindex, direction, slot);
  const id = withLibbpfLog(undefined, () => addon.tcFilterQuery(ifindex, direction === 'egress', slot.handle, slot.priority));
  return id ? describeProgram(id) : undefined;
}

/** Removes the clsact filter at `slot`; false when it (or its device) was already gone. */
export function detachTcFilter(ifindex: number, direction: TcDirection, slot: TcFilterSlot): boolean {
  checkSlot('detach tc filter', ifindex, direction, slot);
  return withLibbpfLog(undefined, () => addon.tcFilterDetach(ifindex, direction === 'egress', slot.handle, slot.priority));
}

/** Attaches an XDP program: 'driver' (native) or 'generic' (skb) mode. */
export function attachXdp(prog: BpfProgram, ifindex: number, mode: 'driver' | 'generic'): BpfLink {
  const op = `attach xdp ${mode} ifindex ${ifindex}`;
  checkProgram(op, prog);
  checkIfindex(op, ifindex);
  if (mode !== 'driver' && mode !== 'generic') {
    throw invalidArgument(op, `mode must be 'driver' or 'generic', got ${String(mode)}`);
  }
  const flags = mode === 'generic' ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE;
  return new BpfLink('xdp', { handle: addon.linkCreate(prog.fd, ifindex, AttachType.XDP, flags, op) });
}

/** Attaches a cgroup program (cgroup v2 directory) at one of the AttachType.CGROUP_* hooks. */
export function attachCgroup(prog: BpfProgram, cgroupPath: string, attachType: number): BpfLink {
  const op = `attach cgroup ${cgroupPath} type ${attachType}`;
  checkProgram(op, prog);
  if (!Number.isInteger(attachType) || attachType < 0) {
    throw invalidArgument(op, `attachType must be a non-negative integer, got ${attachType}`);
  }
  const fd = openSync(cgroupPath, 'r');
  try {
    return new BpfLink('cgroup', { handle: addon.linkCreate(prog.fd, fd, attachType, 0, op) });
  } finally {
    closeSync(fd);
  }
}

/** Opens a tcx, XDP or cgroup link pinned on a bpffs. */
export function openPinnedLink(path: string): BpfLink {
  const op = `open pinned link ${path}`;
  const handle = new addon.FdHandle(openPinned(path, 'link', op));
  try {
    const info = addon.linkInfo(handle.fd);
    const kind: LinkKind | undefined =
      info.type === LINK_TYPE_TCX ? 'tcx' : info.type === LINK_TYPE_XDP ? 'xdp' : info.type === LINK_TYPE_CGROUP ? 'cgroup' : undefined;
    if (!kind) throw invalidArgument(op, `link type ${info.type} is not tcx, xdp or cgroup`);
    return new BpfLink(kind, { handle, pinPath: path });
  } catch (e) {
    handle.close();
    throw e;
  }
}

/** { id, name, type, tag } of an attached program. */
export type AttachedProgram = ProgInfo;

export interface Attached {
  /** tcx programs in run order. */
  tcx: { ingress: AttachedProgram[]; egress: AttachedProgram[] };
  xdp?: AttachedProgram & { mode: 'driver' | 'generic' | 'hw' | 'multi' };
}

const XDP_MODES = { 1: 'driver', 2: 'generic', 3: 'hw', 4: 'multi' } as const;

function describeProgram(id: number): AttachedProgram {
  // A program detached between the query and this look-up keeps its id and loses the rest.
  return addon.progInfoById(id) ?? { id, name: '', type: 0, tag: '' };
}

function tcxPrograms(ifindex: number, type: number): AttachedProgram[] {
  try {
    return addon.progQuery(ifindex, type).map(describeProgram);
  } catch (e) {
    // No tcx in this kernel: nothing can be attached that way.
    if (e instanceof KelpBpfError && NO_TCX.has(e.code)) return [];
    throw e;
  }
}

/** tcx and XDP programs on an interface (classic tc filters are not listed). */
export function listAttached(ifindex: number): Attached {
  checkIfindex('list attached', ifindex);
  const out: Attached = {
    tcx: {
      ingress: tcxPrograms(ifindex, AttachType.TCX_INGRESS),
      egress: tcxPrograms(ifindex, AttachType.TCX_EGRESS),
    },
  };
  const xdp = withLibbpfLog(undefined, () => addon.xdpQuery(ifindex));
  if (xdp.progId) {
    const mode = XDP_MODES[xdp.mode as keyof typeof XDP_MODES] ?? 'driver';
    out.xdp = { ...describeProgram(xdp.progId), mode };
  }
  return out;
}
