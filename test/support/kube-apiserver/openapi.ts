// Just enough OpenAPI v3 for kubectl: `kubectl apply/create` refuses to run (validation on)
// unless it can tell how to validate. Each group-version's document lists, per resource, the
// PATCH and POST operations with the GVK extension and the `fieldValidation` query parameter,
// so kubectl chooses server-side field validation and skips its client-side schema check.
// No schemas are served: PATCH advertises merge and JSON patch only, so kubectl computes
// strategic merge patches for built-in kinds from its compiled-in types, and merge patches
// for custom resources, as it does against a real server. `fieldValidation` itself is accepted
// and ignored (unknown fields are stored as sent).
import { createHash } from 'node:crypto';
import { Obj, ResourceTypes } from './resources';

function gvPath(group: string, version: string): string {
  return group ? `apis/${group}/${version}` : `api/${version}`;
}

export function openApiV3Root(types: ResourceTypes): Obj {
  const paths: Obj = {};
  for (const { group, versions } of types.groupVersions()) {
    for (const version of versions) {
      const p = gvPath(group, version);
      const hash = createHash('sha256').update(JSON.stringify(openApiV3Doc(types, group, version))).digest('hex').slice(0, 32);
      paths[p] = { serverRelativeURL: `/openapi/v3/${p}?hash=${hash.toUpperCase()}` };
    }
  }
  return { paths };
}

const FIELD_VALIDATION = {
  name: 'fieldValidation',
  in: 'query',
  description: 'fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.',
  schema: { type: 'string', uniqueItems: true },
};

export function openApiV3Doc(types: ResourceTypes, group: string, version: string): Obj | undefined {
  const served = types.all().filter((t) => t.group === group && t.version === version);
  if (!served.length) return undefined;
  const paths: Obj = {};
  for (const t of served) {
    const gvk = { group: t.group, version: t.version, kind: t.kind };
    const base = `/${gvPath(group, version)}${t.namespaced ? '/namespaces/{namespace}' : ''}/${t.resource}`;
    const op = (action: string, content: string[]) => ({
      operationId: `${action}${t.kind}`,
      'x-kubernetes-action': action,
      'x-kubernetes-group-version-kind': gvk,
      parameters: [FIELD_VALIDATION],
      requestBody: { content: Object.fromEntries(content.map((c) => [c, { schema: { type: 'object' } }])), required: true },
      responses: { '200': { description: 'OK' } },
    });
    paths[base] = { post: op('post', ['application/json']) };
    paths[`${base}/{name}`] = {
      put: op('put', ['application/json']),
      patch: op('patch', ['application/json-patch+json', 'application/merge-patch+json']),
    };
  }
  return {
    openapi: '3.0.0',
    info: { title: 'Kubernetes', version: 'v1.32.0' },
    paths,
    components: { schemas: {} },
  };
}
