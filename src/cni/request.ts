// A whole CNI invocation: env + stdin in, typed request out; handler outcome in, exactly what
// kelp-cni prints (and its exit code) out.
import { Attachment, NetConf, decodeConfig, parseConfig, peekVersion } from './config';
import { CniArgs, CniCommand, checkEnv, parseCommand, parseEnv } from './env';
import { CniCode, CniError, toCniError } from './errors';
import { CniResult, formatResult } from './result';
import { DEFAULT_VERSION, requireVerbVersion, versionInfo } from './version';

interface RequestCommon {
  /** Equal to config.cniVersion: every answer is written in it. */
  cniVersion: string;
  config: NetConf;
  args: CniArgs;
  /** CNI_PATH entries, for delegated plugins. */
  path: string[];
  /** The CNI_* and KELP_* variables as received, to pass on unchanged when delegating. */
  env: Record<string, string>;
  /** stdin as received: delegated plugins get the complete config (SPEC §4). */
  stdin: Buffer;
}

export interface AddRequest extends RequestCommon {
  command: 'ADD';
  containerId: string;
  netns: string;
  ifname: string;
}

export interface CheckRequest extends RequestCommon {
  command: 'CHECK';
  containerId: string;
  netns: string;
  ifname: string;
  /** The final result of the ADD chain, which CHECK compares against (SPEC §2 CHECK). */
  prevResult: CniResult;
}

export interface DelRequest extends RequestCommon {
  command: 'DEL';
  containerId: string;
  /** Absent when the runtime has no netns any more: DEL still cleans up (SPEC §2 DEL). */
  netns?: string;
  ifname: string;
}

export interface StatusRequest extends RequestCommon {
  command: 'STATUS';
}

export interface GcRequest extends RequestCommon {
  command: 'GC';
  /** Attachments to keep; undefined when the runtime sent no list, which means delete nothing. */
  validAttachments?: Attachment[];
}

export interface VersionRequest {
  command: 'VERSION';
  cniVersion: string;
}

export type ActionRequest = AddRequest | CheckRequest | DelRequest | StatusRequest | GcRequest;
export type CniRequest = ActionRequest | VersionRequest;

/** What kelp-cni prints on stdout and exits with. */
export interface CniResponse {
  exit: number;
  stdout: string;
}

/**
 * Validates a request the way libcni's skel does, in the same order: the command, the
 * variables the verb needs, then stdin (JSON, version, fields, version floor of the verb).
 * CNI_ARGS comes after the config: everything before it kelp-cni checks itself, alike
 * (native/cni/kelp-cni.c), so a request gets one answer whether the agent is up or not.
 * Errors carry the cniVersion to answer in: the config's when it can be read.
 */
export function parseRequest(env: Record<string, string>, stdin: Buffer): CniRequest | CniError {
  let doc: Record<string, unknown> | undefined;
  let decodeError: CniError | undefined;
  try {
    doc = decodeConfig(stdin);
  } catch (e) {
    decodeError = toCniError(e);
  }
  const answerIn = doc ? peekVersion(doc, DEFAULT_VERSION) : (decodeError?.cniVersion ?? DEFAULT_VERSION);
  try {
    const command: CniCommand = parseCommand(env);
    // skel ignores stdin for VERSION: empty or malformed stdin still gets an answer.
    if (command === 'VERSION') return { command, cniVersion: answerIn };
    checkEnv(env);
    if (decodeError !== undefined) throw decodeError;
    const config = parseConfig(doc!);
    const cniEnv = parseEnv(env);
    requireVerbVersion(command, config.cniVersion);
    const common: RequestCommon = { cniVersion: config.cniVersion, config, args: cniEnv.args, path: cniEnv.path, env, stdin };
    // checkEnv has made sure each verb's required variables are present.
    const containerId = cniEnv.containerId!;
    const ifname = cniEnv.ifname!;
    switch (command) {
      case 'ADD':
        return { ...common, command, containerId, netns: cniEnv.netns!, ifname };
      case 'CHECK':
        if (config.prevResult === undefined) throw new CniError(CniCode.InvalidConfig, 'CHECK needs prevResult', 'the runtime sent no prevResult');
        return { ...common, command, containerId, netns: cniEnv.netns!, ifname, prevResult: config.prevResult };
      case 'DEL':
        return { ...common, command, containerId, netns: cniEnv.netns, ifname };
      case 'STATUS':
        return { ...common, command };
      case 'GC':
        return { ...common, command, validAttachments: config.validAttachments };
    }
  } catch (e) {
    return toCniError(e).withVersion(answerIn);
  }
}

function errorResponse(err: CniError, cniVersion: string): CniResponse {
  return { exit: 1, stdout: JSON.stringify(err.toCniJson(cniVersion)) + '\n' };
}

/**
 * The plugin's answer: an error object and exit 1; for ADD the result in the config's version;
 * for DEL, CHECK, STATUS and GC nothing (exit 0); for VERSION the version document.
 */
export function formatResponse(req: CniRequest | CniError, outcome?: CniResult | CniError | void): CniResponse {
  if (req instanceof CniError) return errorResponse(req, req.cniVersion ?? DEFAULT_VERSION);
  if (req.command === 'VERSION') return { exit: 0, stdout: JSON.stringify(versionInfo(req.cniVersion)) + '\n' };
  if (outcome instanceof CniError) return errorResponse(outcome, req.cniVersion);
  if (req.command !== 'ADD') return { exit: 0, stdout: '' };
  if (outcome === undefined) return errorResponse(new CniError(CniCode.Internal, 'kelp internal error', 'ADD produced no result'), req.cniVersion);
  try {
    return { exit: 0, stdout: JSON.stringify(formatResult(outcome, req.cniVersion)) + '\n' };
  } catch (e) {
    return errorResponse(toCniError(e), req.cniVersion);
  }
}

export type CniHandler = (req: ActionRequest) => Promise<CniResult | void>;

/** parseRequest → handler → formatResponse; anything the handler throws becomes an error answer. */
export async function serveCni(env: Record<string, string>, stdin: Buffer, handler: CniHandler): Promise<CniResponse> {
  const req = parseRequest(env, stdin);
  if (req instanceof CniError || req.command === 'VERSION') return formatResponse(req);
  let outcome: CniResult | CniError | void;
  try {
    outcome = await handler(req);
  } catch (e) {
    outcome = toCniError(e);
  }
  return formatResponse(req, outcome);
}
