// What this server serves: the built-in kinds kelp reads (namespaces, pods, nodes, services,
// EndpointSlices, NetworkPolicies), a few more stored as they are (what kelp's manifests and
// an agent's housekeeping use), and CustomResourceDefinitions, whose served versions become
// resource types when a CRD is written and stop being served when it is deleted.
// Each type carries what the generic registry (registry.ts) needs to act like the real
// server for that kind: scope, status subresource, selectable fields, defaults, merge keys.
import type { MergeKeys } from './patch';

export type Obj = Record<string, any>;

/** One printed column of `kubectl get` (a metav1.TableColumnDefinition and its cell). */
export interface Column {
  name: string;
  type: 'string' | 'integer' | 'date';
  format?: string;
  priority: number;
  description: string;
  cell(obj: Obj, now: number): string | number;
}

export interface ResourceType {
  group: string;
  version: string;
  /** The plural, as in URLs. */
  resource: string;
  singular: string;
  kind: string;
  listKind: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  /** Has `/status`: writes to the main resource keep the stored status, `/status` writes change only it. */
  statusSubresource: boolean;
  /** The status a create sends is kept (nodes); otherwise a type with `/status` starts without one. */
  statusOnCreate: boolean;
  /** Field selector labels beyond metadata.name (and metadata.namespace when namespaced). */
  fields: Record<string, (obj: Obj) => string>;
  /** Strategic merge patch support; `undefined` for custom resources (the real server answers 415). */
  mergeKeys?: MergeKeys;
  /** Built-in lists drop each item's kind/apiVersion on the wire; custom resource lists keep them. */
  custom: boolean;
  /** Storage is shared by all versions of one group/resource (CRD conversion strategy None). */
  bucket: string;
  /** CRD `additionalPrinterColumns`, when it has them (built-ins' columns live in table.ts). */
  printerColumns?: Column[];
  /** The CRD that defines this type. */
  crdName?: string;
}

export const VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

export function apiVersionOf(t: { group: string; version: string }): string {
  return t.group ? `${t.group}/${t.version}` : t.version;
}

const str = (v: unknown) => (v === undefined || v === null ? '' : String(v));

const METADATA_KEYS: MergeKeys = { 'metadata.finalizers': '', 'metadata.ownerReferences': 'uid' };

/** The merge keys of a PodSpec at `at` (`spec` in a Pod, `spec.template.spec` in a DaemonSet). */
function podSpecKeys(at: string): Record<string, string> {
  const keys: Record<string, string> = {
    [`${at}.volumes`]: 'name',
    [`${at}.imagePullSecrets`]: 'name',
    [`${at}.hostAliases`]: 'ip',
  };
  for (const field of ['containers', 'initContainers', 'ephemeralContainers']) {
    Object.assign(keys, {
      [`${at}.${field}`]: 'name',
      [`${at}.${field}[].ports`]: 'containerPort',
      [`${at}.${field}[].env`]: 'name',
      [`${at}.${field}[].volumeMounts`]: 'mountPath',
      [`${at}.${field}[].volumeDevices`]: 'devicePath',
    });
  }
  return keys;
}

function builtin(
  t: Pick<ResourceType, 'group' | 'version' | 'resource' | 'kind' | 'namespaced'> & Partial<ResourceType>,
): ResourceType {
  return {
    singular: t.kind.toLowerCase(),
    listKind: `${t.kind}List`,
    shortNames: [],
    categories: [],
    statusSubresource: false,
    statusOnCreate: false,
    fields: {},
    custom: false,
    bucket: `${t.group}/${t.resource}`,
    ...t,
    mergeKeys: { ...METADATA_KEYS, ...(t.mergeKeys ?? {}) },
  };
}

export const NAMESPACES = builtin({
  group: '',
  version: 'v1',
  resource: 'namespaces',
  kind: 'Namespace',
  namespaced: false,
  shortNames: ['ns'],
  statusSubresource: true,
  fields: { 'status.phase': (o) => str(o.status?.phase) },
  mergeKeys: { 'status.conditions': 'type' },
});

export const PODS = builtin({
  group: '',
  version: 'v1',
  resource: 'pods',
  kind: 'Pod',
  namespaced: true,
  shortNames: ['po'],
  categories: ['all'],
  statusSubresource: true,
  fields: {
    'spec.nodeName': (o) => str(o.spec?.nodeName),
    'spec.restartPolicy': (o) => str(o.spec?.restartPolicy),
    'spec.schedulerName': (o) => str(o.spec?.schedulerName),
    'spec.serviceAccountName': (o) => str(o.spec?.serviceAccountName),
    'spec.hostNetwork': (o) => String(o.spec?.hostNetwork === true),
    'status.phase': (o) => str(o.status?.phase),
    'status.podIP': (o) => str(o.status?.podIP),
    'status.nominatedNodeName': (o) => str(o.status?.nominatedNodeName),
  },
  mergeKeys: {
    ...podSpecKeys('spec'),
    'status.conditions': 'type',
    'status.podIPs': 'ip',
    'status.hostIPs': 'ip',
  },
});

export const NODES = builtin({
  group: '',
  version: 'v1',
  resource: 'nodes',
  kind: 'Node',
  namespaced: false,
  shortNames: ['no'],
  statusSubresource: true,
  statusOnCreate: true,
  fields: { 'spec.unschedulable': (o) => String(o.spec?.unschedulable === true) },
  mergeKeys: { 'spec.podCIDRs': '', 'status.conditions': 'type', 'status.addresses': 'type' },
});

export const SERVICES = builtin({
  group: '',
  version: 'v1',
  resource: 'services',
  kind: 'Service',
  namespaced: true,
  shortNames: ['svc'],
  categories: ['all'],
  statusSubresource: true,
  mergeKeys: { 'spec.ports': 'port', 'status.conditions': 'type' },
});

export const ENDPOINT_SLICES = builtin({
  group: 'discovery.k8s.io',
  version: 'v1',
  resource: 'endpointslices',
  kind: 'EndpointSlice',
  namespaced: true,
});

export const NETWORK_POLICIES = builtin({
  group: 'networking.k8s.io',
  version: 'v1',
  resource: 'networkpolicies',
  kind: 'NetworkPolicy',
  namespaced: true,
  shortNames: ['netpol'],
});

export const CRDS = builtin({
  group: 'apiextensions.k8s.io',
  version: 'v1',
  resource: 'customresourcedefinitions',
  kind: 'CustomResourceDefinition',
  namespaced: false,
  shortNames: ['crd', 'crds'],
  categories: ['api-extensions'],
  statusSubresource: true,
  mergeKeys: { 'status.conditions': 'type' },
});

/**
 * Kinds stored and served with no behaviour of their own, so that kelp's manifests
 * (deploy/kubernetes: RBAC, ConfigMap, ServiceAccount, DaemonSet) apply, and an agent can
 * read its ConfigMap or write Events and Leases.
 */
const PLAIN: ResourceType[] = [
  builtin({ group: '', version: 'v1', resource: 'configmaps', kind: 'ConfigMap', namespaced: true, shortNames: ['cm'] }),
  builtin({ group: '', version: 'v1', resource: 'secrets', kind: 'Secret', namespaced: true }),
  builtin({ group: '', version: 'v1', resource: 'serviceaccounts', kind: 'ServiceAccount', namespaced: true, shortNames: ['sa'] }),
  builtin({ group: '', version: 'v1', resource: 'events', kind: 'Event', namespaced: true, shortNames: ['ev'] }),
  builtin({
    group: 'apps',
    version: 'v1',
    resource: 'daemonsets',
    kind: 'DaemonSet',
    namespaced: true,
    shortNames: ['ds'],
    categories: ['all'],
    statusSubresource: true,
    mergeKeys: { ...podSpecKeys('spec.template.spec'), 'status.conditions': 'type' },
  }),
  builtin({ group: 'coordination.k8s.io', version: 'v1', resource: 'leases', kind: 'Lease', namespaced: true }),
  ...(['ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding'] as const).map((kind) =>
    builtin({
      group: 'rbac.authorization.k8s.io',
      version: 'v1',
      resource: `${kind.toLowerCase()}s`,
      kind,
      namespaced: !kind.startsWith('Cluster'),
    }),
  ),
];

export const BUILTINS: readonly ResourceType[] = [
  NAMESPACES,
  PODS,
  NODES,
  SERVICES,
  ENDPOINT_SLICES,
  NETWORK_POLICIES,
  CRDS,
  ...PLAIN,
];

/**
 * Evaluates the JSONPath subset CRD printer columns use: `.a.b`, `[n]`, `[*]` and filters
 * `[?(@.field=="value")]`. Answers every match, in order.
 */
export function simpleJsonPath(obj: unknown, path: string): unknown[] {
  let cur: unknown[] = [obj];
  const step = /\.([^.[\]]+)|\[(\d+)\]|\[\*\]|\[\?\(@\.([^=!<>\s]+)\s*==\s*["']([^"']*)["']\)\]/g;
  for (const m of path.matchAll(step)) {
    const next: unknown[] = [];
    for (const v of cur) {
      if (v === null || typeof v !== 'object') continue;
      if (m[1] !== undefined) next.push((v as Obj)[m[1]]);
      else if (m[2] !== undefined) next.push((v as unknown[])[Number(m[2])]);
      else if (Array.isArray(v)) {
        for (const e of v) if (m[3] === undefined || simpleJsonPath(e, `.${m[3]}`)[0] === m[4]) next.push(e);
      }
    }
    cur = next.filter((v) => v !== undefined);
  }
  return cur;
}

/** The age kubectl prints for a timestamp. */
export function humanAge(timestamp: unknown, now: number): string {
  const at = typeof timestamp === 'string' ? Date.parse(timestamp) : NaN;
  if (Number.isNaN(at)) return '<invalid>';
  return humanDuration((now - at) / 1000);
}

/** k8s.io/apimachinery/pkg/util/duration.HumanDuration. */
export function humanDuration(seconds: number): string {
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  const s = Math.floor(seconds);
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return s % 60 === 0 ? `${m}m` : `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return m % 60 === 0 ? `${h}h` : `${h}h${m % 60}m`;
  if (h < 48) return `${h}h`;
  if (h < 192) return h % 24 === 0 ? `${Math.floor(h / 24)}d` : `${Math.floor(h / 24)}d${h % 24}h`;
  if (h < 24 * 365 * 2) return `${Math.floor(h / 24)}d`;
  const y = Math.floor(h / 24 / 365);
  if (h < 24 * 365 * 8) return `${y}y${Math.floor(h / 24) % 365}d`;
  return `${y}y`;
}

/** A CRD additionalPrinterColumn; like the real CRD table convertor, dates print as ages. */
function printerColumn(c: Obj): Column {
  return {
    name: c.name,
    type: c.type === 'integer' ? 'integer' : 'string',
    format: c.format,
    priority: c.priority ?? 0,
    description: c.description ?? '',
    cell: (o, now) => {
      const [val] = simpleJsonPath(o, c.jsonPath);
      if (val === undefined || val === null) return '';
      if (c.type === 'date') return humanAge(val, now);
      return typeof val === 'object' ? JSON.stringify(val) : (val as string | number);
    },
  };
}

/** The resource types a CRD defines: one per served version. */
export function typesOfCrd(crd: Obj): ResourceType[] {
  const spec = crd.spec ?? {};
  const names = spec.names ?? {};
  const kind: string = names.kind;
  return (spec.versions ?? [])
    .filter((v: Obj) => v.served !== false)
    .map(
      (v: Obj): ResourceType => ({
        group: spec.group,
        version: v.name,
        resource: names.plural,
        singular: names.singular || kind.toLowerCase(),
        kind,
        listKind: names.listKind || `${kind}List`,
        namespaced: spec.scope !== 'Cluster',
        shortNames: names.shortNames ?? [],
        categories: names.categories ?? [],
        statusSubresource: v.subresources?.status !== undefined,
        statusOnCreate: false,
        fields: {},
        custom: true,
        bucket: `${spec.group}/${names.plural}`,
        crdName: crd.metadata.name,
        printerColumns: v.additionalPrinterColumns?.map(printerColumn),
      }),
    );
}

/** The set of types served now; CRD writes change it. */
export class ResourceTypes {
  private crdTypes = new Map<string, ResourceType[]>();

  all(): ResourceType[] {
    return [...BUILTINS, ...[...this.crdTypes.values()].flat()];
  }

  find(group: string, version: string, resource: string): ResourceType | undefined {
    return this.all().find((t) => t.group === group && t.version === version && t.resource === resource);
  }

  byKind(apiVersion: string, kind: string): ResourceType | undefined {
    return this.all().find((t) => apiVersionOf(t) === apiVersion && t.kind === kind);
  }

  /** Served group versions, in the order discovery lists them (the first of a group is preferred). */
  groupVersions(): { group: string; versions: string[] }[] {
    const groups = new Map<string, string[]>();
    for (const t of this.all()) {
      const vs = groups.get(t.group) ?? [];
      if (!vs.includes(t.version)) vs.push(t.version);
      groups.set(t.group, vs);
    }
    return [...groups].map(([group, versions]) => ({ group, versions }));
  }

  setCrd(crd: Obj): void {
    this.crdTypes.set(crd.metadata.name, typesOfCrd(crd));
  }

  removeCrd(name: string): ResourceType[] {
    const gone = this.crdTypes.get(name) ?? [];
    this.crdTypes.delete(name);
    return gone;
  }
}
