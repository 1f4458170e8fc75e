import { describe, expect, it } from 'vitest';
import { deriveEndpointSlices, DeriveInputs, KELP_SLICE_MANAGER, MAX_ENDPOINTS_PER_SLICE, SliceDeriver } from '../../src/service/slices';
import { compileServices } from '../../src/service/compile';
import { ServiceIds } from '../../src/service/ids';
import { EndpointSliceObject, NodeObject, PodObject, ServiceObject, validateObject } from '../../src/sources/objects';

function svc(name: string, spec: Record<string, unknown>, namespace = 'default'): ServiceObject {
  return validateObject({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace }, spec: { clusterIP: '10.96.0.10', selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }], ...spec } }) as ServiceObject;
}

function pod(name: string, o: { labels?: Record<string, string>; ip?: string; node?: string; phase?: string; ports?: Array<{ name?: string; containerPort: number; protocol?: string }>; namespace?: string } = {}): PodObject {
  return validateObject({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: o.namespace ?? 'default', labels: o.labels ?? { app: 'web' }, uid: `uid-${name}` },
    spec: { ...(o.node ? { nodeName: o.node } : {}), containers: [{ name: 'c', ports: o.ports ?? [] }] },
    ...(o.ip || o.phase ? { status: { ...(o.ip ? { podIPs: [{ ip: o.ip }] } : {}), ...(o.phase ? { phase: o.phase } : {}) } } : {}),
  }) as PodObject;
}

const node = (name: string, zone: string) => validateObject({ apiVersion: 'v1', kind: 'Node', metadata: { name, labels: { 'topology.kubernetes.io/zone': zone } } }) as NodeObject;

function derive(services: ServiceObject[], pods: PodObject[], extra: Partial<DeriveInputs> = {}): EndpointSliceObject[] {
  return deriveEndpointSlices({ services, pods, nodes: [node('node-a', 'zone-a'), node('node-b', 'zone-b')], slices: [], localPodIps: new Map(), nodeName: 'node-a', ...extra });
}

/** Each slice as `ports | address@node ...`, sorted. */
const brief = (slices: EndpointSliceObject[]) =>
  slices.map((s) => `${s.ports.map((p) => `${p.name || '-'}:${p.port}/${p.protocol}`).join(',')} | ${s.endpoints.map((e) => `${e.addresses[0]}@${e.nodeName ?? '?'}`).join(' ')}`).sort();

describe('deriveEndpointSlices', () => {
  it('selects the pods of the namespace whose labels hold the selector, as the controller labels them', () => {
    const slices = derive(
      [svc('web', {})],
      [pod('a', { ip: '10.244.1.1', node: 'node-a' }), pod('b', { ip: '10.244.2.1', node: 'node-b' }), pod('c', { ip: '10.244.3.1', labels: { app: 'db' } }), pod('d', { ip: '10.244.4.1', namespace: 'other' })],
    );
    expect(brief(slices)).toEqual(['-:8080/TCP | 10.244.1.1@node-a 10.244.2.1@node-b']);
    const [s] = slices;
    expect(s.metadata.namespace).toBe('default');
    expect(s.metadata.labels).toEqual({ 'kubernetes.io/service-name': 'web', 'endpointslice.kubernetes.io/managed-by': KELP_SLICE_MANAGER });
    expect(s.addressType).toBe('IPv4');
    expect(s.endpoints[0]).toEqual({ addresses: ['10.244.1.1'], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'node-a', zone: 'zone-a', targetRef: { kind: 'Pod', namespace: 'default', name: 'a', uid: 'uid-a' } });
    // Valid as any EndpointSlice manifest is.
    expect(validateObject(JSON.parse(JSON.stringify(s)))).toEqual(s);
  });

  it('pods in a terminal phase, or without an address, are left out', () => {
    const slices = derive([svc('web', {})], [pod('a', { ip: '10.244.1.1', phase: 'Succeeded' }), pod('b', { ip: '10.244.1.2', phase: 'Failed' }), pod('c'), pod('d', { ip: '10.244.1.4', phase: 'Running' })]);
    expect(brief(slices)).toEqual(['-:8080/TCP | 10.244.1.4@?']);
  });

  it("a pod with no status takes its kelp endpoint's address and is on this node", () => {
    const slices = derive([svc('web', {})], [pod('a'), pod('b')], { localPodIps: new Map([['default/a', ['10.244.0.5']]]) });
    expect(brief(slices)).toEqual(['-:8080/TCP | 10.244.0.5@node-a']);
  });

  it('a named targetPort resolves per pod (name and protocol); pods group by their resolved ports', () => {
    const s = svc('web', { ports: [{ name: 'http', port: 80, targetPort: 'web' }, { name: 'dns', port: 53, protocol: 'UDP', targetPort: 'dns' }] });
    const slices = derive(
      [s],
      [
        pod('a', { ip: '10.244.1.1', ports: [{ name: 'web', containerPort: 8080 }, { name: 'dns', containerPort: 5353, protocol: 'UDP' }] }),
        pod('b', { ip: '10.244.1.2', ports: [{ name: 'web', containerPort: 9090 }, { name: 'dns', containerPort: 5353, protocol: 'UDP' }] }),
        pod('c', { ip: '10.244.1.3', ports: [{ name: 'web', containerPort: 8080 }, { name: 'dns', containerPort: 5353, protocol: 'TCP' }] }),
        pod('d', { ip: '10.244.1.4', ports: [{ name: 'web', containerPort: 8080 }, { name: 'dns', containerPort: 5353, protocol: 'UDP' }] }),
      ],
    );
    expect(brief(slices)).toEqual(['http:8080/TCP | 10.244.1.3@?', 'http:8080/TCP,dns:5353/UDP | 10.244.1.1@? 10.244.1.4@?', 'http:9090/TCP,dns:5353/UDP | 10.244.1.2@?']);
  });

  it('no selector, ExternalName, or a Service with slices of its own in the manifests: nothing derived', () => {
    const own = validateObject({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'mine', namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      endpoints: [],
    }) as EndpointSliceObject;
    const pods = [pod('a', { ip: '10.244.1.1' })];
    expect(derive([svc('web', {})], pods, { slices: [own] })).toEqual([]);
    expect(derive([svc('plain', { selector: undefined })], pods)).toEqual([]);
    expect(derive([svc('ext', { type: 'ExternalName', externalName: 'example.com', clusterIP: undefined })], pods)).toEqual([]);
    expect(derive([svc('other', {})], pods)).toHaveLength(1);
  });

  it('more than 100 pods fill several slices', () => {
    const pods = Array.from({ length: 250 }, (_, i) => pod(`p${String(i).padStart(3, '0')}`, { ip: `10.244.${i >> 8}.${(i & 255) + 1}` }));
    const slices = derive([svc('web', {})], pods);
    expect(slices.map((s) => s.endpoints.length)).toEqual([MAX_ENDPOINTS_PER_SLICE, MAX_ENDPOINTS_PER_SLICE, 50]);
    expect(new Set(slices.map((s) => s.metadata.name)).size).toBe(3);
  });

  it('trafficDistribution hints: zone for PreferClose, node and zone for PreferSameNode', () => {
    const pods = [pod('a', { ip: '10.244.1.1', node: 'node-a' }), pod('b', { ip: '10.244.2.1', node: 'node-b' })];
    const close = derive([svc('web', { trafficDistribution: 'PreferClose' })], pods)[0].endpoints.map((e) => e.hints);
    expect(close).toEqual([
      { forZones: [{ name: 'zone-a' }], forNodes: [] },
      { forZones: [{ name: 'zone-b' }], forNodes: [] },
    ]);
    const sameNode = derive([svc('web', { trafficDistribution: 'PreferSameNode' })], pods)[0].endpoints.map((e) => e.hints);
    expect(sameNode).toEqual([
      { forZones: [{ name: 'zone-a' }], forNodes: [{ name: 'node-a' }] },
      { forZones: [{ name: 'zone-b' }], forNodes: [{ name: 'node-b' }] },
    ]);
    expect(derive([svc('web', {})], pods)[0].endpoints.every((e) => e.hints === undefined)).toBe(true);
  });

  it('compiled, derived slices load-balance the ClusterIP over the selected pods', () => {
    const s = svc('web', { ports: [{ name: 'http', port: 80, targetPort: 'http' }] });
    const pods = [pod('a', { ip: '10.244.1.1', ports: [{ name: 'http', containerPort: 8080 }] }), pod('b', { ip: '10.244.2.1', ports: [{ name: 'http', containerPort: 8081 }] })];
    const slices = derive([s], pods);
    const res = compileServices({ services: [s], endpointSlices: slices, nodes: [], nodeName: 'node-a', nodeAddresses: [] }, new ServiceIds(), { maglevTableSize: 251 });
    expect(res.desired.frontends).toHaveLength(1);
    expect(res.desired.sets[0].backends.map((b) => `${b.address}:${b.port}`).sort()).toEqual(['10.244.1.1:8080', '10.244.2.1:8081']);
  });

  it('SliceDeriver hands back the same object for a slice whose content is unchanged', () => {
    const d = new SliceDeriver();
    const input = (pods: PodObject[]): DeriveInputs => ({ services: [svc('web', {}), svc('db', { selector: { app: 'db' } })], pods, nodes: [], slices: [], localPodIps: new Map(), nodeName: 'node-a' });
    const first = d.derive(input([pod('a', { ip: '10.244.1.1' }), pod('z', { ip: '10.244.9.9', labels: { app: 'db' } })]));
    const again = d.derive(input([pod('a', { ip: '10.244.1.1' }), pod('z', { ip: '10.244.9.9', labels: { app: 'db' } })]));
    expect(again).toHaveLength(2);
    expect(again[0]).toBe(first[0]);
    expect(again[1]).toBe(first[1]);
    const changed = d.derive(input([pod('a', { ip: '10.244.1.2' }), pod('z', { ip: '10.244.9.9', labels: { app: 'db' } })]));
    const web = (l: EndpointSliceObject[]) => l.find((s) => s.metadata.labels['kubernetes.io/service-name'] === 'web')!;
    const db = (l: EndpointSliceObject[]) => l.find((s) => s.metadata.labels['kubernetes.io/service-name'] === 'db')!;
    expect(web(changed)).not.toBe(web(first));
    expect(web(changed).endpoints[0].addresses).toEqual(['10.244.1.2']);
    expect(db(changed)).toBe(db(first));
  });
});
