// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "control.h"
#include "session.h"
#include "snapshot.h"
#include "tracee.h"

/* One command; the reply is one line on stdout. */
static void command(struct control *c, char *line, bool *stop)
{
	char *cmd = strtok(line, " \t"), *arg = strtok(NULL, ""), *arg2 = NULL, *sp;
	struct tracee *tr = c->tr;
	int err, layout = c->pickle ?: tr->pickle;
	struct pytm_proc p;
	struct snapshot *s;

	/* "snapshot PATH [X.Y]": PATH may hold spaces; a trailing version is not part of it. */
	sp = arg ? strrchr(arg, ' ') : NULL;
	if (sp && !strncmp(sp + 1, "3.", 2)) {
		*sp = '\0';
		arg2 = sp + 1;
	}
	if (!cmd) {
		return;
	} else if (!strcmp(cmd, "snapshot") && arg) {
		if (arg2)
			layout = !strcmp(arg2, "3.8") ? PYTM_PICKLE_38 : PYTM_PICKLE_39;
		s = session__snapshot(c->s, tr, c->frames);
		err = s ? snapshot__write(s, arg, layout) : -errno;
		if (err)
			printf("error cannot write %s: %s\n", arg, strerror(-err));
		else
			printf("ok %zu\n", snapshot__count(s));
		snapshot__free(s);
	} else if (!strcmp(cmd, "traced")) {
		err = tracee__stats(tr, c->s->skel, &p);
		if (err)
			printf("error %s\n", strerror(-err));
		else
			printf("ok %lld %lld\n", (long long)p.current, (long long)p.peak);
	} else if (!strcmp(cmd, "reset-peak")) {
		err = tracee__reset_peak(tr, c->s->skel);
		printf(err ? "error %s\n" : "ok\n", strerror(-err));
	} else if (!strcmp(cmd, "clear")) {
		err = tracee__clear(tr, c->s->skel);
		printf(err ? "error %s\n" : "ok\n", strerror(-err));
	} else if (!strcmp(cmd, "limit")) {
		printf("ok %d\n", c->frames);
	} else if (!strcmp(cmd, "stop")) {
		*stop = true;
		printf("ok\n");
	} else {
		printf("error unknown command: %s\n", cmd);
	}
	fflush(stdout);
}

void control__poll(struct control *c, bool *stop)
{
	struct pollfd pfd = { .fd = 0, .events = POLLIN };
	char *nl;
	ssize_t n;

	if (poll(&pfd, 1, 0) <= 0)
		return;
	n = read(0, c->buf + c->used, sizeof(c->buf) - 1 - c->used);
	if (n <= 0) {
		*stop = true;
		return;
	}
	c->used += n;
	c->buf[c->used] = '\0';
	while ((nl = strchr(c->buf, '\n'))) {
		*nl = '\0';
		command(c, c->buf, stop);
		c->used -= nl + 1 - c->buf;
		memmove(c->buf, nl + 1, c->used + 1);
	}
	if (c->used == sizeof(c->buf) - 1)
		c->used = 0;	/* an overlong line: drop it */
}
