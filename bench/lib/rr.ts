// TCP_RR / TCP_CRR between pod pairs with build/bench/rr (bench/tools/rr.c): one client gives
// the pairs turns of `sliceMs` until each has had `seconds`, client and servers pinned to one
// CPU (a wake-up on the other vCPU costs ~65 µs on these VMs and would hide the datapath).
import { run, startServer } from './exec';
import { NETNS_DIR } from './netns';
import { benchTool } from './tools';

export interface RrPair {
  name: string;
  /** Netns names (under /var/run/netns). */
  clientNetns: string;
  serverNetns: string;
  serverIp: string;
  /** The port the client connects to (a service port); default RR_PORT, where the servers listen. */
  port?: number;
  /** Further namespaces that serve the pair (a service's other backends), each running a server too. */
  moreServerNetns?: string[];
}

export interface RrOptions {
  /** A cgroup v2 directory the client process joins before it starts (cgroup socket hooks apply there). */
  cgroup?: string;
}

export const RR_PORT = 7000;

/** Transactions per second of each pair, in order; `all` counts the warm-up too. */
export async function rrRates(pairs: RrPair[], mode: 'rr' | 'crr', seconds: number, cpu: number, sliceMs = 100, opts: RrOptions = {}): Promise<Array<{ rate: number; all: number }>> {
  const bin = benchTool('rr');
  const lifetime = String(seconds * pairs.length + 30);
  const pin = (cmd: string[]) => ['taskset', '-c', String(cpu), ...cmd];
  const servers = await Promise.all(
    pairs
      .flatMap((p) => [p.serverNetns, ...(p.moreServerNetns ?? [])])
      .map((ns) => startServer('ip', ['netns', 'exec', ns, ...pin([bin, 'server', String(RR_PORT), lifetime])], /^listening/m, { timeoutMs: 5000 })),
  );
  try {
    const targets = pairs.map((p) => `${NETNS_DIR}/${p.clientNetns},${p.serverIp},${p.port ?? RR_PORT}`);
    const client = pin([bin, 'client', mode, String(seconds), String(sliceMs), ...targets]);
    const [cmd, ...args] = opts.cgroup ? inCgroup(opts.cgroup, client) : client;
    const out = await run(cmd, args, { timeoutMs: (seconds * pairs.length + 15) * 1000 });
    return pairs.map((p, i) => {
      const m = new RegExp(`^target=${i} transactions=\\d+ seconds=\\S+ rate=(\\d+) all=(\\d+)$`, 'm').exec(out);
      if (!m) throw new Error(`rr client printed nothing for ${p.name}: ${JSON.stringify(out)}`);
      return { rate: Number(m[1]), all: Number(m[2]) };
    });
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
}

/** The command run from a shell that first moves itself into `cgroup` (cgroup v2: its cgroup.procs). */
export function inCgroup(cgroup: string, cmd: string[]): string[] {
  return ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup, ...cmd];
}
