/* ICMPv4 headers, and the packet an ICMP error quotes: read by masquerade (nat.h) to translate
 * errors about its flows and by policy (policy.h) to let errors about allowed flows through. */
#ifndef KELP_ICMP_H
#define KELP_ICMP_H

#include <linux/in.h>
#include <linux/ip.h>
#include "common.h"
#include "tuple.h"

/* From <linux/icmp.h>, which drags in libc's socket headers (absent for the BPF target). */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

struct icmp4_hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;	/* echo; other types use these 4 bytes differently */
	__be16 seq;
};

static __always_inline __u8 icmp4_type(const struct pkt4 *pkt)
{
	/* ipv4_parse leaves ICMP type and code in sport, as on the wire. */
	return ((const __u8 *)&pkt->sport)[0];
}

/* The packet an ICMP error quotes: its IP header and the first 8 bytes after it. */
struct icmp4_quote {
	__u32 ip_off;
	__u32 l4_off;
	struct tuple4 tuple; /* as quoted: the packet the error is about */
};

static __always_inline int icmp4_is_error(__u8 type)
{
	return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED || type == ICMP_PARAMETERPROB;
}

/* Reads the quoted packet of the ICMP error at l4_off. Returns 0, or -1 when it is truncated
 * or not something we translate (a quoted ICMP must be an echo request or reply). */
static __always_inline int icmp4_quote_load(struct __sk_buff *skb, __u32 l4_off, struct icmp4_quote *q)
{
	struct iphdr ip;
	__u8 l4[8];

	q->ip_off = l4_off + sizeof(struct icmp4_hdr);
	if (bpf_skb_load_bytes(skb, q->ip_off, &ip, sizeof(ip)))
		return -1;
	if (ip.version != 4 || ip.ihl < 5)
		return -1;
	q->l4_off = q->ip_off + ip.ihl * 4;
	if (bpf_skb_load_bytes(skb, q->l4_off, l4, sizeof(l4)))
		return -1;

	q->tuple.saddr = ip.saddr;
	q->tuple.daddr = ip.daddr;
	q->tuple.proto = ip.protocol;
	q->tuple.dir = 0;
	q->tuple.pad[0] = 0;
	q->tuple.pad[1] = 0;
	switch (ip.protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
		__builtin_memcpy(&q->tuple.sport, &l4[0], 2);
		__builtin_memcpy(&q->tuple.dport, &l4[2], 2);
		return 0;
	case IPPROTO_ICMP:
		if (l4[0] == ICMP_ECHO) {
			__builtin_memcpy(&q->tuple.sport, &l4[4], 2);
			q->tuple.dport = 0;
			return 0;
		}
		if (l4[0] == ICMP_ECHOREPLY) {
			q->tuple.sport = 0;
			__builtin_memcpy(&q->tuple.dport, &l4[4], 2);
			return 0;
		}
		return -1;
	}
	return -1;
}

#endif /* KELP_ICMP_H */
