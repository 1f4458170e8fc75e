import { describe, expect, it } from 'vitest';
import { cidrContains, ipFamily, ipToBigInt, parseCidr, parseIpOrCidr } from '../../src/cni/ip';

describe('CNI address helpers', () => {
  it.each([
    ['10.0.0.1', 4],
    ['fd00::1', 6],
    ['::ffff:10.0.0.1', 6],
    ['fe80::1%eth0', undefined],
    ['10.0.0', undefined],
    ['010.0.0.1', undefined],
    ['', undefined],
  ])('ipFamily(%j) = %s', (s, want) => {
    expect(ipFamily(s)).toBe(want);
  });

  it.each([
    ['10.0.0.5/24', { ip: '10.0.0.5', prefix: 24, family: 4 }],
    ['fd00::/64', { ip: 'fd00::', prefix: 64, family: 6 }],
    ['::/0', { ip: '::', prefix: 0, family: 6 }],
    ['10.0.0.0/33', undefined],
    ['fd00::/129', undefined],
    ['10.0.0.0/', undefined],
    ['10.0.0.0/+8', undefined],
    ['10.0.0.0', undefined],
  ])('parseCidr(%j)', (s, want) => {
    expect(parseCidr(s)).toEqual(want);
  });

  it('parseIpOrCidr gives a bare address a host prefix', () => {
    expect(parseIpOrCidr('10.0.0.5')).toEqual({ ip: '10.0.0.5', prefix: 32, family: 4 });
    expect(parseIpOrCidr('fd00::5')).toEqual({ ip: 'fd00::5', prefix: 128, family: 6 });
  });

  it.each([
    ['0.0.0.1', 1n],
    ['10.1.2.3', 0x0a010203n],
    ['::1', 1n],
    ['fd00::', 0xfd00n << 112n],
    ['1:2:3:4:5:6:7:8', 0x00010002000300040005000600070008n],
    ['::ffff:10.0.0.1', 0xffff0a000001n],
    ['1::', 1n << 112n],
  ])('ipToBigInt(%j)', (ip, want) => {
    expect(ipToBigInt(ip)).toBe(want);
  });

  it.each([
    ['10.0.0.0/24', '10.0.0.255', true],
    ['10.0.0.0/24', '10.0.1.0', false],
    ['10.0.0.7/24', '10.0.0.1', true],
    ['0.0.0.0/0', '192.168.1.1', true],
    ['fd00::/64', 'fd00::ffff:1', true],
    ['fd00::/64', 'fd00:0:0:1::1', false],
    ['10.0.0.0/8', 'fd00::1', false],
  ])('%s contains %s: %s', (cidr, ip, want) => {
    expect(cidrContains(parseCidr(cidr)!, ip)).toBe(want);
  });
});
