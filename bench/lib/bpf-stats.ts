// BPF programs' own run time (kernel.bpf_stats_enabled: run_time_ns and run_cnt per program), and
// the programs attached in a node namespace, for the figures that say where a path's time goes.
import { readFileSync, writeFileSync } from 'node:fs';
import { inNetns, listAttached, queryTcFilter, TcFilterSlot } from '../../src/bpf';
import { sh } from '../../src/sandbox';
import { defer } from './cleanup';
import { NETNS_DIR } from './netns';

const BPF_STATS = '/proc/sys/kernel/bpf_stats_enabled';

/**
 * Runs fn with kernel.bpf_stats_enabled on, and puts back the value it had (also on failure and
 * Ctrl-C). The switch is machine-wide: every BPF program on the machine pays for the two clock
 * reads while it is on.
 */
export async function withBpfStats<T>(fn: () => Promise<T>): Promise<T> {
  const previous = readFileSync(BPF_STATS, 'utf8').trim();
  writeFileSync(BPF_STATS, '1');
  const restore = defer(() => writeFileSync(BPF_STATS, previous));
  try {
    return await fn();
  } finally {
    await restore();
  }
}

export interface ProgStats {
  ns: number;
  cnt: number;
}

export function progStats(id: number): ProgStats {
  const info = JSON.parse(sh('bpftool', ['prog', 'show', 'id', String(id), '-j'])) as { run_time_ns?: number; run_cnt?: number };
  return { ns: info.run_time_ns ?? 0, cnt: info.run_cnt ?? 0 };
}

export interface AttachedAt {
  dev: string;
  hook: string;
  id: number;
  name: string;
}

/** Every tcx program and every clsact filter at `slots` on every device of netns `netns`. */
export function attachedPrograms(netns: string, slots: TcFilterSlot[]): AttachedAt[] {
  const links = JSON.parse(sh('ip', ['-n', netns, '-j', 'link', 'show'])) as Array<{ ifindex: number; ifname: string }>;
  return inNetns(`${NETNS_DIR}/${netns}`, () =>
    links.flatMap(({ ifindex, ifname }) => {
      const a = listAttached(ifindex);
      const out: AttachedAt[] = [];
      for (const dir of ['ingress', 'egress'] as const) {
        for (const p of a.tcx[dir]) out.push({ dev: ifname, hook: `tcx ${dir}`, id: p.id, name: p.name });
        for (const slot of slots) {
          const p = queryTcFilter(ifindex, dir, slot);
          if (p) out.push({ dev: ifname, hook: `tc ${dir}`, id: p.id, name: p.name });
        }
      }
      if (a.xdp) out.push({ dev: ifname, hook: `xdp ${a.xdp.mode}`, id: a.xdp.id, name: a.xdp.name });
      return out;
    }),
  );
}
