/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * pytm-bpf top: a full-screen view of the traced processes (ncurses),
 * refreshed every interval: a header with the processes, mode, traced
 * memory and event rates, then the top lines (files, tracebacks) with their
 * growth. Keys sort, change the key, expand a line to its tracebacks,
 * pause, write a snapshot, quit. When stdout is no terminal it prints the
 * same table as plain text every interval.
 *
 *   top__open → [top__round with the session's front lock held]... → top__close
 */
#ifndef __PYTM_TOP_H
#define __PYTM_TOP_H

#include <stdbool.h>
#include "output.h"
#include "report.h"

struct session;

struct top_opts {
	double interval;		/* seconds between refreshes */
	int frames;			/* traceback limit of the snapshots */
	const struct report_opts *ro;	/* first key, filters; top: rows of plain text */
	const struct output *out;	/* -o: where 's' writes (none: ./pytm-PID-TIME.pytm) */
	int pickle;			/* snapshot layout; 0: the target's */
};

struct top;

/*
 * Start the view on the terminal (or plain text, stdout being no
 * terminal). While it is on the screen, stderr is kept and shown on the
 * status line, then written out by top__close. Negative errno.
 */
int top__open(struct top **out, struct session *s, const struct top_opts *o);
/* The file descriptor keys arrive on, to wait on; -1: none (plain text). */
int top__fd(const struct top *t);
/* Read the keys, refresh when due, draw. True: the user quit. */
bool top__round(struct top *t);
/* Leave the terminal as it was, then show what went to stderr. Safe on NULL. */
void top__close(struct top *t);

#endif /* __PYTM_TOP_H */
