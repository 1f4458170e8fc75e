// Object loading: kelp's BPF objects (build/bpf/<name>.o, built at build time; nothing here runs
// clang), loaded with their maps pinned under the pin root so that a restarted agent finds its
// state. bpffs.ts makes the root and says whether it outlives the agent; maps/pins.ts says where
// each layout of a map is pinned and how an older layout's pin is carried over.
// Load of an object, in order: read the layouts it declares (without loading it), find the pins
// of other layouts, remove a pin at the new layout's path that has another layout (an older
// kelp's, before layouts were versioned), load with every kelp map pinned at its layout's path,
// fill the new maps from the old pins, remove the old pins nothing needs any more. The caller
// attaches the programs, then calls swapped() to retire the pins that had to wait for that.
// Invariants: each object is loaded at most once per agent; a map two objects declare is one
// kernel map of one layout (the second load re-uses the first's pin, and a different layout is an
// error); close() releases handles only, every pin stays.
import path from 'node:path';
import { BpfMap, BpfObject, loadObject, objectMaps } from '../bpf';
import type { ConstantValue } from '../bpf';
import type { Logger } from '../log';
import { BpffsStatus, openBpfRoot } from './bpffs';
import { copyConverted, findMapPins, mapPinPath, OldPin, pinnedShape, readOldPin, unpinMap } from './maps/pins';
import { describeShape, layoutOf, MapLayout, MAPS, mapSpec, MapSpec, sameShape } from './maps/registry';

/** The objects the agent loads: one per attach point (iter_udp: the UDP socket iterator). */
export type ObjectName = 'lxc' | 'host' | 'sock' | 'iter_udp' | 'overlay';

const DEFAULT_OBJECT_DIR = path.join(__dirname, '../../build/bpf');

export function objectPath(name: string, dir = DEFAULT_OBJECT_DIR): string {
  return path.join(dir, `${name}.o`);
}

/** One kelp map of an object being loaded: its layout, its pin, and the pins of other layouts. */
interface MapPlan {
  spec: MapSpec;
  layout: MapLayout;
  pin: string;
  old: OldPin[];
}

/** A `convert` map the datapath writes: the previous programs fill its old pin until swapped out. */
function waitsForSwap(spec: MapSpec): boolean {
  return spec.migrate === 'convert' && spec.writer === 'datapath';
}

export class DatapathObjects {
  /** The pin root's bpffs, and whether it outlives this agent. */
  readonly bpffs: BpffsStatus;
  private readonly loaded = new Map<ObjectName, BpfObject>();
  /** Map name -> layout and pin, once an object declaring it is loaded. */
  private readonly layouts = new Map<string, { layout: MapLayout; pin: string }>();
  /** Old pins kept until the object's new programs are swapped in. */
  private readonly awaitingSwap = new Map<ObjectName, MapPlan[]>();

  constructor(
    readonly bpfRoot: string,
    private readonly log: Logger,
    /** Where the objects are (build/bpf); tests load other builds from elsewhere. */
    private readonly objectDir = DEFAULT_OBJECT_DIR,
    /**
     * Map name -> max_entries for this node, in place of the size compiled in; only maps the
     * registry marks sizable. Every object declaring the map gets it, so they share one map.
     */
    private readonly mapSizes: Readonly<Record<string, number>> = {},
  ) {
    for (const [name, n] of Object.entries(mapSizes)) {
      const spec = mapSpec(name);
      if (!spec?.sizable) {
        const sizable = MAPS.filter((m) => m.sizable).map((m) => m.name);
        throw new Error(`mapSizes.${name}: only ${sizable.join(', ')} can be sized per node`);
      }
      if (!Number.isInteger(n) || n < 1 || n > 0x7fffffff) throw new Error(`mapSizes.${name} must be an integer from 1 to 2147483647, got ${n}`);
    }
    this.bpffs = openBpfRoot(bpfRoot);
  }

  /**
   * Loads an object once, each kelp map pinned at its layout's path (or re-used from there), the
   * maps new to this layout filled from older pins. None of its programs is attached yet.
   */
  load(name: ObjectName, constants: Record<string, ConstantValue>): BpfObject {
    if (this.loaded.has(name)) throw new Error(`${name}.o is loaded already`);
    const file = objectPath(name, this.objectDir);
    const plans = this.plan(name, file);
    const pinPaths = Object.fromEntries([...plans.values()].map((p) => [p.spec.name, p.pin]));
    const maxEntries = Object.fromEntries(Object.entries(this.mapSizes).filter(([m]) => plans.has(m)));
    const obj = loadObject(file, {
      pinRoot: this.bpfRoot,
      pinPaths,
      constants,
      maxEntries,
      logger: this.log,
    });
    try {
      this.migrate(name, obj, [...plans.values()].filter((p) => p.old.length > 0));
    } catch (e) {
      // The old pins stay: the next start migrates again.
      obj.close();
      throw e;
    }
    this.loaded.set(name, obj);
    for (const p of plans.values()) this.layouts.set(p.spec.name, { layout: p.layout, pin: p.pin });
    return obj;
  }

  /**
   * The programs of `name` now run in place of every earlier instance: what those wrote to
   * the old pins meanwhile is copied too, and the pins are removed.
   */
  swapped(name: ObjectName): void {
    const obj = this.loaded.get(name);
    for (const p of this.awaitingSwap.get(name) ?? []) {
      const entries = obj ? this.fill(obj, p, false) : 0;
      for (const old of p.old) unpinMap(old.path);
      this.log.info({ map: p.spec.name, caughtUp: entries, removed: p.old.map((o) => o.path) }, 'old layout retired after the programs were swapped');
    }
    this.awaitingSwap.delete(name);
  }

  get(name: ObjectName): BpfObject | undefined {
    return this.loaded.get(name);
  }

  /** The layout a loaded map has (the one its objects declare). */
  layout(mapName: string): MapLayout {
    const l = this.layouts.get(mapName);
    if (!l) throw new Error(`no map named ${mapName}`);
    return l.layout;
  }

  /** A kelp map by name, from the first loaded object declaring it (shared maps are one map). */
  map(name: string): BpfMap {
    for (const obj of this.loaded.values()) {
      if (obj.maps().includes(name)) return obj.map(name);
    }
    throw new Error(`no map named ${name}`);
  }

  /** The kelp_ maps of every loaded object, sorted. */
  mapNames(): string[] {
    const names = new Set<string>();
    for (const obj of this.loaded.values()) obj.maps().filter((m) => m.startsWith('kelp_')).forEach((m) => names.add(m));
    return [...names].sort();
  }

  /** Closes every object (last loaded first); pinned maps stay. */
  close(): void {
    for (const obj of [...this.loaded.values()].reverse()) obj.close();
    this.loaded.clear();
  }

  /** The layout and pin of each kelp map `file` declares, and the pins of other layouts. */
  private plan(name: ObjectName, file: string): Map<string, MapPlan> {
    const plans = new Map<string, MapPlan>();
    for (const desc of objectMaps(file)) {
      if (desc.internal || !desc.name.startsWith('kelp_')) continue;
      const spec = mapSpec(desc.name);
      if (!spec) throw new Error(`${desc.name} (${name}.o) is not in the map registry (src/datapath/maps/registry.ts)`);
      const layout = layoutOf(spec, desc);
      if (!layout) {
        throw new Error(`${desc.name} in ${file} (${describeShape(desc)}) matches no layout of the map registry: declare it there with the next version`);
      }
      const known = this.layouts.get(spec.name);
      if (known) {
        // Loaded with an earlier object: one map, already migrated.
        if (known.layout.version !== layout.version) {
          throw new Error(`${spec.name}: ${name}.o declares layout ${layout.version}, an object loaded before it layout ${known.layout.version}`);
        }
        plans.set(spec.name, { spec, layout, pin: known.pin, old: [] });
        continue;
      }
      const pin = mapPinPath(this.bpfRoot, spec.name, layout.version);
      const found = findMapPins(this.bpfRoot, spec.name);
      const current = found.find((p) => p.path === pin);
      const wanted = { ...layout, maxEntries: this.mapSizes[spec.name] ?? layout.maxEntries, };
      if (current && !sameShape(pinnedShape(pin), wanted)) {
        // libbpf would refuse to re-use it. Another size of a sizable map: its writer fills the
        // new one (only rebuild and reset maps are sizable); otherwise its content is in no
        // layout this agent can read.
        const resized = spec.sizable && layoutOf(spec, pinnedShape(pin))?.version === layout.version;
        this.log.warn(
          { map: spec.name, pin, shape: describeShape(pinnedShape(pin)), maxEntries: wanted.maxEntries },
          resized ? 'a pin of another size is in the way: removed, the map starts empty at its new size' : 'a pin of an unknown layout is in the way: removed',
        );
        unpinMap(pin);
      }
      plans.set(spec.name, { spec, layout, pin, old: found.filter((p) => p.path !== pin).map((p) => readOldPin(spec, p)) });
    }
    return plans;
  }

  /** Fills the new maps from the old pins, and removes the old pins nothing needs any more. */
  private migrate(name: ObjectName, obj: BpfObject, plans: MapPlan[]): void {
    const later: MapPlan[] = [];
    for (const p of plans) {
      const entries = this.fill(obj, p);
      const from = p.old.map((o) => (o.layout ? o.version : `${o.version} (unknown layout)`));
      this.log.info({ map: p.spec.name, from, to: p.layout.version, migrate: p.spec.migrate, entries }, 'map pinned with a new layout');
      if (waitsForSwap(p.spec)) later.push(p);
      else for (const old of p.old) unpinMap(old.path);
    }
    if (later.length) this.awaitingSwap.set(name, later);
  }

  /** Copies what a `convert` map's old pins hold into its new map; returns how many entries. */
  private fill(obj: BpfObject, p: MapPlan, warn = true): number {
    if (p.spec.migrate !== 'convert') return 0;
    let copied = 0;
    for (const old of p.old) {
      if (!old.layout) {
        if (warn) this.log.warn({ map: p.spec.name, pin: old.path }, 'a pin of an unknown layout cannot be carried over: its entries are lost');
        continue;
      }
      copied += copyConverted(obj.map(p.spec.name), { ...old, layout: old.layout }, p.layout).copied;
    }
    return copied;
  }
}
