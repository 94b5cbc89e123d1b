// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "elf.h"
#include "target.h"
#include "tls.h"

#define MAX_THREADS	1024
#define SCAN		65536		/* static TLS below the thread pointer, at most */
#define PAGE		4096

struct thread {
	uint64_t tstate, tp;
	bool main;			/* the process's first thread */
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
			if (target__read(t, ts + o->tstate_thread_id, &out[n].tp, sizeof(out[n].tp)))
				return n;
			out[n].main = false;
			if (o->tstate_native_thread_id != PYTM_OFF_NONE) {
				unsigned long tid = 0;

				out[n].main = !target__read(t, ts + o->tstate_native_thread_id, &tid,
							    sizeof(tid)) && tid == (unsigned long)t->pid;
			}
			if (target__read(t, ts + o->tstate_next, &ts, sizeof(ts)))
				return n;
			if (out[n].tp)
				n++;
		}
		if (target__read(t, interp + o->interp_next, &interp, sizeof(interp)))
			break;
	}
	return n;
}

#define MAX_CAND	64

/*
 * The places in the SCAN bytes below TP that hold TSTATE, as offsets from
 * TP, into CAND (at most MAX_CAND). Returns how many.
 */
static int scan(const struct target *t, uint64_t tp, uint64_t tstate, int64_t *cand)
{
	uint64_t page[PAGE / 8], base;
	int n = 0, i;

	/* Page by page downwards: below the static TLS may lie unmapped memory. */
	for (base = tp & ~(uint64_t)(PAGE - 1); base + SCAN > tp; base -= PAGE) {
		if (target__read(t, base, page, sizeof(page)))
			break;
		for (i = 0; i < PAGE / 8 && n < MAX_CAND; i++)
			if (base + 8 * (uint64_t)i < tp && page[i] == tstate)
				cand[n++] = (int64_t)(base + 8 * (uint64_t)i - tp);
	}
	return n;
}

/* Does every thread hold, at OFF from its thread pointer, its own state or none? */
static bool agree(const struct target *t, const struct thread *th, int n, int64_t off)
{
	uint64_t v;
	int i;

	for (i = 0; i < n; i++)
		if (target__read(t, th[i].tp + (uint64_t)off, &v, sizeof(v)) ||
		    (v && v != th[i].tstate))
			return false;
	return true;
}

/*
 * The executable's own TLS block ends at the thread pointer (x86-64,
 * TLS variant II: the first module's block is the one right below it,
 * at its size rounded up to its alignment), so a variable of the
 * executable (CPython linked into it, as pyenv's and Debian's are) is at
 * its offset in the template minus that: no thread needs to run Python.
 */
static int from_elf(const struct target *t, int64_t *out)
{
	uint64_t sym, size, memsz, align;

	if (strcmp(t->pymod, t->exe) || !t->elf ||
	    elf__symbol(t->elf, "_Py_tss_tstate", &sym, &size) ||
	    elf__tls(t->elf, &memsz, &align) || sym + 8 > memsz)
		return -ENOENT;
	*out = (int64_t)sym - (int64_t)((memsz + align - 1) / align * align);
	return 0;
}

/*
 * An attached thread holds its state in the variable, and maybe in its
 * stack too. Another thread's memory is [stack | static TLS | thread
 * pointer], where a stack slot that holds its state for as long as it
 * runs (its start function's) passes every check below: only the main
 * thread, whose stack is elsewhere, is searched. Of the places nearest
 * first, the first where every thread holds its own state or none.
 * Not found while the main thread does not run Python (ask again).
 */
int tls__tstate_offset(const struct target *t, const struct pytm_offsets *o, int64_t *out)
{
	struct thread *th = calloc(MAX_THREADS, sizeof(*th));
	int64_t cand[MAX_CAND], off = INT64_MIN;
	int n, i, k, nc;

	if (!th)
		return -ENOMEM;
	n = threads(t, o, th, MAX_THREADS);
	/* The template's offset, if the threads do not contradict it. */
	if (!from_elf(t, &off) && agree(t, th, n, off)) {
		free(th);
		*out = off;
		return 0;
	}
	off = INT64_MIN;
	for (i = 0; i < n && off == INT64_MIN; i++) {
		if (!th[i].main)
			continue;
		nc = scan(t, th[i].tp, th[i].tstate, cand);
		for (k = 0; k < nc; k++)
			if (cand[k] > off && agree(t, th, n, cand[k]))
				off = cand[k];
	}
	free(th);
	if (off == INT64_MIN)
		return -EAGAIN;
	*out = off;
	return 0;
}
