// Every map kelp's programs declare, declared once more here: which object holds it, the
// version of its layout (a layout change must bump it: a pinned map of another layout is
// migrated or rebuilt, never reinterpreted), who writes it and what it holds. A test compares
// this table with the maps the compiled objects declare, both ways.
export type MapWriter =
  /** Only the datapath writes it (counters, conntrack, events). */
  | 'datapath'
  /** The endpoint layer, through src/datapath/endpoints.ts (one writer, its invariant). */
  | 'endpoints'
  /** A reconciler, through syncMap: the map holds exactly the desired content. */
  | 'reconciler';

export interface MapSpec {
  name: string;
  /** The BPF objects (build/bpf/<object>.o) that declare it; pinned by name, they share one map. */
  objects: ReadonlyArray<'lxc' | 'host'>;
  /** Layout version: bump on any change to key, value or map type. */
  version: number;
  writer: MapWriter;
  /** What it holds, for `kelp status` and `kelp map dump`. */
  description: string;
}

export const MAPS: readonly MapSpec[] = [
  { name: 'kelp_endpoints', objects: ['lxc', 'host'], version: 1, writer: 'endpoints', description: 'pod IPv4 address -> endpoint (host veth ifindex, id, MACs)' },
  { name: 'kelp_endpoint_cache', objects: ['lxc', 'host'], version: 1, writer: 'endpoints', description: 'direct-mapped copy of kelp_endpoints in front of it (live slots only)' },
  {
    name: 'kelp_metrics',
    objects: ['lxc', 'host'],
    version: 1,
    writer: 'datapath',
    description: 'packets/bytes per endpoint x direction x reason: every drop, and forwarded packets of endpoint ids >= 4096',
  },
  { name: 'kelp_metrics_fwd', objects: ['lxc', 'host'], version: 1, writer: 'datapath', description: 'forwarded packets/bytes per endpoint x direction for endpoint ids < 4096 (non-zero slots only)' },
  { name: 'kelp_events', objects: ['lxc', 'host'], version: 1, writer: 'datapath', description: 'ring buffer of drop and trace events (read by the agent; no entries to list)' },
  { name: 'kelp_ct4', objects: ['host'], version: 1, writer: 'datapath', description: 'conntrack of masqueraded flows, one entry per direction' },
  { name: 'kelp_snat4', objects: ['host'], version: 1, writer: 'datapath', description: 'masquerade translations, one entry per direction' },
  { name: 'kelp_nomasq4', objects: ['host'], version: 1, writer: 'reconciler', description: 'destinations never masqueraded (pod CIDR and configured CIDRs)' },
];

/** Descriptions by map name. */
export const MAP_DESCRIPTIONS: Readonly<Record<string, string>> = Object.fromEntries(MAPS.map((m) => [m.name, m.description]));

export function mapSpec(name: string): MapSpec | undefined {
  return MAPS.find((m) => m.name === name);
}
