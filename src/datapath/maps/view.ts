// Map views: what `kelp status` and `kelp map dump` show of the loaded maps. Read-only.
// Invariants: status counts exactly the rows dump lists (mapRowCount and mapRows in dump.ts);
// a map is read in the layout its objects were loaded with.
import { MapType } from '../../bpf';
import { MapRow, mapRowCount, mapRows } from '../dump';
import type { DatapathObjects } from '../objects';
import { MAP_DESCRIPTIONS } from './registry';

export interface MapStat {
  name: string;
  type: string;
  entries: number;
  maxEntries: number;
  /** Arrays and ring buffers: their slots always exist, so "fill" means nothing. */
  fixed: boolean;
  description?: string;
}

export function mapStats(objects: DatapathObjects): MapStat[] {
  return objects.mapNames().map((name) => {
    const m = objects.map(name);
    const typeName = Object.entries(MapType).find(([, v]) => v === m.type)?.[0] ?? String(m.type);
    // Arrays always hold max_entries slots: their "fill" is not a meaningful figure, but the
    // rows `kelp map dump` lists (live or non-zero slots) are counted like any map's.
    const fixed = m.type === MapType.ARRAY || m.type === MapType.PERCPU_ARRAY || m.type === MapType.RINGBUF;
    return { name, type: typeName, entries: mapRowCount(name, m), maxEntries: m.maxEntries, fixed, description: MAP_DESCRIPTIONS[name] };
  });
}

/** A map's rows as `kelp map dump` lists them. */
export function dumpMap(objects: DatapathObjects, name: string): MapRow[] {
  return mapRows(name, objects.map(name), objects.layout(name));
}
