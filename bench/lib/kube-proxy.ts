// An iptables ruleset shaped like the one kube-proxy (iptables mode) keeps on a node, for the
// "bridge + kube-proxy" reference of the pod ↔ pod figures: the same chains and hooks, the
// conntrack state matches on FORWARD, one KUBE-SERVICES rule per service port with a
// KUBE-SVC chain (masquerade mark, random endpoint choice) and KUBE-SEP chains (DNAT), the
// KUBE-POSTROUTING MASQUERADE. Service and endpoint addresses are made up and never contacted:
// the benchmark's pods talk to each other directly, so every service rule is a miss, as for
// pod ↔ pod traffic on a real node.
import { createHash } from 'node:crypto';
import { sh } from '../../src/sandbox';

export interface KubeProxyShape {
  /** Service ports with endpoints (nat KUBE-SERVICES rules). */
  services: number;
  endpointsPerService: number;
  /** Service ports without endpoints (filter KUBE-SERVICES REJECT rules). */
  servicesWithoutEndpoints: number;
  /** The node's pod CIDR (the KUBE-SVC masquerade rule excludes it). */
  podCidr: string;
  /** The service ports, in KUBE-SERVICES order; default: `services` made-up ones (port 80 → 8080). */
  ports?: ServicePort[];
}

/** One service port as kube-proxy programs it. */
export interface ServicePort {
  /** `namespace/name:port-name`, as kube-proxy's comments and chain names have it. */
  name: string;
  vip: string;
  port: number;
  targetPort: number;
  endpoints: string[];
}

function defaultPorts(shape: KubeProxyShape): ServicePort[] {
  return Array.from({ length: shape.services }, (_, i) => ({
    name: `bench/svc-${i}:http`,
    vip: clusterIp(i),
    port: 80,
    targetPort: 8080,
    endpoints: Array.from({ length: shape.endpointsPerService }, (_, j) => endpointIp(i, j)),
  }));
}

export const DEFAULT_KUBE_PROXY_SHAPE: Omit<KubeProxyShape, 'podCidr'> = { services: 60, endpointsPerService: 2, servicesWithoutEndpoints: 10 };

/** kube-proxy names chains by a hash of what they serve; this mimics the look, not the hash. */
function chain(prefix: string, key: string): string {
  return `${prefix}-${createHash('sha256').update(key).digest('base64').replace(/[^A-Z2-7]/gi, '').toUpperCase().slice(0, 16)}`;
}

/** Cluster IPs from 10.96.0.0/12, endpoints from other nodes' pod CIDRs (10.200.0.0/16). */
function clusterIp(i: number): string {
  return `10.96.${(i >> 8) & 255}.${(i & 255) + 10}`;
}

function endpointIp(i: number, j: number): string {
  return `10.200.${i & 255}.${j + 2}`;
}

const MARK = '0x4000/0x4000';

/** A service port's KUBE-SERVICES rule, and its KUBE-SVC and KUBE-SEP chains with their rules (nat table). */
function iptablesService(svc: ServicePort, podCidr: string): { entry: string; chains: string[]; rules: string[] } {
  const svcChain = chain('KUBE-SVC', svc.name);
  const entry = `-A KUBE-SERVICES -d ${svc.vip}/32 -p tcp -m comment --comment "${svc.name} cluster IP" -m tcp --dport ${svc.port} -j ${svcChain}`;
  const chains = [svcChain];
  const rules = [`-A ${svcChain} ! -s ${podCidr} -d ${svc.vip}/32 -p tcp -m comment --comment "${svc.name} cluster IP" -m tcp --dport ${svc.port} -j KUBE-MARK-MASQ`];
  const n = svc.endpoints.length;
  svc.endpoints.forEach((ep, j) => {
    const sepChain = chain('KUBE-SEP', `${svc.name}/${ep}`);
    chains.push(sepChain);
    const pick = j < n - 1 ? ` -m statistic --mode random --probability ${(1 / (n - j)).toFixed(10)}` : '';
    rules.push(`-A ${svcChain} -m comment --comment "${svc.name} -> ${ep}:${svc.targetPort}"${pick} -j ${sepChain}`);
    rules.push(`-A ${sepChain} -s ${ep}/32 -m comment --comment "${svc.name}" -j KUBE-MARK-MASQ`);
    rules.push(`-A ${sepChain} -p tcp -m comment --comment "${svc.name}" -m tcp -j DNAT --to-destination ${ep}:${svc.targetPort}`);
  });
  return { entry, chains, rules };
}

/** The ruleset in iptables-save format, and its rule count. */
export function kubeProxyRules(shape: KubeProxyShape): { text: string; rules: number } {
  const filter = [
    '*filter',
    ':INPUT ACCEPT [0:0]',
    ':FORWARD ACCEPT [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    ...['KUBE-EXTERNAL-SERVICES', 'KUBE-FIREWALL', 'KUBE-FORWARD', 'KUBE-KUBELET-CANARY', 'KUBE-NODEPORTS', 'KUBE-PROXY-CANARY', 'KUBE-PROXY-FIREWALL', 'KUBE-SERVICES'].map(
      (c) => `:${c} - [0:0]`,
    ),
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
    '-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    '-A INPUT -j KUBE-FIREWALL',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES',
    '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL',
    '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -j KUBE-FIREWALL',
    '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
    '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
    `-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark ${MARK} -j ACCEPT`,
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
  ];
  for (let i = 0; i < shape.servicesWithoutEndpoints; i++) {
    const svc = `bench/idle-${i}:http`;
    filter.push(`-A KUBE-SERVICES -d ${clusterIp(shape.services + i)}/32 -p tcp -m comment --comment "${svc} has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable`);
  }
  filter.push('COMMIT');

  const chains: string[] = ['KUBE-MARK-MASQ', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-SERVICES'];
  const rules = [
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    `-A KUBE-MARK-MASQ -j MARK --set-xmark ${MARK}`,
    `-A KUBE-POSTROUTING -m mark ! --mark ${MARK} -j RETURN`,
    '-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0',
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
  ];
  for (const svc of shape.ports ?? defaultPorts(shape)) {
    const s = iptablesService(svc, shape.podCidr);
    chains.push(...s.chains);
    rules.push(s.entry);
    rules.push(...s.rules);
  }
  rules.push('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS');
  const nat = ['*nat', ':PREROUTING ACCEPT [0:0]', ':INPUT ACCEPT [0:0]', ':OUTPUT ACCEPT [0:0]', ':POSTROUTING ACCEPT [0:0]', ...chains.map((c) => `:${c} - [0:0]`), ...rules, 'COMMIT'];

  const all = [...filter, ...nat];
  return { text: `${all.join('\n')}\n`, rules: all.filter((l) => l.startsWith('-A ')).length };
}

/**
 * Loads the ruleset into a namespace with `iptables-restore --noflush`, so rules a CNI plugin
 * already put there (the bridge plugin's masquerade chains) stay. Uses the machine's default
 * iptables (nft on Debian 12), as kube-proxy would.
 */
export function loadKubeProxyRules(netns: string, shape: KubeProxyShape): number {
  const { text, rules } = kubeProxyRules(shape);
  sh('ip', ['netns', 'exec', netns, 'iptables-restore', '--noflush'], { input: text });
  return rules;
}

/**
 * What kube-proxy's iptables mode (1.28+, partial syncs) restores with `--noflush` when one service
 * port changed: the filter table's KUBE chains and the nat table's top-level chains (KUBE-SERVICES
 * with a rule per service port among them) written in full, as every sync writes them; of the
 * per-service chains only the changed port's; chains the change left stale declared (flushed)
 * and deleted. `shape.ports` holds the ports after the change.
 */
export function kubeProxyChangeRules(shape: KubeProxyShape, before: ServicePort, after: ServicePort): string {
  const now = iptablesService(after, shape.podCidr).chains;
  const nat = new Set(['KUBE-MARK-MASQ', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-SERVICES', ...now]);
  const stale = iptablesService(before, shape.podCidr).chains.filter((c) => !nat.has(c));
  const out: string[] = [];
  let table = '';
  for (const line of kubeProxyRules(shape).text.split('\n')) {
    if (line.startsWith('*')) {
      table = line.slice(1);
      out.push(line);
      continue;
    }
    const name = line.startsWith(':') ? line.slice(1).split(' ')[0] : line.startsWith('-A ') ? line.split(' ')[1] : undefined;
    if (line === 'COMMIT') {
      if (table === 'nat') out.push(...stale.map((c) => `-X ${c}`));
      out.push(line);
    } else if (name && (table === 'filter' ? name.startsWith('KUBE-') : nat.has(name))) {
      out.push(line);
      // Declaring a stale chain flushes it, so nothing it holds stops its deletion below.
      if (table === 'nat' && line === ':KUBE-SERVICES - [0:0]') out.push(...stale.map((c) => `:${c} - [0:0]`));
    }
  }
  return `${out.join('\n')}\n`;
}

/** kube-proxy's nftables chain names: `<kind>-<hash>-<namespace>/<name>/tcp/<port name>[__<ip>/<port>]`. */
function nftChain(kind: 'service' | 'endpoint', svc: ServicePort, ep?: string): string {
  const [nsName, portName] = svc.name.split(':');
  const base = `${nsName}/tcp/${portName}${ep ? `__${ep}/${svc.targetPort}` : ''}`;
  return `${kind}-${createHash('sha256').update(base).digest('base64').replace(/[^A-Z2-7]/gi, '').toUpperCase().slice(0, 8)}-${base}`;
}

/** The commands that (re)write one service port's chains; `fresh` leaves out the flushes of a first sync. */
function nftService(svc: ServicePort, podCidr: string, fresh: boolean): string[] {
  const T = 'ip kube-proxy';
  const out: string[] = [];
  const targets = svc.endpoints.map((ep) => nftChain('endpoint', svc, ep));
  svc.endpoints.forEach((ep, j) => {
    out.push(`add chain ${T} ${targets[j]}`);
    if (!fresh) out.push(`flush chain ${T} ${targets[j]}`);
    out.push(`add rule ${T} ${targets[j]} ip saddr ${ep} jump mark-for-masquerade`);
    out.push(`add rule ${T} ${targets[j]} meta l4proto tcp dnat to ${ep}:${svc.targetPort}`);
  });
  const chain = nftChain('service', svc);
  out.push(`add chain ${T} ${chain}`);
  if (!fresh) out.push(`flush chain ${T} ${chain}`);
  out.push(`add rule ${T} ${chain} ip daddr ${svc.vip} tcp dport ${svc.port} ip saddr != ${podCidr} jump mark-for-masquerade`);
  out.push(`add rule ${T} ${chain} numgen random mod ${targets.length} vmap { ${targets.map((t, j) => `${j} : goto ${t}`).join(' , ')} }`);
  return out;
}

/**
 * The `table ip kube-proxy` that kube-proxy's nftables mode (1.31+) writes in its first sync, as
 * one `nft -f` transaction: base chains at its hooks and priorities, the service-ips verdict map
 * (one lookup whatever the number of services), a chain per service port choosing an endpoint
 * with `numgen random mod N vmap`, a chain per endpoint with its DNAT. Returns the text and its
 * rule count.
 */
export function kubeProxyNftables(ports: ServicePort[], podCidr: string, serviceCidr: string): { text: string; rules: number } {
  const T = 'ip kube-proxy';
  const base: Array<[string, string, string[]]> = [
    ['filter-prerouting', 'type filter hook prerouting priority -110', ['ct state new jump firewall-check']],
    ['filter-input', 'type filter hook input priority -110', ['ct state new jump nodeport-endpoints-check', 'ct state new jump service-endpoints-check']],
    ['filter-forward', 'type filter hook forward priority -110', ['ct state new jump service-endpoints-check', 'ct state new jump cluster-ips-check']],
    ['filter-output', 'type filter hook output priority -110', ['ct state new jump service-endpoints-check', 'ct state new jump firewall-check']],
    ['filter-output-post-dnat', 'type filter hook output priority -90', ['ct state new jump cluster-ips-check']],
    ['nat-prerouting', 'type nat hook prerouting priority -100', ['jump services']],
    ['nat-output', 'type nat hook output priority -100', ['jump services']],
    ['nat-postrouting', 'type nat hook postrouting priority 100', ['jump masquerading']],
  ];
  const regular: Array<[string, string[]]> = [
    ['mark-for-masquerade', ['mark set mark or 0x4000']],
    ['masquerading', ['mark and 0x4000 == 0 return', 'mark set mark xor 0x4000', 'masquerade fully-random']],
    ['services', ['ip daddr . meta l4proto . th dport vmap @service-ips', 'fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports']],
    ['service-endpoints-check', ['ip daddr . meta l4proto . th dport vmap @no-endpoint-services']],
    ['nodeport-endpoints-check', ['fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports']],
    ['firewall-check', ['ip daddr . meta l4proto . th dport vmap @firewall-ips']],
    ['cluster-ips-check', ['ip daddr @cluster-ips reject', `ip daddr { ${serviceCidr} } drop`]],
  ];
  const out = [`add table ${T} { comment "rules for kube-proxy" ; }`];
  out.push(`add set ${T} cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }`);
  out.push(`add set ${T} nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }`);
  for (const m of ['service-ips', 'no-endpoint-services', 'firewall-ips']) out.push(`add map ${T} ${m} { type ipv4_addr . inet_proto . inet_service : verdict ; }`);
  for (const m of ['service-nodeports', 'no-endpoint-nodeports']) out.push(`add map ${T} ${m} { type inet_proto . inet_service : verdict ; }`);
  // Regular chains first: the base chains jump to them.
  for (const [name] of regular) out.push(`add chain ${T} ${name}`);
  for (const [name, rules] of regular) for (const r of rules) out.push(`add rule ${T} ${name} ${r}`);
  for (const svc of ports) out.push(...nftService(svc, podCidr, true));
  for (const svc of ports) {
    out.push(`add element ${T} cluster-ips { ${svc.vip} }`);
    out.push(`add element ${T} service-ips { ${svc.vip} . tcp . ${svc.port} : goto ${nftChain('service', svc)} }`);
  }
  for (const [name, hook, rules] of base) {
    out.push(`add chain ${T} ${name} { ${hook} ; }`);
    for (const r of rules) out.push(`add rule ${T} ${name} ${r}`);
  }
  return { text: `${out.join('\n')}\n`, rules: out.filter((l) => l.startsWith('add rule ')).length };
}

/**
 * kube-proxy's nftables transaction for one changed service port: its chains flushed and
 * rewritten, a new endpoint's chain added, the chains of endpoints that left flushed and deleted.
 */
export function kubeProxyNftablesChange(before: ServicePort, after: ServicePort, podCidr: string): string {
  const T = 'ip kube-proxy';
  const kept = new Set(after.endpoints);
  const gone = before.endpoints.filter((ep) => !kept.has(ep)).map((ep) => nftChain('endpoint', before, ep));
  const out = nftService(after, podCidr, false);
  for (const c of gone) out.push(`flush chain ${T} ${c}`, `delete chain ${T} ${c}`);
  return `${out.join('\n')}\n`;
}
