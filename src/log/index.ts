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

/**
 * One event that may repeat thousands of times a second (a client flood, a noisy peer): the
 * first occurrence is logged at once, later ones are counted and logged as one line with the
 * count once per window, so a flood costs a handful of lines, never one per event.
 */
export class RepeatedLog {
  private suppressed = 0;
  private total = 0;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly log: Logger,
    private readonly level: 'info' | 'warn' | 'error',
    private readonly msg: string,
    private readonly windowMs = 10_000,
  ) {}

  hit(): void {
    this.total++;
    if (this.timer) {
      this.suppressed++;
      return;
    }
    this.log[this.level]({ count: 1, total: this.total }, this.msg);
    this.timer = setTimeout(() => this.flush(), this.windowMs);
    this.timer.unref();
  }

  /** Logs what was counted since the last line, and ends the window. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.suppressed === 0) return;
    this.log[this.level]({ count: this.suppressed, total: this.total, windowMs: this.windowMs }, `${this.msg} (repeated)`);
    this.suppressed = 0;
  }
}
