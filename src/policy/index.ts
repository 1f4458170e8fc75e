// Policy: kelp's compiled model (./model.ts) and the compilers into it, one per policy API.
// For now Kubernetes NetworkPolicy only (./networkpolicy.ts).
export * from './model';
export { compileNetworkPolicies, namedPortNumbers, policyPod } from './networkpolicy';
export type { PolicyInputs } from './networkpolicy';
