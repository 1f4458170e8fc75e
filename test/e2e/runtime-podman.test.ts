// podman 4.3 (Debian's) with its CNI backend using kelp: `podman run` on kelp's network, a
// second kelp network attached and detached with `podman network connect/disconnect`, and the
// DEL that podman's cleanup process (started by conmon, with a scrubbed environment) sends when
// a container exits by itself. podman is private (own storage, containers.conf from
// deploy/runtimes/podman) and runs in the kelp node's network namespace.
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox } from '../../src/sandbox';
import { cleanupAll, tempDir, uniqueName } from '../support/netns';
import {
  buildRootfs,
  cniRequests,
  fillTemplate,
  inCidr,
  KelpEndpoint,
  kelpEndpoints,
  kelpLeftovers,
  PACKAGES,
  PodmanContainer,
  PrivatePodman,
  requirePackages,
  TEST_IMAGE,
  waitFor,
} from '../support/runtimes';

const SECOND = { name: 'kelp-b', subnet: '10.245.0.0/24' };
const HTTP_PORT = 8080;

let sb: Sandbox;
let pm: PrivatePodman;
const containers = new Map<string, PodmanContainer>();
/** Every endpoint kelp had for this file's containers, for the final leftover check. */
const seen = new Map<string, KelpEndpoint>();

function endpointsOf(c: PodmanContainer): KelpEndpoint[] {
  const eps = kelpEndpoints(sb).filter((e) => e.containerId === c.Id);
  for (const e of eps) seen.set(`${e.network}/${e.containerId}/${e.ifname}`, e);
  return eps;
}

function run(name: string, cmd: string[]): PodmanContainer {
  pm.podman(['run', '-d', '--name', name, '--hostname', name, TEST_IMAGE, ...cmd]);
  const c = pm.inspect(name);
  containers.set(name, c);
  return c;
}

/** The body of GET / from a container's httpd, fetched from inside container `from`. */
function httpGet(from: string, ip: string): string {
  const out = pm.podman(['exec', from, 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${ip} ${HTTP_PORT}`]);
  if (!out.includes('\r\n\r\n')) throw new Error(`no HTTP response from ${ip}: ${out}`);
  return out.split('\r\n\r\n')[1].trim();
}

function pings(from: string, ip: string): boolean {
  return pm.podman(['exec', from, 'ping', '-c', '1', '-W', '2', ip], { allowFail: true }).includes(' 0% packet loss');
}

function ipOf(name: string, network: string): string {
  return pm.inspect(name).NetworkSettings.Networks[network]?.IPAddress ?? '';
}

const SERVER = ['/bin/sh', '-c', `hostname > /www/index.html && exec httpd -f -p ${HTTP_PORT} -h /www`];

beforeAll(async () => {
  requirePackages(PACKAGES.podman);
  sb = await Sandbox.start({ prefix: uniqueName('rp') });
  // podman reads every network in its config dir: kelp's own conflist as the agent installed
  // it, and a second kelp network on another subnet, for `podman network connect`. kelp's own
  // IPAM hands out this node's pod CIDR only, so the second subnet is delegated to host-local.
  writeFileSync(
    path.join(sb.cniConfDir, `10-${SECOND.name}.conflist`),
    fillTemplate('podman/10-kelp-secondary.conflist', { NAME: SECOND.name, AGENT_SOCKET: sb.socketPath, SUBNET: SECOND.subnet, DATA_DIR: path.join(sb.dir, 'ipam-b') }),
  );
  pm = PrivatePodman.setup(sb, { cniConfDir: sb.cniConfDir, cniBinDir: sb.cniBinDir });
  pm.importImage(buildRootfs(tempDir('kelp-podman-image-')));
});

afterAll(async () => {
  pm?.stop();
  await sb?.stop();
  cleanupAll();
});

describe('podman 4.3 (CNI backend) with kelp', () => {
  it('lists kelp, its default network, and the second kelp network', () => {
    const nets = JSON.parse(pm.podman(['network', 'ls', '--format', 'json'])) as Array<{ name: string; driver: string }>;
    expect(nets.map((n) => [n.name, n.driver])).toEqual(
      expect.arrayContaining([
        ['kelp', 'kelp-cni'],
        [SECOND.name, 'kelp-cni'],
      ]),
    );
  });

  it('podman run: each container gets a kelp address and they reach each other', async () => {
    for (const name of ['a', 'b']) {
      const c = run(name, SERVER);
      const ip = c.NetworkSettings.Networks.kelp?.IPAddress ?? '';
      expect(inCidr(ip, sb.podCidr), `${name} has ${ip}`).toBe(true);
      expect(pm.podman(['exec', name, 'ip', '-o', '-4', 'addr', 'show', 'dev', 'eth0'])).toContain(` ${ip}/`);
      expect(endpointsOf(c).map((e) => [e.network, e.ifname, e.ip])).toEqual([['kelp', 'eth0', `${ip}/24`]]);
    }
    const [a, b] = [ipOf('a', 'kelp'), ipOf('b', 'kelp')];
    expect(a).not.toBe(b);
    expect(await waitFor('a -> b over HTTP', () => httpGet('a', b))).toBe('b');
    expect(await waitFor('b -> a over HTTP', () => httpGet('b', a))).toBe('a');
    expect(pings('a', b)).toBe(true);
    expect(pings('b', a)).toBe(true);
  });

  it('podman network connect / disconnect attaches and detaches a second kelp network', () => {
    for (const name of ['a', 'b']) pm.podman(['network', 'connect', SECOND.name, name]);
    const [a2, b2] = [ipOf('a', SECOND.name), ipOf('b', SECOND.name)];
    for (const [name, ip] of [
      ['a', a2],
      ['b', b2],
    ]) {
      expect(inCidr(ip, SECOND.subnet), `${name} has ${ip} on ${SECOND.name}`).toBe(true);
      expect(pm.podman(['exec', name, 'ip', '-o', '-4', 'addr', 'show', 'dev', 'eth1'])).toContain(` ${ip}/`);
      const eps = endpointsOf(containers.get(name)!);
      expect(eps.map((e) => [e.network, e.ifname]).sort()).toEqual([
        ['kelp', 'eth0'],
        [SECOND.name, 'eth1'],
      ]);
    }
    expect(pings('a', b2)).toBe(true);
    expect(httpGet('b', a2)).toBe('a');

    const second = [...seen.values()].filter((e) => e.network === SECOND.name);
    for (const name of ['a', 'b']) pm.podman(['network', 'disconnect', SECOND.name, name]);
    for (const name of ['a', 'b']) {
      expect(pm.podman(['exec', name, 'ip', '-o', 'link', 'show', 'dev', 'eth1'], { allowFail: true })).toBe('');
      expect(Object.keys(pm.inspect(name).NetworkSettings.Networks)).toEqual(['kelp']);
    }
    expect(kelpLeftovers(sb, second)).toEqual([]);
    // The first network is untouched.
    expect(pings('a', ipOf('b', 'kelp'))).toBe(true);
  });

  it("a container that exits by itself is released by podman's cleanup process", async () => {
    const c = run('c', ['/bin/sh', '-c', 'while [ ! -f /tmp/stop ]; do sleep 0.1; done']);
    const [ep] = endpointsOf(c);
    expect(ep?.network).toBe('kelp');
    pm.podman(['exec', 'c', 'sh', '-c', '> /tmp/stop']);
    // No podman command runs while waiting: the DEL can only come from `podman container
    // cleanup`, which conmon starts when the container's process exits.
    await waitFor('kelp to release the exited container', () => !kelpEndpoints(sb).some((e) => e.containerId === c.Id));
    expect(pm.inspect('c').State.Status).toBe('exited');
    const dels = cniRequests(sb).filter((r) => r.containerId === c.Id && r.cmd === 'DEL');
    expect(dels.length).toBeGreaterThanOrEqual(1);
    expect(dels.filter((r) => r.exit !== 0)).toEqual([]);
    expect(kelpLeftovers(sb, [ep])).toEqual([]);
  });

  it('podman rm -f leaves nothing of kelp behind', () => {
    pm.podman(['rm', '--force', '--time', '0', ...containers.keys()]);
    expect(kelpEndpoints(sb)).toEqual([]);
    expect(kelpLeftovers(sb, [...seen.values()])).toEqual([]);
    for (const c of containers.values()) {
      expect(existsSync(c.NetworkSettings.SandboxKey), c.NetworkSettings.SandboxKey).toBe(false);
      expect(cniRequests(sb).filter((r) => r.containerId === c.Id && r.exit !== 0)).toEqual([]);
    }
  });
});
