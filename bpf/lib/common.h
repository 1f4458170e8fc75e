/* Shared by every kelp BPF program: kernel UAPI, libbpf helpers, packet access. */
#ifndef KELP_COMMON_H
#define KELP_COMMON_H

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef likely
#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#endif

/* Direction from the pod's point of view; 0 is left invalid so zeroed memory is never a direction. */
enum kelp_dir {
	KELP_DIR_FROM_POD = 1,
	KELP_DIR_TO_POD   = 2,
};

/*
 * What the parsers learnt about a packet: filled as parsing goes, so a drop at any stage reports
 * what was known. Addresses and ports in network order. For ICMP, `sport` holds the type and code
 * bytes and `dport` the echo identifier.
 */
struct pkt4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__be16 eth_proto;
	__u8 proto;
	__u8 hlen;		/* IPv4 header length in bytes, options included */
	/* Set by lb4_forward when it translated the packet: the Service port (lb4_frontend.svc_id),
	 * for the flow's events (the frontend it hit: kelp_flow_svc). 0: not a service flow. */
	__u32 svc_id;
};

/*
 * Puts the member types of `struct name` into the object's BTF, where
 * test/unit/btf-layout.test.ts checks the agent's mirrors against them: clang writes BTF only for
 * types that a function, map or global mentions. The function is never called, so never loaded
 * (libbpf only loads subprograms that a program calls).
 */
#define KELP_BTF_TYPES(name) \
	__attribute__((used)) static int name(struct name *types) { return 0; }

static __always_inline void *ctx_data(const struct __sk_buff *skb)
{
	return (void *)(long)skb->data;
}

static __always_inline void *ctx_data_end(const struct __sk_buff *skb)
{
	return (void *)(long)skb->data_end;
}

/*
 * Makes the first `len` bytes of the packet reachable by direct packet access. Direct access only
 * sees the skb's linear head; headers of non-linear skbs (GSO/GRO traffic, or frames built from
 * page fragments) may sit in the paged part, which bpf_skb_pull_data() copies into the head.
 * Returns false when the packet is shorter than `len`. Every packet pointer is invalid afterwards:
 * callers reload them from the skb. `len` must be bounded for the verifier.
 */
static __always_inline bool ctx_linear(struct __sk_buff *skb, __u32 len)
{
	if (likely(ctx_data(skb) + len <= ctx_data_end(skb)))
		return true;
	if (len > skb->len)
		return false;
	return bpf_skb_pull_data(skb, len) == 0;
}

#endif /* KELP_COMMON_H */
