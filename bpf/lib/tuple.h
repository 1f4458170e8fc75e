/* The IPv4 5-tuple of kelp_ct4 and kelp_snat4 keys, and of the flow an ICMP error quotes. A
 * header of its own, without any map, so that objects tracking nothing can name a flow. */
#ifndef KELP_TUPLE_H
#define KELP_TUPLE_H

#include "common.h"

/* Addresses and ports exactly as on the wire. ICMP echo puts the identifier in sport for a
 * request and in dport for a reply, so swapping a request's tuple gives its reply's. */
struct tuple4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir; /* CT_* in kelp_ct4 keys, NAT_DIR_* in kelp_snat4 keys */
	__u8 pad[2];
};

/* The tuple of the other direction of the flow `t`, tagged `dir`. */
static __always_inline void tuple4_reverse(const struct tuple4 *t, struct tuple4 *r, __u8 dir)
{
	r->saddr = t->daddr;
	r->daddr = t->saddr;
	r->sport = t->dport;
	r->dport = t->sport;
	r->proto = t->proto;
	r->dir = dir;
	r->pad[0] = 0;
	r->pad[1] = 0;
}

#endif /* KELP_TUPLE_H */
