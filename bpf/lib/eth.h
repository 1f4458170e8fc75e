#ifndef KELP_ETH_H
#define KELP_ETH_H

#include "common.h"

/*
 * MAC addresses are compared and copied as one 32-bit and one 16-bit word. The 4-byte access may
 * be unaligned: the verifier only enforces alignment of packet access under
 * BPF_F_STRICT_ALIGNMENT or on architectures without efficient unaligned access, and the JIT on
 * x86/arm64 emits plain loads. (A packed struct would make clang split it into byte loads.)
 */
typedef __u32 __attribute__((may_alias)) eth_word32;
typedef __u16 __attribute__((may_alias)) eth_word16;

static __always_inline bool eth_addr_equal(const __u8 *a, const __u8 *b)
{
	return *(const eth_word32 *)a == *(const eth_word32 *)b &&
	       *(const eth_word16 *)(a + 4) == *(const eth_word16 *)(b + 4);
}

static __always_inline void eth_addr_copy(__u8 *dst, const __u8 *src)
{
	*(eth_word32 *)dst = *(const eth_word32 *)src;
	*(eth_word16 *)(dst + 4) = *(const eth_word16 *)(src + 4);
}

/* Returns the Ethernet header, or NULL for a frame shorter than one. */
static __always_inline struct ethhdr *eth_load(const struct __sk_buff *skb)
{
	struct ethhdr *eth = ctx_data(skb);

	if ((void *)(eth + 1) > ctx_data_end(skb))
		return NULL;
	return eth;
}

static __always_inline void eth_rewrite(struct ethhdr *eth, const __u8 *dst, const __u8 *src)
{
	eth_addr_copy(eth->h_dest, dst);
	eth_addr_copy(eth->h_source, src);
}

#endif /* KELP_ETH_H */
