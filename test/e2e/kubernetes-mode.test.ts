// Kubernetes mode end to end: an agent started with --kubeconfig against the project's test API
// server (TLS, bearer token), spoken to by the real client library; objects written with real
// kubectl. Pods created by kelp-cni take their identity and labels from the API and follow label
// changes; watches that drop, expire (410) or a server that goes away and comes back are caught
// up with, deletions made meanwhile included.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Sandbox } from '../../src/sandbox';
import type { PodView } from '../../src/agent/views';
import { Sandbox as SandboxClass } from '../../src/sandbox';
import { e2ePrefix, eventually } from '../support/e2e';
import { startKubeApiServer, TestKubeApiServer } from '../support/kube-apiserver';
import { Bridge, bridgeInto } from '../support/kube-apiserver/bridge';

/** The port the node's agent reaches the API server on, inside the node's namespace. */
const NODE_API_PORT = 6443;

let api: TestKubeApiServer;
let sb: Sandbox;
let bridge: Bridge | undefined;

/** kubectl, asynchronously: the API server runs in this process and must keep answering. */
async function kubectl(...args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)('kubectl', ['--kubeconfig', api.kubeconfigPath, '--request-timeout=10s', ...args], { encoding: 'utf8', timeout: 30_000 });
  return stdout;
}

function pods(): PodView[] {
  return JSON.parse(sb.kelp('get', 'pods', '-o', 'json')) as PodView[];
}

const podOf = (ns: string, name: string) => pods().find((p) => p.namespace === ns && p.name === name);

beforeAll(async () => {
  api = await startKubeApiServer();
  // kelp's policy CRD is installed, upstream's ClusterNetworkPolicy CRD is not.
  await kubectl('apply', '-f', path.resolve(__dirname, '../../deploy/kubernetes/10-crd-kelpnetworkpolicies.yaml'));
  const kubeconfig = path.join(api.dir, 'node-kubeconfig');
  writeFileSync(kubeconfig, readFileSync(api.kubeconfigPath, 'utf8').split(`127.0.0.1:${api.port}`).join(`127.0.0.1:${NODE_API_PORT}`));
  sb = await SandboxClass.start({
    prefix: e2ePrefix('kub'),
    logLevel: 'debug',
    agentArgs: [`--kubeconfig=${kubeconfig}`],
    beforeAgent: (s) => {
      bridge = bridgeInto(`/var/run/netns/${s.node}`, NODE_API_PORT, api.port);
    },
  });
});

afterAll(async () => {
  await sb?.stop();
  await bridge?.close();
  await api?.stop();
});

describe('an agent fed by the Kubernetes API', () => {
  it('reports the source synced and its revisions', () => {
    const st = JSON.parse(sb.kelp('status', '-o', 'json')) as { sources: Array<{ name: string; reflectors?: Array<{ kind: string; synced: boolean }> }>; store: { revision: number; programmed: number } };
    const kube = st.sources.find((s) => s.name === 'kubernetes');
    expect(kube?.reflectors?.length).toBeGreaterThanOrEqual(2);
    expect(kube!.reflectors!.every((r) => r.synced)).toBe(true);
    expect(st.store.programmed).toBe(st.store.revision);
  });

  it('a pod created by kelp-cni takes its labels from the API, and follows a label change', async () => {
    await kubectl('create', 'namespace', 'shop');
    writeFileSync(
      path.join(api.dir, 'web.yaml'),
      `apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop, labels: {app: web}}\nspec: {nodeName: ${sb.node}, containers: [{name: c, image: busybox}]}\n`,
    );
    await kubectl('apply', '-f', path.join(api.dir, 'web.yaml'));
    await eventually('the Pod in the store', () => podOf('shop', 'web'));
    const pod = await sb.addPod('web', 'shop');
    const seen = await eventually('shop/web running', () => podOf('shop', 'web')?.state === 'Running' && podOf('shop', 'web'));
    expect(seen).toMatchObject({ ip: pod.ip, labels: { app: 'web' } });
    await kubectl('-n', 'shop', 'label', 'pod', 'web', 'app=api', 'tier=front', '--overwrite');
    await eventually('the new labels', () => podOf('shop', 'web')?.labels.app === 'api');
    expect(podOf('shop', 'web')?.labels).toEqual({ app: 'api', tier: 'front' });
  });

  it('a dropped watch is resumed: later changes still arrive', async () => {
    expect(api.faults.dropWatches()).toBeGreaterThan(0);
    await kubectl('-n', 'shop', 'label', 'pod', 'web', 'tier=back', '--overwrite');
    await eventually('the label after the drop', () => podOf('shop', 'web')?.labels.tier === 'back');
  });

  it('deleted while the server was down and its history compacted (410): the relist removes it', async () => {
    api.objects.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'gone', namespace: 'shop', labels: { app: 'gone' } }, spec: { nodeName: sb.node, containers: [{ name: 'c', image: 'busybox' }] } });
    await eventually('shop/gone in the store', () => podOf('shop', 'gone'));
    await api.down();
    api.objects.delete({ apiVersion: 'v1', kind: 'Pod', namespace: 'shop', name: 'gone' });
    api.faults.compact();
    await new Promise((r) => setTimeout(r, 500));
    // Nothing changes while the API is away: the store (and the datapath) keep the last state.
    expect(podOf('shop', 'gone')).toBeDefined();
    await api.up();
    await eventually('shop/gone removed after the relist', () => !podOf('shop', 'gone'), 40_000);
    expect(podOf('shop', 'web')?.labels.tier).toBe('back');
    const st = JSON.parse(sb.kelp('status', '-o', 'json')) as { sources: Array<{ name: string; reflectors?: Array<{ kind: string; lists: number }> }> };
    expect(st.sources.find((s) => s.name === 'kubernetes')!.reflectors!.find((r) => r.kind === 'Pod')!.lists).toBeGreaterThanOrEqual(2);
  }, 60_000);

  it('an object the API holds but kelp finds invalid is reported by name; its last good version stays', async () => {
    // A label value the API server's validation would refuse; the test server stores it as given.
    api.objects.patch({ apiVersion: 'v1', kind: 'Pod', namespace: 'shop', name: 'web' }, { metadata: { labels: { tier: 'not a valid value!' } } });
    const problem = await eventually('the problem reported', () => {
      const st = JSON.parse(sb.kelp('status', '-o', 'json')) as { problems: string[] };
      return st.problems.find((p) => p.includes('Pod/shop/web'));
    });
    expect(problem).toMatch(/metadata\.labels\["tier"\]/);
    expect(podOf('shop', 'web')?.labels.tier).toBe('back');
  });

  it('a KelpNetworkPolicy reaches the agent and gets its Valid condition; a cluster without the ClusterNetworkPolicy CRD syncs', async () => {
    const st = JSON.parse(sb.kelp('status', '-o', 'json')) as { sources: Array<{ name: string; reflectors?: Array<{ kind: string; synced: boolean; absent?: boolean }> }> };
    const refl = st.sources.find((x) => x.name === 'kubernetes')!.reflectors!;
    expect(refl.find((r) => r.kind === 'ClusterNetworkPolicy')).toMatchObject({ synced: true, absent: true });
    expect(refl.find((r) => r.kind === 'KelpNetworkPolicy')).toMatchObject({ synced: true, absent: false });
    // Selecting no pod of this test: the later tests' traffic stays as it is.
    const policy = (name: string, action: string) =>
      `apiVersion: policy.kelp.dev/v1alpha1\nkind: KelpNetworkPolicy\nmetadata: {name: ${name}, namespace: shop}\n` +
      `spec: {subject: {podSelector: {matchLabels: {app: none}}}, ingress: [{action: ${action}, from: [{namespaces: {}}]}]}\n`;
    writeFileSync(path.join(api.dir, 'knp.yaml'), `${policy('deny-all', 'Deny')}---\n${policy('pass-all', 'Pass')}`);
    await kubectl('apply', '-f', path.join(api.dir, 'knp.yaml'));
    const valid = (name: string) =>
      (api.objects.get({ apiVersion: 'policy.kelp.dev/v1alpha1', kind: 'KelpNetworkPolicy', namespace: 'shop', name })?.status?.conditions ?? []).find((c: { type: string }) => c.type === 'Valid');
    expect(await eventually('deny-all Valid', () => valid('deny-all'))).toMatchObject({ status: 'True', observedGeneration: 1 });
    const refused = await eventually('pass-all Valid', () => valid('pass-all'));
    expect(refused).toMatchObject({ status: 'False', reason: 'Invalid', message: 'spec.ingress[0].action: must be one of Accept, Deny, got "Pass"' });
    const problems = (JSON.parse(sb.kelp('status', '-o', 'json')) as { problems: string[] }).problems;
    expect(problems.find((p) => p.includes('KelpNetworkPolicy/shop/pass-all'))).toMatch(/spec\.ingress\[0\]\.action/);
  });

  it('without --pod-cidr, the node takes its pod CIDR from its Node object', async () => {
    api.objects.create({ apiVersion: 'v1', kind: 'Node', metadata: { name: sb.node }, spec: { podCIDR: '10.245.7.0/24', podCIDRs: ['10.245.7.0/24'] } });
    await sb.stopAgent();
    sb.opts.podCidrFromNode = true;
    await sb.startAgent();
    expect(JSON.parse(sb.kelp('status', '-o', 'json')).podCidr).toBe('10.245.7.0/24');
    api.objects.create({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'second', namespace: 'shop', labels: { app: 'second' } }, spec: { nodeName: sb.node, containers: [{ name: 'c', image: 'busybox' }] } });
    const pod = await sb.addPod('second', 'shop');
    expect(pod.ip).toMatch(/^10\.245\.7\./);
    // The pod from before the restart is still served; its API object, invalid since the test
    // above, has no last good version in a fresh agent's store.
    expect(podOf('shop', 'web')?.state).toBe('Running (no Pod object)');
    await eventually('shop/second running with its API labels', () => podOf('shop', 'second')?.state === 'Running');
    expect(podOf('shop', 'second')).toMatchObject({ ip: pod.ip, labels: { app: 'second' } });
  });

  it('API server down at start: running pods keep their network, ADD gets code 11, the agent catches up once it is back', async () => {
    const web = sb.pods.get('shop/web')!;
    const second = sb.pods.get('shop/second')!;
    await sb.stopAgent();
    await api.down();
    const starting = sb.startAgent();
    let started = false;
    void starting.then(() => (started = true), () => undefined);
    await new Promise((r) => setTimeout(r, 1500));
    expect(started).toBe(false);
    // The pinned datapath serves the pods while the agent waits for the API.
    expect(sb.exec(web.netns, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', second.ip])).toMatch(/2 received/);
    const netns = `${sb.opts.prefix}-late`;
    const netnsPath = sb.createNetns(netns);
    const add = await sb.cni('ADD', { CNI_CONTAINERID: `${sb.opts.prefix}late${'0'.repeat(24)}`, CNI_NETNS: netnsPath, CNI_IFNAME: 'eth0' });
    expect(add.code).not.toBe(0);
    expect(add.json).toMatchObject({ code: 11 });
    // The API comes back only once the agent has met it down (its API socket is not up yet, so its
    // log says): on a loaded machine the agent's start can outlast the wait above, and an API back
    // before its first request would leave nothing for this test to see.
    await eventually('the agent meeting the API server down', () => sb.agentLog().includes('Kubernetes API error'), 30_000);
    await api.up();
    await starting;
    const st = JSON.parse(sb.kelp('status', '-o', 'json')) as { ready: boolean; sources: Array<{ name: string; reflectors?: Array<{ errors: number; synced: boolean }> }> };
    expect(st.ready).toBe(true);
    const refl = st.sources.find((x) => x.name === 'kubernetes')!.reflectors!;
    expect(refl.every((r) => r.synced)).toBe(true);
    expect(refl.some((r) => r.errors > 0)).toBe(true);
    const late = await sb.addPod('late', 'shop');
    expect(late.ip).toMatch(/^10\.245\.7\./);
  }, 60_000);

  it("masquerades to the Node's InternalIP, on the device that holds it", async () => {
    await sb.stopAgent();
    sb.exec(sb.node, 'ip', ['link', 'add', 'extra0', 'type', 'veth', 'peer', 'name', 'extra1']);
    sb.exec(sb.node, 'ip', ['addr', 'add', '192.168.77.1/24', 'dev', 'extra0']);
    sb.exec(sb.node, 'ip', ['link', 'set', 'extra0', 'up']);
    const node = api.objects.get({ apiVersion: 'v1', kind: 'Node', name: sb.node })!;
    api.objects.updateStatus({ ...node, status: { addresses: [{ type: 'InternalIP', address: '192.168.77.1' }, { type: 'Hostname', address: sb.node }] } });
    await sb.startAgent();
    const st = JSON.parse(sb.kelp('status', '-o', 'json')) as { masquerade: { uplink: string; address: string } | null };
    expect(st.masquerade).toEqual({ uplink: 'extra0', address: '192.168.77.1' });
  });
});
