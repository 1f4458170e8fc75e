// Services end to end (issue 12, section 1): real Services and EndpointSlices applied with
// `kelp apply --wait`, real clients in pods, in the node's own namespace (through socket LB: its
// client runs in the cgroup the agent's hooks are confined to) and outside the node, real
// servers in pods that say who answered, on which port, and whom they saw as the client. What
// each case expects is written by hand from the Kubernetes API text and from what kube-proxy
// does; nothing here reads kelp's own maps to decide what is right.
//
// The world (test/support/services.ts), fixed:
//   namespace svc; node zone-a (its Node manifest), InternalIP 192.168.250.1
//   pods web-1, web-2, web-3 {app: web}, client-a {app: client}, client-b {app: other}; each also {pod: <name>}
//   every peer serves TCP 8080, TCP 8081, UDP 5353
//   named ports: http = TCP 8080 everywhere; alt = TCP 8081 on web-1 and web-3, TCP 8080 on web-2; dns = UDP 5353
//   outside: 192.168.250.2 behind the node's uplink, also 198.51.100.10; it routes 203.0.113.0/24 to the node
// Endpoints on "elsewhere" are real pods of this node that a slice says live on another node:
// locality is what a slice's nodeName says, as for kube-proxy.
//
// SCTP: skipped here. This machine cannot open SCTP sockets at all (socket(AF_INET, SOCK_STREAM,
// IPPROTO_SCTP) fails with EPROTONOSUPPORT), so there is no SCTP client or server to run;
// test/datapath/lb.test.ts balances crafted SCTP packets.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ANSWER_MS,
  Client,
  CLOSED_PORT,
  ep,
  EndpointSpec,
  expectNoProblems,
  FAIL_MS,
  failProblem,
  Kept,
  networkPolicy,
  onlyProblem,
  OTHER_NODE,
  OTHER_ZONE,
  OUTSIDE_EXTRA_IP,
  PodName,
  Probed,
  Reply,
  sameProblem,
  service,
  ServicesWorld,
  slice,
  sourceProblem,
  spreadProblem,
  tally,
  unansweredProblem,
  tcp,
  udp,
  WEB,
  ZONE,
} from '../support/services';

let w: ServicesWorld;
beforeAll(async () => {
  w = await ServicesWorld.start('svc');
}, 120_000);
afterAll(async () => {
  await w?.stop();
});

/** Flows per spread check: with 3 backends, a fair balancer misses one with probability ~3·(2/3)^30 ≈ 2e-5. */
const FLOWS = 30;
const NODE_IP = '192.168.250.1';
const OUTSIDE_IP = '192.168.250.2';
const at = (pods: PodName[], port: number) => pods.map((p) => `${p}:${port}`);

describe('services harness (runs without the implementation)', () => {
  it('peers answer with who, where and from whom; a stopped server, a closed port and an unrouted address fail with their own reason; a DNS-like client reconnects after a socket error', async () => {
    const [direct, udpDirect, fromOutside, fromExtra] = await Promise.all([
      w.ask('client-a', tcp(w.podIp('web-1'), 8080), 'web-1 directly', 3),
      w.ask('node', udp(w.podIp('web-2'), 5353), 'web-2 directly', 3),
      w.ask('outside', tcp(NODE_IP, 8081), 'the node directly', 3),
      w.ask('outside', tcp(NODE_IP, 8081), 'the node directly, from the second address', 3, { localAddress: OUTSIDE_EXTRA_IP }),
    ]);
    expectNoProblems(
      spreadProblem(direct, ['web-1:8080']),
      sourceProblem(direct, w.podIp('client-a')),
      spreadProblem(udpDirect, ['web-2:5353']),
      spreadProblem(fromOutside, ['node:8081']),
      sourceProblem(fromOutside, OUTSIDE_IP),
      sourceProblem(fromExtra, OUTSIDE_EXTRA_IP),
    );

    await w.server('web-3', 'unlisten', 'tcp', 8080);
    try {
      const stopped = await w.ask('client-a', tcp(w.podIp('web-3'), 8080), 'web-3 with its server stopped', 3);
      expect(failProblem(stopped, 'ECONNREFUSED', 1000)).toBe('');
      expect(spreadProblem(stopped, ['web-3:8080'])).toBe(
        `client-a -> ${w.podIp('web-3')}:8080/TCP (web-3 with its server stopped), 3 new flows: expected every flow answered, by each of {web-3:8080} and no other; got ECONNREFUSED ×3`,
      );
    } finally {
      await w.server('web-3', 'listen', 'tcp', 8080);
    }
    expect(spreadProblem(await w.ask('client-a', tcp(w.podIp('web-3'), 8080), 'web-3 listening again', 2), ['web-3:8080'])).toBe('');

    // The DNS-like client: its connected socket's error (here an ICMP port unreachable while the
    // server is down) makes it reconnect and ask again, until the answer comes.
    const dns = await w.keep('client-a', udp(w.podIp('web-1'), 5353), 'web-1 directly, kept');
    try {
      await w.server('web-1', 'unlisten', 'udp', 5353);
      const asked = w.send(dns, { reconnect: true, timeoutMs: 3000 });
      await new Promise((r) => setTimeout(r, 400));
      await w.server('web-1', 'listen', 'udp', 5353);
      const r = await asked;
      expect(r, JSON.stringify(r)).toMatchObject({ ok: true, answer: { who: 'web-1' } });
      expect(r.events).toEqual(expect.arrayContaining(['ECONNREFUSED', 'reconnected']));
    } finally {
      await w.close(dns);
    }

    const [closedUdp, unrouted] = await Promise.all([
      w.ask('client-a', udp(w.podIp('web-1'), CLOSED_PORT), 'a closed UDP port', 2),
      w.ask('client-a', tcp('10.96.255.254', 80), 'an address nobody serves', 2, { timeoutMs: FAIL_MS }),
    ]);
    expect(failProblem(closedUdp, 'ECONNREFUSED', 1000)).toBe('');
    expect(failProblem(unrouted, 'timeout')).toBe('');
    expect(failProblem(unrouted, 'ECONNREFUSED')).toMatch(/expected every flow to fail with ECONNREFUSED; got timeout ×2 \(slowest \d+ ms\)$/);
  });

  it('the node\'s client runs in the suite\'s own cgroup, the one the agent is given as --cgroup-root', () => {
    const membership = readFileSync(`/proc/${w.peerPid('node')}/cgroup`, 'utf8');
    expect(membership).toMatch(new RegExp(`^0::/${w.cgroup.split('/').pop()}$`, 'm'));
    expect(w.sb.agentArgs()).toContain(`--cgroup-root=${w.cgroup}`);
  });
});

describe('services', () => {
  it('ClusterIP, slices derived from the selector: three ports (TCP by number, TCP by a name that differs per pod, UDP by name), every backend hit, from a pod and from the node; a pod relabelled out of the selector leaves', async () => {
    await w.run(async (apply) => {
      const vip = '10.96.0.10';
      await apply([
        service('multi', {
          clusterIP: vip,
          selector: { app: 'web' },
          ports: [
            { name: 'http', port: 80, targetPort: 8080 },
            { name: 'alt', port: 81, targetPort: 'alt' },
            { name: 'dns', protocol: 'UDP', port: 53, targetPort: 'dns' },
          ],
        }),
      ]);
      const r = await Promise.all([
        w.ask('client-a', tcp(vip, 80), 'svc/multi port http', FLOWS),
        w.ask('client-a', tcp(vip, 81), 'svc/multi port alt', FLOWS),
        w.ask('client-a', udp(vip, 53), 'svc/multi port dns', FLOWS),
        w.ask('node', tcp(vip, 80), 'svc/multi port http', FLOWS),
        w.ask('node', tcp(vip, 81), 'svc/multi port alt', FLOWS),
        w.ask('node', udp(vip, 53), 'svc/multi port dns', FLOWS),
      ]);
      const alt = ['web-1:8081', 'web-2:8080', 'web-3:8081'];
      expectNoProblems(
        spreadProblem(r[0], at(WEB, 8080)),
        spreadProblem(r[1], alt),
        spreadProblem(r[2], at(WEB, 5353)),
        spreadProblem(r[3], at(WEB, 8080)),
        spreadProblem(r[4], alt),
        spreadProblem(r[5], at(WEB, 5353)),
      );
      // The derived slices follow the pods: web-3 relabelled out of the selector leaves, and comes back.
      await w.relabel('web-3', { pod: 'web-3', app: 'retired' });
      const without = await Promise.all([w.ask('client-a', tcp(vip, 81), 'svc/multi port alt, web-3 relabelled app=retired', FLOWS), w.ask('node', udp(vip, 53), 'svc/multi port dns, web-3 relabelled app=retired', FLOWS)]);
      await w.relabel('web-3', { pod: 'web-3', app: 'web' });
      const back = await w.ask('client-a', tcp(vip, 81), 'svc/multi port alt, web-3 labelled app=web again', FLOWS);
      expectNoProblems(spreadProblem(without[0], ['web-1:8081', 'web-2:8080']), spreadProblem(without[1], at(['web-1', 'web-2'], 5353)), spreadProblem(back, alt));
    });
  });

  it('explicit slices: a named targetPort resolved per slice, the slice port matched by name and protocol', async () => {
    await w.run(async (apply) => {
      const vip = '10.96.0.11';
      // named-c's "http" is UDP: not the TCP Service port's, so web-3 is no backend of it.
      await apply([
        service('named', { clusterIP: vip, ports: [{ name: 'http', port: 80, targetPort: 'http' }] }),
        slice(w, 'named-a', 'named', [{ name: 'http', port: 8080 }], [ep('web-1')]),
        slice(w, 'named-b', 'named', [{ name: 'http', port: 8081 }], [ep('web-2')]),
        slice(w, 'named-c', 'named', [{ name: 'http', protocol: 'UDP', port: 5353 }], [ep('web-3')]),
      ]);
      const r = await Promise.all([w.ask('client-a', tcp(vip, 80), 'svc/named port http', FLOWS), w.ask('node', tcp(vip, 80), 'svc/named port http', FLOWS)]);
      expectNoProblems(spreadProblem(r[0], ['web-1:8080', 'web-2:8081']), spreadProblem(r[1], ['web-1:8080', 'web-2:8081']));
    });
  });

  it('no usable endpoint: TCP refused and UDP answered by ICMP unreachable at once, from a pod and from the node', async () => {
    await w.run(async (apply) => {
      const ports = [
        { name: 'http', port: 80, targetPort: 8080 },
        { name: 'dns', protocol: 'UDP' as const, port: 53, targetPort: 5353 },
      ];
      await apply([
        service('nobody', { clusterIP: '10.96.0.12', selector: { app: 'nobody' }, ports }),
        // Endpoints that are neither ready nor serving are no endpoints at all.
        service('unready', { clusterIP: '10.96.0.13', ports }),
        slice(w, 'unready-1', 'unready', [{ name: 'http', port: 8080 }, { name: 'dns', protocol: 'UDP', port: 5353 }], [ep('web-1', { ready: false, serving: false }), ep('web-2', { ready: false, serving: false, terminating: true })]),
      ]);
      const probes: Array<Promise<Probed>> = [];
      for (const from of ['client-a', 'node'] as Client[]) {
        for (const [vip, name] of [['10.96.0.12', 'svc/nobody'], ['10.96.0.13', 'svc/unready']]) {
          probes.push(w.ask(from, tcp(vip, 80), `${name} port http`, 3), w.ask(from, udp(vip, 53), `${name} port dns`, 3));
        }
      }
      expectNoProblems(...(await Promise.all(probes)).map((p) => failProblem(p, 'ECONNREFUSED', 1000)));
    });
  });

  it('endpoint conditions: ready endpoints serve; serving terminating ones only when none is ready', async () => {
    await w.run(async (apply) => {
      const vip = '10.96.0.14';
      const conditions = (eps: EndpointSpec[]) => slice(w, 'cond-1', 'cond', [{ name: 'http', port: 8080 }], eps);
      await apply([
        service('cond', { clusterIP: vip, ports: [{ name: 'http', port: 80, targetPort: 'http' }] }),
        conditions([ep('web-1'), ep('web-2', { ready: false, serving: true, terminating: true }), ep('web-3', { ready: false, serving: false })]),
      ]);
      const readyOnly = await w.ask('client-a', tcp(vip, 80), 'svc/cond: web-1 ready, web-2 terminating and serving, web-3 not ready', FLOWS);
      await apply([conditions([ep('web-1', { ready: false, serving: false, terminating: true }), ep('web-2', { ready: false, serving: true, terminating: true }), ep('web-3', { ready: false, serving: true, terminating: true })])]);
      const terminating = await w.ask('client-a', tcp(vip, 80), 'svc/cond: none ready, web-2 and web-3 terminating and serving', FLOWS);
      expectNoProblems(spreadProblem(readyOnly, ['web-1:8080']), spreadProblem(terminating, ['web-2:8080', 'web-3:8080']));
    });
  });

  it('the Cluster and the Local view fall back to terminating endpoints each on its own: internalTrafficPolicy Local uses a terminating local one while a ready one lives elsewhere', async () => {
    await w.run(async (apply) => {
      const eps = [ep('web-1', { ready: false, serving: true, terminating: true }), ep('web-2', { nodeName: OTHER_NODE })];
      await apply([
        service('view-local', { clusterIP: '10.96.0.15', internalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80, targetPort: 'http' }] }),
        service('view-cluster', { clusterIP: '10.96.0.16', ports: [{ name: 'http', port: 80, targetPort: 'http' }] }),
        slice(w, 'view-local-1', 'view-local', [{ name: 'http', port: 8080 }], eps),
        slice(w, 'view-cluster-1', 'view-cluster', [{ name: 'http', port: 8080 }], eps),
      ]);
      const r = await Promise.all([
        w.ask('client-a', tcp('10.96.0.15', 80), 'svc/view-local (ITP Local): web-1 local and terminating, web-2 ready elsewhere', FLOWS),
        w.ask('client-a', tcp('10.96.0.16', 80), 'svc/view-cluster: web-1 local and terminating, web-2 ready elsewhere', FLOWS),
      ]);
      expectNoProblems(spreadProblem(r[0], ['web-1:8080']), spreadProblem(r[1], ['web-2:8080']));
    });
  });

  it('internalTrafficPolicy Local: only this node\'s endpoints serve; with none here the ClusterIP drops (not rejects)', async () => {
    await w.run(async (apply) => {
      const vip = '10.96.0.17';
      const eps = (e: EndpointSpec[]) => slice(w, 'itp-1', 'itp', [{ name: 'http', port: 8080 }], e);
      await apply([service('itp', { clusterIP: vip, internalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80, targetPort: 'http' }] }), eps([ep('web-1'), ep('web-2'), ep('web-3', { nodeName: OTHER_NODE })])]);
      const local = await Promise.all([w.ask('client-a', tcp(vip, 80), 'svc/itp: web-1, web-2 here, web-3 elsewhere', FLOWS), w.ask('node', tcp(vip, 80), 'svc/itp: web-1, web-2 here, web-3 elsewhere', FLOWS)]);
      await apply([eps([ep('web-1', { nodeName: OTHER_NODE }), ep('web-2', { nodeName: OTHER_NODE })])]);
      const none = await w.ask('client-a', tcp(vip, 80), 'svc/itp: every endpoint elsewhere', 3, { timeoutMs: FAIL_MS });
      expectNoProblems(spreadProblem(local[0], ['web-1:8080', 'web-2:8080']), spreadProblem(local[1], ['web-1:8080', 'web-2:8080']), failProblem(none, 'timeout'));
    });
  });

  it('topology hints: zone hints followed; ignored when one ready endpoint has none or none names this zone; node hints followed', async () => {
    await w.run(async (apply) => {
      const vip = '10.96.0.18';
      const hinted = (e: EndpointSpec[]) => slice(w, 'topo-1', 'topo', [{ name: 'http', port: 8080 }], e);
      const ask = (what: string) => w.ask('client-a', tcp(vip, 80), `svc/topo: ${what}`, FLOWS);
      await apply([
        service('topo', { clusterIP: vip, trafficDistribution: 'PreferSameZone', ports: [{ name: 'http', port: 80, targetPort: 'http' }] }),
        hinted([ep('web-1', { zones: [ZONE] }), ep('web-2', { zones: [OTHER_ZONE] }), ep('web-3', { zones: [OTHER_ZONE] })]),
      ]);
      const zone = await ask('web-1 hinted for this zone, web-2 and web-3 for another');
      // A not-ready endpoint without a hint does not count.
      await apply([hinted([ep('web-1', { zones: [ZONE] }), ep('web-2', { zones: [OTHER_ZONE] }), ep('web-3'), ep('client-b', { ready: false, serving: false })])]);
      const partial = await ask('web-3 has no hint');
      await apply([hinted([ep('web-1', { zones: [OTHER_ZONE] }), ep('web-2', { zones: [OTHER_ZONE] }), ep('web-3', { zones: [OTHER_ZONE] })])]);
      const otherZone = await ask('every endpoint hinted for another zone');
      await apply([hinted([ep('web-1', { zones: [ZONE], nodes: [w.sb.node] }), ep('web-2', { zones: [ZONE], nodes: [OTHER_NODE] }), ep('web-3', { zones: [OTHER_ZONE], nodes: [OTHER_NODE] })])]);
      const node = await ask('web-1 hinted for this node, web-2 for this zone but another node');
      expectNoProblems(spreadProblem(zone, ['web-1:8080']), spreadProblem(partial, at(WEB, 8080)), spreadProblem(otherZone, at(WEB, 8080)), spreadProblem(node, ['web-1:8080']));
    });
  });

  it('NodePort (externalTrafficPolicy Cluster) on the node\'s address: from outside, from a pod and from the node, TCP and UDP', async () => {
    await w.run(async (apply) => {
      await apply([
        service('nodeport', {
          type: 'NodePort',
          clusterIP: '10.96.0.19',
          selector: { app: 'web' },
          ports: [
            { name: 'http', port: 80, targetPort: 'http', nodePort: 30080 },
            { name: 'dns', protocol: 'UDP', port: 53, targetPort: 'dns', nodePort: 30053 },
          ],
        }),
      ]);
      const r = await Promise.all([
        w.ask('outside', tcp(NODE_IP, 30080), 'svc/nodeport http', FLOWS),
        w.ask('outside', udp(NODE_IP, 30053), 'svc/nodeport dns', FLOWS),
        w.ask('client-a', tcp(NODE_IP, 30080), 'svc/nodeport http', FLOWS),
        w.ask('node', tcp(NODE_IP, 30080), 'svc/nodeport http', FLOWS),
      ]);
      expectNoProblems(spreadProblem(r[0], at(WEB, 8080)), spreadProblem(r[1], at(WEB, 5353)), spreadProblem(r[2], at(WEB, 8080)), spreadProblem(r[3], at(WEB, 8080)));
    });
  });

  it('externalTrafficPolicy Local: the backend sees the outside client\'s address; a node without a local endpoint drops (its ClusterIP still serves, and under Cluster the NodePort does)', async () => {
    await w.run(async (apply) => {
      await apply([
        service('etp-local', { type: 'NodePort', clusterIP: '10.96.0.20', externalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30081 }] }),
        slice(w, 'etp-local-1', 'etp-local', [{ name: 'http', port: 8080 }], [ep('web-1'), ep('web-2', { nodeName: OTHER_NODE })]),
        service('etp-none', { type: 'NodePort', clusterIP: '10.96.0.21', externalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30082 }] }),
        slice(w, 'etp-none-1', 'etp-none', [{ name: 'http', port: 8080 }], [ep('web-2', { nodeName: OTHER_NODE })]),
        // The same endpoints under externalTrafficPolicy Cluster: any node forwards to them.
        service('etp-cluster', { type: 'NodePort', clusterIP: '10.96.0.31', ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30083 }] }),
        slice(w, 'etp-cluster-1', 'etp-cluster', [{ name: 'http', port: 8080 }], [ep('web-2', { nodeName: OTHER_NODE })]),
      ]);
      const r = await Promise.all([
        w.ask('outside', tcp(NODE_IP, 30081), 'svc/etp-local: web-1 here, web-2 elsewhere', FLOWS),
        w.ask('outside', udp(NODE_IP, 30081), 'svc/etp-local on UDP, which it does not serve', 1, { timeoutMs: FAIL_MS }),
        w.ask('outside', tcp(NODE_IP, 30082), 'svc/etp-none: its one endpoint elsewhere', 3, { timeoutMs: FAIL_MS }),
        w.ask('client-a', tcp('10.96.0.21', 80), 'svc/etp-none ClusterIP (internal traffic: Cluster)', FLOWS),
        w.ask('outside', tcp(NODE_IP, 30083), 'svc/etp-cluster: its one endpoint elsewhere', FLOWS),
      ]);
      expectNoProblems(
        spreadProblem(r[0], ['web-1:8080']),
        sourceProblem(r[0], OUTSIDE_IP),
        unansweredProblem(r[1]),
        failProblem(r[2], 'timeout'),
        spreadProblem(r[3], ['web-2:8080']),
        spreadProblem(r[4], ['web-2:8080']),
      );
    });
  });

  it('externalTrafficPolicy Local seen from inside the cluster: a pod and the node reaching its LoadBalancer IP, externalIP and NodePort on a node without a local endpoint get every endpoint (the Cluster view); the outside client is dropped', async () => {
    await w.run(async (apply) => {
      const lbIp = '203.0.113.40';
      const extIp = '203.0.113.41';
      await apply([
        service(
          'etp-inside',
          { type: 'LoadBalancer', clusterIP: '10.96.0.32', externalTrafficPolicy: 'Local', externalIPs: [extIp], ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30084 }] },
          { status: { loadBalancer: { ingress: [{ ip: lbIp }] } } },
        ),
        // Every endpoint on another node: this node has no local one.
        slice(w, 'etp-inside-1', 'etp-inside', [{ name: 'http', port: 8080 }], [ep('web-2', { nodeName: OTHER_NODE }), ep('web-3', { nodeName: OTHER_NODE })]),
      ]);
      const elsewhere = ['web-2:8080', 'web-3:8080'];
      const r = await Promise.all([
        w.ask('client-a', tcp(lbIp, 80), 'svc/etp-inside LoadBalancer IP', FLOWS),
        w.ask('client-a', tcp(extIp, 80), 'svc/etp-inside externalIP', FLOWS),
        w.ask('client-a', tcp(NODE_IP, 30084), 'svc/etp-inside NodePort', FLOWS),
        w.ask('node', tcp(lbIp, 80), 'svc/etp-inside LoadBalancer IP', FLOWS),
        w.ask('outside', tcp(lbIp, 80), 'svc/etp-inside LoadBalancer IP: no local endpoint', 3, { timeoutMs: FAIL_MS }),
        w.ask('outside', tcp(NODE_IP, 30084), 'svc/etp-inside NodePort: no local endpoint', 3, { timeoutMs: FAIL_MS }),
      ]);
      expectNoProblems(
        spreadProblem(r[0], elsewhere),
        spreadProblem(r[1], elsewhere),
        spreadProblem(r[2], elsewhere),
        spreadProblem(r[3], elsewhere),
        failProblem(r[4], 'timeout'),
        failProblem(r[5], 'timeout'),
      );
      const listed = await w.kelp('get', 'services');
      expect(listed, `kelp get services must show the NodePort dropped outside and its in-cluster set:\n${listed}`).toMatch(/30084\/TCP .*<none on this node: dropped>; in-cluster: 10\.244/);
    });
  });

  it('externalIPs: answered from outside and from a pod', async () => {
    await w.run(async (apply) => {
      await apply([service('ext', { clusterIP: '10.96.0.22', externalIPs: ['203.0.113.10'], selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] })]);
      const r = await Promise.all([w.ask('outside', tcp('203.0.113.10', 80), 'svc/ext externalIP', FLOWS), w.ask('client-a', tcp('203.0.113.10', 80), 'svc/ext externalIP', FLOWS)]);
      expectNoProblems(spreadProblem(r[0], at(WEB, 8080)), spreadProblem(r[1], at(WEB, 8080)));
    });
  });

  it('LoadBalancer: its status ingress IP serves; loadBalancerSourceRanges lets the allowed client in and drops another', async () => {
    await w.run(async (apply) => {
      const lb = (name: string, clusterIP: string, ingress: string, ranges?: string[]) =>
        service(
          name,
          { type: 'LoadBalancer', clusterIP, selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }], ...(ranges ? { loadBalancerSourceRanges: ranges } : {}) },
          { status: { loadBalancer: { ingress: [{ ip: ingress }] } } },
        );
      await apply([lb('lb-open', '10.96.0.23', '203.0.113.20'), lb('lb-ranged', '10.96.0.24', '203.0.113.21', [`${OUTSIDE_IP}/32`])]);
      const r = await Promise.all([
        w.ask('outside', tcp('203.0.113.20', 80), 'svc/lb-open ingress IP', FLOWS),
        w.ask('outside', tcp('203.0.113.20', 80), `svc/lb-open ingress IP, from ${OUTSIDE_EXTRA_IP}`, 5, { localAddress: OUTSIDE_EXTRA_IP }),
        w.ask('outside', tcp('203.0.113.21', 80), `svc/lb-ranged (allows ${OUTSIDE_IP}/32)`, FLOWS),
        w.ask('outside', tcp('203.0.113.21', 80), `svc/lb-ranged (allows ${OUTSIDE_IP}/32), from ${OUTSIDE_EXTRA_IP}`, 3, { localAddress: OUTSIDE_EXTRA_IP, timeoutMs: FAIL_MS }),
        // A pod reaching the ingress IP is inside the cluster: kube-proxy short-circuits it to the Service.
        w.ask('client-a', tcp('203.0.113.20', 80), 'svc/lb-open ingress IP', FLOWS),
      ]);
      expectNoProblems(spreadProblem(r[0], at(WEB, 8080)), onlyProblem(r[1], at(WEB, 8080)), spreadProblem(r[2], at(WEB, 8080)), unansweredProblem(r[3]), spreadProblem(r[4], at(WEB, 8080)));
    });
  });

  it('sessionAffinity ClientIP: each client keeps its backend over new flows, until timeoutSeconds of silence', async () => {
    await w.run(async (apply) => {
      const vip = '10.96.0.25';
      await apply([
        service('sticky', {
          clusterIP: vip,
          selector: { app: 'web' },
          sessionAffinity: 'ClientIP',
          sessionAffinityConfig: { clientIP: { timeoutSeconds: 1 } },
          ports: [
            { name: 'http', port: 80, targetPort: 'http' },
            { name: 'dns', protocol: 'UDP', port: 53, targetPort: 'dns' },
          ],
        }),
      ]);
      const stuck = await Promise.all([
        w.ask('client-a', tcp(vip, 80), 'svc/sticky http', 20),
        w.ask('client-b', tcp(vip, 80), 'svc/sticky http', 20),
        w.ask('node', tcp(vip, 80), 'svc/sticky http', 20),
        w.ask('client-a', udp(vip, 53), 'svc/sticky dns', 20),
      ]);
      expectNoProblems(...stuck.map(sameProblem));
      // After more than timeoutSeconds without a flow, the next flow is balanced afresh: one flow
      // after each 1.6 s of silence, until a second backend answers. Over 10 such rounds a fair
      // choice among 3 stays on one backend with probability 3^-9 ≈ 0.005 %.
      const rounds: Reply[] = [];
      const backends = new Set<string>();
      for (let i = 0; i < 10 && backends.size < 2 && rounds.every((r) => r.ok); i++) {
        await new Promise((r) => setTimeout(r, 1600));
        const [reply] = (await w.ask('client-b', tcp(vip, 80), 'svc/sticky http', 1)).replies;
        rounds.push(reply);
        if (reply.ok) backends.add(reply.answer!.who);
      }
      expect(rounds.every((r) => r.ok) && backends.size > 1, `client-b -> ${vip}:80/TCP (svc/sticky, timeoutSeconds 1), one flow after each 1.6 s of silence: expected the affinity to expire and another backend to answer within 10 rounds; got ${tally(rounds)}`).toBe(true);
    });
  });

  it('hairpin: a pod reaches itself through its own Service, also under a NetworkPolicy that lets in only its own app', async () => {
    await w.run(async (apply) => {
      const vip = '10.96.0.26';
      const self = service('self', { clusterIP: vip, selector: { pod: 'web-1' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }, { name: 'dns', protocol: 'UDP', port: 53, targetPort: 'dns' }] });
      await apply([self]);
      const open = await Promise.all([w.ask('web-1', tcp(vip, 80), 'svc/self', 5), w.ask('web-1', udp(vip, 53), 'svc/self', 5)]);
      expectNoProblems(spreadProblem(open[0], ['web-1:8080']), spreadProblem(open[1], ['web-1:5353']));
      await apply([networkPolicy('web-only', { podSelector: { matchLabels: { pod: 'web-1' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }] }] })]);
      const guarded = await Promise.all([
        w.ask('web-1', tcp(vip, 80), 'svc/self under web-only', 5),
        w.ask('web-1', udp(vip, 53), 'svc/self under web-only', 5),
        w.ask('web-2', tcp(vip, 80), 'svc/self under web-only', 5),
        w.ask('client-a', tcp(vip, 80), 'svc/self under web-only', 3, { timeoutMs: FAIL_MS }),
      ]);
      expectNoProblems(spreadProblem(guarded[0], ['web-1:8080']), spreadProblem(guarded[1], ['web-1:5353']), spreadProblem(guarded[2], ['web-1:8080']), failProblem(guarded[3], 'timeout'));
    });
  });

  it('policy after translation: a NetworkPolicy on the backend allowing app=client lets client-a through the ClusterIP and drops client-b', async () => {
    await w.run(async (apply) => {
      const vip = '10.96.0.27';
      await apply([
        service('guarded', { clusterIP: vip, selector: { pod: 'web-2' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }, { name: 'dns', protocol: 'UDP', port: 53, targetPort: 'dns' }] }),
        networkPolicy('from-client', { podSelector: { matchLabels: { pod: 'web-2' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }] }] }),
      ]);
      const r = await Promise.all([
        w.ask('client-a', tcp(vip, 80), 'svc/guarded', 5),
        w.ask('client-a', udp(vip, 53), 'svc/guarded', 5),
        w.ask('client-b', tcp(vip, 80), 'svc/guarded', 3, { timeoutMs: FAIL_MS }),
        w.ask('client-b', udp(vip, 53), 'svc/guarded', 3, { timeoutMs: FAIL_MS }),
      ]);
      expectNoProblems(spreadProblem(r[0], ['web-2:8080']), spreadProblem(r[1], ['web-2:5353']), failProblem(r[2], 'timeout'), failProblem(r[3], 'timeout'));
    });
  });

  it('left alone: a Service for another proxy (service.kubernetes.io/service-proxy-name) is unanswered; a headless Service gets no VIP', async () => {
    await w.run(async (apply) => {
      const ports = [{ name: 'http', port: 80, targetPort: 'http' }];
      await apply([
        service('other-proxy', { clusterIP: '10.96.0.28', selector: { app: 'web' }, ports }, { labels: { 'service.kubernetes.io/service-proxy-name': 'someone-else' } }),
        service('headless', { clusterIP: 'None', selector: { app: 'web' }, ports }),
        service('shown', { clusterIP: '10.96.0.29', selector: { app: 'web' }, ports }),
      ]);
      const r = await Promise.all([
        w.ask('client-a', tcp('10.96.0.28', 80), 'svc/other-proxy', 3, { timeoutMs: FAIL_MS }),
        w.ask('node', tcp('10.96.0.28', 80), 'svc/other-proxy', 3, { timeoutMs: FAIL_MS }),
        w.ask('client-a', tcp('10.96.0.29', 80), 'svc/shown', FLOWS),
      ]);
      expectNoProblems(unansweredProblem(r[0]), unansweredProblem(r[1]), spreadProblem(r[2], at(WEB, 8080)));
      const listed = await w.kelp('get', 'services');
      expect(listed, `kelp get services must list svc/shown and neither svc/other-proxy nor svc/headless:\n${listed}`).toMatch(/\bshown\b/);
      expect(listed, `kelp get services must list svc/shown and neither svc/other-proxy nor svc/headless:\n${listed}`).not.toMatch(/\bother-proxy\b|\bheadless\b/);
    });
  });

  it('a backend removed: DNS-like UDP clients with connected sockets (a pod\'s, the node\'s) move to a live backend; a long-lived TCP connection to a remaining backend is undisturbed', async () => {
    await w.run(async (apply) => {
      const vip = '10.96.0.30';
      const ports = [{ name: 'dns', protocol: 'UDP' as const, port: 5353 }, { name: 'http', port: 8080 }];
      const backends = (pods: PodName[]) => slice(w, 'dns-1', 'dns', ports, pods.map((p) => ep(p)));
      await apply([
        service('dns', { clusterIP: vip, ports: [{ name: 'dns', protocol: 'UDP', port: 53, targetPort: 'dns' }, { name: 'http', port: 80, targetPort: 'http' }] }),
        backends(WEB),
      ]);
      const kept: Kept[] = [];
      try {
        const podDns = await w.keep('client-a', udp(vip, 53), 'svc/dns');
        kept.push(podDns);
        const gone = podDns.first.who as PodName;
        // The node's socket is load-balanced at connect(): open until one landed on the same backend.
        const nodeDns = await w.keepUntil('node', udp(vip, 53), 'svc/dns', (a) => a.who === gone, `answered by ${gone}`);
        const tcpKept = await w.keepUntil('client-b', tcp(vip, 80), 'svc/dns http', (a) => a.who !== gone, `answered by another backend than ${gone}`);
        kept.push(...nodeDns.opened, ...tcpKept.opened);

        await apply([backends(WEB.filter((p) => p !== gone))]);
        const never = Promise.resolve(undefined);
        const [podAfter, nodeAfter, tcpAfter] = await Promise.all([
          w.send(podDns, { reconnect: true, timeoutMs: 3000 }),
          nodeDns.kept ? w.send(nodeDns.kept, { reconnect: true, timeoutMs: 3000 }) : never,
          tcpKept.kept ? w.send(tcpKept.kept, { timeoutMs: ANSWER_MS }) : never,
        ]);
        const live = at(WEB.filter((p) => p !== gone), 5353);
        const moved = (who: string, r: Reply) =>
          r.ok && live.includes(`${r.answer!.who}:5353`) ? '' : `${who} -> ${vip}:53/UDP (svc/dns), a connected socket first answered by ${gone}, asked again after ${gone} left the slice (resent every 250 ms, a new socket after an error): expected an answer from one of {${live.join(', ')}} within 3 s; got ${r.ok ? `${r.answer!.who}` : r.error} (socket events: ${r.events?.join(', ') || 'none'})`;
        const undisturbed = (k: Kept, r: Reply) =>
          r.ok && r.answer!.who === k.first.who && r.answer!.from === k.first.from
            ? ''
            : `client-b -> ${vip}:80/TCP (svc/dns http), a connection to ${k.first.who} kept open while ${gone} left: expected the same connection answered by ${k.first.who} again; got ${r.ok ? `${r.answer!.who} (client seen as ${r.answer!.from}, first ${k.first.from})` : r.error}`;
        expectNoProblems(
          moved('client-a', podAfter),
          nodeDns.kept ? moved('node', nodeAfter!) : nodeDns.problem,
          tcpKept.kept ? undisturbed(tcpKept.kept, tcpAfter!) : tcpKept.problem,
        );
      } finally {
        for (const k of kept) await w.close(k);
      }
    });
  });
});
