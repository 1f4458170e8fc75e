// CNI spec versions: what kelp accepts and how versions compare.
import { CniCode, CniError } from './errors';

/**
 * Versions kelp accepts on ADD and advertises on VERSION. Keep equal to SUPPORTED_VERSIONS in
 * native/cni/kelp-cni.c, which answers VERSION without the agent.
 */
export const SUPPORTED_VERSIONS: readonly string[] = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];

/** The version assumed when a config has no cniVersion (libcni pkg/types/create). */
export const IMPLICIT_VERSION = '0.1.0';
/** The version answered in when the request carries none we can use. */
export const DEFAULT_VERSION = '1.1.0';

export interface VersionInfo {
  cniVersion: string;
  supportedVersions: string[];
}

const SEMVER = /^(\d+)\.(\d+)\.(\d+)$/;

export function parseVersion(v: string): [number, number, number] | undefined {
  const m = SEMVER.exec(v);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}

/** Numeric comparison of "x.y.z" strings; throws on anything else. */
export function compareVersions(a: string, b: string): number {
  const pa = parseVersion(a);
  const pb = parseVersion(b);
  if (!pa || !pb) throw new Error(`not a CNI version: ${pa ? b : a}`);
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pa[i] < pb[i] ? -1 : 1;
  return 0;
}

export function versionAtLeast(v: string, min: string): boolean {
  return parseVersion(v) !== undefined && compareVersions(v, min) >= 0;
}

/** Support is exact string membership, as in libcni: "1.0" is not "1.0.0". */
export function isSupportedVersion(v: string): boolean {
  return SUPPORTED_VERSIONS.includes(v);
}

/** Code 1 unless `v` is a supported version (libcni pkg/version/reconcile.go wording). */
export function requireSupportedVersion(v: string): void {
  if (!isSupportedVersion(v)) {
    throw new CniError(
      CniCode.IncompatibleVersion,
      'incompatible CNI versions',
      `config is "${v}", plugin supports [${SUPPORTED_VERSIONS.map((s) => `"${s}"`).join(' ')}]`,
    );
  }
}

/** The lowest config version each verb exists in (CHECK since 0.4.0, STATUS and GC since 1.1.0). */
export const VERB_MIN_VERSION: Readonly<Record<string, string>> = {
  CHECK: '0.4.0',
  STATUS: '1.1.0',
  GC: '1.1.0',
};

export function requireVerbVersion(command: string, v: string): void {
  const min = VERB_MIN_VERSION[command];
  if (min !== undefined && !versionAtLeast(v, min)) {
    throw new CniError(
      CniCode.IncompatibleVersion,
      `config version does not allow ${command}`,
      `${command} needs cniVersion ${min} or later, config is "${v}"`,
    );
  }
}

export function versionInfo(cniVersion: string): VersionInfo {
  return { cniVersion, supportedVersions: [...SUPPORTED_VERSIONS] };
}
