// HTTP routes of the agent's API for policy: the policies in evaluation order with what they
// select here, and `kelp policy trace`. Registered by the agent's entry file.
import { HttpError } from '../server';
import type { ApiServer } from '../server';
import type { RouteContext } from './context';
import { tracePolicy } from '../policy';
import { selects } from '../../policy/evaluate';
import type { TraceProtocol } from '../../policy';

export interface PolicyView {
  id: number;
  kind: string;
  /** `namespace/name`, or `name` for a cluster-scoped policy. */
  name: string;
  tier: string;
  priority: number | null;
  audit: boolean;
  ingressRules: number | null;
  egressRules: number | null;
  /** Pods on this node it selects. */
  localPods: number;
}

const PROTOCOLS: readonly TraceProtocol[] = ['TCP', 'UDP', 'SCTP', 'ICMP'];

export function policyRoutes(server: ApiServer, c: RouteContext): void {
  server.route('GET', '/v1/policies', () => ({ status: 200, body: policyViews(c) }));
  server.route('GET', '/v1/policy/trace', (req) => {
    if (!c.policy) throw new HttpError(503, 'policy is not started yet');
    const from = req.query.get('from');
    const to = req.query.get('to');
    const protocol = (req.query.get('protocol') ?? 'TCP').toUpperCase() as TraceProtocol;
    const port = Number(req.query.get('port') ?? 0);
    if (!from || !to) throw new HttpError(400, 'from and to are required (namespace/pod or an IP address)');
    if (!PROTOCOLS.includes(protocol)) throw new HttpError(400, `protocol must be one of ${PROTOCOLS.join(', ')}`);
    if (protocol !== 'ICMP' && (!Number.isInteger(port) || port < 1 || port > 65535)) throw new HttpError(400, 'port must be 1..65535');
    try {
      return { status: 200, body: tracePolicy(c.policy, { from, to, protocol, port }) };
    } catch (e) {
      throw new HttpError(400, (e as Error).message);
    }
  });
}

/** The policies in evaluation order, with how many of this node's pods each selects (`kelp get policies`, the node page). */
export function policyViews(c: Pick<RouteContext, 'policy'>): PolicyView[] {
  const model = c.policy?.model();
  if (!model) return [];
  const local = [...model.pods.values()].filter((m) => m.epId !== undefined);
  const rows = model.policies.map((p): PolicyView => {
    const [kind, ns, name] = p.spec.ref.split('/');
    return {
      id: p.id,
      kind,
      name: ns ? `${ns}/${name}` : name,
      tier: p.spec.tier,
      priority: p.spec.tier === 'networkpolicy' ? null : p.spec.priority,
      audit: p.spec.audit,
      ingressRules: p.spec.ingress ? p.spec.ingress.rules.length : null,
      egressRules: p.spec.egress ? p.spec.egress.rules.length : null,
      localPods: local.filter((m) => selects(p, m, model.namespaceLabels)).length,
    };
  });
  return rows;
}
