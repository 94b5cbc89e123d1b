/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The in-target recorder's ring (issue #12): allocator events written by
 * the target's threads, read by the tracer, in memory both map. Many
 * producers (any thread, with or without the GIL), one consumer; bounded,
 * never blocking a producer: a full ring says so, and that event goes the
 * way it goes today (a probe site, BPF). Every event, in the ring or not,
 * has a number on one scale, so that the tracer can apply events of both
 * ways in the order they happened: a ring event its position, another
 * the head as it is after the ring refused it (see ring.c). Plain structs: the page's code,
 * the tracer and the tests share this header.
 */
#ifndef __PYTM_RING_H
#define __PYTM_RING_H

#include <stdint.h>

/* In the shared mapping: the header, then the slots at this offset. */
#define PYTM_RING_SLOTS_OFF	256

struct pytm_ring_hdr {
	/* line 0: configuration, written by the tracer before use */
	uint64_t slots;			/* a power of two */
	uint64_t slot_size;		/* bytes, a multiple of 8, >= 16 */
	uint64_t owner;			/* the process it is for (a forked child
					 * keeps its parent's mapping: not its) */
	uint64_t pad0[5];
	/* line 1: producers */
	uint64_t head;			/* next position to claim */
	uint64_t pad1a;
	uint64_t full;			/* events the ring had no room for */
	uint64_t pad1[5];
	/* line 2: the consumer */
	uint64_t tail;			/* next position to read */
	uint64_t pad2[7];
};

/*
 * A slot: published when seq == position + 1 (release), then the event's
 * number and its payload (slot_size - 16 bytes).
 */
struct pytm_ring_slot {
	uint64_t seq;
	uint64_t clock;
	uint8_t data[];
};

/* Producers (the page, and the tests). */

/*
 * The number of an event the ring refused (call it after the refusal):
 * the head now.
 */
uint64_t pytm_ring_now(struct pytm_ring_hdr *h);
/*
 * Room for one event, at *POS, or NULL if the ring is full (counted).
 * The caller fills the slot's clock (its number: *POS) and data, then
 * publishes it.
 */
struct pytm_ring_slot *pytm_ring_claim(struct pytm_ring_hdr *h, uint8_t *slots,
				       uint64_t *pos);
void pytm_ring_publish(struct pytm_ring_slot *s, uint64_t pos);

/* The consumer (the tracer, and the tests). */

/*
 * The next published slot, or NULL if the one at the tail is not yet
 * (claimed and still being written, or not claimed): call
 * pytm_ring_release() once done with it.
 */
const struct pytm_ring_slot *pytm_ring_peek(const struct pytm_ring_hdr *h,
					    const uint8_t *slots);
void pytm_ring_release(struct pytm_ring_hdr *h);
/*
 * The same a run at a time: the slot at POS (from the tail on), and the
 * tail moved to POS once done with every slot before it. Producers read
 * the tail at every claim: moving it once per run keeps its cache line
 * from going back and forth between the consumer's core and theirs.
 */
const struct pytm_ring_slot *pytm_ring_peek_at(const struct pytm_ring_hdr *h,
					       const uint8_t *slots, uint64_t pos);
void pytm_ring_release_to(struct pytm_ring_hdr *h, uint64_t pos);

#endif /* __PYTM_RING_H */
