// The node reconciler against a real kernel: one node namespace with kelp's datapath (its own
// bpffs), an uplink veth, masquerade on it and the kelp VXLAN device; Node objects fed from a
// list the test edits. Each step runs the reconciler and reads back what the kernel holds: the
// main table's routes, kelp_tunnel4, kelp_nomasq4. Drift made by hand is repaired; routes that
// are not kelp's are never touched; a node that goes away takes exactly its own state with it;
// a mode switch replaces routes in place.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inNetns } from '../../src/bpf';
import { Datapath } from '../../src/datapath/datapath';
import { TUNNEL_F_ENCAP, VXLAN_DEVICE } from '../../src/datapath/node-types';
import { silentLogger } from '../../src/log';
import { Rtnl, type RouteEntry } from '../../src/netlink/rtnl';
import { nodesReconciler, NodesReconciler, RTPROT_KELP_NODE } from '../../src/reconcile/nodes';
import { validateNode, type NodeObject } from '../../src/sources/objects/node';
import { cleanupAll, createNetns, createVeth, mountBpffs, Netns, onCleanup } from '../support/netns';

// Benchmarking range (RFC 2544) for the underlay, a /16 of 10.79 for pod CIDRs: only inside
// namespaces this test made.
const SELF = { name: 'n1', podCidr: '10.79.1.0/24' };
const node = (n: number, cidr = `10.79.${n}.0/24`): NodeObject =>
  validateNode({ apiVersion: 'v1', kind: 'Node', metadata: { name: `n${n}` }, spec: { podCIDRs: [cidr] }, status: { addresses: [{ type: 'InternalIP', address: `198.18.0.${n}` }] } });

let ns: Netns;
let dp: Datapath;
let rtnl: Rtnl;
let uplinkIfindex: number;
let vxlanIfindex: number;
let nodes: NodeObject[];

function reconciler(mode: 'vxlan' | 'native'): NodesReconciler {
  return nodesReconciler({
    objects: { list: () => nodes },
    self: SELF,
    routing: { mode, vxlanIfindex, uplinkIfindex },
    tunnel: dp.tunnelMaps(),
    routes: rtnl,
    setNoMasquerade: (cidrs) => dp.setNoMasquerade(cidrs),
    log: silentLogger,
  });
}

const show = (r: RouteEntry) => `${r.dst}${r.gw ? ` via ${r.gw}` : ''} dev ${r.dev === vxlanIfindex ? 'vxlan' : r.dev === uplinkIfindex ? 'eth0' : r.dev} proto ${r.protocol}`;
const routes = async () => (await rtnl.listRoutes({ family: 4 })).map(show).sort();
const kelpRoutes = async () => (await rtnl.listRoutes({ family: 4 })).filter((r) => r.protocol === RTPROT_KELP_NODE).map(show).sort();
const tunnel = () => dp.tunnelMaps().entries().map((e) => `${e.cidr}>${e.nodeIp}/${e.flags}`).sort();
const nomasq = () => dp.dump('kelp_nomasq4').map((row) => (row.key as { cidr: string }).cidr).sort();

beforeAll(async () => {
  ns = createNetns('knr');
  const under = createNetns('knu');
  createVeth(ns, 'eth0', under, 'eth0');
  ns.ip('addr', 'add', '198.18.0.1/16', 'dev', 'eth0');
  uplinkIfindex = ns.ifindex('eth0');
  dp = new Datapath({ bpfRoot: mountBpffs(), log: silentLogger });
  onCleanup(() => dp.close());
  rtnl = Rtnl.inNetns(ns.path);
  onCleanup(() => rtnl.close());
  inNetns(ns.path, () => dp.enableMasquerade({ uplinkIfindex, uplinkIfname: 'eth0', masqIp: '198.18.0.1', podCidr: SELF.podCidr }));
  const dev = await rtnl.createVxlan({ name: VXLAN_DEVICE, port: 8472, mtu: 1450 });
  vxlanIfindex = dev.index;
  // Someone else's route to the pod CIDR node 5 will claim.
  ns.ip('route', 'add', '10.79.5.0/24', 'via', '198.18.0.254', 'proto', 'static');
}, 30_000);

afterAll(cleanupAll);

describe('node reconciler on a real node namespace', () => {
  const E = TUNNEL_F_ENCAP;

  it('VXLAN: routes onto kelp_vxlan, tunnel entries, no-masquerade set; skips an overlap and leaves a foreign route alone', async () => {
    nodes = [node(1), node(2), node(3), node(4, '10.79.2.128/25'), node(5)];
    const r = reconciler('vxlan');
    await r.reconcile();
    expect(await kelpRoutes()).toEqual([`10.79.2.0/24 dev vxlan proto ${RTPROT_KELP_NODE}`, `10.79.3.0/24 dev vxlan proto ${RTPROT_KELP_NODE}`]);
    expect(await routes()).toContain('10.79.5.0/24 via 198.18.0.254 dev eth0 proto 4');
    expect(tunnel()).toEqual([
      `10.79.2.0/24>198.18.0.2/${E}`,
      `10.79.3.0/24>198.18.0.3/${E}`,
      `10.79.5.0/24>198.18.0.5/${E}`,
      `198.18.0.2/32>198.18.0.2/${E}`,
      `198.18.0.3/32>198.18.0.3/${E}`,
      `198.18.0.5/32>198.18.0.5/${E}`,
    ]);
    expect(nomasq()).toEqual(['10.79.1.0/24', '10.79.2.0/24', '10.79.3.0/24', '10.79.5.0/24']);
    const problems = r.last()!.problems;
    expect(problems).toContain("Node n4: spec.podCIDRs 10.79.2.128/25 overlaps Node n2's 10.79.2.0/24 (older, kept): skipped");
    expect(problems.find((p) => p.startsWith('Node n5: a route to 10.79.5.0/24 exists already (protocol 4'))).toBeDefined();
    expect(r.table()!.remote.map((n) => n.name)).toEqual(['n2', 'n3', 'n5']);

    // A second run finds nothing to change.
    await r.reconcile();
    expect(r.last()).toMatchObject({ tunnel: { put: 0, removed: 0 }, routes: { replaced: 0, removed: 0 } });
  });

  it('repairs drift made by hand: a route deleted, an entry deleted, a stray entry and a stale kelp route added', async () => {
    const r = reconciler('vxlan');
    await r.reconcile();
    const want = { routes: await routes(), tunnel: tunnel(), nomasq: nomasq() };
    ns.ip('route', 'del', '10.79.2.0/24', 'dev', VXLAN_DEVICE);
    ns.ip('route', 'add', '10.79.8.0/24', 'dev', VXLAN_DEVICE, 'proto', String(RTPROT_KELP_NODE));
    dp.tunnelMaps().remove('10.79.3.0/24');
    dp.tunnelMaps().put({ cidr: '10.79.9.0/24', nodeIp: '198.18.0.9', flags: E });
    dp.setNoMasquerade(['10.79.2.0/24']);
    expect(await routes()).not.toEqual(want.routes);
    await r.reconcile();
    expect(r.last()).toMatchObject({ tunnel: { put: 1, removed: 1 }, routes: { replaced: 1, removed: 1 } });
    expect({ routes: await routes(), tunnel: tunnel(), nomasq: nomasq() }).toEqual(want);
  });

  it('a node that goes away takes its routes, entries and exemptions with it; nothing else moves', async () => {
    const r = reconciler('vxlan');
    await r.reconcile();
    const before = { routes: await routes(), tunnel: tunnel(), nomasq: nomasq() };
    nodes = nodes.filter((n) => n.metadata.name !== 'n3');
    await r.reconcile();
    const n3 = (s: string) => s.startsWith('10.79.3.') || s.startsWith('198.18.0.3/');
    expect(await routes()).toEqual(before.routes.filter((x) => !n3(x)));
    expect(tunnel()).toEqual(before.tunnel.filter((x) => !n3(x)));
    expect(nomasq()).toEqual(before.nomasq.filter((x) => !n3(x)));
    // Back: programmed again.
    nodes = [...nodes, node(3)];
    await r.reconcile();
    expect({ routes: await routes(), tunnel: tunnel(), nomasq: nomasq() }).toEqual(before);
  });

  it('native: each route replaced in place by one via the node on the uplink, entries without ENCAP, node addresses exempt from masquerade', async () => {
    const r = reconciler('native');
    await r.reconcile();
    expect(await kelpRoutes()).toEqual([`10.79.2.0/24 via 198.18.0.2 dev eth0 proto ${RTPROT_KELP_NODE}`, `10.79.3.0/24 via 198.18.0.3 dev eth0 proto ${RTPROT_KELP_NODE}`]);
    expect(tunnel()).toEqual(['10.79.2.0/24>198.18.0.2/0', '10.79.3.0/24>198.18.0.3/0', '10.79.5.0/24>198.18.0.5/0']);
    expect(nomasq()).toEqual(['10.79.1.0/24', '10.79.2.0/24', '10.79.3.0/24', '10.79.5.0/24', '198.18.0.2/32', '198.18.0.3/32', '198.18.0.5/32']);
    expect(r.last()!.routes).toEqual({ replaced: 2, removed: 0 });
    expect(await routes()).toContain('10.79.5.0/24 via 198.18.0.254 dev eth0 proto 4');
  });

  it('kelp_nomasq4 full (16,384 entries): reported, and every tunnel entry and route still goes in', async () => {
    // 8,200 nodes natively: 8,201 pod CIDRs and 8,200 addresses to exempt, 17 more than it holds.
    const n = 8200;
    nodes = Array.from({ length: n }, (_, i) =>
      validateNode({ apiVersion: 'v1', kind: 'Node', metadata: { name: `m${i}` }, spec: { podCIDRs: [`10.${90 + (i >> 8)}.${i & 255}.0/24`] }, status: { addresses: [{ type: 'InternalIP', address: `198.18.${2 + (i >> 8)}.${i & 255}` }] } }),
    );
    const r = reconciler('native');
    await r.reconcile();
    expect(r.last()!.problems.find((p) => p.startsWith('kelp_nomasq4 not updated: kelp_nomasq4 is full'))).toBeDefined();
    expect(await kelpRoutes()).toHaveLength(n);
    expect(tunnel()).toHaveLength(n);
    // The exemptions it had stay (the write puts nothing before it knows all fit).
    expect(nomasq()).toContain('10.79.2.0/24');
    nodes = [node(2)];
    await r.reconcile();
    expect(r.last()!.problems).toEqual([]);
    expect(await kelpRoutes()).toEqual([`10.79.2.0/24 via 198.18.0.2 dev eth0 proto ${RTPROT_KELP_NODE}`]);
    expect(nomasq()).toEqual(['10.79.1.0/24', '10.79.2.0/24', '198.18.0.2/32']);
  });
});
