/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * -o: where snapshots go as files. A file (tracemalloc's pickle, a pprof
 * profile, a flame graph page or folded stacks, chosen by its name or
 * --output-format), or a directory (-o DIR/):
 * one file per process and report, named by pid and time, the oldest
 * removed beyond --keep.
 */
#ifndef __PYTM_OUTPUT_H
#define __PYTM_OUTPUT_H

#include <stdbool.h>

struct session;
struct snapshot;
struct tracee;

enum output_format {
	OUTPUT_AUTO,			/* by the name: .pb.gz, .pprof -> pprof */
	OUTPUT_PICKLE,
	OUTPUT_PPROF,
	OUTPUT_FLAMEGRAPH,		/* .html: the flame graph page (flame.h) */
	OUTPUT_FOLDED,			/* .folded: folded stacks, bytes */
	OUTPUT_SVG,			/* .svg: the flame graph as a static picture */
};

struct output {
	const char *path;		/* NULL: no file */
	bool dir;			/* a directory: one file per report */
	enum output_format format;
	int keep;			/* directory: files kept per process; 0 all */
	int pickle;			/* pickle layout; 0: the target's */
	int frames;
};

/* Parse "pickle", "pprof", "flamegraph", "folded" or "svg"; -1 if none. */
int output__parse_format(const char *s);
/* Fill in dir from path (a trailing '/', or an existing directory) and the format. */
int output__init(struct output *o);
/* -o DIR/: make it if missing, check it can be written. Negative errno; why in error__last(). */
int output__prepare(const struct output *o);
/*
 * Write SNAP (TR's, just taken) where O says; FINAL: the run's last report
 * (a file is written only then; a directory gets every report). 0 or a
 * negative errno, with a warning shown.
 */
int output__write(const struct output *o, struct session *s, struct tracee *tr,
		  const struct snapshot *snap, bool final);

/*
 * --peak: SNAP, TR's set at its peak, next to its file: FILE with ".peak"
 * before the extension (heap.peak.pytm), or DIR/peak-PID.pytm.
 */
int output__write_peak(const struct output *o, struct session *s, struct tracee *tr,
		       const struct snapshot *snap);

#endif /* __PYTM_OUTPUT_H */
