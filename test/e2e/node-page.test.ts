// The live node page in a real browser: a real agent with three real pods and a NetworkPolicy that
// lets only a reach b on TCP 8080; Debian's chromium, headless, inside the node's network
// namespace, loads http://127.0.0.1:9962/ (the agent's --metrics-address) and the test reads what
// the page shows through the DevTools protocol (over --remote-debugging-pipe: no websocket, no
// downloaded browser). The page is loaded before any traffic; then a connects to b (allowed) and c
// to b (denied), and the page must draw, without a reload, the pods, the forwarded arrow a → b and
// the dropped arrow c → b labelled with its reason and policy, and list the drop. Every wait is on
// a condition of the page, with a deadline that only turns a hang into a failure.
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox, SandboxPod } from '../../src/sandbox';
import { kelpApplyWait, startEchoServer, startSandbox, stopServer, tcpAsk } from '../support/e2e';
import { until } from '../support/kelp-cli';
import { cleanupAll, onCleanup, tempDir } from '../support/netns';

const PORT = 8080;
const PAGE = 'http://127.0.0.1:9962/';
const NS = 'np';

/** The DevTools protocol over chromium's pipe: JSON messages separated by NUL bytes on fds 3 (in) and 4 (out). */
class Browser {
  private nextId = 1;
  private buf = '';
  private readonly pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void; method: string }>();
  readonly events: Array<{ method: string; params: any; sessionId?: string }> = [];
  private stderr = '';

  private constructor(
    readonly child: ChildProcess,
    private readonly input: Writable,
    output: Readable,
  ) {
    output.on('data', (d: Buffer) => {
      this.buf += d.toString();
      let i;
      while ((i = this.buf.indexOf('\0')) >= 0) {
        const msg = JSON.parse(this.buf.slice(0, i));
        this.buf = this.buf.slice(i + 1);
        if (msg.id !== undefined) {
          const p = this.pending.get(msg.id);
          this.pending.delete(msg.id);
          if (msg.error) p?.reject(new Error(`${p.method}: ${msg.error.message}`));
          else p?.resolve(msg.result);
        } else this.events.push(msg);
      }
    });
    child.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-4000)));
    child.once('exit', (code, sig) => {
      for (const p of this.pending.values()) p.reject(new Error(`chromium exited (${code ?? sig}) during ${p.method}: ${this.stderr}`));
      this.pending.clear();
    });
  }

  /**
   * Chromium in `netns` with a profile of its own under `dir` (never the user's), its own process
   * group so that it and its helpers are ended by its PID.
   */
  static launch(netns: string, dir: string): Browser {
    const child = spawn(
      'ip',
      [
        'netns', 'exec', netns, 'chromium',
        '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--no-default-browser-check',
        '--disable-extensions', '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--disable-dev-shm-usage', '--window-size=1400,1000',
        `--user-data-dir=${path.join(dir, 'profile')}`, `--crash-dumps-dir=${path.join(dir, 'crash')}`,
        '--remote-debugging-pipe', 'about:blank',
      ],
      { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'], detached: true, env: { ...process.env, HOME: dir } },
    );
    return new Browser(child, child.stdio[3] as Writable, child.stdio[4] as Readable);
  }

  send(method: string, params: object = {}, sessionId?: string): Promise<any> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      this.input.write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + '\0');
    });
  }

  /** Asks it to close, then ends its process group by the PID we started. */
  async close(): Promise<void> {
    const { child } = this;
    if (child.exitCode !== null || child.signalCode !== null || !child.pid) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    await Promise.race([this.send('Browser.close').catch(() => undefined), new Promise((r) => setTimeout(r, 3000))]);
    await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone, helpers and all
    }
  }
}

/** What the page shows, read from its DOM. */
interface Shown {
  state?: string;
  stream?: string;
  node: string;
  peers: Array<{ key: string; label: string; visible: boolean }>;
  edges: Array<{ from: string; to: string; verdict: string; reason: string | null; policy: string | null; label: string | null; title: string; visible: boolean }>;
  drops: string[][];
  dropRows: Array<{ from: string; to: string; reason: string }>;
  pods: string[][];
  policies: string[][];
}

const READ_PAGE = `(() => {
  // Still navigating (about:blank, or the page's document not parsed yet).
  if (!document.getElementById('graph')) return null;
  const cells = (tr) => [...tr.cells].map((td) => td.textContent);
  const visible = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  return {
    state: document.body.dataset.state,
    stream: document.body.dataset.stream,
    node: document.getElementById('node').textContent,
    peers: [...document.querySelectorAll('#graph .peer')].map((g) => ({ key: g.dataset.peer, label: g.querySelector('text').textContent, visible: visible(g.querySelector('circle')) })),
    edges: [...document.querySelectorAll('#graph .edge')].map((g) => ({
      from: g.dataset.from, to: g.dataset.to, verdict: g.dataset.verdict, reason: g.dataset.reason ?? null, policy: g.dataset.policy ?? null,
      label: g.querySelector('text.edge-label')?.textContent ?? null, title: g.querySelector('title').textContent, visible: visible(g.querySelector('path')),
    })),
    drops: [...document.querySelectorAll('#drops tbody tr.drop')].map(cells),
    dropRows: [...document.querySelectorAll('#drops tbody tr.drop')].map((tr) => ({ from: tr.dataset.from, to: tr.dataset.to, reason: tr.dataset.reason })),
    pods: [...document.querySelectorAll('#pods tbody tr')].map(cells),
    policies: [...document.querySelectorAll('#policies tbody tr')].map(cells),
  };
})()`;

let sb: Sandbox;
let a: SandboxPod;
let b: SandboxPod;
let c: SandboxPod;
let browser: Browser;
let session: string;
let dir: string;
const children: ChildProcess[] = [];

let lastShown: Shown | null = null;

async function shown(): Promise<Shown | null> {
  const r = await browser.send('Runtime.evaluate', { expression: READ_PAGE, returnByValue: true }, session);
  if (r.exceptionDetails) throw new Error(`reading the page: ${JSON.stringify(r.exceptionDetails)}`);
  return (lastShown = r.result.value as Shown | null);
}

/** Polls the page until `ok` holds; a timeout reports what the page last showed. */
async function untilShown(what: string, ok: (s: Shown) => boolean): Promise<Shown> {
  try {
    return await until(what, async () => {
      const s = await shown();
      return s !== null && ok(s) && s;
    }, 30_000);
  } catch (e) {
    throw new Error(`${(e as Error).message}; the page showed: ${JSON.stringify(lastShown)}`);
  }
}

/** Script errors and requests the page made, from the protocol's events. */
function pageEvents(): { exceptions: string[]; requests: string[] } {
  const mine = browser.events.filter((e) => e.sessionId === session);
  return {
    exceptions: mine.filter((e) => e.method === 'Runtime.exceptionThrown').map((e) => JSON.stringify(e.params.exceptionDetails)),
    requests: mine.filter((e) => e.method === 'Network.requestWillBeSent').map((e) => e.params.request.url as string),
  };
}

function apply(name: string, yaml: string): Promise<void> {
  const d = tempDir('kelp-page-');
  writeFileSync(path.join(d, name), yaml);
  return kelpApplyWait(sb, d, 'apply');
}

const pod = (p: SandboxPod) => `pod:${NS}/${p.name}`;
const POLICY = `NetworkPolicy ${NS}/b-from-a`;

beforeAll(async () => {
  const chromium = spawnSync('chromium', ['--version'], { encoding: 'utf8' });
  if (chromium.status !== 0) throw new Error(`chromium is not installed (make setup installs Debian's): ${chromium.error?.message ?? chromium.stderr}`);
  sb = await startSandbox('npg');
  await apply(
    'pods.yaml',
    `apiVersion: v1\nkind: Namespace\nmetadata: {name: ${NS}}\n` +
      ['a', 'b', 'c'].map((n) => `---\napiVersion: v1\nkind: Pod\nmetadata: {name: ${n}, namespace: ${NS}, labels: {app: ${n}}}\nspec: {containers: [{name: ${n}}]}\n`).join(''),
  );
  a = await sb.addPod('a', NS);
  b = await sb.addPod('b', NS);
  c = await sb.addPod('c', NS);
  children.push(await startEchoServer(sb, b.netns, PORT));
  await apply(
    'policy.yaml',
    `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: ${NS}}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress]
  ingress:
    - from: [{podSelector: {matchLabels: {app: a}}}]
      ports: [{port: ${PORT}}]
`,
  );

  dir = tempDir('kelp-chromium-');
  browser = Browser.launch(sb.node, dir);
  onCleanup(() => {
    if (browser.child.pid && browser.child.exitCode === null) {
      try {
        process.kill(-browser.child.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  });
  const { targetId } = await browser.send('Target.createTarget', { url: 'about:blank' });
  ({ sessionId: session } = await browser.send('Target.attachToTarget', { targetId, flatten: true }));
  await browser.send('Runtime.enable', {}, session);
  await browser.send('Network.enable', {}, session);
  await browser.send('Page.enable', {}, session);
  await browser.send('Page.navigate', { url: PAGE }, session);
}, 120_000);

afterAll(async () => {
  await browser?.close();
  children.forEach(stopServer);
  await sb?.stop();
  cleanupAll();
});

describe('the node page in a headless browser', () => {
  it('loads with the node, its pods and policies, and opens the live flow stream', async () => {
    const s = await untilShown('the page ready with its stream open', (x) => x.state === 'ready' && x.stream === 'open' && x.peers.length >= 3);
    expect(s.node).toBe(sb.node);
    for (const p of [a, b, c]) {
      const peer = s.peers.find((x) => x.key === pod(p));
      expect(peer, `${pod(p)} drawn`).toBeDefined();
      expect(peer!.label).toBe(p.name);
      expect(peer!.visible).toBe(true);
      expect(s.pods).toContainEqual([NS, p.name, p.ip, 'Running']);
    }
    expect(s.policies).toContainEqual([POLICY, 'networkpolicy', '1']);
    // Loaded before any traffic: nothing between these pods yet (what comes next is live).
    expect(s.edges.filter((e) => e.from === pod(c) && e.to === pod(b))).toEqual([]);
    expect(s.edges.filter((e) => e.from === pod(a) && e.to === pod(b))).toEqual([]);
  });

  it('draws the allowed flow and the dropped one, with its reason and policy, as they happen', async () => {
    expect(tcpAsk(sb, a.netns, b.ip, PORT)).toBe(a.ip);
    expect(tcpAsk(sb, c.netns, b.ip, PORT)).toBe('');
    const s = await untilShown(
      'both arrows and the drop on the page',
      (x) => x.edges.some((e) => e.from === pod(a) && e.to === pod(b) && e.verdict === 'forwarded') && x.edges.some((e) => e.from === pod(c) && e.to === pod(b) && e.verdict === 'dropped') && x.drops.length > 0,
    );

    const allowed = s.edges.find((e) => e.from === pod(a) && e.to === pod(b) && e.verdict === 'forwarded')!;
    expect(allowed.visible).toBe(true);
    expect(allowed.reason).toBeNull();
    expect(allowed.title).toContain(`port ${PORT}`);
    // a's flow was never dropped, and c's was never forwarded.
    expect(s.edges.filter((e) => e.from === pod(a) && e.to === pod(b) && e.verdict === 'dropped')).toEqual([]);
    expect(s.edges.filter((e) => e.from === pod(c) && e.to === pod(b) && e.verdict === 'forwarded')).toEqual([]);

    const dropped = s.edges.find((e) => e.from === pod(c) && e.to === pod(b) && e.verdict === 'dropped')!;
    expect(dropped.visible).toBe(true);
    expect(dropped.reason).toBe('POLICY_DENY');
    expect(dropped.policy).toBe(POLICY);
    expect(dropped.label).toMatch(new RegExp(`^✕ POLICY_DENY · ${POLICY}( ×\\d+)?$`));
    expect(dropped.title).toContain(`by ${POLICY}`);

    const row = s.drops[s.dropRows.findIndex((r) => r.from === pod(c) && r.to === pod(b))];
    expect(row, JSON.stringify(s.drops)).toBeDefined();
    expect(row[1]).toMatch(/^c:\d+$/);
    expect(row.slice(2)).toEqual([`b:${PORT}`, 'TCP', 'POLICY_DENY', expect.stringMatching(new RegExp(`^${POLICY} \\(`))]);

    // No script error, and nothing loaded from anywhere but the agent.
    const ev = pageEvents();
    expect(ev.exceptions).toEqual([]);
    expect(ev.requests.length).toBeGreaterThan(0);
    for (const url of ev.requests) expect(url.startsWith(PAGE), url).toBe(true);

    // Kept for a person to look at (KELP_PAGE_SCREENSHOT=/path.png).
    if (process.env.KELP_PAGE_SCREENSHOT) {
      const shot = await browser.send('Page.captureScreenshot', { format: 'png' }, session);
      writeFileSync(process.env.KELP_PAGE_SCREENSHOT, Buffer.from(shot.data, 'base64'));
    }
  });

  it('serves only read-only pages: the flow stream as server-sent events, a bad ?last refused naming it', () => {
    const curl = (...args: string[]) => spawnSync('ip', ['netns', 'exec', sb.node, 'curl', '-sS', ...args], { encoding: 'utf8' });
    const flows = curl('--max-time', '2', `${PAGE}api/flows?last=2`);
    // curl ends the open stream at --max-time (exit 28); what came before is the backlog.
    expect(flows.status).toBe(28);
    const events = flows.stdout.split('\n\n').filter((e) => e.startsWith('event: flow\n'));
    expect(events.length).toBe(2);
    for (const e of events) expect(JSON.parse(e.slice('event: flow\ndata: '.length))).toHaveProperty('verdict');
    const bad = curl('-w', '%{http_code}', `${PAGE}api/flows?last=nope`);
    expect(bad.stdout).toBe('last: "nope" is not an integer 0..4096\n400');
    expect(curl('-w', '%{http_code}', '-X', 'POST', PAGE).stdout).toMatch(/405$/);
    expect(curl('-w', '%{http_code}', `${PAGE}nothing-here`).stdout).toMatch(/404$/);
  });
});
