/*
 * Service load balancing: the maps the agent writes (src/datapath/service.ts, the contract is
 * src/datapath/service-types.ts) and the backend selection shared by the per-packet path (tc:
 * lxc.c, host.c) and the socket path (cgroup: sock.c). Nothing here takes an skb: callers pass
 * addresses, ports and a flow hash.
 *
 * Selection for a new flow to (addr, port, proto):
 *   1. kelp_lb4_frontends: none → not a service. The client's view of it (lb4_frontend_view):
 *      a client from outside the cluster (the uplink's ingress) chooses among (set_id, count,
 *      table_id), one inside it (a pod of this node, the node itself) among (in_set_id,
 *      in_count, in_table_id): kube-proxy gives in-cluster clients of an externalTrafficPolicy
 *      Local address the Cluster view. count 0 → no usable backend: rejected
 *      (DROP_LB_NO_BACKEND), or dropped silently with LB_FE_DROP_NO_LOCAL (LB_FE_IN_DROP_NO_LOCAL
 *      for the in-cluster view) (DROP_LB_NO_LOCAL);
 *   2. LB_FE_SOURCE_RANGES: the client must be in kelp_lb4_source_ranges for svc_id;
 *   3. LB_FE_AFFINITY: kelp_lb4_affinity's backend for (svc_id, client), seen within the
 *      timeout and still a member of the set;
 *   4. the slot: when count > 1, slot (hash % m) of the view's Maglev table, m slots kept in
 *      chunks of LB_MAGLEV_CHUNK (kelp_lb4_maglev[(table_id, index / 256)][index % 256]);
 *      else 0. The backend is kelp_lb4_backends[(set_id, slot)].
 * kelp_lb4_members says whether a backend is still in a set: a tracked flow (kelp_lb4_ct) or an
 * affinity whose backend left is chosen again.
 *
 * The agent's write order (make before break): backends, members and tables of new and changed
 * sets, then frontends, then what is stale. A frontend therefore never names a slot that is not
 * there; a packet that meets a set mid-change may pick a backend of either version.
 */
#ifndef KELP_LB_H
#define KELP_LB_H

#include <linux/in.h>
#include "common.h"
#include "tuple.h"

/* Frontend flags (FRONTEND_* of service-types.ts). */
enum lb_frontend_flag {
	LB_FE_AFFINITY		= 1 << 0,
	LB_FE_SOURCE_RANGES	= 1 << 1,
	LB_FE_DROP_NO_LOCAL	= 1 << 2,
	LB_FE_EXTERNAL		= 1 << 3,
	LB_FE_NODEPORT		= 1 << 4,
	LB_FE_IN_DROP_NO_LOCAL	= 1 << 5,	/* LB_FE_DROP_NO_LOCAL of the in-cluster view */
};

/* Backend flags (BACKEND_*). */
enum lb_backend_flag {
	LB_BE_LOCAL		= 1 << 0,
	LB_BE_TERMINATING	= 1 << 1,
};

enum lb_limits {
	LB_FRONTENDS_MAX	= 65536,	/* 10,000 services x a few ports x (ClusterIP, NodePort, LB IPs) */
	LB_BACKENDS_MAX		= 131072,	/* (set, slot): every set's backends */
	LB_MAGLEV_MAX		= 262144,	/* 256-slot chunks: a two-backend set's table is one */
	LB_MAGLEV_CHUNK		= 256,		/* slots per kelp_lb4_maglev value */
	LB_AFFINITY_MAX		= 65536,
	LB_SOURCE_RANGES_MAX	= 16384,
	LB_CT_MAX		= 262144,	/* two entries a flow (forward, reverse) */
	LB_MAGLEV_M_DEFAULT	= 16381,	/* --maglev-table-size: the largest table a set gets */
};

/*
 * kelp_lb4_frontends, kelp_lb4_backends and kelp_lb4_members are preallocated (~4 + 9 + 8 MiB at
 * these sizes): an insert then costs no allocation, which halves the agent's write of 10,000
 * services (measured: 30,000 frontends 52 ms instead of 120 ms). The Maglev chunks are not: only
 * sets with several backends have a table, and a large set's table is many chunks.
 */
struct lb4_frontend_key {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

struct lb4_frontend {
	__u32 svc_id;		/* the Service port: reverse NAT, affinity, source ranges */
	__u32 set_id;		/* the backend set of clients from outside; 0 with count 0 */
	__u16 count;		/* backends in the set; 0: reject (or drop, LB_FE_DROP_NO_LOCAL) */
	__u16 flags;		/* enum lb_frontend_flag */
	__u32 affinity_timeout;	/* seconds, with LB_FE_AFFINITY */
	__u32 table_id;		/* kelp_lb4_maglev key of its set's table: sets over the same backends
				 * (a Service's ports) share one, written once */
	__u32 in_set_id;	/* the backend set of clients inside the cluster (pods, the node) */
	__u16 in_count;		/* 0: reject (or drop, LB_FE_IN_DROP_NO_LOCAL) */
	__u16 pad;
	__u32 in_table_id;
	__u32 m;		/* slots of the outside view's table (0: none) */
	__u32 in_m;		/* slots of the in-cluster view's table */
};

/*
 * A Maglev table of m slots is ceil(m / 256) chunks, (table_id, 0), (table_id, 1), ...; the slots
 * past m in the last chunk hold LB_MAGLEV_NO_SLOT. Each set's m is sized to its backends (the
 * agent's maglevTableSizeFor: >= 100 slots per backend, a prime below a power of two, capped at
 * --maglev-table-size), so 10,000 two-backend Services are 10,000 chunks of 512 bytes, not
 * 10,000 tables of the largest size.
 */
struct lb4_maglev_key {
	__u32 table_id;
	__u32 chunk;
};

struct lb4_maglev_chunk {
	__u16 slot[LB_MAGLEV_CHUNK];
};

#define LB_MAGLEV_NO_SLOT 0xffff

struct lb4_backend_key {
	__u32 set_id;
	__u32 slot;		/* 0 .. count - 1 */
};

struct lb4_backend {
	__be32 addr;
	__be16 port;
	__u8 flags;		/* enum lb_backend_flag */
	__u8 pad;
	__u32 backend_id;	/* unique per (address, port, protocol) while it exists */
};

struct lb4_member_key {
	__u32 set_id;
	__u32 backend_id;
};

struct lb4_affinity_key {
	__u32 svc_id;
	__be32 client;
};

struct lb4_affinity {
	__u64 last_used;	/* bpf_ktime_get_ns() */
	__u32 backend_id;
	__be32 addr;
	__be16 port;
	__u16 pad;
	__u32 pad2;
};

/* LPM key: prefixlen counts the 32 bits of svc_id plus the client prefix. */
struct lb4_source_range_key {
	__u32 prefixlen;
	__be32 svc_id;		/* network order: the trie matches bytes in order */
	__be32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_frontend_key);
	__type(value, struct lb4_frontend);
	__uint(max_entries, LB_FRONTENDS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_lb4_frontends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_backend_key);
	__type(value, struct lb4_backend);
	__uint(max_entries, LB_BACKENDS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_lb4_backends SEC(".maps");

/* (set, backend) → its slot: whether a backend is still in a set. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_member_key);
	__type(value, __u32);
	__uint(max_entries, LB_BACKENDS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_lb4_members SEC(".maps");

/*
 * Maglev tables in chunks: (table_id, chunk) → 256 slots (a frontend's table_id: sets with the
 * same table share one). Not preallocated: only sets with several backends have a table.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_maglev_key);
	__type(value, struct lb4_maglev_chunk);
	__uint(max_entries, LB_MAGLEV_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_lb4_maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb4_affinity);
	__uint(max_entries, LB_AFFINITY_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_lb4_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lb4_source_range_key);
	__type(value, __u8);
	__uint(max_entries, LB_SOURCE_RANGES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_lb4_source_ranges SEC(".maps");

/* ---- selection ---- */

static __always_inline __u32 lb_mix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/*
 * The flow hash Maglev indexes with: murmur3's finaliser over the host-order words of the
 * tuple, mirrored by lb4FlowHash() in src/datapath/service.ts. The socket path hashes whatever
 * identifies its flow (e.g. the socket cookie) and passes that.
 */
static __always_inline __u32 lb4_hash(__be32 saddr, __be32 daddr, __be16 sport, __be16 dport, __u8 proto)
{
	__u32 h = 0x6b656c70;	/* "kelp" */

	h = lb_mix32(h ^ bpf_ntohl(saddr));
	h = lb_mix32(h ^ bpf_ntohl(daddr));
	h = lb_mix32(h ^ (((__u32)bpf_ntohs(sport) << 16) | bpf_ntohs(dport)));
	return lb_mix32(h ^ proto);
}

static __always_inline struct lb4_frontend *lb4_frontend_lookup(__be32 addr, __be16 port, __u8 proto)
{
	struct lb4_frontend_key key = { .addr = addr, .port = port, .proto = proto };

	return bpf_map_lookup_elem(&kelp_lb4_frontends, &key);
}

/*
 * The frontend as one client sees it, into *v: the outside view as it is, or (in_cluster) the
 * in-cluster set and its drop flag in the places selection reads (set_id, count, table_id,
 * LB_FE_DROP_NO_LOCAL). Everything downstream (lb4_select, the service conntrack's set check,
 * affinity) then needs no notion of views.
 */
static __always_inline void lb4_frontend_view(const struct lb4_frontend *fe, bool in_cluster, struct lb4_frontend *v)
{
	*v = *fe;
	if (!in_cluster)
		return;
	v->set_id = fe->in_set_id;
	v->count = fe->in_count;
	v->table_id = fe->in_table_id;
	v->m = fe->in_m;
	v->flags &= ~(LB_FE_DROP_NO_LOCAL | LB_FE_IN_DROP_NO_LOCAL);
	if (fe->flags & LB_FE_IN_DROP_NO_LOCAL)
		v->flags |= LB_FE_DROP_NO_LOCAL;
}

/* loadBalancerSourceRanges: whether `client` may use the frontend. */
static __always_inline bool lb4_source_allowed(const struct lb4_frontend *fe, __be32 client)
{
	struct lb4_source_range_key key = { .prefixlen = 64, .svc_id = bpf_htonl(fe->svc_id), .addr = client };

	if (!(fe->flags & LB_FE_SOURCE_RANGES))
		return true;
	return bpf_map_lookup_elem(&kelp_lb4_source_ranges, &key) != NULL;
}

static __always_inline struct lb4_backend *lb4_backend_lookup(__u32 set_id, __u32 slot)
{
	struct lb4_backend_key key = { .set_id = set_id, .slot = slot };

	return bpf_map_lookup_elem(&kelp_lb4_backends, &key);
}

/* Whether the backend is (still) in the set. */
static __always_inline bool lb4_backend_live(__u32 set_id, __u32 backend_id)
{
	struct lb4_member_key key = { .set_id = set_id, .backend_id = backend_id };

	return bpf_map_lookup_elem(&kelp_lb4_members, &key) != NULL;
}

/* The slot of a flow with hash `hash`: Maglev's when the set has a table, 0 otherwise. */
static __always_inline __u32 lb4_maglev_slot(const struct lb4_frontend *fe, __u32 hash)
{
	struct lb4_maglev_key key = { .table_id = fe->table_id };
	struct lb4_maglev_chunk *chunk;
	__u32 index;

	if (fe->count <= 1)
		return 0;
	if (fe->m == 0)
		return hash % fe->count;	/* a set without a table: a spread, if not Maglev's */
	index = hash % fe->m;
	key.chunk = index / LB_MAGLEV_CHUNK;
	chunk = bpf_map_lookup_elem(&kelp_lb4_maglev, &key);
	if (!chunk)
		return hash % fe->count;	/* table not written yet: a spread, if not Maglev's */
	return chunk->slot[index % LB_MAGLEV_CHUNK];
}

static __always_inline __u64 lb_now(void)
{
	return bpf_ktime_get_ns();
}

/* ClientIP affinity: the client's backend when it is recent and still in the set. */
static __always_inline bool lb4_affinity_get(const struct lb4_frontend *fe, __be32 client, struct lb4_backend *out)
{
	struct lb4_affinity_key key = { .svc_id = fe->svc_id, .client = client };
	struct lb4_affinity *a;

	if (!(fe->flags & LB_FE_AFFINITY))
		return false;
	a = bpf_map_lookup_elem(&kelp_lb4_affinity, &key);
	if (!a)
		return false;
	if (lb_now() - a->last_used > (__u64)fe->affinity_timeout * 1000000000ULL ||
	    !lb4_backend_live(fe->set_id, a->backend_id)) {
		bpf_map_delete_elem(&kelp_lb4_affinity, &key);
		return false;
	}
	out->addr = a->addr;
	out->port = a->port;
	out->backend_id = a->backend_id;
	out->flags = 0;
	out->pad = 0;
	return true;
}

/* Records (or refreshes) the client's backend; an affinity that cannot be stored is only lost. */
static __always_inline void lb4_affinity_put(const struct lb4_frontend *fe, __be32 client, const struct lb4_backend *be)
{
	struct lb4_affinity_key key = { .svc_id = fe->svc_id, .client = client };
	struct lb4_affinity val = { .last_used = lb_now(), .backend_id = be->backend_id, .addr = be->addr, .port = be->port };

	if (fe->flags & LB_FE_AFFINITY)
		bpf_map_update_elem(&kelp_lb4_affinity, &key, &val, BPF_ANY);
}

/* What lb4_select() decided when it chose no backend. */
enum lb_select_result {
	LB_SELECTED		= 0,
	LB_NO_BACKEND		= 1,	/* count 0: reject the client at once */
	LB_NO_LOCAL		= 2,	/* count 0 with LB_FE_DROP_NO_LOCAL: drop silently */
	LB_SOURCE_DENIED	= 3,	/* not in loadBalancerSourceRanges: drop */
};

/*
 * A backend for a new flow of `client` (flow hash `hash`) to frontend `fe`, into *out. Returns
 * enum lb_select_result. Records the affinity.
 */
static __always_inline int lb4_select(const struct lb4_frontend *fe, __be32 client, __u32 hash, struct lb4_backend *out)
{
	struct lb4_backend *be;

	if (!lb4_source_allowed(fe, client))
		return LB_SOURCE_DENIED;
	if (fe->count == 0)
		return fe->flags & LB_FE_DROP_NO_LOCAL ? LB_NO_LOCAL : LB_NO_BACKEND;
	if (lb4_affinity_get(fe, client, out)) {
		lb4_affinity_put(fe, client, out);
		return LB_SELECTED;
	}
	be = lb4_backend_lookup(fe->set_id, lb4_maglev_slot(fe, hash));
	if (!be)
		return LB_NO_BACKEND;
	*out = *be;
	lb4_affinity_put(fe, client, out);
	return LB_SELECTED;
}

/* ---- service conntrack (per-packet path) ---- */

/*
 * kelp_lb4_ct: the per-packet path's flows, two entries each:
 *   forward  key = the flow as the client sends it (client → frontend), dir LB_CT_FORWARD
 *            → the backend (addr, port, id), the set it came from, svc_id;
 *   reverse  key = the reply as the backend sends it (backend → client, or → the hairpin
 *            address), dir LB_CT_REVERSE → the frontend (addr, port) to put back as source,
 *            and the client's own address (hairpin: the destination to put back).
 * Translated flows stay apart at the backend: one client port reaching one backend through two
 * frontends (two Services over the same pods, a ClusterIP and a NodePort) would be one TCP
 * connection to the backend, and the second flow's reverse entry would take the first's replies.
 * A new flow whose reverse key is another flow's gets a client port of LB_NAT_PORT_MIN..MAX
 * (outside the kernel's ephemeral range, so never one the client's own connections pick): the
 * forward entry's nat_port is the port written, the reverse entry (keyed by it) the client's own
 * to put back. As netfilter's implicit source NAT does for kube-proxy's DNAT.
 * A map of its own rather than more fields in kelp_pct4: policy's conntrack exists only while
 * enforcement is on, is keyed by the translated flow (one entry for both directions), and is
 * collected by policy's rules; translation needs the client's view as a key, on every node,
 * enforced or not.
 */
enum lb_ct_dir {
	LB_CT_FORWARD	= 0,
	LB_CT_REVERSE	= 1,
};

enum lb_ct_flag {
	LB_CT_F_HAIRPIN	= 1 << 0,	/* the client is its own backend: source rewritten to the frontend */
	LB_CT_F_EXTERNAL = 1 << 1,	/* opened from outside the node (host.c) */
	LB_CT_F_HOST	= 1 << 2,	/* opened by the node itself, per packet (host.c): replies go back
					 * into the node's stack through lo */
};

struct lb4_ct_entry {
	__u64 created;		/* bpf_ktime_get_ns() */
	__u64 last_seen;
	__be32 addr;		/* forward: backend; reverse: frontend address */
	__be16 port;		/* forward: backend port; reverse: frontend port */
	__u8 flags;		/* enum lb_ct_flag */
	__u8 tcp_flags;		/* TCP flags OR'd over the forward direction */
	__be32 nat_addr;	/* forward: the source written for a hairpin flow; reverse: the client */
	__u32 backend_id;
	__u32 set_id;
	__u32 svc_id;
	__be16 nat_port;	/* forward: the client port written (0: its own); reverse: the client's own port to put back */
	__u16 pad;
	__u32 pad2;
};

/* Client ports a clashing flow is moved to (host order, inclusive): see kelp_lb4_ct above. */
enum lb_nat_ports {
	LB_NAT_PORT_MIN		= 61000,
	LB_NAT_PORT_MAX		= 65535,
	LB_NAT_PORT_TRIES	= 8,
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct tuple4);
	__type(value, struct lb4_ct_entry);
	__uint(max_entries, LB_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_lb4_ct SEC(".maps");

#endif /* KELP_LB_H */
