// BPF maps: keys and values are Buffers in the kernel's layout (codecs live with their structs in
// src/datapath/). Sizes are checked here, with exact messages, before the kernel sees them.
import type { MapHandle, MapInfo } from './addon';
import { invalidArgument } from './errors';
import { openPinned } from './fd';
import { addon } from './native';

/** Update flags (linux/bpf.h). */
export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;
export const BPF_F_LOCK = 4;

/** Map types (enum bpf_map_type) the agent and its tests meet. */
export const MapType = {
  HASH: 1,
  ARRAY: 2,
  PROG_ARRAY: 3,
  PERF_EVENT_ARRAY: 4,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  LPM_TRIE: 11,
  ARRAY_OF_MAPS: 12,
  HASH_OF_MAPS: 13,
  DEVMAP: 14,
  SOCKMAP: 15,
  CPUMAP: 16,
  DEVMAP_HASH: 25,
  RINGBUF: 27,
} as const;

const DEFAULT_BATCH = 256;

export interface BatchOptions {
  /** Entries per syscall (default 256); grown automatically for a crowded hash bucket. */
  batchSize?: number;
}

export class BpfMap {
  readonly id: number;
  readonly name: string;
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;
  readonly perCpu: boolean;
  /** Possible CPUs: the number of slots in a per-CPU value (1 for other maps). */
  readonly numCpus: number;
  /** Bytes of a value Buffer: valueSize, or round_up(valueSize, 8) * numCpus for per-CPU maps. */
  readonly valueLen: number;
  private readonly handle: MapHandle;

  /** Wraps an owned map fd (it is closed on failure too). */
  static fromFd(fd: number): BpfMap {
    return new BpfMap(new addon.MapHandle(fd));
  }

  private constructor(handle: MapHandle) {
    const info: MapInfo = handle.info();
    this.handle = handle;
    this.id = info.id;
    this.name = info.name;
    this.type = info.type;
    this.keySize = info.keySize;
    this.valueSize = info.valueSize;
    this.maxEntries = info.maxEntries;
    this.flags = info.flags;
    this.perCpu = info.perCpu;
    this.numCpus = info.numCpus;
    this.valueLen = info.valueLen;
  }

  /** -1 once closed. */
  get fd(): number {
    return this.handle.fd;
  }

  /** The value, or undefined when the key is absent. Per-CPU maps: valueLen bytes, slot per CPU. */
  lookup(key: Buffer): Buffer | undefined {
    this.checkKey('lookup', key);
    return this.handle.lookup(key);
  }

  /** Per-CPU maps: one valueSize-byte view per possible CPU, or undefined when the key is absent. */
  lookupPerCpu(key: Buffer): Buffer[] | undefined {
    if (!this.perCpu) throw invalidArgument(`lookup ${this.name}`, 'not a per-CPU map');
    const value = this.lookup(key);
    return value && this.splitPerCpu(value);
  }

  /** Splits a per-CPU value Buffer into one valueSize-byte view per CPU. */
  splitPerCpu(value: Buffer): Buffer[] {
    const slot = this.valueLen / this.numCpus;
    const out: Buffer[] = [];
    for (let cpu = 0; cpu < this.numCpus; cpu++) out.push(value.subarray(cpu * slot, cpu * slot + this.valueSize));
    return out;
  }

  /** flags: BPF_ANY (default), BPF_NOEXIST (EEXIST if present), BPF_EXIST (ENOENT if absent). */
  update(key: Buffer, value: Buffer, flags = BPF_ANY): void {
    this.checkKey('update', key);
    this.checkValue('update', value);
    this.checkFlags('update', flags);
    this.handle.update(key, value, flags);
  }

  /** false when the key was absent. */
  delete(key: Buffer): boolean {
    this.checkKey('delete', key);
    return this.handle.delete(key);
  }

  keys(): Buffer[] {
    return this.handle.keys();
  }

  /** Every entry, read in batches (one syscall per batch). Keys and values are views of one copy. */
  lookupBatch(opts: BatchOptions = {}): Array<[key: Buffer, value: Buffer]> {
    return this.readBatches('lookup batch', opts, false);
  }

  /**
   * Every entry as two flat copies, entry i at i × keySize and i × valueSize: no object per
   * entry, for scans of large arrays (16384 entries as pairs of views cost the agent ~14 MiB of
   * heap at start).
   */
  lookupBatchRaw(opts: BatchOptions = {}): { keys: Buffer; values: Buffer; count: number } {
    return this.readRaw('lookup batch', opts, false);
  }

  /** Reads and removes every entry in batches (hash maps). */
  lookupAndDeleteBatch(opts: BatchOptions = {}): Array<[key: Buffer, value: Buffer]> {
    return this.readBatches('lookup and delete batch', opts, true);
  }

  /** flags: BPF_ANY or BPF_F_LOCK; the kernel has no NOEXIST/EXIST for batches. */
  updateBatch(entries: ReadonlyArray<readonly [Buffer, Buffer]>, flags = BPF_ANY): void {
    const op = 'update batch';
    if (flags !== BPF_ANY && flags !== BPF_F_LOCK) {
      throw invalidArgument(`${op} ${this.name}`, `flags must be BPF_ANY or BPF_F_LOCK, got ${flags}`);
    }
    entries.forEach(([k, v], i) => {
      this.checkKey(op, k, i);
      this.checkValue(op, v, i);
    });
    if (entries.length === 0) return;
    const keys = Buffer.concat(entries.map((e) => e[0]));
    const values = Buffer.concat(entries.map((e) => e[1]));
    this.handle.updateBatch(keys, values, entries.length, flags);
  }

  /**
   * updateBatch of entries already packed back to back: `count` keys in `keys`, their values in
   * `values`. Large values are written from where they lie, not copied into one buffer first
   * (10,000 Maglev tables are 80 MiB).
   */
  updateBatchPacked(keys: Buffer, values: Buffer, count: number, flags = BPF_ANY): void {
    const op = 'update batch';
    if (flags !== BPF_ANY && flags !== BPF_F_LOCK) {
      throw invalidArgument(`${op} ${this.name}`, `flags must be BPF_ANY or BPF_F_LOCK, got ${flags}`);
    }
    this.checkPacked(op, keys, values, count);
    if (count > 0) this.handle.updateBatch(keys, values, count, flags);
  }

  /** `count` entries packed in `keys` and `values`, sized as this map's; else EINVAL naming the part. */
  private checkPacked(op: string, keys: Buffer, values: Buffer, count: number): void {
    if (!Number.isInteger(count) || count < 0) throw invalidArgument(`${op} ${this.name}`, `count must be a non-negative integer, got ${count}`);
    if (!Buffer.isBuffer(keys) || keys.length !== count * this.keySize) {
      throw invalidArgument(`${op} ${this.name}`, `keys must be a Buffer of ${count} × ${this.keySize} bytes`);
    }
    if (!Buffer.isBuffer(values) || values.length !== count * this.valueLen) {
      throw invalidArgument(`${op} ${this.name}`, `values must be a Buffer of ${count} × ${this.valueLen} bytes`);
    }
  }

  /** Deletes the keys present and returns how many there were; absent keys are skipped. */
  deleteBatch(keys: readonly Buffer[]): number {
    keys.forEach((k, i) => this.checkKey('delete batch', k, i));
    if (keys.length === 0) return 0;
    return this.handle.deleteBatch(Buffer.concat(keys), keys.length);
  }

  /**
   * updateBatchPacked of several batches at once (BPF_ANY), run side by side on a few threads of
   * the addon when they are large (the first write of 10,000 Services is ~60,000 entries over
   * three maps), while the caller goes on (the service writer encodes its frontends meanwhile).
   * The entries are written once wait() has returned; a batch that failed is written again on its
   * own, so wait() throws that map's error as updateBatchPacked throws it, the other batches
   * written. The caller must call wait() whatever happens in between, and must not change the
   * buffers before.
   */
  static updateBatchesStart(batches: ReadonlyArray<{ map: BpfMap; keys: Buffer; values: Buffer; count: number }>): { wait(): void } {
    const todo = BpfMap.checkBatches(batches);
    if (todo.length === 0) return { wait: () => {} };
    const handle = addon.updateBatchesStart(...BpfMap.batchArgs(todo));
    // Held until waited for: the threads read these buffers.
    let held: typeof todo | undefined = todo;
    return {
      wait: () => {
        if (!held) return;
        const errs = addon.updateBatchesWait(handle);
        const done = held;
        held = undefined;
        BpfMap.redoFailed(done, errs);
      },
    };
  }

  private static checkBatches<B extends { map: BpfMap; keys: Buffer; values: Buffer; count: number }>(batches: readonly B[]): B[] {
    for (const b of batches) b.map.checkPacked('update batch', b.keys, b.values, b.count);
    return batches.filter((b) => b.count > 0);
  }

  private static batchArgs(todo: ReadonlyArray<{ map: BpfMap; keys: Buffer; values: Buffer; count: number }>): [Int32Array, Buffer[], Buffer[], Uint32Array, Uint32Array, Uint32Array] {
    return [
      Int32Array.from(todo, (b) => b.map.fd),
      todo.map((b) => b.keys),
      todo.map((b) => b.values),
      Uint32Array.from(todo, (b) => b.count),
      Uint32Array.from(todo, (b) => b.map.keySize),
      Uint32Array.from(todo, (b) => b.map.valueLen),
    ];
  }

  /** A batch that failed is written again on its own, so the error thrown is that map's. */
  private static redoFailed(todo: ReadonlyArray<{ map: BpfMap; keys: Buffer; values: Buffer; count: number }>, errs: Int32Array): void {
    todo.forEach((b, i) => {
      if (errs[i] !== 0) b.map.updateBatchPacked(b.keys, b.values, b.count);
    });
  }

  /** deleteBatch of `count` keys back to back in `keys`. */
  deleteBatchPacked(keys: Buffer, count: number): number {
    if (!Number.isInteger(count) || count < 0 || !Buffer.isBuffer(keys) || keys.length !== count * this.keySize) {
      throw invalidArgument(`delete batch ${this.name}`, `keys must be a Buffer of ${count} × ${this.keySize} bytes`);
    }
    if (count === 0) return 0;
    return this.handle.deleteBatch(keys, count);
  }

  /** Empties the map: deletes every key, or zeroes every slot of an array. */
  clear(): void {
    if (this.type === MapType.ARRAY || this.type === MapType.PERCPU_ARRAY) {
      const zero = Buffer.alloc(this.valueLen);
      const key = Buffer.alloc(4);
      for (let i = 0; i < this.maxEntries; i++) {
        key.writeUInt32LE(i);
        this.handle.update(key, zero, BPF_ANY);
      }
      return;
    }
    for (const key of this.handle.keys()) this.handle.delete(key);
  }

  /** Pins the map at path on a bpffs. */
  pin(path: string): void {
    addon.objPin(this.fd, path);
  }

  /** Closing twice is harmless. The map lives on while pinned or used by a loaded program. */
  close(): void {
    this.handle.close();
  }

  private readRaw(op: string, opts: BatchOptions, andDelete: boolean): { keys: Buffer; values: Buffer; count: number } {
    const batchSize = opts.batchSize ?? DEFAULT_BATCH;
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 0xffff_ffff) {
      throw invalidArgument(`${op} ${this.name}`, `batchSize must be a positive integer, got ${batchSize}`);
    }
    return this.handle.lookupBatch(batchSize, andDelete);
  }

  private readBatches(op: string, opts: BatchOptions, andDelete: boolean): Array<[Buffer, Buffer]> {
    const { keys, values, count } = this.readRaw(op, opts, andDelete);
    const out: Array<[Buffer, Buffer]> = [];
    for (let i = 0; i < count; i++) {
      out.push([
        keys.subarray(i * this.keySize, (i + 1) * this.keySize),
        values.subarray(i * this.valueLen, (i + 1) * this.valueLen),
      ]);
    }
    return out;
  }

  private checkKey(op: string, key: Buffer, index?: number): void {
    const what = index === undefined ? 'key' : `key ${index}`;
    if (!Buffer.isBuffer(key)) throw invalidArgument(`${op} ${this.name}`, `${what} must be a Buffer`);
    if (key.length !== this.keySize) {
      throw invalidArgument(`${op} ${this.name}`, `${what} is ${key.length} bytes, expected ${this.keySize}`);
    }
  }

  private checkValue(op: string, value: Buffer, index?: number): void {
    const what = index === undefined ? 'value' : `value ${index}`;
    if (!Buffer.isBuffer(value)) throw invalidArgument(`${op} ${this.name}`, `${what} must be a Buffer`);
    if (value.length !== this.valueLen) {
      const why = this.perCpu
        ? ` (per-CPU: round_up(${this.valueSize}, 8) * ${this.numCpus} CPUs)`
        : '';
      throw invalidArgument(
        `${op} ${this.name}`,
        `${what} is ${value.length} bytes, expected ${this.valueLen}${why}`,
      );
    }
  }

  private checkFlags(op: string, flags: number): void {
    if (!Number.isInteger(flags) || flags < 0 || flags > 0xffff_ffff) {
      throw invalidArgument(`${op} ${this.name}`, `flags must be a non-negative integer, got ${flags}`);
    }
  }
}

/** Opens a map pinned on a bpffs. */
export function openPinnedMap(path: string): BpfMap {
  return BpfMap.fromFd(openPinned(path, 'map', `open pinned map ${path}`));
}
