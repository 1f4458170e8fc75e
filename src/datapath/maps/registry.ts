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
import { LbLimits, lb4Affinity, lb4AffinityKey, lb4Backend, lb4BackendKey, lb4CtEntry, lb4Frontend, lb4FrontendKey, lb4MaglevChunk, lb4MaglevKey, lb4MemberKey, lb4SourceRangeKey } from '../service';
import { frag4Key, frag4Ports, ipcache4Info, ipcache4Key, pct4Entry, pct4Key, policy4Key, policy4Verdict, policyConfig } from '../policy';
import { overlayConfig, tunnel4Info, tunnel4Key } from '../tunnel';

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
  objects: ReadonlyArray<'lxc' | 'host' | 'sock' | 'iter_udp' | 'overlay'>;
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
  /**
   * The agent may size it per node (DatapathObjects' mapSizes): its layouts' maxEntries is the
   * size compiled in, and a map of another size has the same layout.
   */
  sizable?: boolean;
}

type Shape = Omit<MapLayout, 'version' | 'key' | 'value'>;

/** A layout whose key and value are described by codecs (their sizes are the codecs'). */
function coded(version: number, shape: Omit<Shape, 'keySize' | 'valueSize'>, key: StructCodec<unknown>, value: StructCodec<unknown>): MapLayout {
  return { version, ...shape, keySize: key.size, valueSize: value.size, key, value };
}

const u8 = 1;
const u32 = 4;

/** Plain integer values (kelp_lb4_members' slot, kelp_lb4_source_ranges' byte). */
const u32Codec: StructCodec<unknown> = {
  cName: '__u32',
  size: 4,
  fields: [],
  encode: (v) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v as number, 0);
    return b;
  },
  decode: (b) => b.readUInt32LE(0),
};
const u8Codec: StructCodec<unknown> = {
  cName: '__u8',
  size: 1,
  fields: [],
  encode: (v) => Buffer.from([v as number]),
  decode: (b) => b.readUInt8(0),
};


export const MAPS: readonly MapSpec[] = [
  {
    name: 'kelp_endpoints',
    objects: ['lxc', 'host', 'overlay'],
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
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [{ version: 1, type: MapType.ARRAY, keySize: u32, valueSize: 32, maxEntries: 16384, flags: 0 }],
    migrate: 'rebuild',
    why: 'a copy of kelp_endpoints: made to agree with it as soon as lxc.o is loaded, before any of its programs is attached',
    writer: 'endpoints',
    description: 'direct-mapped copy of kelp_endpoints in front of it (live slots only)',
  },
  {
    name: 'kelp_metrics',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [{ version: 1, type: MapType.PERCPU_HASH, keySize: 8, valueSize: 16, maxEntries: 16384, flags: 1 }],
    migrate: 'reset',
    why: 'counters: no verdict depends on them; they start from zero, as after a reboot',
    writer: 'datapath',
    description: 'packets/bytes per endpoint x direction x reason: every drop, and forwarded packets of endpoint ids >= 4096',
  },
  {
    name: 'kelp_metrics_fwd',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [{ version: 1, type: MapType.PERCPU_ARRAY, keySize: u32, valueSize: 16, maxEntries: 8192, flags: 0 }],
    migrate: 'reset',
    why: 'counters, as kelp_metrics',
    writer: 'datapath',
    description: 'forwarded packets/bytes per endpoint x direction for endpoint ids < 4096 (non-zero slots only)',
  },
  {
    name: 'kelp_events',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [{ version: 1, type: MapType.RINGBUF, keySize: 0, valueSize: 0, maxEntries: 262144, flags: 0 }],
    migrate: 'reset',
    why: 'events in flight: the agent reads the new ring from its start; what the old one held had no reader',
    writer: 'datapath',
    description: 'ring buffer of drop, audit, flow and trace events, versioned records (read by the agent; no entries to list)',
  },
  {
    name: 'kelp_event_config',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [{ version: 1, type: MapType.ARRAY, keySize: u32, valueSize: 8, maxEntries: 3, flags: 0 }],
    migrate: 'rebuild',
    why: 'configuration: the agent writes every class at start (an unwritten class uses the datapath defaults)',
    writer: 'reconciler',
    description: 'event rate limit per class (drop, flow, trace): tokens per second and burst, per CPU',
  },
  {
    name: 'kelp_event_stats',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [{ version: 1, type: MapType.PERCPU_ARRAY, keySize: u32, valueSize: 40, maxEntries: 3, flags: 0 }],
    migrate: 'reset',
    why: 'counters, as kelp_metrics (and each CPU\'s token bucket, which starts full)',
    writer: 'datapath',
    description: 'per event class and CPU: events emitted, suppressed by the rate limit, lost to a full ring; the token bucket',
  },
  {
    name: 'kelp_flow_end',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [{ version: 1, type: MapType.LRU_HASH, keySize: 24, valueSize: u32, maxEntries: 65536, flags: 0 }],
    migrate: 'reset',
    why: 'claims of flows already ended: after a reset a closed flow whose entry is still in kelp_pct4 is known ended by its entry flag',
    writer: 'datapath',
    description: 'FLOW_END claims: (flow, created) of each kelp_pct4 flow whose end was sent (BPF or the agent\'s GC)',
  },
  {
    name: 'kelp_flow_end_key',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [{ version: 1, type: MapType.PERCPU_ARRAY, keySize: u32, valueSize: 24, maxEntries: 1, flags: 0 }],
    migrate: 'reset',
    why: 'scratch: written and read within one program run',
    writer: 'datapath',
    description: "per-CPU scratch: the kelp_flow_end key being claimed (off the programs' stacks)",
  },
  {
    name: 'kelp_flow_svc',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [{ version: 1, type: MapType.PERCPU_ARRAY, keySize: u32, valueSize: 12, maxEntries: 1, flags: 0 }],
    migrate: 'reset',
    why: 'scratch: written and read within one program run',
    writer: 'datapath',
    description: 'per-CPU scratch: the Service frontend the packet being translated addressed, for its FLOW_START',
  },
  {
    name: 'kelp_policy_verdicts',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [{ version: 1, type: MapType.PERCPU_HASH, keySize: 8, valueSize: 16, maxEntries: 16384, flags: 1 }],
    migrate: 'reset',
    why: 'counters, as kelp_metrics',
    writer: 'datapath',
    description: 'packets/bytes decided by policy per (policy, rule, action, direction): new flows, re-decided flows, drops, audits',
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
    version: 2,
    layouts: [
      { version: 1, type: MapType.LPM_TRIE, keySize: nomasq4Key.size, valueSize: u8, maxEntries: 1024, flags: 1 },
      // Every node's pod CIDR (and, natively, its address) is exempt: 1,024 capped a cluster at ~500 nodes.
      { version: 2, type: MapType.LPM_TRIE, keySize: nomasq4Key.size, valueSize: u8, maxEntries: 16384, flags: 1 },
    ],
    migrate: 'rebuild',
    why: "configuration: synced to exactly the agent's CIDRs before the uplink's programs are swapped in",
    writer: 'reconciler',
    description: 'destinations never masqueraded (pod CIDR and configured CIDRs)',
  },
  {
    name: 'kelp_ipcache4',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [coded(1, { type: MapType.LPM_TRIE, maxEntries: 65536, flags: 1 }, ipcache4Key, ipcache4Info)],
    migrate: 'rebuild',
    why:
      'derived from the store: the policy reconciler writes it whole (applyPolicyMaps) before it switches enforcement on in the new kelp_policy_config, ' +
      'and a new config map starts with enforcement off, so nothing reads it half-written',
    writer: 'reconciler',
    description: 'IPv4 prefix -> peer identity (policy), longest prefix wins; a miss is WORLD',
    sizable: true,
  },
  {
    name: 'kelp_policy4',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [coded(1, { type: MapType.LPM_TRIE, maxEntries: 262144, flags: 1 }, policy4Key, policy4Verdict)],
    migrate: 'rebuild',
    why: 'derived from the store, as kelp_ipcache4: written whole before enforcement is switched on in the new config',
    writer: 'reconciler',
    description: 'policy verdicts by endpoint, peer identity, direction, protocol and port prefix (LPM)',
    sizable: true,
  },
  {
    name: 'kelp_policy_config',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [{ version: 1, type: MapType.ARRAY, keySize: u32, valueSize: policyConfig.size, maxEntries: 1, flags: 0 }],
    migrate: 'rebuild',
    why:
      'starts with enforcement off (no policy, as before policy existed): the reconciler writes the policy maps, ' +
      'then switches enforcement on; a revision starting over only makes tracked flows be decided again',
    writer: 'reconciler',
    description: 'policy revision and the enforcement switch (one slot)',
  },
  {
    name: 'kelp_pct4',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [coded(1, { type: MapType.LRU_HASH, maxEntries: 65536, flags: 0 }, pct4Key, pct4Entry)],
    migrate: 'reset',
    why:
      'a layout change is rare, and a convert map the datapath writes must wait for its programs to be swapped, which only host.o reports today: ' +
      "after one, each flow is decided again on its next packet in that packet's direction (a reply the reverse policy denies is dropped, " +
      'so long-lived connections across such an upgrade may need a reconnect); convert it once lxc.o reports its swap',
    writer: 'datapath',
    description: 'policy conntrack: one entry per flow for both directions, with its verdict and revision',
    sizable: true,
  },
  {
    name: 'kelp_frag4',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [coded(1, { type: MapType.LRU_HASH, maxEntries: 8192, flags: 0 }, frag4Key, frag4Ports)],
    migrate: 'reset',
    why: 'ports of datagrams in flight: at most the later fragments of a datagram being sent at the upgrade are dropped (FRAG_NO_FLOW)',
    writer: 'datapath',
    description: 'ports of fragmented IPv4 datagrams by (source, destination, IP id, protocol), from their first fragment',
  },
  {
    name: 'kelp_lb4_frontends',
    objects: ['lxc', 'host', 'sock', 'overlay'],
    version: 3,
    layouts: [
      // 1: one view for every client (lb4_frontend of 20 bytes).
      { version: 1, type: MapType.HASH, keySize: lb4FrontendKey.size, valueSize: 20, maxEntries: LbLimits.LB_FRONTENDS_MAX, flags: 0 },
      // 2: an outside and an in-cluster view (externalTrafficPolicy Local seen from inside).
      { version: 2, type: MapType.HASH, keySize: lb4FrontendKey.size, valueSize: 32, maxEntries: LbLimits.LB_FRONTENDS_MAX, flags: 0 },
      // 3: each view carries its table's size (tables sized to their sets).
      coded(3, { type: MapType.HASH, maxEntries: LbLimits.LB_FRONTENDS_MAX, flags: 0 }, lb4FrontendKey, lb4Frontend),
    ],
    migrate: 'rebuild',
    why: 'derived from the store: the service reconciler writes it whole (ServiceWriter) before the new programs are attached',
    writer: 'reconciler',
    description: 'service frontends: (address, port, protocol) -> service port, backend set, count, flags',
    sizable: true,
  },
  {
    name: 'kelp_lb4_backends',
    objects: ['lxc', 'host', 'sock', 'overlay'],
    version: 1,
    layouts: [coded(1, { type: MapType.HASH, maxEntries: LbLimits.LB_BACKENDS_MAX, flags: 0 }, lb4BackendKey, lb4Backend)],
    migrate: 'rebuild',
    why: 'derived from the store, as kelp_lb4_frontends',
    writer: 'reconciler',
    description: 'service backends: (backend set, slot) -> address, port, flags, backend id',
    sizable: true,
  },
  {
    name: 'kelp_lb4_members',
    objects: ['lxc', 'host', 'sock', 'overlay'],
    version: 1,
    layouts: [coded(1, { type: MapType.HASH, maxEntries: LbLimits.LB_BACKENDS_MAX, flags: 0 }, lb4MemberKey, { ...u32Codec })],
    migrate: 'rebuild',
    why: 'derived from the store, as kelp_lb4_frontends',
    writer: 'reconciler',
    description: '(backend set, backend id) -> slot: whether a tracked flow\'s backend is still in its set',
    sizable: true,
  },
  {
    name: 'kelp_lb4_maglev',
    objects: ['lxc', 'host', 'sock', 'overlay'],
    version: 2,
    layouts: [
      // 1: a table id -> the whole table, every table of the load-time size (--maglev-table-size).
      { version: 1, type: MapType.HASH, keySize: u32, valueSize: 2 * 4057, maxEntries: 32768, flags: 1 },
      // 2: tables sized to their sets, in chunks of 256 slots.
      coded(2, { type: MapType.HASH, maxEntries: LbLimits.LB_MAGLEV_MAX, flags: 1 }, lb4MaglevKey, lb4MaglevChunk),
    ],
    migrate: 'rebuild',
    why: 'derived from the store (the tables are computed from the sets), as kelp_lb4_frontends',
    writer: 'reconciler',
    description: "Maglev tables in chunks: (table id (the id of the first set using it; a frontend's table_id), chunk) -> 256 slots; a table has m slots (the frontend's), sized to its set",
    sizable: true,
  },
  {
    name: 'kelp_lb4_affinity',
    objects: ['lxc', 'host', 'sock', 'overlay'],
    version: 1,
    layouts: [coded(1, { type: MapType.LRU_HASH, maxEntries: LbLimits.LB_AFFINITY_MAX, flags: 0 }, lb4AffinityKey, lb4Affinity)],
    migrate: 'reset',
    why: 'sessionAffinity memory: after a layout change a client may land on another backend once, as after its timeout',
    writer: 'datapath',
    description: 'sessionAffinity ClientIP: (service port, client) -> backend and when it was last chosen',
    sizable: true,
  },
  {
    name: 'kelp_lb4_source_ranges',
    objects: ['lxc', 'host', 'sock', 'overlay'],
    version: 1,
    layouts: [coded(1, { type: MapType.LPM_TRIE, maxEntries: LbLimits.LB_SOURCE_RANGES_MAX, flags: 1 }, lb4SourceRangeKey, u8Codec)],
    migrate: 'rebuild',
    why: 'derived from the store, as kelp_lb4_frontends',
    writer: 'reconciler',
    description: 'loadBalancerSourceRanges: (service port, client prefix), longest prefix',
    sizable: true,
  },
  {
    name: 'kelp_lb4_ct',
    objects: ['lxc', 'host', 'sock', 'overlay'],
    version: 2,
    layouts: [
      { version: 1, type: MapType.LRU_HASH, keySize: tuple4.size, valueSize: 40, maxEntries: LbLimits.LB_CT_MAX, flags: 0 },
      // 2: nat_port, a client port moved off a clash at the backend.
      coded(2, { type: MapType.LRU_HASH, maxEntries: LbLimits.LB_CT_MAX, flags: 0 }, tuple4, lb4CtEntry),
    ],
    migrate: 'reset',
    why:
      'a layout change is rare; after one, a tracked flow is balanced again at its next packet (Maglev gives most the same backend) ' +
      'and replies of flows already open are not reverse-translated until then (written by every object: no conversion can wait for them all to be swapped)',
    writer: 'datapath',
    description: 'service conntrack: forward (client -> frontend: backend) and reverse (backend -> client: frontend) entries',
    sizable: true,
  },
  {
    name: 'kelp_lb4_sock_revnat',
    objects: ['sock'],
    version: 1,
    layouts: [{ version: 1, type: MapType.LRU_HASH, keySize: 16, valueSize: 12, maxEntries: 131072, flags: 0 }],
    migrate: 'convert',
    why:
      'the service address each socket-balanced socket was pointed away from: without it getpeername() and recvfrom() of live sockets ' +
      'would show the backend, and a UDP client checking its replies\' source would drop them',
    writer: 'datapath',
    description: 'socket LB reverse translation: (socket cookie, backend address, port) -> the frontend the application asked for',
  },
  {
    name: 'kelp_lb4_sock_affinity',
    objects: ['sock'],
    version: 1,
    layouts: [{ version: 1, type: MapType.LRU_HASH, keySize: 16, valueSize: 24, maxEntries: 16384, flags: 0 }],
    migrate: 'reset',
    why: 'ClientIP affinity of unbound sockets: after a layout change each namespace picks its backend afresh once',
    writer: 'datapath',
    description: 'socket LB affinity of sockets without an address yet: (netns cookie, service port) -> backend and last use',
  },
  {
    name: 'kelp_tunnel4',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [coded(1, { type: MapType.LPM_TRIE, maxEntries: 16384, flags: 1 }, tunnel4Key, tunnel4Info)],
    migrate: 'rebuild',
    why:
      'derived from the store (every other node\'s pod CIDRs and address): the node reconciler writes it whole at start, ' +
      'before pods are relinked to the new lxc.o; an agent restart of the same layout keeps the pinned map, so cross-node flows see no gap',
    writer: 'reconciler',
    description: 'remote pod CIDR -> the node holding it (underlay address) and how to reach it (VXLAN or native), longest prefix',
  },
  {
    name: 'kelp_overlay_config',
    objects: ['lxc', 'host', 'overlay'],
    version: 1,
    layouts: [{ version: 1, type: MapType.ARRAY, keySize: u32, valueSize: overlayConfig.size, maxEntries: 1, flags: 0 }],
    migrate: 'rebuild',
    why: 'configuration (routing mode, VNI, the VXLAN device): written by the agent at start from its options and the device it made',
    writer: 'reconciler',
    description: 'routing mode, VNI, and the VXLAN device (ifindex, MAC) pods\' packets to other nodes are redirected to (one slot)',
  },
  {
    name: 'kelp_sock_destroy4',
    objects: ['iter_udp'],
    version: 1,
    layouts: [{ version: 1, type: MapType.HASH, keySize: 8, valueSize: u8, maxEntries: 4096, flags: 0 }],
    migrate: 'reset',
    why: 'filled only for the length of one destroyUdpSocketsTo call, and emptied after it',
    writer: 'reconciler',
    description: 'backends (address, UDP port) whose connected sockets the UDP socket iterator destroys, during one pass',
  },
];

/** Descriptions by map name. */
export const MAP_DESCRIPTIONS: Readonly<Record<string, string>> = Object.fromEntries(MAPS.map((m) => [m.name, m.description]));

export function mapSpec(name: string): MapSpec | undefined {
  return MAPS.find((m) => m.name === name);
}

/** What an object or a pinned map says of a map; compared with the layouts. */
export type MapShape = Pick<MapLayout, 'type' | 'keySize' | 'valueSize' | 'maxEntries' | 'flags'>;

/** Same type, sizes and flags; `anySize`: whatever their max_entries. */
export function sameShape(a: MapShape, b: MapShape, anySize = false): boolean {
  return (
    a.type === b.type && a.keySize === b.keySize && a.valueSize === b.valueSize && (anySize || a.maxEntries === b.maxEntries) && a.flags === b.flags
  );
}

/** The layout of `spec` a map of this shape has; undefined when none. */
export function layoutOf(spec: MapSpec, shape: MapShape): MapLayout | undefined {
  return spec.layouts.find((l) => sameShape(l, shape, spec.sizable === true));
}

export function describeShape(s: MapShape): string {
  const type = Object.entries(MapType).find(([, v]) => v === s.type)?.[0] ?? String(s.type);
  return `${type}, key ${s.keySize} B, value ${s.valueSize} B, ${s.maxEntries} entries, flags ${s.flags}`;
}
