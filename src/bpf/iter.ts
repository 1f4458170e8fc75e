// BPF iterators: a program of an `iter/<target>` section (iter/udp, iter/tcp...) behind an
// iterator link, run by reading an iterator fd to its end (native/iter.cc). Socket iterators walk
// the network namespace the fd is opened in: run() opens it in the namespace it is given.
import { closeSync, openSync } from 'node:fs';
import type { FdHandle } from './addon';
import { invalidArgument } from './errors';
import { addon } from './native';
import type { BpfProgram } from './program';

/** enum bpf_attach_type BPF_TRACE_ITER. */
const TRACE_ITER = 28;

export interface IterRunOptions {
  /** A network namespace path (/var/run/netns/x, /proc/<pid>/ns/net); default: the caller's. */
  netns?: string;
}

export class BpfIterator {
  /** @internal */
  constructor(private readonly handle: FdHandle, readonly program: string) {}

  /** Runs the program over every object of its target once; returns what it wrote (bpf_seq_write). */
  run(opts: IterRunOptions = {}): Buffer {
    const op = `run iterator ${this.program}`;
    if (this.handle.fd < 0) throw invalidArgument(op, 'the iterator is closed');
    if (opts.netns === undefined) return addon.iterRun(this.handle.fd, -1);
    if (typeof opts.netns !== 'string' || opts.netns === '') throw invalidArgument(op, 'netns must be a non-empty path');
    const ns = openSync(opts.netns, 'r');
    try {
      return addon.iterRun(this.handle.fd, ns);
    } finally {
      closeSync(ns);
    }
  }

  /** Releases the link; closing twice is harmless. */
  close(): void {
    this.handle.close();
  }
}

/** An iterator link for a program of an iter/<target> section that needs no parameters. */
export function attachIterator(prog: BpfProgram): BpfIterator {
  const op = `attach iterator ${prog?.name}`;
  if (!prog || typeof prog.fd !== 'number' || prog.fd < 0) throw invalidArgument(op, 'the program is closed');
  if (prog.section !== undefined && !prog.section.startsWith('iter/')) {
    throw invalidArgument(op, `the program's section is ${prog.section}, not iter/<target>`);
  }
  return new BpfIterator(addon.linkCreate(prog.fd, 0, TRACE_ITER, 0, op), prog.name);
}
