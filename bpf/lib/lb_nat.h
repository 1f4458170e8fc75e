/*
 * Per-packet service translation (tc): DNAT of a client's packet to a frontend, reverse NAT of the
 * backend's replies, the hairpin source rewrite, and the reject a frontend without backends
 * answers with. The selection itself is bpf/lib/lb.h's, shared with the socket path.
 *
 * lb4_forward, lb4_reverse and lb4_reject are BPF-to-BPF calls: inlined, their stack frames would
 * add to the hook's, past the verifier's 512 bytes with policy's below it.
 *
 * Order at a hook: translate first, then policy on the translated packet ("policy after service
 * translation"): callers pass policy the view these functions leave in `pkt`, which is the
 * backend's side of the flow (client → backend for a forward packet, backend → client for a
 * reply), whatever addresses the packet itself carries for the hairpin.
 *
 * Hairpin: a pod that reaches itself through a Service would receive a packet from its own
 * address from outside, which the kernel drops (fib_validate_source: a local source arriving on
 * an interface is a martian unless accept_local). Its source is rewritten to the frontend's
 * address (its port kept), and the reply, addressed to the frontend, is put back.
 */
#ifndef KELP_LB_NAT_H
#define KELP_LB_NAT_H

#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stddef.h>
#include "common.h"
#include "csum.h"
#include "drop.h"
#include "icmp.h"
#include "icmp_rewrite.h"
#include "ipv4.h"
#include "l4.h"
#include "lb.h"
#include "tuple.h"

/* What lb4_forward() and lb4_reverse() did. */
enum lb_xlate {
	LB_XLATE_NONE	= 0,	/* not a service flow: untouched */
	LB_XLATE_DONE	= 1,	/* translated; `pkt` holds the backend-side view */
	LB_XLATE_REJECT	= 2,	/* no usable backend: the caller answers with lb4_reject() */
};

static __always_inline int lb4_l4_csum_off(__u8 proto, __u32 l4_off, __u64 *flags)
{
	switch (proto) {
	case IPPROTO_TCP:
		*flags = 0;
		return l4_off + offsetof(struct tcphdr, check);
	case IPPROTO_UDP:
		/* A zero UDP checksum means "none" and must stay zero. */
		*flags = BPF_F_MARK_MANGLED_0;
		return l4_off + offsetof(struct udphdr, check);
	}
	/* SCTP: CRC32c over the SCTP packet only; an address change leaves it valid. */
	return -1;
}

/*
 * Rewrites the source (is_src) or destination address and port of a TCP/UDP/SCTP packet with
 * its checksums (bpf_l4_csum_replace: right for CHECKSUM_PARTIAL skbs from a pod's veth, whose
 * field holds the pseudo-header sum only). An SCTP port is not rewritten: the caller refuses it.
 */
static __always_inline int lb4_rewrite(struct __sk_buff *skb, __u32 l4_off, __u8 proto, int is_src,
				       __be32 from_addr, __be32 to_addr, __be16 from_port, __be16 to_port)
{
	__u32 addr_off = ETH_HLEN + (is_src ? offsetof(struct iphdr, saddr) : offsetof(struct iphdr, daddr));
	__u64 flags = 0;
	int csum_off = lb4_l4_csum_off(proto, l4_off, &flags);

	if (from_addr != to_addr) {
		if (csum_off >= 0 &&
		    bpf_l4_csum_replace(skb, csum_off, from_addr, to_addr, BPF_F_PSEUDO_HDR | flags | sizeof(to_addr)))
			return DROP_LB_REWRITE;
		if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), from_addr, to_addr, sizeof(to_addr)))
			return DROP_LB_REWRITE;
		if (bpf_skb_store_bytes(skb, addr_off, &to_addr, sizeof(to_addr), 0))
			return DROP_LB_REWRITE;
	}
	if (from_port != to_port) {
		if (csum_off < 0)
			return DROP_LB_SCTP_PORT;
		if (bpf_l4_csum_replace(skb, csum_off, from_port, to_port, flags | sizeof(to_port)))
			return DROP_LB_REWRITE;
		if (bpf_skb_store_bytes(skb, l4_off + (is_src ? 0 : 2), &to_port, sizeof(to_port), 0))
			return DROP_LB_REWRITE;
	}
	return 0;
}

static __always_inline bool lb4_proto(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

static __always_inline int lb4_ct_closing(__u8 flags)
{
	return flags & (CT_TCP_RST | CT_TCP_FIN);
}

/*
 * Whether reverse key `rkey` is free for the flow `fkey` opens: no entry, or one this same flow
 * left (its frontend and client), which it takes over.
 */
static __always_inline bool lb4_ct_reverse_free(const struct tuple4 *rkey, const struct tuple4 *fkey)
{
	struct lb4_ct_entry *other = bpf_map_lookup_elem(&kelp_lb4_ct, rkey);

	return !other || (other->addr == fkey->daddr && other->port == fkey->dport && other->nat_addr == fkey->saddr);
}

/*
 * Opens a tracked flow to backend `be`: the reverse entry (found by the backend's replies) first,
 * then the forward one, so that a reply never meets a flow without its way back. When the
 * backend side of the flow is another tracked flow's, the client port is moved (kelp_lb4_ct in
 * lb.h): `*nat_port` receives the port to write, or 0 to keep the client's. SCTP keeps its port
 * (a port change needs the CRC32c recomputed), and so does a flow for which LB_NAT_PORT_TRIES
 * ports were all taken: the clash stays, as it was before ports were moved.
 */
static __always_inline int lb4_ct_open(const struct tuple4 *fkey, const struct lb4_frontend *fe,
				       const struct lb4_backend *be, __u8 ct_flags, __u8 tcp_flags,
				       __be16 *nat_port)
{
	__u64 now = lb_now();
	int hairpin = be->addr == fkey->saddr;
	struct tuple4 rkey = {
		.saddr = be->addr,
		.daddr = hairpin ? fkey->daddr : fkey->saddr,
		.sport = be->port,
		.dport = fkey->sport,
		.proto = fkey->proto,
		.dir = LB_CT_REVERSE,
	};
	struct lb4_ct_entry rev = {
		.created = now,
		.last_seen = now,
		.addr = fkey->daddr,
		.port = fkey->dport,
		.flags = ct_flags | (hairpin ? LB_CT_F_HAIRPIN : 0),
		.nat_addr = fkey->saddr,
		.backend_id = be->backend_id,
		.set_id = fe->set_id,
		.svc_id = fe->svc_id,
	};
	struct lb4_ct_entry fwd;
	__u32 span = LB_NAT_PORT_MAX - LB_NAT_PORT_MIN + 1;
	__u32 start, i;

	*nat_port = 0;
	if (fkey->proto != IPPROTO_SCTP && !lb4_ct_reverse_free(&rkey, fkey)) {
		/* Candidates spread by the flow, so clients clashing at once try different ones. */
		start = (fkey->saddr ^ fkey->daddr ^ ((__u32)fkey->sport << 16 | fkey->dport)) * 0x9e3779b1u;
		for (i = 0; i < LB_NAT_PORT_TRIES; i++) {
			rkey.dport = bpf_htons(LB_NAT_PORT_MIN + (start + i * 1031) % span);
			if (lb4_ct_reverse_free(&rkey, fkey)) {
				*nat_port = rkey.dport;
				rev.nat_port = fkey->sport;
				break;
			}
		}
		if (!*nat_port)
			rkey.dport = fkey->sport;
	}
	fwd = rev;
	fwd.addr = be->addr;
	fwd.port = be->port;
	fwd.tcp_flags = tcp_flags;
	fwd.nat_addr = hairpin ? fkey->daddr : 0;
	fwd.nat_port = *nat_port;
	if (bpf_map_update_elem(&kelp_lb4_ct, &rkey, &rev, BPF_ANY))
		return DROP_LB_CT_FULL;
	if (bpf_map_update_elem(&kelp_lb4_ct, fkey, &fwd, BPF_ANY))
		return DROP_LB_CT_FULL;
	return 0;
}

/* The reverse key of a tracked flow, to retire it when the flow moves to another backend. */
static __always_inline void lb4_ct_retire_reverse(const struct tuple4 *fkey, const struct lb4_ct_entry *fwd)
{
	struct tuple4 rkey = {
		.saddr = fwd->addr,
		.daddr = (fwd->flags & LB_CT_F_HAIRPIN) ? fkey->daddr : fkey->saddr,
		.sport = fwd->port,
		.dport = fwd->nat_port ? fwd->nat_port : fkey->sport,
		.proto = fkey->proto,
		.dir = LB_CT_REVERSE,
	};

	bpf_map_delete_elem(&kelp_lb4_ct, &rkey);
}

/* Who sent a packet lb4_forward() sees: which frontends answer it, and with which view. */
enum lb_client {
	LB_CLIENT_POD		= 0,	/* a pod of this node (kelp_from_pod): every frontend, in-cluster view */
	LB_CLIENT_OUTSIDE	= 1,	/* from outside the node (the uplink): LB_FE_EXTERNAL ones, outside view */
	LB_CLIENT_HOST		= 2,	/* the node itself (its uplink's egress, lo): every frontend, in-cluster view */
};

/*
 * A client's packet: when its destination is a frontend, the flow's backend (tracked, or chosen
 * now) becomes its destination. `client`: enum lb_client. Returns enum lb_xlate or a drop
 * reason; on LB_XLATE_DONE `pkt` holds the destination the packet now has (its source stays the
 * client, even for the hairpin).
 */
static __attribute__((noinline)) int lb4_forward(struct __sk_buff *skb, struct pkt4 *pkt, int client)
{
	struct tuple4 fkey = {
		.saddr = pkt->saddr, .daddr = pkt->daddr, .sport = pkt->sport, .dport = pkt->dport,
		.proto = pkt->proto, .dir = LB_CT_FORWARD,
	};
	__u32 l4_off = ETH_HLEN + pkt->hlen;
	struct lb4_frontend *found, view, *fe = &view;
	struct lb4_ct_entry *ct;
	struct lb4_backend be;
	struct iphdr *ip;
	__u8 tcp_flags = 0, ct_flags;
	__be16 nat_port = 0;
	int ret;

	if (!lb4_proto(pkt->proto))
		return LB_XLATE_NONE;
	found = lb4_frontend_lookup(pkt->daddr, pkt->dport, pkt->proto);
	if (!found || (client == LB_CLIENT_OUTSIDE && !(found->flags & LB_FE_EXTERNAL)))
		return LB_XLATE_NONE;
	lb4_frontend_view(found, client != LB_CLIENT_OUTSIDE, &view);
	ct_flags = client == LB_CLIENT_OUTSIDE ? LB_CT_F_EXTERNAL : client == LB_CLIENT_HOST ? LB_CT_F_HOST : 0;
	ip = ipv4_load(skb);
	if (!ip)
		return DROP_RUNT;
	if (ipv4_is_fragment(ip))
		return DROP_LB_FRAG;
	if (pkt->proto == IPPROTO_TCP && l4_tcp_flags(skb, l4_off, &tcp_flags) < 0)
		return DROP_L4_TRUNCATED;

	ct = bpf_map_lookup_elem(&kelp_lb4_ct, &fkey);
	if (ct && ct->set_id == fe->set_id && lb4_backend_live(ct->set_id, ct->backend_id) &&
	    !(pkt->proto == IPPROTO_TCP && (tcp_flags & (CT_TCP_SYN | CT_TCP_ACK)) == CT_TCP_SYN &&
	      lb4_ct_closing(ct->tcp_flags))) {
		ct->last_seen = lb_now();
		if ((ct->tcp_flags | tcp_flags) != ct->tcp_flags)
			ct->tcp_flags |= tcp_flags;
		be.addr = ct->addr;
		be.port = ct->port;
		be.backend_id = ct->backend_id;
		nat_port = ct->nat_port;
	} else {
		/* New, or its backend left the set (the agent removed it): balanced (again) now. */
		if (ct)
			lb4_ct_retire_reverse(&fkey, ct);
		ret = lb4_select(fe, pkt->saddr, lb4_hash(pkt->saddr, pkt->daddr, pkt->sport, pkt->dport, pkt->proto), &be);
		if (ret == LB_NO_BACKEND)
			return LB_XLATE_REJECT;
		if (ret == LB_NO_LOCAL)
			return DROP_LB_NO_LOCAL;
		if (ret == LB_SOURCE_DENIED)
			return DROP_LB_SOURCE_RANGE;
		if (pkt->proto == IPPROTO_SCTP && be.port != pkt->dport)
			return DROP_LB_SCTP_PORT;
		ret = lb4_ct_open(&fkey, fe, &be, ct_flags, tcp_flags, &nat_port);
		if (ret)
			return ret;
	}

	ret = lb4_rewrite(skb, l4_off, pkt->proto, 0, pkt->daddr, be.addr, pkt->dport, be.port);
	/* The source: the frontend's address for the hairpin, a moved client port for a clash. */
	if (!ret && (be.addr == pkt->saddr || nat_port))
		ret = lb4_rewrite(skb, l4_off, pkt->proto, 1, pkt->saddr, be.addr == pkt->saddr ? pkt->daddr : pkt->saddr,
				  pkt->sport, nat_port ? nat_port : pkt->sport);
	if (ret)
		return ret;
	pkt->svc_id = fe->svc_id;
	event_note_service(fe->svc_id, pkt->daddr, pkt->dport);
	pkt->daddr = be.addr;
	pkt->dport = be.port;
	if (nat_port)
		pkt->sport = nat_port;
	return LB_XLATE_DONE;
}

/*
 * An ICMP error about a translated flow, from its backend or a router on the way: it quotes the
 * packet as the backend got it (client → backend), where the client's socket knows the flow as
 * client → frontend. The quote's destination goes back to the frontend (hairpin: its source back
 * to the client), and the error's source too when the backend itself sent it, so the client's
 * socket hears of it (ECONNREFUSED for a backend whose port closed). Policy then decides the
 * error as a new ICMP packet: the flow it quotes is no longer the one kelp_pct4 tracks.
 */
static __always_inline int lb4_icmp_error(struct __sk_buff *skb, struct pkt4 *pkt, __u8 *ct_flags)
{
	__u32 l4_off = ETH_HLEN + pkt->hlen;
	struct lb4_ct_entry *ct;
	struct icmp4_quote q;
	struct tuple4 rkey;
	__be32 backend, frontend, client;
	__be16 fport, cport;
	__u8 flags;
	int ret;

	if (!icmp4_is_error(icmp4_type(pkt)) || icmp4_quote_load(skb, l4_off, &q) < 0 || !lb4_proto(q.tuple.proto))
		return LB_XLATE_NONE;
	tuple4_reverse(&q.tuple, &rkey, LB_CT_REVERSE);
	ct = bpf_map_lookup_elem(&kelp_lb4_ct, &rkey);
	if (!ct)
		return LB_XLATE_NONE;
	backend = q.tuple.daddr;
	frontend = ct->addr;
	fport = ct->port;
	client = ct->nat_addr;
	cport = ct->nat_port;
	flags = ct->flags;
	*ct_flags = flags;

	ret = icmp4_quote_rewrite(skb, l4_off, &q, 0, frontend, fport);
	/* The quote's source back to the client's own (hairpin address, moved port). */
	if (!ret && ((flags & LB_CT_F_HAIRPIN) || cport))
		ret = icmp4_quote_rewrite(skb, l4_off, &q, 1, client, cport ? cport : q.tuple.sport);
	if (ret)
		return DROP_LB_REWRITE;
	if (pkt->saddr == backend)
		ret = lb4_rewrite(skb, l4_off, IPPROTO_ICMP, 1, backend, frontend, 0, 0);
	if (!ret && (flags & LB_CT_F_HAIRPIN))
		ret = lb4_rewrite(skb, l4_off, IPPROTO_ICMP, 0, pkt->daddr, client, 0, 0);
	if (ret)
		return ret;
	pkt->daddr = client;
	return LB_XLATE_DONE;
}

/*
 * A backend's reply: its source goes back to the frontend the client used (and, for the hairpin,
 * its destination back to the client). ICMP errors about the flow: lb4_icmp_error. Returns enum lb_xlate or a drop reason; on LB_XLATE_DONE
 * `pkt` holds the backend-side view (backend → client) and `*ct_flags` the flow's flags.
 */
static __attribute__((noinline)) int lb4_reverse(struct __sk_buff *skb, struct pkt4 *pkt, __u8 *ct_flags)
{
	struct tuple4 rkey = {
		.saddr = pkt->saddr, .daddr = pkt->daddr, .sport = pkt->sport, .dport = pkt->dport,
		.proto = pkt->proto, .dir = LB_CT_REVERSE,
	};
	__u32 l4_off = ETH_HLEN + pkt->hlen;
	struct lb4_ct_entry *ct;
	struct iphdr *ip;
	int ret;

	if (pkt->proto == IPPROTO_ICMP)
		return lb4_icmp_error(skb, pkt, ct_flags);
	if (!lb4_proto(pkt->proto))
		return LB_XLATE_NONE;
	ct = bpf_map_lookup_elem(&kelp_lb4_ct, &rkey);
	if (!ct)
		return LB_XLATE_NONE;
	ip = ipv4_load(skb);
	if (!ip)
		return DROP_RUNT;
	if (ipv4_is_fragment(ip))
		return DROP_LB_FRAG;
	ct->last_seen = lb_now();
	*ct_flags = ct->flags;
	ret = lb4_rewrite(skb, l4_off, pkt->proto, 1, pkt->saddr, ct->addr, pkt->sport, ct->port);
	/* The destination back to the client's own: its address (hairpin), its port (moved). */
	if (!ret && ((ct->flags & LB_CT_F_HAIRPIN) || ct->nat_port))
		ret = lb4_rewrite(skb, l4_off, pkt->proto, 0, pkt->daddr, ct->nat_addr, pkt->dport, ct->nat_port ? ct->nat_port : pkt->dport);
	if (ret)
		return ret;
	pkt->daddr = ct->nat_addr;
	if (ct->nat_port)
		pkt->dport = ct->nat_port;
	return LB_XLATE_DONE;
}

/* ---- the node's own flows (host.c translates them per packet) ---- */

/* lo: every network namespace's loopback device has this ifindex (LOOPBACK_IFINDEX). */
#define LB_LOOPBACK_IFINDEX 1

/*
 * A packet for the node's own end of a flow it opened to a frontend (LB_CT_F_HOST: a reply, an
 * ICMP error, a reject) goes into its stack as if it arrived on lo, whichever interface the
 * node's packets left by: on the device the backend answers from (a pod's host veth) a strict
 * rp_filter would drop a frontend's source, and lo is the one device where only the node's own
 * packets arrive. lo's MAC is all zeros (eth_type_trans calls anything else PACKET_OTHERHOST).
 * A NodePort's reply carries a node address as its source, which input routing drops as a
 * martian unless lo accepts local sources (the agent sets accept_local on lo).
 */
static __always_inline int lb4_to_host_stack(struct __sk_buff *skb)
{
	const __u8 zero[2 * ETH_ALEN] = {};

	if (bpf_skb_store_bytes(skb, 0, zero, sizeof(zero), 0))
		return TC_ACT_SHOT;
	return bpf_redirect(LB_LOOPBACK_IFINDEX, BPF_F_INGRESS);
}

/* ---- reject: TCP RST or ICMP port unreachable, in place of the packet ---- */

#define LB_REJECT_TTL 64

/* The IPv4 header checksum of the 20 bytes at `ip`. */
static __always_inline __sum16 lb4_ip_csum(struct iphdr *ip)
{
	ip->check = 0;
	return csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)ip, sizeof(*ip), 0));
}

static __always_inline void lb4_reject_ip(struct iphdr *ip, __be32 saddr, __be32 daddr, __u8 proto, __u16 tot_len)
{
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(tot_len);
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000);	/* DF */
	ip->ttl = LB_REJECT_TTL;
	ip->protocol = proto;
	ip->saddr = saddr;
	ip->daddr = daddr;
	ip->check = lb4_ip_csum(ip);
}

struct lb4_pseudo_tcp {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
	struct tcphdr tcp;
};

/* Replaces the packet by the `l4_len` bytes at `l4` behind an Ethernet header with the MACs
 * swapped and IPv4 header `ip`. */
static __always_inline int lb4_reject_store(struct __sk_buff *skb, const struct ethhdr *orig, struct iphdr *ip,
					    const void *l4, __u32 l4_len)
{
	struct ethhdr eth;

	/* Byte copies: eth_addr_copy's 4-byte access would be misaligned on the stack. */
	__builtin_memcpy(eth.h_dest, orig->h_source, ETH_ALEN);
	__builtin_memcpy(eth.h_source, orig->h_dest, ETH_ALEN);
	eth.h_proto = bpf_htons(ETH_P_IP);
	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(*ip) + l4_len, 0) ||
	    bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN, ip, sizeof(*ip), 0) ||
	    bpf_skb_store_bytes(skb, ETH_HLEN + sizeof(*ip), l4, l4_len, 0))
		return DROP_LB_REWRITE;
	return 0;
}

/*
 * The RST a closed port answers with (RFC 9293 3.10.7.1): to a segment with ACK, seq = its ack;
 * otherwise seq 0 and ack = its seq + its length (SYN and FIN count one each).
 */
static __always_inline int lb4_reject_tcp(struct __sk_buff *skb, const struct pkt4 *pkt)
{
	struct lb4_pseudo_tcp ph = {};
	struct iphdr ip, out = {};
	struct ethhdr eth;
	struct tcphdr th;
	__u32 seg_len;

	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) || bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) ||
	    bpf_skb_load_bytes(skb, ETH_HLEN + pkt->hlen, &th, sizeof(th)))
		return DROP_LB_REWRITE;
	if (th.rst)
		return DROP_LB_NO_BACKEND;	/* never answer a RST */
	seg_len = bpf_ntohs(ip.tot_len) - pkt->hlen - th.doff * 4 + th.syn + th.fin;

	ph.tcp.source = th.dest;
	ph.tcp.dest = th.source;
	ph.tcp.doff = 5;
	ph.tcp.rst = 1;
	if (th.ack) {
		ph.tcp.seq = th.ack_seq;
	} else {
		ph.tcp.ack = 1;
		ph.tcp.ack_seq = bpf_htonl(bpf_ntohl(th.seq) + seg_len);
	}
	ph.saddr = ip.daddr;
	ph.daddr = ip.saddr;
	ph.proto = IPPROTO_TCP;
	ph.len = bpf_htons(sizeof(struct tcphdr));
	ph.tcp.check = csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0));
	lb4_reject_ip(&out, ip.daddr, ip.saddr, IPPROTO_TCP, sizeof(out) + sizeof(ph.tcp));
	return lb4_reject_store(skb, &eth, &out, &ph.tcp, sizeof(ph.tcp));
}

struct lb4_icmp_unreach {
	struct icmp4_hdr icmp;
	__u8 quote[sizeof(struct iphdr) + 8];
};

/* ICMP destination unreachable, port unreachable (RFC 1122 3.2.2.1), quoting the packet's IPv4
 * header and first 8 bytes. A header with options is not quoted: dropped without an answer. */
static __always_inline int lb4_reject_icmp(struct __sk_buff *skb, const struct pkt4 *pkt)
{
	struct lb4_icmp_unreach u = {};
	struct iphdr out = {}, *qip = (struct iphdr *)u.quote;
	struct ethhdr eth;

	if (pkt->hlen != sizeof(struct iphdr))
		return DROP_LB_NO_BACKEND;
	if (bpf_skb_load_bytes(skb, 0, &eth, sizeof(eth)) || bpf_skb_load_bytes(skb, ETH_HLEN, u.quote, sizeof(u.quote)))
		return DROP_LB_REWRITE;
	u.icmp.type = ICMP_DEST_UNREACH;
	u.icmp.code = 3;	/* ICMP_PORT_UNREACH */
	u.icmp.checksum = csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)&u, sizeof(u), 0));
	lb4_reject_ip(&out, qip->daddr, qip->saddr, IPPROTO_ICMP, sizeof(out) + sizeof(u));
	return lb4_reject_store(skb, &eth, &out, &u, sizeof(u));
}

/*
 * Turns the packet into the answer of a frontend without backends, from the frontend to the
 * client, MACs swapped: the caller sends it back where it came from. Returns 0, or a drop reason
 * when there is no answer to give (a RST, a header with options) or it could not be built.
 */
static __attribute__((noinline)) int lb4_reject(struct __sk_buff *skb, const struct pkt4 *pkt)
{
	if (pkt->proto == IPPROTO_TCP)
		return lb4_reject_tcp(skb, pkt);
	return lb4_reject_icmp(skb, pkt);
}

#endif /* KELP_LB_NAT_H */
