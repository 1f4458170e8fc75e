// Several nodes (issue 13): three nodes × three pods on one machine (test/support/cluster.ts), in
// both routing modes — VXLAN with the nodes fed by the Kubernetes API, native routing with
// manifests (standalone) — so each source mode carries one routing mode end to end. Real pods
// behind the real CNI, real packets over a shared underlay bridge:
//   - the connectivity matrix: TCP bytes both ways between every pair of pods, the server seeing
//     the client pod's own address (no masquerade between pod CIDRs); each node reaches every
//     remote pod; pod → outside still masqueraded on the pod's own node;
//   - MTU: 1450 on every pod interface in VXLAN mode (1500 natively), a 1,400-byte DF payload
//     crosses nodes;
//   - node loss and return: the node's Node object gone, its routes and kelp_tunnel4 entries go on
//     the other nodes while their pods keep talking; back, it is reached again with no agent
//     restarted;
//   - an agent restarted (SIGKILL) on either end of a cross-node TCP flow and a ping: nothing lost.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, ClusterNode, ClusterPod, OUTSIDE_IP, UPLINK } from '../support/cluster';
import { hostIfnameFor } from '../support/e2e';
import { until } from '../support/kelp-cli';
import { agentPid, killAll, sleep, startPing, startStream, stopAndExpectNoLoss, waitReady } from '../support/restart';
import { VXLAN_DEVICE } from '../../src/datapath/node-types';
import { sh } from '../../src/sandbox';
import type { Reply } from '../support/services';

const NS = 'mn';
const PORT = 8080;

const SETUPS = [
  { mode: 'vxlan', source: 'kubernetes', tag: 'mnv' },
  { mode: 'native', source: 'standalone', tag: 'mnn' },
] as const;

function ask(from: { peer?: ClusterPod['peer'] }, host: string, timeoutMs = 2000): Promise<Reply> {
  return from.peer!.request({ op: 'ask', proto: 'tcp', host, port: PORT, timeoutMs }).result;
}

/** The MTU of `dev` in namespace `netns`. */
function mtu(netns: string, dev: string): number {
  return (JSON.parse(sh('ip', ['-n', netns, '-j', 'link', 'show', 'dev', dev])) as Array<{ mtu: number }>)[0].mtu;
}

describe.each(SETUPS)('$mode routing, $source source', ({ mode, source, tag }) => {
  let c: Cluster;

  beforeAll(async () => {
    c = await Cluster.start({ tag, nodes: 3, mode, source, objects: [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } }] });
    await c.addPods(c.nodes.flatMap((n) => ['a', 'b', 'c'].map((p) => ({ node: n, name: `${p}${n.index}`, namespace: NS, labels: { app: p } }))));
    await c.meshed();
    await c.startPeers();
  }, 180_000);

  afterAll(async () => {
    killAll();
    await c?.stop();
  });

  /** Every pod of `froms` to every other pod of `tos` (on another node, unless `sameNode`): the problems, '' ones left out. */
  async function matrix(froms: ClusterPod[], tos: ClusterPod[]): Promise<string[]> {
    const probes = froms.flatMap((a) => tos.filter((b) => b !== a).map((b) => ({ a, b })));
    const replies = await Promise.all(probes.map(({ a, b }) => ask(a, b.ip)));
    return probes.flatMap(({ a, b }, i) => {
      const r = replies[i];
      if (!r.ok) return [`${a.name}@${a.node.index} -> ${b.name}@${b.node.index} (${b.ip}): ${r.error}`];
      const seen = r.answer!.from.split(':')[0];
      if (r.answer!.who !== b.name) return [`${a.name} -> ${b.ip}: answered by ${r.answer!.who}`];
      if (seen !== a.ip) return [`${a.name}@${a.node.index} -> ${b.name}@${b.node.index}: the server saw ${seen}, not the client's own ${a.ip}`];
      return [];
    });
  }

  it('each node routes the others\' pod CIDRs as the mode says, and kelp_tunnel4 maps each to its node', async () => {
    for (const n of c.nodes) {
      const others = c.nodes.filter((o) => o !== n);
      for (const o of others) expect(c.routeProblem(n, o)).toBe('');
      const dump = JSON.stringify(await n.tunnelEntries());
      for (const o of others) expect(dump, `${n.name} kelp_tunnel4: ${dump}`).toContain(o.address);
      expect(dump, `${n.name} kelp_tunnel4 holds no entry for itself: ${dump}`).not.toContain(`"${n.address}"`);
    }
    if (mode === 'vxlan') {
      for (const n of c.nodes) {
        const [link] = JSON.parse(sh('ip', ['-n', n.name, '-j', '-d', 'link', 'show', 'dev', VXLAN_DEVICE])) as Array<{ mtu: number; linkinfo: { info_kind: string; info_data: Record<string, unknown> } }>;
        expect(link.linkinfo.info_kind).toBe('vxlan');
        // One collect_md device per node, on the seeds' defaults: no per-peer devices.
        expect(link.linkinfo.info_data, JSON.stringify(link.linkinfo.info_data)).toMatchObject({ external: true, port: 8472 });
        expect(link.mtu).toBe(1450);
      }
    } else {
      for (const n of c.nodes) expect(sh('ip', ['-n', n.name, '-o', 'link', 'show', 'type', 'vxlan']).trim()).toBe('');
    }
  });

  it('connectivity matrix: every pod reaches every other pod over TCP, the server seeing the client pod\'s own address', async () => {
    expect((await matrix(c.pods, c.pods)).join('\n')).toBe('');
  });

  it('each node reaches every pod of the other nodes', async () => {
    const problems: string[] = [];
    for (const n of c.nodes) {
      const remote = c.pods.filter((p) => p.node !== n);
      const replies = await Promise.all(remote.map((p) => ask(n, p.ip)));
      replies.forEach((r, i) => {
        if (!r.ok || r.answer!.who !== remote[i].name) problems.push(`${n.name} -> ${remote[i].name} (${remote[i].ip}): ${r.ok ? r.answer!.who : r.error}`);
      });
    }
    expect(problems.join('\n')).toBe('');
  });

  it('pod -> outside is masqueraded on the pod\'s own node', async () => {
    const replies = await Promise.all(c.pods.map((p) => ask(p, OUTSIDE_IP)));
    const seen = replies.map((r, i) => `${c.pods[i].name}: ${r.ok ? r.answer!.from.split(':')[0] : r.error}`);
    expect(seen).toEqual(c.pods.map((p) => `${p.name}: ${p.node.address}`));
  });

  it(`pod MTU ${mode === 'vxlan' ? '1450 (the underlay\'s 1500 less VXLAN\'s 50)' : '1500'} on both ends of every pod veth; a 1,400-byte DF payload crosses nodes`, () => {
    for (const p of c.pods) {
      expect(mtu(p.netns, 'eth0'), `${p.name} eth0`).toBe(c.podMtu);
      expect(mtu(p.node.name, hostIfnameFor('kelp', p.sandbox.containerId, 'eth0')), `${p.name} host veth`).toBe(c.podMtu);
    }
    for (const n of c.nodes) expect(mtu(n.name, UPLINK)).toBe(1500);
    const a1 = c.pod(NS, 'a1');
    for (const b of [c.pod(NS, 'b2'), c.pod(NS, 'c3')]) {
      const out = sh('ip', ['netns', 'exec', a1.netns, 'ping', '-c', '2', '-i', '0.2', '-W', '2', '-M', 'do', '-s', '1400', b.ip], { allowFail: true });
      expect(out, `a1 -> ${b.name}: ${out}`).toMatch(/2 received/);
    }
  });

  it('node loss and return: node 3\'s routes and tunnel entries go on the others, which keep talking; back, it is reached with no agent restarted', async () => {
    const [n1, n2, n3] = c.nodes;
    const pids = c.nodes.map((n) => agentPid(n.sb));
    const gone = async (n: ClusterNode) => !n.route(n3.podCidr) && !JSON.stringify(await n.tunnelEntries()).includes(`"${n3.address}"`);
    await c.removeNode(n3);
    for (const n of [n1, n2]) await until(`${n.name} to drop node 3's route and tunnel entry`, () => gone(n));
    // Nothing else disturbed: the surviving nodes' pods still reach each other, and node 3's
    // pod CIDR is no longer sent to node 3.
    const survivors = c.pods.filter((p) => p.node !== n3);
    expect((await matrix(survivors, survivors)).join('\n')).toBe('');
    for (const n of [n1, n2]) for (const o of [n1, n2].filter((x) => x !== n)) expect(c.routeProblem(n, o)).toBe('');
    const cut = await ask(c.pod(NS, 'a1'), c.pod(NS, 'a3').ip, 700);
    expect(cut.ok, JSON.stringify(cut)).toBe(false);

    await c.restoreNode(n3);
    await c.meshed();
    expect((await matrix(c.pods, c.pods)).join('\n')).toBe('');
    expect(c.nodes.map((n) => agentPid(n.sb))).toEqual(pids);
  });

  it('an agent SIGKILLed and restarted on either end of a cross-node TCP flow and a ping: every byte arrives, no ping lost', async () => {
    const a1 = c.pod(NS, 'a1');
    const b2 = c.pod(NS, 'b2');
    const stream = await startStream(b2.netns, a1.netns, b2.ip, 5001);
    const ping = await startPing(a1.netns, b2.ip);
    await sleep(500);
    for (const n of [a1.node, b2.node]) {
      await n.sb.stopAgent(true);
      await sleep(700);
      await n.sb.startAgent();
      await waitReady(n.sb);
      await sleep(700);
    }
    const [res] = await stopAndExpectNoLoss([stream], [ping]);
    // The flow kept the client pod's own address all along.
    expect(res.peer).toBe(a1.ip);
    await c.meshed();
    expect((await matrix([a1], c.pods)).join('\n')).toBe('');
  });
});
