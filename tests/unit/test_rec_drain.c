// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The recorder's drain (user/session/rec_drain.c) against a model: random
 * allocations and frees of a few hundred thousand addresses written into a
 * small ring (its drain thread reading them meanwhile), some frees sent
 * as tombstones instead, a clear midway; at checkpoints the live blocks
 * recorder__each shows must be the model's, size for size. Enough live
 * blocks that the live table's index grows and moves several times. A
 * forked child's copy (recorder__inherit) a few thousand events after its
 * fork must be the model as it was at the fork; much later, it says some
 * frees were forgotten. --peak: the set at the last mark (blocks numbered
 * by it, live or freed since) adds up to the mark's bytes, which are
 * within the step of the peak, and the model's peak is not above it.
 * Code objects: a frame flagged new takes the id the event thread gave it
 * for that event (recorder__code), not one for an earlier event at the
 * same address that came after the drain had read it itself.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "rec_drain.h"
#include "recorder.h"
#include "ring.h"
#include "unit.h"

#define ADDRS		(1u << 18)
#define SLOTS		1024

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

struct model {
	uint64_t size[ADDRS];		/* 0: not live */
	uint64_t live, bytes;
};

static struct model m, at_fork;

static uint64_t addr_of(uint32_t i)
{
	return 0x7f0000000000ull + (uint64_t)i * 48;
}

static void put(struct pytm_ring_hdr *h, uint8_t *slots, int kind, uint64_t ptr,
		uint64_t size)
{
	struct pytm_ring_slot *s;
	struct pytm_rec_event *ev;
	uint64_t pos;

	while (!(s = pytm_ring_claim(h, slots, &pos)))
		;	/* the drain thread makes room */
	s->clock = pos;
	ev = (struct pytm_rec_event *)s->data;
	memset(ev, 0, sizeof(*ev));
	ev->kind = (uint8_t)kind;
	ev->ptr = ptr;
	ev->size = size;
	pytm_ring_publish(s, pos);
}

/* An allocation at PTR whose one frame is code object CODE, flagged NEW. */
static uint64_t put_framed(struct pytm_ring_hdr *h, uint8_t *slots, uint64_t ptr,
			   uint64_t code, bool flagged, struct recorder *early_to)
{
	struct pytm_ring_slot *s;
	struct pytm_rec_event *ev;
	uint64_t pos;

	while (!(s = pytm_ring_claim(h, slots, &pos)))
		;
	s->clock = pos;
	ev = (struct pytm_rec_event *)s->data;
	memset(ev, 0, sizeof(*ev) + sizeof(ev->frames[0]));
	ev->kind = PYTM_REC_ALLOC;
	ev->ptr = ptr;
	ev->size = 64;
	ev->nframe = 1;
	ev->total = 1;
	ev->frames[0].code = code;
	ev->frames[0].pad = flagged ? PYTM_REC_NEW_CODE : 0;
	if (early_to)	/* the code site, before the event is published */
		recorder__code(early_to, code, pos, NULL, 0);
	pytm_ring_publish(s, pos);
	return pos;
}

struct frame_of {
	uint64_t addr;
	uint32_t id;
};

static int each_frame(void *arg, const struct recorder_block *b, const struct pytm_stack *st,
		      uint32_t stack)
{
	struct frame_of *f = arg;

	(void)stack;
	if (b->addr == f->addr && st && st->nframe == 1)
		f->id = PYTM_FRAME_ID(st->frames[0]);
	return 0;
}

static uint32_t frame_id(struct recorder *rec, uint64_t addr)
{
	struct frame_of f = { addr, 0 };

	recorder__sync(rec);
	recorder__lock(rec);
	recorder__each(rec, each_frame, &f);
	recorder__unlock(rec);
	return f.id;
}

static void check_early_codes(void)
{
	size_t slot_size = (PYTM_REC_SLOT_SIZE(1) + 7) & ~(size_t)7;
	struct recorder_opts o = { .procs_fd = -1, .codes_fd = -1 };
	const uint64_t code = 0x7e0000001000ull;
	struct pytm_ring_hdr *h = calloc(1, PYTM_RING_SLOTS_OFF + 64 * slot_size);
	struct recorder_stats rs;
	struct recorder *rec = NULL;
	uint32_t ids = 100, own;
	uint64_t clock;
	uint8_t *slots;

	if (!h)
		return;
	h->slots = 64;
	h->slot_size = slot_size;
	slots = (uint8_t *)h + PYTM_RING_SLOTS_OFF;
	o.ring = h;
	o.next_code_id = &ids;
	CHECK(!recorder__start(&rec, &o), "recorder__start (code objects)");
	if (!rec)
		goto out;
	/* Read at its code site: the event's frame has that id, later ones too. */
	put_framed(h, slots, 0x1000, code, true, rec);
	put_framed(h, slots, 0x2000, code, false, NULL);
	CHECK(frame_id(rec, 0x1000) == 101 && frame_id(rec, 0x2000) == 101,
	      "a code object read at its code site: ids %u %u, want 101",
	      frame_id(rec, 0x1000), frame_id(rec, 0x2000));
	/* Freed; another at its address, the drain first: it reads it itself. */
	put(h, slots, PYTM_REC_FREE, code, 0);
	clock = put_framed(h, slots, 0x3000, code, true, NULL);
	own = frame_id(rec, 0x3000);
	recorder__code(rec, code, clock, NULL, 0);	/* the event thread, late */
	CHECK(own == 102, "read by the drain: id %u, want 102", own);
	/* Freed; a third one: its own read, not the late one of the second. */
	put(h, slots, PYTM_REC_FREE, code, 0);
	put_framed(h, slots, 0x4000, code, true, rec);
	CHECK(frame_id(rec, 0x4000) == 104 && frame_id(rec, 0x3000) == 102,
	      "after a late read: ids %u %u, want 104 102", frame_id(rec, 0x4000),
	      frame_id(rec, 0x3000));
	/* Copies out of their events' order (two ring buffers): each finds its own. */
	{
		struct pytm_ring_slot *sa, *sb;
		struct pytm_rec_event *ea, *eb;
		uint64_t pa, pb;

		sa = pytm_ring_claim(h, slots, &pa);
		sb = pytm_ring_claim(h, slots, &pb);
		CHECK(sa && sb, "two slots");
		if (sa && sb) {
			sa->clock = pa;
			sb->clock = pb;
			ea = (struct pytm_rec_event *)sa->data;
			eb = (struct pytm_rec_event *)sb->data;
			memset(ea, 0, sizeof(*ea) + sizeof(ea->frames[0]));
			memset(eb, 0, sizeof(*eb) + sizeof(eb->frames[0]));
			ea->kind = eb->kind = PYTM_REC_ALLOC;
			ea->size = eb->size = 64;
			ea->nframe = eb->nframe = ea->total = eb->total = 1;
			ea->ptr = 0x5000;
			eb->ptr = 0x6000;
			ea->frames[0].code = code + 0x100;
			eb->frames[0].code = code + 0x200;
			ea->frames[0].pad = eb->frames[0].pad = PYTM_REC_NEW_CODE;
			recorder__code(rec, code + 0x200, pb, NULL, 0);	/* 105 */
			recorder__code(rec, code + 0x100, pa, NULL, 0);	/* 106 */
			pytm_ring_publish(sa, pa);
			pytm_ring_publish(sb, pb);
			CHECK(frame_id(rec, 0x5000) == 106 && frame_id(rec, 0x6000) == 105,
			      "copies out of order: ids %u %u, want 106 105", frame_id(rec, 0x5000),
			      frame_id(rec, 0x6000));
		}
	}
	recorder__stats(rec, 0, &rs);
	CHECK(rs.codes == 5 && rs.codes_early == 4, "code objects %llu, early %llu: want 5, 4",
	      (unsigned long long)rs.codes, (unsigned long long)rs.codes_early);
	recorder__stop(rec);
out:
	free(h);
}

struct seen {
	const struct model *want;	/* what the blocks must be */
	uint64_t n, bytes, wrong;
};

static void seen_block(struct seen *s, const struct recorder_block *b)
{
	uint64_t i = (b->addr - addr_of(0)) / 48;

	s->n++;
	s->bytes += b->size;
	if (i >= ADDRS || b->addr != addr_of((uint32_t)i) || s->want->size[i] != b->size)
		s->wrong++;
}

static int each(void *arg, const struct recorder_block *b, const struct pytm_stack *st,
		uint32_t stack)
{
	(void)st;
	(void)stack;
	seen_block(arg, b);
	return 0;
}

/* A block of the peak's set: counted, not checked against a model. */
static int each_any(void *arg, const struct recorder_block *b, const struct pytm_stack *st,
		    uint32_t stack)
{
	struct seen *s = arg;

	(void)st;
	(void)stack;
	s->n++;
	s->bytes += b->size;
	return 0;
}

static int each_inherited(void *arg, const struct recorder_block *b,
			  const struct pytm_stack *st)
{
	(void)st;
	seen_block(arg, b);
	return 0;
}

static void check_inherit(struct recorder *rec, uint64_t fork_clock, int want_err)
{
	struct seen s = { .want = &at_fork };
	int err = recorder__inherit(rec, fork_clock, each_inherited, &s);

	CHECK(err == want_err, "inherit: %d, want %d", err, want_err);
	if (want_err)
		return;
	CHECK(s.n == at_fork.live && s.bytes == at_fork.bytes && !s.wrong,
	      "inherit: %llu blocks, %llu B, %llu wrong; at the fork %llu, %llu B",
	      (unsigned long long)s.n, (unsigned long long)s.bytes,
	      (unsigned long long)s.wrong, (unsigned long long)at_fork.live,
	      (unsigned long long)at_fork.bytes);
}

static uint64_t marks, model_peak;

static void on_mark(void *arg, uint64_t ns)
{
	(void)arg;
	(void)ns;
	marks++;
}

static void check_peak(struct recorder *rec, const char *when)
{
	struct recorder_stats rs;
	struct seen s = { 0 };
	uint64_t ns;

	recorder__sync(rec);
	recorder__lock(rec);
	ns = recorder__peak_mark(rec);
	recorder__peak_each(rec, each_any, &s);
	recorder__unlock(rec);
	recorder__stats(rec, 0, &rs);
	CHECK(ns && marks, "%s: no peak mark (%llu told)", when, (unsigned long long)marks);
	CHECK((int64_t)s.bytes == rs.mark, "%s: the set at the mark: %llu B, the mark %lld B",
	      when, (unsigned long long)s.bytes, (long long)rs.mark);
	CHECK(rs.mark * 101 >= rs.peak * 100 && rs.mark <= rs.peak &&
	      (int64_t)model_peak <= rs.peak,
	      "%s: mark %lld B, peak %lld B, the model's peak %llu B", when, (long long)rs.mark,
	      (long long)rs.peak, (unsigned long long)model_peak);
}

static void checkpoint(struct recorder *rec, const char *when)
{
	struct recorder_stats rs;
	struct seen s = { .want = &m };

	recorder__sync(rec);
	recorder__lock(rec);
	recorder__each(rec, each, &s);
	recorder__unlock(rec);
	recorder__stats(rec, 0, &rs);
	CHECK(s.n == m.live && s.bytes == m.bytes && !s.wrong,
	      "%s: %llu blocks, %llu B, %llu wrong; model %llu, %llu B", when,
	      (unsigned long long)s.n, (unsigned long long)s.bytes,
	      (unsigned long long)s.wrong, (unsigned long long)m.live,
	      (unsigned long long)m.bytes);
	CHECK(rs.blocks == m.live && rs.current == (int64_t)m.bytes && !rs.lost,
	      "%s: stats %llu blocks, %lld B, %llu lost", when,
	      (unsigned long long)rs.blocks, (long long)rs.current,
	      (unsigned long long)rs.lost);
}

int main(void)
{
	size_t slot_size = (PYTM_REC_SLOT_SIZE(1) + 7) & ~(size_t)7;
	struct recorder_opts o = { .procs_fd = -1, .codes_fd = -1, .peak_step = 10000,
				   .peak_mark = on_mark };
	struct pytm_ring_hdr *h;
	struct recorder *rec = NULL;
	uint32_t code_ids = 0, i;
	uint8_t *slots;
	uint64_t op, size, fork_clock = 0;
	char when[64];

	h = calloc(1, PYTM_RING_SLOTS_OFF + SLOTS * slot_size);
	if (!h)
		return 1;
	h->slots = SLOTS;
	h->slot_size = slot_size;
	slots = (uint8_t *)h + PYTM_RING_SLOTS_OFF;
	o.ring = h;
	o.next_code_id = &code_ids;
	CHECK(!recorder__start(&rec, &o), "recorder__start");
	if (!rec)
		return unit_done("test_rec_drain");
	for (op = 1; op <= 3000000; op++) {
		/* Mostly allocations early (the table grows), balanced later. */
		i = (uint32_t)(next() % ADDRS);
		if (next() % 100 < (op < 1000000 ? 80 : 50)) {
			size = 1 + next() % 4096;
			put(h, slots, PYTM_REC_ALLOC, addr_of(i), size);
			if (m.size[i]) {	/* replaced, as tracemalloc does */
				m.live--;
				m.bytes -= m.size[i];
			}
			m.size[i] = size;
			m.live++;
			m.bytes += size;
			if (m.bytes > model_peak)
				model_peak = m.bytes;
		} else {
			if (next() % 8)
				put(h, slots, PYTM_REC_FREE, addr_of(i), 0);
			else	/* the ring was full: BPF's way, numbered by the head */
				recorder__tomb(rec, addr_of(i), __atomic_load_n(&h->head,
									  __ATOMIC_SEQ_CST));
			if (m.size[i]) {
				m.live--;
				m.bytes -= m.size[i];
				m.size[i] = 0;
			}
		}
		if (!(op % 500000)) {
			snprintf(when, sizeof(when), "after %llu events", (unsigned long long)op);
			checkpoint(rec, when);
			if (op < 2000000)	/* a clear empties the set, the mark stays */
				check_peak(rec, when);
		}
		if (op == 1500000) {	/* a fork: the ring's head now */
			fork_clock = __atomic_load_n(&h->head, __ATOMIC_SEQ_CST);
			at_fork = m;
		}
		if (op == 1503000)
			check_inherit(rec, fork_clock, 0);
		if (op == 1999999)	/* ~250,000 frees since: not all kept */
			check_inherit(rec, fork_clock, -ERANGE);
		if (op == 2000000) {
			recorder__clear(rec);
			memset(&m, 0, sizeof(m));
			checkpoint(rec, "cleared");
		}
	}
	recorder__stop(rec);
	free(h);
	check_early_codes();
	return unit_done("test_rec_drain");
}
