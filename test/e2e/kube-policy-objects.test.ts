// The policy kinds in Kubernetes mode: kelp's KubernetesSource (real client-node 1.4.0) against
// the project's test API server, objects and CRDs written with real kubectl. The CRDs are
// deploy/kubernetes's own; the test server stores what it is given without the schema, which is
// how an object kelp refuses reaches kelp here (a real server refuses most of them first).
// Covered: a cluster without the CRDs syncs at once; a CRD installed later is picked up; each
// KelpNetworkPolicy gets a Valid condition (True, or False naming the field), written once, never
// rewritten when it already says the same, with other conditions kept; a ClusterNetworkPolicy
// reaches the store; a CRD deleted takes its objects out of the store.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KubeClient } from '../../src/sources/kube/client';
import { KubernetesSource, resourcePath } from '../../src/sources/kubernetes';
import { kindInfo, supportedKinds } from '../../src/sources/objects';
import { ObjectStore } from '../../src/sources/store';
import { eventually } from '../support/e2e';
import { Obj, startKubeApiServer, TestKubeApiServer } from '../support/kube-apiserver';

const DEPLOY = path.resolve(__dirname, '../../deploy/kubernetes');
const KNP_CRD = path.join(DEPLOY, '10-crd-kelpnetworkpolicies.yaml');
const CNP_CRD = path.join(DEPLOY, '11-crd-clusternetworkpolicies.yaml');
const KNP_EXAMPLES = path.join(DEPLOY, 'examples/kelpnetworkpolicies.yaml');
const KNP = { apiVersion: 'policy.kelp.dev/v1alpha1', kind: 'KelpNetworkPolicy' };
const CNP = { apiVersion: 'policy.networking.k8s.io/v1alpha2', kind: 'ClusterNetworkPolicy' };
const ABSENT_RETRY_MS = 300;

let api: TestKubeApiServer;
let store: ObjectStore;
let source: KubernetesSource;
const logLines: Array<{ level: number; msg: string; kind?: string }> = [];

async function kubectl(...args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)('kubectl', ['--kubeconfig', api.kubeconfigPath, '--cache-dir', path.join(api.dir, 'kubectl-cache'), '--request-timeout=10s', ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, HOME: api.dir, KUBECONFIG: '' },
  });
  return stdout;
}

async function kubectlApply(obj: Obj): Promise<string> {
  const file = path.join(api.dir, `${obj.metadata.name}-${Date.now()}.json`);
  writeFileSync(file, JSON.stringify(obj));
  return kubectl('apply', '-f', file);
}

const knp = (namespace: string, name: string) => api.objects.get({ ...KNP, namespace, name });
const validOf = (o: Obj | undefined) => (o?.status?.conditions ?? []).find((c: Obj) => c.type === 'Valid');
/** Successful status writes so far, to one object's status. */
const statusPatches = (plural: string, name: string) => api.requests.filter((r) => r.method === 'PATCH' && r.path.endsWith(`/${plural}/${name}/status`) && r.status === 200).length;
const reflector = (kind: string) => source.status().find((s) => s.kind === kind)!;

beforeAll(async () => {
  api = await startKubeApiServer();
  store = new ObjectStore();
  const log = pino({ level: 'debug' }, { write: (line: string) => void logLines.push(JSON.parse(line)) });
  source = new KubernetesSource(store, { client: KubeClient.load(api.kubeconfigPath), log, absentRetryMs: ABSENT_RETRY_MS, statusJitterMs: 0, backoffMinMs: 50, backoffMaxMs: 500 });
});

afterAll(async () => {
  await source?.stop();
  await api?.stop();
});

describe('the policy kinds in Kubernetes mode', () => {
  it('each kind is read at the path of its apiVersion', () => {
    for (const kind of supportedKinds) {
      const apiVersion = kindInfo(kind).apiVersion;
      expect(resourcePath(kind)).toMatch(new RegExp(`^${apiVersion.includes('/') ? '/apis' : '/api'}/${apiVersion}/[a-z]+$`));
    }
    expect(resourcePath('KelpNetworkPolicy')).toBe('/apis/policy.kelp.dev/v1alpha1/kelpnetworkpolicies');
    expect(resourcePath('ClusterNetworkPolicy')).toBe('/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies');
  });

  it('without the policy CRDs the source syncs: both kinds empty and absent, said once, retried', async () => {
    await source.start();
    await Promise.race([source.synced(), new Promise((_, reject) => setTimeout(() => reject(new Error('not synced in 10 s')), 10_000))]);
    for (const kind of ['KelpNetworkPolicy', 'ClusterNetworkPolicy']) expect(reflector(kind)).toMatchObject({ synced: true, absent: true });
    expect(reflector('Pod')).toMatchObject({ synced: true });
    expect(reflector('Pod').absent).toBeFalsy();
    await eventually('three lists of each', () => reflector('KelpNetworkPolicy').lists >= 3 && reflector('ClusterNetworkPolicy').lists >= 3);
    const said = logLines.filter((l) => l.msg.includes('CustomResourceDefinition is not installed'));
    expect(said.map((l) => l.kind).sort()).toEqual(['ClusterNetworkPolicy', 'KelpNetworkPolicy']);
    expect(reflector('KelpNetworkPolicy').errors).toBe(0);
  });

  it('a KelpNetworkPolicy created with kubectl once its CRD is installed reaches the store and is marked Valid, once', async () => {
    await kubectl('apply', '-f', KNP_CRD);
    await kubectl('apply', '-f', KNP_EXAMPLES);
    const inStore = await eventually('db-ingress in the store', () => store.get('KelpNetworkPolicy', 'default', 'db-ingress'), 15_000);
    expect(inStore.spec.ingress.map((r) => [r.name, r.action])).toEqual([
      ['no-batch', 'Deny'],
      ['api', 'Accept'],
    ]);
    expect(reflector('KelpNetworkPolicy').absent).toBe(false);
    expect(logLines.some((l) => l.msg.includes('CustomResourceDefinition found') && l.kind === 'KelpNetworkPolicy')).toBe(true);
    const valid = await eventually('Valid=True', () => validOf(knp('default', 'db-ingress'))?.status === 'True' && validOf(knp('default', 'db-ingress')));
    expect(valid).toMatchObject({ type: 'Valid', status: 'True', reason: 'Valid', observedGeneration: knp('default', 'db-ingress')!.metadata.generation });
    expect(valid.lastTransitionTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    await eventually('the other example too', () => validOf(knp('default', 'no-metadata-server'))?.status === 'True');
    expect(await kubectl('get', 'knp', '-n', 'default', 'db-ingress', '--no-headers')).toMatch(/^db-ingress\s+True\s+/);
    // The write came back as a watch event: it is compared, not written again.
    await new Promise((r) => setTimeout(r, 1000));
    expect(statusPatches('kelpnetworkpolicies', 'db-ingress')).toBe(1);
    expect(source.statusWrites()).toEqual({ written: 2, failed: 0 });
  });

  it('a policy kelp refuses is kept out of the store and marked Valid=False with the field; fixed, it goes in and True', async () => {
    // A label key in matchLabels: no schema can check it, the API server stores it as it is.
    const bad = { ...KNP, metadata: { name: 'bad-key', namespace: 'default' }, spec: { subject: { podSelector: { matchLabels: { 'not a key!': 'x' } } }, ingress: [{ action: 'Deny', from: [{ namespaces: {} }] }] } };
    await kubectlApply(bad);
    const valid = await eventually('Valid=False', () => validOf(knp('default', 'bad-key')));
    expect(valid).toMatchObject({ status: 'False', reason: 'Invalid', observedGeneration: 1 });
    expect(valid.message).toMatch(/^spec\.subject\.podSelector\.matchLabels\["not a key!"\]: /);
    expect(store.get('KelpNetworkPolicy', 'default', 'bad-key')).toBeUndefined();
    expect(source.problems.get('KelpNetworkPolicy/default/bad-key')).toContain('spec.subject.podSelector.matchLabels["not a key!"]');

    await kubectlApply({ ...bad, spec: { ...bad.spec, subject: { podSelector: { matchLabels: { app: 'x' } } } } });
    await eventually('in the store', () => store.get('KelpNetworkPolicy', 'default', 'bad-key'));
    const fixed = await eventually('Valid=True', () => validOf(knp('default', 'bad-key'))?.status === 'True' && validOf(knp('default', 'bad-key')));
    expect(fixed).toMatchObject({ reason: 'Valid', observedGeneration: 2 });
    expect(fixed.lastTransitionTime >= valid.lastTransitionTime).toBe(true);
    expect(source.problems.has('KelpNetworkPolicy/default/bad-key')).toBe(false);
  });

  it('a good policy made bad keeps its last good version in the store; the condition names the field and the new generation; other conditions stay', async () => {
    const before = store.get('KelpNetworkPolicy', 'default', 'db-ingress')!;
    // Another writer's condition (the policy reconciler's Programmed), kept by kelp's writes.
    const cur = knp('default', 'db-ingress')!;
    api.objects.updateStatus({ ...cur, status: { ...cur.status, conditions: [...cur.status.conditions, { type: 'Programmed', status: 'True', reason: 'Programmed', message: 'enforced', lastTransitionTime: '2026-12-01T10:00:00Z' }] } });
    await kubectl('patch', 'knp', '-n', 'default', 'db-ingress', '--type=json', '-p', '[{"op":"replace","path":"/spec/ingress/0/action","value":"Pass"}]');
    const valid = await eventually('Valid=False', () => validOf(knp('default', 'db-ingress'))?.status === 'False' && validOf(knp('default', 'db-ingress')));
    expect(valid.message).toBe('spec.ingress[0].action: must be one of Accept, Deny, got "Pass"');
    expect(valid.observedGeneration).toBe(knp('default', 'db-ingress')!.metadata.generation);
    expect(valid.observedGeneration).toBeGreaterThan(before.metadata.generation!);
    expect(knp('default', 'db-ingress')!.status.conditions.map((c: Obj) => c.type)).toEqual(['Valid', 'Programmed']);
    expect(store.get('KelpNetworkPolicy', 'default', 'db-ingress')!.spec).toEqual(before.spec);
  });

  it('a second agent watching the same API writes nothing its peer already wrote', async () => {
    const other = new KubernetesSource(new ObjectStore(), { client: KubeClient.load(api.kubeconfigPath), log: pino({ level: 'silent' }), absentRetryMs: ABSENT_RETRY_MS, statusJitterMs: 0 });
    await other.start();
    try {
      await other.synced();
      await eventually('its store has the policies', () => other.problems.has('KelpNetworkPolicy/default/db-ingress'));
      await new Promise((r) => setTimeout(r, 500));
      expect(other.statusWrites()).toEqual({ written: 0, failed: 0 });
    } finally {
      await other.stop();
    }
  });

  it('a status write the server fails, or refuses as stale (409), is tried again', async () => {
    const before = source.statusWrites();
    api.faults.failNext(1, { code: 500, match: (r) => r.method === 'PATCH' && r.path.endsWith('/kelpnetworkpolicies/retried/status') });
    await kubectlApply({ ...KNP, metadata: { name: 'retried', namespace: 'default' }, spec: { subject: { podSelector: {} } } });
    await eventually('Valid=True after the retry', () => validOf(knp('default', 'retried'))?.status === 'True');
    // The server shows the condition before the writer has read its answer: wait for that too.
    await eventually('the retried write counted', () => source.statusWrites().written === before.written + 1);
    expect(source.statusWrites()).toEqual({ written: before.written + 1, failed: before.failed + 1 });
    expect(api.requests.filter((r) => r.method === 'PATCH' && r.path.endsWith('/retried/status')).map((r) => r.status)).toEqual([500, 200]);

    api.faults.failNext(1, { code: 409, match: (r) => r.method === 'PATCH' && r.path.endsWith('/kelpnetworkpolicies/retried/status') });
    await kubectl('label', 'knp', '-n', 'default', 'retried', 'x=1');
    await kubectl('patch', 'knp', '-n', 'default', 'retried', '--type=merge', '-p', '{"spec":{"subject":{"podSelector":{"matchLabels":{"app":"y"}}}}}');
    await eventually('Valid for generation 2', () => validOf(knp('default', 'retried'))?.observedGeneration === 2);
    // A conflict is no failure: it is how concurrent writers find out.
    await eventually('the write after the conflict counted', () => source.statusWrites().written === before.written + 2);
    expect(source.statusWrites()).toEqual({ written: before.written + 2, failed: before.failed + 1 });
    expect(api.requests.filter((r) => r.method === 'PATCH' && r.path.endsWith('/retried/status')).map((r) => r.status)).toEqual([500, 200, 409, 200]);
  });

  it('a ClusterNetworkPolicy reaches the store once its CRD is installed; no status is written on it', async () => {
    await kubectl('apply', '-f', CNP_CRD);
    await kubectl('apply', '-f', path.join(DEPLOY, 'examples/clusternetworkpolicies.yaml'));
    const cnp = await eventually('default-egress in the store', () => store.get('ClusterNetworkPolicy', undefined, 'default-egress'), 15_000);
    expect(cnp.spec).toMatchObject({ tier: 'Baseline', priority: 1000 });
    expect(cnp.spec.egress.map((r) => r.peers)).toContainEqual([{ networks: ['0.0.0.0/0'] }]);
    // One of a newer API revision: fails closed rather than being dropped.
    await kubectlApply({ ...CNP, metadata: { name: 'to-nodes' }, spec: { tier: 'Admin', priority: 5, subject: { namespaces: {} }, egress: [{ action: 'Deny', to: [{ nodes: {} }] }] } });
    const newer = await eventually('to-nodes in the store', () => store.get('ClusterNetworkPolicy', undefined, 'to-nodes'));
    expect(newer.spec.egress[0].peers).toEqual([{ unknown: true }]);
    expect(api.requests.filter((r) => r.method === 'PATCH' && r.path.includes('/clusternetworkpolicies/'))).toEqual([]);
    expect(api.objects.get({ ...CNP, name: 'default-egress' })!.status).toBeUndefined();
  });

  it('a CRD deleted takes its objects (and their problems) out of the store; the kind is absent again', async () => {
    await kubectl('delete', 'crd', 'clusternetworkpolicies.policy.networking.k8s.io');
    await eventually('no ClusterNetworkPolicy in the store', () => store.list('ClusterNetworkPolicy').length === 0, 15_000);
    await eventually('absent again', () => reflector('ClusterNetworkPolicy').absent === true, 15_000);
    expect(store.list('KelpNetworkPolicy').length).toBeGreaterThan(0);
    expect(source.problems.has('KelpNetworkPolicy/default/db-ingress')).toBe(true);
    await kubectl('delete', 'crd', 'kelpnetworkpolicies.policy.kelp.dev');
    await eventually('KelpNetworkPolicy absent', () => reflector('KelpNetworkPolicy').absent === true, 15_000);
    expect(store.list('KelpNetworkPolicy')).toEqual([]);
    expect([...source.problems.keys()].filter((k) => k.startsWith('KelpNetworkPolicy/'))).toEqual([]);
  });
});
