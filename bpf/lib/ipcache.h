/*
 * Who an address is: the longest prefix of kelp_ipcache4 containing it gives the peer identity
 * that policy is keyed by (src/datapath/policy-types.ts). Written by the agent's reconciler
 * (src/datapath/policy.ts applyPolicyMaps); read only when policy is enforced.
 */
#ifndef KELP_IPCACHE_H
#define KELP_IPCACHE_H

#include "common.h"

/* Reserved identities, as IDENTITY_* in src/datapath/policy-types.ts. */
enum kelp_identity {
	KELP_IDENTITY_ANY	= 0,	/* the wildcard of kelp_policy4 keys, never an address's identity */
	KELP_IDENTITY_HOST	= 1,	/* this node: always allowed, never tracked */
	KELP_IDENTITY_WORLD	= 2,	/* every address no entry covers */
	KELP_IDENTITY_FIRST	= 256,	/* the first one the agent hands out */
};

struct ipcache4_key {
	__u32 prefixlen;	/* 0..32, host order (the LPM trie's own field) */
	__be32 addr;
};

struct ipcache4_info {
	__u32 identity;
	__be32 tunnel_ip;	/* the node behind the address; 0: this node or none (multi-node, later) */
	__u32 flags;		/* reserved, 0 */
	__u32 pad;
};

/* Not preallocated: an LPM trie allocates per node anyway, and most nodes hold far fewer
 * prefixes than the limit. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache4_key);
	__type(value, struct ipcache4_info);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_ipcache4 SEC(".maps");

/* The identity of `addr`: its longest covering prefix's, or WORLD when none covers it (the agent
 * normally writes a /0, so a miss only happens before its first write). */
static __always_inline __u32 ipcache4_identity(__be32 addr)
{
	struct ipcache4_key key = { .prefixlen = 32, .addr = addr };
	struct ipcache4_info *info = bpf_map_lookup_elem(&kelp_ipcache4, &key);

	return info ? info->identity : KELP_IDENTITY_WORLD;
}

#endif /* KELP_IPCACHE_H */
