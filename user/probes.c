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

/* Read the three allocator tables from live memory. */
static int read_tables(const struct target *t, uint64_t funcs[3][ALLOC_SLOTS])
{
	uint64_t addr;
	int d;

	for (d = 0; d < 3; d++) {
		addr = target__symbol(t, table_syms[d]);
		if (!addr) {
			warn("process %d: cannot find the %s allocator table (%s) in %s",
			     t->pid, domain_names[d], table_syms[d], t->pymod);
			return -ENOENT;
		}
		if (target__read(t, addr, funcs[d], sizeof(funcs[d]))) {
			warn("process %d: cannot read the %s allocator table", t->pid,
			     domain_names[d]);
			return -EFAULT;
		}
	}
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
	uint64_t funcs[3][ALLOC_SLOTS], seen[12], addr;
	int d, k, i, nseen = 0, err;
	char what[64];

	memset(pr, 0, sizeof(*pr));
	err = read_tables(t, funcs);
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
