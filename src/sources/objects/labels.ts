// metav1.LabelSelector: validation exactly as the API server does it (ValidateLabelSelector) and
// matching as labels.Selector does (LabelSelectorAsSelector).
//
// Matching: matchLabels and every matchExpressions entry must all hold. NotIn and DoesNotExist
// hold for an object without the key. A selector with nothing in it matches everything.
// What an absent (null) selector means depends on the field that holds it — upstream's
// LabelSelectorAsSelector makes it match nothing, but a NetworkPolicy peer without a
// namespaceSelector means "the policy's own namespace" — so `selectorMatches` takes only a
// present selector and each caller decides, where the field is documented.
import { expectEnum, expectObject, expectString, fail, Json, labelMap, labelValueProblem, optArray, optObject, qualifiedNameProblem } from './meta';

export const SELECTOR_OPERATORS = ['In', 'NotIn', 'Exists', 'DoesNotExist'] as const;
export type SelectorOperator = (typeof SELECTOR_OPERATORS)[number];

export interface LabelSelectorRequirement {
  key: string;
  operator: SelectorOperator;
  /** Non-empty for In and NotIn; empty for Exists and DoesNotExist. */
  values: string[];
}

export interface LabelSelector {
  matchLabels: Record<string, string>;
  matchExpressions: LabelSelectorRequirement[];
}

function validateRequirement(v: Json, field: string): LabelSelectorRequirement {
  const r = expectObject(v, field);
  const key = expectString(r.key, `${field}.key`);
  const operator = expectEnum(r.operator, `${field}.operator`, SELECTOR_OPERATORS);
  const values = optArray(r.values, `${field}.values`).map((val, i) => expectString(val, `${field}.values[${i}]`));
  if ((operator === 'In' || operator === 'NotIn') && values.length === 0) {
    fail(`${field}.values`, "must be specified when `operator` is 'In' or 'NotIn'");
  }
  if ((operator === 'Exists' || operator === 'DoesNotExist') && values.length > 0) {
    fail(`${field}.values`, "may not be specified when `operator` is 'Exists' or 'DoesNotExist'");
  }
  const keyProblem = qualifiedNameProblem(key);
  if (keyProblem) fail(`${field}.key`, keyProblem);
  values.forEach((val, i) => {
    const problem = labelValueProblem(val);
    if (problem) fail(`${field}.values[${i}]`, problem);
  });
  return { key, operator, values };
}

/** A present selector (`{}` included); the caller decides what an absent one means. */
export function validateLabelSelector(v: Json, field: string): LabelSelector {
  const s = expectObject(v, field);
  return {
    matchLabels: labelMap(s.matchLabels, `${field}.matchLabels`),
    matchExpressions: optArray(s.matchExpressions, `${field}.matchExpressions`).map((r, i) => validateRequirement(r, `${field}.matchExpressions[${i}]`)),
  };
}

/** A selector that may be absent (null or missing: undefined). */
export function optLabelSelector(v: Json, field: string): LabelSelector | undefined {
  return optObject(v, field) === undefined ? undefined : validateLabelSelector(v, field);
}

export function selectorMatches(selector: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  const has = (k: string) => Object.prototype.hasOwnProperty.call(labels, k);
  for (const [k, v] of Object.entries(selector.matchLabels)) {
    if (!has(k) || labels[k] !== v) return false;
  }
  for (const r of selector.matchExpressions) {
    const present = has(r.key);
    switch (r.operator) {
      case 'In':
        if (!present || !r.values.includes(labels[r.key])) return false;
        break;
      case 'NotIn':
        if (present && r.values.includes(labels[r.key])) return false;
        break;
      case 'Exists':
        if (!present) return false;
        break;
      case 'DoesNotExist':
        if (present) return false;
        break;
    }
  }
  return true;
}

/** True when the selector has no requirement at all (it matches every object). */
export function selectsEverything(selector: LabelSelector): boolean {
  return Object.keys(selector.matchLabels).length === 0 && selector.matchExpressions.length === 0;
}
