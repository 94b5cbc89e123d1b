/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Text reports identical to tracemalloc's own str(Statistic) output. */
#ifndef __PYTM_REPORT_H
#define __PYTM_REPORT_H

#include <stdbool.h>
#include <stdio.h>
#include "snapshot.h"

enum report_key {
	REPORT_KEY_LINENO = 0,
	REPORT_KEY_FILENAME,
	REPORT_KEY_TRACEBACK,
};

/* Longest filename pattern a filter takes (bytes, with the NUL). */
#define REPORT_PATTERN_MAX	4096

/*
 * tracemalloc.Filter(inclusive, filename_pattern, lineno, all_frames,
 * domain) or, with domain_only, tracemalloc.DomainFilter(inclusive, domain).
 * A list of them is applied as Snapshot.filter_traces() does: a trace is
 * kept if any inclusive filter matches it (or there is none) and no
 * exclusive filter rejects it.
 */
struct report_filter {
	bool inclusive;
	bool domain_only;		/* DomainFilter: only domain counts */
	bool all_frames;		/* match any frame, not the most recent */
	bool has_lineno;		/* lineno=None when false */
	bool has_domain;		/* Filter(domain=None) when false */
	unsigned int lineno;
	unsigned int domain;
	/* fnmatch pattern, normalised like tracemalloc (".pyc" -> ".py") */
	char pattern[REPORT_PATTERN_MAX];
};

struct report_opts {
	enum report_key key;
	bool cumulative;
	int top;			/* lines per block; <= 0: all */
	const struct report_filter *filters;	/* NULL when nfilters is 0 */
	size_t nfilters;
	/*
	 * Escape control characters and bytes that are not UTF-8 in
	 * filenames (for a terminal); off, output is byte for byte Python's.
	 */
	bool escape;
};

/* Parse "lineno" / "filename" / "traceback"; -1 if unknown. */
int report__parse_key(const char *s);
/* The same names back: "lineno" for REPORT_KEY_LINENO, ... */
const char *report__key_name(enum report_key key);
/*
 * "[ Top N ]" followed by str(Statistic) for the first N of
 * snapshot.statistics(key, cumulative), as print() shows them; with filters,
 * of snapshot.filter_traces(filters). top <= 0 prints every statistic (and
 * their number as N). -EINVAL for cumulative with the traceback key (Python
 * raises ValueError) or a bad filter pattern.
 */
int report__print_top(FILE *out, const struct snapshot *s,
		      const struct report_opts *o);
/*
 * "[ Top N differences ]" with str(StatisticDiff) of snap.compare_to(old),
 * the filters applied to both snapshots first.
 */
int report__print_diff(FILE *out, const struct snapshot *snap,
		       const struct snapshot *old, const struct report_opts *o);
/*
 * The statistics behind those reports, for any sink: snap.statistics(...)
 * or, with OLD, snap.compare_to(old, ...), filtered and sorted as Python
 * does. They point into the snapshots: free them first.
 */
struct report_stats;
struct json;
int report__stats(const struct snapshot *snap, const struct snapshot *old,
		  const struct report_opts *o, struct report_stats **out);
void report__stats_free(struct report_stats *st);	/* safe on NULL */
/*
 * KEEP[i] for each trace i of S: whether snapshot.filter_traces(O's
 * filters) keeps it. 0, -ENOMEM or -EINVAL (a bad pattern).
 */
int report__filter_mask(const struct snapshot *s, const struct report_opts *o, bool *keep);
size_t report__stats_count(const struct report_stats *st);
/* Statistic I (in report order): its size, count, key and oldest block. */
struct report_stat {
	uint64_t size, count;
	const char *filename;		/* NULL: no frame */
	unsigned int lineno;		/* 0 with the filename key */
	uint64_t born;			/* its oldest block's pytm_trace.born; 0 unknown */
	/*
	 * Its key: NFRAME frames, most recent first (one but with the
	 * traceback key), in the snapshot; their line numbers are the
	 * trace's even with the filename key (LINENO above is 0).
	 */
	const struct pytm_frame_info *frames;
	unsigned int nframe;
};
int report__stats_get(const struct report_stats *st, size_t i, struct report_stat *out);
/* The text block, as report__print_top / report__print_diff print it. */
int report__print_stats(FILE *out, const struct report_stats *st,
			const struct report_opts *o);
/*
 * The first o->top statistics as a JSON array of {size, count, [size_diff,
 * count_diff,] average, traceback: [{filename, lineno}, oldest first]}.
 */
void report__json_stats(struct json *j, const struct report_stats *st,
			const struct report_opts *o);
/* tracemalloc._format_size(size, sign) */
void report__format_size(char *buf, size_t len, double size, bool sign);
/*
 * Untrusted text (a target's file or function name) for a terminal or a
 * line-based format: control characters, bytes that are not UTF-8, a
 * backslash and the ASCII characters of ALSO (may be NULL) as \xNN.
 */
void report__put_escaped(FILE *out, const char *str, const char *also);

/*
 * Fill F from "PATTERN[:LINENO]" (the part after the last ':' is a line
 * number when it is all digits), as tracemalloc.Filter(inclusive, PATTERN,
 * LINENO, all_frames). 0, or -EINVAL with a one-line reason (error__last()).
 */
int report__parse_filter(struct report_filter *f, const char *spec,
			 bool inclusive, bool all_frames);
/* tracemalloc.DomainFilter(inclusive, domain) */
void report__domain_filter(struct report_filter *f, bool inclusive,
			   unsigned int domain);
/*
 * fnmatch.fnmatch(name, pattern) of Python 3.11+ on POSIX: 1 match, 0 no
 * match, -EINVAL for a pattern Python cannot compile either.
 */
int report__fnmatch(const char *pattern, const char *name);

/*
 * The offline subcommand, argv[0] being "report": pytm-bpf report FILE
 * [--compare OLD] [--key K] [--cumulative] [--top N] [--include P[:L]]...
 * [--exclude P[:L]]... [--all-frames] [--domain N]... [--exclude-domain N]...
 * Prints on stdout; returns the exit status (0, 1 runtime error, 2 usage).
 */
/* A filter as given on the command line, parsed once all options are in. */
struct report_spec {
	const char *pattern;		/* NULL: a DomainFilter */
	bool inclusive;
	unsigned int domain;
};

enum report_format {
	REPORT_FORMAT_TEXT = 0,		/* tracemalloc's own output */
	REPORT_FORMAT_JSON,		/* one JSON document per report */
	REPORT_FORMAT_FOLDED,		/* folded stacks, bytes (user/sinks/flame.c) */
	REPORT_FORMAT_FLAMEGRAPH,	/* a self-contained HTML flame graph */
	REPORT_FORMAT_SVG,		/* the same as a static SVG picture */
};

/* Folded stacks or a flame graph: a picture of one snapshot, no differences. */
static inline bool report__format_is_graph(enum report_format f)
{
	return f == REPORT_FORMAT_FOLDED || f == REPORT_FORMAT_FLAMEGRAPH || f == REPORT_FORMAT_SVG;
}

/* What the shared report options (report__cli_argp) fill in. */
struct report_cli {
	struct report_opts opts;	/* key, cumulative, top; filters at the end */
	enum report_format format;	/* --format */
	bool all_frames;
	struct report_spec *specs;
	size_t nspecs;
	struct report_filter *filters;
};

struct argp;
/* argp child parser for --key, --cumulative, --top and the filters. */
extern const struct argp report__cli_argp;
void report__cli_free(struct report_cli *c);

int report__main(int argc, char **argv);

#endif /* __PYTM_REPORT_H */
