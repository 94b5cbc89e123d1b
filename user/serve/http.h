/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * --serve: an HTTP server (libmicrohttpd, in a thread of its own) for the
 * engines fleets run: /metrics for Prometheus, /debug/pprof/heap (and
 * /allocs) for pprof-based profilers, /snapshot for tracemalloc pickles.
 * A request reads the session under session->front, like the main loop.
 *
 *   http__parse_addr → http__start → ... → http__stop
 */
#ifndef __PYTM_HTTP_H
#define __PYTM_HTTP_H

#include <stdbool.h>
#include <sys/socket.h>

struct session;
struct http;

struct http_opts {
	struct sockaddr_storage addr;	/* where to listen (http__parse_addr) */
	socklen_t addrlen;
	int metrics_top;		/* --metrics-top: lines per process */
	int frames;			/* frames per traceback in profiles */
	int pickle;			/* /snapshot layout; 0: the target's */
	int max_conns;			/* connections at once */
	int timeout;			/* seconds a connection may stay idle */
};

/* "ADDR:PORT", ":PORT", "PORT" or "[V6]:PORT" (default address 127.0.0.1). */
int http__parse_addr(const char *spec, struct http_opts *o);
/* Listen and serve S. Negative errno with a message shown. */
int http__start(struct http **out, struct session *s, const struct http_opts *o);
/* "http://127.0.0.1:8080", the address actually bound (port 0 picks one). */
const char *http__url(const struct http *h);
/* Stop serving (finishes the request in progress). Safe on NULL. */
void http__stop(struct http *h);

#endif /* __PYTM_HTTP_H */
