// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The in-target recorder's stack walk (see recorder.h). Freestanding C:
 * no libc, no system calls, one bounded loop. The same steps as BPF's
 * frame_step (bpf/stack.bpf.h), one for one, so that both give the same
 * stacks: they are tested against tracemalloc inside real interpreters
 * (tests/unit/rec_hook.c, tests/test_recorder.py).
 */
#include "recorder.h"
#include "ring.h"

#define LD64(a)	(*(const volatile uint64_t *)(uintptr_t)(a))
#define LD32(a)	(*(const volatile int32_t *)(uintptr_t)(a))
#define LD8(a)	(*(const volatile uint8_t *)(uintptr_t)(a))
#define LOAD_SLOT_SIZE(h) __atomic_load_n(&(h)->slot_size, __ATOMIC_RELAXED)

uint32_t pytm_rec_walk(const struct pytm_offsets *off, uint32_t max_frames,
		       uint32_t max_total, uint64_t tstate,
		       struct pytm_rec_frame *out, uint32_t *total)
{
	uint64_t frame, cur, code, instr, start;
	uint32_t n = 0, t = 0, steps;
	int32_t lasti, first;
	uint8_t owner;

	if (max_frames > PYTM_MAX_FRAMES)
		max_frames = PYTM_MAX_FRAMES;
	frame = tstate ? LD64(tstate + off->tstate_frame) : 0;
	if (off->layout == PYTM_LAYOUT_CFRAME && frame)
		frame = LD64(frame + off->cframe_current_frame);
	/* As many steps as BPF's bpf_loop allows: a cycle ends too. */
	for (steps = 0; frame && t < max_total && steps < PYTM_MAX_FRAMES + 1024; steps++) {
		cur = frame;
		frame = LD64(cur + off->frame_back);
		if (off->layout == PYTM_LAYOUT_FRAMEOBJ) {
			if (n >= max_frames) {
				t++;	/* beyond the limit only the count matters */
				continue;
			}
			code = LD64(cur + off->frame_code);
			if (!code)
				break;
			lasti = LD32(cur + off->frame_lasti);
		} else {
			/* What is skipped is not counted either, beyond the limit too. */
			owner = LD8(cur + off->frame_owner);
			if (owner == off->owner_cstack)
				continue;	/* a shim frame of the C stack */
			code = LD64(cur + off->frame_code) & ~(uint64_t)off->frame_tag_bits;
			if (!code)
				break;
			instr = LD64(cur + off->frame_lasti);
			start = code + off->code_adaptive;
			first = off->code_firsttraceable != PYTM_OFF_NONE ?
				LD32(code + off->code_firsttraceable) : 0;
			/* Incomplete: the frame has not started its code yet. */
			if (owner != off->owner_generator &&
			    (int64_t)instr < (int64_t)(start + 2 * (int64_t)first))
				continue;
			if (n >= max_frames) {
				t++;
				continue;
			}
			/* In code units; arithmetic shift keeps -1 for "before the first". */
			lasti = (int32_t)(((int64_t)instr - (int64_t)start) >> 1);
		}
		out[n].code = code;
		out[n].lasti = lasti;
		out[n].pad = 0;
		n++;
		t++;
	}
	*total = t;
	return n;
}

struct pytm_ring_slot *pytm_rec_begin(struct pytm_ring_hdr *h, uint8_t *slots,
				      const struct pytm_offsets *off, uint32_t max_frames,
				      uint32_t max_total, uint64_t tstate,
				      const struct pytm_rec_event *ev, uint64_t *pos)
{
	struct pytm_ring_slot *s;
	struct pytm_rec_event *out;
	uint64_t room;

	s = pytm_ring_claim(h, slots, pos);
	if (!s)
		return 0;
	s->clock = *pos;	/* its number (see ring.c) */
	out = (struct pytm_rec_event *)s->data;
	out->kind = ev->kind;
	out->domain = ev->domain;
	out->ptr = ev->ptr;
	out->size = ev->size;
	out->old = ev->old;
	out->nframe = 0;
	out->total = 0;
	/* No more frames than the slot holds, whatever the caller asks. */
	room = (LOAD_SLOT_SIZE(h) - sizeof(*s) - sizeof(*out)) / sizeof(out->frames[0]);
	if (max_frames > room)
		max_frames = (uint32_t)room;
	if (ev->kind == PYTM_REC_ALLOC || ev->kind == PYTM_REC_REALLOC ||
	    ev->kind == PYTM_REC_RESTAMP)
		out->nframe = (uint16_t)pytm_rec_walk(off, max_frames, max_total, tstate,
						      out->frames, &out->total);
	return s;
}

int pytm_rec_record(struct pytm_ring_hdr *h, uint8_t *slots, const struct pytm_offsets *off,
		    uint32_t max_frames, uint32_t max_total, uint64_t tstate,
		    const struct pytm_rec_event *ev, uint64_t *clock)
{
	struct pytm_ring_slot *s;
	uint64_t pos;

	s = pytm_rec_begin(h, slots, off, max_frames, max_total, tstate, ev, &pos);
	if (!s) {
		*clock = pytm_ring_now(h);
		return 0;
	}
	*clock = s->clock;
	pytm_ring_publish(s, pos);
	return 1;
}

uint64_t pytm_rec_tstate(const struct pytm_offsets *off, uint64_t runtime, int64_t tls,
			 int gil_held)
{
	uint64_t tp;

	if (tls) {
		__asm__ volatile("mov %%fs:0, %0" : "=r"(tp));	/* the x86-64 ABI's thread pointer */
		return LD64(tp + (uint64_t)tls);
	}
	if (gil_held && off->runtime_tstate_current != PYTM_OFF_NONE)
		return LD64(runtime + off->runtime_tstate_current);
	return 0;
}
