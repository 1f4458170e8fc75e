import { describe, expect, it } from 'vitest';
import {
  broadcastAddress, canonicalIp, cidrContains, cidrSize, cidrToString, compareIp, ipFromBytes, ipOffset,
  ipToBytes, ipToString, networkAddress, parseCidr, parseIp, tryParseIp,
} from '../../src/ipam/ip';

describe('parseIp / ipToString', () => {
  it.each([
    ['10.244.0.5', 4, 0x0af40005n, '10.244.0.5'],
    ['0.0.0.1', 4, 1n, '0.0.0.1'],
    ['0.0.0.0', 4, 0n, '0.0.0.0'],
    ['255.255.255.255', 4, 0xffffffffn, '255.255.255.255'],
    ['::', 6, 0n, '::'],
    ['::1', 6, 1n, '::1'],
    ['fd00::5', 6, 0xfd00n << 112n | 5n, 'fd00::5'],
    ['FD00:0:0:0:0:0:0:5', 6, 0xfd00n << 112n | 5n, 'fd00::5'],
    ['2001:db8:0:0:1:0:0:1', 6, 0x20010db8000000000001000000000001n, '2001:db8::1:0:0:1'],
    ['1:0:1:1:1:1:1:1', 6, 0x00010000000100010001000100010001n, '1:0:1:1:1:1:1:1'],
    ['1:2:3:4:5:6:7:8', 6, 0x00010002000300040005000600070008n, '1:2:3:4:5:6:7:8'],
    ['1::', 6, 1n << 112n, '1::'],
    ['::ffff:10.0.0.1', 6, 0xffff0a000001n, '::ffff:a00:1'],
  ])('%s', (text, family, value, canonical) => {
    const ip = parseIp(text);
    expect(ip).toEqual({ family, value });
    expect(ipToString(ip)).toBe(canonical);
    expect(canonicalIp(text)).toBe(canonical);
  });

  it.each(['', '10.0.0', '10.0.0.256', '10.0.0.01', '10.0.0.1.2', ' 10.0.0.1', 'a.b.c.d', '1:2:3:4:5:6:7:8:9',
    '1::2::3', ':::', '12345::', 'fe80::1%eth0', '10.0.0.1/24'])('rejects %j', (text) => {
    expect(tryParseIp(text)).toBeUndefined();
    expect(() => parseIp(text)).toThrow(/invalid IP address/);
  });
});

describe('CIDR helpers', () => {
  it('keeps the address as written and derives network and broadcast', () => {
    const c = parseCidr('10.244.0.5/24');
    expect(cidrToString(c)).toBe('10.244.0.5/24');
    expect(ipToString(networkAddress(c))).toBe('10.244.0.0');
    expect(ipToString(broadcastAddress(c))).toBe('10.244.0.255');
    expect(cidrSize(c)).toBe(256n);
    expect(cidrContains(c, parseIp('10.244.0.255'))).toBe(true);
    expect(cidrContains(c, parseIp('10.244.1.0'))).toBe(false);
    expect(cidrContains(c, parseIp('::1'))).toBe(false);
  });

  it('handles /0 and IPv6', () => {
    expect(cidrContains(parseCidr('0.0.0.0/0'), parseIp('1.2.3.4'))).toBe(true);
    const c = parseCidr('fd00:1::/64');
    expect(ipToString(broadcastAddress(c))).toBe('fd00:1::ffff:ffff:ffff:ffff');
    expect(cidrContains(c, parseIp('fd00:1::abcd'))).toBe(true);
    expect(cidrContains(c, parseIp('fd00:2::'))).toBe(false);
  });

  it.each([
    ['10.0.0.0/24', '10.0.0.255', true],
    ['10.0.0.0/24', '10.0.1.0', false],
    ['10.0.0.7/24', '10.0.0.1', true],
    ['0.0.0.0/0', '192.168.1.1', true],
    ['fd00::/64', 'fd00::ffff:1', true],
    ['fd00::/64', 'fd00:0:0:1::1', false],
    ['10.0.0.0/8', 'fd00::1', false],
  ])('%s contains %s: %s (host bits of the CIDR ignored)', (cidr, ip, want) => {
    expect(cidrContains(parseCidr(cidr), parseIp(ip))).toBe(want);
  });

  it.each(['10.0.0.0', '10.0.0.0/33', '10.0.0.0/-1', '10.0.0.0/+8', '10.0.0.0/08', 'fd00::/129', 'x/24', '10.0.0.0/'])(
    'rejects %j', (text) => expect(() => parseCidr(text)).toThrow(/invalid CIDR/));
});

describe('arithmetic and bytes', () => {
  it('offsets within the family and refuses to leave it', () => {
    expect(ipToString(ipOffset(parseIp('10.0.0.255'), 1))).toBe('10.0.1.0');
    expect(ipToString(ipOffset(parseIp('10.0.1.0'), -1n))).toBe('10.0.0.255');
    expect(() => ipOffset(parseIp('255.255.255.255'), 1)).toThrow(RangeError);
    expect(() => ipOffset(parseIp('::'), -1)).toThrow(RangeError);
    expect(compareIp(parseIp('10.0.0.2'), parseIp('10.0.0.10'))).toBeLessThan(0);
  });

  it('converts to network byte order and back', () => {
    expect(ipToBytes(parseIp('10.244.0.5'))).toEqual(Buffer.from([10, 244, 0, 5]));
    expect(ipToString(ipFromBytes(Buffer.from([192, 168, 1, 2])))).toBe('192.168.1.2');
    const v6 = ipToBytes(parseIp('fd00::5'));
    expect(v6.length).toBe(16);
    expect(v6[0]).toBe(0xfd);
    expect(v6[15]).toBe(5);
    expect(ipToString(ipFromBytes(v6))).toBe('fd00::5');
  });
});
