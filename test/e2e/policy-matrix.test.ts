// The policy connectivity matrix (issue 11, "Tests"): real pods behind the real CNI, real packets,
// and for every case the full expected matrix — 9 pods × 9 pods × {TCP 80, TCP 81, UDP 80}, the
// node to every pod, every pod to its node and to two outside addresses — written by hand from
// the API text (NetworkPolicy, ClusterNetworkPolicy v1alpha2, kelp's KelpNetworkPolicy and the
// audit annotation). The topology is in test/support/policy-matrix.ts:
//   namespaces x {ns: x, env: prod}, y {ns: y, env: dev}, z {ns: z}
//   pods a {pod: a, app: web, tier: front}, b {pod: b, app: db, tier: back}, c {pod: c} in each
//   named ports: serve-80 = TCP 80 on a and c, TCP 81 on b; serve-81 = TCP 81 on a, TCP 80 on b,
//                none on c; dns = UDP 80 everywhere
//   outside: out1 = 192.168.250.2 (behind the node's uplink), out2 = 198.51.100.10 (a second address there)
// An expectation gives, per side, which new connections that side lets through: a connection
// between pods needs the source's egress and the destination's ingress; one to the outside the
// egress only; a pod and its own node always talk; a pod reaching itself never leaves it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLOSED_PORT,
  compare,
  expectedMatrix,
  isPod,
  KeptConnection,
  nothing,
  np,
  only,
  PolicyMatrix,
  PortKey,
  probeKey,
  REASON_AUDIT,
  REASON_POLICY_DENY,
  sel,
} from '../support/policy-matrix';
import { AUDIT_MODE, CLUSTER_NETWORK_POLICY, KELP_NETWORK_POLICY, NETWORK_POLICY } from '../support/policy-cases';

let m: PolicyMatrix;
beforeAll(async () => {
  m = await PolicyMatrix.start('pmx');
}, 120_000);
afterAll(async () => {
  await m?.stop();
});

describe('policy matrix harness', () => {
  it('no policy: every pod reaches every pod, its node and the outside; the node reaches every pod; nothing counted as a policy drop', async () => {
    expect(await m.check({})).toBe('');
    const counters = await m.counters();
    for (const p of m.t.pods) {
      expect(counters.get(`${p.id} forwarded`), p.id).toBeGreaterThan(0n);
      expect(counters.get(`${p.id} ${REASON_POLICY_DENY}`), p.id).toBeUndefined();
      expect(counters.get(`${p.id} ${REASON_AUDIT}`), p.id).toBeUndefined();
    }
  });

  it('a drop shows as denied: TCP 81 and UDP dropped inside x/a are exactly the probes reported denied', async () => {
    const netns = m.sb.pods.get('x/a')!.netns;
    const expected = expectedMatrix(m.t, {});
    try {
      // The pod's own firewall, in its own namespace: nothing of the machine's is touched.
      m.sb.exec(netns, 'iptables', ['-A', 'INPUT', '-p', 'tcp', '--dport', '81', '-j', 'DROP']);
      m.sb.exec(netns, 'iptables', ['-A', 'INPUT', '-p', 'udp', '-m', 'multiport', '--dports', `80,${CLOSED_PORT}`, '-j', 'DROP']);
      const actual = await m.probe(expected);
      const denied = [...actual].filter(([, r]) => !r.ok).map(([k]) => k).sort();
      const into = (port: PortKey) => [...m.t.pods.map((p) => probeKey(p.id, 'x/a', port)), probeKey('node', 'x/a', port)];
      expect(denied).toEqual([...into('tcp/81'), ...into('udp/80')].sort());
      const diff = compare(m.t, expected, actual);
      expect(diff).toMatch(/^20 of 351 probes differ/);
      expect(diff).toMatch(/^ {2}node {2}\.DD {3}\.\.\. /m);
      expect(diff).toContain('y/b -> x/a udp/80: expected allowed, got denied (timeout)');
      expect(await m.refused('y/b', 'x/a')).toEqual({ ok: false, error: 'timeout' });
      expect(await m.refused('x/a', 'y/b')).toEqual({ ok: true });
    } finally {
      m.sb.exec(netns, 'iptables', ['-F', 'INPUT'], { allowFail: true });
    }
  });
});

describe('policy matrix cases', () => {
  describe.each([
    ['NetworkPolicy', NETWORK_POLICY],
    ['ClusterNetworkPolicy', CLUSTER_NETWORK_POLICY],
    ['KelpNetworkPolicy', KELP_NETWORK_POLICY],
    ['audit', AUDIT_MODE],
  ] as const)('%s', (_kind, cases) => {
    it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
      await m.run(c);
    });
  });

  it('NP: an established connection no longer allowed is cut on its next packet; one still allowed keeps flowing', async () => {
    const conns: KeptConnection[] = [];
    const policy = np('y', 'only-c', { podSelector: sel({ pod: 'b' }), ingress: [{ from: [{ namespaceSelector: sel(), podSelector: sel({ pod: 'c' }) }] }] });
    try {
      for (const [from, port] of [['x/a', 'tcp/80'], ['x/a', 'udp/80'], ['x/c', 'tcp/80'], ['x/c', 'udp/80']] as const) conns.push(await m.keep(from, 'y/b', port));
      const [revokedTcp, revokedUdp, keptTcp, keptUdp] = conns;
      for (const c of conns) expect(await m.send(c), `${c.from} -> ${c.to} ${c.port} before the policy`).toEqual({ ok: true });
      await m.apply([policy]);
      for (const c of [keptTcp, keptUdp]) {
        const r = (await m.send(c)).ok ? { ok: true } : await m.send(c);
        expect(r, `${c.from} -> ${c.to} ${c.port}, still allowed`).toEqual({ ok: true });
      }
      for (const c of [revokedTcp, revokedUdp]) expect((await m.send(c)).ok, `${c.from} -> ${c.to} ${c.port}, revoked`).toBe(false);
      const diff = await m.check({ ingress: only(['y/b'], (_, p) => isPod(p) && p.pod === 'c') });
      if (diff) throw new Error(diff);
    } finally {
      for (const c of conns) await m.close(c);
      await m.delete([policy]);
    }
  });
});
