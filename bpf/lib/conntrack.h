/* Connection tracking for flows kelp translates. One entry per flow, keyed by the flow's
 * original-direction tuple; both directions account into it. The agent expires entries
 * (src/datapath/nat.ts gcNat) from the timestamps and TCP flags kept here; the LRU type only
 * protects the datapath if the agent stops collecting. */
#ifndef KELP_CONNTRACK_H
#define KELP_CONNTRACK_H

#include <linux/in.h>
#include "common.h"
#include "ct_count.h"
#include "l4.h"
#include "tuple.h"

/* Which side opened the flow (tuple4.dir of kelp_ct4 keys). Only CT_EGRESS is created today
 * (masquerade). Enums rather than macros, here and below, so that they reach the BTF where
 * test/unit/btf-layout.test.ts checks src/datapath/nat.ts against them. */
enum ct_dir {
	CT_EGRESS	= 0,
	CT_INGRESS	= 1,
};

struct ct4_entry {
#ifdef KELP_TEST_LAYOUT_V2
	/* Only in the test build of layout 2 (build/bpf/layout-v2/, src/datapath/maps/test-layouts.ts):
	 * shifts every field, so an upgrade that copied bytes instead of converting entries shows. */
	__u64 layout_v2;
#endif
	__u64 created;   /* bpf_ktime_get_ns() at first packet (or TCP re-open) */
	__u64 last_seen; /* bpf_ktime_get_ns() at the latest packet, either direction */
	__u64 tx_packets; /* original direction */
	__u64 tx_bytes;
	__u64 rx_packets; /* reply direction */
	__u64 rx_bytes;
	/* TCP flags OR'd over each direction's packets. One byte per direction so the two
	 * directions, often on different CPUs, never overwrite each other's bits (the default
	 * BPF CPU has no atomic OR). */
	__u8 tx_flags;
	__u8 rx_flags;
	__u8 pad[6];
};

#define KELP_CT4_MAX 65536

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct tuple4);
	__type(value, struct ct4_entry);
	__uint(max_entries, KELP_CT4_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} kelp_ct4 SEC(".maps");

static __always_inline int ct4_closing(const struct ct4_entry *ct)
{
	__u8 all = ct->tx_flags | ct->rx_flags;

	return (all & CT_TCP_RST) || ((ct->tx_flags & CT_TCP_FIN) && (ct->rx_flags & CT_TCP_FIN));
}

/* Accounts one packet of the flow whose original tuple is `orig`, creating the entry on the
 * first one. `reply` selects the direction. Returns 0, or -1 when the map refused a new entry
 * (the caller drops: a flow the agent cannot see would never be collected). */
static __always_inline int ct4_account(const struct tuple4 *orig, int reply, __u32 bytes, __u8 tcp_flags)
{
	__u64 now = bpf_ktime_get_ns();
	struct ct4_entry *ct;

	ct = bpf_map_lookup_elem(&kelp_ct4, orig);
	if (!ct) {
		struct ct4_entry fresh = { .created = now, .last_seen = now };
		long err;

		if (reply) {
			fresh.rx_packets = 1;
			fresh.rx_bytes = bytes;
			fresh.rx_flags = tcp_flags;
		} else {
			fresh.tx_packets = 1;
			fresh.tx_bytes = bytes;
			fresh.tx_flags = tcp_flags;
		}
		err = bpf_map_update_elem(&kelp_ct4, orig, &fresh, BPF_NOEXIST);
		if (err == 0)
			return 0;
		/* Another CPU created it first: account into theirs. */
		ct = bpf_map_lookup_elem(&kelp_ct4, orig);
		if (!ct)
			return -1;
	}

	/* A new SYN on a closed flow (client reusing its port) restarts the entry, so the
	 * agent times it as a fresh connection rather than a closing one. */
	if (!reply && orig->proto == IPPROTO_TCP && (tcp_flags & (CT_TCP_SYN | CT_TCP_ACK)) == CT_TCP_SYN &&
	    ct4_closing(ct)) {
		ct->created = now;
		ct->tx_flags = 0;
		ct->rx_flags = 0;
	}

	ct->last_seen = now;
	if (reply)
		ct_count(&ct->rx_packets, &ct->rx_bytes, &ct->rx_flags, bytes, tcp_flags);
	else
		ct_count(&ct->tx_packets, &ct->tx_bytes, &ct->tx_flags, bytes, tcp_flags);
	return 0;
}

#endif /* KELP_CONNTRACK_H */
