/*
 * iter/udp: destroys the UDP sockets of one network namespace that are connected to a backend
 * that left its service, so their owners see an error at once and connect again (a DNS client
 * stuck on a gone resolver is the case that matters). A socket is matched by its connected peer
 * (daddr, dport) alone, however it got there: through the socket LB's connect() rewrite or by
 * the application connecting to the backend directly. Unconnected sockets have no peer and are
 * never touched (their next sendmsg() is balanced afresh). An IPv6 socket connected to an IPv4
 * peer (::ffff:a.b.c.d, a dual-stack application's) is matched by that IPv4 peer.
 *
 * The agent fills kelp_sock_destroy4 with the gone backends, opens an iterator fd in each
 * namespace to clean (the kernel walks the namespace of the thread that opens it), reads it to
 * the end, and empties the map. Each destroyed socket is reported as one struct
 * sock_destroy_record on the iterator's output.
 */
#include "lib/common.h"
#include "lib/sock_btf.h"

struct sock_destroy_key {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

struct sock_destroy_record {
	__be32 daddr;
	__be32 saddr;
	__be16 dport;
	__u16 sport;		/* host order, as the kernel keeps skc_num */
	__s32 err;		/* bpf_sock_destroy()'s result: 0, or -errno */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct sock_destroy_key);
	__type(value, __u8);
	__uint(max_entries, 4096);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_sock_destroy4 SEC(".maps");

KELP_BTF_TYPES(sock_destroy_record)
KELP_BTF_TYPES(sock_destroy_key)

/* The IPv4 peer and local address of an AF_INET socket, or of an AF_INET6 one's v4-mapped peer. */
static __always_inline bool sock4_peer(const struct sock_common *skc, __be32 *daddr, __be32 *saddr)
{
	if (skc->skc_family == AF_INET_) {
		*daddr = skc->skc_daddr;
		*saddr = skc->skc_rcv_saddr;
		return true;
	}
	if (skc->skc_family != AF_INET6_)
		return false;
	if (skc->skc_v6_daddr.in6_u.u6_addr32[0] || skc->skc_v6_daddr.in6_u.u6_addr32[1] ||
	    skc->skc_v6_daddr.in6_u.u6_addr32[2] != bpf_htonl(0xffff))
		return false;
	*daddr = skc->skc_v6_daddr.in6_u.u6_addr32[3];
	*saddr = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[3];
	return true;
}

/* Walked by reading an iterator fd: for every UDP socket of the namespace, then once with none. */
SEC("iter/udp")
int kelp_udp_destroy(struct bpf_iter__udp *ctx)
{
	struct sock_common *skc = (struct sock_common *)ctx->udp_sk;
	struct sock_destroy_key key = {};
	struct sock_destroy_record rec;
	__be32 saddr = 0;

	if (!skc || !sock4_peer(skc, &key.addr, &saddr))
		return 0;
	key.port = skc->skc_dport;
	/* An unconnected socket has no peer: daddr 0 never names a backend. */
	if (!key.addr || !bpf_map_lookup_elem(&kelp_sock_destroy4, &key))
		return 0;
	rec.daddr = key.addr;
	rec.dport = key.port;
	rec.saddr = saddr;
	rec.sport = skc->skc_num;
	rec.err = bpf_sock_destroy(skc);
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}

char __license[] SEC("license") = "Dual BSD/GPL";
