// Pods on different nodes, with real packets. Three hand-made nodes (a netns each, with its own
// bpffs root and kelp datapath loaded through the Datapath facade, no agent) joined by an
// underlay: one veth per node into a bridge in a namespace of its own. Pods are netns + veth,
// programmed through the Datapath API; the tunnel entries through TunnelMaps.
//
// VXLAN: the nodes have no route to any other node's pod CIDR and do not forward (ip_forward
// 0), so pod → pod across nodes only works when kelp_from_pod encapsulates and
// kelp_from_overlay delivers. Native: the same pods and traffic over routes the test adds inside
// the node namespaces, kelp deciding at the pod veths only.
import { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { inNetns, openPinnedLink } from '../../src/bpf';
import { Datapath } from '../../src/datapath/datapath';
import { DropReason } from '../../src/datapath/drop';
import { TUNNEL_F_ENCAP, VXLAN_DEVICE, VXLAN_OVERHEAD } from '../../src/datapath/node-types';
import { applyPolicyMaps, setPolicyEnforcement } from '../../src/datapath/policy';
import type { PolicyEntry } from '../../src/datapath/policy-types';
import { IDENTITY_WORLD } from '../../src/datapath/policy-types';
import { ServiceWriter } from '../../src/datapath/service';
import { FRONTEND_EXTERNAL, FRONTEND_NODEPORT, type ServiceMapsDesired } from '../../src/datapath/service-types';
import { Direction } from '../../src/datapath/structs';
import { silentLogger } from '../../src/log';
import { Rtnl } from '../../src/netlink/rtnl';
import { cleanupAll, createNetns, createVeth, mountBpffs, Netns, onCleanup, uniqueName } from '../support/netns';

const GATEWAY = '169.254.1.1';
const UNDERLAY_MTU = 1500;
const POD_MTU = UNDERLAY_MTU - VXLAN_OVERHEAD;
const TCP_PORT = 8080;
/** A server in a node's own namespace (a host-network backend). */
const HOST_PORT = 8090;
/** A pod CIDR that no node holds: routed onto the VXLAN device, with no tunnel entry. */
const ORPHAN_CIDR = '10.79.9.0/24';

// Benchmarking range (RFC 2544) for the underlay, documentation-like pod CIDRs: never routed
// anywhere real, and only between namespaces this test made.
const nodeIp = (n: number) => `198.18.0.${n}`;
const podCidr = (n: number) => `10.79.${n}.0/24`;

interface Pod {
  ns: Netns;
  ip: string;
  hostVeth: string;
  epId: number;
}

interface Node {
  n: number;
  ns: Netns;
  dp: Datapath;
  bpfRoot: string;
  ip: string;
  pods: Pod[];
  vxlanIfindex: number;
}

type Mode = 'vxlan' | 'native';

/** TCP server in a pod: reads until the client's FIN, then answers "<peer address> <bytes read>\n" and 200,000 bytes. */
const SERVER = `
const net = require('net');
net.createServer((s) => {
  let n = 0;
  s.on('data', (d) => { n += d.length; });
  s.on('end', () => { s.write(s.remoteAddress + ' ' + n + '\\n'); s.end(Buffer.alloc(200000, 0x6b)); });
  s.on('error', () => {});
}).listen(+process.argv[1], '0.0.0.0', () => console.log('ready'));
`;

/** Sends 300,000 bytes, prints "<first line of the answer> <bytes received>", or "timeout" / "error CODE". */
const CLIENT = `
const net = require('net');
const [ip, port] = process.argv.slice(1);
const s = net.connect({ host: ip, port: +port });
const chunks = [];
s.setTimeout(5000, () => { console.log('timeout'); process.exit(0); });
s.on('connect', () => s.end(Buffer.alloc(300000, 0x61)));
s.on('data', (d) => chunks.push(d));
s.on('end', () => { const b = Buffer.concat(chunks); const nl = b.indexOf(10); console.log(b.subarray(0, nl).toString() + ' ' + (b.length - nl - 1)); process.exit(0); });
s.on('error', (e) => { console.log('error ' + e.code); process.exit(0); });
`;

/** Sends `count` UDP datagrams to `ip`:9 one after the other, whatever each send returns. */
/** UDP_SEND from a given source address: node -e UDP_SEND_FROM <source> <destination> <count>. */
const UDP_SEND_FROM = `
const dgram = require('dgram');
const [src, ip, count] = process.argv.slice(1);
const u = dgram.createSocket('udp4');
let left = +count;
const next = () => (left-- > 0 ? u.send('kelp', 9, ip, () => next()) : u.close());
u.bind({ address: src }, next);
`;
const UDP_SEND = `
const dgram = require('dgram');
const [ip, count] = process.argv.slice(1);
const u = dgram.createSocket('udp4');
let left = +count;
const next = () => (left-- > 0 ? u.send('kelp', 9, ip, () => next()) : u.close());
next();
`;

/**
 * A connected UDP socket sends to `ip`:`port` until a send fails: prints the error's code (an
 * ICMP error the socket heard fails the next send), or "none" after 20 sends 100 ms apart.
 */
const UDP_CONNECTED = `
const dgram = require('dgram');
const [ip, port] = process.argv.slice(1);
const u = dgram.createSocket('udp4');
let left = 20;
u.on('error', (e) => { console.log(e.code); process.exit(0); });
const next = () => {
  if (left-- === 0) { console.log('none'); process.exit(0); }
  u.send('kelp', (e) => { if (e) { console.log(e.code); process.exit(0); } setTimeout(next, 100); });
};
u.connect(+port, ip, next);
`;

function waitForLine(child: ChildProcess, line: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no "${line}" from server; got: ${buf}`)), 10_000);
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.split('\n').includes(line)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => reject(new Error(`server exited with ${code}: ${buf}`)));
  });
}

function tcp(from: Netns, to: string, port = TCP_PORT): string {
  return from.exec(process.execPath, ['-e', CLIENT, to, String(port)]).trim();
}

function ping(from: Netns, to: string, opts: string[] = []): boolean {
  return / 0% packet loss/.test(from.exec('ping', ['-n', '-c', '2', '-i', '0.2', '-W', '2', ...opts, to], { allowFail: true }));
}

function linkStats(ns: Netns, dev: string): { tx: number; rx: number } {
  const [l] = JSON.parse(ns.ip('-j', '-s', 'link', 'show', 'dev', dev)) as Array<{ stats64: { tx: { packets: number }; rx: { packets: number } } }>;
  return { tx: l.stats64.tx.packets, rx: l.stats64.rx.packets };
}

/**
 * Bytes the client of a NodePort flow sent, as the masquerade's conntrack on `node` counted
 * them: a path that loses packets (and gets them retransmitted) shows as far more than the
 * payload.
 */
function natFlowTxBytes(node: Node, client: string): number {
  const rows = node.dp.dump('kelp_ct4') as Array<{ key: { saddr: string }; value: { txBytes: bigint } }>;
  return rows.filter((r) => r.key.saddr === client).reduce((sum, r) => sum + Number(r.value.txBytes), 0);
}

/** Packets of one counter (endpoint, direction, reason) in a node's maps. */
function counter(node: Node, epId: number, dir: number, reason: number): number {
  return node.dp
    .metrics()
    .filter((m) => m.key.epId === epId && m.key.dir === dir && m.key.reason === reason)
    .reduce((s, m) => s + Number(m.value.packets), 0);
}

/** A host on the underlay that is no node: it has no route to any pod CIDR. */
const OUTSIDE_IP = '198.18.0.100';

/**
 * N nodes on one underlay bridge, each with kelp's datapath (masquerade on its uplink
 * included), two pods with TCP servers, and the routing of `mode`: every node's tunnel entries
 * name every other node's pod CIDR (and, in VXLAN mode, its address, so pods' answers to a
 * node's own traffic come back through the tunnel). An outside host on the underlay runs the
 * TCP server too.
 */
async function makeCluster(mode: Mode, count: number): Promise<{ nodes: Node[]; outside: Netns }> {
  const underlay = createNetns('kou');
  const bridge = 'br0';
  underlay.ip('link', 'add', bridge, 'type', 'bridge');
  underlay.ip('link', 'set', bridge, 'up');
  const outside = createNetns('koo');
  const outsidePort = uniqueName('kob');
  createVeth(outside, 'eth0', underlay, outsidePort);
  underlay.ip('link', 'set', outsidePort, 'master', bridge);
  outside.ip('addr', 'add', `${OUTSIDE_IP}/24`, 'dev', 'eth0');
  const nodes: Node[] = [];
  let epId = 100;
  for (let n = 1; n <= count; n++) {
    const ns = createNetns('kon');
    // Forwarding off in VXLAN mode: nothing but kelp can carry a pod's packet to another node.
    ns.exec('sysctl', ['-qw', `net.ipv4.ip_forward=${mode === 'native' ? 1 : 0}`]);
    const port = uniqueName('kob');
    createVeth(ns, 'eth0', underlay, port);
    underlay.ip('link', 'set', port, 'master', bridge);
    ns.ip('addr', 'add', `${nodeIp(n)}/24`, 'dev', 'eth0');

    const bpfRoot = mountBpffs();
    const dp = new Datapath({ bpfRoot, log: silentLogger });
    onCleanup(() => dp.close());
    // Masquerade first, as the agent does: overlay.o learns its address at load. It exempts only
    // the node's own pod CIDR here; native mode adds the others below.
    const uplinkIfindex = ns.ifindex('eth0');
    inNetns(ns.path, () => dp.enableMasquerade({ uplinkIfindex, uplinkIfname: 'eth0', masqIp: nodeIp(n), podCidr: podCidr(n) }));
    let vxlanIfindex = 0;
    const tunnel = dp.tunnelMaps();
    if (mode === 'vxlan') {
      const rtnl = Rtnl.inNetns(ns.path);
      try {
        const dev = await rtnl.createVxlan({ name: VXLAN_DEVICE, port: 8472, mtu: POD_MTU });
        vxlanIfindex = dev.index;
        inNetns(ns.path, () => dp.attachOverlay({ ifindex: dev.index, ifname: dev.name }));
        tunnel.setOverlayConfig({ mode, vni: 1, vxlanIfindex, vxlanMac: dev.mac });
      } finally {
        rtnl.close();
      }
    } else {
      tunnel.setOverlayConfig({ mode, vni: 1, vxlanIfindex: 0 });
    }
    const node: Node = { n, ns, dp, bpfRoot, ip: nodeIp(n), pods: [], vxlanIfindex };
    for (let i = 0; i < 2; i++) node.pods.push(await makePod(node, mode, `10.79.${n}.${i + 2}`, ++epId));
    nodes.push(node);
  }
  for (const node of nodes) {
    const tunnel = node.dp.tunnelMaps();
    for (const peer of nodes) {
      if (peer === node) continue;
      const flags = mode === 'vxlan' ? TUNNEL_F_ENCAP : 0;
      tunnel.put({ cidr: podCidr(peer.n), nodeIp: peer.ip, flags });
      if (mode === 'vxlan') tunnel.put({ cidr: `${peer.ip}/32`, nodeIp: peer.ip, flags });
      else node.ns.ip('route', 'add', podCidr(peer.n), 'via', peer.ip);
    }
    // Native: other nodes' pods see this node's pods' own addresses (the node reconciler's
    // no-masquerade set); VXLAN needs none, pod packets to other nodes never leave by the uplink.
    if (mode === 'native') node.dp.setNoMasquerade(nodes.filter((p) => p !== node).flatMap((p) => [podCidr(p.n), `${p.ip}/32`]));
  }
  for (const node of nodes) {
    for (const pod of node.pods) {
      const server = pod.ns.spawn(process.execPath, ['-e', SERVER, String(TCP_PORT)]);
      await waitForLine(server, 'ready');
    }
  }
  await waitForLine(outside.spawn(process.execPath, ['-e', SERVER, String(TCP_PORT)]), 'ready');
  return { nodes, outside };
}

async function makePod(node: Node, mode: Mode, ip: string, epId: number): Promise<Pod> {
  const ns = createNetns('kop');
  const hostVeth = uniqueName('koh');
  createVeth(node.ns, hostVeth, ns, 'eth0');
  const mtu = String(mode === 'vxlan' ? POD_MTU : UNDERLAY_MTU);
  node.ns.ip('link', 'set', hostVeth, 'mtu', mtu);
  ns.ip('link', 'set', 'eth0', 'mtu', mtu);
  // As CNI plugins wire a pod: a /32 and a link-local gateway kelp answers ARP for.
  ns.ip('addr', 'add', `${ip}/32`, 'dev', 'eth0');
  ns.ip('route', 'add', GATEWAY, 'dev', 'eth0', 'scope', 'link');
  ns.ip('route', 'add', 'default', 'via', GATEWAY, 'dev', 'eth0');
  const hostIfindex = node.ns.ifindex(hostVeth);
  node.dp.upsertEndpoint({ id: epId, ips: [{ address: ip }], hostIfindex, hostIfname: hostVeth, podMac: ns.mac('eth0'), hostMac: node.ns.mac(hostVeth) });
  // clsact filters attach synchronously, before the promise: inside the node's netns.
  let attached: Promise<void> | undefined;
  inNetns(node.ns.path, () => {
    attached = node.dp.attach(hostIfindex, hostVeth);
  });
  await attached;
  // Native: the node's stack delivers routed packets to the pod (through kelp_to_pod).
  if (mode === 'native') node.ns.ip('route', 'add', `${ip}/32`, 'dev', hostVeth);
  return { ns, ip, hostVeth, epId };
}

/** A service port with one frontend and one backend, ids `id`: what most cases here write. */
function oneBackend(id: number, frontend: { address: string; port: number; protocol?: 'TCP' | 'UDP'; flags?: number }, backend: { address: string; port: number }): ServiceMapsDesired {
  return {
    frontends: [{ protocol: 'TCP', flags: 0, ...frontend, svcId: id, setId: id, count: 1, affinityTimeout: 0 }],
    sets: [{ setId: id, backends: [{ backendId: id, ...backend, flags: 0 }] }],
    sourceRanges: new Map(),
    names: new Map([[id, `default/svc-${id}:p`]]),
  };
}

/**
 * A client outside sending UDP to node 1's NodePort whose one backend is a pod of node 2 with no
 * server on the port: the backend's port unreachable (to node 1's address, quoting the SNATed
 * datagram) must reach the client as the NodePort's, so its connected socket hears ECONNREFUSED.
 */
function nodePortUdpRefused(n1: Node, n2: Node, outside: Netns): string {
  const writer = new ServiceWriter(n1.dp.serviceMaps());
  writer.apply(oneBackend(9, { address: n1.ip, port: 30090, protocol: 'UDP', flags: FRONTEND_EXTERNAL | FRONTEND_NODEPORT }, { address: n2.pods[1].ip, port: 5999 }));
  try {
    const got = outside.exec(process.execPath, ['-e', UDP_CONNECTED, n1.ip, '30090']).trim();
    // Translated and SNATed to node 2's pod (not refused by node 1's own stack for want of a socket).
    const nat = n1.dp.dump('kelp_snat4') as Array<{ key: { saddr: string; daddr: string; dport: number; proto: number } }>;
    expect(nat.some((r) => r.key.saddr === OUTSIDE_IP && r.key.daddr === n2.pods[1].ip && r.key.dport === 5999 && r.key.proto === 17)).toBe(true);
    return got;
  } finally {
    writer.apply({ frontends: [], sets: [], sourceRanges: new Map(), names: new Map() });
  }
}

/**
 * The node itself (not a pod, socket LB off) connecting to a ClusterIP whose backend is a pod of
 * another node: kelp_host_egress translates it on the uplink and sends it by the node's route to
 * that pod; the reply comes back to the node as the ClusterIP's. The VIP is routed onto the
 * uplink via the underlay's outside host, as a default route through a gateway would (these
 * nodes have none; an on-link route would wait for an ARP answer for the VIP itself).
 */
function nodeToRemoteClusterIp(n1: Node, n2: Node, replyDevice: string): string {
  const vip = '10.96.0.20';
  const writer = new ServiceWriter(n1.dp.serviceMaps());
  writer.apply(oneBackend(20, { address: vip, port: 80 }, { address: n2.pods[0].ip, port: TCP_PORT }));
  n1.ns.ip('route', 'replace', '10.96.0.0/16', 'via', OUTSIDE_IP, 'dev', 'eth0');
  // A strict rp_filter where the reply arrives (RHEL's default): a reply with the VIP as its
  // source is not routed back out of that device, so it must enter the node's stack elsewhere (lo).
  n1.ns.exec('sysctl', ['-qw', `net.ipv4.conf.${replyDevice}.rp_filter=1`]);
  try {
    return tcp(n1.ns, vip, 80);
  } finally {
    n1.ns.exec('sysctl', ['-qw', `net.ipv4.conf.${replyDevice}.rp_filter=0`]);
    n1.ns.ip('route', 'del', '10.96.0.0/16');
    writer.apply({ frontends: [], sets: [], sourceRanges: new Map(), names: new Map() });
  }
}

/**
 * Runs `fn` with node 1 forwarding and routing node 2's pod CIDR onto the VXLAN device, as an
 * agent's VXLAN node does (these nodes keep forwarding off otherwise: see makeCluster). The
 * uplink's route lookups (bpf_fib_lookup) answer only where it forwards.
 */
function forwardingToNode2<T>(n1: Node, fn: () => T): T {
  n1.ns.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  n1.ns.ip('route', 'replace', podCidr(2), 'dev', VXLAN_DEVICE);
  try {
    return fn();
  } finally {
    n1.ns.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
  }
}

afterAll(cleanupAll);

describe('VXLAN (collect_md device, tunnel key from kelp_tunnel4)', () => {
  let nodes: Node[];
  let outside: Netns;
  beforeAll(async () => {
    ({ nodes, outside } = await makeCluster('vxlan', 3));
  }, 60_000);

  it('pod → pod on every other node: TCP both ways, the server sees the client pod\'s own address, through the tunnel', () => {
    const [n1, n2, n3] = nodes;
    const client = n1.pods[0];
    for (const server of [n2.pods[0], n2.pods[1], n3.pods[0]]) {
      const before = { tx: linkStats(n1.ns, VXLAN_DEVICE).tx, rx: linkStats(server === n3.pods[0] ? n3.ns : n2.ns, VXLAN_DEVICE).rx };
      expect(tcp(client.ns, server.ip), server.ip).toBe(`${client.ip} 300000 200000`);
      const after = { tx: linkStats(n1.ns, VXLAN_DEVICE).tx, rx: linkStats(server === n3.pods[0] ? n3.ns : n2.ns, VXLAN_DEVICE).rx };
      expect(after.tx - before.tx, 'encapsulated on node 1').toBeGreaterThan(3);
      expect(after.rx - before.rx, 'decapsulated on the server\'s node').toBeGreaterThan(3);
    }
    // And back: a pod on node 3 to node 1.
    expect(tcp(n3.pods[1].ns, n1.pods[1].ip)).toBe(`${n3.pods[1].ip} 300000 200000`);
  });

  it('masquerade on every uplink leaves pod → pod across nodes alone: no pod packet leaves an uplink with its own source', () => {
    const [n1, n2] = nodes;
    expect(tcp(n1.pods[0].ns, n2.pods[0].ip)).toBe(`${n1.pods[0].ip} 300000 200000`);
    expect(tcp(n2.pods[1].ns, n1.pods[1].ip)).toBe(`${n2.pods[1].ip} 300000 200000`);
    for (const n of [n1, n2]) expect(n.dp.dump('kelp_snat4'), `node ${n.n}`).toEqual([]);
    // The node's own traffic to the outside is its own business, untranslated.
    expect(tcp(n1.ns, OUTSIDE_IP)).toBe(`${n1.ip} 300000 200000`);
    void outside;
  });

  it('ping across nodes, and 1,400 bytes with DF at pod MTU 1450 (the 50 bytes of VXLAN fit the 1500 underlay)', () => {
    const [n1, n2] = nodes;
    expect(ping(n1.pods[0].ns, n2.pods[1].ip)).toBe(true);
    // ICMP payload 1372 + 8 + 20 = a 1,400-byte IPv4 packet; 1422 + 28 = 1450, the pod MTU exactly.
    expect(ping(n1.pods[0].ns, n2.pods[1].ip, ['-M', 'do', '-s', '1372'])).toBe(true);
    expect(ping(n1.pods[0].ns, n2.pods[1].ip, ['-M', 'do', '-s', '1422'])).toBe(true);
    // One byte more does not fit the pod's MTU: the pod's own stack refuses it.
    expect(ping(n1.pods[0].ns, n2.pods[1].ip, ['-M', 'do', '-s', '1423'])).toBe(false);
  });

  it('counted: forwarded from the client pod on its node, to the server pod on its node', () => {
    const [n1, n2] = nodes;
    const fromBefore = counter(n1, n1.pods[1].epId, Direction.FROM_POD, 0);
    const toBefore = counter(n2, n2.pods[0].epId, Direction.TO_POD, 0);
    expect(ping(n1.pods[1].ns, n2.pods[0].ip)).toBe(true);
    expect(counter(n1, n1.pods[1].epId, Direction.FROM_POD, 0) - fromBefore).toBeGreaterThanOrEqual(2);
    expect(counter(n2, n2.pods[0].epId, Direction.TO_POD, 0) - toBefore).toBeGreaterThanOrEqual(2);
  });

  it("the node's own traffic to a remote pod: routed onto the VXLAN device, keyed by kelp_to_overlay", () => {
    const [n1, n2] = nodes;
    n1.ns.ip('route', 'add', podCidr(2), 'dev', VXLAN_DEVICE);
    onCleanup(() => n1.ns.ip('route', 'del', podCidr(2), 'dev', VXLAN_DEVICE));
    const before = linkStats(n1.ns, VXLAN_DEVICE).tx;
    expect(tcp(n1.ns, n2.pods[0].ip)).toBe(`${n1.ip} 300000 200000`);
    expect(ping(n1.ns, n2.pods[1].ip)).toBe(true);
    expect(linkStats(n1.ns, VXLAN_DEVICE).tx - before).toBeGreaterThan(3);
  });

  it('to a pod CIDR with no tunnel entry: dropped on the VXLAN device and counted (NO_TUNNEL)', () => {
    const [n1] = nodes;
    n1.ns.ip('route', 'add', ORPHAN_CIDR, 'dev', VXLAN_DEVICE);
    onCleanup(() => n1.ns.ip('route', 'del', ORPHAN_CIDR, 'dev', VXLAN_DEVICE));
    const before = counter(n1, 0, Direction.FROM_POD, DropReason.NO_TUNNEL);
    const tx = linkStats(n1.ns, VXLAN_DEVICE).tx;
    // Three datagrams, each through the device's egress once (ping would resend on ENOBUFS).
    n1.ns.exec(process.execPath, ['-e', UDP_SEND, '10.79.9.5', '3']);
    expect(counter(n1, 0, Direction.FROM_POD, DropReason.NO_TUNNEL) - before).toBe(3);
    expect(linkStats(n1.ns, VXLAN_DEVICE).tx).toBe(tx);
  });

  it("a sender speaking as a pod it does not hold: another node's pod, or the receiver's own pod, through the tunnel is dropped (TUNNEL_SPOOF)", () => {
    const [n1, , n3] = nodes;
    // Node 3 sends with a source of node 2's pod CIDR, then with node 1's own pod's address: both
    // on node 3's lo, node 1's pods routed onto node 3's VXLAN device (kelp_to_overlay keys them to
    // node 1, the outer source node 3's).
    const asNode2Pod = '10.79.2.99';
    const asLocalPod = n1.pods[1].ip;
    n3.ns.ip('route', 'add', podCidr(1), 'dev', VXLAN_DEVICE);
    onCleanup(() => n3.ns.ip('route', 'del', podCidr(1), 'dev', VXLAN_DEVICE));
    for (const forged of [asNode2Pod, asLocalPod]) {
      const before = counter(n1, n1.pods[0].epId, Direction.TO_POD, DropReason.TUNNEL_SPOOF);
      const rx = linkStats(n1.ns, VXLAN_DEVICE).rx;
      // Removed at once: node 3's own traffic onto the device would pick it as its source.
      n3.ns.ip('addr', 'add', `${forged}/32`, 'dev', 'lo');
      try {
        n3.ns.exec(process.execPath, ['-e', UDP_SEND_FROM, forged, n1.pods[0].ip, '3']);
      } finally {
        n3.ns.ip('addr', 'del', `${forged}/32`, 'dev', 'lo');
      }
      expect(linkStats(n1.ns, VXLAN_DEVICE).rx - rx, `${forged}: decapsulated on node 1`).toBeGreaterThanOrEqual(3);
      expect(counter(n1, n1.pods[0].epId, Direction.TO_POD, DropReason.TUNNEL_SPOOF) - before, forged).toBe(3);
    }
    // Node 3's own address and its pods still get through (the checks above are not "drop all").
    expect(tcp(n3.pods[0].ns, n1.pods[0].ip)).toBe(`${n3.pods[0].ip} 300000 200000`);
    expect(ping(n3.ns, n1.pods[0].ip)).toBe(true);
  });

  it('a node whose tunnel entry goes is unreachable; put back, reachable again', () => {
    const [n1, , n3] = nodes;
    const tunnel = n1.dp.tunnelMaps();
    tunnel.remove(podCidr(3));
    expect(tunnel.entries().map((e) => e.cidr)).not.toContain(podCidr(3));
    expect(ping(n1.pods[0].ns, n3.pods[0].ip)).toBe(false);
    tunnel.put({ cidr: podCidr(3), nodeIp: n3.ip, flags: TUNNEL_F_ENCAP });
    expect(ping(n1.pods[0].ns, n3.pods[0].ip)).toBe(true);
  });

  it("policy across nodes: the receiver's ingress decides by the remote sender's identity (kelp_ipcache4)", () => {
    const [n1, n2] = nodes;
    const [denied, allowed] = n1.pods;
    const server = n2.pods[0];
    const ID_DENIED = 300;
    const ID_ALLOWED = 301;
    const verdict = (action: 'allow' | 'deny') => ({ action, tier: 'networkpolicy' as const, policyId: 9, rule: 0 });
    const entries: PolicyEntry[] = n2.pods.flatMap((p) => [
      { epId: p.epId, identity: 0, direction: 'ingress' as const, port: 0, portPrefix: 0, verdict: verdict('allow') },
      { epId: p.epId, identity: 0, direction: 'egress' as const, port: 0, portPrefix: 0, verdict: verdict('allow') },
      { epId: p.epId, identity: ID_DENIED, direction: 'ingress' as const, port: 0, portPrefix: 0, verdict: verdict('deny') },
    ]);
    const maps = n2.dp.policyMaps();
    applyPolicyMaps(maps, {
      ipcache: new Map([
        ['0.0.0.0/0', IDENTITY_WORLD],
        [`${denied.ip}/32`, ID_DENIED],
        [`${allowed.ip}/32`, ID_ALLOWED],
      ]),
      policy: entries,
      policies: new Map([[9, { ref: 'NetworkPolicy/default/deny-one', ingress: ['from-denied'], egress: [] }]]),
    });
    setPolicyEnforcement(maps, true);
    try {
      const before = counter(n2, server.epId, Direction.TO_POD, DropReason.POLICY_DENY);
      expect(tcp(denied.ns, server.ip)).toBe('timeout');
      expect(counter(n2, server.epId, Direction.TO_POD, DropReason.POLICY_DENY) - before).toBeGreaterThanOrEqual(1);
      expect(tcp(allowed.ns, server.ip)).toBe(`${allowed.ip} 300000 200000`);
    } finally {
      setPolicyEnforcement(maps, false);
    }
  });

  it('a ClusterIP whose backend is a pod on another node: DNAT in kelp_from_pod, the reply reverse-translated in kelp_from_overlay', () => {
    const [n1, n2] = nodes;
    const VIP = '10.96.0.10';
    const writer = new ServiceWriter(n1.dp.serviceMaps());
    writer.apply(oneBackend(1, { address: VIP, port: 80 }, { address: n2.pods[1].ip, port: TCP_PORT }));
    try {
      // The client's socket only accepts the answer from the address it connected to.
      expect(tcp(n1.pods[0].ns, VIP, 80)).toBe(`${n1.pods[0].ip} 300000 200000`);
    } finally {
      writer.apply({ frontends: [], sets: [], sourceRanges: new Map(), names: new Map() });
    }
  });

  it('a NodePort (externalTrafficPolicy Cluster) whose backend is on another node: SNAT to the node, out through the tunnel, the answer back through it to the uplink', () => {
    const [n1, n2] = nodes;
    // Translated traffic is forwarded traffic: the uplink's route lookups need forwarding on.
    n1.ns.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    n1.ns.ip('route', 'replace', podCidr(2), 'dev', VXLAN_DEVICE);
    const writer = new ServiceWriter(n1.dp.serviceMaps());
    writer.apply({
      frontends: [{ address: n1.ip, port: 30080, protocol: 'TCP', svcId: 1, setId: 1, count: 1, flags: FRONTEND_EXTERNAL | FRONTEND_NODEPORT, affinityTimeout: 0 }],
      sets: [{ setId: 1, backends: [{ backendId: 1, address: n2.pods[0].ip, port: TCP_PORT, flags: 0 }] }],
      sourceRanges: new Map(),
      names: new Map([[1, 'default/web:http']]),
    });
    try {
      const before = linkStats(n1.ns, VXLAN_DEVICE);
      expect(tcp(outside, n1.ip, 30080)).toBe(`${n1.ip} 300000 200000`);
      // No loss on the way: GSO packets too are routed, not refused as too big for the MTU.
      expect(natFlowTxBytes(n1, OUTSIDE_IP)).toBeLessThan(2 * 300000);
      const after = linkStats(n1.ns, VXLAN_DEVICE);
      expect(after.tx - before.tx, 'to the backend through the tunnel').toBeGreaterThan(3);
      expect(after.rx - before.rx, 'its answers through the tunnel').toBeGreaterThan(3);
    } finally {
      writer.apply({ frontends: [], sets: [], sourceRanges: new Map(), names: new Map() });
      n1.ns.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
    }
  });

  it("a pod reaching another node's NodePort rides the tunnel: a local backend answers it; without a usable backend it is refused at once (TCP RST, ICMP port unreachable) back through the tunnel", () => {
    const [n1, n2] = nodes;
    const client = n1.pods[0];
    const writer = new ServiceWriter(n2.dp.serviceMaps());
    const nodePort = (port: number, protocol: 'TCP' | 'UDP', svcId: number, setId: number, count: number) => ({ address: n2.ip, port, protocol, svcId, setId, count, flags: FRONTEND_EXTERNAL | FRONTEND_NODEPORT, affinityTimeout: 0 });
    writer.apply({
      frontends: [nodePort(30080, 'TCP', 1, 1, 1), nodePort(30081, 'TCP', 2, 0, 0), nodePort(30082, 'UDP', 3, 0, 0)],
      sets: [{ setId: 1, backends: [{ backendId: 1, address: n2.pods[0].ip, port: TCP_PORT, flags: 0 }] }],
      sourceRanges: new Map(),
      names: new Map([
        [1, 'default/web:http'],
        [2, 'default/empty:http'],
        [3, 'default/empty:dns'],
      ]),
    });
    try {
      // The backend is on the frontend's node: it sees the client pod itself.
      expect(tcp(client.ns, n2.ip, 30080)).toBe(`${client.ip} 300000 200000`);
      const noBackend = () => counter(n2, 0, Direction.TO_POD, DropReason.LB_NO_BACKEND);
      const before = noBackend();
      const rx = linkStats(n1.ns, VXLAN_DEVICE).rx;
      // Refused, not timed out (the client gives up after 5 s with "timeout").
      expect(tcp(client.ns, n2.ip, 30081)).toBe('error ECONNREFUSED');
      // A connected UDP socket hears the port unreachable: its next send fails.
      const udp = client.ns.exec(process.execPath, ['-e', UDP_CONNECTED, n2.ip, '30082']).trim();
      expect(udp).toBe('ECONNREFUSED');
      expect(noBackend() - before).toBeGreaterThanOrEqual(2);
      expect(linkStats(n1.ns, VXLAN_DEVICE).rx - rx, 'the answers came back through the tunnel').toBeGreaterThanOrEqual(2);
    } finally {
      writer.apply({ frontends: [], sets: [], sourceRanges: new Map(), names: new Map() });
    }
  });

  it("a NodePort whose backend is on another node, over UDP to a closed port: the backend's port unreachable comes back through the tunnel and reaches the client outside as the NodePort's", () => {
    const [n1, n2] = nodes;
    expect(forwardingToNode2(n1, () => nodePortUdpRefused(n1, n2, outside))).toBe('ECONNREFUSED');
  });

  it("the node itself to a ClusterIP whose backend is a pod of another node (per packet, socket LB off): by the node's route through the tunnel, the backend sees the node, the answer comes from the ClusterIP", () => {
    const [n1, n2] = nodes;
    expect(forwardingToNode2(n1, () => nodeToRemoteClusterIp(n1, n2, VXLAN_DEVICE))).toBe(`${n1.ip} 300000 200000`);
  });

  it("an agent restart moves the overlay links onto the new programs in place (same links, no detach)", async () => {
    const [n1, n2] = nodes;
    const pins = ['ingress', 'egress'].map((dir) => path.join(n2.bpfRoot, 'links', `overlay-${VXLAN_DEVICE}-${dir}`));
    const linkOf = (pin: string) => {
      const l = openPinnedLink(pin);
      try {
        return l.info();
      } finally {
        l.close();
      }
    };
    const before = pins.map(linkOf);
    const next = new Datapath({ bpfRoot: n2.bpfRoot, log: silentLogger });
    onCleanup(() => next.close());
    inNetns(n2.ns.path, () => next.attachOverlay({ ifindex: n2.vxlanIfindex, ifname: VXLAN_DEVICE }));
    const after = pins.map(linkOf);
    const progs = ['kelp_from_overlay', 'kelp_to_overlay'].map((p) => next.overlayObject!.program(p).id);
    expect(after.map((l) => l.id)).toEqual(before.map((l) => l.id));
    expect(after.map((l) => l.progId)).toEqual(progs);
    expect(progs).not.toEqual(before.map((l) => l.progId));
    expect(tcp(n1.pods[1].ns, n2.pods[1].ip)).toBe(`${n1.pods[1].ip} 300000 200000`);
  });
});

describe('native routing (routes via the underlay, no encapsulation)', () => {
  let nodes: Node[];
  let outside: Netns;
  beforeAll(async () => {
    ({ nodes, outside } = await makeCluster('native', 2));
  }, 60_000);

  it('pod → pod across nodes: TCP both ways and ping, the server sees the client pod\'s own address, no VXLAN device anywhere', () => {
    const [n1, n2] = nodes;
    expect(tcp(n1.pods[0].ns, n2.pods[0].ip)).toBe(`${n1.pods[0].ip} 300000 200000`);
    expect(tcp(n2.pods[1].ns, n1.pods[1].ip)).toBe(`${n2.pods[1].ip} 300000 200000`);
    expect(ping(n1.pods[1].ns, n2.pods[0].ip)).toBe(true);
    expect(ping(n1.pods[1].ns, n2.pods[0].ip, ['-M', 'do', '-s', '1472'])).toBe(true);
    for (const n of nodes) expect(n.ns.ip('-o', 'link', 'show', 'type', 'vxlan').trim()).toBe('');
    // kelp_from_pod counted them as forwarded on the sender's node, kelp_to_pod on the receiver's.
    expect(counter(n1, n1.pods[1].epId, Direction.FROM_POD, 0)).toBeGreaterThanOrEqual(2);
    expect(counter(n2, n2.pods[0].epId, Direction.TO_POD, 0)).toBeGreaterThanOrEqual(2);
  });

  it('a NodePort (externalTrafficPolicy Cluster) whose backend is on another node: the client outside is answered, the backend sees the node (SNAT)', () => {
    const [n1, n2] = nodes;
    const writer = new ServiceWriter(n1.dp.serviceMaps());
    writer.apply({
      frontends: [{ address: n1.ip, port: 30080, protocol: 'TCP', svcId: 1, setId: 1, count: 1, flags: FRONTEND_EXTERNAL | FRONTEND_NODEPORT, affinityTimeout: 0 }],
      sets: [{ setId: 1, backends: [{ backendId: 1, address: n2.pods[1].ip, port: TCP_PORT, flags: 0 }] }],
      sourceRanges: new Map(),
      names: new Map([[1, 'default/web:http']]),
    });
    try {
      expect(tcp(outside, n1.ip, 30080)).toBe(`${n1.ip} 300000 200000`);
      expect(natFlowTxBytes(n1, OUTSIDE_IP)).toBeLessThan(2 * 300000);
      // The flow is the masquerade's: a mapping to node 1's address for the backend.
      const nat = n1.dp.dump('kelp_snat4') as Array<{ key: { saddr: string; daddr: string } }>;
      expect(nat.some((r) => r.key.saddr === OUTSIDE_IP && r.key.daddr === n2.pods[1].ip)).toBe(true);
    } finally {
      writer.apply({ frontends: [], sets: [], sourceRanges: new Map(), names: new Map() });
    }
  });

  it("a NodePort whose backend is on another node, over UDP to a closed port: the backend's port unreachable reaches the client outside as the NodePort's", () => {
    const [n1, n2] = nodes;
    expect(nodePortUdpRefused(n1, n2, outside)).toBe('ECONNREFUSED');
  });

  it("the node itself to a ClusterIP whose backend is a pod of another node (per packet, socket LB off): by the node's route over the underlay, the backend sees the node, the answer comes from the ClusterIP", () => {
    const [n1, n2] = nodes;
    expect(nodeToRemoteClusterIp(n1, n2, 'eth0')).toBe(`${n1.ip} 300000 200000`);
  });

  it("a NodePort whose backend is the node itself (host network) is not translated to the node: the backend sees the client", async () => {
    const [n1] = nodes;
    await waitForLine(n1.ns.spawn(process.execPath, ['-e', SERVER, String(HOST_PORT)]), 'ready');
    const writer = new ServiceWriter(n1.dp.serviceMaps());
    writer.apply({
      frontends: [{ address: n1.ip, port: 30081, protocol: 'TCP', svcId: 2, setId: 2, count: 1, flags: FRONTEND_EXTERNAL | FRONTEND_NODEPORT, affinityTimeout: 0 }],
      sets: [{ setId: 2, backends: [{ backendId: 2, address: n1.ip, port: HOST_PORT, flags: 0 }] }],
      sourceRanges: new Map(),
      names: new Map([[2, 'default/host:http']]),
    });
    try {
      expect(tcp(outside, n1.ip, 30081)).toBe(`${OUTSIDE_IP} 300000 200000`);
    } finally {
      writer.apply({ frontends: [], sets: [], sourceRanges: new Map(), names: new Map() });
    }
  });

  it("masquerade: pods keep their address to other nodes' pods (kelp_nomasq4), get the node's to the outside", () => {
    const [n1, n2] = nodes;
    expect(tcp(n1.pods[0].ns, OUTSIDE_IP)).toBe(`${n1.ip} 300000 200000`);
    expect(tcp(n1.pods[0].ns, n2.pods[1].ip)).toBe(`${n1.pods[0].ip} 300000 200000`);
    // Without the exemption the same flow is masqueraded (and still answered, through kelp_snat4).
    n1.dp.setNoMasquerade([`${n2.ip}/32`]);
    try {
      expect(tcp(n1.pods[0].ns, n2.pods[1].ip)).toBe(`${n1.ip} 300000 200000`);
    } finally {
      n1.dp.setNoMasquerade([podCidr(2), `${n2.ip}/32`]);
    }
    void outside;
  });
});
