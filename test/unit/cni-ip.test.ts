// The address forms of CNI documents (ipam subnets and ranges, results, CNI_ARGS `IP=`, the `ips`
// capability), as src/cni reads them through the shared src/ipam/ip.
import { describe, expect, it } from 'vitest';
import { ipFamily, parseIpOrCidr, tryParseCidr } from '../../src/ipam/ip';

describe('CNI address forms', () => {
  it.each([
    ['10.0.0.1', 4],
    ['fd00::1', 6],
    ['::ffff:10.0.0.1', 6],
    ['fe80::1%eth0', undefined],
    ['10.0.0', undefined],
    ['010.0.0.1', undefined],
    ['10.0.0.1/32', undefined],
    ['', undefined],
  ])('ipFamily(%j) = %s', (s, want) => {
    expect(ipFamily(s)).toBe(want);
  });

  it.each([
    ['10.0.0.5/24', { family: 4, address: 0x0a000005n, prefix: 24 }],
    ['fd00::/64', { family: 6, address: 0xfd00n << 112n, prefix: 64 }],
    ['::/0', { family: 6, address: 0n, prefix: 0 }],
    ['10.0.0.0/33', undefined],
    ['fd00::/129', undefined],
    ['10.0.0.0/', undefined],
    ['10.0.0.0/+8', undefined],
    ['10.0.0.0', undefined],
  ])('tryParseCidr(%j): host bits kept, undefined when invalid', (s, want) => {
    expect(tryParseCidr(s)).toEqual(want);
  });

  it('parseIpOrCidr gives a bare address a host prefix', () => {
    expect(parseIpOrCidr('10.0.0.5')).toEqual({ family: 4, address: 0x0a000005n, prefix: 32 });
    expect(parseIpOrCidr('fd00::5')).toEqual({ family: 6, address: (0xfd00n << 112n) | 5n, prefix: 128 });
    expect(parseIpOrCidr('10.0.0.5/24')).toEqual({ family: 4, address: 0x0a000005n, prefix: 24 });
    expect(parseIpOrCidr('10.0.0.5/33')).toBeUndefined();
    expect(parseIpOrCidr('10.0.0.300')).toBeUndefined();
  });
});
