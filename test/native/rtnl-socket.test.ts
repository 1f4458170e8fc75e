// openRtnlSocket: an rtnetlink socket read on the event loop. Replies and socket errors reach JS
// as one event per wake-up; nothing about the socket can take the process down (a C++ exception
// out of a libuv callback is std::terminate: the `netlink` package's abort). Sockets live in
// namespaces the tests create; messages are built by hand, independent of src/netlink.
import { spawnSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openRtnlSocket, RtnlSocket } from '../../src/bpf';
import { caught } from '../support/bpf-error';
import { cleanupAll, createNetns, onCleanup } from '../support/netns';

const ADDON = path.join(__dirname, '../../build/Release/kelp.node');
const ENOBUFS = 105;
const NLMSG_ERROR = 2;

afterEach(cleanupAll);

/** RTM_SETLINK lo up, with NLM_F_ACK: the kernel answers with one ACK (~1.2 KiB of buffer). */
function setLoUp(seq: number): Buffer {
  const m = Buffer.alloc(32);
  m.writeUInt32LE(m.length, 0);
  m.writeUInt16LE(19, 4); // RTM_SETLINK
  m.writeUInt16LE(0x1 | 0x4, 6); // NLM_F_REQUEST | NLM_F_ACK
  m.writeUInt32LE(seq, 8);
  m.writeInt32LE(1, 20); // ifi_index
  m.writeUInt32LE(1, 24); // ifi_flags IFF_UP
  m.writeUInt32LE(1, 28); // ifi_change
  return m;
}

interface Event {
  datagrams: Buffer[];
  errno: number;
}

/** A socket in a fresh namespace, and its events as a queue to await. */
function socketInNewNetns(receiveBufferBytes?: number): { sock: RtnlSocket; next: () => Promise<Event> } {
  const ns = createNetns('krs');
  const fd = openSync(ns.path, 'r');
  onCleanup(() => closeSync(fd));
  const events: Event[] = [];
  let wake: (() => void) | undefined;
  const sock = openRtnlSocket(fd, (datagrams, errno) => {
    events.push({ datagrams, errno });
    wake?.();
  }, { receiveBufferBytes });
  onCleanup(() => sock.close());
  const next = async (): Promise<Event> => {
    while (events.length === 0) await new Promise<void>((r) => (wake = r));
    return events.shift()!;
  };
  return { sock, next };
}

/** Type and sequence number of each message of a datagram holding one. */
function header(d: Buffer): { type: number; seq: number; error?: number } {
  const type = d.readUInt16LE(4);
  return { type, seq: d.readUInt32LE(8), ...(type === NLMSG_ERROR ? { error: d.readInt32LE(16) } : {}) };
}

/** Runs `body` in a child node with the addon's socket in `nsPath` as `sock`. */
function child(nsPath: string, onEvent: string, body: string) {
  const script = `
    const addon = require(${JSON.stringify(ADDON)});
    const fd = require('node:fs').openSync(${JSON.stringify(nsPath)}, 'r');
    const m = Buffer.from(${JSON.stringify(setLoUp(1).toString('hex'))}, 'hex');
    const sock = new addon.RtnlSocketHandle(fd, 0, ${onEvent});
    ${body}`;
  return spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20_000 });
}

describe('openRtnlSocket', () => {
  it('delivers the kernel replies of a batch in one event', async () => {
    const { sock, next } = socketInNewNetns();
    for (let seq = 1; seq <= 3; seq++) sock.send(setLoUp(seq), `set lo up ${seq}`);
    const ev = await next();
    expect(ev.errno).toBe(0);
    expect(ev.datagrams.map(header)).toEqual([1, 2, 3].map((seq) => ({ type: NLMSG_ERROR, seq, error: 0 })));
  });

  it('reports an overrun as ENOBUFS after the replies that fit, and the socket keeps working', async () => {
    // The smallest buffer (~2.3 KiB): two ACKs fit, the third is dropped.
    const { sock, next } = socketInNewNetns(1);
    for (let seq = 1; seq <= 4; seq++) sock.send(setLoUp(seq), `set lo up ${seq}`);
    const ev = await next();
    expect(ev.errno).toBe(ENOBUFS);
    expect(ev.datagrams.map(header)).toEqual([1, 2].map((seq) => ({ type: NLMSG_ERROR, seq, error: 0 })));
    sock.send(setLoUp(5), 'set lo up 5');
    expect(await next()).toEqual({ datagrams: [expect.any(Buffer)], errno: 0 });
  });

  it('may be closed from inside its callback, twice, and refuses to send once closed', async () => {
    const ns = createNetns('krs');
    const fd = openSync(ns.path, 'r');
    onCleanup(() => closeSync(fd));
    const seen: number[] = [];
    let closed!: () => void;
    const done = new Promise<void>((r) => (closed = r));
    const sock: RtnlSocket = openRtnlSocket(fd, (_datagrams, errno) => {
      seen.push(errno);
      sock.close();
      sock.close();
      closed();
    }, { receiveBufferBytes: 1 });
    onCleanup(() => sock.close());
    // An overrun: the event that closes the socket is also the one after which it would be
    // watched again.
    for (let seq = 1; seq <= 4; seq++) sock.send(setLoUp(seq), 'set lo up');
    await done;
    await new Promise((r) => setTimeout(r, 50));
    expect(seen).toEqual([ENOBUFS]);
    const e = caught(() => sock.send(setLoUp(9), 'set lo up after close'));
    expect(e).toMatchObject({ code: 'EBADF', message: 'set lo up after close: EBADF (Bad file descriptor)' });
  });

  it('checks its arguments before any syscall', () => {
    expect(caught(() => openRtnlSocket(-1, () => undefined)).message).toBe('open netlink socket: netnsFd must be a file descriptor, got -1');
    const ns = createNetns('krs');
    const fd = openSync(ns.path, 'r');
    onCleanup(() => closeSync(fd));
    expect(caught(() => openRtnlSocket(fd, () => undefined, { receiveBufferBytes: 0 })).message).toBe(
      'open netlink socket: receiveBufferBytes must be an integer from 1 to 1073741824, got 0');
    const sock = openRtnlSocket(fd, () => undefined);
    onCleanup(() => sock.close());
    expect(caught(() => sock.send(Buffer.alloc(8), 'short')).message).toBe('short: message must be a Buffer of at least 16 bytes (a netlink header)');
    // A file that is not a namespace: the kernel's refusal, with the operation.
    const file = openSync(__filename, 'r');
    onCleanup(() => closeSync(file));
    expect(caught(() => openRtnlSocket(file, () => undefined))).toMatchObject({ code: 'EINVAL', operation: `setns netns fd ${file}` });
  });

  it('a process exiting with replies still unread exits cleanly', () => {
    // Unreferenced, the socket lets the loop end at once; node then runs it one last time to
    // close handles, this socket's replies arrive, and no JS may run any more.
    const ns = createNetns('krs');
    const r = child(ns.path, '() => { throw new Error("must not run") }', 'sock.send(m, "set lo up");');
    expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
  });

  it("an exception from its callback is the process's uncaught exception, not an abort", () => {
    const ns = createNetns('krs');
    const r = child(ns.path, '() => { throw new Error("from onEvent") }', `
      process.on('uncaughtException', (e) => { console.log('uncaught: ' + e.message); sock.close(); });
      sock.send(m, 'set lo up');
      setTimeout(() => {}, 500);`);
    expect({ status: r.status, signal: r.signal, stdout: r.stdout }).toEqual({ status: 0, signal: null, stdout: 'uncaught: from onEvent\n' });
  });
});
