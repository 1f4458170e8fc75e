// `kelp observe`: the agent's flow records (GET /v1/flows, src/datapath/flow-types.ts) as one
// line each, or NDJSON for scripts, past ones (--last) and then, with --follow, new ones as they
// come; `kelp observe summary`: top talkers, top drop reasons and the event accounting over a
// window (GET /v1/flows/summary). Flags are checked here, before the agent is asked, so a typo
// is a usage error naming the flag and its valid values, not an empty result.
import http from 'node:http';
import { UsageError } from '../agent/options';
import { DropReason } from '../datapath/drop';
import type { EventClass, FlowPeer, FlowQuery, FlowRecord, FlowSummary, Verdict } from '../datapath/flow-types';
import { AgentUnreachable, requestJson } from './client';
import { formatTable } from './table';

export const OBSERVE_USAGE = `Usage: kelp observe [flags]            flows seen by this node's datapath, oldest first
       kelp observe summary [--window D] top talkers, top drop reasons and event accounting

Flags:
  -f, --follow                keep printing new flows as they come
  --last N                    start with the last N stored flows (default 20; the agent keeps 4,096;
                              -f --last 0: only new ones)
  -n, --namespace NS          flows with a pod of namespace NS on either side
  --pod [NS/]NAME             flows with this pod on either side (NAME alone: within --namespace)
  --service NS/NAME           flows translated from this Service
  --verdict V                 forwarded, dropped or audit
  --reason REASON             drop reason, e.g. POLICY_DENY (kelp get counters lists them)
  --protocol P                tcp, udp, sctp or icmp
  --port N                    flows with port N on either side
  --type T                    flow-start, flow-end, drop, audit or trace
  --from-namespace, --from-pod, --from-port
  --to-namespace, --to-pod, --to-port
                              the same filters, on the source or the destination side only
  --side either|source|destination
                              which side --namespace, --pod and --port look at (default either)
  --window D                  summary: the window, as 60s, 5m, 1h or seconds (default 60s)
  -o text|json                json: one FlowRecord (or the summary) per line
  --socket PATH               agent API socket (default $KELP_SOCKET or /run/kelp/kelp.sock)
Every filter may be repeated (any of its values); different filters must all match.
`;

const VERDICTS: readonly Verdict[] = ['forwarded', 'dropped', 'audit'];
const TYPES: ReadonlyArray<FlowRecord['type']> = ['flow-start', 'flow-end', 'drop', 'audit', 'trace'];
const PROTOCOLS = ['TCP', 'UDP', 'SCTP', 'ICMP'];
const SIDES: ReadonlyArray<NonNullable<FlowQuery['side']>> = ['either', 'source', 'destination'];
/** Drop reasons by name, and the would-be reason of audits (which is a drop reason too). */
const REASONS = Object.keys(DropReason);

export interface ObserveArgs {
  command: 'flows' | 'summary';
  socket: string;
  output: 'text' | 'json';
  query: FlowQuery;
  /** summary: seconds. */
  windowSeconds: number;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** Pod names are DNS subdomains; namespaces DNS labels. */
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

function checkNamespace(flag: string, v: string): string {
  if (!DNS_LABEL.test(v) || v.length > 63) throw new UsageError(`${flag}: ${JSON.stringify(v)} is not a namespace name (a DNS label)`);
  return v;
}

function checkPod(flag: string, v: string): string {
  const parts = v.split('/');
  if (parts.length > 2) throw new UsageError(`${flag}: ${JSON.stringify(v)} is not NAMESPACE/NAME or NAME`);
  if (parts.length === 2) checkNamespace(flag, parts[0]);
  const name = parts[parts.length - 1];
  if (!DNS_SUBDOMAIN.test(name) || name.length > 253) throw new UsageError(`${flag}: ${JSON.stringify(v)}: ${JSON.stringify(name)} is not a pod name`);
  return v;
}

function checkService(flag: string, v: string): string {
  const parts = v.split('/');
  if (parts.length !== 2 || !DNS_LABEL.test(parts[1])) throw new UsageError(`${flag}: ${JSON.stringify(v)} is not NAMESPACE/NAME of a Service`);
  checkNamespace(flag, parts[0]);
  return v;
}

function checkPort(flag: string, v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 65535) throw new UsageError(`${flag}: ${JSON.stringify(v)} is not a port (1..65535)`);
  return n;
}

function choice<T extends string>(flag: string, v: string, allowed: readonly T[], normalise: (s: string) => string): T {
  const n = normalise(v);
  if (!allowed.includes(n as T)) throw new UsageError(`${flag}: ${JSON.stringify(v)} is not one of ${allowed.join(', ')}`);
  return n as T;
}

/** 60s, 5m, 1h, or plain seconds; 1 s .. 1 day. */
export function parseWindow(v: string): number {
  const m = /^(\d+)(s|m|h)?$/.exec(v);
  const n = m ? Number(m[1]) * { s: 1, m: 60, h: 3600 }[(m[2] ?? 's') as 's' | 'm' | 'h'] : NaN;
  if (!m || n < 1 || n > 86400) throw new UsageError(`--window: ${JSON.stringify(v)} is not a duration between 1s and 24h (e.g. 60s, 5m, 1h)`);
  return n;
}

type PeerFilter = 'namespace' | 'pod' | 'port';

/** Parses `kelp observe` arguments (after the command word); throws UsageError naming the flag. */
export function parseObserveArgs(argv: readonly string[]): ObserveArgs {
  const out: ObserveArgs = { command: 'flows', socket: process.env.KELP_SOCKET ?? '/run/kelp/kelp.sock', output: 'text', query: {}, windowSeconds: 60 };
  const q = out.query;
  const push = <K extends keyof FlowQuery>(k: K, v: NonNullable<FlowQuery[K]> extends Array<infer E> ? E : never) => {
    ((q[k] ??= [] as never) as unknown[]).push(v);
  };
  // Which side the peer filters were given for: the API narrows all of them to one side.
  let sided: { side: 'source' | 'destination'; flag: string } | undefined;
  let plainPeer: string | undefined;
  let sideFlag: NonNullable<FlowQuery['side']> | undefined;
  let windowGiven: string | undefined;
  const args = [...argv];
  if (args[0] === 'summary') {
    out.command = 'summary';
    args.shift();
  }
  const peer = (flag: string, kind: PeerFilter, side: 'source' | 'destination' | undefined, v: string) => {
    if (side) {
      if (sided && sided.side !== side) throw new UsageError(`${flag} with ${sided.flag}: filters narrow one side at a time (the source or the destination); run two observes, or use --${kind} for either side`);
      sided ??= { side, flag };
    } else {
      plainPeer ??= flag;
    }
    if (kind === 'namespace') push('namespace', checkNamespace(flag, v));
    else if (kind === 'pod') push('pod', checkPod(flag, v));
    else push('port', checkPort(flag, v));
  };
  for (let i = 0; i < args.length; i++) {
    let a = args[i];
    let inline: string | undefined;
    const eq = a.startsWith('--') ? a.indexOf('=') : -1;
    if (eq > 0) {
      inline = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const value = () => {
      const v = inline ?? args[++i];
      if (v === undefined || (inline === undefined && v.startsWith('-') && v.length > 1)) throw new UsageError(`${a} needs a value`);
      return v;
    };
    const noValue = () => {
      if (inline !== undefined) throw new UsageError(`${a} takes no value`);
    };
    const sideOf = /^--(from|to)-(namespace|pod|port)$/.exec(a);
    if (sideOf) {
      peer(a, sideOf[2] as PeerFilter, sideOf[1] === 'from' ? 'source' : 'destination', value());
      continue;
    }
    switch (a) {
      case '-f':
      case '--follow':
        noValue();
        q.follow = true;
        break;
      case '--last': {
        const v = value();
        const n = Number(v);
        if (!/^\d+$/.test(v)) throw new UsageError(`--last: ${JSON.stringify(v)} is not a count (0 or more)`);
        q.last = n;
        break;
      }
      case '-n':
      case '--namespace':
        peer(a, 'namespace', undefined, value());
        break;
      case '--pod':
        peer(a, 'pod', undefined, value());
        break;
      case '--port':
        peer(a, 'port', undefined, value());
        break;
      case '--service':
        push('service', checkService(a, value()));
        break;
      case '--verdict':
        push('verdict', choice(a, value(), VERDICTS, (s) => ({ drop: 'dropped', forward: 'forwarded' })[s.toLowerCase()] ?? s.toLowerCase()));
        break;
      case '--reason':
        push('reason', choice(a, value(), REASONS, (s) => s.toUpperCase()));
        break;
      case '--protocol':
        push('protocol', choice(a, value(), PROTOCOLS, (s) => s.toUpperCase()));
        break;
      case '--type':
        push('type', choice(a, value(), TYPES, (s) => s.toLowerCase()));
        break;
      case '--side':
        sideFlag = choice(a, value(), SIDES, (s) => s.toLowerCase());
        break;
      case '--window':
        windowGiven = value();
        out.windowSeconds = parseWindow(windowGiven);
        break;
      case '-o':
      case '--output': {
        const v = value();
        if (v !== 'json' && v !== 'text' && v !== 'table') throw new UsageError(`-o: ${JSON.stringify(v)} is not text or json`);
        out.output = v === 'json' ? 'json' : 'text';
        break;
      }
      case '--socket':
        out.socket = value();
        break;
      default:
        throw new UsageError(a.startsWith('-') ? `kelp observe: unknown flag ${JSON.stringify(a)}; see kelp observe --help` : `kelp observe: unexpected argument ${JSON.stringify(a)} (did you mean "kelp observe summary"?)`);
    }
  }
  if (sided && plainPeer) throw new UsageError(`${plainPeer} with ${sided.flag}: the side applies to every peer filter; use --${sided.side === 'source' ? 'from' : 'to'}-${plainPeer.replace(/^-n$/, '--namespace').replace(/^--/, '')} instead`);
  if (sided && sideFlag && sideFlag !== sided.side) throw new UsageError(`--side ${sideFlag} with ${sided.flag}: they disagree`);
  const side = sided?.side ?? sideFlag;
  if (side && side !== 'either') q.side = side;
  if (out.command === 'summary') {
    const flowOnly = Object.keys(q);
    if (flowOnly.length) throw new UsageError(`kelp observe summary takes --window, -o and --socket only, not the flow filters (${flowOnly.join(', ')})`);
  } else if (windowGiven !== undefined) {
    throw new UsageError('--window is for kelp observe summary');
  }
  return out;
}

/** The query string of GET /v1/flows (repeated parameters: any of). */
export function flowQueryString(q: FlowQuery): string {
  const p = new URLSearchParams();
  if (q.follow) p.set('follow', 'true');
  if (q.last !== undefined) p.set('last', String(q.last));
  for (const k of ['namespace', 'pod', 'service', 'verdict', 'reason', 'protocol', 'port', 'type'] as const) for (const v of q[k] ?? []) p.append(k, String(v));
  if (q.side) p.set('side', q.side);
  const s = p.toString();
  return s ? `?${s}` : '';
}

// --- formatting ---------------------------------------------------------------------------------

/** `2026-12-06T13:05:49.123456789Z` → `2026-12-06 13:05:49.123456` (text kept: no float rounding). */
export function formatTime(t: string): string {
  const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.(\d+))?/.exec(t);
  if (!m) return t;
  return `${m[1]} ${m[2]}.${(m[3] ?? '').padEnd(6, '0').slice(0, 6)}`;
}

const portless = (protocol: string) => protocol.toUpperCase() === 'ICMP';

/** A pod as namespace/name:port; anything else as address:port, with the node's name or "world". */
export function formatPeer(p: FlowPeer, protocol: string): string {
  const port = portless(protocol) || !p.port ? '' : `:${p.port}`;
  if (p.pod) return `${p.pod.namespace}/${p.pod.name}${port}`;
  const where = p.node ? ` (node ${p.node})` : p.world ? ' (world)' : '';
  return `${p.address}${port}${where}`;
}

function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

/** One flow record as one line: time, type, source -> destination, service, protocol, verdict, reason, policy. */
export function formatFlow(r: FlowRecord): string {
  const parts = [formatTime(r.time), r.type.toUpperCase().padEnd(10), formatPeer(r.source, r.protocol), '->', formatPeer(r.destination, r.protocol)];
  if (r.service) parts.push(`svc ${r.service.namespace}/${r.service.name} (${r.service.address}:${r.service.port})`);
  parts.push(r.protocol);
  const verdict = r.verdict === 'audit' ? 'AUDIT (would drop)' : r.verdict.toUpperCase();
  parts.push(`${verdict} ${r.direction}`);
  if (r.reason) parts.push(r.reason);
  if (r.policy) {
    const p = r.policy;
    const rule = p.rule === 65535 ? 'no rule allows it (isolated)' : `rule ${p.rule}`;
    parts.push(`by ${p.kind} ${p.namespace ? `${p.namespace}/` : ''}${p.name} ${rule} (${p.tier}, ${p.action})`);
  }
  if (r.counters) {
    const c = r.counters;
    parts.push(`out ${c.packetsOut} pkts/${humanBytes(c.bytesOut)} in ${c.packetsIn} pkts/${humanBytes(c.bytesIn)} ${c.durationMs} ms closed by ${c.closedBy}`);
  }
  return parts.join(' ');
}

const CLASSES: readonly EventClass[] = ['drop', 'flow', 'trace'];

export function formatSummary(s: FlowSummary): string {
  let out = `Over the last ${s.windowSeconds}s\n\nTOP TALKERS\n`;
  out += s.talkers.length
    ? formatTable(['SOURCE', 'DESTINATION', 'FLOWS', 'BYTES', 'DROPS'], s.talkers.map((t) => [t.source, t.destination, t.flows, humanBytes(t.bytes), t.drops]))
    : '(no flows)\n';
  out += '\nTOP DROP REASONS\n';
  out += s.dropReasons.length ? formatTable(['REASON', 'COUNT', 'POLICY'], s.dropReasons.map((d) => [d.reason, d.count, d.policy])) : '(no drops)\n';
  out += '\nEVENTS SINCE THE AGENT STARTED (attempted = emitted + suppressed + lost; emitted = received + in flight)\n';
  out += formatTable(
    ['CLASS', 'EMITTED', 'SUPPRESSED', 'LOST', 'RECEIVED'],
    CLASSES.map((c) => {
      const x = s.stats.byClass[c];
      return [c, x?.emitted ?? 0, x?.suppressed ?? 0, x?.lost ?? 0, x?.received ?? 0];
    }),
  );
  if (s.stats.unknown) out += `unreadable records (unknown version, type or size): ${s.stats.unknown}\n`;
  return out;
}

// --- the command --------------------------------------------------------------------------------

/** GET on the agent's socket, calling `onLine` with each NDJSON line as it arrives. */
function streamLines(socketPath: string, urlPath: string, onLine: (line: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method: 'GET', path: urlPath }, (res) => {
      if ((res.statusCode ?? 0) !== 200) {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let msg = text.trim();
          try {
            msg = (JSON.parse(text) as { error?: string }).error ?? msg;
          } catch {
            // not JSON: the text as it is
          }
          reject(new Error(`agent answered ${res.statusCode}: ${msg}`));
        });
        return;
      }
      let rest = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        rest += chunk;
        let nl: number;
        while ((nl = rest.indexOf('\n')) >= 0) {
          const line = rest.slice(0, nl);
          rest = rest.slice(nl + 1);
          if (line.trim()) onLine(line);
        }
      });
      res.on('end', () => {
        if (rest.trim()) onLine(rest);
        resolve();
      });
      res.on('error', reject);
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') reject(new AgentUnreachable(`kelp agent is not reachable at ${socketPath}: ${e.code}`));
      else reject(e);
    });
    req.end();
  });
}

export async function observeCommand(argv: readonly string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(OBSERVE_USAGE);
    return 0;
  }
  const a = parseObserveArgs(argv);
  // `kelp observe | head`: a closed pipe ends the command quietly.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
  if (a.command === 'summary') {
    const s = await requestJson<FlowSummary>(a.socket, 'GET', `/v1/flows/summary?window=${a.windowSeconds}`);
    process.stdout.write(a.output === 'json' ? JSON.stringify(s) + '\n' : formatSummary(s));
    return 0;
  }
  await streamLines(a.socket, `/v1/flows${flowQueryString(a.query)}`, (line) => {
    if (a.output === 'json') {
      process.stdout.write(line + '\n');
      return;
    }
    let rec: FlowRecord;
    try {
      rec = JSON.parse(line) as FlowRecord;
    } catch {
      process.stderr.write(`kelp observe: the agent sent a line that is not JSON: ${line.slice(0, 200)}\n`);
      return;
    }
    process.stdout.write(formatFlow(rec) + '\n');
  });
  return 0;
}
