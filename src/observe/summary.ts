// GET /v1/flows/summary: top talkers and top drop reasons among the stored records of the last
// window seconds.
import type { EventStats, FlowPeer, FlowRecord, FlowSummary } from '../datapath/flow-types';

export function peerLabel(p: FlowPeer): string {
  if (p.pod) return `${p.pod.namespace}/${p.pod.name}`;
  if (p.node) return `node/${p.node}`;
  return p.address;
}

export function summarize(records: readonly FlowRecord[], windowSeconds: number, nowMs: number, stats: EventStats, top = 10): FlowSummary {
  const since = nowMs - windowSeconds * 1000;
  const talkers = new Map<string, FlowSummary['talkers'][number]>();
  const reasons = new Map<string, FlowSummary['dropReasons'][number]>();
  for (const r of records) {
    if (Date.parse(r.time) < since) continue;
    const source = peerLabel(r.source);
    const destination = peerLabel(r.destination);
    const key = `${source}\n${destination}`;
    let t = talkers.get(key);
    if (!t) talkers.set(key, (t = { source, destination, flows: 0, bytes: 0, drops: 0 }));
    if (r.type === 'flow-start') t.flows += 1;
    if (r.type === 'flow-end' && r.counters) t.bytes += r.counters.bytesOut + r.counters.bytesIn;
    if (r.type === 'drop') {
      t.drops += 1;
      const policy = r.policy ? `${r.policy.kind} ${r.policy.namespace ? `${r.policy.namespace}/` : ''}${r.policy.name}` : undefined;
      const rkey = `${r.reason ?? '?'}\n${policy ?? ''}`;
      let d = reasons.get(rkey);
      if (!d) {
        d = { reason: r.reason ?? 'UNKNOWN', count: 0 };
        if (policy) d.policy = policy;
        reasons.set(rkey, d);
      }
      d.count += 1;
    }
  }
  const rank = (t: FlowSummary['talkers'][number]) => t.flows + t.drops;
  return {
    windowSeconds,
    talkers: [...talkers.values()].sort((a, b) => rank(b) - rank(a) || b.bytes - a.bytes).slice(0, top),
    dropReasons: [...reasons.values()].sort((a, b) => b.count - a.count).slice(0, top),
    stats,
  };
}
