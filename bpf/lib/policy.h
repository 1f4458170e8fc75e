/*
 * Network policy: per endpoint and direction, a verdict looked up by (endpoint, peer identity,
 * protocol, destination port), kept per flow in a conntrack of its own so that an established
 * packet costs one hash lookup. The contract with the agent is src/datapath/policy-types.ts; the
 * writer of these maps is src/datapath/policy.ts.
 *
 * A side of a flow (an endpoint's egress or ingress) is decided by:
 *   1. the peer's identity, kelp_ipcache4's longest prefix of its address (none: WORLD);
 *   2. HOST: allowed, and the flow is not tracked (a pod and its node always talk);
 *   3. kelp_policy4 at (endpoint, identity, dir, proto, port), then at (endpoint, ANY, ...);
 *   4. both missing: the endpoint's policy is not programmed: DROP_POLICY_NOT_READY.
 * A packet between two local pods is decided for both sides, the sender's egress first: a deny
 * or not-ready of either drops it; an audit verdict of either is the flow's verdict.
 *
 * Per packet, once enforcement is on (kelp_policy_config, POLICY_F_ENFORCE):
 *   - kelp_pct4 hit at the current revision: its verdict, whichever way the packet goes, so a
 *     reply to an allowed flow passes whatever the reply direction's policy says;
 *   - hit at an older revision: the flow's original direction is decided again and stored, so
 *     an established connection that is no longer allowed is cut on its next packet (the deny is
 *     kept in the entry: the responder's next packet cannot re-open the flow the other way);
 *   - miss: this packet opens a flow; only an allowed one gets an entry, and an entry that
 *     cannot be stored drops the packet (DROP_POLICY_CT_FULL), never a silent allow.
 * Ports: TCP, UDP and SCTP look up the responder's port; every other protocol (ICMP included)
 * looks up port 0, so only an all-ports or all-protocols entry matches it. ICMP echo tracks
 * its identifier as both ports. An ICMP error passes when the flow it quotes is tracked and not
 * denied; otherwise it is decided as a new ICMP packet, and never tracked.
 *
 * IPv4 fragments: only the first carries the ports. Its ports are kept in kelp_frag4 by
 * (source, destination, IP id, protocol) and the later fragments are decided with them; a later
 * fragment without that entry (first one lost, reordered or not through this hook) is dropped
 * with DROP_FRAG_NO_FLOW. Fragments of ICMP errors are not supported (errors are short).
 *
 * Why a conntrack of its own rather than kelp_ct4: kelp_ct4 is keyed by the original tuple plus
 * direction, lives in host.o only, and is the masquerade's state (its collector removes NAT
 * mappings with it); policy needs one entry for both directions found by one lookup, in both
 * objects, with the verdict and revision in it.
 */
#ifndef KELP_POLICY_H
#define KELP_POLICY_H

#include <linux/errno.h>
#include <linux/in.h>
#include <linux/ip.h>
#include "common.h"
#include "ct_count.h"
#include "drop.h"
#include "events.h"
#include "icmp.h"
#include "ipcache.h"
#include "ipv4.h"
#include "l4.h"
#include "metrics.h"

enum policy_dir {
	POLICY_INGRESS	= 1,
	POLICY_EGRESS	= 2,
};

enum policy_action {
	POLICY_ACTION_ALLOW	= 1,
	POLICY_ACTION_DENY	= 2,
	POLICY_ACTION_AUDIT	= 3,	/* allowed, reported as a drop an audit-only policy would make */
};

enum policy_tier {
	POLICY_TIER_NONE		= 0,	/* nothing decided (not programmed) */
	POLICY_TIER_ADMIN		= 1,
	POLICY_TIER_NETWORKPOLICY	= 2,
	POLICY_TIER_BASELINE		= 3,
	POLICY_TIER_DEFAULT		= 4,
};

/* kelp_policy4 prefix lengths, counted over the key after `prefixlen`: endpoint (32), identity
 * (32), direction (8), protocol (8), port (16). */
enum policy_prefix {
	POLICY_PREFIX_ANY_PROTO	= 72,
	POLICY_PREFIX_ANY_PORT	= 80,
	POLICY_PREFIX_FULL	= 96,
};

enum policy_config_flag {
	POLICY_F_ENFORCE	= 1,	/* off: no lookup, no conntrack, every packet passes as before */
};

enum policy_limits {
	POLICY_RULE_ISOLATED	= 0xffff,	/* rule of "isolated, and no rule allowed this" */
};

/* Every field in network order, so that the trie's bit order is the key's byte order. */
struct policy4_key {
	__u32 prefixlen;	/* host order (the LPM trie's own field) */
	__be32 ep_id;
	__be32 identity;	/* peer identity; KELP_IDENTITY_ANY: every peer */
	__u8 dir;		/* enum policy_dir */
	__u8 proto;
	__be16 dport;
};

struct policy4_verdict {
	__u8 action;		/* enum policy_action; anything else is a deny */
	__u8 tier;		/* enum policy_tier */
	__u16 rule;
	__u32 policy_id;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy4_key);
	__type(value, struct policy4_verdict);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_policy4 SEC(".maps");

struct policy_config {
	__u32 revision;		/* bumped by the agent after each complete write of the policy maps */
	__u32 flags;		/* enum policy_config_flag */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct policy_config);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_policy_config SEC(".maps");

/* A flow, whichever way a packet goes: the lower (address, port) pair first, compared as the
 * raw network-order words. */
struct pct4_key {
	__be32 addr[2];
	__be16 port[2];		/* ICMP echo: the identifier in both */
	__u8 proto;
	__u8 pad[3];
};

struct pct4_entry {
	__u64 created;		/* pct4_now() at the first packet (or at a TCP re-open) */
	__u64 last_seen;
	__u64 tx_packets;	/* originator to responder */
	__u64 tx_bytes;
	__u64 rx_packets;	/* responder to originator */
	__u64 rx_bytes;
	__u32 revision;		/* kelp_policy_config.revision the verdict was taken at */
	__u32 policy_id;	/* the verdict kept: the deciding side's (an audit one wins) */
	__u32 ep_id;		/* the endpoint of that side */
	__u16 rule;
	__u8 action;		/* enum policy_action */
	__u8 tier;
	__u8 dir;		/* enum policy_dir of that side */
	__u8 orig;		/* which key slot (0, 1) opened the flow */
	/* TCP flags OR'd per direction, one byte each (see ct4_entry). */
	__u8 tx_flags;
	__u8 rx_flags;
	__u32 flags;		/* enum pct4_flag */
};

enum pct4_flag {
	PCT4_F_ENDED	= 1,	/* its FLOW_END is claimed (kelp_flow_end): the GC sends none */
};

/*
 * LRU: the agent expires entries (src/datapath/policy.ts gcPolicyCt); eviction only protects the
 * datapath from an agent that stopped collecting. An evicted allowed flow is decided again on its
 * next packet, in that packet's direction.
 */
#ifdef KELP_TEST_PCT4_FULL
/* Only in a build test/datapath/policy.test.ts makes: a plain hash of 2 entries, which refuses an
 * insert when full (an LRU evicts instead), to show that a refused entry drops the packet. */
#define KELP_PCT4_TYPE BPF_MAP_TYPE_HASH
#define KELP_PCT4_MAX 2
#else
#define KELP_PCT4_TYPE BPF_MAP_TYPE_LRU_HASH
#define KELP_PCT4_MAX 65536
#endif

struct {
	__uint(type, KELP_PCT4_TYPE);
	__type(key, struct pct4_key);
	__type(value, struct pct4_entry);
	__uint(max_entries, KELP_PCT4_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_pct4 SEC(".maps");

/*
 * Flow events (issue 14): FLOW_START when an entry is created, FLOW_END once per flow, claimed by
 * whoever ends it first: BPF when it sees the flow close or a revision cut it, the agent's GC
 * (src/datapath/flows.ts) when the entry expires. A claim is an insert with BPF_NOEXIST into
 * kelp_flow_end at (flow, created), atomic between CPUs and with the agent, so there is never
 * a second end; PCT4_F_ENDED in the entry spares later packets of a closed flow the attempt. The
 * GC deletes the claim with the entry. An entry evicted by the LRU ends without an event.
 */
struct flow4_end_key {
	struct pct4_key flow;
	__u64 created;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow4_end_key);
	__type(value, __u32);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_flow_end SEC(".maps");

/* flow4_emit's claim key, per CPU rather than on its stack (see kelp_flow_svc). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct flow4_end_key);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_flow_end_key SEC(".maps");

/* Policy decisions per (policy, rule, action, direction), exact whatever becomes of the events:
 * a packet counts when policy decided it (a new flow, a flow decided again after a revision, a
 * drop, an audit). Policy 0: no policy decided (not programmed, fragments). */
struct policy_verdict_key {
	__u32 policy_id;
	__u16 rule;
	__u8 action;		/* enum policy_action; a drop no policy decided: POLICY_ACTION_DENY */
	__u8 dir;		/* enum policy_dir */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct policy_verdict_key);
	__type(value, struct metrics_value);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_policy_verdicts SEC(".maps");

struct frag4_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 pad;
};

struct frag4_ports {
	__be16 sport;		/* as policy tracks them (ICMP echo: the identifier in both) */
	__be16 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag4_key);
	__type(value, struct frag4_ports);
	__uint(max_entries, 8192);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_frag4 SEC(".maps");

/* What policy reads of a packet. */
struct policy4_flow {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 icmp_error;	/* an ICMP error: decided by the flow it quotes */
	__u8 pad;
};

/* A side's decision: the verdict, and whose it is. */
struct policy4_decision {
	struct policy4_verdict v;
	__u32 ep_id;
	__u8 dir;		/* enum policy_dir */
};

/* policy4_decide(): the peer is the node; allowed, untracked. */
#define POLICY_HOST 1

static __always_inline struct policy_config *policy_config_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&kelp_policy_config, &zero);
}

/* The verdict of one side; 0, or DROP_POLICY_NOT_READY when the endpoint has no entry at all. */
static __always_inline int policy4_lookup(__u32 ep_id, __u32 identity, __u8 dir, __u8 proto, __be16 dport,
					  struct policy4_verdict *out)
{
	struct policy4_key key = {
		.prefixlen = POLICY_PREFIX_FULL,
		.ep_id = bpf_htonl(ep_id),
		.identity = bpf_htonl(identity),
		.dir = dir,
		.proto = proto,
		.dport = dport,
	};
	struct policy4_verdict *v = bpf_map_lookup_elem(&kelp_policy4, &key);

	if (!v) {
		key.identity = bpf_htonl(KELP_IDENTITY_ANY);
		v = bpf_map_lookup_elem(&kelp_policy4, &key);
	}
	if (!v)
		return DROP_POLICY_NOT_READY;
	*out = *v;
	if (out->action != POLICY_ACTION_ALLOW && out->action != POLICY_ACTION_AUDIT)
		out->action = POLICY_ACTION_DENY;
	return 0;
}

static __always_inline __be16 policy4_port(__u8 proto, __be16 port)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP ? port : 0;
}

/*
 * Decides a flow from `orig` to `resp` (its responder's port `port`): the originator's egress when
 * it is a local endpoint (`orig_id` non-zero), the responder's ingress when it is one. Returns 0
 * with the verdict in `d` (allow or audit), POLICY_HOST, or a drop reason with `d` naming the side
 * that dropped.
 */
static __always_inline int policy4_decide(__be32 orig, __be32 resp, __be16 port, __u8 proto, __u32 orig_id,
					  __u32 resp_id, struct policy4_decision *d)
{
	struct policy4_verdict v = {};
	__u32 identity;
	int ret;

	port = policy4_port(proto, port);
	d->v = v;
	d->v.action = POLICY_ACTION_ALLOW;
	d->ep_id = 0;
	d->dir = 0;
	if (orig_id) {
		identity = ipcache4_identity(resp);
		if (identity == KELP_IDENTITY_HOST)
			return POLICY_HOST;
		ret = policy4_lookup(orig_id, identity, POLICY_EGRESS, proto, port, &v);
		d->ep_id = orig_id;
		d->dir = POLICY_EGRESS;
		d->v = v;
		if (ret)
			return ret;
		if (v.action == POLICY_ACTION_DENY)
			return DROP_POLICY_DENY;
	}
	if (resp_id) {
		identity = ipcache4_identity(orig);
		if (identity == KELP_IDENTITY_HOST)
			return POLICY_HOST;
		ret = policy4_lookup(resp_id, identity, POLICY_INGRESS, proto, port, &v);
		/* The ingress verdict is kept unless it allows what the egress audited. */
		if (ret || v.action != POLICY_ACTION_ALLOW || d->v.action != POLICY_ACTION_AUDIT) {
			d->ep_id = resp_id;
			d->dir = POLICY_INGRESS;
			d->v = v;
		}
		if (ret)
			return ret;
		if (v.action == POLICY_ACTION_DENY)
			return DROP_POLICY_DENY;
	}
	return 0;
}

/* One decision into kelp_policy_verdicts. A BPF-to-BPF call, as metrics_update_hash. */
static __attribute__((noinline)) void policy4_count(__u32 policy_id, __u32 rule, __u32 action, __u32 dir, __u32 bytes)
{
	struct policy_verdict_key key = { .policy_id = policy_id, .rule = rule, .action = action, .dir = dir };
	struct metrics_value init = { .packets = 1, .bytes = bytes };
	struct metrics_value *v;

	v = bpf_map_lookup_elem(&kelp_policy_verdicts, &key);
	if (likely(v)) {
		metrics_add(v, bytes);
		return;
	}
	/* EEXIST: another CPU created the key between our lookup and update; count on that entry. */
	if (bpf_map_update_elem(&kelp_policy_verdicts, &key, &init, BPF_NOEXIST) == 0)
		return;
	v = bpf_map_lookup_elem(&kelp_policy_verdicts, &key);
	if (v)
		metrics_add(v, bytes);
}

/*
 * FLOW_START (`closed_by` KELP_FLOW_OPEN) or FLOW_END of the flow `key`, from its entry; an end
 * only when this call wins the flow's claim (see kelp_flow_end). One BPF-to-BPF call for both,
 * not two nested: the hooks' call chains are within a few bytes of the verifier's 512.
 */
static __attribute__((noinline)) void flow4_emit(const struct __sk_buff *skb, const struct pkt4 *pkt,
						 const struct pct4_key *key, struct pct4_entry *ct, __u32 closed_by)
{
	struct kelp_flow_event *e;
	struct kelp_flow_svc *svc = NULL;
	__u64 now;
	int o = ct->orig & 1;
	__u32 zero = 0;

	if (closed_by) {
		struct flow4_end_key *ek;

		if (ct->flags & PCT4_F_ENDED)
			return;
		ct->flags |= PCT4_F_ENDED;
		ek = bpf_map_lookup_elem(&kelp_flow_end_key, &zero);
		if (!ek)
			return;
		ek->flow = *key;
		ek->created = ct->created;
		/* The value is never read: any 4 bytes of the map value will do. */
		if (bpf_map_update_elem(&kelp_flow_end, ek, &ek->created, BPF_NOEXIST))
			return;
	} else if (pkt->svc_id) {
		svc = bpf_map_lookup_elem(&kelp_flow_svc, &zero);
		if (svc && svc->svc_id != pkt->svc_id)
			svc = NULL;
	}
	now = event_admit(KELP_EVENT_CLASS_FLOW);
	if (!now)
		return;
	e = bpf_ringbuf_reserve(&kelp_events, sizeof(*e), 0);
	if (!e) {
		event_lost(KELP_EVENT_CLASS_FLOW);
		return;
	}
	event_hdr(&e->hdr, closed_by ? KELP_EVENT_FLOW_END : KELP_EVENT_FLOW_START, sizeof(*e), now);
	e->saddr = o ? key->addr[1] : key->addr[0];
	e->daddr = o ? key->addr[0] : key->addr[1];
	e->sport = o ? key->port[1] : key->port[0];
	e->dport = o ? key->port[0] : key->port[1];
	e->proto = key->proto;
	e->dir = ct->dir;
	e->closed_by = closed_by;
	e->pad1 = 0;
	e->ep_id = ct->ep_id;
	e->policy.policy_id = ct->policy_id;
	e->policy.rule = ct->rule;
	e->policy.tier = ct->tier;
	e->policy.action = ct->action;
	e->svc_id = svc ? svc->svc_id : 0;
	e->svc_addr = svc ? svc->addr : 0;
	e->svc_port = svc ? svc->port : 0;
	e->pad2 = 0;
	e->ifindex = skb->ifindex;
	e->pad3 = 0;
	e->created = ct->created;
	e->tx_packets = ct->tx_packets;
	e->tx_bytes = ct->tx_bytes;
	e->rx_packets = ct->rx_packets;
	e->rx_bytes = ct->rx_bytes;
	bpf_ringbuf_submit(e, event_submit_flags());
}

/* What policy4_report() counts and sends. */
struct policy4_report {
	struct kelp_event_policy policy;
	__u32 ep_id;
	__s16 reason;		/* the drop (for an audit: the drop it would have been) */
	__u8 dir;		/* enum kelp_dir */
	__u8 type;		/* KELP_EVENT_DROP or KELP_EVENT_AUDIT */
};

/* Policy's drop_packet(): counts and reports a drop or an audit, with the deciding policy and
 * rule in the event. A BPF-to-BPF call, as drop_packet. */
static __attribute__((noinline)) void policy4_report(struct __sk_buff *skb, const struct pkt4 *pkt,
						     const struct policy4_report *r)
{
	int metric = r->type == KELP_EVENT_AUDIT ? KELP_REASON_POLICY_AUDIT : r->reason;

	metrics_update(r->ep_id, r->dir, metric, skb->len);
	event_emit(skb, pkt, r->type, r->dir, r->reason, r->ep_id, 0, KELP_TRACE_NONE, &r->policy);
	/* Last, from `r` and `skb` again: nothing more is live across it (this frame is on the
	 * deepest call chain of host.o's hooks, 512 bytes in all). */
	policy4_count(r->policy.policy_id, r->policy.rule, r->type == KELP_EVENT_AUDIT ? POLICY_ACTION_AUDIT : POLICY_ACTION_DENY,
		      r->dir == KELP_DIR_TO_POD ? POLICY_INGRESS : POLICY_EGRESS, skb->len);
}

static __always_inline int policy4_drop(struct __sk_buff *skb, const struct pkt4 *pkt, int reason,
					const struct policy4_decision *d, int audit)
{
	struct policy4_report r = {
		.policy = { .policy_id = d->v.policy_id, .rule = d->v.rule, .tier = d->v.tier, .action = d->v.action },
		.ep_id = d->ep_id,
		.reason = reason,
		.dir = d->dir == POLICY_INGRESS ? KELP_DIR_TO_POD : KELP_DIR_FROM_POD,
		.type = audit ? KELP_EVENT_AUDIT : KELP_EVENT_DROP,
	};

	policy4_report(skb, pkt, &r);
	return TC_ACT_SHOT;
}

/* A drop no side decided (parsing, fragments): charged to the sender when it is local, else
 * to the receiver. */
static __always_inline int policy4_drop_flow(struct __sk_buff *skb, const struct pkt4 *pkt, int reason,
					     __u32 src_id, __u32 dst_id)
{
	struct policy4_decision d = { .ep_id = src_id ? src_id : dst_id, .dir = src_id ? POLICY_EGRESS : POLICY_INGRESS };

	return policy4_drop(skb, pkt, reason, &d, 0);
}

/* Returns the slot (0, 1) of the packet's source in the flow's key. */
static __always_inline __u8 pct4_key_of(const struct policy4_flow *f, struct pct4_key *key)
{
	__u8 swap = f->saddr > f->daddr || (f->saddr == f->daddr && f->sport > f->dport);

	key->addr[0] = swap ? f->daddr : f->saddr;
	key->addr[1] = swap ? f->saddr : f->daddr;
	key->port[0] = swap ? f->dport : f->sport;
	key->port[1] = swap ? f->sport : f->dport;
	key->proto = f->proto;
	return swap;
}

static __always_inline int pct4_closing(const struct pct4_entry *ct)
{
	__u8 all = ct->tx_flags | ct->rx_flags;

	return (all & CT_TCP_RST) || ((ct->tx_flags & CT_TCP_FIN) && (ct->rx_flags & CT_TCP_FIN));
}

static __always_inline void pct4_set_verdict(struct pct4_entry *ct, const struct policy4_decision *d, __u32 revision)
{
	ct->policy_id = d->v.policy_id;
	ct->rule = d->v.rule;
	ct->action = d->v.action;
	ct->tier = d->v.tier;
	ct->ep_id = d->ep_id;
	ct->dir = d->dir;
	ct->revision = revision;
}

/*
 * The conntrack's clock: CLOCK_MONOTONIC at tick resolution (bpf_ktime_get_coarse_ns), the clock
 * the agent's collector compares with, at most a tick behind it. Measured here (BPF_PROG_TEST_RUN,
 * an established flow to a remote peer) policy costs ~65 ns per packet with it and ~80 ns with
 * bpf_ktime_get_ns(), whose precision no idle timeout needs.
 */
static __always_inline __u64 pct4_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

static __always_inline void pct4_account(struct pct4_entry *ct, int reply, __u32 bytes, __u8 tcp_flags)
{
	ct->last_seen = pct4_now();
	if (reply)
		ct_count(&ct->rx_packets, &ct->rx_bytes, &ct->rx_flags, bytes, tcp_flags);
	else
		ct_count(&ct->tx_packets, &ct->tx_bytes, &ct->tx_flags, bytes, tcp_flags);
}

/*
 * Fills `f` from the packet: ports as policy tracks them, TCP flags, fragments resolved through
 * kelp_frag4. Returns 0 or a drop reason.
 */
static __always_inline int policy4_flow_of(struct __sk_buff *skb, const struct pkt4 *pkt, struct policy4_flow *f)
{
	struct frag4_key fkey = {};
	struct frag4_ports *fp;
	struct iphdr *ip = ipv4_load(skb);
	__u8 type;

	if (!ip)
		return DROP_RUNT;
	f->saddr = pkt->saddr;
	f->daddr = pkt->daddr;
	f->proto = pkt->proto;
	fkey.saddr = pkt->saddr;
	fkey.daddr = pkt->daddr;
	fkey.id = ip->id;
	fkey.proto = pkt->proto;

	if (ip->frag_off & bpf_htons(IPV4_FRAG_OFFSET)) {
		fp = bpf_map_lookup_elem(&kelp_frag4, &fkey);
		if (!fp)
			return DROP_FRAG_NO_FLOW;
		f->sport = fp->sport;
		f->dport = fp->dport;
		return 0;
	}

	switch (pkt->proto) {
	case IPPROTO_TCP:
		if (l4_tcp_flags(skb, ETH_HLEN + pkt->hlen, &f->tcp_flags) < 0)
			return DROP_L4_TRUNCATED;
		/* fallthrough */
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		f->sport = pkt->sport;
		f->dport = pkt->dport;
		break;
	case IPPROTO_ICMP:
		type = icmp4_type(pkt);
		if (type == ICMP_ECHO || type == ICMP_ECHOREPLY) {
			f->sport = pkt->dport;
			f->dport = pkt->dport;
		} else if (icmp4_is_error(type)) {
			f->icmp_error = 1;
			return 0;
		}
		break;
	}

	if (ip->frag_off & bpf_htons(IPV4_MF)) {
		struct frag4_ports ports = { .sport = f->sport, .dport = f->dport };

		if (bpf_map_update_elem(&kelp_frag4, &fkey, &ports, BPF_ANY))
			return DROP_FRAG_MAP_FULL;
	}
	return 0;
}

/* An ICMP error: allowed when the flow it quotes is tracked and not denied, else decided as a
 * new ICMP packet; never tracked. */
static __always_inline int policy4_icmp_error(struct __sk_buff *skb, const struct pkt4 *pkt, __u32 src_id,
					      __u32 dst_id)
{
	struct policy4_decision d;
	struct icmp4_quote q;
	int ret;

	if (icmp4_quote_load(skb, ETH_HLEN + pkt->hlen, &q) == 0) {
		struct policy4_flow quoted = {
			.saddr = q.tuple.saddr,
			.daddr = q.tuple.daddr,
			.sport = q.tuple.sport,
			.dport = q.tuple.dport,
			.proto = q.tuple.proto,
		};
		struct pct4_key key = {};
		struct pct4_entry *ct;

		/* icmp4_quote_load puts an echo's identifier in one port only. */
		if (quoted.proto == IPPROTO_ICMP) {
			quoted.sport |= quoted.dport;
			quoted.dport = quoted.sport;
		}
		pct4_key_of(&quoted, &key);
		ct = bpf_map_lookup_elem(&kelp_pct4, &key);
		if (ct && (ct->action == POLICY_ACTION_ALLOW || ct->action == POLICY_ACTION_AUDIT))
			return 0;
	}

	ret = policy4_decide(pkt->saddr, pkt->daddr, 0, IPPROTO_ICMP, src_id, dst_id, &d);
	if (ret == POLICY_HOST)
		return 0;
	if (ret < 0)
		return policy4_drop(skb, pkt, ret, &d, 0);
	if (d.v.action == POLICY_ACTION_AUDIT)
		policy4_drop(skb, pkt, DROP_POLICY_DENY, &d, 1);
	return 0;
}

/*
 * The policy of one packet at a hook: the egress of its sender when `src_id` is a local endpoint,
 * the ingress of its receiver when `dst_id` is. Returns 0 (pass) or TC_ACT_SHOT (dropped,
 * counted and reported). A BPF-to-BPF call: its code is shared by every hook of the object.
 */
static __attribute__((noinline)) int policy4_enforce(struct __sk_buff *skb, const struct pkt4 *pkt, __u32 src_id,
						     __u32 dst_id, __u32 revision)
{
	struct policy4_flow f = {};
	struct pct4_key key = {};
	struct policy4_decision d;
	struct pct4_entry *ct;
	__u64 reopened = 0;
	__u8 side, orig;
	int ret, reply, decided = 0;

	ret = policy4_flow_of(skb, pkt, &f);
	if (ret < 0)
		return policy4_drop_flow(skb, pkt, ret, src_id, dst_id);
	if (f.icmp_error)
		return policy4_icmp_error(skb, pkt, src_id, dst_id);

	side = pct4_key_of(&f, &key);
	ct = bpf_map_lookup_elem(&kelp_pct4, &key);
	/* A new SYN on a closed flow (a client re-using its port) opens a new flow. Its `created`
	 * must differ from the old one's, which names the old flow's end claim. */
	if (ct && f.proto == IPPROTO_TCP && (f.tcp_flags & (CT_TCP_SYN | CT_TCP_ACK)) == CT_TCP_SYN && pct4_closing(ct)) {
		reopened = ct->created;
		ct = NULL;
	}

	if (ct) {
		orig = ct->orig & 1;
		reply = side != orig;
		if (ct->revision != revision) {
			/* Decided again in the flow's original direction, whichever way this packet goes. */
			ret = policy4_decide(orig ? key.addr[1] : key.addr[0], orig ? key.addr[0] : key.addr[1],
					     orig ? key.port[0] : key.port[1], f.proto, reply ? dst_id : src_id,
					     reply ? src_id : dst_id, &d);
			if (ret == POLICY_HOST) {
				d.v.action = POLICY_ACTION_ALLOW;
				d.v.policy_id = 0;
				d.v.rule = 0;
				d.v.tier = POLICY_TIER_NONE;
			} else if (ret == DROP_POLICY_NOT_READY) {
				flow4_emit(skb, pkt, &key, ct, KELP_FLOW_REVOKED);
				bpf_map_delete_elem(&kelp_pct4, &key);
				return policy4_drop(skb, pkt, ret, &d, 0);
			}
			pct4_set_verdict(ct, &d, revision);
			decided = 1;
			if (ct->action == POLICY_ACTION_DENY)
				flow4_emit(skb, pkt, &key, ct, KELP_FLOW_REVOKED);
			else if (ct->action == POLICY_ACTION_ALLOW)
				policy4_count(d.v.policy_id, d.v.rule, POLICY_ACTION_ALLOW, d.dir, skb->len);
		}
		pct4_account(ct, reply, skb->len, f.tcp_flags);
		if (!(ct->flags & PCT4_F_ENDED) && pct4_closing(ct))
			flow4_emit(skb, pkt, &key, ct,
				  (ct->tx_flags | ct->rx_flags) & CT_TCP_RST ? KELP_FLOW_CLOSED_RST : KELP_FLOW_CLOSED_FIN);
		if (ct->action == POLICY_ACTION_ALLOW)
			return 0;
		d.v.action = ct->action;
		d.v.tier = ct->tier;
		d.v.rule = ct->rule;
		d.v.policy_id = ct->policy_id;
		d.ep_id = ct->ep_id;
		d.dir = ct->dir;
		if (ct->action == POLICY_ACTION_AUDIT) {
			/* Reported when decided (an event); counted per packet of the direction the
			 * audit-only policy would have dropped, the opening one. */
			if (decided)
				policy4_drop(skb, pkt, DROP_POLICY_DENY, &d, 1);
			else if (!reply)
				metrics_update(d.ep_id, d.dir == POLICY_INGRESS ? KELP_DIR_TO_POD : KELP_DIR_FROM_POD,
					       KELP_REASON_POLICY_AUDIT, skb->len);
			return 0;
		}
		return policy4_drop(skb, pkt, DROP_POLICY_DENY, &d, 0);
	}

	ret = policy4_decide(f.saddr, f.daddr, f.dport, f.proto, src_id, dst_id, &d);
	if (ret == POLICY_HOST)
		return 0;
	if (ret < 0)
		return policy4_drop(skb, pkt, ret, &d, 0);
	{
		__u64 now = pct4_now();
		struct pct4_entry fresh = {
			.created = now,
			.last_seen = now,
			.tx_packets = 1,
			.tx_bytes = skb->len,
			.orig = side,
			.tx_flags = f.tcp_flags,
		};
		long err;

		if (fresh.created <= reopened)
			fresh.created = reopened + 1;
		pct4_set_verdict(&fresh, &d, revision);
		err = bpf_map_update_elem(&kelp_pct4, &key, &fresh, BPF_ANY);
		if (err)
			return policy4_drop(skb, pkt, DROP_POLICY_CT_FULL, &d, 0);
		flow4_emit(skb, pkt, &key, &fresh, KELP_FLOW_OPEN);
		if (d.v.action == POLICY_ACTION_ALLOW)
			policy4_count(d.v.policy_id, d.v.rule, POLICY_ACTION_ALLOW, d.dir, skb->len);
	}
	if (d.v.action == POLICY_ACTION_AUDIT)
		policy4_drop(skb, pkt, DROP_POLICY_DENY, &d, 1);
	return 0;
}

/*
 * Policy of one packet at a hook (see policy4_enforce). Costs one array lookup while enforcement
 * is off.
 */
static __always_inline int policy4_check(struct __sk_buff *skb, const struct pkt4 *pkt, __u32 src_id, __u32 dst_id)
{
	struct policy_config *cfg = policy_config_get();

	if (!cfg || !(cfg->flags & POLICY_F_ENFORCE) || (!src_id && !dst_id))
		return 0;
	return policy4_enforce(skb, pkt, src_id, dst_id, cfg->revision);
}

/* Whether policy is enforced: hooks that find a local source only for policy look it up only then. */
static __always_inline bool policy_enforced(void)
{
	struct policy_config *cfg = policy_config_get();

	return cfg && (cfg->flags & POLICY_F_ENFORCE);
}

#endif /* KELP_POLICY_H */
