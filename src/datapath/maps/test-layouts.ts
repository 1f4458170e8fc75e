// Layout 2 of kelp_ct4 and kelp_snat4: built only into the objects of build/bpf/layout-v2/
// (`-DKELP_TEST_LAYOUT_V2`, bpf/lib/conntrack.h and nat.h), an agent one layout ahead that
// test/e2e/layout-upgrade.test.ts puts in place of the current one under traffic. The registry
// knows it so that both agents run the real migration path. Each struct gains a leading 8-byte
// field that shifts every other one: a migration that copied bytes instead of converting
// entries would misplace them all.
import { checkLength, StructCodec } from '../structs';
import { ct4Entry, Ct4Entry, nat4Entry, Nat4Entry } from '../nat';

const LEADING = 'layout_v2';
const LEADING_SIZE = 8;

/** `codec`'s struct with a zeroed u64 in front of its first field, decoding to the same value. */
function withLeadingField<T>(codec: StructCodec<T>): StructCodec<T> {
  const size = codec.size + LEADING_SIZE;
  return {
    cName: codec.cName,
    size,
    fields: [{ name: LEADING, offset: 0, size: LEADING_SIZE }, ...codec.fields.map((f) => ({ ...f, offset: f.offset + LEADING_SIZE }))],
    encode(v) {
      return Buffer.concat([Buffer.alloc(LEADING_SIZE), codec.encode(v)]);
    },
    decode(b) {
      checkLength(codec.cName, b, size);
      return codec.decode(b.subarray(LEADING_SIZE, size));
    },
  };
}

export const ct4EntryV2: StructCodec<Ct4Entry> = withLeadingField(ct4Entry);
export const nat4EntryV2: StructCodec<Nat4Entry> = withLeadingField(nat4Entry);
