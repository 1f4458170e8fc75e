/* Per-direction packet accounting shared by the conntracks (no map of its own, so any object may
 * include it). */
#ifndef KELP_CT_COUNT_H
#define KELP_CT_COUNT_H

#include "common.h"

/* Counts one packet of `len` bytes into one direction's counters and TCP flags: kelp_ct4's and
 * kelp_pct4's entries (bpf/lib/policy.h) keep the same per-direction fields. Counters are added
 * atomically (both directions and several CPUs meet in one entry); the flags byte is written only
 * when it gains a bit. */
static __always_inline void ct_count(__u64 *packets, __u64 *bytes, __u8 *flags, __u32 len, __u8 tcp_flags)
{
	__sync_fetch_and_add(packets, 1);
	__sync_fetch_and_add(bytes, len);
	if ((*flags | tcp_flags) != *flags)
		*flags |= tcp_flags;
}

#endif /* KELP_CT_COUNT_H */
