/*
 * The few kernel structures socket programs read, declared for CO-RE: libbpf relocates each
 * field access against the running kernel's BTF (preserve_access_index), so only the fields
 * used are named and their offsets are the kernel's, whatever its build. Kept to what
 * bpf/iter_udp.c needs; not a vmlinux.h.
 */
#ifndef KELP_SOCK_BTF_H
#define KELP_SOCK_BTF_H

#include <linux/types.h>

/* <linux/socket.h> is not usable in BPF objects; AF_INET and AF_INET6 are these in every ABI. */
#define AF_INET_ 2
#define AF_INET6_ 10

struct seq_file;

/* struct in6_addr, flavoured (___kelp) so it never clashes with a UAPI header's definition. */
struct in6_addr___kelp {
	union {
		__u8 u6_addr8[16];
		__be32 u6_addr32[4];
	} in6_u;
} __attribute__((preserve_access_index));

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct in6_addr___kelp skc_v6_daddr;
	struct in6_addr___kelp skc_v6_rcv_saddr;
} __attribute__((preserve_access_index));

struct udp_sock;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
	__u32 uid;
	int bucket;
} __attribute__((preserve_access_index));

/* Kernel 6.5+: closes a socket from a socket iterator (ECONNABORTED to its owner). */
extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

#endif /* KELP_SOCK_BTF_H */
