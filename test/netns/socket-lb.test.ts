// Socket-level load balancing on a cgroup this test makes: processes moved into it connect to a
// ClusterIP and reach a backend pod with no per-packet translation anywhere (nothing on the node
// routes or translates the VIP: the pods' namespaces even route it to `unreachable`), see the VIP
// as their peer, are refused at once when the service has no backend, and a connected UDP
// socket to a backend that leaves is destroyed so a DNS-like client moves to a remaining one.
// host-only mode translates the node's sockets and leaves a pod's alone.
import { ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BpfObject, inNetns, netnsCookie } from '../../src/bpf';
import { attachSocketLb, CGROUP_PROGRAMS, detachSocketLb, enableSocketLb } from '../../src/datapath/attach/cgroup';
import { LinkPins } from '../../src/datapath/attach/pins';
import { DatapathObjects } from '../../src/datapath/objects';
import { DEFAULT_LB_MAGLEV_TABLE_SIZE, lb4Affinity, lb4AffinityKey, serviceMapsOf, ServiceWriter } from '../../src/datapath/service';
import { FRONTEND_AFFINITY, FRONTEND_SOURCE_RANGES } from '../../src/datapath/service-types';
import type { BackendEntry, FrontendEntry, L4Protocol, ServiceMapsDesired } from '../../src/datapath/service-types';
import { sockConstants, SocketLbMode, UdpSocketReaper } from '../../src/datapath/sock';
import { silentLogger } from '../../src/log';
import { cleanupAll, createNetns, createVeth, mountBpffs, Netns, onCleanup, sh, uniqueName } from '../support/netns';

const VIP = '10.96.0.10';
const VIP_EMPTY = '10.96.0.11';
const ECONNREFUSED = 111;
const ECONNABORTED = 103;
const EHOSTUNREACH = 113;
const EDESTADDRREQ = 89;

interface Pod {
  ns: Netns;
  ip: string;
  name: string;
}

let node: Netns;
let b1: Pod;
let b2: Pod;
let client: Pod;
let cgroup: string;
let bpfRoot: string;
let pins: LinkPins;

function makePod(n: number, name: string): Pod {
  const ns = createNetns('ksp');
  const hostVeth = uniqueName('ksh');
  createVeth(node, hostVeth, ns, 'eth0');
  node.ip('addr', 'add', `10.79.${n}.1/24`, 'dev', hostVeth);
  ns.ip('addr', 'add', `10.79.${n}.2/24`, 'dev', 'eth0');
  ns.ip('route', 'add', 'default', 'via', `10.79.${n}.1`);
  // Whatever is not translated at the socket fails at once instead of timing out.
  ns.ip('route', 'add', 'unreachable', '10.96.0.0/16');
  return { ns, ip: `10.79.${n}.2`, name };
}

/** TCP 8080 and UDP 5353 answering with the pod's name. */
const SERVER = `
import socket, sys, threading
name = sys.argv[1].encode()
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("0.0.0.0", 8080)); t.listen(64)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 5353))
def udp():
    while True:
        d, a = u.recvfrom(100); u.sendto(name, a)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
while True:
    c, _ = t.accept(); c.sendall(name); c.close()
`;

/**
 * One run of a client in the test's cgroup, in `ns`: each op is [kind, addr, port]; prints one
 * JSON result per op. nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup2 mount.
 */
const CLIENT = `
import json, socket, sys, time
def run(kind, addr, port, src=None):
    t0 = time.monotonic()
    r = {}
    try:
        if kind == "tcp":
            s = socket.socket(); s.settimeout(2)
            if src: s.bind((src, 0))
            s.connect((addr, port))
            r["peer"] = "%s:%d" % s.getpeername(); r["data"] = s.recv(100).decode()
        elif kind == "tcp6":
            s = socket.socket(socket.AF_INET6); s.settimeout(2); s.connect(("::ffff:" + addr, port))
            r["peer"] = "[%s]:%d" % s.getpeername()[:2]; r["data"] = s.recv(100).decode()
        elif kind == "udpu6":
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(2)
            s.sendto(b"q", ("::ffff:" + addr, port)); d, a = s.recvfrom(100); r["data"] = d.decode(); r["peer"] = "[%s]:%d" % a[:2]
        elif kind == "udpc":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2); s.connect((addr, port))
            s.send(b"q"); r["data"] = s.recv(100).decode(); r["peer"] = "%s:%d" % s.getpeername()
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
            s.sendto(b"q", (addr, port)); d, a = s.recvfrom(100); r["data"] = d.decode(); r["peer"] = "%s:%d" % a
    except OSError as e:
        r["errno"] = e.errno if e.errno is not None else -1
    r["ms"] = (time.monotonic() - t0) * 1000
    return r
print(json.dumps([run(*op) for op in json.loads(sys.argv[1])]))
`;

/** [kind, address, port, TCP source address to bind first]; *6: a dual-stack socket to ::ffff:address. */
type Op = ['tcp' | 'udpc' | 'udpu' | 'tcp6' | 'udpu6', string, number] | ['tcp', string, number, string];
interface Result {
  peer?: string;
  data?: string;
  errno?: number;
  ms: number;
}

function inCgroup(ns: Netns, code: string, args: string[]): string[] {
  return [`--net=${ns.path}`, 'sh', '-c', `echo $$ > ${cgroup}/cgroup.procs && exec python3 -c "$0" "$@"`, code, ...args];
}

function runClient(ns: Netns, ops: Op[]): Result[] {
  return JSON.parse(sh('nsenter', inCgroup(ns, CLIENT, [JSON.stringify(ops)]))) as Result[];
}

function spawnTracked(cmd: string, args: string[]): ChildProcess {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  onCleanup(() => {
    if (child.exitCode === null && child.pid) child.kill('SIGKILL');
  });
  return child;
}

/** A child's stdout as whole lines, read in order: next() waits for the next line matching re. */
class Lines {
  private readonly lines: string[] = [];
  private partial = '';
  private cursor = 0;
  private wake?: () => void;

  constructor(child: ChildProcess) {
    child.stdout!.on('data', (d: Buffer) => {
      const parts = (this.partial + d.toString()).split('\n');
      this.partial = parts.pop()!;
      this.lines.push(...parts);
      this.wake?.();
    });
  }

  async next(re: RegExp, timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.cursor < this.lines.length) {
        const l = this.lines[this.cursor++];
        if (re.test(l)) return l;
      }
      if (Date.now() > deadline) throw new Error(`no line matching ${re} after: ${this.lines.join(' | ')}`);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 100);
      });
    }
  }
}

// --- the maps, through the service writer ----------------------------------------------------

const be = (pod: Pod, port: number, backendId: number): BackendEntry => ({ backendId, address: pod.ip, port, flags: 0 });
const fe = (address: string, port: number, protocol: L4Protocol, svcId: number, setId: number, count: number, flags = 0): FrontendEntry => ({
  address,
  port,
  protocol,
  svcId,
  setId,
  count,
  flags,
  affinityTimeout: flags & FRONTEND_AFFINITY ? 60 : 0,
});

/**
 * The services of this test: TCP VIP:80 (set 1) and UDP VIP:53 (set 2) over b1 and b2, VIP:81
 * with ClientIP affinity, VIP:82 with source ranges (10.79.1.1 only), and VIP_EMPTY without
 * backends. `udp`: set 2's backends; `maglev1`: set 1's table.
 */
function services(o: { udp?: BackendEntry[]; maglev1?: Uint16Array } = {}): ServiceMapsDesired {
  const udp = o.udp ?? [be(b1, 5353, 21), be(b2, 5353, 22)];
  return {
    frontends: [
      fe(VIP, 80, 'TCP', 1, 1, 2),
      fe(VIP, 53, 'UDP', 2, 2, udp.length),
      fe(VIP_EMPTY, 80, 'TCP', 3, 0, 0),
      fe(VIP_EMPTY, 53, 'UDP', 4, 0, 0),
      fe(VIP, 81, 'TCP', 5, 1, 2, FRONTEND_AFFINITY),
      fe(VIP, 82, 'TCP', 6, 1, 2, FRONTEND_SOURCE_RANGES),
    ],
    sets: [
      { setId: 1, backends: [be(b1, 8080, 11), be(b2, 8080, 12)], maglev: o.maglev1 },
      { setId: 2, backends: udp },
    ],
    sourceRanges: new Map([[6, ['10.79.1.1/32']]]),
    names: new Map(),
  };
}

/** Loads sock.o for `mode` (a new agent: its own DatapathObjects on the same pins) and attaches it. */
function enable(mode: Exclude<SocketLbMode, 'off'>): { objects: DatapathObjects; sock: BpfObject; hooks: Record<string, string> } {
  const objects = new DatapathObjects(bpfRoot, silentLogger);
  const sock = objects.load('sock', sockConstants(mode, node.path));
  const hooks = attachSocketLb(sock, pins, cgroup);
  objects.swapped('sock');
  return { objects, sock, hooks };
}

/** The agent's own call, run in the node's namespace as the agent is. */
function agentEnable(mode: SocketLbMode): DatapathObjects {
  const objects = new DatapathObjects(bpfRoot, silentLogger);
  inNetns(node.path, () => enableSocketLb(objects, pins, { mode, cgroupRoot: cgroup }, silentLogger));
  return objects;
}

let writer: ServiceWriter;
let first: DatapathObjects;

beforeAll(async () => {
  node = createNetns('ksn');
  node.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  node.ip('route', 'add', 'unreachable', '10.96.0.0/16');
  b1 = makePod(1, 'b1');
  b2 = makePod(2, 'b2');
  client = makePod(3, 'client');
  for (const b of [b1, b2]) {
    await new Lines(spawnTracked('ip', ['netns', 'exec', b.ns.name, 'python3', '-c', SERVER, b.name])).next(/^ready/);
  }
  cgroup = path.join('/sys/fs/cgroup/unified', uniqueName('kelpsl'));
  mkdirSync(cgroup);
  // Registered first, so it runs last: after the links are gone and the clients have exited.
  onCleanup(() => rmdirSync(cgroup));
  bpfRoot = mountBpffs();
  pins = new LinkPins(bpfRoot);
  onCleanup(() => detachSocketLb(pins));
  const e = enable('all');
  first = e.objects;
  onCleanup(() => first.close());
  writer = new ServiceWriter(serviceMapsOf(first));
  writer.apply(services());
});

afterAll(cleanupAll);

describe('socket LB', () => {
  it('attaches one pinned cgroup link per hook', () => {
    const shown = sh('bpftool', ['cgroup', 'show', cgroup]);
    for (const h of CGROUP_PROGRAMS) expect(shown).toContain(h.prog.slice(0, 15));
  });

  it('a node client reaches a backend over TCP, connected and unconnected UDP, and sees the VIP as its peer', () => {
    const names = new Set<string>();
    for (let i = 0; i < 8; i++) {
      const [tcp, udpc, udpu] = runClient(node, [
        ['tcp', VIP, 80],
        ['udpc', VIP, 53],
        ['udpu', VIP, 53],
      ]);
      expect(tcp).toMatchObject({ peer: `${VIP}:80` });
      expect(udpc).toMatchObject({ peer: `${VIP}:53` });
      expect(udpu).toMatchObject({ peer: `${VIP}:53` });
      for (const r of [tcp, udpc, udpu]) {
        expect(['b1', 'b2']).toContain(r.data);
        names.add(r.data!);
      }
    }
    // A socket's backend comes from its cookie's hash: 24 sockets all on one of two is 2^-23.
    expect(names).toEqual(new Set(['b1', 'b2']));
  });

  it('a dual-stack (AF_INET6) client reaches the IPv4 service at its v4-mapped address and sees it as its peer', () => {
    const names = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const [tcp, udp] = runClient(node, [
        ['tcp6', VIP, 80],
        ['udpu6', VIP, 53],
      ]);
      expect(tcp).toMatchObject({ peer: `[::ffff:${VIP}]:80` });
      expect(udp).toMatchObject({ peer: `[::ffff:${VIP}]:53` });
      for (const r of [tcp, udp]) names.add(r.data!);
    }
    expect([...names].every((n) => n === 'b1' || n === 'b2')).toBe(true);
    const [refused] = runClient(node, [['tcp6', VIP_EMPTY, 80]]);
    expect(refused.errno).toBe(ECONNREFUSED);
  });

  it('a service without backends is refused at once: connect() and sendmsg() fail with ECONNREFUSED', () => {
    const [tcp, udpc, udpu] = runClient(node, [
      ['tcp', VIP_EMPTY, 80],
      ['udpc', VIP_EMPTY, 53],
      ['udpu', VIP_EMPTY, 53],
    ]);
    for (const r of [tcp, udpc, udpu]) {
      expect(r.errno).toBe(ECONNREFUSED);
      expect(r.ms).toBeLessThan(50);
    }
  });

  it("follows the set's Maglev table", () => {
    writer.apply(services({ maglev1: new Uint16Array(DEFAULT_LB_MAGLEV_TABLE_SIZE).fill(1) }));
    try {
      const rs = runClient(node, Array.from({ length: 8 }, (): Op => ['tcp', VIP, 80]));
      expect(rs.map((r) => r.data)).toEqual(Array(8).fill('b2'));
    } finally {
      writer.apply(services());
    }
  });

  it('ClientIP affinity: an unbound socket by its namespace, a bound one by its address', () => {
    const unbound = runClient(node, Array.from({ length: 8 }, (): Op => ['tcp', VIP, 81]));
    expect(new Set(unbound.map((r) => r.data)).size).toBe(1);
    expect(unbound[0]).toMatchObject({ peer: `${VIP}:81` });
    const bound = runClient(node, Array.from({ length: 8 }, (): Op => ['tcp', VIP, 81, '10.79.1.1']));
    expect(new Set(bound.map((r) => r.data)).size).toBe(1);
    // The bound client's affinity is kelp_lb4_affinity's, the per-packet path's own; the
    // unbound one's is kelp_lb4_sock_affinity's, by the node's netns cookie.
    const affinity = first.map('kelp_lb4_affinity').lookup(lb4AffinityKey.encode({ svcId: 5, client: '10.79.1.1' }));
    expect(affinity && lb4Affinity.decode(affinity).address).toBe(bound[0].data === 'b1' ? b1.ip : b2.ip);
    const sockAffinity = first.map('kelp_lb4_sock_affinity').keys();
    expect(sockAffinity).toHaveLength(1);
    expect(sockAffinity[0].readBigUInt64LE(0)).toBe(netnsCookie(node.path));
  });

  it('loadBalancerSourceRanges: a bound client in range is translated; out of range, or unbound, is left to the per-packet path', () => {
    const [inRange, outOfRange, unbound] = runClient(node, [
      ['tcp', VIP, 82, '10.79.1.1'],
      ['tcp', VIP, 82, '10.79.2.1'],
      ['tcp', VIP, 82],
    ]);
    expect(inRange).toMatchObject({ peer: `${VIP}:82` });
    // Untranslated, they meet the node's own route for the VIP (no per-packet path in this test).
    expect(outOfRange.errno).toBe(EHOSTUNREACH);
    expect(unbound.errno).toBe(EHOSTUNREACH);
  });

  it("'all' translates a pod's sockets too; 'host-only' only the node's, and the link is updated in place", () => {
    expect(runClient(client.ns, [['tcp', VIP, 80]])[0]).toMatchObject({ peer: `${VIP}:80` });
    const ids = CGROUP_PROGRAMS.map((h) => sh('bpftool', ['link', 'show', 'pinned', path.join(pins.dir, h.pin)]).split(':')[0]);
    const hostOnly = enable('host-only');
    try {
      expect(Object.values(hostOnly.hooks)).toEqual(CGROUP_PROGRAMS.map(() => 'updated'));
      expect(CGROUP_PROGRAMS.map((h) => sh('bpftool', ['link', 'show', 'pinned', path.join(pins.dir, h.pin)]).split(':')[0])).toEqual(ids);
      const [fromPod] = runClient(client.ns, [['tcp', VIP, 80]]);
      // Not translated: the pod's own route for the VIP answers.
      expect(fromPod.errno).toBe(EHOSTUNREACH);
      const [fromNode] = runClient(node, [['tcp', VIP, 80]]);
      expect(fromNode).toMatchObject({ peer: `${VIP}:80` });
    } finally {
      const back = enable('all');
      back.objects.close();
      hostOnly.objects.close();
    }
    expect(runClient(client.ns, [['tcp', VIP, 80]])[0]).toMatchObject({ peer: `${VIP}:80` });
  });

  it('a connected UDP socket to a backend that left is destroyed, and the client moves to the one left', async () => {
    // A DNS-like client: one connected socket, a query a second; on an error, a new socket.
    const code = `
import socket, time
def conn():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1); s.connect(("${VIP}", 53)); return s
s = conn()
for i in range(100):
    try:
        s.send(b"q"); print("reply", s.recv(100).decode(), "%s:%d" % s.getpeername(), flush=True)
    except OSError as e:
        print("error", e.errno, flush=True); s.close(); s = conn(); continue
    time.sleep(0.1)
`;
    const objects = new DatapathObjects(bpfRoot, silentLogger);
    const reaper = UdpSocketReaper.of(objects.load('iter_udp', {}), silentLogger);
    try {
      const dns = spawnTracked('nsenter', inCgroup(node, code, []));
      const out = new Lines(dns);
      const firstReply = await out.next(/^reply/);
      const [, name, peer] = firstReply.split(' ');
      expect(peer).toBe(`${VIP}:53`);
      const gone = name === 'b1' ? b1 : b2;
      const stay = name === 'b1' ? b2 : b1;
      // The agent's side of the backend leaving: the set without it, then the sockets destroyed.
      writer.apply(services({ udp: [be(stay, 5353, stay === b1 ? 21 : 22)] }));
      // The same backend keeps answering this socket: it was pointed there at connect().
      expect((await out.next(/^reply/)).split(' ')[1]).toBe(name);

      const t0 = performance.now();
      // The agent runs in the node's namespace: its own sockets are the node's.
      const destroyed = inNetns(node.path, () => reaper.destroyUdpSocketsTo([{ address: gone.ip, port: 5353 }], { netns: [client.ns.path] }));
      const ms = performance.now() - t0;
      expect(destroyed).toEqual([expect.objectContaining({ peer: gone.ip, peerPort: 5353, err: 0, netns: undefined })]);
      expect(ms).toBeLessThan(100);
      // The socket is aborted and disconnected: a recv() pending then fails with ECONNABORTED, the
      // next send() of a client between queries with EDESTADDRREQ (it has no peer any more).
      expect([`error ${ECONNABORTED}`, `error ${EDESTADDRREQ}`]).toContain(await out.next(/^error/));
      expect(await out.next(/^reply/)).toBe(`reply ${stay.name} ${VIP}:53`);
      dns.kill('SIGKILL');
    } finally {
      reaper.close();
      objects.close();
      writer.apply(services());
    }
  });

  it('off: the links are detached and their pins removed; connect() goes to the VIP itself', () => {
    const removed = detachSocketLb(pins);
    try {
      expect(removed.map((p) => path.basename(p)).sort()).toEqual(CGROUP_PROGRAMS.map((h) => h.pin).sort());
      expect(sh('bpftool', ['cgroup', 'show', cgroup])).not.toContain('kelp_sock');
      expect(runClient(node, [['tcp', VIP, 80]])[0].errno).toBe(EHOSTUNREACH);
      expect(detachSocketLb(pins)).toEqual([]);
    } finally {
      enable('all').objects.close();
    }
    expect(runClient(node, [['tcp', VIP, 80]])[0]).toMatchObject({ peer: `${VIP}:80` });
  });

  it('another cgroup root: the links move there (detached from the old one, attached anew)', () => {
    const other = path.join('/sys/fs/cgroup/unified', uniqueName('kelpso'));
    mkdirSync(other);
    try {
      const objects = new DatapathObjects(bpfRoot, silentLogger);
      try {
        const hooks = attachSocketLb(objects.load('sock', sockConstants('all')), pins, other);
        expect(Object.values(hooks)).toEqual(CGROUP_PROGRAMS.map(() => 'attached'));
        expect(sh('bpftool', ['cgroup', 'show', cgroup])).not.toContain('kelp_sock');
        expect(sh('bpftool', ['cgroup', 'show', other])).toContain('kelp_sock_conne');
        // The test's cgroup has no hook now: its client meets the node's own route for the VIP.
        expect(runClient(node, [['tcp', VIP, 80]])[0].errno).toBe(EHOSTUNREACH);
      } finally {
        objects.close();
        enable('all').objects.close();
      }
    } finally {
      rmdirSync(other);
    }
    expect(runClient(node, [['tcp', VIP, 80]])[0]).toMatchObject({ peer: `${VIP}:80` });
  });

  it("the agent's enableSocketLb: host-only by the agent's own namespace, then off", () => {
    const hostOnly = agentEnable('host-only');
    try {
      expect(runClient(client.ns, [['tcp', VIP, 80]])[0].errno).toBe(EHOSTUNREACH);
      expect(runClient(node, [['tcp', VIP, 80]])[0]).toMatchObject({ peer: `${VIP}:80` });
      agentEnable('off').close();
      expect(sh('bpftool', ['cgroup', 'show', cgroup])).not.toContain('kelp_sock');
    } finally {
      hostOnly.close();
      agentEnable('all').close();
    }
    expect(runClient(client.ns, [['tcp', VIP, 80]])[0]).toMatchObject({ peer: `${VIP}:80` });
  });

  it("reaches a pod's sockets connected to the backend directly, in the namespaces it is given only", async () => {
    const code = `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("${b1.ip}", 5353)); print("ready", flush=True)
try:
    s.recv(100)
except OSError as e:
    print("error", e.errno, flush=True)
`;
    const objects = new DatapathObjects(bpfRoot, silentLogger);
    const reaper = UdpSocketReaper.of(objects.load('iter_udp', {}), silentLogger);
    try {
      // Outside the cgroup: no socket LB involved at all.
      const inPod = new Lines(spawnTracked('ip', ['netns', 'exec', client.ns.name, 'python3', '-c', code]));
      await inPod.next(/^ready/);
      expect(inNetns(node.path, () => reaper.destroyUdpSocketsTo([{ address: b1.ip, port: 5353 }]))).toEqual([]);
      const destroyed = inNetns(node.path, () =>
        reaper.destroyUdpSocketsTo([{ address: b1.ip, port: 5353 }], { netns: [client.ns.path, '/var/run/netns/kelp-no-such-netns'] }),
      );
      expect(destroyed).toEqual([expect.objectContaining({ netns: client.ns.path, peer: b1.ip, local: client.ip, err: 0 })]);
      expect(await inPod.next(/^error/)).toBe(`error ${ECONNABORTED}`);
    } finally {
      reaper.close();
      objects.close();
    }
  });
});
