import { describe, expect, it } from 'vitest';
import { Backend, backendKey, backendsForPort, categorizeEndpoints, NodeTopology, portTrafficPolicy, PortTrafficPolicy, topologyModeFromHints } from '../../src/service/endpoints';
import { EndpointSliceObject, ServiceObject, validateObject } from '../../src/sources/objects';
import { rng } from '../support/rng';

// --- fixtures -------------------------------------------------------------------------------

interface EpSpec {
  ip: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  local?: boolean;
  zones?: string[];
  nodes?: string[];
}

function ep(s: EpSpec): Backend {
  const ready = s.ready ?? true;
  return {
    address: s.ip,
    port: 80,
    local: s.local ?? false,
    ready,
    serving: s.serving ?? ready,
    terminating: s.terminating ?? false,
    zoneHints: new Set(s.zones ?? []),
    nodeHints: new Set(s.nodes ?? []),
  };
}

const CLUSTER: PortTrafficPolicy = { usesCluster: true, usesLocal: false };
const LOCAL: PortTrafficPolicy = { usesCluster: false, usesLocal: true };
const BOTH: PortTrafficPolicy = { usesCluster: true, usesLocal: true };
const NODE: NodeTopology = { name: 'node-1', zone: 'zone-a' };
const ips = (list: Backend[]) => list.map((b) => b.address).sort();
const TERMINATING = { ready: false, serving: true, terminating: true };
const GONE = { ready: false, serving: false, terminating: true };

// --- table: categorizeEndpoints -------------------------------------------------------------

interface Row {
  name: string;
  policy: PortTrafficPolicy;
  node?: NodeTopology;
  eps: EpSpec[];
  cluster: string[];
  local: string[];
  all: string[];
  any: boolean;
}

const rows: Row[] = [
  { name: 'no endpoints', policy: BOTH, eps: [], cluster: [], local: [], all: [], any: false },
  {
    name: 'no hints: every ready endpoint',
    policy: CLUSTER,
    eps: [{ ip: '10.1.0.1' }, { ip: '10.1.0.2' }, { ip: '10.1.0.3', ready: false, serving: false }],
    cluster: ['10.1.0.1', '10.1.0.2'],
    local: [],
    all: ['10.1.0.1', '10.1.0.2'],
    any: true,
  },
  {
    name: 'zone hints for every endpoint, some for this zone: those only',
    policy: CLUSTER,
    eps: [
      { ip: '10.1.0.1', zones: ['zone-a'] },
      { ip: '10.1.0.2', zones: ['zone-b'] },
      { ip: '10.1.0.3', zones: ['zone-a', 'zone-c'] },
    ],
    cluster: ['10.1.0.1', '10.1.0.3'],
    local: [],
    all: ['10.1.0.1', '10.1.0.3'],
    any: true,
  },
  {
    name: 'one ready endpoint without a zone hint: hints ignored',
    policy: CLUSTER,
    eps: [{ ip: '10.1.0.1', zones: ['zone-a'] }, { ip: '10.1.0.2', zones: ['zone-b'] }, { ip: '10.1.0.3' }],
    cluster: ['10.1.0.1', '10.1.0.2', '10.1.0.3'],
    local: [],
    all: ['10.1.0.1', '10.1.0.2', '10.1.0.3'],
    any: true,
  },
  {
    name: 'a non-ready endpoint without a hint does not spoil the hints',
    policy: CLUSTER,
    eps: [{ ip: '10.1.0.1', zones: ['zone-a'] }, { ip: '10.1.0.2', zones: ['zone-b'] }, { ip: '10.1.0.3', ...TERMINATING }],
    cluster: ['10.1.0.1'],
    local: [],
    all: ['10.1.0.1'],
    any: true,
  },
  {
    name: 'no endpoint hinted for this zone: hints ignored',
    policy: CLUSTER,
    eps: [{ ip: '10.1.0.1', zones: ['zone-b'] }, { ip: '10.1.0.2', zones: ['zone-c'] }],
    cluster: ['10.1.0.1', '10.1.0.2'],
    local: [],
    all: ['10.1.0.1', '10.1.0.2'],
    any: true,
  },
  {
    name: 'node without a zone label: zone hints ignored',
    policy: CLUSTER,
    node: { name: 'node-1' },
    eps: [{ ip: '10.1.0.1', zones: ['zone-a'] }, { ip: '10.1.0.2', zones: ['zone-b'] }],
    cluster: ['10.1.0.1', '10.1.0.2'],
    local: [],
    all: ['10.1.0.1', '10.1.0.2'],
    any: true,
  },
  {
    name: 'hinted endpoint for this zone not ready: hints ignored (only ready ones count)',
    policy: CLUSTER,
    eps: [{ ip: '10.1.0.1', zones: ['zone-a'], ...TERMINATING }, { ip: '10.1.0.2', zones: ['zone-b'] }],
    cluster: ['10.1.0.2'],
    local: [],
    all: ['10.1.0.2'],
    any: true,
  },
  {
    name: 'node hints naming this node: same node only',
    policy: CLUSTER,
    eps: [
      { ip: '10.1.0.1', nodes: ['node-1'], zones: ['zone-a'] },
      { ip: '10.1.0.2', nodes: ['node-2'], zones: ['zone-a'] },
      { ip: '10.1.0.3', nodes: ['node-3'], zones: ['zone-b'] },
    ],
    cluster: ['10.1.0.1'],
    local: [],
    all: ['10.1.0.1'],
    any: true,
  },
  {
    name: 'node hints not naming this node: falls back to zone hints',
    policy: CLUSTER,
    eps: [
      { ip: '10.1.0.1', nodes: ['node-2'], zones: ['zone-a'] },
      { ip: '10.1.0.2', nodes: ['node-3'], zones: ['zone-b'] },
    ],
    cluster: ['10.1.0.1'],
    local: [],
    all: ['10.1.0.1'],
    any: true,
  },
  {
    name: 'one endpoint missing a node hint: zone hints',
    policy: CLUSTER,
    eps: [
      { ip: '10.1.0.1', nodes: ['node-1'], zones: ['zone-b'] },
      { ip: '10.1.0.2', zones: ['zone-a'] },
    ],
    cluster: ['10.1.0.2'],
    local: [],
    all: ['10.1.0.2'],
    any: true,
  },
  {
    name: 'node hints only, none for this node, no zone hints: every endpoint',
    policy: CLUSTER,
    eps: [{ ip: '10.1.0.1', nodes: ['node-2'] }, { ip: '10.1.0.2', nodes: ['node-3'] }],
    cluster: ['10.1.0.1', '10.1.0.2'],
    local: [],
    all: ['10.1.0.1', '10.1.0.2'],
    any: true,
  },
  {
    name: 'all terminating: serving terminating ones, hints ignored',
    policy: CLUSTER,
    eps: [
      { ip: '10.1.0.1', zones: ['zone-b'], ...TERMINATING },
      { ip: '10.1.0.2', zones: ['zone-a'], ...TERMINATING },
      { ip: '10.1.0.3', ...GONE },
    ],
    cluster: ['10.1.0.1', '10.1.0.2'],
    local: [],
    all: ['10.1.0.1', '10.1.0.2'],
    any: true,
  },
  {
    name: 'nothing ready or serving: no endpoints anywhere',
    policy: BOTH,
    eps: [{ ip: '10.1.0.1', ...GONE, local: true }, { ip: '10.1.0.2', ready: false, serving: false }],
    cluster: [],
    local: [],
    all: [],
    any: false,
  },
  {
    name: 'ready but not serving is impossible upstream, still counts as ready',
    policy: CLUSTER,
    eps: [{ ip: '10.1.0.1', ready: true, serving: false }],
    cluster: ['10.1.0.1'],
    local: [],
    all: ['10.1.0.1'],
    any: true,
  },
  {
    name: 'serving but not terminating and not ready: never used',
    policy: BOTH,
    eps: [{ ip: '10.1.0.1', ready: false, serving: true, local: true }],
    cluster: [],
    local: [],
    all: [],
    any: false,
  },
  {
    name: 'internal Local: local ready endpoints, topology ignored',
    policy: LOCAL,
    eps: [
      { ip: '10.1.0.1', local: true, zones: ['zone-b'] },
      { ip: '10.1.0.2', zones: ['zone-a'] },
    ],
    cluster: [],
    local: ['10.1.0.1'],
    all: ['10.1.0.1'],
    any: true,
  },
  {
    name: 'internal Local without a local endpoint: none reachable, but some exist',
    policy: LOCAL,
    eps: [{ ip: '10.1.0.1' }, { ip: '10.1.0.2', ...TERMINATING }],
    cluster: [],
    local: [],
    all: [],
    any: true,
  },
  {
    name: 'internal Local, only remote terminating: still some exist',
    policy: LOCAL,
    eps: [{ ip: '10.1.0.2', ...TERMINATING }],
    cluster: [],
    local: [],
    all: [],
    any: true,
  },
  {
    name: 'Local fallback is per view: local terminating used while the cluster has ready ones',
    policy: BOTH,
    eps: [
      { ip: '10.1.0.1', local: true, ...TERMINATING },
      { ip: '10.1.0.2' },
    ],
    cluster: ['10.1.0.2'],
    local: ['10.1.0.1'],
    all: ['10.1.0.1', '10.1.0.2'],
    any: true,
  },
  {
    name: 'Local view prefers a ready local endpoint over a terminating one',
    policy: BOTH,
    eps: [
      { ip: '10.1.0.1', local: true, ...TERMINATING },
      { ip: '10.1.0.2', local: true },
      { ip: '10.1.0.3' },
    ],
    cluster: ['10.1.0.2', '10.1.0.3'],
    local: ['10.1.0.2'],
    all: ['10.1.0.2', '10.1.0.3'],
    any: true,
  },
  {
    name: 'external Local with zone hints: local endpoint outside the hinted set stays reachable',
    policy: BOTH,
    eps: [
      { ip: '10.1.0.1', local: true, zones: ['zone-b'] },
      { ip: '10.1.0.2', zones: ['zone-a'] },
    ],
    cluster: ['10.1.0.2'],
    local: ['10.1.0.1'],
    all: ['10.1.0.1', '10.1.0.2'],
    any: true,
  },
  {
    name: 'every endpoint terminating with both views: each falls back',
    policy: BOTH,
    eps: [
      { ip: '10.1.0.1', local: true, ...TERMINATING },
      { ip: '10.1.0.2', ...TERMINATING },
      { ip: '10.1.0.3', local: true, ...GONE },
    ],
    cluster: ['10.1.0.1', '10.1.0.2'],
    local: ['10.1.0.1'],
    all: ['10.1.0.1', '10.1.0.2'],
    any: true,
  },
];

describe('categorizeEndpoints (kube-proxy CategorizeEndpoints)', () => {
  it.each(rows)('$name', (row) => {
    const got = categorizeEndpoints(row.eps.map(ep), row.policy, row.node ?? NODE);
    expect(ips(got.cluster)).toEqual(row.cluster);
    expect(ips(got.local)).toEqual(row.local);
    expect(ips(got.allReachable)).toEqual(row.all);
    expect(got.hasAnyEndpoints).toBe(row.any);
  });

  it('reports the topology mode it applied', () => {
    const zoned = [ep({ ip: '10.1.0.1', zones: ['zone-a'], nodes: ['node-2'] }), ep({ ip: '10.1.0.2', zones: ['zone-b'], nodes: ['node-1'] })];
    expect(topologyModeFromHints(zoned, NODE)).toBe('PreferSameNode');
    expect(topologyModeFromHints(zoned, { name: 'node-9', zone: 'zone-b' })).toBe('PreferSameZone');
    expect(topologyModeFromHints(zoned, { name: 'node-9', zone: 'zone-z' })).toBe('');
    expect(categorizeEndpoints(zoned, LOCAL, NODE).topologyMode).toBe('');
  });

  it('keeps the input order in every view', () => {
    const eps = ['10.1.0.9', '10.1.0.3', '10.1.0.5'].map((ip, i) => ep({ ip, local: i !== 1 }));
    const got = categorizeEndpoints(eps, BOTH, NODE);
    expect(got.cluster.map((b) => b.address)).toEqual(['10.1.0.9', '10.1.0.3', '10.1.0.5']);
    expect(got.local.map((b) => b.address)).toEqual(['10.1.0.9', '10.1.0.5']);
    expect(got.allReachable.map((b) => b.address)).toEqual(['10.1.0.9', '10.1.0.3', '10.1.0.5']);
  });
});

// --- generated comparison against a literal reference ---------------------------------------

interface PlainEp {
  key: string;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  local: boolean;
  zoneHints: string[];
  nodeHints: string[];
}

/**
 * The rules, written out step by step from the prose of CategorizeEndpoints' documentation and
 * KEP-2433/KEP-3015 rather than from the module: arrays, counters and no shared helpers.
 */
function reference(eps: PlainEp[], usesCluster: boolean, usesLocal: boolean, nodeName: string, zone: string) {
  const cluster: string[] = [];
  const local: string[] = [];
  let any = false;
  if (eps.length === 0) return { cluster, local, all: [] as string[], any };

  if (usesCluster) {
    let readyCount = 0;
    let readyWithNodeHint = 0;
    let readyHintedForMyNode = 0;
    let readyWithZoneHint = 0;
    let readyHintedForMyZone = 0;
    for (const e of eps) {
      if (!e.ready) continue;
      readyCount++;
      if (e.nodeHints.length > 0) readyWithNodeHint++;
      if (e.nodeHints.indexOf(nodeName) >= 0) readyHintedForMyNode++;
      if (e.zoneHints.length > 0) readyWithZoneHint++;
      if (e.zoneHints.indexOf(zone) >= 0) readyHintedForMyZone++;
    }
    let mode = 'none';
    if (readyCount > 0 && readyWithNodeHint === readyCount && readyHintedForMyNode > 0) mode = 'node';
    else if (readyCount > 0 && readyWithZoneHint === readyCount && readyHintedForMyZone > 0) mode = 'zone';

    for (const e of eps) {
      if (!e.ready) continue;
      if (mode === 'node' && e.nodeHints.indexOf(nodeName) < 0) continue;
      if (mode === 'zone' && e.zoneHints.indexOf(zone) < 0) continue;
      cluster.push(e.key);
    }
    if (cluster.length === 0) {
      for (const e of eps) if (e.serving && e.terminating) cluster.push(e.key);
    }
    if (cluster.length > 0) any = true;
  }

  if (usesLocal) {
    for (const e of eps) if (e.ready || (e.serving && e.terminating)) any = true;
    for (const e of eps) if (e.local && e.ready) local.push(e.key);
    if (local.length === 0) {
      for (const e of eps) if (e.local && e.serving && e.terminating) local.push(e.key);
    }
  }

  const all: string[] = [];
  for (const k of cluster) if (all.indexOf(k) < 0) all.push(k);
  for (const k of local) if (all.indexOf(k) < 0) all.push(k);
  return { cluster, local, all, any };
}

describe('categorizeEndpoints against the literal reference (generated)', () => {
  const ZONES = ['zone-a', 'zone-b', 'zone-c'];
  const NODES = ['node-1', 'node-2', 'node-3'];
  const POLICIES = [CLUSTER, LOCAL, BOTH];

  it('agrees on 3,000 random endpoint sets × policies × node/zone', () => {
    const rand = rng(12);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
    const subset = (xs: readonly string[], pEmpty: number): string[] => (rand() < pEmpty ? [] : xs.filter(() => rand() < 0.5));
    let checked = 0;
    const modes = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const nodeName = pick(NODES);
      const zone = pick([...ZONES, '', 'zone-z']);
      // Hints are usually complete or absent, so that the "every endpoint hinted" branch is taken often.
      const hintStyle = pick(['none', 'zone', 'node', 'both', 'mixed']);
      const n = Math.floor(rand() * 7);
      const plain: PlainEp[] = [];
      for (let j = 0; j < n; j++) {
        const ready = rand() < 0.55;
        plain.push({
          key: `10.2.${i % 250}.${j + 1}:80`,
          ready,
          serving: ready ? rand() < 0.95 : rand() < 0.6,
          terminating: ready ? rand() < 0.05 : rand() < 0.7,
          local: pick(NODES) === nodeName,
          zoneHints: hintStyle === 'zone' || hintStyle === 'both' ? subset(ZONES, 0.05) : hintStyle === 'mixed' ? subset(ZONES, 0.4) : [],
          nodeHints: hintStyle === 'node' || hintStyle === 'both' ? subset(NODES, 0.05) : hintStyle === 'mixed' ? subset(NODES, 0.4) : [],
        });
      }
      const backends: Backend[] = plain.map((p) => ({
        address: p.key.slice(0, -3),
        port: 80,
        local: p.local,
        ready: p.ready,
        serving: p.serving,
        terminating: p.terminating,
        zoneHints: new Set(p.zoneHints),
        nodeHints: new Set(p.nodeHints),
      }));
      for (const policy of POLICIES) {
        const want = reference(plain, policy.usesCluster, policy.usesLocal, nodeName, zone);
        const got = categorizeEndpoints(backends, policy, { name: nodeName, zone });
        const keys = (bs: Backend[]) => bs.map(backendKey).sort();
        const label = `case ${i}, ${JSON.stringify(policy)}`;
        expect(keys(got.cluster), label).toEqual([...want.cluster].sort());
        expect(keys(got.local), label).toEqual([...want.local].sort());
        expect(keys(got.allReachable), label).toEqual([...want.all].sort());
        expect(got.hasAnyEndpoints, label).toBe(want.any);
        modes.add(got.topologyMode);
        checked++;
      }
    }
    expect(checked).toBe(3000);
    // The generator must reach every branch, or the comparison proves little.
    expect([...modes].sort()).toEqual(['', 'PreferSameNode', 'PreferSameZone']);
  });
});

// --- backendsForPort: port resolution and de-duplication ------------------------------------

function slice(name: string, body: { addressType?: string; ports: object[]; endpoints: object[] }): EndpointSliceObject {
  return validateObject({
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: body.addressType ?? 'IPv4',
    ports: body.ports,
    endpoints: body.endpoints,
  }) as EndpointSliceObject;
}

describe('backendsForPort (kube-proxy EndpointSliceCache)', () => {
  it('takes the backend port per slice from the port of the same name and protocol', () => {
    const a = slice('web-a', { ports: [{ name: 'http', protocol: 'TCP', port: 8080 }, { name: 'dns', protocol: 'UDP', port: 53 }], endpoints: [{ addresses: ['10.1.0.1'] }] });
    const b = slice('web-b', { ports: [{ name: 'http', protocol: 'TCP', port: 9090 }], endpoints: [{ addresses: ['10.1.0.2'], nodeName: 'node-1' }] });
    const http = backendsForPort({ name: 'http', protocol: 'TCP' }, [a, b], 4, 'node-1');
    expect(http.map((x) => [backendKey(x), x.local])).toEqual([
      ['10.1.0.1:8080', false],
      ['10.1.0.2:9090', true],
    ]);
    expect(backendsForPort({ name: 'dns', protocol: 'UDP' }, [a, b], 4, 'node-1').map(backendKey)).toEqual(['10.1.0.1:53']);
    // Same name, other protocol: not this port.
    expect(backendsForPort({ name: 'dns', protocol: 'TCP' }, [a, b], 4, 'node-1')).toEqual([]);
  });

  it('matches an unnamed Service port to the slice port named ""', () => {
    const s = slice('web-a', { ports: [{ protocol: 'TCP', port: 8080 }], endpoints: [{ addresses: ['10.1.0.1'] }] });
    expect(backendsForPort({ protocol: 'TCP' }, [s], 4, 'node-1').map(backendKey)).toEqual(['10.1.0.1:8080']);
    expect(backendsForPort({ name: 'http', protocol: 'TCP' }, [s], 4, 'node-1')).toEqual([]);
  });

  it('ignores a slice port without a number, slices of the other family, and FQDN slices', () => {
    const noNumber = slice('web-a', { ports: [{ name: 'http', protocol: 'TCP' }], endpoints: [{ addresses: ['10.1.0.1'] }] });
    const v6 = slice('web-b', { addressType: 'IPv6', ports: [{ name: 'http', protocol: 'TCP', port: 80 }], endpoints: [{ addresses: ['fd00::1'] }] });
    const fqdn = slice('web-c', { addressType: 'FQDN', ports: [{ name: 'http', protocol: 'TCP', port: 80 }], endpoints: [{ addresses: ['web.example.com'] }] });
    const port = { name: 'http', protocol: 'TCP' } as const;
    expect(backendsForPort(port, [noNumber, v6, fqdn], 4, 'node-1')).toEqual([]);
    expect(backendsForPort(port, [noNumber, v6, fqdn], 6, 'node-1').map(backendKey)).toEqual(['[fd00::1]:80']);
  });

  it('uses the first address, normalised conditions, and hints', () => {
    const s = slice('web-a', {
      ports: [{ name: 'http', protocol: 'TCP', port: 80 }],
      endpoints: [
        {
          addresses: ['10.1.0.1', '10.1.0.99'],
          conditions: { ready: false, terminating: true },
          nodeName: 'node-2',
          hints: { forZones: [{ name: 'zone-a' }], forNodes: [{ name: 'node-2' }] },
        },
      ],
    });
    const [b] = backendsForPort({ name: 'http', protocol: 'TCP' }, [s], 4, 'node-1');
    expect(b).toEqual({ address: '10.1.0.1', port: 80, local: false, ready: false, serving: true, terminating: true, zoneHints: new Set(['zone-a']), nodeHints: new Set(['node-2']) });
  });

  it('is never local on a node without a name', () => {
    const s = slice('web-a', { ports: [{ name: 'http', protocol: 'TCP', port: 80 }], endpoints: [{ addresses: ['10.1.0.1'] }] });
    expect(backendsForPort({ name: 'http', protocol: 'TCP' }, [s], 4, '')[0].local).toBe(false);
  });

  it('keeps one backend per address and port, a non-terminating duplicate winning', () => {
    const port = [{ name: 'http', protocol: 'TCP', port: 80 }];
    const old = slice('web-a', { ports: port, endpoints: [{ addresses: ['10.1.0.1'], conditions: { ready: false, serving: true, terminating: true } }] });
    const fresh = slice('web-b', { ports: port, endpoints: [{ addresses: ['10.1.0.1'], nodeName: 'node-1' }] });
    const p = { name: 'http', protocol: 'TCP' } as const;
    for (const order of [[old, fresh], [fresh, old]]) {
      const got = backendsForPort(p, order, 4, 'node-1');
      expect(got).toHaveLength(1);
      expect(got[0]).toMatchObject({ ready: true, terminating: false, local: true });
    }
    // Two non-terminating duplicates: the later one (upstream leaves this undefined).
    const other = slice('web-c', { ports: port, endpoints: [{ addresses: ['10.1.0.1'], nodeName: 'node-2' }] });
    expect(backendsForPort(p, [fresh, other], 4, 'node-1')[0].local).toBe(false);
  });
});

// --- portTrafficPolicy ----------------------------------------------------------------------

function service(spec: object, status: object = {}): ServiceObject {
  return validateObject({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'web', namespace: 'shop' }, spec, status }) as ServiceObject;
}

describe('portTrafficPolicy (kube-proxy UsesClusterEndpoints/UsesLocalEndpoints)', () => {
  const port = (svc: ServiceObject) => svc.spec.ports[0];
  const cases: Array<[string, ServiceObject, 4 | 6, PortTrafficPolicy]> = [
    ['ClusterIP', service({ clusterIP: '10.96.0.10', ports: [{ port: 80 }] }), 4, CLUSTER],
    ['ClusterIP, internal Local', service({ clusterIP: '10.96.0.10', internalTrafficPolicy: 'Local', ports: [{ port: 80 }] }), 4, LOCAL],
    ['NodePort, external Local', service({ type: 'NodePort', clusterIP: '10.96.0.10', externalTrafficPolicy: 'Local', ports: [{ port: 80, nodePort: 30080 }] }), 4, BOTH],
    ['NodePort, external Cluster, internal Local', service({ type: 'NodePort', clusterIP: '10.96.0.10', internalTrafficPolicy: 'Local', ports: [{ port: 80, nodePort: 30080 }] }), 4, BOTH],
    // A NodePort Service whose nodePort is not allocated yet is not reachable from outside.
    ['NodePort without a nodePort, external Local', service({ type: 'NodePort', clusterIP: '10.96.0.10', externalTrafficPolicy: 'Local', ports: [{ port: 80 }] }), 4, CLUSTER],
    ['externalIPs of this family, external Local', service({ clusterIP: '10.96.0.10', externalIPs: ['192.0.2.7'], externalTrafficPolicy: 'Local', ports: [{ port: 80 }] }), 4, BOTH],
    ['externalIPs of the other family only', service({ clusterIP: '10.96.0.10', externalIPs: ['2001:db8::7'], externalTrafficPolicy: 'Local', internalTrafficPolicy: 'Local', ports: [{ port: 80 }] }), 4, LOCAL],
    [
      'LoadBalancer ingress IP in VIP mode',
      service({ type: 'LoadBalancer', clusterIP: '10.96.0.10', externalTrafficPolicy: 'Local', internalTrafficPolicy: 'Local', ports: [{ port: 80 }] }, { loadBalancer: { ingress: [{ ip: '198.51.100.4' }] } }),
      4,
      BOTH,
    ],
    [
      'LoadBalancer ingress IP in Proxy mode is not the proxy’s',
      service({ type: 'LoadBalancer', clusterIP: '10.96.0.10', externalTrafficPolicy: 'Local', internalTrafficPolicy: 'Local', ports: [{ port: 80 }] }, { loadBalancer: { ingress: [{ ip: '198.51.100.4', ipMode: 'Proxy' }] } }),
      4,
      LOCAL,
    ],
  ];
  it.each(cases)('%s', (_name, svc, family, want) => {
    expect(portTrafficPolicy(svc, port(svc), family)).toEqual(want);
  });
});
