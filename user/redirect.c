// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "redirect.h"
#include "target.h"
#include "util.h"

/*
 * Page layout: a header, the original function pointers, then one 64-byte
 * trampoline per (domain, kind). The code never changes between versions
 * of a layout, so a page left by an earlier run is reused as it is.
 */
#define PAGE_SIZE_	4096
#define MAGIC		"pytm-bpf tramp2"	/* 16 bytes with the NUL */
#define ORIG_OFF	16
#define CODE_OFF	256
#define TRAMP_SIZE	64

static size_t tramp_off(int d, int k)
{
	return CODE_OFF + (d * REDIRECT_KINDS + k) * TRAMP_SIZE;
}

static size_t orig_off(int d, int k)
{
	return ORIG_OFF + (d * REDIRECT_KINDS + k) * 8;
}

/*
 * Offsets of the probe sites inside each kind's trampoline: the exit site
 * (after the call: result and arguments in registers) and, for calls that
 * return a block, an entry site (before it), probed only when a hook layer
 * below us may make nested allocator calls at other addresses.
 */
static const size_t site_in_tramp[REDIRECT_KINDS] = {
	[0] = 13,	/* malloc: nop5; push; call; pop | nop5 */
	[1] = 23,	/* calloc: nop5; push x2; sub; call; add; pop x2 | nop5 */
	[2] = 23,	/* realloc: same frame as calloc */
	[3] = 0,	/* free: nop5 first, then the tail jump */
};

static void put_disp(uint8_t *code, size_t at, size_t next_insn, size_t target)
{
	int32_t disp = (int32_t)((int64_t)target - (int64_t)next_insn);

	memcpy(code + at, &disp, 4);
}

/*
 * Emit trampoline (D, K) at PAGE + off. System V: the caller's call left
 * rsp = 8 mod 16; the pushes below keep the callee's alignment right.
 */
static void emit(uint8_t *page, int d, int k)
{
	static const uint8_t nop5[5] = { 0x0f, 0x1f, 0x44, 0x00, 0x00 };
	size_t off = tramp_off(d, k), o = orig_off(d, k), i = off;
	uint8_t *c = page;

	if (k != 3) {
		memcpy(c + i, nop5, sizeof(nop5));	/* the entry site */
		i += sizeof(nop5);
	}
	switch (k) {
	case 0: /* malloc(ctx, size): rsi = size at the site, rax = block */
		c[i++] = 0x56;				/* push %rsi */
		c[i++] = 0xff; c[i++] = 0x15;		/* call *orig(%rip) */
		put_disp(c, i, i + 4, o); i += 4;
		c[i++] = 0x5e;				/* pop %rsi */
		break;
	case 1: /* calloc(ctx, nelem, elsize) */
	case 2: /* realloc(ctx, ptr, size) */
		c[i++] = 0x56;				/* push %rsi */
		c[i++] = 0x52;				/* push %rdx */
		c[i++] = 0x48; c[i++] = 0x83; c[i++] = 0xec; c[i++] = 0x08; /* sub $8,%rsp */
		c[i++] = 0xff; c[i++] = 0x15;		/* call *orig(%rip) */
		put_disp(c, i, i + 4, o); i += 4;
		c[i++] = 0x48; c[i++] = 0x83; c[i++] = 0xc4; c[i++] = 0x08; /* add $8,%rsp */
		c[i++] = 0x5a;				/* pop %rdx */
		c[i++] = 0x5e;				/* pop %rsi */
		break;
	case 3: /* free(ctx, ptr): the site comes first, rsi = block */
		break;
	}
	memcpy(c + i, nop5, sizeof(nop5));		/* the probe site */
	i += sizeof(nop5);
	if (k == 3) {
		c[i++] = 0xff; c[i++] = 0x25;		/* jmp *orig(%rip) */
		put_disp(c, i, i + 4, o); i += 4;
	} else {
		c[i++] = 0xc3;				/* ret */
	}
	while (i < off + TRAMP_SIZE)
		c[i++] = 0xcc;				/* int3 padding */
}

uint64_t redirect__site(const struct redirect *rd, int d, int k)
{
	return tramp_off(d, k) + site_in_tramp[k];
}

uint64_t redirect__entry_site(const struct redirect *rd, int d, int k)
{
	return tramp_off(d, k);
}

const char *redirect__path(const struct redirect *rd)
{
	return rd->page.path;
}

static bool in_page(const struct redirect *rd, uint64_t addr)
{
	return rd->have_page && addr >= rd->page.addr && addr < rd->page.addr + rd->page.len;
}

int redirect__prepare(struct redirect *rd, const struct target *t,
		      const uint64_t tables[REDIRECT_DOMAINS],
		      const uint64_t funcs[REDIRECT_DOMAINS][5])
{
	uint8_t page[PAGE_SIZE_] = {};
	uint64_t cur, prev;
	bool fresh = false;
	int d, k, err;

	memset(rd, 0, sizeof(*rd));
	memcpy(rd->tables, tables, sizeof(rd->tables));
	err = inject__find_page(t->pid, REDIRECT_PAGE_NAME, &rd->page);
	if (err == -ENOENT) {
		err = inject__create_page(t->pid, REDIRECT_PAGE_NAME, PAGE_SIZE_, &rd->page);
		fresh = true;
	}
	if (err) {
		warn("process %d: %s", t->pid, inject__strerror());
		return err;
	}
	rd->have_page = true;

	/* What each slot called before any of us: ours keep their saved original. */
	for (d = 0; d < REDIRECT_DOMAINS; d++) {
		for (k = 0; k < REDIRECT_KINDS; k++) {
			cur = funcs[d][k + 1];
			if (!in_page(rd, cur)) {
				rd->orig[d][k] = cur;
				continue;
			}
			if (fresh || target__read(t, rd->page.addr + orig_off(d, k), &prev,
						  sizeof(prev)) || !prev || in_page(rd, prev)) {
				warn("process %d: the allocator table points into a pytm-bpf page that has no usable original",
				     t->pid);
				return -EPROTO;
			}
			rd->orig[d][k] = prev;
			rd->swapped[d][k] = true;	/* left redirected by a tracer before us */
		}
	}
	memcpy(page, MAGIC, sizeof(MAGIC));
	for (d = 0; d < REDIRECT_DOMAINS; d++) {
		for (k = 0; k < REDIRECT_KINDS; k++) {
			memcpy(page + orig_off(d, k), &rd->orig[d][k], 8);
			emit(page, d, k);
		}
	}
	/*
	 * Rewriting is safe: the code bytes are the same as any earlier run's,
	 * and an original pointer changes only for a slot not redirected now.
	 */
	err = inject__write_page(&rd->page, 0, page, sizeof(page));
	if (err)
		warn("process %d: cannot write the trampoline page: %s", t->pid, strerror(-err));
	return err;
}

int redirect__swap(struct redirect *rd, const struct target *t)
{
	struct inject_session *s = NULL;
	uint64_t tramp;
	int d, k, err;

	/* One ptrace stop for all twelve stores. */
	err = inject__attach(t->pid, &s);
	if (err) {
		warn("process %d: %s", t->pid, inject__strerror());
		return err;
	}
	for (d = 0; d < REDIRECT_DOMAINS; d++) {
		for (k = 0; k < REDIRECT_KINDS; k++) {
			if (rd->swapped[d][k])
				continue;
			tramp = rd->page.addr + tramp_off(d, k);
			err = inject__store_u64(s, rd->tables[d] + 8 * (k + 1), tramp);
			if (err) {
				warn("process %d: cannot redirect the allocator: %s", t->pid,
				     inject__strerror());
				inject__detach(s);
				redirect__restore(rd, t);
				return err;
			}
			rd->swapped[d][k] = true;
		}
	}
	inject__detach(s);
	return 0;
}

void redirect__restore(struct redirect *rd, const struct target *t)
{
	struct inject_session *s = NULL;
	uint64_t cur;
	int d, k;

	for (d = 0; d < REDIRECT_DOMAINS; d++) {
		for (k = 0; k < REDIRECT_KINDS; k++) {
			if (!rd->swapped[d][k])
				continue;
			rd->swapped[d][k] = false;
			if (target__read(t, rd->tables[d] + 8 * (k + 1), &cur, sizeof(cur)))
				continue;	/* the target is gone */
			if (cur != rd->page.addr + tramp_off(d, k))
				continue;	/* someone hooked on top of us */
			if (!s && inject__attach(t->pid, &s)) {
				warn("process %d: cannot restore the allocator: %s", t->pid,
				     inject__strerror());
				return;
			}
			/* A thread between load and call still reaches the original. */
			if (inject__store_u64(s, rd->tables[d] + 8 * (k + 1), rd->orig[d][k]))
				warn("process %d: cannot restore the allocator: %s", t->pid,
				     inject__strerror());
		}
	}
	inject__detach(s);
}

void redirect__close(struct redirect *rd)
{
	if (rd->have_page)
		inject__page_close(&rd->page);
	rd->have_page = false;
}

int redirect__originals(const struct target *t, uint64_t funcs[REDIRECT_DOMAINS][5])
{
	const struct mapping *m;
	uint64_t orig, idx;
	int d, k;

	for (d = 0; d < REDIRECT_DOMAINS; d++) {
		for (k = 0; k < REDIRECT_KINDS; k++) {
			m = target__mapping(t, funcs[d][k + 1]);
			if (!m || !m->path || m->offset ||
			    strncmp(m->path, "/memfd:" REDIRECT_PAGE_NAME " ",
				    strlen("/memfd:" REDIRECT_PAGE_NAME " ")))
				continue;	/* not our page */
			idx = funcs[d][k + 1] - m->start;
			if (idx < CODE_OFF || (idx - CODE_OFF) % TRAMP_SIZE)
				return -EPROTO;
			idx = (idx - CODE_OFF) / TRAMP_SIZE;
			if (idx >= REDIRECT_DOMAINS * REDIRECT_KINDS ||
			    target__read(t, m->start + ORIG_OFF + idx * 8, &orig, sizeof(orig)) || !orig)
				return -EPROTO;
			funcs[d][k + 1] = orig;
		}
	}
	return 0;
}
