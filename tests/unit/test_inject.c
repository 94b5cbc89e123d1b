// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * inject: syscall injection and the memfd page, against real processes
 * (Debian's python3.11, pyenv's 3.11.7, forked C targets). Run as root.
 * Every target is started here and ended here, by its pid.
 * INJECT_VERBOSE=1 shows what the module logs.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/perf_event.h>
#include <linux/seccomp.h>
#include <grp.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>
#include "inject.h"
#include "unit.h"
#include "util.h"

#define DEBIAN_PY "/usr/bin/python3.11"

static char pyenv_py[512];

struct proc {
	pid_t pid;
	int in;			/* its stdin, ours to write */
	int out;		/* its stdout, ours to read */
	char buf[4096];
	size_t nbuf;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_until(double t)
{
	double d = t - now();
	struct timespec ts;

	if (d <= 0)
		return;
	ts.tv_sec = (time_t)d;
	ts.tv_nsec = (long)((d - ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Start FN(ARG) (a forked C target) or ARGV (exec) with piped stdin/stdout. */
static int spawn(struct proc *p, char *const argv[], int (*fn)(void *), void *arg)
{
	int in[2], out[2];

	memset(p, 0, sizeof(*p));
	p->pid = -1;
	if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
		return -errno;
	p->pid = fork();
	if (p->pid < 0)
		return -errno;
	if (p->pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		/* A forked target must not hold its own stdin open (no EOF). */
		close(in[1]);
		close(out[0]);
		if (fn)
			_exit(fn(arg));
		execv(argv[0], argv);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	p->in = in[1];
	p->out = out[0];
	return 0;
}

static int spawn_py(struct proc *p, const char *python, const char *script)
{
	char *argv[] = { (char *)python, "-u", "-c", (char *)script, NULL };

	return spawn(p, argv, NULL, NULL);
}

/* One line of P's stdout (without '\n') within TIMEOUT seconds; -1 if none. */
static int read_line(struct proc *p, char *line, size_t len, double timeout)
{
	double end = now() + timeout;
	struct pollfd pfd = { .fd = p->out, .events = POLLIN };
	char *nl;
	ssize_t n;
	size_t l;

	for (;;) {
		nl = memchr(p->buf, '\n', p->nbuf);
		if (nl) {
			l = nl - p->buf;
			snprintf(line, len, "%.*s", (int)l, p->buf);
			memmove(p->buf, nl + 1, p->nbuf - l - 1);
			p->nbuf -= l + 1;
			return 0;
		}
		if (now() >= end || p->nbuf == sizeof(p->buf))
			return -1;
		if (poll(&pfd, 1, (int)((end - now()) * 1000) + 1) <= 0)
			continue;
		n = read(p->out, p->buf + p->nbuf, sizeof(p->buf) - p->nbuf);
		if (n <= 0)
			return -1;
		p->nbuf += n;
	}
}

static void send_str(struct proc *p, const char *s)
{
	if (write(p->in, s, strlen(s)) != (ssize_t)strlen(s))
		fprintf(stderr, "write to pid %d: %s\n", p->pid, strerror(errno));
}

/* Wait for P to exit within TIMEOUT s (then kill it); its wait status. */
static int reap(struct proc *p, double timeout)
{
	double end = now() + timeout;
	int status = -1;
	pid_t r;

	if (p->pid <= 0)
		return -1;
	for (;;) {
		r = waitpid(p->pid, &status, WNOHANG);
		if (r == p->pid || (r < 0 && errno != EINTR))
			break;
		if (now() > end) {
			kill(p->pid, SIGKILL);
			waitpid(p->pid, &status, 0);
			status = -1;
			break;
		}
		usleep(5000);
	}
	p->pid = -1;
	close(p->in);
	close(p->out);
	return status;
}

static void stop_proc(struct proc *p)
{
	if (p->pid > 0)
		kill(p->pid, SIGKILL);
	reap(p, 5);
}

static char thread_state(pid_t pid)
{
	char path[64], buf[512], *q;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	q = strrchr(buf, ')');
	return q ? q[2] : 0;
}

/* Wait until PID's leader sleeps in syscall NR. */
static bool wait_in_syscall(pid_t pid, long nr, double timeout)
{
	double end = now() + timeout;
	char path[64], buf[256];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/syscall", pid);
	while (now() < end) {
		fd = open(path, O_RDONLY);
		if (fd < 0)
			return false;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0) {
			buf[n] = '\0';
			if (buf[0] != 'r' && strtol(buf, NULL, 10) == nr &&
			    thread_state(pid) == 'S')
				return true;
		}
		usleep(2000);
	}
	return false;
}

static int count_dir(const char *path)
{
	struct dirent *de;
	int n = 0;
	DIR *d;

	d = opendir(path);
	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static int count_fds(pid_t pid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	return count_dir(path);
}

/* Lines of /proc/PID/maps that map "/memfd:NAME (deleted)"; PERMS of the last. */
static int count_memfd_maps(pid_t pid, const char *name, char *perms)
{
	char path[64], line[512], want[300];
	int n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	snprintf(want, sizeof(want), " /memfd:%s (deleted)\n", name);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		size_t l = strlen(line), w = strlen(want);

		if (l >= w && !strcmp(line + l - w, want)) {
			n++;
			if (perms)
				sscanf(line, "%*s %7s", perms);
		}
	}
	fclose(f);
	return n;
}

/* The target's view of LEN bytes at ADDR, through /proc/PID/mem. */
static bool target_sees(pid_t pid, uint64_t addr, const void *want, size_t len)
{
	char path[64], got[256];
	ssize_t n;
	int fd;

	if (len > sizeof(got))
		return false;
	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return false;
	n = pread(fd, got, len, (off_t)addr);
	close(fd);
	return n == (ssize_t)len && !memcmp(got, want, len);
}

/* The page's two paths reach the memfd itself. */
static void check_paths(const struct inject_page *pg)
{
	struct stat st;
	int fd;

	fd = open(pg->path, O_RDONLY);
	CHECK(fd >= 0 && !fstat(fd, &st) && st.st_ino == pg->ino &&
	      st.st_dev == pg->dev, "%s: %s", pg->path, strerror(errno));
	if (fd >= 0)
		close(fd);
	fd = open(pg->map_path, O_RDONLY);
	CHECK(fd >= 0 && !fstat(fd, &st) && st.st_ino == pg->ino,
	      "%s: %s", pg->map_path, strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* ---- 1. a target blocked in read() on a pipe ---- */

static const char read_py[] =
	"import os\n"
	"print('ready', flush=True)\n"
	"d = os.read(0, 100)\n"
	"print('got', d.decode(), flush=True)\n";

/* Arithmetic in user code for 1.5 s; prints whether the sums came out right. */
static const char busy_py_long[] =
	"import time\n"
	"print('ready', flush=True)\n"
	"t = time.monotonic(); ok = True\n"
	"while time.monotonic() - t < 1.5:\n"
	"    x = 0\n"
	"    for i in range(1000): x += i * 3\n"
	"    y = 1.5\n"
	"    for i in range(100): y = y * 1.0001 + 0.5\n"
	"    ok = ok and x == 1498500 and abs(y - 51.7634) < 0.001\n"
	"print(ok, flush=True)\n";

static void test_read_pipe(void)
{
	static const unsigned char code[] = { 0x0f, 0x1f, 0x44, 0x00, 0x00, 0xc3,
					      'p', 'y', 't', 'm' };
	struct inject_page pg = {0};
	struct inject_session *s = NULL;
	char line[256], perms[8] = "";
	long nr = 0, rax = 0;
	struct proc p;
	double t, held = 0;
	int err;

	if (spawn_py(&p, DEBIAN_PY, read_py) || read_line(&p, line, sizeof(line), 10)) {
		CHECK(0, "cannot start %s", DEBIAN_PY);
		stop_proc(&p);
		return;
	}
	CHECK(wait_in_syscall(p.pid, 0, 5), "pid %d never blocked in read()", p.pid);
	CHECK(inject__create_page(p.pid, "bad\nname", 4096, &pg) == -EINVAL,
	      "a name with a newline accepted");
	t = now();
	err = inject__attach(p.pid, &s);
	CHECK(!err, "attach: %s", error__last());
	if (!err) {
		inject__stopped_state(s, &nr, &rax);
		CHECK(nr == 0 && rax == -512, "stopped in syscall %ld rax %ld, "
		      "not read() with -ERESTARTSYS", nr, rax);
		err = inject__session_create_page(s, "pytm-t1", 100, 0, &pg);
		CHECK(!err, "create: %s", error__last());
		CHECK(inject__detach(s) == 0, "detach: %s", error__last());
	}
	held = now() - t;
	t = now();
	if (!err) {
		CHECK(pg.len == 4096 && pg.addr && !(pg.addr & 4095) && pg.fd >= 0,
		      "page %#llx len %zu fd %d", (unsigned long long)pg.addr,
		      pg.len, pg.fd);
		CHECK(count_memfd_maps(p.pid, "pytm-t1", perms) == 1 &&
		      !strcmp(perms, "r-xp"), "maps: %s", perms);
		CHECK(inject__write_page(&pg, 0, code, sizeof(code)) == 0, "write: %s",
		      error__last());
		CHECK(inject__write_page(&pg, 4090, code, 10) == -EINVAL,
		      "write past the end accepted");
		CHECK(target_sees(p.pid, pg.addr, code, sizeof(code)),
		      "the target does not see the bytes written");
		check_paths(&pg);
	}
	CHECK(wait_in_syscall(p.pid, 0, 2), "pid %d no longer blocked in read()",
	      p.pid);
	sleep_until(t + 1.0);
	send_str(&p, "data-after-inject");
	CHECK(read_line(&p, line, sizeof(line), 5) == 0 &&
	      !strcmp(line, "got data-after-inject"), "target said '%s'", line);
	CHECK(reap(&p, 5) == 0, "target did not exit cleanly");
	printf("read: stopped in syscall %ld with rax %ld; page made in %.0f us "
	       "(attach to detach); the read returned the data sent 1 s later\n",
	       nr, rax, held * 1e6);
	inject__page_close(&pg);
}

/* ---- 2. time.sleep(2), with three injections during it ---- */

static const char sleep_py[] =
	"import ctypes, time\n"
	"v = ctypes.c_uint64(0)\n"
	"print(ctypes.addressof(v), flush=True)\n"
	"t = time.monotonic()\n"
	"time.sleep(2)\n"
	"print('%.6f %x' % (time.monotonic() - t, v.value), flush=True)\n";

static void test_sleep(void)
{
	struct inject_page pg = {0}, pg2 = {0};
	struct inject_session *s;
	char line[256];
	unsigned long long addr = 0, val = 0;
	long nr[2] = { 0, 0 }, rax[2] = { 0, 0 };
	uint64_t got = 0;
	double t0, slept = 0;
	int err;

	struct proc p;

	if (!pyenv_py[0]) {
		printf("sleep: SKIP, no pyenv 3.11.7\n");
		return;
	}
	if (spawn_py(&p, pyenv_py, sleep_py) ||
	    read_line(&p, line, sizeof(line), 10)) {
		CHECK(0, "cannot start %s", pyenv_py);
		stop_proc(&p);
		return;
	}
	t0 = now();
	addr = strtoull(line, NULL, 10);
	CHECK(wait_in_syscall(p.pid, 230, 5), "never in clock_nanosleep");
	/* ~0.5 s: a page. */
	sleep_until(t0 + 0.5);
	err = inject__attach(p.pid, &s);
	CHECK(!err, "attach: %s", error__last());
	if (!err) {
		inject__stopped_state(s, &nr[0], &rax[0]);
		CHECK(inject__session_create_page(s, "pytm-t2", 4096, 0, &pg) == 0,
		      "create: %s", error__last());
		inject__detach(s);
	}
	/* ~1.0 s: the single store, in its own session. */
	sleep_until(t0 + 1.0);
	CHECK(inject__write_u64(p.pid, addr, 0x1122334455667788ULL) == 0,
	      "write_u64: %s", error__last());
	CHECK(inject__read_u64(p.pid, addr, &got) == 0 && got == 0x1122334455667788ULL,
	      "read_u64: %#llx", (unsigned long long)got);
	CHECK(inject__write_u64(p.pid, addr + 4, 1) == -EINVAL,
	      "unaligned store accepted");
	CHECK(inject__read_u64(p.pid, addr + 1, &got) == -EINVAL,
	      "unaligned read accepted");
	if (pg.pid) {
		err = inject__write_u64(p.pid, pg.addr, 1);
		CHECK(err == -EFAULT, "store into the r-x page: %d (%s)", err,
		      error__last());
	}
	/* ~1.5 s: find the page again, and inject once more. */
	sleep_until(t0 + 1.5);
	CHECK(inject__find_page(p.pid, "pytm-t2", &pg2) == 0 && pg2.addr == pg.addr,
	      "find: %s", error__last());
	err = inject__attach(p.pid, &s);
	CHECK(!err, "attach: %s", error__last());
	if (!err) {
		inject__stopped_state(s, &nr[1], &rax[1]);
		CHECK(inject__store_u64(s, addr, 0xfeedULL) == 0, "store: %s",
		      error__last());
		inject__detach(s);
	}
	CHECK(read_line(&p, line, sizeof(line), 5) == 0 &&
	      sscanf(line, "%lf %llx", &slept, &val) == 2, "target said '%s'", line);
	CHECK(slept >= 2.0 && slept < 2.5, "slept %.6f s", slept);
	CHECK(val == 0xfeed, "value %#llx", val);
	CHECK(reap(&p, 5) == 0, "target did not exit cleanly");
	printf("sleep: stops in syscall %ld/%ld with rax %ld/%ld; time.sleep(2) "
	       "lasted %.6f s across 3 injections\n", nr[0], nr[1], rax[0],
	       rax[1], slept);
	inject__page_close(&pg);
	inject__page_close(&pg2);
}

/* A C target in a relative nanosleep(2 s): the kernel's restart_block path. */
static int nanosleep_main(void *arg)
{
	struct timespec req = { 2, 0 };
	double t;
	int r;

	printf("ready\n");
	fflush(stdout);
	t = now();
	r = nanosleep(&req, NULL);
	printf("%d %.6f\n", r, now() - t);
	fflush(stdout);
	return 0;
}

static void test_nanosleep(void)
{
	struct inject_page pg = {0};
	struct inject_session *s;
	long nr[2] = { 0, 0 }, rax[2] = { 0, 0 };
	double t0, slept = 0;
	char line[256];
	struct proc p;
	int r = -1, i;

	if (spawn(&p, NULL, nanosleep_main, NULL) ||
	    read_line(&p, line, sizeof(line), 5)) {
		CHECK(0, "cannot start a C target");
		stop_proc(&p);
		return;
	}
	t0 = now();
	CHECK(wait_in_syscall(p.pid, SYS_clock_nanosleep, 5), "never asleep");
	for (i = 0; i < 2; i++) {
		sleep_until(t0 + 0.5 + 0.5 * i);
		if (inject__attach(p.pid, &s)) {
			CHECK(0, "attach: %s", error__last());
			continue;
		}
		inject__stopped_state(s, &nr[i], &rax[i]);
		CHECK(i ? inject__store_u64(s, (uintptr_t)&pg.addr, 7) == 0 :
		      inject__session_create_page(s, "pytm-t2c", 4096, 0, &pg) == 0,
		      "inject: %s", error__last());
		inject__detach(s);
	}
	CHECK(read_line(&p, line, sizeof(line), 5) == 0 &&
	      sscanf(line, "%d %lf", &r, &slept) == 2, "target said '%s'", line);
	CHECK(r == 0 && slept >= 2.0 && slept < 2.5, "nanosleep %d after %.6f s",
	      r, slept);
	/* The second stop is in restart_syscall, which the first one set up. */
	CHECK(nr[0] == SYS_clock_nanosleep && rax[0] == -516 &&
	      nr[1] == SYS_restart_syscall && rax[1] == -516,
	      "stops: syscall %ld rax %ld, then %ld rax %ld", nr[0], rax[0],
	      nr[1], rax[1]);
	CHECK(reap(&p, 5) == 0, "target did not exit cleanly");
	printf("nanosleep: stops in syscall %ld then %ld, rax %ld; the relative "
	       "2 s sleep lasted %.6f s\n", nr[0], nr[1], rax[0], slept);
	inject__page_close(&pg);
}

/* ---- epoll_wait: a call that a stop ends with EINTR ---- */

static void *sleeper(void *arg)
{
	sleep(30);
	return NULL;
}

static int epoll_main(void *arg)
{
	struct epoll_event ev;
	pthread_t th;
	double t;
	int ep = epoll_create1(0), r, e;

	if (arg)
		pthread_create(&th, NULL, sleeper, NULL);
	printf("ready\n");
	fflush(stdout);
	t = now();
	r = epoll_wait(ep, &ev, 1, 2000);
	e = errno;
	printf("%d %d %.6f\n", r, r < 0 ? e : 0, now() - t);
	fflush(stdout);
	return 0;
}

static const char epoll_py[] =
	"import select, time\n"
	"ep = select.epoll()\n"
	"print('ready', flush=True)\n"
	"t = time.monotonic()\n"
	"r = ep.poll(2)\n"
	"print(len(r), '%.6f' % (time.monotonic() - t), flush=True)\n";

static void test_epoll(void)
{
	long nr = 0, rax = 0;
	struct inject_session *s;
	int r, e, n, mode;
	double waited;
	char line[256];
	struct proc p;

	for (mode = 0; mode < 3; mode++) {
		if ((mode < 2 ? spawn(&p, NULL, epoll_main, (void *)(long)mode) :
		     spawn_py(&p, DEBIAN_PY, epoll_py)) ||
		    read_line(&p, line, sizeof(line), 10)) {
			CHECK(0, "cannot start an epoll target");
			stop_proc(&p);
			return;
		}
		CHECK(wait_in_syscall(p.pid, SYS_epoll_wait, 5) ||
		      wait_in_syscall(p.pid, SYS_epoll_pwait, 1), "never in epoll");
		usleep(mode == 1 ? 500000 : 300000);
		if (inject__attach(p.pid, &s) == 0) {
			inject__stopped_state(s, &nr, &rax);
			inject__detach(s);
		} else {
			CHECK(0, "attach: %s", error__last());
		}
		r = e = n = -1;
		waited = 0;
		if (mode < 2) {
			CHECK(read_line(&p, line, sizeof(line), 5) == 0 &&
			      sscanf(line, "%d %d %lf", &r, &e, &waited) == 3,
			      "target said '%s'", line);
		} else {
			CHECK(read_line(&p, line, sizeof(line), 5) == 0 &&
			      sscanf(line, "%d %lf", &n, &waited) == 2,
			      "target said '%s'", line);
		}
		if (mode == 0) {
			/* The limit, shown: one thread, and it sees EINTR. */
			CHECK(r == -1 && e == EINTR && nr == SYS_epoll_wait && rax == -EINTR,
			      "epoll_wait %d errno %d, stop in %ld rax %ld", r, e, nr, rax);
			printf("epoll: a lone C thread in epoll_wait(2000) got EINTR "
			       "after %.6f s (stop showed rax %ld)\n", waited, rax);
		} else if (mode == 1) {
			/* Another thread takes the stop: the wait is untouched. */
			CHECK(r == 0 && waited >= 2.0 && waited < 2.5 &&
			      nr == SYS_clock_nanosleep,
			      "epoll_wait %d after %.6f s; stopped thread in %ld", r,
			      waited, nr);
			printf("epoll: with a second thread asleep, that thread was "
			       "stopped (syscall %ld); epoll_wait timed out after "
			       "%.6f s\n", nr, waited);
		} else {
			CHECK(n == 0 && waited >= 2.0 && waited < 2.5,
			      "python epoll.poll(2): %d after %.6f s", n, waited);
			printf("epoll: python's epoll.poll(2) retried the EINTR "
			       "(PEP 475) and lasted %.6f s\n", waited);
		}
		CHECK(reap(&p, 5) == 0, "epoll target did not exit cleanly");
	}
}

/* ---- 3. a lock wait with a timeout ---- */

static const char lock_py[] =
	"import threading, time\n"
	"l = threading.Lock(); held = threading.Event()\n"
	"def hold():\n"
	"    l.acquire(); held.set(); time.sleep(30)\n"
	"threading.Thread(target=hold, daemon=True).start()\n"
	"held.wait()\n"
	"print('ready', flush=True)\n"
	"t = time.monotonic()\n"
	"r = l.acquire(timeout=2)\n"
	"print(r, '%.6f' % (time.monotonic() - t), flush=True)\n";

static void test_lock(void)
{
	struct inject_page pg = {0};
	struct inject_session *s;
	char line[256], res[16] = "";
	long nr = 0, rax = 0;
	double t0, waited = 0;
	struct proc p;
	int i;

	if (spawn_py(&p, DEBIAN_PY, lock_py) ||
	    read_line(&p, line, sizeof(line), 10)) {
		CHECK(0, "cannot start %s", DEBIAN_PY);
		stop_proc(&p);
		return;
	}
	t0 = now();
	CHECK(wait_in_syscall(p.pid, 202, 5), "never in futex");
	for (i = 0; i < 3; i++) {
		sleep_until(t0 + 0.4 + 0.5 * i);
		if (inject__attach(p.pid, &s)) {
			CHECK(0, "attach: %s", error__last());
			continue;
		}
		if (i == 0) {
			inject__stopped_state(s, &nr, &rax);
			CHECK(inject__session_create_page(s, "pytm-t3", 4096, 0,
							  &pg) == 0,
			      "create: %s", error__last());
		} else {
			CHECK(inject__syscall(s, SYS_getpid, NULL, &rax) == 0 &&
			      rax == p.pid, "getpid: %ld", rax);
		}
		inject__detach(s);
	}
	CHECK(read_line(&p, line, sizeof(line), 5) == 0 &&
	      sscanf(line, "%15s %lf", res, &waited) == 2, "target said '%s'", line);
	CHECK(!strcmp(res, "False") && waited >= 2.0 && waited < 2.5,
	      "acquire returned %s after %.6f s", res, waited);
	CHECK(reap(&p, 5) == 0, "target did not exit cleanly");
	printf("lock: stopped in syscall %ld; acquire(timeout=2) returned %s "
	       "after %.6f s across 3 injections\n", nr, res, waited);
	inject__page_close(&pg);
}

/* ---- 4. 50 create/find/close cycles ---- */

static void test_cycles(void)
{
	int fds, ours, created = 0, found = 0, i, err;
	struct inject_page pg;
	unsigned char pat[16];
	char line[256], perms[8] = "";
	struct proc p;
	double t;

	if (spawn_py(&p, DEBIAN_PY, read_py) || read_line(&p, line, sizeof(line), 10)) {
		CHECK(0, "cannot start %s", DEBIAN_PY);
		stop_proc(&p);
		return;
	}
	CHECK(wait_in_syscall(p.pid, 0, 5), "never blocked in read()");
	fds = count_fds(p.pid);
	ours = count_fds(getpid());
	t = now();
	for (i = 0; i < 50; i++) {
		err = inject__find_page(p.pid, "pytm-t4", &pg);
		if (err == -ENOENT) {
			err = inject__create_page(p.pid, "pytm-t4", 8192, &pg);
			created += !err;
		} else {
			found += !err;
		}
		CHECK(!err, "cycle %d: %s", i, error__last());
		if (err)
			break;
		memset(pat, i, sizeof(pat));
		CHECK(inject__write_page(&pg, 4096 + i * 16, pat, sizeof(pat)) == 0,
		      "write: %s", error__last());
		CHECK(target_sees(p.pid, pg.addr + 4096 + i * 16, pat, sizeof(pat)),
		      "cycle %d: the target does not see the bytes", i);
		inject__page_close(&pg);
	}
	t = now() - t;
	CHECK(created == 1 && found == 49, "created %d, found %d", created, found);
	CHECK(count_fds(p.pid) == fds, "target fds %d, were %d", count_fds(p.pid), fds);
	CHECK(count_fds(getpid()) == ours, "our fds %d, were %d",
	      count_fds(getpid()), ours);
	CHECK(count_memfd_maps(p.pid, "pytm-t4", perms) == 1 && !strcmp(perms, "r-xp"),
	      "%d mappings of pytm-t4", count_memfd_maps(p.pid, "pytm-t4", NULL));
	/* A session holds the page's lock: a second one is turned away. */
	if (inject__find_page(p.pid, "pytm-t4", &pg) == 0) {
		struct inject_session *s;
		int fd = open(pg.map_path, O_RDONLY);

		CHECK(fd >= 0 && flock(fd, LOCK_EX) == 0, "flock: %s", strerror(errno));
		err = inject__attach(p.pid, &s);
		CHECK(err == -EBUSY && strstr(error__last(), "another tracer"),
		      "attach with the page locked: %d %s", err, error__last());
		printf("cycles: page locked elsewhere: %s\n", error__last());
		close(fd);
		err = inject__attach(p.pid, &s);
		CHECK(!err, "attach: %s", error__last());
		inject__detach(s);
		inject__page_close(&pg);
	}
	send_str(&p, "x");
	CHECK(read_line(&p, line, sizeof(line), 5) == 0 && !strcmp(line, "got x"),
	      "target said '%s'", line);
	CHECK(reap(&p, 5) == 0, "target did not exit cleanly");
	printf("cycles: 1 created + 49 found in %.1f ms; target fds %d before and "
	       "after\n", t * 1000, fds);
}

/* ---- 5. the tracer is killed mid-session ---- */

enum {
	KILL_AT_STOP,		/* stopped, nothing done */
	KILL_BETWEEN_CALLS,	/* after a call, registers back */
	KILL_AFTER_PAGE,	/* after making a page (the session goes on) */
	KILL_REGS_SET,		/* registers set for a call, not yet run */
	KILL_AT_ENTRY,		/* at the call's syscall-entry stop */
	KILL_AT_EXIT,		/* at its syscall-exit stop, registers not back */
	KILL_NWHEN
};

static const char *kill_what[] = {
	"at the first stop", "between two calls", "after making the page",
	"with a call's registers set", "at a call's entry", "at a call's exit",
};

/* Where the page goes (0: anywhere). */
static uint64_t page_hint;

/* An address 16 MiB past the end of PID's libc text (0 if none). */
static uint64_t after_libc(pid_t pid)
{
	unsigned long long start, end;
	char path[64], line[512];
	uint64_t hint = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "/libc.so") && sscanf(line, "%llx-%llx", &start,
							&end) == 2)
			hint = end + (16 << 20);
	fclose(f);
	return hint;
}

/*
 * In a forked tracer: attach, go as far as WHEN says, tell the site it
 * uses, then wait to be killed. The last three do by hand what
 * inject__syscall does, to be killed at a precise point inside a call.
 */
static void tracer_child(pid_t target, int when, int tell)
{
	struct user_regs_struct r;
	struct inject_session *s;
	struct inject_page pg;
	uint64_t site;
	long ret;
	int st, i;

	if (inject__attach(target, &s))
		_exit(1);
	if (when == KILL_BETWEEN_CALLS &&
	    (inject__syscall(s, SYS_getpid, NULL, &ret) || ret != target))
		_exit(2);
	if (when == KILL_AFTER_PAGE &&
	    inject__session_create_page(s, "pytm-t5", 4096, page_hint, &pg))
		_exit(3);
	site = inject__site(s);
	if (when >= KILL_REGS_SET) {
		if (ptrace(PTRACE_GETREGS, target, 0, &r))
			_exit(4);
		r.rip = site;
		r.rax = SYS_getpid;
		r.orig_rax = -1;
		if (ptrace(PTRACE_SETREGS, target, 0, &r))
			_exit(5);
		for (i = KILL_REGS_SET; i < when; i++)
			if (ptrace(PTRACE_SYSCALL, target, 0, 0) ||
			    waitpid(target, &st, __WALL) != target)
				_exit(6);
	}
	if (write(tell, &site, sizeof(site)) != sizeof(site))
		_exit(7);
	for (;;)
		pause();
}

/* Run tracer_child(WHEN) on P, kill it when it is there; the site it used. */
static uint64_t kill_tracer(struct proc *p, int when)
{
	uint64_t site = 0;
	int tell[2], status;
	pid_t child;

	if (pipe(tell))
		return 0;
	child = fork();
	if (child == 0) {
		close(tell[0]);
		tracer_child(p->pid, when, tell[1]);
	}
	close(tell[1]);
	CHECK(read(tell[0], &site, sizeof(site)) == sizeof(site),
	      "tracer child failed %s", kill_what[when]);
	close(tell[0]);
	/* The tracee sits in a ptrace stop now: it must not die with us. */
	CHECK(thread_state(p->pid) == 't', "target state %c while traced",
	      thread_state(p->pid));
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	return site;
}

/* A tracer that injects calls until it is killed. */
static void busy_tracer(pid_t target)
{
	struct inject_session *s;
	long ret;
	int i;

	for (;;) {
		if (inject__attach(target, &s))
			_exit(1);
		for (i = 0; i < 20; i++)
			inject__syscall(s, SYS_getpid, NULL, &ret);
		inject__detach(s);
	}
}

static int echo_main(void *arg);

/* C (forked, its page mapped after libc) or Python (exec'd, before libc). */
static void test_tracer_killed(bool python)
{
	struct inject_page pg = {0}, pg2 = {0};
	int when, i, alive = 0, trials = 100, status;
	char line[256];
	uint64_t site;
	pid_t child;
	struct proc p;

	if (python ? spawn_py(&p, DEBIAN_PY, read_py) ||
		     read_line(&p, line, sizeof(line), 10) :
		     spawn(&p, NULL, echo_main, NULL)) {
		CHECK(0, "cannot start a target");
		stop_proc(&p);
		return;
	}
	/*
	 * The C target's page goes after libc's text in its maps, the Python
	 * one's before (the usual place): the stub is found either way.
	 */
	page_hint = python ? 0 : after_libc(p.pid);
	for (when = 0; when < KILL_NWHEN; when++) {
		CHECK(wait_in_syscall(p.pid, 0, 5), "not in read() before kill %d", when);
		site = kill_tracer(&p, when);
		CHECK(wait_in_syscall(p.pid, 0, 5),
		      "target not back in read() after its tracer was killed %s "
		      "(state %c)", kill_what[when], thread_state(p.pid));
		if (when == KILL_AFTER_PAGE) {
			CHECK(inject__find_page(p.pid, "pytm-t5", &pg) == 0,
			      "page of the dead tracer not found: %s",
			      error__last());
			CHECK(python || pg.addr == page_hint, "page at %#llx, not "
			      "at %#llx", (unsigned long long)pg.addr,
			      (unsigned long long)page_hint);
		}
		/* Inside a call, the thread must have gone through our stub. */
		if (when >= KILL_REGS_SET)
			CHECK(site == pg.addr + pg.len + 64, "site %#llx, not the "
			      "stub of %#llx", (unsigned long long)site,
			      (unsigned long long)pg.addr);
	}
	/* Killed at random while injecting, again and again. */
	for (i = 0; i < trials; i++) {
		child = fork();
		if (child == 0)
			busy_tracer(p.pid);
		usleep(1000 + rand() % 8000);
		kill(child, SIGKILL);
		waitpid(child, &status, 0);
		if (!wait_in_syscall(p.pid, 0, 2))
			break;
		alive++;
	}
	CHECK(alive == trials, "the target survived %d of %d tracer kills "
	      "(state %c)", alive, trials, thread_state(p.pid));
	CHECK(count_memfd_maps(p.pid, "pytm-t5", NULL) == 1, "pages: %d",
	      count_memfd_maps(p.pid, "pytm-t5", NULL));
	send_str(&p, "still-alive\n");
	CHECK(read_line(&p, line, sizeof(line), 5) == 0 &&
	      !strcmp(line, python ? "got still-alive" : "still-alive"),
	      "target said '%s'", line);
	if (!python)
		close(p.in);
	CHECK(reap(&p, 5) == 0, "target did not exit normally");
	printf("%s target: tracer killed at the stop, between calls, after the "
	       "page, with a call's registers set, at its entry, at its exit, "
	       "and %d times at random while injecting: the target read on and "
	       "exited 0\n", python ? "python" : "C", alive);
	inject__page_close(&pg);
	if (!python)
		return;

	/* The same inside a call, with the thread busy in user code. */
	if (spawn_py(&p, DEBIAN_PY, busy_py_long) ||
	    read_line(&p, line, sizeof(line), 10)) {
		CHECK(0, "cannot start %s", DEBIAN_PY);
		stop_proc(&p);
		return;
	}
	CHECK(inject__create_page(p.pid, "pytm-t5b", 4096, &pg2) == 0, "create: %s",
	      error__last());
	for (i = 0; i < 30; i++) {
		usleep(20000);
		kill_tracer(&p, KILL_REGS_SET + i % 3);
	}
	CHECK(read_line(&p, line, sizeof(line), 10) == 0 && !strcmp(line, "True"),
	      "busy target computed '%s' after 30 tracer kills inside calls", line);
	CHECK(reap(&p, 5) == 0, "busy target did not exit cleanly");
	inject__page_close(&pg2);
}

/* ---- 6. errors ---- */

static int echo_main(void *arg)
{
	char buf[64];
	ssize_t n;

	while ((n = read(0, buf, sizeof(buf))) > 0)
		if (write(1, buf, n) != n)
			return 1;
	return 0;
}

/* A filter: kill the process on syscall NR, allow the rest. */
static int seccomp_main(void *arg)
{
	long nr = (long)arg;
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		return 2;
	return echo_main(NULL);
}

static int strict_main(void *arg)
{
	char buf[64];
	ssize_t n;

	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT))
		return 2;
	n = read(0, buf, sizeof(buf));
	if (n > 0)
		n = write(1, buf, n);
	syscall(SYS_exit, 0);
	return 0;
}

static volatile uint64_t cell, cell2;

/* The clear_child_tid of the leader of a forked target (0 on failure). */
static uint64_t tid_address(pid_t pid)
{
	uint64_t args[6] = { PR_GET_TID_ADDRESS, (uintptr_t)&cell2 };
	struct inject_session *s;
	uint64_t v = 0;
	long ret = -1;

	if (inject__attach(pid, &s))
		return 0;
	if (inject__syscall(s, SYS_prctl, args, &ret) || ret)
		v = 0;
	else if (inject__read_u64(pid, (uintptr_t)&cell2, &v))
		v = 0;
	inject__detach(s);
	return v;
}

static bool echoes(struct proc *p)
{
	char line[64];

	send_str(p, "echo\n");
	return read_line(p, line, sizeof(line), 5) == 0 && !strcmp(line, "echo");
}

static void test_errors(void)
{
	struct inject_session *s;
	struct inject_page pg = {0};
	struct proc p, q;
	uint64_t got = 0, tid_before;
	int tell[2], err, status;
	pid_t gone, child;
	char c, want[64];

	/* A pid that no longer exists. */
	gone = fork();
	if (gone == 0)
		_exit(0);
	waitpid(gone, &status, 0);
	err = inject__attach(gone, &s);
	CHECK(err == -ESRCH && strstr(error__last(), "no such process"),
	      "attach to a dead pid: %d %s", err, error__last());
	err = inject__create_page(gone, "x", 4096, &pg);
	CHECK(err == -ESRCH && pg.pid == 0, "create in a dead pid: %d", err);
	CHECK(inject__find_page(gone, "x", &pg) == -ESRCH, "find in a dead pid");
	inject__page_close(&pg);
	inject__page_close(&pg);	/* zeroed: harmless twice */
	printf("errors: dead pid: %s\n", error__last());

	/* No privileges: a child of ours as nobody. */
	if (pipe(tell) == 0) {
		char why[256] = "";
		ssize_t n;

		child = fork();
		if (child == 0) {
			close(tell[0]);
			if (setgroups(0, NULL) || setresgid(65534, 65534, 65534) ||
			    setresuid(65534, 65534, 65534))
				_exit(1);
			err = inject__attach(getppid(), &s);
			n = write(tell[1], error__last(), strlen(error__last()));
			_exit(err == -EPERM && n > 0 ? 0 : 2);
		}
		close(tell[1]);
		n = read(tell[0], why, sizeof(why) - 1);
		why[n > 0 ? n : 0] = '\0';
		close(tell[0]);
		waitpid(child, &status, 0);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
		      strstr(why, "CAP_SYS_PTRACE"), "as nobody: %s", why);
		printf("errors: as nobody: %s\n", why);
	}

	/* Already traced by someone else. */
	if (spawn(&p, NULL, echo_main, NULL) || pipe(tell)) {
		CHECK(0, "cannot start a C target");
		return;
	}
	child = fork();
	if (child == 0) {
		if (ptrace(PTRACE_SEIZE, p.pid, 0, 0) || write(tell[1], "x", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(tell[1]);
	CHECK(read(tell[0], &c, 1) == 1, "other tracer failed");
	close(tell[0]);
	snprintf(want, sizeof(want), "already traced by pid %d", child);
	err = inject__create_page(p.pid, "x", 4096, &pg);
	CHECK(err == -EBUSY && strstr(error__last(), want),
	      "traced target: %d %s", err, error__last());
	printf("errors: traced: %s\n", error__last());
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	CHECK(echoes(&p), "target stopped echoing after the other tracer left");

	/* The same under strace, if it is there. */
	if (access("/usr/bin/strace", X_OK) == 0) {
		char pidstr[16];
		char *argv[] = { "/usr/bin/strace", "-qq", "-o", "/dev/null", "-p",
				 pidstr, NULL };
		double end = now() + 5;

		snprintf(pidstr, sizeof(pidstr), "%d", p.pid);
		if (spawn(&q, argv, NULL, NULL) == 0) {
			char path[64], l[256];
			bool traced = false;
			FILE *f;

			snprintf(path, sizeof(path), "/proc/%d/status", p.pid);
			while (!traced && now() < end) {
				f = fopen(path, "r");
				while (f && fgets(l, sizeof(l), f))
					if (!strncmp(l, "TracerPid:", 10) &&
					    atoi(l + 10) == q.pid)
						traced = true;
				if (f)
					fclose(f);
				usleep(5000);
			}
			err = inject__attach(p.pid, &s);
			CHECK(err == -EBUSY && strstr(error__last(), "(strace)"),
			      "under strace: %d %s", err, error__last());
			printf("errors: strace: %s\n", error__last());
			kill(q.pid, SIGTERM);
			reap(&q, 5);
			CHECK(echoes(&p), "target stopped echoing after strace");
		}
	}
	close(p.in);	/* EOF: it exits */
	CHECK(reap(&p, 5) == 0, "C target did not exit cleanly");

	/* A seccomp filter that would kill it on memfd_create. */
	if (spawn(&p, NULL, seccomp_main, (void *)(long)SYS_memfd_create) == 0) {
		CHECK(echoes(&p), "seccomp target not echoing");
		err = inject__create_page(p.pid, "x", 4096, &pg);
		CHECK(err == -EPERM && strstr(error__last(), "seccomp") &&
		      strstr(error__last(), "kill the process"),
		      "seccomp: %d %s", err, error__last());
		printf("errors: seccomp: %s\n", error__last());
		CHECK(echoes(&p), "seccomp target died");
		CHECK(count_memfd_maps(p.pid, "x", NULL) == 0, "a page was made");
		close(p.in);
		CHECK(reap(&p, 5) == 0, "seccomp target did not exit cleanly");
	}
	/* A filter that allows what we need: no refusal. */
	if (spawn(&p, NULL, seccomp_main, (void *)(long)SYS_kexec_load) == 0) {
		CHECK(echoes(&p), "seccomp target not echoing");
		err = inject__create_page(p.pid, "y", 4096, &pg);
		CHECK(err == 0, "seccomp (kexec_load only): %s", error__last());
		/*
		 * A forked target has our globals at the same addresses. The
		 * store borrows the thread's clear_child_tid: it is put back.
		 */
		tid_before = tid_address(p.pid);
		CHECK(inject__write_u64(p.pid, (uintptr_t)&cell, 0x5555aaaa5555aaaaULL)
		      == 0 && inject__read_u64(p.pid, (uintptr_t)&cell, &got) == 0 &&
		      got == 0x5555aaaa5555aaaaULL && cell == 0,
		      "store under a filter: %s", error__last());
		CHECK(tid_before && tid_address(p.pid) == tid_before,
		      "clear_child_tid %#llx, was %#llx",
		      (unsigned long long)tid_address(p.pid),
		      (unsigned long long)tid_before);
		inject__page_close(&pg);
		CHECK(echoes(&p), "seccomp target died");
		close(p.in);
		CHECK(reap(&p, 5) == 0, "seccomp target did not exit cleanly");
	}
	/* Strict mode. */
	if (spawn(&p, NULL, strict_main, NULL) == 0) {
		CHECK(wait_in_syscall(p.pid, 0, 5), "strict target not in read()");
		err = inject__create_page(p.pid, "x", 4096, &pg);
		CHECK(err == -EPERM && strstr(error__last(), "strict"),
		      "strict: %d %s", err, error__last());
		printf("errors: strict: %s\n", error__last());
		CHECK(echoes(&p), "strict target died");
		CHECK(reap(&p, 5) == 0, "strict target did not exit cleanly");
	}
}

/* ---- 7. signals arriving during injection are all delivered ---- */

static volatile sig_atomic_t rt_count;
static volatile long rt_sum;

static void rt_handler(int sig, siginfo_t *si, void *uc)
{
	rt_count++;
	rt_sum += si->si_value.sival_int;
}

static int signals_main(void *arg)
{
	struct sigaction sa = { .sa_sigaction = rt_handler,
				.sa_flags = SA_SIGINFO | SA_RESTART };
	char buf[64];
	ssize_t n;

	sigaction(SIGRTMIN, &sa, NULL);
	/* An interrupted read restarts (SA_RESTART): "q" ends it. */
	while ((n = read(0, buf, sizeof(buf))) > 0 && buf[0] != 'q')
		;
	printf("%d %ld\n", (int)rt_count, rt_sum);
	fflush(stdout);
	return n < 0;
}

static void test_signals(void)
{
	const int nsig = 3000;
	struct inject_session *s;
	unsigned int delivered = 0;
	int sessions = 0, calls = 0, status, count = -1, i;
	long sum = -1, ret;
	char line[64];
	struct proc p;
	pid_t sender;

	if (spawn(&p, NULL, signals_main, NULL)) {
		CHECK(0, "cannot start a C target");
		return;
	}
	CHECK(wait_in_syscall(p.pid, 0, 5), "signal target not in read()");
	sender = fork();
	if (sender == 0) {
		union sigval v;

		for (i = 1; i <= nsig; i++) {
			v.sival_int = i;
			while (sigqueue(p.pid, SIGRTMIN, v) < 0 && errno == EAGAIN)
				usleep(100);
			if (i % 4 == 0)
				usleep(50);
		}
		_exit(0);
	}
	while (waitpid(sender, &status, WNOHANG) == 0) {
		if (inject__attach(p.pid, &s)) {
			CHECK(0, "attach: %s", error__last());
			break;
		}
		sessions++;
		for (i = 0; i < 4; i++) {
			CHECK(inject__syscall(s, SYS_getpid, NULL, &ret) == 0 &&
			      ret == p.pid, "getpid: %ld %s", ret, error__last());
			calls++;
		}
		delivered += inject__signals_delivered(s);
		CHECK(inject__detach(s) == 0, "detach: %s", error__last());
	}
	send_str(&p, "q");
	CHECK(read_line(&p, line, sizeof(line), 10) == 0 &&
	      sscanf(line, "%d %ld", &count, &sum) == 2, "target said '%s'", line);
	CHECK(count == nsig && sum == (long)nsig * (nsig + 1) / 2,
	      "handler ran %d times (sum %ld), %d signals were sent", count, sum, nsig);
	CHECK(reap(&p, 5) == 0, "signal target did not exit cleanly");
	printf("signals: %d queued signals all handled with their values, %u of "
	       "them during %d sessions (%d calls)\n", count, delivered, sessions,
	       calls);
}

/* ---- 8. a target stopped by SIGSTOP, and one running user code ---- */

static const char busy_py[] =
	"import time\n"
	"print('ready', flush=True)\n"
	"t = time.monotonic(); x = 0; n = 0\n"
	"while time.monotonic() - t < 1.5:\n"
	"    for i in range(1000): x += i * 3\n"
	"    n += 1\n"
	"print(x == n * 1498500, flush=True)\n";

static void test_stopped_and_busy(void)
{
	struct inject_page pg = {0};
	struct inject_session *s;
	long nr = 0, rax = 0;
	char line[256];
	struct proc p;
	int i;

	if (spawn_py(&p, DEBIAN_PY, read_py) || read_line(&p, line, sizeof(line), 10)) {
		CHECK(0, "cannot start %s", DEBIAN_PY);
		stop_proc(&p);
		return;
	}
	CHECK(wait_in_syscall(p.pid, 0, 5), "never blocked in read()");
	kill(p.pid, SIGSTOP);
	for (i = 0; i < 500 && thread_state(p.pid) != 'T'; i++)
		usleep(2000);
	CHECK(inject__create_page(p.pid, "pytm-t8", 4096, &pg) == 0, "create: %s",
	      error__last());
	usleep(200000);
	CHECK(thread_state(p.pid) == 'T', "target state %c, not stopped",
	      thread_state(p.pid));
	kill(p.pid, SIGCONT);
	send_str(&p, "cont");
	CHECK(read_line(&p, line, sizeof(line), 5) == 0 && !strcmp(line, "got cont"),
	      "target said '%s'", line);
	CHECK(reap(&p, 5) == 0, "target did not exit cleanly");
	inject__page_close(&pg);

	if (spawn_py(&p, DEBIAN_PY, busy_py) || read_line(&p, line, sizeof(line), 10)) {
		CHECK(0, "cannot start %s", DEBIAN_PY);
		stop_proc(&p);
		return;
	}
	for (i = 0; i < 10; i++) {
		usleep(100000);
		if (inject__attach(p.pid, &s)) {
			CHECK(0, "attach: %s", error__last());
			continue;
		}
		if (i == 0)
			inject__stopped_state(s, &nr, &rax);
		CHECK(i ? inject__syscall(s, SYS_getpid, NULL, &rax) == 0 :
		      inject__session_create_page(s, "pytm-t8b", 4096, 0, &pg) == 0,
		      "inject: %s", error__last());
		inject__detach(s);
	}
	CHECK(read_line(&p, line, sizeof(line), 5) == 0 && !strcmp(line, "True"),
	      "busy target computed '%s'", line);
	CHECK(reap(&p, 5) == 0, "target did not exit cleanly");
	inject__page_close(&pg);
	printf("stopped target stayed stopped; busy target (first stop in "
	       "syscall %ld) computed right through 10 injections\n", nr);
}

/* ---- 9. a NOP probe site in the page takes uprobe hits ---- */

static int uprobe_open(const char *path, uint64_t off, pid_t pid)
{
	struct perf_event_attr a;
	int type;
	FILE *f;

	f = fopen("/sys/bus/event_source/devices/uprobe/type", "r");
	if (!f)
		return -1;
	if (fscanf(f, "%d", &type) != 1)
		type = -1;
	fclose(f);
	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	a.type = type;
	a.config1 = (uint64_t)(uintptr_t)path;	/* uprobe_path */
	a.config2 = off;			/* probe_offset */
	return syscall(SYS_perf_event_open, &a, pid, -1, -1, PERF_FLAG_FD_CLOEXEC);
}

static void test_uprobe(void)
{
	/* A NOP site with `ret` (the brief's), and a NOP site falling into `syscall`. */
	static const unsigned char code[] = {
		0x0f, 0x1f, 0x44, 0x00, 0x00, 0xc3, 0xcc, 0xcc,
		0x0f, 0x1f, 0x44, 0x00, 0x00, 0x0f, 0x05, 0xcc,
	};
	static const unsigned char later[] = { 0xab, 0xcd };
	struct inject_session *s;
	struct inject_page pg = {0};
	uint64_t hits[2] = { 0, 0 };
	int pfd[2], i;
	bool after;
	char line[256];
	long ret;
	struct proc p;

	if (spawn_py(&p, DEBIAN_PY, read_py) || read_line(&p, line, sizeof(line), 10)) {
		CHECK(0, "cannot start %s", DEBIAN_PY);
		stop_proc(&p);
		return;
	}
	CHECK(wait_in_syscall(p.pid, 0, 5), "never blocked in read()");
	CHECK(inject__create_page(p.pid, "pytm-t9", 4096, &pg) == 0, "create: %s",
	      error__last());
	CHECK(inject__write_page(&pg, 0, code, sizeof(code)) == 0, "write: %s",
	      error__last());
	/* Through both paths: the tracer's fd and the target's map_files. */
	pfd[0] = uprobe_open(pg.path, 8, p.pid);
	pfd[1] = uprobe_open(pg.map_path, 8, p.pid);
	CHECK(pfd[0] >= 0 && pfd[1] >= 0, "uprobe on %s / %s: %s", pg.path,
	      pg.map_path, strerror(errno));
	if (pfd[0] >= 0 && pfd[1] >= 0 && !inject__attach(p.pid, &s)) {
		/* The injected calls pass through the NOP site at offset 8. */
		inject__set_site(s, pg.addr + 8);
		for (i = 0; i < 3; i++)
			CHECK(inject__syscall(s, SYS_getpid, NULL, &ret) == 0 &&
			      ret == p.pid, "getpid through the page: %ld %s", ret,
			      error__last());
		inject__detach(s);
		CHECK(read(pfd[0], &hits[0], 8) == 8 && read(pfd[1], &hits[1], 8) == 8,
		      "reading the counters");
		CHECK(hits[0] == 3 && hits[1] == 3, "uprobe hits %llu / %llu, not 3",
		      (unsigned long long)hits[0], (unsigned long long)hits[1]);
	}
	for (i = 0; i < 2; i++)
		if (pfd[i] >= 0)
			close(pfd[i]);
	/*
	 * What the target sees of later writes to a page that was probed is
	 * up to the kernel (a probe gives the target a private copy of the
	 * page; 6.18 sometimes, not always, gives the file's page back when the
	 * probe goes): shown, not checked. Code is written before probing.
	 */
	inject__write_page(&pg, 100, later, sizeof(later));
	after = target_sees(p.pid, pg.addr + 100, later, 2);
	pfd[0] = uprobe_open(pg.path, 0, p.pid);
	CHECK(pfd[0] >= 0, "uprobe at offset 0: %s", strerror(errno));
	inject__write_page(&pg, 102, later, sizeof(later));
	printf("uprobe: %llu and %llu hits at the NOP site through the two paths; "
	       "a write to the page is %s by the target with a probe in it, "
	       "%s after the probes were removed\n",
	       (unsigned long long)hits[0], (unsigned long long)hits[1],
	       target_sees(p.pid, pg.addr + 102, later, 2) ? "seen" : "not seen",
	       after ? "seen" : "not seen");
	if (pfd[0] >= 0)
		close(pfd[0]);
	send_str(&p, "probed");
	CHECK(read_line(&p, line, sizeof(line), 5) == 0 && !strcmp(line, "got probed"),
	      "target said '%s'", line);
	CHECK(reap(&p, 5) == 0, "target did not exit cleanly");
	inject__page_close(&pg);
}

int main(int argc, char **argv)
{
	const char *root = getenv("PYENV_ROOT"), *home = getenv("HOME");

	if (getenv("INJECT_VERBOSE"))
		pytm_verbose = true;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (geteuid() != 0) {
		printf("inject: SKIP, needs root\n");
		return unit_done("inject");
	}
	snprintf(pyenv_py, sizeof(pyenv_py), "%s%s/versions/3.11.7/bin/python3.11",
		 root ? root : home ? home : "/root", root ? "" : "/.pyenv");
	if (access(pyenv_py, X_OK))
		pyenv_py[0] = '\0';
	if (access(DEBIAN_PY, X_OK)) {
		CHECK(0, "%s is missing", DEBIAN_PY);
		return unit_done("inject");
	}
	/* Nothing here may hang: a stuck run dies, and its targets with it. */
	alarm(300);

	test_read_pipe();
	test_sleep();
	test_nanosleep();
	test_epoll();
	test_lock();
	test_cycles();
	test_tracer_killed(true);
	test_tracer_killed(false);
	test_errors();
	test_signals();
	test_stopped_and_busy();
	test_uprobe();
	return unit_done("inject");
}
