// Iterator links (iter/udp with bpf_sock_destroy, from bpf/iter_udp.c) and netns cookies: an
// iterator opened in a namespace walks that namespace's sockets, and only those.
import { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { attachIterator, btfStructLayout, inNetns, loadObject, netnsCookie } from '../../src/bpf';
import { SOCK_DESTROY_KEY, SOCK_DESTROY_RECORD } from '../../src/datapath/sock';
import { cleanupAll, createNetns, mountBpffs, Netns } from '../support/netns';

afterAll(cleanupAll);

const ITER_UDP = path.join(__dirname, '../../build/bpf/iter_udp.o');

/**
 * A UDP client connected to addr:port, blocked in recv(); prints the errno recv() then fails
 * with. `v6`: a dual-stack socket (AF_INET6) connected to the v4-mapped address.
 */
function blockedClient(ns: Netns, addr: string, port: number, v6 = false): { child: ChildProcess; ready: Promise<void>; result: Promise<string> } {
  const code = [
    'import socket, sys',
    v6 ? 's = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)' : 's = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
    v6 ? `s.connect(("::ffff:${addr}", ${port}))` : `s.connect(("${addr}", ${port}))`,
    'print("ready", flush=True)',
    'try:',
    '    s.recv(100); print("data", flush=True)',
    'except OSError as e:',
    '    print("errno", e.errno, flush=True)',
  ].join('\n');
  const child = ns.spawn('python3', ['-c', code]);
  let out = '';
  const ready = new Promise<void>((resolve) => child.stdout!.on('data', (d: Buffer) => ((out += d.toString()), out.includes('ready') && resolve())));
  const result = new Promise<string>((resolve) => child.on('exit', () => resolve(out.replace('ready\n', '').trim())));
  return { child, ready, result };
}

function destroyKey(addr: string, port: number): Buffer {
  const k = Buffer.alloc(8);
  Buffer.from(addr.split('.').map(Number)).copy(k, 0);
  k.writeUInt16BE(port, 4);
  return k;
}

describe('iterators', () => {
  it("the TypeScript view of iter_udp.o's key and record is the object's BTF", () => {
    for (const [name, want] of [
      ['sock_destroy_key', SOCK_DESTROY_KEY],
      ['sock_destroy_record', SOCK_DESTROY_RECORD],
    ] as const) {
      const l = btfStructLayout(ITER_UDP, name);
      expect(l.size, name).toBe(want.size);
      const offsets = Object.fromEntries(l.members.filter((m) => m.name !== 'pad').map((m) => [m.name, m.offset]));
      expect(offsets, name).toEqual(want.off);
    }
  });

  it('netnsCookie tells namespaces apart and is stable', () => {
    const a = createNetns('kia');
    const b = createNetns('kib');
    const ca = netnsCookie(a.path);
    expect(typeof ca).toBe('bigint');
    expect(netnsCookie(a.path)).toBe(ca);
    expect(netnsCookie(b.path)).not.toBe(ca);
    expect(inNetns(a.path, () => netnsCookie())).toBe(ca);
  });

  it('iter/udp destroys the connected UDP sockets of the namespace it is opened in, to matching peers only', async () => {
    const a = createNetns('kia');
    const b = createNetns('kib');
    const obj = loadObject(ITER_UDP, { pinRoot: mountBpffs() });
    const iter = attachIterator(obj.program('kelp_udp_destroy'));
    try {
      const target = blockedClient(a, '127.0.0.9', 5353);
      const mapped = blockedClient(a, '127.0.0.9', 5353, true);
      const other = blockedClient(a, '127.0.0.9', 5354);
      const elsewhere = blockedClient(b, '127.0.0.9', 5353);
      await Promise.all([target.ready, mapped.ready, other.ready, elsewhere.ready]);
      obj.map('kelp_sock_destroy4').update(destroyKey('127.0.0.9', 5353), Buffer.from([1]));
      const out = iter.run({ netns: a.path });
      // One record (struct sock_destroy_record, 16 bytes) per destroyed socket.
      expect(out.length).toBe(32);
      for (const at of [0, 16]) {
        expect(out.subarray(at, at + 4)).toEqual(Buffer.from([127, 0, 0, 9]));
        expect(out.readUInt16BE(at + 8)).toBe(5353);
        expect(out.readInt32LE(at + 12)).toBe(0);
      }
      // ECONNABORTED (103): the owner sees the error at once.
      expect(await target.result).toBe('errno 103');
      expect(await mapped.result).toBe('errno 103');
      expect(other.child.exitCode).toBeNull();
      expect(elsewhere.child.exitCode).toBeNull();
      expect(iter.run({ netns: b.path }).length).toBe(16);
      expect(await elsewhere.result).toBe('errno 103');
      expect(other.child.exitCode).toBeNull();
    } finally {
      iter.close();
      obj.close();
    }
  });
});
