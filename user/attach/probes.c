// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <bpf/libbpf.h>
#include "pytm.h"
#include "pytm.skel.h"
#include "probes.h"
#include "redirect.h"
#include "sites.h"
#include "target.h"
#include "elf.h"
#include "util.h"

/* PyMemAllocatorEx: ctx, malloc, calloc, realloc, free. */
#define ALLOC_SLOTS 5

static const char *const domain_names[] = { "raw", "mem", "obj" };
/* 3.8-3.11 keep the tables in static variables of obmalloc.c. */
static const char *const table_syms[] = { "_PyMem_Raw", "_PyMem", "_PyObject" };
/* Exported functions that call through each table. */
static const char *const table_users[] = { "PyMem_RawMalloc", "PyMem_Malloc", "PyObject_Malloc" };

static int attach_one_pid(struct probes *pr, struct bpf_program *prog,
			  const struct target *t, uint64_t addr, bool ret,
			  const char *what, pid_t pid)
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
	link = bpf_program__attach_uprobe_opts(prog, pid, path, off, &opts);
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

/* A uprobe (RET: uretprobe) at ADDR for the target only. */
static int attach_one(struct probes *pr, struct bpf_program *prog,
		      const struct target *t, uint64_t addr, bool ret,
		      const char *what)
{
	return attach_one_pid(pr, prog, t, addr, ret, what, t->pid);
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

static const char *const kinds[REDIRECT_KINDS] = {
	[PYTM_MALLOC] = "malloc", [PYTM_CALLOC] = "calloc",
	[PYTM_REALLOC] = "realloc", [PYTM_FREE] = "free",
};

/*
 * Does the kernel emulate the instruction at ADDR when a uprobe hits it?
 * push, nop, jmp and call are emulated (0.4-0.5 us here); anything else is
 * single-stepped out of line, about 9 us a hit.
 */
static bool emulated_insn(const struct target *t, uint64_t addr)
{
	uint8_t c[4] = {};

	if (target__read(t, addr, c, sizeof(c)))
		return true;	/* unknown: say nothing */
	if ((c[0] >= 0x50 && c[0] <= 0x57) || c[0] == 0x90 || c[0] == 0xe8 ||
	    c[0] == 0xe9 || c[0] == 0xeb)
		return true;
	if (c[0] == 0x41 && c[1] >= 0x50 && c[1] <= 0x57)
		return true;
	return c[0] == 0x0f && c[1] == 0x1f;
}

/*
 * How many places in the interpreter's .text refer to the allocator
 * function at ADDR directly (RIP-relative or absolute): LTO builds compare
 * the table's pointer with it and run an inlined copy when equal, so calls
 * there never reach a probe on the function.
 */
static int direct_refs(const struct target *t, uint64_t addr)
{
	uint64_t func = addr - t->bias, text_vaddr;
	const uint8_t *text;
	const void *data;
	size_t size, i;
	int32_t disp;
	int n = 0;

	if (elf__section(t->elf, ".text", &data, &size))
		return 0;
	text_vaddr = elf__section_addr(t->elf, ".text");
	text = data;
	for (i = 0; i + 4 <= size; i++) {
		memcpy(&disp, text + i, 4);
		if ((uint64_t)((int64_t)(text_vaddr + i + 4) + disp) == func ||
		    (uint64_t)(uint32_t)disp == func)
			n++;
	}
	return n;
}

static void check_plain_coverage(const struct target *t, uint64_t addr, const char *what)
{
	int n;

	if (!emulated_insn(t, addr))
		warn("the probe on the %s function (0x%llx) must be single-stepped by the kernel: about 9 us per call",
		     what, (unsigned long long)addr);
	n = direct_refs(t, addr);
	if (n > 4)
		warn("%s: %d places in %s use the %s function directly (inlined copies): "
		     "plain probes miss the allocations made there; drop --no-inject",
		     t->pymod, n, t->pymod, what);
}

/* Plain mode: uprobe + uretprobe on each distinct allocator function. */
static int attach_plain(struct probes *pr, struct pytm_bpf *skel, const struct target *t,
			uint64_t funcs[3][ALLOC_SLOTS])
{
	struct bpf_program *enter[REDIRECT_KINDS] = {
		[PYTM_MALLOC] = skel->progs.malloc_enter, [PYTM_CALLOC] = skel->progs.calloc_enter,
		[PYTM_REALLOC] = skel->progs.realloc_enter, [PYTM_FREE] = skel->progs.free_enter,
	};
	struct bpf_program *ret[REDIRECT_KINDS] = {
		[PYTM_MALLOC] = skel->progs.malloc_return, [PYTM_CALLOC] = skel->progs.calloc_return,
		[PYTM_REALLOC] = skel->progs.realloc_return, [PYTM_FREE] = NULL,
	};
	uint64_t seen[12], addr;
	int d, k, i, nseen = 0, err;
	char what[64];

	for (d = 0; d < REDIRECT_DOMAINS; d++) {
		for (k = 0; k < REDIRECT_KINDS; k++) {
			addr = funcs[d][k + 1];
			/* The same function often serves several domains. */
			for (i = 0; i < nseen && seen[i] != addr; i++)
				;
			if (i < nseen)
				continue;
			seen[nseen++] = addr;
			snprintf(what, sizeof(what), "%s %s", domain_names[d], kinds[k]);
			if (target__mapping(t, addr) &&
			    !strcmp(target__mapping(t, addr)->path ?: "", t->pymod))
				check_plain_coverage(t, addr, what);
			/*
			 * Return probe first: a call entered while only the
			 * entry probe was live would never be seen returning.
			 */
			err = ret[k] ? attach_one(pr, ret[k], t, addr, true, what) : 0;
			if (!err)
				err = attach_one(pr, enter[k], t, addr, false, what);
			if (err)
				return err;
			pr->nfuncs++;
		}
	}
	return 0;
}

/* Bind "\0pytm-bpf/PID": the fd holds the claim; -EADDRINUSE if taken. */
static int claim_target(pid_t pid)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len;
	int fd, n;

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	n = snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "pytm-bpf/%d", pid);
	len = offsetof(struct sockaddr_un, sun_path) + 1 + n;
	if (bind(fd, (struct sockaddr *)&sa, len)) {
		n = -errno;
		close(fd);
		return n;
	}
	/* Never fd 0-2 (a parent may have closed stdin): 0 means "no claim". */
	n = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	close(fd);
	return n < 0 ? -errno : n;
}

/*
 * A uprobe on the trampoline page at file offset OFF, for the target, or
 * (CHILD) for every process that maps the page: the target's forked
 * children, that pass the unarmed way's sites until they are traced on
 * their own (the target itself never does while armed).
 */
static int attach_site(struct probes *pr, struct bpf_program *prog, uint64_t off,
		       int d, int k, const char *which, bool child)
{
	LIBBPF_OPTS(bpf_uprobe_opts, opts);
	const struct target *t = pr->target;
	struct bpf_link *link;
	int err;

	if (pr->nlinks >= PROBES_MAX)
		return -E2BIG;
	link = bpf_program__attach_uprobe_opts(prog, child ? -1 : t->pid,
					       redirect__path(&pr->rd), off, &opts);
	if (!link) {
		err = -errno;
		warn("cannot attach a uprobe to the %s %s trampoline%s: %s",
		     domain_names[d], kinds[k], which, strerror(-err));
		return err;
	}
	pr->links[pr->nlinks++] = link;
	return 0;
}

/* The kernel's NOP-site check: once a run, whichever tracee asks first. */
static bool nop5_fork_safe(struct pytm_bpf *skel)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static struct sites_check check;
	static bool done;
	bool safe;

	pthread_mutex_lock(&lock);
	if (!done) {
		sites__check(skel->progs.site_empty, &check);
		done = true;
	}
	safe = check.fork_safe;
	pthread_mutex_unlock(&lock);
	return safe;
}

/*
 * A uprobe on one of the page's own sites (sampler, reference tracer) at
 * page offset OFF, for the target (or CHILD: every process that maps the
 * page, i.e. its forked children, at their children's sites).
 */
static int attach_page_site(struct probes *pr, struct bpf_program *prog, uint64_t off,
			    bool child, const char *what)
{
	LIBBPF_OPTS(bpf_uprobe_opts, opts);
	struct bpf_link *link;
	int err;

	if (pr->nlinks >= PROBES_MAX)
		return -E2BIG;
	link = bpf_program__attach_uprobe_opts(prog, child ? -1 : pr->target->pid,
					       redirect__path(&pr->rd), off, &opts);
	if (!link) {
		err = -errno;
		warn("cannot attach a uprobe to the %s site%s: %s", what,
		     child ? " (children's)" : "", strerror(-err));
		return err;
	}
	pr->links[pr->nlinks++] = link;
	return 0;
}

/* The sampler's site WHICH, for the target (or CHILD: its children's site). */
static int attach_sample_site(struct probes *pr, struct bpf_program *prog,
			      enum redirect_sample_site which, bool child)
{
	return attach_page_site(pr, prog, child ? redirect__child_sample_site(which) :
					  redirect__sample_site(&pr->rd, which), child,
				which == REDIRECT_SAMPLE_FREE ? "sampler's free" : "sampler's alloc");
}

/*
 * Injected mode: one NOP-site uprobe per trampoline (exact), or the
 * sampler's two sites (sampled); then the table swap.
 */
static int attach_injected(struct probes *pr, struct pytm_bpf *skel, const struct target *t,
			   uint64_t funcs[3][ALLOC_SLOTS], uint64_t tables[3],
			   const struct probes_opts *o)
{
	struct bpf_program *site[REDIRECT_KINDS] = {
		[PYTM_MALLOC] = skel->progs.site_malloc, [PYTM_CALLOC] = skel->progs.site_calloc,
		[PYTM_REALLOC] = skel->progs.site_realloc, [PYTM_FREE] = skel->progs.site_free,
	};
	struct bpf_program *enter = skel->progs.site_enter;
	struct bpf_program *sample_alloc = skel->progs.sample_alloc;
	struct bpf_program *sample_free = skel->progs.sample_free;
	struct redirect_opts ro = {
		.site_pref = o->site_pref,
		.sample_rate = o->sample_rate,
		.set_slots = o->set_slots,
		.gil_plain = o->gil_plain,
		.follow_forks = o->follow_forks,
		.adopt = o->adopt,
		.ref_slot = o->ref_slot,
		.ob_type = o->ob_type,
		.tp_flags = o->tp_flags,
		.gc_head = o->gc_head,
		.record = o->record,
		.ring_slots = o->ring_slots,
		.rec = o->rec,
	};
	struct bpf_program *newref = skel->progs.site_newref;
	int d, k, err;

	if (o->empty_sites) {
		for (k = 0; k < REDIRECT_KINDS; k++)
			site[k] = skel->progs.site_empty;
		enter = sample_alloc = sample_free = newref = skel->progs.site_empty;
	}
	/* Sampled sites are passed rarely: the check is only worth it for exact mode. */
	ro.nop5_fork_safe = ro.site_pref == REDIRECT_PREFER_AUTO && !o->sample_rate &&
			    nop5_fork_safe(skel);
	err = redirect__prepare(&pr->rd, t, tables, (const uint64_t (*)[5])funcs, &ro);
	if (err)
		return err;
	/* Children's sites: see struct pytm_page_keep. */
	pr->child_sites = o->follow_forks && pr->rd.page.wipeonfork;
	/* Objects reused from free lists (before the swap installs the tracer). */
	if (pr->rd.ref_slot &&
	    ((err = attach_page_site(pr, newref, redirect__newref_site(&pr->rd), false,
				      "reference tracer's")) ||
	     (pr->child_sites &&
	      (err = attach_page_site(pr, newref, redirect__child_newref_site(), true,
				      "reference tracer's")))))
		return err;
	if (pr->rd.record) {
		/*
		 * What goes BPF's way: blocks the recorder could not take, and
		 * frees that found its ring full. Frees first, as below.
		 */
		if ((err = attach_sample_site(pr, sample_free, REDIRECT_SAMPLE_FREE, false)) ||
		    (err = attach_page_site(pr, o->empty_sites ? sample_free : skel->progs.rec_tomb,
					    redirect__tomb_site(&pr->rd), false, "recorder's tomb")) ||
		    (err = attach_page_site(pr, o->empty_sites ? skel->progs.site_empty :
					    skel->progs.rec_code,
					    redirect__code_site(&pr->rd), false, "recorder's code")) ||
		    (err = attach_sample_site(pr, sample_alloc, REDIRECT_SAMPLE_ALLOC, false)))
			return err;
		/* A followed child: every event BPF's way (page/sampler.c). */
		if (pr->child_sites &&
		    ((err = attach_sample_site(pr, sample_free, REDIRECT_SAMPLE_FREE, true)) ||
		     (err = attach_sample_site(pr, sample_alloc, REDIRECT_SAMPLE_ALLOC, true))))
			return err;
		pr->recording = true;
		goto swap;
	}
	if (o->sample_rate) {
		/* Free first: a block sampled meanwhile is then always seen going. */
		if ((err = attach_sample_site(pr, sample_free, REDIRECT_SAMPLE_FREE, false)) ||
		    (err = attach_sample_site(pr, sample_alloc, REDIRECT_SAMPLE_ALLOC, false)))
			return err;
		if (pr->child_sites &&
		    ((err = attach_sample_site(pr, sample_free, REDIRECT_SAMPLE_FREE, true)) ||
		     (err = attach_sample_site(pr, sample_alloc, REDIRECT_SAMPLE_ALLOC, true))))
			return err;
		pr->sampled = true;
		goto swap;
	}
	/*
	 * A table with a context is a hook layer (debug hooks, tracemalloc,
	 * a custom allocator) whose inner calls may return other addresses
	 * than the outer one: count nesting there, at one more probe hit.
	 */
	for (d = 0; d < 3; d++)
		if (funcs[d][0])
			pr->track_depth = true;
	for (d = 0; d < REDIRECT_DOMAINS; d++)
		for (k = 0; k < REDIRECT_KINDS; k++)
			if ((err = attach_site(pr, site[k], redirect__site(&pr->rd, d, k), d, k, "",
					       false)))
				return err;
	/*
	 * Children's sites: where the kernel would crash a child at the
	 * armed sites, the wiped data page sends it the unarmed way.
	 */
	for (k = 0; pr->child_sites && k < REDIRECT_KINDS; k++)
		if ((err = attach_site(pr, site[k], redirect__child_site(k), 0, k,
				       " (children's site)", true)))
			return err;
	/*
	 * Entry sites after the exit sites: tables left redirected by a tracer
	 * that died send calls through the page already, and an entry counted
	 * without its exit would make later calls look nested.
	 */
	for (d = 0; pr->track_depth && d < REDIRECT_DOMAINS; d++)
		for (k = 0; k < REDIRECT_KINDS - 1; k++)
			if ((err = attach_site(pr, enter,
					       redirect__entry_site(&pr->rd, d, k), d, k, " entry",
					       false)))
				return err;
	if (pr->track_depth && pr->child_sites &&
	    (err = attach_site(pr, enter, redirect__child_entry_site(), 0, 0,
			       " entry (children's site)", true)))
		return err;
swap:
	/* Only now that every site is probed: no event goes unseen. */
	err = redirect__swap(&pr->rd, t);
	if (err)
		return err;
	pr->injected = true;
	pr->nfuncs = REDIRECT_DOMAINS * REDIRECT_KINDS;
	vlog("allocator redirected through the page at 0x%llx (%s)%s",
	     (unsigned long long)pr->rd.page.addr, redirect__path(&pr->rd),
	     pr->sampled ? ", sampled" : "");
	return 0;
}

static void release(struct probes *pr);

int probes__attach(struct probes *pr, struct pytm_bpf *skel,
		   const struct target *t, const struct probes_opts *o)
{
	uint64_t funcs[3][ALLOC_SLOTS], tables[3], addr;
	int err, i;

	memset(pr, 0, sizeof(*pr));
	pr->target = t;
	/*
	 * One tracer at a time, whatever its mode: a name in the abstract
	 * socket namespace, released by the kernel when its holder dies.
	 * (Not a lock on the page's file: the target's mapping keeps it open.)
	 */
	pr->claim_fd = claim_target(t->pid);
	if (pr->claim_fd < 0) {
		err = pr->claim_fd;
		pr->claim_fd = 0;
		if (err == -EADDRINUSE) {
			warn("process %d is already traced by another pytm-bpf", t->pid);
			return -EBUSY;
		}
		warn("process %d: cannot claim it: %s", t->pid, strerror(-err));
		return err;
	}
	err = read_tables(t, funcs, tables);
	if (err)
		goto fail;
	if (o->inject) {
		err = attach_injected(pr, skel, t, funcs, tables, o);
		/* Gone (or going: a zombie too) while we injected: nothing to fall back to. */
		if (err && err != -EBUSY && err != -ESRCH && inject__exiting(t->pid)) {
			warn("process %d exited while being attached", t->pid);
			err = -ESRCH;
		}
		if (err == -EBUSY || err == -ESRCH)
			goto fail;
		if (err && o->sample_rate) {
			/* Plain probes trap on every event: not what sampling is for. */
			warn("process %d: sampling needs the redirected allocator (%s)",
			     t->pid, strerror(-err));
			goto fail;
		}
		if (err) {
			warn("process %d: cannot redirect the allocator (%s); using plain probes, which miss inlined allocations",
			     t->pid, strerror(-err));
			release(pr);	/* the claim stays */
			/* A page left by an earlier run may hold the originals. */
			err = read_tables(t, funcs, tables);
			if (err)
				goto fail;
		}
	}
	if (!pr->injected) {
		if (redirect__originals(t, funcs))
			warn("process %d: its allocator tables point into an unknown page", t->pid);
		err = attach_plain(pr, skel, t, funcs);
		if (err)
			goto fail;
	}
	/*
	 * Finalization frees what the program held: the live set is kept as
	 * it was when it began. No symbol (an embedder's own build): the end
	 * is reported as it comes.
	 */
	/*
	 * Py_Exit too (sys.exit, SystemExit): 3.13's calls the finalization
	 * without Py_FinalizeEx. Its forked children too (for every process
	 * running this binary: one hit at the end of each, ignored for those
	 * we do not trace).
	 */
	for (i = 0; i < 2; i++) {
		const char *fn = i ? "Py_Exit" : "Py_FinalizeEx";

		addr = target__symbol(t, fn);
		if (addr && (err = attach_one_pid(pr, skel->progs.finalize_enter, t, addr, false,
						  fn, pr->child_sites ? -1 : t->pid)))
			goto fail;
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

static void *destroy_link(void *link)
{
	bpf_link__destroy(link);
	return NULL;
}

/* Everything but the claim: tables, probes, page; PR as after the claim. */
static void release(struct probes *pr)
{

	/* Tables first: no call may reach a trampoline whose probe is gone... */
	if (pr->injected)
		redirect__restore(&pr->rd, pr->target);
	/*
	 * ...though one that does only runs a NOP. Each uprobe waits for an
	 * RCU grace period as it goes (0.1-0.3 s here): remove them together.
	 */
	run_parallel(destroy_link, (void *const *)pr->links, pr->nlinks);
	pr->nlinks = 0;
	pr->injected = false;
	pr->sampled = false;
	pr->track_depth = false;
	pr->nfuncs = 0;
	redirect__close(&pr->rd);
	memset(&pr->rd, 0, sizeof(pr->rd));
}

void probes__detach(struct probes *pr)
{
	release(pr);
	if (pr->claim_fd > 0)
		close(pr->claim_fd);
	pr->claim_fd = 0;
}
