// Ring buffer consumer on the event loop: the addon watches libbpf's epoll fd with a uv poll
// handle, so records arrive as callbacks with no polling and no extra thread.
import { invalidArgument } from './errors';
import { addon } from './native';
import { MapType, type BpfMap } from './map';

export interface RingBuffer {
  /** Stops delivery and frees the ring; closing twice is harmless. */
  close(): void;
  /** Records the addon read but could not hand over (no memory to copy them). */
  failed(): number;
}

/**
 * Calls cb with a copy of each record, in order, from the event loop. An open ring buffer keeps
 * the process alive until closed. An exception from cb is an uncaught exception.
 */
export function openRingBuffer(map: BpfMap, cb: (record: Buffer) => void): RingBuffer {
  const op = `open ring buffer ${map.name}`;
  if (map.type !== MapType.RINGBUF) throw invalidArgument(op, `not a ring buffer map (type ${map.type})`);
  if (typeof cb !== 'function') throw invalidArgument(op, 'cb must be a function');
  const handle = new addon.RingBufHandle(map.fd, cb);
  let closed = false;
  let failed = 0;
  return {
    failed() {
      return closed ? failed : handle.failed();
    },
    close() {
      if (closed) return;
      failed = handle.failed();
      closed = true;
      handle.close();
    },
  };
}
