// Counters: kelp_metrics (every drop, and forwarded packets of endpoint ids >= 4096) and
// kelp_metrics_fwd (forwarded packets of smaller ids, an array indexed by id and direction). The
// programs write them; the agent reads them and clears an endpoint's when the endpoint goes.
// Invariants: a counter (ep, dir, reason) is the sum of both maps; an endpoint id is reused only
// after its counters were deleted (hash) or zeroed (array slots always exist), so a new endpoint
// never inherits another's counts.
import type { BpfObject } from '../bpf';
import { Direction, mergeMetrics, MetricsEntry, metricsFwdKey, metricsKey, METRICS_FWD_EPS } from './structs';

export class Counters {
  constructor(private readonly lxc: BpfObject) {}

  /** Every non-zero counter: forwarded and dropped packets per endpoint, direction and reason. */
  all(): MetricsEntry[] {
    const hash = this.lxc.map('kelp_metrics');
    const fwd = this.lxc.map('kelp_metrics_fwd');
    return mergeMetrics(hash.lookupBatch(), fwd.lookupBatch(), hash.numCpus);
  }

  /** Deletes and zeroes every counter of `epId`. */
  clear(epId: number): void {
    const hash = this.lxc.map('kelp_metrics');
    for (const k of hash.keys()) if (metricsKey.decode(k).epId === epId) hash.delete(k);
    if (epId < METRICS_FWD_EPS) {
      const fwd = this.lxc.map('kelp_metrics_fwd');
      const zero = Buffer.alloc(Math.ceil(fwd.valueSize / 8) * 8 * fwd.numCpus);
      for (const dir of [Direction.FROM_POD, Direction.TO_POD]) fwd.update(metricsFwdKey(epId, dir), zero);
    }
  }

  /**
   * Clears the counters of every endpoint id in kelp_metrics not in `live` (ids of endpoints
   * gone while no agent ran); returns how many ids.
   */
  clearExcept(live: Set<number>): number {
    const stale = new Set<number>();
    for (const k of this.lxc.map('kelp_metrics').keys()) {
      const id = metricsKey.decode(k).epId;
      if (id !== 0 && !live.has(id)) stale.add(id);
    }
    for (const id of stale) this.clear(id);
    return stale.size;
  }
}
