import { describe, expect, it } from 'vitest';
import { CniError } from '../../src/cni/errors';
import {
  compareVersions,
  isSupportedVersion,
  requireSupportedVersion,
  requireVerbVersion,
  SUPPORTED_VERSIONS,
  versionAtLeast,
  versionInfo,
} from '../../src/cni/version';

function code(fn: () => void): number | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    if (e instanceof CniError) return e.code;
    throw e;
  }
}

describe('versions', () => {
  it('supports exactly the recommended list', () => {
    expect(SUPPORTED_VERSIONS).toEqual(['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
    expect(versionInfo('0.4.0')).toEqual({ cniVersion: '0.4.0', supportedVersions: [...SUPPORTED_VERSIONS] });
  });

  it.each([
    ['0.3.0', '0.3.1', -1],
    ['0.4.0', '0.3.1', 1],
    ['1.0.0', '1.0.0', 0],
    ['0.10.0', '0.9.0', 1],
    ['1.1.0', '1.0.10', 1],
  ])('compare %s %s → %i', (a, b, want) => {
    expect(compareVersions(a, b)).toBe(want);
  });

  it('compareVersions refuses non-versions', () => {
    expect(() => compareVersions('1.0', '1.0.0')).toThrow(/not a CNI version: 1.0/);
  });

  it.each([
    ['0.4.0', '0.4.0', true],
    ['0.3.1', '0.4.0', false],
    ['1.0', '0.4.0', false],
    ['2.0.0', '1.1.0', true],
  ])('versionAtLeast(%s, %s) = %s', (v, min, want) => {
    expect(versionAtLeast(v, min)).toBe(want);
  });

  it.each([
    ['1.1.0', true],
    ['0.3.0', true],
    ['1.0', false],
    ['0.2.0', false],
    ['0.1.0', false],
    ['9.9.9', false],
    [' 1.0.0', false],
  ])('isSupportedVersion(%j) = %s (exact membership)', (v, want) => {
    expect(isSupportedVersion(v)).toBe(want);
    expect(code(() => requireSupportedVersion(v))).toBe(want ? undefined : 1);
  });

  it('names both sides in the incompatible-version details', () => {
    try {
      requireSupportedVersion('9.9.9');
    } catch (e) {
      expect((e as CniError).details).toBe('config is "9.9.9", plugin supports ["0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]');
    }
    expect.assertions(1);
  });

  it.each([
    ['CHECK', '0.3.1', 1],
    ['CHECK', '0.4.0', undefined],
    ['STATUS', '1.0.0', 1],
    ['STATUS', '1.1.0', undefined],
    ['GC', '0.4.0', 1],
    ['GC', '1.1.0', undefined],
    ['ADD', '0.3.0', undefined],
    ['DEL', '0.3.0', undefined],
  ])('%s with config %s → code %s', (verb, v, want) => {
    expect(code(() => requireVerbVersion(verb, v))).toBe(want);
  });
});
