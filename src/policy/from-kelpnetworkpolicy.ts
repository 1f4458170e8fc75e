// kelp's KelpNetworkPolicy (policy.kelp.dev/v1alpha1) into kelp's policy model (./spec.ts): the
// rule shapes of ClusterNetworkPolicy (./from-clusternetworkpolicy.ts), in the networkpolicy
// tier, subject a pod selector over the policy's own namespace; a non-empty rule list isolates
// the subject in its direction whatever its actions, an empty one leaves the direction alone.
import type { KelpNetworkPolicyObject } from '../sources/objects/kelpnetworkpolicy';
import { sharedRulesOf } from './from-clusternetworkpolicy';
import { isAudit, PolicySpec } from './spec';

export function fromKelpNetworkPolicy(knp: KelpNetworkPolicyObject): PolicySpec {
  const ns = knp.metadata.namespace;
  const spec: PolicySpec = {
    kind: 'KelpNetworkPolicy',
    ref: `KelpNetworkPolicy/${ns}/${knp.metadata.name}`,
    tier: 'networkpolicy',
    priority: 0,
    subject: { namespaces: { name: ns }, pods: knp.spec.subject.podSelector },
    audit: isAudit(knp.metadata),
  };
  if (knp.spec.ingress.length > 0) spec.ingress = { isolates: true, rules: sharedRulesOf(knp.spec.ingress) };
  if (knp.spec.egress.length > 0) spec.egress = { isolates: true, rules: sharedRulesOf(knp.spec.egress) };
  return spec;
}
