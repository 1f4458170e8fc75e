// SIGKILL of the agent in the middle of traffic. Established TCP streams (pod → pod, and pod →
// outside through masquerade) and 100-per-second ping streams run through the kill, a spell
// with no agent at all, and the restart: every byte arrives, in order, on the same connection,
// and no ping goes unanswered. The restarted agent swaps its new program instances into the pod
// veths' clsact filters and the uplink's and the VXLAN device's pinned links (same link ids:
// never detached and re-attached) in place.
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { inNetns, listAttached, openPinnedLink, queryTcFilter } from '../../src/bpf';
import { POD_FILTER } from '../../src/datapath/loader';
import { hostIfnameFor } from '../../src/endpoint/state';
import { Sandbox, SandboxPod, sh } from '../../src/sandbox';
import { agentPid, killAll, nodeState, prefixFor, sleep, startPing, startStream, stopAndExpectNoLoss, waitReady } from '../support/restart';

let sb: Sandbox;

beforeAll(async () => {
  sb = await Sandbox.start({ prefix: prefixFor('rt'), logLevel: 'info' });
});

afterAll(async () => {
  killAll();
  await sb?.stop();
});

/** Link id and program id of every pin under links/. */
function pinnedLinks(): Record<string, { id: number; progId: number; ifindex?: number }> {
  const dir = path.join(sb.bpfRoot, 'links');
  const out: Record<string, { id: number; progId: number; ifindex?: number }> = {};
  for (const name of readdirSync(dir)) {
    const link = openPinnedLink(path.join(dir, name));
    try {
      const { id, progId, ifindex } = link.info();
      out[name] = { id, progId, ifindex };
    } finally {
      link.close();
    }
  }
  return out;
}

/** Program ids of kelp's clsact filters on each pod's host veth, as `ifname-direction`. */
function podFilters(pods: SandboxPod[]): Record<string, number | undefined> {
  const out: Record<string, number | undefined> = {};
  for (const p of pods) {
    const ifname = hostIfnameFor('kelp', p.containerId, p.ifname);
    const ifindex = (JSON.parse(sh('ip', ['-n', sb.node, '-j', 'link', 'show', 'dev', ifname])) as Array<{ ifindex: number }>)[0].ifindex;
    for (const dir of ['ingress', 'egress'] as const) {
      out[`${ifname}-${dir}`] = inNetns(`/var/run/netns/${sb.node}`, () => queryTcFilter(ifindex, dir, POD_FILTER))?.id;
    }
  }
  return out;
}

it('keeps TCP streams and pings flowing through SIGKILL, downtime and restart', async () => {
  // a's network hooks with pinned tcx links (podHook "tcx"), b's and c's with clsact filters.
  const a = await sb.addPod('a', 'default', sb.pluginConfig({ podHook: 'tcx' }));
  const ha = hostIfnameFor('kelp', a.containerId, a.ifname);
  const b = await sb.addPod('b');
  const c = await sb.addPod('c');
  const stateBefore = nodeState(sb);
  const linksBefore = pinnedLinks();
  // The agent runs in VXLAN mode (the default): its overlay programs are on kelp_vxlan.
  expect(Object.keys(linksBefore).sort()).toEqual([`${ha}-egress`, `${ha}-ingress`, 'overlay-kelp_vxlan-egress', 'overlay-kelp_vxlan-ingress', 'uplink-up0-egress', 'uplink-up0-ingress']);
  expect(Object.values(podFilters([a]))).toEqual([undefined, undefined]);
  const filtersBefore = podFilters([b, c]);
  expect(Object.values(filtersBefore).every((id) => id !== undefined)).toBe(true);

  const podStream = await startStream(b.netns, a.netns, b.ip, 5001);
  const outStream = await startStream(sb.outside!, c.netns, sb.outsideIp, 5002);
  const podPing = await startPing(a.netns, b.ip);
  const outPing = await startPing(c.netns, sb.outsideIp);
  await sleep(1000);

  const oldPid = agentPid(sb);
  await sb.stopAgent(true);
  const answeredBeforeDown = podPing.received() + outPing.received();
  await sleep(1500);
  // Nothing in user space is serving these pods now: the pinned programs and maps do.
  expect(podPing.received() + outPing.received()).toBeGreaterThan(answeredBeforeDown);

  await sb.startAgent();
  await waitReady(sb);
  expect(agentPid(sb)).not.toBe(oldPid);
  await sleep(1500);

  const [pod, out] = await stopAndExpectNoLoss([podStream, outStream], [podPing, outPing]);
  expect(pod.peer).toBe(a.ip);
  // Through masquerade: the outside saw the node's address, before and after the restart alike.
  expect(out.peer).toBe(sb.nodeIp);

  // Same links (ids), each now running the restarted agent's one program instance per hook.
  const linksAfter = pinnedLinks();
  expect(Object.keys(linksAfter).sort()).toEqual(Object.keys(linksBefore).sort());
  for (const [name, l] of Object.entries(linksAfter)) {
    expect(l.id, name).toBe(linksBefore[name].id);
    expect(l.ifindex, name).toBe(linksBefore[name].ifindex);
    expect(l.progId, name).not.toBe(linksBefore[name].progId);
  }
  // Every pod filter runs a new program: one instance per direction, shared by all pods.
  const filtersAfter = podFilters([b, c]);
  for (const [name, id] of Object.entries(filtersAfter)) {
    expect(id, name).toBeDefined();
    expect(id, name).not.toBe(filtersBefore[name]);
  }
  const progOf = (suffix: string) => new Set(Object.entries(filtersAfter).filter(([n]) => n.endsWith(suffix)).map(([, id]) => id));
  expect(progOf('-ingress').size).toBe(1);
  expect(progOf('-egress').size).toBe(1);
  expect(progOf('-ingress')).not.toEqual(progOf('-egress'));
  // The tcx pod's links run the same instances.
  expect(progOf('-ingress')).toEqual(new Set([linksAfter[`${ha}-ingress`].progId]));
  expect(progOf('-egress')).toEqual(new Set([linksAfter[`${ha}-egress`].progId]));
  expect(Object.values(podFilters([a]))).toEqual([undefined, undefined]);
  const uplink = linksAfter['uplink-up0-egress'];
  const attached = inNetns(`/var/run/netns/${sb.node}`, () => listAttached(uplink.ifindex!));
  expect(attached.tcx.egress.map((p) => p.id)).toEqual([uplink.progId]);
  expect(attached.tcx.ingress.map((p) => p.id)).toEqual([linksAfter['uplink-up0-ingress'].progId]);

  expect(nodeState(sb)).toEqual(stateBefore);

  // The restarted agent serves ADD and DEL.
  const d = await sb.addPod('d');
  expect(sb.exec(d.netns, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', a.ip])).toMatch(/3 received/);
  expect(sb.exec(d.netns, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', sb.outsideIp])).toMatch(/3 received/);
  expect((await sb.delPod(d)).code).toBe(0);
  expect(nodeState(sb)).toEqual(stateBefore);
});
