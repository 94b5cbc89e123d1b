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
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "pytm.h"
#include "pytm.skel.h"
#include "collect.h"
#include "probes.h"
#include "pyoffsets.h"
#include "report.h"
#include "resolve.h"
#include "snapshot.h"
#include "target.h"
#include "util.h"
#include "validate.h"

int report__main(int argc, char **argv);

static struct env {
	pid_t pid;			/* -p: the target */
	int frames;			/* --frames: traceback limit, as tracemalloc.start(N) */
	double duration;		/* --duration: seconds; 0 = until stopped */
	double interval;		/* --interval: seconds between reports; 0 = none */
	int top;			/* --top: lines per report */
	enum report_key key;		/* --key */
	bool cumulative;		/* --cumulative */
	const char *output;		/* -o: snapshot file */
	int pickle;			/* --pickle-version: 38 or 39; 0 = the target's */
	long max_blocks;		/* --max-blocks: live-block map entries */
	long max_stacks;		/* --max-stacks: distinct tracebacks */
	bool verbose;			/* -v */
	bool control;			/* --control: commands on stdin */
	bool no_inject;			/* --no-inject: plain probes only */
	const char *overrides[16];	/* --debug-offset FIELD=VALUE */
	int noverrides;
} env = {
	.frames = 1,
	.top = 10,
	.key = REPORT_KEY_LINENO,
	.max_blocks = 1 << 20,
	.max_stacks = 1 << 16,
};

const char *argp_program_version = "pytm-bpf 0.1";
const char *argp_program_bug_address = "<https://github.com/pytm-bpf/pytm-bpf/issues>";
static const char doc[] =
"pytm-bpf: Python's tracemalloc for a running CPython process, through eBPF.\n"
"\n"
"USAGE: pytm-bpf -p PID [--frames N] [--duration S] [--interval S] [-o FILE]\n"
"       pytm-bpf report FILE [--compare OLD] [--key KEY] ...\n"
"\n"
"EXAMPLES:\n"
"    pytm-bpf -p 1234                 # trace until Ctrl-C, top 10 lines\n"
"    pytm-bpf -p 1234 --frames 25     # 25-frame tracebacks\n"
"    pytm-bpf -p 1234 --duration 30 -o heap.pytm\n"
"                                     # 30 s, then a tracemalloc snapshot file\n"
"    pytm-bpf -p 1234 --interval 10 --key filename\n"
"                                     # a report every 10 s, by file\n"
"    pytm-bpf report heap.pytm --key traceback\n"
"                                     # report on a saved snapshot\n"
"\n"
"The snapshot file loads with tracemalloc.Snapshot.load(FILE).\n";

enum {
	OPT_FRAMES = 0x100,
	OPT_DURATION,
	OPT_INTERVAL,
	OPT_TOP,
	OPT_KEY,
	OPT_CUMULATIVE,
	OPT_PICKLE,
	OPT_MAX_BLOCKS,
	OPT_MAX_STACKS,
	OPT_CONTROL,
	OPT_DEBUG_OFFSET,
	OPT_NO_INJECT,
};

static const struct argp_option opts[] = {
	{ "pid", 'p', "PID", 0, "Trace this process", 0 },
	{ "frames", OPT_FRAMES, "N", 0, "Frames per traceback, 1-128 (default 1)", 0 },
	{ "duration", OPT_DURATION, "SECONDS", 0, "Stop after this long", 0 },
	{ "interval", OPT_INTERVAL, "SECONDS", 0, "Print a report this often", 0 },
	{ "top", OPT_TOP, "N", 0, "Lines per report (default 10)", 0 },
	{ "key", OPT_KEY, "KEY", 0, "Group by lineno (default), filename or traceback", 0 },
	{ "cumulative", OPT_CUMULATIVE, NULL, 0, "Count every frame of a traceback, not only the most recent", 0 },
	{ "output", 'o', "FILE", 0, "Write a tracemalloc snapshot (pickle) at the end", 0 },
	{ "pickle-version", OPT_PICKLE, "X.Y", 0,
	  "Snapshot layout for this Python's tracemalloc (default: the target's)", 0 },
	{ "max-blocks", OPT_MAX_BLOCKS, "N", 0,
	  "Live blocks tracked (default 1048576; about 100 bytes each)", 0 },
	{ "max-stacks", OPT_MAX_STACKS, "N", 0,
	  "Distinct tracebacks (default 65536; 16 + 8 x frames bytes each)", 0 },
	{ "control", OPT_CONTROL, NULL, 0,
	  "Read commands on stdin (snapshot PATH [X.Y], traced, reset-peak, clear, stop); "
	  "one reply line each on stdout", 0 },
	{ "no-inject", OPT_NO_INJECT, NULL, 0,
	  "Do not redirect the allocator: plain uprobes (miss inlined allocations)", 0 },
	{ "debug-offset", OPT_DEBUG_OFFSET, "FIELD=VALUE", OPTION_HIDDEN,
	  "Override a struct offset (testing the offset check)", 0 },
	{ "verbose", 'v', NULL, 0, "Show what is probed, and libbpf's messages", 0 },
	{ NULL, 'h', NULL, OPTION_HIDDEN, "Show the full help", 0 },
	{},
};

static int parse_long(const char *arg, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(arg, &end, 10);
	if (errno || end == arg || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

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

static error_t parse_arg(int key, char *arg, struct argp_state *state)
{
	long v;

	switch (key) {
	case 'h':
		argp_state_help(state, stderr, ARGP_HELP_STD_HELP);
		break;
	case 'v':
		env.verbose = true;
		break;
	case 'p':
		if (parse_long(arg, 1, INT_MAX, &v))
			argp_error(state, "invalid PID: %s", arg);
		env.pid = v;
		break;
	case OPT_FRAMES:
		if (parse_long(arg, 1, PYTM_MAX_FRAMES, &v))
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
	case OPT_TOP:
		if (parse_long(arg, 1, INT_MAX, &v))
			argp_error(state, "invalid --top: %s", arg);
		env.top = v;
		break;
	case OPT_KEY:
		v = report__parse_key(arg);
		if (v < 0)
			argp_error(state, "--key is lineno, filename or traceback, not %s", arg);
		env.key = v;
		break;
	case OPT_CUMULATIVE:
		env.cumulative = true;
		break;
	case 'o':
		env.output = arg;
		break;
	case OPT_PICKLE:
		if (!strcmp(arg, "3.8"))
			env.pickle = PYTM_PICKLE_38;
		else if (!strncmp(arg, "3.", 2) && !parse_long(arg + 2, 9, 99, &v))
			env.pickle = PYTM_PICKLE_39;
		else
			argp_error(state, "invalid --pickle-version: %s (3.8, 3.9, ...)", arg);
		break;
	case OPT_MAX_BLOCKS:
		if (parse_long(arg, 1024, 1L << 28, &env.max_blocks))
			argp_error(state, "invalid --max-blocks: %s", arg);
		break;
	case OPT_MAX_STACKS:
		if (parse_long(arg, 256, 1L << 24, &env.max_stacks))
			argp_error(state, "invalid --max-stacks: %s", arg);
		break;
	case OPT_CONTROL:
		env.control = true;
		break;
	case OPT_NO_INJECT:
		env.no_inject = true;
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
		if (!env.pid)
			argp_error(state, "no target: give -p PID");
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

struct ctx {
	struct resolver *resolver;
	pid_t pid;
};

static int handle_event(void *arg, void *data, size_t size)
{
	const struct pytm_event *ev = data;
	struct ctx *c = arg;

	if (size < sizeof(*ev) || ev->type != PYTM_EV_CODE || ev->pid != (__u32)c->pid)
		return 0;
	resolver__add_code(c->resolver, ev->code_id, ev->code_addr);
	return 0;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Has the target exited? pidfd polls readable once it has. */
static bool target_gone(int pidfd, pid_t pid)
{
	struct pollfd pfd = { .fd = pidfd, .events = POLLIN };

	if (pidfd < 0)
		return kill(pid, 0) && errno == ESRCH;
	return poll(&pfd, 1, 0) > 0;
}

static void format_bytes(char *buf, size_t len, __s64 v)
{
	report__format_size(buf, len, (double)v, false);
}

static const char *const lost_names[PYTM_LOST_MAX] = {
	[PYTM_LOST_BLOCKS_FULL] = "live-block map full",
	[PYTM_LOST_STACKS_FULL] = "traceback map full",
	[PYTM_LOST_CODES_FULL] = "code-object map full",
	[PYTM_LOST_RINGBUF] = "ring buffer full",
	[PYTM_LOST_FRAME_READ] = "unreadable frame",
	[PYTM_LOST_STASH] = "allocator calls nested too deep",
	[PYTM_LOST_NO_TSTATE] = "no Python thread state",
};

/* Traced memory and lost-event counts: the lines after every report. */
static void print_footer(FILE *out, int procs_fd, pid_t pid, const struct resolver *r)
{
	struct pytm_proc p;
	char cur[32], peak[32];
	uint64_t nread, nfailed;
	bool any = false;
	__u32 key = pid;
	int i;

	if (bpf_map_lookup_elem(procs_fd, &key, &p))
		return;
	format_bytes(cur, sizeof(cur), p.current);
	format_bytes(peak, sizeof(peak), p.peak);
	fprintf(out, "Traced memory: current=%s, peak=%s (%lld B, %lld B); %llu allocator events\n",
		cur, peak, (long long)p.current, (long long)p.peak,
		(unsigned long long)p.nevents);
	fprintf(out, "Lost events:");
	for (i = 0; i < PYTM_LOST_MAX; i++) {
		/* Allocations from threads with no Python state are not lost. */
		if (!p.lost[i] || i == PYTM_LOST_NO_TSTATE)
			continue;
		fprintf(out, "%s %s=%llu", any ? "," : "", lost_names[i],
			(unsigned long long)p.lost[i]);
		any = true;
	}
	resolver__stats(r, &nread, &nfailed);
	if (nfailed) {
		fprintf(out, "%s unreadable code objects=%llu", any ? "," : "",
			(unsigned long long)nfailed);
		any = true;
	}
	fprintf(out, "%s\n", any ? "" : " none");
}

static int report_now(struct pytm_bpf *skel, struct resolver *r, bool final)
{
	struct report_opts ro = { .key = env.key, .cumulative = env.cumulative, .top = env.top };
	struct snapshot *s;
	char stamp[32];
	time_t t;
	int err = 0;

	s = collect__snapshot(bpf_map__fd(skel->maps.blocks), bpf_map__fd(skel->maps.stacks),
			      env.pid, env.frames, r);
	if (!s) {
		err = -errno;
		warn("cannot read the traces: %s", strerror(errno));
		return err;
	}
	if (!final) {
		t = time(NULL);
		strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", localtime(&t));
		printf("%s pid %d\n", stamp, env.pid);
	}
	/* Under --control, stdout carries only the replies. */
	if (!env.control) {
		report__print_top(stdout, s, &ro);
		printf("\n");
		print_footer(stdout, bpf_map__fd(skel->maps.procs), env.pid, r);
		if (!final)
			printf("\n");
		fflush(stdout);
	}
	if (final && env.output) {
		err = snapshot__write(s, env.output, env.pickle);
		if (err)
			warn("cannot write %s: %s", env.output, strerror(-err));
	}
	snapshot__free(s);
	return err;
}

/* Delete every live block of PID (tracemalloc.clear_traces()). */
static int clear_traces(struct pytm_bpf *skel, pid_t pid)
{
	int fd = bpf_map__fd(skel->maps.blocks), pfd = bpf_map__fd(skel->maps.procs);
	struct pytm_block_key key, next;
	struct pytm_proc p;
	__u32 k = pid;
	bool first = true;

	while (!bpf_map_get_next_key(fd, first ? NULL : &key, &next)) {
		first = false;
		key = next;
		if (next.pid == (__u32)pid)
			bpf_map_delete_elem(fd, &next);
	}
	if (bpf_map_lookup_elem(pfd, &k, &p))
		return -errno;
	/* Racy against events in flight, as any reset from outside. */
	p.current = 0;
	p.peak = 0;
	return bpf_map_update_elem(pfd, &k, &p, BPF_EXIST) ? -errno : 0;
}

static int reset_peak(struct pytm_bpf *skel, pid_t pid)
{
	int pfd = bpf_map__fd(skel->maps.procs);
	struct pytm_proc p;
	__u32 k = pid;

	if (bpf_map_lookup_elem(pfd, &k, &p))
		return -errno;
	p.peak = p.current;
	return bpf_map_update_elem(pfd, &k, &p, BPF_EXIST) ? -errno : 0;
}

/* One --control command; the reply is one line on stdout. */
static void control_command(struct pytm_bpf *skel, struct resolver *r, char *line,
			    bool *stop)
{
	char *cmd = strtok(line, " \t"), *arg = strtok(NULL, " \t"), *arg2 = strtok(NULL, " \t");
	struct pytm_proc p;
	struct snapshot *s;
	__u32 k = env.pid;
	int err, layout = env.pickle;

	if (!cmd) {
		return;
	} else if (!strcmp(cmd, "snapshot") && arg) {
		if (arg2)
			layout = !strcmp(arg2, "3.8") ? PYTM_PICKLE_38 : PYTM_PICKLE_39;
		s = collect__snapshot(bpf_map__fd(skel->maps.blocks),
				      bpf_map__fd(skel->maps.stacks), env.pid, env.frames, r);
		err = s ? snapshot__write(s, arg, layout) : -errno;
		if (err)
			printf("error cannot write %s: %s\n", arg, strerror(-err));
		else
			printf("ok %zu\n", snapshot__count(s));
		snapshot__free(s);
	} else if (!strcmp(cmd, "traced")) {
		if (bpf_map_lookup_elem(bpf_map__fd(skel->maps.procs), &k, &p))
			printf("error %s\n", strerror(errno));
		else
			printf("ok %lld %lld\n", (long long)p.current, (long long)p.peak);
	} else if (!strcmp(cmd, "reset-peak")) {
		err = reset_peak(skel, env.pid);
		printf(err ? "error %s\n" : "ok\n", strerror(-err));
	} else if (!strcmp(cmd, "clear")) {
		err = clear_traces(skel, env.pid);
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
static void control_poll(struct pytm_bpf *skel, struct resolver *r, bool *stop)
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
		control_command(skel, r, buf, stop);
		used -= nl + 1 - buf;
		memmove(buf, nl + 1, used + 1);
	}
	if (used == sizeof(buf) - 1)
		used = 0;	/* an overlong line: drop it */
}

/* Offsets for the target, and a check that they match its memory. */
static int target_offsets(const struct target *t, struct pytm_offsets *off)
{
	const struct pytm_offsets *o;
	char ver[32], buf[4096], why[256];
	int i;

	target__version_str(t, ver, sizeof(ver));
	if (t->hexversion >= 0x030d0000) {
		if (target__read(t, t->runtime, buf, sizeof(buf)) ||
		    pyoffsets__from_debug(buf, sizeof(buf), off)) {
			warn("process %d: unsupported CPython %s (no readable _Py_DebugOffsets)",
			     t->pid, ver);
			return -EPROTONOSUPPORT;
		}
	} else {
		o = pyoffsets__lookup(t->hexversion);
		if (!o) {
			warn("process %d: unsupported CPython %s", t->pid, ver);
			return -EPROTONOSUPPORT;
		}
		*off = *o;
	}
	for (i = 0; i < env.noverrides; i++) {
		if (validate__override(off, env.overrides[i])) {
			warn("invalid --debug-offset: %s", env.overrides[i]);
			return -EINVAL;
		}
	}
	/* Wrong offsets would give wrong stacks: refuse instead. */
	if (validate__offsets(t, off, why, sizeof(why))) {
		warn("process %d: the struct offsets for CPython %s do not match this process (%s); not tracing",
		     t->pid, ver, why);
		return -EPROTO;
	}
	return 0;
}

static bool kernel_supports(void)
{
	/* Needed map types, probed rather than guessed from the version. */
	if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_TASK_STORAGE, NULL) != 1) {
		warn("this kernel has no BPF task storage (Linux 5.11+ is needed)");
		return false;
	}
	if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, NULL) != 1) {
		warn("this kernel has no BPF ring buffer (Linux 5.8+ is needed)");
		return false;
	}
	return true;
}

int main(int argc, char **argv)
{
	static const struct argp argp = { .options = opts, .parser = parse_arg, .doc = doc };
	struct ring_buffer *rb = NULL;
	struct resolver *r = NULL;
	struct pytm_bpf *skel = NULL;
	struct probes probes = {};
	struct target t = {};
	struct pytm_proc proc = {};
	struct ctx c = {};
	struct sigaction sa = { .sa_handler = sig_handler };
	double start, next_report = 0;
	int pidfd = -1, err;
	char ver[32];
	bool gone = false, stop = false;
	__u32 key;

	if (argc > 1 && !strcmp(argv[1], "report"))
		return report__main(argc - 1, argv + 1);

	argp_err_exit_status = 2;
	err = argp_parse(&argp, argc, argv, 0, NULL, NULL);
	if (err)
		return 2;
	pytm_verbose = env.verbose;
	libbpf_set_print(libbpf_print_fn);

	if (geteuid() != 0)
		vlog("not root: BPF and uprobes need CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE");

	/* Stop cleanly on these from the start: the report is the point. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	err = target__open(&t, env.pid);
	if (err)
		goto cleanup;
	err = target_offsets(&t, &proc.off);
	if (err)
		goto cleanup;
	proc.runtime = t.runtime;
	if (!env.pickle)
		env.pickle = t.hexversion < 0x03090000 ? PYTM_PICKLE_38 : PYTM_PICKLE_39;
	if (!kernel_supports()) {
		err = -EOPNOTSUPP;
		goto cleanup;
	}

	skel = pytm_bpf__open();
	if (!skel) {
		err = -errno;
		warn("cannot open the BPF object: %s", strerror(-err));
		goto cleanup;
	}
	proc.max_frames = env.frames;
	proc.max_total = 1024;
	/* Stack values hold only the frames asked for. */
	err = bpf_map__set_value_size(skel->maps.stacks,
				      offsetof(struct pytm_stack, frames) +
				      env.frames * sizeof(__u64));
	err = err ?: bpf_map__set_max_entries(skel->maps.blocks, env.max_blocks);
	err = err ?: bpf_map__set_max_entries(skel->maps.stacks, env.max_stacks);
	if (err) {
		warn("cannot size the BPF maps: %s", strerror(-err));
		goto cleanup;
	}
	err = pytm_bpf__load(skel);
	if (err) {
		if (err == -EPERM || err == -EACCES)
			warn("cannot load BPF programs: %s (run as root, or with CAP_BPF and CAP_PERFMON)",
			     strerror(-err));
		else
			warn("cannot load BPF programs: %s (-v shows the verifier's log)",
			     strerror(-err));
		goto cleanup;
	}

	r = resolver__new(&t, &proc.off);
	c.resolver = r;
	c.pid = env.pid;
	rb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, &c, NULL);
	if (!r || !rb) {
		err = -ENOMEM;
		warn("cannot set up the event buffer");
		goto cleanup;
	}
	key = env.pid;
	err = bpf_map_update_elem(bpf_map__fd(skel->maps.procs), &key, &proc, BPF_ANY);
	if (err) {
		err = -errno;
		warn("cannot register process %d: %s", env.pid, strerror(-err));
		goto cleanup;
	}
	pidfd = syscall(SYS_pidfd_open, env.pid, 0);

	err = probes__attach(&probes, skel, &t, !env.no_inject);
	if (err)
		goto cleanup;

	target__version_str(&t, ver, sizeof(ver));
	fprintf(stderr, "pytm-bpf: tracing pid %d (CPython %s, %s): %s, %d probes, %d frame%s\n",
		env.pid, ver, t.pymod,
		probes.injected ? "allocator redirected" : "plain probes",
		probes.nlinks, env.frames, env.frames > 1 ? "s" : "");

	start = now();
	if (env.interval)
		next_report = start + env.interval;
	while (!exiting && !stop) {
		err = ring_buffer__poll(rb, 100);
		if (err < 0 && err != -EINTR) {
			warn("reading events: %s", strerror(-err));
			break;
		}
		if (target_gone(pidfd, env.pid)) {
			gone = true;
			break;
		}
		if (env.duration && now() - start >= env.duration)
			break;
		if (env.control)
			control_poll(skel, r, &stop);
		if (env.interval && now() >= next_report) {
			report_now(skel, r, false);
			next_report += env.interval;
		}
	}
	/* No new events from here; read what is queued, then report. */
	probes__detach(&probes);
	ring_buffer__consume(rb);
	if (gone)
		warn("process %d exited; reporting what it had allocated", env.pid);
	err = report_now(skel, r, true);

cleanup:
	probes__detach(&probes);
	ring_buffer__free(rb);
	resolver__free(r);
	pytm_bpf__destroy(skel);
	target__close(&t);
	if (pidfd >= 0)
		close(pidfd);
	return err ? 1 : 0;
}
