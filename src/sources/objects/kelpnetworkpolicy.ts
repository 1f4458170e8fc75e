// policy.kelp.dev/v1alpha1 KelpNetworkPolicy: kelp's namespaced deny (see DESIGN.md, "Policy
// model", and deploy/kubernetes/10-crd-kelpnetworkpolicies.yaml), normalised.
//
// Types first: the validator (validateKelpNetworkPolicy) and the KINDS row come with the object
// support. Peers and protocols are ClusterNetworkPolicy's (./clusternetworkpolicy.ts), actions
// Accept and Deny only, no priority. The subject is a pod selector over the policy's own
// namespace. In the NetworkPolicy tier: a matching Deny of any KelpNetworkPolicy selecting the
// pod denies; else a matching Accept (or a NetworkPolicy allow) allows; a non-empty rule list
// for a direction isolates the selected pods in that direction, whatever its actions.
import type { LabelSelector } from './labels';
import type { NamespacedMeta } from './meta';
import type { PolicyRule } from './clusternetworkpolicy';

export const API_VERSION_KELP_POLICY = 'policy.kelp.dev/v1alpha1';
export const KNP_ACTIONS = ['Accept', 'Deny'] as const;

/** Marks a policy of any of the three kinds audit-only: evaluated, its would-be drops reported, nothing dropped. */
export const ANNOTATION_POLICY_AUDIT = 'policy.kelp.dev/audit';

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
