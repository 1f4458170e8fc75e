import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ClusterNetworkPolicyObject, ManifestError, validateObject } from '../../src/sources/objects';
import { parseManifests } from '../../src/sources/manifests';

const EXAMPLES = path.join(__dirname, '../../deploy/kubernetes/examples/clusternetworkpolicies.yaml');

// As `kubectl get cnp -o json` prints one written against the upstream v0.2.0 standard CRD.
const API_POLICY = {
  apiVersion: 'policy.networking.k8s.io/v1alpha2',
  kind: 'ClusterNetworkPolicy',
  metadata: {
    annotations: { 'policy.kelp.dev/audit': 'true' },
    creationTimestamp: '2026-12-01T10:00:00Z',
    generation: 2,
    name: 'sensitive-ns',
    resourceVersion: '812',
    uid: '90000000-0000-4000-8000-000000000011',
  },
  spec: {
    tier: 'Admin',
    priority: 10,
    subject: { namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'sensitive' } } },
    ingress: [
      {
        name: 'pass-monitoring',
        action: 'Pass',
        from: [{ namespaces: { matchLabels: { team: 'monitoring' } } }],
        protocols: [{ tcp: { destinationPort: { number: 9090 } } }, { destinationNamedPort: 'metrics' }],
      },
      { action: 'Deny', from: [{ namespaces: {} }] },
    ],
    egress: [
      {
        name: 'dns',
        action: 'Accept',
        to: [{ pods: { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } }, podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } } } }],
        protocols: [{ udp: { destinationPort: { number: 53 } } }, { tcp: { destinationPort: { range: { start: 53, end: 54 } } } }],
      },
      { name: 'outside', action: 'Deny', to: [{ networks: ['10.0.0.7/8', '2001:db8::/32', '10.0.0.0/8'] }, { pods: { podSelector: {} } }] },
    ],
  },
  status: { conditions: [] },
};

const NORMALISED: ClusterNetworkPolicyObject = {
  apiVersion: 'policy.networking.k8s.io/v1alpha2',
  kind: 'ClusterNetworkPolicy',
  metadata: {
    name: 'sensitive-ns',
    uid: '90000000-0000-4000-8000-000000000011',
    resourceVersion: '812',
    generation: 2,
    labels: {},
    annotations: { 'policy.kelp.dev/audit': 'true' },
  },
  spec: {
    tier: 'Admin',
    priority: 10,
    subject: { namespaces: { matchLabels: { 'kubernetes.io/metadata.name': 'sensitive' }, matchExpressions: [] } },
    ingress: [
      {
        name: 'pass-monitoring',
        action: 'Pass',
        peers: [{ namespaces: { matchLabels: { team: 'monitoring' }, matchExpressions: [] } }],
        protocols: [{ protocol: 'TCP', port: { number: 9090 } }, { namedPort: 'metrics' }],
      },
      { name: '', action: 'Deny', peers: [{ namespaces: { matchLabels: {}, matchExpressions: [] } }], protocols: [] },
    ],
    egress: [
      {
        name: 'dns',
        action: 'Accept',
        peers: [
          {
            pods: {
              namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' }, matchExpressions: [] },
              podSelector: { matchLabels: { 'k8s-app': 'kube-dns' }, matchExpressions: [] },
            },
          },
        ],
        protocols: [
          { protocol: 'UDP', port: { number: 53 } },
          { protocol: 'TCP', port: { range: { start: 53, end: 54 } } },
        ],
      },
      {
        name: 'outside',
        action: 'Deny',
        // Canonical text, host bits cleared; the two spellings of 10.0.0.0/8 are one peer entry.
        peers: [{ networks: ['10.0.0.0/8', '2001:db8::/32'] }, { pods: { namespaceSelector: { matchLabels: {}, matchExpressions: [] }, podSelector: { matchLabels: {}, matchExpressions: [] } } }],
        protocols: [],
      },
    ],
  },
};

const clone = <T>(o: T): T => structuredClone(o);

/** The field a mutated copy of API_POLICY is refused for, and the reason. */
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

describe('ClusterNetworkPolicy', () => {
  it('normalises an API object: rules as peers and protocols, defaults filled, CIDRs canonical', () => {
    expect(validateObject(API_POLICY)).toEqual(NORMALISED);
  });

  it('a normalised object validates to itself, through JSON as `kelp apply` stores it', () => {
    const once = validateObject(API_POLICY);
    expect(validateObject(JSON.parse(JSON.stringify(once)))).toEqual(once);
  });

  it('a Baseline policy selecting pods, with nothing but its subject', () => {
    const o = validateObject({
      apiVersion: 'policy.networking.k8s.io/v1alpha2',
      kind: 'ClusterNetworkPolicy',
      metadata: { name: 'b' },
      spec: { tier: 'Baseline', priority: 0, subject: { pods: { podSelector: { matchExpressions: [{ key: 'app', operator: 'Exists' }] } } } },
    }) as ClusterNetworkPolicyObject;
    expect(o.spec).toEqual({
      tier: 'Baseline',
      priority: 0,
      subject: { pods: { namespaceSelector: { matchLabels: {}, matchExpressions: [] }, podSelector: { matchLabels: {}, matchExpressions: [{ key: 'app', operator: 'Exists', values: [] }] } } },
      ingress: [],
      egress: [],
    });
    expect(o.metadata.annotations).toEqual({});
  });

  it("the project's examples are valid, and stay so normalised", () => {
    const objects = parseManifests(readFileSync(EXAMPLES, 'utf8'), EXAMPLES) as ClusterNetworkPolicyObject[];
    expect(objects.map((o) => [o.metadata.name, o.spec.tier, o.spec.priority])).toEqual([
      ['sensitive-namespaces', 'Admin', 10],
      ['default-egress', 'Baseline', 1000],
    ]);
    for (const o of objects) expect(validateObject(JSON.parse(JSON.stringify(o)))).toEqual(o);
  });

  describe('fails closed on a peer of a newer API revision', () => {
    const unknownPeers: Array<[string, (o: any) => void, string]> = [
      ['nodes (experimental channel)', (o) => (o.spec.egress[1].to[1] = { nodes: { matchLabels: { role: 'infra' } } }), 'egress'],
      ['domainNames (experimental channel)', (o) => (o.spec.egress[1].to[1] = { domainNames: ['*.example.com'] }), 'egress'],
      ['networks in an ingress peer (not in v0.2.0)', (o) => (o.spec.ingress[1].from[0] = { networks: ['10.0.0.0/8'] }), 'ingress'],
      ['a field no revision has yet', (o) => (o.spec.ingress[1].from[0] = { serviceAccounts: { name: 'x' } }), 'ingress'],
    ];
    it.each(unknownPeers)('%s is { unknown: true }', (_label, mutate, dir) => {
      const o: any = clone(API_POLICY);
      mutate(o);
      const v = validateObject(o) as ClusterNetworkPolicyObject;
      const rule = dir === 'egress' ? v.spec.egress[1] : v.spec.ingress[1];
      expect(rule.peers).toContainEqual({ unknown: true });
      expect(validateObject(JSON.parse(JSON.stringify(v)))).toEqual(v);
    });

    it('a known field beside an unknown one is the known peer (the API server prunes the other)', () => {
      const o: any = clone(API_POLICY);
      o.spec.ingress[1].from[0] = { namespaces: { matchLabels: { a: 'b' } }, nodes: {} };
      expect((validateObject(o) as ClusterNetworkPolicyObject).spec.ingress[1].peers).toEqual([{ namespaces: { matchLabels: { a: 'b' }, matchExpressions: [] } }]);
    });
  });

  it('takes a named port in a rule with a networks peer, as the standard CRD does', () => {
    const o: any = clone(API_POLICY);
    o.spec.egress[1].protocols = [{ destinationNamedPort: 'https' }];
    expect((validateObject(o) as ClusterNetworkPolicyObject).spec.egress[1].protocols).toEqual([{ namedPort: 'https' }]);
  });

  it("reads kelp's normalised spelling: a protocol without a port is every port of it", () => {
    const o: any = clone(NORMALISED);
    o.spec.ingress[0].protocols = [{ protocol: 'SCTP' }];
    expect((validateObject(o) as ClusterNetworkPolicyObject).spec.ingress[0].protocols).toEqual([{ protocol: 'SCTP' }]);
  });

  const twentySix = (x: unknown) => Array.from({ length: 26 }, () => clone(x));
  const invalid: Array<[string, (o: any) => void, string, RegExp]> = [
    ['no spec', (o) => delete o.spec, 'spec', /required, missing/],
    ['a namespace', (o) => (o.metadata.namespace = 'default'), 'metadata.namespace', /cluster-scoped/],
    ['an uppercase name', (o) => (o.metadata.name = 'Sensitive'), 'metadata.name', /RFC 1123 subdomain/],
    ['an audit annotation that is not a boolean', (o) => (o.metadata.annotations['policy.kelp.dev/audit'] = 'yes'), 'metadata.annotations["policy.kelp.dev/audit"]', /must be "true" or "false", got "yes"/],
    ['no tier', (o) => delete o.spec.tier, 'spec.tier', /required, missing/],
    ['tier NetworkPolicy', (o) => (o.spec.tier = 'NetworkPolicy'), 'spec.tier', /must be one of Admin, Baseline, got "NetworkPolicy"/],
    ['no priority', (o) => delete o.spec.priority, 'spec.priority', /required, missing/],
    ['priority 1001', (o) => (o.spec.priority = 1001), 'spec.priority', /integer in 0\.\.1000, got number 1001/],
    ['priority -1', (o) => (o.spec.priority = -1), 'spec.priority', /integer in 0\.\.1000/],
    ['priority 1.5', (o) => (o.spec.priority = 1.5), 'spec.priority', /integer in 0\.\.1000/],
    ['priority as a string', (o) => (o.spec.priority = '10'), 'spec.priority', /integer in 0\.\.1000, got string "10"/],
    ['no subject', (o) => delete o.spec.subject, 'spec.subject', /required, missing/],
    ['an empty subject', (o) => (o.spec.subject = {}), 'spec.subject', /must specify exactly one of namespaces, pods$/],
    ['a subject with both', (o) => (o.spec.subject.pods = { podSelector: {} }), 'spec.subject', /exactly one of namespaces, pods, got namespaces and pods/],
    ['subject pods without podSelector', (o) => (o.spec.subject = { pods: { namespaceSelector: {} } }), 'spec.subject.pods.podSelector', /required, missing/],
    ['a bad subject selector key', (o) => (o.spec.subject.namespaces.matchLabels = { 'a b': 'c' }), 'spec.subject.namespaces.matchLabels["a b"]', /qualified name/],
    ['26 ingress rules', (o) => (o.spec.ingress = twentySix(o.spec.ingress[1])), 'spec.ingress', /at most 25 items, got 26/],
    ['26 egress rules', (o) => (o.spec.egress = twentySix(o.spec.egress[1])), 'spec.egress', /at most 25 items, got 26/],
    ['ingress not a list', (o) => (o.spec.ingress = {}), 'spec.ingress', /must be an array/],
    ['a rule name of 101 characters', (o) => (o.spec.ingress[0].name = 'x'.repeat(101)), 'spec.ingress[0].name', /at most 100 characters, got 101/],
    ['no action', (o) => delete o.spec.ingress[0].action, 'spec.ingress[0].action', /required, missing/],
    ['action Allow (v1alpha1)', (o) => (o.spec.egress[0].action = 'Allow'), 'spec.egress[0].action', /must be one of Accept, Deny, Pass, got "Allow"/],
    ['no from', (o) => delete o.spec.ingress[1].from, 'spec.ingress[1].from', /required, missing/],
    ['no to', (o) => delete o.spec.egress[1].to, 'spec.egress[1].to', /required, missing/],
    ['an empty from', (o) => (o.spec.ingress[1].from = []), 'spec.ingress[1].from', /at least 1 item/],
    ['26 peers', (o) => (o.spec.ingress[1].from = twentySix(o.spec.ingress[1].from[0])), 'spec.ingress[1].from', /at most 25 items, got 26/],
    ['from and peers together', (o) => (o.spec.ingress[1].peers = o.spec.ingress[1].from), 'spec.ingress[1].peers', /may not be given with `from`/],
    ['an empty peer', (o) => (o.spec.ingress[1].from[0] = {}), 'spec.ingress[1].from[0]', /must specify exactly one of namespaces, pods$/],
    ['a peer with null fields only', (o) => (o.spec.ingress[1].from[0] = { namespaces: null }), 'spec.ingress[1].from[0]', /exactly one of namespaces, pods$/],
    ['a peer with two fields', (o) => (o.spec.egress[1].to[0].pods = { podSelector: {} }), 'spec.egress[1].to[0]', /exactly one of namespaces, pods, networks, got pods and networks/],
    ['a peer that is a string', (o) => (o.spec.ingress[1].from[0] = 'all'), 'spec.ingress[1].from[0]', /must be an object/],
    ['pods without podSelector', (o) => delete o.spec.egress[0].to[0].pods.podSelector, 'spec.egress[0].to[0].pods.podSelector', /required, missing/],
    [
      'In without values',
      (o) => (o.spec.egress[0].to[0].pods.podSelector = { matchExpressions: [{ key: 'app', operator: 'In' }] }),
      'spec.egress[0].to[0].pods.podSelector.matchExpressions[0].values',
      /must be specified when `operator` is 'In' or 'NotIn'/,
    ],
    [
      'Exists with values',
      (o) => (o.spec.ingress[0].from[0].namespaces = { matchExpressions: [{ key: 'app', operator: 'Exists', values: ['x'] }] }),
      'spec.ingress[0].from[0].namespaces.matchExpressions[0].values',
      /may not be specified/,
    ],
    ['a bad operator', (o) => (o.spec.egress[0].to[0].pods.namespaceSelector = { matchExpressions: [{ key: 'a', operator: 'Equals', values: ['b'] }] }), 'spec.egress[0].to[0].pods.namespaceSelector.matchExpressions[0].operator', /must be one of In, NotIn, Exists, DoesNotExist/],
    ['an empty networks list', (o) => (o.spec.egress[1].to[0].networks = []), 'spec.egress[1].to[0].networks', /at least 1 item/],
    ['26 CIDRs', (o) => (o.spec.egress[1].to[0].networks = Array.from({ length: 26 }, (_, i) => `10.${i}.0.0/16`)), 'spec.egress[1].to[0].networks', /at most 25 items, got 26/],
    ['a bad CIDR', (o) => (o.spec.egress[1].to[0].networks[1] = '10.0.0.0/33'), 'spec.egress[1].to[0].networks[1]', /valid CIDR/],
    ['an address without a prefix', (o) => (o.spec.egress[1].to[0].networks[1] = '10.0.0.1'), 'spec.egress[1].to[0].networks[1]', /valid CIDR/],
    ['a CIDR twice', (o) => (o.spec.egress[1].to[0].networks[2] = '10.0.0.7/8'), 'spec.egress[1].to[0].networks[2]', /duplicate value "10.0.0.7\/8"/],
    ['a CIDR of 44 characters', (o) => (o.spec.egress[1].to[0].networks[1] = '2001:0db8:0000:0000:0000:0000:0000:0000/1280'), 'spec.egress[1].to[0].networks[1]', /at most 43 characters, got 44/],
    ['an empty protocol entry', (o) => (o.spec.ingress[0].protocols[0] = {}), 'spec.ingress[0].protocols[0]', /exactly one of tcp, udp, sctp, destinationNamedPort$/],
    ['ICMP', (o) => (o.spec.ingress[0].protocols[0] = { icmp: {} }), 'spec.ingress[0].protocols[0]', /exactly one of tcp, udp, sctp, destinationNamedPort$/],
    ['tcp and udp in one entry', (o) => (o.spec.ingress[0].protocols[0].udp = { destinationPort: { number: 53 } }), 'spec.ingress[0].protocols[0]', /got tcp and udp/],
    ["both spellings in one entry", (o) => (o.spec.ingress[0].protocols[0].protocol = 'UDP'), 'spec.ingress[0].protocols[0]', /got tcp and protocol/],
    ['26 protocols', (o) => (o.spec.ingress[0].protocols = twentySix(o.spec.ingress[0].protocols[0])), 'spec.ingress[0].protocols', /at most 25 items, got 26/],
    ['an empty tcp match', (o) => (o.spec.ingress[0].protocols[0].tcp = {}), 'spec.ingress[0].protocols[0].tcp.destinationPort', /required, missing/],
    ['an empty destinationPort', (o) => (o.spec.ingress[0].protocols[0].tcp.destinationPort = {}), 'spec.ingress[0].protocols[0].tcp.destinationPort', /exactly one of number, range$/],
    ['a port and a range', (o) => (o.spec.ingress[0].protocols[0].tcp.destinationPort.range = { start: 1, end: 2 }), 'spec.ingress[0].protocols[0].tcp.destinationPort', /got number and range/],
    ['port 0', (o) => (o.spec.egress[0].protocols[0].udp.destinationPort.number = 0), 'spec.egress[0].protocols[0].udp.destinationPort.number', /integer in 1\.\.65535, got number 0/],
    ['port 65536', (o) => (o.spec.egress[0].protocols[0].udp.destinationPort.number = 65536), 'spec.egress[0].protocols[0].udp.destinationPort.number', /integer in 1\.\.65535/],
    ['a range without end', (o) => delete o.spec.egress[0].protocols[1].tcp.destinationPort.range.end, 'spec.egress[0].protocols[1].tcp.destinationPort.range.end', /required, missing/],
    ['a one-port range', (o) => (o.spec.egress[0].protocols[1].tcp.destinationPort.range = { start: 53, end: 53 }), 'spec.egress[0].protocols[1].tcp.destinationPort.range', /start \(53\) must be less than end \(53\)/],
    ['a backwards range', (o) => (o.spec.egress[0].protocols[1].tcp.destinationPort.range = { start: 60, end: 53 }), 'spec.egress[0].protocols[1].tcp.destinationPort.range', /must be less than end/],
    ['a range past 65535', (o) => (o.spec.egress[0].protocols[1].tcp.destinationPort.range.end = 70000), 'spec.egress[0].protocols[1].tcp.destinationPort.range.end', /integer in 1\.\.65535/],
    ['an uppercase port name', (o) => (o.spec.ingress[0].protocols[1].destinationNamedPort = 'Metrics'), 'spec.ingress[0].protocols[1].destinationNamedPort', /only a-z, 0-9 and '-'/],
    ['a port name without a letter', (o) => (o.spec.ingress[0].protocols[1].destinationNamedPort = '9090'), 'spec.ingress[0].protocols[1].destinationNamedPort', /at least one letter/],
    ['a port name of 16 characters', (o) => (o.spec.ingress[0].protocols[1].destinationNamedPort = 'a'.repeat(16)), 'spec.ingress[0].protocols[1].destinationNamedPort', /1 to 15 characters/],
    ['an empty port name', (o) => (o.spec.ingress[0].protocols[1].destinationNamedPort = ''), 'spec.ingress[0].protocols[1].destinationNamedPort', /1 to 15 characters/],
    ['a port as a number', (o) => (o.spec.ingress[0].protocols[1].destinationNamedPort = 80), 'spec.ingress[0].protocols[1].destinationNamedPort', /must be a string/],
  ];
  it.each(invalid)('refuses %s, naming the field', (_label, mutate, field, reason) => {
    const r = refusal(mutate);
    expect(r.field).toBe(field);
    expect(r.reason).toMatch(reason);
  });

  it("refuses kelp's spelling with a bad value, naming its field", () => {
    const o: any = clone(NORMALISED);
    o.spec.egress[0].protocols[0] = { protocol: 'ICMP' };
    expect(() => validateObject(o)).toThrow(expect.objectContaining({ field: 'spec.egress[0].protocols[0].protocol' }));
    o.spec.egress[0].protocols[0] = { protocol: 'UDP', port: { range: { start: 9, end: 1 } } };
    expect(() => validateObject(o)).toThrow(expect.objectContaining({ field: 'spec.egress[0].protocols[0].port.range' }));
    o.spec.egress[0].protocols[0] = { namedPort: 'DNS' };
    expect(() => validateObject(o)).toThrow(expect.objectContaining({ field: 'spec.egress[0].protocols[0].namedPort' }));
    o.spec.egress[0].protocols[0] = { protocol: 'UDP' };
    o.spec.egress[0].peers = [];
    expect(() => validateObject(o)).toThrow(expect.objectContaining({ field: 'spec.egress[0].peers', reason: 'must have at least 1 item' }));
  });
});
