// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * pytm-bpf report FILE: tracemalloc's report of a snapshot file, offline.
 * FILE (and --compare OLD) are pickles of tracemalloc.Snapshot, written by
 * Snapshot.dump() of Python 3.8-3.13 or by pytm-bpf -o. The output is what
 *
 *     snapshot = tracemalloc.Snapshot.load(FILE).filter_traces(filters)
 *     stats = snapshot.statistics(key, cumulative)   # or compare_to(old)
 *     print("[ Top %d ]" % N)
 *     for stat in stats[:N]: print(stat)
 *
 * prints. Exit status: 0, 1 for an unreadable or refused file, 2 for usage.
 */
#include <argp.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "report.h"
#include "sink.h"
#include "snapshot.h"
#include "util.h"

enum {
	OPT_COMPARE = 0x100,
};

struct cmd {
	const char *file, *old;
	struct report_cli cli;		/* --key, --top, filters, ... */
};

static const struct argp_option options[] = {
	{ "compare", OPT_COMPARE, "OLD", 0,
	  "Print the differences from the snapshot file OLD (compare_to)", 0 },
	{},
};

static const char doc[] =
"Print tracemalloc's statistics of a snapshot file, as Python prints them.\v"
"FILE is a tracemalloc.Snapshot pickle (Snapshot.dump() of Python 3.8-3.13, "
"or pytm-bpf -o). Only that format is read; anything else is refused.";

static error_t parse_opt(int key, char *arg, struct argp_state *state)
{
	struct cmd *c = state->input;

	switch (key) {
	case ARGP_KEY_INIT:
		state->child_inputs[0] = &c->cli;
		break;
	case OPT_COMPARE:
		c->old = arg;
		break;
	case ARGP_KEY_ARG:
		if (c->file)
			argp_error(state, "too many arguments");
		c->file = arg;
		break;
	case ARGP_KEY_END:
		if (!c->file)
			argp_error(state, "missing FILE");
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

static struct snapshot *load(const char *path)
{
	struct snapshot *s = NULL;

	if (snapshot__load(path, &s)) {
		fprintf(stderr, "pytm-bpf report: %s: %s\n", path, error__last());
		return NULL;
	}
	return s;
}

int report__main(int argc, char **argv)
{
	static const struct argp_child children[] = {
		{ &report__cli_argp, 0, NULL, 0 },
		{},
	};
	static const struct argp argp = {
		.options = options,
		.parser = parse_opt,
		.args_doc = "FILE",
		.doc = doc,
		.children = children,
	};
	struct snapshot *snap = NULL, *old = NULL;
	struct cmd c = {};
	char **args = NULL;
	error_t saved_status = argp_err_exit_status;
	int ret = 1, err, i;

	/* messages and --help say "pytm-bpf report", whatever argv[0] is */
	args = calloc(argc + 1, sizeof(*args));
	if (!args) {
		fprintf(stderr, "pytm-bpf report: %s\n", strerror(ENOMEM));
		goto cleanup;
	}
	args[0] = "pytm-bpf report";
	for (i = 1; i < argc; i++)
		args[i] = argv[i];
	argp_err_exit_status = 2;
	err = argp_parse(&argp, argc > 0 ? argc : 1, args, 0, NULL, &c);
	argp_err_exit_status = saved_status;
	if (err) {
		ret = 2;
		goto cleanup;
	}
	c.cli.opts.escape = isatty(STDOUT_FILENO);
	if (c.old && report__format_is_graph(c.cli.format)) {
		fprintf(stderr, "pytm-bpf report: --compare does not go with --format folded, "
			"flamegraph or svg\n");
		ret = 2;
		goto cleanup;
	}

	snap = load(c.file);
	if (!snap)
		goto cleanup;
	if (c.old) {
		old = load(c.old);
		if (!old)
			goto cleanup;
	}
	{
		struct sink_report r = {
			.snap = snap,
			.old = old,
			.old_name = c.old,
			.o = &c.cli.opts,
			.final = true,
			.file = c.file,
		};

		err = sink__report(stdout, c.cli.format, &r);
	}
	if (err) {
		fprintf(stderr, "pytm-bpf report: %s\n", strerror(-err));
		goto cleanup;
	}
	ret = 0;

cleanup:
	snapshot__free(snap);
	snapshot__free(old);
	report__cli_free(&c.cli);
	free(args);
	return ret;
}
