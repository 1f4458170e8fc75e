// A way from a node's network namespace to the test API server on the machine's loopback: a
// listener made inside that namespace (bind happens synchronously in listen(), so the socket
// belongs to the namespace) pipes each connection to the server. Nothing of the machine's
// network is touched. Runs in the process that holds the server: never block its event loop.
import net from 'node:net';
import { inNetns } from '../../../src/bpf';

export interface Bridge {
  readonly server: net.Server;
  /** Connections piped now (both ends of each). */
  readonly sockets: ReadonlySet<net.Socket>;
  /** Stops listening and destroys every piped connection. Safe to call twice. */
  close(): Promise<void>;
}

/** Listens on `port` of 0.0.0.0 inside the namespace at `netnsPath`, piping to 127.0.0.1:`targetPort` here. */
export function bridgeInto(netnsPath: string, port: number, targetPort: number): Bridge {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((c) => {
    const up = net.connect(targetPort, '127.0.0.1');
    for (const s of [c, up]) {
      // As the API server and its clients do: without it, Nagle's algorithm holds a watch
      // event written while the previous one waits for its (delayed) ACK, up to ~40 ms.
      s.setNoDelay(true);
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    c.on('close', () => up.destroy());
    up.on('close', () => c.destroy());
    c.pipe(up).pipe(c);
  });
  inNetns(netnsPath, () => server.listen(port));
  let closed: Promise<void> | undefined;
  return {
    server,
    sockets,
    close: () => {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
      return closed;
    },
  };
}
