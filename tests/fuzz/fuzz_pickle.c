// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The snapshot reader (`pytm-bpf report FILE`, --compare=FILE): any bytes.
 * What it accepts is then reported (text, JSON, folded stacks), compared
 * with itself and written back, as `pytm-bpf report` would.
 */
#include <stdio.h>
#include <stdlib.h>
#include "flame.h"
#include "json.h"
#include "report.h"
#include "snapshot.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct report_opts o = { .key = REPORT_KEY_LINENO, .top = 10, .escape = true };
	struct report_stats *st;
	struct snapshot *s;
	struct json j;
	FILE *out;
	int key;

	error__quiet(true);
	if (snapshot__load_mem(data, len, &s))
		return 0;
	out = fopen("/dev/null", "w");
	for (key = 0; key < 3; key++) {
		o.key = key;
		report__print_top(out, s, &o);
		report__print_diff(out, s, s, &o);
		if (!report__stats(s, NULL, &o, &st)) {
			json__init(&j, out);
			report__json_stats(&j, st, &o);
			report__stats_free(st);
		}
	}
	flame__write_folded(out, s, &o, NULL);
	snapshot__write_stream(s, out, PYTM_PICKLE_39);
	snapshot__write_stream(s, out, PYTM_PICKLE_38);
	fclose(out);
	snapshot__free(s);
	return 0;
}
