// kelp_endpoints (and its cache) from the endpoint records, level-triggered. CNI ADD and DEL
// write their own endpoint's entries directly (the fast path: a pod must be reachable the moment
// ADD answers); this reconciler is the level under it: it recomputes the whole map from the
// records and repairs any drift — an entry a crash, a person or a bug removed or changed, an
// entry no record accounts for. It runs with no ADD or DEL in progress (the manager's exclusive
// section), so it never sees one half done.
import type { Logger } from '../log';
import type { EndpointManager } from '../endpoint/manager';
import type { EndpointMaps } from '../datapath/endpoints';
import { endpointInfoOf, ipv4Addresses } from '../datapath/endpoints';
import { endpointInfo, EndpointInfo } from '../datapath/structs';
import type { Reconciler } from './loop';

export interface EndpointsReconcilerDeps {
  manager: Pick<EndpointManager, 'list' | 'exclusive'>;
  maps: EndpointMaps;
  log: Logger;
}

export interface EndpointsRepair {
  put: string[];
  removed: string[];
}

/** The repair that makes the maps agree with the records (pure: reads only). */
export function endpointsDiff(desired: Map<string, EndpointInfo>, current: Array<{ ip: string; info: EndpointInfo }>): { put: Array<[string, EndpointInfo]>; remove: string[] } {
  const have = new Map(current.map((e) => [e.ip, endpointInfo.encode(e.info)]));
  const put: Array<[string, EndpointInfo]> = [];
  for (const [ip, info] of desired) {
    const cur = have.get(ip);
    if (!cur || !cur.equals(endpointInfo.encode(info))) put.push([ip, info]);
  }
  const remove = current.filter((e) => !desired.has(e.ip)).map((e) => e.ip);
  return { put, remove };
}

export function endpointsReconciler(deps: EndpointsReconcilerDeps): Reconciler & { lastRepair?: EndpointsRepair } {
  const r: Reconciler & { lastRepair?: EndpointsRepair } = {
    name: 'endpoints',
    kinds: [],
    reconcile: () =>
      deps.manager.exclusive(async () => {
        const desired = new Map<string, EndpointInfo>();
        for (const rec of deps.manager.list()) for (const ip of ipv4Addresses(rec)) desired.set(ip, endpointInfoOf(rec));
        const diff = endpointsDiff(desired, deps.maps.entries());
        for (const [ip, info] of diff.put) deps.maps.put(ip, info);
        for (const ip of diff.remove) deps.maps.remove(ip);
        const cache = deps.maps.reconcileCache();
        r.lastRepair = { put: diff.put.map(([ip]) => ip), removed: diff.remove };
        if (diff.put.length || diff.remove.length || cache) {
          deps.log.warn({ put: r.lastRepair.put, removed: diff.remove, cacheSlots: cache }, 'kelp_endpoints drifted from the endpoint records: repaired');
        }
      }),
  };
  return r;
}
