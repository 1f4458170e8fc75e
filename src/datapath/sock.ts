// The socket side of load balancing, besides the attach (attach/cgroup.ts): sock.o's load-time
// constants, and the destruction of UDP sockets connected to backends that left (iter_udp.o).
//
// Which sockets destroyUdpSocketsTo reaches: a socket iterator walks one network namespace, the
// one its fd is opened in. It is run once in the agent's own namespace (the node's: its
// processes and hostNetwork pods, whose sockets the node-wide socket LB pointed at backends) and
// once in each namespace it is given (the agent passes its endpoints' netns paths: pods' own
// sockets, pointed at a backend by socket LB in 'all' mode, or connected to a backend's address
// by the application itself). Sockets in namespaces nobody names (another runtime's, a netns of
// no kelp endpoint) are not reached. A socket connected to the service address itself (socket LB
// off, or host-only mode inside a pod) is not destroyed: its datagrams meet the per-packet path,
// which moves the flow to a live backend at its next packet.
import type { BpfObject, ConstantValue } from '../bpf';
import { attachIterator, BpfIterator, netnsCookie } from '../bpf';
import type { Logger } from '../log';

/** 'all': every socket of the cgroup; 'host-only': the node's netns only; 'off': not attached. */
export type SocketLbMode = 'all' | 'host-only' | 'off';

export const SOCKET_LB_MODES: readonly SocketLbMode[] = ['all', 'host-only', 'off'];

/**
 * bpf/sock.c's .rodata for a mode. host-only compares each socket's namespace with the node's:
 * `hostNetns` (a path), by default the calling thread's (the agent runs in the node's).
 */
export function sockConstants(mode: Exclude<SocketLbMode, 'off'>, hostNetns?: string): Record<string, ConstantValue> {
  if (mode !== 'all' && mode !== 'host-only') throw new Error(`socket LB mode must be one of ${SOCKET_LB_MODES.join(', ')}, got ${String(mode)}`);
  return { KELP_SOCK_HOST_ONLY: mode === 'host-only' ? 1 : 0, KELP_SOCK_HOST_NETNS: mode === 'host-only' ? netnsCookie(hostNetns) : 0n };
}

/**
 * A backend that left: its address and port (UDP). Pass only an (address, port) no set holds any
 * more: a socket is matched by its peer alone, so one of another service still using that
 * backend would be destroyed too.
 */
export interface GoneBackend {
  address: string;
  port: number;
}

/** One socket destroyed (struct sock_destroy_record of bpf/iter_udp.c). */
export interface DestroyedSocket {
  /** The namespace it was found in; undefined: the agent's own. */
  netns?: string;
  local: string;
  localPort: number;
  peer: string;
  peerPort: number;
  /** bpf_sock_destroy()'s result: 0, or a negative errno. */
  err: number;
}

export interface DestroyOptions {
  /** Network namespaces to clean besides the agent's own (pods' netns paths). */
  netns?: readonly string[];
}

/** struct sock_destroy_key and struct sock_destroy_record of bpf/iter_udp.c (checked against its BTF). */
export const SOCK_DESTROY_KEY = { size: 8, off: { addr: 0, port: 4 } } as const;
export const SOCK_DESTROY_RECORD = { size: 16, off: { daddr: 0, saddr: 4, dport: 8, sport: 10, err: 12 } } as const;

function ipv4Bytes(address: string): Buffer {
  const parts = address.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new Error(`not an IPv4 address: ${address}`);
  return Buffer.from(parts);
}

function destroyKey(b: GoneBackend): Buffer {
  if (!Number.isInteger(b.port) || b.port < 1 || b.port > 65535) throw new Error(`backend port must be 1..65535, got ${b.port}`);
  const k = Buffer.alloc(SOCK_DESTROY_KEY.size);
  ipv4Bytes(b.address).copy(k, SOCK_DESTROY_KEY.off.addr);
  k.writeUInt16BE(b.port, SOCK_DESTROY_KEY.off.port);
  return k;
}

const ipv4 = (b: Buffer, at: number) => `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;

function decodeRecords(out: Buffer, netns: string | undefined): DestroyedSocket[] {
  const recs: DestroyedSocket[] = [];
  const { size, off } = SOCK_DESTROY_RECORD;
  for (let at = 0; at + size <= out.length; at += size) {
    recs.push({
      netns,
      peer: ipv4(out, at + off.daddr),
      local: ipv4(out, at + off.saddr),
      peerPort: out.readUInt16BE(at + off.dport),
      localPort: out.readUInt16LE(at + off.sport),
      err: out.readInt32LE(at + off.err),
    });
  }
  return recs;
}

/**
 * iter_udp.o, loaded once per agent, and its iterator link. Not thread-safe across agents sharing
 * a pin root (kelp_sock_destroy4 is one map): one agent per pin root, as everywhere.
 */
export class UdpSocketReaper {
  private constructor(
    private readonly obj: BpfObject,
    private readonly iter: BpfIterator,
    private readonly log: Logger,
  ) {}

  /** Over iter_udp.o, loaded by the caller (objects.load('iter_udp', {})). */
  static of(obj: BpfObject, log: Logger): UdpSocketReaper {
    return new UdpSocketReaper(obj, attachIterator(obj.program('kelp_udp_destroy')), log);
  }

  /**
   * Destroys the connected UDP sockets whose peer is one of `backends`, in the agent's namespace
   * and in each of `opts.netns` (see the file comment for exactly which). Their owners' next
   * (or pending) call fails with ECONNABORTED (a recv()) or EDESTADDRREQ (a send(): the socket has
   * no peer any more). A namespace that is gone, or cannot be entered (logged), is skipped.
   */
  destroyUdpSocketsTo(backends: readonly GoneBackend[], opts: DestroyOptions = {}): DestroyedSocket[] {
    if (backends.length === 0) return [];
    const map = this.obj.map('kelp_sock_destroy4');
    const keys = backends.map(destroyKey);
    const one = Buffer.from([1]);
    for (const k of keys) map.update(k, one, 0);
    const out: DestroyedSocket[] = [];
    try {
      out.push(...decodeRecords(this.iter.run(), undefined));
      for (const ns of new Set(opts.netns ?? [])) {
        try {
          out.push(...decodeRecords(this.iter.run({ netns: ns }), ns));
        } catch (e) {
          // ENOENT: the pod (and its sockets) went between the caller's listing and now. Any
          // other namespace that cannot be entered must not keep the rest from being cleaned.
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ err: e, netns: ns }, 'UDP sockets of a namespace not reached');
        }
      }
    } finally {
      for (const k of keys) map.delete(k);
    }
    if (out.length) this.log.info({ backends, destroyed: out.length, failed: out.filter((d) => d.err !== 0).length }, 'UDP sockets to gone backends destroyed');
    return out;
  }

  close(): void {
    this.iter.close();
  }
}
