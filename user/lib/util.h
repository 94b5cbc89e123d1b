/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* One error style for the whole tool: warn() always, vlog() under -v. */
#ifndef __PYTM_UTIL_H
#define __PYTM_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

extern bool pytm_verbose;
/*
 * While set, warn() keeps its message in pytm_last_warning instead of
 * printing it: a caller that tries many processes (--all) reports the
 * reason in its own words.
 */
extern bool pytm_quiet;
extern char pytm_last_warning[512];

/* "pytm-bpf: MESSAGE\n" on stderr. */
void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same, only with -v. */
void vlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
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

/*
 * The one number parser: S is a whole decimal number (digits only, no sign
 * or space) in [MIN, MAX]. 0, or -EINVAL.
 */
int parse_num(const char *s, long long min, long long max, long long *out);

#endif /* __PYTM_UTIL_H */
