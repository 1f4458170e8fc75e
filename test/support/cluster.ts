// Several kelp nodes on one machine, for the multi-node tests (test/e2e/multinode*.test.ts) and
// the demo (issue 13). Each node is a Sandbox (src/sandbox: its own network namespace, agent,
// bpffs root, run, state and CNI dirs, log file) started without the Sandbox's outside; the
// nodes share an underlay instead: a bridge in a namespace of its own, one veth per node (`up0`
// in the node, 10.200.0.N/24, MTU 1500), and an optional outside host on the same bridge
// (10.200.0.254, every node's default route) that no pod CIDR is routed to, so what reaches it
// from a pod was masqueraded on the pod's node.
//
// Node N (1-based) is `<prefix>N-node` with pod CIDR 10.244.N.0/24; its agent runs with
// --node-name, --uplink=up0 and the routing mode. Two sources of objects:
//   kubernetes  every agent watches the one test API server (test/support/kube-apiserver, reached
//               through a bridge into each node's namespace); the harness writes the Node objects
//               (spec.podCIDRs, InternalIP) and, as a kubelet would, each Pod with spec.nodeName
//               before its CNI ADD and status.podIPs after it.
//   standalone  each node's manifest directory holds the Node manifests of every node and the Pod
//               manifests of every pod, written with `kelp apply --wait` on every agent.
// Everything is named from one prefix unique to the process and removed at stop(), also after a
// failed start; only processes the harness started are ended, by PID.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { objectKey } from '../../src/sources/objects';
import { Sandbox, SandboxPod, sh } from '../../src/sandbox';
import { RoutingMode, VXLAN_DEVICE } from '../../src/datapath/node-types';
import { e2ePrefix, kelpApplyWait, kelpAsync, until } from './kelp-cli';
import { startKubeApiServer, TestKubeApiServer } from './kube-apiserver';
import { Bridge, bridgeInto } from './kube-apiserver/bridge';
import { makeCgroup, Peer, removeCgroup, spawnPeer } from './services';

export type SourceMode = 'kubernetes' | 'standalone';

export const UNDERLAY_PREFIX = '10.200.0';
/** Every node's pod CIDR (10.244.N.0/24) lies in it: the cluster's pod network. */
export const POD_NETWORK = '10.244.0.0/16';
export const OUTSIDE_IP = `${UNDERLAY_PREFIX}.254`;
/** The node's underlay device (the agent's --uplink). */
export const UPLINK = 'up0';
/** The port each node's agent reaches the test API server on, inside its namespace. */
const NODE_API_PORT = 6443;

export type Labels = Record<string, string>;
export type Manifest = Record<string, unknown> & { kind: string; metadata: { name: string; namespace?: string; labels?: Labels } };

export interface ClusterOptions {
  /** ≤ 3 characters; the process's PID makes it unique (e2ePrefix). */
  tag: string;
  /** A fixed name prefix instead (≤ 5 characters; the demo's, whose names a reader follows). */
  prefix?: string;
  nodes: number;
  mode: RoutingMode;
  source: SourceMode;
  /** An outside host on the underlay, every node's default route (default true). */
  outside?: boolean;
  /** Socket LB for each node's own processes, on a cgroup made for that node (default false). */
  socketLb?: boolean;
  /** Extra flags for every agent. */
  agentArgs?: string[];
  logLevel?: string;
  /** Objects every node knows from the start (Namespaces…), besides the Nodes. */
  objects?: Manifest[];
}

export class ClusterNode {
  readonly pods: ClusterPod[] = [];
  /** The svc-peer of the node's own namespace (startPeers). */
  peer?: Peer;
  constructor(
    readonly index: number,
    readonly sb: Sandbox,
    readonly address: string,
    readonly podCidr: string,
    /** The cgroup its agent's socket LB attaches to (socketLb), which its peer joins. */
    readonly cgroup: string | undefined,
  ) {}

  get name(): string {
    return this.sb.node;
  }

  /** `kelp ARGS` against this node's agent (without blocking the event loop). */
  kelp(...args: string[]): Promise<string> {
    return kelpAsync(this.sb, args);
  }

  /** The kernel's route to exactly `cidr` in this node, if any. */
  route(cidr: string): { dst: string; dev?: string; gateway?: string } | undefined {
    const out = sh('ip', ['-n', this.name, '-j', '-4', 'route', 'show', 'exact', cidr]).trim();
    const routes = out ? (JSON.parse(out) as Array<{ dst: string; dev?: string; gateway?: string }>) : [];
    return routes[0];
  }

  /** kelp_tunnel4's entries as `kelp map dump` decodes them. */
  async tunnelEntries(): Promise<unknown[]> {
    return (JSON.parse(await this.kelp('map', 'dump', 'kelp_tunnel4', '-o', 'json')) as { entries: unknown[] }).entries;
  }
}

export interface ClusterPod {
  name: string;
  namespace: string;
  node: ClusterNode;
  labels: Labels;
  ip: string;
  netns: string;
  sandbox: SandboxPod;
  /** Its svc-peer (startPeers). */
  peer?: Peer;
}

export function nodeManifest(n: { name: string; address: string; podCidr: string }, labels: Labels = {}): Manifest {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: n.name, labels: { 'kubernetes.io/hostname': n.name, ...labels } },
    spec: { podCIDR: n.podCidr, podCIDRs: [n.podCidr] },
    status: { addresses: [{ type: 'InternalIP', address: n.address }, { type: 'Hostname', address: n.name }] },
  };
}

export interface PodSpec {
  name: string;
  namespace: string;
  labels?: Labels;
  /** Container ports (named ports for policies and Services). */
  ports?: Array<{ name: string; containerPort: number; protocol: 'TCP' | 'UDP' }>;
}

export function podManifest(p: PodSpec, node: string, ip?: string): Manifest {
  const m: Manifest = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: p.name, namespace: p.namespace, labels: p.labels ?? {} },
    spec: { nodeName: node, containers: [{ name: 'server', image: 'svc-peer', ...(p.ports ? { ports: p.ports } : {}) }] },
  };
  // As the kubelet reports it once the runtime's CNI ADD gave the pod its address.
  if (ip) m.status = { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] };
  return m;
}

/** The file `kelp apply` writes an object to in the manifest directory, so a later `kelp delete` removes what start() wrote. */
function manifestFile(o: Manifest): string {
  return `${objectKey(o).replace(/\//g, '_').replace(/__/g, '_')}.json`;
}

export class Cluster {
  readonly nodes: ClusterNode[] = [];
  readonly underlay: string;
  readonly outside?: string;
  api?: TestKubeApiServer;
  private readonly bridges: Bridge[] = [];
  private readonly netnses: string[] = [];
  private readonly cgroups: string[] = [];
  private changes = 0;
  private readonly dir: string;

  private constructor(
    readonly opts: ClusterOptions,
    readonly prefix: string,
  ) {
    this.underlay = `${prefix}-ul`;
    if (opts.outside !== false) this.outside = `${prefix}-out`;
    this.dir = path.join(tmpdir(), `kelp-cluster-${prefix}`);
  }

  get mode(): RoutingMode {
    return this.opts.mode;
  }

  /** The pod MTU the agents should choose: the underlay's 1500, less the VXLAN overhead in VXLAN mode. */
  get podMtu(): number {
    return this.opts.mode === 'vxlan' ? 1450 : 1500;
  }

  /** Underlay, outside, API server (Kubernetes), then the nodes one by one; on failure whatever was made is removed. */
  static async start(opts: ClusterOptions): Promise<Cluster> {
    const c = new Cluster(opts, opts.prefix ?? e2ePrefix(opts.tag));
    try {
      await c.build();
      return c;
    } catch (e) {
      await c.stop();
      throw e;
    }
  }

  private netns(name: string): void {
    sh('ip', ['netns', 'add', name]);
    this.netnses.push(name);
    sh('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  }

  private async build(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    this.netns(this.underlay);
    sh('ip', ['-n', this.underlay, 'link', 'add', 'br0', 'type', 'bridge']);
    sh('ip', ['-n', this.underlay, 'link', 'set', 'br0', 'up']);
    if (this.outside) {
      this.netns(this.outside);
      this.plug(this.outside, 'eth0', 'out', `${OUTSIDE_IP}/24`);
    }
    const specs = Array.from({ length: this.opts.nodes }, (_, i) => {
      const prefix = `${this.prefix}${i + 1}`;
      return { index: i + 1, prefix, name: `${prefix}-node`, address: `${UNDERLAY_PREFIX}.${i + 1}`, podCidr: `10.244.${i + 1}.0/24` };
    });
    const nodes = specs.map((s) => nodeManifest(s));
    let kubeconfig: string | undefined;
    if (this.opts.source === 'kubernetes') {
      this.api = await startKubeApiServer();
      for (const o of [...(this.opts.objects ?? []), ...nodes]) this.upsert(o);
      kubeconfig = path.join(this.api.dir, 'node-kubeconfig');
      writeFileSync(kubeconfig, readFileSync(this.api.kubeconfigPath, 'utf8').split(`127.0.0.1:${this.api.port}`).join(`127.0.0.1:${NODE_API_PORT}`));
    }
    for (const s of specs) {
      const cgroup = this.opts.socketLb ? makeCgroup(s.prefix) : undefined;
      if (cgroup) this.cgroups.push(cgroup);
      const sb = await Sandbox.start({
        prefix: s.prefix,
        podCidr: s.podCidr,
        outside: false,
        logLevel: this.opts.logLevel ?? 'debug',
        agentArgs: [
          `--routing-mode=${this.opts.mode}`,
          `--uplink=${UPLINK}`,
          ...(kubeconfig ? [`--kubeconfig=${kubeconfig}`] : []),
          ...(cgroup ? [`--cgroup-root=${cgroup}`] : []),
          ...(this.opts.agentArgs ?? []),
        ],
        beforeAgent: (sb) => {
          this.plug(sb.node, UPLINK, `n${s.index}`, `${s.address}/24`);
          if (this.outside) sh('ip', ['-n', sb.node, 'route', 'add', 'default', 'via', OUTSIDE_IP]);
          if (this.api) this.bridges.push(bridgeInto(`/var/run/netns/${sb.node}`, NODE_API_PORT, this.api.port));
          // Standalone: the agent reads every Node (and the shared objects) at its start, from
          // the files `kelp apply` would have written.
          else {
            mkdirSync(sb.manifests, { recursive: true });
            for (const o of [...(this.opts.objects ?? []), ...nodes]) writeFileSync(path.join(sb.manifests, manifestFile(o)), JSON.stringify(o, null, 2));
          }
        },
      });
      this.nodes.push(new ClusterNode(s.index, sb, s.address, s.podCidr, cgroup));
    }
  }

  /** A veth from namespace `ns` (`ifname`, with `cidr`) to the underlay bridge (`port` there). */
  private plug(ns: string, ifname: string, port: string, cidr: string): void {
    sh('ip', ['-n', ns, 'link', 'add', ifname, 'mtu', '1500', 'type', 'veth', 'peer', 'name', port, 'netns', this.underlay]);
    sh('ip', ['-n', this.underlay, 'link', 'set', port, 'master', 'br0', 'up']);
    sh('ip', ['-n', ns, 'addr', 'add', cidr, 'dev', ifname]);
    sh('ip', ['-n', ns, 'link', 'set', ifname, 'up']);
  }

  node(i: number): ClusterNode {
    const n = this.nodes.find((x) => x.index === i);
    if (!n) throw new Error(`no node ${i}`);
    return n;
  }

  get pods(): ClusterPod[] {
    return this.nodes.flatMap((n) => n.pods);
  }

  pod(namespace: string, name: string): ClusterPod {
    const p = this.pods.find((x) => x.namespace === namespace && x.name === name);
    if (!p) throw new Error(`no pod ${namespace}/${name}`);
    return p;
  }

  // -------------------------------------------------------------------------------------------
  // Objects.

  /** Kubernetes: create, or replace (status included) what is there. */
  private upsert(o: Manifest): void {
    const ref = { apiVersion: o.apiVersion as string, kind: o.kind, namespace: o.metadata.namespace, name: o.metadata.name };
    const objects = this.api!.objects;
    if (objects.get(ref)) objects.update(o as never);
    else objects.create(o as never);
  }

  /**
   * Writes objects to every node's source. Standalone: `kelp apply --wait` on every agent (or
   * those of `on`), so it returns once each has programmed them. Kubernetes: into the API
   * server; the agents catch up on their own (wait for what the change must show).
   */
  async apply(manifests: Manifest[], on: ClusterNode[] = this.nodes): Promise<void> {
    if (manifests.length === 0) return;
    if (this.api) {
      for (const o of manifests) this.upsert(o);
      return;
    }
    const dir = this.writeChange(manifests);
    await Promise.all(on.map((n) => kelpApplyWait(n.sb, dir, 'apply')));
  }

  async delete(manifests: Manifest[], on: ClusterNode[] = this.nodes): Promise<void> {
    if (manifests.length === 0) return;
    if (this.api) {
      for (const o of manifests) {
        const ref = { apiVersion: o.apiVersion as string, kind: o.kind, namespace: o.metadata.namespace, name: o.metadata.name };
        if (this.api.objects.get(ref)) this.api.objects.delete(ref);
      }
      return;
    }
    const dir = this.writeChange(manifests);
    await Promise.all(on.map((n) => kelpApplyWait(n.sb, dir, 'delete')));
  }

  private writeChange(manifests: Manifest[]): string {
    const dir = path.join(this.dir, `change-${++this.changes}`);
    mkdirSync(dir, { recursive: true });
    manifests.forEach((m, i) => writeFileSync(path.join(dir, `${String(i).padStart(3, '0')}-${m.kind}-${m.metadata.namespace ?? ''}-${m.metadata.name}.json`), JSON.stringify(m, null, 2)));
    return dir;
  }

  /** A node's Node object, as every node knows it. */
  nodeObject(n: ClusterNode): Manifest {
    return nodeManifest(n);
  }

  /**
   * The node gone from the cluster's objects: its Node object deleted (Kubernetes), or its Node
   * manifest deleted on every other node (standalone; its own agent keeps knowing itself).
   */
  async removeNode(n: ClusterNode): Promise<void> {
    await this.delete([nodeManifest(n)], this.nodes.filter((x) => x !== n));
  }

  async restoreNode(n: ClusterNode): Promise<void> {
    await this.apply([nodeManifest(n)], this.nodes.filter((x) => x !== n));
  }

  // -------------------------------------------------------------------------------------------
  // Pods.

  /**
   * Pods added as a cluster does it: the Pod objects (spec.nodeName) first, then the runtime's
   * CNI ADD on each pod's node (all at once), then the addresses in the objects' status.
   */
  async addPods(wanted: Array<PodSpec & { node: ClusterNode }>): Promise<ClusterPod[]> {
    await this.apply(wanted.map((w) => podManifest(w, w.node.name)));
    if (this.api) {
      // The node's agent takes the pod's labels from the Pod object at ADD: it must have it.
      for (const w of wanted) {
        await until(`${w.namespace}/${w.name} in ${w.node.name}'s store`, async () => (await this.podsKnown(w.node)).includes(`${w.namespace}/${w.name}`));
      }
    }
    const added = await Promise.all(
      wanted.map(async (w): Promise<ClusterPod> => {
        const sandbox = await w.node.sb.addPod(w.name, w.namespace);
        return { name: w.name, namespace: w.namespace, node: w.node, labels: w.labels ?? {}, ip: sandbox.ip, netns: sandbox.netns, sandbox };
      }),
    );
    for (const p of added) p.node.pods.push(p);
    await this.apply(wanted.map((w, i) => podManifest(w, w.node.name, added[i].ip)));
    return added;
  }

  /** `ns/name` of the pods an agent's store holds. */
  async podsKnown(n: ClusterNode): Promise<string[]> {
    const pods = JSON.parse(await n.kelp('get', 'pods', '-o', 'json')) as Array<{ namespace: string; name: string }>;
    return pods.map((p) => `${p.namespace}/${p.name}`);
  }

  /**
   * A svc-peer (test/fixtures/services/svc-peer.cjs: TCP 8080/8081, UDP 5353, answers with its
   * name and the client it saw) in every pod, every node (inside its socket-LB cgroup when it
   * has one) and the outside.
   */
  outsidePeer?: Peer;

  async startPeers(): Promise<void> {
    // Named by the pod's name alone (the answers say who answered): the tests that start peers give pods unique names.
    for (const p of this.pods) if (!p.peer) p.peer = spawnPeer(p.name, ['ip', 'netns', 'exec', p.netns]);
    for (const n of this.nodes) {
      if (n.peer) continue;
      n.peer = n.cgroup
        ? spawnPeer(n.name, ['sh', '-c', `echo $$ > ${n.cgroup}/cgroup.procs && exec ip netns exec ${n.name} "$@"`, 'sh'])
        : spawnPeer(n.name, ['ip', 'netns', 'exec', n.name]);
    }
    if (this.outside && !this.outsidePeer) this.outsidePeer = spawnPeer('outside', ['ip', 'netns', 'exec', this.outside]);
    const all = [...this.pods.map((p) => p.peer!), ...this.nodes.map((n) => n.peer!), ...(this.outsidePeer ? [this.outsidePeer] : [])];
    await Promise.all(all.map((p) => p.ready));
  }

  /**
   * What is wrong with `from`'s way to `to`'s pod CIDR, '' when it is as the routing mode says:
   * VXLAN, a route onto the kelp VXLAN device; native, a route via `to`'s underlay address.
   */
  routeProblem(from: ClusterNode, to: ClusterNode): string {
    const r = from.route(to.podCidr);
    const ok = r && (this.mode === 'vxlan' ? r.dev === VXLAN_DEVICE : r.gateway === to.address && r.dev === UPLINK);
    return ok ? '' : `${from.name}: route to ${to.name}'s ${to.podCidr}: expected ${this.mode === 'vxlan' ? `dev ${VXLAN_DEVICE}` : `via ${to.address} dev ${UPLINK}`}, got ${r ? JSON.stringify(r) : 'none'}`;
  }

  /** Every node routes every other node's pod CIDR as the mode says (the node reconcilers have run). */
  async meshed(ms = 30_000): Promise<void> {
    let problems: string[] = [];
    try {
      await until('every node to route every other node\'s pod CIDR', () => {
        problems = this.nodes.flatMap((a) => this.nodes.filter((b) => b !== a).map((b) => this.routeProblem(a, b))).filter((p) => p !== '');
        return problems.length === 0;
      }, ms);
    } catch (e) {
      throw new Error(`${(e as Error).message}:\n  ${problems.join('\n  ')}\n${this.logTails()}`);
    }
  }

  /** The agents' logs, last lines of each, for a failure message. */
  logTails(lines = 30): string {
    return this.nodes.map((n) => `--- ${n.name} (${n.sb.logFile}):\n${n.sb.agentLog().trimEnd().split('\n').slice(-lines).join('\n')}`).join('\n');
  }

  /** Peers, agents (by PID), namespaces, API server, cgroups, files. Safe after a failed start. */
  async stop(): Promise<void> {
    const peers = [...this.pods.map((p) => p.peer), ...this.nodes.map((n) => n.peer), this.outsidePeer].filter((p): p is Peer => p !== undefined);
    await Promise.all(peers.map((p) => p.stop()));
    for (const n of [...this.nodes].reverse()) await n.sb.stop().catch(() => undefined);
    for (const b of this.bridges) await b.close();
    await this.api?.stop();
    for (const ns of [...this.netnses].reverse()) sh('ip', ['netns', 'del', ns], { allowFail: true });
    for (const cg of this.cgroups) {
      try {
        removeCgroup(cg);
      } catch {
        // best effort: the rest must still go
      }
    }
    sh('rm', ['-rf', this.dir], { allowFail: true });
  }
}

/** Whether the built agent knows the multi-node flags yet (the demo's two-node part waits for it). */
export function agentKnowsRoutingMode(): boolean {
  return sh(process.execPath, [path.join(__dirname, '../../bin/kelp'), 'agent', '--help'], { allowFail: true }).includes('--routing-mode');
}
