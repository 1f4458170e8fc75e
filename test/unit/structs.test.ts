// Codecs of the structs shared with the BPF programs: byte positions and round trips.
import { describe, expect, it } from 'vitest';
import { DropReason, dropReasonName, dropReasonText } from '../../src/datapath/drop';
import { decodeEvent, formatEvent } from '../../src/datapath/events';
import {
  Direction,
  EP_CACHE_SLOTS,
  endpointCacheIndex,
  endpointCacheKey,
  endpointInfo,
  endpointKey,
  endpointSlot,
  EventType,
  kelpEvent,
  kelpEventHdr,
  mergeMetrics,
  METRICS_FWD_EPS,
  metricsFwdIndex,
  metricsFwdKey,
  metricsFwdSlot,
  metricsKey,
  metricsValue,
  RawEvent,
  sumPerCpuMetrics,
  TracePoint,
} from '../../src/datapath/structs';

const rawEvent: RawEvent = {
  tsNs: 123456789012345n,
  type: EventType.DROP,
  cpu: 1,
  dir: Direction.FROM_POD,
  reason: DropReason.SRC_MAC,
  ifindex: 17,
  targetIfindex: 0,
  epId: 101,
  len: 98,
  ethProto: 0x0800,
  proto: 17,
  tracePoint: TracePoint.NONE,
  saddr: '10.77.0.2',
  daddr: '10.77.0.3',
  sport: 40000,
  dport: 53,
  policyId: 0,
  rule: 0,
  tier: 0,
  action: 0,
};

describe('endpoint_key', () => {
  it('is the bare IPv4 address in network order', () => {
    const b = endpointKey.encode({ ip4: '10.1.2.3' });
    expect(b.toString('hex')).toBe('0a010203');
    expect(endpointKey.decode(b)).toEqual({ ip4: '10.1.2.3' });
  });

  it('rejects bad input', () => {
    expect(() => endpointKey.encode({ ip4: '10.1.2' })).toThrow(/invalid IPv4/);
    expect(() => endpointKey.encode({ ip4: 'fd00::1' })).toThrow(/invalid IPv4/);
    expect(() => endpointKey.decode(Buffer.alloc(3))).toThrow(RangeError);
  });
});

describe('endpoint_info', () => {
  const info = { ifindex: 0x01020304, epId: 7, flags: 0, mac: '02:aa:bb:cc:dd:ee', nodeMac: '02:11:22:33:44:55' };

  it('encodes host-order ids and raw MACs', () => {
    const b = endpointInfo.encode(info);
    expect(b.toString('hex')).toBe('04030201' + '07000000' + '00000000' + '02aabbccddee' + '021122334455');
    expect(endpointInfo.decode(b)).toEqual(info);
  });

  it('rejects ep_id 0, out-of-range ifindex and bad MACs', () => {
    expect(() => endpointInfo.encode({ ...info, epId: 0 })).toThrow(/ep_id 0/);
    expect(() => endpointInfo.encode({ ...info, ifindex: -1 })).toThrow(/ifindex must be a u32/);
    expect(() => endpointInfo.encode({ ...info, mac: '02:aa' })).toThrow(/MAC/);
  });
});

describe('endpoint_slot', () => {
  const info = { ifindex: 0x01020304, epId: 7, flags: 0, mac: '02:aa:bb:cc:dd:ee', nodeMac: '02:11:22:33:44:55' };

  it('is the address, the live byte, padding, then an endpoint_info', () => {
    const slot = { ip4: '10.244.0.5', live: true, info };
    const b = endpointSlot.encode(slot);
    expect(b.toString('hex')).toBe('0af40005' + '01' + '000000' + endpointInfo.encode(info).toString('hex'));
    expect(endpointSlot.decode(b)).toEqual(slot);
    expect(endpointSlot.decode(Buffer.alloc(32))).toMatchObject({ ip4: '0.0.0.0', live: false, info: { epId: 0 } });
    expect(() => endpointSlot.decode(Buffer.alloc(31))).toThrow(RangeError);
  });

  it('slot index: hash_32 of the host-order address, top 14 bits of ip * 0x61c88647', () => {
    const hash32 = (ip: string) => {
      const n = BigInt(endpointKey.encode({ ip4: ip }).readUInt32BE(0));
      return Number(((n * 0x61c88647n) & 0xffffffffn) >> 18n);
    };
    for (const ip of ['0.0.0.0', '10.244.0.5', '10.244.0.6', '192.168.255.255', '255.255.255.255']) {
      expect(endpointCacheIndex(ip)).toBe(hash32(ip));
    }
    expect(endpointCacheIndex('10.244.0.1')).toBe(2269);
  });

  it('a node /19 and several /24s spread over distinct slots', () => {
    const dotted = (n: number) => [24, 16, 8, 0].map((sh) => (n >>> sh) & 255).join('.');
    const range = (first: string, n: number) => {
      const base = endpointKey.encode({ ip4: first }).readUInt32BE(0);
      return Array.from({ length: n }, (_, i) => dotted(base + i));
    };
    const slash19 = range('10.244.32.0', 8192);
    const fourSlash24 = ['10.244.0.0', '10.245.0.0', '172.16.3.0', '192.168.7.0'].flatMap((first) => range(first, 256));
    for (const ips of [slash19, fourSlash24]) expect(new Set(ips.map(endpointCacheIndex)).size).toBe(ips.length);
  });

  it('keys are host-order slot numbers below the slot count', () => {
    expect(endpointCacheKey(5).toString('hex')).toBe('05000000');
    expect(() => endpointCacheKey(EP_CACHE_SLOTS)).toThrow(RangeError);
    expect(() => endpointCacheKey(-1)).toThrow(RangeError);
  });
});

describe('metrics', () => {
  it('keys carry a signed 16-bit reason', () => {
    const key = { epId: 101, dir: Direction.TO_POD, reason: DropReason.TTL_EXCEEDED };
    const b = metricsKey.encode(key);
    expect(b.toString('hex')).toBe('65000000' + '02' + '00' + 'f7ff');
    expect(metricsKey.decode(b)).toEqual(key);
  });

  it('values round-trip 64-bit counters', () => {
    const v = { packets: 2n ** 40n + 1n, bytes: 2n ** 63n };
    expect(metricsValue.decode(metricsValue.encode(v))).toEqual(v);
  });

  it('sums per-CPU slots', () => {
    const slots = [
      { packets: 1n, bytes: 100n },
      { packets: 0n, bytes: 0n },
      { packets: 5n, bytes: 700n },
    ];
    const buf = Buffer.concat(slots.map((s) => metricsValue.encode(s)));
    expect(sumPerCpuMetrics(buf, 3)).toEqual({ packets: 6n, bytes: 800n });
    expect(() => sumPerCpuMetrics(buf, 4)).toThrow(RangeError);
  });
});

describe('kelp_metrics_fwd', () => {
  it('indexes forwarded counters by ep_id and direction', () => {
    expect(metricsFwdIndex(0, Direction.FROM_POD)).toBe(0);
    expect(metricsFwdIndex(101, Direction.TO_POD)).toBe(203);
    expect(metricsFwdSlot(203)).toEqual({ epId: 101, dir: Direction.TO_POD });
    expect(metricsFwdKey(101, Direction.FROM_POD).readUInt32LE(0)).toBe(202);
    expect(() => metricsFwdIndex(METRICS_FWD_EPS, Direction.FROM_POD)).toThrow(RangeError);
    expect(() => metricsFwdSlot(METRICS_FWD_EPS * 2)).toThrow(RangeError);
  });

  it('merges with kelp_metrics into one table, summing CPUs and maps, without zeros', () => {
    const perCpu = (...v: Array<[number, number]>) =>
      Buffer.concat(v.map(([p, b]) => metricsValue.encode({ packets: BigInt(p), bytes: BigInt(b) })));
    const hash: Array<[Buffer, Buffer]> = [
      [metricsKey.encode({ epId: 101, dir: Direction.FROM_POD, reason: DropReason.SRC_MAC }), perCpu([1, 60], [0, 0])],
      // a forwarded counter of an id beyond the array
      [metricsKey.encode({ epId: 5000, dir: Direction.TO_POD, reason: 0 }), perCpu([2, 200], [1, 100])],
      [metricsKey.encode({ epId: 101, dir: Direction.FROM_POD, reason: 0 }), perCpu([1, 10], [0, 0])],
    ];
    const fwd: Array<[Buffer, Buffer]> = [
      [metricsFwdKey(101, Direction.FROM_POD), perCpu([3, 300], [4, 400])],
      [metricsFwdKey(102, Direction.TO_POD), perCpu([0, 0], [0, 0])],
    ];
    expect(mergeMetrics(hash, fwd, 2)).toEqual([
      { key: { epId: 101, dir: Direction.FROM_POD, reason: 0 }, value: { packets: 8n, bytes: 710n } },
      { key: { epId: 101, dir: Direction.FROM_POD, reason: DropReason.SRC_MAC }, value: { packets: 1n, bytes: 60n } },
      { key: { epId: 5000, dir: Direction.TO_POD, reason: 0 }, value: { packets: 3n, bytes: 300n } },
    ]);
  });
});

describe('kelp_event', () => {
  it('round-trips every field', () => {
    expect(kelpEvent.decode(kelpEvent.encode(rawEvent))).toEqual(rawEvent);
    const trace = { ...rawEvent, type: EventType.TRACE, reason: 0, targetIfindex: 9, tracePoint: TracePoint.TO_ENDPOINT };
    expect(kelpEvent.decode(kelpEvent.encode(trace))).toEqual(trace);
  });

  it('keeps ports and addresses in network order', () => {
    const b = kelpEvent.encode(rawEvent);
    expect(b.subarray(40, 52).toString('hex')).toBe('0a4d0002' + '0a4d0003' + '9c40' + '0035');
    expect(b.readInt16LE(18)).toBe(-7);
  });

  it('starts with the versioned header: version 2, type, size, cpu, timestamp', () => {
    const b = kelpEvent.encode(rawEvent);
    expect(kelpEventHdr.decode(b)).toEqual({ version: 2, type: EventType.DROP, size: 64, cpu: 1, tsNs: 123456789012345n });
  });

  it('decodes drops and traces into named events', () => {
    const drop = decodeEvent(kelpEvent.encode(rawEvent));
    expect(drop).toMatchObject({ kind: 'drop', dir: 'from-pod', reasonName: 'SRC_MAC', epId: 101, ifindex: 17 });
    expect(formatEvent(drop)).toBe('drop SRC_MAC from-pod if 17 ep 101 10.77.0.2:40000 -> 10.77.0.3:53 proto 17 len 98');

    const raw = { ...rawEvent, type: EventType.TRACE, reason: 0, targetIfindex: 9, tracePoint: TracePoint.ARP_REPLY };
    const trace = decodeEvent(kelpEvent.encode(raw));
    expect(trace).toMatchObject({ kind: 'trace', point: 'arp-reply', targetIfindex: 9 });
    expect(formatEvent(trace)).toContain('trace arp-reply from-pod if 17 ep 101 -> if 9');
  });

  it('refuses records it cannot read', () => {
    expect(() => decodeEvent(Buffer.alloc(40))).toThrow(RangeError);
    expect(() => decodeEvent(kelpEvent.encode({ ...rawEvent, type: 9 }))).toThrow(/unknown type 9/);
    expect(() => decodeEvent(kelpEvent.encode({ ...rawEvent, dir: 0 }))).toThrow(/unknown direction 0/);
    const badPoint = { ...rawEvent, type: EventType.TRACE, tracePoint: 7 };
    expect(() => decodeEvent(kelpEvent.encode(badPoint))).toThrow(/unknown trace point 7/);
  });
});

describe('drop reasons', () => {
  it('are distinct negative codes with names and descriptions', () => {
    const codes = Object.values(DropReason);
    expect(new Set(codes).size).toBe(codes.length);
    for (const code of codes) {
      expect(code).toBeLessThan(0);
      expect(dropReasonText(code)).not.toMatch(/unknown/);
    }
    expect(dropReasonName(-6)).toBe('SRC_UNKNOWN');
    expect(dropReasonName(-200)).toBe('NAT_NO_PORT');
    expect(dropReasonName(-999)).toBe('UNKNOWN(-999)');
  });
});
