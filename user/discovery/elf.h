/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Symbols of an ELF file (.symtab when present, else .dynsym). */
#ifndef __PYTM_ELF_H
#define __PYTM_ELF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct elf_file;

struct elf_file *elf__open(const char *path);
/* One more reference to EF (each elf__close drops one). */
struct elf_file *elf__get(struct elf_file *ef);
void elf__close(struct elf_file *ef);	/* safe on NULL */
/* Address (st_value) and size of symbol NAME, local or global; -ENOENT. */
int elf__symbol(struct elf_file *ef, const char *name, uint64_t *addr,
		uint64_t *size);
/* Contents of section NAME (valid until elf__close); -ENOENT. */
int elf__section(struct elf_file *ef, const char *name, const void **data,
		 size_t *size);
/* Virtual address (sh_addr) of section NAME; 0 if absent. */
uint64_t elf__section_addr(struct elf_file *ef, const char *name);
/*
 * Its thread-local storage template (PT_TLS): size in memory and
 * alignment; -ENOENT if none, -EINVAL if it does not start aligned.
 */
int elf__tls(const struct elf_file *ef, uint64_t *memsz, uint64_t *align);
/* Virtual address of the first PT_LOAD segment, page aligned. */
uint64_t elf__base_vaddr(const struct elf_file *ef);

#endif /* __PYTM_ELF_H */
