// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Snapshot model and pickle: the files we write load with
 * tracemalloc.Snapshot.load() in every interpreter 3.8-3.13 with the same
 * data; stock Snapshot.dump() files of 3.8, 3.11 and 3.13 load with ours with
 * the same data as Python sees; hostile and broken files are refused.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>
#include "unit.h"
#include "util.h"
#include "pyrun.h"
#include "snapshot.h"

/* ---- what Python sees: the canonical text both sides print ---- */

static const char canon_py[] =
"import sys, tracemalloc\n"
"s = tracemalloc.Snapshot.load(sys.argv[1])\n"
"assert type(s) is tracemalloc.Snapshot\n"
"assert type(s.traces) is tracemalloc._Traces\n"
"assert type(s.traces._traces) is list\n"
"w = sys.stdout.buffer.write\n"
"w(b'limit %d n %d\\n' % (s.traceback_limit, len(s.traces)))\n"
"for t in s.traces._traces:\n"
"    fr = t[2]\n"
"    total = t[3] if len(t) > 3 else len(fr)\n"
"    w(b'%d %d %d %d' % (t[0], t[1], len(fr), total))\n"
"    for fn, ln in fr:\n"
"        h = fn.encode('utf-8', 'surrogatepass').hex()\n"
"        w(b' %s:%d' % (h.encode(), ln))\n"
"    w(b'\\n')\n"
"if len(s.traces):\n"
"    assert len(s.traces[0].traceback) == len(s.traces._traces[0][2])\n"
"s.statistics('traceback')\n"
"s.statistics('lineno', cumulative=True)\n"
"s.filter_traces([])\n"
"w(b'ok\\n')\n";

/* Length of a (generalized, surrogates allowed) UTF-8 sequence, 0 if bad. */
static size_t u8len(const unsigned char *s, size_t len)
{
	size_t n, i;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len < n)
		return 0;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return n;
}

/* Hex of the UTF-8 of the str Python gets for NAME (surrogateescape). */
static void put_py_hex(FILE *f, const char *name)
{
	const unsigned char *s = (const unsigned char *)name;
	size_t len = strlen(name), i = 0, n, k;

	while (i < len) {
		n = u8len(s + i, len - i);
		if (!n) {
			fprintf(f, "ed%02x%02x", 0xb0 | (s[i] >> 6),
				0x80 | (s[i] & 0x3f));
			i++;
			continue;
		}
		for (k = 0; k < n; k++)
			fprintf(f, "%02x", s[i + k]);
		i += n;
	}
}

/* The canonical text of S; total_nframe replaced by nframe if NO_TOTAL. */
static char *canon(const struct snapshot *s, bool no_total)
{
	const struct pytm_trace *t = snapshot__traces(s);
	size_t n = snapshot__count(s), i, len;
	unsigned int k;
	char *buf = NULL;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	fprintf(f, "limit %d n %zu\n", snapshot__traceback_limit(s), n);
	for (i = 0; i < n; i++) {
		const struct pytm_traceback *tb = t[i].tb;

		fprintf(f, "%u %llu %u %u", t[i].domain,
			(unsigned long long)t[i].size, tb->nframe,
			no_total ? tb->nframe : tb->total_nframe);
		for (k = 0; k < tb->nframe; k++) {
			fputc(' ', f);
			put_py_hex(f, tb->frames[k].filename);
			fprintf(f, ":%u", tb->frames[k].lineno);
		}
		fputc('\n', f);
	}
	fprintf(f, "ok\n");
	fclose(f);
	return buf;
}

/* Python VERSION's canonical text of the snapshot file PATH (NULL: failed). */
static char *py_canon(const char *version, const char *path)
{
	char py[512], *out = NULL, *err = NULL;
	char *argv[] = { py, tpath("canon.py"), (char *)path, NULL };
	int st;

	if (!py_path(version, py, sizeof(py))) {
		CHECK(0, "interpreter %s missing (%s)", version, py);
		return NULL;
	}
	st = run_capture(argv, &out, NULL, &err);
	if (st) {
		CHECK(st == 0, "%s canon %s: status %d: %s", version, path, st,
		      err ? err : "");
		free(out);
		out = NULL;
	}
	free(err);
	return out;
}

/* ---- a snapshot that exercises every encoding choice ---- */

static const char *const names[] = {
	"/usr/lib/python3.11/json/decoder.py",
	"/tmp/ünïcødé/файл.py",
	"/srv/日本語/モジュール.py",
	"/emoji/\xf0\x9f\x90\x8d.py",
	"<frozen importlib._bootstrap>",
	"<unknown>",
	"/bad/\xff\xfe-not-utf8\x80.py",	/* written with surrogateescape */
	"/surrogate/\xed\xb2\x80.py",		/* U+DC80, as pickle passes it */
	"",
	NULL,	/* a 300-byte name (BINUNICODE) goes here */
};

static const uint64_t sizes[] = {
	0, 1, 255, 256, 65535, 65536, 2147483647ULL, 2147483648ULL,
	4294967295ULL, 4294967296ULL, (1ULL << 53) + 1, 1ULL << 63,
	UINT64_MAX, 12345, 777,
};

static const unsigned int domains[] = { 0, 1, 2, 389047, UINT_MAX };

static const unsigned int linenos[] = {
	0, 1, 255, 256, 65535, 65536, 2147483647U, 2147483648U, UINT_MAX, 42,
};

static struct snapshot *build_big(size_t ntraces)
{
	struct snapshot *s = snapshot__new(100);
	const struct pytm_traceback *tbs[6];
	struct pytm_frame_info fr[120] = {};
	const char *in[10];
	char longname[301];
	size_t i;

	if (!s)
		return NULL;
	memset(longname, 'x', 300);
	memcpy(longname, "/long/", 6);
	longname[300] = '\0';
	for (i = 0; i < 10; i++)
		in[i] = snapshot__intern(s, names[i] ? names[i] : longname);
	for (i = 0; i < 120; i++) {
		fr[i].filename = in[(i * 7) % 10];
		fr[i].lineno = linenos[(i * 3) % 10];
	}
	tbs[0] = snapshot__traceback(s, fr, 1, 1);
	tbs[1] = snapshot__traceback(s, fr + 1, 2, 2);
	tbs[2] = snapshot__traceback(s, fr + 2, 3, 7);
	tbs[3] = snapshot__traceback(s, fr + 3, 4, 4);
	tbs[4] = snapshot__traceback(s, fr, 120, 500);
	tbs[5] = snapshot__traceback(s, fr + 5, 1, 3);
	for (i = 0; i < 6; i++)
		CHECK(tbs[i], "traceback %zu", i);
	for (i = 0; i < ntraces; i++) {
		int err = snapshot__add(s, domains[i % 5], sizes[i % 15],
					tbs[(i / 3) % 6]);

		if (err) {
			CHECK(!err, "add %zu: %d", i, err);
			break;
		}
	}
	return s;
}

static void test_api(void)
{
	struct snapshot *s = snapshot__new(7), *o = snapshot__new(1);
	const char *a, *a2, *b, *unk;
	const struct pytm_traceback *t1, *t2, *t3, *t0, *foreign;
	struct pytm_frame_info fr[2] = {}, stray = {};
	char copy[] = "a.py";

	CHECK(s && o, "snapshot__new");
	if (!s || !o)
		goto cleanup;
	snapshot__free(NULL);
	CHECK(snapshot__traceback_limit(s) == 7, "limit");
	a = snapshot__intern(s, "a.py");
	a2 = snapshot__intern(s, copy);
	b = snapshot__intern(s, "b.py");
	CHECK(a && a == a2 && a != copy && b && a != b, "interning");
	CHECK(!strcmp(a, "a.py"), "interned text");
	fr[0].filename = a;
	fr[0].lineno = 3;
	fr[1].filename = b;
	fr[1].lineno = 9;
	t1 = snapshot__traceback(s, fr, 2, 2);
	t2 = snapshot__traceback(s, fr, 2, 2);
	t3 = snapshot__traceback(s, fr, 2, 5);
	CHECK(t1 && t1 == t2 && t3 && t3 != t1, "traceback interning");
	CHECK(t1 && t1->frames != fr && t1->nframe == 2 &&
	      t1->frames[1].filename == b && t1->frames[1].lineno == 9,
	      "traceback copy");
	/* no frame at all: tracemalloc's ("<unknown>", 0) */
	t0 = snapshot__traceback(s, NULL, 0, 0);
	unk = snapshot__intern(s, "<unknown>");
	CHECK(t0 && t0->nframe == 1 && t0->total_nframe == 1 &&
	      t0->frames[0].filename == unk && t0->frames[0].lineno == 0,
	      "empty traceback");
	/* a filename that did not come from snapshot__intern is refused */
	stray.filename = copy;
	stray.lineno = 1;
	errno = 0;
	CHECK(!snapshot__traceback(s, &stray, 1, 1) && errno == EINVAL,
	      "stray filename");
	/* a traceback of another snapshot is refused */
	fr[0].filename = snapshot__intern(o, "a.py");
	foreign = snapshot__traceback(o, fr, 1, 1);
	CHECK(foreign && snapshot__add(s, 0, 1, foreign) == -EINVAL,
	      "foreign traceback");
	CHECK(snapshot__add(s, 0, 1, NULL) == -EINVAL, "NULL traceback");
	CHECK(snapshot__add(s, 5, UINT64_MAX, t1) == 0, "add");
	CHECK(snapshot__add(s, 6, 0, t0) == 0, "add");
	CHECK(snapshot__count(s) == 2 && snapshot__traces(s)[0].tb == t1 &&
	      snapshot__traces(s)[0].size == UINT64_MAX &&
	      snapshot__traces(s)[1].domain == 6, "traces");
	CHECK(snapshot__count(NULL) == 0 && !snapshot__traces(NULL),
	      "NULL snapshot");
	CHECK(snapshot__write(s, tpath("x"), 37) == -EINVAL, "bad layout");

cleanup:
	snapshot__free(s);
	snapshot__free(o);
}

/* Every interpreter loads what we write and sees the same traces. */
static void test_python_loads(void)
{
	struct snapshot *s = build_big(2600), *l = NULL;
	char *want39 = NULL, *want38 = NULL, *got;
	size_t i;

	if (!s)
		return;
	CHECK(snapshot__write(s, tpath("big39.pytm"), PYTM_PICKLE_39) == 0,
	      "write 39");
	CHECK(snapshot__write(s, tpath("big38.pytm"), PYTM_PICKLE_38) == 0,
	      "write 38");
	want39 = canon(s, false);
	want38 = canon(s, true);
	for (i = 0; i < PY_NVERSIONS; i++) {
		bool is38 = !strcmp(py_versions[i], "3.8.18");

		got = py_canon(py_versions[i],
			       tpath(is38 ? "big38.pytm" : "big39.pytm"));
		CHECK(got && !strcmp(got, is38 ? want38 : want39),
		      "Python %s sees other data in our snapshot", py_versions[i]);
		free(got);
	}
	/* our own reader gives back the same (as Python decodes names) */
	CHECK(snapshot__load(tpath("big39.pytm"), &l) == 0,
	      "load ours: %s", error__last());
	if (l) {
		got = canon(l, false);
		CHECK(got && !strcmp(got, want39), "round trip 39");
		free(got);
		snapshot__free(l);
		l = NULL;
	}
	CHECK(snapshot__load(tpath("big38.pytm"), &l) == 0,
	      "load ours 38: %s", error__last());
	if (l) {
		got = canon(l, true);
		CHECK(got && !strcmp(got, want38), "round trip 38");
		free(got);
		snapshot__free(l);
	}
	/* an empty snapshot and a one-trace one are valid pickles too */
	snapshot__free(s);
	s = build_big(0);
	if (s) {
		CHECK(snapshot__write(s, tpath("empty.pytm"), PYTM_PICKLE_39) == 0,
		      "write empty");
		want39 = (free(want39), canon(s, false));
		got = py_canon("3.13.0", tpath("empty.pytm"));
		CHECK(got && want39 && !strcmp(got, want39), "empty snapshot");
		free(got);
	}
	snapshot__free(s);
	s = build_big(1);
	if (s) {
		CHECK(snapshot__write(s, tpath("one.pytm"), PYTM_PICKLE_38) == 0,
		      "write one");
		free(want38);
		want38 = canon(s, true);
		got = py_canon("3.8.18", tpath("one.pytm"));
		CHECK(got && want38 && !strcmp(got, want38), "one-trace snapshot");
		free(got);
	}
	snapshot__free(s);
	free(want39);
	free(want38);
}

/* Repeated tracebacks cost a BINGET; loading them costs no re-walk. */
static void test_memo(void)
{
	struct snapshot *s = snapshot__new(100000), *l = NULL;
	struct pytm_frame_info *fr = calloc(100000, sizeof(*fr));
	const struct pytm_traceback *tb;
	struct timespec a, b;
	struct stat st;
	size_t i;
	double secs;

	if (!s || !fr) {
		CHECK(0, "alloc");
		goto cleanup;
	}
	fr[0].filename = snapshot__intern(s, "/deep/recursion.py");
	for (i = 0; i < 100000; i++) {
		fr[i].filename = fr[0].filename;
		fr[i].lineno = i % 50;
	}
	tb = snapshot__traceback(s, fr, 100000, 100000);
	for (i = 0; i < 20000 && tb; i++)
		snapshot__add(s, 0, i, tb);
	CHECK(snapshot__write(s, tpath("deep.pytm"), PYTM_PICKLE_39) == 0,
	      "write deep");
	CHECK(stat(tpath("deep.pytm"), &st) == 0 && st.st_size < 600000,
	      "memoized file is small: %lld bytes", (long long)st.st_size);
	clock_gettime(CLOCK_MONOTONIC, &a);
	CHECK(snapshot__load(tpath("deep.pytm"), &l) == 0,
	      "load deep: %s", error__last());
	clock_gettime(CLOCK_MONOTONIC, &b);
	secs = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
	CHECK(secs < 2, "loading 20000 x 100000 shared frames took %.2f s", secs);
	CHECK(l && snapshot__count(l) == 20000 &&
	      snapshot__traces(l)[0].tb == snapshot__traces(l)[19999].tb &&
	      snapshot__traces(l)[0].tb->nframe == 100000,
	      "deep snapshot content");

cleanup:
	snapshot__free(l);
	snapshot__free(s);
	free(fr);
}

static int count_dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* Temporary file + rename: a failed write leaves nothing behind. */
static void test_atomic(void)
{
	struct snapshot *s = build_big(10);
	struct stat st;
	mode_t old;

	mkdir(tpath("atomic"), 0755);
	CHECK(snapshot__write(s, tpath("nodir/x.pytm"), PYTM_PICKLE_39) == -ENOENT,
	      "write into a missing directory");
	CHECK(write_text(tpath("atomic/s.pytm"), "old content") == 0, "setup");
	old = umask(027);
	CHECK(snapshot__write(s, tpath("atomic/s.pytm"), PYTM_PICKLE_39) == 0,
	      "overwrite");
	umask(old);
	CHECK(count_dir_entries(tpath("atomic")) == 1, "no temporary left");
	CHECK(stat(tpath("atomic/s.pytm"), &st) == 0 &&
	      (st.st_mode & 0777) == 0640, "mode follows umask: %o",
	      st.st_mode & 0777);
	snapshot__free(s);
}

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

/* Stock Snapshot.dump() of VERSION under -X tracemalloc=5 into NAME. */
static bool stock_dump(const char *version, const char *name)
{
	char py[512], *out = NULL, *err = NULL;
	char *argv[] = { py, "-X", "tracemalloc=5", tpath("workload.py"),
			 tpath(name), tpath("pkg_ü"), NULL };
	int st;

	if (!py_path(version, py, sizeof(py))) {
		CHECK(0, "interpreter %s missing (%s)", version, py);
		return false;
	}
	st = run_capture(argv, &out, NULL, &err);
	CHECK(st == 0, "%s workload: %d %s", version, st, err ? err : "");
	free(out);
	free(err);
	return st == 0;
}

static char *py_pickle(const char *code, size_t *len);

static void test_stock(void)
{
	static const char *const vers[] = { "3.8.18", "3.11.7", "3.13.0",
					    "system" };
	char name[64];
	struct snapshot *l;
	size_t i, k;

	mkdir(tpath("pkg_ü"), 0755);
	CHECK(write_text(tpath("workload.py"), workload_py) == 0 &&
	      write_text(tpath("pkg_ü/helpér.py"), helper_py) == 0, "setup");
	for (i = 0; i < sizeof(vers) / sizeof(vers[0]); i++) {
		snprintf(name, sizeof(name), "stock-%s.pickle", vers[i]);
		if (!stock_dump(vers[i], name))
			continue;
		for (k = 0; k < 2; k++) {
			char file[600], *want, *got;

			snprintf(file, sizeof(file), "%s%s", tpath(name),
				 k ? ".old" : "");
			want = py_canon(vers[i], file);
			l = NULL;
			CHECK(snapshot__load(file, &l) == 0,
			      "load stock %s dump: %s", vers[i], error__last());
			got = l ? canon(l, !strcmp(vers[i], "3.8.18")) : NULL;
			CHECK(want && got && !strcmp(want, got),
			      "stock %s dump: we see other data than Python",
			      vers[i]);
			CHECK(l && snapshot__count(l) > 1000 &&
			      snapshot__traceback_limit(l) == 5,
			      "stock %s dump: %zu traces", vers[i],
			      snapshot__count(l));
			free(want);
			free(got);
			snapshot__free(l);
		}
	}
	/* the same, re-dumped by the pure-Python pickler and at protocol 4 */
	for (i = 0; i < 2; i++) {
		char code[1024], *want, *got;
		size_t len;

		snprintf(code, sizeof(code),
			 "s = tracemalloc.Snapshot.load('%s')\n%s",
			 tpath("stock-system.pickle"),
			 i ? "pickle.dump(s, f, 4)" : "pickle._Pickler(f, 5).dump(s)");
		free(py_pickle(code, &len));
		want = py_canon("system", tpath("gen.pickle"));
		l = NULL;
		CHECK(snapshot__load(tpath("gen.pickle"), &l) == 0,
		      "load re-dump %zu: %s", i, error__last());
		got = l ? canon(l, false) : NULL;
		CHECK(want && got && !strcmp(want, got), "re-dump %zu differs", i);
		free(want);
		free(got);
		snapshot__free(l);
	}
}

/* ---- refusals ---- */

static int load_bytes(const void *p, size_t len, char *err, size_t errlen)
{
	struct snapshot *l = NULL;
	int ret;

	if (write_bytes(tpath("h.pickle"), p, len))
		return -999;
	error__clear();
	ret = snapshot__load(tpath("h.pickle"), &l);
	snprintf(err, errlen, "%s", ret ? error__last() : "");
	CHECK(ret ? !l : !!l, "out set iff success");
	snapshot__free(l);
	return ret;
}

/* Python 3.11 writes a pickle from CODE (a function of f, the file). */
static char *py_pickle(const char *code, size_t *len)
{
	char py[512], *out = NULL, *err = NULL, *data;
	char *argv[] = { py, "-c", NULL, tpath("gen.pickle"), NULL };
	char script[4096];
	int st;

	if (!py_path("system", py, sizeof(py)))
		return NULL;
	snprintf(script, sizeof(script),
		 "import sys, os, pickle, tracemalloc, collections\n"
		 "f = open(sys.argv[1], 'wb')\n%s\nf.close()\n", code);
	argv[2] = script;
	unlink(tpath("gen.pickle"));
	st = run_capture(argv, &out, NULL, &err);
	CHECK(st == 0, "generator: %s", err ? err : "");
	free(out);
	free(err);
	data = read_all(tpath("gen.pickle"), len);
	return st == 0 ? data : (free(data), NULL);
}

static void expect_refused(const char *what, const void *p, size_t len)
{
	char err[256] = "";
	int ret = load_bytes(p, len, err, sizeof(err));

	CHECK(ret < 0 && ret != -999 && err[0] && !strchr(err, '\n'),
	      "%s: not refused (%d, \"%s\")", what, ret, err);
}

static void expect_refused_py(const char *what, const char *code)
{
	size_t len = 0;
	char *p = py_pickle(code, &len);

	CHECK(p, "%s: could not generate", what);
	if (p)
		expect_refused(what, p, len);
	free(p);
}

static void test_hostile(void)
{
	struct snapshot *s = build_big(4);
	char *good = NULL, *big = NULL, *buf;
	size_t glen = 0, blen = 0, i, ok = 0, bad = 0;
	char err[256];
	unsigned int seed = 12345;
	int ret;

	/* every proper prefix of a valid file is refused */
	CHECK(snapshot__write(s, tpath("small.pytm"), PYTM_PICKLE_39) == 0,
	      "write small");
	good = read_all(tpath("small.pytm"), &glen);
	CHECK(good && glen > 50, "read small");
	for (i = 0; good && i < glen; i++) {
		ret = load_bytes(good, i, err, sizeof(err));
		if (ret >= 0 || !err[0]) {
			CHECK(0, "prefix of %zu/%zu bytes accepted", i, glen);
			break;
		}
	}
	CHECK(good && load_bytes(good, glen, err, sizeof(err)) == 0,
	      "whole small file: %s", err);
	/* a stock dump cut anywhere */
	big = read_all(tpath("stock-3.13.0.pickle"), &blen);
	CHECK(big && blen > 10000, "stock dump for truncation");
	for (i = 0; big && i < 200; i++) {
		size_t cut = (size_t)rand_r(&seed) % blen;

		if (load_bytes(big, cut, err, sizeof(err)) >= 0) {
			CHECK(0, "stock dump cut at %zu accepted", cut);
			break;
		}
	}
	/* data after STOP */
	if (good) {
		buf = malloc(glen + 1);
		memcpy(buf, good, glen);
		buf[glen] = '.';
		expect_refused("trailing data", buf, glen + 1);
		free(buf);
	}

	/* other classes, callables, other shapes */
	expect_refused_py("another class",
		"pickle.dump(collections.OrderedDict(a=1), f, 5)");
	expect_refused_py("another tracemalloc class",
		"pickle.dump(tracemalloc.Filter(True, 'x'), f, 5)");
	unlink(tpath("pwned"));
	{
		char code[1024];

		snprintf(code, sizeof(code),
			 "class Evil:\n"
			 "    def __reduce__(self):\n"
			 "        return (os.system, ('touch %s',))\n"
			 "pickle.dump(Evil(), f, 5)", tpath("pwned"));
		expect_refused_py("__reduce__ payload (os.system)", code);
		CHECK(access(tpath("pwned"), F_OK) != 0, "payload ran");
	}
	/* Snapshot([], 1) called through REDUCE */
	expect_refused_py("REDUCE on Snapshot",
		"f.write(b'\\x80\\x04\\x8c\\x0btracemalloc\\x8c\\x08Snapshot"
		"\\x93]K\\x01\\x86R.')\nf.flush()\n"
		"assert type(pickle.load(open(f.name, 'rb'))) is tracemalloc.Snapshot");
	expect_refused_py("GLOBAL opcode, protocol 2",
		"pickle.dump(tracemalloc.Snapshot([], 1), f, 2)");
	expect_refused_py("traces not a _Traces",
		"s = tracemalloc.Snapshot([], 1); s.traces = []\n"
		"pickle.dump(s, f, 5)");
	expect_refused_py("extra attribute",
		"s = tracemalloc.Snapshot([], 1); s.evil = 1\n"
		"pickle.dump(s, f, 5)");
	expect_refused_py("negative size",
		"tracemalloc.Snapshot([(0, -1, (('a', 1),), 1)], 1).dump(f.name)");
	expect_refused_py("size above 2^64",
		"tracemalloc.Snapshot([(0, 2**64, (('a', 1),), 1)], 1).dump(f.name)");
	expect_refused_py("domain above 2^32",
		"tracemalloc.Snapshot([(2**32, 1, (('a', 1),), 1)], 1).dump(f.name)");
	expect_refused_py("no frames",
		"tracemalloc.Snapshot([(0, 1, (), 0)], 1).dump(f.name)");
	expect_refused_py("bool lineno",
		"tracemalloc.Snapshot([(0, 1, (('a', True),), 1)], 1).dump(f.name)");
	expect_refused_py("bytes filename",
		"tracemalloc.Snapshot([(0, 1, ((b'a', 1),), 1)], 1).dump(f.name)");
	expect_refused_py("NUL in filename",
		"tracemalloc.Snapshot([(0, 1, (('a\\0b', 1),), 1)], 1).dump(f.name)");
	expect_refused_py("five-tuple trace",
		"tracemalloc.Snapshot([(0, 1, (('a', 1),), 1, 2)], 1).dump(f.name)");
	expect_refused("empty file", "", 0);
	expect_refused("not a pickle", "hello world\n", 12);

	/* random damage: never a crash, and the result is consistent */
	for (i = 0; good && i < 3000; i++) {
		size_t len = glen, k, nmut = 1 + rand_r(&seed) % 4;

		buf = malloc(glen + 8);
		memcpy(buf, good, glen);
		for (k = 0; k < nmut; k++) {
			size_t at = (size_t)rand_r(&seed) % len;

			switch (rand_r(&seed) % 3) {
			case 0:
				buf[at] ^= 1 << (rand_r(&seed) % 8);
				break;
			case 1:
				buf[at] = rand_r(&seed);
				break;
			default:
				memmove(buf + at, buf + at + 1, len - at - 1);
				len--;
				break;
			}
		}
		ret = load_bytes(buf, len, err, sizeof(err));
		if (ret == 0)
			ok++;
		else if (ret < 0 && err[0])
			bad++;
		free(buf);
	}
	CHECK(good == NULL || ok + bad == 3000, "fuzz: %zu ok + %zu refused",
	      ok, bad);
	free(good);
	free(big);
	snapshot__free(s);
}

int main(void)
{
	char py[512];

	py_env();
	if (!make_tmpdir("snapshot")) {
		CHECK(0, "mkdtemp");
		return unit_done("snapshot");
	}
	CHECK(write_text(tpath("canon.py"), canon_py) == 0, "canon.py");
	for (size_t i = 0; i < PY_NVERSIONS; i++)
		CHECK(py_path(py_versions[i], py, sizeof(py)),
		      "required interpreter %s is missing (%s)", py_versions[i], py);
	test_api();
	test_python_loads();
	test_memo();
	test_atomic();
	test_stock();
	test_hostile();
	rm_tree(tmpdir);
	return unit_done("snapshot");
}
