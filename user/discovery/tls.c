// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
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
 * Where the dynamic linker put each module's static TLS block: below the
 * thread pointer (x86-64, TLS variant II), module by module in the order
 * they were loaded at start (the link map's), each at its size rounded
 * up to its alignment past the previous ones, or in a gap the alignment
 * left, as glibc lays them out (_dl_determine_tlsoffset). From outside:
 * the link map through the dynamic linker's _r_debug, each module's
 * PT_TLS from its file. CPython's module (the executable, or libpython
 * loaded at start) gives _Py_tss_tstate's offset: its place in the
 * template less its block's offset. No thread needs to run Python.
 */
#define MAX_MODULES	1024

struct tls_layout {
	uint64_t offset, freetop, freebottom;
};

static uint64_t roundup(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

/* The next module's block (MEMSZ, ALIGN): its offset below the thread pointer. */
static uint64_t tls_place(struct tls_layout *l, uint64_t memsz, uint64_t align)
{
	uint64_t off;

	if (l->freebottom - l->freetop >= memsz) {
		off = roundup(l->freetop + memsz, align);
		if (off <= l->freebottom) {
			l->freetop = off;
			return off;
		}
	}
	off = roundup(l->offset + memsz, align);
	if (off > l->offset + memsz + (l->freebottom - l->freetop)) {
		l->freetop = l->offset;
		l->freebottom = off - memsz;
	}
	l->offset = off;
	return off;
}

/* The string at ADDR, read up to each page's end at once (the next may be unmapped). */
static int read_str(const struct target *t, uint64_t addr, char *buf, size_t len)
{
	size_t done = 0, n;

	while (done + 1 < len) {
		n = PAGE - ((addr + done) & (PAGE - 1));
		if (n > len - 1 - done)
			n = len - 1 - done;
		if (target__read(t, addr + done, buf + done, n))
			return -EFAULT;
		if (memchr(buf + done, '\0', n))
			return 0;
		done += n;
	}
	return -ENAMETOOLONG;
}

static bool same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return !stat(a, &sa) && !stat(b, &sb) && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* CPython's block offset from the link map, into *OFF. */
static int python_block(const struct target *t, uint64_t *off)
{
	char name[PATH_MAX], host[PATH_MAX];
	struct tls_layout l = { 0 };
	const struct mapping *ld = NULL;
	struct elf_file *ef;
	uint64_t r_debug, lm, name_at, memsz, align, place;
	const char *base;
	int i, err;

	for (i = 0; i < t->nmaps && !ld; i++) {
		base = t->maps[i].path ? strrchr(t->maps[i].path, '/') : NULL;
		if (base && !strncmp(base + 1, "ld-linux", 8) && t->maps[i].offset == 0)
			ld = &t->maps[i];
	}
	if (!ld)
		return -ENOENT;
	target__host_path(t, ld->path, host, sizeof(host));
	ef = elf__open(host);
	err = ef && !elf__symbol(ef, "_r_debug", &r_debug, NULL) ? 0 : -ENOENT;
	if (!err)
		r_debug += target__load_bias(t, ld->path, ef);
	elf__close(ef);
	/* struct r_debug: int r_version; struct link_map *r_map; ... */
	if (err || target__read(t, r_debug + 8, &lm, sizeof(lm)))
		return -ENOENT;
	/* struct link_map: l_addr, l_name, l_ld, l_next, l_prev (the public part) */
	for (i = 0; lm && i < MAX_MODULES; i++) {
		if (target__read(t, lm + 8, &name_at, sizeof(name_at)) ||
		    read_str(t, name_at, name, sizeof(name)))
			return -EIO;
		if (!name[0] && i == 0)
			snprintf(name, sizeof(name), "%s", t->exe);	/* the program */
		if (strchr(name, '/')) {
			target__host_path(t, name, host, sizeof(host));
			ef = elf__open(host);
			if (!ef)
				return -EIO;	/* a module we cannot read: no layout */
			err = elf__tls(ef, &memsz, &align);
			elf__close(ef);
			if (err == -EINVAL)
				return err;	/* not the simple case: leave it */
			if (!err) {
				place = tls_place(&l, memsz, align);
				if (same_file(host, t->pymod_host)) {
					*off = place;
					return 0;
				}
			}
		}	/* else the vDSO: no TLS */
		if (target__read(t, lm + 24, &lm, sizeof(lm)))
			return -EIO;
	}
	return -ENOENT;		/* loaded later (dlopen): dynamic TLS */
}

static int from_elf(const struct target *t, int64_t *out)
{
	uint64_t sym, block;
	int err;

	if (!t->elf || elf__symbol(t->elf, "_Py_tss_tstate", &sym, NULL))
		return -ENOENT;
	err = python_block(t, &block);
	if (err)
		return err;
	if (sym + 8 > block)
		return -ENOENT;
	*out = (int64_t)sym - (int64_t)block;
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
int tls__tstate_offset(const struct target *t, const struct pytm_offsets *o,
		       struct tls_static *layout, int64_t *out)
{
	struct thread *th = calloc(MAX_THREADS, sizeof(*th));
	int64_t cand[MAX_CAND], off = INT64_MIN;
	int n, i, k, nc;

	if (!th)
		return -ENOMEM;
	n = threads(t, o, th, MAX_THREADS);
	/*
	 * The layout's offset, once a thread is seen there with its own state
	 * (a module loaded later has its TLS elsewhere: never seen there), if
	 * no thread contradicts it.
	 */
	if (!layout->known) {
		layout->err = from_elf(t, &layout->off);
		layout->known = layout->err != -EIO;	/* a read that failed: again */
	}
	off = layout->off;
	if (!layout->err && agree(t, th, n, off)) {
		for (i = 0; i < n; i++) {
			uint64_t v;

			if (!target__read(t, th[i].tp + (uint64_t)off, &v, sizeof(v)) &&
			    v == th[i].tstate) {
				free(th);
				*out = off;
				return 0;
			}
		}
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
