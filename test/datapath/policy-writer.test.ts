// The policy map writer (src/datapath/policy.ts) on the real maps of lxc.o: content read back
// through the codecs, diff counts, the make-before-break order of its writes, the revision
// (bumped only by a change), the enforcement switch, refusals before anything is written, and a
// full map (lxc.o loaded with small kelp_policy4 and kelp_ipcache4).
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { BpfMap, BpfObject } from '../../src/bpf';
import { MapFullError } from '../../src/datapath/maps/sync';
import {
  applyPolicyMaps,
  ipcache4Info,
  ipcache4Key,
  PolicyMaps,
  policyMapsOf,
  PolicyWriter,
  policy4Key,
  policy4Verdict,
  policyEnforced,
  readPolicyConfig,
  readPolicyRevision,
  setPolicyEnforcement,
} from '../../src/datapath/policy';
import { IPPROTO, PolicyEntry, PolicyMapsDesired, PolicyVerdict, RULE_ISOLATED } from '../../src/datapath/policy-types';
import pino from 'pino';
import { Datapath } from '../../src/datapath/datapath';
import { loadWithVerifierLog, LXC_OBJECT } from '../support/datapath';
import { cleanupAll, mountBpffs, onCleanup } from '../support/netns';

let obj: BpfObject;
let maps: PolicyMaps;

beforeAll(() => {
  obj = loadWithVerifierLog(LXC_OBJECT, { pinRoot: mountBpffs() });
  onCleanup(() => obj.close());
  maps = policyMapsOf(obj);
});

afterAll(cleanupAll);

beforeEach(() => {
  maps.policy.clear();
  maps.ipcache.clear();
  maps.config.update(Buffer.alloc(4), Buffer.alloc(8));
});

const allow = { action: 'allow' as const, tier: 'networkpolicy' as const, policyId: 3, rule: 0 };
const isolated = { action: 'deny' as const, tier: 'networkpolicy' as const, policyId: 3, rule: RULE_ISOLATED };

const catchAll = (epId: number, verdict: PolicyVerdict = isolated): PolicyEntry => ({ epId, identity: 0, direction: 'ingress', port: 0, portPrefix: 0, verdict });
const port = (epId: number, identity: number, p: number, prefix = 16, verdict: PolicyVerdict = allow): PolicyEntry => ({
  epId,
  identity,
  direction: 'ingress',
  protocol: IPPROTO.TCP,
  port: p,
  portPrefix: prefix,
  verdict,
});

function desired(policy: PolicyEntry[], ipcache: Array<[string, number]>): PolicyMapsDesired {
  return { policy, ipcache: new Map(ipcache), policies: new Map() };
}

function content(m: BpfMap, kind: 'policy' | 'ipcache'): unknown[] {
  return m
    .keys()
    .map((k) =>
      kind === 'policy'
        ? { ...policy4Key.decode(k), verdict: policy4Verdict.decode(m.lookup(k)!) }
        : { ...ipcache4Key.decode(k), ...ipcache4Info.decode(m.lookup(k)!) },
    )
    .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
}

const sorted = (xs: unknown[]) => [...xs].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));

describe('applyPolicyMaps', () => {
  it('writes exactly the desired content, reads back through the codecs, and bumps the revision once', () => {
    const d = desired([catchAll(5), port(5, 300, 80), port(5, 300, 8080, 13)], [
      ['10.1.0.5/32', 300],
      ['0.0.0.0/0', 2],
    ]);
    const r = applyPolicyMaps(maps, d);
    expect(r).toEqual({
      policy: { added: 3, updated: 0, removed: 0, unchanged: 0 },
      ipcache: { added: 2, updated: 0, removed: 0, unchanged: 0 },
      revision: 1,
      bumped: true,
    });
    expect(content(maps.policy, 'policy')).toEqual(sorted(d.policy.map((e) => ({ ...e, protocol: e.protocol }))));
    expect(content(maps.ipcache, 'ipcache')).toEqual(
      sorted([
        { cidr: '10.1.0.5/32', identity: 300, tunnelIp: '0.0.0.0', flags: 0 },
        { cidr: '0.0.0.0/0', identity: 2, tunnelIp: '0.0.0.0', flags: 0 },
      ]),
    );
    // Nothing changed: nothing written, the revision stays (live flows are not re-decided).
    expect(applyPolicyMaps(maps, d)).toMatchObject({ revision: 1, bumped: false, policy: { unchanged: 3 } });
    expect(applyPolicyMaps(maps, d, { bump: true })).toMatchObject({ revision: 2, bumped: true });
    expect(applyPolicyMaps(maps, desired([catchAll(5)], []), { revision: 77 })).toMatchObject({
      revision: 77,
      policy: { removed: 2, unchanged: 1 },
      ipcache: { removed: 2 },
    });
    expect(readPolicyRevision(maps)).toBe(77);
  });

  it('puts new and changed policy entries, then the ipcache, then removes stale policy entries, then writes the revision', () => {
    applyPolicyMaps(maps, desired([catchAll(5), port(5, 300, 80)], [['10.1.0.5/32', 300]]));
    const log: string[] = [];
    const record = (name: string, m: BpfMap): BpfMap =>
      new Proxy(m, {
        get(target, prop) {
          const v = Reflect.get(target, prop) as unknown;
          if (prop === 'update' || prop === 'delete') {
            return (...args: unknown[]) => {
              log.push(`${name} ${String(prop)}`);
              return (v as (...a: unknown[]) => unknown).apply(target, args);
            };
          }
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
    const recorded = { policy: record('policy', maps.policy), ipcache: record('ipcache', maps.ipcache), config: record('config', maps.config) };
    applyPolicyMaps(recorded, desired([catchAll(5, allow), port(5, 301, 443)], [['10.1.0.6/32', 301]]));
    expect(log).toEqual(['policy update', 'policy update', 'ipcache update', 'ipcache delete', 'policy delete', 'config update']);
  });

  it('refuses what it cannot write before writing anything, naming the entry', () => {
    applyPolicyMaps(maps, desired([catchAll(5)], []));
    expect(() => applyPolicyMaps(maps, desired([catchAll(6), catchAll(6, allow)], []))).toThrow(
      'kelp_policy4: two entries for one key: ep 6 ingress identity 0 any and ep 6 ingress identity 0 any',
    );
    expect(() => applyPolicyMaps(maps, desired([port(6, 300, 8081, 13)], []))).toThrow('policy4_key: port 8081/13 has bits below its prefix set');
    expect(() => applyPolicyMaps(maps, desired([], [['10.1.0.5/24', 300]]))).toThrow('CIDR 10.1.0.5/24 has host bits set');
    expect(() => applyPolicyMaps(maps, desired([], [['10.1.0.0/24', 0]]))).toThrow(/identity 0 is the wildcard/);
    expect(content(maps.policy, 'policy')).toHaveLength(1);
    expect(readPolicyRevision(maps)).toBe(1);
  });

  it('a full map is a MapFullError naming it; nothing is removed and the revision stays', () => {
    const small = loadWithVerifierLog(LXC_OBJECT, { pinRoot: mountBpffs(), maxEntries: { kelp_policy4: 4, kelp_ipcache4: 2 } });
    onCleanup(() => small.close());
    const m = policyMapsOf(small);
    applyPolicyMaps(m, desired([catchAll(1), catchAll(2)], [['10.0.0.1/32', 300]]));
    const tooMany = desired([1, 3, 4, 5, 6].map((ep) => catchAll(ep)), [['10.0.0.1/32', 300]]);
    let err: unknown;
    try {
      applyPolicyMaps(m, tooMany);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MapFullError);
    expect((err as MapFullError).message).toMatch(/^kelp_policy4 is full: 5 entries wanted, room for 4 /);
    // Entry of endpoint 2 is stale but stays: removals come only after every put succeeded.
    expect(content(m.policy, 'policy').map((e) => (e as PolicyEntry).epId)).toEqual(expect.arrayContaining([1, 2]));
    expect(readPolicyRevision(m)).toBe(1);
    expect(() => applyPolicyMaps(m, desired([catchAll(1)], [['10.0.0.1/32', 300], ['10.0.0.2/32', 301], ['10.0.0.3/32', 302]]))).toThrow(
      /^kelp_ipcache4 is full: 3 entries wanted, room for 2 /,
    );
  });
});

describe('PolicyWriter', () => {
  it('diffs against what it wrote last; a resync, or the apply after a failed one, reads the maps back', () => {
    const w = new PolicyWriter(maps);
    const d = desired([catchAll(5), port(5, 300, 80)], [['10.1.0.5/32', 300]]);
    expect(w.apply(d)).toMatchObject({ revision: 1, policy: { added: 2 } });
    expect(w.apply(desired([catchAll(5), port(5, 300, 81)], [['10.1.0.5/32', 300]]))).toMatchObject({
      revision: 2,
      policy: { added: 1, removed: 1, unchanged: 1 },
      ipcache: { unchanged: 1 },
    });
    // Removed behind its back: its own record says the entry is there, until a resync.
    maps.ipcache.delete(ipcache4Key.encode({ cidr: '10.1.0.5/32' }));
    const same = desired([catchAll(5), port(5, 300, 81)], [['10.1.0.5/32', 300]]);
    expect(w.apply(same)).toMatchObject({ bumped: false, ipcache: { unchanged: 1 } });
    expect(content(maps.ipcache, 'ipcache')).toEqual([]);
    expect(w.apply(same, { resync: true })).toMatchObject({ revision: 3, ipcache: { added: 1 } });
    expect(content(maps.ipcache, 'ipcache')).toHaveLength(1);

    // Refused before writing: its record still holds.
    expect(() => w.apply(desired([port(5, 300, 81, 13)], []))).toThrow(/bits below its prefix/);
    expect(w.apply(same)).toMatchObject({ bumped: false });
  });

  it('after a failed apply, the next one reads the maps back', () => {
    const small = policyMapsOf(loadWithVerifierLog(LXC_OBJECT, { pinRoot: mountBpffs(), maxEntries: { kelp_policy4: 2 } }));
    const w = new PolicyWriter(small);
    w.apply(desired([catchAll(1)], []));
    expect(() => w.apply(desired([catchAll(2), catchAll(3), catchAll(4)], []))).toThrow(MapFullError);
    // Endpoint 2's entry went in before the map was full: read back, it is already there (its
    // own record, still saying {1}, would have put it again).
    expect(w.apply(desired([catchAll(2)], [])).policy).toEqual({ added: 0, updated: 0, removed: 1, unchanged: 1 });
    expect(content(small.policy, 'policy')).toHaveLength(1);
  });
});

describe('the enforcement switch', () => {
  it('turns enforcement on and off and keeps the revision', () => {
    applyPolicyMaps(maps, desired([catchAll(5)], []), { revision: 9 });
    expect(policyEnforced(maps)).toBe(false);
    setPolicyEnforcement(maps, true);
    expect(readPolicyConfig(maps)).toEqual({ revision: 9, flags: 1 });
    applyPolicyMaps(maps, desired([catchAll(5, allow)], []));
    expect(readPolicyConfig(maps)).toEqual({ revision: 10, flags: 1 });
    setPolicyEnforcement(maps, false);
    expect(readPolicyConfig(maps)).toEqual({ revision: 10, flags: 0 });
  });
});

describe('through the Datapath facade', () => {
  it('gives the policy maps at the node\'s sizes and collects the policy conntrack', () => {
    const dp = new Datapath({ bpfRoot: mountBpffs(), log: pino({ level: 'silent' }), mapSizes: { kelp_policy4: 512 } });
    onCleanup(() => dp.close());
    const m = dp.policyMaps();
    expect(m.policy.maxEntries).toBe(512);
    expect(applyPolicyMaps(m, desired([catchAll(5)], [['0.0.0.0/0', 2]])).revision).toBe(1);
    expect(dp.dump('kelp_policy4')).toHaveLength(1);
    expect(dp.gcPolicyCt()).toEqual({ scanned: 0, deleted: 0 });
  });
});
