import { describe, expect, it } from 'vitest';
import { Condition, mergeCondition, MAX_CONDITION_MESSAGE } from '../../src/sources/kube/status';

const T0 = new Date('2026-12-01T10:00:00.123Z');
const T1 = new Date('2026-12-01T11:00:00Z');
const valid = (over: Partial<Condition> = {}): Condition => ({ type: 'Valid', status: 'True', reason: 'Valid', message: 'ok', observedGeneration: 1, ...over });
const programmed: Condition = { type: 'Programmed', status: 'True', reason: 'Programmed', message: 'enforced', lastTransitionTime: '2026-11-30T00:00:00Z' };

describe('mergeCondition', () => {
  it('adds a condition after the others, its transition time now (whole seconds, as metav1.Time)', () => {
    expect(mergeCondition([programmed], valid(), T0)).toEqual([programmed, { ...valid(), lastTransitionTime: '2026-12-01T10:00:00Z' }]);
  });

  it('says nothing when the list already holds the same condition, whatever its time', () => {
    const held = [{ ...valid(), lastTransitionTime: '2026-01-01T00:00:00Z' }, programmed];
    expect(mergeCondition(held, valid(), T1)).toBeUndefined();
  });

  it('a new generation or message with the same status keeps the transition time; a new status moves it', () => {
    const held = [{ ...valid(), lastTransitionTime: '2026-12-01T10:00:00Z' }, programmed];
    expect(mergeCondition(held, valid({ observedGeneration: 2 }), T1)).toEqual([{ ...valid({ observedGeneration: 2 }), lastTransitionTime: '2026-12-01T10:00:00Z' }, programmed]);
    const invalid = valid({ status: 'False', reason: 'Invalid', message: 'spec.subject: required, missing', observedGeneration: 2 });
    expect(mergeCondition(held, invalid, T1)).toEqual([{ ...invalid, lastTransitionTime: '2026-12-01T11:00:00Z' }, programmed]);
  });

  it('cuts a message to what the CRD takes, and the cut one then counts as the same', () => {
    const long = valid({ message: 'x'.repeat(MAX_CONDITION_MESSAGE + 10) });
    const written = mergeCondition([], long, T0)!;
    expect(written[0].message.length).toBe(MAX_CONDITION_MESSAGE);
    expect(written[0].message.endsWith('…')).toBe(true);
    expect(mergeCondition(written, long, T1)).toBeUndefined();
  });
});
