// policy.kelp.dev/v1alpha1 KelpNetworkPolicy: kelp's namespaced deny (see DESIGN.md, "Policy
// model", and deploy/kubernetes/10-crd-kelpnetworkpolicies.yaml), normalised.
//
// Peers and protocols are ClusterNetworkPolicy's (./clusternetworkpolicy.ts), validated by the
// same code, with its normalised spelling and its fail-closed unknown peers; actions Accept and
// Deny only, no priority, no tier. The subject is a pod selector over the policy's own
// namespace. Two restrictions of kelp's own, which its CRD states too: `networks` is an egress
// peer only (in an ingress peer it is an error, not an unknown peer: kelp's schema is the one
// installed, so the field is a mistake, not a newer revision), and a rule with a `networks`
// peer cannot use a named port (addresses have no port names).
//
// In the NetworkPolicy tier: a matching Deny of any KelpNetworkPolicy selecting the pod denies;
// else a matching Accept (or a NetworkPolicy allow) allows; a non-empty rule list for a
// direction isolates the selected pods in that direction, whatever its actions.
import { expectObject, Json, NamespacedMeta, validateMeta } from './meta';
import { LabelSelector, validateLabelSelector } from './labels';
import { checkAuditAnnotation, PolicyRule, RuleDialect, validateRules } from './clusternetworkpolicy';

export { ANNOTATION_POLICY_AUDIT } from './clusternetworkpolicy';

export const API_VERSION_KELP_POLICY = 'policy.kelp.dev/v1alpha1';
export const KNP_ACTIONS = ['Accept', 'Deny'] as const;

export interface KelpNetworkPolicyObject {
  apiVersion: typeof API_VERSION_KELP_POLICY;
  kind: 'KelpNetworkPolicy';
  metadata: NamespacedMeta;
  spec: {
    subject: { podSelector: LabelSelector };
    /** Rules' actions are Accept or Deny only. */
    ingress: PolicyRule[];
    egress: PolicyRule[];
  };
}

const KNP_DIALECT: RuleDialect = {
  actions: KNP_ACTIONS,
  ingressNetworks: { refuse: 'is an egress peer only: ingress peers are namespaces or pods' },
  networksWithNamedPort: { refuse: 'a rule with a networks peer cannot use destinationNamedPort (addresses have no named ports)' },
};

export function validateKelpNetworkPolicy(o: Record<string, Json>): KelpNetworkPolicyObject {
  const metadata = validateMeta(o.metadata, { namespaced: true, name: 'DNS1123Subdomain' });
  checkAuditAnnotation(metadata);
  const spec = expectObject(o.spec, 'spec');
  const subject = expectObject(spec.subject, 'spec.subject');
  return {
    apiVersion: API_VERSION_KELP_POLICY,
    kind: 'KelpNetworkPolicy',
    metadata,
    spec: {
      // Required: `{}` is how a policy selects every pod of its namespace.
      subject: { podSelector: validateLabelSelector(subject.podSelector, 'spec.subject.podSelector') },
      ingress: validateRules(spec.ingress, 'spec.ingress', 'ingress', KNP_DIALECT),
      egress: validateRules(spec.egress, 'spec.egress', 'egress', KNP_DIALECT),
    },
  };
}
