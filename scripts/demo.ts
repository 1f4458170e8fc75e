// `make demo`: a kelp node on this machine (a network namespace with its own agent), three
// pods created through the real kelp-cni binary the way a container runtime does, and a
// connectivity table. Everything it creates is removed at the end, also on failure or Ctrl-C.
import path from 'node:path';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { Sandbox, SandboxPod } from '../src/sandbox';

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
  step(failures === 0 ? 'demo finished: every check passed' : `demo finished with ${failures} failed checks`);
  return failures === 0 ? 0 : 1;
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
