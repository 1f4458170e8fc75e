// Figure 10, flow events (issue 14): what the events cost and how many the agent takes.
//   - Pod ↔ pod TCP_RR and TCP_CRR on three kelp nodes that differ only in their event limits:
//     every event delivered (the largest --event-rate and --event-burst), the agent's defaults, and
//     off (kelp_event_config rate 0: every event suppressed in BPF, as cheap as the switch can make
//     it: one per-CPU lookup). One client gives the three pairs turns, in rotated order per round.
//   - The highest drop-event rate delivered with no unaccounted loss: a pod floods another with UDP
//     a NetworkPolicy denies (one DROP event per packet) at increasing rates on the every-event node;
//     per step the datapath's accounting (emitted, suppressed, lost; GET /v1/events/stats) against
//     the agent's received and against the drops the datapath counted (GET /v1/counters, exact).
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import path from 'node:path';
import { openPinnedMap } from '../src/bpf';
import { requestJson } from '../src/cli/client';
import type { EventStats } from '../src/datapath/flow-types';
import { writeEventConfig } from '../src/datapath/events';
import { sh, type Sandbox, type SandboxPod } from '../src/sandbox';
import { applyObjects, Obj, programmed } from './lib/agent-api';
import { throwIfInterrupted } from './lib/cleanup';
import { BenchConfig, rotate } from './lib/config';
import { run } from './lib/exec';
import { Figure, HeadlineRow, spreadText } from './lib/figure';
import { agentPid, KelpNode, startKelpNode } from './lib/kelp-node';
import { progress, sleep } from './lib/progress';
import { RrPair, rrRates } from './lib/rr';
import { num, ratio, spread } from './lib/stats';

export const ALL = 'events on, every event';
export const DEFAULTS = 'events on, default limits';
export const OFF = 'events off';
export const RR = 'TCP_RR';
export const CRR = 'TCP_CRR';
const FLOW_RATE = 'flow events emitted during TCP_CRR';
const HIGHEST = 'highest drop-event rate with nothing unaccounted';
const WHOLE = 'drop-event rate delivered whole at every step up to it';
const AGENT_CPU = 'agent CPU during TCP_CRR';
const FLOW_NOT_DELIVERED = 'flow events suppressed or lost during TCP_CRR';
const NS = 'ev';
const FLOOD_PORT = 5201;
/** Offered UDP packets per second of the flood steps (each a DROP event). */
const FLOOD_PPS = [5_000, 10_000, 15_000, 20_000, 30_000, 50_000, 100_000, 200_000];
const FLOOD_SECONDS = 2;
const PAYLOAD = 18;

interface EventNode {
  label: string;
  node: KelpNode;
  client: SandboxPod;
  server: SandboxPod;
}

const podObject = (name: string, app: string): Obj => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS, labels: { app } }, spec: { containers: [{ name }] } });

/** The flood's sink takes TCP and nothing else: the flood's UDP is dropped. */
const SINK_POLICY: Obj = {
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { name: 'sink-tcp-only', namespace: NS },
  spec: { podSelector: { matchLabels: { app: 'sink' } }, policyTypes: ['Ingress'], ingress: [{ ports: [{ protocol: 'TCP', port: FLOOD_PORT }] }] },
};

async function apply(sb: Sandbox, objects: Obj[]): Promise<void> {
  const rev = await applyObjects(sb.socketPath, objects);
  if (!(await programmed(sb.socketPath, rev, 30_000))) throw new Error(`events: ${sb.node}: revision ${rev} not programmed within 30 s`);
}

const stats = (sb: Sandbox) => requestJson<EventStats>(sb.socketPath, 'GET', '/v1/events/stats');

async function denied(sb: Sandbox): Promise<number> {
  const rows = await requestJson<Array<{ reason: string; packets: string }>>(sb.socketPath, 'GET', '/v1/counters');
  return rows.filter((r) => r.reason === 'POLICY_DENY').reduce((n, r) => n + Number(r.packets), 0);
}

/** Waits until the agent has read every event the datapath put in the ring (or 10 s). */
async function drained(sb: Sandbox): Promise<EventStats> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const s = await stats(sb);
    const inFlight = (['drop', 'flow', 'trace'] as const).some((c) => s.byClass[c].emitted !== s.byClass[c].received);
    if (!inFlight || Date.now() > deadline) return s;
    await sleep(50);
  }
}

async function startNode(tag: string, label: string, cidr: string, agentArgs: string[], off: boolean): Promise<EventNode> {
  const node = await startKelpNode({ prefix: tag, podCidr: cidr, logLevel: 'warn', outside: false, agentArgs });
  const sb = node.sb;
  await apply(sb, [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } }, podObject('rr-client', 'rr'), podObject('rr-server', 'rr'), podObject('flood', 'flood'), podObject('sink', 'sink'), SINK_POLICY]);
  if (off) {
    // Rate 0, burst 1: the bucket never holds a token, so every event is suppressed (and counted).
    const map = openPinnedMap(path.join(sb.bpfRoot, 'kelp_event_config'));
    try {
      const none = { rate: 0, burst: 1 };
      writeEventConfig(map, { drop: none, flow: none, trace: none });
    } finally {
      map.close();
    }
  }
  return { label, node, client: await sb.addPod('rr-client', NS), server: await sb.addPod('rr-server', NS) };
}

/** User + system CPU seconds of a process so far (/proc/PID/stat, clock ticks of 1/100 s). */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

interface FloodStep {
  offered: number;
  seconds: number;
  sent: number;
  denied: number;
  emitted: number;
  suppressed: number;
  lost: number;
  received: number;
}

/**
 * Sends `pps` UDP datagrams a second for `seconds` to ip:port and prints how many it sent: paced by
 * the clock (what is due is sent in batches), so a slow step shows as fewer sent, not a longer one.
 */
const FLOOD_SCRIPT = `
const [pps, seconds, ip, port, size] = process.argv.slice(1).map((x, i) => (i === 2 ? x : Number(x)));
const s = require('dgram').createSocket('udp4');
const buf = Buffer.alloc(size);
let sent = 0, done = 0;
const t0 = process.hrtime.bigint();
const tick = () => {
  const el = Number(process.hrtime.bigint() - t0) / 1e9;
  if (el >= seconds) return finish();
  const due = Math.min(Math.floor(el * pps) - sent, 2000);
  for (let i = 0; i < due; i++) { sent++; s.send(buf, port, ip, () => { done++; }); }
  setImmediate(tick);
};
const finish = () => { const w = () => (done < sent ? setImmediate(w) : (console.log('sent=' + sent), s.close())); w(); };
tick();
`;

/** One flood step: UDP from the flood pod to the sink at `pps`, the accounting before and after. */
async function floodStep(sb: Sandbox, flood: SandboxPod, sink: SandboxPod, pps: number): Promise<FloodStep> {
  throwIfInterrupted();
  const s0 = await drained(sb);
  const d0 = await denied(sb);
  const out = await run('ip', ['netns', 'exec', flood.netns, process.execPath, '-e', FLOOD_SCRIPT, String(pps), String(FLOOD_SECONDS), sink.ip, String(FLOOD_PORT), String(PAYLOAD)], {
    timeoutMs: (FLOOD_SECONDS + 20) * 1000,
  });
  const s1 = await drained(sb);
  const d1 = await denied(sb);
  const sent = Number(/^sent=(\d+)$/m.exec(out)?.[1] ?? NaN);
  const d = (k: 'emitted' | 'suppressed' | 'lost' | 'received') => s1.byClass.drop[k] - s0.byClass.drop[k];
  return { offered: pps, seconds: FLOOD_SECONDS, sent, denied: d1 - d0, emitted: d('emitted'), suppressed: d('suppressed'), lost: d('lost'), received: d('received') };
}

/** Events not in any count: drops the datapath counted that are neither received, suppressed nor lost. */
const unaccounted = (s: FloodStep) => s.denied - (s.received + s.suppressed + s.lost);

export async function benchEvents(cfg: BenchConfig, tag: string): Promise<Figure> {
  const fig = new Figure('10. Flow events: pod ↔ pod TCP_RR/CRR with events on and off, the highest event rate with no unaccounted loss');
  const nodes: EventNode[] = [];
  try {
    progress(`events: starting three kelp nodes (${tag}a: every event, ${tag}b: default limits, ${tag}c: off)`);
    nodes.push(await startNode(`${tag}a`, ALL, '10.251.0.0/24', ['--event-rate=10000000', '--event-burst=1000000'], false));
    nodes.push(await startNode(`${tag}b`, DEFAULTS, '10.251.1.0/24', [], false));
    nodes.push(await startNode(`${tag}c`, OFF, '10.251.2.0/24', [], true));
    // The agents away from the pairs' CPU: the pairs' rates show what events cost the datapath, and
    // the agent's own work on them is its CPU row, not a share of the pinned pair's CPU.
    const agentCpu = cpus().length > 1 ? (cfg.podCpu === 0 ? 1 : 0) : undefined;
    if (agentCpu !== undefined) for (const n of nodes) sh('taskset', ['-a', '-p', '-c', String(agentCpu), String(agentPid(n.node.sb))]);
    const pairs: RrPair[] = nodes.map((n) => ({ name: n.label, clientNetns: n.client.netns, serverNetns: n.server.netns, serverIp: n.server.ip }));
    await rrRates(pairs, 'rr', 1, cfg.podCpu);

    for (let r = 0; r < cfg.podRounds; r++) {
      throwIfInterrupted();
      const order = rotate(pairs, r);
      const say = (line: string) => progress(`events round ${r + 1}/${cfg.podRounds}: ${line}`);
      for (const [measure, mode] of [
        [RR, 'rr'],
        [CRR, 'crr'],
      ] as const) {
        const before = await Promise.all(nodes.map((n) => drained(n.node.sb)));
        const cpu0 = nodes.map((n) => cpuSeconds(agentPid(n.node.sb)));
        const rates = await rrRates(order, mode, cfg.rrSeconds, cfg.podCpu);
        order.forEach((p, i) => fig.record(measure, p.name, 'transactions/s', rates[i].rate));
        if (mode === 'crr') {
          const after = await Promise.all(nodes.map((n) => drained(n.node.sb)));
          // Each pair ran for rrSeconds of the turns; its agent read that pair's events, and idled otherwise.
          nodes.forEach((n, i) => {
            const d = (k: 'emitted' | 'suppressed' | 'lost') => after[i].byClass.flow[k] - before[i].byClass.flow[k];
            fig.record(FLOW_RATE, n.label, 'events/s', d('emitted') / cfg.rrSeconds);
            fig.record(FLOW_NOT_DELIVERED, n.label, 'events/s', (d('suppressed') + d('lost')) / cfg.rrSeconds);
            fig.record(AGENT_CPU, n.label, '% of a CPU', (100 * (cpuSeconds(agentPid(n.node.sb)) - cpu0[i])) / cfg.rrSeconds);
          });
        }
        say(`${measure}: ${order.map((p, i) => `${p.name} ${rates[i].rate}/s`).join(', ')}`);
      }
    }
    for (const m of [RR, CRR]) {
      fig.compare(m, ALL, OFF, 'higher');
      fig.compare(m, DEFAULTS, OFF, 'higher');
    }

    // The flood, on the every-event node: BPF's bucket never suppresses, so what is not received is lost in the ring.
    const sb = nodes[0].node.sb;
    const flood = await sb.addPod('flood', NS);
    const sink = await sb.addPod('sink', NS);
    const steps: FloodStep[] = [];
    for (const pps of FLOOD_PPS) {
      const s = await floodStep(sb, flood, sink, pps);
      steps.push(s);
      progress(
        `events flood ${num(pps)} pps offered: ${num(s.denied / s.seconds)} drops/s, emitted ${s.emitted}, suppressed ${s.suppressed}, lost ${s.lost}, ` +
          `received ${s.received}, unaccounted ${unaccounted(s)}`,
      );
    }
    // Exact: every drop received or counted as suppressed or lost. Whole: nothing lost either, at
    // that step and every slower one (a loss at one step and none at a faster one is a burst, not a limit).
    const exact = steps.filter((s) => unaccounted(s) === 0 && s.received > 0);
    fig.record(HIGHEST, ALL, 'events/s', exact.length ? Math.max(...exact.map((s) => s.received / s.seconds)) : 0);
    const firstLoss = steps.findIndex((s) => s.lost > 0 || s.suppressed > 0 || unaccounted(s) !== 0);
    const whole = firstLoss < 0 ? steps : steps.slice(0, firstLoss);
    fig.record(WHOLE, ALL, 'events/s', whole.length ? Math.max(...whole.map((s) => s.received / s.seconds)) : 0);
    notes(fig, cfg, steps);
  } finally {
    for (const n of nodes.reverse()) await n.node.stop();
  }
  return fig;
}

function notes(fig: Figure, cfg: BenchConfig, steps: FloodStep[]): void {
  fig.notes.push(
    `Three kelp nodes, each with its own agent (standalone) and the same objects (namespace \`${NS}\`, four Pod objects, one NetworkPolicy that selects only the flood's sink), ` +
      `two real pods each for TCP_RR/CRR (build/bench/rr, 1-byte request and response; CRR a new connection each, so a FLOW_START and a FLOW_END per transaction). ` +
      `**${ALL}**: \`--event-rate=10000000 --event-burst=1000000\` (nothing suppressed); **${DEFAULTS}**: the agent's defaults (10,000/s per CPU and class, burst 1,000); ` +
      `**${OFF}**: kelp_event_config written with rate 0 and burst 1 through its pin after the agent started, so BPF suppresses every event (the token-bucket lookup is still paid). ` +
      `One client gives the three pairs turns of 100 ms until each has had ${cfg.rrSeconds} s, client and servers pinned to CPU ${cfg.podCpu}; the pairs in rotated order each round. Target: events on within 3 % of off. ` +
      `The agents are pinned to ${cpus().length > 1 ? `CPU ${cfg.podCpu === 0 ? 1 : 0}` : 'the same CPU (one CPU only)'}, away from the pairs: the rates show what events cost the datapath (the ring reservation and submit per event), ` +
      `and what reading and enriching them costs the agent is its own row ("${AGENT_CPU}": its user + system time over the run ÷ the pair's ${cfg.rrSeconds} s; the agent idles while the other pairs have their turns).`,
    `Flood (on the every-event node): UDP, ${PAYLOAD}-byte payloads, ${FLOOD_SECONDS} s per step, from pod \`flood\` (a Node dgram sender paced by the clock, batches of what is due) to pod \`sink\`, whose policy admits only TCP, so every datagram is a POLICY_DENY drop and one DROP event. ` +
      'Per step: the drops the datapath counted (GET /v1/counters, exact), the drop class of GET /v1/events/stats (emitted, suppressed, lost in BPF; received by the agent), read once the agent had read ' +
      'everything emitted (or after 10 s). Unaccounted = drops − (received + suppressed + lost), which holds emitted − received (in flight, or lost between ring and agent): zero means every event is either delivered or counted as not. ' +
      `"${HIGHEST}": the highest received rate among steps where every drop is received or counted (suppressed, lost); ` +
      `"${WHOLE}": the highest received rate before the first step that lost or suppressed any event.`,
    `Steps: ${steps
      .map((s) => `${num(s.offered)} pps offered → ${num(s.denied / s.seconds)} drops/s (sent ${s.sent}), emitted ${s.emitted}, suppressed ${s.suppressed}, lost ${s.lost}, received ${s.received}, unaccounted ${unaccounted(s)}`)
      .join('; ')}.`,
  );
}

/** The figure's headline rows. */
export function eventsHeadlineRows(fig: Figure | undefined): HeadlineRow[] {
  if (!fig) return [];
  const rows: HeadlineRow[] = [];
  for (const m of [RR, CRR]) {
    rows.push({
      figure: `Flow events: pod ↔ pod ${m}, every event delivered (ref: events off)`,
      kelp: spreadText(spread(fig.values(m, ALL)), fig.unit(m, ALL)),
      reference: spreadText(spread(fig.values(m, OFF)), fig.unit(m, OFF)),
      ratio: `${spreadText(spread(fig.ratios(m, ALL, OFF)), '', ratio)}, higher is better`,
    });
  }
  rows.push({ figure: 'Flow events: highest drop-event rate with no unaccounted loss (every event received or counted)', kelp: `${num(fig.values(HIGHEST, ALL)[0])} events/s`, reference: '—', ratio: '—' });
  rows.push({ figure: 'Flow events: drop-event rate delivered whole (nothing lost) at every step up to it', kelp: `${num(fig.values(WHOLE, ALL)[0])} events/s`, reference: '—', ratio: '—' });
  return rows;
}
