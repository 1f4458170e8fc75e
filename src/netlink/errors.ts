import { getSystemErrorName } from 'node:util';

/**
 * A kernel refusal, in the addon's error shape: `errno` (positive), `code` ("EEXIST") and the
 * operation that failed ("netlink newlink kelp1a2b: EEXIST"); a detail, when the code alone
 * would not say what happened, follows in parentheses.
 */
export class NetlinkError extends Error {
  override name = 'NetlinkError';
  readonly code: string;

  constructor(readonly operation: string, readonly errno: number, detail?: string) {
    const code = errnoName(errno);
    super(`${operation}: ${code}${detail ? ` (${detail})` : ''}`);
    this.code = code;
  }
}

function errnoName(errno: number): string {
  try {
    return getSystemErrorName(-errno);
  } catch {
    return `E${errno}`;
  }
}

/** True for the errnos that mean "the object is already gone" for a delete or a lookup. */
export function isGone(e: unknown): boolean {
  return e instanceof NetlinkError && GONE.has(e.code);
}

// ENODEV: no such link; ENOENT: netns or object missing; ESRCH: no such route;
// EADDRNOTAVAIL: no such address.
const GONE = new Set(['ENODEV', 'ENOENT', 'ESRCH', 'EADDRNOTAVAIL']);

export function hasCode(e: unknown, code: string): boolean {
  return e instanceof NetlinkError && e.code === code;
}

/** Re-throws an error from the addon (or fs) as a NetlinkError when it carries an errno. */
export function asNetlinkError(e: unknown, operation: string): unknown {
  const err = e as { errno?: unknown; code?: unknown };
  if (typeof err?.errno !== 'number') return e;
  return new NetlinkError(operation, Math.abs(err.errno));
}
