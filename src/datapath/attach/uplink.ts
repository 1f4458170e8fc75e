// Uplink attach: masquerade and Services. host.o's programs on the node's uplink as pinned tcx
// links (attached once, moved onto each new agent's instances in place), kelp_nomasq4 synced to
// the configured exemptions, and the conntrack/NAT collector on a timer. With masquerade off
// host.o is loaded all the same (KELP_MASQ_IP 0): the uplink still carries NodePorts and
// external IPs from outside and the node's own packets to VIPs. kelp_host_lo goes on lo's egress
// as a clsact filter at kelp's slot (replaced in one step by the next agent, no pin: lo never
// goes away), with accept_local on lo so the replies of the node's flows to its own NodePorts,
// put back into its stack there, are not martians.
// Invariants: a previous agent's links keep translating until the new program takes their place
// in one step (link update): detaching first would let established flows' packets through
// untranslated and get them reset; kelp_nomasq4 holds exactly this configuration's CIDRs before
// the programs are swapped in; a map of a new layout is filled before the swap and its old pin
// removed only after it (objects.swapped); the collector reads each map in the layout loaded, is
// the agent's only timer on these maps, and stops with close().
import { attachTc, attachTcFilter, BpfLink, BpfObject } from '../../bpf';
import { confKey, writeSysctl } from '../../netlink/sysctl';
import { POD_FILTER } from './pod';
import type { Logger } from '../../log';
import { syncMap } from '../maps/sync';
import { Ct4Entry, gcNat, GcResult, masqConstants, monotonicNs, Nat4Entry, NatCodecs, nomasq4Key } from '../nat';
import type { StructCodec } from '../structs';
import type { DatapathObjects } from '../objects';
import { LinkPins, reuseLink } from './pins';

export interface MasqueradeOptions {
  uplinkIfindex: number;
  uplinkIfname: string;
  /** The address pods are masqueraded to; '0.0.0.0': masquerade off (Services only). */
  masqIp: string;
  podCidr: string;
  /** Destinations never masqueraded besides the pod CIDR (cluster CIDRs, node networks). */
  noMasquerade?: string[];
  /** After each conntrack/NAT collector pass (metrics). */
  onGc?: (r: GcResult) => void;
  /** VXLAN mode: the VXLAN port (node-to-node tunnel packets pass the programs at once). */
  vxlanPort?: number;
}

const UPLINK_PROGRAMS = [
  ['ingress', 'kelp_host_ingress'],
  ['egress', 'kelp_host_egress'],
] as const;

const GC_INTERVAL_MS = 10_000;

/** lo: the same ifindex in every network namespace (LOOPBACK_IFINDEX). */
const LO_IFINDEX = 1;
/** kelp_host_lo's clsact filter on lo's egress: the pods' slot (another device, no clash). */
export const LO_FILTER = POD_FILTER;

export class Uplink {
  private readonly links: BpfLink[] = [];
  private gcTimer?: NodeJS.Timeout;

  private constructor(
    readonly host: BpfObject,
    readonly opts: MasqueradeOptions,
    private readonly log: Logger,
  ) {}

  /** Loads host.o for this uplink and address, and puts its programs on the uplink. */
  static enable(objects: DatapathObjects, pins: LinkPins, m: MasqueradeOptions, log: Logger): Uplink {
    const host = objects.load('host', masqConstants({ podCidr: m.podCidr, masqIp: m.masqIp, vxlanPort: m.vxlanPort }));
    const up = new Uplink(host, m, log);
    up.syncExemptions();
    up.attach(pins);
    up.attachLo();
    objects.swapped('host');
    // Every layout of these maps decodes to the same entries (maps/registry.ts).
    up.startGc({
      ct: objects.layout('kelp_ct4').value as StructCodec<Ct4Entry>,
      nat: objects.layout('kelp_snat4').value as StructCodec<Nat4Entry>,
    });
    return up;
  }

  /**
   * Exactly these CIDRs: a pinned map may hold an earlier configuration's (another pod CIDR),
   * which would otherwise stay exempt from masquerade for ever.
   */
  private syncExemptions(): void {
    const exempt = [...new Set([this.opts.podCidr, ...(this.opts.noMasquerade ?? [])])];
    syncMap(this.host.map('kelp_nomasq4'), exempt.map((cidr) => [nomasq4Key.encode({ cidr }), Buffer.from([1])] as const));
  }

  /**
   * Replaces the exemptions besides the pod CIDR (the node reconciler's: every node's pod CIDR,
   * natively its address too). Entries both sets hold are never removed, so a flow between pod
   * CIDRs is not masqueraded for a moment.
   */
  setNoMasquerade(cidrs: readonly string[]): void {
    this.opts.noMasquerade = [...cidrs];
    this.syncExemptions();
  }

  private attach(pins: LinkPins): void {
    const paths = pins.paths(`uplink-${this.opts.uplinkIfname}`);
    for (const [dir, name] of UPLINK_PROGRAMS) {
      const prog = this.host.program(name);
      const reused = reuseLink(paths[dir], this.opts.uplinkIfindex, prog);
      if (reused) {
        this.links.push(reused.link);
        continue;
      }
      const link = attachTc(prog, this.opts.uplinkIfindex, dir);
      if (link.kind === 'tcx') link.pin(paths[dir]);
      this.links.push(link);
    }
  }

  /**
   * kelp_host_lo on lo's egress, replacing an earlier agent's in one step; lo accepts local
   * sources first (accept_local: only packets the node sends, and kelp's redirects, arrive there).
   */
  private attachLo(): void {
    writeSysctl(confKey('ipv4', 'lo', 'accept_local'), 1);
    attachTcFilter(this.host.program('kelp_host_lo'), LO_IFINDEX, 'egress', LO_FILTER, { replace: true });
  }

  private startGc(codecs: NatCodecs): void {
    const maps = { ct: this.host.map('kelp_ct4'), snat: this.host.map('kelp_snat4') };
    this.gcTimer = setInterval(() => {
      try {
        const r = gcNat(maps, monotonicNs(), { codecs });
        this.opts.onGc?.(r);
        if (r.expired || r.natDeleted) this.log.debug({ gc: r }, 'conntrack/NAT GC');
      } catch (err) {
        this.log.warn({ err }, 'conntrack/NAT GC failed');
      }
    }, GC_INTERVAL_MS);
    this.gcTimer.unref();
  }

  /** Stops the collector and closes the link handles; the pinned links stay attached. */
  close(): void {
    if (this.gcTimer) clearInterval(this.gcTimer);
    this.gcTimer = undefined;
    for (const l of this.links) l.close();
    this.links.length = 0;
  }
}
