// Every map kelp's programs declare, declared once more here: which objects hold it, every layout
// it has had (a layout change adds one with the next version: a pinned map of another layout is
// migrated or rebuilt, never reinterpreted), how its content crosses a layout change, who writes
// it and what it holds. test/native/map-registry.test.ts compares the names with the compiled
// objects both ways; test/native/map-pins.test.ts checks the layouts against them.
// Rule: bump a map's version on any change to its type, key, value, max_entries or flags, and add
// the new layout below the old ones (codecs for both when it is converted). A pin's path carries
// the version (see maps/pins.ts), so the new map never meets a pin of the old layout.
import { MapType } from '../../bpf';
import type { StructCodec } from '../structs';
import { endpointInfo, endpointKey } from '../structs';
import { ct4Entry, nat4Entry, nomasq4Key, tuple4 } from '../nat';
import { ct4EntryV2, nat4EntryV2 } from './test-layouts';

export type MapWriter =
  /** Only the datapath writes it (counters, conntrack, events). */
  | 'datapath'
  /** The endpoint layer, through src/datapath/endpoints.ts (one writer, its invariant). */
  | 'endpoints'
  /** A reconciler, through syncMap: the map holds exactly the desired content. */
  | 'reconciler';

/** How a map's content crosses a layout change (see maps/pins.ts for when each happens). */
export type Migration =
  /** Every entry of the old map is decoded with the old layout's codecs and written in the new one. */
  | 'convert'
  /** Left empty here: its writer fills it from what the agent knows before any program using it is attached. */
  | 'rebuild'
  /** Starts empty: nothing depends on what it held. */
  | 'reset';

export interface MapLayout {
  version: number;
  /** A MapType. */
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  /** Codecs of a converted map's key and value; without one, the bytes are carried as they are. */
  key?: StructCodec<unknown>;
  value?: StructCodec<unknown>;
}

export interface MapSpec {
  name: string;
  /** The BPF objects (build/bpf/<object>.o) that declare it; pinned once, they share one map. */
  objects: ReadonlyArray<'lxc' | 'host'>;
  /** The layout the sources build (bpf/ without test defines). */
  version: number;
  /** Every layout it has had, oldest first. */
  layouts: readonly MapLayout[];
  migrate: Migration;
  /** Why that migration: what is lost, or kept, and why that is right. */
  why: string;
  writer: MapWriter;
  /** What it holds, for `kelp status` and `kelp map dump`. */
  description: string;
}

type Shape = Omit<MapLayout, 'version' | 'key' | 'value'>;

/** A layout whose key and value are described by codecs (their sizes are the codecs'). */
function coded(version: number, shape: Omit<Shape, 'keySize' | 'valueSize'>, key: StructCodec<unknown>, value: StructCodec<unknown>): MapLayout {
  return { version, ...shape, keySize: key.size, valueSize: value.size, key, value };
}

const u8 = 1;
const u32 = 4;

export const MAPS: readonly MapSpec[] = [
  {
    name: 'kelp_endpoints',
    objects: ['lxc', 'host'],
    version: 1,
    layouts: [coded(1, { type: MapType.HASH, maxEntries: 16384, flags: 0 }, endpointKey, endpointInfo)],
    migrate: 'convert',
    why:
      'every packet of every pod is looked up in it: the new map holds every endpoint before a program using it is attached ' +
      "(restore then re-asserts each entry from the agent's records, and the sweep removes the rest)",
    writer: 'endpoints',
    description: 'pod IPv4 address -> endpoint (host veth ifindex, id, MACs)',
  },
  {
    name: 'kelp_endpoint_cache',
    objects: ['lxc', 'host'],
    version: 1,
    layouts: [{ version: 1, type: MapType.ARRAY, keySize: u32, valueSize: 32, maxEntries: 16384, flags: 0 }],
    migrate: 'rebuild',
    why: 'a copy of kelp_endpoints: made to agree with it as soon as lxc.o is loaded, before any of its programs is attached',
    writer: 'endpoints',
    description: 'direct-mapped copy of kelp_endpoints in front of it (live slots only)',
  },
  {
    name: 'kelp_metrics',
    objects: ['lxc', 'host'],
    version: 1,
    layouts: [{ version: 1, type: MapType.PERCPU_HASH, keySize: 8, valueSize: 16, maxEntries: 16384, flags: 1 }],
    migrate: 'reset',
    why: 'counters: no verdict depends on them; they start from zero, as after a reboot',
    writer: 'datapath',
    description: 'packets/bytes per endpoint x direction x reason: every drop, and forwarded packets of endpoint ids >= 4096',
  },
  {
    name: 'kelp_metrics_fwd',
    objects: ['lxc', 'host'],
    version: 1,
    layouts: [{ version: 1, type: MapType.PERCPU_ARRAY, keySize: u32, valueSize: 16, maxEntries: 8192, flags: 0 }],
    migrate: 'reset',
    why: 'counters, as kelp_metrics',
    writer: 'datapath',
    description: 'forwarded packets/bytes per endpoint x direction for endpoint ids < 4096 (non-zero slots only)',
  },
  {
    name: 'kelp_events',
    objects: ['lxc', 'host'],
    version: 1,
    layouts: [{ version: 1, type: MapType.RINGBUF, keySize: 0, valueSize: 0, maxEntries: 262144, flags: 0 }],
    migrate: 'reset',
    why: 'events in flight: the agent reads the new ring from its start; what the old one held had no reader',
    writer: 'datapath',
    description: 'ring buffer of drop and trace events (read by the agent; no entries to list)',
  },
  {
    name: 'kelp_ct4',
    objects: ['host'],
    version: 1,
    layouts: [
      coded(1, { type: MapType.LRU_HASH, maxEntries: 65536, flags: 0 }, tuple4, ct4Entry),
      coded(2, { type: MapType.LRU_HASH, maxEntries: 65536, flags: 0 }, tuple4, ct4EntryV2),
    ],
    migrate: 'convert',
    why:
      "the collector times each masqueraded flow by its entry, and collects NAT entries whose flow has none: a quiet established flow would lose its mapping",
    writer: 'datapath',
    description: 'conntrack of masqueraded flows, one entry per direction',
  },
  {
    name: 'kelp_snat4',
    objects: ['host'],
    version: 1,
    layouts: [
      coded(1, { type: MapType.LRU_HASH, maxEntries: 131072, flags: 0 }, tuple4, nat4Entry),
      coded(2, { type: MapType.LRU_HASH, maxEntries: 131072, flags: 0 }, tuple4, nat4EntryV2),
    ],
    migrate: 'convert',
    why: "every masqueraded flow's port: without its forward half a flow leaves from another port (the peer resets it), without its reverse half its replies are dropped",
    writer: 'datapath',
    description: 'masquerade translations, one entry per direction',
  },
  {
    name: 'kelp_nomasq4',
    objects: ['host'],
    version: 1,
    layouts: [{ version: 1, type: MapType.LPM_TRIE, keySize: nomasq4Key.size, valueSize: u8, maxEntries: 1024, flags: 1 }],
    migrate: 'rebuild',
    why: "configuration: synced to exactly the agent's CIDRs before the uplink's programs are swapped in",
    writer: 'reconciler',
    description: 'destinations never masqueraded (pod CIDR and configured CIDRs)',
  },
];

/** Descriptions by map name. */
export const MAP_DESCRIPTIONS: Readonly<Record<string, string>> = Object.fromEntries(MAPS.map((m) => [m.name, m.description]));

export function mapSpec(name: string): MapSpec | undefined {
  return MAPS.find((m) => m.name === name);
}

/** What an object or a pinned map says of a map; compared with the layouts. */
export type MapShape = Pick<MapLayout, 'type' | 'keySize' | 'valueSize' | 'maxEntries' | 'flags'>;

export function sameShape(a: MapShape, b: MapShape): boolean {
  return a.type === b.type && a.keySize === b.keySize && a.valueSize === b.valueSize && a.maxEntries === b.maxEntries && a.flags === b.flags;
}

/** The layout of `spec` a map of this shape has; undefined when none. */
export function layoutOf(spec: MapSpec, shape: MapShape): MapLayout | undefined {
  return spec.layouts.find((l) => sameShape(l, shape));
}

export function describeShape(s: MapShape): string {
  const type = Object.entries(MapType).find(([, v]) => v === s.type)?.[0] ?? String(s.type);
  return `${type}, key ${s.keySize} B, value ${s.valueSize} B, ${s.maxEntries} entries, flags ${s.flags}`;
}
