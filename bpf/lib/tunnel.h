/*
 * Cross-node routing: which node holds a remote pod address, and how the node reaches it. The
 * contract with the agent is src/datapath/node-types.ts; the writer of these maps is
 * src/datapath/tunnel.ts (driven by the node reconciler).
 *
 *   kelp_tunnel4         remote pod CIDR (LPM) -> the node's underlay address, TUNNEL_F_* flags
 *   kelp_overlay_config  one slot: routing mode, VNI, the kelp VXLAN device's ifindex and MAC
 *
 * VXLAN mode uses one kernel vxlan device per node in external (collect_md) mode: the outer
 * destination and the VNI ride with each packet (bpf_skb_set_tunnel_key), so a node joining
 * or leaving is one map entry, never a device or an FDB entry.
 */
#ifndef KELP_TUNNEL_H
#define KELP_TUNNEL_H

#include "common.h"
#include "eth.h"

/* kelp_tunnel4 value flags (TUNNEL_F_* in node-types.ts). */
enum tunnel_flag {
	TUNNEL_F_ENCAP	= 1 << 0,	/* through the VXLAN device; without it the kernel routes (native) */
};

enum overlay_mode {
	OVERLAY_MODE_NONE	= 0,	/* not configured: nothing is encapsulated */
	OVERLAY_MODE_VXLAN	= 1,
	OVERLAY_MODE_NATIVE	= 2,
};

/* The outer TTL: a fresh hop count on the underlay, whatever the inner packet has left. */
#define TUNNEL_TTL 64

struct tunnel4_key {
	__u32 prefixlen;	/* host order (the LPM trie's own field) */
	__be32 addr;
};

struct tunnel4_info {
	__be32 node_ip;		/* the remote node's underlay address */
	__u32 flags;		/* enum tunnel_flag */
};

/* Not preallocated: an LPM trie allocates per node anyway. One entry per remote pod CIDR. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct tunnel4_key);
	__type(value, struct tunnel4_info);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_tunnel4 SEC(".maps");

struct overlay_config {
	__u32 vni;
	__u32 ifindex;		/* the kelp VXLAN device; 0: none (native mode, or not set up yet) */
	__u8 mac[6];		/* its MAC: the inner frames' source and destination */
	__u8 mode;		/* enum overlay_mode */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct overlay_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_overlay_config SEC(".maps");

/* The node holding `addr` when it is a remote pod address, else NULL. */
static __always_inline struct tunnel4_info *tunnel4_lookup(__be32 addr)
{
	struct tunnel4_key key = { .prefixlen = 32, .addr = addr };

	return bpf_map_lookup_elem(&kelp_tunnel4, &key);
}

static __always_inline struct overlay_config *overlay_config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&kelp_overlay_config, &zero);
}

/*
 * Points the packet at node `node_ip` through the VXLAN device: the outer destination and VNI
 * go into the skb's tunnel metadata, which the collect_md device reads when it encapsulates.
 * The outer source is left to the device's route lookup (the node's underlay address). Returns
 * the helper's result (0 or a negative errno).
 */
static __always_inline long tunnel4_set_key(struct __sk_buff *skb, __be32 node_ip, __u32 vni)
{
	struct bpf_tunnel_key key = {
		.tunnel_id = vni,
		/* The helper takes the remote address in host order. */
		.remote_ipv4 = bpf_ntohl(node_ip),
		.tunnel_ttl = TUNNEL_TTL,
	};

	return bpf_skb_set_tunnel_key(skb, &key, sizeof(key), 0);
}

/*
 * Inner MACs as the kernel writes them for the node's own traffic routed onto the NOARP device:
 * both the device's own. The receiving node's kelp_from_overlay rewrites them again for its pod;
 * the source must only differ from the receiving device's MAC, which the vxlan driver drops as
 * a loop (vxlan_set_mac).
 */
static __always_inline void tunnel4_inner_macs(struct ethhdr *eth, const struct overlay_config *cfg)
{
	eth_rewrite(eth, cfg->mac, cfg->mac);
}

#endif /* KELP_TUNNEL_H */
