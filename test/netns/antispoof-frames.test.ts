// Anti-spoofing against hand-made frames (issue 9, section 2): a kelp node with two pods, and pod
// A writing raw Ethernet frames to its gateway MAC through an AF_PACKET socket. Frames with VLAN
// tags and IPv6 must not reach pod B, the node or the host outside, however their source is
// dressed; each drop is counted (kelp_metrics) and reported (the agent logs every ring buffer
// event). The same datagrams untagged and from A's own address must arrive, so the test can tell
// "dropped by kelp" from "lost on the way".
//
// Why real frames: the kernel takes the outer VLAN tag off a received frame (into the skb's
// vlan_tci/vlan_proto) before tc runs, and BPF_PROG_TEST_RUN cannot set those fields, so only a
// frame through a real veth shows kelp_from_pod what it sees in production.
//
// ARP the same way: gratuitous ARP and replies from A naming pod C's address, or A's address at
// B's MAC, must leave the node's neighbour table as it was, while the node still resolves and
// reaches A. And a pod kelp adds sends no IPv6 of its own: kelp turns IPv6 off on its interface.
import { ChildProcess, spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox, SandboxPod } from '../../src/sandbox';
import { ipJson, startSandbox, stopServer } from '../support/e2e';
import * as P from '../support/packet';

const PORT = 9000 + (process.pid % 1000);

let sb: Sandbox;
let a: SandboxPod;
let b: SandboxPod;
/** The victim whose address A steals (B's own address would not do: B drops packets from itself). */
let c: SandboxPod;
let aHostIfindex: number;
let aHostIfname: string;
let gatewayMac: string;
let aMac: string;
let bMac: string;
let nodeLinkLocal: string;
const sinks: Record<'b' | 'node' | 'outside', Sink> = {} as never;

/** A UDP socket on PORT (IPv4 and IPv6) in a namespace, collecting "source payload" per datagram. */
interface Sink {
  child: ChildProcess;
  got: Array<{ from: string; payload: string }>;
}

function startSink(netns: string): Promise<Sink> {
  const script =
    `const s = require('dgram').createSocket('udp6');` +
    `s.on('message', (m, r) => console.log(JSON.stringify({ from: r.address, payload: m.toString() })));` +
    `s.bind(${PORT}, '::', () => console.log('{"ready":true}'));`;
  const child = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  const sink: Sink = { child, got: [] };
  return new Promise((resolve, reject) => {
    let buf = '';
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = JSON.parse(buf.slice(0, nl)) as { ready?: boolean; from: string; payload: string };
        buf = buf.slice(nl + 1);
        if (line.ready) resolve(sink);
        else sink.got.push({ from: line.from.replace(/^::ffff:/, ''), payload: line.payload });
      }
    });
    child.once('exit', (code) => reject(new Error(`UDP sink in ${netns} exited with ${code}: ${err}`)));
  });
}

/** Writes frames, in order, on pod A's eth0 through AF_PACKET (Node has no packet sockets). */
function sendFrames(frames: Buffer[]): void {
  const script = [
    'import socket, sys',
    's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
    "s.bind(('eth0', 0))",
    'for h in sys.argv[1:]: s.send(bytes.fromhex(h))',
  ].join('\n');
  sb.exec(a.netns, 'python3', ['-c', script, ...frames.map((f) => f.toString('hex'))]);
}

/** From A's MAC to the gateway MAC: a UDP datagram to PORT, inside `tags` (outermost first). */
function udpFrame(src: string, dst: string, payload: string, tags: P.VlanTag[] = []): Buffer {
  const udp = P.udp({ sport: 40000, dport: PORT, src, dst }, Buffer.from(payload));
  const ip = P.ipv4({ src, dst, proto: P.IPPROTO_UDP }, udp);
  return P.ethernetTagged({ src: aMac, dst: gatewayMac, type: P.ETH_P_IP, tags }, ip);
}

function udp6Frame(src: string, dst: string, payload: string): Buffer {
  const udp = P.udp6({ sport: 40000, dport: PORT, src, dst }, Buffer.from(payload));
  return P.ethernet({ src: aMac, dst: gatewayMac, type: P.ETH_P_IPV6 }, P.ipv6({ src, dst, proto: P.IPPROTO_UDP }, udp));
}

/** Packets counted in kelp_metrics, leaving a pod, for a reason (summed over endpoints). */
function fromPodDrops(reason: string): number {
  const dump = JSON.parse(sb.kelp('map', 'dump', 'kelp_metrics', '-o', 'json')) as {
    entries: Array<{ key: { dir: string; reason: string }; value: { packets: string } }>;
  };
  return dump.entries.filter((e) => e.key.dir === 'from-pod' && e.key.reason === reason).reduce((n, e) => n + Number(e.value.packets), 0);
}

/** Drop events the agent logged (it logs every kelp_events record) for a reason on a host veth (A's). */
function loggedDrops(reason: string, ifindex = aHostIfindex): Array<{ ethProto: number; len: number; saddr: string; daddr: string }> {
  return sb
    .agentLog()
    .split('\n')
    .filter((l) => l.includes(`"reasonName":"${reason}"`))
    .map((l) => (JSON.parse(l) as { event: { kind: string; ifindex: number; ethProto: number; len: number; saddr: string; daddr: string } }).event)
    .filter((e) => e.kind === 'drop' && e.ifindex === ifindex);
}

function hostIfindexOf(pod: SandboxPod): number {
  const eps = JSON.parse(sb.kelp('get', 'endpoints', '-o', 'json')) as Array<{ containerId: string; hostIfindex: number }>;
  return eps.find((e) => e.containerId === pod.containerId)!.hostIfindex;
}

/** An ARP frame from pod A's eth0 (frame source A's MAC unless `ethSrc`). */
function arpFrame(ethDst: string, a: P.ArpOpts, ethSrc = aMac): Buffer {
  return P.ethernet({ src: ethSrc, dst: ethDst, type: P.ETH_P_ARP }, P.arp(a));
}

/** The node's IPv4 neighbour entries for `ips`, as "ip dev lladdr". */
function nodeNeighbours(...ips: string[]): string[] {
  return ipJson(sb.node, '-4', 'neigh', 'show')
    .filter((n) => ips.includes(n.dst) && n.lladdr)
    .map((n) => `${n.dst} ${n.dev} ${n.lladdr}`)
    .sort();
}

async function waitFor<T>(what: string, get: () => T, done: (v: T) => boolean, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = get();
    if (done(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The non-tentative IPv6 link-local address of `dev`, once duplicate address detection is over. */
async function linkLocal(netns: string, dev: string): Promise<string> {
  const addrs = await waitFor(
    `a usable IPv6 link-local address on ${dev} in ${netns}`,
    () => ipJson(netns, '-6', 'addr', 'show', 'dev', dev, 'scope', 'link').flatMap((l) => l.addr_info as Array<{ local: string; tentative?: boolean }>),
    (list) => list.some((x) => !x.tentative),
    10_000,
  );
  return addrs.find((x) => !x.tentative)!.local;
}

beforeAll(async () => {
  sb = await startSandbox('asf');
  a = await sb.addPod('a', 'spoof');
  b = await sb.addPod('b', 'spoof');
  c = await sb.addPod('c', 'spoof');
  const eps = JSON.parse(sb.kelp('get', 'endpoints', '-o', 'json')) as Array<{ containerId: string; hostIfname: string; hostIfindex: number }>;
  const epA = eps.find((e) => e.containerId === a.containerId)!;
  aHostIfindex = epA.hostIfindex;
  aHostIfname = epA.hostIfname;
  gatewayMac = ipJson(sb.node, 'link', 'show', 'dev', epA.hostIfname)[0].address;
  aMac = ipJson(a.netns, 'link', 'show', 'dev', 'eth0')[0].address;
  bMac = ipJson(b.netns, 'link', 'show', 'dev', 'eth0')[0].address;
  nodeLinkLocal = await linkLocal(sb.node, epA.hostIfname);
  sinks.b = await startSink(b.netns);
  sinks.node = await startSink(sb.node);
  sinks.outside = await startSink(sb.outside!);
});

afterAll(async () => {
  for (const s of Object.values(sinks)) stopServer(s.child);
  await sb?.stop();
});

describe('frames a pod writes itself', () => {
  const Q0: P.VlanTag = { tpid: P.ETH_P_8021Q };
  const AD0: P.VlanTag = { tpid: P.ETH_P_8021AD };

  it('VLAN-tagged and IPv6 frames reach nobody and are counted; the same datagrams untagged from A arrive', async () => {
    const before = { vlan: fromPodDrops('VLAN'), ipv6: fromPodDrops('IPV6'), ethertype: fromPodDrops('ETHERTYPE') };
    const vlanLogged = loggedDrops('VLAN').length;

    // Tagged: C's address (stolen) to B, to the node and out of the node (whose answer would be
    // reverse-translated into C); A's own address in a single priority tag, which the kernel
    // strips before tc, leaving only skb->vlan_* to tell.
    const tagged = [
      udpFrame(c.ip, b.ip, 'qq to b', [Q0, Q0]),
      udpFrame(c.ip, b.ip, 'ad-q to b', [AD0, Q0]),
      udpFrame(c.ip, sb.nodeIp, 'qq to node', [Q0, Q0]),
      udpFrame(c.ip, sb.outsideIp, 'qq to outside', [Q0, Q0]),
      udpFrame(a.ip, b.ip, 'q own to b', [Q0]),
    ];
    const ipv6 = udp6Frame('fe80::1', nodeLinkLocal, 'v6 to node');
    const unknown = P.ethernet({ src: aMac, dst: gatewayMac, type: 0x88b5 }, Buffer.alloc(46));
    sendFrames([...tagged, ipv6, unknown]);
    // Controls, sent after: once they are in, anything sent before them had its chance.
    sendFrames([udpFrame(a.ip, b.ip, 'ctl to b'), udpFrame(a.ip, sb.nodeIp, 'ctl to node'), udpFrame(a.ip, sb.outsideIp, 'ctl to outside')]);

    for (const [name, sink] of Object.entries(sinks)) {
      await waitFor(`the control datagram at ${name}`, () => sink.got, (got) => got.some((g) => g.payload.startsWith('ctl')));
    }
    await new Promise((r) => setTimeout(r, 500));

    expect({ b: sinks.b.got, node: sinks.node.got, outside: sinks.outside.got }).toEqual({
      b: [{ from: a.ip, payload: 'ctl to b' }],
      node: [{ from: a.ip, payload: 'ctl to node' }],
      // Masqueraded to the node's uplink address on the way out.
      outside: [{ from: sb.nodeIp, payload: 'ctl to outside' }],
    });

    expect(fromPodDrops('VLAN') - before.vlan).toBe(tagged.length);
    expect(fromPodDrops('ETHERTYPE') - before.ethertype).toBe(1);
    // Ours alone: kelp turned IPv6 off on the pods' interfaces, so their kernels send none.
    expect(fromPodDrops('IPV6') - before.ipv6).toBe(1);

    // Reported on the ring buffer, with the EtherType the pod wrote after its MAC, whether the
    // kernel left that tag in the frame or moved it into the skb's VLAN fields.
    const events = await waitFor('the VLAN drop events in the agent log', () => loggedDrops('VLAN').slice(vlanLogged), (e) => e.length >= tagged.length);
    expect(events.map((e) => e.ethProto)).toEqual([P.ETH_P_8021Q, P.ETH_P_8021AD, P.ETH_P_8021Q, P.ETH_P_8021Q, P.ETH_P_8021Q]);
    await waitFor('the IPv6 drop event of our frame', () => loggedDrops('IPV6'), (e) => e.some((x) => x.len === ipv6.length));
  });
});

describe('ARP a pod writes itself', () => {
  const BCAST = 'ff:ff:ff:ff:ff:ff';

  it("naming another pod's address, or A's address at another MAC, changes no neighbour entry of the node; the node still reaches A", async () => {
    // Linux learns from unsolicited ARP only with arp_accept, which some nodes turn on (failover
    // by gratuitous ARP): on here, so whatever kelp_from_pod passes lands in the node's table.
    // (Without it the kernel still overrides an existing entry from a gratuitous ARP: the
    // fourth spoofed frame below.)
    sb.exec(sb.node, 'sysctl', ['-qw', 'net.ipv4.conf.all.arp_accept=1']);
    try {
      // Control: the node resolves A (its request goes into A; A's reply passes kelp_from_pod,
      // validated) and A its gateway (kelp answers): the ping needs both.
      sb.exec(sb.node, 'ping', ['-c', '1', '-W', '2', a.ip]);
      expect(nodeNeighbours(a.ip, c.ip)).toEqual([`${a.ip} ${aHostIfname} ${aMac}`]);

      const before = { spoof: fromPodDrops('ARP_SPOOF'), malformed: fromPodDrops('ARP_MALFORMED') };
      const spoofLogged = loggedDrops('ARP_SPOOF').length;
      const spoofed = [
        // C's address: gratuitous, as a request and as a reply, then as a reply to the node.
        arpFrame(BCAST, { sha: aMac, spa: c.ip, tpa: c.ip }),
        arpFrame(BCAST, { op: P.ARPOP_REPLY, sha: aMac, spa: c.ip, tha: aMac, tpa: c.ip }),
        arpFrame(gatewayMac, { op: P.ARPOP_REPLY, sha: aMac, spa: c.ip, tha: gatewayMac, tpa: sb.nodeIp }),
        // A's own address at B's MAC, gratuitous: would override the node's entry for A.
        arpFrame(BCAST, { sha: bMac, spa: a.ip, tpa: a.ip }),
      ];
      const malformed = arpFrame(BCAST, { sha: aMac, spa: c.ip, tpa: c.ip, pln: 16 });
      // A valid gratuitous ARP first (it passes; last, it would repair what the spoofed ones did).
      sendFrames([arpFrame(BCAST, { sha: aMac, spa: a.ip, tpa: a.ip }), ...spoofed, malformed]);
      // The kernel has taken them in when sendFrames returns (veth transmit runs the receive);
      // a moment for the node's ARP processing, then the table.
      await new Promise((r) => setTimeout(r, 300));

      expect(nodeNeighbours(a.ip, c.ip)).toEqual([`${a.ip} ${aHostIfname} ${aMac}`]);
      expect(fromPodDrops('ARP_SPOOF') - before.spoof).toBe(spoofed.length);
      expect(fromPodDrops('ARP_MALFORMED') - before.malformed).toBe(1);
      const events = await waitFor('the ARP_SPOOF drop events in the agent log', () => loggedDrops('ARP_SPOOF').slice(spoofLogged), (e) => e.length >= spoofed.length);
      expect(events.map((e) => [e.ethProto, e.saddr, e.daddr])).toEqual([
        [P.ETH_P_ARP, c.ip, c.ip],
        [P.ETH_P_ARP, c.ip, c.ip],
        [P.ETH_P_ARP, c.ip, sb.nodeIp],
        [P.ETH_P_ARP, a.ip, a.ip],
      ]);

      // Control after: the node still reaches A, and A the node.
      sb.exec(sb.node, 'ping', ['-c', '1', '-W', '2', a.ip]);
      sb.exec(a.netns, 'ping', ['-c', '1', '-W', '2', sb.nodeIp]);
    } finally {
      sb.exec(sb.node, 'sysctl', ['-qw', 'net.ipv4.conf.all.arp_accept=0']);
    }
  });
});

describe('IPv6 a pod sends on its own', () => {
  it('a freshly added pod sends none: kelp turns IPv6 off on the interface it creates', async () => {
    const before = fromPodDrops('IPV6');
    const d = await sb.addPod('d', 'spoof');
    const dHostIfindex = hostIfindexOf(d);
    expect(sb.exec(d.netns, 'sysctl', ['-n', 'net.ipv6.conf.eth0.disable_ipv6']).trim()).toBe('1');
    expect(ipJson(d.netns, '-6', 'addr', 'show', 'dev', 'eth0').flatMap((l) => l.addr_info ?? [])).toEqual([]);
    // With IPv6 on, the pod's kernel sends MLD reports and a duplicate address detection
    // solicitation as the link comes up, and router solicitations from about a second later.
    await new Promise((r) => setTimeout(r, 2500));
    expect(fromPodDrops('IPV6') - before).toBe(0);
    expect(loggedDrops('IPV6', dHostIfindex)).toEqual([]);
    // IPv4 is untouched.
    sb.exec(d.netns, 'ping', ['-c', '1', '-W', '2', sb.nodeIp]);
  });
});
