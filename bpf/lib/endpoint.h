/* Local endpoints (pods on this node), written by the agent on CNI ADD/DEL. */
#ifndef KELP_ENDPOINT_H
#define KELP_ENDPOINT_H

#include "common.h"
#include "drop.h"
#include "eth.h"
#include "ipv4.h"
#include "metrics.h"
#include "policy.h"

/*
 * IPv4 only: the key is the bare address, so a lookup hashes and compares one word (a 20-byte
 * key, jhash and compare of 5 words, cost ~12 ns more per lookup). Packets normally find their
 * endpoint in kelp_endpoint_cache below and never reach this map. IPv6 endpoints will get a map
 * of their own (kelp_endpoints6).
 */
struct endpoint_key {
	__be32 ip4;
};

struct endpoint_info {
	__u32 ifindex;		/* host-side veth */
	__u32 ep_id;		/* the agent's endpoint id, never 0 */
	__u32 flags;		/* reserved, 0 */
	__u8 mac[6];		/* pod-side veth MAC */
	__u8 node_mac[6];	/* host-side veth MAC: the pod's gateway MAC */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, 16384);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_endpoints SEC(".maps");

/*
 * kelp_endpoint_cache: a direct-mapped copy of kelp_endpoints in an array, in front of it. A hash
 * lookup is a kernel call (~35 ns here, where every return pays the SRSO "safe RET" thunk) and
 * anti-spoofing plus delivery make two per packet; an array lookup is inlined by the verifier.
 * Slot = hash_32 of the address (Linux's multiplicative hash, the top bits of ip * golden ratio):
 * a contiguous node pod CIDR up to a /19, or several /24s, spread without a collision. A slot
 * holds one address; any other outcome (empty, dead, another address) falls back to the hash,
 * so the cache decides nothing the hash would not: it only saves the lookup.
 *
 * Array values are updated in place by a memcpy, not atomically. The agent (the only writer,
 * src/datapath/endpoints.ts) therefore changes a live slot only by clearing `live` (one byte),
 * rewrites it only while dead, and sets `live` again by a write that changes that byte alone:
 * a reader that sees live == 1 sees a whole slot that agrees with kelp_endpoints. (A packet
 * stalled between its check and its reads, e.g. by vCPU preemption, across the agent's next two
 * writes could still read the next state; the agent rewrites a slot only for a MAC change of the
 * same endpoint or after its endpoint was deleted.)
 */
enum kelp_endpoint_cache_params {
	KELP_EP_CACHE_BITS	= 14,		/* 16384 slots x 32 bytes: 512 KiB */
	KELP_EP_CACHE_MUL	= 0x61C88647,	/* GOLDEN_RATIO_32 of <linux/hash.h> */
};

struct endpoint_slot {
	__be32 ip4;		/* the address cached here */
	__u8 live;		/* 1: ip4 and info are whole and equal to ip4's kelp_endpoints entry */
	__u8 pad[3];
	struct endpoint_info info;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct endpoint_slot);
	__uint(max_entries, 1 << KELP_EP_CACHE_BITS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_endpoint_cache SEC(".maps");

static __always_inline __u32 endpoint4_slot(__be32 ip4)
{
	return (bpf_ntohl(ip4) * (__u32)KELP_EP_CACHE_MUL) >> (32 - KELP_EP_CACHE_BITS);
}

static __always_inline struct endpoint_info *endpoint4_lookup(__be32 ip4)
{
	struct endpoint_key key = { .ip4 = ip4 };
	__u32 index = endpoint4_slot(ip4);
	struct endpoint_slot *slot = bpf_map_lookup_elem(&kelp_endpoint_cache, &index);

	if (likely(slot && slot->ip4 == ip4 && slot->live))
		return &slot->info;
	return bpf_map_lookup_elem(&kelp_endpoints, &key);
}

/*
 * Anti-spoofing: a packet entering from a pod's veth may only carry that pod's address and MAC.
 * Returns the endpoint owning source address `ip4` when the packet came from its interface with its
 * MAC; otherwise NULL, with the drop reason in `*reason`. `*ep_id` is the endpoint to charge:
 * the sender when it is identified by the interface, 0 when not (a stolen address is never
 * charged to its owner).
 */
static __always_inline struct endpoint_info *
endpoint4_source(__be32 ip4, __u32 ifindex, const __u8 *src_mac, __u32 *ep_id, int *reason)
{
	struct endpoint_info *ep = endpoint4_lookup(ip4);

	*ep_id = 0;
	if (!ep) {
		*reason = DROP_SRC_UNKNOWN;
		return NULL;
	}
	if (ep->ifindex != ifindex) {
		*reason = DROP_SRC_IFACE;
		return NULL;
	}
	*ep_id = ep->ep_id;
	if (!eth_addr_equal(ep->mac, src_mac)) {
		*reason = DROP_SRC_MAC;
		return NULL;
	}
	return ep;
}

/*
 * Entry into endpoint `ep`: every way a packet reaches a pod through kelp passes here. From a
 * local pod (bpf_redirect_peer skips the host veth's egress, so kelp_to_pod never sees those),
 * from the host stack (kelp_to_pod), and from the uplink after reverse NAT (host.c). Policy is
 * decided here, before the count: the receiver's ingress, and the sender's egress too when
 * `src_id` names a local endpoint (0: the sender is not one, or its egress is decided
 * elsewhere). Returns 0, or TC_ACT_SHOT when the packet was dropped (counted and reported).
 */
static __always_inline int endpoint4_deliver(struct __sk_buff *skb, const struct pkt4 *pkt, __u32 src_id,
					     const struct endpoint_info *ep)
{
	if (policy4_check(skb, pkt, src_id, ep->ep_id))
		return TC_ACT_SHOT;
	metrics_update(ep->ep_id, KELP_DIR_TO_POD, 0, skb->len);
	return 0;
}

/*
 * A packet from beyond the node (the uplink after reverse NAT, another node through the tunnel)
 * into local endpoint `ep`: only the pod's ingress is decided (the sender's egress is not this
 * node's), then straight into the pod's namespace. The caller has checked the TTL (each hook
 * answers an expiring packet its own way). Returns a tc verdict.
 */
static __always_inline int endpoint4_redirect_in(struct __sk_buff *skb, const struct pkt4 *pkt,
						 const struct endpoint_info *ep)
{
	struct ethhdr *eth;
	struct iphdr *ip;

	if (endpoint4_deliver(skb, pkt, 0, ep))
		return TC_ACT_SHOT;
	/* Reloaded: the verifier forgets packet pointers across the policy call. */
	eth = eth_load(skb);
	ip = ipv4_load(skb);
	if (!eth || !ip)
		return drop_packet(skb, pkt, KELP_DIR_TO_POD, ep->ep_id, DROP_RUNT);
	ipv4_dec_ttl(ip);
	eth_rewrite(eth, ep->mac, ep->node_mac);
	event_trace(skb, pkt, KELP_DIR_TO_POD, ep->ep_id, ep->ifindex, KELP_TRACE_TO_ENDPOINT);
	return bpf_redirect_peer(ep->ifindex, 0);
}

/* The endpoint id of a local address, 0 when it is not one. */
static __always_inline __u32 endpoint4_id(__be32 ip4)
{
	struct endpoint_info *ep = endpoint4_lookup(ip4);

	return ep ? ep->ep_id : 0;
}

#endif /* KELP_ENDPOINT_H */
