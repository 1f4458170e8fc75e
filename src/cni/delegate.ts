// Delegation to another plugin (SPEC §4), as the reference `invoke` package does it: the plugin
// is found by name in CNI_PATH, in order; it gets the same environment (only CNI_COMMAND may
// change) and the complete stdin config; its stdout is a result in the config's version or an
// error object, which is passed on as our own error.
import { execFile } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import path from 'node:path';
import { CniCode, CniError } from './errors';
import { CniResult, parseResult } from './result';

export interface DelegateCall {
  /** Plugin name (`ipam.type`); must be a bare file name. */
  type: string;
  command: 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC';
  /** CNI_PATH entries. */
  path: string[];
  /** The CNI_* variables of the request, passed on unchanged except CNI_COMMAND. */
  env: Record<string, string>;
  stdin: Buffer;
  cniVersion: string;
  /** The delegate's stderr lines go here (libcni passes them to the runtime's stderr). */
  onStderr?: (text: string) => void;
  timeoutMs?: number;
}

/** The first executable regular file named `type` in the CNI_PATH directories. */
export function findPlugin(type: string, dirs: string[]): string {
  if (!type || type.includes('/') || type === '.' || type === '..') {
    throw new CniError(CniCode.InvalidConfig, `invalid plugin name ${JSON.stringify(type)}`);
  }
  for (const dir of dirs) {
    if (!dir) continue;
    const file = path.join(dir, type);
    try {
      if (!statSync(file).isFile()) continue;
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      continue;
    }
  }
  throw new CniError(CniCode.InvalidConfig, `failed to find plugin ${JSON.stringify(type)} in path [${dirs.join(' ')}]`);
}

/** Runs a delegated plugin; resolves with its result for ADD, nothing for the other verbs. */
export function execDelegate(call: DelegateCall): Promise<CniResult | undefined> {
  const binary = findPlugin(call.type, call.path);
  const env: Record<string, string> = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...call.env, CNI_COMMAND: call.command };
  return new Promise((resolve, reject) => {
    const child = execFile(binary, [], { env, timeout: call.timeoutMs ?? 60_000, maxBuffer: 16 << 20, encoding: 'buffer' }, (err, stdoutBuf, stderrBuf) => {
      const stdout = stdoutBuf.toString('utf8');
      if (stderrBuf.length > 0) call.onStderr?.(stderrBuf.toString('utf8'));
      if (err) {
        reject(delegateError(call, stdout, err));
        return;
      }
      if (call.command !== 'ADD') {
        resolve(undefined);
        return;
      }
      let doc: unknown;
      try {
        doc = JSON.parse(stdout);
      } catch {
        reject(new CniError(CniCode.DecodeFailure, `${call.type} returned an unreadable result`, stdout.slice(0, 500)));
        return;
      }
      try {
        resolve(parseResult(doc, call.cniVersion, `${call.type} result`));
      } catch (e) {
        reject(e);
      }
    });
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(call.stdin);
  });
}

/** A failed delegate's error object becomes ours (code, msg, details); otherwise its stderr/exit. */
function delegateError(call: DelegateCall, stdout: string, err: Error & { code?: unknown; killed?: boolean }): CniError {
  try {
    const o = JSON.parse(stdout) as { code?: unknown; msg?: unknown; details?: unknown };
    if (typeof o.code === 'number' && Number.isInteger(o.code) && o.code > 0 && typeof o.msg === 'string') {
      return new CniError(o.code, o.msg, typeof o.details === 'string' && o.details ? o.details : `from delegated plugin ${call.type} (${call.command})`);
    }
  } catch {
    // not an error object
  }
  const why = err.killed ? 'timed out' : typeof err.code === 'number' ? `exit status ${err.code}` : err.message;
  return new CniError(CniCode.FirstPluginCode + 40, `delegated plugin ${call.type} ${call.command} failed: ${why}`, stdout.slice(0, 500) || undefined);
}
