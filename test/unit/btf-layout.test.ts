// Every struct and enum that TypeScript mirrors from bpf/lib/*.h agrees with the BTF that clang
// wrote into build/bpf/lxc.o: sizes, field offsets, enumerator values.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { btfStructLayout } from '../../src/bpf';
import { DropReason } from '../../src/datapath/drop';
import { ALL_STRUCTS, MIRRORED_ENUMS } from '../../src/datapath/structs';

const OBJ = path.join(__dirname, '../../build/bpf/lxc.o');

interface BtfType {
  kind: string;
  name: string;
  values?: Array<{ name: string; val: number }>;
}

/** Enums of the object's BTF. The addon reads struct layouts; bpftool reads enums for us. */
function btfEnums(file: string): Map<string, Record<string, number>> {
  const dump = JSON.parse(execFileSync('bpftool', ['-j', 'btf', 'dump', 'file', file], { encoding: 'utf8' })) as {
    types: BtfType[];
  };
  const out = new Map<string, Record<string, number>>();
  for (const t of dump.types) {
    if (t.kind !== 'ENUM' || !t.values) continue;
    out.set(t.name, Object.fromEntries(t.values.map((v) => [v.name, v.val])));
  }
  return out;
}

describe('struct layouts match BTF', () => {
  it.each(ALL_STRUCTS.map((c) => [c.cName, c] as const))('struct %s', (_name, codec) => {
    const btf = btfStructLayout(OBJ, codec.cName);
    expect(btf.kind).toBe('struct');
    expect(btf.size).toBe(codec.size);
    expect(btf.members.map((m) => ({ name: m.name, offset: m.offset, size: m.size }))).toEqual(
      codec.fields.map((f) => ({ name: f.name, offset: f.offset, size: f.size })),
    );
  });
});

describe('enums match BTF', () => {
  const enums = btfEnums(OBJ);

  it('drop reasons: src/datapath/drop.ts is enum kelp_drop_reason', () => {
    const fromTs = Object.fromEntries(Object.entries(DropReason).map(([name, code]) => [`DROP_${name}`, code]));
    expect(fromTs).toEqual(enums.get('kelp_drop_reason'));
  });

  it.each(Object.entries(MIRRORED_ENUMS))('enum %s', (name, values) => {
    expect(values).toEqual(enums.get(name));
  });
});
