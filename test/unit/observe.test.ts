// The agent's flow store, FlowQuery parsing and matching, enrichment of datapath events into
// FlowRecords, the summary, and the event decoder's accounting of records it cannot read.
import { describe, expect, it } from 'vitest';
import { DropReason } from '../../src/datapath/drop';
import { decodeEvent, EventCounter, FlowEvent, UnknownEventError, eventStats } from '../../src/datapath/events';
import type { FlowRecord } from '../../src/datapath/flow-types';
import { EventType, FlowClose, kelpEvent, kelpEventHdr, kelpFlowEvent, RawFlowEvent } from '../../src/datapath/structs';
import { Enricher, EventClock, FlowDirectory, agentDirectory } from '../../src/observe/enrich';
import { FlowQueryError, matchFlow, parseFlowQuery } from '../../src/observe/filter';
import { FlowStore } from '../../src/observe/store';
import { Observe } from '../../src/observe';
import { summarize } from '../../src/observe/summary';

const rawFlow: RawFlowEvent = {
  tsNs: 5_000_000_000n,
  type: EventType.FLOW_START,
  cpu: 1,
  saddr: '10.1.0.2',
  daddr: '10.1.0.3',
  sport: 40000,
  dport: 80,
  proto: 6,
  dir: 1,
  closedBy: FlowClose.OPEN,
  epId: 7,
  policyId: 120,
  rule: 0,
  tier: 2,
  action: 1,
  svcId: 0,
  svcAddr: '0.0.0.0',
  svcPort: 0,
  ifindex: 12,
  created: 4_000_000_000n,
  txPackets: 1n,
  txBytes: 74n,
  rxPackets: 0n,
  rxBytes: 0n,
};

const dropRaw = {
  tsNs: 1n, type: EventType.DROP, dir: 1, reason: DropReason.POLICY_DENY, ifindex: 3, targetIfindex: 0, epId: 6, len: 60, ethProto: 0x800, proto: 6,
  tracePoint: 0, saddr: '10.1.0.4', daddr: '10.1.0.3', sport: 5555, dport: 80, policyId: 121, rule: 65535, tier: 2, action: 2,
};

describe('event records', () => {
  it('flow events round-trip and decode with their counters and close reason', () => {
    expect(kelpFlowEvent.decode(kelpFlowEvent.encode(rawFlow))).toEqual(rawFlow);
    const start = decodeEvent(kelpFlowEvent.encode({ ...rawFlow, svcId: 3, svcAddr: '10.96.0.10', svcPort: 8080 }));
    expect(start).toMatchObject({ kind: 'flow-start', direction: 'ingress', epId: 7, service: { svcId: 3, address: '10.96.0.10', port: 8080 }, policy: { policyId: 120, action: 'allow' } });
    const end = decodeEvent(kelpFlowEvent.encode({ ...rawFlow, type: EventType.FLOW_END, closedBy: FlowClose.RST, rxPackets: 3n, rxBytes: 300n }));
    expect(end).toMatchObject({ kind: 'flow-end', closedBy: 'rst', rxPackets: 3n, rxBytes: 300n });
    expect(end).not.toHaveProperty('service');
  });

  it('counts a record of another version, an unknown type or a wrong size as unknown, never misreading it', () => {
    const c = new EventCounter();
    const good = kelpEvent.encode(dropRaw);
    const future = Buffer.from(good);
    future.writeUInt8(3, 0); // version 3
    const unknownType = Buffer.concat([kelpEventHdr.encode({ version: 2, type: 42, size: 24, cpu: 0, tsNs: 1n }), Buffer.alloc(8)]);
    const wrongSize = Buffer.from(good);
    wrongSize.writeUInt16LE(72, 2);
    const badClose = kelpFlowEvent.encode({ ...rawFlow, type: EventType.FLOW_END, closedBy: 9 });
    const errors: string[] = [];
    for (const rec of [good, future, unknownType, wrongSize, badClose, Buffer.alloc(8), kelpFlowEvent.encode(rawFlow)]) c.take(rec, (e) => errors.push(e.message));
    expect(c.counts).toEqual({ received: { drop: 1, flow: 1, trace: 0 }, unknown: 5 });
    expect(errors[0]).toMatch(/version 3/);
    expect(errors[1]).toMatch(/unknown type 42/);
    expect(errors[2]).toMatch(/72 bytes/);
    expect(() => decodeEvent(future)).toThrow(UnknownEventError);
  });

  it('EventStats joins the datapath counters with what was received', () => {
    const s = eventStats(
      { drop: { emitted: 5, suppressed: 2, lost: 1 }, flow: { emitted: 3, suppressed: 0, lost: 0 }, trace: { emitted: 0, suppressed: 0, lost: 0 } },
      { received: { drop: 5, flow: 2, trace: 0 }, unknown: 1 },
    );
    expect(s).toEqual({
      byClass: { drop: { emitted: 5, suppressed: 2, lost: 1, received: 5 }, flow: { emitted: 3, suppressed: 0, lost: 0, received: 2 }, trace: { emitted: 0, suppressed: 0, lost: 0, received: 0 } },
      unknown: 1,
    });
  });
});

const directory: FlowDirectory = {
  podByEndpoint: (id) => ({ 6: { namespace: 'shop', name: 'web' }, 7: { namespace: 'shop', name: 'db' } })[id],
  podByIp: (ip) => ({ '10.1.0.2': { namespace: 'shop', name: 'api' }, '10.1.0.3': { namespace: 'shop', name: 'db' }, '10.2.0.9': { namespace: 'other', name: 'far' } })[ip],
  nodeByIp: (ip) => (ip.startsWith('10.3.') ? 'node-b' : undefined),
  serviceById: (id) => (id === 3 ? { namespace: 'shop', name: 'db-svc' } : undefined),
  policyById: (id) => (id === 120 ? { kind: 'NetworkPolicy', namespace: 'shop', name: 'db-allow-api' } : id === 121 ? { kind: 'NetworkPolicy', namespace: 'shop', name: 'db-deny' } : undefined),
};

const clock = new EventClock(
  () => 0n,
  () => Date.UTC(2026, 11, 6, 12, 0, 0),
);

describe('enrichment', () => {
  const en = new Enricher(directory, clock);

  it('names pods, the service and the policy of a flow, and times it in RFC 3339 with nanoseconds', () => {
    const ev = decodeEvent(kelpFlowEvent.encode({ ...rawFlow, tsNs: 1_500_000_123n, svcId: 3, svcAddr: '10.96.0.10', svcPort: 5432 }));
    expect(en.record(ev)).toEqual({
      time: '2026-12-06T12:00:01.500000123Z',
      type: 'flow-start',
      verdict: 'forwarded',
      direction: 'ingress',
      protocol: 'TCP',
      source: { address: '10.1.0.2', port: 40000, pod: { namespace: 'shop', name: 'api' } },
      destination: { address: '10.1.0.3', port: 80, pod: { namespace: 'shop', name: 'db' } },
      service: { namespace: 'shop', name: 'db-svc', address: '10.96.0.10', port: 5432 },
      policy: { kind: 'NetworkPolicy', namespace: 'shop', name: 'db-allow-api', rule: 0, tier: 'networkpolicy', action: 'allow' },
      endpoint: 7,
    });
  });

  it('a flow end carries its counters; a drop its reason and policy; peers off the pods are a node or the world', () => {
    const end = en.record(decodeEvent(kelpFlowEvent.encode({ ...rawFlow, type: EventType.FLOW_END, closedBy: FlowClose.FIN, tsNs: 6_250_000_000n, dir: 2, epId: 0, daddr: '10.3.0.1', txPackets: 5n, txBytes: 500n, rxPackets: 4n, rxBytes: 4000n })));
    expect(end.counters).toEqual({ packetsOut: 5, bytesOut: 500, packetsIn: 4, bytesIn: 4000, durationMs: 2250, closedBy: 'fin' });
    expect(end.destination).toEqual({ address: '10.3.0.1', port: 80, node: 'node-b' });
    const drop = en.record(decodeEvent(kelpEvent.encode({ ...dropRaw, daddr: '192.0.2.1' })));
    expect(drop).toMatchObject({
      type: 'drop',
      verdict: 'dropped',
      reason: 'POLICY_DENY',
      direction: 'egress',
      source: { pod: { namespace: 'shop', name: 'web' } },
      destination: { address: '192.0.2.1', world: true },
      policy: { kind: 'NetworkPolicy', name: 'db-deny', rule: 65535, action: 'deny' },
    });
  });

  it('the agent directory indexes endpoints, pods, node CIDRs, services and policy refs, rebuilt when the version changes', () => {
    let v = 'a';
    const pods = [{ metadata: { namespace: 'ns1', name: 'p1' }, status: { podIPs: [{ ip: '10.9.0.5' }] } }];
    const dir = agentDirectory(
      {
        endpoints: () => [{ id: 4, ips: [{ address: '10.9.0.4/24' }], pod: { namespace: 'ns1', name: 'local' } }],
        pods: () => pods,
        nodes: () => [{ metadata: { name: 'n2' }, spec: { podCIDRs: ['10.8.0.0/24'] }, status: { addresses: [{ type: 'InternalIP', address: '192.168.1.2' }] } }],
        services: () => [{ svcId: 11, service: 'ns1/svc' }],
        policies: () => [
          { id: 1, kind: 'NetworkPolicy', ref: 'NetworkPolicy/ns1/allow' },
          { id: 2, kind: 'ClusterNetworkPolicy', ref: 'ClusterNetworkPolicy/global' },
        ],
        version: () => v,
      },
      0,
    );
    expect(dir.podByEndpoint(4)).toEqual({ namespace: 'ns1', name: 'local' });
    expect(dir.podByIp('10.9.0.4')).toEqual({ namespace: 'ns1', name: 'local' });
    expect(dir.podByIp('10.9.0.5')).toEqual({ namespace: 'ns1', name: 'p1' });
    expect(dir.nodeByIp('10.8.0.77')).toBe('n2');
    expect(dir.nodeByIp('192.168.1.2')).toBe('n2');
    expect(dir.nodeByIp('10.7.0.1')).toBeUndefined();
    expect(dir.serviceById(11)).toEqual({ namespace: 'ns1', name: 'svc' });
    expect(dir.policyById(1)).toEqual({ kind: 'NetworkPolicy', namespace: 'ns1', name: 'allow' });
    expect(dir.policyById(2)).toEqual({ kind: 'ClusterNetworkPolicy', name: 'global' });
    pods.push({ metadata: { namespace: 'ns1', name: 'p2' }, status: { podIPs: [{ ip: '10.9.0.6' }] } });
    expect(dir.podByIp('10.9.0.6')).toBeUndefined();
    v = 'b';
    expect(dir.podByIp('10.9.0.6')).toEqual({ namespace: 'ns1', name: 'p2' });
  });

  it('a policy or Service id the directory does not know yet is looked up again at once (a drop right after an apply is named)', () => {
    let v = 'a';
    const policies = [{ id: 1, kind: 'NetworkPolicy', ref: 'NetworkPolicy/ns1/old' }];
    const services = [{ svcId: 1, service: 'ns1/old' }];
    const dir = agentDirectory(
      { endpoints: () => [], pods: () => [], nodes: () => [], services: () => services, policies: () => policies, version: () => v },
      60_000,
    );
    expect(dir.policyById(1)).toEqual({ kind: 'NetworkPolicy', namespace: 'ns1', name: 'old' });
    policies.push({ id: 2, kind: 'NetworkPolicy', ref: 'NetworkPolicy/ns1/new' });
    services.push({ svcId: 2, service: 'ns1/new' });
    v = 'b';
    // Within the minimum age: only a miss makes the directory look again.
    expect(dir.policyById(2)).toEqual({ kind: 'NetworkPolicy', namespace: 'ns1', name: 'new' });
    expect(dir.serviceById(2)).toEqual({ namespace: 'ns1', name: 'new' });
    expect(dir.policyById(3)).toBeUndefined();
  });
});

function rec(over: Partial<FlowRecord> & { src?: string; dst?: string; sport?: number; dport?: number }): FlowRecord {
  const pod = (s?: string) => (s ? { namespace: s.split('/')[0], name: s.split('/')[1] } : undefined);
  const { src, dst, sport, dport, ...rest } = over;
  const source = { address: '10.0.0.1', port: sport ?? 1000, ...(src ? { pod: pod(src) } : { world: true }) };
  const destination = { address: '10.0.0.2', port: dport ?? 80, ...(dst ? { pod: pod(dst) } : { world: true }) };
  return { time: '2026-12-06T12:00:00.000000000Z', type: 'flow-start', verdict: 'forwarded', direction: 'egress', protocol: 'TCP', source, destination, endpoint: 1, ...rest };
}

describe('Observe', () => {
  it("a service flow's end names the Service its start named (FLOW_END does not carry it)", () => {
    const o = new Observe({
      directory,
      datapathStats: () => ({ drop: { emitted: 0, suppressed: 0, lost: 0 }, flow: { emitted: 2, suppressed: 0, lost: 0 }, trace: { emitted: 0, suppressed: 0, lost: 0 } }),
      received: () => ({ received: { drop: 0, flow: 2, trace: 0 }, unknown: 0 }),
    });
    o.onEvent(decodeEvent(kelpFlowEvent.encode({ ...rawFlow, svcId: 3, svcAddr: '10.96.0.10', svcPort: 5432 })));
    o.onEvent(decodeEvent(kelpFlowEvent.encode({ ...rawFlow, type: EventType.FLOW_END, closedBy: FlowClose.FIN })));
    // Another flow of the same tuple (another `created`) is not that one.
    o.onEvent(decodeEvent(kelpFlowEvent.encode({ ...rawFlow, type: EventType.FLOW_END, closedBy: FlowClose.FIN, created: 1n })));
    expect(o.store.all().map((r) => [r.type, r.service?.name])).toEqual([
      ['flow-start', 'db-svc'],
      ['flow-end', 'db-svc'],
      ['flow-end', undefined],
    ]);
    expect(o.stats().byClass.flow).toEqual({ emitted: 2, suppressed: 0, lost: 0, received: 2 });
  });
});

describe('flow store', () => {
  it('keeps the last records in order and tells subscribers of each new one', () => {
    const s = new FlowStore(3);
    const heard: number[] = [];
    const off = s.subscribe((r) => heard.push(r.endpoint));
    for (let i = 1; i <= 5; i++) s.add(rec({ endpoint: i }));
    expect(s.all().map((r) => r.endpoint)).toEqual([3, 4, 5]);
    expect(s.last(2).map((r) => r.endpoint)).toEqual([4, 5]);
    expect(s.last(10, (r) => r.endpoint % 2 === 1).map((r) => r.endpoint)).toEqual([3, 5]);
    off();
    s.add(rec({ endpoint: 6 }));
    expect(heard).toEqual([1, 2, 3, 4, 5]);
    expect(s.added).toBe(6);
    expect(() => new FlowStore(0)).toThrow(/capacity/);
  });
});

describe('flow queries', () => {
  const q = (s: string) => parseFlowQuery(new URLSearchParams(s));

  it('parses every filter, repeated or comma-separated, and names the parameter at fault', () => {
    expect(q('follow&last=5&namespace=a,b&pod=a/x&service=a/s&verdict=dropped&reason=policy_deny&protocol=tcp&port=80&port=81&type=drop&side=source')).toEqual({
      follow: true,
      last: 5,
      namespace: ['a', 'b'],
      pod: ['a/x'],
      service: ['a/s'],
      verdict: ['dropped'],
      reason: ['POLICY_DENY'],
      protocol: ['TCP'],
      port: [80, 81],
      type: ['drop'],
      side: 'source',
    });
    expect(() => q('verdict=maybe')).toThrow(/verdict: "maybe" is not one of forwarded, dropped, audit/);
    expect(() => q('port=70000')).toThrow(/port: "70000"/);
    expect(() => q('last=-1')).toThrow(/last/);
    expect(() => q('service=justname')).toThrow(/service: "justname" is not namespace\/name/);
    expect(() => q('colour=red')).toThrow(FlowQueryError);
    expect(() => q('side=up')).toThrow(/side/);
  });

  it('matches either side unless side narrows it; filters AND, values OR', () => {
    const r = rec({ src: 'a/web', dst: 'b/db', dport: 5432 });
    expect(matchFlow(r, q('namespace=b'))).toBe(true);
    expect(matchFlow(r, q('namespace=b&side=source'))).toBe(false);
    expect(matchFlow(r, q('pod=a/web'))).toBe(true);
    expect(matchFlow(r, q('pod=db&namespace=b'))).toBe(true);
    expect(matchFlow(r, q('pod=db&namespace=a'))).toBe(false);
    expect(matchFlow(r, q('port=5432&side=destination'))).toBe(true);
    expect(matchFlow(r, q('port=5432&side=source'))).toBe(false);
    expect(matchFlow(r, q('verdict=forwarded,dropped&protocol=udp'))).toBe(false);
    expect(matchFlow(r, q('verdict=forwarded,dropped&protocol=tcp'))).toBe(true);
    expect(matchFlow(rec({ type: 'drop', verdict: 'dropped', reason: 'POLICY_DENY' }), q('reason=POLICY_DENY'))).toBe(true);
    expect(matchFlow(r, q('reason=POLICY_DENY'))).toBe(false);
    const svc = rec({ service: { namespace: 'b', name: 'db', address: '10.96.0.1', port: 5432 } });
    expect(matchFlow(svc, q('service=b/db'))).toBe(true);
    expect(matchFlow(r, q('service=b/db'))).toBe(false);
  });
});

describe('summary', () => {
  it('ranks talkers by flows and drops, sums bytes of ended flows, and counts drop reasons with their policy', () => {
    const stats = eventStats({ drop: { emitted: 0, suppressed: 0, lost: 0 }, flow: { emitted: 0, suppressed: 0, lost: 0 }, trace: { emitted: 0, suppressed: 0, lost: 0 } }, { received: { drop: 0, flow: 0, trace: 0 }, unknown: 0 });
    const now = Date.parse('2026-12-06T12:00:30Z');
    const old = { time: '2026-12-06T11:00:00.000000000Z' };
    const policy = { kind: 'NetworkPolicy', namespace: 'b', name: 'deny', rule: 0, tier: 'networkpolicy', action: 'deny' };
    const records = [
      rec({ src: 'a/web', dst: 'b/db' }),
      rec({ src: 'a/web', dst: 'b/db' }),
      rec({ src: 'a/web', dst: 'b/db', type: 'flow-end', counters: { packetsOut: 1, bytesOut: 100, packetsIn: 1, bytesIn: 900, durationMs: 1, closedBy: 'fin' } }),
      rec({ src: 'a/x', dst: 'b/db', type: 'drop', verdict: 'dropped', reason: 'POLICY_DENY', policy }),
      rec({ src: 'a/x', dst: 'b/db', ...old }),
    ];
    const s = summarize(records, 60, now, stats);
    expect(s.talkers).toEqual([
      { source: 'a/web', destination: 'b/db', flows: 2, bytes: 1000, drops: 0 },
      { source: 'a/x', destination: 'b/db', flows: 0, bytes: 0, drops: 1 },
    ]);
    expect(s.dropReasons).toEqual([{ reason: 'POLICY_DENY', count: 1, policy: 'NetworkPolicy b/deny' }]);
  });
});

// FlowEvent is part of the decoder's public surface: keep the type used.
export type { FlowEvent };

describe('agent flags', () => {
  it('--event-rate and --event-burst set every class\'s bucket, and out-of-range values are refused naming the flag', async () => {
    const { parseAgentArgs } = await import('../../src/agent/options');
    expect(parseAgentArgs([])).toMatchObject({ eventRate: 10_000, eventBurst: 1_000 });
    expect(parseAgentArgs(['--event-rate=500', '--event-burst', '50'])).toMatchObject({ eventRate: 500, eventBurst: 50 });
    expect(() => parseAgentArgs(['--event-rate=0'])).toThrow(/--event-rate/);
    expect(() => parseAgentArgs(['--event-rate=20000000'])).toThrow(/--event-rate must be in 1..10000000/);
    expect(() => parseAgentArgs(['--event-burst=2000000'])).toThrow(/--event-burst must be in 1..1000000/);
  });
});

describe('kelp_event_config', () => {
  it('writes only valid buckets, naming the class and field at fault, and nothing when one is bad', async () => {
    const { writeEventConfig } = await import('../../src/datapath/events');
    const { kelpEventConfig } = await import('../../src/datapath/structs');
    const writes: Array<[number, unknown]> = [];
    const map = { update: (k: Buffer, v: Buffer) => writes.push([k.readUInt32LE(0), kelpEventConfig.decode(v)]) } as unknown as Parameters<typeof writeEventConfig>[0];
    writeEventConfig(map, { drop: { rate: 5, burst: 2 }, trace: { rate: 0, burst: 1 } });
    expect(writes).toEqual([
      [0, { rate: 5, burst: 2 }],
      [2, { rate: 0, burst: 1 }],
    ]);
    writes.length = 0;
    expect(() => writeEventConfig(map, { drop: { rate: 5, burst: 2 }, flow: { rate: 1.5, burst: 2 } })).toThrow('event rate (flow) must be an integer 0..10000000, got 1.5');
    expect(() => writeEventConfig(map, { flow: { rate: 1, burst: 0 } })).toThrow(/event burst \(flow\)/);
    expect(writes).toEqual([]);
  });
});
