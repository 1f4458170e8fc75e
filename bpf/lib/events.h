/* Drop and trace events to the agent over a ring buffer. */
#ifndef KELP_EVENTS_H
#define KELP_EVENTS_H

#include "common.h"
#include "config.h"

enum kelp_event_type {
	KELP_EVENT_DROP  = 1,
	KELP_EVENT_TRACE = 2,
	KELP_EVENT_AUDIT = 3,	/* passed, but an audit-only policy would have dropped it */
};

/* Where a trace event was taken. */
enum kelp_trace_point {
	KELP_TRACE_NONE		= 0,
	KELP_TRACE_TO_ENDPOINT	= 1,	/* redirected into a local pod (bpf_redirect_peer) */
	KELP_TRACE_ARP_REPLY	= 2,	/* ARP reply sent back out of the interface it came in on */
	KELP_TRACE_TO_OVERLAY	= 3,	/* redirected to the VXLAN device with a tunnel key (to another node) */
};

/* The policy decision behind a drop or an audit event; zero in every other event. */
struct kelp_event_policy {
	__u32 policy_id;	/* 0: no policy decided (e.g. not programmed yet) */
	__u16 rule;		/* index in the policy's rule list; 0xffff: isolated, no rule allowed */
	__u8 tier;		/* enum policy_tier */
	__u8 action;		/* enum policy_action */
};

struct kelp_event {
	__u64 ts_ns;		/* bpf_ktime_get_ns() */
	__u8 type;		/* enum kelp_event_type */
	__u8 dir;		/* enum kelp_dir */
	__s16 reason;		/* drop: enum kelp_drop_reason; audit: the drop it would have been; trace: 0 */
	__u32 ifindex;		/* skb->ifindex at the hook */
	__u32 target_ifindex;	/* trace: redirect target; drop: 0 */
	__u32 ep_id;		/* 0: not attributed to an endpoint */
	__u32 len;		/* skb->len */
	__be16 eth_proto;
	__u8 proto;
	__u8 trace_point;	/* enum kelp_trace_point */
	__be32 saddr;		/* ARP: sender protocol address */
	__be32 daddr;		/* ARP: target protocol address */
	__be16 sport;
	__be16 dport;
	struct kelp_event_policy policy;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_events SEC(".maps");

/* A full ring buffer loses the event, never the packet's verdict. */
static __always_inline void event_emit(const struct __sk_buff *skb, const struct pkt4 *pkt,
				       enum kelp_event_type type, enum kelp_dir dir, int reason,
				       __u32 ep_id, __u32 target_ifindex,
				       enum kelp_trace_point point, const struct kelp_event_policy *policy)
{
	struct kelp_event *e;

	e = bpf_ringbuf_reserve(&kelp_events, sizeof(*e), 0);
	if (!e)
		return;
	e->ts_ns = bpf_ktime_get_ns();
	e->type = type;
	e->dir = dir;
	e->reason = reason;
	e->ifindex = skb->ifindex;
	e->target_ifindex = target_ifindex;
	e->ep_id = ep_id;
	e->len = skb->len;
	e->eth_proto = pkt->eth_proto;
	e->proto = pkt->proto;
	e->trace_point = point;
	e->saddr = pkt->saddr;
	e->daddr = pkt->daddr;
	e->sport = pkt->sport;
	e->dport = pkt->dport;
	if (policy) {
		e->policy = *policy;
	} else {
		e->policy.policy_id = 0;
		e->policy.rule = 0;
		e->policy.tier = 0;
		e->policy.action = 0;
	}
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline void event_trace(const struct __sk_buff *skb, const struct pkt4 *pkt,
					enum kelp_dir dir, __u32 ep_id, __u32 target_ifindex,
					enum kelp_trace_point point)
{
	if (KELP_TRACE)
		event_emit(skb, pkt, KELP_EVENT_TRACE, dir, 0, ep_id, target_ifindex, point, NULL);
}

#endif /* KELP_EVENTS_H */
