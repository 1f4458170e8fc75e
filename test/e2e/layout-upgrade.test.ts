// A layout upgrade under traffic. The agent as built (kelp_ct4 and kelp_snat4 in layout 1) runs
// pods with TCP streams (pod -> pod, and pod -> outside through masquerade) and 100-per-second
// pings; it is stopped and replaced by an agent built one layout ahead (the same kelp with the
// objects of build/bpf/layout-v2/, where both structs gained a leading field). Every byte arrives
// in order on the same connection, no ping goes unanswered, the maps of the new layout are pinned
// at their versioned paths, the old pins are gone, and the masqueraded stream's conntrack entry
// and NAT port are the very ones from before (its creation time kept), read in layout 2 both
// from the pin and through the new agent's `kelp map dump`.
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { inNetns, listAttached, openPinnedLink, openPinnedMap } from '../../src/bpf';
import { ct4Entry, CtDir, IpProto, nat4Entry, NatDir, tuple4 } from '../../src/datapath/nat';
import type { Ct4Entry, Tuple4 } from '../../src/datapath/nat';
import type { StructCodec } from '../../src/datapath/structs';
import { ct4EntryV2, nat4EntryV2 } from '../../src/datapath/maps/test-layouts';
import { Sandbox } from '../../src/sandbox';
import { agentPid, killAll, nodeState, prefixFor, sleep, startPing, startStream, stopAndExpectNoLoss, waitReady } from '../support/restart';

const ROOT = path.join(__dirname, '../..');
let sb: Sandbox;
let nextBuild: string;

/**
 * kelp as built, but with the BPF objects of layout 2: what a node gets when the agent's image
 * is replaced by a newer one. A copy of the runtime tree (dist, bin, addon), objects swapped.
 */
function buildOneLayoutAhead(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'kelp-layout-v2-'));
  cpSync(path.join(ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true });
  for (const f of ['bin/kelp', 'bin/kelp-cni', 'package.json', 'build/Release/kelp.node']) {
    mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    cpSync(path.join(ROOT, f), path.join(dir, f));
  }
  mkdirSync(path.join(dir, 'build/bpf'));
  // overlay.o: the agent's default VXLAN mode loads it (it shares lxc.o's maps).
  for (const o of ['lxc.o', 'host.o', 'overlay.o']) cpSync(path.join(ROOT, 'build/bpf/layout-v2', o), path.join(dir, 'build/bpf', o));
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

/** Starts the agent of another build in the sandbox's node, with the sandbox's flags. */
async function startAgentFrom(build: string): Promise<void> {
  const child = spawn('ip', ['netns', 'exec', sb.node, process.execPath, path.join(build, 'bin/kelp'), ...sb.agentArgs()], { stdio: ['ignore', 'ignore', 'ignore'] });
  sb.agent = child;
  await waitReady(sb);
}

beforeAll(async () => {
  nextBuild = buildOneLayoutAhead();
  sb = await Sandbox.start({ prefix: prefixFor('lu'), logLevel: 'info' });
});

afterAll(async () => {
  killAll();
  await sb?.stop();
  if (nextBuild) rmSync(nextBuild, { recursive: true, force: true });
});

const pin = (name: string) => path.join(sb.bpfRoot, name);
const pinNames = () => readdirSync(sb.bpfRoot).filter((n) => n.startsWith('kelp_')).sort();

/** The conntrack entries of one pinned map, decoded with `codec`. */
function conntrack(map: string, codec: StructCodec<Ct4Entry>): Array<{ key: Tuple4; value: Ct4Entry }> {
  const m = openPinnedMap(pin(map));
  try {
    return m.lookupBatch().map(([k, v]) => ({ key: tuple4.decode(k), value: codec.decode(v) }));
  } finally {
    m.close();
  }
}

function lookup(map: string, key: Buffer): Buffer | undefined {
  const m = openPinnedMap(pin(map));
  try {
    return m.lookup(key);
  } finally {
    m.close();
  }
}

/** Link id, program id and device of the uplink's pinned links. */
function uplinkLinks(): Record<string, { id: number; progId: number; ifindex?: number }> {
  const out: Record<string, { id: number; progId: number; ifindex?: number }> = {};
  for (const name of readdirSync(path.join(sb.bpfRoot, 'links')).filter((n) => n.startsWith('uplink-'))) {
    const link = openPinnedLink(path.join(sb.bpfRoot, 'links', name));
    try {
      const { id, progId, ifindex } = link.info();
      out[name] = { id, progId, ifindex };
    } finally {
      link.close();
    }
  }
  return out;
}

it('replaces an agent of layout 1 by one of layout 2 under traffic: no packet lost, conntrack and NAT carried over, old pins removed', async () => {
  const a = await sb.addPod('a');
  const b = await sb.addPod('b');
  const c = await sb.addPod('c');
  const stateBefore = nodeState(sb);
  // Every pin but the two maps layout 2 changes stays the same throughout (whatever maps the
  // build has, these among them).
  const pinsV1 = pinNames();
  expect(pinsV1).toEqual(expect.arrayContaining(['kelp_endpoint_cache', 'kelp_endpoints', 'kelp_events', 'kelp_metrics', 'kelp_nomasq4_v2', 'kelp_ct4', 'kelp_snat4']));
  const unchanged = pinsV1.filter((n) => n !== 'kelp_ct4' && n !== 'kelp_snat4');

  const podStream = await startStream(b.netns, a.netns, b.ip, 5001);
  const outStream = await startStream(sb.outside!, c.netns, sb.outsideIp, 5002);
  const podPing = await startPing(a.netns, b.ip);
  const outPing = await startPing(c.netns, sb.outsideIp);
  await sleep(1000);

  // The masqueraded stream as the layout-1 agent left it: its flow and its NAT port.
  const isStream = (t: Tuple4) => t.saddr === c.ip && t.daddr === sb.outsideIp && t.dport === 5002 && t.proto === IpProto.TCP && t.dir === CtDir.EGRESS;
  const before = conntrack('kelp_ct4', ct4Entry).filter((e) => isStream(e.key));
  expect(before).toHaveLength(1);
  const flow = before[0];
  const natKey = tuple4.encode({ ...flow.key, dir: NatDir.EGRESS });
  const natBefore = nat4Entry.decode(lookup('kelp_snat4', natKey)!);
  const linksBefore = uplinkLinks();
  expect(Object.keys(linksBefore).sort()).toEqual(['uplink-up0-egress', 'uplink-up0-ingress']);

  const oldPid = agentPid(sb);
  await sb.stopAgent();
  await startAgentFrom(nextBuild);
  expect(agentPid(sb)).not.toBe(oldPid);
  await sleep(1500);

  // First the maps, while the streams still run (a flow that lost its NAT entry would leave
  // its stream hanging, not failing). Layout 2's pins beside the unchanged ones; layout 1's gone.
  expect(pinNames()).toEqual([...unchanged, 'kelp_ct4_v2', 'kelp_snat4_v2'].sort());
  expect(existsSync(pin('kelp_ct4'))).toBe(false);
  expect(existsSync(pin('kelp_snat4'))).toBe(false);
  // The same flow in the new map: carried over (a flow the new programs had to start afresh
  // would have a new creation time, and a new NAT port the peer would reset).
  const after = conntrack('kelp_ct4_v2', ct4EntryV2).filter((e) => isStream(e.key));
  expect(after).toHaveLength(1);
  expect(after[0].key).toEqual(flow.key);
  expect(after[0].value.created).toBe(flow.value.created);
  expect(after[0].value.txPackets).toBeGreaterThan(flow.value.txPackets);
  expect(nat4EntryV2.decode(lookup('kelp_snat4_v2', natKey)!)).toEqual(natBefore);
  // The new agent reads its maps in layout 2.
  const dump = JSON.parse(sb.kelp('map', 'dump', 'kelp_ct4', '-o', 'json')) as { entries: Array<{ key: Tuple4; value: Record<string, string> }> };
  const row = dump.entries.find((e) => isStream(e.key));
  expect(row?.value.created).toBe(String(flow.value.created));
  const log = sb.agentLog();
  expect(log).toMatch(/"map":"kelp_ct4","from":\[1\],"to":2,"migrate":"convert"/);
  expect(log).toMatch(/"map":"kelp_snat4".*"msg":"old layout retired after the programs were swapped"/);

  const [, out] = await stopAndExpectNoLoss([podStream, outStream], [podPing, outPing]);
  expect(out.peer).toBe(sb.nodeIp);

  // The uplink kept its links, now running the new programs.
  const linksAfter = uplinkLinks();
  for (const [name, l] of Object.entries(linksAfter)) {
    expect(l.id, name).toBe(linksBefore[name].id);
    expect(l.progId, name).not.toBe(linksBefore[name].progId);
  }
  const attached = inNetns(`/var/run/netns/${sb.node}`, () => listAttached(linksAfter['uplink-up0-egress'].ifindex!));
  expect(attached.tcx.egress.map((p) => p.id)).toEqual([linksAfter['uplink-up0-egress'].progId]);

  expect(nodeState(sb)).toEqual(stateBefore);
  // The upgraded agent serves ADD and DEL, and masquerades new flows in layout 2.
  const d = await sb.addPod('d');
  expect(sb.exec(d.netns, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', a.ip])).toMatch(/3 received/);
  expect(sb.exec(d.netns, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', sb.outsideIp])).toMatch(/3 received/);
  expect(conntrack('kelp_ct4_v2', ct4EntryV2).some((e) => e.key.saddr === d.ip && e.key.proto === IpProto.ICMP)).toBe(true);
  expect((await sb.delPod(d)).code).toBe(0);
  expect(nodeState(sb)).toEqual(stateBefore);
});
