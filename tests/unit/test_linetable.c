// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * linetable__addr2line against the interpreters themselves: every code
 * object of each interpreter's standard library, every instruction offset,
 * compared with what that interpreter's PyCode_Addr2Line answered
 * (tools/dump_linetables.py). Then hand-made tables, valid and hostile.
 *
 * The interpreters run at once and their output is read as it comes
 * (poll), so the run takes the CPU time of the dumps divided by the cores.
 * Run from the repository root.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "linetable.h"
#include "unit.h"

#define DUMP_SCRIPT	"tools/dump_linetables.py"
/* A whole stdlib has tens of thousands of code objects; far fewer means
 * the dump did not walk it. */
#define MIN_OBJECTS	10000
/*
 * PYTM_LINETABLE_EVERY=N (the sanitizer build's run): the dump compiles
 * every Nth stdlib file only, a sample that still covers every decoder.
 */
static unsigned long every(void)
{
	const char *e = getenv("PYTM_LINETABLE_EVERY");
	long n = e ? strtol(e, NULL, 10) : 1;

	return n > 0 ? (unsigned long)n : 1;
}

/* Mismatches printed per interpreter; the rest are only counted. */
#define MAX_REPORTS	10

struct interp {
	const char *label;	/* "3.8.18", "debian-3.11" */
	const char *version;	/* what sys.hexversion must say */
	const char *pyenv;	/* pyenv version name, or NULL */
	const char *path;	/* fixed path when not from pyenv */
	char exe[PATH_MAX];
	pid_t pid;
	int fd;
	char *buf;		/* unconsumed output */
	size_t buf_len, buf_cap;
	uint32_t want_hex, want_mask;
	unsigned long objects, offsets, mismatches, bad_lines, bad_version;
};

static struct interp interps[] = {
	{ .label = "3.8.18", .version = "3.8.18", .pyenv = "3.8.18" },
	{ .label = "3.9.18", .version = "3.9.18", .pyenv = "3.9.18" },
	{ .label = "3.10.13", .version = "3.10.13", .pyenv = "3.10.13" },
	{ .label = "3.11.7", .version = "3.11.7", .pyenv = "3.11.7" },
	{ .label = "3.12.1", .version = "3.12.1", .pyenv = "3.12.1" },
	{ .label = "3.13.0", .version = "3.13.0", .pyenv = "3.13.0" },
	{ .label = "debian-3.11", .version = "3.11", .path = "/usr/bin/python3.11" },
};
#define NINTERPS (sizeof(interps) / sizeof(interps[0]))

/* Where pyenv keeps VERSION: $PYENV_ROOT, ~/.pyenv, then `pyenv prefix`. */
static int find_pyenv(const char *version, char *out, size_t size)
{
	const char *roots[2] = { getenv("PYENV_ROOT"), getenv("HOME") };
	char cmd[256], prefix[PATH_MAX];
	FILE *f;
	size_t n;

	if (roots[0] && *roots[0]) {
		snprintf(out, size, "%s/versions/%s/bin/python3", roots[0], version);
		if (access(out, X_OK) == 0)
			return 0;
	}
	if (roots[1] && *roots[1]) {
		snprintf(out, size, "%s/.pyenv/versions/%s/bin/python3", roots[1], version);
		if (access(out, X_OK) == 0)
			return 0;
	}
	snprintf(cmd, sizeof(cmd), "pyenv prefix %s 2>/dev/null", version);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	if (!fgets(prefix, sizeof(prefix), f))
		prefix[0] = '\0';
	pclose(f);
	n = strcspn(prefix, "\n");
	prefix[n] = '\0';
	if (!n)
		return -1;
	snprintf(out, size, "%s/bin/python3", prefix);
	return access(out, X_OK);
}

/* "3.11.7" -> 0x030b07.. with a mask over the parts given. */
static void parse_version(struct interp *in)
{
	unsigned int major = 0, minor = 0, micro = 0;
	int n = sscanf(in->version, "%u.%u.%u", &major, &minor, &micro);

	in->want_hex = (major << 24) | (minor << 16) | (micro << 8);
	in->want_mask = n >= 3 ? 0xffffff00u : 0xffff0000u;
}

static int spawn(struct interp *in)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC))
		return -1;
	in->pid = fork();
	if (in->pid < 0) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (in->pid == 0) {
		dup2(p[1], STDOUT_FILENO);
		execl(in->exe, in->exe, DUMP_SCRIPT, (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", in->exe, strerror(errno));
		_exit(127);
	}
	close(p[1]);
	in->fd = p[0];
	return 0;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decode hex into a buffer that grows as needed. */
static int unhex(const char *s, size_t n, uint8_t **buf, size_t *cap,
		 size_t *len)
{
	size_t i;

	if (n % 2)
		return -1;
	if (n / 2 > *cap) {
		uint8_t *nb = realloc(*buf, n / 2);

		if (!nb)
			return -1;
		*buf = nb;
		*cap = n / 2;
	}
	for (i = 0; i < n; i += 2) {
		int hi = hexval(s[i]), lo = hexval(s[i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		(*buf)[i / 2] = hi << 4 | lo;
	}
	*len = n / 2;
	return 0;
}

/*
 * One line of the dump: "HEX FIRSTLINENO TABLE L,L,...\tFILE:NAME".
 * The lines are for addrq -2, 0, 2, ...
 */
static void check_line(struct interp *in, char *line)
{
	static uint8_t *table;
	static size_t table_cap;
	size_t table_len = 0;
	char *p = line, *end, *tab, *where, *thex;
	unsigned long hex;
	long first;
	int addrq, first_bad = INT_MIN, want_bad = 0, got_bad = 0, ok = 1;
	unsigned long n = 0;

	tab = strchr(line, '\t');
	where = tab ? tab + 1 : "?";
	if (tab)
		*tab = '\0';
	hex = strtoul(p, &end, 16);
	if (end == p || *end != ' ')
		goto bad;
	p = end + 1;
	first = strtol(p, &end, 10);
	if (end == p || *end != ' ' || first < INT_MIN || first > INT_MAX)
		goto bad;
	p = end + 1;
	thex = p;
	end = strchr(p, ' ');
	if (!end)
		goto bad;
	if (!(end - p == 1 && *p == '-') &&
	    unhex(p, end - p, &table, &table_cap, &table_len))
		goto bad;
	p = end + 1;

	if (((uint32_t)hex & in->want_mask) != in->want_hex)
		in->bad_version++;

	for (addrq = -2; *p; addrq += 2) {
		long want = strtol(p, &end, 10);
		int got;

		if (end == p || (*end != ',' && *end != '\0'))
			goto bad;
		got = linetable__addr2line((uint32_t)hex, table, table_len,
					   (int)first, addrq);
		if (ok && got != want) {
			ok = 0;
			first_bad = addrq;
			want_bad = (int)want;
			got_bad = got;
		}
		n++;
		p = *end ? end + 1 : end;
	}
	if (!n)
		goto bad;
	in->objects++;
	in->offsets += n;
	if (ok) {
		CHECK(ok, "%s", where);
		return;
	}
	in->mismatches++;
	if (in->mismatches > MAX_REPORTS) {
		unit_failed++;	/* counted, not printed again */
		return;
	}
	CHECK(ok, "%s %s (hexversion %lx, firstlineno %ld, table %zu bytes "
	      "%.*s%s): addrq %d: PyCode_Addr2Line %d, linetable__addr2line %d",
	      in->label, where, hex, first, table_len,
	      (int)(table_len > 64 ? 128 : table_len * 2), thex,
	      table_len > 64 ? "..." : "", first_bad, want_bad, got_bad);
	return;
bad:
	in->bad_lines++;
	CHECK(0, "%s: malformed dump line: %.100s", in->label, line);
}

/* Consume the complete lines in the buffer; keep the partial one. */
static void drain_lines(struct interp *in)
{
	char *start = in->buf, *nl;
	size_t left = in->buf_len;

	while (left && (nl = memchr(start, '\n', left))) {
		*nl = '\0';
		check_line(in, start);
		left -= nl + 1 - start;
		start = nl + 1;
	}
	memmove(in->buf, start, left);
	in->buf_len = left;
}

/* 0 while there is more to read; 1 at end of file. */
static int read_some(struct interp *in)
{
	ssize_t n;

	if (in->buf_cap - in->buf_len < 65536) {
		size_t cap = in->buf_cap ? in->buf_cap * 2 : 1 << 20;
		char *nb = realloc(in->buf, cap);

		if (!nb) {
			fprintf(stderr, "out of memory\n");
			exit(1);
		}
		in->buf = nb;
		in->buf_cap = cap;
	}
	n = read(in->fd, in->buf + in->buf_len, in->buf_cap - in->buf_len);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 0;
	if (n <= 0)
		return 1;
	in->buf_len += n;
	drain_lines(in);
	return 0;
}

static void finish(struct interp *in)
{
	int status = 0;

	close(in->fd);
	in->fd = -1;
	if (in->buf_len) {
		in->bad_lines++;
		CHECK(0, "%s: dump ends in a partial line", in->label);
	}
	waitpid(in->pid, &status, 0);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	      "%s: %s %s exited with status 0x%x", in->label, in->exe,
	      DUMP_SCRIPT, status);
	CHECK(in->objects >= MIN_OBJECTS / every(), "%s: only %lu code objects dumped",
	      in->label, in->objects);
	CHECK(!in->bad_version, "%s: %lu code objects from an interpreter "
	      "that is not %s", in->label, in->bad_version, in->version);
	printf("linetable: %-11s %s: %lu code objects, %lu offsets compared, "
	       "%lu mismatches\n", in->label, in->exe, in->objects,
	       in->offsets, in->mismatches);
	fflush(stdout);
	free(in->buf);
	in->buf = NULL;
}

static void test_interpreters(void)
{
	struct pollfd pfd[NINTERPS];
	struct interp *who[NINTERPS];
	unsigned long objects = 0, offsets = 0;
	size_t i, n;

	if (access(DUMP_SCRIPT, R_OK)) {
		CHECK(0, "%s: %s (run from the repository root)", DUMP_SCRIPT,
		      strerror(errno));
		return;
	}
	for (i = 0; i < NINTERPS; i++) {
		struct interp *in = &interps[i];

		in->fd = -1;
		parse_version(in);
		if (in->pyenv) {
			if (find_pyenv(in->pyenv, in->exe, sizeof(in->exe))) {
				CHECK(0, "%s: pyenv interpreter %s not found",
				      in->label, in->pyenv);
				continue;
			}
		} else {
			snprintf(in->exe, sizeof(in->exe), "%s", in->path);
			if (access(in->exe, X_OK)) {
				CHECK(0, "%s: %s not found", in->label, in->exe);
				continue;
			}
		}
		if (spawn(in)) {
			CHECK(0, "%s: cannot run %s: %s", in->label, in->exe,
			      strerror(errno));
			continue;
		}
	}
	for (;;) {
		for (i = n = 0; i < NINTERPS; i++) {
			if (interps[i].fd < 0)
				continue;
			pfd[n].fd = interps[i].fd;
			pfd[n].events = POLLIN;
			who[n++] = &interps[i];
		}
		if (!n)
			break;
		if (poll(pfd, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			CHECK(0, "poll: %s", strerror(errno));
			break;
		}
		for (i = 0; i < n; i++)
			if (pfd[i].revents && read_some(who[i]))
				finish(who[i]);
	}
	for (i = 0; i < NINTERPS; i++) {
		objects += interps[i].objects;
		offsets += interps[i].offsets;
	}
	printf("linetable: all interpreters: %lu code objects, %lu offsets\n",
	       objects, offsets);
}

/* Tables whose answers we know, one per format. */
static void test_known(void)
{
	/* 3.8 lnotab: +1 line at byte 6, +2 at byte 14. */
	static const uint8_t lnotab[] = { 6, 1, 8, 2 };
	/* 3.10: [0,6) line 10, [6,14) line 11, [14,18) no line. */
	static const uint8_t lt310[] = { 6, 0, 8, 1, 4, 0x80 };
	/*
	 * 3.11+: 1 unit NO_COLUMNS +1 (line 11), 1 unit NONE, 2 units
	 * ONE_LINE1 with its two column bytes (line 12), 1 unit short form.
	 */
	static const uint8_t loc[] = { 0xe8, 0x02, 0xf8, 0xd9, 0x04, 0x08,
				       0x80, 0x05 };
	static const struct {
		uint32_t hex;
		const uint8_t *t;
		size_t len;
		int addrq, want;
	} cases[] = {
		{ 0x030812f0, lnotab, sizeof(lnotab), -2, 10 },
		{ 0x030812f0, lnotab, sizeof(lnotab), 0, 10 },
		{ 0x030812f0, lnotab, sizeof(lnotab), 5, 10 },
		{ 0x030812f0, lnotab, sizeof(lnotab), 6, 11 },
		{ 0x030912f0, lnotab, sizeof(lnotab), 14, 13 },
		{ 0x030912f0, lnotab, sizeof(lnotab), 1000, 13 },
		{ 0x030912f0, NULL, 0, 8, 10 },
		{ 0x030a0df0, lt310, sizeof(lt310), -2, 10 },
		{ 0x030a0df0, lt310, sizeof(lt310), 4, 10 },
		{ 0x030a0df0, lt310, sizeof(lt310), 6, 11 },
		{ 0x030a0df0, lt310, sizeof(lt310), 14, -1 },
		{ 0x030a0df0, lt310, sizeof(lt310), 18, -1 },
		{ 0x030b07f0, loc, sizeof(loc), -2, 10 },
		{ 0x030b07f0, loc, sizeof(loc), 0, 11 },
		{ 0x030c01f0, loc, sizeof(loc), 2, -1 },
		{ 0x030c01f0, loc, sizeof(loc), 4, 12 },
		{ 0x030d00f0, loc, sizeof(loc), 6, 12 },
		{ 0x030d00f0, loc, sizeof(loc), 8, 12 },
		{ 0x030d00f0, loc, sizeof(loc), 10, -1 },
		{ 0x030d00f0, NULL, 0, 0, -1 },
		/* Versions whose format we do not know. */
		{ 0x02070000, lnotab, sizeof(lnotab), 0, -1 },
		{ 0x030f0000, loc, sizeof(loc), 0, -1 },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int got = linetable__addr2line(cases[i].hex, cases[i].t,
					       cases[i].len, 10, cases[i].addrq);

		CHECK(got == cases[i].want, "known case %zu (%x, addrq %d): "
		      "want %d, got %d", i, cases[i].hex, cases[i].addrq,
		      cases[i].want, got);
	}
}

/* Call with a heap copy of exactly LEN bytes, so a sanitizer or valgrind
 * sees any read past the end. */
static int call_exact(uint32_t hex, const uint8_t *t, size_t len, int first,
		      int addrq)
{
	uint8_t *copy = malloc(len ? len : 1);
	int r;

	if (!copy)
		return -2;
	memcpy(copy, t, len);
	r = linetable__addr2line(hex, copy, len, first, addrq);
	free(copy);
	return r;
}

static void test_hostile(void)
{
	static const uint32_t versions[] = { 0x030812f0, 0x030a0df0,
					     0x030b07f0, 0x030d00f0 };
	/* 3.11+: a varint whose "more" bit runs off the table. */
	static const uint8_t trunc_varint[] = { 0xe8, 0x41 };
	/* 3.11+: a varint wider than any line delta. */
	static const uint8_t wide_varint[] = { 0xf0, 0x7f, 0x7f, 0x7f, 0x7f,
					       0x7f, 0x7f, 0x7f, 0x01 };
	/* 3.11+: deltas that push the line past INT_MAX. */
	static const uint8_t overflow[] = { 0xe8, 0x7e, 0x7f, 0x7f, 0x7f, 0x7f,
					    0x03, 0xe8, 0x7e, 0x7f, 0x7f, 0x7f,
					    0x7f, 0x03 };
	/* 3.10: an odd trailing byte is no range. */
	static const uint8_t odd310[] = { 2, 1, 5 };
	/* 3.11+: no entry start byte at all. */
	static const uint8_t no_start[] = { 0x01, 0x02, 0x03 };
	uint8_t garbage[512];
	unsigned int seed = 12345, crashes = 0;
	size_t i, v, len;
	int r;

	CHECK(call_exact(0x030b07f0, trunc_varint, sizeof(trunc_varint), 1, 0) == -1,
	      "truncated varint");
	CHECK(call_exact(0x030c01f0, wide_varint, sizeof(wide_varint), 1, 0) == -1,
	      "over-wide varint");
	CHECK(call_exact(0x030d00f0, overflow, sizeof(overflow), INT_MAX - 5, 2) == -1,
	      "line overflow");
	CHECK(call_exact(0x030a0df0, odd310, sizeof(odd310), 1, 0) == 2,
	      "3.10 odd table, first range");
	CHECK(call_exact(0x030a0df0, odd310, sizeof(odd310), 1, 2) == -1,
	      "3.10 odd table, past the last whole pair");
	CHECK(call_exact(0x030812f0, odd310, sizeof(odd310), 1, 100) == 2,
	      "3.8 odd table");
	r = call_exact(0x030b07f0, no_start, sizeof(no_start), 1, 0);
	CHECK(r == -1 || r >= 0, "no entry start: %d", r);
	for (v = 0; v < sizeof(versions) / sizeof(versions[0]); v++) {
		CHECK(linetable__addr2line(versions[v], NULL, 100, 7, 0) ==
		      linetable__addr2line(versions[v], NULL, 0, 7, 0),
		      "NULL table with a length (%x)", versions[v]);
		CHECK(call_exact(versions[v], trunc_varint, 1, 7, INT_MAX) != -2,
		      "addrq INT_MAX");
		CHECK(call_exact(versions[v], trunc_varint, 1, 7, INT_MIN) != -2,
		      "addrq INT_MIN");
	}

	/* Random tables of every length: must return, without reading past
	 * the end (run under ASan/valgrind to see that). */
	for (i = 0; i < 20000; i++) {
		len = i % sizeof(garbage);
		for (v = 0; v < len; v++)
			garbage[v] = rand_r(&seed) >> 7;
		for (v = 0; v < sizeof(versions) / sizeof(versions[0]); v++) {
			int addrq = (int)(rand_r(&seed) % 4096) - 2;

			r = call_exact(versions[v], garbage, len,
				       (int)(rand_r(&seed) % 100000), addrq);
			if (r == -2)
				crashes++;
		}
	}
	CHECK(crashes == 0, "garbage tables: %u allocation failures", crashes);
}

int main(void)
{
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	test_known();
	test_hostile();
	test_interpreters();
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("linetable: %.1f s\n", (t1.tv_sec - t0.tv_sec) +
	       (t1.tv_nsec - t0.tv_nsec) / 1e9);
	return unit_done("linetable");
}
