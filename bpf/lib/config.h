/*
 * Node-wide settings the agent writes into .rodata at load time (OpenOptions.constants). Being
 * `volatile const`, the verifier sees their final values and prunes disabled branches, so a
 * switched-off feature costs nothing per packet.
 */
#ifndef KELP_CONFIG_H
#define KELP_CONFIG_H

#include <linux/types.h>

/* Non-zero: emit a trace event on the ring buffer for every redirect (local delivery, ARP reply). */
volatile const __u32 KELP_TRACE = 0;

#endif /* KELP_CONFIG_H */
