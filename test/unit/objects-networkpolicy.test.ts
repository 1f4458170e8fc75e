import { describe, expect, it } from 'vitest';
import { LABEL_METADATA_NAME, NetworkPolicyObject, validateObject } from '../../src/sources/objects';

// As `kubectl get networkpolicy -o json` prints them.
const API_POLICY = {
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: {
    annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}\n' },
    creationTimestamp: '2025-01-10T12:10:00Z',
    generation: 3,
    managedFields: [{ apiVersion: 'networking.k8s.io/v1', fieldsType: 'FieldsV1', fieldsV1: { 'f:spec': { 'f:podSelector': {} } }, manager: 'kubectl-client-side-apply', operation: 'Update', time: '2025-01-10T12:10:00Z' }],
    name: 'web-allow',
    namespace: 'shop',
    resourceVersion: '49000',
    uid: '90000000-0000-4000-8000-000000000003',
  },
  spec: {
    egress: [
      {
        ports: [
          { port: 53, protocol: 'UDP' },
          { port: 53, protocol: 'TCP' },
        ],
        to: [{ namespaceSelector: { matchLabels: { [LABEL_METADATA_NAME]: 'kube-system' } }, podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } } }],
      },
      { ports: [{ endPort: 32768, port: 32000, protocol: 'TCP' }], to: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.96.0.0/12', '10.244.1.0/24'] } }] },
    ],
    ingress: [
      {
        from: [{ podSelector: { matchExpressions: [{ key: 'role', operator: 'In', values: ['frontend', 'gateway'] }] } }, { namespaceSelector: {} }, { ipBlock: { cidr: '2001:db8::/32' } }],
        ports: [{ port: 'http', protocol: 'TCP' }, { protocol: 'SCTP' }],
      },
      {},
    ],
    podSelector: { matchLabels: { app: 'web' } },
    policyTypes: ['Ingress', 'Egress'],
  },
};

// A default deny, as the API prints it.
const API_DENY = {
  apiVersion: 'networking.k8s.io/v1',
  kind: 'NetworkPolicy',
  metadata: { generation: 1, name: 'default-deny', namespace: 'shop', resourceVersion: '49001', uid: 'u' },
  spec: { podSelector: {}, policyTypes: ['Ingress'] },
};

const rejects = (base: object) => (_name: string, mutate: (o: any) => void, field: string) => {
  const o = structuredClone(base);
  mutate(o);
  expect(() => validateObject(o)).toThrow(expect.objectContaining({ field }));
};

const policy = (spec: object) => validateObject({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'p' }, spec }) as NetworkPolicyObject;
const everything = { matchLabels: {}, matchExpressions: [] };

describe('NetworkPolicy', () => {
  it('accepts a policy as the API prints it and normalises it', () => {
    const p = validateObject(API_POLICY) as NetworkPolicyObject;
    expect(p.metadata).toMatchObject({ name: 'web-allow', namespace: 'shop', generation: 3, resourceVersion: '49000' });
    expect(p.spec).toEqual({
      podSelector: { matchLabels: { app: 'web' }, matchExpressions: [] },
      policyTypes: ['Ingress', 'Egress'],
      ingress: [
        {
          from: [
            { podSelector: { matchLabels: {}, matchExpressions: [{ key: 'role', operator: 'In', values: ['frontend', 'gateway'] }] } },
            { namespaceSelector: everything },
            { ipBlock: { cidr: '2001:db8::/32', except: [] } },
          ],
          ports: [
            { protocol: 'TCP', port: 'http' },
            { protocol: 'SCTP' },
          ],
        },
        { from: [], ports: [] },
      ],
      egress: [
        {
          to: [{ podSelector: { matchLabels: { 'k8s-app': 'kube-dns' }, matchExpressions: [] }, namespaceSelector: { matchLabels: { [LABEL_METADATA_NAME]: 'kube-system' }, matchExpressions: [] } }],
          ports: [
            { protocol: 'UDP', port: 53 },
            { protocol: 'TCP', port: 53 },
          ],
        },
        { to: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['10.96.0.0/12', '10.244.1.0/24'] } }], ports: [{ protocol: 'TCP', port: 32000, endPort: 32768 }] },
      ],
    });
    expect(validateObject(API_DENY)).toMatchObject({ spec: { podSelector: everything, policyTypes: ['Ingress'], ingress: [], egress: [] } });
  });

  it('validates its own output to the same object (kelp apply stores this form)', () => {
    for (const doc of [API_POLICY, API_DENY]) {
      const p = validateObject(doc);
      expect(validateObject(JSON.parse(JSON.stringify(p)))).toEqual(p);
    }
  });

  it('defaults policyTypes and protocols as the API server does', () => {
    expect(policy({ podSelector: {} }).spec.policyTypes).toEqual(['Ingress']);
    expect(policy({ podSelector: {}, egress: [] }).spec.policyTypes).toEqual(['Ingress']);
    expect(policy({ podSelector: {}, egress: [{}] }).spec.policyTypes).toEqual(['Ingress', 'Egress']);
    expect(policy({ podSelector: {}, egress: [{}], policyTypes: ['Egress'] }).spec.policyTypes).toEqual(['Egress']);
    expect(policy({ podSelector: {}, policyTypes: ['Egress', 'Egress'] }).spec.policyTypes).toEqual(['Egress']);
    expect(policy({ podSelector: {}, ingress: [{ ports: [{ port: 80 }] }] }).spec.ingress[0].ports).toEqual([{ protocol: 'TCP', port: 80 }]);
  });

  it('keeps an absent selector in a peer absent (it means the policy namespace, not every one) and clears host bits', () => {
    const p = policy({ podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { a: 'b' } }, namespaceSelector: null }, { ipBlock: { cidr: '192.168.7.9/16', except: ['192.168.7.0/24'] } }] }] });
    expect(p.spec.ingress[0].from).toEqual([{ podSelector: { matchLabels: { a: 'b' }, matchExpressions: [] } }, { ipBlock: { cidr: '192.168.0.0/16', except: ['192.168.7.0/24'] } }]);
  });

  const bad: Array<[string, (o: any) => void, string]> = [
    ['no spec', (o) => delete o.spec, 'spec'],
    ['no podSelector', (o) => delete o.spec.podSelector, 'spec.podSelector'],
    ['podSelector bad operator', (o) => (o.spec.podSelector = { matchExpressions: [{ key: 'a', operator: 'Equals', values: ['b'] }] }), 'spec.podSelector.matchExpressions[0].operator'],
    ['name invalid', (o) => (o.metadata.name = 'Web-Allow'), 'metadata.name'],
    ['policyTypes unknown', (o) => (o.spec.policyTypes[1] = 'Both'), 'spec.policyTypes[1]'],
    ['policyTypes empty string', (o) => (o.spec.policyTypes[0] = ''), 'spec.policyTypes[0]'],
    ['three policyTypes', (o) => o.spec.policyTypes.push('Ingress'), 'spec.policyTypes'],
    ['empty peer', (o) => (o.spec.ingress[0].from[1] = {}), 'spec.ingress[0].from[1]'],
    ['peer with null selectors only', (o) => (o.spec.ingress[0].from[1] = { podSelector: null, namespaceSelector: null }), 'spec.ingress[0].from[1]'],
    ['ipBlock with podSelector', (o) => (o.spec.ingress[0].from[2].podSelector = {}), 'spec.ingress[0].from[2]'],
    ['ipBlock with namespaceSelector', (o) => (o.spec.egress[1].to[0].namespaceSelector = { matchLabels: { a: 'b' } }), 'spec.egress[1].to[0]'],
    ['ipBlock without cidr', (o) => delete o.spec.ingress[0].from[2].ipBlock.cidr, 'spec.ingress[0].from[2].ipBlock.cidr'],
    ['ipBlock cidr invalid', (o) => (o.spec.ingress[0].from[2].ipBlock.cidr = '2001:db8::'), 'spec.ingress[0].from[2].ipBlock.cidr'],
    ['except invalid', (o) => (o.spec.egress[1].to[0].ipBlock.except[1] = '10.244.1.0/40'), 'spec.egress[1].to[0].ipBlock.except[1]'],
    ['except outside cidr', (o) => (o.spec.egress[1].to[0].ipBlock.except[1] = '192.168.0.0/24'), 'spec.egress[1].to[0].ipBlock.except[1]'],
    ['except equal to cidr', (o) => (o.spec.egress[1].to[0].ipBlock.except[0] = '10.0.0.0/8'), 'spec.egress[1].to[0].ipBlock.except[0]'],
    ['except wider than cidr', (o) => (o.spec.egress[1].to[0].ipBlock.except[0] = '10.0.0.0/7'), 'spec.egress[1].to[0].ipBlock.except[0]'],
    ['except of the other family', (o) => (o.spec.egress[1].to[0].ipBlock.except[0] = '::a00:0/104'), 'spec.egress[1].to[0].ipBlock.except[0]'],
    ['namespaceSelector bad label', (o) => (o.spec.egress[0].to[0].namespaceSelector.matchLabels = { 'a b': 'c' }), 'spec.egress[0].to[0].namespaceSelector.matchLabels["a b"]'],
    ['peer podSelector bad value', (o) => (o.spec.ingress[0].from[0].podSelector.matchExpressions[0].values[1] = 'gate way'), 'spec.ingress[0].from[0].podSelector.matchExpressions[0].values[1]'],
    ['port protocol unknown', (o) => (o.spec.ingress[0].ports[1].protocol = 'ICMP'), 'spec.ingress[0].ports[1].protocol'],
    ['port 0', (o) => (o.spec.egress[0].ports[0].port = 0), 'spec.egress[0].ports[0].port'],
    ['port name invalid', (o) => (o.spec.ingress[0].ports[0].port = 'HTTP'), 'spec.ingress[0].ports[0].port'],
    ['port digits as a string', (o) => (o.spec.ingress[0].ports[0].port = '80'), 'spec.ingress[0].ports[0].port'],
    ['endPort below port', (o) => (o.spec.egress[1].ports[0].endPort = 31999), 'spec.egress[1].ports[0].endPort'],
    ['endPort over 65535', (o) => (o.spec.egress[1].ports[0].endPort = 65536), 'spec.egress[1].ports[0].endPort'],
    ['endPort with a named port', (o) => (o.spec.ingress[0].ports[0].endPort = 90), 'spec.ingress[0].ports[0].endPort'],
    ['endPort without port', (o) => (o.spec.ingress[0].ports[1].endPort = 90), 'spec.ingress[0].ports[1].endPort'],
    ['endPort a string', (o) => (o.spec.egress[1].ports[0].endPort = '32768'), 'spec.egress[1].ports[0].endPort'],
    ['ingress not a list', (o) => (o.spec.ingress = {}), 'spec.ingress'],
    ['rule not an object', (o) => (o.spec.egress[1] = 'allow'), 'spec.egress[1]'],
    ['from not a list', (o) => (o.spec.ingress[1].from = { podSelector: {} }), 'spec.ingress[1].from'],
  ];
  it.each(bad)('rejects %s at its path', rejects(API_POLICY));
});
