// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <bpf/libbpf.h>
#include "sites.h"
#include "util.h"

#define CHECK_PAGE	4096
#define CHECK_HITS	4	/* the kernel optimizes a site after its first hit */
#define CRASHED		3	/* the child's exit status when it faulted */

static bool has_tramp_mapping(void)
{
	char line[512];
	bool found = false;
	FILE *f = fopen("/proc/self/maps", "re");

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, "[uprobes-trampoline]") != NULL;
	fclose(f);
	return found;
}

/* A handled fault leaves no "segfault at" line in the kernel log. */
static void on_fault(int sig)
{
	_exit(CRASHED);
}

int sites__check(struct bpf_program *prog, struct sites_check *out)
{
	/* nop5; ret; then int3 padding */
	static const unsigned char fn[] = { 0x0f, 0x1f, 0x44, 0x00, 0x00, 0xc3 };
	LIBBPF_OPTS(bpf_uprobe_opts, opts);
	unsigned char page[CHECK_PAGE];
	struct bpf_link *link = NULL;
	void (*call)(void);
	void *code = MAP_FAILED;
	double t0 = mono_now() * 1e3;
	char path[64];
	int fd, i, status, err = 0;
	pid_t child;

	memset(out, 0, sizeof(*out));
	fd = memfd_create("pytm-bpf-check", MFD_CLOEXEC);
	if (fd < 0) {
		err = -errno;
		goto cleanup;
	}
	memset(page, 0xcc, sizeof(page));
	memcpy(page, fn, sizeof(fn));
	if (pwrite(fd, page, sizeof(page), 0) != (ssize_t)sizeof(page)) {
		err = -EIO;
		goto cleanup;
	}
	/* Private, as the target's page: no uprobe goes into a shared mapping. */
	code = mmap(NULL, CHECK_PAGE, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
	if (code == MAP_FAILED) {
		err = -errno;
		goto cleanup;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	link = bpf_program__attach_uprobe_opts(prog, -1, path, 0, &opts);
	if (!link) {
		err = -errno;
		goto cleanup;
	}
	call = (void (*)(void))code;
	for (i = 0; i < CHECK_HITS; i++)
		call();
	out->optimized = has_tramp_mapping();
	fflush(NULL);
	child = fork();
	if (child < 0) {
		err = -errno;
		goto cleanup;
	}
	if (!child) {
		struct sigaction sa = { .sa_handler = on_fault };

		sigaction(SIGSEGV, &sa, NULL);
		sigaction(SIGBUS, &sa, NULL);
		sigaction(SIGILL, &sa, NULL);
		sigaction(SIGTRAP, &sa, NULL);
		call();
		_exit(0);
	}
	while (waitpid(child, &status, 0) < 0) {
		if (errno != EINTR) {
			err = -errno;
			goto cleanup;
		}
	}
	out->fork_safe = WIFEXITED(status) && WEXITSTATUS(status) == 0;

cleanup:
	bpf_link__destroy(link);
	if (code != MAP_FAILED)
		munmap(code, CHECK_PAGE);
	if (fd >= 0)
		close(fd);
	out->ms = mono_now() * 1e3 - t0;
	if (err) {
		out->fork_safe = false;
		vlog("kernel check of NOP probe sites failed: %s", strerror(-err));
	} else {
		vlog("kernel: a probed 5-byte NOP is %s, and %s in a forked child "
		     "(checked in %.1f ms)",
		     out->optimized ? "rewritten into a call to [uprobes-trampoline]" :
		     "trapped (not rewritten)",
		     out->fork_safe ? "still runs" : "crashes", out->ms);
	}
	return err;
}
