// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "elf.h"

struct elf_file {
	int refs;			/* targets sharing it (a forked child and its parent) */
	int fd;
	Elf *elf;
	Elf_Scn *symtab;
	Elf_Scn *dynsym;
	uint64_t base;
	uint64_t tls_memsz, tls_align;	/* PT_TLS; 0: none */
	bool tls_odd;			/* one that does not start aligned */
};

struct elf_file *elf__open(const char *path)
{
	struct elf_file *ef;
	Elf_Scn *scn = NULL;
	GElf_Shdr sh;
	GElf_Phdr ph;
	size_t i, n;

	if (elf_version(EV_CURRENT) == EV_NONE)
		return NULL;
	ef = calloc(1, sizeof(*ef));
	if (!ef)
		return NULL;
	ef->refs = 1;
	ef->base = UINT64_MAX;
	ef->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (ef->fd < 0)
		goto err;
	ef->elf = elf_begin(ef->fd, ELF_C_READ_MMAP, NULL);
	if (!ef->elf || elf_kind(ef->elf) != ELF_K_ELF)
		goto err;
	while ((scn = elf_nextscn(ef->elf, scn))) {
		if (!gelf_getshdr(scn, &sh))
			continue;
		if (sh.sh_type == SHT_SYMTAB)
			ef->symtab = scn;
		else if (sh.sh_type == SHT_DYNSYM)
			ef->dynsym = scn;
	}
	if (elf_getphdrnum(ef->elf, &n))
		goto err;
	for (i = 0; i < n; i++) {
		if (!gelf_getphdr(ef->elf, i, &ph))
			continue;
		if (ph.p_type == PT_LOAD && ph.p_vaddr < ef->base)
			ef->base = ph.p_vaddr & ~(uint64_t)0xfff;
		if (ph.p_type == PT_TLS) {
			ef->tls_memsz = ph.p_memsz;
			ef->tls_align = ph.p_align ?: 1;
			ef->tls_odd = ph.p_vaddr & (ef->tls_align - 1);
		}
	}
	if (ef->base == UINT64_MAX)
		ef->base = 0;
	return ef;
err:
	elf__close(ef);
	return NULL;
}

struct elf_file *elf__get(struct elf_file *ef)
{
	if (ef)
		__atomic_add_fetch(&ef->refs, 1, __ATOMIC_RELAXED);
	return ef;
}

void elf__close(struct elf_file *ef)
{
	if (!ef || __atomic_sub_fetch(&ef->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	if (ef->elf)
		elf_end(ef->elf);
	if (ef->fd >= 0)
		close(ef->fd);
	free(ef);
}

static int find_in(struct elf_file *ef, Elf_Scn *scn, const char *name,
		   uint64_t *addr, uint64_t *size)
{
	Elf_Data *data = NULL;
	GElf_Shdr sh;
	GElf_Sym sym;
	const char *s;
	size_t i, n;

	if (!scn || !gelf_getshdr(scn, &sh) || !sh.sh_entsize)
		return -ENOENT;
	n = sh.sh_size / sh.sh_entsize;
	while ((data = elf_getdata(scn, data))) {
		for (i = 0; i < n; i++) {
			if (!gelf_getsym(data, i, &sym) || !sym.st_value)
				continue;
			if (sym.st_shndx == SHN_UNDEF)
				continue;
			s = elf_strptr(ef->elf, sh.sh_link, sym.st_name);
			if (!s || strcmp(s, name))
				continue;
			*addr = sym.st_value;
			if (size)
				*size = sym.st_size;
			return 0;
		}
	}
	return -ENOENT;
}

int elf__symbol(struct elf_file *ef, const char *name, uint64_t *addr,
		uint64_t *size)
{
	if (find_in(ef, ef->symtab, name, addr, size) == 0)
		return 0;
	return find_in(ef, ef->dynsym, name, addr, size);
}

int elf__tls(const struct elf_file *ef, uint64_t *memsz, uint64_t *align)
{
	if (ef->tls_odd)
		return -EINVAL;
	if (!ef->tls_memsz)
		return -ENOENT;
	*memsz = ef->tls_memsz;
	*align = ef->tls_align;
	return 0;
}

uint64_t elf__base_vaddr(const struct elf_file *ef)
{
	return ef->base;
}

static Elf_Scn *find_section(struct elf_file *ef, const char *name, GElf_Shdr *sh)
{
	Elf_Scn *scn = NULL;
	size_t shstrndx;
	const char *n;

	if (elf_getshdrstrndx(ef->elf, &shstrndx))
		return NULL;
	while ((scn = elf_nextscn(ef->elf, scn))) {
		if (!gelf_getshdr(scn, sh))
			continue;
		n = elf_strptr(ef->elf, shstrndx, sh->sh_name);
		if (n && !strcmp(n, name))
			return scn;
	}
	return NULL;
}

uint64_t elf__section_addr(struct elf_file *ef, const char *name)
{
	GElf_Shdr sh;

	return find_section(ef, name, &sh) ? sh.sh_addr : 0;
}

int elf__section(struct elf_file *ef, const char *name, const void **data,
		 size_t *size)
{
	Elf_Scn *scn;
	Elf_Data *d;
	GElf_Shdr sh;

	scn = find_section(ef, name, &sh);
	if (!scn || sh.sh_type == SHT_NOBITS)
		return -ENOENT;
	d = elf_getdata(scn, NULL);
	if (!d || !d->d_buf)
		return -EINVAL;
	*data = d->d_buf;
	*size = d->d_size;
	return 0;
}
