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
} as const;

export type DropReasonName = keyof typeof DropReason;
export type DropReasonCode = (typeof DropReason)[DropReasonName];

const DESCRIPTIONS: Record<DropReasonName, string> = {
  RUNT: 'frame ends inside the Ethernet, IPv4 or ARP header',
  IPV4_VERSION: 'IPv4 EtherType with an IP version other than 4',
  IPV4_IHL: 'IPv4 header length below 20 bytes',
  IPV4_TOT_LEN: 'IPv4 total length below the header length or beyond the frame',
  L4_TRUNCATED: 'TCP, UDP or ICMP header cut short',
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
};

const BY_CODE = new Map<number, DropReasonName>(
  (Object.keys(DropReason) as DropReasonName[]).map((name) => [DropReason[name], name]),
);

/** `SRC_MAC` for -7; `UNKNOWN(-42)` for a code this build does not know (a newer datapath). */
export function dropReasonName(code: number): string {
  return BY_CODE.get(code) ?? `UNKNOWN(${code})`;
}

export function dropReasonText(code: number): string {
  const name = BY_CODE.get(code);
  return name ? DESCRIPTIONS[name] : `unknown drop reason ${code}`;
}
