// The one diff-and-apply path from a reconciler's desired map content to the kernel. A
// reconciler computes everything a map must hold; this reads what it holds and writes only the
// difference: missing and changed entries first, then the removals, so an entry that stays is
// never absent for a moment. A map that cannot take an entry (full) is an error naming the map
// and the counts — never a silently partial state that the reconciler believes complete.
import type { BpfMap } from '../../bpf';
import { KelpBpfError } from '../../bpf';

export interface SyncStats {
  added: number;
  updated: number;
  removed: number;
  unchanged: number;
}

export class MapFullError extends Error {
  constructor(
    readonly map: string,
    readonly wanted: number,
    readonly maxEntries: number,
    cause: unknown,
  ) {
    super(`${map} is full: ${wanted} entries wanted, room for ${maxEntries} (${(cause as Error).message})`);
    this.name = 'MapFullError';
  }
}

/** Desired content: key bytes → value bytes. Keys compare by their bytes. */
export type Desired = ReadonlyArray<readonly [Buffer, Buffer]>;

/** What the diff of current against desired content asks for, without touching anything. */
export interface MapDiff {
  put: Array<readonly [Buffer, Buffer]>;
  remove: Buffer[];
  unchanged: number;
  updated: number;
}

export function diffEntries(current: Desired, desired: Desired): MapDiff {
  // latin1 maps each byte to one character: a key's identity, cheaper to build than hex.
  const have = new Map<string, Buffer>();
  for (const [k, v] of current) have.set(k.toString('latin1'), v);
  const put: Array<readonly [Buffer, Buffer]> = [];
  const wanted = new Set<string>();
  let unchanged = 0;
  let updated = 0;
  for (const [k, v] of desired) {
    const id = k.toString('latin1');
    if (wanted.has(id)) throw new Error(`desired content names key ${k.toString('hex')} twice`);
    wanted.add(id);
    const cur = have.get(id);
    if (cur && cur.equals(v)) {
      unchanged++;
      continue;
    }
    if (cur) updated++;
    put.push([k, v]);
  }
  const remove: Buffer[] = [];
  for (const [k] of current) if (!wanted.has(k.toString('latin1'))) remove.push(k);
  return { put, remove, unchanged, updated };
}

export function isMapFull(e: unknown): boolean {
  return e instanceof KelpBpfError && (e.code === 'E2BIG' || e.code === 'ENOSPC' || e.code === 'ENOMEM');
}

/** What a hash-like map holds now. */
export function readEntries(map: BpfMap): Array<readonly [Buffer, Buffer]> {
  const current: Array<readonly [Buffer, Buffer]> = [];
  for (const k of map.keys()) {
    const v = map.lookup(k);
    if (v) current.push([k, v]);
  }
  return current;
}

/** The make half of a diff: missing and changed entries. `wanted` is the desired entry count. */
export function applyPuts(map: BpfMap, diff: MapDiff, wanted: number): void {
  for (const [k, v] of diff.put) {
    try {
      map.update(k, v);
    } catch (e) {
      if (isMapFull(e)) throw new MapFullError(map.name, wanted, map.maxEntries, e);
      throw e;
    }
  }
}

/** The break half of a diff: entries no longer desired. */
export function applyRemoves(map: BpfMap, diff: MapDiff): void {
  for (const k of diff.remove) map.delete(k);
}

export function diffStats(diff: MapDiff): SyncStats {
  return { added: diff.put.length - diff.updated, updated: diff.updated, removed: diff.remove.length, unchanged: diff.unchanged };
}

/**
 * Makes `map` hold exactly `desired` (hash-like maps: HASH, LRU_HASH, LPM_TRIE). Per-CPU maps
 * and arrays are not synced this way: their slots always exist. Writers that must order the
 * halves of several maps (policy.ts) call the steps themselves.
 */
export function syncMap(map: BpfMap, desired: Desired): SyncStats {
  const diff = diffEntries(readEntries(map), desired);
  applyPuts(map, diff, desired.length);
  applyRemoves(map, diff);
  return diffStats(diff);
}
