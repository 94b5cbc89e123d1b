/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The session engine: the BPF object, the set of traced processes (with
 * --all's discovery of new ones), and the event thread that reads code
 * objects the moment BPF announces them. Front ends (cli/) drive it and
 * decide what to report, when, in which form.
 *
 *   session__open → session__add (per pid) / session__scan_all →
 *   session__start_events → [session__snapshot, session__poll_pending,
 *   session__mute + session__drop of an exited process, ...] →
 *   session__close
 */
#ifndef __PYTM_SESSION_H
#define __PYTM_SESSION_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>
#include "tracee.h"

struct pytm_bpf;
struct ring_buffer;
struct bpf_link;
struct snapshot;

struct session_opts {
	int max_procs;			/* processes traced at once */
	long max_stacks;		/* distinct tracebacks */
	bool follow_exec;		/* --all: trace processes that exec into a Python */
	bool follow_forks;		/* trace the children of traced processes */
	struct tracee_opts topts;	/* per process */
};

#define SESSION_MAX_PENDING 256

/* Why a process was not traced (metrics count them by these). */
enum session_skip {
	SESSION_SKIP_NOT_PYTHON,	/* not CPython (or not yet) */
	SESSION_SKIP_EXITED,		/* gone before it could be read */
	SESSION_SKIP_PERMISSION,	/* not ours to read */
	SESSION_SKIP_MAX_PROCS,		/* --max-procs reached */
	SESSION_SKIP_UNSUPPORTED,	/* a CPython we cannot trace */
	SESSION_SKIP_MAX,
};
/* "not_python", "exited", ...: stable label values. */
const char *session__skip_name(enum session_skip why);

struct session {
	struct session_opts o;
	struct pytm_bpf *skel;
	struct tracee *tracees;		/* o.max_procs slots, fixed in memory */
	bool *used;			/* which slots are taken (under lock) */
	int ntracees;
	/*
	 * The event thread reads code objects as BPF announces them (a process
	 * that exits takes its memory along); the front end reports. The lock
	 * covers the tracees, their code objects and the pending list.
	 */
	pthread_mutex_t lock;
	volatile bool quit;
	/*
	 * Processes to attach from the main loop: under --all those that
	 * exec'd (tried once Python is up), and forked children of traced
	 * processes (at once: their parent's interpreter is there).
	 */
	struct session_pending {
		pid_t pid;
		pid_t ppid;		/* the traced parent it forked from, or 0 */
		bool adopt;		/* its tracee exists (see session.c: forked) */
		double due;
		int tries;
	} pending[SESSION_MAX_PENDING];
	int npending;
	/*
	 * Held by whoever reads or changes the set of tracees apart from the
	 * event thread: the main loop between its waits, the HTTP server's
	 * handlers. Taken before lock, never the other way.
	 */
	pthread_mutex_t front;
	struct {
		unsigned long skipped[SESSION_SKIP_MAX];
		unsigned long attach_failed;	/* opened and checked, then failed */
		unsigned long traced;		/* processes traced, ever */
		unsigned long exited;		/* traced processes that exited */
		unsigned long forks;		/* forked children followed */
		unsigned long execs;		/* traced processes that exec'd */
	} counts;
	struct ring_buffer *rb;
	struct bpf_link *exec_link, *exit_link, *fork_link;
	pthread_t events_th;
	bool have_events_th;
	/*
	 * A report must see every code object announced before it was asked
	 * for: session__snapshot bumps req and kicks the event thread, which
	 * drains the ring buffer and answers with done.
	 */
	struct {
		pthread_mutex_t mu;
		pthread_cond_t cv;
		int kick;		/* eventfd; -1 while no event thread runs */
		unsigned long req, done;
		bool over;		/* the event thread has stopped */
	} sync;
};

/*
 * Check the kernel's features, load the BPF object sized for O, set up the
 * event buffer (and with follow_exec, the exec tracepoint). Negative errno
 * with a message shown. *OUT is NULL on failure.
 */
int session__open(struct session **out, const struct session_opts *o);
/* Stop the event thread, take every probe out (in parallel), free. Safe on NULL. */
void session__close(struct session *s);

/*
 * Open, check and attach process PID. QUIET (--all): failures are reasons
 * to skip, kept as error__last(), not printed. 0 if already traced.
 */
int session__add(struct session *s, pid_t pid, bool quiet);
/* --all: every process that looks like CPython now. */
void session__scan_all(struct session *s);
/* --all: try the processes that exec'd a while ago; say which start. */
void session__poll_pending(struct session *s);
/* --peak: TR's set at its latest peak mark (*PEAK_NS), as session__snapshot. */
struct snapshot *session__peak_snapshot(struct session *s, struct tracee *tr, int frames,
				       uint64_t *peak_ns);
/* Forked children not attached yet get what they inherited (before a last report). */
void session__settle(struct session *s);
void session__settle_one(struct session *s, struct tracee *tr);
/* Try PID again shortly (it exec'd: maybe into a Python). */
void session__retry(struct session *s, pid_t pid);
/* Start reading events in a thread of its own. */
int session__start_events(struct session *s);
/* The traced process PID, or NULL. */
struct tracee *session__find(struct session *s, pid_t pid);
/*
 * A snapshot of TR's traces (FRAMES per traceback), with every code object
 * announced so far. NULL with errno on failure.
 */
struct snapshot *session__snapshot(struct session *s, struct tracee *tr, int frames);
/* Sampled mode: TR's allocations since attach (tracee__alloc_snapshot). */
struct snapshot *session__alloc_snapshot(struct session *s, struct tracee *tr, int frames);
/* Stop reading TR's code objects: its process exited (then report it). */
void session__mute(struct session *s, struct tracee *tr);
/* The event thread may read TR's code objects (again). */
void session__unmute(struct session *s, struct tracee *tr);
/* Take out a tracee whose process exited: map entries, probes, slot. */
void session__drop(struct session *s, struct tracee *tr);
/* TR without a report (a forked child that exec'd at once): gone, not counted as exited. */
void session__forget(struct session *s, struct tracee *tr);

#endif /* __PYTM_SESSION_H */
