import { describe, expect, it } from 'vitest';
import { IMPLICIT_NAMESPACES, kindInfo, LABEL_METADATA_NAME, objectKey, objectRef, supportedKinds, validateObject } from '../../src/sources/objects';

// As `kubectl get namespace -o json` prints it.
const API_NAMESPACE = {
  apiVersion: 'v1',
  kind: 'Namespace',
  metadata: {
    annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"apiVersion":"v1","kind":"Namespace","metadata":{"annotations":{},"labels":{"team":"a"},"name":"shop"}}\n' },
    creationTimestamp: '2025-01-10T11:59:00Z',
    labels: { [LABEL_METADATA_NAME]: 'shop', team: 'a' },
    managedFields: [{ apiVersion: 'v1', fieldsType: 'FieldsV1', fieldsV1: { 'f:metadata': { 'f:labels': { 'f:team': {} } } }, manager: 'kubectl-client-side-apply', operation: 'Update', time: '2025-01-10T11:59:00Z' }],
    name: 'shop',
    resourceVersion: '400',
    uid: 'c1f5d3a2-1111-4222-8333-944455556666',
  },
  spec: { finalizers: ['kubernetes'] },
  status: { phase: 'Active' },
};

describe('Namespace', () => {
  it('accepts a Namespace as the API prints it', () => {
    const n = validateObject(API_NAMESPACE);
    expect(n).toEqual({
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: {
        name: 'shop',
        uid: 'c1f5d3a2-1111-4222-8333-944455556666',
        resourceVersion: '400',
        labels: { [LABEL_METADATA_NAME]: 'shop', team: 'a' },
        annotations: API_NAMESPACE.metadata.annotations,
      },
    });
    expect(validateObject(JSON.parse(JSON.stringify(n)))).toEqual(n);
  });

  it('labels a manifest namespace with its name as the API server does, whatever was written', () => {
    expect(validateObject({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'a' } }).metadata.labels).toEqual({ [LABEL_METADATA_NAME]: 'a' });
    expect(validateObject({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'a', labels: { [LABEL_METADATA_NAME]: 'b' } } }).metadata.labels).toEqual({ [LABEL_METADATA_NAME]: 'a' });
  });

  const bad: Array<[string, unknown, string]> = [
    ['a name that is a subdomain but not a label', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'a.b' } }, 'metadata.name'],
    ['a namespace', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'a', namespace: 'b' } }, 'metadata.namespace'],
    ['labels not a map', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'a', labels: ['x'] } }, 'metadata.labels'],
    ['metadata not an object', { apiVersion: 'v1', kind: 'Namespace', metadata: 'a' }, 'metadata'],
  ];
  it.each(bad)('rejects %s at its path', (_name, doc, field) => {
    expect(() => validateObject(doc)).toThrow(expect.objectContaining({ field }));
  });
});

describe('kinds', () => {
  it('knows every kind with its apiVersion and scope, and checks the apiVersion', () => {
    expect(supportedKinds).toEqual(['Namespace', 'Pod', 'Node', 'Service', 'EndpointSlice', 'NetworkPolicy', 'ClusterNetworkPolicy', 'KelpNetworkPolicy']);
    const want: Record<string, [string, boolean]> = {
      Namespace: ['v1', false],
      Pod: ['v1', true],
      Node: ['v1', false],
      Service: ['v1', true],
      EndpointSlice: ['discovery.k8s.io/v1', true],
      NetworkPolicy: ['networking.k8s.io/v1', true],
      ClusterNetworkPolicy: ['policy.networking.k8s.io/v1alpha2', false],
      KelpNetworkPolicy: ['policy.kelp.dev/v1alpha1', true],
    };
    for (const kind of supportedKinds) {
      expect(kindInfo(kind)).toEqual({ apiVersion: want[kind][0], namespaced: want[kind][1] });
      const wrong = want[kind][0] === 'v1' ? 'apps/v1' : 'v1';
      expect(() => validateObject({ apiVersion: wrong, kind, metadata: { name: 'a' } })).toThrow(expect.objectContaining({ field: 'apiVersion' }));
    }
    expect(() => validateObject({ apiVersion: 'discovery.k8s.io/v1beta1', kind: 'EndpointSlice', metadata: { name: 'a' } })).toThrow(/^apiVersion: "discovery.k8s.io\/v1beta1" is not supported for EndpointSlice \(expected "discovery.k8s.io\/v1"\)$/);
    expect(() => validateObject({ apiVersion: 'v1', kind: 'Endpoints', metadata: { name: 'a' } })).toThrow(/^kind: "Endpoints" is not supported \(supported: Namespace, Pod, Node, Service, EndpointSlice, NetworkPolicy, ClusterNetworkPolicy, KelpNetworkPolicy\)$/);
    expect(() => validateObject(null)).toThrow(expect.objectContaining({ field: '(document)' }));
  });

  it('keys and names objects as kubectl does', () => {
    expect(objectKey({ kind: 'Node', metadata: { name: 'n' } })).toBe('Node//n');
    expect(objectRef({ kind: 'Service', metadata: { name: 's', namespace: 'x' } })).toBe('Service/x/s');
    expect(IMPLICIT_NAMESPACES.has('kube-system')).toBe(true);
  });
});
