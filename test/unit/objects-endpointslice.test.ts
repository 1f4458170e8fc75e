import { describe, expect, it } from 'vitest';
import { EndpointSliceObject, LABEL_SERVICE_NAME, sliceServiceName, validateObject } from '../../src/sources/objects';

const podRef = (name: string) => ({ kind: 'Pod', name, namespace: 'shop', uid: `0000000${name.length}-aaaa-4bbb-8ccc-dddddddddddd` });

// As `kubectl get endpointslice -o json` prints them: one made by the controller, and the empty
// one of a Service that selects no pod (endpoints and ports null).
const API_SLICE = {
  addressType: 'IPv4',
  apiVersion: 'discovery.k8s.io/v1',
  endpoints: [
    {
      addresses: ['10.244.1.17'],
      conditions: { ready: true, serving: true, terminating: false },
      hints: { forZones: [{ name: 'eu-west-1a' }] },
      nodeName: 'node-a',
      targetRef: podRef('web-7d4b9c8f6d-x2x9k'),
      zone: 'eu-west-1a',
    },
    {
      addresses: ['10.244.2.9'],
      conditions: { ready: false, serving: true, terminating: true },
      nodeName: 'node-b',
      targetRef: podRef('web-7d4b9c8f6d-q8w7e'),
      zone: 'eu-west-1b',
    },
  ],
  kind: 'EndpointSlice',
  metadata: {
    annotations: { 'endpoints.kubernetes.io/last-change-trigger-time': '2025-01-10T12:00:09Z' },
    creationTimestamp: '2025-01-10T12:00:01Z',
    generateName: 'web-',
    generation: 7,
    labels: { 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io', [LABEL_SERVICE_NAME]: 'web' },
    managedFields: [{ apiVersion: 'discovery.k8s.io/v1', fieldsType: 'FieldsV1', fieldsV1: { 'f:addressType': {} }, manager: 'kube-controller-manager', operation: 'Update', time: '2025-01-10T12:00:09Z' }],
    name: 'web-abc12',
    namespace: 'shop',
    ownerReferences: [{ apiVersion: 'v1', blockOwnerDeletion: true, controller: true, kind: 'Service', name: 'web', uid: '7e57c0de-0000-4000-8000-000000000001' }],
    resourceVersion: '48400',
    uid: 'e5e5e5e5-0000-4000-8000-000000000002',
  },
  ports: [
    { name: 'http', port: 80, protocol: 'TCP' },
    { appProtocol: 'kubernetes.io/h2c', name: 'metrics', port: 9113, protocol: 'TCP' },
  ],
};

const API_EMPTY_SLICE = {
  addressType: 'IPv6',
  apiVersion: 'discovery.k8s.io/v1',
  endpoints: null,
  kind: 'EndpointSlice',
  metadata: { generateName: 'lonely-', generation: 1, labels: { [LABEL_SERVICE_NAME]: 'lonely' }, name: 'lonely-x1', namespace: 'shop', resourceVersion: '1', uid: 'u' },
  ports: null,
};

const rejects = (base: object) => (_name: string, mutate: (o: any) => void, field: string) => {
  const o = structuredClone(base);
  mutate(o);
  expect(() => validateObject(o)).toThrow(expect.objectContaining({ field }));
};

describe('EndpointSlice', () => {
  it('accepts a controller-made slice as the API prints it and keeps what kelp uses', () => {
    const s = validateObject(API_SLICE) as EndpointSliceObject;
    expect(s).toEqual({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        name: 'web-abc12',
        namespace: 'shop',
        uid: 'e5e5e5e5-0000-4000-8000-000000000002',
        resourceVersion: '48400',
        generation: 7,
        labels: API_SLICE.metadata.labels,
        annotations: API_SLICE.metadata.annotations,
      },
      addressType: 'IPv4',
      endpoints: [
        {
          addresses: ['10.244.1.17'],
          conditions: { ready: true, serving: true, terminating: false },
          nodeName: 'node-a',
          zone: 'eu-west-1a',
          hints: { forZones: [{ name: 'eu-west-1a' }], forNodes: [] },
          targetRef: podRef('web-7d4b9c8f6d-x2x9k'),
        },
        {
          addresses: ['10.244.2.9'],
          conditions: { ready: false, serving: true, terminating: true },
          nodeName: 'node-b',
          zone: 'eu-west-1b',
          targetRef: podRef('web-7d4b9c8f6d-q8w7e'),
        },
      ],
      ports: [
        { name: 'http', protocol: 'TCP', port: 80 },
        { name: 'metrics', protocol: 'TCP', port: 9113, appProtocol: 'kubernetes.io/h2c' },
      ],
    });
    expect(sliceServiceName(s)).toBe('web');
  });

  it('accepts the empty slice the API prints with null lists', () => {
    expect(validateObject(API_EMPTY_SLICE)).toMatchObject({ addressType: 'IPv6', endpoints: [], ports: [] });
  });

  it('validates its own output to the same object (kelp apply stores this form)', () => {
    for (const doc of [API_SLICE, API_EMPTY_SLICE]) {
      const s = validateObject(doc);
      expect(validateObject(JSON.parse(JSON.stringify(s)))).toEqual(s);
    }
  });

  // Upstream: ready nil "should be interpreted as true", serving nil as true, terminating nil as false.
  const conditions: Array<[object | undefined, { ready: boolean; serving: boolean; terminating: boolean }]> = [
    [undefined, { ready: true, serving: true, terminating: false }],
    [{}, { ready: true, serving: true, terminating: false }],
    [{ ready: null, serving: null, terminating: null }, { ready: true, serving: true, terminating: false }],
    [{ ready: false }, { ready: false, serving: true, terminating: false }],
    [{ serving: false, terminating: true }, { ready: true, serving: false, terminating: true }],
    [{ ready: false, serving: false, terminating: false }, { ready: false, serving: false, terminating: false }],
  ];
  it.each(conditions)('reads conditions %j as %j', (given, want) => {
    const o = structuredClone(API_SLICE) as any;
    if (given === undefined) delete o.endpoints[0].conditions;
    else o.endpoints[0].conditions = given;
    expect((validateObject(o) as EndpointSliceObject).endpoints[0].conditions).toEqual(want);
  });

  it('defaults a port: name "", protocol TCP; a port without number means every port', () => {
    const o = structuredClone(API_SLICE) as any;
    o.ports = [{ port: 8080 }, { name: 'all', protocol: 'UDP' }];
    expect((validateObject(o) as EndpointSliceObject).ports).toEqual([
      { name: '', protocol: 'TCP', port: 8080 },
      { name: 'all', protocol: 'UDP' },
    ]);
  });

  it('accepts IPv6 and FQDN slices, canonicalising addresses', () => {
    const v6 = structuredClone(API_EMPTY_SLICE) as any;
    v6.endpoints = [{ addresses: ['FD00:10:244:0:0:0:0:5'] }];
    expect((validateObject(v6) as EndpointSliceObject).endpoints[0].addresses).toEqual(['fd00:10:244::5']);
    const fqdn = structuredClone(API_EMPTY_SLICE) as any;
    fqdn.addressType = 'FQDN';
    fqdn.endpoints = [{ addresses: ['db-0.db.shop.svc.cluster.local.', 'example.com'] }];
    expect((validateObject(fqdn) as EndpointSliceObject).endpoints[0].addresses).toEqual(['db-0.db.shop.svc.cluster.local.', 'example.com']);
  });

  const many = <T>(n: number, f: (i: number) => T): T[] => Array.from({ length: n }, (_, i) => f(i));
  const bad: Array<[string, (o: any) => void, string]> = [
    ['addressType missing', (o) => delete o.addressType, 'addressType'],
    ['addressType unknown', (o) => (o.addressType = 'IP'), 'addressType'],
    ['name invalid', (o) => (o.metadata.name = 'web_abc'), 'metadata.name'],
    ['endpoint without addresses', (o) => (o.endpoints[1].addresses = []), 'endpoints[1].addresses'],
    ['endpoint addresses missing', (o) => delete o.endpoints[1].addresses, 'endpoints[1].addresses'],
    ['over 100 addresses', (o) => (o.endpoints[0].addresses = many(101, (i) => `10.0.${i}.1`)), 'endpoints[0].addresses'],
    ['over 1000 endpoints', (o) => (o.endpoints = many(1001, (i) => ({ addresses: [`10.1.${i >> 8}.${i & 255}`] }))), 'endpoints'],
    ['IPv6 address in an IPv4 slice', (o) => (o.endpoints[1].addresses = ['fd00::1']), 'endpoints[1].addresses[0]'],
    ['invalid address', (o) => (o.endpoints[0].addresses = ['10.244.1.17', '10.244.1.256']), 'endpoints[0].addresses[1]'],
    ['loopback address', (o) => (o.endpoints[0].addresses = ['127.0.0.1']), 'endpoints[0].addresses[0]'],
    ['link-local address', (o) => (o.endpoints[0].addresses = ['169.254.169.254']), 'endpoints[0].addresses[0]'],
    ['unspecified address', (o) => (o.endpoints[0].addresses = ['0.0.0.0']), 'endpoints[0].addresses[0]'],
    ['FQDN address in an IPv4 slice', (o) => (o.endpoints[0].addresses = ['web.example.com']), 'endpoints[0].addresses[0]'],
    ['ready a string', (o) => (o.endpoints[1].conditions.ready = 'false'), 'endpoints[1].conditions.ready'],
    ['terminating a number', (o) => (o.endpoints[1].conditions.terminating = 1), 'endpoints[1].conditions.terminating'],
    ['nodeName invalid', (o) => (o.endpoints[1].nodeName = 'Node-B'), 'endpoints[1].nodeName'],
    ['hostname not a label', (o) => (o.endpoints[1].hostname = 'web.b'), 'endpoints[1].hostname'],
    ['zone hint invalid', (o) => (o.endpoints[0].hints.forZones[0].name = 'eu west'), 'endpoints[0].hints.forZones[0].name'],
    ['zone hint duplicate', (o) => o.endpoints[0].hints.forZones.push({ name: 'eu-west-1a' }), 'endpoints[0].hints.forZones[1].name'],
    ['over 8 zone hints', (o) => (o.endpoints[0].hints.forZones = many(9, (i) => ({ name: `z${i}` }))), 'endpoints[0].hints.forZones'],
    ['node hint invalid', (o) => (o.endpoints[0].hints.forNodes = [{ name: 'node-a' }, { name: 'Node_A' }]), 'endpoints[0].hints.forNodes[1].name'],
    ['targetRef name a number', (o) => (o.endpoints[0].targetRef.name = 5), 'endpoints[0].targetRef.name'],
    ['port name not a label', (o) => (o.ports[1].name = 'Metrics'), 'ports[1].name'],
    ['port name duplicate', (o) => (o.ports[1].name = 'http'), 'ports[1].name'],
    ['two unnamed ports', (o) => (o.ports = [{ port: 80 }, { port: 81 }]), 'ports[1].name'],
    ['port protocol unknown', (o) => (o.ports[0].protocol = 'ICMP'), 'ports[0].protocol'],
    ['port number out of range', (o) => (o.ports[0].port = 0), 'ports[0].port'],
    ['appProtocol invalid', (o) => (o.ports[1].appProtocol = 'h2c/x/y'), 'ports[1].appProtocol'],
    ['over 100 ports', (o) => (o.ports = many(101, (i) => ({ name: `p${i}`, port: 1000 + i }))), 'ports'],
    ['endpoints not a list', (o) => (o.endpoints = {}), 'endpoints'],
  ];
  it.each(bad)('rejects %s at its path', rejects(API_SLICE));

  const badFqdn: Array<[string, (o: any) => void, string]> = [
    ['a single-label name', (o) => (o.endpoints = [{ addresses: ['localhost'] }]), 'endpoints[0].addresses[0]'],
    ['an uppercase name', (o) => (o.endpoints = [{ addresses: ['Web.example.com'] }]), 'endpoints[0].addresses[0]'],
  ];
  it.each(badFqdn)('rejects an FQDN slice with %s at its path', rejects({ ...API_EMPTY_SLICE, addressType: 'FQDN' }));
});
