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

struct report_opts {
	enum report_key key;
	bool cumulative;
	int top;			/* lines per block; <= 0: all */
};

/* Parse "lineno" / "filename" / "traceback"; -1 if unknown. */
int report__parse_key(const char *s);
/*
 * "[ Top N ]" followed by str(Statistic) for the first N of
 * snapshot.statistics(key, cumulative), as print() shows them.
 */
int report__print_top(FILE *out, const struct snapshot *s,
		      const struct report_opts *o);
/* "[ Top N differences ]" with str(StatisticDiff) of snap.compare_to(old). */
int report__print_diff(FILE *out, const struct snapshot *snap,
		       const struct snapshot *old, const struct report_opts *o);
/* tracemalloc._format_size(size, sign) */
void report__format_size(char *buf, size_t len, double size, bool sign);

#endif /* __PYTM_REPORT_H */
