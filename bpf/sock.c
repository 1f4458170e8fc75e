/*
 * Socket-level load balancing: cgroup sock_addr hooks for the processes of the cgroup the agent
 * attaches them to (--cgroup-root). A connect() or an unconnected sendmsg() to a frontend is
 * pointed at the chosen backend before the socket ever sends, so the flow's packets carry the
 * backend's address from the start and no per-packet translation follows; recvmsg() and
 * getpeername() put the frontend back, so the application only ever sees the service address.
 * The *4 hooks serve IPv4 sockets, the *6 ones dual-stack sockets reaching an IPv4 service at its
 * v4-mapped address (::ffff:a.b.c.d); real IPv6 is left alone.
 *
 * What is translated here, and what is left to the per-packet path (lxc.c/host.c) untouched:
 *   - translated: TCP and UDP to a frontend with a usable backend in its in-cluster view (a
 *     socket of this node is inside the cluster, as for kube-proxy); the backend comes from
 *     lb4_select() (affinity, then Maglev over a hash of the socket cookie: one socket, one
 *     backend while the set stays the same);
 *   - refused at once: a frontend with no backend at all (count 0, no LB_FE_DROP_NO_LOCAL):
 *     connect() and sendmsg() fail with ECONNREFUSED, nothing is sent;
 *   - left untranslated, for the per-packet path to decide on the real packet: a frontend
 *     whose decision needs the client's address while the socket has none yet (source ranges
 *     or affinity on an unbound socket: its source is chosen by routing after this hook),
 *     LB_FE_DROP_NO_LOCAL, and a client refused by source ranges (dropped there, as from any
 *     other client);
 *   - with KELP_SOCK_HOST_ONLY, sockets of any namespace but the node's (a pod's own sidecar
 *     proxy then sees the service address it intercepts).
 * Affinity of an unbound socket (a node-local client's usual case) is kept per network
 * namespace instead, in kelp_lb4_sock_affinity: every process of a namespace shares its address.
 *
 * Reverse translation: kelp_lb4_sock_revnat, keyed by the socket cookie and the backend the
 * socket was pointed at. Cookies are never reused, so an entry left by a closed socket is only
 * dead weight until the LRU takes it.
 */
#include <linux/errno.h>
#include "lib/common.h"
#include "lib/lb.h"

/* Translate only sockets of the namespace whose cookie is KELP_SOCK_HOST_NETNS. */
volatile const __u32 KELP_SOCK_HOST_ONLY = 0;
/* The node's network namespace cookie (SO_NETNS_COOKIE of a socket of the agent's). */
volatile const __u64 KELP_SOCK_HOST_NETNS = 0;

struct sock_revnat_key {
	__u64 cookie;		/* bpf_get_socket_cookie() */
	__be32 addr;		/* the backend the socket was pointed at */
	__be16 port;
	__u16 pad;
};

struct sock_revnat {
	__be32 addr;		/* the frontend the application asked for */
	__be16 port;
	__u16 pad;
	__u32 svc_id;
};

struct sock_affinity_key {
	__u64 netns;		/* bpf_get_netns_cookie() */
	__u32 svc_id;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sock_revnat_key);
	__type(value, struct sock_revnat);
	__uint(max_entries, 131072);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_lb4_sock_revnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sock_affinity_key);
	__type(value, struct lb4_affinity);
	__uint(max_entries, 16384);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_lb4_sock_affinity SEC(".maps");

KELP_BTF_TYPES(sock_revnat_key)
KELP_BTF_TYPES(sock_revnat)
KELP_BTF_TYPES(sock_affinity_key)

enum sock_verdict {
	SOCK_REJECT = 0,	/* the syscall fails (with the retval set, else EPERM) */
	SOCK_PASS = 1,
};

static __always_inline bool sock4_in_scope(struct bpf_sock_addr *ctx)
{
	if (!KELP_SOCK_HOST_ONLY)
		return true;
	return bpf_get_netns_cookie(ctx) == KELP_SOCK_HOST_NETNS;
}

/* The socket's own IPv4 address when it has one already (bound, or given to this sendmsg). */
/*
 * IPv4 in an IPv6 socket: a dual-stack socket (Java's default) reaches an IPv4 service at
 * ::ffff:a.b.c.d, and its connect()/sendmsg() run the *6 hooks. Those programs are balanced as
 * IPv4 when the address is v4-mapped and leave real IPv6 alone. `v6` is a constant at every
 * inlined call, so each program only touches the context fields of its own family (the verifier
 * refuses user_ip4 in a *6 program and user_ip6 in a *4 one).
 */
static __always_inline bool sock_user_ip(struct bpf_sock_addr *ctx, bool v6, __be32 *addr)
{
	if (!v6) {
		*addr = ctx->user_ip4;
		return true;
	}
	if (ctx->user_ip6[0] || ctx->user_ip6[1] || ctx->user_ip6[2] != bpf_htonl(0xffff))
		return false;
	*addr = ctx->user_ip6[3];
	return true;
}

static __always_inline void sock_set_user_ip(struct bpf_sock_addr *ctx, bool v6, __be32 addr)
{
	if (v6)
		ctx->user_ip6[3] = addr;
	else
		ctx->user_ip4 = addr;
}

static __always_inline __be32 sock4_client(struct bpf_sock_addr *ctx, bool sendmsg, bool v6)
{
	struct bpf_sock *sk = ctx->sk;
	__be32 src = 0;

	if (sendmsg && !v6)
		src = ctx->msg_src_ip4;
	if (sendmsg && v6 && ctx->msg_src_ip6[0] == 0 && ctx->msg_src_ip6[1] == 0 && ctx->msg_src_ip6[2] == bpf_htonl(0xffff))
		src = ctx->msg_src_ip6[3];
	if (!src && sk) {
		if (!v6)
			src = sk->src_ip4;
		else if (sk->src_ip6[0] == 0 && sk->src_ip6[1] == 0 && sk->src_ip6[2] == bpf_htonl(0xffff))
			src = sk->src_ip6[3];
	}
	return src;
}

/* Per-namespace affinity of an unbound socket: lb4_affinity_get/put's rules, another key. */
static __always_inline bool sock4_affinity_get(const struct lb4_frontend *fe, const struct sock_affinity_key *key,
					       struct lb4_backend *out)
{
	struct lb4_affinity *a = bpf_map_lookup_elem(&kelp_lb4_sock_affinity, key);

	if (!a)
		return false;
	if (lb_now() - a->last_used > (__u64)fe->affinity_timeout * 1000000000ULL ||
	    !lb4_backend_live(fe->set_id, a->backend_id)) {
		bpf_map_delete_elem(&kelp_lb4_sock_affinity, key);
		return false;
	}
	out->addr = a->addr;
	out->port = a->port;
	out->backend_id = a->backend_id;
	out->flags = 0;
	out->pad = 0;
	return true;
}

static __always_inline void sock4_affinity_put(const struct sock_affinity_key *key, const struct lb4_backend *be)
{
	struct lb4_affinity val = { .last_used = lb_now(), .backend_id = be->backend_id, .addr = be->addr, .port = be->port };

	bpf_map_update_elem(&kelp_lb4_sock_affinity, key, &val, BPF_ANY);
}

/*
 * A backend for this socket's flow to `fe`: enum lb_select_result, or -1 when the decision must
 * be left to the per-packet path (it needs a client address the socket does not have yet).
 */
static __always_inline int sock4_select(struct bpf_sock_addr *ctx, const struct lb4_frontend *fe, bool sendmsg, bool v6,
					struct lb4_backend *out)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	__u32 hash = lb4_hash((__be32)cookie, (__be32)(cookie >> 32), 0, (__be16)ctx->user_port, (__u8)ctx->protocol);
	__be32 client = sock4_client(ctx, sendmsg, v6);
	struct sock_affinity_key akey = {};
	struct lb4_frontend plain;
	int ret;

	if (client)
		return lb4_select(fe, client, hash, out);
	if (fe->flags & LB_FE_SOURCE_RANGES)
		return -1;
	if (!(fe->flags & LB_FE_AFFINITY))
		return lb4_select(fe, 0, hash, out);
	if (fe->count == 0)
		return lb4_select(fe, 0, hash, out);
	akey.netns = bpf_get_netns_cookie(ctx);
	akey.svc_id = fe->svc_id;
	if (sock4_affinity_get(fe, &akey, out)) {
		sock4_affinity_put(&akey, out);
		return LB_SELECTED;
	}
	plain = *fe;
	plain.flags &= ~LB_FE_AFFINITY;
	ret = lb4_select(&plain, 0, hash, out);
	if (ret == LB_SELECTED)
		sock4_affinity_put(&akey, out);
	return ret;
}

/* Forward translation, shared by connect() and sendmsg(). */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx, bool sendmsg, bool v6)
{
	struct lb4_frontend *found, view, *fe = &view;
	struct lb4_backend be = {};
	struct sock_revnat_key rkey = {};
	struct sock_revnat rval = {};
	struct sock_revnat *rev;
	__be32 vip;
	__be16 vport = (__be16)ctx->user_port;
	__u8 proto = (__u8)ctx->protocol;
	int ret;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return SOCK_PASS;
	if (!sock_user_ip(ctx, v6, &vip))
		return SOCK_PASS;
	if (!sock4_in_scope(ctx))
		return SOCK_PASS;
	found = lb4_frontend_lookup(vip, vport, proto);
	if (!found)
		return SOCK_PASS;
	/* A socket of this node is inside the cluster, whichever address it asked for. */
	lb4_frontend_view(found, true, &view);
	ret = sock4_select(ctx, fe, sendmsg, v6, &be);
	if (ret == LB_NO_BACKEND) {
		/* Kernel 5.18+: a cgroup program chooses the errno of the call it fails. */
		bpf_set_retval(-ECONNREFUSED);
		return SOCK_REJECT;
	}
	if (ret != LB_SELECTED)
		return SOCK_PASS;
	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.addr = be.addr;
	rkey.port = be.port;
	rval.addr = vip;
	rval.port = vport;
	rval.svc_id = fe->svc_id;
	/*
	 * Without its reverse entry the application would see the backend's address in replies:
	 * for unconnected UDP, worse, it might drop them. Not translated rather than half-translated.
	 * An unconnected socket sends to the same backend again and again: its entry is written once.
	 */
	rev = bpf_map_lookup_elem(&kelp_lb4_sock_revnat, &rkey);
	if (!rev || rev->addr != vip || rev->port != vport || rev->svc_id != rval.svc_id) {
		if (bpf_map_update_elem(&kelp_lb4_sock_revnat, &rkey, &rval, BPF_ANY))
			return SOCK_PASS;
	}
	sock_set_user_ip(ctx, v6, be.addr);
	ctx->user_port = (__u32)be.port;
	return SOCK_PASS;
}

/* The frontend back in place of the backend, for a socket this program translated. */
static __always_inline int sock4_xlate_rev(struct bpf_sock_addr *ctx, bool v6)
{
	struct sock_revnat_key rkey = {
		.cookie = bpf_get_socket_cookie(ctx),
		.port = (__be16)ctx->user_port,
	};
	struct sock_revnat *rev;

	if (!sock_user_ip(ctx, v6, &rkey.addr))
		return SOCK_PASS;
	rev = bpf_map_lookup_elem(&kelp_lb4_sock_revnat, &rkey);
	if (rev) {
		sock_set_user_ip(ctx, v6, rev->addr);
		ctx->user_port = (__u32)rev->port;
	}
	return SOCK_PASS;
}

/* cgroup/connect4: connect() of a TCP or UDP socket of the cgroup. */
SEC("cgroup/connect4")
int kelp_sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_fwd(ctx, false, false);
}

/* cgroup/sendmsg4: a UDP datagram sent with a destination (unconnected socket). */
SEC("cgroup/sendmsg4")
int kelp_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_fwd(ctx, true, false);
}

/* cgroup/recvmsg4: the source of a UDP datagram, as recvfrom() reports it. */
SEC("cgroup/recvmsg4")
int kelp_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_rev(ctx, false);
}

/* cgroup/getpeername4: the peer of a connected socket. */
SEC("cgroup/getpeername4")
int kelp_sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_rev(ctx, false);
}

/* cgroup/connect6: connect() of a dual-stack socket, balanced when to a v4-mapped address. */
SEC("cgroup/connect6")
int kelp_sock_connect6(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_fwd(ctx, false, true);
}

/* cgroup/sendmsg6: sendmsg4's dual-stack twin. */
SEC("cgroup/sendmsg6")
int kelp_sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_fwd(ctx, true, true);
}

/* cgroup/recvmsg6: recvmsg4's dual-stack twin. */
SEC("cgroup/recvmsg6")
int kelp_sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_rev(ctx, true);
}

/* cgroup/getpeername6: getpeername4's dual-stack twin. */
SEC("cgroup/getpeername6")
int kelp_sock_getpeername6(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_rev(ctx, true);
}

char __license[] SEC("license") = "Dual BSD/GPL";
