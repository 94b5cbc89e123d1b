/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Flame graphs of a snapshot's live bytes by traceback: folded stacks (one
 * line per traceback, frames oldest first, for flamegraph.pl, inferno and
 * speedscope), and one self-contained HTML page (an icicle graph: no
 * network, click to zoom, a search box that highlights matches).
 */
#ifndef __PYTM_FLAME_H
#define __PYTM_FLAME_H

#include <stdio.h>

struct snapshot;
struct report_opts;

/*
 * "frame;frame;... BYTES" per traceback of S that O's filters keep, frames
 * "function (file:line)" (or "file:line" when the function is unknown), a
 * ROOT frame first if not NULL. 0 or a negative errno.
 */
int flame__write_folded(FILE *out, const struct snapshot *s, const struct report_opts *o,
			const char *root);
/*
 * A static SVG picture of the same icicle graph (1200 px wide, a tooltip per
 * frame; no script): for documents and issue trackers.
 */
int flame__write_svg(FILE *out, const struct snapshot *s, const struct report_opts *o,
		     const char *title);
/* The HTML page of S (O's filters applied), headed TITLE. 0 or a negative errno. */
int flame__write_html(FILE *out, const struct snapshot *s, const struct report_opts *o,
		      const char *title);

#endif /* __PYTM_FLAME_H */
