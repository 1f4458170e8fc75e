// A kelp node on this machine, for the demo, end-to-end tests and benchmarks: a "node"
// network namespace running its own agent (own bpffs, socket, state and CNI dirs), an
// "outside" namespace behind the node's uplink, and pods created through the real kelp-cni
// binary exactly as a container runtime does. Nothing touches the machine's own network.
// (This harness drives `ip` for the fixtures only; the agent itself never runs `ip`.)
import { ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import http from 'node:http';
import path from 'node:path';

const ROOT = path.join(__dirname, '../..');
export const KELP_BIN = path.join(ROOT, 'bin/kelp');
export const KELP_CNI_BIN = path.join(ROOT, 'bin/kelp-cni');

export function sh(cmd: string, args: string[], opts: { input?: string; allowFail?: boolean } = {}): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', input: opts.input, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (e) {
    if (opts.allowFail) return '';
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${(err.stderr ?? err.message).trim()}`);
  }
}

export interface CniCall {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed as JSON when it is JSON. */
  json?: Record<string, unknown>;
}

/** Execs a CNI plugin the way libcni does: a clean environment, the config on stdin. */
export function execPlugin(binary: string, env: Record<string, string>, stdin: string): Promise<CniCall> {
  return new Promise((resolve, reject) => {
    const child = execFile(binary, [], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...env }, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
      if (code === -1 && err) return reject(err);
      let json: Record<string, unknown> | undefined;
      try {
        json = stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : undefined;
      } catch {
        json = undefined;
      }
      resolve({ code, stdout, stderr, json });
    });
    child.stdin!.end(stdin);
  });
}

export interface SandboxOptions {
  /** Short unique prefix for namespace and interface names (≤ 6 characters). */
  prefix: string;
  podCidr?: string;
  /** Extra `kelp agent` flags. */
  agentArgs?: string[];
  logLevel?: string;
  /** Create the "outside" namespace behind the node's uplink (default true). */
  outside?: boolean;
  /** Start the agent without --pod-cidr (Kubernetes mode takes it from the Node object). */
  podCidrFromNode?: boolean;
  /** Runs once the namespaces exist, before the agent starts (e.g. to give the node a way to an API server). */
  beforeAgent?: (sb: Sandbox) => void | Promise<void>;
}

export interface SandboxPod {
  name: string;
  namespace: string;
  containerId: string;
  netns: string;
  netnsPath: string;
  ifname: string;
  ip: string;
  result: Record<string, unknown>;
}

export class Sandbox {
  readonly node: string;
  readonly outside?: string;
  readonly dir: string;
  readonly bpfRoot: string;
  readonly socketPath: string;
  readonly cniBinDir: string;
  readonly cniConfDir: string;
  readonly manifests: string;
  readonly logFile: string;
  /** The agent's --state-dir: endpoint records and IPAM leases (the DEL queue is in the run dir). */
  readonly stateDir: string;
  readonly nodeIp = '192.168.250.1';
  readonly outsideIp = '192.168.250.2';
  readonly podCidr: string;
  agent?: ChildProcess;
  private readonly netnses: string[] = [];
  private podCount = 0;
  readonly pods = new Map<string, SandboxPod>();

  private constructor(readonly opts: SandboxOptions) {
    this.node = `${opts.prefix}-node`;
    if (opts.outside !== false) this.outside = `${opts.prefix}-out`;
    this.dir = mkdtempSync(path.join(tmpdir(), `kelp-${opts.prefix}-`));
    this.bpfRoot = path.join(this.dir, 'bpf');
    this.socketPath = path.join(this.dir, 'run/kelp.sock');
    this.cniBinDir = path.join(this.dir, 'cni/bin');
    this.cniConfDir = path.join(this.dir, 'cni/net.d');
    this.manifests = path.join(this.dir, 'manifests');
    this.logFile = path.join(this.dir, 'agent.log');
    // The agent's default state dir is on tmpfs (/run/kelp/state); /dev/shm is tmpfs on every
    // machine this runs on, where /run may not be.
    this.stateDir = mkdtempSync(path.join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), `kelp-${opts.prefix}-state-`));
    this.podCidr = opts.podCidr ?? '10.244.0.0/24';
  }

  /** Creates the namespaces and starts the agent; on failure, whatever was made is removed. */
  static async start(opts: SandboxOptions): Promise<Sandbox> {
    const sb = new Sandbox(opts);
    try {
      sb.createNetns(sb.node);
      if (sb.outside) {
        sb.createNetns(sb.outside);
        sh('ip', ['-n', sb.node, 'link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', sb.outside]);
        sh('ip', ['-n', sb.node, 'addr', 'add', `${sb.nodeIp}/24`, 'dev', 'up0']);
        sh('ip', ['-n', sb.node, 'link', 'set', 'up0', 'up']);
        sh('ip', ['-n', sb.outside, 'addr', 'add', `${sb.outsideIp}/24`, 'dev', 'eth0']);
        sh('ip', ['-n', sb.outside, 'link', 'set', 'eth0', 'up']);
        sh('ip', ['-n', sb.node, 'route', 'add', 'default', 'via', sb.outsideIp]);
      }
      mkdirSync(sb.bpfRoot, { recursive: true });
      sh('mount', ['-t', 'bpf', 'bpf', sb.bpfRoot]);
      await opts.beforeAgent?.(sb);
      await sb.startAgent();
      return sb;
    } catch (e) {
      await sb.stop();
      throw e;
    }
  }

  createNetns(name: string): string {
    sh('ip', ['netns', 'add', name]);
    this.netnses.push(name);
    sh('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    return `/var/run/netns/${name}`;
  }

  agentArgs(): string[] {
    return [
      'agent',
      `--run-dir=${path.dirname(this.socketPath)}`,
      `--state-dir=${this.stateDir}`,
      `--bpf-root=${this.bpfRoot}`,
      `--cni-bin-dir=${this.cniBinDir}`,
      `--cni-conf-dir=${this.cniConfDir}`,
      ...(this.opts.podCidrFromNode ? [] : [`--pod-cidr=${this.podCidr}`]),
      `--manifests=${this.manifests}`,
      `--node-name=${this.node}`,
      `--log-level=${this.opts.logLevel ?? 'debug'}`,
      `--log-file=${this.logFile}`,
      ...(this.opts.agentArgs ?? []),
    ];
  }

  /** Starts the agent inside the node namespace and waits until it answers. */
  async startAgent(): Promise<void> {
    const child = spawn('ip', ['netns', 'exec', this.node, process.execPath, KELP_BIN, ...this.agentArgs()], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.agent = child;
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`kelp agent exited with ${child.exitCode}: ${stderr}\n${this.agentLog()}`);
      // Ready = answers on its socket (the conflist of an earlier run may still be there).
      if (existsSync(path.join(this.cniConfDir, '05-kelp.conflist')) && (await this.healthy())) return;
      if (Date.now() > deadline) throw new Error(`kelp agent did not become ready: ${stderr}\n${this.agentLog()}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** The agent answers /v1/healthz with ready. */
  healthy(): Promise<boolean> {
    return new Promise((resolve) => {
      const req = http.get({ socketPath: this.socketPath, path: '/v1/healthz', timeout: 1000 }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.on('error', () => resolve(false));
      req.on('timeout', () => {
        req.destroy();
        resolve(false);
      });
    });
  }

  /** Stops the agent by its PID (SIGKILL when `hard`), waiting for it to exit. */
  async stopAgent(hard = false): Promise<void> {
    const child = this.agent;
    this.agent = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill(hard ? 'SIGKILL' : 'SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  }

  agentLog(): string {
    return existsSync(this.logFile) ? readFileSync(this.logFile, 'utf8') : '';
  }

  /** The plugin config a runtime derives from the installed conflist (name/cniVersion injected). */
  pluginConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
    const list = JSON.parse(readFileSync(path.join(this.cniConfDir, '05-kelp.conflist'), 'utf8')) as { name: string; cniVersion: string; plugins: Array<Record<string, unknown>> };
    return { ...list.plugins[0], cniVersion: list.cniVersion, name: list.name, ...overrides };
  }

  /** Execs the installed kelp-cni like a runtime (from the machine's namespace, clean env). */
  cni(command: string, env: Record<string, string>, config: Record<string, unknown> | string = this.pluginConfig()): Promise<CniCall> {
    const stdin = typeof config === 'string' ? config : JSON.stringify(config);
    return execPlugin(path.join(this.cniBinDir, 'kelp-cni'), { CNI_COMMAND: command, CNI_PATH: this.cniBinDir, ...env }, stdin);
  }

  /** A pod: a fresh netns plus CNI ADD through kelp-cni, as a runtime would do it. */
  async addPod(name: string, namespace = 'default', config?: Record<string, unknown>): Promise<SandboxPod> {
    this.podCount += 1;
    const netns = `${this.opts.prefix}-p${this.podCount}`;
    const netnsPath = this.createNetns(netns);
    const containerId = `${this.opts.prefix}${this.podCount.toString().padStart(4, '0')}${'0'.repeat(20)}`;
    const res = await this.cni(
      'ADD',
      { CNI_CONTAINERID: containerId, CNI_NETNS: netnsPath, CNI_IFNAME: 'eth0', CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${namespace};K8S_POD_NAME=${name}` },
      config ?? this.pluginConfig(),
    );
    if (res.code !== 0 || !res.json) throw new Error(`CNI ADD for ${namespace}/${name} failed (exit ${res.code}): ${res.stdout}${res.stderr}`);
    const ips = res.json.ips as Array<{ address: string }>;
    const pod: SandboxPod = { name, namespace, containerId, netns, netnsPath, ifname: 'eth0', ip: ips[0].address.split('/')[0], result: res.json };
    this.pods.set(`${namespace}/${name}`, pod);
    return pod;
  }

  async delPod(pod: SandboxPod): Promise<CniCall> {
    const res = await this.cni('DEL', { CNI_CONTAINERID: pod.containerId, CNI_NETNS: pod.netnsPath, CNI_IFNAME: pod.ifname });
    this.pods.delete(`${pod.namespace}/${pod.name}`);
    return res;
  }

  /** Runs a command in a namespace of this sandbox. */
  exec(netns: string, cmd: string, args: string[], opts: { allowFail?: boolean; input?: string } = {}): string {
    return sh('ip', ['netns', 'exec', netns, cmd, ...args], opts);
  }

  /** Runs the kelp CLI against this sandbox's agent. */
  kelp(...args: string[]): string {
    return sh(process.execPath, [KELP_BIN, ...args, `--socket=${this.socketPath}`]);
  }

  /** CNI DEL of every pod, then the agent stopped by PID: its log is then complete. */
  async stopAgentAfterPods(): Promise<void> {
    if (this.agent) {
      for (const pod of [...this.pods.values()]) await this.delPod(pod).catch(() => undefined);
    }
    await this.stopAgent();
  }

  /** Tears everything down: pods (by CNI DEL), agent (by PID), namespaces, bpffs, files. */
  async stop(): Promise<void> {
    await this.stopAgentAfterPods();
    for (const ns of this.netnses.reverse()) sh('ip', ['netns', 'del', ns], { allowFail: true });
    this.netnses.length = 0;
    sh('umount', ['-l', this.bpfRoot], { allowFail: true });
    rmSync(this.dir, { recursive: true, force: true });
    rmSync(this.stateDir, { recursive: true, force: true });
  }
}
