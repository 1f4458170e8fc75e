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

/** The ruleset in iptables-save format, and its rule count. */
export function kubeProxyRules(shape: KubeProxyShape): { text: string; rules: number } {
  const MARK = '0x4000/0x4000';
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
  for (let i = 0; i < shape.services; i++) {
    const svc = `bench/svc-${i}:http`;
    const ip = clusterIp(i);
    const svcChain = chain('KUBE-SVC', svc);
    chains.push(svcChain);
    rules.push(`-A KUBE-SERVICES -d ${ip}/32 -p tcp -m comment --comment "${svc} cluster IP" -m tcp --dport 80 -j ${svcChain}`);
    rules.push(`-A ${svcChain} ! -s ${shape.podCidr} -d ${ip}/32 -p tcp -m comment --comment "${svc} cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ`);
    const n = shape.endpointsPerService;
    for (let j = 0; j < n; j++) {
      const ep = endpointIp(i, j);
      const sepChain = chain('KUBE-SEP', `${svc}/${ep}`);
      chains.push(sepChain);
      const pick = j < n - 1 ? ` -m statistic --mode random --probability ${(1 / (n - j)).toFixed(10)}` : '';
      rules.push(`-A ${svcChain} -m comment --comment "${svc} -> ${ep}:8080"${pick} -j ${sepChain}`);
      rules.push(`-A ${sepChain} -s ${ep}/32 -m comment --comment "${svc}" -j KUBE-MARK-MASQ`);
      rules.push(`-A ${sepChain} -p tcp -m comment --comment "${svc}" -m tcp -j DNAT --to-destination ${ep}:8080`);
    }
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
