// ns/packet of kelp_from_pod's local delivery (anti-spoofing, validation, TTL, metrics, redirect)
// against bench/bpf/redirect.c (one hash lookup and bpf_redirect_peer, the minimal reference). Measured
// by BPF_PROG_TEST_RUN in a private netns (the anti-spoofing check needs real ifindexes there).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BpfObject, BpfProgram, inNetns } from '../src/bpf';
import { EndpointMaps } from '../src/datapath/endpoints';
import { loadWithVerifierLog, LXC_OBJECT } from '../test/support/datapath';
import { Netns, sh, uniqueName } from '../test/support/netns';
import * as P from '../test/support/packet';

const BUILD = path.join(__dirname, '../build/bpf');
// The runs of one call share the packet buffer (the kernel does not restore it between repeats).
// Each run decrements the TTL, so a call repeats at most 250 times on a packet starting at TTL 255;
// and pod A's MAC is the MAC the rewrite writes as source (B's node MAC), so the packet still
// passes anti-spoofing after its first run.
const REPEAT_PER_CALL = 250;

export interface DatapathBenchResult {
  /** Median over calls of the kernel-measured mean ns per run. */
  kelpNs: number;
  referenceNs: number;
  packetBytes: number;
  runs: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Median ns/run of each program; calls alternate between them so both see the same machine load. */
function measure(ns: Netns, progs: BpfProgram[], data: Buffer, ctx: Buffer, calls: number): number[] {
  const durations = progs.map(() => [] as number[]);
  inNetns(ns.path, () => {
    for (let i = 0; i < calls; i++) {
      progs.forEach((prog, j) => {
        const r = prog.testRun({ data, ctx, repeat: REPEAT_PER_CALL });
        if (r.retval !== P.TC_ACT_REDIRECT) throw new Error(`${prog.name}: verdict ${r.retval}, expected a redirect`);
        durations[j].push(r.duration);
      });
    }
  });
  return durations.map(median);
}

export function benchDatapath(opts: { calls?: number; log?: (line: string) => void } = {}): DatapathBenchResult {
  const calls = opts.calls ?? 400;
  const log = opts.log ?? ((line: string) => console.log(line));
  const ns = new Netns(uniqueName('kbn'));
  const pinRoot = mkdtempSync(path.join(tmpdir(), 'kelp-bench-bpffs-'));
  const objects: BpfObject[] = [];
  sh('ip', ['netns', 'add', ns.name]);
  try {
    sh('mount', ['-t', 'bpf', 'bpf', pinRoot]);
    ns.ip('link', 'add', 'ha', 'type', 'veth', 'peer', 'name', 'pa');
    ns.ip('link', 'add', 'hb', 'type', 'veth', 'peer', 'name', 'pb');
    const a = { ip: '10.79.0.2', ifindex: ns.ifindex('ha'), epId: 1, flags: 0, mac: '02:ee:00:00:00:03', nodeMac: '02:ee:00:00:00:02' };
    const b = { ip: '10.79.0.3', ifindex: ns.ifindex('hb'), epId: 2, flags: 0, mac: '02:aa:00:00:00:03', nodeMac: '02:ee:00:00:00:03' };

    const kelp = loadWithVerifierLog(LXC_OBJECT, { pinRoot });
    objects.push(kelp);
    const endpoints = EndpointMaps.of(kelp);
    for (const ep of [a, b]) endpoints.put(ep.ip, ep);

    const ref = loadWithVerifierLog(path.join(BUILD, 'bench_redirect.o'));
    objects.push(ref);
    const ifindex = Buffer.alloc(4);
    ifindex.writeUInt32LE(b.ifindex);
    ref.map('bench_dst4').update(P.ipBytes(b.ip), ifindex);

    const packet = P.ethernet(
      { src: a.mac, dst: a.nodeMac, type: P.ETH_P_IP },
      P.ipv4(
        { src: a.ip, dst: b.ip, proto: P.IPPROTO_UDP, ttl: 255 },
        P.udp({ sport: 40000, dport: 5201, src: a.ip, dst: b.ip }, Buffer.alloc(64)),
      ),
    );
    const ctx = P.skbCtx({ ifindex: a.ifindex });
    const progs = [kelp.program('kelp_from_pod'), ref.program('bench_redirect')];
    measure(ns, progs, packet, ctx, Math.ceil(calls / 10));
    const [kelpNs, referenceNs] = measure(ns, progs, packet, ctx, calls);

    const result = { kelpNs, referenceNs, packetBytes: packet.length, runs: calls * REPEAT_PER_CALL };
    log(
      `datapath: kelp_from_pod local delivery ${kelpNs} ns/packet, reference redirect ${referenceNs} ns/packet ` +
        `(+${kelpNs - referenceNs} ns; ${packet.length}-byte UDP, ${result.runs} runs each)`,
    );
    return result;
  } finally {
    for (const o of objects) o.close();
    sh('umount', ['-l', pinRoot], { allowFail: true });
    rmSync(pinRoot, { recursive: true, force: true });
    ns.destroy();
  }
}
