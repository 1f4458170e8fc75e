// CHECK, STATUS and GC through the real kelp-cni and agent (checklist items 45–58).
// CHECK and STATUS share one node; GC deletes everything it is not told to keep, so it has a
// node of its own.
import path from 'node:path';
import { writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox, sh } from '../../src/sandbox';
import { detachTcFilter, inNetns, openPinnedMap } from '../../src/bpf';
import { POD_FILTER } from '../../src/datapath/loader';
import { endpointKey } from '../../src/datapath/structs';
import {
  Attachment, NETWORK, attachmentEnv, ipJson, del, endpointEntry, expectCniError, expectSilentSuccess, hostIfnameFor, leases,
  linkNames, mustAdd, newAttachment, nodeTrace, ping, recordOf, restartAgent, resultIp, startSandbox, stateDir, traceOf, GONE,
  pinnedLinks, podFilters, POD_FILTERS,
} from '../support/e2e';

let sb: Sandbox;
let gcNode: Sandbox;

beforeAll(async () => {
  sb = await startSandbox('e2c');
  gcNode = await startSandbox('e2g');
});

afterAll(async () => {
  await sb?.stop();
  await gcNode?.stop();
});

function check(a: Attachment, prevResult: Record<string, unknown> | undefined, cniVersion = '1.0.0') {
  const config = sb.pluginConfig({ cniVersion, ...(prevResult ? { prevResult } : {}) });
  return sb.cni('CHECK', attachmentEnv(a), config);
}

/** An attachment ADDed in `cniVersion`, with its result. */
async function added(cniVersion = '1.0.0'): Promise<{ a: Attachment; result: Record<string, any>; ip: string; hostIfname: string }> {
  const a = newAttachment(sb);
  const result = await mustAdd(sb, a, { config: sb.pluginConfig({ cniVersion }) });
  return { a, result, ip: resultIp(result), hostIfname: hostIfnameFor(NETWORK, a.containerId, a.ifname) };
}

describe('CHECK', () => {
  it.each(['0.4.0', '1.0.0', '1.1.0'])('passes right after ADD with the ADD result as prevResult (%s)', async (v) => {
    const { a, result } = await added(v);
    expectSilentSuccess(await check(a, result, v));
  });

  it("accepts a prevResult without cniVersion and with Debian's empty dns", async () => {
    const { a, result } = await added();
    const { cniVersion: _v, ...prev } = result;
    expectSilentSuccess(await check(a, { ...prev, dns: {} }));
  });

  it('with cniVersion 0.3.1 → code 1', async () => {
    const { a, result } = await added('0.3.1');
    expectCniError(await check(a, result, '0.3.1'), 1, /CHECK/);
  });

  it('without prevResult → code 7', async () => {
    const { a } = await added();
    expectCniError(await check(a, undefined), 7, /prevResult/);
  });

  it('for an unknown container → code 3', async () => {
    const { a, result } = await added();
    expectCniError(await check({ ...a, containerId: 'unknown0' + a.containerId.slice(8) }, result), 3);
  });

  it('fails when prevResult names an address kelp did not give', async () => {
    const { a, result } = await added();
    const prev = { ...result, ips: [{ ...result.ips[0], address: '10.244.0.254/24' }] };
    expectCniError(await check(a, prev), 120, /10\.244\.0\.254/);
  });

  it('fails after `ip addr flush dev eth0` in the pod', async () => {
    const { a, result } = await added();
    sh('ip', ['-n', a.netns, 'addr', 'flush', 'dev', 'eth0']);
    expectCniError(await check(a, result), 120, new RegExp(`${result.ips[0].address.replace(/\./g, '\\.')} is not on eth0`));
  });

  it('fails after the default route is deleted in the pod', async () => {
    const { a, result } = await added();
    sh('ip', ['-n', a.netns, 'route', 'del', 'default']);
    expectCniError(await check(a, result), 120, /route 0\.0\.0\.0\/0 via 10\.244\.0\.1 dev eth0 is missing/);
  });

  it('fails after the kelp_endpoints entry is deleted', async () => {
    const { a, result, ip } = await added();
    const map = openPinnedMap(path.join(sb.bpfRoot, 'kelp_endpoints'));
    try {
      expect(map.delete(endpointKey.encode({ ip4: ip }))).toBe(true);
    } finally {
      map.close();
    }
    expect(endpointEntry(sb, ip)).toBeUndefined();
    expectCniError(await check(a, result), 120, new RegExp(`no kelp_endpoints entry for ${ip.replace(/\./g, '\\.')}`));
  });

  it.each([
    ['ingress', 'kelp_from_pod'],
    ['egress', 'kelp_to_pod'],
  ])('fails after the %s program is detached; DEL still cleans up', async (dir, prog) => {
    const { a, result, ip, hostIfname } = await added();
    const ifindex = ipJson(sb.node, 'link', 'show', 'dev', hostIfname)[0].ifindex as number;
    expect(inNetns(`/var/run/netns/${sb.node}`, () => detachTcFilter(ifindex, dir as 'ingress' | 'egress', POD_FILTER))).toBe(true);
    expect(podFilters(sb, hostIfname)).toEqual(POD_FILTERS.filter((f) => !f.startsWith(dir)));
    expectCniError(await check(a, result), 120, new RegExp(`${prog} is not attached to ${hostIfname} ${dir}`));
    expectSilentSuccess(await del(sb, a));
    expect(traceOf(sb, a, ip, hostIfname)).toEqual(GONE);
  });

  it('fails after the host veth is deleted', async () => {
    const { a, result, hostIfname } = await added();
    sh('ip', ['-n', sb.node, 'link', 'del', hostIfname]);
    expectCniError(await check(a, result), 120, new RegExp(`host interface ${hostIfname} is missing`));
  });

  it('fails after the IPAM lease is removed', async () => {
    const { a, result, ip } = await added();
    sh('rm', [path.join(stateDir(sb), 'ipam', NETWORK, ip)]);
    expectCniError(await check(a, result), 120, /IPAM reservation is gone/);
  });

  it('tolerates a MAC changed by a later plugin (tuning) when prevResult carries it', async () => {
    const { a, result } = await added();
    const mac = 'c2:00:00:00:00:99';
    sh('ip', ['-n', a.netns, 'link', 'set', 'eth0', 'address', mac]);
    const prev = { ...result, interfaces: [result.interfaces[0], { ...result.interfaces[1], mac }] };
    expectSilentSuccess(await check(a, prev));
  });

  // kelp_endpoints holds the MAC of ADD time; the pod's first packets with the new MAC are
  // dropped (SRC_MAC), the agent hears the drop and follows the interface.
  it('a pod whose MAC a later plugin changed reaches another pod again, and the map follows', async () => {
    const { a, ip } = await added();
    const peer = await added();
    const mac = 'c2:00:00:00:00:98';
    sh('ip', ['-n', a.netns, 'link', 'set', 'eth0', 'address', mac]);
    sb.exec(a.netns, 'ping', ['-c3', '-i0.3', '-W1', peer.ip], { allowFail: true });
    expect(sb.exec(a.netns, 'ping', ['-c3', '-i0.2', '-W1', peer.ip])).toContain(' 0% packet loss');
    const dump = JSON.parse(sb.kelp('map', 'dump', 'kelp_endpoints', '-o', 'json')) as { entries: Array<{ key: { ip4: string }; value: { mac: string } }> };
    expect(dump.entries.find((e) => e.key.ip4 === ip)?.value.mac).toBe(mac);
    // The cache in front of it follows too (`kelp map dump` shows its live slots only).
    const cache = JSON.parse(sb.kelp('map', 'dump', 'kelp_endpoint_cache', '-o', 'json')) as { entries: Array<{ value: { ip4: string; live: boolean; info: { mac: string } } }> };
    expect(cache.entries.every((e) => e.value.live)).toBe(true);
    expect(cache.entries.find((e) => e.value.ip4 === ip)?.value.info.mac).toBe(mac);
  });

  it('uses the routes ADD installed: an ipam section with its own routes passes CHECK', async () => {
    const a = newAttachment(sb);
    const config = sb.pluginConfig({ ipam: { type: 'kelp', ranges: [[{ subnet: '10.244.0.0/24' }]], routes: [{ dst: '10.96.0.0/12' }, { dst: '0.0.0.0/0' }] } });
    const result = await mustAdd(sb, a, { config });
    // As host-local reports them: no gw means via the interface's gateway.
    expect(result.routes).toEqual([{ dst: '10.96.0.0/12' }, { dst: '0.0.0.0/0' }]);
    expect(ipJson(a.netns, '-4', 'route', 'show', '10.96.0.0/12')).toEqual([expect.objectContaining({ gateway: '10.244.0.1', dev: 'eth0' })]);
    expectSilentSuccess(await sb.cni('CHECK', attachmentEnv(a), { ...config, prevResult: result }));
    sh('ip', ['-n', a.netns, 'route', 'del', '10.96.0.0/12']);
    expectCniError(await sb.cni('CHECK', attachmentEnv(a), { ...config, prevResult: result }), 120, /route 10\.96\.0\.0\/12 via 10\.244\.0\.1 dev eth0 is missing/);
  });
});

describe('STATUS', () => {
  const status = (s: Sandbox, cniVersion = '1.1.0') => s.cni('STATUS', { CNI_CONTAINERID: '', CNI_NETNS: '', CNI_IFNAME: '', CNI_ARGS: '' }, s.pluginConfig({ cniVersion }));

  it('0 with empty stdout while the agent runs', async () => {
    expectSilentSuccess(await status(sb));
  });

  it('below 1.1.0 → code 1', async () => {
    expectCniError(await status(sb, '1.0.0'), 1);
  });

  it('code 50 once the agent is stopped; 0 again after it restarts, and pods kept their network', async () => {
    const { a, ip, result } = await added();
    const peer = await added();
    const config = sb.pluginConfig({ cniVersion: '1.1.0' });
    await sb.stopAgent();
    try {
      const res = await sb.cni('STATUS', {}, config);
      expectCniError(res, 50, /not reachable/);
      expect(res.json?.cniVersion).toBe('1.1.0');
      // The datapath is pinned: pods keep talking while the agent is down.
      expect(ping(sb, a.netns, peer.ip)).toBe(true);
    } finally {
      await restartAgent(sb);
    }
    expectSilentSuccess(await status(sb));
    expect(endpointEntry(sb, ip)).toBeDefined();
    expect(ping(sb, peer.a.netns, ip)).toBe(true);
    // ADD is served again, and CHECK of an endpoint from before the restart passes.
    const after = await added();
    expect(ping(sb, after.a.netns, ip)).toBe(true);
    expectSilentSuccess(await check(a, result));
  });

  it('CHECK while the agent is down fails with "try again later" (11)', async () => {
    const { a, result } = await added();
    await sb.stopAgent();
    try {
      expectCniError(await check(a, result), 11, /not reachable/);
    } finally {
      await restartAgent(sb);
    }
    expectSilentSuccess(await check(a, result));
  });
});

describe('GC (1.1.0)', () => {
  const gcEnv = { CNI_CONTAINERID: '', CNI_NETNS: '', CNI_IFNAME: '', CNI_ARGS: '' };
  const gc = (valid: Attachment[] | undefined, key = 'cni.dev/valid-attachments', cniVersion = '1.1.0') =>
    gcNode.cni('GC', gcEnv, gcNode.pluginConfig({ cniVersion, ...(valid ? { [key]: valid.map((a) => ({ containerID: a.containerId, ifname: a.ifname })) } : {}) }));

  async function pod(): Promise<{ a: Attachment; ip: string; hostIfname: string }> {
    const a = newAttachment(gcNode);
    const ip = resultIp(await mustAdd(gcNode, a));
    return { a, ip, hostIfname: hostIfnameFor(NETWORK, a.containerId, a.ifname) };
  }

  const alive = (p: { a: Attachment; ip: string; hostIfname: string }) =>
    traceOf(gcNode, p.a, p.ip, p.hostIfname);
  const live = (p: { ip: string; hostIfname: string }) => ({ link: true, leases: [p.ip], record: true, pins: [], filters: POD_FILTERS, endpoint: true });

  it('below 1.1.0 → code 1, nothing deleted', async () => {
    const p = await pod();
    const before = nodeTrace(gcNode);
    expectCniError(await gc([], undefined, '1.0.0'), 1);
    expect(nodeTrace(gcNode)).toEqual(before);
    expect(alive(p)).toEqual(live(p));
  });

  it('without a valid-attachments key: nothing deleted', async () => {
    await pod();
    const before = nodeTrace(gcNode);
    expectSilentSuccess(await gc(undefined));
    expect(nodeTrace(gcNode)).toEqual(before);
  });

  it('keeps c1 (and its peer), removes c2 and c3 and everything of theirs; c1 still pings', async () => {
    // Whatever earlier cases left is removed too: it is not in the list.
    const [c1, c2, c3, peer] = [await pod(), await pod(), await pod(), await pod()];
    expectSilentSuccess(await gc([c1.a, peer.a]));
    expect(alive(c2)).toEqual(GONE);
    expect(alive(c3)).toEqual(GONE);
    expect(linkNames(c2.a.netns)).toEqual(['lo']);
    expect(alive(c1)).toEqual(live(c1));
    expect(alive(peer)).toEqual(live(peer));
    expect(Object.keys(leases(gcNode)).sort()).toEqual([c1.ip, peer.ip].sort());
    expect(gcNode.kelp('map', 'dump', 'kelp_endpoints', '-o', 'json')).toContain(c1.ip);
    expect(ping(gcNode, c1.a.netns, peer.ip)).toBe(true);
    expect(ping(gcNode, peer.a.netns, c1.ip)).toBe(true);
  });

  it('accepts the cni.dev/attachments alias', async () => {
    const keep = await pod();
    const drop = await pod();
    expectSilentSuccess(await gc([keep.a], 'cni.dev/attachments'));
    expect(alive(drop)).toEqual(GONE);
    expect(alive(keep)).toEqual(live(keep));
  });

  it('removes leases, host veths and pinned links that belong to no endpoint', async () => {
    const keep = await pod();
    const orphanLease = path.join(stateDir(gcNode), 'ipam', NETWORK, '10.244.0.240');
    writeFileSync(orphanLease, 'gone-container\r\neth0');
    // A host veth left by an ADD that crashed before writing its record.
    const stray = hostIfnameFor(NETWORK, 'crashed', 'eth0');
    sh('ip', ['-n', gcNode.node, 'link', 'add', stray, 'type', 'veth', 'peer', 'name', `${stray.slice(0, 11)}p`]);
    expectSilentSuccess(await gc([keep.a]));
    expect(leases(gcNode)).toEqual({ [keep.ip]: `${keep.a.containerId}/eth0` });
    expect(linkNames(gcNode.node)).not.toContain(stray);
    // The node's own links (the uplink's, the overlay's in VXLAN mode) stay.
    expect(pinnedLinks(gcNode).filter((p) => !p.startsWith('uplink-') && !p.startsWith('overlay-'))).toEqual([]);
    expect(alive(keep)).toEqual(live(keep));
  });

  it('with an empty list removes every attachment of the network', async () => {
    const p = await pod();
    expectSilentSuccess(await gc([]));
    expect(alive(p)).toEqual(GONE);
    expect(recordOf(gcNode, p.a)).toBeUndefined();
    expect(leases(gcNode)).toEqual({});
    // DEL after GC (the runtime may still send it) succeeds.
    expectSilentSuccess(await del(gcNode, p.a));
  });

  it('leaves attachments of other networks alone', async () => {
    const p = await pod();
    const res = await gcNode.cni('GC', gcEnv, gcNode.pluginConfig({ cniVersion: '1.1.0', name: 'other-net', 'cni.dev/valid-attachments': [] }));
    expectSilentSuccess(res);
    expect(alive(p)).toEqual(live(p));
  });
});
