/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The in-target recorder's stack walk: the current thread's Python frames
 * read with plain loads, in the target, as BPF reads them
 * (bpf/stack.bpf.h) and as tracemalloc does in-process. Shared by the
 * code that will run in the page and its tests. Plain structs only.
 */
#ifndef __PYTM_RECORDER_H
#define __PYTM_RECORDER_H

#include <stdint.h>
#include "pytm.h"

/* One frame: its code object and instruction offset (as BPF records it). */
struct pytm_rec_frame {
	uint64_t code;
	int32_t lasti;
	uint32_t pad;
};

/*
 * Walk the frames of TSTATE (a PyThreadState of the calling thread) with
 * offsets OFF, most recent first, skipping what tracemalloc skips (frames
 * that have not started their code, C-stack shims): up to MAX_FRAMES into
 * OUT, counting up to MAX_TOTAL in *TOTAL. Returns the frames kept.
 * The pointers are the interpreter's own for the running thread: OFF must
 * have been validated against the process before this runs.
 */
uint32_t pytm_rec_walk(const struct pytm_offsets *off, uint32_t max_frames,
		       uint32_t max_total, uint64_t tstate,
		       struct pytm_rec_frame *out, uint32_t *total);

/*
 * The calling thread's PyThreadState without the kernel: 3.12+ keep it in
 * a thread-local variable (_Py_tss_tstate), at TLS bytes from the thread
 * pointer (%fs:0) when libpython's TLS is static (the tracer finds the
 * offset; 0: not known); until 3.11 the thread holding the GIL is
 * _PyRuntime.gilstate.tstate_current (RUNTIME: &_PyRuntime), which is the
 * caller's when GIL_HELD (obj and mem calls). 0 when neither applies: the
 * event goes to BPF, which finds it by searching the thread list.
 */
uint64_t pytm_rec_tstate(const struct pytm_offsets *off, uint64_t runtime, int64_t tls,
			 int gil_held);

/* What a ring slot's data holds: one allocator event and its stack. */
enum pytm_rec_kind {
	PYTM_REC_ALLOC = 1,		/* ptr, size */
	PYTM_REC_FREE = 2,		/* ptr */
	PYTM_REC_REALLOC = 3,		/* ptr (new), old, size */
	PYTM_REC_RESTAMP = 4,		/* ptr: an object created in it (3.13+
					 * free lists): its traceback is now this */
};

/*
 * pytm_rec_frame.pad in a ring event: the page had not seen this code
 * object before (the tracer reads it; see page/sampler.c).
 */
#define PYTM_REC_NEW_CODE	1

struct pytm_rec_event {
	uint8_t kind;			/* enum pytm_rec_kind */
	uint8_t domain;			/* 0 raw, 1 mem, 2 obj */
	uint16_t nframe;		/* frames that follow (allocations only) */
	uint32_t total;			/* frames counted */
	uint64_t ptr, size, old;
	struct pytm_rec_frame frames[];
};

/* Ring slot bytes for events of up to MAX_FRAMES frames. */
#define PYTM_REC_SLOT_SIZE(max_frames) \
	(16 + sizeof(struct pytm_rec_event) + (max_frames) * sizeof(struct pytm_rec_frame))

struct pytm_ring_hdr;

/*
 * Record one event in the ring (H, SLOTS) with its number from the ring's
 * clock: an allocation's stack walked from TSTATE straight into its slot.
 * Returns 1, or 0 if the ring is full: the caller passes the event on
 * another way (*CLOCK is its number either way).
 */
int pytm_rec_record(struct pytm_ring_hdr *h, uint8_t *slots, const struct pytm_offsets *off,
		    uint32_t max_frames, uint32_t max_total, uint64_t tstate,
		    const struct pytm_rec_event *ev, uint64_t *clock);

/*
 * The same in two steps: claim a slot, number and fill it (NULL if the
 * ring is full: nothing numbered), then the caller may look at the frames
 * and publishes it (pytm_ring_publish(slot, *POS)).
 */
struct pytm_ring_slot *pytm_rec_begin(struct pytm_ring_hdr *h, uint8_t *slots,
				      const struct pytm_offsets *off, uint32_t max_frames,
				      uint32_t max_total, uint64_t tstate,
				      const struct pytm_rec_event *ev, uint64_t *pos);

#endif /* __PYTM_RECORDER_H */
