import { describe, expect, it } from 'vitest';
import { IDENTITY_ANY, IDENTITY_HOST, IDENTITY_WORLD, IPPROTO, PolicyDirection, PolicyMapsDesired, PolicyVerdict, RULE_ISOLATED } from '../../src/datapath/policy-types';
import { compilePolicy, DesiredLookup, IdentityAllocator } from '../../src/policy';
import { PolicyReference, RefMutation, RefPacket, RefSide } from '../support/policy-reference';
import { generatePackets, generateWorld, inputsFor, World } from '../support/policy-worlds';

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

/** Drops policies and rules while the same packet still disagrees: the smallest world to show. */
function shrink(w: World, m: Mismatch): World {
  const still = (x: World) => {
    const found = firstMismatch({ ...x, nodes: { [m.node]: x.nodes[m.node] } }, [m.packet]);
    return found !== undefined && found.direction === m.direction;
  };
  let cur = w;
  const lists = ['networkPolicies', 'clusterNetworkPolicies', 'kelpNetworkPolicies'] as const;
  for (let changed = true; changed; ) {
    changed = false;
    for (const list of lists) {
      for (let i = 0; i < cur[list].length; i++) {
        const next = { ...cur, [list]: cur[list].filter((_, j) => j !== i) };
        if (still(next)) {
          cur = next;
          changed = true;
          i--;
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
      expect(at(k), k).toBeGreaterThan(sides * 0.002);
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
