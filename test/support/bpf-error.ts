// The one error shape of src/bpf, caught for assertions on code, operation and message.
import { expect } from 'vitest';
import { KelpBpfError } from '../../src/bpf';

/** The KelpBpfError that `fn` throws; fails the test if it returns or throws anything else. */
export function caught(fn: () => unknown): KelpBpfError {
  let result: unknown;
  try {
    result = fn();
  } catch (e) {
    expect(e).toBeInstanceOf(KelpBpfError);
    return e as KelpBpfError;
  }
  throw new Error(`expected a KelpBpfError, got a result: ${String(result)}`);
}
