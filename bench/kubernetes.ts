// Figure 6: the agent in Kubernetes mode against the project's test API server
// (test/support/kube-apiserver, in this process, reached from the node's netns through a
// bridge), with the pods of a cluster in it (5,000 by default) and, as a baseline, an API
// holding a single pod. Per round, a fresh agent for each:
//   - start → ready (its socket answers, which it does only once every kind is listed), with the
//     agent's CPU time then and its RSS once settled;
//   - change → programmed: one label patch at a time, timed from the write in the API server
//     until the agent answers a GET /v1/programmed?revision=<the revision it makes>, asked
//     before the write (the wait `kelp apply --wait` uses: every reconciler has programmed it),
//     with the agent's main-thread CPU for it; each checked with GET /v1/pods;
//   - a burst of patches written in one tick, until the last is programmed (5,000 pods only);
//   - a forced full relist (history compacted + every watch dropped → 410 → every kind listed
//     again) with the agent's RSS and CPU time sampled before, during and after (5,000 pods only).
// No reconciler maps Pod objects yet, so "programmed" is the change applied to the agent's store:
// the same measure takes in the map update once the policy and service reconcilers map pods.
import http from 'node:http';
import { closeSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import path from 'node:path';
import { BenchConfig } from './lib/config';
import { defer, throwIfInterrupted } from './lib/cleanup';
import { run } from './lib/exec';
import { Figure } from './lib/figure';
import { agentPid, startKelpNode } from './lib/kelp-node';
import { progress, sleep } from './lib/progress';
import { median, num, quantile } from './lib/stats';
import type { Sandbox } from '../src/sandbox';
import { Obj, startKubeApiServer, TestKubeApiServer } from '../test/support/kube-apiserver';
import { Bridge, bridgeInto } from '../test/support/kube-apiserver/bridge';

/** The variant with the cluster's pods in its API. */
export function fullVariant(pods: number): string {
  return `kelp agent, ${pods.toLocaleString('en')} pods`;
}
export const ONE = 'kelp agent, 1 pod';
export const READY = 'start → ready';
export const SYNC = 'of which: list and sync (agent log)';
export const START_CPU = 'agent CPU, start → ready';
export const IDLE_RSS = 'RSS, synced and idle';
export const CHANGE_P50 = 'change → programmed p50';
export const CHANGE_P99 = 'change → programmed p99';
export const CHANGE_CPU = 'agent main-thread CPU per change';
export const PODS_GET = 'GET /v1/pods round trip';
export const BURST = 'burst: last write → all programmed';
export const BURST_CPU = 'burst: agent main-thread CPU per change';
export const RELIST = 'full relist: fault → every kind relisted';
export const RELIST_CPU = 'full relist: agent CPU';
export const RELIST_BEFORE = 'full relist: RSS before';
export const RELIST_PEAK = 'full relist: peak RSS';
export const RELIST_AFTER = 'full relist: RSS 1 s after';

const NAMESPACES = 50;
const NODES = 100;
const APPS = ['web', 'api', 'cart', 'checkout', 'payments', 'search', 'auth', 'catalog', 'cache', 'worker'];
const BURST_SIZE = 100;
/** Label the changes write: a new value each time, so each is a real change. */
const CHANGE_LABEL = 'bench-change';
/** How long the agent's main thread must have slept for it to count as idle. */
const IDLE_MS = 2;

interface Reflector {
  kind: string;
  synced: boolean;
  lists: number;
  watches: number;
  errors: number;
}

interface AgentStatus {
  ready: boolean;
  store: { revision: number; programmed: number };
  sources: Array<{ name: string; reflectors?: Reflector[] }>;
  reconcilers: Array<{ name: string; runs: number }>;
}

interface Programmed {
  revision: number;
  programmed: number;
}

/**
 * GETs against the agent's socket, a connection each. Not kept alive: on a kept-alive
 * connection the agent's API server leaves some requests unanswered when the response before
 * was large (GET /v1/pods with 5,000 pods: ~1 in 7), logging them as closed by the client.
 */
class AgentClient {
  constructor(private readonly socketPath: string) {}

  async get<T>(urlPath: string): Promise<T> {
    return JSON.parse(await this.raw(urlPath)) as T;
  }

  raw(urlPath: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = http.get({ socketPath: this.socketPath, path: urlPath, agent: false, timeout: 10_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => {
          if (res.statusCode !== 200) reject(new Error(`GET ${urlPath}: ${res.statusCode} ${body}`));
          else resolve(body);
        });
      });
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error(`GET ${urlPath}: timed out`)));
    });
  }

  status(): Promise<AgentStatus> {
    return this.get<AgentStatus>('/v1/status');
  }
}

function reflectors(st: AgentStatus): Reflector[] {
  const r = st.sources.find((s) => s.name === 'kubernetes')?.reflectors;
  if (!r?.length) throw new Error('the agent reports no Kubernetes reflectors: is it in Kubernetes mode?');
  return r;
}

// ---- the API's content -------------------------------------------------------------------

interface PodRef {
  namespace: string;
  name: string;
}

function hex(n: number, len: number): string {
  return ((n * 2654435761) >>> 0).toString(16).padStart(8, '0').slice(0, len);
}

/** Node i of the cluster: node 0 is the benchmark's own node. */
function nodeName(i: number, self: string): string {
  return i === 0 ? self : `worker-${i.toString().padStart(3, '0')}`;
}

/**
 * `count` pods as Deployments would make them: NAMESPACES namespaces of APPS apps, replicas
 * spread over NODES nodes, each with the labels, containers, ports, status and owner a real
 * one carries (~2 KiB of JSON each in the API).
 */
function makePods(count: number, self: string): Obj[] {
  const pods: Obj[] = [];
  for (let i = 0; i < count; i++) {
    const ns = i % NAMESPACES;
    const app = APPS[Math.floor(i / NAMESPACES) % APPS.length];
    const replica = Math.floor(i / (NAMESPACES * APPS.length));
    const hash = hex(ns * 31 + APPS.indexOf(app), 10);
    const node = (i * 7) % NODES;
    const ip = `10.200.${node}.${2 + (Math.floor(i / NODES) % 250)}`;
    const name = `${app}-${hash}-${hex(i + 1, 5)}`;
    pods.push({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name,
        namespace: `team-${ns.toString().padStart(2, '0')}`,
        labels: {
          app,
          'app.kubernetes.io/name': app,
          'app.kubernetes.io/part-of': `shop-${ns % 5}`,
          'pod-template-hash': hash,
          tier: ['frontend', 'backend', 'data'][APPS.indexOf(app) % 3],
          version: `v${1 + (replica % 3)}`,
        },
        annotations: { 'kubectl.kubernetes.io/restartedAt': '2026-11-30T10:00:00Z' },
        ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${app}-${hash}`, uid: `00000000-0000-4000-8000-${hex(ns * 100 + APPS.indexOf(app), 8)}0000`, controller: true, blockOwnerDeletion: true }],
      },
      spec: {
        nodeName: nodeName(node, self),
        serviceAccountName: 'default',
        containers: [
          {
            name: app,
            image: `registry.example.com/shop/${app}:1.${replica % 7}.0`,
            ports: [
              { name: 'http', containerPort: 8080, protocol: 'TCP' },
              { name: 'metrics', containerPort: 9090, protocol: 'TCP' },
            ],
            env: [
              { name: 'APP', value: app },
              { name: 'LOG_LEVEL', value: 'info' },
            ],
            resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '256Mi' } },
            readinessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 5 },
          },
          { name: 'sidecar', image: 'registry.example.com/infra/proxy:2.3.1', ports: [{ name: 'proxy', containerPort: 15001, protocol: 'TCP' }] },
        ],
      },
      status: {
        phase: 'Running',
        hostIP: `192.168.${Math.floor(node / 250)}.${10 + (node % 250)}`,
        podIP: ip,
        podIPs: [{ ip }],
        startTime: '2026-11-30T10:00:00Z',
        conditions: ['Initialized', 'Ready', 'ContainersReady', 'PodScheduled'].map((type) => ({ type, status: 'True', lastTransitionTime: '2026-11-30T10:00:05Z' })),
        containerStatuses: [app, 'sidecar'].map((c) => ({ name: c, ready: true, restartCount: 0, image: c, imageID: `sha256:${hex(c.length, 8)}`, started: true, state: { running: { startedAt: '2026-11-30T10:00:04Z' } } })),
      },
    });
  }
  return pods;
}

function fillApi(api: TestKubeApiServer, pods: number, self: string): PodRef[] {
  for (let ns = 0; ns < Math.min(NAMESPACES, pods); ns++) {
    api.objects.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: `team-${ns.toString().padStart(2, '0')}`, labels: { team: `t${ns}` } } });
  }
  for (let i = 0; i < NODES; i++) {
    const name = nodeName(i, self);
    api.objects.create({ apiVersion: 'v1', kind: 'Node', metadata: { name, labels: { 'kubernetes.io/hostname': name } }, spec: { podCIDR: `10.200.${i}.0/24`, podCIDRs: [`10.200.${i}.0/24`] } });
  }
  return makePods(pods, self).map((p) => {
    api.objects.create(p);
    return { namespace: p.metadata.namespace as string, name: p.metadata.name as string };
  });
}

// ---- the agent process -----------------------------------------------------------------

let clockTicks = 100;

/** utime + stime of a process (all its threads), in ms. */
async function cpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / clockTicks;
}

async function rssKiB(pid: number): Promise<number> {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for PID ${pid}`);
  return Number(m[1]);
}

/** RSS after the process has been left alone: median of 5 samples after a settle period. */
async function settledRssKiB(pid: number): Promise<number> {
  await sleep(1000);
  const xs: number[] = [];
  for (let i = 0; i < 5; i++) {
    xs.push(await rssKiB(pid));
    await sleep(200);
  }
  return median(xs);
}

const now = () => process.hrtime.bigint();
const msSince = (t0: bigint, t1: bigint) => Number(t1 - t0) / 1e6;
/** Lets this process's I/O run (the API server, the bridge) between two looks at the agent. */
const yieldLoop = () => new Promise<void>((r) => setImmediate(r));

/**
 * The agent's main thread (its event loop) as the scheduler sees it: asleep or not, how often it
 * has been scheduled and its CPU time (/proc/<pid>/task/<pid>/stat and schedstat, re-read with
 * pread: µs each, and nothing asked of the agent).
 */
class MainThread {
  private readonly statFd: number;
  private readonly schedFd: number;
  private readonly buf = Buffer.alloc(1024);

  constructor(pid: number) {
    this.statFd = openSync(`/proc/${pid}/task/${pid}/stat`, 'r');
    this.schedFd = openSync(`/proc/${pid}/task/${pid}/schedstat`, 'r');
  }

  private read(fd: number): string {
    return this.buf.toString('latin1', 0, readSync(fd, this.buf, 0, this.buf.length, 0));
  }

  asleep(): boolean {
    const s = this.read(this.statFd);
    return s[s.lastIndexOf(')') + 2] === 'S';
  }

  /** CPU time (ns) and the number of times it has been scheduled in. */
  sched(): { runNs: number; slices: number } {
    const f = this.read(this.schedFd).trim().split(' ');
    return { runNs: Number(f[0]), slices: Number(f[2]) };
  }

  /**
   * Resolves once the thread has stayed asleep for `quiet` ms, and (with `slices`) has been
   * scheduled since that count: it has run for what was sent to it and is done with it.
   */
  async idle(quiet: number, slices?: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (Date.now() > deadline) throw new Error(`the agent was not idle for ${quiet} ms within ${timeoutMs} ms`);
      await yieldLoop();
      const s = this.sched().slices;
      if (slices !== undefined && s <= slices) continue;
      const since = now();
      let woke = !this.asleep();
      while (!woke && msSince(since, now()) < quiet) {
        await yieldLoop();
        woke = !this.asleep() || this.sched().slices !== s;
      }
      if (!woke) return;
    }
  }

  close(): void {
    closeSync(this.statFd);
    closeSync(this.schedFd);
  }
}

/** Where a pod's labels are in the raw JSON of GET /v1/pods (PodView: namespace, name, …, labels). */
function labelsIn(body: string, pod: PodRef): string | undefined {
  const at = body.indexOf(`"namespace":${JSON.stringify(pod.namespace)},"name":${JSON.stringify(pod.name)},`);
  if (at < 0) return undefined;
  const from = body.indexOf('"labels":{', at);
  // Label keys and values cannot hold braces.
  return from < 0 ? undefined : body.slice(from, body.indexOf('}', from) + 1);
}

const hasValue = (body: string, pod: PodRef, value: string) => labelsIn(body, pod)?.includes(`${JSON.stringify(CHANGE_LABEL)}:${JSON.stringify(value)}`) ?? false;

/** The time from the agent's "watching the Kubernetes API" log line to its "kelp agent ready" one. */
function syncFromLog(log: string, pid: number): number | undefined {
  let watching: number | undefined;
  let ready: number | undefined;
  for (const line of log.split('\n')) {
    if (!line.includes(`"pid":${pid},`)) continue;
    try {
      const rec = JSON.parse(line) as { msg?: string; time?: number };
      if (rec.msg === 'watching the Kubernetes API') watching = rec.time;
      if (rec.msg === 'kelp agent ready') ready = rec.time;
    } catch {
      // a line cut by a concurrent write
    }
  }
  return watching !== undefined && ready !== undefined ? ready - watching : undefined;
}

// ---- one agent -------------------------------------------------------------------------

interface Variant {
  label: string;
  api: TestKubeApiServer;
  kubeconfig: string;
  pods: PodRef[];
  /** The burst and the relist run for this one. */
  full: boolean;
}

/** What the notes report, per agent. */
interface RoundLog {
  reconcilers: string[];
  /** Store revisions beyond one per change. */
  extraRevisions: number;
  patchMs: number[];
  burstRevisions?: number;
  burstWriteMs?: number;
  burstFromFirstMs?: number;
  relistSamples?: number;
  relistWatchesDropped?: number;
  relistStoreChanges?: number;
  cpuAfterRelistMs?: number;
}

function patchLabel(api: TestKubeApiServer, pod: PodRef, value: string): void {
  api.objects.patch({ apiVersion: 'v1', kind: 'Pod', namespace: pod.namespace, name: pod.name }, { metadata: { labels: { [CHANGE_LABEL]: value } } });
}

/**
 * Asks the agent to answer once store revision `rev` is programmed, and resolves once it is
 * waiting (the request read and the agent asleep again): with the answer's arrival time.
 */
async function awaitProgrammed(client: AgentClient, main: MainThread, rev: number): Promise<{ answered: Promise<bigint> }> {
  const { slices } = main.sched();
  const answered = client.get<Programmed>(`/v1/programmed?revision=${rev}&timeoutMs=20000`).then((b) => {
    const at = now();
    if (b.programmed < rev) throw new Error(`revision ${rev} answered as programmed at ${b.programmed}`);
    return at;
  });
  // A failure before the wait below is over is reported when the answer is awaited.
  answered.catch(() => undefined);
  await main.idle(IDLE_MS, slices);
  return { answered };
}

async function runVariant(fig: Figure, cfg: BenchConfig, sb: Sandbox, v: Variant, r: number): Promise<RoundLog> {
  const say = (line: string) => progress(`kubernetes round ${r + 1}/${cfg.kubeRounds}, ${v.label}: ${line}`);
  sb.opts.agentArgs = [`--kubeconfig=${v.kubeconfig}`];
  const t0 = now();
  await sb.startAgent();
  const readyMs = msSince(t0, now());
  const pid = agentPid(sb);
  const startCpu = await cpuMs(pid);
  const client = new AgentClient(sb.socketPath);
  const main = new MainThread(pid);
  const out: RoundLog = { reconcilers: [], extraRevisions: 0, patchMs: [] };
  try {
    const syncMs = syncFromLog(sb.agentLog(), pid);
    fig.record(READY, v.label, 'ms', readyMs);
    if (syncMs !== undefined) fig.record(SYNC, v.label, 'ms', syncMs);
    fig.record(START_CPU, v.label, 'ms', startCpu);
    const idle = await settledRssKiB(pid);
    fig.record(IDLE_RSS, v.label, 'MiB', idle / 1024);
    say(`ready in ${num(readyMs)} ms (list and sync ${syncMs ?? '?'} ms by its log), ${num(startCpu)} ms CPU, RSS ${num(idle / 1024)} MiB`);

    const rest = await client.status();
    if (rest.store.programmed !== rest.store.revision) throw new Error(`store not programmed at rest: ${JSON.stringify(rest.store)}`);
    out.reconcilers = rest.reconcilers.map((x) => x.name);
    let rev = rest.store.revision;
    const expect = new Map<string, { pod: PodRef; value: string }>();

    // Changes one at a time, each written to an idle agent already waiting for its revision.
    const lat: number[] = [];
    const cpu: number[] = [];
    const gets: number[] = [];
    for (let i = 0; i < cfg.kubeChanges; i++) {
      throwIfInterrupted();
      const pod = v.pods[(i * 997) % v.pods.length];
      const value = `r${r}-c${i}`;
      await sleep(5);
      const { answered } = await awaitProgrammed(client, main, rev + 1);
      const before = main.sched();
      const start = now();
      patchLabel(v.api, pod, value);
      out.patchMs.push(msSince(start, now()));
      lat.push(msSince(start, await answered));
      rev += 1;
      // Its CPU: from the write until the agent is asleep again (answering the GET included).
      await main.idle(IDLE_MS);
      cpu.push((main.sched().runNs - before.runNs) / 1e3);
      // The revision waited for is this change: the agent shows it.
      const t = now();
      const body = await client.raw('/v1/pods');
      gets.push(msSince(t, now()));
      if (!hasValue(body, pod, value)) throw new Error(`revision ${rev} is programmed, but GET /v1/pods does not show ${pod.namespace}/${pod.name} with ${CHANGE_LABEL}=${value}`);
      expect.set(`${pod.namespace}/${pod.name}`, { pod, value });
    }
    fig.record(CHANGE_P50, v.label, 'ms', quantile(lat, 0.5));
    fig.record(CHANGE_P99, v.label, 'ms', quantile(lat, 0.99));
    fig.record(CHANGE_CPU, v.label, 'µs', median(cpu));
    fig.record(PODS_GET, v.label, 'ms', median(gets));
    say(
      `${lat.length} changes → programmed: p50 ${num(quantile(lat, 0.5))} ms, p99 ${num(quantile(lat, 0.99))} ms, max ${num(Math.max(...lat))} ms; ` +
        `${num(median(cpu))} µs agent CPU each; GET /v1/pods ${num(median(gets))} ms`,
    );

    if (v.full) {
      rev = await burst(fig, client, main, v, r, rev, out, expect, say);
      // Every change arrived as last written.
      const body = await client.raw('/v1/pods');
      const wrong = [...expect.values()].filter(({ pod, value }) => !hasValue(body, pod, value));
      if (wrong.length) throw new Error(`${wrong.length} pods lack the label value last written, e.g. ${wrong[0].pod.namespace}/${wrong[0].pod.name}`);
      const count = (JSON.parse(body) as unknown[]).length;
      if (count !== v.pods.length) throw new Error(`the agent has ${count} pods, the API ${v.pods.length}`);
    }
    const after = await client.status();
    out.extraRevisions = after.store.revision - rev;
    if (after.store.programmed !== after.store.revision) throw new Error(`store not programmed after the changes: ${JSON.stringify(after.store)}`);
    if (v.full) await relist(fig, client, v, pid, out, say);
    return out;
  } finally {
    main.close();
    await sb.stopAgent();
  }
}

/** BURST_SIZE patches on distinct pods in one tick, until the last is programmed. Returns the store revision after. */
async function burst(
  fig: Figure,
  client: AgentClient,
  main: MainThread,
  v: Variant,
  r: number,
  rev: number,
  out: RoundLog,
  expect: Map<string, { pod: PodRef; value: string }>,
  say: (line: string) => void,
): Promise<number> {
  const items = new Map<string, { pod: PodRef; value: string }>();
  for (let i = 0; items.size < BURST_SIZE; i++) {
    const pod = v.pods[(i * 101 + 13) % v.pods.length];
    items.set(`${pod.namespace}/${pod.name}`, { pod, value: `r${r}-b${i}` });
  }
  await sleep(200);
  const { answered } = await awaitProgrammed(client, main, rev + items.size);
  const before = main.sched();
  const start = now();
  for (const { pod, value } of items.values()) patchLabel(v.api, pod, value);
  // This process wrote them all before the bridge could pass any on: the agent gets the burst
  // after the last write.
  const written = now();
  const at = await answered;
  await main.idle(IDLE_MS);
  const cpuUs = (main.sched().runNs - before.runNs) / 1e3;
  const ms = msSince(written, at);
  for (const [k, x] of items) expect.set(k, x);
  out.burstWriteMs = msSince(start, written);
  out.burstFromFirstMs = msSince(start, at);
  out.burstRevisions = (await client.get<Programmed>('/v1/programmed')).revision - rev;
  fig.record(BURST, v.label, 'ms', ms);
  fig.record(BURST_CPU, v.label, 'µs', cpuUs / items.size);
  say(
    `burst of ${items.size} (written in ${num(out.burstWriteMs)} ms): all programmed ${num(ms)} ms after the last write, ` +
      `${num(cpuUs / items.size)} µs agent CPU per change, ${out.burstRevisions} store revisions`,
  );
  return rev + out.burstRevisions;
}

/** Compacts the API's history and drops every watch: each reflector resumes, gets 410 and relists. */
async function relist(fig: Figure, client: AgentClient, v: Variant, pid: number, out: RoundLog, say: (line: string) => void): Promise<void> {
  const before = await client.status();
  const kinds = reflectors(before).length;
  const lists = new Map(reflectors(before).map((x) => [x.kind, x.lists]));
  const baseRss = await settledRssKiB(pid);
  // RSS every 10 ms from just before the fault until 1 s after the relist is done.
  let sampling = true;
  let peak = baseRss;
  let samples = 0;
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, await rssKiB(pid).catch(() => 0));
      samples++;
      await sleep(10);
    }
  })();
  const cpu0 = await cpuMs(pid);
  const mark = v.api.requests.length;
  const t0 = now();
  v.api.faults.compact();
  out.relistWatchesDropped = v.api.faults.dropWatches();
  // Done when every kind has been listed again and its watch reopened after that list: a
  // reflector opens its watch only once the list is in the store. Read from the API server's
  // request log in this process, every ms: nothing is asked of the agent meanwhile.
  const paths = new Set(v.api.requests.slice(0, mark).filter((q) => q.watch).map((q) => q.path));
  if (paths.size !== kinds) throw new Error(`the agent watches ${paths.size} paths, it has ${kinds} reflectors`);
  const relisted = () => {
    const since = v.api.requests.slice(mark);
    return [...paths].every((p) => {
      const list = since.findIndex((q) => q.path === p && !q.watch && q.method === 'GET');
      return list >= 0 && since.some((q, i) => i > list && q.path === p && q.watch);
    });
  };
  while (!relisted()) {
    if (msSince(t0, now()) > 30_000) throw new Error('relist not done after 30 s');
    await sleep(1);
  }
  const doneAt = now();
  const cpu1 = await cpuMs(pid);
  await sleep(1000);
  const cpu2 = await cpuMs(pid);
  sampling = false;
  await sampler;
  const after = await settledRssKiB(pid);
  const st = await client.status();
  const again = reflectors(st).filter((x) => x.synced && x.lists === (lists.get(x.kind) ?? 0) + 1).length;
  if (again !== kinds) throw new Error(`after the relist, ${again} of ${kinds} kinds were listed exactly once more: ${JSON.stringify(reflectors(st))}`);
  if (st.store.programmed !== st.store.revision) throw new Error(`store not programmed after the relist: ${JSON.stringify(st.store)}`);
  const wallMs = msSince(t0, doneAt);
  out.relistSamples = samples;
  out.relistStoreChanges = st.store.revision - before.store.revision;
  out.cpuAfterRelistMs = cpu2 - cpu1;
  fig.record(RELIST, v.label, 'ms', wallMs);
  fig.record(RELIST_CPU, v.label, 'ms', cpu1 - cpu0);
  fig.record(RELIST_BEFORE, v.label, 'MiB', baseRss / 1024);
  fig.record(RELIST_PEAK, v.label, 'MiB', peak / 1024);
  fig.record(RELIST_AFTER, v.label, 'MiB', after / 1024);
  say(
    `relist of ${kinds} kinds (${out.relistWatchesDropped} watches dropped): ${num(wallMs)} ms, ${num(cpu1 - cpu0)} ms CPU (+${num(cpu2 - cpu1)} ms in the second after), ` +
      `RSS ${num(baseRss / 1024)} → peak ${num(peak / 1024)} → ${num(after / 1024)} MiB (${samples} samples), ${out.relistStoreChanges} store changes`,
  );
}

// ---- the figure ------------------------------------------------------------------------

export async function benchKubernetes(cfg: BenchConfig, tag: string): Promise<Figure> {
  const prefix = `${tag}k`;
  const self = `${prefix}-node`;
  const fullLabel = fullVariant(cfg.kubePods);
  const fig = new Figure(`6. Kubernetes mode, ${cfg.kubePods.toLocaleString('en')} pods: API change → programmed, start, full relist`);
  const load0 = loadAverage();
  clockTicks = Number((await run('getconf', ['CLK_TCK'], { timeoutMs: 5000 })).trim()) || 100;

  // Two API servers in this process: one with the cluster's pods, one with a single pod.
  const apis: TestKubeApiServer[] = [];
  const stopApis = defer(async () => {
    for (const a of apis) await a.stop();
  });
  const bridges: Bridge[] = [];
  const closeBridges = defer(async () => {
    for (const b of bridges) await b.close();
  });
  try {
    // Bookmarks as often as a real server sends them (~1 min), not the test default of 1 s.
    const small = await startKubeApiServer({ bookmarkIntervalMs: 60_000 });
    apis.push(small);
    const big = await startKubeApiServer({ bookmarkIntervalMs: 60_000 });
    apis.push(big);
    const t = Date.now();
    const variants: Variant[] = [
      { label: ONE, api: small, kubeconfig: '', pods: fillApi(small, 1, self), full: false },
      { label: fullLabel, api: big, kubeconfig: '', pods: fillApi(big, cfg.kubePods, self), full: true },
    ];
    const listMiB = JSON.stringify(big.objects.list('v1', 'Pod')).length / 2 ** 20;
    progress(`kubernetes: API filled in ${Date.now() - t} ms: ${cfg.kubePods} pods in ${NAMESPACES} namespaces on ${NODES} nodes (${num(listMiB)} MiB of pod JSON)`);
    // The agent reaches each server on its own port of the node's netns.
    const ports = [6443, 6444];
    variants.forEach((v, i) => {
      v.kubeconfig = path.join(v.api.dir, 'node-kubeconfig');
      writeFileSync(v.kubeconfig, readFileSync(v.api.kubeconfigPath, 'utf8').split(`127.0.0.1:${v.api.port}`).join(`127.0.0.1:${ports[i]}`), { mode: 0o600 });
    });

    const node = await startKelpNode({
      prefix,
      logLevel: 'info',
      outside: false,
      agentArgs: [`--kubeconfig=${variants[0].kubeconfig}`],
      beforeAgent: (s) => {
        variants.forEach((v, i) => bridges.push(bridgeInto(`/var/run/netns/${s.node}`, ports[i], v.api.port)));
      },
    });
    try {
      await node.sb.stopAgent();
      const logs: RoundLog[] = [];
      for (let r = 0; r < cfg.kubeRounds; r++) {
        for (const v of variants) logs.push(await runVariant(fig, cfg, node.sb, v, r));
      }
      notes(fig, cfg, fullLabel, listMiB, logs, [load0, loadAverage()]);
    } finally {
      await node.stop();
    }
  } finally {
    await closeBridges();
    await stopApis();
  }
  return fig;
}

/** The 1-minute load average: other work on the machine shows in it. */
function loadAverage(): number {
  return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
}

function notes(fig: Figure, cfg: BenchConfig, fullLabel: string, listMiB: number, logs: RoundLog[], load: number[]): void {
  const full = logs.filter((l) => l.relistSamples !== undefined);
  const reconcilers = [...new Set(logs.flatMap((l) => l.reconcilers))];
  const sum = (f: (l: RoundLog) => number) => logs.reduce((n, l) => n + f(l), 0);
  const extra = sum((l) => l.extraRevisions);
  const list = (xs: number[]) => xs.map((x) => num(x)).join(', ');
  fig.notes.push(
    'What is measured: the time from a write in the API server until the agent reports the store revision that change made as programmed by every ' +
      'reconciler (`GET /v1/programmed?revision=N`, the wait behind `kelp apply --wait`). ' +
      (reconcilers.every((n) => n === 'endpoints')
        ? `The agent ran ${reconcilers.length ? 'one reconciler, `endpoints`, which follows the CNI endpoint records, not API objects' : 'no reconciler'}, so a Pod ` +
          'change is programmed once it is validated and in the agent’s object store: this is the API → watch → store path. When a reconciler maps pods ' +
          '(policy, services), the same measure takes in its debounce (10 ms) and its map update with no change here: it then is "API change → BPF map update".'
        : `The agent ran the reconcilers ${reconcilers.map((n) => `\`${n}\``).join(', ')}: the figure takes in whatever those that follow pods do with a change.`),
    `The API: the project's test API server (test/support/kube-apiserver: TLS, bearer token, real watch semantics) in the benchmark's own process, ` +
      `reached from the node's netns through a bridge (test/support/kube-apiserver/bridge.ts, TCP_NODELAY like a real server and client) with bookmarks every 60 s as a real server. ` +
      `"${fullLabel}": ${cfg.kubePods.toLocaleString('en')} pods as Deployments make them (${NAMESPACES} namespaces × ${APPS.length} apps, six labels, two containers with named ports, ` +
      `owner, full status; ${num(listMiB)} MiB of JSON in a list of them) on ${NODES} Node objects. "${ONE}": the same Nodes and a single pod. ` +
      'No reference implementation runs here (no kube-proxy or other agent to compare with): the one-pod API is a baseline for what the store size costs.',
    `Per round and variant, a fresh agent (\`kelp agent --kubeconfig\` in the node netns): "start → ready" is spawn until its socket answers /v1/healthz ` +
      '(polled every 25 ms); it listens only once every kind is listed and in the store. "of which: list and sync" is the time between its log lines ' +
      '"watching the Kubernetes API" and "kelp agent ready" (the rest is Node start-up, modules and BPF objects). "agent CPU" is its utime + stime at ready; ' +
      'RSS is VmRSS, median of 5 samples after 1 s idle.',
    `Changes: ${cfg.kubeChanges} label patches per round and variant (a JSON merge patch of one label, a new value each, pods spread over the namespaces), one at a time. ` +
      `Before each, the agent is sent the \`GET /v1/programmed\` for the revision the change will make, and left until it has read it and slept ${IDLE_MS} ms ` +
      '(its main thread, watched in /proc/<pid>/task/<pid>/{stat,schedstat}); the change is timed from just before the write (the test server takes ' +
      `${num(median(logs.flatMap((l) => l.patchMs)))} ms of it, median) until that GET's answer arrives. p50 and p99 are per round, over its ${cfg.kubeChanges} changes. ` +
      `"CPU per change" is the agent's main-thread CPU time from the write until it has slept ${IDLE_MS} ms again, answering that GET included. ` +
      'After each change, `GET /v1/pods` (its round trip is a row: it lists every pod) showed the new value; ' +
      (extra === 0 ? 'the store revision moved by exactly one per change.' : `${extra} store revisions came from something else meanwhile.`),
    `Burst (${fullLabel} only): ${BURST_SIZE} patches on distinct pods written in one tick (${list(full.map((l) => l.burstWriteMs ?? 0))} ms per round in the test server; ` +
      'the bridge passes them on only after the last), timed from the last write until the revision of the last is programmed ' +
      `(${list(full.map((l) => l.burstFromFirstMs ?? 0))} ms from the first write). The store took ${list(full.map((l) => l.burstRevisions ?? 0))} revisions: ` +
      'one per change, as it applies each watch event when it comes; nothing coalesces there, nor should it. What a burst shares is the agent’s wake-ups and reads ' +
      '(compare its CPU per change with one at a time). With no reconciler on pods nothing downstream coalesces yet; the reconcile loop debounces 10 ms, so a burst ' +
      'will cost such a reconciler a few runs, not one per change.',
    `Full relist (${fullLabel} only): the API's history compacted and its ${full[0]?.relistWatchesDropped ?? 0} watches dropped at once; each reflector resumes its watch, gets 410 Expired and ` +
      `lists its kind again (${num(listMiB)} MiB for the pods). Timed until every kind has been listed and its watch opened again after that list ` +
      '(a reflector reopens it only once the list is in the store), read from the API server’s request log, with nothing asked of the agent; ' +
      `afterwards its status showed each kind listed exactly once more, and the relist changed the store ${sum((l) => l.relistStoreChanges ?? 0)} times in all (nothing changed in the API). ` +
      `Agent CPU is utime + stime of all its threads (${clockTicks} ticks/s) over that time; in the second after it used ${list(full.map((l) => l.cpuAfterRelistMs ?? 0))} ms more, per round (not counted). ` +
      `Peak RSS: VmRSS sampled every 10 ms (${num(median(full.map((l) => l.relistSamples ?? 0)))} samples per relist) from the fault until 1 s after; "RSS before" and "1 s after" as above.`,
    `Machine load (1-minute load average, ${cpus().length} CPUs) when this figure started and ended: ${load.map((x) => x.toFixed(2)).join(' → ')}. ` +
      'The API server, the bridge and the agent share the machine with whatever else runs on it.',
  );
}
