// containerd 1.6 (Debian's) running pods on a kelp node through its CRI plugin, driven the way
// kubelet drives it: RunPodSandbox / CreateContainer / StartContainer / StopPodSandbox /
// RemovePodSandbox. containerd is a private instance (own root, state, socket, config) started
// in the node's network namespace; its CRI plugin execs the kelp-cni the agent installed.
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox } from '../../src/sandbox';
import type { ContainerConfig, PodSandboxConfig, PortMapping } from '../support/cri';
import { cleanupAll, tempDir, uniqueName } from '../support/netns';
import {
  buildRootfs,
  cniRequests,
  inCidr,
  KelpEndpoint,
  kelpEndpoints,
  kelpLeftovers,
  kelpPods,
  LIBCNI_CACHE,
  ociArchive,
  PACKAGES,
  PrivateContainerd,
  requirePackages,
  TEST_IMAGE,
  waitFor,
} from '../support/runtimes';

const NAMESPACE = 'shop';
const HTTP_PORT = 8080;
const HOST_PORT = 18080;

interface Pod {
  name: string;
  config: PodSandboxConfig;
  id: string;
  ip: string;
  netns: string;
  container?: string;
}

let sb: Sandbox;
let ctd: PrivateContainerd;
let runtimeConfDir: string;
const pods: Pod[] = [];
let podEndpoints: KelpEndpoint[] = [];

function podConfig(name: string, portMappings?: PodSandboxConfig['portMappings']): PodSandboxConfig {
  return {
    metadata: { name, namespace: NAMESPACE, uid: `uid-${name}-${process.pid}` },
    hostname: name,
    logDirectory: path.join(ctd.dir, 'logs', name),
    portMappings,
    linux: {},
  };
}

/** A container serving its pod's hostname over HTTP (busybox httpd). */
function serverConfig(): ContainerConfig {
  return {
    metadata: { name: 'server' },
    image: { image: TEST_IMAGE },
    command: ['/bin/sh', '-c', `hostname > /www/index.html && exec httpd -f -p ${HTTP_PORT} -h /www`],
    logPath: 'server.log',
  };
}

/** A shell line fetching / from a pod's server (busybox-static's wget crashes without glibc's NSS libraries; nc does not). */
function httpGet(ip: string): string {
  return `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${ip} ${HTTP_PORT}`;
}

async function exec(pod: Pod, cmd: string[]): Promise<{ exitCode: number; out: string }> {
  const res = await ctd.cri.exec(pod.container!, cmd);
  return { exitCode: res.exitCode, out: res.stdout + res.stderr };
}

beforeAll(async () => {
  requirePackages(PACKAGES.containerd);
  sb = await Sandbox.start({ prefix: uniqueName('rc') });
  // containerd 1.6 sets up the pod's loopback with the `loopback` plugin from its single
  // bin_dir: on a node that dir holds the reference plugins next to kelp-cni.
  symlinkSync('/usr/lib/cni/loopback', path.join(sb.cniBinDir, 'loopback'));
  // kelp's conflist as the agent installed it, plus the portMappings capability so containerd
  // passes the pod's port mappings as runtimeConfig (with its capitalised Go field names).
  runtimeConfDir = tempDir('kelp-ctd-net-');
  const conflist = JSON.parse(readFileSync(path.join(sb.cniConfDir, '05-kelp.conflist'), 'utf8')) as { plugins: Array<Record<string, unknown>> };
  conflist.plugins[0].capabilities = { portMappings: true };
  writeFileSync(path.join(runtimeConfDir, '05-kelp.conflist'), JSON.stringify(conflist, null, 2));

  ctd = await PrivateContainerd.start(sb, { cniBinDir: sb.cniBinDir, cniConfDir: runtimeConfDir });
  const imageDir = tempDir('kelp-ctd-image-');
  ctd.importImage(ociArchive(buildRootfs(imageDir), imageDir));
  mkdirSync(path.join(ctd.dir, 'logs'), { recursive: true });
});

afterAll(async () => {
  await ctd?.stop();
  await sb?.stop();
  cleanupAll();
});

describe('containerd 1.6 CRI with kelp', () => {
  it('is ready, with kelp as its pod network and the test image as its sandbox image', async () => {
    const { conditions, info } = await ctd.cri.status();
    expect(conditions.RuntimeReady?.status, conditions.RuntimeReady?.message).toBe(true);
    expect(conditions.NetworkReady?.status, conditions.NetworkReady?.message).toBe(true);
    const cni = JSON.parse(info.cniconfig) as { Networks: Array<{ Config: { Name: string; Plugins: Array<{ Network: { type: string } }> } }> };
    expect(cni.Networks.map((n) => n.Config.Name)).toContain('kelp');
    const kelp = cni.Networks.find((n) => n.Config.Name === 'kelp')!;
    expect(kelp.Config.Plugins.map((p) => p.Network.type)).toEqual(['kelp-cni']);
    expect((JSON.parse(info.config) as { sandboxImage: string }).sandboxImage).toBe(TEST_IMAGE);
    expect(await ctd.cri.imagePresent(TEST_IMAGE)).toBe(true);
  });

  it('RunPodSandbox: each pod gets an address from kelp, and kelp knows the pod by its Kubernetes identity', async () => {
    const specs: Array<[string, PortMapping[] | undefined]> = [
      ['web', [{ protocol: 'TCP', containerPort: HTTP_PORT, hostPort: HOST_PORT }]],
      ['db', undefined],
    ];
    for (const [name, ports] of specs) {
      const config = podConfig(name, ports);
      const id = await ctd.cri.runPodSandbox(config);
      const { status } = await ctd.cri.podSandboxStatus(id);
      pods.push({ name, config, id, ip: status.network?.ip ?? '', netns: await ctd.sandboxNetns(id) });
      expect(status.state).toBe('SANDBOX_READY');
    }
    const [web, db] = pods;
    for (const pod of pods) expect(inCidr(pod.ip, sb.podCidr), `${pod.name} has ${pod.ip}`).toBe(true);
    expect(web.ip).not.toBe(db.ip);

    // The address the CRI reports is the one on eth0 in the sandbox's netns.
    for (const pod of pods) {
      const addrs = JSON.parse(sb.exec(path.basename(pod.netns), 'ip', ['-j', 'addr', 'show', 'dev', 'eth0'])) as Array<{ addr_info: Array<{ local: string }> }>;
      expect(addrs[0].addr_info.map((a) => a.local)).toContain(pod.ip);
    }

    // K8S_POD_NAMESPACE / K8S_POD_NAME reached kelp among the other CNI_ARGS.
    const kelp = kelpPods(sb);
    for (const pod of pods) {
      expect(kelp).toContainEqual(expect.objectContaining({ namespace: NAMESPACE, name: pod.name, ip: pod.ip, containerId: pod.id }));
    }
    podEndpoints = kelpEndpoints(sb).filter((e) => pods.some((p) => p.id === e.containerId));
    expect(podEndpoints.map((e) => [e.containerId, e.ifname, e.pod])).toEqual(
      expect.arrayContaining(pods.map((p) => [p.id, 'eth0', `${NAMESPACE}/${p.name}`])),
    );
  });

  it('passed kelp the CNI_ARGS and the capitalised runtimeConfig keys containerd sends, and kelp took them', () => {
    const [web, db] = pods;
    // libcni's cache holds the exact CNI_ARGS and capability arguments it gave the plugin.
    const cache = (pod: Pod) => {
      const file = path.join(LIBCNI_CACHE, `kelp-${pod.id}-eth0`);
      expect(existsSync(file), `${file} (libcni's record of the ADD)`).toBe(true);
      return JSON.parse(readFileSync(file, 'utf8')) as { cniArgs: string[][]; capabilityArgs: Record<string, unknown>; config: string };
    };
    const webAdd = cache(web);
    expect(Object.fromEntries(webAdd.cniArgs)).toEqual({
      IgnoreUnknown: '1',
      K8S_POD_NAMESPACE: NAMESPACE,
      K8S_POD_NAME: 'web',
      K8S_POD_INFRA_CONTAINER_ID: web.id,
      K8S_POD_UID: web.config.metadata.uid,
    });
    // go-cni's PortMapping has no JSON tags: the plugin gets Go field names. kelp requires
    // hostPort in every mapping (code 7 without it), so the successful ADD above means it
    // matched "HostPort" case-insensitively.
    expect(webAdd.capabilityArgs.portMappings).toEqual([{ HostPort: HOST_PORT, ContainerPort: HTTP_PORT, Protocol: 'tcp', HostIP: '' }]);
    const sent = JSON.parse(Buffer.from(webAdd.config, 'base64').toString()) as { plugins: Array<{ capabilities?: Record<string, boolean> }> };
    expect(sent.plugins[0].capabilities).toEqual({ portMappings: true });
    // A pod without mappings gets no runtimeConfig entry for them.
    expect(cache(db).capabilityArgs.portMappings ?? []).toEqual([]);
    const adds = cniRequests(sb).filter((r) => r.cmd === 'ADD' && pods.some((p) => p.id === r.containerId));
    expect(adds.map((r) => [r.containerId, r.exit])).toEqual(pods.map((p) => [p.id, 0]));
  });

  it('containers in the two pods reach each other, and the outside through the node', async () => {
    for (const pod of pods) {
      pod.container = await ctd.cri.createContainer(pod.id, serverConfig(), pod.config);
      await ctd.cri.startContainer(pod.container);
      expect((await ctd.cri.containerStatus(pod.container)).state).toBe('CONTAINER_RUNNING');
    }
    const [web, db] = pods;
    for (const [from, to] of [
      [db, web],
      [web, db],
    ]) {
      // Polls only until httpd listens; the assertion is on what comes back.
      const body = await waitFor(`${from.name} -> ${to.name}:${HTTP_PORT}`, async () => {
        const r = await exec(from, ['sh', '-c', httpGet(to.ip)]);
        if (r.exitCode !== 0 || !r.out.includes('\r\n\r\n')) throw new Error(`exit ${r.exitCode}: ${r.out}`);
        return r.out.split('\r\n\r\n')[1];
      });
      expect(body.trim()).toBe(to.name);
      const ping = await exec(from, ['ping', '-c', '1', '-W', '2', to.ip]);
      expect(ping.out).toContain(' 0% packet loss');
    }
    const out = await exec(web, ['ping', '-c', '1', '-W', '2', sb.outsideIp]);
    expect(out.out).toContain(' 0% packet loss');
  });

  it('StopPodSandbox and RemovePodSandbox: two DELs per pod, both succeed, and nothing of kelp stays', async () => {
    expect(podEndpoints).toHaveLength(2);
    for (const pod of pods) {
      await ctd.cri.stopContainer(pod.container!, 0);
      await ctd.cri.stopPodSandbox(pod.id);
      await ctd.cri.removePodSandbox(pod.id);
    }
    expect(await ctd.cri.listPodSandboxes()).toEqual([]);
    const requests = cniRequests(sb);
    for (const pod of pods) {
      const mine = requests.filter((r) => r.containerId === pod.id);
      expect(mine.filter((r) => r.cmd === 'DEL').length, `DELs for ${pod.name}`).toBeGreaterThanOrEqual(2);
      expect(mine.filter((r) => r.exit !== 0)).toEqual([]);
      expect(existsSync(pod.netns), pod.netns).toBe(false);
      expect(existsSync(path.join(LIBCNI_CACHE, `kelp-${pod.id}-eth0`))).toBe(false);
    }
    expect(kelpLeftovers(sb, podEndpoints)).toEqual([]);
  });
});

