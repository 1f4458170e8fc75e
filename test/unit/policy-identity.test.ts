import { describe, expect, it } from 'vitest';
import { FIRST_ALLOCATED_IDENTITY, IDENTITY_WORLD } from '../../src/datapath/policy-types';
import { compilePolicy, DesiredLookup, IdentityAllocator, PolicyCompileInputs, StableNumbers } from '../../src/policy';
import type { NetworkPolicyObject } from '../../src/sources/objects/networkpolicy';
import type { PodObject } from '../../src/sources/objects/pod';

const sel = (matchLabels: Record<string, string> = {}) => ({ matchLabels, matchExpressions: [] });
const pod = (ns: string, name: string, labels: Record<string, string>, ip: string): PodObject => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { namespace: ns, name, labels, annotations: {} },
  spec: { nodeName: 'A', containers: [] },
  status: { phase: 'Running', podIPs: [{ ip }] },
});
const np = (ns: string, name: string, spec: Partial<NetworkPolicyObject['spec']>): NetworkPolicyObject => ({
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { namespace: ns, name, labels: {}, annotations: {} },
  spec: { podSelector: sel(), policyTypes: ['Ingress'], ingress: [], egress: [], ...spec },
});
const inputs = (pods: PodObject[], networkPolicies: NetworkPolicyObject[] = [], local: Array<[number, string, string]> = []): PolicyCompileInputs => ({
  namespaces: [],
  pods,
  localEndpoints: local.map(([epId, key, ip]) => ({ epId, pod: key, ips: [ip] })),
  nodeIps: ['10.0.9.1'],
  networkPolicies,
  clusterNetworkPolicies: [],
  kelpNetworkPolicies: [],
});

describe('StableNumbers', () => {
  it('keeps a number while its key is in use, frees it after, hands out the lowest free one', () => {
    const n = new StableNumbers(256, 1000, 'test');
    const first = n.assign(['b', 'a', 'c']);
    expect([...first].sort()).toEqual([['a', 256], ['b', 257], ['c', 258]]);
    const second = n.assign(['c', 'd', 'a']);
    expect([second.get('a'), second.get('c'), second.get('d')]).toEqual([256, 258, 257]);
    expect(n.assign(['e', 'f', 'c']).get('c')).toBe(258);
    expect(n.get('a')).toBeUndefined();
  });

  it('fails when it runs out, names itself', () => {
    const n = new StableNumbers(1, 2, 'tiny');
    expect(() => n.assign(['a', 'b', 'c'])).toThrow('tiny: all 2 numbers are in use');
  });
});

describe('IdentityAllocator across compiles', () => {
  const pods = [pod('a', 'x1', { app: 'x' }, '10.0.0.1'), pod('a', 'x2', { app: 'x' }, '10.0.0.2'), pod('a', 'y', { app: 'y' }, '10.0.0.3'), pod('b', 'x', { app: 'x' }, '10.0.1.1')];

  it('pods share an identity exactly when namespace, labels and containing policy CIDRs agree', () => {
    const block = np('a', 'p', { ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/24', except: ['10.0.0.2/32'] } }], ports: [] }] });
    const { model } = compilePolicy(inputs(pods), new IdentityAllocator());
    const id = (k: string) => model.pods.get(k)!.identity;
    expect(id('a/x1')).toBe(id('a/x2'));
    expect(new Set([id('a/x1'), id('a/y'), id('b/x')]).size).toBe(3);
    const split = compilePolicy(inputs(pods, [block]), new IdentityAllocator()).model;
    expect(split.pods.get('a/x1')!.identity).not.toBe(split.pods.get('a/x2')!.identity);
  });

  it('numbers survive a recompile, new keys reuse freed numbers, and snapshot/restore carries them over', () => {
    const alloc = new IdentityAllocator();
    const before = compilePolicy(inputs(pods), alloc).model;
    const ids = (m: typeof before) => Object.fromEntries([...m.pods].map(([k, p]) => [k, p.identity]));
    const old = ids(before);
    expect(Math.min(...Object.values(old).map(Number))).toBe(FIRST_ALLOCATED_IDENTITY);
    // y goes, z comes: x keeps its number, z takes y's.
    const next = [...pods.filter((p) => p.metadata.name !== 'y'), pod('a', 'z', { app: 'z' }, '10.0.0.4')];
    const after = ids(compilePolicy(inputs(next), alloc).model);
    expect([after['a/x1'], after['b/x'], after['a/z']]).toEqual([old['a/x1'], old['b/x'], old['a/y']]);
    const restored = new IdentityAllocator();
    restored.restore(alloc.snapshot());
    expect(ids(compilePolicy(inputs(next), restored).model)).toEqual(after);
    expect(() => restored.restore('{"version":2}')).toThrow('not a snapshot of version 1');
  });

  it('policy ids stay with their policy when another one sorts before it', () => {
    const alloc = new IdentityAllocator();
    const ref = (r: ReturnType<typeof compilePolicy>) => new Map([...r.desired.policies].map(([id, p]) => [p.ref, id]));
    const one = ref(compilePolicy(inputs(pods, [np('b', 'later', {})]), alloc));
    const two = ref(compilePolicy(inputs(pods, [np('a', 'earlier', {}), np('b', 'later', {})]), alloc));
    expect(two.get('NetworkPolicy/b/later')).toBe(one.get('NetworkPolicy/b/later'));
    expect(two.get('NetworkPolicy/a/earlier')).not.toBe(two.get('NetworkPolicy/b/later'));
  });
});

describe('local endpoints', () => {
  it('a local endpoint without a Pod object is a pod without labels in its namespace', () => {
    const policies = [np('a', 'from-x', { ingress: [{ from: [{ podSelector: sel({ app: 'x' }) }], ports: [] }] })];
    const { desired, model } = compilePolicy(inputs([pod('a', 'x1', { app: 'x' }, '10.0.0.1')], policies, [[7, 'a/ghost', '10.0.0.50']]), new IdentityAllocator());
    expect(model.pods.get('a/ghost')).toMatchObject({ namespace: 'a', labels: {}, epId: 7 });
    const maps = new DesiredLookup(desired);
    const verdict = (src: string) => {
      const a = maps.decide(7, 'ingress', src, 6, 80)!;
      return a.kind === 'entry' ? a.entry.verdict.action : a.kind;
    };
    expect([verdict('10.0.0.1'), verdict('192.0.2.1'), verdict('10.0.9.1')]).toEqual(['allow', 'deny', 'host']);
    expect(desired.ipcache.get('10.0.0.50/32')).toBe(model.pods.get('a/ghost')!.identity);
    expect(desired.ipcache.get('0.0.0.0/0')).toBe(IDENTITY_WORLD);
  });
});
