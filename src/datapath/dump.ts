// What `kelp map dump NAME` and `kelp status` show of each map. One function lists a map's rows,
// and status counts the same rows, so the two always agree. Each map shows its own entries
// only (kelp_metrics does not fold in kelp_metrics_fwd: `kelp get counters` is the merged view).
import type { BpfMap } from '../bpf';
import { MapType } from '../bpf';
import { dropReasonName } from './drop';
import { Direction, endpointInfo, endpointKey, endpointSlot, metricsFwdSlot, metricsKey, sumPerCpuMetrics } from './structs';
import { ct4Entry, Ct4Entry, nat4Entry, Nat4Entry, nomasq4Key, tuple4 } from './nat';
import type { StructCodec } from './structs';
import {
  decodeMaglevTable,
  lb4MaglevKey,
  lb4Affinity,
  lb4AffinityKey,
  lb4Backend,
  lb4BackendKey,
  lb4CtEntry,
  lb4Frontend,
  lb4FrontendKey,
  lb4MemberKey,
  lb4SourceRangeKey,
} from './service';
import { overlayConfig, tunnel4Info, tunnel4Key } from './tunnel';
import { describePolicyCt, frag4Key, frag4Ports, ipcache4Info, ipcache4Key, pct4Entry, pct4Key, policy4Key, policy4Verdict, policyConfig } from './policy';

export interface MapRow {
  key: unknown;
  value: unknown;
}

export { MAP_DESCRIPTIONS } from './maps/registry';

function dirName(dir: number): string {
  return dir === Direction.FROM_POD ? 'from-pod' : dir === Direction.TO_POD ? 'to-pod' : String(dir);
}

function nonZero(v: { packets: bigint; bytes: bigint }): boolean {
  return v.packets !== 0n || v.bytes !== 0n;
}

/**
 * The rows of a kelp map, decoded where kelp knows the layout, hex otherwise. `layout`: the
 * value codec of the layout loaded, for maps that have had more than one (maps/registry.ts).
 */
export function mapRows(name: string, m: BpfMap, layout?: { value?: StructCodec<unknown> }): MapRow[] {
  switch (name) {
    case 'kelp_endpoints':
      return m.lookupBatch().map(([k, v]) => ({ key: endpointKey.decode(k), value: endpointInfo.decode(v) }));
    case 'kelp_endpoint_cache':
      // 16384 slots, most of them empty: one batch read, live slots only.
      return m.lookupBatch().flatMap(([k, v]) => {
        const slot = endpointSlot.decode(v);
        return slot.live ? [{ key: k.readUInt32LE(0), value: slot }] : [];
      });
    case 'kelp_metrics':
      return m.lookupBatch().map(([k, v]) => {
        const key = metricsKey.decode(k);
        return {
          key: { epId: key.epId, dir: dirName(key.dir), reason: key.reason === 0 ? 'forwarded' : dropReasonName(key.reason) },
          value: sumPerCpuMetrics(v, m.numCpus),
        };
      });
    case 'kelp_metrics_fwd':
      return m.lookupBatch().flatMap(([k, v]) => {
        const value = sumPerCpuMetrics(v, m.numCpus);
        if (!nonZero(value)) return [];
        const slot = metricsFwdSlot(k.readUInt32LE(0));
        return [{ key: { epId: slot.epId, dir: dirName(slot.dir), reason: 'forwarded' }, value }];
      });
    case 'kelp_ct4':
      return m.lookupBatch().map(([k, v]) => ({ key: tuple4.decode(k), value: ((layout?.value ?? ct4Entry) as StructCodec<Ct4Entry>).decode(v) }));
    case 'kelp_snat4':
      return m.lookupBatch().map(([k, v]) => ({ key: tuple4.decode(k), value: ((layout?.value ?? nat4Entry) as StructCodec<Nat4Entry>).decode(v) }));
    case 'kelp_nomasq4':
      return m.keys().map((k) => ({ key: nomasq4Key.decode(k), value: m.lookup(k)?.readUInt8(0) }));
    case 'kelp_ipcache4':
      return decodedRows(m, ipcache4Key, ipcache4Info);
    case 'kelp_policy4':
      return decodedRows(m, policy4Key, policy4Verdict);
    case 'kelp_policy_config':
      return m.lookupBatch().map(([k, v]) => ({ key: k.readUInt32LE(0), value: policyConfig.decode(v) }));
    case 'kelp_pct4':
      return m.lookupBatch().map(([k, v]) => {
        const flow = describePolicyCt(pct4Key.decode(k), pct4Entry.decode(v));
        return { key: flow.orig, value: { ...flow.entry, action: flow.action, verdict: flow.verdict } };
      });
    case 'kelp_lb4_frontends':
      return m.lookupBatch().map(([k, v]) => ({ key: lb4FrontendKey.decode(k), value: lb4Frontend.decode(v) }));
    case 'kelp_lb4_backends':
      return m.lookupBatch().map(([k, v]) => ({ key: lb4BackendKey.decode(k), value: lb4Backend.decode(v) }));
    case 'kelp_lb4_members':
      return m.lookupBatch().map(([k, v]) => ({ key: lb4MemberKey.decode(k), value: { slot: v.readUInt32LE(0) } }));
    case 'kelp_lb4_maglev': {
      // A table is hundreds to thousands of slots in chunks: per table, its size and each backend slot's share.
      const tables = new Map<number, Array<{ chunk: number; value: Buffer }>>();
      for (const [k, v] of m.lookupBatch()) {
        const key = lb4MaglevKey.decode(k);
        tables.set(key.tableId, [...(tables.get(key.tableId) ?? []), { chunk: key.chunk, value: v }]);
      }
      return [...tables].map(([tableId, chunks]) => {
        const table = decodeMaglevTable(chunks.sort((a, b) => a.chunk - b.chunk).map((c) => c.value));
        const share: Record<number, number> = {};
        for (const s of table) share[s] = (share[s] ?? 0) + 1;
        return { key: { tableId }, value: { size: table.length, chunks: chunks.length, slotsPerBackend: share } };
      });
    }
    case 'kelp_lb4_affinity':
      return m.lookupBatch().map(([k, v]) => ({ key: lb4AffinityKey.decode(k), value: lb4Affinity.decode(v) }));
    case 'kelp_lb4_source_ranges':
      return decodedRows(m, lb4SourceRangeKey, { cName: '__u8', size: 1, fields: [], encode: () => Buffer.alloc(1), decode: (b: Buffer) => b.readUInt8(0) });
    case 'kelp_lb4_ct':
      return m.lookupBatch().map(([k, v]) => ({ key: tuple4.decode(k), value: lb4CtEntry.decode(v) }));
    case 'kelp_frag4':
      return m.lookupBatch().map(([k, v]) => ({ key: frag4Key.decode(k), value: frag4Ports.decode(v) }));
    case 'kelp_tunnel4':
      return decodedRows(m, tunnel4Key, tunnel4Info);
    case 'kelp_overlay_config':
      // The one slot, once the agent wrote it (mode NONE before).
      return m.lookupBatch().flatMap(([k, v]) => {
        const value = overlayConfig.decode(v);
        return value.mode === 0 ? [] : [{ key: k.readUInt32LE(0), value }];
      });
  }
  if (m.type === MapType.RINGBUF) return [];
  return m.keys().map((k) => ({ key: k.toString('hex'), value: m.lookup(k)?.toString('hex') }));
}

/** Rows of a map without batch lookups (LPM tries): one lookup per key; a key gone meanwhile is skipped. */
function decodedRows<K, V>(m: BpfMap, key: StructCodec<K>, value: StructCodec<V>): MapRow[] {
  return m.keys().flatMap((k) => {
    const v = m.lookup(k);
    return v ? [{ key: key.decode(k), value: value.decode(v) }] : [];
  });
}

/**
 * How many rows mapRows lists, without decoding them: `kelp status` counts every map at every
 * call. Arrays list only their live or non-zero slots, so those are read; every other map lists
 * one row per key.
 */
export function mapRowCount(name: string, m: BpfMap): number {
  if (m.type === MapType.RINGBUF) return 0;
  if (m.type === MapType.ARRAY || m.type === MapType.PERCPU_ARRAY) return mapRows(name, m).length;
  return m.keys().length;
}
