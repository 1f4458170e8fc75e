// kubectl's typed clients (`kubectl create namespace|configmap|secret|serviceaccount ...`)
// send protobuf request bodies: the "k8s\0" magic and a runtime.Unknown message whose `raw`
// is the object encoded per k8s.io/api's generated.proto. The few core/v1 kinds those
// generators make and whose messages are small are decoded here from field tables. Go's
// encoder writes empty optional fields too: the server-owned metadata (selfLink, uid,
// resourceVersion, generation, timestamps, managedFields) and a status are ignored, as the
// server overwrites them; any other kind, or another non-empty field, is refused with 415
// rather than dropped. (`kubectl run` and `kubectl expose` send JSON.)
import type { Obj } from './resources';
import { errors } from './status';

export const PROTOBUF = 'application/vnd.kubernetes.protobuf';
const MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]);

interface Field {
  no: number;
  /** Wire type 0 (varint) or 2 (length-delimited). */
  varint?: number;
  bytes?: Buffer;
}

type FieldType = 'string' | 'strings' | 'bool' | 'stringMap' | 'bytesMap' | 'ignored' | Schema;
interface Schema {
  [no: number]: { name: string; type: FieldType };
}

const OBJECT_META: Schema = {
  1: { name: 'name', type: 'string' },
  2: { name: 'generateName', type: 'string' },
  3: { name: 'namespace', type: 'string' },
  11: { name: 'labels', type: 'stringMap' },
  12: { name: 'annotations', type: 'stringMap' },
  14: { name: 'finalizers', type: 'strings' },
  // Server-owned: selfLink, uid, resourceVersion, generation, creationTimestamp,
  // deletionTimestamp, deletionGracePeriodSeconds, managedFields.
  ...Object.fromEntries([4, 5, 6, 7, 8, 9, 10, 17].map((no) => [no, { name: '', type: 'ignored' as const }])),
};

const META = { name: 'metadata', type: OBJECT_META };
const STATUS = { name: 'status', type: 'ignored' as const };

const KINDS: Record<string, Schema> = {
  Namespace: { 1: META, 2: { name: 'spec', type: { 1: { name: 'finalizers', type: 'strings' } } }, 3: STATUS },
  ConfigMap: {
    1: META,
    2: { name: 'data', type: 'stringMap' },
    3: { name: 'binaryData', type: 'bytesMap' },
    4: { name: 'immutable', type: 'bool' },
  },
  Secret: {
    1: META,
    2: { name: 'data', type: 'bytesMap' },
    3: { name: 'type', type: 'string' },
    4: { name: 'stringData', type: 'stringMap' },
    5: { name: 'immutable', type: 'bool' },
  },
  ServiceAccount: { 1: META, 4: { name: 'automountServiceAccountToken', type: 'bool' } },
};

function unsupported(why: string) {
  return errors.unsupportedMediaType(
    `the body of the request was in an unsupported protobuf form (${why}): this test server decodes protobuf only for ` +
      `${Object.keys(KINDS).join(', ')} - send application/json`,
  );
}

function fields(buf: Buffer): Field[] {
  const out: Field[] = [];
  let i = 0;
  const varint = () => {
    let v = 0;
    let mul = 1;
    for (;;) {
      if (i >= buf.length) throw unsupported('truncated protobuf');
      const b = buf[i++];
      v += (b & 0x7f) * mul;
      if (!(b & 0x80)) return v;
      mul *= 128;
    }
  };
  while (i < buf.length) {
    const key = varint();
    const no = Math.floor(key / 8);
    const wire = key & 7;
    if (wire === 0) out.push({ no, varint: varint() });
    else if (wire === 2) {
      const len = varint();
      if (i + len > buf.length) throw unsupported('truncated protobuf');
      out.push({ no, bytes: buf.subarray(i, i + len) });
      i += len;
    } else throw unsupported(`protobuf wire type ${wire}`);
  }
  return out;
}

const bytesOf = (f: Field | undefined) => f?.bytes ?? Buffer.alloc(0);
const isEmpty = (f: Field) => (f.bytes ? f.bytes.length === 0 : f.varint === 0);

function decode(buf: Buffer, schema: Schema, where: string): Obj {
  const out: Obj = {};
  for (const f of fields(buf)) {
    const spec = schema[f.no];
    if (!spec) {
      if (isEmpty(f)) continue;
      throw unsupported(`${where} field ${f.no}`);
    }
    const { name, type } = spec;
    if (type === 'ignored') continue;
    if (type === 'string') {
      if (bytesOf(f).length) out[name] = bytesOf(f).toString('utf8');
    } else if (type === 'strings') (out[name] ??= []).push(bytesOf(f).toString('utf8'));
    else if (type === 'bool') out[name] = f.varint === 1;
    else if (type === 'stringMap' || type === 'bytesMap') {
      // A map entry is a message: key = 1, value = 2.
      const entry = fields(bytesOf(f));
      const value = bytesOf(entry.find((e) => e.no === 2));
      (out[name] ??= {})[bytesOf(entry.find((e) => e.no === 1)).toString('utf8')] =
        type === 'stringMap' ? value.toString('utf8') : value.toString('base64');
    } else out[name] = decode(bytesOf(f), type, `${where}.${name}`);
  }
  return out;
}

/** The JSON object a protobuf request body encodes. */
export function decodeProtobuf(body: Buffer): Obj {
  if (!body.subarray(0, 4).equals(MAGIC)) throw unsupported('no k8s protobuf magic');
  const unknown = fields(body.subarray(4));
  const typeMeta = fields(bytesOf(unknown.find((f) => f.no === 1)));
  const apiVersion = bytesOf(typeMeta.find((f) => f.no === 1)).toString('utf8');
  const kind = bytesOf(typeMeta.find((f) => f.no === 2)).toString('utf8');
  const schema = apiVersion === 'v1' ? KINDS[kind] : undefined;
  if (!schema) throw unsupported(`${apiVersion} ${kind}`);
  return { apiVersion, kind, ...decode(bytesOf(unknown.find((f) => f.no === 2)), schema, kind) };
}
