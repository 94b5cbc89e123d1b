// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * libmicrohttpd runs one thread with epoll: a slow or silent client costs a
 * connection slot and nothing else (timeouts free it), and requests are
 * answered one at a time, each under session->front. What a request costs
 * (snapshots of every process) is paid once per moment: an answer is kept
 * for a short while and handed to every client that asks the same, so a
 * crowd of clients costs no more memory or CPU than one.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <microhttpd.h>
#include "http.h"
#include "pprof.h"
#include "prom.h"
#include "session.h"
#include "snapshot.h"
#include "tracee.h"
#include "util.h"

#define CACHE_SLOTS	8
#define CACHE_TTL	0.5		/* seconds an answer is reused */

struct cached {
	char key[96];			/* path?query */
	struct MHD_Response *resp;
	unsigned int status;
	double at;
};

struct http {
	struct MHD_Daemon *d;
	struct session *s;
	struct http_opts o;
	char url[96];
	struct cached cache[CACHE_SLOTS];
};

/* ---- the address ---- */

int http__parse_addr(const char *spec, struct http_opts *o)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICSERV };
	char host[256] = "127.0.0.1", port[16];
	const char *colon;
	struct addrinfo *ai = NULL;
	long long v;
	size_t n;

	if (spec[0] == '[') {
		colon = strstr(spec, "]:");
		if (!colon || colon - spec - 1 >= (long)sizeof(host))
			return -EINVAL;
		n = colon - spec - 1;
		memcpy(host, spec + 1, n);
		host[n] = 0;
		colon++;
	} else {
		colon = strrchr(spec, ':');
		if (colon && colon != spec) {
			n = colon - spec;
			if (n >= sizeof(host) || memchr(spec, ':', n))
				return -EINVAL;
			memcpy(host, spec, n);
			host[n] = 0;
		}
	}
	if (parse_num(colon ? colon + 1 : spec, 0, 65535, &v))
		return -EINVAL;
	snprintf(port, sizeof(port), "%lld", v);
	if (getaddrinfo(host, port, &hints, &ai) || !ai)
		return -EINVAL;
	memcpy(&o->addr, ai->ai_addr, ai->ai_addrlen);
	o->addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

/* ---- answers ---- */

struct answer {
	unsigned int status;
	const char *type;
	char *body;			/* malloc'd */
	size_t len;
	char disposition[64];
};

static void answer_text(struct answer *a, unsigned int status, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&a->body, fmt, ap);
	va_end(ap);
	a->status = status;
	a->type = "text/plain; charset=utf-8";
	a->len = n < 0 ? 0 : (size_t)n;
	if (n < 0)
		a->body = NULL;
}

struct args {
	const char *path;
	const char *const *allowed;	/* parameters this path takes */
	const char *pid;
	const char *peak;		/* /snapshot: "1" for the set at the peak */
	const char *bad;		/* the first parameter it does not take */
};

static enum MHD_Result arg_iter(void *cls, enum MHD_ValueKind kind,
				const char *key, const char *value)
{
	struct args *a = cls;
	const char *const *p;

	for (p = a->allowed; *p && strcmp(*p, key); p++)
		;
	if (!*p) {
		if (!a->bad)
			a->bad = key;
		return MHD_YES;
	}
	if (!strcmp(key, "pid"))
		a->pid = value ?: "";
	if (!strcmp(key, "peak"))
		a->peak = value ?: "";
	return MHD_YES;
}

/* ?pid=N: the traced process N (0 when absent and ALLOW_ALL). */
static struct tracee *pid_arg(struct http *h, const struct args *args, bool allow_all,
			      struct answer *a)
{
	struct tracee *tr;
	long long v;

	if (!args->pid) {
		if (!allow_all)
			answer_text(a, MHD_HTTP_BAD_REQUEST, "error: %s needs ?pid=N\n", args->path);
		return NULL;
	}
	if (parse_num(args->pid, 1, INT_MAX, &v)) {
		answer_text(a, MHD_HTTP_BAD_REQUEST, "error: invalid pid\n");
		return NULL;
	}
	tr = session__find(h->s, v);
	if (!tr || !tracee__traced(tr)) {
		answer_text(a, MHD_HTTP_NOT_FOUND, "error: process %lld is not traced\n", v);
		return NULL;
	}
	return tr;
}

static void get_metrics(struct http *h, struct MHD_Connection *c, struct answer *a)
{
	const char *accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");
	struct prom_opts po = { .openmetrics = prom__wants_openmetrics(accept),
				.top = h->o.metrics_top };
	FILE *f = open_memstream(&a->body, &a->len);
	int err;

	if (!f) {
		answer_text(a, MHD_HTTP_INTERNAL_SERVER_ERROR, "error: out of memory\n");
		return;
	}
	err = prom__write(f, h->s, &po);
	fclose(f);
	if (err) {
		free(a->body);
		answer_text(a, MHD_HTTP_INTERNAL_SERVER_ERROR, "error: %s\n", strerror(-err));
		return;
	}
	a->status = MHD_HTTP_OK;
	a->type = po.openmetrics ? PROM_OM_CONTENT_TYPE : PROM_CONTENT_TYPE;
}

/* One process (TR), or every traced one, as one gzipped pprof profile. */
static void get_pprof(struct http *h, struct tracee *tr, bool allocs, struct answer *a)
{
	struct session *s = h->s;
	struct pprof_proc *procs;
	struct pprof_opts po = { .time_nanos = (int64_t)(real_now() * 1e9),
				 .pid_label = true, .alloc_default = allocs };
	struct pprof_buf buf = {};
	double since = 0;
	int i, n = 0, err = 0;

	procs = calloc(s->ntracees + 1, sizeof(*procs));
	if (!procs) {
		answer_text(a, MHD_HTTP_INTERNAL_SERVER_ERROR, "error: out of memory\n");
		return;
	}
	for (i = 0; i < s->ntracees; i++) {
		struct tracee *t = &s->tracees[i];
		struct pprof_proc *p = &procs[n];

		if (!tracee__traced(t) || (tr && t != tr))
			continue;
		p->live = session__snapshot(s, t, h->o.frames);
		if (!p->live) {
			err = -errno;
			break;
		}
		if (t->sample_rate) {
			p->allocs = session__alloc_snapshot(s, t, h->o.frames);
			if (!p->allocs) {
				err = -errno;
				n++;
				break;
			}
		}
		/* One period for the profile: the rate, if they all share one. */
		if (!n)
			po.period = t->sample_rate;
		else if (po.period != t->sample_rate)
			po.period = 0;
		p->pid = t->pid;
		p->ppid = t->ppid;
		p->container = t->container;
		if (!since || t->attached_at < since)
			since = t->attached_at;
		n++;
	}
	if (since)
		po.duration_nanos = (int64_t)((real_now() - since) * 1e9);
	if (!err)
		err = pprof__encode(procs, n, &po, &buf);
	for (i = 0; i < n; i++) {
		snapshot__free((struct snapshot *)procs[i].live);
		snapshot__free((struct snapshot *)procs[i].allocs);
	}
	free(procs);
	if (err) {
		pprof_buf__free(&buf);
		answer_text(a, MHD_HTTP_INTERNAL_SERVER_ERROR, "error: %s\n", strerror(-err));
		return;
	}
	a->status = MHD_HTTP_OK;
	a->type = "application/octet-stream";
	a->body = (char *)buf.data;
	a->len = buf.len;
	snprintf(a->disposition, sizeof(a->disposition), "attachment; filename=\"%s\"",
		 allocs ? "allocs.pb.gz" : "heap.pb.gz");
}

static void get_snapshot(struct http *h, struct tracee *tr, bool peak, struct answer *a)
{
	uint64_t peak_ns;
	struct snapshot *snap = peak ? session__peak_snapshot(h->s, tr, h->o.frames, &peak_ns) :
				       session__snapshot(h->s, tr, h->o.frames);
	FILE *f;
	int err;

	if (!snap) {
		answer_text(a, MHD_HTTP_INTERNAL_SERVER_ERROR, "error: %s\n", strerror(errno));
		return;
	}
	f = open_memstream(&a->body, &a->len);
	err = f ? snapshot__write_stream(snap, f, h->o.pickle ?: tr->pickle) : -ENOMEM;
	if (f)
		fclose(f);
	snapshot__free(snap);
	if (err) {
		free(a->body);
		answer_text(a, MHD_HTTP_INTERNAL_SERVER_ERROR, "error: %s\n", strerror(-err));
		return;
	}
	a->status = MHD_HTTP_OK;
	a->type = "application/octet-stream";
	snprintf(a->disposition, sizeof(a->disposition),
		 "attachment; filename=\"pid-%d%s.pytm\"", tr->pid, peak ? ".peak" : "");
}

static void get_index(struct http *h, struct answer *a)
{
	FILE *f = open_memstream(&a->body, &a->len);
	int i;

	if (!f) {
		answer_text(a, MHD_HTTP_INTERNAL_SERVER_ERROR, "error: out of memory\n");
		return;
	}
	fprintf(f, "pytm-bpf: Python's tracemalloc, from outside\n\n"
		"/metrics                     Prometheus metrics (OpenMetrics on request)\n"
		"/debug/pprof/heap[?pid=N]    pprof heap profile, in use (gzipped protobuf)\n"
		"/debug/pprof/allocs[?pid=N]  the same, allocations since attach first (sampled)\n"
		"/snapshot?pid=N              tracemalloc snapshot (Snapshot.load)\n"
		"/snapshot?pid=N&peak=1       the same, at the peak (with --peak)\n\n"
		"Traced processes:\n");
	for (i = 0; i < h->s->ntracees; i++) {
		const struct tracee *t = &h->s->tracees[i];

		if (tracee__traced(t))
			fprintf(f, "%d\tCPython %s\t%s\n", t->pid, t->version, t->cmdline);
	}
	fclose(f);
	a->status = MHD_HTTP_OK;
	a->type = "text/plain; charset=utf-8";
}

static void route(struct http *h, struct MHD_Connection *c, const char *url,
		  struct answer *a)
{
	static const char *const none[] = { NULL };
	static const char *const snapshot_args[] = { "pid", "peak", NULL };
	/* Go's handlers take gc=1 and debug=0: accepted, nothing to do. */
	static const char *const pprof_args[] = { "pid", "gc", "debug", NULL };
	struct args args = { .path = url, .allowed = none };
	struct tracee *tr = NULL;
	const char *debug;

	if (!strcmp(url, "/snapshot"))
		args.allowed = snapshot_args;
	else if (!strcmp(url, "/debug/pprof/heap") || !strcmp(url, "/debug/pprof/allocs"))
		args.allowed = pprof_args;
	MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, arg_iter, &args);
	if (strcmp(url, "/") && strcmp(url, "/metrics") && strcmp(url, "/snapshot") &&
	    strcmp(url, "/debug/pprof/heap") && strcmp(url, "/debug/pprof/allocs")) {
		answer_text(a, MHD_HTTP_NOT_FOUND, "error: no such path (see /)\n");
		return;
	}
	if (args.bad) {
		answer_text(a, MHD_HTTP_BAD_REQUEST, "error: %s takes no parameter '%s'\n",
			    url, args.bad);
		return;
	}
	debug = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "debug");
	if (debug && strcmp(debug, "0")) {
		answer_text(a, MHD_HTTP_BAD_REQUEST,
			    "error: only the binary profile is served (debug=0)\n");
		return;
	}
	if (!strcmp(url, "/")) {
		get_index(h, a);
	} else if (!strcmp(url, "/metrics")) {
		get_metrics(h, c, a);
	} else if (!strcmp(url, "/snapshot")) {
		if (args.peak && strcmp(args.peak, "0") && strcmp(args.peak, "1")) {
			answer_text(a, MHD_HTTP_BAD_REQUEST, "error: peak takes 0 or 1\n");
			return;
		}
		tr = pid_arg(h, &args, false, a);
		if (tr && args.peak && !strcmp(args.peak, "1") && !tr->peak_step) {
			answer_text(a, MHD_HTTP_BAD_REQUEST,
				    "error: the peak is kept only with --peak\n");
			return;
		}
		if (tr)
			get_snapshot(h, tr, args.peak && !strcmp(args.peak, "1"), a);
	} else {
		tr = pid_arg(h, &args, true, a);
		if (tr || !args.pid)
			get_pprof(h, tr, !strcmp(url, "/debug/pprof/allocs"), a);
	}
}

/* ---- the cache of recent answers ---- */

static struct cached *cache_find(struct http *h, const char *key, double now)
{
	int i;

	for (i = 0; i < CACHE_SLOTS; i++)
		if (h->cache[i].resp && now - h->cache[i].at < CACHE_TTL &&
		    !strcmp(h->cache[i].key, key))
			return &h->cache[i];
	return NULL;
}

static void cache_put(struct http *h, const char *key, struct MHD_Response *resp,
		      unsigned int status, double now)
{
	struct cached *slot = &h->cache[0];
	int i;

	for (i = 1; i < CACHE_SLOTS; i++)
		if (!h->cache[i].resp || h->cache[i].at < slot->at)
			slot = &h->cache[i];
	if (slot->resp)
		MHD_destroy_response(slot->resp);	/* queued copies keep theirs */
	snprintf(slot->key, sizeof(slot->key), "%s", key);
	slot->resp = resp;
	slot->status = status;
	slot->at = now;
}

static void cache_clear(struct http *h)
{
	int i;

	for (i = 0; i < CACHE_SLOTS; i++) {
		if (h->cache[i].resp)
			MHD_destroy_response(h->cache[i].resp);
		h->cache[i].resp = NULL;
	}
}

static enum MHD_Result query_key(void *cls, enum MHD_ValueKind kind,
				 const char *key, const char *value)
{
	char *k = cls;
	size_t n = strlen(k);

	snprintf(k + n, 96 - n, "%c%s=%s", strchr(k, '?') ? '&' : '?', key, value ?: "");
	return MHD_YES;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
			      const char *method, const char *version,
			      const char *upload_data, size_t *upload_data_size,
			      void **con_cls)
{
	struct http *h = cls;
	struct answer a = {};
	struct MHD_Response *resp;
	struct cached *hit;
	char key[96] = "";
	double now = mono_now();
	enum MHD_Result ret;
	const char *accept;

	if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
		answer_text(&a, MHD_HTTP_METHOD_NOT_ALLOWED, "error: only GET and HEAD\n");
		goto respond;
	}
	/* /metrics answers in the format asked: that is part of the key. */
	accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept");
	snprintf(key, sizeof(key), "%c%s", prom__wants_openmetrics(accept) ? 'o' : 't', url);
	MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, query_key, key);
	pthread_mutex_lock(&h->s->front);
	hit = strlen(key) < sizeof(key) - 1 ? cache_find(h, key, now) : NULL;
	if (hit) {
		ret = MHD_queue_response(c, hit->status, hit->resp);
		pthread_mutex_unlock(&h->s->front);
		return ret;
	}
	route(h, c, url, &a);
	pthread_mutex_unlock(&h->s->front);

respond:
	if (!a.body)
		answer_text(&a, MHD_HTTP_INTERNAL_SERVER_ERROR, "error: out of memory\n");
	resp = MHD_create_response_from_buffer(a.len, a.body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(a.body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, a.type);
	if (a.status == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	if (a.disposition[0])
		MHD_add_response_header(resp, "Content-Disposition", a.disposition);
	ret = MHD_queue_response(c, a.status, resp);
	if (a.status == MHD_HTTP_OK && strlen(key) < sizeof(key) - 1)
		cache_put(h, key, resp, a.status, now);
	else
		MHD_destroy_response(resp);
	return ret;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[256];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	buf[strcspn(buf, "\n")] = 0;
	vlog("http: %s", buf);
}

int http__start(struct http **out, struct session *s, const struct http_opts *o)
{
	const union MHD_DaemonInfo *info;
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	char host[INET6_ADDRSTRLEN], port[8];
	struct http *h;
	int err;

	*out = NULL;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->s = s;
	h->o = *o;
	h->d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG |
				/* [::] takes IPv4 too, as most servers do. */
				(o->addr.ss_family == AF_INET6 ? MHD_USE_DUAL_STACK : 0),
				0, NULL, NULL, handle, h,
				MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&o->addr,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned int)o->max_conns,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)o->timeout,
				MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
				MHD_OPTION_END);
	if (!h->d) {
		err = errno ? -errno : -EADDRINUSE;
		warn("cannot serve HTTP: %s", strerror(-err));
		free(h);
		return err;
	}
	info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_LISTEN_FD);
	if (info && !getsockname(info->listen_fd, (struct sockaddr *)&bound, &blen) &&
	    !getnameinfo((struct sockaddr *)&bound, blen, host, sizeof(host), port,
			 sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV))
		snprintf(h->url, sizeof(h->url), bound.ss_family == AF_INET6 ?
			 "http://[%s]:%s" : "http://%s:%s", host, port);
	*out = h;
	return 0;
}

const char *http__url(const struct http *h)
{
	return h->url;
}

void http__stop(struct http *h)
{
	if (!h)
		return;
	MHD_stop_daemon(h->d);
	cache_clear(h);
	free(h);
}
