// BpfLink.update (bpf_link_update): a tcx link moved from one program to another in place, the
// way a restarted agent moves pinned links onto its new program instances. Two loads of the
// same fixture give two programs with separate counters, so traffic shows which one ran; under
// a ping flood with the programs swapped back and forth, every answered request was counted by
// one of them: the hook was never without a program.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from 'vitest';
import { attachTc, attachXdp, BpfObject, inNetns, listAttached, loadObject, openPinnedLink } from '../../src/bpf';
import { caught } from '../support/bpf-error';
import { cleanupAll, createNetns, createVeth, mountBpffs, Netns, onCleanup, uniqueName } from '../support/netns';

const FIXTURE = path.join(__dirname, '../../build/bpf/fixture_pkt.o');
const FX_TC = 0;
const ipA = '10.201.9.1';
const ipB = '10.201.9.2';

let a: Netns;
let b: Netns;
let vethB: string;
let ifB: number;

beforeAll(() => {
  a = createNetns('kua');
  b = createNetns('kub');
  const vethA = uniqueName('kva');
  vethB = uniqueName('kvb');
  // No IPv6: only the test's own packets (and ARP) cross the veth.
  for (const ns of [a, b]) ns.exec('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  createVeth(a, vethA, b, vethB);
  a.ip('addr', 'add', `${ipA}/24`, 'dev', vethA);
  b.ip('addr', 'add', `${ipB}/24`, 'dev', vethB);
  ifB = b.ifindex(vethB);
  a.exec('ping', ['-c', '1', '-W', '2', ipB]);
});
afterAll(cleanupAll);

let one: BpfObject;
let two: BpfObject;
beforeEach(() => {
  one = loadObject(FIXTURE);
  two = loadObject(FIXTURE);
});
afterEach(() => {
  one.close();
  two.close();
});

const count = (obj: BpfObject) => {
  const key = Buffer.alloc(4);
  key.writeUInt32LE(FX_TC);
  return Number(obj.map('fx_counts').lookup(key)!.readBigUInt64LE());
};
const ingressIds = () => inNetns(b.path, () => listAttached(ifB)).tcx.ingress.map((p) => p.id);

it('moves a pinned tcx link to another program: same link, new program runs, old one stops', () => {
  const pinRoot = mountBpffs();
  const pin = path.join(pinRoot, 'link');
  const p1 = one.program('fx_count_tc');
  const p2 = two.program('fx_count_tc');
  const link = inNetns(b.path, () => attachTc(p1, ifB, 'ingress'));
  link.pin(pin);
  const id = link.info().id;
  link.close();

  const pinned = openPinnedLink(pin);
  try {
    pinned.update(p2);
    expect(pinned.info()).toMatchObject({ id, progId: p2.id, ifindex: ifB });
    expect(ingressIds()).toEqual([p2.id]);
    const before = [count(one), count(two)];
    a.exec('ping', ['-c', '3', '-i', '0.2', '-W', '2', ipB]);
    expect(count(one)).toBe(before[0]);
    expect(count(two)).toBeGreaterThanOrEqual(before[1] + 3);

    // With `expected`, the kernel swaps only if the link still runs that program.
    expect(caught(() => pinned.update(p1, { expected: p1 })).code).toBe('EPERM');
    expect(ingressIds()).toEqual([p2.id]);
    pinned.update(p1, { expected: p2 });
    expect(ingressIds()).toEqual([p1.id]);
    // A program of another type cannot take a tc hook.
    expect(caught(() => pinned.update(one.program('fx_count_xdp'))).code).toBe('EINVAL');
    expect(ingressIds()).toEqual([p1.id]);
  } finally {
    pinned.detach();
    pinned.unpin();
    pinned.close();
  }
});

it('never leaves the hook without a program while swapping under a ping flood', async () => {
  const progs = [one.program('fx_count_tc'), two.program('fx_count_tc')];
  const link = inNetns(b.path, () => attachTc(progs[0], ifB, 'ingress'));
  const flood = spawn('ip', ['netns', 'exec', a.name, 'ping', '-f', '-c', '4000', '-W', '2', ipB], { stdio: ['ignore', 'pipe', 'ignore'] });
  let summary = '';
  flood.stdout!.on('data', (d: Buffer) => (summary += d.toString()));
  onCleanup(() => {
    if (flood.exitCode === null && flood.signalCode === null) flood.kill('SIGKILL');
  });
  const c0 = count(one) + count(two);
  const done = new Promise<void>((r) => flood.once('exit', () => r()));
  let swaps = 0;
  try {
    while (flood.exitCode === null && flood.signalCode === null) {
      link.update(progs[++swaps % 2]);
      await new Promise((r) => setImmediate(r));
    }
    await done;
  } finally {
    link.detach();
    link.close();
  }
  expect(flood.exitCode).toBe(0);
  expect(swaps).toBeGreaterThan(10);
  // Every answered request went through the hook; one that slipped through a moment without a
  // program would be answered yet counted by neither.
  const answered = Number(/(\d+) received/.exec(summary)?.[1]);
  expect(answered, summary).toBeGreaterThan(3000);
  expect(count(one) + count(two) - c0).toBeGreaterThanOrEqual(answered);
  expect(count(one)).toBeGreaterThan(0);
  expect(count(two)).toBeGreaterThan(0);
});

it('refuses what is no BPF link, and a closed one', () => {
  const prog = one.program('fx_count_tc');
  const tc = inNetns(b.path, () => attachTc(prog, ifB, 'egress', { mode: 'tc' }));
  try {
    const e = caught(() => tc.update(two.program('fx_count_tc')));
    expect(e.code).toBe('EINVAL');
    expect(e.message).toMatch(/tc filter is not a BPF link/);
  } finally {
    tc.detach();
    tc.close();
  }
  const link = inNetns(b.path, () => attachTc(prog, ifB, 'egress'));
  link.close();
  expect(caught(() => link.update(two.program('fx_count_tc'))).message).toMatch(/closed/);
  const xdp = inNetns(b.path, () => attachXdp(one.program('fx_count_xdp'), ifB, 'generic'));
  try {
    xdp.update(two.program('fx_count_xdp'));
    expect(inNetns(b.path, () => listAttached(ifB)).xdp?.id).toBe(two.program('fx_count_xdp').id);
  } finally {
    xdp.close();
  }
});
