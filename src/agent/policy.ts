// Policy in the agent: the reconciler's inputs (store + this node's endpoints + this node's
// addresses), the identity numbers persisted across restarts, the policy conntrack collector,
// and what the API shows (the compiled model for `kelp policy trace`, the last run's figures).
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Datapath } from '../datapath/loader';
import { ipcache4Info, ipcache4Key, policy4Key, policy4Verdict, PolicyMaps, PolicyWriter, setPolicyEnforcement } from '../datapath/policy';
import { IDENTITY_ANY, IDENTITY_HOST, IDENTITY_WORLD, IPPROTO, PolicyDirection, PolicyVerdict, RULE_ISOLATED } from '../datapath/policy-types';
import type { EndpointManager } from '../endpoint/manager';
import type { EndpointRecord } from '../endpoint/state';
import type { Logger } from '../log';
import type { Rtnl } from '../netlink';
import { compilePolicy, explain, Explanation, IdentityAllocator, LocalEndpoint, PolicyModel, TraceQuery } from '../policy';
import { formatExplanation } from '../policy/trace';
import type { ObjectStore } from '../sources/store';
import { policyReconciler, PolicyReconciler } from '../reconcile/policy';
import type { ReconcileLoop } from '../reconcile/loop';

/** How long a CNI ADD waits for its pod's policy before it fails (and is rolled back). */
export const POLICY_ADD_TIMEOUT_MS = 10_000;
/** Policy conntrack collection interval. */
const CT_GC_MS = 10_000;
const IDENTITIES_FILE = 'policy-identities.json';

export interface PolicyRunStats {
  at: string;
  ms: number;
  endpoints: number;
  identities: number;
  policyEntries: number;
  ipcacheEntries: number;
  changed: number;
  revision: number;
}

export interface AgentPolicy {
  reconciler: PolicyReconciler;
  maps: PolicyMaps;
  /** The model of the last successful compile (trace explains from it). */
  model(): PolicyModel | undefined;
  last(): PolicyRunStats | undefined;
  /** CNI ADD's afterAdd: resolves once the new endpoint's entries are in kelp_policy4. */
  afterAdd(rec: EndpointRecord): Promise<void>;
  stop(): void;
}

export interface AgentPolicyDeps {
  objects: ObjectStore;
  manager: Pick<EndpointManager, 'list'>;
  datapath: Datapath;
  reconcilers: ReconcileLoop;
  rtnl: Rtnl;
  nodeName: string;
  stateDir: string;
  /** The loop's resync interval: at least this often the writer reads the maps back and repairs drift. */
  resyncMs: number;
  log: Logger;
  /** After each pass of the policy conntrack collector: entries it deleted (metrics). */
  onCtGc?: (deleted: number) => void;
}

/** The pod a local endpoint belongs to: its Pod's `namespace/name`, or a name of its own. */
export function endpointPod(rec: Pick<EndpointRecord, 'pod' | 'containerId'>): string {
  // Without K8S_POD_* the endpoint is a pod of no namespace: no policy selects it, and
  // policies selecting peers by namespace never match it.
  return rec.pod ? `${rec.pod.namespace}/${rec.pod.name}` : `/${rec.containerId}`;
}

export function startPolicy(deps: AgentPolicyDeps): AgentPolicy {
  const { objects, log } = deps;
  const maps = deps.datapath.policyMaps();
  // Diffs against what it wrote last (reading 50,000 entries back costs ~0.6 s); reads the maps
  // back at every resync, so an entry changed behind its back is repaired then.
  const writer = new PolicyWriter(maps);
  let lastReadBack = 0;
  const allocator = new IdentityAllocator();
  const file = path.join(deps.stateDir, IDENTITIES_FILE);
  try {
    allocator.restore(readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') log.warn({ err, file }, 'policy identities not restored: numbering afresh');
  }
  let saved = allocator.snapshot();
  let model: PolicyModel | undefined;
  let last: PolicyRunStats | undefined;

  const run = async () => {
    const t0 = process.hrtime.bigint();
    const nodeIps = new Set<string>();
    for (const a of await deps.rtnl.listAddresses(undefined, 4)) nodeIps.add(a.address);
    const node = objects.get('Node', undefined, deps.nodeName);
    // The Node's InternalIP/ExternalIP, as the cluster knows this node, even if held elsewhere.
    if (node) for (const a of node.status?.addresses ?? []) if (a.type === 'InternalIP' || a.type === 'ExternalIP') nodeIps.add(a.address);
    const localEndpoints: LocalEndpoint[] = deps.manager.list().map((rec) => ({
      epId: rec.id,
      pod: endpointPod(rec),
      ips: rec.ips.map((i) => i.address.split('/')[0]),
    }));
    const res = compilePolicy(
      {
        namespaces: objects.list('Namespace'),
        pods: objects.list('Pod'),
        localEndpoints,
        nodeIps: [...nodeIps],
        networkPolicies: objects.list('NetworkPolicy'),
        clusterNetworkPolicies: objects.list('ClusterNetworkPolicy'),
        kelpNetworkPolicies: objects.list('KelpNetworkPolicy'),
      },
      allocator,
    );
    const resync = Date.now() - lastReadBack >= deps.resyncMs;
    const applied = writer.apply(res.desired, { resync });
    if (resync) lastReadBack = Date.now();
    model = res.model;
    const snap = allocator.snapshot();
    if (snap !== saved) {
      writeFileSync(file + '.tmp', snap, { mode: 0o600 });
      renameSync(file + '.tmp', file);
      saved = snap;
    }
    const changed = applied.policy.added + applied.policy.updated + applied.policy.removed + applied.ipcache.added + applied.ipcache.updated + applied.ipcache.removed;
    last = {
      at: new Date().toISOString(),
      ms: Number(process.hrtime.bigint() - t0) / 1e6,
      endpoints: localEndpoints.length,
      identities: res.model.identities.size,
      policyEntries: res.desired.policy.length,
      ipcacheEntries: res.desired.ipcache.size,
      changed,
      revision: applied.revision,
    };
    return { changed };
  };

  const reconciler = policyReconciler({ run, enable: () => setPolicyEnforcement(maps, true), log });
  deps.reconcilers.add(reconciler);

  // Opened now, not at the first collection: the agent's descriptors stay as they are from start.
  deps.datapath.map('kelp_pct4');
  const gc = setInterval(() => {
    try {
      const r = deps.datapath.gcPolicyCt();
      deps.onCtGc?.(r.deleted);
      if (r.deleted) log.debug(r, 'policy conntrack collected');
    } catch (err) {
      log.warn({ err }, 'policy conntrack collection failed');
    }
  }, CT_GC_MS);
  gc.unref();

  return {
    reconciler,
    maps,
    model: () => model,
    last: () => last,
    afterAdd: () => reconciler.programmed(() => deps.reconcilers.markDirty('policy', true), POLICY_ADD_TIMEOUT_MS),
    stop: () => clearInterval(gc),
  };
}

/** What the pinned maps answer for one side: the same walk the BPF programs make. */
export interface DatapathSide {
  identity: number | undefined;
  answer: 'host' | 'unprogrammed' | PolicyVerdict;
}

export function datapathSide(maps: PolicyMaps, epId: number, dir: PolicyDirection, peerIp: string, protocol: number, port: number): DatapathSide {
  // A lookup with a full-length key returns the trie's longest match.
  const ic = maps.ipcache.lookup(ipcache4Key.encode({ cidr: `${peerIp}/32` }));
  const identity = ic ? ipcache4Info.decode(ic).identity : IDENTITY_WORLD;
  if (identity === IDENTITY_HOST) return { identity, answer: 'host' };
  const probe = (id: number) => {
    const ported = protocol === IPPROTO.TCP || protocol === IPPROTO.UDP || protocol === IPPROTO.SCTP;
    const v = maps.policy.lookup(policy4Key.encode({ epId, identity: id, direction: dir, protocol, port: ported ? port : 0, portPrefix: 16 }));
    return v ? policy4Verdict.decode(v) : undefined;
  };
  const verdict = probe(identity) ?? probe(IDENTITY_ANY);
  return { identity, answer: verdict ?? 'unprogrammed' };
}

export interface TraceResult {
  explanation: Explanation;
  /** Per side on this node: what the maps answer, and whether it agrees with the explanation. */
  datapath: Array<{ direction: PolicyDirection; pod: string; identity: number | undefined; answer: DatapathSide['answer']; agrees: boolean }>;
  text: string;
}

/** `kelp policy trace`: the model's explanation, checked against the maps the datapath reads. */
export function tracePolicy(p: AgentPolicy, q: TraceQuery): TraceResult {
  const model = p.model();
  if (!model) throw new Error('policy trace: policy has not been compiled yet');
  const ex = explain(model, q);
  const datapath: TraceResult['datapath'] = [];
  const protocol = IPPROTO[q.protocol];
  for (const side of [ex.egress, ex.ingress]) {
    if (!side) continue;
    const member = model.pods.get(side.pod);
    if (member?.epId === undefined) continue;
    const peerIp = side.peer.ip;
    if (peerIp.includes(':')) continue;
    const dp = datapathSide(p.maps, member.epId, side.direction, peerIp, protocol, q.protocol === 'ICMP' ? 0 : q.port);
    const agrees =
      dp.answer === 'host'
        ? side.host
        : dp.answer !== 'unprogrammed' && !side.host && dp.answer.action === side.verdict.action && dp.answer.policyId === side.verdict.policyId && dp.answer.rule === side.verdict.rule;
    datapath.push({ direction: side.direction, pod: side.pod, identity: dp.identity, answer: dp.answer, agrees });
  }
  const lines = [formatExplanation(ex)];
  for (const d of datapath) {
    const said = typeof d.answer === 'string' ? d.answer : `${d.answer.action} (policy id ${d.answer.policyId}, rule ${d.answer.rule === RULE_ISOLATED ? 'none: isolated' : d.answer.rule})`;
    lines.push(`datapath, ${d.direction} of ${d.pod}: peer identity ${d.identity ?? '?'}, ${said}${d.agrees ? '' : '  <-- DISAGREES with the model'}`);
  }
  return { explanation: ex, datapath, text: lines.join('\n') + '\n' };
}
