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

/* Run every complete line stdin has now; EOF or "stop" sets *STOP. */
void control__poll(struct control *c, bool *stop);

#endif /* __PYTM_CONTROL_H */
