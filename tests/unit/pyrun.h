/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Helpers for unit tests that check our output against real interpreters:
 * where each required Python lives, running one with captured output, and
 * a scratch directory. The interpreters are part of the test machine: one
 * that is missing is a failure of the test, never a skip.
 */
#ifndef __PYTM_PYRUN_H
#define __PYTM_PYRUN_H

/* The includer defines _GNU_SOURCE before its first #include (pipe2). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* pyenv builds every test needs, oldest first; "system" is Debian's. */
static const char *const py_versions[] = {
	"3.8.18", "3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0", "system",
};
#define PY_NVERSIONS (sizeof(py_versions) / sizeof(py_versions[0]))
#define PY_DEBIAN "/usr/bin/python3.11"

/* Path of the interpreter for VERSION in BUF; false if it is not there. */
static inline bool py_path(const char *version, char *buf, size_t len)
{
	const char *root = getenv("PYENV_ROOT"), *home = getenv("HOME");

	if (!strcmp(version, "system")) {
		snprintf(buf, len, "%s", PY_DEBIAN);
	} else if (root && *root) {
		snprintf(buf, len, "%s/versions/%s/bin/python3", root, version);
	} else {
		snprintf(buf, len, "%s/.pyenv/versions/%s/bin/python3",
			 home ? home : "/root", version);
	}
	return access(buf, X_OK) == 0;
}

/* Read all of FD into a NUL-terminated malloc'ed buffer. */
static inline char *slurp_fd(int fd, size_t *lenp)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);
	ssize_t n;

	if (!buf)
		return NULL;
	for (;;) {
		if (cap - len < 2) {
			char *nb = realloc(buf, cap * 2);

			if (!nb) {
				free(buf);
				return NULL;
			}
			buf = nb;
			cap *= 2;
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += n;
	}
	buf[len] = '\0';
	if (lenp)
		*lenp = len;
	return buf;
}

/*
 * Run ARGV (no shell) with stdout captured in *OUT (and stderr in *ERR if
 * ERR is given, else inherited). Returns the exit status, or -1 if it could
 * not run or died of a signal.
 */
static inline int run_capture(char *const argv[], char **out, size_t *outlen,
		       char **err)
{
	int po[2], pe[2] = { -1, -1 }, status;
	char *o = NULL, *e = NULL;
	pid_t pid;

	if (pipe2(po, O_CLOEXEC))
		return -1;
	if (err && pipe2(pe, O_CLOEXEC)) {
		close(po[0]);
		close(po[1]);
		return -1;
	}
	pid = fork();
	if (pid < 0)
		return -1;
	if (!pid) {
		dup2(po[1], 1);
		if (err)
			dup2(pe[1], 2);
		execv(argv[0], argv);
		_exit(127);
	}
	close(po[1]);
	if (err) {
		close(pe[1]);
		/* stderr is small: read stdout first, then stderr */
	}
	o = slurp_fd(po[0], outlen);
	close(po[0]);
	if (err) {
		e = slurp_fd(pe[0], NULL);
		close(pe[0]);
	}
	if (waitpid(pid, &status, 0) < 0)
		status = -1;
	if (out)
		*out = o;
	else
		free(o);
	if (err)
		*err = e;
	if (status == -1 || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static inline int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	return remove(path);
}

/* rm -r DIR */
static inline void rm_tree(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static inline int write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	int ok;

	if (!f)
		return -1;
	ok = fputs(text, f) >= 0;
	return fclose(f) == 0 && ok ? 0 : -1;
}

static inline int write_bytes(const char *path, const void *p, size_t len)
{
	FILE *f = fopen(path, "wb");
	int ok;

	if (!f)
		return -1;
	ok = fwrite(p, 1, len, f) == len;
	return fclose(f) == 0 && ok ? 0 : -1;
}

static inline char *read_all(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *buf;

	if (fd < 0)
		return NULL;
	buf = slurp_fd(fd, len);
	close(fd);
	return buf;
}

/* Settle the environment the interpreters run in, once. */
static inline void py_env(void)
{
	setenv("PYTHONIOENCODING", "utf-8", 1);
	setenv("PYTHONDONTWRITEBYTECODE", "1", 1);
	setenv("LC_ALL", "C.UTF-8", 1);
	unsetenv("PYTHONPATH");
	unsetenv("PYTHONHOME");
	unsetenv("PYTHONTRACEMALLOC");
	unsetenv("PYTHONSTARTUP");
}

/* A fresh directory for one test program's files, and paths inside it. */
static char tmpdir[64];

static inline bool make_tmpdir(const char *name)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/pytm-test-%s-XXXXXX", name);
	return mkdtemp(tmpdir) != NULL;
}

static inline char *tpath(const char *name)
{
	static char buf[8][512];
	static int i;

	i = (i + 1) % 8;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", tmpdir, name);
	return buf[i];
}

#endif /* __PYTM_PYRUN_H */
