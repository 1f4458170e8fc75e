// Overlay attach: overlay.o's programs on the node's kelp VXLAN device (VXLAN routing mode) as
// pinned tcx links, kelp_from_overlay on ingress (decapsulated packets into local pods) and
// kelp_to_overlay on egress (the tunnel key of the node's own packets).
// Invariants: a previous agent's links keep running until the new programs take their place in
// one step (link update, see pins.ts): an agent restart never leaves the device without its
// programs, so cross-node flows through it are not interrupted; the pins are named
// `overlay-<device>-<dir>`, which the restore sweep's pod and uplink patterns never match.
import { attachTc, BpfLink, BpfObject } from '../../bpf';
import type { Logger } from '../../log';
import { isValidIfname } from '../../netlink/rtnl';
import { DEFAULT_NAT_PORTS } from '../nat';
import type { DatapathObjects } from '../objects';
import { ip4ToBuffer } from '../structs';
import { LinkPins, RelinkOutcome, reuseLink } from './pins';

export interface OverlayAttachOptions {
  /** The kelp VXLAN device in this agent's namespace. */
  ifindex: number;
  ifname: string;
}

/** The uplink's masquerade, when it is on: answers to flows it translated come back through the tunnel. */
export interface OverlayMasquerade {
  uplinkIfindex: number;
  masqIp: string;
}

const OVERLAY_PROGRAMS = [
  ['ingress', 'kelp_from_overlay'],
  ['egress', 'kelp_to_overlay'],
] as const;

export class Overlay {
  private readonly links: BpfLink[] = [];
  /** What each hook got: kept (already this program), updated in place, or attached anew. */
  readonly outcome: Partial<Record<'ingress' | 'egress', RelinkOutcome>> = {};

  private constructor(
    readonly obj: BpfObject,
    readonly opts: OverlayAttachOptions,
  ) {}

  /** Loads overlay.o (its maps shared with lxc.o's pins) and puts its programs on the device. */
  static attach(objects: DatapathObjects, pins: LinkPins, o: OverlayAttachOptions, log: Logger, trace = false, masq?: OverlayMasquerade): Overlay {
    if (!Number.isInteger(o.ifindex) || o.ifindex < 1) throw new RangeError(`attachOverlay: ifindex ${o.ifindex} is not an interface index`);
    if (!isValidIfname(o.ifname)) throw new TypeError(`attachOverlay: ifname ${JSON.stringify(o.ifname)} is not a valid interface name`);
    const constants: Record<string, number | Buffer> = { KELP_TRACE: trace ? 1 : 0 };
    if (masq && masq.masqIp !== '0.0.0.0') {
      constants.KELP_MASQ_IP = ip4ToBuffer(masq.masqIp);
      constants.KELP_UPLINK_IFINDEX = masq.uplinkIfindex;
      constants.KELP_NAT_PORT_MIN = DEFAULT_NAT_PORTS.min;
      constants.KELP_NAT_PORT_MAX = DEFAULT_NAT_PORTS.max;
    }
    const obj = objects.load('overlay', constants);
    const overlay = new Overlay(obj, o);
    try {
      overlay.attachLinks(pins);
    } catch (e) {
      overlay.close();
      throw e;
    }
    objects.swapped('overlay');
    log.info({ ifname: o.ifname, ifindex: o.ifindex, hooks: overlay.outcome }, 'overlay programs on the VXLAN device');
    return overlay;
  }

  private attachLinks(pins: LinkPins): void {
    const paths = pins.paths(`overlay-${this.opts.ifname}`);
    for (const [dir, name] of OVERLAY_PROGRAMS) {
      const prog = this.obj.program(name);
      const reused = reuseLink(paths[dir], this.opts.ifindex, prog);
      if (reused) {
        this.links.push(reused.link);
        this.outcome[dir] = reused.outcome;
        continue;
      }
      // tcx only: a clsact filter has no link to pin, and could not be moved in place at restart.
      const link = attachTc(prog, this.opts.ifindex, dir, { mode: 'tcx' });
      this.links.push(link);
      link.pin(paths[dir]);
      this.outcome[dir] = 'attached';
    }
  }

  /** Closes the link handles; the pinned links stay attached. */
  close(): void {
    for (const l of this.links) l.close();
    this.links.length = 0;
  }
}
