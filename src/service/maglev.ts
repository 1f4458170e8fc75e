// Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
// Balancer", NSDI 2016, section 3.4): each backend walks its own permutation of the M table slots,
// (offset + j × skip) mod M with offset and skip from two hashes of its name, and the backends take
// turns claiming their next free slot until every slot has an owner. M prime makes every
// permutation visit every slot. Each backend owns ⌊M/N⌋ or ⌈M/N⌉ slots. Adding or removing one of
// N backends moves that backend's 1/N of the slots plus a few others whose walks cross it; the
// extra share shrinks as M/N grows (the paper's reason for M ≫ N, at least 100 N).
// Like Cilium's (pkg/maglev), the default M is 16381 and the table is rebuilt whole on any change;
// backend weights are not supported yet.
import { createHash } from 'node:crypto';
import { maglevFillFlat, maglevFillFlatStart, MaglevFilling } from '../bpf/maglev';

/** Cilium's default table size: fine for up to ~160 backends per service at the 100 × N rule. */
export const DEFAULT_MAGLEV_TABLE_SIZE = 16381;
/** Cilium's largest supported size; the table is one u32 per slot per service in the kernel. */
export const MAX_MAGLEV_TABLE_SIZE = 131071;
/** The paper's rule of thumb: with fewer slots per backend, one slot is over 1 % of a share and changes move more flows. */
export const MAGLEV_SLOTS_PER_BACKEND = 100;

export interface MaglevOptions {
  /** A prime number of slots, at most MAX_MAGLEV_TABLE_SIZE; DEFAULT_MAGLEV_TABLE_SIZE when absent. */
  tableSize?: number;
}

function isPrime(n: number): boolean {
  if (n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

/** Checks a table size, throwing an Error whose message names the valid choices. */
export function checkMaglevTableSize(m: number): number {
  if (!Number.isInteger(m) || m < 2 || m > MAX_MAGLEV_TABLE_SIZE) {
    throw new RangeError(`maglev table size ${m} is invalid: want a prime between 2 and ${MAX_MAGLEV_TABLE_SIZE} (default ${DEFAULT_MAGLEV_TABLE_SIZE})`);
  }
  if (!isPrime(m)) throw new RangeError(`maglev table size ${m} is not prime: every backend's permutation must visit every slot (e.g. ${DEFAULT_MAGLEV_TABLE_SIZE})`);
  return m;
}

/**
 * Table sizes a set may get: the largest prime below each power of two from 2^8, so a table fills
 * its 256-slot chunks of kelp_lb4_maglev (bpf/lib/lb.h) with at most a few slots to spare.
 */
export const MAGLEV_SIZE_LADDER: readonly number[] = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071];

/**
 * The table size of a set of `backends` backends under the cap `cap` (--maglev-table-size): the
 * smallest size of the ladder with at least 100 slots per backend (the paper's M ≥ 100 N), never
 * above the cap. A set's table costs what its backends need, not what the largest set would:
 * 10,000 two-backend Services are 10,000 tables of 251 slots (one chunk each), not of the cap.
 * The size depends only on the count and the cap, so every node computes the same table for the
 * same backends. Within one size, adding or removing one of N backends moves ~1/N of new flows;
 * a change that crosses a size (N past 2, 5, 10, 20, 40… at the default cap) rebuilds the table
 * at the new size and reshuffles new flows once (established flows keep their backend: the
 * service conntrack). 0 for a set that needs no table (fewer than two backends).
 */
export function maglevTableSizeFor(backends: number, cap: number): number {
  if (backends < 2) return 0;
  const want = MAGLEV_SLOTS_PER_BACKEND * backends;
  for (const m of MAGLEV_SIZE_LADDER) {
    if (m >= cap) break;
    if (m >= want) return m;
  }
  return cap;
}

/**
 * Advice, not an error: a table with fewer than 100 slots per backend still works, less finely.
 * Undefined when the size is fine.
 */
export function maglevTableSizeAdvice(m: number, backends: number): string | undefined {
  if (m >= MAGLEV_SLOTS_PER_BACKEND * backends) return undefined;
  return `maglev table size ${m} is below ${MAGLEV_SLOTS_PER_BACKEND} slots per backend for ${backends} backends (want at least ${MAGLEV_SLOTS_PER_BACKEND * backends}): shares are coarser and backend changes move more flows`;
}

/**
 * The permutation of backend `name` in a table of `m` slots: slot j of its walk is
 * (offset + j × skip) mod m. The two hashes are the two halves of SHA-256 of the name
 * (the paper's h1 and h2 only need to be independent and well mixed).
 */
export function maglevPermutation(name: string, m: number): { offset: number; skip: number } {
  const d = createHash('sha256').update(name).digest();
  const h1 = d.readBigUInt64BE(0);
  const h2 = d.readBigUInt64BE(8);
  return { offset: Number(h1 % BigInt(m)), skip: Number(h2 % BigInt(m - 1)) + 1 };
}

/**
 * The lookup table: slot → index into `names`. Backends are identified by name (e.g.
 * "10.244.1.7:8080"), so the same set of names gives the same owner in every slot whatever the
 * order they are listed in.
 */
export function maglevTable(names: readonly string[], options: MaglevOptions = {}): Uint32Array {
  const { owner, order } = maglevOwners(names, options);
  // Back from turn order to input indices.
  for (let c = 0; c < owner.length; c++) owner[c] = order[owner[c]];
  return owner;
}

/**
 * maglevTable as the datapath stores it (u16 slots), written in one pass: no set has more than
 * 65,535 backends.
 */
export function maglevTable16(names: readonly string[], options: MaglevOptions = {}): Uint16Array {
  if (names.length > 0xffff) throw new RangeError(`maglev table of u16 slots holds at most 65535 backends, not ${names.length}`);
  const { owner, order } = maglevOwners(names, options);
  const out = new Uint16Array(owner.length);
  for (let c = 0; c < owner.length; c++) out[c] = order[owner[c]];
  return out;
}

/**
 * Many tables at once, as maglevTable16 computes each (u16 slots, slot → index into its names),
 * hashed and populated in the addon (native/maglev.cc) in one call: ~20× faster than the
 * TypeScript loop. The tables are views of shared buffers.
 */
export function maglevTables16(sets: ReadonlyArray<readonly string[]>, options: MaglevOptions = {}): Uint16Array[] {
  const m = checkMaglevTableSize(options.tableSize ?? DEFAULT_MAGLEV_TABLE_SIZE);
  const all = new Uint16Array(m * sets.length);
  const fill = sets.map((names, i) => ({ names, out: all.subarray(i * m, (i + 1) * m) }));
  maglevFillTables(fill, { tableSize: m });
  return fill.map((f) => f.out);
}

/** maglevTables16 into tables the caller provides (`out`: M slots each). */
export function maglevFillTables(sets: ReadonlyArray<{ names: readonly string[]; out: Uint16Array }>, options: MaglevOptions = {}): void {
  maglevFillInto(
    sets.map((s) => s.names),
    sets.map((s) => s.out),
    options,
  );
}

/** maglevFillTables with the sets as two lists: set i's names and its table (M slots). */
export function maglevFillInto(sets: ReadonlyArray<readonly string[]>, outs: readonly Uint16Array[], options: MaglevOptions = {}): void {
  const { inTurn, counts, inputIndex, m } = flatInTurn(sets, outs, options);
  maglevFillFlat(inTurn, counts, inputIndex, outs, m);
}

/**
 * maglevFillInto with a large batch filled beside the caller (native threads): the tables are
 * written once the returned wait() has returned, which the caller must call whatever happens.
 */
export function maglevFillIntoStart(sets: ReadonlyArray<readonly string[]>, outs: readonly Uint16Array[], options: MaglevOptions = {}): MaglevFilling {
  const { inTurn, counts, inputIndex, m } = flatInTurn(sets, outs, options);
  return maglevFillFlatStart(inTurn, counts, inputIndex, outs, m);
}

/** The sets laid out flat for the addon, with no object or array per set: a first run fills 10,000. */
function flatInTurn(sets: ReadonlyArray<readonly string[]>, outs: readonly Uint16Array[], options: MaglevOptions): { inTurn: string[]; counts: Uint32Array; inputIndex: Uint16Array; m: number } {
  const m = checkMaglevTableSize(options.tableSize ?? DEFAULT_MAGLEV_TABLE_SIZE);
  if (sets.length !== outs.length) throw new RangeError(`${sets.length} sets of names but ${outs.length} tables`);
  const counts = new Uint32Array(sets.length);
  let total = 0;
  for (let i = 0; i < sets.length; i++) {
    const n = sets[i].length;
    if (n > 0xffff) throw new RangeError(`maglev table of u16 slots holds at most 65535 backends, not ${n}`);
    counts[i] = n;
    total += n;
  }
  const inTurn = new Array<string>(total);
  const inputIndex = new Uint16Array(total);
  let at = 0;
  for (let i = 0; i < sets.length; i++) {
    const names = sets[i];
    turnOrderInto(names, m, inputIndex, at);
    for (let k = 0; k < names.length; k++) inTurn[at + k] = names[inputIndex[at + k]];
    at += names.length;
  }
  return { inTurn, counts, inputIndex, m };
}

/** turnOrder written into `into[at…]` (u16: sets have at most 65,535 names), with no array of its own. */
function turnOrderInto(names: readonly string[], m: number, into: Uint16Array, at: number): void {
  const n = names.length;
  if (n === 0) throw new RangeError('maglev table needs at least one backend');
  if (n > m) throw new RangeError(`maglev table size ${m} is smaller than the ${n} backends: some would own no slot`);
  if (n > 32) {
    into.set(turnOrder(names, m), at);
    return;
  }
  // Turns go in name order (an insertion sort of a few names).
  for (let i = 0; i < n; i++) {
    const name = names[i];
    let j = at + i - 1;
    for (; j >= at && names[into[j]] > name; j--) into[j + 1] = into[j];
    into[j + 1] = i;
  }
  for (let k = at + 1; k < at + n; k++) {
    if (names[into[k]] === names[into[k - 1]]) throw new RangeError(`maglev backend name ${JSON.stringify(names[into[k]])} is listed twice`);
  }
}

/** Input indices in turn order; throws when the set cannot have a table. */
function turnOrder(names: readonly string[], m: number): Uint32Array {
  const n = names.length;
  if (n === 0) throw new RangeError('maglev table needs at least one backend');
  if (n > m) throw new RangeError(`maglev table size ${m} is smaller than the ${n} backends: some would own no slot`);
  // Turns go in name order, not input order: who claims a contested slot must not depend on listing.
  // An insertion sort for the usual few names: Array.prototype.sort allocates its work space on
  // every call, 10,000 calls on a cold start.
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  if (n <= 32) {
    for (let i = 1; i < n; i++) {
      const x = order[i];
      const name = names[x];
      let j = i - 1;
      for (; j >= 0 && names[order[j]] > name; j--) order[j + 1] = order[j];
      order[j + 1] = x;
    }
  } else {
    order.sort((a, b) => (names[a] < names[b] ? -1 : names[a] > names[b] ? 1 : 0));
  }
  for (let k = 1; k < n; k++) {
    if (names[order[k]] === names[order[k - 1]]) throw new RangeError(`maglev backend name ${JSON.stringify(names[order[k]])} is listed twice`);
  }
  return order;
}

/** Slot → turn, and turn → input index. */
function maglevOwners(names: readonly string[], options: MaglevOptions): { owner: Uint32Array; order: Uint32Array } {
  const m = checkMaglevTableSize(options.tableSize ?? DEFAULT_MAGLEV_TABLE_SIZE);
  const order = turnOrder(names, m);
  const owner = maglevPopulate(
    Array.from(order, (input) => maglevPermutation(names[input], m)),
    m,
  );
  return { owner, order };
}

/**
 * The paper's population loop over given permutations (exported for tests of the paper's own
 * example): slot → index into `perms`. Each backend in turn claims the next slot of its
 * permutation that is still free, so backends own ⌊M/N⌋ or ⌈M/N⌉ slots each. Linear in M for
 * M ≫ N: a backend skips over taken slots, ~M log M probes in all.
 */
export function maglevPopulate(perms: ReadonlyArray<{ offset: number; skip: number }>, m: number): Uint32Array {
  const n = perms.length;
  const pos = Int32Array.from(perms, (p) => p.offset);
  const skip = Int32Array.from(perms, (p) => p.skip);
  // Int32 slots, -1 free: a Uint32Array's 0xffffffff is read as a double (~15 % slower here).
  const EMPTY = -1;
  const table = new Int32Array(m).fill(EMPTY);
  let filled = 0;
  for (;;) {
    for (let k = 0; k < n; k++) {
      // pos[k] is the next unvisited slot of backend k's permutation.
      let c = pos[k];
      while (table[c] !== EMPTY) {
        c += skip[k];
        if (c >= m) c -= m;
      }
      table[c] = k;
      c += skip[k];
      pos[k] = c >= m ? c - m : c;
      if (++filled === m) return new Uint32Array(table.buffer);
    }
  }
}
