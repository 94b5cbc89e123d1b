// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "control.h"
#include "rec_drain.h"
#include "session.h"
#include "snapshot.h"
#include "tracee.h"

void control__parse(char *line, struct control_cmd *out)
{
	static const struct { const char *name; enum control_kind kind; } words[] = {
		{ "snapshot", CONTROL_SNAPSHOT }, { "traced", CONTROL_TRACED },
		{ "reset-peak", CONTROL_RESET_PEAK }, { "clear", CONTROL_CLEAR },
		{ "limit", CONTROL_LIMIT }, { "stop", CONTROL_STOP },
	};
	char *save = NULL, *cmd = strtok_r(line, " \t", &save), *arg = strtok_r(NULL, "", &save);
	char *sp;
	size_t i;

	memset(out, 0, sizeof(*out));
	if (!cmd)
		return;
	out->kind = CONTROL_UNKNOWN;
	out->word = cmd;
	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (!strcmp(cmd, words[i].name))
			out->kind = words[i].kind;
	if (out->kind != CONTROL_SNAPSHOT)
		return;
	if (!arg) {
		out->kind = CONTROL_UNKNOWN;	/* "snapshot" needs a path */
		return;
	}
	/* "snapshot PATH [X.Y]": PATH may hold spaces; a trailing version is not part of it. */
	sp = strrchr(arg, ' ');
	if (sp && !strncmp(sp + 1, "3.", 2)) {
		*sp = '\0';
		out->layout = !strcmp(sp + 1, "3.8") ? PYTM_PICKLE_38 : PYTM_PICKLE_39;
	}
	out->path = arg;
}

/* One command; the reply is one line on stdout. */
static void command(struct control *c, char *line, bool *stop)
{
	struct tracee *tr = c->tr;
	struct control_cmd cmd;
	struct pytm_proc p;
	struct snapshot *s;
	int err, layout;

	control__parse(line, &cmd);
	layout = cmd.layout ?: c->pickle ?: tr->pickle;
	switch (cmd.kind) {
	case CONTROL_NONE:
		return;
	case CONTROL_SNAPSHOT:
		s = session__snapshot(c->s, tr, c->frames);
		err = s ? snapshot__write(s, cmd.path, layout) : -errno;
		if (err)
			printf("error cannot write %s: %s\n", cmd.path, strerror(-err));
		else
			printf("ok %zu\n", snapshot__count(s));
		snapshot__free(s);
		break;
	case CONTROL_TRACED:
		/* As get_traced_memory(): every event before the question counted. */
		recorder__sync(tr->rec);
		err = tracee__stats(tr, c->s->skel, &p);
		if (err)
			printf("error %s\n", strerror(-err));
		else
			printf("ok %lld %lld\n", (long long)p.current, (long long)p.peak);
		break;
	case CONTROL_RESET_PEAK:
		err = tracee__reset_peak(tr, c->s->skel);
		printf(err ? "error %s\n" : "ok\n", strerror(-err));
		break;
	case CONTROL_CLEAR:
		err = tracee__clear(tr, c->s->skel);
		printf(err ? "error %s\n" : "ok\n", strerror(-err));
		break;
	case CONTROL_LIMIT:
		printf("ok %d\n", c->frames);
		break;
	case CONTROL_STOP:
		*stop = true;
		printf("ok\n");
		break;
	case CONTROL_UNKNOWN:
		printf("error unknown command: %s\n", cmd.word);
		break;
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
