// Figure 4: the agent's resident memory (VmRSS) as its node fills with endpoints, on a fresh
// agent each round. The reference is a bare Node process (what any Node agent costs at idle);
// the reference CNI plugins have no daemon to compare with.
import { spawn } from 'node:child_process';
import { BenchConfig } from './lib/config';
import { defer, throwIfInterrupted } from './lib/cleanup';
import { pool } from './lib/exec';
import { Figure } from './lib/figure';
import { agentPid, rssKiB, startKelpNode } from './lib/kelp-node';
import { NetnsSet } from './lib/netns';
import { progress, sleep } from './lib/progress';
import { median, num } from './lib/stats';
import { kelpTarget } from './lib/targets';

export const AGENT = 'kelp agent';
export const BARE_NODE = 'bare node process';

/** RSS after the process has been left alone: median of samples taken after a settle period. */
async function settledRssKiB(pid: number): Promise<number> {
  await sleep(1000);
  const xs: number[] = [];
  for (let i = 0; i < 5; i++) {
    xs.push(rssKiB(pid));
    await sleep(200);
  }
  return median(xs);
}

async function bareNodeRssKiB(): Promise<number> {
  throwIfInterrupted();
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1 << 30)'], { stdio: 'ignore' });
  const kill = defer(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  try {
    if (!child.pid) throw new Error('could not start a bare node process');
    return await settledRssKiB(child.pid);
  } finally {
    await kill();
  }
}

export async function benchMemory(cfg: BenchConfig, tag: string): Promise<Figure> {
  const steps = [0, 100, cfg.memoryPods];
  const fig = new Figure(`4. Agent memory at ${steps.join(', ')} endpoints`);
  fig.notes.push(
    `VmRSS of the agent process (/proc/<pid>/status), median of 5 samples taken after 1 s idle, on a fresh agent each round ` +
      `(pod CIDR /20). Pods are added through kelp-cni, ${cfg.memoryConcurrency} at a time, each in its own netns; ` +
      `"after DEL" is once every pod is deleted again. Per-endpoint cost = (RSS at ${cfg.memoryPods} − RSS at 0) ÷ ${cfg.memoryPods}.`,
    `Reference: a bare \`node\` process idling (${process.version}), measured the same way in the same round.`,
  );
  for (let r = 0; r < cfg.memoryRounds; r++) {
    const node = await startKelpNode({ prefix: `${tag}m`, podCidr: '10.250.0.0/20', logLevel: 'info' });
    const netns = new NetnsSet();
    try {
      const pid = agentPid(node.sb);
      const target = kelpTarget(node.sb, 'kelp');
      const pods: Array<{ cid: string; path: string }> = [];
      const rss: number[] = [];
      for (const want of steps) {
        const names = Array.from({ length: want - pods.length }, (_, i) => `${tag}-m${r}i${pods.length + i}`);
        const t0 = Date.now();
        const added = netns.create(names).map((p, i) => ({ cid: `${tag}m${r}i${pods.length + i}`, path: p }));
        await pool(added, cfg.memoryConcurrency, (p) => target.call('ADD', p.cid, p.path));
        pods.push(...added);
        const kib = await settledRssKiB(pid);
        rss.push(kib);
        fig.record(`RSS at ${want} endpoints`, AGENT, 'MiB', kib / 1024);
        progress(`memory round ${r + 1}/${cfg.memoryRounds}: ${want} endpoints${names.length ? ` (${names.length} added in ${((Date.now() - t0) / 1000).toFixed(1)} s)` : ''}: agent RSS ${num(kib / 1024)} MiB`);
        if (want === 0) {
          const bare = await bareNodeRssKiB();
          fig.record('RSS at 0 endpoints', BARE_NODE, 'MiB', bare / 1024);
          progress(`memory round ${r + 1}/${cfg.memoryRounds}: bare node process RSS ${num(bare / 1024)} MiB`);
        }
      }
      fig.record(`RSS per endpoint, 0 → ${cfg.memoryPods}`, AGENT, 'KiB', (rss[rss.length - 1] - rss[0]) / cfg.memoryPods);

      const t0 = Date.now();
      await pool(pods, cfg.memoryConcurrency, (p) => target.call('DEL', p.cid, p.path));
      netns.removeAll();
      const after = await settledRssKiB(pid);
      fig.record('RSS after DEL of all', AGENT, 'MiB', after / 1024);
      progress(`memory round ${r + 1}/${cfg.memoryRounds}: all ${pods.length} deleted in ${((Date.now() - t0) / 1000).toFixed(1)} s: agent RSS ${num(after / 1024)} MiB`);
    } finally {
      await netns.close();
      await node.stop();
    }
  }
  fig.compare('RSS at 0 endpoints', AGENT, BARE_NODE, 'lower');
  return fig;
}
