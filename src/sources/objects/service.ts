// v1 Service: the frontends kelp's load balancer programs. Validation and defaults follow the
// API server (ValidateService, SetDefaults_Service); fields the API server allocates (clusterIP,
// nodePort, healthCheckNodePort) may be missing from a manifest, and kelp then has none.
import { tryParseIp } from '../../ipam/ip';
import {
  checkName,
  eachItem,
  expectEnum,
  expectObject,
  fail,
  Json,
  labelMap,
  NamespacedMeta,
  optArray,
  optBoolean,
  optEnum,
  optInteger,
  optObject,
  optString,
  stringList,
  validateMeta,
} from './meta';
import { checkDualStack, cidrField, ipFamilyOf, nonSpecialIpField, parseIpField, portNumber, portNumberOrName, Protocol, protocolOf } from './net';

export const SERVICE_TYPES = ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'] as const;
export type ServiceType = (typeof SERVICE_TYPES)[number];
export const TRAFFIC_POLICIES = ['Cluster', 'Local'] as const;
export type TrafficPolicy = (typeof TRAFFIC_POLICIES)[number];
/** PreferClose is the older name of PreferSameZone. */
export const TRAFFIC_DISTRIBUTIONS = ['PreferClose', 'PreferSameZone', 'PreferSameNode'] as const;
export type TrafficDistribution = (typeof TRAFFIC_DISTRIBUTIONS)[number];
export const SESSION_AFFINITIES = ['None', 'ClientIP'] as const;
export type SessionAffinity = (typeof SESSION_AFFINITIES)[number];
export const LOAD_BALANCER_IP_MODES = ['VIP', 'Proxy'] as const;
export type LoadBalancerIPMode = (typeof LOAD_BALANCER_IP_MODES)[number];

/** clusterIP of a headless Service: no virtual IP, DNS names the endpoints directly. */
export const CLUSTER_IP_NONE = 'None';
export const DEFAULT_CLIENT_IP_TIMEOUT_SECONDS = 10800;
export const MAX_CLIENT_IP_TIMEOUT_SECONDS = 86400;
/**
 * Services (and EndpointSlices) with either label are not for the default service proxy:
 * kube-proxy's informers exclude them, and so does kelp's load balancer.
 */
export const LABEL_SERVICE_PROXY_NAME = 'service.kubernetes.io/service-proxy-name';
export const LABEL_HEADLESS = 'service.kubernetes.io/headless';
/** The older form of spec.loadBalancerSourceRanges (comma-separated), used when the field is empty. */
export const ANNOTATION_LB_SOURCE_RANGES = 'service.beta.kubernetes.io/load-balancer-source-ranges';
/** A LoadBalancer may not expose the kubelet's port (a guard against over-open cloud firewalls). */
const KUBELET_PORT = 10250;

export interface ServicePort {
  /** Required (DNS-1123 label) and unique when the Service has more than one port. */
  name?: string;
  protocol: Protocol;
  port: number;
  /** A number, or a container port's name resolved per pod; defaults to `port`. */
  targetPort: number | string;
  /** Absent: none allocated (ClusterIP and ExternalName Services never have one). */
  nodePort?: number;
}

export interface LoadBalancerIngress {
  ip?: string;
  hostname?: string;
  /** Set when `ip` is (default VIP); Proxy means the load balancer rewrites the destination. */
  ipMode?: LoadBalancerIPMode;
}

export interface ServiceObject {
  apiVersion: 'v1';
  kind: 'Service';
  metadata: NamespacedMeta;
  spec: {
    type: ServiceType;
    /** clusterIPs[0]; absent when not allocated and for ExternalName. */
    clusterIP?: string;
    /** ["None"] for a headless Service; else at most one address per family, canonical. */
    clusterIPs: string[];
    ports: ServicePort[];
    /**
     * Pods whose labels hold all of these back the Service. Absent (or empty, which the API
     * server stores the same way): the Service has no selector, its EndpointSlices are made by
     * someone else, never derived.
     */
    selector?: Record<string, string>;
    externalIPs: string[];
    /** ExternalName only: the DNS name the Service is an alias for. */
    externalName?: string;
    sessionAffinity: SessionAffinity;
    /** Present exactly when sessionAffinity is ClientIP. */
    sessionAffinityConfig?: { clientIP: { timeoutSeconds: number } };
    /** Present exactly when the Service is reachable from outside (NodePort, LoadBalancer, external IPs). */
    externalTrafficPolicy?: TrafficPolicy;
    /** LoadBalancer with externalTrafficPolicy Local only. */
    healthCheckNodePort?: number;
    /** Defaulted to Cluster except for ExternalName. */
    internalTrafficPolicy?: TrafficPolicy;
    trafficDistribution?: TrafficDistribution;
    /** LoadBalancer only; canonical CIDRs; from the annotation when the field is empty. */
    loadBalancerSourceRanges: string[];
    publishNotReadyAddresses: boolean;
  };
  status: { loadBalancer: { ingress: LoadBalancerIngress[] } };
}

function validatePorts(specIn: Record<string, Json>, type: ServiceType): ServicePort[] {
  const list = optArray(specIn.ports, 'spec.ports');
  const names = new Set<string>();
  // Each port's fields named relative to it: eachItem puts `spec.ports[i]` in front on error.
  const ports = eachItem(list, 'spec.ports', (p): ServicePort => {
    const po = expectObject(p, '');
    const name = optString(po.name, 'name');
    if (name === undefined && list.length > 1) fail('name', 'required when the Service has more than one port');
    if (name !== undefined) {
      checkName(name, 'name', 'DNS1123Label');
      if (names.has(name)) fail('name', `duplicate port name ${JSON.stringify(name)}`);
      names.add(name);
    }
    const port = portNumber(po.port, 'port');
    const protocol = protocolOf(po.protocol, 'protocol');
    // SetDefaults_Service: an unset (0 or "") targetPort is the port itself.
    const targetPort = po.targetPort === undefined || po.targetPort === null || po.targetPort === 0 || po.targetPort === '' ? port : portNumberOrName(po.targetPort, 'targetPort');
    const out: ServicePort = { protocol, port, targetPort };
    if (name !== undefined) out.name = name;
    const nodePort = optInteger(po.nodePort, 'nodePort', 0, 65535);
    if (nodePort) {
      if (type === 'ClusterIP') fail('nodePort', "may not be used when `type` is 'ClusterIP'");
      out.nodePort = nodePort;
    }
    if (type === 'LoadBalancer' && port === KUBELET_PORT) fail('', `may not expose port ${KUBELET_PORT} externally since it is used by kubelet`);
    return out;
  });
  const seen = new Set<string>();
  const seenNodePorts = new Set<string>();
  ports.forEach((p, i) => {
    if (p.nodePort !== undefined) {
      if (seenNodePorts.has(`${p.protocol}/${p.nodePort}`)) fail(`spec.ports[${i}].nodePort`, `duplicate nodePort ${p.nodePort}/${p.protocol}`);
      seenNodePorts.add(`${p.protocol}/${p.nodePort}`);
    }
  });
  ports.forEach((p, i) => {
    if (seen.has(`${p.protocol}/${p.port}`)) fail(`spec.ports[${i}]`, `duplicate port ${p.port}/${p.protocol}`);
    seen.add(`${p.protocol}/${p.port}`);
  });
  return ports;
}

/** clusterIP, clusterIPs, ipFamilies and ipFamilyPolicy, as validateServiceClusterIPsRelatedFields. */
function validateClusterIPs(specIn: Record<string, Json>, type: ServiceType): string[] {
  const clusterIP = optString(specIn.clusterIP, 'spec.clusterIP');
  let ips = stringList(specIn.clusterIPs, 'spec.clusterIPs');
  // The API server fills the plural from the singular on create (an older client sets only that).
  if (clusterIP !== undefined && ips.length === 0) ips = [clusterIP];
  const families = stringList(specIn.ipFamilies, 'spec.ipFamilies');
  if (type === 'ExternalName') {
    if (ips.length > 0) fail('spec.clusterIPs', 'may not be set for ExternalName services');
    if (families.length > 0) fail('spec.ipFamilies', 'may not be set for ExternalName services');
    if (optString(specIn.ipFamilyPolicy, 'spec.ipFamilyPolicy') !== undefined) fail('spec.ipFamilyPolicy', 'may not be set for ExternalName services');
    return [];
  }
  if (clusterIP !== undefined && ips[0] !== clusterIP) fail('spec.clusterIPs', `first value must match \`clusterIP\` (${JSON.stringify(clusterIP)}), got ${JSON.stringify(ips[0])}`);
  if (clusterIP === undefined && ips.length > 0) fail('spec.clusterIPs', 'must be empty when `clusterIP` is not specified');
  const seenFamilies = new Set<string>();
  families.forEach((fam, i) => {
    expectEnum(fam, `spec.ipFamilies[${i}]`, ['IPv4', 'IPv6']);
    if (seenFamilies.has(fam)) fail(`spec.ipFamilies[${i}]`, `duplicate value ${JSON.stringify(fam)}`);
    seenFamilies.add(fam);
  });
  optEnum(specIn.ipFamilyPolicy, 'spec.ipFamilyPolicy', ['SingleStack', 'PreferDualStack', 'RequireDualStack']);
  if (ips[0] === CLUSTER_IP_NONE) {
    if (ips.length > 1) fail('spec.clusterIPs', "'None' must be the first and only value");
    return ips;
  }
  const parsed = ips.map((ip, i) => parseIpField(ip, `spec.clusterIPs[${i}]`));
  if (ips.length > 2) fail('spec.clusterIPs', 'may only hold up to 2 values');
  const texts = parsed.map((p) => p.text);
  checkDualStack(texts, 'spec.clusterIPs', 'IP', ipFamilyOf);
  parsed.forEach((p, i) => {
    const want = families[i];
    if (want !== undefined && want !== `IPv${p.family}`) fail(`spec.clusterIPs[${i}]`, `expected an ${want} value as indicated by \`ipFamilies[${i}]\`, got ${JSON.stringify(p.text)}`);
  });
  return texts;
}

function validateSourceRanges(specIn: Record<string, Json>, annotations: Record<string, string>, type: ServiceType): string[] {
  const fieldIn = stringList(specIn.loadBalancerSourceRanges, 'spec.loadBalancerSourceRanges');
  const annotated = Object.prototype.hasOwnProperty.call(annotations, ANNOTATION_LB_SOURCE_RANGES);
  if (fieldIn.length === 0 && !annotated) return [];
  // The API server names this field "spec.LoadBalancerSourceRanges" (sic); kelp uses its JSON name.
  const field = fieldIn.length > 0 ? 'spec.loadBalancerSourceRanges' : `metadata.annotations[${JSON.stringify(ANNOTATION_LB_SOURCE_RANGES)}]`;
  if (type !== 'LoadBalancer') fail(field, "may only be used when `type` is 'LoadBalancer'");
  if (fieldIn.length > 0) return fieldIn.map((c, i) => cidrField(c, `${field}[${i}]`));
  const text = annotations[ANNOTATION_LB_SOURCE_RANGES].trim();
  // An empty annotation restricts nothing.
  return text === '' ? [] : text.split(',').map((c) => cidrField(c, field));
}

function validateLoadBalancerStatus(o: Record<string, Json>): LoadBalancerIngress[] {
  const status = optObject(o.status, 'status') ?? {};
  const lb = optObject(status.loadBalancer, 'status.loadBalancer') ?? {};
  return optArray(lb.ingress, 'status.loadBalancer.ingress').map((e, i) => {
    const f = `status.loadBalancer.ingress[${i}]`;
    const ing = expectObject(e, f);
    const out: LoadBalancerIngress = {};
    const ip = optString(ing.ip, `${f}.ip`);
    if (ip !== undefined) out.ip = parseIpField(ip, `${f}.ip`).text;
    const hostname = optString(ing.hostname, `${f}.hostname`);
    if (hostname !== undefined) {
      checkName(hostname, `${f}.hostname`, 'DNS1123Subdomain');
      // Every dotted quad is also a DNS subdomain.
      if (tryParseIp(hostname)) fail(`${f}.hostname`, `${JSON.stringify(hostname)} must be a DNS name, not an IP address`);
      out.hostname = hostname;
    }
    const ipMode = optEnum(ing.ipMode, `${f}.ipMode`, LOAD_BALANCER_IP_MODES);
    if (ipMode !== undefined && ip === undefined) fail(`${f}.ipMode`, 'may not be specified when `ip` is not');
    if (ip !== undefined) out.ipMode = ipMode ?? 'VIP';
    return out;
  });
}

export function validateService(o: Record<string, Json>): ServiceObject {
  const metadata = validateMeta(o.metadata, { namespaced: true, name: 'DNS1035Label' });
  const specIn = optObject(o.spec, 'spec') ?? {};
  const type = optEnum(specIn.type, 'spec.type', SERVICE_TYPES) ?? 'ClusterIP';
  const clusterIPs = validateClusterIPs(specIn, type);
  const headless = clusterIPs[0] === CLUSTER_IP_NONE;
  if (headless && (type === 'NodePort' || type === 'LoadBalancer')) fail('spec.clusterIPs[0]', `may not be set to 'None' for ${type} services`);
  const ports = validatePorts(specIn, type);
  if (ports.length === 0 && !headless && type !== 'ExternalName') fail('spec.ports', 'required, missing');

  const spec: ServiceObject['spec'] = {
    type,
    clusterIPs,
    ports,
    externalIPs: [],
    sessionAffinity: 'None',
    loadBalancerSourceRanges: [],
    publishNotReadyAddresses: false,
  };
  if (clusterIPs.length > 0) spec.clusterIP = clusterIPs[0];

  if (type === 'ExternalName') {
    const name = optString(specIn.externalName, 'spec.externalName');
    if (name === undefined) fail('spec.externalName', 'required for ExternalName services');
    // A trailing dot marks the name fully qualified.
    checkName(name.replace(/\.$/, ''), 'spec.externalName', 'DNS1123Subdomain');
    spec.externalName = name;
  }

  const selector = labelMap(specIn.selector, 'spec.selector');
  if (Object.keys(selector).length > 0) spec.selector = selector;

  spec.sessionAffinity = optEnum(specIn.sessionAffinity, 'spec.sessionAffinity', SESSION_AFFINITIES) ?? 'None';
  const affinityConfig = optObject(specIn.sessionAffinityConfig, 'spec.sessionAffinityConfig');
  if (spec.sessionAffinity === 'ClientIP') {
    const clientIP = optObject(affinityConfig?.clientIP, 'spec.sessionAffinityConfig.clientIP');
    const timeoutSeconds =
      optInteger(clientIP?.timeoutSeconds, 'spec.sessionAffinityConfig.clientIP.timeoutSeconds', 1, MAX_CLIENT_IP_TIMEOUT_SECONDS) ?? DEFAULT_CLIENT_IP_TIMEOUT_SECONDS;
    spec.sessionAffinityConfig = { clientIP: { timeoutSeconds } };
  } else if (affinityConfig !== undefined) {
    fail('spec.sessionAffinityConfig', 'must not be set when session affinity is None');
  }

  spec.externalIPs = stringList(specIn.externalIPs, 'spec.externalIPs').map((ip, i) => nonSpecialIpField(ip, `spec.externalIPs[${i}]`));
  spec.loadBalancerSourceRanges = validateSourceRanges(specIn, metadata.annotations, type);

  const external = type === 'NodePort' || type === 'LoadBalancer' || (type === 'ClusterIP' && spec.externalIPs.length > 0);
  const etp = optEnum(specIn.externalTrafficPolicy, 'spec.externalTrafficPolicy', TRAFFIC_POLICIES);
  if (external) spec.externalTrafficPolicy = etp ?? 'Cluster';
  else if (etp !== undefined) fail('spec.externalTrafficPolicy', 'may only be set for externally-accessible services');

  const hcnp = optInteger(specIn.healthCheckNodePort, 'spec.healthCheckNodePort', 0, 65535);
  if (hcnp) {
    if (type !== 'LoadBalancer' || spec.externalTrafficPolicy !== 'Local') fail('spec.healthCheckNodePort', "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'");
    spec.healthCheckNodePort = hcnp;
  }

  const itp = optEnum(specIn.internalTrafficPolicy, 'spec.internalTrafficPolicy', TRAFFIC_POLICIES);
  if (itp !== undefined || type !== 'ExternalName') spec.internalTrafficPolicy = itp ?? 'Cluster';
  const td = optEnum(specIn.trafficDistribution, 'spec.trafficDistribution', TRAFFIC_DISTRIBUTIONS);
  if (td !== undefined) spec.trafficDistribution = td;
  spec.publishNotReadyAddresses = optBoolean(specIn.publishNotReadyAddresses, 'spec.publishNotReadyAddresses') ?? false;

  return { apiVersion: 'v1', kind: 'Service', metadata, spec, status: { loadBalancer: { ingress: validateLoadBalancerStatus(o) } } };
}

export function isHeadless(svc: ServiceObject): boolean {
  return svc.spec.clusterIPs[0] === CLUSTER_IP_NONE;
}
