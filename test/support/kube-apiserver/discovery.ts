// Discovery: the legacy documents (/api, /apis, /api/v1, /apis/<g>[/<v>]) that client-node's
// KubernetesObjectApi and older clients read, and the aggregated form kubectl 1.32 asks for
// first (apidiscovery.k8s.io/v2 APIGroupDiscoveryList, one answer for every group). Both are
// built from the served types, so a CRD shows up as soon as it is written.
import { Obj, ResourceType, ResourceTypes, VERBS } from './resources';

const STATUS_VERBS = ['get', 'patch', 'update'];

export function apiVersions(serverAddress: string): Obj {
  return {
    kind: 'APIVersions',
    versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }],
  };
}

function groupEntry(group: string, versions: string[]): Obj {
  const gvs = versions.map((version) => ({ groupVersion: `${group}/${version}`, version }));
  return { name: group, versions: gvs, preferredVersion: gvs[0] };
}

export function apiGroupList(types: ResourceTypes): Obj {
  return {
    kind: 'APIGroupList',
    apiVersion: 'v1',
    groups: types
      .groupVersions()
      .filter((g) => g.group !== '')
      .map((g) => groupEntry(g.group, g.versions)),
  };
}

export function apiGroup(types: ResourceTypes, group: string): Obj | undefined {
  const g = types.groupVersions().find((x) => x.group === group && group !== '');
  return g && { kind: 'APIGroup', apiVersion: 'v1', ...groupEntry(g.group, g.versions) };
}

export function apiResourceList(types: ResourceTypes, group: string, version: string): Obj | undefined {
  const served = types.all().filter((t) => t.group === group && t.version === version);
  if (!served.length) return undefined;
  const resources: Obj[] = [];
  for (const t of served) {
    resources.push({
      name: t.resource,
      singularName: t.singular,
      namespaced: t.namespaced,
      kind: t.kind,
      verbs: VERBS,
      ...(t.shortNames.length ? { shortNames: t.shortNames } : {}),
      ...(t.categories.length ? { categories: t.categories } : {}),
    });
    if (t.statusSubresource) {
      resources.push({ name: `${t.resource}/status`, singularName: '', namespaced: t.namespaced, kind: t.kind, verbs: STATUS_VERBS });
    }
  }
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group ? `${group}/${version}` : version, resources };
}

/** The aggregated-discovery version the Accept header asks for, if any (v2 preferred). */
export function aggregatedVersion(accept: string | undefined): 'v2' | 'v2beta1' | undefined {
  const wanted = (accept ?? '').split(',').map((part) => part.split(';').map((p) => p.trim()));
  const asks = (v: string) =>
    wanted.some((p) => p.includes('g=apidiscovery.k8s.io') && p.includes(`v=${v}`) && p.includes('as=APIGroupDiscoveryList'));
  if (asks('v2')) return 'v2';
  if (asks('v2beta1')) return 'v2beta1';
  return undefined;
}

export function aggregatedContentType(v: 'v2' | 'v2beta1'): string {
  return `application/json;g=apidiscovery.k8s.io;v=${v};as=APIGroupDiscoveryList`;
}

function resourceDiscovery(t: ResourceType): Obj {
  const responseKind = { group: t.group, version: t.version, kind: t.kind };
  return {
    resource: t.resource,
    responseKind,
    scope: t.namespaced ? 'Namespaced' : 'Cluster',
    singularResource: t.singular,
    verbs: VERBS,
    ...(t.shortNames.length ? { shortNames: t.shortNames } : {}),
    ...(t.categories.length ? { categories: t.categories } : {}),
    ...(t.statusSubresource ? { subresources: [{ subresource: 'status', responseKind, verbs: STATUS_VERBS }] } : {}),
  };
}

/** `/api` (the core group only) or `/apis` (every other group) as one APIGroupDiscoveryList. */
export function aggregated(types: ResourceTypes, core: boolean, v: 'v2' | 'v2beta1'): Obj {
  const all = types.all();
  return {
    kind: 'APIGroupDiscoveryList',
    apiVersion: `apidiscovery.k8s.io/${v}`,
    metadata: {},
    items: types
      .groupVersions()
      .filter((g) => (g.group === '') === core)
      .map((g) => ({
        metadata: g.group ? { name: g.group } : {},
        versions: g.versions.map((version) => ({
          version,
          resources: all.filter((t) => t.group === g.group && t.version === version).map(resourceDiscovery),
          freshness: 'Current',
        })),
      })),
  };
}
