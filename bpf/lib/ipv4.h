#ifndef KELP_IPV4_H
#define KELP_IPV4_H

#include <linux/ip.h>
#include "common.h"
#include "csum.h"
#include "drop.h"
#include "l4.h"

#define IPV4_FRAG_OFFSET 0x1fff
#define IPV4_MF 0x2000

/* Largest total length an IPv4 header can state; a GSO packet above it is BIG TCP. */
#define IPV4_MAX_TOT_LEN 0xffff

/*
 * Validates the IPv4 header after the Ethernet header and, for unfragmented packets and first
 * fragments, the start of the TCP/UDP/ICMP header; fills `pkt`. Returns 0 or a drop reason.
 * Packet pointers are invalid afterwards (ctx_linear may pull).
 */
static __always_inline int ipv4_parse(struct __sk_buff *skb, struct pkt4 *pkt)
{
	struct iphdr *ip;
	void *data;
	__u32 hlen, tot_len, l4_len, l4_off;

	if (!ctx_linear(skb, ETH_HLEN + sizeof(*ip)))
		return DROP_RUNT;
	ip = ctx_data(skb) + ETH_HLEN;
	if ((void *)(ip + 1) > ctx_data_end(skb))
		return DROP_RUNT;
	if (ip->version != 4)
		return DROP_IPV4_VERSION;
	hlen = ip->ihl * 4;
	if (hlen < sizeof(*ip))
		return DROP_IPV4_IHL;
	tot_len = bpf_ntohs(ip->tot_len);
	/* BIG TCP (Linux >= 6.3) sends IPv4 GSO packets above 64 KiB with tot_len 0. */
	if (unlikely(tot_len == 0) && skb->len > ETH_HLEN + IPV4_MAX_TOT_LEN)
		tot_len = skb->len - ETH_HLEN;
	if (tot_len < hlen || tot_len > skb->len - ETH_HLEN)
		return DROP_IPV4_TOT_LEN;

	pkt->saddr = ip->saddr;
	pkt->daddr = ip->daddr;
	pkt->proto = ip->protocol;
	pkt->hlen = hlen;

	/* A non-first fragment starts with payload: its first bytes are not ports. */
	if (ip->frag_off & bpf_htons(IPV4_FRAG_OFFSET))
		return 0;
	l4_len = l4_hdr_len(pkt->proto);
	if (!l4_len)
		return 0;
	if (hlen + l4_len > tot_len)
		return DROP_L4_TRUNCATED;
	l4_off = ETH_HLEN + hlen;
	if (!ctx_linear(skb, l4_off + l4_len))
		return DROP_L4_TRUNCATED;
	data = ctx_data(skb);
	if (data + l4_off + 8 > ctx_data_end(skb))
		return DROP_L4_TRUNCATED;
	l4_load_ports(data + l4_off, pkt->proto, pkt);
	return 0;
}

/* Returns the IPv4 header of a packet ipv4_parse() accepted (reloading the packet pointers). */
static __always_inline struct iphdr *ipv4_load(const struct __sk_buff *skb)
{
	struct iphdr *ip = ctx_data(skb) + ETH_HLEN;

	if ((void *)(ip + 1) > ctx_data_end(skb))
		return NULL;
	return ip;
}

/* Any fragment: the first (more-fragments set) or a later one (non-zero offset). */
static __always_inline bool ipv4_is_fragment(const struct iphdr *ip)
{
	return ip->frag_off & bpf_htons(IPV4_MF | IPV4_FRAG_OFFSET);
}

typedef __be16 __attribute__((may_alias)) ipv4_word16;

/* One routing hop. TTL and protocol share a 16-bit word of the header checksum; the caller has
 * checked that the TTL is above 1. */
static __always_inline void ipv4_dec_ttl(struct iphdr *ip)
{
	__be16 old = *(ipv4_word16 *)&ip->ttl;

	ip->ttl--;
	ip->check = csum16_replace(ip->check, old, *(ipv4_word16 *)&ip->ttl);
}

#endif /* KELP_IPV4_H */
