// The agent's services reconciler over a real store and loop, with the datapath's parts replaced
// by recorders: what it hands the writer, when it destroys UDP sockets, what it persists, and the
// API's view of it. The kernel side is tested in test/datapath and test/e2e.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseAgentArgs, UsageError } from '../../src/agent/options';
import { serviceViews } from '../../src/agent/routes/services';
import { AgentServices, serviceHooks, socketLbMode, startServices, startSocketLb } from '../../src/agent/services';
import type { ServiceMapsDesired } from '../../src/datapath/service-types';
import type { EndpointRecord } from '../../src/endpoint/state';
import { silentLogger } from '../../src/log';
import type { Rtnl } from '../../src/netlink';
import { ReconcileLoop } from '../../src/reconcile/loop';
import { KelpObject, validateObject } from '../../src/sources/objects';
import { ObjectStore } from '../../src/sources/store';

const obj = (o: unknown) => validateObject(o) as KelpObject;

const service = obj({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: 'dns', namespace: 'default' },
  spec: { clusterIP: '10.96.0.10', selector: { app: 'dns' }, ports: [{ name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 }] },
});
const pod = (name: string, ip?: string) =>
  obj({ apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'default', labels: { app: 'dns' } }, ...(ip ? { status: { podIPs: [{ ip }] } } : {}) });

let dir: string;
let store: ObjectStore;
let loop: ReconcileLoop;
let endpoints: Array<Pick<EndpointRecord, 'pod' | 'ips' | 'netns'>>;
let applied: ServiceMapsDesired[];
let destroyed: Array<{ backends: Array<{ address: string; port: number }>; netns: string[] }>;
let svc: AgentServices | undefined;

const rtnl = { listAddresses: async () => [{ address: '127.0.0.1' }, { address: '192.168.5.5' }] } as unknown as Rtnl;

function start(standalone = true): AgentServices {
  svc = startServices({
    objects: store,
    manager: { list: () => endpoints as EndpointRecord[] },
    reconcilers: loop,
    rtnl,
    nodeName: 'node-a',
    stateDir: dir,
    standalone,
    maglevTableSize: 251,
    resyncMs: 60_000,
    log: silentLogger,
    writer: { apply: (d) => applied.push(d) },
    destroyUdpSocketsTo: (backends, opts) => destroyed.push({ backends, netns: opts.netns }),
  });
  return svc;
}

const backendsOf = (d: ServiceMapsDesired) => d.sets.flatMap((s) => s.backends.map((b) => `${b.address}:${b.port}`)).sort();

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'kelp-svc-agent-'));
  store = new ObjectStore();
  loop = new ReconcileLoop(store, { log: silentLogger, debounceMs: 1 });
  endpoints = [];
  applied = [];
  destroyed = [];
});
afterEach(async () => {
  svc?.stop();
  svc = undefined;
  await loop.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('services in the agent', () => {
  it('standalone: derived slices from Pods and this node\'s endpoints; a backend gone → its UDP sockets destroyed; ids persisted', async () => {
    store.upsert('m', service);
    store.upsert('m', pod('a', '10.244.1.1'));
    store.upsert('m', pod('b'));
    endpoints = [{ pod: { namespace: 'default', name: 'b' } as EndpointRecord['pod'], ips: [{ address: '10.244.0.7/24' }] as EndpointRecord['ips'], netns: '/var/run/netns/b' }];
    start();
    await loop.start([]);
    expect(backendsOf(applied.at(-1)!)).toEqual(['10.244.0.7:5353', '10.244.1.1:5353']);
    expect(applied.at(-1)!.frontends.map((f) => `${f.address}:${f.port}/${f.protocol}`)).toEqual(['10.96.0.10:53/UDP']);
    expect(destroyed).toEqual([]);

    store.remove('m', 'Pod', 'default', 'a');
    await loop.runNow();
    expect(backendsOf(applied.at(-1)!)).toEqual(['10.244.0.7:5353']);
    expect(destroyed).toEqual([{ backends: [{ address: '10.244.1.1', port: 5353 }], netns: ['/var/run/netns/b'] }]);

    // Saved on the event loop's next turn after the run, before this one.
    await new Promise((resolve) => setImmediate(resolve));
    const saved = JSON.parse(readFileSync(path.join(dir, 'service-ids.json'), 'utf8')) as { svc: { entries: Array<[string, number]> } };
    expect(saved.svc.entries).toEqual([['default/dns/dns/UDP', 1]]);

    const rows = serviceViews(svc!.model());
    expect(rows).toMatchObject([{ service: 'default/dns', port: 'dns', kind: 'ClusterIP', address: '10.96.0.10', frontendPort: 53, protocol: 'UDP', view: 'Cluster', empty: null, backends: [{ address: '10.244.0.7', port: 5353, state: ['local'] }] }]);
  });

  it('a CNI ADD in standalone mode brings its pod in', async () => {
    store.upsert('m', service);
    store.upsert('m', pod('b'));
    const s = start();
    await loop.start([]);
    expect(applied.at(-1)!.sets).toEqual([]);
    endpoints = [{ pod: { namespace: 'default', name: 'b' } as EndpointRecord['pod'], ips: [{ address: '10.244.0.9/24' }] as EndpointRecord['ips'], netns: '/x' }];
    s.endpointsChanged();
    await loop.runNow();
    expect(backendsOf(applied.at(-1)!)).toEqual(['10.244.0.9:5353']);
  });

  it('Kubernetes mode: the API\'s slices only, nothing derived, Pods do not wake it', async () => {
    store.upsert('k', service);
    store.upsert('k', pod('a', '10.244.1.1'));
    const s = start(false);
    expect(s.reconciler.kinds).not.toContain('Pod');
    await loop.start([]);
    expect(applied.at(-1)!.sets).toEqual([]);
    expect(serviceViews(s.model())).toMatchObject([{ empty: 'reject', backends: [] }]);
  });

  it('ids survive a restart of the reconciler', async () => {
    store.upsert('m', service);
    start();
    await loop.start([]);
    const before = applied.at(-1)!.frontends[0].svcId;
    svc!.stop();
    // Saved by stop() at the latest.
    expect((JSON.parse(readFileSync(path.join(dir, 'service-ids.json'), 'utf8')) as { svc: { entries: unknown[] } }).svc.entries).toEqual([['default/dns/dns/UDP', before]]);
    await loop.stop();
    // Another Service sorting first would take id 1 if numbering started afresh.
    store.upsert('m', obj({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'aaa', namespace: 'default' }, spec: { clusterIP: '10.96.0.9', ports: [{ port: 80 }] } }));
    loop = new ReconcileLoop(store, { log: silentLogger, debounceMs: 1 });
    start();
    await loop.start([]);
    expect(applied.at(-1)!.frontends.find((f) => f.address === '10.96.0.10')!.svcId).toBe(before);
  });

  it('serviceHooks: a writer over the service maps, the collector, the UDP reaper', () => {
    let maps = { maglev: { keySize: 8, valueLen: 512 } };
    const reaped: unknown[] = [];
    const dp = { serviceMaps: () => maps, gcServiceCt: () => ({ scanned: 3, deleted: 1 }), destroyUdpSocketsTo: (b: unknown, o: unknown) => (reaped.push([b, o]), []) };
    const h = serviceHooks(dp as unknown as Parameters<typeof serviceHooks>[0], 251);
    expect(h.writer).toBeDefined();
    expect(h.gcServiceCt?.()).toEqual({ scanned: 3, deleted: 1 });
    h.destroyUdpSocketsTo?.([{ address: '10.0.0.1', port: 53 }], { netns: ['/n'] });
    expect(reaped).toEqual([[[{ address: '10.0.0.1', port: 53 }], { netns: ['/n'] }]]);
    // Maglev maps of another layout (whole tables of one size, as before chunks): refused, not written wrong.
    maps = { maglev: { keySize: 4, valueLen: 2 * 251 } };
    expect(() => serviceHooks(dp as unknown as Parameters<typeof serviceHooks>[0], 251)).toThrow(/4-byte keys and 502-byte values, not the chunks/);
  });

  it('startSocketLb passes the mode; without a cgroup root socket LB is off', () => {
    const calls: unknown[] = [];
    const dp = { enableSocketLb: (o: unknown) => void calls.push(o) };
    expect(startSocketLb(dp, { socketLb: 'hostns', cgroupRoot: '/sys/fs/cgroup/x' }, silentLogger)).toBe('host-only');
    expect(startSocketLb(dp, { socketLb: 'on', cgroupRoot: '/sys/fs/cgroup/x' }, silentLogger)).toBe('all');
    expect(startSocketLb(dp, { socketLb: 'off', cgroupRoot: '/sys/fs/cgroup/x' }, silentLogger)).toBe('off');
    expect(startSocketLb(dp, { socketLb: 'on' }, silentLogger)).toBe('off');
    expect(calls).toEqual([{ mode: 'host-only', cgroupRoot: '/sys/fs/cgroup/x' }, { mode: 'all', cgroupRoot: '/sys/fs/cgroup/x' }, { mode: 'off' }, { mode: 'off' }]);
    expect(socketLbMode('on')).toBe('all');
  });
});

describe('agent flags for services', () => {
  it('--maglev-table-size must be a prime, --socket-lb on|off|hostns, --cgroup-root a path', () => {
    expect(parseAgentArgs([]).socketLb).toBe('on');
    expect(parseAgentArgs(['--maglev-table-size=1021', '--socket-lb=hostns', '--cgroup-root=/sys/fs/cgroup/kelp'])).toMatchObject({ maglevTableSize: 1021, socketLb: 'hostns', cgroupRoot: '/sys/fs/cgroup/kelp' });
    expect(() => parseAgentArgs(['--maglev-table-size=1000'])).toThrow(UsageError);
    expect(() => parseAgentArgs(['--maglev-table-size=1000'])).toThrow(/--maglev-table-size: maglev table size 1000 is not prime/);
    expect(() => parseAgentArgs(['--socket-lb=maybe'])).toThrow(/--socket-lb must be one of on, off, hostns, got "maybe"/);
  });
});
