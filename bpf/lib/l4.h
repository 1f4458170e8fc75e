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
	case IPPROTO_SCTP:
		return 12;	/* common header: ports, verification tag, checksum */
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

/* TCP header flag bits (byte 13), as kept in ct4_entry.{tx,rx}_flags and pct4_entry.{tx,rx}_flags. */
enum ct_tcp_flag {
	CT_TCP_FIN	= 0x01,
	CT_TCP_SYN	= 0x02,
	CT_TCP_RST	= 0x04,
	CT_TCP_ACK	= 0x10,
};

/* The flag byte (13) of the TCP header of a packet ipv4_parse() accepted (it made the whole TCP
 * header linear). Returns 0, or -1 when it is not there. */
static __always_inline int l4_tcp_flags(const struct __sk_buff *skb, __u32 l4_off, __u8 *flags)
{
	__u8 *p = ctx_data(skb) + l4_off + 13;

	if ((void *)(p + 1) > ctx_data_end(skb))
		return -1;
	*flags = *p;
	return 0;
}

#endif /* KELP_L4_H */
