// Bad requests and failed ADDs through the real kelp-cni and agent: every one answers a spec
// error object on stdout with the right code, exits non-zero, and leaves nothing behind — no
// link in the node, no lease, no map entry, no record, no pinned link, nothing in the pod
// (checklist items 1–2, 4, 7, 10, 12–14, 19–21, 29, 33–35, 65).
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox, sh } from '../../src/sandbox';
import {
  Attachment, NETWORK, add, addresses, attachmentEnv, del, endpointEntry, expectCniError, expectSilentSuccess, hostIfnameFor, ipJson,
  linkNames, mustAdd, newAttachment, nodeTrace, ping, recordOf, resultIp, startSandbox, traceOf, NodeTrace,
} from '../support/e2e';

let sb: Sandbox;

beforeAll(async () => {
  sb = await startSandbox('e2x');
});

afterAll(async () => {
  await sb?.stop();
});

/** Runs `fn`, which must fail, and checks that the node and the pod are as before. */
async function leavesNothing(a: Attachment, fn: () => Promise<unknown>, podLinks = ['lo']): Promise<void> {
  const before: NodeTrace = nodeTrace(sb);
  await fn();
  expect(nodeTrace(sb)).toEqual(before);
  expect(linkNames(a.netns)).toEqual(podLinks);
  expect(recordOf(sb, a)).toBeUndefined();
}

describe('malformed stdin', () => {
  // The plugin finds the agent from `agentSocket` in stdin; without parsable stdin, from the env.
  // Either way kelp-cni answers itself, in the config's cniVersion when it could be read.
  it.each<[string, () => string, boolean, string]>([
    ['truncated JSON', () => JSON.stringify(sb.pluginConfig()).slice(0, -1), false, '1.0.0'],
    // The socket is named after the syntax error: kelp-cni used to try the default socket instead.
    ['a missing comma before agentSocket', () => `{"cniVersion":"0.4.0","name":"${NETWORK}","type":"kelp-cni" "agentSocket":${JSON.stringify(sb.socketPath)}}`, false, '0.4.0'],
    ['"{"', () => '{', true, '1.1.0'],
    ['empty stdin', () => '', true, '1.1.0'],
    ['a JSON array', () => '[]', true, '1.1.0'],
  ])('%s → code 6', async (_n, stdin, viaEnv, version) => {
    const a = newAttachment(sb);
    await leavesNothing(a, async () => {
      const env = attachmentEnv(a, viaEnv ? { KELP_AGENT_SOCKET: sb.socketPath } : {});
      const err = expectCniError(await sb.cni('ADD', env, stdin()), 6, /decode/);
      expect(err.cniVersion).toBe(version);
    });
  });
});

describe('versions and the command', () => {
  it('unknown cniVersion → code 1, answered in that version', async () => {
    const a = newAttachment(sb);
    await leavesNothing(a, async () => {
      const err = expectCniError(await add(sb, a, { config: sb.pluginConfig({ cniVersion: '9.9.9' }) }), 1, /9\.9\.9/);
      expect(err.cniVersion).toBe('9.9.9');
    });
  });

  it('unknown CNI_COMMAND → code 4', async () => {
    const a = newAttachment(sb);
    await leavesNothing(a, async () => {
      expectCniError(await sb.cni('FOO', attachmentEnv(a)), 4, /unknown CNI_COMMAND: FOO/);
    });
  });
});

describe('environment', () => {
  it.each(['CNI_CONTAINERID', 'CNI_IFNAME', 'CNI_NETNS'])('missing %s → code 4 naming it (unset or empty)', async (key) => {
    const a = newAttachment(sb);
    await leavesNothing(a, async () => {
      const env = attachmentEnv(a);
      delete env[key];
      expectCniError(await sb.cni('ADD', env), 4, new RegExp(key));
      expectCniError(await sb.cni('ADD', { ...env, [key]: '' }), 4, new RegExp(key));
    });
  });

  it.each([
    ['16 bytes', 'abcdefghijklmnop'],
    ['a slash', 'eth/0'],
    ['a colon', 'eth0:1'],
    ['"."', '.'],
  ])('interface name with %s → code 4', async (_n, ifname) => {
    const a = newAttachment(sb);
    await leavesNothing(a, async () => {
      expectCniError(await sb.cni('ADD', { ...attachmentEnv(a), CNI_IFNAME: ifname }), 4, /CNI_IFNAME/);
    });
  });

  it.each(['../x', '-x', 'a/b', 'a b'])('container id %j → code 4', async (id) => {
    const a = newAttachment(sb);
    await leavesNothing(a, async () => {
      expectCniError(await sb.cni('ADD', { ...attachmentEnv(a), CNI_CONTAINERID: id }), 4, /CNI_CONTAINERID/);
    });
  });

  it('a netns path that does not exist → code 4 naming CNI_NETNS and the path', async () => {
    const a = newAttachment(sb);
    await leavesNothing(a, async () => {
      expectCniError(await sb.cni('ADD', { ...attachmentEnv(a), CNI_NETNS: '/var/run/netns/kelp-no-such-ns' }), 4, /CNI_NETNS.*kelp-no-such-ns.*ENOENT/);
    });
  });

  it('a netns path that is a regular file → code 4', async () => {
    const a = newAttachment(sb);
    const file = path.join(sb.dir, 'not-a-netns');
    writeFileSync(file, '');
    await leavesNothing(a, async () => {
      expectCniError(await sb.cni('ADD', { ...attachmentEnv(a), CNI_NETNS: file }), 4, /not a network namespace/);
    });
  });

  it('a namespace that is not a network namespace → code 4', async () => {
    const a = newAttachment(sb);
    await leavesNothing(a, async () => {
      expectCniError(await sb.cni('ADD', { ...attachmentEnv(a), CNI_NETNS: '/proc/self/ns/mnt' }), 4, /mnt is not a network namespace/);
    });
  });

  it.each([
    ["the node's netns by name", (s: Sandbox) => `/var/run/netns/${s.node}`],
    ['/proc/self/ns/net (the agent resolves it to its own)', () => '/proc/self/ns/net'],
  ])("the agent's own netns (%s) → error, the node untouched", async (_n, netns) => {
    const a = newAttachment(sb);
    await leavesNothing(a, async () => {
      expectCniError(await sb.cni('ADD', { ...attachmentEnv(a), CNI_NETNS: netns(sb) }), 4, /agent's own network namespace/);
    });
  });
});

describe('network configuration', () => {
  it.each([
    ['network name with a space → code 7', { name: 'bad name' }, 7, /name/],
    ['network name with a slash → code 7', { name: '../etc' }, 7, /name/],
    ['ipam subnet /33 → code 7', { ipam: { type: 'kelp', ranges: [[{ subnet: '10.244.0.0/33' }]] } }, 7, /subnet/],
    ['ipam subnet not a CIDR → code 7', { ipam: { type: 'kelp', subnet: 'ten.0.0.0/8' } }, 7, /subnet/],
    ['ipam rangeStart outside the subnet → code 7', { ipam: { type: 'kelp', ranges: [[{ subnet: '10.244.0.0/24', rangeStart: '10.9.0.1' }]] } }, 7, /rangeStart/],
    ['ipam plugin not in CNI_PATH → code 7', { ipam: { type: 'no-such-ipam', subnet: '10.244.0.0/24' } }, 7, /failed to find plugin "no-such-ipam"/],
    ['mtu out of range → code 7', { mtu: 20 }, 7, /mtu/],
    // kelp's IPAM hands out only addresses of the node's pod CIDR (10.244.0.0/24 here).
    ['ipam.subnet outside the pod CIDR → code 7', { ipam: { type: 'kelp', subnet: '10.99.0.0/24' } }, 7, /^invalid ipam configuration ipam\.subnet 10\.99\.0\.0\/24 is outside this node's pod CIDR 10\.244\.0\.0\/24$/],
    ['a second range set outside the pod CIDR → code 7', { ipam: { type: 'kelp', ranges: [[{ subnet: '10.244.0.0/25' }], [{ subnet: '10.244.0.128/25' }, { subnet: '10.77.0.0/24' }]] } }, 7, /ipam\.ranges\[1\]\[1\]\.subnet 10\.77\.0\.0\/24 is outside this node's pod CIDR 10\.244\.0\.0\/24/],
    ['a subnet wider than the pod CIDR → code 7', { ipam: { type: 'kelp', ranges: [[{ subnet: '10.244.0.0/16', rangeStart: '10.244.0.10', rangeEnd: '10.244.0.20' }]] } }, 7, /ipam\.ranges\[0\]\[0\]\.subnet 10\.244\.0\.0\/16 is outside/],
    ['an IPv6 range set → code 7', { ipam: { type: 'kelp', ranges: [[{ subnet: '10.244.0.0/24' }], [{ subnet: 'fd00::/64' }]] } }, 7, /ipam\.ranges\[1\]\[0\]\.subnet fd00::\/64 is outside/],
  ] as const)('%s', async (_n, overrides, code, msg) => {
    const a = newAttachment(sb);
    await leavesNothing(a, async () => {
      expectCniError(await add(sb, a, { config: sb.pluginConfig(overrides as Record<string, unknown>) }), code, msg);
    });
  });
});

describe('kelp IPAM inside the pod CIDR', () => {
  it('a range inside the pod CIDR is kelp\'s to hand out', async () => {
    const a = newAttachment(sb);
    const config = sb.pluginConfig({ ipam: { type: 'kelp', subnet: '10.244.0.0/26', rangeStart: '10.244.0.40', rangeEnd: '10.244.0.41' } });
    const r = await mustAdd(sb, a, { config });
    expect(['10.244.0.40', '10.244.0.41']).toContain(resultIp(r));
    expect(ping(sb, a.netns, sb.nodeIp)).toBe(true);
    expectSilentSuccess(await del(sb, a, { config }));
  });
});

describe('failed ADDs roll back', () => {
  it('CNI_IFNAME already exists in the pod → error; no veth, lease, map entry or record; the pod keeps its own eth0', async () => {
    const a = newAttachment(sb);
    sb.exec(a.netns, 'ip', ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'other0']);
    await leavesNothing(
      a,
      async () => {
        expectCniError(await add(sb, a), 100, /eth0.*EEXIST/);
      },
      ['eth0', 'lo', 'other0'],
    );
    // The runtime follows a failed ADD with DEL: it must succeed and leave the pod's eth0 alone.
    expectSilentSuccess(await del(sb, a));
    expect(linkNames(a.netns)).toEqual(['eth0', 'lo', 'other0']);
  });

  it("CNI_IFNAME = lo → error and nothing left", async () => {
    const a = newAttachment(sb, 'lo');
    await leavesNothing(a, async () => {
      expectCniError(await add(sb, a), 100, /EEXIST/);
    });
  });

  it('a second ADD for the same container id in another netns → error, the first unaffected', async () => {
    const first = newAttachment(sb);
    const r = await mustAdd(sb, first);
    const ip = resultIp(r);
    const hostIfname = hostIfnameFor(NETWORK, first.containerId, 'eth0');
    const entry = endpointEntry(sb, ip);
    const second: Attachment = { ...newAttachment(sb), containerId: first.containerId };
    const before = nodeTrace(sb);
    expectCniError(await add(sb, second), 112, /exists/);
    expect(nodeTrace(sb)).toEqual(before);
    expect(linkNames(second.netns)).toEqual(['lo']);
    expect(addresses(first.netns, 'eth0')).toEqual([r.ips[0].address]);
    expect(endpointEntry(sb, ip)).toEqual(entry);
    expect(traceOf(sb, first, ip, hostIfname).link).toBe(true);
    expect(recordOf(sb, first)?.netns).toBe(first.netnsPath);
  });

  it('a host veth left under the attachment\'s name by a crashed attempt is replaced; the ADD succeeds', async () => {
    const a = newAttachment(sb);
    const hostIfname = hostIfnameFor(NETWORK, a.containerId, 'eth0');
    sh('ip', ['-n', sb.node, 'link', 'add', hostIfname, 'type', 'veth', 'peer', 'name', `${hostIfname.slice(0, 10)}x`]);
    const stale = ipJson(sb.node, 'link', 'show', 'dev', hostIfname)[0].ifindex as number;
    const r = await mustAdd(sb, a);
    const now = ipJson(sb.node, 'link', 'show', 'dev', hostIfname)[0];
    expect(now.ifindex).not.toBe(stale);
    expect(recordOf(sb, a)?.hostIfindex).toBe(now.ifindex);
    expect(linkNames(sb.node)).not.toContain(`${hostIfname.slice(0, 10)}x`);
    expect(ping(sb, a.netns, sb.nodeIp)).toBe(true);
    expectSilentSuccess(await del(sb, a));
    expect(linkNames(sb.node)).not.toContain(hostIfname);
    expect(r.ips[0].address).toMatch(/^10\./);
  });

  it('a second ADD for the same attachment in the same netns → error (the interface exists), state untouched', async () => {
    const a = newAttachment(sb);
    const r = await mustAdd(sb, a);
    const before = nodeTrace(sb);
    expectCniError(await add(sb, a), 112, /exists/);
    expect(nodeTrace(sb)).toEqual(before);
    expect(addresses(a.netns, 'eth0')).toEqual([r.ips[0].address]);
  });
});

describe('pool exhaustion', () => {
  it('a two-address range: the third ADD fails with nothing left, the first two still talk; DEL of the failed one → 0', async () => {
    const config = sb.pluginConfig({ ipam: { type: 'kelp', ranges: [[{ subnet: '10.244.0.0/24', rangeStart: '10.244.0.250', rangeEnd: '10.244.0.251' }]] } });
    const p1 = newAttachment(sb);
    const p2 = newAttachment(sb);
    const p3 = newAttachment(sb);
    const ips = [resultIp(await mustAdd(sb, p1, { config })), resultIp(await mustAdd(sb, p2, { config }))].sort();
    expect(ips).toEqual(['10.244.0.250', '10.244.0.251']);
    await leavesNothing(p3, async () => {
      expectCniError(await add(sb, p3, { config }), 110, /no IP addresses available/);
    });
    expect(ping(sb, p1.netns, ips[1])).toBe(true);
    expect(ping(sb, p2.netns, ips[0])).toBe(true);
    expectSilentSuccess(await del(sb, p3, { config }));
  });
});
