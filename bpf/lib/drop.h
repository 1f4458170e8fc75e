/*
 * Drop reasons: negative, so that a metrics key's reason 0 means "forwarded". A C enum, so they
 * appear in the object's BTF where a test checks src/datapath/drop.ts against them. Append only:
 * the numbers are stored in kelp_metrics keys and read by the agent.
 */
#ifndef KELP_DROP_H
#define KELP_DROP_H

#include "common.h"
#include "metrics.h"
#include "events.h"

enum kelp_drop_reason {
	DROP_RUNT		= -1,	/* frame ends inside the Ethernet, IPv4 base or ARP header */
	DROP_IPV4_VERSION	= -2,	/* EtherType IPv4 but version field is not 4 */
	DROP_IPV4_IHL		= -3,	/* IHL below 5 */
	DROP_IPV4_TOT_LEN	= -4,	/* total length below the header length or beyond the frame */
	DROP_L4_TRUNCATED	= -5,	/* TCP/UDP/SCTP/ICMP header cut short (unfragmented or first fragment) */
	DROP_SRC_UNKNOWN	= -6,	/* source IP is not an endpoint */
	DROP_SRC_MAC		= -7,	/* source MAC is not the endpoint's */
	DROP_SRC_IFACE		= -8,	/* source IP belongs to an endpoint behind another interface */
	DROP_TTL_EXCEEDED	= -9,	/* TTL would reach 0 on the hop through the node */
	DROP_VLAN		= -10,	/* from a pod, a VLAN tag: in the frame or in skb->vlan_* */
	DROP_IPV6		= -11,	/* IPv6 from a pod: kelp gives pods no IPv6 address */
	DROP_ETHERTYPE		= -12,	/* from a pod, an EtherType other than IPv4 and ARP */
	DROP_ARP_MALFORMED	= -13,	/* from a pod, ARP not an IPv4-over-Ethernet request or reply (or a reply from 0.0.0.0) */
	DROP_ARP_SPOOF		= -14,	/* from a pod, ARP naming a sender IP or MAC that is not the pod's */

	/* Masquerade (host.c). A range of its own since they first shipped there; the numbers stay. */
	DROP_NAT_NO_PORT	= -200,	/* every probed NAT port for this remote was taken */
	DROP_NAT_MAP_FULL	= -201,	/* kelp_snat4 refused an insert */
	DROP_CT_MAP_FULL	= -202,	/* kelp_ct4 refused an insert */
	DROP_NAT_UNSUPP_PROTO	= -203,	/* needs masquerade but is not TCP, UDP, ICMP echo or ICMP error */
	DROP_NAT_FRAG		= -204,	/* an IPv4 fragment that needs masquerade */
	DROP_NAT_NO_MAPPING	= -205,	/* ICMP error from a pod about a flow that has no mapping */
	DROP_NAT_INVALID	= -206,	/* a packet needing masquerade that cannot be parsed */
	DROP_NAT_REWRITE	= -207,	/* a store or checksum helper failed mid-rewrite */

	/* Policy (bpf/lib/policy.h). The event names the policy and rule that decided. */
	DROP_POLICY_DENY	= -300,	/* a policy entry for this endpoint, direction and peer denies it */
	DROP_POLICY_NOT_READY	= -301,	/* no entry, not even the endpoint's catch-all: not programmed yet */
	DROP_POLICY_CT_FULL	= -302,	/* kelp_pct4 refused the entry of an allowed new flow */
	DROP_FRAG_NO_FLOW	= -303,	/* a non-first IPv4 fragment whose first fragment was not seen */
	DROP_FRAG_MAP_FULL	= -304,	/* kelp_frag4 refused the ports of a first fragment */

	/* Services (bpf/lib/lb.h). */
	DROP_LB_NO_BACKEND	= -400,	/* a service without a usable backend: the client got a TCP RST or ICMP port unreachable */
	DROP_LB_NO_LOCAL	= -401,	/* externalTrafficPolicy Local, no backend on this node: dropped silently */
	DROP_LB_SOURCE_RANGE	= -402,	/* the client is outside the service's loadBalancerSourceRanges */
	DROP_LB_CT_FULL		= -403,	/* kelp_lb4_ct refused the entry of a new flow */
	DROP_LB_REWRITE		= -404,	/* a store or checksum helper failed mid-translation */
	DROP_LB_FRAG		= -405,	/* an IPv4 fragment to a service address: no ports to balance by */
	DROP_LB_SCTP_PORT	= -406,	/* SCTP to a backend on another port: its CRC32c is not rewritten */

	/* Cross-node routing (bpf/lib/tunnel.h, bpf/overlay.c). */
	DROP_NO_TUNNEL		= -500,	/* onto the VXLAN device without a kelp_tunnel4 entry, or no device configured */
	DROP_TUNNEL_SPOOF	= -501,	/* through the tunnel with an inner source its sender does not hold */
};

/*
 * The single way kelp programs drop: counted in kelp_metrics, reported on kelp_events, TC_ACT_SHOT.
 * `ep_id` 0 when the packet cannot be attributed to an endpoint (the event carries the ifindex).
 * A BPF-to-BPF call rather than inlined: drops are the slow path, and a dozen inlined copies of the
 * map and ring buffer code would crowd the forwarding path out of the instruction cache.
 */
static __attribute__((noinline)) int drop_packet(struct __sk_buff *skb, const struct pkt4 *pkt,
				       enum kelp_dir dir, __u32 ep_id, enum kelp_drop_reason reason)
{
	metrics_update(ep_id, dir, reason, skb->len);
	event_emit(skb, pkt, KELP_EVENT_DROP, dir, reason, ep_id, 0, KELP_TRACE_NONE, NULL);
	return TC_ACT_SHOT;
}

#endif /* KELP_DROP_H */
