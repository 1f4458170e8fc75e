// Status conditions kelp writes on its policy objects: `Valid` on each KelpNetworkPolicy (True,
// or False with the field at fault), through the status subresource as a JSON merge patch.
//
// Written without loops and without a storm of writers:
// - a status write bumps the object's resourceVersion and comes back as a watch event; the
//   condition is compared with the one the object already holds (type, status, reason,
//   message, observedGeneration) and an identical one is never rewritten;
// - every node's agent sees the same object and computes the same condition: a write waits a
//   random moment (`jitterMs`), then looks at the newest version seen, which by then usually
//   holds another agent's write; the patch names the resourceVersion it was computed from, so a
//   write based on a stale view fails (409) instead of flapping, and the next look, a moment
//   later, sees the version that made it stale;
// - the other conditions of the list (another writer's `Programmed`) are kept as they are.
import type { Logger } from '../../log';
import { CustomObjectRef, KubeApiError, KubeClient } from './client';

export const CONDITION_VALID = 'Valid';

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  /** CamelCase, as the CRD's pattern requires. */
  reason: string;
  message: string;
  /** The metadata.generation the condition was computed from. */
  observedGeneration?: number;
  /** RFC 3339; set when the status changes, kept while it does not. */
  lastTransitionTime?: string;
}

/** Where an object's status lives: its API group, version and plural, and its name. */
export type StatusTarget = CustomObjectRef;

/** What condition.message may hold (the CRD's maxLength). */
export const MAX_CONDITION_MESSAGE = 32768;

function sameCondition(a: Condition, b: Condition): boolean {
  return a.type === b.type && a.status === b.status && a.reason === b.reason && a.message === b.message && a.observedGeneration === b.observedGeneration;
}

function readConditions(raw: unknown): Condition[] {
  const list = (raw as { status?: { conditions?: unknown } } | undefined)?.status?.conditions;
  return Array.isArray(list) ? (list.filter((c) => c !== null && typeof c === 'object' && typeof (c as Condition).type === 'string') as Condition[]) : [];
}

/**
 * The condition list with `c` in place of its type's entry, or undefined when the list already
 * says the same. lastTransitionTime moves only when the status does (API conventions).
 */
export function mergeCondition(existing: readonly Condition[], wanted: Condition, now: Date): Condition[] | undefined {
  const c = fit(wanted);
  const old = existing.find((e) => e.type === c.type);
  if (old && sameCondition(old, c)) return undefined;
  const lastTransitionTime = old && old.status === c.status && old.lastTransitionTime ? old.lastTransitionTime : now.toISOString().replace(/\.\d+Z$/, 'Z');
  const next: Condition = { ...c, lastTransitionTime };
  return old ? existing.map((e) => (e === old ? next : e)) : [...existing, next];
}

/** The condition as it is stored: a message cut to what the CRD takes (so that it compares equal once written). */
function fit(c: Condition): Condition {
  return c.message.length > MAX_CONDITION_MESSAGE ? { ...c, message: `${c.message.slice(0, MAX_CONDITION_MESSAGE - 1)}…` } : c;
}

/**
 * Writes `condition` into the status of the object `current` (as last read from the API) holds,
 * unless it already says the same. Returns whether it wrote; a 409 (the object changed since
 * `current`) is thrown as a KubeApiError for the caller to wait for the newer version.
 */
export async function writePolicyStatus(client: KubeClient, target: StatusTarget, condition: Condition, current: unknown): Promise<boolean> {
  const conditions = mergeCondition(readConditions(current), condition, new Date());
  if (!conditions) return false;
  const resourceVersion = (current as { metadata?: { resourceVersion?: string } }).metadata?.resourceVersion;
  await client.patchStatus(target, { metadata: { resourceVersion }, status: { conditions } });
  return true;
}

export interface PolicyStatusOptions {
  client: KubeClient;
  log: Logger;
  /** Longest random wait before a write (default 1000 ms; 0 writes at once). */
  jitterMs?: number;
  /** Backoff after a failed write other than a conflict: doubling from min to max (defaults 1 s, 60 s). */
  retryMinMs?: number;
  retryMaxMs?: number;
}

interface Pending {
  target: StatusTarget;
  condition: Condition;
  /** The newest version of the object seen, from the watch. */
  latest: unknown;
  timer?: NodeJS.Timeout;
  writing: boolean;
  failures: number;
}

/** Keeps one object's condition per key in line with what the source last decided about it. */
export class PolicyStatusWriter {
  private readonly pending = new Map<string, Pending>();
  private stopped = false;
  /** Writes made, and failures other than conflicts (KubernetesSource.statusWrites). */
  written = 0;
  failed = 0;

  constructor(private readonly opts: PolicyStatusOptions) {}

  /**
   * The object `raw` (as the API sent it) should carry `condition`. Nothing is written when it
   * already does; otherwise a write is scheduled, using the newest version seen by then.
   */
  report(key: string, target: StatusTarget, condition: Condition, raw: unknown): void {
    if (this.stopped) return;
    const p = this.pending.get(key);
    if (p) {
      p.condition = condition;
      p.latest = raw;
      p.target = target;
      if (!p.timer && !p.writing) this.schedule(key, p, this.jitter());
      return;
    }
    const old = readConditions(raw).find((c) => c.type === condition.type);
    if (old && sameCondition(old, fit(condition))) return;
    const fresh: Pending = { target, condition, latest: raw, writing: false, failures: 0 };
    this.pending.set(key, fresh);
    this.schedule(key, fresh, this.jitter());
  }

  /** The object is gone: nothing more to write for it. */
  forget(key: string): void {
    const p = this.pending.get(key);
    if (p?.timer) clearTimeout(p.timer);
    this.pending.delete(key);
  }

  stop(): void {
    this.stopped = true;
    for (const key of [...this.pending.keys()]) this.forget(key);
  }

  private jitter(): number {
    const j = this.opts.jitterMs ?? 1000;
    return j > 0 ? Math.random() * j : 0;
  }

  private schedule(key: string, p: Pending, delayMs: number): void {
    p.timer = setTimeout(() => {
      p.timer = undefined;
      void this.flush(key, p);
    }, delayMs);
  }

  private async flush(key: string, p: Pending): Promise<void> {
    if (this.stopped || this.pending.get(key) !== p) return;
    p.writing = true;
    const { condition, latest, target } = p;
    let retryIn: number | undefined;
    try {
      if (await writePolicyStatus(this.opts.client, target, condition, latest)) {
        this.written++;
        this.opts.log.debug({ object: key, condition: condition.type, status: condition.status }, 'status written');
      }
      p.failures = 0;
    } catch (err) {
      const status = err instanceof KubeApiError ? err.status : 0;
      // 404: the object is gone. Anything else is tried again after a while, from the newest
      // version seen by then: after a 409 (the object changed since `latest`) that is usually
      // the newer version's watch event, which may also have made the write needless.
      if (status !== 404) {
        p.failures++;
        const min = this.opts.retryMinMs ?? 1000;
        retryIn = Math.min(min * 2 ** (p.failures - 1), this.opts.retryMaxMs ?? 60_000);
        if (status === 409) {
          this.opts.log.debug({ object: key, retryInMs: retryIn }, 'status write based on an older version (409)');
        } else {
          this.failed++;
          this.opts.log.warn({ object: key, err: (err as Error).message, retryInMs: retryIn }, 'status write failed');
        }
      }
    } finally {
      p.writing = false;
    }
    if (this.stopped || this.pending.get(key) !== p) return;
    if (retryIn !== undefined) return this.schedule(key, p, retryIn);
    // Reported again while writing: that newer view decides.
    if (p.condition !== condition || p.latest !== latest) return this.schedule(key, p, 0);
    this.pending.delete(key);
  }
}
