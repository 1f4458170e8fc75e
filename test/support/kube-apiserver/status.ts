// metav1.Status answers: the error shape every Kubernetes client decodes. Reasons, codes and
// messages follow k8s.io/apimachinery/pkg/api/errors, because clients branch on them
// (client-node's ListWatch relists on code 410; kubectl prints the message).

export interface Status {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: Record<string, unknown>;
  status: 'Success' | 'Failure';
  message?: string;
  reason?: string;
  details?: { name?: string; group?: string; kind?: string; uid?: string; causes?: StatusCause[] };
  code: number;
}

export interface StatusCause {
  reason: string;
  message: string;
  field?: string;
}

/** The group and plural a Status names (`pods`, `networkpolicies.networking.k8s.io`). */
export interface QualifiedResource {
  group: string;
  resource: string;
}

export function qualified(r: QualifiedResource): string {
  return r.group ? `${r.resource}.${r.group}` : r.resource;
}

/** Thrown by handlers; the router writes `status` with its code. */
export class ApiError extends Error {
  constructor(readonly status: Status) {
    super(status.message);
  }
}

function failure(code: number, reason: string, message: string, details?: Status['details']): ApiError {
  const status: Status = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
  if (details) status.details = details;
  return new ApiError(status);
}

export function success(details: Status['details']): Status {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details, code: 200 };
}

export const errors = {
  notFound: (r: QualifiedResource, name: string) =>
    failure(404, 'NotFound', `${qualified(r)} "${name}" not found`, { name, group: r.group || undefined, kind: r.resource }),
  alreadyExists: (r: QualifiedResource, name: string) =>
    failure(409, 'AlreadyExists', `${qualified(r)} "${name}" already exists`, {
      name,
      group: r.group || undefined,
      kind: r.resource,
    }),
  conflict: (r: QualifiedResource, name: string, why: string) =>
    failure(409, 'Conflict', `Operation cannot be fulfilled on ${qualified(r)} "${name}": ${why}`, {
      name,
      group: r.group || undefined,
      kind: r.resource,
    }),
  /** 422, as field validation failures are: `<Kind> "<name>" is invalid: <field>: <detail>`. */
  invalid: (kind: string, group: string, name: string, causes: StatusCause[]) =>
    failure(
      422,
      'Invalid',
      `${kind} "${name}" is invalid: ${causes.map((c) => `${c.field}: ${c.message}`).join(', ')}`,
      { name, group: group || undefined, kind, causes },
    ),
  badRequest: (message: string) => failure(400, 'BadRequest', message),
  forbidden: (r: QualifiedResource, name: string, why: string) =>
    failure(403, 'Forbidden', `${qualified(r)} "${name}" is forbidden: ${why}`, { name, group: r.group || undefined, kind: r.resource }),
  unauthorized: () => failure(401, 'Unauthorized', 'Unauthorized'),
  methodNotAllowed: (verb: string, what: string) =>
    failure(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource (${verb} ${what})`),
  notAcceptable: (message: string) => failure(406, 'NotAcceptable', message),
  unsupportedMediaType: (message: string) => failure(415, 'UnsupportedMediaType', message),
  /** A watch or continue token older than the retained history (etcd compaction). */
  expired: (message: string) => failure(410, 'Expired', message),
  /** The page not found for a path no resource serves. */
  pathNotFound: () => failure(404, 'NotFound', 'the server could not find the requested resource'),
  internal: (message: string) => failure(500, 'InternalError', `Internal error occurred: ${message}`),
  /** An answer forced by fault injection, with the reason the real server gives that code. */
  injected: (code: number) => {
    const reasons: Record<number, string> = {
      429: 'TooManyRequests',
      500: 'InternalError',
      503: 'ServiceUnavailable',
      504: 'Timeout',
    };
    return failure(code, reasons[code] ?? 'InternalError', `injected fault: HTTP ${code}`);
  },
  tooLargeResourceVersion: (requested: number, current: number) =>
    failure(504, 'Timeout', `Too large resource version: ${requested}, current: ${current}`, {
      causes: [{ reason: 'ResourceVersionTooLarge', message: 'Too large resource version' }],
    }),
};
