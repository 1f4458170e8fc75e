// A socket error in kelp's netlink handling is an error of the requests it hit, never of the
// process. The error provoked here is the real one: replies overrunning a socket's receive
// buffer, after which the kernel drops replies and flags the socket (ENOBUFS, EPOLLERR). On the
// `netlink` package's sockets, its poll handler threw a C++ exception out of a libuv callback on
// EPOLLERR and the process aborted (SIGABRT): this file's worker, or the agent. Each test works in
// namespaces it creates.
import { readFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RawNetlinkSocket, Protocol } from 'netlink';
import { inNetns } from '../../src/bpf';
import { NetlinkError, Rtnl } from '../../src/netlink';
import { Sandbox } from '../../src/sandbox';
import { cleanupAll, createNetns, onCleanup } from '../support/netns';
import { GONE, NETWORK, add, del, expectCniError, expectSilentSuccess, hostIfnameFor, linkNames, mustAdd, newAttachment, ping, resultIp, startSandbox, traceOf } from '../support/e2e';

const OVERRUN = "reply lost: the socket's receive buffer overran; the next request uses a new socket";

afterEach(cleanupAll);

/** The smallest receive buffer the kernel allows (~2.3 KiB): one link's reply fits, two do not. */
function tinyRtnl(nsPath: string, timeoutMs?: number): Rtnl {
  const rtnl = Rtnl.inNetns(nsPath, { receiveBufferBytes: 1, timeoutMs });
  onCleanup(() => rtnl.close());
  return rtnl;
}

function split<T>(results: PromiseSettledResult<T>[]): { ok: T[]; failed: unknown[] } {
  return {
    ok: results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : [])),
    failed: results.flatMap((r) => (r.status === 'rejected' ? [r.reason] : [])),
  };
}

describe('a socket whose receive buffer overruns', () => {
  it('fails the requests whose replies were dropped with ENOBUFS, and the next requests work', async () => {
    const ns = createNetns('kab');
    const rtnl = tinyRtnl(ns.path);
    // One batch: the kernel answers all 16 inside their sendmsg, before the loop reads any.
    const results = await Promise.allSettled(Array.from({ length: 16 }, () => rtnl.link('lo')));
    // The first reply always fits an empty buffer.
    expect(results[0]).toEqual({ status: 'fulfilled', value: expect.objectContaining({ name: 'lo', index: 1 }) });
    const { ok, failed } = split(results);
    expect(failed.length).toBeGreaterThan(0);
    for (const e of failed) {
      expect(e).toBeInstanceOf(NetlinkError);
      expect(e).toMatchObject({ code: 'ENOBUFS', errno: 105, operation: 'netlink getlink lo', message: `netlink getlink lo: ENOBUFS (${OVERRUN})` });
    }
    for (const l of ok) expect(l).toMatchObject({ name: 'lo', index: 1 });

    // A lookup and a change afterwards, each alone: both answered on the socket that took over.
    expect(await rtnl.link('lo')).toMatchObject({ name: 'lo', index: 1 });
    await rtnl.addAddress(1, '10.99.0.1/32');
    expect(ns.ip('-4', 'addr', 'show', 'dev', 'lo')).toContain('10.99.0.1/32');
  });

  it('settles every request through repeated overruns: none is left waiting for its timeout', async () => {
    const ns = createNetns('kab');
    const rtnl = tinyRtnl(ns.path, 5_000);
    // 200 requests, 16 in flight at a time: each overrun fails a batch, and the requests waiting
    // for a slot go out on the next socket, which overruns in turn.
    const jobs: Promise<unknown>[] = [];
    for (let i = 0; i < 100; i++) jobs.push(rtnl.link('lo'), rtnl.setUp(1));
    const { ok, failed } = split(await Promise.allSettled(jobs));
    expect(ok.length + failed.length).toBe(200);
    expect(ok.length).toBeGreaterThan(0);
    expect(failed.length).toBeGreaterThan(0);
    expect(new Set(failed.map((e) => (e as NetlinkError).code))).toEqual(new Set(['ENOBUFS']));
    expect(await rtnl.listLinks()).toEqual([expect.objectContaining({ name: 'lo', up: true })]);
  });

  it('no other socket can fill it: the kernel refuses their unicasts', async () => {
    const ns = createNetns('kab');
    const rtnl = Rtnl.inNetns(ns.path);
    onCleanup(() => rtnl.close());
    // The namespace is new: its only user-space rtnetlink socket is the Rtnl's.
    const ports = inNetns(ns.path, () => readFileSync('/proc/thread-self/net/netlink', 'utf8'))
      .split('\n').slice(1).map((l) => l.trim().split(/\s+/))
      .filter((f) => f[1] === '0' && f[2] !== undefined && f[2] !== '0')
      .map((f) => Number(f[2]));
    expect(ports).toHaveLength(1);
    // Sockets of any process in the namespace, each sending once, at once: accepted, two large
    // datagrams and a tail of header-only ones would fill the Rtnl's buffer to within a few
    // hundred bytes of the kernel's default (208 KiB), and the reply to the request sent next
    // would be dropped.
    const sizes = [96 << 10, 96 << 10, ...Array<number>(32).fill(16)];
    const flooders = sizes.map(() => inNetns(ns.path, () => new RawNetlinkSocket(Protocol.ROUTE)));
    onCleanup(() => flooders.forEach((f) => f.close()));
    const sent = flooders.map((f, i) => new Promise<unknown>((resolve) => {
      const datagram = Buffer.alloc(sizes[i]);
      datagram.writeUInt32LE(datagram.length, 0);
      f.send(datagram, { port: ports[0] }, resolve);
    }));
    expect(await rtnl.link('lo')).toMatchObject({ name: 'lo', index: 1 });
    const codes = (await Promise.all(sent)).map((e) => (e as { code?: string } | undefined)?.code);
    expect(new Set(codes)).toEqual(new Set(['ECONNREFUSED']));
  });
});

describe('an agent whose netlink socket overruns in the middle of an ADD', () => {
  let sb: Sandbox;

  beforeAll(async () => {
    // Test only (src/netlink/rtnl.ts): the agent's sockets in pod namespaces get the smallest
    // receive buffer until its first netlink socket error. An ADD configures the pod side in one
    // batch of four requests (link up, address, route, read-back), whose replies overrun it.
    process.env.KELP_TEST_NETLINK_RCVBUF = '1';
    try {
      sb = await startSandbox('nlo');
    } finally {
      delete process.env.KELP_TEST_NETLINK_RCVBUF;
    }
  });

  afterAll(async () => {
    await sb?.stop();
  });

  it('answers that ADD with a CNI error, leaves nothing behind, and serves the next ADDs', async () => {
    const a = newAttachment(sb);
    const failed = await add(sb, a);
    expectCniError(failed, 100, new RegExp(`: ENOBUFS \\(${OVERRUN}\\)`));
    expect(sb.agent?.exitCode).toBeNull();
    expect(sb.agent?.signalCode).toBeNull();
    expect(await sb.healthy()).toBe(true);
    expect(traceOf(sb, a, undefined, hostIfnameFor(NETWORK, a.containerId, 'eth0'))).toEqual(GONE);
    expect(linkNames(a.netns)).toEqual(['lo']);

    // Another pod, and the failed one again as a runtime retries it (DEL first).
    const b = newAttachment(sb);
    const rb = await mustAdd(sb, b);
    expectSilentSuccess(await del(sb, a));
    const ra = await mustAdd(sb, a);
    expect(ping(sb, b.netns, resultIp(ra))).toBe(true);
    expect(ping(sb, a.netns, resultIp(rb))).toBe(true);
    expect(sb.agent?.exitCode).toBeNull();
  });
});
