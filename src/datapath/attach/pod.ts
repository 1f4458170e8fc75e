// Pod attach: lxc.o's two programs on each pod's host veth. By default as clsact filters at
// kelp's own slot, which need no pin to outlive the agent and die with the veth: every tcx
// attach waits for a kernel RCU grace period under rtnl_lock (10-15 ms per direction measured,
// most of an ADD), and a veth with tcx links takes ~70 ms instead of ~29 ms to delete; a clsact
// filter attaches in 0.1-0.4 ms. A network configured with `podHook: "tcx"` gets pinned tcx
// links instead: clsact takes the ingress qdisc's place, which the bandwidth plugin's egress
// shaping needs for itself.
// Invariants: every pod runs the same program instance per direction (the agent's one lxc.o);
// a restarted agent swaps its instances into existing hooks in one step (filter replace, link
// update), so a hook never runs without a program; an ADD never takes over a kelp filter it did
// not make (EEXIST).
import { attachTc, attachTcAsync, attachTcFilter, BpfObject, detachTcFilter, listAttached, queryTcFilter } from '../../bpf';
import type { TcFilterSlot } from '../../bpf';
import type { DatapathEndpoint, PodHook } from '../types';
import { LinkPins, RelinkOutcome, removePin, reuseLink } from './pins';

/** kelp's clsact filter on each pod veth hook: 0x4b is 'K'; a fixed slot lets kelp find it again. */
export const POD_FILTER: TcFilterSlot = { handle: 0x4b, priority: 1 };

/** The program on each hook of a host veth: ingress sees what the pod sends. */
export const POD_PROGRAMS = [
  ['ingress', 'kelp_from_pod'],
  ['egress', 'kelp_to_pod'],
] as const;

export class PodAttach {
  constructor(
    private readonly lxc: BpfObject,
    private readonly pins: LinkPins,
  ) {}

  /**
   * Attaches both programs to a host veth (just made, or the previous plugin's in chained mode).
   * Without replace: a kelp filter already there means an attachment kelp does not know of,
   * better reported (EEXIST) than silently taken over.
   */
  async attach(hostIfindex: number, hostIfname: string, hook: PodHook = 'clsact'): Promise<void> {
    // A pin under the veth's name is a leftover (a crash mid-ADD).
    for (const pin of Object.values(this.pins.paths(hostIfname))) removePin(pin);
    if (hook === 'tcx') return this.attachTcx(hostIfindex, hostIfname);
    const done: Array<'ingress' | 'egress'> = [];
    try {
      for (const [dir, prog] of POD_PROGRAMS) {
        attachTcFilter(this.lxc.program(prog), hostIfindex, dir, POD_FILTER);
        done.push(dir);
      }
    } catch (e) {
      for (const dir of done) detachTcFilter(hostIfindex, dir, POD_FILTER);
      throw e;
    }
  }

  /**
   * Pinned tcx links, attached off the event loop: each attach waits for a kernel RCU grace
   * period (~10-15 ms here) while holding rtnl_lock.
   */
  private async attachTcx(hostIfindex: number, hostIfname: string): Promise<void> {
    const pins = this.pins.paths(hostIfname);
    const results = await Promise.allSettled(POD_PROGRAMS.map(([dir, prog]) => attachTcAsync(this.lxc.program(prog), hostIfindex, dir)));
    const done = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    try {
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      POD_PROGRAMS.forEach(([dir], i) => {
        if (done[i].kind === 'tcx') done[i].pin(pins[dir]);
      });
    } catch (e) {
      for (const l of done) {
        l.detach();
        l.unpin();
        l.close();
      }
      throw e;
    }
    for (const l of done) l.close();
  }

  /**
   * Takes kelp's programs off a host veth; harmless when they (or the veth) are gone. Without an
   * ifindex only an older kelp's pins are removed (a deleted veth took its filters with it).
   */
  detach(hostIfname: string, hostIfindex?: number): void {
    if (hostIfindex) {
      for (const [dir] of POD_PROGRAMS) detachTcFilter(hostIfindex, dir, POD_FILTER);
    }
    for (const pin of Object.values(this.pins.paths(hostIfname))) removePin(pin);
  }

  /**
   * After a restart: makes sure a pod's host veth runs this agent's program instances. The
   * filter's program is replaced in one step (the hook never runs without a program). An
   * older kelp's pinned tcx link is removed only after the filter is there: until then tcx
   * runs first and its verdict stands, so no packet is left unhandled.
   */
  relink(hostIfindex: number, hostIfname: string, hook: PodHook = 'clsact'): Record<'ingress' | 'egress', RelinkOutcome> {
    const pins = this.pins.paths(hostIfname);
    const out = {} as Record<'ingress' | 'egress', RelinkOutcome>;
    for (const [dir, name] of POD_PROGRAMS) {
      const prog = this.lxc.program(name);
      if (hook === 'tcx') {
        // The pinned link moves onto the new instance in place; a missing or dead one is attached anew.
        const reused = reuseLink(pins[dir], hostIfindex, prog);
        if (reused) {
          out[dir] = reused.outcome;
          reused.link.close();
          continue;
        }
        const link = attachTc(prog, hostIfindex, dir);
        try {
          if (link.kind === 'tcx') link.pin(pins[dir]);
        } catch (e) {
          link.detach();
          link.close();
          throw e;
        }
        link.close();
        out[dir] = 'attached';
        continue;
      }
      const before = queryTcFilter(hostIfindex, dir, POD_FILTER);
      if (before?.id === prog.id) out[dir] = 'kept';
      else {
        attachTcFilter(prog, hostIfindex, dir, POD_FILTER, { replace: true });
        out[dir] = before ? 'updated' : 'attached';
      }
      removePin(pins[dir]);
    }
    return out;
  }

  /** Whether both of kelp's filters are on a host veth (whatever program instance they run). */
  hasFilters(hostIfindex: number): boolean {
    if (!hostIfindex) return false;
    return POD_PROGRAMS.every(([dir, name]) => queryTcFilter(hostIfindex, dir, POD_FILTER)?.name === name);
  }

  /** Why the endpoint's host veth does not run kelp's programs on both hooks; empty when it does. */
  problems(rec: DatapathEndpoint): string[] {
    const problems: string[] = [];
    try {
      const tcx = rec.hook === 'tcx' ? listAttached(rec.hostIfindex).tcx : undefined;
      for (const [dir, name] of POD_PROGRAMS) {
        const on = tcx ? tcx[dir].some((p) => p.name === name) : queryTcFilter(rec.hostIfindex, dir, POD_FILTER)?.name === name;
        if (!on) problems.push(`datapath: ${name} is not attached to ${rec.hostIfname} ${dir}`);
      }
    } catch (e) {
      problems.push(`datapath: cannot query ${rec.hostIfname}: ${(e as Error).message}`);
    }
    return problems;
  }
}
