// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Syscall injection under ptrace, and the file-backed page built with it.
 * The facts behind the choices below were measured on kernel 6.18 (see
 * tests/unit/test_inject.c).
 *
 * The thread is driven with PTRACE_SYSCALL, not PTRACE_SINGLESTEP: a
 * single step ends in a SIGTRAP signal-delivery-stop, and if the tracer
 * died there the kernel would deliver that SIGTRAP and kill the target
 * (and it resets a blocked or ignored SIGTRAP to SIG_DFL). A syscall stop
 * carries SIGTRAP|0x80 (PTRACE_O_TRACESYSGOOD), which the kernel drops as
 * an invalid signal number when it is left to it by a dead tracer.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include "inject.h"
#include "x86emit.h"
#include "util.h"

/* Record why we fail (one line, the error channel), return ERR. */
__attribute__((format(printf, 2, 3)))
static int fail(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err = error__vset(err, "inject", fmt, ap);
	va_end(ap);
	return err;
}

#if defined(__x86_64__)

#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

/* x86-64 system call numbers, for the target (not our headers' arch). */
#define NR_close		3
#define NR_mmap			9
#define NR_madvise		28
#define NR_munmap		11
#define NR_prctl		157
#define NR_set_tid_address	218
#define NR_restart_syscall	219
#define NR_memfd_create		319
#define NR_uretprobe		335	/* 6.11+ */
#define NR_uprobe		336	/* 6.18+ */

#ifndef MFD_EXEC
#define MFD_EXEC		0x0010U
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open		434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd		438
#endif

#define PAGE_SZ			4096UL
#define MEMFD_NAME_MAX		249	/* the kernel's MFD_NAME_MAX_LEN */
#define MAX_SIGNALS		64	/* signals passed on per stop before giving up */
#define USER_CS_64		0x33	/* __USER_CS: the thread runs 64-bit code */

struct seccomp_filter_copy {
	struct sock_filter *insns;
	int len;
};

struct inject_session {
	pid_t pid, tid;
	bool seized;			/* we are its tracer */
	bool gone;			/* the target exited under us */
	int pending_sig;		/* stopped in delivery of this signal */
	struct user_regs_struct saved;	/* the thread's own registers */
	uint64_t site;			/* the `syscall` we run calls on */
	uint64_t libc_site;		/* a `0f 05` in the target's text */
	uint64_t stub;			/* our restore stub's page, or 0 */
	off_t stub_off;			/* its offset in the memfd */
	int stub_fd;			/* ours, on that memfd; -1 */
	uint64_t scratch;		/* our RW page in the target, or 0 */
	uint64_t tid_addr;		/* the thread's clear_child_tid */
	bool have_tid_addr;
	struct seccomp_filter_copy *filters;
	int nfilters;
	unsigned int nsignals;
};

/* ---- /proc helpers ---- */

/* Value of "KEY:" in /proc/PID/task/TID/status into VAL; -errno. */
static int status_field(pid_t pid, pid_t tid, const char *key, char *val,
			size_t len)
{
	char path[64], line[256];
	size_t klen = strlen(key);
	int err = -ENOENT;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", pid, tid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, klen) || line[klen] != ':')
			continue;
		snprintf(val, len, "%s", line + klen + 1 + strspn(line + klen + 1, " \t"));
		val[strcspn(val, "\n")] = '\0';
		err = 0;
		break;
	}
	fclose(f);
	return err;
}

static long status_long(pid_t pid, pid_t tid, const char *key, long dflt)
{
	char val[64];

	if (status_field(pid, tid, key, val, sizeof(val)))
		return dflt;
	return strtol(val, NULL, 10);
}

/* Scheduler state letter of thread TID ('R', 'S', 'D', 'Z', ...); 0 if gone. */
static char thread_state(pid_t pid, pid_t tid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", pid, tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	/* The command name may hold anything, ')' too: take the last one. */
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

/*
 * Whether thread TID of PID is exiting: gone, a zombie, or killed (SIGKILL
 * pending: the kernel queues it on every thread of a dying group), for up
 * to 100 ms (a killed process takes a few to become a zombie).
 */
static bool exiting(pid_t pid, pid_t tid)
{
	char val[32];
	char st;

	for (int i = 0; i < 20; i++) {
		st = thread_state(pid, tid);
		if (!st || st == 'Z' || st == 'X')
			return true;
		if (!status_field(pid, tid, "SigPnd", val, sizeof(val)) &&
		    strtoull(val, NULL, 16) & (1ULL << (SIGKILL - 1)))
			return true;
		if (!status_field(pid, tid, "ShdPnd", val, sizeof(val)) &&
		    strtoull(val, NULL, 16) & (1ULL << (SIGKILL - 1)))
			return true;
		usleep(5000);
	}
	return false;
}

bool inject__exiting(pid_t pid)
{
	return exiting(pid, pid);
}

static void comm_of(pid_t pid, char *buf, size_t len)
{
	char path[64];
	ssize_t n = -1;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, buf, len - 1);
		close(fd);
	}
	if (n <= 0) {
		snprintf(buf, len, "?");
		return;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
}

static bool have_cap(int cap)
{
	char val[64];

	if (status_field(getpid(), getpid(), "CapEff", val, sizeof(val)))
		return false;
	return (strtoull(val, NULL, 16) >> cap) & 1;
}

/* The call thread TID sleeps in (/proc/.../syscall), -1 if none or unknown. */
static long thread_syscall(pid_t pid, pid_t tid)
{
	char path[64], buf[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", pid, tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0 || buf[0] < '0' || buf[0] > '9')
		return -1;	/* "running", or "-1 ..." in user code */
	buf[n] = '\0';
	return strtol(buf, NULL, 10);
}

/*
 * How well thread TID takes a stop, lower is better: 0 it runs or sleeps
 * in a call the kernel restarts after a stop; 1 it sleeps in a call that
 * a stop ends with EINTR instead (the target sees that, as if a signal had
 * come: Python retries, PEP 475; not every C program does); 2 it is in
 * uninterruptible sleep (we would wait); 3 unusable (zombie, gone).
 */
static int thread_rank(pid_t pid, pid_t tid)
{
	char st = thread_state(pid, tid);

	if (!st || st == 'Z' || st == 'X')
		return 3;
	if (st == 'D')
		return 2;
	if (st != 'S')
		return 0;
	switch (thread_syscall(pid, tid)) {
	case 65:	/* semop */
	case 128:	/* rt_sigtimedwait */
	case 208:	/* io_getevents */
	case 220:	/* semtimedop */
	case 232:	/* epoll_wait */
	case 281:	/* epoll_pwait */
	case 333:	/* io_pgetevents */
	case 426:	/* io_uring_enter */
	case 441:	/* epoll_pwait2 */
		return 1;
	default:
		return 0;
	}
}

/*
 * The thread to stop. Any thread would do for the calls themselves: the
 * fd table and the address space they act on are the whole process's.
 * What differs is what the stop does to the thread: the leader is taken
 * (its tid is the pid, no scan) unless another thread takes the stop
 * better (see thread_rank): a zombie leader (it called pthread_exit)
 * cannot be attached, one in uninterruptible sleep would keep us waiting,
 * and one in epoll_wait would see EINTR.
 */
static int choose_thread(pid_t pid, pid_t *tid)
{
	int rank = thread_rank(pid, pid), r;
	struct dirent *de;
	char path[64];
	pid_t t;
	DIR *d;

	*tid = pid;
	if (rank == 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	d = opendir(path);
	if (!d)
		return fail(-ESRCH, "pid %d: no such process", pid);
	while (rank > 0 && (de = readdir(d))) {
		t = atoi(de->d_name);
		if (t <= 0 || t == pid)
			continue;
		r = thread_rank(pid, t);
		if (r < rank) {
			rank = r;
			*tid = t;
		}
	}
	closedir(d);
	if (rank == 3)
		return fail(-ESRCH, thread_state(pid, pid) ? "pid %d has exited "
			    "(zombie)" : "pid %d: no such process", pid);
	return 0;
}

/* Why PTRACE_SEIZE of TID failed with ERRNUM. */
static int seize_error(pid_t pid, pid_t tid, int errnum)
{
	char comm[32], val[32];
	long tracer, scope = -1;
	FILE *f;

	if (errnum == ESRCH)
		return fail(-ESRCH, "pid %d: no such process", pid);
	/* The kernel refuses a process on its way out with EPERM too. */
	if (errnum == EPERM && exiting(pid, tid))
		return fail(-ESRCH, "pid %d has exited", pid);
	if (errnum != EPERM)
		return fail(-errnum, "pid %d: ptrace(PTRACE_SEIZE): %s", pid,
			    strerror(errnum));
	tracer = status_long(pid, tid, "TracerPid", 0);
	if (tracer > 0) {
		comm_of(tracer, comm, sizeof(comm));
		return fail(-EBUSY, "pid %d is already traced by pid %ld (%s)",
			    pid, tracer, comm);
	}
	f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");
	if (f) {
		if (fscanf(f, "%ld", &scope) != 1)
			scope = -1;
		fclose(f);
	}
	if (scope == 3)
		return fail(-EPERM, "pid %d: ptrace is disabled by Yama "
			    "(kernel.yama.ptrace_scope=3, only a reboot resets it)", pid);
	if (!have_cap(19 /* CAP_SYS_PTRACE */)) {
		if (scope == 1 || scope == 2)
			return fail(-EPERM, "pid %d: ptrace refused by Yama "
				    "(kernel.yama.ptrace_scope=%ld) and we lack "
				    "CAP_SYS_PTRACE", pid, scope);
		if (!status_field(pid, tid, "Uid", val, sizeof(val)) &&
		    strtol(val, NULL, 10) != (long)getuid())
			return fail(-EPERM, "pid %d: ptrace refused: it belongs to "
				    "uid %ld and we lack CAP_SYS_PTRACE", pid,
				    strtol(val, NULL, 10));
		return fail(-EPERM, "pid %d: ptrace refused: we lack CAP_SYS_PTRACE "
			    "(and the target may be non-dumpable)", pid);
	}
	return fail(-EPERM, "pid %d: ptrace refused despite CAP_SYS_PTRACE "
		    "(a security module, or a kernel thread)", pid);
}

/* ---- the restore stub ---- */

/*
 * Every page we make ends with one page of our own, the stub: a `syscall`
 * followed by code that loads the registers saved in slots next to it and
 * jumps to where the thread was. Once a process has a stub, calls are made
 * on its `syscall`; then if we die at any point of a call, the kernel lets
 * the thread go, and it makes the call, runs this code and carries on
 * exactly where it was (a call it was interrupted in is restarted as the
 * kernel would). On libc's `syscall` it would run on into libc with our
 * registers and crash: 161 of 200 targets died when a tracer busy
 * injecting was killed at random. Only the calls that make the first page
 * of a process run without a stub.
 *
 * The code touches no register it has not restored and no memory but the
 * slots and 8 bytes below the red zone (to load the flags with popfq); a
 * signal delivered while it runs finds a valid stack. Slots are written
 * through the memfd and read back from the target before use.
 */
#define STUB_MAGIC	"PYTMINJ1"
#define STUB_CODE	64	/* offset of the code in the stub page */
#define STUB_SLOTS	512	/* offset of the register slots */

enum {
	SL_RAX, SL_RBX, SL_RCX, SL_RDX, SL_RSI, SL_RDI, SL_RBP, SL_R8, SL_R9,
	SL_R10, SL_R11, SL_R12, SL_R13, SL_R14, SL_R15, SL_FLAGS, SL_RIP, NSLOTS
};

static void build_stub(uint8_t page[PAGE_SZ])
{
	/* mov SLOT(%rip), REG: REX.W (+R), 8b, ModRM reg|101 (RIP-relative). */
	static const struct { uint8_t rex, modrm; int slot; } loads[] = {
		{ 0x48, 0x05, SL_RAX }, { 0x48, 0x1d, SL_RBX }, { 0x48, 0x0d, SL_RCX },
		{ 0x48, 0x15, SL_RDX }, { 0x48, 0x35, SL_RSI }, { 0x48, 0x3d, SL_RDI },
		{ 0x48, 0x2d, SL_RBP }, { 0x4c, 0x05, SL_R8 },  { 0x4c, 0x0d, SL_R9 },
		{ 0x4c, 0x15, SL_R10 }, { 0x4c, 0x1d, SL_R11 }, { 0x4c, 0x25, SL_R12 },
		{ 0x4c, 0x2d, SL_R13 }, { 0x4c, 0x35, SL_R14 }, { 0x4c, 0x3d, SL_R15 },
	};
	static const uint8_t syscall_insn[] = { 0x0f, 0x05 };
	static const uint8_t below_red_zone[] = { 0x48, 0x8d, 0x64, 0x24, 0x80 };
	static const uint8_t push_mem[] = { 0xff, 0x35 };
	static const uint8_t popfq[] = { 0x9d };
	static const uint8_t back_up[] = { 0x48, 0x8d, 0xa4, 0x24, 0x80, 0, 0, 0 };
	static const uint8_t jmp_mem[] = { 0xff, 0x25 };
	struct x86_emitter e = { page, STUB_CODE };
	size_t i;

	memset(page, 0, PAGE_SZ);
	memset(page + STUB_CODE, 0xcc, STUB_SLOTS - STUB_CODE);	/* int3 */
	memcpy(page, STUB_MAGIC, 8);
	x86__bytes(&e, syscall_insn, sizeof(syscall_insn));	/* the call */
	x86__bytes(&e, below_red_zone, sizeof(below_red_zone)); /* lea -128(%rsp),%rsp */
	x86__rip(&e, push_mem, sizeof(push_mem), STUB_SLOTS + SL_FLAGS * 8, NULL); /* pushq flags */
	x86__bytes(&e, popfq, sizeof(popfq));
	x86__bytes(&e, back_up, sizeof(back_up));		/* lea 128(%rsp),%rsp */
	for (i = 0; i < sizeof(loads) / sizeof(loads[0]); i++) {
		uint8_t op[3] = { loads[i].rex, 0x8b, loads[i].modrm };

		x86__rip(&e, op, sizeof(op), STUB_SLOTS + loads[i].slot * 8, NULL);
	}
	x86__rip(&e, jmp_mem, sizeof(jmp_mem), STUB_SLOTS + SL_RIP * 8, NULL);	/* jmp *rip */
}

/*
 * Slots for the thread's saved registers, with the restart the kernel
 * would apply on its way back to user mode when no signal handler runs
 * (arch/x86/kernel/signal.c): back onto the `syscall`, with the call's
 * number again, or restart_syscall for a call that left a restart block.
 */
static void fill_slots(const struct user_regs_struct *r, uint64_t sl[NSLOTS])
{
	sl[SL_RAX] = r->rax;
	sl[SL_RBX] = r->rbx;
	sl[SL_RCX] = r->rcx;
	sl[SL_RDX] = r->rdx;
	sl[SL_RSI] = r->rsi;
	sl[SL_RDI] = r->rdi;
	sl[SL_RBP] = r->rbp;
	sl[SL_R8] = r->r8;
	sl[SL_R9] = r->r9;
	sl[SL_R10] = r->r10;
	sl[SL_R11] = r->r11;
	sl[SL_R12] = r->r12;
	sl[SL_R13] = r->r13;
	sl[SL_R14] = r->r14;
	sl[SL_R15] = r->r15;
	sl[SL_FLAGS] = r->eflags;
	sl[SL_RIP] = r->rip;
	if ((long)r->orig_rax < 0)
		return;
	switch ((long)r->rax) {
	case -512:	/* ERESTARTSYS */
	case -513:	/* ERESTARTNOINTR */
	case -514:	/* ERESTARTNOHAND */
		sl[SL_RAX] = r->orig_rax;
		sl[SL_RIP] = r->rip - 2;
		break;
	case -516:	/* ERESTART_RESTARTBLOCK */
		sl[SL_RAX] = NR_restart_syscall;
		sl[SL_RIP] = r->rip - 2;
		break;
	}
}

static int mem_rw(pid_t pid, uint64_t addr, void *buf, size_t len, bool write);

/*
 * Write the slots for the registers just saved, and check that the target
 * sees them; if it does not, calls go back to libc's `syscall`.
 */
static void arm_stub(struct inject_session *s)
{
	uint64_t sl[NSLOTS], seen[NSLOTS];

	if (!s->stub)
		return;
	fill_slots(&s->saved, sl);
	if (pwrite(s->stub_fd, sl, sizeof(sl), s->stub_off + STUB_SLOTS) ==
	    (ssize_t)sizeof(sl) &&
	    !mem_rw(s->pid, s->stub + STUB_SLOTS, seen, sizeof(seen), false) &&
	    !memcmp(sl, seen, sizeof(sl))) {
		s->site = s->stub + STUB_CODE;
		return;
	}
	vlog("inject: pid %d: the stub at %#llx does not take its slots: "
	     "calls go through libc", s->pid, (unsigned long long)s->stub);
	s->site = s->libc_site;
	s->stub = 0;
}

/*
 * Calls from now on go through the stub page at ADDR (offset OFF of FD).
 * Its slots are the session's own: the file is locked for as long (a
 * second tracer, on another thread, fails with -EBUSY).
 */
static int use_stub(struct inject_session *s, int fd, off_t off, uint64_t addr)
{
	if (s->stub)
		return 0;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0)
		return fail(errno == EWOULDBLOCK ? -EBUSY : -errno, "pid %d: "
			    "another tracer is injecting into it (its page at "
			    "%#llx is locked)", s->pid, (unsigned long long)addr);
	s->stub_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (s->stub_fd < 0)
		return 0;
	s->stub = addr;
	s->stub_off = off;
	arm_stub(s);
	return 0;
}

/* Does the page at ADDR in the target start like a stub page? */
static bool is_stub(pid_t pid, uint64_t addr)
{
	char magic[8];

	return !mem_rw(pid, addr, magic, sizeof(magic), false) &&
	       !memcmp(magic, STUB_MAGIC, sizeof(magic));
}

/* ---- finding a syscall instruction ---- */

/* Address of the first `0f 05` in [START, END) of the target; 0 if none. */
static uint64_t scan_syscall(pid_t pid, uint64_t start, uint64_t end)
{
	unsigned char buf[65536];
	struct iovec local, remote;
	uint64_t at;
	ssize_t n, i;

	for (at = start; at + 1 < end; at += sizeof(buf) - 1) {
		local.iov_base = buf;
		local.iov_len = end - at < sizeof(buf) ? end - at : sizeof(buf);
		remote.iov_base = (void *)at;
		remote.iov_len = local.iov_len;
		n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
		if (n < 2)
			return 0;
		for (i = 0; i + 1 < n; i++)
			if (buf[i] == 0x0f && buf[i + 1] == 0x05)
				return at + i;
		if ((size_t)n < local.iov_len)
			return 0;
	}
	return 0;
}

/*
 * Where to make calls: the stub of a page we made earlier (see above);
 * else a `syscall` instruction in the target's executable memory, libc's
 * text first, then the vDSO, then any other executable file mapping. The
 * bytes need not start an instruction of the code around them: rip is put
 * on them and the thread stops again right after the call.
 */
static int find_site(struct inject_session *s)
{
	char path[64], line[PATH_MAX + 128], perms[8], file[PATH_MAX];
	unsigned long long start, end, off;
	uint64_t found[3] = {0, 0, 0};
	pid_t pid = s->pid;
	int rank, fd, err;
	size_t l;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	if (!f && errno == ENOENT)
		return fail(-ESRCH, "pid %d: no such process", pid);
	if (!f)
		return fail(-errno, "pid %d: %s: %s", pid, path, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		file[0] = '\0';
		if (sscanf(line, "%llx-%llx %7s %llx %*s %*s %4095[^\n]",
			   &start, &end, perms, &off, file) < 4)
			continue;
		if (perms[0] != 'r' || perms[2] != 'x')
			continue;
		l = strlen(file);
		if (!s->stub && !strncmp(file, "/memfd:", 7) && l > 10 &&
		    !strcmp(file + l - 10, " (deleted)") && !strcmp(perms, "r-xp") &&
		    !off && end - start >= 2 * PAGE_SZ && is_stub(pid, end - PAGE_SZ)) {
			/* Reached as root (CAP_SYS_ADMIN) after the target closed it. */
			snprintf(path, sizeof(path), "/proc/%d/map_files/%llx-%llx",
				 pid, start, end);
			fd = open(path, O_RDWR | O_CLOEXEC);
			if (fd >= 0) {
				err = use_stub(s, fd, end - PAGE_SZ - start,
					       end - PAGE_SZ);
				close(fd);
				if (err) {
					fclose(f);
					return err;
				}
			}
			continue;
		}
		if (strstr(file, "/libc.so") || strstr(file, "/libc-"))
			rank = 0;
		else if (!strcmp(file, "[vdso]"))
			rank = 1;
		else if (file[0] == '/')
			rank = 2;
		else
			continue;	/* [vsyscall] only allows its fixed entries */
		/* Read on past libc: a stub page may come after it. */
		if (!found[rank] && !(rank && found[0]))
			found[rank] = scan_syscall(pid, start, end);
	}
	fclose(f);
	for (rank = 0; rank < 3; rank++) {
		if (found[rank]) {
			s->libc_site = found[rank];
			break;
		}
	}
	s->site = s->stub ? s->stub + STUB_CODE : s->libc_site;
	if (s->site)
		return 0;
	return fail(-ENOEXEC, "pid %d: no `syscall` instruction found in its "
		    "executable mappings", pid);
}

/* ---- seccomp ---- */

/* Run one classic BPF seccomp filter over D, as the kernel would. */
static uint32_t run_filter(const struct seccomp_filter_copy *f,
			   const struct seccomp_data *d)
{
	uint32_t a = 0, x = 0, mem[BPF_MEMWORDS] = {0};
	const struct sock_filter *in;
	int pc;

	for (pc = 0; pc >= 0 && pc < f->len; pc++) {
		in = &f->insns[pc];
		switch (in->code) {
		case BPF_LD | BPF_W | BPF_ABS:
			if (in->k % 4 || in->k + 4 > sizeof(*d))
				return SECCOMP_RET_KILL_PROCESS;
			memcpy(&a, (const char *)d + in->k, 4);
			break;
		case BPF_LD | BPF_W | BPF_LEN:
			a = sizeof(*d);
			break;
		case BPF_LDX | BPF_W | BPF_LEN:
			x = sizeof(*d);
			break;
		case BPF_LD | BPF_IMM:
			a = in->k;
			break;
		case BPF_LDX | BPF_IMM:
			x = in->k;
			break;
		case BPF_LD | BPF_MEM:
			a = mem[in->k % BPF_MEMWORDS];
			break;
		case BPF_LDX | BPF_MEM:
			x = mem[in->k % BPF_MEMWORDS];
			break;
		case BPF_ST:
			mem[in->k % BPF_MEMWORDS] = a;
			break;
		case BPF_STX:
			mem[in->k % BPF_MEMWORDS] = x;
			break;
		case BPF_MISC | BPF_TAX:
			x = a;
			break;
		case BPF_MISC | BPF_TXA:
			a = x;
			break;
		case BPF_ALU | BPF_NEG:
			a = -a;
			break;
		case BPF_JMP | BPF_JA:
			pc += in->k;
			break;
		case BPF_RET | BPF_K:
			return in->k;
		case BPF_RET | BPF_A:
			return a;
		default:
			if (BPF_CLASS(in->code) == BPF_ALU) {
				uint32_t v = BPF_SRC(in->code) == BPF_X ? x : in->k;

				switch (BPF_OP(in->code)) {
				case BPF_ADD: a += v; break;
				case BPF_SUB: a -= v; break;
				case BPF_MUL: a *= v; break;
				case BPF_OR:  a |= v; break;
				case BPF_AND: a &= v; break;
				case BPF_XOR: a ^= v; break;
				case BPF_LSH: a = v < 32 ? a << v : 0; break;
				case BPF_RSH: a = v < 32 ? a >> v : 0; break;
				case BPF_DIV:
				case BPF_MOD:
					/* Division by zero ends the filter with 0. */
					if (!v)
						return SECCOMP_RET_KILL_THREAD;
					a = BPF_OP(in->code) == BPF_DIV ? a / v : a % v;
					break;
				default:
					return SECCOMP_RET_KILL_PROCESS;
				}
				break;
			}
			if (BPF_CLASS(in->code) == BPF_JMP) {
				uint32_t v = BPF_SRC(in->code) == BPF_X ? x : in->k;
				bool t;

				switch (BPF_OP(in->code)) {
				case BPF_JEQ: t = a == v; break;
				case BPF_JGT: t = a > v; break;
				case BPF_JGE: t = a >= v; break;
				case BPF_JSET: t = a & v; break;
				default:
					return SECCOMP_RET_KILL_PROCESS;
				}
				pc += t ? in->jt : in->jf;
				break;
			}
			/* Unknown to us: assume the worst. */
			return SECCOMP_RET_KILL_PROCESS;
		}
	}
	return SECCOMP_RET_KILL_PROCESS;
}

static const char *seccomp_action_name(uint32_t act)
{
	switch (act & SECCOMP_RET_ACTION_FULL) {
	case SECCOMP_RET_KILL_PROCESS: return "kill the process";
	case SECCOMP_RET_KILL_THREAD: return "kill the thread";
	case SECCOMP_RET_TRAP: return "send SIGSYS";
	case SECCOMP_RET_ERRNO: return "fail it";
	case SECCOMP_RET_USER_NOTIF: return "hand it to a supervisor";
	case SECCOMP_RET_TRACE: return "hand it to a tracer";
	default: return "refuse it";
	}
}

/*
 * Copy the thread's seccomp filters (it must be stopped). An injected call
 * a filter does not allow would kill or signal the target, so every call
 * is checked against them first. Strict mode allows nothing we need.
 */
static int load_filters(struct inject_session *s)
{
	struct seccomp_filter_copy *fs;
	long mode, n, i;
	int err;

	mode = status_long(s->pid, s->tid, "Seccomp", 0);
	if (mode == 0)
		return 0;
	if (mode == 1)
		return fail(-EPERM, "pid %d runs in seccomp strict mode: any "
			    "injected call would kill it", s->pid);
	for (i = 0;; i++) {
		n = ptrace(PTRACE_SECCOMP_GET_FILTER, s->tid, i, NULL);
		if (n < 0 && errno == ENOENT && i > 0)
			break;
		if (n <= 0) {
			err = n < 0 ? errno : EINVAL;
			return fail(-EPERM, "pid %d runs under seccomp filters "
				    "that cannot be read (%s): refusing to inject "
				    "calls they might punish", s->pid, strerror(err));
		}
		fs = realloc(s->filters, (i + 1) * sizeof(*fs));
		if (!fs)
			return fail(-ENOMEM, "out of memory");
		s->filters = fs;
		fs[i].len = 0;
		fs[i].insns = calloc(n, sizeof(struct sock_filter));
		s->nfilters = i + 1;
		if (!fs[i].insns)
			return fail(-ENOMEM, "out of memory");
		if (ptrace(PTRACE_SECCOMP_GET_FILTER, s->tid, i, fs[i].insns) != n)
			return fail(-EPERM, "pid %d: reading seccomp filter %ld: %s",
				    s->pid, i, strerror(errno));
		fs[i].len = n;
	}
	vlog("inject: pid %d: thread %d has %d seccomp filters", s->pid,
	     s->tid, s->nfilters);
	return 0;
}

static int seccomp_check(struct inject_session *s, long nr, const uint64_t args[6])
{
	struct seccomp_data d = {
		.nr = nr,
		.arch = AUDIT_ARCH_X86_64,
		.instruction_pointer = s->site + 2,
	};
	uint32_t ret, act = SECCOMP_RET_ALLOW;
	int i;

	for (i = 0; i < 6; i++)
		d.args[i] = args[i];
	/* The most restrictive action of all the filters wins. */
	for (i = 0; i < s->nfilters; i++) {
		ret = run_filter(&s->filters[i], &d);
		if ((int32_t)(ret & SECCOMP_RET_ACTION_FULL) <
		    (int32_t)(act & SECCOMP_RET_ACTION_FULL))
			act = ret;
	}
	act &= SECCOMP_RET_ACTION_FULL;
	if (act == SECCOMP_RET_ALLOW || act == SECCOMP_RET_LOG)
		return 0;
	return fail(-EPERM, "pid %d: its seccomp filter would %s on syscall %ld: "
		    "not injected", s->pid, seccomp_action_name(act), nr);
}

/* ---- stopping and resuming ---- */

enum stop_kind { STOP_EVENT, STOP_SYSCALL, STOP_SIGNAL, STOP_OTHER };

static enum stop_kind stop_kind(int status)
{
	if (status >> 16 == PTRACE_EVENT_STOP)
		return STOP_EVENT;	/* our interrupt, or a group stop */
	if (status >> 16)
		return STOP_OTHER;	/* an event we did not ask for */
	if (WSTOPSIG(status) == (SIGTRAP | 0x80))
		return STOP_SYSCALL;
	return STOP_SIGNAL;
}

/*
 * Next stop of the thread into *STATUS. PATIENT: the thread may take long
 * to stop (uninterruptible sleep); poll and say so rather than block mute.
 */
static int wait_stop(struct inject_session *s, int *status, bool patient)
{
	struct timespec ts = { 0, 20000 }, waited = { 0, 0 };
	bool said = false;
	pid_t r;

	for (;;) {
		r = waitpid(s->tid, status, __WALL | (patient ? WNOHANG : 0));
		if (r == s->tid)
			break;
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			s->gone = errno == ECHILD;
			return fail(-errno, "pid %d: waitpid: %s", s->pid,
				    strerror(errno));
		}
		nanosleep(&ts, NULL);
		waited.tv_nsec += ts.tv_nsec;
		if (waited.tv_nsec >= 1000000000) {
			waited.tv_sec++;
			waited.tv_nsec -= 1000000000;
		}
		if (ts.tv_nsec < 1000000)
			ts.tv_nsec *= 2;
		if (!said && waited.tv_sec >= 2) {
			warn("waiting for pid %d to stop (thread %d, state %c)",
			     s->pid, s->tid, thread_state(s->pid, s->tid) ?: '?');
			said = true;
		}
	}
	if (WIFEXITED(*status)) {
		s->gone = true;
		return fail(-ESRCH, "pid %d exited (status %d)", s->pid,
			    WEXITSTATUS(*status));
	}
	if (WIFSIGNALED(*status)) {
		s->gone = true;
		return fail(-ESRCH, "pid %d was killed by signal %d (%s)", s->pid,
			    WTERMSIG(*status), strsignal(WTERMSIG(*status)));
	}
	return 0;
}

static int ptrace_err(struct inject_session *s, const char *what)
{
	int err = errno;

	if (err == ESRCH)
		s->gone = thread_state(s->pid, s->tid) == 0;
	return fail(-err, "pid %d: ptrace(%s): %s", s->pid, what, strerror(err));
}

/*
 * After a PTRACE_INTERRUPT: wait until the thread sits in the interrupt
 * stop (or a group stop). A signal that reached the thread first is
 * delivered now, with its siginfo, on its untouched registers, and the
 * thread is interrupted again: nothing is lost or reordered.
 */
static int settle(struct inject_session *s, bool patient)
{
	int status, err, n;

	for (n = 0;; n++) {
		err = wait_stop(s, &status, patient);
		if (err)
			return err;
		switch (stop_kind(status)) {
		case STOP_EVENT:
			s->pending_sig = 0;
			return 0;
		case STOP_SIGNAL:
			s->pending_sig = WSTOPSIG(status);
			if (n >= MAX_SIGNALS)
				return fail(-EAGAIN, "pid %d: signals keep arriving "
					    "(%d passed on): cannot hold it still",
					    s->pid, n);
			if (ptrace(PTRACE_CONT, s->tid, 0, (long)s->pending_sig) < 0)
				return ptrace_err(s, "PTRACE_CONT");
			s->pending_sig = 0;
			s->nsignals++;
			break;
		default:
			if (ptrace(PTRACE_CONT, s->tid, 0, 0L) < 0)
				return ptrace_err(s, "PTRACE_CONT");
			break;
		}
		if (ptrace(PTRACE_INTERRUPT, s->tid, 0, 0L) < 0)
			return ptrace_err(s, "PTRACE_INTERRUPT");
	}
}

static int save_regs(struct inject_session *s)
{
	if (ptrace(PTRACE_GETREGS, s->tid, 0, &s->saved) < 0)
		return ptrace_err(s, "PTRACE_GETREGS");
	return 0;
}

int inject__attach(pid_t pid, struct inject_session **out)
{
	struct inject_session *s;
	char comm[32];
	long tracer;
	int err;

	*out = NULL;
	if (pid <= 0)
		return fail(-ESRCH, "pid %d: no such process", pid);
	s = calloc(1, sizeof(*s));
	if (!s)
		return fail(-ENOMEM, "out of memory");
	s->pid = pid;
	s->stub_fd = -1;
	err = choose_thread(pid, &s->tid);
	if (err)
		goto cleanup;
	tracer = status_long(pid, s->tid, "TracerPid", 0);
	if (tracer > 0) {
		comm_of(tracer, comm, sizeof(comm));
		err = fail(-EBUSY, "pid %d is already traced by pid %ld (%s)",
			   pid, tracer, comm);
		goto cleanup;
	}
	/* Before stopping anything: the scan reads a few pages. */
	err = find_site(s);
	if (err == -EACCES || err == -EPERM)
		err = seize_error(pid, s->tid, EPERM);	/* maps: same check */
	if (err)
		goto cleanup;
	/*
	 * TRACESYSGOOD marks syscall stops (see the top of the file); no
	 * EXITKILL: the target must outlive us.
	 */
	if (ptrace(PTRACE_SEIZE, s->tid, 0, (long)PTRACE_O_TRACESYSGOOD) < 0) {
		err = seize_error(pid, s->tid, errno);
		goto cleanup;
	}
	s->seized = true;
	if (ptrace(PTRACE_INTERRUPT, s->tid, 0, 0L) < 0) {
		err = ptrace_err(s, "PTRACE_INTERRUPT");
		goto cleanup;
	}
	err = settle(s, true);
	if (err)
		goto cleanup;
	err = save_regs(s);
	if (err)
		goto cleanup;
	if (s->saved.cs != USER_CS_64) {
		err = fail(-EINVAL, "pid %d: thread %d runs 32-bit code: only "
			   "x86-64 processes are supported", pid, s->tid);
		goto cleanup;
	}
	err = load_filters(s);
	if (err)
		goto cleanup;
	arm_stub(s);
	vlog("inject: pid %d: stopped thread %d (syscall %lld, rax %lld, rip %#llx); "
	     "syscall site %#llx", pid, s->tid, (long long)s->saved.orig_rax,
	     (long long)s->saved.rax, (unsigned long long)s->saved.rip,
	     (unsigned long long)s->site);
	*out = s;
	return 0;

cleanup:
	{
		struct error_saved why;

		/* Detaching must not replace the reason we failed. */
		error__save(&why);
		inject__detach(s);
		error__restore(&why);
	}
	return err;
}

void inject__set_site(struct inject_session *s, uint64_t site)
{
	s->site = site;
}

uint64_t inject__site(const struct inject_session *s)
{
	return s->site;
}

unsigned int inject__signals_delivered(const struct inject_session *s)
{
	return s->nsignals;
}

void inject__stopped_state(const struct inject_session *s, long *nr, long *rax)
{
	*nr = (long)s->saved.orig_rax;
	*rax = (long)s->saved.rax;
}

int inject__syscall(struct inject_session *s, long nr, const uint64_t args[6],
		    long *ret)
{
	static const uint64_t none[6];
	struct __ptrace_syscall_info info;
	struct user_regs_struct r;
	int status = 0, err, tries, n;
	enum stop_kind kind;

	if (!args)
		args = none;
	if (s->gone)
		return fail(-ESRCH, "pid %d has exited", s->pid);
	if (s->nfilters) {
		err = seccomp_check(s, nr, args);
		if (err)
			return err;
	}
	for (tries = 0;; tries++) {
		r = s->saved;
		r.rax = nr;
		/* No syscall being restarted: the kernel leaves rax and rip be. */
		r.orig_rax = -1;
		r.rip = s->site;
		r.rdi = args[0];
		r.rsi = args[1];
		r.rdx = args[2];
		r.r10 = args[3];
		r.r8 = args[4];
		r.r9 = args[5];
		if (ptrace(PTRACE_SETREGS, s->tid, 0, &r) < 0)
			return ptrace_err(s, "PTRACE_SETREGS");
		/*
		 * Run to the call's entry; pass over group stops and the like,
		 * and the calls of the x86 uprobe trampoline (6.x optimizes a
		 * uprobe on a 5-byte NOP into a call to a page that makes the
		 * `uprobe` syscall), met when the site sits behind a probed NOP.
		 */
		for (n = 0;; n++) {
			if (n >= MAX_SIGNALS)
				goto confused;
			if (ptrace(PTRACE_SYSCALL, s->tid, 0, 0L) < 0)
				return ptrace_err(s, "PTRACE_SYSCALL");
			err = wait_stop(s, &status, false);
			if (err)
				return err;
			kind = stop_kind(status);
			if (kind == STOP_EVENT || kind == STOP_OTHER)
				continue;
			if (kind == STOP_SIGNAL)
				break;
			/* Old kernels cannot say which call: it is ours. */
			if (ptrace(PTRACE_GET_SYSCALL_INFO, s->tid, sizeof(info),
				   &info) <= 0)
				break;
			if (info.op == PTRACE_SYSCALL_INFO_ENTRY &&
			    (long)info.entry.nr == nr)
				break;
			if (info.op == PTRACE_SYSCALL_INFO_EXIT)
				continue;	/* a trampoline's call returns */
			if (info.op == PTRACE_SYSCALL_INFO_ENTRY &&
			    (info.entry.nr == NR_uretprobe ||
			     info.entry.nr == NR_uprobe))
				continue;
			/* Not ours: cancel it (orig_rax -1 skips the call). */
			vlog("inject: pid %d: entry of syscall %llu at %#llx, "
			     "not %ld: cancelled", s->pid,
			     (unsigned long long)info.entry.nr,
			     (unsigned long long)info.instruction_pointer, nr);
			if (ptrace(PTRACE_GETREGS, s->tid, 0, &r) == 0) {
				r.orig_rax = -1;
				ptrace(PTRACE_SETREGS, s->tid, 0, &r);
			}
			goto confused_in_call;
		}
		if (kind == STOP_SYSCALL)
			break;
		/*
		 * A signal came before the call was made (it was dequeued on the
		 * way back to user mode): put the thread's own registers back,
		 * let the signal be delivered just as if we were not there, stop
		 * the thread again wherever that leads, and start over.
		 */
		s->pending_sig = WSTOPSIG(status);
		if (ptrace(PTRACE_SETREGS, s->tid, 0, &s->saved) < 0)
			return ptrace_err(s, "PTRACE_SETREGS");
		if (tries >= MAX_SIGNALS)
			return fail(-EAGAIN, "pid %d: signals keep arriving (%d "
				    "passed on): cannot inject", s->pid, tries);
		if (ptrace(PTRACE_CONT, s->tid, 0, (long)s->pending_sig) < 0)
			return ptrace_err(s, "PTRACE_CONT");
		s->pending_sig = 0;
		s->nsignals++;
		if (ptrace(PTRACE_INTERRUPT, s->tid, 0, 0L) < 0)
			return ptrace_err(s, "PTRACE_INTERRUPT");
		err = settle(s, false);
		if (!err)
			err = save_regs(s);
		if (err)
			return err;
		arm_stub(s);
	}
	/* At the entry of our call: run it. */
	if (ptrace(PTRACE_SYSCALL, s->tid, 0, 0L) < 0)
		return ptrace_err(s, "PTRACE_SYSCALL");
	err = wait_stop(s, &status, false);
	if (err)
		return err;
	if (stop_kind(status) != STOP_SYSCALL)
		goto confused;
	if (ptrace(PTRACE_GETREGS, s->tid, 0, &r) < 0)
		return ptrace_err(s, "PTRACE_GETREGS");
	*ret = (long)r.rax;
	/* Back to the thread's own registers: safe to leave from here on. */
	if (ptrace(PTRACE_SETREGS, s->tid, 0, &s->saved) < 0)
		return ptrace_err(s, "PTRACE_SETREGS");
	return 0;

confused_in_call:
	if (ptrace(PTRACE_SYSCALL, s->tid, 0, 0L) == 0)
		wait_stop(s, &status, false);
confused:
	ptrace(PTRACE_SETREGS, s->tid, 0, &s->saved);
	return fail(-EIO, "pid %d: unexpected ptrace stop %#x while injecting "
		    "syscall %ld", s->pid, status, nr);
}

/* Inject NR: 0 and the call's raw result in *RET, or why it was not made. */
static int sys_raw(struct inject_session *s, long *ret, long nr, uint64_t a0,
		   uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5)
{
	uint64_t args[6] = { a0, a1, a2, a3, a4, a5 };

	return inject__syscall(s, nr, args, ret);
}

/* Inject NR: its result, or a negative errno (its own or the injection's). */
static long sys(struct inject_session *s, const char *what, long nr,
		uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
		uint64_t a5)
{
	long ret;
	int err;

	err = sys_raw(s, &ret, nr, a0, a1, a2, a3, a4, a5);
	if (err)
		return err;
	if (ret < 0 && ret >= -4095)
		return fail(ret, "pid %d: %s in the target: %s", s->pid, what,
			    strerror(-ret));
	return ret;
}

int inject__detach(struct inject_session *s)
{
	int err = 0, i;

	if (!s)
		return 0;
	if (s->seized && !s->gone && s->scratch)
		sys(s, "munmap", NR_munmap, s->scratch, PAGE_SZ, 0, 0, 0, 0);
	/* The registers are the thread's own between calls: just let go. */
	if (s->seized && !s->gone &&
	    ptrace(PTRACE_DETACH, s->tid, 0, (long)s->pending_sig) < 0) {
		if (errno != ESRCH)
			err = fail(-errno, "pid %d: ptrace(PTRACE_DETACH): %s",
				   s->pid, strerror(errno));
		else if (thread_state(s->pid, s->tid) == 0)
			s->gone = true;
	}
	if (s->seized && s->gone)
		err = fail(-ESRCH, "pid %d has exited", s->pid);
	if (s->stub_fd >= 0)
		close(s->stub_fd);
	for (i = 0; i < s->nfilters; i++)
		free(s->filters[i].insns);
	free(s->filters);
	free(s);
	return err;
}

/* ---- target memory ---- */

static int mem_rw(pid_t pid, uint64_t addr, void *buf, size_t len, bool write)
{
	struct iovec local = { buf, len }, remote = { (void *)addr, len };
	ssize_t n;

	n = write ? process_vm_writev(pid, &local, 1, &remote, 1, 0)
		  : process_vm_readv(pid, &local, 1, &remote, 1, 0);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EFAULT;
}

/* Our anonymous read-write page in the target, for arguments and results. */
static int scratch(struct inject_session *s, uint64_t *addr)
{
	long ret;

	if (!s->scratch) {
		ret = sys(s, "mmap (scratch page)", NR_mmap, 0, PAGE_SZ,
			  PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			  (uint64_t)-1, 0);
		if (ret < 0)
			return ret;
		s->scratch = ret;
	}
	*addr = s->scratch;
	return 0;
}

/* ---- the page ---- */

static void page_paths(struct inject_page *pg)
{
	snprintf(pg->path, sizeof(pg->path), "/proc/%d/fd/%d", getpid(), pg->fd);
	snprintf(pg->map_path, sizeof(pg->map_path),
		 "/proc/%d/map_files/%llx-%llx", pg->pid,
		 (unsigned long long)pg->addr,
		 (unsigned long long)(pg->addr + pg->len + PAGE_SZ));
}

int inject__session_create_page(struct inject_session *s, const char *name,
				size_t len, uint64_t hint,
				struct inject_page *out)
{
	uint64_t buf = 0, addr = 0, data = 0;
	long tfd = -1, ret;
	int err = 0, fd = -1, pidfd = -1, sfd;
	size_t nlen = strlen(name);
	bool wipeonfork = false;
	uint8_t *stub = NULL;
	char path[64];
	struct stat st;

	memset(out, 0, sizeof(*out));
	out->fd = -1;
	/* /proc/PID/maps shows the name: keep it findable there. */
	if (!nlen || nlen > MEMFD_NAME_MAX || strpbrk(name, "\n\\"))
		return fail(-EINVAL, "page name must have 1 to %d bytes, "
			    "no newline or backslash", MEMFD_NAME_MAX);
	if (!len || len > (1UL << 30))
		return fail(-EINVAL, "page length %zu out of range", len);
	len = (len + PAGE_SZ - 1) & ~(PAGE_SZ - 1);

	err = scratch(s, &buf);
	if (err)
		return err;
	err = mem_rw(s->pid, buf, (void *)name, nlen + 1, true);
	if (err)
		return fail(err, "pid %d: writing to its scratch page: %s",
			    s->pid, strerror(-err));
	/*
	 * MFD_EXEC says outright that the file will be mapped executable
	 * (6.3+, where vm.memfd_noexec can forbid it); older kernels reject
	 * the flag, so ask again without it.
	 */
	err = sys_raw(s, &ret, NR_memfd_create, buf, MFD_CLOEXEC | MFD_EXEC,
		      0, 0, 0, 0);
	if (!err && ret == -EINVAL)
		err = sys_raw(s, &ret, NR_memfd_create, buf, MFD_CLOEXEC,
			      0, 0, 0, 0);
	if (err)
		return err;
	if (ret == -EACCES || ret == -EPERM)
		return fail(ret, "pid %d: memfd_create(MFD_EXEC) refused in the "
			    "target (vm.memfd_noexec=2, or a security module)", s->pid);
	if (ret < 0)
		return fail(ret, "pid %d: memfd_create in the target: %s", s->pid,
			    strerror(-ret));
	tfd = ret;

	/* Our own descriptor of the file, before the target closes its. */
	pidfd = syscall(SYS_pidfd_open, s->pid, 0);
	if (pidfd < 0) {
		err = fail(-errno, "pidfd_open(%d): %s", s->pid, strerror(errno));
		goto cleanup;
	}
	fd = syscall(SYS_pidfd_getfd, pidfd, (int)tfd, 0);
	if (fd < 0) {
		err = fail(-errno, "pidfd_getfd(pid %d, fd %ld): %s", s->pid, tfd,
			   strerror(errno));
		goto cleanup;
	}
	/*
	 * Sized and filled from here: fewer calls made without a stub. The
	 * caller's LEN bytes, then the stub page.
	 */
	stub = malloc(PAGE_SZ);
	if (!stub) {
		err = fail(-ENOMEM, "out of memory");
		goto cleanup;
	}
	build_stub(stub);
	if (ftruncate(fd, len + PAGE_SZ) < 0 ||
	    pwrite(fd, stub, PAGE_SZ, len) != (ssize_t)PAGE_SZ) {
		err = fail(-errno, "sizing the memfd to %zu: %s", len + PAGE_SZ,
			   strerror(errno));
		goto cleanup;
	}
	/*
	 * MAP_PRIVATE: the kernel installs no uprobe in a shared mapping.
	 * The data region's length more than the file, to reserve its place
	 * next to the stub in the same call (MAP_FIXED below must replace
	 * only what is ours); it is replaced below (never touched before:
	 * past the end of the file it would fault).
	 */
	ret = sys(s, "mmap of the memfd", NR_mmap, hint, len + PAGE_SZ + INJECT_DATA_LEN,
		  PROT_READ | PROT_EXEC, MAP_PRIVATE, tfd, 0);
	if (ret < 0) {
		err = ret;
		goto cleanup;
	}
	addr = ret;
	/* Its own open file: the lock goes with the session, not with OUT. */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	sfd = open(path, O_RDWR | O_CLOEXEC);
	if (sfd >= 0) {
		use_stub(s, sfd, len, addr + len);
		close(sfd);
	}
	data = addr + len + PAGE_SZ;
	ret = sys(s, "mmap of the data page", NR_mmap, data, INJECT_DATA_LEN,
		  PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
		  (uint64_t)-1, 0);
	if (ret >= 0 && (uint64_t)ret != data)
		ret = fail(-EFAULT, "pid %d: the data page landed at %#lx, not "
			   "%#llx", s->pid, ret, (unsigned long long)data);
	if (ret < 0) {
		err = ret;
		goto cleanup;
	}
	/*
	 * A forked child gets the data page zeroed (4.14+): code in the page
	 * can tell the process it was set up in from a child of it.
	 */
	err = sys_raw(s, &ret, NR_madvise, data, INJECT_DATA_WIPED, MADV_WIPEONFORK, 0, 0, 0);
	if (err)
		goto cleanup;
	wipeonfork = ret == 0;
	if (ret < 0)
		vlog("inject: pid %d: madvise(MADV_WIPEONFORK): %s: forked children "
		     "keep the data page", s->pid, strerror(-ret));
	ret = sys(s, "close of the memfd", NR_close, tfd, 0, 0, 0, 0, 0);
	tfd = -1;
	if (ret < 0) {
		err = ret;
		goto cleanup;
	}
	if (fstat(fd, &st) < 0) {
		err = fail(-errno, "fstat of the memfd: %s", strerror(errno));
		goto cleanup;
	}
	out->pid = s->pid;
	out->fd = fd;
	out->addr = addr;
	out->len = len;
	out->data = data;
	out->data_len = INJECT_DATA_LEN;
	out->wipeonfork = wipeonfork;
	out->dev = st.st_dev;
	out->ino = st.st_ino;
	page_paths(out);
	vlog("inject: pid %d: page %s at %#llx (%zu bytes), ours as %s", s->pid,
	     name, (unsigned long long)addr, len, out->path);
	fd = -1;
	err = 0;

cleanup:
	if (err && addr)
		sys(s, "munmap of the page", NR_munmap, addr,
		    len + PAGE_SZ + INJECT_DATA_LEN, 0, 0, 0, 0);
	free(stub);
	if (tfd >= 0) {
		struct error_saved why;

		error__save(&why);
		sys(s, "close of the memfd", NR_close, tfd, 0, 0, 0, 0, 0);
		error__restore(&why);
	}
	if (fd >= 0)
		close(fd);
	if (pidfd >= 0)
		close(pidfd);
	return err;
}

int inject__create_page(pid_t pid, const char *name, size_t len,
			struct inject_page *out)
{
	struct inject_session *s;
	int err;

	memset(out, 0, sizeof(*out));
	out->fd = -1;
	err = inject__attach(pid, &s);
	if (err)
		return err;
	err = inject__session_create_page(s, name, len, 0, out);
	if (err) {
		struct error_saved why;

		error__save(&why);
		inject__detach(s);
		error__restore(&why);
		return err;
	}
	err = inject__detach(s);
	if (err)
		inject__page_close(out);
	return err;
}

/* Is FLAG (two letters, as smaps's VmFlags shows them) set on the VMA at START? */
static bool vma_flag(pid_t pid, uint64_t start, const char *flag)
{
	char path[64], line[512];
	unsigned long long a, b;
	bool in = false, found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps", pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx-%llx ", &a, &b) == 2) {	/* a VMA's first line */
			in = a == start;
			continue;
		}
		if (in && !strncmp(line, "VmFlags:", 8)) {
			char *p = line + 8;

			while ((p = strstr(p, flag))) {
				if (p[-1] == ' ' && (p[2] == ' ' || p[2] == '\n')) {
					found = true;
					break;
				}
				p += 2;
			}
			break;
		}
	}
	fclose(f);
	return found;
}

int inject__find_page(pid_t pid, const char *name, struct inject_page *out)
{
	return inject__find_page_after(pid, name, 0, out);
}

int inject__find_page_after(pid_t pid, const char *name, uint64_t after,
			    struct inject_page *out)
{
	char path[64], line[PATH_MAX + 128], perms[8], want[MEMFD_NAME_MAX + 32];
	unsigned long long start, end, off, ino, dstart, dend;
	bool match = false;
	int n, fd, err = -ENOENT;
	struct stat st;
	FILE *f;

	memset(out, 0, sizeof(*out));
	out->fd = -1;
	snprintf(want, sizeof(want), "/memfd:%s (deleted)", name);
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	if (!f && errno == ENOENT)
		return fail(-ESRCH, "pid %d: no such process", pid);
	if (!f)
		return fail(-errno, "pid %d: %s: %s", pid, path, strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		n = 0;
		if (match) {
			/*
			 * The data page: the anonymous mapping right after the
			 * stub, in two parts when the wipe took (their flags
			 * differ): the second, if any, is on the next line.
			 */
			if (sscanf(line, "%llx-%llx %7s %*s %*s %llu %n", &dstart,
				   &dend, perms, &ino, &n) >= 4 && dstart == (out->data ?
				   out->data + out->data_len : out->addr + out->len + PAGE_SZ) &&
			    !strcmp(perms, "rw-p") && !ino && dend - dstart >= PAGE_SZ) {
				if (!out->data)
					out->data = dstart;
				out->data_len += dend - dstart;
				err = 0;
				if (out->data_len < INJECT_DATA_LEN)
					continue;	/* its kept part may follow */
				out->data_len = INJECT_DATA_LEN;
				break;
			}
			if (!err)
				break;
			/* No data page (an older layout): this line may be the next page. */
			match = false;
			n = 0;
		}
		if (sscanf(line, "%llx-%llx %7s %llx %*s %llu %n", &start, &end,
			   perms, &off, &ino, &n) < 5 || !n)
			continue;
		line[strcspn(line, "\n")] = '\0';
		if (start <= after || strcmp(line + n, want) || strcmp(perms, "r-xp") ||
		    off || end - start < 2 * PAGE_SZ || !is_stub(pid, end - PAGE_SZ))
			continue;
		out->pid = pid;
		out->addr = start;
		out->len = end - start - PAGE_SZ;
		out->ino = ino;
		match = true;	/* if a data page follows */
	}
	fclose(f);
	if (err) {
		memset(out, 0, sizeof(*out));
		out->fd = -1;
		return fail(err, "pid %d: no page named %s", pid, name);
	}
	out->wipeonfork = vma_flag(pid, out->data, "wf");
	page_paths(out);
	/* Works after the target closed its descriptor (needs CAP_SYS_ADMIN). */
	fd = open(out->map_path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		err = fail(-errno, "open %s: %s", out->map_path, strerror(errno));
		goto cleanup;
	}
	if (fstat(fd, &st) < 0 || st.st_ino != out->ino) {
		close(fd);
		err = fail(-ESTALE, "pid %d: page %s changed while we opened it",
			   pid, name);
		goto cleanup;
	}
	out->fd = fd;
	out->dev = st.st_dev;
	page_paths(out);
	return 0;

cleanup:
	memset(out, 0, sizeof(*out));
	out->fd = -1;
	return err;
}

int inject__write_data(const struct inject_page *pg, size_t off,
		       const void *buf, size_t len)
{
	int err;

	if (!pg->pid || !pg->data)
		return fail(-EBADF, "page has no data page");
	if (off > pg->data_len || len > pg->data_len - off)
		return fail(-EINVAL, "write of %zu bytes at %zu past the data region",
			    len, off);
	err = mem_rw(pg->pid, pg->data + off, (void *)buf, len, true);
	if (err)
		return fail(err, "pid %d: writing its data page: %s", pg->pid,
			    strerror(-err));
	return 0;
}

int inject__read_data(const struct inject_page *pg, size_t off, void *buf,
		      size_t len)
{
	int err;

	if (!pg->pid || !pg->data)
		return fail(-EBADF, "page has no data page");
	if (off > pg->data_len || len > pg->data_len - off)
		return fail(-EINVAL, "read of %zu bytes at %zu past the data region",
			    len, off);
	err = mem_rw(pg->pid, pg->data + off, buf, len, false);
	if (err)
		return fail(err, "pid %d: reading its data page: %s", pg->pid,
			    strerror(-err));
	return 0;
}

int inject__read_page(const struct inject_page *pg, size_t off, void *buf,
		      size_t len)
{
	int err;

	if (!pg->pid)
		return fail(-EBADF, "page is not open");
	if (off > pg->len || len > pg->len - off)
		return fail(-EINVAL, "read of %zu bytes at %zu past the page", len, off);
	err = mem_rw(pg->pid, pg->addr + off, buf, len, false);
	if (err)
		return fail(err, "pid %d: reading its page: %s", pg->pid, strerror(-err));
	return 0;
}

int inject__write_page(const struct inject_page *pg, size_t off,
		       const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t n;

	if (!pg->pid || pg->fd < 0)
		return fail(-EBADF, "page is not open");
	if (off > pg->len || len > pg->len - off)
		return fail(-EINVAL, "write of %zu bytes at %zu past the page "
			    "(%zu bytes)", len, off, pg->len);
	while (len) {
		n = pwrite(pg->fd, p, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return fail(n < 0 ? -errno : -EIO, "writing the page: %s",
				    n < 0 ? strerror(errno) : "short write");
		p += n;
		off += n;
		len -= n;
	}
	return 0;
}

void inject__page_close(struct inject_page *pg)
{
	if (pg->pid && pg->fd >= 0)
		close(pg->fd);
	memset(pg, 0, sizeof(*pg));
	pg->fd = -1;
}

/* ---- one 8-byte store ---- */

/*
 * Why not /proc/PID/mem, process_vm_writev or PTRACE_POKEDATA: they copy
 * with the kernel's memcpy/copy_from_user, which on CPUs with FSRM (this
 * machine's among them) is `rep movsb`, and the architecture does not
 * promise that a string copy of 8 bytes is seen as one store by the
 * target's other threads, which keep running. They also write through
 * read-only protections (FOLL_FORCE).
 * The store is made instead by the target's thread itself, in the kernel's
 * put_user() of a pointer (x86-64 __put_user_8: one aligned movq, atomic):
 * set_tid_address(VAL) makes VAL the thread's clear_child_tid, and
 * prctl(PR_GET_TID_ADDRESS, ADDR) stores it to ADDR with the target's own
 * permissions (a read-only address gets -EFAULT). The thread's own
 * clear_child_tid is read first and put back at once; meanwhile the thread
 * is stopped, so nothing looks at it (it is used when the thread exits).
 * Were we killed in between, the thread would keep VAL there, and on its
 * exit the kernel would try to clear the int at VAL (harmless for a code
 * address, such as a trampoline's: the write fails).
 */
int inject__store_u64(struct inject_session *s, uint64_t addr, uint64_t val)
{
	uint64_t buf = 0, back;
	long ret, ret2;
	int err;

	if (addr & 7)
		return fail(-EINVAL, "address %#llx is not 8-byte aligned",
			    (unsigned long long)addr);
	if (!s->have_tid_addr) {
		err = scratch(s, &buf);
		if (err)
			return err;
		err = sys_raw(s, &ret, NR_prctl, PR_GET_TID_ADDRESS, buf, 0, 0,
			      0, 0);
		if (err)
			return err;
		if (ret == -EINVAL)
			return fail(-EOPNOTSUPP, "pid %d: no PR_GET_TID_ADDRESS "
				    "(kernel without CONFIG_CHECKPOINT_RESTORE)",
				    s->pid);
		if (ret < 0)
			return fail(ret, "pid %d: prctl(PR_GET_TID_ADDRESS): %s",
				    s->pid, strerror(-ret));
		err = mem_rw(s->pid, buf, &s->tid_addr, 8, false);
		if (err)
			return fail(err, "pid %d: reading its scratch page: %s",
				    s->pid, strerror(-err));
		s->have_tid_addr = true;
	}
	ret = sys(s, "set_tid_address", NR_set_tid_address, val, 0, 0, 0, 0, 0);
	if (ret < 0)
		return ret;
	err = sys_raw(s, &ret, NR_prctl, PR_GET_TID_ADDRESS, addr, 0, 0, 0, 0);
	{
		struct error_saved why;

		error__save(&why);
		ret2 = sys(s, "set_tid_address", NR_set_tid_address, s->tid_addr,
			   0, 0, 0, 0, 0);
		error__restore(&why);
	}
	if (err)
		return err;
	if (ret == -EFAULT)
		return fail(-EFAULT, "pid %d: address %#llx is not writable",
			    s->pid, (unsigned long long)addr);
	if (ret < 0)
		return fail(ret, "pid %d: prctl(PR_GET_TID_ADDRESS): %s", s->pid,
			    strerror(-ret));
	if (ret2 < 0)
		return fail(ret2, "pid %d: restoring its clear_child_tid: %s",
			    s->pid, strerror(-ret2));
	err = mem_rw(s->pid, addr, &back, 8, false);
	if (err)
		return fail(err, "pid %d: reading back %#llx: %s", s->pid,
			    (unsigned long long)addr, strerror(-err));
	if (back != val)
		return fail(-EIO, "pid %d: %#llx holds %#llx after storing %#llx "
			    "(changed by the target?)", s->pid,
			    (unsigned long long)addr, (unsigned long long)back,
			    (unsigned long long)val);
	return 0;
}

int inject__write_u64(pid_t pid, uint64_t addr, uint64_t val)
{
	struct inject_session *s;
	struct error_saved why;
	int err, err2;

	if (addr & 7)
		return fail(-EINVAL, "address %#llx is not 8-byte aligned",
			    (unsigned long long)addr);
	err = inject__attach(pid, &s);
	if (err)
		return err;
	err = inject__store_u64(s, addr, val);
	error__save(&why);
	err2 = inject__detach(s);
	if (err) {
		error__restore(&why);
		return err;
	}
	return err2;
}

int inject__read_u64(pid_t pid, uint64_t addr, uint64_t *val)
{
	int err;

	if (addr & 7)
		return fail(-EINVAL, "address %#llx is not 8-byte aligned",
			    (unsigned long long)addr);
	err = mem_rw(pid, addr, val, 8, false);
	if (err)
		return fail(err, "pid %d: reading %#llx: %s", pid,
			    (unsigned long long)addr, strerror(-err));
	return 0;
}

/*
 * Memory the target and we share (the recorder's ring): a memfd mapped
 * MAP_SHARED read-write in the target, and by us. One left by an attach
 * before (same name, same length, and USABLE says so) is taken again: the
 * target keeps it, as it keeps the page.
 */
static int shared_map(int fd, size_t len, void **mem)
{
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);

	if (m == MAP_FAILED)
		return fail(-errno, "mmap of the shared memory: %s", strerror(errno));
	*mem = m;
	return 0;
}

static int find_shared(pid_t pid, const char *name, size_t len,
		       bool (*usable)(const void *mem, void *arg), void *arg,
		       struct inject_shared *out)
{
	char path[64], line[PATH_MAX + 128], perms[8], want[MEMFD_NAME_MAX + 32];
	unsigned long long start, end, off;
	int n, fd, err;
	FILE *f;

	snprintf(want, sizeof(want), "/memfd:%s (deleted)", name);
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	err = -ENOENT;
	while (err == -ENOENT && fgets(line, sizeof(line), f)) {
		n = 0;
		if (sscanf(line, "%llx-%llx %7s %llx %*s %*s %n", &start, &end, perms, &off,
			   &n) < 4 || !n)
			continue;
		line[strcspn(line, "\n")] = '\0';
		if (strcmp(line + n, want) || strcmp(perms, "rw-s") || off || end - start != len)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/map_files/%llx-%llx", pid, start, end);
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			continue;
		err = shared_map(fd, len, &out->mem);
		close(fd);
		if (!err && usable && !usable(out->mem, arg)) {
			munmap(out->mem, len);
			out->mem = NULL;
			err = -ENOENT;	/* another's (a forked child keeps its parent's) */
		}
		if (!err)
			out->addr = start;
	}
	fclose(f);
	return err;
}

int inject__shared(pid_t pid, const char *name, size_t len,
		   bool (*usable)(const void *mem, void *arg), void *arg,
		   struct inject_shared *out)
{
	struct inject_session *s = NULL;
	uint64_t buf = 0;
	long tfd = -1, ret;
	int err, fd = -1, pidfd = -1;

	memset(out, 0, sizeof(*out));
	len = (len + PAGE_SZ - 1) & ~(PAGE_SZ - 1);
	out->len = len;
	if (strlen(name) > MEMFD_NAME_MAX)
		return fail(-EINVAL, "shared memory name too long");
	if (!find_shared(pid, name, len, usable, arg, out)) {
		out->found = true;
		return 0;
	}
	err = inject__attach(pid, &s) ?: scratch(s, &buf);
	if (err)
		goto cleanup;
	err = mem_rw(pid, buf, (void *)name, strlen(name) + 1, true);
	if (err) {
		err = fail(err, "pid %d: writing to its scratch page: %s", pid, strerror(-err));
		goto cleanup;
	}
	ret = sys(s, "memfd_create", NR_memfd_create, buf, MFD_CLOEXEC, 0, 0, 0, 0);
	if (ret < 0) {
		err = ret;
		goto cleanup;
	}
	tfd = ret;
	pidfd = syscall(SYS_pidfd_open, pid, 0);
	fd = pidfd < 0 ? -1 : syscall(SYS_pidfd_getfd, pidfd, (int)tfd, 0);
	if (fd < 0) {
		err = fail(-errno, "pid %d: its memfd: %s", pid, strerror(errno));
		goto cleanup;
	}
	if (ftruncate(fd, len) < 0) {
		err = fail(-errno, "sizing the shared memory to %zu: %s", len, strerror(errno));
		goto cleanup;
	}
	ret = sys(s, "mmap of the shared memory", NR_mmap, 0, len, PROT_READ | PROT_WRITE,
		  MAP_SHARED, tfd, 0);
	if (ret < 0) {
		err = ret;
		goto cleanup;
	}
	out->addr = ret;
	err = shared_map(fd, len, &out->mem);
	if (err) {
		sys(s, "munmap of the shared memory", NR_munmap, out->addr, len, 0, 0, 0, 0);
		out->addr = 0;
	}
cleanup:
	if (tfd >= 0)
		sys(s, "close of the memfd", NR_close, tfd, 0, 0, 0, 0, 0);
	if (fd >= 0)
		close(fd);
	if (pidfd >= 0)
		close(pidfd);
	inject__detach(s);
	if (!err)
		vlog("inject: pid %d: shared memory %s at %#llx (%zu bytes)", pid, name,
		     (unsigned long long)out->addr, len);
	return err;
}

void inject__shared_close(struct inject_shared *sh)
{
	if (sh->mem)
		munmap(sh->mem, sh->len);
	memset(sh, 0, sizeof(*sh));
}

#else /* !__x86_64__ */

#define UNSUPPORTED() fail(-EOPNOTSUPP, "injection is only implemented for x86-64")

int inject__attach(pid_t pid, struct inject_session **out)
{
	*out = NULL;
	return UNSUPPORTED();
}
int inject__detach(struct inject_session *s) { return 0; }
int inject__syscall(struct inject_session *s, long nr, const uint64_t args[6],
		    long *ret) { return UNSUPPORTED(); }
void inject__set_site(struct inject_session *s, uint64_t site) { }
uint64_t inject__site(const struct inject_session *s) { return 0; }
unsigned int inject__signals_delivered(const struct inject_session *s) { return 0; }
void inject__stopped_state(const struct inject_session *s, long *nr, long *rax)
{
	*nr = -1;
	*rax = 0;
}
int inject__session_create_page(struct inject_session *s, const char *name,
				size_t len, uint64_t hint,
				struct inject_page *out)
{
	memset(out, 0, sizeof(*out));
	out->fd = -1;
	return UNSUPPORTED();
}
int inject__create_page(pid_t pid, const char *name, size_t len,
			struct inject_page *out)
{
	memset(out, 0, sizeof(*out));
	out->fd = -1;
	return UNSUPPORTED();
}
int inject__find_page(pid_t pid, const char *name, struct inject_page *out)
{
	return inject__find_page_after(pid, name, 0, out);
}
int inject__find_page_after(pid_t pid, const char *name, uint64_t after,
			    struct inject_page *out)
{
	memset(out, 0, sizeof(*out));
	out->fd = -1;
	return UNSUPPORTED();
}
int inject__write_page(const struct inject_page *pg, size_t off,
		       const void *buf, size_t len) { return UNSUPPORTED(); }
int inject__write_data(const struct inject_page *pg, size_t off,
		       const void *buf, size_t len) { return UNSUPPORTED(); }
int inject__read_data(const struct inject_page *pg, size_t off, void *buf,
		      size_t len) { return UNSUPPORTED(); }
int inject__read_page(const struct inject_page *pg, size_t off, void *buf,
		      size_t len) { return UNSUPPORTED(); }
void inject__page_close(struct inject_page *pg)
{
	memset(pg, 0, sizeof(*pg));
	pg->fd = -1;
}
int inject__store_u64(struct inject_session *s, uint64_t addr, uint64_t val)
{ return UNSUPPORTED(); }
int inject__write_u64(pid_t pid, uint64_t addr, uint64_t val) { return UNSUPPORTED(); }
int inject__read_u64(pid_t pid, uint64_t addr, uint64_t *val) { return UNSUPPORTED(); }
int inject__shared(pid_t pid, const char *name, size_t len,
		   bool (*usable)(const void *mem, void *arg), void *arg,
		   struct inject_shared *out)
{
	memset(out, 0, sizeof(*out));
	return UNSUPPORTED();
}
void inject__shared_close(struct inject_shared *sh) { }

#endif /* __x86_64__ */
