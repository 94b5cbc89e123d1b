// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Metric families are written whole, one after the other (both formats
 * want a family's samples together): per-process families loop over the
 * processes, whose figures are read once into a row first.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "prom.h"
#include "report.h"
#include "session.h"
#include "snapshot.h"
#include "tracee.h"
#include "util.h"

#define CMDLINE_LABEL_MAX	128	/* bytes of a command line in a label */

/* One traced process, read once per exposition. */
struct row {
	struct tracee *tr;
	struct pytm_proc p;
	uint64_t blocks;
	struct tracee_count lost[TRACEE_MAX_COUNTS];
	int nlost;
	struct snapshot *snap;		/* one frame per traceback */
	struct report_stats *st;	/* its lines, largest first (point into snap) */
};

struct expo {
	FILE *out;
	const struct prom_opts *o;
};

/*
 * A label value: backslash, double quote and newline escaped as the format
 * says; a control character (C0, DEL, C1), an encoded surrogate or a byte
 * that is not UTF-8 (a target's file name) written as the text \\xNN, as
 * in the tool's other outputs, so that the value is clean UTF-8.
 */
static void put_value(FILE *out, const char *v, size_t max)
{
	const unsigned char *s = (const unsigned char *)v;
	size_t i, n = strlen(v), k;
	uint32_t cp;

	/* Cut on a character boundary: a label value must stay UTF-8. */
	if (n > max) {
		n = max;
		while (n && (s[n] & 0xc0) == 0x80)
			n--;
	}
	fputc('"', out);
	for (i = 0; i < n; i += k) {
		k = utf8_seq(s + i, n - i, &cp);
		if (k == 1 && (s[i] == '\\' || s[i] == '"')) {
			fputc('\\', out);
			fputc(s[i], out);
		} else if (k == 1 && s[i] == '\n') {
			fputs("\\n", out);
		} else if (!k || utf8_is_control(cp) || utf8_is_surrogate(cp)) {
			fprintf(out, "\\\\x%02x", s[i]);
			k = 1;
		} else {
			fwrite(s + i, 1, k, out);
		}
	}
	fputc('"', out);
}

/* Label NAME="V", V cut at MAX bytes. */
static void put_label_max(FILE *out, bool *first, const char *name, const char *v,
			  size_t max)
{
	fprintf(out, "%s%s=", *first ? "{" : ",", name);
	put_value(out, v, max);
	*first = false;
}

/* Whole: a cut value could make two series one. */
static void put_label(FILE *out, bool *first, const char *name, const char *v)
{
	put_label_max(out, first, name, v, SIZE_MAX);
}

/* The labels that say which process: the same on each of its series. */
static void process_labels(FILE *out, bool *first, const struct tracee *tr)
{
	char num[32];

	snprintf(num, sizeof(num), "%d", tr->pid);
	put_label(out, first, "pid", num);
	snprintf(num, sizeof(num), "%d", tr->nspid);
	put_label(out, first, "nspid", num);
	if (tr->ppid) {
		/* A forked child followed: whose. */
		snprintf(num, sizeof(num), "%d", tr->ppid);
		put_label(out, first, "ppid", num);
	}
	/* Long command lines would weigh on every series; the pid tells them apart. */
	put_label_max(out, first, "command", tr->cmdline, CMDLINE_LABEL_MAX);
	put_label(out, first, "container", tr->container);
	put_label(out, first, "cgroup", tr->cgroup);
	put_label(out, first, "python", tr->version);
	put_label(out, first, "mode", tr->sample_rate ? "sampled" : "exact");
	snprintf(num, sizeof(num), "%llu", (unsigned long long)tr->sample_rate);
	put_label(out, first, "sample_rate", num);
}

/*
 * "# HELP", "# TYPE" (and "# UNIT" in OpenMetrics) of family NAME. A
 * counter's samples are NAME_total; OpenMetrics names the family without it.
 */
static void family(struct expo *e, const char *name, const char *type,
		   const char *unit, const char *help)
{
	bool counter = !strcmp(type, "counter");
	int n = (int)strlen(name);

	if (e->o->openmetrics && counter)
		n -= 6;		/* "_total" */
	fprintf(e->out, "# HELP %.*s %s\n", n, name, help);
	fprintf(e->out, "# TYPE %.*s %s\n", n, name, type);
	if (e->o->openmetrics && unit)
		fprintf(e->out, "# UNIT %.*s %s\n", n, name, unit);
}

static void sample_end(FILE *out, bool first, double v)
{
	fprintf(out, "%s %.17g\n", first ? "" : "}", v);
}

static void sample_u(FILE *out, bool first, uint64_t v)
{
	fprintf(out, "%s %llu\n", first ? "" : "}", (unsigned long long)v);
}

/* A per-process family: one sample per row, its value from GET. */
static void per_process(struct expo *e, const struct row *rows, int n, const char *name,
			const char *type, const char *unit, const char *help,
			int64_t (*get)(const struct row *))
{
	bool first;
	int i;

	family(e, name, type, unit, help);
	for (i = 0; i < n; i++) {
		first = true;
		fputs(name, e->out);
		process_labels(e->out, &first, rows[i].tr);
		fprintf(e->out, "} %lld\n", (long long)get(&rows[i]));
	}
}

static int64_t get_current(const struct row *r) { return r->p.current; }
static int64_t get_peak(const struct row *r) { return r->p.peak; }
static int64_t get_blocks(const struct row *r) { return r->blocks; }
static int64_t get_events(const struct row *r) { return r->p.nevents; }

static bool is_bytes_count(const char *key)
{
	size_t n = strlen(key);

	return n > 6 && !strcmp(key + n - 6, "_bytes");
}

static void lost_families(struct expo *e, const struct row *rows, int n)
{
	bool first;
	int i, k, pass;

	/* Pass 0: events by reason; pass 1: the bytes they stood for. */
	for (pass = 0; pass < 2; pass++) {
		if (!pass)
			family(e, "pytm_lost_events_total", "counter", NULL,
			       "Allocator events not recorded, by reason (none is silent)");
		else
			family(e, "pytm_lost_sampled_bytes_total", "counter", "bytes",
			       "Bytes that sampled events not recorded stood for, by reason");
		for (i = 0; i < n; i++) {
			for (k = 0; k < rows[i].nlost; k++) {
				const char *key = rows[i].lost[k].key;
				char reason[64];

				if (is_bytes_count(key) != (pass == 1))
					continue;
				snprintf(reason, sizeof(reason), "%.*s", (int)strlen(key) -
					 (pass ? 6 : 0), key);
				first = true;
				fputs(pass ? "pytm_lost_sampled_bytes_total" : "pytm_lost_events_total",
				      e->out);
				process_labels(e->out, &first, rows[i].tr);
				put_label(e->out, &first, "reason", reason);
				sample_u(e->out, first, rows[i].lost[k].value);
			}
		}
	}
}

/* The top lines of each process, and the rest of its lines as one series. */
static void line_families(struct expo *e, const struct row *rows, int n)
{
	struct report_stat rs;
	uint64_t rest_size, rest_count, all_size, all_count;
	char lineno[16];
	bool first, bytes;
	int i, pass;
	size_t k, nst;

	for (pass = 0; pass < 2; pass++) {
		bytes = pass == 0;
		if (bytes)
			family(e, "pytm_line_memory_bytes", "gauge", "bytes",
			       "Traced memory allocated by a line (the most recent frame), "
			       "the --metrics-top largest per process; filename=\"" PROM_OTHER_LINES "\" sums the rest");
		else
			family(e, "pytm_line_blocks", "gauge", NULL,
			       "Live blocks allocated by a line, as pytm_line_memory_bytes");
		for (i = 0; i < n; i++) {
			if (!rows[i].st)
				continue;
			nst = report__stats_count(rows[i].st);
			rest_size = rest_count = all_size = all_count = 0;
			for (k = 0; !report__stats_get(rows[i].st, k, &rs); k++) {
				if (k >= (size_t)e->o->top) {
					rest_size += rs.size;
					rest_count += rs.count;
					continue;
				}
				first = true;
				fputs(bytes ? "pytm_line_memory_bytes" : "pytm_line_blocks", e->out);
				process_labels(e->out, &first, rows[i].tr);
				put_label(e->out, &first, "filename", rs.filename ?: "<unknown>");
				snprintf(lineno, sizeof(lineno), "%u", rs.lineno);
				put_label(e->out, &first, "line", lineno);
				sample_u(e->out, first, bytes ? rs.size : rs.count);
			}
			if (nst <= (size_t)e->o->top)
				continue;
			first = true;
			fputs(bytes ? "pytm_line_memory_bytes" : "pytm_line_blocks", e->out);
			process_labels(e->out, &first, rows[i].tr);
			put_label(e->out, &first, "filename", PROM_OTHER_LINES);
			put_label(e->out, &first, "line", "0");
			sample_u(e->out, first, bytes ? rest_size : rest_count);
		}
	}
}

/* ---- the tracer itself ---- */

struct self {
	double cpu, start;
	uint64_t rss, map_bytes;
	int fds;
};

static void read_self(struct self *me)
{
	char buf[1024], *p, path[300];
	unsigned long long ut = 0, st = 0, start = 0, btime = 0, resident = 0, v;
	long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	struct dirent *de;
	FILE *f;
	DIR *d;
	int i;

	memset(me, 0, sizeof(*me));
	f = fopen("/proc/self/stat", "re");
	if (f && fgets(buf, sizeof(buf), f)) {
		/* Fields after "(comm)": state is 3, utime 14, stime 15, starttime 22. */
		p = strrchr(buf, ')');
		for (i = 3; p && *p; p++) {
			if (*p != ' ')
				continue;
			v = strtoull(p + 1, NULL, 10);
			if (i == 14)
				ut = v;
			else if (i == 15)
				st = v;
			else if (i == 22)
				start = v;
			i++;
			if (i > 22)
				break;
		}
	}
	if (f)
		fclose(f);
	f = fopen("/proc/stat", "re");
	while (f && fgets(buf, sizeof(buf), f))
		if (!strncmp(buf, "btime ", 6))
			btime = strtoull(buf + 6, NULL, 10);
	if (f)
		fclose(f);
	f = fopen("/proc/self/statm", "re");
	if (f && fscanf(f, "%*u %llu", &resident) != 1)
		resident = 0;
	if (f)
		fclose(f);
	if (tick > 0) {
		me->cpu = (double)(ut + st) / tick;
		me->start = btime + (double)start / tick;
	}
	me->rss = resident * (page > 0 ? page : 4096);
	/* BPF maps: what the kernel charges for each map this process holds. */
	d = opendir("/proc/self/fdinfo");
	while (d && (de = readdir(d))) {
		bool is_map = false;
		unsigned long long memlock = 0;

		if (de->d_name[0] == '.')
			continue;
		me->fds++;
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%s", de->d_name);
		f = fopen(path, "re");
		while (f && fgets(buf, sizeof(buf), f)) {
			if (!strncmp(buf, "map_type:", 9))
				is_map = true;
			else if (!strncmp(buf, "memlock:", 8))
				memlock = strtoull(buf + 8, NULL, 10);
		}
		if (f)
			fclose(f);
		if (is_map)
			me->map_bytes += memlock;
	}
	if (d) {
		closedir(d);
		me->fds--;	/* the directory's own */
	}
}

/* A family of one sample without labels. */
static void single(struct expo *e, const char *name, const char *type, const char *unit,
		   const char *help, double v)
{
	family(e, name, type, unit, help);
	fputs(name, e->out);
	sample_end(e->out, true, v);
}

static void health(struct expo *e, struct session *s, int ntraced, double took)
{
	struct self me;
	bool first;
	int i;

	read_self(&me);
	single(e, "process_cpu_seconds_total", "counter", "seconds",
	       "CPU time of the tracer (user and system)", me.cpu);
	single(e, "process_resident_memory_bytes", "gauge", "bytes",
	       "Resident memory of the tracer", me.rss);
	single(e, "process_start_time_seconds", "gauge", "seconds",
	       "Start time of the tracer since the epoch", me.start);
	single(e, "process_open_fds", "gauge", NULL, "Open file descriptors of the tracer", me.fds);
	single(e, "pytm_bpf_map_memory_bytes", "gauge", "bytes",
	       "Memory the kernel charges for the tracer's BPF maps", me.map_bytes);
	single(e, "pytm_processes_traced", "gauge", NULL, "Processes traced now", ntraced);
	single(e, "pytm_processes_attached_total", "counter", NULL,
	       "Processes the tracer attached to since it started", s->counts.traced);
	single(e, "pytm_processes_exited_total", "counter", NULL,
	       "Traced processes that exited", s->counts.exited);
	single(e, "pytm_processes_forked_total", "counter", NULL,
	       "Children of traced processes followed from their fork", s->counts.forks);
	single(e, "pytm_processes_execed_total", "counter", NULL,
	       "Traced processes that called execve (traced again if Python)", s->counts.execs);
	family(e, "pytm_processes_skipped_total", "counter", NULL,
	       "Processes not traced, by reason (-p or --all, each once given up on)");
	for (i = 0; i < SESSION_SKIP_MAX; i++) {
		first = true;
		fputs("pytm_processes_skipped_total", e->out);
		put_label(e->out, &first, "reason", session__skip_name(i));
		sample_u(e->out, first, s->counts.skipped[i]);
	}
	single(e, "pytm_attach_failures_total", "counter", NULL,
	       "CPython processes whose probes could not be attached", s->counts.attach_failed);
	single(e, "pytm_scrape_duration_seconds", "gauge", "seconds",
	       "Time taken to read the traced processes for this exposition", took);
}

int prom__write(FILE *out, struct session *s, const struct prom_opts *o)
{
	struct report_opts ro = { .key = REPORT_KEY_LINENO };
	struct expo e = { .out = out, .o = o };
	struct row *rows;
	double t0 = mono_now();
	int i, n = 0, err = 0;
	size_t k;

	rows = calloc(s->ntracees + 1, sizeof(*rows));
	if (!rows)
		return -ENOMEM;
	for (i = 0; i < s->ntracees; i++) {
		struct tracee *tr = &s->tracees[i];
		struct row *r = &rows[n];
		const struct pytm_trace *t;

		if (!tracee__traced(tr) || tracee__stats(tr, s->skel, &r->p))
			continue;
		r->tr = tr;
		r->nlost = tracee__lost(tr, &r->p, r->lost, TRACEE_MAX_COUNTS);
		/* One frame is all that lines need: the cheapest snapshot. */
		r->snap = session__snapshot(s, tr, 1);
		if (r->snap) {
			t = snapshot__traces(r->snap);
			for (k = 0; k < snapshot__count(r->snap); k++)
				r->blocks += t[k].count;
			if (o->top > 0 && report__stats(r->snap, NULL, &ro, &r->st))
				r->st = NULL;
		}
		n++;
	}
	per_process(&e, rows, n, "pytm_traced_memory_bytes", "gauge", "bytes",
		    "Traced memory now, as tracemalloc.get_traced_memory()[0] "
		    "(estimated when mode=\"sampled\")", get_current);
	per_process(&e, rows, n, "pytm_traced_memory_peak_bytes", "gauge", "bytes",
		    "Peak of the traced memory since attach (or the last reset)", get_peak);
	per_process(&e, rows, n, "pytm_live_blocks", "gauge", NULL,
		    "Live memory blocks traced (estimated when mode=\"sampled\")", get_blocks);
	per_process(&e, rows, n, "pytm_allocator_events_total", "counter", NULL,
		    "Allocator events seen (sampled mode: recorded samples and their frees)",
		    get_events);
	lost_families(&e, rows, n);
	if (o->top > 0)
		line_families(&e, rows, n);
	health(&e, s, n, mono_now() - t0);
	if (o->openmetrics)
		fputs("# EOF\n", out);
	for (i = 0; i < n; i++) {
		report__stats_free(rows[i].st);
		snapshot__free(rows[i].snap);
	}
	free(rows);
	if (fflush(out) || ferror(out))
		err = -EIO;
	return err;
}

/* The q of one media range ("type/sub;a=b;q=0.5"): 1 unless given. */
static double media_q(const char *p, size_t n)
{
	const char *q;

	for (q = p; q + 2 < p + n; q++) {
		if (q[0] == ';') {
			while (q + 1 < p + n && q[1] == ' ')
				q++;
			if (q + 2 < p + n && q[1] == 'q' && q[2] == '=')
				return strtod(q + 3, NULL);
		}
	}
	return 1;
}

bool prom__wants_openmetrics(const char *accept)
{
	double om = 0, text = 0, q;
	const char *p = accept;
	size_t n;

	while (p && *p) {
		while (*p == ' ' || *p == ',')
			p++;
		n = strcspn(p, ",");
		q = media_q(p, n);
		if (!strncmp(p, "application/openmetrics-text", 28))
			om = q > om ? q : om;
		else if (!strncmp(p, "text/plain", 10) || !strncmp(p, "*/*", 3) ||
			 !strncmp(p, "text/*", 6))
			text = q > text ? q : text;
		p += n;
	}
	return om > 0 && om >= text;
}
