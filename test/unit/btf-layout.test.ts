// Every struct and enum that TypeScript mirrors from bpf/lib/*.h agrees with the BTF that clang
// wrote into the objects that use it (build/bpf/lxc.o, build/bpf/host.o): sizes, field offsets,
// enumerator names and values.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { btfEnum, btfStructLayout } from '../../src/bpf';
import { DropReason, MetricsReason } from '../../src/datapath/drop';
import { NAT_ENUMS, NAT_STRUCTS } from '../../src/datapath/nat';
import { POLICY_ENUMS, POLICY_STRUCTS } from '../../src/datapath/policy';
import { LB_ENUMS, LB_STRUCTS } from '../../src/datapath/service';
import { TUNNEL_ENUMS, TUNNEL_STRUCTS } from '../../src/datapath/tunnel';
import { FLOW_STRUCTS } from '../../src/datapath/flows';
import {
  ALL_STRUCTS,
  MIRRORED_ENUMS,
  StructCodec,
  endpointInfo,
  endpointKey,
  endpointSlot,
  kelpEvent,
  kelpEventPolicy,
  metricsKey,
  metricsValue,
} from '../../src/datapath/structs';

const object = (name: string) => path.join(__dirname, '../../build/bpf', `${name}.o`);

const DROP_ENUM = {
  kelp_drop_reason: Object.fromEntries(Object.entries(DropReason).map(([name, code]) => [`DROP_${name}`, code])),
};

const METRICS_REASON_ENUM = {
  kelp_metrics_reason: { KELP_REASON_FORWARDED: MetricsReason.FORWARDED, KELP_REASON_POLICY_AUDIT: MetricsReason.POLICY_AUDIT },
};

const { kelp_dir, kelp_event_type, kelp_trace_point } = MIRRORED_ENUMS;

/** Per object, what it shares with the agent: the maps it declares and the events it emits. */
const OBJECTS: Array<{ name: string; structs: ReadonlyArray<StructCodec<unknown>>; enums: Record<string, Record<string, number>> }> = [
  {
    name: 'lxc',
    structs: [...ALL_STRUCTS, ...POLICY_STRUCTS, ...LB_STRUCTS, ...TUNNEL_STRUCTS, ...FLOW_STRUCTS],
    enums: { ...DROP_ENUM, ...MIRRORED_ENUMS, ...METRICS_REASON_ENUM, ...POLICY_ENUMS, ...LB_ENUMS, ...TUNNEL_ENUMS },
  },
  {
    name: 'overlay',
    structs: [...POLICY_STRUCTS, ...LB_STRUCTS, ...TUNNEL_STRUCTS, endpointKey, endpointInfo, endpointSlot, metricsKey, metricsValue, kelpEvent, kelpEventPolicy] as ReadonlyArray<
      StructCodec<unknown>
    >,
    enums: { ...DROP_ENUM, kelp_dir, kelp_event_type, kelp_trace_point, ...METRICS_REASON_ENUM, ...TUNNEL_ENUMS },
  },
  {
    name: 'host',
    structs: [...NAT_STRUCTS, ...POLICY_STRUCTS, ...LB_STRUCTS, endpointKey, endpointInfo, endpointSlot, metricsKey, metricsValue, kelpEvent, kelpEventPolicy] as ReadonlyArray<
      StructCodec<unknown>
    >,
    enums: { ...DROP_ENUM, kelp_dir, kelp_event_type, kelp_trace_point, ...NAT_ENUMS, ...METRICS_REASON_ENUM, ...LB_ENUMS },
  },
];

describe.each(OBJECTS)('$name.o', ({ name, structs, enums }) => {
  it.each(structs.map((c) => [c.cName, c] as const))('struct %s', (_cName, codec) => {
    const btf = btfStructLayout(object(name), codec.cName);
    expect(btf.kind).toBe('struct');
    expect(btf.size).toBe(codec.size);
    expect(btf.members.map((m) => ({ name: m.name, offset: m.offset, size: m.size }))).toEqual(
      codec.fields.map((f) => ({ name: f.name, offset: f.offset, size: f.size })),
    );
  });

  it.each(Object.entries(enums))('enum %s', (enumName, values) => {
    expect(values).toEqual(btfEnum(object(name), enumName));
  });
});
