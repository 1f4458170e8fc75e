// Services through the whole agent. Standalone mode: a Service manifest with a selector and two
// backend Pods (their EndpointSlice derived by the agent from the pods kelp-cni attached), a
// client pod reaching the ClusterIP over TCP, `kelp get services` listing both backends, a
// restart, a backend Pod deleted → new connections all go to the other. Kubernetes mode: the
// API's EndpointSlices are the truth (a selector Service without slices gets no backend).
import { execFile, spawn, ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Sandbox, SandboxPod } from '../../src/sandbox';
import type { ServiceFrontendView } from '../../src/agent/routes/services';
import { e2ePrefix, eventually, startSandbox } from '../support/e2e';
import { Sandbox as SandboxClass } from '../../src/sandbox';
import { startKubeApiServer, TestKubeApiServer } from '../support/kube-apiserver';
import { Bridge, bridgeInto } from '../support/kube-apiserver/bridge';

const VIP = '10.96.77.10';
const PORT = 8080;

// A TCP server answering each connection with the name it was started with, then closing.
const SERVER = `const [name, port] = process.argv.slice(1); require('node:net').createServer((s) => { s.on('error', () => {}); s.end(name + '\\n'); }).listen(Number(port), '0.0.0.0', () => console.log('ready'));`;
// Connects to host:port n times, one new connection each, and prints each answer (or the error) on a line.
const CLIENT = `const [host, port, n] = process.argv.slice(1); const net = require('node:net');
(async () => { for (let i = 0; i < Number(n); i++) { console.log(await new Promise((resolve) => { let got = ''; const s = net.connect({ host, port: Number(port) });
  const t = setTimeout(() => { s.destroy(); resolve('timeout'); }, 2000);
  s.on('data', (d) => (got += d)); s.on('error', (e) => { clearTimeout(t); resolve('error ' + e.code); }); s.on('close', () => { clearTimeout(t); resolve(got.trim() || 'closed'); }); })); } })();`;

let sb: Sandbox;
let dir: string;
const servers: ChildProcess[] = [];
const pods: Record<string, SandboxPod> = {};

function manifest(name: string, docs: unknown[]): string {
  const file = path.join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: docs }));
  return file;
}

const podManifest = (name: string) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'default', labels: { app: name.startsWith('web') ? 'web' : 'client' } } });

function startServer(pod: SandboxPod): Promise<void> {
  const child = spawn('ip', ['netns', 'exec', pod.netns, process.execPath, '-e', SERVER, pod.name, String(PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
  servers.push(child);
  return new Promise((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`server in ${pod.name} exited with ${code}`)));
  });
}

/** Who answered n new connections from the client pod to the ClusterIP, as "name" or "error …". */
function ask(n: number): string[] {
  return sb.exec(pods.client.netns, process.execPath, ['-e', CLIENT, VIP, '80', String(n)]).trim().split('\n');
}

const listed = (): ServiceFrontendView[] => JSON.parse(sb.kelp('get', 'services', '-o', 'json')) as ServiceFrontendView[];

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'kelp-svc-e2e-'));
  sb = await startSandbox('sva');
  // Pod objects first (labels for the selector), then kelp-cni attaches them.
  sb.kelp('apply', '-f', manifest('pods', ['web-1', 'web-2', 'client'].map(podManifest)), '--wait');
  for (const name of ['web-1', 'web-2', 'client']) pods[name] = await sb.addPod(name);
  await Promise.all([startServer(pods['web-1']), startServer(pods['web-2'])]);
  sb.kelp(
    'apply',
    '-f',
    manifest('svc', [{ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'default' }, spec: { clusterIP: VIP, selector: { app: 'web' }, ports: [{ port: 80, targetPort: PORT }] } }]),
    '--wait',
  );
}, 60_000);

afterAll(async () => {
  for (const s of servers) s.kill();
  await sb?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('a Service in standalone mode', () => {
  it('kelp get services lists the ClusterIP with both pods as local backends, from the derived slice', () => {
    const rows = listed();
    expect(rows.map((r) => ({ service: r.service, kind: r.kind, frontend: `${r.address}:${r.frontendPort}/${r.protocol}`, view: r.view }))).toEqual([
      { service: 'default/web', kind: 'ClusterIP', frontend: `${VIP}:80/TCP`, view: 'Cluster' },
    ]);
    expect(rows[0].backends.map((b) => `${b.address}:${b.port} ${b.state.join(',')}`).sort()).toEqual([`${pods['web-1'].ip}:${PORT} local`, `${pods['web-2'].ip}:${PORT} local`].sort());
    const table = sb.kelp('get', 'services');
    expect(table).toMatch(new RegExp(`default\\s+web\\s+80\\s+ClusterIP\\s+${VIP.replace(/\./g, '\\.')}:80/TCP`));
    expect(table).toContain(`${pods['web-1'].ip}:${PORT}(local)`);
    expect(table).toContain(`${pods['web-2'].ip}:${PORT}(local)`);
  });

  it('the client pod reaches the ClusterIP, and new connections spread over both backends', () => {
    const answers = ask(24);
    const counts = new Map<string, number>();
    for (const a of answers) counts.set(a, (counts.get(a) ?? 0) + 1);
    expect([...counts.keys()].sort(), `answers: ${answers.join(' ')}`).toEqual(['web-1', 'web-2']);
  });

  it('an agent restart is a non-event: served while the agent is down, the same ids after', async () => {
    const before = listed();
    await sb.stopAgent();
    try {
      const answers = ask(16);
      expect(new Set(answers), `answers while the agent was down: ${answers.join(' ')}`).toEqual(new Set(['web-1', 'web-2']));
    } finally {
      await sb.startAgent();
    }
    const after = listed();
    expect(after.map((r) => ({ svcId: r.svcId, setId: r.setId, backends: r.backends.map((b) => b.backendId).sort() }))).toEqual(
      before.map((r) => ({ svcId: r.svcId, setId: r.setId, backends: r.backends.map((b) => b.backendId).sort() })),
    );
    expect(new Set(ask(16))).toEqual(new Set(['web-1', 'web-2']));
  });

  it('a backend Pod deleted: every new connection goes to the other', () => {
    sb.kelp('delete', '-f', manifest('gone', [podManifest('web-1')]), '--wait');
    expect(listed()[0].backends.map((b) => b.address)).toEqual([pods['web-2'].ip]);
    const answers = ask(12);
    expect(new Set(answers), `answers: ${answers.join(' ')}`).toEqual(new Set(['web-2']));
  });

  it('the last backend gone: the client is refused at once, not left hanging', () => {
    sb.kelp('delete', '-f', manifest('gone2', [podManifest('web-2')]), '--wait');
    expect(listed()[0]).toMatchObject({ empty: 'reject', backends: [] });
    const t0 = Date.now();
    expect(ask(1)).toEqual(['error ECONNREFUSED']);
    expect(Date.now() - t0).toBeLessThan(1500);
  });
});

describe('a Service in Kubernetes mode', () => {
  const NODE_API_PORT = 6443;
  let api: TestKubeApiServer;
  let kb: Sandbox;
  let bridge: Bridge | undefined;
  const kservers: ChildProcess[] = [];
  const kubectl = async (...args: string[]) =>
    (await promisify(execFile)('kubectl', ['--kubeconfig', api.kubeconfigPath, '--request-timeout=10s', ...args], { encoding: 'utf8', timeout: 30_000 })).stdout;
  const kubeApply = async (name: string, docs: unknown[]) => {
    // A file per object: kubectl reads a file starting with '{' as one JSON document.
    const files = docs.map((d, i) => {
      const file = path.join(api.dir, `${name}-${i}.json`);
      writeFileSync(file, JSON.stringify(d));
      return file;
    });
    await kubectl('apply', ...files.flatMap((f) => ['-f', f]));
  };
  const rows = (): ServiceFrontendView[] => JSON.parse(kb.kelp('get', 'services', '-o', 'json')) as ServiceFrontendView[];

  beforeAll(async () => {
    api = await startKubeApiServer();
    const kubeconfig = path.join(api.dir, 'node-kubeconfig');
    writeFileSync(kubeconfig, readFileSync(api.kubeconfigPath, 'utf8').split(`127.0.0.1:${api.port}`).join(`127.0.0.1:${NODE_API_PORT}`));
    kb = await SandboxClass.start({
      prefix: e2ePrefix('svk'),
      logLevel: 'debug',
      agentArgs: [`--kubeconfig=${kubeconfig}`],
      beforeAgent: (s) => {
        bridge = bridgeInto(`/var/run/netns/${s.node}`, NODE_API_PORT, api.port);
      },
    });
  }, 60_000);

  afterAll(async () => {
    for (const s of kservers) s.kill();
    await kb?.stop();
    await bridge?.close();
    await api?.stop();
  });

  it('the ClusterIP balances over the API\'s slice; a selector Service with no slice gets no backend', async () => {
    await kubeApply(
      'pods',
      ['kweb', 'kclient'].map((name) => ({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'default', labels: { app: name } }, spec: { nodeName: kb.node, containers: [{ name: 'c', image: 'x' }] } })),
    );
    const web = await kb.addPod('kweb');
    const client = await kb.addPod('kclient');
    const child = spawn('ip', ['netns', 'exec', web.netns, process.execPath, '-e', SERVER, 'kweb', String(PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
    kservers.push(child);
    await new Promise((resolve) => child.stdout!.once('data', resolve));
    await kubeApply('services', [
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'sliced', namespace: 'default' }, spec: { clusterIP: '10.96.5.1', ports: [{ name: 'http', port: 80, targetPort: 'http' }] } },
      { apiVersion: 'v1', kind: 'Service', metadata: { name: 'selector-only', namespace: 'default' }, spec: { clusterIP: '10.96.5.2', selector: { app: 'kweb' }, ports: [{ port: 80, targetPort: PORT }] } },
      {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: 'sliced-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'sliced' } },
        addressType: 'IPv4',
        ports: [{ name: 'http', port: PORT, protocol: 'TCP' }],
        endpoints: [{ addresses: [web.ip], nodeName: kb.node, conditions: { ready: true } }],
      },
    ]);
    const sliced = await eventually('svc/sliced programmed', () => rows().find((r) => r.service === 'default/sliced' && r.backends.length === 1));
    expect(sliced.backends).toEqual([expect.objectContaining({ address: web.ip, port: PORT, state: ['local'] })]);
    expect(rows().find((r) => r.service === 'default/selector-only')).toMatchObject({ empty: 'reject', backends: [] });
    const ask2 = (vip: string) => kb.exec(client.netns, process.execPath, ['-e', CLIENT, vip, '80', '3']).trim().split('\n');
    expect(ask2('10.96.5.1')).toEqual(['kweb', 'kweb', 'kweb']);
    expect(ask2('10.96.5.2')).toEqual(['error ECONNREFUSED', 'error ECONNREFUSED', 'error ECONNREFUSED']);
  }, 60_000);
});
