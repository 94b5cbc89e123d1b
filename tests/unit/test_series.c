// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Series of statistics over rounds (user/stats/series.c): growth figures
 * and what --leaks calls a leak. Sizes per round are made up here, as
 * snapshots of one block per line; a pseudo-random walk stands for churn.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "report.h"
#include "series.h"
#include "snapshot.h"
#include "unit.h"

enum { LEAK, BURST, CHURN, GONE, FLAT, NLINES };
static const char *const names[NLINES] = { "leak.py", "burst.py", "churn.py", "gone.py",
					   "flat.py" };

/* Round R's size of line L. */
static uint64_t size_at(int l, int r, uint64_t *walk)
{
	switch (l) {
	case LEAK:
		return 1000 + 100 * r;			/* steady, slow */
	case BURST:
		return r < 4 ? 1000 : 900000;		/* once, then flat */
	case CHURN:
		*walk = *walk * 6364136223846793005ULL + 1442695040888963407ULL;
		return 50000 + (*walk >> 33) % 20000;	/* wanders */
	case GONE:
		return r < 2 ? 5000 : 0;		/* freed */
	default:
		return 7000;
	}
}

static struct snapshot *round_snapshot(int r, uint64_t *walk, uint64_t t0_ns)
{
	struct snapshot *s = snapshot__new(1);
	int l;

	for (l = 0; l < NLINES; l++) {
		struct pytm_frame_info f = { .filename = snapshot__intern(s, names[l]), .lineno = 1 };
		uint64_t size = size_at(l, r, walk);

		if (size)
			snapshot__add_block(s, 0, size, 1, t0_ns + (uint64_t)l * 1000000000ULL,
					    snapshot__traceback(s, &f, 1, 1));
	}
	return s;
}

static const struct series_line *find(struct series *se, const char *name)
{
	size_t i;

	for (i = 0; i < series__count(se); i++) {
		const struct series_line *l = series__line(se, i);

		if (!strcmp(l->frames[0].filename, name))
			return l;
	}
	return NULL;
}

static void test_leaks(void)
{
	struct report_opts o = { .key = REPORT_KEY_LINENO };
	const struct series_line *v[NLINES], *l;
	struct series *se = series__new(10);
	uint64_t walk = 42;
	size_t n;
	int r;

	CHECK(se, "series__new");
	CHECK(!series__new(2) && !series__new(SERIES_WINDOW_MAX + 1), "window bounds");
	for (r = 0; r < 16; r++) {
		struct snapshot *s = round_snapshot(r, &walk, 5000000000ULL);

		series__begin(se, 100.0 + 60.0 * r);	/* a minute apart */
		CHECK(!series__add(se, s, &o, 7), "add round %d", r);
		series__end(se);
		snapshot__free(s);
		n = series__leaks(se, 7, v, NLINES);
		/* Nothing ranks before SERIES_LEAK_MIN intervals of steady growth. */
		if (r < SERIES_LEAK_MIN)
			CHECK(n == 0, "round %d: %zu ranked early", r, n);
		else
			CHECK(n == 1 && !strcmp(v[0]->frames[0].filename, "leak.py"),
			      "round %d: %zu ranked, first %s", r, n, n ? v[0]->frames[0].filename : "-");
	}
	l = find(se, "leak.py");
	CHECK(l && fabs(l->slope - 100) < 1e-9, "slope %f B/min", l ? l->slope : -1);
	CHECK(l && l->intervals == 10 && l->grew == 10, "grew %u of %u", l ? l->grew : 0,
	      l ? l->intervals : 0);
	CHECK(l && l->growth == 1000 && l->grow_last == 100 && l->grow_first == 1500,
	      "growth %lld, last %lld, first %lld", l ? (long long)l->growth : 0,
	      l ? (long long)l->grow_last : 0, l ? (long long)l->grow_first : 0);
	CHECK(l && l->born == 5000000000ULL && l->trend == 1, "born %llu trend %f",
	      l ? (unsigned long long)l->born : 0, l ? l->trend : 0);
	l = find(se, "burst.py");
	CHECK(l && !l->leak && l->grew <= 1, "burst: leak %d, grew %u", l ? l->leak : -1,
	      l ? l->grew : 0);
	l = find(se, "flat.py");
	CHECK(l && !l->leak && l->slope == 0 && l->grow_first == 0, "flat");
	/* A line with nothing live through the whole window goes. */
	CHECK(!find(se, "gone.py"), "gone.py still there");
	/* Another process has none. */
	CHECK(series__leaks(se, 8, v, NLINES) == 0, "pid 8");
	CHECK(series__leaks(se, 0, v, NLINES) == 1, "any pid");
	series__free(se);
	series__free(NULL);
}

/* Churn alone, many times over: how often does chance pass for a leak? */
static void test_false_alarms(void)
{
	struct report_opts o = { .key = REPORT_KEY_LINENO };
	const struct series_line *v[NLINES];
	int trial, r, alarms = 0, windows = 0;
	uint64_t walk = 7;

	for (trial = 0; trial < 200; trial++) {
		struct series *se = series__new(10);

		for (r = 0; r < 11; r++) {
			struct snapshot *s = round_snapshot(r, &walk, 1);

			series__begin(se, r);
			series__add(se, s, &o, 1);
			series__end(se);
			snapshot__free(s);
		}
		series__leaks(se, 1, v, NLINES);
		alarms += find(se, "churn.py")->leak;
		windows++;
		series__free(se);
	}
	/* Mann-Kendall at z >= 3: about 1 in 700 by chance. */
	CHECK(alarms <= 2, "%d false alarms in %d windows", alarms, windows);
}

int main(void)
{
	test_leaks();
	test_false_alarms();
	return unit_done("test_series");
}
