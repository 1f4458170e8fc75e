// The connectivity matrix of the policy suite (test/e2e/policy-matrix.test.ts): one kelp node
// (a Sandbox), three namespaces x, y, z with three pods a, b, c each, added through the real
// kelp-cni and described by Pod manifests applied with `kelp apply`; every pod, the node and the
// outside world run one probe-peer process (test/fixtures/policy-matrix/probe-peer.cjs) that
// serves TCP 80, TCP 81 and UDP 80 and makes the probes from its namespace.
//
// A matrix is every probe at once: pod → pod (9 × 9 × 3), node → pod, pod → node and pod → the
// two outside addresses, each a new connection that counts as reached only when its echo comes
// back. Cases state what they expect as per-side rules (`Expectation`), written by hand from the
// API text; `compare` turns a difference into a grid and a list a person can read.
//
// The same matrix runs across nodes (test/e2e/multinode-policy.test.ts, `startAcross`): the nine
// pods spread over the nodes of a Cluster (test/support/cluster.ts), every object applied on
// every node, and "node" meaning the pod's own node on either side of a probe, so every case's
// expectation holds unchanged.
import { ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Sandbox, sh } from '../../src/sandbox';
import { DropReason, dropReasonName, MetricsReason } from '../../src/datapath/drop';
import { kelpApplyWait, kelpAsync, startSandbox } from './e2e';
import { LinePeer } from './line-peer';
import { Cluster, OUTSIDE_IP, POD_NETWORK } from './cluster';
import { requestJson } from '../../src/cli/client';

// ---------------------------------------------------------------------------------------------
// The topology, fixed: cases are written against these labels and ports.

export const NAMESPACES = ['x', 'y', 'z'] as const;
export type Ns = (typeof NAMESPACES)[number];
export const POD_NAMES = ['a', 'b', 'c'] as const;
export type PodName = (typeof POD_NAMES)[number];
export type PodId = `${Ns}/${PodName}`;
export const PORTS = ['tcp/80', 'tcp/81', 'udp/80'] as const;
export type PortKey = (typeof PORTS)[number];

export type Labels = Record<string, string>;

/** Namespace labels (kubernetes.io/metadata.name comes on top, set by the agent as by the API server). z has no `env`. */
export const NAMESPACE_LABELS: Record<Ns, Labels> = {
  x: { ns: 'x', env: 'prod' },
  y: { ns: 'y', env: 'dev' },
  z: { ns: 'z' },
};

/** Pod labels, the same in every namespace. c has neither `app` nor `tier`. */
export const POD_LABELS: Record<PodName, Labels> = {
  a: { pod: 'a', app: 'web', tier: 'front' },
  b: { pod: 'b', app: 'db', tier: 'back' },
  c: { pod: 'c' },
};

/**
 * Named container ports, differing per pod: `serve-80` is TCP 80 on a and c but TCP 81 on b,
 * `serve-81` is TCP 81 on a, TCP 80 on b and missing on c; `dns` is UDP 80 everywhere.
 */
export const NAMED_PORTS: Record<PodName, Array<{ name: string; containerPort: number; protocol: 'TCP' | 'UDP' }>> = {
  a: [
    { name: 'serve-80', containerPort: 80, protocol: 'TCP' },
    { name: 'serve-81', containerPort: 81, protocol: 'TCP' },
    { name: 'dns', containerPort: 80, protocol: 'UDP' },
  ],
  b: [
    { name: 'serve-80', containerPort: 81, protocol: 'TCP' },
    { name: 'serve-81', containerPort: 80, protocol: 'TCP' },
    { name: 'dns', containerPort: 80, protocol: 'UDP' },
  ],
  c: [
    { name: 'serve-80', containerPort: 80, protocol: 'TCP' },
    { name: 'dns', containerPort: 80, protocol: 'UDP' },
  ],
};

/** Second address of the outside namespace, in no network the node has (reached by its default route). */
const OUTSIDE_EXTRA_IP = '198.51.100.10';

export interface PodRef {
  kind: 'pod';
  id: PodId;
  ns: Ns;
  pod: PodName;
  ip: string;
}

export interface OutsideRef {
  kind: 'outside';
  /** out1: the outside namespace's uplink address (192.168.250.2; across nodes 10.200.0.254); out2: 198.51.100.10. */
  id: 'out1' | 'out2';
  ip: string;
}

export type Peer = PodRef | OutsideRef;

export interface Topology {
  pods: PodRef[];
  pod(id: PodId): PodRef;
  outside: OutsideRef[];
  /** The node's address and pod CIDR (across nodes: the first node's address and the cluster's pod network; see `nodeOf`). */
  nodeIp: string;
  podCidr: string;
  /** The node a pod runs on: its agent, address and pod CIDR. */
  nodeOf(id: PodId): MatrixNode;
}

/** A node of the matrix: its sandbox (agent), address and pod CIDR. */
export interface MatrixNode {
  sb: Sandbox;
  ip: string;
  podCidr: string;
}

// ---------------------------------------------------------------------------------------------
// Expectations: per-side rules, combined as the datapath must (a connection between two pods
// needs the source's egress and the destination's ingress; to the outside, the egress only; a
// pod and its own node always talk; a pod reaching itself never leaves its namespace).

/**
 * Whether `self` lets a new connection through on one side: for ingress, from `peer` (always a
 * pod here) to self's `port`; for egress, from self to `peer`'s `port`.
 */
export type Rule = (self: PodRef, peer: Peer, port: PortKey) => boolean;

/** Missing: that side lets everything through. */
export interface Expectation {
  ingress?: Rule;
  egress?: Rule;
}

/** A rule over some pods: those in `pods` get `rule`, every other pod lets everything through. */
export function only(pods: readonly PodId[], rule: Rule): Rule {
  return (self, peer, port) => !pods.includes(self.id) || rule(self, peer, port);
}

/** Every rule must let it through (several policies' effects, written apart). */
export function all(...rules: Rule[]): Rule {
  return (self, peer, port) => rules.every((r) => r(self, peer, port));
}

export const nothing = (): boolean => false;
export const anything = (): boolean => true;

/** Is `peer` one of these pods (`x/a`), or a pod of one of these namespaces (`x`)? */
export function isPod(peer: Peer, ...which: Array<PodId | Ns>): peer is PodRef {
  return peer.kind === 'pod' && (which.length === 0 || which.some((w) => w === peer.id || w === peer.ns));
}

export function ids(...which: Array<PodId | Ns>): PodId[] {
  const out: PodId[] = [];
  for (const ns of NAMESPACES) for (const p of POD_NAMES) if (which.some((w) => w === ns || w === `${ns}/${p}`)) out.push(`${ns}/${p}`);
  return out;
}

export type Source = PodId | 'node';
export type Destination = PodId | 'node' | 'out1' | 'out2';
export const DESTINATIONS_EXTRA = ['node', 'out1', 'out2'] as const;

export function probeKey(from: Source, to: Destination, port: PortKey): string {
  return `${from} ${to} ${port}`;
}

/** Every probe of a matrix and its expected outcome. */
export function expectedMatrix(t: Topology, e: Expectation): Map<string, boolean> {
  const out = new Map<string, boolean>();
  const ingress = e.ingress ?? anything;
  const egress = e.egress ?? anything;
  for (const src of t.pods) {
    for (const dst of t.pods) {
      for (const port of PORTS) out.set(probeKey(src.id, dst.id, port), src.id === dst.id || (egress(src, dst, port) && ingress(dst, src, port)));
    }
    for (const port of PORTS) out.set(probeKey(src.id, 'node', port), true);
    for (const o of t.outside) for (const port of PORTS) out.set(probeKey(src.id, o.id, port), egress(src, o, port));
  }
  for (const dst of t.pods) for (const port of PORTS) out.set(probeKey('node', dst.id, port), true);
  return out;
}

export interface ProbeResult {
  ok: boolean;
  error?: string;
}

const MAX_LISTED = 60;

/** The differences between an expected and a measured matrix, as text; '' when they agree. */
export function compare(t: Topology, expected: Map<string, boolean>, actual: Map<string, ProbeResult>): string {
  const bad: string[] = [];
  for (const [key, want] of expected) {
    const got = actual.get(key);
    if (!got) bad.push(`${key}: not probed`);
    else if (got.ok !== want) bad.push(`${key.replace(' ', ' -> ')}: expected ${want ? 'allowed' : 'denied'}, got ${got.ok ? 'allowed' : `denied (${got.error})`}`);
  }
  if (bad.length === 0) return '';
  const sources: Source[] = [...t.pods.map((p) => p.id), 'node'];
  const dests: Destination[] = [...t.pods.map((p) => p.id), ...DESTINATIONS_EXTRA];
  const mark = (key: string) => {
    const want = expected.get(key);
    if (want === undefined) return ' ';
    const got = actual.get(key)?.ok;
    if (got === want) return want ? '.' : '-';
    return want ? 'D' : 'A';
  };
  const w = 6;
  // Rows are sources, column groups destinations.
  const lines = [
    `${bad.length} of ${expected.size} probes differ. Each cell is tcp/80 tcp/81 udp/80 towards that destination:`,
    `  . allowed as expected   - denied as expected   D denied but expected allowed   A allowed but expected denied`,
    `  ${'from'.padEnd(w)}${dests.map((d) => d.padEnd(w)).join('')}`,
    ...sources.map((s) => `  ${s.padEnd(w)}${dests.map((d) => PORTS.map((p) => mark(probeKey(s, d, p))).join('').padEnd(w)).join('')}`.trimEnd()),
    'mismatches:',
    ...bad.slice(0, MAX_LISTED).map((b) => `  ${b}`),
    ...(bad.length > MAX_LISTED ? [`  … and ${bad.length - MAX_LISTED} more (all in the grid above)`] : []),
  ];
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// Manifests.

export type Manifest = Record<string, unknown> & { kind: string; metadata: { name: string; namespace?: string; labels?: Labels; annotations?: Labels } };

export interface Requirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  values?: string[];
}

/** A label selector: matchLabels, plus matchExpressions when given. `sel()` is `{}`. */
export function sel(matchLabels: Labels = {}, ...matchExpressions: Requirement[]): Record<string, unknown> {
  const s: Record<string, unknown> = {};
  if (Object.keys(matchLabels).length > 0) s.matchLabels = matchLabels;
  if (matchExpressions.length > 0) s.matchExpressions = matchExpressions;
  return s;
}

export const expr = (key: string, operator: Requirement['operator'], ...values: string[]): Requirement =>
  values.length > 0 ? { key, operator, values } : { key, operator };

export const AUDIT = { 'policy.kelp.dev/audit': 'true' };

/** networking.k8s.io/v1 NetworkPolicy; `spec` as written in a manifest. */
export function np(ns: Ns, name: string, spec: Record<string, unknown>, annotations?: Labels): Manifest {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace: ns, ...(annotations ? { annotations } : {}) }, spec };
}

/** policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy. */
export function cnp(name: string, spec: Record<string, unknown>, annotations?: Labels): Manifest {
  return { apiVersion: 'policy.networking.k8s.io/v1alpha2', kind: 'ClusterNetworkPolicy', metadata: { name, ...(annotations ? { annotations } : {}) }, spec };
}

/** policy.kelp.dev/v1alpha1 KelpNetworkPolicy. */
export function knp(ns: Ns, name: string, spec: Record<string, unknown>, annotations?: Labels): Manifest {
  return { apiVersion: 'policy.kelp.dev/v1alpha1', kind: 'KelpNetworkPolicy', metadata: { name, namespace: ns, ...(annotations ? { annotations } : {}) }, spec };
}

/** ClusterNetworkPolicy / KelpNetworkPolicy protocol entries. */
export const tcpPort = (number: number) => ({ tcp: { destinationPort: { number } } });
export const udpPort = (number: number) => ({ udp: { destinationPort: { number } } });
export const tcpRange = (start: number, end: number) => ({ tcp: { destinationPort: { range: { start, end } } } });
export const udpRange = (start: number, end: number) => ({ udp: { destinationPort: { range: { start, end } } } });
export const namedPort = (name: string) => ({ destinationNamedPort: name });

/** The Namespace objects of the topology, with their starting labels. */
export function matrixNamespaces(): Manifest[] {
  return NAMESPACES.map((ns) => namespaceManifest(ns, NAMESPACE_LABELS[ns]));
}

function namespaceManifest(ns: Ns, labels: Labels): Manifest {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, labels } };
}

function podManifest(ns: Ns, pod: PodName, labels: Labels, node: string, ip?: string): Manifest {
  const m: Manifest = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: pod, namespace: ns, labels },
    spec: { nodeName: node, containers: [{ name: 'server', image: 'probe-peer', ports: NAMED_PORTS[pod] }] },
  };
  // As the kubelet reports it once the runtime's CNI ADD gave the pod its address.
  if (ip) m.status = { phase: 'Running', podIP: ip, podIPs: [{ ip }] };
  return m;
}

/** One change and the full matrix expected after it. In a step: apply, delete, then relabel. */
export interface Step {
  /** Named in the failure message. */
  what?: string;
  apply?: Manifest[];
  delete?: Manifest[];
  namespaces?: Partial<Record<Ns, Labels>>;
  pods?: Partial<Record<PodId, Labels>>;
  expect: Expectation;
  /** More assertions after the matrix, in the same state. */
  also?: (m: PolicyMatrix) => Promise<void>;
  /**
   * Pods whose counters (`kelp get counters`) must grow while this step is probed: with the
   * would-be drops of an audit-only policy (and no policy drop), or with policy drops.
   */
  reported?: { pods: PodId[]; as: 'audit' | 'drop' };
}

/** How `kelp get counters` names an audit-only policy's would-be drop, and a policy drop. */
export const REASON_AUDIT = dropReasonName(MetricsReason.POLICY_AUDIT);
export const REASON_POLICY_DENY = dropReasonName(DropReason.POLICY_DENY);

export interface Case {
  name: string;
  /** Built when the case runs, with the addresses of this run. */
  steps: (t: Topology) => Step[];
}

const manifestKey = (o: Manifest) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;

// ---------------------------------------------------------------------------------------------
// The running matrix.

const PEER_SCRIPT = path.join(__dirname, '../fixtures/policy-matrix/probe-peer.cjs');

/** Probes of a first pass; a probe expected to pass that failed gets one more try with RETRY_MS. */
export const PROBE_MS = 400;
const RETRY_MS = 1500;
/** A UDP port no probe peer listens on. */
export const CLOSED_PORT = 99;
/** Probes in flight at once, over all peers (2 shared cores: a denied probe only waits). */
const IN_FLIGHT = 64;

interface PeerRequest {
  op: 'probe' | 'refused' | 'open' | 'send' | 'close';
  proto?: 'tcp' | 'udp';
  host?: string;
  port?: number;
  conn?: number;
  timeoutMs?: number;
}

/** One probe-peer process in one network namespace. */
class ProbePeer extends LinePeer<PeerRequest, ProbeResult> {
  constructor(
    name: string,
    readonly netns: string,
    child: ChildProcess,
  ) {
    super(
      name,
      child,
      (error) => ({ ok: false, error }),
      (msg) => ({ ok: msg.ok as boolean, ...(msg.error ? { error: msg.error as string } : {}) }),
    );
  }

  static start(name: string, netns: string, udpAddresses: string[] = ['0.0.0.0']): ProbePeer {
    const args = [PEER_SCRIPT, '80,81', '80', udpAddresses.join(',')];
    const child = spawn('ip', ['netns', 'exec', netns, process.execPath, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    return new ProbePeer(name, netns, child);
  }
}

function parsePort(port: PortKey): { proto: 'tcp' | 'udp'; port: number } {
  const [proto, n] = port.split('/');
  return { proto: proto as 'tcp' | 'udp', port: Number(n) };
}

/** A kept connection (for the revocation case). */
export interface KeptConnection {
  from: Source;
  to: Destination;
  port: PortKey;
  peer: ProbePeer;
  id: number;
}

export class PolicyMatrix {
  /** The (first) node's sandbox. */
  readonly sb: Sandbox;
  readonly t: Topology;
  /** Every node's agent: objects are applied on each. */
  private readonly nodes: MatrixNode[];
  /** Pods' peers by pod id, the outside's as 'outside', each node's by `node:<name>`. */
  private readonly peers = new Map<string, ProbePeer>();
  /** `kelp policy trace` after each step (one node: its agent explains and checks both sides). */
  private readonly traced: boolean;
  private readonly labels: { pods: Record<string, Labels>; namespaces: Record<string, Labels> };
  private steps = 0;
  private lastProbes?: Map<string, ProbeResult>;

  private constructor(t: Topology, nodes: MatrixNode[]) {
    this.sb = nodes[0].sb;
    this.t = t;
    this.nodes = nodes;
    this.traced = nodes.length === 1;
    this.labels = { pods: {}, namespaces: {} };
  }

  /** The node, its 9 pods with their Pod objects, and a probe peer in each namespace. Stops whatever it made on failure. */
  static async start(tag: string): Promise<PolicyMatrix> {
    const sb = await startSandbox(tag);
    let m: PolicyMatrix | undefined;
    try {
      sb.exec(sb.outside!, 'ip', ['addr', 'add', `${OUTSIDE_EXTRA_IP}/32`, 'dev', 'eth0']);
      const namespaces = NAMESPACES.map((ns) => namespaceManifest(ns, NAMESPACE_LABELS[ns]));
      const pods = NAMESPACES.flatMap((ns) => POD_NAMES.map((p) => podManifest(ns, p, POD_LABELS[p], sb.node)));
      // As in a cluster: the Pod object first, then the runtime's CNI ADD, then its address in status.
      await kelpApplyWait(sb, writeManifests(sb, 'setup-objects', [...namespaces, ...pods]), 'apply');
      const added = await Promise.all(NAMESPACES.flatMap((ns) => POD_NAMES.map((p) => sb.addPod(p, ns))));
      const refs: PodRef[] = added.map((a) => ({ kind: 'pod', id: `${a.namespace}/${a.name}` as PodId, ns: a.namespace as Ns, pod: a.name as PodName, ip: a.ip }));
      const t: Topology = {
        pods: refs,
        pod: (id) => refs.find((r) => r.id === id)!,
        outside: [
          { kind: 'outside', id: 'out1', ip: sb.outsideIp },
          { kind: 'outside', id: 'out2', ip: OUTSIDE_EXTRA_IP },
        ],
        nodeIp: sb.nodeIp,
        podCidr: sb.podCidr,
        nodeOf: () => node,
      };
      const node: MatrixNode = { sb, ip: sb.nodeIp, podCidr: sb.podCidr };
      m = new PolicyMatrix(t, [node]);
      await m.begin(refs, (p) => sb.pods.get(p.id)!.netns, sb.outside!);
      return m;
    } catch (e) {
      if (m) await m.stop();
      else await sb.stop();
      throw e;
    }
  }

  /**
   * The matrix across the nodes of `c` (started standalone with `matrixNamespaces()` among its
   * objects and an outside): pod (namespace j, pod k) on node (j + k) mod N, so each namespace
   * and each pod name spans the nodes and some pairs share one. `c` is the caller's to stop.
   */
  static async startAcross(c: Cluster): Promise<PolicyMatrix> {
    if (!c.outside) throw new Error('the policy matrix needs the cluster\'s outside host');
    sh('ip', ['-n', c.outside, 'addr', 'add', `${OUTSIDE_EXTRA_IP}/32`, 'dev', 'eth0']);
    const nodes: MatrixNode[] = c.nodes.map((n) => ({ sb: n.sb, ip: n.address, podCidr: n.podCidr }));
    const placed = NAMESPACES.flatMap((ns, j) => POD_NAMES.map((pod, k) => ({ ns, pod, node: c.nodes[(j + k) % c.nodes.length] })));
    const added = await c.addPods(placed.map((p) => ({ node: p.node, name: p.pod, namespace: p.ns, labels: POD_LABELS[p.pod], ports: NAMED_PORTS[p.pod] })));
    const refs: PodRef[] = added.map((a) => ({ kind: 'pod', id: `${a.namespace}/${a.name}` as PodId, ns: a.namespace as Ns, pod: a.name as PodName, ip: a.ip }));
    const nodeOfPod = new Map(added.map((a, i) => [refs[i].id, nodes[c.nodes.indexOf(a.node)]]));
    const t: Topology = {
      pods: refs,
      pod: (id) => refs.find((r) => r.id === id)!,
      outside: [
        { kind: 'outside', id: 'out1', ip: OUTSIDE_IP },
        { kind: 'outside', id: 'out2', ip: OUTSIDE_EXTRA_IP },
      ],
      nodeIp: nodes[0].ip,
      podCidr: POD_NETWORK,
      nodeOf: (id) => nodeOfPod.get(id)!,
    };
    const m = new PolicyMatrix(t, nodes);
    try {
      await m.begin(refs, (p) => added.find((a) => `${a.namespace}/${a.name}` === p.id)!.netns, c.outside);
      return m;
    } catch (e) {
      await m.stopPeers();
      throw e;
    }
  }

  /** The pods' objects with their addresses and starting labels, and every probe peer, ready. */
  private async begin(refs: PodRef[], netnsOf: (p: PodRef) => string, outside: string): Promise<void> {
    for (const ns of NAMESPACES) this.labels.namespaces[ns] = NAMESPACE_LABELS[ns];
    for (const p of refs) this.labels.pods[p.id] = POD_LABELS[p.pod];
    await this.applyPods(refs);
    for (const p of refs) this.peers.set(p.id, ProbePeer.start(p.id, netnsOf(p)));
    for (const n of this.nodes) this.peers.set(`node:${n.sb.node}`, ProbePeer.start('node', n.sb.node));
    this.peers.set('outside', ProbePeer.start('outside', outside, this.t.outside.map((o) => o.ip)));
    await Promise.all([...this.peers.values()].map((p) => p.ready));
  }

  async stop(): Promise<void> {
    await this.stopPeers();
    if (this.nodes.length === 1) await this.sb.stop();
  }

  /** The probe peers only (across nodes the cluster is its starter's to stop). */
  async stopPeers(): Promise<void> {
    await Promise.all([...this.peers.values()].map((p) => p.stop()));
  }

  private async applyPods(pods: PodRef[]): Promise<void> {
    const manifests = pods.map((p) => podManifest(p.ns, p.pod, this.labels.pods[p.id], this.t.nodeOf(p.id).sb.node, p.ip));
    await this.apply(manifests);
  }

  /** `kelp apply -f DIR --wait` on every node: returns once each agent has programmed the change. */
  async apply(manifests: Manifest[]): Promise<void> {
    if (manifests.length === 0) return;
    const dir = writeManifests(this.sb, `step-${++this.steps}`, manifests);
    await Promise.all(this.nodes.map((n) => kelpApplyWait(n.sb, dir, 'apply')));
  }

  /** `kelp delete -f DIR --wait` on every node. */
  async delete(manifests: Manifest[]): Promise<void> {
    if (manifests.length === 0) return;
    const dir = writeManifests(this.sb, `step-${++this.steps}`, manifests);
    await Promise.all(this.nodes.map((n) => kelpApplyWait(n.sb, dir, 'delete')));
  }

  /** Replaces pods' labels (their Pod objects re-applied, address kept). */
  async relabelPods(labels: Partial<Record<PodId, Labels>>): Promise<void> {
    const ids = Object.keys(labels) as PodId[];
    for (const id of ids) this.labels.pods[id] = labels[id]!;
    await this.applyPods(ids.map((id) => this.t.pod(id)));
  }

  /** Replaces namespaces' labels. */
  async relabelNamespaces(labels: Partial<Record<Ns, Labels>>): Promise<void> {
    const names = Object.keys(labels) as Ns[];
    for (const ns of names) this.labels.namespaces[ns] = labels[ns]!;
    await this.apply(names.map((ns) => namespaceManifest(ns, this.labels.namespaces[ns])));
  }

  /** Puts back the labels the topology starts with, where a case changed them. */
  async restoreLabels(): Promise<void> {
    const pods = this.t.pods.filter((p) => JSON.stringify(this.labels.pods[p.id]) !== JSON.stringify(POD_LABELS[p.pod]));
    const nss = NAMESPACES.filter((ns) => JSON.stringify(this.labels.namespaces[ns]) !== JSON.stringify(NAMESPACE_LABELS[ns]));
    for (const p of pods) this.labels.pods[p.id] = POD_LABELS[p.pod];
    for (const ns of nss) this.labels.namespaces[ns] = NAMESPACE_LABELS[ns];
    await this.apply([...nss.map((ns) => namespaceManifest(ns, NAMESPACE_LABELS[ns])), ...pods.map((p) => podManifest(p.ns, p.pod, POD_LABELS[p.pod], this.t.nodeOf(p.id).sb.node, p.ip))]);
  }

  /** Where a probe from `from` goes: 'node' is the source pod's own node. */
  private target(to: Destination, from?: Source): string {
    if (to === 'node') return from && from !== 'node' ? this.t.nodeOf(from).ip : this.t.nodeIp;
    if (to === 'out1' || to === 'out2') return this.t.outside.find((o) => o.id === to)!.ip;
    return this.t.pod(to).ip;
  }

  /** Who probes from `from`: 'node' is the destination pod's own node. */
  private peerOf(from: Source, to: Destination): ProbePeer {
    if (from !== 'node') return this.peers.get(from)!;
    const node = to !== 'node' && to !== 'out1' && to !== 'out2' ? this.t.nodeOf(to) : this.nodes[0];
    return this.peers.get(`node:${node.sb.node}`)!;
  }

  /**
   * Every probe of `expected`, at most IN_FLIGHT at once; each one expected to pass that failed
   * is tried once more with a longer timeout. One expected to fail is never retried.
   */
  async probe(expected: Map<string, boolean>): Promise<Map<string, ProbeResult>> {
    const results = new Map<string, ProbeResult>();
    const run = async (keys: string[], timeoutMs: number) => {
      let i = 0;
      const worker = async () => {
        while (i < keys.length) {
          const key = keys[i++];
          const [from, to, port] = key.split(' ') as [Source, Destination, PortKey];
          const { proto, port: n } = parsePort(port);
          results.set(key, await this.peerOf(from, to).request({ op: 'probe', proto, host: this.target(to, from), port: n, timeoutMs }).result);
        }
      };
      await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, keys.length) }, worker));
    };
    await run([...expected.keys()], PROBE_MS);
    await run([...expected].filter(([k, want]) => want && !results.get(k)!.ok).map(([k]) => k), RETRY_MS);
    return results;
  }

  /** Probes the full matrix against `e`; returns the readable difference, '' when none. */
  async check(e: Expectation): Promise<string> {
    const expected = expectedMatrix(this.t, e);
    const actual = await this.probe(expected);
    this.lastProbes = actual;
    return compare(this.t, expected, actual);
  }

  /**
   * `kelp policy trace` for every probe from a pod to a pod or the outside of the last check:
   * its verdict must be what the packets met, and its datapath lookups (the pinned maps) must
   * agree with its explanation on every side. Returns the disagreements, '' when none.
   */
  async checkTrace(): Promise<string> {
    const keys = [...(this.lastProbes?.keys() ?? [])].filter((k) => {
      const [from, to] = k.split(' ');
      // A pod reaching itself never leaves its namespace: no datapath, no policy.
      return from !== 'node' && to !== 'node' && from !== to;
    });
    const problems: string[] = [];
    let i = 0;
    const worker = async () => {
      while (i < keys.length) {
        const key = keys[i++];
        const [from, to, port] = key.split(' ') as [Source, Destination, PortKey];
        const { proto, port: n } = parsePort(port);
        const q = new URLSearchParams({ from, to: to.includes('/') ? to : this.target(to), protocol: proto.toUpperCase(), port: String(n) });
        const res = await requestJson<{ explanation: { allowed: boolean }; datapath: Array<{ direction: string; agrees: boolean }>; text: string }>(this.sb.socketPath, 'GET', `/v1/policy/trace?${q.toString()}`);
        const met = this.lastProbes!.get(key)!.ok;
        const disagree = res.datapath.filter((d) => !d.agrees).map((d) => d.direction);
        if (res.explanation.allowed !== met || disagree.length > 0) {
          problems.push(`${key}: packets ${met ? 'passed' : 'dropped'}, trace says ${res.explanation.allowed ? 'allowed' : 'denied'}${disagree.length ? `, maps disagree on ${disagree.join(' and ')}` : ''}\n${res.text}`);
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    return problems.length ? `kelp policy trace disagrees on ${problems.length} of ${keys.length} flows:\n${problems.slice(0, 5).join('\n')}` : '';
  }

  /**
   * Runs a case's steps, probing the full matrix after each; throws the readable difference of
   * the first step that differs. Whatever the case applied is deleted and labels are put back,
   * whether it passed or not.
   */
  async run(c: Case): Promise<void> {
    const applied = new Map<string, Manifest>();
    let failure: Error | undefined;
    try {
      const steps = c.steps(this.t);
      for (const [i, s] of steps.entries()) {
        if (s.apply) {
          for (const o of s.apply) applied.set(manifestKey(o), o);
          await this.apply(s.apply);
        }
        if (s.delete) {
          await this.delete(s.delete);
          for (const o of s.delete) applied.delete(manifestKey(o));
        }
        if (s.namespaces) await this.relabelNamespaces(s.namespaces);
        if (s.pods) await this.relabelPods(s.pods);
        const where = `${c.name}\nstep ${i + 1} of ${steps.length}${s.what ? ` (${s.what})` : ''}`;
        const before = s.reported && (await this.counters());
        const diff = await this.check(s.expect);
        if (diff) throw new Error(`${where}: ${diff}`);
        const traced = this.traced ? await this.checkTrace() : '';
        if (traced) throw new Error(`${where}: ${traced}`);
        if (s.reported) this.checkReported(where, s.reported, before!, await this.counters());
        await s.also?.(this);
      }
    } catch (e) {
      failure = e as Error;
    }
    // The next case starts from the bare topology, or says why it cannot.
    try {
      await this.delete([...applied.values()]);
      await this.restoreLabels();
    } catch (e) {
      if (!failure) throw e;
      failure.message += `\n(cleaning up after it failed too: ${(e as Error).message})`;
    }
    if (failure) throw failure;
  }

  /**
   * A UDP datagram to a port nothing listens on, from a connected socket: ok when the ICMP port
   * unreachable about it came back (the socket's ECONNREFUSED).
   */
  refused(from: Source, to: Destination, port = CLOSED_PORT): Promise<ProbeResult> {
    return this.peerOf(from, to).request({ op: 'refused', host: this.target(to, from), port, timeoutMs: RETRY_MS }).result;
  }

  /** Packets per `pod reason` (directions added up, every node's), from `kelp get counters -o json`. */
  async counters(): Promise<Map<string, bigint>> {
    const out = new Map<string, bigint>();
    for (const n of this.nodes) {
      const rows = JSON.parse(await kelpAsync(n.sb, ['get', 'counters', '-o', 'json'])) as Array<{ pod: string | null; reason: string; packets: string }>;
      for (const r of rows) if (r.pod) out.set(`${r.pod} ${r.reason}`, (out.get(`${r.pod} ${r.reason}`) ?? 0n) + BigInt(r.packets));
    }
    return out;
  }

  private checkReported(where: string, r: NonNullable<Step['reported']>, before: Map<string, bigint>, after: Map<string, bigint>): void {
    const delta = (pod: PodId, reason: string) => (after.get(`${pod} ${reason}`) ?? 0n) - (before.get(`${pod} ${reason}`) ?? 0n);
    const problems: string[] = [];
    for (const pod of r.pods) {
      const audit = delta(pod, REASON_AUDIT);
      const drop = delta(pod, REASON_POLICY_DENY);
      if (r.as === 'audit' && (audit <= 0n || drop !== 0n)) problems.push(`${pod}: ${audit} packets counted "${REASON_AUDIT}" and ${drop} "${REASON_POLICY_DENY}", expected some and none`);
      if (r.as === 'drop' && drop <= 0n) problems.push(`${pod}: no packet counted "${REASON_POLICY_DENY}"`);
    }
    if (problems.length > 0) throw new Error(`${where}: the counters do not report it:\n  ${problems.join('\n  ')}`);
  }

  /** Opens a connection that stays open (its first echo must come back). */
  async keep(from: Source, to: Destination, port: PortKey): Promise<KeptConnection> {
    const peer = this.peerOf(from, to);
    const { proto, port: n } = parsePort(port);
    const { id, result } = peer.request({ op: 'open', proto, host: this.target(to, from), port: n, timeoutMs: RETRY_MS });
    const r = await result;
    if (!r.ok) throw new Error(`kept connection ${from} -> ${to} ${port} did not open: ${r.error}`);
    return { from, to, port, peer, id };
  }

  /** One more echo over a kept connection. */
  send(c: KeptConnection, timeoutMs = RETRY_MS): Promise<ProbeResult> {
    return c.peer.request({ op: 'send', conn: c.id, timeoutMs }).result;
  }

  async close(c: KeptConnection): Promise<void> {
    await c.peer.request({ op: 'close', conn: c.id }).result;
  }
}

function writeManifests(sb: Sandbox, name: string, manifests: Manifest[]): string {
  const dir = path.join(sb.dir, 'policy-matrix', name);
  mkdirSync(dir, { recursive: true });
  manifests.forEach((m, i) => {
    const file = `${String(i).padStart(2, '0')}-${m.kind}-${m.metadata.namespace ?? ''}-${m.metadata.name}.json`;
    writeFileSync(path.join(dir, file), JSON.stringify(m, null, 2));
  });
  return dir;
}

/** `kelp ARGS` against the sandbox's agent: its stdout; throws with its stderr when it fails. */

