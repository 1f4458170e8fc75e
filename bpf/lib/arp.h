#ifndef KELP_ARP_H
#define KELP_ARP_H

#include "common.h"
#include "eth.h"

/* From <linux/if_arp.h>, which drags in libc's socket headers (absent for the BPF target). */
#define ARPHRD_ETHER	1
#define ARPOP_REQUEST	1
#define ARPOP_REPLY	2

/* ARP for IPv4 over Ethernet (RFC 826). Addresses are byte arrays: spa/tpa are not 4-aligned. */
struct arp_eth4 {
	__be16 hrd;
	__be16 pro;
	__u8 hln;
	__u8 pln;
	__be16 op;
	__u8 sha[ETH_ALEN];
	__u8 spa[4];
	__u8 tha[ETH_ALEN];
	__u8 tpa[4];
};

typedef __be32 __attribute__((may_alias)) arp_word32;

static __always_inline __be32 arp4_spa(const struct arp_eth4 *arp)
{
	return *(const arp_word32 *)arp->spa;
}

static __always_inline __be32 arp4_tpa(const struct arp_eth4 *arp)
{
	return *(const arp_word32 *)arp->tpa;
}

/* IPv4 over Ethernet (the layout of struct arp_eth4), a request or a reply: all kelp accepts. */
static __always_inline bool arp4_is_eth_ipv4(const struct arp_eth4 *arp)
{
	return arp->hrd == bpf_htons(ARPHRD_ETHER) && arp->pro == bpf_htons(ETH_P_IP) &&
	       arp->hln == ETH_ALEN && arp->pln == 4 &&
	       (arp->op == bpf_htons(ARPOP_REQUEST) || arp->op == bpf_htons(ARPOP_REPLY));
}

/* Turns a request into the answer "tpa is at `mac`", addressed back to the requester. */
static __always_inline void arp4_reply(struct ethhdr *eth, struct arp_eth4 *arp, const __u8 *mac)
{
	__be32 spa = arp4_spa(arp), tpa = arp4_tpa(arp);

	eth_addr_copy(eth->h_dest, arp->sha);
	eth_addr_copy(eth->h_source, mac);
	arp->op = bpf_htons(ARPOP_REPLY);
	eth_addr_copy(arp->tha, arp->sha);
	eth_addr_copy(arp->sha, mac);
	*(arp_word32 *)arp->spa = tpa;
	*(arp_word32 *)arp->tpa = spa;
}

#endif /* KELP_ARP_H */
