// v1 Namespace: only its name and labels matter to kelp (namespaceSelector matches the labels).
import { Json, ObjectMeta, validateMeta } from './meta';

/**
 * Set by the API server on every namespace to the namespace's name, whatever the user wrote:
 * the one label a namespaceSelector can always rely on.
 */
export const LABEL_METADATA_NAME = 'kubernetes.io/metadata.name';

export interface NamespaceObject {
  apiVersion: 'v1';
  kind: 'Namespace';
  metadata: ObjectMeta;
}

export function validateNamespace(o: Record<string, Json>): NamespaceObject {
  const metadata = validateMeta(o.metadata, { namespaced: false, name: 'DNS1123Label' });
  // As the API server defaults it, so a manifest-directory namespace matches the same selectors.
  metadata.labels[LABEL_METADATA_NAME] = metadata.name;
  return { apiVersion: 'v1', kind: 'Namespace', metadata };
}
