// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <time.h>
#include "flame.h"
#include "json.h"
#include "sink.h"
#include "snapshot.h"
#include "tracee.h"
#include "util.h"

static void text_header(FILE *out, const struct tracee *tr)
{
	fprintf(out, "== pid %d", tr->pid);
	if (tr->nspid != tr->pid)
		fprintf(out, " (pid %d in its namespace)", tr->nspid);
	if (tr->ppid)
		fprintf(out, " forked from %d", tr->ppid);
	if (tr->container[0])
		fprintf(out, " container %s", tr->container);
	fprintf(out, ", CPython %s: %s\n", tr->version, tr->cmdline);
}

static int text_report(FILE *out, const struct sink_report *r,
		       const struct report_stats *st)
{
	int err;

	if (r->peak_at) {
		char when[32], total[32];
		time_t t = (time_t)r->peak_at;

		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&t));
		report__format_size(total, sizeof(total), (double)snapshot__total_size(r->snap),
				    false);
		fprintf(out, "Peak of process %d: the live set at %s, when traced memory last "
			"grew past its peak by 1%% (%s)\n", r->tr->pid, when, total);
		return report__print_stats(out, st, r->o);
	}
	if (r->tr && r->exited && r->tr->execed)
		fprintf(out, "Process %d called execve: what it ran before.\n", r->tr->pid);
	else if (r->tr && r->exited)
		fprintf(out, "Process %d exited.\n", r->tr->pid);
	if (r->tr && r->header)
		text_header(out, r->tr);
	err = report__print_stats(out, st, r->o);
	if (r->tr) {
		fputc('\n', out);
		tracee__footer(r->tr, r->skel, out);
	}
	return err;
}

static void json_begin(struct json *j, const char *type)
{
	json__begin_object(j);
	json__name(j, "schema");
	json__int(j, SINK_JSON_SCHEMA);
	json__name(j, "type");
	json__string(j, type);
	json__name(j, "time");
	json__double(j, real_now());
}

static int json_report(FILE *out, const struct sink_report *r,
		       const struct report_stats *st)
{
	struct json j;

	json__init(&j, out);
	json_begin(&j, r->peak_at ? "peak" : "report");
	if (r->peak_at) {
		json__name(&j, "at");
		json__double(&j, r->peak_at);
		json__name(&j, "size");
		json__uint(&j, snapshot__total_size(r->snap));
	}
	json__name(&j, "final");
	json__bool(&j, r->final);
	json__name(&j, "exited");
	json__bool(&j, r->exited);
	if (r->tr) {
		tracee__json(r->tr, r->skel, &j);
	} else {
		json__name(&j, "source");
		json__begin_object(&j);
		json__name(&j, "file");
		json__string(&j, r->file);
		json__name(&j, "traces");
		json__uint(&j, snapshot__count(r->snap));
		json__end_object(&j);
	}
	json__name(&j, "traceback_limit");
	json__int(&j, snapshot__traceback_limit(r->snap));
	json__name(&j, "key");
	json__string(&j, report__key_name(r->o->key));
	json__name(&j, "cumulative");
	json__bool(&j, r->o->cumulative);
	json__name(&j, "compare_to");
	json__string(&j, r->old ? r->old_name : NULL);
	json__name(&j, "total");
	json__uint(&j, report__stats_count(st));
	json__name(&j, "statistics");
	report__json_stats(&j, st, r->o);
	json__end_object(&j);
	return ferror(out) ? -EIO : 0;
}

/* What a flame graph is of: "pid N (command), CPython V" or the file's name. */
static void flame_title(char *buf, size_t len, const struct sink_report *r)
{
	if (r->tr)
		snprintf(buf, len, "%s of pid %d (%s), CPython %s",
			 r->peak_at ? "Peak live memory" : "Live memory", r->tr->pid,
			 r->tr->cmdline, r->tr->version);
	else
		snprintf(buf, len, "Live memory of %s", r->file ? r->file : "a snapshot");
}

static int flame_report(FILE *out, enum report_format format, const struct sink_report *r)
{
	char title[512], root[32];

	if (format == REPORT_FORMAT_FOLDED) {
		/* Several processes in one stream: each under a frame of its own. */
		if (r->tr && r->header)
			snprintf(root, sizeof(root), "pid %d", r->tr->pid);
		return flame__write_folded(out, r->snap, r->o, r->tr && r->header ? root : NULL);
	}
	flame_title(title, sizeof(title), r);
	if (format == REPORT_FORMAT_SVG)
		return flame__write_svg(out, r->snap, r->o, title);
	return flame__write_html(out, r->snap, r->o, title);
}

int sink__report(FILE *out, enum report_format format, const struct sink_report *r)
{
	struct report_stats *st;
	int err;

	if (report__format_is_graph(format)) {
		err = flame_report(out, format, r);
		if (!err && fflush(out))
			err = -errno;
		return err;
	}
	err = report__stats(r->snap, r->old, r->o, &st);
	if (err)
		return err;
	err = format == REPORT_FORMAT_JSON ? json_report(out, r, st) : text_report(out, r, st);
	report__stats_free(st);
	if (!err && fflush(out))
		err = -errno;
	return err;
}

void sink__round(FILE *out, enum report_format format)
{
	char stamp[32];
	time_t t = time(NULL);

	if (format != REPORT_FORMAT_TEXT)
		return;
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", localtime(&t));
	fprintf(out, "%s\n", stamp);
}

void sink__gap(FILE *out, enum report_format format)
{
	if (format == REPORT_FORMAT_TEXT)
		fputc('\n', out);
}

void sink__summary(FILE *out, enum report_format format,
		   const struct sink_summary_row *rows, int n)
{
	char cur[32], peak[32];
	uint64_t sampled = 0;
	struct json j;
	int i;

	if (report__format_is_graph(format))
		return;		/* the graphs are the whole output */
	if (format == REPORT_FORMAT_JSON) {
		json__init(&j, out);
		json_begin(&j, "summary");
		json__name(&j, "processes");
		json__begin_array(&j);
		for (i = 0; i < n; i++) {
			json__begin_object(&j);
			tracee__json_identity(rows[i].tr, &j);
			json__name(&j, "current");
			json__int(&j, rows[i].current);
			json__name(&j, "peak");
			json__int(&j, rows[i].peak);
			json__name(&j, "sample_rate");
			if (rows[i].tr->sample_rate)
				json__uint(&j, rows[i].tr->sample_rate);
			else
				json__null(&j);
			json__end_object(&j);
		}
		json__end_array(&j);
		json__end_object(&j);
		fflush(out);
		return;
	}
	fprintf(out, "[ Host summary: %d process%s ]\n", n, n == 1 ? "" : "es");
	fprintf(out, "%8s %8s %-12s %-8s %10s %10s  %s\n", "PID", "NSPID", "CONTAINER",
		"PYTHON", "CURRENT", "PEAK", "COMMAND");
	for (i = 0; i < n; i++) {
		const struct tracee *tr = rows[i].tr;

		report__format_size(cur, sizeof(cur), (double)rows[i].current, false);
		report__format_size(peak, sizeof(peak), (double)rows[i].peak, false);
		fprintf(out, "%8d %8d %-12s %-8s %10s %10s  %s\n", tr->pid, tr->nspid,
			tr->container[0] ? tr->container : "-", tr->version, cur, peak,
			tr->cmdline);
		if (tr->sample_rate)
			sampled = tr->sample_rate;
	}
	if (sampled) {
		report__format_size(cur, sizeof(cur), (double)sampled, false);
		fprintf(out, "(sampled processes: estimates, 1 sample per %s allocated on average)\n",
			cur);
	}
	fflush(out);
}
