// What an operator sees of other nodes: `kelp get nodes` and the `nodes:` line of `kelp status`,
// on two real nodes (test/support/cluster.ts, VXLAN, standalone) plus two Node manifests kelp
// cannot use — one without an address, one claiming part of node 1's pod CIDR. Each row is
// checked against the kernel (the route and kelp_tunnel4 entry are really there), and drift made
// by hand shows in the listing until the reconciler's next run repairs it. And one standalone
// node whose pod CIDR comes from its Node manifest, as in Kubernetes mode.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster, ClusterNode, nodeManifest } from '../support/cluster';
import { VXLAN_DEVICE } from '../../src/datapath/node-types';
import type { NodesStatus, NodeView } from '../../src/agent/routes/nodes';
import { Sandbox, sh } from '../../src/sandbox';
import { e2ePrefix } from '../support/kelp-cli';

const GHOST = { apiVersion: 'v1', kind: 'Node', metadata: { name: 'ghost' }, spec: { podCIDRs: ['10.244.9.0/24'] } };
const GREEDY = (n1: ClusterNode) => nodeManifest({ name: 'greedy', address: '10.200.0.99', podCidr: n1.podCidr.replace(/\.0\/24$/, '.0/25') });

describe('kelp get nodes and kelp status across two nodes', () => {
  let c: Cluster;
  let n1: ClusterNode;
  let n2: ClusterNode;

  beforeAll(async () => {
    c = await Cluster.start({ tag: 'ncl', nodes: 2, mode: 'vxlan', source: 'standalone', outside: false });
    [n1, n2] = c.nodes;
    await c.apply([GHOST, GREEDY(n1)]);
  }, 120_000);

  afterAll(async () => {
    await c?.stop();
  });

  const nodes = async (n: ClusterNode) => JSON.parse(await n.kelp('get', 'nodes', '-o', 'json')) as NodeView[];

  it('lists every Node: this one, the other with its tunnel entry and route in, the unusable ones with why', async () => {
    const rows = await nodes(n1);
    expect(rows.find((r) => r.name === n1.name)).toEqual({ name: n1.name, self: true, address: n1.address, podCidrs: [n1.podCidr], tunnel: null, route: null, skipped: null });
    expect(rows.find((r) => r.name === n2.name)).toEqual({ name: n2.name, self: false, address: n2.address, podCidrs: [n2.podCidr], tunnel: true, route: true, skipped: null });
    expect(rows.find((r) => r.name === 'ghost')).toMatchObject({ address: null, tunnel: null, skipped: 'status.addresses has no IPv4 InternalIP or ExternalIP' });
    expect(rows.find((r) => r.name === 'greedy')?.skipped).toBe(`spec.podCIDRs ${n1.podCidr.replace(/\.0\/24$/, '.0/25')} overlaps this node's pod CIDR ${n1.podCidr}`);
    // What the row says is what the kernel holds.
    expect(n1.route(n2.podCidr)).toMatchObject({ dev: VXLAN_DEVICE });
    expect(JSON.stringify(await n1.tunnelEntries())).toContain(n2.address);

    const table = await n1.kelp('get', 'nodes');
    expect(table).toMatch(/^NAME\s+ADDRESS\s+POD CIDRS\s+TUNNEL\s+ROUTE\s+NOTE\n/);
    expect(table).toMatch(new RegExp(`${n2.name}\\s+${n2.address.replace(/\./g, '\\.')}\\s+${n2.podCidr.replace(/\./g, '\\.')}\\s+yes\\s+yes`));
    expect(table).toMatch(/ghost\s+-\s+10\.244\.9\.0\/24\s+-\s+-\s+status\.addresses has no IPv4/);
  });

  it('kelp status: a nodes line with the mode, device, VNI, port and pod MTU; the skipped nodes among its problems', async () => {
    const st = JSON.parse(await n1.kelp('status', '-o', 'json')) as { mtu: number; nodes: NodesStatus; problems: string[] };
    expect(st.mtu).toBe(1450);
    expect(st.nodes).toMatchObject({ mode: 'vxlan', vni: 1, port: 8472, device: VXLAN_DEVICE, remote: 1, skipped: 2 });
    expect(st.problems).toContain('Node ghost: status.addresses has no IPv4 InternalIP or ExternalIP: skipped');
    expect(await n1.kelp('status')).toMatch(new RegExp(`nodes:\\s+1 remote node routed, 2 SKIPPED \\(see problems\\); VXLAN \\(${VXLAN_DEVICE}, VNI 1, port 8472\\); pod MTU 1450\\n`));
  });

  it('a route removed by hand shows as missing, and is back after the next run', async () => {
    sh('ip', ['-n', n1.name, 'route', 'del', n2.podCidr, 'dev', VXLAN_DEVICE]);
    expect((await nodes(n1)).find((r) => r.name === n2.name)).toMatchObject({ tunnel: true, route: false });
    expect(await n1.kelp('get', 'nodes')).toMatch(new RegExp(`${n2.name}\\s+\\S+\\s+\\S+\\s+yes\\s+NO`));
    // Any Node change runs the reconciler (as its resync would): the route is repaired.
    await c.apply([{ ...GHOST, metadata: { name: 'ghost', labels: { touched: 'yes' } } }]);
    expect((await nodes(n1)).find((r) => r.name === n2.name)).toMatchObject({ tunnel: true, route: true });
    expect(n1.route(n2.podCidr)).toMatchObject({ dev: VXLAN_DEVICE });
  });
});

describe('one standalone node', () => {
  it("without --pod-cidr, takes its pod CIDR from the Node manifest --node-name names, and its uplink from the Node's InternalIP", async () => {
    const sb = await Sandbox.start({
      prefix: e2ePrefix('nsa'),
      podCidrFromNode: true,
      agentArgs: ['--routing-mode=native'],
      beforeAgent: (s) => {
        mkdirSync(s.manifests, { recursive: true });
        const node = { apiVersion: 'v1', kind: 'Node', metadata: { name: s.node }, spec: { podCIDRs: ['10.246.3.0/24'] }, status: { addresses: [{ type: 'InternalIP', address: s.nodeIp }] } };
        writeFileSync(path.join(s.manifests, 'node.json'), JSON.stringify(node));
      },
    });
    try {
      const st = JSON.parse(sb.kelp('status', '-o', 'json')) as { podCidr: string; mtu: number; nodes: NodesStatus };
      expect(st.podCidr).toBe('10.246.3.0/24');
      // Native routing: the uplink's own MTU.
      expect(st.mtu).toBe(1500);
      expect(st.nodes).toMatchObject({ mode: 'native', uplink: 'up0', device: null, remote: 0 });
      expect((await sb.addPod('p')).ip).toMatch(/^10\.246\.3\./);
    } finally {
      await sb.stop();
    }
  }, 60_000);

  it('switched from VXLAN to native: the VXLAN device and its overlay pins are gone, the pod keeps its network', async () => {
    const sb = await Sandbox.start({ prefix: e2ePrefix('nsw') });
    try {
      const pins = ['ingress', 'egress'].map((d) => path.join(sb.bpfRoot, 'links', `overlay-${VXLAN_DEVICE}-${d}`));
      expect(sh('ip', ['-n', sb.node, '-o', 'link', 'show', 'type', 'vxlan'])).toContain(VXLAN_DEVICE);
      expect(pins.map((p) => existsSync(p))).toEqual([true, true]);
      const a = await sb.addPod('a');
      const b = await sb.addPod('b');
      await sb.stopAgent();
      sb.opts.agentArgs = ['--routing-mode=native'];
      await sb.startAgent();
      expect(sh('ip', ['-n', sb.node, '-o', 'link', 'show', 'type', 'vxlan']).trim()).toBe('');
      expect(pins.map((p) => existsSync(p))).toEqual([false, false]);
      expect((JSON.parse(sb.kelp('status', '-o', 'json')) as { nodes: NodesStatus }).nodes).toMatchObject({ mode: 'native', device: null });
      expect(sb.exec(a.netns, 'ping', ['-c', '1', '-W', '2', b.ip])).toMatch(/1 received/);
    } finally {
      await sb.stop();
    }
  }, 60_000);
});
