// discovery.k8s.io/v1 EndpointSlice: the backends of a Service (its `kubernetes.io/service-name`
// label names it). Validation follows the API server's ValidateEndpointSlice; conditions are
// normalised with the nil meanings the API documents and kube-proxy applies.
import { checkName, expectEnum, expectObject, expectString, fail, Json, labelValueProblem, NamespacedMeta, optArray, optBoolean, optInteger, optObject, optString, qualifiedNameProblem, validateMeta } from './meta';
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

function validateAddress(v: Json, field: string, type: AddressType): string {
  if (type === 'IPv4' || type === 'IPv6') return nonSpecialIpField(v, field, type === 'IPv4' ? 4 : 6);
  const s = expectString(v, field);
  // A fully qualified domain name: a DNS subdomain with at least two labels (a trailing dot allowed).
  const name = s.replace(/\.$/, '');
  checkName(name, field, 'DNS1123Subdomain');
  if (!name.includes('.')) fail(field, `${JSON.stringify(s)} must be a fully qualified domain name (at least two labels)`);
  return s;
}

function validateEndpoint(v: Json, f: string, type: AddressType): Endpoint {
  const e = expectObject(v, f);
  const addressesIn = optArray(e.addresses, `${f}.addresses`);
  if (addressesIn.length === 0) fail(`${f}.addresses`, 'must contain at least 1 address');
  if (addressesIn.length > MAX_ADDRESSES) fail(`${f}.addresses`, `must have at most ${MAX_ADDRESSES} items, got ${addressesIn.length}`);
  const addresses = addressesIn.map((a, i) => validateAddress(a, `${f}.addresses[${i}]`, type));
  const c = optObject(e.conditions, `${f}.conditions`) ?? {};
  const conditions: EndpointConditions = {
    ready: optBoolean(c.ready, `${f}.conditions.ready`) ?? true,
    serving: optBoolean(c.serving, `${f}.conditions.serving`) ?? true,
    terminating: optBoolean(c.terminating, `${f}.conditions.terminating`) ?? false,
  };
  const out: Endpoint = { addresses, conditions };
  const hostname = optString(e.hostname, `${f}.hostname`);
  if (hostname !== undefined) out.hostname = checkName(hostname, `${f}.hostname`, 'DNS1123Label');
  const nodeName = optString(e.nodeName, `${f}.nodeName`);
  if (nodeName !== undefined) out.nodeName = checkName(nodeName, `${f}.nodeName`, 'DNS1123Subdomain');
  const zone = optString(e.zone, `${f}.zone`);
  if (zone !== undefined) out.zone = zone;
  if (optObject(e.hints, `${f}.hints`)) out.hints = validateHints(e.hints, `${f}.hints`);
  const ref = optObject(e.targetRef, `${f}.targetRef`);
  if (ref) {
    const targetRef: NonNullable<Endpoint['targetRef']> = {};
    for (const key of ['kind', 'namespace', 'name', 'uid'] as const) {
      const s = optString(ref[key], `${f}.targetRef.${key}`);
      if (s !== undefined) targetRef[key] = s;
    }
    out.targetRef = targetRef;
  }
  return out;
}

function validatePort(v: Json, f: string): EndpointPort {
  const p = expectObject(v, f);
  const name = optString(p.name, `${f}.name`) ?? '';
  if (name !== '') checkName(name, `${f}.name`, 'DNS1123Label');
  const out: EndpointPort = { name, protocol: protocolOf(p.protocol, `${f}.protocol`) };
  // The API server accepts any int32 here; kelp can program only real port numbers.
  const port = optInteger(p.port, `${f}.port`, 1, 65535);
  if (port !== undefined) out.port = port;
  const appProtocol = optString(p.appProtocol, `${f}.appProtocol`);
  if (appProtocol !== undefined) {
    const problem = qualifiedNameProblem(appProtocol);
    if (problem) fail(`${f}.appProtocol`, problem);
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
  const endpoints = endpointsIn.map((e, i) => validateEndpoint(e, `endpoints[${i}]`, addressType));
  const portsIn = optArray(o.ports, 'ports');
  if (portsIn.length > MAX_PORTS) fail('ports', `must have at most ${MAX_PORTS} items, got ${portsIn.length}`);
  const names = new Set<string>();
  const ports = portsIn.map((p, i) => {
    const port = validatePort(p, `ports[${i}]`);
    if (names.has(port.name)) fail(`ports[${i}].name`, `duplicate port name ${JSON.stringify(port.name)}`);
    names.add(port.name);
    return port;
  });
  return { apiVersion: API_VERSION_DISCOVERY, kind: 'EndpointSlice', metadata, addressType, endpoints, ports };
}

/** The Service the slice belongs to, from its label; undefined for a slice of no Service. */
export function sliceServiceName(slice: EndpointSliceObject): string | undefined {
  return slice.metadata.labels[LABEL_SERVICE_NAME];
}
