/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* A traced process: its mappings, its CPython module, its memory. */
#ifndef __PYTM_TARGET_H
#define __PYTM_TARGET_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct elf_file;

struct mapping {
	uint64_t start, end, offset;
	bool exec;
	char *path;			/* as the target sees it; NULL if anonymous */
};

struct target {
	pid_t pid;
	struct mapping *maps;
	int nmaps;
	char exe[PATH_MAX];		/* /proc/PID/exe, as the target sees it */
	char pymod[PATH_MAX];		/* file holding the interpreter (as seen) */
	char pymod_host[PATH_MAX];	/* the same, reachable from here */
	struct elf_file *elf;		/* pymod's ELF */
	uint64_t bias;			/* load bias of pymod */
	uint64_t runtime;		/* &_PyRuntime */
	uint32_t hexversion;		/* PY_VERSION_HEX */
};

/*
 * Open process PID. Errors (negative errno, with a message already shown):
 * -ESRCH no such process, -ENOEXEC not CPython, -EPROTONOSUPPORT a CPython
 * version we do not support, -EPERM no privileges.
 */
int target__open(struct target *t, pid_t pid);
/*
 * Child PID forked from PARENT: the same interpreter at the same addresses,
 * without discovery (the child may be running, or gone already). 0 or
 * -ENOMEM.
 */
int target__fork(struct target *t, const struct target *parent, pid_t pid);
void target__close(struct target *t);	/* safe on a zeroed target */
/* Re-read /proc/PID/maps. */
int target__refresh_maps(struct target *t);
/* Read LEN bytes at ADDR in the target; 0 or -errno (partial = -EFAULT). */
int target__read(const struct target *t, uint64_t addr, void *buf, size_t len);
/* Address of NAME in pymod, in the target's address space; 0 if absent. */
uint64_t target__symbol(const struct target *t, const char *name);
/* Load bias of PATH (ELF EF) in T: from its lowest mapping at offset 0; 0 if none. */
uint64_t target__load_bias(const struct target *t, const char *path,
			   const struct elf_file *ef);
/* Mapping that holds ADDR, or NULL. */
const struct mapping *target__mapping(const struct target *t, uint64_t addr);
/* Path reachable from here of a file the target sees as PATH. */
void target__host_path(const struct target *t, const char *path, char *out,
		       size_t len);
/* "3.11.7" */
void target__version_str(const struct target *t, char *buf, size_t len);

#endif /* __PYTM_TARGET_H */
