// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The report options shared by the live CLI and `pytm-bpf report`, as an
 * argp child parser: --key, --cumulative, --top and tracemalloc's filters
 * (--include/--exclude PATTERN[:LINENO], --all-frames, --domain,
 * --exclude-domain) and --format. The parent sets state->child_inputs[i] to a struct
 * report_cli.
 */
#include <argp.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "report.h"
#include "util.h"

enum {
	OPT_KEY = 0x200,
	OPT_CUMULATIVE,
	OPT_TOP,
	OPT_INCLUDE,
	OPT_EXCLUDE,
	OPT_ALL_FRAMES,
	OPT_DOMAIN,
	OPT_EXCLUDE_DOMAIN,
	OPT_FORMAT,
};

static const struct argp_option options[] = {
	{ "key", OPT_KEY, "KEY", 0,
	  "Group by lineno (default), filename or traceback", 0 },
	{ "cumulative", OPT_CUMULATIVE, NULL, 0,
	  "Count every frame of a traceback, not only the most recent", 0 },
	{ "top", OPT_TOP, "N", 0, "Print the first N lines (default 10, 0: all)", 0 },
	{ "include", OPT_INCLUDE, "PATTERN[:LINENO]", 0,
	  "Keep traces whose file matches (fnmatch; repeatable)", 0 },
	{ "exclude", OPT_EXCLUDE, "PATTERN[:LINENO]", 0,
	  "Drop traces whose file matches (repeatable)", 0 },
	{ "all-frames", OPT_ALL_FRAMES, NULL, 0,
	  "Match --include/--exclude against every frame, not the most recent", 0 },
	{ "domain", OPT_DOMAIN, "N", 0, "Keep traces of this domain (DomainFilter)", 0 },
	{ "exclude-domain", OPT_EXCLUDE_DOMAIN, "N", 0, "Drop traces of this domain", 0 },
	{ "format", OPT_FORMAT, "FORMAT", 0,
	  "text (default: tracemalloc's output), json (one JSON document per "
	  "report, per line), folded (stacks and bytes, for flamegraph.pl) or "
	  "flamegraph (a self-contained HTML page) or svg (the same, a static picture)", 0 },
	{},
};

static int add_spec(struct report_cli *c, const char *pattern, bool inclusive,
		    unsigned int domain)
{
	struct report_spec *s = realloc(c->specs, (c->nspecs + 1) * sizeof(*s));

	if (!s)
		return -ENOMEM;
	c->specs = s;
	s[c->nspecs].pattern = pattern;
	s[c->nspecs].inclusive = inclusive;
	s[c->nspecs].domain = domain;
	c->nspecs++;
	return 0;
}

/* Filters are built at the end: --all-frames may come after them. */
static void build_filters(struct report_cli *c, struct argp_state *state)
{
	size_t i;

	if (!c->nspecs)
		return;
	c->filters = calloc(c->nspecs, sizeof(*c->filters));
	if (!c->filters)
		argp_failure(state, 1, ENOMEM, "filters");
	for (i = 0; i < c->nspecs; i++) {
		const struct report_spec *s = &c->specs[i];

		if (!s->pattern) {
			report__domain_filter(&c->filters[i], s->inclusive, s->domain);
			continue;
		}
		if (report__parse_filter(&c->filters[i], s->pattern, s->inclusive,
					 c->all_frames))
			argp_error(state, "%s", error__last());
	}
	c->opts.filters = c->filters;
	c->opts.nfilters = c->nspecs;
}

static error_t parse_opt(int key, char *arg, struct argp_state *state)
{
	struct report_cli *c = state->input;
	long long v = 0;
	int k;

	switch (key) {
	case ARGP_KEY_INIT:
		c->opts.key = REPORT_KEY_LINENO;
		c->opts.top = 10;
		break;
	case OPT_KEY:
		k = report__parse_key(arg);
		if (k < 0)
			argp_error(state, "unknown key '%s' (lineno, filename or traceback)", arg);
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
	case OPT_FORMAT:
		if (!strcmp(arg, "text"))
			c->format = REPORT_FORMAT_TEXT;
		else if (!strcmp(arg, "json"))
			c->format = REPORT_FORMAT_JSON;
		else if (!strcmp(arg, "folded"))
			c->format = REPORT_FORMAT_FOLDED;
		else if (!strcmp(arg, "flamegraph"))
			c->format = REPORT_FORMAT_FLAMEGRAPH;
		else if (!strcmp(arg, "svg"))
			c->format = REPORT_FORMAT_SVG;
		else
			argp_error(state, "unknown format '%s' (text, json, folded, flamegraph or svg)",
				   arg);
		break;
	case OPT_DOMAIN:
	case OPT_EXCLUDE_DOMAIN:
		if (parse_num(arg, 0, UINT_MAX, &v))
			argp_error(state, "invalid domain '%s'", arg);
		if (add_spec(c, NULL, key == OPT_DOMAIN, v))
			argp_failure(state, 1, ENOMEM, "filters");
		break;
	case ARGP_KEY_END:
		if (c->opts.cumulative && c->opts.key == REPORT_KEY_TRACEBACK)
			argp_error(state, "--cumulative cannot be used with --key traceback");
		build_filters(c, state);
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

const struct argp report__cli_argp = {
	.options = options,
	.parser = parse_opt,
};

void report__cli_free(struct report_cli *c)
{
	free(c->filters);
	free(c->specs);
	c->filters = NULL;
	c->specs = NULL;
	c->nspecs = 0;
}
