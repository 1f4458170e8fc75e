// Endpoint records on disk: one JSON file per attachment, written atomically. The agent's
// source of truth for DEL/CHECK/GC and for restoring its view after a restart — never the
// runtime's prevResult, which may be missing or from another plugin version.
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';

export interface EndpointRecord {
  /** Small positive integer, unique on the node; the datapath's endpoint id. */
  id: number;
  network: string;
  containerId: string;
  ifname: string;
  netns: string;
  hostIfname: string;
  hostIfindex: number;
  hostMac: string;
  podMac: string;
  podIfindex: number;
  mtu: number;
  ips: Array<{ address: string; gateway?: string }>;
  routes: Array<{ dst: string; gw?: string }>;
  /**
   * 'interface' (default): kelp made the veth pair. 'chained': an earlier plugin in the conflist
   * made the interface and its addresses; kelp only attached its datapath to the host side.
   */
  mode?: 'interface' | 'chained';
  /** How the programs hook the host veth: clsact filters (default) or pinned tcx links. */
  hook?: PodHook;
  /** Who allocated the addresses: kelp's IPAM, a delegated IPAM plugin, or the earlier plugin. */
  ipam: { kind: 'builtin'; dataDir: string } | { kind: 'delegated'; type: string } | { kind: 'external' };
  pod?: { namespace: string; name: string; uid?: string };
  createdAt: string;
}

import type { PodHook } from '../datapath/types';
export type { PodHook };

export function attachmentKey(network: string, containerId: string, ifname: string): string {
  return `${network}/${containerId}/${ifname}`;
}

/**
 * The host-side veth name: derived from the attachment so DEL finds it even without any
 * record (a crash between creating the veth and writing the record). 15 bytes: IFNAMSIZ-1.
 */
export function hostIfnameFor(network: string, containerId: string, ifname: string): string {
  return 'kelp' + createHash('sha256').update(attachmentKey(network, containerId, ifname)).digest('hex').slice(0, 11);
}

function fileName(key: string): string {
  // Container ids and ifnames are validated ([A-Za-z0-9_.-], no '/'); hash anyway so the name is safe.
  return createHash('sha256').update(key).digest('hex').slice(0, 32) + '.json';
}

export class EndpointStore {
  private readonly dir: string;
  private readonly byKey = new Map<string, EndpointRecord>();

  constructor(stateDir: string) {
    this.dir = path.join(stateDir, 'endpoints');
  }

  /** Loads every record; unreadable files are reported, not fatal. */
  load(): { loaded: number; broken: string[] } {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const broken: string[] = [];
    for (const name of readdirSync(this.dir)) {
      if (!name.endsWith('.json')) continue;
      try {
        const rec = JSON.parse(readFileSync(path.join(this.dir, name), 'utf8')) as EndpointRecord;
        this.byKey.set(attachmentKey(rec.network, rec.containerId, rec.ifname), rec);
      } catch {
        broken.push(name);
      }
    }
    return { loaded: this.byKey.size, broken };
  }

  get(network: string, containerId: string, ifname: string): EndpointRecord | undefined {
    return this.byKey.get(attachmentKey(network, containerId, ifname));
  }

  list(): EndpointRecord[] {
    return [...this.byKey.values()];
  }

  /** The lowest id not in use; ids are reused only after their endpoint is gone. */
  nextId(reserved: Set<number> = new Set()): number {
    const used = new Set([...this.byKey.values()].map((r) => r.id));
    for (let id = 1; ; id++) if (!used.has(id) && !reserved.has(id)) return id;
  }

  async put(rec: EndpointRecord): Promise<void> {
    const key = attachmentKey(rec.network, rec.containerId, rec.ifname);
    const file = path.join(this.dir, fileName(key));
    const tmp = `${file}.${process.pid}.tmp`;
    // Synchronous, like the IPAM store (src/ipam/file-store.ts): two syscalls instead of two
    // thread-pool round trips per ADD. Compact JSON: read by kelp, shown by `kelp endpoints`.
    writeFileSync(tmp, JSON.stringify(rec), { mode: 0o600 });
    renameSync(tmp, file);
    this.byKey.set(key, rec);
  }

  async remove(network: string, containerId: string, ifname: string): Promise<void> {
    const key = attachmentKey(network, containerId, ifname);
    this.byKey.delete(key);
    rmSync(path.join(this.dir, fileName(key)), { force: true });
  }
}
