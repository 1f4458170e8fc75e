// Masquerade with real traffic. Three namespaces: a pod, a node routing for it, and an outside
// host on the node's uplink that has no route to the pod CIDR. Without kelp's programs the pod
// cannot talk to the outside (replies have nowhere to go); with kelp_host_egress/_ingress on the
// uplink it can, and the outside sees only the node's address and a NAT port.
import { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BpfObject, attachTc, inNetns, loadObject } from '../../src/bpf';
import { CtDir, IpProto, NatDir, ct4Entry, dumpNat, masqConstants, nat4Entry, nomasq4Key, tuple4 } from '../../src/datapath/nat';
import { Direction, endpointInfo, endpointKey } from '../../src/datapath/structs';
import { metricsId, metricsMaps, readMetrics } from '../support/datapath';
import { cleanupAll, createNetns, createVeth, mountBpffs, Netns, onCleanup } from '../support/netns';

const OBJ = path.join(__dirname, '../../build/bpf/host.o');
// Benchmarking range (RFC 2544) for the uplink network: never routed anywhere real.
const NODE_IP = '198.18.0.1';
const OUTSIDE_IP = '198.18.0.2';
const POD_CIDR = '10.200.1.0/24';
const POD_IP = '10.200.1.5';
const GATEWAY = '169.254.1.1';
const TCP_PORT = 8080;
const UDP_PORT = 9090;
const CLOSED_UDP_PORT = 9999;

// Servers in the outside namespace that answer with the peer address they see.
const SERVER = `
const net = require('net'), dgram = require('dgram');
const [ip, tcpPort, udpPort] = process.argv.slice(1);
let up = 0;
const ready = () => { if (++up === 2) console.log('ready'); };
net.createServer((s) => s.end(s.remoteAddress + ' ' + s.remotePort)).listen(+tcpPort, ip, ready);
const u = dgram.createSocket('udp4');
u.on('message', (m, r) => u.send(r.address + ' ' + r.port, r.port, r.address));
u.bind(+udpPort, ip, ready);
`;

// Clients in the pod: print "<own port> <what the server said>", or "timeout" / "error <code>".
const TCP_CLIENT = `
const net = require('net');
const [ip, port] = process.argv.slice(1);
const s = net.connect({ host: ip, port: +port });
let out = '';
s.setTimeout(3000, () => { console.log('timeout'); process.exit(0); });
s.on('connect', () => { out = s.localPort + ' '; });
s.on('data', (b) => { out += b; });
s.on('end', () => { console.log(out); process.exit(0); });
s.on('error', (e) => { console.log('error ' + e.code); process.exit(0); });
`;

const UDP_CLIENT = `
const dgram = require('dgram');
const [ip, port] = process.argv.slice(1);
const u = dgram.createSocket('udp4');
u.on('message', (m) => { console.log(u.address().port + ' ' + m); process.exit(0); });
u.on('error', (e) => { console.log('error ' + e.code); process.exit(0); });
u.connect(+port, ip, () => u.send('hello'));
setTimeout(() => { console.log('timeout'); process.exit(0); }, 3000);
`;

function nodeScript(ns: Netns, script: string, args: string[]): string {
  return ns.exec(process.execPath, ['-e', script, ...args]).trim();
}

function ping(ns: Netns, ip: string): boolean {
  return /1 received/.test(ns.exec('ping', ['-c', '1', '-W', '2', ip], { allowFail: true }));
}

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

let node: Netns;
let outside: Netns;
let pod: Netns;
let obj: BpfObject;

beforeAll(async () => {
  node = createNetns('kmn');
  outside = createNetns('kmo');
  pod = createNetns('kmp');

  createVeth(node, 'up0', outside, 'eth0');
  node.ip('addr', 'add', `${NODE_IP}/24`, 'dev', 'up0');
  outside.ip('addr', 'add', `${OUTSIDE_IP}/24`, 'dev', 'eth0');

  // The pod the way CNI plugins wire one: a /32, and a link-local gateway on the host veth.
  createVeth(node, 'lxc0', pod, 'eth0');
  pod.ip('addr', 'add', `${POD_IP}/32`, 'dev', 'eth0');
  pod.ip('route', 'add', GATEWAY, 'dev', 'eth0', 'scope', 'link');
  pod.ip('route', 'add', 'default', 'via', GATEWAY, 'dev', 'eth0');
  node.ip('addr', 'add', `${GATEWAY}/32`, 'dev', 'lxc0');
  node.ip('route', 'add', `${POD_IP}/32`, 'dev', 'lxc0');
  node.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);

  const server = outside.spawn(process.execPath, ['-e', SERVER, OUTSIDE_IP, String(TCP_PORT), String(UDP_PORT)]);
  await waitForLine(server, 'ready');

  obj = loadObject(OBJ, { pinRoot: mountBpffs(), constants: masqConstants({ podCidr: POD_CIDR, masqIp: NODE_IP }) });
  onCleanup(() => obj.close());
  obj.map('kelp_nomasq4').update(nomasq4Key.encode({ cidr: POD_CIDR }), Buffer.from([1]));
});

afterAll(() => cleanupAll());

function attach(): void {
  const ifindex = node.ifindex('up0');
  const links = inNetns(node.path, () => [
    attachTc(obj.program('kelp_host_egress'), ifindex, 'egress'),
    attachTc(obj.program('kelp_host_ingress'), ifindex, 'ingress'),
  ]);
  onCleanup(() => links.forEach((l) => (l.detach(), l.close())));
}

function expectMasqueraded(reply: string, proto: number, serverPort: number): void {
  // "<pod's own port> <address> <port>" as the outside saw them.
  const m = /^(\d+) (\S+) (\d+)$/.exec(reply);
  expect(m, `client said: ${reply}`).not.toBeNull();
  const [podPort, seenIp, seenPort] = [Number(m![1]), m![2], Number(m![3])];
  expect(seenIp).toBe(NODE_IP);
  expect(seenPort).toBeGreaterThanOrEqual(61000);
  expect(seenPort).toBeLessThanOrEqual(65535);
  // It is kelp's mapping the outside saw.
  const orig = { saddr: POD_IP, daddr: OUTSIDE_IP, sport: podPort, dport: serverPort, proto, dir: NatDir.EGRESS };
  const fwd = obj.map('kelp_snat4').lookup(tuple4.encode(orig));
  expect(fwd && nat4Entry.decode(fwd)).toMatchObject({ addr: NODE_IP, port: seenPort });
  const ct = obj.map('kelp_ct4').lookup(tuple4.encode({ ...orig, dir: CtDir.EGRESS }));
  const e = ct4Entry.decode(ct!);
  expect(e.txPackets).toBeGreaterThan(0n);
  expect(e.rxPackets).toBeGreaterThan(0n);
}

describe('masquerade of pod traffic on the uplink', () => {
  it('without kelp the outside cannot answer the pod (it has no route to pod addresses)', () => {
    expect(ping(pod, OUTSIDE_IP)).toBe(false);
    expect(nodeScript(pod, TCP_CLIENT, [OUTSIDE_IP, String(TCP_PORT)])).toBe('timeout');
    expect(nodeScript(pod, UDP_CLIENT, [OUTSIDE_IP, String(UDP_PORT)])).toBe('timeout');
    // The node itself reaches the outside: the network is fine, the pod is the problem.
    expect(ping(node, OUTSIDE_IP)).toBe(true);
  });

  it('with kelp on the uplink: ping, TCP and UDP work, seen from the node address', () => {
    attach();
    expect(ping(pod, OUTSIDE_IP)).toBe(true);
    expectMasqueraded(nodeScript(pod, TCP_CLIENT, [OUTSIDE_IP, String(TCP_PORT)]), IpProto.TCP, TCP_PORT);
    expectMasqueraded(nodeScript(pod, UDP_CLIENT, [OUTSIDE_IP, String(UDP_PORT)]), IpProto.UDP, UDP_PORT);

    const icmp = dumpNat({ ct: obj.map('kelp_ct4'), snat: obj.map('kelp_snat4') }).filter((f) => f.orig.proto === IpProto.ICMP);
    expect(icmp.length).toBeGreaterThan(0);
    expect(icmp[0].nat?.addr).toBe(NODE_IP);
    expect(icmp[0].ct?.rxPackets).toBeGreaterThan(0n);
  });

  it('the node’s own traffic is left alone', () => {
    const out = nodeScript(node, TCP_CLIENT, [OUTSIDE_IP, String(TCP_PORT)]);
    const [ownPort, seenIp, seenPort] = out.split(' ');
    expect(seenIp).toBe(NODE_IP);
    expect(seenPort).toBe(ownPort);
  });

  it('an ICMP port-unreachable from the outside reaches the pod’s socket', () => {
    // Translated back (quoted packet included) so the pod's stack matches it to its socket.
    expect(nodeScript(pod, UDP_CLIENT, [OUTSIDE_IP, String(CLOSED_UDP_PORT)])).toBe('error ECONNREFUSED');
  });

  it('replies to a local endpoint go straight into the pod (bpf_redirect_peer)', () => {
    const epKey = endpointKey.encode({ ip4: POD_IP });
    const endpoints = obj.map('kelp_endpoints');
    endpoints.update(
      epKey,
      endpointInfo.encode({ ifindex: node.ifindex('lxc0'), epId: 11, flags: 0, mac: pod.mac('eth0'), nodeMac: node.mac('lxc0') }),
    );
    onCleanup(() => endpoints.delete(epKey));

    expect(ping(pod, OUTSIDE_IP)).toBe(true);
    expectMasqueraded(nodeScript(pod, TCP_CLIENT, [OUTSIDE_IP, String(TCP_PORT)]), IpProto.TCP, TCP_PORT);
    const delivered = readMetrics(metricsMaps(obj))[metricsId(11, Direction.TO_POD, 0)];
    // Echo reply + SYN-ACK + data/FIN at least.
    expect(delivered?.packets).toBeGreaterThanOrEqual(3);
  });
});
