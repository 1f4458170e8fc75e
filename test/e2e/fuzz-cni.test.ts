// 10,000+ generated malformed or hostile CNI invocations thrown at kelp-cni and a live agent,
// 32 at a time: mutated configs (wrong types, unknown and prototype keys, unicode, deep
// nesting, corrupted bytes), hostile environments, odd prevResult and GC shapes, binary and
// huge stdin, and valid-looking ADDs into real pod namespaces. Every answer must be a spec
// error object (numeric code, string msg) or a valid result; the agent keeps its PID and keeps
// answering; and once every ADD has had its DEL (the runtime's side of the contract) nothing is
// left behind, not even an open file descriptor. The seed is printed and named in every failure: KELP_FUZZ_SEED=<n> replays it.
//
// Safety: only paths this file made are ever named. The agent socket and DEL queue keys are
// fixed by the harness (never fuzzed into real paths), ipam.dataDir is always a scratch dir,
// and CNI_NETNS only names this sandbox's pod namespaces or paths that are no namespace.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Sandbox } from '../../src/sandbox';
import { CniExecResult, execCni } from '../support/cni-exec';
import { agentPid, extraFds, fdCount, fdTargets, killAll, nodeState, prefixFor, queueDir, sleep, waitReady } from '../support/restart';
import { Rng } from '../support/rng';

const CASES = Number(process.env.KELP_FUZZ_CASES ?? 10_000);
const PARALLEL = 32;
const SEED = Number(process.env.KELP_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));

let sb: Sandbox;
let scratch: string;
let fuzzIpam: string;
let pods: string[] = [];

beforeAll(async () => {
  console.log(`fuzz seed ${SEED} (replay with KELP_FUZZ_SEED=${SEED})`);
  sb = await Sandbox.start({ prefix: prefixFor('fz'), logLevel: 'warn' });
  scratch = path.join(sb.dir, 'fuzz');
  fuzzIpam = path.join(scratch, 'ipam');
  mkdirSync(fuzzIpam, { recursive: true });
  writeFileSync(path.join(scratch, 'plain-file'), 'x');
  pods = Array.from({ length: 8 }, (_, i) => sb.createNetns(`${sb.opts.prefix}-f${i}`));
});

afterAll(async () => {
  killAll();
  await sb?.stop();
});

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const VERSIONS = ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];
const KEYS = ['cniVersion', 'name', 'type', 'ipam', 'ranges', 'subnet', 'gateway', 'ips', 'interfaces', 'routes', 'dns', 'mtu', 'mac', 'runtimeConfig',
  'prevResult', 'args', 'cni', 'capabilities', 'containerID', 'ifname', 'address', 'interface', 'sandbox', 'version', 'dst', 'gw', '__proto__',
  'constructor', 'prototype', 'toString', 'hasOwnProperty', 'IPAM', 'RuntimeConfig', 'cni.dev/valid-attachments', 'cni.dev/attachments', ''];

function randString(r: Rng): string {
  switch (r.int(12)) {
    case 0: return '';
    case 1: return r.pick(VERSIONS);
    case 2: return 'x'.repeat(r.pick([15, 16, 64, 65, 255, 4096, 70_000]));
    case 3: return r.pick(['😀', 'Ω', 'é', '\u0301', '\u202e', '\u200b', '\ud800', '\udfff', '\uffff', '中文', '\u0000', '\n', '\t', '"', '\\']).repeat(1 + r.int(20));
    case 4: return r.pick(['10.244.0.1', '10.244.0.255', '10.244.0.0/24', '0.0.0.0/0', '::1', 'fe80::/64', '256.1.1.1', '10.244.0.7/33', '1.2.3', '-1']);
    case 5: return r.pick(['eth0', 'net1', 'lo', '.', '..', 'a/b', 'a:b', 'a b', 'kelp0123456789a', 'abcdefghijklmnop']);
    case 6: return r.pick(['kelp', 'kelp-ipam', 'host-local', 'kelp-cni', 'bridge', '../../bin/sh', 'true']);
    case 7: return r.pick(['00:00:00:00:00:00', 'ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01', '02:aa:bb:cc:dd:ee', 'zz:zz', 'AA-BB-CC-DD-EE-FF']);
    case 8: return String(r.next() * 1e6 - 5e5);
    default: return Array.from({ length: r.int(40) }, () => String.fromCharCode(r.int(0x2fff))).join('');
  }
}

function randJson(r: Rng, depth = 0): Json {
  switch (r.int(depth > 3 ? 6 : 9)) {
    case 0: return null;
    case 1: return r.chance(0.5);
    case 2: return r.pick([0, -1, 1, 1500, 65535, 65536, 2 ** 31, 2 ** 53, -(2 ** 63), 1e308, 0.5, -0]);
    case 3:
    case 4:
    case 5: return randString(r);
    case 6:
    case 7: return Array.from({ length: r.int(5) }, () => randJson(r, depth + 1));
    default: {
      const o: { [k: string]: Json } = {};
      for (let i = r.int(5); i > 0; i--) o[r.pick(KEYS)] = randJson(r, depth + 1);
      return o;
    }
  }
}

function deep(r: Rng, n: number): Json {
  let v: Json = r.chance(0.5) ? 1 : 'x';
  for (let i = 0; i < n; i++) v = r.chance(0.5) ? [v] : { a: v };
  return v;
}

/** A result as a runtime would hand it back in prevResult, or a twisted one. */
function prevResult(r: Rng): Json {
  const good: { [k: string]: Json } = {
    cniVersion: r.pick(VERSIONS),
    interfaces: [{ name: 'kelp0123456789a' }, { name: 'eth0', sandbox: pods[0] }],
    ips: [{ address: '10.244.0.9/24', gateway: '10.244.0.1', interface: 1 }],
    routes: [{ dst: '0.0.0.0/0', gw: '10.244.0.1' }],
    dns: {},
  };
  const keys = Object.keys(good);
  for (let i = r.int(4); i > 0; i--) {
    const k = r.pick(keys);
    if (r.chance(0.3)) delete good[k];
    else good[k] = randJson(r);
  }
  if (r.chance(0.2)) (good.ips as Json) = [{ address: randString(r), interface: r.pick([-1, 0, 1, 2, 99, 2 ** 40, '1']) }];
  return r.chance(0.1) ? randJson(r) : good;
}

const CONFIG_PATHS: Array<Array<string | number>> = [
  ['cniVersion'], ['name'], ['type'], ['mtu'], ['ipMasq'], ['ipam'], ['ipam', 'type'], ['ipam', 'ranges'], ['ipam', 'ranges', 0],
  ['ipam', 'ranges', 0, 0], ['ipam', 'ranges', 0, 0, 'subnet'], ['ipam', 'ranges', 0, 0, 'rangeStart'], ['ipam', 'ranges', 0, 0, 'gateway'],
  ['ipam', 'subnet'], ['ipam', 'routes'], ['ipam', 'reserved'], ['runtimeConfig'], ['runtimeConfig', 'ips'], ['runtimeConfig', 'mac'],
  ['runtimeConfig', 'portMappings'], ['runtimeConfig', 'IPS'], ['args'], ['args', 'cni', 'ips'], ['prevResult'], ['dns'], ['capabilities'],
  ['cni.dev/valid-attachments'], ['cni.dev/attachments'], ['__proto__'], ['constructor'], ['unknownKey'],
];

function setPath(o: { [k: string]: Json }, p: Array<string | number>, v: Json | undefined): void {
  let cur: Json = o;
  for (let i = 0; i < p.length - 1; i++) {
    if (typeof cur !== 'object' || cur === null) return;
    const next: Json | undefined = (cur as { [k: string]: Json })[p[i]];
    if (typeof next !== 'object' || next === null) (cur as { [k: string]: Json })[p[i]] = typeof p[i + 1] === 'number' ? [] : {};
    cur = (cur as { [k: string]: Json })[p[i]];
  }
  if (typeof cur !== 'object' || cur === null) return;
  const last = p[p.length - 1];
  if (v === undefined) delete (cur as { [k: string]: Json })[last];
  else Object.defineProperty(cur, last, { value: v, enumerable: true, writable: true, configurable: true });
}

interface Case {
  env: Record<string, string>;
  stdin: Buffer;
  /** A runtime owes this attachment a DEL (same env and config) whatever the ADD answered. */
  owedDel?: { env: Record<string, string>; stdin: Buffer };
}

const COMMANDS = ['ADD', 'DEL', 'CHECK', 'STATUS', 'GC', 'VERSION'];

function garbageNetns(r: Rng): string {
  // Never a real namespace other than the node's (refused as the agent's own) and our pods'.
  return r.pick(['', 'nope', '/var/run/netns/kelp-fuzz-missing', scratch, path.join(scratch, 'plain-file'), '/dev/null', '/proc/self/ns/net',
    `/var/run/netns/${sb.node}`, '/proc/self/ns/mnt', 'x'.repeat(5000), '😀', randString(r).replace(/\//g, '_')]);
}

function randomEnv(r: Rng, command: string): Record<string, string> {
  const env: Record<string, string> = {
    CNI_COMMAND: command,
    CNI_CONTAINERID: r.chance(0.7) ? `fz${r.int(1e9)}` : randString(r),
    CNI_NETNS: r.chance(0.5) ? r.pick(pods) : garbageNetns(r),
    CNI_IFNAME: r.chance(0.6) ? r.pick(['eth0', 'net1', 'eth9']) : randString(r),
    CNI_PATH: r.chance(0.8) ? sb.cniBinDir : randString(r),
  };
  if (r.chance(0.3)) env.CNI_ARGS = r.pick(['IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p', 'IP=10.244.0.77', 'IP=10.244.0.1/24', 'IP=nope', '=;;;=',
    'K8S_POD_NAME=' + randString(r), randString(r)]);
  for (const k of ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_PATH', 'CNI_COMMAND']) if (r.chance(0.04)) delete env[k];
  if (r.chance(0.05)) env[`CNI_${randString(r).replace(/[^A-Z_]/gi, '').slice(0, 64) || 'X'}`] = randString(r);
  if (r.chance(0.02)) env.KELP_CNI_TIMEOUT_MS = r.pick(['0', '1', '-5', 'abc', '99999999999']);
  if (r.chance(0.03)) env.CNI_COMMAND = r.pick(['add', 'Del', 'FOO', '', 'VERSION ', randString(r)]);
  return env;
}

/** Serialises a config with the routing keys first, then the (possibly corrupted) rest. */
function withRouting(r: Rng, body: string, agentSocket: string, delQueue: string): string {
  const head = `{"agentSocket":${JSON.stringify(agentSocket)},"delQueueDir":${JSON.stringify(delQueue)}`;
  const rest = body.trimStart().startsWith('{') ? body.trimStart().slice(1) : body;
  return head + (rest.trimStart().startsWith('}') ? '' : ',') + rest;
}

function corrupt(r: Rng, s: string): string {
  switch (r.int(5)) {
    case 0: return s.slice(0, r.int(s.length));
    case 1: {
      const at = r.int(s.length);
      return s.slice(0, at) + String.fromCharCode(r.int(256)) + s.slice(at);
    }
    case 2: return s.replace(/"name"/, '"name":"dup","name"');
    case 3: return s + r.pick(['}', ']', ',', ' {"a":1}', '\u0000']);
    default: {
      const at = r.int(s.length);
      return s.slice(0, at) + s.slice(at + 1 + r.int(8));
    }
  }
}

function generate(r: Rng, base: Record<string, Json>): Case {
  const kind = r.int(100);
  const agentSocket = r.chance(0.97) ? sb.socketPath : path.join(scratch, 'no-agent.sock');
  const delQueue = r.chance(0.8) ? queueDir(sb) : path.join(scratch, 'no-queue-dir');

  if (kind < 6) {
    // Not a config at all: binary, non-object JSON, huge or empty stdin.
    const command = r.pick(COMMANDS);
    const env: Record<string, string> = { ...randomEnv(r, command), KELP_AGENT_SOCKET: sb.socketPath };
    for (const k of Object.keys(env)) env[k] = env[k].replace(/\0/g, '');
    let stdin: Buffer;
    switch (r.int(6)) {
      case 0: stdin = Buffer.from(Array.from({ length: r.int(70_000) }, () => r.int(256))); break;
      case 1: stdin = Buffer.from(JSON.stringify(randJson(r))); break;
      case 2: {
        const n = r.pick([100, 10_000, 200_000]);
        const [open, close] = r.chance(0.5) ? ['[', ']'] : ['{"a":', '}'];
        stdin = Buffer.from(`{"cniVersion":"1.0.0","name":"kelp","type":"kelp-cni","deep":${open.repeat(n)}1${close.repeat(n)}}`);
        break;
      }
      case 3: stdin = r.chance(0.02) ? Buffer.alloc((16 << 20) + r.pick([-4096, 0, 1]), 0x20) : Buffer.alloc(0); break;
      case 4: stdin = Buffer.from('\ufeff' + JSON.stringify(base)); break;
      default: stdin = Buffer.from(randString(r)); break;
    }
    return { env, stdin, owedDel: owed(env, stdin) };
  }

  const command = kind < 30 ? 'ADD' : kind < 55 ? 'DEL' : kind < 70 ? 'CHECK' : kind < 78 ? 'STATUS' : kind < 85 ? 'GC' : kind < 88 ? 'VERSION' : r.pick(COMMANDS);
  const conf = JSON.parse(JSON.stringify(base)) as { [k: string]: Json };
  const validLooking = command === 'ADD' && r.chance(0.3);
  if (command === 'DEL' || command === 'CHECK') if (r.chance(0.7)) conf.prevResult = prevResult(r);
  if (command === 'GC') {
    // GC runs only for networks no ADD uses: the runtime never runs GC alongside ADDs (SPEC §3).
    conf.name = `gcnet-${r.int(1000)}`;
    conf.cniVersion = '1.1.0';
    if (r.chance(0.8)) conf[r.pick(['cni.dev/valid-attachments', 'cni.dev/attachments'])] = r.chance(0.5) ? [{ containerID: 'fz1', ifname: 'eth0' }] : randJson(r);
  }
  if (validLooking) {
    conf.cniVersion = r.pick(['0.3.1', '0.4.0', '1.0.0', '1.1.0']);
    if (r.chance(0.3)) conf.name = r.pick(['kelp', 'fuzznet', 'fuzz.net-2']);
    if (r.chance(0.3)) conf.mtu = r.pick([576, 1280, 1500, 9000, 68, 65536]);
    if (r.chance(0.3)) conf.runtimeConfig = { [r.pick(['mac', 'MAC', 'Mac'])]: r.pick(['02:aa:bb:cc:dd:ee', '01:00:5e:00:00:01', 'ff:ff:ff:ff:ff:ff', 'xx']) };
    if (r.chance(0.2)) conf.runtimeConfig = { ips: [r.pick(['10.244.0.77', '10.244.0.1', '10.244.0.255/24', '10.9.9.9', '10.244.0.150/24'])] };
    if (r.chance(0.2)) {
      conf.ipam = { type: 'kelp', ranges: [[{ subnet: r.pick(['10.99.0.0/24', '10.99.1.0/30', '10.244.0.0/24', '10.99.2.0/31']) }]], dataDir: fuzzIpam };
      if (r.chance(0.3)) (conf.ipam as { [k: string]: Json }).routes = [{ dst: r.pick(['0.0.0.0/0', '10.0.0.0/8', '192.168.0.0/16']) }];
    }
  } else {
    for (let i = 1 + r.int(4); i > 0; i--) {
      const p = r.chance(0.85) ? r.pick(CONFIG_PATHS) : [r.pick(KEYS)];
      setPath(conf, p, r.chance(0.2) ? undefined : r.chance(0.05) ? deep(r, r.pick([50, 800])) : randJson(r));
    }
  }
  // ipam.dataDir names where leases are written: only ever our scratch dir.
  if (typeof conf.ipam === 'object' && conf.ipam !== null && !Array.isArray(conf.ipam)) {
    for (const k of Object.keys(conf.ipam)) if (/datadir/i.test(k)) delete (conf.ipam as { [k: string]: Json })[k];
    if (r.chance(0.5)) (conf.ipam as { [k: string]: Json }).dataDir = fuzzIpam;
  }
  delete conf.agentSocket;
  delete conf.delQueueDir;
  let body = JSON.stringify(conf);
  if (!validLooking && r.chance(0.15)) {
    // A byte inserted into the scratch path would still be valid JSON naming a directory of
    // nobody's (the agent creates it, outside every directory this test removes): no path to
    // corrupt, the agent's default dataDir (its state dir) takes over.
    if (typeof conf.ipam === 'object' && conf.ipam !== null && !Array.isArray(conf.ipam)) delete (conf.ipam as { [k: string]: Json }).dataDir;
    body = corrupt(r, JSON.stringify(conf));
  }
  const stdin = Buffer.from(withRouting(r, body, agentSocket, delQueue));

  const env = randomEnv(r, command);
  env.KELP_AGENT_SOCKET = sb.socketPath;
  if (validLooking) {
    env.CNI_CONTAINERID = `fzadd${r.int(1e9)}`;
    env.CNI_NETNS = r.pick(pods);
    env.CNI_IFNAME = r.pick(['eth0', 'eth1', 'net1', 'eth2']);
    delete env.KELP_CNI_TIMEOUT_MS;
  }
  // execve cannot carry a NUL inside a variable.
  for (const k of Object.keys(env)) env[k] = env[k].replace(/\0/g, '');
  return { env, stdin, owedDel: owed(env, stdin) };
}

function owed(env: Record<string, string>, stdin: Buffer): Case['owedDel'] {
  return env.CNI_COMMAND === 'ADD' ? { env: { ...env, CNI_COMMAND: 'DEL' }, stdin } : undefined;
}

/** Why an answer breaks the CNI contract, or undefined when it keeps it. */
function violation(c: Case, res: CniExecResult): string | undefined {
  const out = res.stdout;
  const command = c.env.CNI_COMMAND;
  if (res.code === 0) {
    if (!command) return out === '' ? undefined : 'no CNI_COMMAND but stdout';
    if (command === 'VERSION') return Array.isArray(res.json?.supportedVersions) && typeof res.json?.cniVersion === 'string' ? undefined : 'bad VERSION answer';
    if (command === 'ADD') {
      const j = res.json;
      if (typeof j !== 'object' || j === null || typeof j.cniVersion !== 'string') return 'ADD success without a result';
      if (!Array.isArray(j.ips) || j.ips.length === 0 || !j.ips.every((ip: { address?: unknown }) => typeof ip.address === 'string' && ip.address.includes('/'))) return 'ADD result without ips';
      if (!Array.isArray(j.interfaces)) return 'ADD result without interfaces';
      if (out.trimEnd().split('\n').length !== 1) return 'more than one document';
      return undefined;
    }
    return out.trim() === '' ? undefined : `${command} success with output`;
  }
  const j = res.json;
  if (typeof j !== 'object' || j === null || Array.isArray(j)) return 'failure without an error object';
  if (!Number.isInteger(j.code) || j.code < 1) return 'error code is not a positive integer';
  if (typeof j.msg !== 'string') return 'error msg is not a string';
  if (typeof j.cniVersion !== 'string') return 'error without cniVersion';
  if (j.details !== undefined && typeof j.details !== 'string') return 'error details is not a string';
  return undefined;
}

function explain(c: Case, res: CniExecResult, why: string): string {
  const env = Object.fromEntries(Object.entries(c.env).map(([k, v]) => [k, v.length > 200 ? `${v.slice(0, 200)}…(${v.length})` : v]));
  const stdin = c.stdin.length > 400 ? `${c.stdin.subarray(0, 400).toString()}…(${c.stdin.length} bytes)` : c.stdin.toString();
  return `seed ${SEED}: ${why}\nenv ${JSON.stringify(env)}\nstdin ${stdin}\nexit ${res.code} stdout ${res.stdout.slice(0, 500)} stderr ${res.stderr.slice(0, 300)}`;
}

async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (next < items.length) await fn(items[next++]);
  }));
}

it(`answers ${CASES} hostile invocations by the spec, never crashes, leaks nothing`, { timeout: 600_000 }, async () => {
  const r = new Rng(SEED);
  const base = sb.pluginConfig() as Record<string, Json>;
  const cases = Array.from({ length: CASES }, () => generate(r, base));
  const pid = agentPid(sb);
  // One pod's life first, so handles the agent opens once and keeps (its programs, its maps)
  // are part of the baseline.
  const warm = { CNI_CONTAINERID: 'fzwarm', CNI_NETNS: pods[0], CNI_IFNAME: 'eth0' };
  const added = await sb.cni('ADD', warm);
  expect(added.code, added.stdout).toBe(0);
  expect((await sb.cni('CHECK', warm, sb.pluginConfig({ prevResult: added.json }))).code).toBe(0);
  expect((await sb.cni('DEL', warm)).code).toBe(0);
  const fds = fdTargets(pid);
  const problems: string[] = [];
  let successes = 0;
  await pool(cases, PARALLEL, async (c) => {
    const res = await execCni({ env: c.env, stdin: c.stdin, killAfterMs: 60_000 });
    const why = violation(c, res);
    if (why) problems.push(explain(c, res, why));
    if (c.env.CNI_COMMAND === 'ADD' && res.code === 0) successes += 1;
  });
  expect(problems.slice(0, 5), `${problems.length} of ${CASES} answers break the contract`).toEqual([]);
  expect(successes, `seed ${SEED}: some valid-looking ADDs must succeed`).toBeGreaterThan(0);
  expect(agentPid(sb), `seed ${SEED}`).toBe(pid);
  await waitReady(sb, 5_000);

  // The runtime's half: every ADD gets its DEL with the same env and config, after the fact.
  const owed = cases.filter((c) => c.owedDel);
  const stuck: string[] = [];
  await pool(owed, PARALLEL, async (c) => {
    const res = await execCni({ env: c.owedDel!.env, stdin: c.owedDel!.stdin, killAfterMs: 60_000 });
    const why = violation({ ...c, env: c.owedDel!.env }, res);
    if (why) stuck.push(explain(c, res, `DEL: ${why}`));
  });
  expect(stuck.slice(0, 5), `${stuck.length} DELs broke the contract`).toEqual([]);
  // DELs that timed out on purpose (KELP_CNI_TIMEOUT_MS) were queued; the sweep replays them.
  for (let i = 0; i < 150 && nodeState(sb).queue.length > 0; i++) await sleep(100);
  expect(nodeState(sb, [fuzzIpam]), `seed ${SEED}`).toEqual({
    veths: [],
    // The overlay's links on kelp_vxlan (VXLAN mode, the default) and the uplink's.
    pins: ['overlay-kelp_vxlan-egress', 'overlay-kelp_vxlan-ingress', 'uplink-up0-egress', 'uplink-up0-ingress'],
    endpoints: [],
    leases: [],
    records: [],
    queue: [],
    routes: [],
  });
  expect(agentPid(sb), `seed ${SEED}`).toBe(pid);
  await waitReady(sb, 5_000);
  for (let i = 0; i < 50 && fdCount(pid) > fds.length; i++) await sleep(100);
  expect(extraFds(fds, fdTargets(pid)), `seed ${SEED}: file descriptors the agent opened and kept`).toEqual([]);
});
