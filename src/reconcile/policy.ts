// Policy: kelp_ipcache4, kelp_policy4 and the policy revision, from the store (namespaces, pods,
// nodes, the three policy kinds) and the node's endpoints, level-triggered like every reconciler.
// Each run compiles everything (src/policy) and applies the difference make-before-break
// (src/datapath/policy.ts), then bumps the revision so established flows re-check once.
//
// Fail closed: the datapath drops a local endpoint's traffic while kelp_policy4 has no entry for
// it. A CNI ADD therefore waits (`programEndpoint`) until a run that started after its endpoint
// existed has written the endpoint's entries; the ADD answers only then. Enforcement itself is
// switched on after the first successful run, so pods that lived before policy was enforced (an
// upgrade) are programmed before anything is checked.
import type { Logger } from '../log';
import type { Kind } from '../sources/objects';
import type { Reconciler } from './loop';

export const POLICY_KINDS: readonly Kind[] = ['Namespace', 'Pod', 'Node', 'NetworkPolicy', 'ClusterNetworkPolicy', 'KelpNetworkPolicy'] as Kind[];

export interface PolicyRunResult {
  /** Entries written and removed, for the log. */
  changed: number;
}

export interface PolicyReconcilerDeps {
  /** Compiles from the store and the node's endpoints and applies the difference. */
  run: () => Promise<PolicyRunResult> | PolicyRunResult;
  /** Called once, after the first successful run. */
  enable: () => void;
  log: Logger;
}

export interface PolicyReconciler extends Reconciler {
  /**
   * Resolves once a run that started after this call has succeeded (the caller's endpoint is
   * programmed); rejects after `timeoutMs` with the last error. `kick` marks the reconciler dirty.
   */
  programmed(kick: () => void, timeoutMs: number): Promise<void>;
  readonly runs: number;
  readonly lastError?: string;
}

export function policyReconciler(deps: PolicyReconcilerDeps): PolicyReconciler {
  let started = 0; // runs begun
  let succeeded = 0; // the `started` number of the latest successful run
  let enabled = false;
  let lastError: string | undefined;
  const waiters: Array<{ after: number; resolve: () => void }> = [];
  const r: PolicyReconciler = {
    name: 'policy',
    kinds: POLICY_KINDS,
    get runs() {
      return started;
    },
    get lastError() {
      return lastError;
    },
    async reconcile() {
      const n = ++started;
      try {
        const res = await deps.run();
        lastError = undefined;
        succeeded = n;
        if (!enabled) {
          deps.enable();
          enabled = true;
          deps.log.info('policy enforcement on');
        }
        if (res.changed) deps.log.debug({ changed: res.changed }, 'policy maps updated');
      } catch (err) {
        lastError = (err as Error).message;
        throw err;
      }
      for (let i = waiters.length - 1; i >= 0; i--) {
        if (succeeded > waiters[i].after) {
          waiters[i].resolve();
          waiters.splice(i, 1);
        }
      }
    },
    programmed(kick, timeoutMs) {
      const after = started;
      return new Promise<void>((resolve, reject) => {
        const w = {
          after,
          resolve: () => {
            clearTimeout(t);
            resolve();
          },
        };
        const t = setTimeout(() => {
          const i = waiters.indexOf(w);
          if (i >= 0) waiters.splice(i, 1);
          reject(new Error(`policy for the new endpoint not programmed within ${timeoutMs} ms${lastError ? `: ${lastError}` : ''}`));
        }, timeoutMs);
        waiters.push(w);
        kick();
      });
    },
  };
  return r;
}
