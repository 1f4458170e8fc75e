// Server-side printing: kubectl get asks for `application/json;as=Table;v=v1;g=meta.k8s.io`
// and prints the columns the server chooses. Built-in kinds get the columns of the real
// server's printers (a subset of their cells' logic); custom resources get Name and their
// CRD's additionalPrinterColumns, or Name and Age when it has none.
import { Column, humanAge, ENDPOINT_SLICES, NAMESPACES, NETWORK_POLICIES, NODES, Obj, PODS, ResourceType, SERVICES, CRDS } from './resources';

const col = (name: string, cell: Column['cell'], extra: Partial<Column> = {}): Column => ({
  name,
  type: 'string',
  priority: 0,
  description: name,
  cell,
  ...extra,
});

const NAME = col('Name', (o) => o.metadata.name, {
  format: 'name',
  description: 'Name must be unique within a namespace.',
});
const AGE = col('Age', (o, now) => humanAge(o.metadata.creationTimestamp, now), {
  description: 'CreationTimestamp is a timestamp representing the server time when this object was created.',
});
const none = (v: unknown) => (v === undefined || v === null || v === '' ? '<none>' : String(v));
const selectorText = (sel: Record<string, string> | undefined) =>
  sel && Object.keys(sel).length ? Object.entries(sel).map(([k, v]) => `${k}=${v}`).join(',') : '<none>';

function podStatus(o: Obj): string {
  const waiting = (o.status?.containerStatuses ?? []).find((c: Obj) => c.state?.waiting?.reason);
  return o.status?.reason ?? waiting?.state.waiting.reason ?? o.status?.phase ?? '';
}

function nodeStatus(o: Obj): string {
  const ready = (o.status?.conditions ?? []).find((c: Obj) => c.type === 'Ready');
  const s = !ready ? 'Unknown' : ready.status === 'True' ? 'Ready' : 'NotReady';
  return o.spec?.unschedulable ? `${s},SchedulingDisabled` : s;
}

function servicePorts(o: Obj): string {
  const ports: Obj[] = o.spec?.ports ?? [];
  if (!ports.length) return '<none>';
  return ports.map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ''}/${p.protocol ?? 'TCP'}`).join(',');
}

function sliceEndpoints(o: Obj): string {
  const addrs: string[] = (o.endpoints ?? []).flatMap((e: Obj) => e.addresses ?? []);
  if (!addrs.length) return '<unset>';
  return addrs.length > 3 ? `${addrs.slice(0, 3).join(',')} + ${addrs.length - 3} more...` : addrs.join(',');
}

const BUILTIN_COLUMNS = new Map<ResourceType, Column[]>([
  [NAMESPACES, [NAME, col('Status', (o) => o.status?.phase ?? ''), AGE]],
  [
    PODS,
    [
      NAME,
      col('Ready', (o) => {
        const total = (o.spec?.containers ?? []).length;
        const ready = (o.status?.containerStatuses ?? []).filter((c: Obj) => c.ready).length;
        return `${ready}/${total}`;
      }),
      col('Status', podStatus),
      col('Restarts', (o) => (o.status?.containerStatuses ?? []).reduce((n: number, c: Obj) => n + (c.restartCount ?? 0), 0), {
        type: 'integer',
      }),
      AGE,
      col('IP', (o) => none(o.status?.podIP), { priority: 1 }),
      col('Node', (o) => none(o.spec?.nodeName), { priority: 1 }),
      col('Nominated Node', (o) => none(o.status?.nominatedNodeName), { priority: 1 }),
      col('Readiness Gates', () => '<none>', { priority: 1 }),
    ],
  ],
  [
    NODES,
    [
      NAME,
      col('Status', nodeStatus),
      col('Roles', (o) => {
        const roles = Object.keys(o.metadata.labels ?? {})
          .filter((l) => l.startsWith('node-role.kubernetes.io/'))
          .map((l) => l.slice('node-role.kubernetes.io/'.length));
        return roles.length ? roles.join(',') : '<none>';
      }),
      AGE,
      col('Version', (o) => o.status?.nodeInfo?.kubeletVersion ?? ''),
      col('Internal-IP', (o) => none((o.status?.addresses ?? []).find((a: Obj) => a.type === 'InternalIP')?.address), {
        priority: 1,
      }),
    ],
  ],
  [
    SERVICES,
    [
      NAME,
      col('Type', (o) => o.spec?.type ?? ''),
      col('Cluster-IP', (o) => none(o.spec?.clusterIP)),
      col('External-IP', (o) => (o.spec?.externalIPs?.length ? o.spec.externalIPs.join(',') : '<none>')),
      col('Port(s)', servicePorts),
      AGE,
      col('Selector', (o) => selectorText(o.spec?.selector), { priority: 1 }),
    ],
  ],
  [
    ENDPOINT_SLICES,
    [
      NAME,
      col('AddressType', (o) => o.addressType ?? ''),
      col('Ports', (o) => ((o.ports ?? []).length ? o.ports.map((p: Obj) => p.port ?? '<unset>').join(',') : '<unset>')),
      col('Endpoints', sliceEndpoints),
      AGE,
    ],
  ],
  [NETWORK_POLICIES, [NAME, col('Pod-Selector', (o) => selectorText(o.spec?.podSelector?.matchLabels)), AGE]],
  [CRDS, [NAME, col('Created At', (o) => o.metadata.creationTimestamp, { type: 'date' })]],
]);

export function columnsOf(t: ResourceType): Column[] {
  const builtin = [...BUILTIN_COLUMNS].find(([bt]) => bt.bucket === t.bucket)?.[1];
  return builtin ?? [NAME, ...(t.printerColumns ?? [AGE])];
}

/** Whether the Accept header asks for a meta.k8s.io Table (kubectl get does, JSON as fallback). */
export function wantsTable(accept: string | undefined): boolean {
  return (accept ?? '').split(',').some((part) => {
    const params = part.split(';').map((p) => p.trim());
    return params.includes('as=Table') && params.includes('g=meta.k8s.io') && /^application\/json$/.test(params[0]);
  });
}

export type IncludeObject = 'None' | 'Metadata' | 'Object';

export function toTable(
  t: ResourceType,
  objects: Obj[],
  opts: { includeObject: IncludeObject; withColumns: boolean; resourceVersion?: string; continue?: string },
): Obj {
  const columns = columnsOf(t);
  const now = Date.now();
  const table: Obj = {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: {
      ...(opts.resourceVersion ? { resourceVersion: opts.resourceVersion } : {}),
      ...(opts.continue ? { continue: opts.continue } : {}),
    },
    columnDefinitions: opts.withColumns
      ? columns.map((c) => ({ name: c.name, type: c.type, format: c.format ?? '', description: c.description, priority: c.priority }))
      : null,
    rows: objects.map((o) => {
      const row: Obj = { cells: columns.map((c) => c.cell(o, now)) };
      if (opts.includeObject === 'Object') row.object = o;
      else if (opts.includeObject === 'Metadata') {
        row.object = { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: o.metadata };
      }
      return row;
    }),
  };
  return table;
}
