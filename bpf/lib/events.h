/* Drop and trace events to the agent over a ring buffer. */
#ifndef KELP_EVENTS_H
#define KELP_EVENTS_H

#include "common.h"
#include "config.h"

/*
 * Every record on kelp_events starts with struct kelp_event_hdr: the agent reads `version` and
 * `size` before anything else and counts a record of a version, type or size it does not know as
 * unknown, never misreading it (src/datapath/events.ts). Bump KELP_EVENT_VERSION on any change to
 * a record's layout; a new type of an existing version is added at the end of the enum.
 */
enum kelp_event_version {
	KELP_EVENT_VERSION = 2,
};

enum kelp_event_type {
	KELP_EVENT_DROP		= 1,
	KELP_EVENT_TRACE	= 2,
	KELP_EVENT_AUDIT	= 3,	/* passed, but an audit-only policy would have dropped it */
	KELP_EVENT_FLOW_START	= 4,	/* a flow got its kelp_pct4 entry (struct kelp_flow_event) */
	KELP_EVENT_FLOW_END	= 5,	/* BPF saw it close, or a revision cut it (struct kelp_flow_event) */
};

/* Rate-limit and accounting classes: drop (drops and audits), flow (start, end), trace. */
enum kelp_event_class {
	KELP_EVENT_CLASS_DROP	= 0,
	KELP_EVENT_CLASS_FLOW	= 1,
	KELP_EVENT_CLASS_TRACE	= 2,
	KELP_EVENT_CLASSES	= 3,
};

/* Used while the agent has not written kelp_event_config (a class with burst 0). */
enum kelp_event_defaults {
	KELP_EVENT_DEFAULT_RATE		= 10000,	/* events per second, per CPU and class */
	KELP_EVENT_DEFAULT_BURST	= 1000,
};

/* Where a trace event was taken. */
enum kelp_trace_point {
	KELP_TRACE_NONE		= 0,
	KELP_TRACE_TO_ENDPOINT	= 1,	/* redirected into a local pod (bpf_redirect_peer) */
	KELP_TRACE_ARP_REPLY	= 2,	/* ARP reply sent back out of the interface it came in on */
	KELP_TRACE_TO_OVERLAY	= 3,	/* redirected to the VXLAN device with a tunnel key (to another node) */
};

/* How a flow ended (struct kelp_flow_event.closed_by; the agent's GC reports timeouts). */
enum kelp_flow_close {
	KELP_FLOW_OPEN		= 0,	/* a start */
	KELP_FLOW_CLOSED_FIN	= 1,	/* FIN seen both ways */
	KELP_FLOW_CLOSED_RST	= 2,
	KELP_FLOW_CLOSED_TIMEOUT = 3,	/* idle past its timeout: only the agent's GC says so */
	KELP_FLOW_REVOKED	= 4,	/* a policy change denied it (or left its endpoint unprogrammed) */
};

struct kelp_event_hdr {
	__u8 version;		/* KELP_EVENT_VERSION */
	__u8 type;		/* enum kelp_event_type */
	__u16 size;		/* of the whole record */
	__u32 cpu;
	__u64 ts_ns;		/* bpf_ktime_get_ns() */
};

/* The policy decision behind a drop, an audit or a flow; zero in every other event. */
struct kelp_event_policy {
	__u32 policy_id;	/* 0: no policy decided (e.g. not programmed yet) */
	__u16 rule;		/* index in the policy's rule list; 0xffff: isolated, no rule allowed */
	__u8 tier;		/* enum policy_tier */
	__u8 action;		/* enum policy_action */
};

/* DROP, AUDIT and TRACE. */
struct kelp_event {
	struct kelp_event_hdr hdr;
	__u8 dir;		/* enum kelp_dir */
	__u8 trace_point;	/* enum kelp_trace_point */
	__s16 reason;		/* drop: enum kelp_drop_reason; audit: the drop it would have been; trace: 0 */
	__u32 ifindex;		/* skb->ifindex at the hook */
	__u32 target_ifindex;	/* trace: redirect target; drop: 0 */
	__u32 ep_id;		/* 0: not attributed to an endpoint */
	__u32 len;		/* skb->len */
	__be16 eth_proto;
	__u8 proto;
	__u8 pad1;
	__be32 saddr;		/* ARP: sender protocol address */
	__be32 daddr;		/* ARP: target protocol address */
	__be16 sport;
	__be16 dport;
	struct kelp_event_policy policy;
	__u32 pad2;
};

/* FLOW_START and FLOW_END: one kelp_pct4 flow, in the direction of its originator. */
struct kelp_flow_event {
	struct kelp_event_hdr hdr;
	__be32 saddr;		/* originator */
	__be32 daddr;		/* responder (the backend, for a service flow) */
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;		/* enum policy_dir of the side whose verdict the flow keeps */
	__u8 closed_by;		/* enum kelp_flow_close */
	__u8 pad1;
	__u32 ep_id;		/* the endpoint of that side */
	struct kelp_event_policy policy;
	__u32 svc_id;		/* 0: not translated (known at the start only) */
	__be32 svc_addr;	/* the frontend the client addressed */
	__be16 svc_port;
	__u16 pad2;
	__u32 ifindex;		/* skb->ifindex at the hook */
	__u32 pad3;
	__u64 created;		/* kelp_pct4's clock: the entry's `created` */
	__u64 tx_packets;	/* originator to responder (a start: its first packet) */
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 rx_bytes;
};

/* Only ever written through a pointer into the ring: named here so the object's BTF has it. */
KELP_BTF_TYPES(kelp_flow_event)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_events SEC(".maps");

/*
 * Records are submitted without waking the agent's reader, which drains the ring on a short
 * timer (native/ringbuf.cc), until a quarter of the ring is waiting: a wakeup per sparse record
 * (one per new flow, the reader idle each time) cost ~15 us per connection on these VMs, most of
 * TCP_CRR's loss (figure 9). A burst still wakes the reader long before the ring is full.
 */
enum kelp_events_wakeup {
	KELP_EVENTS_WAKEUP_BYTES = 64 * 1024,
};

static __always_inline __u64 event_submit_flags(void)
{
	return bpf_ringbuf_query(&kelp_events, BPF_RB_AVAIL_DATA) >= KELP_EVENTS_WAKEUP_BYTES ? BPF_RB_FORCE_WAKEUP
											 : BPF_RB_NO_WAKEUP;
}

/* A class's token bucket as the agent configures it (kelp_event_config, index: the class). */
struct kelp_event_config {
	__u32 rate;		/* tokens per second per CPU */
	__u32 burst;		/* bucket size; 0: the defaults above */
};

/*
 * Per CPU and class: what became of every event the datapath wanted to send. For each class,
 * attempted = emitted + suppressed + lost, exactly. The bucket's state lives here too, so an
 * event costs one per-CPU lookup: tokens in units of 1e-9 token, refilled by elapsed ns x rate.
 */
struct kelp_event_stats {
	__u64 emitted;		/* submitted to kelp_events */
	__u64 suppressed;	/* the class's bucket was empty */
	__u64 lost;		/* kelp_events was full */
	__u64 tokens;
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct kelp_event_config);
	__uint(max_entries, KELP_EVENT_CLASSES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_event_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct kelp_event_stats);
	__uint(max_entries, KELP_EVENT_CLASSES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_event_stats SEC(".maps");

/*
 * The frontend a translated packet addressed, kept per CPU from lb4_forward until the same
 * program run's FLOW_START reads it (pkt4 carries only the svc_id: every byte of pkt4 is on
 * the hooks' stacks, which are at the verifier's limit). A tc program runs to its end on one CPU.
 */
struct kelp_flow_svc {
	__u32 svc_id;
	__be32 addr;
	__be16 port;
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct kelp_flow_svc);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_flow_svc SEC(".maps");

static __always_inline void event_note_service(__u32 svc_id, __be32 addr, __be16 port)
{
	__u32 zero = 0;
	struct kelp_flow_svc *s = bpf_map_lookup_elem(&kelp_flow_svc, &zero);

	if (s) {
		s->svc_id = svc_id;
		s->addr = addr;
		s->port = port;
	}
}

#define KELP_NSEC_PER_SEC 1000000000ULL
/* Longest idle time the refill counts: past it the bucket is full for any burst <= rate x 60 s,
 * and elapsed x rate stays far from overflowing for the agent's largest rate (1e7/s). */
#define KELP_EVENT_MAX_REFILL_NS (60 * KELP_NSEC_PER_SEC)

/*
 * Takes a token of `class` now. Returns the time it was taken (never 0), the event counted as
 * emitted (event_lost() moves it to lost if the ring refuses it), or 0 when the bucket is empty
 * (counted as suppressed). Per CPU, so no atomics: tc programs do not nest on one CPU with BH
 * disabled. BPF-to-BPF calls, and the bucket's pointer not kept by the caller: every byte the
 * event code keeps live in drop_packet and policy4_report is on the hooks' deepest call chains
 * (512 bytes of stack in all).
 */
static __attribute__((noinline)) __u64 event_admit(__u32 class)
{
	struct kelp_event_config *cfg;
	struct kelp_event_stats *st;
	__u64 rate = KELP_EVENT_DEFAULT_RATE, burst = KELP_EVENT_DEFAULT_BURST, elapsed, tokens, cap;
	__u64 now = bpf_ktime_get_ns();

	st = bpf_map_lookup_elem(&kelp_event_stats, &class);
	if (!st)
		return 0;
	cfg = bpf_map_lookup_elem(&kelp_event_config, &class);
	if (cfg && cfg->burst) {
		rate = cfg->rate;
		burst = cfg->burst;
	}
	elapsed = now - st->last_ns;
	if (elapsed > KELP_EVENT_MAX_REFILL_NS)
		elapsed = KELP_EVENT_MAX_REFILL_NS;
	tokens = st->tokens + elapsed * rate;
	cap = burst * KELP_NSEC_PER_SEC;
	if (tokens > cap)
		tokens = cap;
	st->last_ns = now;
	if (tokens < KELP_NSEC_PER_SEC) {
		st->tokens = tokens;
		st->suppressed++;
		return 0;
	}
	st->tokens = tokens - KELP_NSEC_PER_SEC;
	st->emitted++;
	return now;
}

/* The ring had no room for an event event_admit() counted as emitted. */
static __attribute__((noinline)) void event_lost(__u32 class)
{
	struct kelp_event_stats *st = bpf_map_lookup_elem(&kelp_event_stats, &class);

	if (st) {
		st->emitted--;
		st->lost++;
	}
}

static __always_inline void event_hdr(struct kelp_event_hdr *h, __u8 type, __u16 size, __u64 now)
{
	h->version = KELP_EVENT_VERSION;
	h->type = type;
	h->size = size;
	h->cpu = bpf_get_smp_processor_id();
	h->ts_ns = now;
}

/* A full ring buffer loses the event (counted), never the packet's verdict. */
static __always_inline void event_emit(const struct __sk_buff *skb, const struct pkt4 *pkt,
				       enum kelp_event_type type, enum kelp_dir dir, int reason,
				       __u32 ep_id, __u32 target_ifindex,
				       enum kelp_trace_point point, const struct kelp_event_policy *policy)
{
	__u32 class = type == KELP_EVENT_TRACE ? KELP_EVENT_CLASS_TRACE : KELP_EVENT_CLASS_DROP;
	struct kelp_event *e;
	__u64 now = event_admit(class);

	if (!now)
		return;
	e = bpf_ringbuf_reserve(&kelp_events, sizeof(*e), 0);
	if (!e) {
		event_lost(class);
		return;
	}
	event_hdr(&e->hdr, type, sizeof(*e), now);
	e->dir = dir;
	e->trace_point = point;
	e->reason = reason;
	e->ifindex = skb->ifindex;
	e->target_ifindex = target_ifindex;
	e->ep_id = ep_id;
	e->len = skb->len;
	e->eth_proto = pkt->eth_proto;
	e->proto = pkt->proto;
	e->pad1 = 0;
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
	e->pad2 = 0;
	bpf_ringbuf_submit(e, event_submit_flags());
}

static __always_inline void event_trace(const struct __sk_buff *skb, const struct pkt4 *pkt,
					enum kelp_dir dir, __u32 ep_id, __u32 target_ifindex,
					enum kelp_trace_point point)
{
	if (KELP_TRACE)
		event_emit(skb, pkt, KELP_EVENT_TRACE, dir, 0, ep_id, target_ifindex, point, NULL);
}

#endif /* KELP_EVENTS_H */
