import { describe, expect, it } from 'vitest';
import { namedPort, PodObject, validateObject } from '../../src/sources/objects';

// As `kubectl get pod -o json` prints it (trimmed of nothing kelp must tolerate).
const API_POD = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: {
    annotations: { 'kubectl.kubernetes.io/restartedAt': '2025-01-10T12:00:00Z' },
    creationTimestamp: '2025-01-10T12:00:05Z',
    generateName: 'web-7d4b9c8f6d-',
    labels: { app: 'web', 'pod-template-hash': '7d4b9c8f6d' },
    managedFields: [
      {
        apiVersion: 'v1',
        fieldsType: 'FieldsV1',
        fieldsV1: { 'f:metadata': { 'f:generateName': {}, 'f:labels': { '.': {}, 'f:app': {} } } },
        manager: 'kube-controller-manager',
        operation: 'Update',
        time: '2025-01-10T12:00:05Z',
      },
    ],
    name: 'web-7d4b9c8f6d-x2x9k',
    namespace: 'shop',
    ownerReferences: [{ apiVersion: 'apps/v1', blockOwnerDeletion: true, controller: true, kind: 'ReplicaSet', name: 'web-7d4b9c8f6d', uid: '1f7d1c2e-8d0f-4c55-a8a5-0d2b1f9a6c01' }],
    resourceVersion: '48213',
    uid: '5b0c5f0e-3a52-4c39-9a8e-3f1f3c2d8a11',
  },
  spec: {
    containers: [
      {
        image: 'nginx:1.27',
        imagePullPolicy: 'IfNotPresent',
        name: 'nginx',
        ports: [
          { containerPort: 80, name: 'http', protocol: 'TCP' },
          { containerPort: 9113, name: 'metrics', protocol: 'TCP' },
        ],
        resources: {},
        terminationMessagePath: '/dev/termination-log',
        terminationMessagePolicy: 'File',
        volumeMounts: [{ mountPath: '/var/run/secrets/kubernetes.io/serviceaccount', name: 'kube-api-access-abcde', readOnly: true }],
      },
      { image: 'busybox', name: 'sidecar', ports: [{ containerPort: 5353, name: 'dns', protocol: 'UDP' }] },
    ],
    dnsPolicy: 'ClusterFirst',
    enableServiceLinks: true,
    nodeName: 'node-a',
    preemptionPolicy: 'PreemptLowerPriority',
    priority: 0,
    restartPolicy: 'Always',
    schedulerName: 'default-scheduler',
    securityContext: {},
    serviceAccountName: 'default',
    terminationGracePeriodSeconds: 30,
    tolerations: [{ effect: 'NoExecute', key: 'node.kubernetes.io/not-ready', operator: 'Exists', tolerationSeconds: 300 }],
    volumes: [{ name: 'kube-api-access-abcde', projected: { defaultMode: 420, sources: [{ serviceAccountToken: { expirationSeconds: 3607, path: 'token' } }] } }],
  },
  status: {
    conditions: [{ lastProbeTime: null, lastTransitionTime: '2025-01-10T12:00:07Z', status: 'True', type: 'Ready' }],
    containerStatuses: [{ containerID: 'containerd://0f1e', image: 'docker.io/library/nginx:1.27', name: 'nginx', ready: true, restartCount: 0, started: true, state: { running: { startedAt: '2025-01-10T12:00:06Z' } } }],
    hostIP: '172.18.0.2',
    hostIPs: [{ ip: '172.18.0.2' }],
    phase: 'Running',
    podIP: '10.244.1.17',
    podIPs: [{ ip: '10.244.1.17' }, { ip: 'fd00:10:244:1::11' }],
    qosClass: 'BestEffort',
    startTime: '2025-01-10T12:00:05Z',
  },
};

const rejects = (base: object) => (_name: string, mutate: (o: any) => void, field: string) => {
  const o = structuredClone(base);
  mutate(o);
  expect(() => validateObject(o)).toThrow(expect.objectContaining({ field }));
};

describe('Pod', () => {
  it('accepts a Pod as the API prints it and keeps what kelp uses', () => {
    const p = validateObject(API_POD) as PodObject;
    expect(p).toEqual({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        name: 'web-7d4b9c8f6d-x2x9k',
        namespace: 'shop',
        uid: '5b0c5f0e-3a52-4c39-9a8e-3f1f3c2d8a11',
        resourceVersion: '48213',
        labels: { app: 'web', 'pod-template-hash': '7d4b9c8f6d' },
        annotations: { 'kubectl.kubernetes.io/restartedAt': '2025-01-10T12:00:00Z' },
      },
      spec: {
        nodeName: 'node-a',
        containers: [
          {
            name: 'nginx',
            ports: [
              { containerPort: 80, protocol: 'TCP', name: 'http' },
              { containerPort: 9113, protocol: 'TCP', name: 'metrics' },
            ],
          },
          { name: 'sidecar', ports: [{ containerPort: 5353, protocol: 'UDP', name: 'dns' }] },
        ],
      },
      status: { phase: 'Running', podIP: '10.244.1.17', podIPs: [{ ip: '10.244.1.17' }, { ip: 'fd00:10:244:1::11' }] },
    });
    expect(namedPort(p, 'metrics', 'TCP')).toBe(9113);
    expect(namedPort(p, 'dns', 'UDP')).toBe(5353);
    expect(namedPort(p, 'dns', 'TCP')).toBeUndefined();
  });

  it('validates its own output to the same object (kelp apply stores this form)', () => {
    const p = validateObject(API_POD);
    expect(validateObject(JSON.parse(JSON.stringify(p)))).toEqual(p);
  });

  it('defaults and normalises a manifest: namespace, protocol, podIPs from podIP, canonical addresses', () => {
    const p = validateObject({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'a' },
      spec: { hostNetwork: true, containers: [{ name: 'c', ports: [{ containerPort: 53 }] }] },
      status: { podIP: 'FD00:0:0::1' },
    }) as PodObject;
    expect(p.metadata.namespace).toBe('default');
    expect(p.spec).toEqual({ hostNetwork: true, containers: [{ name: 'c', ports: [{ containerPort: 53, protocol: 'TCP' }] }] });
    expect(p.status).toEqual({ podIP: 'fd00::1', podIPs: [{ ip: 'fd00::1' }] });
  });

  it('takes podIP over a podIPs list that disagrees, as the API server converts v1', () => {
    const o = structuredClone(API_POD);
    o.status.podIP = '10.244.1.99';
    expect((validateObject(o) as PodObject).status?.podIPs).toEqual([{ ip: '10.244.1.99' }]);
  });

  it('accepts a Pod without spec or status (standalone manifests)', () => {
    expect(validateObject({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'a', namespace: 'x' } })).toEqual({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'a', namespace: 'x', labels: {}, annotations: {} },
      spec: { containers: [] },
    });
  });

  const bad: Array<[string, (o: any) => void, string]> = [
    ['name not a subdomain', (o) => (o.metadata.name = 'Web'), 'metadata.name'],
    ['name over 253', (o) => (o.metadata.name = 'a'.repeat(254)), 'metadata.name'],
    ['namespace not a label', (o) => (o.metadata.namespace = 'a.b'), 'metadata.namespace'],
    ['generation negative', (o) => (o.metadata.generation = -1), 'metadata.generation'],
    ['resourceVersion a number', (o) => (o.metadata.resourceVersion = 5), 'metadata.resourceVersion'],
    ['annotation key invalid', (o) => (o.metadata.annotations['bad key'] = 'x'), 'metadata.annotations["bad key"]'],
    ['annotations over 256 KiB', (o) => (o.metadata.annotations.big = 'x'.repeat(256 * 1024)), 'metadata.annotations'],
    ['nodeName invalid', (o) => (o.spec.nodeName = 'Node_A'), 'spec.nodeName'],
    ['hostNetwork a string', (o) => (o.spec.hostNetwork = 'true'), 'spec.hostNetwork'],
    ['containers not a list', (o) => (o.spec.containers = {}), 'spec.containers'],
    ['container without name', (o) => delete o.spec.containers[1].name, 'spec.containers[1].name'],
    ['container name not a label', (o) => (o.spec.containers[1].name = 'side.car'), 'spec.containers[1].name'],
    ['duplicate container name', (o) => (o.spec.containers[1].name = 'nginx'), 'spec.containers[1].name'],
    ['containerPort 0', (o) => (o.spec.containers[0].ports[1].containerPort = 0), 'spec.containers[0].ports[1].containerPort'],
    ['containerPort missing', (o) => delete o.spec.containers[0].ports[1].containerPort, 'spec.containers[0].ports[1].containerPort'],
    ['containerPort as string', (o) => (o.spec.containers[0].ports[1].containerPort = '80'), 'spec.containers[0].ports[1].containerPort'],
    ['protocol ICMP', (o) => (o.spec.containers[1].ports[0].protocol = 'ICMP'), 'spec.containers[1].ports[0].protocol'],
    ['protocol lowercase', (o) => (o.spec.containers[1].ports[0].protocol = 'udp'), 'spec.containers[1].ports[0].protocol'],
    ['port name over 15', (o) => (o.spec.containers[0].ports[0].name = 'a234567890123456'), 'spec.containers[0].ports[0].name'],
    ['port name without a letter', (o) => (o.spec.containers[0].ports[0].name = '8080'), 'spec.containers[0].ports[0].name'],
    ['port name with --', (o) => (o.spec.containers[0].ports[0].name = 'my--port'), 'spec.containers[0].ports[0].name'],
    ['port name ending in -', (o) => (o.spec.containers[0].ports[0].name = 'http-'), 'spec.containers[0].ports[0].name'],
    ['port name uppercase', (o) => (o.spec.containers[0].ports[0].name = 'HTTP'), 'spec.containers[0].ports[0].name'],
    ['duplicate port name in a container', (o) => (o.spec.containers[0].ports[1].name = 'http'), 'spec.containers[0].ports[1].name'],
    ['phase unknown', (o) => (o.status.phase = 'Sleeping'), 'status.phase'],
    ['podIPs entry invalid', (o) => (o.status.podIPs[1].ip = 'fd00::g'), 'status.podIPs[1]'],
    ['podIPs entry with leading zeros', (o) => (o.status.podIPs[1] = { ip: '10.244.01.2' }), 'status.podIPs[1]'],
    ['podIP invalid', (o) => ((o.status.podIP = '10.244.1'), (o.status.podIPs = [])), 'status.podIPs[0]'],
    ['two IPv4 podIPs', (o) => (o.status.podIPs[1].ip = '10.244.1.18'), 'status.podIPs'],
    ['three podIPs', (o) => o.status.podIPs.push({ ip: '10.0.0.1' }), 'status.podIPs'],
    ['status not an object', (o) => (o.status = 'Running'), 'status'],
  ];
  it.each(bad)('rejects %s at its path', rejects(API_POD));
});
