/*
 * Programs on the node's kelp VXLAN device (VXLAN routing mode; src/datapath/node-types.ts is
 * the contract). The device is in external (collect_md) mode: it hands tc the inner frame of
 * every packet it decapsulates, and encapsulates what it is given with the tunnel key the
 * sender set on the skb. Pods' packets to other nodes never pass here on the way out:
 * kelp_from_pod sets their key and redirects them to the device (see kelp_to_overlay for the
 * hook they do cross). Maps are shared with lxc.o and host.o by pinning.
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/drop.h"
#include "lib/metrics.h"
#include "lib/events.h"
#include "lib/eth.h"
#include "lib/ipv4.h"
#include "lib/endpoint.h"
#include "lib/lb.h"
#include "lib/lb_nat.h"
#include "lib/tunnel.h"

/*
 * The uplink's masquerade, set at load when it is on (Datapath.attachOverlay): the answer of a
 * backend on another node to a client this node translated (host.c, host4_service_remote)
 * comes back through the tunnel, addressed to KELP_MASQ_IP and a NAT port, and is handed to the
 * uplink's ingress, whose kelp_host_ingress holds the translation. 0: off.
 */
volatile const __be32 KELP_MASQ_IP = 0;
volatile const __u32 KELP_UPLINK_IFINDEX = 0;
volatile const __u16 KELP_NAT_PORT_MIN = 61000;
volatile const __u16 KELP_NAT_PORT_MAX = 65535;

/* PACKET_HOST and PACKET_OTHERHOST of <linux/if_packet.h>, which clashes with the BPF headers. */
#define OVERLAY_PACKET_HOST 0
#define OVERLAY_PACKET_OTHERHOST 3

/*
 * To the node's stack. The inner destination MAC is the sending device's (tunnel4_inner_macs),
 * so eth_type_trans on this device marked the frame for another host, which ip_rcv drops: it
 * is made the node's own, and the stack routes it as any packet it receives.
 */
static __always_inline int overlay_to_stack(struct __sk_buff *skb)
{
	if (skb->pkt_type == OVERLAY_PACKET_OTHERHOST)
		bpf_skb_change_type(skb, OVERLAY_PACKET_HOST);
	return TC_ACT_OK;
}

/*
 * Into a local pod: one routing hop (TTL, MACs) and bpf_redirect_peer into its namespace, after
 * the pod's ingress policy against the sender's identity (kelp_ipcache4 knows every pod in the
 * store, remote ones too). redirect_peer skips the host veth's tc egress: this is the packet's
 * only entry check, as for host.c's deliveries.
 */
static __always_inline int overlay4_deliver(struct __sk_buff *skb, struct pkt4 *pkt, const struct endpoint_info *ep)
{
	struct iphdr *ip;

	ip = ipv4_load(skb);
	if (!ip)
		return drop_packet(skb, pkt, KELP_DIR_TO_POD, ep->ep_id, DROP_RUNT);
	if (ip->ttl <= 1)
		return drop_packet(skb, pkt, KELP_DIR_TO_POD, ep->ep_id, DROP_TTL_EXCEEDED);
	/* The sender is on another node. */
	return endpoint4_redirect_in(skb, pkt, ep);
}

/*
 * A NodePort, externalIP or LoadBalancer IP of this node reached through the tunnel: in VXLAN
 * mode a pod's packets to another node's own address ride the tunnel (node-types.ts), so they
 * never cross kelp_host_ingress, which translates the same frontends for clients arriving on
 * the uplink. Translated here with the outside view (LB_FE_EXTERNAL frontends); the reply
 * goes back through the tunnel from kelp_from_pod. Returns the local backend's endpoint, or
 * NULL with `*ret` a drop reason, LB_XLATE_REJECT (no usable backend: overlay4_reject), or
 * not (the stack's). A backend on another node is left to the stack, as kelp_host_ingress does
 * until SNAT for remote backends exists.
 */
static __always_inline struct endpoint_info *overlay4_service(struct __sk_buff *skb, struct pkt4 *pkt, int *ret)
{
	*ret = lb4_forward(skb, pkt, LB_CLIENT_OUTSIDE);
	if (*ret != LB_XLATE_DONE)
		return NULL;
	return endpoint4_lookup(pkt->daddr);
}

/*
 * A frontend of this node without a usable backend, reached through the tunnel: answered at
 * once (a RST, or ICMP port unreachable), as kelp_host_ingress answers a client on the uplink,
 * never left to time out. The answer goes back through the tunnel to the node it came from
 * (its key names the sender, the outer source of the packet it answers); redirected to the
 * device's egress, it passes kelp_to_overlay as kelp_from_pod's packets do, and the client's
 * node delivers it as any packet from this node. Counted as DROP_LB_NO_BACKEND.
 */
static __always_inline int overlay4_reject(struct __sk_buff *skb, struct pkt4 *pkt)
{
	struct bpf_tunnel_key key = {};
	struct overlay_config *cfg;
	struct ethhdr *eth;
	__be32 sender;

	drop_packet(skb, pkt, KELP_DIR_TO_POD, 0, DROP_LB_NO_BACKEND);
	cfg = overlay_config_get();
	if (!cfg || !cfg->ifindex || bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0))
		return TC_ACT_SHOT;
	/* The helper gives the remote address in host order. */
	sender = bpf_htonl(key.remote_ipv4);
	if (lb4_reject(skb, pkt))
		return TC_ACT_SHOT;
	/* The reject swapped the frame's MACs: the sender's device's own would come back to it as
	 * the source, which its driver drops as a loop. This node's, as for all it sends. */
	eth = eth_load(skb);
	if (!eth)
		return TC_ACT_SHOT;
	tunnel4_inner_macs(eth, cfg);
	if (tunnel4_set_key(skb, sender, cfg->vni))
		return TC_ACT_SHOT;
	return bpf_redirect(cfg->ifindex, 0);
}

/* To this node's masquerade address and a NAT port: a translated flow's answer (see above), or
 * an ICMP error, which kelp_host_ingress matches to its flow by the packet it quotes. */
static __always_inline bool overlay4_masq_reply(const struct pkt4 *pkt)
{
	__u16 port = bpf_ntohs(pkt->dport);

	if (KELP_MASQ_IP == 0 || KELP_UPLINK_IFINDEX == 0 || pkt->daddr != KELP_MASQ_IP)
		return false;
	if (pkt->proto == IPPROTO_ICMP)
		return icmp4_is_error(icmp4_type(pkt));
	return (pkt->proto == IPPROTO_TCP || pkt->proto == IPPROTO_UDP) && port >= KELP_NAT_PORT_MIN && port <= KELP_NAT_PORT_MAX;
}

/*
 * tc ingress of the VXLAN device: a packet from another node, decapsulated. IPv4 for a local
 * endpoint is delivered into its pod (a service reply reverse-translated first: the client
 * reached a backend on the sending node through kelp_from_pod's DNAT here), as is a packet to
 * one of this node's service frontends with a local backend; the answer to a flow this node
 * translated goes to the uplink's ingress; anything else goes to the node's stack.
 */
/*
 * The sender holds the source it claims: policy judges a packet by its inner source, so a host
 * that can reach the VXLAN port must not be able to speak as another node's pod (or that node
 * itself), nor as one of this node's own pods. An inner source in a kelp_tunnel4 entry (a remote
 * pod CIDR, a remote node's /32) must have come from that entry's node, the outer source; one
 * that is this node's own endpoint never comes through the tunnel. Any other source (no entry:
 * outside the cluster's pods) is WORLD to policy anyway. The metadata is the decapsulating
 * device's; a packet without it did not come off the wire (BPF_PROG_TEST_RUN). Returns 0 or a
 * drop reason.
 */
static __always_inline int overlay4_check_sender(struct __sk_buff *skb, const struct pkt4 *pkt)
{
	struct bpf_tunnel_key key = {};
	struct tunnel4_info *tun;

	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0))
		return 0;
	tun = tunnel4_lookup(pkt->saddr);
	if (tun)
		/* The helper gives the remote address in host order. */
		return tun->node_ip == bpf_htonl(key.remote_ipv4) ? 0 : DROP_TUNNEL_SPOOF;
	return endpoint4_lookup(pkt->saddr) ? DROP_TUNNEL_SPOOF : 0;
}

SEC("tc")
int kelp_from_overlay(struct __sk_buff *skb)
{
	struct endpoint_info *ep;
	struct pkt4 pkt = {};
	struct ethhdr *eth;
	__u8 ct_flags = 0;
	int ret;

	eth = eth_load(skb);
	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return overlay_to_stack(skb);
	pkt.eth_proto = eth->h_proto;
	ret = ipv4_parse(skb, &pkt);
	if (ret < 0)
		return drop_packet(skb, &pkt, KELP_DIR_TO_POD, endpoint4_id(pkt.daddr), ret);
	ret = overlay4_check_sender(skb, &pkt);
	if (ret < 0)
		return drop_packet(skb, &pkt, KELP_DIR_TO_POD, endpoint4_id(pkt.daddr), ret);
	ret = lb4_reverse(skb, &pkt, &ct_flags);
	if (ret < 0)
		return drop_packet(skb, &pkt, KELP_DIR_TO_POD, endpoint4_id(pkt.daddr), ret);
	/* The reply to the node's own flow to a frontend (kelp_host_egress, per packet): into its
	 * stack as if it arrived on lo, where a VIP source passes the rp_filter (lb4_to_host_stack). */
	if (ret == LB_XLATE_DONE && (ct_flags & LB_CT_F_HOST))
		return lb4_to_host_stack(skb);
	ep = endpoint4_lookup(pkt.daddr);
	if (!ep && ret == LB_XLATE_NONE) {
		ep = overlay4_service(skb, &pkt, &ret);
		if (ret == LB_XLATE_REJECT)
			return overlay4_reject(skb, &pkt);
	}
	if (!ep && ret < 0)
		return drop_packet(skb, &pkt, KELP_DIR_TO_POD, 0, ret);
	if (!ep && overlay4_masq_reply(&pkt))
		return bpf_redirect(KELP_UPLINK_IFINDEX, BPF_F_INGRESS);
	if (!ep)
		return overlay_to_stack(skb);
	return overlay4_deliver(skb, &pkt, ep);
}

/* 224.0.0.0/4 and 255.255.255.255. */
static __always_inline bool overlay4_not_unicast(__be32 daddr)
{
	return (daddr & bpf_htonl(0xf0000000)) == bpf_htonl(0xe0000000) || daddr == 0xffffffff;
}

/*
 * tc egress of the VXLAN device: what the device is about to encapsulate. Two kinds of packet
 * come here. kelp_from_pod's, redirected to the device with their tunnel key set: a redirect to
 * a device's egress goes through dev_queue_xmit, tc egress included; they pass as they are. And
 * the node's own traffic that its routes put on the device (a remote pod CIDR routed onto it:
 * socket LB to a remote backend, health probes): its key is set here from kelp_tunnel4, and a
 * destination without an entry is dropped (the device would drop it anyway, uncounted).
 * Anything but IPv4 passes: without a key the collect_md device drops it.
 */
SEC("tc")
int kelp_to_overlay(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};
	struct overlay_config *cfg;
	struct tunnel4_info *tun;
	struct pkt4 pkt = {};
	struct ethhdr *eth;
	int ret;

	/* Succeeds only for an skb carrying tunnel metadata, and the only metadata that reaches this
	 * hook is kelp_from_pod's (a received packet's is dropped when the stack routes it). Its
	 * remote address is not checked: for metadata set to transmit, the helper reads back the
	 * source field (0 here), not the destination that was set. */
	if (bpf_skb_get_tunnel_key(skb, &key, sizeof(key), 0) == 0)
		return TC_ACT_OK;
	eth = eth_load(skb);
	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	pkt.eth_proto = eth->h_proto;
	ret = ipv4_parse(skb, &pkt);
	if (ret < 0)
		return drop_packet(skb, &pkt, KELP_DIR_FROM_POD, 0, ret);
	/* Multicast and broadcast have no node to go to (the device's own IGMP reports): dropped
	 * as the device would drop them, without a drop event for each. */
	if (overlay4_not_unicast(pkt.daddr))
		return TC_ACT_SHOT;
	tun = tunnel4_lookup(pkt.daddr);
	cfg = overlay_config_get();
	if (!tun || !(tun->flags & TUNNEL_F_ENCAP) || !cfg || !cfg->ifindex)
		return drop_packet(skb, &pkt, KELP_DIR_FROM_POD, 0, DROP_NO_TUNNEL);
	if (tunnel4_set_key(skb, tun->node_ip, cfg->vni))
		return drop_packet(skb, &pkt, KELP_DIR_FROM_POD, 0, DROP_NO_TUNNEL);
	return TC_ACT_OK;
}

/* Types the agent decodes that no map or non-inlined function of this object mentions. */
struct overlay_btf_types {
	struct kelp_event event;
	enum kelp_event_type event_type;
	enum kelp_trace_point trace_point;
	enum kelp_metrics_reason metrics_reason;
	enum tunnel_flag tunnel_flag;
	enum overlay_mode overlay_mode;
	enum lb_ct_flag lb_ct_flag;
	enum lb_xlate lb_xlate;
};
KELP_BTF_TYPES(overlay_btf_types)

/* GPL-compatible so the verifier offers every helper; the code is the project's own. */
char __license[] SEC("license") = "Dual BSD/GPL";
