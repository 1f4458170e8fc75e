#ifndef KELP_METRICS_H
#define KELP_METRICS_H

#include "common.h"

/*
 * Packet and byte counters per endpoint x direction x reason, in two per-CPU maps (per-CPU, so the
 * hot path increments without atomics; readers sum the CPUs). Readers add both maps up:
 *  - kelp_metrics_fwd, an array, holds reason 0 (forwarded) for ep_id < KELP_METRICS_FWD_EPS at
 *    index ep_id * 2 + dir - 1. Its lookup is a bounds check and an add (the verifier inlines it),
 *    where a hash lookup costs ~25 ns: forwarding counts two of them per packet.
 *  - kelp_metrics, a hash keyed by struct metrics_key, holds everything else: drops, and
 *    forwarded traffic of endpoint ids beyond the array.
 * Counters of a removed endpoint are the agent's to delete or zero.
 */
enum kelp_metrics_limits {
	KELP_METRICS_FWD_EPS = 4096,
};

/* Positive reasons: passed, but counted apart from forwarded traffic (drops are negative,
 * enum kelp_drop_reason). */
enum kelp_metrics_reason {
	KELP_REASON_FORWARDED		= 0,
	KELP_REASON_POLICY_AUDIT	= 1,	/* an audit-only policy would have dropped it */
};

struct metrics_key {
	__u32 ep_id;		/* 0: not attributed to an endpoint */
	__u8 dir;		/* enum kelp_dir */
	__u8 pad;
	__s16 reason;		/* enum kelp_metrics_reason, or enum kelp_drop_reason */
};

struct metrics_value {
	__u64 packets;
	__u64 bytes;		/* skb->len, Ethernet header included */
};

/* Not preallocated: a per-CPU hash preallocates max_entries x possible CPUs values, and drop keys
 * are few. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__type(key, struct metrics_key);
	__type(value, struct metrics_value);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_metrics SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(max_entries, KELP_METRICS_FWD_EPS * 2);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_metrics_fwd SEC(".maps");

static __always_inline void metrics_add(struct metrics_value *v, __u32 bytes)
{
	v->packets++;
	v->bytes += bytes;
}

/* Everything but forwarded traffic of small endpoint ids. A BPF-to-BPF call rather than inlined:
 * inlined, its key and initial value were built on the stack before the array test on every
 * forwarded packet, and each of the half dozen call sites carried its own copy. */
static __attribute__((noinline)) void metrics_update_hash(__u32 ep_id, __u32 dir, int reason, __u32 bytes)
{
	struct metrics_key key = { .ep_id = ep_id, .dir = dir, .reason = reason };
	struct metrics_value init = { .packets = 1, .bytes = bytes };
	struct metrics_value *v;

	v = bpf_map_lookup_elem(&kelp_metrics, &key);
	if (likely(v)) {
		metrics_add(v, bytes);
		return;
	}
	/* EEXIST: another CPU created the key between our lookup and update; count on that entry. */
	if (bpf_map_update_elem(&kelp_metrics, &key, &init, BPF_NOEXIST) == 0)
		return;
	v = bpf_map_lookup_elem(&kelp_metrics, &key);
	if (v)
		metrics_add(v, bytes);
}

static __always_inline void metrics_update(__u32 ep_id, enum kelp_dir dir, int reason, __u32 bytes)
{
	if (likely(reason == 0 && ep_id < KELP_METRICS_FWD_EPS)) {
		__u32 index = ep_id * 2 + dir - 1;
		struct metrics_value *v = bpf_map_lookup_elem(&kelp_metrics_fwd, &index);

		if (likely(v)) {
			metrics_add(v, bytes);
			return;
		}
	}
	metrics_update_hash(ep_id, dir, reason, bytes);
}

#endif /* KELP_METRICS_H */
