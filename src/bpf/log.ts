// Routes libbpf's log to pino. The addon buffers libbpf's lines while it works; the facade drains
// them after each call that goes through libbpf and hands them to the caller's logger, or to the
// one set here.
import { addon } from './native';

/** What libbpf lines need from a logger; a pino.Logger is one. */
export interface LibbpfLogger {
  warn(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

let defaultLogger: LibbpfLogger | undefined;

/** Where libbpf's lines go when a call has no logger of its own; undefined drops them. */
export function setLibbpfLogger(logger: LibbpfLogger | undefined): void {
  defaultLogger = logger;
}

const LIBBPF_WARN = 0;

/** Runs fn, then forwards what libbpf logged meanwhile: warnings at warn, the rest at debug. */
export function withLibbpfLog<T>(logger: LibbpfLogger | undefined, fn: () => T): T {
  try {
    return fn();
  } finally {
    const lines = addon.drainLog();
    const to = logger ?? defaultLogger;
    if (to) {
      for (const [level, text] of lines) {
        if (level === LIBBPF_WARN) to.warn({ libbpf: true }, text);
        else to.debug({ libbpf: true }, text);
      }
    }
  }
}
