/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* One traced process: its target, offsets, probes, code objects and maps. */
#ifndef __PYTM_TRACEE_H
#define __PYTM_TRACEE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include "probes.h"
#include "pytm.h"
#include "snapshot.h"
#include "target.h"
#include "tls.h"

struct pytm_bpf;
struct resolver;

struct tracee_opts {
	int frames;			/* traceback limit */
	int max_total;			/* frames counted for total_nframe */
	long max_blocks;		/* live blocks of one process */
	bool inject;			/* redirect the allocator */
	enum redirect_site_pref site_pref;	/* --probe-site */
	bool empty_sites;		/* --bench-empty: site programs do nothing */
	uint64_t sample_rate;		/* --sample: mean bytes between samples; 0 exact */
	unsigned int set_slots;		/* --sample-set: sampled blocks held at once */
	bool follow_forks;		/* trace forked children from their first event */
	bool free_lists;		/* 3.13+: objects reused from free lists are
					 * re-attributed (the page's reference tracer) */
	unsigned int peak_step;		/* --peak: ppm between peak marks; 0 off */
	bool record;			/* --recorder: exact mode through the in-target
					 * recorder (user/session/rec_drain.c) */
	unsigned int ring_slots;	/* its ring's slots */
	const char *const *overrides;	/* --debug-offset FIELD=VALUE */
	int noverrides;
};

struct tracee {
	pid_t pid;
	pid_t ppid;			/* followed from this parent's fork; 0: not */
	struct target t;
	struct pytm_offsets off;
	struct tls_static tls;		/* 3.12+: see find_tls */
	struct resolver *r;
	struct probes pr;
	int pidfd;
	struct block_maps *bm;		/* its live-block maps (tracee.c) */
	long max_blocks;		/* their entries, at most (--max-blocks) */
	int pickle;			/* the target's own snapshot layout */
	bool registered;		/* in the procs map */
	bool ready;			/* the event thread may read its code objects */
	bool attached;
	bool tried;			/* a forked child's own attach was tried */
	bool forked;			/* made at its fork (tracee__fork): traced
					 * through its parent's page until attached */
	bool rec_parent;		/* forked from a recording process: traced
					 * BPF's way (its parent's page, then its
					 * own with the BPF walk: session.c, adopt) */
	bool execed;			/* it called execve: another program now */
	bool shared_map;		/* its live-block maps are also a forked child's or parent's */
	char version[32];		/* "3.11.7" */
	char cmdline[256];		/* sanitized */
	pid_t nspid;			/* pid in its innermost pid namespace */
	char container[80];		/* container id from the cgroup path, or "" */
	char cgroup[256];		/* its cgroup (v2 path, or the first v1 line's), or "" */
	double attached_at;		/* wall clock (s since the epoch) of the attach */
	char oom_file[320];		/* where its memory cgroup counts OOM kills, or "" */
	long long oom_kills;		/* that count at attach; -1: none */
	struct snapshot *baseline;	/* --compare: the first report's snapshot */
	uint64_t sample_rate;		/* 0: exact */
	unsigned int peak_step;		/* --peak: ppm; 0: the peak's set is not kept */
	struct recorder *rec;		/* --recorder: its drain and live table */
	struct inject_shared ring;	/* ...and its ring */
	struct pytm_bpf *skel;		/* the drain's peak marks (rec_peak_mark) */
};

/*
 * Traced now: attached, or a recording parent's child once given its
 * inherited blocks (through its parent's page if its own attach failed:
 * session.c, adopt).
 */
static inline bool tracee__traced(const struct tracee *tr)
{
	return tr->registered && (tr->attached || (tr->rec_parent && tr->tried));
}

/*
 * Open PID, read and check its offsets, register it in SKEL's maps. No
 * probe yet. Negative errno with a message shown (see target__open).
 */
/* PPID: the traced parent PID forked from (its blocks to inherit), or 0. */
int tracee__open(struct tracee *tr, pid_t pid, pid_t ppid, struct pytm_bpf *skel,
		 const struct tracee_opts *o);
int tracee__attach(struct tracee *tr, struct pytm_bpf *skel, const struct tracee_opts *o);
/* Read code objects announced for this process. */
/*
 * Read code object ID at ADDR: from MEM (BPF's copies when it announced
 * it), the rest now; from PARENT's memory if TR's is gone (or NULL).
 */
struct resolver_mem;
void tracee__code(struct tracee *tr, uint32_t id, uint64_t addr, const struct resolver_mem *mem,
		  size_t nmem, const struct tracee *parent);
bool tracee__gone(struct tracee *tr);
struct snapshot *tracee__snapshot(struct tracee *tr, struct pytm_bpf *skel, int frames);
/*
 * Sampled mode: every allocation since attach, freed or not, as estimated
 * traces (count: objects, size: bytes) per traceback.
 */
/*
 * --peak: the live set as it was at the latest peak mark (*PEAK_NS, its
 * bpf_ktime_get_ns; 0 and an empty snapshot before any).
 */
struct snapshot *tracee__peak_snapshot(struct tracee *tr, struct pytm_bpf *skel, int frames,
				      uint64_t *peak_ns);
/* --peak: forget blocks freed before the latest mark (kept for nothing). */
void tracee__peak_tidy(struct tracee *tr, struct pytm_bpf *skel);
struct snapshot *tracee__alloc_snapshot(struct tracee *tr, struct pytm_bpf *skel, int frames);
int tracee__stats(const struct tracee *tr, struct pytm_bpf *skel, struct pytm_proc *out);
int tracee__clear(struct tracee *tr, struct pytm_bpf *skel);
/*
 * A generation more for TR's live-block maps (and the processes sharing
 * them) if they may fill before the next call: the event thread calls it
 * every few tens of milliseconds. Negative errno if that failed (said
 * once).
 */
int tracee__grow(struct tracee *tr, struct pytm_bpf *skel);
int tracee__reset_peak(struct tracee *tr, struct pytm_bpf *skel);
/*
 * How the process ended, from P (tracee__stats): "" while it runs, else
 * "exited with status N" or "killed by signal N (SIGNAME)[ by the OOM
 * killer]". Its fields in *STATUS (-1 none), *SIGNAL (0 none), *OOM.
 */
const char *tracee__end(const struct tracee *tr, const struct pytm_proc *p, char *buf,
			size_t len, int *status, int *signal, bool *oom);
/* "Traced memory: ..." and "Lost events: ..." lines (and how the snapshot was taken). */
void tracee__footer(const struct tracee *tr, struct pytm_bpf *skel, FILE *out);
struct json;
/* The members pid, nspid, container, python, interpreter, cmdline. */
void tracee__json_identity(const struct tracee *tr, struct json *j);
/*
 * The members "process", "mode", "probe_site", "sampling", "traced" and
 * "lost" of a JSON report (the same figures as tracee__footer).
 */
void tracee__json(const struct tracee *tr, struct pytm_bpf *skel, struct json *j);
/*
 * Every lost count of the process under the stable key that JSON documents
 * and metrics name it by (see the man page): the BPF counts of P, the
 * unreadable code objects, the sampler's. Fills OUT (at most MAX); how many.
 */
struct tracee_count {
	const char *key;
	uint64_t value;
};
#define TRACEE_MAX_COUNTS 16
int tracee__lost(const struct tracee *tr, const struct pytm_proc *p,
		 struct tracee_count *out, int max);
/* Remove the probes (and restore a redirected allocator). */
/*
 * Child PID just forked from PARENT (exact mode, whose BPF side traces it
 * already): a tracee at once, without discovery, so that its code objects
 * are read while it lives; tracee__attach later gives it probes of its own.
 */
int tracee__fork(struct tracee *tr, struct tracee *parent, pid_t pid, struct pytm_bpf *skel);
/* Copy PARENT's live blocks into forked child TR (exact mode); NBLOCKS copied. */
int tracee__inherit(struct tracee *tr, struct tracee *parent, struct pytm_bpf *skel,
		    uint64_t *nblocks);
/* TR's parent is gone: it starts with nothing inherited. */
void tracee__inherit_none(struct tracee *tr, struct pytm_bpf *skel);
/* PARENT has one forked child less to copy its blocks to (without a copy). */
void tracee__fork_done(pid_t parent, struct pytm_bpf *skel);
void tracee__detach(struct tracee *tr);
/* Drop every map entry of the process: blocks, code ids, its procs entry. */
void tracee__purge(struct tracee *tr, struct pytm_bpf *skel);
void tracee__close(struct tracee *tr);	/* safe on a zeroed tracee */

#endif /* __PYTM_TRACEE_H */
