// Maglev table population in the addon (native/maglev.cc): many sets per call, the names hashed
// and the claim loop run in C. src/service/maglev.ts decides turn order and checks names; this
// checks the shapes the native side trusts.
import { invalidArgument } from './errors';
import { addon } from './native';

/** The largest table the native side fills (src/service/maglev.ts MAX_MAGLEV_TABLE_SIZE). */
const MAX_M = 131071;

/**
 * Fills every set's table with its Maglev table over `m` slots, in one native call, the sets laid
 * out flat: `names` holds every set's names in turn order, set after set; counts[i] is set i's
 * number of names; inputIndex gives each name's index in its set as the caller listed it; outs[i]
 * (m slots) receives set i's table. No object per set: a first run fills 10,000.
 */
export function maglevFillFlat(names: readonly string[], counts: Uint32Array, inputIndex: Uint16Array, outs: readonly Uint16Array[], m: number): void {
  const bytes = checkFlat(names, counts, inputIndex, outs, m);
  if (bytes) addon.maglevFill(bytes, counts, inputIndex, m, outs as Uint16Array[]);
}

/** A fill started by maglevFillFlatStart: wait() returns once its tables are written (and again at once). */
export interface MaglevFilling {
  wait(): void;
}

const FILLED: MaglevFilling = { wait: () => {} };

/**
 * maglevFillFlat with a large batch filled by threads of the addon while the caller goes on: the
 * tables must not be read before wait(). The caller calls wait() whatever happens in between
 * (until then the handle keeps the arguments the threads read from alive).
 */
export function maglevFillFlatStart(names: readonly string[], counts: Uint32Array, inputIndex: Uint16Array, outs: readonly Uint16Array[], m: number): MaglevFilling {
  const bytes = checkFlat(names, counts, inputIndex, outs, m);
  if (!bytes) return FILLED;
  // Each table as (buffer, byte offset): the compiler's lie in a few shared buffers.
  const buffers: ArrayBufferLike[] = [];
  const where = new Uint32Array(2 * outs.length);
  const index = new Map<ArrayBufferLike, number>();
  let last: ArrayBufferLike | undefined;
  let at = 0;
  for (let i = 0; i < outs.length; i++) {
    const buf = outs[i].buffer;
    if (buf !== last) {
      last = buf;
      const known = index.get(buf);
      if (known === undefined) {
        at = buffers.length;
        buffers.push(buf);
        index.set(buf, at);
      } else at = known;
    }
    where[2 * i] = at;
    where[2 * i + 1] = outs[i].byteOffset;
  }
  const handle = addon.maglevFillStart(bytes, counts, inputIndex, m, buffers, where);
  let held: unknown[] | undefined = [bytes, counts, inputIndex, buffers, where];
  return {
    wait: () => {
      if (!held) return;
      addon.maglevFillWait(handle);
      held = undefined;
    },
  };
}

/** maglevFillFlat's checks; the names as the addon reads them, or undefined when there is nothing to fill. */
function checkFlat(names: readonly string[], counts: Uint32Array, inputIndex: Uint16Array, outs: readonly Uint16Array[], m: number): Buffer | undefined {
  const op = 'maglev fill';
  if (!Number.isInteger(m) || m < 2 || m > MAX_M) throw invalidArgument(op, `m must be an integer between 2 and ${MAX_M}, got ${m}`);
  if (counts.length !== outs.length) throw invalidArgument(op, `${counts.length} counts but ${outs.length} tables`);
  if (counts.length === 0) return undefined;
  let total = 0;
  for (let i = 0; i < counts.length; i++) {
    const n = counts[i];
    if (n < 1 || n > m || n > 0xffff) throw invalidArgument(op, `set ${i} has ${n} backends: want 1 to ${Math.min(m, 0xffff)}`);
    if (outs[i].length !== m) throw invalidArgument(op, `set ${i}'s table has ${outs[i].length} slots, want ${m}`);
    for (let k = 0; k < n; k++) {
      const idx = inputIndex[total + k];
      if (idx >= n) throw invalidArgument(op, `input index ${idx} is outside a set of ${n}`);
    }
    total += n;
  }
  if (names.length !== total || inputIndex.length !== total) throw invalidArgument(op, `the counts add up to ${total}, but ${names.length} names and ${inputIndex.length} input indices`);
  for (let i = 0; i < total; i++) if (names[i].includes('\0')) throw invalidArgument(op, `backend name ${JSON.stringify(names[i])} contains NUL`);
  return Buffer.from(names.join('\0') + '\0', 'utf8');
}


/**
 * Tables laid side by side in `slots`: table i is `lengths[i]` slots from `starts[i]`. The first
 * table holding a slot of `counts[i]` or more (a backend its set does not have), or -1, in one
 * call for a first run's thousands of tables.
 */
export function maglevFirstBadTable(slots: Uint16Array, starts: Uint32Array, lengths: Uint32Array, counts: Uint32Array): number {
  const op = 'maglev check';
  if (lengths.length !== starts.length || counts.length !== starts.length) throw invalidArgument(op, `${starts.length} starts, ${lengths.length} lengths and ${counts.length} counts`);
  for (let i = 0; i < starts.length; i++) {
    if (starts[i] + lengths[i] > slots.length) throw invalidArgument(op, `table ${i} (${lengths[i]} slots from ${starts[i]}) lies outside ${slots.length} slots`);
  }
  return starts.length === 0 ? -1 : addon.maglevFirstBadTable(slots, starts, lengths, counts);
}
