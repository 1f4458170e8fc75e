// A helper process the test talks to over JSON lines: one request per line on its stdin, one
// answer per line on its stdout carrying the request's id, and `{"ready": true}` once it serves.
// The probe peers of the policy matrix and of the services suite (test/fixtures/*) are such
// processes, each in a network namespace of the test's.
import type { ChildProcess } from 'node:child_process';
import readline from 'node:readline';

export class LinePeer<Req extends { timeoutMs?: number }, Rep> {
  private next = 1;
  private readonly waiting = new Map<number, (r: Rep) => void>();
  private stderr = '';
  /** Resolves at its ready line; rejects if it exits first. */
  readonly ready: Promise<void>;

  /**
   * `failure` makes the answer given when the process never answers or exits; `decode` turns an
   * answer line (its id still in) into an answer.
   */
  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    private readonly failure: (error: string) => Rep,
    decode: (msg: Record<string, unknown>) => Rep,
  ) {
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    const lines = readline.createInterface({ input: child.stdout! });
    this.ready = new Promise((resolve, reject) => {
      child.once('exit', (code) => {
        reject(new Error(`peer ${name} exited with ${code}: ${this.stderr}`));
        for (const done of this.waiting.values()) done(failure(`peer ${name} exited with ${code}`));
        this.waiting.clear();
      });
      lines.on('line', (line) => {
        const msg = JSON.parse(line) as Record<string, unknown>;
        if (msg.ready) return resolve();
        const id = msg.id as number;
        const done = this.waiting.get(id);
        this.waiting.delete(id);
        done?.(decode(msg));
      });
    });
  }

  /** Sends one request; resolves with its answer, or a failure when the peer never answers. */
  request(req: Req): { id: number; result: Promise<Rep> } {
    const id = this.next++;
    const result = new Promise<Rep>((resolve) => {
      const guard = setTimeout(() => {
        this.waiting.delete(id);
        resolve(this.failure(`peer ${this.name} did not answer`));
      }, (req.timeoutMs ?? 0) + 5000);
      this.waiting.set(id, (r) => {
        clearTimeout(guard);
        resolve(r);
      });
      this.child.stdin!.write(JSON.stringify({ id, ...req }) + '\n');
    });
    return { id, result };
  }

  /** Ends the process by its PID (closing stdin asks it to leave first). */
  async stop(): Promise<void> {
    const c = this.child;
    if (c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.stdin!.end();
    const t = setTimeout(() => c.kill('SIGKILL'), 1000);
    await exited;
    clearTimeout(t);
  }
}
