// Label and field selectors as the API server parses them (k8s.io/apimachinery labels and
// fields packages): the grammar kubectl's `-l` and `--field-selector` and client-node's
// `labelSelector`/`fieldSelector` produce.
import { errors } from './status';

type Requirement =
  | { key: string; op: 'exists' | '!' }
  | { key: string; op: '=' | '!='; value: string }
  | { key: string; op: 'in' | 'notin'; values: string[] }
  | { key: string; op: 'gt' | 'lt'; value: number };

export type LabelSelector = (labels: Record<string, string> | undefined) => boolean;
export type FieldSelector = (fields: Record<string, string>) => boolean;

const everything = () => true;

/** Splits on commas outside parentheses (`a in (x,y),b` is two requirements). */
function splitTopLevel(s: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < s.length; i += 1) {
    if (s[i] === '(') depth += 1;
    else if (s[i] === ')') depth -= 1;
    else if (s[i] === ',' && depth === 0) {
      parts.push(s.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(s.slice(start));
  return parts.map((p) => p.trim());
}

const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/;

function parseRequirement(text: string): Requirement {
  const bad = (why: string) => errors.badRequest(`unable to parse requirement: ${why}`);
  const checkKey = (key: string) => {
    if (!LABEL_KEY.test(key)) throw bad(`invalid label key "${key}"`);
    return key;
  };
  const checkValue = (value: string) => {
    if (value.length > 63 || !LABEL_VALUE.test(value)) throw bad(`invalid label value: "${value}"`);
    return value;
  };
  let m = /^!\s*(\S+)$/.exec(text);
  if (m) return { key: checkKey(m[1]), op: '!' };
  m = /^(\S+)\s+(in|notin)\s*\((.*)\)$/.exec(text);
  if (m) {
    const values = m[3].split(',').map((v) => checkValue(v.trim()));
    return { key: checkKey(m[1]), op: m[2] as 'in' | 'notin', values };
  }
  m = /^([^=!<>\s]+)\s*(==|=|!=|<|>)\s*(\S*)$/.exec(text);
  if (m) {
    const key = checkKey(m[1]);
    if (m[2] === '<' || m[2] === '>') {
      const value = Number(m[3]);
      if (!/^-?\d+$/.test(m[3])) throw bad(`for 'Gt', 'Lt' operators, the value must be an integer`);
      return { key, op: m[2] === '<' ? 'lt' : 'gt', value };
    }
    return { key, op: m[2] === '!=' ? '!=' : '=', value: checkValue(m[3]) };
  }
  if (/^\S+$/.test(text)) return { key: checkKey(text), op: 'exists' };
  throw bad(`found '${text}', expected: key, !key, key=value, key!=value, key in (...), key notin (...)`);
}

function matches(r: Requirement, labels: Record<string, string>): boolean {
  const has = Object.prototype.hasOwnProperty.call(labels, r.key);
  const v = labels[r.key];
  switch (r.op) {
    case 'exists':
      return has;
    case '!':
      return !has;
    case '=':
      return has && v === r.value;
    case '!=':
      return !has || v !== r.value;
    case 'in':
      return has && r.values.includes(v);
    case 'notin':
      return !has || !r.values.includes(v);
    case 'gt':
      return has && /^-?\d+$/.test(v) && Number(v) > r.value;
    case 'lt':
      return has && /^-?\d+$/.test(v) && Number(v) < r.value;
  }
}

export function parseLabelSelector(text: string | undefined): LabelSelector {
  if (!text || !text.trim()) return everything;
  const reqs = splitTopLevel(text).map(parseRequirement);
  return (labels) => reqs.every((r) => matches(r, labels ?? {}));
}

/**
 * `supported` is the field set the resource allows (the real server answers 400 for any
 * other field). Values compare as strings; a field the object lacks is "".
 */
export function parseFieldSelector(text: string | undefined, supported: readonly string[]): FieldSelector {
  if (!text || !text.trim()) return everything;
  const terms = text.split(',').map((t) => {
    const m = /^\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*$/.exec(t);
    if (!m) throw errors.badRequest(`invalid selector: '${text}'; can't understand '${t}'`);
    if (!supported.includes(m[1])) throw errors.badRequest(`field label not supported: ${m[1]}`);
    return { field: m[1], negate: m[2] === '!=', value: m[3] };
  });
  return (fields) => terms.every((t) => ((fields[t.field] ?? '') === t.value) !== t.negate);
}
