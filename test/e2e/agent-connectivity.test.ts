// Real traffic between pods created through kelp-cni: pod ↔ pod, node ↔ pod, pod → outside
// with masquerade; then 30 concurrent ADDs and DELs (checklist items 28, 33, 37, 86).
import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox, SandboxPod } from '../../src/sandbox';
import {
  Attachment, NETWORK, add, del, endpointMap, expectSilentSuccess, hostIfnameFor, leases, linkNames, newAttachment, nodeTrace, ping,
  pinnedLinks, records, resultIp, startEchoServer, startSandbox, stopServer, tcpAsk,
} from '../support/e2e';

const PORT = 8080;
let sb: Sandbox;
let a: SandboxPod;
let b: SandboxPod;
const servers: ChildProcess[] = [];

beforeAll(async () => {
  sb = await startSandbox('e2t');
  a = await sb.addPod('a', 'traffic');
  b = await sb.addPod('b', 'traffic');
  for (const ns of [a.netns, b.netns, sb.outside!]) servers.push(await startEchoServer(sb, ns, PORT));
});

afterAll(async () => {
  servers.forEach(stopServer);
  await sb?.stop();
});

describe('traffic', () => {
  it('pod ↔ pod: ping both ways', () => {
    expect(ping(sb, a.netns, b.ip)).toBe(true);
    expect(ping(sb, b.netns, a.ip)).toBe(true);
  });

  it('pod ↔ pod: TCP both ways, the server sees the other pod’s own address (no NAT)', () => {
    expect(tcpAsk(sb, a.netns, b.ip, PORT)).toBe(a.ip);
    expect(tcpAsk(sb, b.netns, a.ip, PORT)).toBe(b.ip);
  });

  it('node ↔ pod: ping and TCP', () => {
    expect(ping(sb, sb.node, a.ip)).toBe(true);
    expect(ping(sb, a.netns, sb.nodeIp)).toBe(true);
    expect(tcpAsk(sb, sb.node, a.ip, PORT)).toBe(sb.nodeIp);
  });

  it('pod → outside: TCP leaves with the node’s uplink address (masquerade); ping gets its reply', () => {
    expect(tcpAsk(sb, a.netns, sb.outsideIp, PORT)).toBe(sb.nodeIp);
    expect(tcpAsk(sb, b.netns, sb.outsideIp, PORT)).toBe(sb.nodeIp);
    expect(ping(sb, a.netns, sb.outsideIp)).toBe(true);
  });

  it('after DEL of a pod, nothing reaches its old address', async () => {
    const c = await sb.addPod('c', 'traffic');
    expect(ping(sb, a.netns, c.ip)).toBe(true);
    expectSilentSuccess(await sb.delPod(c));
    expect(ping(sb, a.netns, c.ip)).toBe(false);
  });
});

describe('30 concurrent ADDs, then 30 concurrent DELs', () => {
  const N = 30;
  const pods: Attachment[] = [];
  let before: ReturnType<typeof nodeTrace>;
  let ips: string[] = [];

  it('ADD: 30 successes, 30 distinct addresses, endpoint ids, veths, leases and map entries', async () => {
    before = nodeTrace(sb);
    for (let i = 0; i < N; i++) pods.push(newAttachment(sb));
    const results = await Promise.all(pods.map((p, i) => add(sb, p, { args: `IgnoreUnknown=1;K8S_POD_NAMESPACE=conc;K8S_POD_NAME=p${i}` })));
    for (const r of results) expect(r.code, r.stdout + r.stderr).toBe(0);
    ips = results.map((r) => resultIp(r.json!));
    expect(new Set(ips).size).toBe(N);
    for (const ip of ips) expect(ip).toMatch(/^10\.244\.0\.\d+$/);

    const recs = records(sb).filter((r) => pods.some((p) => p.containerId === r.containerId));
    expect(recs).toHaveLength(N);
    expect(new Set(recs.map((r) => r.id)).size).toBe(N);
    const map = endpointMap(sb);
    const links = linkNames(sb.node);
    const leased = leases(sb);
    for (const [i, p] of pods.entries()) {
      expect(links).toContain(hostIfnameFor(NETWORK, p.containerId, 'eth0'));
      expect(leased[ips[i]]).toBe(`${p.containerId}/eth0`);
      const rec = recs.find((r) => r.containerId === p.containerId)!;
      expect(map.find((e) => e.key.ip4 === ips[i])?.value).toMatchObject({ ifindex: rec.hostIfindex, epId: rec.id });
    }
  });

  it('every pod pings the first one', () => {
    const failed = pods.slice(1).filter((p) => !ping(sb, p.netns, ips[0]));
    expect(failed.map((p) => p.netns)).toEqual([]);
  });

  it('DEL: 30 successes and the node is as before the ADDs', async () => {
    const results = await Promise.all(pods.map((p) => del(sb, p)));
    for (const r of results) expectSilentSuccess(r);
    expect(nodeTrace(sb)).toEqual(before);
    expect(pinnedLinks(sb).filter((l) => pods.some((p) => l.startsWith(hostIfnameFor(NETWORK, p.containerId, 'eth0'))))).toEqual([]);
    for (const p of pods) expect(linkNames(p.netns)).toEqual(['lo']);
    // The first pods are untouched.
    expect(ping(sb, a.netns, b.ip)).toBe(true);
  });
});
