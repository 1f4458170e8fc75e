// A kelp node (Sandbox: node netns + agent + CNI dirs) registered for cleanup, and what the
// benchmark reads from its agent: RSS and the per-step timings it logs for each ADD.
import { readFileSync } from 'node:fs';
import { Sandbox, SandboxOptions, sh } from '../../src/sandbox';
import { defer, throwIfInterrupted } from './cleanup';

export interface KelpNode {
  sb: Sandbox;
  stop: () => Promise<void>;
}

export async function startKelpNode(opts: SandboxOptions): Promise<KelpNode> {
  throwIfInterrupted();
  // Sandbox.start removes what it made when it fails; this covers an interrupt while it starts.
  const early = defer(() => {
    for (const ns of [`${opts.prefix}-node`, `${opts.prefix}-out`]) sh('ip', ['netns', 'del', ns], { allowFail: true });
  });
  const sb = await Sandbox.start(opts);
  const stop = defer(() => sb.stop());
  await early(false);
  return { sb, stop };
}

/** The agent's PID: `ip netns exec` execs node in place, so the child we spawned is the agent. */
export function agentPid(sb: Sandbox): number {
  const pid = sb.agent?.pid;
  if (!pid || sb.agent?.exitCode !== null) throw new Error('kelp agent is not running');
  const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  if (comm !== 'node') throw new Error(`PID ${pid} is ${comm}, not the agent's node process`);
  return pid;
}

/** VmRSS of a process in KiB. */
export function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for PID ${pid}`);
  return Number(m[1]);
}

export interface AgentAdd {
  containerId: string;
  ms: number;
  steps: Record<string, number>;
}

/** The agent's own account of each ADD ("endpoint added" log lines, info level). */
export function agentAdds(sb: Sandbox): AgentAdd[] {
  const out: AgentAdd[] = [];
  for (const line of sb.agentLog().split('\n')) {
    if (!line.includes('"endpoint added"')) continue;
    try {
      const rec = JSON.parse(line) as { containerId?: string; ms?: number; steps?: Record<string, number> };
      if (rec.containerId && typeof rec.ms === 'number') out.push({ containerId: rec.containerId, ms: rec.ms, steps: rec.steps ?? {} });
    } catch {
      // a line cut by a concurrent write
    }
  }
  return out;
}
