// From datapath events to FlowRecords (src/datapath/flow-types.ts): addresses and ids named the
// way an operator knows them. A FlowDirectory answers the lookups; agentDirectory() builds one
// from the agent's parts (endpoint records, the store's Pods, Nodes and Services, the policy
// reconciler's model), rebuilt at most once a second and only when something changed.
import type { FlowPeer, FlowRecord } from '../datapath/flow-types';
import type { EventPolicy, FlowEvent, KelpEvent } from '../datapath/events';
import { isFlowEvent } from '../datapath/events';
import { cidrContains, parseCidr, tryParseIp, type Cidr } from '../ipam/ip';

export interface NamedObject {
  namespace: string;
  name: string;
}

export interface PolicyName {
  kind: string;
  namespace?: string;
  name: string;
}

/** The lookups enrichment needs; each answers undefined when it does not know. */
export interface FlowDirectory {
  podByEndpoint(epId: number): NamedObject | undefined;
  podByIp(ip: string): NamedObject | undefined;
  /** The node an address belongs to: one of its addresses or its pod CIDRs. */
  nodeByIp(ip: string): string | undefined;
  serviceById(svcId: number): NamedObject | undefined;
  policyById(policyId: number): PolicyName | undefined;
}

const PROTOCOLS: Record<number, string> = { 1: 'ICMP', 6: 'TCP', 17: 'UDP', 132: 'SCTP' };

export function protocolName(proto: number): string {
  return PROTOCOLS[proto] ?? String(proto);
}

/** Wall clock = monotonic + offset, taken once (both clocks tick together; NTP slews are small). */
export class EventClock {
  private readonly offsetNs: bigint;

  constructor(monotonicNs: () => bigint = () => process.hrtime.bigint(), wallMs: () => number = Date.now) {
    this.offsetNs = BigInt(wallMs()) * 1_000_000n - monotonicNs();
  }

  /** RFC 3339 UTC with nanoseconds. */
  format(monoNs: bigint): string {
    const wall = monoNs + this.offsetNs;
    const ms = wall / 1_000_000n;
    const iso = new Date(Number(ms)).toISOString();
    const frac = (wall % 1_000_000_000n).toString().padStart(9, '0');
    return `${iso.slice(0, 19)}.${frac}Z`;
  }
}

export class Enricher {
  constructor(
    private readonly dir: FlowDirectory,
    private readonly clock: EventClock = new EventClock(),
  ) {}

  private peer(address: string, port: number, epId?: number): FlowPeer {
    const p: FlowPeer = { address, port };
    const pod = (epId ? this.dir.podByEndpoint(epId) : undefined) ?? this.dir.podByIp(address);
    if (pod) p.pod = { namespace: pod.namespace, name: pod.name };
    else {
      const node = this.dir.nodeByIp(address);
      if (node) p.node = node;
      else p.world = true;
    }
    return p;
  }

  private policy(p: EventPolicy, fallbackAction?: string): FlowRecord['policy'] {
    if (p.policyId === 0) return undefined;
    const name = this.dir.policyById(p.policyId) ?? { kind: 'unknown', name: `#${p.policyId}` };
    const out: NonNullable<FlowRecord['policy']> = { kind: name.kind, name: name.name, rule: p.rule, tier: p.tier, action: p.action === 'none' ? (fallbackAction ?? 'none') : p.action };
    if (name.namespace !== undefined) out.namespace = name.namespace;
    return out;
  }

  /** The record of a datapath event (or of a flow end the conntrack collector reports). */
  record(ev: KelpEvent): FlowRecord {
    if (isFlowEvent(ev)) return this.flow(ev);
    const egress = ev.dir === 'from-pod';
    // The endpoint the event is charged to is the source on egress, the destination on ingress.
    const rec: FlowRecord = {
      time: this.clock.format(ev.tsNs),
      type: ev.kind,
      verdict: ev.kind === 'drop' ? 'dropped' : ev.kind === 'audit' ? 'audit' : 'forwarded',
      direction: egress ? 'egress' : 'ingress',
      protocol: protocolName(ev.proto),
      source: this.peer(ev.saddr, ev.sport, egress ? ev.epId : undefined),
      destination: this.peer(ev.daddr, ev.dport, egress ? undefined : ev.epId),
      endpoint: ev.epId,
    };
    if (ev.kind === 'drop' || ev.kind === 'audit') {
      rec.reason = ev.reasonName;
      const pol = ev.policy && this.policy(ev.policy, ev.kind === 'drop' ? 'deny' : 'audit');
      if (pol) rec.policy = pol;
    }
    return rec;
  }

  private flow(ev: FlowEvent): FlowRecord {
    const ingress = ev.direction === 'ingress';
    const rec: FlowRecord = {
      time: this.clock.format(ev.tsNs),
      type: ev.kind,
      verdict: ev.policy.action === 'audit' ? 'audit' : 'forwarded',
      direction: ingress ? 'ingress' : 'egress',
      protocol: protocolName(ev.proto),
      source: this.peer(ev.saddr, ev.sport, ingress ? undefined : ev.epId),
      destination: this.peer(ev.daddr, ev.dport, ingress ? ev.epId : undefined),
      endpoint: ev.epId,
    };
    if (ev.service) {
      const svc = this.dir.serviceById(ev.service.svcId) ?? { namespace: '', name: `#${ev.service.svcId}` };
      rec.service = { namespace: svc.namespace, name: svc.name, address: ev.service.address, port: ev.service.port };
    }
    const pol = this.policy(ev.policy);
    if (pol) rec.policy = pol;
    if (ev.kind === 'flow-end') {
      const dur = ev.tsNs > ev.createdNs ? ev.tsNs - ev.createdNs : 0n;
      rec.counters = {
        packetsOut: Number(ev.txPackets),
        bytesOut: Number(ev.txBytes),
        packetsIn: Number(ev.rxPackets),
        bytesIn: Number(ev.rxBytes),
        durationMs: Number(dur / 1_000_000n),
        closedBy: ev.closedBy ?? 'timeout',
      };
    }
    return rec;
  }
}

/** What agentDirectory() reads; each part optional so a test gives only what it needs. */
export interface DirectorySources {
  endpoints(): Array<{ id: number; ips: Array<{ address: string }>; pod?: { namespace: string; name: string } }>;
  pods(): Array<{ metadata: { namespace?: string; name: string }; status?: { podIPs: Array<{ ip: string }> } }>;
  nodes(): Array<{ metadata: { name: string }; spec: { podCIDRs: string[] }; status: { addresses: Array<{ type: string; address: string }> } }>;
  /** svc id -> `namespace/name` (the service model's ports). */
  services(): Array<{ svcId: number; service: string }>;
  policies(): Array<{ id: number; kind: string; ref: string }>;
  /** Changes whenever any of the above may have. */
  version(): string;
}

/** A FlowDirectory over the agent's parts, its tables rebuilt when `version()` changes (checked at most every `minAgeMs`). */
export function agentDirectory(src: DirectorySources, minAgeMs = 1000): FlowDirectory {
  let built = -Infinity;
  let version: string | undefined;
  let t: ReturnType<typeof build> | undefined;

  function build() {
    const podByEp = new Map<number, NamedObject>();
    const podByIp = new Map<string, NamedObject>();
    for (const ep of src.endpoints()) {
      if (!ep.pod) continue;
      podByEp.set(ep.id, ep.pod);
      // Endpoint records keep the address with its prefix length (10.244.0.5/24).
      for (const ip of ep.ips) podByIp.set(ip.address.split('/')[0], ep.pod);
    }
    for (const pod of src.pods()) {
      const named = { namespace: pod.metadata.namespace ?? 'default', name: pod.metadata.name };
      for (const { ip } of pod.status?.podIPs ?? []) if (!podByIp.has(ip)) podByIp.set(ip, named);
    }
    const nodeAddr = new Map<string, string>();
    const nodeCidrs: Array<[Cidr, string]> = [];
    for (const n of src.nodes()) {
      for (const a of n.status.addresses) if (a.type === 'InternalIP' || a.type === 'ExternalIP') nodeAddr.set(a.address, n.metadata.name);
      for (const c of n.spec.podCIDRs) nodeCidrs.push([parseCidr(c), n.metadata.name]);
    }
    const services = new Map<number, NamedObject>();
    for (const s of src.services()) {
      const [namespace, name] = s.service.split('/');
      services.set(s.svcId, { namespace, name });
    }
    const policies = new Map<number, PolicyName>();
    for (const p of src.policies()) {
      // ref: Kind/namespace/name or Kind/name (cluster-scoped).
      const parts = p.ref.split('/');
      policies.set(p.id, parts.length >= 3 ? { kind: p.kind, namespace: parts[1], name: parts.slice(2).join('/') } : { kind: p.kind, name: parts[parts.length - 1] });
    }
    return { podByEp, podByIp, nodeAddr, nodeCidrs, services, policies };
  }

  function tables(fresh = false) {
    const now = Date.now();
    if (fresh || now - built >= minAgeMs) {
      built = now;
      const v = src.version();
      if (v !== version || !t) {
        version = v;
        t = build();
      }
    }
    return t!;
  }

  return {
    // An endpoint, Service or policy id the datapath names exists: a miss means the tables predate
    // it (a drop right after a policy's apply), so they are checked again at once. Addresses miss
    // for every outside peer: those wait for the periodic check.
    podByEndpoint: (id) => tables().podByEp.get(id) ?? tables(true).podByEp.get(id),
    podByIp: (ip) => tables().podByIp.get(ip),
    nodeByIp(ip) {
      const tb = tables();
      const byAddr = tb.nodeAddr.get(ip);
      if (byAddr) return byAddr;
      const addr = tryParseIp(ip);
      if (!addr) return undefined;
      return tb.nodeCidrs.find(([c]) => c.family === addr.family && cidrContains(c, addr))?.[1];
    },
    serviceById: (id) => tables().services.get(id) ?? tables(true).services.get(id),
    policyById: (id) => tables().policies.get(id) ?? tables(true).policies.get(id),
  };
}
