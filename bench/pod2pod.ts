// Figure 5: pod ↔ pod on one node, real packets between two pods, kelp against what a node
// would otherwise run. Each variant is its own node namespace with two pod namespaces:
//   kelp                  a Sandbox node with its agent; pods by kelp-cni (bpf_redirect_peer)
//   minimal eBPF          Debian's ptp + bench/bpf/redirect.c on tcx ingress of each host veth:
//                         one hash lookup and bpf_redirect_peer, the minimal eBPF reference
//   bridge + kube-proxy   Debian's bridge (ipMasq) with a kube-proxy-shaped iptables ruleset
//   bridge                Debian's bridge, no rules
//   routed veths (ptp)    Debian's ptp: /32 routes, the gateway on each host veth, no bridge
// Tests: TCP_RR and TCP_CRR (build/bench/rr: one client giving the variants short turns, client
// and servers pinned to the same CPU: a wake-up on the other vCPU costs ~65 µs on these VMs and
// would hide the datapath), iperf3 with 1 and 4 streams (any CPU), ping RTT. Each round runs every
// test on every variant, the variants in rotated order; ratios are taken round by round. Then,
// with kernel.bpf_stats_enabled on for that run only, a TCP_RR run on kelp and on the minimal
// eBPF variant gives the programs' own run time per packet.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { attachTc, BpfLink, BpfObject, inNetns, listAttached, loadObject, queryTcFilter } from '../src/bpf';
import { POD_FILTER } from '../src/datapath/loader';
import { ipToBytes, parseIp } from '../src/ipam/ip';
import { sh } from '../src/sandbox';
import { defer } from './lib/cleanup';
import { BenchConfig, rotate } from './lib/config';
import { run, startServer } from './lib/exec';
import { Better, Figure } from './lib/figure';
import { startKelpNode } from './lib/kelp-node';
import { DEFAULT_KUBE_PROXY_SHAPE, loadKubeProxyRules } from './lib/kube-proxy';
import { NETNS_DIR, NetnsSet } from './lib/netns';
import { progress } from './lib/progress';
import { median, num, ratio, spread } from './lib/stats';
import { PluginNode } from './lib/targets';

export const KELP = 'kelp';
/** The same kelp node's pods with `"podHook": "tcx"`: what the clsact filter costs per packet. */
export const KELP_TCX = 'kelp, tcx pod hook';
export const EBPF = 'minimal eBPF (redirect.c)';
export const BRIDGE_IPT = 'bridge + kube-proxy iptables';
export const BRIDGE = 'bridge';
export const ROUTED = 'routed veths (ptp)';

export const RR = 'TCP_RR';
export const CRR = 'TCP_CRR';
export const STREAM_1 = 'TCP throughput, 1 stream';
export const STREAM_4 = 'TCP throughput, 4 streams';
export const PING = 'ping RTT';
export const PROG_NS = 'program run time during TCP_RR';
const PROG_RUNS = 'program runs per TCP_RR transaction';

const ROOT = path.join(__dirname, '..');
const RR_SRC = path.join(ROOT, 'bench/tools/rr.c');
const RR_BIN = path.join(ROOT, 'build/bench/rr');
const REDIRECT_OBJ = path.join(ROOT, 'build/bpf/bench_redirect.o');
const RR_PORT = '7000';
const IPERF_PORT = '5201';
const PING_COUNT = 200;
const PING_TURNS = 10;
const STATS_SECONDS = 1;
const RR_SLICE_MS = 100;

export interface Pod {
  netns: string;
  ip: string;
  /** Host-side veth in the node namespace. */
  hostIf: string;
}

export interface Variant {
  name: string;
  node: string;
  client: Pod;
  server: Pod;
  /** The tc program on the host veths whose run time the bpf_stats run reads. */
  prog?: { id: number; name: string };
}

/** The Makefile builds the tool; built here too when it is missing or older than its source. */
function ensureRrTool(): void {
  if (existsSync(RR_BIN) && statSync(RR_BIN).mtimeMs >= statSync(RR_SRC).mtimeMs) return;
  progress(`building ${path.relative(ROOT, RR_BIN)}`);
  mkdirSync(path.dirname(RR_BIN), { recursive: true });
  execFileSync('cc', ['-O2', '-Wall', '-Wextra', '-Werror', '-o', RR_BIN, RR_SRC], { stdio: 'inherit' });
}

function ifindex(node: string, ifname: string): number {
  const [link] = JSON.parse(sh('ip', ['-n', node, '-j', 'link', 'show', 'dev', ifname])) as Array<{ ifindex: number }>;
  return link.ifindex;
}

/** The pod's address and host veth from a CNI result (the veth among the node-side interfaces). */
function podFromResult(node: string, netns: string, result: Record<string, unknown>): Pod {
  const r = result as { ips: Array<{ address: string }>; interfaces?: Array<{ name: string; sandbox?: string }> };
  const host = r.interfaces?.find((i) => !i.sandbox && linkKind(node, i.name) === 'veth');
  if (!host) throw new Error(`no host veth in CNI result ${JSON.stringify(result)}`);
  return { netns, ip: r.ips[0].address.split('/')[0], hostIf: host.name };
}

function linkKind(node: string, ifname: string): string | undefined {
  const [link] = JSON.parse(sh('ip', ['-n', node, '-d', '-j', 'link', 'show', 'dev', ifname])) as Array<{ linkinfo?: { info_kind?: string } }>;
  return link.linkinfo?.info_kind;
}

async function kelpVariants(tag: string, closers: Array<() => Promise<void>>): Promise<[Variant, Variant]> {
  const kelp = await startKelpNode({ prefix: `${tag}p`, podCidr: '10.252.1.0/24', logLevel: 'info' });
  closers.push(kelp.stop);
  const node = kelp.sb.node;
  const pods = async (config?: Record<string, unknown>): Promise<Pod[]> => {
    const out: Pod[] = [];
    for (const name of ['rr-client', 'rr-server']) {
      const p = await kelp.sb.addPod(`${name}${config ? '-tcx' : ''}`, 'bench', config);
      out.push(podFromResult(node, p.netns, p.result));
    }
    return out;
  };
  const [client, server] = await pods();
  const prog = inNetns(`${NETNS_DIR}/${node}`, () => queryTcFilter(ifindex(node, client.hostIf), 'ingress', POD_FILTER));
  if (prog?.name !== 'kelp_from_pod') throw new Error(`kelp_from_pod is not kelp's filter on ingress of ${client.hostIf}: ${JSON.stringify(prog)}`);
  const [tcxClient, tcxServer] = await pods(kelp.sb.pluginConfig({ podHook: 'tcx' }));
  const tcx = inNetns(`${NETNS_DIR}/${node}`, () => listAttached(ifindex(node, tcxClient.hostIf)));
  if (!tcx.tcx.ingress.some((p) => p.name === 'kelp_from_pod')) throw new Error(`kelp_from_pod is not on tcx ingress of ${tcxClient.hostIf}: ${JSON.stringify(tcx)}`);
  return [
    { name: KELP, node, client, server, prog: { id: prog.id, name: 'kelp_from_pod' } },
    // The same program instance as the clsact pods': its run-time counters would mix the two.
    { name: KELP_TCX, node, client: tcxClient, server: tcxServer },
  ];
}

/** A node of Debian's plugins with two pods; `before` runs once the node exists, before the pods. */
async function pluginVariant(
  name: string,
  node: string,
  plugin: Record<string, unknown> & { type: string },
  subnet: string,
  closers: Array<() => Promise<void>>,
  before?: () => void,
): Promise<Variant> {
  const pn = PluginNode.open(node, plugin, subnet);
  closers.push(() => pn.close());
  before?.();
  const netns = new NetnsSet();
  closers.push(() => netns.close());
  const target = pn.target(name);
  const pods: Pod[] = [];
  for (const role of ['c', 's']) {
    const ns = `${node}-${role}`;
    const [p] = netns.create([ns]);
    const res = await target.call('ADD', `${node.replace(/-/g, '')}${role}`, p);
    pods.push(podFromResult(node, ns, JSON.parse(res.stdout) as Record<string, unknown>));
  }
  return { name, node, client: pods[0], server: pods[1] };
}

/** bench/bpf/redirect.c on tcx ingress of both host veths, its map pointing each pod IP at its veth. */
function attachRedirect(v: Variant, closers: Array<() => Promise<void>>): void {
  const obj: BpfObject = loadObject(REDIRECT_OBJ);
  const links: BpfLink[] = [];
  closers.push(async () => {
    for (const l of links) l.close();
    obj.close();
  });
  const prog = obj.program('bench_redirect');
  const map = obj.map('bench_dst4');
  for (const pod of [v.client, v.server]) {
    const index = ifindex(v.node, pod.hostIf);
    const value = Buffer.alloc(4);
    value.writeUInt32LE(index);
    map.update(ipToBytes(parseIp(pod.ip)), value);
    links.push(inNetns(`${NETNS_DIR}/${v.node}`, () => attachTc(prog, index, 'ingress', { mode: 'tcx' })));
  }
  v.prog = { id: prog.id, name: 'bench_redirect' };
}

function nsExec(netns: string, cmd: string[]): [string, string[]] {
  return ['ip', ['netns', 'exec', netns, ...cmd]];
}

function pinned(cpu: number, cmd: string[]): string[] {
  return ['taskset', '-c', String(cpu), ...cmd];
}

/**
 * Transactions per second of each variant, from one client that gives the variants turns of
 * RR_SLICE_MS until each has had `seconds` (bench/tools/rr.c); `all` counts the warm-up too.
 */
async function rrRun(vs: Variant[], mode: 'rr' | 'crr', seconds: number, cpu: number): Promise<Array<{ rate: number; all: number }>> {
  const lifetime = String(seconds * vs.length + 30);
  const servers = await Promise.all(
    vs.map((v) => startServer(...nsExec(v.server.netns, pinned(cpu, [RR_BIN, 'server', RR_PORT, lifetime])), /^listening/m, { timeoutMs: 5000 })),
  );
  try {
    const targets = vs.map((v) => `${NETNS_DIR}/${v.client.netns},${v.server.ip},${RR_PORT}`);
    const out = await run('taskset', ['-c', String(cpu), RR_BIN, 'client', mode, String(seconds), String(RR_SLICE_MS), ...targets], {
      timeoutMs: (seconds * vs.length + 15) * 1000,
    });
    return vs.map((v, i) => {
      const m = new RegExp(`^target=${i} transactions=\\d+ seconds=\\S+ rate=(\\d+) all=(\\d+)$`, 'm').exec(out);
      if (!m) throw new Error(`rr client printed nothing for ${v.name}: ${JSON.stringify(out)}`);
      return { rate: Number(m[1]), all: Number(m[2]) };
    });
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
}

/** Gbit/s received in one iperf3 run, iperf3's own count. */
async function iperfRun(v: Variant, streams: number, seconds: number): Promise<number> {
  const server = await startServer(...nsExec(v.server.netns, ['iperf3', '-s', '-1', '-p', IPERF_PORT, '--forceflush']), /Server listening/, { timeoutMs: 5000 });
  try {
    const out = await run(...nsExec(v.client.netns, ['iperf3', '-c', v.server.ip, '-p', IPERF_PORT, '-t', String(seconds), '-P', String(streams), '-J']), {
      timeoutMs: (seconds + 15) * 1000,
    });
    const bps = (JSON.parse(out) as { end?: { sum_received?: { bits_per_second?: number } } }).end?.sum_received?.bits_per_second;
    if (typeof bps !== 'number') throw new Error(`iperf3 gave no received rate: ${out.slice(0, 500)}`);
    return bps / 1e9;
  } finally {
    await server.stop();
  }
}

/** Echo round trips in µs, one per reply. */
async function pingRun(v: Variant, cpu: number, count: number): Promise<number[]> {
  const out = await run(...nsExec(v.client.netns, pinned(cpu, ['ping', '-n', '-c', String(count), '-i', '0.002', '-W', '1', v.server.ip])), { timeoutMs: 30_000 });
  const times = [...out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]) * 1000);
  if (times.length < count * 0.9) throw new Error(`ping ${v.name}: ${times.length} of ${count} replies`);
  return times;
}

/**
 * Runs f `turns` times on each variant, the variants taking turns (v1 v2 … v1 v2 …) so that
 * the machine's drift lands on all of them alike; returns each variant's samples, in order.
 */
async function takeTurns<T>(vs: Variant[], turns: number, f: (v: Variant) => Promise<T>): Promise<T[][]> {
  const out = vs.map(() => [] as T[]);
  for (let t = 0; t < turns; t++) for (const [i, v] of vs.entries()) out[i].push(await f(v));
  return out;
}

interface ProgStats {
  ns: number;
  cnt: number;
}

function progStats(id: number): ProgStats {
  const info = JSON.parse(sh('bpftool', ['prog', 'show', 'id', String(id), '-j'])) as { run_time_ns?: number; run_cnt?: number };
  return { ns: info.run_time_ns ?? 0, cnt: info.run_cnt ?? 0 };
}

const BPF_STATS = '/proc/sys/kernel/bpf_stats_enabled';

/**
 * Runs fn with kernel.bpf_stats_enabled on, and puts back the value it had (also on failure
 * and Ctrl-C). The switch is machine-wide: every BPF program on the machine pays for the two
 * clock reads while it is on.
 */
async function withBpfStats<T>(fn: () => Promise<T>): Promise<T> {
  const previous = readFileSync(BPF_STATS, 'utf8').trim();
  writeFileSync(BPF_STATS, '1');
  const restore = defer(() => writeFileSync(BPF_STATS, previous));
  try {
    return await fn();
  } finally {
    await restore();
  }
}

function fmtRate(x: number): string {
  return x >= 1000 ? `${num(x / 1000)}k/s` : `${num(x)}/s`;
}

export interface PodVariants {
  variants: Variant[];
  /** Rules of the kube-proxy-shaped ruleset. */
  ruleCount: number;
  /** Removes every node, pod and program; closing twice is harmless. */
  close(): Promise<void>;
}

/** The five nodes with two pods each (kelp's four: clsact and tcx), every path checked with a ping; removed again on failure. */
export async function startVariants(tag: string): Promise<PodVariants> {
  const closers: Array<() => Promise<void>> = [];
  const close = async () => {
    while (closers.length > 0) await closers.pop()!();
  };
  try {
    const subnet = (n: number) => `10.252.${n}.0/24`;
    let ruleCount = 0;
    const [kelp, kelpTcx] = await kelpVariants(tag, closers);
    const ebpf = await pluginVariant(EBPF, `${tag}-e`, { type: 'ptp' }, subnet(2), closers);
    attachRedirect(ebpf, closers);
    const bridgeIpt = await pluginVariant(BRIDGE_IPT, `${tag}-i`, { type: 'bridge', bridge: 'cni0', isGateway: true, ipMasq: true }, subnet(3), closers, () => {
      ruleCount = loadKubeProxyRules(`${tag}-i`, { ...DEFAULT_KUBE_PROXY_SHAPE, podCidr: subnet(3) });
    });
    const bridge = await pluginVariant(BRIDGE, `${tag}-b`, { type: 'bridge', bridge: 'cni0', isGateway: true, ipMasq: false }, subnet(4), closers);
    const routed = await pluginVariant(ROUTED, `${tag}-r`, { type: 'ptp' }, subnet(5), closers);
    const variants = [kelp, kelpTcx, ebpf, bridgeIpt, bridge, routed];
    // Resolves ARP and proves each path works before anything is timed.
    for (const v of variants) await pingRun(v, 0, 10);
    return { variants, ruleCount, close };
  } catch (e) {
    await close();
    throw e;
  }
}

export async function benchPod2pod(cfg: BenchConfig, tag: string): Promise<Figure> {
  ensureRrTool();
  if (!existsSync(REDIRECT_OBJ)) throw new Error(`${REDIRECT_OBJ} is missing: make bpf`);
  const fig = new Figure('5. Pod ↔ pod on one node: request/response, throughput, latency');
  const iptables = sh('iptables', ['--version']).trim();
  progress(`pod2pod: starting 5 nodes (netns ${tag}p-node, ${tag}-e/-i/-b/-r), 2 pods each (kelp: 4)`);
  const nodes = await startVariants(tag);
  try {
    const { variants } = nodes;
    const cpu = cfg.podCpu;
    // Each test measures the variants given, in that order, returning one figure per variant.
    const rates = (mode: 'rr' | 'crr') => async (vs: Variant[]) => (await rrRun(vs, mode, cfg.rrSeconds, cpu)).map((x) => x.rate);
    const throughput = (streams: number) => async (vs: Variant[]) =>
      (await takeTurns(vs, cfg.iperfSeconds, (v) => iperfRun(v, streams, 1))).map((xs) => xs.reduce((a, b) => a + b, 0) / xs.length);
    // The first replies of each turn are left out: they can pay for a cold cache or neighbour entry.
    const ping = async (vs: Variant[]) => (await takeTurns(vs, PING_TURNS, async (v) => (await pingRun(v, cpu, PING_COUNT / PING_TURNS + 2)).slice(2))).map((xs) => median(xs.flat()));
    const gbit = (x: number) => `${num(x)} Gbit/s`;
    const tests: Array<{ measure: string; unit: string; run: (vs: Variant[]) => Promise<number[]>; show: (x: number) => string }> = [
      { measure: RR, unit: 'transactions/s', run: rates('rr'), show: fmtRate },
      { measure: CRR, unit: 'transactions/s', run: rates('crr'), show: fmtRate },
      { measure: STREAM_1, unit: 'Gbit/s', run: throughput(1), show: gbit },
      { measure: STREAM_4, unit: 'Gbit/s', run: throughput(4), show: gbit },
      { measure: PING, unit: 'µs', run: ping, show: (x) => `${num(x)} µs` },
    ];
    const statsVariants = variants.filter((v) => v.prog);
    for (let r = 0; r < cfg.podRounds; r++) {
      const order = rotate(variants, r);
      for (const t of tests) {
        const xs = await t.run(order);
        order.forEach((v, i) => fig.record(t.measure, v.name, t.unit, xs[i]));
        progress(`pod2pod round ${r + 1}/${cfg.podRounds}: ${t.measure}: ${order.map((v, i) => `${v.name} ${t.show(xs[i])}`).join(', ')}`);
      }
      const stats = rotate(statsVariants, r);
      const { before, after, res } = await withBpfStats(async () => {
        const b = stats.map((v) => progStats(v.prog!.id));
        const rr = await rrRun(stats, 'rr', STATS_SECONDS, cpu);
        return { before: b, after: stats.map((v) => progStats(v.prog!.id)), res: rr };
      });
      const line = stats.map((v, i) => {
        const { id, name } = v.prog!;
        const runs = after[i].cnt - before[i].cnt;
        if (runs <= 0) throw new Error(`${name} (id ${id}) did not run during TCP_RR`);
        const ns = (after[i].ns - before[i].ns) / runs;
        fig.record(PROG_NS, `${name} (${v.name})`, 'ns/run', ns);
        fig.record(PROG_RUNS, `${name} (${v.name})`, 'runs', runs / res[i].all);
        return `${name} ${num(ns)} ns/run, ${num(runs / res[i].all)} runs/transaction`;
      });
      progress(`pod2pod round ${r + 1}/${cfg.podRounds}: bpf_stats during TCP_RR: ${line.join(', ')}`);
    }
  } finally {
    await nodes.close();
  }

  const compare = (measure: string, den: string, better: Better) => fig.compare(measure, KELP, den, better);
  for (const m of [RR, CRR]) {
    compare(m, EBPF, 'higher');
    compare(m, BRIDGE_IPT, 'higher');
  }
  for (const m of [STREAM_1, STREAM_4]) {
    compare(m, BRIDGE, 'higher');
    compare(m, EBPF, 'higher');
  }
  compare(PING, EBPF, 'lower');
  compare(PING, BRIDGE_IPT, 'lower');
  for (const m of [RR, CRR]) fig.compare(m, KELP_TCX, EBPF, 'higher');
  fig.compare(RR, KELP, KELP_TCX, 'higher');
  fig.compare(PROG_NS, `kelp_from_pod (${KELP})`, `bench_redirect (${EBPF})`, 'lower');

  fig.notes.push(
    'Two pods per node, each variant its own node namespace, all on this machine: ' +
      `**${KELP}**: a Sandbox node with its agent, pods by kelp-cni (kelp_from_pod, bpf_redirect_peer). ` +
      `**${KELP_TCX}**: two more pods of that node, configured with \`"podHook": "tcx"\` (tcx links instead of kelp's clsact filters). ` +
      `**${EBPF}**: Debian's ptp + host-local, and bench/bpf/redirect.c on tcx ingress of each host veth (one hash lookup of the ` +
      'destination, bpf_redirect_peer; no validation, no metrics): the limit of an eBPF datapath. ' +
      `**${BRIDGE_IPT}**: Debian's bridge (isGateway, ipMasq) + host-local, with a kube-proxy-shaped ruleset in the node netns ` +
      `(${nodes.ruleCount} rules: ${DEFAULT_KUBE_PROXY_SHAPE.services} services × ${DEFAULT_KUBE_PROXY_SHAPE.endpointsPerService} endpoints ` +
      `in KUBE-SERVICES/KUBE-SVC/KUBE-SEP chains, ${DEFAULT_KUBE_PROXY_SHAPE.servicesWithoutEndpoints} REJECTs, conntrack state matches, ` +
      `KUBE-POSTROUTING MASQUERADE; bench/lib/kube-proxy.ts; ${iptables}); bridged traffic passes iptables (br_netfilter, ` +
      `bridge-nf-call-iptables=1) as on a kube-proxy node. **${BRIDGE}**: the same bridge without ipMasq or rules. ` +
      `**${ROUTED}**: Debian's ptp (/32 route per pod in the node, the gateway address on each host veth), no BPF.`,
    `${RR}: 1-byte request and response on one connection; ${CRR}: the same on a new connection each time, closed by the server ` +
      `(build/bench/rr from bench/tools/rr.c). One client process drives all six variants in turns of ${RR_SLICE_MS} ms (it ` +
      `makes each variant's sockets inside that variant's client pod with setns) until each has had ${cfg.rrSeconds} s, after ` +
      '0.1 s of warm-up each: the speed of these VMs drifts by ±10% within seconds, and turns this short put that drift on every ' +
      `variant alike. Client and servers are pinned to CPU ${cfg.podCpu} (taskset): a wake-up on the other vCPU costs ~65 µs on ` +
      `these VMs and would hide the datapath. Throughput: iperf3, 1 and 4 streams, not pinned (both CPUs), ${cfg.iperfSeconds} runs ` +
      `of 1 s per variant taken in turns (v1 v2 … v1 v2 …), their mean. Ping: median of ${PING_COUNT} echoes 2 ms apart, pinned ` +
      `to the same CPU, in ${PING_TURNS} turns per variant. ${cfg.podRounds} rounds; each round runs every test on every variant, ` +
      'the variants in rotated order.',
    `${PROG_NS}: run_time_ns ÷ run_cnt of the tc program on the host veths (bpftool prog show) during an extra TCP_RR run per ` +
      `round, kelp and the minimal eBPF variant taking turns as above for ${STATS_SECONDS} s each, with kernel.bpf_stats_enabled ` +
      'set to 1 for that run only and then put back. The sysctl is machine-wide: every BPF program on this machine was timed during ' +
      'those runs, which are not part of the figures above. Run time covers the program only, not the redirect the kernel carries ' +
      'out after it returns.',
  );
  fig.notes.push(targetsNote(fig));
  return fig;
}

/** The issue's targets against this run's per-round ratios (medians), and what kelp's program adds. */
function targetsNote(fig: Figure): string {
  const checks: Array<{ what: string; measure: string; den: string; min: number }> = [
    { what: `${RR} ≥ 0.97× ${EBPF}`, measure: RR, den: EBPF, min: 0.97 },
    { what: `${RR} ≥ 1.3× ${BRIDGE_IPT}`, measure: RR, den: BRIDGE_IPT, min: 1.3 },
    { what: `${CRR} ≥ 0.97× ${EBPF}`, measure: CRR, den: EBPF, min: 0.97 },
    { what: `${CRR} ≥ 1.3× ${BRIDGE_IPT}`, measure: CRR, den: BRIDGE_IPT, min: 1.3 },
    { what: `${STREAM_1} ≥ ${BRIDGE}`, measure: STREAM_1, den: BRIDGE, min: 1 },
    { what: `${STREAM_4} ≥ ${BRIDGE}`, measure: STREAM_4, den: BRIDGE, min: 1 },
  ];
  const lines = checks.map(({ what, measure, den, min }) => {
    const s = spread(fig.ratios(measure, KELP, den));
    const verdict = s.median >= min ? 'met' : `missed by ${num((1 - s.median / min) * 100)}%`;
    return `- kelp ${what}: ${ratio(s.median)} (${ratio(s.min)}–${ratio(s.max)}), ${verdict}`;
  });
  // Per round: (kelp − reference program time) × runs per transaction, against the reference's transaction time.
  const kelpProg = `kelp_from_pod (${KELP})`;
  const refProg = `bench_redirect (${EBPF})`;
  const kelpNs = fig.values(PROG_NS, kelpProg);
  const refNs = fig.values(PROG_NS, refProg);
  const runs = fig.values(PROG_RUNS, kelpProg);
  const extra = kelpNs.map((k, i) => (k - refNs[i]) * runs[i]);
  const share = fig.values(RR, EBPF).map((rate, i) => (extra[i] / (1e9 / rate)) * 100);
  const e = spread(extra);
  lines.push(
    `- kelp_from_pod's extra run time over redirect.c per ${RR} transaction: ${num(e.median)} ns (${num(e.min)}–${num(e.max)}), ` +
      `${num(median(share))}% of a minimal-eBPF transaction on this machine: the share, and so the gap, grows on a faster one.`,
  );
  return `Targets (median of per-round ratios, min–max):\n${lines.join('\n')}`;
}
