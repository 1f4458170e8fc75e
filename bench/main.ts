// `make bench`: kelp's figures, each measured side by side with a reference in the same run.
//   1. datapath ns/packet (kelp_from_pod local delivery vs bench/bpf/redirect.c)
//   2. CNI ADD/DEL latency p50/p99 (kelp-cni vs Debian's bridge + host-local)
//   3. CNI throughput with concurrent ADDs/DELs (same pair)
//   4. agent RSS at 0, 100 and 1,000 endpoints
//   5. pod ↔ pod TCP_RR/CRR, iperf3 and ping (kelp vs minimal eBPF, bridge ± kube-proxy rules, ptp)
//   6. Kubernetes mode: API change → programmed p50/p99, start → ready, a full relist's RSS and CPU
//      (5,000 pods in the test API server; no reference, a one-pod API as the baseline)
//   7. policy: apply → enforced p50/p99 with 1,000 pods and 1,000 NetworkPolicies, TCP_RR/CRR with
//      100 policies selecting both pods (ref: no policy), ready → reachable, map memory
//   8. services: TCP_RR/CRR to the last of 1, 1,000 and 10,000 services (ref: direct pod → pod, and
//      kube-proxy iptables and nftables), time to program 10,000 services and to change one
//   9. several nodes: pod on node 1 ↔ pod on node 2, TCP_RR/CRR and iperf3, kelp VXLAN and native
//      routing (ref: a flannel-like kernel VXLAN node, and routed veths across the underlay)
//  10. flow events: pod ↔ pod TCP_RR/CRR with events on (every event; default limits) and off, and
//      the highest drop-event rate delivered with nothing lost or unaccounted
// Round counts and sizes come from BENCH_* variables (bench/lib/config.ts). Everything runs in
// network namespaces this process creates and removes, also on failure and Ctrl-C.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { BRIDGE, benchCni, KELP } from './cni';
import { benchDatapath } from './datapath';
import { AGENT, BARE_NODE, benchMemory } from './memory';
import { benchRestart, RestartBenchResult } from './restart';
import * as P2P from './pod2pod';
import * as K8S from './kubernetes';
import * as POLICY from './policy';
import * as SVC from './services';
import * as MULTI from './multinode';
import * as EVENTS from './events';
import { cleanupAll, exitCleanlyOnSignals, isInterrupted } from './lib/cleanup';
import { BenchConfig, FIGURES, loadConfig } from './lib/config';
import { Figure, HeadlineRow, headlineRow } from './lib/figure';
import { progress, sleep } from './lib/progress';
import { README, syncReadme, syncReadmeFigure } from './lib/readme';
import { changesSection, environment, figureCharts, figureSection, headlineTable, localDate, machine, markdownTable, reportName, writeReport } from './lib/report';
import { num } from './lib/stats';
import { REF_PLUGIN_DIR } from './lib/targets';

const KELP_PROG = 'kelp_from_pod';
const REF_PROG = 'redirect.c';

/** Short and unique per run: every netns, bridge and container id of this run starts with it. */
const TAG = `kb${(process.pid % 46656).toString(36).padStart(3, '0')}`;

function datapath(cfg: BenchConfig): Figure {
  const fig = new Figure('1. Datapath: local pod-to-pod delivery, ns/packet');
  let packetBytes = 0;
  for (let r = 0; r < cfg.rounds; r++) {
    const res = benchDatapath({ calls: cfg.datapathCalls, log: (line) => progress(`datapath round ${r + 1}/${cfg.rounds}: ${line.replace(/^datapath: /, '')}`) });
    packetBytes = res.packetBytes;
    fig.record('local delivery', KELP_PROG, 'ns/packet', res.kelpNs);
    fig.record('local delivery', REF_PROG, 'ns/packet', res.referenceNs);
    fig.record('extra cost of kelp', KELP_PROG, 'ns/packet', res.kelpNs - res.referenceNs);
  }
  fig.notes.push(
    `BPF_PROG_TEST_RUN of a ${packetBytes}-byte UDP packet, pod A → pod B on the same node: kelp_from_pod (validation, anti-spoofing, ` +
      `TTL, metrics, bpf_redirect_peer) against bench/bpf/redirect.c (one hash lookup and a redirect: the minimal reference; kelp's cache array can beat its hash). ` +
      `Per round: ${cfg.datapathCalls} calls of 250 repeats per program, the two programs alternating call by call ` +
      `(bench/datapath.ts, always kelp first; a fresh netns and fresh program loads each round); ` +
      `ns/packet = median over calls of the kernel's mean per run.`,
  );
  fig.compare('local delivery', KELP_PROG, REF_PROG, 'lower');
  return fig;
}

function headlineRows(figs: Record<string, Figure | undefined>, cfg: BenchConfig): HeadlineRow[] {
  const rows: HeadlineRow[] = [];
  const { datapath: dp, latency: lat, throughput: tp, memory: mem, pod2pod: pp, kubernetes: kube } = figs;
  if (dp) rows.push(headlineRow(dp, 'Datapath, local delivery', 'local delivery', KELP_PROG, { reference: REF_PROG, better: 'lower' }));
  if (lat) {
    for (const m of ['ADD p50', 'ADD p99', 'DEL p50', 'DEL p99']) rows.push(headlineRow(lat, `CNI ${m}`, m, KELP, { reference: BRIDGE, better: 'lower' }));
  }
  if (tp) {
    rows.push(headlineRow(tp, `CNI ADD throughput, ${cfg.concurrency} concurrent`, 'ADD', KELP, { reference: BRIDGE, better: 'higher' }));
    rows.push(headlineRow(tp, `CNI DEL throughput, ${cfg.concurrency} concurrent`, 'DEL', KELP, { reference: BRIDGE, better: 'higher' }));
    rows.push(headlineRow(tp, `CNI churn, ${cfg.concurrency >> 1} DELs + ${cfg.concurrency >> 1} ADDs at once`, 'churn', KELP, { reference: BRIDGE, better: 'higher' }));
    rows.push(headlineRow(tp, 'CNI ADD p50 during that churn', 'ADD p50 during churn', KELP, { reference: BRIDGE, better: 'lower' }));
  }
  if (mem) {
    rows.push(headlineRow(mem, 'Agent RSS, 0 endpoints (ref: bare node)', 'RSS at 0 endpoints', AGENT, { reference: BARE_NODE, better: 'lower' }));
    rows.push(headlineRow(mem, 'Agent RSS, 100 endpoints', 'RSS at 100 endpoints', AGENT));
    rows.push(headlineRow(mem, `Agent RSS, ${cfg.memoryPods} endpoints`, `RSS at ${cfg.memoryPods} endpoints`, AGENT));
    rows.push(headlineRow(mem, 'Agent RSS per endpoint', `RSS per endpoint, 0 → ${cfg.memoryPods}`, AGENT));
  }
  if (pp) {
    for (const m of [P2P.RR, P2P.CRR]) {
      rows.push(headlineRow(pp, `Pod ↔ pod ${m} (ref: minimal eBPF)`, m, P2P.KELP, { reference: P2P.EBPF, better: 'higher' }));
      rows.push(headlineRow(pp, `Pod ↔ pod ${m} (ref: bridge + kube-proxy iptables)`, m, P2P.KELP, { reference: P2P.BRIDGE_IPT, better: 'higher' }));
    }
    rows.push(headlineRow(pp, `Pod ↔ pod ${P2P.RR}, clsact pod hook (ref: kelp with tcx)`, P2P.RR, P2P.KELP, { reference: P2P.KELP_TCX, better: 'higher' }));
    for (const m of [P2P.STREAM_1, P2P.STREAM_4]) rows.push(headlineRow(pp, `Pod ↔ pod ${m} (ref: bridge)`, m, P2P.KELP, { reference: P2P.BRIDGE, better: 'higher' }));
    rows.push(headlineRow(pp, 'Pod ↔ pod ping RTT (ref: minimal eBPF)', P2P.PING, P2P.KELP, { reference: P2P.EBPF, better: 'lower' }));
    rows.push(
      headlineRow(pp, 'kelp_from_pod run time during TCP_RR (ref: redirect.c)', P2P.PROG_NS, `kelp_from_pod (${P2P.KELP})`, {
        reference: `bench_redirect (${P2P.EBPF})`,
        better: 'lower',
      }),
    );
  }
  if (kube) {
    const k = K8S.fullVariant(cfg.kubePods);
    const n = cfg.kubePods.toLocaleString('en');
    rows.push(headlineRow(kube, `Kubernetes: API change → programmed p50, ${n} pods (no pod map yet)`, K8S.CHANGE_P50, k));
    rows.push(headlineRow(kube, `Kubernetes: API change → programmed p99, ${n} pods (no pod map yet)`, K8S.CHANGE_P99, k));
    rows.push(headlineRow(kube, `Kubernetes: agent start → ready, ${n} pods`, K8S.READY, k));
    rows.push(headlineRow(kube, `Kubernetes: full relist of ${n} pods, agent CPU`, K8S.RELIST_CPU, k));
    rows.push(headlineRow(kube, `Kubernetes: full relist of ${n} pods, peak RSS`, K8S.RELIST_PEAK, k));
  }
  rows.push(...POLICY.policyHeadlineRows(figs.policy, cfg));
  rows.push(...SVC.servicesHeadlineRows(figs.services, cfg));
  rows.push(...MULTI.multinodeHeadlineRows(figs.multinode));
  rows.push(...EVENTS.eventsHeadlineRows(figs.events));
  return rows;
}

/** Packet loss through SIGKILL + restart of the agent (bench/restart.ts): one row per round. */
function restartSection(r: RestartBenchResult): string {
  const rows = r.rounds.map((x, i) => `| ${i + 1} | ${x.readyMs.toFixed(0)} ms | ${x.pingLost} / ${x.pingSent} | ${(x.tcpBytes / 2 ** 20).toFixed(1)} MiB | ${x.tcpIntact ? 'yes' : 'NO'} |`);
  return [
    '## Restart: packet loss through SIGKILL + restart of the agent',
    '',
    `A kelp node with a pod → pod and a pod → outside (masqueraded) TCP stream and two 100/s ping streams; the agent is SIGKILLed, left down ${r.downMs} ms and started again.`,
    '',
    '| round | agent ready after start | pings lost / sent | TCP bytes | TCP streams intact |',
    '|---|---|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}

function preflight(): void {
  if (process.getuid?.() !== 0) throw new Error('make bench needs root (network namespaces, bpffs, BPF programs)');
  for (const f of [path.join(REF_PLUGIN_DIR, 'bridge'), path.join(REF_PLUGIN_DIR, 'host-local')]) {
    if (!existsSync(f)) throw new Error(`${f} is missing: install containernetworking-plugins (make setup)`);
  }
}

async function main(): Promise<void> {
  const cfg = loadConfig();
  preflight();
  exitCleanlyOnSignals(progress);
  const shown = {
    BENCH_ROUNDS: cfg.rounds,
    BENCH_THROUGHPUT_ROUNDS: cfg.throughputRounds,
    BENCH_DATAPATH_CALLS: cfg.datapathCalls,
    BENCH_CNI_SAMPLES: cfg.cniSamples,
    BENCH_CONCURRENCY: cfg.concurrency,
    BENCH_MEMORY_PODS: cfg.memoryPods,
    BENCH_MEMORY_ROUNDS: cfg.memoryRounds,
    BENCH_MEMORY_CONCURRENCY: cfg.memoryConcurrency,
    BENCH_POD_ROUNDS: cfg.podRounds,
    BENCH_RR_SECONDS: cfg.rrSeconds,
    BENCH_IPERF_SECONDS: cfg.iperfSeconds,
    BENCH_POD_CPU: cfg.podCpu,
    BENCH_KUBE_ROUNDS: cfg.kubeRounds,
    BENCH_KUBE_PODS: cfg.kubePods,
    BENCH_KUBE_CHANGES: cfg.kubeChanges,
    BENCH_POLICY_ROUNDS: cfg.policyRounds,
    BENCH_POLICY_PODS: cfg.policyPods,
    BENCH_POLICY_POLICIES: cfg.policyPolicies,
    BENCH_POLICY_CHANGES: cfg.policyChanges,
    BENCH_POLICY_CLI_CHANGES: cfg.policyCliChanges,
    BENCH_POLICY_READY_PODS: cfg.policyReadyPods,
    BENCH_SERVICES_ROUNDS: cfg.servicesRounds,
    BENCH_SERVICES_N: cfg.servicesN.join(','),
    BENCH_SERVICES_PROGRAM_ROUNDS: cfg.servicesProgramRounds,
    BENCH_SERVICES_PROGRAM_N: cfg.servicesProgramN,
    BENCH_SERVICES_RR: cfg.servicesRr ? 1 : 0,
    BENCH_SERVICES_TOOLS: [...cfg.servicesTools].join(','),
    BENCH_MULTINODE_ROUNDS: cfg.multinodeRounds,
    BENCH_ONLY: [...cfg.only].join(','),
  };
  progress(`kelp benchmarks, run tag ${TAG}: ${Object.entries(shown).map(([k, v]) => `${k}=${v}`).join(' ')}`);
  const started = Date.now();
  const figs: Record<string, Figure | undefined> = {};
  if (cfg.only.has('datapath')) figs.datapath = datapath(cfg);
  if (cfg.only.has('cni') || cfg.only.has('throughput')) {
    const cni = await benchCni(cfg, TAG, { latency: cfg.only.has('cni'), throughput: cfg.only.has('throughput') });
    figs.latency = cni.latency;
    figs.throughput = cni.throughput;
  }
  if (cfg.only.has('memory')) figs.memory = await benchMemory(cfg, TAG);
  if (cfg.only.has('pod2pod')) figs.pod2pod = await P2P.benchPod2pod(cfg, TAG);
  if (cfg.only.has('kubernetes')) figs.kubernetes = await K8S.benchKubernetes(cfg, TAG);
  if (cfg.only.has('policy')) figs.policy = await POLICY.benchPolicy(cfg, TAG);
  if (cfg.only.has('services')) figs.services = await SVC.benchServices(cfg, TAG);
  if (cfg.only.has('multinode')) figs.multinode = await MULTI.benchMultinode(cfg, TAG);
  if (cfg.only.has('events')) figs.events = await EVENTS.benchEvents(cfg, TAG);
  const restart = cfg.only.has('restart') ? restartSection(await benchRestart({ rounds: cfg.restartRounds, log: progress })) : undefined;

  const head = markdownTable(headlineTable(headlineRows(figs, cfg)));
  const partial = FIGURES.some((f) => !cfg.only.has(f)) ? `-${[...cfg.only].join('-')}` : '';
  const name = reportName(partial);
  const figures = Object.values(figs).filter((f): f is Figure => f !== undefined);
  const charts = figures.map((f) => figureCharts(f, name));
  const sections = figures.map((f, i) => figureSection(f, charts[i]));
  if (restart) sections.push(restart);
  const intro = [
    `# kelp benchmarks, ${localDate()}`,
    '',
    `Generated by \`make bench\` (bench/main.ts) in ${num((Date.now() - started) / 1000)} s. Medians over rounds with min–max; ` +
      'ratios are computed round by round (kelp and its reference ran in the same round, under the same load) and then summarised.',
    '',
    ...environment(shown),
    '',
  ].join('\n');
  const headline =
    `## Headline\n\n${head}\n` +
    'References: datapath, bench/bpf/redirect.c; CNI, Debian’s bridge + host-local, both plugins exec’d inside their node netns ' +
    'by bench/tools/cnirun; memory, a bare `node` process; pod ↔ pod, the variant the row names ' +
    '(figure 5 describes each); Kubernetes mode, none (figure 6 has a one-pod API as its baseline); policy, the same pods with no policy ' +
    '(figure 7), and for apply → enforced the figures Cilium and upstream publish, quoted, not measured; services, a direct pod → pod connection ' +
    'and kube-proxy\'s iptables and nftables modes measured in the same run (figure 8); several nodes, a flannel-like kernel VXLAN node pair ' +
    'and routed veths across the same underlay (figure 9); flow events, the same pods on a node with events off (figure 10). Ratios are kelp ÷ reference per round: median (min–max).\n';
  // The file leads with the headline; the terminal ends with it, below the figures.
  const file = writeReport(cfg.outDir ?? path.join(__dirname, 'results'), name, [intro, headline, ...sections, changesSection()].join('\n'), charts.flat());
  process.stdout.write(`\n${[intro, ...sections, headline].join('\n')}\n`);
  progress(`report written to ${path.relative(process.cwd(), file)}, ${charts.flat().length} charts in ${name}/`);
  const synced = syncReadme(README, { full: !partial, report: file, headline: head, machine: machine() });
  progress(synced ? 'README.md benchmark block updated' : 'README.md left alone (partial run, or the report is outside the repository)');
  if (figs.policy) {
    const headline = markdownTable(headlineTable(POLICY.policyHeadlineRows(figs.policy, cfg)));
    const ok = syncReadmeFigure(README, 'policy', { title: figs.policy.title, only: 'policy', report: file, headline, machine: machine() });
    progress(ok ? 'README.md policy block updated' : 'README.md policy block left alone (no markers, or the report is outside the repository)');
  }
  if (figs.services) {
    const headline = markdownTable(headlineTable(SVC.servicesHeadlineRows(figs.services, cfg)));
    const ok = syncReadmeFigure(README, 'services', { title: figs.services.title, only: 'services', report: file, headline, machine: machine() });
    progress(ok ? 'README.md services block updated' : 'README.md services block left alone (no markers, or the report is outside the repository)');
  }
  if (figs.multinode) {
    const headline = markdownTable(headlineTable(MULTI.multinodeHeadlineRows(figs.multinode)));
    const ok = syncReadmeFigure(README, 'multinode', { title: figs.multinode.title, only: 'multinode', report: file, headline, machine: machine() });
    progress(ok ? 'README.md multinode block updated' : 'README.md multinode block left alone (no markers, or the report is outside the repository)');
  }
  if (figs.events) {
    const headline = markdownTable(headlineTable(EVENTS.eventsHeadlineRows(figs.events)));
    const ok = syncReadmeFigure(README, 'events', { title: figs.events.title, only: 'events', report: file, headline, machine: machine() });
    progress(ok ? 'README.md events block updated' : 'README.md events block left alone (no markers, or the report is outside the repository)');
  }
}

main().then(
  async () => {
    await cleanupAll(progress);
    process.exit(0);
  },
  async (e: Error) => {
    // A Ctrl-C also kills our children, which can fail the run before the signal handler has
    // run: let it run first, and leave the exit to it.
    await sleep(50);
    if (isInterrupted()) return;
    process.stderr.write(`bench failed: ${e.stack ?? e.message}\n`);
    await cleanupAll(progress);
    process.exit(1);
  },
);
