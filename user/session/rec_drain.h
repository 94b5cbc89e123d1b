/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The tracer's side of the in-target recorder (issue #12): a thread that
 * drains one process's ring (page/ring.h) into a table of live blocks kept
 * here, with no fixed cap, merged in order with the frees that went BPF's
 * way when the ring was full (tombstones, see page/sampler.c). Snapshots
 * read the table (user/resolution/collect.c) next to the BPF map, which
 * holds the blocks BPF recorded (no thread state, or the ring full).
 */
#ifndef __PYTM_REC_DRAIN_H
#define __PYTM_REC_DRAIN_H

#include <stdint.h>
#include <sys/types.h>
#include "pytm.h"

struct resolver;
struct recorder;

struct recorder_opts {
	pid_t pid;
	void *ring;			/* our mapping of the ring (page/ring.h) */
	struct resolver *r;		/* reads the code objects the ring shows
					 * (NULL: ids only, for tests) */
	uint32_t *next_code_id;		/* BPF's id counter (shared: ids are one space) */
	/*
	 * BPF's ring buffer of the code objects the page flags (struct
	 * pytm_code_event), this process's own; the recorder reads it and
	 * closes it. -1: none (they come through recorder__code).
	 */
	int codes_fd;
	int procs_fd;			/* BPF's per-process counters (the freeze) */
	/*
	 * Asked now and then from the drain thread until it returns 0 (done)
	 * or an error but -EAGAIN (given up): the page's thread-state offset,
	 * when it was not found at attach. NULL: nothing to ask.
	 */
	int (*retry)(void *arg);
	void *retry_arg;
	/*
	 * --peak: a new mark when traced memory (the recorder's and BPF's)
	 * exceeds the last one by more than PEAK_STEP millionths (0: none);
	 * PEAK_MARK is told its CLOCK_MONOTONIC time (the drain's) so that
	 * BPF keeps its own blocks live then (pytm_proc.peak_ns).
	 */
	uint32_t peak_step;
	void (*peak_mark)(void *arg, uint64_t ns);
	void *peak_arg;
};

/* One live block, as recorder__each shows it. */
struct recorder_block {
	uint64_t addr;
	uint64_t size;
	uint64_t born;			/* CLOCK_MONOTONIC ns when drained */
	uint64_t clock;			/* its event's number */
	uint32_t stack;			/* index + 1 in the stacks; 0: none */
	uint32_t flags;			/* PYTM_DOMAIN_LATE / _GONE, as BPF's keys */
};

/* What the recorder counted. */
struct recorder_stats {
	int64_t current, peak;		/* its blocks' bytes (peak: with BPF's) */
	int64_t mark;			/* --peak: traced bytes at the last mark */
	uint64_t events;		/* drained */
	uint64_t codes;			/* code objects read */
	uint64_t codes_early;		/* of those, from BPF's copy (the code site) */
	uint64_t codes_spilled;		/* copies that came the event thread's way */
	uint64_t tombs;			/* frees that went BPF's way */
	uint64_t full;			/* events the ring had no room for */
	uint64_t blocks;		/* live now */
	uint64_t lost;			/* allocations not kept: no memory */
	double cpu;			/* the drain thread's CPU seconds */
};

int recorder__start(struct recorder **out, const struct recorder_opts *o);
/* No more retries (the page is going away). Safe on NULL. */
void recorder__quiesce(struct recorder *rec);
/* Stop (what is left is drained by recorder__sync). Safe on NULL. */
void recorder__stop(struct recorder *rec);
/*
 * The page flagged code object ADDR in the event numbered CLOCK, and BPF
 * sent it the event thread's way (PYTM_EV_REC_CODE: the process's own ring
 * buffer, o.codes_fd, was full): read it now, from MEM (what BPF copied of
 * it then, while its frame ran) and the rest from the target.
 */
struct resolver_mem;
void recorder__code(struct recorder *rec, uint64_t addr, uint64_t clock,
		    const struct resolver_mem *mem, size_t nmem);
/* A free that went BPF's way (the event thread). */
void recorder__tomb(struct recorder *rec, uint64_t addr, uint64_t clock);
/* Everything drained that was published before this call. */
void recorder__sync(struct recorder *rec);
/*
 * FN for each block live when the ring's head was FORK_CLOCK (a forked
 * child's inherited set; UINT64_MAX: now), with its stack (NULL: none),
 * after draining up to there. -ERANGE if blocks freed since may be
 * missing (forgotten before the copy); FN's non-zero return stops it.
 */
int recorder__inherit(struct recorder *rec, uint64_t fork_clock,
		      int (*fn)(void *arg, const struct recorder_block *b,
				const struct pytm_stack *st),
		      void *arg);
/*
 * Locks. A snapshot holds the recorder's lock while it reads the table
 * and the resolver (the drain adds code objects to the resolver under
 * it); whoever else adds to the resolver (the event thread) holds the
 * resolver lock, which the drain takes too, innermost.
 */
void recorder__lock(struct recorder *rec);
void recorder__unlock(struct recorder *rec);
void recorder__lock_resolver(struct recorder *rec);	/* safe on NULL */
void recorder__unlock_resolver(struct recorder *rec);
/*
 * FN for each block a snapshot shows, with its stack (NULL: none), the
 * recorder's lock held (recorder__lock). Stops at FN's first non-zero
 * return, returned.
 */
int recorder__each(struct recorder *rec,
		   int (*fn)(void *arg, const struct recorder_block *b,
			     const struct pytm_stack *st, uint32_t stack),
		   void *arg);
/*
 * --peak, the recorder's lock held: the last peak mark's time
 * (CLOCK_MONOTONIC ns; 0: none yet), and as recorder__each the blocks
 * live then (those born by it still live, and those freed since).
 */
uint64_t recorder__peak_mark(struct recorder *rec);
int recorder__peak_each(struct recorder *rec,
			int (*fn)(void *arg, const struct recorder_block *b,
				  const struct pytm_stack *st, uint32_t stack),
			void *arg);
void recorder__stats(struct recorder *rec, int64_t bpf_current, struct recorder_stats *out);
/* tracemalloc.clear_traces() and reset_peak() for the recorder's part. */
void recorder__clear(struct recorder *rec);
void recorder__reset_peak(struct recorder *rec, int64_t bpf_current);

#endif /* __PYTM_REC_DRAIN_H */
