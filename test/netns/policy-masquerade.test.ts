// Policy on traffic between a pod and the outside: the pod behind lxc.o, masquerade (host.o) on
// the node's uplink, an outside host, as in masquerade.test.ts. The pod accepts nothing and may
// open only TCP 8080 and UDP to the outside. Its connection works, the replies entering through
// host.c's reverse NAT and delivery on the pod's conntrack entry; other ports are dropped at its
// egress; the outside's own connections to it are dropped at its ingress (kelp_to_pod); an ICMP
// error about its UDP flow still reaches its socket.
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attachTc, BpfObject, inNetns } from '../../src/bpf';
import { DropReason } from '../../src/datapath/drop';
import { masqConstants, nomasq4Key } from '../../src/datapath/nat';
import { PolicyMaps, policyMapsOf, PolicyWriter, setPolicyEnforcement } from '../../src/datapath/policy';
import { IDENTITY_HOST, IDENTITY_WORLD, IPPROTO, PolicyEntry, PolicyVerdict, RULE_ISOLATED } from '../../src/datapath/policy-types';
import { Direction } from '../../src/datapath/structs';
import { loadWithVerifierLog, LXC_OBJECT, metricsId, metricsMaps, putEndpoint, readMetrics, TestEndpoint } from '../support/datapath';
import { cleanupAll, createNetns, createVeth, mountBpffs, Netns, onCleanup } from '../support/netns';

const NODE_IP = '198.18.0.1';
const OUTSIDE_IP = '198.18.0.2';
// A second outside address, in kelp_nomasq4: its connections to the pod and their replies are
// not translated (masquerade tracks only flows pods open).
const OUTSIDE_DIRECT = '198.18.0.3';
const POD_CIDR = '10.202.1.0/24';
const POD_IP = '10.202.1.5';
const GATEWAY = '169.254.1.1';
const POD_ID = 300;
const EP_ID = 21;

// Outside: TCP 8080 and 8081 and UDP 9090 answer with the peer address they see.
const OUTSIDE_SERVER = `
const net = require('net'), dgram = require('dgram');
let up = 0;
const ready = () => { if (++up === 3) console.log('ready'); };
for (const p of [8080, 8081]) net.createServer((s) => s.end(s.remoteAddress + ' ' + s.remotePort)).listen(p, '${OUTSIDE_IP}', ready);
const u = dgram.createSocket('udp4');
u.on('message', (m, r) => u.send(r.address + ' ' + r.port, r.port, r.address));
u.bind(9090, '${OUTSIDE_IP}', ready);
`;

const POD_SERVER = `
require('net').createServer((s) => s.end('pod')).listen(7070, '${POD_IP}', () => console.log('ready'));
`;

const TCP_CLIENT = `
const [ip, port, localAddress] = process.argv.slice(1);
const s = require('net').connect({ host: ip, port: +port, localAddress });
let out = '';
s.setTimeout(1500, () => { console.log('timeout'); process.exit(0); });
s.on('data', (b) => { out += b; });
s.on('end', () => { console.log(out); process.exit(0); });
s.on('error', (e) => { console.log('error ' + e.code); process.exit(0); });
`;

const UDP_CLIENT = `
const [ip, port] = process.argv.slice(1);
const u = require('dgram').createSocket('udp4');
u.on('message', (m) => { console.log(String(m)); process.exit(0); });
u.on('error', (e) => { console.log('error ' + e.code); process.exit(0); });
u.connect(+port, ip, () => u.send('hello'));
setTimeout(() => { console.log('timeout'); process.exit(0); }, 1500);
`;

const run = (ns: Netns, script: string, ...args: string[]) => ns.exec(process.execPath, ['-e', script, ...args], { allowFail: true }).trim();

function started(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.includes('ready')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`server exited with ${code}: ${buf}`)));
  });
}

let node: Netns;
let outside: Netns;
let pod: Netns;
let lxc: BpfObject;
let host: BpfObject;
let maps: PolicyMaps;

beforeAll(async () => {
  node = createNetns('kpmn');
  outside = createNetns('kpmo');
  pod = createNetns('kpmp');
  for (const ns of [outside, pod]) ns.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
  // The node routes between the pod and the uplink: forwarding on, as masquerade.test.ts.
  node.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);

  createVeth(node, 'up0', outside, 'eth0');
  node.ip('addr', 'add', `${NODE_IP}/24`, 'dev', 'up0');
  outside.ip('addr', 'add', `${OUTSIDE_IP}/24`, 'dev', 'eth0');
  outside.ip('addr', 'add', `${OUTSIDE_DIRECT}/24`, 'dev', 'eth0');
  // So that the outside can open connections to the pod itself (no NAT that way).
  outside.ip('route', 'add', POD_CIDR, 'via', NODE_IP);

  createVeth(node, 'lxc0', pod, 'eth0');
  pod.ip('addr', 'add', `${POD_IP}/32`, 'dev', 'eth0');
  pod.ip('route', 'add', GATEWAY, 'dev', 'eth0', 'scope', 'link');
  pod.ip('route', 'add', 'default', 'via', GATEWAY, 'dev', 'eth0');
  node.ip('addr', 'add', `${GATEWAY}/32`, 'dev', 'lxc0');
  node.ip('route', 'add', `${POD_IP}/32`, 'dev', 'lxc0');

  await started(outside.spawn(process.execPath, ['-e', OUTSIDE_SERVER]));
  await started(pod.spawn(process.execPath, ['-e', POD_SERVER]));

  // One pin root: lxc.o and host.o share the endpoint, policy and conntrack maps.
  const pinRoot = mountBpffs();
  lxc = loadWithVerifierLog(LXC_OBJECT, { pinRoot });
  host = loadWithVerifierLog(path.join(__dirname, '../../build/bpf/host.o'), { pinRoot, constants: masqConstants({ podCidr: POD_CIDR, masqIp: NODE_IP }) });
  onCleanup(() => {
    host.close();
    lxc.close();
  });
  for (const cidr of [POD_CIDR, `${OUTSIDE_DIRECT}/32`]) host.map('kelp_nomasq4').update(nomasq4Key.encode({ cidr }), Buffer.from([1]));
  const ep: TestEndpoint = { ip: POD_IP, ifindex: node.ifindex('lxc0'), epId: EP_ID, flags: 0, mac: pod.mac('eth0'), nodeMac: node.mac('lxc0') };
  putEndpoint(lxc.map('kelp_endpoints'), ep);
  const links = inNetns(node.path, () => [
    attachTc(lxc.program('kelp_from_pod'), ep.ifindex, 'ingress', { mode: 'tcx' }),
    attachTc(lxc.program('kelp_to_pod'), ep.ifindex, 'egress', { mode: 'tcx' }),
    attachTc(host.program('kelp_host_egress'), node.ifindex('up0'), 'egress'),
    attachTc(host.program('kelp_host_ingress'), node.ifindex('up0'), 'ingress'),
  ]);
  onCleanup(() => links.forEach((l) => (l.detach(), l.close())));

  maps = policyMapsOf(lxc);
  const v = (action: PolicyVerdict['action'], rule: number): PolicyVerdict => ({ action, tier: 'networkpolicy', policyId: 8, rule });
  const policy: PolicyEntry[] = [
    { epId: EP_ID, identity: IDENTITY_WORLD, direction: 'egress', protocol: IPPROTO.TCP, port: 8080, portPrefix: 16, verdict: v('allow', 0) },
    { epId: EP_ID, identity: IDENTITY_WORLD, direction: 'egress', protocol: IPPROTO.UDP, port: 0, portPrefix: 0, verdict: v('allow', 1) },
    { epId: EP_ID, identity: 0, direction: 'egress', port: 0, portPrefix: 0, verdict: v('deny', RULE_ISOLATED) },
    { epId: EP_ID, identity: 0, direction: 'ingress', port: 0, portPrefix: 0, verdict: v('deny', RULE_ISOLATED) },
  ];
  const ipcache = new Map([
    [`${POD_IP}/32`, POD_ID],
    [`${NODE_IP}/32`, IDENTITY_HOST],
    [`${GATEWAY}/32`, IDENTITY_HOST],
  ]);
  new PolicyWriter(maps).apply({ ipcache, policy, policies: new Map() });
});

afterAll(cleanupAll);

function drops(dir: number): number {
  return readMetrics(metricsMaps(lxc))[metricsId(EP_ID, dir, DropReason.POLICY_DENY)]?.packets ?? 0;
}

describe('policy on masqueraded traffic', () => {
  it('before enforcement: every port both ways', () => {
    expect(run(pod, TCP_CLIENT, OUTSIDE_IP, '8081')).toMatch(new RegExp(`^${NODE_IP} \\d+$`));
    expect(run(outside, TCP_CLIENT, POD_IP, '7070', OUTSIDE_DIRECT)).toBe('pod');
  });

  it('enforced: the allowed connection and its replies through host.c, nothing else', () => {
    setPolicyEnforcement(maps, true);
    expect(run(pod, TCP_CLIENT, OUTSIDE_IP, '8080')).toMatch(new RegExp(`^${NODE_IP} \\d+$`));
    expect(run(pod, UDP_CLIENT, OUTSIDE_IP, '9090')).toMatch(new RegExp(`^${NODE_IP} \\d+$`));
    // The replies came in through kelp_host_ingress's delivery, on the pod's flows.
    const flows = lxc.map('kelp_pct4').keys().length;
    expect(flows).toBeGreaterThanOrEqual(2);

    const egress = drops(Direction.FROM_POD);
    expect(run(pod, TCP_CLIENT, OUTSIDE_IP, '8081')).toBe('timeout');
    expect(drops(Direction.FROM_POD)).toBeGreaterThan(egress);

    const ingress = drops(Direction.TO_POD);
    expect(run(outside, TCP_CLIENT, POD_IP, '7070', OUTSIDE_DIRECT)).toBe('timeout');
    expect(drops(Direction.TO_POD)).toBeGreaterThan(ingress);
  });

  it('an ICMP error about an allowed flow reaches the pod, though its ingress accepts nothing', () => {
    setPolicyEnforcement(maps, true);
    expect(run(pod, UDP_CLIENT, OUTSIDE_IP, '9999')).toBe('error ECONNREFUSED');
  });
});
