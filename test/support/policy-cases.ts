// The cases of the policy connectivity matrix (issue 11), each a list of steps with the full
// matrix expected after each, written by hand from the API text (NetworkPolicy,
// ClusterNetworkPolicy v1alpha2, kelp's KelpNetworkPolicy and the audit annotation); the topology
// and the expectation rules are in test/support/policy-matrix.ts. Run on one node by
// test/e2e/policy-matrix.test.ts and, a subset, across nodes by test/e2e/multinode-policy.test.ts:
// the same expectations hold wherever the pods run.
import { expect } from 'vitest';
import {
  all,
  AUDIT,
  Case,
  cnp,
  expr,
  ids,
  isPod,
  knp,
  namedPort,
  nothing,
  np,
  only,
  PodId,
  PodName,
  PortKey,
  sel,
  Step,
  tcpPort,
  tcpRange,
  udpPort,
  udpRange,
} from './policy-matrix';

/** What each named port means on each pod, as the topology declares it (undefined: the pod has no such port). */
const SERVE_80: Record<PodName, PortKey> = { a: 'tcp/80', b: 'tcp/81', c: 'tcp/80' };
const SERVE_81: Record<PodName, PortKey | undefined> = { a: 'tcp/81', b: 'tcp/80', c: undefined };
const B_PODS: PodId[] = ['x/b', 'y/b', 'z/b'];
const OUT2_NET = '198.51.100.0/24';

export const NETWORK_POLICY: Case[] = [
  {
    name: 'NP: an empty podSelector selects every pod of its namespace; no ingress rules deny all ingress',
    steps: () => [{ apply: [np('x', 'deny-in', { podSelector: sel() })], expect: { ingress: only(ids('x'), nothing) } }],
  },
  {
    name: 'NP: matchLabels selects in the policy\'s namespace only (y/a, not x/a or z/a)',
    steps: () => [{ apply: [np('y', 'deny-a', { podSelector: sel({ pod: 'a' }), policyTypes: ['Ingress'] })], expect: { ingress: only(['y/a'], nothing) } }],
  },
  {
    name: 'NP: matchExpressions In; a podSelector peer alone means the policy\'s namespace',
    steps: () => [
      {
        apply: [np('z', 'in-ab', { podSelector: sel({}, expr('pod', 'In', 'a', 'b')), ingress: [{ from: [{ podSelector: sel() }] }] })],
        expect: { ingress: only(['z/a', 'z/b'], (_, p) => isPod(p, 'z')) },
      },
    ],
  },
  {
    name: 'NP: NotIn and DoesNotExist also select pods without the key',
    steps: () => [
      {
        apply: [
          np('x', 'notin-back', { podSelector: sel({}, expr('tier', 'NotIn', 'back')) }),
          np('y', 'no-app', { podSelector: sel({}, expr('app', 'DoesNotExist')) }),
        ],
        expect: { ingress: only(['x/a', 'x/c', 'y/c'], nothing) },
      },
    ],
  },
  {
    name: 'NP peers: Exists and DoesNotExist in a podSelector, across namespaces',
    steps: () => [
      {
        apply: [
          np('x', 'tiered', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel(), podSelector: sel({}, expr('tier', 'Exists')) }] }] }),
          np('y', 'untiered', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel(), podSelector: sel({}, expr('tier', 'DoesNotExist')) }] }] }),
        ],
        expect: {
          ingress: all(
            only(['x/a'], (_, p) => isPod(p) && p.pod !== 'c'),
            only(['y/a'], (_, p) => isPod(p) && p.pod === 'c'),
          ),
        },
      },
    ],
  },
  {
    name: 'NP peers: namespaceSelector expressions — NotIn matches a namespace without the key, DoesNotExist only it',
    steps: () => [
      {
        apply: [
          np('z', 'not-prod', { podSelector: sel(), ingress: [{ from: [{ namespaceSelector: sel({}, expr('env', 'NotIn', 'prod')) }] }] }),
          np('x', 'no-env', { podSelector: sel({ pod: 'b' }), ingress: [{ from: [{ namespaceSelector: sel({}, expr('env', 'DoesNotExist')) }] }] }),
        ],
        expect: { ingress: all(only(ids('z'), (_, p) => isPod(p, 'y', 'z')), only(['x/b'], (_, p) => isPod(p, 'z'))) },
      },
    ],
  },
  {
    name: 'NP peer: a podSelector alone never selects pods of another namespace',
    steps: () => [
      { apply: [np('x', 'from-b', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ podSelector: sel({ pod: 'b' }) }] }] })], expect: { ingress: only(['x/a'], (_, p) => isPod(p, 'x/b')) } },
    ],
  },
  {
    name: 'NP peer: a namespaceSelector alone selects every pod of the matching namespaces',
    steps: () => [
      { apply: [np('x', 'from-y', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }) }] }] })], expect: { ingress: only(['x/a'], (_, p) => isPod(p, 'y')) } },
    ],
  },
  {
    name: 'NP peer: kubernetes.io/metadata.name, which every namespace carries, selects a namespace by name',
    steps: () => [
      {
        apply: [np('y', 'from-z', { podSelector: sel({ pod: 'c' }), ingress: [{ from: [{ namespaceSelector: sel({ 'kubernetes.io/metadata.name': 'z' }) }] }] })],
        expect: { ingress: only(['y/c'], (_, p) => isPod(p, 'z')) },
      },
    ],
  },
  {
    name: 'NP peer: namespaceSelector and podSelector in one peer are ANDed',
    steps: () => [
      {
        apply: [np('x', 'from-yb', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }), podSelector: sel({ pod: 'b' }) }] }] })],
        expect: { ingress: only(['x/a'], (_, p) => isPod(p, 'y/b')) },
      },
    ],
  },
  {
    name: 'NP peers: separate peers are ORed',
    steps: () => [
      {
        apply: [np('x', 'from-y-or-b', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }) }, { podSelector: sel({ pod: 'b' }) }] }] })],
        expect: { ingress: only(['x/a'], (_, p) => isPod(p, 'y', 'x/b')) },
      },
    ],
  },
  {
    name: 'NP egress peer: namespaceSelector {} with a podSelector selects those pods in every namespace, and no outside address',
    steps: () => [
      {
        apply: [np('z', 'to-c', { podSelector: sel({ pod: 'c' }), policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: sel(), podSelector: sel({ pod: 'c' }) }] }] })],
        expect: { egress: only(['z/c'], (_, p) => isPod(p) && p.pod === 'c') },
      },
    ],
  },
  {
    name: 'NP ipBlock (ingress): matches pod addresses; except carves out one pod and the node, which still reaches its pod',
    steps: (t) => [
      {
        apply: [np('x', 'cidr-in', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ ipBlock: { cidr: '0.0.0.0/0', except: [`${t.pod('y/b').ip}/32`, `${t.nodeIp}/32`] } }] }] })],
        expect: { ingress: only(['x/a'], (_, p) => !isPod(p, 'y/b')) },
      },
    ],
  },
  {
    name: 'NP ipBlock (egress): 0.0.0.0/0 matches pods and the outside; except an outside network; the node stays reachable',
    steps: (t) => [
      {
        apply: [np('y', 'cidr-out', { podSelector: sel({ pod: 'b' }), policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '0.0.0.0/0', except: [OUT2_NET, `${t.nodeIp}/32`] } }] }] })],
        expect: { egress: only(['y/b'], (_, p) => p.id !== 'out2') },
      },
    ],
  },
  {
    name: 'NP ipBlock (egress): one pod\'s /32 with a port',
    steps: (t) => [
      {
        apply: [np('x', 'to-zc', { podSelector: sel({ pod: 'c' }), policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: `${t.pod('z/c').ip}/32` } }], ports: [{ protocol: 'TCP', port: 80 }] }] })],
        expect: { egress: only(['x/c'], (_, p, port) => isPod(p, 'z/c') && port === 'tcp/80') },
      },
    ],
  },
  {
    name: 'NP ports: the protocol defaults to TCP',
    steps: () => [{ apply: [np('y', 'port-80', { podSelector: sel(), ingress: [{ ports: [{ port: 80 }] }] })], expect: { ingress: only(ids('y'), (_, __, port) => port === 'tcp/80') } }],
  },
  {
    name: 'NP ports: UDP',
    steps: () => [
      {
        apply: [np('z', 'udp-80', { podSelector: sel({ pod: 'b' }), ingress: [{ from: [{ namespaceSelector: sel() }], ports: [{ protocol: 'UDP', port: 80 }] }] })],
        expect: { ingress: only(['z/b'], (_, __, port) => port === 'udp/80') },
      },
    ],
  },
  {
    name: 'NP ports: endPort ranges, in ingress and egress',
    steps: () => [
      {
        apply: [
          np('x', 'range-in', { podSelector: sel({ pod: 'b' }), ingress: [{ ports: [{ port: 81, endPort: 85 }] }] }),
          np('y', 'range-out', { podSelector: sel({ pod: 'c' }), policyTypes: ['Egress'], egress: [{ ports: [{ protocol: 'UDP', port: 53, endPort: 80 }, { port: 1, endPort: 80 }] }] }),
        ],
        expect: { ingress: only(['x/b'], (_, __, port) => port === 'tcp/81'), egress: only(['y/c'], (_, __, port) => port !== 'tcp/81') },
      },
    ],
  },
  {
    name: 'NP named port (ingress): resolved on each selected pod',
    steps: () => [
      { apply: [np('x', 'serve-80', { podSelector: sel(), ingress: [{ ports: [{ port: 'serve-80' }] }] })], expect: { ingress: only(ids('x'), (self, __, port) => port === SERVE_80[self.pod]) } },
    ],
  },
  {
    name: 'NP named port (egress): resolved on each destination pod, matching no outside address',
    steps: () => [
      {
        apply: [np('y', 'to-serve-81', { podSelector: sel({ pod: 'a' }), policyTypes: ['Egress'], egress: [{ ports: [{ port: 'serve-81' }] }] })],
        expect: { egress: only(['y/a'], (_, p, port) => isPod(p) && port === SERVE_81[p.pod]) },
      },
    ],
  },
  {
    name: 'NP named ports on two pods with the same labels (one identity) that number the name differently: each resolved, none dropped',
    steps: (): Step[] => [
      {
        pods: { 'x/b': { pod: 'a', app: 'web', tier: 'front' } },
        apply: [
          np('x', 'in-serve-81', { podSelector: sel({ pod: 'a' }), ingress: [{ ports: [{ port: 'serve-81' }] }] }),
          np('y', 'out-serve-80', {
            podSelector: sel({ pod: 'a' }),
            policyTypes: ['Egress'],
            egress: [{ to: [{ namespaceSelector: sel({ ns: 'x' }), podSelector: sel({ pod: 'a' }) }], ports: [{ port: 'serve-80' }] }],
          }),
        ],
        expect: {
          ingress: only(['x/a', 'x/b'], (self, __, port) => port === SERVE_81[self.pod]),
          egress: only(['y/a'], (_, p, port) => isPod(p, 'x/a', 'x/b') && port === SERVE_80[p.pod]),
        },
      },
    ],
  },
  {
    name: 'NP named port with the wrong protocol matches nothing (dns is UDP)',
    steps: () => [
      {
        apply: [
          np('z', 'dns-tcp', { podSelector: sel({ pod: 'a' }), ingress: [{ ports: [{ port: 'dns' }] }] }),
          np('z', 'dns-udp', { podSelector: sel({ pod: 'b' }), ingress: [{ ports: [{ protocol: 'UDP', port: 'dns' }] }] }),
        ],
        expect: { ingress: all(only(['z/a'], nothing), only(['z/b'], (_, __, port) => port === 'udp/80')) },
      },
    ],
  },
  {
    name: 'NP policyTypes unset with egress rules: Ingress and Egress, so all ingress is denied too',
    steps: () => [
      {
        apply: [np('x', 'egress-only-rules', { podSelector: sel({ pod: 'a' }), egress: [{ to: [{ podSelector: sel() }] }] })],
        expect: { ingress: only(['x/a'], nothing), egress: only(['x/a'], (_, p) => isPod(p, 'x')) },
      },
    ],
  },
  {
    name: 'NP policyTypes [Egress] leaves ingress alone; unset with ingress rules only leaves egress alone',
    steps: () => [
      {
        apply: [
          np('x', 'egress-to-y', { podSelector: sel({ pod: 'b' }), policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: sel({ ns: 'y' }) }] }] }),
          np('y', 'ingress-from-x', { podSelector: sel({ pod: 'b' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'x' }) }] }] }),
        ],
        expect: { ingress: only(['y/b'], (_, p) => isPod(p, 'x')), egress: only(['x/b'], (_, p) => isPod(p, 'y')) },
      },
    ],
  },
  {
    name: 'NP: an empty rule list denies; one rule with no peers and no ports allows everything (the same policy, updated)',
    steps: () => [
      {
        what: 'empty lists',
        apply: [np('y', 'lists', { podSelector: sel(), policyTypes: ['Ingress', 'Egress'], ingress: [], egress: [] })],
        expect: { ingress: only(ids('y'), nothing), egress: only(ids('y'), nothing) },
      },
      {
        what: 'one empty rule each',
        apply: [np('y', 'lists', { podSelector: sel(), policyTypes: ['Ingress', 'Egress'], ingress: [{}], egress: [{}] })],
        expect: {},
      },
    ],
  },
  {
    name: 'NP: the policies selecting a pod are a union',
    steps: () => [
      {
        apply: [
          np('x', 'u1', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }) }], ports: [{ port: 80 }] }] }),
          np('x', 'u2', { podSelector: sel({ app: 'web' }), ingress: [{ from: [{ podSelector: sel({ pod: 'b' }) }] }] }),
          np('x', 'u3', { podSelector: sel(), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'z' }), podSelector: sel({ pod: 'c' }) }], ports: [{ protocol: 'UDP', port: 80 }] }] }),
        ],
        expect: {
          ingress: all(
            only(['x/a'], (_, p, port) => (isPod(p, 'y') && port === 'tcp/80') || isPod(p, 'x/b') || (isPod(p, 'z/c') && port === 'udp/80')),
            only(['x/b', 'x/c'], (_, p, port) => isPod(p, 'z/c') && port === 'udp/80'),
          ),
        },
      },
    ],
  },
  {
    name: 'NP is stateful: replies get through a direction that denies new connections',
    steps: () => [
      {
        apply: [np('x', 'no-ingress', { podSelector: sel({ pod: 'a' }), policyTypes: ['Ingress'] }), np('y', 'no-egress', { podSelector: sel({ pod: 'b' }), policyTypes: ['Egress'] })],
        expect: { ingress: only(['x/a'], nothing), egress: only(['y/b'], nothing) },
        // ICMP errors about an allowed flow are replies too: the port unreachable comes into x/a
        // and out of y/b; about a denied flow there is none, as the datagram never arrived.
        also: async (pm) => {
          expect(await pm.refused('x/a', 'y/b'), 'x/a -> y/b udp/99: port unreachable back into x/a').toEqual({ ok: true });
          expect(await pm.refused('x/c', 'y/b'), 'x/c -> y/b udp/99: port unreachable out of y/b').toEqual({ ok: true });
          expect((await pm.refused('y/a', 'x/a')).ok, 'y/a -> x/a udp/99: denied, so nothing comes back').toBe(false);
        },
      },
    ],
  },
  {
    name: 'NP denying both directions: the pod still talks to its own node, both ways',
    steps: () => [
      { apply: [np('z', 'isolated', { podSelector: sel({ pod: 'c' }), policyTypes: ['Ingress', 'Egress'] })], expect: { ingress: only(['z/c'], nothing), egress: only(['z/c'], nothing) } },
    ],
  },
  {
    name: 'NP update and delete take effect on running pods',
    steps: () => {
      const created = np('x', 'upd', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ podSelector: sel({ pod: 'b' }) }] }] });
      const updated = np('x', 'upd', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel(), podSelector: sel({ pod: 'c' }) }], ports: [{ port: 81 }] }] });
      return [
        { what: 'created', apply: [created], expect: { ingress: only(['x/a'], (_, p) => isPod(p, 'x/b')) } },
        { what: 'updated', apply: [updated], expect: { ingress: only(['x/a'], (_, p, port) => isPod(p) && p.pod === 'c' && port === 'tcp/81') } },
        { what: 'deleted', delete: [updated], expect: {} },
      ];
    },
  },
  {
    name: 'NP: a pod\'s label change moves it into and out of a policy\'s subject',
    steps: () => [
      { what: 'y/a selected', apply: [np('y', 'iso-a', { podSelector: sel({ pod: 'a' }), policyTypes: ['Ingress'] })], expect: { ingress: only(['y/a'], nothing) } },
      { what: 'y/b relabelled pod=a', pods: { 'y/b': { pod: 'a', app: 'db', tier: 'back' } }, expect: { ingress: only(['y/a', 'y/b'], nothing) } },
      { what: 'y/a relabelled pod=gone', pods: { 'y/a': { pod: 'gone', app: 'web', tier: 'front' } }, expect: { ingress: only(['y/b'], nothing) } },
    ],
  },
  {
    name: 'NP: a pod\'s label change moves it into and out of a peer selector',
    steps: (): Step[] => [
      {
        what: 'no client yet',
        apply: [np('x', 'from-clients', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel(), podSelector: sel({ role: 'client' }) }] }] })],
        expect: { ingress: only(['x/a'], nothing) },
      },
      { what: 'z/c labelled role=client', pods: { 'z/c': { pod: 'c', role: 'client' } }, expect: { ingress: only(['x/a'], (_, p) => isPod(p, 'z/c')) } },
      {
        what: 'the label moved from z/c to y/a',
        pods: { 'z/c': { pod: 'c' }, 'y/a': { pod: 'a', app: 'web', tier: 'front', role: 'client' } },
        expect: { ingress: only(['x/a'], (_, p) => isPod(p, 'y/a')) },
      },
    ],
  },
  {
    name: 'NP: a namespace\'s label change takes effect',
    steps: () => [
      { what: 'env=dev is y', apply: [np('x', 'from-dev', { podSelector: sel(), ingress: [{ from: [{ namespaceSelector: sel({ env: 'dev' }) }] }] })], expect: { ingress: only(ids('x'), (_, p) => isPod(p, 'y')) } },
      { what: 'z labelled env=dev', namespaces: { z: { ns: 'z', env: 'dev' } }, expect: { ingress: only(ids('x'), (_, p) => isPod(p, 'y', 'z')) } },
      { what: 'y relabelled env=test', namespaces: { y: { ns: 'y', env: 'test' } }, expect: { ingress: only(ids('x'), (_, p) => isPod(p, 'z')) } },
    ],
  },
];

export const CLUSTER_NETWORK_POLICY: Case[] = [
  {
    name: 'CNP: an Admin Deny wins over a NetworkPolicy allow',
    steps: () => [
      {
        apply: [
          np('x', 'allow-all', { podSelector: sel(), ingress: [{}] }),
          cnp('pmx-admin-deny-y', { tier: 'Admin', priority: 10, subject: { namespaces: sel({ ns: 'x' }) }, ingress: [{ name: 'deny-y', action: 'Deny', from: [{ namespaces: sel({ ns: 'y' }) }] }] }),
        ],
        expect: { ingress: only(ids('x'), (_, p) => !isPod(p, 'y')) },
      },
    ],
  },
  {
    name: 'CNP: an Admin Accept wins over a NetworkPolicy deny',
    steps: () => [
      {
        apply: [
          np('y', 'deny-in', { podSelector: sel(), policyTypes: ['Ingress'] }),
          cnp('pmx-admin-accept-xa', {
            tier: 'Admin',
            priority: 10,
            subject: { namespaces: sel({ ns: 'y' }) },
            ingress: [{ action: 'Accept', from: [{ pods: { namespaceSelector: sel({ ns: 'x' }), podSelector: sel({ pod: 'a' }) } }] }],
          }),
        ],
        expect: { ingress: only(ids('y'), (_, p) => isPod(p, 'x/a')) },
      },
    ],
  },
  {
    name: 'CNP: an Admin Pass hands the traffic to the NetworkPolicy tier, skipping the rest of its tier',
    steps: () => [
      {
        apply: [
          cnp('pmx-admin-pass', {
            tier: 'Admin',
            priority: 5,
            subject: { namespaces: sel({ ns: 'z' }) },
            ingress: [
              { action: 'Pass', from: [{ namespaces: sel({ ns: 'x' }) }] },
              { action: 'Deny', from: [{ namespaces: sel() }] },
            ],
          }),
          np('z', 'x-80', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'x' }) }], ports: [{ port: 80 }] }] }),
        ],
        // From x: passed; z/a's NetworkPolicy allows TCP 80 only, z/b and z/c have none (default allow).
        expect: { ingress: only(ids('z'), (self, p, port) => isPod(p, 'x') && (self.pod !== 'a' || port === 'tcp/80')) },
      },
    ],
  },
  {
    name: 'CNP priorities: the lower number decides first, and a changed priority reorders',
    steps: () => {
      const deny80 = (priority: number) =>
        cnp('pmx-prio-deny', { tier: 'Admin', priority, subject: { namespaces: sel({ ns: 'x' }) }, ingress: [{ action: 'Deny', from: [{ namespaces: sel({ ns: 'y' }) }], protocols: [tcpPort(80)] }] });
      return [
        {
          what: 'Deny at 10, Accept at 20',
          apply: [
            np('x', 'deny-in', { podSelector: sel(), policyTypes: ['Ingress'] }),
            deny80(10),
            cnp('pmx-prio-accept', { tier: 'Admin', priority: 20, subject: { namespaces: sel({ ns: 'x' }) }, ingress: [{ action: 'Accept', from: [{ namespaces: sel({ ns: 'y' }) }] }] }),
          ],
          expect: { ingress: only(ids('x'), (_, p, port) => isPod(p, 'y') && port !== 'tcp/80') },
        },
        { what: 'Deny moved to 30', apply: [deny80(30)], expect: { ingress: only(ids('x'), (_, p) => isPod(p, 'y')) } },
      ];
    },
  },
  {
    name: 'CNP: rules apply in written order within a policy',
    steps: () => {
      const accept = { action: 'Accept', from: [{ pods: { namespaceSelector: sel(), podSelector: sel({ pod: 'a' }) } }] };
      const deny = { action: 'Deny', from: [{ namespaces: sel() }] };
      const order = (ingress: unknown[]) => cnp('pmx-order', { tier: 'Admin', priority: 10, subject: { pods: { namespaceSelector: sel(), podSelector: sel({ pod: 'b' }) } }, ingress });
      return [
        { what: 'Accept a-pods, then Deny all', apply: [order([accept, deny])], expect: { ingress: only(B_PODS, (_, p) => isPod(p) && p.pod === 'a') } },
        { what: 'Deny all, then Accept a-pods', apply: [order([deny, accept])], expect: { ingress: only(B_PODS, nothing) } },
      ];
    },
  },
  {
    name: 'CNP: a Baseline Deny is overridden by a NetworkPolicy selecting the pod',
    steps: () => [
      {
        apply: [
          cnp('pmx-baseline-deny-z', { tier: 'Baseline', priority: 10, subject: { namespaces: sel() }, ingress: [{ action: 'Deny', from: [{ namespaces: sel({ ns: 'z' }) }] }] }),
          np('x', 'allow-all', { podSelector: sel({ pod: 'a' }), ingress: [{}] }),
        ],
        expect: { ingress: only(ids('x', 'y', 'z').filter((id) => id !== 'x/a'), (_, p) => !isPod(p, 'z')) },
      },
    ],
  },
  {
    name: 'CNP: a Baseline Deny applies to the pods no NetworkPolicy selects',
    steps: () => [
      {
        apply: [
          cnp('pmx-baseline-deny-y', { tier: 'Baseline', priority: 10, subject: { namespaces: sel({ ns: 'y' }) }, ingress: [{ action: 'Deny', from: [{ namespaces: sel() }] }] }),
          np('y', 'from-x', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'x' }) }] }] }),
        ],
        expect: { ingress: all(only(['y/a'], (_, p) => isPod(p, 'x')), only(['y/b', 'y/c'], nothing)) },
      },
    ],
  },
  {
    name: 'CNP: a Baseline Pass goes to the default allow; a later Baseline Deny catches the rest',
    steps: () => [
      {
        apply: [
          cnp('pmx-baseline-pass', { tier: 'Baseline', priority: 1, subject: { namespaces: sel({ ns: 'z' }) }, ingress: [{ action: 'Pass', from: [{ namespaces: sel({ ns: 'x' }) }] }] }),
          cnp('pmx-baseline-deny', { tier: 'Baseline', priority: 2, subject: { namespaces: sel({ ns: 'z' }) }, ingress: [{ action: 'Deny', from: [{ namespaces: sel() }] }] }),
        ],
        expect: { ingress: only(ids('z'), (_, p) => isPod(p, 'x')) },
      },
    ],
  },
  {
    name: 'CNP subject: by namespaces versus by pods',
    steps: () => [
      {
        apply: [
          cnp('pmx-subject-ns', { tier: 'Admin', priority: 10, subject: { namespaces: sel({ env: 'dev' }) }, egress: [{ action: 'Deny', to: [{ namespaces: sel({ ns: 'z' }) }] }] }),
          cnp('pmx-subject-pods', {
            tier: 'Admin',
            priority: 11,
            subject: { pods: { namespaceSelector: sel({ env: 'prod' }), podSelector: sel({ pod: 'c' }) } },
            ingress: [{ action: 'Deny', from: [{ namespaces: sel() }] }],
          }),
        ],
        expect: { egress: only(ids('y'), (_, p) => !isPod(p, 'z')), ingress: only(['x/c'], nothing) },
      },
    ],
  },
  {
    name: 'CNP egress peers: networks, pods and namespaces (with a protocol)',
    steps: () => [
      {
        apply: [
          cnp('pmx-peers', {
            tier: 'Admin',
            priority: 10,
            subject: { namespaces: sel({ ns: 'z' }) },
            egress: [
              { name: 'out2', action: 'Deny', to: [{ networks: [OUT2_NET] }] },
              { name: 'xa', action: 'Deny', to: [{ pods: { namespaceSelector: sel({ ns: 'x' }), podSelector: sel({ pod: 'a' }) } }] },
              { name: 'y-udp', action: 'Deny', to: [{ namespaces: sel({ ns: 'y' }) }], protocols: [udpPort(80)] },
            ],
          }),
        ],
        expect: { egress: only(ids('z'), (_, p, port) => !(p.id === 'out2' || isPod(p, 'x/a') || (isPod(p, 'y') && port === 'udp/80'))) },
      },
    ],
  },
  {
    name: 'CNP networks match pod addresses too',
    steps: (t) => [
      {
        apply: [cnp('pmx-no-pods', { tier: 'Admin', priority: 10, subject: { pods: { namespaceSelector: sel({ ns: 'x' }), podSelector: sel({ pod: 'b' }) } }, egress: [{ action: 'Deny', to: [{ networks: [t.podCidr] }] }] })],
        expect: { egress: only(['x/b'], (_, p) => !isPod(p)) },
      },
    ],
  },
  {
    name: 'CNP protocols: a port range and a named port (resolved per destination pod)',
    steps: () => [
      {
        apply: [
          cnp('pmx-range', { tier: 'Admin', priority: 10, subject: { namespaces: sel({ ns: 'x' }) }, ingress: [{ action: 'Deny', from: [{ namespaces: sel() }], protocols: [tcpRange(81, 82)] }] }),
          cnp('pmx-named', { tier: 'Admin', priority: 20, subject: { namespaces: sel({ ns: 'y' }) }, ingress: [{ action: 'Deny', from: [{ namespaces: sel() }], protocols: [namedPort('serve-80')] }] }),
        ],
        expect: { ingress: all(only(ids('x'), (_, __, port) => port !== 'tcp/81'), only(ids('y'), (self, __, port) => port !== SERVE_80[self.pod])) },
      },
    ],
  },
  {
    name: 'CNP: an Admin egress Accept to a network wins over a NetworkPolicy egress deny',
    steps: (t) => [
      {
        apply: [
          np('x', 'deny-out', { podSelector: sel(), policyTypes: ['Egress'] }),
          cnp('pmx-accept-out1', { tier: 'Admin', priority: 10, subject: { namespaces: sel({ ns: 'x' }) }, egress: [{ action: 'Accept', to: [{ networks: [`${t.outside[0].ip}/32`] }] }] }),
        ],
        expect: { egress: only(ids('x'), (_, p) => p.id === 'out1') },
      },
    ],
  },
  {
    name: 'CNP: an Admin egress Accept does not override the destination\'s ingress',
    steps: () => [
      {
        apply: [
          cnp('pmx-accept-to-y', { tier: 'Admin', priority: 10, subject: { namespaces: sel({ ns: 'x' }) }, egress: [{ action: 'Accept', to: [{ namespaces: sel({ ns: 'y' }) }] }] }),
          np('y', 'deny-in', { podSelector: sel({ pod: 'a' }), policyTypes: ['Ingress'] }),
        ],
        expect: { ingress: only(['y/a'], nothing) },
      },
    ],
  },
  {
    name: 'CNP fails closed on a peer it does not know: Deny denies everything, Accept accepts nothing',
    steps: () => [
      {
        apply: [
          cnp('pmx-unknown-deny', {
            tier: 'Admin',
            priority: 10,
            subject: { pods: { namespaceSelector: sel({ ns: 'x' }), podSelector: sel({ pod: 'a' }) } },
            egress: [{ action: 'Deny', to: [{ futurePeer: { name: 'from-a-later-api' } }] }],
          }),
          np('z', 'deny-in', { podSelector: sel({ pod: 'a' }), policyTypes: ['Ingress'] }),
          cnp('pmx-unknown-accept', {
            tier: 'Admin',
            priority: 11,
            subject: { pods: { namespaceSelector: sel({ ns: 'z' }), podSelector: sel({ pod: 'a' }) } },
            ingress: [{ action: 'Accept', from: [{ futurePeer: { name: 'from-a-later-api' } }] }],
          }),
        ],
        expect: { egress: only(['x/a'], nothing), ingress: only(['z/a'], nothing) },
      },
    ],
  },
];

export const KELP_NETWORK_POLICY: Case[] = [
  {
    name: 'KNP: a Deny wins over a NetworkPolicy allow',
    steps: () => [
      {
        apply: [
          np('x', 'allow-all', { podSelector: sel(), ingress: [{}] }),
          knp('x', 'deny-y', { subject: { podSelector: sel() }, ingress: [{ name: 'deny-y', action: 'Deny', from: [{ namespaces: sel({ ns: 'y' }) }] }] }),
        ],
        expect: { ingress: only(ids('x'), (_, p) => !isPod(p, 'y')) },
      },
    ],
  },
  {
    name: 'KNP: an Accept allows what a NetworkPolicy isolates; an Accept-only policy isolates its direction',
    steps: () => [
      {
        apply: [
          np('y', 'deny-a', { podSelector: sel({ pod: 'a' }), policyTypes: ['Ingress'] }),
          knp('y', 'accept-c80', { subject: { podSelector: sel({ pod: 'a' }) }, ingress: [{ action: 'Accept', from: [{ pods: { namespaceSelector: sel(), podSelector: sel({ pod: 'c' }) } }], protocols: [tcpPort(80)] }] }),
          knp('z', 'accept-x', { subject: { podSelector: sel({ pod: 'b' }) }, ingress: [{ action: 'Accept', from: [{ namespaces: sel({ ns: 'x' }) }] }] }),
        ],
        expect: { ingress: all(only(['y/a'], (_, p, port) => isPod(p) && p.pod === 'c' && port === 'tcp/80'), only(['z/b'], (_, p) => isPod(p, 'x'))) },
      },
    ],
  },
  {
    name: 'KNP: a deny-only policy is a default deny for its direction; with a NetworkPolicy allow, only its Deny bites',
    steps: () => [
      {
        apply: [
          knp('x', 'deny-out2', { subject: { podSelector: sel({ pod: 'c' }) }, egress: [{ action: 'Deny', to: [{ networks: [OUT2_NET] }] }] }),
          knp('y', 'deny-out2', { subject: { podSelector: sel({ pod: 'c' }) }, egress: [{ action: 'Deny', to: [{ networks: [OUT2_NET] }] }] }),
          np('y', 'allow-out', { podSelector: sel({ pod: 'c' }), policyTypes: ['Egress'], egress: [{}] }),
        ],
        expect: { egress: all(only(['x/c'], nothing), only(['y/c'], (_, p) => p.id !== 'out2')) },
      },
    ],
  },
  {
    name: 'KNP: an empty rule list changes nothing; a rule in the other direction isolates only that one',
    steps: () => [
      { what: 'both lists empty', apply: [knp('y', 'lists', { subject: { podSelector: sel() }, ingress: [], egress: [] })], expect: {} },
      {
        what: 'an egress rule added',
        apply: [knp('y', 'lists', { subject: { podSelector: sel() }, ingress: [], egress: [{ action: 'Accept', to: [{ namespaces: sel({ ns: 'y' }) }] }] })],
        expect: { egress: only(ids('y'), (_, p) => isPod(p, 'y')) },
      },
    ],
  },
  {
    name: 'KNP protocols: a named port (per destination pod) and a UDP range',
    steps: () => [
      {
        apply: [
          knp('z', 'named', {
            subject: { podSelector: sel() },
            ingress: [
              { action: 'Deny', from: [{ namespaces: sel() }], protocols: [namedPort('serve-81')] },
              { action: 'Accept', from: [{ namespaces: sel() }] },
            ],
          }),
          knp('x', 'udp-range', {
            subject: { podSelector: sel({ pod: 'a' }) },
            egress: [
              { action: 'Deny', to: [{ namespaces: sel() }], protocols: [udpRange(79, 81)] },
              { action: 'Accept', to: [{ namespaces: sel() }, { networks: ['0.0.0.0/0'] }] },
            ],
          }),
        ],
        expect: {
          ingress: only(ids('z'), (self, __, port) => port !== SERVE_81[self.pod]),
          egress: only(['x/a'], (_, p, port) => !(isPod(p) && port === 'udp/80')),
        },
      },
    ],
  },
  {
    name: 'Tiers: an Admin Accept wins over a KNP Deny',
    steps: () => [
      {
        apply: [
          cnp('pmx-admin-accept-x', { tier: 'Admin', priority: 10, subject: { namespaces: sel({ ns: 'y' }) }, ingress: [{ action: 'Accept', from: [{ namespaces: sel({ ns: 'x' }) }] }] }),
          knp('y', 'deny-all', { subject: { podSelector: sel() }, ingress: [{ action: 'Deny', from: [{ namespaces: sel() }] }] }),
        ],
        expect: { ingress: only(ids('y'), (_, p) => isPod(p, 'x')) },
      },
    ],
  },
  {
    name: 'Tiers: a KNP Accept (NetworkPolicy tier) wins over a Baseline Deny',
    steps: () => [
      {
        apply: [
          cnp('pmx-baseline-deny-z', { tier: 'Baseline', priority: 10, subject: { namespaces: sel({ ns: 'z' }) }, ingress: [{ action: 'Deny', from: [{ namespaces: sel() }] }] }),
          knp('z', 'accept-x', { subject: { podSelector: sel({ pod: 'a' }) }, ingress: [{ action: 'Accept', from: [{ namespaces: sel({ ns: 'x' }) }] }] }),
        ],
        expect: { ingress: all(only(['z/a'], (_, p) => isPod(p, 'x')), only(['z/b', 'z/c'], nothing)) },
      },
    ],
  },
];

// Audit-only: the matrix shows nothing dropped, and each subject pod's counters show the would-be
// drops (and no policy drop); unmarked, the same policy drops and the counters say so.
export const AUDIT_MODE: Case[] = [
  {
    name: 'Audit: a NetworkPolicy marked audit-only drops nothing; unmarked, it drops',
    steps: () => [
      { what: 'audit-only', apply: [np('x', 'audited', { podSelector: sel(), policyTypes: ['Ingress', 'Egress'] }, AUDIT)], expect: {}, reported: { pods: ids('x'), as: 'audit' } },
      {
        what: 'enforced',
        apply: [np('x', 'audited', { podSelector: sel(), policyTypes: ['Ingress', 'Egress'] })],
        expect: { ingress: only(ids('x'), nothing), egress: only(ids('x'), nothing) },
        reported: { pods: ids('x'), as: 'drop' },
      },
    ],
  },
  {
    name: 'Audit: a KelpNetworkPolicy Deny marked audit-only drops nothing; unmarked, it drops',
    steps: () => {
      const spec = { subject: { podSelector: sel() }, ingress: [{ action: 'Deny', from: [{ namespaces: sel({ ns: 'x' }) }] }, { action: 'Accept', from: [{ namespaces: sel() }] }] };
      return [
        { what: 'audit-only', apply: [knp('y', 'audited', spec, AUDIT)], expect: {}, reported: { pods: ids('y'), as: 'audit' } },
        { what: 'enforced', apply: [knp('y', 'audited', spec)], expect: { ingress: only(ids('y'), (_, p) => !isPod(p, 'x')) }, reported: { pods: ids('y'), as: 'drop' } },
      ];
    },
  },
  {
    name: 'Audit: a ClusterNetworkPolicy Admin Deny marked audit-only drops nothing; unmarked, it drops',
    steps: () => {
      const spec = { tier: 'Admin', priority: 10, subject: { namespaces: sel({ ns: 'z' }) }, egress: [{ action: 'Deny', to: [{ networks: ['0.0.0.0/0'] }] }] };
      return [
        { what: 'audit-only', apply: [cnp('pmx-audited', spec, AUDIT)], expect: {}, reported: { pods: ids('z'), as: 'audit' } },
        { what: 'enforced', apply: [cnp('pmx-audited', spec)], expect: { egress: only(ids('z'), nothing) }, reported: { pods: ids('z'), as: 'drop' } },
      ];
    },
  },
];
