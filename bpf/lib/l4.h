#ifndef KELP_L4_H
#define KELP_L4_H

#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include "common.h"

/* Smallest header kelp accepts per protocol (what policy, conntrack and NAT read: ports, TCP
 * flags, ICMP identifier); 0 for protocols whose header it does not look into. */
static __always_inline __u32 l4_hdr_len(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return sizeof(struct tcphdr);
	case IPPROTO_UDP:
		return sizeof(struct udphdr);
	case IPPROTO_ICMP:
		return 8;
	default:
		return 0;
	}
}

/* `l4` points at no fewer than 8 readable bytes of a header l4_hdr_len() knows. */
static __always_inline void l4_load_ports(const void *l4, __u8 proto, struct pkt4 *pkt)
{
	const __be16 *w = l4;

	pkt->sport = w[0];
	pkt->dport = proto == IPPROTO_ICMP ? w[2] : w[1];
}

#endif /* KELP_L4_H */
