// The map registry declares every map kelp's objects declare, in the objects that declare it,
// and nothing else: a map added to a header without a registry entry (layout version, writer,
// description) fails here.
import { afterAll, describe, expect, it } from 'vitest';
import { loadObject } from '../../src/bpf';
import { objectPath } from '../../src/datapath/loader';
import { MAPS } from '../../src/datapath/maps/registry';
import { masqConstants } from '../../src/datapath/nat';
import { cleanupAll, mountBpffs } from '../support/netns';

afterAll(cleanupAll);

describe('map registry', () => {
  it('matches the maps the compiled objects declare, object by object', () => {
    const pinRoot = mountBpffs();
    const declared: Record<string, string[]> = {};
    for (const name of ['lxc', 'host', 'sock', 'iter_udp', 'overlay'] as const) {
      const obj = loadObject(objectPath(name), { pinRoot, constants: name === 'host' ? masqConstants({ podCidr: '10.244.0.0/24', masqIp: '192.0.2.1' }) : {} });
      try {
        for (const m of obj.maps().filter((n) => n.startsWith('kelp_'))) (declared[m] ??= []).push(name);
      } finally {
        obj.close();
      }
    }
    const registry = Object.fromEntries(MAPS.map((m) => [m.name, [...m.objects].sort()]));
    for (const v of Object.values(declared)) v.sort();
    expect(registry).toEqual(declared);
    expect(new Set(MAPS.map((m) => m.name)).size).toBe(MAPS.length);
    for (const m of MAPS) {
      expect(m.version, m.name).toBeGreaterThanOrEqual(1);
      expect(m.description.length, m.name).toBeGreaterThan(10);
    }
  });
});
