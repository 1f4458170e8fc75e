// Versioned map pins. A map is pinned at a path that carries its layout version:
//   <root>/<name>        version 1 (so every pin kelp made before versions existed is version 1)
//   <root>/<name>_v<N>   version N >= 2
// An object's maps are pinned at the paths of the layouts the object declares (found by comparing
// what it declares with the registry's layouts), so a layout change never meets a pin of another
// layout: libbpf creates the new map beside the old one. Migration, per map (registry `migrate`):
// `convert` copies every entry of the old pin into the new map through both layouts' codecs;
// `rebuild` and `reset` copy nothing. Then the old pin goes: at once, unless the programs
// attached now (the previous agent's) still write to it and nothing else could give that content
// back (a `convert` map the datapath writes); that one stays until the new programs are swapped
// in, gets a second copy of what appeared meanwhile, and only then goes.
// Invariants: a new map is filled before any program using it is attached; an entry the new map
// already holds is never overwritten (BPF_NOEXIST: a second copy, or one after an interrupted
// migration, only adds); a pin that matches no known layout is never read, only removed.
import { readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { BPF_NOEXIST, BpfMap, KelpBpfError, MapType, openPinnedMap } from '../../bpf';
import { MapFullError } from './sync';
import { layoutOf, MapLayout, MapShape, MapSpec } from './registry';

/** Where a map of this layout version is pinned. */
export function mapPinPath(root: string, name: string, version: number): string {
  return path.join(root, version === 1 ? name : `${name}_v${version}`);
}

export interface FoundPin {
  path: string;
  version: number;
}

/** The pins of `name` under `root`, any version. */
export function findMapPins(root: string, name: string): FoundPin[] {
  const out: FoundPin[] = [];
  for (const entry of readdirSync(root)) {
    if (entry === name) out.push({ path: path.join(root, entry), version: 1 });
    else if (entry.startsWith(`${name}_v`)) {
      const v = entry.slice(name.length + 2);
      if (/^[1-9][0-9]*$/.test(v) && Number(v) >= 2) out.push({ path: path.join(root, entry), version: Number(v) });
    }
  }
  return out.sort((a, b) => b.version - a.version);
}

/** What a pinned map is: type, sizes and flags, as the kernel has them. */
export function pinnedShape(pin: string): MapShape {
  const m = openPinnedMap(pin);
  try {
    return { type: m.type, keySize: m.keySize, valueSize: m.valueSize, maxEntries: m.maxEntries, flags: m.flags };
  } finally {
    m.close();
  }
}

/** A pin of another layout than the one being loaded; `layout` undefined: one this agent does not know. */
export interface OldPin extends FoundPin {
  layout?: MapLayout;
}

/** The pin at its version's path, read as that version's layout if it has it. */
export function readOldPin(spec: MapSpec, pin: FoundPin): OldPin {
  const layout = layoutOf(spec, pinnedShape(pin.path));
  return { ...pin, layout: layout?.version === pin.version ? layout : undefined };
}

function recode(from: MapLayout, to: MapLayout, part: 'key' | 'value', buf: Buffer): Buffer {
  const a = from[part];
  const b = to[part];
  if (a && b) return b.encode(a.decode(buf));
  const size = part === 'key' ? to.keySize : to.valueSize;
  if (buf.length !== size) throw new Error(`no codec to turn a ${buf.length}-byte ${part} into a ${size}-byte one`);
  return buf;
}

export interface CopyResult {
  /** Entries written into the new map. */
  copied: number;
  /** Entries the new map had already (kept as they were). */
  kept: number;
}

/** Copies every entry of the map pinned at `from.path` into `into`, converting each. */
export function copyConverted(into: BpfMap, from: OldPin & { layout: MapLayout }, to: MapLayout): CopyResult {
  const old = openPinnedMap(from.path);
  const res: CopyResult = { copied: 0, kept: 0 };
  try {
    const entries: Array<[Buffer, Buffer]> = [];
    if (old.type === MapType.HASH || old.type === MapType.LRU_HASH) entries.push(...old.lookupBatch());
    else {
      for (const k of old.keys()) {
        const v = old.lookup(k);
        if (v) entries.push([k, v]);
      }
    }
    for (const [k, v] of entries) {
      const key = recode(from.layout, to, 'key', k);
      const value = recode(from.layout, to, 'value', v);
      try {
        into.update(key, value, BPF_NOEXIST);
        res.copied += 1;
      } catch (e) {
        if (!(e instanceof KelpBpfError)) throw e;
        if (e.code === 'EEXIST') res.kept += 1;
        else if (e.code === 'E2BIG' || e.code === 'ENOSPC' || e.code === 'ENOMEM') throw new MapFullError(into.name, entries.length, into.maxEntries, e);
        else throw e;
      }
    }
  } finally {
    old.close();
  }
  return res;
}

/** Removes a map pin; the map lives on while programs still hold it. */
export function unpinMap(pin: string): void {
  rmSync(pin, { force: true });
}
