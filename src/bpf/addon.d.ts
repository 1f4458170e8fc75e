// The raw ABI of build/Release/kelp.node. Only src/bpf/ uses it; everything else imports the
// facade (src/bpf/index.ts). Arguments are trusted: the facade validates them first.

/** Owns a file descriptor (program, link, namespace); closed by close() or, late, by GC. */
export interface FdHandle {
  readonly fd: number; // -1 once closed
  close(): void;
}

export interface RodataVar {
  name: string;
  offset: number;
  size: number;
}

export interface ProgramDesc {
  name: string;
  section: string;
  type: number;
  attachType: number;
}

export interface MapDesc {
  name: string; // internal maps by section: ".rodata", ".bss", ".data"
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  internal: boolean;
  pinPath?: string;
  btfKeyType: string; // '' without BTF
  btfValueType: string;
}

export interface ObjectHandle {
  rodata(): { data: Buffer; vars: RodataVar[] } | undefined;
  setRodata(data: Buffer): void;
  /** Before load(): where that map is pinned (or re-used if pinned there). */
  setPinPath(map: string, path: string): void;
  /** Before load(): the map's max_entries in place of the compiled one. */
  setMaxEntries(map: string, n: number): void;
  setValueSize(map: string, n: number): void;
  load(): void;
  programs(): ProgramDesc[];
  maps(): MapDesc[];
  /** A new fd the caller owns. */
  programFd(name: string): number;
  mapFd(name: string): number;
  close(): void;
}

export interface MapInfo {
  id: number;
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  perCpu: boolean;
  numCpus: number;
  /** Bytes of a value buffer: valueSize, or round_up(valueSize, 8) * numCpus for per-CPU maps. */
  valueLen: number;
}

export interface MapHandle {
  readonly fd: number;
  info(): MapInfo;
  lookup(key: Buffer): Buffer | undefined;
  update(key: Buffer, value: Buffer, flags: number): void;
  delete(key: Buffer): boolean;
  keys(): Buffer[];
  lookupBatch(batchSize: number, andDelete: boolean): { keys: Buffer; values: Buffer; count: number };
  updateBatch(keys: Buffer, values: Buffer, count: number, flags: number): void;
  deleteBatch(keys: Buffer, count: number): number;
  close(): void;
}

export interface ProgInfo {
  id: number;
  name: string;
  type: number;
  tag: string;
}

export interface LinkInfo {
  id: number;
  type: number;
  progId: number;
  ifindex?: number;
  /** tcx and cgroup links. */
  attachType?: number;
  cgroupId?: number;
}

export interface XdpQuery {
  progId: number;
  drvProgId: number;
  skbProgId: number;
  hwProgId: number;
  mode: number;
}

export interface TestRunResult {
  retval: number;
  duration: number;
  data: Buffer;
  ctx?: Buffer;
}

export interface ErrorFields {
  errno: number;
  code: string;
  operation: string;
  verifierLog?: string;
}

export interface RtnlSocketHandle {
  /** One complete message, header included; the kernel has handled it when this returns. */
  send(message: Buffer, operation: string): void;
  close(): void;
}

export interface KelpAddon {
  setErrorClass(cls: new (message: string, fields: ErrorFields) => Error): void;
  drainLog(): Array<[level: number, text: string]>;

  FdHandle: new (fd: number) => FdHandle;
  ObjectHandle: new (file: string, pinRoot?: string) => ObjectHandle;
  MapHandle: new (fd: number) => MapHandle;
  RingBufHandle: new (mapFd: number, cb: (record: Buffer) => void) => { close(): void; failed(): number };

  btfStructLayout(
    file: string,
    name: string,
  ): {
    kind: 'struct' | 'union';
    size: number;
    members: Array<{ name: string; offset: number; size: number; bitOffset?: number; bitSize?: number }>;
  };
  /** Enumerator name -> value of a BTF_KIND_ENUM/ENUM64. */
  btfEnum(file: string, name: string): Record<string, number>;
  /** bpf_link_update: swaps a link's program in place; oldProgFd -1 for no expectation. */
  linkUpdate(linkFd: number, progFd: number, oldProgFd: number, operation: string): void;
  numPossibleCpus(): number;
  /**
   * Puts counts[i] packed entries into map fds[i] for each i, on threads: updateBatchesWait(handle)
   * joins them (doing what they have not reached) and returns per item 0 or the first -errno.
   */
  updateBatchesStart(fds: Int32Array, keys: Buffer[], values: Buffer[], counts: Uint32Array, keySizes: Uint32Array, valueSizes: Uint32Array): object;
  updateBatchesWait(handle: object): Int32Array;

  progTestRun(fd: number, data: Buffer, dataSizeOut: number, ctx: Buffer | undefined, repeat: number): TestRunResult;

  linkCreate(progFd: number, target: number, attachType: number, flags: number, operation: string): FdHandle;
  /** linkCreate on the thread pool (tcx attaches wait for an RCU grace period). */
  linkCreateAsync(progFd: number, target: number, attachType: number, flags: number, operation: string): Promise<FdHandle>;
  linkDetach(fd: number, operation: string): void;
  linkInfo(fd: number): LinkInfo;
  objPin(fd: number, path: string): void;
  /** A new fd the caller owns. */
  objGet(path: string): number;
  progInfo(fd: number): ProgInfo;
  progInfoById(id: number): ProgInfo | undefined;
  progQuery(target: number, attachType: number): number[];
  xdpQuery(ifindex: number): XdpQuery;
  tcAttach(progFd: number, ifindex: number, egress: boolean): { handle: number; priority: number; netns: FdHandle };
  tcDetach(netnsFd: number, ifindex: number, egress: boolean, handle: number, priority: number): boolean;
  /** A clsact filter at the caller's handle and priority; replace swaps the program in one step. */
  tcFilterAttach(progFd: number, ifindex: number, egress: boolean, handle: number, priority: number, replace: boolean): void;
  /** The program id of the filter at handle/priority, 0 when there is none. */
  tcFilterQuery(ifindex: number, egress: boolean, handle: number, priority: number): number;
  /** false when the filter, its qdisc or its device was already gone. */
  tcFilterDetach(ifindex: number, egress: boolean, handle: number, priority: number): boolean;

  inNetns<T>(path: string, fn: () => T): T;
  /** Sends one rtnetlink message from a thread-pool socket in the netns of netnsFd; 0 or -errno. */
  rtnlRequestAsync(netnsFd: number, message: Buffer, operation: string): Promise<number>;
  /**
   * A NETLINK_ROUTE socket made in the netns of netnsFd, connected to the kernel, read on the
   * event loop. onEvent gets the datagrams read in one wake-up and 0, or a socket error's errno
   * (ENOBUFS: replies were dropped) after them. receiveBufferBytes 0: the kernel's default.
   */
  RtnlSocketHandle: new (
    netnsFd: number,
    receiveBufferBytes: number,
    onEvent: (datagrams: Buffer[], errno: number) => void,
  ) => RtnlSocketHandle;
  currentNetns(): FdHandle;
  /** SO_NETNS_COOKIE of a socket made in the netns of netnsFd (-1: the calling thread's). */
  netnsCookie(netnsFd: number): bigint;
  /** Opens an iterator on an iterator link (inside the netns of netnsFd unless -1) and reads it to the end. */
  iterRun(linkFd: number, netnsFd: number): Buffer;
  /**
   * Maglev tables of many sets (native/maglev.cc): `names` holds each set's backend names in turn
   * order, each followed by a NUL; set i has counts[i] names and its table goes to outs[i] (m
   * slots, slot → the name's inputIndex). Returns the number of sets.
   */
  maglevFill(names: Buffer, counts: Uint32Array, inputIndex: Uint16Array, m: number, outs: Uint16Array[]): number;
  /**
   * maglevFill with a large batch's threads left running: the tables are written once
   * maglevFillWait(handle) returns. Set i's table: m slots at byte where[2i + 1] of buffers[where[2i]].
   */
  maglevFillStart(names: Buffer, counts: Uint32Array, inputIndex: Uint16Array, m: number, buffers: ArrayBufferLike[], where: Uint32Array): object;
  maglevFillWait(handle: object): void;
  /** The first i whose slots[starts[i] … + lengths[i]) hold counts[i] or more, or -1. */
  maglevFirstBadTable(slots: Uint16Array, starts: Uint32Array, lengths: Uint32Array, counts: Uint32Array): number;
}
