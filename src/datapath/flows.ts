// The agent's side of a flow's one FLOW_END (bpf/lib/policy.h, kelp_flow_end): the policy
// conntrack's collector claims the end of each expired flow exactly as BPF does, by inserting
// (flow, created) into kelp_flow_end with BPF_NOEXIST, before it deletes the entry. Whoever
// inserts first reports the end; the other never does. The collector then removes the claim with
// the entry (a new flow of the same tuple has another `created`).
import type { BpfMap } from '../bpf';
import { BPF_NOEXIST } from '../bpf';
import type { FlowEvent } from './events';
import { describePolicyCt, Pct4Entry, pct4Key, POLICY_ACTION_NAMES, POLICY_DIR_NAMES, PolicyCtEnds } from './policy';
import type { PolicyAction, PolicyDirection } from './policy-types';
import { layout, StructCodec, checkLength } from './structs';

/** enum pct4_flag (bpf/lib/policy.h). */
export const PCT4_F_ENDED = 1;

export interface Flow4EndKey {
  /** struct pct4_key, encoded (pct4Key). */
  flow: Buffer;
  created: bigint;
}

const endKey = layout('flow4_end_key', 24, [
  ['flow', 16, 0],
  ['created', 8, 16],
]);

export const flow4EndKey: StructCodec<Flow4EndKey> = {
  ...endKey,
  encode(v) {
    const b = Buffer.alloc(endKey.size);
    checkLength('pct4_key', v.flow, 16);
    v.flow.copy(b, endKey.off.flow, 0, 16);
    b.writeBigUInt64LE(v.created, endKey.off.created);
    return b;
  },
  decode(b) {
    checkLength(endKey.cName, b, endKey.size);
    return { flow: Buffer.from(b.subarray(endKey.off.flow, endKey.off.flow + 16)), created: b.readBigUInt64LE(endKey.off.created) };
  },
};

/** struct policy_verdict_key: kelp_policy_verdicts' key (values are struct metrics_value). */
export interface PolicyVerdictKey {
  policyId: number;
  rule: number;
  /** enum policy_action. */
  action: number;
  /** enum policy_dir. */
  dir: number;
}

const verdictKey = layout('policy_verdict_key', 8, [
  ['policy_id', 4, 0],
  ['rule', 2, 4],
  ['action', 1, 6],
  ['dir', 1, 7],
]);

export const policyVerdictKey: StructCodec<PolicyVerdictKey> = {
  ...verdictKey,
  encode(v) {
    const b = Buffer.alloc(verdictKey.size);
    b.writeUInt32LE(v.policyId, verdictKey.off.policy_id);
    b.writeUInt16LE(v.rule, verdictKey.off.rule);
    b.writeUInt8(v.action, verdictKey.off.action);
    b.writeUInt8(v.dir, verdictKey.off.dir);
    return b;
  },
  decode(b) {
    checkLength(verdictKey.cName, b, verdictKey.size);
    return {
      policyId: b.readUInt32LE(verdictKey.off.policy_id),
      rule: b.readUInt16LE(verdictKey.off.rule),
      action: b.readUInt8(verdictKey.off.action),
      dir: b.readUInt8(verdictKey.off.dir),
    };
  },
};

export interface PolicyVerdictCount {
  policyId: number;
  rule: number;
  action: PolicyAction | 'none';
  direction: PolicyDirection | 'none';
  packets: number;
  bytes: number;
}

/**
 * kelp_policy_verdicts summed over CPUs: packets policy decided per (policy, rule, action,
 * direction) — new flows, flows decided again after a revision, drops and audits. Exact,
 * whatever became of the events. Policy 0: no policy decided (not programmed, fragments).
 */
export function readPolicyVerdicts(map: BpfMap): PolicyVerdictCount[] {
  const out: PolicyVerdictCount[] = [];
  for (const [k, v] of map.lookupBatch()) {
    const key = policyVerdictKey.decode(k);
    let packets = 0n;
    let bytes = 0n;
    const slot = v.length / map.numCpus;
    for (let cpu = 0; cpu < map.numCpus; cpu++) {
      packets += v.readBigUInt64LE(cpu * slot);
      bytes += v.readBigUInt64LE(cpu * slot + 8);
    }
    out.push({
      policyId: key.policyId,
      rule: key.rule,
      action: POLICY_ACTION_NAMES[key.action] ?? 'none',
      direction: POLICY_DIR_NAMES[key.dir] ?? 'none',
      packets: Number(packets),
      bytes: Number(bytes),
    });
  }
  return out.sort((a, b) => a.policyId - b.policyId || a.rule - b.rule || a.action.localeCompare(b.action) || a.direction.localeCompare(b.direction));
}

/** The structs of this file, for the BTF layout test. */
export const FLOW_STRUCTS: ReadonlyArray<StructCodec<unknown>> = [flow4EndKey, policyVerdictKey] as ReadonlyArray<StructCodec<unknown>>;

/** A flow-end event for an expired entry, as BPF would have sent it (closed by timeout). */
export function timeoutFlowEnd(key: Buffer, e: Pct4Entry): FlowEvent {
  const f = describePolicyCt(pct4Key.decode(key), e);
  return {
    kind: 'flow-end',
    tsNs: e.lastSeen,
    cpu: 0,
    saddr: f.orig.saddr,
    daddr: f.orig.daddr,
    sport: f.orig.sport,
    dport: f.orig.dport,
    proto: f.orig.proto,
    direction: f.verdict.direction,
    epId: e.epId,
    policy: { policyId: e.policyId, rule: e.rule, tier: f.verdict.tier, action: f.action },
    ifindex: 0,
    createdNs: e.created,
    closedBy: 'timeout',
    txPackets: e.txPackets,
    txBytes: e.txBytes,
    rxPackets: e.rxPackets,
    rxBytes: e.rxBytes,
  };
}

/** The collector's PolicyCtEnds over kelp_flow_end: each claimed end goes to `onEnd`. */
export function flowEndClaims(claims: BpfMap, onEnd: (ev: FlowEvent) => void): PolicyCtEnds {
  const value = Buffer.alloc(4);
  value.writeUInt32LE(1, 0);
  const keyOf = (key: Buffer, e: Pct4Entry) => flow4EndKey.encode({ flow: key, created: e.created });
  return {
    claim(key, e) {
      if ((e.flags ?? 0) & PCT4_F_ENDED) return false;
      try {
        claims.update(keyOf(key, e), value, BPF_NOEXIST);
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
        throw err;
      }
    },
    ended(key, e) {
      onEnd(timeoutFlowEnd(key, e));
    },
    release(key, e) {
      claims.delete(keyOf(key, e));
    },
  };
}
