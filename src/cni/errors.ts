// CNI error codes (SPEC §5 "Error") and the error object a plugin prints on stdout.

export const CniCode = {
  /** cniVersion not supported, or too old for the verb (CHECK < 0.4.0, STATUS/GC < 1.1.0). */
  IncompatibleVersion: 1,
  /** A config field the plugin refuses; the message must contain key and value. */
  UnsupportedField: 2,
  /** Container unknown: tells the runtime no cleanup is needed (never for DEL). */
  UnknownContainer: 3,
  /** Invalid or missing environment variables; the message must name them. */
  InvalidEnv: 4,
  IoFailure: 5,
  DecodeFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  /** STATUS: cannot serve ADD. */
  NotAvailable: 50,
  /** STATUS: cannot serve ADD, and existing pods may have degraded connectivity. */
  NotAvailableDegraded: 51,
  /** Plugin-specific codes start here. */
  FirstPluginCode: 100,
  /** libcni's skel uses this for unexpected failures; runtimes treat every code alike. */
  Internal: 999,
} as const;

export interface CniErrorJson {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export class CniError extends Error {
  override readonly name = 'CniError';

  constructor(
    readonly code: number,
    readonly msg: string,
    readonly details?: string,
    /** Set when the error comes from reading the request: the version to answer in. */
    readonly cniVersion?: string,
  ) {
    super(details ? `${msg}: ${details}` : msg);
    // 0 means "unknown" in libcni and JSON needs a uint: reject both early.
    if (!Number.isInteger(code) || code < 1) throw new RangeError(`invalid CNI error code ${code}`);
  }

  withVersion(cniVersion: string): CniError {
    return new CniError(this.code, this.msg, this.details, cniVersion);
  }

  /** The spec's error object; its shape is the same in every CNI version. */
  toCniJson(cniVersion: string): CniErrorJson {
    const out: CniErrorJson = { cniVersion, code: this.code, msg: this.msg };
    if (this.details !== undefined && this.details !== '') out.details = this.details;
    return out;
  }
}

/** Any thrown value as a CniError: CniErrors pass through, the rest become code 999. */
export function toCniError(err: unknown): CniError {
  if (err instanceof CniError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new CniError(CniCode.Internal, 'kelp internal error', message);
}
