import { describe, expect, it } from 'vitest';
import { IPPROTO, PolicyDirection } from '../../src/datapath/policy-types';
import { compilePolicy, DesiredLookup, explain, formatExplanation, IdentityAllocator } from '../../src/policy';
import type { ClusterNetworkPolicyObject } from '../../src/sources/objects/clusternetworkpolicy';
import type { KelpNetworkPolicyObject } from '../../src/sources/objects/kelpnetworkpolicy';
import type { NetworkPolicyObject } from '../../src/sources/objects/networkpolicy';
import type { PodObject } from '../../src/sources/objects/pod';
import { EMPTY } from '../support/policy-reference';
import { generatePackets, generateWorld, inputsFor } from '../support/policy-worlds';

describe('explain agrees with the compiled maps', () => {
  it('every local side of 400 generated worlds × 2 nodes × 40 packets', () => {
    let sides = 0;
    let denied = 0;
    const mismatches: unknown[] = [];
    for (let seed = 1; seed <= 400 && mismatches.length === 0; seed++) {
      const w = generateWorld(seed);
      for (const node of Object.keys(w.nodes)) {
        const inputs = inputsFor(w, node);
        const { desired, model } = compilePolicy(inputs, new IdentityAllocator());
        const maps = new DesiredLookup(desired);
        const epOf = new Map(inputs.localEndpoints.map((e) => [e.ips[0], e.epId]));
        for (const pkt of generatePackets(w, seed, 40)) {
          const ex = explain(model, { from: pkt.src, to: pkt.dst, protocol: pkt.protocol, port: pkt.port });
          for (const dir of ['egress', 'ingress'] as PolicyDirection[]) {
            const epId = epOf.get(dir === 'egress' ? pkt.src : pkt.dst);
            if (epId === undefined) continue;
            const side = ex[dir]!;
            const a = maps.decide(epId, dir, dir === 'egress' ? pkt.dst : pkt.src, IPPROTO[pkt.protocol], pkt.port)!;
            const fromMaps = a.kind === 'entry' ? a.entry.verdict : a.kind;
            const fromTrace = side.host ? 'host' : side.verdict;
            sides++;
            if (typeof fromTrace !== 'string' && fromTrace.action === 'deny') denied++;
            if (JSON.stringify(fromMaps) !== JSON.stringify(fromTrace)) mismatches.push({ seed, node, pkt, dir, fromMaps, fromTrace });
          }
        }
      }
    }
    expect(mismatches).toEqual([]);
    expect(sides).toBeGreaterThan(12_000);
    expect(denied).toBeGreaterThan(sides * 0.1);
  });
});

describe('explain shows its steps', () => {
  const sel = (matchLabels: Record<string, string>) => ({ matchLabels, matchExpressions: [] });
  const pod = (ns: string, name: string, labels: Record<string, string>, ip: string, node: string): PodObject => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { namespace: ns, name, labels, annotations: {} },
    spec: { nodeName: node, containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }] }] },
    status: { phase: 'Running', podIPs: [{ ip }] },
  });
  const pods = [pod('shop', 'web', { app: 'web' }, '10.0.0.1', 'A'), pod('shop', 'db', { app: 'db' }, '10.0.0.2', 'A'), pod('other', 'x', { app: 'x' }, '10.0.1.1', 'B')];
  const cnp: ClusterNetworkPolicyObject = {
    apiVersion: 'policy.networking.k8s.io/v1alpha2',
    kind: 'ClusterNetworkPolicy',
    metadata: { name: 'guard', labels: {}, annotations: {} },
    spec: {
      tier: 'Admin',
      priority: 10,
      subject: { namespaces: sel({ 'kubernetes.io/metadata.name': 'shop' }) },
      ingress: [
        { name: 'pass-shop', action: 'Pass', peers: [{ namespaces: sel({ 'kubernetes.io/metadata.name': 'shop' }) }], protocols: [] },
        { name: 'no-other', action: 'Deny', peers: [{ namespaces: EMPTY }], protocols: [{ protocol: 'TCP', port: { range: { start: 8000, end: 8999 } } }] },
      ],
      egress: [],
    },
  };
  const np: NetworkPolicyObject = {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { namespace: 'shop', name: 'db-from-web', labels: {}, annotations: {} },
    spec: { podSelector: sel({ app: 'db' }), policyTypes: ['Ingress'], ingress: [{ from: [{ podSelector: sel({ app: 'web' }) }], ports: [{ protocol: 'TCP', port: 'http' }] }], egress: [] },
  };
  const knp: KelpNetworkPolicyObject = {
    apiVersion: 'policy.kelp.dev/v1alpha1',
    kind: 'KelpNetworkPolicy',
    metadata: { namespace: 'shop', name: 'audit-web', labels: {}, annotations: { 'policy.kelp.dev/audit': 'true' } },
    spec: { subject: { podSelector: sel({ app: 'db' }) }, ingress: [{ name: 'no-web', action: 'Deny', peers: [{ pods: { namespaceSelector: EMPTY, podSelector: sel({ app: 'web' }) } }], protocols: [] }], egress: [] },
  };
  const { model } = compilePolicy(
    {
      namespaces: [],
      pods,
      localEndpoints: [{ epId: 1, pod: 'shop/web', ips: ['10.0.0.1'] }, { epId: 2, pod: 'shop/db', ips: ['10.0.0.2'] }],
      nodeIps: ['10.0.9.1'],
      networkPolicies: [np],
      clusterNetworkPolicies: [cnp],
      kelpNetworkPolicies: [knp],
    },
    new IdentityAllocator(),
  );

  it('a Pass leaves the admin tier; the NetworkPolicy allows on the named port; the audit-only deny is reported', () => {
    const ex = explain(model, { from: 'shop/web', to: 'shop/db', protocol: 'TCP', port: 8080 });
    expect(ex.allowed).toBe(true);
    expect(ex.egress!.reason).toBe('no policy selects the pod in this direction: allowed');
    const ing = ex.ingress!;
    expect(ing.policies.map((p) => [p.ref, p.tier, p.isolates])).toEqual([
      ['ClusterNetworkPolicy/guard', 'admin', false],
      ['KelpNetworkPolicy/shop/audit-web', 'networkpolicy', true],
      ['NetworkPolicy/shop/db-from-web', 'networkpolicy', true],
    ]);
    expect(ing.rules.map((r) => [r.policy, r.rule, r.peerMatched, r.portMatched])).toEqual([
      ['ClusterNetworkPolicy/guard', 0, true, true],
      ['ClusterNetworkPolicy/guard', 1, true, true],
      ['KelpNetworkPolicy/shop/audit-web', 0, true, true],
      ['NetworkPolicy/shop/db-from-web', 0, true, true],
    ]);
    expect(ing.verdict.action).toBe('audit');
    expect(ing.reason).toBe('allowed; audit-only policy would have denied it: denied by KelpNetworkPolicy/shop/audit-web ingress rule 0 (no-web)');
  });

  it('another namespace meets the admin Deny on its range; outside it, isolation says no rule allowed', () => {
    const denied = explain(model, { from: '10.0.1.1', to: 'shop/db', protocol: 'TCP', port: 8443 });
    expect(denied.allowed).toBe(false);
    expect(denied.ingress!.reason).toBe('denied by ClusterNetworkPolicy/guard ingress rule 1 (no-other)');
    const isolated = explain(model, { from: 'other/x', to: 'shop/db', protocol: 'UDP', port: 53 });
    expect(isolated.ingress!.reason).toBe('isolated by NetworkPolicy/shop/db-from-web and no rule of its tier allowed this');
    expect(isolated.ingress!.verdict.action).toBe('deny');
  });

  it('the own node is allowed before any policy', () => {
    const ex = explain(model, { from: '10.0.9.1', to: 'shop/db', protocol: 'TCP', port: 1 });
    expect(ex.ingress!.host).toBe(true);
    expect(ex.allowed).toBe(true);
  });

  it('prints as kelp policy trace shows it', () => {
    expect(formatExplanation(explain(model, { from: 'other/x', to: 'shop/db', protocol: 'TCP', port: 8443 }))).toBe(
      [
        'other/x (10.0.1.1) → shop/db (10.0.0.2) 8443/tcp: DENIED',
        'egress of other/x (not on this node), peer shop/db (10.0.0.2):',
        '  no policy selects the pod in this direction',
        '  → ALLOW (default): no policy selects the pod in this direction: allowed',
        'ingress of shop/db, peer other/x (10.0.1.1):',
        '  admin tier: ClusterNetworkPolicy/guard (priority 10)',
        '    rule 0 (pass-shop) pass: peer does not match',
        '    rule 1 (no-other) deny: matches',
        '  networkpolicy tier: KelpNetworkPolicy/shop/audit-web (isolates, audit only)',
        '    rule 0 (no-web) deny: peer does not match',
        '  networkpolicy tier: NetworkPolicy/shop/db-from-web (isolates)',
        '    rule 0 accept: peer does not match',
        '  → DENY (admin): denied by ClusterNetworkPolicy/guard ingress rule 1 (no-other)',
      ].join('\n'),
    );
  });
});
