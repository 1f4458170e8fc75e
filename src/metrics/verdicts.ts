// kelp_policy_verdicts (bpf/lib/policy.h: packets per policy id, rule, action and direction)
// named by the policies the node has now. Ids are the compiler's stable numbers: kept while a
// policy exists, freed when it goes and then given to the next new policy, while the BPF counters
// of the id stay. So the series of a policy are those of its id *since it got the id*: a reader
// remembers which policy owned each id, and when an id changes hands, what was counted until then
// becomes the id's baseline, subtracted from then on. Ids no policy holds are not exported: a
// deleted policy's series go at the next scrape.
import type { BpfMap } from '../bpf';
import { policyVerdictKey } from '../datapath/flows';
import { POLICY_ACTION_NAMES, POLICY_DIR_NAMES } from '../datapath/policy';
import { sumPerCpuMetrics } from '../datapath/structs';
import type { PolicyVerdictSample } from './exporter';

/** One counter of kelp_policy_verdicts, summed over CPUs. */
export interface VerdictCounter {
  policyId: number;
  rule: number;
  action: number;
  dir: number;
  packets: bigint;
}

/** A policy as the model numbers it: `ref` is Kind/namespace/name or Kind/name (cluster-scoped). */
export interface NumberedPolicy {
  id: number;
  kind: string;
  ref: string;
}

export function readVerdictCounters(map: BpfMap): VerdictCounter[] {
  return map.lookupBatch().map(([k, v]) => ({ ...policyVerdictKey.decode(k), packets: sumPerCpuMetrics(v, map.numCpus).packets }));
}

function names(p: NumberedPolicy): { namespace: string; name: string } {
  const parts = p.ref.split('/');
  return parts.length >= 3 ? { namespace: parts[1], name: parts.slice(2).join('/') } : { namespace: '', name: parts[parts.length - 1] };
}

export class PolicyVerdictNames {
  /** Who held each id at the last read (ref). */
  private readonly owner = new Map<number, string>();
  /** Per counter: packets that belong to an earlier holder of its id. */
  private readonly baseline = new Map<string, bigint>();

  /**
   * Samples for the current policies. Policy id 0 (no policy decided: an endpoint not yet
   * programmed, a fragment without its flow) is exported as kind "none".
   */
  samples(counters: readonly VerdictCounter[], policies: readonly NumberedPolicy[]): PolicyVerdictSample[] {
    const byId = new Map(policies.map((p) => [p.id, p]));
    const handedOver = new Set<number>();
    for (const p of policies) {
      const was = this.owner.get(p.id);
      // The first holder seen since the agent started keeps what the pinned map holds: ids
      // survive restarts with their policies (the identity snapshot).
      if (was !== undefined && was !== p.ref) handedOver.add(p.id);
      this.owner.set(p.id, p.ref);
    }
    // An id handed over starts again from what its counters hold now (none yet: from zero).
    if (handedOver.size) for (const k of [...this.baseline.keys()]) if (handedOver.has(Number(k.split('/')[0]))) this.baseline.delete(k);
    const out: PolicyVerdictSample[] = [];
    for (const c of counters) {
      const key = `${c.policyId}/${c.rule}/${c.action}/${c.dir}`;
      if (handedOver.has(c.policyId)) this.baseline.set(key, c.packets);
      let base = this.baseline.get(key) ?? 0n;
      // The counter was deleted and begun again: nothing of it is the earlier holder's.
      if (c.packets < base) {
        this.baseline.delete(key);
        base = 0n;
      }
      const packets = c.packets - base;
      const action = POLICY_ACTION_NAMES[c.action] ?? String(c.action);
      const direction = POLICY_DIR_NAMES[c.dir] ?? String(c.dir);
      if (c.policyId === 0) {
        out.push({ kind: 'none', namespace: '', name: '', rule: c.rule, action, direction, packets });
        continue;
      }
      const p = byId.get(c.policyId);
      if (!p) continue;
      out.push({ kind: p.kind, ...names(p), rule: c.rule, action, direction, packets });
    }
    return out;
  }
}
