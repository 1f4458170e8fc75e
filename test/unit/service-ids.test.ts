// ServiceIds.snapshot keeps each allocator's JSON until its assignment changes: the text must stay
// what JSON.stringify of the whole snapshot gives, before and after changes and a restore.
import { describe, expect, it } from 'vitest';
import { ServiceIds } from '../../src/service/ids';

const whole = (ids: ServiceIds) =>
  JSON.stringify({ version: 1, svc: ids.svc.snapshot(), sets: ids.sets.snapshot(), backends: ids.backends.snapshot() });

describe('ServiceIds.snapshot', () => {
  it('is JSON.stringify of the three allocators, through changes, unchanged runs and a restore', () => {
    const ids = new ServiceIds();
    expect(ids.snapshot()).toBe(whole(ids));
    ids.svc.assign(['a/x', 'a/y']);
    ids.backends.assign(['10.0.0.1:80/TCP', '10.0.0.2:80/TCP']);
    const first = ids.snapshot();
    expect(first).toBe(whole(ids));
    // Nothing changed: the same text.
    ids.svc.assign(['a/y', 'a/x']);
    expect(ids.snapshot()).toBe(first);
    // One allocator changed: its part follows, the others' are kept.
    ids.backends.assign(['10.0.0.2:80/TCP', '10.0.0.3:80/TCP']);
    expect(ids.snapshot()).not.toBe(first);
    expect(ids.snapshot()).toBe(whole(ids));
    const copy = new ServiceIds();
    copy.restore(ids.snapshot());
    expect(copy.snapshot()).toBe(ids.snapshot());
    expect(copy.backends.get('10.0.0.3:80/TCP')).toBe(ids.backends.get('10.0.0.3:80/TCP'));
  });
});
