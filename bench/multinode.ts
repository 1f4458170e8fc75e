// Figure 9: several nodes. A pod on node 1 talks to a pod on node 2, each node its own network
// namespace, the two joined by an underlay: one veth pair between the node namespaces (a wire with
// no bridge or router on it, the same for every variant, 1500 bytes). Variants, each with its own
// two nodes:
//   kelp VXLAN            two agents (--routing-mode vxlan), pods by CNI ADD through each agent;
//                         each node's manifest dir holds both Node objects (pod CIDR, InternalIP)
//   kelp native routing   the same with --routing-mode native
//   flannel-like VXLAN    no BPF: what flannel's vxlan backend programs. A kernel VXLAN device
//                         (VNI 1, port 8472, nolearning) with the node's VTEP address, a bridge
//                         with the pod's veth, a route to the remote pod CIDR via the remote VTEP
//                         address (onlink), a permanent neighbour entry and an FDB entry for it
//   routed veths          no BPF, no encapsulation: the pod's veth with a /32 route (ptp style),
//                         a route to the remote pod CIDR via the other node's underlay address
//   underlay only         node namespace ↔ node namespace over the same wire, no pod: the floor
// Pod MTU: 1450 in the VXLAN variants (the 50-byte overhead on a 1500 underlay), 1500 otherwise.
// Measured: TCP_RR and TCP_CRR (build/bench/rr, client and servers pinned to one CPU, the
// variants in turns of 100 ms in one client run) and TCP throughput (iperf3, 1 stream, 1 s turns),
// every variant in every round, the order rotated round by round; ratios taken round by round.
// Before anything is timed, every variant's path is proven: pings answered, node 1's transmit
// counter of the variant's device grown, the server seeing the client pod's own address. A kelp
// variant that cannot run (the agent lacks the flags or does not start, its pods do not reach each
// other, or the path is not the one named) is reported as not available with why, never as a zero.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { POD_FILTER } from '../src/datapath/loader';
import { VXLAN_DEVICE, VXLAN_OVERHEAD } from '../src/datapath/node-types';
import { KELP_BIN, sh } from '../src/sandbox';
import { applyObjects, programmed } from './lib/agent-api';
import { attachedPrograms, AttachedAt, progStats, withBpfStats } from './lib/bpf-stats';
import { BenchConfig, rotate } from './lib/config';
import { run, startServer } from './lib/exec';
import { Figure, HeadlineRow, spreadText } from './lib/figure';
import { KelpNode, startKelpNode } from './lib/kelp-node';
import { NetnsSet } from './lib/netns';
import { progress } from './lib/progress';
import { RrPair, rrRates } from './lib/rr';
import { num, ratio, spread } from './lib/stats';

export const KELP_VXLAN = 'kelp VXLAN';
export const KELP_NATIVE = 'kelp native routing';
export const FLANNEL = 'flannel-like VXLAN (no BPF)';
export const ROUTED = 'routed veths (no BPF)';
export const UNDERLAY = 'underlay only (node ↔ node, no pod)';

/** Table order. */
const ORDER = [KELP_VXLAN, KELP_NATIVE, FLANNEL, ROUTED, UNDERLAY];

export const RR = 'TCP_RR';
export const CRR = 'TCP_CRR';
export const STREAM = 'TCP throughput, 1 stream';
/** Σ over every BPF program of both kelp nodes: run time during a TCP_RR (TCP_CRR) run ÷ its transactions. */
export const progNs = (test: string) => `BPF run time per ${test} transaction, both nodes`;
const progOne = (test: string) => `BPF run time per ${test} transaction, by program`;
const progRuns = (test: string) => `program runs per ${test} transaction`;
const STATS_SECONDS = 1;
const PROGRAMMED_MS = 10_000;

const TITLE = '9. Several nodes: pod on node 1 ↔ pod on node 2, TCP_RR/CRR and throughput: kelp VXLAN and native routing vs flannel-like VXLAN and routed veths';

/** Flannel's defaults, which kelp's are too (src/datapath/node-types.ts). */
const VNI = 1;
const VXLAN_PORT = 8472;
const UNDERLAY_MTU = 1500;
const VXLAN_MTU = UNDERLAY_MTU - VXLAN_OVERHEAD;
/** The underlay device in each node namespace, for every variant. */
const UPLINK = 'ul0';
const IPERF_PORT = '5201';
/** Debian's own, not whatever python3 the PATH finds first. */
const PYTHON = '/usr/bin/python3';

/** Variant k's underlay is 192.168.(240+k).0/24 (node n at .n), its pods' CIDRs 10.(240+k).n.0/24. */
const underlayIp = (k: number, n: number) => `192.168.${240 + k}.${n}`;
const podCidr = (k: number, n: number) => `10.${240 + k}.${n}.0/24`;
const podIp = (k: number, n: number, host: number) => `10.${240 + k}.${n}.${host}`;
const K_VXLAN = 1;
const K_NATIVE = 2;
const K_FLANNEL = 3;
const K_ROUTED = 4;

interface Column {
  name: string;
  pair: RrPair;
  /** The client's own address: the server must see it (no masquerade between pod CIDRs). */
  clientIp: string;
  /** The pod interface's MTU as found (read back, not assumed). */
  mtu: number;
  /** The device whose tx counter proves the packets took the path the name claims. */
  via: { netns: string; dev: string };
  /** kelp's two node namespaces, whose programs the bpf_stats run times. */
  kelpNodes?: [string, string];
  /** Stops kelp's agents: nothing of a variant that is not measured runs beside the others. */
  stop?: () => Promise<void>;
}

interface Missing {
  name: string;
  why: string;
}

type Closer = () => Promise<void>;

function why(e: unknown): string {
  return ((e as Error).message ?? String(e)).split('\n')[0].slice(0, 300);
}

function ipn(netns: string, ...args: string[]): string {
  return sh('ip', ['-n', netns, ...args]);
}

function mtuOf(netns: string, dev: string): number {
  const [link] = JSON.parse(ipn(netns, '-j', 'link', 'show', 'dev', dev)) as Array<{ mtu: number }>;
  return link.mtu;
}

function txPackets(netns: string, dev: string): number {
  const [link] = JSON.parse(ipn(netns, '-s', '-j', 'link', 'show', 'dev', dev)) as Array<{ stats64?: { tx?: { packets?: number } } }>;
  return link.stats64?.tx?.packets ?? 0;
}

/** The baselines' nodes route their pods' packets (kelp's agent turns this on itself). */
function forwarding(netns: string): void {
  sh('ip', ['netns', 'exec', netns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
}

/**
 * The underlay wire: `ul0` in node `a` (address .1) and in node `b` (address .2). Made in two steps
 * because a kelp node's agent needs its uplink before it starts, when the other node does not exist
 * yet: `half` makes the pair inside `a` (the peer parked there as ul0peer), `join` moves the peer.
 */
function underlayHalf(a: string, k: number): void {
  ipn(a, 'link', 'add', UPLINK, 'mtu', String(UNDERLAY_MTU), 'type', 'veth', 'peer', 'name', `${UPLINK}peer`, 'mtu', String(UNDERLAY_MTU));
  ipn(a, 'addr', 'add', `${underlayIp(k, 1)}/24`, 'dev', UPLINK);
  ipn(a, 'link', 'set', UPLINK, 'up');
}

function underlayJoin(a: string, b: string, k: number): void {
  ipn(a, 'link', 'set', `${UPLINK}peer`, 'netns', b);
  ipn(b, 'link', 'set', `${UPLINK}peer`, 'name', UPLINK);
  ipn(b, 'addr', 'add', `${underlayIp(k, 2)}/24`, 'dev', UPLINK);
  ipn(b, 'link', 'set', UPLINK, 'up');
}

/** A veth from node netns `node` (host end `host`) to pod netns `pod` (eth0), both ends at `mtu`. */
function podVeth(node: string, host: string, pod: string, mtu: number): void {
  ipn(node, 'link', 'add', host, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(mtu), 'netns', pod);
  ipn(pod, 'link', 'set', 'eth0', 'up');
}

/** Two node namespaces and a pod namespace in each, tracked for cleanup. */
function plainNodes(tag: string, letter: string, k: number, netns: NetnsSet): { nodes: [string, string]; pods: [string, string] } {
  const nodes: [string, string] = [`${tag}-${letter}1`, `${tag}-${letter}2`];
  const pods: [string, string] = [`${tag}-${letter}1p`, `${tag}-${letter}2p`];
  netns.create([...nodes, ...pods]);
  for (const ns of [...nodes, ...pods]) ipn(ns, 'link', 'set', 'lo', 'up');
  for (const n of nodes) forwarding(n);
  underlayHalf(nodes[0], k);
  underlayJoin(nodes[0], nodes[1], k);
  return { nodes, pods };
}

/** The MAC of node n's flannel.1 (flannel picks a random one and publishes it in the Node's annotations). */
const vtepMac = (n: number) => `02:f1:00:00:00:0${n}`;

/**
 * Flannel's vxlan backend as it programs a node, and its CNI (bridge plugin) a pod: cni0 holds
 * the subnet's .1 and the pods' veths; flannel.1 holds the subnet's .0/32; the remote subnet is
 * routed via the remote .0 onlink on flannel.1, whose MAC a permanent neighbour entry gives and
 * whose VTEP an FDB entry gives. br_netfilter is left as the kernel sets it in a new namespace
 * (bridge-nf-call-iptables=1, as a kube-proxy node requires it), with no iptables rules.
 */
function flannelLike(tag: string, netns: NetnsSet): Column {
  const k = K_FLANNEL;
  const { nodes, pods } = plainNodes(tag, 'f', k, netns);
  for (const [i, node] of nodes.entries()) {
    const n = i + 1;
    const sub = (h: number) => podIp(k, n, h);
    ipn(node, 'link', 'add', 'cni0', 'mtu', String(VXLAN_MTU), 'type', 'bridge');
    ipn(node, 'addr', 'add', `${sub(1)}/24`, 'dev', 'cni0');
    ipn(node, 'link', 'set', 'cni0', 'up');
    ipn(node, 'link', 'add', 'flannel.1', 'address', vtepMac(n), 'mtu', String(VXLAN_MTU), 'type', 'vxlan', 'id', String(VNI), 'local', underlayIp(k, n), 'dev', UPLINK, 'dstport', String(VXLAN_PORT), 'nolearning');
    ipn(node, 'addr', 'add', `${sub(0)}/32`, 'dev', 'flannel.1');
    ipn(node, 'link', 'set', 'flannel.1', 'up');
    podVeth(node, 'veth1', pods[i], VXLAN_MTU);
    ipn(node, 'link', 'set', 'veth1', 'master', 'cni0', 'up');
    ipn(pods[i], 'addr', 'add', `${sub(2)}/24`, 'dev', 'eth0');
    ipn(pods[i], 'route', 'add', 'default', 'via', sub(1));
    const m = 3 - n;
    ipn(node, 'route', 'add', podCidr(k, m), 'via', podIp(k, m, 0), 'dev', 'flannel.1', 'onlink');
    ipn(node, 'neigh', 'add', podIp(k, m, 0), 'lladdr', vtepMac(m), 'dev', 'flannel.1', 'nud', 'permanent');
    sh('bridge', ['-n', node, 'fdb', 'append', vtepMac(m), 'dev', 'flannel.1', 'dst', underlayIp(k, m)]);
  }
  return {
    name: FLANNEL,
    pair: { name: FLANNEL, clientNetns: pods[0], serverNetns: pods[1], serverIp: podIp(k, 2, 2) },
    clientIp: podIp(k, 1, 2),
    mtu: mtuOf(pods[0], 'eth0'),
    via: { netns: nodes[0], dev: 'flannel.1' },
  };
}

/**
 * Routed veths as Debian's ptp plugin makes them (the gateway address on the host veth, a /32
 * route to the pod), and the remote pod CIDR routed via the other node's underlay address.
 */
function routed(tag: string, netns: NetnsSet): { column: Column; underlay: Column } {
  const k = K_ROUTED;
  const { nodes, pods } = plainNodes(tag, 'g', k, netns);
  for (const [i, node] of nodes.entries()) {
    const n = i + 1;
    const gw = podIp(k, n, 1);
    const ip = podIp(k, n, 2);
    podVeth(node, 'veth1', pods[i], UNDERLAY_MTU);
    ipn(node, 'addr', 'add', `${gw}/32`, 'dev', 'veth1');
    ipn(node, 'link', 'set', 'veth1', 'up');
    ipn(node, 'route', 'add', `${ip}/32`, 'dev', 'veth1', 'scope', 'link', 'src', gw);
    ipn(pods[i], 'addr', 'add', `${ip}/32`, 'dev', 'eth0');
    ipn(pods[i], 'route', 'add', gw, 'dev', 'eth0', 'scope', 'link');
    ipn(pods[i], 'route', 'add', 'default', 'via', gw, 'dev', 'eth0');
    ipn(node, 'route', 'add', podCidr(k, 3 - n), 'via', underlayIp(k, 3 - n));
  }
  const via = { netns: nodes[0], dev: UPLINK };
  return {
    column: {
      name: ROUTED,
      pair: { name: ROUTED, clientNetns: pods[0], serverNetns: pods[1], serverIp: podIp(k, 2, 2) },
      clientIp: podIp(k, 1, 2),
      mtu: mtuOf(pods[0], 'eth0'),
      via,
    },
    underlay: {
      name: UNDERLAY,
      pair: { name: UNDERLAY, clientNetns: nodes[0], serverNetns: nodes[1], serverIp: underlayIp(k, 2) },
      clientIp: underlayIp(k, 1),
      mtu: mtuOf(nodes[0], UPLINK),
      via,
    },
  };
}

/** The flags of KELP_FLAGS that `kelp agent --help` does not list (the agent refuses flags it does not know). */
function lackingFlags(): string[] {
  const help = execFileSync(process.execPath, [KELP_BIN, 'agent', '--help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return KELP_FLAGS.filter((f) => !new RegExp(`^\\s+${f}\\b`, 'm').test(help));
}

const KELP_FLAGS = ['--routing-mode', '--vxlan-id', '--vxlan-port', '--uplink', '--node-name', '--mtu'];

/** The Node object of node n of variant k, as a standalone manifest. */
function nodeManifest(name: string, k: number, n: number): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name },
    spec: { podCIDR: podCidr(k, n), podCIDRs: [podCidr(k, n)] },
    status: { addresses: [{ type: 'InternalIP', address: underlayIp(k, n) }] },
  };
}

/**
 * Two kelp nodes in `mode`, one pod on each. The agents' prefixes are fixed per variant, so both
 * node names are known before either starts: each manifest dir gets both Node objects up front.
 */
async function kelpPair(tag: string, mode: 'vxlan' | 'native', closers: Closer[]): Promise<Column | Missing> {
  const name = mode === 'vxlan' ? KELP_VXLAN : KELP_NATIVE;
  const k = mode === 'vxlan' ? K_VXLAN : K_NATIVE;
  let lacking: string[];
  try {
    lacking = lackingFlags();
  } catch (e) {
    return { name, why: `kelp agent --help failed: ${why((e as { stderr?: string }).stderr || e)}` };
  }
  if (lacking.length > 0) return { name, why: `kelp agent has no ${lacking.join(', ')} (issue 13's cross-node datapath has not landed)` };
  const prefixes = mode === 'vxlan' ? [`${tag}a`, `${tag}b`] : [`${tag}c`, `${tag}d`];
  const nodeNames = prefixes.map((p) => `${p}-node`);
  const mtu = mode === 'vxlan' ? VXLAN_MTU : UNDERLAY_MTU;
  const agentArgs = [`--routing-mode=${mode}`, `--vxlan-id=${VNI}`, `--vxlan-port=${VXLAN_PORT}`, `--uplink=${UPLINK}`, `--mtu=${mtu}`, '--socket-lb=off'];
  const manifests = nodeNames.map((nn, i) => nodeManifest(nn, k, i + 1));
  const nodes: KelpNode[] = [];
  const stop = async () => {
    for (const n of nodes.reverse()) await n.stop();
  };
  const fail = async (reason: string): Promise<Missing> => {
    await stop();
    return { name, why: reason };
  };
  try {
    for (const [i, prefix] of prefixes.entries()) {
      const node = await startKelpNode({
        prefix,
        podCidr: podCidr(k, i + 1),
        logLevel: 'info',
        outside: false,
        agentArgs,
        beforeAgent: (sb) => {
          if (i === 0) underlayHalf(sb.node, k);
          else underlayJoin(nodeNames[0], sb.node, k);
          mkdirSync(sb.manifests, { recursive: true });
          writeFileSync(path.join(sb.manifests, 'nodes.json'), JSON.stringify({ apiVersion: 'v1', kind: 'List', items: manifests }, null, 2));
        },
      });
      closers.push(node.stop);
      nodes.push(node);
    }
  } catch (e) {
    return fail(`the agents did not start: ${why(e)}`);
  }
  let client, server;
  try {
    client = await nodes[0].sb.addPod('mn-client', POD_NS);
    server = await nodes[1].sb.addPod('mn-server', POD_NS);
  } catch (e) {
    return fail(`CNI ADD failed: ${why(e)}`);
  }
  // As in a cluster, every agent knows every pod (the kubelet's status.podIP after the ADD): the
  // receiver's ip cache finds the remote sender.
  const objects = [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: POD_NS } },
    podManifest(client.name, nodeNames[0], client.ip),
    podManifest(server.name, nodeNames[1], server.ip),
  ];
  for (const n of nodes) {
    try {
      const rev = await applyObjects(n.sb.socketPath, objects);
      if (!(await programmed(n.sb.socketPath, rev, PROGRAMMED_MS))) return fail(`${n.sb.node}: the Pod objects were not programmed within ${PROGRAMMED_MS / 1000} s`);
    } catch (e) {
      return fail(`${n.sb.node}: applying the Pod objects failed: ${why(e)}`);
    }
  }
  return {
    name,
    pair: { name, clientNetns: client.netns, serverNetns: server.netns, serverIp: server.ip },
    clientIp: client.ip,
    mtu: mtuOf(client.netns, 'eth0'),
    via: { netns: nodeNames[0], dev: mode === 'vxlan' ? VXLAN_DEVICE : UPLINK },
    kelpNodes: [nodeNames[0], nodeNames[1]],
    stop,
  };
}

const POD_NS = 'bench';
/** kelp's host-side pod veths: `kelp` + 11 hex digits. */
const POD_VETH = /^kelp[0-9a-f]{11}$/;

function podManifest(name: string, node: string, ip: string): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: POD_NS, labels: { app: name } },
    spec: { nodeName: node, containers: [{ name: 'rr', image: 'bench' }] },
    status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

/** A kelp node's programs, each once (one program can sit on several devices), named by node and hooks. */
function kelpPrograms(nodes: [string, string]): Array<{ id: number; label: string }> {
  return nodes.flatMap((node, i) => {
    const byId = new Map<number, AttachedAt[]>();
    for (const p of attachedPrograms(node, [POD_FILTER])) byId.set(p.id, [...(byId.get(p.id) ?? []), p]);
    const where = (a: AttachedAt) => `${a.hook} of ${POD_VETH.test(a.dev) ? 'the pod veth' : a.dev}`;
    return [...byId.entries()].map(([id, at]) => ({ id, label: `node ${i + 1} ${at[0].name} (${[...new Set(at.map(where))].join(', ')})` }));
  });
}

/**
 * One TCP_RR or TCP_CRR run of STATS_SECONDS per kelp column with bpf_stats on: every program of
 * both its nodes, run time and runs per transaction. Not part of the figures above (the sysctl
 * slows every program on the machine while it is on).
 */
async function profileRound(fig: Figure, cs: Column[], mode: 'rr' | 'crr', cpu: number): Promise<string> {
  const test = mode === 'rr' ? RR : CRR;
  const progs = cs.map((c) => kelpPrograms(c.kelpNodes!));
  const { before, after, res } = await withBpfStats(async () => {
    const b = progs.map((ps) => ps.map((p) => progStats(p.id)));
    const rr = await rrRates(cs.map((c) => c.pair), mode, STATS_SECONDS, cpu);
    return { before: b, after: progs.map((ps) => ps.map((p) => progStats(p.id))), res: rr };
  });
  return cs
    .map((c, i) => {
      const tx = res[i].all;
      let total = 0;
      progs[i].forEach((p, j) => {
        const ns = after[i][j].ns - before[i][j].ns;
        const runs = after[i][j].cnt - before[i][j].cnt;
        total += ns;
        if (runs === 0) return;
        fig.record(progOne(test), `${c.name}: ${p.label}`, 'ns/transaction', ns / tx);
        fig.record(progRuns(test), `${c.name}: ${p.label}`, 'runs', runs / tx);
      });
      fig.record(progNs(test), c.name, 'ns/transaction', total / tx);
      return `${c.name} ${num(total / tx)} ns of BPF per ${test} transaction (${progs[i].length} programs)`;
    })
    .join(', ');
}

/**
 * The path works and is the one the column names: 20 pings from pod to pod all answered, each
 * left node 1 through the variant's device (the VXLAN device for the VXLAN variants), and the
 * server sees the client's own address. Returns why not.
 */
async function checkPath(c: Column): Promise<string | undefined> {
  const count = 20;
  let before: number;
  try {
    before = txPackets(c.via.netns, c.via.dev);
  } catch (e) {
    return `no ${c.via.dev} in ${c.via.netns}: ${why(e)}`;
  }
  try {
    await run('ip', ['netns', 'exec', c.pair.clientNetns, 'ping', '-n', '-q', '-c', String(count), '-i', '0.01', '-W', '1', c.pair.serverIp], { timeoutMs: 15_000 });
  } catch (e) {
    return `ping from node 1's pod to ${c.pair.serverIp} on node 2 failed: ${why(e)}`;
  }
  const sent = txPackets(c.via.netns, c.via.dev) - before;
  if (sent < count) return `${count} pings answered but only ${sent} packets left node 1 by ${c.via.dev}: not the path this column names`;
  let seen: string;
  try {
    seen = await peerSeenByServer(c.pair);
  } catch (e) {
    return `a TCP connection from node 1's pod to ${c.pair.serverIp} on node 2 failed: ${why(e)}`;
  }
  if (seen !== c.clientIp) return `the server saw the client as ${seen}, not as ${c.clientIp}: its source was translated on the way`;
  return undefined;
}

const PEER_PORT = '7002';
/** Accepts one TCP connection and sends the peer's address back to it. */
const PEER_SERVER = [
  'import socket, sys',
  's = socket.socket()',
  's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
  "s.bind(('', int(sys.argv[1])))",
  's.listen(1)',
  "print('ready', flush=True)",
  'c, a = s.accept()',
  'c.sendall(a[0].encode())',
  'c.close()',
].join('\n');
const PEER_CLIENT = ['import socket, sys', 'c = socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)', 'print(c.recv(64).decode())'].join('\n');

/** The client's address as the server's accept() reports it. */
async function peerSeenByServer(p: RrPair): Promise<string> {
  const server = await startServer('ip', ['netns', 'exec', p.serverNetns, PYTHON, '-c', PEER_SERVER, PEER_PORT], /^ready/m, { timeoutMs: 5000 });
  try {
    return (await run('ip', ['netns', 'exec', p.clientNetns, PYTHON, '-c', PEER_CLIENT, p.serverIp, PEER_PORT], { timeoutMs: 10_000 })).trim();
  } finally {
    await server.stop();
  }
}

/** Gbit/s received in one iperf3 run of `seconds`, iperf3's own count. */
async function iperfGbit(p: RrPair, seconds: number): Promise<number> {
  const ns = (netns: string, cmd: string[]): [string, string[]] => ['ip', ['netns', 'exec', netns, ...cmd]];
  const server = await startServer(...ns(p.serverNetns, ['iperf3', '-s', '-1', '-p', IPERF_PORT, '--forceflush']), /Server listening/, { timeoutMs: 5000 });
  try {
    const out = await run(...ns(p.clientNetns, ['iperf3', '-c', p.serverIp, '-p', IPERF_PORT, '-t', String(seconds), '-J']), { timeoutMs: (seconds + 15) * 1000 });
    const bps = (JSON.parse(out) as { end?: { sum_received?: { bits_per_second?: number } } }).end?.sum_received?.bits_per_second;
    if (typeof bps !== 'number') throw new Error(`iperf3 ${p.name} gave no received rate: ${out.slice(0, 500)}`);
    return bps / 1e9;
  } finally {
    await server.stop();
  }
}

function fmtRate(x: number): string {
  return x >= 1000 ? `${num(x / 1000)}k/s` : `${num(x)}/s`;
}

export async function benchMultinode(cfg: BenchConfig, tag: string): Promise<Figure> {
  const fig = new Figure(TITLE);
  const closers: Closer[] = [];
  const netns = new NetnsSet();
  closers.push(() => netns.close());
  const columns: Column[] = [];
  const missing: Missing[] = [];
  try {
    progress(`multinode: two nodes per variant: kelp VXLAN ${tag}a/${tag}b-node, kelp native ${tag}c/${tag}d-node, flannel-like ${tag}-f1/-f2, routed ${tag}-g1/-g2`);
    const r = routed(tag, netns);
    columns.push(flannelLike(tag, netns), r.column, r.underlay);
    for (const mode of ['vxlan', 'native'] as const) {
      const c = await kelpPair(tag, mode, closers);
      if ('why' in c) missing.push(c);
      else columns.unshift(c);
    }
    for (const c of [...columns]) {
      const problem = await checkPath(c);
      if (!problem) continue;
      if (c.name !== KELP_VXLAN && c.name !== KELP_NATIVE) throw new Error(`multinode: ${c.name}: ${problem}`);
      missing.push({ name: c.name, why: problem });
      columns.splice(columns.indexOf(c), 1);
      await c.stop?.();
    }
    for (const m of missing) progress(`multinode: ${m.name} not available: ${m.why}`);
    columns.sort((a, b) => ORDER.indexOf(a.name) - ORDER.indexOf(b.name));

    const cpu = cfg.podCpu;
    const rates = (mode: 'rr' | 'crr') => async (cs: Column[]) => (await rrRates(cs.map((c) => c.pair), mode, cfg.rrSeconds, cpu)).map((x) => x.rate);
    // 1 s turns, the variants alternating, so drift within the round lands on all of them.
    const stream = async (cs: Column[]) => {
      const sums = cs.map(() => 0);
      for (let t = 0; t < cfg.iperfSeconds; t++) for (const [i, c] of cs.entries()) sums[i] += await iperfGbit(c.pair, 1);
      return sums.map((s) => s / cfg.iperfSeconds);
    };
    const tests = [
      { measure: RR, unit: 'transactions/s', run: rates('rr'), show: fmtRate },
      { measure: CRR, unit: 'transactions/s', run: rates('crr'), show: fmtRate },
      { measure: STREAM, unit: 'Gbit/s', run: stream, show: (x: number) => `${num(x)} Gbit/s` },
    ];
    for (let round = 0; round < cfg.multinodeRounds; round++) {
      const order = rotate(columns, round);
      for (const t of tests) {
        const xs = await t.run(order);
        order.forEach((c, i) => fig.record(t.measure, c.name, t.unit, xs[i]));
        progress(`multinode round ${round + 1}/${cfg.multinodeRounds}: ${t.measure}: ${order.map((c, i) => `${c.name} ${t.show(xs[i])}`).join(', ')}`);
      }
      const kelp = rotate(columns.filter((c) => c.kelpNodes), round);
      for (const mode of kelp.length > 0 ? (['rr', 'crr'] as const) : []) {
        progress(`multinode round ${round + 1}/${cfg.multinodeRounds}: bpf_stats: ${await profileRound(fig, kelp, mode, cpu)}`);
      }
    }
  } finally {
    while (closers.length > 0) await closers.pop()!();
  }

  const measured = (name: string) => columns.some((c) => c.name === name);
  for (const [kelp, ref] of [
    [KELP_VXLAN, FLANNEL],
    [KELP_NATIVE, ROUTED],
  ]) {
    if (measured(kelp)) for (const m of [RR, CRR, STREAM]) fig.compare(m, kelp, ref, 'higher');
  }
  for (const m of [RR, CRR, STREAM]) {
    fig.compare(m, FLANNEL, ROUTED, 'higher');
    fig.compare(m, ROUTED, UNDERLAY, 'higher');
  }
  fig.notes.push(...notes(cfg, columns, missing));
  fig.notes.push(targetsNote(fig, missing));
  return fig;
}

function notes(cfg: BenchConfig, columns: Column[], missing: Missing[]): string[] {
  const mtus = columns.map((c) => `${c.name} ${c.mtu}`).join(', ');
  const out = [
    'Two node namespaces per variant, joined by one veth pair (the underlay: 1500 bytes, no bridge or router on it; node 1 at ' +
      '192.168.24k.1, node 2 at .2), one pod on each node; the pod on node 1 is the client. ' +
      `**${KELP_VXLAN}** and **${KELP_NATIVE}**: a Sandbox node with its agent on each side (--routing-mode vxlan|native, --vxlan-id ${VNI}, ` +
      `--vxlan-port ${VXLAN_PORT}, --uplink ${UPLINK}, --mtu ${VXLAN_MTU} or ${UNDERLAY_MTU}, --socket-lb=off), both nodes' Node objects ` +
      "(pod CIDR, InternalIP) in each agent's manifest dir before it starts, pods by CNI ADD through kelp-cni, then both Pod objects " +
      "(spec.nodeName, status.podIP, as the kubelet reports them) applied to both agents and waited for (GET /v1/programmed); no policy. " +
      `**${FLANNEL}**: what flannel's vxlan backend and its bridge CNI program, with no BPF: flannel.1 (VXLAN, VNI ${VNI}, dstport ${VXLAN_PORT}, ` +
      'nolearning, local = the node\'s underlay address), cni0 (bridge, the subnet\'s .1) with the pod\'s veth, the remote subnet routed via ' +
      'the remote flannel.1 address (.0) onlink, a permanent neighbour entry for it and an FDB entry sending its MAC to the remote node; ' +
      'br_netfilter as a kube-proxy node has it (bridge-nf-call-iptables=1), no iptables rules. ' +
      `**${ROUTED}**: the pod's veth as Debian's ptp makes it (the gateway address on the host veth, a /32 route to the pod), the remote pod ` +
      `CIDR routed via the other node's underlay address. **${UNDERLAY}**: the rr client in node 1's namespace, the server in node 2's, ` +
      'over the same wire: the floor every variant pays. ip_forward is on in every node namespace.',
    `Pod MTU as read back from the client pod's eth0: ${mtus}. Before anything is timed, each variant's path is checked: 20 pings from ` +
      "the client pod all answered, node 1's transmit counter of the variant's device (kelp_vxlan or flannel.1 for the VXLAN variants, " +
      "the underlay veth otherwise) grew by at least 20, and a TCP server in node 2's pod saw the client pod's own address (no masquerade).",
    `${RR}: 1-byte request and response on one connection; ${CRR}: the same on a new connection each time (build/bench/rr). One client ` +
      `process drives all variants in turns of 100 ms until each has had ${cfg.rrSeconds} s, client and servers pinned to CPU ${cfg.podCpu}. ` +
      `${STREAM}: iperf3, not pinned, ${cfg.iperfSeconds} runs of 1 s per variant taken in turns, their mean. ${cfg.multinodeRounds} rounds, ` +
      'each running every test on every variant, the variants in rotated order. Everything on one machine: both nodes share its CPUs, so ' +
      "a packet's whole path, sender and receiver side, runs on the CPU the figure is pinned to.",
  ];
  if (columns.some((c) => c.kelpNodes)) {
    out.push(
      `${progNs(RR)} (and ${CRR}): after each round, one more TCP_RR and TCP_CRR run of ${STATS_SECONDS} s per kelp variant (the kelp variants in turns as above) with ` +
        'kernel.bpf_stats_enabled set to 1 for that run only and then put back; for every program attached in either kelp node (tcx ' +
        "links and kelp's clsact filters on every device), the growth of its run_time_ns ÷ the run's transactions, summed; by program " +
        'below (programs by their kernel names, cut at 15 characters). The sysctl is machine-wide, so those runs are not part of the figures above. Run time covers the programs only, not ' +
        'the redirect or the encapsulation the kernel carries out after they return.',
    );
  }
  if (missing.length > 0) out.push(`Not available in this run: ${missing.map((m) => `**${m.name}**: ${m.why}`).join('; ')}.`);
  return out;
}

const TARGETS: Array<{ what: string; measure: string; num: string; den: string; min: number; max?: number }> = [
  { what: `${KELP_VXLAN} ${RR} ≥ 1.1× ${FLANNEL}`, measure: RR, num: KELP_VXLAN, den: FLANNEL, min: 1.1 },
  { what: `${KELP_VXLAN} ${STREAM} ≥ 1.0× ${FLANNEL}`, measure: STREAM, num: KELP_VXLAN, den: FLANNEL, min: 1.0 },
  { what: `${KELP_NATIVE} ${RR} within 3% of ${ROUTED}`, measure: RR, num: KELP_NATIVE, den: ROUTED, min: 0.97, max: 1.03 },
  { what: `${KELP_NATIVE} ${CRR} within 3% of ${ROUTED}`, measure: CRR, num: KELP_NATIVE, den: ROUTED, min: 0.97, max: 1.03 },
  { what: `${KELP_NATIVE} ${STREAM} within 3% of ${ROUTED}`, measure: STREAM, num: KELP_NATIVE, den: ROUTED, min: 0.97, max: 1.03 },
];

/** Issue 13's targets against this run's per-round ratios (medians). Faster than "within 3%" counts as met. */
function targetsNote(fig: Figure, missing: Missing[]): string {
  const lines = TARGETS.map(({ what, measure, num: n, den, min }) => {
    const gone = missing.find((m) => m.name === n);
    if (gone) return `- ${what}: not available (above: why)`;
    const s = spread(fig.ratios(measure, n, den));
    const verdict = s.median >= min ? 'met' : `missed by ${num((1 - s.median / min) * 100)}%`;
    return `- ${what}: ${ratio(s.median)} (${ratio(s.min)}–${ratio(s.max)}), ${verdict}`;
  });
  // Where a kelp transaction's time goes: its extra time over the reference against its programs' time.
  for (const [kelp, ref] of [
    [KELP_VXLAN, FLANNEL],
    [KELP_NATIVE, ROUTED],
  ]) {
    for (const test of [RR, CRR]) {
      if (!has(fig, progNs(test), kelp)) continue;
      const r = fig.values(test, ref);
      const e = spread(fig.values(test, kelp).map((x, i) => 1e9 / x - 1e9 / r[i]));
      const p = spread(fig.values(progNs(test), kelp));
      lines.push(
        `- ${kelp} ${test}, where the time goes: transaction time minus ${ref}'s ${num(e.median)} ns (${num(e.min)} to ${num(e.max)}); ` +
          `kelp's programs on both nodes ran ${num(p.median)} ns (${num(p.min)}–${num(p.max)}) per transaction (bpf_stats on, which adds two clock reads per run)`,
      );
    }
  }
  return `Targets (issue 13; median of per-round ratios, min–max):\n${lines.join('\n')}`;
}

function has(fig: Figure, measure: string, variant: string): boolean {
  try {
    return fig.values(measure, variant).length > 0;
  } catch {
    return false;
  }
}

/** The figure's headline rows: kelp's two modes against their baselines; a missing kelp column says so. */
export function multinodeHeadlineRows(fig: Figure | undefined): HeadlineRow[] {
  if (!fig) return [];
  const value = (m: string, v: string) => (has(fig, m, v) ? spreadText(spread(fig.values(m, v)), fig.unit(m, v)) : 'not available');
  const versus = (m: string, v: string, ref: string) => (has(fig, m, v) && has(fig, m, ref) ? `${spreadText(spread(fig.ratios(m, v, ref)), '', ratio)}, higher is better` : '—');
  const rows: HeadlineRow[] = [];
  for (const [kelp, ref, label] of [
    [KELP_VXLAN, FLANNEL, 'flannel-like VXLAN'],
    [KELP_NATIVE, ROUTED, 'routed veths'],
  ]) {
    for (const m of [RR, CRR, STREAM]) rows.push({ figure: `Cross-node ${m}, ${kelp} (ref: ${label})`, kelp: value(m, kelp), reference: value(m, ref), ratio: versus(m, kelp, ref) });
  }
  return rows;
}

