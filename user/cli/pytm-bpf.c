// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * pytm-bpf: tracemalloc for a running CPython process, from the outside.
 * The live front end: options, the main loop (exits, --all, --duration,
 * --interval, --control), and what each report goes to. The engine is
 * session/, the output forms sinks/.
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
#include <unistd.h>
#include <bpf/libbpf.h>
#include "pytm.h"
#include "pytm.skel.h"
#include "control.h"
#include "http.h"
#include "output.h"
#include "page.h"
#include "report.h"
#include "series.h"
#include "session.h"
#include "recorder.h"	/* page/: a ring slot's size */
#include "sink.h"
#include "snapshot.h"
#include "top.h"
#include "tracee.h"
#include "util.h"

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
	bool top;			/* pytm-bpf top: the full-screen view */
	unsigned int leaks;		/* --leaks: intervals judged; 0 off */
	struct output out;		/* -o, --output-format, --keep */
	int pickle;			/* --pickle-version: 38 or 39; 0 = the target's */
	const char *serve;		/* --serve [ADDR:]PORT */
	struct http_opts http;
	int metrics_top;		/* --metrics-top */
	long max_blocks;		/* --max-blocks: live blocks per process, at most */
	long max_stacks;		/* --max-stacks: distinct tracebacks */
	bool verbose;			/* -v */
	bool control;			/* --control: commands on stdin */
	bool no_inject;			/* --no-inject: plain probes only */
	bool no_follow_forks;		/* --no-follow-forks */
	bool no_free_lists;		/* --no-free-lists */
	bool recorder;			/* --recorder (asked for) */
	bool bpf_walk;			/* --bpf-walk */
	bool record;			/* exact through the in-target recorder:
					 * the default where the allocator is
					 * redirected and not sampled */
	long ring_slots;		/* --ring-slots; 0: by --frames */
	bool peak;			/* --peak: keep the set at the peak */
	bool total_frames;		/* --total-frames: count every frame */
	bool bench_empty;		/* --bench-empty: probes that do nothing */
	enum redirect_site_pref site_pref;	/* --probe-site */
	long long sample;		/* --sample: bytes, 0 exact; -1 the mode's default */
	long long set_slots;		/* --sample-set */
	const char *overrides[16];	/* --debug-offset FIELD=VALUE */
	int noverrides;
} env = {
	.frames = 1,
	.max_procs = 64,
	.max_blocks = 1L << 28,
	.max_stacks = 1 << 16,
	.sample = -1,
	.set_slots = 1 << 16,
	.metrics_top = 10,
	.http = { .max_conns = 256, .timeout = 10 },
};

/* --peak: a new peak mark when traced memory exceeds the last by 1%. */
#define PEAK_STEP_PPM		10000

/* --all samples unless told otherwise: what a fleet can leave on. */
#define ALL_SAMPLE_DEFAULT	(512 << 10)

const char *argp_program_version = "pytm-bpf 0.1";
const char *argp_program_bug_address = "<https://github.com/pytm-bpf/pytm-bpf/issues>";
static const char doc[] =
"pytm-bpf: Python's tracemalloc for a running CPython process, through eBPF.\n"
"\n"
"USAGE: pytm-bpf -p PID [-p PID...] [--frames N] [--duration S] [--interval S] [-o FILE]\n"
"       pytm-bpf --all [--max-procs N] [--duration S] [--interval S]\n"
"       pytm-bpf top -p PID | --all [--interval S] [--key KEY] [--frames N]\n"
"       pytm-bpf report FILE [--compare OLD] [--key KEY] ...\n"
"\n"
"EXAMPLES:\n"
"    pytm-bpf -p 1234                 # trace until Ctrl-C, top 10 lines\n"
"    pytm-bpf -p 1234 --frames 25     # 25-frame tracebacks\n"
"    pytm-bpf -p 1234 --duration 30 -o heap.pytm\n"
"                                     # 30 s, then a tracemalloc snapshot file\n"
"    pytm-bpf -p 1234 --interval 10 --key filename\n"
"                                     # a report every 10 s, by file\n"
"    pytm-bpf top -p 1234 --frames 10 # a live view: top lines, growth, tracebacks\n"
"    pytm-bpf -p 1234 --interval 60 --leaks\n"
"                                     # rank lines that grow steadily (leaks)\n"
"    pytm-bpf -p 1234 --peak -o heap.pytm\n"
"                                     # also heap.peak.pytm: the set at the peak\n"
"    pytm-bpf -p 1234 --bpf-walk      # exact, each event's stack walked by BPF\n"
"                                     # in the kernel (the recorder's fallback)\n"
"    pytm-bpf -p 1234 --sample 512k   # production: sample by bytes, ~1 sample\n"
"                                     # per 512 KiB allocated, estimates\n"
"    pytm-bpf --all --duration 60     # every Python on the host, new ones too\n"
"                                     # (sampled at 512k unless --sample 0)\n"
"    pytm-bpf --all --serve :9464     # Prometheus /metrics and pprof\n"
"                                     # /debug/pprof/heap for the whole host\n"
"    pytm-bpf -p 1234 -o heap.pb.gz   # a pprof heap profile: go tool pprof\n"
"    pytm-bpf --all --interval 60 -o /var/lib/pytm/ --keep 24\n"
"                                     # a profile per process every minute\n"
"    pytm-bpf -p 1234 --frames 25 --duration 60 -o heap.html\n"
"                                     # a flame graph page, for a browser\n"
"    pytm-bpf report heap.pytm --format folded | flamegraph.pl > heap.svg\n"
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
	OPT_SAMPLE,
	OPT_SAMPLE_SET,
	OPT_SERVE,
	OPT_METRICS_TOP,
	OPT_OUTPUT_FORMAT,
	OPT_KEEP,
	OPT_NO_FOLLOW_FORKS,
	OPT_NO_FREE_LISTS,
	OPT_RECORDER,
	OPT_BPF_WALK,
	OPT_RING_SLOTS,
	OPT_PEAK,
	OPT_LEAKS,
};

static const struct argp_option opts[] = {
	{ "pid", 'p', "PID", 0, "Trace this process (repeatable)", 0 },
	{ "all", OPT_ALL, NULL, 0,
	  "Trace every CPython process on the host, and those that start later", 0 },
	{ "max-procs", OPT_MAX_PROCS, "N", 0, "Processes traced at once (default 64)", 0 },
	{ "peak", OPT_PEAK, NULL, 0,
	  "Keep the live set as it was at the highest traced memory (within 1%): "
	  "reported at the end, and -o FILE gets a .peak sibling", 0 },
	{ "no-follow-forks", OPT_NO_FOLLOW_FORKS, NULL, 0,
	  "Do not trace the children that traced processes fork (traced by default)", 0 },
	{ "no-free-lists", OPT_NO_FREE_LISTS, NULL, 0,
	  "CPython 3.13+: leave an object taken from a free list where its memory "
	  "was allocated (tracemalloc moves it to where the object is made, and so "
	  "do we by default: one kernel entry per such object with --bpf-walk)", 0 },
	{ "recorder", OPT_RECORDER, NULL, 0,
	  "Exact mode without a kernel entry per allocation (the default where exact): "
	  "the injected page walks the stack and records each event in a ring this "
	  "tracer drains (forked children are followed the BPF way); with --all, exact "
	  "so (it samples by default)", 0 },
	{ "bpf-walk", OPT_BPF_WALK, NULL, 0,
	  "Exact mode with each event's stack walked by BPF in the kernel: a kernel "
	  "entry per allocation (the recorder's fallback)", 0 },
	{ "ring-slots", OPT_RING_SLOTS, "N", 0,
	  "The recorder's ring: events it holds, a power of two (default: 8 MiB of slots)", 0 },
	{ "frames", OPT_FRAMES, "N", 0, "Frames per traceback, 1-128 (default 1)", 0 },
	{ "duration", OPT_DURATION, "SECONDS", 0, "Stop after this long", 0 },
	{ "interval", OPT_INTERVAL, "SECONDS", 0, "Print a report this often", 0 },
	{ "compare", OPT_COMPARE, "FILE", OPTION_ARG_OPTIONAL,
	  "Print differences: from the first report, or from the snapshot FILE "
	  "(--compare=FILE)", 0 },
	{ "leaks", OPT_LEAKS, "N", OPTION_ARG_OPTIONAL,
	  "With --interval: rank the lines that grew steadily over the last N "
	  "intervals (--leaks=N, default 10), with their oldest blocks' age", 0 },
	{ "reset-peak", OPT_RESET_PEAK, NULL, 0,
	  "Reset the peak after each --interval report (tracemalloc.reset_peak())", 0 },
	{ "output", 'o', "FILE", 0,
	  "Write a snapshot at the end: a tracemalloc pickle, or a pprof heap profile if "
	  "FILE ends in .pb.gz or .pprof. DIR/: one pprof file per process and report, "
	  "named heap-PID-TIME", 0 },
	{ "output-format", OPT_OUTPUT_FORMAT, "FORMAT", 0,
	  "Format of -o whatever its name: pickle, pprof, flamegraph (HTML), svg or folded", 0 },
	{ "keep", OPT_KEEP, "N", 0, "-o DIR/: keep the N newest files per process (default all)", 0 },
	{ "serve", OPT_SERVE, "[ADDR:]PORT", 0,
	  "Serve HTTP: /metrics (Prometheus), /debug/pprof/heap (pprof), /snapshot?pid=N "
	  "(default address 127.0.0.1; port 0 picks one)", 0 },
	{ "metrics-top", OPT_METRICS_TOP, "K", 0,
	  "Lines per process in /metrics, the rest summed in one series (default 10; 0 none)", 0 },
	{ "pickle-version", OPT_PICKLE, "X.Y", 0,
	  "Snapshot layout for this Python's tracemalloc (default: the target's)", 0 },
	{ "max-blocks", OPT_MAX_BLOCKS, "N", 0,
	  "Most live blocks tracked per process (default 268435456): its map starts "
	  "with a 64th of N entries (at least 131072, at most 1048576) and doubles "
	  "as it fills; about 100 bytes per block, allocated as needed, and 16 per "
	  "entry of the map's size", 0 },
	{ "max-stacks", OPT_MAX_STACKS, "N", 0,
	  "Distinct tracebacks (default 65536; 16 + 8 x frames bytes each)", 0 },
	{ "control", OPT_CONTROL, NULL, 0,
	  "Read commands on stdin (snapshot PATH [X.Y], traced, reset-peak, clear, limit, stop); "
	  "one reply line each on stdout", 0 },
	{ "total-frames", OPT_TOTAL_FRAMES, NULL, 0,
	  "Count every frame of each stack for total_nframe, as tracemalloc does "
	  "(one more read per frame beyond --frames; default: stop at --frames)", 0 },
	{ "sample", OPT_SAMPLE, "BYTES", 0,
	  "Sample by bytes: one sample per BYTES allocated on average (suffix k, M; "
	  "0: every allocation, exact). Default: exact with -p, 512k with --all", 0 },
	{ "sample-set", OPT_SAMPLE_SET, "N", 0,
	  "Sampled blocks held at once in the target, a power of two, 16-524288 "
	  "(default 65536: 512 KiB of its memory at most)", 0 },
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
	case OPT_NO_FOLLOW_FORKS:
		env.no_follow_forks = true;
		break;
	case OPT_NO_FREE_LISTS:
		env.no_free_lists = true;
		break;
	case OPT_RECORDER:
		env.recorder = true;
		break;
	case OPT_BPF_WALK:
		env.bpf_walk = true;
		break;
	case OPT_RING_SLOTS:
		if (parse_num(arg, 16, 1L << 24, &v) || (v & (v - 1)))
			argp_error(state, "invalid --ring-slots: %s (a power of two, 16-%ld)", arg,
				   1L << 24);
		env.ring_slots = v;
		break;
	case OPT_PEAK:
		env.peak = true;
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
	case OPT_LEAKS:
		env.leaks = SERIES_WINDOW;
		if (arg && parse_num(arg, SERIES_LEAK_MIN, SERIES_WINDOW_MAX, &v))
			argp_error(state, "invalid --leaks: %s (intervals, %d to %d)", arg,
				   SERIES_LEAK_MIN, SERIES_WINDOW_MAX);
		if (arg)
			env.leaks = v;
		break;
	case 'o':
		env.out.path = arg;
		break;
	case OPT_OUTPUT_FORMAT:
		v = output__parse_format(arg);
		if (v < 0)
			argp_error(state, "invalid --output-format: %s (pickle, pprof, flamegraph, svg or folded)", arg);
		env.out.format = v;
		break;
	case OPT_KEEP:
		if (parse_num(arg, 1, 1000000, &v))
			argp_error(state, "invalid --keep: %s (a number of files, 1 or more)", arg);
		env.out.keep = v;
		break;
	case OPT_SERVE:
		if (http__parse_addr(arg, &env.http))
			argp_error(state, "invalid --serve: %s ([ADDR:]PORT, e.g. 127.0.0.1:9464)", arg);
		env.serve = arg;
		break;
	case OPT_METRICS_TOP:
		if (parse_num(arg, 0, 1000, &v))
			argp_error(state, "invalid --metrics-top: %s (0 to 1000)", arg);
		env.metrics_top = v;
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
	case OPT_SAMPLE:
		if (parse_size(arg, 0, 1LL << 40, &v))
			argp_error(state, "invalid --sample: %s (bytes, e.g. 512k; 0 for exact)", arg);
		env.sample = v;
		break;
	case OPT_SAMPLE_SET:
		if (parse_num(arg, 16, PYTM_SET_MAX_BUCKETS * PYTM_SET_WAYS, &v) || (v & (v - 1)))
			argp_error(state, "invalid --sample-set: %s (a power of two, 16-%d)", arg,
				   PYTM_SET_MAX_BUCKETS * PYTM_SET_WAYS);
		env.set_slots = v;
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
		if (env.out.path)
			output__init(&env.out);
		if (env.out.path && !env.out.dir && (env.all || env.npids > 1))
			argp_error(state, "-o FILE takes exactly one -p (-o DIR/ takes any)");
		if (env.out.keep && !env.out.dir)
			argp_error(state, "--keep goes with -o DIR/");
		if (env.serve && env.control)
			argp_error(state, "--serve and --control exclude each other");
		if (env.sample < 0)
			env.sample = env.all && !env.no_inject && !env.recorder && !env.bpf_walk ?
				     ALL_SAMPLE_DEFAULT : 0;
		if (env.top && (env.control || env.compare || env.leaks || env.peak ||
				env.cli.format != REPORT_FORMAT_TEXT))
			argp_error(state, "top is a view of its own: not with --control, --compare, "
				   "--leaks, --peak or --format");
		if (env.top && !env.interval)
			env.interval = 1;
		if (env.leaks && !env.interval)
			argp_error(state, "--leaks needs --interval (growth is judged per interval)");
		if (env.leaks && env.compare)
			argp_error(state, "--leaks and --compare exclude each other");
		if (env.sample && env.no_inject)
			argp_error(state, "--sample needs the redirected allocator: not with --no-inject");
		if (env.recorder && (env.sample || env.no_inject || env.bpf_walk))
			argp_error(state, "--recorder is exact mode in the injected page: not with "
				   "--sample, --no-inject or --bpf-walk");
		if (env.bpf_walk && (env.sample || env.no_inject))
			argp_error(state, "--bpf-walk is exact mode through the redirected "
				   "allocator: not with --sample or --no-inject");
		env.record = !env.sample && !env.no_inject && !env.bpf_walk;
		if (env.ring_slots && !env.record)
			argp_error(state, "--ring-slots goes with the recorder: not with --sample, "
				   "--no-inject or --bpf-walk");
		/* Last: the only check that changes something (makes DIR/). */
		if (output__prepare(&env.out))
			argp_error(state, "invalid -o: %s", error__last());
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

/* --recorder's ring: 8 MiB of slots, a power of two of them. */
static unsigned int ring_slots_for(int frames)
{
	size_t slot = PYTM_REC_SLOT_SIZE(frames);
	unsigned int n = 1024;

	while ((size_t)n * 2 * slot <= (8u << 20))
		n *= 2;
	return n;
}

static volatile sig_atomic_t exiting;

static void sig_handler(int sig)
{
	exiting = 1;
}

/* The run: the session, and what the reports compare to. */
static struct state {
	struct session *s;
	struct snapshot *compare_base;	/* --compare=FILE */
	struct http *http;		/* --serve */
	struct control ctl;		/* --control */
	struct series *series;		/* --leaks: each line's size, round by round */
	struct top *top;		/* pytm-bpf top */
} st;

/* Sleep until the next round, or until a --control command arrives. */
static void wait_a_moment(void)
{
	struct pollfd pfd = { .fd = 0, .events = POLLIN };

	/* Keys of the top view wake it at once, as commands do. */
	poll(&pfd, env.control || top__fd(st.top) >= 0 ? 1 : 0, 100);
}

/* --peak: the set at the peak, after a process's last report, and its file. */
static int report_peak(struct tracee *tr)
{
	uint64_t peak_ns = 0;
	struct snapshot *s;
	int err = 0;

	s = session__peak_snapshot(st.s, tr, env.frames, &peak_ns);
	if (!s) {
		err = -errno;
		warn("cannot read the peak of process %d: %s", tr->pid, strerror(-err));
		return err;
	}
	if (!env.control && peak_ns) {
		struct sink_report r = {
			.snap = s, .o = &env.cli.opts, .tr = tr, .skel = st.s->skel,
			.peak_at = real_now() - (mono_now() - peak_ns / 1e9),
		};

		sink__gap(stdout, env.cli.format);
		err = sink__report(stdout, env.cli.format, &r);
	}
	if (env.out.path) {
		int werr = output__write_peak(&env.out, st.s, tr, s);

		err = err ?: werr;
	}
	snapshot__free(s);
	return err;
}

/* A report on one tracee; FINAL also writes -o. */
static int report_tracee(struct tracee *tr, bool final, bool header, bool exited)
{
	const struct report_opts *ro = &env.cli.opts;
	const struct snapshot *base;
	struct snapshot *s;
	int err = 0;

	s = session__snapshot(st.s, tr, env.frames);
	if (!s) {
		err = -errno;
		warn("cannot read the traces of process %d: %s", tr->pid, strerror(-err));
		return err;
	}
	base = env.compare_file ? st.compare_base : tr->baseline;
	if (st.series) {
		/* An exited process is ranked on the rounds it had. */
		if (!exited)
			err = series__add(st.series, s, &env.cli.opts, tr->pid);
		if (!err && !env.control) {
			struct sink_leaks r = {
				.se = st.series, .o = &env.cli.opts, .tr = tr, .skel = st.s->skel,
				.interval = env.interval, .header = header, .final = final,
				.exited = exited,
			};

			err = sink__leaks(stdout, env.cli.format, &r);
		}
		if (err)
			warn("cannot rank the growth of process %d: %s", tr->pid, strerror(-err));
	} else if (!env.control && !env.top) {
		/* Under --control, stdout carries only the replies; top, its view. */
		struct sink_report r = {
			.snap = s,
			.old = env.compare ? base : NULL,
			.old_name = env.compare_file ?: "first report",
			.o = ro,
			.tr = tr,
			.skel = st.s->skel,
			.header = header,
			.final = final,
			.exited = exited,
		};

		err = sink__report(stdout, env.cli.format, &r);
		if (err)
			warn("cannot print the report of process %d: %s", tr->pid,
			     strerror(-err));
	}
	if (env.out.path && !env.top) {
		/* A forked child that ended has had its final report. */
		int werr = output__write(&env.out, st.s, tr, s, final || exited);

		err = err ?: werr;
	}
	if (env.peak && (final || exited) && !err)
		err = report_peak(tr);
	/* --compare alone: the first report is what later ones compare to. */
	if (env.compare && !env.compare_file && !tr->baseline) {
		tr->baseline = s;
		s = NULL;
	}
	snapshot__free(s);
	if (!final && env.reset_peak)
		tracee__reset_peak(tr, st.s->skel);
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

	rows = calloc(st.s->ntracees + 1, sizeof(*rows));
	if (!rows)
		return;
	for (i = 0; i < st.s->ntracees; i++) {
		struct tracee *tr = &st.s->tracees[i];

		if (!tr->registered || tracee__stats(tr, st.s->skel, &p))
			continue;
		rows[n].tr = tr;
		rows[n].current = p.current;
		rows[n++].peak = p.peak;
	}
	qsort(rows, n, sizeof(*rows), cmp_current);
	sink__summary(stdout, env.cli.format, rows, n);
	free(rows);
}

/* Reports name their process: more than one -p, --all, or forks followed. */
static bool several(bool single)
{
	return !single || st.s->counts.forks > 0 || st.s->counts.execs > 0;
}

/* A process that exited: its last report, then it leaves the session. */
static void finish_tracee(struct tracee *tr)
{
	/* A forked child that ended before its attach: what it inherited first. */
	session__settle_one(st.s, tr);
	/* Its memory is gone: the event thread stops reading it first. */
	session__mute(st.s, tr);
	report_tracee(tr, false, true, true);
	sink__gap(stdout, env.cli.format);
	session__drop(st.s, tr);
}

/* The tracing line on stderr that scripts wait for. */
static void say_tracing(bool single)
{
	struct tracee *tr;
	int i, n, shown;

	if (single) {
		char rate[48] = "";

		tr = &st.s->tracees[0];
		if (tr->pr.sampled) {
			strcpy(rate, ", sampled: 1 per ");
			report__format_size(rate + strlen(rate), sizeof(rate) - strlen(rate),
					    (double)tr->sample_rate, false);
		} else if (tr->rec) {
			strcpy(rate, ", recorded in the target");
		}
		fprintf(stderr, "pytm-bpf: tracing pid %d (CPython %s, %s): %s%s%s%s, %d probes, %d frame%s\n",
			tr->pid, tr->version, tr->t.pymod,
			tr->pr.injected ? "allocator redirected (" : "plain probes",
			tr->pr.injected ? redirect__site_name(tr->pr.rd.site_kind) : "",
			tr->pr.injected ? " sites)" : "", rate,
			tr->pr.nlinks, env.frames, env.frames > 1 ? "s" : "");
		return;
	}
	/* Slots of processes that went away while being attached are free. */
	for (i = 0, n = 0; i < st.s->ntracees; i++)
		n += st.s->tracees[i].registered;
	fprintf(stderr, "pytm-bpf: tracing %d process%s", n, n == 1 ? "" : "es");
	for (i = 0, shown = 0; i < st.s->ntracees; i++)
		if (st.s->tracees[i].registered)
			fprintf(stderr, "%s%d", shown++ ? ", " : " (pids ", st.s->tracees[i].pid);
	fprintf(stderr, "%s%s, %d frame%s\n", n ? ")" : "",
		env.all ? ", following new ones" : "", env.frames,
		env.frames > 1 ? "s" : "");
}

/*
 * One round of the main loop: exits, new processes, --duration, --control,
 * --interval. True when the run is over. Called with the session's front
 * lock held.
 */
static bool round_(bool single, double start, double *next_report)
{
	static double next_tidy;
	struct tracee *tr;
	bool stop = false;
	int i;

	/* First: a forked child that ended already gets what it inherited. */
	session__poll_pending(st.s);
	for (i = 0; i < st.s->ntracees; i++) {
		tr = &st.s->tracees[i];
		if (tr->registered && tr->execed) {
			/* Its report, then the program it runs now, if it is a Python. */
			pid_t pid = tr->pid;

			st.s->counts.execs++;
			/* A child forked to exec at once (subprocess) is no news. */
			if (tr->ppid && !tr->tried)
				session__forget(st.s, tr);
			else
				finish_tracee(tr);
			session__retry(st.s, pid);
			continue;
		}
		if (!tr->registered || !tracee__gone(tr))
			continue;
		/* -p PID: its end is the run's; a child it forked just leaves. */
		if (single && !tr->ppid) {
			warn("process %d exited; reporting what it had allocated", tr->pid);
			return true;
		}
		finish_tracee(tr);
	}
	if (!single && !env.all && env.npids) {
		/* -p several times: done when all are gone. */
		for (i = 0; i < st.s->ntracees && !st.s->tracees[i].registered; i++)
			;
		if (i == st.s->ntracees)
			return true;
	}
	if (env.peak && mono_now() >= next_tidy) {
		/* Blocks freed before the latest peak mark are kept for nothing. */
		for (i = 0; i < st.s->ntracees; i++)
			if (st.s->tracees[i].registered)
				tracee__peak_tidy(&st.s->tracees[i], st.s->skel);
		next_tidy = mono_now() + 2;
	}
	if (env.duration && mono_now() - start >= env.duration)
		return true;
	if (env.control)
		control__poll(&st.ctl, &stop);
	if (st.top)
		return stop || top__round(st.top);
	if (env.interval && mono_now() >= *next_report) {
		if (!env.control)
			sink__round(stdout, env.cli.format);
		if (st.series)
			series__begin(st.series, mono_now());
		for (i = 0; i < st.s->ntracees; i++) {
			if (st.s->tracees[i].registered)
				report_tracee(&st.s->tracees[i], false, several(single), false);
			if (!env.control)
				sink__gap(stdout, env.cli.format);
		}
		if (st.series)
			series__end(st.series);
		*next_report += env.interval;
	}
	return stop;
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
	struct sigaction sa = { .sa_handler = sig_handler };
	struct session_opts so;
	double start, next_report = 0;
	bool stop = false, single, front_held = false;
	int i, err;

	if (argc > 1 && !strcmp(argv[1], "report"))
		return report__main(argc - 1, argv + 1);
	if (argc > 1 && !strcmp(argv[1], "top")) {
		env.top = true;
		argc--;
		argv++;
	}
	argp_err_exit_status = 2;
	/* Messages say "pytm-bpf:", however the tool was started. */
	argv[0] = "pytm-bpf";
	err = argp_parse(&argp, argc, argv, 0, NULL, NULL);
	if (err)
		return 2;
	if ((env.compare || env.leaks) && report__format_is_graph(env.cli.format)) {
		fprintf(stderr, "pytm-bpf: --%s does not go with --format folded or "
			"flamegraph or svg\n", env.compare ? "compare" : "leaks");
		return 2;
	}
	pytm_verbose = env.verbose;
	/* A target's file names on a terminal: no control character gets through. */
	env.cli.opts.escape = isatty(STDOUT_FILENO);
	env.out.frames = env.frames;
	env.out.pickle = env.pickle;
	libbpf_set_print(libbpf_print_fn);
	single = !env.all && env.npids == 1;
	if (env.npids > env.max_procs)
		env.max_procs = env.npids;
	so = (struct session_opts){
		.max_procs = env.max_procs,
		.max_stacks = env.max_stacks,
		.follow_exec = env.all,
		.follow_forks = !env.no_follow_forks,
		.topts = {
			.frames = env.frames,
			.max_total = env.total_frames ? 1024 : env.frames,
			.max_blocks = env.max_blocks,
			.inject = !env.no_inject,
			.site_pref = env.site_pref,
			.empty_sites = env.bench_empty,
			.sample_rate = env.sample,
			.set_slots = env.set_slots,
			.follow_forks = !env.no_follow_forks,
			.free_lists = !env.no_free_lists,
			.record = env.record,
			.ring_slots = env.ring_slots ? env.ring_slots : ring_slots_for(env.frames),
			.peak_step = env.peak ? PEAK_STEP_PPM : 0,
			.overrides = env.overrides,
			.noverrides = env.noverrides,
		},
	};

	/* Stop cleanly on these from the start: the report is the point. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	if (env.leaks && !(st.series = series__new(env.leaks))) {
		err = -ENOMEM;
		goto cleanup;
	}
	if (env.compare_file && snapshot__load(env.compare_file, &st.compare_base)) {
		warn("%s: %s", env.compare_file, error__last());
		err = -EINVAL;
		goto cleanup;
	}
	/* Say what is wrong with the target before anything about BPF. */
	for (i = 0; i < env.npids; i++) {
		struct target t;

		err = target__open(&t, env.pids[i]);
		target__close(&t);
		if (err)
			goto cleanup;
	}
	err = session__open(&st.s, &so);
	if (err)
		goto cleanup;
	/*
	 * Listen before touching any target (a port in use is said first);
	 * requests wait for the front lock until the targets are attached.
	 */
	pthread_mutex_lock(&st.s->front);
	front_held = true;
	if (env.serve) {
		env.http.metrics_top = env.metrics_top;
		env.http.frames = env.frames;
		env.http.pickle = env.pickle;
		err = http__start(&st.http, st.s, &env.http);
		if (err)
			goto cleanup;
	}
	if (env.all)
		session__scan_all(st.s);
	for (i = 0; i < env.npids; i++) {
		err = session__add(st.s, env.pids[i], false);
		if (err)
			goto cleanup;
	}
	say_tracing(single);
	err = session__start_events(st.s);
	if (err)
		goto cleanup;
	if (env.control)
		st.ctl = (struct control){ .s = st.s, .tr = &st.s->tracees[0],
					   .frames = env.frames, .pickle = env.pickle };

	if (st.http)
		fprintf(stderr, "pytm-bpf: serving %s/metrics, /debug/pprof/heap, /snapshot?pid=N\n",
			http__url(st.http));
	if (env.top) {
		struct top_opts to = {
			.interval = env.interval, .frames = env.frames, .ro = &env.cli.opts,
			.out = &env.out, .pickle = env.pickle,
		};

		err = top__open(&st.top, st.s, &to);
		if (err) {
			warn("%s", error__last()[0] ? error__last() : strerror(-err));
			goto cleanup;
		}
	}
	pthread_mutex_unlock(&st.s->front);
	front_held = false;

	start = mono_now();
	if (env.interval)
		next_report = start + env.interval;
	while (!exiting && !stop) {
		wait_a_moment();
		/* The HTTP server reads the tracees between rounds. */
		pthread_mutex_lock(&st.s->front);
		stop = round_(single, start, &next_report);
		pthread_mutex_unlock(&st.s->front);
	}
	/* The view leaves the terminal first: what follows is plain text. */
	top__close(st.top);
	st.top = NULL;
	if (env.top)
		goto cleanup;
	/* Report first (events still flow, code objects are still read)... */
	pthread_mutex_lock(&st.s->front);
	session__settle(st.s);
	err = 0;
	if (st.series)
		series__begin(st.series, mono_now());
	for (i = 0; i < st.s->ntracees; i++) {
		if (!st.s->tracees[i].registered)
			continue;
		if (report_tracee(&st.s->tracees[i], true, several(single), false))
			err = -EIO;
		if (several(single))
			sink__gap(stdout, env.cli.format);
	}
	if (several(single) && !env.control)
		print_host_summary();
	fflush(stdout);
	pthread_mutex_unlock(&st.s->front);

cleanup:
	if (front_held)
		pthread_mutex_unlock(&st.s->front);
	top__close(st.top);
	/* ...then stop serving and reading events, and take the probes out. */
	http__stop(st.http);
	session__close(st.s);
	snapshot__free(st.compare_base);
	series__free(st.series);
	report__cli_free(&env.cli);
	return err ? 1 : 0;
}
