/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Statistics followed over time: each report's statistics (per line, file
 * or traceback, and process) become one point of a series per key, kept
 * for the last WINDOW intervals. The top view reads growth from them,
 * --leaks ranks their sustained growth.
 *
 *   series__new → [series__begin, series__add (per process)..., series__end]
 *   each round → series__line / series__leaks → series__free
 */
#ifndef __PYTM_SERIES_H
#define __PYTM_SERIES_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include "report.h"
#include "snapshot.h"

/* Intervals a series keeps by default, and at most. */
#define SERIES_WINDOW		10
#define SERIES_WINDOW_MAX	1000

struct series;

/*
 * A leak: it grew in most of the intervals, its Theil-Sen slope is above
 * 0, and Mann-Kendall's test says the trend is no chance (z >= 3: about
 * 1 in 700 for a size that only wanders). That takes 6 intervals of steady
 * growth at least; a step (a burst that stays) is never one.
 */
#define SERIES_LEAK_Z		3.0
#define SERIES_LEAK_MIN		6	/* intervals before anything can rank */

struct series_line {
	pid_t pid;
	/* Its key, most recent frame first (owned by the series). */
	const struct pytm_frame_info *frames;
	unsigned int nframe;
	uint64_t size, count;		/* now (0 when it has no live block) */
	int64_t grow_last;		/* since the round before */
	int64_t grow_first;		/* since the series began */
	uint64_t born;			/* its oldest live block's time (ns); 0 unknown */
	/* Its growth over the window (series__leaks fills them). */
	unsigned int intervals;		/* intervals it spans (points - 1) */
	unsigned int grew;		/* of which it grew in */
	double slope;			/* Theil-Sen slope, bytes per minute */
	double trend;			/* Kendall's tau of size over time, -1..1 */
	double z;			/* Mann-Kendall's test of that trend: S / sd(S) */
	int64_t growth;			/* size now less at the window's start */
	bool leak;			/* sustained growth (SERIES_LEAK_Z) */
};

/* A series of WINDOW intervals (3 to SERIES_WINDOW_MAX). NULL: no memory. */
struct series *series__new(unsigned int window);
void series__free(struct series *se);	/* safe on NULL */
/* A new round at NOW (CLOCK_MONOTONIC seconds): each line's point is 0 until added. */
void series__begin(struct series *se, double now);
/*
 * The statistics of SNAP under O (key, cumulative, filters) as PID's
 * points of this round. 0, -ENOMEM or report__stats' error.
 */
int series__add(struct series *se, const struct snapshot *snap,
		const struct report_opts *o, pid_t pid);
/* The round is over: lines with no point above 0 in the window go. */
void series__end(struct series *se);
/* Rounds so far, and the intervals a series keeps. */
unsigned int series__rounds(const struct series *se);
unsigned int series__window(const struct series *se);
/* Lines now (stable until the next series__begin). */
size_t series__count(const struct series *se);
/* Line I, its leak figures filled in. */
const struct series_line *series__line(struct series *se, size_t i);
/*
 * PID's lines of sustained growth (any process: PID 0), by slope, the
 * steepest first: up to MAX pointers in OUT. How many there are in all.
 */
size_t series__leaks(struct series *se, pid_t pid, const struct series_line **out,
		     size_t max);

#endif /* __PYTM_SERIES_H */
