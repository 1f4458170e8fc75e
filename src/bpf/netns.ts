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
