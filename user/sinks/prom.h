/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Prometheus metrics: the text exposition format 0.0.4, or OpenMetrics 1.0
 * (what Prometheus asks for first). Per traced process: traced bytes,
 * blocks, events, lost events, the top lines; then the tracer's own health.
 * Names and labels are listed in the man page (METRICS).
 */
#ifndef __PYTM_PROM_H
#define __PYTM_PROM_H

#include <stdbool.h>
#include <stdio.h>

struct session;

struct prom_opts {
	bool openmetrics;		/* OpenMetrics 1.0 (else text 0.0.4) */
	int top;			/* lines per process as series; 0: none */
};

/* The filename label of the series that sums the lines beyond --metrics-top. */
#define PROM_OTHER_LINES	"<other>"

#define PROM_CONTENT_TYPE	"text/plain; version=0.0.4; charset=utf-8"
#define PROM_OM_CONTENT_TYPE	"application/openmetrics-text; version=1.0.0; charset=utf-8"

/*
 * Every traced process of S, and the tracer's health, on OUT. The caller
 * holds S->front. 0 or a negative errno.
 */
int prom__write(FILE *out, struct session *s, const struct prom_opts *o);

/* Does an Accept header ask for OpenMetrics before the text format? */
bool prom__wants_openmetrics(const char *accept);

#endif /* __PYTM_PROM_H */
