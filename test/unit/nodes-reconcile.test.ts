// The node reconciler's pure parts: which Node objects become remote nodes (and why the others
// do not), and the diffs that make kelp_tunnel4 and the main routing table hold the desired
// state, checked on tables and on generated cases by applying each diff to a plain model of the
// map and of the kernel's route table (replace = same prefix and metric, delete = matching
// protocol) and comparing with what was asked.
import { describe, expect, it } from 'vitest';
import { desiredNoMasquerade, desiredRoutes, desiredTunnel, nodeTable, RTPROT_KELP_NODE, routesDiff, tunnelDiff } from '../../src/reconcile/nodes';
import { TUNNEL_F_ENCAP, type TunnelEntry } from '../../src/datapath/node-types';
import { validateNode, type NodeObject } from '../../src/sources/objects/node';
import type { RouteEntry, RouteSpec } from '../../src/netlink';
import { Rng } from '../support/rng';

function node(name: string, o: { cidrs?: string[]; internal?: string; external?: string; addresses?: Array<{ type: string; address: string }> } = {}): NodeObject {
  const addresses = o.addresses ?? [...(o.internal ? [{ type: 'InternalIP', address: o.internal }] : []), ...(o.external ? [{ type: 'ExternalIP', address: o.external }] : [])];
  return validateNode({ apiVersion: 'v1', kind: 'Node', metadata: { name }, spec: { podCIDRs: o.cidrs ?? [] }, status: { addresses } });
}

const SELF = { name: 'n1', podCidr: '10.244.1.0/24' };

describe('nodeTable', () => {
  it('takes every other node with an IPv4 address and pod CIDR; this node is a row, never remote', () => {
    const t = nodeTable(
      [
        node('n1', { cidrs: ['10.244.1.0/24'], internal: '192.168.0.1' }),
        node('n2', { cidrs: ['10.244.2.0/24', 'fd00:2::/64'], internal: '192.168.0.2' }),
        node('n3', { cidrs: ['10.244.3.0/24'], external: '203.0.113.3' }),
      ],
      SELF,
    );
    expect(t.remote).toEqual([
      { name: 'n2', address: '192.168.0.2', podCidrs: ['10.244.2.0/24'] },
      { name: 'n3', address: '203.0.113.3', podCidrs: ['10.244.3.0/24'] },
    ]);
    expect(t.podCidrs).toEqual(['10.244.1.0/24', '10.244.2.0/24', '10.244.3.0/24']);
    expect(t.hosts).toEqual(['192.168.0.2/32', '203.0.113.3/32']);
    // Natively a remote node's address is exempt too; in VXLAN mode it takes the tunnel instead.
    expect(desiredNoMasquerade(t, 'native')).toEqual(['10.244.1.0/24', '10.244.2.0/24', '10.244.3.0/24', '192.168.0.2/32', '203.0.113.3/32']);
    expect(desiredNoMasquerade(t, 'vxlan')).toEqual(['10.244.1.0/24', '10.244.2.0/24', '10.244.3.0/24']);
    expect(t.rows.find((r) => r.name === 'n1')).toMatchObject({ self: true, address: '192.168.0.1' });
    expect(t.problems).toEqual([]);
  });

  it('prefers an IPv4 InternalIP to an ExternalIP, and skips IPv6 and name addresses', () => {
    const t = nodeTable(
      [
        node('n2', {
          cidrs: ['10.244.2.0/24'],
          addresses: [
            { type: 'Hostname', address: 'n2' },
            { type: 'ExternalIP', address: '203.0.113.2' },
            { type: 'InternalIP', address: 'fd00::2' },
            { type: 'InternalIP', address: '192.168.0.2' },
          ],
        }),
      ],
      SELF,
    );
    expect(t.remote).toEqual([{ name: 'n2', address: '192.168.0.2', podCidrs: ['10.244.2.0/24'] }]);
  });

  it('skips a node without a usable address or IPv4 pod CIDR, naming the field', () => {
    const t = nodeTable(
      [
        node('a-noaddr', { cidrs: ['10.244.2.0/24'], addresses: [{ type: 'Hostname', address: 'a' }] }),
        node('b-v6only', { cidrs: ['10.244.3.0/24'], internal: 'fd00::3' }),
        node('c-loop', { cidrs: ['10.244.4.0/24'], internal: '127.0.0.4' }),
        node('d-nocidr', { internal: '192.168.0.5' }),
        node('e-v6cidr', { cidrs: ['fd00:6::/64'], internal: '192.168.0.6' }),
        node('f-ok', { cidrs: ['10.244.7.0/24'], internal: '192.168.0.7' }),
      ],
      SELF,
    );
    expect(t.remote.map((n) => n.name)).toEqual(['f-ok']);
    expect(t.problems).toEqual([
      'Node a-noaddr: status.addresses has no IPv4 InternalIP or ExternalIP: skipped',
      'Node b-v6only: status.addresses has no IPv4 InternalIP or ExternalIP: skipped',
      'Node c-loop: status.addresses[0] InternalIP 127.0.0.4 is loopback, not an underlay address: skipped',
      'Node d-nocidr: spec.podCIDRs is empty: skipped',
      'Node e-v6cidr: spec.podCIDRs has no IPv4 CIDR (fd00:6::/64): skipped',
    ]);
    // Skipped nodes are neither routed to nor exempt from masquerade.
    expect(t.podCidrs).toEqual(['10.244.1.0/24', '10.244.7.0/24']);
    expect(t.hosts).toEqual(['192.168.0.7/32']);
  });

  it('keeps the older of two nodes with overlapping CIDRs, and never lets one take this node\'s', () => {
    const nodes = [node('a', { cidrs: ['10.244.2.0/24'], internal: '192.168.0.2' }), node('b', { cidrs: ['10.244.0.0/16'], internal: '192.168.0.3' }), node('c', { cidrs: ['10.244.1.128/25'], internal: '192.168.0.4' })];
    // Seen at once: by name.
    expect(nodeTable(nodes, SELF).problems).toEqual([
      "Node b: spec.podCIDRs 10.244.0.0/16 overlaps this node's pod CIDR 10.244.1.0/24: skipped",
      "Node c: spec.podCIDRs 10.244.1.128/25 overlaps this node's pod CIDR 10.244.1.0/24: skipped",
    ]);
    const t = nodeTable(nodes, { name: 'n1', podCidr: '10.99.0.0/24' }, new Map([['b', 1], ['a', 2], ['c', 2]]));
    expect(t.remote.map((n) => n.name)).toEqual(['b']);
    expect(t.problems).toEqual([
      "Node a: spec.podCIDRs 10.244.2.0/24 overlaps Node b's 10.244.0.0/16 (older, kept): skipped",
      "Node c: spec.podCIDRs 10.244.1.128/25 overlaps Node b's 10.244.0.0/16 (older, kept): skipped",
    ]);
  });

  it('generated: accepted CIDRs never overlap, each skip names an older holder, ages decide', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const r = new Rng(seed);
      const nodes: NodeObject[] = [];
      const seen = new Map<string, number>();
      const count = 1 + r.int(8);
      for (let i = 0; i < count; i++) {
        const name = `n${i + 2}`;
        const prefix = r.pick([16, 20, 24, 24, 24, 26]);
        const base = (10 << 24) | (r.int(2) << 16) | (r.int(8) << 8) | (r.int(2) << 6);
        const net = prefix === 32 ? base : base & ~((1 << (32 - prefix)) - 1);
        const cidr = `${[24, 16, 8, 0].map((s) => (net >>> s) & 255).join('.')}/${prefix}`;
        nodes.push(node(name, { cidrs: [cidr], internal: `192.168.1.${i + 2}` }));
        if (r.chance(0.7)) seen.set(name, r.int(3));
      }
      const self = { name: 'n1', podCidr: `10.${r.int(2)}.${r.int(8)}.0/24` };
      const t = nodeTable(nodes, self, seen);
      const net = (c: string) => {
        const [a, p] = c.split('/');
        const v = a.split('.').reduce((x, o) => x * 256 + Number(o), 0);
        return { lo: v, hi: v + 2 ** (32 - Number(p)) - 1 };
      };
      const clash = (x: string, y: string) => net(x).lo <= net(y).hi && net(y).lo <= net(x).hi;
      const accepted = [self.podCidr, ...t.remote.flatMap((n) => n.podCidrs)];
      expect(t.podCidrs, `seed ${seed}`).toEqual(accepted);
      for (let i = 0; i < accepted.length; i++) for (let j = i + 1; j < accepted.length; j++) expect(clash(accepted[i], accepted[j]), `seed ${seed}`).toBe(false);
      const age = (n: string) => seen.get(n) ?? Infinity;
      for (const n of nodes) {
        const row = t.rows.find((x) => x.name === n.metadata.name)!;
        // An accepted node overlaps nothing older that was accepted (checked above).
        if (!row.skipped) continue;
        const c = n.spec.podCIDRs[0];
        const isOlder = (o: string) => age(o) < age(n.metadata.name) || (age(o) === age(n.metadata.name) && o < n.metadata.name);
        const olderHolder = t.remote.some((o) => isOlder(o.name) && o.podCidrs.some((oc) => clash(oc, c)));
        expect(clash(self.podCidr, c) || olderHolder, `seed ${seed} ${n.metadata.name}`).toBe(true);
      }
    }
  });
});

describe('desired state', () => {
  const remote = [
    { name: 'n2', address: '192.168.0.2', podCidrs: ['10.244.2.0/24'] },
    { name: 'n3', address: '192.168.0.3', podCidrs: ['10.244.3.0/24'] },
  ];

  it('tunnel entries: each pod CIDR to its node; node addresses too in VXLAN mode (ENCAP), none natively', () => {
    const hosts = ['192.168.0.2/32', '192.168.0.3/32'];
    expect(desiredTunnel({ remote, hosts }, 'vxlan')).toEqual([
      { cidr: '10.244.2.0/24', nodeIp: '192.168.0.2', flags: TUNNEL_F_ENCAP },
      { cidr: '10.244.3.0/24', nodeIp: '192.168.0.3', flags: TUNNEL_F_ENCAP },
      { cidr: '192.168.0.2/32', nodeIp: '192.168.0.2', flags: TUNNEL_F_ENCAP },
      { cidr: '192.168.0.3/32', nodeIp: '192.168.0.3', flags: TUNNEL_F_ENCAP },
    ]);
    expect(desiredTunnel({ remote, hosts }, 'native')).toEqual([
      { cidr: '10.244.2.0/24', nodeIp: '192.168.0.2', flags: 0 },
      { cidr: '10.244.3.0/24', nodeIp: '192.168.0.3', flags: 0 },
    ]);
  });

  it('a remote node claiming this node\'s address gets no host entry: this node\'s own traffic stays here', () => {
    const t = nodeTable(
      [
        node('n1', { cidrs: ['10.244.1.0/24'], internal: '192.168.0.1' }),
        node('n2', { cidrs: ['10.244.2.0/24'], internal: '192.168.0.2' }),
        node('n4', { cidrs: ['10.244.4.0/24'], internal: '192.168.0.1' }),
      ],
      SELF,
    );
    expect(t.hosts).toEqual(['192.168.0.2/32']);
    expect(desiredTunnel(t, 'vxlan').map((e) => e.cidr)).not.toContain('192.168.0.1/32');
  });

  it('routes: onto kelp_vxlan (VXLAN), via the node on the uplink (native), kelp\'s protocol', () => {
    expect(desiredRoutes(remote, { mode: 'vxlan', vxlanIfindex: 7, uplinkIfindex: 2 })).toEqual([
      { dst: '10.244.2.0/24', dev: 7, scope: 'link', protocol: RTPROT_KELP_NODE },
      { dst: '10.244.3.0/24', dev: 7, scope: 'link', protocol: RTPROT_KELP_NODE },
    ]);
    expect(desiredRoutes(remote, { mode: 'native', vxlanIfindex: 0, uplinkIfindex: 2 })).toEqual([
      { dst: '10.244.2.0/24', gw: '192.168.0.2', dev: 2, protocol: RTPROT_KELP_NODE },
      { dst: '10.244.3.0/24', gw: '192.168.0.3', dev: 2, protocol: RTPROT_KELP_NODE },
    ]);
  });
});

// --- diffs against plain models ------------------------------------------------------------

function applyTunnel(map: Map<string, TunnelEntry>, d: ReturnType<typeof tunnelDiff>): void {
  for (const e of d.put) map.set(e.cidr, e);
  for (const c of d.remove) map.delete(c);
}

/** The main table as the kernel keeps it for these operations: one route per (prefix, metric). */
class RouteTable {
  routes: RouteEntry[] = [];
  replace(r: RouteSpec): void {
    const e: RouteEntry = { family: 4, dst: r.dst, dev: r.dev, scope: r.gw ? 0 : 253, table: 254, protocol: r.protocol ?? 4, type: 1, onlink: false, ...(r.gw ? { gw: r.gw } : {}) };
    const i = this.routes.findIndex((x) => x.dst === r.dst && (x.metric ?? 0) === (r.metric ?? 0));
    if (i >= 0) this.routes[i] = e;
    else this.routes.push(e);
  }
  delete(r: RouteEntry): void {
    const i = this.routes.findIndex((x) => x.dst === r.dst && (x.metric ?? 0) === (r.metric ?? 0) && x.protocol === RTPROT_KELP_NODE && x.dev === r.dev);
    if (i < 0) throw new Error(`no kelp route ${r.dst}`);
    this.routes.splice(i, 1);
  }
}

const routeKey = (r: { dst: string; dev?: number; gw?: string }) => `${r.dst}|${r.dev}|${r.gw ?? ''}`;

describe('tunnelDiff', () => {
  it('puts what is missing or different, removes what no node claims, leaves the rest', () => {
    const cur = [
      { cidr: '10.244.2.0/24', nodeIp: '192.168.0.2', flags: 1 },
      { cidr: '10.244.3.0/24', nodeIp: '192.168.0.9', flags: 1 },
      { cidr: '10.244.4.0/24', nodeIp: '192.168.0.4', flags: 1 },
      { cidr: '10.244.5.0/24', nodeIp: '192.168.0.5', flags: 0 },
    ];
    const want = [
      { cidr: '10.244.2.0/24', nodeIp: '192.168.0.2', flags: 1 },
      { cidr: '10.244.3.0/24', nodeIp: '192.168.0.3', flags: 1 },
      { cidr: '10.244.5.0/24', nodeIp: '192.168.0.5', flags: 1 },
      { cidr: '10.244.6.0/24', nodeIp: '192.168.0.6', flags: 1 },
    ];
    expect(tunnelDiff(want, cur)).toEqual({ put: [want[1], want[2], want[3]], remove: ['10.244.4.0/24'] });
    expect(tunnelDiff(want, want)).toEqual({ put: [], remove: [] });
  });

  it('generated: applied to the map, it leaves exactly the desired entries', () => {
    for (let seed = 1; seed <= 300; seed++) {
      const r = new Rng(seed);
      const entry = (): TunnelEntry => ({ cidr: `10.244.${r.int(12)}.0/24`, nodeIp: `192.168.0.${r.int(4) + 1}`, flags: r.int(2) });
      const uniq = (xs: TunnelEntry[]) => [...new Map(xs.map((e) => [e.cidr, e])).values()];
      const cur = uniq(Array.from({ length: r.int(10) }, entry));
      const want = uniq(Array.from({ length: r.int(10) }, entry));
      const map = new Map(cur.map((e) => [e.cidr, e]));
      const d = tunnelDiff(want, cur);
      applyTunnel(map, d);
      expect([...map.values()].sort((a, b) => a.cidr.localeCompare(b.cidr)), `seed ${seed}`).toEqual([...want].sort((a, b) => a.cidr.localeCompare(b.cidr)));
      // Nothing already right is rewritten.
      for (const p of d.put) expect(cur.some((c) => c.cidr === p.cidr && c.nodeIp === p.nodeIp && c.flags === p.flags), `seed ${seed}`).toBe(false);
    }
  });
});

describe('routesDiff', () => {
  const kelp = (dst: string, dev: number, gw?: string, metric?: number): RouteEntry => ({ family: 4, dst, dev, scope: gw ? 0 : 253, table: 254, protocol: RTPROT_KELP_NODE, type: 1, onlink: false, ...(gw ? { gw } : {}), ...(metric !== undefined ? { metric } : {}) });

  it("replaces kelp's own routes in place, removes stale ones, never touches another's", () => {
    const current: RouteEntry[] = [
      kelp('10.244.2.0/24', 7),
      kelp('10.244.3.0/24', 2, '192.168.0.3'), // native → VXLAN: replaced in place
      kelp('10.244.9.0/24', 7), // node gone
      { ...kelp('10.244.4.0/24', 3, '192.168.0.254'), protocol: 4 }, // someone's static route
      { ...kelp('10.244.8.0/24', 3), protocol: 2 }, // a kernel route, not desired: not ours to remove
    ];
    const want: RouteSpec[] = ['10.244.2.0/24', '10.244.3.0/24', '10.244.4.0/24'].map((dst) => ({ dst, dev: 7, scope: 'link', protocol: RTPROT_KELP_NODE }));
    const d = routesDiff(want, current);
    expect(d.replace.map((r) => r.dst)).toEqual(['10.244.3.0/24']);
    expect(d.remove.map((r) => r.dst)).toEqual(['10.244.9.0/24']);
    expect(d.conflicts.map((c) => [c.want.dst, c.theirs.protocol])).toEqual([['10.244.4.0/24', 4]]);
  });

  it('generated: applied to a route table, kelp routes are exactly the desired ones; others unchanged', () => {
    for (let seed = 1; seed <= 400; seed++) {
      const r = new Rng(seed);
      const dst = () => `10.244.${r.int(10)}.0/24`;
      const table = new RouteTable();
      const start: RouteEntry[] = [];
      for (let i = r.int(12); i > 0; i--) {
        const foreign = r.chance(0.25);
        const e = kelp(dst(), r.pick([2, 7]), r.chance(0.5) ? `192.168.0.${r.int(3) + 1}` : undefined, r.chance(0.15) ? 100 : undefined);
        if (foreign) e.protocol = r.pick([2, 3, 4, 186]);
        if (!start.some((x) => x.dst === e.dst && (x.metric ?? 0) === (e.metric ?? 0))) start.push(e);
      }
      table.routes = start.map((e) => ({ ...e }));
      const mode = r.pick(['vxlan', 'native'] as const);
      const remote = [...new Set(Array.from({ length: r.int(8) }, dst))].map((c, i) => ({ name: `n${i}`, address: `192.168.0.${r.int(3) + 1}`, podCidrs: [c] }));
      const want = desiredRoutes(remote, { mode, vxlanIfindex: 7, uplinkIfindex: 2 });
      const d = routesDiff(want, table.routes);
      for (const x of d.replace) table.replace(x);
      for (const x of d.remove) table.delete(x);
      const foreign = (rs: RouteEntry[]) => rs.filter((x) => x.protocol !== RTPROT_KELP_NODE).map(routeKey).sort();
      expect(foreign(table.routes), `seed ${seed}`).toEqual(foreign(start));
      const conflicted = new Set(d.conflicts.map((c) => c.want.dst));
      for (const c of conflicted) expect(start.some((x) => x.protocol !== RTPROT_KELP_NODE && x.dst === c && (x.metric ?? 0) === 0), `seed ${seed}`).toBe(true);
      const ours = table.routes.filter((x) => x.protocol === RTPROT_KELP_NODE);
      expect(ours.every((x) => (x.metric ?? 0) === 0), `seed ${seed}`).toBe(true);
      expect(ours.map(routeKey).sort(), `seed ${seed}`).toEqual(want.filter((w) => !conflicted.has(w.dst)).map(routeKey).sort());
      // A second diff finds nothing to do: the reconciler settles.
      const again = routesDiff(want, table.routes);
      expect([again.replace.length, again.remove.length], `seed ${seed}`).toEqual([0, 0]);
    }
  });
});
