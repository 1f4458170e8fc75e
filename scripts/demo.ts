// `make demo`: a kelp node on this machine (a network namespace with its own agent), three
// pods created through the real kelp-cni binary the way a container runtime does, and a
// connectivity table; then two nodes (test/support/cluster.ts: each its own namespace and
// agent, joined by an underlay bridge) whose pods talk across them over kelp's VXLAN overlay.
// Everything it creates is removed at the end, also on failure or Ctrl-C.
import path from 'node:path';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import { Sandbox, SandboxPod } from '../src/sandbox';
import { agentKnowsRoutingMode, Cluster, OUTSIDE_IP } from '../test/support/cluster';

const t0 = Date.now();
const step = (msg: string) => process.stdout.write(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}\n`);
const PORT = 8080;
/** The sandbox's directory goes at the end: its agent log is copied here first. */
const KEPT_LOG = path.join(__dirname, '../build/demo-agent.log');

function ok(b: boolean): string {
  return b ? 'ok' : 'FAIL';
}

async function main(): Promise<number> {
  step('starting a kelp node: network namespace "kdemo-node", agent with its own bpffs, socket and CNI dirs');
  const sb = await Sandbox.start({ prefix: 'kdemo', podCidr: '10.244.0.0/24', logLevel: 'info' });
  let failures = 0;
  const cleanup = async () => {
    step('tearing down: CNI DEL for every pod, agent stopped by PID, namespaces and bpffs removed');
    await sb.stopAgentAfterPods();
    if (existsSync(sb.logFile)) {
      mkdirSync(path.dirname(KEPT_LOG), { recursive: true });
      copyFileSync(sb.logFile, KEPT_LOG);
      step(`agent log kept in ${path.relative(process.cwd(), KEPT_LOG) || KEPT_LOG}`);
    }
    await sb.stop();
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    step(`agent ready (its log is copied to ${path.relative(process.cwd(), KEPT_LOG)} at the end); CNI plugin and 05-kelp.conflist installed in ${path.dirname(sb.cniConfDir)}`);
    step('kelp apply -f deploy/demo/pods.yaml');
    process.stdout.write(indent(sb.kelp('apply', '-f', path.join(__dirname, '../deploy/demo/pods.yaml'))));

    const pods: SandboxPod[] = [];
    for (const name of ['web', 'api', 'db']) {
      const started = process.hrtime.bigint();
      const pod = await sb.addPod(name, 'shop');
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      step(`pod shop/${name}: CNI ADD through kelp-cni -> ${pod.ip} in netns ${pod.netns} (${ms.toFixed(1)} ms)`);
      pods.push(pod);
    }

    step('kelp get pods');
    process.stdout.write(indent(sb.kelp('get', 'pods')));

    step(`starting a TCP server on port ${PORT} in every pod, and one in the "outside" namespace that echoes the client address`);
    const servers = pods.map((p) => spawn('ip', ['netns', 'exec', p.netns, 'nc', '-lk', String(PORT)], { stdio: 'ignore' }));
    const echo = spawn('ip', ['netns', 'exec', sb.outside!, process.execPath, '-e', `require('net').createServer(s=>{s.on('error',()=>{});s.end(s.remoteAddress+'\\n')}).listen(${PORT}, '0.0.0.0')`], { stdio: 'ignore' });
    try {
      await new Promise((r) => setTimeout(r, 300));
      const ping = (ns: string, ip: string) => sb.exec(ns, 'ping', ['-c1', '-W1', ip], { allowFail: true }).includes(' 0% packet loss');
      const tcp = (ns: string, ip: string) => {
        try {
          sb.exec(ns, 'nc', ['-z', '-w1', ip, String(PORT)]);
          return true;
        } catch {
          return false;
        }
      };

      step('connectivity: ping / TCP from each row to each column');
      const cols = [...pods.map((p) => ({ label: p.name, ip: p.ip })), { label: 'outside', ip: sb.outsideIp }];
      const rows: string[][] = [];
      for (const src of [...pods.map((p) => ({ label: p.name, ns: p.netns })), { label: 'node', ns: sb.node }]) {
        const row = [src.label];
        for (const dst of cols) {
          if (src.label === dst.label) {
            row.push('-');
            continue;
          }
          const p = ping(src.ns, dst.ip);
          const t = tcp(src.ns, dst.ip);
          if (!p || !t) failures += 1;
          row.push(`${ok(p)}/${ok(t)}`);
        }
        rows.push(row);
      }
      process.stdout.write(indent(table(['from \\ to', ...cols.map((c) => `${c.label} (${c.ip})`)], rows)));

      const seen = sb.exec(pods[0].netns, 'nc', ['-w2', sb.outsideIp, String(PORT)], { allowFail: true }).trim();
      const masq = seen === sb.nodeIp;
      if (!masq) failures += 1;
      step(`pod web -> outside: the outside host sees the connection from ${seen || '(nothing)'} (node ${sb.nodeIp}) - masquerade in BPF ${ok(masq)}`);

      step('kelp apply -f deploy/demo/policy.yaml --wait: a NetworkPolicy lets only app=api reach db, on port 8080');
      process.stdout.write(indent(sb.kelp('apply', '-f', path.join(__dirname, '../deploy/demo/policy.yaml'), '--wait')));
      const [web, api, db] = pods;
      const webDb = tcp(web.netns, db.ip);
      const apiDb = tcp(api.netns, db.ip);
      const nodeDb = tcp(sb.node, db.ip);
      if (webDb || !apiDb || !nodeDb) failures += 1;
      step(`web -> db ${webDb ? 'connected (it should not)' : 'dropped'}, api -> db ${apiDb ? 'connected' : 'dropped (it should not be)'}, node -> db ${nodeDb ? 'connected (a pod and its node always talk)' : 'dropped (it should not be)'} - policy in BPF ${ok(!webDb && apiDb && nodeDb)}`);
      step(`kelp policy trace --from shop/web --to shop/db --port ${PORT}/tcp`);
      process.stdout.write(indent(sb.kelp('policy', 'trace', '--from', 'shop/web', '--to', 'shop/db', '--port', `${PORT}/tcp`)));
      step('kelp observe --verdict dropped --last 3: the drops as the datapath reported them, with reason and deciding policy');
      process.stdout.write(indent(sb.kelp('observe', '--verdict', 'dropped', '--last', '3')));

      step('kelp apply -f deploy/demo/service.yaml --wait: Service shop/api, ClusterIP 10.96.0.10:80 -> the api pod\'s port 8080');
      process.stdout.write(indent(sb.kelp('apply', '-f', path.join(__dirname, '../deploy/demo/service.yaml'), '--wait')));
      const vip = (ns: string) => {
        try {
          sb.exec(ns, 'nc', ['-z', '-w1', '10.96.0.10', '80']);
          return true;
        } catch {
          return false;
        }
      };
      const webSvc = vip(web.netns);
      const dbSvc = vip(db.netns);
      if (!webSvc || !dbSvc) failures += 1;
      step(`web -> 10.96.0.10:80 ${webSvc ? 'connected' : 'failed'}, db -> 10.96.0.10:80 ${dbSvc ? 'connected' : 'failed'} - Service in BPF ${ok(webSvc && dbSvc)}`);
      step('kelp get services');
      process.stdout.write(indent(sb.kelp('get', 'services')));
    } finally {
      for (const s of [...servers, echo]) if (s.pid && s.exitCode === null) s.kill('SIGKILL');
    }

    step('kelp status');
    process.stdout.write(indent(sb.kelp('status')));
    step('kelp map dump kelp_endpoints');
    process.stdout.write(indent(sb.kelp('map', 'dump', 'kelp_endpoints')));
    step('kelp get counters (forwarded and dropped packets per pod, direction and reason)');
    process.stdout.write(indent(sb.kelp('get', 'counters')));
  } finally {
    await cleanup();
  }
  failures += await twoNodes();
  step(failures === 0 ? 'demo finished: every check passed' : `demo finished with ${failures} failed checks`);
  return failures === 0 ? 0 : 1;
}

/** Two nodes, one pod each side plus one more, talking across the VXLAN overlay. Returns the failed checks. */
async function twoNodes(): Promise<number> {
  // The agents of an older build have no routing modes: the one-node part above still stands.
  if (!agentKnowsRoutingMode()) {
    step('two nodes: skipped, this build\'s agent has no --routing-mode yet (issue 13)');
    return 0;
  }
  step('two nodes: namespaces "kdemo1-node" (10.200.0.1, pods 10.244.1.0/24) and "kdemo2-node" (10.200.0.2, pods 10.244.2.0/24) on an underlay bridge (netns "kdemo-ul"), an outside host 10.200.0.254 on it; each node its own agent with --routing-mode=vxlan, both knowing both Node manifests');
  const c = await Cluster.start({ tag: 'kd', prefix: 'kdemo', nodes: 2, mode: 'vxlan', source: 'standalone', logLevel: 'info', objects: [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop' } }] });
  let failures = 0;
  const check = (b: boolean) => {
    if (!b) failures += 1;
    return ok(b);
  };
  const cleanup = async () => {
    step('tearing down the two nodes: pods, agents (by PID), namespaces, bridge');
    await c.stop();
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    const [n1, n2] = c.nodes;
    await c.meshed();
    const [web, api, db] = await c.addPods([
      { node: n1, name: 'web', namespace: 'shop', labels: { app: 'web' } },
      { node: n2, name: 'api', namespace: 'shop', labels: { app: 'api' } },
      { node: n2, name: 'db', namespace: 'shop', labels: { app: 'db' } },
    ]);
    for (const p of [web, api, db]) step(`pod shop/${p.name} on ${p.node.name}: ${p.ip}`);
    step(`ip route on ${n1.name}: the other node's pod CIDR goes to the kelp VXLAN device (one collect_md device per node; BPF picks the remote node per packet)`);
    process.stdout.write(indent(inNs(n1.name, 'ip', '-4', 'route', 'show')));
    step(`kelp map dump kelp_tunnel4 on ${n1.name}: the other node's pod CIDR (and its own address, for the node's traffic) -> that node, looked up per packet by BPF`);
    process.stdout.write(indent(await n1.kelp('map', 'dump', 'kelp_tunnel4')));
    await c.startPeers();
    const ask = async (from: typeof web, to: typeof web) => {
      const r = await from.peer!.request({ op: 'ask', proto: 'tcp', host: to.ip, port: PORT, timeoutMs: 2000 }).result;
      const seen = r.ok ? r.answer!.from.split(':')[0] : '';
      step(`${from.name} (${from.node.name}) -> ${to.name} (${to.node.name}) TCP ${to.ip}:${PORT}: ${r.ok ? `answered by ${r.answer!.who}, which saw the client as ${seen}` : r.error} - across nodes, no masquerade ${check(r.ok && seen === from.ip)}`);
    };
    await ask(web, api);
    await ask(db, web);
    const mtu = JSON.parse(inNs(web.netns, 'ip', '-j', 'link', 'show', 'dev', 'eth0')) as Array<{ mtu: number }>;
    const df = inNs(web.netns, 'ping', '-c', '1', '-W', '2', '-M', 'do', '-s', '1400', api.ip).includes(' 0% packet loss');
    step(`pod web's eth0 MTU ${mtu[0].mtu} (the underlay's 1500 less VXLAN's 50) ${check(mtu[0].mtu === 1450)}; a 1,400-byte ping with DF set to api ${check(df)}`);
    const out = await api.peer!.request({ op: 'ask', proto: 'tcp', host: OUTSIDE_IP, port: PORT, timeoutMs: 2000 }).result;
    const outSeen = out.ok ? out.answer!.from.split(':')[0] : '';
    step(`api -> outside ${OUTSIDE_IP}: seen as ${outSeen || out.error} (its node ${api.node.address}) - masquerade on the pod's own node ${check(outSeen === api.node.address)}`);
  } finally {
    await cleanup();
  }
  return failures;
}

/** A command in a network namespace: its stdout, '' when it failed. */
function inNs(netns: string, cmd: string, ...args: string[]): string {
  try {
    return execFileSync('ip', ['netns', 'exec', netns, cmd, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch {
    return '';
  }
}

function indent(s: string): string {
  return s
    .split('\n')
    .map((l) => (l ? `    ${l}` : l))
    .join('\n');
}

function table(headers: string[], rows: string[][]): string {
  const all = [headers, ...rows];
  const w = headers.map((_, i) => Math.max(...all.map((r) => r[i].length)));
  return all.map((r) => r.map((c, i) => c.padEnd(w[i])).join('   ')).join('\n') + '\n';
}

main().then(
  (code) => process.exit(code),
  (e: Error) => {
    process.stderr.write(`demo failed: ${e.stack ?? e.message}\n`);
    process.exit(1);
  },
);
