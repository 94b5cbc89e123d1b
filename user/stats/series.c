// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "hash.h"
#include "htab.h"
#include "series.h"
#include "util.h"

struct sline {
	struct series_line pub;
	struct pytm_frame_info *frames;	/* one allocation with their strings */
	uint64_t hash;
	int64_t *points;		/* window + 1, by round modulo that */
	uint64_t base;			/* its size in round 0 (grow_first) */
};

struct series {
	unsigned int window, rounds;
	double *times;			/* window + 1, by round modulo that */
	struct sline *v;
	size_t n, cap;
	struct htab index;		/* hash -> index + 1 in v */
	uint64_t seed;
};

struct series *series__new(unsigned int window)
{
	struct series *se;

	if (window < 3 || window > SERIES_WINDOW_MAX)
		return NULL;
	se = calloc(1, sizeof(*se));
	if (!se)
		return NULL;
	se->window = window;
	se->seed = hash__seed();
	se->times = calloc(window + 1, sizeof(*se->times));
	if (!se->times || htab__init(&se->index, 256)) {
		series__free(se);
		return NULL;
	}
	return se;
}

static void sline__free(struct sline *l)
{
	free(l->frames);
	free(l->points);
}

void series__free(struct series *se)
{
	size_t i;

	if (!se)
		return;
	for (i = 0; i < se->n; i++)
		sline__free(&se->v[i]);
	free(se->v);
	free(se->times);
	htab__free(&se->index);
	free(se);
}

static unsigned int slot_of(const struct series *se, unsigned int round)
{
	return round % (se->window + 1);
}

void series__begin(struct series *se, double now)
{
	unsigned int cur = slot_of(se, se->rounds);
	size_t i;

	se->times[cur] = now;
	se->rounds++;
	for (i = 0; i < se->n; i++) {
		struct series_line *p = &se->v[i].pub;

		se->v[i].points[cur] = 0;
		p->size = p->count = 0;
		p->born = 0;
	}
}

static uint64_t key_hash(const struct series *se, pid_t pid, const struct pytm_frame_info *f,
			 unsigned int n, bool zero_lineno)
{
	uint64_t h = hash__mix64(se->seed ^ ((uint64_t)(uint32_t)pid << 32 | n));
	unsigned int i;

	for (i = 0; i < n; i++) {
		h = hash__str(h, f[i].filename ? f[i].filename : "");
		h = hash__mix64(h ^ (zero_lineno ? 0 : f[i].lineno));
	}
	return h;
}

static bool key_equal(const struct sline *l, pid_t pid, const struct pytm_frame_info *f,
		      unsigned int n, bool zero_lineno)
{
	unsigned int i;

	if (l->pub.pid != pid || l->pub.nframe != n)
		return false;
	for (i = 0; i < n; i++)
		if (l->frames[i].lineno != (zero_lineno ? 0 : f[i].lineno) ||
		    strcmp(l->frames[i].filename, f[i].filename ? f[i].filename : ""))
			return false;
	return true;
}

/* A copy of the key's frames and their strings, in one allocation. */
static struct pytm_frame_info *copy_frames(const struct pytm_frame_info *f, unsigned int n,
					   bool zero_lineno)
{
	size_t len = n * sizeof(*f), i;
	struct pytm_frame_info *out;
	char *p;

	for (i = 0; i < n; i++)
		len += strlen(f[i].filename ? f[i].filename : "") + 1 +
		       (f[i].name ? strlen(f[i].name) + 1 : 0);
	out = malloc(len ?: 1);
	if (!out)
		return NULL;
	p = (char *)(out + n);
	for (i = 0; i < n; i++) {
		const char *name = f[i].filename ? f[i].filename : "";

		out[i] = f[i];
		if (zero_lineno)
			out[i].lineno = 0;
		out[i].filename = strcpy(p, name);
		p += strlen(name) + 1;
		if (f[i].name) {
			out[i].name = strcpy(p, f[i].name);
			p += strlen(f[i].name) + 1;
		}
	}
	return out;
}

static struct sline *find_or_add(struct series *se, pid_t pid, const struct report_stat *st,
				 bool zero_lineno)
{
	uint64_t h = key_hash(se, pid, st->frames, st->nframe, zero_lineno), v;
	struct sline *l;
	size_t cur = 0;

	while ((v = htab__next(&se->index, h, &cur)))
		if (key_equal(&se->v[v - 1], pid, st->frames, st->nframe, zero_lineno))
			return &se->v[v - 1];
	l = array__push((void **)&se->v, &se->n, &se->cap, sizeof(*l));
	if (!l)
		return NULL;
	l->hash = h;
	l->pub.pid = pid;
	l->pub.nframe = st->nframe;
	l->frames = copy_frames(st->frames, st->nframe, zero_lineno);
	l->points = calloc(se->window + 1, sizeof(*l->points));
	if (!l->frames || !l->points || htab__add(&se->index, h, se->n)) {
		sline__free(l);
		se->n--;
		return NULL;
	}
	l->pub.frames = l->frames;
	return l;
}

int series__add(struct series *se, const struct snapshot *snap,
		const struct report_opts *o, pid_t pid)
{
	struct report_opts all = *o;
	struct report_stats *st;
	struct report_stat x;
	unsigned int cur;
	size_t i, n;
	int err;

	if (!se->rounds)
		return -EINVAL;
	cur = slot_of(se, se->rounds - 1);
	all.top = 0;
	err = report__stats(snap, NULL, &all, &st);
	if (err)
		return err;
	n = report__stats_count(st);
	for (i = 0; i < n && !err; i++) {
		struct sline *l;

		if (report__stats_get(st, i, &x) || !x.nframe)
			continue;
		l = find_or_add(se, pid, &x, o->key == REPORT_KEY_FILENAME);
		if (!l) {
			err = -ENOMEM;
			break;
		}
		l->pub.size += x.size;
		l->pub.count += x.count;
		if (x.born && (!l->pub.born || x.born < l->pub.born))
			l->pub.born = x.born;
		l->points[cur] = (int64_t)l->pub.size;
		if (se->rounds == 1)
			l->base = l->pub.size;
	}
	report__stats_free(st);
	return err;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Growth figures of L over the rounds the window holds. */
static void analyse(const struct series *se, struct sline *l)
{
	unsigned int last = se->rounds - 1, n, i, j, k = 0, pairs;
	double slopes[66];		/* the pairs of 12 points; more are allocated */
	double *sl = slopes;
	struct series_line *p = &l->pub;
	long s = 0;

	n = se->rounds < se->window + 1 ? se->rounds : se->window + 1;
	p->grow_last = se->rounds > 1 ? l->points[slot_of(se, last)] -
					l->points[slot_of(se, last - 1)] : 0;
	p->grow_first = (int64_t)p->size - (int64_t)l->base;
	p->intervals = n - 1;
	p->grew = 0;
	p->slope = p->trend = p->z = 0;
	p->growth = l->points[slot_of(se, last)] - l->points[slot_of(se, last + 1 - n)];
	p->leak = false;
	if (n < 2)
		return;
	pairs = n * (n - 1) / 2;
	if (pairs > sizeof(slopes) / sizeof(slopes[0])) {
		sl = malloc(pairs * sizeof(*sl));
		if (!sl)
			return;
	}
	for (i = 0; i < n; i++) {
		unsigned int ri = last + 1 - n + i;
		int64_t pi = l->points[slot_of(se, ri)];

		if (i && pi > l->points[slot_of(se, ri - 1)])
			p->grew++;
		for (j = i + 1; j < n; j++) {
			unsigned int rj = last + 1 - n + j;
			int64_t pj = l->points[slot_of(se, rj)];
			double dt = se->times[slot_of(se, rj)] - se->times[slot_of(se, ri)];

			s += (pj > pi) - (pj < pi);
			sl[k++] = dt > 0 ? (double)(pj - pi) / dt * 60 : 0;
		}
	}
	qsort(sl, k, sizeof(*sl), cmp_double);
	p->slope = k & 1 ? sl[k / 2] : (sl[k / 2 - 1] + sl[k / 2]) / 2;
	p->trend = (double)s / pairs;
	/* Var(S) = n(n-1)(2n+5)/18 with no ties (ties make it smaller: this errs safe). */
	p->z = s / sqrt(n * (n - 1.0) * (2.0 * n + 5) / 18);
	p->leak = p->grew * 2 > p->intervals && p->z >= SERIES_LEAK_Z && p->slope > 0 &&
		  p->size > 0;
	if (sl != slopes)
		free(sl);
}

/* Lines FROM on go (their memory too). */
static void drop_from(struct series *se, size_t from)
{
	while (se->n > from)
		sline__free(&se->v[--se->n]);
}

void series__end(struct series *se)
{
	unsigned int n = se->rounds < se->window + 1 ? se->rounds : se->window + 1, r;
	size_t i, kept = 0;
	bool alive;

	for (i = 0; i < se->n; i++) {
		for (alive = false, r = 0; r < n && !alive; r++)
			alive = se->v[i].points[r] > 0;
		if (alive)
			se->v[kept++] = se->v[i];
		else
			sline__free(&se->v[i]);
	}
	if (kept == se->n)
		return;
	se->n = kept;
	htab__free(&se->index);
	/* No memory for the index: start over rather than keep lines it cannot find. */
	if (htab__init(&se->index, 256)) {
		drop_from(se, 0);
		return;
	}
	for (i = 0; i < se->n; i++)
		if (htab__add(&se->index, se->v[i].hash, i + 1))
			drop_from(se, i);
}

unsigned int series__rounds(const struct series *se)
{
	return se->rounds;
}

unsigned int series__window(const struct series *se)
{
	return se->window;
}

size_t series__count(const struct series *se)
{
	return se->n;
}

const struct series_line *series__line(struct series *se, size_t i)
{
	if (i >= se->n)
		return NULL;
	analyse(se, &se->v[i]);
	return &se->v[i].pub;
}

static int cmp_leak(const void *a, const void *b)
{
	const struct series_line *x = *(const struct series_line *const *)a;
	const struct series_line *y = *(const struct series_line *const *)b;

	if (x->slope != y->slope)
		return x->slope > y->slope ? -1 : 1;
	return x->size > y->size ? -1 : x->size < y->size;
}

size_t series__leaks(struct series *se, pid_t pid, const struct series_line **out,
		     size_t max)
{
	const struct series_line **all;
	size_t i, n = 0;

	all = calloc(se->n + 1, sizeof(*all));
	if (!all)
		return 0;
	for (i = 0; i < se->n; i++) {
		if (pid && se->v[i].pub.pid != pid)
			continue;
		analyse(se, &se->v[i]);
		if (se->v[i].pub.leak)
			all[n++] = &se->v[i].pub;
	}
	qsort(all, n, sizeof(*all), cmp_leak);
	memcpy(out, all, (n < max ? n : max) * sizeof(*out));
	free(all);
	return n;
}
