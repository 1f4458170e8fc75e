// `kelp observe` against a real agent and real pods: a connection a NetworkPolicy denies is found
// by `kelp observe --verdict dropped`, with its reason and the policy that decided; -o json is one
// FlowRecord per line; filters exclude what they should; --follow prints a drop that happens after
// it started; the summary counts it; a bad flag is refused before the agent is asked.
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FlowRecord, FlowSummary } from '../../src/datapath/flow-types';
import { KELP_BIN, Sandbox, SandboxPod } from '../../src/sandbox';
import { kelpApplyWait, startEchoServer, startSandbox, stopServer, tcpAsk } from '../support/e2e';
import { until } from '../support/kelp-cli';
import { cleanupAll, tempDir } from '../support/netns';

const PORT = 8080;
let sb: Sandbox;
let a: SandboxPod;
let b: SandboxPod;
let c: SandboxPod;
const children: ChildProcess[] = [];

function observe(...args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [KELP_BIN, 'observe', ...args, `--socket=${sb.socketPath}`], { encoding: 'utf8' });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** `kelp observe ARGS -o json`, parsed line by line (each line must be one JSON FlowRecord). */
function records(...args: string[]): FlowRecord[] {
  const r = observe(...args, '-o', 'json');
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  return r.out.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as FlowRecord);
}

const podOf = (p: FlowRecord['source']) => (p.pod ? `${p.pod.namespace}/${p.pod.name}` : undefined);

/** c's denied attempt to b:8080 as the flows API reports it: both sides named as pods. */
const isDeniedAttempt = (r: FlowRecord) =>
  r.verdict === 'dropped' && podOf(r.source) === 'ob/c' && r.source.address === c.ip && podOf(r.destination) === 'ob/b' && r.destination.port === PORT && r.protocol === 'TCP';

function apply(name: string, yaml: string): Promise<void> {
  const dir = tempDir('kelp-observe-');
  writeFileSync(path.join(dir, name), yaml);
  return kelpApplyWait(sb, dir, 'apply');
}

beforeAll(async () => {
  sb = await startSandbox('obs');
  await apply(
    'pods.yaml',
    `apiVersion: v1\nkind: Namespace\nmetadata: {name: ob}\n` +
      ['a', 'b', 'c'].map((n) => `---\napiVersion: v1\nkind: Pod\nmetadata: {name: ${n}, namespace: ob, labels: {app: ${n}}}\nspec: {containers: [{name: ${n}}]}\n`).join(''),
  );
  a = await sb.addPod('a', 'ob');
  b = await sb.addPod('b', 'ob');
  c = await sb.addPod('c', 'ob');
  children.push(await startEchoServer(sb, b.netns, PORT));
  // Only app=a may reach b, on TCP 8080.
  await apply(
    'policy.yaml',
    `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: ob}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {app: a}}}]
      ports: [{port: ${PORT}}]
`,
  );
  expect(tcpAsk(sb, a.netns, b.ip, PORT)).toBe(a.ip);
  expect(tcpAsk(sb, c.netns, b.ip, PORT)).toBe('');
});

afterAll(async () => {
  children.forEach(stopServer);
  await sb?.stop();
  cleanupAll();
});

describe('kelp observe', () => {
  it('finds the denied connection with --verdict dropped, with its reason and the deciding policy', async () => {
    const rec = await until('c -> b:8080 dropped in the flow store', () => records('--verdict', 'dropped', '--last', '1000').find(isDeniedAttempt));
    expect(rec.reason).toBe('POLICY_DENY');
    expect(rec.source.address).toBe(c.ip);
    expect(rec.destination.address).toBe(b.ip);
    expect(rec.policy).toMatchObject({ kind: 'NetworkPolicy', namespace: 'ob', name: 'b-from-a', action: 'deny' });
    expect(Number.isNaN(Date.parse(rec.time))).toBe(false);
    // The same record as a line of text.
    const text = observe('--verdict', 'dropped', '--to-pod', 'ob/b', '--to-port', String(PORT), '--last', '1000');
    expect(text.code).toBe(0);
    const line = text.out.split('\n').find((l) => l.includes('ob/c:') && l.includes(`-> ob/b:${PORT}`));
    expect(line, text.out).toBeDefined();
    expect(line).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6} DROP\s+ob\/c:\d+ -> ob\/b:8080 TCP DROPPED ingress POLICY_DENY by NetworkPolicy ob\/b-from-a no rule allows it \(isolated\) \(networkpolicy, deny\)$/);
    // Narrowed to c's side it is still there; to a's, it is not.
    expect(records('--verdict', 'dropped', '--from-pod', 'ob/c', '--last', '1000').some(isDeniedAttempt)).toBe(true);
    expect(records('--verdict', 'dropped', '--from-pod', 'ob/a', '--last', '1000')).toEqual([]);
  });

  it('the allowed connection is a forwarded flow under the same policy, and filters exclude what they should', async () => {
    const allowed = await until('a -> b:8080 in the flow store', () =>
      records('--from-pod', 'ob/a', '--type', 'flow-start', '--last', '1000').find((r) => podOf(r.source) === 'ob/a' && podOf(r.destination) === 'ob/b' && r.destination.port === PORT && r.verdict === 'forwarded'),
    );
    expect(allowed.policy).toMatchObject({ kind: 'NetworkPolicy', namespace: 'ob', name: 'b-from-a', rule: 0, action: 'allow' });
    // Filtered to the other side, or to forwarded flows, c's drop is left out.
    expect(records('--verdict', 'dropped', '--to-pod', 'ob/a', '--last', '1000')).toEqual([]);
    const forwarded = records('--verdict', 'forwarded', '--to-pod', 'ob/b', '--last', '1000');
    expect(forwarded.length).toBeGreaterThan(0);
    expect(forwarded.every((r) => r.verdict === 'forwarded' && podOf(r.destination) === 'ob/b')).toBe(true);
    // Other protocols, reasons, ports and namespaces.
    expect(records('--verdict', 'dropped', '--port', '9999', '--last', '1000').some(isDeniedAttempt)).toBe(false);
    expect(records('--verdict', 'dropped', '--protocol', 'udp', '--last', '1000').some(isDeniedAttempt)).toBe(false);
    expect(records('--reason', 'LB_NO_BACKEND', '--last', '1000').some(isDeniedAttempt)).toBe(false);
    expect(records('--namespace', 'default', '--last', '1000').some(isDeniedAttempt)).toBe(false);
    expect(records('--namespace', 'ob', '--verdict', 'dropped', '--last', '1000').some(isDeniedAttempt)).toBe(true);
    // --last bounds what comes back.
    expect(records('--last', '1').length).toBeLessThanOrEqual(1);
  });

  it('--follow prints a drop that happens after it started', async () => {
    const child = spawn(process.execPath, [KELP_BIN, 'observe', '-f', '--last', '0', '--verdict', 'dropped', '--to-pod', 'ob/b', '-o', 'json', `--socket=${sb.socketPath}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    // Tried again until the follower (connected asynchronously) has seen one.
    const rec = await until('a followed drop', () => {
      if (!out.includes('\n')) tcpAsk(sb, c.netns, b.ip, PORT);
      const first = out.split('\n')[0];
      return out.includes('\n') && (JSON.parse(first) as FlowRecord);
    }, 20_000);
    expect(isDeniedAttempt(rec)).toBe(true);
    expect(child.exitCode).toBeNull();
    stopServer(child);
  });

  it('summary: the drop reason with its policy, and the event accounting', () => {
    const r = observe('summary', '--window', '1h', '-o', 'json');
    expect(r.code).toBe(0);
    const s = JSON.parse(r.out) as FlowSummary;
    expect(s.windowSeconds).toBe(3600);
    expect(s.dropReasons.find((d) => d.reason === 'POLICY_DENY')?.count).toBeGreaterThan(0);
    const drop = s.stats.byClass.drop;
    expect(drop.received).toBeGreaterThan(0);
    expect(drop.emitted).toBeGreaterThanOrEqual(drop.received);
    const text = observe('summary');
    expect(text.out).toMatch(/TOP DROP REASONS\nREASON +COUNT +POLICY\nPOLICY_DENY /);
    expect(text.out).toMatch(/\ndrop +\d+ +\d+ +\d+ +\d+\n/);
  });

  it('refuses a bad flag before asking the agent, naming it', () => {
    const r = observe('--verdict', 'maybe');
    expect(r.code).toBe(2);
    expect(r.err).toBe('kelp: --verdict: "maybe" is not one of forwarded, dropped, audit\n');
    const s = spawnSync(process.execPath, [KELP_BIN, 'observe', '--socket=/nonexistent/kelp.sock'], { encoding: 'utf8' });
    expect(s.status).toBe(1);
    expect(s.stderr).toMatch(/not reachable at \/nonexistent\/kelp\.sock/);
  });
});
