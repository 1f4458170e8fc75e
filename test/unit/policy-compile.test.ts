import { describe, expect, it } from 'vitest';
import { IDENTITY_ANY, IDENTITY_HOST, IDENTITY_WORLD, IPPROTO, PolicyDirection, PolicyMapsDesired, PolicyVerdict, RULE_ISOLATED } from '../../src/datapath/policy-types';
import { compilePolicy, DesiredLookup, IdentityAllocator } from '../../src/policy';
import type { ClusterNetworkPolicyObject, PolicyRule } from '../../src/sources/objects/clusternetworkpolicy';
import type { PodObject } from '../../src/sources/objects/pod';
import { EMPTY, PolicyReference, RefMutation, RefPacket, RefSide } from '../support/policy-reference';
import { generatePackets, generateWorld, inputsFor, World } from '../support/policy-worlds';
import { Rng } from '../support/rng';

// The compiled maps, read as the datapath reads them, against the plain reference evaluator, on
// generated worlds mixing the three APIs. Each (world, node) is compiled as that node's agent
// would; every side whose pod is local to the node is compared: action, tier, policy and rule.

const PROTO_NUMBERS = { TCP: IPPROTO.TCP, UDP: IPPROTO.UDP, SCTP: IPPROTO.SCTP, ICMP: IPPROTO.ICMP };

function showVerdict(v: PolicyVerdict, desired: PolicyMapsDesired): string {
  const ref = desired.policies.get(v.policyId)?.ref ?? '';
  return `${v.action} ${v.tier} ${ref} ${v.rule === RULE_ISOLATED ? 'isolated' : v.rule}`;
}

const showRef = (s: RefSide): string => (typeof s === 'string' ? s : `${s.action} ${s.tier} ${s.policy} ${s.rule}`);

interface Compiled {
  desired: PolicyMapsDesired;
  lookup: DesiredLookup;
  epOf: Map<string, number>;
}

function compileFor(w: World, node: string): Compiled {
  const inputs = inputsFor(w, node);
  const { desired } = compilePolicy(inputs, new IdentityAllocator());
  const epOf = new Map<string, number>();
  for (const ep of inputs.localEndpoints) for (const ip of ep.ips) epOf.set(ip, ep.epId);
  return { desired, lookup: new DesiredLookup(desired), epOf };
}

/** The maps' answer for one side, as text ('host', a verdict, 'unprogrammed'), or undefined when the side's pod is not local. */
function mapsSide(c: Compiled, pkt: RefPacket, dir: PolicyDirection): string | undefined {
  const epId = c.epOf.get(dir === 'egress' ? pkt.src : pkt.dst);
  if (epId === undefined) return undefined;
  const a = c.lookup.decide(epId, dir, dir === 'egress' ? pkt.dst : pkt.src, PROTO_NUMBERS[pkt.protocol], pkt.port);
  if (!a) return 'no ipcache entry';
  return a.kind === 'entry' ? showVerdict(a.entry.verdict, c.desired) : a.kind;
}

interface Mismatch {
  seed: number;
  node: string;
  packet: RefPacket;
  direction: PolicyDirection;
  maps: string;
  reference: string;
}

function firstMismatch(w: World, packets: readonly RefPacket[], mutation?: RefMutation, stats?: Map<string, number>): Mismatch | undefined {
  const ref = new PolicyReference(w, mutation);
  for (const node of Object.keys(w.nodes)) {
    const c = compileFor(w, node);
    for (const packet of packets) {
      for (const direction of ['egress', 'ingress'] as const) {
        const maps = mapsSide(c, packet, direction);
        if (maps === undefined) continue;
        const reference = showRef(ref.side(packet, direction));
        if (stats) {
          const bucket = reference.split(' ').slice(0, 2).join(' ') + (reference.endsWith('isolated') ? ' isolated' : '');
          stats.set(bucket, (stats.get(bucket) ?? 0) + 1);
          stats.set('sides', (stats.get('sides') ?? 0) + 1);
        }
        if (maps !== reference) return { seed: w.seed, node, packet, direction, maps, reference };
      }
    }
  }
  return undefined;
}

/** Drops policies, rules and uninvolved pods while the same packet still disagrees: the smallest world to show. */
function shrink(w: World, m: Mismatch): World {
  const still = (x: World) => {
    const found = firstMismatch({ ...x, nodes: { [m.node]: x.nodes[m.node] } }, [m.packet]);
    return found !== undefined && found.direction === m.direction;
  };
  const lists = ['networkPolicies', 'clusterNetworkPolicies', 'kelpNetworkPolicies', 'pods'] as const;
  let cur = w;
  const attempt = (next: World) => {
    if (!still(next)) return false;
    cur = next;
    return true;
  };
  for (let changed = true; changed; ) {
    changed = false;
    for (const list of lists) {
      for (let i = 0; i < cur[list].length; i++) {
        const item = cur[list][i];
        if (list === 'pods' && (item as World['pods'][number]).status!.podIPs.some((e) => e.ip === m.packet.src || e.ip === m.packet.dst)) continue;
        if (attempt({ ...cur, [list]: cur[list].filter((_, j) => j !== i) })) {
          changed = true;
          i--;
        }
      }
    }
    // Rules one at a time (indices of later rules shift, which the mismatch text then shows).
    for (const list of ['clusterNetworkPolicies', 'kelpNetworkPolicies'] as const) {
      for (let i = 0; i < cur[list].length; i++) {
        for (const dir of ['ingress', 'egress'] as const) {
          for (let r = cur[list][i].spec[dir].length - 1; r >= 0; r--) {
            const p = cur[list][i];
            const trimmed = { ...p, spec: { ...p.spec, [dir]: p.spec[dir].filter((_, j) => j !== r) } };
            if (attempt({ ...cur, [list]: cur[list].map((x, j) => (j === i ? trimmed : x)) } as World)) changed = true;
          }
        }
      }
    }
  }
  return cur;
}

function check(worlds: number, packetsPerWorld: number, firstSeed: number, mutation?: RefMutation, stats?: Map<string, number>): Mismatch | undefined {
  for (let seed = firstSeed; seed < firstSeed + worlds; seed++) {
    const w = generateWorld(seed);
    const m = firstMismatch(w, generatePackets(w, seed, packetsPerWorld), mutation, stats);
    if (m) return m;
  }
  return undefined;
}

describe('compiled policy maps agree with the reference evaluator', () => {
  const SEED = Number(process.env.POLICY_SEED ?? 1);
  const WORLDS = 1500;

  it(`${WORLDS} generated worlds × 2 nodes × 60 packets, every local side (seed ${SEED})`, () => {
    const stats = new Map<string, number>();
    const m = check(WORLDS, 60, SEED, undefined, stats);
    if (m) {
      const small = shrink(generateWorld(m.seed), m);
      console.error(`policy mismatch, seed ${m.seed} (POLICY_SEED=${m.seed} replays it first):\n${JSON.stringify({ ...m, world: small }, null, 1)}`);
    }
    expect(m).toBeUndefined();
    // Every tier and outcome is exercised, not just the open default.
    const at = (k: string) => stats.get(k) ?? 0;
    const sides = at('sides');
    if (process.env.POLICY_STATS) console.log(Object.fromEntries(stats));
    expect(sides).toBeGreaterThan(50_000);
    for (const k of ['allow admin', 'deny admin', 'allow networkpolicy', 'deny networkpolicy', 'deny networkpolicy isolated', 'allow baseline', 'deny baseline', 'allow default', 'host', 'audit admin', 'audit networkpolicy', 'audit baseline']) {
      expect(at(k), k).toBeGreaterThan(50);
    }
  });

  // The comparison notices a wrong semantic: each misreading, put into the reference, disagrees
  // with the compiled maps on some generated packet.
  const MUTATIONS: RefMutation[] = [
    'pass-is-accept',
    'priority-descending',
    'knp-accept-beats-deny',
    'audit-enforced',
    'unknown-peer-ignored',
    'named-port-any-protocol',
    'except-ignored',
    'no-host-exception',
    'knp-deny-only-does-not-isolate',
  ];
  it.each(MUTATIONS)('notices the misreading %s', (mutation) => {
    expect(check(400, 60, 1, mutation)).toBeDefined();
  });
});

describe('compiled shape', () => {
  it('the output does not depend on the order of the inputs, and a recompile of the same inputs changes nothing', () => {
    const shuffle = <T>(r: Rng, xs: readonly T[]): T[] => {
      const out = [...xs];
      for (let i = out.length - 1; i > 0; i--) {
        const j = r.int(i + 1);
        [out[i], out[j]] = [out[j], out[i]];
      }
      return out;
    };
    const canonical = (d: PolicyMapsDesired) => JSON.stringify([[...d.ipcache].sort(), [...d.policy].map((e) => JSON.stringify(e)).sort(), [...d.policies].sort((a, b) => a[0] - b[0])]);
    for (let seed = 1; seed <= 100; seed++) {
      const w = generateWorld(seed);
      const r = new Rng(seed);
      const alloc = new IdentityAllocator();
      const first = canonical(compilePolicy(inputsFor(w, 'A'), alloc).desired);
      expect(canonical(compilePolicy(inputsFor(w, 'A'), alloc).desired)).toBe(first);
      const inputs = inputsFor(w, 'A');
      const shuffled = {
        ...inputs,
        pods: shuffle(r, inputs.pods),
        localEndpoints: shuffle(r, inputs.localEndpoints),
        networkPolicies: shuffle(r, inputs.networkPolicies),
        clusterNetworkPolicies: shuffle(r, inputs.clusterNetworkPolicies),
        kelpNetworkPolicies: shuffle(r, inputs.kelpNetworkPolicies),
      };
      expect(canonical(compilePolicy(shuffled, new IdentityAllocator()).desired)).toBe(first);
    }
  });

  it('an unrestricted endpoint gets exactly one allow-all entry per direction; the ipcache holds pods, CIDRs, /0 and the node', () => {
    const w = generateWorld(7);
    const plain: World = { ...w, networkPolicies: [], clusterNetworkPolicies: [], kelpNetworkPolicies: [] };
    const inputs = inputsFor(plain, 'A');
    const { desired } = compilePolicy(inputs, new IdentityAllocator());
    expect(desired.policy.length).toBe(inputs.localEndpoints.length * 2);
    for (const e of desired.policy) expect(e).toMatchObject({ identity: IDENTITY_ANY, portPrefix: 0, verdict: { action: 'allow', tier: 'default', policyId: 0 } });
    expect(desired.ipcache.get('0.0.0.0/0')).toBe(IDENTITY_WORLD);
    expect(desired.ipcache.get('10.0.9.1/32')).toBe(IDENTITY_HOST);
  });

  it('a pod with two endpoints here (two kelp interfaces) gets the same entries on both, and both addresses are its own', () => {
    for (let seed = 1; seed <= 50; seed++) {
      const w = generateWorld(seed);
      const inputs = inputsFor(w, 'A');
      const ep = inputs.localEndpoints[0];
      if (!ep) continue;
      const second = { epId: 9999, pod: ep.pod, ips: ['10.0.99.99'] };
      const { desired } = compilePolicy({ ...inputs, localEndpoints: [...inputs.localEndpoints, second] }, new IdentityAllocator());
      const strip = (epId: number) =>
        desired.policy
          .filter((e) => e.epId === epId)
          .map((e) => JSON.stringify({ ...e, epId: 0 }))
          .sort();
      expect(strip(9999).length).toBeGreaterThan(0);
      expect(strip(9999)).toEqual(strip(ep.epId));
      const first = ep.ips.find((ip) => !ip.includes(':'));
      if (first) expect(desired.ipcache.get('10.0.99.99/32')).toBe(desired.ipcache.get(`${first}/32`));
    }
  });

  it('entries are unique per key, and each identity with entries has its own all-protocols entry', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const { desired } = compilePolicy(inputsFor(generateWorld(seed), 'A'), new IdentityAllocator());
      const keys = new Set<string>();
      const bases = new Set<string>();
      for (const e of desired.policy) {
        const k = `${e.epId}/${e.identity}/${e.direction}/${e.protocol}/${e.port}/${e.portPrefix}`;
        expect(keys.has(k), k).toBe(false);
        keys.add(k);
        if (e.protocol === undefined) bases.add(`${e.epId}/${e.identity}/${e.direction}`);
        // Port prefixes are aligned.
        if (e.protocol !== undefined) expect(e.port % 2 ** (16 - e.portPrefix)).toBe(0);
      }
      for (const e of desired.policy) expect(bases.has(`${e.epId}/${e.identity}/${e.direction}`)).toBe(true);
    }
  });
});

describe('a narrower key never shadows a broader one of higher precedence', () => {
  const pod = (name: string, labels: Record<string, string>, ip: string, node: string): PodObject => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { namespace: 'a', name, labels, annotations: {} },
    spec: { nodeName: node, containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 1500, protocol: 'TCP' }] }] },
    status: { phase: 'Running', podIPs: [{ ip }] },
  });
  const cnp = (name: string, tier: 'Admin' | 'Baseline', priority: number, ingress: PolicyRule[]): ClusterNetworkPolicyObject => ({
    apiVersion: 'policy.networking.k8s.io/v1alpha2',
    kind: 'ClusterNetworkPolicy',
    metadata: { name, labels: {}, annotations: {} },
    spec: { tier, priority, subject: { namespaces: EMPTY }, ingress, egress: [] },
  });
  const rule = (action: 'Accept' | 'Deny' | 'Pass', networks: string[], protocols: PolicyRule['protocols'] = []): PolicyRule => ({ name: '', action, peers: [{ networks }], protocols });
  const base: World = {
    seed: 0,
    namespaces: [],
    pods: [pod('web', { app: 'web' }, '10.0.0.1', 'A'), pod('client', { app: 'client' }, '10.0.0.5', 'B')],
    nodes: { A: ['10.0.9.1'], B: ['10.0.9.2'] },
    networkPolicies: [],
    clusterNetworkPolicies: [],
    kelpNetworkPolicies: [],
  };
  type Row = [src: string, protocol: RefPacket['protocol'], port: number, expected: string];
  const cases: Array<[string, Partial<World>, Row[]]> = [
    [
      'a broad admin Deny on one port beats a narrower, later admin Accept of everything',
      { clusterNetworkPolicies: [cnp('deny-wide', 'Admin', 5, [rule('Deny', ['10.0.0.0/8'], [{ protocol: 'TCP', port: { number: 80 } }])]), cnp('accept-narrow', 'Admin', 10, [rule('Accept', ['10.0.0.0/24'])])] },
      [
        ['10.0.0.5', 'TCP', 80, 'deny admin ClusterNetworkPolicy/deny-wide 0'],
        ['10.0.0.5', 'TCP', 81, 'allow admin ClusterNetworkPolicy/accept-narrow 0'],
        ['10.0.0.5', 'ICMP', 0, 'allow admin ClusterNetworkPolicy/accept-narrow 0'],
        ['10.2.0.1', 'TCP', 80, 'deny admin ClusterNetworkPolicy/deny-wide 0'],
        ['10.2.0.1', 'TCP', 81, 'allow default  0'],
      ],
    ],
    [
      'an admin port range Deny beats a narrower pod and port Accept in the NetworkPolicy tier; a Pass over it hands on to that tier',
      {
        clusterNetworkPolicies: [cnp('range', 'Admin', 1, [rule('Pass', ['10.0.0.4/30'], [{ protocol: 'TCP', port: { number: 1200 } }]), rule('Deny', ['0.0.0.0/0'], [{ protocol: 'TCP', port: { range: { start: 1000, end: 2000 } } }])])],
        kelpNetworkPolicies: [
          {
            apiVersion: 'policy.kelp.dev/v1alpha1',
            kind: 'KelpNetworkPolicy',
            metadata: { namespace: 'a', name: 'k', labels: {}, annotations: {} },
            spec: { subject: { podSelector: EMPTY }, ingress: [{ name: 'client', action: 'Accept', peers: [{ pods: { namespaceSelector: EMPTY, podSelector: { matchLabels: { app: 'client' }, matchExpressions: [] } } }], protocols: [{ namedPort: 'http' }, { protocol: 'TCP', port: { number: 1200 } }] }], egress: [] },
          },
        ],
      },
      [
        ['10.0.0.5', 'TCP', 1500, 'deny admin ClusterNetworkPolicy/range 1'],
        ['10.0.0.5', 'TCP', 1200, 'allow networkpolicy KelpNetworkPolicy/a/k 0'],
        ['10.0.0.5', 'TCP', 2001, 'deny networkpolicy KelpNetworkPolicy/a/k isolated'],
        ['10.0.0.5', 'UDP', 1500, 'deny networkpolicy KelpNetworkPolicy/a/k isolated'],
      ],
    ],
    [
      'a narrow Accept does not hide a broad KelpNetworkPolicy Deny of a protocol; isolation in the middle tier keeps the baseline from deciding',
      {
        networkPolicies: [
          {
            apiVersion: 'networking.k8s.io/v1',
            kind: 'NetworkPolicy',
            metadata: { namespace: 'a', name: 'n', labels: {}, annotations: {} },
            spec: { podSelector: { matchLabels: { app: 'web' }, matchExpressions: [] }, policyTypes: ['Egress'], ingress: [], egress: [] },
          },
        ],
        kelpNetworkPolicies: [
          {
            apiVersion: 'policy.kelp.dev/v1alpha1',
            kind: 'KelpNetworkPolicy',
            metadata: { namespace: 'a', name: 'deny16', labels: {}, annotations: {} },
            spec: { subject: { podSelector: EMPTY }, ingress: [{ name: '', action: 'Deny', peers: [{ networks: ['10.0.0.0/16'] }], protocols: [{ protocol: 'TCP' }] }, { name: '', action: 'Accept', peers: [{ networks: ['10.0.0.4/30'] }], protocols: [] }], egress: [] },
          },
        ],
        clusterNetworkPolicies: [cnp('floor', 'Baseline', 0, [rule('Deny', ['0.0.0.0/0'], [{ protocol: 'UDP' }])])],
      },
      [
        ['10.0.0.5', 'TCP', 80, 'deny networkpolicy KelpNetworkPolicy/a/deny16 0'],
        ['10.0.0.5', 'UDP', 80, 'allow networkpolicy KelpNetworkPolicy/a/deny16 1'],
        ['10.0.1.5', 'UDP', 80, 'deny networkpolicy KelpNetworkPolicy/a/deny16 isolated'],
      ],
    ],
  ];
  it.each(cases)('%s', (_, extra, rows) => {
    const w: World = { ...base, ...extra };
    const c = compileFor(w, 'A');
    const ref = new PolicyReference(w);
    const got = rows.map(([src, protocol, port]) => {
      const pkt: RefPacket = { src, dst: '10.0.0.1', protocol, port };
      return [src, protocol, port, mapsSide(c, pkt, 'ingress'), showRef(ref.side(pkt, 'ingress'))];
    });
    expect(got).toEqual(rows.map((r) => [...r.slice(0, 3), r[3], r[3]]));
  });
});
