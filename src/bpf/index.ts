// The BPF layer as the rest of kelp sees it: objects, programs, maps, links, ring buffers.
export { KelpBpfError } from './errors';
export { setLibbpfLogger } from './log';
export type { LibbpfLogger } from './log';
export { loadObject, BpfObject, btfEnum, btfStructLayout } from './object';
export type { OpenOptions, ConstantValue, StructLayout } from './object';
export type { MapDesc, ProgramDesc } from './addon';
export { BpfProgram, openPinnedProgram, ProgType } from './program';
export type { TestRunOptions, TestRunResult } from './program';
export { BpfMap, openPinnedMap, MapType, BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK } from './map';
export type { BatchOptions } from './map';
export { inNetns, rtnlRequestAsync } from './netns';
export { attachTc, attachTcAsync, attachXdp, attachCgroup, openPinnedLink, listAttached, attachTcFilter, queryTcFilter, detachTcFilter, BpfLink, AttachType } from './link';
export type { AttachTcOptions, TcDirection, LinkKind, Attached, AttachedProgram, TcFilterSlot } from './link';
export type { LinkInfo } from './addon';
export { openRingBuffer } from './ringbuf';
export type { RingBuffer } from './ringbuf';
export { openRtnlSocket } from './netns';
export type { RtnlSocket, RtnlSocketOptions } from './netns';
