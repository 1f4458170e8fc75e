// Round counts and sizes, from the environment so a quick or a thorough run needs no edit.
import { cpus } from 'node:os';

export interface BenchConfig {
  /** Rounds of the datapath and CNI latency figures. */
  rounds: number;
  /** Rounds of the throughput figure (each costs ~20 s, most of it kelp's serialised ADDs/DELs). */
  throughputRounds: number;
  /** BPF_PROG_TEST_RUN calls per program per datapath round (250 runs each). */
  datapathCalls: number;
  /** ADD+DEL pairs per variant per CNI latency round. */
  cniSamples: number;
  /** Concurrent ADDs (then DELs) per variant per throughput round. */
  concurrency: number;
  /** Endpoints of the last memory step (steps: 0, 100, this). */
  memoryPods: number;
  memoryRounds: number;
  /** Bound on concurrent CNI calls while filling the node for the memory figure. */
  memoryConcurrency: number;
  /** Rounds of the pod ↔ pod figures (each runs every variant once per test, in rotated order). */
  podRounds: number;
  /** Measured seconds per variant of each TCP_RR / TCP_CRR run (the variants take turns). */
  rrSeconds: number;
  /** iperf3 seconds per variant per round, run as 1 s turns alternating between the variants. */
  iperfSeconds: number;
  /** The CPU that request/response clients and servers are pinned to (both on the same one). */
  podCpu: number;
  /** Rounds of SIGKILL + restart of the agent under traffic. */
  restartRounds: number;
  /** Rounds of the Kubernetes-mode figure (each starts two fresh agents, ~20 s). */
  kubeRounds: number;
  /** Pods in the API server of the Kubernetes-mode figure. */
  kubePods: number;
  /** Label changes, one at a time, per agent per Kubernetes-mode round. */
  kubeChanges: number;
  /** Rounds of the policy figure (each: policy changes, TCP_RR/CRR turns, pods made ready). */
  policyRounds: number;
  /** Pod objects on the policy figure's node (a few of them real pods). */
  policyPods: number;
  /** NetworkPolicies on that node, 100 of them selecting the TCP_RR pods. */
  policyPolicies: number;
  /** Policy changes timed through the agent's API per policy round (half deny, half allow). */
  policyChanges: number;
  /** Of those, made by the `kelp apply -f F --wait` process instead, per round. */
  policyCliChanges: number;
  /** Pods made and timed until reachable, per policy round. */
  policyReadyPods: number;
  /** A progress line for each policy change (BENCH_POLICY_TRACE=1). */
  policyTrace: boolean;
  /** Rounds of the services figure's TCP_RR/CRR (every variant at every N once per round). */
  servicesRounds: number;
  /** Service counts of the TCP_RR/CRR figure: the client reaches the last of N (BENCH_SERVICES_N=1,1000,10000). */
  servicesN: number[];
  /** Rounds of "program N services" and "change one of them", each in a fresh namespace or agent. */
  servicesProgramRounds: number;
  /** The N of those rounds. */
  servicesProgramN: number;
  /** Run the TCP_RR/CRR part of the services figure (BENCH_SERVICES_RR=0: programming only). */
  servicesRr: boolean;
  /** Tools of the programming rounds (BENCH_SERVICES_TOOLS=kelp,legacy,iptables-nft,iptables-nft-flush,nft; default all). */
  servicesTools: Set<string>;
  /** Rounds of the several-nodes figure (every test on every variant once per round). */
  multinodeRounds: number;
  /** Figures to run (BENCH_ONLY=datapath,cni,throughput,memory,pod2pod,restart,kubernetes,policy,services,multinode,events). */
  only: Set<string>;
  /** Where the report goes (default bench/results). */
  outDir?: string;
}

export const FIGURES = ['datapath', 'cni', 'throughput', 'memory', 'pod2pod', 'restart', 'kubernetes', 'policy', 'services', 'multinode', 'events'] as const;

function int(name: string, def: number, min = 1, max = 1_000_000): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name} must be an integer in ${min}..${max}, got ${JSON.stringify(raw)}`);
  return n;
}

/** A comma-separated list of distinct integers, e.g. BENCH_SERVICES_N=1,1000,10000. */
function ints(name: string, def: number[], min: number, max: number): number[] {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return def;
  const xs = raw.split(',').map((s) => Number(s.trim()));
  if (xs.some((n) => !Number.isInteger(n) || n < min || n > max) || new Set(xs).size !== xs.length) {
    throw new Error(`${name} must be distinct integers in ${min}..${max}, comma-separated, got ${JSON.stringify(raw)}`);
  }
  return xs;
}

/** The programming rounds' tools, as BENCH_SERVICES_TOOLS names them. */
export const SERVICES_TOOLS = ['kelp', 'legacy', 'iptables-nft', 'iptables-nft-flush', 'nft'] as const;

/** A comma-separated subset of `known` (default all of it). */
function names(name: string, known: readonly string[]): Set<string> {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return new Set(known);
  const xs = raw.split(',').map((s) => s.trim()).filter(Boolean);
  for (const x of xs) if (!known.includes(x)) throw new Error(`${name}: unknown ${JSON.stringify(x)} (known: ${known.join(', ')})`);
  return new Set(xs);
}

export function loadConfig(): BenchConfig {
  const only = new Set((process.env.BENCH_ONLY ?? FIGURES.join(',')).split(',').map((s) => s.trim()).filter(Boolean));
  for (const f of only) if (!(FIGURES as readonly string[]).includes(f)) throw new Error(`BENCH_ONLY: unknown figure ${JSON.stringify(f)} (known: ${FIGURES.join(', ')})`);
  return {
    rounds: int('BENCH_ROUNDS', 5),
    throughputRounds: int('BENCH_THROUGHPUT_ROUNDS', 3),
    datapathCalls: int('BENCH_DATAPATH_CALLS', 200),
    // Pod CIDRs are /20 (4093 pods); the latency figure holds two kelp variants' pods at once.
    cniSamples: int('BENCH_CNI_SAMPLES', 50, 1, 2000),
    concurrency: int('BENCH_CONCURRENCY', 100, 1, 4000),
    memoryPods: int('BENCH_MEMORY_PODS', 1000, 101, 4000),
    memoryRounds: int('BENCH_MEMORY_ROUNDS', 1),
    memoryConcurrency: int('BENCH_MEMORY_CONCURRENCY', 16),
    podRounds: int('BENCH_POD_ROUNDS', 5),
    // 2 s and 4 s: with 1 s and 2 s, the per-round ratios of TCP_CRR and 4-stream throughput
    // swung by ±5 % and ±20 % between runs, enough to move a median across a target.
    rrSeconds: int('BENCH_RR_SECONDS', 2, 1, 600),
    iperfSeconds: int('BENCH_IPERF_SECONDS', 4, 1, 600),
    podCpu: int('BENCH_POD_CPU', cpus().length - 1, 0, cpus().length - 1),
    restartRounds: int('BENCH_RESTART_ROUNDS', 3, 1, 100),
    kubeRounds: int('BENCH_KUBE_ROUNDS', 5, 1, 100),
    kubePods: int('BENCH_KUBE_PODS', 5000, 1, 100_000),
    kubeChanges: int('BENCH_KUBE_CHANGES', 200, 1, 100_000),
    policyRounds: int('BENCH_POLICY_ROUNDS', 5, 1, 100),
    // At least the 100 policies of the TCP_RR pods and the real pods themselves; the pods fit
    // the node's /20 next to its real ones, and ten other nodes' /24s.
    policyPods: int('BENCH_POLICY_PODS', 1000, 20, 3000),
    policyPolicies: int('BENCH_POLICY_POLICIES', 1000, 100, 20_000),
    policyChanges: int('BENCH_POLICY_CHANGES', 32, 2, 10_000),
    policyCliChanges: int('BENCH_POLICY_CLI_CHANGES', 4, 0, 1000),
    policyReadyPods: int('BENCH_POLICY_READY_PODS', 10, 1, 1000),
    policyTrace: process.env.BENCH_POLICY_TRACE === '1',
    servicesRounds: int('BENCH_SERVICES_ROUNDS', 5, 1, 100),
    servicesN: ints('BENCH_SERVICES_N', [1, 1000, 10_000], 1, 30_000),
    servicesProgramRounds: int('BENCH_SERVICES_PROGRAM_ROUNDS', 3, 1, 100),
    servicesProgramN: int('BENCH_SERVICES_PROGRAM_N', 10_000, 1, 30_000),
    servicesRr: process.env.BENCH_SERVICES_RR !== '0',
    servicesTools: names('BENCH_SERVICES_TOOLS', SERVICES_TOOLS),
    multinodeRounds: int('BENCH_MULTINODE_ROUNDS', 5, 1, 100),
    only,
    outDir: process.env.BENCH_OUT || undefined,
  };
}

/** Round r runs the variants in this order: each variant takes every position equally often. */
export function rotate<T>(xs: readonly T[], r: number): T[] {
  const k = ((r % xs.length) + xs.length) % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}
