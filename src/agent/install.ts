// Installs the plugin binary and the network configuration once the agent is ready, so
// runtimes never see a conflist whose plugin cannot be served. Both are written atomically
// (temp file + rename): runtimes watch the directory and libcni execs the binary at any time.
import { copyFileSync, chmodSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const PLUGIN_NAME = 'kelp-cni';
export const CONFLIST_NAME = '05-kelp.conflist';

export function pluginSourcePath(): string {
  return path.join(__dirname, '../../bin', PLUGIN_NAME);
}

export interface ConflistParams {
  networkName: string;
  socketPath: string;
  mtu: number;
  podCidr: string;
  masquerade: boolean;
  /** The node's routing settings, stated in the seeds' VXLAN fields (the agent's flags set them). */
  routing?: { mode: 'vxlan' | 'native'; vni: number; port: number };
}

/** It names no DEL queue: kelp-cni finds the queue next to agentSocket (src/agent/delqueue.ts). */
export function buildConflist(p: ConflistParams): Record<string, unknown> {
  return {
    cniVersion: '1.0.0',
    cniVersions: ['0.3.1', '0.4.0', '1.0.0', '1.1.0'],
    name: p.networkName,
    plugins: [
      {
        type: PLUGIN_NAME,
        agentSocket: p.socketPath,
        mtu: p.mtu,
        ipMasq: p.masquerade,
        ...(p.routing ? (p.routing.mode === 'vxlan' ? { vxlanId: p.routing.vni, port: p.routing.port, directRouting: false } : { directRouting: true }) : {}),
        ipam: { type: 'kelp', ranges: [[{ subnet: p.podCidr }]] },
      },
    ],
  };
}

function atomicWrite(file: string, data: string | Buffer, mode: number): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  writeFileSync(tmp, data, { mode });
  chmodSync(tmp, mode);
  renameSync(tmp, file);
}

export function installCni(binDir: string, confDir: string, conflist: Record<string, unknown>): { plugin: string; conflist: string } {
  mkdirSync(binDir, { recursive: true });
  mkdirSync(confDir, { recursive: true });
  const plugin = path.join(binDir, PLUGIN_NAME);
  const tmp = path.join(binDir, `.${PLUGIN_NAME}.${process.pid}.tmp`);
  copyFileSync(pluginSourcePath(), tmp);
  chmodSync(tmp, 0o755);
  renameSync(tmp, plugin);
  const conf = path.join(confDir, CONFLIST_NAME);
  atomicWrite(conf, JSON.stringify(conflist, null, 2) + '\n', 0o644);
  return { plugin, conflist: conf };
}
