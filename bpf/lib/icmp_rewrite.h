/* Rewriting the packet an ICMP error quotes, and where each L4 header keeps its ports and
 * checksum: shared by masquerade (nat.h) and service translation (lb_nat.h), neither of whose
 * maps the other object needs. Failures return DROP_NAT_* reasons (masquerade's, where this
 * began); lb_nat.h reports them as its own. */
#ifndef KELP_ICMP_REWRITE_H
#define KELP_ICMP_REWRITE_H

#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stddef.h>
#include "common.h"
#include "csum.h"
#include "drop.h"
#include "icmp.h"

/* Offsets of the checksum and of the source port (the destination port is 2 bytes further)
 * inside an L4 header; ICMP echo has its identifier where we treat both ports. */
struct l4_layout {
	__u32 csum_off;
	__u32 sport_off;
	__u32 dport_off;
	__u64 csum_flags; /* extra bpf_l4_csum_replace flags */
	int pseudo;       /* checksum covers the IP pseudo-header */
};

static __always_inline int l4_layout_of(__u8 proto, __u32 l4_off, struct l4_layout *l)
{
	switch (proto) {
	case IPPROTO_TCP:
		l->csum_off = l4_off + offsetof(struct tcphdr, check);
		l->sport_off = l4_off;
		l->dport_off = l4_off + 2;
		l->csum_flags = 0;
		l->pseudo = 1;
		return 0;
	case IPPROTO_UDP:
		l->csum_off = l4_off + offsetof(struct udphdr, check);
		l->sport_off = l4_off;
		l->dport_off = l4_off + 2;
		/* A zero UDP checksum means "none" and must stay zero. */
		l->csum_flags = BPF_F_MARK_MANGLED_0;
		l->pseudo = 1;
		return 0;
	case IPPROTO_ICMP:
		l->csum_off = l4_off + offsetof(struct icmp4_hdr, checksum);
		l->sport_off = l4_off + offsetof(struct icmp4_hdr, id);
		l->dport_off = l->sport_off;
		l->csum_flags = 0;
		l->pseudo = 0;
		return 0;
	}
	return -1;
}

/* Updates the ICMP checksum at icmp_csum_off after a 16-bit field of its payload changed. */
static __always_inline int icmp4_csum_update2(struct __sk_buff *skb, __u32 icmp_csum_off, __u16 from, __u16 to)
{
	return bpf_l4_csum_replace(skb, icmp_csum_off, from, to, sizeof(__u16)) ? DROP_NAT_REWRITE : 0;
}

/* Rewrites the quoted packet of an ICMP error: its source (is_src) or destination address
 * and port. Every quoted field and quoted checksum that changes is folded into the ICMP
 * checksum, which covers them as plain data. The quoted L4 checksum is fixed only when the
 * error carries it (a quoted TCP header is often cut at 8 bytes). */
static __always_inline int icmp4_quote_rewrite(struct __sk_buff *skb, __u32 l4_off, const struct icmp4_quote *q,
					       int is_src, __be32 to_addr, __be16 to_port)
{
	__u32 icmp_csum = l4_off + offsetof(struct icmp4_hdr, checksum);
	__be32 from_addr = is_src ? q->tuple.saddr : q->tuple.daddr;
	__be16 from_port = is_src ? q->tuple.sport : q->tuple.dport;
	__u32 ipcsum_off = q->ip_off + offsetof(struct iphdr, check);
	__u16 old_csum, new_csum;
	struct l4_layout l;
	int ret;

	/* Quoted IP header: address and its checksum. */
	if (bpf_skb_load_bytes(skb, ipcsum_off, &old_csum, sizeof(old_csum)))
		return DROP_NAT_REWRITE;
	new_csum = csum32_replace(old_csum, from_addr, to_addr);
	if (bpf_skb_store_bytes(skb, q->ip_off + (is_src ? offsetof(struct iphdr, saddr) : offsetof(struct iphdr, daddr)),
				&to_addr, sizeof(to_addr), 0) ||
	    bpf_skb_store_bytes(skb, ipcsum_off, &new_csum, sizeof(new_csum), 0))
		return DROP_NAT_REWRITE;
	if (bpf_l4_csum_replace(skb, icmp_csum, from_addr, to_addr, sizeof(to_addr)))
		return DROP_NAT_REWRITE;
	ret = icmp4_csum_update2(skb, icmp_csum, old_csum, new_csum);
	if (ret)
		return ret;

	if (l4_layout_of(q->tuple.proto, q->l4_off, &l) < 0)
		return DROP_NAT_UNSUPP_PROTO;

	/* Quoted L4 checksum: pseudo-header address and port (ICMP: identifier only). */
	if (!bpf_skb_load_bytes(skb, l.csum_off, &old_csum, sizeof(old_csum)) &&
	    !(q->tuple.proto == IPPROTO_UDP && old_csum == 0)) {
		new_csum = old_csum;
		if (l.pseudo)
			new_csum = csum32_replace(new_csum, from_addr, to_addr);
		new_csum = csum16_replace(new_csum, from_port, to_port);
		if (q->tuple.proto == IPPROTO_UDP && new_csum == 0)
			new_csum = 0xffff;
		if (bpf_skb_store_bytes(skb, l.csum_off, &new_csum, sizeof(new_csum), 0))
			return DROP_NAT_REWRITE;
		ret = icmp4_csum_update2(skb, icmp_csum, old_csum, new_csum);
		if (ret)
			return ret;
	}

	if (bpf_skb_store_bytes(skb, is_src ? l.sport_off : l.dport_off, &to_port, sizeof(to_port), 0))
		return DROP_NAT_REWRITE;
	return icmp4_csum_update2(skb, icmp_csum, from_port, to_port);
}

#endif /* KELP_ICMP_REWRITE_H */
