/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one error channel of the whole tool:
 * - warn(): a one-line message on stderr, now ("pytm-bpf: MESSAGE");
 *   vlog(): the same, only with -v;
 * - error__set(): why an operation failed, kept for its caller (one line,
 *   per thread; logged under -v), and returned as the negative errno it
 *   is given; error__last() reads it back;
 * - a quiet scope (error__quiet(true) ... (false), per thread): warn()
 *   keeps its message as the last error instead of printing it, for a
 *   caller that tries many processes (--all) and words the reason itself.
 */
#ifndef __PYTM_UTIL_H
#define __PYTM_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define ERROR_MAX 512

extern bool pytm_verbose;

void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int error__set(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same from a va_list; -v logs it as "WHO: reason". */
int error__vset(int err, const char *who, const char *fmt, va_list ap);
const char *error__last(void);		/* "" when there is none */
void error__clear(void);
void error__quiet(bool on);
/* Keep the last error across cleanup calls that may set their own. */
struct error_saved {
	char msg[ERROR_MAX];
};
void error__save(struct error_saved *e);
void error__restore(const struct error_saved *e);
/*
 * Copy untrusted text from a target into DST (at most LEN-1 bytes, NUL
 * terminated), escaping control characters and bytes that are not UTF-8
 * so that printing it cannot drive a terminal.
 */
void str_sanitize(char *dst, size_t len, const char *src, size_t srclen);
/*
 * Length of the UTF-8 sequence at S (LEN bytes left), 0 if invalid, with
 * its code point in *CP when CP is not NULL. Encoded surrogates are
 * accepted, as Python's "surrogatepass" (how pickle writes a str) does.
 */
size_t utf8_seq(const unsigned char *s, size_t len, uint32_t *cp);

/* A control character (C0, DEL, C1: U+009B is a CSI): never written raw. */
static inline bool utf8_is_control(uint32_t cp)
{
	return cp < 0x20 || (cp >= 0x7f && cp < 0xa0);
}

/* An encoded surrogate (a file name Python decoded with surrogateescape): not text. */
static inline bool utf8_is_surrogate(uint32_t cp)
{
	return cp >= 0xd800 && cp <= 0xdfff;
}

/*
 * The one number parser: S is a whole decimal number (digits only, no sign
 * or space) in [MIN, MAX]. 0, or -EINVAL.
 */
int parse_num(const char *s, long long min, long long max, long long *out);
/*
 * A size in bytes: digits, then optionally one of k, M, G (KiB, MiB, GiB;
 * K too), in [MIN, MAX] once scaled. 0, or -EINVAL.
 */
int parse_size(const char *s, long long min, long long max, long long *out);

/* Seconds on the monotonic clock. */
double mono_now(void);
/* Wall clock: seconds since the epoch. */
double real_now(void);

/* Append a zeroed element of ELEM bytes to the array *V of *N (capacity *CAP); NULL: no memory. */
void *array__push(void **v, size_t *n, size_t *cap, size_t elem);

/*
 * A file that readers see whole or not at all: written on f, a temporary
 * file beside PATH (mode 0666 less the umask), renamed over PATH by
 * atomic_file__commit (after fsync). Both free the temporary name;
 * atomic_file__abort removes the file, safe after either.
 */
struct atomic_file {
	FILE *f;
	char *tmp;
	const char *path;
};
int atomic_file__open(struct atomic_file *af, const char *path);
int atomic_file__commit(struct atomic_file *af);
void atomic_file__abort(struct atomic_file *af);

/*
 * FN(ITEMS[i]) for every i < N, each in a thread of its own (inline when a
 * thread cannot be made), and wait for all: for the kernel's slow
 * removals (a uprobe waits for an RCU grace period as it goes).
 */
void run_parallel(void *(*fn)(void *), void *const *items, int n);

#endif /* __PYTM_UTIL_H */
