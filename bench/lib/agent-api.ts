// What `kelp apply --wait` does, from the benchmark's side: POST /v1/objects, then GET
// /v1/programmed for the revision it answered.
import { requestJson } from '../../src/cli/client';

export type Obj = Record<string, unknown>;

/** POST /v1/objects; returns the store revision that holds the change. */
export async function applyObjects(socketPath: string, objects: Obj[]): Promise<number> {
  return (await requestJson<{ revision: number }>(socketPath, 'POST', '/v1/objects', { objects })).revision;
}

/** Resolves once revision `rev` is programmed; false when the agent answers that it is not within timeoutMs. */
export async function programmed(socketPath: string, rev: number, timeoutMs: number): Promise<boolean> {
  try {
    await requestJson(socketPath, 'GET', `/v1/programmed?revision=${rev}&timeoutMs=${timeoutMs}`);
    return true;
  } catch (e) {
    if (/not programmed within/.test((e as Error).message)) return false;
    throw e;
  }
}
