/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * A snapshot in tracemalloc's model: traces (domain, size, traceback), the
 * traceback limit, interned filenames and tracebacks. Built from BPF maps,
 * read from / written to tracemalloc's pickle format (Snapshot.dump/load).
 */
#ifndef __PYTM_SNAPSHOT_H
#define __PYTM_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct pytm_frame_info {
	const char *filename;		/* interned in the snapshot */
	unsigned int lineno;
	/*
	 * Not in tracemalloc's model (reports, filters and pickles ignore
	 * them), for profiles that name functions (pprof): the code object's
	 * qualified name (3.11+, else its name) and first line. NULL and 0
	 * when unknown (frames loaded from a pickle).
	 */
	unsigned int firstlineno;
	const char *name;		/* interned in the snapshot, or NULL */
};

struct pytm_traceback {
	unsigned int nframe;		/* >= 1: ("<unknown>", 0) stands for none */
	unsigned int total_nframe;
	struct pytm_frame_info *frames;	/* most recent call first (as in traces) */
};

struct pytm_trace {
	unsigned int domain;
	uint64_t size;			/* sampled: the bytes the sample stands for */
	uint64_t count;			/* blocks it stands for: 1, or when
					 * sampled an unbiased integer estimate */
	const struct pytm_traceback *tb; /* interned in the snapshot */
	/*
	 * Not in tracemalloc's model: when the block was allocated
	 * (CLOCK_MONOTONIC ns, as bpf_ktime_get_ns), for leak ages; 0 unknown
	 * (a pickle, an estimate of many blocks).
	 */
	uint64_t born;
};

/* Pickle layouts: what Snapshot.load() of a Python version accepts. */
enum pytm_pickle_layout {
	PYTM_PICKLE_38 = 38,		/* (domain, size, frames) */
	PYTM_PICKLE_39 = 39,		/* (domain, size, frames, total_nframe), 3.9+ */
};

struct snapshot;

struct snapshot *snapshot__new(int traceback_limit);
void snapshot__free(struct snapshot *s);	/* safe on NULL */
/* Interned copy of a string (NUL-terminated), owned by the snapshot. */
const char *snapshot__intern(struct snapshot *s, const char *str);
/* Interned traceback; frames are copied; filenames must come from __intern. */
const struct pytm_traceback *snapshot__traceback(struct snapshot *s,
		const struct pytm_frame_info *frames, unsigned int nframe,
		unsigned int total_nframe);
int snapshot__add(struct snapshot *s, unsigned int domain, uint64_t size,
		  const struct pytm_traceback *tb);
/*
 * A trace that stands for COUNT blocks of SIZE bytes in all (sampled
 * mode). Reports count COUNT; the pickle has one trace of SIZE bytes,
 * since tracemalloc's format has no counts.
 */
int snapshot__add_estimate(struct snapshot *s, unsigned int domain, uint64_t size,
			   uint64_t count, const struct pytm_traceback *tb);
/* The same, with the block's allocation time (pytm_trace.born). */
int snapshot__add_block(struct snapshot *s, unsigned int domain, uint64_t size,
			uint64_t count, uint64_t born, const struct pytm_traceback *tb);
int snapshot__traceback_limit(const struct snapshot *s);
size_t snapshot__count(const struct snapshot *s);
/* The sum of its traces' sizes. */
uint64_t snapshot__total_size(const struct snapshot *s);
const struct pytm_trace *snapshot__traces(const struct snapshot *s);
/* Write as tracemalloc's pickle to PATH (temporary file + rename). */
int snapshot__write(const struct snapshot *s, const char *path,
		    enum pytm_pickle_layout layout);
/* The same pickle on F (flushed, not closed): a pipe, a memory stream. */
int snapshot__write_stream(const struct snapshot *s, FILE *f,
			   enum pytm_pickle_layout layout);
/*
 * Read a pickle written by tracemalloc.Snapshot.dump (3.8-3.13) or by us.
 * Only the opcode subset they use; anything else is refused with a one-line
 * reason (error__last()). Never executes anything.
 */
int snapshot__load(const char *path, struct snapshot **out);
/* The same from LEN bytes at BUF (a pickle read elsewhere; the fuzzer's input). */
int snapshot__load_mem(const uint8_t *buf, size_t len, struct snapshot **out);

#endif /* __PYTM_SNAPSHOT_H */
