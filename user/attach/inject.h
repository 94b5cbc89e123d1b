/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Run system calls inside another process (ptrace) and give it a
 * file-backed executable page. x86-64 Linux only: elsewhere every call
 * fails with -EOPNOTSUPP.
 *
 * Every function that fails returns a negative errno and leaves a one-line
 * reason (no "pytm-bpf:" prefix, no newline) in the error channel
 * (error__last(), util.h).
 *
 * How a session works, and what the target sees:
 * - One thread is stopped (PTRACE_SEIZE + PTRACE_INTERRUPT), its registers
 *   saved; each injected call runs with rip on a `syscall` instruction in
 *   the target (see inject__site) and orig_rax = -1, between PTRACE_SYSCALL
 *   stops;
 *   the saved registers are put back after every call, so an interrupted
 *   blocking call (read, sleep, lock wait) restarts as if nothing happened.
 * - A signal that arrives while the thread is stopped is delivered at once,
 *   with its original siginfo, on the thread's own registers; the session
 *   then stops the thread again and carries on.
 * - If the tracer dies between two calls, the kernel detaches and the target
 *   resumes normally. If it dies inside a call, the thread makes the call
 *   and goes on: in a process that has a page of ours, into code of that
 *   page that restores its registers (safe); otherwise into libc with
 *   borrowed registers, which kills it: only the calls that make the first
 *   page of a process run so.
 * - Only non-blocking calls may be injected (see inject__syscall).
 * - A thread stopped in epoll_wait (and a few other waits the kernel does
 *   not restart) sees EINTR, as if a signal had come; another thread is
 *   stopped instead when there is one not in such a wait.
 * - A session belongs to the thread that attached (ptrace's rule). While
 *   it lasts, the stops send SIGCHLD to this process, and a waitpid(-1)
 *   elsewhere in it could take the stops from us: do not run both at once.
 */
#ifndef __PYTM_INJECT_H
#define __PYTM_INJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "page.h"

/*
 * The data region's length: the sampler's control block and set, wiped in
 * forked children, then what they keep (page.h).
 */
#define INJECT_DATA_LEN		PYTM_DATA_LEN
#define INJECT_DATA_WIPED	PYTM_DATA_WIPED

/* An executable page in a target, backed by a memfd we hold open. */
struct inject_page {
	pid_t pid;		/* 0: empty, nothing to close */
	int fd;			/* ours, on the memfd (O_RDWR, O_CLOEXEC) */
	uint64_t addr;		/* start of the mapping in the target */
	size_t len;		/* the caller's part, a page multiple (the
				   mapping has one more page, inject's own) */
	/*
	 * The data page: private, anonymous, read-write, right after inject's
	 * page (code in the page reaches it RIP-relative); its first
	 * INJECT_DATA_WIPED bytes are zeroed in a child forked from the
	 * target when WIPEONFORK (MADV_WIPEONFORK took).
	 */
	uint64_t data;
	size_t data_len;		/* INJECT_DATA_LEN, or less in an older page */
	bool wipeonfork;
	uint64_t dev, ino;	/* the memfd's inode, as fstat() gives it */
	/*
	 * Paths that reach the same inode from any process in our mount
	 * namespace, as root, e.g. for uprobe attachment (perf_event_open
	 * resolves the path when the probe is created): `path` lives as long
	 * as our fd, `map_path` as long as the target's mapping. Probe
	 * offsets are offsets in the page (the file is mapped at offset 0).
	 */
	char path[64];		/* /proc/OURPID/fd/FD */
	char map_path[96];	/* /proc/PID/map_files/START-END */
};

struct inject_session;


/*
 * Stop one thread of process PID (the thread-group leader, unless it is a
 * zombie, in uninterruptible sleep or in epoll_wait and another thread is
 * better placed) and prepare to inject calls into it. One session per
 * process at a time.
 * Errors: -ESRCH no such process or it exited, -EBUSY already traced (or
 * another process's session holds our page in it), -EPERM ptrace refused
 * (Yama, capabilities, LSM) or seccomp strict mode or unreadable seccomp
 * filters, -EINVAL not a 64-bit x86 process, -ENOEXEC no `syscall`
 * instruction found. The thread stays stopped until inject__detach; a
 * page-making session holds it about 0.3-1 ms.
 */
int inject__attach(pid_t pid, struct inject_session **out);
/*
 * Whether process PID is on its way out: gone, a zombie, or SIGKILL
 * pending (looked at for up to 100 ms while none of these shows). What a
 * failed attach asks before it blames anything else.
 */
bool inject__exiting(pid_t pid);
/*
 * Put the saved registers back and let the thread go; frees S.
 * Safe on NULL. Returns 0, or -ESRCH if the target exited meanwhile.
 */
int inject__detach(struct inject_session *s);

/*
 * Run syscall NR with up to six ARGS (NULL for none) in the stopped thread.
 * Returns 0 with *RET = the raw result (-4095..-1 is -errno from the
 * target), or a negative errno if the call could not be injected: -EPERM a
 * seccomp filter of the thread would not allow it (it is not made), -ESRCH
 * the target exited.
 * Only calls that cannot block or ask for a restart (memfd_create, mmap,
 * munmap, close, mprotect, prctl, ...): a restartable call would overwrite
 * the restart state of the call the thread was interrupted in.
 */
int inject__syscall(struct inject_session *s, long nr, const uint64_t args[6],
		    long *ret);
/*
 * Where calls are made: the `syscall` of inject's own page at the end of
 * a page made by inject__create_page, if the process has one (then a
 * tracer dying in the middle of a call leaves the target none the worse),
 * else one in the target's libc.
 */
uint64_t inject__site(const struct inject_session *s);
/*
 * Make calls on the `syscall` instruction at SITE instead (an address in
 * the target's executable memory; code before it must fall through to it,
 * e.g. NOPs). For tests.
 */
void inject__set_site(struct inject_session *s, uint64_t site);
/* Signals that arrived during the session and were delivered. */
unsigned int inject__signals_delivered(const struct inject_session *s);
/*
 * The call the thread was stopped in when it was last stopped: *NR its
 * number (orig_rax; -1 if it was running user code) and *RAX (e.g. -512,
 * -ERESTARTSYS, for a read on a pipe). For logs and tests.
 */
void inject__stopped_state(const struct inject_session *s, long *nr, long *rax);

/*
 * Create a page of LEN bytes (rounded up to pages) in the target: a memfd
 * named NAME (memfd_create with MFD_CLOEXEC) mapped PROT_READ|PROT_EXEC,
 * MAP_PRIVATE (the kernel installs no uprobe in a shared mapping), near
 * HINT if it is free (0: anywhere). The target keeps no descriptor (the
 * mapping keeps the file alive); OUT gets ours. The page reads as zeros;
 * one more page follows it in the mapping, inject's own (see inject__site),
 * and then the data region, INJECT_DATA_LEN bytes (see struct inject_page).
 * From then on, the session makes its calls there.
 */
int inject__session_create_page(struct inject_session *s, const char *name,
				size_t len, uint64_t hint,
				struct inject_page *out);
/* The same in a session of its own. */
int inject__create_page(pid_t pid, const char *name, size_t len,
			struct inject_page *out);
/*
 * Find a page made earlier by inject__create_page (a private r-xp mapping
 * at offset 0 of "/memfd:NAME (deleted)", its data page after it) and
 * open its file through /proc/PID/map_files. No ptrace. -ENOENT when
 * there is none. _after: the first such page above address AFTER.
 */
int inject__find_page(pid_t pid, const char *name, struct inject_page *out);
int inject__find_page_after(pid_t pid, const char *name, uint64_t after,
			    struct inject_page *out);
/*
 * Read LEN bytes at offset OFF of the page as the target sees them (a
 * probed page is the target's own copy: see inject__write_page).
 */
int inject__read_page(const struct inject_page *pg, size_t off, void *buf,
		      size_t len);
/*
 * Write LEN bytes at offset OFF of the data region (process_vm_writev: a
 * store of more than one byte may be seen torn by the target's threads).
 */
int inject__write_data(const struct inject_page *pg, size_t off,
		       const void *buf, size_t len);
/* Read LEN bytes at offset OFF of the data region (process_vm_readv). */
int inject__read_data(const struct inject_page *pg, size_t off, void *buf,
		      size_t len);
/*
 * Write LEN bytes at offset OFF of the page through our descriptor. The
 * target sees them at once in every 4 KiB page of the mapping that never
 * held a uprobe: installing a probe gives the target a private copy of
 * that page, which later writes do not reach (on 6.18 not always even
 * after the probe is removed). Write the code first, then probe it; new
 * code goes to a page that was never probed.
 */
int inject__write_page(const struct inject_page *pg, size_t off,
		       const void *buf, size_t len);
/* Close our descriptor; the target's mapping stays. Safe on a zeroed PG. */
void inject__page_close(struct inject_page *pg);

/*
 * Store VAL at ADDR (8-byte aligned, else -EINVAL) in the target's writable
 * memory as one 8-byte store that no thread of the target can see torn,
 * and read it back. -EFAULT if ADDR is not writable by the target. Made by
 * the stopped thread itself, in the kernel's put_user() (three injected
 * calls: see inject.c for why not /proc/PID/mem or PTRACE_POKEDATA).
 */
int inject__store_u64(struct inject_session *s, uint64_t addr, uint64_t val);
/* The same in a session of its own. */
int inject__write_u64(pid_t pid, uint64_t addr, uint64_t val);
/* Read 8 aligned bytes at ADDR in the target (no ptrace stop). */
int inject__read_u64(pid_t pid, uint64_t addr, uint64_t *val);

/*
 * Memory shared with the target: NAME's memfd of LEN bytes mapped
 * read-write in both (one the target has already if USABLE, when given,
 * says so of its contents; or a new one). *OUT: where the target has it,
 * and ours. Negative errno with a message.
 */
struct inject_shared {
	uint64_t addr;		/* in the target */
	void *mem;		/* ours */
	size_t len;
	bool found;		/* it was there already */
};
int inject__shared(pid_t pid, const char *name, size_t len,
		   bool (*usable)(const void *mem, void *arg), void *arg,
		   struct inject_shared *out);
void inject__shared_close(struct inject_shared *sh);	/* safe on a zeroed struct */

#endif /* __PYTM_INJECT_H */
