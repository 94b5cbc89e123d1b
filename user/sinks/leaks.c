// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* --leaks: the lines that grow steadily, as text or a JSON document. */
#include <errno.h>
#include <stdlib.h>
#include "json.h"
#include "series.h"
#include "sink.h"
#include "tracee.h"
#include "util.h"

/* Seconds since BORN (CLOCK_MONOTONIC ns); negative: unknown. */
static double age_of(uint64_t born, double now)
{
	return born ? now - born / 1e9 : -1;
}

static void format_age(char *buf, size_t len, double s)
{
	if (s < 0)
		snprintf(buf, len, "unknown");
	else if (s < 120)
		snprintf(buf, len, "%.1f s", s);
	else if (s < 7200)
		snprintf(buf, len, "%.1f min", s / 60);
	else
		snprintf(buf, len, "%.1f h", s / 3600);
}

static void text_frame(FILE *out, const struct pytm_frame_info *f, enum report_key key)
{
	report__put_escaped(out, f->filename, NULL);
	if (key != REPORT_KEY_FILENAME)
		fprintf(out, ":%u", f->lineno);
}

static void text_leaks(FILE *out, const struct sink_leaks *r, const struct series_line **v,
		       size_t n, size_t total, double now)
{
	unsigned int rounds = series__rounds(r->se);
	char size[32], slope[32], age[32], every[32];
	size_t i;
	unsigned int f;

	if (r->exited)
		fprintf(out, "Process %d %s.\n", r->tr->pid, r->tr->execed ? "called execve" : "exited");
	if (r->header)
		fprintf(out, "== pid %d, CPython %s: %s\n", r->tr->pid, r->tr->version,
			r->tr->cmdline);
	snprintf(every, sizeof(every), "%g s", r->interval);
	if (rounds <= SERIES_LEAK_MIN) {
		fprintf(out, "[ Leaks: %u interval%s of %s so far; growth is judged over %d ]\n",
			rounds ? rounds - 1 : 0, rounds == 2 ? "" : "s", every, SERIES_LEAK_MIN);
	} else if (!total) {
		fprintf(out, "[ Leaks: no line grew steadily over the last %u intervals of %s ]\n",
			rounds - 1 < series__window(r->se) ? rounds - 1 : series__window(r->se),
			every);
	} else {
		fprintf(out, "[ Top %zu leak%s: sustained growth over the last %u intervals of %s ]\n",
			n, n == 1 ? "" : "s", v[0]->intervals, every);
	}
	for (i = 0; i < n; i++) {
		const struct series_line *l = v[i];

		text_frame(out, &l->frames[0], r->o->key);
		report__format_size(size, sizeof(size), (double)l->size, false);
		report__format_size(slope, sizeof(slope), l->slope, true);
		format_age(age, sizeof(age), age_of(l->born, now));
		fprintf(out, ": size=%s, count=%llu, %s/min, grew in %u of %u intervals, "
			"oldest block %s old\n", size, (unsigned long long)l->count, slope, l->grew,
			l->intervals, age);
		/* A traceback: its frames under it, oldest first, as Python prints one. */
		for (f = l->nframe; r->o->key == REPORT_KEY_TRACEBACK && f-- > 0;) {
			fputs("    ", out);
			text_frame(out, &l->frames[f], r->o->key);
			fputc('\n', out);
		}
	}
	fputc('\n', out);
	tracee__footer(r->tr, r->skel, out);
}

static void json_leaks(FILE *out, const struct sink_leaks *r, const struct series_line **v,
		       size_t n, size_t total, double now)
{
	struct json j;
	unsigned int f;
	size_t i;

	json__init(&j, out);
	json__begin_object(&j);
	json__name(&j, "schema");
	json__int(&j, SINK_JSON_SCHEMA);
	json__name(&j, "type");
	json__string(&j, "leaks");
	json__name(&j, "time");
	json__double(&j, real_now());
	json__name(&j, "final");
	json__bool(&j, r->final);
	json__name(&j, "exited");
	json__bool(&j, r->exited);
	tracee__json(r->tr, r->skel, &j);
	json__name(&j, "key");
	json__string(&j, report__key_name(r->o->key));
	json__name(&j, "interval");
	json__double(&j, r->interval);
	json__name(&j, "window");
	json__uint(&j, series__window(r->se));
	json__name(&j, "rounds");
	json__uint(&j, series__rounds(r->se));
	json__name(&j, "total");
	json__uint(&j, total);
	json__name(&j, "leaks");
	json__begin_array(&j);
	for (i = 0; i < n; i++) {
		const struct series_line *l = v[i];
		double age = age_of(l->born, now);

		json__begin_object(&j);
		json__name(&j, "size");
		json__uint(&j, l->size);
		json__name(&j, "count");
		json__uint(&j, l->count);
		json__name(&j, "slope");	/* bytes per minute */
		json__double(&j, l->slope);
		json__name(&j, "growth");
		json__int(&j, l->growth);
		json__name(&j, "grew");
		json__uint(&j, l->grew);
		json__name(&j, "intervals");
		json__uint(&j, l->intervals);
		json__name(&j, "trend");
		json__double(&j, l->trend);
		json__name(&j, "z");
		json__double(&j, l->z);
		json__name(&j, "oldest_age");
		if (age >= 0)
			json__double(&j, age);
		else
			json__null(&j);
		json__name(&j, "traceback");
		json__begin_array(&j);
		for (f = l->nframe; f-- > 0;) {
			json__begin_object(&j);
			json__name(&j, "filename");
			json__string(&j, l->frames[f].filename);
			json__name(&j, "lineno");
			json__uint(&j, l->frames[f].lineno);
			json__end_object(&j);
		}
		json__end_array(&j);
		json__end_object(&j);
	}
	json__end_array(&j);
	json__end_object(&j);
}

int sink__leaks(FILE *out, enum report_format format, const struct sink_leaks *r)
{
	size_t max = r->o->top > 0 ? (size_t)r->o->top : series__count(r->se);
	const struct series_line **v;
	double now = mono_now();
	size_t total, n;

	v = calloc(max + 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	total = series__leaks(r->se, r->tr->pid, v, max);
	n = total < max ? total : max;
	if (format == REPORT_FORMAT_JSON)
		json_leaks(out, r, v, n, total, now);
	else
		text_leaks(out, r, v, n, total, now);
	free(v);
	return fflush(out) || ferror(out) ? -EIO : 0;
}
