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
#include "snapshot.h"

enum {
	OPT_COMPARE = 0x100,
	OPT_KEY,
	OPT_CUMULATIVE,
	OPT_TOP,
	OPT_INCLUDE,
	OPT_EXCLUDE,
	OPT_ALL_FRAMES,
	OPT_DOMAIN,
	OPT_EXCLUDE_DOMAIN,
};

struct spec {
	const char *pattern;		/* NULL: a domain filter */
	bool inclusive;
	unsigned int domain;
};

struct cmd {
	const char *file, *old;
	struct report_opts opts;
	bool all_frames;
	struct spec *specs;
	size_t nspecs;
	struct report_filter *filters;
};

static const struct argp_option options[] = {
	{ "compare", OPT_COMPARE, "OLD", 0,
	  "Show differences from the older snapshot OLD (compare_to)", 0 },
	{ "key", OPT_KEY, "KEY", 0,
	  "Group by lineno (default), filename or traceback", 0 },
	{ "cumulative", OPT_CUMULATIVE, NULL, 0,
	  "Count every frame of a traceback, not only the most recent one "
	  "(lineno and filename keys)", 0 },
	{ "top", OPT_TOP, "N", 0, "Print the first N lines (default 10, "
	  "0 for all)", 0 },
	{ "include", OPT_INCLUDE, "PATTERN[:LINENO]", 0,
	  "Keep only traces whose file matches (fnmatch; repeatable)", 0 },
	{ "exclude", OPT_EXCLUDE, "PATTERN[:LINENO]", 0,
	  "Drop traces whose file matches (repeatable)", 0 },
	{ "all-frames", OPT_ALL_FRAMES, NULL, 0,
	  "--include/--exclude look at every frame, not the most recent", 0 },
	{ "domain", OPT_DOMAIN, "N", 0,
	  "Keep only traces of address space N (repeatable)", 0 },
	{ "exclude-domain", OPT_EXCLUDE_DOMAIN, "N", 0,
	  "Drop traces of address space N (repeatable)", 0 },
	{},
};

static const char doc[] =
"Print tracemalloc's statistics of a snapshot file, as Python prints them.\v"
"FILE is a tracemalloc.Snapshot pickle (Snapshot.dump() of Python 3.8-3.13, "
"or pytm-bpf -o). Only that format is read; anything else is refused.";

static int add_spec(struct cmd *c, const char *pattern, bool inclusive,
		    unsigned int domain)
{
	struct spec *s = realloc(c->specs, (c->nspecs + 1) * sizeof(*s));

	if (!s)
		return -ENOMEM;
	c->specs = s;
	s[c->nspecs].pattern = pattern;
	s[c->nspecs].inclusive = inclusive;
	s[c->nspecs].domain = domain;
	c->nspecs++;
	return 0;
}

/* A whole decimal number in [min, max], or -1. */
static int parse_num(const char *s, long long min, long long max,
		     long long *out)
{
	char *end;
	long long v;

	if (!s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Filters are built at the end: --all-frames may come after them. */
static error_t build_filters(struct cmd *c, struct argp_state *state)
{
	char err[256];
	size_t i;

	if (!c->nspecs)
		return 0;
	c->filters = calloc(c->nspecs, sizeof(*c->filters));
	if (!c->filters)
		argp_failure(state, 1, ENOMEM, "filters");
	for (i = 0; i < c->nspecs; i++) {
		const struct spec *s = &c->specs[i];

		if (!s->pattern) {
			report__domain_filter(&c->filters[i], s->inclusive,
					      s->domain);
			continue;
		}
		if (report__parse_filter(&c->filters[i], s->pattern,
					 s->inclusive, c->all_frames,
					 err, sizeof(err)))
			argp_error(state, "%s", err);
	}
	c->opts.filters = c->filters;
	c->opts.nfilters = c->nspecs;
	return 0;
}

static error_t parse_opt(int key, char *arg, struct argp_state *state)
{
	struct cmd *c = state->input;
	long long v = 0;
	int k;

	switch (key) {
	case OPT_COMPARE:
		c->old = arg;
		break;
	case OPT_KEY:
		k = report__parse_key(arg);
		if (k < 0)
			argp_error(state, "unknown key '%s' (lineno, filename "
				   "or traceback)", arg);
		c->opts.key = k;
		break;
	case OPT_CUMULATIVE:
		c->opts.cumulative = true;
		break;
	case OPT_TOP:
		if (parse_num(arg, 0, INT_MAX, &v))
			argp_error(state, "invalid --top '%s'", arg);
		c->opts.top = v;
		break;
	case OPT_INCLUDE:
	case OPT_EXCLUDE:
		if (add_spec(c, arg, key == OPT_INCLUDE, 0))
			argp_failure(state, 1, ENOMEM, "filters");
		break;
	case OPT_ALL_FRAMES:
		c->all_frames = true;
		break;
	case OPT_DOMAIN:
	case OPT_EXCLUDE_DOMAIN:
		if (parse_num(arg, 0, UINT_MAX, &v))
			argp_error(state, "invalid domain '%s'", arg);
		if (add_spec(c, NULL, key == OPT_DOMAIN, v))
			argp_failure(state, 1, ENOMEM, "filters");
		break;
	case ARGP_KEY_ARG:
		if (c->file)
			argp_error(state, "too many arguments");
		c->file = arg;
		break;
	case ARGP_KEY_END:
		if (!c->file)
			argp_error(state, "missing FILE");
		if (c->opts.cumulative && c->opts.key == REPORT_KEY_TRACEBACK)
			argp_error(state, "--cumulative cannot be used with "
				   "--key traceback");
		return build_filters(c, state);
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

static struct snapshot *load(const char *path)
{
	struct snapshot *s = NULL;
	char err[256];

	if (snapshot__load(path, &s, err, sizeof(err))) {
		fprintf(stderr, "pytm-bpf report: %s: %s\n", path, err);
		return NULL;
	}
	return s;
}

int report__main(int argc, char **argv)
{
	static const struct argp argp = {
		.options = options,
		.parser = parse_opt,
		.args_doc = "FILE",
		.doc = doc,
	};
	struct snapshot *snap = NULL, *old = NULL;
	struct cmd c = {};
	char **args = NULL;
	error_t saved_status = argp_err_exit_status;
	int ret = 1, err, i;

	c.opts.key = REPORT_KEY_LINENO;
	c.opts.top = 10;
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
	c.opts.escape = isatty(STDOUT_FILENO);

	snap = load(c.file);
	if (!snap)
		goto cleanup;
	if (c.old) {
		old = load(c.old);
		if (!old)
			goto cleanup;
		err = report__print_diff(stdout, snap, old, &c.opts);
	} else {
		err = report__print_top(stdout, snap, &c.opts);
	}
	if (!err && fflush(stdout))
		err = -errno;
	if (err) {
		fprintf(stderr, "pytm-bpf report: %s\n", strerror(-err));
		goto cleanup;
	}
	ret = 0;

cleanup:
	snapshot__free(snap);
	snapshot__free(old);
	free(c.filters);
	free(c.specs);
	free(args);
	return ret;
}
