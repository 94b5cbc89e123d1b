// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The recorder's ring (page/ring.c), in a test process: claims up to the
 * size and a counted refusal beyond it, wrap-around, a slot claimed but not
 * published holding the consumer back; then producer threads against a
 * consumer thread on a ring small enough to fill: every event either read
 * once, whole, in each producer's order, or counted as not taken; clocks
 * unique.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "unit.h"
#include "ring.h"	/* page/ring.c: linked with the tracer's objects */

struct payload {
	uint64_t producer, n, check;
};

#define SLOT_SIZE	(16 + sizeof(struct payload))

static struct pytm_ring_hdr hdr;
static uint8_t *slots;

static void ring_init(uint64_t n)
{
	memset(&hdr, 0, sizeof(hdr));
	hdr.slots = n;
	hdr.slot_size = SLOT_SIZE;
	free(slots);
	slots = calloc(n, SLOT_SIZE);
}

/* One event of PRODUCER, number N: 0 if the ring was full. */
static int put(uint64_t producer, uint64_t n)
{
	struct pytm_ring_slot *s;
	struct payload p = { producer, n, producer * 0x9e3779b97f4a7c15ULL ^ n };
	uint64_t pos;

	s = pytm_ring_claim(&hdr, slots, &pos);
	if (!s)
		return 0;
	s->clock = pos;
	memcpy(s->data, &p, sizeof(p));
	pytm_ring_publish(s, pos);
	return 1;
}

static int get(struct payload *p, uint64_t *clock)
{
	const struct pytm_ring_slot *s = pytm_ring_peek(&hdr, slots);

	if (!s)
		return 0;
	memcpy(p, s->data, sizeof(*p));
	*clock = s->clock;
	pytm_ring_release(&hdr);
	return 1;
}

static void test_single(void)
{
	struct pytm_ring_slot *a, *b;
	struct payload p;
	uint64_t clock, pa, pb, i;
	int ok = 1;

	ring_init(8);
	for (i = 0; i < 8; i++)
		ok &= put(1, i);
	CHECK(ok && !put(1, 8) && hdr.full == 1, "8 of 8 taken, the 9th refused and counted");
	for (i = 0; i < 3; i++)
		ok &= get(&p, &clock) && p.n == i && clock == i;
	CHECK(ok, "read in order with their clocks");
	for (i = 8; i < 11; i++)
		ok &= put(1, i);
	CHECK(ok && !put(1, 11) && hdr.full == 2, "wrapped: 3 more, then full again");
	for (i = 3; i < 11; i++)
		ok &= get(&p, &clock) && p.n == i;
	CHECK(ok && !get(&p, &clock), "the rest in order, then empty");

	/* Claimed, not published: the consumer waits there. */
	a = pytm_ring_claim(&hdr, slots, &pa);
	b = pytm_ring_claim(&hdr, slots, &pb);
	CHECK(a && b && pb == pa + 1, "two claims, consecutive");
	b->clock = 100;
	pytm_ring_publish(b, pb);
	CHECK(!get(&p, &clock), "a later slot published: nothing to read yet");
	a->clock = 99;
	pytm_ring_publish(a, pa);
	CHECK(get(&p, &clock) && clock == 99 && get(&p, &clock) && clock == 100,
	      "then both, in position order");
}

#define PRODUCERS 4
#define EVENTS 400000

static uint64_t taken[PRODUCERS];
static volatile int producing;

static void *producer(void *arg)
{
	uint64_t id = (uintptr_t)arg, n;

	for (n = 0; n < EVENTS; n++)
		taken[id] += put(id, n);
	__atomic_fetch_sub(&producing, 1, __ATOMIC_RELEASE);
	return NULL;
}

static void test_threads(void)
{
	static uint8_t clock_seen[PRODUCERS * EVENTS];
	uint64_t last[PRODUCERS], got[PRODUCERS] = { 0 }, clock, total = 0, all = 0;
	pthread_t th[PRODUCERS];
	struct payload p;
	int bad = 0, i;

	ring_init(1024);
	memset(last, 0xff, sizeof(last));
	producing = PRODUCERS;
	for (i = 0; i < PRODUCERS; i++)
		pthread_create(&th[i], NULL, producer, (void *)(uintptr_t)i);
	for (;;) {
		int done = __atomic_load_n(&producing, __ATOMIC_ACQUIRE) == 0;

		while (get(&p, &clock)) {
			if (p.producer >= PRODUCERS || p.check != (p.producer * 0x9e3779b97f4a7c15ULL ^ p.n) ||
			    (last[p.producer] != UINT64_MAX && p.n <= last[p.producer]) ||
			    clock >= sizeof(clock_seen) || clock_seen[clock]++) {
				bad++;
				continue;
			}
			last[p.producer] = p.n;
			got[p.producer]++;
			total++;
		}
		if (done && !pytm_ring_peek(&hdr, slots))
			break;
	}
	for (i = 0; i < PRODUCERS; i++) {
		pthread_join(th[i], NULL);
		all += taken[i];
		CHECK(got[i] == taken[i], "producer %d: %lu read of %lu taken", i,
		      (unsigned long)got[i], (unsigned long)taken[i]);
	}
	CHECK(!bad, "%d events torn, out of order or read twice", bad);
	CHECK(all + hdr.full == PRODUCERS * EVENTS && hdr.head == all,
	      "every event read or counted full (%lu read, %lu full)", (unsigned long)total,
	      (unsigned long)hdr.full);
	CHECK(hdr.full > 0 && total > 4 * 1024, "the ring filled at times and drained at others");
	printf("test_ring: %d producers x %d events into 1024 slots: %lu read, %lu full\n",
	       PRODUCERS, EVENTS, (unsigned long)total, (unsigned long)hdr.full);
}

int main(void)
{
	test_single();
	test_threads();
	free(slots);
	return unit_done("test_ring");
}
