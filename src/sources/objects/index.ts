// The Kubernetes-shaped objects kelp consumes, and their validation. Every source (the manifest
// directory, the Kubernetes API) passes each object through `validateObject`, and the
// reconcilers read only these shapes: the fields kelp uses, defaults applied, validated as the
// API server validates them, with the field at fault named by its JSON path.
//
// A normalised object is itself a valid manifest of its kind that validates to itself: `kelp
// apply` stores objects in this form. (The policy CRDs' normalised rules are spelled in kelp's
// terms, which their validators read alongside the API's: see ./clusternetworkpolicy.ts.)
//
// A new kind is a file here exporting its type and validator, and a row in KINDS.
import { expectObject, expectString, fail, Json } from './meta';
import { NamespaceObject, validateNamespace } from './namespace';
import { PodObject, validatePod } from './pod';
import { NodeObject, validateNode } from './node';
import { ServiceObject, validateService } from './service';
import { API_VERSION_DISCOVERY, EndpointSliceObject, validateEndpointSlice } from './endpointslice';
import { API_VERSION_NETWORKING, NetworkPolicyObject, validateNetworkPolicy } from './networkpolicy';
import { API_VERSION_POLICY_NETWORKING, ClusterNetworkPolicyObject, validateClusterNetworkPolicy } from './clusternetworkpolicy';
import { API_VERSION_KELP_POLICY, KelpNetworkPolicyObject, validateKelpNetworkPolicy } from './kelpnetworkpolicy';

export { ManifestError } from './meta';
export type { ObjectMeta, NamespacedMeta } from './meta';
export { SELECTOR_OPERATORS, optLabelSelector, selectorMatches, selectsEverything, validateLabelSelector } from './labels';
export type { LabelSelector, LabelSelectorRequirement, SelectorOperator } from './labels';
export { PROTOCOLS } from './net';
export type { Protocol } from './net';
export { LABEL_METADATA_NAME } from './namespace';
export type { NamespaceObject } from './namespace';
export { POD_PHASES, namedPort } from './pod';
export type { Container, ContainerPort, PodObject, PodPhase, PodStatus } from './pod';
export { LABEL_ZONE, NODE_ADDRESS_TYPES, nodeAddress } from './node';
export type { NodeAddress, NodeAddressType, NodeObject } from './node';
export {
  ANNOTATION_LB_SOURCE_RANGES,
  CLUSTER_IP_NONE,
  DEFAULT_CLIENT_IP_TIMEOUT_SECONDS,
  LABEL_HEADLESS,
  LABEL_SERVICE_PROXY_NAME,
  LOAD_BALANCER_IP_MODES,
  MAX_CLIENT_IP_TIMEOUT_SECONDS,
  SERVICE_TYPES,
  SESSION_AFFINITIES,
  TRAFFIC_DISTRIBUTIONS,
  TRAFFIC_POLICIES,
  isHeadless,
} from './service';
export type { LoadBalancerIPMode, LoadBalancerIngress, ServiceObject, ServicePort, ServiceType, SessionAffinity, TrafficDistribution, TrafficPolicy } from './service';
export { ADDRESS_TYPES, API_VERSION_DISCOVERY, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, sliceServiceName } from './endpointslice';
export type { AddressType, Endpoint, EndpointConditions, EndpointPort, EndpointSliceObject } from './endpointslice';
export { API_VERSION_NETWORKING, POLICY_TYPES } from './networkpolicy';
export type { IPBlock, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyObject, NetworkPolicyPeer, NetworkPolicyPort, PolicyType } from './networkpolicy';

export {
  ANNOTATION_POLICY_AUDIT,
  API_VERSION_POLICY_NETWORKING,
  CNP_ACTIONS,
  CNP_MAX_ITEMS,
  CNP_MAX_PRIORITY,
  CNP_MAX_RULE_NAME,
  CNP_TIERS,
} from './clusternetworkpolicy';
export type { ClusterNetworkPolicyObject, CnpAction, CnpTier, NamespacedPodSelector, PolicyPeer, PolicyProtocol, PolicyRule, PolicySubject } from './clusternetworkpolicy';
export { API_VERSION_KELP_POLICY, KNP_ACTIONS } from './kelpnetworkpolicy';
export type { KelpNetworkPolicyObject } from './kelpnetworkpolicy';

export type KelpObject =
  | NamespaceObject
  | PodObject
  | NodeObject
  | ServiceObject
  | EndpointSliceObject
  | NetworkPolicyObject
  | ClusterNetworkPolicyObject
  | KelpNetworkPolicyObject;
export type Kind = KelpObject['kind'];

interface KindSpec<K extends Kind> {
  apiVersion: Extract<KelpObject, { kind: K }>['apiVersion'];
  namespaced: boolean;
  validate: (o: Record<string, Json>) => Extract<KelpObject, { kind: K }>;
}

const KINDS: { [K in Kind]: KindSpec<K> } = {
  Namespace: { apiVersion: 'v1', namespaced: false, validate: validateNamespace },
  Pod: { apiVersion: 'v1', namespaced: true, validate: validatePod },
  Node: { apiVersion: 'v1', namespaced: false, validate: validateNode },
  Service: { apiVersion: 'v1', namespaced: true, validate: validateService },
  EndpointSlice: { apiVersion: API_VERSION_DISCOVERY, namespaced: true, validate: validateEndpointSlice },
  NetworkPolicy: { apiVersion: API_VERSION_NETWORKING, namespaced: true, validate: validateNetworkPolicy },
  ClusterNetworkPolicy: { apiVersion: API_VERSION_POLICY_NETWORKING, namespaced: false, validate: validateClusterNetworkPolicy },
  KelpNetworkPolicy: { apiVersion: API_VERSION_KELP_POLICY, namespaced: true, validate: validateKelpNetworkPolicy },
};

export const supportedKinds: readonly Kind[] = Object.keys(KINDS) as Kind[];

function isKind(s: string): s is Kind {
  return Object.prototype.hasOwnProperty.call(KINDS, s);
}

/** The apiVersion kelp reads a kind in, and whether its objects live in a namespace. */
export function kindInfo(kind: Kind): { apiVersion: string; namespaced: boolean } {
  const { apiVersion, namespaced } = KINDS[kind];
  return { apiVersion, namespaced };
}

/** Validates one decoded manifest or API object; throws ManifestError naming the field at fault. */
export function validateObject(doc: Json): KelpObject {
  const o = expectObject(doc, '(document)');
  const kind = expectString(o.kind, 'kind');
  if (!isKind(kind)) fail('kind', `${JSON.stringify(kind)} is not supported (supported: ${supportedKinds.join(', ')})`);
  const spec = KINDS[kind];
  const apiVersion = expectString(o.apiVersion, 'apiVersion');
  if (apiVersion !== spec.apiVersion) {
    fail('apiVersion', `${JSON.stringify(apiVersion)} is not supported for ${kind} (expected ${JSON.stringify(spec.apiVersion)})`);
  }
  return spec.validate(o);
}

/** How kubectl names an object to people: `Kind/name`, or `Kind/namespace/name` when namespaced. */
export function objectRef(o: { kind: string; metadata: { name: string; namespace?: string } }): string {
  return o.metadata.namespace === undefined ? `${o.kind}/${o.metadata.name}` : `${o.kind}/${o.metadata.namespace}/${o.metadata.name}`;
}

/** Namespaces that exist in every cluster without a manifest, as Kubernetes creates them. */
export const IMPLICIT_NAMESPACES: ReadonlySet<string> = new Set(['default', 'kube-system', 'kube-public', 'kube-node-lease']);

/** Store key: `Kind/namespace/name` (namespace empty for cluster-scoped objects). */
export function objectKey(o: { kind: string; metadata: { name: string; namespace?: string } }): string {
  return `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
}
