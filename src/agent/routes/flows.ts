// HTTP routes of observability (issue 14), over the agent's flow store (src/observe):
//   GET /v1/flows          NDJSON, oldest first: the last N stored records matching the FlowQuery;
//                          with follow, then every new matching record as it arrives;
//   GET /v1/flows/summary  top talkers and drop reasons over ?window= seconds (default 60);
//   GET /v1/events/stats   EventStats: per class emitted / suppressed / lost / received, unknown.
// Registered by the agent's entry file; `kelp observe`, the exporter and the node page read them.
import type { FlowRecord } from '../../datapath/flow-types';
import { DEFAULT_LAST, FlowQueryError, matchFlow, Observe, parseFlowQuery, summarize } from '../../observe';
import { HttpError, type ApiServer } from '../server';

const NDJSON = { 'content-type': 'application/x-ndjson' };
/** A follower this far behind (bytes it has not read) misses records until it catches up. */
const MAX_PENDING = 4 << 20;

const line = (r: FlowRecord) => JSON.stringify(r) + '\n';

export function flowRoutes(server: ApiServer, observe: () => Observe | undefined): void {
  const need = (): Observe => {
    const o = observe();
    if (!o) throw new HttpError(503, 'flow events are not being read yet');
    return o;
  };

  server.route('GET', '/v1/flows', (req) => {
    const o = need();
    let q;
    try {
      q = parseFlowQuery(req.query);
    } catch (e) {
      if (e instanceof FlowQueryError) throw new HttpError(400, e.message);
      throw e;
    }
    const match = (r: FlowRecord) => matchFlow(r, q);
    const backlog = o.store.last(q.last ?? DEFAULT_LAST, match);
    if (!q.follow) return { status: 200, headers: NDJSON, body: backlog.map(line).join('') };
    return {
      status: 200,
      headers: NDJSON,
      stream: (out) => {
        for (const r of backlog) out.write(line(r));
        const unsubscribe = o.store.subscribe((r) => {
          if (match(r) && out.pending < MAX_PENDING) out.write(line(r));
        });
        out.onClose(unsubscribe);
      },
    };
  });

  server.route('GET', '/v1/flows/summary', (req) => {
    const o = need();
    const w = req.query.get('window') ?? '60';
    const window = Number(w);
    if (!Number.isInteger(window) || window < 1 || window > 86_400) throw new HttpError(400, `window: ${JSON.stringify(w)} is not an integer 1..86400 (seconds)`);
    return { status: 200, body: summarize(o.store.all(), window, Date.now(), o.stats()) };
  });

  server.route('GET', '/v1/events/stats', () => ({ status: 200, body: need().stats() }));
}
