// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * A target's ELF files (the interpreter, libpython): any bytes as a file,
 * the symbols and sections discovery asks for.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
#include "elf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	static int fd = -1;
	struct elf_file *ef;
	const void *sec;
	char path[64];
	uint64_t addr, size;
	size_t len2;

	if (fd < 0)
		fd = memfd_create("fuzz-elf", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, 0) || pwrite(fd, data, len, 0) != (ssize_t)len)
		return 0;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ef = elf__open(path);
	if (!ef)
		return 0;
	elf__symbol(ef, "_PyRuntime", &addr, &size);
	elf__symbol(ef, "PyMem_SetAllocator", &addr, &size);
	elf__symbol(ef, "Py_Version", &addr, &size);
	elf__section(ef, ".PyRuntime", &sec, &len2);
	elf__section(ef, ".rodata", &sec, &len2);
	elf__section_addr(ef, ".data");
	elf__base_vaddr(ef);
	elf__close(ef);
	return 0;
}
