// FlowQuery (src/datapath/flow-types.ts) from a URL's query string, checked field by field, and
// the match of a record against it: every filter given must match (AND); a filter given several
// times matches any of its values (OR); namespace, pod and port match either side of the flow
// unless `side` narrows them.
import type { FlowPeer, FlowQuery, FlowRecord, Verdict } from '../datapath/flow-types';

export class FlowQueryError extends Error {}

const VERDICTS: readonly Verdict[] = ['forwarded', 'dropped', 'audit'];
const TYPES: ReadonlyArray<FlowRecord['type']> = ['flow-start', 'flow-end', 'drop', 'audit', 'trace'];
const SIDES: ReadonlyArray<NonNullable<FlowQuery['side']>> = ['either', 'source', 'destination'];
const KNOWN = new Set(['follow', 'last', 'namespace', 'pod', 'service', 'verdict', 'reason', 'protocol', 'port', 'type', 'side']);

export const DEFAULT_LAST = 20;

function oneOf<T extends string>(field: string, values: string[], allowed: readonly T[]): T[] {
  for (const v of values) if (!allowed.includes(v as T)) throw new FlowQueryError(`${field}: ${JSON.stringify(v)} is not one of ${allowed.join(', ')}`);
  return values as T[];
}

function int(field: string, v: string, min: number, max: number): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < min || n > max) throw new FlowQueryError(`${field}: ${JSON.stringify(v)} is not an integer ${min}..${max}`);
  return n;
}

function bool(field: string, v: string): boolean {
  if (v === '' || v === '1' || v === 'true') return true;
  if (v === '0' || v === 'false') return false;
  throw new FlowQueryError(`${field}: ${JSON.stringify(v)} is not true or false`);
}

/** Parses the query of GET /v1/flows; throws FlowQueryError naming the parameter at fault. */
export function parseFlowQuery(p: URLSearchParams): FlowQuery {
  for (const k of p.keys()) if (!KNOWN.has(k)) throw new FlowQueryError(`unknown parameter ${JSON.stringify(k)}; known: ${[...KNOWN].join(', ')}`);
  const q: FlowQuery = {};
  const many = (k: string) => p.getAll(k).flatMap((v) => v.split(',')).filter((v) => v !== '');
  if (p.has('follow')) q.follow = bool('follow', p.get('follow')!);
  if (p.has('last')) q.last = int('last', p.get('last')!, 0, 1_000_000);
  if (p.has('side')) q.side = oneOf('side', [p.get('side')!], SIDES)[0];
  const ns = many('namespace');
  if (ns.length) q.namespace = ns;
  const pods = many('pod');
  for (const pod of pods) if (pod.split('/').length > 2 || pod.startsWith('/') || pod.endsWith('/')) throw new FlowQueryError(`pod: ${JSON.stringify(pod)} is not namespace/name or name`);
  if (pods.length) q.pod = pods;
  const svcs = many('service');
  for (const s of svcs) if (s.split('/').length !== 2 || s.startsWith('/') || s.endsWith('/')) throw new FlowQueryError(`service: ${JSON.stringify(s)} is not namespace/name`);
  if (svcs.length) q.service = svcs;
  const verdicts = many('verdict');
  if (verdicts.length) q.verdict = oneOf('verdict', verdicts, VERDICTS);
  const reasons = many('reason');
  if (reasons.length) q.reason = reasons.map((r) => r.toUpperCase());
  const protos = many('protocol');
  if (protos.length) q.protocol = protos.map((r) => r.toUpperCase());
  const ports = many('port');
  if (ports.length) q.port = ports.map((v) => int('port', v, 0, 65535));
  const types = many('type');
  if (types.length) q.type = oneOf('type', types, TYPES);
  return q;
}

function sides(rec: FlowRecord, q: FlowQuery): FlowPeer[] {
  if (q.side === 'source') return [rec.source];
  if (q.side === 'destination') return [rec.destination];
  return [rec.source, rec.destination];
}

/** The pod filter `f` (namespace/name, or a name within one of `namespaces`) names `peer`'s pod. */
function podMatches(peer: FlowPeer, f: string, namespaces: string[] | undefined): boolean {
  if (!peer.pod) return false;
  const slash = f.indexOf('/');
  if (slash >= 0) return `${peer.pod.namespace}/${peer.pod.name}` === f;
  return peer.pod.name === f && (!namespaces || namespaces.includes(peer.pod.namespace));
}

export function matchFlow(rec: FlowRecord, q: FlowQuery): boolean {
  if (q.type && !q.type.includes(rec.type)) return false;
  if (q.verdict && !q.verdict.includes(rec.verdict)) return false;
  if (q.reason && !(rec.reason && q.reason.includes(rec.reason))) return false;
  if (q.protocol && !q.protocol.includes(rec.protocol.toUpperCase())) return false;
  if (q.service && !(rec.service && q.service.includes(`${rec.service.namespace}/${rec.service.name}`))) return false;
  const peers = sides(rec, q);
  // A bare pod name is looked up within the namespaces given: the namespace filter then applies
  // through it rather than on its own.
  const barePods = q.pod?.some((p) => !p.includes('/')) ?? false;
  if (q.namespace && !barePods && !peers.some((p) => p.pod && q.namespace!.includes(p.pod.namespace))) return false;
  if (q.pod && !peers.some((p) => q.pod!.some((f) => podMatches(p, f, q.namespace)))) return false;
  if (q.port && !peers.some((p) => q.port!.includes(p.port))) return false;
  return true;
}
