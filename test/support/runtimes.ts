// Real container runtimes driving kelp: a private containerd (own root, state, socket and
// config, CRI plugin pointed at a kelp node's CNI dirs) and a private podman (own storage,
// containers.conf, CNI network dir), both running in the node's network namespace, plus a
// busybox image built here (no registry is reachable). Everything they create lives in a
// temporary directory or in /var/run/netns and is removed by stop(), also after a failure.
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { cidrContains, parseCidr, parseIp } from '../../src/ipam/ip';
import { Sandbox } from '../../src/sandbox';
import { CriClient } from './cri';
import type { EndpointView as KelpEndpoint, PodView as KelpPod } from '../../src/agent/views';

const ROOT = path.join(__dirname, '../..');
export const DEPLOY_RUNTIMES = path.join(ROOT, 'deploy/runtimes');
export const TEST_IMAGE = 'localhost/kelp-busybox:1';
/** The Debian packages each runtime test needs (`make setup` installs them). */
export const PACKAGES = {
  containerd: ['containerd', 'runc', 'busybox-static'],
  podman: ['podman', 'runc', 'conmon', 'busybox-static'],
};
/** libcni's cache (inside containerd and podman): each attachment's ADD, kept until its last DEL. */
export const LIBCNI_CACHE = '/var/lib/cni/results';
const PATH_ENV = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Fails (never skips) with the names of the Debian packages that are not installed. */
export function requirePackages(pkgs: string[]): void {
  const missing = pkgs.filter((p) => {
    try {
      return !execFileSync('dpkg-query', ['-W', '-f=${Status}', p], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).includes('ok installed');
    } catch {
      return true;
    }
  });
  if (missing.length) throw new Error(`missing Debian packages: ${missing.join(' ')} (run \`make setup\`, or apt-get install ${missing.join(' ')})`);
}

export function inCidr(ip: string, cidr: string): boolean {
  return !!ip && cidrContains(parseCidr(cidr), parseIp(ip));
}

/** Polls `fn` until it returns a value other than undefined/false; throws `what` at the deadline. */
export async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Waits for `p`, but no longer than `ms`. */
async function within(ms: number, p: Promise<unknown>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

/** A deploy/runtimes template with every {{NAME}} replaced; an unfilled placeholder is an error. */
export function fillTemplate(file: string, vars: Record<string, string>): string {
  return readFileSync(path.join(DEPLOY_RUNTIMES, file), 'utf8').replace(/\{\{([A-Z_]+)\}\}/g, (m, name: string) => {
    if (!(name in vars)) throw new Error(`${file}: no value for ${m}`);
    return vars[name];
  });
}

/**
 * A runtime must share the machine's mount namespace with the agent: `ip netns exec` would give
 * it a private one, and the pod netns it bind-mounts under /var/run/netns (and podman's rootfs
 * mounts, seen by its next invocation) would be invisible outside it. nsenter switches only the
 * network namespace.
 */
export function inNode(sb: Sandbox): string[] {
  return ['nsenter', `--net=/var/run/netns/${sb.node}`];
}

// ---------------------------------------------------------------------------------------------
// Image

/** A root filesystem with static busybox and every applet (sh, ping, nc, httpd, ip …). */
export function buildRootfs(dir: string): string {
  const rootfs = path.join(dir, 'rootfs');
  for (const d of ['bin', 'etc', 'tmp', 'root', 'proc', 'sys', 'dev', 'www']) mkdirSync(path.join(rootfs, d), { recursive: true });
  chmodSync(path.join(rootfs, 'tmp'), 0o1777);
  const busybox = '/bin/busybox';
  writeFileSync(path.join(rootfs, 'bin/busybox'), readFileSync(busybox), { mode: 0o755 });
  for (const applet of execFileSync(busybox, ['--list'], { encoding: 'utf8' }).split('\n').filter(Boolean)) {
    if (applet !== 'busybox') symlinkSync('busybox', path.join(rootfs, 'bin', applet));
  }
  writeFileSync(path.join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  writeFileSync(path.join(rootfs, 'etc/group'), 'root:x:0:\n');
  return rootfs;
}

/** The rootfs as one uncompressed, reproducible tar layer. */
export function layerTar(rootfs: string, out: string): string {
  execFileSync('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', rootfs, '-cf', out, '.']);
  return out;
}

/** How the test image's containers run unless told otherwise (also the CRI sandbox's process). */
export const IMAGE_CMD = ['/bin/sleep', '2147483647'];

/** An OCI image layout archive of one layer, named `ref`, for `ctr images import`. */
export function ociArchive(rootfs: string, dir: string, ref = TEST_IMAGE): string {
  const layout = path.join(dir, 'oci');
  const blobs = path.join(layout, 'blobs/sha256');
  mkdirSync(blobs, { recursive: true });
  const blob = (data: Buffer) => {
    const digest = createHash('sha256').update(data).digest('hex');
    writeFileSync(path.join(blobs, digest), data);
    return { digest: `sha256:${digest}`, size: data.length };
  };
  const layer = blob(readFileSync(layerTar(rootfs, path.join(dir, 'layer.tar'))));
  const config = blob(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Env: ['PATH=/bin'], Cmd: IMAGE_CMD },
        // Uncompressed layer: its diff id is its digest.
        rootfs: { type: 'layers', diff_ids: [layer.digest] },
      }),
    ),
  );
  const manifest = blob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }],
      }),
    ),
  );
  writeFileSync(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    path.join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          annotations: { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': ref.split(':').pop() },
        },
      ],
    }),
  );
  const out = path.join(dir, 'image.oci.tar');
  execFileSync('tar', ['-C', layout, '-cf', out, '.']);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Process and mount cleanup (only what this file's runtimes started or mounted)

function procList(): Array<{ pid: number; ppid: number; cmdline: string[] }> {
  const out = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const cmdline = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').filter(Boolean);
      out.push({ pid: Number(name), ppid, cmdline });
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** SIGKILLs the processes whose command line matches, with all their descendants. */
function killTrees(match: (cmdline: string[]) => boolean): number[] {
  const procs = procList();
  const doomed = new Set(procs.filter((p) => match(p.cmdline)).map((p) => p.pid));
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of procs) {
      if (!doomed.has(p.pid) && doomed.has(p.ppid)) {
        doomed.add(p.pid);
        grew = true;
      }
    }
  }
  for (const pid of doomed) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  return [...doomed];
}

/** Unmounts everything mounted at or under `dir` (deepest first). */
export function unmountUnder(dir: string): void {
  const points = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p) => p && (p === dir || p.startsWith(dir + '/')))
    .map((p) => p.replace(/\\040/g, ' '))
    .sort((a, b) => b.length - a.length);
  for (const p of points) execFileSync('umount', ['-l', p], { stdio: 'ignore' });
}

/** Removes a netns bind mount left at `file` (a runtime's pod namespace after a crash). */
function removeNetnsFile(file: string): void {
  try {
    execFileSync('umount', ['-l', file], { stdio: 'ignore' });
  } catch {
    // not mounted
  }
  rmSync(file, { force: true });
}

/** libcni's records of ADDs whose DEL never came (a runtime killed mid-test), for these ids. */
function removeLibcniCache(ids: Set<string>): void {
  if (!existsSync(LIBCNI_CACHE)) return;
  for (const f of readdirSync(LIBCNI_CACHE)) if ([...ids].some((id) => f.includes(`-${id}-`))) rmSync(path.join(LIBCNI_CACHE, f), { force: true });
}

// ---------------------------------------------------------------------------------------------
// containerd

export interface ContainerdOptions {
  /** CNI plugin and config dirs of the CRI plugin. */
  cniBinDir: string;
  cniConfDir: string;
  snapshotter?: 'overlayfs' | 'native';
  logLevel?: string;
}

/** containerd 1.6 with its own root, state, socket and config, running in a kelp node's netns. */
export class PrivateContainerd {
  readonly root: string;
  readonly state: string;
  readonly socket: string;
  readonly configFile: string;
  readonly logFile: string;
  readonly cri: CriClient;
  private child?: ChildProcess;
  /** Pod netns paths and sandbox ids seen: what stop() removes if containerd left it behind. */
  readonly netnsPaths = new Set<string>();
  readonly sandboxIds = new Set<string>();

  private constructor(
    readonly sb: Sandbox,
    readonly dir: string,
    readonly opts: ContainerdOptions,
  ) {
    this.root = path.join(dir, 'root');
    this.state = path.join(dir, 'state');
    this.socket = path.join(dir, 'containerd.sock');
    this.configFile = path.join(dir, 'config.toml');
    this.logFile = path.join(dir, 'containerd.log');
    this.cri = new CriClient(this.socket);
  }

  /** Writes the config from deploy/runtimes/containerd/config.toml, starts containerd, waits for its CRI. */
  static async start(sb: Sandbox, opts: ContainerdOptions): Promise<PrivateContainerd> {
    requirePackages(PACKAGES.containerd);
    const ctd = new PrivateContainerd(sb, mkdtempSync(path.join(tmpdir(), 'kelp-containerd-')), opts);
    try {
      writeFileSync(
        ctd.configFile,
        fillTemplate('containerd/config.toml', {
          ROOT: ctd.root,
          STATE: ctd.state,
          ADDRESS: ctd.socket,
          LOG_LEVEL: opts.logLevel ?? 'info',
          SANDBOX_IMAGE: TEST_IMAGE,
          CNI_BIN_DIR: opts.cniBinDir,
          CNI_CONF_DIR: opts.cniConfDir,
          SNAPSHOTTER: opts.snapshotter ?? 'overlayfs',
        }),
      );
      const log = openSync(ctd.logFile, 'a');
      ctd.child = spawn(inNode(sb)[0], [...inNode(sb).slice(1), 'containerd', '--config', ctd.configFile], { stdio: ['ignore', log, log], env: { PATH: PATH_ENV } });
      closeSync(log);
      await waitFor('containerd to serve the CRI', async () => {
        if (ctd.child!.exitCode !== null) throw new Error(`containerd exited with ${ctd.child!.exitCode}:\n${ctd.log().slice(-4000)}`);
        await ctd.cri.version();
        return true;
      });
      const broken = ctd.log().match(/failed to load plugin io\.containerd\.grpc\.v1\.cri.*/);
      if (broken) throw new Error(`containerd has no CRI plugin: ${broken[0]}`);
      return ctd;
    } catch (e) {
      await ctd.stop();
      throw e;
    }
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  log(): string {
    return existsSync(this.logFile) ? readFileSync(this.logFile, 'utf8') : '';
  }

  /** `ctr` against this instance, in the CRI's namespace. */
  ctr(...args: string[]): string {
    return execFileSync('ctr', ['--address', this.socket, '--namespace', 'k8s.io', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  importImage(archive: string): void {
    this.ctr('images', 'import', '--snapshotter', this.opts.snapshotter ?? 'overlayfs', archive);
  }

  /** The network namespace path of a pod sandbox, from containerd's verbose status. */
  async sandboxNetns(id: string): Promise<string> {
    const { info } = await this.cri.podSandboxStatus(id);
    const spec = (info.info as { runtimeSpec?: { linux?: { namespaces?: Array<{ type: string; path?: string }> } } }).runtimeSpec;
    const ns = spec?.linux?.namespaces?.find((n) => n.type === 'network')?.path;
    if (!ns) throw new Error(`sandbox ${id} has no network namespace path in its status`);
    this.sandboxIds.add(id);
    this.netnsPaths.add(ns);
    return ns;
  }

  /**
   * Removes every pod sandbox through the CRI (so kelp sees their DELs), stops containerd by
   * PID, then kills what it left (shims found by this instance's socket, and their containers),
   * unmounts and deletes its directories and pod netns. Never throws.
   */
  async stop(): Promise<void> {
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      const removePods = async () => {
        for (const pod of await this.cri.listPodSandboxes()) {
          this.sandboxIds.add(pod.id);
          await this.cri.stopPodSandbox(pod.id).catch(() => undefined);
          await this.cri.removePodSandbox(pod.id).catch(() => undefined);
        }
      };
      // A wedged containerd must not hold the test file: the kill below cleans up regardless.
      await within(20_000, removePods().catch(() => undefined));
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      child.kill('SIGTERM');
      await within(5_000, exited);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    }
    this.cri.close();
    // A shim is `containerd-shim-runc-v2 -namespace k8s.io -id … -address <our socket>`.
    killTrees((cmd) => /containerd-shim/.test(cmd[0] ?? '') && cmd.includes(this.socket));
    for (const ns of this.netnsPaths) if (existsSync(ns)) removeNetnsFile(ns);
    removeLibcniCache(this.sandboxIds);
    try {
      unmountUnder(this.dir);
    } catch {
      // best effort
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// podman

export interface PodmanOptions {
  /** CNI network config dir (podman's `network_config_dir`). */
  cniConfDir: string;
  /** Where kelp-cni is (searched first, then /usr/lib/cni). */
  cniBinDir: string;
}

/** podman 4.3 with private storage and containers.conf, run in a kelp node's netns. */
export class PrivatePodman {
  readonly root: string;
  readonly runroot: string;
  readonly tmp: string;
  readonly confFile: string;
  /** Container netns paths and ids seen: what stop() removes if podman left it behind. */
  readonly netnsPaths = new Set<string>();
  readonly containerIds = new Set<string>();

  private constructor(
    readonly sb: Sandbox,
    readonly dir: string,
  ) {
    this.root = path.join(dir, 'root');
    this.runroot = path.join(dir, 'runroot');
    this.tmp = path.join(dir, 'tmp');
    this.confFile = path.join(dir, 'containers.conf');
  }

  static setup(sb: Sandbox, opts: PodmanOptions): PrivatePodman {
    requirePackages(PACKAGES.podman);
    const pm = new PrivatePodman(sb, mkdtempSync(path.join(tmpdir(), 'kelp-podman-')));
    for (const d of [pm.root, pm.runroot, pm.tmp]) mkdirSync(d, { recursive: true });
    writeFileSync(pm.confFile, fillTemplate('podman/containers.conf', { TMPDIR: pm.tmp, CNI_BIN_DIR: opts.cniBinDir, CNI_CONF_DIR: opts.cniConfDir }));
    return pm;
  }

  /** Runs podman in the node's netns with this instance's storage and configuration. */
  podman(args: string[], opts: { allowFail?: boolean; timeoutMs?: number } = {}): string {
    const argv = [...inNode(this.sb).slice(1), 'podman', '--root', this.root, '--runroot', this.runroot, '--storage-driver', 'overlay', ...args];
    try {
      return execFileSync(inNode(this.sb)[0], argv, {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { PATH: PATH_ENV, CONTAINERS_CONF: this.confFile },
        timeout: opts.timeoutMs ?? 60_000,
      });
    } catch (e) {
      if (opts.allowFail) return '';
      const err = e as { stderr?: string; message: string };
      throw new Error(`podman ${args.join(' ')}: ${(err.stderr || err.message).trim()}`);
    }
  }

  /** `podman inspect` of one container. */
  inspect(name: string): PodmanContainer {
    const c = (JSON.parse(this.podman(['inspect', '--type', 'container', name])) as PodmanContainer[])[0];
    this.containerIds.add(c.Id);
    if (c.NetworkSettings.SandboxKey) this.netnsPaths.add(c.NetworkSettings.SandboxKey);
    return c;
  }

  importImage(rootfs: string, ref = TEST_IMAGE): void {
    const tar = layerTar(rootfs, path.join(this.dir, 'rootfs.tar'));
    this.podman(['import', '--change', `CMD ${JSON.stringify(IMAGE_CMD)}`, '--change', 'ENV PATH=/bin', tar, ref]);
  }

  /** Removes every container (their DELs reach kelp), kills leftover conmons, deletes storage. */
  stop(): void {
    this.podman(['rm', '--all', '--force', '--time', '0'], { allowFail: true, timeoutMs: 30_000 });
    // conmon of a container of ours: its -b (bundle) and exit-command args name our root.
    killTrees((cmd) => /conmon$/.test(cmd[0] ?? '') && cmd.some((a) => a.startsWith(this.root)));
    for (const f of this.netnsPaths) if (existsSync(f)) removeNetnsFile(f);
    removeLibcniCache(this.containerIds);
    try {
      unmountUnder(this.dir);
    } catch {
      // best effort
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export interface PodmanContainer {
  Id: string;
  Name: string;
  State: { Status: string; Running: boolean };
  NetworkSettings: { SandboxKey: string; Networks: Record<string, { IPAddress: string; IPPrefixLen: number; Gateway: string; MacAddress: string }> };
}

// ---------------------------------------------------------------------------------------------
// What kelp holds for a set of attachments

export type { EndpointView as KelpEndpoint, PodView as KelpPod } from '../../src/agent/views';

export function kelpEndpoints(sb: Sandbox): KelpEndpoint[] {
  return JSON.parse(sb.kelp('get', 'endpoints', '-o', 'json')) as KelpEndpoint[];
}

export function kelpPods(sb: Sandbox): KelpPod[] {
  return JSON.parse(sb.kelp('get', 'pods', '-o', 'json')) as KelpPod[];
}

/** CNI requests the agent served, from its (debug) log, in order. */
export function cniRequests(sb: Sandbox): Array<{ cmd: string; containerId: string; exit: number }> {
  return sb
    .agentLog()
    .split('\n')
    .filter((l) => l.includes('"cni request"'))
    .map((l) => JSON.parse(l) as { cmd: string; containerId: string; exit: number });
}

/**
 * Everything of kelp's that is still there for these endpoints (empty when DEL cleaned up):
 * the agent's record, the host veth and its /32 route in the node, the IPAM lease, the
 * kelp_endpoints entry, the pinned links.
 */
export function kelpLeftovers(sb: Sandbox, eps: KelpEndpoint[]): string[] {
  const left: string[] = [];
  const records = kelpEndpoints(sb);
  const links = JSON.parse(sb.exec(sb.node, 'ip', ['-j', 'link', 'show'])) as Array<{ ifname: string }>;
  const routes = JSON.parse(sb.exec(sb.node, 'ip', ['-j', 'route', 'show'])) as Array<{ dst: string }>;
  const mapDump = sb.kelp('map', 'dump', 'kelp_endpoints', '-o', 'json');
  const linkDir = path.join(sb.bpfRoot, 'links');
  const pinned = existsSync(linkDir) ? readdirSync(linkDir) : [];
  for (const ep of eps) {
    const ip = ep.ip.split('/')[0];
    const what = `${ep.network}/${ep.containerId.slice(0, 12)}/${ep.ifname}`;
    if (records.some((r) => r.containerId === ep.containerId && r.ifname === ep.ifname && r.network === ep.network)) left.push(`${what}: endpoint record`);
    if (links.some((l) => l.ifname === ep.hostIfname)) left.push(`${what}: host veth ${ep.hostIfname}`);
    if (routes.some((r) => r.dst === ip)) left.push(`${what}: node route to ${ip}`);
    if (existsSync(path.join(sb.dir, 'state/ipam', ep.network, ip))) left.push(`${what}: IPAM lease ${ip}`);
    if (mapDump.includes(`"${ip}"`)) left.push(`${what}: kelp_endpoints entry for ${ip}`);
    for (const p of pinned.filter((n) => n.includes(ep.hostIfname))) left.push(`${what}: pinned link ${p}`);
  }
  return left;
}
