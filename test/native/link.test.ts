// Attaching programs for real: tcx, the clsact fallback, pinned links, XDP and cgroup links, on a
// veth between two test namespaces, with traffic proving each program runs (or stopped running).
import { mkdirSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  attachCgroup,
  attachTc,
  attachTcFilter,
  attachXdp,
  AttachType,
  BpfMap,
  BpfObject,
  detachTcFilter,
  inNetns,
  listAttached,
  loadObject,
  openPinnedLink,
  openPinnedMap,
  queryTcFilter,
} from '../../src/bpf';
import { caught } from '../support/bpf-error';
import { cleanupAll, createNetns, createVeth, mountBpffs, Netns, onCleanup, sh, uniqueName } from '../support/netns';

const fixture = (name: string) => path.join(__dirname, '../../build/bpf', `fixture_${name}.o`);
const FX_TC = 0;
const FX_XDP = 1;
const FX_CGROUP = 2;

let a: Netns;
let b: Netns;
let vethB: string;
let ifB: number;
const ipA = '10.201.7.1';
const ipB = '10.201.7.2';

beforeAll(() => {
  a = createNetns('kla');
  b = createNetns('klb');
  const vethA = uniqueName('kva');
  vethB = uniqueName('kvb');
  createVeth(a, vethA, b, vethB);
  a.ip('addr', 'add', `${ipA}/24`, 'dev', vethA);
  b.ip('addr', 'add', `${ipB}/24`, 'dev', vethB);
  ifB = b.ifindex(vethB);
});
afterAll(cleanupAll);

let obj: BpfObject;
let counts: BpfMap;
beforeEach(() => {
  obj = loadObject(fixture('pkt'));
  counts = obj.map('fx_counts');
});
afterEach(() => obj.close());

const count = (which: number, map = counts) => {
  const key = Buffer.alloc(4);
  key.writeUInt32LE(which);
  return Number(map.lookup(key)!.readBigUInt64LE());
};
const ping = (n = 3) => a.exec('ping', ['-c', String(n), '-i', '0.2', '-W', '2', ipB]);
const attachedB = () => inNetns(b.path, () => listAttached(ifB));
const tcFilters = (dir: 'ingress' | 'egress') => b.exec('tc', ['filter', 'show', 'dev', vethB, dir]);

describe('tcx', () => {
  it('attaches, is listed, runs on traffic, and detaches', () => {
    const prog = obj.program('fx_count_tc');
    const link = inNetns(b.path, () => attachTc(prog, ifB, 'ingress'));
    try {
      expect(link.kind).toBe('tcx');
      expect(link.info()).toMatchObject({ progId: prog.id, ifindex: ifB, attachType: AttachType.TCX_INGRESS });
      const listed = attachedB();
      expect(listed.tcx.ingress.map((p) => [p.id, p.name])).toEqual([[prog.id, 'fx_count_tc']]);
      expect(listed.tcx.egress).toEqual([]);
      expect(listed.xdp).toBeUndefined();
      ping(3);
      const seen = count(FX_TC);
      expect(seen).toBeGreaterThanOrEqual(3);

      link.detach();
      link.detach();
      expect(attachedB().tcx.ingress).toEqual([]);
      ping(2);
      expect(count(FX_TC)).toBe(seen);
    } finally {
      link.close();
      link.close();
    }
  });

  it('detaches an unpinned link when its handle is closed', () => {
    const link = inNetns(b.path, () => attachTc(obj.program('fx_count_tc'), ifB, 'egress'));
    expect(attachedB().tcx.egress).toHaveLength(1);
    link.close();
    expect(attachedB().tcx.egress).toEqual([]);
  });

  it('keeps a pinned link attached after every fd is closed, and reopens it', () => {
    const pinRoot = mountBpffs();
    const linkPath = path.join(pinRoot, 'link');
    const prog = obj.program('fx_count_tc');
    const progId = prog.id;
    obj.map('fx_counts').pin(path.join(pinRoot, 'counts'));
    const link = inNetns(b.path, () => attachTc(prog, ifB, 'ingress'));
    link.pin(linkPath);
    link.close();
    obj.close();

    expect(attachedB().tcx.ingress.map((p) => p.id)).toEqual([progId]);
    const pinnedCounts = openPinnedMap(path.join(pinRoot, 'counts'));
    try {
      ping(3);
      expect(count(FX_TC, pinnedCounts)).toBeGreaterThanOrEqual(3);

      const again = openPinnedLink(linkPath);
      expect(again.kind).toBe('tcx');
      expect(again.pinPath).toBe(linkPath);
      expect(again.info()).toMatchObject({ progId, ifindex: ifB });
      again.detach();
      again.unpin();
      again.close();
      expect(attachedB().tcx.ingress).toEqual([]);
    } finally {
      pinnedCounts.close();
    }
  });

  it('reports an attach failure in the one error shape', () => {
    const e = caught(() => inNetns(b.path, () => attachTc(obj.program('fx_count_tc'), 999_999, 'ingress', { mode: 'tcx' })));
    expect(e.code).toBe('ENODEV');
    expect(e.operation).toBe('attach tcx ingress ifindex 999999');
  });
});

describe('clsact fallback', () => {
  it('attaches a direct-action filter, runs on traffic, and detaches from another namespace', () => {
    const prog = obj.program('fx_count_tc');
    const link = inNetns(b.path, () => attachTc(prog, ifB, 'ingress', { mode: 'tc' }));
    try {
      expect(link.kind).toBe('tc');
      expect(link.fd).toBe(-1);
      expect(tcFilters('ingress')).toMatch(/fx_count_tc.*direct-action/);
      expect(tcFilters('ingress')).toContain(`id ${prog.id}`);
      expect(attachedB().tcx.ingress).toEqual([]);
      ping(3);
      const seen = count(FX_TC);
      expect(seen).toBeGreaterThanOrEqual(3);
      expect(() => link.pin('/nonexistent')).toThrow(/a tc filter is not a BPF link/);

      // Called from the test's own namespace: the filter's namespace was kept at attach time.
      link.detach();
      expect(tcFilters('ingress')).not.toContain('fx_count_tc');
      ping(2);
      expect(count(FX_TC)).toBe(seen);
    } finally {
      link.close();
    }
  });

  it('is not used when tcx works', () => {
    const link = inNetns(b.path, () => attachTc(obj.program('fx_count_tc'), ifB, 'egress', { mode: 'auto' }));
    try {
      expect(link.kind).toBe('tcx');
      expect(tcFilters('egress')).not.toContain('fx_count_tc');
    } finally {
      link.close();
    }
  });
});

describe('clsact filter at a slot of our own', () => {
  const slot = { handle: 0x4b, priority: 1 };
  it('attaches, is found by query, swaps its program in place with replace, and detaches', () => {
    const first = obj.program('fx_count_tc');
    const other = loadObject(fixture('pkt'));
    try {
      // The slot is free, even before a clsact qdisc exists.
      expect(inNetns(b.path, () => queryTcFilter(ifB, 'egress', slot))).toBeUndefined();
      expect(inNetns(b.path, () => detachTcFilter(ifB, 'egress', slot))).toBe(false);
      inNetns(b.path, () => attachTcFilter(first, ifB, 'egress', slot));
      expect(tcFilters('egress')).toMatch(/pref 1 bpf chain 0 handle 0x4b fx_count_tc:\[\d+\] direct-action/);
      expect(inNetns(b.path, () => queryTcFilter(ifB, 'egress', slot))).toMatchObject({ id: first.id, name: 'fx_count_tc' });
      expect(attachedB().tcx.egress).toEqual([]);
      ping(3);
      const seen = count(FX_TC);
      expect(seen).toBeGreaterThanOrEqual(3);

      // Taken: a second attach without replace is refused, and leaves the first in place.
      expect(caught(() => inNetns(b.path, () => attachTcFilter(other.program('fx_count_tc'), ifB, 'egress', slot)))).toMatchObject({ code: 'EEXIST' });
      inNetns(b.path, () => attachTcFilter(other.program('fx_count_tc'), ifB, 'egress', slot, { replace: true }));
      expect(inNetns(b.path, () => queryTcFilter(ifB, 'egress', slot))?.id).toBe(other.program('fx_count_tc').id);
      expect(tcFilters('egress').match(/handle 0x4b/g)).toHaveLength(1);
      ping(2);
      expect(count(FX_TC)).toBe(seen);
      expect(count(FX_TC, other.map('fx_counts'))).toBeGreaterThanOrEqual(2);

      expect(inNetns(b.path, () => detachTcFilter(ifB, 'egress', slot))).toBe(true);
      expect(inNetns(b.path, () => queryTcFilter(ifB, 'egress', slot))).toBeUndefined();
      expect(inNetns(b.path, () => detachTcFilter(ifB, 'egress', slot))).toBe(false);
    } finally {
      inNetns(b.path, () => detachTcFilter(ifB, 'egress', slot));
      other.close();
    }
  });

  it('is gone with its device', () => {
    const veth = uniqueName('kvt');
    b.ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', `${veth}p`);
    const ifindex = b.ifindex(veth);
    inNetns(b.path, () => attachTcFilter(obj.program('fx_count_tc'), ifindex, 'ingress', slot));
    expect(inNetns(b.path, () => queryTcFilter(ifindex, 'ingress', slot))?.name).toBe('fx_count_tc');
    b.ip('link', 'del', veth);
    expect(inNetns(b.path, () => detachTcFilter(ifindex, 'ingress', slot))).toBe(false);
    expect(caught(() => inNetns(b.path, () => queryTcFilter(ifindex, 'ingress', slot)))).toMatchObject({ code: 'ENODEV' });
  });

  it('checks its slot', () => {
    expect(() => attachTcFilter(obj.program('fx_count_tc'), ifB, 'ingress', { handle: 0, priority: 1 })).toThrow(/handle/);
    expect(() => queryTcFilter(ifB, 'ingress', { handle: 1, priority: 0x10000 })).toThrow(/priority/);
  });
});

describe('xdp', () => {
  it('attaches in generic mode, is listed, runs on traffic, and goes with its handle', () => {
    const prog = obj.program('fx_count_xdp');
    const link = inNetns(b.path, () => attachXdp(prog, ifB, 'generic'));
    try {
      expect(link.kind).toBe('xdp');
      expect(link.info()).toMatchObject({ progId: prog.id, ifindex: ifB });
      expect(attachedB().xdp).toMatchObject({ id: prog.id, name: 'fx_count_xdp', mode: 'generic' });
      ping(3);
      expect(count(FX_XDP)).toBeGreaterThanOrEqual(3);
    } finally {
      link.close();
    }
    expect(attachedB().xdp).toBeUndefined();
  });

  it('attaches in driver mode on a veth', () => {
    const prog = obj.program('fx_count_xdp');
    const link = inNetns(b.path, () => attachXdp(prog, ifB, 'driver'));
    try {
      expect(attachedB().xdp).toMatchObject({ id: prog.id, mode: 'driver' });
      ping(3);
      expect(count(FX_XDP)).toBeGreaterThanOrEqual(3);
    } finally {
      link.close();
    }
    expect(attachedB().xdp).toBeUndefined();
  });

  it('refuses a second XDP program on the same interface', () => {
    const first = inNetns(b.path, () => attachXdp(obj.program('fx_count_xdp'), ifB, 'generic'));
    try {
      const e = caught(() => inNetns(b.path, () => attachXdp(obj.program('fx_count_xdp'), ifB, 'generic')));
      expect(e.code).toBe('EBUSY');
      expect(e.operation).toBe(`attach xdp generic ifindex ${ifB}`);
    } finally {
      first.close();
    }
  });
});

describe('cgroup', () => {
  it('counts egress packets of a process in the cgroup', () => {
    const cg = path.join('/sys/fs/cgroup/unified', uniqueName('kelpcg'));
    mkdirSync(cg);
    onCleanup(() => rmdirSync(cg));
    const link = attachCgroup(obj.program('fx_count_cgroup'), cg, AttachType.CGROUP_INET_EGRESS);
    try {
      expect(link.kind).toBe('cgroup');
      expect(link.info().progId).toBe(obj.program('fx_count_cgroup').id);
      expect(sh('bpftool', ['cgroup', 'show', cg])).toContain('fx_count_cgroup');
      // nsenter, not `ip netns exec`: the latter remounts /sys, hiding the cgroup2 mount.
      const script = `echo $$ > ${cg}/cgroup.procs && exec ping -c 2 -i 0.2 -W 2 ${ipB}`;
      sh('nsenter', [`--net=${a.path}`, 'sh', '-c', script]);
      expect(count(FX_CGROUP)).toBeGreaterThanOrEqual(2);
    } finally {
      link.close();
    }
    expect(sh('bpftool', ['cgroup', 'show', cg])).not.toContain('fx_count_cgroup');
  });
});
