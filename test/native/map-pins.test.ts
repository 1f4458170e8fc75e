// Versioned map pins, from the addon up: loadObject's pinPaths (pins where the caller says, its
// options checked with exact messages), the registry's layouts against the compiled objects (the
// build and the layout-2 test build), and DatapathObjects carrying a map across a layout change
// on a real bpffs: new pin beside the old, entries converted before any program could use the
// new map, the old pin kept until swapped() and caught up then, a downgrade, and pins of layouts
// nobody knows.
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { btfStructLayout, loadObject, MapType, objectMaps, openPinnedMap } from '../../src/bpf';
import { masqConstants, CtDir, IpProto, NatDir, ct4Entry, nat4Entry, tuple4 } from '../../src/datapath/nat';
import type { Ct4Entry, Nat4Entry, Tuple4 } from '../../src/datapath/nat';
import { endpointInfo, endpointKey } from '../../src/datapath/structs';
import type { StructCodec } from '../../src/datapath/structs';
import { DatapathObjects, objectPath } from '../../src/datapath/objects';
import { findMapPins, mapPinPath } from '../../src/datapath/maps/pins';
import { layoutOf, MAPS } from '../../src/datapath/maps/registry';
import { ct4EntryV2, nat4EntryV2 } from '../../src/datapath/maps/test-layouts';
import { caught } from '../support/bpf-error';
import { cleanupAll, mountBpffs } from '../support/netns';
import { sh } from '../../src/sandbox';

afterAll(cleanupAll);

const BUILD = path.join(__dirname, '../../build/bpf');
const LAYOUT_V2 = path.join(BUILD, 'layout-v2');
const fixture = path.join(BUILD, 'fixture_maps.o');
const u32 = (n: number) => Buffer.from(new Uint32Array([n]).buffer);
const u64 = (n: bigint) => Buffer.from(new BigUint64Array([n]).buffer);
/** Pins under a bpffs root, without the iterators every bpffs mount shows. */
const pins = (root: string) => readdirSync(root).filter((n) => !n.endsWith('.debug')).sort();

/** A logger whose lines the test reads. */
function captureLog(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'debug' }, sink), lines };
}

describe('loadObject pinPaths', () => {
  it('pins each named map at its path, pinned by name or not, and re-uses it there on the next load', () => {
    const root = mountBpffs();
    const pinPaths = { fx_pinned: path.join(root, 'fx_pinned_v2'), fx_hash: path.join(root, 'elsewhere') };
    const first = loadObject(fixture, { pinRoot: root, pinPaths });
    try {
      expect(pins(root)).toEqual(['elsewhere', 'fx_pinned_v2']);
      expect(first.mapInfo('fx_pinned').pinPath).toBe(pinPaths.fx_pinned);
      first.map('fx_pinned').update(u32(1), u64(0xabcn));
      first.map('fx_hash').update(u32(2), u64(0xdefn));
    } finally {
      first.close();
    }
    const second = loadObject(fixture, { pinRoot: root, pinPaths });
    try {
      expect(second.map('fx_pinned').lookup(u32(1))?.readBigUInt64LE()).toBe(0xabcn);
      expect(second.map('fx_hash').lookup(u32(2))?.readBigUInt64LE()).toBe(0xdefn);
      expect(second.map('fx_pinned').id).toBe(openPinnedMap(pinPaths.fx_pinned).id);
    } finally {
      second.close();
    }
    // Without pinPaths the by-name default applies again: a different map.
    const plain = loadObject(fixture, { pinRoot: root });
    try {
      expect(plain.map('fx_pinned').lookup(u32(1))).toBeUndefined();
      expect(existsSync(path.join(root, 'fx_pinned'))).toBe(true);
    } finally {
      plain.close();
    }
  });

  it('refuses what it cannot honour before anything is loaded, with exact messages', () => {
    const root = mountBpffs();
    const op = `load ${fixture}`;
    const msg = (pinPaths: unknown) => caught(() => loadObject(fixture, { pinRoot: root, pinPaths: pinPaths as Record<string, string> })).message;
    expect(msg([])).toBe(`${op}: pinPaths must be an object`);
    expect(msg('x')).toBe(`${op}: pinPaths must be an object`);
    expect(msg({ fx_hash: 'relative/pin' })).toBe(`${op}: pinPaths.fx_hash must be an absolute path, got "relative/pin"`);
    expect(msg({ fx_hash: 7 })).toBe(`${op}: pinPaths.fx_hash must be an absolute path, got 7`);
    const same = path.join(root, 'one');
    expect(msg({ fx_hash: same, fx_pinned: `${same}/` })).toBe(`${op}: pinPaths.fx_hash and pinPaths.fx_pinned are both ${same}/`);
    const names = objectMaps(fixture).filter((m) => !m.internal).map((m) => m.name).join(', ');
    expect(msg({ nope: path.join(root, 'nope') })).toBe(`set pin paths of ${fixture}: "nope" is not a map of the object (maps: ${names})`);
    expect(msg({ '.rodata': path.join(root, 'ro') })).toBe(`set pin paths of ${fixture}: ".rodata" is not a map of the object (maps: ${names})`);
    expect(pins(root)).toEqual([]);
  });

  it('objectMaps describes the maps without loading or pinning anything', () => {
    const maps = objectMaps(objectPath('host'));
    expect(maps.find((m) => m.name === 'kelp_ct4')).toMatchObject({ type: MapType.LRU_HASH, keySize: 16, valueSize: 56, btfValueType: 'ct4_entry' });
    expect(objectMaps(path.join(LAYOUT_V2, 'host.o')).find((m) => m.name === 'kelp_ct4')?.valueSize).toBe(64);
  });
});

describe('map registry layouts', () => {
  const declared = (dir: string, obj: string) => objectMaps(path.join(dir, `${obj}.o`)).filter((m) => m.name.startsWith('kelp_'));

  it('the current version of every map is what build/bpf declares, in every object declaring it', () => {
    for (const spec of MAPS) {
      for (const obj of spec.objects) {
        const desc = declared(BUILD, obj).find((m) => m.name === spec.name)!;
        expect(layoutOf(spec, desc)?.version, `${spec.name} in ${obj}.o`).toBe(spec.version);
      }
    }
  });

  it('the layout-2 test build declares layout 2 of kelp_ct4 and kelp_snat4, the current layout of the rest', () => {
    for (const spec of MAPS) {
      for (const obj of spec.objects) {
        const desc = declared(LAYOUT_V2, obj).find((m) => m.name === spec.name)!;
        const want = obj === 'host' && (spec.name === 'kelp_ct4' || spec.name === 'kelp_snat4') ? 2 : spec.version;
        expect(layoutOf(spec, desc)?.version, `${spec.name} in layout-v2/${obj}.o`).toBe(want);
      }
    }
  });

  it.each([
    ['ct4_entry', ct4EntryV2],
    ['nat4_entry', nat4EntryV2],
  ] as const)('layout 2 codec of struct %s agrees with the BTF of layout-v2/host.o', (cName, codec) => {
    const btf = btfStructLayout(path.join(LAYOUT_V2, 'host.o'), cName);
    expect(btf.size).toBe(codec.size);
    expect(btf.members.map((m) => ({ name: m.name, offset: m.offset, size: m.size }))).toEqual(codec.fields.map((f) => ({ ...f })));
  });

  it('every layout is told apart from the others, and a converted map can be converted', () => {
    for (const spec of MAPS) {
      expect(spec.name, 'a map name that looks like a versioned pin').not.toMatch(/_v\d+$/);
      expect(spec.layouts.map((l) => l.version), spec.name).toEqual(spec.layouts.map((_, i) => i + 1));
      expect(spec.layouts.some((l) => l.version === spec.version), spec.name).toBe(true);
      for (const l of spec.layouts) expect(layoutOf(spec, l), `${spec.name} v${l.version}`).toBe(l);
      expect(spec.why.length, spec.name).toBeGreaterThan(20);
      if (spec.migrate !== 'convert') continue;
      for (const l of spec.layouts) {
        expect([MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH], `${spec.name}: per-CPU values are not converted`).not.toContain(l.type);
        for (const part of ['key', 'value'] as const) {
          const codec = l[part];
          if (codec) expect(codec.size, `${spec.name} v${l.version} ${part}`).toBe(part === 'key' ? l.keySize : l.valueSize);
        }
      }
      for (const a of spec.layouts) {
        for (const b of spec.layouts) {
          for (const part of ['key', 'value'] as const) {
            const size = (l: typeof a) => (part === 'key' ? l.keySize : l.valueSize);
            const ok = (a[part] && b[part]) || size(a) === size(b);
            expect(ok, `${spec.name} v${a.version} -> v${b.version}: ${part} needs codecs`).toBeTruthy();
          }
        }
      }
      // Its old pin waits for the new programs to be swapped in: only host.o's swap (one link
      // update per direction) and sock.o's (one per cgroup hook) are the datapath's own to report.
      if (spec.writer === 'datapath') expect(spec.objects.length === 1 && ['host', 'sock'].includes(spec.objects[0]), spec.name).toBe(true);
    }
  });
});

describe('DatapathObjects across a layout change', () => {
  const constants = masqConstants({ podCidr: '10.244.0.0/24', masqIp: '192.0.2.1' });
  const flow = (n: number): Tuple4 => ({ saddr: '10.244.0.5', daddr: '198.51.100.7', sport: 40000 + n, dport: 443, proto: IpProto.TCP, dir: CtDir.EGRESS });
  const ct = (n: number): Ct4Entry => ({
    created: 1000n + BigInt(n),
    lastSeen: 2000n + BigInt(n),
    txPackets: 3n,
    txBytes: 300n,
    rxPackets: 2n,
    rxBytes: 200n,
    txFlags: 0x12,
    rxFlags: 0x12,
  });
  const nat = (n: number): Nat4Entry => ({ addr: '192.0.2.1', port: 61000 + n, created: 1000n + BigInt(n) });
  const read = <T>(obj: { map(n: string): { lookup(k: Buffer): Buffer | undefined } }, map: string, codec: StructCodec<T>, key: Buffer) => {
    const v = obj.map(map).lookup(key);
    return v && codec.decode(v);
  };
  const write = (mapPath: string, key: Buffer, value: Buffer) => {
    const m = openPinnedMap(mapPath);
    try {
      m.update(key, value);
    } finally {
      m.close();
    }
  };

  it('converts kelp_ct4 and kelp_snat4 into pins of layout 2, keeps the old pins until swapped, catches up, and goes back down', () => {
    const root = mountBpffs();
    const { log, lines } = captureLog();
    const k1 = tuple4.encode(flow(1));
    const k2 = tuple4.encode(flow(2));
    const k3 = tuple4.encode(flow(3));
    const natKey = tuple4.encode({ ...flow(1), dir: NatDir.EGRESS });
    const ep = { key: endpointKey.encode({ ip4: '10.244.0.5' }), value: endpointInfo.encode({ ifindex: 7, epId: 3, flags: 0, mac: '02:00:00:00:00:05', nodeMac: '02:00:00:00:00:01' }) };

    const v1 = new DatapathObjects(root, log, BUILD);
    const host1 = v1.load('host', constants);
    host1.map('kelp_ct4').update(k1, ct4Entry.encode(ct(1)));
    host1.map('kelp_ct4').update(k2, ct4Entry.encode(ct(2)));
    host1.map('kelp_snat4').update(natKey, nat4Entry.encode(nat(1)));
    host1.map('kelp_endpoints').update(ep.key, ep.value);
    v1.swapped('host');
    v1.close();
    expect(findMapPins(root, 'kelp_ct4')).toEqual([{ path: path.join(root, 'kelp_ct4'), version: 1 }]);

    // An earlier migration, interrupted before the swap, left a layout-2 pin holding a newer k2.
    const early = loadObject(path.join(LAYOUT_V2, 'host.o'), { constants, pinPaths: { kelp_ct4: mapPinPath(root, 'kelp_ct4', 2) } });
    early.map('kelp_ct4').update(k2, ct4EntryV2.encode({ ...ct(2), rxPackets: 77n }));
    early.close();

    const v2 = new DatapathObjects(root, log, LAYOUT_V2);
    const host2 = v2.load('host', constants);
    expect(v2.layout('kelp_ct4').version).toBe(2);
    expect(v2.layout('kelp_endpoints').version).toBe(1);
    expect(host2.mapInfo('kelp_ct4').pinPath).toBe(mapPinPath(root, 'kelp_ct4', 2));
    expect(read(host2, 'kelp_ct4', ct4EntryV2, k1)).toEqual(ct(1));
    expect(read(host2, 'kelp_ct4', ct4EntryV2, k2)).toEqual({ ...ct(2), rxPackets: 77n });
    expect(read(host2, 'kelp_snat4', nat4EntryV2, natKey)).toEqual(nat(1));
    // The same kelp_endpoints (layout 1 in both builds): never copied, one map.
    expect(host2.map('kelp_endpoints').lookup(ep.key)).toEqual(ep.value);
    expect(host2.map('kelp_endpoints').id).toBe(openPinnedMap(path.join(root, 'kelp_endpoints')).id);
    // The previous programs may still write the old pins until the swap.
    expect(existsSync(path.join(root, 'kelp_ct4'))).toBe(true);
    expect(existsSync(path.join(root, 'kelp_snat4'))).toBe(true);
    write(path.join(root, 'kelp_ct4'), k3, ct4Entry.encode(ct(3)));
    write(path.join(root, 'kelp_ct4'), k1, ct4Entry.encode({ ...ct(1), txPackets: 99n }));
    v2.swapped('host');
    expect(existsSync(path.join(root, 'kelp_ct4'))).toBe(false);
    expect(existsSync(path.join(root, 'kelp_snat4'))).toBe(false);
    expect(read(host2, 'kelp_ct4', ct4EntryV2, k3)).toEqual(ct(3));
    // What the new map holds wins: the catch-up only adds.
    expect(read(host2, 'kelp_ct4', ct4EntryV2, k1)).toEqual(ct(1));
    expect(lines.filter((l) => l.msg === 'map pinned with a new layout').map((l) => [l.map, l.from, l.to, l.entries])).toEqual([
      ['kelp_snat4', [1], 2, 1],
      ['kelp_ct4', [1], 2, 1],
    ]);
    expect(lines.filter((l) => l.msg === 'old layout retired after the programs were swapped').map((l) => [l.map, l.caughtUp])).toEqual([
      ['kelp_snat4', 0],
      ['kelp_ct4', 1],
    ]);
    v2.close();

    // Back down to layout 1: the registry knows both ways.
    const back = new DatapathObjects(root, log, BUILD);
    const host3 = back.load('host', constants);
    expect(read(host3, 'kelp_ct4', ct4Entry, k3)).toEqual(ct(3));
    expect(read(host3, 'kelp_snat4', nat4Entry, natKey)).toEqual(nat(1));
    back.swapped('host');
    // No layout-2 pin of the two maps left (kelp_lb4_frontends is at layout 2 in both builds).
    expect(pins(root).filter((n) => /^kelp_(ct4|snat4)_v\d+$/.test(n))).toEqual([]);
    back.close();
  });

  it('removes a pin of a layout nobody declares: in the way at the new path before the load, beside it after', () => {
    const root = mountBpffs();
    const { log, lines } = captureLog();
    // The 20-byte endpoint key of a kelp before layouts were versioned, at version 1's path.
    sh('bpftool', ['map', 'create', path.join(root, 'kelp_endpoints'), 'type', 'hash', 'key', '20', 'value', '24', 'entries', '16384', 'name', 'kelp_endpoints']);
    // A future layout this agent has never heard of.
    sh('bpftool', ['map', 'create', path.join(root, 'kelp_metrics_v9'), 'type', 'hash', 'key', '8', 'value', '8', 'entries', '16', 'name', 'kelp_metrics']);
    const objs = new DatapathObjects(root, log, BUILD);
    try {
      const lxc = objs.load('lxc', { KELP_TRACE: 0 });
      expect(lxc.map('kelp_endpoints').keySize).toBe(4);
      expect(openPinnedMap(path.join(root, 'kelp_endpoints')).keySize).toBe(4);
      expect(existsSync(path.join(root, 'kelp_metrics_v9'))).toBe(false);
      expect(lines.some((l) => l.msg === 'a pin of an unknown layout is in the way: removed' && l.map === 'kelp_endpoints')).toBe(true);
      expect(lines.some((l) => l.msg === 'map pinned with a new layout' && l.map === 'kelp_metrics' && l.migrate === 'reset')).toBe(true);
    } finally {
      objs.close();
    }
  });
});

describe('DatapathObjects with per-node map sizes', () => {
  const constants = masqConstants({ podCidr: '10.244.0.0/24', masqIp: '192.0.2.1' });

  it('sizes a sizable map in every object declaring it, re-uses its pin at that size, and replaces it at another', () => {
    const root = mountBpffs();
    const { log, lines } = captureLog();
    const sizes = { kelp_policy4: 1024, kelp_pct4: 4096 };
    const first = new DatapathObjects(root, log, BUILD, sizes);
    const lxc = first.load('lxc', {});
    const host = first.load('host', constants);
    expect(lxc.map('kelp_policy4').maxEntries).toBe(1024);
    expect(host.map('kelp_policy4').id).toBe(lxc.map('kelp_policy4').id);
    expect(host.map('kelp_pct4').maxEntries).toBe(4096);
    expect(lxc.map('kelp_ipcache4').maxEntries).toBe(65536);
    const id = lxc.map('kelp_pct4').id;
    lxc.map('kelp_pct4').update(Buffer.alloc(16, 1), Buffer.alloc(72));
    first.close();

    const again = new DatapathObjects(root, log, BUILD, sizes);
    try {
      const l = again.load('lxc', {});
      expect(l.map('kelp_pct4').id).toBe(id);
      expect(l.map('kelp_pct4').lookup(Buffer.alloc(16, 1))).toBeDefined();
    } finally {
      again.close();
    }
    expect(lines.filter((l) => String(l.msg).includes('in the way'))).toEqual([]);

    const bigger = new DatapathObjects(root, log, BUILD, { kelp_policy4: 2048, kelp_pct4: 4096 });
    try {
      const l = bigger.load('lxc', {});
      expect(l.map('kelp_policy4').maxEntries).toBe(2048);
      expect(l.map('kelp_pct4').id).toBe(id);
    } finally {
      bigger.close();
    }
    expect(lines.filter((l) => String(l.msg).includes('in the way')).map((l) => [l.map, l.msg, l.maxEntries])).toEqual([
      ['kelp_policy4', 'a pin of another size is in the way: removed, the map starts empty at its new size', 2048],
    ]);
  });

  it('refuses sizes for maps that are not sizable, and sizes that are not counts', () => {
    const root = mountBpffs();
    const { log } = captureLog();
    expect(() => new DatapathObjects(root, log, BUILD, { kelp_endpoints: 10 })).toThrow(
      'mapSizes.kelp_endpoints: only kelp_ipcache4, kelp_policy4, kelp_pct4, kelp_lb4_frontends, kelp_lb4_backends, kelp_lb4_members, kelp_lb4_maglev, kelp_lb4_affinity, kelp_lb4_source_ranges, kelp_lb4_ct can be sized per node',
    );
    expect(() => new DatapathObjects(root, log, BUILD, { kelp_pct4: 0 })).toThrow('mapSizes.kelp_pct4 must be an integer from 1 to 2147483647, got 0');
  });
});
