// Policy: kelp's own policy model (./spec.ts) with one adapter per API, the compiler into the
// datapath's maps (./compile.ts), the datapath's decision over them (./lookup.ts) and the trace
// that explains a verdict (./trace.ts).
export * from './spec';
export { fromNetworkPolicy } from './from-networkpolicy';
export { fromClusterNetworkPolicy } from './from-clusternetworkpolicy';
export { fromKelpNetworkPolicy } from './from-kelpnetworkpolicy';
export { IdentityAllocator, StableNumbers } from './identity';
export { cidrMinus, namedPortsOf, policyPod, portRangePrefixes } from './model';
export type { IdentityInfo, Member, ModelPolicy, NamedPorts, PolicyModel } from './model';
export { compilePolicy } from './compile';
export type { LocalEndpoint, PolicyCompileInputs, PolicyCompileResult } from './compile';
export { DesiredLookup } from './lookup';
export type { MapsAnswer } from './lookup';
export { explain, formatExplanation } from './trace';
export type { Explanation, RuleTrace, SideTrace, TraceProtocol, TraceQuery } from './trace';
