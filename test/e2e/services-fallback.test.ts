// Services from the node's own network namespace without socket LB (issue 12: "socket-level
// load balancing … on by default and switchable off, the per-packet path as fall-back"). The
// agent runs with --socket-lb=off; the node's client (the same peer as in services.test.ts, in
// the same kind of cgroup, now without hooks) connects to a ClusterIP, a NodePort on the node's
// own address, an externalIP and a LoadBalancer IP. Nothing translates its connect(): each flow
// is translated per packet by host.o (kelp_host_egress on the uplink for a VIP the node routes
// out by its default route, kelp_host_lo on lo for its own addresses), and its replies come back
// into the node's stack through lo.
//
// Each case fails when the per-packet path is broken: without it a connect() to a VIP leaves
// untranslated for the outside namespace, which has no route back for it (timeout), and one to
// a NodePort on the node's address meets a closed port (ECONNREFUSED from the node's own
// stack, not from a backend); a Service without endpoints must be refused at once, which an
// untranslated SYN to a VIP never is. The service conntrack must hold the node's flows, marked
// as opened by the node (LB_CT_F_HOST): socket LB would leave it empty.
//
// The world is test/support/services.ts's (pods web-1..3, client-a, client-b in namespace svc;
// node 192.168.250.1; outside 192.168.250.2, routing 203.0.113.0/24 to the node).
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LbCtFlag } from '../../src/datapath/service';
import { ep, expectNoProblems, failProblem, OTHER_NODE, PodName, service, ServicesWorld, slice, sourceProblem, spreadProblem, tcp, udp, WEB } from '../support/services';

let w: ServicesWorld;

/** Flows per spread check: with 3 backends, a fair balancer misses one with probability ~3·(2/3)^30 ≈ 2e-5. */
const FLOWS = 30;
const NODE_IP = '192.168.250.1';
const at = (pods: PodName[], port: number) => pods.map((p) => `${p}:${port}`);

interface CtRow {
  key: { saddr: string; daddr: string; dport: number; proto: number; dir: number };
  value: { flags: number };
}

/** The node's forward entries in the service conntrack, as `daddr:dport` (the frontend it asked for). */
async function nodeFlows(): Promise<string[]> {
  const dump = JSON.parse(await w.kelp('map', 'dump', 'kelp_lb4_ct', '-o', 'json')) as { entries: CtRow[] };
  return dump.entries.filter((e) => e.key.dir === 0 && e.value.flags & LbCtFlag.HOST).map((e) => `${e.key.daddr}:${e.key.dport}`);
}

/** Packets kelp rejected for lack of a backend, charged to no endpoint (the node's own clients). */
async function nodeRejects(): Promise<number> {
  const rows = JSON.parse(await w.kelp('get', 'counters', '-o', 'json')) as Array<{ endpoint: number; reason: string; packets: string }>;
  return rows.filter((r) => r.endpoint === 0 && r.reason === 'LB_NO_BACKEND').reduce((n, r) => n + Number(r.packets), 0);
}

describe('the per-packet path for the node\'s own clients (--socket-lb=off)', () => {
  beforeAll(async () => {
    w = await ServicesWorld.start('sfb', { agentArgs: ['--socket-lb=off'] });
  }, 120_000);
  afterAll(async () => {
    await w?.stop();
  });

  it('socket LB is off: the agent pinned no cgroup hook', () => {
    expect(w.sb.agentArgs()).toContain('--socket-lb=off');
    const links = readdirSync(path.join(w.sb.bpfRoot, 'links'));
    expect(links.filter((l) => l.startsWith('cgroup-'))).toEqual([]);
  });

  it('ClusterIP (TCP and UDP): every backend answers the node, which they see as its own address; the flows are in the service conntrack as the node\'s', async () => {
    await w.run(async (apply) => {
      const vip = '10.96.1.10';
      await apply([
        service('fb-clusterip', {
          clusterIP: vip,
          selector: { app: 'web' },
          ports: [
            { name: 'http', port: 80, targetPort: 8080 },
            { name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353 },
          ],
        }),
      ]);
      const [http, dns] = await Promise.all([w.ask('node', tcp(vip, 80), 'svc/fb-clusterip http', FLOWS), w.ask('node', udp(vip, 53), 'svc/fb-clusterip dns', FLOWS)]);
      expectNoProblems(spreadProblem(http, at(WEB, 8080)), spreadProblem(dns, at(WEB, 5353)), sourceProblem(http, NODE_IP));
      const flows = await nodeFlows();
      expect(flows.filter((f) => f === `${vip}:80`).length, `node flows in kelp_lb4_ct: ${flows.join(' ')}`).toBeGreaterThan(0);
      expect(flows.filter((f) => f === `${vip}:53`).length, `node flows in kelp_lb4_ct: ${flows.join(' ')}`).toBeGreaterThan(0);
    });
  });

  it('NodePort on the node\'s own address and an externalIP (TCP and UDP): every backend answers the node', async () => {
    await w.run(async (apply) => {
      const extIp = '203.0.113.50';
      await apply([
        service('fb-nodeport', {
          type: 'NodePort',
          clusterIP: '10.96.1.11',
          externalIPs: [extIp],
          selector: { app: 'web' },
          ports: [
            { name: 'http', port: 80, targetPort: 'http', nodePort: 30090 },
            { name: 'dns', protocol: 'UDP', port: 53, targetPort: 'dns', nodePort: 30091 },
          ],
        }),
      ]);
      const r = await Promise.all([
        w.ask('node', tcp(NODE_IP, 30090), 'svc/fb-nodeport http NodePort', FLOWS),
        w.ask('node', udp(NODE_IP, 30091), 'svc/fb-nodeport dns NodePort', FLOWS),
        w.ask('node', tcp(extIp, 80), 'svc/fb-nodeport http externalIP', FLOWS),
        w.ask('node', udp(extIp, 53), 'svc/fb-nodeport dns externalIP', FLOWS),
      ]);
      expectNoProblems(spreadProblem(r[0], at(WEB, 8080)), spreadProblem(r[1], at(WEB, 5353)), spreadProblem(r[2], at(WEB, 8080)), spreadProblem(r[3], at(WEB, 5353)));
      const flows = await nodeFlows();
      for (const fe of [`${NODE_IP}:30090`, `${extIp}:80`]) expect(flows, `node flows in kelp_lb4_ct: ${flows.join(' ')}`).toContain(fe);
    });
  });

  it('no endpoints: TCP refused and UDP answered by ICMP unreachable at once, at a ClusterIP and at a NodePort on the node\'s address', async () => {
    await w.run(async (apply) => {
      await apply([
        service('fb-nobody', {
          type: 'NodePort',
          clusterIP: '10.96.1.12',
          selector: { app: 'nobody' },
          ports: [
            { name: 'http', port: 80, targetPort: 8080, nodePort: 30092 },
            { name: 'dns', protocol: 'UDP', port: 53, targetPort: 5353, nodePort: 30093 },
          ],
        }),
      ]);
      const before = await nodeRejects();
      const r = await Promise.all([
        w.ask('node', tcp('10.96.1.12', 80), 'svc/fb-nobody ClusterIP http', 3),
        w.ask('node', udp('10.96.1.12', 53), 'svc/fb-nobody ClusterIP dns', 3),
        w.ask('node', tcp(NODE_IP, 30092), 'svc/fb-nobody NodePort http', 3),
        w.ask('node', udp(NODE_IP, 30093), 'svc/fb-nobody NodePort dns', 3),
      ]);
      expectNoProblems(...r.map((p) => failProblem(p, 'ECONNREFUSED', 1000)));
      // kelp answered each (a closed port on the node would refuse the NodePort too).
      expect(await nodeRejects()).toBeGreaterThanOrEqual(before + 12);
    });
  });

  it('externalTrafficPolicy Local without a local endpoint: the node reaching the LoadBalancer IP and the NodePort gets the Cluster view', async () => {
    await w.run(async (apply) => {
      const lbIp = '203.0.113.51';
      await apply([
        service(
          'fb-etp',
          { type: 'LoadBalancer', clusterIP: '10.96.1.13', externalTrafficPolicy: 'Local', ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30094 }] },
          { status: { loadBalancer: { ingress: [{ ip: lbIp }] } } },
        ),
        slice(w, 'fb-etp-1', 'fb-etp', [{ name: 'http', port: 8080 }], [ep('web-1', { nodeName: OTHER_NODE }), ep('web-3', { nodeName: OTHER_NODE })]),
      ]);
      const r = await Promise.all([w.ask('node', tcp(lbIp, 80), 'svc/fb-etp LoadBalancer IP', FLOWS), w.ask('node', tcp(NODE_IP, 30094), 'svc/fb-etp NodePort', FLOWS)]);
      expectNoProblems(spreadProblem(r[0], ['web-1:8080', 'web-3:8080']), spreadProblem(r[1], ['web-1:8080', 'web-3:8080']));
    });
  });
});

describe('socket LB in the node\'s namespace only (--socket-lb=hostns), masquerade off', () => {
  beforeAll(async () => {
    w = await ServicesWorld.start('sfh', { agentArgs: ['--socket-lb=hostns', '--no-masquerade'] });
  }, 120_000);
  afterAll(async () => {
    await w?.stop();
  });

  it('a pod goes through the per-packet path (its flows in the service conntrack), the node through its socket hooks (none there); both reach every backend', async () => {
    await w.run(async (apply) => {
      const vip = '10.96.1.20';
      await apply([service('fb-hostns', { clusterIP: vip, selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] })]);
      const [pod, node] = await Promise.all([w.ask('client-a', tcp(vip, 80), 'svc/fb-hostns', FLOWS), w.ask('node', tcp(vip, 80), 'svc/fb-hostns', FLOWS)]);
      expectNoProblems(spreadProblem(pod, at(WEB, 8080)), spreadProblem(node, at(WEB, 8080)));
      const dump = JSON.parse(await w.kelp('map', 'dump', 'kelp_lb4_ct', '-o', 'json')) as { entries: CtRow[] };
      const forward = dump.entries.filter((e) => e.key.dir === 0 && e.key.daddr === vip);
      expect(forward.filter((e) => e.key.saddr === w.podIp('client-a')).length).toBe(FLOWS);
      expect(forward.filter((e) => e.key.saddr === NODE_IP)).toEqual([]);
    });
  });

  it('without masquerade the uplink still carries Services: a NodePort answers the outside client, with its address kept', async () => {
    await w.run(async (apply) => {
      await apply([service('fb-nomasq', { type: 'NodePort', clusterIP: '10.96.1.21', selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http', nodePort: 30095 }] })]);
      const r = await w.ask('outside', tcp(NODE_IP, 30095), 'svc/fb-nomasq NodePort', FLOWS);
      expectNoProblems(spreadProblem(r, at(WEB, 8080)), sourceProblem(r, '192.168.250.2'));
    });
  });
});
