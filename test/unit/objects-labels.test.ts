import { describe, expect, it } from 'vitest';
import { LabelSelector, selectorMatches, selectsEverything, validateLabelSelector } from '../../src/sources/objects';
import { rng } from '../support/rng';

// The upstream meaning, written out plainly and separately from the code under test: matchLabels
// are `key In (value)` requirements; every requirement must hold; a key that is absent satisfies
// NotIn and DoesNotExist and nothing else.
function referenceMatches(doc: { matchLabels?: Record<string, string> | null; matchExpressions?: Array<{ key: string; operator: string; values?: string[] | null }> | null }, labels: Record<string, string>): boolean {
  const requirements = [
    ...Object.entries(doc.matchLabels ?? {}).map(([key, value]) => ({ key, operator: 'In', values: [value] })),
    ...(doc.matchExpressions ?? []).map((e) => ({ key: e.key, operator: e.operator, values: e.values ?? [] })),
  ];
  const keys = Object.keys(labels);
  let ok = true;
  for (const r of requirements) {
    const present = keys.includes(r.key);
    const inValues = present && r.values.some((v) => v === labels[r.key]);
    if (r.operator === 'In') ok = ok && inValues;
    else if (r.operator === 'NotIn') ok = ok && !inValues;
    else if (r.operator === 'Exists') ok = ok && present;
    else if (r.operator === 'DoesNotExist') ok = ok && !present;
    else throw new Error(`reference: unknown operator ${r.operator}`);
  }
  return ok;
}

// Few keys and values, so that generated selectors and label sets collide often.
const KEYS = ['app', 'tier', 'kelp.dev/role', 'env', 'x'];
const VALUES = ['web', 'db', 'a', '', 'prod', 'v1.2'];
const OPERATORS = ['In', 'NotIn', 'Exists', 'DoesNotExist'] as const;

function generate(seed: number) {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const labels: Record<string, string> = {};
  for (const k of KEYS) if (r() < 0.5) labels[k] = pick(VALUES);
  const doc: { matchLabels?: Record<string, string> | null; matchExpressions?: Array<{ key: string; operator: string; values?: string[] | null }> | null } = {};
  const shape = r();
  if (shape < 0.1) doc.matchLabels = null;
  else if (shape < 0.7) {
    doc.matchLabels = {};
    for (let i = Math.floor(r() * 3); i > 0; i--) doc.matchLabels[pick(KEYS)] = pick(VALUES);
  }
  if (r() < 0.8) {
    doc.matchExpressions = [];
    for (let i = Math.floor(r() * 4); i > 0; i--) {
      const operator = pick(OPERATORS);
      const key = pick(KEYS);
      if (operator === 'In' || operator === 'NotIn') {
        const values = Array.from({ length: 1 + Math.floor(r() * 3) }, () => pick(VALUES));
        doc.matchExpressions.push({ key, operator, values });
      } else {
        // Exists/DoesNotExist take no values: absent, null or [] all say so.
        const form = r();
        doc.matchExpressions.push(form < 0.33 ? { key, operator } : form < 0.66 ? { key, operator, values: null } : { key, operator, values: [] });
      }
    }
  }
  return { doc, labels };
}

describe('selectorMatches', () => {
  it('agrees with the reference on generated selectors and label sets', () => {
    let matched = 0;
    let n = 0;
    for (let seed = 1; seed <= 2000; seed++) {
      const { doc, labels } = generate(seed);
      const selector = validateLabelSelector(doc, 'spec.podSelector');
      const want = referenceMatches(doc, labels);
      const got = selectorMatches(selector, labels);
      if (got !== want) throw new Error(`seed ${seed}: selector ${JSON.stringify(doc)} on ${JSON.stringify(labels)}: got ${got}, reference ${want}`);
      if (got) matched++;
      n++;
    }
    // The generator must exercise both outcomes, or the agreement proves little.
    expect(n).toBe(2000);
    expect(matched).toBeGreaterThan(200);
    expect(n - matched).toBeGreaterThan(200);
  });

  const sel = (doc: unknown): LabelSelector => validateLabelSelector(doc, 's');
  const cases: Array<[string, unknown, Record<string, string>, boolean]> = [
    ['empty selector, no labels', {}, {}, true],
    ['empty selector, any labels', { matchLabels: null, matchExpressions: [] }, { app: 'web' }, true],
    ['matchLabels equal', { matchLabels: { app: 'web' } }, { app: 'web', tier: 'x' }, true],
    ['matchLabels other value', { matchLabels: { app: 'web' } }, { app: 'db' }, false],
    ['matchLabels missing key', { matchLabels: { app: 'web' } }, {}, false],
    ['matchLabels empty value needs the key', { matchLabels: { app: '' } }, {}, false],
    ['matchLabels empty value present', { matchLabels: { app: '' } }, { app: '' }, true],
    ['In', { matchExpressions: [{ key: 'app', operator: 'In', values: ['web', 'db'] }] }, { app: 'db' }, true],
    ['In, key absent', { matchExpressions: [{ key: 'app', operator: 'In', values: ['web'] }] }, {}, false],
    ['NotIn, key absent matches', { matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['web'] }] }, {}, true],
    ['NotIn, value listed', { matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['web'] }] }, { app: 'web' }, false],
    ['NotIn, other value', { matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['web'] }] }, { app: 'db' }, true],
    ['Exists with empty value', { matchExpressions: [{ key: 'app', operator: 'Exists' }] }, { app: '' }, true],
    ['DoesNotExist, key absent', { matchExpressions: [{ key: 'app', operator: 'DoesNotExist' }] }, { tier: 'x' }, true],
    ['DoesNotExist, key present', { matchExpressions: [{ key: 'app', operator: 'DoesNotExist' }] }, { app: 'web' }, false],
    ['AND of labels and expressions', { matchLabels: { app: 'web' }, matchExpressions: [{ key: 'env', operator: 'Exists' }] }, { app: 'web' }, false],
    ['a label named like an Object property is not present', { matchExpressions: [{ key: 'constructor', operator: 'Exists' }] }, {}, false],
  ];
  it.each(cases)('%s', (_name, doc, labels, want) => {
    expect(selectorMatches(sel(doc), labels)).toBe(want);
  });

  it('knows a selector that selects everything', () => {
    expect(selectsEverything(sel({}))).toBe(true);
    expect(selectsEverything(sel({ matchLabels: {}, matchExpressions: null }))).toBe(true);
    expect(selectsEverything(sel({ matchExpressions: [{ key: 'a', operator: 'Exists' }] }))).toBe(false);
  });
});

describe('validateLabelSelector', () => {
  it('normalises: both lists present, no values for Exists/DoesNotExist', () => {
    expect(validateLabelSelector({ matchExpressions: [{ key: 'a', operator: 'Exists', values: null }] }, 's')).toEqual({
      matchLabels: {},
      matchExpressions: [{ key: 'a', operator: 'Exists', values: [] }],
    });
  });

  const bad: Array<[string, unknown, string]> = [
    ['not an object', [], 'spec.podSelector'],
    ['In without values', { matchExpressions: [{ key: 'a', operator: 'In' }] }, 'spec.podSelector.matchExpressions[0].values'],
    ['NotIn with empty values', { matchExpressions: [{ key: 'a', operator: 'NotIn', values: [] }] }, 'spec.podSelector.matchExpressions[0].values'],
    ['Exists with values', { matchExpressions: [{ key: 'a', operator: 'In', values: ['x'] }, { key: 'a', operator: 'Exists', values: ['x'] }] }, 'spec.podSelector.matchExpressions[1].values'],
    ['DoesNotExist with values', { matchExpressions: [{ key: 'a', operator: 'DoesNotExist', values: [''] }] }, 'spec.podSelector.matchExpressions[0].values'],
    ['unknown operator', { matchExpressions: [{ key: 'a', operator: 'Gt', values: ['1'] }] }, 'spec.podSelector.matchExpressions[0].operator'],
    ['lowercase operator', { matchExpressions: [{ key: 'a', operator: 'in', values: ['1'] }] }, 'spec.podSelector.matchExpressions[0].operator'],
    ['missing key', { matchExpressions: [{ operator: 'Exists' }] }, 'spec.podSelector.matchExpressions[0].key'],
    ['invalid key', { matchExpressions: [{ key: 'a b', operator: 'Exists' }] }, 'spec.podSelector.matchExpressions[0].key'],
    ['key with empty prefix', { matchExpressions: [{ key: '/a', operator: 'Exists' }] }, 'spec.podSelector.matchExpressions[0].key'],
    ['key with two slashes', { matchExpressions: [{ key: 'a/b/c', operator: 'Exists' }] }, 'spec.podSelector.matchExpressions[0].key'],
    ['key name over 63', { matchExpressions: [{ key: `k.io/${'a'.repeat(64)}`, operator: 'Exists' }] }, 'spec.podSelector.matchExpressions[0].key'],
    ['invalid value', { matchExpressions: [{ key: 'a', operator: 'In', values: ['ok', '-bad'] }] }, 'spec.podSelector.matchExpressions[0].values[1]'],
    ['value over 63', { matchExpressions: [{ key: 'a', operator: 'In', values: ['v'.repeat(64)] }] }, 'spec.podSelector.matchExpressions[0].values[0]'],
    ['non-string value', { matchExpressions: [{ key: 'a', operator: 'In', values: [1] }] }, 'spec.podSelector.matchExpressions[0].values[0]'],
    ['matchLabels bad key', { matchLabels: { 'a b': 'x' } }, 'spec.podSelector.matchLabels["a b"]'],
    ['matchLabels bad value', { matchLabels: { a: 'x y' } }, 'spec.podSelector.matchLabels["a"]'],
    ['matchExpressions not a list', { matchExpressions: {} }, 'spec.podSelector.matchExpressions'],
  ];
  it.each(bad)('rejects %s at its path', (_name, doc, field) => {
    expect(() => validateLabelSelector(doc, 'spec.podSelector')).toThrow(expect.objectContaining({ field }));
  });

  it('accepts what Kubernetes accepts at the edges', () => {
    expect(() => validateLabelSelector({ matchLabels: { 'example.com/Name_1.x': '', [`${'a'.repeat(63)}`]: 'v'.repeat(63) } }, 's')).not.toThrow();
    expect(() => validateLabelSelector({ matchExpressions: [{ key: 'k', operator: 'In', values: ['', 'A-b_c.D'] }] }, 's')).not.toThrow();
  });
});
