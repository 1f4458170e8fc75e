// The datapath's policy decision, written plainly over the compiler's desired map contents
// (src/datapath/policy-types.ts, "A side of a connection is decided…"): what the BPF programs
// will answer for a packet, for tests and for `kelp policy trace` to check the model against.
import { tryParseIp } from '../ipam/ip';
import { IDENTITY_ANY, IDENTITY_HOST, PolicyDirection, PolicyEntry, PolicyMapsDesired } from '../datapath/policy-types';

export type MapsAnswer =
  | { kind: 'host' }
  /** No entry for the endpoint: its policy is not programmed (the datapath drops). */
  | { kind: 'unprogrammed'; identity: number }
  | { kind: 'entry'; identity: number; entry: PolicyEntry };

export class DesiredLookup {
  private readonly ipcache = new Map<number, Map<number, number>>();
  private readonly lengths: number[];
  private readonly entries = new Map<string, PolicyEntry[]>();

  constructor(desired: PolicyMapsDesired) {
    for (const [cidr, id] of desired.ipcache) {
      const [addr, len] = cidr.split('/');
      const prefix = Number(len);
      const net = Number(tryParseIp(addr)!.value);
      let m = this.ipcache.get(prefix);
      if (!m) this.ipcache.set(prefix, (m = new Map()));
      m.set(net, id);
    }
    this.lengths = [...this.ipcache.keys()].sort((a, b) => b - a);
    for (const e of desired.policy) {
      const key = `${e.epId}/${e.identity}/${e.direction}`;
      const list = this.entries.get(key);
      if (list) list.push(e);
      else this.entries.set(key, [e]);
    }
  }

  /** kelp_ipcache4: the longest prefix holding an IPv4 address. */
  identity(ip: string): number | undefined {
    const a = tryParseIp(ip);
    if (!a || a.family !== 4) return undefined;
    const v = Number(a.value);
    for (const len of this.lengths) {
      const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
      const id = this.ipcache.get(len)!.get((v & mask) >>> 0);
      if (id !== undefined) return id;
    }
    return undefined;
  }

  /** kelp_policy4's longest match for (endpoint, identity, direction, protocol, port). */
  private longest(epId: number, identity: number, dir: PolicyDirection, protocol: number, port: number): PolicyEntry | undefined {
    let best: PolicyEntry | undefined;
    let bestLen = -1;
    for (const e of this.entries.get(`${epId}/${identity}/${dir}`) ?? []) {
      let len: number;
      if (e.protocol === undefined) len = 72;
      else if (e.protocol !== protocol) continue;
      else {
        const shift = 16 - e.portPrefix;
        if (e.portPrefix > 0 && port >>> shift !== e.port >>> shift) continue;
        len = 80 + e.portPrefix;
      }
      if (len > bestLen) {
        best = e;
        bestLen = len;
      }
    }
    return best;
  }

  /** The side's answer: the peer's identity, HOST first, the identity's entries, then IDENTITY_ANY's. */
  decide(epId: number, dir: PolicyDirection, peerIp: string, protocol: number, port: number): MapsAnswer | undefined {
    const identity = this.identity(peerIp);
    if (identity === undefined) return undefined;
    if (identity === IDENTITY_HOST) return { kind: 'host' };
    const entry = this.longest(epId, identity, dir, protocol, port) ?? this.longest(epId, IDENTITY_ANY, dir, protocol, port);
    return entry ? { kind: 'entry', identity, entry } : { kind: 'unprogrammed', identity };
  }
}
