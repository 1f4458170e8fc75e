// The CNI plugins under test, each exec'd per call the way a runtime does it, by
// bench/tools/cnirun from inside the node's namespace (it times spawn to exit itself, so
// neither Node's spawn cost nor `ip netns exec`'s mount namespace is counted as the plugin's):
// - kelp-cni as installed by a Sandbox agent;
// - Debian's reference `bridge` (or `ptp`) + `host-local` in a node namespace of our own;
// - the exec floor: /bin/true, what any plugin pays before doing work.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Sandbox, sh } from '../../src/sandbox';
import { defer, throwIfInterrupted } from './cleanup';
import { TimedRun, timedExec } from './exec';

const CNIRUN = path.join(__dirname, '../../build/bench/cnirun');

export type CniCommand = 'ADD' | 'DEL';

export interface CniTarget {
  name: string;
  call(command: CniCommand, containerId: string, netnsPath: string): Promise<TimedRun>;
}

export const REF_PLUGIN_DIR = '/usr/lib/cni';

/** One exec through cnirun in `node`'s namespace; its own spawn-to-exit time replaces ours. */
async function cniExec(node: string, binary: string, env: Record<string, string>, stdin: string): Promise<TimedRun> {
  const run = await timedExec(CNIRUN, ['-n', `/run/netns/${node}`, binary], env, stdin);
  const m = /(?:^|\n)cnirun-ns=(\d+)\n$/.exec(run.stderr);
  if (!m || run.code === 125) throw new Error(`cnirun ${binary}: ${run.stderr.trim()}`);
  return { ...run, ms: Number(m[1]) / 1e6, stderr: run.stderr.slice(0, m.index) };
}

/** CNI environment for one attachment; pod name arguments as Kubernetes runtimes pass them. */
function cniEnv(command: CniCommand, containerId: string, netnsPath: string, cniPath: string): Record<string, string> {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: containerId,
    CNI_NETNS: netnsPath,
    CNI_IFNAME: 'eth0',
    CNI_PATH: cniPath,
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=${containerId}`,
  };
}

/** A call that did not succeed makes the whole benchmark invalid: fail loudly. */
function checked(name: string, command: CniCommand, containerId: string, run: TimedRun): TimedRun {
  let ok = run.code === 0;
  if (ok && command === 'ADD') {
    try {
      ok = Array.isArray((JSON.parse(run.stdout) as { ips?: unknown }).ips);
    } catch {
      ok = false;
    }
  }
  if (!ok) throw new Error(`${name}: CNI ${command} ${containerId} failed (exit ${run.code}): ${run.stdout.trim()} ${run.stderr.trim()}`);
  return run;
}

function pluginTarget(name: string, node: string, binary: string, cniPath: string, stdin: string): CniTarget {
  return {
    name,
    call: async (command, containerId, netnsPath) =>
      checked(name, command, containerId, await cniExec(node, binary, cniEnv(command, containerId, netnsPath, cniPath), stdin)),
  };
}

/** kelp-cni from the sandbox's CNI dir, with the plugin config a runtime derives from 05-kelp.conflist. */
export function kelpTarget(sb: Sandbox, name: string): CniTarget {
  return pluginTarget(name, sb.node, path.join(sb.cniBinDir, 'kelp-cni'), sb.cniBinDir, JSON.stringify(sb.pluginConfig()));
}

export function floorTarget(name: string, node: string): CniTarget {
  return { name, call: () => cniExec(node, '/bin/true', {}, '') };
}

/**
 * A node namespace with one of Debian's reference interface plugins (bridge, ptp …) and
 * host-local, exec'd in that namespace so its links land there.
 */
export class PluginNode {
  readonly dir: string;
  readonly conflist: Record<string, unknown>;
  private readonly release: () => Promise<void>;

  protected constructor(readonly node: string, plugin: Record<string, unknown> & { type: string }, subnet: string) {
    this.dir = mkdtempSync(path.join(tmpdir(), `kelp-bench-${node}-`));
    this.release = defer(() => this.destroy());
    this.conflist = {
      cniVersion: '1.0.0',
      name: `bench-${node}`,
      plugins: [{ ...plugin, ipam: { type: 'host-local', ranges: [[{ subnet }]], dataDir: path.join(this.dir, 'ipam') } }],
    };
    writeFileSync(path.join(this.dir, `10-${plugin.type}.conflist`), JSON.stringify(this.conflist, null, 2));
  }

  static open(node: string, plugin: Record<string, unknown> & { type: string }, subnet: string): PluginNode {
    return PluginNode.inNewNetns(node, () => new PluginNode(node, plugin, subnet));
  }

  protected static inNewNetns<T>(node: string, make: () => T): T {
    throwIfInterrupted();
    sh('ip', ['netns', 'add', node]);
    try {
      sh('ip', ['-n', node, 'link', 'set', 'lo', 'up']);
      return make();
    } catch (e) {
      sh('ip', ['netns', 'del', node], { allowFail: true });
      throw e;
    }
  }

  /** The one plugin's config as libcni hands it over: the list's name and cniVersion injected. */
  pluginConfig(): Record<string, unknown> {
    const list = this.conflist as { name: string; cniVersion: string; plugins: Array<Record<string, unknown>> };
    return { cniVersion: list.cniVersion, name: list.name, ...list.plugins[0] };
  }

  target(name: string): CniTarget {
    const type = (this.pluginConfig() as { type: string }).type;
    return pluginTarget(name, this.node, path.join(REF_PLUGIN_DIR, type), REF_PLUGIN_DIR, JSON.stringify(this.pluginConfig()));
  }

  private destroy(): void {
    sh('ip', ['netns', 'del', this.node], { allowFail: true });
    rmSync(this.dir, { recursive: true, force: true });
  }

  close(): Promise<void> {
    return this.release();
  }
}

/** A node namespace with the reference plugins' network: bridge + host-local, nothing else. */
export class BridgeNode extends PluginNode {
  static create(node: string, bridge: string, subnet: string): BridgeNode {
    // The reference at its cheapest: no ipMasq (kelp masquerades in BPF once per node, the
    // bridge plugin would add iptables rules per pod), no portmap/firewall/tuning chain.
    return PluginNode.inNewNetns(node, () => new BridgeNode(node, { type: 'bridge', bridge, isGateway: true, ipMasq: false }, subnet));
  }
}
