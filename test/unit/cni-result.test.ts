import { describe, expect, it } from 'vitest';
import { CniError } from '../../src/cni/errors';
import { CniResult, emptyResult, formatResult, parseResult } from '../../src/cni/result';

const NS = '/var/run/netns/cni-1234';

const model: CniResult = {
  interfaces: [
    { name: 'kelp1a2b3c', mac: 'aa:bb:cc:00:00:01', mtu: 1500 },
    { name: 'eth0', mac: 'c2:00:00:00:00:05', mtu: 1500, sandbox: NS },
  ],
  ips: [
    { address: '10.22.0.5/24', gateway: '10.22.0.1', interface: 1 },
    { address: 'fd00::5/64', interface: 1 },
    { address: '10.23.0.5/24' },
  ],
  routes: [
    { dst: '0.0.0.0/0', gw: '10.22.0.1', mtu: 1400, table: 0 },
    { dst: '::/0' },
  ],
  dns: { nameservers: ['10.96.0.10'], domain: '', search: ['svc.cluster.local'], options: [] },
};

const v1Json = (cniVersion: string) => ({
  cniVersion,
  interfaces: [
    { name: 'kelp1a2b3c', mac: 'aa:bb:cc:00:00:01', mtu: 1500 },
    { name: 'eth0', mac: 'c2:00:00:00:00:05', mtu: 1500, sandbox: NS },
  ],
  ips: [
    { interface: 1, address: '10.22.0.5/24', gateway: '10.22.0.1' },
    { interface: 1, address: 'fd00::5/64' },
    { address: '10.23.0.5/24' },
  ],
  routes: [{ dst: '0.0.0.0/0', gw: '10.22.0.1', mtu: 1400, table: 0 }, { dst: '::/0' }],
  dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] },
});

const v04Json = (cniVersion: string) => ({
  cniVersion,
  interfaces: [
    { name: 'kelp1a2b3c', mac: 'aa:bb:cc:00:00:01' },
    { name: 'eth0', mac: 'c2:00:00:00:00:05', sandbox: NS },
  ],
  ips: [
    { version: '4', interface: 1, address: '10.22.0.5/24', gateway: '10.22.0.1' },
    { version: '6', interface: 1, address: 'fd00::5/64' },
    { version: '4', address: '10.23.0.5/24' },
  ],
  routes: [{ dst: '0.0.0.0/0', gw: '10.22.0.1' }, { dst: '::/0' }],
  dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] },
});

const legacyJson = (cniVersion: string) => ({
  cniVersion,
  ip4: { ip: '10.22.0.5/24', gateway: '10.22.0.1', routes: [{ dst: '0.0.0.0/0', gw: '10.22.0.1' }] },
  ip6: { ip: 'fd00::5/64', routes: [{ dst: '::/0' }] },
  dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] },
});

function cniError(fn: () => unknown): CniError {
  try {
    fn();
  } catch (e) {
    if (e instanceof CniError) return e;
    throw e;
  }
  throw new Error('expected a CniError');
}

describe('formatResult', () => {
  it.each([
    ['1.1.0', v1Json('1.1.0')],
    ['1.0.0', v1Json('1.0.0')],
    ['0.4.0', v04Json('0.4.0')],
    ['0.3.1', v04Json('0.3.1')],
    ['0.3.0', v04Json('0.3.0')],
    ['0.2.0', legacyJson('0.2.0')],
    ['0.1.0', legacyJson('0.1.0')],
  ])('%s', (version, want) => {
    const out = formatResult(model, version);
    expect(out).toEqual(want);
    // Absent fields are absent, not undefined, so `has("version")`-style checks work.
    expect(JSON.parse(JSON.stringify(out))).toStrictEqual(want);
  });

  it('omits empty lists and an empty dns', () => {
    expect(formatResult(emptyResult(), '1.1.0')).toStrictEqual({ cniVersion: '1.1.0' });
    expect(formatResult({ ...emptyResult(), ips: [{ address: '10.0.0.2/32' }] }, '0.4.0')).toStrictEqual({
      cniVersion: '0.4.0',
      ips: [{ version: '4', address: '10.0.0.2/32' }],
    });
  });

  it.each(['1.2.0', '1.0', '0.5.0', ''])('refuses a version without a format (%j) with code 1', (v) => {
    expect(cniError(() => formatResult(model, v)).code).toBe(1);
  });

  it('cannot write 0.2.0 without an address', () => {
    const err = cniError(() => formatResult({ ...model, ips: [] }, '0.2.0'));
    expect([err.code, err.details]).toEqual([1, 'no valid IP addresses']);
  });
});

describe('parseResult', () => {
  it.each([
    ['1.1.0', v1Json('1.1.0'), model],
    [
      '0.4.0',
      v04Json('0.4.0'),
      {
        ...model,
        interfaces: [
          { name: 'kelp1a2b3c', mac: 'aa:bb:cc:00:00:01' },
          { name: 'eth0', mac: 'c2:00:00:00:00:05', sandbox: NS },
        ],
        routes: [{ dst: '0.0.0.0/0', gw: '10.22.0.1' }, { dst: '::/0' }],
      },
    ],
  ])('reads its own %s output back', (version, doc, want) => {
    const parsed = parseResult(doc, version);
    expect(parsed).toEqual({ ...want, dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] } });
  });

  it('reads the legacy layout back (first address of each family)', () => {
    expect(parseResult(legacyJson('0.2.0'), '1.0.0')).toEqual({
      interfaces: [],
      ips: [{ address: '10.22.0.5/24', gateway: '10.22.0.1' }, { address: 'fd00::5/64' }],
      routes: [{ dst: '0.0.0.0/0', gw: '10.22.0.1' }, { dst: '::/0' }],
      dns: { nameservers: ['10.96.0.10'], search: ['svc.cluster.local'] },
    });
  });

  it.each([
    ['no cniVersion, "dns": {} (Debian 1.1.1 plugins)', { ips: [{ address: '10.0.0.2/24' }], dns: {} }],
    ['a cniVersion other than the config', { cniVersion: '0.4.0', ips: [{ version: '4', address: '10.0.0.2/24' }] }],
    ['nulls for optional fields', { interfaces: null, ips: [{ address: '10.0.0.2/24', gateway: null, interface: null }], routes: null, dns: null }],
    ['empty gateway (Go zero value)', { ips: [{ address: '10.0.0.2/24', gateway: '' }] }],
    ['interface -1 (older plugins)', { ips: [{ address: '10.0.0.2/24', interface: -1 }] }],
    ['unknown fields', { ips: [{ address: '10.0.0.2/24', extra: 1 }], future: true }],
  ])('accepts %s', (_name, doc) => {
    expect(parseResult(doc, '1.0.0')).toEqual({ interfaces: [], ips: [{ address: '10.0.0.2/24' }], routes: [], dns: {} });
  });

  it('keeps route table and scope 0, drops zero mtu', () => {
    expect(parseResult({ routes: [{ dst: '10.0.0.0/8', table: 0, scope: 0, mtu: 0 }] }, '1.1.0').routes).toStrictEqual([
      { dst: '10.0.0.0/8', gw: undefined, mtu: undefined, advmss: undefined, priority: undefined, table: 0, scope: 0 },
    ]);
  });

  it.each([
    [[], 'invalid prevResult'],
    ['{}', 'invalid prevResult'],
    [{ interfaces: {} }, 'invalid prevResult.interfaces'],
    [{ interfaces: ['eth0'] }, 'invalid prevResult.interfaces[0]'],
    [{ interfaces: [{ name: 5 }] }, 'invalid prevResult.interfaces[0].name'],
    [{ interfaces: [{ name: 'eth0', mtu: '1500' }] }, 'invalid prevResult.interfaces[0].mtu'],
    [{ ips: [{}] }, 'invalid prevResult.ips[0].address'],
    [{ ips: [{ address: '10.0.0.2' }] }, 'invalid prevResult.ips[0].address'],
    [{ ips: [{ address: '10.0.0.2/24', gateway: 'x' }] }, 'invalid prevResult.ips[0].gateway'],
    [{ ips: [{ address: '10.0.0.2/24', interface: 0.5 }] }, 'invalid prevResult.ips[0].interface'],
    [{ routes: [{ gw: '10.0.0.1' }] }, 'invalid prevResult.routes[0].dst'],
    [{ routes: [{ dst: '0.0.0.0/0', scope: 256 }] }, 'invalid prevResult.routes[0].scope'],
    [{ dns: { nameservers: '10.0.0.1' } }, 'invalid prevResult.dns.nameservers'],
    [{ dns: { search: [1] } }, 'invalid prevResult.dns.search[0]'],
    [{ ip4: { ip: 'nope' } }, 'invalid prevResult.ip4.ip'],
  ])('%j → code 6 "%s"', (doc, msg) => {
    const err = cniError(() => parseResult(doc, '1.0.0'));
    expect(err.code).toBe(6);
    expect(err.msg).toBe(msg);
  });
});
