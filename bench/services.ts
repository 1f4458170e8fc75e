// Figure 8: Services, kelp against kube-proxy, with the client reaching the last of N services
// (N = 1, 1,000, 10,000 by default), each service port with two endpoints: the last one's are two
// real pods of the client's node, the others' addresses that never get traffic. Variants, each its
// own node network namespace with a client pod and two backend pods:
//   direct pod → pod          Debian's ptp, no rules: the client connects to a backend's address
//   kube-proxy iptables       ptp + the KUBE-SERVICES / KUBE-SVC-* / KUBE-SEP-* ruleset kube-proxy
//                             writes for N services, loaded with iptables-restore (the machine's
//                             default, nft backend) into the node netns
//   kube-proxy iptables-legacy the same ruleset through iptables-legacy-restore (x_tables)
//   kube-proxy nftables       ptp + kube-proxy's `table ip kube-proxy` for N services, `nft -f`
//   kelp (socket LB)          a kelp node whose agent has N Services + EndpointSlices applied as
//                             manifests, its cgroup hooks on a cgroup the client process joins
//   kelp, per-packet          the same with --socket-lb=off: the tc path's DNAT
//   kelp pod → pod            a kelp node without Services: kelp's own path, the second reference
// Measured: TCP_RR and TCP_CRR (build/bench/rr), every variant at one N in the same client run
// (turns of 100 ms, rotated order), ratios to direct round by round; and the time to program N
// services and to change one of them: iptables-legacy-restore and iptables-nft-restore of the full
// ruleset, then a kube-proxy partial sync (--noflush); nft -f of the full table, then one
// transaction; kelp, POST /v1/objects and its --wait answer, then one EndpointSlice changed.
// A kelp variant that cannot be set up (flags the agent lacks, objects it refuses, services it does
// not program within a bound, a VIP that does not answer) is reported as not available, with why.
import { existsSync, mkdirSync, mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { requestJson } from '../src/cli/client';
import { ipOffset, ipToString, parseIp } from '../src/ipam/ip';
import { SandboxPod, sh } from '../src/sandbox';
import { applyObjects, Obj, programmed } from './lib/agent-api';
import { defer, throwIfInterrupted } from './lib/cleanup';
import { BenchConfig, rotate } from './lib/config';
import { run, startServer, timedExec } from './lib/exec';
import { Figure, HeadlineRow, spreadText } from './lib/figure';
import { KelpNode, startKelpNode } from './lib/kelp-node';
import { kubeProxyChangeRules, kubeProxyNftables, kubeProxyNftablesChange, kubeProxyRules, KubeProxyShape, ServicePort } from './lib/kube-proxy';
import { NETNS_DIR, NetnsSet } from './lib/netns';
import { progress, sleep } from './lib/progress';
import { inCgroup, RR_PORT, RrPair, rrRates } from './lib/rr';
import { num, ratio, spread } from './lib/stats';
import { PluginNode } from './lib/targets';
import { benchTool } from './lib/tools';

export const DIRECT = 'direct pod → pod';
/** kelp's own pod → pod path, no service: what kelp's service variants cost on top of it. */
export const KELP_DIRECT = 'kelp pod → pod (no service)';
export const IPT = 'kube-proxy iptables';
export const IPT_LEGACY = 'kube-proxy iptables-legacy';
export const NFT = 'kube-proxy nftables';
export const KELP = 'kelp (socket LB)';
export const KELP_TC = 'kelp, per-packet (--socket-lb=off)';
export const RR = 'TCP_RR';
export const CRR = 'TCP_CRR';

export const LEGACY = 'iptables-legacy-restore --noflush (as kube-proxy)';
export const IPT_NFT = 'iptables-nft-restore --noflush (as kube-proxy)';
export const IPT_NFT_FLUSH = 'iptables-nft-restore, tables flushed';
export const NFT_F = 'nft -f';
export const KELP_POST = 'kelp: POST /v1/objects answered';
export const KELP_WAIT = 'kelp: --wait answered (programmed)';
export const KELP_RUN = "kelp: the agent's services run (its own timing)";
/** The run's map write alone: kelp's counterpart of a restore of rules kube-proxy has generated. */
export const KELP_WRITE = "kelp: the agent's map write (compiled content → maps)";

/** The measure of a request/response test against the last of n services. */
export function rrMeasure(test: string, n: number): string {
  return n === 1 ? `${test}, the only service` : `${test}, last of ${n.toLocaleString('en')} services`;
}
export function programMeasure(n: number): string {
  return `program ${n.toLocaleString('en')} services`;
}
export function changeMeasure(n: number): string {
  return `change 1 of ${n.toLocaleString('en')} services`;
}

const NS = 'bench';
const SERVICE_PORT = 80;
const ENDPOINTS = 2;
/** kube-proxy nodes' cluster IPs; kelp node k gets 10.(97+k).0.0/16, so no agent's hooks see another's VIPs. */
const KUBE_PROXY_VIPS = '10.96.0.0/16';
/** The other services' endpoints: addresses nothing answers on, never contacted. */
const IDLE_ENDPOINTS = '10.200.0.0/16';
/** Plain (ptp) nodes' pod CIDRs are 10.248.k.0/24, kelp nodes' 10.249.k.0/24. */
const plainCidr = (k: number) => `10.248.${k}.0/24`;
const kelpCidr = (k: number) => `10.249.${k}.0/24`;
/** Sandbox prefixes are ≤ 6 characters: the run tag and one letter per kelp node. */
const SOCK_LETTERS = 'abcd';
const TC_LETTERS = 'efgh';
const CGROUP_V2 = '/sys/fs/cgroup/unified';
const CNIRUN = path.join(__dirname, '../build/bench/cnirun');
const LEGACY_RESTORE = '/usr/sbin/iptables-legacy-restore';
const IPT_NFT_RESTORE = '/usr/sbin/iptables-nft-restore';

/** How long the agent gets to program the datapath nodes' services before kelp counts as not available. */
const PROGRAM_TIMEOUT_MS = 120_000;
/** A VIP that does not accept a connection within this is not served. */
const CONNECT_TIMEOUT_S = 2;

// ---- the services -----------------------------------------------------------------------------

function nth(cidr: string, i: number): string {
  return ipToString(ipOffset(parseIp(cidr.split('/')[0]), i));
}

/** n service ports from `vips`, each with two endpoints; the last one's are `last`. */
function servicePorts(n: number, vips: string, last: string[]): ServicePort[] {
  return Array.from({ length: n }, (_, i) => ({
    name: `${NS}/svc-${i}:rr`,
    vip: nth(vips, 10 + i),
    port: SERVICE_PORT,
    targetPort: RR_PORT,
    endpoints: i === n - 1 ? last : Array.from({ length: ENDPOINTS }, (_, j) => nth(IDLE_ENDPOINTS, 2 + ENDPOINTS * i + j)),
  }));
}

/** The change timed: one endpoint of the middle service replaced by another address. */
function changed(ports: ServicePort[]): { index: number; before: ServicePort; after: ServicePort } {
  const index = ports.length >> 1;
  const before = ports[index];
  return { index, before, after: { ...before, endpoints: [...before.endpoints.slice(0, -1), nth('10.201.0.0/16', 2 + index)] } };
}

function iptablesShape(ports: ServicePort[], podCidr: string): KubeProxyShape {
  return { services: ports.length, endpointsPerService: ENDPOINTS, servicesWithoutEndpoints: 0, podCidr, ports };
}

/** A Service without selector and its EndpointSlice, as a controller or a user writes them. */
function serviceObjects(p: ServicePort, node?: string): Obj[] {
  const name = p.name.split('/')[1].split(':')[0];
  const portName = p.name.split(':')[1];
  return [
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: NS },
      spec: { type: 'ClusterIP', clusterIP: p.vip, clusterIPs: [p.vip], ports: [{ name: portName, port: p.port, targetPort: p.targetPort, protocol: 'TCP' }] },
    },
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${name}-bench`, namespace: NS, labels: { 'kubernetes.io/service-name': name, 'endpointslice.kubernetes.io/managed-by': 'bench' } },
      addressType: 'IPv4',
      ports: [{ name: portName, port: p.targetPort, protocol: 'TCP' }],
      endpoints: p.endpoints.map((ip) => ({ addresses: [ip], conditions: { ready: true, serving: true, terminating: false }, ...(node ? { nodeName: node } : {}) })),
    },
  ];
}

function manifests(ports: ServicePort[], node?: string): Obj[] {
  return [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } }, ...ports.flatMap((p) => serviceObjects(p, node))];
}

// ---- nodes ------------------------------------------------------------------------------------

interface Pod {
  netns: string;
  ip: string;
}

interface Variant {
  name: string;
  /** undefined for the direct variant, which every N shares. */
  n?: number;
  client: Pod;
  backends: Pod[];
  /** Where the client connects: a VIP, or the first backend for the direct variant. */
  target: { ip: string; port: number };
  /** The cgroup the client must be in (socket LB). */
  cgroup?: string;
}

/** Runs a program in a namespace through build/bench/cnirun, `input` on its stdin; its own spawn → exit time in ms. */
async function nsRun(netnsPath: string, argv: string[], input: string): Promise<number> {
  const r = await timedExec(CNIRUN, ['-n', netnsPath, ...argv], {}, input);
  const m = /(?:^|\n)cnirun-ns=(\d+)\n$/.exec(r.stderr);
  if (!m || r.code !== 0) throw new Error(`${argv.join(' ')} in ${netnsPath}: exit ${r.code}: ${r.stderr.trim().slice(0, 500)}`);
  return Number(m[1]) / 1e6;
}

/** A ptp node with a client pod and `backends` backend pods. */
async function plainNode(node: string, subnet: string, backends: number, closers: Array<() => Promise<void>>): Promise<{ client: Pod; backends: Pod[] }> {
  throwIfInterrupted();
  const pn = PluginNode.open(node, { type: 'ptp' }, subnet);
  closers.push(() => pn.close());
  const netns = new NetnsSet();
  closers.push(() => netns.close());
  const target = pn.target(node);
  const pods: Pod[] = [];
  for (const role of ['c', ...Array.from({ length: backends }, (_, j) => `b${j + 1}`)]) {
    const ns = `${node}-${role}`;
    const [p] = netns.create([ns]);
    const res = await target.call('ADD', `${node.replace(/-/g, '')}${role}`, p);
    const [addr] = (JSON.parse(res.stdout) as { ips: Array<{ address: string; gateway: string }> }).ips;
    // host-local as PluginNode configures it gives no routes beyond the subnet: a pod's default route, as a cluster's CNI config has it.
    sh('ip', ['-n', ns, 'route', 'add', 'default', 'via', addr.gateway]);
    pods.push({ netns: ns, ip: addr.address.split('/')[0] });
  }
  return { client: pods[0], backends: pods.slice(1) };
}

/** kube-proxy's modes, each with the variant it makes and the node-name letter; iptables is the machine's default (nft backend). */
const KUBE_PROXY_MODES = [
  { name: IPT, letter: 'i', restore: '/usr/sbin/iptables-restore' },
  { name: IPT_LEGACY, letter: 'l', restore: LEGACY_RESTORE },
  { name: NFT, letter: 'n' },
] as const;
type KubeProxyMode = (typeof KUBE_PROXY_MODES)[number];

async function kubeProxyNode(tag: string, mode: KubeProxyMode, n: number, k: number, closers: Array<() => Promise<void>>): Promise<Variant> {
  const node = `${tag}-s${mode.letter}${k}`;
  const subnet = plainCidr(1 + KUBE_PROXY_MODES.length * k + KUBE_PROXY_MODES.indexOf(mode));
  const { client, backends } = await plainNode(node, subnet, ENDPOINTS, closers);
  const ports = servicePorts(n, KUBE_PROXY_VIPS, backends.map((b) => b.ip));
  const nsPath = `${NETNS_DIR}/${node}`;
  const ms =
    'restore' in mode
      ? // Not --noflush: the node's tables hold nothing else, and iptables-nft-restore takes ~1 min with it at 10,000 services (the programming rows time that).
        await nsRun(nsPath, [mode.restore, '-w'], kubeProxyRules(iptablesShape(ports, subnet)).text)
      : await nsRun(nsPath, ['/usr/sbin/nft', '-f', '-'], kubeProxyNftables(ports, subnet, KUBE_PROXY_VIPS).text);
  progress(`services: ${node}: ${mode.name}, ${n.toLocaleString('en')} services loaded in ${num(ms)} ms`);
  const last = ports[ports.length - 1];
  return { name: mode.name, n, client, backends, target: { ip: last.vip, port: last.port } };
}

interface KelpSetup {
  variant?: Variant;
  /** Why the variant is not available. */
  missing?: string;
}

/** The first line of an error, enough to say why a variant is missing. */
function why(e: unknown): string {
  return ((e as Error).message ?? String(e)).split('\n')[0].slice(0, 300);
}

/**
 * The cgroup v2 hierarchy mounted once more, on a directory of this run's: the agent runs under
 * `ip netns exec`, whose fresh sysfs on /sys hides ${CGROUP_V2}. The same hierarchy, so a
 * cgroup made here is ${CGROUP_V2}/<name> too.
 */
function cgroupMount(tag: string, closers: Array<() => Promise<void>>): string {
  const dir = mkdtempSync(path.join(tmpdir(), `kelp-bench-${tag}-cgroup2-`));
  try {
    sh('mount', ['-t', 'cgroup2', 'cgroup2', dir]);
  } catch (e) {
    rmdirSync(dir);
    throw e;
  }
  closers.push(
    defer(() => {
      sh('umount', ['-l', dir], { allowFail: true });
      rmdirSync(dir);
    }),
  );
  return dir;
}

/** A cgroup v2 directory of this run, removed at cleanup (once the clients that joined it have exited). */
async function benchCgroup(mount: string, tag: string, n: number, closers: Array<() => Promise<void>>): Promise<string> {
  const dir = path.join(mount, `kelp-bench-${tag}-n${n}`);
  mkdirSync(dir);
  closers.push(
    defer(async () => {
      for (let i = 0; i < 50 && existsSync(dir); i++) {
        try {
          rmdirSync(dir);
        } catch {
          // EBUSY while an exiting process is still a member
          await sleep(50);
        }
      }
    }),
  );
  return dir;
}

async function kelpNode(tag: string, socketLb: boolean, n: number, k: number, cpu: number, cgroups: () => string, closers: Array<() => Promise<void>>): Promise<KelpSetup> {
  const name = socketLb ? KELP : KELP_TC;
  const prefix = `${tag}${(socketLb ? SOCK_LETTERS : TC_LETTERS)[k]}`;
  let node: KelpNode;
  let cgroup: string | undefined;
  try {
    if (socketLb) cgroup = await benchCgroup(cgroups(), tag, n, closers);
    const agentArgs = socketLb ? [`--cgroup-root=${cgroup}`] : ['--socket-lb=off'];
    node = await startKelpNode({ prefix, podCidr: kelpCidr(k * 2 + (socketLb ? 0 : 1)), logLevel: 'info', outside: false, agentArgs });
  } catch (e) {
    return { missing: `the agent did not start with ${socketLb ? '--cgroup-root' : '--socket-lb=off'}: ${why(e)}` };
  }
  closers.push(node.stop);
  const sb = node.sb;
  let missing: string | undefined;
  try {
    const client = await sb.addPod('client', NS);
    const backends: SandboxPod[] = [];
    for (let j = 0; j < ENDPOINTS; j++) backends.push(await sb.addPod(`backend-${j}`, NS));
    const vips = `10.${97 + k * 2 + (socketLb ? 0 : 1)}.0.0/16`;
    const ports = servicePorts(n, vips, backends.map((b) => b.ip));
    const t0 = Date.now();
    const rev = await applyObjects(sb.socketPath, manifests(ports, sb.node));
    if (await programmed(sb.socketPath, rev, PROGRAM_TIMEOUT_MS)) {
      progress(`services: ${sb.node}: ${name}, ${n.toLocaleString('en')} services applied and programmed in ${Date.now() - t0} ms`);
      const last = ports[ports.length - 1];
      const pod = (p: SandboxPod): Pod => ({ netns: p.netns, ip: p.ip });
      const variant: Variant = { name, n, client: pod(client), backends: backends.map(pod), target: { ip: last.vip, port: last.port }, cgroup };
      missing = (cgroup ? socketLbMissing(sb.agentLog(), cgroup) : undefined) ?? (await answers(variant, cpu));
      if (!missing) return { variant };
    } else missing = `${n.toLocaleString('en')} services not programmed within ${PROGRAM_TIMEOUT_MS / 1000} s`;
  } catch (e) {
    missing = why(e);
  }
  // Nothing of a node that is not measured should run beside the others.
  await node.stop();
  return { missing };
}

/** A kelp node with two pods and no Service: the client connects to the server's address. Undefined when the agent cannot run. */
async function kelpPodToPod(tag: string, cpu: number, closers: Array<() => Promise<void>>): Promise<Variant | undefined> {
  try {
    const node = await startKelpNode({ prefix: `${tag}r`, podCidr: kelpCidr(100), logLevel: 'info', outside: false, agentArgs: ['--socket-lb=off'] });
    closers.push(node.stop);
    const client = await node.sb.addPod('client', NS);
    const server = await node.sb.addPod('server', NS);
    const v: Variant = { name: KELP_DIRECT, client: { netns: client.netns, ip: client.ip }, backends: [{ netns: server.netns, ip: server.ip }], target: { ip: server.ip, port: RR_PORT } };
    const problem = await answers(v, cpu);
    if (!problem) return v;
    progress(`services: ${KELP_DIRECT} not available: ${problem}`);
    return undefined;
  } catch (e) {
    progress(`services: ${KELP_DIRECT} not available: ${why(e)}`);
    return undefined;
  }
}

/**
 * Why socket LB is not on the cgroup, if it is not: without a connect4 program there, the VIP is
 * still served, per packet, and the variant would measure the other path under this one's name.
 */
function socketLbMissing(agentLog: string, cgroup: string): string | undefined {
  if (/inet4_connect/.test(sh('bpftool', ['cgroup', 'show', cgroup, '-j'], { allowFail: true }))) return undefined;
  const said = agentLog
    .split('\n')
    .filter((l) => /socket LB/i.test(l))
    .map((l) => {
      try {
        return (JSON.parse(l) as { msg?: string }).msg;
      } catch {
        return undefined;
      }
    })
    .filter(Boolean);
  return `no program on the cgroup's connect4 hook after the agent started${said.length ? ` (the agent: "${said[said.length - 1]}")` : ''}`;
}

/** Whether the variant's target accepts a connection from its client pod within CONNECT_TIMEOUT_S; else why not. */
async function answers(v: Variant, cpu: number): Promise<string | undefined> {
  const bin = benchTool('rr');
  const servers = await Promise.all(
    v.backends.map((b) => startServer('ip', ['netns', 'exec', b.netns, 'taskset', '-c', String(cpu), bin, 'server', String(RR_PORT), '30'], /^listening/m, { timeoutMs: 5000 })),
  );
  try {
    const connect = ['ip', 'netns', 'exec', v.client.netns, 'timeout', String(CONNECT_TIMEOUT_S), 'bash', '-c', `exec 3<>/dev/tcp/${v.target.ip}/${v.target.port}`];
    const [cmd, ...args] = v.cgroup ? inCgroup(v.cgroup, connect) : connect;
    await run(cmd, args, { timeoutMs: (CONNECT_TIMEOUT_S + 5) * 1000 });
    return undefined;
  } catch (e) {
    return `${v.target.ip}:${v.target.port} did not accept a connection from the client pod within ${CONNECT_TIMEOUT_S} s (${why(e).replace(/^.*: (exit \d+|killed by \w+): ?/, '$1')})`;
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
}

function pair(v: Variant): RrPair {
  const [first, ...more] = v.backends;
  return { name: v.name, clientNetns: v.client.netns, serverNetns: first.netns, moreServerNetns: more.map((b) => b.netns), serverIp: v.target.ip, port: v.target.port };
}

// ---- programming ------------------------------------------------------------------------------

interface ServicesStatus {
  /** The services reconciler's last run as the agent timed it, once its status reports it (as policy's does). */
  services?: { lastRun?: { ms?: number; inputsMs?: number; compileMs?: number; writeMs?: number } | null } | null;
}

interface ProgramLog {
  /** Why kelp was not timed, when it was not. */
  kelpMissing?: string;
  changeModel: string;
}

/** One round of each: a fresh namespace (kube-proxy) or a fresh agent (kelp) per tool, in rotated order. */
async function programRound(fig: Figure, cfg: BenchConfig, tag: string, r: number, log: ProgramLog): Promise<void> {
  const n = cfg.servicesProgramN;
  const podCidr = plainCidr(200);
  const ports = servicePorts(n, KUBE_PROXY_VIPS, [nth(IDLE_ENDPOINTS, 0), nth(IDLE_ENDPOINTS, 1)]);
  const { index, before, after } = changed(ports);
  const portsAfter = ports.map((p, i) => (i === index ? after : p));
  const say = (line: string) => progress(`services program round ${r + 1}/${cfg.servicesProgramRounds}: ${line}`);
  const tools: Array<{ name: string; go: () => Promise<void> }> = [];
  const wanted = cfg.servicesTools;
  const inFreshNetns = async (name: string, full: [string[], string], change: [string[], string]) => {
    const netns = new NetnsSet();
    try {
      const [p] = netns.create([`${tag}-sp`]);
      const fullMs = await nsRun(p, ...full);
      const changeMs = await nsRun(p, ...change);
      fig.record(programMeasure(n), name, 'ms', fullMs);
      fig.record(changeMeasure(n), name, 'ms', changeMs);
      say(`${name}: ${num(fullMs)} ms for ${n.toLocaleString('en')} services, ${num(changeMs)} ms to change one`);
    } finally {
      await netns.close();
    }
  };
  const iptFull = kubeProxyRules(iptablesShape(ports, podCidr)).text;
  const iptChange = kubeProxyChangeRules(iptablesShape(portsAfter, podCidr), before, after);
  // kube-proxy runs `iptables-restore -w 5 -W 100000 --noflush --counters` for every sync, the first one too.
  for (const [tool, name, bin, flags] of [
    ['legacy', LEGACY, LEGACY_RESTORE, ['-w', '--noflush', '--counters']],
    ['iptables-nft', IPT_NFT, IPT_NFT_RESTORE, ['-w', '--noflush', '--counters']],
    ['iptables-nft-flush', IPT_NFT_FLUSH, IPT_NFT_RESTORE, ['-w']],
  ] as const) {
    if (wanted.has(tool) && existsSync(bin)) tools.push({ name, go: () => inFreshNetns(name, [[bin, ...flags], iptFull], [[bin, '-w', '--noflush', '--counters'], iptChange]) });
  }
  if (wanted.has('nft')) tools.push({
    name: NFT_F,
    go: () => inFreshNetns(NFT_F, [['/usr/sbin/nft', '-f', '-'], kubeProxyNftables(ports, podCidr, KUBE_PROXY_VIPS).text], [['/usr/sbin/nft', '-f', '-'], kubeProxyNftablesChange(before, after, podCidr)]),
  });
  if (wanted.has('kelp') && !log.kelpMissing) tools.push({ name: 'kelp', go: () => kelpProgram(fig, tag, ports, { index, after }, log, say) });
  for (const t of rotate(tools, r)) {
    throwIfInterrupted();
    await t.go();
  }
}

async function kelpProgram(fig: Figure, tag: string, ports: ServicePort[], change: { index: number; after: ServicePort }, log: ProgramLog, say: (line: string) => void): Promise<void> {
  const n = ports.length;
  let node: KelpNode;
  try {
    node = await startKelpNode({ prefix: `${tag}q`, podCidr: kelpCidr(200), logLevel: 'info', outside: false, agentArgs: ['--socket-lb=off'] });
  } catch (e) {
    log.kelpMissing = `agent did not start: ${why(e)}`;
    say(`kelp: not available: ${log.kelpMissing}`);
    return;
  }
  try {
    const sock = node.sb.socketPath;
    const timed = async (objects: Obj[]): Promise<{ post: number; wait?: number; run?: number; write?: number; spans?: string }> => {
      const t0 = process.hrtime.bigint();
      const rev = await applyObjects(sock, objects);
      const post = Number(process.hrtime.bigint() - t0) / 1e6;
      const ok = await programmed(sock, rev, PROGRAM_TIMEOUT_MS);
      const wait = ok ? Number(process.hrtime.bigint() - t0) / 1e6 : undefined;
      const st = await requestJson<ServicesStatus>(sock, 'GET', '/v1/status');
      const lr = st.services?.lastRun;
      const spans = lr?.compileMs === undefined ? undefined : `inputs ${num(lr.inputsMs ?? NaN)}, compile ${num(lr.compileMs)}, write ${num(lr.writeMs ?? NaN)} ms`;
      return { post, wait, run: lr?.ms, write: lr?.writeMs, spans };
    };
    const record = (measure: string, t: { post: number; wait?: number; run?: number; write?: number }) => {
      fig.record(measure, KELP_POST, 'ms', t.post);
      if (t.wait !== undefined) fig.record(measure, KELP_WAIT, 'ms', t.wait);
      if (t.run !== undefined) fig.record(measure, KELP_RUN, 'ms', t.run);
      if (t.write !== undefined) fig.record(measure, KELP_WRITE, 'ms', t.write);
    };
    const full = await timed(manifests(ports));
    if (full.wait === undefined) {
      log.kelpMissing = `${n.toLocaleString('en')} services not programmed within ${PROGRAM_TIMEOUT_MS / 1000} s`;
      say(`kelp: not available: ${log.kelpMissing}`);
      return;
    }
    const one = await timed(serviceObjects(change.after).slice(1));
    record(programMeasure(n), full);
    record(changeMeasure(n), one);
    const show = (t: { post: number; wait?: number; run?: number; spans?: string }) =>
      `POST ${num(t.post)} ms, --wait ${t.wait === undefined ? 'not programmed' : `${num(t.wait)} ms`}, agent's run ${t.run === undefined ? '?' : `${num(t.run)} ms`}${t.spans ? ` (${t.spans})` : ''}`;
    say(`kelp: ${n.toLocaleString('en')} services: ${show(full)}; one EndpointSlice changed: ${show(one)}`);
  } catch (e) {
    log.kelpMissing = why(e);
    say(`kelp: not available: ${log.kelpMissing}`);
  } finally {
    await node.stop();
  }
}

// ---- the figure -------------------------------------------------------------------------------

export async function benchServices(cfg: BenchConfig, tag: string): Promise<Figure> {
  const ns = cfg.servicesN;
  if (ns.length > SOCK_LETTERS.length) throw new Error(`BENCH_SERVICES_N: at most ${SOCK_LETTERS.length} service counts, got ${ns.length}`);
  const fig = new Figure(`8. Services: TCP_RR/CRR to the last of ${ns.map((n) => n.toLocaleString('en')).join(', ')} services, and programming ${cfg.servicesProgramN.toLocaleString('en')} services: kelp vs kube-proxy`);
  benchTool('cnirun');
  benchTool('rr');
  const iptables = (await run('iptables', ['--version'], { timeoutMs: 5000 })).trim();
  const nft = (await run('nft', ['--version'], { timeoutMs: 5000 })).trim();
  const closers: Array<() => Promise<void>> = [];
  const close = async () => {
    while (closers.length) await closers.pop()!();
  };
  const missing = new Map<string, string>();
  const programLog: ProgramLog = { changeModel: '' };
  try {
    // BENCH_SERVICES_RR=0: the programming rounds alone.
    if (cfg.servicesRr) {
      progress(`services: starting the direct node ${tag}-sd, kube-proxy nodes (iptables, nftables) and kelp nodes (socket LB, per-packet) for N = ${ns.join(', ')}`);
      const d = await plainNode(`${tag}-sd`, plainCidr(0), 1, closers);
      const direct: Variant = { name: DIRECT, client: d.client, backends: d.backends, target: { ip: d.backends[0].ip, port: RR_PORT } };
      const kelpDirect = await kelpPodToPod(tag, cfg.podCpu, closers);
      const groups: Array<{ n: number; variants: Variant[] }> = [];
      let mount: string | undefined;
      const cgroups = () => (mount ??= cgroupMount(tag, closers));
      for (const [k, n] of ns.entries()) {
        const variants = [direct, ...(kelpDirect ? [kelpDirect] : [])];
        for (const mode of KUBE_PROXY_MODES) if (!('restore' in mode) || existsSync(mode.restore)) variants.push(await kubeProxyNode(tag, mode, n, k, closers));
        const plain = variants.length;
        for (const socketLb of [true, false]) {
          const s = await kelpNode(tag, socketLb, n, k, cfg.podCpu, cgroups, closers);
          const name = socketLb ? KELP : KELP_TC;
          if (s.variant) variants.push(s.variant);
          else {
            missing.set(`${name}@${n}`, s.missing!);
            progress(`services: ${name} at ${n.toLocaleString('en')} services not available: ${s.missing}`);
          }
        }
        for (const v of variants.slice(0, plain).filter((x) => x !== kelpDirect)) {
          const problem = await answers(v, cfg.podCpu);
          if (problem) throw new Error(`${v.name}${v.n ? ` at ${v.n} services` : ''}: ${problem}`);
        }
        groups.push({ n, variants });
      }

      for (let r = 0; r < cfg.servicesRounds; r++) {
        throwIfInterrupted();
        for (const g of rotate(groups, r)) {
          const order = rotate(g.variants, r);
          const cgroup = order.find((v) => v.cgroup)?.cgroup;
          for (const [test, mode] of [
            [RR, 'rr'],
            [CRR, 'crr'],
          ] as const) {
            const rates = await rrRates(order.map(pair), mode, cfg.rrSeconds, cfg.podCpu, 100, { cgroup });
            order.forEach((v, i) => fig.record(rrMeasure(test, g.n), v.name, 'transactions/s', rates[i].rate));
            progress(`services round ${r + 1}/${cfg.servicesRounds}: ${rrMeasure(test, g.n)}: ${order.map((v, i) => `${v.name} ${rates[i].rate}/s`).join(', ')}`);
          }
        }
      }
    }
    await close();

    for (let r = 0; r < cfg.servicesProgramRounds; r++) await programRound(fig, cfg, tag, r, programLog);
  } finally {
    await close();
  }

  for (const g of ns) {
    for (const test of [RR, CRR]) {
      const m = rrMeasure(test, g);
      for (const v of [KELP, KELP_TC, IPT, IPT_LEGACY, NFT]) if (has(fig, m, v)) fig.compare(m, v, DIRECT, 'higher');
      for (const v of [KELP, KELP_TC]) if (has(fig, m, v) && has(fig, m, KELP_DIRECT)) fig.compare(m, v, KELP_DIRECT, 'higher');
      for (const ref of [IPT, NFT]) if (has(fig, m, KELP) && has(fig, m, ref)) fig.compare(m, KELP, ref, 'higher');
    }
  }
  const pn = cfg.servicesProgramN;
  for (const m of [programMeasure(pn), changeMeasure(pn)]) {
    for (const ref of [LEGACY, NFT_F]) {
      if (has(fig, m, KELP_WAIT) && has(fig, m, ref)) fig.compare(m, KELP_WAIT, ref, 'lower');
      // From objects in the agent's store (compile and write), against a restore of rules kube-proxy already generated.
      if (has(fig, m, KELP_RUN) && has(fig, m, ref)) fig.compare(m, KELP_RUN, ref, 'lower');
      // Like for like: the compiled content put in the maps, against the generated rules put in the kernel.
      if (has(fig, m, KELP_WRITE) && has(fig, m, ref)) fig.compare(m, KELP_WRITE, ref, 'lower');
    }
  }
  notes(fig, cfg, { iptables, nft, missing, programLog });
  return fig;
}

function has(fig: Figure, measure: string, variant: string): boolean {
  try {
    return fig.values(measure, variant).length > 0;
  } catch {
    return false;
  }
}

function notes(fig: Figure, cfg: BenchConfig, run: { iptables: string; nft: string; missing: Map<string, string>; programLog: ProgramLog }): void {
  const ns = cfg.servicesN.map((n) => n.toLocaleString('en')).join(', ');
  const pn = cfg.servicesProgramN.toLocaleString('en');
  fig.notes.push(
    `Each variant is its own node network namespace with a client pod and ${ENDPOINTS} backend pods, all on this machine; N services, each one TCP port ` +
      `(${SERVICE_PORT} → ${RR_PORT}) with ${ENDPOINTS} endpoints: the last service's are the two backend pods, the others' addresses in ${IDLE_ENDPOINTS} that never get traffic. ` +
      `**${DIRECT}**: Debian's ptp + host-local (a /32 route per pod, no rules); the client connects to a backend's address. ` +
      `**${IPT}**: the same ptp node with the ruleset kube-proxy's iptables mode writes (bench/lib/kube-proxy.ts: filter KUBE-* chains, nat KUBE-SERVICES with one ` +
      'rule per service port in order — the target last —, KUBE-SVC-* with the masquerade rule and `-m statistic --mode random --probability` per endpoint, ' +
      `KUBE-SEP-* with the DNAT, KUBE-POSTROUTING), loaded with iptables-restore (without --noflush: the node's tables hold nothing else) into the node netns (${run.iptables}, the machine's default, as kube-proxy would use). ` +
      `**${IPT_LEGACY}**: the same ruleset loaded with iptables-legacy-restore (x_tables, what older nodes run). ` +
      `**${NFT}**: the same with kube-proxy's nftables mode's \`table ip kube-proxy\` (${run.nft}): base chains at its hooks and priorities, the service-ips ` +
      'verdict map (ip daddr . l4proto . dport), a chain per service port with the masquerade rule and `numgen random mod 2 vmap`, a chain per endpoint with its dnat; ' +
      `loaded with \`nft -f\`. **${KELP}**: a kelp node (Sandbox: its own agent, bpffs and pods by kelp-cni) with N Services without selector and their EndpointSlices ` +
      `applied as manifests (POST /v1/objects, then --wait), the agent started with --cgroup-root on a cgroup v2 directory the benchmark makes (${CGROUP_V2}/kelp-bench-<run>-n<N>, ` +
      'given to the agent through a second mount of the hierarchy: `ip netns exec` hides /sys/fs/cgroup); ' +
      `**${KELP_TC}**: another such node with --socket-lb=off, the per-packet DNAT in tc. Each kelp node has its own VIP range, so no agent's hooks see another's. ` +
      `**${KELP_DIRECT}**: a kelp node with two pods and no Service, the client connecting to the server's address: kelp's own pod → pod path ` +
      "(bpf_redirect_peer, no routing in the node), faster than the ptp reference's, so kelp ÷ it is what the service costs kelp.",
    `${RR}: 1-byte request and response on one connection; ${CRR}: the same on a new connection each time (build/bench/rr). At each N (${ns}) one client run ` +
      `gives the variants turns of 100 ms until each has had ${cfg.rrSeconds} s, in rotated order each round, client and servers pinned to CPU ${cfg.podCpu}; ` +
      `the direct pair takes part in every N's run, so each ratio compares variants of the same run. The client process joins the socket-LB kelp node's cgroup ` +
      `for that N's run (all variants' connections then pass its connect hook; only kelp's VIPs are in its maps). ${cfg.servicesRounds} rounds.`,
    `Programming, ${cfg.servicesProgramRounds} rounds, the tools in rotated order: **${LEGACY}** and **${IPT_NFT}**: the full ruleset for ${pn} services into a fresh netns ` +
      'with the flags kube-proxy passes to every sync, its first included (`-w --noflush --counters`); ' +
      `**${IPT_NFT_FLUSH}**: the same without --noflush (iptables-nft-restore flushes the tables instead of reading and merging into them: far faster at this size). ` +
      `Then, for each, a change: kube-proxy's partial sync (1.28+): \`iptables-restore --noflush\` with the filter KUBE chains and the nat top-level chains (KUBE-SERVICES, one rule per ` +
      'service port) written in full as every sync writes them, the changed service\'s KUBE-SVC and KUBE-SEP chains, the departed endpoint\'s chain declared and deleted. ' +
      `**${NFT_F}**: the full table in one transaction into a fresh netns, then one transaction rewriting the changed service's chains, adding the new endpoint's chain, ` +
      'deleting the departed one\'s. Each timed from spawn to exit by build/bench/cnirun in the namespace (what kube-proxy waits for). **kelp**: a fresh agent ' +
      `(--socket-lb=off) per round; POST /v1/objects of the ${pn} Services and EndpointSlices, timed until it answered and until GET /v1/programmed answered for its ` +
      "revision (what `kelp apply --wait` waits for), and the agent's own times for its services run (objects in its store → compiled → maps written) and for the " +
      "run's map write alone (the compiled content → maps: what a restore of rules kube-proxy has already generated is to kube-proxy) when its status reports them; " +
      'then one EndpointSlice applied again ' +
      'with the same change. The change in every tool: the middle service\'s second endpoint replaced by another address.',
  );
  // One line per variant and reason, with the service counts it held for.
  const byReason = new Map<string, string[]>();
  for (const [key, reason] of run.missing) {
    const [variant, n] = key.split('@');
    const line = `${variant}: ${reason.replace(/kelp-bench-\w+-n\d+/g, 'kelp-bench-…')}`;
    byReason.set(line, [...(byReason.get(line) ?? []), Number(n).toLocaleString('en')]);
  }
  const missing = [...byReason.entries()].map(([line, ns]) => `${line} (N = ${ns.join(', ')})`);
  if (run.programLog.kelpMissing) missing.push(`kelp programming: ${run.programLog.kelpMissing}`);
  if (missing.length) fig.notes.push(`Not available in this run:\n${missing.map((m) => `- ${m}`).join('\n')}`);
  fig.notes.push(targetsNote(fig, cfg));
}

/** The issue's targets and reference figures against this run's medians. */
function targetsNote(fig: Figure, cfg: BenchConfig): string {
  const lines: string[] = [];
  const med = (m: string, v: string, ref: string) => (has(fig, m, v) && has(fig, m, ref) ? spread(fig.ratios(m, v, ref)) : undefined);
  for (const n of cfg.servicesN) {
    for (const test of [CRR, RR]) {
      const m = rrMeasure(test, n);
      const cells = [KELP, KELP_TC, IPT, IPT_LEGACY, NFT].map((v) => {
        const s = med(m, v, DIRECT);
        return `${v} ${s ? `${ratio(s.median)} (${ratio(s.min)}–${ratio(s.max)})` : 'not available'}`;
      });
      // The target is the default's (socket LB); the per-packet path stands in when that is not available, and says so.
      const kelp = [KELP, KELP_TC].find((v) => med(m, v, DIRECT));
      const k = kelp ? med(m, kelp, DIRECT)! : undefined;
      const verdict = k ? (k.median >= 0.95 ? 'met' : `missed by ${num((1 - k.median / 0.95) * 100)}%`) : 'not measured';
      lines.push(`- ${m}, ÷ direct: ${cells.join('; ')}; target kelp ≥ 0.95×${kelp === KELP_TC ? ' (by the per-packet path: socket LB not available)' : ''}: ${verdict}`);
    }
  }
  const pn = cfg.servicesProgramN;
  const at = (v: string) => (has(fig, programMeasure(pn), v) ? spread(fig.values(programMeasure(pn), v)) : undefined);
  const within = (x: ReturnType<typeof at>) => (x ? `${num(x.median)} ms (${num(x.min)}–${num(x.max)}), ${x.median < 100 ? 'under' : 'over'} the target's 100 ms` : 'not measured');
  const w = at(KELP_WRITE);
  lines.push(
    `- ${programMeasure(pn)}, like for like with the reference rows (which time the restore of rules kube-proxy has already generated, not its generating them): ` +
      `the agent's map write of the compiled content: ${w ? `${num(w.median)} ms (${num(w.min)}–${num(w.max)}), target < 100 ms ${w.median < 100 ? 'met' : 'missed'}` : 'not measured'}`,
  );
  lines.push(`- ${programMeasure(pn)}, the agent's whole services run (objects in its store → compiled → maps written; no reference row has its compile's counterpart): ${within(at(KELP_RUN))}`);
  lines.push(`- ${programMeasure(pn)}, kelp until --wait answered (the POST of the objects included): ${within(at(KELP_WAIT))}`);
  lines.push(
    '- The issue\'s reference figures, measured on this kind of machine, to be reproduced here: at 10,000 services iptables ~11 % and nftables ~79 % of the direct ' +
      'connection rate; programming 10,000 services ~0.8 s (iptables legacy) to ~18 s (nftables).',
  );
  return `Targets (medians of per-round ratios, min–max):\n${lines.join('\n')}`;
}

/** The figure's headline rows; a variant that was not measured says so. */
export function servicesHeadlineRows(fig: Figure | undefined, cfg: BenchConfig): HeadlineRow[] {
  if (!fig) return [];
  const rows: HeadlineRow[] = [];
  const value = (m: string, v: string) => (has(fig, m, v) ? spreadText(spread(fig.values(m, v)), fig.unit(m, v)) : 'not available');
  const versus = (m: string, v: string, ref: string, better: 'higher' | 'lower') =>
    has(fig, m, v) && has(fig, m, ref) ? `${spreadText(spread(fig.ratios(m, v, ref)), '', ratio)}, ${better} is better` : '—';
  const n = Math.max(...cfg.servicesN);
  for (const test of [CRR, RR]) {
    const m = rrMeasure(test, n);
    rows.push({ figure: `Services: ${m} (ref: direct pod → pod)`, kelp: value(m, KELP), reference: value(m, DIRECT), ratio: versus(m, KELP, DIRECT, 'higher') });
    rows.push({ figure: `Services: ${m}, kelp per-packet (ref: direct)`, kelp: value(m, KELP_TC), reference: value(m, DIRECT), ratio: versus(m, KELP_TC, DIRECT, 'higher') });
    rows.push({ figure: `Services: ${m} (ref: ${KELP_DIRECT})`, kelp: value(m, KELP), reference: value(m, KELP_DIRECT), ratio: versus(m, KELP, KELP_DIRECT, 'higher') });
    // kube-proxy against direct: no kelp figure in these rows, the ratio is the reference's own.
    for (const v of [IPT, IPT_LEGACY, NFT]) rows.push({ figure: `Services: ${m}, ${v} ÷ direct (not kelp)`, kelp: '—', reference: value(m, v), ratio: versus(m, v, DIRECT, 'higher') });
  }
  const pn = cfg.servicesProgramN;
  for (const m of [programMeasure(pn), changeMeasure(pn)]) {
    for (const ref of [LEGACY, IPT_NFT, NFT_F]) {
      if (!has(fig, m, ref)) continue;
      rows.push({ figure: `Services: ${m}, kelp --wait (ref: ${ref})`, kelp: value(m, KELP_WAIT), reference: value(m, ref), ratio: versus(m, KELP_WAIT, ref, 'lower') });
    }
    for (const ref of [LEGACY, NFT_F]) {
      if (!has(fig, m, ref)) continue;
      if (has(fig, m, KELP_RUN)) rows.push({ figure: `Services: ${m}, kelp agent's run, store → maps (ref: ${ref})`, kelp: value(m, KELP_RUN), reference: value(m, ref), ratio: versus(m, KELP_RUN, ref, 'lower') });
      if (has(fig, m, KELP_WRITE)) rows.push({ figure: `Services: ${m}, kelp map write, compiled → maps (ref: ${ref})`, kelp: value(m, KELP_WRITE), reference: value(m, ref), ratio: versus(m, KELP_WRITE, ref, 'lower') });
    }
  }
  return rows;
}
