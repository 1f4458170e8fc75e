// Address fields (src/sources/objects/net.ts): the IPv4 fast path accepts, rejects and spells
// exactly as the general parser (src/ipam/ip.ts) does, special ranges included.
import { describe, expect, it } from 'vitest';
import { ipToString, tryParseIp } from '../../src/ipam/ip';
import { nonSpecialIpField, parseIpField } from '../../src/sources/objects/net';

const CASES = [
  '1.2.3.4', '10.96.0.10', '255.255.255.255', '0.0.0.0', '0.1.2.3', '100.64.0.1', '199.1.0.200',
  '01.2.3.4', '1.2.3.04', '00.0.0.0', '1.2.3.00', '256.1.1.1', '1.2.3.256', '999.1.1.1', '1.2.3.1000',
  '1.2.3', '1.2.3.4.5', '1..2.3', '.1.2.3', '1.2.3.', '', '.', '...', ' 1.2.3.4', '1.2.3.4 ', '1.2.3.4/32',
  '1e1.1.1.1', '0x1.1.1.1', '+1.1.1.1', '１.2.3.4', '127.0.0.1', '127.255.255.254', '126.255.255.255', '128.0.0.1',
  '169.254.0.1', '169.253.255.255', '169.255.0.0', '224.0.0.5', '224.0.0.255', '224.0.1.0', '223.255.255.255',
  '::1', '::', 'fe80::1', 'ff02::1', '2001:db8::1', '::ffff:1.2.3.4', '::ffff:01.2.3.4', '2001:DB8::1',
];

/** What parseIpField and nonSpecialIpField returned before the fast path, from the general parser. */
function slow(s: string): { text: string; family: 4 | 6; value: bigint } | undefined {
  const ip = tryParseIp(s);
  return ip && { text: ipToString(ip), family: ip.family, value: ip.value };
}

const outcome = (fn: () => unknown) => {
  try {
    return { ok: fn() };
  } catch (e) {
    return { error: (e as Error).message };
  }
};

describe('address fields', () => {
  it('parseIpField: the same address, family, value and error as the general parser', () => {
    for (const s of CASES) {
      const want = slow(s);
      const got = outcome(() => parseIpField(s, 'f'));
      expect(got, s).toEqual(want ? { ok: want } : { error: `f: ${JSON.stringify(s)} must be a valid IP address` });
    }
  });

  it('nonSpecialIpField: special ranges refused with the same message on both paths, for each family asked', () => {
    const special = (ip: { family: 4 | 6; value: bigint }): string | undefined => {
      const v = ip.value;
      if (ip.family === 6) return undefined;
      if (v === 0n) return 'may not be unspecified (0.0.0.0, ::)';
      if (v >> 24n === 127n) return 'may not be in the loopback range (127.0.0.0/8, ::1/128)';
      if (v >> 16n === 0xa9fen) return 'may not be in the link-local range (169.254.0.0/16, fe80::/10)';
      if (v >> 8n === 0xe00000n) return 'may not be in the link-local multicast range (224.0.0.0/24, ffx2::/16)';
      return undefined;
    };
    for (const s of CASES) {
      const ip = slow(s);
      if (!ip || ip.family !== 4) continue;
      for (const family of [undefined, 4, 6] as const) {
        const got = outcome(() => nonSpecialIpField(s, 'f', family));
        const reason = family === 6 ? 'must be an IPv6 address' : special(ip);
        expect(got, `${s} as ${family}`).toEqual(reason ? { error: `f: ${JSON.stringify(ip.text)} ${reason}` } : { ok: ip.text });
      }
    }
  });
});
