// Map pressure for the exporter: entries against capacity for the maps that can fill. Arrays
// and the ring always hold their capacity, so they are not read at all — counting an array's
// live rows (as `kelp status` does) means reading every slot, which would make each scrape pay
// for the Maglev tables and the per-CPU counter array.
import { MapType } from '../bpf';
import type { BpfMap } from '../bpf';
import type { MapStat } from '../datapath/maps/view';

const ALWAYS_FULL: ReadonlySet<number> = new Set([MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.RINGBUF]);

export function mapPressure(dp: { mapNames(): string[]; map(name: string): BpfMap }): MapStat[] {
  const out: MapStat[] = [];
  for (const name of dp.mapNames()) {
    const m = dp.map(name);
    if (ALWAYS_FULL.has(m.type)) continue;
    const type = Object.entries(MapType).find(([, v]) => v === m.type)?.[0] ?? String(m.type);
    // The same count `kelp status` and `kelp map dump` give for these maps (dump.ts mapRowCount).
    out.push({ name, type, entries: m.keys().length, maxEntries: m.maxEntries, fixed: false });
  }
  return out;
}
