// A stand-in for the agent's CNI endpoint: an HTTP server on a unix socket in a temporary
// directory that decodes kelp-cni's requests with src/cni/wire.ts, records them and answers
// what the test says, including broken answers.
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { decodeRequest, encodeResponse, splitRequest, WireRequest } from '../../src/cni/wire';
import type { CniResponse } from '../../src/cni/request';

export interface RecordedRequest extends WireRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  /** The body exactly as received. */
  body: Buffer;
  /** Every environment entry the plugin sent, unfiltered. */
  entries: string[];
}

export type Reply =
  | CniResponse
  /** Never answer (until the server closes). */
  | { hang: true }
  /** Close the connection without answering. */
  | { drop: true }
  /** Write these bytes instead of an HTTP answer, then close. */
  | { raw: string | Buffer };

export interface CniTestServer {
  socketPath: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

export async function startCniServer(
  reply: (req: RecordedRequest) => Reply | Promise<Reply>,
  /** `dir`: listen on `<dir>/kelp.sock` (the caller owns the directory); else a new temp dir named `dirName…`. */
  opts: { dirName?: string; dir?: string } = {},
): Promise<CniTestServer> {
  const dir = opts.dir ?? mkdtempSync(path.join(tmpdir(), opts.dirName ?? 'kelp-cni-'));
  const socketPath = path.join(dir, 'kelp.sock');
  const requests: RecordedRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', async () => {
      const body = Buffer.concat(chunks);
      let wire: WireRequest;
      try {
        wire = decodeRequest(body);
      } catch (e) {
        res.writeHead(400);
        return void res.end((e as Error).message);
      }
      const recorded: RecordedRequest = {
        ...wire,
        entries: splitRequest(body).entries,
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body,
      };
      requests.push(recorded);
      const answer = await reply(recorded);
      if ('hang' in answer) return;
      if ('drop' in answer) return void req.socket.destroy();
      if ('raw' in answer) return void req.socket.end(answer.raw);
      const http200 = encodeResponse(answer);
      res.writeHead(http200.status, http200.headers);
      res.end(http200.body);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, resolve);
  });
  return {
    socketPath,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          rmSync(opts.dir ? socketPath : dir, { recursive: true, force: true });
          resolve();
        });
      }),
  };
}
