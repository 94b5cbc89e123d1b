// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "pytm.h"
#include "redirect.h"
#include "x86emit.h"
#include "target.h"
#include "util.h"

/*
 * Page layout: a header, the original function pointers, then one 64-byte
 * trampoline per (domain, kind). The code is the same for every run of one
 * layout and site kind, so a page left by an earlier run is reused as the
 * target sees it, after checking that it does (see redirect__prepare).
 * The data page (inject's, zeroed in forked children) holds ARMED_OFF.
 */
#define PAGE_SIZE_	4096
#define MAGIC		"pytm-bpf tramp3"	/* 16 bytes with the NUL */
#define ORIG_OFF	16
#define CODE_OFF	256
#define TRAMP_SIZE	64
/* The data page follows inject's stub page, which follows ours. */
#define DATA_OFF	(2 * PAGE_SIZE_)
#define ARMED_OFF	0			/* byte: a tracer is attached */
#define MAX_PAGES	8			/* stale pages passed over, at most */

static size_t tramp_off(int d, int k)
{
	return CODE_OFF + (d * REDIRECT_KINDS + k) * TRAMP_SIZE;
}

static size_t orig_off(int d, int k)
{
	return ORIG_OFF + (d * REDIRECT_KINDS + k) * 8;
}

const char *redirect__site_name(enum redirect_site kind)
{
	return kind == REDIRECT_SITE_NOP6 ? "6-byte NOP" : "5-byte NOP";
}

/*
 * A probe site behind the fork guard: only the process the tracer armed
 * passes it. A forked child (data page zeroed) skips it, so it never runs
 * what the kernel made of the site in the parent: on 6.18 a probed 5-byte
 * NOP becomes a call into a [uprobes-trampoline] mapping that fork does
 * not copy. Returns the site's offset. Flags are clobbered (free in any
 * call), registers are not.
 */
static size_t emit_site(struct x86_emitter *e, enum redirect_site kind)
{
	static const uint8_t cmpb[] = { 0x80, 0x3d }, zero = 0;
	static const uint8_t nop5[] = { 0x0f, 0x1f, 0x44, 0x00, 0x00 };
	static const uint8_t nop6[] = { 0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00 };
	const uint8_t *nop = kind == REDIRECT_SITE_NOP6 ? nop6 : nop5;
	size_t len = kind == REDIRECT_SITE_NOP6 ? sizeof(nop6) : sizeof(nop5);
	uint8_t je[2] = { 0x74, (uint8_t)len };
	size_t site;

	x86__rip(e, cmpb, sizeof(cmpb), DATA_OFF + ARMED_OFF, &zero); /* cmpb $0,armed(%rip) */
	x86__bytes(e, je, sizeof(je));				/* je past the site */
	site = e->at;
	x86__bytes(e, nop, len);
	return site;
}

/*
 * Emit trampoline (D, K). System V: the caller's call left rsp = 8 mod 16;
 * the pushes below keep the callee's alignment right. Exit site: after the
 * call, result and arguments in registers. Entry site (not for free):
 * before it, probed only when a hook layer below us may make nested
 * allocator calls at other addresses.
 */
static void emit(struct redirect *rd, uint8_t *page, int d, int k)
{
	static const uint8_t push_rsi = 0x56, push_rdx = 0x52, pop_rsi = 0x5e,
			     pop_rdx = 0x5a, ret = 0xc3;
	static const uint8_t sub8[] = { 0x48, 0x83, 0xec, 0x08 };	/* sub $8,%rsp */
	static const uint8_t add8[] = { 0x48, 0x83, 0xc4, 0x08 };	/* add $8,%rsp */
	static const uint8_t call_mem[] = { 0xff, 0x15 }, jmp_mem[] = { 0xff, 0x25 };
	struct x86_emitter e = { page, tramp_off(d, k) };
	size_t o = orig_off(d, k);

	if (k != PYTM_FREE)
		rd->entry_site[d][k] = emit_site(&e, rd->site_kind);
	switch (k) {
	case PYTM_MALLOC:	/* malloc(ctx, size): rsi = size at the site, rax = block */
		x86__bytes(&e, &push_rsi, 1);
		x86__rip(&e, call_mem, sizeof(call_mem), o, NULL);	/* call *orig(%rip) */
		x86__bytes(&e, &pop_rsi, 1);
		break;
	case PYTM_CALLOC:	/* calloc(ctx, nelem, elsize) */
	case PYTM_REALLOC:	/* realloc(ctx, ptr, size) */
		x86__bytes(&e, &push_rsi, 1);
		x86__bytes(&e, &push_rdx, 1);
		x86__bytes(&e, sub8, sizeof(sub8));
		x86__rip(&e, call_mem, sizeof(call_mem), o, NULL);
		x86__bytes(&e, add8, sizeof(add8));
		x86__bytes(&e, &pop_rdx, 1);
		x86__bytes(&e, &pop_rsi, 1);
		break;
	case PYTM_FREE:	/* free(ctx, ptr): the site comes first, rsi = block */
		break;
	}
	rd->site[d][k] = emit_site(&e, rd->site_kind);
	if (k == PYTM_FREE)
		x86__rip(&e, jmp_mem, sizeof(jmp_mem), o, NULL);	/* jmp *orig(%rip) */
	else
		x86__bytes(&e, &ret, 1);
	memset(page + e.at, 0xcc, tramp_off(d, k) + TRAMP_SIZE - e.at);	/* int3 */
}

uint64_t redirect__site(const struct redirect *rd, int d, int k)
{
	return rd->site[d][k];
}

uint64_t redirect__entry_site(const struct redirect *rd, int d, int k)
{
	return rd->entry_site[d][k];
}

const char *redirect__path(const struct redirect *rd)
{
	return rd->page.path;
}

/* Fill PAGE for RD's originals and site kind. */
static void build_page(struct redirect *rd, uint8_t page[PAGE_SIZE_])
{
	int d, k;

	memset(page, 0, PAGE_SIZE_);
	memcpy(page, MAGIC, sizeof(MAGIC));
	for (d = 0; d < REDIRECT_DOMAINS; d++) {
		for (k = 0; k < REDIRECT_KINDS; k++) {
			memcpy(page + orig_off(d, k), &rd->orig[d][k], 8);
			emit(rd, page, d, k);
		}
	}
}

/*
 * Write PAGE into RD's page and check that the target sees it. It may
 * not: installing a uprobe gives the target a private copy of the code,
 * which later writes to the file do not reach (on 6.18 not always even
 * after the probe is removed), and a child forked while its parent was
 * traced holds its parent's copy, with whatever the kernel had made of
 * the probe sites (a call into a mapping it does not have).
 */
static int fill_page(struct redirect *rd, const uint8_t page[PAGE_SIZE_])
{
	uint8_t seen[PAGE_SIZE_];
	int err;

	err = inject__write_page(&rd->page, 0, page, PAGE_SIZE_);
	if (!err)
		err = inject__read_page(&rd->page, 0, seen, PAGE_SIZE_);
	if (err)
		return err;
	return memcmp(page, seen, PAGE_SIZE_) ? -ESTALE : 0;
}

/* Which site kind for a page: see redirect__prepare. */
static void choose_site(struct redirect *rd, enum redirect_site_pref pref,
			bool nop5_fork_safe)
{
	if (pref == REDIRECT_PREFER_NOP5 || pref == REDIRECT_PREFER_NOP6) {
		rd->site_kind = pref == REDIRECT_PREFER_NOP6 ? REDIRECT_SITE_NOP6
							     : REDIRECT_SITE_NOP5;
		rd->site_why = "chosen with --probe-site";
	} else if (rd->page.wipeonfork) {
		rd->site_kind = REDIRECT_SITE_NOP5;
		rd->site_why = "the cheapest trap; forked children skip the sites "
			       "(their data page is wiped: MADV_WIPEONFORK)";
	} else if (nop5_fork_safe) {
		rd->site_kind = REDIRECT_SITE_NOP5;
		rd->site_why = "no fork guard (no MADV_WIPEONFORK), but this "
			       "kernel's 5-byte NOP probes survive fork";
	} else {
		rd->site_kind = REDIRECT_SITE_NOP6;
		rd->site_why = "no fork guard (no MADV_WIPEONFORK), and this "
			       "kernel's probed 5-byte NOPs crash forked children";
	}
}

int redirect__prepare(struct redirect *rd, const struct target *t,
		      const uint64_t tables[REDIRECT_DOMAINS],
		      const uint64_t funcs[REDIRECT_DOMAINS][5],
		      enum redirect_site_pref pref, bool nop5_fork_safe)
{
	uint64_t orig[REDIRECT_DOMAINS][5], after = 0;
	uint8_t page[PAGE_SIZE_];
	int d, k, err, tries;

	memset(rd, 0, sizeof(*rd));
	memcpy(rd->tables, tables, sizeof(rd->tables));
	/* What each slot called before any of us (through any page of ours). */
	memcpy(orig, funcs, sizeof(orig));
	if (redirect__originals(t, orig)) {
		warn("process %d: the allocator table points into a pytm-bpf page that has no usable original",
		     t->pid);
		return -EPROTO;
	}
	for (d = 0; d < REDIRECT_DOMAINS; d++)
		for (k = 0; k < REDIRECT_KINDS; k++)
			rd->orig[d][k] = orig[d][k + 1];

	/* The first page of ours that the target sees as we write it, or a new one. */
	for (tries = 0;; tries++) {
		err = tries < MAX_PAGES ?
		      inject__find_page_after(t->pid, REDIRECT_PAGE_NAME, after, &rd->page) :
		      -ENOENT;
		if (err == -ENOENT)
			err = inject__create_page(t->pid, REDIRECT_PAGE_NAME, PAGE_SIZE_,
						  &rd->page);
		if (err) {
			warn("process %d: %s", t->pid, error__last());
			return err;
		}
		rd->have_page = true;
		choose_site(rd, pref, nop5_fork_safe);
		build_page(rd, page);
		err = fill_page(rd, page);
		if (!err)
			break;
		after = rd->page.addr;
		if (err == -ESTALE)
			vlog("process %d: the page at %#llx is not what we wrote (probed "
			     "before, or a forked child's copy of its parent's): passed over",
			     t->pid, (unsigned long long)after);
		redirect__close(rd);
		if (err != -ESTALE || tries >= MAX_PAGES) {
			warn("process %d: cannot write the trampoline page: %s", t->pid,
			     err == -ESTALE ? "the target does not see what we write"
					    : strerror(-err));
			return err == -ESTALE ? -EIO : err;
		}
	}
	/* Slots left redirected to this page by a tracer before us that died. */
	for (d = 0; d < REDIRECT_DOMAINS; d++)
		for (k = 0; k < REDIRECT_KINDS; k++)
			rd->swapped[d][k] = funcs[d][k + 1] == rd->page.addr + tramp_off(d, k);
	vlog("process %d: probe sites: %s: %s", t->pid,
	     redirect__site_name(rd->site_kind), rd->site_why);
	return 0;
}

int redirect__swap(struct redirect *rd, const struct target *t)
{
	struct inject_session *s = NULL;
	const uint8_t armed = 1;
	uint64_t tramp;
	int d, k, err;

	/* Arm the sites first: a call redirected below passes them at once. */
	err = inject__write_data(&rd->page, ARMED_OFF, &armed, 1);
	if (err) {
		warn("process %d: cannot arm the probe sites: %s", t->pid, error__last());
		return err;
	}
	/* One ptrace stop for all twelve stores. */
	err = inject__attach(t->pid, &s);
	if (err) {
		warn("process %d: %s", t->pid, error__last());
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
				     error__last());
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
	const uint8_t disarmed = 0;
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
				     error__last());
				return;
			}
			/* A thread between load and call still reaches the original. */
			if (inject__store_u64(s, rd->tables[d] + 8 * (k + 1), rd->orig[d][k]))
				warn("process %d: cannot restore the allocator: %s", t->pid,
				     error__last());
		}
	}
	inject__detach(s);
	/*
	 * Disarm: calls still in the page, or through a hook installed on top
	 * of ours, skip the sites (a NOP either way once the probes are gone).
	 */
	if (rd->have_page)
		inject__write_data(&rd->page, ARMED_OFF, &disarmed, 1);
}

void redirect__close(struct redirect *rd)
{
	if (rd->have_page)
		inject__page_close(&rd->page);
	rd->have_page = false;
}

/*
 * What *FN calls in the end: a trampoline of any page of ours (this
 * layout's or an older one's) stands for the original in its page's
 * header, which may itself be another page's trampoline. -EPROTO for a
 * pointer into a page of ours that leads to no usable original.
 */
static int original_of(const struct target *t, uint64_t *fn)
{
	static const char prefix[] = "/memfd:" REDIRECT_PAGE_NAME " ";
	const struct mapping *m;
	uint64_t idx;
	int hops;

	for (hops = 0; hops <= MAX_PAGES; hops++) {
		m = target__mapping(t, *fn);
		if (!m || !m->path || m->offset || strncmp(m->path, prefix, sizeof(prefix) - 1))
			return 0;	/* not our page */
		idx = *fn - m->start;
		if (idx < CODE_OFF || (idx - CODE_OFF) % TRAMP_SIZE)
			return -EPROTO;
		idx = (idx - CODE_OFF) / TRAMP_SIZE;
		if (idx >= REDIRECT_DOMAINS * REDIRECT_KINDS ||
		    target__read(t, m->start + ORIG_OFF + idx * 8, fn, sizeof(*fn)) || !*fn)
			return -EPROTO;
	}
	return -EPROTO;
}

int redirect__originals(const struct target *t, uint64_t funcs[REDIRECT_DOMAINS][5])
{
	int d, k;

	for (d = 0; d < REDIRECT_DOMAINS; d++)
		for (k = 0; k < REDIRECT_KINDS; k++)
			if (original_of(t, &funcs[d][k + 1]))
				return -EPROTO;
	return 0;
}
