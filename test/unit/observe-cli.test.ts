// `kelp observe` flags and output: what reaches the flows API for each flag, the usage errors
// that name the flag at fault, and one line per flow record.
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/agent/options';
import { flowQueryString, formatFlow, formatPeer, formatSummary, formatTime, parseObserveArgs, parseWindow } from '../../src/cli/observe';
import type { FlowRecord, FlowSummary } from '../../src/datapath/flow-types';
import { parseFlowQuery } from '../../src/observe/filter';

const parse = (...a: string[]) => parseObserveArgs(a);
const fails = (re: RegExp, ...a: string[]) => {
  let err: unknown;
  try {
    parse(...a);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UsageError);
  expect((err as Error).message).toMatch(re);
};

describe('kelp observe flags', () => {
  it('maps every filter onto the FlowQuery, repeated flags as any-of', () => {
    const a = parse('-f', '--last', '50', '-n', 'db', '--namespace=web', '--pod', 'db/db-0', '--service', 'db/api', '--verdict', 'dropped', '--verdict', 'DROP', '--reason', 'policy_deny', '--protocol', 'tcp', '--port', '5432', '--type', 'drop', '-o', 'json', '--socket', '/tmp/s.sock');
    expect(a.command).toBe('flows');
    expect(a.output).toBe('json');
    expect(a.socket).toBe('/tmp/s.sock');
    expect(a.query).toEqual({
      follow: true,
      last: 50,
      namespace: ['db', 'web'],
      pod: ['db/db-0'],
      service: ['db/api'],
      verdict: ['dropped', 'dropped'],
      reason: ['POLICY_DENY'],
      protocol: ['TCP'],
      port: [5432],
      type: ['drop'],
    });
  });

  it('narrows peer filters to one side with --from-*/--to-* or --side', () => {
    expect(parse('--from-pod', 'web/web-0', '--from-port', '80').query).toEqual({ pod: ['web/web-0'], port: [80], side: 'source' });
    expect(parse('--to-namespace', 'db').query).toEqual({ namespace: ['db'], side: 'destination' });
    expect(parse('--pod', 'x', '--side', 'destination').query).toEqual({ pod: ['x'], side: 'destination' });
    expect(parse('--pod', 'x', '--side', 'either').query).toEqual({ pod: ['x'] });
    fails(/--to-pod with --from-pod: filters narrow one side at a time/, '--from-pod', 'a/b', '--to-pod', 'c/d');
    fails(/--namespace with --from-pod: .* use --from-namespace instead/, '--namespace', 'a', '--from-pod', 'a/b');
    fails(/-n with --to-port: .* use --to-namespace instead/, '-n', 'a', '--to-port', '80');
    fails(/--side source with --to-pod: they disagree/, '--side', 'source', '--to-pod', 'c/d');
  });

  it('refuses bad values naming the flag and what is valid', () => {
    fails(/--verdict: "maybe" is not one of forwarded, dropped, audit/, '--verdict', 'maybe');
    fails(/--reason: "NOPE" is not one of .*POLICY_DENY/, '--reason', 'NOPE');
    fails(/--protocol: "icmp6" is not one of TCP, UDP, SCTP, ICMP/, '--protocol', 'icmp6');
    fails(/--port: "0" is not a port \(1\.\.65535\)/, '--port', '0');
    fails(/--port: "http" is not a port/, '--port', 'http');
    fails(/--to-port: "70000" is not a port/, '--to-port', '70000');
    fails(/--last needs a value/, '--last', '-3');
    fails(/--last: "x" is not a count \(0 or more\)/, '--last', 'x');
    expect(parse('-f', '--last', '0').query).toEqual({ follow: true, last: 0 });
    fails(/--type: "start" is not one of flow-start/, '--type', 'start');
    fails(/--pod: "a\/b\/c" is not NAMESPACE\/NAME or NAME/, '--pod', 'a/b/c');
    fails(/--namespace: "Db" is not a namespace name/, '--namespace', 'Db');
    fails(/--service: "api" is not NAMESPACE\/NAME/, '--service', 'api');
    fails(/--pod needs a value/, '--pod');
    fails(/--follow takes no value/, '--follow=yes');
    fails(/-o: "yaml" is not text or json/, '-o', 'yaml');
    fails(/unknown flag "--colour"/, '--colour');
    fails(/unexpected argument "sumary"/, 'sumary');
    fails(/--window is for kelp observe summary/, '--window', '60s');
  });

  it('summary takes a window and no flow filters', () => {
    expect(parse('summary', '--window', '5m', '-o', 'json')).toMatchObject({ command: 'summary', windowSeconds: 300, output: 'json' });
    expect(parse('summary').windowSeconds).toBe(60);
    expect(parseWindow('90')).toBe(90);
    expect(parseWindow('1h')).toBe(3600);
    fails(/--window: "0s" is not a duration/, 'summary', '--window', '0s');
    fails(/--window: "2d" is not a duration/, 'summary', '--window', '2d');
    fails(/summary takes --window, -o and --socket only.*verdict/, 'summary', '--verdict', 'dropped');
  });

  it('writes a query string the agent parses back into the same FlowQuery', () => {
    for (const args of [
      ['--verdict', 'dropped', '--reason', 'POLICY_DENY', '--from-pod', 'web/web-0'],
      ['-f', '--last', '5', '-n', 'a', '-n', 'b', '--protocol', 'udp', '--port', '53', '--type', 'flow-end', '--service', 'kube-system/dns'],
      ['--to-port', '80', '--to-port', '443', '--verdict', 'audit'],
      ['-f', '--last', '0'],
      [],
    ]) {
      const q = parse(...args).query;
      expect(parseFlowQuery(new URLSearchParams(flowQueryString(q).slice(1))), args.join(' ')).toEqual(q);
    }
  });

  it('writes repeated filters as repeated parameters', () => {
    expect(flowQueryString(parse('-f', '--last', '5', '--to-namespace', 'a', '--to-namespace', 'b', '--to-port', '80').query)).toBe('?follow=true&last=5&namespace=a&namespace=b&port=80&side=destination');
    expect(flowQueryString({})).toBe('');
  });
});

const rec = (over: Partial<FlowRecord>): FlowRecord => ({
  time: '2026-12-06T13:05:49.123456789Z',
  type: 'drop',
  verdict: 'dropped',
  direction: 'ingress',
  protocol: 'TCP',
  source: { address: '10.244.0.5', port: 43512, pod: { namespace: 'web', name: 'web-0' } },
  destination: { address: '10.244.0.7', port: 5432, pod: { namespace: 'db', name: 'db-0' } },
  endpoint: 7,
  ...over,
});

describe('kelp observe output', () => {
  it('prints one line per flow: time, peers, service, protocol, verdict, reason, policy', () => {
    const line = formatFlow(
      rec({
        reason: 'POLICY_DENY',
        service: { namespace: 'db', name: 'db-svc', address: '10.96.0.20', port: 5432 },
        policy: { kind: 'NetworkPolicy', namespace: 'db', name: 'only-api', rule: 65535, tier: 'networkpolicy', action: 'deny' },
      }),
    );
    expect(line).toBe(
      '2026-12-06 13:05:49.123456 DROP       web/web-0:43512 -> db/db-0:5432 svc db/db-svc (10.96.0.20:5432) TCP DROPPED ingress POLICY_DENY by NetworkPolicy db/only-api no rule allows it (isolated) (networkpolicy, deny)',
    );
    expect(line).not.toContain('\n');
  });

  it('names peers by pod, else by address with the node or world, and leaves ICMP portless', () => {
    expect(formatPeer({ address: '192.0.2.9', port: 80, world: true }, 'TCP')).toBe('192.0.2.9:80 (world)');
    expect(formatPeer({ address: '10.0.0.2', port: 0, node: 'node-b' }, 'ICMP')).toBe('10.0.0.2 (node node-b)');
    expect(formatPeer({ address: '10.244.0.5', port: 0, pod: { namespace: 'a', name: 'b' } }, 'ICMP')).toBe('a/b');
    expect(formatTime('2026-12-06T13:05:49Z')).toBe('2026-12-06 13:05:49.000000');
    expect(formatTime('garbage')).toBe('garbage');
  });

  it('shows a flow end with its counters and a flow start with its allowing rule', () => {
    const end = formatFlow(rec({ type: 'flow-end', verdict: 'forwarded', counters: { packetsOut: 5, bytesOut: 400, packetsIn: 4, bytesIn: 3000, durationMs: 12, closedBy: 'fin' } }));
    expect(end).toContain('FLOW-END');
    expect(end).toContain('FORWARDED ingress');
    expect(end).toContain('out 5 pkts/400 B in 4 pkts/2.9 KiB 12 ms closed by fin');
    const start = formatFlow(rec({ type: 'flow-start', verdict: 'forwarded', policy: { kind: 'ClusterNetworkPolicy', name: 'admin', rule: 2, tier: 'admin', action: 'accept' } }));
    expect(start).toContain('by ClusterNetworkPolicy admin rule 2 (admin, accept)');
    expect(formatFlow(rec({ type: 'audit', verdict: 'audit', reason: 'POLICY_DENY' }))).toContain('AUDIT (would drop) ingress POLICY_DENY');
  });

  it('prints the summary with talkers, drop reasons and every event class', () => {
    const s: FlowSummary = {
      windowSeconds: 60,
      talkers: [{ source: 'web/web-0', destination: 'db/db-0', flows: 3, bytes: 2048, drops: 1 }],
      dropReasons: [{ reason: 'POLICY_DENY', count: 4, policy: 'NetworkPolicy db/only-api' }],
      stats: { byClass: { drop: { emitted: 10, suppressed: 2, lost: 1, received: 10 }, flow: { emitted: 3, suppressed: 0, lost: 0, received: 3 }, trace: { emitted: 0, suppressed: 0, lost: 0, received: 0 } }, unknown: 1 },
    };
    const text = formatSummary(s);
    expect(text).toMatch(/web\/web-0\s+db\/db-0\s+3\s+2\.0 KiB\s+1/);
    expect(text).toMatch(/POLICY_DENY\s+4\s+NetworkPolicy db\/only-api/);
    expect(text).toMatch(/drop\s+10\s+2\s+1\s+10/);
    expect(text).toMatch(/trace\s+0\s+0\s+0\s+0/);
    expect(text).toContain('unreadable records (unknown version, type or size): 1');
    expect(formatSummary({ ...s, talkers: [], dropReasons: [] })).toContain('(no flows)');
  });
});
