/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * 3.12+ keep the running thread's PyThreadState in a thread-local
 * variable (_Py_tss_tstate). In libpython's static TLS it lies at one
 * offset from every thread's thread pointer (x86-64: %fs:0, which is also
 * pthread_self(), which CPython stores in each PyThreadState's
 * thread_id). The in-target recorder reads it there (page/recorder.c,
 * pytm_rec_tstate); this finds the offset from outside.
 */
#ifndef __PYTM_TLS_H
#define __PYTM_TLS_H

#include <stdbool.h>
#include <stdint.h>
#include "pytm.h"

struct target;

/* The static TLS layout's offset, worked out once per process (zeroed: not yet). */
struct tls_static {
	bool known;
	int err;			/* 0: OFF is the layout's offset */
	int64_t off;
};

/*
 * The offset of _Py_tss_tstate from the thread pointer, into *OUT: of the
 * places in the 64 KiB below the thread pointer of a thread attached now
 * that hold its own state (the variable, and maybe its stack below it),
 * the nearest where every thread of T (offsets O) holds its own state or
 * none. -EAGAIN if none is found (no thread attached now: ask again).
 * LAYOUT keeps what the static TLS layout gives between calls (the link
 * map and each module's ELF are read at the first only).
 */
int tls__tstate_offset(const struct target *t, const struct pytm_offsets *o,
		       struct tls_static *layout, int64_t *out);

#endif /* __PYTM_TLS_H */
