// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
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
#include "session.h"
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
	err = err ?: bpf_map__set_max_entries(s->skel->maps.blocks, o->max_procs + 16);
	err = err ?: bpf_map__set_max_entries(s->skel->maps.stacks, o->max_stacks);
	err = err ?: bpf_map__set_max_entries(s->skel->maps.allocs, o->max_stacks);
	err = err ?: bpf_map__set_max_entries(s->skel->maps.procs, o->max_procs + 16);
	if (err) {
		warn("cannot size the BPF maps: %s", strerror(-err));
		return err;
	}
	/* Without syscall programs (before 5.14) resets rewrite the entry. */
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

static void add_pending(struct session *s, pid_t pid, double delay)
{
	int i;

	for (i = 0; i < s->npending; i++)
		if (s->pending[i].pid == pid)
			return;
	if (s->npending < SESSION_MAX_PENDING)
		s->pending[s->npending++] = (struct session_pending){ pid, mono_now() + delay, 0 };
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

int session__add(struct session *s, pid_t pid, bool quiet)
{
	struct tracee *tr;
	int err, i;

	if (session__find(s, pid))
		return 0;
	/* Reuse the slot of a process that exited. */
	for (i = 0; i < s->ntracees && s->tracees[i].registered; i++)
		;
	if (i == s->ntracees && s->ntracees == s->o.max_procs) {
		if (!quiet)
			warn("too many processes (--max-procs %d)", s->o.max_procs);
		else
			error__set(-E2BIG, "--max-procs %d reached", s->o.max_procs);
		return -E2BIG;
	}
	tr = &s->tracees[i];
	error__quiet(quiet);
	err = tracee__open(tr, pid, s->skel, &s->o.topts);
	if (!err) {
		/* Code objects are read from the first event on, during attach too. */
		pthread_mutex_lock(&s->lock);
		tr->ready = true;
		if (i == s->ntracees)
			s->ntracees++;
		pthread_mutex_unlock(&s->lock);
		err = tracee__attach(tr, s->skel, &s->o.topts);
		if (err)
			s->counts.attach_failed++;
	}
	error__quiet(false);
	if (!err)
		s->counts.traced++;
	if (err) {
		session__mute(s, tr);
		tracee__purge(tr, s->skel);
		tracee__close(tr);
		memset(tr, 0, sizeof(*tr));
		tr->pidfd = tr->blocks_fd = -1;
		return err;
	}
	return 0;
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

		err = session__add(s, p.pid, true);
		if (!err)
			fprintf(stderr, "pytm-bpf: tracing new process %d\n", p.pid);
		/* An interpreter still starting has no threads yet: try again. */
		if (err && err != -ENOEXEC && err != -ESRCH && ++p.tries < 5) {
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

/* ---- the event thread ---- */

static int handle_event(void *arg, void *data, size_t size)
{
	const struct pytm_event *ev = data;
	struct session *s = arg;
	struct tracee *tr;

	if (size < sizeof(*ev))
		return 0;
	pthread_mutex_lock(&s->lock);
	switch (ev->type) {
	case PYTM_EV_CODE:
		tr = find(s, ev->pid, true);
		if (tr)
			tracee__code(tr, ev->code_id, ev->code_addr);
		break;
	case PYTM_EV_EXEC:
		/* The interpreter needs a moment before it can be read. */
		if (!find(s, ev->pid, true))
			add_pending(s, ev->pid, 0.3);
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

static void *event_thread(void *arg)
{
	struct session *s = arg;
	struct pollfd pfd[2] = {
		{ .fd = ring_buffer__epoll_fd(s->rb), .events = POLLIN },
		{ .fd = s->sync.kick, .events = POLLIN },
	};
	unsigned long seq;
	uint64_t n;
	int err;

	while (!s->quit) {
		if (poll(pfd, 2, 100) < 0 && errno != EINTR) {
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
	if (!s->tracees) {
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
	if (o->follow_exec) {
		/* Before any scan, so that nothing starts unseen in between. */
		s->exec_link = bpf_program__attach(s->skel->progs.handle_exec);
		if (!s->exec_link) {
			err = -errno;
			warn("cannot follow new processes: %s", strerror(-err));
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
	bpf_link__destroy(s->exec_link);
	bpf_link__destroy(s->exit_link);
	for (i = 0; s->tracees && i < s->ntracees; i++)
		tracee__close(&s->tracees[i]);
	free(s->tracees);
	ring_buffer__free(s->rb);
	pytm_bpf__destroy(s->skel);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->front);
	pthread_mutex_destroy(&s->sync.mu);
	pthread_cond_destroy(&s->sync.cv);
	free(s);
}
