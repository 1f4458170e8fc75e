// What a restarted agent cleans up, and what it must leave alone. While the agent is down, a
// pod's netns is deleted, a DEL arrives (queued by kelp-cni), and leftovers are planted on
// purpose: a stray kelp veth, a stray lease, a stray kelp_endpoints entry, stray pinned links,
// a stray kelp route and a temp file of a writer that died. Next to each, a look-alike that is
// not kelp's. After the restart exactly the leftovers are gone, the queue is replayed, and
// every running pod, lease, map entry, pin and route is untouched.
import { mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { attachTc, detachTcFilter, inNetns, listAttached, loadObject, queryTcFilter } from '../../src/bpf';
import { POD_FILTER } from '../../src/datapath/loader';
import { splitRequest } from '../../src/cni';
import { endpointInfo, endpointKey } from '../../src/datapath/structs';
import { hostIfnameFor } from '../../src/endpoint/state';
import { Sandbox, SandboxPod, sh } from '../../src/sandbox';
import { NodeState, killAll, nodeState, prefixFor, queueDir, stateDir, waitReady } from '../support/restart';

let sb: Sandbox;

beforeAll(async () => {
  sb = await Sandbox.start({ prefix: prefixFor('rg'), logLevel: 'info' });
});

afterAll(async () => {
  killAll();
  await sb?.stop();
});

const host = (p: SandboxPod) => hostIfnameFor('kelp', p.containerId, p.ifname);
const minus = (xs: string[], drop: string[]) => xs.filter((x) => !drop.includes(x));
const plus = (xs: string[], add: string[]) => [...xs, ...add].sort();
const nodeIp = (...args: string[]) => sh('ip', ['-n', sb.node, ...args]);
const nodeNs = () => `/var/run/netns/${sb.node}`;
const ifindexInNode = (name: string) => (JSON.parse(nodeIp('-j', 'link', 'show', 'dev', name)) as Array<{ ifindex: number }>)[0].ifindex;

const hex = (b: Buffer) => [...b].map((x) => x.toString(16).padStart(2, '0'));
/** struct endpoint_key of an IPv4 address, as bpftool hex bytes. */
const endpointKeyHex = (ip: string) => hex(endpointKey.encode({ ip4: ip }));

/** A queue entry as kelp-cni writes it: env entries, NUL, stdin; named by its time. */
function plantQueueEntry(atMs: number, env: Record<string, string>, stdin: string): string {
  const body = Buffer.concat([Buffer.from(Object.entries(env).map(([k, v]) => `${k}=${v}\0`).join('') + '\0'), Buffer.from(stdin)]);
  const name = `${(BigInt(atMs) * 1_000_000n).toString().padStart(19, '0')}-4194399.del`;
  writeFileSync(path.join(queueDir(sb), name), body, { mode: 0o600 });
  return name;
}

it('sweeps exactly the leftovers it recognises, replays the DEL queue, keeps everything alive', async () => {
  const keep1 = await sb.addPod('keep1');
  const keep2 = await sb.addPod('keep2');
  const gone = await sb.addPod('gone');
  const deleted = await sb.addPod('deleted');
  const foreignIpam = path.join(sb.dir, 'foreign-ipam');
  const before = nodeState(sb, [foreignIpam]);
  const keep2CreatedAt = Date.parse(
    (JSON.parse(sh('sh', ['-c', `cat ${stateDir(sb)}/endpoints/*.json | jq -s 'map(select(.containerId=="${keep2.containerId}"))[0]'`])) as { createdAt: string }).createdAt,
  );

  await sb.stopAgent(true);

  // While the agent is down: ADD and STATUS fail as they must; DEL is queued and succeeds.
  const add = await sb.cni('ADD', { CNI_CONTAINERID: 'downadd', CNI_NETNS: keep1.netnsPath, CNI_IFNAME: 'net9' });
  expect(add.code).not.toBe(0);
  expect(add.json).toMatchObject({ code: 11 });
  expect((await sb.cni('STATUS', {}, sb.pluginConfig({ cniVersion: '1.1.0' }))).json).toMatchObject({ code: 50 });
  const del = await sb.delPod(deleted);
  expect(del.code, del.stdout + del.stderr).toBe(0);
  expect(del.stdout).toBe('');
  expect(del.stderr).toContain('queued');
  const queued = nodeState(sb).queue;
  expect(queued).toHaveLength(1);
  expect(queued[0]).toMatch(/^\d{19}-\d+\.del$/);
  // The entry is the very request kelp-cni would have posted: its CNI_* variables, then stdin.
  const entry = splitRequest(readFileSync(path.join(queueDir(sb), queued[0])));
  expect(entry.entries.sort()).toEqual(
    [`CNI_COMMAND=DEL`, `CNI_CONTAINERID=${deleted.containerId}`, `CNI_IFNAME=eth0`, `CNI_NETNS=${deleted.netnsPath}`, `CNI_PATH=${sb.cniBinDir}`].sort(),
  );
  expect(entry.stdin.toString()).toBe(JSON.stringify(sb.pluginConfig()));
  // Without a queue directory next to the socket there is nowhere to keep the DEL: the runtime must retry.
  const noQueue = await sb.cni(
    'DEL',
    { CNI_CONTAINERID: keep1.containerId, CNI_NETNS: keep1.netnsPath, CNI_IFNAME: 'eth0' },
    sb.pluginConfig({ agentSocket: path.join(sb.dir, 'no-such-dir', 'kelp.sock') }),
  );
  expect(noQueue.code).not.toBe(0);
  expect(noQueue.json).toMatchObject({ code: 11 });
  expect(noQueue.json!.details).toContain('no-such-dir/del-queue');

  // A DEL queued before keep2's endpoint existed must not remove it; an ADD in the queue never runs.
  plantQueueEntry(keep2CreatedAt - 1000, { CNI_COMMAND: 'DEL', CNI_CONTAINERID: keep2.containerId, CNI_IFNAME: 'eth0' }, JSON.stringify(sb.pluginConfig()));
  const addNs = sb.createNetns(`${sb.opts.prefix}-qa`);
  plantQueueEntry(Date.now(), { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'queuedadd', CNI_NETNS: addNs, CNI_IFNAME: 'eth0' }, JSON.stringify(sb.pluginConfig()));

  // A live pod that lost its from-pod filter and another that lost its kelp_endpoints entry:
  // both are repaired from their records.
  // No pod pins (clsact filters); the uplink's and the overlay's (VXLAN mode) are the node's own.
  expect(before.pins.filter((p) => !p.startsWith('uplink-') && !p.startsWith('overlay-'))).toEqual([]);
  expect(inNetns(nodeNs(), () => detachTcFilter(ifindexInNode(host(keep1)), 'ingress', POD_FILTER))).toBe(true);
  expect(inNetns(nodeNs(), () => queryTcFilter(ifindexInNode(host(keep1)), 'ingress', POD_FILTER))).toBeUndefined();
  sh('bpftool', ['map', 'delete', 'pinned', path.join(sb.bpfRoot, 'kelp_endpoints'), 'key', 'hex', ...endpointKeyHex(keep2.ip)]);
  expect(nodeState(sb).endpoints).not.toContain(keep2.ip);

  // Leftovers kelp must recognise…
  sh('ip', ['netns', 'del', gone.netns]);
  nodeIp('link', 'add', 'kelp0123456789a', 'type', 'veth', 'peer', 'name', 'kkp0');
  mkdirSync(path.join(stateDir(sb), 'ipam', 'othernet'), { recursive: true });
  writeFileSync(path.join(stateDir(sb), 'ipam', 'kelp', '10.244.0.200'), 'strayctr\r\neth0');
  writeFileSync(path.join(stateDir(sb), 'ipam', 'othernet', '10.9.0.5'), 'strayctr2\r\neth0');
  sh('bpftool', [
    'map', 'update', 'pinned', path.join(sb.bpfRoot, 'kelp_endpoints'),
    'key', 'hex', ...endpointKeyHex('10.244.0.222'),
    'value', 'hex', ...hex(endpointInfo.encode({ ifindex: 999, epId: 77, flags: 0, mac: '02:11:11:11:11:11', nodeMac: '02:22:22:22:22:22' })),
  ]);
  nodeIp('route', 'add', '10.244.0.250/32', 'dev', 'up0', 'proto', '75');
  const staleTmp = path.join(stateDir(sb), 'endpoints', `${'a'.repeat(32)}.json.4194399.tmp`);
  writeFileSync(staleTmp, '{');
  const staleQueueTmp = path.join(queueDir(sb), '.17000000000000000000-1.del.tmp');
  writeFileSync(staleQueueTmp, 'partial');
  utimesSync(staleQueueTmp, new Date(Date.now() - 3600_000), new Date(Date.now() - 3600_000));
  // …and look-alikes that are not kelp's: a name one digit short, upper case, a bridge with a
  // kelp name, a lease in another data dir, a static route, a pin with a name kelp never gives.
  nodeIp('link', 'add', 'kelp0123456789', 'type', 'veth', 'peer', 'name', 'kkp1');
  nodeIp('link', 'add', 'kelpABCDEF01234', 'type', 'veth', 'peer', 'name', 'kkp2');
  nodeIp('link', 'add', 'kelp00000000000', 'type', 'bridge');
  nodeIp('link', 'set', 'kelp00000000000', 'up');
  mkdirSync(path.join(foreignIpam, 'kelp'), { recursive: true });
  writeFileSync(path.join(foreignIpam, 'kelp', '10.244.0.201'), 'foreign\r\neth0');
  nodeIp('route', 'add', '10.244.0.251/32', 'dev', 'up0', 'proto', 'static');
  // Pinned links on the bridge: one named after a kelp veth that does not exist, one after an
  // uplink masquerade is not on, one with a foreign name.
  const fixture = loadObject(path.join(__dirname, '../../build/bpf/fixture_pkt.o'));
  try {
    const bridge = ifindexInNode('kelp00000000000');
    // One hook takes a program once: each pin gets its own.
    const pin = (prog: string, dir: 'ingress' | 'egress', name: string) => {
      const link = inNetns(nodeNs(), () => attachTc(fixture.program(prog), bridge, dir));
      link.pin(path.join(sb.bpfRoot, 'links', name));
      link.close();
    };
    pin('fx_count_tc', 'ingress', 'kelpabcdef01234-ingress');
    pin('fx_swap_mac', 'ingress', 'uplink-gone0-ingress');
    pin('fx_count_tc', 'egress', 'foreign-egress');
    // An older kelp's pinned tcx link on a live pod's veth (pods had tcx links then): tcx runs
    // before clsact, so it must go once the pod's filters are in place.
    const old = inNetns(nodeNs(), () => attachTc(fixture.program('fx_count_tc'), ifindexInNode(host(keep2)), 'egress', { mode: 'tcx' }));
    old.pin(path.join(sb.bpfRoot, 'links', `${host(keep2)}-egress`));
    old.close();
  } finally {
    fixture.close();
  }

  await sb.startAgent();
  await waitReady(sb);

  const after = nodeState(sb, [foreignIpam]);
  const goneOrDeleted = [gone, deleted];
  const expected: NodeState = {
    veths: plus(minus(before.veths, goneOrDeleted.map(host)), ['kelp0123456789', 'kelpABCDEF01234', 'kelp00000000000']),
    pins: plus(before.pins, ['foreign-egress']),
    endpoints: minus(before.endpoints, goneOrDeleted.map((p) => p.ip)),
    leases: minus(before.leases, goneOrDeleted.map((p) => `kelp/${p.ip}`)).concat('kelp/10.244.0.201').sort(),
    records: minus(before.records, goneOrDeleted.map((p) => `kelp/${p.containerId}/eth0`)),
    queue: [],
    routes: before.routes.filter((r) => !goneOrDeleted.some((p) => r.startsWith(`${p.ip} `))),
  };
  expect(after, sb.agentLog().split('\n').filter((l) => l.includes('restored')).join('\n')).toEqual(expected);
  expect(before.veths).toEqual(expect.arrayContaining(goneOrDeleted.map(host)));
  expect(before.endpoints).toEqual(expect.arrayContaining(goneOrDeleted.map((p) => p.ip)));

  // keep1's veth runs kelp_from_pod again; keep2's older tcx link is gone, its filters stay.
  expect(inNetns(nodeNs(), () => queryTcFilter(ifindexInNode(host(keep1)), 'ingress', POD_FILTER))?.name).toBe('kelp_from_pod');
  expect(inNetns(nodeNs(), () => listAttached(ifindexInNode(host(keep2)))).tcx).toEqual({ ingress: [], egress: [] });
  expect(inNetns(nodeNs(), () => queryTcFilter(ifindexInNode(host(keep2)), 'egress', POD_FILTER))?.name).toBe('kelp_to_pod');

  // The look-alikes and the bridge's foreign program are intact; the stray kelp pin's program is gone.
  expect(nodeIp('route', 'show', '10.244.0.251/32')).toContain('10.244.0.251');
  const onDummy = inNetns(nodeNs(), () => listAttached(ifindexInNode('kelp00000000000')));
  expect(onDummy.tcx.ingress).toEqual([]);
  expect(onDummy.tcx.egress.map((p) => p.name)).toEqual(['fx_count_tc']);
  expect(readFileSync(path.join(stateDir(sb), 'ipam', 'kelp', 'last_reserved_ip.0'), 'utf8')).toMatch(/^10\.244\.0\./);
  expect(nodeState(sb).veths).not.toContain('kelp0123456789a');
  expect(JSON.parse(nodeIp('-j', 'link', 'show')).map((l: { ifname: string }) => l.ifname)).not.toContain('kkp0');
  // The queued ADD never ran: its namespace has nothing but loopback.
  expect(JSON.parse(sh('ip', ['-n', `${sb.opts.prefix}-qa`, '-j', 'link', 'show'])).map((l: { ifname: string }) => l.ifname)).toEqual(['lo']);

  // Running pods kept their network; the node serves ADD and DEL again, reusing freed addresses.
  expect(sb.exec(keep1.netns, 'ping', ['-c', '3', '-i', '0.2', '-W', '2', keep2.ip])).toMatch(/3 received/);
  const fresh = await sb.addPod('fresh');
  expect(sb.exec(fresh.netns, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', keep1.ip])).toMatch(/2 received/);
  expect((await sb.delPod(fresh)).code).toBe(0);
});
