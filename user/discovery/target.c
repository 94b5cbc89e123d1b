// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include "elf.h"
#include "target.h"
#include "util.h"

static void free_maps(struct target *t)
{
	int i;

	for (i = 0; i < t->nmaps; i++)
		free(t->maps[i].path);
	free(t->maps);
	t->maps = NULL;
	t->nmaps = 0;
}

int target__refresh_maps(struct target *t)
{
	char path[64], line[PATH_MAX + 256], perms[8], file[PATH_MAX];
	unsigned long long start, end, off;
	struct mapping *m, *maps = NULL;
	int n = 0, cap = 0, err = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", t->pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		file[0] = '\0';
		if (sscanf(line, "%llx-%llx %7s %llx %*s %*s %4095[^\n]",
			   &start, &end, perms, &off, file) < 4)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			m = realloc(maps, cap * sizeof(*maps));
			if (!m) {
				err = -ENOMEM;
				break;
			}
			maps = m;
		}
		m = &maps[n];
		m->start = start;
		m->end = end;
		m->offset = off;
		m->exec = perms[2] == 'x';
		m->path = file[0] == '/' ? strdup(file) : NULL;
		n++;
	}
	fclose(f);
	free_maps(t);
	t->maps = maps;
	t->nmaps = n;
	return err;
}

const struct mapping *target__mapping(const struct target *t, uint64_t addr)
{
	int i;

	for (i = 0; i < t->nmaps; i++)
		if (addr >= t->maps[i].start && addr < t->maps[i].end)
			return &t->maps[i];
	return NULL;
}

void target__host_path(const struct target *t, const char *path, char *out,
		       size_t len)
{
	/* A path too long to reach is left empty: opening it fails cleanly. */
	if (snprintf(out, len, "/proc/%d/root%s", t->pid, path) >= (int)len)
		out[0] = '\0';
}

int target__read(const struct target *t, uint64_t addr, void *buf, size_t len)
{
	struct iovec local = { .iov_base = buf, .iov_len = len };
	struct iovec remote = { .iov_base = (void *)addr, .iov_len = len };
	ssize_t n;

	n = process_vm_readv(t->pid, &local, 1, &remote, 1, 0);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EFAULT;
}

uint64_t target__symbol(const struct target *t, const char *name)
{
	uint64_t addr;

	if (!t->elf || elf__symbol(t->elf, name, &addr, NULL))
		return 0;
	return addr + t->bias;
}

uint64_t target__load_bias(const struct target *t, const char *path,
			   const struct elf_file *ef)
{
	uint64_t lo = UINT64_MAX;
	int i;

	for (i = 0; i < t->nmaps; i++)
		if (t->maps[i].path && !strcmp(t->maps[i].path, path) &&
		    t->maps[i].offset == 0 && t->maps[i].start < lo)
			lo = t->maps[i].start;
	return lo == UINT64_MAX ? 0 : lo - elf__base_vaddr(ef);
}

/* Is PATH a file that holds CPython (libpython or a static interpreter)? */
static struct elf_file *open_python(const struct target *t, const char *path)
{
	char host[PATH_MAX];
	struct elf_file *ef;
	uint64_t a;

	target__host_path(t, path, host, sizeof(host));
	ef = elf__open(host);
	if (!ef)
		return NULL;
	if (elf__symbol(ef, "Py_GetVersion", &a, NULL)) {
		elf__close(ef);
		return NULL;
	}
	return ef;
}

/* X.Y from a name such as libpython3.11.so.1.0 or python3.9; 0 if none. */
static uint32_t version_from_name(const char *path)
{
	const char *b = strrchr(path, '/');
	unsigned int maj, min;

	b = b ? b + 1 : path;
	if (sscanf(b, "libpython%u.%u", &maj, &min) == 2 ||
	    sscanf(b, "python%u.%u", &maj, &min) == 2)
		return maj << 24 | min << 16;
	return 0;
}

/*
 * The full PY_VERSION_HEX of a build without Py_Version (before 3.11): the
 * sys module is made with PyLong_FromLong(PY_VERSION_HEX), which compiles
 * to "mov $PY_VERSION_HEX, %edi" (bf + 4 bytes) with the major and minor
 * version we already know in the top bytes.
 */
static uint32_t hexversion_from_text(const struct target *t, uint32_t hexversion)
{
	const uint8_t *p;
	const void *data;
	uint8_t level;
	size_t size, i;

	if (elf__section(t->elf, ".text", &data, &size))
		return hexversion;
	p = data;
	for (i = 0; i + 5 <= size; i++) {
		if (p[i] != 0xbf || p[i + 4] != hexversion >> 24 ||
		    p[i + 3] != ((hexversion >> 16) & 0xff))
			continue;
		level = p[i + 1] & 0xf0;	/* alpha, beta, candidate, final */
		if (level != 0xa0 && level != 0xb0 && level != 0xc0 && level != 0xf0)
			continue;
		return hexversion | (uint32_t)p[i + 2] << 8 | p[i + 1];
	}
	return hexversion;
}

static int detect_version(struct target *t)
{
	uint64_t v = 0, addr = target__symbol(t, "Py_Version");

	/* 3.11+ export PY_VERSION_HEX as Py_Version. */
	if (addr && target__read(t, addr, &v, sizeof(v)) == 0 && v >> 24 == 3) {
		t->hexversion = (uint32_t)v;
		return 0;
	}
	t->hexversion = version_from_name(t->pymod);
	if (!t->hexversion)
		t->hexversion = version_from_name(t->exe);
	if (!t->hexversion)
		return -ENOENT;
	t->hexversion = hexversion_from_text(t, t->hexversion);
	return 0;
}

void target__version_str(const struct target *t, char *buf, size_t len)
{
	unsigned int micro = (t->hexversion >> 8) & 0xff;

	/* Release-level bits are set only when the full version was read. */
	if (t->hexversion & 0xff)
		snprintf(buf, len, "%u.%u.%u", t->hexversion >> 24,
			 (t->hexversion >> 16) & 0xff, micro);
	else
		snprintf(buf, len, "%u.%u", t->hexversion >> 24,
			 (t->hexversion >> 16) & 0xff);
}

int target__open(struct target *t, pid_t pid)
{
	char path[64], ver[32];
	ssize_t n;
	int i, err;

	memset(t, 0, sizeof(*t));
	t->pid = pid;
	if (pid <= 0 || (kill(pid, 0) && errno == ESRCH)) {
		warn("no process with pid %d", pid);
		return -ESRCH;
	}
	snprintf(path, sizeof(path), "/proc/%d/exe", pid);
	n = readlink(path, t->exe, sizeof(t->exe) - 1);
	if (n < 0) {
		err = -errno;
		if (err == -ENOENT || err == -ESRCH)
			warn("no process with pid %d", pid);
		else if (err == -EACCES || err == -EPERM)
			warn("cannot inspect process %d: %s (run as root)", pid, strerror(-err));
		else
			warn("cannot inspect process %d: %s", pid, strerror(-err));
		return err == -ENOENT ? -ESRCH : err;
	}
	t->exe[n] = '\0';
	err = target__refresh_maps(t);
	if (err) {
		warn("cannot read the mappings of process %d: %s", pid, strerror(-err));
		return err;
	}

	/* A libpython first (shared builds), then the executable (static). */
	for (i = 0; i < t->nmaps && !t->elf; i++) {
		const char *p = t->maps[i].path;

		if (!p || t->maps[i].offset || !strstr(p, "libpython"))
			continue;
		t->elf = open_python(t, p);
		if (t->elf)
			snprintf(t->pymod, sizeof(t->pymod), "%s", p);
	}
	if (!t->elf) {
		t->elf = open_python(t, t->exe);
		if (t->elf)
			snprintf(t->pymod, sizeof(t->pymod), "%s", t->exe);
	}
	if (!t->elf) {
		warn("process %d (%s) is not a CPython process", pid, t->exe);
		return -ENOEXEC;
	}
	target__host_path(t, t->pymod, t->pymod_host, sizeof(t->pymod_host));
	t->bias = target__load_bias(t, t->pymod, t->elf);

	if (detect_version(t)) {
		warn("process %d: cannot tell the CPython version of %s", pid, t->pymod);
		return -EPROTONOSUPPORT;
	}
	target__version_str(t, ver, sizeof(ver));
	if (t->hexversion < 0x03080000) {
		warn("process %d: unsupported CPython %s (3.8 or later is needed)", pid, ver);
		return -EPROTONOSUPPORT;
	}
	t->runtime = target__symbol(t, "_PyRuntime");
	if (!t->runtime) {
		warn("process %d: no _PyRuntime in %s", pid, t->pymod);
		return -ENOEXEC;
	}
	vlog("process %d: CPython %s in %s, bias 0x%llx, _PyRuntime 0x%llx", pid,
	     ver, t->pymod, (unsigned long long)t->bias, (unsigned long long)t->runtime);
	return 0;
}

int target__fork(struct target *t, const struct target *parent, pid_t pid)
{
	int i;

	*t = *parent;
	t->pid = pid;
	t->maps = calloc(parent->nmaps ? parent->nmaps : 1, sizeof(*t->maps));
	if (!t->maps) {
		t->nmaps = 0;
		t->elf = NULL;
		return -ENOMEM;
	}
	for (i = 0; i < parent->nmaps; i++) {
		t->maps[i] = parent->maps[i];
		t->maps[i].path = parent->maps[i].path ? strdup(parent->maps[i].path) : NULL;
	}
	t->elf = elf__get(parent->elf);
	return 0;
}

void target__close(struct target *t)
{
	free_maps(t);
	elf__close(t->elf);
	t->elf = NULL;
}
