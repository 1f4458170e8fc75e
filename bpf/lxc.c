/*
 * Pod veth programs. One instance of each is shared by every pod: the agent attaches them with tcx
 * to each pod's host-side veth and describes the pods in kelp_endpoints, so a new pod costs a map
 * update and two link creations, never a program load. IPv4 only today: a pod may send IPv4 and
 * ARP, both validated, and nothing else (see kelp_from_pod).
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/drop.h"
#include "lib/metrics.h"
#include "lib/events.h"
#include "lib/eth.h"
#include "lib/arp.h"
#include "lib/ipv4.h"
#include "lib/endpoint.h"
#include "lib/lb.h"
#include "lib/lb_nat.h"
#include "lib/tunnel.h"

/* Hands the packet to the host stack. */
static __always_inline int lxc_pass(struct __sk_buff *skb, enum kelp_dir dir, __u32 ep_id)
{
	metrics_update(ep_id, dir, 0, skb->len);
	return TC_ACT_OK;
}

/* Pod to pod on this node: one routing hop, straight into the destination pod's namespace. */
static __always_inline int lxc4_local_deliver(struct __sk_buff *skb, const struct pkt4 *pkt,
					      __u32 src_id, const struct endpoint_info *dst)
{
	struct ethhdr *eth = ctx_data(skb);
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > ctx_data_end(skb))
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, src_id, DROP_RUNT);
	/* No ICMP time exceeded is generated yet: the sender just sees a loss. */
	if (ip->ttl <= 1)
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, src_id, DROP_TTL_EXCEEDED);
	/* Both sides' policy, the sender's egress and the receiver's ingress, in one check. */
	if (endpoint4_deliver(skb, pkt, src_id, dst))
		return TC_ACT_SHOT;

	/* Reloaded: the verifier forgets packet pointers across the policy call. */
	eth = ctx_data(skb);
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > ctx_data_end(skb))
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, src_id, DROP_RUNT);
	ipv4_dec_ttl(ip);
	eth_rewrite(eth, dst->mac, dst->node_mac);
	metrics_update(src_id, KELP_DIR_FROM_POD, 0, skb->len);
	event_trace(skb, pkt, KELP_DIR_FROM_POD, src_id, dst->ifindex, KELP_TRACE_TO_ENDPOINT);
	return bpf_redirect_peer(dst->ifindex, 0);
}

/*
 * A frontend without backends: the client gets its answer at once (TCP RST, ICMP port
 * unreachable) straight back into its namespace, and the attempt is counted as a drop.
 */
static __always_inline int lxc4_reject(struct __sk_buff *skb, struct pkt4 *pkt, __u32 src_id)
{
	int ret = lb4_reject(skb, pkt);

	drop_packet(skb, pkt, KELP_DIR_FROM_POD, src_id, DROP_LB_NO_BACKEND);
	if (ret)
		return TC_ACT_SHOT;
	return bpf_redirect_peer(skb->ifindex, 0);
}

/* A MAC of a bpf_fib_lookup answer into the frame: the lookup's smac and dmac sit at 2-byte
 * offsets of the stack, where the verifier refuses eth_addr_copy's 4-byte access. */
static __always_inline void lxc4_fib_mac_copy(__u8 *dst, const __u8 *src)
{
	eth_word16 *d = (eth_word16 *)dst;
	const eth_word16 *s = (const eth_word16 *)src;

	d[0] = s[0];
	d[1] = s[1];
	d[2] = s[2];
}

/*
 * Out through the node's route to the destination, past its stack: the NodePort answer the stack
 * would drop as a martian, and (native routing) a pod's packet to another node's pod, which the
 * stack would only forward by the same route at the cost of a full pass through it. A known
 * neighbour's MAC is written here and the packet goes straight to the device's egress; an
 * unresolved one is left to bpf_redirect_neigh, which resolves it. Anything the lookup cannot
 * route (no route, forwarding off, a single packet over the MTU) is the stack's.
 */
static __always_inline int lxc4_fib_redirect(struct __sk_buff *skb, const struct pkt4 *pkt, __u32 src_id)
{
	struct bpf_fib_lookup fib = {
		.family = 2,	/* AF_INET */
		.l4_protocol = pkt->proto,
		.ipv4_src = pkt->saddr,
		.ipv4_dst = pkt->daddr,
		.ifindex = skb->ifindex,
	};
	struct bpf_redir_neigh nh = { .nh_family = 2 };
	struct ethhdr *eth;
	struct iphdr *ip;
	long rc;

	/* The source is rewritten already: look up from the packet as it is now. */
	ip = ipv4_load(skb);
	if (!ip)
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, src_id, DROP_RUNT);
	fib.ipv4_src = ip->saddr;
	/* As in host4_route: a GSO packet's whole length would answer FRAG_NEEDED, and the stack
	 * would drop the translated answer as a martian; it is cut to its segments on the way out. */
	if (!skb->gso_size)
		fib.tot_len = bpf_ntohs(ip->tot_len);
	if (ip->ttl <= 1)
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, src_id, DROP_TTL_EXCEEDED);
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return lxc_pass(skb, KELP_DIR_FROM_POD, src_id);
	/* Reloaded: the helper call ends the verifier's packet pointers. */
	eth = eth_load(skb);
	ip = ipv4_load(skb);
	if (!eth || !ip)
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, src_id, DROP_RUNT);
	ipv4_dec_ttl(ip);
	metrics_update(src_id, KELP_DIR_FROM_POD, 0, skb->len);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		lxc4_fib_mac_copy(eth->h_dest, fib.dmac);
		lxc4_fib_mac_copy(eth->h_source, fib.smac);
		return bpf_redirect(fib.ifindex, 0);
	}
	/* The lookup left the next hop (the gateway, or the destination on-link) in ipv4_dst. */
	nh.ipv4_nh = fib.ipv4_dst;
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
}

/*
 * To a pod on another node (its address in kelp_tunnel4): the sender's egress policy is decided
 * here, the receiver's ingress on its own node. VXLAN: one routing hop (TTL, inner MACs), the
 * tunnel key, and straight to the VXLAN device. Native: one routing hop by the node's route to
 * that pod CIDR (via the other node, out of the uplink), straight to the uplink's egress, its
 * source kept (every node's pod CIDR is in kelp_nomasq4, so kelp_host_egress leaves it alone).
 */
static __always_inline int lxc4_remote(struct __sk_buff *skb, const struct pkt4 *pkt, __u32 src_id,
				       const struct tunnel4_info *tun)
{
	__be32 node_ip = tun->node_ip;
	__u32 flags = tun->flags;
	struct overlay_config *cfg;
	struct ethhdr *eth;
	struct iphdr *ip;

	if (policy4_check(skb, pkt, src_id, 0))
		return TC_ACT_SHOT;
	if (!(flags & TUNNEL_F_ENCAP))
		return lxc4_fib_redirect(skb, pkt, src_id);

	cfg = overlay_config_get();
	if (!cfg || !cfg->ifindex)
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, src_id, DROP_NO_TUNNEL);
	/* Reloaded: the verifier forgets packet pointers across the policy call. */
	eth = eth_load(skb);
	ip = ipv4_load(skb);
	if (!eth || !ip)
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, src_id, DROP_RUNT);
	/* No ICMP time exceeded is generated yet: the sender just sees a loss. */
	if (ip->ttl <= 1)
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, src_id, DROP_TTL_EXCEEDED);
	ipv4_dec_ttl(ip);
	tunnel4_inner_macs(eth, cfg);
	if (tunnel4_set_key(skb, node_ip, cfg->vni))
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, src_id, DROP_NO_TUNNEL);
	metrics_update(src_id, KELP_DIR_FROM_POD, 0, skb->len);
	event_trace(skb, pkt, KELP_DIR_FROM_POD, src_id, cfg->ifindex, KELP_TRACE_TO_OVERLAY);
	return bpf_redirect(cfg->ifindex, 0);
}

static __always_inline int from_pod_ipv4(struct __sk_buff *skb, struct pkt4 *pkt)
{
	struct tunnel4_info *tun;
	struct endpoint_info *src, *dst;
	struct ethhdr *eth;
	__u8 ct_flags = 0;
	__u32 src_id;
	int ret;

	ret = ipv4_parse(skb, pkt);
	if (ret < 0)
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, 0, ret);
	eth = eth_load(skb);
	if (!eth)
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, 0, DROP_RUNT);

	src = endpoint4_source(pkt->saddr, skb->ifindex, eth->h_source, &src_id, &ret);
	if (!src)
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, src_id, ret);

	/* Services first, policy after: policy and delivery see the backend's side of the flow. */
	ret = lb4_reverse(skb, pkt, &ct_flags);
	if (ret == LB_XLATE_NONE)
		ret = lb4_forward(skb, pkt, 0);
	if (ret == LB_XLATE_REJECT)
		return lxc4_reject(skb, pkt, src_id);
	if (ret < 0)
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, src_id, ret);

	dst = endpoint4_lookup(pkt->daddr);
	if (dst)
		return lxc4_local_deliver(skb, pkt, src_id, dst);
	tun = tunnel4_lookup(pkt->daddr);
	if (tun)
		return lxc4_remote(skb, pkt, src_id, tun);
	if (policy4_check(skb, pkt, src_id, 0))
		return TC_ACT_SHOT;
	/* A reply to the node's own flow to a frontend (host.c translated it): into its stack. */
	if (ct_flags & LB_CT_F_HOST) {
		metrics_update(src_id, KELP_DIR_FROM_POD, 0, skb->len);
		return lb4_to_host_stack(skb);
	}
	/* A reply to a client outside the node now comes from a node address (NodePort): the stack
	 * would drop it as a martian source, so it is routed here. */
	if (ct_flags & LB_CT_F_EXTERNAL)
		return lxc4_fib_redirect(skb, pkt, src_id);
	return lxc_pass(skb, KELP_DIR_FROM_POD, src_id);
}

/*
 * Every ARP a pod sends is validated, as its IPv4 is: the node's neighbour table must learn
 * nothing from a pod but "the pod's address is at the pod's MAC".
 *
 * - Shorter than IPv4-over-Ethernet ARP (28 bytes): RUNT. Another hardware or protocol type,
 *   other address lengths, an opcode other than request and reply, a reply from 0.0.0.0:
 *   ARP_MALFORMED.
 * - The sender: the frame's source MAC and the sender hardware address must be the pod's MAC, and
 *   the sender protocol address the pod's address behind this interface. A probe (RFC 5227:
 *   sender 0.0.0.0, only as a request) names no sender address; the address it probes must then
 *   be the pod's own. Anything else: ARP_SPOOF, charged to the pod only when the address named
 *   is its own (as for IPv4, a stolen address is never charged to its owner).
 * - A valid request for another address is answered here with the host veth's MAC: the pod's
 *   gateway (and, with an on-link /24, every other address), so no address is needed on the node
 *   side and IPv4 from the pod always reaches kelp_from_pod.
 * - Every other valid ARP goes to the node: the pod's replies to the node's requests (the node
 *   routes to the pod on-link through a /32 on the host veth, so its kernel ARPs for the pod's
 *   address), gratuitous ARP for the pod's own address (an answer would report a conflict), and
 *   probes for it.
 */
static __always_inline int from_pod_arp(struct __sk_buff *skb, struct pkt4 *pkt)
{
	struct endpoint_info *ep;
	struct arp_eth4 *arp;
	struct ethhdr *eth;
	__be32 claimed;
	__u32 ep_id;
	int ret;

	if (!ctx_linear(skb, ETH_HLEN + sizeof(*arp)))
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, 0, DROP_RUNT);
	eth = ctx_data(skb);
	arp = (void *)(eth + 1);
	if ((void *)(arp + 1) > ctx_data_end(skb))
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, 0, DROP_RUNT);
	if (!arp4_is_eth_ipv4(arp))
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, 0, DROP_ARP_MALFORMED);

	pkt->saddr = arp4_spa(arp);
	pkt->daddr = arp4_tpa(arp);
	claimed = pkt->saddr;
	if (claimed == 0) {
		if (arp->op != bpf_htons(ARPOP_REQUEST))
			return drop_packet(skb, pkt, KELP_DIR_FROM_POD, 0, DROP_ARP_MALFORMED);
		claimed = pkt->daddr;
	}
	/* One reason for every failed check (`ret` says which): the event's saddr/daddr and the
	 * charged endpoint tell a stolen address from a wrong MAC. */
	ep = endpoint4_source(claimed, skb->ifindex, eth->h_source, &ep_id, &ret);
	if (!ep || !eth_addr_equal(arp->sha, eth->h_source))
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, ep_id, DROP_ARP_SPOOF);

	if (arp->op != bpf_htons(ARPOP_REQUEST) || pkt->saddr == 0 || pkt->saddr == pkt->daddr)
		return lxc_pass(skb, KELP_DIR_FROM_POD, ep_id);
	arp4_reply(eth, arp, ep->node_mac);
	metrics_update(ep_id, KELP_DIR_FROM_POD, 0, skb->len);
	event_trace(skb, pkt, KELP_DIR_FROM_POD, ep_id, skb->ifindex, KELP_TRACE_ARP_REPLY);
	return bpf_redirect(skb->ifindex, 0);
}

/*
 * tc ingress of the pod's host-side veth: packets leaving the pod.
 *
 * A pod may send what kelp validates, IPv4 and ARP, and nothing else: whatever the node's stack
 * would do with any other frame, kelp has not checked its source. VLAN tags are the sharpest
 * case. The kernel takes the outer 802.1Q/802.1ad tag off a received frame before tc
 * (skb_vlan_untag in __netif_receive_skb_core), so a frame tagged once shows here the EtherType
 * it carried, its tag only in skb->vlan_*, and one tagged twice shows its inner tag. After tc the
 * stack removes a tag of VLAN 0 (a priority tag) and delivers what it carried: IPv4 inside two
 * such tags would reach pods, the node and the uplink with any source address. So a tag in the
 * skb or in the frame is a drop of its own, reported with the EtherType the pod wrote after its
 * MAC. __sk_buff.vlan_present still means "a tag was taken off" where sk_buff lost the bit (Linux
 * 6.2+ rewrites the read to vlan_all != 0); vlan_tci alone cannot tell, as a VLAN 0 priority 0
 * tag has TCI 0.
 *
 * IPv6 is dropped, not passed: pods get no IPv6 address from kelp, and an IPv6 packet handed to
 * the node reaches its services on the host veth's link-local address, unfiltered. What a pod's
 * kernel sends on its own (router and neighbour solicitations, MLD) is dropped and counted too.
 */
SEC("tc")
int kelp_from_pod(struct __sk_buff *skb)
{
	struct pkt4 pkt = {};
	struct ethhdr *eth = eth_load(skb);

	if (!eth)
		return drop_packet(skb, &pkt, KELP_DIR_FROM_POD, 0, DROP_RUNT);
	pkt.eth_proto = eth->h_proto;
	if (skb->vlan_present) {
		pkt.eth_proto = skb->vlan_proto;
		return drop_packet(skb, &pkt, KELP_DIR_FROM_POD, 0, DROP_VLAN);
	}
	switch (pkt.eth_proto) {
	case bpf_htons(ETH_P_IP):
		return from_pod_ipv4(skb, &pkt);
	case bpf_htons(ETH_P_ARP):
		return from_pod_arp(skb, &pkt);
	case bpf_htons(ETH_P_8021Q):
	case bpf_htons(ETH_P_8021AD):
	case bpf_htons(ETH_P_QINQ1):	/* pre-standard QinQ TPIDs, still sent by some switches */
	case bpf_htons(ETH_P_QINQ2):
	case bpf_htons(ETH_P_QINQ3):
		return drop_packet(skb, &pkt, KELP_DIR_FROM_POD, 0, DROP_VLAN);
	case bpf_htons(ETH_P_IPV6):
		return drop_packet(skb, &pkt, KELP_DIR_FROM_POD, 0, DROP_IPV6);
	default:
		return drop_packet(skb, &pkt, KELP_DIR_FROM_POD, 0, DROP_ETHERTYPE);
	}
}

/* tc egress of the pod's host-side veth: packets the host stack sends into the pod. */
SEC("tc")
int kelp_to_pod(struct __sk_buff *skb)
{
	struct pkt4 pkt = {};
	struct endpoint_info *ep;
	struct ethhdr *eth = eth_load(skb);
	__u8 ct_flags = 0;
	int ret;

	if (!eth)
		return drop_packet(skb, &pkt, KELP_DIR_TO_POD, 0, DROP_RUNT);
	pkt.eth_proto = eth->h_proto;
	if (pkt.eth_proto != bpf_htons(ETH_P_IP))
		return lxc_pass(skb, KELP_DIR_TO_POD, 0);

	ret = ipv4_parse(skb, &pkt);
	if (ret < 0)
		return drop_packet(skb, &pkt, KELP_DIR_TO_POD, 0, ret);
	/* A reply from a backend the client reached through the stack (the node, or beyond it). */
	ret = lb4_reverse(skb, &pkt, &ct_flags);
	if (ret < 0)
		return drop_packet(skb, &pkt, KELP_DIR_TO_POD, 0, ret);
	ep = endpoint4_lookup(pkt.daddr);
	/* Traffic for an address that does not live behind this veth is the host's routing choice,
	 * not this endpoint's: passed, unattributed. */
	if (!ep || ep->ifindex != skb->ifindex)
		return lxc_pass(skb, KELP_DIR_TO_POD, 0);
	/* A local sender reaches here through the node's stack (e.g. after a DNAT there): its
	 * egress is decided here too, against the address it now goes to. */
	if (endpoint4_deliver(skb, &pkt, policy_enforced() ? endpoint4_id(pkt.saddr) : 0, ep))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

/* Types the agent decodes that no map or non-inlined function of this object mentions. */
struct lxc_btf_types {
	struct kelp_event event;
	enum kelp_drop_reason drop_reason;
	enum kelp_event_type event_type;
	enum kelp_trace_point trace_point;
	enum kelp_dir dir;
	enum kelp_metrics_limits metrics_limits;
	enum kelp_endpoint_cache_params endpoint_cache_params;
	enum kelp_metrics_reason metrics_reason;
	enum kelp_identity identity;
	enum policy_dir policy_dir;
	enum policy_action policy_action;
	enum policy_tier policy_tier;
	enum policy_prefix policy_prefix;
	enum policy_config_flag policy_config_flag;
	enum policy_limits policy_limits;
	enum ct_tcp_flag ct_tcp_flag;
	enum lb_frontend_flag lb_frontend_flag;
	enum lb_backend_flag lb_backend_flag;
	enum lb_limits lb_limits;
	enum lb_select_result lb_select_result;
	enum lb_ct_dir lb_ct_dir;
	enum lb_ct_flag lb_ct_flag;
	enum lb_xlate lb_xlate;
	enum tunnel_flag tunnel_flag;
	enum overlay_mode overlay_mode;
};
KELP_BTF_TYPES(lxc_btf_types)

/* GPL-compatible so the verifier offers every helper; the code is the project's own. */
char __license[] SEC("license") = "Dual BSD/GPL";
