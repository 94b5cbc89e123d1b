/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Report sinks: where a report goes, in which form. One call per report;
 * the text sink prints tracemalloc's own output, the JSON sink one JSON
 * document per report (JSON Lines; the schema is in the man page, OUTPUT).
 * A new form is one more case here, not a change to the front ends.
 */
#ifndef __PYTM_SINK_H
#define __PYTM_SINK_H

#include <stdbool.h>
#include <stdio.h>
#include "report.h"

#define SINK_JSON_SCHEMA	1	/* "schema" of every JSON document */

struct pytm_bpf;
struct snapshot;
struct tracee;

struct sink_report {
	const struct snapshot *snap;
	const struct snapshot *old;	/* differences from it; NULL: top */
	const char *old_name;		/* what OLD is: a file, or "first report" */
	const struct report_opts *o;
	/* A live process (tr set), or a snapshot file (file set). */
	const struct tracee *tr;
	struct pytm_bpf *skel;
	bool header;			/* text: "== pid ..." first (several processes) */
	bool final;			/* the last report of the run */
	bool exited;			/* the process exited: its last report */
	double peak_at;			/* --peak: SNAP is the set at the peak mark, at
					 * this wall-clock time; 0: a report of now */
	const char *file;
};

/* Print report R on OUT in FORMAT. 0 or a negative errno. */
int sink__report(FILE *out, enum report_format format, const struct sink_report *r);

/*
 * --leaks: the lines of sustained growth of one process (user/sinks/leaks.c),
 * in place of its report.
 */
struct series;
struct sink_leaks {
	struct series *se;
	const struct report_opts *o;	/* key, top */
	const struct tracee *tr;
	struct pytm_bpf *skel;
	double interval;		/* seconds between rounds */
	bool header, final, exited;	/* as in sink_report */
};
int sink__leaks(FILE *out, enum report_format format, const struct sink_leaks *r);

/* Text only: the time stamp line that begins an --interval round. */
void sink__round(FILE *out, enum report_format format);
/* Text only: the blank line between reports. */
void sink__gap(FILE *out, enum report_format format);

/* The host summary of a multi-process run, one row per process. */
struct sink_summary_row {
	const struct tracee *tr;
	long long current, peak;
};
void sink__summary(FILE *out, enum report_format format,
		   const struct sink_summary_row *rows, int n);

#endif /* __PYTM_SINK_H */
