// The same expectations against both sources of desired state — a manifest directory and the
// Kubernetes API — so the spine behaves alike whatever feeds it: pods appear with their labels,
// label changes arrive, objects deleted while the agent is down are gone after its restart, and
// an agent restarted on changes it missed (a stale view) catches up.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox } from '../../src/sandbox';
import type { PodView } from '../../src/agent/views';
import { e2ePrefix, eventually } from '../support/e2e';
import { startKubeApiServer, TestKubeApiServer } from '../support/kube-apiserver';
import { Bridge, bridgeInto } from '../support/kube-apiserver/bridge';

const NODE_API_PORT = 6443;

/** How a test writes desired state into one source. */
interface Driver {
  sb: Sandbox;
  namespace(name: string): Promise<void>;
  pod(ns: string, name: string, labels: Record<string, string>): Promise<void>;
  deletePod(ns: string, name: string): Promise<void>;
  /** Creates any other object (a policy). */
  object(o: { apiVersion: string; kind: string; metadata: { name: string; namespace: string } }): Promise<void>;
  deleteObject(o: { apiVersion: string; kind: string; metadata: { name: string; namespace: string } }): Promise<void>;
  stop(): Promise<void>;
}

const podManifest = (ns: string, name: string, labels: Record<string, string>, node: string) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: ns, labels },
  spec: { nodeName: node, containers: [{ name: 'c', image: 'busybox' }] },
});

async function manifestsDriver(): Promise<Driver> {
  const sb = await Sandbox.start({ prefix: e2ePrefix('smf'), logLevel: 'debug' });
  const file = (ns: string, kind: string, name: string) => path.join(sb.manifests, `${kind}-${ns}-${name}.json`);
  return {
    sb,
    namespace: async (name) => writeFileSync(file('', 'ns', name), JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } })),
    pod: async (ns, name, labels) => writeFileSync(file(ns, 'pod', name), JSON.stringify(podManifest(ns, name, labels, sb.node))),
    deletePod: async (ns, name) => rmSync(file(ns, 'pod', name)),
    object: async (o) => writeFileSync(file(o.metadata.namespace, o.kind, o.metadata.name), JSON.stringify(o)),
    deleteObject: async (o) => rmSync(file(o.metadata.namespace, o.kind, o.metadata.name)),
    stop: () => sb.stop(),
  };
}

async function kubernetesDriver(): Promise<Driver> {
  const api: TestKubeApiServer = await startKubeApiServer();
  const kubeconfig = path.join(api.dir, 'node-kubeconfig');
  writeFileSync(kubeconfig, readFileSync(api.kubeconfigPath, 'utf8').split(`127.0.0.1:${api.port}`).join(`127.0.0.1:${NODE_API_PORT}`));
  let bridge: Bridge | undefined;
  let sb: Sandbox;
  try {
    sb = await Sandbox.start({
      prefix: e2ePrefix('skb'),
      logLevel: 'debug',
      agentArgs: [`--kubeconfig=${kubeconfig}`],
      beforeAgent: (s) => {
        bridge = bridgeInto(`/var/run/netns/${s.node}`, NODE_API_PORT, api.port);
      },
    });
  } catch (e) {
    await bridge?.close();
    await api.stop();
    throw e;
  }
  return {
    sb,
    namespace: async (name) => void api.objects.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } }),
    pod: async (ns, name, labels) => {
      const ref = { apiVersion: 'v1', kind: 'Pod', namespace: ns, name };
      if (api.objects.get(ref)) api.objects.patch(ref, { metadata: { labels } });
      else api.objects.create(podManifest(ns, name, labels, sb.node));
    },
    deletePod: async (ns, name) => void api.objects.delete({ apiVersion: 'v1', kind: 'Pod', namespace: ns, name }),
    object: async (o) => void api.objects.create(o),
    deleteObject: async (o) => void api.objects.delete({ apiVersion: o.apiVersion, kind: o.kind, namespace: o.metadata.namespace, name: o.metadata.name }),
    stop: async () => {
      await sb?.stop();
      await bridge?.close();
      await api.stop();
    },
  };
}

describe.each([
  ['a manifest directory', manifestsDriver],
  ['the Kubernetes API', kubernetesDriver],
] as const)('fed by %s', (_label, start) => {
  let d: Driver;
  beforeAll(async () => {
    d = await start();
  });
  afterAll(async () => {
    await d?.stop();
  });

  const pods = () => JSON.parse(d.sb.kelp('get', 'pods', '-o', 'json')) as PodView[];
  const pod = (ns: string, name: string) => pods().find((p) => p.namespace === ns && p.name === name);

  it('a pod appears with its labels and follows a label change', async () => {
    await d.namespace('shop');
    await d.pod('shop', 'web', { app: 'web' });
    await eventually('shop/web in the store', () => pod('shop', 'web'));
    const p = await d.sb.addPod('web', 'shop');
    expect(await eventually('shop/web running', () => pod('shop', 'web')?.state === 'Running' && pod('shop', 'web'))).toMatchObject({ ip: p.ip, labels: { app: 'web' } });
    await d.pod('shop', 'web', { app: 'api' });
    await eventually('the new label', () => pod('shop', 'web')?.labels.app === 'api');
  });

  it('an object deleted while the agent is down is gone after its restart; the pod keeps its network', async () => {
    await d.pod('shop', 'db', { app: 'db' });
    const db = await d.sb.addPod('db', 'shop');
    await eventually('shop/db running', () => pod('shop', 'db')?.state === 'Running');
    await d.sb.stopAgent();
    await d.deletePod('shop', 'db');
    await d.sb.startAgent();
    await eventually('shop/db without its object', () => pod('shop', 'db')?.state === 'Running (no Pod object)');
    const web = d.sb.pods.get('shop/web')!;
    expect(d.sb.exec(web.netns, 'ping', ['-c', '2', '-i', '0.2', '-W', '2', db.ip])).toMatch(/2 received/);
  });

  it('an agent restarted on changes it missed (a stale view) catches up', async () => {
    await d.sb.stopAgent();
    await d.pod('shop', 'web', { app: 'web', tier: 'front' });
    await d.pod('shop', 'cache', { app: 'cache' });
    await d.sb.startAgent();
    await eventually('the missed label', () => pod('shop', 'web')?.labels.tier === 'front');
    expect(pod('shop', 'cache')).toMatchObject({ state: 'Pending', labels: { app: 'cache' } });
  });

  it('a NetworkPolicy is enforced, follows a label change of its peer, and lets go when deleted', async () => {
    const web = d.sb.pods.get('shop/web')!;
    const db = d.sb.pods.get('shop/db')!;
    const pings = () => {
      try {
        return /1 received/.test(d.sb.exec(web.netns, 'ping', ['-c', '1', '-W', '1', db.ip]));
      } catch {
        return false;
      }
    };
    await d.pod('shop', 'db', { app: 'db' }); // its object went in the second test
    await d.pod('shop', 'web', { app: 'web' });
    const policy = {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'db-from-web', namespace: 'shop' },
      spec: { podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }] }] },
    };
    await d.object(policy);
    await eventually('the policy in the store', () => d.sb.kelp('get', 'policies').includes('db-from-web'));
    expect(pings()).toBe(true);
    await d.pod('shop', 'web', { app: 'other' });
    await eventually('web, no longer app=web, is dropped', () => !pings());
    expect(d.sb.kelp('get', 'counters')).toMatch(/POLICY_DENY/);
    await d.pod('shop', 'web', { app: 'web' });
    await eventually('web, app=web again, gets through', () => pings());
    await d.pod('shop', 'web', { app: 'other' });
    await eventually('dropped again', () => !pings());
    await d.deleteObject(policy);
    await eventually('the policy deleted: everything gets through', () => pings());
  });
});
