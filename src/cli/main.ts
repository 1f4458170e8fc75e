// `kelp` command line: the agent, and kubectl-like commands that talk to it.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { agentHelp, parseAgentArgs, UsageError } from '../agent/options';
import { parseManifests, readManifestFileSync } from '../sources/manifests';
import { KelpObject } from '../sources/objects';
import { applyLines, ApplyAnswer } from './apply';
import { AgentUnreachable, request, requestJson } from './client';
import { formatTable } from './table';
import type { CounterView, EndpointView, PodView } from '../agent/views';
import type { PolicyView } from '../agent/routes/policy';
import type { ServiceFrontendView } from '../agent/routes/services';
import type { NodesStatus, NodeView } from '../agent/routes/nodes';
import type { TraceResult } from '../agent/policy';

const USAGE = `Usage: kelp <command> [flags]

Commands:
  agent [flags]               run the agent (kelp agent --help lists its flags)
  apply -f FILE|DIR [--wait]  create or update objects (standalone mode; Namespace, Pod, Node, Service,
                              EndpointSlice, NetworkPolicy, ClusterNetworkPolicy, KelpNetworkPolicy);
                              --wait returns once the datapath enforces it
  delete -f FILE|DIR [--wait] delete the objects in FILE|DIR
  get pods|endpoints          list pods (IP, interface, state) or datapath endpoints
  get counters                forwarded and dropped packets per pod, direction and reason
  get policies                the policies in evaluation order (tier, priority, pods selected here)
  get services                every frontend programmed here (VIP, NodePort, external and LB IPs)
                              with its backends and their state
  get nodes                   every Node: its address, pod CIDRs, and whether its tunnel entry and
                              route are in (or why it is skipped)
  policy trace --from A --to B [--port N/PROTO]
                              why A → B is allowed or dropped: A and B are namespace/pod or an IP;
                              PROTO tcp (default), udp, sctp; --port icmp for ICMP
  status                      agent health, map fill, attached programs
  health [--alive]            exit 0 when the agent is ready (--alive: when it answers at all),
                              3 when it answers but is not ready, 1 when it cannot be reached
  map dump NAME               decoded contents of a BPF map
  observe [-f] [--last N] [filters]
                              flows with their verdicts, drop reasons and deciding policies, as they
                              happen (kelp observe --help lists the filters)
  observe summary [--window 60s]
                              top talkers, top drop reasons and the event accounting
  cni validate|add|check|del  cnitool for kelp: check a conflist, run its chain on a netns (kelp cni --help)
  version                     print the version

Common flags:
  --socket PATH               agent API socket (default $KELP_SOCKET or /run/kelp/kelp.sock)
  -o table|json               output format (default table)
`;

interface CommonFlags {
  socket: string;
  output: 'table' | 'json';
  files: string[];
  rest: string[];
}

function parseCommon(argv: string[]): CommonFlags {
  const out: CommonFlags = { socket: process.env.KELP_SOCKET ?? '/run/kelp/kelp.sock', output: 'table', files: [], rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      return v;
    };
    if (a === '--socket') out.socket = next();
    else if (a.startsWith('--socket=')) out.socket = a.slice(9);
    else if (a === '-o' || a === '--output') {
      const v = next();
      if (v !== 'json' && v !== 'table') throw new UsageError(`-o must be table or json, got ${JSON.stringify(v)}`);
      out.output = v;
    } else if (a === '-f' || a === '--filename') out.files.push(next());
    else if (a.startsWith('-')) throw new UsageError(`unknown flag ${JSON.stringify(a)}`);
    else out.rest.push(a);
  }
  return out;
}

/** Reads manifests from files and directories (non-recursive), validating locally first. */
export function readManifestArgs(files: string[]): KelpObject[] {
  if (files.length === 0) throw new UsageError('-f FILE|DIR is required');
  const objects: KelpObject[] = [];
  for (const f of files) {
    const paths = statSync(f).isDirectory()
      ? readdirSync(f)
          .filter((n) => /\.(ya?ml|json)$/i.test(n))
          .sort()
          .map((n) => path.join(f, n))
      : [f];
    for (const p of paths) objects.push(...parseManifests(readManifestFileSync(p), p));
  }
  return objects;
}

function print(output: 'table' | 'json', data: unknown, table: () => string): void {
  process.stdout.write(output === 'json' ? JSON.stringify(data, null, 2) + '\n' : table());
}


/** Common flags may come before the command too (`kelp --socket S status`). */
function hoistCommand(argv: string[]): string[] {
  const lead: string[] = [];
  let i = 0;
  while (i < argv.length && ['--socket', '-o', '--output'].includes(argv[i])) lead.push(argv[i++], argv[i++]);
  while (i < argv.length && argv[i].startsWith('--socket=')) lead.push(argv[i++]);
  return i < argv.length ? [argv[i], ...lead, ...argv.slice(i + 1)] : lead;
}

async function run(argvIn: string[]): Promise<number> {
  const argv = hoistCommand(argvIn);
  const [cmd, ...args] = argv;
  switch (cmd) {
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return cmd === undefined ? 2 : 0;
    case 'version':
    case '--version':
      process.stdout.write(`kelp ${require('../../package.json').version}\n`);
      return 0;
    case 'agent': {
      if (args.includes('--help') || args.includes('-h')) {
        process.stdout.write(agentHelp() + '\n');
        return 0;
      }
      const opts = parseAgentArgs(args);
      const { runAgent } = await import('../agent/agent');
      // A failed start exits at once: handles opened on the way (maps, ring buffer) would keep
      // the process alive, doing nothing.
      await runAgent(opts).catch((e: Error) => {
        process.stderr.write(`kelp agent: ${e.message}\n`);
        process.exit(1);
      });
      return -1; // keeps running; exits on signal
    }
    case 'apply':
    case 'delete': {
      const wait = args.includes('--wait');
      const f = parseCommon(args.filter((a) => a !== '--wait'));
      const objects = readManifestArgs(f.files);
      const res = await requestJson<ApplyAnswer>(f.socket, cmd === 'apply' ? 'POST' : 'DELETE', '/v1/objects', { objects });
      const lines = applyLines(objects, res);
      if (lines.length > 0) process.stdout.write(lines.join('\n') + '\n');
      if (wait) {
        const p = await requestJson<{ programmed: number }>(f.socket, 'GET', `/v1/programmed?revision=${res.revision}`);
        process.stdout.write(`programmed (revision ${p.programmed})\n`);
      }
      return 0;
    }
    case 'get': {
      const f = parseCommon(args);
      const what = f.rest[0];
      if (what === 'pods' || what === 'pod' || what === 'po') {
        const pods = await requestJson<PodView[]>(f.socket, 'GET', '/v1/pods');
        print(f.output, pods, () =>
          formatTable(
            ['NAMESPACE', 'NAME', 'IP', 'INTERFACE', 'STATE', 'LABELS'],
            pods.map((p) => [p.namespace, p.name, p.ip, p.interface, p.state, Object.entries(p.labels).map(([k, v]) => `${k}=${v}`).join(',')]),
          ),
        );
        return 0;
      }
      if (what === 'endpoints' || what === 'endpoint' || what === 'ep') {
        const eps = await requestJson<EndpointView[]>(f.socket, 'GET', '/v1/endpoints');
        print(f.output, eps, () =>
          formatTable(
            ['ID', 'POD', 'IP', 'INTERFACE', 'HOST-IF', 'CONTAINER', 'STATE'],
            eps.map((e) => [e.id, e.pod, e.ip, e.ifname, `${e.hostIfname}(${e.hostIfindex})`, e.containerId.slice(0, 12), e.state]),
          ),
        );
        return 0;
      }
      if (what === 'counters' || what === 'counter') {
        const rows = await requestJson<CounterView[]>(f.socket, 'GET', '/v1/counters');
        print(f.output, rows, () =>
          formatTable(
            ['ENDPOINT', 'POD', 'DIRECTION', 'REASON', 'PACKETS', 'BYTES'],
            rows.map((c) => [c.endpoint, c.pod, c.direction, c.reason, c.packets, c.bytes]),
          ),
        );
        return 0;
      }
      if (what === 'policies' || what === 'policy' || what === 'netpol') {
        const rows = await requestJson<PolicyView[]>(f.socket, 'GET', '/v1/policies');
        print(f.output, rows, () =>
          formatTable(
            ['ID', 'KIND', 'NAME', 'TIER', 'PRIORITY', 'INGRESS', 'EGRESS', 'PODS HERE', 'AUDIT'],
            rows.map((p) => [p.id, p.kind, p.name, p.tier, p.priority, p.ingressRules ?? '-', p.egressRules ?? '-', p.localPods, p.audit ? 'yes' : undefined]),
          ),
        );
        return 0;
      }
      if (what === 'services' || what === 'service' || what === 'svc') {
        const rows = await requestJson<ServiceFrontendView[]>(f.socket, 'GET', '/v1/services');
        print(f.output, rows, () =>
          formatTable(
            ['NAMESPACE', 'NAME', 'PORT', 'TYPE', 'FRONTEND', 'SET', 'FLAGS', 'BACKENDS'],
            rows.map((r) => {
              const [ns, name] = r.service.split('/');
              const listed = (v: Pick<ServiceFrontendView, 'empty' | 'backends'>) =>
                v.empty
                  ? v.empty === 'drop'
                    ? '<none on this node: dropped>'
                    : '<none: rejected>'
                  : v.backends.map((b) => `${b.address}:${b.port}${b.state.length ? `(${b.state.join(',')})` : ''}`).join(' ');
              const flags = r.flags.filter((x) => x !== 'drop-no-local').map((x) => (x === 'affinity' ? `affinity=${r.affinityTimeout}s` : x));
              const setOf = (v: { setId: number; view: string | null }) => (v.setId ? `${v.setId} (${v.view})` : '-');
              // An externalTrafficPolicy Local address: what clients inside the cluster get, after what outside ones get.
              const inside = r.inCluster;
              return [
                ns,
                name,
                r.port,
                r.kind,
                `${r.address}:${r.frontendPort}/${r.protocol}`,
                inside ? `${setOf(r)}; in-cluster ${setOf(inside)}` : setOf(r),
                flags.join(',') || undefined,
                inside ? `${listed(r)}; in-cluster: ${listed(inside)}` : listed(r),
              ];
            }),
          ),
        );
        return 0;
      }
      if (what === 'nodes' || what === 'node' || what === 'no') {
        const rows = await requestJson<NodeView[]>(f.socket, 'GET', '/v1/nodes');
        const yesNo = (b: boolean | null) => (b === null ? '-' : b ? 'yes' : 'NO');
        print(f.output, rows, () =>
          formatTable(
            ['NAME', 'ADDRESS', 'POD CIDRS', 'TUNNEL', 'ROUTE', 'NOTE'],
            rows.map((n) => [n.name, n.address ?? '-', n.podCidrs.join(',') || '-', yesNo(n.tunnel), yesNo(n.route), n.self ? 'this node' : (n.skipped ?? undefined)]),
          ),
        );
        return 0;
      }
      throw new UsageError(`kelp get: expected pods, endpoints, counters, policies, services or nodes, got ${JSON.stringify(what ?? '')}`);
    }
    case 'health': {
      // A probe's command: one cheap request (status checks every endpoint's hooks).
      const alive = args.includes('--alive');
      const f = parseCommon(args.filter((a) => a !== '--alive'));
      const res = await request(f.socket, 'GET', '/v1/healthz');
      const ready = res.status === 200;
      process.stdout.write(ready ? 'ready\n' : `not ready (${res.status})\n`);
      return ready || (alive && res.status === 503) ? 0 : 3;
    }
    case 'status': {
      const f = parseCommon(args);
      const st = await requestJson<{
        ready: boolean;
        node: string;
        podCidr: string;
        mtu?: number;
        endpoints: number;
        nodes?: NodesStatus | null;
        masquerade?: { uplink: string; address: string } | null;
        bpffs?: { root: string; persistent: 'yes' | 'no' | 'unknown'; reason: string };
        maps: Array<{ name: string; type: string; entries: number; maxEntries: number; fixed: boolean; description?: string }>;
        attached: Array<{ ifname: string; ifindex: number; ingress: string[]; egress: string[] }>;
        problems: string[];
        services?: { lastRun: { ms: number; compileMs: number; frontends: number; sets: number; backends: number; programmed: boolean } | null } | null;
        policy?: { enforced: boolean; revision: number; lastRun: { ms: number; endpoints: number; identities: number; policyEntries: number; ipcacheEntries: number } | null; lastError: string | null } | null;
      }>(f.socket, 'GET', '/v1/status');
      print(f.output, st, () => {
        let out = `agent:      ${st.ready ? 'ready' : 'not ready'}\nnode:       ${st.node}\npod CIDR:   ${st.podCidr}\nendpoints:  ${st.endpoints}\n`;
        out += `masquerade: ${st.masquerade ? `${st.masquerade.uplink} -> ${st.masquerade.address}` : 'off'}\n`;
        if (st.nodes) {
          const n = st.nodes;
          const how = n.mode === 'vxlan' ? `VXLAN (${n.device}, VNI ${n.vni}, port ${n.port})` : `native (via ${n.uplink})`;
          out += `nodes:      ${n.remote} remote node${n.remote === 1 ? '' : 's'} routed${n.skipped ? `, ${n.skipped} SKIPPED (see problems)` : ''}; ${how}; pod MTU ${st.mtu}\n`;
        }
        if (st.services?.lastRun) {
          const r = st.services.lastRun;
          out += `services:   ${r.frontends} frontends, ${r.sets} backend sets, ${r.backends} backends${r.programmed ? '' : ' (NOT PROGRAMMED)'} (compiled in ${r.compileMs.toFixed(1)} ms, ${r.ms.toFixed(1)} ms in all)\n`;
        }
        if (st.policy) {
          const r = st.policy.lastRun;
          out += `policy:     ${st.policy.enforced ? 'enforced' : 'NOT ENFORCED'}, revision ${st.policy.revision}`;
          out += r ? `, ${r.policyEntries} entries for ${r.endpoints} endpoints, ${r.identities} identities, ${r.ipcacheEntries} ipcache prefixes (compiled and applied in ${r.ms.toFixed(1)} ms)\n` : '\n';
          if (st.policy.lastError) out += `WARNING:    policy not programmed: ${st.policy.lastError}\n`;
        }
        if (st.bpffs) {
          const says = { yes: 'pins outlive the agent', no: 'PINS DO NOT OUTLIVE THE AGENT', unknown: 'pins outlive the agent only if this bpffs is the host\'s' };
          out += `bpf root:   ${st.bpffs.root} (${says[st.bpffs.persistent]})\n`;
          if (st.bpffs.persistent !== 'yes') out += `WARNING:    ${st.bpffs.reason}\n`;
        }
        if (st.problems.length) out += `problems:\n${st.problems.map((p) => `  - ${p}\n`).join('')}`;
        out +=
          '\nMAPS (ENTRIES: the rows `kelp map dump NAME` lists)\n' +
          formatTable(
            ['NAME', 'TYPE', 'ENTRIES', 'MAX', 'FILL', 'HOLDS'],
            st.maps.map((m) => [m.name, m.type, m.entries, m.maxEntries, m.fixed ? undefined : `${((100 * m.entries) / m.maxEntries).toFixed(1)}%`, m.description]),
          );
        out += '\nATTACHED\n' + formatTable(['INTERFACE', 'IFINDEX', 'INGRESS', 'EGRESS'], st.attached.map((a) => [a.ifname, a.ifindex, a.ingress.join(','), a.egress.join(',')]));
        return out;
      });
      return 0;
    }
    case 'map': {
      const f = parseCommon(args);
      if (f.rest[0] !== 'dump' || !f.rest[1]) throw new UsageError('usage: kelp map dump NAME');
      const dump = await requestJson<{ name: string; description?: string; entries: Array<{ key: unknown; value: unknown }> }>(f.socket, 'GET', `/v1/maps/${encodeURIComponent(f.rest[1])}`);
      print(f.output, dump, () => `# ${dump.name}: ${dump.description ?? 'raw keys and values (hex)'}; ${dump.entries.length} entries\n` + formatTable(['KEY', 'VALUE'], dump.entries.map((e) => [JSON.stringify(e.key), JSON.stringify(e.value)])));
      return 0;
    }
    case 'policy': {
      const [sub, ...rest] = args;
      if (sub !== 'trace') throw new UsageError('usage: kelp policy trace --from NS/POD|IP --to NS/POD|IP [--port N/tcp|udp|sctp | --port icmp]');
      let from: string | undefined;
      let to: string | undefined;
      let port = '80/tcp';
      const common: string[] = [];
      for (let i = 0; i < rest.length; i++) {
        const a = rest[i];
        const value = () => {
          const v = rest[++i];
          if (v === undefined) throw new UsageError(`${a} needs a value`);
          return v;
        };
        if (a === '--from') from = value();
        else if (a === '--to') to = value();
        else if (a === '--port') port = value();
        else common.push(a);
      }
      const f = parseCommon(common);
      if (!from || !to) throw new UsageError('kelp policy trace: --from and --to are required');
      const m = /^(?:(\d+)(?:\/(tcp|udp|sctp))?|(icmp))$/i.exec(port);
      if (!m) throw new UsageError(`--port: expected N/tcp, N/udp, N/sctp or icmp, got ${JSON.stringify(port)}`);
      const protocol = m[3] ? 'ICMP' : (m[2] ?? 'tcp').toUpperCase();
      const q = new URLSearchParams({ from, to, protocol, port: m[1] ?? '0' });
      const res = await requestJson<TraceResult>(f.socket, 'GET', `/v1/policy/trace?${q.toString()}`);
      print(f.output, res, () => res.text);
      return 0;
    }
    case 'cni':
      return (await import('./cni-tool')).cniCommand(args);
    case 'observe':
      return (await import('./observe')).observeCommand(args);
    default:
      throw new UsageError(`unknown command ${JSON.stringify(cmd)}\n\n${USAGE}`);
  }
}

export function main(argv: string[]): void {
  run(argv).then(
    (code) => {
      if (code >= 0) process.exitCode = code;
    },
    (e: Error) => {
      process.stderr.write(`kelp: ${e instanceof UsageError || e instanceof AgentUnreachable ? e.message : e.message}\n`);
      process.exitCode = e instanceof UsageError ? 2 : 1;
    },
  );
}
