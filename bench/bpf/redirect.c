/*
 * Reference for bench/datapath.ts and bench/pod2pod.ts, as issue 5 defines it: a tc program that
 * only looks the destination IPv4 up in a hash map (-> ifindex) and calls bpf_redirect_peer.
 * kelp_from_pod does more (anti-spoofing, validation, TTL, metrics) but looks endpoints up in a
 * direct-mapped array first (kelp_endpoint_cache, inlined by the verifier), so it can end below
 * this reference: each hash lookup is a kernel call, expensive on CPUs with return mitigations.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __be32);
	__type(value, __u32);
	__uint(max_entries, 16384);
} bench_dst4 SEC(".maps");

SEC("tc")
int bench_redirect(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 *ifindex;

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	ifindex = bpf_map_lookup_elem(&bench_dst4, &ip->daddr);
	if (!ifindex)
		return TC_ACT_OK;
	return bpf_redirect_peer(*ifindex, 0);
}

char __license[] SEC("license") = "Dual BSD/GPL";
