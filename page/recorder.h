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

#endif /* __PYTM_RECORDER_H */
