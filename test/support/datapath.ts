// Helpers over kelp's maps for datapath and netns tests: endpoints in, metrics and events out.
import path from 'node:path';
import type { BpfMap, BpfObject, OpenOptions } from '../../src/bpf';
import { KelpBpfError, loadObject, openRingBuffer } from '../../src/bpf';
import { decodeEvent, KelpEvent } from '../../src/datapath/events';
import { createNetns, createVeth, Netns, uniqueName } from './netns';
import {
  endpointInfo,
  EndpointInfo,
  endpointKey,
  mergeMetrics,
} from '../../src/datapath/structs';

export const LXC_OBJECT = path.join(__dirname, '../../build/bpf/lxc.o');

/**
 * loadObject, with the verifier's log in the error message: a program the verifier rejects fails
 * the test run and shows why, wherever the error is printed.
 */
export function loadWithVerifierLog(file: string, opts: OpenOptions = {}): BpfObject {
  try {
    return loadObject(file, opts);
  } catch (e) {
    if (e instanceof KelpBpfError && e.verifierLog) e.message += `\nverifier log (tail):\n${e.verifierLog.slice(-6000)}`;
    throw e;
  }
}

export interface TestEndpoint extends EndpointInfo {
  ip: string;
}

export function putEndpoint(map: BpfMap, ep: TestEndpoint): void {
  map.update(endpointKey.encode({ ip4: ep.ip }), endpointInfo.encode(ep));
}

export function deleteEndpoint(map: BpfMap, ip: string): boolean {
  return map.delete(endpointKey.encode({ ip4: ip }));
}

/** `epId/dir/reason` -> totals over CPUs, for every key present. */
export type MetricsSnapshot = Record<string, { packets: number; bytes: number }>;

export function metricsId(epId: number, dir: number, reason: number): string {
  return `${epId}/${dir}/${reason}`;
}

/** Both counter maps of an object, added up; zero counters left out. */
export function readMetrics(maps: { hash: BpfMap; fwd: BpfMap }): MetricsSnapshot {
  const out: MetricsSnapshot = {};
  for (const { key, value } of mergeMetrics(maps.hash.lookupBatch(), maps.fwd.lookupBatch(), maps.hash.numCpus)) {
    out[metricsId(key.epId, key.dir, key.reason)] = { packets: Number(value.packets), bytes: Number(value.bytes) };
  }
  return out;
}

export function metricsMaps(obj: BpfObject): { hash: BpfMap; fwd: BpfMap } {
  return { hash: obj.map('kelp_metrics'), fwd: obj.map('kelp_metrics_fwd') };
}

/** Collects kelp_events records as they arrive on the event loop. */
export class EventCollector {
  readonly events: KelpEvent[] = [];
  private readonly rb: { close(): void };

  constructor(map: BpfMap) {
    this.rb = openRingBuffer(map, (data) => this.events.push(decodeEvent(data)));
  }

  /** Resolves with the events seen up to the first that matches `until` (which is removed). */
  async takeUntil(until: (e: KelpEvent) => boolean, timeoutMs = 10_000): Promise<KelpEvent[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.events.findIndex(until);
      if (i >= 0) return this.events.splice(0, i + 1).slice(0, i);
      if (Date.now() > deadline) {
        throw new Error(`no matching event within ${timeoutMs} ms; got ${JSON.stringify(this.events, bigintJson)}`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  close(): void {
    this.rb.close();
  }
}

function bigintJson(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? v.toString() : v;
}

/** A test pod: its namespace, the host end of its eth0 (in the node's namespace) and its endpoint. */
export interface TestPod {
  ns: Netns;
  hostVeth: string;
  ep: TestEndpoint;
}

/**
 * A pod for datapath tests: a namespace whose eth0 is a veth to `node`, with `ip` and a default
 * route via `gateway`. `quiet`: a /32, no IPv6 and a static neighbour entry for the gateway, so
 * every frame the pod sends is the test's own (byte-exact counters); else a /24.
 */
export function makeTestPod(node: Netns, o: { ip: string; epId: number; gateway: string; prefix: string; quiet?: boolean }): TestPod {
  const ns = createNetns(o.prefix);
  if (o.quiet) ns.exec('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  const hostVeth = uniqueName(o.prefix);
  createVeth(node, hostVeth, ns, 'eth0');
  ns.ip('addr', 'add', `${o.ip}/${o.quiet ? 32 : 24}`, 'dev', 'eth0');
  if (o.quiet) ns.ip('route', 'add', o.gateway, 'dev', 'eth0');
  ns.ip('route', 'add', 'default', 'via', o.gateway);
  if (o.quiet) ns.ip('neigh', 'replace', o.gateway, 'lladdr', node.mac(hostVeth), 'dev', 'eth0', 'nud', 'permanent');
  return { ns, hostVeth, ep: { ip: o.ip, epId: o.epId, flags: 0, ifindex: node.ifindex(hostVeth), mac: ns.mac('eth0'), nodeMac: node.mac(hostVeth) } };
}
