// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tracemalloc's Snapshot.statistics(), compare_to() and filter_traces(),
 * printed exactly as print(stat) prints them (Lib/tracemalloc.py, the same
 * in 3.9-3.13; 3.8 differs only in the trace tuple).
 *
 * What "exactly" takes:
 *  - Python ints: sizes are summed in 128 bits (each trace is up to 2^64),
 *    int / int divisions are correctly rounded as Python's true division.
 *  - Order: statistics sort descending on (size, count, traceback), diffs on
 *    (|size_diff|, size, |count_diff|, count, traceback). Tracebacks compare
 *    as tuples of (filename, lineno) from the OLDEST frame (Traceback
 *    reverses the frames); str compares by code point, which is byte order
 *    of UTF-8. Group keys are unique, so the sort never meets a full tie
 *    and Python's stability does not matter.
 *  - str(traceback) is its oldest frame: "filename:lineno".
 *  - "%.1f"/"%.0f": glibc and Python both print the exact binary value
 *    rounded half-even, so the same double gives the same text.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "hash.h"
#include "htab.h"
#include "json.h"
#include "report.h"
#include "util.h"

typedef unsigned __int128 u128;
typedef __int128 s128;

/* ---------------- _format_size ---------------- */

static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };

/* (no libm: the Makefile links none) */
static double absd(double x)
{
	return x < 0 ? -x : x;
}

/* The loop of _format_size once SIZE is a float, from unit U on. */
static void format_float(char *buf, size_t len, double size, bool sign,
			 unsigned int u)
{
	for (;; u++) {
		if (absd(size) < 100 && u) {
			/* 3 digits (xx.x UNIT) */
			snprintf(buf, len, sign ? "%+.1f %s" : "%.1f %s",
				 size, units[u]);
			return;
		}
		if (absd(size) < 10 * 1024 || u == 4) {
			/* 4 or 5 digits (xxxx UNIT) */
			snprintf(buf, len, sign ? "%+.0f %s" : "%.0f %s",
				 size, units[u]);
			return;
		}
		size /= 1024;	/* exact: a power of two */
	}
}

void report__format_size(char *buf, size_t len, double size, bool sign)
{
	format_float(buf, len, size, sign, 0);
}

/*
 * _format_size of a Python int: the B step compares the exact integer; then
 * size / 1024 is a correctly rounded true division, i.e. the int rounded to
 * a double (the conversion rounds to nearest even) times 2^-10.
 */
static void format_int(char *buf, size_t len, s128 v, bool sign)
{
	u128 mag = v < 0 ? -(u128)v : (u128)v;
	double d;

	if (mag < 10 * 1024) {
		snprintf(buf, len, sign ? "%+.0f %s" : "%.0f %s", (double)v,
			 units[0]);
		return;
	}
	d = (double)mag / 1024;
	format_float(buf, len, v < 0 ? -d : d, sign, 1);
}

static unsigned int bitlen(u128 v)
{
	unsigned int n = 0;

	while (v) {
		n++;
		v >>= 1;
	}
	return n;
}

/*
 * A / B rounded once to the nearest double, as Python's int / int. Small
 * operands are exact doubles and IEEE division rounds once. Otherwise scale
 * A so that the integer quotient has at least 55 bits, fold the remainder
 * into its lowest bit (below the rounding bit, so it only breaks ties),
 * convert (one rounding) and scale back exactly.
 */
static double true_divide(u128 a, uint64_t b)
{
	const u128 two53 = (u128)1 << 53;
	unsigned int shift = 0, len;
	double scale = 1;
	u128 q, r;

	if (a <= two53 && b <= two53)
		return (double)a / (double)b;
	len = bitlen(a);
	if (len < 126) {
		shift = 126 - len;
		a <<= shift;
	}
	q = a / b;
	r = a % b;
	if (r)
		q |= 1;
	/* 2^-shift, shift <= 126: exact, and so is the product */
	while (shift--)
		scale *= 0.5;
	return (double)q * scale;
}

/* ---------------- fnmatch ---------------- */

/*
 * Text as code points the way Python sees a str: UTF-8, encoded surrogates
 * included (surrogatepass), any other byte as U+DC80..U+DCFF
 * (surrogateescape, how Python decodes an undecodable file name).
 */
static size_t decode(const char *str, size_t len, uint32_t *out)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0, n = 0, k;

	while (i < len) {
		k = utf8_seq(s + i, len - i, &out[n]);
		if (!k) {
			out[n] = 0xdc00 | s[i];
			k = 1;
		}
		n++;
		i += k;
	}
	return n;
}

enum tok_type { T_CHAR, T_ANY, T_STAR, T_CLASS };

struct tok {
	uint8_t type;
	bool negate;			/* T_CLASS */
	uint32_t cp;			/* T_CHAR */
	size_t first, n;		/* T_CLASS: ranges[first .. first+n) */
};

struct pattern {
	struct tok *toks;
	size_t ntoks;
	uint32_t (*ranges)[2];
	size_t nranges, capranges;
	bool never;			/* contains "(?!)": matches nothing */
};

static void pattern__free(struct pattern *p)
{
	if (!p)
		return;
	free(p->toks);
	free(p->ranges);
	memset(p, 0, sizeof(*p));
}

static int add_range(struct pattern *p, uint32_t lo, uint32_t hi)
{
	if (p->nranges == p->capranges) {
		size_t cap = p->capranges ? p->capranges * 2 : 16;
		uint32_t (*r)[2] = realloc(p->ranges, cap * sizeof(*r));

		if (!r)
			return -ENOMEM;
		p->ranges = r;
		p->capranges = cap;
	}
	p->ranges[p->nranges][0] = lo;
	p->ranges[p->nranges][1] = hi;
	p->nranges++;
	return 0;
}

/* A growable code-point string, for the bracket translation below. */
struct cps {
	uint32_t *v;
	size_t n, cap;
};

static int cps_add(struct cps *c, uint32_t x)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 32;
		uint32_t *v = realloc(c->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		c->v = v;
		c->cap = cap;
	}
	c->v[c->n++] = x;
	return 0;
}

/* Append X with fnmatch's escaping: "\" always, "-" too when ESC_DASH. */
static int cps_add_escaped(struct cps *c, const uint32_t *x, size_t n,
			   bool esc_dash)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if ((x[i] == '\\' || (esc_dash && x[i] == '-')) &&
		    cps_add(c, '\\'))
			return -ENOMEM;
		if (cps_add(c, x[i]))
			return -ENOMEM;
	}
	return 0;
}

/*
 * The class fnmatch builds for "[" STUFF "]" (3.11+ _translate): split at
 * range hyphens into chunks, drop empty ranges, escape, then read the
 * resulting regex set the way sre_parse does. Returns 1 for "never
 * matches", 2 for "any character", 0 for a class in T, or -errno.
 */
static int build_class(struct pattern *p, struct tok *t, const uint32_t *stuff,
		       size_t len)
{
	struct cps s = {}, *chunks = NULL;
	size_t nchunks = 0, i, k, from, pos;
	bool has_dash = false;
	int ret = -ENOMEM;

	for (i = 0; i < len; i++)
		has_dash |= stuff[i] == '-';
	if (!has_dash) {
		if (cps_add_escaped(&s, stuff, len, false))
			goto cleanup;
	} else {
		chunks = calloc(len + 1, sizeof(*chunks));
		if (!chunks)
			goto cleanup;
		from = 0;
		k = stuff[0] == '!' ? 2 : 1;
		for (;;) {
			while (k < len && stuff[k] != '-')
				k++;
			if (k >= len)
				break;
			/* chunks.append(pat[i:k]); i = k + 1; k = k + 3 */
			for (pos = from; pos < k; pos++)
				if (cps_add(&chunks[nchunks], stuff[pos]))
					goto cleanup;
			nchunks++;
			from = k + 1;
			k += 3;
		}
		if (from < len) {
			for (pos = from; pos < len; pos++)
				if (cps_add(&chunks[nchunks], stuff[pos]))
					goto cleanup;
			nchunks++;
		} else if (cps_add(&chunks[nchunks - 1], '-')) {
			goto cleanup;
		}
		/* Remove empty ranges (Python would IndexError on empty chunks) */
		for (k = nchunks - 1; k > 0; k--) {
			struct cps *a = &chunks[k - 1], *b = &chunks[k];

			if (!a->n || !b->n) {
				ret = -EINVAL;
				goto cleanup;
			}
			if (a->v[a->n - 1] > b->v[0]) {
				a->n--;
				for (pos = 1; pos < b->n; pos++)
					if (cps_add(a, b->v[pos]))
						goto cleanup;
				free(b->v);
				memmove(b, b + 1, (nchunks - k - 1) * sizeof(*b));
				nchunks--;
				memset(&chunks[nchunks], 0, sizeof(*chunks));
			}
		}
		for (k = 0; k < nchunks; k++) {
			if (k && cps_add(&s, '-'))
				goto cleanup;
			if (cps_add_escaped(&s, chunks[k].v, chunks[k].n, true))
				goto cleanup;
		}
	}
	/* re.sub(r'([&~|])', r'\\\1', stuff): set operations made literal */
	{
		struct cps e = {};

		for (i = 0; i < s.n; i++) {
			if ((s.v[i] == '&' || s.v[i] == '~' || s.v[i] == '|') &&
			    cps_add(&e, '\\')) {
				free(e.v);
				goto cleanup;
			}
			if (cps_add(&e, s.v[i])) {
				free(e.v);
				goto cleanup;
			}
		}
		free(s.v);
		s = e;
	}
	if (!s.n) {
		ret = 1;	/* '(?!)' */
		goto cleanup;
	}
	if (s.n == 1 && s.v[0] == '!') {
		ret = 2;	/* '.' */
		goto cleanup;
	}
	/* Now the regex "[" s "]", read as sre_parse reads a set. */
	pos = 0;
	t->type = T_CLASS;
	t->negate = false;
	t->first = p->nranges;
	/* a leading '^' or '[' is escaped by fnmatch: a literal, as read here */
	if (s.v[0] == '!') {
		t->negate = true;	/* '^' + stuff[1:] */
		pos = 1;
	}
	while (pos < s.n) {
		uint32_t lo, hi;
		bool lit_close;

		/* this = sourceget() */
		if (s.v[pos] == '\\' && pos + 1 < s.n) {
			lo = s.v[pos + 1];
			lit_close = true;
			pos += 2;
		} else {
			lo = s.v[pos];
			/* a "]" only closes the set once it is not empty */
			lit_close = !(lo == ']' && p->nranges > t->first);
			pos++;
		}
		if (!lit_close) {
			/* regex outside the set: fnmatch never builds that */
			ret = -EINVAL;
			goto cleanup;
		}
		if (pos < s.n && s.v[pos] == '-') {
			if (pos + 1 >= s.n) {
				/* "x-]": x and a literal "-" */
				if (add_range(p, lo, lo) || add_range(p, '-', '-'))
					goto cleanup;
				pos++;
				break;
			}
			pos++;
			if (s.v[pos] == '\\' && pos + 1 < s.n) {
				hi = s.v[pos + 1];
				pos += 2;
			} else {
				hi = s.v[pos];
				pos++;
			}
			if (hi < lo) {
				ret = -EINVAL;	/* re.error: bad character range */
				goto cleanup;
			}
			if (add_range(p, lo, hi))
				goto cleanup;
		} else if (add_range(p, lo, lo)) {
			goto cleanup;
		}
	}
	t->n = p->nranges - t->first;
	ret = 0;

cleanup:
	if (chunks) {
		for (k = 0; k <= len; k++)
			free(chunks[k].v);
		free(chunks);
	}
	free(s.v);
	return ret;
}

/* fnmatch.translate (3.11+) of PAT, kept as tokens instead of a regex. */
static int pattern__compile(struct pattern *p, const char *pat)
{
	size_t len = strlen(pat), n, i, j;
	uint32_t *cp;
	int ret = -ENOMEM;

	memset(p, 0, sizeof(*p));
	cp = malloc((len + 1) * sizeof(*cp));
	p->toks = malloc((len + 1) * sizeof(*p->toks));
	if (!cp || !p->toks)
		goto cleanup;
	n = decode(pat, len, cp);
	for (i = 0; i < n;) {
		struct tok *t = &p->toks[p->ntoks];
		uint32_t c = cp[i++];

		memset(t, 0, sizeof(*t));
		if (c == '*') {
			/* consecutive stars are one */
			if (!p->ntoks || p->toks[p->ntoks - 1].type != T_STAR) {
				t->type = T_STAR;
				p->ntoks++;
			}
			continue;
		}
		if (c == '?') {
			t->type = T_ANY;
			p->ntoks++;
			continue;
		}
		if (c != '[') {
			t->type = T_CHAR;
			t->cp = c;
			p->ntoks++;
			continue;
		}
		j = i;
		if (j < n && cp[j] == '!')
			j++;
		if (j < n && cp[j] == ']')
			j++;
		while (j < n && cp[j] != ']')
			j++;
		if (j >= n) {
			t->type = T_CHAR;	/* '\\[' */
			t->cp = '[';
			p->ntoks++;
			continue;
		}
		ret = build_class(p, t, cp + i, j - i);
		if (ret < 0)
			goto cleanup;
		if (ret == 1)
			p->never = true;
		else if (ret == 2)
			t->type = T_ANY;
		if (ret != 1)
			p->ntoks++;
		i = j + 1;
	}
	ret = 0;

cleanup:
	free(cp);
	if (ret)
		pattern__free(p);
	return ret;
}

static bool tok_match(const struct pattern *p, const struct tok *t, uint32_t c)
{
	size_t i;
	bool in = false;

	switch (t->type) {
	case T_CHAR:
		return c == t->cp;
	case T_ANY:
		return true;	/* (?s): newlines too */
	case T_CLASS:
		for (i = t->first; i < t->first + t->n && !in; i++)
			in = c >= p->ranges[i][0] && c <= p->ranges[i][1];
		return in != t->negate;
	}
	return false;
}

/*
 * Match all of S. Every token but "*" takes one character, so taking the
 * earliest place for what follows a star and retrying only from the last
 * star is complete (what fnmatch's atomic groups also rely on).
 */
static bool pattern__match(const struct pattern *p, const uint32_t *s, size_t n)
{
	size_t ti = 0, si = 0, star_t = SIZE_MAX, star_s = 0;

	if (p->never)
		return false;
	while (si < n) {
		if (ti < p->ntoks && p->toks[ti].type == T_STAR) {
			star_t = ti++;
			star_s = si;
		} else if (ti < p->ntoks && tok_match(p, &p->toks[ti], s[si])) {
			ti++;
			si++;
		} else if (star_t != SIZE_MAX) {
			ti = star_t + 1;
			si = ++star_s;
		} else {
			return false;
		}
	}
	while (ti < p->ntoks && p->toks[ti].type == T_STAR)
		ti++;
	return ti == p->ntoks;
}

/* Scratch space for decoding filenames while filtering. */
struct scratch {
	uint32_t *v;
	size_t cap;
};

/* _normalize_filename(): a ".pyc" file counts as its ".py". */
static size_t normalized_len(const char *name)
{
	size_t len = strlen(name);

	if (len >= 4 && !strcmp(name + len - 4, ".pyc"))
		len--;
	return len;
}

static int match_name(const struct pattern *p, const char *name,
		      struct scratch *sc, bool *res)
{
	size_t len = normalized_len(name), n;

	if (len + 1 > sc->cap) {
		uint32_t *v = realloc(sc->v, (len + 1) * sizeof(*v));

		if (!v)
			return -ENOMEM;
		sc->v = v;
		sc->cap = len + 1;
	}
	n = decode(name, len, sc->v);
	*res = pattern__match(p, sc->v, n);
	return 0;
}

int report__fnmatch(const char *pattern, const char *name)
{
	struct pattern p;
	struct scratch sc = {};
	bool res = false;
	int err;

	if (!pattern || !name)
		return -EINVAL;
	err = pattern__compile(&p, pattern);
	if (err)
		return err;
	/* fnmatch itself does not strip ".pyc": decode the whole name */
	sc.v = malloc((strlen(name) + 1) * sizeof(*sc.v));
	if (!sc.v) {
		err = -ENOMEM;
		goto cleanup;
	}
	res = pattern__match(&p, sc.v, decode(name, strlen(name), sc.v));

cleanup:
	free(sc.v);
	pattern__free(&p);
	return err ? err : res;
}

/* ---------------- filters ---------------- */

int report__parse_filter(struct report_filter *f, const char *spec,
			 bool inclusive, bool all_frames)
{
	const char *colon, *p;
	size_t len;
	struct pattern pat;
	int ret;

	if (!f || !spec)
		return error__set(-EINVAL, "invalid argument");
	memset(f, 0, sizeof(*f));
	f->inclusive = inclusive;
	f->all_frames = all_frames;
	len = strlen(spec);
	colon = strrchr(spec, ':');
	if (colon && colon[1]) {
		for (p = colon + 1; *p >= '0' && *p <= '9'; p++)
			;
		if (!*p) {
			long long v;

			if (parse_num(colon + 1, 0, UINT_MAX, &v))
				return error__set(-EINVAL, "line number out of range: %s",
						  colon + 1);
			f->has_lineno = true;
			f->lineno = v;
			len = colon - spec;
		}
	}
	if (len >= sizeof(f->pattern))
		return error__set(-EINVAL, "pattern longer than %d bytes",
				  REPORT_PATTERN_MAX - 1);
	memcpy(f->pattern, spec, len);
	f->pattern[len] = '\0';
	/* _normalize_filename(filename_pattern) */
	if (len >= 4 && !strcmp(f->pattern + len - 4, ".pyc"))
		f->pattern[len - 1] = '\0';
	ret = pattern__compile(&pat, f->pattern);
	if (ret == -EINVAL)
		error__set(ret, "bad pattern (fnmatch cannot compile it): %s", f->pattern);
	else if (ret)
		error__set(ret, "%s", strerror(-ret));
	pattern__free(&pat);
	return ret;
}

void report__domain_filter(struct report_filter *f, bool inclusive,
			   unsigned int domain)
{
	if (!f)
		return;
	memset(f, 0, sizeof(*f));
	f->inclusive = inclusive;
	f->domain_only = true;
	f->has_domain = true;
	f->domain = domain;
}

struct cfilter {
	const struct report_filter *f;
	struct pattern pat;
};

struct filters {
	struct cfilter *v;
	size_t n;
	struct scratch sc;
};

static void filters__free(struct filters *fs)
{
	size_t i;

	for (i = 0; fs->v && i < fs->n; i++)
		pattern__free(&fs->v[i].pat);
	free(fs->v);
	free(fs->sc.v);
	memset(fs, 0, sizeof(*fs));
}

static int filters__init(struct filters *fs, const struct report_opts *o)
{
	size_t i;
	int err;

	memset(fs, 0, sizeof(*fs));
	if (!o->nfilters)
		return 0;
	if (!o->filters)
		return -EINVAL;
	fs->v = calloc(o->nfilters, sizeof(*fs->v));
	if (!fs->v)
		return -ENOMEM;
	for (i = 0; i < o->nfilters; i++) {
		fs->v[i].f = &o->filters[i];
		if (o->filters[i].domain_only)
			continue;
		if (!memchr(o->filters[i].pattern, '\0', REPORT_PATTERN_MAX)) {
			err = -EINVAL;
			goto cleanup;
		}
		err = pattern__compile(&fs->v[i].pat, o->filters[i].pattern);
		if (err)
			goto cleanup;
	}
	fs->n = o->nfilters;
	return 0;

cleanup:
	fs->n = i;
	filters__free(fs);
	return err;
}

/* Filter._match_frame_impl */
static int frame_impl(struct filters *fs, const struct cfilter *c,
		      const struct pytm_frame_info *fr, bool *res)
{
	int err = match_name(&c->pat, fr->filename, &fs->sc, res);

	if (!err && *res && c->f->has_lineno)
		*res = fr->lineno == c->f->lineno;
	return err;
}

/* BaseFilter._match(trace) of Filter or DomainFilter */
static int filter_match(struct filters *fs, const struct cfilter *c,
			unsigned int domain, const struct pytm_traceback *tb,
			bool *res)
{
	const struct report_filter *f = c->f;
	unsigned int i;
	bool m = false;
	int err;

	if (f->domain_only) {
		*res = (domain == f->domain) != !f->inclusive;
		return 0;
	}
	if (f->all_frames) {
		for (i = 0; i < tb->nframe && !m; i++) {
			err = frame_impl(fs, c, &tb->frames[i], &m);
			if (err)
				return err;
		}
		m = m ? f->inclusive : !f->inclusive;
	} else {
		err = frame_impl(fs, c, &tb->frames[0], &m);
		if (err)
			return err;
		m = m != !f->inclusive;
	}
	if (f->has_domain)
		m = f->inclusive ? (m && domain == f->domain)
				 : (m || domain != f->domain);
	*res = m;
	return 0;
}

/* Snapshot._filter_trace */
static int filters__keep(struct filters *fs, unsigned int domain,
			 const struct pytm_traceback *tb, bool *keep)
{
	bool any_include = false, included = false, m;
	size_t i;
	int err;

	for (i = 0; i < fs->n; i++) {
		if (!fs->v[i].f->inclusive)
			continue;
		any_include = true;
		err = filter_match(fs, &fs->v[i], domain, tb, &m);
		if (err)
			return err;
		if (m) {
			included = true;
			break;
		}
	}
	*keep = false;
	if (any_include && !included)
		return 0;
	for (i = 0; i < fs->n; i++) {
		if (fs->v[i].f->inclusive)
			continue;
		err = filter_match(fs, &fs->v[i], domain, tb, &m);
		if (err)
			return err;
		if (!m)
			return 0;
	}
	*keep = true;
	return 0;
}

int report__filter_mask(const struct snapshot *s, const struct report_opts *o, bool *keep)
{
	const struct pytm_trace *t = snapshot__traces(s);
	size_t i, n = snapshot__count(s);
	struct filters fs;
	int err;

	err = filters__init(&fs, o);
	for (i = 0; !err && i < n; i++) {
		keep[i] = true;
		if (fs.n)
			err = filters__keep(&fs, t[i].domain, t[i].tb, &keep[i]);
	}
	filters__free(&fs);
	return err;
}

/* ---------------- grouping ---------------- */

/*
 * A statistic's traceback: N frames, most recent first as in the trace
 * (Python's Traceback holds them reversed; comparisons account for it).
 */
struct gkey {
	const struct pytm_frame_info *frames;
	unsigned int n;
	bool zero_lineno;		/* key 'filename': (filename, 0) */
};

struct group {
	struct gkey key;
	uint64_t hash;
	u128 size;
	uint64_t count;
	s128 size_diff;			/* compare_to */
	int64_t count_diff;
	uint64_t born;			/* its oldest block's allocation time; 0 unknown */
	bool matched;
};

struct groups {
	struct group *v;
	size_t n, cap;
	struct htab index;		/* hash -> index + 1 in v */
	uint64_t seed;
};

static unsigned int key_lineno(const struct gkey *k, unsigned int i)
{
	return k->zero_lineno ? 0 : k->frames[i].lineno;
}

static uint64_t key_hash(uint64_t seed, const struct gkey *k)
{
	uint64_t h = hash__mix64(seed ^ k->n);
	unsigned int i;

	for (i = 0; i < k->n; i++) {
		h = hash__str(h, k->frames[i].filename);
		h = hash__mix64(h ^ key_lineno(k, i));
	}
	return h;
}

static bool key_equal(const struct gkey *a, const struct gkey *b)
{
	unsigned int i;

	if (a->n != b->n)
		return false;
	for (i = 0; i < a->n; i++) {
		if (key_lineno(a, i) != key_lineno(b, i) ||
		    (a->frames[i].filename != b->frames[i].filename &&
		     strcmp(a->frames[i].filename, b->frames[i].filename)))
			return false;
	}
	return true;
}

/* Traceback.__lt__: tuples of (filename, lineno), oldest frame first. */
static int key_cmp(const struct gkey *a, const struct gkey *b)
{
	unsigned int i, n = a->n < b->n ? a->n : b->n;
	unsigned int la, lb;
	int c;

	for (i = 0; i < n; i++) {
		const struct pytm_frame_info *fa = &a->frames[a->n - 1 - i];
		const struct pytm_frame_info *fb = &b->frames[b->n - 1 - i];

		c = fa->filename == fb->filename ? 0 :
		    strcmp(fa->filename, fb->filename);
		if (c)
			return c < 0 ? -1 : 1;
		la = key_lineno(a, a->n - 1 - i);
		lb = key_lineno(b, b->n - 1 - i);
		if (la != lb)
			return la < lb ? -1 : 1;
	}
	return a->n < b->n ? -1 : a->n > b->n;
}

static void groups__free(struct groups *g)
{
	free(g->v);
	htab__free(&g->index);
	memset(g, 0, sizeof(*g));
}

static int groups__init(struct groups *g, uint64_t seed)
{
	memset(g, 0, sizeof(*g));
	g->seed = seed;
	return htab__init(&g->index, 256);
}

static struct group *groups__find(const struct groups *g,
				  const struct gkey *k, uint64_t h)
{
	size_t cur = 0;
	uint64_t v;

	while ((v = htab__next(&g->index, h, &cur)))
		if (key_equal(&g->v[v - 1].key, k))
			return &g->v[v - 1];
	return NULL;
}

/* The older of two allocation times, 0 being unknown. */
static uint64_t born_min(uint64_t a, uint64_t b)
{
	return !a ? b : !b ? a : a < b ? a : b;
}

/* stats[traceback] += (size, count) */
static int groups__add(struct groups *g, const struct gkey *k, u128 size,
		       uint64_t count, uint64_t born)
{
	uint64_t h = key_hash(g->seed, k);
	struct group *x = groups__find(g, k, h);

	if (x) {
		x->size += size;
		x->count += count;
		x->born = born_min(x->born, born);
		return 0;
	}
	x = array__push((void **)&g->v, &g->n, &g->cap, sizeof(*x));
	if (!x || htab__add(&g->index, h, g->n))
		return -ENOMEM;
	x->key = *k;
	x->hash = h;
	x->size = size;
	x->count = count;
	x->born = born;
	return 0;
}

/* Traces summed per (traceback, domain) first: filters see nothing else. */
struct entry {
	const struct pytm_traceback *tb;
	unsigned int domain;
	u128 size;
	uint64_t count;
	uint64_t born;
};

struct entries {
	struct entry *v;
	size_t n, cap;
	struct htab index;		/* hash -> index + 1 in v */
};

static uint64_t entry_hash(const struct pytm_traceback *tb, unsigned int domain)
{
	return hash__mix64((uint64_t)(uintptr_t)tb ^ ((uint64_t)domain << 48) ^ domain);
}

static int entries__build(struct entries *e, const struct snapshot *s)
{
	const struct pytm_trace *t = snapshot__traces(s);
	size_t n = snapshot__count(s), i, cur;
	uint64_t h, v;

	memset(e, 0, sizeof(*e));
	if (htab__init(&e->index, 1024))
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		struct entry *x = NULL;

		h = entry_hash(t[i].tb, t[i].domain);
		for (cur = 0; (v = htab__next(&e->index, h, &cur));) {
			x = &e->v[v - 1];
			if (x->tb == t[i].tb && x->domain == t[i].domain)
				break;
			x = NULL;
		}
		if (x) {
			x->size += t[i].size;
			x->count += t[i].count;
			x->born = born_min(x->born, t[i].born);
			continue;
		}
		x = array__push((void **)&e->v, &e->n, &e->cap, sizeof(*x));
		if (!x || htab__add(&e->index, h, e->n))
			return -ENOMEM;
		x->tb = t[i].tb;
		x->domain = t[i].domain;
		x->size = t[i].size;
		x->count = t[i].count;
		x->born = t[i].born;
	}
	return 0;
}

static void entries__free(struct entries *e)
{
	free(e->v);
	htab__free(&e->index);
	memset(e, 0, sizeof(*e));
}

/* Snapshot._group_by(key_type, cumulative), of the filtered traces. */
static int group_by(struct groups *g, const struct snapshot *s,
		    const struct report_opts *o, struct filters *fs)
{
	struct entries e;
	struct gkey k;
	size_t i;
	unsigned int f;
	bool keep;
	int err;

	err = entries__build(&e, s);
	if (err)
		goto cleanup;
	for (i = 0; i < e.n; i++) {
		const struct entry *x = &e.v[i];

		if (fs->n) {
			err = filters__keep(fs, x->domain, x->tb, &keep);
			if (err)
				goto cleanup;
			if (!keep)
				continue;
		}
		if (!o->cumulative) {
			k.frames = x->tb->frames;
			k.n = o->key == REPORT_KEY_TRACEBACK ? x->tb->nframe : 1;
			k.zero_lineno = o->key == REPORT_KEY_FILENAME;
			err = groups__add(g, &k, x->size, x->count, x->born);
			if (err)
				goto cleanup;
			continue;
		}
		/* every frame counts, a repeated one (recursion) each time */
		for (f = 0; f < x->tb->nframe; f++) {
			k.frames = &x->tb->frames[f];
			k.n = 1;
			k.zero_lineno = o->key == REPORT_KEY_FILENAME;
			err = groups__add(g, &k, x->size, x->count, x->born);
			if (err)
				goto cleanup;
		}
	}

cleanup:
	entries__free(&e);
	return err;
}

/* Statistic._sort_key, reverse=True: the bigger key first. */
static int stat_cmp(const void *pa, const void *pb)
{
	const struct group *a = pa, *b = pb;

	if (a->size != b->size)
		return a->size > b->size ? -1 : 1;
	if (a->count != b->count)
		return a->count > b->count ? -1 : 1;
	return -key_cmp(&a->key, &b->key);
}

static u128 abs128(s128 v)
{
	return v < 0 ? -(u128)v : (u128)v;
}

/* StatisticDiff._sort_key, reverse=True */
static int diff_cmp(const void *pa, const void *pb)
{
	const struct group *a = pa, *b = pb;
	u128 x = abs128(a->size_diff), y = abs128(b->size_diff);

	if (x != y)
		return x > y ? -1 : 1;
	if (a->size != b->size)
		return a->size > b->size ? -1 : 1;
	x = abs128(a->count_diff);
	y = abs128(b->count_diff);
	if (x != y)
		return x > y ? -1 : 1;
	if (a->count != b->count)
		return a->count > b->count ? -1 : 1;
	return -key_cmp(&a->key, &b->key);
}

/* ---------------- printing ---------------- */

void report__put_escaped(FILE *out, const char *str, const char *also)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t len = strlen(str), i = 0, n;
	uint32_t cp;

	while (i < len) {
		n = utf8_seq(s + i, len - i, &cp);
		/* Printable ASCII, or a character past the C1 controls, no surrogate. */
		if (n == 1 ? cp >= 0x20 && cp < 0x7f && cp != '\\' && !(also && strchr(also, cp)) :
		    n > 1 && !utf8_is_control(cp) && !utf8_is_surrogate(cp)) {
			fwrite(s + i, 1, n, out);
			i += n;
		} else {
			fprintf(out, s[i] == '\\' ? "\\\\" : "\\x%02x", s[i]);
			i++;
		}
	}
}

/* str(Traceback) = str(Frame) of the oldest frame: "filename:lineno" */
static void put_traceback(FILE *out, const struct gkey *k, bool escape)
{
	const struct pytm_frame_info *fr = &k->frames[k->n - 1];

	if (escape)
		report__put_escaped(out, fr->filename, NULL);
	else
		fputs(fr->filename, out);
	fprintf(out, ":%u", key_lineno(k, k->n - 1));
}

static void put_stat(FILE *out, const struct group *g, bool diff, bool escape)
{
	char size[64], size_diff[64], avg[64];

	put_traceback(out, &g->key, escape);
	format_int(size, sizeof(size), (s128)g->size, false);
	if (diff) {
		format_int(size_diff, sizeof(size_diff), g->size_diff, true);
		fprintf(out, ": size=%s (%s), count=%llu (%+lld)", size,
			size_diff, (unsigned long long)g->count,
			(long long)g->count_diff);
	} else {
		fprintf(out, ": size=%s, count=%llu", size,
			(unsigned long long)g->count);
	}
	if (g->count) {
		format_float(avg, sizeof(avg), true_divide(g->size, g->count),
			     false, 0);
		fprintf(out, ", average=%s", avg);
	}
	fputc('\n', out);
}

/* How many of N statistics a report shows: the first TOP, or all (TOP <= 0). */
static size_t shown_of(size_t n, int top)
{
	return top > 0 && (size_t)top < n ? (size_t)top : n;
}

static int print_block(FILE *out, struct group *v, size_t n, int top,
		       bool diff, bool escape)
{
	size_t shown = shown_of(n, top), i;

	fprintf(out, diff ? "[ Top %lld differences ]\n" : "[ Top %lld ]\n",
		top > 0 ? (long long)top : (long long)n);
	for (i = 0; i < shown; i++)
		put_stat(out, &v[i], diff, escape);
	return ferror(out) ? -EIO : 0;
}

static const char *const key_names[] = {
	[REPORT_KEY_LINENO] = "lineno",
	[REPORT_KEY_FILENAME] = "filename",
	[REPORT_KEY_TRACEBACK] = "traceback",
};

int report__parse_key(const char *s)
{
	int k;

	for (k = 0; s && k < (int)(sizeof(key_names) / sizeof(key_names[0])); k++)
		if (!strcmp(s, key_names[k]))
			return k;
	return -1;
}

const char *report__key_name(enum report_key key)
{
	return key_names[key];
}

static int check_opts(const struct report_opts *o)
{
	if (o->key != REPORT_KEY_LINENO && o->key != REPORT_KEY_FILENAME &&
	    o->key != REPORT_KEY_TRACEBACK)
		return -EINVAL;
	/* "cumulative mode cannot by used with key type 'traceback'" */
	if (o->cumulative && o->key == REPORT_KEY_TRACEBACK)
		return -EINVAL;
	return 0;
}

/* Statistics ready to print: sorted groups, their keys in the snapshots. */
struct report_stats {
	struct groups gn, go;		/* new and (for differences) old */
	struct group *v;		/* sorted; gn.v, or its own for diffs */
	size_t n;
	bool diff;
};

void report__stats_free(struct report_stats *st)
{
	if (!st)
		return;
	if (st->diff)
		free(st->v);
	groups__free(&st->gn);
	groups__free(&st->go);
	free(st);
}

/* snapshot.statistics(key, cumulative) */
static int stats_top(struct report_stats *st, const struct snapshot *s,
		     const struct report_opts *o, struct filters *fs)
{
	int err;

	err = groups__init(&st->gn, hash__seed());
	if (!err)
		err = group_by(&st->gn, s, o, fs);
	if (err)
		return err;
	st->v = st->gn.v;
	st->n = st->gn.n;
	if (st->n)
		qsort(st->v, st->n, sizeof(*st->v), stat_cmp);
	return 0;
}

/* snap.compare_to(old, key, cumulative): _compare_grouped_stats */
static int stats_diff(struct report_stats *st, const struct snapshot *snap,
		      const struct snapshot *old, const struct report_opts *o,
		      struct filters *fs)
{
	struct groups *gn = &st->gn, *go = &st->go;
	struct group *prev;
	uint64_t seed;
	size_t i;
	int err;

	/* one seed: old groups are looked up with new keys' hashes */
	seed = hash__seed();
	err = groups__init(gn, seed);
	if (!err)
		err = groups__init(go, seed);
	if (!err)
		err = group_by(gn, snap, o, fs);
	if (!err)
		err = group_by(go, old, o, fs);
	if (err)
		return err;
	st->diff = true;
	st->v = calloc(gn->n + go->n + 1, sizeof(*st->v));
	if (!st->v)
		return -ENOMEM;
	for (i = 0; i < gn->n; i++) {
		struct group *x = &st->v[st->n++];

		*x = gn->v[i];
		prev = groups__find(go, &x->key, x->hash);
		if (prev) {
			prev->matched = true;
			x->size_diff = (s128)x->size - (s128)prev->size;
			x->count_diff = (int64_t)x->count - (int64_t)prev->count;
		} else {
			x->size_diff = (s128)x->size;
			x->count_diff = (int64_t)x->count;
		}
	}
	for (i = 0; i < go->n; i++) {
		struct group *x;

		if (go->v[i].matched)
			continue;
		x = &st->v[st->n++];
		*x = go->v[i];
		x->size = 0;
		x->count = 0;
		x->size_diff = -(s128)go->v[i].size;
		x->count_diff = -(int64_t)go->v[i].count;
	}
	if (st->n)
		qsort(st->v, st->n, sizeof(*st->v), diff_cmp);
	return 0;
}

int report__stats(const struct snapshot *snap, const struct snapshot *old,
		  const struct report_opts *o, struct report_stats **out)
{
	struct report_stats *st;
	struct filters fs = {};
	int err;

	*out = NULL;
	if (!snap || !o)
		return -EINVAL;
	err = check_opts(o);
	if (err)
		return err;
	err = filters__init(&fs, o);
	if (err)
		return err;
	st = calloc(1, sizeof(*st));
	if (!st) {
		filters__free(&fs);
		return -ENOMEM;
	}
	err = old ? stats_diff(st, snap, old, o, &fs) : stats_top(st, snap, o, &fs);
	filters__free(&fs);
	if (err) {
		report__stats_free(st);
		return err;
	}
	*out = st;
	return 0;
}

int report__print_stats(FILE *out, const struct report_stats *st,
			const struct report_opts *o)
{
	return print_block(out, st->v, st->n, o->top, st->diff, o->escape);
}

size_t report__stats_count(const struct report_stats *st)
{
	return st->n;
}

int report__stats_get(const struct report_stats *st, size_t i, struct report_stat *out)
{
	const struct group *g;

	if (!st || i >= st->n)
		return -ENOENT;
	g = &st->v[i];
	out->size = g->size > UINT64_MAX ? UINT64_MAX : (uint64_t)g->size;
	out->count = g->count;
	out->filename = g->key.n ? g->key.frames[0].filename : NULL;
	out->lineno = g->key.n ? key_lineno(&g->key, 0) : 0;
	out->born = g->born;
	out->frames = g->key.frames;
	out->nframe = g->key.n;
	return 0;
}

void report__json_stats(struct json *j, const struct report_stats *st,
			const struct report_opts *o)
{
	size_t shown = shown_of(st->n, o->top), i;
	unsigned int f;

	json__begin_array(j);
	for (i = 0; i < shown; i++) {
		const struct group *g = &st->v[i];

		json__begin_object(j);
		json__name(j, "size");
		json__u128(j, g->size);
		json__name(j, "count");
		json__uint(j, g->count);
		if (st->diff) {
			json__name(j, "size_diff");
			json__s128(j, g->size_diff);
			json__name(j, "count_diff");
			json__int(j, g->count_diff);
		}
		json__name(j, "average");
		if (g->count)
			json__double(j, true_divide(g->size, g->count));
		else
			json__null(j);
		/* Oldest frame first, as a tracemalloc.Traceback iterates. */
		json__name(j, "traceback");
		json__begin_array(j);
		for (f = g->key.n; f-- > 0;) {
			json__begin_object(j);
			json__name(j, "filename");
			json__string(j, g->key.frames[f].filename);
			json__name(j, "lineno");
			json__uint(j, key_lineno(&g->key, f));
			json__end_object(j);
		}
		json__end_array(j);
		json__end_object(j);
	}
	json__end_array(j);
}

static int print_report(FILE *out, const struct snapshot *snap,
			const struct snapshot *old, const struct report_opts *o)
{
	struct report_stats *st;
	int err;

	if (!out || !snap || !o)
		return -EINVAL;
	err = report__stats(snap, old, o, &st);
	if (err)
		return err;
	err = report__print_stats(out, st, o);
	report__stats_free(st);
	return err;
}

int report__print_top(FILE *out, const struct snapshot *s,
		      const struct report_opts *o)
{
	return print_report(out, s, NULL, o);
}

int report__print_diff(FILE *out, const struct snapshot *snap,
		       const struct snapshot *old, const struct report_opts *o)
{
	if (!old)
		return -EINVAL;
	return print_report(out, snap, old, o);
}
