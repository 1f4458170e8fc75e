// The masquerade codecs (src/datapath/nat.ts): encode/decode, load-time settings and the timeout
// rules of the collector. Their layouts and enums are checked against host.o's BTF in
// btf-layout.test.ts.
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_CT_TIMEOUTS,
  IpProto,
  NatDir,
  TcpFlag,
  ct4Deadline,
  ct4Entry,
  masqConstants,
  nat4Entry,
  nomasq4Key,
  tuple4,
  Ct4Entry,
} from '../../src/datapath/nat';

const S = 1_000_000_000n;

describe('codecs', () => {
  it('tuple4: addresses and ports in network order, dir and proto as bytes', () => {
    const t = { saddr: '10.244.1.5', daddr: '93.184.216.34', sport: 40000, dport: 443, proto: IpProto.TCP, dir: NatDir.INGRESS };
    const b = tuple4.encode(t);
    expect(b.toString('hex')).toBe('0af40105' + '5db8d822' + '9c40' + '01bb' + '06' + '01' + '0000');
    expect(tuple4.decode(b)).toEqual(t);
    expect(() => tuple4.encode({ ...t, sport: 70000 })).toThrow(/port/);
    expect(() => tuple4.encode({ ...t, saddr: '10.244.1' })).toThrow(/IPv4/);
  });

  it('ct4_entry round-trips', () => {
    const e: Ct4Entry = { created: 1n, lastSeen: 2n ** 63n, txPackets: 3n, txBytes: 4n, rxPackets: 5n, rxBytes: 6n, txFlags: 0x12, rxFlags: 0x11 };
    expect(ct4Entry.decode(ct4Entry.encode(e))).toEqual(e);
  });

  it('nat4_entry: port big-endian, created little-endian', () => {
    const b = nat4Entry.encode({ addr: '192.168.50.2', port: 61000, created: 0x0102n });
    expect(b.toString('hex')).toBe('c0a83202' + 'ee48' + '0000' + '0201000000000000');
    expect(nat4Entry.decode(b)).toEqual({ addr: '192.168.50.2', port: 61000, created: 0x0102n });
  });

  it('nomasq4_key: host-order prefix length, then the address', () => {
    expect(nomasq4Key.encode({ cidr: '10.244.0.0/16' }).toString('hex')).toBe('10000000' + '0af40000');
    expect(nomasq4Key.decode(nomasq4Key.encode({ cidr: '0.0.0.0/0' }))).toEqual({ cidr: '0.0.0.0/0' });
    expect(() => nomasq4Key.encode({ cidr: '10.244.0.1/16' })).toThrow(/host bits/);
    expect(() => nomasq4Key.encode({ cidr: '10.244.0.0/33' })).toThrow(/CIDR/);
    expect(() => nomasq4Key.encode({ cidr: '10.244.0.0' })).toThrow(/CIDR/);
  });
});

describe('masqConstants', () => {
  it('encodes addresses as network-order Buffers and defaults the port range', () => {
    const c = masqConstants({ podCidr: '10.244.1.0/24', masqIp: '192.168.50.2' });
    expect(c).toEqual({
      KELP_POD_CIDR: Buffer.from([10, 244, 1, 0]),
      KELP_POD_PREFIX: 24,
      KELP_MASQ_IP: Buffer.from([192, 168, 50, 2]),
      KELP_NAT_PORT_MIN: 61000,
      KELP_NAT_PORT_MAX: 65535,
      KELP_VXLAN_PORT: 0,
    });
    expect(masqConstants({ podCidr: '10.244.1.0/24', masqIp: '192.168.50.2', vxlanPort: 8472 }).KELP_VXLAN_PORT).toBe(8472);
  });

  it.each([
    [{ podCidr: '0.0.0.0/0', masqIp: '192.168.50.2' }, /\/0/],
    [{ podCidr: '10.244.1.0/24', masqIp: '192.168.50.2', portMin: 2000, portMax: 1000 }, /empty/],
    [{ podCidr: '10.244.1.0/24', masqIp: '192.168.50.2', portMin: 0 }, /starts at 0/],
    [{ podCidr: '10.244.1.0/24', masqIp: 'node' }, /IPv4/],
    [{ podCidr: '10.244.1.0/24', masqIp: '192.168.50.2', vxlanPort: 70000 }, /vxlanPort/],
  ])('rejects %o', (cfg, msg) => {
    expect(() => masqConstants(cfg)).toThrow(msg);
  });
});

describe('ct4Deadline', () => {
  const base: Ct4Entry = { created: 0n, lastSeen: 1000n, txPackets: 1n, txBytes: 60n, rxPackets: 0n, rxBytes: 0n, txFlags: 0, rxFlags: 0 };
  const t = DEFAULT_CT_TIMEOUTS;
  it.each([
    ['TCP SYN only', IpProto.TCP, { txFlags: TcpFlag.SYN }, t.tcpSyn],
    ['TCP established', IpProto.TCP, { txFlags: TcpFlag.SYN | TcpFlag.ACK, rxFlags: TcpFlag.SYN | TcpFlag.ACK, rxPackets: 1n }, t.tcpEstablished],
    ['TCP FIN one way', IpProto.TCP, { txFlags: TcpFlag.ACK | TcpFlag.FIN, rxFlags: TcpFlag.ACK, rxPackets: 1n }, t.tcpHalfClosed],
    ['TCP FIN both ways', IpProto.TCP, { txFlags: TcpFlag.FIN, rxFlags: TcpFlag.FIN, rxPackets: 1n }, t.tcpClosing],
    ['TCP RST from the remote', IpProto.TCP, { txFlags: TcpFlag.SYN, rxFlags: TcpFlag.RST, rxPackets: 1n }, t.tcpClosing],
    ['UDP', IpProto.UDP, {}, t.udp],
    ['ICMP', IpProto.ICMP, {}, t.icmp],
    ['other', 47, {}, t.other],
  ])('%s', (_name, proto, over, idle) => {
    expect(ct4Deadline(proto, { ...base, ...over }, t)).toBe(1000n + idle);
  });

  it('the documented values', () => {
    expect(t).toEqual({
      tcpSyn: 60n * S,
      tcpEstablished: 6n * 3600n * S,
      tcpHalfClosed: 600n * S,
      tcpClosing: 10n * S,
      udp: 60n * S,
      icmp: 30n * S,
      other: 60n * S,
    });
  });
});
