// discovery.k8s.io/v1 EndpointSlice: the backends of a Service (its `kubernetes.io/service-name`
// label names it). Validation follows the API server's ValidateEndpointSlice; conditions are
// normalised with the nil meanings the API documents and kube-proxy applies.
import { checkName, eachItem, expectEnum, expectObject, expectString, fail, Json, labelValueProblem, NamespacedMeta, optArray, optBoolean, optInteger, optObject, optString, qualifiedNameProblem, validateMeta } from './meta';
import { nonSpecialIpField, Protocol, protocolOf } from './net';

export const API_VERSION_DISCOVERY = 'discovery.k8s.io/v1';
/** The Service a slice belongs to (same namespace). */
export const LABEL_SERVICE_NAME = 'kubernetes.io/service-name';
/** Who maintains the slice (`endpointslice-controller.k8s.io` for the controller's own). */
export const LABEL_MANAGED_BY = 'endpointslice.kubernetes.io/managed-by';

export const ADDRESS_TYPES = ['IPv4', 'IPv6', 'FQDN'] as const;
export type AddressType = (typeof ADDRESS_TYPES)[number];

const MAX_ENDPOINTS = 1000;
const MAX_ADDRESSES = 100;
const MAX_PORTS = 100;
const MAX_HINTS = 8;

export interface EndpointConditions {
  /** Unset means true ("should be interpreted as ready"). */
  ready: boolean;
  /** Unset means true; ready or not, a serving endpoint can take traffic while terminating. */
  serving: boolean;
  /** Unset means false. */
  terminating: boolean;
}

export interface Endpoint {
  /**
   * 1..100 addresses of the slice's addressType, canonical for IP types. They are fungible:
   * like kube-proxy, a consumer may use only the first (https://issue.k8s.io/106267).
   */
  addresses: string[];
  conditions: EndpointConditions;
  hostname?: string;
  nodeName?: string;
  zone?: string;
  /** Topology hints; present when the controller set any. */
  hints?: { forZones: Array<{ name: string }>; forNodes: Array<{ name: string }> };
  targetRef?: { kind?: string; namespace?: string; name?: string; uid?: string };
}

export interface EndpointPort {
  /** Matches the Service port's name; "" for an unnamed port (the default). */
  name: string;
  protocol: Protocol;
  /** Absent: every port ("interpreted in the context of the specific consumer"). */
  port?: number;
  appProtocol?: string;
}

export interface EndpointSliceObject {
  apiVersion: typeof API_VERSION_DISCOVERY;
  kind: 'EndpointSlice';
  metadata: NamespacedMeta;
  addressType: AddressType;
  endpoints: Endpoint[];
  ports: EndpointPort[];
}

function validateHints(v: Json, f: string): NonNullable<Endpoint['hints']> {
  const h = expectObject(v, f);
  const list = (key: 'forZones' | 'forNodes', check: (name: string, field: string) => void) => {
    const items = optArray(h[key], `${f}.${key}`);
    if (items.length > MAX_HINTS) fail(`${f}.${key}`, `must have at most ${MAX_HINTS} items, got ${items.length}`);
    const seen = new Set<string>();
    return items.map((item, i) => {
      const nf = `${f}.${key}[${i}].name`;
      const name = expectString(expectObject(item, `${f}.${key}[${i}]`).name, nf);
      if (seen.has(name)) fail(nf, `duplicate value ${JSON.stringify(name)}`);
      seen.add(name);
      check(name, nf);
      return { name };
    });
  };
  return {
    forZones: list('forZones', (name, nf) => {
      const problem = labelValueProblem(name);
      if (problem) fail(nf, problem);
    }),
    forNodes: list('forNodes', (name, nf) => checkName(name, nf, 'DNS1123Subdomain')),
  };
}

/** An address; a field named relative to the address itself (""). */
function validateAddress(v: Json, type: AddressType): string {
  if (type === 'IPv4' || type === 'IPv6') return nonSpecialIpField(v, '', type === 'IPv4' ? 4 : 6);
  const s = expectString(v, '');
  // A fully qualified domain name: a DNS subdomain with at least two labels (a trailing dot allowed).
  const name = s.replace(/\.$/, '');
  checkName(name, '', 'DNS1123Subdomain');
  if (!name.includes('.')) fail('', `${JSON.stringify(s)} must be a fully qualified domain name (at least two labels)`);
  return s;
}

/** One endpoint, its fields named relative to it (eachItem puts `endpoints[i]` in front on error). */
function validateEndpoint(v: Json, type: AddressType): Endpoint {
  const e = expectObject(v, '');
  const addressesIn = optArray(e.addresses, 'addresses');
  if (addressesIn.length === 0) fail('addresses', 'must contain at least 1 address');
  if (addressesIn.length > MAX_ADDRESSES) fail('addresses', `must have at most ${MAX_ADDRESSES} items, got ${addressesIn.length}`);
  const addresses = eachItem(addressesIn, 'addresses', (a) => validateAddress(a, type));
  const c = optObject(e.conditions, 'conditions') ?? {};
  const conditions: EndpointConditions = {
    ready: optBoolean(c.ready, 'conditions.ready') ?? true,
    serving: optBoolean(c.serving, 'conditions.serving') ?? true,
    terminating: optBoolean(c.terminating, 'conditions.terminating') ?? false,
  };
  const out: Endpoint = { addresses, conditions };
  const hostname = optString(e.hostname, 'hostname');
  if (hostname !== undefined) out.hostname = checkName(hostname, 'hostname', 'DNS1123Label');
  const nodeName = optString(e.nodeName, 'nodeName');
  if (nodeName !== undefined) out.nodeName = checkName(nodeName, 'nodeName', 'DNS1123Subdomain');
  const zone = optString(e.zone, 'zone');
  if (zone !== undefined) out.zone = zone;
  if (optObject(e.hints, 'hints')) out.hints = validateHints(e.hints, 'hints');
  const ref = optObject(e.targetRef, 'targetRef');
  if (ref) {
    const targetRef: NonNullable<Endpoint['targetRef']> = {};
    for (const key of ['kind', 'namespace', 'name', 'uid'] as const) {
      const s = optString(ref[key], `targetRef.${key}`);
      if (s !== undefined) targetRef[key] = s;
    }
    out.targetRef = targetRef;
  }
  return out;
}

/** One port, its fields named relative to it. */
function validatePort(v: Json): EndpointPort {
  const p = expectObject(v, '');
  const name = optString(p.name, 'name') ?? '';
  if (name !== '') checkName(name, 'name', 'DNS1123Label');
  const out: EndpointPort = { name, protocol: protocolOf(p.protocol, 'protocol') };
  // The API server accepts any int32 here; kelp can program only real port numbers.
  const port = optInteger(p.port, 'port', 1, 65535);
  if (port !== undefined) out.port = port;
  const appProtocol = optString(p.appProtocol, 'appProtocol');
  if (appProtocol !== undefined) {
    const problem = qualifiedNameProblem(appProtocol);
    if (problem) fail('appProtocol', problem);
    out.appProtocol = appProtocol;
  }
  return out;
}

export function validateEndpointSlice(o: Record<string, Json>): EndpointSliceObject {
  const metadata = validateMeta(o.metadata, { namespaced: true, name: 'DNS1123Subdomain' });
  if (o.addressType === undefined || o.addressType === null || o.addressType === '') fail('addressType', 'required, missing');
  const addressType = expectEnum(o.addressType, 'addressType', ADDRESS_TYPES);
  // The API prints `"endpoints": null` for a slice without endpoints.
  const endpointsIn = optArray(o.endpoints, 'endpoints');
  if (endpointsIn.length > MAX_ENDPOINTS) fail('endpoints', `must have at most ${MAX_ENDPOINTS} items, got ${endpointsIn.length}`);
  const endpoints = eachItem(endpointsIn, 'endpoints', (e) => validateEndpoint(e, addressType));
  const portsIn = optArray(o.ports, 'ports');
  if (portsIn.length > MAX_PORTS) fail('ports', `must have at most ${MAX_PORTS} items, got ${portsIn.length}`);
  const ports = eachItem(portsIn, 'ports', validatePort);
  const names = new Set<string>();
  ports.forEach((port, i) => {
    if (names.has(port.name)) fail(`ports[${i}].name`, `duplicate port name ${JSON.stringify(port.name)}`);
    names.add(port.name);
  });
  return { apiVersion: API_VERSION_DISCOVERY, kind: 'EndpointSlice', metadata, addressType, endpoints, ports };
}

/** The Service the slice belongs to, from its label; undefined for a slice of no Service. */
export function sliceServiceName(slice: EndpointSliceObject): string | undefined {
  return slice.metadata.labels[LABEL_SERVICE_NAME];
}
