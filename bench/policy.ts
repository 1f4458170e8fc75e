// Figure 7: policy, on one standalone kelp node (a node netns with its agent) holding the Pod
// objects and NetworkPolicies of a busy node (1,000 and 1,000 by default):
//   - apply → enforced: one NetworkPolicy applied again and again, each time newly denying or
//     again allowing UDP from one real pod to another, timed from just before the request
//     `kelp apply` makes (POST /v1/objects; and, a few times a round, from the spawn of the
//     `kelp apply -f F --wait` process itself) until the first probe that meets the new verdict.
//     The probes (build/bench/probe) go every ms on two streams: "new flows" (each probe from its
//     own source port, so a new flow for conntrack) and "live flow" (one socket throughout: an
//     established flow, which only a revocation reaches). The `--wait` answer (GET
//     /v1/programmed for the apply's revision) is timed alongside;
//   - TCP_RR and TCP_CRR between two pods that 100 NetworkPolicies select (200 rules, one of them
//     allowing the test's port), against two pods of a second node without any policy object,
//     and two pods of the same node that no policy selects, in turns (build/bench/rr);
//   - ready → reachable: from the start of CNI ADD of a pod an allow policy selects (its Pod
//     object applied first, without addresses, as the API server has it before the kubelet's
//     status update) until the first probe reaches it;
//   - map memory: entries of kelp_policy4 and kelp_ipcache4 (`kelp status`) and their kernel
//     memlock (bpftool on their pins), per endpoint, per rule and per pod.
// A change the datapath never shows is reported as not enforced after a bounded wait.
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { requestJson } from '../src/cli/client';
import { findMapPins } from '../src/datapath/maps/pins';
import { KELP_BIN, Sandbox, SandboxPod, sh } from '../src/sandbox';
import { applyObjects, Obj, programmed } from './lib/agent-api';
import { defer, throwIfInterrupted } from './lib/cleanup';
import { BenchConfig, rotate } from './lib/config';
import { run } from './lib/exec';
import { Figure, HeadlineRow, spreadText } from './lib/figure';
import { startKelpNode } from './lib/kelp-node';
import { NETNS_DIR, NetnsSet } from './lib/netns';
import { nowNs, Prober } from './lib/prober';
import { progress, sleep } from './lib/progress';
import { RR_PORT, RrPair, rrRates } from './lib/rr';
import { median, num, quantile, ratio, spread } from './lib/stats';
import { kelpTarget } from './lib/targets';
import { benchTool } from './lib/tools';

export function policyVariant(cfg: BenchConfig): string {
  return `kelp, ${cfg.policyPods.toLocaleString('en')} pods + ${cfg.policyPolicies.toLocaleString('en')} policies`;
}
export const SELECTED = '100 policies select both pods';
export const NO_POLICY = 'no policy (second node)';
export const UNSELECTED = 'pods no policy selects (same node)';

export const ENF_P50 = 'apply → enforced p50, new flows';
export const ENF_P99 = 'apply → enforced p99, new flows';
export const LIVE_P50 = 'apply → enforced p50, live flow';
export const LIVE_P99 = 'apply → enforced p99, live flow';
export const WAIT_P50 = 'apply → --wait answer (programmed) p50';
export const WAIT_P99 = 'apply → --wait answer (programmed) p99';
export const POST_P50 = 'apply → POST /v1/objects answered p50';
export const RUN_P50 = "the agent's policy run (compile + map update, its own timing) p50";
export const CLI_ENF_P50 = '`kelp apply --wait` spawn → enforced p50, new flows';
export const CLI_WAIT_P50 = '`kelp apply --wait` process, spawn → exit p50';
export const RR = 'TCP_RR';
export const CRR = 'TCP_CRR';
export const READY_P50 = 'ADD start → first allowed packet p50';
export const READY_P99 = 'ADD start → first allowed packet p99';
export const ADD_P50 = 'of which: CNI ADD p50';
export const POLICY4_PER_RULE = 'kelp_policy4 memlock per rule';
export const POLICY4_PER_EP = 'kelp_policy4 memlock per local endpoint';
export const IPCACHE_PER_POD = 'kelp_ipcache4 memlock per pod';

const POLICY4 = 'kelp_policy4';
const IPCACHE4 = 'kelp_ipcache4';
/** The cluster's figures from their own publications, quoted in the report, not measured here. */
const CILIUM_REFERENCE = 'Cilium ~600 ms; upstream perf tests 670–730 ms (quoted, not measured)';

const PROBE_NS = 'bench-probe';
const RR_NS = 'bench-rr';
/** kelpTarget's CNI_ARGS put every pod it makes in this namespace, named by its container id. */
const READY_NS = 'bench';
const TEAMS = 20;
const REMOTE_NODES = 10;
const APPS = ['web', 'api', 'cart', 'checkout', 'payments', 'search', 'auth', 'catalog', 'cache', 'worker'];
const POD_CIDR = '10.253.0.0/20';
const SECOND_NODE_CIDR = '10.253.64.0/24';
/** Probes go to this port; the policy toggles between allowing it and allowing DENIED_PORT only. */
const PROBE_PORT = 9999;
const DENIED_PORT = 9998;
const PROBE_INTERVAL_US = 1000;
/** A change not seen by the probes within this is reported as not enforced. */
const ENFORCE_TIMEOUT_MS = 3000;
/** The live flow is waited for this much longer than the new flows before it counts as not revoked. */
const LIVE_EXTRA_MS = 1000;
/** Probes in a row that must stay lost before a deny is taken as enforced. */
const QUIET = 20;
/** Failures in a row after which a stream is no longer waited for in this run. */
const GIVE_UP = 3;
const READY_TIMEOUT_MS = 3000;
/** Prober streams and listeners. */
const FRESH = 1;
const LIVE = 2;
const SERVER = 100;
const READY_LISTENER = 200;
const READY_STREAM = 201;

type Verdict = 'deny' | 'allow';

// ---- the node's objects ---------------------------------------------------------------------

const team = (i: number) => `team-${(i % TEAMS).toString().padStart(2, '0')}`;
/**
 * The team namespaces, and one share for the ready pods' namespace: those policies select the
 * node's real pods made there (the rest select objects only), so kelp_policy4 grows with them.
 */
const policyNamespace = (i: number) => (i % (TEAMS + 1) === TEAMS ? READY_NS : team(i));
/** The labels of the i-th pod of a namespace, as background policies select them. */
const appLabels = (i: number) => ({ app: APPS[i % APPS.length], tier: ['frontend', 'backend', 'data'][i % 3], version: `v${1 + (i % 3)}` });
const matchLabels = (labels: Record<string, string>) => ({ matchLabels: labels });

function namespace(name: string, labels: Record<string, string> = {}): Obj {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

function podObject(name: string, ns: string, labels: Record<string, string>, node: string, ip?: string): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels },
    spec: {
      nodeName: node,
      containers: [
        {
          name: 'app',
          ports: [
            { name: 'http', containerPort: 8080, protocol: 'TCP' },
            { name: 'metrics', containerPort: 9090, protocol: 'TCP' },
          ],
        },
      ],
    },
    ...(ip ? { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] } } : {}),
  };
}

function networkPolicy(name: string, ns: string, spec: Obj): Obj {
  return { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name, namespace: ns }, spec };
}

/** The address of the i-th address of `cidr` (IPv4). */
function nthAddress(cidr: string, i: number): string {
  const [base] = cidr.split('/');
  const n = (base.split('.').reduce((a, o) => a * 256 + Number(o), 0) + i) >>> 0;
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/**
 * `count` pods that exist only as objects: half on this node (addresses from the upper half of
 * its pod CIDR, which IPAM reaches only after 2,048 pods), half on REMOTE_NODES other nodes.
 */
function backgroundPods(count: number, node: string): Obj[] {
  const out: Obj[] = [];
  for (let i = 0; i < count; i++) {
    const labels = appLabels(i);
    const app = labels.app;
    const j = i >> 1;
    const remote = i % 2 === 1;
    const ip = remote ? `10.254.${j % REMOTE_NODES}.${2 + Math.floor(j / REMOTE_NODES)}` : nthAddress(POD_CIDR, 2048 + j);
    out.push(podObject(`${app}-${i.toString(36).padStart(4, '0')}`, team(i), labels, remote ? `bench-worker-${j % REMOTE_NODES}` : node, ip));
  }
  return out;
}

function remoteNodes(): Obj[] {
  return Array.from({ length: REMOTE_NODES }, (_, k) => ({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: `bench-worker-${k}`, labels: { 'kubernetes.io/hostname': `bench-worker-${k}` } },
    spec: { podCIDR: `10.254.${k}.0/24`, podCIDRs: [`10.254.${k}.0/24`] },
    status: { addresses: [{ type: 'InternalIP', address: `192.168.251.${10 + k}` }] },
  }));
}

/** The policies of the team namespaces, in six shapes: selectors, namespaces, ranges, ipBlocks, named ports, egress. */
function backgroundPolicies(count: number): Obj[] {
  const out: Obj[] = [];
  for (let i = 0; i < count; i++) {
    const a = APPS[i % APPS.length];
    const b = APPS[(i * 7 + 3) % APPS.length];
    const k = i % REMOTE_NODES;
    const name = `np-${i.toString().padStart(4, '0')}`;
    let spec: Obj;
    switch (i % 6) {
      case 0:
        spec = { podSelector: matchLabels({ app: a }), ingress: [{ from: [{ podSelector: matchLabels({ app: b }) }], ports: [{ protocol: 'TCP', port: 8080 }] }] };
        break;
      case 1:
        spec = {
          podSelector: matchLabels({ app: a }),
          ingress: [{ from: [{ namespaceSelector: matchLabels({ team: `t${(i * 3) % TEAMS}` }) }], ports: [{ protocol: 'TCP', port: 9000, endPort: 9000 + (i % 200) }] }],
        };
        break;
      case 2:
        spec = {
          podSelector: matchLabels({ tier: 'backend' }),
          ingress: [{ from: [{ ipBlock: { cidr: `10.254.${k}.0/24`, except: [`10.254.${k}.128/25`] } }], ports: [{ protocol: 'UDP', port: 53 + (i % 100) }] }],
        };
        break;
      case 3:
        spec = {
          podSelector: matchLabels({ app: a }),
          policyTypes: ['Egress'],
          egress: [{ to: [{ namespaceSelector: matchLabels({ env: 'prod' }), podSelector: matchLabels({ app: b }) }], ports: [{ protocol: 'TCP', port: 'http' }] }],
        };
        break;
      case 4:
        spec = {
          podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: [a, b] }] },
          ingress: [
            {
              from: [{ podSelector: matchLabels({ version: `v${1 + (i % 3)}` }), namespaceSelector: { matchExpressions: [{ key: 'team', operator: 'In', values: [`t${i % TEAMS}`, `t${(i + 1) % TEAMS}`] }] } }],
              ports: [{ protocol: 'TCP', port: 'metrics' }],
            },
          ],
        };
        break;
      default:
        spec = {
          podSelector: matchLabels({ app: a, tier: ['frontend', 'backend', 'data'][i % 3] }),
          policyTypes: ['Ingress', 'Egress'],
          ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.253.0.0/16'] } }, { podSelector: {} }], ports: [{ protocol: 'TCP', port: 443 }] }],
          egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/0' } }], ports: [{ protocol: 'UDP', port: 53 }] }],
        };
    }
    out.push(networkPolicy(name, policyNamespace(i), spec));
  }
  return out;
}

/**
 * 100 policies selecting the two TCP_RR pods, an ingress and an egress rule each (various
 * peers and ports); the first allows the test's own port both ways.
 */
function rrPolicies(): Obj[] {
  const selected = matchLabels({ 'bench-rr': 'selected' });
  const out: Obj[] = [];
  for (let i = 0; i < 100; i++) {
    const peers = [
      { podSelector: matchLabels({ app: APPS[i % APPS.length] }), namespaceSelector: {} },
      { namespaceSelector: matchLabels({ team: `t${i % TEAMS}` }) },
      { ipBlock: { cidr: `10.254.${i % REMOTE_NODES}.0/24` } },
      { podSelector: selected },
    ];
    const peer = i === 0 ? { podSelector: selected } : peers[i % peers.length];
    const port = (base: number) =>
      i === 0 ? { protocol: 'TCP', port: RR_PORT } : i % 3 === 0 ? { protocol: 'UDP', port: base + i } : i % 3 === 1 ? { protocol: 'TCP', port: base + i } : { protocol: 'TCP', port: base + 10 * i, endPort: base + 10 * i + 9 };
    out.push(
      networkPolicy(`rr-${i.toString().padStart(3, '0')}`, RR_NS, {
        podSelector: selected,
        policyTypes: ['Ingress', 'Egress'],
        ingress: [{ from: [peer], ports: [port(10000)] }],
        egress: [{ to: [peer], ports: [port(20000)] }],
      }),
    );
  }
  return out;
}

/**
 * The changes alternate, a deny and its allow each, between two policies of the probe server:
 *   np   the NetworkPolicy that is its only ingress allow: UDP PROBE_PORT from the probe client,
 *        or DENIED_PORT only;
 *   knp  a KelpNetworkPolicy with one Deny rule: UDP PROBE_PORT from the probe client, or
 *        DENIED_PORT (the NetworkPolicy's allow then holds again);
 *   cnp  an Admin-tier ClusterNetworkPolicy with one Deny rule, the same way.
 */
type ChangeKind = 'np' | 'knp' | 'cnp';
const CHANGE_KINDS: readonly ChangeKind[] = ['np', 'knp', 'cnp'];
const KIND_NAME: Record<ChangeKind, string> = { np: 'NetworkPolicy allow', knp: 'KelpNetworkPolicy Deny', cnp: 'ClusterNetworkPolicy (Admin) Deny' };

function changedPolicy(kind: ChangeKind, verdict: Verdict): Obj {
  return kind === 'np' ? probePolicy(verdict) : kind === 'knp' ? probeDeny(verdict) : probeAdminDeny(verdict);
}

/** The Deny rule both deny kinds carry: UDP PROBE_PORT from the probe client to deny, DENIED_PORT to allow again. */
function denyRule(verdict: Verdict): Obj {
  return {
    name: 'no-probes',
    action: 'Deny',
    from: [{ pods: { namespaceSelector: {}, podSelector: matchLabels({ role: 'probe-client' }) } }],
    protocols: [{ udp: { destinationPort: { number: verdict === 'deny' ? PROBE_PORT : DENIED_PORT } } }],
  };
}

function probeAdminDeny(verdict: Verdict): Obj {
  return {
    apiVersion: 'policy.networking.k8s.io/v1alpha2',
    kind: 'ClusterNetworkPolicy',
    metadata: { name: 'bench-probe-deny' },
    spec: {
      tier: 'Admin',
      priority: 10,
      subject: { pods: { namespaceSelector: matchLabels({ 'kubernetes.io/metadata.name': PROBE_NS }), podSelector: matchLabels({ role: 'probe-server' }) } },
      ingress: [denyRule(verdict)],
    },
  };
}

function probeDeny(verdict: Verdict): Obj {
  return {
    apiVersion: 'policy.kelp.dev/v1alpha1',
    kind: 'KelpNetworkPolicy',
    metadata: { name: 'probe-deny', namespace: PROBE_NS },
    spec: {
      subject: { podSelector: matchLabels({ role: 'probe-server' }) },
      ingress: [denyRule(verdict)],
    },
  };
}

function probePolicy(verdict: Verdict): Obj {
  return networkPolicy('probe-allow', PROBE_NS, {
    podSelector: matchLabels({ role: 'probe-server' }),
    ingress: [{ from: [{ podSelector: matchLabels({ role: 'probe-client' }) }], ports: [{ protocol: 'UDP', port: verdict === 'allow' ? PROBE_PORT : DENIED_PORT }] }],
  });
}

function readyPolicy(): Obj {
  return networkPolicy('ready-allow', READY_NS, {
    podSelector: matchLabels({ role: 'ready' }),
    ingress: [{ from: [{ namespaceSelector: matchLabels({ 'kubernetes.io/metadata.name': PROBE_NS }), podSelector: matchLabels({ role: 'probe-client' }) }], ports: [{ protocol: 'UDP', port: PROBE_PORT }] }],
  });
}

function ruleCount(policies: Obj[]): number {
  return policies.reduce((n, p) => {
    const spec = p.spec as { ingress?: unknown[]; egress?: unknown[] };
    // KelpNetworkPolicy rules have the same two lists.
    return n + (spec.ingress?.length ?? 0) + (spec.egress?.length ?? 0);
  }, 0);
}

// ---- the agent ------------------------------------------------------------------------------

interface MapRow {
  name: string;
  entries: number;
  maxEntries: number;
}

interface Status {
  endpoints: number;
  maps: MapRow[];
  /** The policy reconciler's last run, as the agent timed it (compile and map update). */
  policy?: { lastRun: { ms: number } | null } | null;
}

async function applyAndWait(sb: Sandbox, objects: Obj[], what: string): Promise<void> {
  const t0 = Date.now();
  const rev = await applyObjects(sb.socketPath, objects);
  const posted = Date.now();
  if (!(await programmed(sb.socketPath, rev, 120_000))) throw new Error(`${what}: revision ${rev} not programmed within 120 s`);
  progress(`policy: ${what} applied in ${posted - t0} ms, programmed ${Date.now() - posted} ms later (revision ${rev})`);
}

// ---- map memory -----------------------------------------------------------------------------

interface MapMemory {
  entries?: number;
  maxEntries?: number;
  memlock?: number;
}

interface MemorySnapshot {
  label: string;
  endpoints: number;
  maps: Record<string, MapMemory>;
}

/** Directories under the node's bpffs, its root first. */
function bpfDirs(root: string, depth = 3): string[] {
  const out = [root];
  if (depth === 0) return out;
  for (const e of readdirSync(root)) {
    const p = path.join(root, e);
    if (statSync(p).isDirectory()) out.push(...bpfDirs(p, depth - 1));
  }
  return out;
}

/** The kernel's memlock of a map (bytes_memlock: its memory use, as the kernel accounts it). */
function memlockOf(pin: string): number | undefined {
  const info = JSON.parse(sh('bpftool', ['map', 'show', 'pinned', pin, '-j'], { allowFail: true }) || '{}') as { bytes_memlock?: number };
  return info.bytes_memlock;
}

async function memory(sb: Sandbox, label: string): Promise<MemorySnapshot> {
  const st = await requestJson<Status>(sb.socketPath, 'GET', '/v1/status');
  const dirs = bpfDirs(sb.bpfRoot);
  const maps: Record<string, MapMemory> = {};
  for (const name of [POLICY4, IPCACHE4]) {
    const row = st.maps.find((m) => m.name === name);
    const pin = dirs.flatMap((d) => findMapPins(d, name))[0];
    maps[name] = { entries: row?.entries, maxEntries: row?.maxEntries, memlock: pin ? memlockOf(pin.path) : undefined };
  }
  return { label, endpoints: st.endpoints, maps };
}

function memoryLine(s: MemorySnapshot): string {
  const one = (n: string) => {
    const m = s.maps[n];
    if (m.entries === undefined && m.memlock === undefined) return `${n} absent`;
    return `${n} ${m.entries ?? '?'} entries${m.maxEntries !== undefined ? ` of ${m.maxEntries}` : ''}, ${m.memlock !== undefined ? `${num(m.memlock / 1024)} KiB memlock` : 'memlock ?'}`;
  };
  return `${s.label}: ${s.endpoints} endpoints, ${one(POLICY4)}, ${one(IPCACHE4)}`;
}

// ---- apply → enforced -----------------------------------------------------------------------

interface Detection {
  /** ms from t0 to the first probe that met the new verdict. */
  ms?: number;
  /** ms from t0 to the last probe that still met the old verdict (negative: none after t0). */
  oldMs?: number;
  /** Not timed: the stream did not show the old verdict when the change was made, or was given up. */
  skipped?: 'state' | 'given up';
}

/**
 * Watches stream `id` of the prober from t0 for the first probe meeting `verdict`: for allow,
 * the first probe sent at or after t0 that arrived; for deny, the first probe sent at or after
 * t0 from which on QUIET probes in a row were lost. The probe sent just before it met the old
 * verdict: the change reached the datapath between the two. Cheap per call: it runs on every
 * prober line.
 */
function detector(prober: Prober, id: number, verdict: Verdict, t0: number): () => Detection | undefined {
  let from = 0; // sends before this index were sent before t0
  let seen = 0; // receipts looked at
  const at = (seq: number): Detection | undefined => {
    const sends = prober.sends(id);
    const i = seq - sends[0].seq;
    return { ms: (sends[i].ns - t0) / 1e6, oldMs: i > 0 ? (sends[i - 1].ns - t0) / 1e6 : -Infinity };
  };
  return () => {
    const sends = prober.sends(id);
    const got = prober.receipts(id);
    if (sends.length === 0) return undefined;
    if (verdict === 'allow') {
      for (; seen < got.length; seen++) if (got[seen].sentNs >= t0) return at(got[seen].seq);
      return undefined;
    }
    while (from < sends.length && sends[from].ns < t0) from++;
    if (from >= sends.length) return undefined;
    const lastGot = got.length ? got[got.length - 1].seq : -1;
    const candidate = Math.max(sends[from].seq, lastGot + 1);
    if (sends[sends.length - 1].seq < candidate + QUIET) return undefined;
    return at(candidate);
  };
}

/** Whether the last `n` probes of a stream (leaving out the most recent few, possibly in flight) all had `verdict`. */
function steady(prober: Prober, id: number, verdict: Verdict, n = 10): boolean {
  const sends = prober.sends(id);
  if (sends.length < n + 3) return false;
  const window = sends.slice(-n - 3, -3).map((s) => s.seq);
  const got = new Set(prober.receipts(id).map((r) => r.seq));
  return window.every((seq) => got.has(seq) === (verdict === 'allow'));
}

interface Change {
  kind: ChangeKind;
  verdict: Verdict;
  fresh: Detection;
  live: Detection;
  postMs: number;
  /** The store revision the POST answered (API changes only). */
  revision?: number;
  /** The POST answered a revision older than this change can have: one that cannot hold it. */
  staleRevision?: boolean;
  /** Until the `--wait` answer, or the CLI's exit. */
  waitMs?: number;
  /** The agent's own time for its last policy run, read once the change was seen. */
  runMs?: number;
}

interface ChangeRunner {
  liveFailures: number;
  freshFailures: number;
}

/**
 * One change of the probe policy to `verdict`, timed from t0: through the API (POST, then GET
 * /v1/programmed, as `kelp apply --wait` does), or by the `kelp apply -f F --wait` process.
 */
async function change(sb: Sandbox, prober: Prober, state: ChangeRunner, kind: ChangeKind, verdict: Verdict, cliFile?: string): Promise<Change> {
  const before: Verdict = verdict === 'allow' ? 'deny' : 'allow';
  const freshSkip = state.freshFailures >= GIVE_UP ? 'given up' : steady(prober, FRESH, before) ? undefined : 'state';
  const liveSkip = freshSkip ?? (state.liveFailures >= GIVE_UP ? 'given up' : steady(prober, LIVE, before) ? undefined : 'state');
  const freshOk = freshSkip === undefined;
  const liveOk = liveSkip === undefined;
  // t0 falls anywhere within a probe interval.
  await sleep(Math.random() * 2);
  const t0 = nowNs();
  const fresh = detector(prober, FRESH, verdict, t0);
  const live = detector(prober, LIVE, verdict, t0);
  let postMs = NaN;
  let revision: number | undefined;
  let waitMs: number | undefined;
  const applied = (async () => {
    if (cliFile) {
      writeFileSync(cliFile, JSON.stringify(changedPolicy(kind, verdict)));
      await run(process.execPath, [KELP_BIN, 'apply', '-f', cliFile, '--wait', `--socket=${sb.socketPath}`], { timeoutMs: 60_000 });
      waitMs = (nowNs() - t0) / 1e6;
      return;
    }
    const rev = await applyObjects(sb.socketPath, [changedPolicy(kind, verdict)]);
    postMs = (nowNs() - t0) / 1e6;
    revision = rev;
    if (await programmed(sb.socketPath, rev, ENFORCE_TIMEOUT_MS)) waitMs = (nowNs() - t0) / 1e6;
  })();
  // A failure of the apply is reported once the probes have been waited for.
  applied.catch(() => undefined);
  // The live flow gets LIVE_EXTRA_MS more than the new flows once those have met the verdict.
  let freshAt: number | undefined;
  let freshSeen: Detection | undefined;
  let liveSeen: Detection | undefined;
  const decided = () => {
    if (freshOk && freshSeen === undefined) {
      freshSeen = fresh();
      if (freshSeen !== undefined) freshAt = Date.now();
    }
    if (liveOk && liveSeen === undefined) liveSeen = live();
    const freshDone = !freshOk || freshSeen !== undefined;
    const liveDone = !liveOk || liveSeen !== undefined || (freshAt !== undefined && Date.now() - freshAt > LIVE_EXTRA_MS);
    return freshDone && liveDone;
  };
  await prober.until(decided, ENFORCE_TIMEOUT_MS + LIVE_EXTRA_MS);
  decided();
  await applied;
  // Outside the timed window: GET /v1/status reads every map.
  const runMs = (await requestJson<Status>(sb.socketPath, 'GET', '/v1/status')).policy?.lastRun?.ms;
  if (freshOk) state.freshFailures = freshSeen === undefined ? state.freshFailures + 1 : 0;
  if (liveOk) state.liveFailures = liveSeen === undefined ? state.liveFailures + 1 : 0;
  return {
    kind,
    verdict,
    fresh: freshOk ? (freshSeen ?? {}) : { skipped: freshSkip },
    live: liveOk ? (liveSeen ?? {}) : { skipped: liveSkip },
    postMs,
    revision,
    waitMs,
    runMs,
  };
}

/**
 * The `--wait` answer had arrived when a probe sent later still met the old verdict: "programmed"
 * was not yet enforced (the probes' own timing, jitter included, cannot make this up).
 */
function waitedEarly(c: Change): boolean {
  return c.waitMs !== undefined && c.fresh.oldMs !== undefined && c.waitMs < c.fresh.oldMs;
}

function traceLine(c: Change): string {
  const d = (x: Detection) => (x.skipped ? `not timed (${x.skipped})` : x.ms === undefined ? 'not seen' : `${num(x.ms)} ms`);
  const ms = (x?: number) => (x === undefined || Number.isNaN(x) ? '—' : `${num(x)} ms`);
  return `${KIND_NAME[c.kind]} → ${c.verdict}: new flows ${d(c.fresh)}, live flow ${d(c.live)}, POST ${ms(c.postMs)}${c.revision !== undefined ? ` (revision ${c.revision}${c.staleRevision ? ', older than this change' : ''})` : ''}, run ${ms(c.runMs)}, --wait ${ms(c.waitMs)}${waitedEarly(c) ? ` (before a probe at ${num(c.fresh.oldMs!)} ms met the old verdict)` : ''}`;
}

// ---- ready → reachable ----------------------------------------------------------------------

interface ReadySample {
  /** ADD start → first probe received, ms; undefined: not within READY_TIMEOUT_MS. */
  ms?: number;
  addMs: number;
}

async function readyPod(sb: Sandbox, prober: Prober, netns: NetnsSet, client: SandboxPod, id: string, n: number): Promise<ReadySample> {
  const [nsPath] = netns.create([id]);
  await prober.listen(READY_LISTENER, nsPath, PROBE_PORT);
  try {
    // As in a cluster: the Pod object exists, without addresses, before the runtime calls CNI.
    const rev = await applyObjects(sb.socketPath, [podObject(id, READY_NS, { role: 'ready', ...appLabels(n) }, sb.node)]);
    await programmed(sb.socketPath, rev, 10_000);
    const target = kelpTarget(sb, 'kelp');
    const t0 = nowNs();
    const add = await target.call('ADD', id, nsPath);
    const addMs = (nowNs() - t0) / 1e6;
    const ip = (JSON.parse(add.stdout) as { ips: Array<{ address: string }> }).ips[0].address.split('/')[0];
    await prober.send(READY_STREAM, client.netnsPath, ip, PROBE_PORT, 'fixed');
    const reached = await prober.until(() => prober.receipts(READY_STREAM).length > 0, READY_TIMEOUT_MS);
    const first = prober.receipts(READY_STREAM)[0];
    await prober.stop(READY_STREAM);
    return { ms: reached && first ? (first.recvNs - t0) / 1e6 : undefined, addMs };
  } finally {
    await prober.stop(READY_LISTENER);
  }
}

// ---- the figure -----------------------------------------------------------------------------

interface RoundLog {
  changes: Change[];
  cli: Change[];
  ready: ReadySample[];
}

function quantiles(xs: number[]): { p50: number; p99: number } | undefined {
  return xs.length ? { p50: quantile(xs, 0.5), p99: quantile(xs, 0.99) } : undefined;
}

const msOf = (cs: Change[], pick: (c: Change) => Detection) => cs.map(pick).filter((d) => d.ms !== undefined).map((d) => d.ms!);

export async function benchPolicy(cfg: BenchConfig, tag: string): Promise<Figure> {
  const label = policyVariant(cfg);
  const fig = new Figure(`7. Policy, ${cfg.policyPods.toLocaleString('en')} pods and ${cfg.policyPolicies.toLocaleString('en')} policies on one node: apply → enforced, TCP_RR/CRR, ready → reachable, map memory`);
  benchTool('cnirun');
  const prefix = `${tag}y`;
  progress(`policy: starting node ${prefix}-node (pod CIDR ${POD_CIDR}) and, for the no-policy pods, ${tag}z-node`);
  const node = await startKelpNode({ prefix, podCidr: POD_CIDR, logLevel: 'info', outside: false });
  const closers: Array<() => Promise<void>> = [node.stop];
  const close = async () => {
    while (closers.length) await closers.pop()!();
  };
  const tmp = mkdtempSync(path.join(tmpdir(), `kelp-bench-${prefix}-`));
  closers.push(defer(() => rmSync(tmp, { recursive: true, force: true })));
  try {
    const sb = node.sb;
    const bare = await startKelpNode({ prefix: `${tag}z`, podCidr: SECOND_NODE_CIDR, logLevel: 'info', outside: false });
    closers.push(bare.stop);
    const snapshots: MemorySnapshot[] = [await memory(sb, 'no objects')];

    // Real pods: the probe pair, the TCP_RR pair the 100 policies select, a pair none selects.
    const real: Array<{ pod: SandboxPod; labels: Record<string, string> }> = [];
    for (const [name, ns, labels] of [
      ['probe-client', PROBE_NS, { role: 'probe-client' }],
      ['probe-server', PROBE_NS, { role: 'probe-server' }],
      ['rr-client', RR_NS, { 'bench-rr': 'selected', app: 'rr' }],
      ['rr-server', RR_NS, { 'bench-rr': 'selected', app: 'rr' }],
      ['rr-client-u', RR_NS, { 'bench-rr': 'unselected', app: 'rr' }],
      ['rr-server-u', RR_NS, { 'bench-rr': 'unselected', app: 'rr' }],
    ] as Array<[string, string, Record<string, string>]>) {
      real.push({ pod: await sb.addPod(name, ns), labels });
    }
    const bareClient = await bare.sb.addPod('rr-client', 'default');
    const bareServer = await bare.sb.addPod('rr-server', 'default');
    const [probeClient, probeServer, rrClient, rrServer, rrClientU, rrServerU] = real.map((r) => r.pod);

    const namespaces = [
      namespace(PROBE_NS),
      namespace(RR_NS),
      namespace(READY_NS),
      ...Array.from({ length: TEAMS }, (_, i) => namespace(team(i), { team: `t${i}`, env: i % 2 ? 'staging' : 'prod' })),
    ];
    const realPods = real.map((r) => podObject(r.pod.name, r.pod.namespace, r.labels, sb.node, r.pod.ip));
    const pods = [...realPods, ...backgroundPods(cfg.policyPods - realPods.length, sb.node)];
    await applyAndWait(sb, [...namespaces, ...remoteNodes(), ...pods], `${namespaces.length} namespaces, ${REMOTE_NODES} nodes, ${pods.length} pods (${realPods.length} real)`);
    snapshots.push(await memory(sb, `${pods.length} pods`));

    const fixed = [probePolicy('allow'), probeDeny('allow'), probeAdminDeny('allow'), readyPolicy(), ...rrPolicies()];
    const policies = [...fixed, ...backgroundPolicies(cfg.policyPolicies - fixed.length)];
    const rules = ruleCount(policies);
    await applyAndWait(sb, policies, `${policies.length} policies (${rules} rules)`);
    snapshots.push(await memory(sb, `${pods.length} pods, ${policies.length} policies`));
    progress(`policy: ${snapshots.map(memoryLine).join('; ')}`);

    const prober = await Prober.start(PROBE_INTERVAL_US, 4 * 3600);
    closers.push(() => prober.close());
    await prober.listen(SERVER, probeServer.netnsPath, PROBE_PORT);
    const netns = new NetnsSet();
    closers.push(() => netns.close());
    const readyIds: string[] = [];
    closers.push(async () => {
      const target = kelpTarget(sb, 'kelp');
      for (const id of readyIds) await target.call('DEL', id, `${NETNS_DIR}/${id}`).catch(() => undefined);
    });

    const pairs: RrPair[] = [
      { name: SELECTED, clientNetns: rrClient.netns, serverNetns: rrServer.netns, serverIp: rrServer.ip },
      { name: NO_POLICY, clientNetns: bareClient.netns, serverNetns: bareServer.netns, serverIp: bareServer.ip },
      { name: UNSELECTED, clientNetns: rrClientU.netns, serverNetns: rrServerU.netns, serverIp: rrServerU.ip },
    ];
    // Each pair answers before anything is timed (a policy that forbids the test's port fails here).
    await rrRates(pairs, 'rr', 1, cfg.podCpu);

    // Per kind: one the agent does not enforce must not stop the other being watched.
    const states = new Map(CHANGE_KINDS.map((k) => [k, { liveFailures: 0, freshFailures: 0 } as ChangeRunner]));
    const cliFile = path.join(tmp, 'probe-allow.json');
    const logs: RoundLog[] = [];
    for (let r = 0; r < cfg.policyRounds; r++) {
      throwIfInterrupted();
      const say = (line: string) => progress(`policy round ${r + 1}/${cfg.policyRounds}: ${line}`);
      const log: RoundLog = { changes: [], cli: [], ready: [] };
      logs.push(log);

      // Apply → enforced, with both probe streams running.
      await prober.send(FRESH, probeClient.netnsPath, probeServer.ip, PROBE_PORT, 'fresh');
      await prober.send(LIVE, probeClient.netnsPath, probeServer.ip, PROBE_PORT, 'fixed');
      await sleep(50);
      let verdict: Verdict = 'allow';
      let nextRevision: number | undefined;
      const total = cfg.policyChanges + cfg.policyCliChanges;
      for (let i = 0; i < total; i++) {
        throwIfInterrupted();
        verdict = verdict === 'allow' ? 'deny' : 'allow';
        const kind = CHANGE_KINDS[(i >> 1) % CHANGE_KINDS.length];
        const state = states.get(kind)!;
        const gaveUp = state.freshFailures >= GIVE_UP;
        const c = await change(sb, prober, state, kind, verdict, i >= cfg.policyChanges ? cliFile : undefined);
        // Each change makes one store revision: the k-th after the first is at least its revision + k.
        if (c.revision !== undefined) {
          c.staleRevision = nextRevision !== undefined && c.revision < nextRevision;
          nextRevision = Math.max(c.revision, nextRevision ?? 0) + 1;
        }
        (i >= cfg.policyChanges ? log.cli : log.changes).push(c);
        if (cfg.policyTrace) say(`change ${i + 1}: ${traceLine(c)}`);
        // The changes go on, unwatched, for the --wait and CLI figures.
        if (!gaveUp && state.freshFailures >= GIVE_UP) {
          say(`${GIVE_UP} ${KIND_NAME[kind]} changes in a row not seen by the probes within ${ENFORCE_TIMEOUT_MS} ms: not enforced; no longer waited for`);
        }
        await sleep(20 + Math.random() * 20);
      }
      // Every round starts allowed, whatever the last change was.
      if (verdict === 'deny') await applyAndWait(sb, CHANGE_KINDS.map((k) => changedPolicy(k, 'allow')), 'the probe policies back to allow');
      await prober.stop(FRESH);
      await prober.stop(LIVE);
      const fresh = quantiles(msOf(log.changes, (c) => c.fresh));
      const live = quantiles(msOf(log.changes, (c) => c.live));
      const wait = quantiles(log.changes.filter((c) => c.waitMs !== undefined).map((c) => c.waitMs!));
      const post = log.changes.map((c) => c.postMs).filter((x) => !Number.isNaN(x));
      if (fresh) {
        fig.record(ENF_P50, label, 'ms', fresh.p50);
        fig.record(ENF_P99, label, 'ms', fresh.p99);
      }
      if (live) {
        fig.record(LIVE_P50, label, 'ms', live.p50);
        fig.record(LIVE_P99, label, 'ms', live.p99);
      }
      if (wait) {
        fig.record(WAIT_P50, label, 'ms', wait.p50);
        fig.record(WAIT_P99, label, 'ms', wait.p99);
      }
      if (post.length) fig.record(POST_P50, label, 'ms', median(post));
      const runs = log.changes.filter((c) => c.runMs !== undefined).map((c) => c.runMs!);
      if (runs.length) fig.record(RUN_P50, label, 'ms', median(runs));
      const cliFresh = msOf(log.cli, (c) => c.fresh);
      if (cliFresh.length) fig.record(CLI_ENF_P50, label, 'ms', median(cliFresh));
      const cliWait = log.cli.filter((c) => c.waitMs !== undefined).map((c) => c.waitMs!);
      if (cliWait.length) fig.record(CLI_WAIT_P50, label, 'ms', median(cliWait));
      const show = (q?: { p50: number; p99: number }) => (q ? `p50 ${num(q.p50)} ms, p99 ${num(q.p99)} ms` : 'not enforced');
      say(
        `${log.changes.length} changes: new flows ${show(fresh)} (${msOf(log.changes, (c) => c.fresh).length} seen); live flow ${show(live)}; ` +
          `--wait ${show(wait)}; POST ${post.length ? `${num(median(post))} ms` : '?'}; agent's policy run ${runs.length ? `${num(median(runs))} ms` : '?'}; ` +
          `${log.cli.length} by the CLI: enforced ${cliFresh.length ? `${num(median(cliFresh))} ms` : '—'}, process ${cliWait.length ? `${num(median(cliWait))} ms` : '—'}`,
      );

      // TCP_RR / TCP_CRR, the pairs in rotated order, no probes running.
      const order = rotate(pairs, r);
      for (const [measure, mode] of [
        [RR, 'rr'],
        [CRR, 'crr'],
      ] as const) {
        const rates = await rrRates(order, mode, cfg.rrSeconds, cfg.podCpu);
        order.forEach((p, i) => fig.record(measure, p.name, 'transactions/s', rates[i].rate));
        say(`${measure}: ${order.map((p, i) => `${p.name} ${rates[i].rate}/s`).join(', ')}`);
      }

      // Ready → reachable.
      for (let i = 0; i < cfg.policyReadyPods; i++) {
        throwIfInterrupted();
        const id = `${tag}r${r}x${i}`;
        readyIds.push(id);
        log.ready.push(await readyPod(sb, prober, netns, probeClient, id, readyIds.length));
      }
      const reached = log.ready.filter((s) => s.ms !== undefined).map((s) => s.ms!);
      const ready = quantiles(reached);
      if (ready) {
        fig.record(READY_P50, label, 'ms', ready.p50);
        fig.record(READY_P99, label, 'ms', ready.p99);
      }
      fig.record(ADD_P50, label, 'ms', median(log.ready.map((s) => s.addMs)));
      say(
        `${log.ready.length} pods: ADD start → first allowed packet ${ready ? `p50 ${num(ready.p50)} ms, p99 ${num(ready.p99)} ms` : 'never'} ` +
          `(${reached.length} reached within ${READY_TIMEOUT_MS} ms), ADD p50 ${num(median(log.ready.map((s) => s.addMs)))} ms`,
      );
    }

    const end = await memory(sb, `the same and ${readyIds.length} more pods`);
    snapshots.push(end);
    progress(`policy: ${memoryLine(end)}`);
    recordMemory(fig, label, snapshots, pods.length + readyIds.length, rules);
    fig.compare(RR, SELECTED, NO_POLICY, 'higher');
    fig.compare(CRR, SELECTED, NO_POLICY, 'higher');
    fig.compare(RR, SELECTED, UNSELECTED, 'higher');
    fig.compare(CRR, SELECTED, UNSELECTED, 'higher');
    notes(fig, cfg, logs, snapshots, { pods: pods.length, policies: policies.length, rules, ready: readyIds.length });
  } finally {
    await close();
  }
  return fig;
}

/** From the last snapshot: every object in, and the most real endpoints (the ready pods). */
function recordMemory(fig: Figure, label: string, snaps: MemorySnapshot[], pods: number, rules: number): void {
  const last = snaps[snaps.length - 1];
  // An empty map (policy not programmed) says nothing per rule.
  const filled = (m: MapMemory) => (m.entries ? m.memlock : undefined);
  const p4 = filled(last.maps[POLICY4]);
  const ipc = filled(last.maps[IPCACHE4]);
  if (p4 !== undefined) fig.record(POLICY4_PER_RULE, label, 'bytes', p4 / rules);
  if (p4 !== undefined && last.endpoints > 0) fig.record(POLICY4_PER_EP, label, 'bytes', p4 / last.endpoints);
  if (ipc !== undefined) fig.record(IPCACHE_PER_POD, label, 'bytes', ipc / pods);
  for (const name of [POLICY4, IPCACHE4]) {
    const m = last.maps[name];
    if (m.entries && m.memlock !== undefined) fig.record(`${name} memlock per entry`, label, 'bytes', m.memlock / m.entries);
  }
}

function notes(fig: Figure, cfg: BenchConfig, logs: RoundLog[], snaps: MemorySnapshot[], n: { pods: number; policies: number; rules: number; ready: number }): void {
  const changes = logs.flatMap((l) => l.changes);
  const cli = logs.flatMap((l) => l.cli);
  const all = (cs: Change[], pick: (c: Change) => Detection, v?: Verdict) => msOf(v ? cs.filter((c) => c.verdict === v) : cs, pick);
  const counted = (cs: Change[], pick: (c: Change) => Detection) => {
    const measured = cs.filter((c) => !pick(c).skipped);
    const seen = measured.filter((c) => pick(c).ms !== undefined).length;
    const state = cs.filter((c) => pick(c).skipped === 'state').length;
    const gaveUp = cs.filter((c) => pick(c).skipped === 'given up').length;
    const why = [state ? `${state} not timed: the stream did not show the old verdict before the change` : '', gaveUp ? `${gaveUp} not watched, the stream given up` : ''].filter(Boolean);
    return `${seen} of ${measured.length} watched changes seen${why.length ? ` (${why.join('; ')})` : ''}`;
  };
  const q = (xs: number[]) => (xs.length ? `p50 ${num(quantile(xs, 0.5))} ms, p99 ${num(quantile(xs, 0.99))} ms, max ${num(Math.max(...xs))} ms` : 'not enforced');
  const freshAll = all(changes, (c) => c.fresh);
  fig.notes.push(
    `The node: a kelp node netns with its agent (standalone, manifests through its API), pod CIDR ${POD_CIDR}; ${n.pods.toLocaleString('en')} Pod objects in ` +
      `${TEAMS} team namespaces and three of the benchmark's: 6 real pods made by kelp-cni (their Pod objects carry the addresses CNI gave), ` +
      `the rest objects only, with status.podIPs half in the upper half of this node's pod CIDR, half in ${REMOTE_NODES} other Nodes' /24s; ` +
      `${n.policies.toLocaleString('en')} policies with ${n.rules.toLocaleString('en')} rules: a KelpNetworkPolicy and a ClusterNetworkPolicy (the probe server's Denies, below), the rest NetworkPolicies ` +
      'in six shapes (pod selectors, namespace selectors, port ranges, ipBlocks with excepts, named ports, egress), 100 of them selecting the TCP_RR pods. ' +
      `Objects applied in two requests (pods, then policies), each waited for with --wait. A second kelp node (pod CIDR ${SECOND_NODE_CIDR}) with two pods and no objects serves TCP_RR's baseline.`,
    `Apply → enforced: ${cfg.policyChanges} changes per round through the API, a deny and then an allow, the pairs taking turns among three policies of the ` +
      `probe server: the NetworkPolicy \`${PROBE_NS}/probe-allow\` (its only ingress allow) changed to allow UDP ${DENIED_PORT} only (deny) and back to UDP ${PROBE_PORT} ` +
      `(allow); the KelpNetworkPolicy \`${PROBE_NS}/probe-deny\` with one Deny rule changed from UDP ${DENIED_PORT} to UDP ${PROBE_PORT} from the probe client (deny) and ` +
      `back (allow: the NetworkPolicy holds again); and the Admin-tier ClusterNetworkPolicy \`bench-probe-deny\` with the same Deny rule, the same way. Timed from just before the POST /v1/objects that \`kelp apply\` ` +
      `makes to the first probe that met the new verdict; probes every ${PROBE_INTERVAL_US / 1000} ms from the probe client to the server (build/bench/probe, ` +
      'CLOCK_MONOTONIC stamps taken in the prober), so a figure is known to ±1 ms. "New flows": each probe from its own source port (a new conntrack flow); ' +
      '"live flow": one socket, an established flow, reached only by revocation. For a deny, the first probe lost with every later one lost too ' +
      `(${QUIET} in a row); for an allow, the first probe sent after t0 that arrived. A stream not showing the new verdict within ${ENFORCE_TIMEOUT_MS} ms ` +
      `(the live flow: ${LIVE_EXTRA_MS} ms after the new flows) counts as not enforced; after ${GIVE_UP} such changes in a row it is no longer waited for. ` +
      `"--wait answer": the GET /v1/programmed?revision=N that \`kelp apply --wait\` makes, asked right after the POST. "The agent's policy run": ` +
      'its own timing of its last policy reconciler run (compile and map update; `kelp status`, read after each change, outside the timed window). ' +
      `${cfg.policyCliChanges} more changes per round ` +
      'by the `kelp apply -f F --wait` process, timed from its spawn (Node start-up included).',
    `This run: new flows ${counted(changes, (c) => c.fresh)}: ${q(freshAll)} (deny ${q(all(changes, (c) => c.fresh, 'deny'))}; allow ${q(all(changes, (c) => c.fresh, 'allow'))}; ` +
      `${CHANGE_KINDS.map((k) => `${KIND_NAME[k]} ${q(all(changes.filter((c) => c.kind === k), (c) => c.fresh))}`).join('; ')}). ` +
      `Live flow ${counted(changes, (c) => c.live)}: ${q(all(changes, (c) => c.live))}. --wait answered for ${changes.filter((c) => c.waitMs !== undefined).length} of ${changes.length}: ` +
      `${q(changes.filter((c) => c.waitMs !== undefined).map((c) => c.waitMs!))}; it had answered when a probe sent later still met the old verdict ` +
      `for ${changes.filter(waitedEarly).length} of ${changes.filter((c) => c.waitMs !== undefined && c.fresh.ms !== undefined).length} changes where both were seen` +
      `; ${changes.filter((c) => c.staleRevision).length} POSTs answered a store revision older than their change can have (each change makes one; the ` +
      `\`--wait\` that follows answers at once), ${changes.filter((c) => c.staleRevision && waitedEarly(c)).length} of them among those early answers` +
      `${cli.length ? `, the CLI's exit for ${cli.filter(waitedEarly).length} of ${cli.length}` : ''}. By the CLI: ${cli.length} changes, ${counted(cli, (c) => c.fresh)}: ${q(all(cli, (c) => c.fresh))}. ` +
      `Reference, quoted and not measured: ${CILIUM_REFERENCE}. Target: under 100 ms.`,
    `TCP_RR / TCP_CRR (build/bench/rr, 1-byte request and response; CRR a new connection each): **${SELECTED}** (two real pods of this node that 100 ` +
      'NetworkPolicies select, an ingress and an egress rule each with various peers and ports, the first allowing TCP 7000 between them), ' +
      `**${NO_POLICY}** (two pods of a second kelp node with no objects at all), **${UNSELECTED}** (two pods of this node in the same namespace that no policy selects). ` +
      `One client gives the three pairs turns of 100 ms until each has had ${cfg.rrSeconds} s, client and servers pinned to CPU ${cfg.podCpu}; the pairs in rotated ` +
      'order each round, no probes running. Target: within 3 % of no policy.',
    `Ready → reachable: ${cfg.policyReadyPods} pods per round in namespace \`${READY_NS}\`, which \`${READY_NS}/ready-allow\` selects (UDP ${PROBE_PORT} from the probe client). ` +
      'Each: its Pod object applied (no addresses, as before a kubelet status update) and programmed; then timed from the start of CNI ADD (kelp-cni exec’d in the node ' +
      `netns by build/bench/cnirun) until the first probe (every ${PROBE_INTERVAL_US / 1000} ms from the probe client, started when ADD answered) reached a socket ` +
      `already listening in the pod’s netns. ${logs.flatMap((l) => l.ready).filter((s) => s.ms === undefined).length} of ${n.ready} were not reached within ${READY_TIMEOUT_MS} ms.`,
    `Map memory: entries from the agent’s status (the rows \`kelp map dump\` lists) and memlock as the kernel accounts it (bpftool map show pinned, bytes_memlock), per ` +
      `snapshot: ${snaps.map(memoryLine).join('; ')}. All per-x rows from the last snapshot (every object in, the ready pods made): per rule, kelp_policy4 ÷ ` +
      `${n.rules.toLocaleString('en')} rules; per local endpoint, kelp_policy4 ÷ the node’s endpoints; per pod, kelp_ipcache4 ÷ ${(n.pods + n.ready).toLocaleString('en')} pods. ` +
      `kelp_policy4 holds entries for this node's endpoints only: the rules of policies that select no local endpoint cost nothing there (1 in ${TEAMS + 1} background ` +
      `policies lives in \`${READY_NS}\` and selects ready pods by their app, tier or version labels; the rest select Pod objects of other namespaces).`,
  );
}

/** The figure's headline rows; a measure with no value says why. */
export function policyHeadlineRows(fig: Figure | undefined, cfg: BenchConfig): HeadlineRow[] {
  if (!fig) return [];
  const label = policyVariant(cfg);
  const scale = `${cfg.policyPods.toLocaleString('en')} pods + ${cfg.policyPolicies.toLocaleString('en')} policies`;
  const has = (m: string, v = label) => {
    try {
      return fig.values(m, v).length > 0;
    } catch {
      return false;
    }
  };
  const value = (m: string, missing: string, v = label) => (has(m, v) ? spreadText(spread(fig.values(m, v)), fig.unit(m, v)) : missing);
  const rows: HeadlineRow[] = [
    { figure: `Policy: apply → enforced p50, ${scale} (new flows)`, kelp: value(ENF_P50, 'not enforced'), reference: CILIUM_REFERENCE, ratio: '—' },
    { figure: `Policy: apply → enforced p99, ${scale} (new flows)`, kelp: value(ENF_P99, 'not enforced'), reference: CILIUM_REFERENCE, ratio: '—' },
    { figure: `Policy: apply → --wait answer p50, ${scale}`, kelp: value(WAIT_P50, 'not programmed'), reference: '—', ratio: '—' },
  ];
  for (const m of [RR, CRR]) {
    if (!has(m, SELECTED) || !has(m, NO_POLICY)) continue;
    const rs = spread(fig.ratios(m, SELECTED, NO_POLICY));
    rows.push({
      figure: `Policy: pod ↔ pod ${m}, 100 policies select both pods (ref: no policy)`,
      kelp: value(m, '—', SELECTED),
      reference: value(m, '—', NO_POLICY),
      ratio: `${spreadText(rs, '', ratio)}, higher is better`,
    });
  }
  rows.push({ figure: 'Policy: CNI ADD start → first allowed packet p50', kelp: value(READY_P50, 'not reached'), reference: '—', ratio: '—' });
  rows.push({ figure: `Policy: ${POLICY4} memlock per rule`, kelp: value(POLICY4_PER_RULE, 'no entries'), reference: '—', ratio: '—' });
  rows.push({ figure: `Policy: ${POLICY4} memlock per local endpoint`, kelp: value(POLICY4_PER_EP, 'no entries'), reference: '—', ratio: '—' });
  return rows;
}
