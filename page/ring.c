// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The recorder's ring (see ring.h). Freestanding C: no libc, no system
 * calls; a producer never waits for the consumer, and retries only when
 * another producer claimed the same position first.
 *
 * A producer claims a position by compare-and-swap of head, only while
 * head - tail < slots: a position is never claimed before the consumer
 * has released the slot's previous use, so a claimed slot is the
 * producer's alone until it publishes it (seq = position + 1, release).
 * The consumer reads positions in order: a slot claimed but not yet
 * published stops it there (it comes back later), whatever follows.
 *
 * Order per address: an allocation is recorded before the allocator call
 * returns (nobody else knows the block yet), a free before the free call
 * (nobody can get the block again yet); so for any one block its events'
 * positions, and clocks, are in the order they happened.
 *
 * Across the ring and the other way (BPF), one scale: a ring event's
 * number is its position; an event the ring refused takes the head as it
 * is right after the refusal. Every ring event claimed before has a
 * smaller number, every one claimed after a number as large or larger:
 * for one block, an allocation in the ring numbered below its free's,
 * a reuse of its address numbered at or above it.
 */
#include "ring.h"

#define LOAD(p)		__atomic_load_n(p, __ATOMIC_RELAXED)
#define LOAD_ACQ(p)	__atomic_load_n(p, __ATOMIC_ACQUIRE)
#define STORE_REL(p, v)	__atomic_store_n(p, v, __ATOMIC_RELEASE)

/*
 * The slot this far ahead of the one claimed, up to these bytes of it, is
 * fetched for writing (measured: 2, 4, 8, 16 slots; 8 the best at frames
 * 1 and 25 in tools/bench.py).
 */
#define RING_AHEAD	8
#define RING_AHEAD_BYTES 512

uint64_t pytm_ring_now(struct pytm_ring_hdr *h)
{
	/* After the failed claim (sequentially consistent, both). */
	return __atomic_load_n(&h->head, __ATOMIC_SEQ_CST);
}

struct pytm_ring_slot *pytm_ring_claim(struct pytm_ring_hdr *h, uint8_t *slots,
				       uint64_t *pos)
{
	uint64_t n = LOAD(&h->slots), p = LOAD(&h->head), size, off;
	uint8_t *next;

	for (;;) {
		/* Acquire: the consumer is done with the slot's last use. */
		if (p - LOAD_ACQ(&h->tail) >= n) {
			__atomic_fetch_add(&h->full, 1, __ATOMIC_RELAXED);
			return 0;
		}
		if (__atomic_compare_exchange_n(&h->head, &p, p + 1, 1, __ATOMIC_SEQ_CST,
						__ATOMIC_RELAXED))
			break;
	}
	*pos = p;
	size = LOAD(&h->slot_size);
	/*
	 * A slot ahead, for writing: the consumer read it last, a lap ago,
	 * so its lines are in another core's cache or gone to memory, and
	 * the lock above waits for every store before it to complete: a
	 * slot's store that misses stalled the target there (~40% of its
	 * time at frames 1). Fetched now, its lines are here when it comes.
	 */
	next = slots + ((p + RING_AHEAD) & (n - 1)) * size;
	for (off = 0; off < size && off < RING_AHEAD_BYTES; off += 64)
		__asm__ volatile("prefetchw %0" : : "m"(next[off]));
	return (struct pytm_ring_slot *)(slots + (p & (n - 1)) * size);
}

void pytm_ring_publish(struct pytm_ring_slot *s, uint64_t pos)
{
	STORE_REL(&s->seq, pos + 1);
}

const struct pytm_ring_slot *pytm_ring_peek_at(const struct pytm_ring_hdr *h,
					       const uint8_t *slots, uint64_t pos)
{
	uint64_t n = LOAD(&h->slots);
	const struct pytm_ring_slot *s;

	s = (const struct pytm_ring_slot *)(slots + (pos & (n - 1)) * LOAD(&h->slot_size));
	/* Acquire: the producer's writes to the slot are seen. */
	return LOAD_ACQ(&s->seq) == pos + 1 ? s : 0;
}

void pytm_ring_release_to(struct pytm_ring_hdr *h, uint64_t pos)
{
	/* Release: done reading the slots before a producer may claim them again. */
	STORE_REL(&h->tail, pos);
}

const struct pytm_ring_slot *pytm_ring_peek(const struct pytm_ring_hdr *h,
					    const uint8_t *slots)
{
	return pytm_ring_peek_at(h, slots, LOAD(&h->tail));
}

void pytm_ring_release(struct pytm_ring_hdr *h)
{
	pytm_ring_release_to(h, LOAD(&h->tail) + 1);
}
