// The test Kubernetes API server (test/support/kube-apiserver) driven by the clients kelp's
// Kubernetes mode is tested with: the real kubectl (/usr/bin/kubectl, 1.32) and the real
// @kubernetes/client-node 1.4.0. Each assertion is a behaviour a client depends on; where
// client-node 1.4.0 behaves in a way the agent must work around, the test pins it down.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ApiException,
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  KubeConfig,
  ListWatch,
  makeInformer,
  NetworkingV1Api,
  PatchStrategy,
  setHeaderOptions,
  V1Pod,
  Watch,
} from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { startKubeApiServer, TestKubeApiServer } from '../support/kube-apiserver';

const REPO = path.resolve(__dirname, '../..');
const DEPLOY = path.join(REPO, 'deploy/kubernetes');
const KELP_CRD = path.join(DEPLOY, '10-crd-kelpnetworkpolicies.yaml');
const KELP_POLICIES = path.join(DEPLOY, 'examples/kelpnetworkpolicies.yaml');
const KUBECTL_TIMEOUT_MS = 20_000;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** kubectl against `api`, never touching ~/.kube: HOME and the discovery cache live in the server's dir. */
function kubectl(api: TestKubeApiServer, args: string[], opts: { input?: string; kubeconfig?: string } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      'kubectl',
      ['--kubeconfig', opts.kubeconfig ?? api.kubeconfigPath, '--cache-dir', path.join(api.dir, 'kubectl-cache'), ...args],
      { env: { ...process.env, HOME: api.dir, KUBECONFIG: '' }, stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), KUBECTL_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

async function kubectlOk(api: TestKubeApiServer, args: string[], input?: string): Promise<string> {
  const r = await kubectl(api, args, { input });
  if (r.code !== 0 || r.stderr !== '') {
    throw new Error(`kubectl ${args.join(' ')}: exit ${r.code}\n${r.stderr}${r.stdout}`);
  }
  return r.stdout;
}

/** Starts `kubectl <args>` (a watch), collects stdout lines until `enough` says so, then kills it. */
function kubectlWatch(
  api: TestKubeApiServer,
  args: string[],
  enough: (lines: string[]) => boolean,
): { lines: Promise<string[]>; started: Promise<void> } {
  const child = spawn(
    'kubectl',
    ['--kubeconfig', api.kubeconfigPath, '--cache-dir', path.join(api.dir, 'kubectl-cache'), ...args],
    { env: { ...process.env, HOME: api.dir, KUBECONFIG: '' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const lines: string[] = [];
  let stderr = '';
  let started!: () => void;
  const startedP = new Promise<void>((r) => (started = r));
  const done = new Promise<string[]>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`kubectl ${args.join(' ')}: timed out with ${JSON.stringify(lines)}\n${stderr}`));
    }, KUBECTL_TIMEOUT_MS);
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      const parts = buf.split('\n');
      buf = parts.pop()!;
      lines.push(...parts);
      if (lines.length) started();
      if (enough(lines)) {
        clearTimeout(timer);
        child.kill('SIGKILL');
        resolve(lines);
      }
    });
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
  });
  return { lines: done, started: startedP };
}

/** Stops an informer until the server has no watch left on `path` (see the stop() race below). */
async function stopInformer(api: TestKubeApiServer, informer: { stop(): Promise<void> }, path: string): Promise<void> {
  for (const until = Date.now() + 5000; Date.now() < until; ) {
    await informer.stop();
    await sleep(50);
    if (api.openWatches(path) === 0) return;
  }
  throw new Error(`an informer's watch on ${path} outlived stop()`);
}

async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function clientFor(api: TestKubeApiServer, kubeconfig = api.kubeconfigPath): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  return kc;
}

function pod(name: string, namespace: string, labels: Record<string, string>, nodeName?: string): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels },
    spec: { ...(nodeName ? { nodeName } : {}), containers: [{ name: 'c', image: 'busybox' }] },
  };
}

async function apiError(p: Promise<unknown>): Promise<{ code: number; status: Record<string, any> }> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(ApiException);
    const ex = e as ApiException<string>;
    return { code: ex.code, status: ex.body ? JSON.parse(ex.body) : undefined };
  }
  throw new Error('the call succeeded');
}

const CNP_CRD = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: 'clusternetworkpolicies.policy.networking.k8s.io' },
  spec: {
    group: 'policy.networking.k8s.io',
    scope: 'Cluster',
    names: { kind: 'ClusterNetworkPolicy', plural: 'clusternetworkpolicies', singular: 'clusternetworkpolicy', shortNames: ['cnp'] },
    versions: [
      {
        name: 'v1alpha2',
        served: true,
        storage: true,
        subresources: { status: {} },
        schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
      },
    ],
  },
};

describe('kube-apiserver with kubectl', () => {
  let api: TestKubeApiServer;
  beforeAll(async () => {
    api = await startKubeApiServer();
  });
  afterAll(async () => {
    await api?.stop();
  });

  it('serves aggregated discovery, and kubectl reads it without a warning', async () => {
    const out = await kubectlOk(api, ['api-resources', '--no-headers']);
    const rows = out.trim().split('\n').map((l) => l.split(/\s+/));
    const names = rows.map((r) => r[0]);
    expect(names).toEqual(
      expect.arrayContaining(['namespaces', 'nodes', 'pods', 'services', 'endpointslices', 'networkpolicies', 'customresourcedefinitions']),
    );
    expect(rows.find((r) => r[0] === 'pods')).toEqual(['pods', 'po', 'v1', 'true', 'Pod']);
    const discovery = api.requests.filter((r) => r.path === '/api' || r.path === '/apis');
    expect(discovery.length).toBeGreaterThan(0);
    // Aggregated discovery answers everything at once: kubectl asked for no group-version document.
    expect(api.requests.some((r) => r.path === '/api/v1' || r.path.startsWith('/apis/networking'))).toBe(false);
    expect(await kubectlOk(api, ['version', '-o', 'json'])).toContain('"gitVersion": "v1.32.0"');
  });

  it('falls back to legacy discovery over plain HTTP when aggregated discovery is off', async () => {
    const legacy = await startKubeApiServer({ tls: false, aggregatedDiscovery: false });
    try {
      const out = await kubectlOk(legacy, ['api-resources', '--no-headers', '-o', 'name']);
      expect(out.split('\n')).toEqual(expect.arrayContaining(['pods', 'endpointslices.discovery.k8s.io']));
      expect(legacy.requests.some((r) => r.path === '/api/v1' && r.status === 200)).toBe(true);
      expect(legacy.requests.some((r) => r.path === '/apis/discovery.k8s.io/v1' && r.status === 200)).toBe(true);
    } finally {
      await legacy.stop();
    }
  });

  it('answers 401 to kubectl with a wrong token', async () => {
    // (With no credentials at all kubectl prompts for a username before any request.)
    const wrong = api.writeKubeconfig(path.join(api.dir, 'wrong.kubeconfig'), { token: 'not-the-token' });
    const r = await kubectl(api, ['get', 'ns'], { kubeconfig: wrong });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('error: You must be logged in to the server (Unauthorized)');
    expect(api.requests.at(-1)).toMatchObject({ status: 401 });
  });

  it('applies, labels, annotates, patches and deletes a namespace', async () => {
    const ns = JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'kc-ns', labels: { team: 'a' } } });
    expect(await kubectlOk(api, ['apply', '-f', '-'], ns)).toBe('namespace/kc-ns created\n');
    expect(await kubectlOk(api, ['apply', '-f', '-'], ns)).toBe('namespace/kc-ns unchanged\n');
    expect(await kubectlOk(api, ['label', 'ns', 'kc-ns', 'env=test'])).toBe('namespace/kc-ns labeled\n');
    expect(await kubectlOk(api, ['annotate', 'ns', 'kc-ns', 'note=x'])).toBe('namespace/kc-ns annotated\n');
    await kubectlOk(api, ['patch', 'ns', 'kc-ns', '--type=merge', '-p', '{"metadata":{"labels":{"team":null}}}']);
    const got = JSON.parse(await kubectlOk(api, ['get', 'ns', 'kc-ns', '-o', 'json']));
    expect(got.metadata.labels).toEqual({ env: 'test', 'kubernetes.io/metadata.name': 'kc-ns' });
    expect(got.metadata.annotations.note).toBe('x');
    expect(got.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(got.status.phase).toBe('Active');
    const table = await kubectlOk(api, ['get', 'ns', 'kc-ns']);
    expect(table).toMatch(/^NAME\s+STATUS\s+AGE\nkc-ns\s+Active\s+\d+s\n$/);
    expect(await kubectlOk(api, ['delete', 'ns', 'kc-ns'])).toBe('namespace "kc-ns" deleted\n');
    const r = await kubectl(api, ['get', 'ns', 'kc-ns']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('Error from server (NotFound): namespaces "kc-ns" not found\n');
  });

  it('serves pods with label and field selectors, strategic merge patches and server-side printing', async () => {
    await kubectlOk(api, ['create', 'namespace', 'kc-pods']);
    const pods = [pod('web-1', 'kc-pods', { app: 'web' }, 'n1'), pod('web-2', 'kc-pods', { app: 'web' }, 'n2'), pod('db-1', 'kc-pods', { app: 'db' }, 'n1')];
    // A `kind: List` would need kubectl's client-side validation (OpenAPI v2, not served): documents instead.
    expect(await kubectlOk(api, ['apply', '-f', '-'], pods.map((p) => stringify(p)).join('---\n'))).toBe(
      'pod/web-1 created\npod/web-2 created\npod/db-1 created\n',
    );
    const names = (args: string[]) => kubectlOk(api, ['get', 'pods', '-n', 'kc-pods', '-o', 'name', ...args]);
    expect(await names(['--field-selector', 'spec.nodeName=n1', '-l', 'app=web'])).toBe('pod/web-1\n');
    expect(await names(['--field-selector', 'spec.nodeName!=n1'])).toBe('pod/web-2\n');
    expect(await names(['-l', 'app in (db,cache)'])).toBe('pod/db-1\n');
    expect(await names(['-l', 'app notin (db),app'])).toBe('pod/web-1\npod/web-2\n');
    expect(await names(['-l', '!tier'])).toBe('pod/db-1\npod/web-1\npod/web-2\n');
    const bad = await kubectl(api, ['get', 'pods', '-n', 'kc-pods', '--field-selector', 'spec.bogus=x']);
    expect(bad.stderr).toContain('field label not supported: spec.bogus');

    // kubectl label/annotate/patch send strategic merge patches for built-in kinds.
    await kubectlOk(api, ['label', 'pod', '-n', 'kc-pods', 'web-1', 'tier=front']);
    await kubectlOk(api, [
      'patch', 'pod', '-n', 'kc-pods', 'web-1', '-p',
      '{"spec":{"containers":[{"name":"c","image":"busybox:2"},{"name":"side","image":"pause"}]}}',
    ]);
    await kubectlOk(api, ['patch', 'pod', '-n', 'kc-pods', 'web-1', '--type=json', '-p', '[{"op":"add","path":"/metadata/labels/j","value":"1"}]']);
    const web1 = JSON.parse(await kubectlOk(api, ['get', 'pod', '-n', 'kc-pods', 'web-1', '-o', 'json']));
    expect(web1.metadata.labels).toEqual({ app: 'web', tier: 'front', j: '1' });
    // Containers merge by name (the patchMergeKey): `c` keeps its defaulted fields, `side` is added.
    expect(web1.spec.containers.map((c: any) => [c.name, c.image])).toEqual([['c', 'busybox:2'], ['side', 'pause']]);
    expect(web1.status.phase).toBe('Pending');
    expect(web1.metadata.generation).toBe(2);

    // Status only through /status: conditions merge by type.
    const status = (patch: object) =>
      kubectlOk(api, ['patch', 'pod', '-n', 'kc-pods', 'web-1', '--subresource=status', '-p', JSON.stringify({ status: patch })]);
    await status({ phase: 'Running', podIP: '10.1.0.9', conditions: [{ type: 'Ready', status: 'True' }] });
    await status({ conditions: [{ type: 'Initialized', status: 'True' }] });
    await kubectlOk(api, ['patch', 'pod', '-n', 'kc-pods', 'web-1', '--type=merge', '-p', '{"status":{"podIP":"10.9.9.9"}}']);
    const st = JSON.parse(await kubectlOk(api, ['get', 'pod', '-n', 'kc-pods', 'web-1', '-o', 'jsonpath={.status}']));
    expect(st).toEqual({ phase: 'Running', podIP: '10.1.0.9', conditions: [{ type: 'Ready', status: 'True' }, { type: 'Initialized', status: 'True' }] });
    expect(await names(['--field-selector', 'status.podIP=10.1.0.9'])).toBe('pod/web-1\n');

    const wide = await kubectlOk(api, ['get', 'pods', '-n', 'kc-pods', '-o', 'wide', '--field-selector', 'metadata.name=web-1']);
    expect(wide.split('\n')[0].split(/\s{2,}/)).toEqual(['NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE', 'IP', 'NODE', 'NOMINATED NODE', 'READINESS GATES']);
    expect(wide.split('\n')[1]).toMatch(/^web-1\s+0\/2\s+Running\s+0\s+\d+s\s+10\.1\.0\.9\s+n1\s/);

    expect(await kubectlOk(api, ['delete', 'pod', '-n', 'kc-pods', 'db-1'])).toBe('pod "db-1" deleted\n');
    expect(await names([])).toBe('pod/web-1\npod/web-2\n');
    // Deleting the namespace deletes what is in it.
    await kubectlOk(api, ['delete', 'ns', 'kc-pods']);
    expect(api.objects.list('v1', 'Pod', 'kc-pods')).toEqual([]);
  });

  it('streams `kubectl get -w` until killed', async () => {
    await kubectlOk(api, ['create', 'namespace', 'kc-watch']);
    api.objects.create(pod('w-1', 'kc-watch', { app: 'w' }));
    const watch = kubectlWatch(api, ['get', 'pods', '-n', 'kc-watch', '-w', '--output-watch-events'], (l) => l.some((x) => x.startsWith('DELETED')));
    await watch.started;
    await waitFor('kubectl watch', () => api.openWatches() > 0);
    await kubectlOk(api, ['label', 'pod', '-n', 'kc-watch', 'w-1', 'seen=yes']);
    await kubectlOk(api, ['delete', 'pod', '-n', 'kc-watch', 'w-1']);
    const lines = await watch.lines;
    expect(lines[0]).toMatch(/^EVENT\s+NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE$/);
    expect(lines.slice(1).map((l) => l.split(/\s+/).slice(0, 2))).toEqual([
      ['ADDED', 'w-1'],
      ['MODIFIED', 'w-1'],
      ['DELETED', 'w-1'],
    ]);
    await waitFor('the watch to close after kubectl is killed', () => api.openWatches() === 0);
  });

  it('allocates a service address and merges service ports by port on apply', async () => {
    const svc = (ports: object[]) =>
      JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'default' }, spec: { selector: { app: 'web' }, ports } });
    await kubectlOk(api, ['apply', '-f', '-'], svc([{ name: 'http', port: 80, targetPort: 8080 }]));
    const first = JSON.parse(await kubectlOk(api, ['get', 'svc', 'web', '-o', 'json']));
    expect(first.spec.clusterIP).toMatch(/^10\.(9[6-9]|1[01]\d)\.\d+\.\d+$/);
    expect(first.spec.ports).toEqual([{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }]);
    await kubectlOk(api, ['apply', '-f', '-'], svc([{ name: 'http', port: 80, targetPort: 8080 }, { name: 'dns', port: 53, protocol: 'UDP' }]));
    const second = JSON.parse(await kubectlOk(api, ['get', 'svc', 'web', '-o', 'json']));
    expect(second.spec.clusterIP).toBe(first.spec.clusterIP);
    expect(second.spec.ports.map((p: any) => `${p.name}:${p.port}/${p.protocol}->${p.targetPort}`)).toEqual(['http:80/TCP->8080', 'dns:53/UDP->53']);
    expect(await kubectlOk(api, ['get', 'svc', 'web', '--no-headers'])).toMatch(
      new RegExp(`^web\\s+ClusterIP\\s+${first.spec.clusterIP.replace(/\./g, '\\.')}\\s+<none>\\s+80/TCP,53/UDP\\s+\\d+s\\n$`),
    );
    await kubectlOk(api, ['delete', 'svc', 'web']);
  });

  it("applies and deletes kelp's deploy/kubernetes manifests; a deleted namespace terminates before it goes", async () => {
    const applied = await kubectlOk(api, ['apply', '-f', DEPLOY]);
    expect(applied).toMatch(/^namespace\/kelp-system created\n/);
    expect(applied).toContain('daemonset.apps/kelp-agent created');
    // `kubectl delete -f dir/` deletes the namespace first, then each object in it by name: they
    // must still be there, as in a real cluster where the namespace is Terminating meanwhile.
    const deleted = await kubectlOk(api, ['delete', '-f', DEPLOY]);
    expect(deleted.trim().split('\n').length).toBe(applied.trim().split('\n').length);
    expect(await kubectlOk(api, ['get', 'ns', '-o', 'name'])).not.toContain('kelp-system');

    // Generators send protobuf; new content in a Terminating namespace is refused.
    await kubectlOk(api, ['create', 'namespace', 'kc-term']);
    await kubectlOk(api, ['create', 'configmap', 'cm', '-n', 'kc-term', '--from-literal=a=b']);
    expect(api.objects.get({ apiVersion: 'v1', kind: 'ConfigMap', namespace: 'kc-term', name: 'cm' })?.data).toEqual({ a: 'b' });
    await kubectlOk(api, ['delete', 'namespace', 'kc-term', '--wait=false']);
    const ns = JSON.parse(await kubectlOk(api, ['get', 'ns', 'kc-term', '-o', 'json']));
    expect(ns.status.phase).toBe('Terminating');
    expect(ns.metadata.deletionTimestamp).toBeTruthy();
    const refused = await kubectl(api, ['run', 'late', '-n', 'kc-term', '--image=busybox']);
    expect(refused.stderr).toBe(
      'Error from server (Forbidden): pods "late" is forbidden: unable to create new content in namespace kc-term because it is being terminated\n',
    );
    await kubectlOk(api, ['wait', '--for=delete', 'namespace/kc-term', '--timeout=10s']);
    expect(api.objects.list('v1', 'ConfigMap', 'kc-term')).toEqual([]);
  });

  it('serves EndpointSlices, NetworkPolicies and nodes with the defaults clients read', async () => {
    const kc = clientFor(api);
    await kc.makeApiClient(DiscoveryV1Api).createNamespacedEndpointSlice({
      namespace: 'default',
      body: {
        metadata: { name: 'web-x1', labels: { 'kubernetes.io/service-name': 'web' } },
        addressType: 'IPv4',
        endpoints: [{ addresses: ['10.1.0.5'], conditions: { ready: true }, nodeName: 'n1' }],
        ports: [{ name: 'http', port: 8080 }],
      },
    });
    const slices = await kc
      .makeApiClient(DiscoveryV1Api)
      .listNamespacedEndpointSlice({ namespace: 'default', labelSelector: 'kubernetes.io/service-name=web' });
    expect(slices.items.map((s) => [s.metadata?.name, s.ports?.[0].protocol])).toEqual([['web-x1', 'TCP']]);
    expect(await kubectlOk(api, ['get', 'endpointslices'])).toMatch(/^NAME\s+ADDRESSTYPE\s+PORTS\s+ENDPOINTS\s+AGE\nweb-x1\s+IPv4\s+8080\s+10\.1\.0\.5\s+\d+s\n$/);

    const netpol = {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'egress-dns', namespace: 'default' },
      spec: { podSelector: { matchLabels: { app: 'web' } }, egress: [{ ports: [{ port: 53 }] }] },
    };
    expect(await kubectlOk(api, ['apply', '-f', '-'], JSON.stringify(netpol))).toBe('networkpolicy.networking.k8s.io/egress-dns created\n');
    const np = await kc.makeApiClient(NetworkingV1Api).readNamespacedNetworkPolicy({ name: 'egress-dns', namespace: 'default' });
    expect(np.spec?.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(np.spec?.egress?.[0].ports).toEqual([{ port: 53, protocol: 'TCP' }]);
    expect(await kubectlOk(api, ['get', 'netpol', '--no-headers'])).toMatch(/^egress-dns\s+app=web\s+\d+s\n$/);

    // Nodes keep the status they are created with (kubelet registers that way).
    const node = await kc.makeApiClient(CoreV1Api).createNode({
      body: {
        metadata: { name: 'n1', labels: { 'node-role.kubernetes.io/control-plane': '' } },
        spec: { podCIDR: '10.1.0.0/24', podCIDRs: ['10.1.0.0/24'] },
        status: { conditions: [{ type: 'Ready', status: 'True' }], addresses: [{ type: 'InternalIP', address: '192.168.0.10' }] },
      },
    });
    expect(node.status?.addresses).toEqual([{ type: 'InternalIP', address: '192.168.0.10' }]);
    expect(await kubectlOk(api, ['get', 'nodes', '-o', 'wide', '--no-headers'])).toMatch(/^n1\s+Ready\s+control-plane\s+\d+s\s+192\.168\.0\.10\n$/);
  });

  it("registers kelp's CRD with kubectl and serves its custom resources", async () => {
    expect(await kubectlOk(api, ['apply', '-f', KELP_CRD])).toBe('customresourcedefinition.apiextensions.k8s.io/kelpnetworkpolicies.policy.kelp.dev created\n');
    await kubectlOk(api, ['wait', '--for=condition=Established', 'crd/kelpnetworkpolicies.policy.kelp.dev', '--timeout=10s']);
    expect(await kubectlOk(api, ['apply', '-f', KELP_POLICIES])).toMatch(/^(kelpnetworkpolicy\.policy\.kelp\.dev\/\S+ created\n)+$/);
    const list = JSON.parse(await kubectlOk(api, ['get', 'knp', '-A', '-o', 'json']));
    expect(list.items.length).toBeGreaterThan(0);
    expect(list.items[0].apiVersion).toBe('policy.kelp.dev/v1alpha1');
    const [first] = list.items;
    // Custom resources take merge patches: kubectl label sends one, not a strategic one.
    await kubectlOk(api, ['label', 'knp', '-n', first.metadata.namespace, first.metadata.name, 'checked=yes']);
    const patched = api.requests.filter((r) => r.method === 'PATCH' && r.path.includes('/kelpnetworkpolicies/'));
    expect(patched.at(-1)?.status).toBe(200);
    // The CRD's printer columns, with the status kelp will write.
    const cr = api.objects.get({ apiVersion: 'policy.kelp.dev/v1alpha1', kind: 'KelpNetworkPolicy', namespace: first.metadata.namespace, name: first.metadata.name })!;
    api.objects.updateStatus({
      ...cr,
      status: {
        programmedRevision: 7,
        conditions: [
          { type: 'Valid', status: 'True' },
          { type: 'Programmed', status: 'False' },
        ],
      },
    });
    const printed = await kubectlOk(api, ['get', 'knp', '-n', first.metadata.namespace, first.metadata.name]);
    expect(printed).toMatch(new RegExp(`^NAME\\s+VALID\\s+PROGRAMMED\\s+REVISION\\s+AGE\\n${first.metadata.name}\\s+True\\s+False\\s+7\\s+\\d+s\\n$`));

    // A cluster-scoped CRD, as upstream's ClusterNetworkPolicy.
    await kubectlOk(api, ['apply', '-f', '-'], JSON.stringify(CNP_CRD));
    const cnp = { apiVersion: 'policy.networking.k8s.io/v1alpha2', kind: 'ClusterNetworkPolicy', metadata: { name: 'deny-all' }, spec: { tier: 'Admin', priority: 10 } };
    expect(await kubectlOk(api, ['apply', '-f', '-'], JSON.stringify(cnp))).toBe('clusternetworkpolicy.policy.networking.k8s.io/deny-all created\n');
    expect(await kubectlOk(api, ['get', 'cnp', '-o', 'name'])).toBe('clusternetworkpolicy.policy.networking.k8s.io/deny-all\n');

    // Deleting a CRD deletes its objects and its API.
    await kubectlOk(api, ['delete', 'crd', 'kelpnetworkpolicies.policy.kelp.dev']);
    expect(api.objects.resourceVersion()).toBeTruthy();
    expect(() => api.objects.list('policy.kelp.dev/v1alpha1', 'KelpNetworkPolicy')).toThrow(/no served type/);
    const gone = await kubectl(api, ['get', '--raw', '/apis/policy.kelp.dev/v1alpha1/kelpnetworkpolicies']);
    expect(gone.stderr).toContain('NotFound');
  });
});

describe('kube-apiserver with client-node 1.4.0', () => {
  let api: TestKubeApiServer;
  let kc: KubeConfig;
  let core: CoreV1Api;
  beforeAll(async () => {
    api = await startKubeApiServer({ bookmarkIntervalMs: 200 });
    kc = clientFor(api);
    core = kc.makeApiClient(CoreV1Api);
    for (const name of ['cn-crud', 'cn-informer', 'cn-410', 'cn-node', 'cn-watch', 'cn-down']) {
      await core.createNamespace({ body: { metadata: { name } } });
    }
  });
  afterAll(async () => {
    await api?.stop();
  });

  it('creates, reads, updates, patches and deletes with the Kubernetes error statuses', async () => {
    const ns = 'cn-crud';
    const created = await core.createNamespacedPod({ namespace: ns, body: pod('p', ns, { app: 'a' }, 'n1') });
    expect(created.metadata?.resourceVersion).toMatch(/^\d+$/);
    expect(created.metadata?.generation).toBe(1);

    const exists = await apiError(core.createNamespacedPod({ namespace: ns, body: pod('p', ns, {}) }));
    expect(exists.code).toBe(409);
    expect(exists.status).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'AlreadyExists', message: 'pods "p" already exists', details: { name: 'p', kind: 'pods' } });

    // An update carrying a stale resourceVersion is refused.
    const fresh = await core.readNamespacedPod({ name: 'p', namespace: ns });
    await core.replaceNamespacedPod({ name: 'p', namespace: ns, body: { ...fresh, metadata: { ...fresh.metadata, labels: { app: 'b' } } } });
    const stale = await apiError(core.replaceNamespacedPod({ name: 'p', namespace: ns, body: fresh }));
    expect(stale.code).toBe(409);
    expect(stale.status.reason).toBe('Conflict');
    expect(stale.status.message).toContain('the object has been modified');

    // client-node's patch calls send JSON patch unless told otherwise.
    const jp = await core.patchNamespacedPod({ name: 'p', namespace: ns, body: [{ op: 'add', path: '/metadata/labels/x', value: '1' }] });
    expect(jp.metadata?.labels).toEqual({ app: 'b', x: '1' });
    const mp = await core.patchNamespacedPod(
      { name: 'p', namespace: ns, body: { metadata: { labels: { x: null, y: '2' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(mp.metadata?.labels).toEqual({ app: 'b', y: '2' });
    expect(mp.metadata?.generation).toBe(1);
    const noop = await core.patchNamespacedPod(
      { name: 'p', namespace: ns, body: { metadata: { labels: { y: '2' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    expect(noop.metadata?.resourceVersion).toBe(mp.metadata?.resourceVersion);

    // Status only through /status; spec changes bump generation.
    const withStatus = await core.replaceNamespacedPod({
      name: 'p',
      namespace: ns,
      body: { ...mp, spec: { ...mp.spec!, activeDeadlineSeconds: 5 }, status: { phase: 'Running', podIP: '10.0.0.9' } },
    });
    expect(withStatus.status?.phase).toBe('Pending');
    expect(withStatus.metadata?.generation).toBe(2);
    const st = await core.replaceNamespacedPodStatus({ name: 'p', namespace: ns, body: { ...withStatus, status: { phase: 'Running', podIP: '10.0.0.9' } } });
    expect(st.status).toMatchObject({ phase: 'Running', podIP: '10.0.0.9' });
    expect(st.metadata?.generation).toBe(2);
    const list = await core.listNamespacedPod({ namespace: ns, fieldSelector: 'status.podIP=10.0.0.9' });
    expect(list.items.map((p) => p.metadata?.name)).toEqual(['p']);

    await core.deleteNamespacedPod({ name: 'p', namespace: ns });
    const missing = await apiError(core.readNamespacedPod({ name: 'p', namespace: ns }));
    expect(missing).toEqual({
      code: 404,
      status: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'pods "p" not found', reason: 'NotFound', details: { name: 'p', kind: 'pods' }, code: 404 },
    });
    const noNs = await apiError(core.createNamespacedPod({ namespace: 'nope', body: pod('q', 'nope', {}) }));
    expect(noNs.status.message).toBe('namespaces "nope" not found');
  });

  it('pages a list with limit and continue', async () => {
    for (const n of ['a', 'b', 'c']) api.objects.create(pod(n, 'cn-crud', {}));
    const first = await core.listNamespacedPod({ namespace: 'cn-crud', limit: 2 });
    expect(first.items.map((p) => p.metadata?.name)).toEqual(['a', 'b']);
    expect(first.metadata?.remainingItemCount).toBe(1);
    const second = await core.listNamespacedPod({ namespace: 'cn-crud', limit: 2, _continue: first.metadata?._continue });
    expect(second.items.map((p) => p.metadata?.name)).toEqual(['c']);
    expect(second.metadata?._continue).toBeUndefined();
    expect(second.metadata?.resourceVersion).toBe(first.metadata?.resourceVersion);
  });

  it('answers 401 without the token (client-node gives no body)', async () => {
    const anon = clientFor(api, api.writeKubeconfig(path.join(api.dir, 'anon.kubeconfig'), { token: null })).makeApiClient(CoreV1Api);
    const e = await apiError(anon.listNamespace());
    expect(e).toEqual({ code: 401, status: undefined });
  });

  it('serves custom resources through CustomObjectsApi', async () => {
    await kc.makeApiClient(CoreV1Api); // same credentials
    const crd = JSON.parse(JSON.stringify(CNP_CRD));
    const res = await fetchJson(api, 'POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd);
    expect(res.status).toBe(201);
    expect(res.body.status.conditions.find((c: any) => c.type === 'Established').status).toBe('True');
    const custom = kc.makeApiClient(CustomObjectsApi);
    const body = { apiVersion: 'policy.networking.k8s.io/v1alpha2', kind: 'ClusterNetworkPolicy', metadata: { name: 'c1' }, spec: { priority: 1 }, status: { x: 1 } };
    const created = await custom.createClusterCustomObject({ group: 'policy.networking.k8s.io', version: 'v1alpha2', plural: 'clusternetworkpolicies', body });
    expect(created.status).toBeUndefined();
    const list = await custom.listClusterCustomObject({ group: 'policy.networking.k8s.io', version: 'v1alpha2', plural: 'clusternetworkpolicies' });
    expect(list.items.map((o: any) => [o.kind, o.metadata.name])).toEqual([['ClusterNetworkPolicy', 'c1']]);
    // Strategic merge patch does not apply to custom resources.
    const smp = await fetchJson(api, 'PATCH', '/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies/c1', { spec: { priority: 2 } }, 'application/strategic-merge-patch+json');
    expect(smp.status).toBe(415);
  });

  it("a deleted CRD's watches get its objects' DELETED events and end; a new watch gets 404", async () => {
    const plural = '/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies';
    const list = await fetchJson(api, 'GET', plural);
    expect(list.body.items.map((o: any) => o.metadata.name)).toEqual(['c1']);
    const events: string[] = [];
    let ended: unknown = 'open';
    await new Watch(kc).watch(plural, { resourceVersion: list.body.metadata.resourceVersion }, (type, o) => events.push(`${type} ${o.metadata.name}`), (err) => (ended = err));
    await waitFor('the watch open', () => api.openWatches(plural) === 1);
    expect((await fetchJson(api, 'DELETE', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${CNP_CRD.metadata.name}`)).status).toBe(200);
    await waitFor('the watch ended', () => ended !== 'open');
    expect(ended).toBe(null);
    expect(events).toEqual(['DELETED c1']);
    let again: unknown = 'open';
    await new Watch(kc).watch(plural, {}, () => undefined, (err) => (again = err));
    await waitFor('the second watch answered', () => again !== 'open');
    expect((again as { statusCode?: number }).statusCode).toBe(404);
  });

  it('makeInformer sees ADDED, MODIFIED and DELETED', async () => {
    const ns = 'cn-informer';
    const seen: string[] = [];
    const informer = makeInformer(kc, `/api/v1/namespaces/${ns}/pods`, () => core.listNamespacedPod({ namespace: ns }));
    informer.on('add', (p) => seen.push(`add ${p.metadata?.name}`));
    informer.on('update', (p) => seen.push(`update ${p.metadata?.name} ${p.metadata?.labels?.v}`));
    informer.on('delete', (p) => seen.push(`delete ${p.metadata?.name}`));
    api.objects.create(pod('before', ns, {}));
    await informer.start();
    try {
      await waitFor('initial list', () => seen.includes('add before'));
      await core.createNamespacedPod({ namespace: ns, body: pod('after', ns, {}) });
      await core.patchNamespacedPod({ name: 'after', namespace: ns, body: [{ op: 'add', path: '/metadata/labels/v', value: '2' }] });
      await core.deleteNamespacedPod({ name: 'before', namespace: ns });
      await waitFor('events', () => seen.length >= 4);
      expect(seen).toEqual(['add before', 'add after', 'update after 2', 'delete before']);
    } finally {
      await stopInformer(api, informer, `/api/v1/namespaces/${ns}/pods`);
    }
  });

  it('ListWatch with field and label selectors: pods of one node, DELETED when a pod stops matching', async () => {
    const ns = 'cn-node';
    const seen: string[] = [];
    const path = `/api/v1/namespaces/${ns}/pods`;
    const lw = new ListWatch<V1Pod>(
      path,
      new Watch(kc),
      () => core.listNamespacedPod({ namespace: ns, fieldSelector: 'spec.nodeName=n1', labelSelector: 'app=web' }),
      false,
      'app=web',
      'spec.nodeName=n1',
    );
    lw.on('add', (p) => seen.push(`add ${p.metadata?.name}`));
    lw.on('delete', (p) => seen.push(`delete ${p.metadata?.name}`));
    api.objects.create(pod('on-n1', ns, { app: 'web' }, 'n1'));
    api.objects.create(pod('on-n2', ns, { app: 'web' }, 'n2'));
    await lw.start();
    try {
      await waitFor('list', () => seen.length === 1);
      api.objects.create(pod('late-n1', ns, { app: 'web' }, 'n1'));
      api.objects.create(pod('late-n2', ns, { app: 'web' }, 'n2'));
      api.objects.patch({ apiVersion: 'v1', kind: 'Pod', namespace: ns, name: 'on-n1' }, { metadata: { labels: { app: 'other' } } });
      await waitFor('events', () => seen.length >= 3);
      await sleep(100);
      expect(seen).toEqual(['add on-n1', 'add late-n1', 'delete on-n1']);
      expect(lw.list(ns).map((p) => p.metadata?.name)).toEqual(['late-n1']);
      const watches = api.requests.filter((r) => r.watch && r.path === path);
      expect(new URLSearchParams(watches.at(-1)!.query).get('fieldSelector')).toBe('spec.nodeName=n1');
    } finally {
      await stopInformer(api, lw, path);
    }
  });

  it('an informer relists after 410: compaction while running, and a gap while stopped', async () => {
    const ns = 'cn-410';
    const path = `/api/v1/namespaces/${ns}/pods`;
    const seen: string[] = [];
    const errors: unknown[] = [];
    const informer = makeInformer(kc, path, () => core.listNamespacedPod({ namespace: ns }));
    informer.on('add', (p) => seen.push(`add ${p.metadata?.name}`));
    informer.on('delete', (p) => seen.push(`delete ${p.metadata?.name}`));
    informer.on('error', (e) => errors.push(e));
    api.objects.create(pod('one', ns, {}));
    await informer.start();
    try {
      await waitFor('list', () => seen.length === 1);
      const lists = () => api.requests.filter((r) => !r.watch && r.path === path).length;
      const listsBefore = lists();

      // Compaction, then the watch ends: the re-watch from the informer's rv gets ERROR 410, the
      // stream ends, and the informer lists again.
      api.faults.compact();
      expect(api.faults.dropWatches()).toBe(1);
      await waitFor('a relist', () => lists() > listsBefore);
      await waitFor('the watch again', () => api.openWatches(path) === 1);
      api.objects.create(pod('two', ns, {}));
      await waitFor('add two', () => seen.includes('add two'));

      // Changes while the informer is stopped, then compaction: start() watches from its old
      // rv, gets 410, relists, and the list shows what it missed.
      await informer.stop();
      await waitFor('no watch', () => api.openWatches(path) === 0);
      // client-node 1.4.0 reports its own stop() to the error handlers, as an AbortError.
      expect(errors.map((e) => (e as Error).name)).toEqual(['AbortError']);
      api.objects.delete({ apiVersion: 'v1', kind: 'Pod', namespace: ns, name: 'one' });
      api.objects.create(pod('three', ns, {}));
      api.faults.compact();
      // client-node 1.4.0: a stop() while the relist runs does not stop the watch the relist
      // opens next (the request is assigned after stop() has run).
      informer.on('add', (p) => void (p.metadata?.name === 'three' && informer.stop()));
      await informer.start();
      await waitFor('the gap filled', () => seen.includes('add three') && seen.includes('delete one'));
      expect(seen).toEqual(['add one', 'add two', 'delete one', 'add three']);
      await waitFor('the watch opened after stop()', () => api.openWatches(path) === 1);
    } finally {
      await stopInformer(api, informer, path);
    }
  });

  it('an informer stops for good after a failed watch request (client-node 1.4.0), and start() resumes it', async () => {
    const ns = 'cn-informer';
    const path = `/api/v1/namespaces/${ns}/pods`;
    const errors: any[] = [];
    const seen: string[] = [];
    const informer = makeInformer(kc, path, () => core.listNamespacedPod({ namespace: ns }));
    informer.on('error', (e) => errors.push(e));
    informer.on('add', (p) => seen.push(`add ${p.metadata?.name}`));
    await informer.start();
    await waitFor('watching', () => api.openWatches(path) === 1);
    api.faults.failNext(1, { code: 500, match: (r) => r.path === path });
    api.faults.dropWatches();
    await waitFor('the error', () => errors.length === 1);
    expect(errors[0].statusCode).toBe(500);
    await sleep(300);
    expect(api.openWatches(path)).toBe(0);
    // The agent restarts it; the informer's rv is still valid, so no relist is needed.
    const lists = api.requests.filter((r) => !r.watch && r.path === path).length;
    api.objects.create(pod('while-failed', ns, {}));
    await informer.start();
    await waitFor('the missed add', () => seen.includes('add while-failed'));
    expect(api.requests.filter((r) => !r.watch && r.path === path).length).toBe(lists);
    await stopInformer(api, informer, path);
  });

  it('Watch: synthetic ADDED for an unset resourceVersion, ERROR 410 for an expired one, bookmarks, timeoutSeconds', async () => {
    const ns = 'cn-watch';
    const path = `/api/v1/namespaces/${ns}/pods`;
    api.objects.create(pod('w', ns, {}));
    const collect = async (query: Record<string, string | number | boolean>, until: (e: any[]) => boolean) => {
      const events: any[] = [];
      let ended: unknown = 'open';
      const ctl = await new Watch(kc).watch(path, query, (type, object) => events.push({ type, object }), (err) => (ended = err));
      await waitFor(`events for ${JSON.stringify(query)}`, () => until(events) || ended !== 'open');
      ctl.abort();
      return { events, ended };
    };

    const fromNow = await collect({}, (e) => e.length >= 1);
    expect(fromNow.events.map((e) => `${e.type} ${e.object.metadata.name}`)).toEqual(['ADDED w']);

    const rv = api.objects.resourceVersion();
    api.faults.compact();
    const expired = await collect({ resourceVersion: rv }, () => false);
    expect(expired.ended).toBe(null);
    expect(expired.events).toEqual([
      { type: 'ERROR', object: expect.objectContaining({ kind: 'Status', code: 410, reason: 'Expired', message: expect.stringContaining(`too old resource version: ${rv}`) }) },
    ]);

    const current = api.objects.resourceVersion();
    const bookmarks = await collect({ resourceVersion: current, allowWatchBookmarks: true }, (e) => e.length >= 1);
    expect(bookmarks.events[0]).toEqual({ type: 'BOOKMARK', object: { kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: current } } });

    const started = Date.now();
    const timed = await collect({ resourceVersion: current, timeoutSeconds: 1 }, () => false);
    expect(timed.ended).toBe(null);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);

    const replay = api.objects.resourceVersion();
    api.objects.patch({ apiVersion: 'v1', kind: 'Pod', namespace: ns, name: 'w' }, { metadata: { labels: { a: '1' } } });
    api.objects.delete({ apiVersion: 'v1', kind: 'Pod', namespace: ns, name: 'w' });
    const replayed = await collect({ resourceVersion: replay }, (e) => e.length >= 2);
    expect(replayed.events.map((e) => e.type)).toEqual(['MODIFIED', 'DELETED']);
    expect(Number(replayed.events[1].object.metadata.resourceVersion)).toBe(Number(replay) + 2);
  });

  it('Watch: the legacy /watch/ path, sendInitialEvents, and a dropped stream ending cleanly or by reset', async () => {
    const ns = 'cn-watch';
    api.objects.create(pod('lw', ns, {}));
    const open = async (path: string, query: Record<string, string | number | boolean>) => {
      const events: { type: string; object: any }[] = [];
      let ended: unknown = 'open';
      const ctl = await new Watch(kc).watch(path, query, (type, object) => events.push({ type, object }), (err) => (ended = err));
      return { events, ended: () => ended, ctl };
    };
    const legacy = await open(`/api/v1/watch/namespaces/${ns}/pods/lw`, {});
    await waitFor('legacy ADDED', () => legacy.events.length === 1);
    expect(legacy.events[0]).toMatchObject({ type: 'ADDED', object: { metadata: { name: 'lw' } } });

    const initial = await open(`/api/v1/namespaces/${ns}/pods`, { sendInitialEvents: true, resourceVersionMatch: 'NotOlderThan', allowWatchBookmarks: true });
    await waitFor('the initial-events-end bookmark', () => initial.events.some((e) => e.type === 'BOOKMARK'));
    const end = initial.events.findIndex((e) => e.type === 'BOOKMARK');
    expect(initial.events.slice(0, end).every((e) => e.type === 'ADDED')).toBe(true);
    expect(initial.events[end].object.metadata.annotations).toEqual({ 'k8s.io/initial-events-end': 'true' });

    // A clean end is `done(null)` (client-node's informers re-watch); a reset is an error (they stop).
    expect(api.faults.dropWatches()).toBe(2);
    await waitFor('both ended', () => legacy.ended() !== 'open' && initial.ended() !== 'open');
    expect([legacy.ended(), initial.ended()]).toEqual([null, null]);
    const reset = await open(`/api/v1/namespaces/${ns}/pods`, {});
    await waitFor('watching', () => reset.events.length > 0);
    api.faults.dropWatches({ reset: true });
    await waitFor('reset seen', () => reset.ended() !== 'open');
    expect(reset.ended()).toBeInstanceOf(Error);
    expect(api.openWatches()).toBe(0);
  });

  it('deletes a collection by label selector', async () => {
    const ns = 'cn-crud';
    for (const [n, app] of [['dc1', 'gone'], ['dc2', 'gone'], ['dc3', 'kept']]) api.objects.create(pod(n, ns, { app }));
    await core.deleteCollectionNamespacedPod({ namespace: ns, labelSelector: 'app=gone' });
    const left = (await core.listNamespacedPod({ namespace: ns, labelSelector: 'app' })).items.map((p) => p.metadata?.name);
    expect(left).toEqual(['dc3']);
  });

  it('slow watch streams delay each event', async () => {
    const ns = 'cn-watch';
    const rv = api.objects.resourceVersion();
    const times: number[] = [];
    api.faults.slowWatches(150);
    try {
      const ctl = await new Watch(kc).watch(`/api/v1/namespaces/${ns}/pods`, { resourceVersion: rv }, () => times.push(Date.now()), () => {});
      const t0 = Date.now();
      api.objects.create(pod('s1', ns, {}));
      api.objects.create(pod('s2', ns, {}));
      await waitFor('two events', () => times.length === 2);
      ctl.abort();
      expect(times[0] - t0).toBeGreaterThanOrEqual(140);
      expect(times[1] - times[0]).toBeGreaterThanOrEqual(140);
    } finally {
      api.faults.slowWatches(0);
    }
  });

  it('goes down and comes back on the same port with its store; failNext answers 500', async () => {
    const ns = 'cn-down';
    const path = `/api/v1/namespaces/${ns}/pods`;
    const seen: string[] = [];
    const errors: unknown[] = [];
    const informer = makeInformer(kc, path, () => core.listNamespacedPod({ namespace: ns }));
    informer.on('add', (p) => seen.push(`add ${p.metadata?.name}`));
    informer.on('error', (e) => errors.push(e));
    await informer.start();
    await waitFor('watching', () => api.openWatches(path) === 1);

    await api.down();
    expect(api.isUp).toBe(false);
    await waitFor('the informer to notice', () => errors.length > 0);
    await expect(core.listNamespacedPod({ namespace: ns })).rejects.toThrow(/ECONNREFUSED/);
    api.objects.create(pod('while-down', ns, {}));
    await api.up();
    await informer.start();
    await waitFor('the add made while down', () => seen.includes('add while-down'));
    await stopInformer(api, informer, path);

    const before = (await core.readNamespace({ name: ns })).metadata?.resourceVersion;
    await api.restart();
    expect((await core.readNamespace({ name: ns })).metadata?.resourceVersion).toBe(before);

    api.faults.failNext(2);
    expect((await apiError(core.readNamespace({ name: ns }))).status).toMatchObject({ code: 500, reason: 'InternalError' });
    expect((await apiError(core.readNamespace({ name: ns }))).code).toBe(500);
    expect((await core.readNamespace({ name: ns })).metadata?.name).toBe(ns);
  });

  it('can start down and come up later', async () => {
    const late = await startKubeApiServer({ down: true, token: false, tls: false });
    try {
      const lateCore = clientFor(late).makeApiClient(CoreV1Api);
      await expect(lateCore.listNamespace()).rejects.toThrow(/ECONNREFUSED/);
      await late.up();
      const names = (await lateCore.listNamespace()).items.map((n) => n.metadata?.name);
      expect(names).toEqual(['default', 'kube-node-lease', 'kube-public', 'kube-system']);
    } finally {
      await late.stop();
    }
  });
});

/** A raw request with the server's token, for what client-node has no typed call for. */
async function fetchJson(api: TestKubeApiServer, method: string, path: string, body?: unknown, contentType = 'application/json') {
  const https = await import('node:https');
  return new Promise<{ status: number; body: any }>((resolve, reject) => {
    const req = https.request(
      api.url + path,
      { method, ca: api.caPem, headers: { authorization: `Bearer ${api.token}`, 'content-type': contentType } },
      (res) => {
        let data = '';
        res.on('data', (d) => (data += d));
        res.on('end', () => resolve({ status: res.statusCode!, body: data ? JSON.parse(data) : undefined }));
      },
    );
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}
