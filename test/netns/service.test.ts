// A ClusterIP Service through kelp's per-packet path with real pods: namespaces joined to a node
// namespace by veths only (IP forwarding off, no address or route for the pods there, no
// iptables), lxc.o attached with tcx, and the load-balancing maps written by ServiceWriter. Every
// answer crossing from a client to a backend was translated by kelp_from_pod.
import { ChildProcess, execSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attachTc, BpfLink, BpfObject, inNetns } from '../../src/bpf';
import { lb4CtEntry, LbCtDir, serviceMapsOf, ServiceWriter } from '../../src/datapath/service';
import { tuple4 } from '../../src/datapath/nat';
import { BackendEntry, FRONTEND_DROP_NO_LOCAL, FRONTEND_EXTERNAL, FRONTEND_NODEPORT, ServiceMapsDesired } from '../../src/datapath/service-types';
import { maglevTable } from '../../src/service/maglev';
import { DEFAULT_LB_MAGLEV_TABLE_SIZE } from '../../src/datapath/service';
import path from 'node:path';
import { loadWithVerifierLog, LXC_OBJECT, makeTestPod, putEndpoint, TestPod } from '../support/datapath';
import { cleanupAll, createNetns, createVeth, mountBpffs, Netns, onCleanup, uniqueName } from '../support/netns';

const HOST_OBJECT = path.join(__dirname, '../../build/bpf/host.o');
const GATEWAY = '10.79.0.1';
const VIP = '10.96.7.7';

type Pod = TestPod;

let node: Netns;
let a: Pod;
let b: Pod;
let c: Pod;
let obj: BpfObject;
let writer: ServiceWriter;
let pinRoot: string;

function makePod(ip: string, epId: number): Pod {
  return makeTestPod(node, { ip, epId, gateway: GATEWAY, prefix: 'ksv' });
}

/** Servers that answer with their own address (TCP 8080, UDP 5353), with the client's (TCP 8081), and with the client's address and port (TCP 8083 per line, UDP 5354). */
async function serve(pod: Pod): Promise<ChildProcess> {
  const script = `
    const net = require('net'), dgram = require('dgram');
    let n = 0; const up = () => { if (++n === 5) console.log('listening'); };
    net.createServer((s) => { s.on('error', () => {}); s.on('data', () => s.write(s.remoteAddress + ':' + s.remotePort + '\\n')); }).listen(8083, '0.0.0.0', up);
    const e = dgram.createSocket('udp4'); e.on('message', (m, r) => e.send(r.address + ':' + r.port, r.port, r.address)); e.bind(5354, '0.0.0.0', up);
    net.createServer((s) => { s.on('error', () => {}); s.end(s.remoteAddress); }).listen(8081, '0.0.0.0', up);
    net.createServer((s) => { s.on('error', () => {}); s.end('${pod.ep.ip}'); }).listen(8080, '0.0.0.0', up);
    const u = dgram.createSocket('udp4'); u.on('message', (m, r) => u.send('${pod.ep.ip}', r.port, r.address)); u.bind(5353, '0.0.0.0', up);
  `;
  const child = pod.ns.spawn(process.execPath, ['-e', script]);
  await new Promise<void>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('listening')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`servers in ${pod.ns.name} exited with ${code}`)));
  });
  return child;
}

/** `n` TCP connections to VIP:80 (or `to`): each answer or error, and the time each took. */
function tcpAsk(from: Pod | { ns: Netns }, n: number, to = { ip: VIP, port: 80 }, timeoutMs = 2000): Array<{ answer: string; ms: number }> {
  const script = `
    const net = require('net'); const out = []; let left = ${n};
    const one = () => {
      const t0 = process.hrtime.bigint(); let data = '';
      const s = net.connect(${to.port}, '${to.ip}');
      const timer = setTimeout(() => { s.destroy(); done('timeout'); }, ${timeoutMs});
      const done = (answer) => { clearTimeout(timer); out.push({ answer, ms: Number(process.hrtime.bigint() - t0) / 1e6 }); if (--left) one(); else console.log(JSON.stringify(out)); };
      s.on('data', (d) => data += d); s.on('end', () => done(data)); s.on('error', (e) => done('error ' + e.code));
    };
    one();
  `;
  return JSON.parse(from.ns.exec(process.execPath, ['-e', script]).trim());
}

/**
 * One connected UDP socket (one flow) asking VIP:53 once per step: answers in order. Between
 * steps it waits for `/tmp/<gate>-<i>` to exist, so the test can change the service mid-flow.
 */
function udpFlow(from: Pod, steps: number, gate: string): Promise<string[]> {
  const script = `
    const fs = require('fs'); const u = require('dgram').createSocket('udp4'); const out = [];
    let i = 0;
    const ask = () => {
      const timer = setTimeout(() => { out.push('timeout'); next(); }, 1000);
      u.once('message', (m) => { clearTimeout(timer); out.push(m.toString()); next(); });
      u.send('q');
    };
    const next = () => {
      if (++i === ${steps}) { console.log(JSON.stringify(out)); u.close(); return; }
      const wait = () => fs.existsSync('/tmp/${gate}-' + i) ? ask() : setTimeout(wait, 5);
      wait();
    };
    u.on('error', (e) => { out.push('error ' + e.code); next(); });
    u.connect(53, '${VIP}', ask);
  `;
  const child = from.ns.spawn(process.execPath, ['-e', script]);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim())) : reject(new Error(`udp client exited with ${code}: ${out}`))));
  });
}

/** A connected UDP socket sends once to VIP:53 and reports what came back (an error event for an ICMP error) and when. */
function udpRefused(from: Pod): { answer: string; ms: number } {
  const script = `
    const u = require('dgram').createSocket('udp4'); let t0;
    const done = (answer) => { console.log(JSON.stringify({ answer, ms: Number(process.hrtime.bigint() - t0) / 1e6 })); process.exit(0); };
    setTimeout(() => done('timeout'), 1000);
    u.on('message', (m) => done(m.toString()));
    u.on('error', (e) => done('error ' + e.code));
    u.connect(53, '${VIP}', () => { t0 = process.hrtime.bigint(); u.send('q'); });
  `;
  return JSON.parse(from.ns.exec(process.execPath, ['-e', script]).trim());
}

const backend = (pod: Pod, port: number, backendId: number): BackendEntry => ({ backendId, address: pod.ep.ip, port, flags: 1 });

function desired(tcp: BackendEntry[], udp: BackendEntry[]): ServiceMapsDesired {
  const table = (bs: BackendEntry[]) =>
    bs.length > 1 ? Uint16Array.from(maglevTable(bs.map((x) => `${x.address}:${x.port}`), { tableSize: DEFAULT_LB_MAGLEV_TABLE_SIZE })) : undefined;
  return {
    frontends: [
      { address: VIP, port: 80, protocol: 'TCP', svcId: 1, setId: tcp.length ? 1 : 0, count: tcp.length, flags: 0, affinityTimeout: 0 },
      { address: VIP, port: 53, protocol: 'UDP', svcId: 2, setId: udp.length ? 2 : 0, count: udp.length, flags: 0, affinityTimeout: 0 },
    ],
    sets: [
      ...(tcp.length ? [{ setId: 1, backends: tcp, maglev: table(tcp) }] : []),
      ...(udp.length ? [{ setId: 2, backends: udp, maglev: table(udp) }] : []),
    ],
    sourceRanges: new Map(),
    names: new Map([
      [1, 'default/web:http'],
      [2, 'default/dns:dns'],
    ]),
  };
}

beforeAll(async () => {
  node = createNetns('ksn');
  node.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
  a = makePod('10.79.0.2', 301);
  b = makePod('10.79.0.3', 302);
  c = makePod('10.79.0.4', 303);
  pinRoot = mountBpffs();
  obj = loadWithVerifierLog(LXC_OBJECT, { pinRoot });
  const links: BpfLink[] = [];
  onCleanup(() => {
    for (const l of links) l.close();
    obj.close();
  });
  inNetns(node.path, () => {
    for (const pod of [a, b, c]) {
      links.push(attachTc(obj.program('kelp_from_pod'), pod.ep.ifindex, 'ingress', { mode: 'tcx' }));
      links.push(attachTc(obj.program('kelp_to_pod'), pod.ep.ifindex, 'egress', { mode: 'tcx' }));
    }
  });
  for (const pod of [a, b, c]) putEndpoint(obj.map('kelp_endpoints'), pod.ep);
  writer = new ServiceWriter(serviceMapsOf(obj));
  const servers = [await serve(b), await serve(c), await serve(a)];
  onCleanup(() => servers.forEach((s) => s.kill('SIGKILL')));
});

afterAll(cleanupAll);

// The node's uplink and a client outside it: NodePort on the node's address, answered by a pod.
const NODE_IP = '198.18.7.1';
const OUTSIDE_IP = '198.18.7.2';

describe('NodePort from outside the node (host.o on the uplink)', () => {
  let outside: Netns;

  beforeAll(() => {
    outside = createNetns('kso');
    createVeth(node, 'up0', outside, 'eth0');
    node.ip('addr', 'add', `${NODE_IP}/24`, 'dev', 'up0');
    outside.ip('addr', 'add', `${OUTSIDE_IP}/24`, 'dev', 'eth0');
    // bpf_fib_lookup routes the replies only from an interface that forwards: B's host veth alone.
    node.exec('sysctl', ['-qw', `net.ipv4.conf.${b.hostVeth}.forwarding=1`]);
    const host = loadWithVerifierLog(HOST_OBJECT, { pinRoot });
    onCleanup(() => host.close());
    const links = inNetns(node.path, () => [
      attachTc(host.program('kelp_host_ingress'), node.ifindex('up0'), 'ingress', { mode: 'tcx' }),
      attachTc(host.program('kelp_host_egress'), node.ifindex('up0'), 'egress', { mode: 'tcx' }),
    ]);
    onCleanup(() => links.forEach((l) => l.close()));
  });

  function nodePorts(): ServiceMapsDesired {
    const d = desired([backend(b, 8081, 7)], []);
    const ext = FRONTEND_EXTERNAL | FRONTEND_NODEPORT;
    d.frontends = [
      { address: NODE_IP, port: 30080, protocol: 'TCP', svcId: 3, setId: 1, count: 1, flags: ext, affinityTimeout: 0 },
      { address: NODE_IP, port: 30081, protocol: 'TCP', svcId: 4, setId: 0, count: 0, flags: ext | FRONTEND_DROP_NO_LOCAL, affinityTimeout: 0 },
      { address: NODE_IP, port: 30082, protocol: 'TCP', svcId: 5, setId: 0, count: 0, flags: ext, affinityTimeout: 0 },
      // A ClusterIP is not reachable from outside.
      { address: NODE_IP, port: 30083, protocol: 'TCP', svcId: 6, setId: 1, count: 1, flags: 0, affinityTimeout: 0 },
    ];
    return d;
  }

  it('reaches a local backend with the client address preserved; the replies come from the node address and port it used', () => {
    writer.apply(nodePorts());
    expect(tcpAsk({ ns: outside }, 3, { ip: NODE_IP, port: 30080 }).map((r) => r.answer)).toEqual([OUTSIDE_IP, OUTSIDE_IP, OUTSIDE_IP]);
  });

  it("a backend on the node's own network (host network): the node's replies leave from the NodePort", async () => {
    const script = `require('net').createServer((s) => s.end('node ' + s.remoteAddress)).listen(9000, '${NODE_IP}', () => console.log('listening'))`;
    const server = node.spawn(process.execPath, ['-e', script]);
    onCleanup(() => server.kill('SIGKILL'));
    await new Promise<void>((resolve) => server.stdout!.on('data', (d: Buffer) => d.toString().includes('listening') && resolve()));
    const d = nodePorts();
    d.sets.push({ setId: 9, backends: [{ backendId: 9, address: NODE_IP, port: 9000, flags: 0 }] });
    d.frontends.push({ address: NODE_IP, port: 30090, protocol: 'TCP', svcId: 9, setId: 9, count: 1, flags: FRONTEND_EXTERNAL | FRONTEND_NODEPORT, affinityTimeout: 0 });
    writer.apply(d);
    expect(tcpAsk({ ns: outside }, 2, { ip: NODE_IP, port: 30090 }).map((r) => r.answer)).toEqual([`node ${OUTSIDE_IP}`, `node ${OUTSIDE_IP}`]);
  });

  it('no backend: refused at once; externalTrafficPolicy Local without a local one: dropped (the client times out); a ClusterIP-only frontend does not answer from outside', () => {
    writer.apply(nodePorts());
    const refused = tcpAsk({ ns: outside }, 1, { ip: NODE_IP, port: 30082 });
    expect(refused[0].answer).toBe('error ECONNREFUSED');
    expect(refused[0].ms).toBeLessThan(100);
    expect(tcpAsk({ ns: outside }, 1, { ip: NODE_IP, port: 30081 }, 300)[0].answer).toBe('timeout');
    // Not translated: the node's own stack answers (nothing listens there).
    expect(tcpAsk({ ns: outside }, 1, { ip: NODE_IP, port: 30083 })[0].answer).toBe('error ECONNREFUSED');
    expect(node.exec('ss', ['-Htn', 'state', 'all']).includes('30083')).toBe(false);
  });
});

describe('a ClusterIP through the per-packet path', () => {
  it('TCP connections to the VIP are answered by both backends, spread by Maglev', () => {
    writer.apply(desired([backend(b, 8080, 1), backend(c, 8080, 2)], [backend(b, 5353, 3)]));
    const answers = tcpAsk(a, 24).map((r) => r.answer);
    expect(answers.filter((x) => x !== b.ep.ip && x !== c.ep.ip)).toEqual([]);
    expect(new Set(answers)).toEqual(new Set([b.ep.ip, c.ep.ip]));
  });

  it('a UDP flow stays on its backend, and moves to a live one at its next packet when the agent removes it', async () => {
    writer.apply(desired([backend(b, 8080, 1)], [backend(b, 5353, 3), backend(c, 5353, 4)]));
    const gate = uniqueName('ksvgate');
    const flow = udpFlow(a, 6, gate);
    const open = (i: number) => sh(`touch /tmp/${gate}-${i}`);
    onCleanup(() => sh(`rm -f /tmp/${gate}-*`));
    for (const i of [1, 2]) open(i);
    await new Promise((r) => setTimeout(r, 300));
    // B leaves the set while its server still runs: a flow on B must move to C at its next
    // packet (only kelp can move it), a flow on C stays there.
    writer.apply(desired([backend(b, 8080, 1)], [backend(c, 5353, 4)]));
    for (const i of [3, 4, 5]) open(i);
    const answers = await flow;
    expect(answers.slice(0, 3).every((x) => x === answers[0])).toBe(true);
    expect([b.ep.ip, c.ep.ip]).toContain(answers[0]);
    expect(answers.slice(3)).toEqual([c.ep.ip, c.ep.ip, c.ep.ip]);
  });

  it('no backend: a TCP connect is refused in milliseconds (RST from kelp), a connected UDP socket gets ECONNREFUSED', async () => {
    writer.apply(desired([], []));
    const r = tcpAsk(a, 5);
    expect(r.map((x) => x.answer)).toEqual(Array(5).fill('error ECONNREFUSED'));
    const worst = Math.max(...r.map((x) => x.ms));
    console.log(`no-backend TCP connect refused in ${r.map((x) => x.ms.toFixed(2)).join(', ')} ms`);
    expect(worst).toBeLessThan(100);
    const udp = udpRefused(a);
    console.log(`no-backend connected UDP: ${udp.answer} after ${udp.ms.toFixed(2)} ms`);
    expect(udp.answer).toBe('error ECONNREFUSED');
    expect(udp.ms).toBeLessThan(100);
  });

  it("one client port reaching one backend through two frontends at once: the second flow gets a client port of its own (61000-65535) and the first is undisturbed, over TCP and UDP; an ICMP error quoting a moved port reaches the client's socket", () => {
    const VIP2 = '10.96.7.8';
    const VIP3 = '10.96.7.9';
    const fe = (address: string, port: number, protocol: 'TCP' | 'UDP', id: number) => ({ address, port, protocol, svcId: id, setId: id, count: 1, flags: 0, affinityTimeout: 0 });
    const one = (setId: number, port: number, backendId: number) => ({ setId, backends: [backend(b, port, backendId)] });
    writer.apply({
      frontends: [fe(VIP, 80, 'TCP', 11), fe(VIP2, 80, 'TCP', 12), fe(VIP, 53, 'UDP', 13), fe(VIP2, 53, 'UDP', 14), fe(VIP3, 53, 'UDP', 15), fe(VIP3, 54, 'UDP', 16)],
      // Two frontends each over one backend: b's echo servers, and a UDP port nothing listens on.
      sets: [one(11, 8083, 21), one(12, 8083, 21), one(13, 5354, 22), one(14, 5354, 22), one(15, 5999, 23), one(16, 5999, 23)],
      sourceRanges: new Map(),
      names: new Map([11, 12, 13, 14, 15, 16].map((id) => [id, `default/clash-${id}:p`])),
    });
    // The same local port for both sockets of each pair (SO_REUSEADDR): what two Services over the
    // same pods meet when the client's kernel picks one port for two destinations.
    const py = `
import json, socket
out = {}
def sock(kind, port, ip, dport):
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', port))
    s.settimeout(2)
    s.connect((ip, dport))
    return s
def ask(s, key):
    try:
        s.send(b'q\\n')
        out[key] = s.recv(100).decode().strip()
    except ConnectionRefusedError:
        out[key] = 'refused'
    except socket.timeout:
        out[key] = 'timeout'
t1 = sock(socket.SOCK_STREAM, 40123, '${VIP}', 80); ask(t1, 'tcp1')
t2 = sock(socket.SOCK_STREAM, 40123, '${VIP2}', 80); ask(t2, 'tcp2')
ask(t1, 'tcp1again')
u1 = sock(socket.SOCK_DGRAM, 40124, '${VIP}', 53); ask(u1, 'udp1')
u2 = sock(socket.SOCK_DGRAM, 40124, '${VIP2}', 53); ask(u2, 'udp2')
ask(u1, 'udp1again')
e1 = sock(socket.SOCK_DGRAM, 40125, '${VIP3}', 53); ask(e1, 'closed1')
e2 = sock(socket.SOCK_DGRAM, 40125, '${VIP3}', 54); ask(e2, 'closed2')
print(json.dumps(out))
`;
    const out = JSON.parse(a.ns.exec('python3', ['-c', py]).trim()) as Record<string, string>;
    const moved = (answer: string) => Number(answer.split(':')[1]);
    // The backend sees the first flow from the client's own port, the second from a moved one.
    expect(out.tcp1).toBe(`${a.ep.ip}:40123`);
    expect(out.tcp1again).toBe(`${a.ep.ip}:40123`);
    expect(out.tcp2).toMatch(new RegExp(`^${a.ep.ip.replace(/\./g, '\\.')}:\\d+$`));
    expect(moved(out.tcp2)).toBeGreaterThanOrEqual(61000);
    expect(out.udp1).toBe(`${a.ep.ip}:40124`);
    expect(out.udp1again).toBe(`${a.ep.ip}:40124`);
    expect(moved(out.udp2)).toBeGreaterThanOrEqual(61000);
    // The backend's port unreachable quotes the moved port: put back, the client's socket hears it.
    expect([out.closed1, out.closed2]).toEqual(['refused', 'refused']);
    // kelp_lb4_ct: the second TCP flow's forward entry names the port written, its reverse entry
    // (keyed by that port) the client's own.
    const rows = obj.map('kelp_lb4_ct').lookupBatch().map(([k, v]) => ({ key: tuple4.decode(k), e: lb4CtEntry.decode(v) }));
    const fwd = rows.find((r) => r.key.dir === LbCtDir.FORWARD && r.key.daddr === VIP2 && r.key.sport === 40123 && r.key.proto === 6);
    expect(fwd?.e.natPort).toBe(moved(out.tcp2));
    const rev = rows.find((r) => r.key.dir === LbCtDir.REVERSE && r.key.saddr === b.ep.ip && r.key.dport === moved(out.tcp2) && r.key.proto === 6);
    expect(rev?.e).toMatchObject({ address: VIP2, port: 80, natAddress: a.ep.ip, natPort: 40123 });
    const first = rows.find((r) => r.key.dir === LbCtDir.FORWARD && r.key.daddr === VIP && r.key.sport === 40123 && r.key.proto === 6);
    expect(first?.e.natPort).toBe(0);
  });

  it('hairpin: a pod reaches itself through its own Service', () => {
    writer.apply(desired([backend(a, 8080, 5)], []));
    expect(tcpAsk(a, 3).map((r) => r.answer)).toEqual([a.ep.ip, a.ep.ip, a.ep.ip]);
  });
});

function sh(cmd: string): void {
  execSync(cmd);
}
