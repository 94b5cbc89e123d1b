/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * --control: commands on stdin, one reply line each on stdout (the
 * protocol the pytm_bpf Python package speaks; see the man page).
 */
#ifndef __PYTM_CONTROL_H
#define __PYTM_CONTROL_H

#include <stdbool.h>

struct session;
struct tracee;

struct control {
	struct session *s;
	struct tracee *tr;		/* the one traced process */
	int frames;			/* the traceback limit */
	int pickle;			/* snapshot layout; 0: the target's */
	char buf[8192];			/* a partial line */
	unsigned int used;
};

/* A command line, parsed (in place: LINE is cut up). */
enum control_kind {
	CONTROL_NONE,			/* an empty line */
	CONTROL_SNAPSHOT,		/* snapshot PATH [X.Y] */
	CONTROL_TRACED,
	CONTROL_RESET_PEAK,
	CONTROL_CLEAR,
	CONTROL_LIMIT,
	CONTROL_STOP,
	CONTROL_UNKNOWN,		/* WORD is what was asked */
};

struct control_cmd {
	enum control_kind kind;
	const char *word;		/* the command word (in LINE) */
	const char *path;		/* CONTROL_SNAPSHOT: the file (in LINE) */
	int layout;			/* its pickle layout; 0: the default */
};

void control__parse(char *line, struct control_cmd *out);

/* Run every complete line stdin has now; EOF or "stop" sets *STOP. */
void control__poll(struct control *c, bool *stop);

#endif /* __PYTM_CONTROL_H */
