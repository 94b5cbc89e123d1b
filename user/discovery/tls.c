// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "target.h"
#include "tls.h"

#define MAX_THREADS	1024
#define SCAN		65536		/* static TLS below the thread pointer, at most */
#define PAGE		4096

struct thread {
	uint64_t tstate, tp;
};

/* Up to MAX thread states of every interpreter, with their thread pointers. */
static int threads(const struct target *t, const struct pytm_offsets *o,
		   struct thread *out, int max)
{
	uint64_t interp = 0, ts = 0;
	int n = 0, steps;

	if (target__read(t, t->runtime + o->runtime_interpreters_head, &interp, sizeof(interp)))
		return 0;
	for (steps = 0; interp && steps < 64; steps++) {
		if (target__read(t, interp + o->interp_threads_head, &ts, sizeof(ts)))
			break;
		while (ts && n < max) {
			out[n].tstate = ts;
			if (target__read(t, ts + o->tstate_thread_id, &out[n].tp, sizeof(out[n].tp)) ||
			    target__read(t, ts + o->tstate_next, &ts, sizeof(ts)))
				return n;
			if (out[n].tp)
				n++;
		}
		if (target__read(t, interp + o->interp_next, &interp, sizeof(interp)))
			break;
	}
	return n;
}

/*
 * The one place in the SCAN bytes below TP that holds TSTATE, as an
 * offset from TP: 1 if found once, 0 if not, -1 if more than once.
 */
static int scan(const struct target *t, uint64_t tp, uint64_t tstate, int64_t *off)
{
	uint64_t page[PAGE / 8], base;
	int found = 0, i;

	/* Page by page downwards: below the static TLS may lie unmapped memory. */
	for (base = tp & ~(uint64_t)(PAGE - 1); base + SCAN > tp; base -= PAGE) {
		if (target__read(t, base, page, sizeof(page)))
			break;
		for (i = 0; i < PAGE / 8; i++) {
			if (base + 8 * (uint64_t)i >= tp || page[i] != tstate)
				continue;
			*off = (int64_t)(base + 8 * (uint64_t)i - tp);
			found++;
		}
	}
	return found > 1 ? -1 : found;
}

int tls__tstate_offset(const struct target *t, const struct pytm_offsets *o, int64_t *out)
{
	struct thread *th = calloc(MAX_THREADS, sizeof(*th));
	int n, i, r, found = 0, err = 0;
	int64_t off = 0;
	uint64_t v;

	if (!th)
		return -ENOMEM;
	n = threads(t, o, th, MAX_THREADS);
	for (i = 0; i < n && !found; i++) {
		r = scan(t, th[i].tp, th[i].tstate, &off);
		if (r < 0) {
			err = -ENOENT;
			goto cleanup;
		}
		found = r;
	}
	if (!found) {
		err = -EAGAIN;
		goto cleanup;
	}
	/* Every thread: its own state there, or none (not attached). */
	for (i = 0; i < n; i++) {
		if (target__read(t, th[i].tp + (uint64_t)off, &v, sizeof(v)) ||
		    (v && v != th[i].tstate)) {
			err = -ENOENT;
			goto cleanup;
		}
	}
	*out = off;
cleanup:
	free(th);
	return err;
}
