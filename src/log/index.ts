// One structured logger for the agent and the CLI: pino, one event per line.
// The agent logs to stderr (or a file); stdout stays free for command output.
import pino from 'pino';

export type Logger = pino.Logger;

export interface LoggerOptions {
  level?: string;
  file?: string;
  name?: string;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? process.env.KELP_LOG_LEVEL ?? 'info';
  const dest = opts.file ? pino.destination({ dest: opts.file, sync: true, mkdir: true }) : pino.destination(2);
  return pino({ name: opts.name ?? 'kelp', level, base: { pid: process.pid } }, dest);
}

/** A logger that drops everything: for library code used without an agent (tests, CLI). */
export const silentLogger: Logger = pino({ level: 'silent' });
