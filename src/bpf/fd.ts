// Pinned objects and what kind of BPF object an fd refers to, from the kernel's own name for it
// ("anon_inode:bpf-map"), so a pin of the wrong kind fails with a clear error.
import { readlinkSync } from 'node:fs';
import { invalidArgument } from './errors';
import { addon } from './native';

export type BpfFdKind = 'map' | 'prog' | 'link';

/** Opens a pin and returns its fd (owned by the caller) if it is of the wanted kind. */
export function openPinned(path: string, want: BpfFdKind, operation: string): number {
  const fd = addon.objGet(path);
  const target = readlinkSync(`/proc/self/fd/${fd}`);
  if (target !== `anon_inode:bpf-${want}`) {
    new addon.FdHandle(fd).close();
    const got = target.startsWith('anon_inode:bpf-') ? target.slice('anon_inode:bpf-'.length) : target;
    throw invalidArgument(operation, `not a BPF ${want} (it is ${got})`);
  }
  return fd;
}
