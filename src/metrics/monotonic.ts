// Node-wide totals that only go up, from per-endpoint BPF counters that do not: an endpoint's
// counters are deleted (kelp_metrics) or zeroed (kelp_metrics_fwd) when the endpoint goes, and
// its id may be reused. Summing the live counters would make a Prometheus counter fall, which
// rate() reads as a reset and turns into a spike. So each counter's last value is kept, and when
// a counter vanishes or falls its last value moves into the group's retired total.
// Known limit: what an endpoint counted between the last scrape and its deletion is not seen.

export interface CounterSample {
  /** Identity of one BPF counter (endpoint, direction, reason). */
  key: string;
  /** The exported series it adds to (its labels, joined). */
  group: string;
  packets: bigint;
  bytes: bigint;
}

export interface Totals {
  packets: bigint;
  bytes: bigint;
}

export class MonotonicSums {
  private last = new Map<string, CounterSample>();
  private readonly retired = new Map<string, Totals>();

  /** Takes the current counters; returns every group's total (groups seen once stay, never fall). */
  update(samples: readonly CounterSample[]): Map<string, Totals> {
    const now = new Map<string, CounterSample>();
    for (const s of samples) now.set(s.key, s);
    for (const [key, prev] of this.last) {
      const cur = now.get(key);
      // A reused id counting afresh shows as a fall in either figure.
      if (!cur || cur.group !== prev.group || cur.packets < prev.packets || cur.bytes < prev.bytes) add(this.retired, prev.group, prev);
    }
    this.last = now;
    const totals = new Map<string, Totals>();
    for (const [group, t] of this.retired) totals.set(group, { ...t });
    for (const s of now.values()) add(totals, s.group, s);
    return totals;
  }
}

function add(into: Map<string, Totals>, group: string, v: Totals): void {
  const t = into.get(group);
  if (t) {
    t.packets += v.packets;
    t.bytes += v.bytes;
  } else {
    into.set(group, { packets: v.packets, bytes: v.bytes });
  }
}
