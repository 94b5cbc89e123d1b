// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The top view: the session's processes snapshotted every interval, their
 * statistics followed by a series (growth over the last interval and since
 * the view began), drawn with ncurses or printed as plain text.
 */
#define _GNU_SOURCE
#include <curses.h>
#include <errno.h>
#include <locale.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "series.h"
#include "session.h"
#include "snapshot.h"
#include "top.h"
#include "tracee.h"
#include "util.h"

enum top_sort { SORT_SIZE, SORT_COUNT, SORT_GROWTH };
static const char *const sort_names[] = { "size", "count", "growth" };

/* What the view keeps of a traced process (by its slot in the session). */
struct top_proc {
	pid_t pid;
	struct snapshot *first;		/* at its first refresh: "since attach" */
	struct snapshot *last;		/* what the screen shows (may be FIRST) */
	double t_first, t_last;
	uint64_t nevents;		/* at the refresh before */
	double rate;			/* allocator events (or samples) per second */
	struct pytm_proc p;
	uint64_t lost;
	bool live;			/* registered at the latest refresh */
};

struct top {
	struct session *s;
	struct top_opts o;
	struct report_opts ro;		/* o.ro, with the key the user chose */
	struct top_proc *procs;		/* one per session slot */
	struct series *se;
	const struct series_line **rows;
	size_t nrows, rows_cap;
	enum top_sort sort;
	bool tty, paused, expanded, quit;
	double next;			/* mono_now() of the next refresh */
	double refreshed;		/* real_now() of the latest */
	size_t sel, offset;		/* the selected row, the first shown */
	char msg[256];			/* the status line's message... */
	double msg_until;		/* ...until then */
	int saved_err;			/* the real stderr while the view is up */
	FILE *err;			/* what was written to stderr meanwhile */
	off_t err_seen;
	SCREEN *scr;
};

static void say(struct top *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct top *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(t->msg, sizeof(t->msg), fmt, ap);
	va_end(ap);
	t->msg_until = mono_now() + 5;
}

/* Untrusted text (a target's file name) made safe for the terminal, in BUF. */
static void escaped(char *buf, size_t len, const char *s)
{
	FILE *f = fmemopen(buf, len, "w");

	buf[0] = '\0';
	if (!f)
		return;
	report__put_escaped(f, s ? s : "", NULL);
	fclose(f);
	buf[len - 1] = '\0';
}

/* The row's name: file:line, file, or a traceback's newest frame. */
static void row_label(char *buf, size_t len, const struct series_line *l, enum report_key key)
{
	char name[1024];

	escaped(name, sizeof(name), l->frames[0].filename);
	if (key == REPORT_KEY_FILENAME)
		snprintf(buf, len, "%s", name);
	else if (key == REPORT_KEY_TRACEBACK && l->nframe > 1)
		snprintf(buf, len, "%s:%u (+%u frame%s)", name, l->frames[0].lineno, l->nframe - 1,
			 l->nframe > 2 ? "s" : "");
	else
		snprintf(buf, len, "%s:%u", name, l->frames[0].lineno);
}

/* S fitted in WIDTH columns: its end kept, "..." in front. */
static const char *fit_left(const char *s, int width, char *buf, size_t len)
{
	size_t n = strlen(s);

	if (width <= 3 || n <= (size_t)width)
		return s;
	snprintf(buf, len, "...%s", s + n - (width - 3));
	return buf;
}

static int cmp_rows(const void *a, const void *b, void *arg)
{
	const struct series_line *x = *(const struct series_line *const *)a;
	const struct series_line *y = *(const struct series_line *const *)b;
	enum top_sort sort = *(enum top_sort *)arg;

	if (sort == SORT_COUNT && x->count != y->count)
		return x->count > y->count ? -1 : 1;
	if (sort == SORT_GROWTH && x->grow_last != y->grow_last)
		return x->grow_last > y->grow_last ? -1 : 1;
	if (x->size != y->size)
		return x->size > y->size ? -1 : 1;
	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	return x->pid < y->pid ? -1 : x->pid > y->pid;
}

/* The lines with something live (or that just lost it), sorted. */
static void build_rows(struct top *t)
{
	size_t i, n = series__count(t->se);

	t->nrows = 0;
	if (n > t->rows_cap) {
		const struct series_line **v = realloc(t->rows, n * sizeof(*v));

		if (!v)
			return;
		t->rows = v;
		t->rows_cap = n;
	}
	for (i = 0; i < n; i++) {
		const struct series_line *l = series__line(t->se, i);

		if (l->size || l->grow_last)
			t->rows[t->nrows++] = l;
	}
	qsort_r(t->rows, t->nrows, sizeof(*t->rows), cmp_rows, &t->sort);
	if (t->sel >= t->nrows)
		t->sel = t->nrows ? t->nrows - 1 : 0;
}

static struct tracee *tracee_of(struct top *t, int slot)
{
	struct tracee *tr = &t->s->tracees[slot];

	return tr->registered ? tr : NULL;
}

static void proc_forget(struct top_proc *tp)
{
	if (tp->last != tp->first)
		snapshot__free(tp->last);
	snapshot__free(tp->first);
	memset(tp, 0, sizeof(*tp));
}

/* A new series for the key now chosen, from the snapshots kept: first, then last. */
static int reseed(struct top *t)
{
	struct series *se = series__new(3);
	double t0 = 0, t1 = 0;
	int i, err = 0;

	if (!se)
		return -ENOMEM;
	for (i = 0; i < t->s->o.max_procs; i++) {
		struct top_proc *tp = &t->procs[i];

		if (tp->live && (!t0 || tp->t_first < t0))
			t0 = tp->t_first;
		if (tp->live && tp->t_last > t1)
			t1 = tp->t_last;
	}
	series__begin(se, t0);
	for (i = 0; i < t->s->o.max_procs && !err; i++)
		if (t->procs[i].live)
			err = series__add(se, t->procs[i].first, &t->ro, t->procs[i].pid);
	series__end(se);
	series__begin(se, t1 > t0 ? t1 : t0 + 1);
	for (i = 0; i < t->s->o.max_procs && !err; i++)
		if (t->procs[i].live)
			err = series__add(se, t->procs[i].last, &t->ro, t->procs[i].pid);
	series__end(se);
	if (err) {
		series__free(se);
		return err;
	}
	series__free(t->se);
	t->se = se;
	build_rows(t);
	return 0;
}

/* Snapshot every process, one more round of the series. */
static void refresh_data(struct top *t)
{
	struct tracee_count lost[TRACEE_MAX_COUNTS];
	double now = mono_now();
	int i, j, n;

	series__begin(t->se, now);
	for (i = 0; i < t->s->o.max_procs; i++) {
		struct top_proc *tp = &t->procs[i];
		struct tracee *tr = tracee_of(t, i);
		struct snapshot *snap;

		if (tp->pid && (!tr || tr->pid != tp->pid))
			proc_forget(tp);
		if (!tr)
			continue;
		snap = session__snapshot(t->s, tr, t->o.frames);
		if (!snap)
			continue;
		tp->pid = tr->pid;
		tp->live = true;
		if (!tp->first) {
			tp->first = snap;
			tp->t_first = now;
		} else if (tp->last != tp->first) {
			snapshot__free(tp->last);
		}
		tp->last = snap;
		if (tracee__stats(tr, t->s->skel, &tp->p))
			memset(&tp->p, 0, sizeof(tp->p));
		if (tp->t_last && now > tp->t_last)
			tp->rate = (tp->p.nevents - tp->nevents) / (now - tp->t_last);
		tp->nevents = tp->p.nevents;
		tp->t_last = now;
		n = tracee__lost(tr, &tp->p, lost, TRACEE_MAX_COUNTS);
		for (tp->lost = 0, j = 0; j < n; j++)
			tp->lost += lost[j].value;
		if (series__add(t->se, snap, &t->ro, tr->pid))
			say(t, "cannot follow process %d: out of memory", tr->pid);
	}
	series__end(t->se);
	t->refreshed = real_now();
	build_rows(t);
}

/* The header's figures, summed over the processes. */
struct totals {
	int nprocs;
	long long current, peak;
	double rate;
	uint64_t lost;
	const struct tracee *one;	/* the only one, or the first */
	uint64_t rate_sampled;		/* the sampling rate, if all share one */
	bool mixed;			/* exact and sampled, or several rates */
};

static void totals_of(struct top *t, struct totals *x)
{
	int i;

	memset(x, 0, sizeof(*x));
	for (i = 0; i < t->s->o.max_procs; i++) {
		struct top_proc *tp = &t->procs[i];
		struct tracee *tr = tracee_of(t, i);

		if (!tp->live || !tr || tr->pid != tp->pid)
			continue;
		if (!x->nprocs)
			x->rate_sampled = tr->sample_rate;
		else if (x->rate_sampled != tr->sample_rate)
			x->mixed = true;
		if (!x->one)
			x->one = tr;
		x->nprocs++;
		x->current += tp->p.current;
		x->peak += tp->p.peak;
		x->rate += tp->rate;
		x->lost += tp->lost;
	}
}

static bool several(const struct top *t)
{
	return t->s->o.follow_exec || t->s->ntracees > 1;
}

static void header_lines(struct top *t, char *l1, char *l2, char *l3, size_t len)
{
	char cur[32], peak[32], rate[32], every[32];
	struct totals x;

	totals_of(t, &x);
	if (x.mixed)
		snprintf(rate, sizeof(rate), "exact and sampled");
	else if (x.rate_sampled) {
		strcpy(rate, "sampled at 1 per ");
		report__format_size(rate + strlen(rate), sizeof(rate) - strlen(rate),
				    (double)x.rate_sampled, false);
	} else
		snprintf(rate, sizeof(rate), "exact");
	snprintf(every, sizeof(every), "%g s", t->o.interval);
	if (x.nprocs == 1 && !several(t)) {
		char cmd[300];

		escaped(cmd, sizeof(cmd), x.one->cmdline);
		snprintf(l1, len, "pid %d (%s), CPython %s, %s, %d frame%s, every %s", x.one->pid, cmd,
			 x.one->version, rate, t->o.frames, t->o.frames > 1 ? "s" : "", every);
	} else {
		size_t used;
		int i, shown = 0;

		used = snprintf(l1, len, "%d process%s%s, %s, %d frame%s, every %s:", x.nprocs,
				x.nprocs == 1 ? "" : "es", t->s->o.follow_exec ? " (--all)" : "",
				rate, t->o.frames, t->o.frames > 1 ? "s" : "", every);
		for (i = 0; i < t->s->o.max_procs && used < len; i++) {
			if (!t->procs[i].live)
				continue;
			used += snprintf(l1 + used, len - used, "%s %d", shown++ ? "," : "",
					 t->procs[i].pid);
		}
	}
	report__format_size(cur, sizeof(cur), (double)x.current, false);
	report__format_size(peak, sizeof(peak), (double)x.peak, false);
	snprintf(l2, len, "traced%s: current %s, peak %s; %.0f %s/s; lost %llu",
		 x.rate_sampled || x.mixed ? " (estimated)" : "", cur, peak, x.rate,
		 x.rate_sampled && !x.mixed ? "samples" : "events", (unsigned long long)x.lost);
	snprintf(l3, len, "sort: %s, key: %s%s%s", sort_names[t->sort],
		 report__key_name(t->ro.key), t->ro.nfilters ? ", filtered" : "",
		 t->paused ? "   [PAUSED]" : "");
}

#define COLS_FIXED	"%10s %9s %10s %11s %12s "
static void columns(char *buf, size_t len, bool pid, double interval)
{
	char growth[32];

	/* Growth over the last refresh interval: "GROWTH 1s". */
	snprintf(growth, sizeof(growth), "GROWTH %gs", interval);
	snprintf(buf, len, COLS_FIXED "%s%s", "SIZE", "COUNT", "AVERAGE", growth, "SINCE START",
		 pid ? "    PID " : "", "LINE");
}

/* A row's text: the figures, then its name fitted in what WIDTH leaves. */
static void row_text(struct top *t, const struct series_line *l, char *buf, size_t len, int width)
{
	char size[32], cnt[24], avg[32], gl[32], gf[32], label[1200], fitted[1200], pid[16] = "";
	int used;

	report__format_size(size, sizeof(size), (double)l->size, false);
	if (l->count)
		report__format_size(avg, sizeof(avg), (double)l->size / l->count, false);
	else
		strcpy(avg, "-");
	report__format_size(gl, sizeof(gl), (double)l->grow_last, true);
	report__format_size(gf, sizeof(gf), (double)l->grow_first, true);
	if (several(t))
		snprintf(pid, sizeof(pid), "%7d ", l->pid);
	row_label(label, sizeof(label), l, t->ro.key);
	snprintf(cnt, sizeof(cnt), "%llu", (unsigned long long)l->count);
	used = snprintf(buf, len, COLS_FIXED "%s", size, cnt, avg, gl, gf, pid);
	snprintf(buf + used, len - used, "%s", fit_left(label, width - used, fitted, sizeof(fitted)));
}

/* --- plain text: the same table, every interval --- */

static void print_plain(struct top *t)
{
	char l1[1024], l2[256], l3[256], line[2048], stamp[32];
	time_t now = (time_t)t->refreshed;
	size_t i, n = t->ro.top > 0 && (size_t)t->ro.top < t->nrows ? (size_t)t->ro.top : t->nrows;

	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", localtime(&now));
	header_lines(t, l1, l2, l3, sizeof(l1));
	printf("%s %s\n%s\n", stamp, l1, l2);
	columns(line, sizeof(line), several(t), t->o.interval);
	printf("%s\n", line);
	for (i = 0; i < n; i++) {
		row_text(t, t->rows[i], line, sizeof(line), 1 << 20);
		printf("%s\n", line);
	}
	printf("\n");
	fflush(stdout);
}

/* --- the terminal view --- */

/* Stderr lines written since the last look: the newest becomes the message. */
static void look_at_stderr(struct top *t)
{
	char buf[512], *nl;
	struct stat st;
	off_t from;
	ssize_t n;

	if (!t->err || fstat(fileno(t->err), &st) || st.st_size <= t->err_seen)
		return;
	from = st.st_size - (off_t)sizeof(buf) + 1 > t->err_seen ?
	       st.st_size - (off_t)sizeof(buf) + 1 : t->err_seen;
	n = pread(fileno(t->err), buf, st.st_size - from, from);
	t->err_seen = st.st_size;
	if (n <= 0)
		return;
	buf[n] = '\0';
	while (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	nl = strrchr(buf, '\n');
	escaped(t->msg, sizeof(t->msg), nl ? nl + 1 : buf);
	t->msg_until = mono_now() + 10;
}

static void put_line(int y, const char *s, int attr)
{
	if (y < 0 || y >= LINES)
		return;
	attron(attr);
	mvaddnstr(y, 0, s, COLS);
	if (attr & A_REVERSE)
		for (int x = strlen(s); x < COLS; x++)
			mvaddch(y, x, ' ');
	attroff(attr);
}

/* The tracebacks behind the selected row, from its process's snapshot. */
static void draw_tracebacks(struct top *t, const struct series_line *sel, int y0, int y1)
{
	struct report_opts o = t->ro;
	struct report_stats *st = NULL;
	struct report_stat x;
	struct top_proc *tp = NULL;
	char line[2048], name[1024], fn[512], size[32], fitted[2048];
	int i, y = y0, shown = 0;
	unsigned int f;
	size_t k, n;

	for (i = 0; i < t->s->o.max_procs; i++)
		if (t->procs[i].live && t->procs[i].pid == sel->pid)
			tp = &t->procs[i];
	row_label(name, sizeof(name), sel, t->ro.key);
	snprintf(line, sizeof(line), "Tracebacks of %s (pid %d), biggest first; Enter or Esc closes",
		 name, sel->pid);
	put_line(y++, line, A_BOLD);
	o.key = REPORT_KEY_TRACEBACK;
	o.cumulative = false;
	if (!tp || !tp->last || report__stats(tp->last, NULL, &o, &st)) {
		put_line(y, "(no traceback)", 0);
		return;
	}
	n = report__stats_count(st);
	for (k = 0; k < n && y < y1; k++) {
		bool match;

		if (report__stats_get(st, k, &x) || !x.nframe)
			continue;
		/* This row's: the same newest frame, or the same traceback. */
		match = !strcmp(x.frames[0].filename, sel->frames[0].filename) &&
			(t->ro.key == REPORT_KEY_FILENAME || x.frames[0].lineno == sel->frames[0].lineno);
		if (t->ro.key == REPORT_KEY_TRACEBACK) {
			match = x.nframe == sel->nframe;
			for (f = 0; match && f < x.nframe; f++)
				match = x.frames[f].lineno == sel->frames[f].lineno &&
					!strcmp(x.frames[f].filename, sel->frames[f].filename);
		}
		if (!match)
			continue;
		report__format_size(size, sizeof(size), (double)x.size, false);
		snprintf(line, sizeof(line), "%s in %llu block%s, %u frame%s:", size,
			 (unsigned long long)x.count, x.count == 1 ? "" : "s", x.nframe,
			 x.nframe == 1 ? "" : "s");
		put_line(y++, line, A_BOLD);
		shown++;
		/* Oldest first, as Python prints a traceback. */
		for (f = x.nframe; f-- > 0 && y < y1;) {
			escaped(name, sizeof(name), x.frames[f].filename);
			escaped(fn, sizeof(fn), x.frames[f].name ? x.frames[f].name : "");
			snprintf(line, sizeof(line), "  File \"%s\", line %u%s%s", name, x.frames[f].lineno,
				 fn[0] ? ", in " : "", fn);
			put_line(y++, fit_left(line, COLS, fitted, sizeof(fitted)), 0);
		}
	}
	if (!shown)
		put_line(y, "(none now)", 0);
	report__stats_free(st);
}

static void draw(struct top *t)
{
	char l1[1024], l2[256], l3[256], line[2048], clock[16];
	time_t now = (time_t)t->refreshed;
	int y, body, list_end;
	size_t i;

	look_at_stderr(t);
	erase();
	strftime(clock, sizeof(clock), "%H:%M:%S", localtime(&now));
	header_lines(t, l1, l2, l3, sizeof(l1));
	snprintf(line, sizeof(line), "pytm-bpf top - %s", l1);
	put_line(0, line, A_BOLD);
	if (COLS > (int)strlen(clock) + 1 && (int)strlen(line) + (int)strlen(clock) + 2 <= COLS)
		mvaddstr(0, COLS - strlen(clock), clock);
	put_line(1, l2, 0);
	put_line(2, l3, 0);
	columns(line, sizeof(line), several(t), t->o.interval);
	put_line(4, line, A_REVERSE);
	body = LINES - 6;		/* rows 5 .. LINES-2; the status line last */
	if (body < 1)
		body = 1;
	list_end = t->expanded ? 5 + (body + 1) / 3 : 5 + body;
	/* Keep the selection in view. */
	if (t->sel < t->offset)
		t->offset = t->sel;
	if (t->sel >= t->offset + (size_t)(list_end - 5))
		t->offset = t->sel - (list_end - 5) + 1;
	for (y = 5, i = t->offset; y < list_end && i < t->nrows; y++, i++) {
		row_text(t, t->rows[i], line, sizeof(line), COLS);
		put_line(y, line, i == t->sel ? A_REVERSE : 0);
	}
	if (!t->nrows)
		put_line(5, t->refreshed ? "(nothing traced yet)" : "(reading...)", 0);
	if (t->expanded && t->sel < t->nrows)
		draw_tracebacks(t, t->rows[t->sel], list_end + 1, LINES - 1);
	if (t->msg[0] && mono_now() < t->msg_until)
		put_line(LINES - 1, t->msg, A_BOLD);
	else
		put_line(LINES - 1, "q quit  S/C/G sort by size/count/growth  k key  "
			 "Up/Down select  Enter traceback  p pause  s snapshot", A_REVERSE);
	refresh();
}

/* 's': the process of the selected row (or the first), as the screen shows it. */
static void save_snapshot(struct top *t)
{
	pid_t pid = t->sel < t->nrows ? t->rows[t->sel]->pid : 0;
	struct tracee *tr = NULL;
	struct top_proc *tp = NULL;
	char path[512], stamp[32];
	time_t now = time(NULL);
	int i, err;

	for (i = 0; i < t->s->o.max_procs; i++) {
		if (!t->procs[i].live || !t->procs[i].last || (pid && t->procs[i].pid != pid))
			continue;
		tp = &t->procs[i];
		tr = tracee_of(t, i);
		break;
	}
	if (!tp || !tr || tr->pid != tp->pid) {
		say(t, "no snapshot to write yet");
		return;
	}
	if (t->o.out && t->o.out->path) {
		err = output__write(t->o.out, t->s, tr, tp->last, true);
		if (!err)
			say(t, "wrote pid %d's snapshot (%zu traces) to %s", tr->pid,
			    snapshot__count(tp->last), t->o.out->path);
		return;
	}
	strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", localtime(&now));
	snprintf(path, sizeof(path), "pytm-%d-%s.pytm", tr->pid, stamp);
	err = snapshot__write(tp->last, path, t->o.pickle ?: tr->pickle);
	if (err)
		say(t, "cannot write %s: %s", path, strerror(-err));
	else
		say(t, "wrote %s (%zu traces)", path, snapshot__count(tp->last));
}

static void next_key(struct top *t)
{
	enum report_key k = t->ro.key;

	do
		k = (k + 1) % 3;
	while (k == REPORT_KEY_TRACEBACK && t->ro.cumulative);
	t->ro.key = k;
	if (reseed(t))
		say(t, "out of memory");
	t->sel = t->offset = 0;
}

static void handle_key(struct top *t, int c)
{
	size_t page = LINES > 8 ? LINES - 8 : 1;

	switch (c) {
	case 'q':
	case 'Q':
		t->quit = true;
		break;
	case 'S':
		t->sort = SORT_SIZE;
		break;
	case 'C':
	case 'c':
		t->sort = SORT_COUNT;
		break;
	case 'G':
	case 'g':
		t->sort = SORT_GROWTH;
		break;
	case 'k':
		next_key(t);
		break;
	case 'p':
	case ' ':
		t->paused = !t->paused;
		if (!t->paused)
			t->next = 0;
		break;
	case 's':
		save_snapshot(t);
		break;
	case '\n':
	case '\r':
	case KEY_ENTER:
	case 't':
		t->expanded = !t->expanded;
		break;
	case 27:	/* Esc */
		t->expanded = false;
		break;
	case KEY_UP:
		if (t->sel)
			t->sel--;
		break;
	case KEY_DOWN:
		if (t->sel + 1 < t->nrows)
			t->sel++;
		break;
	case KEY_PPAGE:
		t->sel = t->sel > page ? t->sel - page : 0;
		break;
	case KEY_NPAGE:
		t->sel = t->sel + page < t->nrows ? t->sel + page : (t->nrows ? t->nrows - 1 : 0);
		break;
	case KEY_HOME:
		t->sel = 0;
		break;
	case KEY_END:
		t->sel = t->nrows ? t->nrows - 1 : 0;
		break;
	case KEY_RESIZE:
		break;
	default:
		return;
	}
	if (c == 'S' || c == 'C' || c == 'c' || c == 'G' || c == 'g')
		build_rows(t);
}

int top__open(struct top **out, struct session *s, const struct top_opts *o)
{
	struct top *t;

	*out = NULL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->s = s;
	t->o = *o;
	t->ro = *o->ro;
	t->saved_err = -1;
	t->procs = calloc(s->o.max_procs, sizeof(*t->procs));
	t->se = series__new(3);
	if (!t->procs || !t->se) {
		top__close(t);
		return -ENOMEM;
	}
	t->tty = isatty(STDOUT_FILENO);
	if (t->tty) {
		const char *term = getenv("TERM");

		/* Names in UTF-8 drawn as characters (the environment's locale). */
		setlocale(LC_CTYPE, "");

		t->scr = newterm(term && *term ? NULL : "xterm", stdout, stdin);
		if (!t->scr) {
			top__close(t);
			return error__set(-EINVAL, "cannot use the terminal (TERM=%s)",
					  term ? term : "");
		}
		set_escdelay(25);
		cbreak();
		noecho();
		nonl();
		keypad(stdscr, TRUE);
		nodelay(stdscr, TRUE);
		curs_set(0);
		/* Messages would tear the screen: kept, shown, written out at the end. */
		fflush(stderr);
		t->err = tmpfile();
		t->saved_err = dup(STDERR_FILENO);
		if (t->err && t->saved_err >= 0)
			dup2(fileno(t->err), STDERR_FILENO);
		setvbuf(stderr, NULL, _IOLBF, 0);
	}
	*out = t;
	return 0;
}

int top__fd(const struct top *t)
{
	return t && t->tty ? STDIN_FILENO : -1;
}

bool top__round(struct top *t)
{
	bool dirty = false;
	int c;

	while (t->tty && (c = getch()) != ERR) {
		handle_key(t, c);
		dirty = true;
	}
	if (t->quit)
		return true;
	if (!t->paused && mono_now() >= t->next) {
		refresh_data(t);
		t->next = mono_now() + t->o.interval;
		if (!t->tty)
			print_plain(t);
		dirty = true;
	}
	if (t->tty && (dirty || (t->msg[0] && mono_now() >= t->msg_until)))
		draw(t);
	if (t->msg[0] && mono_now() >= t->msg_until)
		t->msg[0] = '\0';
	return false;
}

void top__close(struct top *t)
{
	char buf[4096];
	size_t n;
	int i;

	if (!t)
		return;
	if (t->scr) {
		endwin();
		delscreen(t->scr);
	}
	if (t->saved_err >= 0) {
		fflush(stderr);
		dup2(t->saved_err, STDERR_FILENO);
		close(t->saved_err);
	}
	if (t->err) {
		rewind(t->err);
		while ((n = fread(buf, 1, sizeof(buf), t->err)) > 0)
			fwrite(buf, 1, n, stderr);
		fclose(t->err);
	}
	for (i = 0; t->procs && i < t->s->o.max_procs; i++)
		proc_forget(&t->procs[i]);
	free(t->procs);
	free(t->rows);
	series__free(t->se);
	free(t);
}
