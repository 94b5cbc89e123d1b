// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "pytm.skel.h"
#include "collect.h"
#include "pyoffsets.h"
#include "report.h"
#include "resolve.h"
#include "json.h"
#include "mapbatch.h"
#include "tracee.h"
#include "rec_drain.h"
#include "stack_hash.h"
#include "ring.h"
#include "page.h"
#include "util.h"
#include "validate.h"
#include "reftrace.h"
#include "tls.h"

#define DELETE_BATCH	4096	/* map entries read at once when deleting */
#define INHERIT_BATCH	4096	/* ...and when copying a parent's blocks */
#define REC_CODES_RING	(1 << 21)	/* bytes: ~320 code objects the drain has not read */

/* Offsets for the target, and a check that they match its memory. */
static int target_offsets(struct tracee *tr, const struct tracee_opts *o)
{
	const struct pytm_offsets *off;
	char buf[4096], why[256];
	int i, err;

	if (tr->t.hexversion >= 0x030d0000) {
		if (target__read(&tr->t, tr->t.runtime, buf, sizeof(buf)) ||
		    pyoffsets__from_debug(buf, sizeof(buf), &tr->off)) {
			warn("process %d: unsupported CPython %s (no readable _Py_DebugOffsets)",
			     tr->pid, tr->version);
			return -EPROTONOSUPPORT;
		}
	} else {
		off = pyoffsets__lookup(tr->t.hexversion);
		if (!off) {
			warn("process %d: unsupported CPython %s", tr->pid, tr->version);
			return -EPROTONOSUPPORT;
		}
		tr->off = *off;
	}
	for (i = 0; i < o->noverrides; i++) {
		if (validate__override(&tr->off, o->overrides[i])) {
			warn("invalid --debug-offset: %s", o->overrides[i]);
			return -EINVAL;
		}
	}
	/*
	 * Wrong offsets would give wrong stacks: refuse instead. The process
	 * runs while we read its frames, so one look may catch a thread
	 * between two states (1-2 attaches in 200 under bench_kill): wrong
	 * offsets fail every look.
	 */
	for (i = 0; (err = validate__offsets(&tr->t, &tr->off, why, sizeof(why))) && i < 4; i++)
		nanosleep(&(struct timespec){ 0, 2000000 }, NULL);
	if (err) {
		warn("process %d: the struct offsets for CPython %s do not match this process (%s); not tracing",
		     tr->pid, tr->version, why);
		return -EPROTO;
	}
	return 0;
}

static void find_oom_file(struct tracee *tr, const char *v1_memory_path);

/* Command line, pid in its own namespace, container id, cgroups. */
static void read_identity(struct tracee *tr)
{
	char path[64], buf[4096], memcg[256] = "", *p, *id;
	size_t n, i;
	FILE *f;

	tr->nspid = tr->pid;
	snprintf(path, sizeof(path), "/proc/%d/cmdline", tr->pid);
	f = fopen(path, "re");
	if (f) {
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		for (i = 0; i + 1 < n; i++)
			if (!buf[i])
				buf[i] = ' ';
		str_sanitize(tr->cmdline, sizeof(tr->cmdline), buf, n);
	}
	snprintf(path, sizeof(path), "/proc/%d/status", tr->pid);
	f = fopen(path, "re");
	if (f) {
		while (fgets(buf, sizeof(buf), f)) {
			if (strncmp(buf, "NSpid:", 6))
				continue;
			/* The last field is the pid in the innermost namespace. */
			p = strrchr(buf, '\t');
			if (!p)
				p = strrchr(buf, ' ');
			if (p)
				tr->nspid = atoi(p + 1);
		}
		fclose(f);
	}
	snprintf(path, sizeof(path), "/proc/%d/cgroup", tr->pid);
	f = fopen(path, "re");
	if (f) {
		while (fgets(buf, sizeof(buf), f)) {
			/* "0::/path" (v2) wins; else the first hierarchy's path. */
			p = strchr(buf, ':');
			p = p ? strchr(p + 1, ':') : NULL;
			if (p && (!tr->cgroup[0] || !strncmp(buf, "0::", 3))) {
				n = strcspn(p + 1, "\n");
				str_sanitize(tr->cgroup, sizeof(tr->cgroup), p + 1, n);
			}
			/* "N:memory:/path": cgroup v1's memory controller. */
			id = strstr(buf, ":memory:");
			if (id && !memcg[0]) {
				n = strcspn(id + 8, "\n");
				snprintf(memcg, sizeof(memcg), "%.*s", (int)n, id + 8);
			}
			/* docker-<64 hex>.scope, /docker/<id>, libpod-<id>, cri-containerd-<id> */
			for (p = buf; *p && !tr->container[0]; p++) {
				for (id = p, n = 0; (id[n] >= '0' && id[n] <= '9') ||
						    (id[n] >= 'a' && id[n] <= 'f'); n++)
					;
				if (n == 64) {
					snprintf(tr->container, sizeof(tr->container), "%.12s", id);
					break;
				}
				p += n ? n - 1 : 0;
			}
		}
		fclose(f);
	}
	find_oom_file(tr, memcg);
}

/*
 * Where the memory cgroup of TR counts its OOM kills: cgroup v2's
 * memory.events (at /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid
 * hosts), else v1's memory.oom_control. Found at attach: /proc/PID is
 * gone by the time the count matters.
 */
static void find_oom_file(struct tracee *tr, const char *v1_memory_path)
{
	char path[sizeof(tr->oom_file)];
	const char *const v2_roots[] = { "/sys/fs/cgroup", "/sys/fs/cgroup/unified" };
	size_t i;

	for (i = 0; tr->cgroup[0] && i < sizeof(v2_roots) / sizeof(v2_roots[0]); i++) {
		snprintf(path, sizeof(path), "%s%s/memory.events", v2_roots[i], tr->cgroup);
		if (!access(path, R_OK)) {
			memcpy(tr->oom_file, path, sizeof(path));
			return;
		}
	}
	if (v1_memory_path[0]) {
		snprintf(path, sizeof(path), "/sys/fs/cgroup/memory%s/memory.oom_control",
			 v1_memory_path);
		if (!access(path, R_OK))
			memcpy(tr->oom_file, path, sizeof(path));
	}
}

/* OOM kills counted in TR's memory cgroup, or -1: none to read. */
static long long oom_kills(const struct tracee *tr)
{
	char line[128];
	long long n = -1;
	FILE *f;

	if (!tr->oom_file[0])
		return -1;
	f = fopen(tr->oom_file, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "oom_kill %lld", &n) == 1)
			break;
	fclose(f);
	return n;
}

const char *tracee__end(const struct tracee *tr, const struct pytm_proc *p, char *buf,
			size_t len, int *status, int *signal, bool *oom)
{
	int sig = p->exit_code & 0x7f;
	long long now;

	*status = -1;
	*signal = 0;
	*oom = false;
	buf[0] = 0;
	if (!p->exited)
		return buf;
	if (!sig) {
		*status = (p->exit_code >> 8) & 0xff;
		snprintf(buf, len, "exited with status %d", *status);
		return buf;
	}
	*signal = sig;
	/* Its cgroup counted a kill meanwhile: the OOM killer's SIGKILL. */
	now = oom_kills(tr);
	*oom = sig == SIGKILL && tr->oom_kills >= 0 && now > tr->oom_kills;
	snprintf(buf, len, "killed by signal %d (SIG%s)%s", sig, sigabbrev_np(sig) ?: "?",
		 *oom ? " by the OOM killer" : "");
	return buf;
}

/* Bytes that cover the given fields (0xffff: absent), for a one-read head. */
static __u32 span(const __u16 *offs, int n, __u32 width)
{
	__u32 end = 0;
	int i;

	for (i = 0; i < n; i++)
		if (offs[i] != PYTM_OFF_NONE && offs[i] + width > end)
			end = offs[i] + width;
	return (end + 7) & ~7u;
}

/* How much of a thread state and of a frame BPF reads at once (<= 256). */
static int head_sizes(const struct pytm_offsets *o, __u32 *tstate, __u32 *frame)
{
	__u16 ts[] = { o->tstate_thread_id, o->tstate_frame };
	__u16 fr[] = { o->frame_back, o->frame_code, o->frame_lasti, o->frame_owner };

	*tstate = span(ts, 2, 8);
	*frame = span(fr, 4, 8);
	/* The BPF side masks offsets to 8-byte fields below 256 bytes. */
	return *tstate > 256 || *frame > 256 ? -EPROTONOSUPPORT : 0;
}

/*
 * A map of PID's own (named PREFIX_PID), entered under KEY (PID's, or a
 * generation's: PYTM_GEN_KEY) in the map of maps OUTER: its fd, or -errno.
 */
static int new_inner_map(const struct bpf_map *outer, pid_t pid, __u32 key, const char *prefix,
			 enum bpf_map_type type, __u32 key_size, __u32 value_size, __u32 max,
			 const struct bpf_map_create_opts *opts)
{
	char name[16];
	int fd, err;

	snprintf(name, sizeof(name), "%s_%d", prefix, pid);
	fd = bpf_map_create(type, name, key_size, value_size, max, opts);
	if (fd < 0)
		return -errno;
	if (bpf_map_update_elem(bpf_map__fd(outer), &key, &fd, BPF_ANY)) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

/* Generation G (MAX entries) of the live-block maps of process PID, in the outer map. */
static int new_blocks_map(struct pytm_bpf *skel, pid_t pid, int g, long max)
{
	LIBBPF_OPTS(bpf_map_create_opts, opts,
		    .map_flags = BPF_F_NO_PREALLOC);

	return new_inner_map(skel->maps.blocks, pid, PYTM_GEN_KEY(pid, g), "blocks",
			     BPF_MAP_TYPE_HASH, sizeof(struct pytm_block_key),
			     sizeof(struct pytm_block), max, &opts);
}

/*
 * A process's live-block maps (see PYTM_GENS), shared with the children it
 * forks (each enters them under its own pid too): the generations so far,
 * and the processes that share them, which grow together. Changed by the
 * event thread (forks, growth) and the main one (clear, purge): under
 * maps_lock; snapshots read N, then the maps it counts, which stay.
 */
struct block_maps {
	int n;				/* generations */
	int fd[PYTM_GENS];
	long size[PYTM_GENS];		/* their entries */
	pid_t *pids;			/* the processes sharing them */
	int npids;
	bool stuck;			/* a new generation failed (said once) */
	double next_check;		/* mono_now() of the next look (tracee__grow) */
};

/*
 * The first generation's entries for a cap of MAX (--max-blocks): a 64th
 * of it, within [128 Ki, 1 Mi] (2 to 16 MiB of buckets); 128 Ki when the
 * recorder keeps the blocks (BPF's map has only those it could not take).
 * Not fewer: the quarter left when it grows must take what comes until it
 * is checked again (20 ms, at up to ~1 M events/s).
 */
static long first_gen(long max, bool recording)
{
	long n = max / 64, hi = recording ? 1L << 17 : 1L << 20;

	n = n < (1L << 17) ? 1L << 17 : n > hi ? hi : n;
	return n < max ? n : max;
}

static pthread_mutex_t maps_lock = PTHREAD_MUTEX_INITIALIZER;

static int pid_control(pid_t pid, struct pytm_bpf *skel, enum pytm_ctl_op op, __s64 arg);
static void delete_blocks_all(const struct block_maps *bm, pid_t pid, __u32 only);

static int block_maps_n(const struct block_maps *bm)
{
	return bm ? __atomic_load_n(&bm->n, __ATOMIC_ACQUIRE) : 0;
}

/* PID in BM's sharers; -ENOMEM. */
static int block_maps_join(struct block_maps *bm, pid_t pid)
{
	pid_t *pids = realloc(bm->pids, (bm->npids + 1) * sizeof(*pids));

	if (!pids)
		return -ENOMEM;
	bm->pids = pids;
	bm->pids[bm->npids++] = pid;
	return 0;
}

/* PID no longer shares BM: freed with its last sharer. Under maps_lock. */
static void block_maps_leave(struct block_maps *bm, pid_t pid)
{
	int i;

	if (!bm)
		return;
	for (i = 0; i < bm->npids; i++)
		if (bm->pids[i] == pid) {
			bm->pids[i] = bm->pids[--bm->npids];
			break;
		}
	if (bm->npids)
		return;
	for (i = 0; i < bm->n; i++)
		close(bm->fd[i]);
	free(bm->pids);
	free(bm);
}

/* Generations FROM and up of BM out of the outer map, under PID. */
static void unregister_gens(struct pytm_bpf *skel, pid_t pid, int from, int n)
{
	__u32 key;
	int g;

	for (g = from; g < n; g++) {
		key = PYTM_GEN_KEY(pid, g);
		bpf_map_delete_elem(bpf_map__fd(skel->maps.blocks), &key);
	}
}

/* New live-block maps for TR alone (one generation of MAX entries): 0 or -errno. */
static int block_maps_new(struct tracee *tr, struct pytm_bpf *skel, long max)
{
	struct block_maps *bm = calloc(1, sizeof(*bm));
	int fd;

	if (!bm || block_maps_join(bm, tr->pid)) {
		free(bm);
		return -ENOMEM;
	}
	fd = new_blocks_map(skel, tr->pid, 0, max);
	if (fd < 0) {
		free(bm->pids);
		free(bm);
		return fd;
	}
	bm->fd[0] = fd;
	bm->size[0] = max;
	bm->n = 1;
	tr->bm = bm;
	return 0;
}

int tracee__open(struct tracee *tr, pid_t pid, pid_t ppid, struct pytm_bpf *skel,
		 const struct tracee_opts *o)
{
	struct pytm_proc proc = {};
	__u32 key = pid;
	int err;

	memset(tr, 0, sizeof(*tr));
	tr->pid = pid;
	tr->ppid = ppid;
	tr->pidfd = -1;
	err = target__open(&tr->t, pid);
	if (err)
		return err;
	target__version_str(&tr->t, tr->version, sizeof(tr->version));
	err = target_offsets(tr, o);
	if (err)
		return err;
	tr->pickle = tr->t.hexversion < 0x03090000 ? PYTM_PICKLE_38 : PYTM_PICKLE_39;
	read_identity(tr);
	tr->oom_kills = oom_kills(tr);
	tr->r = resolver__new(&tr->t, &tr->off);
	if (!tr->r)
		return -ENOMEM;
	tr->sample_rate = o->sample_rate;
	proc.sampled = o->sample_rate != 0;
	proc.peak_step = tr->peak_step = o->peak_step;
	/*
	 * Sampled, a child attached late (BPF made no entry at its fork)
	 * inherits nothing: it ran its sampler on its own meanwhile, and the
	 * frees of what it inherited may have gone unseen.
	 */
	proc.inheriting = ppid && !proc.sampled;
	proc.runtime = tr->t.runtime;
	proc.max_frames = o->frames;
	proc.max_total = o->max_total > o->frames ? o->max_total : o->frames;
	proc.off = tr->off;
	err = head_sizes(&tr->off, &proc.tstate_read, &proc.frame_read);
	if (err) {
		warn("process %d: CPython %s keeps its thread states or frames in a layout we cannot read",
		     pid, tr->version);
		return err;
	}
	tr->max_blocks = o->max_blocks;
	err = block_maps_new(tr, skel,
			     first_gen(o->max_blocks, o->record && o->inject && !o->sample_rate));
	if (err) {
		warn("cannot make the live-block map of process %d: %s", pid, strerror(-err));
		return err;
	}
	if (bpf_map_update_elem(bpf_map__fd(skel->maps.procs), &key, &proc, BPF_ANY)) {
		err = -errno;
		warn("cannot register process %d: %s", pid, strerror(-err));
		return err;
	}
	tr->registered = true;
	/* Becomes readable when the process exits. */
	tr->pidfd = syscall(SYS_pidfd_open, pid, 0);
	return 0;
}

int tracee__fork(struct tracee *tr, struct tracee *parent, pid_t pid, struct pytm_bpf *skel)
{
	__u32 key = pid;
	int err, g;

	memset(tr, 0, sizeof(*tr));
	tr->pid = pid;
	tr->ppid = parent->pid;
	tr->pidfd = -1;
	/* Becomes readable when the process exits; before the rest, which may take a while. */
	tr->pidfd = syscall(SYS_pidfd_open, pid, 0);
	err = target__fork(&tr->t, &parent->t, pid);
	if (err)
		return err;
	tr->off = parent->off;
	memcpy(tr->version, parent->version, sizeof(tr->version));
	tr->pickle = parent->pickle;
	tr->sample_rate = parent->sample_rate;
	tr->peak_step = parent->peak_step;
	read_identity(tr);
	if (!tr->cmdline[0])	/* gone already */
		memcpy(tr->cmdline, parent->cmdline, sizeof(tr->cmdline));
	tr->oom_kills = oom_kills(tr);
	tr->r = resolver__new(&tr->t, &tr->off);
	if (!tr->r || resolver__inherit(tr->r, parent->r))
		return -ENOMEM;
	/* Its parent's maps, under its own pid too (see pytm_proc.blocks_pid). */
	tr->max_blocks = parent->max_blocks;
	pthread_mutex_lock(&maps_lock);
	err = parent->bm ? block_maps_join(parent->bm, pid) : -ENOENT;
	if (!err)
		tr->bm = parent->bm;
	for (g = 0; !err && g < tr->bm->n; g++) {
		key = PYTM_GEN_KEY(pid, g);
		if (bpf_map_update_elem(bpf_map__fd(skel->maps.blocks), &key, &tr->bm->fd[g],
					BPF_ANY))
			err = -errno;
	}
	/* BPF gave it its parent's count at the fork: the parent may have grown since. */
	if (!err)
		err = pid_control(pid, skel, PYTM_CTL_NGEN, tr->bm->n);
	pthread_mutex_unlock(&maps_lock);
	if (err)
		return err;
	tr->shared_map = parent->shared_map = true;
	tr->registered = true;	/* BPF made its procs entry at the fork */
	tr->forked = true;
	tr->rec_parent = parent->rec != NULL;
	tr->attached_at = real_now();
	return 0;
}

/*
 * One interpreter in the process, so one GIL for every obj/mem call (3.12+
 * may give subinterpreters their own). False when unsure.
 */
static bool one_interpreter(const struct tracee *tr)
{
	uint64_t head = 0, next = 1;

	if (target__read(&tr->t, tr->t.runtime + tr->off.runtime_interpreters_head,
			 &head, sizeof(head)) || !head)
		return false;
	if (target__read(&tr->t, head + tr->off.interp_next, &next, sizeof(next)))
		return false;
	return next == 0;
}

/*
 * 3.13+ GIL builds: where the runtime's reference tracer is, so that the
 * page follows objects reused from free lists as tracemalloc does (page/
 * sampler.c, pytm_reftrace), once tp_flags is seen where the offsets say
 * on two types we know (tuple: GC and a tuple subclass; float: neither GC
 * nor pre-header). 0, with the reason under -v, when not.
 */
static uint64_t ref_tracer_slot(struct tracee *tr)
{
	uint64_t tuple = target__symbol(&tr->t, "PyTuple_Type");
	uint64_t flt = target__symbol(&tr->t, "PyFloat_Type");
	uint64_t slot, tf = 0, ff = 0;

	if (tr->t.hexversion < 0x030d0000)
		return 0;
	if (!tr->off.type_flags) {
		vlog("process %d: no tp_flags offset (free-threaded?): objects reused from free lists keep their first traceback",
		     tr->pid);
		return 0;
	}
	if (!tuple || !flt ||
	    target__read(&tr->t, tuple + tr->off.type_flags, &tf, sizeof(tf)) ||
	    target__read(&tr->t, flt + tr->off.type_flags, &ff, sizeof(ff)) ||
	    (tf & (PYTM_TPFLAGS_HAVE_GC | PYTM_TPFLAGS_TUPLE_SUBCLASS | PYTM_TPFLAGS_READY)) !=
	    (PYTM_TPFLAGS_HAVE_GC | PYTM_TPFLAGS_TUPLE_SUBCLASS | PYTM_TPFLAGS_READY) ||
	    (ff & (PYTM_TPFLAGS_HAVE_GC | PYTM_TPFLAGS_PREHEADER | PYTM_TPFLAGS_READY)) != PYTM_TPFLAGS_READY) {
		vlog("process %d: tp_flags not where _Py_DebugOffsets says: objects reused from free lists keep their first traceback",
		     tr->pid);
		return 0;
	}
	slot = reftrace__find_slot(&tr->t);
	if (!slot)
		vlog("process %d: PyRefTracer_SetTracer not understood: objects reused from free lists keep their first traceback",
		     tr->pid);
	return slot;
}

/*
 * 3.12+: where the in-target recorder will find thread states (see
 * tls.h): needed by --recorder, else only said under -v, so that other
 * attaches do not pay for it.
 */
static int64_t find_tls(struct tracee *tr, bool need)
{
	int64_t off;
	int err;

	struct timespec ms = { 0, 1000000 };
	int tries = 0;

	if ((!pytm_verbose && !need) || tr->t.hexversion < 0x030c0000)
		return 0;
	/* The main thread runs Python now and then: a few looks, 1 ms apart. */
	while ((err = tls__tstate_offset(&tr->t, &tr->off, &tr->tls, &off)) == -EAGAIN && ++tries < 20)
		nanosleep(&ms, NULL);
	if (!err) {
		vlog("process %d: _Py_tss_tstate at %+lld from the thread pointer", tr->pid,
		     (long long)off);
		return off;
	}
	vlog("process %d: _Py_tss_tstate not found (%s)%s", tr->pid,
	     err == -EAGAIN ? "no thread runs Python now" : strerror(-err),
	     need ? ": the recorder sends every event BPF's way" : "");
	return 0;
}

static int proc_control(struct tracee *tr, struct pytm_bpf *skel, enum pytm_ctl_op op,
			__s64 arg);

/* --recorder: the page's configuration (the ring's addresses are redirect's). */
static void rec_config(struct tracee *tr, const struct tracee_opts *o, struct pytm_page_rec *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->runtime = tr->t.runtime;
	rec->tls = find_tls(tr, o->record);
	rec->tls_ok = rec->tls != 0;
	rec->max_frames = o->frames;
	rec->max_total = o->max_total;
	rec->off = tr->off;
}

/*
 * 3.12+, the thread-state offset not found at attach (no thread ran
 * Python then): until it is, the page sends every event BPF's way. Asked
 * again from the drain; once found, the offset is written, then the flag
 * that lets the page use it.
 */
static int retry_tls(void *arg)
{
	struct tracee *tr = arg;
	static const uint8_t one = 1;
	int64_t off;
	int err;

	err = tls__tstate_offset(&tr->t, &tr->off, &tr->tls, &off);
	if (err)
		return err;
	err = inject__write_data(&tr->pr.rd.page, PYTM_DATA_REC + offsetof(struct pytm_page_rec, tls),
				 &off, sizeof(off)) ?:
	      inject__write_data(&tr->pr.rd.page,
				 PYTM_DATA_REC + offsetof(struct pytm_page_rec, tls_ok), &one, 1);
	if (!err)
		vlog("process %d: _Py_tss_tstate at %+lld from the thread pointer (found "
		     "while recording)", tr->pid, (long long)off);
	return err == -EAGAIN ? -EIO : err;
}

/* --peak: the drain made a new mark; BPF keeps its own blocks live then. */
static void rec_peak_mark(void *arg, uint64_t ns)
{
	struct tracee *tr = arg;

	proc_control(tr, tr->skel, PYTM_CTL_PEAK_MARK, (__s64)ns);
}

/*
 * The process's ring buffer of code objects (BPF's rec_code): its drain
 * reads it. -errno, or its fd.
 */
static int new_codes_ring(struct pytm_bpf *skel, pid_t pid)
{
	return new_inner_map(skel->maps.rec_codes, pid, pid, "rcodes", BPF_MAP_TYPE_RINGBUF, 0, 0,
			     REC_CODES_RING, NULL);
}

static int start_recorder(struct tracee *tr, struct pytm_bpf *skel,
			  const struct pytm_page_rec *cfg)
{
	int err, codes_fd;

	/* --peak: the drain's marks from now on, over both parts (none yet). */
	tr->skel = skel;
	if (tr->peak_step && (err = proc_control(tr, skel, PYTM_CTL_PEAK_MARK, 0)) < 0)
		return err;

	/* Ours from now on: the drain reads it after the page is detached. */
	tr->ring = tr->pr.rd.ring;
	memset(&tr->pr.rd.ring, 0, sizeof(tr->pr.rd.ring));
	/* Without it, code objects come through the event thread. */
	codes_fd = new_codes_ring(skel, tr->pid);
	if (codes_fd < 0)
		vlog("process %d: no ring buffer of code objects of its own: %s", tr->pid,
		     strerror(-codes_fd));
	err = recorder__start(&tr->rec, &(struct recorder_opts){
		.pid = tr->pid, .ring = tr->ring.mem, .r = tr->r,
		.next_code_id = &skel->bss->next_code_id, .codes_fd = codes_fd < 0 ? -1 : codes_fd,
		.procs_fd = bpf_map__fd(skel->maps.procs),
		.retry = tr->t.hexversion >= 0x030c0000 && !cfg->tls_ok ? retry_tls : NULL,
		.retry_arg = tr,
		.peak_step = tr->peak_step, .peak_mark = rec_peak_mark, .peak_arg = tr,
	});
	if (err) {
		warn("process %d: cannot start the recorder's drain: %s", tr->pid, strerror(-err));
		return err;
	}
	/* Where BPF reads the ring's clock at the freeze. */
	err = proc_control(tr, skel, PYTM_CTL_REC_CLOCK,
			   (__s64)(tr->ring.addr + offsetof(struct pytm_ring_hdr, head)));
	return err < 0 ? err : 0;
}

int tracee__attach(struct tracee *tr, struct pytm_bpf *skel, const struct tracee_opts *o)
{
	struct pytm_page_rec rec;
	int err;

	rec_config(tr, o, &rec);
	err = probes__attach(&tr->pr, skel, &tr->t, &(struct probes_opts){
		.inject = o->inject, .site_pref = o->site_pref, .empty_sites = o->empty_sites,
		.sample_rate = o->sample_rate,
		/* --recorder: blocks BPF records (no thread state, ring full) */
		.set_slots = o->record ? PYTM_SET_MAX_BUCKETS * PYTM_SET_WAYS : o->set_slots,
		.gil_plain = o->sample_rate && one_interpreter(tr),
		.follow_forks = o->follow_forks, .adopt = tr->forked,
		.ref_slot = o->inject && o->free_lists ? ref_tracer_slot(tr) : 0,
		.ob_type = tr->off.object_type, .tp_flags = tr->off.type_flags,
		.gc_head = 16,	/* sizeof(PyGC_Head) in GIL builds: two words */
		.record = o->inject && o->record && !o->sample_rate,
		.ring_slots = o->ring_slots, .rec = rec,
	});
	if (!err && tr->pr.recording)
		err = start_recorder(tr, skel, &rec);
	tr->attached = !err;
	tr->attached_at = real_now();
	return err;
}

void tracee__code(struct tracee *tr, uint32_t id, uint64_t addr, const struct resolver_mem *mem,
		  size_t nmem, const struct tracee *parent)
{
	int err;

	recorder__lock_resolver(tr->rec);
	resolver__set_retry(tr->r, parent != NULL);
	err = resolver__add_code_copied(tr->r, id, addr, mem, nmem);
	resolver__set_retry(tr->r, false);
	recorder__unlock_resolver(tr->rec);
	/*
	 * A forked child that is gone already (multiprocessing's workers end
	 * with os._exit the moment their work is done): a code object it
	 * inherited is at the same address in its parent.
	 */
	if (err && parent)
		resolver__add_code_from(tr->r, &parent->t, id, addr);
}

bool tracee__gone(struct tracee *tr)
{
	struct pollfd pfd = { .fd = tr->pidfd, .events = POLLIN };

	if (tr->pidfd < 0)
		return kill(tr->pid, 0) && errno == ESRCH;
	return poll(&pfd, 1, 0) > 0;
}

struct snapshot *tracee__snapshot(struct tracee *tr, struct pytm_bpf *skel, int frames)
{
	struct snapshot *s;

	if (!tr->bm) {		/* purged */
		errno = ENOENT;
		return NULL;
	}
	if (!tr->rec)
		return collect__snapshot(tr->bm->fd, block_maps_n(tr->bm),
					 bpf_map__fd(skel->maps.stacks), tr->pid, frames, tr->r, NULL);
	/* Everything recorded so far, then nothing changes until it is read. */
	recorder__sync(tr->rec);
	recorder__lock(tr->rec);
	s = collect__snapshot(tr->bm->fd, block_maps_n(tr->bm), bpf_map__fd(skel->maps.stacks),
			      tr->pid, frames, tr->r, tr->rec);
	recorder__unlock(tr->rec);
	return s;
}

struct snapshot *tracee__peak_snapshot(struct tracee *tr, struct pytm_bpf *skel, int frames,
				      uint64_t *peak_ns)
{
	struct pytm_proc p;
	struct snapshot *s;

	*peak_ns = 0;
	if (!tr->bm) {		/* purged */
		errno = ENOENT;
		return NULL;
	}
	if (tr->rec) {
		/* The drain's mark, over its blocks and BPF's (rec_peak_mark). */
		recorder__sync(tr->rec);
		recorder__lock(tr->rec);
		s = collect__rec_peak(tr->bm->fd, block_maps_n(tr->bm),
				      bpf_map__fd(skel->maps.peak_freed),
				      bpf_map__fd(skel->maps.stacks), tr->pid, peak_ns, frames,
				      tr->r, tr->rec);
		recorder__unlock(tr->rec);
		return s;
	}
	if (!tracee__stats(tr, skel, &p))
		*peak_ns = p.peak_ns;
	/* No mark yet (nothing traced): an empty snapshot. */
	if (!*peak_ns)
		return snapshot__new(frames);
	return collect__peak(tr->bm->fd, block_maps_n(tr->bm), bpf_map__fd(skel->maps.peak_freed),
			     bpf_map__fd(skel->maps.stacks), tr->pid, *peak_ns, frames, tr->r);
}

void tracee__peak_tidy(struct tracee *tr, struct pytm_bpf *skel)
{
	struct map_batch b;
	struct pytm_proc p;
	__u32 i;

	if (!tr->peak_step || tracee__stats(tr, skel, &p) || !p.peak_ns)
		return;
	if (map_batch__init(&b, bpf_map__fd(skel->maps.peak_freed),
			    sizeof(struct pytm_block_key), sizeof(struct pytm_freed), DELETE_BATCH))
		return;
	while (map_batch__next(&b)) {
		const struct pytm_block_key *keys = b.keys;
		const struct pytm_freed *vals = b.vals;

		/* Freed before the latest mark: not in the peak's set. */
		for (i = 0; i < b.count; i++)
			if (keys[i].pid == (__u32)tr->pid && vals[i].freed <= p.peak_ns)
				bpf_map_delete_elem(b.fd, &keys[i]);
	}
	map_batch__free(&b);
}

struct snapshot *tracee__alloc_snapshot(struct tracee *tr, struct pytm_bpf *skel, int frames)
{
	return collect__allocs(bpf_map__fd(skel->maps.allocs), bpf_map__fd(skel->maps.stacks),
			       tr->pid, frames, tr->r);
}

/* The sampler's counters (zero when not sampling or unreadable). */
static void sampler_state(const struct tracee *tr, struct pytm_page_ctl *c)
{
	memset(c, 0, sizeof(*c));
	if (tr->attached && (tr->pr.sampled || tr->pr.recording) &&
	    redirect__sampler_state(&tr->pr.rd, c))
		memset(c, 0, sizeof(*c));
}

int tracee__stats(const struct tracee *tr, struct pytm_bpf *skel, struct pytm_proc *out)
{
	struct recorder_stats rs;
	__u32 key = tr->pid;

	if (bpf_map_lookup_elem(bpf_map__fd(skel->maps.procs), &key, out))
		return -errno;
	if (tr->rec) {
		/* The recorder's blocks with BPF's (those it could not take). */
		recorder__stats(tr->rec, out->current, &rs);
		out->current += rs.current;
		out->peak = rs.peak > out->peak ? rs.peak : out->peak;
		out->nevents += rs.events;
	}
	return 0;
}

/* Delete every entry of a process from the map FD, keys of size KSZ. */
static void delete_pid_keys(int fd, size_t ksz, pid_t pid)
{
	char key[32], next[32];
	bool first = true;

	/*
	 * Both key layouts start with the pid. KEY stays on the last entry
	 * kept, so that the walk goes on after a deletion.
	 */
	while (!bpf_map_get_next_key(fd, first ? NULL : key, next)) {
		if (*(__u32 *)next == (__u32)pid && !bpf_map_delete_elem(fd, next))
			continue;
		first = false;
		memcpy(key, next, ksz);
	}
}


/*
 * Delete PID's entries from the live-block map FD (those with a domain bit
 * of ONLY, if not 0: its tombstones), by batches.
 */
static void delete_blocks_of(int fd, pid_t pid, __u32 only)
{
	struct map_batch b;
	__u32 i;

	if (map_batch__init(&b, fd, sizeof(struct pytm_block_key), sizeof(struct pytm_block),
			    DELETE_BATCH))
		return;
	/* Deleting behind the batch position is safe in a hash map. */
	while (map_batch__next(&b)) {
		const struct pytm_block_key *keys = b.keys;

		for (i = 0; i < b.count; i++)
			if (keys[i].pid == (__u32)pid && (!only || (keys[i].domain & only)))
				bpf_map_delete_elem(fd, &keys[i]);
	}
	map_batch__free(&b);
}

/* The same in every generation of BM. */
static void delete_blocks_all(const struct block_maps *bm, pid_t pid, __u32 only)
{
	int g, n = block_maps_n(bm);

	for (g = 0; g < n; g++)
		delete_blocks_of(bm->fd[g], pid, only);
}

/* Apply OP to TR's counters: in the kernel when it can, else by rewriting the entry. */
static int pid_control(pid_t pid, struct pytm_bpf *skel, enum pytm_ctl_op op, __s64 arg)
{
	struct pytm_ctl ctl = { .pid = pid, .op = op, .arg = arg };
	LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = &ctl, .ctx_size_in = sizeof(ctl));
	int pfd = bpf_map__fd(skel->maps.procs), fd;
	struct pytm_proc p;
	__u32 key = pid;

	fd = bpf_program__fd(skel->progs.control);
	if (fd >= 0) {
		if (bpf_prog_test_run_opts(fd, &opts))
			return -errno;
		return (int)opts.retval;
	}
	/* Racy against events in flight: their counts may be overwritten. */
	if (bpf_map_lookup_elem(pfd, &key, &p))
		return -errno;
	if (op == PYTM_CTL_INHERITED) {
		p.inheriting = 0;
	} else if (op == PYTM_CTL_FORK_DONE) {
		p.forking -= p.forking > 0;
	} else if (op == PYTM_CTL_REC_CLOCK) {
		p.rec_clock = arg;
	} else if (op == PYTM_CTL_PEAK_MARK) {
		p.peak_step = 0;
		p.peak_ns = (__u64)arg;
	} else if (op == PYTM_CTL_INHERIT) {
		p.current += arg;
		p.peak = p.current > p.peak ? p.current : p.peak;
	} else if (op == PYTM_CTL_NGEN) {
		p.ngen = arg;
	} else if (op == PYTM_CTL_ENTRIES) {
		p.nblocks += arg;
	} else {
		if (op == PYTM_CTL_CLEAR)
			p.current = p.nblocks = 0;
		p.peak = op == PYTM_CTL_CLEAR ? 0 : p.current;
	}
	if (bpf_map_update_elem(pfd, &key, &p, BPF_EXIST))
		return -errno;
	return op == PYTM_CTL_FORK_DONE ? (int)p.forking : 0;
}

static int proc_control(struct tracee *tr, struct pytm_bpf *skel, enum pytm_ctl_op op,
			__s64 arg)
{
	return pid_control(tr->pid, skel, op, arg);
}

/* Blocks PID freed while it had children to copy them to (the freed map). */
static void delete_freed_of(struct pytm_bpf *skel, pid_t pid)
{
	delete_pid_keys(bpf_map__fd(skel->maps.freed), sizeof(struct pytm_block_key), pid);
}

void tracee__fork_done(pid_t parent, struct pytm_bpf *skel)
{
	/* The last child copied: what the parent kept for them goes. */
	if (pid_control(parent, skel, PYTM_CTL_FORK_DONE, 0) == 0)
		delete_freed_of(skel, parent);
}

int tracee__clear(struct tracee *tr, struct pytm_bpf *skel)
{
	struct block_maps *old = tr->bm;
	int err, n;

	/* A fresh map is quicker than deleting every entry of the old ones. */
	pthread_mutex_lock(&maps_lock);
	err = block_maps_new(tr, skel, first_gen(tr->max_blocks, tr->rec != NULL));
	if (!err) {
		n = old ? old->n : 0;
		pid_control(tr->pid, skel, PYTM_CTL_NGEN, 1);
		unregister_gens(skel, tr->pid, 1, n);
		/* Maps a forked child or parent keeps: its blocks go from them. */
		if (old && old->npids > 1)
			delete_blocks_all(old, tr->pid, 0);
		block_maps_leave(old, tr->pid);
	}
	pthread_mutex_unlock(&maps_lock);
	if (err)
		return err;
	if (tr->rec) {
		recorder__sync(tr->rec);
		recorder__clear(tr->rec);
	}
	return proc_control(tr, skel, PYTM_CTL_CLEAR, 0);
}

/* The entries of BM's first N generations, all together. */
static long gens_size(const struct block_maps *bm, int n)
{
	long total = 0;

	for (int i = 0; i < n; i++)
		total += bm->size[i];
	return total;
}

/*
 * A generation more for BM (within MAX entries for them all), entered
 * under every sharer's pid. USED: the entries in them, for the log. Under
 * maps_lock. 0, or -errno (said once; then never again).
 */
static int add_gen(struct block_maps *bm, struct pytm_bpf *skel, long max, __s64 used)
{
	int bfd = bpf_map__fd(skel->maps.blocks);
	long size, room;
	int i, g = bm->n, fd;
	__u32 key;

	if (bm->stuck || g >= PYTM_GENS || !bm->npids)
		return -ENOSPC;
	/* Twice the last one, within --max-blocks for them all. */
	room = max - gens_size(bm, g);
	size = 2 * bm->size[g - 1] < room ? 2 * bm->size[g - 1] : room;
	if (size < 1024) {
		bm->stuck = true;	/* --max-blocks reached */
		return -ENOSPC;
	}
	fd = new_blocks_map(skel, bm->pids[0], g, size);
	if (fd < 0) {
		bm->stuck = true;
		warn("process %d: cannot make its live-block map larger (%ld entries: %s): events "
		     "will be lost when it fills", bm->pids[0], size, strerror(-fd));
		return fd;
	}
	bm->fd[g] = fd;
	bm->size[g] = size;
	__atomic_store_n(&bm->n, g + 1, __ATOMIC_RELEASE);
	for (i = 0; i < bm->npids; i++) {
		key = PYTM_GEN_KEY(bm->pids[i], g);
		if (i && bpf_map_update_elem(bfd, &key, &fd, BPF_ANY))
			continue;	/* it goes on with those it has */
		pid_control(bm->pids[i], skel, PYTM_CTL_NGEN, g + 1);
	}
	if (used >= 0)
		vlog("process %d: live-block map generation %d: %ld entries (%lld in use)",
		     bm->pids[0], g + 1, size, (long long)used);
	else
		vlog("process %d: live-block map generation %d: %ld entries (for inherited blocks)",
		     bm->pids[0], g + 1, size);
	return 0;
}

int tracee__grow(struct tracee *tr, struct pytm_bpf *skel)
{
	int pfd = bpf_map__fd(skel->maps.procs);
	struct block_maps *bm;
	struct pytm_proc p;
	__s64 used = 0;
	int i, err = 0;
	long total;
	__u32 key;

	pthread_mutex_lock(&maps_lock);
	bm = tr->bm;
	/* Once for all the processes that share them: by the first. */
	if (!bm || bm->stuck || bm->n >= PYTM_GENS || !bm->npids || bm->pids[0] != tr->pid ||
	    mono_now() < bm->next_check)
		goto out;
	for (i = 0; i < bm->npids; i++) {
		key = bm->pids[i];
		if (!bpf_map_lookup_elem(pfd, &key, &p))
			used += p.nblocks;
	}
	/*
	 * Another when they are 3/4 full: new entries go to the newest, then
	 * to older ones with room (insert_older), and a quarter is left for
	 * the time until this is called again.
	 */
	total = gens_size(bm, bm->n);
	if (used >= total / 4 * 3)
		err = add_gen(bm, skel, tr->max_blocks, used);
	/*
	 * A quarter full or less: looked at again in 100 ms (half of them
	 * takes longer to fill at ~1 M events/s), so that a thousand idle
	 * processes cost 10,000 lookups a second, not 50,000.
	 */
	bm->next_check = mono_now() + (used < total / 4 ? 0.1 : 0.0);
out:
	pthread_mutex_unlock(&maps_lock);
	return err == -ENOSPC ? 0 : err;
}

int tracee__reset_peak(struct tracee *tr, struct pytm_bpf *skel)
{
	struct pytm_proc p;
	__u32 key = tr->pid;
	int err = proc_control(tr, skel, PYTM_CTL_RESET_PEAK, 0);

	if (!err && tr->rec && !bpf_map_lookup_elem(bpf_map__fd(skel->maps.procs), &key, &p))
		recorder__reset_peak(tr->rec, p.current);
	return err;
}


/* Do the maps BM hold K's address under K's pid with domain bit BIT? */
static bool child_has(const struct block_maps *bm, struct pytm_block_key k, __u32 bit)
{
	struct pytm_block v;
	int g, n = block_maps_n(bm);

	k.domain |= bit;
	for (g = 0; g < n; g++)
		if (!bpf_map_lookup_elem(bm->fd[g], &k, &v))
			return true;
	return false;
}

/*
 * A forked child's starting live set: its parent's, as tracemalloc in a
 * forked child keeps its parent's traces. The child is traced already
 * (its frees of blocks not yet copied leave tombstones), the parent goes
 * on: what the parent allocated or freed between the fork and this copy
 * is the copy's error (none for a parent that forks and waits).
 */
/*
 * Copy block K (a parent's key, made the child's) with value V into the
 * child's map, unless the child has it in any form already: its own block
 * now, freed by it before this copy (a tombstone), kept at finalization
 * (GONE) or born after it (LATE). (A free and a new block at the same
 * address in the microseconds between these calls would lose the new
 * block.) True if copied.
 */
static bool copy_inherited(struct tracee *tr, struct pytm_bpf *skel, struct pytm_block_key k,
			   const struct pytm_block *v, uint64_t *nskipped)
{
	const struct block_maps *bm = tr->bm;
	int fd, n = block_maps_n(bm);

	if (!n || (n > 1 && child_has(bm, k, 0)))
		return false;	/* the child's own block now */
	fd = bm->fd[n - 1];	/* the newest, as BPF's new blocks */
	if (bpf_map_update_elem(fd, &k, v, BPF_NOEXIST)) {
		/* Full: a generation more now (the copy is counted after it). */
		if (errno != E2BIG)
			return false;	/* the child's own block now */
		pthread_mutex_lock(&maps_lock);
		if (bm->n == n)
			add_gen(tr->bm, skel, tr->max_blocks, -1);
		pthread_mutex_unlock(&maps_lock);
		n = block_maps_n(bm);
		fd = bm->fd[n - 1];
		if (bpf_map_update_elem(fd, &k, v, BPF_NOEXIST))
			return false;	/* no room */
	}
	if (child_has(bm, k, PYTM_DOMAIN_TOMB) || child_has(bm, k, PYTM_DOMAIN_GONE) ||
	    child_has(bm, k, PYTM_DOMAIN_LATE)) {
		bpf_map_delete_elem(fd, &k);
		(*nskipped)++;
		return false;
	}
	return true;
}

void tracee__inherit_none(struct tracee *tr, struct pytm_bpf *skel)
{
	proc_control(tr, skel, PYTM_CTL_INHERITED, 0);
	delete_blocks_all(tr->bm, tr->pid, PYTM_DOMAIN_TOMB);
}

/* Blocks of PARENT's set at FORK_NS that it freed since (the freed map), into TR. */
static void copy_freed(struct tracee *tr, const struct tracee *parent, struct pytm_bpf *skel,
		       uint64_t fork_ns, __s64 *bytes, uint64_t *nblocks, uint64_t *nskipped)
{
	struct pytm_block_key k;
	struct map_batch b;
	__u32 i;

	if (map_batch__init(&b, bpf_map__fd(skel->maps.freed), sizeof(struct pytm_block_key),
			    sizeof(struct pytm_freed), INHERIT_BATCH))
		return;
	while (map_batch__next(&b)) {
		const struct pytm_block_key *keys = b.keys;
		const struct pytm_freed *f = b.vals;

		for (i = 0; i < b.count; i++) {
			if (keys[i].pid != (__u32)parent->pid || f[i].b.born >= fork_ns ||
			    f[i].freed < fork_ns)
				continue;
			k = keys[i];
			k.pid = tr->pid;
			k.domain &= PYTM_DOMAIN_MASK;
			if (copy_inherited(tr, skel, k, &f[i].b, nskipped)) {
				*bytes += f[i].b.weight;
				(*nblocks)++;
			}
		}
	}
	map_batch__free(&b);
}

/*
 * A stack of the recorder's in BPF's stacks map (its id there: the hash
 * BPF gives it), so that a block copied into BPF's map resolves as BPF's
 * own. 0: no frames, or the map is full.
 */
static __u64 stack_to_bpf(struct pytm_bpf *skel, const struct pytm_stack *st)
{
	struct pytm_stack full;
	__u64 id;

	if (!st || !st->nframe)
		return 0;
	memset(&full, 0, sizeof(full));
	full.nframe = st->nframe;
	full.total_nframe = st->total_nframe;
	memcpy(full.frames, st->frames, st->nframe * sizeof(st->frames[0]));
	id = pytm_stack_hash(full.frames, full.nframe, full.total_nframe);
	if (bpf_map_update_elem(bpf_map__fd(skel->maps.stacks), &id, &full, BPF_NOEXIST) &&
	    errno != EEXIST)
		return 0;
	return id;
}

struct rec_copy {
	struct tracee *tr;
	struct pytm_bpf *skel;
	__s64 bytes;
	uint64_t nblocks, nskipped;
	__u64 *ids;		/* by the recorder's stack index + 1: BPF's id, 0: not yet */
	size_t nids;
};

/* ST's id in BPF's stacks map, put there once per stack (not per block). */
static __u64 copy_stack(struct rec_copy *c, uint32_t stack, const struct pytm_stack *st)
{
	size_t n;
	__u64 *ids;

	if (stack >= c->nids) {
		n = stack + 1 > 2 * c->nids ? stack + 1 : 2 * c->nids;
		ids = realloc(c->ids, n * sizeof(*ids));
		if (!ids)
			return stack_to_bpf(c->skel, st);
		memset(ids + c->nids, 0, (n - c->nids) * sizeof(*ids));
		c->ids = ids;
		c->nids = n;
	}
	if (!c->ids[stack])
		c->ids[stack] = stack_to_bpf(c->skel, st);
	return c->ids[stack];
}

static int copy_recorded(void *arg, const struct recorder_block *b, const struct pytm_stack *st)
{
	struct rec_copy *c = arg;
	struct pytm_block_key k = { .pid = (__u32)c->tr->pid, .domain = 0, .addr = b->addr };
	struct pytm_block v = {
		.size = b->size, .weight = b->size, .born = b->born,
		.stack_id = copy_stack(c, b->stack, st),
	};

	if (copy_inherited(c->tr, c->skel, k, &v, &c->nskipped)) {
		c->bytes += (__s64)b->size;
		c->nblocks++;
	}
	return 0;
}

/*
 * The blocks PARENT's recorder held when its ring's head was REC_FORK - 1
 * (0: not forked under our eyes: as they are now), into TR's part of BPF's
 * map: the child goes BPF's way (page/sampler.c), and frees them there.
 */
static void inherit_recorded(struct tracee *tr, struct tracee *parent, struct pytm_bpf *skel,
			     uint64_t rec_fork, __s64 *bytes, uint64_t *nblocks,
			     uint64_t *nskipped)
{
	struct rec_copy c = { .tr = tr, .skel = skel };
	int err;

	err = recorder__inherit(parent->rec, rec_fork ? rec_fork - 1 : UINT64_MAX,
				copy_recorded, &c);
	free(c.ids);
	if (err == -ERANGE)
		warn("process %d: some blocks its parent %d freed after the fork were forgotten "
		     "before the copy: they are missing from its inherited set", tr->pid,
		     parent->pid);
	*bytes += c.bytes;
	*nblocks += c.nblocks;
	*nskipped += c.nskipped;
}

/* PARENT's blocks in its map FD (at FORK_NS, if not 0), into TR's. */
static int inherit_map(struct tracee *tr, const struct tracee *parent, struct pytm_bpf *skel,
		       int fd, uint64_t fork_ns, __s64 *bytes, uint64_t *nblocks, uint64_t *ntombs)
{
	struct pytm_block_key k;
	struct map_batch b;
	__u32 i;
	int err;

	err = map_batch__init(&b, fd, sizeof(struct pytm_block_key), sizeof(struct pytm_block),
			      INHERIT_BATCH);
	while (!err && map_batch__next(&b)) {
		const struct pytm_block_key *keys = b.keys;
		const struct pytm_block *vals = b.vals;

		for (i = 0; i < b.count; i++) {
			k = keys[i];
			/* The parent's blocks at the fork: not those born since. */
			if (k.pid != (__u32)parent->pid ||
			    (k.domain & (PYTM_DOMAIN_LATE | PYTM_DOMAIN_TOMB)) ||
			    (fork_ns && vals[i].born >= fork_ns))
				continue;
			k.pid = tr->pid;
			k.domain &= PYTM_DOMAIN_MASK;
			if (copy_inherited(tr, skel, k, &vals[i], ntombs)) {
				*bytes += vals[i].weight;
				(*nblocks)++;
			}
		}
	}
	err = err ?: b.err;
	map_batch__free(&b);
	return err;
}

int tracee__inherit(struct tracee *tr, struct tracee *parent, struct pytm_bpf *skel,
		    uint64_t *nblocks)
{
	__s64 bytes = 0;
	uint64_t ntombs = 0, fork_ns = 0;
	struct pytm_proc p = { 0 };
	int g, n, err = 0;

	*nblocks = 0;
	/* 0: not forked under our eyes (attached late): the parent's set as it is. */
	if (!tracee__stats(tr, skel, &p))
		fork_ns = p.fork_ns;
	n = block_maps_n(parent->bm);
	for (g = 0; g < n && !err; g++)
		err = inherit_map(tr, parent, skel, parent->bm->fd[g], fork_ns, &bytes, nblocks,
				  &ntombs);
	if (err)
		goto cleanup;
	/* ...and those it has freed since. */
	if (fork_ns)
		copy_freed(tr, parent, skel, fork_ns, &bytes, nblocks, &ntombs);
	/* A recording parent's own, as they were at the fork. */
	if (parent->rec)
		inherit_recorded(tr, parent, skel, p.rec_fork, &bytes, nblocks, &ntombs);
	err = proc_control(tr, skel, PYTM_CTL_INHERIT, bytes);
	/* Entries in its maps too: they count for their growth. */
	proc_control(tr, skel, PYTM_CTL_ENTRIES, *nblocks);
	if (fork_ns)
		tracee__fork_done(parent->pid, skel);
	fork_ns = 0;
	vlog("process %d: %llu inherited blocks it had freed or replaced already", tr->pid,
	     (unsigned long long)ntombs);
cleanup:
	/* Whatever happened, the child goes on as any process. */
	if (fork_ns)
		tracee__fork_done(parent->pid, skel);
	proc_control(tr, skel, PYTM_CTL_INHERITED, 0);
	delete_blocks_all(tr->bm, tr->pid, PYTM_DOMAIN_TOMB);
	return err;
}

static const char *const lost_names[PYTM_LOST_MAX] = {
	[PYTM_LOST_BLOCKS_FULL] = "live-block map full",
	[PYTM_LOST_STACKS_FULL] = "traceback map full",
	[PYTM_LOST_CODES_FULL] = "code-object map full",
	[PYTM_LOST_RINGBUF] = "ring buffer full",
	[PYTM_LOST_FRAME_READ] = "unreadable frame",
	[PYTM_LOST_STASH] = "allocator calls nested too deep",
	[PYTM_LOST_NO_TSTATE] = "no Python thread state",
	[PYTM_LOST_TASK_STORAGE] = "no per-thread storage",
	[PYTM_LOST_ALLOCS_FULL] = "allocation-totals map full",
	[PYTM_LOST_PEAK_FULL] = "peak map full",
};

void tracee__footer(const struct tracee *tr, struct pytm_bpf *skel, FILE *out)
{
	uint64_t nread, nfailed;
	char cur[32], peak[32];
	struct pytm_proc p;
	bool any = false;
	int i;

	struct pytm_page_ctl c;
	char rate[32], lostb[32];

	if (tracee__stats(tr, skel, &p))
		return;
	sampler_state(tr, &c);
	report__format_size(cur, sizeof(cur), (double)p.current, false);
	report__format_size(peak, sizeof(peak), (double)p.peak, false);
	if (tr->sample_rate) {
		report__format_size(rate, sizeof(rate), (double)tr->sample_rate, false);
		fprintf(out, "Sampled: 1 sample per %s allocated on average; sizes and counts are "
			"unbiased estimates\n", rate);
		fprintf(out, "Traced memory (estimated): current=%s, peak=%s (%lld B, %lld B); "
			"%llu samples, %llu sampled frees\n", cur, peak, (long long)p.current,
			(long long)p.peak, (unsigned long long)c.samples,
			(unsigned long long)c.frees);
	} else {
		fprintf(out, "Traced memory: current=%s, peak=%s (%lld B, %lld B); %llu allocator events\n",
			cur, peak, (long long)p.current, (long long)p.peak,
			(unsigned long long)p.nevents);
	}
	if (!tr->rec && !tr->sample_rate && tr->bm) {
		int n = block_maps_n(tr->bm);
		long entries = gens_size(tr->bm, n);

		fprintf(out, "BPF maps: %lld live blocks in %d map%s of %ld entries in all%s\n",
			(long long)p.nblocks, n, n == 1 ? "" : "s", entries,
			tr->bm->npids > 1 ? " (shared with forked processes)" : "");
	}
	if (tr->rec) {
		struct recorder_stats rs;

		recorder__stats(tr->rec, 0, &rs);
		fprintf(out, "Recorder: %llu events from its ring (full %llu times: waited %llu, "
			"gave up %llu), %llu code objects (%llu read at first sight), %llu live "
			"blocks; BPF's way: %llu "
			"allocations, %llu frees (%llu when the ring was full); drain CPU %.3f s\n",
			(unsigned long long)rs.events, (unsigned long long)rs.full,
			(unsigned long long)c.waits, (unsigned long long)c.wait_timeouts,
			(unsigned long long)rs.codes, (unsigned long long)rs.codes_early,
			(unsigned long long)rs.blocks, (unsigned long long)c.samples, (unsigned long long)c.frees,
			(unsigned long long)rs.tombs, rs.cpu);
		if (rs.lost)
			fprintf(out, "Recorder: %llu allocations not kept (the tracer's memory)\n",
				(unsigned long long)rs.lost);
	}
	if (p.frozen)
		fprintf(out, "Snapshot: at interpreter finalization (Py_FinalizeEx), before it freed "
			"what the program held; traced memory counts on to the end\n");
	if (p.exited) {
		char how[96];
		int status, sig;
		bool oom;

		fprintf(out, "Process %s\n", tracee__end(tr, &p, how, sizeof(how), &status,
						       &sig, &oom));
	} else if (tr->execed) {
		fprintf(out, "Process called execve: this is the program it replaced, as it "
			"was then\n");
	}
	fprintf(out, "Lost events:");
	if (c.lost_full && tr->rec) {
		/* Recorded by BPF, but their frees will not pass its site. */
		fprintf(out, " recorder's set full=%llu (blocks whose free goes unseen)",
			(unsigned long long)c.lost_full);
		any = true;
	} else if (c.lost_full) {
		report__format_size(lostb, sizeof(lostb), (double)c.lost_bytes, false);
		fprintf(out, " sampled-block set full=%llu (~%s)", (unsigned long long)c.lost_full,
			lostb);
		any = true;
	}
	if (c.realloc_failed) {
		fprintf(out, "%s %s realloc failed=%llu", any ? "," : "",
			tr->rec ? "a block's" : "sampled block's",
			(unsigned long long)c.realloc_failed);
		any = true;
	}
	for (i = 0; i < PYTM_LOST_MAX; i++) {
		/* Allocations from threads with no Python state are not lost. */
		if (!p.lost[i] || i == PYTM_LOST_NO_TSTATE)
			continue;
		fprintf(out, "%s %s=%llu", any ? "," : "", lost_names[i],
			(unsigned long long)p.lost[i]);
		any = true;
	}
	resolver__stats(tr->r, &nread, &nfailed);
	if (nfailed) {
		fprintf(out, "%s unreadable code objects=%llu", any ? "," : "",
			(unsigned long long)nfailed);
		any = true;
	}
	fprintf(out, "%s\n", any ? "" : " none");
}

/* Stable keys of the lost counts in JSON documents (see the man page). */
static const char *const lost_keys[PYTM_LOST_MAX] = {
	[PYTM_LOST_BLOCKS_FULL] = "blocks_full",
	[PYTM_LOST_STACKS_FULL] = "stacks_full",
	[PYTM_LOST_CODES_FULL] = "codes_full",
	[PYTM_LOST_RINGBUF] = "ringbuf_full",
	[PYTM_LOST_FRAME_READ] = "frame_unreadable",
	[PYTM_LOST_STASH] = "nested_too_deep",
	[PYTM_LOST_NO_TSTATE] = "no_thread_state",
	[PYTM_LOST_TASK_STORAGE] = "no_task_storage",
	[PYTM_LOST_ALLOCS_FULL] = "alloc_totals_full",
	[PYTM_LOST_PEAK_FULL] = "peak_map_full",
};

/* The sampler's lost counts in JSON documents (see the man page). */
static const struct {
	const char *key;
	size_t off;
} sampler_lost[] = {
	{ "sample_set_full", offsetof(struct pytm_page_ctl, lost_full) },
	{ "sample_set_full_bytes", offsetof(struct pytm_page_ctl, lost_bytes) },
	{ "sample_realloc_failed", offsetof(struct pytm_page_ctl, realloc_failed) },
};

void tracee__json_identity(const struct tracee *tr, struct json *j)
{
	json__name(j, "pid");
	json__int(j, tr->pid);
	json__name(j, "nspid");
	json__int(j, tr->nspid);
	json__name(j, "ppid");
	if (tr->ppid)
		json__int(j, tr->ppid);
	else
		json__null(j);
	json__name(j, "container");
	json__string(j, tr->container[0] ? tr->container : NULL);
	json__name(j, "python");
	json__string(j, tr->version);
	json__name(j, "interpreter");
	json__string(j, tr->t.pymod);
	json__name(j, "cmdline");
	json__string(j, tr->cmdline);
}

int tracee__lost(const struct tracee *tr, const struct pytm_proc *p,
		 struct tracee_count *out, int max)
{
	uint64_t nread = 0, nfailed = 0;
	struct pytm_page_ctl c;
	int i, n = 0;

	for (i = 0; i < PYTM_LOST_MAX && n < max; i++)
		out[n++] = (struct tracee_count){ lost_keys[i], p->lost[i] };
	if (tr->r)
		resolver__stats(tr->r, &nread, &nfailed);
	if (n < max)
		out[n++] = (struct tracee_count){ "code_objects_unreadable", nfailed };
	sampler_state(tr, &c);
	for (i = 0; i < (int)(sizeof(sampler_lost) / sizeof(sampler_lost[0])) && n < max; i++)
		out[n++] = (struct tracee_count){ sampler_lost[i].key,
			*(const uint64_t *)((const char *)&c + sampler_lost[i].off) };
	return n;
}

void tracee__json(const struct tracee *tr, struct pytm_bpf *skel, struct json *j)
{
	struct tracee_count lost[TRACEE_MAX_COUNTS];
	struct pytm_page_ctl c;
	struct pytm_proc p;
	int i, n;

	json__name(j, "process");
	json__begin_object(j);
	tracee__json_identity(tr, j);
	json__end_object(j);
	json__name(j, "mode");
	json__string(j, tr->pr.injected ? "injected" : "plain");
	json__name(j, "probe_site");
	json__string(j, tr->pr.injected ? (tr->pr.rd.site_kind == REDIRECT_SITE_NOP6 ?
					  "nop6" : "nop5") : NULL);
	sampler_state(tr, &c);
	json__name(j, "sampling");
	if (tr->sample_rate) {
		json__begin_object(j);
		json__name(j, "rate");
		json__uint(j, tr->sample_rate);
		json__name(j, "samples");
		json__uint(j, c.samples);
		json__name(j, "sampled_frees");
		json__uint(j, c.frees);
		json__name(j, "set_slots");
		json__uint(j, tr->pr.rd.set_slots);
		json__end_object(j);
	} else {
		json__null(j);
	}
	json__name(j, "recorder");
	if (tr->rec) {
		struct recorder_stats rs;
		size_t i;

		recorder__stats(tr->rec, 0, &rs);
		const struct { const char *name; uint64_t v; } f[] = {
			{ "events", rs.events }, { "ring_full", rs.full },
			{ "waited", c.waits }, { "gave_up", c.wait_timeouts },
			{ "code_objects", rs.codes }, { "code_objects_early", rs.codes_early },
			{ "code_objects_spilled", rs.codes_spilled },
			{ "live_blocks", rs.blocks }, { "bpf_allocations", c.samples }, { "bpf_frees", c.frees },
			{ "tombstones", rs.tombs }, { "not_kept", rs.lost },
		};

		json__begin_object(j);
		for (i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
			json__name(j, f[i].name);
			json__uint(j, f[i].v);
		}
		json__name(j, "drain_cpu_seconds");
		json__double(j, rs.cpu);
		json__end_object(j);
	} else {
		json__null(j);
	}
	if (tracee__stats(tr, skel, &p))
		memset(&p, 0, sizeof(p));
	json__name(j, "traced");
	json__begin_object(j);
	json__name(j, "estimated");
	json__bool(j, tr->sample_rate != 0);
	json__name(j, "current");
	json__int(j, p.current);
	json__name(j, "peak");
	json__int(j, p.peak);
	json__name(j, "events");
	json__uint(j, p.nevents);
	json__end_object(j);
	json__name(j, "snapshot_at");
	json__string(j, p.frozen ? "finalization" : tr->execed ? "exec" : "now");
	json__name(j, "end");
	if (p.exited) {
		char how[96];
		int status, sig;
		bool oom;

		tracee__end(tr, &p, how, sizeof(how), &status, &sig, &oom);
		json__begin_object(j);
		json__name(j, "status");
		if (status >= 0)
			json__int(j, status);
		else
			json__null(j);
		json__name(j, "signal");
		if (sig)
			json__int(j, sig);
		else
			json__null(j);
		json__name(j, "oom_kill");
		json__bool(j, oom);
		json__end_object(j);
	} else {
		json__null(j);
	}
	json__name(j, "lost");
	json__begin_object(j);
	n = tracee__lost(tr, &p, lost, TRACEE_MAX_COUNTS);
	for (i = 0; i < n; i++) {
		json__name(j, lost[i].key);
		json__uint(j, lost[i].value);
	}
	json__end_object(j);
}

void tracee__detach(struct tracee *tr)
{
	recorder__quiesce(tr->rec);
	if (tr->attached)
		probes__detach(&tr->pr);
	tr->attached = false;
	/* What it recorded until the tables went back. */
	recorder__sync(tr->rec);
}

void tracee__purge(struct tracee *tr, struct pytm_bpf *skel)
{
	__u32 key = tr->pid;

	if (!tr->registered && !tr->bm)
		return;
	/* Its live-block maps go with the last reference to them... */
	pthread_mutex_lock(&maps_lock);
	unregister_gens(skel, tr->pid, 0, tr->bm ? tr->bm->n : 1);
	bpf_map_delete_elem(bpf_map__fd(skel->maps.rec_codes), &key);
	/* ...which a forked child or parent may still hold: its blocks go first. */
	if (tr->bm && tr->shared_map)
		delete_blocks_all(tr->bm, tr->pid, 0);
	block_maps_leave(tr->bm, tr->pid);
	tr->bm = NULL;
	pthread_mutex_unlock(&maps_lock);
	delete_pid_keys(bpf_map__fd(skel->maps.codes), sizeof(struct pytm_code_key), tr->pid);
	delete_pid_keys(bpf_map__fd(skel->maps.allocs), sizeof(struct pytm_alloc_key), tr->pid);
	if (tr->peak_step)
		delete_pid_keys(bpf_map__fd(skel->maps.peak_freed), sizeof(struct pytm_block_key),
				tr->pid);
	if (tr->shared_map || tr->ppid)
		delete_pid_keys(bpf_map__fd(skel->maps.freed), sizeof(struct pytm_block_key),
				tr->pid);
	bpf_map_delete_elem(bpf_map__fd(skel->maps.procs), &key);
	/* Per-CPU code caches hold (pid, address): a reused pid must miss. */
	__sync_fetch_and_add(&skel->bss->code_epoch, 1);
	tr->registered = false;
}

void tracee__close(struct tracee *tr)
{
	tracee__detach(tr);
	recorder__stop(tr->rec);
	tr->rec = NULL;
	inject__shared_close(&tr->ring);
	snapshot__free(tr->baseline);
	tr->baseline = NULL;
	resolver__free(tr->r);
	tr->r = NULL;
	target__close(&tr->t);
	if (tr->pidfd > 0)
		close(tr->pidfd);
	tr->pidfd = -1;
}
