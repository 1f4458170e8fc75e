// Opening and loading a BPF object file: load-time constants in .rodata, maps pinned by name
// under a pin root or at paths of the caller's choosing (re-used when already there), the
// verifier log on failure.
import path from 'node:path';
import type { MapDesc, ObjectHandle, ProgramDesc, RodataVar } from './addon';
import { invalidArgument } from './errors';
import { LibbpfLogger, withLibbpfLog } from './log';
import { BpfMap } from './map';
import { addon } from './native';
import { BpfProgram } from './program';

export type ConstantValue = number | bigint | boolean | Buffer;

export interface OpenOptions {
  /** bpffs directory: maps declared with LIBBPF_PIN_BY_NAME are pinned here, or re-used if pinned. */
  pinRoot?: string;
  /** `volatile const` globals (.rodata) by name; integers are written little-endian at their size. */
  constants?: Record<string, ConstantValue>;
  /**
   * Map name -> absolute bpffs path where that map is pinned (or re-used if pinned there),
   * instead of <pinRoot>/<name>; any map of the object, declared with pinning or not.
   */
  pinPaths?: Record<string, string>;
  /**
   * Map name -> max_entries in place of the size compiled in (maps sized per node). A pinned map
   * is re-used only at the same size (libbpf checks), so a change of size needs a new pin.
   */
  maxEntries?: Record<string, number>;
  /**
   * Map name -> value size in bytes in place of the one compiled in, for maps declared without a
   * BTF value type (kelp_lb4_maglev: the Maglev table's length is chosen at load).
   */
  valueSizes?: Record<string, number>;
  /** Where libbpf's log lines go (warnings at warn, the rest at debug). */
  logger?: LibbpfLogger;
}

export interface StructLayout {
  kind: 'struct' | 'union';
  size: number;
  /** Offsets and sizes in bytes; bit fields also carry bitOffset and bitSize. */
  members: Array<{ name: string; offset: number; size: number; bitOffset?: number; bitSize?: number }>;
}

/** Opens, sets constants, loads. Throws KelpBpfError; a rejected program's log is in verifierLog. */
export function loadObject(file: string, opts: OpenOptions = {}): BpfObject {
  const op = `load ${file}`;
  if (typeof file !== 'string' || file === '') throw invalidArgument('load', 'file must be a non-empty string');
  if (opts.pinRoot !== undefined && (typeof opts.pinRoot !== 'string' || opts.pinRoot === '')) {
    throw invalidArgument(op, 'pinRoot must be a non-empty string');
  }
  if (opts.constants !== undefined && (typeof opts.constants !== 'object' || opts.constants === null)) {
    throw invalidArgument(op, 'constants must be an object');
  }
  if (opts.pinPaths !== undefined) checkPinPaths(op, opts.pinPaths);
  if (opts.maxEntries !== undefined) checkMaxEntries(op, opts.maxEntries);
  if (opts.valueSizes !== undefined) checkSizes(op, 'valueSizes', opts.valueSizes);
  return withLibbpfLog(opts.logger, () => {
    const handle = new addon.ObjectHandle(file, opts.pinRoot);
    try {
      if (opts.constants && Object.keys(opts.constants).length > 0) setConstants(handle, file, opts.constants);
      if (opts.pinPaths) setPinPaths(handle, file, opts.pinPaths);
      if (opts.maxEntries) setMaxEntries(handle, file, opts.maxEntries);
      if (opts.valueSizes) setValueSizes(handle, file, opts.valueSizes);
      handle.load();
      return new BpfObject(handle, file);
    } catch (e) {
      handle.close();
      throw e;
    }
  });
}

/**
 * The maps an object file declares, as libbpf sees them once it is opened (type, sizes, flags,
 * BTF type names): read without loading anything into the kernel.
 */
export function objectMaps(file: string): MapDesc[] {
  if (typeof file !== 'string' || file === '') throw invalidArgument('open', 'file must be a non-empty string');
  const handle = new addon.ObjectHandle(file);
  try {
    return handle.maps();
  } finally {
    handle.close();
  }
}

/** What can be checked before the object is open: the shape of the option and of every path. */
function checkPinPaths(op: string, pinPaths: unknown): void {
  if (typeof pinPaths !== 'object' || pinPaths === null || Array.isArray(pinPaths)) throw invalidArgument(op, 'pinPaths must be an object');
  const seen = new Map<string, string>();
  for (const [name, p] of Object.entries(pinPaths as Record<string, unknown>)) {
    if (typeof p !== 'string' || !path.isAbsolute(p)) throw invalidArgument(op, `pinPaths.${name} must be an absolute path, got ${JSON.stringify(p)}`);
    const other = seen.get(path.resolve(p));
    if (other !== undefined) throw invalidArgument(op, `pinPaths.${other} and pinPaths.${name} are both ${p}`);
    seen.set(path.resolve(p), name);
  }
}

function setPinPaths(handle: ObjectHandle, file: string, pinPaths: Record<string, string>): void {
  const op = `set pin paths of ${file}`;
  const maps = handle.maps().filter((m) => !m.internal).map((m) => m.name);
  for (const [name, p] of Object.entries(pinPaths)) {
    if (!maps.includes(name)) throw invalidArgument(op, `"${name}" is not a map of the object (maps: ${maps.join(', ') || 'none'})`);
    handle.setPinPath(name, p);
  }
}

/** Sizes must be whole numbers from 1 to 2^31 - 1 (the kernel's limit for every map type kelp uses). */
function checkMaxEntries(op: string, maxEntries: unknown): void {
  checkSizes(op, 'maxEntries', maxEntries);
}

function checkSizes(op: string, option: string, sizes: unknown): void {
  if (typeof sizes !== 'object' || sizes === null || Array.isArray(sizes)) throw invalidArgument(op, `${option} must be an object`);
  for (const [name, n] of Object.entries(sizes as Record<string, unknown>)) {
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 0x7fffffff) {
      throw invalidArgument(op, `${option}.${name} must be an integer from 1 to 2147483647, got ${JSON.stringify(n)}`);
    }
  }
}

function setValueSizes(handle: ObjectHandle, file: string, valueSizes: Record<string, number>): void {
  const op = `set value size of ${file}`;
  const maps = handle.maps().filter((m) => !m.internal);
  for (const [name, n] of Object.entries(valueSizes)) {
    const m = maps.find((d) => d.name === name);
    if (!m) throw invalidArgument(op, `"${name}" is not a map of the object (maps: ${maps.map((d) => d.name).join(', ') || 'none'})`);
    if (m.btfValueType) throw invalidArgument(op, `${name} has a BTF value type (${m.btfValueType}): its value size is the type's`);
    handle.setValueSize(name, n);
  }
}

function setMaxEntries(handle: ObjectHandle, file: string, maxEntries: Record<string, number>): void {
  const op = `set max_entries of ${file}`;
  const maps = handle.maps().filter((m) => !m.internal).map((m) => m.name);
  for (const [name, n] of Object.entries(maxEntries)) {
    if (!maps.includes(name)) throw invalidArgument(op, `"${name}" is not a map of the object (maps: ${maps.join(', ') || 'none'})`);
    handle.setMaxEntries(name, n);
  }
}

function setConstants(handle: ObjectHandle, file: string, constants: Record<string, ConstantValue>): void {
  const op = `set constants of ${file}`;
  const rodata = handle.rodata();
  if (!rodata) throw invalidArgument(op, 'the object has no .rodata section');
  const byName = new Map<string, RodataVar>(rodata.vars.map((v) => [v.name, v]));
  const data = Buffer.from(rodata.data);
  for (const [name, value] of Object.entries(constants)) {
    const v = byName.get(name);
    if (!v) {
      const known = [...byName.keys()].join(', ') || 'none';
      throw invalidArgument(op, `"${name}" is not a .rodata constant (known: ${known})`);
    }
    encodeConstant(op, v, value).copy(data, v.offset);
  }
  handle.setRodata(data);
}

function encodeConstant(op: string, v: RodataVar, value: ConstantValue): Buffer {
  const bytes = v.size === 1 ? '1 byte' : `${v.size} bytes`;
  if (Buffer.isBuffer(value)) {
    if (value.length !== v.size) throw invalidArgument(op, `${v.name} is ${bytes}; a ${value.length}-byte Buffer was given`);
    return value;
  }
  let n: bigint;
  if (typeof value === 'boolean') n = value ? 1n : 0n;
  else if (typeof value === 'bigint') n = value;
  else if (typeof value === 'number' && Number.isSafeInteger(value)) n = BigInt(value);
  else throw invalidArgument(op, `${v.name} must be an integer, bigint, boolean or Buffer, got ${String(value)}`);
  if (v.size > 8) throw invalidArgument(op, `${v.name} is ${bytes}; give it as a Buffer`);
  const bits = BigInt(v.size * 8);
  if (n < -(1n << (bits - 1n)) || n >= 1n << bits) throw invalidArgument(op, `${v.name} is ${bytes}; ${n} does not fit`);
  const out = Buffer.alloc(v.size);
  let u = BigInt.asUintN(Number(bits), n);
  for (let i = 0; i < v.size; i++, u >>= 8n) out[i] = Number(u & 0xffn);
  return out;
}

/**
 * A loaded object. program()/map() hand out handles (one per name, re-created once closed) that
 * this object owns: close() closes them too.
 */
export class BpfObject {
  readonly file: string;
  private readonly handle: ObjectHandle;
  private readonly progDescs: ProgramDesc[];
  private readonly mapDescs: MapDesc[];
  private readonly progs = new Map<string, BpfProgram>();
  private readonly mapHandles = new Map<string, BpfMap>();
  private closed = false;

  constructor(handle: ObjectHandle, file: string) {
    this.handle = handle;
    this.file = file;
    this.progDescs = handle.programs();
    this.mapDescs = handle.maps();
  }

  /** Program names (the C function names). */
  programs(): string[] {
    return this.progDescs.map((p) => p.name);
  }

  /** Map names; internal maps by their section: ".rodata", ".data", ".bss". */
  maps(): string[] {
    return this.mapDescs.map((m) => m.name);
  }

  /** ELF section, program type and expected attach type of a program. */
  programInfo(name: string): ProgramDesc {
    const p = this.progDescs.find((d) => d.name === name);
    if (!p) throw invalidArgument(`program info ${name}`, `no program "${name}" in ${this.file}`);
    return { ...p };
  }

  /** Type, key/value sizes, pin path and BTF type names of a map as declared in the object. */
  mapInfo(name: string): MapDesc {
    const m = this.mapDescs.find((d) => d.name === name);
    if (!m) throw invalidArgument(`map info ${name}`, `no map "${name}" in ${this.file}`);
    return { ...m };
  }

  program(name: string): BpfProgram {
    const cached = this.progs.get(name);
    if (cached && cached.fd >= 0) return cached;
    const desc = this.programInfo(name);
    const prog = BpfProgram.fromFd(this.liveHandle().programFd(name), desc);
    this.progs.set(name, prog);
    return prog;
  }

  map(name: string): BpfMap {
    const cached = this.mapHandles.get(name);
    if (cached && cached.fd >= 0) return cached;
    this.mapInfo(name);
    const map = BpfMap.fromFd(this.liveHandle().mapFd(name));
    this.mapHandles.set(name, map);
    return map;
  }

  /** Layout of a struct (or union) in this object's BTF. */
  btfStructLayout(name: string): StructLayout {
    return btfStructLayout(this.file, name);
  }

  /** Enumerators of an enum in this object's BTF. */
  btfEnum(name: string): Record<string, number> {
    return btfEnum(this.file, name);
  }

  /** Closes the object and every handle it handed out; closing twice is harmless. Pinned maps stay. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.progs.values()) p.close();
    for (const m of this.mapHandles.values()) m.close();
    this.progs.clear();
    this.mapHandles.clear();
    this.handle.close();
  }

  private liveHandle(): ObjectHandle {
    if (this.closed) throw invalidArgument(`use ${this.file}`, 'the object is closed');
    return this.handle;
  }
}

/** Layout of a struct (or union) as the object file's BTF has it (libbpf's btf__parse_elf). */
export function btfStructLayout(objectFile: string, structName: string): StructLayout {
  return addon.btfStructLayout(objectFile, structName);
}

/**
 * Enumerator name -> value of enum `enumName` (BTF_KIND_ENUM or ENUM64) as the object file's BTF
 * has it: what clang saw in the C. ENOENT when absent (clang only emits types something uses).
 */
export function btfEnum(objectFile: string, enumName: string): Record<string, number> {
  return addon.btfEnum(objectFile, enumName);
}
