// kubectl's typed clients (`kubectl create namespace`, and other `create <kind>` generators)
// send protobuf request bodies: the "k8s\0" magic and a runtime.Unknown message whose `raw`
// is the object encoded per k8s.io/api's generated.proto. Only Namespace is decoded here
// (ObjectMeta's name, generateName, labels, annotations, finalizers; the spec's finalizers).
// Go's encoder writes empty optional fields too: the server-owned ones (selfLink, uid,
// resourceVersion, generation, timestamps, managedFields) and the status are ignored, as the
// server overwrites them; any other kind, or another non-empty field, is refused with 415
// rather than dropped.
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

function unsupported(why: string) {
  return errors.unsupportedMediaType(
    `the body of the request was in an unsupported protobuf form (${why}): this test server decodes protobuf only for Namespace - send application/json`,
  );
}

/** selfLink, uid, resourceVersion, generation, creationTimestamp, deletionTimestamp, deletionGracePeriodSeconds, managedFields. */
const SERVER_OWNED_META = [4, 5, 6, 7, 8, 9, 10, 17];
const isEmpty = (f: Field) => (f.bytes ? f.bytes.length === 0 : f.varint === 0);
const text = (f: Field) => (f.bytes ?? Buffer.alloc(0)).toString('utf8');

function stringMap(entries: Field[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of entries) {
    const kv = fields(e.bytes!);
    out[text(kv.find((f) => f.no === 1) ?? { no: 1 })] = text(kv.find((f) => f.no === 2) ?? { no: 2 });
  }
  return out;
}

function objectMeta(buf: Buffer): Obj {
  const meta: Obj = {};
  const fs = fields(buf);
  for (const f of fs) {
    if (f.no === 1 || f.no === 2 || f.no === 3) {
      if (text(f)) meta[['name', 'generateName', 'namespace'][f.no - 1]] = text(f);
    }
    else if (f.no === 14) (meta.finalizers ??= []).push(text(f));
    else if (f.no !== 11 && f.no !== 12 && !SERVER_OWNED_META.includes(f.no) && !isEmpty(f)) {
      throw unsupported(`ObjectMeta field ${f.no}`);
    }
  }
  const labels = fs.filter((f) => f.no === 11);
  const annotations = fs.filter((f) => f.no === 12);
  if (labels.length) meta.labels = stringMap(labels);
  if (annotations.length) meta.annotations = stringMap(annotations);
  return meta;
}

function namespace(buf: Buffer): Obj {
  const ns: Obj = { apiVersion: 'v1', kind: 'Namespace' };
  for (const f of fields(buf)) {
    if (f.no === 1) ns.metadata = objectMeta(f.bytes!);
    else if (f.no === 2) {
      const spec: Obj = {};
      for (const s of fields(f.bytes!)) {
        if (s.no !== 1) throw unsupported(`NamespaceSpec field ${s.no}`);
        (spec.finalizers ??= []).push(text(s));
      }
      ns.spec = spec;
    } else if (f.no !== 3) throw unsupported(`Namespace field ${f.no}`);
  }
  return ns;
}

/** The JSON object a protobuf request body encodes. */
export function decodeProtobuf(body: Buffer): Obj {
  if (!body.subarray(0, 4).equals(MAGIC)) throw unsupported('no k8s protobuf magic');
  const unknown = fields(body.subarray(4));
  const typeMeta = fields(unknown.find((f) => f.no === 1)?.bytes ?? Buffer.alloc(0));
  const apiVersion = text(typeMeta.find((f) => f.no === 1) ?? { no: 1 });
  const kind = text(typeMeta.find((f) => f.no === 2) ?? { no: 2 });
  const raw = unknown.find((f) => f.no === 2)?.bytes ?? Buffer.alloc(0);
  if (apiVersion !== 'v1' || kind !== 'Namespace') throw unsupported(`${apiVersion} ${kind}`);
  return namespace(raw);
}
