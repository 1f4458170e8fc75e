// The kelp-cni ⇄ agent protocol (docs/ARCHITECTURE.md "Agent ⇄ kelp-cni protocol"):
// request body = NUL-terminated KEY=VALUE entries, one extra NUL, then stdin verbatim;
// response = 200 with X-CNI-Exit and the plugin's stdout as body.
import { CniCode, CniError } from './errors';
import type { CniResponse } from './request';

export const CNI_HTTP_PATH = '/v1/cni';
export const EXIT_HEADER = 'X-CNI-Exit';
/** Where kelp-cni looks for the agent when neither the config nor the environment says. */
export const DEFAULT_AGENT_SOCKET = '/run/kelp/kelp.sock';

/**
 * The socket kelp-cni tried for a request: the config's agentSocket (already validated), else
 * KELP_AGENT_SOCKET, else the default (native/cni/kelp-cni.c main).
 */
export function pluginSocket(agentSocket: string | undefined, env: Record<string, string>): string {
  return agentSocket || env.KELP_AGENT_SOCKET || DEFAULT_AGENT_SOCKET;
}

export interface WireRequest {
  /** Only CNI_* and KELP_* variables. */
  env: Record<string, string>;
  stdin: Buffer;
}

export function isForwardedVar(key: string): boolean {
  return key.startsWith('CNI_') || key.startsWith('KELP_');
}

function malformed(details: string): CniError {
  return new CniError(CniCode.IoFailure, 'malformed request from kelp-cni', details);
}

/** The body's environment entries exactly as sent, and stdin. */
export function splitRequest(body: Buffer): { entries: string[]; stdin: Buffer } {
  const entries: string[] = [];
  let pos = 0;
  for (;;) {
    if (pos >= body.length) throw malformed('the environment is not terminated by an empty entry');
    if (body[pos] === 0) break;
    const end = body.indexOf(0, pos);
    if (end < 0) throw malformed('an environment entry is not NUL-terminated');
    const entry = body.toString('utf8', pos, end);
    if (entry.indexOf('=') <= 0) throw malformed(`environment entry without a name: ${JSON.stringify(entry.slice(0, 64))}`);
    entries.push(entry);
    pos = end + 1;
  }
  return { entries, stdin: body.subarray(pos + 1) };
}

export function decodeRequest(body: Buffer): WireRequest {
  const { entries, stdin } = splitRequest(body);
  const env: Record<string, string> = {};
  for (const entry of entries) {
    const eq = entry.indexOf('=');
    const key = entry.slice(0, eq);
    // getenv() returns the first of duplicated entries, and so does the plugin for its own
    // lookups (CNI_COMMAND, KELP_AGENT_SOCKET): agree with it.
    if (isForwardedVar(key) && !Object.hasOwn(env, key)) env[key] = entry.slice(eq + 1);
  }
  return { env, stdin };
}

export function encodeRequest(env: Record<string, string | undefined>, stdin: Buffer): Buffer {
  const entries = Object.entries(env)
    .filter((e): e is [string, string] => e[1] !== undefined && isForwardedVar(e[0]))
    .map(([k, v]) => `${k}=${v}\0`)
    .join('');
  return Buffer.concat([Buffer.from(entries + '\0', 'utf8'), stdin]);
}

export interface HttpAnswer {
  status: 200;
  headers: Record<string, string>;
  body: Buffer;
}

export function encodeResponse(res: CniResponse): HttpAnswer {
  if (!Number.isInteger(res.exit) || res.exit < 0 || res.exit > 255) throw new RangeError(`exit code out of range: ${res.exit}`);
  const body = Buffer.from(res.stdout, 'utf8');
  return {
    status: 200,
    headers: {
      [EXIT_HEADER]: String(res.exit),
      'Content-Type': 'application/json',
      'Content-Length': String(body.length),
    },
    body,
  };
}
