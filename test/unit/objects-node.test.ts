import { describe, expect, it } from 'vitest';
import { LABEL_ZONE, nodeAddress, NodeObject, validateObject } from '../../src/sources/objects';

// As `kubectl get node -o json` prints it on a dual-stack kind cluster.
const API_NODE = {
  apiVersion: 'v1',
  kind: 'Node',
  metadata: {
    annotations: {
      'kubeadm.alpha.kubernetes.io/cri-socket': 'unix:///run/containerd/containerd.sock',
      'node.alpha.kubernetes.io/ttl': '0',
      'volumes.kubernetes.io/controller-managed-attach-detach': 'true',
    },
    creationTimestamp: '2025-01-10T11:58:00Z',
    labels: {
      'beta.kubernetes.io/arch': 'amd64',
      'beta.kubernetes.io/os': 'linux',
      'kubernetes.io/arch': 'amd64',
      'kubernetes.io/hostname': 'node-a',
      'kubernetes.io/os': 'linux',
      'node-role.kubernetes.io/control-plane': '',
      'topology.kubernetes.io/region': 'eu-west-1',
      'topology.kubernetes.io/zone': 'eu-west-1a',
    },
    managedFields: [{ apiVersion: 'v1', fieldsType: 'FieldsV1', fieldsV1: { 'f:spec': { 'f:podCIDR': {} } }, manager: 'kube-controller-manager', operation: 'Update', time: '2025-01-10T11:58:20Z' }],
    name: 'node-a',
    resourceVersion: '51200',
    uid: '0c3d1a8e-9f2b-4e4f-8a55-7c1e2d3f4a5b',
  },
  spec: {
    podCIDR: '10.244.1.0/24',
    podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'],
    providerID: 'kind://docker/kind/node-a',
    taints: [{ effect: 'NoSchedule', key: 'node-role.kubernetes.io/control-plane' }],
  },
  status: {
    addresses: [
      { address: '172.18.0.2', type: 'InternalIP' },
      { address: 'fc00:f853:ccd:e793::2', type: 'InternalIP' },
      { address: 'node-a', type: 'Hostname' },
    ],
    allocatable: { cpu: '8', memory: '16Gi', pods: '110' },
    capacity: { cpu: '8', memory: '16Gi', pods: '110' },
    conditions: [{ lastHeartbeatTime: '2025-01-10T12:30:00Z', lastTransitionTime: '2025-01-10T11:58:30Z', message: 'kubelet is posting ready status', reason: 'KubeletReady', status: 'True', type: 'Ready' }],
    daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
    nodeInfo: { architecture: 'amd64', containerRuntimeVersion: 'containerd://1.7.18', kernelVersion: '6.18.0', kubeletVersion: 'v1.32.2', operatingSystem: 'linux' },
  },
};

const rejects = (base: object) => (_name: string, mutate: (o: any) => void, field: string) => {
  const o = structuredClone(base);
  mutate(o);
  expect(() => validateObject(o)).toThrow(expect.objectContaining({ field }));
};

describe('Node', () => {
  it('accepts a Node as the API prints it and keeps what kelp uses', () => {
    const n = validateObject(API_NODE) as NodeObject;
    expect(n.metadata).toEqual({
      name: 'node-a',
      uid: '0c3d1a8e-9f2b-4e4f-8a55-7c1e2d3f4a5b',
      resourceVersion: '51200',
      labels: API_NODE.metadata.labels,
      annotations: API_NODE.metadata.annotations,
    });
    expect(n.spec).toEqual({ podCIDR: '10.244.1.0/24', podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'] });
    expect(n.status.addresses).toEqual(API_NODE.status.addresses.map(({ type, address }) => ({ type, address })));
    expect(n.metadata.labels[LABEL_ZONE]).toBe('eu-west-1a');
    expect(nodeAddress(n, 'InternalIP')).toBe('172.18.0.2');
    expect(nodeAddress(n, 'ExternalIP')).toBeUndefined();
    expect(validateObject(JSON.parse(JSON.stringify(n)))).toEqual(n);
  });

  it('normalises pod CIDRs as the API server converts v1: podCIDR seeds or overrides podCIDRs; host bits cleared', () => {
    const v = (spec: object) => (validateObject({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n' }, spec }) as NodeObject).spec;
    expect(v({ podCIDR: '10.244.2.7/24' })).toEqual({ podCIDR: '10.244.2.0/24', podCIDRs: ['10.244.2.0/24'] });
    expect(v({ podCIDRs: ['fd00:0:0:1::/64'] })).toEqual({ podCIDR: 'fd00:0:0:1::/64', podCIDRs: ['fd00:0:0:1::/64'] });
    expect(v({ podCIDR: '10.9.0.0/16', podCIDRs: ['10.244.1.0/24', 'fd00::/64'] })).toEqual({ podCIDR: '10.9.0.0/16', podCIDRs: ['10.9.0.0/16'] });
    expect(v({})).toEqual({ podCIDRs: [] });
    expect((validateObject({ apiVersion: 'v1', kind: 'Node', metadata: { name: 'n' } }) as NodeObject).status).toEqual({ addresses: [] });
  });

  const bad: Array<[string, (o: any) => void, string]> = [
    ['namespace set', (o) => (o.metadata.namespace = 'default'), 'metadata.namespace'],
    ['name not a subdomain', (o) => (o.metadata.name = 'node_a'), 'metadata.name'],
    ['label value invalid', (o) => (o.metadata.labels[LABEL_ZONE] = 'eu west'), `metadata.labels["${LABEL_ZONE}"]`],
    ['podCIDRs entry not a CIDR', (o) => (o.spec.podCIDRs[1] = 'fd00:10:244:1::'), 'spec.podCIDRs[1]'],
    ['podCIDRs entry prefix too long', (o) => (o.spec.podCIDRs[1] = 'fd00::/129'), 'spec.podCIDRs[1]'],
    ['podCIDRs entry not a string', (o) => (o.spec.podCIDRs[1] = 64), 'spec.podCIDRs[1]'],
    ['podCIDR invalid (reported as podCIDRs[0], as the API server does)', (o) => ((o.spec.podCIDR = '10.244.1.0/33'), delete o.spec.podCIDRs), 'spec.podCIDRs[0]'],
    ['two IPv4 podCIDRs', (o) => (o.spec.podCIDRs[1] = '10.245.0.0/24'), 'spec.podCIDRs'],
    ['the same podCIDR twice', (o) => (o.spec.podCIDRs[1] = '10.244.1.0/24'), 'spec.podCIDRs'],
    ['three podCIDRs', (o) => o.spec.podCIDRs.push('10.1.0.0/16'), 'spec.podCIDRs'],
    ['address type unknown', (o) => (o.status.addresses[2].type = 'PublicIP'), 'status.addresses[2].type'],
    ['InternalIP not an address', (o) => (o.status.addresses[1].address = 'node-a'), 'status.addresses[1].address'],
    ['address missing', (o) => delete o.status.addresses[2].address, 'status.addresses[2].address'],
    ['address empty', (o) => (o.status.addresses[2].address = ''), 'status.addresses[2].address'],
    ['addresses not a list', (o) => (o.status.addresses = { type: 'InternalIP' }), 'status.addresses'],
  ];
  it.each(bad)('rejects %s at its path', rejects(API_NODE));
});
