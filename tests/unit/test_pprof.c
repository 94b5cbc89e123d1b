// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * pprof heap profiles: what we write, `go tool pprof` (the reference
 * reader) reads back with the samples, labels, functions, files and lines
 * we built, sample by sample (-raw) and per function (-top), with its
 * label filters (-tagfocus); pprof's own parser (its profile package,
 * built from Go's sources) finds one sample per (traceback, domain,
 * process) in the file, which go tool pprof merges before it shows them.
 * Go is part of the test machine (golang-go): without it the test fails,
 * it does not skip.
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
#include "pprof.h"
#include "snapshot.h"

/* ---- go tool pprof ---- */

static char go_bin[512];

/* $GO, else go on $PATH. */
static bool go_find(void)
{
	const char *env = getenv("GO"), *path = getenv("PATH");
	char *dirs, *dir, *save = NULL;
	bool found = false;

	if (env && *env) {
		snprintf(go_bin, sizeof(go_bin), "%s", env);
		return access(go_bin, X_OK) == 0;
	}
	dirs = strdup(path && *path ? path : "/usr/local/bin:/usr/bin:/bin");
	if (!dirs)
		return false;
	for (dir = strtok_r(dirs, ":", &save); dir && !found;
	     dir = strtok_r(NULL, ":", &save)) {
		snprintf(go_bin, sizeof(go_bin), "%s/go", dir);
		found = access(go_bin, X_OK) == 0;
	}
	free(dirs);
	if (!found)
		snprintf(go_bin, sizeof(go_bin), "go");
	return found;
}

static bool have_go;

/* stdout of `go tool pprof ARGS... FILE` (NULL-terminated ARGS), or NULL: failed. */
static char *pprof_run(const char *file, const char *const *args)
{
	char *argv[16], *out = NULL, *err = NULL;
	int argc = 0, st;

	if (!have_go)
		return NULL;
	argv[argc++] = go_bin;
	argv[argc++] = "tool";
	argv[argc++] = "pprof";
	while (*args && argc < 14)
		argv[argc++] = (char *)*args++;
	argv[argc++] = (char *)file;
	argv[argc] = NULL;
	st = run_capture(argv, &out, NULL, &err);
	if (st || !out) {
		CHECK(st == 0 && out, "go tool pprof %s %s: status %d: %s",
		      argv[3], file, st, err ? err : "");
		free(out);
		out = NULL;
	}
	free(err);
	return out;
}

#define PPROF(file, ...) pprof_run(file, (const char *const []){ __VA_ARGS__, NULL })

/*
 * go tool pprof merges identical samples as it reads (its driver always
 * runs profile.Merge), so -raw cannot tell whether we wrote one sample per
 * (traceback, domain, process). The file as written, checked (CheckValid)
 * but not merged: pprof's own profile package, as Go ships it (vendored in
 * cmd), built into a reader of a few lines that prints what -raw prints.
 */
static const char reader_go[] =
"package main\n"
"\n"
"import (\n"
"\t\"fmt\"\n"
"\t\"os\"\n"
"\n"
"\t\"pprofraw/profile\"\n"
")\n"
"\n"
"func main() {\n"
"\tdata, err := os.ReadFile(os.Args[1])\n"
"\tif err == nil {\n"
"\t\tvar p *profile.Profile\n"
"\t\tif p, err = profile.ParseData(data); err == nil {\n"
"\t\t\tfmt.Print(p.String())\n"
"\t\t\treturn\n"
"\t\t}\n"
"\t}\n"
"\tfmt.Fprintln(os.Stderr, err)\n"
"\tos.Exit(1)\n"
"}\n";

static char reader_bin[600];

static bool build_reader(void)
{
	char *goroot = NULL, *err = NULL, src[1024], cwd[1024], *text;
	char *env_argv[] = { go_bin, "env", "GOROOT", NULL };
	char *build_argv[] = { go_bin, "build", "-o", reader_bin, ".", NULL };
	char from[1400], to[1400];
	const char *dir = tpath("reader");
	struct dirent *d;
	size_t len, n = 0;
	DIR *dp = NULL;
	bool ok = false;
	int st;

	snprintf(reader_bin, sizeof(reader_bin), "%s", tpath("rawdump"));
	if (run_capture(env_argv, &goroot, NULL, NULL) || !goroot) {
		CHECK(0, "go env GOROOT");
		goto cleanup;
	}
	goroot[strcspn(goroot, "\n")] = '\0';
	snprintf(src, sizeof(src), "%s/src/cmd/vendor/github.com/google/pprof/profile",
		 goroot);
	snprintf(to, sizeof(to), "%s/profile", dir);
	if (mkdir(dir, 0755) || mkdir(to, 0755)) {
		CHECK(0, "mkdir %s", to);
		goto cleanup;
	}
	dp = opendir(src);
	if (!dp) {
		CHECK(0, "pprof's profile package is not at %s", src);
		goto cleanup;
	}
	while ((d = readdir(dp))) {
		len = strlen(d->d_name);
		if (len < 4 || strcmp(d->d_name + len - 3, ".go") ||
		    strstr(d->d_name, "_test.go"))
			continue;
		snprintf(from, sizeof(from), "%s/%s", src, d->d_name);
		snprintf(to, sizeof(to), "%s/profile/%s", dir, d->d_name);
		text = read_all(from, &len);
		st = text ? write_bytes(to, text, len) : -1;
		free(text);
		if (st) {
			CHECK(0, "copy %s", from);
			goto cleanup;
		}
		n++;
	}
	snprintf(to, sizeof(to), "%s/go.mod", dir);
	st = write_text(to, "module pprofraw\n\ngo 1.17\n");
	snprintf(to, sizeof(to), "%s/main.go", dir);
	if (!n || st || write_text(to, reader_go)) {
		CHECK(0, "reader sources in %s", dir);
		goto cleanup;
	}
	/* go build works in the module of the current directory */
	if (!getcwd(cwd, sizeof(cwd)) || chdir(dir)) {
		CHECK(0, "chdir %s", dir);
		goto cleanup;
	}
	st = run_capture(build_argv, NULL, NULL, &err);
	if (chdir(cwd))
		CHECK(0, "chdir %s", cwd);
	CHECK(st == 0, "go build of the reader: status %d: %s", st, err ? err : "");
	ok = st == 0;
cleanup:
	if (dp)
		closedir(dp);
	free(goroot);
	free(err);
	return ok;
}

static bool have_reader;

/* The file as pprof's profile package reads it, unmerged; NULL: failed. */
static char *read_exact(const char *file)
{
	char *argv[] = { reader_bin, (char *)file, NULL }, *out = NULL, *err = NULL;
	int st;

	if (!have_reader)
		return NULL;
	st = run_capture(argv, &out, NULL, &err);
	if (st || !out) {
		CHECK(st == 0 && out, "reader %s: status %d: %s", file, st,
		      err ? err : "");
		free(out);
		out = NULL;
	}
	free(err);
	return out;
}

/* ---- sorted lines, to compare sample sets ---- */

struct lines {
	char **v;
	size_t n, cap;
};

static void lines__add(struct lines *l, const char *s)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		if (!l->v)
			abort();
	}
	l->v[l->n] = strdup(s);
	if (!l->v[l->n])
		abort();
	l->n++;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The lines sorted, one per line, in a malloc'ed string; L is emptied. */
static char *lines__join(struct lines *l, const char *sep)
{
	size_t len = 1, i;
	char *s;

	if (l->n)
		qsort(l->v, l->n, sizeof(*l->v), cmp_str);
	for (i = 0; i < l->n; i++)
		len += strlen(l->v[i]) + strlen(sep);
	s = malloc(len);
	if (!s)
		abort();
	s[0] = '\0';
	for (i = 0; i < l->n; i++) {
		strcat(s, l->v[i]);
		if (i + 1 < l->n)
			strcat(s, sep);
		free(l->v[i]);
	}
	free(l->v);
	memset(l, 0, sizeof(*l));
	return s;
}

/*
 * The samples of `pprof -raw` output as sorted lines
 *	LABELS | VALUES | FRAME;FRAME...
 * labels sorted, frames "name file:line s=start" leaf first.
 */
#define MAX_LOC 4096

static char *raw_canon(const char *raw)
{
	char *text = strdup(raw), *line, *save = NULL, *locs[MAX_LOC] = {};
	char cur[16384] = "", vals[512] = "", *p, *v, *end;
	struct lines labels = {}, out = {};
	enum { HEAD, TYPES, SAMPLES, LOCATIONS, MAPPINGS } sect = HEAD;
	unsigned int id;
	size_t i;
	int pos;

	if (!text)
		abort();
	/* Locations first: samples refer to them. */
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (!strcmp(line, "Locations"))
			sect = LOCATIONS;
		else if (!strcmp(line, "Mappings"))
			sect = MAPPINGS;
		else if (sect == LOCATIONS &&
			 sscanf(line, " %u: %*s M=%*u %n", &id, &pos) == 1 &&
			 id < MAX_LOC && !locs[id]) {
			locs[id] = strdup(line + pos);
			/* No system name: -raw shows it as "()" */
			p = locs[id] + strlen(locs[id]);
			if (p - locs[id] >= 2 && !strcmp(p - 2, "()"))
				p[-2] = '\0';
		}
	}
	free(text);
	text = strdup(raw);
	if (!text)
		abort();
	sect = HEAD;
	for (line = strtok_r(text, "\n", &save);; line = strtok_r(NULL, "\n", &save)) {
		/* labels are indented by 16, sample values by less */
		bool label = line && !strncmp(line, "                ", 16) &&
			     line[16] != ' ';
		bool sample = line && sect == SAMPLES && !label && strchr(line, ':') &&
			      line[0] == ' ';

		/* A sample ends at the next one, or at the end of the section. */
		if (cur[0] && !label) {
			char *lab = lines__join(&labels, " ");
			char buf[20000];

			snprintf(buf, sizeof(buf), "%s | %s | %s", lab, vals, cur);
			lines__add(&out, buf);
			free(lab);
			cur[0] = '\0';
		}
		if (!line)
			break;
		if (!strcmp(line, "Samples:")) {
			sect = TYPES;
		} else if (sect == TYPES) {
			sect = SAMPLES;
		} else if (!strcmp(line, "Locations")) {
			sect = LOCATIONS;
		} else if (sample) {
			p = strchr(line, ':');
			*p++ = '\0';
			/* values: collapse the padding */
			vals[0] = '\0';
			for (v = strtok_r(line, " ", &end); v; v = strtok_r(NULL, " ", &end)) {
				if (vals[0])
					strcat(vals, " ");
				strncat(vals, v, sizeof(vals) - strlen(vals) - 2);
			}
			snprintf(cur, sizeof(cur), "%s", "");
			for (v = strtok_r(p, " ", &end); v; v = strtok_r(NULL, " ", &end)) {
				id = strtoul(v, NULL, 10);
				if (cur[0])
					strncat(cur, ";", sizeof(cur) - strlen(cur) - 1);
				strncat(cur, id < MAX_LOC && locs[id] ? locs[id] : "?",
					sizeof(cur) - strlen(cur) - 1);
			}
			if (!cur[0])
				strcpy(cur, "(no frame)");
		} else if (label && sect == SAMPLES && cur[0]) {
			for (v = strtok_r(line, " ", &end); v; v = strtok_r(NULL, " ", &end))
				lines__add(&labels, v);
		}
	}
	free(text);
	for (i = 0; i < MAX_LOC; i++)
		free(locs[i]);
	return lines__join(&out, "\n");
}

/* Locations of -raw text RAW, as "name file:line s=N": how many, 0 if one repeats. */
static size_t distinct_locations(const char *raw)
{
	char *text = strdup(raw), *line, *save = NULL;
	struct lines l = {};
	bool in = false, dup = false;
	size_t n, i;
	int pos;

	if (!text)
		abort();
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (!strcmp(line, "Locations") || !strcmp(line, "Mappings")) {
			in = line[0] == 'L';
		} else if (in) {
			pos = 0;
			sscanf(line, " %*u: %*s M=%*u %n", &pos);
			if (pos)
				lines__add(&l, line + pos);
		}
	}
	free(text);
	n = l.n;
	qsort(l.v, l.n, sizeof(*l.v), cmp_str);
	for (i = 1; i < l.n; i++)
		dup |= !strcmp(l.v[i - 1], l.v[i]);
	free(lines__join(&l, ""));
	return dup ? 0 : n;
}

/* The first line of TEXT that starts with PREFIX, or NULL. */
static const char *find_line(const char *text, const char *prefix)
{
	const char *p = text;
	size_t n = strlen(prefix);

	while (p && *p) {
		if (!strncmp(p, prefix, n))
			return p;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return NULL;
}

/* A number as -top -unit=B shows it ("1234B", or "0"). */
static long long top_num(const char **p)
{
	char *end;
	long long v;

	while (**p == ' ')
		(*p)++;
	v = strtoll(*p, &end, 10);
	*p = end;
	while (**p && **p != ' ')
		(*p)++;
	return v;
}

static void top_skip(const char **p)
{
	while (**p == ' ')
		(*p)++;
	while (**p && **p != ' ')
		(*p)++;
}

/* flat and cum of function NAME in `-top -unit=B` output; false: no row. */
static bool top_row(const char *top, const char *name, long long *flat, long long *cum)
{
	const char *p = strstr(top, "      flat  flat%"), *q, *eol;

	while (p && (p = strchr(p, '\n'))) {
		p++;
		eol = strchrnul(p, '\n');
		q = p;
		*flat = top_num(&q);
		top_skip(&q);	/* flat% */
		top_skip(&q);	/* sum% */
		*cum = top_num(&q);
		top_skip(&q);	/* cum% */
		while (*q == ' ')
			q++;
		if ((size_t)(eol - q) == strlen(name) && !strncmp(q, name, eol - q))
			return true;
	}
	return false;
}

/* The "of NB total" of -top -unit=B: all samples, filters aside; -1 if missing. */
static long long top_total(const char *top)
{
	const char *p = top ? strstr(top, "Showing nodes accounting for ") : NULL;

	p = p ? strstr(p, "% of ") : NULL;
	return p ? strtoll(p + 5, NULL, 10) : -1;
}

/* "Showing nodes accounting for NB": what a filter kept; -1 if missing. */
static long long top_shown(const char *top)
{
	const char *p = top ? strstr(top, "Showing nodes accounting for ") : NULL;

	return p ? strtoll(p + 29, NULL, 10) : -1;
}

/* ---- the profile we build: 2 processes, one sampled, every kind of frame ---- */

struct fspec {
	const char *file, *name;	/* name NULL: unknown */
	unsigned int line, first;
	const char *shown;		/* "name file:line s=first" as pprof has it */
};

enum { F_LEAF, F_LEAF2, F_MID, F_MAIN, F_LIST, F_NONAME, F_BAD, F_N };

static const struct fspec F[F_N] = {
	[F_LEAF] = { "/app/mod.py", "Mod.leaf", 12, 10, "Mod.leaf /app/mod.py:12 s=10" },
	/* another line of the same function: another location, one function */
	[F_LEAF2] = { "/app/mod.py", "Mod.leaf", 13, 10, "Mod.leaf /app/mod.py:13 s=10" },
	[F_MID] = { "/app/mod.py", "Mod.mid.<locals>.inner", 30, 28,
		    "Mod.mid.<locals>.inner /app/mod.py:30 s=28" },
	[F_MAIN] = { "/app/main.py", "<module>", 5, 1, "<module> /app/main.py:5 s=1" },
	[F_LIST] = { "/app/main.py", "<listcomp>", 9, 9, "<listcomp> /app/main.py:9 s=9" },
	[F_NONAME] = { "/app/old.py", NULL, 7, 0, "<unknown> /app/old.py:7 s=0" },
	/* not UTF-8, and a surrogate as surrogateescape leaves it */
	[F_BAD] = { "/bad/\xff\xed\xb2\x80.py", "bad", 3, 2,
		    "bad /bad/\\xff\\xed\\xb2\\x80.py:3 s=2" },
};

#define UNKNOWN_SHOWN "<unknown> <unknown>:0 s=0"

struct tbspec {
	unsigned int n, total;
	int f[4];
};

enum { T_LMM, T_MM, T_CUT, T_NONE, T_LIST, T_BAD, T_N };

static const struct tbspec TB[T_N] = {
	[T_LMM] = { 3, 3, { F_LEAF, F_MID, F_MAIN } },
	[T_MM] = { 2, 2, { F_MID, F_MAIN } },
	[T_CUT] = { 2, 9, { F_NONAME, F_MAIN } },	/* cut at the limit */
	[T_NONE] = { 0, 0, {} },			/* ("<unknown>", 0) */
	[T_LIST] = { 2, 2, { F_LEAF2, F_LIST } },
	[T_BAD] = { 1, 1, { F_BAD } },
};

struct trspec {
	int proc;
	bool allocs;
	unsigned int domain;
	uint64_t size, count;
	int tb;
};

static const struct trspec TR[] = {
	/* process 0 (pid 100, in a container, sampled): live */
	{ 0, false, 0, 100, 1, T_LMM },
	{ 0, false, 0, 150, 1, T_LMM },		/* same sample */
	{ 0, false, 0, 50, 1, T_LMM },
	{ 0, false, 5, 64, 1, T_LMM },		/* another domain: apart */
	{ 0, false, 0, 1000, 1, T_MM },
	{ 0, false, 0, 7, 1, T_CUT },
	{ 0, false, 0, 11, 1, T_NONE },
	{ 0, false, 0, 3000, 3, T_LIST },	/* an estimate: 3 blocks */
	/* process 0: allocations since attach */
	{ 0, true, 0, 5000, 50, T_LMM },	/* meets its live sample */
	{ 0, true, 0, 800, 8, T_MM },
	{ 0, true, 0, 200, 2, T_MM },
	{ 0, true, 7, 42, 2, T_BAD },		/* freed since: alloc only */
	/* process 1 (pid 200, no container, exact): live only */
	{ 1, false, 0, 256, 1, T_LMM },		/* same code as pid 100 */
	{ 1, false, 0, 9, 1, T_BAD },
	{ 1, false, 0, 1, 1, T_NONE },
};
#define NTR (sizeof(TR) / sizeof(TR[0]))

static const int pids[2] = { 100, 200 };
static const char *const containers[2] = { "c0ffee", NULL };

static const struct pytm_traceback *make_tb(struct snapshot *s, int t)
{
	struct pytm_frame_info fr[4] = {};
	unsigned int k;

	for (k = 0; k < TB[t].n; k++) {
		const struct fspec *f = &F[TB[t].f[k]];

		fr[k].filename = snapshot__intern(s, f->file);
		fr[k].name = f->name ? snapshot__intern(s, f->name) : NULL;
		fr[k].lineno = f->line;
		fr[k].firstlineno = f->first;
	}
	return snapshot__traceback(s, TB[t].n ? fr : NULL, TB[t].n, TB[t].total);
}

/* snaps[proc][allocs] */
static bool build(struct snapshot *snaps[2][2])
{
	size_t i;
	int err;

	snaps[0][0] = snapshot__new(3);
	snaps[0][1] = snapshot__new(3);
	snaps[1][0] = snapshot__new(3);
	snaps[1][1] = NULL;
	if (!snaps[0][0] || !snaps[0][1] || !snaps[1][0])
		return false;
	for (i = 0; i < NTR; i++) {
		struct snapshot *s = snaps[TR[i].proc][TR[i].allocs];
		const struct pytm_traceback *tb = make_tb(s, TR[i].tb);

		if (!tb)
			return false;
		err = TR[i].count == 1 ? snapshot__add(s, TR[i].domain, TR[i].size, tb) :
			snapshot__add_estimate(s, TR[i].domain, TR[i].size, TR[i].count, tb);
		if (err)
			return false;
	}
	return true;
}

static const char *const value_names[4] = {
	"alloc_objects", "alloc_space", "inuse_objects", "inuse_space",
};

/* What we built, aggregated the plain way: per (process, domain, traceback). */
struct agg {
	int proc, tb;
	unsigned int domain;
	long long v[4];			/* value_names[] */
};

static size_t aggregate(struct agg *a)
{
	size_t n = 0, i, k;

	for (i = 0; i < NTR; i++) {
		for (k = 0; k < n; k++)
			if (a[k].proc == TR[i].proc && a[k].tb == TR[i].tb &&
			    a[k].domain == TR[i].domain)
				break;
		if (k == n) {
			memset(&a[n], 0, sizeof(a[n]));
			a[n].proc = TR[i].proc;
			a[n].tb = TR[i].tb;
			a[n].domain = TR[i].domain;
			n++;
		}
		a[k].v[TR[i].allocs ? 0 : 2] += TR[i].count;
		a[k].v[TR[i].allocs ? 1 : 3] += TR[i].size;
	}
	return n;
}

static void tb_shown(int t, char *buf, size_t len)
{
	unsigned int k;

	buf[0] = '\0';
	if (!TB[t].n)
		snprintf(buf, len, "%s", UNKNOWN_SHOWN);
	for (k = 0; k < TB[t].n; k++) {
		if (k)
			strncat(buf, ";", len - strlen(buf) - 1);
		strncat(buf, F[TB[t].f[k]].shown, len - strlen(buf) - 1);
	}
}

/* The sorted canonical lines raw_canon() should give. */
static char *expect_canon(const struct agg *a, size_t n)
{
	struct lines out = {}, labels = {};
	char buf[4096], stack[2048], tmp[64];
	size_t i;

	for (i = 0; i < n; i++) {
		char *lab;

		snprintf(tmp, sizeof(tmp), "pid:[%d]", pids[a[i].proc]);
		lines__add(&labels, tmp);
		if (containers[a[i].proc]) {
			snprintf(tmp, sizeof(tmp), "container:[%s]", containers[a[i].proc]);
			lines__add(&labels, tmp);
		}
		if (a[i].domain) {
			snprintf(tmp, sizeof(tmp), "domain:[%u]", a[i].domain);
			lines__add(&labels, tmp);
		}
		lab = lines__join(&labels, " ");
		tb_shown(a[i].tb, stack, sizeof(stack));
		snprintf(buf, sizeof(buf), "%s | %lld %lld %lld %lld | %s", lab,
			 a[i].v[0], a[i].v[1], a[i].v[2], a[i].v[3], stack);
		lines__add(&out, buf);
		free(lab);
	}
	return lines__join(&out, "\n");
}

/* The name pprof gives frame K of traceback T. */
static const char *fname(int t, unsigned int k)
{
	const char *n = TB[t].n ? F[TB[t].f[k]].name : NULL;

	return n ? n : "<unknown>";
}

/* -top's flat and cum of function NAME for value V, the plain way. */
static void expect_top(const struct agg *a, size_t n, int v, const char *name,
		       long long *flat, long long *cum)
{
	unsigned int k, nf;
	size_t i;

	*flat = *cum = 0;
	for (i = 0; i < n; i++) {
		nf = TB[a[i].tb].n ? TB[a[i].tb].n : 1;
		if (!strcmp(fname(a[i].tb, 0), name))
			*flat += a[i].v[v];
		for (k = 0; k < nf; k++)
			if (!strcmp(fname(a[i].tb, k), name)) {
				*cum += a[i].v[v];
				break;
			}
	}
}

static void test_profile(void)
{
	struct snapshot *snaps[2][2] = {};
	struct pprof_proc procs[2] = {};
	struct pprof_opts o = {
		.period = 524288,
		.time_nanos = 1700000000123456789LL,
		.duration_nanos = 60 * 1000000000LL,
	};
	static const char *const funcs[] = {
		"Mod.leaf", "Mod.mid.<locals>.inner", "<module>", "<listcomp>",
		"<unknown>", "bad",
	};
	char *raw = NULL, *got = NULL, *want = NULL, *exact = NULL, *top, arg[64];
	const char *path = tpath("two.pb.gz");
	struct agg a[NTR];
	long long total[2][4] = {}, flat = -1, cum = -1, wflat, wcum;
	size_t na, i, f;
	int p, v, err;

	CHECK(build(snaps), "build the snapshots");
	for (p = 0; p < 2; p++) {
		procs[p].live = snaps[p][0];
		procs[p].allocs = snaps[p][1];
		procs[p].pid = pids[p];
		procs[p].container = containers[p];
	}
	err = pprof__write(path, procs, 2, &o);
	CHECK(err == 0, "pprof__write: %d %s", err, error__last());
	na = aggregate(a);
	for (i = 0; i < na; i++)
		for (v = 0; v < 4; v++)
			total[a[i].proc][v] += a[i].v[v];

	/* Sample by sample. */
	raw = PPROF(path, "-raw");
	if (!raw)
		goto cleanup;
	CHECK(find_line(raw, "alloc_objects/count alloc_space/bytes inuse_objects/count "
			"inuse_space/bytes[dflt]\n"), "sample types: %s", raw);
	CHECK(find_line(raw, "PeriodType: space bytes\n"), "period type: %s", raw);
	CHECK(find_line(raw, "Period: 524288\n"), "period: %s", raw);
	CHECK(find_line(raw, "Time: 2023-11-14 22:13:20.123456789 +0000 UTC\n"),
	      "time: %s", raw);
	CHECK(find_line(raw, "Duration: 1m0s\n"), "duration: %s", raw);
	CHECK(find_line(raw, "1: 0x0/0x0/0x0 python  [FN][FL][LN]"), "mapping: %s", raw);
	got = raw_canon(raw);
	want = expect_canon(a, na);
	CHECK(!strcmp(got, want), "samples:\n--- pprof -raw\n%s\n--- built\n%s", got, want);
	/* As written: a sample per (traceback, domain, process), a location per frame. */
	exact = read_exact(path);
	if (exact) {
		free(got);
		got = raw_canon(exact);
		CHECK(!strcmp(got, want), "samples as written:\n--- file\n%s\n--- built\n%s",
		      got, want);
		CHECK(distinct_locations(exact) == F_N + 1, "%zu distinct locations, want %d: %s",
		      distinct_locations(exact), F_N + 1, exact);
	}

	/* Per function, for each value; totals. */
	for (v = 0; v < 4; v++) {
		snprintf(arg, sizeof(arg), "-sample_index=%s", value_names[v]);
		top = PPROF(path, "-top", "-unit=B", "-nodefraction=0", arg);
		if (!top)
			continue;
		CHECK(top_total(top) == total[0][v] + total[1][v], "%s total %lld: %s",
		      value_names[v], top_total(top), top);
		for (f = 0; f < sizeof(funcs) / sizeof(funcs[0]); f++) {
			expect_top(a, na, v, funcs[f], &wflat, &wcum);
			if (!wcum)
				continue;	/* -top leaves out what is 0 */
			CHECK(top_row(top, funcs[f], &flat, &cum) && flat == wflat &&
			      cum == wcum, "%s %s: flat %lld cum %lld, want %lld %lld:\n%s",
			      value_names[v], funcs[f], flat, cum, wflat, wcum, top);
		}
		free(top);
	}

	/* Labels as filters. */
	top = PPROF(path, "-top", "-unit=B", "-tagfocus=pid=200");
	CHECK(top && top_shown(top) == total[1][3], "pid 200: %lld, want %lld",
	      top_shown(top), total[1][3]);
	free(top);
	top = PPROF(path, "-top", "-unit=B", "-sample_index=alloc_space",
		    "-tagfocus=container=c0ffee");
	CHECK(top && top_shown(top) == total[0][1], "container: %lld, want %lld",
	      top_shown(top), total[0][1]);
	free(top);
	top = PPROF(path, "-top", "-unit=B", "-sample_index=alloc_space",
		    "-tagfocus=domain=7");
	CHECK(top && top_shown(top) == 42, "domain 7: %lld", top_shown(top));
	free(top);
	top = PPROF(path, "-tags");
	CHECK(top && strstr(top, "c0ffee") && strstr(top, " pid: Total") &&
	      strstr(top, " domain: Total"), "-tags: %s", top ? top : "");
	free(top);

	/* Go's /debug/pprof/allocs: the same, alloc_space first */
	o.alloc_default = true;
	err = pprof__write(path, procs, 2, &o);
	CHECK(err == 0, "pprof__write: %d %s", err, error__last());
	free(raw);
	raw = PPROF(path, "-raw");
	CHECK(raw && find_line(raw, "alloc_objects/count alloc_space/bytes[dflt] "
			       "inuse_objects/count inuse_space/bytes\n"),
	      "alloc_space default: %s", raw ? raw : "");

cleanup:
	free(raw);
	free(exact);
	free(got);
	free(want);
	for (p = 0; p < 2; p++) {
		snapshot__free(snaps[p][0]);
		snapshot__free(snaps[p][1]);
	}
}

/*
 * Exact mode, one process: two sample types, no pid label unless asked;
 * a 100-frame stack and a long name (lengths past one varint byte); a
 * size past int64 (pprof's values are int64: it stays at the top).
 */
static void test_exact(void)
{
	struct snapshot *s = snapshot__new(100);
	struct pytm_frame_info fr[100] = {};
	const struct pytm_traceback *deep, *one;
	struct pprof_opts o = {};
	struct pprof_proc p = { .pid = 42, .container = "" };
	char longname[301], *raw = NULL, *got = NULL, *exp = NULL;
	const char *path = tpath("exact.pb.gz");
	size_t len;
	int k, err;

	CHECK(s, "snapshot__new");
	if (!s)
		return;
	memset(longname, 'n', 300);
	longname[300] = '\0';
	for (k = 0; k < 100; k++) {
		fr[k].filename = snapshot__intern(s, "/deep.py");
		fr[k].name = snapshot__intern(s, k == 99 ? longname : "rec");
		fr[k].lineno = 1000 + k;
		fr[k].firstlineno = 999;
	}
	deep = snapshot__traceback(s, fr, 100, 100);
	one = snapshot__traceback(s, fr + 99, 1, 1);
	CHECK(deep && one, "tracebacks");
	if (!deep || !one)
		goto cleanup;
	CHECK(snapshot__add(s, 0, UINT64_MAX, one) == 0 &&
	      snapshot__add(s, 0, UINT64_MAX, one) == 0 &&
	      snapshot__add(s, 0, 10, deep) == 0, "add");
	p.live = s;
	err = pprof__write(path, &p, 1, &o);
	CHECK(err == 0, "pprof__write: %d %s", err, error__last());
	raw = PPROF(path, "-raw");
	if (!raw)
		goto cleanup;
	CHECK(find_line(raw, "inuse_objects/count inuse_space/bytes[dflt]\n"),
	      "exact mode: inuse only: %s", raw);
	CHECK(find_line(raw, "Period: 0\n") && !strstr(raw, "pid:"), "no pid: %s", raw);
	got = raw_canon(raw);
	exp = malloc(64 * 1024);
	if (!exp)
		abort();
	/* the deep stack, leaf first */
	len = sprintf(exp, " | 1 10 | ");
	for (k = 0; k < 100; k++)
		len += sprintf(exp + len, "%s%s /deep.py:%d s=999", k ? ";" : "",
			       k == 99 ? longname : "rec", 1000 + k);
	CHECK(strstr(got, exp), "deep stack:\n%s\nwant\n%s", got, exp);
	sprintf(exp, " | 2 %lld | %s /deep.py:1099 s=999", (long long)INT64_MAX, longname);
	CHECK(strstr(got, exp), "saturated sum:\n%s", got);
	free(raw);
	/* the pid label when asked; no allocs, so no alloc_space default */
	o.pid_label = true;
	o.alloc_default = true;
	err = pprof__write(path, &p, 1, &o);
	CHECK(err == 0, "pprof__write: %d %s", err, error__last());
	raw = PPROF(path, "-raw");
	CHECK(raw && strstr(raw, "pid:[42]") && !strstr(raw, "container:") &&
	      strstr(raw, "inuse_space/bytes[dflt]"), "pid label: %s", raw ? raw : "");
cleanup:
	free(raw);
	free(got);
	free(exp);
	snapshot__free(s);
}

/* No trace at all, no process at all: valid profiles without samples. */
static void test_empty(void)
{
	struct snapshot *s = snapshot__new(1);
	struct pprof_proc p = { .live = s, .pid = 1 };
	struct pprof_opts o = { .period = 1 };
	struct pprof_buf b = {};
	char *raw;
	int err;

	err = pprof__write(tpath("empty.pb.gz"), &p, 1, &o);
	CHECK(err == 0, "empty snapshot: %d %s", err, error__last());
	raw = PPROF(tpath("empty.pb.gz"), "-raw");
	CHECK(raw && strstr(raw, "Samples:\ninuse_objects/count inuse_space/bytes[dflt]\n"
			    "Locations\nMappings\n"), "empty: %s", raw ? raw : "");
	free(raw);
	raw = PPROF(tpath("empty.pb.gz"), "-top");
	free(raw);

	p.live = NULL;
	err = pprof__write(tpath("null.pb.gz"), &p, 1, &o);
	CHECK(err == 0, "NULL live: %d %s", err, error__last());
	err = pprof__write(tpath("none.pb.gz"), NULL, 0, &o);
	CHECK(err == 0, "no process: %d %s", err, error__last());
	raw = PPROF(tpath("none.pb.gz"), "-raw");
	CHECK(raw && strstr(raw, "Samples:\ninuse_objects/count inuse_space/bytes[dflt]\n"
			    "Locations\n"), "none: %s", raw ? raw : "");
	free(raw);

	/* gzip magic, and bad arguments */
	err = pprof__encode(NULL, 0, &o, &b);
	CHECK(err == 0 && b.len > 10 && b.data[0] == 0x1f && b.data[1] == 0x8b,
	      "gzip: %d", err);
	pprof_buf__free(&b);
	pprof_buf__free(&b);
	pprof_buf__free(NULL);
	CHECK(pprof__encode(NULL, 1, &o, &b) == -EINVAL && !b.data, "NULL procs");
	CHECK(pprof__encode(NULL, -1, &o, &b) == -EINVAL, "n < 0");
	CHECK(pprof__encode(NULL, 0, NULL, &b) == -EINVAL, "NULL opts");
	CHECK(pprof__encode(NULL, 0, &o, NULL) == -EINVAL, "NULL out");
	snapshot__free(s);
}

/* NAME.0123456789abcdef: one of pprof__write's temporary files. */
static bool is_tmp(const char *name)
{
	size_t len = strlen(name), i;

	if (len < 18 || name[len - 17] != '.')
		return false;
	for (i = len - 16; i < len; i++)
		if (!strchr("0123456789abcdef", name[i]))
			return false;
	return true;
}

/* Nothing left behind by a failed write, the umask's mode, a replaced file. */
static void test_write(void)
{
	struct pprof_opts o = {};
	struct stat st;
	struct dirent *d;
	DIR *dir;
	int err, n = 0;
	mode_t old = umask(027);

	err = pprof__write("/nonexistent-pytm-dir/p.pb.gz", NULL, 0, &o);
	CHECK(err == -ENOENT && strstr(error__last(), "/nonexistent-pytm-dir/p.pb.gz"),
	      "missing directory: %d %s", err, error__last());
	/* rename() onto a directory: fails after the temporary file was made */
	CHECK(mkdir(tpath("adir"), 0755) == 0, "mkdir");
	err = pprof__write(tpath("adir"), NULL, 0, &o);
	CHECK(err == -EISDIR, "onto a directory: %d %s", err, error__last());
	CHECK(pprof__write(NULL, NULL, 0, &o) == -EINVAL, "NULL path");

	CHECK(write_text(tpath("old.pb.gz"), "old") == 0, "old file");
	err = pprof__write(tpath("old.pb.gz"), NULL, 0, &o);
	CHECK(err == 0 && stat(tpath("old.pb.gz"), &st) == 0 && st.st_size > 3 &&
	      (st.st_mode & 0777) == 0640, "replaced, mode %o", st.st_mode & 0777);
	umask(old);

	/* only what we made: no temporary file stays */
	dir = opendir(tmpdir);
	while (dir && (d = readdir(dir)))
		if (is_tmp(d->d_name)) {
			CHECK(0, "left behind: %s", d->d_name);
			n++;
		}
	if (dir)
		closedir(dir);
	CHECK(dir && !n, "temporary files");
}

/* ---- speed: 1M traces ---- */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Process P's share of N traces over NTB distinct 4-frame tracebacks
 * (frames from a pool of 2000) in a new snapshot; EST: each trace an
 * estimate of 2 blocks (an allocs snapshot). NULL on failure.
 */
static struct snapshot *speed_snapshot(size_t n, size_t ntb, int nproc, int p,
				       bool est, long long *sum)
{
	size_t lo = ntb * p / nproc, hi = ntb * (p + 1) / nproc, i, k;
	const struct pytm_traceback **tbs = calloc(hi - lo, sizeof(*tbs));
	struct snapshot *s = snapshot__new(4);
	const char *names[2000], *files[20];
	char name[64], file[64];
	int err;

	if (!s || !tbs)
		goto fail;
	for (k = 0; k < 20; k++) {
		snprintf(file, sizeof(file), "/srv/app/package/module_%zu.py", k);
		files[k] = snapshot__intern(s, file);
	}
	for (k = 0; k < 2000; k++) {
		snprintf(name, sizeof(name), "Handler%zu.method_%zu", k % 37, k);
		names[k] = snapshot__intern(s, name);
	}
	for (i = lo; i < hi; i++) {
		struct pytm_frame_info fr[4];
		size_t pick[4] = {
			i % 1000, 1000 + (i / 1000) % 1000, (i / 7) % 2000, 5,
		};

		for (k = 0; k < 4; k++) {
			fr[k].filename = files[pick[k] % 20];
			fr[k].name = names[pick[k]];
			fr[k].lineno = 10 + pick[k];
			fr[k].firstlineno = 1 + pick[k];
		}
		tbs[i - lo] = snapshot__traceback(s, fr, 4, 4);
		if (!tbs[i - lo])
			goto fail;
	}
	for (i = n * p / nproc; i < n * (p + 1) / nproc; i++) {
		const struct pytm_traceback *tb = tbs[(i * 2654435761u) % (hi - lo)];

		err = est ? snapshot__add_estimate(s, i % 3, 64 + i % 100, 2, tb) :
			    snapshot__add(s, i % 3, 32 + i % 100, tb);
		if (err)
			goto fail;
		if (!est)
			*sum += 32 + i % 100;
	}
	free(tbs);
	return s;
fail:
	free(tbs);
	snapshot__free(s);
	return NULL;
}

/*
 * N traces over NTB tracebacks in NPROC processes, SAMPLED: each with an
 * allocs snapshot too. Encode time in seconds, -1 on failure.
 */
static double time_encode(size_t n, size_t ntb, int nproc, bool sampled, size_t *bytes,
			  long long *sum, const char *path)
{
	struct pprof_proc *procs = calloc(nproc, sizeof(*procs));
	struct pprof_opts o = { .period = sampled ? 524288 : 0 };
	struct pprof_buf b = {};
	double t = -1, t0;
	int p, err;

	*sum = 0;
	if (!procs)
		goto cleanup;
	for (p = 0; p < nproc; p++) {
		procs[p].live = speed_snapshot(n, ntb, nproc, p, false, sum);
		if (sampled)
			procs[p].allocs = speed_snapshot(n, ntb, nproc, p, true, sum);
		procs[p].pid = 1000 + p;
		procs[p].container = "";
		if (!procs[p].live || (sampled && !procs[p].allocs))
			goto cleanup;
	}
	t0 = now();
	err = pprof__encode(procs, nproc, &o, &b);
	t = now() - t0;
	CHECK(err == 0, "encode: %d %s", err, error__last());
	*bytes = b.len;
	if (!err && path)
		CHECK(write_bytes(path, b.data, b.len) == 0, "write %s", path);
	if (err)
		t = -1;
cleanup:
	pprof_buf__free(&b);
	for (p = 0; procs && p < nproc; p++) {
		snapshot__free((struct snapshot *)procs[p].live);
		snapshot__free((struct snapshot *)procs[p].allocs);
	}
	free(procs);
	return t;
}

static void test_speed(void)
{
	static const struct {
		size_t n, ntb;
		int nproc;
		bool sampled, check;
		double max;		/* s: catches a pathology, not the goal */
	} runs[] = {
		/* typical: tracebacks repeat */
		{ 1000000, 10000, 1, false, true, 3 },
		/* 50 processes, 20k traces each; the same, sampled (+ allocs) */
		{ 1000000, 100000, 50, false, false, 3 },
		{ 1000000, 100000, 50, true, false, 3 },
		/* worst: 1M distinct samples */
		{ 1000000, 1000000, 1, false, false, 10 },
	};
	char *top;
	size_t r, bytes = 0;
	long long sum;
	double t;

	for (r = 0; r < sizeof(runs) / sizeof(runs[0]); r++) {
		t = time_encode(runs[r].n, runs[r].ntb, runs[r].nproc, runs[r].sampled,
				&bytes, &sum, runs[r].check ? tpath("big.pb.gz") : NULL);
		printf("encode %zu traces%s, %zu tracebacks, %d process%s: %.0f ms, %zu bytes\n",
		       runs[r].n, runs[r].sampled ? " (+ as many allocs)" : "", runs[r].ntb,
		       runs[r].nproc, runs[r].nproc > 1 ? "es" : "", t * 1000, bytes);
		CHECK(t >= 0 && t < runs[r].max, "encode took %.3f s", t);
		if (!runs[r].check || t < 0)
			continue;
		top = PPROF(tpath("big.pb.gz"), "-top", "-unit=B", "-nodecount=1");
		CHECK(top && top_total(top) == sum, "big total %lld, want %lld",
		      top_total(top), sum);
		free(top);
	}
}

int main(void)
{
	if (!make_tmpdir("pprof")) {
		CHECK(0, "mkdtemp");
		return unit_done("pprof");
	}
	/* Go's caches and pprof's files in the scratch directory, offline. */
	setenv("HOME", tmpdir, 1);
	setenv("GOCACHE", tpath("gocache"), 1);
	setenv("PPROF_TMPDIR", tmpdir, 1);
	setenv("GOTOOLCHAIN", "local", 1);
	setenv("GOPROXY", "off", 1);
	setenv("TZ", "UTC", 1);		/* pprof prints times in local time */
	unsetenv("GOFLAGS");
	unsetenv("PPROF_BINARY_PATH");
	have_go = go_find();
	CHECK(have_go, "go is missing (%s): install golang-go, `go tool pprof` "
	      "is the reader these tests check against", go_bin);
	have_reader = have_go && build_reader();
	test_profile();
	test_exact();
	test_empty();
	test_write();
	test_speed();
	rm_tree(tmpdir);
	return unit_done("pprof");
}
