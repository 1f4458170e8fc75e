// Undo steps for everything the benchmark creates (namespaces, agents, mounts, temp dirs),
// run newest first on success, on failure and on Ctrl-C / SIGTERM.

type Undo = () => void | Promise<void>;

const steps: Array<{ fn: Undo }> = [];
let interrupted = false;

/**
 * Registers an undo step. The returned function unregisters it and runs it (once), or only
 * unregisters it with `run` false (the thing it undoes got another owner).
 */
export function defer(fn: Undo): (run?: boolean) => Promise<void> {
  const entry = { fn };
  steps.push(entry);
  return async (run = true) => {
    const i = steps.indexOf(entry);
    if (i < 0) return;
    steps.splice(i, 1);
    if (run) await fn();
  };
}

/** Runs every registered step, newest first; a failing step does not stop the others. */
export async function cleanupAll(log: (line: string) => void): Promise<void> {
  while (steps.length > 0) {
    const { fn } = steps.pop()!;
    try {
      await fn();
    } catch (e) {
      log(`cleanup step failed: ${(e as Error).message}`);
    }
  }
}

export function isInterrupted(): boolean {
  return interrupted;
}

/** Creating anything after an interrupt would outlive the cleanup that is already running. */
export function throwIfInterrupted(): void {
  if (interrupted) throw new Error('interrupted');
}

/**
 * On SIGINT/SIGTERM: clean up, then exit 130/143. One Ctrl-C can arrive twice (from the
 * terminal to the process group, and again from a wrapper such as timeout), so a repeat only
 * exits at once when it comes a second or more after the first.
 */
export function exitCleanlyOnSignals(log: (line: string) => void): void {
  let first = 0;
  for (const [sig, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.on(sig, () => {
      if (interrupted) {
        if (Date.now() - first >= 1000) process.exit(code);
        return;
      }
      interrupted = true;
      first = Date.now();
      log(`${sig}: removing what the benchmark created (again to exit at once)`);
      void cleanupAll(log).finally(() => process.exit(code));
    });
  }
}
