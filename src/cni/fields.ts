// Type checks for JSON documents that fail with a CniError naming the field.
import { ipFamily, tryParseCidr } from '../ipam/ip';
import { CniError } from './errors';

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * Field checks that throw `code` (7 for the network config, 6 for results). `undefined` and
 * `null` count as absent in every `opt*` check: Go's encoding/json, which most plugins and
 * runtimes use, reads null as the zero value.
 */
export class Check {
  constructor(readonly code: number) {}

  fail(path: string, want: string, value: unknown): never {
    throw new CniError(this.code, `invalid ${path}`, `must be ${want}, got ${describe(value)}`);
  }

  absent(v: unknown): v is undefined | null {
    return v === undefined || v === null;
  }

  record(v: unknown, path: string): Record<string, unknown> {
    if (!isRecord(v)) this.fail(path, 'an object', v);
    return v;
  }

  array(v: unknown, path: string): unknown[] {
    if (!Array.isArray(v)) this.fail(path, 'a list', v);
    return v;
  }

  string(v: unknown, path: string): string {
    if (typeof v !== 'string') this.fail(path, 'a string', v);
    return v;
  }

  optRecord(v: unknown, path: string): Record<string, unknown> | undefined {
    return this.absent(v) ? undefined : this.record(v, path);
  }

  optArray(v: unknown, path: string): unknown[] | undefined {
    return this.absent(v) ? undefined : this.array(v, path);
  }

  optString(v: unknown, path: string): string | undefined {
    return this.absent(v) ? undefined : this.string(v, path);
  }

  /** Like optString, but "" is also absent (Go's zero value for IPs and names). */
  optNonEmpty(v: unknown, path: string): string | undefined {
    const s = this.optString(v, path);
    return s === '' ? undefined : s;
  }

  optBool(v: unknown, path: string): boolean | undefined {
    if (this.absent(v)) return undefined;
    if (typeof v !== 'boolean') this.fail(path, 'true or false', v);
    return v;
  }

  optInt(v: unknown, path: string, min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER): number | undefined {
    if (this.absent(v)) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.fail(path, `an integer from ${min} to ${max}`, v);
    }
    return v;
  }

  optStringArray(v: unknown, path: string): string[] | undefined {
    const list = this.optArray(v, path);
    return list?.map((item, i) => this.string(item, `${path}[${i}]`));
  }

  ip(v: unknown, path: string): string {
    const s = this.string(v, path);
    if (ipFamily(s) === undefined) this.fail(path, 'an IP address', v);
    return s;
  }

  optIp(v: unknown, path: string): string | undefined {
    const s = this.optNonEmpty(v, path);
    return s === undefined ? undefined : this.ip(s, path);
  }

  cidr(v: unknown, path: string): string {
    const s = this.string(v, path);
    if (tryParseCidr(s) === undefined) this.fail(path, 'an address with prefix length (CIDR)', v);
    return s;
  }
}
