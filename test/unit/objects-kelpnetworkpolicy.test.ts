import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { KelpNetworkPolicyObject, ManifestError, validateObject } from '../../src/sources/objects';
import { ManifestDir, parseManifests } from '../../src/sources/manifests';
import { ObjectStore } from '../../src/sources/store';
import { silentLogger } from '../../src/log';
import { cleanupAll, tempDir } from '../support/netns';

afterAll(cleanupAll);

const EXAMPLES = path.join(__dirname, '../../deploy/kubernetes/examples/kelpnetworkpolicies.yaml');

const API_POLICY = {
  apiVersion: 'policy.kelp.dev/v1alpha1',
  kind: 'KelpNetworkPolicy',
  metadata: { name: 'db', namespace: 'shop', generation: 4, labels: { team: 'storefront' } },
  spec: {
    subject: { podSelector: { matchLabels: { app: 'db' } } },
    ingress: [
      { name: 'no-batch', action: 'Deny', from: [{ namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'batch' } } }] },
      {
        action: 'Accept',
        from: [{ pods: { podSelector: { matchLabels: { app: 'api' } } } }],
        protocols: [{ destinationNamedPort: 'postgres' }, { sctp: { destinationPort: { number: 9 } } }],
      },
    ],
    egress: [{ name: 'outside', action: 'Deny', to: [{ networks: ['192.168.1.1/24'] }], protocols: [{ tcp: { destinationPort: { range: { start: 1, end: 1024 } } } }] }],
  },
};

const EMPTY = { matchLabels: {}, matchExpressions: [] };
const NORMALISED: KelpNetworkPolicyObject = {
  apiVersion: 'policy.kelp.dev/v1alpha1',
  kind: 'KelpNetworkPolicy',
  metadata: { name: 'db', namespace: 'shop', generation: 4, labels: { team: 'storefront' }, annotations: {} },
  spec: {
    subject: { podSelector: { matchLabels: { app: 'db' }, matchExpressions: [] } },
    ingress: [
      { name: 'no-batch', action: 'Deny', peers: [{ namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'batch' }, matchExpressions: [] } }], protocols: [] },
      {
        name: '',
        action: 'Accept',
        peers: [{ pods: { namespaceSelector: EMPTY, podSelector: { matchLabels: { app: 'api' }, matchExpressions: [] } } }],
        protocols: [{ namedPort: 'postgres' }, { protocol: 'SCTP', port: { number: 9 } }],
      },
    ],
    egress: [{ name: 'outside', action: 'Deny', peers: [{ networks: ['192.168.1.0/24'] }], protocols: [{ protocol: 'TCP', port: { range: { start: 1, end: 1024 } } }] }],
  },
};

const clone = <T>(o: T): T => structuredClone(o);

function refusal(mutate: (o: any) => void): { field: string; reason: string } {
  const o: any = clone(API_POLICY);
  mutate(o);
  try {
    validateObject(o);
  } catch (e) {
    if (e instanceof ManifestError) return { field: e.field, reason: e.reason };
    throw e;
  }
  throw new Error('accepted');
}

describe('KelpNetworkPolicy', () => {
  it('normalises an API object, in the rule shapes ClusterNetworkPolicy has', () => {
    expect(validateObject(API_POLICY)).toEqual(NORMALISED);
  });

  it('a normalised object validates to itself, through JSON as `kelp apply` stores it', () => {
    expect(validateObject(JSON.parse(JSON.stringify(NORMALISED)))).toEqual(NORMALISED);
  });

  it('a policy without a namespace is in default, as kubectl puts it; no rules is no rules', () => {
    const o = validateObject({ apiVersion: 'policy.kelp.dev/v1alpha1', kind: 'KelpNetworkPolicy', metadata: { name: 'p' }, spec: { subject: { podSelector: {} } } });
    expect(o).toMatchObject({ metadata: { namespace: 'default' }, spec: { subject: { podSelector: EMPTY }, ingress: [], egress: [] } });
  });

  it("the project's examples are valid, and stay so normalised", () => {
    const docs = parseAllDocuments(readFileSync(EXAMPLES, 'utf8')).map((d) => d.toJS());
    expect(docs.length).toBeGreaterThan(1);
    for (const doc of docs) {
      const o = validateObject(doc);
      expect(o.kind).toBe('KelpNetworkPolicy');
      expect(validateObject(JSON.parse(JSON.stringify(o)))).toEqual(o);
    }
    // As the manifest directory and `kelp apply` read a file.
    expect(parseManifests(readFileSync(EXAMPLES, 'utf8'), EXAMPLES).map((o) => o.metadata.name)).toEqual(['no-metadata-server', 'db-ingress']);
  });

  it('an unknown peer fails closed as in ClusterNetworkPolicy', () => {
    const o: any = clone(API_POLICY);
    o.spec.egress[0].to.push({ nodes: {} });
    expect((validateObject(o) as KelpNetworkPolicyObject).spec.egress[0].peers).toEqual([{ networks: ['192.168.1.0/24'] }, { unknown: true }]);
  });

  it('a named port to pods is fine in egress', () => {
    const o: any = clone(API_POLICY);
    o.spec.egress[0].to = [{ pods: { podSelector: {} } }];
    o.spec.egress[0].protocols = [{ destinationNamedPort: 'dns' }];
    expect((validateObject(o) as KelpNetworkPolicyObject).spec.egress[0].protocols).toEqual([{ namedPort: 'dns' }]);
  });

  const invalid: Array<[string, (o: any) => void, string, RegExp]> = [
    ['no spec', (o) => delete o.spec, 'spec', /required, missing/],
    ['no subject', (o) => delete o.spec.subject, 'spec.subject', /required, missing/],
    ['a subject without podSelector', (o) => (o.spec.subject = {}), 'spec.subject.podSelector', /required, missing/],
    ["a ClusterNetworkPolicy subject", (o) => (o.spec.subject = { namespaces: {} }), 'spec.subject.podSelector', /required, missing/],
    ['a bad subject expression', (o) => (o.spec.subject.podSelector = { matchExpressions: [{ key: 'app', operator: 'NotIn', values: [] }] }), 'spec.subject.podSelector.matchExpressions[0].values', /must be specified/],
    ['a bad namespace', (o) => (o.metadata.namespace = 'Shop'), 'metadata.namespace', /RFC 1123 label/],
    ['an audit annotation that is not a boolean', (o) => (o.metadata.annotations = { 'policy.kelp.dev/audit': 'on' }), 'metadata.annotations["policy.kelp.dev/audit"]', /"true" or "false"/],
    ['a Pass action', (o) => (o.spec.ingress[0].action = 'Pass'), 'spec.ingress[0].action', /must be one of Accept, Deny, got "Pass"/],
    ['networks in an ingress peer', (o) => (o.spec.ingress[0].from[0] = { networks: ['10.0.0.0/8'] }), 'spec.ingress[0].from[0].networks', /egress peer only/],
    ['networks beside another ingress peer field', (o) => (o.spec.ingress[0].from[0].networks = ['10.0.0.0/8']), 'spec.ingress[0].from[0].networks', /egress peer only/],
    ['a named port to networks', (o) => (o.spec.egress[0].protocols = [{ destinationNamedPort: 'https' }]), 'spec.egress[0]', /networks peer cannot use destinationNamedPort/],
    ['an empty to', (o) => (o.spec.egress[0].to = []), 'spec.egress[0].to', /at least 1 item/],
    [
      'a bad label value deep in a peer',
      (o) => (o.spec.ingress[1].from.push({ pods: { podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['ok', 'not ok'] }] } } })),
      'spec.ingress[1].from[1].pods.podSelector.matchExpressions[0].values[1]',
      /label value "not ok" is invalid/,
    ],
    ['a backwards range', (o) => (o.spec.egress[0].protocols[0].tcp.destinationPort.range = { start: 2, end: 1 }), 'spec.egress[0].protocols[0].tcp.destinationPort.range', /must be less than end/],
    ['26 egress rules', (o) => (o.spec.egress = Array.from({ length: 26 }, () => clone(o.spec.egress[0]))), 'spec.egress', /at most 25 items/],
  ];
  it.each(invalid)('refuses %s, naming the field', (_label, mutate, field, reason) => {
    const r = refusal(mutate);
    expect(r.field).toBe(field);
    expect(r.reason).toMatch(reason);
  });

  it('a refused manifest names its file and field, as the manifest directory reports it', () => {
    const bad = clone(API_POLICY);
    bad.spec.ingress[0].action = 'Pass';
    expect(() => parseManifests(JSON.stringify(bad), '/m/db.json')).toThrow('/m/db.json: spec.ingress[0].action: must be one of Accept, Deny, got "Pass"');
  });
});

describe('policies in standalone mode', () => {
  it('load from the manifest directory; a bad edit is refused by field and the last good version kept; a stored normalised object reads back', async () => {
    const dir = tempDir('kelp-policy-manifests-');
    const store = new ObjectStore();
    const md = new ManifestDir(dir, store, silentLogger);
    const cnp = {
      apiVersion: 'policy.networking.k8s.io/v1alpha2',
      kind: 'ClusterNetworkPolicy',
      metadata: { name: 'baseline' },
      spec: { tier: 'Baseline', priority: 1000, subject: { namespaces: {} }, ingress: [{ action: 'Deny', from: [{ namespaces: {} }] }] },
    };
    writeFileSync(path.join(dir, 'cnp.json'), JSON.stringify(cnp));
    writeFileSync(path.join(dir, 'knp.yaml'), readFileSync(EXAMPLES, 'utf8'));
    await md.start();
    try {
      expect(md.problems.size).toBe(0);
      expect(store.get('ClusterNetworkPolicy', undefined, 'baseline')?.spec.ingress[0]).toEqual({ name: '', action: 'Deny', peers: [{ namespaces: EMPTY }], protocols: [] });
      const good = store.get('KelpNetworkPolicy', 'default', 'db-ingress');
      expect(good?.spec.ingress.map((r) => r.action)).toEqual(['Deny', 'Accept']);

      writeFileSync(path.join(dir, 'knp.yaml'), readFileSync(EXAMPLES, 'utf8').replace('action: Deny\n      from:', 'action: Pass\n      from:'));
      await md.scan();
      expect(md.problems.get('knp.yaml')).toMatch(/knp\.yaml#1: spec\.ingress\[0\]\.action: must be one of Accept, Deny, got "Pass"/);
      expect(store.get('KelpNetworkPolicy', 'default', 'db-ingress')).toEqual(good);

      // What `kelp apply` writes: the normalised object as JSON, read back by the next scan.
      writeFileSync(path.join(dir, 'KelpNetworkPolicy_shop_db.json'), JSON.stringify(NORMALISED, null, 2));
      await md.scan();
      expect(md.problems.has('KelpNetworkPolicy_shop_db.json')).toBe(false);
      expect(store.get('KelpNetworkPolicy', 'shop', 'db')).toEqual(NORMALISED);
    } finally {
      await md.stop();
    }
  });
});
