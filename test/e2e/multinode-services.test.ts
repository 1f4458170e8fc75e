// Services across nodes (issue 13, "Policy and services across nodes"): three nodes
// (test/support/cluster.ts, standalone, in both routing modes), the services suite's pods and
// svc-peer processes (test/support/services.ts) spread over them, each node's agent with socket
// LB on a cgroup of its own that the node's peer joins, and an outside host on the underlay:
//   node 1: client-a, web-1    node 2: web-2    node 3: web-3, client-b
// Services and their EndpointSlices (nodeName per endpoint, as the controller writes them) are
// applied on every node. What is asserted:
//   - a ClusterIP whose backends are all on other nodes: from a pod every backend answers and sees
//     the pod's own address; from a node (socket LB) every backend answers;
//   - internalTrafficPolicy Local: each client reaches only the endpoints of its own node, and a
//     node with none drops;
//   - externalTrafficPolicy Local: the NodePort of the node holding the backend answers the
//     outside with the outside's own address; a node without a local endpoint drops;
//   - node loss: the backends on a node gone from the cluster drop out, and come back with it;
//   - externalTrafficPolicy Cluster: the outside reaches a backend on another node through any
//     node's NodePort (SNAT to that node's address, so the reply comes back the way it went).
import { afterAll, beforeAll, describe, it } from 'vitest';
import { Cluster, ClusterNode, OUTSIDE_IP } from '../support/cluster';
import {
  Client,
  expectNoProblems,
  Manifest,
  NAMED_PORTS,
  NS,
  onlyProblem,
  POD_LABELS,
  PodName,
  Probed,
  Reply,
  service,
  sourceProblem,
  spreadProblem,
  tcp,
  Target,
  unansweredProblem,
} from '../support/services';
import type { Peer } from '../support/services';

/** Where each pod runs (node index). */
const PLACEMENT: Record<PodName, number> = { 'client-a': 1, 'web-1': 1, 'web-2': 2, 'web-3': 3, 'client-b': 3 };
const FLOWS = 24;
const FAIL_MS = 700;

describe.each([
  { mode: 'vxlan', tag: 'msv' },
  { mode: 'native', tag: 'msn' },
] as const)('services across three nodes, $mode routing', ({ mode, tag }) => {
  let c: Cluster;
  let n1: ClusterNode, n2: ClusterNode, n3: ClusterNode;

  beforeAll(async () => {
    c = await Cluster.start({ tag, nodes: 3, mode, source: 'standalone', socketLb: true, objects: [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } }] });
    [n1, n2, n3] = c.nodes;
    await c.meshed();
    await c.addPods((Object.keys(PLACEMENT) as PodName[]).map((p) => ({ node: c.node(PLACEMENT[p]), name: p, namespace: NS, labels: POD_LABELS[p], ports: NAMED_PORTS[p] })));
    await c.startPeers();
  }, 180_000);

  afterAll(async () => {
    await c?.stop();
  });

  const ip = (p: PodName) => c.pod(NS, p).ip;

  /** An EndpointSlice of `svc` (port `http` 8080) with these pods, each on its own node. */
  function slice(svc: string, pods: PodName[]): Manifest {
    return {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${svc}-1`, namespace: NS, labels: { 'kubernetes.io/service-name': svc, 'endpointslice.kubernetes.io/managed-by': 'e2e.kelp.dev' } },
      addressType: 'IPv4',
      ports: [{ name: 'http', protocol: 'TCP', port: 8080 }],
      endpoints: pods.map((p) => ({
        addresses: [ip(p)],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: c.pod(NS, p).node.name,
        targetRef: { kind: 'Pod', namespace: NS, name: p },
      })),
    };
  }

  /** `n` new flows from a peer to `to`. */
  async function ask(from: Peer, label: Client, to: Target, what: string, n: number, timeoutMs = 2000): Promise<Probed> {
    const replies: Reply[] = [];
    for (let i = 0; i < n; i++) replies.push(await from.request({ op: 'ask', ...to, timeoutMs }).result);
    return { from: label, to, what, replies };
  }

  const podPeer = (p: PodName) => c.pod(NS, p).peer!;
  const nodeLabel = (n: ClusterNode) => `node ${n.index}` as Client;

  /** Applies `objects` on every node, runs `body`, deletes them whatever happened. */
  async function withObjects(objects: Manifest[], body: () => Promise<void>): Promise<void> {
    await c.apply(objects);
    try {
      await body();
    } finally {
      await c.delete(objects);
    }
  }

  it('ClusterIP with every backend on other nodes: reached from a pod (which each backend sees as itself) and from a node through socket LB', async () => {
    const vip = '10.96.100.1';
    const objects = [service('remote', { clusterIP: vip, ports: [{ name: 'http', port: 80, targetPort: 8080 }] }), slice('remote', ['web-2', 'web-3'])];
    await withObjects(objects, async () => {
      const fromPod = await ask(podPeer('client-a'), 'client-a', tcp(vip, 80), 'remote ClusterIP', FLOWS);
      const fromNode = await ask(n1.peer!, nodeLabel(n1), tcp(vip, 80), 'remote ClusterIP', FLOWS);
      expectNoProblems(
        spreadProblem(fromPod, ['web-2:8080', 'web-3:8080']),
        sourceProblem(fromPod, ip('client-a')),
        spreadProblem(fromNode, ['web-2:8080', 'web-3:8080']),
      );
    });
  });

  it('node loss: the backends on a node gone from the cluster drop out of a ClusterIP, and return with it', async () => {
    const vip = '10.96.100.5';
    const objects = [service('lossy', { clusterIP: vip, ports: [{ name: 'http', port: 80, targetPort: 8080 }] }), slice('lossy', ['web-2', 'web-3'])];
    await withObjects(objects, async () => {
      await c.removeNode(n2);
      try {
        expectNoProblems(onlyProblem(await ask(podPeer('client-a'), 'client-a', tcp(vip, 80), 'node 2 gone', FLOWS), ['web-3:8080']));
      } finally {
        await c.restoreNode(n2);
      }
      expectNoProblems(spreadProblem(await ask(podPeer('client-a'), 'client-a', tcp(vip, 80), 'node 2 back', FLOWS), ['web-2:8080', 'web-3:8080']));
    });
  });

  it('internalTrafficPolicy Local: each client reaches its own node\'s endpoint only; a node with none drops', async () => {
    const vip = '10.96.100.2';
    const objects = [service('local-in', { clusterIP: vip, internalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80, targetPort: 8080 }] }), slice('local-in', ['web-1', 'web-2'])];
    await withObjects(objects, async () => {
      expectNoProblems(
        onlyProblem(await ask(podPeer('client-a'), 'client-a', tcp(vip, 80), 'iTP Local, node 1', 8), ['web-1:8080']),
        onlyProblem(await ask(n2.peer!, nodeLabel(n2), tcp(vip, 80), 'iTP Local, node 2', 8), ['web-2:8080']),
        unansweredProblem(await ask(podPeer('client-b'), 'client-b', tcp(vip, 80), 'iTP Local, node 3 has no endpoint', 3, FAIL_MS)),
      );
    });
  });

  it('externalTrafficPolicy Local: the NodePort of the backend\'s node answers the outside, which the backend sees as itself; another node drops', async () => {
    const objects = [
      service('local-ext', { type: 'NodePort', clusterIP: '10.96.100.3', externalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30080 }] }),
      slice('local-ext', ['web-2']),
    ];
    await withObjects(objects, async () => {
      const direct = await ask(c.outsidePeer!, 'outside', tcp(n2.address, 30080), 'eTP Local NodePort on node 2', 8);
      expectNoProblems(
        onlyProblem(direct, ['web-2:8080']),
        sourceProblem(direct, OUTSIDE_IP),
        unansweredProblem(await ask(c.outsidePeer!, 'outside', tcp(n1.address, 30080), 'eTP Local NodePort on node 1 (no endpoint)', 3, FAIL_MS)),
      );
    });
  });

  it('externalTrafficPolicy Cluster: a NodePort on a node without the backend forwards to the other node, SNATed to its own address', async () => {
    const objects = [
      service('cluster-ext', { type: 'NodePort', clusterIP: '10.96.100.4', externalTrafficPolicy: 'Cluster', ports: [{ name: 'http', port: 80, targetPort: 8080, nodePort: 30081 }] }),
      slice('cluster-ext', ['web-2']),
    ];
    await withObjects(objects, async () => {
      for (const n of [n1, n3]) {
        const p = await ask(c.outsidePeer!, 'outside', tcp(n.address, 30081), `eTP Cluster NodePort on node ${n.index}`, 8);
        expectNoProblems(onlyProblem(p, ['web-2:8080']), sourceProblem(p, n.address));
      }
      // And on the backend's own node.
      expectNoProblems(onlyProblem(await ask(c.outsidePeer!, 'outside', tcp(n2.address, 30081), 'eTP Cluster NodePort on node 2', 8), ['web-2:8080']));
    });
  });
});
