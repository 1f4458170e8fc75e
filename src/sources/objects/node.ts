// v1 Node: its pod CIDRs (routes and the ip cache), its addresses (tunnel endpoints, NodePort
// frontends) and its labels (the zone, for topology-aware endpoint selection).
import { expectEnum, expectObject, expectString, fail, Json, ObjectMeta, optArray, optObject, optString, validateMeta } from './meta';
import { checkDualStack, cidrFamilyOf, cidrField, ipField } from './net';

export const LABEL_ZONE = 'topology.kubernetes.io/zone';

export const NODE_ADDRESS_TYPES = ['InternalIP', 'ExternalIP', 'Hostname', 'InternalDNS', 'ExternalDNS'] as const;
export type NodeAddressType = (typeof NODE_ADDRESS_TYPES)[number];

export interface NodeAddress {
  type: NodeAddressType;
  /** Canonical text for InternalIP and ExternalIP (validated as addresses); a name otherwise. */
  address: string;
}

export interface NodeObject {
  apiVersion: 'v1';
  kind: 'Node';
  metadata: ObjectMeta;
  spec: {
    /** podCIDRs[0], as the API server keeps it. */
    podCIDR?: string;
    /** At most one per family, canonical (host bits cleared). */
    podCIDRs: string[];
  };
  status: { addresses: NodeAddress[] };
}

function validateAddress(v: Json, f: string): NodeAddress {
  const a = expectObject(v, f);
  const type = expectEnum(a.type, `${f}.type`, NODE_ADDRESS_TYPES);
  const address = type === 'InternalIP' || type === 'ExternalIP' ? ipField(a.address, `${f}.address`) : expectString(a.address, `${f}.address`);
  if (address === '') fail(`${f}.address`, 'required, empty');
  return { type, address };
}

export function validateNode(o: Record<string, Json>): NodeObject {
  const metadata = validateMeta(o.metadata, { namespaced: false, name: 'DNS1123Subdomain' });
  const specIn = optObject(o.spec, 'spec') ?? {};
  // As the v1→internal conversion does: podCIDR seeds an empty podCIDRs, and wins when they differ.
  let cidrs = optArray(specIn.podCIDRs, 'spec.podCIDRs').map((c, i) => expectString(c, `spec.podCIDRs[${i}]`));
  const podCIDR = optString(specIn.podCIDR, 'spec.podCIDR');
  if (podCIDR !== undefined && (cidrs.length === 0 || cidrs[0] !== podCIDR)) cidrs = [podCIDR];
  const podCIDRs = cidrs.map((c, i) => cidrField(c, `spec.podCIDRs[${i}]`));
  checkDualStack(podCIDRs, 'spec.podCIDRs', 'CIDR', cidrFamilyOf);
  const spec: NodeObject['spec'] = { podCIDRs };
  if (podCIDRs.length > 0) spec.podCIDR = podCIDRs[0];
  const statusIn = optObject(o.status, 'status') ?? {};
  const addresses = optArray(statusIn.addresses, 'status.addresses').map((a, i) => validateAddress(a, `status.addresses[${i}]`));
  return { apiVersion: 'v1', kind: 'Node', metadata, spec, status: { addresses } };
}

/** The node's first address of `type` (the kubelet lists the preferred one first). */
export function nodeAddress(node: NodeObject, type: NodeAddressType): string | undefined {
  return node.status.addresses.find((a) => a.type === type)?.address;
}
