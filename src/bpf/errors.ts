// The one error shape of the BPF layer: thrown by the addon (which constructs this class) and by
// the facade's own argument checks, so callers catch a single type and switch on `code`.
import type { ErrorFields } from './addon';

export class KelpBpfError extends Error {
  readonly errno: number;
  readonly code: string;
  /** What was being done, e.g. "update kelp_endpoints"; the message starts with it. */
  readonly operation: string;
  /** The verifier's log when a program failed to load. */
  readonly verifierLog?: string;

  constructor(message: string, fields: ErrorFields) {
    super(message);
    this.name = 'KelpBpfError';
    this.errno = fields.errno;
    this.code = fields.code;
    this.operation = fields.operation;
    if (fields.verifierLog !== undefined) this.verifierLog = fields.verifierLog;
  }
}

const EINVAL = 22;

/** An invalid argument caught before the kernel saw it: "<operation>: <detail>", code EINVAL. */
export function invalidArgument(operation: string, detail: string): KelpBpfError {
  return new KelpBpfError(`${operation}: ${detail}`, { errno: EINVAL, code: 'EINVAL', operation });
}
