import { describe, expect, it } from 'vitest';
import {
  DEFAULT_DATA_DIR, IpamError, IpRequestSources, ipToString, parseIpamConfig, rangeSetToString, requestedIps,
} from '../../src/ipam';

const summary = (raw: unknown) => {
  const c = parseIpamConfig('net', raw);
  return c.rangeSets.map((set) => set.map((r) => ({
    range: `${ipToString(r.rangeStart)}-${ipToString(r.rangeEnd)}`, gateway: ipToString(r.gateway),
  })));
};

describe('parseIpamConfig: defaults', () => {
  it('legacy single range: gateway .1, range .1 to broadcast-1 (gateway skipped at allocation)', () => {
    expect(summary({ type: 'kelp', subnet: '10.244.0.0/24' }))
      .toEqual([[{ range: '10.244.0.1-10.244.0.254', gateway: '10.244.0.1' }]]);
  });

  it('keeps explicit bounds and gateway', () => {
    expect(summary({ subnet: '10.0.0.0/16', rangeStart: '10.0.1.10', rangeEnd: '10.0.1.20', gateway: '10.0.255.254' }))
      .toEqual([[{ range: '10.0.1.10-10.0.1.20', gateway: '10.0.255.254' }]]);
  });

  it('puts the legacy range before `ranges`, like host-local', () => {
    const sets = summary({
      subnet: '10.1.0.0/24',
      ranges: [[{ subnet: '10.2.0.0/24' }, { subnet: '10.3.0.0/30' }], [{ subnet: 'fd00::/120' }]],
    });
    expect(sets).toEqual([
      [{ range: '10.1.0.1-10.1.0.254', gateway: '10.1.0.1' }],
      [{ range: '10.2.0.1-10.2.0.254', gateway: '10.2.0.1' }, { range: '10.3.0.1-10.3.0.2', gateway: '10.3.0.1' }],
      // No broadcast in IPv6: the range ends at the last address.
      [{ range: 'fd00::1-fd00::ff', gateway: 'fd00::1' }],
    ]);
  });

  it('parses routes, reserved and dataDir', () => {
    const c = parseIpamConfig('net', {
      subnet: '10.0.0.0/24',
      routes: [{ dst: '0.0.0.0/0' }, { dst: '192.168.0.0/16', gw: '10.0.0.254' }],
      reserved: ['10.0.0.7', '10.0.0.64/26'],
      dataDir: '/tmp/x',
    });
    expect(c.routes).toEqual([{ dst: '0.0.0.0/0' }, { dst: '192.168.0.0/16', gw: '10.0.0.254' }]);
    expect(c.reserved.map((r) => r.prefix)).toEqual([32, 26]);
    expect(c.dataDir).toBe('/tmp/x');
    expect(parseIpamConfig('net', { subnet: '10.0.0.0/24' }).dataDir).toBe(DEFAULT_DATA_DIR);
    expect(rangeSetToString(c.rangeSets[0])).toBe('10.0.0.1-10.0.0.254');
  });
});

describe('parseIpamConfig: validation names the field', () => {
  it.each<[string, unknown, RegExp]>([
    ['not an object', 'x', /ipam must be an object/],
    ['no ranges', { type: 'kelp' }, /no IP ranges specified/],
    ['bad CIDR', { subnet: '10.0.0.0/33' }, /subnet "10.0.0.0\/33" is not a CIDR/],
    ['host bits', { subnet: '10.0.0.5/24' }, /subnet 10.0.0.5\/24 has host bits set; the network is 10.0.0.0\/24/],
    ['too small', { subnet: '10.0.0.0/31' }, /subnet 10.0.0.0\/31 is too small/],
    ['rangeStart outside', { subnet: '10.0.0.0/24', rangeStart: '10.0.1.1' }, /^ipam config: rangeStart 10.0.1.1 is outside subnet 10.0.0.0\/24/],
    ['rangeEnd outside', { ranges: [[{ subnet: '10.0.0.0/24', rangeEnd: '10.1.0.1' }]] }, /ranges\[0\]\[0\].rangeEnd 10.1.0.1 is outside/],
    ['rangeStart = network', { subnet: '10.0.0.0/24', rangeStart: '10.0.0.0' }, /rangeStart 10.0.0.0 is the network address/],
    ['rangeEnd = broadcast', { subnet: '10.0.0.0/24', rangeEnd: '10.0.0.255' }, /rangeEnd 10.0.0.255 is the broadcast address/],
    ['start after end', { subnet: '10.0.0.0/24', rangeStart: '10.0.0.9', rangeEnd: '10.0.0.8' }, /rangeStart 10.0.0.9 is after rangeEnd 10.0.0.8/],
    ['gateway outside', { ranges: [[{ subnet: '10.0.0.0/24' }, { subnet: '10.0.1.0/24', gateway: '10.0.0.1' }]] },
      /ranges\[0\]\[1\].gateway 10.0.0.1 is outside subnet 10.0.1.0\/24/],
    ['bad IP', { subnet: '10.0.0.0/24', gateway: '10.0.0.300' }, /gateway "10.0.0.300" is not an IP address/],
    ['wrong type', { subnet: 24 }, /subnet must be a string/],
    ['stray legacy field', { rangeStart: '10.0.0.1', ranges: [[{ subnet: '10.0.0.0/24' }]] }, /rangeStart is set but subnet is not/],
    ['ranges not a list', { ranges: { subnet: '10.0.0.0/24' } }, /ranges must be a list/],
    ['empty range set', { ranges: [[]] }, /ranges\[0\] must be a non-empty list/],
    ['missing subnet', { ranges: [[{ rangeStart: '10.0.0.1' }]] }, /ranges\[0\]\[0\].subnet is required/],
    ['overlap in a set', { ranges: [[{ subnet: '10.0.0.0/24' }, { subnet: '10.0.0.0/25' }]] },
      /ranges\[0\]\[0\] \(10.0.0.1-10.0.0.254\) overlaps ranges\[0\]\[1\] \(10.0.0.1-10.0.0.126\)/],
    ['overlap across sets', { subnet: '10.0.0.0/16', ranges: [[{ subnet: '10.0.5.0/24' }]] },
      /subnet \(10.0.0.1-10.0.255.254\) overlaps ranges\[0\]\[0\]/],
    ['mixed families', { ranges: [[{ subnet: '10.0.0.0/24' }], [{ subnet: '10.1.0.0/24' }, { subnet: 'fd00::/64' }]] },
      /ranges\[1\] mixes IPv4 and IPv6/],
    ['bad reserved', { subnet: '10.0.0.0/24', reserved: ['10.0.0.1', 'nope'] }, /reserved\[1\] "nope" is neither an IP nor a CIDR/],
    ['bad route', { subnet: '10.0.0.0/24', routes: [{ dst: '0.0.0.0/0' }, { dst: '10.0.0.1' }] }, /routes\[1\].dst "10.0.0.1" is not a CIDR/],
    ['route gw family', { subnet: '10.0.0.0/24', routes: [{ dst: '::/0', gw: '10.0.0.1' }] }, /routes\[0\].gw 10.0.0.1 is not of the family/],
  ])('%s', (_name, raw, message) => {
    let err: unknown;
    try {
      parseIpamConfig('net', raw);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(IpamError);
    expect((err as IpamError).kind).toBe('invalid');
    expect((err as IpamError).message).toMatch(message);
  });

  it('allows disjoint ranges of one subnet, and rejects unsafe network names', () => {
    expect(() => parseIpamConfig('net', {
      ranges: [[{ subnet: '10.0.0.0/24', rangeEnd: '10.0.0.99' }], [{ subnet: '10.0.0.0/24', rangeStart: '10.0.0.100' }]],
    })).not.toThrow();
    for (const name of ['', '..', 'a/b', '-x']) {
      expect(() => parseIpamConfig(name, { subnet: '10.0.0.0/24' })).toThrow(/not a valid CNI network name/);
    }
  });
});

describe('requestedIps', () => {
  it('collects CNI_ARGS IP=, runtimeConfig.ips and args.cni.ips, canonical and deduplicated', () => {
    expect(requestedIps({
      cniArgs: 'IgnoreUnknown=1;IP=10.0.0.5,fd00:0::5;K8S_POD_NAME=x',
      runtimeConfig: { ips: ['10.0.0.5/24', '10.1.0.9'] },
      args: { cni: { ips: ['fd00::5'] } },
    })).toEqual(['10.0.0.5', 'fd00::5', '10.1.0.9']);
    expect(requestedIps({})).toEqual([]);
    expect(requestedIps({ cniArgs: 'K8S_POD_IP=1.2.3.4' })).toEqual([]);
  });

  it.each<[IpRequestSources, RegExp]>([
    [{ cniArgs: 'IP=10.0.0.300' }, /CNI_ARGS IP: "10.0.0.300" is not an IP address/],
    [{ runtimeConfig: { ips: '10.0.0.1' } }, /runtimeConfig.ips must be a list/],
    [{ args: { cni: { ips: ['x'] } } }, /args.cni.ips: "x" is not an IP address/],
  ])('rejects %j', (src, message) => {
    expect(() => requestedIps(src)).toThrow(message);
  });
});
