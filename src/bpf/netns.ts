// Running a short synchronous function inside another network namespace (see native/netns.cc).
import { closeSync, openSync } from 'node:fs';
import { invalidArgument } from './errors';
import { addon } from './native';

/**
 * Runs fn with the calling thread in the namespace at netnsPath (e.g. /var/run/netns/x) and
 * switches back before returning or throwing. fn must be synchronous: never await inside.
 */
export function inNetns<T>(netnsPath: string, fn: () => T): T {
  const result = addon.inNetns(netnsPath, fn);
  if (result instanceof Promise) {
    throw invalidArgument(`in netns ${netnsPath}`, 'fn returned a Promise; it must be synchronous');
  }
  return result;
}

/**
 * Sends one complete rtnetlink message (header included, NLM_F_ACK set) from a socket opened on
 * a libuv pool thread in the namespace netnsFd refers to, and resolves with the kernel's answer,
 * 0 or a negative errno. For requests the kernel works on for long inside sendmsg (see
 * native/rtnl.cc): the event loop runs on meanwhile.
 */
export function rtnlRequestAsync(netnsFd: number, message: Buffer, operation: string): Promise<number> {
  return addon.rtnlRequestAsync(netnsFd, message, operation);
}

export interface RtnlSocket {
  /** Sends one complete rtnetlink message (header included); the kernel has handled it on return. */
  send(message: Buffer, operation: string): void;
  /** Stops delivery and closes the socket; closing twice, or from inside onEvent, is harmless. */
  close(): void;
}

export interface RtnlSocketOptions {
  /** SO_RCVBUF in bytes (the kernel doubles it and keeps a minimum); default: the kernel's. */
  receiveBufferBytes?: number;
}

const MAX_RECEIVE_BUFFER = 2 ** 30;
const NLMSG_HDRLEN = 16;

/**
 * A NETLINK_ROUTE socket in the namespace netnsFd refers to (the fd stays the caller's), read on
 * the event loop. Per wake-up, onEvent gets the datagrams read from the kernel, then 0 or the
 * errno of a socket error met while reading (ENOBUFS: replies that did not fit the receive buffer
 * were dropped). A socket error is only reported: nothing throws, the socket stays usable. It is
 * connected to the kernel, so no other socket, whatever its process, can send to it. It does not
 * keep the process alive by itself. An exception from onEvent is an uncaught exception.
 */
export function openRtnlSocket(
  netnsFd: number,
  onEvent: (datagrams: Buffer[], errno: number) => void,
  opts: RtnlSocketOptions = {},
): RtnlSocket {
  const op = 'open netlink socket';
  if (!Number.isInteger(netnsFd) || netnsFd < 0) throw invalidArgument(op, `netnsFd must be a file descriptor, got ${netnsFd}`);
  if (typeof onEvent !== 'function') throw invalidArgument(op, 'onEvent must be a function');
  const bytes = opts.receiveBufferBytes;
  if (bytes !== undefined && (!Number.isInteger(bytes) || bytes < 1 || bytes > MAX_RECEIVE_BUFFER)) {
    throw invalidArgument(op, `receiveBufferBytes must be an integer from 1 to ${MAX_RECEIVE_BUFFER}, got ${bytes}`);
  }
  const handle = new addon.RtnlSocketHandle(netnsFd, bytes ?? 0, onEvent);
  let closed = false;
  return {
    send(message, operation) {
      if (!Buffer.isBuffer(message) || message.length < NLMSG_HDRLEN) {
        throw invalidArgument(operation, `message must be a Buffer of at least ${NLMSG_HDRLEN} bytes (a netlink header)`);
      }
      handle.send(message, operation);
    },
    close() {
      if (closed) return;
      closed = true;
      handle.close();
    },
  };
}

/**
 * The kernel's cookie of a network namespace (the calling thread's without a path): the value
 * bpf_get_netns_cookie() gives a program running for a socket of that namespace.
 */
export function netnsCookie(netnsPath?: string): bigint {
  if (netnsPath === undefined) return addon.netnsCookie(-1);
  if (typeof netnsPath !== 'string' || netnsPath === '') throw invalidArgument('read netns cookie', 'netnsPath must be a non-empty path');
  const fd = openSync(netnsPath, 'r');
  try {
    return addon.netnsCookie(fd);
  } finally {
    closeSync(fd);
  }
}
