// Packet loss through an agent restart: a kelp node with three pods carries a pod → pod and a
// pod → outside (masqueraded) TCP stream and two 100-per-second ping streams while its agent is
// SIGKILLed, left down for `downMs`, and started again. Per round: pings sent and lost (gaps
// below the last answered sequence number), whether each TCP stream arrived complete and in
// order on its original connection, and how long the restarted agent took to serve CNI again.
import { Sandbox } from '../src/sandbox';
import { killAll, prefixFor, sleep, startPing, startStream, waitReady } from '../test/support/restart';

export interface RestartRound {
  /** ms from starting the agent until it answered STATUS. */
  readyMs: number;
  pingSent: number;
  pingLost: number;
  tcpBytes: number;
  /** Both streams complete, in order, without a connection error. */
  tcpIntact: boolean;
}

export interface RestartBenchResult {
  rounds: RestartRound[];
  downMs: number;
}

export async function benchRestart(opts: { rounds?: number; downMs?: number; log?: (line: string) => void } = {}): Promise<RestartBenchResult> {
  const rounds = opts.rounds ?? 3;
  const downMs = opts.downMs ?? 1000;
  const log = opts.log ?? ((line: string) => console.log(line));
  const sb = await Sandbox.start({ prefix: prefixFor('brs'), logLevel: 'warn' });
  const out: RestartRound[] = [];
  try {
    const a = await sb.addPod('a');
    const b = await sb.addPod('b');
    const c = await sb.addPod('c');
    for (let r = 0; r < rounds; r++) {
      const streams = [await startStream(b.netns, a.netns, b.ip, 5101 + r), await startStream(sb.outside!, c.netns, sb.outsideIp, 5201 + r)];
      const pings = [await startPing(a.netns, b.ip), await startPing(c.netns, sb.outsideIp)];
      await sleep(500);
      await sb.stopAgent(true);
      await sleep(downMs);
      const t0 = process.hrtime.bigint();
      await sb.startAgent();
      await waitReady(sb);
      const readyMs = Number(process.hrtime.bigint() - t0) / 1e6;
      await sleep(500);
      const tcp = await Promise.all(streams.map((s) => s.stop()));
      const icmp = await Promise.all(pings.map((p) => p.stop()));
      const round: RestartRound = {
        readyMs,
        pingSent: icmp.reduce((n, p) => n + p.transmitted, 0),
        pingLost: icmp.reduce((n, p) => n + p.lost, 0),
        tcpBytes: tcp.reduce((n, s) => n + s.received, 0),
        tcpIntact: tcp.every((s) => s.bad === -1 && s.received === s.sent && !s.clientError && !s.serverError),
      };
      log(`restart round ${r + 1}: ready in ${readyMs.toFixed(0)} ms, ${round.pingLost}/${round.pingSent} pings lost, ` +
        `${(round.tcpBytes / 2 ** 20).toFixed(1)} MiB TCP ${round.tcpIntact ? 'intact' : 'BROKEN'}`);
      out.push(round);
    }
  } finally {
    killAll();
    await sb.stop();
  }
  return { rounds: out, downMs };
}
