// Every manifest under deploy/kubernetes/, checked offline: built-in kinds against the
// Kubernetes schemas kubernetes-models ships, the CRDs as apiextensions.k8s.io/v1 objects and
// as a structural schema, custom resources against that schema (with the API server's
// rejection of unknown fields and kelp's CEL rules mirrored here), then what the Kubernetes
// schemas cannot say: least-privilege RBAC, the agent's privileges, mounts, probes and flags
// (parsed by the agent's own parser), and the uninstall step run against a fake host. Every
// check is a function returning problems, and a broken copy shows each problem can be found.
import { afterAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, existsSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { isIP } from 'node:net';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import Ajv, { type ErrorObject, type FuncKeywordDefinition, type ValidateFunction } from 'ajv';
import { ConfigMap, Namespace, ServiceAccount } from 'kubernetes-models/v1';
import { DaemonSet } from 'kubernetes-models/apps/v1';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1';
import { parseAgentArgs, type AgentOptions } from '../../src/agent/options';
import { CONFLIST_NAME, PLUGIN_NAME } from '../../src/agent/install';
import { validateObject } from '../../src/sources/objects';
import { cleanupAll, tempDir } from '../support/netns';

afterAll(cleanupAll);

// Manifests are free-form YAML: the checks below read them as plain data.
type Obj = any;

const ROOT = path.join(__dirname, '../..');
const DEPLOY = path.join(ROOT, 'deploy/kubernetes');

interface Doc {
  file: string;
  obj: Obj;
}

/** YAML and JSON files in `dir` in kubectl's order (lexical), subdirectories only if recursive. */
function manifestFiles(dir: string, recursive: boolean): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (recursive) out.push(...manifestFiles(p, true));
    } else if (/\.(ya?ml|json)$/.test(e.name)) {
      out.push(p);
    }
  }
  return out;
}

function loadDocs(files: string[]): Doc[] {
  const docs: Doc[] = [];
  for (const file of files) {
    for (const d of parseAllDocuments(readFileSync(file, 'utf8'))) {
      if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
      const obj = d.toJS();
      if (obj !== null) docs.push({ file: path.relative(DEPLOY, file), obj });
    }
  }
  return docs;
}

const ALL = loadDocs(manifestFiles(DEPLOY, true));
/** What `kubectl apply -f deploy/kubernetes/` reads: the top directory only. */
const INSTALL = loadDocs(manifestFiles(DEPLOY, false));
const UNINSTALL = loadDocs(manifestFiles(path.join(DEPLOY, 'uninstall'), false));

const kindOf = (o: Obj) => `${o.apiVersion}/${o.kind}`;
function only(docs: Doc[], kind: string, name?: string): Obj {
  const found = docs.filter((d) => kindOf(d.obj) === kind && (name === undefined || d.obj.metadata?.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0].obj;
}
const clone = <T>(o: T): T => structuredClone(o);

// The built-in kinds deploy/kubernetes/ may use, each with the schema it is validated against.
// (Their base class, with validate(), is in an exports-only package that this repository's
// `moduleResolution: node` cannot type: validate() is called through `validateAs`.)
const MODELS: Record<string, new (data: Obj) => object> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'apps/v1/DaemonSet': DaemonSet,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'apiextensions.k8s.io/v1/CustomResourceDefinition': CustomResourceDefinition,
};
function validateAs(kind: string, obj: Obj): void {
  (new MODELS[kind](obj) as { validate(): void }).validate();
}
/** Kinds whose objects live in a namespace. */
const NAMESPACED = new Set(['v1/ServiceAccount', 'v1/ConfigMap', 'apps/v1/DaemonSet']);

const CRD_TYPE = 'apiextensions.k8s.io/v1/CustomResourceDefinition';
/** kelp's own policy CRD, and the upstream admin policy's, written for kelp from the API text. */
const KNP_CRD = only(ALL, CRD_TYPE, 'kelpnetworkpolicies.policy.kelp.dev');
const CNP_CRD = only(ALL, CRD_TYPE, 'clusternetworkpolicies.policy.networking.k8s.io');
const storageVersion = (crd: Obj): Obj => crd.spec.versions.find((v: Obj) => v.storage);
/** `group/version/Kind` of a CRD's custom resources. */
const crKind = (crd: Obj): string => `${crd.spec.group}/${storageVersion(crd).name}/${crd.spec.names.kind}`;
/** Custom resource kinds → whether they are namespaced. */
const CR_KINDS = new Map<string, boolean>(ALL.filter((d) => kindOf(d.obj) === CRD_TYPE).map((d) => [crKind(d.obj), d.obj.spec.scope === 'Namespaced']));

describe('every manifest under deploy/kubernetes/', () => {
  it('is a built-in kind validated here or a custom resource of one of the CRDs', () => {
    expect([...CR_KINDS.keys()].sort()).toEqual(['policy.kelp.dev/v1alpha1/KelpNetworkPolicy', 'policy.networking.k8s.io/v1alpha2/ClusterNetworkPolicy']);
    const unknown = ALL.filter((d) => !MODELS[kindOf(d.obj)] && !CR_KINDS.has(kindOf(d.obj))).map((d) => `${d.file}: ${kindOf(d.obj)}`);
    expect(unknown).toEqual([]);
    for (const kind of CR_KINDS.keys()) expect(ALL.filter((d) => kindOf(d.obj) === kind).length).toBeGreaterThan(0);
  });

  it.each(ALL.filter((d) => MODELS[kindOf(d.obj)]).map((d) => [`${d.file} ${d.obj.kind} ${d.obj.metadata?.name}`, d.obj]))(
    '%s validates against its Kubernetes schema',
    (_name, obj) => {
      expect(() => validateAs(kindOf(obj), obj)).not.toThrow();
    },
  );

  it('the Kubernetes schemas reject broken copies', () => {
    const ds = clone(only(INSTALL, 'apps/v1/DaemonSet', 'kelp-agent'));
    ds.spec.template.spec.containers[0].securityContext.capabilities.add = 'NET_ADMIN';
    expect(() => validateAs(kindOf(ds), ds)).toThrow(/capabilities\/add must be array/);
    const crd = clone(KNP_CRD);
    crd.spec.versions[0].served = 'yes';
    expect(() => validateAs(kindOf(crd), crd)).toThrow(/served must be boolean/);
  });

  /** What one `kubectl apply -f` of `docs` would trip over: objects whose namespace it has not created yet. */
  function orderProblems(docs: Doc[]): string[] {
    const created = new Set(['default']);
    const problems: string[] = [];
    for (const { file, obj } of docs) {
      if (kindOf(obj) === 'v1/Namespace') created.add(obj.metadata.name);
      const ns = obj.metadata?.namespace;
      const namespaced = NAMESPACED.has(kindOf(obj)) || CR_KINDS.get(kindOf(obj)) === true;
      if (namespaced && !ns) problems.push(`${file}: ${obj.kind} ${obj.metadata?.name} names no namespace`);
      if (!namespaced && ns) problems.push(`${file}: cluster-scoped ${obj.kind} names namespace ${ns}`);
      if (ns && !created.has(ns)) problems.push(`${file}: ${obj.kind} ${obj.metadata.name} comes before its namespace ${ns}`);
    }
    return problems;
  }

  it('each apply creates a namespace before what lives in it', () => {
    expect(orderProblems(INSTALL)).toEqual([]);
    expect(orderProblems(UNINSTALL)).toEqual([]);
    expect(orderProblems([...INSTALL].reverse())).toContainEqual(expect.stringMatching(/comes before its namespace kelp-system/));
  });

  it('installing applies neither the cleanup nor the examples', () => {
    expect(INSTALL.map((d) => d.obj.metadata?.name)).not.toContain('kelp-cleanup');
    expect(INSTALL.some((d) => CR_KINDS.has(kindOf(d.obj)))).toBe(false);
    expect(UNINSTALL.map((d) => `${d.obj.kind}/${d.obj.metadata.name}`)).toEqual(['Namespace/kelp-cleanup', 'DaemonSet/kelp-cleanup']);
  });
});

// --- The CRDs ---------------------------------------------------------------------------------

/**
 * What the API server refuses in a v1 CRD schema that is not structural: a node without a
 * type, an array without items, and, inside anyOf/allOf/oneOf/not, anything but value
 * validations of fields the structure itself declares.
 */
function structuralProblems(s: Obj, at = ''): string[] {
  const here = at || '<root>';
  const p: string[] = [];
  if (s.type === undefined && !s['x-kubernetes-int-or-string'] && !s['x-kubernetes-preserve-unknown-fields']) p.push(`${here}: no type`);
  if (s.type === 'array' && !s.items) p.push(`${here}: array without items`);
  if (s.properties && s.additionalProperties !== undefined) p.push(`${here}: properties and additionalProperties together`);
  for (const [k, v] of Object.entries(s.properties ?? {})) p.push(...structuralProblems(v, `${at}.${k}`));
  if (s.items) p.push(...structuralProblems(s.items, `${at}[]`));
  if (typeof s.additionalProperties === 'object') p.push(...structuralProblems(s.additionalProperties, `${at}{}`));
  for (const kw of ['anyOf', 'allOf', 'oneOf']) (s[kw] ?? []).forEach((b: Obj, i: number) => p.push(...junctorProblems(b, s, `${here}.${kw}[${i}]`)));
  if (s.not) p.push(...junctorProblems(s.not, s, `${here}.not`));
  if (s['x-kubernetes-list-type'] === 'map') {
    const keys: string[] = s['x-kubernetes-list-map-keys'] ?? [];
    if (!keys.length) p.push(`${here}: list-type map without list-map-keys`);
    for (const k of keys) if (!(s.items?.required ?? []).includes(k)) p.push(`${here}: list-map key ${k} is not required`);
  }
  return p;
}

function junctorProblems(b: Obj, outer: Obj, at: string): string[] {
  const p: string[] = [];
  for (const k of Object.keys(b)) {
    if (['type', 'description', 'default', 'additionalProperties', 'nullable'].includes(k) || k.startsWith('x-kubernetes-')) p.push(`${at}: ${k} inside a junctor`);
  }
  for (const [k, v] of Object.entries(b.properties ?? {})) {
    if (!outer.properties?.[k]) p.push(`${at}.${k}: not a field of the structural schema`);
    else p.push(...junctorProblems(v, outer.properties[k], `${at}.${k}`));
  }
  if (b.items) p.push(...(outer.items ? junctorProblems(b.items, outer.items, `${at}[]`) : [`${at}[]: items the structure does not declare`]));
  return p;
}

/**
 * kelp's CEL rules, each mirrored in JavaScript under its exact text (whitespace folded). A
 * rule added to the CRD without its mirror here fails the compile below.
 */
const CEL: Record<string, (self: Obj) => boolean> = {
  'self.start < self.end': (self) => self.start < self.end,
  '!(self.to.exists(p, has(p.networks)) && has(self.protocols) && self.protocols.exists(p, has(p.destinationNamedPort)))': (self) =>
    !(self.to.some((p: Obj) => 'networks' in p) && 'protocols' in self && self.protocols.some((p: Obj) => 'destinationNamedPort' in p)),
};

const celKeyword: FuncKeywordDefinition = {
  keyword: 'x-kubernetes-validations',
  schemaType: 'array',
  errors: true,
  compile(rules: Array<{ rule: string; message?: string }>) {
    const checks = rules.map(({ rule, message }) => {
      const fn = CEL[rule.replace(/\s+/g, ' ').trim()];
      if (!fn) throw new Error(`no JavaScript mirror of the CEL rule ${JSON.stringify(rule)}`);
      return { fn, message: message ?? rule };
    });
    const validate = (data: Obj): boolean => {
      // A value the schema already refuses is not evaluated (the API server reports the schema error).
      const failed = checks.filter(({ fn }) => {
        try {
          return !fn(data);
        } catch {
          return false;
        }
      });
      validate.errors = failed.map(({ message }) => ({ keyword: 'x-kubernetes-validations', message, params: {} }));
      return failed.length === 0;
    };
    validate.errors = [] as Partial<ErrorObject>[];
    return validate;
  },
};

/** list-type set: unique items; map: unique list-map keys (atomic: anything). */
const listTypeKeyword: FuncKeywordDefinition = {
  keyword: 'x-kubernetes-list-type',
  schemaType: 'string',
  compile(type: string, parent: Obj) {
    const keys: string[] = parent['x-kubernetes-list-map-keys'] ?? [];
    return (data: Obj) => {
      if (!Array.isArray(data) || type === 'atomic') return true;
      const ids = data.map((item) => JSON.stringify(type === 'set' ? item : keys.map((k) => item?.[k])));
      return new Set(ids).size === ids.length;
    };
  },
};

function isCidr(s: string): boolean {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(s);
  const family = m ? isIP(m[1]) : 0;
  return family !== 0 && Number(m![2]) <= (family === 4 ? 32 : 128);
}

/** The formats kelp's schema uses, as the API server reads them. */
const FORMATS = {
  int32: { type: 'number' as const, validate: (n: number) => Number.isInteger(n) && n >= -(2 ** 31) && n < 2 ** 31 },
  int64: { type: 'number' as const, validate: (n: number) => Number.isSafeInteger(n) },
  cidr: { type: 'string' as const, validate: isCidr },
  'date-time': { type: 'string' as const, validate: (s: string) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(s) && !Number.isNaN(Date.parse(s)) },
};

/** Closes every object schema that lists its fields: kubectl's default (strict) field validation. */
function closeObjects(s: Obj): void {
  if (s.type === 'object' && s.properties && s.additionalProperties === undefined && !s['x-kubernetes-preserve-unknown-fields']) s.additionalProperties = false;
  for (const v of Object.values(s.properties ?? {})) closeObjects(v);
  if (s.items) closeObjects(s.items);
  if (typeof s.additionalProperties === 'object') closeObjects(s.additionalProperties);
}

/** A validator of custom resources from a CRD's storage version (strict: unknown keywords throw). */
function compileCrd(crd: Obj): ValidateFunction {
  const schema = clone(crd.spec.versions.find((v: Obj) => v.storage).schema.openAPIV3Schema);
  closeObjects(schema);
  const ajv = new Ajv({ allErrors: true, strictTypes: false, formats: FORMATS });
  ajv.addKeyword(celKeyword);
  ajv.addKeyword(listTypeKeyword);
  ajv.addKeyword({ keyword: 'x-kubernetes-list-map-keys', schemaType: 'array' });
  ajv.addKeyword({ keyword: 'x-kubernetes-map-type', schemaType: 'string' });
  return ajv.compile(schema);
}

function crErrors(validate: ValidateFunction, obj: Obj): string[] {
  return validate(obj) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'}: ${e.message}`);
}

/** What kelp's agent says of a custom resource: undefined when it accepts it, else the field at fault. */
function kelpRefuses(obj: Obj): string | undefined {
  try {
    validateObject(clone(obj));
    return undefined;
  } catch (e) {
    return (e as { field?: string }).field ?? String(e);
  }
}

describe('the KelpNetworkPolicy CRD', () => {
  const CRD = KNP_CRD;
  const schema = storageVersion(CRD).schema.openAPIV3Schema;
  const validate = compileCrd(CRD);
  const examples = ALL.filter((d) => kindOf(d.obj) === crKind(CRD));

  it('names one namespaced kind with a status subresource and its examples use it', () => {
    expect(CRD.metadata.name).toBe(`${CRD.spec.names.plural}.${CRD.spec.group}`);
    expect(CRD.spec).toMatchObject({ group: 'policy.kelp.dev', scope: 'Namespaced', names: { kind: 'KelpNetworkPolicy', plural: 'kelpnetworkpolicies' } });
    expect(CRD.spec.versions.map((v: Obj) => [v.name, v.served, v.storage])).toEqual([['v1alpha1', true, true]]);
    expect(storageVersion(CRD).subresources).toEqual({ status: {} });
    for (const { obj } of examples) expect(obj.metadata.namespace).toBeTruthy();
  });

  it('is structural, and the check finds what is not', () => {
    expect(structuralProblems(schema)).toEqual([]);
    const broken = clone(schema);
    delete broken.properties.spec.properties.subject.type;
    broken.properties.spec.properties.ingress.items.properties.from.items.anyOf = [{ type: 'object', properties: { nodes: { minProperties: 1 } } }];
    broken.properties.status.properties.conditions.items.required = ['status'];
    expect(structuralProblems(broken)).toEqual([
      '.spec.subject: no type',
      '.spec.ingress[].from[].anyOf[0]: type inside a junctor',
      '.spec.ingress[].from[].anyOf[0].nodes: not a field of the structural schema',
      '.status.conditions: list-map key type is not required',
    ]);
  });

  it('uses only keywords the validator knows, and a CEL rule only with its mirror', () => {
    const typo = clone(CRD);
    typo.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.ingress.minitems = 1;
    expect(() => compileCrd(typo)).toThrow(/unknown keyword: "minitems"/);
    const rule = clone(CRD);
    rule.spec.versions[0].schema.openAPIV3Schema.properties.spec['x-kubernetes-validations'] = [{ rule: 'has(self.ingress)' }];
    expect(() => compileCrd(rule)).toThrow(/no JavaScript mirror of the CEL rule "has\(self.ingress\)"/);
  });

  it.each(examples.map((d) => [d.obj.metadata.name, d.obj]))('example %s is valid, to the schema and to kelp', (_name, obj) => {
    expect(crErrors(validate, obj)).toEqual([]);
    expect(kelpRefuses(obj)).toBeUndefined();
  });

  it('takes the status the agent writes', () => {
    const obj = clone(examples[0].obj);
    obj.status = {
      programmedRevision: 42,
      conditions: [
        { type: 'Valid', status: 'False', observedGeneration: 3, lastTransitionTime: '2026-12-01T10:00:00Z', reason: 'Invalid', message: 'spec.ingress[0].action: must be one of Accept, Deny, got "Pass"' },
        { type: 'Programmed', status: 'True', observedGeneration: 1, lastTransitionTime: '2026-12-01T10:00:00Z', reason: 'Programmed', message: 'enforced at revision 42' },
      ],
    };
    expect(crErrors(validate, obj)).toEqual([]);
  });

  const dbIngress = examples.find((d) => d.obj.metadata.name === 'db-ingress')!.obj;
  const noMetadata = examples.find((d) => d.obj.metadata.name === 'no-metadata-server')!.obj;
  const invalid: Array<[string, Obj, (o: Obj) => void, string]> = [
    ['no subject', dbIngress, (o) => delete o.spec.subject, "/spec: must have required property 'subject'"],
    ['a Pass action', dbIngress, (o) => (o.spec.ingress[0].action = 'Pass'), '/spec/ingress/0/action: must be equal to one of the allowed values'],
    ['a rule without peers', dbIngress, (o) => (o.spec.ingress[0].from = []), '/spec/ingress/0/from: must NOT have fewer than 1 items'],
    ['a peer with two fields', dbIngress, (o) => (o.spec.ingress[0].from[0].pods = { podSelector: {} }), '/spec/ingress/0/from/0: must NOT have more than 1 properties'],
    ['an empty peer', dbIngress, (o) => (o.spec.ingress[0].from[0] = {}), '/spec/ingress/0/from/0: must NOT have fewer than 1 properties'],
    ['pods without podSelector', dbIngress, (o) => delete o.spec.ingress[1].from[0].pods.podSelector, "/spec/ingress/1/from/0/pods: must have required property 'podSelector'"],
    ['an egress peer in ingress', dbIngress, (o) => (o.spec.ingress[0].from[0] = { networks: ['10.0.0.0/8'] }), '/spec/ingress/0/from/0: must NOT have additional properties'],
    ['a NetworkPolicy field', dbIngress, (o) => (o.spec.podSelector = {}), '/spec: must NOT have additional properties'],
    ['a bad expression key', dbIngress, (o) => (o.spec.ingress[1].from[0].pods.podSelector.matchExpressions[0].key = 'not a key'), '/spec/ingress/1/from/0/pods/podSelector/matchExpressions/0/key: must match pattern "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"'],
    ['a bad label value', dbIngress, (o) => (o.spec.ingress[0].from[0].namespaces.matchLabels.x = '-x'), '/spec/ingress/0/from/0/namespaces/matchLabels/x: must match pattern "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"'],
    ['a label value of 64 characters', dbIngress, (o) => (o.spec.subject.podSelector.matchLabels.app = 'a'.repeat(64)), '/spec/subject/podSelector/matchLabels/app: must NOT have more than 63 characters'],
    ['In without values', dbIngress, (o) => delete o.spec.ingress[1].from[0].pods.podSelector.matchExpressions[0].values, '/spec/ingress/1/from/0/pods/podSelector/matchExpressions/0: must match a schema in anyOf'],
    ['Exists with values', dbIngress, (o) => (o.spec.ingress[1].from[0].pods.podSelector.matchExpressions[0].operator = 'Exists'), '/spec/ingress/1/from/0/pods/podSelector/matchExpressions/0: must match a schema in anyOf'],
    ['port 0', dbIngress, (o) => (o.spec.ingress[1].protocols[1].tcp.destinationPort = { number: 0 }), '/spec/ingress/1/protocols/1/tcp/destinationPort/number: must be >= 1'],
    ['port 65536', dbIngress, (o) => (o.spec.ingress[1].protocols[1].tcp.destinationPort = { number: 65536 }), '/spec/ingress/1/protocols/1/tcp/destinationPort/number: must be <= 65535'],
    ['a port and a range', dbIngress, (o) => (o.spec.ingress[1].protocols[1].tcp.destinationPort.number = 80), '/spec/ingress/1/protocols/1/tcp/destinationPort: must NOT have more than 1 properties'],
    ['a backwards range', dbIngress, (o) => (o.spec.ingress[1].protocols[1].tcp.destinationPort.range = { start: 7010, end: 7000 }), '/spec/ingress/1/protocols/1/tcp/destinationPort/range: start must be less than end'],
    ['an empty tcp match', dbIngress, (o) => (o.spec.ingress[1].protocols[1].tcp = {}), '/spec/ingress/1/protocols/1/tcp: must NOT have fewer than 1 properties'],
    ['tcp and udp in one entry', dbIngress, (o) => (o.spec.ingress[1].protocols[1].udp = { destinationPort: { number: 53 } }), '/spec/ingress/1/protocols/1: must NOT have more than 1 properties'],
    ['ICMP', dbIngress, (o) => (o.spec.ingress[1].protocols[1] = { icmp: {} }), '/spec/ingress/1/protocols/1: must NOT have additional properties'],
    ['an uppercase port name', dbIngress, (o) => (o.spec.ingress[1].protocols[0].destinationNamedPort = 'Postgres'), '/spec/ingress/1/protocols/0/destinationNamedPort: must match pattern "^[a-z0-9]+(-[a-z0-9]+)*$"'],
    ['a port name without a letter', dbIngress, (o) => (o.spec.ingress[1].protocols[0].destinationNamedPort = '5432'), '/spec/ingress/1/protocols/0/destinationNamedPort: must match pattern "[a-z]"'],
    ['26 rules', dbIngress, (o) => (o.spec.ingress = Array(26).fill(o.spec.ingress[0])), '/spec/ingress: must NOT have more than 25 items'],
    ['a bad CIDR', noMetadata, (o) => (o.spec.egress[0].to[0].networks = ['10.0.0.0/33']), '/spec/egress/0/to/0/networks/0: must match format "cidr"'],
    ['an address without a prefix', noMetadata, (o) => (o.spec.egress[0].to[0].networks = ['10.0.0.1']), '/spec/egress/0/to/0/networks/0: must match format "cidr"'],
    ['a CIDR twice', noMetadata, (o) => (o.spec.egress[0].to[0].networks = ['10.0.0.0/8', '10.0.0.0/8']), '/spec/egress/0/to/0/networks: must pass "x-kubernetes-list-type" keyword validation'],
    ['a named port to networks', noMetadata, (o) => (o.spec.egress[0].protocols = [{ destinationNamedPort: 'http' }]), '/spec/egress/0: a rule with a networks peer cannot use destinationNamedPort (addresses have no named ports)'],
    ['a condition status Yes', noMetadata, (o) => (o.status = { conditions: [{ type: 'Programmed', status: 'Yes', lastTransitionTime: '2026-12-01T10:00:00Z', reason: 'Programmed', message: '' }] }), '/status/conditions/0/status: must be equal to one of the allowed values'],
    ['a negative revision', noMetadata, (o) => (o.status = { programmedRevision: -1 }), '/status/programmedRevision: must be >= 0'],
  ];
  /** Refused by the schema but not by kelp: fields kelp ignores (the API server prunes them; kubectl's strict validation refuses them) and the status. */
  const schemaOnly = new Set(['a NetworkPolicy field', 'a condition status Yes', 'a negative revision']);
  it.each(invalid)('rejects %s, and so does kelp', (label, base, mutate, error) => {
    const obj = clone(base);
    mutate(obj);
    expect(crErrors(validate, obj)).toContain(error);
    if (schemaOnly.has(label)) expect(kelpRefuses(obj)).toBeUndefined();
    else expect(kelpRefuses(obj)).toBeDefined();
  });
});

describe('the ClusterNetworkPolicy CRD', () => {
  const CRD = CNP_CRD;
  const schema = storageVersion(CRD).schema.openAPIV3Schema;
  const validate = compileCrd(CRD);
  const examples = ALL.filter((d) => kindOf(d.obj) === crKind(CRD));

  it('is upstream v1alpha2: one cluster-scoped kind, its names, the approval annotation a *.k8s.io group needs, a status subresource', () => {
    expect(CRD.metadata.name).toBe(`${CRD.spec.names.plural}.${CRD.spec.group}`);
    expect(CRD.metadata.annotations?.['api-approved.kubernetes.io']).toMatch(/^https:\/\/github\.com\/kubernetes-sigs\/network-policy-api\/pull\/\d+$/);
    expect(CRD.spec).toMatchObject({
      group: 'policy.networking.k8s.io',
      scope: 'Cluster',
      names: { kind: 'ClusterNetworkPolicy', listKind: 'ClusterNetworkPolicyList', plural: 'clusternetworkpolicies', singular: 'clusternetworkpolicy', shortNames: ['cnp'] },
    });
    expect(CRD.spec.versions.map((v: Obj) => [v.name, v.served, v.storage])).toEqual([['v1alpha2', true, true]]);
    expect(storageVersion(CRD).subresources).toEqual({ status: {} });
    expect(examples.length).toBeGreaterThan(1);
    for (const { obj } of examples) expect(obj.metadata.namespace).toBeUndefined();
  });

  it('is structural', () => {
    expect(structuralProblems(schema)).toEqual([]);
  });

  it('shares its peers and protocols with the KelpNetworkPolicy CRD', () => {
    const rule = (crd: Obj, dir: string) => storageVersion(crd).schema.openAPIV3Schema.properties.spec.properties[dir].items.properties;
    expect(rule(CNP_CRD, 'egress').to).toEqual(rule(KNP_CRD, 'egress').to);
    expect(rule(CNP_CRD, 'ingress').from).toEqual(rule(KNP_CRD, 'ingress').from);
    expect(rule(CNP_CRD, 'ingress').protocols).toEqual(rule(KNP_CRD, 'ingress').protocols);
    expect(rule(CNP_CRD, 'egress').name).toEqual(rule(KNP_CRD, 'egress').name);
  });

  it.each(examples.map((d) => [d.obj.metadata.name, d.obj]))('example %s is valid, to the schema and to kelp', (_name, obj) => {
    expect(crErrors(validate, obj)).toEqual([]);
    expect(kelpRefuses(obj)).toBeUndefined();
  });

  const sensitive = examples.find((d) => d.obj.metadata.name === 'sensitive-namespaces')!.obj;
  const egress = examples.find((d) => d.obj.metadata.name === 'default-egress')!.obj;
  it('takes a Pass action and a named port to networks (the standard channel has no rule against it)', () => {
    const obj = clone(egress);
    obj.spec.egress[1].protocols = [{ destinationNamedPort: 'https' }];
    obj.spec.egress[1].action = 'Pass';
    expect(crErrors(validate, obj)).toEqual([]);
    expect(kelpRefuses(obj)).toBeUndefined();
  });

  const invalid: Array<[string, Obj, (o: Obj) => void, string]> = [
    ['no tier', sensitive, (o) => delete o.spec.tier, "/spec: must have required property 'tier'"],
    ['a NetworkPolicy tier', sensitive, (o) => (o.spec.tier = 'NetworkPolicy'), '/spec/tier: must be equal to one of the allowed values'],
    ['no priority', sensitive, (o) => delete o.spec.priority, "/spec: must have required property 'priority'"],
    ['priority 1001', sensitive, (o) => (o.spec.priority = 1001), '/spec/priority: must be <= 1000'],
    ['priority -1', sensitive, (o) => (o.spec.priority = -1), '/spec/priority: must be >= 0'],
    ['no subject', sensitive, (o) => delete o.spec.subject, "/spec: must have required property 'subject'"],
    ['an empty subject', sensitive, (o) => (o.spec.subject = {}), '/spec/subject: must NOT have fewer than 1 properties'],
    ['a subject with both', sensitive, (o) => (o.spec.subject.pods = { podSelector: {} }), '/spec/subject: must NOT have more than 1 properties'],
    ['an Allow action (v1alpha1)', sensitive, (o) => (o.spec.ingress[0].action = 'Allow'), '/spec/ingress/0/action: must be equal to one of the allowed values'],
    ['a rule name of 101 characters', sensitive, (o) => (o.spec.ingress[0].name = 'x'.repeat(101)), '/spec/ingress/0/name: must NOT have more than 100 characters'],
    ['a rule without peers', sensitive, (o) => (o.spec.ingress[1].from = []), '/spec/ingress/1/from: must NOT have fewer than 1 items'],
    ['26 peers', sensitive, (o) => (o.spec.ingress[1].from = Array(26).fill({ namespaces: {} })), '/spec/ingress/1/from: must NOT have more than 25 items'],
    ['an empty peer', sensitive, (o) => (o.spec.ingress[1].from[0] = {}), '/spec/ingress/1/from/0: must NOT have fewer than 1 properties'],
    ['26 egress rules', egress, (o) => (o.spec.egress = Array(26).fill(o.spec.egress[1])), '/spec/egress: must NOT have more than 25 items'],
    ['an empty networks list', egress, (o) => (o.spec.egress[1].to[0].networks = []), '/spec/egress/1/to/0/networks: must NOT have fewer than 1 items'],
    ['a bad CIDR', egress, (o) => (o.spec.egress[1].to[0].networks = ['10.0.0.0/33']), '/spec/egress/1/to/0/networks/0: must match format "cidr"'],
    ['a CIDR twice', egress, (o) => (o.spec.egress[1].to[0].networks = ['10.0.0.0/8', '10.0.0.0/8']), '/spec/egress/1/to/0/networks: must pass "x-kubernetes-list-type" keyword validation'],
    ['an empty tcp match', egress, (o) => (o.spec.egress[0].protocols[1].tcp = {}), '/spec/egress/0/protocols/1/tcp: must NOT have fewer than 1 properties'],
    ['a backwards range', egress, (o) => (o.spec.egress[0].protocols[1].tcp.destinationPort = { range: { start: 60, end: 53 } }), '/spec/egress/0/protocols/1/tcp/destinationPort/range: start must be less than end'],
    ['In without values', egress, (o) => delete o.spec.subject.pods.namespaceSelector.matchExpressions[0].values, '/spec/subject/pods/namespaceSelector/matchExpressions/0: must match a schema in anyOf'],
    ['a port name without a letter', sensitive, (o) => (o.spec.ingress[0].protocols[0].destinationNamedPort = '9090'), '/spec/ingress/0/protocols/0/destinationNamedPort: must match pattern "[a-z]"'],
  ];
  it.each(invalid)('rejects %s, and so does kelp', (_label, base, mutate, error) => {
    const obj = clone(base);
    mutate(obj);
    expect(crErrors(validate, obj)).toContain(error);
    expect(kelpRefuses(obj)).toBeDefined();
  });

  it.each([
    ['nodes in an egress peer', egress, (o: Obj) => (o.spec.egress[2].to = [{ nodes: { matchLabels: { role: 'infra' } } }]), '/spec/egress/2/to/0', (o: Obj) => o.spec.egress[2]],
    ['networks in an ingress peer', sensitive, (o: Obj) => (o.spec.ingress[1].from = [{ networks: ['10.0.0.0/8'] }]), '/spec/ingress/1/from/0', (o: Obj) => o.spec.ingress[1]],
  ])('%s: a field of another revision is refused here (pruned to an empty peer); kelp, reading it unpruned, fails closed', (_label, base, mutate, at, rule) => {
    const obj = clone(base);
    mutate(obj);
    expect(crErrors(validate, obj)).toContain(`${at}: must NOT have additional properties`);
    expect(kelpRefuses(obj)).toBeUndefined();
    expect(rule(validateObject(obj) as Obj).peers).toEqual([{ unknown: true }]);
  });
});

// --- RBAC -------------------------------------------------------------------------------------

const READ = ['get', 'list', 'watch'];
/** group/resource → verbs: what the agent reads, and the one thing it writes. */
const GRANTS: Record<string, string[]> = {
  '/pods': READ,
  '/namespaces': READ,
  '/nodes': READ,
  '/services': READ,
  'discovery.k8s.io/endpointslices': READ,
  'networking.k8s.io/networkpolicies': READ,
  'policy.networking.k8s.io/clusternetworkpolicies': READ,
  'policy.kelp.dev/kelpnetworkpolicies': READ,
  'policy.kelp.dev/kelpnetworkpolicies/status': ['update', 'patch'],
};

function grantsOf(role: Obj): string[] {
  const out: string[] = [];
  for (const r of role.rules ?? []) for (const g of r.apiGroups ?? []) for (const res of r.resources ?? []) for (const v of r.verbs ?? []) out.push(`${g}/${res}:${v}`);
  return out.sort();
}

/** Least privilege: no wildcard, no non-resource URL, no write verb but on a status subresource (or creating events). */
function rbacProblems(role: Obj): string[] {
  const p: string[] = [];
  for (const [i, r] of (role.rules ?? []).entries()) {
    for (const f of ['apiGroups', 'resources', 'verbs', 'resourceNames']) if ((r[f] ?? []).includes('*')) p.push(`rules[${i}].${f}: wildcard`);
    if (r.nonResourceURLs) p.push(`rules[${i}]: nonResourceURLs`);
    for (const res of r.resources ?? []) {
      for (const v of r.verbs ?? []) {
        if (READ.includes(v) || v === '*') continue;
        const statusWrite = res.endsWith('/status') && (v === 'update' || v === 'patch');
        const event = res === 'events' && v === 'create';
        if (!statusWrite && !event) p.push(`rules[${i}]: write verb ${v} on ${res}`);
      }
    }
  }
  return p;
}

describe('RBAC', () => {
  const role = only(INSTALL, 'rbac.authorization.k8s.io/v1/ClusterRole', 'kelp-agent');
  const expected = Object.entries(GRANTS)
    .flatMap(([res, verbs]) => verbs.map((v) => `${res}:${v}`))
    .sort();

  it('grants exactly what the agent reads and the status it writes', () => {
    expect(rbacProblems(role)).toEqual([]);
    expect(grantsOf(role)).toEqual(expected);
  });

  const broken: Array<[string, (r: Obj) => void, RegExp]> = [
    ['a wildcard verb', (r) => r.rules[0].verbs.push('*'), /rules\[0\]\.verbs: wildcard/],
    ['a wildcard resource', (r) => r.rules[1].resources.push('*'), /rules\[1\]\.resources: wildcard/],
    ['pods create', (r) => r.rules[0].verbs.push('create'), /write verb create on pods/],
    ['a spec update', (r) => r.rules.find((x: Obj) => x.resources.includes('kelpnetworkpolicies')).verbs.push('update'), /write verb update on kelpnetworkpolicies$/],
    ['deleting policies', (r) => r.rules.push({ apiGroups: ['networking.k8s.io'], resources: ['networkpolicies'], verbs: ['delete'] }), /write verb delete on networkpolicies/],
    ['a non-resource URL', (r) => r.rules.push({ nonResourceURLs: ['/metrics'], verbs: ['get'] }), /nonResourceURLs/],
  ];
  it.each(broken)('finds %s', (_label, mutate, problem) => {
    const r = clone(role);
    mutate(r);
    expect(rbacProblems(r)).toContainEqual(expect.stringMatching(problem));
  });

  it('an extra read or a missing grant breaks the exact match', () => {
    const extra = clone(role);
    extra.rules[0].resources.push('secrets');
    expect(rbacProblems(extra)).toEqual([]);
    expect(grantsOf(extra)).not.toEqual(expected);
    const missing = clone(role);
    missing.rules = missing.rules.filter((x: Obj) => !x.resources.includes('endpointslices'));
    expect(grantsOf(missing)).not.toEqual(expected);
  });

  it('names the CRDs by their group and plural, and binds the agent its service account', () => {
    expect(GRANTS[`${KNP_CRD.spec.group}/${KNP_CRD.spec.names.plural}`]).toEqual(READ);
    expect(GRANTS[`${KNP_CRD.spec.group}/${KNP_CRD.spec.names.plural}/status`]).toEqual(['update', 'patch']);
    expect(GRANTS[`${CNP_CRD.spec.group}/${CNP_CRD.spec.names.plural}`]).toEqual(READ);
    const binding = only(INSTALL, 'rbac.authorization.k8s.io/v1/ClusterRoleBinding', 'kelp-agent');
    const sa = only(INSTALL, 'v1/ServiceAccount');
    const ds = only(INSTALL, 'apps/v1/DaemonSet', 'kelp-agent');
    expect(binding.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name });
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
    expect(ds.spec.template.spec.serviceAccountName).toBe(sa.metadata.name);
    expect(ds.metadata.namespace).toBe(sa.metadata.namespace);
  });
});

// --- The agent's DaemonSet --------------------------------------------------------------------

const AGENT_CAPS = ['NET_ADMIN', 'BPF', 'PERFMON', 'SYS_ADMIN'];
/** The one container allowed to be privileged: it mounts the bpffs on the host (Bidirectional). */
const PRIVILEGED_STEP = 'mount-bpf-fs';
const PROBES = ['startupProbe', 'livenessProbe', 'readinessProbe'] as const;
/** Where each path flag must land on the host; the first two are also named on the host by their path. */
const HOST_PATHS: Array<[keyof AgentOptions, string]> = [
  ['runDir', '/run/kelp'],
  ['bpfRoot', '/sys/fs/bpf/kelp'],
  ['stateDir', '/run/kelp/state'],
  ['cniBinDir', '/opt/cni/bin'],
  ['cniConfDir', '/etc/cni/net.d'],
];

/** The host path behind `p` in container `c` (undefined: not on a hostPath volume). */
function hostPathOf(p: string, c: Obj, volumes: Obj[]): string | undefined {
  const m = (c.volumeMounts ?? [])
    .filter((m: Obj) => p === m.mountPath || p.startsWith(`${m.mountPath}/`))
    .sort((a: Obj, b: Obj) => b.mountPath.length - a.mountPath.length)[0];
  const host = m && volumes.find((v) => v.name === m.name)?.hostPath?.path;
  return host === undefined ? undefined : path.posix.join(host, p.slice(m.mountPath.length));
}

/** kubelet's $(VAR) expansion of command and args; undefined references are reported. */
function expand(values: string[], env: Map<string, string>, problems: string[]): string[] {
  return values.map((a) =>
    a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (ref, name: string) => {
      const v = env.get(name);
      if (v === undefined) problems.push(`agent: ${ref} is not defined (kubelet would pass it verbatim)`);
      return v ?? ref;
    }),
  );
}

/** The options the agent container starts with, its env resolved from the ConfigMap. */
function agentStart(ds: Obj, cm: Obj): { args: string[]; problems: string[] } {
  const problems: string[] = [];
  const agent = ds.spec.template.spec.containers.find((c: Obj) => c.name === 'agent');
  const env = new Map<string, string>();
  for (const e of agent.env ?? []) {
    if (e.value !== undefined) env.set(e.name, e.value);
    else if (e.valueFrom?.fieldRef) env.set(e.name, 'node-1');
    else if (e.valueFrom?.configMapKeyRef) {
      const { name, key } = e.valueFrom.configMapKeyRef;
      if (name !== cm.metadata.name || cm.data?.[key] === undefined) problems.push(`agent: env ${e.name} refers to a missing ConfigMap key ${name}/${key}`);
      else env.set(e.name, cm.data[key]);
    }
  }
  return { args: expand(agent.args ?? [], env, problems), problems };
}

function agentProblems(ds: Obj, cm: Obj): string[] {
  const p: string[] = [];
  const spec = ds.spec.template.spec;
  if (spec.hostNetwork !== true) p.push('hostNetwork must be true');
  const us = ds.spec.updateStrategy;
  if (us?.type !== 'RollingUpdate' || us.rollingUpdate?.maxUnavailable !== 1 || (us.rollingUpdate?.maxSurge ?? 0) !== 0) {
    p.push('updateStrategy must be RollingUpdate with maxUnavailable 1 and no surge');
  }
  if (!(spec.tolerations ?? []).some((t: Obj) => t.operator === 'Exists' && !t.key && !t.effect)) p.push('must tolerate every taint (a node is NotReady until kelp runs)');

  const containers: Obj[] = [...(spec.initContainers ?? []), ...spec.containers];
  const volumes: Obj[] = spec.volumes ?? [];
  for (const c of containers) {
    const privileged = c.securityContext?.privileged === true;
    if (privileged && c.name !== PRIVILEGED_STEP) p.push(`${c.name}: privileged`);
    for (const m of c.volumeMounts ?? []) {
      if (!volumes.some((v) => v.name === m.name)) p.push(`${c.name}: volumeMount ${m.name} has no volume`);
      if (m.mountPropagation === 'Bidirectional' && !privileged) p.push(`${c.name}: Bidirectional propagation needs a privileged container`);
    }
  }
  for (const v of volumes) if (!containers.some((c) => (c.volumeMounts ?? []).some((m: Obj) => m.name === v.name))) p.push(`volume ${v.name} is mounted nowhere`);

  const agent = spec.containers.find((c: Obj) => c.name === 'agent');
  if (!agent) return [...p, 'no container named agent'];
  const caps = agent.securityContext?.capabilities ?? {};
  if ([...(caps.add ?? [])].sort().join() !== [...AGENT_CAPS].sort().join()) p.push(`agent: capabilities.add must be exactly ${AGENT_CAPS.join(', ')}, got ${(caps.add ?? []).join(', ')}`);
  if ((caps.drop ?? []).join() !== 'ALL') p.push('agent: capabilities.drop must be [ALL]');

  const nodeName = (agent.env ?? []).find((e: Obj) => e.name === 'NODE_NAME');
  if (nodeName?.valueFrom?.fieldRef?.fieldPath !== 'spec.nodeName') p.push('agent: NODE_NAME must come from fieldRef spec.nodeName');
  if (!(agent.args ?? []).includes('--node-name=$(NODE_NAME)')) p.push('agent: --node-name=$(NODE_NAME) missing');
  // Each ConfigMap setting is a real flag with a valid value, passed as --KEY=$(VAR).
  for (const [key, value] of Object.entries(cm.data ?? {})) {
    try {
      parseAgentArgs([`--${key}=${value}`]);
    } catch (e) {
      p.push(`ConfigMap ${key}: ${(e as Error).message}`);
    }
    const env = (agent.env ?? []).find((e: Obj) => e.valueFrom?.configMapKeyRef?.name === cm.metadata.name && e.valueFrom.configMapKeyRef.key === key);
    if (!env || !(agent.args ?? []).includes(`--${key}=$(${env.name})`)) p.push(`ConfigMap ${key}: not passed to the agent as --${key}=$(VAR)`);
  }

  const start = agentStart(ds, cm);
  p.push(...start.problems);
  let opts: AgentOptions | undefined;
  try {
    opts = parseAgentArgs(start.args);
  } catch (e) {
    p.push(`agent args: ${(e as Error).message}`);
  }
  if (opts) {
    if (opts.manifests !== undefined) p.push('agent: --manifests is standalone mode');
    if (!opts.installCni) p.push('agent: must install kelp-cni and the conflist once ready');
    for (const [key, host] of HOST_PATHS) {
      const on = hostPathOf(opts[key] as string, agent, volumes);
      if (on !== host) p.push(`agent: ${key} ${opts[key]} is ${on === undefined ? 'on no host path' : `host ${on}`}, not ${host}`);
    }
    // kelp-cni on the host reaches the socket, and `kelp` the pins, by the agent's own paths.
    for (const key of ['runDir', 'bpfRoot'] as const) if (hostPathOf(opts[key], agent, volumes) !== opts[key]) p.push(`agent: ${key} must be the same path on the host`);
    const socket = path.posix.join(opts.runDir, 'kelp.sock');
    for (const probe of PROBES) {
      const cmd: string[] | undefined = agent[probe]?.exec?.command;
      if (!cmd?.length) p.push(`agent: ${probe} missing`);
      else if (!cmd.join(' ').includes(`--socket ${socket}`)) p.push(`agent: ${probe} does not ask the agent's socket ${socket}`);
    }
  }
  const bpf = (agent.volumeMounts ?? []).find((m: Obj) => m.mountPath === '/sys/fs/bpf');
  if (bpf?.mountPropagation !== 'HostToContainer') p.push('agent: /sys/fs/bpf must be mounted with HostToContainer propagation');
  const netns = (agent.volumeMounts ?? []).find((m: Obj) => m.mountPath === '/var/run/netns');
  if (!netns || netns.mountPropagation !== 'HostToContainer' || hostPathOf('/var/run/netns', agent, volumes) !== '/var/run/netns') {
    p.push("agent: the runtime's /var/run/netns must be mounted at the same path with HostToContainer propagation");
  }
  return p;
}

describe('the agent DaemonSet', () => {
  const ds = only(INSTALL, 'apps/v1/DaemonSet', 'kelp-agent');
  const cm = only(INSTALL, 'v1/ConfigMap', 'kelp-config');
  const agent = ds.spec.template.spec.containers.find((c: Obj) => c.name === 'agent');
  const version = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version;

  it('has hostNetwork, one node at a time, the named capabilities, its mounts, probes and flags', () => {
    expect(agentProblems(ds, cm)).toEqual([]);
  });

  it('starts the agent with the ConfigMap settings and the fixed paths', () => {
    const start = agentStart(ds, cm);
    expect(start.problems).toEqual([]);
    expect(parseAgentArgs(start.args)).toMatchObject({
      nodeName: 'node-1',
      runDir: '/run/kelp',
      stateDir: '/run/kelp/state',
      bpfRoot: '/sys/fs/bpf/kelp',
      cniBinDir: '/host/opt/cni/bin',
      cniConfDir: '/host/etc/cni/net.d',
      installCni: true,
      inCluster: true,
      routingMode: cm.data['routing-mode'],
      masquerade: cm.data.masquerade === 'true',
      networkName: cm.data['network-name'],
      logLevel: cm.data['log-level'],
    });
    // Each node's pod CIDR comes from its Node object: none is given to every node alike.
    expect(parseAgentArgs(start.args).podCidr).toBeUndefined();
    // The command only makes /proc/sys writable, then runs `kelp agent` with these args.
    expect(agent.command.slice(0, 2)).toEqual(['/bin/sh', '-c']);
    expect(agent.command[2]).toMatch(/&& exec kelp agent "\$@"$/);
  });

  it('runs one image, the version package.json names, everywhere', () => {
    const cleanup = only(UNINSTALL, 'apps/v1/DaemonSet', 'kelp-cleanup');
    const images = [ds, cleanup].flatMap((d) => [...(d.spec.template.spec.initContainers ?? []), ...d.spec.template.spec.containers].map((c: Obj) => c.image));
    expect(new Set(images)).toEqual(new Set([`localhost/kelp:${version}`]));
  });

  const broken: Array<[string, (ds: Obj, cm: Obj) => void, RegExp]> = [
    ['no hostNetwork', (d) => (d.spec.template.spec.hostNetwork = false), /hostNetwork must be true/],
    ['two nodes at a time', (d) => (d.spec.updateStrategy.rollingUpdate.maxUnavailable = 2), /updateStrategy/],
    ['a surge (two agents on a node)', (d) => (d.spec.updateStrategy.rollingUpdate.maxSurge = 1), /updateStrategy/],
    ['OnDelete updates', (d) => (d.spec.updateStrategy = { type: 'OnDelete' }), /updateStrategy/],
    ['a taint it does not tolerate', (d) => (d.spec.template.spec.tolerations = [{ key: 'node-role.kubernetes.io/control-plane', operator: 'Exists' }]), /tolerate every taint/],
    ['an extra capability', (d) => d.spec.template.spec.containers[0].securityContext.capabilities.add.push('SYS_MODULE'), /capabilities\.add must be exactly/],
    ['a missing capability', (d) => d.spec.template.spec.containers[0].securityContext.capabilities.add.splice(2, 1), /capabilities\.add must be exactly/],
    ['the default capabilities kept', (d) => delete d.spec.template.spec.containers[0].securityContext.capabilities.drop, /capabilities\.drop/],
    ['a privileged agent', (d) => (d.spec.template.spec.containers[0].securityContext.privileged = true), /^agent: privileged$/],
    ['Bidirectional in the agent', (d) => (d.spec.template.spec.containers[0].volumeMounts[0].mountPropagation = 'Bidirectional'), /agent: Bidirectional propagation needs a privileged container/],
    ['no propagation of the bpffs', (d) => delete d.spec.template.spec.containers[0].volumeMounts[0].mountPropagation, /HostToContainer/],
    ['a mount without a volume', (d) => d.spec.template.spec.containers[0].volumeMounts.push({ name: 'lib-modules', mountPath: '/lib/modules' }), /volumeMount lib-modules has no volume/],
    ['an unused volume', (d) => d.spec.template.spec.volumes.push({ name: 'xtables', hostPath: { path: '/run/xtables.lock' } }), /volume xtables is mounted nowhere/],
    ['the node name from the pod name', (d) => (d.spec.template.spec.containers[0].env[0].valueFrom.fieldRef.fieldPath = 'metadata.name'), /NODE_NAME must come from fieldRef spec\.nodeName/],
    ['no readiness probe', (d) => delete d.spec.template.spec.containers[0].readinessProbe, /readinessProbe missing/],
    ['a probe on another socket', (d) => (d.spec.template.spec.containers[0].livenessProbe.exec.command[3] = '/var/run/kelp.sock'), /livenessProbe does not ask/],
    ['an undefined $(VAR)', (d) => d.spec.template.spec.containers[0].args.push('--uplink=$(KELP_UPLINK)'), /\$\(KELP_UPLINK\) is not defined/],
    ['a flag the agent does not have', (d) => d.spec.template.spec.containers[0].args.push('--enable-ipv6'), /agent args: unknown flag "--enable-ipv6"/],
    ['a setting that is no flag', (_d, c) => (c.data['pod-cidrs'] = '10.0.0.0/24'), /ConfigMap pod-cidrs: unknown flag/],
    ['a setting with a bad value', (_d, c) => (c.data.masquerade = 'maybe'), /ConfigMap masquerade: --masquerade takes true or false/],
    ['a setting never passed', (_d, c) => (c.data['log-file'] = '/run/kelp/agent.log'), /ConfigMap log-file: not passed to the agent/],
    ['the run dir elsewhere on the host', (d) => (d.spec.template.spec.volumes.find((v: Obj) => v.name === 'run').hostPath.path = '/var/run/kelp-agent'), /runDir must be the same path on the host/],
    ['the conflist dir off the host', (d) => (d.spec.template.spec.containers[0].args = d.spec.template.spec.containers[0].args.map((a: string) => a.replace('/host/etc/cni/net.d', '/etc/cni/net.d'))), /cniConfDir \/etc\/cni\/net\.d is on no host path/],
    ['pod namespaces without propagation', (d) => delete d.spec.template.spec.containers[0].volumeMounts.find((m: Obj) => m.name === 'netns').mountPropagation, /\/var\/run\/netns/],
  ];
  it.each(broken)('finds %s', (_label, mutate, problem) => {
    const d = clone(ds);
    const c = clone(cm);
    mutate(d, c);
    expect(agentProblems(d, c)).toContainEqual(expect.stringMatching(problem));
  });
});

// --- Probes and the uninstall step, run for real ------------------------------------------------

/** A stand-in for the agent's API socket: answers /v1/healthz (200 ready, 503 not) and /v1/status with `status`. */
async function fakeAgent(socket: string, status: Obj): Promise<() => Promise<void>> {
  const server = http.createServer((req, res) => {
    const code = req.url === '/v1/status' ? 200 : req.url === '/v1/healthz' ? (status.ready ? 200 : 503) : 404;
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(req.url === '/v1/status' ? status : req.url === '/v1/healthz' ? { ready: status.ready } : { error: 'not found' }));
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return () => new Promise<void>((resolve) => server.close(() => resolve()));
}

/** Runs `argv` with this checkout's `kelp` first on PATH; resolves to its exit status. */
function run(argv: string[], env: Record<string, string> = {}): Promise<number> {
  const bin = tempDir('kelp-deploy-bin-');
  symlinkSync(path.join(ROOT, 'bin/kelp'), path.join(bin, 'kelp'));
  return new Promise((resolve) => {
    execFile(argv[0], argv.slice(1), { env: { ...process.env, ...env, PATH: `${bin}:${process.env.PATH}` }, timeout: 30_000 }, (err) => {
      resolve(err ? (typeof err.code === 'number' ? err.code : -1) : 0);
    });
  });
}

describe('the probes, against a stand-in agent', () => {
  const ds = only(INSTALL, 'apps/v1/DaemonSet', 'kelp-agent');
  const agent = ds.spec.template.spec.containers.find((c: Obj) => c.name === 'agent');
  const SOCKET = '/run/kelp/kelp.sock';
  const probe = (name: (typeof PROBES)[number], socket: string) => run(agent[name].exec.command.map((a: string) => a.split(SOCKET).join(socket)));

  it.each([
    ['ready', { ready: true }, [0, 0, 0]],
    ['starting', { ready: false }, [0, 0, 1]],
  ] as const)('an agent that is %s: started, alive, ready = %j', async (_label, extra, expected) => {
    expect(existsSync(path.join(ROOT, 'dist/cli/main.js'))).toBe(true);
    const socket = path.join(tempDir('kelp-deploy-probe-'), 'kelp.sock');
    const stop = await fakeAgent(socket, { node: 'node-1', podCidr: '10.244.0.0/24', endpoints: 0, maps: [], attached: [], problems: [], ...extra });
    try {
      const got = [];
      for (const name of PROBES) got.push(await probe(name, socket));
      expect(got.map((s) => (s === 0 ? 0 : 1))).toEqual(expected);
    } finally {
      await stop();
    }
  });

  it('no agent: every probe fails', async () => {
    const socket = path.join(tempDir('kelp-deploy-probe-'), 'kelp.sock');
    for (const name of PROBES) expect(await probe(name, socket)).not.toBe(0);
  });
});

describe('the uninstall step', () => {
  const cleanup = only(UNINSTALL, 'apps/v1/DaemonSet', 'kelp-cleanup');
  const step = cleanup.spec.template.spec.initContainers[0];
  const hostRoot = step.env.find((e: Obj) => e.name === 'HOST_ROOT').value as string;
  const agentDs = only(INSTALL, 'apps/v1/DaemonSet', 'kelp-agent');
  const agentOpts = parseAgentArgs(agentStart(agentDs, only(INSTALL, 'v1/ConfigMap')).args);
  const agent = agentDs.spec.template.spec.containers.find((c: Obj) => c.name === 'agent');
  const agentHost = (p: string) => hostPathOf(p, agent, agentDs.spec.template.spec.volumes)!;
  /** What the agent leaves on a node, as host paths. */
  const LEFT = {
    conflist: path.posix.join(agentHost(agentOpts.cniConfDir), CONFLIST_NAME),
    plugin: path.posix.join(agentHost(agentOpts.cniBinDir), PLUGIN_NAME),
    pins: agentHost(agentOpts.bpfRoot),
    run: agentHost(agentOpts.runDir),
  };

  it('removes exactly the host paths the agent writes, through its own mounts', () => {
    const script: string = step.command[2];
    const touched = [...script.matchAll(/"\$HOST_ROOT(\/[^"]*)"/g)].map((m) => m[1]);
    expect(touched.map((t) => hostPathOf(`${hostRoot}${t}`, step, cleanup.spec.template.spec.volumes))).toEqual([
      LEFT.run + '/kelp.sock',
      LEFT.conflist,
      LEFT.plugin,
      LEFT.pins,
      LEFT.run,
    ]);
  });

  /** A fake node: kelp's leftovers next to another plugin's files, which must stay. */
  function fakeHost(): string {
    const host = tempDir('kelp-deploy-host-');
    const files: Record<string, string> = {
      [LEFT.conflist]: '{}',
      '/etc/cni/net.d/10-other.conflist': '{}',
      [LEFT.plugin]: '',
      '/opt/cni/bin/bridge': '',
      [`${LEFT.pins}/kelp_endpoints`]: '',
      [`${LEFT.pins}/links/uplink-eth0-ingress`]: '',
      '/sys/fs/bpf/other/map': '',
      [`${LEFT.run}/state/ipam/10.244.0.2`]: '',
      [`${LEFT.run}/del-queue/.abc.tmp`]: '',
    };
    for (const [f, content] of Object.entries(files)) {
      mkdirSync(path.dirname(path.join(host, f)), { recursive: true });
      writeFileSync(path.join(host, f), content);
    }
    return host;
  }
  const runStep = (host: string) => run(step.command, { HOST_ROOT: host, NODE_NAME: 'node-1' });
  const exists = (host: string, p: string) => existsSync(path.join(host, p));

  it("removes kelp's conflist, plugin, pins and run dir, and nothing else", async () => {
    const host = fakeHost();
    expect(await runStep(host)).toBe(0);
    for (const p of [LEFT.conflist, LEFT.plugin, LEFT.pins]) expect(exists(host, p)).toBe(false);
    expect(readdirSync(path.join(host, LEFT.run))).toEqual([]);
    for (const p of ['/etc/cni/net.d/10-other.conflist', '/opt/cni/bin/bridge', '/sys/fs/bpf/other/map']) expect(exists(host, p)).toBe(true);
  });

  it('refuses while an agent answers on the node, and removes nothing', async () => {
    const host = fakeHost();
    const stop = await fakeAgent(path.join(host, LEFT.run, 'kelp.sock'), { ready: true, maps: [], attached: [], problems: [] });
    try {
      expect(await runStep(host)).toBe(1);
    } finally {
      await stop();
    }
    for (const p of [LEFT.conflist, LEFT.plugin, `${LEFT.pins}/kelp_endpoints`]) expect(exists(host, p)).toBe(true);
  });
});

describe('the Containerfile (not built here: no registry is reachable)', () => {
  const make = readFileSync(path.join(ROOT, 'Makefile'), 'utf8');
  const containerfile = readFileSync(path.join(ROOT, 'Containerfile'), 'utf8');

  it("builds what `make build` builds, with the Makefile's compiler", () => {
    const build = /^build:(.*)$/m.exec(make)![1].trim().split(/\s+/);
    const made = /^RUN make ([^&\n]+)/m.exec(containerfile)?.[1].trim().split(/\s+/);
    expect(made).toEqual(build.filter((t) => t !== 'setup'));
    const clang = /^CLANG\s*\?=\s*(\S+)/m.exec(make)![1];
    expect(containerfile).toMatch(new RegExp(`install[^\\n]*\\n\\s+${clang} `));
  });

  it('tags the image the manifests run', () => {
    const ds = only(INSTALL, 'apps/v1/DaemonSet', 'kelp-agent');
    expect(/podman build -f Containerfile -t (\S+) \./.exec(containerfile)?.[1]).toBe(ds.spec.template.spec.containers[0].image);
  });
});
