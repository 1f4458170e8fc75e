// 1,000 ADD/DEL cycles through kelp-cni, the way runtimes drive it (a failed ADD is followed by
// DEL; a failed DEL is retried): concurrent ones, ones whose netns is deleted before the DEL,
// 100 ADDs at once, and ones with the agent SIGKILLed and restarted while they run. Afterwards
// nothing is left: no kelp veth, lease, kelp_endpoints entry, pod pin, record, queued DEL or
// kelp route, and the agent holds as many file descriptors as before the cycles.
import { execFile } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { CniCall, Sandbox, sh } from '../../src/sandbox';
import { agentPid, extraFds, fdCount, fdTargets, killAll, nodeState, prefixFor, sleep, waitReady } from '../support/restart';

let sb: Sandbox;
const netnses = new Set<string>();
let nsCount = 0;
let cidCount = 0;

beforeAll(async () => {
  sb = await Sandbox.start({ prefix: prefixFor('st'), logLevel: 'warn' });
});

afterAll(async () => {
  killAll();
  removeNetns([...netnses]);
  await sb?.stop();
});

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => execFile(cmd, args, (err, _out, stderr) => (err ? reject(new Error(`${cmd} ${args.join(' ')}: ${stderr}`)) : resolve())));
}

/** Fresh pod namespaces, created in one `ip -batch` (one process for all of them). */
function createNetns(n: number): string[] {
  const names = Array.from({ length: n }, () => `${sb.opts.prefix}-s${++nsCount}`);
  names.forEach((name) => netnses.add(name));
  sh('ip', ['-batch', '-'], { input: names.map((name) => `netns add ${name}\n`).join('') });
  return names;
}

function removeNetns(names: string[]): void {
  const live = names.filter((n) => netnses.delete(n));
  if (live.length) sh('ip', ['-force', '-batch', '-'], { input: live.map((n) => `netns del ${n}\n`).join(''), allowFail: true });
}

const nsPath = (name: string) => `/var/run/netns/${name}`;
const newCid = () => `stress${++cidCount}`.padEnd(64, '0');

function cni(command: string, cid: string, netns: string): Promise<CniCall> {
  return sb.cni(command, { CNI_CONTAINERID: cid, CNI_NETNS: netns, CNI_IFNAME: 'eth0' });
}

/** DEL until it succeeds, as a runtime does; it must succeed within a few tries. */
async function delUntilDone(cid: string, netns: string): Promise<void> {
  let last: CniCall | undefined;
  for (let i = 0; i < 50; i++) {
    last = await cni('DEL', cid, netns);
    if (last.code === 0) return;
    await sleep(100);
  }
  throw new Error(`DEL ${cid} kept failing: ${last?.stdout} ${last?.stderr}`);
}

interface CycleOptions {
  /** Delete the pod netns between ADD and DEL (the runtime tore the sandbox down first). */
  netnsGoneFirst?: boolean;
  /** DEL with CNI_NETNS empty, as runtimes do once the netns is gone. */
  emptyNetnsOnDel?: boolean;
  /** DEL twice (containerd sends DEL from StopPodSandbox and again from RemovePodSandbox). */
  twice?: boolean;
}

/** One pod's life: ADD, then DEL (whatever ADD answered). Returns the ADD answer. */
async function cycle(netns: string, o: CycleOptions = {}): Promise<CniCall> {
  const cid = newCid();
  const add = await cni('ADD', cid, nsPath(netns));
  if (o.netnsGoneFirst) {
    netnses.delete(netns);
    await run('ip', ['netns', 'del', netns]);
  }
  const delNs = o.emptyNetnsOnDel ? '' : nsPath(netns);
  await delUntilDone(cid, delNs);
  if (o.twice) await delUntilDone(cid, delNs);
  return add;
}

/** fn over 0..n-1 with at most `limit` in flight. */
async function pool<T>(n: number, limit: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, limit) }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await fn(i);
      }
    }),
  );
  return out;
}

function expectAdded(adds: CniCall[], what: string): void {
  const failed = adds.filter((a) => a.code !== 0);
  expect(failed.map((f) => f.stdout).slice(0, 5), `${failed.length} failed ADDs (${what})`).toEqual([]);
}

it('leaks nothing over 1,000 ADD/DEL cycles, agent kills included', { timeout: 600_000 }, async () => {
  let cycles = 0;

  // 300 cycles, 16 at a time, with the agent SIGKILLed and restarted three times among them.
  {
    const names = createNetns(300);
    let done = 0;
    let over = false;
    const killer = (async () => {
      for (const at of [60, 140, 220]) {
        while (done < at && !over) await sleep(10);
        if (over) return;
        await sb.stopAgent(true);
        await sleep(300);
        await sb.startAgent();
      }
    })();
    try {
      await pool(300, 16, async (i) => {
        await cycle(names[i], { netnsGoneFirst: i % 5 === 0 });
        done += 1;
      });
    } finally {
      over = true;
      await killer;
    }
    removeNetns(names);
    cycles += 300;
  }
  await waitReady(sb);

  // The restarted agent's baseline, after it has served every kind of request once.
  {
    const names = createNetns(8);
    expectAdded(await pool(8, 8, (i) => cycle(names[i], { netnsGoneFirst: i % 2 === 0, twice: i % 4 === 1 })), 'warm-up');
    removeNetns(names);
    cycles += 8;
  }
  const pid = agentPid(sb);
  const baseline = fdCount(pid);
  const baselineTargets = fdTargets(pid);

  // 400 cycles, 16 at a time; every tenth pod is DELeted twice.
  {
    const names = createNetns(400);
    expectAdded(await pool(400, 16, (i) => cycle(names[i], { twice: i % 10 === 0 })), 'concurrent');
    removeNetns(names);
    cycles += 400;
  }

  // 192 cycles whose netns is gone before the DEL, half of them DELeted with CNI_NETNS empty.
  {
    const names = createNetns(192);
    expectAdded(await pool(192, 16, (i) => cycle(names[i], { netnsGoneFirst: true, emptyNetnsOnDel: i % 2 === 0 })), 'netns gone');
    cycles += 192;
  }

  // 100 ADDs at once: 100 distinct addresses. Then 100 DELs at once.
  {
    const names = createNetns(100);
    const cids = names.map(() => newCid());
    const adds = await Promise.all(names.map((n, i) => cni('ADD', cids[i], nsPath(n))));
    expectAdded(adds, '100 at once');
    const ips = adds.map((a) => (a.json!.ips as Array<{ address: string }>)[0].address);
    expect(new Set(ips).size).toBe(100);
    const dels = await Promise.all(names.map((n, i) => cni('DEL', cids[i], nsPath(n))));
    expect(dels.filter((d) => d.code !== 0).map((d) => d.stdout)).toEqual([]);
    removeNetns(names);
    cycles += 100;
  }
  expect(cycles).toBeGreaterThanOrEqual(1000);

  // DELs queued during the kills are replayed by the agent's periodic sweep at the latest.
  for (let i = 0; i < 200 && nodeState(sb).queue.length > 0; i++) await sleep(100);
  expect(nodeState(sb)).toEqual({
    veths: [],
    // The overlay's links on kelp_vxlan (VXLAN mode, the default) and the uplink's.
    pins: ['overlay-kelp_vxlan-egress', 'overlay-kelp_vxlan-ingress', 'uplink-up0-egress', 'uplink-up0-ingress'],
    endpoints: [],
    leases: [],
    records: [],
    queue: [],
    routes: [],
  });
  expect(agentPid(sb)).toBe(pid);
  // Handles closed by the garbage collector would come back late: give them a moment, no more.
  for (let i = 0; i < 50 && fdCount(pid) > baseline; i++) await sleep(100);
  expect(extraFds(baselineTargets, fdTargets(pid)), `fds: ${fdCount(pid)}, baseline ${baseline}`).toEqual([]);
  // Fewer is fine (the baseline may have caught a connection still closing); more is a leak.
  expect(fdCount(pid)).toBeLessThanOrEqual(baseline);
  // And it still serves.
  expect((await sb.cni('STATUS', {}, sb.pluginConfig({ cniVersion: '1.1.0' }))).code).toBe(0);
});
