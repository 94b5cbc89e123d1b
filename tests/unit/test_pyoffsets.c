// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * pyoffsets: the generated table and the _Py_DebugOffsets reader, checked
 * against live pyenv interpreters (3.8-3.13): find _PyRuntime through
 * /proc/PID/maps and the ELF symbol table of libpython, then walk
 * interpreter -> thread state -> frame -> code object with the offsets.
 */
#define _GNU_SOURCE
#include <linux/elf.h>	/* not <elf.h>: user/discovery has an elf.h */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include "unit.h"
#include "pyoffsets.h"
#include "pyoffsets_table.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* The brief: pyenv 3.13.0 exactly; other minors: whatever patch is there. */
static const char *const versions[] = {
	"3.8.", "3.9.", "3.10.", "3.11.", "3.12.", "3.13.0",
};

/* Fields struct pytm_offsets shares across sources, for comparisons. */
#define OFFSET_FIELDS(X)						\
	X(layout) X(lasti_kind) X(runtime_interpreters_head)		\
	X(interp_next) X(interp_threads_head) X(tstate_next)		\
	X(tstate_interp) X(tstate_thread_id) X(tstate_native_thread_id) \
	X(tstate_frame) X(cframe_current_frame) X(frame_back)		\
	X(frame_code) X(frame_lasti) X(frame_owner) X(owner_generator)	\
	X(owner_cstack) X(frame_tag_bits) X(object_type)		\
	X(varobject_size) X(code_filename) X(code_name)			\
	X(code_qualname) X(code_firstlineno) X(code_linetable)		\
	X(code_firsttraceable) X(code_adaptive) X(code_code)		\
	X(bytes_sval) X(unicode_length) X(unicode_state)		\
	X(unicode_ascii_size) X(unicode_compact_size) X(runtime_tss_key)	\
	X(runtime_tstate_current)

static int is_absent(const char *name, unsigned v)
{
	if (!strcmp(name, "owner_generator") || !strcmp(name, "owner_cstack"))
		return v == 0xff;
	if (!strcmp(name, "frame_tag_bits"))
		return 0;
	return v == PYTM_OFF_NONE;
}

/*
 * Find the pyenv prefix of VERSION: a full version ("3.13.0"), or a
 * "3.X." prefix for the newest 3.X.N installed.
 */
static int find_prefix(const char *version, char *out, size_t outlen)
{
	const char *roots[3] = { getenv("PYENV_ROOT"), NULL, "/root/.pyenv" };
	size_t i, n = strlen(version);
	char home[512], dir[600];
	struct dirent *de;
	int best = -1;
	DIR *d;

	if (getenv("HOME")) {
		snprintf(home, sizeof(home), "%s/.pyenv", getenv("HOME"));
		roots[1] = home;
	}
	for (i = 0; i < ARRAY_SIZE(roots) && best < 0; i++) {
		if (!roots[i])
			continue;
		snprintf(dir, sizeof(dir), "%s/versions", roots[i]);
		d = opendir(dir);
		if (!d)
			continue;
		while ((de = readdir(d))) {
			const char *rest = de->d_name + n;
			char *end;
			long patch;

			if (strncmp(de->d_name, version, n))
				continue;
			if (version[n - 1] != '.') {
				if (*rest)
					continue;
				patch = 0;
			} else {
				patch = strtol(rest, &end, 10);
				if (end == rest || *end)
					continue;
			}
			if (patch > best &&
			    snprintf(out, outlen, "%s/%s", dir, de->d_name) <
			    (int)outlen)
				best = patch;
		}
		closedir(d);
	}
	return best < 0 ? -1 : 0;
}

struct target {
	pid_t pid;
	int minor;
	int call_offset;		/* bytecode offset of the time.sleep call */
	char lib[600];			/* libpython path, from the maps */
	uint64_t base;			/* where its file offset 0 is mapped */
};

/*
 * The target reports the bytecode offset of its last call, time.sleep(),
 * as dis sees it; the frame walk must find the module frame there.
 */
static const char target_script[] =
	"import sys, time, dis\n"
	"c = [i.offset for i in dis.get_instructions(sys._getframe().f_code)\n"
	"     if i.opname.startswith('CALL')]\n"
	"sys.stdout.write('ready %d\\n' % c[-1])\n"
	"sys.stdout.flush()\n"
	"time.sleep(30)\n";

/* Blocked in the sleep (not still returning from flush)? */
static int target__sleeping(const struct target *t)
{
	char path[64], buf[64] = "";
	long nr = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/syscall", t->pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f))
		nr = strtol(buf, NULL, 10);
	fclose(f);
#ifdef __x86_64__
	/* select (3.8-3.10), clock_nanosleep (3.11+), and kin */
	return nr == 23 || nr == 7 || nr == 35 || nr == 230 || nr == 270;
#else
	return nr >= 0;
#endif
}

/* Start PREFIX's python3.MINOR; wait until it sleeps in time.sleep(). */
static int target__start(struct target *t, const char *prefix, int minor)
{
	char exe[700], arg0[32], buf[32] = "";
	struct pollfd pfd;
	int fds[2], i;
	ssize_t n;

	if (snprintf(exe, sizeof(exe), "%s/bin/python3.%d", prefix, minor) >=
	    (int)sizeof(exe))
		return -1;
	snprintf(arg0, sizeof(arg0), "python3.%d", minor);
	if (pipe(fds))
		return -1;
	t->minor = minor;
	t->pid = fork();
	if (t->pid < 0)
		return -1;
	if (t->pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		execl(exe, arg0, "-I", "-c", target_script, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	pfd.fd = fds[0];
	pfd.events = POLLIN;
	n = 0;
	if (poll(&pfd, 1, 20000) == 1)
		n = read(fds[0], buf, sizeof(buf) - 1);
	close(fds[0]);
	if (n < 7 || sscanf(buf, "ready %d", &t->call_offset) != 1)
		return -1;
	for (i = 0; i < 500 && !target__sleeping(t); i++)
		usleep(10000);
	return i < 500 ? 0 : -1;
}

static void target__stop(struct target *t)
{
	if (t->pid > 0) {
		kill(t->pid, SIGKILL);
		waitpid(t->pid, NULL, 0);
		t->pid = 0;
	}
}

/* The libpython3.MINOR mapping of file offset 0 in /proc/PID/maps. */
static int target__find_lib(struct target *t)
{
	char path[64], line[1024], name[32], file[600];
	unsigned long long start, end, off;
	FILE *f;
	int found = -1;

	snprintf(path, sizeof(path), "/proc/%d/maps", t->pid);
	snprintf(name, sizeof(name), "/libpython3.%d.so", t->minor);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx-%llx %*s %llx %*s %*s %599s",
			   &start, &end, &off, file) != 4)
			continue;
		if (off == 0 && strstr(file, name)) {
			snprintf(t->lib, sizeof(t->lib), "%s", file);
			t->base = start;
			found = 0;
			break;
		}
	}
	fclose(f);
	return found;
}

/* Address of symbol NAME in the target: ELF64 .symtab/.dynsym lookup. */
static uint64_t target__sym(const struct target *t, const char *name)
{
	const Elf64_Ehdr *eh;
	const Elf64_Shdr *sh;
	const Elf64_Phdr *ph;
	uint64_t addr = 0, min_vaddr = UINT64_MAX;
	struct stat st;
	const char *img;
	size_t i, j;
	int fd;

	fd = open(t->lib, O_RDONLY);
	if (fd < 0)
		return 0;
	if (fstat(fd, &st) || st.st_size < (off_t)sizeof(*eh)) {
		close(fd);
		return 0;
	}
	img = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (img == MAP_FAILED)
		return 0;
	eh = (const Elf64_Ehdr *)img;
	if (memcmp(eh->e_ident, ELFMAG, SELFMAG) ||
	    eh->e_ident[EI_CLASS] != ELFCLASS64 ||
	    eh->e_phoff + (uint64_t)eh->e_phnum * sizeof(*ph) > (uint64_t)st.st_size ||
	    eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(*sh) > (uint64_t)st.st_size)
		goto out;
	ph = (const Elf64_Phdr *)(img + eh->e_phoff);
	for (i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type == PT_LOAD && ph[i].p_vaddr < min_vaddr)
			min_vaddr = ph[i].p_vaddr & ~(uint64_t)0xfff;
	}
	sh = (const Elf64_Shdr *)(img + eh->e_shoff);
	for (i = 0; i < eh->e_shnum && !addr; i++) {
		const Elf64_Sym *syms;
		const char *strs;
		size_t nsyms, strsz;

		if (sh[i].sh_type != SHT_SYMTAB && sh[i].sh_type != SHT_DYNSYM)
			continue;
		if (sh[i].sh_link >= eh->e_shnum ||
		    sh[i].sh_offset + sh[i].sh_size > (uint64_t)st.st_size ||
		    sh[sh[i].sh_link].sh_offset + sh[sh[i].sh_link].sh_size >
		    (uint64_t)st.st_size)
			continue;
		syms = (const Elf64_Sym *)(img + sh[i].sh_offset);
		nsyms = sh[i].sh_size / sizeof(*syms);
		strs = img + sh[sh[i].sh_link].sh_offset;
		strsz = sh[sh[i].sh_link].sh_size;
		for (j = 0; j < nsyms; j++) {
			if (syms[j].st_name >= strsz || !syms[j].st_value)
				continue;
			if (strnlen(strs + syms[j].st_name,
				    strsz - syms[j].st_name) ==
			    strsz - syms[j].st_name)
				continue;
			if (!strcmp(strs + syms[j].st_name, name)) {
				addr = t->base - min_vaddr + syms[j].st_value;
				break;
			}
		}
	}
out:
	munmap((void *)img, st.st_size);
	return addr;
}

static int target__read(const struct target *t, uint64_t addr, void *buf,
			size_t len)
{
	struct iovec local = { .iov_base = buf, .iov_len = len };
	struct iovec remote = { .iov_base = (void *)addr, .iov_len = len };

	return process_vm_readv(t->pid, &local, 1, &remote, 1, 0) ==
	       (ssize_t)len ? 0 : -1;
}

static uint64_t target__ptr(const struct target *t, uint64_t addr)
{
	uint64_t v = 0;

	if (!addr || target__read(t, addr, &v, sizeof(v)))
		return 0;
	return v;
}

/* A compact ASCII str object into OUT (NUL-terminated); -1 otherwise. */
static int target__str(const struct target *t, const struct pytm_offsets *o,
		       uint64_t s, char *out, size_t outlen)
{
	uint32_t state = 0;
	int64_t len = 0;

	if (!s || target__read(t, s + o->unicode_state, &state, sizeof(state)) ||
	    target__read(t, s + o->unicode_length, &len, sizeof(len)))
		return -1;
	/* state bits: interned 0-1, kind 2-4, compact 5, ascii 6 */
	if (((state >> 2) & 7) != 1 || !((state >> 5) & 1) ||
	    !((state >> 6) & 1) || len < 0 || (size_t)len >= outlen)
		return -1;
	if (target__read(t, s + o->unicode_ascii_size, out, len))
		return -1;
	out[len] = 0;
	return 0;
}

/*
 * Walk the sleeping interpreter with offsets O, checking every field on
 * real memory. The script is "<string>", its module frame in time.sleep().
 */
static void check_live_walk(const struct target *t,
			    const struct pytm_offsets *o, const char *ver)
{
	uint64_t runtime, interp, tstate, frame, code, top = 0, obj;
	uint64_t code_type, bytes_type, instr;
	char s[64];
	int32_t lasti;
	int64_t size;
	uint8_t owner;
	int i, entry = 0, incomplete = 0, firstlineno = 0, firsttr = 0;

	runtime = target__sym(t, "_PyRuntime");
	code_type = target__sym(t, "PyCode_Type");
	bytes_type = target__sym(t, "PyBytes_Type");
	CHECK(runtime && code_type && bytes_type,
	      "%s: symbols in %s", ver, t->lib);
	if (!runtime || !code_type || !bytes_type)
		return;

	interp = target__ptr(t, runtime + o->runtime_interpreters_head);
	CHECK(interp, "%s: interpreters.head", ver);
	CHECK(!target__ptr(t, interp + o->interp_next),
	      "%s: one interpreter only", ver);
	tstate = target__ptr(t, interp + o->interp_threads_head);
	CHECK(tstate, "%s: threads head", ver);
	if (!interp || !tstate)
		return;
	CHECK(target__ptr(t, tstate + o->tstate_interp) == interp,
	      "%s: tstate->interp points back", ver);
	CHECK(!target__ptr(t, tstate + o->tstate_next),
	      "%s: one thread state only", ver);
	CHECK(target__ptr(t, tstate + o->tstate_thread_id),
	      "%s: thread_id (pthread_self) set", ver);
	if (o->tstate_native_thread_id != PYTM_OFF_NONE)
		CHECK(target__ptr(t, tstate + o->tstate_native_thread_id) ==
		      (uint64_t)t->pid, "%s: native_thread_id == pid", ver);
	if (o->runtime_tss_key != PYTM_OFF_NONE) {
		/* Py_tss_t: int _is_initialized before the pthread key */
		int32_t tss[2] = { 0, -1 };

		CHECK(!target__read(t, runtime + o->runtime_tss_key - 4, tss,
				    sizeof(tss)) && tss[0] == 1 &&
		      tss[1] >= 0 && tss[1] < 1024,
		      "%s: autoTSSkey initialized (%d) with a key (%d)",
		      ver, tss[0], tss[1]);
	}

	/* Asleep in time.sleep(), the thread released the GIL: the holder's
	 * thread state is then none, or the thread's (not yet cleared). */
	if (o->runtime_tstate_current != PYTM_OFF_NONE) {
		uint64_t cur = target__ptr(t, runtime + o->runtime_tstate_current);

		CHECK(cur == 0 || cur == tstate, "%s: gilstate.tstate_current %#llx: none or the thread's",
		      ver, (unsigned long long)cur);
	}

	frame = target__ptr(t, tstate + o->tstate_frame);
	if (o->layout == PYTM_LAYOUT_CFRAME)
		frame = target__ptr(t, frame + o->cframe_current_frame);
	CHECK(frame, "%s: top frame", ver);

	/* Skip what tracemalloc skips; the first frame left is <module>. */
	for (i = 0; i < 16 && frame; i++, frame = target__ptr(t, frame + o->frame_back)) {
		code = target__ptr(t, frame + o->frame_code) &
		       ~(uint64_t)o->frame_tag_bits;
		if (o->layout == PYTM_LAYOUT_FRAMEOBJ) {
			if (!top)
				top = frame;
			continue;
		}
		owner = 0xee;
		target__read(t, frame + o->frame_owner, &owner, 1);
		if (owner == o->owner_cstack) {
			entry++;
			continue;
		}
		instr = target__ptr(t, frame + o->frame_lasti);
		firsttr = -1;
		target__read(t, code + o->code_firsttraceable, &firsttr, 4);
		if (owner != o->owner_generator &&
		    instr < code + o->code_adaptive + 2 * (uint64_t)firsttr) {
			incomplete++;
			continue;
		}
		if (!top)
			top = frame;
	}
	CHECK(top, "%s: a complete frame", ver);
	if (!top)
		return;
	CHECK(o->owner_cstack == 0xff || entry == 1,
	      "%s: one C entry frame below <module> (saw %d)", ver, entry);
	CHECK(!incomplete, "%s: no incomplete frame while sleeping (%d)",
	      ver, incomplete);

	code = target__ptr(t, top + o->frame_code) & ~(uint64_t)o->frame_tag_bits;
	CHECK(target__ptr(t, code + o->object_type) == code_type,
	      "%s: f_code is a code object", ver);
	CHECK(!target__str(t, o, target__ptr(t, code + o->code_name), s, sizeof(s)) &&
	      !strcmp(s, "<module>"), "%s: co_name", ver);
	CHECK(!target__str(t, o, target__ptr(t, code + o->code_filename), s, sizeof(s)) &&
	      !strcmp(s, "<string>"), "%s: co_filename", ver);
	if (o->code_qualname != PYTM_OFF_NONE)
		CHECK(!target__str(t, o, target__ptr(t, code + o->code_qualname), s,
				   sizeof(s)) && !strcmp(s, "<module>"),
		      "%s: co_qualname", ver);
	target__read(t, code + o->code_firstlineno, &firstlineno, 4);
	CHECK(firstlineno == 1, "%s: co_firstlineno %d", ver, firstlineno);

	/* Line table (and 3.8-3.10 co_code): bytes objects with content. */
	obj = target__ptr(t, code + o->code_linetable);
	size = -1;
	target__read(t, obj + o->varobject_size, &size, sizeof(size));
	CHECK(target__ptr(t, obj + o->object_type) == bytes_type && size > 0 &&
	      size < 4096, "%s: line table is bytes, size %lld", ver,
	      (long long)size);
	if (o->code_code != PYTM_OFF_NONE) {
		obj = target__ptr(t, code + o->code_code);
		size = -1;
		target__read(t, obj + o->varobject_size, &size, sizeof(size));
		CHECK(target__ptr(t, obj + o->object_type) == bytes_type &&
		      size > 0 && size % 2 == 0, "%s: co_code is bytes", ver);
	}

	/* 3.11+: the bytecode starts at PyCode_Type.tp_basicsize, which
	 * follows tp_name after the type's PyVarObject head. */
	if (o->code_adaptive != PYTM_OFF_NONE) {
		size = -1;
		target__read(t, code_type + o->varobject_size + 16, &size,
			     sizeof(size));
		CHECK(size == o->code_adaptive, "%s: tp_basicsize %lld",
		      ver, (long long)size);
	}

	/* The instruction: inside the code, past the first traceable one. */
	if (o->layout == PYTM_LAYOUT_FRAMEOBJ) {
		lasti = -1;
		target__read(t, top + o->frame_lasti, &lasti, 4);
		/* 3.8-3.9 count bytes, 3.10 code units */
		CHECK(lasti == (o->lasti_kind == PYTM_LASTI_INT_BYTES ?
				t->call_offset : t->call_offset / 2),
		      "%s: f_lasti %d at the sleep call (offset %d)", ver,
		      lasti, t->call_offset);
	} else {
		instr = target__ptr(t, top + o->frame_lasti);
		size = (int64_t)(instr - (code + o->code_adaptive));
		/* prev_instr (3.11-3.12) and instr_ptr (3.13) both point
		 * at the CALL running, not past it */
		CHECK(size == t->call_offset && size / 2 >= firsttr,
		      "%s: instruction at byte %lld, sleep call at %d, first "
		      "traceable unit %d", ver, (long long)size,
		      t->call_offset, firsttr);
	}
}

static void check_lookup(void)
{
	const struct pytm_offsets *o;
	uint32_t minor;

	for (minor = 8; minor <= 12; minor++) {
		o = pyoffsets__lookup(0x030000f0 | minor << 16 | 5 << 8);
		CHECK(o && (o->hexversion >> 16) == (0x0300 | minor),
		      "lookup 3.%u", minor);
		if (!o)
			continue;
		CHECK(o->layout == (minor <= 10 ? PYTM_LAYOUT_FRAMEOBJ :
				    PYTM_LAYOUT_CFRAME), "layout 3.%u", minor);
		CHECK(o->lasti_kind == (minor <= 9 ? PYTM_LASTI_INT_BYTES :
					minor == 10 ? PYTM_LASTI_INT_UNITS :
					PYTM_LASTI_PREV_INSTR),
		      "lasti kind 3.%u", minor);
		CHECK((o->cframe_current_frame != PYTM_OFF_NONE) == (minor >= 11),
		      "cframe 3.%u", minor);
		CHECK((o->code_code != PYTM_OFF_NONE) == (minor <= 10) &&
		      (o->code_adaptive != PYTM_OFF_NONE) == (minor >= 11) &&
		      (o->code_firsttraceable != PYTM_OFF_NONE) == (minor >= 11),
		      "code fields 3.%u", minor);
		CHECK((o->owner_cstack != 0xff) == (minor >= 12) &&
		      (o->owner_generator != 0xff) == (minor >= 11),
		      "owners 3.%u", minor);
	}
	CHECK(!pyoffsets__lookup(0x030710f0), "3.7 not in the table");
	CHECK(!pyoffsets__lookup(0x030d00f0), "3.13 uses _Py_DebugOffsets");
	CHECK(!pyoffsets__lookup(0x030e00f0), "3.14 unknown to the table");
	CHECK(!pyoffsets__lookup(0x02070ff0), "2.7 not in the table");
	CHECK(!pyoffsets__lookup(0x04080000), "4.8 not in the table");
}

static const struct pytm_offsets *table_check(int minor)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(pyoffsets_table); i++) {
		if (((pyoffsets_table[i].hexversion >> 16) & 0xff) == (unsigned)minor)
			return &pyoffsets_table[i];
	}
	return NULL;
}

/* Set the u64 at word IDX of a debug-offsets buffer. */
static void put64(unsigned char *buf, size_t idx, uint64_t v)
{
	memcpy(buf + 8 * idx, &v, 8);
}

static uint64_t get64(const unsigned char *buf, size_t idx)
{
	uint64_t v;

	memcpy(&v, buf + 8 * idx, 8);
	return v;
}

/*
 * 3.13: the real bytes against the header-generated table, and the reader
 * refusing damaged copies of them. DBG holds 1024 bytes from _PyRuntime.
 */
static void check_debug_313(const unsigned char *dbg)
{
	const struct pytm_offsets *want = table_check(13);
	struct pytm_offsets got;
	unsigned char bad[1024];
	int shared = 0;

	CHECK(want, "3.13 cross-check entry in the table");
	CHECK(!memcmp(dbg, "xdebugpy", 8), "cookie in live _PyRuntime");
	CHECK(pyoffsets__from_debug(dbg, 1024, &got) == 0, "from_debug 3.13.0");
	if (!want)
		return;
	CHECK(got.hexversion == want->hexversion, "version %#x vs %#x",
	      got.hexversion, want->hexversion);
#define CMP(f)								\
	if (!is_absent(#f, got.f)) {					\
		shared++;						\
		CHECK(got.f == want->f, "3.13 " #f ": debug %u, headers %u", \
		      (unsigned)got.f, (unsigned)want->f);		\
	}
	OFFSET_FIELDS(CMP)
#undef CMP
	CHECK(shared >= 30, "%d fields compared", shared);
	/* Not in the headers' table: PyTypeObject.tp_flags, at 168 on 64-bit since 3.0. */
	CHECK(got.type_flags == 168, "3.13 type_flags: %u", (unsigned)got.type_flags);
	printf("pyoffsets: 3.13.0 _Py_DebugOffsets == headers on %d fields\n",
	       shared);

	/* Damage: cookie, length, version, free-threaded flag, offsets. */
	memcpy(bad, dbg, sizeof(bad));
	bad[0] ^= 0x20;
	CHECK(pyoffsets__from_debug(bad, sizeof(bad), &got) == -1, "bad cookie");
	CHECK(pyoffsets__from_debug(dbg, 0, &got) == -1, "empty buffer");
	CHECK(pyoffsets__from_debug(NULL, 1024, &got) == -1, "NULL buffer");
	CHECK(pyoffsets__from_debug(dbg, 16, &got) == -1, "cookie+version only");
	CHECK(pyoffsets__from_debug(dbg, 583, &got) == -1, "one byte short");
	CHECK(pyoffsets__from_debug(dbg, 584, &got) == 0, "exactly 584 bytes");

	memcpy(bad, dbg, sizeof(bad));
	put64(bad, 1, 0x030c01f0);
	CHECK(pyoffsets__from_debug(bad, sizeof(bad), &got) == -1, "3.12 cookie");
	put64(bad, 1, 0x030f00f0);
	CHECK(pyoffsets__from_debug(bad, sizeof(bad), &got) == -1, "3.15");
	put64(bad, 1, 0x030d00b2);
	CHECK(pyoffsets__from_debug(bad, sizeof(bad), &got) == -1, "3.13 beta");
	put64(bad, 1, 0x030d05f0);
	CHECK(pyoffsets__from_debug(bad, sizeof(bad), &got) == 0 &&
	      got.hexversion == 0x030d05f0, "3.13.5 same layout");
	put64(bad, 2, 7);
	CHECK(pyoffsets__from_debug(bad, sizeof(bad), &got) == -1,
	      "free_threaded not 0/1");

	/* runtime_state.interpreters_head (word 5) past runtime_state.size */
	memcpy(bad, dbg, sizeof(bad));
	put64(bad, 5, get64(dbg, 3));
	CHECK(pyoffsets__from_debug(bad, sizeof(bad), &got) == -1,
	      "offset outside its struct");
	/* code_object.co_code_adaptive: word 3+3+13+9+6 + 9 = 43 */
	memcpy(bad, dbg, sizeof(bad));
	CHECK(get64(dbg, 43) == want->code_adaptive, "word 43 is co_code_adaptive");
	put64(bad, 43, 0x10000);
	CHECK(pyoffsets__from_debug(bad, sizeof(bad), &got) == -1,
	      "offset too big for __u16");
	put64(bad, 43, 8);
	CHECK(pyoffsets__from_debug(bad, sizeof(bad), &got) == -1,
	      "no room for _co_firsttraceable");
	/* unicode_object.size (word 67) disagreeing with asciiobject_size */
	memcpy(bad, dbg, sizeof(bad));
	CHECK(get64(dbg, 70) == want->unicode_ascii_size,
	      "word 70 is asciiobject_size");
	put64(bad, 67, get64(dbg, 67) + 8);
	CHECK(pyoffsets__from_debug(bad, sizeof(bad), &got) == -1,
	      "inconsistent unicode sizes");
}

/*
 * 3.14: no interpreter here, so a synthetic block laid out as 3.14.0's
 * pycore_debug_offsets.h (95 words), filled from the 3.13 values shifted
 * where 3.14 inserted fields.
 */
static void check_debug_314(const unsigned char *dbg313)
{
	unsigned char b[95 * 8];
	struct pytm_offsets got;
	size_t i;

	memset(b, 0, sizeof(b));
	memcpy(b, dbg313, 8 * 6);			/* head, runtime_state */
	put64(b, 1, 0x030e02f0);			/* 3.14.2 */
	/* interpreter_state: 16 words, threads_main after threads_head */
	for (i = 0; i < 4; i++)
		put64(b, 6 + i, get64(dbg313, 6 + i));
	put64(b, 10, get64(dbg313, 9) + 8);		/* threads_main */
	for (i = 4; i < 13; i++)
		put64(b, 7 + i, get64(dbg313, 6 + i));
	/* thread_state: 9 words at 22 (3.13: 19) */
	for (i = 0; i < 9; i++)
		put64(b, 22 + i, get64(dbg313, 19 + i));
	/* interpreter_frame: 8 words at 31 (3.13: 6 at 28) */
	for (i = 0; i < 6; i++)
		put64(b, 31 + i, get64(dbg313, 28 + i));
	put64(b, 37, 64);				/* stackpointer */
	put64(b, 38, 0);				/* tlbc_index */
	/* code_object: 11 words at 39 (3.13: 10 at 34) */
	for (i = 0; i < 10; i++)
		put64(b, 39 + i, get64(dbg313, 34 + i));
	put64(b, 49, 0);				/* co_tlbc */
	/* pyobject, type, tuple, list: 12 words at 50 (3.13: at 44) */
	for (i = 0; i < 12; i++)
		put64(b, 50 + i, get64(dbg313, 44 + i));
	/* set_object: 4 words at 62; then dict .. gc at 66 (3.13: at 56) */
	for (i = 0; i < 17; i++)
		put64(b, 66 + i, get64(dbg313, 56 + i));

	CHECK(pyoffsets__from_debug(b, sizeof(b), &got) == 0, "from_debug 3.14");
	CHECK(got.hexversion == 0x030e02f0 && got.layout == PYTM_LAYOUT_DIRECT &&
	      got.lasti_kind == PYTM_LASTI_INSTR_PTR, "3.14 kind");
	CHECK(got.interp_threads_head == get64(dbg313, 9), "3.14 threads_head");
	CHECK(got.tstate_frame == get64(dbg313, 19 + 4), "3.14 current_frame");
	CHECK(got.frame_owner == get64(dbg313, 28 + 5), "3.14 owner");
	CHECK(got.code_adaptive == get64(dbg313, 43) &&
	      got.code_firsttraceable == got.code_adaptive - 16,
	      "3.14 firsttraceable two words before the bytecode");
	CHECK(got.bytes_sval == get64(dbg313, 66) &&
	      got.unicode_ascii_size == get64(dbg313, 70),
	      "3.14 bytes and unicode after set_object");
	CHECK(got.owner_cstack == 3 && got.owner_generator == 1 &&
	      got.frame_tag_bits == 3, "3.14 owners and tag bits");
	CHECK(pyoffsets__from_debug(b, sizeof(b) - 1, &got) == -1,
	      "3.14 one byte short");
	put64(b, 2, 1);
	CHECK(pyoffsets__from_debug(b, sizeof(b), &got) == -1,
	      "3.14 free-threaded refused");
	put64(b, 2, 0);
	put64(b, 49, 232);
	CHECK(pyoffsets__from_debug(b, sizeof(b), &got) == -1,
	      "3.14 co_tlbc set refused");
}

int main(void)
{
	unsigned char dbg[1024];
	char prefix[700];
	struct target t;
	size_t i;
	int minor;

	check_lookup();

	for (i = 0; i < ARRAY_SIZE(versions); i++) {
		const struct pytm_offsets *o;
		struct pytm_offsets from_dbg;
		uint64_t runtime;

		minor = atoi(versions[i] + 2);
		memset(&t, 0, sizeof(t));
		if (find_prefix(versions[i], prefix, sizeof(prefix))) {
			CHECK(0, "pyenv CPython %s%s not installed", versions[i],
			      strchr(versions[i] + 2, '.')[1] ? "" : "*");
			continue;
		}
		if (target__start(&t, prefix, minor) || target__find_lib(&t)) {
			CHECK(0, "start %s/bin/python3.%d", prefix, minor);
			target__stop(&t);
			continue;
		}
		o = pyoffsets__lookup(0x03000000 | minor << 16);
		if (minor == 13) {
			runtime = target__sym(&t, "_PyRuntime");
			CHECK(runtime && !target__read(&t, runtime, dbg, sizeof(dbg)),
			      "read _PyRuntime of %d", t.pid);
			if (!runtime)
				memset(dbg, 0, sizeof(dbg));
			check_debug_313(dbg);
			check_debug_314(dbg);
			o = pyoffsets__from_debug(dbg, sizeof(dbg), &from_dbg) ?
			    NULL : &from_dbg;
		}
		CHECK(o, "offsets for %s", prefix);
		if (o)
			check_live_walk(&t, o, strrchr(prefix, '/') + 1);
		target__stop(&t);
	}
	return unit_done("pyoffsets");
}
