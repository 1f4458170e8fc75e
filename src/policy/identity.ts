// Stable numbers for the compiler's keys: peer identities and policy ids.
//
// A compile hands the allocator every key in use (`assign`); a key keeps its number while it stays
// in use from one compile to the next, a new key gets the lowest free number, a key no longer in
// use frees its number. The datapath's entries are keyed by these numbers, so stability is what
// lets a recompile change only the entries that really changed, and keeps a conntrack entry's
// cookie naming the same policy. `snapshot`/`restore` carry the assignment across agent restarts.
//
// The allocator knows nothing of what a key means; ./compile.ts builds them (identityKey…).
import { FIRST_ALLOCATED_IDENTITY, POLICY_ID_NONE } from '../datapath/policy-types';

export class StableNumbers {
  private byKey = new Map<string, number>();

  constructor(
    private readonly first: number,
    private readonly limit: number,
    private readonly what: string,
  ) {}

  /** Numbers for exactly `keys`: kept where a key had one, the lowest free ones for new keys. */
  assign(keys: Iterable<string>): Map<string, number> {
    const wanted = new Set(keys);
    const next = new Map<string, number>();
    const used = new Set<number>();
    for (const [k, n] of this.byKey) {
      if (wanted.has(k)) {
        next.set(k, n);
        used.add(n);
      }
    }
    let candidate = this.first;
    for (const k of [...wanted].sort()) {
      if (next.has(k)) continue;
      while (used.has(candidate)) candidate++;
      if (candidate > this.limit) throw new Error(`${this.what}: all ${this.limit - this.first + 1} numbers are in use`);
      next.set(k, candidate);
      used.add(candidate);
    }
    this.byKey = next;
    return next;
  }

  get(key: string): number | undefined {
    return this.byKey.get(key);
  }

  entries(): Array<[string, number]> {
    return [...this.byKey].sort((a, b) => a[1] - b[1]);
  }

  load(entries: ReadonlyArray<[string, number]>): void {
    const byKey = new Map<string, number>();
    const seen = new Set<number>();
    for (const [k, n] of entries) {
      if (typeof k !== 'string' || !Number.isInteger(n) || n < this.first || n > this.limit || seen.has(n) || byKey.has(k)) {
        throw new Error(`${this.what}: bad snapshot entry ${JSON.stringify([k, n])}`);
      }
      byKey.set(k, n);
      seen.add(n);
    }
    this.byKey = byKey;
  }
}

/** Identities (from FIRST_ALLOCATED_IDENTITY, 32 bits) and policy ids (from 1, 32 bits). */
export class IdentityAllocator {
  readonly identities = new StableNumbers(FIRST_ALLOCATED_IDENTITY, 0xffffffff, 'policy identities');
  readonly policyIds = new StableNumbers(POLICY_ID_NONE + 1, 0xffffffff, 'policy ids');

  /** JSON the agent persists; `restore` takes it back. */
  snapshot(): string {
    return JSON.stringify({ version: 1, identities: this.identities.entries(), policyIds: this.policyIds.entries() });
  }

  restore(json: string): void {
    const s = JSON.parse(json) as { version?: unknown; identities?: Array<[string, number]>; policyIds?: Array<[string, number]> };
    if (s.version !== 1 || !Array.isArray(s.identities) || !Array.isArray(s.policyIds)) throw new Error('policy identities: not a snapshot of version 1');
    this.identities.load(s.identities);
    this.policyIds.load(s.policyIds);
  }
}
