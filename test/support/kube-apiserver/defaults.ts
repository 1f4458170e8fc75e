// Per-kind behaviour of the real server that clients read back: defaulted fields, allocated
// service addresses, the namespace name label, a CRD's Established status, and the name rules.
// Only what kelp and kubectl look at is defaulted; the rest of each kind is stored as sent.
import type { StatusCause } from './status';
import { CRDS, NAMESPACES, NETWORK_POLICIES, Obj, PODS, ResourceType, SERVICES, ENDPOINT_SLICES } from './resources';

export interface AllocationView {
  /** Cluster IPs and node ports held by services other than `except` (`<namespace>/<name>`). */
  servicesInUse(except: string): { ips: Set<string>; nodePorts: Set<number> };
}

const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1035 = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;

export function validateName(t: ResourceType, name: string): StatusCause | undefined {
  const cause = (message: string): StatusCause => ({
    reason: 'FieldValueInvalid',
    field: 'metadata.name',
    message: `Invalid value: "${name}": ${message}`,
  });
  if (t === NAMESPACES) {
    if (name.length > 63 || !LABEL.test(name)) {
      return cause(
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
      );
    }
  } else if (t === SERVICES) {
    if (name.length > 63 || !DNS1035.test(name)) {
      return cause(
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
      );
    }
  } else if (name.length > 253 || !SUBDOMAIN.test(name)) {
    return cause(
      "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    );
  }
  return undefined;
}

/** Checks a CRD beyond its name: the name must be `<plural>.<group>`. */
export function validateCrd(crd: Obj): StatusCause[] {
  const spec = crd.spec ?? {};
  const causes: StatusCause[] = [];
  const plural = spec.names?.plural;
  if (!spec.group) causes.push({ reason: 'FieldValueRequired', field: 'spec.group', message: 'Required value' });
  if (!plural) causes.push({ reason: 'FieldValueRequired', field: 'spec.names.plural', message: 'Required value' });
  if (!spec.names?.kind) causes.push({ reason: 'FieldValueRequired', field: 'spec.names.kind', message: 'Required value' });
  if (spec.scope !== 'Namespaced' && spec.scope !== 'Cluster') {
    causes.push({
      reason: 'FieldValueNotSupported',
      field: 'spec.scope',
      message: `Unsupported value: "${spec.scope ?? ''}": supported values: "Cluster", "Namespaced"`,
    });
  }
  if (!Array.isArray(spec.versions) || spec.versions.length === 0) {
    causes.push({ reason: 'FieldValueRequired', field: 'spec.versions', message: 'Required value: must have exactly one version marked as storage version' });
  } else if (spec.versions.filter((v: Obj) => v.storage).length !== 1) {
    causes.push({ reason: 'FieldValueInvalid', field: 'spec.versions', message: 'Invalid value: must have exactly one version marked as storage version' });
  }
  if (plural && spec.group && crd.metadata.name !== `${plural}.${spec.group}`) {
    causes.push({
      reason: 'FieldValueInvalid',
      field: 'metadata.name',
      message: `Invalid value: "${crd.metadata.name}": must be spec.names.plural+"."+spec.group`,
    });
  }
  return causes;
}

function defaultProtocol(ports: unknown): void {
  if (!Array.isArray(ports)) return;
  for (const p of ports) if (p && typeof p === 'object' && !p.protocol) p.protocol = 'TCP';
}

const FIRST_SERVICE_IP = (10 << 24) | (96 << 16) | 10; // 10.96.0.10: .1 is the `kubernetes` service's
const SERVICE_IPS = 1 << 20; // 10.96.0.0/12
const ipString = (n: number) => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');

function defaultService(svc: Obj, old: Obj | undefined, alloc: AllocationView): StatusCause[] {
  const spec = (svc.spec ??= {});
  svc.status ??= { loadBalancer: {} };
  const oldSpec = old?.spec ?? {};
  spec.type ??= 'ClusterIP';
  spec.sessionAffinity ??= 'None';
  const usesNodePorts = spec.type === 'NodePort' || spec.type === 'LoadBalancer';
  if (spec.type !== 'ExternalName') spec.internalTrafficPolicy ??= 'Cluster';
  if (usesNodePorts) spec.externalTrafficPolicy ??= 'Cluster';
  const inUse = alloc.servicesInUse(`${svc.metadata.namespace}/${svc.metadata.name}`);
  for (const p of spec.ports ?? []) {
    p.protocol ??= 'TCP';
    p.targetPort ??= p.port;
    if (usesNodePorts && p.nodePort === undefined) {
      const before = (oldSpec.ports ?? []).find((q: Obj) => q.port === p.port && q.protocol === p.protocol);
      p.nodePort = before?.nodePort;
      for (let n = 30000; p.nodePort === undefined && n <= 32767; n += 1) {
        if (!inUse.nodePorts.has(n)) p.nodePort = n;
      }
      inUse.nodePorts.add(p.nodePort);
    }
  }
  if (spec.type === 'ExternalName') return [];
  // As the real server does since 1.20, an update that leaves the address out keeps the old one.
  if (!spec.clusterIP && oldSpec.clusterIP) {
    spec.clusterIP = oldSpec.clusterIP;
    spec.clusterIPs ??= oldSpec.clusterIPs;
  }
  if (old && oldSpec.clusterIP && spec.clusterIP !== oldSpec.clusterIP) {
    return [{ reason: 'FieldValueInvalid', field: 'spec.clusterIPs[0]', message: `Invalid value: []string{"${spec.clusterIP}"}: may not change once set` }];
  }
  if (!spec.clusterIP) {
    for (let i = 0; i < SERVICE_IPS - 10 && !spec.clusterIP; i += 1) {
      const ip = ipString(FIRST_SERVICE_IP + i);
      if (!inUse.ips.has(ip)) spec.clusterIP = ip;
    }
  } else if (spec.clusterIP !== 'None' && !old && inUse.ips.has(spec.clusterIP)) {
    return [
      {
        reason: 'FieldValueInvalid',
        field: 'spec.clusterIPs',
        message: `Invalid value: []string{"${spec.clusterIP}"}: failed to allocate IP ${spec.clusterIP}: provided IP is already allocated`,
      },
    ];
  }
  spec.clusterIPs ??= [spec.clusterIP];
  spec.ipFamilies ??= ['IPv4'];
  spec.ipFamilyPolicy ??= 'SingleStack';
  return [];
}

/** Now, at the second, as the API server writes timestamps. */
export function timestampNow(): string {
  return new Date(Math.floor(Date.now() / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

function defaultCrd(crd: Obj, old: Obj | undefined): void {
  const spec = crd.spec;
  const names = spec.names;
  names.singular ??= names.kind.toLowerCase();
  names.listKind ??= `${names.kind}List`;
  spec.conversion ??= { strategy: 'None' };
  const storage = spec.versions.filter((v: Obj) => v.storage).map((v: Obj) => v.name);
  if (old && crd.status) {
    crd.status.acceptedNames = { ...names };
    const stored: string[] = crd.status.storedVersions ?? [];
    crd.status.storedVersions = [...stored, ...storage.filter((v: string) => !stored.includes(v))];
    return;
  }
  const at = timestampNow();
  crd.status = {
    conditions: [
      { type: 'NamesAccepted', status: 'True', lastTransitionTime: at, reason: 'NoConflicts', message: 'no conflicts found' },
      { type: 'Established', status: 'True', lastTransitionTime: at, reason: 'InitialNamesAccepted', message: 'the initial names have been accepted' },
    ],
    acceptedNames: { ...names },
    storedVersions: storage,
  };
}

/**
 * Fills what the real server defaults on create (`old` undefined) and update. Returns
 * validation failures (an address already in use, a changed cluster IP).
 */
export function applyDefaults(t: ResourceType, obj: Obj, old: Obj | undefined, alloc: AllocationView): StatusCause[] {
  switch (t) {
    case NAMESPACES:
      (obj.metadata.labels ??= {})['kubernetes.io/metadata.name'] = obj.metadata.name;
      (obj.spec ??= {}).finalizers ??= ['kubernetes'];
      (obj.status ??= {}).phase ??= 'Active';
      return [];
    case PODS:
      obj.spec ??= {};
      obj.spec.restartPolicy ??= 'Always';
      obj.spec.dnsPolicy ??= 'ClusterFirst';
      obj.spec.schedulerName ??= 'default-scheduler';
      for (const c of [...(obj.spec.containers ?? []), ...(obj.spec.initContainers ?? [])]) defaultProtocol(c.ports);
      (obj.status ??= {}).phase ??= 'Pending';
      return [];
    case SERVICES:
      return defaultService(obj, old, alloc);
    case ENDPOINT_SLICES:
      defaultProtocol(obj.ports);
      return [];
    case NETWORK_POLICIES: {
      const spec = (obj.spec ??= {});
      if (!spec.policyTypes || spec.policyTypes.length === 0) {
        spec.policyTypes = Array.isArray(spec.egress) && spec.egress.length > 0 ? ['Ingress', 'Egress'] : ['Ingress'];
      }
      for (const rule of [...(spec.ingress ?? []), ...(spec.egress ?? [])]) defaultProtocol(rule.ports);
      return [];
    }
    case CRDS: {
      const causes = validateCrd(obj);
      if (causes.length === 0) defaultCrd(obj, old);
      return causes;
    }
    default:
      return [];
  }
}

