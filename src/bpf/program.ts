// A loaded BPF program: an owned fd plus what the kernel says about it, and BPF_PROG_TEST_RUN.
import type { FdHandle } from './addon';
import { invalidArgument } from './errors';
import { openPinned } from './fd';
import { addon } from './native';

/** Program types (enum bpf_prog_type) kelp uses. */
export const ProgType = {
  SOCKET_FILTER: 1,
  SCHED_CLS: 3,
  SCHED_ACT: 4,
  XDP: 6,
  CGROUP_SKB: 8,
  CGROUP_SOCK: 9,
  SOCK_OPS: 13,
  CGROUP_SOCK_ADDR: 18,
} as const;

export interface TestRunOptions {
  /** The packet (for tc: from the Ethernet header; at least 14 bytes). */
  data: Buffer;
  /** Context in: struct __sk_buff for tc, struct xdp_md for XDP. Its output comes back as `ctx`. */
  ctx?: Buffer;
  /** Room for the output packet; default data.length + 256. Too small fails with ENOSPC. */
  dataSizeOut?: number;
  /** Runs (default 1); duration is then the mean. */
  repeat?: number;
}

export interface TestRunResult {
  retval: number;
  /** The packet after the program ran (its final length). */
  data: Buffer;
  ctx?: Buffer;
  /** Mean nanoseconds per run, as measured by the kernel. */
  duration: number;
}

const MAX_U32 = 0xffff_ffff;

export class BpfProgram {
  readonly id: number;
  /** The kernel's name: the C function name, cut to 15 bytes. */
  readonly name: string;
  readonly type: number;
  readonly tag: string;
  /** ELF section and expected attach type; known for programs from loadObject. */
  readonly section?: string;
  readonly attachType?: number;
  private readonly handle: FdHandle;

  /** Wraps an owned program fd. */
  static fromFd(fd: number, from?: { name: string; section: string; attachType: number }): BpfProgram {
    return new BpfProgram(new addon.FdHandle(fd), from);
  }

  private constructor(handle: FdHandle, from?: { name: string; section: string; attachType: number }) {
    this.handle = handle;
    try {
      const info = addon.progInfo(handle.fd);
      this.id = info.id;
      this.type = info.type;
      this.tag = info.tag;
      this.name = from?.name ?? info.name;
    } catch (e) {
      handle.close();
      throw e;
    }
    if (from) {
      this.section = from.section;
      this.attachType = from.attachType;
    }
  }

  /** -1 once closed. */
  get fd(): number {
    return this.handle.fd;
  }

  testRun(opts: TestRunOptions): TestRunResult {
    const op = `test run ${this.name}`;
    if (!opts || !Buffer.isBuffer(opts.data)) throw invalidArgument(op, 'data must be a Buffer');
    if (opts.ctx !== undefined && !Buffer.isBuffer(opts.ctx)) throw invalidArgument(op, 'ctx must be a Buffer');
    const dataSizeOut = opts.dataSizeOut ?? opts.data.length + 256;
    const repeat = opts.repeat ?? 1;
    if (!Number.isInteger(dataSizeOut) || dataSizeOut < 0 || dataSizeOut > MAX_U32) {
      throw invalidArgument(op, `dataSizeOut must be a non-negative integer, got ${dataSizeOut}`);
    }
    if (!Number.isInteger(repeat) || repeat < 1 || repeat > 0x7fff_ffff) {
      throw invalidArgument(op, `repeat must be a positive integer, got ${repeat}`);
    }
    const r = addon.progTestRun(this.fd, opts.data, dataSizeOut, opts.ctx, repeat);
    const out: TestRunResult = { retval: r.retval, data: r.data, duration: r.duration };
    if (r.ctx) out.ctx = r.ctx;
    return out;
  }

  pin(path: string): void {
    addon.objPin(this.fd, path);
  }

  /** Closing twice is harmless. Attachments hold their own reference to the program. */
  close(): void {
    this.handle.close();
  }
}

export function openPinnedProgram(path: string): BpfProgram {
  return BpfProgram.fromFd(openPinned(path, 'prog', `open pinned program ${path}`));
}
