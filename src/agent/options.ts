// `kelp agent` flags. Every path can be set so several agents (one per "node" network
// namespace) run side by side on one machine.
import { hostname, totalmem } from 'node:os';
import { DEFAULT_LB_MAGLEV_TABLE_SIZE } from '../datapath/service';
import { DEFAULT_VNI, DEFAULT_VXLAN_PORT, RoutingMode } from '../datapath/node-types';
import { checkMaglevTableSize } from '../service/maglev';
import { parseMetricsAddress } from '../metrics/server';

/** --socket-lb: on (every socket of the cgroup), off (per-packet only), hostns (the node's own namespace only). */
export const SOCKET_LB_CHOICES = ['on', 'off', 'hostns'] as const;
export type SocketLbChoice = (typeof SOCKET_LB_CHOICES)[number];

/** --routing-mode: how pods reach pods on other nodes (docs/nodes.md). */
export const ROUTING_MODES: readonly RoutingMode[] = ['vxlan', 'native'];
/** A VNI is 24 bits. */
export const MAX_VXLAN_ID = 0xffffff;

export interface AgentOptions {
  runDir: string;
  stateDir: string;
  bpfRoot: string;
  cniBinDir: string;
  cniConfDir: string;
  installCni: boolean;
  networkName: string;
  /** This node's pod CIDR; unset: the Node's spec.podCIDRs in Kubernetes mode, else DEFAULT_POD_CIDR. */
  podCidr?: string;
  /** Pod interface MTU; unset: the uplink's, less the VXLAN overhead in VXLAN mode (src/agent/nodes.ts). */
  mtu?: number;
  masquerade: boolean;
  uplink?: string;
  manifests?: string;
  kubeconfig?: string;
  inCluster: boolean;
  nodeName: string;
  logLevel: string;
  logFile?: string;
  /** Seconds between runs of every reconciler without a change (drift repair). */
  resyncInterval: number;
  /** max_entries of kelp_policy4, kelp_ipcache4 and kelp_pct4; unset: from the node's memory (policyMapSizes). */
  policyEntries?: number;
  ipcacheEntries?: number;
  policyCtEntries?: number;
  /** The largest Maglev table (a prime): each backend set's table is sized to its backends, at most this (maglevTableSizeFor). */
  maglevTableSize: number;
  /** Socket-level load balancing at connect()/sendmsg() (cgroup hooks). */
  socketLb: SocketLbChoice;
  /** cgroup v2 directory the socket hooks attach to; unset: the socket LB's default. */
  cgroupRoot?: string;
  /** Pods on other nodes: through the kelp VXLAN device, or routed natively over the underlay. */
  routingMode: RoutingMode;
  /** VXLAN network identifier (VXLAN mode). */
  vxlanId: number;
  /** VXLAN UDP port (VXLAN mode). */
  vxlanPort: number;
  /** Prometheus metrics and the node page: HOST:PORT over TCP, apart from the API socket; '' = off. */
  metricsAddress: string;
  /** Datapath events per second per CPU and class (drop, flow, trace): the token bucket's rate and size (issue 14). */
  eventRate: number;
  eventBurst: number;
}

const pow2Floor = (n: number) => 2 ** Math.floor(Math.log2(Math.max(1, n)));
const clamp = (n: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, n));

/**
 * Policy map sizes: the flags, else scaled to the node's memory. kelp_policy4 and kelp_ipcache4
 * are LPM tries allocated per entry, so their size is a ceiling that costs nothing unused;
 * kelp_pct4 (LRU hash, ~150 bytes an entry with the kernel's overhead) is allocated whole. On a
 * 24 GiB node: 262,144 policy entries, 65,536 ipcache prefixes, 65,536 tracked flows.
 */
export function policyMapSizes(opts: Pick<AgentOptions, 'policyEntries' | 'ipcacheEntries' | 'policyCtEntries'>, memBytes = totalmem()): Record<string, number> {
  return {
    kelp_policy4: opts.policyEntries ?? clamp(pow2Floor(memBytes / (96 * 1024)), 65536, 4 * 1024 * 1024),
    kelp_ipcache4: opts.ipcacheEntries ?? clamp(pow2Floor(memBytes / (384 * 1024)), 16384, 1024 * 1024),
    kelp_pct4: opts.policyCtEntries ?? clamp(pow2Floor(memBytes / (384 * 1024)), 16384, 1024 * 1024),
  };
}

interface FlagSpec {
  key: keyof AgentOptions;
  flag: string;
  kind: 'string' | 'number' | 'boolean';
  help: string;
}

const FLAGS: FlagSpec[] = [
  { key: 'runDir', flag: '--run-dir', kind: 'string', help: 'runtime directory (root\'s alone): the API socket <run-dir>/kelp.sock, and DELs kelp-cni queued while the agent was down in <run-dir>/del-queue' },
  { key: 'stateDir', flag: '--state-dir', kind: 'string', help: 'endpoint records and IPAM leases; best on tmpfs (as the default is), which lives as long as the pods they describe' },
  { key: 'bpfRoot', flag: '--bpf-root', kind: 'string', help: 'bpffs directory where maps and links are pinned' },
  { key: 'cniBinDir', flag: '--cni-bin-dir', kind: 'string', help: 'where kelp-cni is installed' },
  { key: 'cniConfDir', flag: '--cni-conf-dir', kind: 'string', help: 'where 05-kelp.conflist is written' },
  { key: 'installCni', flag: '--install-cni', kind: 'boolean', help: 'install the plugin and conflist once ready (--no-install-cni to skip)' },
  { key: 'networkName', flag: '--network-name', kind: 'string', help: 'CNI network name' },
  { key: 'podCidr', flag: '--pod-cidr', kind: 'string', help: "this node's pod CIDR, the built-in IPAM range (default: the Node's spec.podCIDRs in Kubernetes mode, else 10.244.0.0/24)" },
  { key: 'mtu', flag: '--mtu', kind: 'number', help: "pod interface MTU (default: the uplink's MTU, less 50 in VXLAN mode: 1450 on a 1500 underlay)" },
  { key: 'masquerade', flag: '--masquerade', kind: 'boolean', help: 'SNAT pod traffic leaving the node to the uplink address (--no-masquerade to disable)' },
  { key: 'uplink', flag: '--uplink', kind: 'string', help: "uplink (underlay) interface: masquerade, the VXLAN overhead's MTU, native routes (default: the device holding the Node's InternalIP, else the default route's)" },
  { key: 'routingMode', flag: '--routing-mode', kind: 'string', help: 'pods on other nodes: vxlan (one external-mode VXLAN device, tunnel key set per packet) or native (routes via each node\'s address; the underlay must carry pod addresses)' },
  { key: 'vxlanId', flag: '--vxlan-id', kind: 'number', help: 'VXLAN network identifier, 1..16777215 (VXLAN mode; the CNI VXLAN config\'s vxlanId)' },
  { key: 'vxlanPort', flag: '--vxlan-port', kind: 'number', help: 'VXLAN UDP port (VXLAN mode; the CNI VXLAN config\'s port; IANA\'s is 4789)' },
  { key: 'manifests', flag: '--manifests', kind: 'string', help: 'standalone mode: watched directory of Namespace/Pod manifests' },
  { key: 'kubeconfig', flag: '--kubeconfig', kind: 'string', help: 'Kubernetes mode: watch the API server this kubeconfig names' },
  { key: 'inCluster', flag: '--in-cluster', kind: 'boolean', help: "Kubernetes mode with the pod's service account (as a DaemonSet)" },
  { key: 'nodeName', flag: '--node-name', kind: 'string', help: 'node name (pods with another spec.nodeName are ignored)' },
  { key: 'resyncInterval', flag: '--resync-interval', kind: 'number', help: 'seconds between full reconciles without a change: maps drifted from the desired state are repaired' },
  { key: 'policyEntries', flag: '--policy-entries', kind: 'number', help: 'kelp_policy4 size (policy entries for all endpoints; default scaled to the node\'s memory: 262144 at 24 GiB)' },
  { key: 'ipcacheEntries', flag: '--ipcache-entries', kind: 'number', help: 'kelp_ipcache4 size (pod addresses and policy CIDRs; default scaled to memory: 65536 at 24 GiB)' },
  { key: 'policyCtEntries', flag: '--policy-ct-entries', kind: 'number', help: 'kelp_pct4 size (flows tracked for policy; default scaled to memory: 65536 at 24 GiB)' },
  { key: 'maglevTableSize', flag: '--maglev-table-size', kind: 'number', help: 'largest Maglev table, a prime: each backend set gets the smallest of 251, 509, 1021, 2039, 4093, 8191… slots with ≥ 100 per backend, at most this (M ≥ 100 × N keeps shares within ~1 %; kernel memory is 2 × M bytes per set with several backends)' },
  { key: 'socketLb', flag: '--socket-lb', kind: 'string', help: 'socket-level load balancing: on (every socket of --cgroup-root), hostns (the node\'s own namespace only: meshes intercepting inside pods keep working), off (per-packet DNAT only)' },
  { key: 'cgroupRoot', flag: '--cgroup-root', kind: 'string', help: 'cgroup v2 directory the socket load balancer attaches to (default: the cgroup v2 root)' },
  { key: 'metricsAddress', flag: '--metrics-address', kind: 'string', help: 'Prometheus metrics (/metrics) and the node page: HOST:PORT, [IPv6]:PORT or :PORT (every address), read-only; empty to turn off' },
  { key: 'eventRate', flag: '--event-rate', kind: 'number', help: 'datapath events per second, per CPU and class (drop, flow, trace), up to 10000000; past it they are suppressed and counted (GET /v1/events/stats)' },
  { key: 'eventBurst', flag: '--event-burst', kind: 'number', help: 'datapath events sent at once above --event-rate, per CPU and class, up to 1000000' },
  { key: 'logLevel', flag: '--log-level', kind: 'string', help: 'trace|debug|info|warn|error' },
  { key: 'logFile', flag: '--log-file', kind: 'string', help: 'log to this file instead of stderr' },
];

/** Loopback only by default: the node page shows pods and flows, which not everyone who can reach the node should see. */
export const DEFAULT_METRICS_ADDRESS = '127.0.0.1:9962';

/** The pod CIDR of a standalone node started without --pod-cidr. */
export const DEFAULT_POD_CIDR = '10.244.0.0/24';

export function defaultAgentOptions(): AgentOptions {
  return {
    runDir: '/run/kelp',
    // On tmpfs, like Cilium's /var/run/cilium: every record describes a veth, a netns or a pin
    // that a reboot removes, so a reboot starting clean is correct (host-local's leases on disk
    // outliving their pods is a known leak); and a metadata update costs ~15 µs there against
    // ~190 µs on this VM's ext4, several per ADD.
    stateDir: '/run/kelp/state',
    bpfRoot: '/sys/fs/bpf/kelp',
    cniBinDir: '/opt/cni/bin',
    cniConfDir: '/etc/cni/net.d',
    installCni: true,
    networkName: 'kelp',
    masquerade: true,
    inCluster: false,
    nodeName: hostname(),
    logLevel: 'info',
    resyncInterval: 60,
    maglevTableSize: DEFAULT_LB_MAGLEV_TABLE_SIZE,
    socketLb: 'on',
    routingMode: 'vxlan',
    vxlanId: DEFAULT_VNI,
    vxlanPort: DEFAULT_VXLAN_PORT,
    metricsAddress: DEFAULT_METRICS_ADDRESS,
    eventRate: 10_000,
    eventBurst: 1_000,
  };
}

export class UsageError extends Error {}

export function agentHelp(): string {
  const d = defaultAgentOptions() as unknown as Record<string, unknown>;
  const lines = ['Usage: kelp agent [flags]', '', 'Runs the kelp agent: CNI server, datapath owner, reconcilers.', '', 'Flags:'];
  for (const f of FLAGS) {
    const def = d[f.key];
    const name = f.kind === 'boolean' ? `${f.flag}` : `${f.flag} ${f.kind === 'number' ? 'N' : 'VALUE'}`;
    lines.push(`  ${name.padEnd(26)} ${f.help}${def !== undefined ? ` (default ${JSON.stringify(def)})` : ''}`);
  }
  lines.push(`  ${'--help'.padEnd(26)} this text`);
  return lines.join('\n');
}

/** Parses `--flag value`, `--flag=value` and `--no-flag`. */
export function parseAgentArgs(argv: string[]): AgentOptions {
  const opts = defaultAgentOptions();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const eq = arg.indexOf('=');
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    const negated = name.startsWith('--no-');
    const spec = FLAGS.find((f) => f.flag === (negated ? `--${name.slice(5)}` : name));
    if (!spec) throw new UsageError(`unknown flag ${JSON.stringify(arg)}; see kelp agent --help`);
    const o = opts as unknown as Record<string, unknown>;
    if (spec.kind === 'boolean') {
      if (eq >= 0) {
        const v = arg.slice(eq + 1);
        if (v !== 'true' && v !== 'false') throw new UsageError(`${spec.flag} takes true or false, got ${JSON.stringify(v)}`);
        o[spec.key] = (v === 'true') !== negated;
      } else {
        o[spec.key] = !negated;
      }
      continue;
    }
    if (negated) throw new UsageError(`${spec.flag} is not a boolean flag`);
    const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new UsageError(`${spec.flag} needs a value`);
    if (spec.kind === 'number') {
      const n = Number(value);
      if (!Number.isInteger(n) || n <= 0) throw new UsageError(`${spec.flag} must be a positive integer, got ${JSON.stringify(value)}`);
      o[spec.key] = n;
    } else {
      o[spec.key] = value;
    }
  }
  if (opts.mtu !== undefined && (opts.mtu < 576 || opts.mtu > 65535)) throw new UsageError(`--mtu must be in 576..65535, got ${opts.mtu}`);
  if (!ROUTING_MODES.includes(opts.routingMode)) throw new UsageError(`--routing-mode must be one of ${ROUTING_MODES.join(', ')}, got ${JSON.stringify(opts.routingMode)}`);
  if (opts.vxlanId > MAX_VXLAN_ID) throw new UsageError(`--vxlan-id must be in 1..${MAX_VXLAN_ID}, got ${opts.vxlanId}`);
  if (opts.vxlanPort > 65535) throw new UsageError(`--vxlan-port must be in 1..65535, got ${opts.vxlanPort}`);
  if (opts.eventRate > 10_000_000) throw new UsageError(`--event-rate must be in 1..10000000, got ${opts.eventRate}`);
  if (opts.eventBurst > 1_000_000) throw new UsageError(`--event-burst must be in 1..1000000, got ${opts.eventBurst}`);
  if (!(SOCKET_LB_CHOICES as readonly string[]).includes(opts.socketLb)) throw new UsageError(`--socket-lb must be one of ${SOCKET_LB_CHOICES.join(', ')}, got ${JSON.stringify(opts.socketLb)}`);
  try {
    parseMetricsAddress(opts.metricsAddress);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  try {
    checkMaglevTableSize(opts.maglevTableSize);
  } catch (e) {
    throw new UsageError(`--maglev-table-size: ${(e as Error).message}`);
  }
  return opts;
}
