// kelp_endpoints and the direct-mapped cache in front of it, kelp_endpoint_cache
// (bpf/lib/endpoint.h). Every write to either goes through here, so the cache never says
// anything kelp_endpoints does not: the programs trust a live slot without asking the hash.
// (One exception: a kelp_endpoints of a new layout is filled from the old pin by
// src/datapath/objects.ts while no program and no writer uses it yet; reconcileCache() follows.)
//
// Array updates are a memcpy that a program on another CPU may see half done, and the programs
// only read a slot whose `live` byte is 1. So a live slot is never rewritten in place: it is
// killed by a write that changes `live` alone, rewritten while dead, and revived by a write
// that again changes `live` alone. A one-byte change is never seen half done.
//
// A slot belongs to the address in it while it is live and agrees with that address's
// kelp_endpoints entry. An address whose slot another one owns (a collision) is served by the
// hash; the slot is handed over when its owner goes away and reconcileCache() runs (at start).
import type { BpfMap, BpfObject } from '../bpf';
import type { DatapathEndpoint } from './types';
import {
  EndpointInfo,
  EndpointSlot,
  EP_SLOT_LIVE_OFFSET,
  endpointCacheIndex,
  endpointCacheKey,
  endpointInfo,
  endpointKey,
  endpointSlot,
} from './structs';

const offset = (name: string) => endpointSlot.fields.find((f) => f.name === name)!.offset;
const IP_OFFSET = offset('ip4');
const INFO_OFFSET = offset('info');
const EMPTY = Buffer.alloc(endpointSlot.size);

export interface EndpointEntry {
  ip: string;
  info: EndpointInfo;
}

export class EndpointMaps {
  constructor(
    readonly hash: BpfMap,
    readonly cache: BpfMap,
  ) {}

  static of(obj: BpfObject): EndpointMaps {
    return new EndpointMaps(obj.map('kelp_endpoints'), obj.map('kelp_endpoint_cache'));
  }

  get(ip: string): EndpointInfo | undefined {
    const raw = this.hash.lookup(endpointKey.encode({ ip4: ip }));
    return raw && endpointInfo.decode(raw);
  }

  entries(): EndpointEntry[] {
    return this.hash.lookupBatch().map(([k, v]) => ({ ip: endpointKey.decode(k).ip4, info: endpointInfo.decode(v) }));
  }

  /** The slot `ip` maps to and what it holds. */
  slotOf(ip: string): { index: number; slot: EndpointSlot } {
    const index = endpointCacheIndex(ip);
    return { index, slot: endpointSlot.decode(this.readSlot(index)) };
  }

  /** Adds or changes the endpoint of `ip`, and caches it unless its slot is another's. */
  put(ip: string, info: EndpointInfo): void {
    const key = endpointKey.encode({ ip4: ip });
    if (key.readUInt32BE(0) === 0) throw new RangeError('kelp_endpoints: 0.0.0.0 is not an endpoint address');
    const value = endpointInfo.encode(info);
    const index = endpointCacheIndex(ip);
    let cur = this.readSlot(index);
    // The old entry's slot must not accept what the new one refuses (a MAC that changed) while
    // the hash already has the new one.
    if (isLive(cur) && holds(cur, key) && !slotInfo(cur).equals(value)) cur = this.kill(index, cur);
    this.hash.update(key, value);
    if (holds(cur, key) || this.owner(index, cur) === undefined) this.fill(index, cur, key, value);
  }

  /** Removes the endpoint of `ip` (its slot first); false when it had none. */
  remove(ip: string): boolean {
    const key = endpointKey.encode({ ip4: ip });
    const index = endpointCacheIndex(ip);
    const cur = this.readSlot(index);
    if (holds(cur, key)) this.empty(index, cur);
    return this.hash.delete(key);
  }

  /**
   * Makes the cache agree with kelp_endpoints, whatever wrote it before (a crashed or older
   * agent): slots whose owner is gone or disagrees are emptied or given to an address that maps
   * there (the lowest, so the choice is stable). Returns how many slots changed.
   */
  reconcileCache(): number {
    const want = new Map<number, { key: Buffer; value: Buffer }>();
    for (const [key, value] of this.hash.lookupBatch()) {
      const index = endpointCacheIndex(endpointKey.decode(key).ip4);
      const other = want.get(index);
      if (!other || key.readUInt32BE(0) < other.key.readUInt32BE(0)) want.set(index, { key, value });
    }
    let changed = 0;
    const size = endpointSlot.size;
    const { keys, values, count } = this.cache.lookupBatchRaw();
    for (let i = 0; i < count; i++) {
      const index = keys.readUInt32LE(i * 4);
      // Most slots are empty and wanted by no one: skipped without making an object for them.
      if (!want.has(index) && values.compare(EMPTY, 0, size, i * size, (i + 1) * size) === 0) continue;
      const cur = values.subarray(i * size, (i + 1) * size);
      if (this.owner(index, cur) !== undefined) continue;
      const next = want.get(index);
      if (next) {
        if (this.fill(index, cur, next.key, next.value)) changed++;
      } else if (!cur.equals(EMPTY)) {
        this.empty(index, cur);
        changed++;
      }
    }
    return changed;
  }

  /** Why the cache disagrees with `info` for `ip`, or undefined when it does not. */
  checkSlot(ip: string, info: EndpointInfo): string | undefined {
    const key = endpointKey.encode({ ip4: ip });
    const { index } = this.slotOf(ip);
    const cur = this.readSlot(index);
    if (!isLive(cur) || !holds(cur, key) || slotInfo(cur).equals(endpointInfo.encode(info))) return undefined;
    return `kelp_endpoint_cache slot ${index} for ${ip} holds ${JSON.stringify(endpointSlot.decode(cur).info)}`;
  }

  private readSlot(index: number): Buffer {
    return this.cache.lookup(endpointCacheKey(index)) ?? EMPTY;
  }

  /** The address a live slot serves while it is that address's slot and kelp_endpoints agrees; undefined: free. */
  private owner(index: number, slot: Buffer): Buffer | undefined {
    if (!isLive(slot)) return undefined;
    const key = slotKey(slot);
    if (endpointCacheIndex(endpointKey.decode(key).ip4) !== index) return undefined;
    const entry = this.hash.lookup(key);
    return entry && entry.equals(slotInfo(slot)) ? key : undefined;
  }

  private write(index: number, slot: Buffer): void {
    this.cache.update(endpointCacheKey(index), slot);
  }

  /** Clears `live` alone; returns the dead slot. */
  private kill(index: number, cur: Buffer): Buffer {
    const dead = Buffer.from(cur);
    dead[EP_SLOT_LIVE_OFFSET] = 0;
    this.write(index, dead);
    return dead;
  }

  private empty(index: number, cur: Buffer): void {
    if (isLive(cur)) this.kill(index, cur);
    this.write(index, EMPTY);
  }

  /** Puts (key, value) in the slot, live; false when it was there already. */
  private fill(index: number, cur: Buffer, key: Buffer, value: Buffer): boolean {
    const dead = Buffer.alloc(endpointSlot.size);
    key.copy(dead, IP_OFFSET);
    value.copy(dead, INFO_OFFSET);
    const live = Buffer.from(dead);
    live[EP_SLOT_LIVE_OFFSET] = 1;
    if (cur.equals(live)) return false;
    if (isLive(cur)) this.kill(index, cur);
    this.write(index, dead);
    this.write(index, live);
    return true;
  }
}

/** The kelp_endpoints value of an endpoint. */
export function endpointInfoOf(rec: DatapathEndpoint): EndpointInfo {
  return { ifindex: rec.hostIfindex, epId: rec.id, flags: 0, mac: rec.podMac, nodeMac: rec.hostMac };
}

/** An endpoint's IPv4 addresses, without prefix length: its kelp_endpoints keys. */
export function ipv4Addresses(rec: Pick<DatapathEndpoint, 'ips'>): string[] {
  return rec.ips.filter((ip) => !ip.address.includes(':')).map((ip) => ip.address.split('/')[0]);
}

/** Why the maps disagree with an endpoint (entries missing, pointing elsewhere, stale slots). */
export function endpointProblems(maps: EndpointMaps, rec: DatapathEndpoint): string[] {
  const problems: string[] = [];
  for (const ip of ipv4Addresses(rec)) {
    const v = maps.get(ip);
    if (!v) {
      problems.push(`datapath: no kelp_endpoints entry for ${ip}`);
      continue;
    }
    if (v.ifindex !== rec.hostIfindex || v.epId !== rec.id) problems.push(`datapath: kelp_endpoints entry for ${ip} points at ifindex ${v.ifindex}, id ${v.epId}`);
    const slot = maps.checkSlot(ip, v);
    if (slot) problems.push(`datapath: ${slot}, kelp_endpoints has ${JSON.stringify(v)}`);
  }
  return problems;
}

function isLive(slot: Buffer): boolean {
  return slot[EP_SLOT_LIVE_OFFSET] !== 0;
}

function slotKey(slot: Buffer): Buffer {
  return slot.subarray(IP_OFFSET, IP_OFFSET + endpointKey.size);
}

function holds(slot: Buffer, key: Buffer): boolean {
  return slotKey(slot).equals(key);
}

function slotInfo(slot: Buffer): Buffer {
  return slot.subarray(INFO_OFFSET, INFO_OFFSET + endpointInfo.size);
}
