// Socket LB and the per-packet path together, as on a node: pods joined to the node by veths with
// lxc.o on them (no address, route or forwarding for the pods in the node: kelp carries every
// packet), sock.o on a cgroup of this test's, both over the same pinned load-balancing maps.
// A pod's client gets the same service either way: translated at connect() ('all': its packets
// carry the backend's address from the first, so the service conntrack stays empty) or, when
// socket LB leaves pods alone ('host-only'), by lxc.o's DNAT on each packet. The agent's two
// Datapath calls (enableSocketLb, destroyUdpSocketsTo) are exercised as the agent makes them.
import { spawn } from 'node:child_process';
import { mkdirSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attachTcFilter, inNetns } from '../../src/bpf';
import { enableSocketLb } from '../../src/datapath/attach/cgroup';
import { LinkPins } from '../../src/datapath/attach/pins';
import { POD_FILTER, POD_PROGRAMS } from '../../src/datapath/attach/pod';
import { Datapath } from '../../src/datapath/datapath';
import { DatapathObjects } from '../../src/datapath/objects';
import { ServiceWriter } from '../../src/datapath/service';
import type { ServiceMapsDesired } from '../../src/datapath/service-types';
import type { SocketLbMode } from '../../src/datapath/sock';
import { silentLogger } from '../../src/log';
import { cleanupAll, createNetns, createVeth, mountBpffs, Netns, onCleanup, sh, uniqueName } from '../support/netns';

const VIP = '10.96.0.20';
const VIP_EMPTY = '10.96.0.21';
const GATEWAY = '10.77.0.1';
const ECONNREFUSED = 111;
const ECONNABORTED = 103;

interface Pod {
  ns: Netns;
  ip: string;
}

let node: Netns;
let dp: Datapath;
let client: Pod;
let b1: Pod;
let b2: Pod;
let cgroup: string;
let bpfRoot: string;
let desired: ServiceMapsDesired;

function makePod(ip: string, id: number): Pod {
  const ns = createNetns('kfp');
  const hostVeth = uniqueName('kfh');
  createVeth(node, hostVeth, ns, 'eth0');
  ns.ip('addr', 'add', `${ip}/24`, 'dev', 'eth0');
  ns.ip('route', 'add', 'default', 'via', GATEWAY);
  const hostIfindex = node.ifindex(hostVeth);
  inNetns(node.path, () => {
    for (const [dir, prog] of POD_PROGRAMS) attachTcFilter(dp.lxc.program(prog), hostIfindex, dir, POD_FILTER);
  });
  dp.upsertEndpoint({ id, ips: [{ address: ip }], hostIfindex, hostIfname: hostVeth, podMac: ns.mac('eth0'), hostMac: node.mac(hostVeth) });
  return { ns, ip };
}

const SERVER = `
import socket, sys
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("0.0.0.0", 8080)); t.listen(64)
print("ready", flush=True)
while True:
    c, _ = t.accept(); c.sendall(sys.argv[1].encode()); c.close()
`;

const CLIENT = `
import json, socket, sys
out = []
for addr in sys.argv[1:]:
    r = {}
    try:
        s = socket.socket(); s.settimeout(3); s.connect((addr, 80))
        r["peer"] = "%s:%d" % s.getpeername(); r["data"] = s.recv(100).decode()
    except OSError as e:
        r["errno"] = e.errno
    out.append(r)
print(json.dumps(out))
`;

/** Connects from `pod`, a process of the test's cgroup, to port 80 of each address. */
function connectFrom(pod: Pod, ...addrs: string[]): Array<{ peer?: string; data?: string; errno?: number }> {
  const script = `echo $$ > ${cgroup}/cgroup.procs && exec python3 -c "$0" "$@"`;
  return JSON.parse(sh('nsenter', [`--net=${pod.ns.path}`, 'sh', '-c', script, CLIENT, ...addrs]));
}

function enable(mode: SocketLbMode): void {
  const objects = new DatapathObjects(bpfRoot, silentLogger);
  onCleanup(() => objects.close());
  inNetns(node.path, () => enableSocketLb(objects, new LinkPins(bpfRoot), { mode, cgroupRoot: cgroup }, silentLogger));
}

const ctEntries = () => dp.map('kelp_lb4_ct').keys().length;

beforeAll(async () => {
  node = createNetns('kfn');
  node.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=0']);
  bpfRoot = mountBpffs();
  dp = new Datapath({ bpfRoot, log: silentLogger });
  onCleanup(() => dp.close());
  client = makePod('10.77.0.2', 301);
  b1 = makePod('10.77.0.3', 302);
  b2 = makePod('10.77.0.4', 303);
  for (const [b, name] of [
    [b1, 'b1'],
    [b2, 'b2'],
  ] as const) {
    const srv = b.ns.spawn('python3', ['-c', SERVER, name]);
    await new Promise<void>((resolve) => srv.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve()));
  }
  desired = {
    frontends: [
      { address: VIP, port: 80, protocol: 'TCP', svcId: 1, setId: 1, count: 2, flags: 0, affinityTimeout: 0 },
      { address: VIP_EMPTY, port: 80, protocol: 'TCP', svcId: 2, setId: 0, count: 0, flags: 0, affinityTimeout: 0 },
    ],
    sets: [
      {
        setId: 1,
        backends: [
          { backendId: 1, address: b1.ip, port: 8080, flags: 0 },
          { backendId: 2, address: b2.ip, port: 8080, flags: 0 },
        ],
      },
    ],
    sourceRanges: new Map(),
    names: new Map(),
  };
  new ServiceWriter(dp.serviceMaps()).apply(desired);
  cgroup = path.join('/sys/fs/cgroup/unified', uniqueName('kelpsf'));
  mkdirSync(cgroup);
  onCleanup(() => rmdirSync(cgroup));
  onCleanup(() => enableSocketLb(new DatapathObjects(bpfRoot, silentLogger), new LinkPins(bpfRoot), { mode: 'off' }, silentLogger));
});

afterAll(cleanupAll);

describe('socket LB with the per-packet path as fall-back', () => {
  it("host-only: a pod's connect() is left to lxc.o, which translates each packet", () => {
    enable('host-only');
    const before = ctEntries();
    const [ok, refused] = connectFrom(client, VIP, VIP_EMPTY);
    expect(ok).toMatchObject({ peer: `${VIP}:80` });
    expect(['b1', 'b2']).toContain(ok.data);
    expect(ctEntries()).toBeGreaterThan(before);
    // No backend: the per-packet path answers the SYN with a RST.
    expect(refused.errno).toBe(ECONNREFUSED);
  });

  it("all (the agent's Datapath.enableSocketLb): the pod's connect() is translated at the socket, and no packet needs translating", () => {
    inNetns(node.path, () => dp.enableSocketLb({ mode: 'all', cgroupRoot: cgroup }));
    expect(() => dp.enableSocketLb({ mode: 'off' })).toThrow(/set already/);
    for (const k of dp.map('kelp_lb4_ct').keys()) dp.map('kelp_lb4_ct').delete(k);
    const rs = connectFrom(client, VIP, VIP, VIP, VIP, VIP_EMPTY);
    for (const r of rs.slice(0, 4)) {
      expect(r).toMatchObject({ peer: `${VIP}:80` });
      expect(['b1', 'b2']).toContain(r.data);
    }
    expect(rs[4].errno).toBe(ECONNREFUSED);
    expect(ctEntries()).toBe(0);
  });

  it("Datapath.destroyUdpSocketsTo: a pod's UDP socket to a backend that left, through the pod's netns", async () => {
    const code = `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("${VIP}", 53)); print("ready", "%s:%d" % s.getsockname(), flush=True)
try:
    s.recv(100)
except OSError as e:
    print("error", e.errno, flush=True)
`;
    // A service over b2's UDP 53, reached from the pod's cgroup: its socket is pointed at b2.
    new ServiceWriter(dp.serviceMaps()).apply({
      ...desired,
      frontends: [...desired.frontends, { address: VIP, port: 53, protocol: 'UDP', svcId: 3, setId: 2, count: 1, flags: 0, affinityTimeout: 0 }],
      sets: [...desired.sets, { setId: 2, backends: [{ backendId: 3, address: b2.ip, port: 53, flags: 0 }] }],
    });
    const script = `echo $$ > ${cgroup}/cgroup.procs && exec python3 -c "$0"`;
    const child = spawn('nsenter', [`--net=${client.ns.path}`, 'sh', '-c', script, code], { stdio: ['ignore', 'pipe', 'inherit'] });
    onCleanup(() => child.exitCode === null && child.kill('SIGKILL'));
    let out = '';
    await new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => (out += d.toString()).includes('ready') && resolve()));
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    new ServiceWriter(dp.serviceMaps()).apply(desired);
    const destroyed = inNetns(node.path, () => dp.destroyUdpSocketsTo([{ address: b2.ip, port: 53 }], { netns: [client.ns.path] }));
    expect(destroyed).toEqual([expect.objectContaining({ netns: client.ns.path, peer: b2.ip, peerPort: 53, local: client.ip, err: 0 })]);
    await exited;
    expect(out).toContain(`error ${ECONNABORTED}`);
  });
});
