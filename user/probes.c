// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <bpf/libbpf.h>
#include "pytm.skel.h"
#include "probes.h"
#include "target.h"
#include "util.h"

/* PyMemAllocatorEx: ctx, malloc, calloc, realloc, free. */
#define ALLOC_SLOTS 5

static const char *const domain_names[] = { "raw", "mem", "obj" };
/* 3.8-3.11 keep the tables in static variables of obmalloc.c. */
static const char *const table_syms[] = { "_PyMem_Raw", "_PyMem", "_PyObject" };
/* Exported functions that call through each table. */
static const char *const table_users[] = { "PyMem_RawMalloc", "PyMem_Malloc", "PyObject_Malloc" };

static int attach_one(struct probes *pr, struct bpf_program *prog,
		      const struct target *t, uint64_t addr, bool ret,
		      const char *what)
{
	LIBBPF_OPTS(bpf_uprobe_opts, opts, .retprobe = ret);
	const struct mapping *m = target__mapping(t, addr);
	char path[PATH_MAX];
	struct bpf_link *link;
	uint64_t off;

	if (!m || !m->exec || !m->path) {
		warn("%s at 0x%llx is not in an executable file mapping",
		     what, (unsigned long long)addr);
		return -EINVAL;
	}
	if (pr->nlinks >= PROBES_MAX)
		return -E2BIG;
	/* uprobes take file offsets; reach the file through the target's root. */
	off = addr - m->start + m->offset;
	target__host_path(t, m->path, path, sizeof(path));
	link = bpf_program__attach_uprobe_opts(prog, t->pid, path, off, &opts);
	if (!link) {
		int err = -errno;

		warn("cannot attach a uprobe to %s (%s+0x%llx): %s", what, m->path,
		     (unsigned long long)off, strerror(-err));
		return err;
	}
	vlog("probe %s%s at %s+0x%llx", what, ret ? " (return)" : "", m->path,
	     (unsigned long long)off);
	pr->links[pr->nlinks++] = link;
	return 0;
}

/* Do the 4 function slots of a PyMemAllocatorEx at ADDR point to code? */
static bool table_valid(const struct target *t, uint64_t addr, uint64_t funcs[ALLOC_SLOTS])
{
	const struct mapping *m;
	int k;

	if (target__read(t, addr, funcs, ALLOC_SLOTS * sizeof(*funcs)))
		return false;
	for (k = 1; k < ALLOC_SLOTS; k++) {
		m = target__mapping(t, funcs[k]);
		if (!m || !m->exec)
			return false;
	}
	return true;
}

/* A table with one of its slots at ADDR, checked against live memory. */
static uint64_t table_around(const struct target *t, uint64_t addr,
			     uint64_t funcs[ALLOC_SLOTS])
{
	int back;

	for (back = 0; back < ALLOC_SLOTS; back++)
		if (table_valid(t, addr - back * 8, funcs))
			return addr - back * 8;
	return 0;
}

/*
 * Displacement of the first "mov disp(%REG), ..." or "jmp/call *disp(%REG)"
 * in CODE[0..len): how code reaches a field of the struct REG points to.
 */
static bool field_disp(const uint8_t *code, int len, int reg, int32_t *disp)
{
	int j, at, mod;
	uint8_t m;

	for (j = 0; j + 3 <= len; j++) {
		if ((code[j] == 0x48 || code[j] == 0x4c) && code[j + 1] == 0x8b)
			at = j + 2;
		else if (code[j] == 0xff && (((code[j + 1] >> 3) & 7) == 4 ||
					     ((code[j + 1] >> 3) & 7) == 2))
			at = j + 1;
		else
			continue;
		m = code[at];
		mod = m >> 6;
		if ((m & 7) != reg || (mod != 1 && mod != 2) || reg == 4)
			continue;
		if (mod == 1) {
			*disp = (int8_t)code[at + 1];
			return true;
		}
		if (at + 5 > len)
			return false;
		memcpy(disp, code + at + 1, sizeof(*disp));
		return true;
	}
	return false;
}

/*
 * Where FUNC (PyObject_Malloc, ...) finds its table: the RIP-relative
 * 64-bit loads in its first bytes ("mov disp32(%rip), %reg"). Either the
 * load reads a slot of the table itself (static tables, 3.8-3.11), or it
 * reads a GOT entry holding &_PyRuntime and a field load follows (3.12+,
 * where the tables live inside _PyRuntime). No symbol table is needed, so
 * this also serves stripped LTO builds. Every candidate is checked against
 * live memory.
 */
static uint64_t table_from_code(const struct target *t, const char *func,
				uint64_t funcs[ALLOC_SLOTS])
{
	uint64_t addr = target__symbol(t, func), cand, ptr, base;
	uint8_t code[160];
	int32_t disp, fdisp;
	int i;

	if (!addr || target__read(t, addr, code, sizeof(code)))
		return 0;
	for (i = 0; i + 7 <= (int)sizeof(code); i++) {
		/* REX.W (+R) 8B /r with mod=00 rm=101: RIP-relative load. */
		if ((code[i] != 0x48 && code[i] != 0x4c) || code[i + 1] != 0x8b ||
		    (code[i + 2] & 0xc7) != 0x05)
			continue;
		memcpy(&disp, code + i + 3, sizeof(disp));
		cand = addr + i + 7 + (int64_t)disp;
		base = table_around(t, cand, funcs);
		if (base)
			return base;
		/* Through a pointer: only registers without REX.R, as compilers emit. */
		if (code[i] != 0x48 || target__read(t, cand, &ptr, sizeof(ptr)) || !ptr)
			continue;
		if (!field_disp(code + i + 7, sizeof(code) - i - 7, (code[i + 2] >> 3) & 7, &fdisp))
			continue;
		base = table_around(t, ptr + fdisp, funcs);
		if (base)
			return base;
	}
	return 0;
}

/* Read the three allocator tables from live memory. */
static int read_tables(const struct target *t, uint64_t funcs[3][ALLOC_SLOTS],
		       uint64_t tables[3])
{
	int d;

	for (d = 0; d < 3; d++) {
		tables[d] = target__symbol(t, table_syms[d]);
		if (tables[d] && table_valid(t, tables[d], funcs[d]))
			continue;
		tables[d] = table_from_code(t, table_users[d], funcs[d]);
		if (!tables[d]) {
			warn("process %d: cannot find the %s allocator table in %s",
			     t->pid, domain_names[d], t->pymod);
			return -ENOENT;
		}
	}
	vlog("allocator tables: raw 0x%llx, mem 0x%llx, obj 0x%llx",
	     (unsigned long long)tables[0], (unsigned long long)tables[1],
	     (unsigned long long)tables[2]);
	return 0;
}

int probes__attach(struct probes *pr, struct pytm_bpf *skel,
		   const struct target *t)
{
	struct bpf_program *enter[4] = {
		skel->progs.malloc_enter, skel->progs.calloc_enter,
		skel->progs.realloc_enter, skel->progs.free_enter,
	};
	struct bpf_program *ret[4] = {
		skel->progs.malloc_return, skel->progs.calloc_return,
		skel->progs.realloc_return, NULL,
	};
	static const char *const kinds[4] = { "malloc", "calloc", "realloc", "free" };
	uint64_t funcs[3][ALLOC_SLOTS], tables[3], seen[12], addr;
	int d, k, i, nseen = 0, err;
	char what[64];

	memset(pr, 0, sizeof(*pr));
	err = read_tables(t, funcs, tables);
	if (err)
		return err;
	for (d = 0; d < 3; d++) {
		for (k = 0; k < 4; k++) {
			addr = funcs[d][k + 1];
			/* The same function often serves several domains. */
			for (i = 0; i < nseen && seen[i] != addr; i++)
				;
			if (i < nseen)
				continue;
			seen[nseen++] = addr;
			snprintf(what, sizeof(what), "%s %s", domain_names[d], kinds[k]);
			err = attach_one(pr, enter[k], t, addr, false, what);
			if (!err && ret[k])
				err = attach_one(pr, ret[k], t, addr, true, what);
			if (err)
				goto fail;
			pr->nfuncs++;
		}
	}
	/* C extensions report their own buffers here (numpy: domain 389047). */
	addr = target__symbol(t, "PyTraceMalloc_Track");
	if (addr && (err = attach_one(pr, skel->progs.track_enter, t, addr, false,
				      "PyTraceMalloc_Track")))
		goto fail;
	addr = target__symbol(t, "PyTraceMalloc_Untrack");
	if (addr && (err = attach_one(pr, skel->progs.untrack_enter, t, addr, false,
				      "PyTraceMalloc_Untrack")))
		goto fail;
	return 0;
fail:
	probes__detach(pr);
	return err;
}

void probes__detach(struct probes *pr)
{
	int i;

	for (i = 0; i < pr->nlinks; i++)
		bpf_link__destroy(pr->links[i]);
	pr->nlinks = 0;
}
