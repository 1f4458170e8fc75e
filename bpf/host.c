/*
 * Programs on the node's uplink and its lo: masquerade of pod traffic leaving the node, Services
 * reached from outside, and the per-packet path of the node's own clients.
 *   - Masquerade: pod packets routed out of the uplink get the node's address and a
 *     kelp-allocated port (kelp_host_egress); their replies are translated back and, for a local
 *     pod, delivered straight into it (kelp_host_ingress). Pod traffic to the kelp_nomasq4
 *     ranges passes untouched.
 *   - Services from outside: NodePorts, externalIPs, LoadBalancer IPs (kelp_host_ingress).
 *   - The node's own connections to a frontend when socket LB does not translate them (it is off,
 *     or the process is outside its cgroup): the node's packet to a VIP leaves by the route the
 *     node has for it (its default route: the uplink's egress), to one of its own addresses
 *     through lo (kelp_host_lo); both translate it with the in-cluster view and deliver it to the
 *     backend, and its replies come back into the node's stack through lo (lb4_to_host_stack).
 * IPv4 only; the uplink must be an Ethernet device.
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
#include "lib/conntrack.h"
#include "lib/nat.h"
#include "lib/tunnel.h"

/* Pod CIDR (network order) and its prefix length: sources that get masqueraded. */
volatile const __be32 KELP_POD_CIDR = 0;
volatile const __u32 KELP_POD_PREFIX = 0;
/* The uplink's IPv4 address (network order). 0 switches masquerade off. */
volatile const __be32 KELP_MASQ_IP = 0;
/* NAT ports (and ICMP echo identifiers), host order, inclusive. Kept out of the kernel's default
 * ephemeral range (32768-60999) so the node's own connections never collide with them. */
volatile const __u16 KELP_NAT_PORT_MIN = 61000;
volatile const __u16 KELP_NAT_PORT_MAX = 65535;
/* The kelp VXLAN device's UDP port, host order, in VXLAN mode; 0 otherwise. */
volatile const __u16 KELP_VXLAN_PORT = 0;

static __always_inline int host_masq_enabled(void)
{
	return KELP_MASQ_IP != 0 && KELP_POD_PREFIX >= 1 && KELP_POD_PREFIX <= 32;
}

/* The start of both programs: returns ipv4_parse()'s verdict on an IPv4 frame (0 or a drop
 * reason, `pkt` filled as far as it got), or 1 for anything kelp leaves alone here: masquerade
 * off, not Ethernet/IPv4. */
static __always_inline int host_parse(struct __sk_buff *skb, struct pkt4 *pkt)
{
	struct ethhdr *eth;

	if (!host_masq_enabled())
		return 1;
	eth = eth_load(skb);
	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return 1;
	pkt->eth_proto = eth->h_proto;
	return ipv4_parse(skb, pkt);
}

/* host_parse() without masquerade: 0 with `pkt` filled for an IPv4 frame, else non-zero. */
static __always_inline int host4_parse_any(struct __sk_buff *skb, struct pkt4 *pkt)
{
	struct ethhdr *eth = eth_load(skb);

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return 1;
	pkt->eth_proto = eth->h_proto;
	return ipv4_parse(skb, pkt) ? 1 : 0;
}

static __always_inline int host_pod_source(__be32 saddr)
{
	__be32 mask = bpf_htonl(0xffffffffu << (32 - KELP_POD_PREFIX));

	return (saddr & mask) == KELP_POD_CIDR;
}

static __always_inline int host_pod_prefix_valid(void)
{
	return KELP_POD_PREFIX >= 1 && KELP_POD_PREFIX <= 32;
}

static __always_inline int host_nat_port(__be16 port)
{
	__u16 p = bpf_ntohs(port);

	return p >= KELP_NAT_PORT_MIN && p <= KELP_NAT_PORT_MAX;
}

/* Drops are charged to the pod when its address is one of ours. */
static __always_inline int host_drop(struct __sk_buff *skb, const struct pkt4 *pkt, enum kelp_dir dir,
				     __be32 pod, int reason)
{
	return drop_packet(skb, pkt, dir, endpoint4_id(pod), reason);
}

/*
 * VXLAN between this node and another (kelp_tunnel4 holds every remote node's address as a /32
 * in VXLAN mode): UDP to the VXLAN port with `peer`, the other node's address, as the destination
 * on egress or the source on ingress. Every pod packet across nodes crosses both uplink hooks
 * encapsulated, and nothing here applies to it: the outer packet is the node's own (no
 * masquerade), to no frontend, and no translation's reply. Found from the headers in place,
 * before the parse and the Service and conntrack lookups (~150-200 ns a crossing otherwise). A
 * fragment is not one: its bytes there are not a UDP header.
 */
static __always_inline bool host4_is_vxlan(struct __sk_buff *skb, bool egress)
{
	struct tunnel4_info *tun;
	struct ethhdr *eth;
	struct iphdr *ip;
	struct udphdr *udp;

	if (!KELP_VXLAN_PORT)
		return false;
	eth = ctx_data(skb);
	ip = (void *)(eth + 1);
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > ctx_data_end(skb))
		return false;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
	    ipv4_is_fragment(ip) || udp->dest != bpf_htons(KELP_VXLAN_PORT))
		return false;
	/* A pod's own datagram to that port is a pod's: masqueraded as any other. */
	if (egress && host_pod_prefix_valid() && host_pod_source(ip->saddr))
		return false;
	tun = tunnel4_lookup(egress ? ip->daddr : ip->saddr);
	return tun && (tun->flags & TUNNEL_F_ENCAP);
}

/* ---- egress: pod → outside ---- */

/* A pod answering with an ICMP error about a packet it got through the reverse mapping: the
 * quoted packet is the reply direction of a translated flow, so it is translated as such. */
static __always_inline int snat4_icmp_error(struct __sk_buff *skb, const struct pkt4 *pkt, const struct nat4_cfg *cfg)
{
	__u32 l4_off = ETH_HLEN + pkt->hlen;
	struct nat4_entry *fwd;
	struct icmp4_quote q;
	struct tuple4 fkey;
	int ret;

	if (icmp4_quote_load(skb, l4_off, &q) < 0)
		return DROP_NAT_INVALID;
	tuple4_reverse(&q.tuple, &fkey, NAT_DIR_EGRESS);
	fwd = bpf_map_lookup_elem(&kelp_snat4, &fkey);
	if (!fwd)
		return DROP_NAT_NO_MAPPING;
	ret = icmp4_quote_rewrite(skb, l4_off, &q, 0, fwd->addr, fwd->port);
	if (ret)
		return ret;
	return nat4_rewrite(skb, ETH_HLEN, l4_off, IPPROTO_ICMP, 1, pkt->saddr, cfg->addr, 0, 0);
}

static __always_inline int snat4_egress(struct __sk_buff *skb, const struct pkt4 *pkt)
{
	struct nat4_cfg cfg = { .addr = KELP_MASQ_IP, .port_min = KELP_NAT_PORT_MIN, .port_max = KELP_NAT_PORT_MAX };
	struct tuple4 orig = { .saddr = pkt->saddr, .daddr = pkt->daddr, .proto = pkt->proto, .dir = NAT_DIR_EGRESS };
	struct nat4_entry nat;
	struct iphdr *ip;
	__u8 flags = 0;
	int ret;

	ip = ipv4_load(skb);
	if (!ip)
		return DROP_NAT_INVALID;
	/* Only a first fragment carries ports, and kelp keeps no fragment state to translate the
	 * rest; a pod's fragments would leave with its own address. */
	if (ipv4_is_fragment(ip))
		return DROP_NAT_FRAG;

	switch (pkt->proto) {
	case IPPROTO_TCP:
		if (l4_tcp_flags(skb, ETH_HLEN + pkt->hlen, &flags) < 0)
			return DROP_NAT_INVALID;
		/* fallthrough */
	case IPPROTO_UDP:
		orig.sport = pkt->sport;
		orig.dport = pkt->dport;
		break;
	case IPPROTO_ICMP:
		if (icmp4_type(pkt) == ICMP_ECHO) {
			orig.sport = pkt->dport; /* the identifier */
			break;
		}
		if (icmp4_is_error(icmp4_type(pkt)))
			return snat4_icmp_error(skb, pkt, &cfg);
		return DROP_NAT_UNSUPP_PROTO;
	default:
		return DROP_NAT_UNSUPP_PROTO;
	}

	ret = snat4_get(&orig, &cfg, &nat);
	if (ret)
		return ret;
	if (ct4_account(&orig, 0, skb->len, flags) < 0)
		return DROP_CT_MAP_FULL;
	return nat4_rewrite(skb, ETH_HLEN, ETH_HLEN + pkt->hlen, pkt->proto, 1, orig.saddr, nat.addr, orig.sport,
			    nat.port);
}

/* ---- the node's own clients (per packet) ---- */

/*
 * Out by the node's route to a backend that is not a pod of this node, with the neighbour's MAC.
 * A call of its own: its 64-byte lookup would otherwise sit in the hook's frame, under every
 * other call's (the verifier's 512 bytes are for the deepest chain). The lookup is the
 * kernel's forwarding one, for the node's own packets too: it answers only where the uplink
 * forwards (IP forwarding on, as on any Kubernetes node).
 */
static __attribute__((noinline)) int host4_route(struct __sk_buff *skb, const struct pkt4 *pkt)
{
	struct bpf_fib_lookup fib = {
		.family = 2,	/* AF_INET */
		.l4_protocol = pkt->proto,
		.ipv4_src = pkt->saddr,
		.ipv4_dst = pkt->daddr,
		.ifindex = skb->ifindex,
	};
	struct iphdr *ip = ipv4_load(skb);

	if (!ip)
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, 0, DROP_RUNT);
	/* The MTU check is for single packets: a GSO packet (a forwarded TCP stream's, GRO'd) is cut
	 * to its segment size on the way out, and with its whole length the lookup answers
	 * FRAG_NEEDED, which would hand it to the stack (a martian once its source was translated). */
	if (!skb->gso_size)
		fib.tot_len = bpf_ntohs(ip->tot_len);
	if (bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH) != BPF_FIB_LKUP_RET_SUCCESS)
		return TC_ACT_OK;
	return bpf_redirect_neigh(fib.ifindex, NULL, 0, 0);
}

/*
 * The node's packet to a frontend (on the uplink's egress or lo's): translated with the
 * in-cluster view and tracked with LB_CT_F_HOST. A local backend gets it through its host veth,
 * whose kelp_to_pod decides policy as for any packet from the node; a backend that is the node
 * itself (its source rewritten to the frontend: the hairpin) through lo; any other by the node's
 * route. No backend: the reject goes back into the node's stack. Returns a verdict, or -1 when
 * the packet is not to a frontend.
 */
static __always_inline int host4_service_own(struct __sk_buff *skb, struct pkt4 *pkt)
{
	struct endpoint_info *ep;
	__be32 client = pkt->saddr;
	struct ethhdr *eth;
	int ret = lb4_forward(skb, pkt, LB_CLIENT_HOST);

	if (ret == LB_XLATE_NONE)
		return -1;
	if (ret == LB_XLATE_REJECT) {
		ret = lb4_reject(skb, pkt);
		drop_packet(skb, pkt, KELP_DIR_FROM_POD, 0, DROP_LB_NO_BACKEND);
		return ret ? TC_ACT_SHOT : lb4_to_host_stack(skb);
	}
	if (ret < 0)
		return drop_packet(skb, pkt, KELP_DIR_FROM_POD, 0, ret);
	if (pkt->daddr == client)
		return skb->ifindex == LB_LOOPBACK_IFINDEX ? TC_ACT_OK : lb4_to_host_stack(skb);
	ep = endpoint4_lookup(pkt->daddr);
	if (!ep)
		return host4_route(skb, pkt);
	eth = eth_load(skb);
	if (!eth)
		return drop_packet(skb, pkt, KELP_DIR_TO_POD, ep->ep_id, DROP_RUNT);
	eth_rewrite(eth, ep->mac, ep->node_mac);
	return bpf_redirect(ep->ifindex, 0);
}

/* tc egress of the node's uplink: everything the node sends out, pods' forwarded packets too. */
SEC("tc")
int kelp_host_egress(struct __sk_buff *skb)
{
	struct pkt4 pkt = {};
	int ret;

	if (host4_is_vxlan(skb, true))
		return TC_ACT_OK;
	/* A parse error leaves saddr unset unless the IPv4 header itself was sound; the node's own
	 * oddities are its business, a pod's are dropped before they leak its address. */
	ret = host_parse(skb, &pkt);
	if (ret == 1 && host4_parse_any(skb, &pkt) == 0)
		ret = 2;
	/* The node's own reply to a client outside that reached it through a Service (a backend on
	 * the host network): the frontend goes back as its source. */
	if (ret == 0 || ret == 2) {
		__u8 ct_flags = 0;
		int lb = lb4_reverse(skb, &pkt, &ct_flags);

		if (lb == LB_XLATE_DONE)
			return ct_flags & LB_CT_F_HOST ? lb4_to_host_stack(skb) : TC_ACT_OK;
		if (lb < 0)
			return drop_packet(skb, &pkt, KELP_DIR_FROM_POD, 0, lb);
		/* The node's own packet to a VIP it routes out here (a pod's was translated in
		 * kelp_from_pod, or at its connect()). */
		if (!host_pod_prefix_valid() || !host_pod_source(pkt.saddr)) {
			lb = host4_service_own(skb, &pkt);
			if (lb >= 0)
				return lb;
		}
	}
	if (ret > 0 || !host_pod_source(pkt.saddr) || nat4_nomasq(pkt.daddr))
		return TC_ACT_OK;
	if (ret == 0)
		ret = snat4_egress(skb, &pkt);
	if (ret < 0)
		return host_drop(skb, &pkt, KELP_DIR_FROM_POD, pkt.saddr, ret);
	return TC_ACT_OK;
}

/* ---- ingress: outside → pod ---- */

/*
 * Into a local pod without a trip through the node's stack: through endpoint4_deliver(), one
 * routing hop (TTL, MACs) and bpf_redirect_peer into the pod's namespace. Anything else the
 * stack routes as usual. redirect_peer skips the host veth's tc egress, so kelp_to_pod never
 * sees these packets: endpoint4_deliver() here is their only entry check.
 */
static __always_inline int host4_deliver(struct __sk_buff *skb, struct pkt4 *pkt)
{
	struct endpoint_info *ep = endpoint4_lookup(pkt->daddr);
	struct ethhdr *eth;
	struct iphdr *ip;

	if (!ep)
		return TC_ACT_OK;
	eth = eth_load(skb);
	ip = ipv4_load(skb);
	/* TTL 1: the stack sends the time-exceeded. */
	if (!eth || !ip || ip->ttl <= 1)
		return TC_ACT_OK;
	/* The sender is outside. */
	return endpoint4_redirect_in(skb, pkt, ep);
}

/* An ICMP error from the outside about a packet we translated: it quotes that packet as it left
 * (masquerade address and NAT port), so the quote is put back to the pod's (or client's) view
 * too. (The frontend is put back by kelp_host_egress: a call to lb4_reverse here took host.o past
 * the verifier's 512 bytes of stack.) */
static __always_inline int rnat4_icmp_error(struct __sk_buff *skb, struct pkt4 *pkt)
{
	__u32 l4_off = ETH_HLEN + pkt->hlen;
	struct nat4_entry *rev;
	struct icmp4_quote q;
	struct tuple4 rkey;
	__be32 pod;
	int ret;

	if (icmp4_quote_load(skb, l4_off, &q) < 0 || q.tuple.saddr != KELP_MASQ_IP)
		return TC_ACT_OK;
	tuple4_reverse(&q.tuple, &rkey, NAT_DIR_INGRESS);
	if (!host_nat_port(rkey.dport))
		return TC_ACT_OK;
	rev = bpf_map_lookup_elem(&kelp_snat4, &rkey);
	if (!rev)
		return TC_ACT_OK;
	pod = rev->addr;
	ret = icmp4_quote_rewrite(skb, l4_off, &q, 1, pod, rev->port);
	if (!ret)
		ret = nat4_rewrite(skb, ETH_HLEN, l4_off, IPPROTO_ICMP, 0, pkt->daddr, pod, 0, 0);
	if (ret)
		return host_drop(skb, pkt, KELP_DIR_TO_POD, pod, ret);
	pkt->daddr = pod;
	/* Not a pod of this node: a client outside whose backend is on another node
	 * (host4_snat_remote). Out by the node's route, where kelp_host_egress's lb4_reverse puts the
	 * frontend back in the quote (and as the error's source when the backend sent it); handed to
	 * the stack instead, an error that came through the tunnel would be dropped (it carries the
	 * VXLAN device's MACs: another host's frame to the uplink). */
	if (!endpoint4_lookup(pod))
		return host4_route(skb, pkt);
	return host4_deliver(skb, pkt);
}

/*
 * A client outside reaching a frontend here whose backend is on another node (issue 13,
 * externalTrafficPolicy Cluster): the client's address and port are replaced by this node's
 * address and a NAT port, exactly as a masqueraded pod flow's (kelp_snat4, kelp_ct4, the same
 * collector), so the backend answers this node, whose kelp_host_ingress puts both translations
 * back and routes the answer out. Only a backend the node routes to elsewhere: one on the
 * node's own network (its address: a host-network backend) is the stack's, untranslated, as
 * before. Returns 0 (translated), 1 (left alone) or a drop reason. A BPF-to-BPF call that calls
 * nothing: inlined, or calling the route and drop_packet itself, its state would stack under
 * kelp_host_ingress's past the verifier's 512 bytes.
 */
static __attribute__((noinline)) int host4_snat_remote(struct __sk_buff *skb, const struct pkt4 *pkt)
{
	struct bpf_fib_lookup fib = {
		.family = 2,	/* AF_INET */
		.l4_protocol = pkt->proto,
		.ipv4_src = pkt->saddr,
		.ipv4_dst = pkt->daddr,
		.ifindex = skb->ifindex,
	};

	if (bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH) != BPF_FIB_LKUP_RET_SUCCESS)
		return 1;
	return snat4_egress(skb, pkt);
}

/*
 * A client outside the node reaching a NodePort on the node's addresses, an externalIP or a
 * LoadBalancer ingress IP (frontends flagged LB_FE_EXTERNAL): translated to the backend and
 * delivered straight into a local backend's pod, the client's address kept (no SNAT: its replies
 * leave through kelp_from_pod, which puts the frontend back as their source and routes them out,
 * see lxc4_fib_redirect). Returns a verdict, or -1 when the packet is not to such a frontend.
 *
 * A backend on another node (externalTrafficPolicy Cluster): see host4_snat_remote.
 */
static __always_inline int host4_service(struct __sk_buff *skb, struct pkt4 *pkt)
{
	int ret = lb4_forward(skb, pkt, LB_CLIENT_OUTSIDE);

	if (ret == LB_XLATE_NONE)
		return -1;
	if (ret == LB_XLATE_REJECT) {
		ret = lb4_reject(skb, pkt);
		drop_packet(skb, pkt, KELP_DIR_TO_POD, 0, DROP_LB_NO_BACKEND);
		return ret ? TC_ACT_SHOT : bpf_redirect(skb->ifindex, 0);
	}
	if (ret < 0)
		return drop_packet(skb, pkt, KELP_DIR_TO_POD, 0, ret);
	if (endpoint4_lookup(pkt->daddr))
		return host4_deliver(skb, pkt);
	/* On another node. Without masquerade there is no address to translate the client to: the
	 * stack gets it untranslated, as before. Translated, it leaves by the node's route to the
	 * backend (VXLAN: the remote pod CIDR's route onto the VXLAN device, whose kelp_to_overlay
	 * sets the tunnel key; native: via the other node): handed to the stack, its source, now
	 * this node's own address, would be a martian. */
	if (!host_masq_enabled())
		return TC_ACT_OK;
	ret = host4_snat_remote(skb, pkt);
	if (ret < 0)
		return drop_packet(skb, pkt, KELP_DIR_TO_POD, 0, ret);
	if (ret > 0)
		return TC_ACT_OK;
	pkt->saddr = KELP_MASQ_IP;
	return host4_route(skb, pkt);
}

/*
 * Native routing: a pod on another node to a pod of this node (the source in a native
 * kelp_tunnel4 entry, the destination a local endpoint). The stack would route it to the pod's
 * host veth, whose kelp_to_pod would reverse a Service translation and decide the pod's ingress
 * policy; both are done here and it goes straight in, as kelp_from_overlay does in VXLAN mode.
 * It needs no other translation: masquerade replies and frontends are addressed to the node.
 * The stack's source check would pass it anyway (the node routes that pod CIDR out of the
 * uplink). TTL 1 is left to the stack, which answers it. Returns a verdict, or -1 when the
 * packet is not one of these (untouched).
 */
static __always_inline int host4_from_remote_pod(struct __sk_buff *skb, struct pkt4 *pkt)
{
	struct endpoint_info *ep;
	struct tunnel4_info *tun;
	struct iphdr *ip;
	__u8 ct_flags = 0;
	int ret;

	if (!host_pod_prefix_valid() || !host_pod_source(pkt->daddr))
		return -1;
	tun = tunnel4_lookup(pkt->saddr);
	if (!tun || (tun->flags & TUNNEL_F_ENCAP))
		return -1;
	ep = endpoint4_lookup(pkt->daddr);
	ip = ipv4_load(skb);
	if (!ep || !ip || ip->ttl <= 1)
		return -1;
	/* The answer of a backend there to a client here that kelp_from_pod translated. */
	ret = lb4_reverse(skb, pkt, &ct_flags);
	if (ret < 0)
		return drop_packet(skb, pkt, KELP_DIR_TO_POD, ep->ep_id, ret);
	/* The sender is on another node: only the receiver's ingress is decided here. */
	return endpoint4_redirect_in(skb, pkt, ep);
}

/* tc ingress of the node's uplink: everything arriving for the node. */
SEC("tc")
int kelp_host_ingress(struct __sk_buff *skb)
{
	struct tuple4 reply = { .dir = NAT_DIR_INGRESS }, orig = { .dir = CT_EGRESS };
	struct nat4_entry *rev;
	struct pkt4 pkt = {};
	struct iphdr *ip;
	__u8 flags = 0;
	int ret;

	if (host4_is_vxlan(skb, false))
		return TC_ACT_OK;
	if (host4_parse_any(skb, &pkt))
		return TC_ACT_OK;
	/* Pod to pod across nodes first: addressed to a pod, never to a frontend. */
	ret = host4_from_remote_pod(skb, &pkt);
	if (ret >= 0)
		return ret;
	/* Services next: they answer on any of the node's addresses, with or without masquerade. */
	ret = host4_service(skb, &pkt);
	if (ret >= 0)
		return ret;
	/* The reply of a backend elsewhere to the node's own flow to a frontend, which
	 * kelp_host_egress translated per packet (LB_CT_F_HOST): the frontend goes back as its
	 * source, and into the node's stack as if it arrived on lo, as such replies from a pod of
	 * this node do (lb4_to_host_stack: here a strict rp_filter would drop a VIP source). */
	ret = lb4_reverse(skb, &pkt, &flags);
	if (ret < 0)
		return drop_packet(skb, &pkt, KELP_DIR_TO_POD, 0, ret);
	/* Translated, it is no masquerade reply (those match no kelp_lb4_ct entry before their
	 * kelp_snat4 one is put back, below): any other flow's is the stack's, as it was. */
	if (ret == LB_XLATE_DONE)
		return (flags & LB_CT_F_HOST) ? lb4_to_host_stack(skb) : TC_ACT_OK;

	if (!host_masq_enabled() || pkt.daddr != KELP_MASQ_IP)
		return TC_ACT_OK;
	/* Fragments of a reply go to the node's stack, which reassembles them for nobody: see the
	 * egress side for why kelp keeps no fragment state. */
	ip = ipv4_load(skb);
	if (!ip || ipv4_is_fragment(ip))
		return TC_ACT_OK;

	reply.saddr = pkt.saddr;
	reply.daddr = pkt.daddr;
	reply.proto = pkt.proto;
	switch (pkt.proto) {
	case IPPROTO_TCP:
		if (l4_tcp_flags(skb, ETH_HLEN + pkt.hlen, &flags) < 0)
			return TC_ACT_OK;
		/* fallthrough */
	case IPPROTO_UDP:
		reply.sport = pkt.sport;
		reply.dport = pkt.dport;
		break;
	case IPPROTO_ICMP:
		if (icmp4_type(&pkt) == ICMP_ECHOREPLY) {
			reply.dport = pkt.dport; /* the identifier */
			break;
		}
		if (icmp4_is_error(icmp4_type(&pkt)))
			return rnat4_icmp_error(skb, &pkt);
		return TC_ACT_OK;
	default:
		return TC_ACT_OK;
	}
	if (!host_nat_port(reply.dport))
		return TC_ACT_OK;
	rev = bpf_map_lookup_elem(&kelp_snat4, &reply);
	if (!rev)
		return TC_ACT_OK;

	orig.saddr = rev->addr;
	orig.daddr = reply.saddr;
	orig.sport = rev->port;
	orig.dport = reply.sport;
	orig.proto = reply.proto;
	ret = nat4_rewrite(skb, ETH_HLEN, ETH_HLEN + pkt.hlen, pkt.proto, 0, reply.daddr, orig.saddr, reply.dport,
			   orig.sport);
	if (!ret && ct4_account(&orig, 1, skb->len, flags) < 0)
		ret = DROP_CT_MAP_FULL;
	if (ret)
		return host_drop(skb, &pkt, KELP_DIR_TO_POD, orig.saddr, ret);
	pkt.daddr = orig.saddr;
	pkt.dport = orig.sport;
	/* The reply of a pod's flow to a Service whose backend is outside: the frontend goes back as
	 * its source (redirect_peer skips kelp_to_pod, which would do it otherwise). */
	ret = lb4_reverse(skb, &pkt, &flags);
	if (ret < 0)
		return host_drop(skb, &pkt, KELP_DIR_TO_POD, pkt.daddr, ret);
	/* A remote backend's answer to a client outside (host4_snat_remote): its source is now
	 * the frontend, one of this node's addresses, which the stack would drop as a martian on
	 * input; routed out here. */
	if (ret == LB_XLATE_DONE && (flags & LB_CT_F_EXTERNAL) && !endpoint4_lookup(pkt.daddr))
		return host4_route(skb, &pkt);
	return host4_deliver(skb, &pkt);
}

/*
 * tc egress of lo: what the node sends to its own addresses. A frontend there (a NodePort on a
 * node address; an externalIP or LoadBalancer IP the node holds) is translated as on the uplink;
 * the reply of a backend on the node itself to such a flow gets its frontend back. The rest of
 * the node's loopback traffic costs one frontend lookup and one conntrack lookup.
 */
SEC("tc")
int kelp_host_lo(struct __sk_buff *skb)
{
	struct pkt4 pkt = {};
	__u8 ct_flags = 0;
	int ret;

	if (host4_parse_any(skb, &pkt))
		return TC_ACT_OK;
	ret = lb4_reverse(skb, &pkt, &ct_flags);
	if (ret == LB_XLATE_DONE)
		return TC_ACT_OK;
	if (ret < 0)
		return drop_packet(skb, &pkt, KELP_DIR_FROM_POD, 0, ret);
	ret = host4_service_own(skb, &pkt);
	return ret >= 0 ? ret : TC_ACT_OK;
}

/* Types the agent decodes that no map or non-inlined function of this object mentions. */
struct host_btf_types {
	struct kelp_event event;
	enum kelp_event_type event_type;
	enum kelp_trace_point trace_point;
	enum ct_dir ct_dir;
	enum ct_tcp_flag ct_tcp_flag;
	enum nat_dir nat_dir;
	enum kelp_metrics_reason metrics_reason;
	enum lb_frontend_flag lb_frontend_flag;
	enum lb_backend_flag lb_backend_flag;
	enum lb_limits lb_limits;
	enum lb_select_result lb_select_result;
	enum lb_ct_dir lb_ct_dir;
	enum lb_ct_flag lb_ct_flag;
	enum lb_xlate lb_xlate;
	enum lb_client lb_client;
};
KELP_BTF_TYPES(host_btf_types)

/* GPL-compatible so the verifier offers every helper; the code is the project's own. */
char __license[] SEC("license") = "Dual BSD/GPL";
