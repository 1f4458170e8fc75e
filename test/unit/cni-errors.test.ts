import { describe, expect, it } from 'vitest';
import { CniCode, CniError, toCniError } from '../../src/cni/errors';

describe('CniError', () => {
  it('uses the spec codes', () => {
    expect(CniCode).toMatchObject({
      IncompatibleVersion: 1,
      UnsupportedField: 2,
      UnknownContainer: 3,
      InvalidEnv: 4,
      IoFailure: 5,
      DecodeFailure: 6,
      InvalidConfig: 7,
      TryAgainLater: 11,
      NotAvailable: 50,
      NotAvailableDegraded: 51,
      FirstPluginCode: 100,
    });
  });

  it.each([
    [new CniError(7, 'invalid mtu', 'must be an integer'), { cniVersion: '0.4.0', code: 7, msg: 'invalid mtu', details: 'must be an integer' }],
    [new CniError(11, 'busy'), { cniVersion: '0.4.0', code: 11, msg: 'busy' }],
    [new CniError(11, 'busy', ''), { cniVersion: '0.4.0', code: 11, msg: 'busy' }],
  ])('serialises %s', (err, want) => {
    expect(err.toCniJson('0.4.0')).toEqual(want);
    expect(JSON.parse(JSON.stringify(err.toCniJson('0.4.0')))).toEqual(want);
  });

  it('is an Error whose message has the details', () => {
    const err = new CniError(4, 'invalid CNI_IFNAME', 'too long');
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toBe('invalid CNI_IFNAME: too long');
  });

  it.each([0, -1, 1.5, NaN])('refuses code %s', (c) => {
    expect(() => new CniError(c, 'x')).toThrow(RangeError);
  });

  it('withVersion keeps everything else', () => {
    const err = new CniError(6, 'bad', 'json').withVersion('0.3.1');
    expect([err.code, err.msg, err.details, err.cniVersion]).toEqual([6, 'bad', 'json', '0.3.1']);
  });

  it('toCniError passes CniErrors through and wraps the rest as 999', () => {
    const own = new CniError(3, 'unknown container');
    expect(toCniError(own)).toBe(own);
    expect(toCniError(new Error('boom')).toCniJson('1.1.0')).toEqual({ cniVersion: '1.1.0', code: 999, msg: 'kelp internal error', details: 'boom' });
    expect(toCniError('text').details).toBe('text');
  });
});
