/* Local endpoints (pods on this node), written by the agent on CNI ADD/DEL. */
#ifndef KELP_ENDPOINT_H
#define KELP_ENDPOINT_H

#include "common.h"
#include "drop.h"
#include "eth.h"
#include "metrics.h"

/*
 * IPv4 only: the key is the bare address, so a lookup hashes and compares one word. Anti-spoofing
 * and delivery look up twice per packet, and a 20-byte key (jhash and compare of 5 words) cost
 * ~12 ns more per packet. IPv6 endpoints will get a map of their own (kelp_endpoints6).
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

static __always_inline struct endpoint_info *endpoint4_lookup(__be32 ip4)
{
	struct endpoint_key key = { .ip4 = ip4 };

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
 * from the host stack (kelp_to_pod), and from the uplink after reverse NAT (host.c). Ingress
 * policy belongs here, before the count. Returns 0 or a drop reason.
 */
static __always_inline int endpoint4_deliver(struct __sk_buff *skb, const struct pkt4 *pkt,
					     const struct endpoint_info *ep)
{
	metrics_update(ep->ep_id, KELP_DIR_TO_POD, 0, skb->len);
	return 0;
}

#endif /* KELP_ENDPOINT_H */
