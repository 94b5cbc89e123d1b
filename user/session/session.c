// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "pytm.h"
#include "pytm.skel.h"
#include "resolve.h"
#include "session.h"
#include "rec_drain.h"
#include "util.h"

/* ---- the kernel and the BPF object ---- */

static int kernel_supports(void)
{
	int err;

	/* Needed map types and helpers, probed rather than guessed from the version. */
	err = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_TASK_STORAGE, NULL);
	if (err < 0) {
		warn("cannot use BPF: %s (run as root, or with CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_SYS_ADMIN)",
		     strerror(-err));
		return -EOPNOTSUPP;
	}
	if (err != 1) {
		warn("this kernel has no BPF task storage (Linux 5.11+ is needed)");
		return -EOPNOTSUPP;
	}
	if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, NULL) != 1) {
		warn("this kernel has no BPF ring buffer (Linux 5.8+ is needed)");
		return -EOPNOTSUPP;
	}
	if (libbpf_probe_bpf_helper(BPF_PROG_TYPE_KPROBE, BPF_FUNC_loop, NULL) != 1) {
		warn("this kernel has no bpf_loop() helper (Linux 5.17+ is needed)");
		return -EOPNOTSUPP;
	}
	return 0;
}

static int load_bpf(struct session *s)
{
	const struct session_opts *o = &s->o;
	int err;

	s->skel = pytm_bpf__open();
	if (!s->skel) {
		err = -errno;
		warn("cannot open the BPF object: %s", strerror(-err));
		return err;
	}
	/* Stack values hold only the frames asked for. */
	err = bpf_map__set_value_size(s->skel->maps.stacks,
				      offsetof(struct pytm_stack, frames) +
				      o->topts.frames * sizeof(__u64));
	err = err ?: bpf_map__set_max_entries(s->skel->maps.blocks,
							   o->max_procs * PYTM_GENS + 16);
	err = err ?: bpf_map__set_max_entries(s->skel->maps.stacks, o->max_stacks);
	err = err ?: bpf_map__set_max_entries(s->skel->maps.allocs, o->max_stacks);
	err = err ?: bpf_map__set_max_entries(s->skel->maps.procs, o->max_procs + 16);
	if (err) {
		warn("cannot size the BPF maps: %s", strerror(-err));
		return err;
	}
	/* Without syscall programs (before 5.14) resets rewrite the entry. */
	bpf_program__set_autoload(s->skel->progs.handle_fork, o->follow_forks);
	if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SYSCALL, NULL) != 1)
		bpf_program__set_autoload(s->skel->progs.control, false);
	err = pytm_bpf__load(s->skel);
	if (err) {
		if (err == -EPERM || err == -EACCES)
			warn("cannot load BPF programs: %s (run as root, or with CAP_BPF and CAP_PERFMON)",
			     strerror(-err));
		else
			warn("cannot load BPF programs: %s (-v shows the verifier's log)",
			     strerror(-err));
		return err;
	}
	return 0;
}

/* ---- the traced processes ---- */

static struct tracee *find(struct session *s, pid_t pid, bool ready)
{
	int i;

	for (i = 0; i < s->ntracees; i++)
		if (s->tracees[i].pid == pid &&
		    (ready ? s->tracees[i].ready : s->tracees[i].registered))
			return &s->tracees[i];
	return NULL;
}

struct tracee *session__find(struct session *s, pid_t pid)
{
	return find(s, pid, false);
}

static void add_pending(struct session *s, pid_t pid, pid_t ppid, bool adopt, double delay)
{
	int i;

	for (i = 0; i < s->npending; i++)
		if (s->pending[i].pid == pid)
			return;
	if (s->npending < SESSION_MAX_PENDING)
		s->pending[s->npending++] = (struct session_pending){
			pid, ppid, adopt, mono_now() + delay, 0 };
	else
		s->counts.skipped[SESSION_SKIP_MAX_PROCS]++;
}

static void count_skip(struct session *s, int err);

/*
 * Under --all, a process given up on: counted by reason; a CPython we do
 * not trace is worth a line, anything else is not.
 */
static void say_skipped(struct session *s, pid_t pid, int err)
{
	count_skip(s, err);
	if (err != -ENOEXEC && err != -ESRCH && err != -EACCES)
		warn("skipping pid %d: %s", pid, error__last());
}

const char *session__skip_name(enum session_skip why)
{
	static const char *const names[SESSION_SKIP_MAX] = {
		[SESSION_SKIP_NOT_PYTHON] = "not_python",
		[SESSION_SKIP_EXITED] = "exited",
		[SESSION_SKIP_PERMISSION] = "permission",
		[SESSION_SKIP_MAX_PROCS] = "max_procs",
		[SESSION_SKIP_UNSUPPORTED] = "unsupported",
	};

	return why < SESSION_SKIP_MAX ? names[why] : "unknown";
}

static void count_skip(struct session *s, int err)
{
	enum session_skip why = err == -ENOEXEC ? SESSION_SKIP_NOT_PYTHON :
				err == -ESRCH ? SESSION_SKIP_EXITED :
				err == -EACCES || err == -EPERM ? SESSION_SKIP_PERMISSION :
				err == -E2BIG ? SESSION_SKIP_MAX_PROCS : SESSION_SKIP_UNSUPPORTED;

	s->counts.skipped[why]++;
}

/* A forked child's start: its parent's blocks and the code objects they name. */
static void inherit(struct session *s, struct tracee *tr)
{
	struct tracee *parent = find(s, tr->ppid, false);
	uint64_t n = 0;
	int err = 0;

	if (parent && !tr->pr.sampled) {
		pthread_mutex_lock(&s->lock);
		err = resolver__inherit(tr->r, parent->r);
		pthread_mutex_unlock(&s->lock);
		err = err ?: tracee__inherit(tr, parent, s->skel, &n);
	} else if (!tr->pr.sampled) {
		tracee__inherit_none(tr, s->skel);	/* its parent is gone: nothing to copy */
	}
	if (err)
		warn("process %d: cannot copy the blocks it inherited from %d: %s", tr->pid,
		     tr->ppid, strerror(-err));
	vlog("process %d: forked from %d, inherited %llu blocks", tr->pid, tr->ppid,
	     (unsigned long long)n);
}

/*
 * Slots: claimed and released under the lock, since the event thread
 * claims one for a forked child while the front end may be adding one.
 */
static struct tracee *claim_slot(struct session *s)
{
	struct tracee *tr = NULL;
	int i;

	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->ntracees && s->used[i]; i++)
		;
	if (i < s->o.max_procs) {
		s->used[i] = true;
		tr = &s->tracees[i];
		memset(tr, 0, sizeof(*tr));
		tr->pidfd = -1;
		if (i == s->ntracees)
			s->ntracees++;
	}
	pthread_mutex_unlock(&s->lock);
	return tr;
}

static void release_slot(struct session *s, struct tracee *tr)
{
	pthread_mutex_lock(&s->lock);
	memset(tr, 0, sizeof(*tr));
	tr->pidfd = -1;
	s->used[tr - s->tracees] = false;
	pthread_mutex_unlock(&s->lock);
}

/* Give up on TR (not traced after all): nothing of it is left behind. */
static void discard(struct session *s, struct tracee *tr)
{
	session__mute(s, tr);
	if (tr->ppid && !tr->tried)
		tracee__fork_done(tr->ppid, s->skel);	/* its copy will not be made */
	tracee__purge(tr, s->skel);
	tracee__close(tr);
	release_slot(s, tr);
}

void session__forget(struct session *s, struct tracee *tr)
{
	discard(s, tr);
}

/*
 * Did forked child TR exec since? BPF knows: it registered the child at
 * its fork and marks an exec (handle_exec) as it happens. Without that
 * entry, by the mappings: its interpreter's is its parent's, at the same
 * place, or it is another program. (The mappings alone mislead for a
 * child that is exiting: read in chunks while the kernel tears them down,
 * they can come out partial.)
 */
static bool replaced(struct session *s, struct tracee *tr)
{
	uint64_t text = 0;
	const struct mapping *m;
	struct pytm_proc p;
	int i;

	if (tr->execed)
		return true;
	if (!tracee__stats(tr, s->skel, &p))
		return p.execed;
	/* Mappings read empty: it is exiting, and stays to be reported. */
	if (!tr->t.nmaps)
		return false;
	/* The interpreter's code, where it was in the parent. */
	for (i = 0; i < tr->t.nmaps && !text; i++)
		if (tr->t.maps[i].exec && tr->t.maps[i].path &&
		    !strcmp(tr->t.maps[i].path, tr->t.pymod))
			text = tr->t.maps[i].start;
	if (!text)
		return true;
	if (target__refresh_maps(&tr->t) || !tr->t.nmaps)
		return false;
	m = target__mapping(&tr->t, text);
	return !m || !m->exec || !m->path || strcmp(m->path, tr->t.pymod) || m->start != text;
}

/*
 * A forked child that BPF traces already (through its parent's page):
 * what it inherited, then probes of its own (its own page, the cheap
 * sites). One that is gone by now stays to be reported.
 */
static int adopt(struct session *s, struct tracee *tr, bool quiet)
{
	struct tracee_opts opts;
	int err;

	tr->tried = true;
	inherit(s, tr);
	if (tracee__gone(tr))
		return 0;
	/*
	 * A recording parent's child gets a page of its own too, with the BPF
	 * walk (not a recorder): its inherited blocks are in BPF's map, and
	 * its events go BPF's way before and after its tables are swapped,
	 * with no window between. On its parent's page it would pass 6-byte
	 * NOP sites, which trap ~4x dearer than its own page's (DESIGN.md).
	 */
	opts = s->o.topts;
	if (tr->rec_parent)
		opts.record = false;
	if (replaced(s, tr) && !tracee__gone(tr)) {
		vlog("process %d exec'd before it could be attached", tr->pid);
		discard(s, tr);
		return -ENOEXEC;
	}
	/* Its own mappings now, not its parent's at the fork (the attach reads them). */
	target__refresh_maps(&tr->t);
	error__quiet(quiet);
	err = tracee__attach(tr, s->skel, &opts);
	error__quiet(false);
	if (!err || tracee__gone(tr))
		return 0;
	s->counts.attach_failed++;
	if (replaced(s, tr) && !tracee__gone(tr)) {
		discard(s, tr);
		return err;
	}
	/* Still its parent's program: its parent's page keeps tracing it. */
	vlog("process %d: no probes of its own (%s); traced through its parent's page",
	     tr->pid, error__last());
	return 0;
}

/* Under the lock (the event thread): a traced process forked child PID. */
static void forked(struct session *s, pid_t pid, pid_t ppid)
{
	struct tracee *parent = find(s, ppid, false), *tr;
	__u32 key = pid;
	struct pytm_proc p;
	int err, i;

	if (!parent || find(s, pid, false))
		return;
	/* BPF made no entry (its process map is full): it waits for its own attach. */
	if (bpf_map_lookup_elem(bpf_map__fd(s->skel->maps.procs), &key, &p)) {
		add_pending(s, pid, ppid, false, 0);
		return;
	}
	/* claim_slot takes the lock we hold: the same, inline. */
	for (i = 0; i < s->ntracees && s->used[i]; i++)
		;
	if (i == s->o.max_procs) {
		bpf_map_delete_elem(bpf_map__fd(s->skel->maps.procs), &key);
		tracee__fork_done(ppid, s->skel);
		s->counts.skipped[SESSION_SKIP_MAX_PROCS]++;
		return;
	}
	tr = &s->tracees[i];
	err = tracee__fork(tr, parent, pid, s->skel);
	if (err) {
		warn("process %d (forked from %d): %s", pid, ppid, strerror(-err));
		bpf_map_delete_elem(bpf_map__fd(s->skel->maps.procs), &key);
		tracee__fork_done(ppid, s->skel);
		tracee__purge(tr, s->skel);
		tracee__close(tr);
		memset(tr, 0, sizeof(*tr));
		tr->pidfd = -1;
		return;
	}
	s->used[i] = true;
	if (i == s->ntracees)
		s->ntracees++;
	tr->ready = true;
	s->counts.forks++;
	s->counts.traced++;
	add_pending(s, pid, ppid, true, 0);
}

static int add(struct session *s, pid_t pid, pid_t ppid, bool quiet);

int session__add(struct session *s, pid_t pid, bool quiet)
{
	return add(s, pid, 0, quiet);
}

static int add(struct session *s, pid_t pid, pid_t ppid, bool quiet)
{
	struct tracee *tr = session__find(s, pid);
	int err;

	if (tr)
		return ppid && tr->ppid && !tr->tried ? adopt(s, tr, quiet) : 0;
	tr = claim_slot(s);
	if (!tr) {
		if (!quiet)
			warn("too many processes (--max-procs %d)", s->o.max_procs);
		else
			error__set(-E2BIG, "--max-procs %d reached", s->o.max_procs);
		return -E2BIG;
	}
	error__quiet(quiet);
	err = tracee__open(tr, pid, ppid, s->skel, &s->o.topts);
	if (!err) {
		/* Code objects are read from the first event on, during attach too. */
		session__unmute(s, tr);
		err = tracee__attach(tr, s->skel, &s->o.topts);
		if (err)
			s->counts.attach_failed++;
	}
	error__quiet(false);
	if (err) {
		discard(s, tr);
		return err;
	}
	if (ppid) {
		/* Sampled: nothing is inherited, the tombstones end. */
		tr->tried = true;
		inherit(s, tr);
		s->counts.forks++;
	}
	s->counts.traced++;
	return 0;
}

void session__unmute(struct session *s, struct tracee *tr)
{
	pthread_mutex_lock(&s->lock);
	tr->ready = true;
	pthread_mutex_unlock(&s->lock);
}

void session__mute(struct session *s, struct tracee *tr)
{
	pthread_mutex_lock(&s->lock);
	tr->ready = false;
	pthread_mutex_unlock(&s->lock);
}

void session__drop(struct session *s, struct tracee *tr)
{
	s->counts.exited++;
	session__mute(s, tr);
	tracee__purge(tr, s->skel);
	tracee__detach(tr);
	tracee__close(tr);
	release_slot(s, tr);
}

void session__scan_all(struct session *s)
{
	struct dirent *de;
	DIR *d = opendir("/proc");
	long long pid;
	int err;

	if (!d)
		return;
	while ((de = readdir(d))) {
		if (parse_num(de->d_name, 1, INT_MAX, &pid) || pid == getpid())
			continue;
		err = session__add(s, pid, true);
		if (err)
			say_skipped(s, pid, err);
	}
	closedir(d);
}

void session__retry(struct session *s, pid_t pid)
{
	pthread_mutex_lock(&s->lock);
	add_pending(s, pid, 0, false, 0.3);	/* Python needs a moment to start */
	pthread_mutex_unlock(&s->lock);
}

void session__poll_pending(struct session *s)
{
	struct session_pending p;
	double t = mono_now();
	int i, err;

	for (;;) {
		/* Take one due entry out, under the lock the event thread shares. */
		pthread_mutex_lock(&s->lock);
		for (i = 0; i < s->npending && s->pending[i].due > t; i++)
			;
		if (i == s->npending) {
			pthread_mutex_unlock(&s->lock);
			return;
		}
		p = s->pending[i];
		s->pending[i] = s->pending[--s->npending];
		pthread_mutex_unlock(&s->lock);

		/* A forked child whose tracee is gone already was reported and dropped. */
		if (p.adopt && !session__find(s, p.pid))
			continue;
		/* A sampled child that came and went before its attach: just counted. */
		if (p.ppid && !p.adopt && kill(p.pid, 0) && errno == ESRCH) {
			s->counts.skipped[SESSION_SKIP_EXITED]++;
			continue;
		}
		err = add(s, p.pid, p.ppid, true);
		if (!err && p.ppid)
			fprintf(stderr, "pytm-bpf: tracing new process %d (forked from %d)\n",
				p.pid, p.ppid);
		else if (!err)
			fprintf(stderr, "pytm-bpf: tracing new process %d\n", p.pid);
		/* An interpreter still starting has no threads yet: try again. */
		if (err && err != -ENOEXEC && err != -ESRCH && !p.ppid && ++p.tries < 5) {
			p.due = t + 0.5 * p.tries;
			pthread_mutex_lock(&s->lock);
			if (s->npending < SESSION_MAX_PENDING)
				s->pending[s->npending++] = p;
			pthread_mutex_unlock(&s->lock);
		} else if (err) {
			say_skipped(s, p.pid, err);
		}
	}
}

void session__settle_one(struct session *s, struct tracee *tr)
{
	if (tr->registered && tr->ppid && !tr->tried) {
		tr->tried = true;
		inherit(s, tr);
	}
}

void session__settle(struct session *s)
{
	int i;

	for (i = 0; i < s->ntracees; i++)
		session__settle_one(s, &s->tracees[i]);
}

/* ---- the event thread ---- */

static int handle_event(void *arg, void *data, size_t size)
{
	const struct pytm_event *ev = data;
	struct resolver_mem mem[PYTM_CAP_N];
	struct session *s = arg;
	struct tracee *tr;
	size_t nmem;

	if (size < sizeof(*ev))
		return 0;
	pthread_mutex_lock(&s->lock);
	switch (ev->type) {
	case PYTM_EV_CODE:
		tr = find(s, ev->pid, true);
		nmem = resolver__event_mem(data, size, mem);
		if (tr)
			tracee__code(tr, ev->code_id, ev->code_addr, mem, nmem,
				     tr->ppid ? find(s, tr->ppid, true) : NULL);
		break;
	case PYTM_EV_EXEC:
		tr = find(s, ev->pid, false);
		if (tr)
			tr->execed = true;	/* the front end reports it, then tries again */
		else if (s->o.follow_exec)
			add_pending(s, ev->pid, 0, false, 0.3);	/* Python needs a moment to start */
		break;
	case PYTM_EV_FORK:
		forked(s, ev->pid, ev->code_addr);
		break;
	case PYTM_EV_REC_CODE:
		tr = find(s, ev->pid, false);
		nmem = resolver__event_mem(data, size, mem);
		if (tr && tr->rec)
			recorder__code(tr->rec, ev->code_addr, ev->clock, mem, nmem);
		break;
	case PYTM_EV_TOMB:
		tr = find(s, ev->pid, false);
		if (tr && tr->rec)
			recorder__tomb(tr->rec, ev->code_addr, ev->clock);
		break;
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static void sync_answer(struct session *s, unsigned long seq, bool over)
{
	pthread_mutex_lock(&s->sync.mu);
	if (seq > s->sync.done)
		s->sync.done = seq;
	s->sync.over |= over;
	pthread_cond_broadcast(&s->sync.cv);
	pthread_mutex_unlock(&s->sync.mu);
}

/* Wait until the events produced so far are handled (at most 2 s). */
static void events_sync(struct session *s)
{
	struct timespec until;
	unsigned long seq;
	uint64_t one = 1;

	if (s->sync.kick < 0)
		return;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 2;
	pthread_mutex_lock(&s->sync.mu);
	seq = ++s->sync.req;
	pthread_mutex_unlock(&s->sync.mu);
	if (write(s->sync.kick, &one, sizeof(one)) != sizeof(one))
		return;
	pthread_mutex_lock(&s->sync.mu);
	while (s->sync.done < seq && !s->sync.over)
		if (pthread_cond_timedwait(&s->sync.cv, &s->sync.mu, &until))
			break;
	pthread_mutex_unlock(&s->sync.mu);
}

/* Live-block maps that fill get a generation more (tracee__grow), every 20 ms or so. */
static void grow_maps(struct session *s, double *next)
{
	double now = mono_now();
	int i;

	if (now < *next)
		return;
	*next = now + 0.02;
	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->ntracees; i++)
		if (s->used[i] && s->tracees[i].registered)
			tracee__grow(&s->tracees[i], s->skel);
	pthread_mutex_unlock(&s->lock);
}

static void *event_thread(void *arg)
{
	struct session *s = arg;
	struct pollfd pfd[2] = {
		{ .fd = ring_buffer__epoll_fd(s->rb), .events = POLLIN },
		{ .fd = s->sync.kick, .events = POLLIN },
	};
	unsigned long seq;
	double grow_next = 0;
	uint64_t n;
	int err;

	while (!s->quit) {
		grow_maps(s, &grow_next);
		if (poll(pfd, 2, 20) < 0 && errno != EINTR) {
			warn("reading events: %s", strerror(errno));
			break;
		}
		if ((pfd[1].revents & POLLIN) && read(s->sync.kick, &n, sizeof(n)) < 0)
			n = 0;
		/* What was asked before this drain is answered by it. */
		pthread_mutex_lock(&s->sync.mu);
		seq = s->sync.req;
		pthread_mutex_unlock(&s->sync.mu);
		err = ring_buffer__consume(s->rb);
		if (err < 0 && err != -EINTR) {
			warn("reading events: %s", strerror(-err));
			break;
		}
		sync_answer(s, seq, false);
	}
	sync_answer(s, 0, true);
	return NULL;
}

int session__start_events(struct session *s)
{
	int err;

	s->sync.kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->sync.kick < 0) {
		err = -errno;
		warn("cannot start the event thread: %s", strerror(-err));
		return err;
	}
	err = pthread_create(&s->events_th, NULL, event_thread, s);
	if (err) {
		warn("cannot start the event thread: %s", strerror(err));
		return -err;
	}
	s->have_events_th = true;
	return 0;
}

struct snapshot *session__snapshot(struct session *s, struct tracee *tr, int frames)
{
	struct snapshot *snap;

	events_sync(s);
	/* The event thread adds code objects to the resolver this reads. */
	pthread_mutex_lock(&s->lock);
	snap = tracee__snapshot(tr, s->skel, frames);
	pthread_mutex_unlock(&s->lock);
	return snap;
}

struct snapshot *session__peak_snapshot(struct session *s, struct tracee *tr, int frames,
				       uint64_t *peak_ns)
{
	struct snapshot *snap;

	events_sync(s);
	pthread_mutex_lock(&s->lock);
	snap = tracee__peak_snapshot(tr, s->skel, frames, peak_ns);
	pthread_mutex_unlock(&s->lock);
	return snap;
}

struct snapshot *session__alloc_snapshot(struct session *s, struct tracee *tr, int frames)
{
	struct snapshot *snap;

	events_sync(s);
	pthread_mutex_lock(&s->lock);
	snap = tracee__alloc_snapshot(tr, s->skel, frames);
	pthread_mutex_unlock(&s->lock);
	return snap;
}

/* ---- lifecycle ---- */

int session__open(struct session **out, const struct session_opts *o)
{
	struct session *s;
	int err;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->o = *o;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->front, NULL);
	pthread_mutex_init(&s->sync.mu, NULL);
	pthread_cond_init(&s->sync.cv, NULL);
	s->sync.kick = -1;
	s->tracees = calloc(o->max_procs, sizeof(*s->tracees));
	s->used = calloc(o->max_procs, sizeof(*s->used));
	if (!s->tracees || !s->used) {
		err = -ENOMEM;
		goto fail;
	}
	err = kernel_supports();
	if (!err)
		err = load_bpf(s);
	if (err)
		goto fail;
	s->rb = ring_buffer__new(bpf_map__fd(s->skel->maps.events), handle_event, s, NULL);
	if (!s->rb) {
		err = -errno;
		warn("cannot set up the event buffer: %s", strerror(-err));
		goto fail;
	}
	s->exit_link = bpf_program__attach(s->skel->progs.handle_exit);
	/*
	 * Always: a traced process that execs is another program (and maybe a
	 * Python to trace again). Before any scan, so that nothing starts
	 * unseen in between.
	 */
	s->exec_link = bpf_program__attach(s->skel->progs.handle_exec);
	if (!s->exec_link) {
		err = -errno;
		warn("cannot follow new processes: %s", strerror(-err));
		goto fail;
	}
	if (o->follow_forks) {
		s->fork_link = bpf_program__attach(s->skel->progs.handle_fork);
		if (!s->fork_link) {
			err = -errno;
			warn("cannot follow forked processes: %s", strerror(-err));
			goto fail;
		}
	}
	*out = s;
	return 0;
fail:
	session__close(s);
	return err;
}

static void *detach_thread(void *tr)
{
	tracee__detach(tr);
	return NULL;
}

/*
 * Remove every probe, in parallel: each uprobe takes the kernel a tenth of
 * a second or so to unregister, and a process has fourteen.
 */
static void detach_all(struct session *s)
{
	void **items = calloc(s->ntracees + 1, sizeof(*items));
	int i, n = 0;

	for (i = 0; i < s->ntracees; i++) {
		if (!s->tracees[i].attached)
			continue;
		if (items)
			items[n++] = &s->tracees[i];
		else
			tracee__detach(&s->tracees[i]);
	}
	run_parallel(detach_thread, items, n);
	free(items);
}

void session__close(struct session *s)
{
	int i;

	if (!s)
		return;
	/* Stop reading events first, then take the probes out. */
	s->quit = true;
	if (s->have_events_th)
		pthread_join(s->events_th, NULL);
	if (s->sync.kick >= 0)
		close(s->sync.kick);
	if (s->tracees)
		detach_all(s);
	bpf_link__destroy(s->fork_link);
	bpf_link__destroy(s->exec_link);
	bpf_link__destroy(s->exit_link);
	for (i = 0; s->tracees && i < s->ntracees; i++)
		tracee__close(&s->tracees[i]);
	free(s->tracees);
	free(s->used);
	ring_buffer__free(s->rb);
	pytm_bpf__destroy(s->skel);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->front);
	pthread_mutex_destroy(&s->sync.mu);
	pthread_cond_destroy(&s->sync.cv);
	free(s);
}
