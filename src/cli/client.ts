// The CLI's client for the agent API on its unix socket.
import http from 'node:http';

export class AgentUnreachable extends Error {}

export interface ClientResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export function request(socketPath: string, method: string, urlPath: string, body?: Buffer | string): Promise<ClientResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: urlPath, headers: body ? { 'content-length': Buffer.byteLength(body) } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') reject(new AgentUnreachable(`kelp agent is not reachable at ${socketPath}: ${e.code}`));
      else reject(e);
    });
    if (body) req.write(body);
    req.end();
  });
}

/** GET/POST returning decoded JSON; non-2xx statuses become errors with the agent's message. */
export async function requestJson<T>(socketPath: string, method: string, urlPath: string, body?: unknown): Promise<T> {
  const res = await request(socketPath, method, urlPath, body === undefined ? undefined : JSON.stringify(body));
  const text = res.body.toString('utf8');
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    throw new Error(`agent answered ${res.status} with non-JSON: ${text.slice(0, 200)}`);
  }
  if (res.status < 200 || res.status >= 300) {
    const msg = (parsed as { error?: string } | null)?.error ?? text;
    throw new Error(msg);
  }
  return parsed as T;
}
