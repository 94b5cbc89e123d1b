// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * pytm-bpf: tracemalloc for a running CPython process, from the outside.
 *
 * Uprobes on the target's allocator record every live block with the Python
 * stack that allocated it; at the end (SIGINT/SIGTERM, --duration, or the
 * target's exit) the blocks become a snapshot that tracemalloc loads, and a
 * report that is what tracemalloc would print.
 */
#define _GNU_SOURCE
#include <argp.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "pytm.h"
#include "pytm.skel.h"
#include "report.h"
#include "sink.h"
#include "snapshot.h"
#include "util.h"
#include "tracee.h"

int report__main(int argc, char **argv);

#define MAX_PIDS 256

static struct env {
	pid_t pids[MAX_PIDS];		/* -p, repeatable: the targets */
	int npids;
	bool all;			/* --all: every CPython process, new ones too */
	int max_procs;			/* --max-procs: processes traced at once */
	int frames;			/* --frames: traceback limit, as tracemalloc.start(N) */
	double duration;		/* --duration: seconds; 0 = until stopped */
	double interval;		/* --interval: seconds between reports; 0 = none */
	struct report_cli cli;		/* --key, --cumulative, --top, filters */
	bool compare;			/* --compare: reports as differences */
	const char *compare_file;	/* --compare=FILE: from this snapshot */
	bool reset_peak;		/* --reset-peak after each interval */
	const char *output;		/* -o: snapshot file */
	int pickle;			/* --pickle-version: 38 or 39; 0 = the target's */
	long max_blocks;		/* --max-blocks: live-block map entries */
	long max_stacks;		/* --max-stacks: distinct tracebacks */
	bool verbose;			/* -v */
	bool control;			/* --control: commands on stdin */
	bool no_inject;			/* --no-inject: plain probes only */
	bool total_frames;		/* --total-frames: count every frame */
	bool bench_empty;		/* --bench-empty: probes that do nothing */
	enum redirect_site_pref site_pref;	/* --probe-site */
	const char *overrides[16];	/* --debug-offset FIELD=VALUE */
	int noverrides;
} env = {
	.frames = 1,
	.max_procs = 64,
	.max_blocks = 1 << 20,
	.max_stacks = 1 << 16,
};

const char *argp_program_version = "pytm-bpf 0.1";
const char *argp_program_bug_address = "<https://github.com/pytm-bpf/pytm-bpf/issues>";
static const char doc[] =
"pytm-bpf: Python's tracemalloc for a running CPython process, through eBPF.\n"
"\n"
"USAGE: pytm-bpf -p PID [-p PID...] [--frames N] [--duration S] [--interval S] [-o FILE]\n"
"       pytm-bpf --all [--max-procs N] [--duration S] [--interval S]\n"
"       pytm-bpf report FILE [--compare OLD] [--key KEY] ...\n"
"\n"
"EXAMPLES:\n"
"    pytm-bpf -p 1234                 # trace until Ctrl-C, top 10 lines\n"
"    pytm-bpf -p 1234 --frames 25     # 25-frame tracebacks\n"
"    pytm-bpf -p 1234 --duration 30 -o heap.pytm\n"
"                                     # 30 s, then a tracemalloc snapshot file\n"
"    pytm-bpf -p 1234 --interval 10 --key filename\n"
"                                     # a report every 10 s, by file\n"
"    pytm-bpf --all --duration 60     # every Python on the host, new ones too\n"
"    pytm-bpf report heap.pytm --key traceback\n"
"                                     # report on a saved snapshot\n"
"\n"
"The snapshot file loads with tracemalloc.Snapshot.load(FILE).\n";

enum {
	OPT_FRAMES = 0x100,
	OPT_DURATION,
	OPT_INTERVAL,
	OPT_COMPARE,
	OPT_RESET_PEAK,
	OPT_PICKLE,
	OPT_MAX_BLOCKS,
	OPT_MAX_STACKS,
	OPT_CONTROL,
	OPT_DEBUG_OFFSET,
	OPT_NO_INJECT,
	OPT_ALL,
	OPT_MAX_PROCS,
	OPT_TOTAL_FRAMES,
	OPT_BENCH_EMPTY,
	OPT_PROBE_SITE,
};

static const struct argp_option opts[] = {
	{ "pid", 'p', "PID", 0, "Trace this process (repeatable)", 0 },
	{ "all", OPT_ALL, NULL, 0,
	  "Trace every CPython process on the host, and those that start later", 0 },
	{ "max-procs", OPT_MAX_PROCS, "N", 0, "Processes traced at once (default 64)", 0 },
	{ "frames", OPT_FRAMES, "N", 0, "Frames per traceback, 1-128 (default 1)", 0 },
	{ "duration", OPT_DURATION, "SECONDS", 0, "Stop after this long", 0 },
	{ "interval", OPT_INTERVAL, "SECONDS", 0, "Print a report this often", 0 },
	{ "compare", OPT_COMPARE, "FILE", OPTION_ARG_OPTIONAL,
	  "Print differences: from the first report, or from the snapshot FILE "
	  "(--compare=FILE)", 0 },
	{ "reset-peak", OPT_RESET_PEAK, NULL, 0,
	  "Reset the peak after each --interval report (tracemalloc.reset_peak())", 0 },
	{ "output", 'o', "FILE", 0, "Write a tracemalloc snapshot (pickle) at the end", 0 },
	{ "pickle-version", OPT_PICKLE, "X.Y", 0,
	  "Snapshot layout for this Python's tracemalloc (default: the target's)", 0 },
	{ "max-blocks", OPT_MAX_BLOCKS, "N", 0,
	  "Live blocks tracked per process (default 1048576; about 100 bytes each, "
	  "allocated as needed)", 0 },
	{ "max-stacks", OPT_MAX_STACKS, "N", 0,
	  "Distinct tracebacks (default 65536; 16 + 8 x frames bytes each)", 0 },
	{ "control", OPT_CONTROL, NULL, 0,
	  "Read commands on stdin (snapshot PATH [X.Y], traced, reset-peak, clear, limit, stop); "
	  "one reply line each on stdout", 0 },
	{ "total-frames", OPT_TOTAL_FRAMES, NULL, 0,
	  "Count every frame of each stack for total_nframe, as tracemalloc does "
	  "(one more read per frame beyond --frames; default: stop at --frames)", 0 },
	{ "no-inject", OPT_NO_INJECT, NULL, 0,
	  "Do not redirect the allocator: plain uprobes (miss inlined allocations)", 0 },
	{ "probe-site", OPT_PROBE_SITE, "KIND", 0,
	  "Injected mode's probe sites: auto (default), nop5 (cheapest where the "
	  "kernel rewrites it) or nop6 (never rewritten, ~4x dearer here)", 0 },
	{ "bench-empty", OPT_BENCH_EMPTY, NULL, OPTION_HIDDEN,
	  "Injected mode with probe programs that return at once (benchmarks)", 0 },
	{ "debug-offset", OPT_DEBUG_OFFSET, "FIELD=VALUE", OPTION_HIDDEN,
	  "Override a struct offset (testing the offset check)", 0 },
	{ "verbose", 'v', NULL, 0, "Show what is probed, and libbpf's messages", 0 },
	{ NULL, 'h', NULL, OPTION_HIDDEN, "Show the full help", 0 },
	{},
};

static int parse_seconds(const char *arg, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(arg, &end);
	if (errno || end == arg || *end || !(v > 0) || v > 1e9)
		return -EINVAL;
	*out = v;
	return 0;
}

/*
 * Usage errors are one line: argp's (or getopt's) message passes, argp's
 * "Try `pytm-bpf --help'" line does not.
 */
static ssize_t usage_write(void *cookie, const char *buf, size_t size)
{
	if (strncmp(buf, "Try `", 5) && strncmp(buf, "Try '", 5))
		fwrite(buf, 1, size, stderr);
	return size;
}

static FILE *usage_stream(void)
{
	static cookie_io_functions_t io = { .write = usage_write };

	return fopencookie(NULL, "w", io);
}

static error_t parse_arg(int key, char *arg, struct argp_state *state)
{
	FILE *f;
	long long v;

	switch (key) {
	case ARGP_KEY_INIT:
		state->child_inputs[0] = &env.cli;
		/* Line buffered: each write is one whole line. */
		f = usage_stream();
		if (f) {
			setvbuf(f, NULL, _IOLBF, 0);
			state->err_stream = f;
		}
		break;
	case 'h':
		argp_state_help(state, stderr, ARGP_HELP_STD_HELP);
		break;
	case 'v':
		env.verbose = true;
		break;
	case 'p':
		if (parse_num(arg, 1, INT_MAX, &v))
			argp_error(state, "invalid PID: %s", arg);
		if (env.npids >= MAX_PIDS)
			argp_error(state, "too many -p (at most %d)", MAX_PIDS);
		env.pids[env.npids++] = v;
		break;
	case OPT_ALL:
		env.all = true;
		break;
	case OPT_MAX_PROCS:
		if (parse_num(arg, 1, 1000, &v))
			argp_error(state, "--max-procs takes a number from 1 to 1000, not %s", arg);
		env.max_procs = v;
		break;
	case OPT_FRAMES:
		if (parse_num(arg, 1, PYTM_MAX_FRAMES, &v))
			argp_error(state, "--frames takes a number from 1 to %d, not %s",
				   PYTM_MAX_FRAMES, arg);
		env.frames = v;
		break;
	case OPT_DURATION:
		if (parse_seconds(arg, &env.duration))
			argp_error(state, "invalid --duration: %s", arg);
		break;
	case OPT_INTERVAL:
		if (parse_seconds(arg, &env.interval))
			argp_error(state, "invalid --interval: %s", arg);
		break;
	case OPT_COMPARE:
		env.compare = true;
		env.compare_file = arg;
		break;
	case OPT_RESET_PEAK:
		env.reset_peak = true;
		break;
	case 'o':
		env.output = arg;
		break;
	case OPT_PICKLE:
		if (!strcmp(arg, "3.8"))
			env.pickle = PYTM_PICKLE_38;
		else if (!strncmp(arg, "3.", 2) && !parse_num(arg + 2, 9, 99, &v))
			env.pickle = PYTM_PICKLE_39;
		else
			argp_error(state, "invalid --pickle-version: %s (3.8, 3.9, ...)", arg);
		break;
	case OPT_MAX_BLOCKS:
		if (parse_num(arg, 1024, 1L << 28, &v))
			argp_error(state, "invalid --max-blocks: %s", arg);
		env.max_blocks = v;
		break;
	case OPT_MAX_STACKS:
		if (parse_num(arg, 256, 1L << 24, &v))
			argp_error(state, "invalid --max-stacks: %s", arg);
		env.max_stacks = v;
		break;
	case OPT_CONTROL:
		env.control = true;
		break;
	case OPT_NO_INJECT:
		env.no_inject = true;
		break;
	case OPT_TOTAL_FRAMES:
		env.total_frames = true;
		break;
	case OPT_BENCH_EMPTY:
		env.bench_empty = true;
		break;
	case OPT_PROBE_SITE:
		if (!strcmp(arg, "auto"))
			env.site_pref = REDIRECT_PREFER_AUTO;
		else if (!strcmp(arg, "nop5"))
			env.site_pref = REDIRECT_PREFER_NOP5;
		else if (!strcmp(arg, "nop6"))
			env.site_pref = REDIRECT_PREFER_NOP6;
		else
			argp_error(state, "invalid --probe-site: %s (auto, nop5 or nop6)", arg);
		break;
	case OPT_DEBUG_OFFSET:
		if (env.noverrides >= (int)(sizeof(env.overrides) / sizeof(env.overrides[0])))
			argp_error(state, "too many --debug-offset");
		env.overrides[env.noverrides++] = arg;
		break;
	case ARGP_KEY_ARG:
		argp_error(state, "unexpected argument: %s", arg);
		break;
	case ARGP_KEY_END:
		if (!env.npids && !env.all)
			argp_error(state, "no target: give -p PID or --all");
		if (env.npids && env.all)
			argp_error(state, "-p and --all exclude each other");
		if (env.control && (env.all || env.npids > 1))
			argp_error(state, "--control takes exactly one -p");
		if (env.output && (env.all || env.npids > 1))
			argp_error(state, "-o takes exactly one -p");
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

static int libbpf_print_fn(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level == LIBBPF_DEBUG && !env.verbose)
		return 0;
	if (!env.verbose)
		return 0;
	return vfprintf(stderr, fmt, args);
}

static volatile sig_atomic_t exiting;

static void sig_handler(int sig)
{
	exiting = 1;
}

/* Everything being traced. */
static struct state {
	struct pytm_bpf *skel;
	struct tracee *tracees;		/* env.max_procs slots, fixed in memory */
	int ntracees;
	struct tracee_opts topts;
	struct snapshot *compare_base;	/* --compare=FILE */
	/*
	 * The event thread reads code objects the moment BPF announces them
	 * (a process that exits takes its memory along); the main thread
	 * reports. The lock covers the tracees and their code objects.
	 */
	pthread_mutex_t lock;
	volatile bool quit;
	/* --all: processes that exec'd, to try once Python is up. */
	struct pending {
		pid_t pid;
		double due;
		int tries;
	} pending[256];
	int npending;
} st;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct tracee *find_tracee(pid_t pid)
{
	int i;

	for (i = 0; i < st.ntracees; i++)
		if (st.tracees[i].pid == pid && st.tracees[i].registered)
			return &st.tracees[i];
	return NULL;
}

/* The event thread's view: tracees whose code objects can be read now. */
static struct tracee *find_ready(pid_t pid)
{
	int i;

	for (i = 0; i < st.ntracees; i++)
		if (st.tracees[i].pid == pid && st.tracees[i].ready)
			return &st.tracees[i];
	return NULL;
}

static void add_pending(pid_t pid, double delay)
{
	int i;

	for (i = 0; i < st.npending; i++)
		if (st.pending[i].pid == pid)
			return;
	if (st.npending < (int)(sizeof(st.pending) / sizeof(st.pending[0])))
		st.pending[st.npending++] = (struct pending){ pid, now() + delay, 0 };
}

static int handle_event(void *arg, void *data, size_t size)
{
	const struct pytm_event *ev = data;
	struct tracee *tr;

	if (size < sizeof(*ev))
		return 0;
	pthread_mutex_lock(&st.lock);
	switch (ev->type) {
	case PYTM_EV_CODE:
		tr = find_ready(ev->pid);
		if (tr)
			tracee__code(tr, ev->code_id, ev->code_addr);
		break;
	case PYTM_EV_EXEC:
		/* The interpreter needs a moment before it can be read. */
		if (!find_ready(ev->pid))
			add_pending(ev->pid, 0.3);
		break;
	}
	pthread_mutex_unlock(&st.lock);
	return 0;
}

/*
 * A report must see every code object announced before it was asked for:
 * the main thread bumps sync.req and kicks the event thread, which drains
 * the ring buffer and answers with sync.done.
 */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int kick;			/* eventfd; -1 while no event thread runs */
	unsigned long req, done;
	bool over;			/* the event thread has stopped */
} sync_ev = {
	.mu = PTHREAD_MUTEX_INITIALIZER,
	.cv = PTHREAD_COND_INITIALIZER,
	.kick = -1,
};

static void sync_answer(unsigned long seq, bool over)
{
	pthread_mutex_lock(&sync_ev.mu);
	if (seq > sync_ev.done)
		sync_ev.done = seq;
	sync_ev.over |= over;
	pthread_cond_broadcast(&sync_ev.cv);
	pthread_mutex_unlock(&sync_ev.mu);
}

/* Wait until the events produced so far are handled (at most 2 s). */
static void events_sync(void)
{
	struct timespec until;
	unsigned long seq;
	uint64_t one = 1;

	if (sync_ev.kick < 0)
		return;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 2;
	pthread_mutex_lock(&sync_ev.mu);
	seq = ++sync_ev.req;
	pthread_mutex_unlock(&sync_ev.mu);
	if (write(sync_ev.kick, &one, sizeof(one)) != sizeof(one))
		return;
	pthread_mutex_lock(&sync_ev.mu);
	while (sync_ev.done < seq && !sync_ev.over)
		if (pthread_cond_timedwait(&sync_ev.cv, &sync_ev.mu, &until))
			break;
	pthread_mutex_unlock(&sync_ev.mu);
}

static void *event_thread(void *rb)
{
	struct pollfd pfd[2] = {
		{ .fd = ring_buffer__epoll_fd(rb), .events = POLLIN },
		{ .fd = sync_ev.kick, .events = POLLIN },
	};
	unsigned long seq;
	uint64_t n;
	int err;

	while (!st.quit) {
		if (poll(pfd, 2, 100) < 0 && errno != EINTR) {
			warn("reading events: %s", strerror(errno));
			break;
		}
		if ((pfd[1].revents & POLLIN) && read(sync_ev.kick, &n, sizeof(n)) < 0)
			n = 0;
		/* What was asked before this drain is answered by it. */
		pthread_mutex_lock(&sync_ev.mu);
		seq = sync_ev.req;
		pthread_mutex_unlock(&sync_ev.mu);
		err = ring_buffer__consume(rb);
		if (err < 0 && err != -EINTR) {
			warn("reading events: %s", strerror(-err));
			break;
		}
		sync_answer(seq, false);
	}
	sync_answer(0, true);
	return NULL;
}

/* A snapshot of TR's traces, with every code object announced so far. */
static struct snapshot *take_snapshot(struct tracee *tr)
{
	struct snapshot *s;

	events_sync();
	/* The event thread adds code objects to the resolver this reads. */
	pthread_mutex_lock(&st.lock);
	s = tracee__snapshot(tr, st.skel, env.frames);
	pthread_mutex_unlock(&st.lock);
	return s;
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
static void detach_all(void)
{
	pthread_t *th = calloc(st.ntracees, sizeof(*th));
	bool *started = calloc(st.ntracees, sizeof(*started));
	int i;

	for (i = 0; i < st.ntracees; i++) {
		if (!st.tracees[i].attached)
			continue;
		if (th && started && !pthread_create(&th[i], NULL, detach_thread, &st.tracees[i]))
			started[i] = true;
		else
			tracee__detach(&st.tracees[i]);
	}
	for (i = 0; th && started && i < st.ntracees; i++)
		if (started[i])
			pthread_join(th[i], NULL);
	free(th);
	free(started);
}

/* Sleep until the next round, or until a --control command arrives. */
static void wait_a_moment(void)
{
	struct pollfd pfd = { .fd = 0, .events = POLLIN };

	poll(&pfd, env.control ? 1 : 0, 100);
}

/* A report on one tracee; FINAL also writes -o. */
static int report_tracee(struct tracee *tr, bool final, bool header, bool exited)
{
	const struct report_opts *ro = &env.cli.opts;
	const struct snapshot *base;
	struct snapshot *s;
	int err = 0;

	s = take_snapshot(tr);
	if (!s) {
		err = -errno;
		warn("cannot read the traces of process %d: %s", tr->pid, strerror(-err));
		return err;
	}
	base = env.compare_file ? st.compare_base : tr->baseline;
	/* Under --control, stdout carries only the replies. */
	if (!env.control) {
		struct sink_report r = {
			.snap = s,
			.old = env.compare ? base : NULL,
			.old_name = env.compare_file ?: "first report",
			.o = ro,
			.tr = tr,
			.skel = st.skel,
			.header = header,
			.final = final,
			.exited = exited,
		};

		err = sink__report(stdout, env.cli.format, &r);
		if (err)
			warn("cannot print the report of process %d: %s", tr->pid,
			     strerror(-err));
	}
	if (final && env.output) {
		err = snapshot__write(s, env.output, env.pickle ?: tr->pickle);
		if (err)
			warn("cannot write %s: %s", env.output, strerror(-err));
	}
	/* --compare alone: the first report is what later ones compare to. */
	if (env.compare && !env.compare_file && !tr->baseline) {
		tr->baseline = s;
		s = NULL;
	}
	snapshot__free(s);
	if (!final && env.reset_peak)
		tracee__reset_peak(tr, st.skel);
	return err;
}

static int cmp_current(const void *a, const void *b)
{
	const struct sink_summary_row *x = a, *y = b;

	return x->current < y->current ? 1 : x->current > y->current ? -1 :
	       x->tr < y->tr ? -1 : x->tr > y->tr;
}

/* Multi-process runs end with one line per process, by traced size. */
static void print_host_summary(void)
{
	struct sink_summary_row *rows;
	struct pytm_proc p;
	int i, n = 0;

	rows = calloc(st.ntracees + 1, sizeof(*rows));
	if (!rows)
		return;
	for (i = 0; i < st.ntracees; i++) {
		if (!st.tracees[i].registered || tracee__stats(&st.tracees[i], st.skel, &p))
			continue;
		rows[n].tr = &st.tracees[i];
		rows[n].current = p.current;
		rows[n++].peak = p.peak;
	}
	qsort(rows, n, sizeof(*rows), cmp_current);
	sink__summary(stdout, env.cli.format, rows, n);
	free(rows);
}

/* One --control command; the reply is one line on stdout. */
static void control_command(struct tracee *tr, char *line, bool *stop)
{
	char *cmd = strtok(line, " \t"), *arg = strtok(NULL, ""), *arg2 = NULL, *sp;
	int err, layout = env.pickle ?: tr->pickle;
	struct pytm_proc p;
	struct snapshot *s;

	/* "snapshot PATH [X.Y]": PATH may hold spaces; a trailing version is not part of it. */
	sp = arg ? strrchr(arg, ' ') : NULL;
	if (sp && !strncmp(sp + 1, "3.", 2)) {
		*sp = '\0';
		arg2 = sp + 1;
	}
	if (!cmd) {
		return;
	} else if (!strcmp(cmd, "snapshot") && arg) {
		if (arg2)
			layout = !strcmp(arg2, "3.8") ? PYTM_PICKLE_38 : PYTM_PICKLE_39;
		s = take_snapshot(tr);
		err = s ? snapshot__write(s, arg, layout) : -errno;
		if (err)
			printf("error cannot write %s: %s\n", arg, strerror(-err));
		else
			printf("ok %zu\n", snapshot__count(s));
		snapshot__free(s);
	} else if (!strcmp(cmd, "traced")) {
		err = tracee__stats(tr, st.skel, &p);
		if (err)
			printf("error %s\n", strerror(-err));
		else
			printf("ok %lld %lld\n", (long long)p.current, (long long)p.peak);
	} else if (!strcmp(cmd, "reset-peak")) {
		err = tracee__reset_peak(tr, st.skel);
		printf(err ? "error %s\n" : "ok\n", strerror(-err));
	} else if (!strcmp(cmd, "clear")) {
		err = tracee__clear(tr, st.skel);
		printf(err ? "error %s\n" : "ok\n", strerror(-err));
	} else if (!strcmp(cmd, "limit")) {
		printf("ok %d\n", env.frames);
	} else if (!strcmp(cmd, "stop")) {
		*stop = true;
		printf("ok\n");
	} else {
		printf("error unknown command: %s\n", cmd);
	}
	fflush(stdout);
}

/* Read what stdin has; run each complete line. EOF counts as "stop". */
static void control_poll(struct tracee *tr, bool *stop)
{
	static char buf[8192];
	static size_t used;
	struct pollfd pfd = { .fd = 0, .events = POLLIN };
	char *nl;
	ssize_t n;

	if (poll(&pfd, 1, 0) <= 0)
		return;
	n = read(0, buf + used, sizeof(buf) - 1 - used);
	if (n <= 0) {
		*stop = true;
		return;
	}
	used += n;
	buf[used] = '\0';
	while ((nl = strchr(buf, '\n'))) {
		*nl = '\0';
		control_command(tr, buf, stop);
		used -= nl + 1 - buf;
		memmove(buf, nl + 1, used + 1);
	}
	if (used == sizeof(buf) - 1)
		used = 0;	/* an overlong line: drop it */
}

static bool kernel_supports(void)
{
	int err;

	/* Needed map types and helpers, probed rather than guessed from the version. */
	err = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_TASK_STORAGE, NULL);
	if (err < 0) {
		warn("cannot use BPF: %s (run as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE)",
		     strerror(-err));
		return false;
	}
	if (err != 1) {
		warn("this kernel has no BPF task storage (Linux 5.11+ is needed)");
		return false;
	}
	if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, NULL) != 1) {
		warn("this kernel has no BPF ring buffer (Linux 5.8+ is needed)");
		return false;
	}
	if (libbpf_probe_bpf_helper(BPF_PROG_TYPE_KPROBE, BPF_FUNC_loop, NULL) != 1) {
		warn("this kernel has no bpf_loop() helper (Linux 5.17+ is needed)");
		return false;
	}
	return true;
}

/* Open, check and attach PID; QUIET for --all, where failures are reasons to skip. */
/* Under --all: a CPython we do not trace is worth a line; anything else is not. */
static void say_skipped(pid_t pid, int err)
{
	if (err != -ENOEXEC && err != -ESRCH && err != -EACCES)
		warn("skipping pid %d: %s", pid, pytm_last_warning);
}

static int start_tracee(pid_t pid, bool quiet)
{
	struct tracee *tr;
	int err, i;

	if (find_tracee(pid))
		return 0;
	/* Reuse the slot of a process that exited. */
	for (i = 0; i < st.ntracees && st.tracees[i].registered; i++)
		;
	if (i == st.ntracees && st.ntracees == env.max_procs) {
		if (!quiet)
			warn("too many processes (--max-procs %d)", env.max_procs);
		else
			snprintf(pytm_last_warning, sizeof(pytm_last_warning),
			 "--max-procs %d reached", env.max_procs);
		return -E2BIG;
	}
	tr = &st.tracees[i];
	pytm_quiet = quiet;
	err = tracee__open(tr, pid, st.skel, &st.topts);
	if (!err) {
		/* Code objects are read from the first event on, during attach too. */
		pthread_mutex_lock(&st.lock);
		tr->ready = true;
		if (i == st.ntracees)
			st.ntracees++;
		pthread_mutex_unlock(&st.lock);
		err = tracee__attach(tr, st.skel, &st.topts);
	}
	pytm_quiet = false;
	if (err) {
		pthread_mutex_lock(&st.lock);
		tr->ready = false;
		pthread_mutex_unlock(&st.lock);
		tracee__purge(tr, st.skel);
		tracee__close(tr);
		memset(tr, 0, sizeof(*tr));
		tr->pidfd = tr->blocks_fd = -1;
		return err;
	}
	return 0;
}

/*
 * A tracee whose process exited: its report, then its probes and map
 * entries go. Its memory is gone, so the event thread stops reading it
 * first.
 */
static void finish_tracee(struct tracee *tr, bool report)
{
	pthread_mutex_lock(&st.lock);
	tr->ready = false;
	pthread_mutex_unlock(&st.lock);
	if (report) {
		report_tracee(tr, false, true, true);
		sink__gap(stdout, env.cli.format);
	}
	tracee__purge(tr, st.skel);
	tracee__detach(tr);
	tracee__close(tr);
}

/* --all: every process that looks like CPython now. */
static void scan_all(void)
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
		err = start_tracee(pid, true);
		if (err)
			say_skipped(pid, err);
	}
	closedir(d);
}

/* --all: try the processes that exec'd a while ago. */
static void poll_pending(void)
{
	struct pending p;
	double t = now();
	int i, err;

	for (;;) {
		/* Take one due entry out, under the lock the event thread shares. */
		pthread_mutex_lock(&st.lock);
		for (i = 0; i < st.npending && st.pending[i].due > t; i++)
			;
		if (i == st.npending) {
			pthread_mutex_unlock(&st.lock);
			return;
		}
		p = st.pending[i];
		st.pending[i] = st.pending[--st.npending];
		pthread_mutex_unlock(&st.lock);

		err = start_tracee(p.pid, true);
		if (!err)
			fprintf(stderr, "pytm-bpf: tracing new process %d\n", p.pid);
		/* An interpreter still starting has no threads yet: try again. */
		if (err && err != -ENOEXEC && err != -ESRCH && ++p.tries < 5) {
			p.due = t + 0.5 * p.tries;
			pthread_mutex_lock(&st.lock);
			if (st.npending < (int)(sizeof(st.pending) / sizeof(st.pending[0])))
				st.pending[st.npending++] = p;
			pthread_mutex_unlock(&st.lock);
		} else if (err) {
			say_skipped(p.pid, err);
		}
	}
}

static int load_bpf(void)
{
	int err;

	st.skel = pytm_bpf__open();
	if (!st.skel) {
		err = -errno;
		warn("cannot open the BPF object: %s", strerror(-err));
		return err;
	}
	st.skel->rodata->empty_probe = env.bench_empty;
	/* Stack values hold only the frames asked for. */
	err = bpf_map__set_value_size(st.skel->maps.stacks,
				      offsetof(struct pytm_stack, frames) +
				      env.frames * sizeof(__u64));
	err = err ?: bpf_map__set_max_entries(st.skel->maps.blocks, env.max_procs + 16);
	err = err ?: bpf_map__set_max_entries(st.skel->maps.stacks, env.max_stacks);
	err = err ?: bpf_map__set_max_entries(st.skel->maps.procs, env.max_procs + 16);
	if (err) {
		warn("cannot size the BPF maps: %s", strerror(-err));
		return err;
	}
	/* Without syscall programs (before 5.14) resets rewrite the entry. */
	if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SYSCALL, NULL) != 1)
		bpf_program__set_autoload(st.skel->progs.control, false);
	err = pytm_bpf__load(st.skel);
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

int main(int argc, char **argv)
{
	static const struct argp_child children[] = {
		{ &report__cli_argp, 0, "Report options:", 0 },
		{},
	};
	static const struct argp argp = {
		.options = opts, .parser = parse_arg, .doc = doc, .children = children,
	};
	struct bpf_link *exec_link = NULL, *exit_link = NULL;
	struct sigaction sa = { .sa_handler = sig_handler };
	struct ring_buffer *rb = NULL;
	double start, next_report = 0;
	bool stop = false, single, have_events_th = false;
	pthread_t events_th;
	struct tracee *tr;
	int i, err;

	if (argc > 1 && !strcmp(argv[1], "report"))
		return report__main(argc - 1, argv + 1);
	pthread_mutex_init(&st.lock, NULL);

	argp_err_exit_status = 2;
	/* Messages say "pytm-bpf:", however the tool was started. */
	argv[0] = "pytm-bpf";
	err = argp_parse(&argp, argc, argv, 0, NULL, NULL);
	if (err)
		return 2;
	pytm_verbose = env.verbose;
	libbpf_set_print(libbpf_print_fn);
	single = !env.all && env.npids == 1;
	st.topts = (struct tracee_opts){
		.frames = env.frames,
		.max_total = env.total_frames ? 1024 : env.frames,
		.max_blocks = env.max_blocks,
		.inject = !env.no_inject,
		.site_pref = env.site_pref,
		.overrides = env.overrides,
		.noverrides = env.noverrides,
	};
	if (env.npids > env.max_procs)
		env.max_procs = env.npids;

	/* Stop cleanly on these from the start: the report is the point. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	st.tracees = calloc(env.max_procs, sizeof(*st.tracees));
	if (!st.tracees) {
		err = -ENOMEM;
		goto cleanup;
	}
	if (env.compare_file) {
		char why[256];

		if (snapshot__load(env.compare_file, &st.compare_base, why, sizeof(why))) {
			warn("%s: %s", env.compare_file, why);
			err = -EINVAL;
			goto cleanup;
		}
	}
	/* Say what is wrong with the target before anything about BPF. */
	for (i = 0; i < env.npids; i++) {
		struct target t;

		err = target__open(&t, env.pids[i]);
		target__close(&t);
		if (err)
			goto cleanup;
	}
	if (!kernel_supports()) {
		err = -EOPNOTSUPP;
		goto cleanup;
	}
	err = load_bpf();
	if (err)
		goto cleanup;
	rb = ring_buffer__new(bpf_map__fd(st.skel->maps.events), handle_event, NULL, NULL);
	if (!rb) {
		err = -errno;
		warn("cannot set up the event buffer: %s", strerror(-err));
		goto cleanup;
	}
	exit_link = bpf_program__attach(st.skel->progs.handle_exit);
	if (env.all) {
		/* Before the scan, so that nothing starts unseen in between. */
		exec_link = bpf_program__attach(st.skel->progs.handle_exec);
		if (!exec_link) {
			err = -errno;
			warn("cannot follow new processes: %s", strerror(-err));
			goto cleanup;
		}
		scan_all();
	}
	for (i = 0; i < env.npids; i++) {
		err = start_tracee(env.pids[i], false);
		if (err)
			goto cleanup;
	}

	if (single) {
		tr = &st.tracees[0];
		fprintf(stderr, "pytm-bpf: tracing pid %d (CPython %s, %s): %s%s%s, %d probes, %d frame%s\n",
			tr->pid, tr->version, tr->t.pymod,
			tr->pr.injected ? "allocator redirected (" : "plain probes",
			tr->pr.injected ? redirect__site_name(tr->pr.rd.site_kind) : "",
			tr->pr.injected ? " sites)" : "",
			tr->pr.nlinks, env.frames, env.frames > 1 ? "s" : "");
	} else {
		fprintf(stderr, "pytm-bpf: tracing %d process%s", st.ntracees,
			st.ntracees == 1 ? "" : "es");
		for (i = 0; i < st.ntracees; i++)
			fprintf(stderr, "%s%d", i ? ", " : " (pids ", st.tracees[i].pid);
		fprintf(stderr, "%s%s, %d frame%s\n", st.ntracees ? ")" : "",
			env.all ? ", following new ones" : "", env.frames,
			env.frames > 1 ? "s" : "");
	}

	sync_ev.kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (sync_ev.kick < 0) {
		err = -errno;
		warn("cannot start the event thread: %s", strerror(-err));
		goto cleanup;
	}
	err = pthread_create(&events_th, NULL, event_thread, rb);
	if (err) {
		err = -err;
		warn("cannot start the event thread: %s", strerror(-err));
		goto cleanup;
	}
	have_events_th = true;
	start = now();
	if (env.interval)
		next_report = start + env.interval;
	while (!exiting && !stop) {
		wait_a_moment();
		err = 0;
		for (i = 0; i < st.ntracees; i++) {
			tr = &st.tracees[i];
			if (!tr->registered || !tracee__gone(tr))
				continue;
			if (single) {
				stop = true;
				warn("process %d exited; reporting what it had allocated", tr->pid);
				break;
			}
			finish_tracee(tr, true);
		}
		if (env.all)
			poll_pending();
		if (!single && !env.all && env.npids) {
			/* -p several times: done when all are gone. */
			for (i = 0; i < st.ntracees && !st.tracees[i].registered; i++)
				;
			if (i == st.ntracees)
				break;
		}
		if (env.duration && now() - start >= env.duration)
			break;
		if (env.control)
			control_poll(&st.tracees[0], &stop);
		if (env.interval && now() >= next_report) {
			if (!env.control)
				sink__round(stdout, env.cli.format);
			for (i = 0; i < st.ntracees; i++) {
				if (st.tracees[i].registered)
					report_tracee(&st.tracees[i], false, !single, false);
				if (!env.control)
					sink__gap(stdout, env.cli.format);
			}
			next_report += env.interval;
		}
	}
	/* Report first (events still flow, code objects are still read)... */
	err = 0;
	for (i = 0; i < st.ntracees; i++) {
		if (!st.tracees[i].registered)
			continue;
		if (report_tracee(&st.tracees[i], true, !single, false))
			err = -EIO;
		if (!single)
			sink__gap(stdout, env.cli.format);
	}
	if (!single && !env.control)
		print_host_summary();
	fflush(stdout);

cleanup:
	/* ...then stop reading events, and take the probes out. */
	st.quit = true;
	if (have_events_th)
		pthread_join(events_th, NULL);
	if (sync_ev.kick >= 0)
		close(sync_ev.kick);
	sync_ev.kick = -1;
	if (st.tracees)
		detach_all();
	bpf_link__destroy(exec_link);
	bpf_link__destroy(exit_link);
	for (i = 0; st.tracees && i < st.ntracees; i++)
		tracee__close(&st.tracees[i]);
	free(st.tracees);
	snapshot__free(st.compare_base);
	report__cli_free(&env.cli);
	ring_buffer__free(rb);
	pytm_bpf__destroy(st.skel);
	return err ? 1 : 0;
}
