// Object loading: kelp's BPF objects (build/bpf/<name>.o, built at build time; nothing here runs
// clang), loaded with their maps pinned under the pin root so that a restarted agent finds its
// state. bpffs.ts makes the root and says whether it outlives the agent.
// Invariants: each object is loaded at most once per agent; a map two objects declare is one
// kernel map (pinned by name, the second load re-uses the pin); close() releases handles only,
// every pin stays.
import path from 'node:path';
import { BpfMap, BpfObject, loadObject } from '../bpf';
import type { ConstantValue } from '../bpf';
import type { Logger } from '../log';
import { BpffsStatus, openBpfRoot } from './bpffs';

/** The objects the agent loads: one per attach point. */
export type ObjectName = 'lxc' | 'host';

export function objectPath(name: string): string {
  return path.join(__dirname, '../../build/bpf', `${name}.o`);
}

export class DatapathObjects {
  /** The pin root's bpffs, and whether it outlives this agent. */
  readonly bpffs: BpffsStatus;
  private readonly loaded = new Map<ObjectName, BpfObject>();

  constructor(
    readonly bpfRoot: string,
    private readonly log: Logger,
  ) {
    this.bpffs = openBpfRoot(bpfRoot);
  }

  /** Loads an object once, its maps pinned under the root (or re-used from there). */
  load(name: ObjectName, constants: Record<string, ConstantValue>): BpfObject {
    if (this.loaded.has(name)) throw new Error(`${name}.o is loaded already`);
    const obj = loadObject(objectPath(name), { pinRoot: this.bpfRoot, constants, logger: this.log });
    this.loaded.set(name, obj);
    return obj;
  }

  get(name: ObjectName): BpfObject | undefined {
    return this.loaded.get(name);
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
}
