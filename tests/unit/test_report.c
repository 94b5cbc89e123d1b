// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Reports are byte for byte what tracemalloc prints: for every key,
 * cumulative or not, compare_to, filters, on hand-made snapshots built to
 * hit each tie-break and rounding case, on random ones, and on stock dumps
 * of real workloads under 3.8, 3.11 and 3.13; checked against the same
 * interpreter's Lib/tracemalloc.py. Also fnmatch, _format_size and the
 * "pytm-bpf report" command line (output, exit statuses, messages).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "unit.h"
#include "util.h"
#include "pyrun.h"
#include "report.h"
#include "snapshot.h"

/* ---------------- the Python side ---------------- */

static const char report_py[] =
"import sys, json, tracemalloc\n"
"cfgs = json.load(open(sys.argv[1], encoding='utf-8'))\n"
"raw = {}\n"
"def load(path, filters):\n"
"    if path not in raw:\n"
"        raw[path] = tracemalloc.Snapshot.load(path)\n"
"    s = raw[path]\n"
"    fl = []\n"
"    for f in filters:\n"
"        if f['type'] == 'domain':\n"
"            fl.append(tracemalloc.DomainFilter(f['inclusive'], f['domain']))\n"
"        else:\n"
"            fl.append(tracemalloc.Filter(f['inclusive'], f['pattern'],\n"
"                f['lineno'], f['all_frames'], f['domain']))\n"
"    return s.filter_traces(fl) if fl else s\n"
"for i, c in enumerate(cfgs):\n"
"    print('=== %d' % i)\n"
"    s = load(c['file'], c['filters'])\n"
"    if c['old']:\n"
"        stats = s.compare_to(load(c['old'], c['filters']), c['key'],\n"
"                             c['cumulative'])\n"
"        hdr = '[ Top %d differences ]'\n"
"    else:\n"
"        stats = s.statistics(c['key'], c['cumulative'])\n"
"        hdr = '[ Top %d ]'\n"
"    n = c['top'] if c['top'] > 0 else len(stats)\n"
"    print(hdr % n)\n"
"    for stat in stats[:n]:\n"
"        print(stat)\n";

/* One filter as a test describes it, for both sides. */
struct tfilter {
	bool domain_only, inclusive, all_frames;
	const char *pattern;
	long long lineno;		/* -1: None */
	long long domain;		/* -1: None */
};

struct cfg {
	const char *file, *old;
	enum report_key key;
	bool cumulative;
	int top;
	const struct tfilter *filters;
	size_t nfilters;
};

static const char *const key_names[] = { "lineno", "filename", "traceback" };

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = *s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void json_cfg(FILE *f, const struct cfg *c)
{
	size_t i;

	fprintf(f, "{\"file\": ");
	json_str(f, c->file);
	fprintf(f, ", \"old\": ");
	if (c->old)
		json_str(f, c->old);
	else
		fprintf(f, "null");
	fprintf(f, ", \"key\": \"%s\", \"cumulative\": %s, \"top\": %d, "
		"\"filters\": [", key_names[c->key],
		c->cumulative ? "true" : "false", c->top);
	for (i = 0; i < c->nfilters; i++) {
		const struct tfilter *t = &c->filters[i];

		if (i)
			fprintf(f, ", ");
		if (t->domain_only) {
			fprintf(f, "{\"type\": \"domain\", \"inclusive\": %s, "
				"\"domain\": %lld}", t->inclusive ? "true" : "false",
				t->domain);
			continue;
		}
		fprintf(f, "{\"type\": \"filter\", \"inclusive\": %s, \"pattern\": ",
			t->inclusive ? "true" : "false");
		json_str(f, t->pattern);
		fprintf(f, ", \"all_frames\": %s, ", t->all_frames ? "true" : "false");
		if (t->lineno < 0)
			fprintf(f, "\"lineno\": null, ");
		else
			fprintf(f, "\"lineno\": %lld, ", t->lineno);
		if (t->domain < 0)
			fprintf(f, "\"domain\": null}");
		else
			fprintf(f, "\"domain\": %lld}", t->domain);
	}
	fprintf(f, "]}");
}

/* Our filters for T (through the public parsing API). */
static bool make_filters(const struct cfg *c, struct report_filter *out)
{
	char spec[REPORT_PATTERN_MAX + 32];
	size_t i;

	for (i = 0; i < c->nfilters; i++) {
		const struct tfilter *t = &c->filters[i];

		if (t->domain_only) {
			report__domain_filter(&out[i], t->inclusive, t->domain);
			continue;
		}
		if (t->lineno >= 0)
			snprintf(spec, sizeof(spec), "%s:%lld", t->pattern, t->lineno);
		else
			snprintf(spec, sizeof(spec), "%s", t->pattern);
		if (report__parse_filter(&out[i], spec, t->inclusive, t->all_frames)) {
			CHECK(0, "parse filter %s: %s", spec, error__last());
			return false;
		}
		if (t->domain >= 0) {
			out[i].has_domain = true;
			out[i].domain = t->domain;
		}
	}
	return true;
}

/* Our report for C, as text. */
static char *our_report(const struct cfg *c)
{
	struct report_filter *flt = calloc(c->nfilters + 1, sizeof(*flt));
	struct snapshot *s = NULL, *o = NULL;
	struct report_opts opts = {};
	char *buf = NULL;
	size_t len;
	FILE *f = NULL;
	int ret = -1;

	if (!flt || !make_filters(c, flt))
		goto cleanup;
	if (snapshot__load(c->file, &s) || (c->old && snapshot__load(c->old, &o))) {
		CHECK(0, "load: %s", error__last());
		goto cleanup;
	}
	opts.key = c->key;
	opts.cumulative = c->cumulative;
	opts.top = c->top;
	opts.filters = flt;
	opts.nfilters = c->nfilters;
	f = open_memstream(&buf, &len);
	if (!f)
		goto cleanup;
	ret = c->old ? report__print_diff(f, s, o, &opts)
		     : report__print_top(f, s, &opts);
	CHECK(ret == 0, "report: %d", ret);

cleanup:
	if (f)
		fclose(f);
	if (ret) {
		free(buf);
		buf = NULL;
	}
	snapshot__free(s);
	snapshot__free(o);
	free(flt);
	return buf;
}

/* First line where A and B differ, for the failure message. */
static void show_diff(const char *what, const char *a, const char *b)
{
	int line = 1;
	const char *la = a, *lb = b;

	while (*a && *a == *b) {
		if (*a == '\n') {
			line++;
			la = a + 1;
			lb = b + 1;
		}
		a++;
		b++;
	}
	fprintf(stderr, "  %s: line %d differs:\n  python: %.*s\n  ours:   %.*s\n",
		what, line, (int)strcspn(la, "\n"), la, (int)strcspn(lb, "\n"), lb);
}

/*
 * Run every configuration through VERSION's tracemalloc (one process) and
 * through ours; every block must be identical. Returns the number compared.
 */
static size_t compare_all(const char *version, const struct cfg *cfgs,
			  size_t n, const char *what)
{
	char py[512], *out = NULL, *err = NULL, *mine = NULL, *ours;
	char *argv[] = { py, tpath("report.py"), tpath("cfg.json"), NULL };
	size_t len, i, same = 0;
	FILE *f;
	int st;

	if (!py_path(version, py, sizeof(py))) {
		CHECK(0, "interpreter %s missing (%s)", version, py);
		return 0;
	}
	f = fopen(tpath("cfg.json"), "w");
	if (!f) {
		CHECK(0, "cfg.json");
		return 0;
	}
	fputc('[', f);
	for (i = 0; i < n; i++) {
		if (i)
			fputs(",\n", f);
		json_cfg(f, &cfgs[i]);
	}
	fputs("]\n", f);
	fclose(f);
	st = run_capture(argv, &out, NULL, &err);
	CHECK(st == 0, "%s report.py: %d %s", version, st, err ? err : "");
	f = open_memstream(&mine, &len);
	for (i = 0; f && i < n; i++) {
		fprintf(f, "=== %zu\n", i);
		ours = our_report(&cfgs[i]);
		fputs(ours ? ours : "(failed)\n", f);
		free(ours);
	}
	if (f)
		fclose(f);
	if (st == 0 && out && mine) {
		/* per block, so that a failure names its configuration */
		char *p = out, *q = mine;

		for (i = 0; i < n; i++) {
			char *pe = strstr(p + 1, "\n=== "), *qe = strstr(q + 1, "\n=== ");
			size_t pl = pe ? (size_t)(pe - p) : strlen(p);
			size_t ql = qe ? (size_t)(qe - q) : strlen(q);

			if (pl == ql && !memcmp(p, q, pl)) {
				same++;
			} else {
				CHECK(0, "%s with %s: config %zu (key %s%s%s, %zu "
				      "filters, top %d) differs", what, version, i,
				      key_names[cfgs[i].key],
				      cfgs[i].cumulative ? " cumulative" : "",
				      cfgs[i].old ? " compare" : "",
				      cfgs[i].nfilters, cfgs[i].top);
				show_diff(what, p, q);
			}
			p += pl;
			q += ql;
		}
		CHECK(same == n, "%s: %zu of %zu identical", what, same, n);
		CHECK(!strcmp(out, mine), "%s: whole output identical", what);
	}
	free(out);
	free(err);
	free(mine);
	return same;
}

/* ---------------- configurations ---------------- */

static const struct tfilter F_INC_JSON[] = {
	{ .inclusive = true, .pattern = "*/json/*", .lineno = -1, .domain = -1 },
};
static const struct tfilter F_EXC_FROZEN[] = {
	{ .inclusive = false, .pattern = "<frozen*>", .lineno = -1, .domain = -1 },
	{ .inclusive = false, .pattern = "<unknown>", .lineno = -1, .domain = -1 },
};
static const struct tfilter F_LINENO[] = {
	{ .inclusive = true, .pattern = "a.py", .lineno = 10, .domain = -1 },
	{ .inclusive = true, .pattern = "*.py", .lineno = 1, .domain = -1 },
};
static const struct tfilter F_ALL_FRAMES[] = {
	{ .inclusive = true, .pattern = "main.py", .lineno = -1, .domain = -1,
	  .all_frames = true },
	{ .inclusive = false, .pattern = "*[xyz]*", .lineno = -1, .domain = -1,
	  .all_frames = true },
};
static const struct tfilter F_DOMAIN[] = {
	{ .domain_only = true, .inclusive = true, .domain = 0 },
	{ .domain_only = true, .inclusive = true, .domain = 389047 },
	{ .domain_only = true, .inclusive = false, .domain = 1 },
};
static const struct tfilter F_FILTER_DOMAIN[] = {
	{ .inclusive = true, .pattern = "*", .lineno = -1, .domain = 389047 },
	{ .inclusive = false, .pattern = "b*", .lineno = -1, .domain = 0 },
};
static const struct tfilter F_PYC_UNICODE[] = {
	{ .inclusive = true, .pattern = "mod.pyc", .lineno = -1, .domain = -1 },
	{ .inclusive = true, .pattern = "*日本*", .lineno = -1, .domain = -1 },
	{ .inclusive = true, .pattern = "/x/?.py", .lineno = -1, .domain = -1 },
	{ .inclusive = true, .pattern = "[!a-c]*.py", .lineno = -1, .domain = -1 },
};
static const struct tfilter F_EXC_ALL[] = {
	{ .inclusive = false, .pattern = "*", .lineno = -1, .domain = -1 },
};

struct fset {
	const struct tfilter *f;
	size_t n;
};

#define FSET(a) { a, sizeof(a) / sizeof(a[0]) }
static const struct fset fsets[] = {
	{ NULL, 0 }, FSET(F_INC_JSON), FSET(F_EXC_FROZEN), FSET(F_LINENO),
	FSET(F_ALL_FRAMES), FSET(F_DOMAIN), FSET(F_FILTER_DOMAIN),
	FSET(F_PYC_UNICODE), FSET(F_EXC_ALL),
};

/*
 * Every key x cumulative x (statistics, compare_to) x top, and each filter
 * set with every key (LIGHT: with two). Returns the number in OUT.
 */
static size_t matrix(struct cfg *out, const char *file, const char *old,
		     bool filters, bool light)
{
	static const int tops[] = { 10, 0, 3 };
	size_t n = 0, k, c, t, d, f;

	for (d = 0; d < (old ? 2 : 1); d++)
		for (k = 0; k < 3; k++)
			for (c = 0; c < 2; c++)
				for (t = 0; t < 3; t++) {
					if (c && k == REPORT_KEY_TRACEBACK)
						continue;
					out[n++] = (struct cfg){
						.file = file, .old = d ? old : NULL,
						.key = k, .cumulative = c,
						.top = tops[t],
					};
				}
	for (f = 1; filters && f < sizeof(fsets) / sizeof(fsets[0]); f++)
		for (d = 0; d < (old ? 2 : 1); d++)
			for (k = 0; k < 3; k++) {
				/* big files: Python's filters are slow, sample */
				if (light && k != (d ? 2 : 0))
					continue;
				out[n++] = (struct cfg){
					.file = file, .old = d ? old : NULL,
					.key = k, .cumulative = k == 0,
					.top = 0, .filters = fsets[f].f,
					.nfilters = fsets[f].n,
				};
			}
	return n;
}

/* ---------------- hand-made snapshots ---------------- */

struct tb_spec {
	const char *frames[8];		/* "file:line", most recent first */
	unsigned int total;
};

static const struct pytm_traceback *mk_tb(struct snapshot *s,
					  const struct tb_spec *t)
{
	struct pytm_frame_info fr[8] = {};
	unsigned int n = 0;
	char name[256];

	for (n = 0; n < 8 && t->frames[n]; n++) {
		const char *colon = strrchr(t->frames[n], ':');

		snprintf(name, sizeof(name), "%.*s",
			 (int)(colon - t->frames[n]), t->frames[n]);
		fr[n].filename = snapshot__intern(s, name);
		fr[n].lineno = strtoul(colon + 1, NULL, 10);
	}
	return snapshot__traceback(s, fr, n, t->total ? t->total : n);
}

/* Tracebacks built to meet every tie-break. */
static const struct tb_spec tbs[] = {
	/* 0-2: same size and count, lineno ties broken by (file, line) */
	{ .frames = { "a.py:10", "main.py:1" } },
	{ .frames = { "a.py:9", "main.py:1" } },
	{ .frames = { "b.py:1", "main.py:1" } },
	/* 3-4: one traceback a prefix of the other (oldest first) */
	{ .frames = { "x.py:2", "main.py:1" } },
	{ .frames = { "main.py:1" } },
	/* 5: recursion: cumulative counts the repeated frame each time */
	{ .frames = { "r.py:3", "r.py:3", "r.py:3", "main.py:7" }, .total = 40 },
	/* 6: same frames as 5, other total_nframe: the same group */
	{ .frames = { "r.py:3", "r.py:3", "r.py:3", "main.py:7" }, .total = 4 },
	/* 7-10: code-point order, case, unicode */
	{ .frames = { "B.py:1" } },
	{ .frames = { "/x/ü.py:1" } },
	{ .frames = { "/x/u.py:1" } },
	{ .frames = { "/x/日本.py:5", "/x/ü.py:2" } },
	/* 11-14 */
	{ .frames = { "lib/json/x.py:100", "lib/json/__init__.py:3", "main.py:1" } },
	{ .frames = { "mod.pyc:4", "main.py:2" } },
	{ .frames = { "<frozen abc>:106" } },
	{ .frames = { "<unknown>:0" } },
	/* 15: big numbers */
	{ .frames = { "big.py:4294967295" } },
	/* 16: a control character, printed raw as Python does */
	{ .frames = { "ctl\x1b[31m.py:1" } },
	/* 17-19: rounding of averages and sizes */
	{ .frames = { "avg.py:1" } },
	{ .frames = { "avg.py:2" } },
	{ .frames = { "avg.py:3" } },
};
#define NTB (sizeof(tbs) / sizeof(tbs[0]))

struct tr {
	unsigned int tb, domain;
	uint64_t size;
};

static const struct tr new_traces[] = {
	{ 0, 0, 100 }, { 1, 0, 100 }, { 2, 0, 100 },
	{ 3, 0, 64 }, { 4, 0, 64 },
	{ 5, 0, 1000 }, { 5, 0, 24 }, { 6, 0, 1000 },
	{ 7, 0, 50 }, { 8, 0, 50 }, { 9, 0, 50 }, { 10, 1, 50 },
	{ 11, 0, 10239 }, { 11, 0, 1 }, { 12, 389047, 102400 },
	{ 13, 0, 99 }, { 14, 1, 10240 },
	{ 15, 0, UINT64_MAX }, { 15, 0, UINT64_MAX }, { 15, 2, UINT64_MAX },
	{ 16, 0, 7 },
	{ 17, 0, 5 }, { 17, 0, 0 },		/* 2.5 B -> "2 B" */
	{ 18, 0, 7 }, { 18, 0, 0 },		/* 3.5 B -> "4 B" */
	{ 19, 0, 10496 }, { 19, 0, 10496 },	/* 10.25 KiB -> "10.2 KiB" */
	{ 0, 389047, 1 },
};

static const struct tr old_traces[] = {
	{ 0, 0, 100 }, { 1, 0, 300 }, { 2, 0, 100 }, { 2, 0, 100 },
	{ 3, 0, 64 },
	{ 5, 0, 1000 },
	{ 7, 0, 150 }, { 8, 0, 150 }, { 9, 0, 50 },
	{ 13, 0, 99 }, { 14, 1, 10240 },
	{ 15, 0, 1ULL << 63 },
	{ 17, 0, 5 }, { 18, 0, 12345678 },
	{ 12, 0, 1 },
};

/* Only in the old one: negative differences and zero sizes. */
static const struct tb_spec old_only[] = {
	{ .frames = { "gone.py:1" } },
	{ .frames = { "gone.py:2", "main.py:1" } },
};

static struct snapshot *build(const struct tr *t, size_t n, bool old)
{
	struct snapshot *s = snapshot__new(8);
	const struct pytm_traceback *tb[NTB + 2];
	size_t i;

	if (!s)
		return NULL;
	for (i = 0; i < NTB; i++)
		tb[i] = mk_tb(s, &tbs[i]);
	for (i = 0; old && i < 2; i++)
		tb[NTB + i] = mk_tb(s, &old_only[i]);
	for (i = 0; i < n; i++)
		CHECK(snapshot__add(s, t[i].domain, t[i].size, tb[t[i].tb]) == 0,
		      "add");
	for (i = 0; old && i < 4; i++)
		CHECK(snapshot__add(s, 0, 1000 + i, tb[NTB + i % 2]) == 0, "add");
	return s;
}

static void test_handmade(void)
{
	struct snapshot *s = build(new_traces,
				   sizeof(new_traces) / sizeof(new_traces[0]), 0);
	struct snapshot *o = build(old_traces,
				   sizeof(old_traces) / sizeof(old_traces[0]), 1);
	struct cfg cfgs[256];
	char a[512], b[512];
	size_t n;

	CHECK(s && o, "build");
	CHECK(snapshot__write(s, tpath("new.pytm"), PYTM_PICKLE_39) == 0 &&
	      snapshot__write(o, tpath("old.pytm"), PYTM_PICKLE_39) == 0 &&
	      snapshot__write(s, tpath("new38.pytm"), PYTM_PICKLE_38) == 0 &&
	      snapshot__write(o, tpath("old38.pytm"), PYTM_PICKLE_38) == 0,
	      "write");
	snprintf(a, sizeof(a), "%s/new.pytm", tmpdir);
	snprintf(b, sizeof(b), "%s/old.pytm", tmpdir);
	n = matrix(cfgs, a, b, true, false);
	compare_all("system", cfgs, n, "hand-made");
	compare_all("3.13.0", cfgs, n, "hand-made");
	snprintf(a, sizeof(a), "%s/new38.pytm", tmpdir);
	snprintf(b, sizeof(b), "%s/old38.pytm", tmpdir);
	n = matrix(cfgs, a, b, true, false);
	compare_all("3.8.18", cfgs, n, "hand-made, 3.8 layout");
	snapshot__free(s);
	snapshot__free(o);
}

/* Random snapshots: many groups, ties by chance, huge sums. */
static struct snapshot *build_random(unsigned int *seed, size_t ntraces)
{
	static const char *const files[] = {
		"a.py", "b.py", "ab.py", "A.py", "/x/é.py", "/x/e.py", "z.pyc",
		"<frozen os>", "json/x.py", "日本.py",
	};
	struct snapshot *s = snapshot__new(5);
	const struct pytm_traceback *tb[40];
	struct pytm_frame_info fr[5] = {};
	size_t i, k, n;

	if (!s)
		return NULL;
	for (i = 0; i < 40; i++) {
		n = 1 + rand_r(seed) % 5;
		for (k = 0; k < n; k++) {
			fr[k].filename = snapshot__intern(s,
				files[rand_r(seed) % 10]);
			fr[k].lineno = rand_r(seed) % 4;
		}
		tb[i] = snapshot__traceback(s, fr, n, n + rand_r(seed) % 2);
	}
	for (i = 0; i < ntraces; i++) {
		uint64_t size;

		switch (rand_r(seed) % 6) {
		case 0:
			size = UINT64_MAX - rand_r(seed) % 1000;
			break;
		case 1:
			size = (uint64_t)rand_r(seed) << 20;
			break;
		case 2:
			size = rand_r(seed) % 300000;
			break;
		default:
			size = 8 * (rand_r(seed) % 8);	/* ties */
			break;
		}
		snapshot__add(s, rand_r(seed) % 3, size, tb[rand_r(seed) % 40]);
	}
	return s;
}

static void test_random(void)
{
	unsigned int seed = 4242;
	struct cfg cfgs[256];
	char a[512], b[512];
	size_t n, r;

	for (r = 0; r < 4; r++) {
		struct snapshot *s = build_random(&seed, 50 + r * 400);
		struct snapshot *o = build_random(&seed, 300);

		snprintf(a, sizeof(a), "%s/rand%zu.pytm", tmpdir, r);
		snprintf(b, sizeof(b), "%s/rand%zu.old.pytm", tmpdir, r);
		CHECK(s && o && snapshot__write(s, a, PYTM_PICKLE_39) == 0 &&
		      snapshot__write(o, b, PYTM_PICKLE_39) == 0, "write");
		n = matrix(cfgs, a, b, r == 0, false);
		compare_all("system", cfgs, n, "random");
		snapshot__free(s);
		snapshot__free(o);
	}
}

/* ---------------- stock dumps of a real workload ---------------- */

static const char workload_py[] =
"import sys, tracemalloc, json\n"
"sys.path.insert(0, sys.argv[2])\n"
"import helpér\n"
"keep = []\n"
"def rec(n):\n"
"    if n == 0:\n"
"        return [bytearray(100) for _ in range(3)]\n"
"    return rec(n - 1) + [str(n) * n]\n"
"keep.append(rec(8))\n"
"keep.append(json.dumps({str(i): list(range(i)) for i in range(50)}))\n"
"keep.append(helpér.make(200))\n"
"tracemalloc.take_snapshot().dump(sys.argv[1] + '.old')\n"
"keep.append([dict(a=i) for i in range(300)])\n"
"del keep[1]\n"
"keep.append(helpér.make(100))\n"
"keep.append(bytearray(3 * 1024 * 1024))\n"
"tracemalloc.take_snapshot().dump(sys.argv[1])\n";

static const char helper_py[] =
"class Thing:\n"
"    def __init__(self, i):\n"
"        self.name = 'thing-%d' % i\n"
"        self.data = list(range(i % 7))\n"
"def make(n):\n"
"    return [Thing(i) for i in range(n)]\n";

static void test_stock(void)
{
	static const char *const vers[] = { "3.8.18", "3.11.7", "3.13.0",
					    "system" };
	static const struct tfilter mine[] = {
		{ .inclusive = true, .pattern = "*pkg_ü*", .lineno = -1,
		  .domain = -1, .all_frames = true },
		{ .inclusive = true, .pattern = "*workload.py", .lineno = -1,
		  .domain = -1 },
	};
	struct cfg cfgs[256];
	char py[512], name[64], *file, *old, *out = NULL, *err = NULL;
	size_t n, i;
	int st;

	mkdir(tpath("pkg_ü"), 0755);
	CHECK(write_text(tpath("workload.py"), workload_py) == 0 &&
	      write_text(tpath("pkg_ü/helpér.py"), helper_py) == 0, "setup");
	for (i = 0; i < sizeof(vers) / sizeof(vers[0]); i++) {
		char *argv[] = { py, "-X", "tracemalloc=5", tpath("workload.py"),
				 NULL, tpath("pkg_ü"), NULL };

		if (!py_path(vers[i], py, sizeof(py))) {
			CHECK(0, "interpreter %s missing (%s)", vers[i], py);
			continue;
		}
		snprintf(name, sizeof(name), "stock-%s.pickle", vers[i]);
		file = strdup(tpath(name));
		argv[4] = file;
		st = run_capture(argv, &out, NULL, &err);
		CHECK(st == 0, "%s workload: %s", vers[i], err ? err : "");
		free(out);
		free(err);
		if (st) {
			free(file);
			continue;
		}
		if (asprintf(&old, "%s.old", file) < 0)
			old = NULL;
		n = matrix(cfgs, file, old, true, true);
		cfgs[n++] = (struct cfg){ .file = file, .old = old, .top = 0,
					  .key = REPORT_KEY_TRACEBACK,
					  .filters = mine, .nfilters = 2 };
		cfgs[n++] = (struct cfg){ .file = file, .top = 0,
					  .key = REPORT_KEY_FILENAME,
					  .cumulative = true,
					  .filters = mine, .nfilters = 2 };
		compare_all(vers[i], cfgs, n, name);
		free(file);
		free(old);
	}
}

/* ---------------- fnmatch and _format_size ---------------- */

static const char *const patterns[] = {
	"*", "*.py", "a?c", "[abc]*", "[!abc]*", "[a-c]x", "[z-a]x", "[]]x",
	"[!]]x", "[!]x", "[a-]x", "[-a]x", "[a--]x", "[--a]", "[\\]x", "[^a]x",
	"[[]x", "a[", "a[b", "*[", "[&~|]x", "[a-c-e]", "[b-a!x]", "**a**b",
	"*?*?", "*日本*", "[ü-ÿ]*", "[!-a]", "[a-c-a]", "[b-a-a]", "[]-a]",
	"[!]-!]", "a*b*c", "*a*a*a*b", "?", "", "[!a-z0-9_]*", "x\\y",
	"[\\-a]", "[a\\-z]", "*.py[co]", "[^]", "[!^]x", "[^-]x", ".*",
	"a\nb", "[\n]", "*\xf0\x9f\x90\x8d*",
};

static const char *const fn_names[] = {
	"", "a", "abc", "abcx", "x", "bx", "]x", "!x", "-x", "\\x", "^x", "[x",
	"&x", "~x", "|x", "a.py", "/x/日本.py", "ü", "ÿ", "é", "aab", "aaab",
	"aXbYc", "ac", "axc", "cx", "zx", "dx", "a[", "a[b", "x\\y", "y.pyc",
	"y.pyo", "y.pyx", "a\nb", "\n", "\xf0\x9f\x90\x8d", "-", "!", ".",
	"a-", "b", "ab", "ba",
};

#define NPAT (sizeof(patterns) / sizeof(patterns[0]))
#define NNAME (sizeof(fn_names) / sizeof(fn_names[0]))
#define NRAND_PAT 600
#define NRAND_NAME 60

/* Random text over an alphabet full of fnmatch's special characters. */
static char *random_text(unsigned int *seed, const char *const *alpha,
			 size_t nalpha, size_t maxlen)
{
	size_t n = rand_r(seed) % (maxlen + 1), i;
	char *s = calloc(1, n * 4 + 1);

	for (i = 0; s && i < n; i++)
		strcat(s, alpha[rand_r(seed) % nalpha]);
	return s;
}

static void test_fnmatch(void)
{
	static const char *const alpha[] = {
		"[", "]", "!", "-", "^", "\\", "*", "?", "a", "b", "c", "z",
		"é", "&", "|",
	};
	const char *pats[NPAT + NRAND_PAT], *nms[NNAME + NRAND_NAME];
	char py[512], *out = NULL, *err = NULL, *mine = NULL;
	char *argv[] = { py, "-c", NULL, tpath("fn.json"), NULL };
	unsigned int seed = 7;
	size_t i, j, len, np = 0, nn = 0;
	FILE *f;

	argv[2] =
	"import sys, json, fnmatch\n"
	"pats, names = json.load(open(sys.argv[1], encoding='utf-8'))\n"
	"for p in pats:\n"
	"    r = []\n"
	"    for n in names:\n"
	"        try:\n"
	"            r.append('1' if fnmatch.fnmatch(n, p) else '0')\n"
	"        except Exception:\n"
	"            r.append('E')\n"
	"    print(''.join(r))\n";
	for (i = 0; i < NPAT; i++)
		pats[np++] = patterns[i];
	for (i = 0; i < NRAND_PAT; i++)
		pats[np++] = random_text(&seed, alpha, 15, 8);
	for (i = 0; i < NNAME; i++)
		nms[nn++] = fn_names[i];
	for (i = 0; i < NRAND_NAME; i++)
		nms[nn++] = random_text(&seed, alpha + 1, 14, 6);
	f = fopen(tpath("fn.json"), "w");
	fputs("[[", f);
	for (i = 0; i < np; i++) {
		if (i)
			fputc(',', f);
		json_str(f, pats[i] ? pats[i] : "");
	}
	fputs("], [", f);
	for (j = 0; j < nn; j++) {
		if (j)
			fputc(',', f);
		json_str(f, nms[j] ? nms[j] : "");
	}
	fputs("]]", f);
	fclose(f);
	f = open_memstream(&mine, &len);
	for (i = 0; i < np; i++) {
		for (j = 0; j < nn; j++) {
			int r = report__fnmatch(pats[i] ? pats[i] : "",
						nms[j] ? nms[j] : "");

			fputc(r == 1 ? '1' : r == 0 ? '0' : 'E', f);
		}
		fputc('\n', f);
	}
	fclose(f);
	CHECK(py_path("system", py, sizeof(py)), "python");
	CHECK(run_capture(argv, &out, NULL, &err) == 0, "fnmatch script: %s",
	      err ? err : "");
	if (out && mine && strcmp(out, mine)) {
		char *p = out, *q = mine;

		for (i = 0; *p && *q; i++) {
			size_t pl = strcspn(p, "\n"), ql = strcspn(q, "\n");

			CHECK(pl == ql && !memcmp(p, q, pl),
			      "fnmatch pattern \"%s\": python %.*s ours %.*s",
			      pats[i], (int)pl, p, (int)ql, q);
			p += pl + (p[pl] != 0);
			q += ql + (q[ql] != 0);
		}
	}
	CHECK(out && mine && !strcmp(out, mine),
	      "fnmatch identical for %zu patterns x %zu names", np, nn);
	for (i = NPAT; i < np; i++)
		free((char *)pats[i]);
	for (j = NNAME; j < nn; j++)
		free((char *)nms[j]);
	free(out);
	free(err);
	free(mine);
}

/* 2^e, exactly (the Makefile links no libm) */
static double pow2(int e)
{
	double v = 1;

	for (; e > 0; e--)
		v *= 2;
	for (; e < 0; e++)
		v /= 2;
	return v;
}

static void test_format_size(void)
{
	static const double fixed[] = {
		0, -0.0, 0.5, 1.5, 2.5, 99, 99.5, 100, 10239, 10239.5, 10240,
		10495.9, 10496, 10547, 102399, 102400, 102348.8, 1048575,
		10485759, 10485760, 104857600, 1e12, 1e15, 1.1258999068426240e15,
		1e18, 1.8446744073709552e19, 5.5340232221128655e19, 1e30,
		1024 * 10.25, 1024 * 10.35, 1024 * 99.95, 1024 * 1024 * 99.95,
	};
	char py[512], *out = NULL, *err = NULL, *mine = NULL, buf[128];
	char *argv[] = { py, "-c", NULL, tpath("sizes.txt"), NULL };
	unsigned int seed = 99;
	size_t i, len, n = 0;
	int sign;
	FILE *f, *m;

	argv[2] =
	"import sys, tracemalloc\n"
	"for line in open(sys.argv[1]):\n"
	"    v = float.fromhex(line.split()[0])\n"
	"    for sign in (False, True):\n"
	"        print(tracemalloc._format_size(v, sign))\n"
	"        print(tracemalloc._format_size(-v, sign))\n";
	f = fopen(tpath("sizes.txt"), "w");
	m = open_memstream(&mine, &len);
	for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]) + 2000; i++) {
		double v;

		if (i < sizeof(fixed) / sizeof(fixed[0])) {
			v = fixed[i];
		} else {
			/* random magnitudes, and halves at every scale */
			v = (double)rand_r(&seed) * pow2(rand_r(&seed) % 70 - 20);
			if (i % 3 == 0)
				v = (double)(rand_r(&seed) % 200000) / 2 *
				    pow2(10 * (rand_r(&seed) % 5));
		}
		fprintf(f, "%a\n", v);
		for (sign = 0; sign < 2; sign++) {
			report__format_size(buf, sizeof(buf), v, sign);
			fprintf(m, "%s\n", buf);
			report__format_size(buf, sizeof(buf), -v, sign);
			fprintf(m, "%s\n", buf);
		}
		n++;
	}
	fclose(f);
	fclose(m);
	CHECK(py_path("system", py, sizeof(py)), "python");
	CHECK(run_capture(argv, &out, NULL, &err) == 0, "format script: %s",
	      err ? err : "");
	if (out && mine && strcmp(out, mine))
		show_diff("_format_size", out, mine);
	CHECK(out && mine && !strcmp(out, mine), "_format_size of %zu values", n);
	free(out);
	free(err);
	free(mine);
}

/* ---------------- the command line ---------------- */

/* report__main(ARGS) in a child, its stdout, stderr and exit status. */
static int run_main(char *const args[], char **out, char **err)
{
	int po[2], pe[2], status, argc = 0;
	pid_t pid;

	while (args[argc])
		argc++;
	if (pipe(po) || pipe(pe))
		return -1;
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -1;
	if (!pid) {
		dup2(po[1], 1);
		dup2(pe[1], 2);
		close(po[0]);
		close(pe[0]);
		exit(report__main(argc, (char **)args));
	}
	close(po[1]);
	close(pe[1]);
	*out = slurp_fd(po[0], NULL);
	*err = slurp_fd(pe[0], NULL);
	close(po[0]);
	close(pe[0]);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static bool one_line(const char *s)
{
	size_t len = strlen(s);

	return len > 1 && s[len - 1] == '\n' && !memchr(s, '\n', len - 1);
}

static void test_cli(void)
{
	static const struct tfilter f1[] = {
		{ .inclusive = true, .pattern = "*.py", .lineno = -1, .domain = -1,
		  .all_frames = true },
		{ .inclusive = false, .pattern = "a.py", .lineno = 10,
		  .domain = -1, .all_frames = true },
		{ .domain_only = true, .inclusive = false, .domain = 1 },
	};
	struct cfg cfgs[4];
	char *out, *err, *ours, *p;
	char *file = strdup(tpath("new.pytm")), *old = strdup(tpath("old.pytm"));
	char *stock = strdup(tpath("stock-3.11.7.pickle"));
	char *bad = strdup(tpath("bad.pickle")), *missing = strdup(tpath("nope"));
	char longpat[REPORT_PATTERN_MAX + 10];
	size_t i;
	int st;

	memset(longpat, '*', sizeof(longpat) - 1);
	longpat[sizeof(longpat) - 1] = '\0';
	/* the same text as Python, through the command line */
	cfgs[0] = (struct cfg){ .file = stock, .key = REPORT_KEY_LINENO, .top = 10 };
	cfgs[1] = (struct cfg){ .file = file, .old = old,
				.key = REPORT_KEY_FILENAME, .cumulative = true,
				.top = 5 };
	cfgs[2] = (struct cfg){ .file = file, .key = REPORT_KEY_TRACEBACK,
				.top = 0, .filters = f1, .nfilters = 3 };
	{
		char *a0[] = { "report", stock, NULL };
		char *a1[] = { "report", file, "--compare", old, "--key",
			       "filename", "--cumulative", "--top", "5", NULL };
		char *a2[] = { "report", "--include", "*.py", "--key",
			       "traceback", file, "--exclude", "a.py:10",
			       "--top", "0", "--exclude-domain", "1",
			       "--all-frames", NULL };
		char **as[] = { a0, a1, a2 };

		compare_all("system", cfgs, 3, "cli reference");
		for (i = 0; i < 3; i++) {
			st = run_main(as[i], &out, &err);
			ours = our_report(&cfgs[i]);
			CHECK(st == 0 && out && ours && !strcmp(out, ours) &&
			      err && !*err, "cli %zu: status %d, stderr %s", i,
			      st, err ? err : "");
			free(ours);
			free(out);
			free(err);
		}
	}
	/* runtime errors: 1 and one line naming the file */
	write_text(bad, "\x80\x05garbage");
	{
		char *a[][4] = {
			{ "report", missing, NULL },
			{ "report", bad, NULL },
			{ "report", file, "--compare", bad },
			{ "report", tmpdir, NULL },
		};

		for (i = 0; i < 4; i++) {
			char *args[6] = { a[i][0], a[i][1], a[i][2], a[i][3], NULL };

			st = run_main(args, &out, &err);
			p = i == 2 ? bad : a[i][1];
			CHECK(st == 1 && out && !*out && err && one_line(err) &&
			      !strncmp(err, "pytm-bpf report: ", 17) &&
			      strstr(err, p), "runtime error %zu: %d \"%s\"", i,
			      st, err ? err : "");
			free(out);
			free(err);
		}
	}
	/* usage errors: 2 */
	{
		char *a[][6] = {
			{ "report", NULL },
			{ "report", file, file, NULL },
			{ "report", file, "--key", "bogus", NULL },
			{ "report", file, "--top", "-1", NULL },
			{ "report", file, "--top", "x", NULL },
			{ "report", file, "--top", "99999999999", NULL },
			{ "report", file, "--cumulative", "--key", "traceback", NULL },
			{ "report", file, "--domain", "-1", NULL },
			{ "report", file, "--domain", "4294967296", NULL },
			{ "report", file, "--include", longpat, NULL },
			{ "report", file, "--include", "a:99999999999", NULL },
			{ "report", file, "--bogus", NULL },
		};

		for (i = 0; i < sizeof(a) / sizeof(a[0]); i++) {
			st = run_main(a[i], &out, &err);
			CHECK(st == 2 && out && !*out && err &&
			      !strncmp(err, "pytm-bpf report: ", 17),
			      "usage error %zu: %d \"%s\"", i, st, err ? err : "");
			free(out);
			free(err);
		}
	}
	/* --help works and names the command */
	{
		char *a[] = { "report", "--help", NULL };

		st = run_main(a, &out, &err);
		CHECK(st == 0 && out && strstr(out, "pytm-bpf report") &&
		      strstr(out, "--compare"), "help");
		free(out);
		free(err);
	}
	free(file);
	free(old);
	free(stock);
	free(bad);
	free(missing);
}

/* Escaping for terminals: only when asked, and then nothing raw. */
static void test_escape(void)
{
	struct snapshot *s = snapshot__new(1);
	struct pytm_frame_info fr = { .lineno = 1 };
	struct report_opts o = { .top = 10, .escape = true };
	char *buf = NULL;
	size_t len, i;
	FILE *f;

	fr.filename = snapshot__intern(s, "evil\x1b]0;title\x07\n\xff\xc2\x85-é.py");
	snapshot__add(s, 0, 10, snapshot__traceback(s, &fr, 1, 1));
	f = open_memstream(&buf, &len);
	CHECK(report__print_top(f, s, &o) == 0, "escaped report");
	fclose(f);
	for (i = 0; buf && i < len; i++)
		if ((unsigned char)buf[i] < 0x20 && buf[i] != '\n')
			break;
	CHECK(buf && i == len && strstr(buf, "evil\\x1b]0;title\\x07\\x0a\\xff"
					"\\xc2\\x85-é.py:1: size=10 B"),
	      "escaped: %s", buf ? buf : "");
	free(buf);
	o.escape = false;
	o.cumulative = true;
	o.key = REPORT_KEY_TRACEBACK;
	f = open_memstream(&buf, &len);
	CHECK(report__print_top(f, s, &o) == -EINVAL,
	      "cumulative traceback refused");
	fclose(f);
	free(buf);
	snapshot__free(s);
}

int main(void)
{
	char py[512];

	py_env();
	if (!make_tmpdir("report")) {
		CHECK(0, "mkdtemp");
		return unit_done("report");
	}
	for (size_t i = 0; i < PY_NVERSIONS; i++)
		CHECK(py_path(py_versions[i], py, sizeof(py)),
		      "required interpreter %s is missing (%s)", py_versions[i], py);
	CHECK(write_text(tpath("report.py"), report_py) == 0, "report.py");
	CHECK(report__parse_key("lineno") == REPORT_KEY_LINENO &&
	      report__parse_key("filename") == REPORT_KEY_FILENAME &&
	      report__parse_key("traceback") == REPORT_KEY_TRACEBACK &&
	      report__parse_key("Lineno") == -1 && report__parse_key(NULL) == -1,
	      "parse_key");
	test_format_size();
	test_fnmatch();
	test_handmade();
	test_random();
	test_stock();
	test_cli();
	test_escape();
	rm_tree(tmpdir);
	return unit_done("report");
}
