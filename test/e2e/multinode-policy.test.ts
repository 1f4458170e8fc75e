// The policy matrix across nodes (issue 13, "Policy and services across nodes"): the topology of
// test/support/policy-matrix.ts — namespaces x, y, z with pods a, b, c each — spread over three
// nodes (pod (namespace j, pod k) on node (j + k) mod 3, so most pairs cross nodes and some share
// one), every object applied on every node's agent (standalone), in both routing modes. The
// cases and their expected matrices are those of the one-node suite (test/support/policy-cases.ts),
// unchanged: a verdict must not depend on where the pods run. "node" is the pod's own node on
// either side of a probe.
//
// VXLAN runs every case; native routing a subset chosen for what crosses nodes: remote pods'
// identities (labels and namespaces, from the ip cache the store fills), named ports resolved on
// remote pods, ipBlock on a remote pod's address, statefulness of replies, label changes of
// remote pods and of namespaces reaching every node, each policy API and tier once, and audit
// counters. The two modes differ only in how a packet reaches the receiving node (the overlay's
// kelp_from_overlay or the routed path into kelp_to_pod); the verdict logic they share is proved
// by the full list once, and the full list again would double the suite's ~2 minutes. Where a
// case names "the node's address" it is node 1's (x/a's node); "the pod CIDR" is the cluster's
// pod network. The `kelp policy trace` cross-check stays in the one-node suite (a trace explains
// one agent's maps).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cluster } from '../support/cluster';
import { matrixNamespaces, PolicyMatrix, REASON_AUDIT, REASON_POLICY_DENY } from '../support/policy-matrix';
import { AUDIT_MODE, CLUSTER_NETWORK_POLICY, KELP_NETWORK_POLICY, NETWORK_POLICY } from '../support/policy-cases';

const SUBSET = [
  'NP: an empty podSelector selects every pod of its namespace; no ingress rules deny all ingress',
  'NP peer: namespaceSelector and podSelector in one peer are ANDed',
  'NP egress peer: namespaceSelector {} with a podSelector selects those pods in every namespace, and no outside address',
  "NP ipBlock (egress): one pod's /32 with a port",
  'NP ports: UDP',
  'NP named port (egress): resolved on each destination pod, matching no outside address',
  'NP is stateful: replies get through a direction that denies new connections',
  'NP denying both directions: the pod still talks to its own node, both ways',
  "NP: a pod's label change moves it into and out of a peer selector",
  "NP: a namespace's label change takes effect",
  'CNP: an Admin Deny wins over a NetworkPolicy allow',
  'CNP: a Baseline Deny applies to the pods no NetworkPolicy selects',
  'CNP egress peers: networks, pods and namespaces (with a protocol)',
  'KNP: a Deny wins over a NetworkPolicy allow',
  'Tiers: an Admin Accept wins over a KNP Deny',
  'Audit: a NetworkPolicy marked audit-only drops nothing; unmarked, it drops',
];

const ALL = [...NETWORK_POLICY, ...CLUSTER_NETWORK_POLICY, ...KELP_NETWORK_POLICY, ...AUDIT_MODE];
const NATIVE_CASES = SUBSET.map((name) => {
  const c = ALL.find((x) => x.name === name);
  if (!c) throw new Error(`no policy matrix case named ${JSON.stringify(name)}`);
  return c;
});

describe.each([
  { mode: 'vxlan', tag: 'mpv', cases: ALL },
  { mode: 'native', tag: 'mpn', cases: NATIVE_CASES },
] as const)('policy matrix across three nodes, $mode routing', ({ mode, tag, cases }) => {
  let c: Cluster;
  let m: PolicyMatrix;

  beforeAll(async () => {
    c = await Cluster.start({ tag, nodes: 3, mode, source: 'standalone', objects: matrixNamespaces() });
    await c.meshed();
    m = await PolicyMatrix.startAcross(c);
  }, 180_000);

  afterAll(async () => {
    await m?.stopPeers();
    await c?.stop();
  });

  it('the pods are spread: each node holds three, of three namespaces', () => {
    for (const n of c.nodes) expect(new Set(n.pods.map((p) => p.namespace)).size, n.name).toBe(3);
  });

  it('no policy: every pod reaches every pod, its node and the outside; each node reaches its pods; nothing counted as a policy drop', async () => {
    expect(await m.check({})).toBe('');
    const counters = await m.counters();
    for (const p of m.t.pods) {
      expect(counters.get(`${p.id} forwarded`), p.id).toBeGreaterThan(0n);
      expect(counters.get(`${p.id} ${REASON_POLICY_DENY}`), p.id).toBeUndefined();
      expect(counters.get(`${p.id} ${REASON_AUDIT}`), p.id).toBeUndefined();
    }
  });

  it.each(cases.map((x) => [x.name, x] as const))('%s', async (_name, x) => {
    await m.run(x);
  });
});
