// What `kelp apply` and `kelp delete` print from the agent's answer: one line per object, as
// kubectl does. A bulk answer has no keys (src/agent/routes/objects.ts, RESULTS_MAX), only the
// actions as runs over the request's objects in order, each object counted once (at its first
// occurrence, as the agent applies the last copy of a repeated one): the keys are the CLI's own.
import { KelpObject, objectKey, objectRef } from '../sources/objects';

export interface ApplyAnswer {
  revision: number;
  actions: Array<{ action: string; count: number }>;
  results?: Array<{ key: string; action: string }>;
}

export function applyLines(objects: readonly KelpObject[], answer: ApplyAnswer): string[] {
  if (answer.results) return answer.results.map((r) => `${r.key} ${r.action}`);
  const refs = new Map<string, string>();
  for (const o of objects) if (!refs.has(objectKey(o))) refs.set(objectKey(o), objectRef(o));
  const total = answer.actions.reduce((n, run) => n + run.count, 0);
  if (total !== refs.size) throw new Error(`the agent answered for ${total} objects, the request had ${refs.size}`);
  const lines: string[] = [];
  const keys = refs.values();
  for (const run of answer.actions) for (let i = 0; i < run.count; i++) lines.push(`${keys.next().value} ${run.action}`);
  return lines;
}
