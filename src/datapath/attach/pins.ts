// Pinned links under <bpfRoot>/links: the uplink's tcx links, a `podHook: "tcx"` pod's, and an
// older kelp's pod links (pods now use clsact filters). Pins are what let a restarted agent find
// a link and move it onto its new program in one step.
// Invariants: kelp only ever touches pins whose names it gives (`<host veth>-<dir>`,
// `uplink-<dev>-<dir>`); a link is updated in place when it is still on its device, never
// detached and re-attached; removing a pin detaches its link first, and a link whose device is
// gone is already detached (not an error).
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { BpfLink, BpfProgram, KelpBpfError, openPinnedLink } from '../../bpf';
import type { TcDirection } from '../../bpf';

/** Errors of detaching a link whose device (and with it the attachment) is already gone. */
const GONE = ['ENOENT', 'ENOLINK', 'EINVAL', 'ENODEV'];
/** Pod veths' pinned tcx links: podHook "tcx", or an older kelp's (removed once filters replace them). */
const POD_PIN = /^(kelp[0-9a-f]{11})-(ingress|egress)$/;
const UPLINK_PIN = /^uplink-(.+)-(ingress|egress)$/;

/** A link pinned under <bpfRoot>/links by kelp: the uplink's, or a pod veth's left by an older kelp. */
export interface PinnedLink {
  path: string;
  kind: 'pod' | 'uplink';
  /** The host veth or uplink device the pin is named after. */
  ifname: string;
  dir: 'ingress' | 'egress';
}

/** What happened to one hook at restart: it already ran this program, got it swapped in, or had none. */
export type RelinkOutcome = 'kept' | 'updated' | 'attached';

export class LinkPins {
  readonly dir: string;

  constructor(bpfRoot: string) {
    this.dir = path.join(bpfRoot, 'links');
    mkdirSync(this.dir, { recursive: true });
  }

  /** Where the links of a device (a host veth, or `uplink-<dev>`) are pinned. */
  paths(name: string): Record<TcDirection, string> {
    return { ingress: path.join(this.dir, `${name}-ingress`), egress: path.join(this.dir, `${name}-egress`) };
  }

  /** Links whose names kelp gives; anything else there is not ours. */
  list(): PinnedLink[] {
    const out: PinnedLink[] = [];
    for (const name of readdirSync(this.dir)) {
      const pod = POD_PIN.exec(name);
      const up = pod ? null : UPLINK_PIN.exec(name);
      const m = pod ?? up;
      if (!m) continue;
      out.push({ path: path.join(this.dir, name), kind: pod ? 'pod' : 'uplink', ifname: m[1], dir: m[2] as 'ingress' | 'egress' });
    }
    return out;
  }

  /** The ifindex a pinned link is attached to; 0 once its device is gone. */
  ifindexOf(pin: string): number {
    const link = openPinnedLink(pin);
    try {
      return link.info().ifindex ?? 0;
    } finally {
      link.close();
    }
  }

  /** Detaches a pinned link and removes its pin; harmless when either is gone already. */
  remove(pin: string): void {
    removePin(pin);
  }
}

/**
 * Re-uses the link pinned at `pin` if it is attached to `ifindex`, moving it onto `prog` with
 * link update when it runs another program instance. A pin whose link is attached elsewhere or
 * whose device is gone is removed, and undefined returned: the caller attaches anew.
 */
export function reuseLink(pin: string, ifindex: number, prog: BpfProgram): { link: BpfLink; outcome: RelinkOutcome } | undefined {
  if (!existsSync(pin)) return undefined;
  const link = openPinnedLink(pin);
  try {
    const info = link.info();
    if (info.ifindex === ifindex) {
      if (info.progId === prog.id) return { link, outcome: 'kept' };
      link.update(prog);
      return { link, outcome: 'updated' };
    }
    detachQuietly(link);
    link.unpin();
  } catch (e) {
    link.close();
    throw e;
  }
  link.close();
  return undefined;
}

function detachQuietly(link: BpfLink): void {
  try {
    link.detach();
  } catch (e) {
    // The device (and with it the attachment) may already be gone.
    if (!(e instanceof KelpBpfError) || !GONE.includes(e.code)) throw e;
  }
}

/** Detaches the link pinned at `pin` and unpins it; nothing when there is no pin. */
export function removePin(pin: string): void {
  if (!existsSync(pin)) return;
  const link = openPinnedLink(pin);
  try {
    detachQuietly(link);
    link.unpin();
  } finally {
    link.close();
  }
}
