// Drop reasons of the BPF programs: `enum kelp_drop_reason` in bpf/lib/drop.h, mirrored by name
// (without the DROP_ prefix) and value. test/unit/btf-layout.test.ts compares this table with the
// enum in the BTF of every kelp object.

export const DropReason = {
  RUNT: -1,
  IPV4_VERSION: -2,
  IPV4_IHL: -3,
  IPV4_TOT_LEN: -4,
  L4_TRUNCATED: -5,
  SRC_UNKNOWN: -6,
  SRC_MAC: -7,
  SRC_IFACE: -8,
  TTL_EXCEEDED: -9,
  VLAN: -10,
  IPV6: -11,
  ETHERTYPE: -12,
  ARP_MALFORMED: -13,
  ARP_SPOOF: -14,
  // Masquerade (bpf/host.c): a range of their own, as first shipped.
  NAT_NO_PORT: -200,
  NAT_MAP_FULL: -201,
  CT_MAP_FULL: -202,
  NAT_UNSUPP_PROTO: -203,
  NAT_FRAG: -204,
  NAT_NO_MAPPING: -205,
  NAT_INVALID: -206,
  NAT_REWRITE: -207,
  // Policy (bpf/lib/policy.h): events of these carry the deciding policy and rule.
  POLICY_DENY: -300,
  POLICY_NOT_READY: -301,
  POLICY_CT_FULL: -302,
  FRAG_NO_FLOW: -303,
  FRAG_MAP_FULL: -304,
  // Services (bpf/lib/lb.h).
  LB_NO_BACKEND: -400,
  LB_NO_LOCAL: -401,
  LB_SOURCE_RANGE: -402,
  LB_CT_FULL: -403,
  LB_REWRITE: -404,
  LB_FRAG: -405,
  LB_SCTP_PORT: -406,
  // Cross-node routing (bpf/lib/tunnel.h, bpf/overlay.c).
  NO_TUNNEL: -500,
  TUNNEL_SPOOF: -501,
} as const;

/**
 * Counter reasons that are not drops (`enum kelp_metrics_reason`, bpf/lib/metrics.h): 0 is
 * forwarded traffic, positive codes passed but are counted apart.
 */
export const MetricsReason = { FORWARDED: 0, POLICY_AUDIT: 1 } as const;

/** How `kelp get counters` names a counter's reason. */
const METRICS_REASON_NAMES: Record<number, string> = {
  [MetricsReason.FORWARDED]: 'forwarded',
  [MetricsReason.POLICY_AUDIT]: 'audit (would drop)',
};

export type DropReasonName = keyof typeof DropReason;
export type DropReasonCode = (typeof DropReason)[DropReasonName];

const DESCRIPTIONS: Record<DropReasonName, string> = {
  RUNT: 'frame ends inside the Ethernet, IPv4 or ARP header',
  IPV4_VERSION: 'IPv4 EtherType with an IP version other than 4',
  IPV4_IHL: 'IPv4 header length below 20 bytes',
  IPV4_TOT_LEN: 'IPv4 total length below the header length or beyond the frame',
  L4_TRUNCATED: 'TCP, UDP, SCTP or ICMP header cut short',
  SRC_UNKNOWN: 'source IP is not a local endpoint',
  SRC_MAC: "source MAC is not the endpoint's",
  SRC_IFACE: 'source IP belongs to an endpoint behind another interface',
  TTL_EXCEEDED: 'TTL expired on the hop through the node',
  VLAN: 'VLAN-tagged frame from a pod (tag in the frame or already taken off by the kernel)',
  IPV6: 'IPv6 from a pod: kelp gives pods no IPv6 address',
  ETHERTYPE: 'EtherType other than IPv4 and ARP from a pod',
  ARP_MALFORMED: 'ARP from a pod that is not an IPv4-over-Ethernet request or reply (hardware or protocol type, address lengths, opcode), or a reply from 0.0.0.0',
  ARP_SPOOF: "ARP from a pod whose sender IP (or probed address) or MAC is not the pod's",
  NAT_NO_PORT: 'no free NAT port for this remote address and port',
  NAT_MAP_FULL: 'the NAT map refused a new mapping',
  CT_MAP_FULL: 'the conntrack map refused a new flow',
  NAT_UNSUPP_PROTO: 'needs masquerade but is not TCP, UDP, ICMP echo or an ICMP error',
  NAT_FRAG: 'an IPv4 fragment that needs masquerade',
  NAT_NO_MAPPING: 'ICMP error from a pod about a flow with no NAT mapping',
  NAT_INVALID: 'a packet that needs masquerade cannot be parsed',
  NAT_REWRITE: 'rewriting the packet for NAT failed',
  POLICY_DENY: 'denied by policy (the event names the policy and rule; rule 65535: isolated, no rule allowed it)',
  POLICY_NOT_READY: "the endpoint's policy is not programmed yet (no entry for it, not even its catch-all): fail closed",
  POLICY_CT_FULL: 'the policy conntrack map refused the entry of an allowed new flow',
  FRAG_NO_FLOW: 'a non-first IPv4 fragment whose first fragment (with the ports policy decides on) was not seen',
  FRAG_MAP_FULL: 'the fragment map refused the ports of a first fragment',
  LB_NO_BACKEND: 'a service with no usable backend: the client was answered with a TCP RST or ICMP port unreachable',
  LB_NO_LOCAL: 'externalTrafficPolicy Local and no backend on this node: dropped, as kube-proxy does',
  LB_SOURCE_RANGE: "the client is outside the service's loadBalancerSourceRanges",
  LB_CT_FULL: 'the service conntrack map refused the entry of a new flow',
  LB_REWRITE: 'rewriting the packet for a service (DNAT, reverse NAT, hairpin, reject) failed',
  LB_FRAG: 'an IPv4 fragment to a service address: kelp keeps no fragment state to balance it by its ports',
  LB_SCTP_PORT: 'SCTP to a backend on another port: kelp does not rewrite the CRC32c a port change needs',
  NO_TUNNEL: 'to another node through the VXLAN device, but kelp_tunnel4 has no entry for the destination or no VXLAN device is configured',
  TUNNEL_SPOOF: "from another node through the tunnel with an inner source that node does not hold (another node's pod or address, or one of this node's own pods)",
};

const BY_CODE = new Map<number, DropReasonName>(
  (Object.keys(DropReason) as DropReasonName[]).map((name) => [DropReason[name], name]),
);

/**
 * `SRC_MAC` for -7; `UNKNOWN(-42)` for a code this build does not know (a newer datapath). A
 * counter's non-drop reasons (0 and positive, MetricsReason) get their counter names, so that
 * every reader of kelp_metrics shows an audit as "audit (would drop)", not as a drop.
 */
export function dropReasonName(code: number): string {
  return BY_CODE.get(code) ?? METRICS_REASON_NAMES[code] ?? `UNKNOWN(${code})`;
}

/** Drops decided by policy (bpf/lib/policy.h): their events carry the deciding policy and rule. */
export function isPolicyDropReason(code: number): boolean {
  return code <= DropReason.POLICY_DENY && code >= DropReason.FRAG_MAP_FULL;
}

/** Whether a counter of this reason counts dropped packets. */
export function isDropReason(code: number): boolean {
  return code < 0;
}

export function dropReasonText(code: number): string {
  const name = BY_CODE.get(code);
  if (name) return DESCRIPTIONS[name];
  if (code === MetricsReason.POLICY_AUDIT) return 'passed, but an audit-only policy would have dropped it';
  if (code === MetricsReason.FORWARDED) return 'forwarded';
  return `unknown drop reason ${code}`;
}
