// The UDP prober (bench/tools/probe.c) from the benchmark's side: streams of probes between
// pods, one every interval, and what reached each listener, with the prober's own CLOCK_MONOTONIC
// stamps (the clock of process.hrtime here: `nowNs()` is comparable with them).
import { ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { defer, throwIfInterrupted } from './cleanup';
import { benchTool } from './tools';

export type StreamMode = 'fixed' | 'fresh';

export interface Sent {
  seq: number;
  ns: number;
}

export interface Received {
  listener: number;
  seq: number;
  sentNs: number;
  recvNs: number;
}

/** CLOCK_MONOTONIC in ns, as the prober stamps its probes. */
export function nowNs(): number {
  return Number(process.hrtime.bigint());
}

export class Prober {
  private readonly sent = new Map<number, Sent[]>();
  private readonly received = new Map<number, Received[]>();
  private readonly pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private readonly watchers = new Set<() => void>();
  private stderr = '';

  private constructor(
    private readonly child: ChildProcess,
    private readonly release: () => Promise<void>,
  ) {}

  /** Starts the prober (one probe per stream every `intervalUs`); it exits by itself after `lifetimeS`. */
  static async start(intervalUs: number, lifetimeS: number): Promise<Prober> {
    throwIfInterrupted();
    const child = spawn(benchTool('probe'), [String(intervalUs), String(lifetimeS)], { stdio: ['pipe', 'pipe', 'pipe'] });
    const release = defer(async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.stdin!.end();
      const late = setTimeout(() => child.kill('SIGKILL'), 1000);
      await exited;
      clearTimeout(late);
    });
    const p = new Prober(child, release);
    child.stderr!.on('data', (d: Buffer) => (p.stderr += d.toString()));
    const ready = new Promise<void>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code, signal) => {
        const e = new Error(`probe exited (${signal ?? code}): ${p.stderr.trim()}`);
        reject(e);
        for (const w of p.pending.values()) w.reject(e);
        p.pending.clear();
      });
      const lines = createInterface({ input: child.stdout! });
      lines.on('line', (line) => {
        if (line === 'ready') resolve();
        else p.line(line);
      });
    });
    try {
      await ready;
    } catch (e) {
      await release();
      throw e;
    }
    return p;
  }

  private line(line: string): void {
    const f = line.split(' ');
    switch (f[0]) {
      case 's':
        this.sent.get(Number(f[1]))?.push({ seq: Number(f[2]), ns: Number(f[3]) });
        break;
      case 'r':
        this.received.get(Number(f[2]))?.push({ listener: Number(f[1]), seq: Number(f[3]), sentNs: Number(f[4]), recvNs: Number(f[5]) });
        break;
      case 'ok':
      case 'err': {
        const id = Number(f[1]);
        const w = this.pending.get(id);
        this.pending.delete(id);
        if (f[0] === 'ok') w?.resolve();
        else w?.reject(new Error(`probe: ${f.slice(2).join(' ')}`));
        break;
      }
      default:
        return;
    }
    for (const w of this.watchers) w();
  }

  private command(id: number, text: string): Promise<void> {
    if (this.pending.has(id)) throw new Error(`probe: a command for ${id} is still pending`);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.stdin!.write(`${text}\n`);
    });
  }

  /** A UDP socket on 0.0.0.0:port in that netns, reporting every probe it receives. */
  listen(id: number, netnsPath: string, port: number): Promise<void> {
    return this.command(id, `listen ${id} ${netnsPath} ${port}`);
  }

  /** A stream of probes from that netns to ip:port; `fresh`: each probe a new flow (its own source port). */
  send(id: number, netnsPath: string, ip: string, port: number, mode: StreamMode): Promise<void> {
    this.sent.set(id, []);
    this.received.set(id, []);
    return this.command(id, `send ${id} ${netnsPath} ${ip} ${port} ${mode}`);
  }

  /** Ends a stream or a listener. */
  stop(id: number): Promise<void> {
    return this.command(id, `stop ${id}`);
  }

  /** Forgets what stream `id` sent and had received so far. */
  mark(id: number): void {
    this.sent.set(id, []);
    this.received.set(id, []);
  }

  /** What stream `id` sent since its start or last mark, in order. */
  sends(id: number): readonly Sent[] {
    return this.sent.get(id) ?? [];
  }

  /** The probes of stream `id` that reached a listener since its start or last mark, in order. */
  receipts(id: number): readonly Received[] {
    return this.received.get(id) ?? [];
  }

  /** Resolves true once `done()` holds (checked on each line of the prober), false after timeoutMs. */
  until(done: () => boolean, timeoutMs: number): Promise<boolean> {
    if (done()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const finish = (ok: boolean) => {
        clearTimeout(timer);
        this.watchers.delete(check);
        resolve(ok);
      };
      const check = () => {
        if (done()) finish(true);
      };
      const timer = setTimeout(() => finish(done()), timeoutMs);
      this.watchers.add(check);
    });
  }

  close(): Promise<void> {
    return this.release();
  }
}
