// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "flame.h"
#include "output.h"
#include "pprof.h"
#include "report.h"
#include "session.h"
#include "snapshot.h"
#include "tracee.h"
#include "util.h"

int output__parse_format(const char *s)
{
	if (!strcmp(s, "pickle"))
		return OUTPUT_PICKLE;
	if (!strcmp(s, "pprof"))
		return OUTPUT_PPROF;
	if (!strcmp(s, "flamegraph"))
		return OUTPUT_FLAMEGRAPH;
	if (!strcmp(s, "folded"))
		return OUTPUT_FOLDED;
	if (!strcmp(s, "svg"))
		return OUTPUT_SVG;
	return -1;
}

/* The file name's ending for FORMAT. */
static const char *suffix_of(enum output_format format)
{
	return format == OUTPUT_PPROF ? ".pb.gz" : format == OUTPUT_FLAMEGRAPH ? ".html" :
	       format == OUTPUT_FOLDED ? ".folded" : format == OUTPUT_SVG ? ".svg" : ".pytm";
}

static bool ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), m = strlen(tail);

	return n >= m && !strcmp(s + n - m, tail);
}

int output__init(struct output *o)
{
	struct stat st;

	if (!o->path)
		return 0;
	o->dir = ends_with(o->path, "/") || (!stat(o->path, &st) && S_ISDIR(st.st_mode));
	if (o->format == OUTPUT_AUTO)
		/* A directory holds profiles unless told otherwise: it is for fleets. */
		o->format = o->dir || ends_with(o->path, ".pb.gz") ||
			    ends_with(o->path, ".pprof") ? OUTPUT_PPROF :
			    ends_with(o->path, ".html") ? OUTPUT_FLAMEGRAPH :
			    ends_with(o->path, ".folded") ? OUTPUT_FOLDED :
			    ends_with(o->path, ".svg") ? OUTPUT_SVG : OUTPUT_PICKLE;
	return 0;
}

int output__prepare(const struct output *o)
{
	struct stat st;

	if (!o->path || !o->dir)
		return 0;
	if (mkdir(o->path, 0755) && errno != EEXIST)
		return error__set(-errno, "cannot create %s: %s", o->path, strerror(errno));
	if (stat(o->path, &st) || !S_ISDIR(st.st_mode) || access(o->path, W_OK | X_OK))
		return error__set(-ENOTDIR, "%s is not a directory we can write to", o->path);
	return 0;
}

static int write_pprof(const char *path, struct session *s, struct tracee *tr,
		       const struct snapshot *snap, int frames)
{
	struct pprof_proc p = { .live = snap, .pid = tr->pid, .ppid = tr->ppid,
				 .container = tr->container };
	struct pprof_opts po = {
		.period = tr->sample_rate,
		.time_nanos = (int64_t)(real_now() * 1e9),
		.duration_nanos = (int64_t)((real_now() - tr->attached_at) * 1e9),
		.pid_label = true,
	};
	struct snapshot *allocs = NULL;
	int err;

	if (tr->sample_rate) {
		allocs = session__alloc_snapshot(s, tr, frames);
		if (!allocs)
			return -errno;
		p.allocs = allocs;
	}
	err = pprof__write(path, &p, 1, &po);
	snapshot__free(allocs);
	return err;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Files of process PID in DIR beyond the KEEP newest go. */
static void prune(const char *dir, pid_t pid, const char *suffix, int keep)
{
	char prefix[32], **names = NULL, **nn, path[4096];
	size_t n = 0, cap = 0, i;
	struct dirent *de;
	DIR *d;

	snprintf(prefix, sizeof(prefix), "heap-%d-", pid);
	d = opendir(dir);
	if (!d)
		return;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, prefix, strlen(prefix)) || !ends_with(de->d_name, suffix))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			nn = realloc(names, cap * sizeof(*names));
			if (!nn)
				break;
			names = nn;
		}
		names[n] = strdup(de->d_name);
		if (names[n])
			n++;
	}
	closedir(d);
	/* The names sort by time: the time stamp has a fixed width. */
	if (n)
		qsort(names, n, sizeof(*names), cmp_names);
	for (i = 0; n > (size_t)keep && i < n - keep; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (unlink(path) && errno != ENOENT)
			warn("cannot remove %s: %s", path, strerror(errno));
	}
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/*
 * -o FILE names the traced process's file; a child it forked gets FILE with
 * its pid before the extension (heap.pytm -> heap.PID.pytm), a peak
 * snapshot ".peak" there (heap.peak.pytm, heap.PID.peak.pytm): INSERT.
 */
static void sibling(char *out, size_t len, const char *path, const char *insert)
{
	static const char *const exts[] = { ".pb.gz", ".pprof", ".pytm", ".html", ".folded",
					    ".svg" };
	const char *base = strrchr(path, '/'), *ext = NULL;
	size_t i, n = strlen(path);

	base = base ? base + 1 : path;
	for (i = 0; i < sizeof(exts) / sizeof(exts[0]) && !ext; i++)
		if (ends_with(path, exts[i]) && n - strlen(exts[i]) > (size_t)(base - path))
			ext = path + n - strlen(exts[i]);
	if (!ext) {
		ext = strrchr(base, '.');
		if (!ext || ext == base)
			ext = path + n;
	}
	snprintf(out, len, "%.*s%s%s", (int)(ext - path), path, insert, ext);
}

/*
 * A flame graph of SNAP (the whole set: -o files are snapshots, unfiltered
 * like the pickle), written next to PATH and renamed to it when complete.
 */
static int write_flame(const char *path, const struct tracee *tr, const struct snapshot *snap,
		       enum output_format format, bool peak)
{
	struct report_opts ro = { 0 };
	char tmp[4200], title[512];
	FILE *f;
	int err;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "we");
	if (!f)
		return -errno;
	snprintf(title, sizeof(title), "%s of pid %d (%s), CPython %s",
		 peak ? "Peak live memory" : "Live memory", tr->pid, tr->cmdline, tr->version);
	err = format == OUTPUT_FOLDED ? flame__write_folded(f, snap, &ro, NULL) :
	      format == OUTPUT_SVG ? flame__write_svg(f, snap, &ro, title)
				   : flame__write_html(f, snap, &ro, title);
	if (fclose(f) && !err)
		err = -errno;
	if (!err && rename(tmp, path))
		err = -errno;
	if (err)
		unlink(tmp);
	return err;
}

/* Write SNAP as O's format to PATH (PEAK: the set at the peak). */
static int write_to(const struct output *o, struct session *s, struct tracee *tr,
		    const struct snapshot *snap, const char *path, bool peak)
{
	int err;

	if (o->format == OUTPUT_PPROF)
		err = write_pprof(path, s, tr, snap, o->frames);
	else if (o->format == OUTPUT_FLAMEGRAPH || o->format == OUTPUT_FOLDED ||
		 o->format == OUTPUT_SVG)
		err = write_flame(path, tr, snap, o->format, peak);
	else
		err = snapshot__write(snap, path, o->pickle ?: tr->pickle);
	if (err)
		warn("cannot write %s: %s", path, strerror(-err));
	return err;
}

int output__write_peak(const struct output *o, struct session *s, struct tracee *tr,
		       const struct snapshot *snap)
{
	const char *suffix = suffix_of(o->format);
	char path[4096], insert[32];

	if (!o->path)
		return 0;
	if (o->dir) {
		snprintf(path, sizeof(path), "%s%speak-%d%s", o->path,
			 ends_with(o->path, "/") ? "" : "/", tr->pid, suffix);
	} else {
		if (tr->ppid)
			snprintf(insert, sizeof(insert), ".%d.peak", (int)tr->pid);
		else
			snprintf(insert, sizeof(insert), ".peak");
		sibling(path, sizeof(path), o->path, insert);
	}
	return write_to(o, s, tr, snap, path, true);
}

int output__write(const struct output *o, struct session *s, struct tracee *tr,
		  const struct snapshot *snap, bool final)
{
	const char *suffix = suffix_of(o->format);
	char path[4096], stamp[32];
	struct timespec ts;
	struct tm tm;
	int err;

	if (!o->path || (!o->dir && !final))
		return 0;
	if (o->dir) {
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%S", &tm);
		snprintf(path, sizeof(path), "%s%sheap-%d-%s.%03ldZ%s", o->path,
			 ends_with(o->path, "/") ? "" : "/", tr->pid, stamp,
			 ts.tv_nsec / 1000000, suffix);
	} else if (tr->ppid) {
		char insert[32];

		snprintf(insert, sizeof(insert), ".%d", (int)tr->pid);
		sibling(path, sizeof(path), o->path, insert);
	} else {
		snprintf(path, sizeof(path), "%s", o->path);
	}
	err = write_to(o, s, tr, snap, path, false);
	if (err)
		return err;
	if (o->dir && o->keep > 0)
		prune(o->path, tr->pid, suffix, o->keep);
	return 0;
}
