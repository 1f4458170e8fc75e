// The world of the services suite (test/e2e/services.test.ts): one kelp node (a Sandbox) whose
// agent's socket-level load balancing is confined to a cgroup this suite creates, five pods in
// namespace `svc` added through the real kelp-cni and described by Pod manifests, and one
// svc-peer process (test/fixtures/services/svc-peer.cjs) in every pod, in the node's own
// namespace (inside that cgroup: a node-local client goes through socket LB) and in the outside
// namespace behind the node's uplink. Each peer serves TCP 8080 and 8081 and UDP 5353, answers
// each request with its name, the port it was asked on and the client it saw, and makes the
// probes from its namespace.
//
// Cases apply Service, EndpointSlice, Node and NetworkPolicy manifests with `kelp apply --wait`,
// ask from real clients, and compare the answers with what they expect, written by hand; every
// object a case applied is deleted after it, whether it passed or not.
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Sandbox } from '../../src/sandbox';
import { e2ePrefix, kelpApplyWait, kelpAsync } from './kelp-cli';
import { LinePeer } from './line-peer';

// ---------------------------------------------------------------------------------------------
// The topology, fixed: cases are written against these names, labels and ports.

export const NS = 'svc';
export const POD_NAMES = ['web-1', 'web-2', 'web-3', 'client-a', 'client-b'] as const;
export type PodName = (typeof POD_NAMES)[number];
export const WEB: PodName[] = ['web-1', 'web-2', 'web-3'];
/** Where a probe starts: a pod, the node's own namespace (through socket LB) or the outside. */
export type Client = PodName | 'node' | 'outside';

export const TCP_PORTS = [8080, 8081];
export const UDP_PORTS = [5353];
/** A TCP and a UDP port nothing listens on anywhere. */
export const CLOSED_PORT = 8099;

export type Labels = Record<string, string>;

/** Pod labels: `pod` names each, `app` groups the backends (web) and the two clients apart. */
export const POD_LABELS: Record<PodName, Labels> = {
  'web-1': { pod: 'web-1', app: 'web' },
  'web-2': { pod: 'web-2', app: 'web' },
  'web-3': { pod: 'web-3', app: 'web' },
  'client-a': { pod: 'client-a', app: 'client' },
  'client-b': { pod: 'client-b', app: 'other' },
};

type ContainerPort = { name: string; containerPort: number; protocol: 'TCP' | 'UDP' };

/** Named container ports: `http` is 8080 everywhere, `alt` is 8081 on web-1 and web-3 but 8080 on web-2. */
export const NAMED_PORTS: Record<PodName, ContainerPort[]> = {
  'web-1': [
    { name: 'http', containerPort: 8080, protocol: 'TCP' },
    { name: 'alt', containerPort: 8081, protocol: 'TCP' },
    { name: 'dns', containerPort: 5353, protocol: 'UDP' },
  ],
  'web-2': [
    { name: 'http', containerPort: 8080, protocol: 'TCP' },
    { name: 'alt', containerPort: 8080, protocol: 'TCP' },
    { name: 'dns', containerPort: 5353, protocol: 'UDP' },
  ],
  'web-3': [
    { name: 'http', containerPort: 8080, protocol: 'TCP' },
    { name: 'alt', containerPort: 8081, protocol: 'TCP' },
    { name: 'dns', containerPort: 5353, protocol: 'UDP' },
  ],
  'client-a': [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
  'client-b': [{ name: 'http', containerPort: 8080, protocol: 'TCP' }],
};

/** This node's zone (its Node manifest's topology.kubernetes.io/zone). */
export const ZONE = 'zone-a';
export const OTHER_ZONE = 'zone-b';
/** A node that does not exist here: its endpoints are not local. */
export const OTHER_NODE = 'elsewhere';
/** A second address of the outside namespace (a client loadBalancerSourceRanges does not allow). */
export const OUTSIDE_EXTRA_IP = '198.51.100.10';
/** Where externalIPs and load balancer ingress IPs live: the outside routes it to the node. */
export const EXTERNAL_NET = '203.0.113.0/24';

// ---------------------------------------------------------------------------------------------
// Manifests.

export type Manifest = Record<string, unknown> & { kind: string; metadata: { name: string; namespace?: string; labels?: Labels } };

export interface ServicePortSpec {
  name?: string;
  protocol?: 'TCP' | 'UDP';
  port: number;
  targetPort?: number | string;
  nodePort?: number;
}

/** A v1 Service in `svc`; `spec` as written in a manifest, `status` for load balancer ingress. */
export function service(name: string, spec: Record<string, unknown> & { ports: ServicePortSpec[] }, opts: { labels?: Labels; status?: Record<string, unknown> } = {}): Manifest {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: NS, ...(opts.labels ? { labels: opts.labels } : {}) },
    spec,
    ...(opts.status ? { status: opts.status } : {}),
  };
}

export interface EndpointSpec {
  pod: PodName;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  /** Default: this node. */
  nodeName?: string;
  zones?: string[];
  nodes?: string[];
}

/** One endpoint of an explicit slice (conditions written out, as the controller writes them). */
export function ep(pod: PodName, opts: Omit<EndpointSpec, 'pod'> = {}): EndpointSpec {
  return { pod, ...opts };
}

/** A discovery.k8s.io/v1 EndpointSlice of Service `svc`, with these ports and endpoints. */
export function slice(w: ServicesWorld, name: string, svc: string, ports: Array<{ name?: string; protocol?: 'TCP' | 'UDP'; port: number }>, endpoints: EndpointSpec[]): Manifest {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: NS, labels: { 'kubernetes.io/service-name': svc, 'endpointslice.kubernetes.io/managed-by': 'e2e.kelp.dev' } },
    addressType: 'IPv4',
    ports: ports.map((p) => ({ name: p.name ?? '', protocol: p.protocol ?? 'TCP', port: p.port })),
    endpoints: endpoints.map((e) => {
      const out: Record<string, unknown> = {
        addresses: [w.podIp(e.pod)],
        conditions: { ready: e.ready ?? true, serving: e.serving ?? e.ready ?? true, terminating: e.terminating ?? false },
        nodeName: e.nodeName ?? w.sb.node,
        targetRef: { kind: 'Pod', namespace: NS, name: e.pod },
      };
      if (e.zones || e.nodes) out.hints = { ...(e.zones ? { forZones: e.zones.map((z) => ({ name: z })) } : {}), ...(e.nodes ? { forNodes: e.nodes.map((n) => ({ name: n })) } : {}) };
      return out;
    }),
  };
}

/** networking.k8s.io/v1 NetworkPolicy in `svc`. */
export function networkPolicy(name: string, spec: Record<string, unknown>): Manifest {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace: NS }, spec };
}

function podManifest(pod: PodName, node: string, ip?: string, labels = POD_LABELS[pod]): Manifest {
  const m: Manifest = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: pod, namespace: NS, labels },
    spec: { nodeName: node, containers: [{ name: 'server', image: 'svc-peer', ports: NAMED_PORTS[pod] }] },
  };
  if (ip) m.status = { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] };
  return m;
}

function nodeManifest(sb: Sandbox): Manifest {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: sb.node, labels: { 'kubernetes.io/hostname': sb.node, 'topology.kubernetes.io/zone': ZONE } },
    spec: { podCIDR: sb.podCidr, podCIDRs: [sb.podCidr] },
    status: { addresses: [{ type: 'InternalIP', address: sb.nodeIp }, { type: 'Hostname', address: sb.node }] },
  };
}

/**
 * The node OTHER_NODE's endpoints claim to be on. The agent knows it (an endpoint on a node the
 * store does not know is no backend) but routes nothing to it: it has no address or pod CIDR.
 */
function otherNodeManifest(): Manifest {
  return { apiVersion: 'v1', kind: 'Node', metadata: { name: OTHER_NODE, labels: { 'kubernetes.io/hostname': OTHER_NODE, 'topology.kubernetes.io/zone': OTHER_ZONE } } };
}

const manifestKey = (o: Manifest) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;

// ---------------------------------------------------------------------------------------------
// Answers and what a case expects of them.

export interface Answer {
  /** The peer that answered (a pod's name, 'node' or 'outside'). */
  who: string;
  /** Its address and port as it saw them (`*:PORT` for UDP). */
  local: string;
  /** The client address and port it saw. */
  from: string;
}

export interface Reply {
  ok: boolean;
  ms: number;
  answer?: Answer;
  error?: string;
  events?: string[];
}

export interface Target {
  host: string;
  port: number;
  proto: 'tcp' | 'udp';
}

export const tcp = (host: string, port: number): Target => ({ host, port, proto: 'tcp' });
export const udp = (host: string, port: number): Target => ({ host, port, proto: 'udp' });

const targetText = (t: Target) => `${t.host}:${t.port}/${t.proto.toUpperCase()}`;
export const portOf = (a: Answer) => Number(a.local.split(':').pop());
/** `web-1:8080`: which backend answered, on which of its ports. */
export const backendOf = (a: Answer) => `${a.who}:${portOf(a)}`;
export const sourceOf = (a: Answer) => a.from.split(':')[0];

/** Each outcome and how often: `web-1:8080 ×12, timeout ×3`. */
export function tally(replies: Reply[], key: (a: Answer) => string = backendOf): string {
  const counts = new Map<string, number>();
  for (const r of replies) {
    const k = r.ok ? key(r.answer!) : `${r.error}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return [...counts].sort(([a], [b]) => a.localeCompare(b)).map(([k, n]) => `${k} ×${n}`).join(', ') || 'nothing';
}

/** A batch of probes from one client to one frontend, to judge. */
export interface Probed {
  from: Client;
  to: Target;
  /** What the frontend is, for the failure message ("svc/multi port http"). */
  what: string;
  replies: Reply[];
}

function header(p: Probed): string {
  return `${p.from} -> ${targetText(p.to)} (${p.what}), ${p.replies.length} new flow${p.replies.length === 1 ? '' : 's'}`;
}

/** Every flow answered, and the backends that answered are exactly `backends` (`pod:port`), each at least once. */
export function spreadProblem(p: Probed, backends: string[]): string {
  const seen = new Set(p.replies.filter((r) => r.ok).map((r) => backendOf(r.answer!)));
  const want = new Set(backends);
  const ok = p.replies.every((r) => r.ok) && seen.size === want.size && [...want].every((b) => seen.has(b));
  return ok ? '' : `${header(p)}: expected every flow answered, by each of {${[...want].sort().join(', ')}} and no other; got ${tally(p.replies)}`;
}

/** Every flow answered, by one backend of `backends` only (which one is not said). */
export function onlyProblem(p: Probed, backends: string[]): string {
  const ok = p.replies.every((r) => r.ok && backends.includes(backendOf(r.answer!)));
  return ok ? '' : `${header(p)}: expected every flow answered by one of {${backends.join(', ')}}; got ${tally(p.replies)}`;
}

/** Every flow answered by one and the same backend. */
export function sameProblem(p: Probed): string {
  const seen = new Set(p.replies.map((r) => (r.ok ? backendOf(r.answer!) : `${r.error}`)));
  return p.replies.every((r) => r.ok) && seen.size === 1 ? '' : `${header(p)}: expected every flow answered by the same backend; got ${tally(p.replies)}`;
}

/**
 * No flow answered: each failed with `error` (`ECONNREFUSED`: refused, `timeout`: dropped
 * silently), within `withinMs` when given.
 */
export function failProblem(p: Probed, error: string, withinMs?: number): string {
  const bad = p.replies.filter((r) => r.ok || r.error !== error || (withinMs !== undefined && r.ms >= withinMs));
  if (bad.length === 0) return '';
  const slowest = Math.max(...p.replies.map((r) => r.ms));
  return `${header(p)}: expected every flow to fail with ${error}${withinMs !== undefined ? ` within ${withinMs} ms` : ''}; got ${tally(p.replies)} (slowest ${slowest} ms)`;
}

/** No flow answered, whatever the reason (a VIP nobody programs, a client a range keeps out). */
export function unansweredProblem(p: Probed): string {
  return p.replies.some((r) => r.ok) ? `${header(p)}: expected no answer; got ${tally(p.replies)}` : '';
}

/** Every flow answered, and the backend saw the client as `source`. */
export function sourceProblem(p: Probed, source: string): string {
  const ok = p.replies.every((r) => r.ok && sourceOf(r.answer!) === source);
  return ok ? '' : `${header(p)}: expected every flow answered with the client seen as ${source}; got ${tally(p.replies, (a) => `${a.who} saw ${sourceOf(a)}`)}`;
}

/** Throws every problem at once, '' ones left out. */
export function expectNoProblems(...problems: string[]): void {
  const real = problems.filter((p) => p !== '');
  if (real.length > 0) throw new Error(`${real.length} problem${real.length === 1 ? '' : 's'}:\n  ${real.join('\n  ')}`);
}

// ---------------------------------------------------------------------------------------------
// Peers.

const PEER_SCRIPT = path.join(__dirname, '../fixtures/services/svc-peer.cjs');
/** Timeout of a probe expected to be answered (an answer returns at once). */
export const ANSWER_MS = 2000;
/** Timeout of a probe expected to fail: long enough that a slow answer would still arrive. */
export const FAIL_MS = 700;
/** Probes one peer has in flight at once. */
const IN_FLIGHT = 16;

interface PeerRequest {
  op: 'ask' | 'open' | 'send' | 'close' | 'listen' | 'unlisten';
  proto?: 'tcp' | 'udp';
  host?: string;
  port?: number;
  localAddress?: string;
  conn?: number;
  timeoutMs?: number;
  reconnect?: boolean;
}

export class Peer extends LinePeer<PeerRequest, Reply> {
  constructor(name: string, child: ChildProcess) {
    super(
      name,
      child,
      (error) => ({ ok: false, ms: 0, error }),
      (msg) => {
        const { id: _id, ...reply } = msg;
        return reply as unknown as Reply;
      },
    );
  }
}

/**
 * A svc-peer named `name` serving TCP_PORTS and UDP_PORTS, started under `wrapper` (`ip netns
 * exec NS`, or a shell that first joins a cgroup); the multi-node harness runs the same peers.
 */
export function spawnPeer(name: string, wrapper: string[]): Peer {
  const args = [...wrapper, process.execPath, PEER_SCRIPT, name, TCP_PORTS.join(','), UDP_PORTS.join(',')];
  return new Peer(name, spawn(args[0], args.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] }));
}

/** A connection kept open across steps (a long-lived TCP flow, a DNS-like UDP client). */
export interface Kept {
  from: Client;
  to: Target;
  id: number;
  /** The answer it got when it opened. */
  first: Answer;
}

// ---------------------------------------------------------------------------------------------
// The cgroup socket LB is confined to.

/**
 * A fresh cgroup v2 directory for the agent's socket hooks. The agent runs under `ip netns exec`,
 * which mounts a new sysfs on /sys and so hides /sys/fs/cgroup/unified from it: the suite mounts
 * the cgroup2 hierarchy once more on a directory of its own (the same hierarchy, so the same
 * cgroup as /sys/fs/cgroup/unified/<name>) and creates its cgroup there.
 */
export function makeCgroup(prefix: string): string {
  const mount = mkdtempSync(path.join(tmpdir(), `kelp-${prefix}-cgroup2-`));
  try {
    execFileSync('mount', ['-t', 'cgroup2', 'cgroup2', mount]);
  } catch (e) {
    rmdirSync(mount);
    throw e;
  }
  const cgroup = path.join(mount, `kelp-e2e-${prefix}`);
  mkdirSync(cgroup);
  return cgroup;
}

/** Removes the suite's cgroup once its processes have left, then its mount; never a hierarchy's root. */
export function removeCgroup(cgroup: string): void {
  const mount = path.dirname(cgroup);
  if (!path.basename(cgroup).startsWith('kelp-e2e-') || !path.basename(mount).startsWith('kelp-')) return;
  for (let i = 0; i < 50 && existsSync(cgroup); i++) {
    try {
      rmdirSync(cgroup);
    } catch {
      // EBUSY while an exiting process is still a member
      execFileSync('sleep', ['0.05']);
    }
  }
  execFileSync('umount', ['-l', mount], { stdio: 'ignore' });
  rmdirSync(mount);
}

// ---------------------------------------------------------------------------------------------
// The running world.

export class ServicesWorld {
  private readonly peers = new Map<Client, Peer>();
  private readonly ips = new Map<PodName, string>();
  /** Pods a case relabelled: `run` puts their labels back. */
  private readonly relabelled = new Set<PodName>();
  private applies = 0;

  private constructor(
    readonly sb: Sandbox,
    /** The cgroup (v2) the agent's socket hooks attach to; the node's peer runs in it. */
    readonly cgroup: string,
  ) {}

  /**
   * The node with its agent (socket LB, on by default, confined to a fresh cgroup), the pods and
   * their Pod objects, the Node object, and a peer everywhere.
   * Stops whatever it made on failure.
   */
  static async start(tag: string, opts: { agentArgs?: string[] } = {}): Promise<ServicesWorld> {
    const prefix = e2ePrefix(tag);
    const cgroup = makeCgroup(prefix);
    let sb: Sandbox | undefined;
    let w: ServicesWorld | undefined;
    try {
      // opts.agentArgs: more agent flags (e.g. --socket-lb=off: the node's clients then go per packet).
      sb = await Sandbox.start({ prefix, logLevel: 'debug', agentArgs: [`--cgroup-root=${cgroup}`, ...(opts.agentArgs ?? [])] });
      w = new ServicesWorld(sb, cgroup);
      const out = sb.outside!;
      sb.exec(out, 'ip', ['addr', 'add', `${OUTSIDE_EXTRA_IP}/32`, 'dev', 'eth0']);
      sb.exec(out, 'ip', ['route', 'add', EXTERNAL_NET, 'via', sb.nodeIp]);
      const setup = [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } } as Manifest, nodeManifest(sb), otherNodeManifest(), ...POD_NAMES.map((p) => podManifest(p, sb!.node))];
      await w.apply(setup);
      // As in a cluster: the Pod object first, then the runtime's CNI ADD, then its address in status.
      for (const p of POD_NAMES) w.ips.set(p, (await sb.addPod(p, NS)).ip);
      await w.apply(POD_NAMES.map((p) => podManifest(p, sb!.node, w!.podIp(p))));
      // Every real server's ICMP error must come back, however many a case provokes (the kernel
      // limits them per destination: 1 s, burst 6). Only the pods' and the outside's own setting.
      for (const ns of [...POD_NAMES.map((p) => sb!.pods.get(`${NS}/${p}`)!.netns), out]) sb.exec(ns, 'sysctl', ['-qw', 'net.ipv4.icmp_ratelimit=0']);
      for (const p of POD_NAMES) w.startPeer(p, ['ip', 'netns', 'exec', sb.pods.get(`${NS}/${p}`)!.netns]);
      w.startPeer('outside', ['ip', 'netns', 'exec', out]);
      // The node's client joins the cgroup before it execs: every socket it opens is under the hooks.
      w.startPeer('node', ['sh', '-c', `echo $$ > ${cgroup}/cgroup.procs && exec ip netns exec ${sb.node} "$@"`, 'sh']);
      await Promise.all([...w.peers.values()].map((p) => p.ready));
      return w;
    } catch (e) {
      if (w) await w.stop();
      else {
        await sb?.stop();
        removeCgroup(cgroup);
      }
      throw e;
    }
  }

  private startPeer(name: Client, wrapper: string[]): void {
    this.peers.set(name, spawnPeer(name, wrapper));
  }

  async stop(): Promise<void> {
    await Promise.all([...this.peers.values()].map((p) => p.stop()));
    await this.sb.stop();
    removeCgroup(this.cgroup);
  }

  podIp(pod: PodName): string {
    const ip = this.ips.get(pod);
    if (!ip) throw new Error(`pod ${pod} has no address yet`);
    return ip;
  }

  /** The PID of a peer's process (its `ip netns exec` or `sh` wrapper execs into it). */
  peerPid(c: Client): number {
    return this.peers.get(c)!.child.pid!;
  }

  /** `kelp apply -f DIR --wait`: resolves once the agent has programmed the change. */
  async apply(manifests: Manifest[]): Promise<void> {
    if (manifests.length > 0) await kelpApplyWait(this.sb, this.writeManifests(manifests), 'apply');
  }

  async delete(manifests: Manifest[]): Promise<void> {
    if (manifests.length > 0) await kelpApplyWait(this.sb, this.writeManifests(manifests), 'delete');
  }

  private writeManifests(manifests: Manifest[]): string {
    const dir = path.join(this.sb.dir, 'services-e2e', `change-${++this.applies}`);
    mkdirSync(dir, { recursive: true });
    manifests.forEach((m, i) => writeFileSync(path.join(dir, `${String(i).padStart(2, '0')}-${m.kind}-${m.metadata.name}.json`), JSON.stringify(m, null, 2)));
    return dir;
  }

  /** Replaces a pod's labels (its Pod object re-applied, address kept) until the case ends. */
  async relabel(pod: PodName, labels: Labels): Promise<void> {
    this.relabelled.add(pod);
    await this.apply([podManifest(pod, this.sb.node, this.podIp(pod), labels)]);
  }

  /** `n` new flows (each its own socket, so its own source port) from `from` to `to`, at most IN_FLIGHT at once. */
  async ask(from: Client, to: Target, what: string, n = 1, opts: { timeoutMs?: number; localAddress?: string } = {}): Promise<Probed> {
    const peer = this.peers.get(from)!;
    const replies: Reply[] = new Array(n);
    let i = 0;
    const worker = async () => {
      while (i < n) {
        const k = i++;
        replies[k] = await peer.request({ op: 'ask', ...to, timeoutMs: opts.timeoutMs ?? ANSWER_MS, localAddress: opts.localAddress }).result;
      }
    };
    await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, n) }, worker));
    return { from, to, what, replies };
  }

  /** Opens a connection that stays open; throws when its first request is not answered. */
  async keep(from: Client, to: Target, what: string): Promise<Kept> {
    const { kept, problem } = await this.keepUntil(from, to, what, () => true, 'at all', 1);
    if (!kept) throw new Error(problem);
    return kept;
  }

  /**
   * Opens kept connections until one's first answer is what `want` accepts (`wanted` says it in
   * words), at most `tries`, stopping at the first that fails to open. Every connection opened
   * is in `opened`, for the caller to close; `problem` says why none was kept.
   */
  async keepUntil(from: Client, to: Target, what: string, want: (a: Answer) => boolean, wanted: string, tries = 30): Promise<{ kept?: Kept; opened: Kept[]; problem: string }> {
    const opened: Kept[] = [];
    const replies: Reply[] = [];
    for (let i = 0; i < tries; i++) {
      const { id, result } = this.peers.get(from)!.request({ op: 'open', ...to, timeoutMs: ANSWER_MS });
      const r = await result;
      replies.push(r);
      const k: Kept = { from, to, id, first: r.answer! };
      opened.push(k);
      if (r.ok && want(r.answer!)) return { kept: k, opened, problem: '' };
      if (!r.ok) break;
    }
    return { opened, problem: `${from} -> ${targetText(to)} (${what}): no kept connection ${wanted} in ${replies.length} tr${replies.length === 1 ? 'y' : 'ies'}; got ${tally(replies)}` };
  }

  /** One more request on a kept connection (`reconnect`: as a DNS-like client, see svc-peer.cjs). */
  send(k: Kept, opts: { timeoutMs?: number; reconnect?: boolean } = {}): Promise<Reply> {
    return this.peers.get(k.from)!.request({ op: 'send', conn: k.id, timeoutMs: opts.timeoutMs ?? ANSWER_MS, reconnect: opts.reconnect }).result;
  }

  async close(k: Kept): Promise<void> {
    await this.peers.get(k.from)!.request({ op: 'close', conn: k.id }).result;
  }

  /** Stops (or starts again) one server of a peer. */
  async server(c: Client, op: 'listen' | 'unlisten', proto: 'tcp' | 'udp', port: number): Promise<void> {
    const r = await this.peers.get(c)!.request({ op, proto, port }).result;
    if (!r.ok) throw new Error(`${c}: ${op} ${proto}/${port}: ${r.error}`);
  }

  /** `kelp ARGS` against this node's agent: its stdout. */
  kelp(...args: string[]): Promise<string> {
    return kelpAsync(this.sb, args);
  }

  /**
   * Runs one case: `body` applies through `apply` (every object recorded) and asserts; whatever
   * it applied is deleted afterwards and relabelled pods get their labels back, whether it passed
   * or not.
   */
  async run(body: (apply: (m: Manifest[]) => Promise<void>, remove: (m: Manifest[]) => Promise<void>) => Promise<void>): Promise<void> {
    const applied = new Map<string, Manifest>();
    let failure: Error | undefined;
    try {
      await body(
        async (ms) => {
          for (const m of ms) applied.set(manifestKey(m), m);
          await this.apply(ms);
        },
        async (ms) => {
          await this.delete(ms);
          for (const m of ms) applied.delete(manifestKey(m));
        },
      );
    } catch (e) {
      failure = e as Error;
      // What the agent thinks it programmed, for whoever reads the failure.
      const listed = await this.kelp('get', 'services').catch((err: Error) => err.message);
      failure.message += `\n\nkelp get services at the failure:\n${listed.trimEnd().split('\n').slice(0, 40).join('\n')}`;
    }
    try {
      await this.delete([...applied.values()]);
      const pods = [...this.relabelled];
      this.relabelled.clear();
      await this.apply(pods.map((p) => podManifest(p, this.sb.node, this.podIp(p))));
    } catch (e) {
      if (!failure) throw e;
      failure.message += `\n(cleaning up after it failed too: ${(e as Error).message})`;
    }
    if (failure) throw failure;
  }

}


