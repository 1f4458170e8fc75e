/* Source NAT (masquerade) state and packet rewriting.
 *
 * kelp_snat4 holds each translated flow twice:
 *   forward  key = original tuple, dir NAT_DIR_EGRESS  → { masquerade address, NAT port }
 *   reverse  key = reply tuple as it arrives (remote → masquerade address:NAT port),
 *            dir NAT_DIR_INGRESS                      → { pod address, pod port }
 * The reverse key is the unit of allocation: a NAT port is taken by inserting it with
 * BPF_NOEXIST, so two CPUs can never hand out the same (remote, port) pair. A forward key
 * equals the flow's kelp_ct4 key byte for byte (NAT_DIR_EGRESS == CT_EGRESS). */
#ifndef KELP_NAT_H
#define KELP_NAT_H

#include <linux/errno.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stddef.h>
#include "common.h"
#include "csum.h"
#include "conntrack.h"
#include "drop.h"
#include "icmp.h"
#include "icmp_rewrite.h"

/* tuple4.dir of kelp_snat4 keys: forward or reverse half. */
enum nat_dir {
	NAT_DIR_EGRESS	= 0,	/* == CT_EGRESS: a forward key is its flow's kelp_ct4 key */
	NAT_DIR_INGRESS	= 1,
};

/* How many NAT ports one new flow may try before giving up with DROP_NAT_NO_PORT. */
#define NAT_PROBES 32

struct nat4_entry {
#ifdef KELP_TEST_LAYOUT_V2
	__u64 layout_v2; /* test build of layout 2 only, as in struct ct4_entry */
#endif
	__be32 addr;   /* address to write: masquerade IP (forward) or pod IP (reverse) */
	__be16 port;   /* port, or ICMP echo identifier, to write */
	__u16 pad;
	__u64 created; /* bpf_ktime_get_ns(); lets the agent age out halves whose flow vanished */
};

#define KELP_SNAT4_MAX (2 * KELP_CT4_MAX)

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct tuple4);
	__type(value, struct nat4_entry);
	__uint(max_entries, KELP_SNAT4_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_snat4 SEC(".maps");

/* Destinations that see pod addresses unchanged (the pod CIDR itself, the cluster's other
 * pod and node ranges). Filled by the agent. */
struct nomasq4_key {
	__u32 prefixlen;
	__be32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct nomasq4_key);
	__type(value, __u8);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_nomasq4 SEC(".maps");

struct nat4_cfg {
	__be32 addr;     /* masquerade address */
	__u16 port_min;  /* host order, inclusive */
	__u16 port_max;
};

static __always_inline int nat4_nomasq(__be32 daddr)
{
	struct nomasq4_key key = { .prefixlen = 32, .addr = daddr };

	return bpf_map_lookup_elem(&kelp_nomasq4, &key) != NULL;
}

/* Finds the forward mapping of `orig` (dir NAT_DIR_EGRESS), creating one on the flow's first
 * packet. Returns 0 with *out filled, or a DROP_* reason. */
static __always_inline int snat4_get(const struct tuple4 *orig, const struct nat4_cfg *cfg, struct nat4_entry *out)
{
	struct nat4_entry *fwd, rev_val = {}, fwd_val = {};
	struct tuple4 rkey;
	__u32 range, start, i;
	long err;

	fwd = bpf_map_lookup_elem(&kelp_snat4, orig);
	if (fwd) {
		*out = *fwd;
		return 0;
	}

	if (cfg->port_max < cfg->port_min)
		return DROP_NAT_NO_PORT;
	range = (__u32)cfg->port_max - cfg->port_min + 1;
	start = bpf_get_prandom_u32() % range;

	/* The reply as it will arrive: to the masquerade address, at the port probed below. */
	tuple4_reverse(orig, &rkey, NAT_DIR_INGRESS);
	rkey.daddr = cfg->addr;

	rev_val.addr = orig->saddr;
	rev_val.port = orig->sport;
	rev_val.created = bpf_ktime_get_ns();

	/* Random start, then linear probing: a small range is searched exhaustively, a large
	 * one gives a new flow NAT_PROBES chances wherever the free ports are. */
	for (i = 0; i < NAT_PROBES && i < range; i++) {
		__u16 port = cfg->port_min + (start + i) % range;

		rkey.dport = bpf_htons(port);
		err = bpf_map_update_elem(&kelp_snat4, &rkey, &rev_val, BPF_NOEXIST);
		if (err == -EEXIST)
			continue;
		if (err)
			return DROP_NAT_MAP_FULL;

		fwd_val.addr = cfg->addr;
		fwd_val.port = rkey.dport;
		fwd_val.created = rev_val.created;
		err = bpf_map_update_elem(&kelp_snat4, orig, &fwd_val, BPF_NOEXIST);
		if (err == 0) {
			*out = fwd_val;
			return 0;
		}
		/* Lost a race with another CPU mapping the same flow: give our port back and
		 * use theirs. */
		bpf_map_delete_elem(&kelp_snat4, &rkey);
		if (err != -EEXIST)
			return DROP_NAT_MAP_FULL;
		fwd = bpf_map_lookup_elem(&kelp_snat4, orig);
		if (!fwd)
			return DROP_NAT_MAP_FULL;
		*out = *fwd;
		return 0;
	}
	return DROP_NAT_NO_PORT;
}

/* ---- rewriting ---- */

/* Rewrites the IPv4 source (is_src) or destination address and the matching port of a
 * TCP/UDP/ICMP-echo packet, keeping the IP and L4 checksums valid. The L4 checksum goes through
 * bpf_l4_csum_replace rather than csum.h: a forwarded pod packet is usually CHECKSUM_PARTIAL
 * (veth offload), whose checksum field holds only the pseudo-header sum — the helper then
 * updates it for an address and leaves it alone for a port, and it keeps skb->csum right
 * on CHECKSUM_COMPLETE skbs. */
static __always_inline int nat4_rewrite(struct __sk_buff *skb, __u32 l3_off, __u32 l4_off, __u8 proto, int is_src,
					__be32 from_addr, __be32 to_addr, __be16 from_port, __be16 to_port)
{
	__u32 addr_off = l3_off + (is_src ? offsetof(struct iphdr, saddr) : offsetof(struct iphdr, daddr));
	__u32 ipcsum_off = l3_off + offsetof(struct iphdr, check);
	struct l4_layout l;

	if (l4_layout_of(proto, l4_off, &l) < 0)
		return DROP_NAT_UNSUPP_PROTO;

	if (from_addr != to_addr) {
		if (l.pseudo && bpf_l4_csum_replace(skb, l.csum_off, from_addr, to_addr,
						    BPF_F_PSEUDO_HDR | l.csum_flags | sizeof(to_addr)))
			return DROP_NAT_REWRITE;
		if (bpf_l3_csum_replace(skb, ipcsum_off, from_addr, to_addr, sizeof(to_addr)))
			return DROP_NAT_REWRITE;
		if (bpf_skb_store_bytes(skb, addr_off, &to_addr, sizeof(to_addr), 0))
			return DROP_NAT_REWRITE;
	}
	if (from_port != to_port) {
		if (bpf_l4_csum_replace(skb, l.csum_off, from_port, to_port, l.csum_flags | sizeof(to_port)))
			return DROP_NAT_REWRITE;
		if (bpf_skb_store_bytes(skb, is_src ? l.sport_off : l.dport_off, &to_port, sizeof(to_port), 0))
			return DROP_NAT_REWRITE;
	}
	return 0;
}

#endif /* KELP_NAT_H */
