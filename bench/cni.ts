// Figures 2 and 3: CNI ADD/DEL latency and throughput, end to end through the exec'd plugin
// binary, kelp-cni against Debian's bridge + host-local, in the same run.
//
// Timed region: spawn of the plugin process to its exit with stdout read, as a runtime waits
// for it, measured by bench/tools/cnirun from inside the node's namespace (the reference's
// bridge and veths have to land there; kelp-cni only talks to its agent's socket). The
// runtime's own work (creating and removing the pod netns) is outside it. The exec floor
// (/bin/true the same way) is what any plugin pays before doing work.
import { Sandbox } from '../src/sandbox';
import { BenchConfig, rotate } from './lib/config';
import { pool } from './lib/exec';
import { Figure } from './lib/figure';
import { agentAdds, startKelpNode } from './lib/kelp-node';
import { NetnsSet } from './lib/netns';
import { progress, sleep } from './lib/progress';
import { median, num, quantile, ratio } from './lib/stats';
import { BridgeNode, CniTarget, floorTarget, kelpTarget } from './lib/targets';

export const KELP = 'kelp';
export const BRIDGE = 'bridge+host-local';
const FLOOR = 'exec floor (/bin/true)';

const WARMUP = 3;

interface Variant {
  target: CniTarget;
  /** An exec floor has no DEL to measure. */
  floor?: boolean;
}

export interface CniFigures {
  latency?: Figure;
  throughput?: Figure;
}

export async function benchCni(cfg: BenchConfig, tag: string, which: { latency: boolean; throughput: boolean }): Promise<CniFigures> {
  progress(`starting a kelp node (netns ${tag}k-node, its own agent) and a reference node (netns ${tag}-ref, bridge ${tag}br)`);
  const kelp = await startKelpNode({ prefix: `${tag}k`, podCidr: '10.250.0.0/20', logLevel: 'info' });
  const ref = BridgeNode.create(`${tag}-ref`, `${tag}br`, '10.251.0.0/20');
  const netns = new NetnsSet();
  try {
    const variants: Variant[] = [
      { target: kelpTarget(kelp.sb, KELP) },
      { target: ref.target(BRIDGE) },
      { target: floorTarget(FLOOR, kelp.sb.node), floor: true },
    ];
    await warmUp(variants, netns, tag);
    const out: CniFigures = {};
    if (which.latency) out.latency = await latency(cfg, tag, variants, netns, kelp.sb);
    if (which.throughput) out.throughput = await throughput(cfg, tag, variants.filter((v) => !v.floor), netns);
    return out;
  } finally {
    await netns.close();
    await ref.close();
    await kelp.stop();
  }
}

/** First calls pay for page-cache misses, the agent's JIT and the reference's bridge creation. */
async function warmUp(variants: Variant[], netns: NetnsSet, tag: string): Promise<void> {
  for (const [v, { target, floor }] of variants.entries()) {
    const names = Array.from({ length: WARMUP }, (_, i) => `${tag}-w${v}-${i}`);
    const paths = netns.create(names);
    for (const [i, p] of paths.entries()) {
      await target.call('ADD', `${tag}w${v}i${i}`, p);
      if (!floor) await target.call('DEL', `${tag}w${v}i${i}`, p);
    }
    netns.remove(names);
  }
}

async function latency(cfg: BenchConfig, tag: string, variants: Variant[], netns: NetnsSet, sb: Sandbox): Promise<Figure> {
  const fig = new Figure('2. CNI ADD / DEL latency, one call at a time');
  fig.notes.push(
    `Wall time of one plugin exec (spawn to exit), ${cfg.cniSamples} ADDs then ${cfg.cniSamples} DELs per variant per round, ` +
      `variants interleaved call by call in an order rotated every call; pods accumulate to ${cfg.cniSamples} per node during a round. ` +
      `p99 is per round, so with ${cfg.cniSamples} samples it sits near the round's slowest call.`,
    `Both plugins are exec'd by bench/tools/cnirun from inside their node netns, as a runtime on that node would: ` +
      `posix_spawn, config on stdin, stdout/stderr read to EOF, waitpid, timed in that process (a spawn from Node costs ~4 ms more). ` +
      `The exec floor is /bin/true exec'd the same way.`,
    `Reference config: bridge (isGateway, no ipMasq) + host-local, from containernetworking-plugins; kelp: the agent's installed conflist.`,
    `"in agent" rows are the agent's own timing of each ADD (its log), both kelp variants together.`,
  );
  for (let r = 0; r < cfg.rounds; r++) {
    const names = variants.map((_, v) => Array.from({ length: cfg.cniSamples }, (_, i) => `${tag}-r${r}v${v}i${i}`));
    const paths = names.map((ns) => netns.create(ns));
    const cid = (v: number, i: number) => `${tag}r${r}v${v}i${i}`;
    const add: number[][] = variants.map(() => []);
    const del: number[][] = variants.map(() => []);
    const idx = variants.map((_, v) => v);
    for (let i = 0; i < cfg.cniSamples; i++) {
      for (const v of rotate(idx, r + i)) add[v].push((await variants[v].target.call('ADD', cid(v, i), paths[v][i])).ms);
    }
    for (let i = 0; i < cfg.cniSamples; i++) {
      for (const v of rotate(idx, r + i)) if (!variants[v].floor) del[v].push((await variants[v].target.call('DEL', cid(v, i), paths[v][i])).ms);
    }
    for (const ns of names) netns.remove(ns);
    for (const [v, { target, floor }] of variants.entries()) {
      if (floor) {
        fig.record('exec floor p50', target.name, 'ms', median(add[v]));
        continue;
      }
      fig.record('ADD p50', target.name, 'ms', median(add[v]));
      fig.record('ADD p99', target.name, 'ms', quantile(add[v], 0.99));
      fig.record('DEL p50', target.name, 'ms', median(del[v]));
      fig.record('DEL p99', target.name, 'ms', quantile(del[v], 0.99));
    }
    const inAgent = agentAdds(sb).filter((a) => a.containerId.startsWith(`${tag}r${r}v`));
    if (inAgent.length > 0) {
      fig.record('in agent: ADD total', KELP, 'ms', median(inAgent.map((a) => a.ms)));
      const steps = [...new Set(inAgent.flatMap((a) => Object.keys(a.steps)))];
      for (const s of steps) fig.record(`in agent: step ${s}`, KELP, 'ms', median(inAgent.map((a) => a.steps[s] ?? 0)));
    }
    const last = (m: string, v: string) => fig.values(m, v).at(-1)!;
    progress(
      `cni latency round ${r + 1}/${cfg.rounds}: ADD p50 kelp ${num(last('ADD p50', KELP))} ms, bridge ${num(last('ADD p50', BRIDGE))} ms ` +
        `(${ratio(last('ADD p50', KELP) / last('ADD p50', BRIDGE))}); DEL p50 kelp ${num(last('DEL p50', KELP))} ms, bridge ${num(last('DEL p50', BRIDGE))} ms`,
    );
    await sleep(200);
  }
  for (const m of ['ADD p50', 'ADD p99', 'DEL p50', 'DEL p99']) fig.compare(m, KELP, BRIDGE, 'lower');
  return fig;
}

async function throughput(cfg: BenchConfig, tag: string, variants: Variant[], netns: NetnsSet): Promise<Figure> {
  const n = cfg.concurrency;
  const fig = new Figure(`3. CNI throughput, ${n} concurrent calls`);
  fig.notes.push(
    `Per variant per round: ${n} pod netns made (untimed), ${n} ADDs started at once, pods/s = ${n} ÷ time until the last one exits; ` +
      `then the same for ${n} concurrent DELs. Churn: ${n >> 1} pods ADDed (untimed), then their ${n >> 1} DELs and ${n >> 1} ADDs of new pods ` +
      `all started at once; calls/s = ${2 * (n >> 1)} ÷ time until the last exits, and the median latency of those ADDs. ` +
      `Variants one after the other in a rotated order each round. Plugins exec'd as in figure 2.`,
  );
  for (let r = 0; r < cfg.throughputRounds; r++) {
    const line: string[] = [];
    for (const v of rotate(variants.map((_, i) => i), r)) {
      const { target } = variants[v];
      const names = Array.from({ length: n }, (_, i) => `${tag}-t${r}v${v}i${i}`);
      const paths = netns.create(names);
      const cid = (i: number) => `${tag}t${r}v${v}i${i}`;
      let t0 = process.hrtime.bigint();
      await pool(paths, n, (p, i) => target.call('ADD', cid(i), p));
      const addS = Number(process.hrtime.bigint() - t0) / 1e9;
      t0 = process.hrtime.bigint();
      await pool(paths, n, (p, i) => target.call('DEL', cid(i), p));
      const delS = Number(process.hrtime.bigint() - t0) / 1e9;
      // Churn, as when a deployment rolls: half the pods go while as many new ones come, all at
      // once; ADD latency here is what a new pod waits while deletions run.
      const half = Math.max(1, n >> 1);
      const churnCid = (i: number) => `${tag}c${r}v${v}i${i}`;
      await pool(paths.slice(0, half), half, (p, i) => target.call('ADD', churnCid(i), p));
      t0 = process.hrtime.bigint();
      const [, churnAdds] = await Promise.all([
        pool(paths.slice(0, half), half, (p, i) => target.call('DEL', churnCid(i), p)),
        pool(paths.slice(half, 2 * half), half, (p, i) => target.call('ADD', churnCid(half + i), p)),
      ]);
      const churnS = Number(process.hrtime.bigint() - t0) / 1e9;
      await pool(paths.slice(half, 2 * half), half, (p, i) => target.call('DEL', churnCid(half + i), p));
      netns.remove(names);
      fig.record('ADD', target.name, 'pods/s', n / addS);
      fig.record('DEL', target.name, 'pods/s', n / delS);
      fig.record('churn', target.name, 'calls/s', (2 * half) / churnS);
      fig.record('ADD p50 during churn', target.name, 'ms', median(churnAdds.map((c) => c.ms)));
      line.push(`${target.name} ADD ${num(n / addS)}/s DEL ${num(n / delS)}/s churn ${num((2 * half) / churnS)}/s (ADD p50 ${num(median(churnAdds.map((c) => c.ms)))} ms)`);
      // Removed namespaces are torn down by a kernel worker: let it finish before the next variant.
      await sleep(300);
    }
    progress(`cni throughput round ${r + 1}/${cfg.throughputRounds}: ${line.join('; ')}`);
  }
  fig.compare('ADD', KELP, BRIDGE, 'higher');
  fig.compare('DEL', KELP, BRIDGE, 'higher');
  fig.compare('churn', KELP, BRIDGE, 'higher');
  fig.compare('ADD p50 during churn', KELP, BRIDGE, 'lower');
  return fig;
}
