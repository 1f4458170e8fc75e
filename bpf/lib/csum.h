/*
 * Internet checksum arithmetic (RFC 1071, incremental updates per RFC 1624) for headers edited in
 * place through direct packet access. Values stay in network byte order: one's complement sums
 * do not depend on byte order as long as every operand uses the same one.
 */
#ifndef KELP_CSUM_H
#define KELP_CSUM_H

#include "common.h"

/* 32-bit one's complement addition (end-around carry). */
static __always_inline __u32 csum_add(__u32 sum, __u32 addend)
{
	sum += addend;
	return sum + (sum < addend);
}

static __always_inline __u32 csum_sub(__u32 sum, __u32 subtrahend)
{
	return csum_add(sum, ~subtrahend);
}

/* Folds a 32-bit partial sum to 16 bits, not complemented. */
static __always_inline __u16 csum_fold16(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* Folds a partial sum into the value stored in a checksum field. */
static __always_inline __sum16 csum_fold(__u32 sum)
{
	return (__sum16)~csum_fold16(sum);
}

/* RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'): one 16-bit word of the covered data changed. */
static __always_inline __sum16 csum16_replace(__sum16 check, __be16 from, __be16 to)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~from;
	sum += (__u16)to;
	return csum_fold(sum);
}

/* Same for a 32-bit word (an IPv4 address), as two 16-bit halves. */
static __always_inline __sum16 csum32_replace(__sum16 check, __be32 from, __be32 to)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~from + (__u16)~(from >> 16);
	sum += (__u16)to + (__u16)(to >> 16);
	return csum_fold(sum);
}

#endif /* KELP_CSUM_H */
