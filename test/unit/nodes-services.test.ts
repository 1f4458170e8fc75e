// Services across nodes: once Node objects are in use, an endpoint on a node the store does not
// know is no backend (a node that goes away takes its backends with it, in the same services
// run), while endpoints without a nodeName or on this node always stay.
import { describe, expect, it } from 'vitest';
import { KnownNodeFilter } from '../../src/service/endpoints';
import { ServiceCompiler } from '../../src/service/compile';
import { ServiceIds } from '../../src/service/ids';
import { EndpointSliceObject, NodeObject, ServiceObject, validateObject } from '../../src/sources/objects';

const node = (name: string) => validateObject({ apiVersion: 'v1', kind: 'Node', metadata: { name } }) as NodeObject;

function slice(name: string, eps: Array<[string, string | undefined]>): EndpointSliceObject {
  return validateObject({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: 'default', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4',
    ports: [{ name: '', port: 8080, protocol: 'TCP' }],
    endpoints: eps.map(([ip, nodeName]) => ({ addresses: [ip], conditions: { ready: true }, ...(nodeName ? { nodeName } : {}) })),
  }) as EndpointSliceObject;
}

const SVC = validateObject({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name: 'web', namespace: 'default' },
  spec: { clusterIP: '10.96.0.10', ports: [{ port: 80, targetPort: 8080 }] },
}) as ServiceObject;

const addrs = (s: EndpointSliceObject[]) => s.flatMap((x) => x.endpoints.map((e) => e.addresses[0]));

describe('KnownNodeFilter', () => {
  const s = slice('web-1', [
    ['10.244.1.5', 'n1'],
    ['10.244.2.5', 'n2'],
    ['10.244.3.5', 'n3'],
    ['10.0.0.9', undefined],
  ]);

  it('leaves out endpoints on unknown nodes; keeps this node, no nodeName, and everything when no Node is known', () => {
    const f = new KnownNodeFilter();
    expect(addrs(f.apply([s], [node('n1'), node('n2')], 'n1'))).toEqual(['10.244.1.5', '10.244.2.5', '10.0.0.9']);
    // This node's own Node missing (standalone without one): its endpoints stay.
    expect(addrs(f.apply([s], [node('n2')], 'n1'))).toEqual(['10.244.1.5', '10.244.2.5', '10.0.0.9']);
    // No Node objects in use at all: as before nodes existed.
    expect(addrs(f.apply([s], [], 'n1'))).toEqual(['10.244.1.5', '10.244.2.5', '10.244.3.5', '10.0.0.9']);
  });

  it('passes a slice with nothing to drop on as the same object, and reuses a filtered one while nothing changed', () => {
    const f = new KnownNodeFilter();
    const all = [node('n1'), node('n2'), node('n3')];
    expect(f.apply([s], all, 'n1')[0]).toBe(s);
    const a = f.apply([s], [node('n1'), node('n2')], 'n1')[0];
    expect(a).not.toBe(s);
    expect(f.apply([s], [node('n2'), node('n1')], 'n1')[0]).toBe(a);
    expect(addrs(f.apply([s], [node('n1')], 'n1'))).toEqual(['10.244.1.5', '10.0.0.9']);
  });

  it('through the compiler: a node that goes away takes its backends with it in the next run', () => {
    const compiler = new ServiceCompiler(new ServiceIds(), { maglevTableSize: 251 });
    const f = new KnownNodeFilter();
    const sl = slice('web-1', [
      ['10.244.1.5', 'n1'],
      ['10.244.2.5', 'n2'],
    ]);
    const run = (nodes: NodeObject[]) => {
      const res = compiler.compile({ services: [SVC], endpointSlices: f.apply([sl], nodes, 'n1'), nodes, nodeName: 'n1', nodeAddresses: [] });
      return res.model.ports.flatMap((p) => p.cluster?.backends.map((b) => b.address) ?? []).sort();
    };
    expect(run([node('n1'), node('n2')])).toEqual(['10.244.1.5', '10.244.2.5']);
    expect(run([node('n1')])).toEqual(['10.244.1.5']);
    expect(run([node('n1'), node('n2')])).toEqual(['10.244.1.5', '10.244.2.5']);
  });
});
