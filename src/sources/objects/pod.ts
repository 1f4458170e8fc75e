// v1 Pod: where it runs, its addresses, its labels (policy subjects and peers) and its named
// container ports (a NetworkPolicy or Service port given by name resolves per pod).
//
// A Pod without spec or containers is accepted: standalone manifests name pods that kelp-cni
// wires, and need no container list. Everything else follows the API server.
import { checkName, expectObject, expectString, fail, Json, NamespacedMeta, optArray, optBoolean, optEnum, optObject, optString, validateMeta } from './meta';
import { checkDualStack, checkPortName, ipField, ipFamilyOf, portNumber, Protocol, protocolOf } from './net';

export interface ContainerPort {
  containerPort: number;
  protocol: Protocol;
  /** IANA_SVC_NAME, unique within its container. */
  name?: string;
}

export interface Container {
  name: string;
  ports: ContainerPort[];
}

export const POD_PHASES = ['Pending', 'Running', 'Succeeded', 'Failed', 'Unknown'] as const;
export type PodPhase = (typeof POD_PHASES)[number];

export interface PodStatus {
  phase?: PodPhase;
  /** podIPs[0], as the API server keeps it. */
  podIP?: string;
  /** At most one per family, canonical text. */
  podIPs: Array<{ ip: string }>;
}

export interface PodObject {
  apiVersion: 'v1';
  kind: 'Pod';
  metadata: NamespacedMeta;
  spec: { nodeName?: string; hostNetwork?: boolean; containers: Container[] };
  /** Present when the source gave one (the API always does; manifests seldom). */
  status?: PodStatus;
}

function validateContainer(v: Json, f: string): Container {
  const c = expectObject(v, f);
  const name = checkName(expectString(c.name, `${f}.name`), `${f}.name`, 'DNS1123Label');
  const names = new Set<string>();
  const ports = optArray(c.ports, `${f}.ports`).map((p, j): ContainerPort => {
    const pf = `${f}.ports[${j}]`;
    const po = expectObject(p, pf);
    const port: ContainerPort = { containerPort: 0, protocol: 'TCP' };
    const portName = optString(po.name, `${pf}.name`);
    if (portName !== undefined) {
      checkPortName(portName, `${pf}.name`);
      if (names.has(portName)) fail(`${pf}.name`, `duplicate port name ${JSON.stringify(portName)} in this container`);
      names.add(portName);
    }
    port.containerPort = portNumber(po.containerPort, `${pf}.containerPort`);
    port.protocol = protocolOf(po.protocol, `${pf}.protocol`);
    if (portName !== undefined) port.name = portName;
    return port;
  });
  return { name, ports };
}

function validateStatus(v: Record<string, Json>): PodStatus {
  const status: PodStatus = { podIPs: [] };
  const phase = optEnum(v.phase, 'status.phase', POD_PHASES);
  if (phase !== undefined) status.phase = phase;
  // As the v1→internal conversion does: podIP seeds an empty podIPs, and wins when they differ.
  let ips = optArray(v.podIPs, 'status.podIPs').map((e, i) => expectObject(e, `status.podIPs[${i}]`).ip);
  const podIP = optString(v.podIP, 'status.podIP');
  if (podIP !== undefined && (ips.length === 0 || ips[0] !== podIP)) ips = [podIP];
  const texts = ips.map((ip, i) => ipField(ip, `status.podIPs[${i}]`));
  checkDualStack(texts, 'status.podIPs', 'IP', ipFamilyOf);
  status.podIPs = texts.map((ip) => ({ ip }));
  if (texts.length > 0) status.podIP = texts[0];
  return status;
}

export function validatePod(o: Record<string, Json>): PodObject {
  const metadata = validateMeta(o.metadata, { namespaced: true, name: 'DNS1123Subdomain' });
  const specIn = optObject(o.spec, 'spec') ?? {};
  const spec: PodObject['spec'] = { containers: [] };
  const nodeName = optString(specIn.nodeName, 'spec.nodeName');
  if (nodeName !== undefined) spec.nodeName = checkName(nodeName, 'spec.nodeName', 'DNS1123Subdomain');
  const hostNetwork = optBoolean(specIn.hostNetwork, 'spec.hostNetwork');
  if (hostNetwork !== undefined) spec.hostNetwork = hostNetwork;
  const seen = new Set<string>();
  spec.containers = optArray(specIn.containers, 'spec.containers').map((c, i) => {
    const container = validateContainer(c, `spec.containers[${i}]`);
    if (seen.has(container.name)) fail(`spec.containers[${i}].name`, `duplicate container name ${JSON.stringify(container.name)}`);
    seen.add(container.name);
    return container;
  });
  const pod: PodObject = { apiVersion: 'v1', kind: 'Pod', metadata, spec };
  const statusIn = optObject(o.status, 'status');
  if (statusIn) pod.status = validateStatus(statusIn);
  return pod;
}

/**
 * The port number a name refers to in this pod, for `protocol`: the first container port with
 * that name and protocol, in container order, as the EndpointSlice controller resolves a
 * Service's targetPort.
 */
export function namedPort(pod: PodObject, name: string, protocol: Protocol): number | undefined {
  for (const c of pod.spec.containers) {
    for (const p of c.ports) if (p.name === name && p.protocol === protocol) return p.containerPort;
  }
  return undefined;
}
