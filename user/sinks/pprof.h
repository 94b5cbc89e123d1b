/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Snapshots as a heap profile in pprof's format (perftools.profiles.Profile,
 * gzipped), what `go tool pprof`, Pyroscope, Parca and friends read.
 *
 * Sample types, in Go's order: alloc_objects, alloc_space (only when some
 * process has allocs: sampled mode), inuse_objects, inuse_space (the
 * default). One sample per distinct (traceback, domain, process), with
 * labels "pid" (num), "container" (str, when known), "domain" (num, when
 * not 0: Python's heap). A frame is a location with one line of a
 * function (name, filename, first line); the one mapping ("python") says
 * that everything is symbolized already.
 */
#ifndef __PYTM_PPROF_H
#define __PYTM_PPROF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct snapshot;

struct pprof_proc {			/* one process in a profile */
	const struct snapshot *live;	/* its live blocks (inuse_*), or NULL: none */
	const struct snapshot *allocs;	/* sampled mode: every allocation since attach
					 * (trace count = estimated objects, size =
					 * estimated bytes), or NULL (exact mode) */
	int pid;
	int ppid;			/* a forked child followed: its parent; 0: none */
	const char *container;		/* container id, "" or NULL: none */
};

struct pprof_opts {
	uint64_t period;		/* sampling rate in bytes; 0 = exact */
	int64_t time_nanos;		/* when the snapshots were taken (CLOCK_REALTIME) */
	int64_t duration_nanos;		/* since attach; 0 unknown */
	/*
	 * Label each sample with its pid even when the profile holds one
	 * process (several always are: their samples must stay apart).
	 */
	bool pid_label;
	/*
	 * Default sample type alloc_space rather than inuse_space, as Go's
	 * /debug/pprof/allocs (when some process has allocs; else inuse).
	 */
	bool alloc_default;
};

struct pprof_buf {
	uint8_t *data;
	size_t len, cap;
};

/*
 * Encode N processes into one gzipped profile in OUT (malloc'd;
 * pprof_buf__free). The snapshots are only read. 0 or -errno.
 */
int pprof__encode(const struct pprof_proc *procs, int n,
		  const struct pprof_opts *o, struct pprof_buf *out);
void pprof_buf__free(struct pprof_buf *b);	/* safe on NULL and on a zeroed buffer */
/*
 * Write the gzipped profile to PATH (temporary file in the same directory
 * + rename, so that readers never see half a profile). 0 or -errno, with
 * the reason in error__last().
 */
int pprof__write(const char *path, const struct pprof_proc *procs, int n,
		 const struct pprof_opts *o);

#endif /* __PYTM_PPROF_H */
