// Running a short synchronous function inside another network namespace (see native/netns.cc).
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
