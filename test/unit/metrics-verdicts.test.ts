// Policy verdict counters named by the policies the node has: a deleted policy's series go, an
// id handed to a new policy does not bring the old one's counts with it.
import { describe, expect, it } from 'vitest';
import { PolicyVerdictNames, VerdictCounter } from '../../src/metrics/verdicts';
import { PolicyActionCode, PolicyDir } from '../../src/datapath/policy';

const ALLOW = PolicyActionCode.ALLOW;
const DENY = PolicyActionCode.DENY;
const IN = PolicyDir.INGRESS;
const c = (policyId: number, rule: number, action: number, packets: number): VerdictCounter => ({ policyId, rule, action, dir: IN, packets: BigInt(packets) });
const np = { id: 1, kind: 'NetworkPolicy', ref: 'NetworkPolicy/db/only-api' };
const cnp = { id: 2, kind: 'ClusterNetworkPolicy', ref: 'ClusterNetworkPolicy/admin' };

describe('PolicyVerdictNames', () => {
  it('names counters by policy kind, namespace and name; id 0 is "none"', () => {
    const n = new PolicyVerdictNames();
    expect(n.samples([c(1, 0, ALLOW, 5), c(1, 65535, DENY, 2), c(2, 3, DENY, 1), c(0, 0, DENY, 4)], [np, cnp])).toEqual([
      { kind: 'NetworkPolicy', namespace: 'db', name: 'only-api', rule: 0, action: 'allow', direction: 'ingress', packets: 5n },
      { kind: 'NetworkPolicy', namespace: 'db', name: 'only-api', rule: 65535, action: 'deny', direction: 'ingress', packets: 2n },
      { kind: 'ClusterNetworkPolicy', namespace: '', name: 'admin', rule: 3, action: 'deny', direction: 'ingress', packets: 1n },
      { kind: 'none', namespace: '', name: '', rule: 0, action: 'deny', direction: 'ingress', packets: 4n },
    ]);
  });

  it('drops a deleted policy, and gives a reused id only what it counted itself', () => {
    const n = new PolicyVerdictNames();
    n.samples([c(1, 0, ALLOW, 5)], [np]);
    // Deleted: the counters stay in BPF, the series go.
    expect(n.samples([c(1, 0, ALLOW, 5)], [])).toEqual([]);
    // Id 1 given to another policy: counted from its hand-over on.
    const other = { id: 1, kind: 'KelpNetworkPolicy', ref: 'KelpNetworkPolicy/web/deny-all' };
    expect(n.samples([c(1, 0, ALLOW, 7)], [other]).map((s) => [s.name, s.packets])).toEqual([['deny-all', 0n]]);
    expect(n.samples([c(1, 0, ALLOW, 10), c(1, 1, DENY, 3)], [other]).map((s) => [s.rule, s.packets])).toEqual([
      [0, 3n],
      [1, 3n],
    ]);
    // A counter deleted and begun again never goes negative.
    expect(n.samples([c(1, 0, ALLOW, 2)], [other]).map((s) => s.packets)).toEqual([2n]);
  });
});
