// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The in-memory snapshot (interned filenames, interned tracebacks, a growing
 * trace array) and its file format: the pickle of tracemalloc.Snapshot.
 *
 * Writer: protocol 4, the object graph Snapshot.dump() produces:
 *   Snapshot.__new__() + BUILD {'traces': _Traces.__new__() + BUILD
 *   {'_traces': [trace, ...]}, 'traceback_limit': N}
 * with filenames, frame tuples and traceback tuples memoized so that a
 * repeated one costs a BINGET.
 *
 * Reader: a small stack machine for exactly the opcodes stock dumps (3.8 to
 * 3.13, C pickler, protocol 5) and our writer use. Only the two tracemalloc
 * classes can be named, objects can only be built with NEWOBJ + BUILD on
 * them, and the resulting structure is checked before anything is trusted.
 * Nothing is ever called: there is no REDUCE, no GLOBAL, no extension.
 */
#define _GNU_SOURCE		/* mkostemp */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "hash.h"
#include "htab.h"
#include "snapshot.h"
#include "util.h"

#define container_of(ptr, type, member) \
	((type *)((char *)(ptr) - offsetof(type, member)))

/* Bounds for what a file may ask of the reader. */
#define LOAD_MAX_FILE		(1ULL << 30)	/* bytes */
#define LOAD_MAX_STR		(1U << 16)	/* bytes per string */
#define LOAD_MAX_NFRAME		(1U << 20)	/* frames per traceback */
#define LOAD_MAX_DICT		16		/* only state dicts exist */

#define PICKLE_BATCH		1000		/* items per APPENDS, as pickle */

/* ---- arena: strings and tracebacks live as long as the snapshot ---- */

struct chunk {
	struct chunk *next;
	size_t used, size;
	/* max_align_t keeps the payload aligned for any struct */
	max_align_t data[];
};

struct arena {
	struct chunk *head;
};

#define ARENA_CHUNK	(64 * 1024)

static void *arena__alloc(struct arena *a, size_t len)
{
	struct chunk *c = a->head;
	size_t align = sizeof(max_align_t);
	void *p;

	len = (len + align - 1) & ~(align - 1);
	if (!len || len > SIZE_MAX / 2)
		return NULL;
	if (!c || c->size - c->used < len) {
		size_t size = len > ARENA_CHUNK ? len : ARENA_CHUNK;

		c = malloc(sizeof(*c) + size);
		if (!c)
			return NULL;
		c->used = 0;
		c->size = size;
		/* A big allocation gets its own chunk behind the current one. */
		if (a->head && size > ARENA_CHUNK) {
			c->next = a->head->next;
			a->head->next = c;
		} else {
			c->next = a->head;
			a->head = c;
		}
	}
	p = (char *)c->data + c->used;
	c->used += len;
	return p;
}

static void arena__free(struct arena *a)
{
	struct chunk *c = a->head, *n;

	for (; c; c = n) {
		n = c->next;
		free(c);
	}
	a->head = NULL;
}

/* ---- hashing: seeded per snapshot, filenames may come from a file ---- */

/* ---- interned objects ---- */

struct istr {
	uint32_t id;
	uint32_t len;
	char s[];
};

struct itb {
	uint64_t hash;
	uint32_t id;
	struct pytm_traceback tb;
	struct pytm_frame_info frames[];
};

struct snapshot {
	int traceback_limit;
	uint64_t seed;
	struct arena arena;
	struct htab strs;		/* struct istr * */
	struct htab tbs;		/* struct itb * */
	struct pytm_trace *traces;
	size_t ntraces, cap;
	const char *unknown;		/* "<unknown>" */
};

struct snapshot *snapshot__new(int traceback_limit)
{
	struct snapshot *s;

	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->traceback_limit = traceback_limit;
	s->seed = hash__seed();
	if (htab__init(&s->strs, 256) || htab__init(&s->tbs, 256))
		goto cleanup;
	s->unknown = snapshot__intern(s, "<unknown>");
	if (!s->unknown)
		goto cleanup;
	return s;

cleanup:
	snapshot__free(s);
	return NULL;
}

void snapshot__free(struct snapshot *s)
{
	if (!s)
		return;
	arena__free(&s->arena);
	htab__free(&s->strs);
	htab__free(&s->tbs);
	free(s->traces);
	free(s);
}

static const char *intern_len(struct snapshot *s, const char *str, size_t len)
{
	size_t cur = 0;
	struct istr *e;
	uint64_t h, v;

	if (len > UINT32_MAX || s->strs.count >= UINT32_MAX) {
		errno = E2BIG;
		return NULL;
	}
	h = hash__bytes(s->seed, str, len);
	while ((v = htab__next(&s->strs, h, &cur))) {
		e = (struct istr *)(uintptr_t)v;
		if (e->len == len && !memcmp(e->s, str, len))
			return e->s;
	}
	e = arena__alloc(&s->arena, sizeof(*e) + len + 1);
	if (!e) {
		errno = ENOMEM;
		return NULL;
	}
	e->id = s->strs.count;
	e->len = len;
	memcpy(e->s, str, len);
	e->s[len] = '\0';
	if (htab__add(&s->strs, h, (uintptr_t)e)) {
		errno = ENOMEM;
		return NULL;
	}
	return e->s;
}

const char *snapshot__intern(struct snapshot *s, const char *str)
{
	if (!s || !str) {
		errno = EINVAL;
		return NULL;
	}
	return intern_len(s, str, strlen(str));
}

/* Is STR one of our interned strings (the pointer, not just the text)? */
static bool is_interned(const struct snapshot *s, const char *str)
{
	uint64_t h = hash__bytes(s->seed, str, strlen(str)), v;
	size_t cur = 0;

	while ((v = htab__next(&s->strs, h, &cur)))
		if (((struct istr *)(uintptr_t)v)->s == str)
			return true;
	return false;
}

static uint64_t tb_hash(const struct snapshot *s,
			const struct pytm_frame_info *frames,
			unsigned int nframe, unsigned int total_nframe)
{
	uint64_t h = hash__mix64(s->seed ^ ((uint64_t)nframe << 32 | total_nframe));
	unsigned int i;

	/* Filenames are interned: their addresses identify them. */
	for (i = 0; i < nframe; i++) {
		h = hash__mix64(h ^ (uint64_t)(uintptr_t)frames[i].filename);
		h = hash__mix64(h ^ frames[i].lineno) + i;
		h = hash__mix64(h ^ (uint64_t)(uintptr_t)frames[i].name ^
				(uint64_t)frames[i].firstlineno << 32);
	}
	return h;
}

/* Compared field by field: the structs have padding. */
static bool frames_equal(const struct pytm_frame_info *a,
			 const struct pytm_frame_info *b, unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++) {
		if (a[i].filename != b[i].filename || a[i].lineno != b[i].lineno ||
		    a[i].name != b[i].name || a[i].firstlineno != b[i].firstlineno)
			return false;
	}
	return true;
}

const struct pytm_traceback *snapshot__traceback(struct snapshot *s,
		const struct pytm_frame_info *frames, unsigned int nframe,
		unsigned int total_nframe)
{
	struct pytm_frame_info unknown;
	size_t i, size, cur = 0;
	struct itb *e;
	uint64_t h, v;

	if (!s || (nframe && !frames)) {
		errno = EINVAL;
		return NULL;
	}
	if (!nframe) {
		/* tracemalloc's traceback for "no Python frame" */
		unknown = (struct pytm_frame_info){ .filename = s->unknown };
		frames = &unknown;
		nframe = 1;
		if (!total_nframe)
			total_nframe = 1;
	}
	h = tb_hash(s, frames, nframe, total_nframe);
	while ((v = htab__next(&s->tbs, h, &cur))) {
		e = (struct itb *)(uintptr_t)v;
		if (e->tb.nframe == nframe && e->tb.total_nframe == total_nframe &&
		    frames_equal(e->frames, frames, nframe))
			return &e->tb;
	}
	if (s->tbs.count >= UINT32_MAX) {
		errno = E2BIG;
		return NULL;
	}
	/* New traceback: hold the caller to the contract once, here. */
	for (i = 0; i < nframe; i++) {
		if (!frames[i].filename || !is_interned(s, frames[i].filename) ||
		    (frames[i].name && !is_interned(s, frames[i].name))) {
			errno = EINVAL;
			return NULL;
		}
	}
	size = sizeof(*e) + (size_t)nframe * sizeof(*frames);
	e = arena__alloc(&s->arena, size);
	if (!e) {
		errno = ENOMEM;
		return NULL;
	}
	e->hash = h;
	e->id = s->tbs.count;
	e->tb.nframe = nframe;
	e->tb.total_nframe = total_nframe;
	e->tb.frames = e->frames;
	for (i = 0; i < nframe; i++)
		e->frames[i] = frames[i];
	if (htab__add(&s->tbs, h, (uintptr_t)e)) {
		errno = ENOMEM;
		return NULL;
	}
	return &e->tb;
}

/*
 * Does TB belong to S? Its stored hash finds it if it does (TB must
 * come from some snapshot__traceback(); recomputing the hash would cost
 * a walk of every frame on each add).
 */
static bool owns_tb(const struct snapshot *s, const struct pytm_traceback *tb)
{
	const struct itb *e = container_of(tb, struct itb, tb);
	size_t cur = 0;
	uint64_t v;

	while ((v = htab__next(&s->tbs, e->hash, &cur)))
		if ((const struct itb *)(uintptr_t)v == e)
			return true;
	return false;
}

int snapshot__add(struct snapshot *s, unsigned int domain, uint64_t size,
		  const struct pytm_traceback *tb)
{
	return snapshot__add_estimate(s, domain, size, 1, tb);
}

int snapshot__add_estimate(struct snapshot *s, unsigned int domain, uint64_t size,
			   uint64_t count, const struct pytm_traceback *tb)
{
	return snapshot__add_block(s, domain, size, count, 0, tb);
}

int snapshot__add_block(struct snapshot *s, unsigned int domain, uint64_t size,
			uint64_t count, uint64_t born, const struct pytm_traceback *tb)
{
	struct pytm_trace *t;

	if (!s || !tb || !owns_tb(s, tb))
		return -EINVAL;
	if (s->ntraces == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;

		if (cap > SIZE_MAX / sizeof(*t))
			return -ENOMEM;
		t = realloc(s->traces, cap * sizeof(*t));
		if (!t)
			return -ENOMEM;
		s->traces = t;
		s->cap = cap;
	}
	t = &s->traces[s->ntraces++];
	t->domain = domain;
	t->size = size;
	t->count = count;
	t->tb = tb;
	t->born = born;
	return 0;
}

int snapshot__traceback_limit(const struct snapshot *s)
{
	return s ? s->traceback_limit : 0;
}

size_t snapshot__count(const struct snapshot *s)
{
	return s ? s->ntraces : 0;
}

uint64_t snapshot__total_size(const struct snapshot *s)
{
	uint64_t total = 0;
	size_t i;

	for (i = 0; s && i < s->ntraces; i++)
		total += s->traces[i].size;
	return total;
}

const struct pytm_trace *snapshot__traces(const struct snapshot *s)
{
	return s ? s->traces : NULL;
}

/* ======================= writer ======================= */

/* Pickle opcodes (Lib/pickletools.py names). */
enum {
	OP_MARK = '(',
	OP_STOP = '.',
	OP_BININT = 'J',
	OP_BININT1 = 'K',
	OP_BININT2 = 'M',
	OP_BINUNICODE = 'X',
	OP_APPEND = 'a',
	OP_APPENDS = 'e',
	OP_BUILD = 'b',
	OP_BINGET = 'h',
	OP_LONG_BINGET = 'j',
	OP_EMPTY_LIST = ']',
	OP_EMPTY_TUPLE = ')',
	OP_EMPTY_DICT = '}',
	OP_SETITEM = 's',
	OP_SETITEMS = 'u',
	OP_TUPLE = 't',
	OP_PROTO = 0x80,
	OP_NEWOBJ = 0x81,
	OP_TUPLE1 = 0x85,
	OP_TUPLE2 = 0x86,
	OP_TUPLE3 = 0x87,
	OP_LONG1 = 0x8a,
	OP_SHORT_BINUNICODE = 0x8c,
	OP_STACK_GLOBAL = 0x93,
	OP_MEMOIZE = 0x94,
	OP_FRAME = 0x95,
};

struct writer {
	FILE *f;
	uint64_t memo;			/* next MEMOIZE index */
	uint32_t *str_memo;		/* by string id: memo + 1, 0 = none */
	uint32_t *tb_memo;		/* by traceback id: memo + 1 */
	/*
	 * (filename id + 1) << 32 | lineno -> memo + 1. hash__mix64 is a
	 * bijection: the hash is the key.
	 */
	struct htab frames;
	int err;
};

static void w_bytes(struct writer *w, const void *p, size_t len)
{
	if (!w->err && fwrite(p, 1, len, w->f) != len)
		w->err = errno ? -errno : -EIO;
}

static void w_op(struct writer *w, uint8_t op)
{
	w_bytes(w, &op, 1);
}

static void w_le(struct writer *w, uint64_t v, int n)
{
	uint8_t b[8];
	int i;

	for (i = 0; i < n; i++)
		b[i] = v >> (8 * i);
	w_bytes(w, b, n);
}

/* Record the object on top of the stack; returns its memo index. */
static uint32_t w_memoize(struct writer *w)
{
	if (w->memo >= UINT32_MAX) {
		if (!w->err)
			w->err = -EOVERFLOW;
		return 0;
	}
	w_op(w, OP_MEMOIZE);
	return w->memo++;
}

static void w_get(struct writer *w, uint32_t idx)
{
	if (idx < 256) {
		w_op(w, OP_BINGET);
		w_le(w, idx, 1);
	} else {
		w_op(w, OP_LONG_BINGET);
		w_le(w, idx, 4);
	}
}

/* Non-negative integer, smallest encoding as pickle itself chooses. */
static void w_uint(struct writer *w, uint64_t v)
{
	uint8_t b[9];
	int n = 0;

	if (v < 256) {
		w_op(w, OP_BININT1);
		w_le(w, v, 1);
	} else if (v < 65536) {
		w_op(w, OP_BININT2);
		w_le(w, v, 2);
	} else if (v <= INT32_MAX) {
		w_op(w, OP_BININT);
		w_le(w, v, 4);
	} else {
		/* LONG1: little-endian two's complement, sign bit kept clear */
		while (v) {
			b[n++] = v & 0xff;
			v >>= 8;
		}
		if (b[n - 1] & 0x80)
			b[n++] = 0;
		w_op(w, OP_LONG1);
		w_le(w, n, 1);
		w_bytes(w, b, n);
	}
}

static void w_unicode(struct writer *w, const char *s, size_t len)
{
	if (len < 256) {
		w_op(w, OP_SHORT_BINUNICODE);
		w_le(w, len, 1);
	} else {
		w_op(w, OP_BINUNICODE);
		w_le(w, len, 4);
	}
	w_bytes(w, s, len);
}

/*
 * A filename as a pickle str. Text from a target that is not UTF-8 is
 * written the way Python decodes such a file name (surrogateescape: byte
 * 0xNN becomes U+DCNN), so Python can always load the file.
 */
static void w_str(struct writer *w, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t len = strlen(str), i, n, out = 0;
	unsigned char *buf;
	bool valid = true;

	for (i = 0; i < len; i += n) {
		n = utf8_seq(s + i, len - i, NULL);
		if (!n) {
			valid = false;
			break;
		}
	}
	if (valid) {
		if (len > UINT32_MAX) {
			if (!w->err)
				w->err = -E2BIG;
			return;
		}
		w_unicode(w, str, len);
		return;
	}
	if (len > UINT32_MAX / 3) {
		if (!w->err)
			w->err = -E2BIG;
		return;
	}
	buf = malloc(len * 3);
	if (!buf) {
		if (!w->err)
			w->err = -ENOMEM;
		return;
	}
	for (i = 0; i < len; i += n) {
		n = utf8_seq(s + i, len - i, NULL);
		if (n) {
			memcpy(buf + out, s + i, n);
			out += n;
		} else {
			/* U+DC80..U+DCFF in UTF-8: ED B2..B3 xx */
			buf[out++] = 0xed;
			buf[out++] = 0xb0 | (s[i] >> 6);
			buf[out++] = 0x80 | (s[i] & 0x3f);
			n = 1;
		}
	}
	w_unicode(w, (const char *)buf, out);
	free(buf);
}

static void w_filename(struct writer *w, const char *filename)
{
	const struct istr *e = container_of(filename, struct istr, s);

	if (w->str_memo[e->id]) {
		w_get(w, w->str_memo[e->id] - 1);
		return;
	}
	w_str(w, filename);
	w->str_memo[e->id] = w_memoize(w) + 1;
}

static void w_frame(struct writer *w, const struct pytm_frame_info *fr)
{
	const struct istr *e = container_of(fr->filename, struct istr, s);
	/* +1 keeps key 0 free for "empty slot" */
	uint64_t h = hash__mix64(((uint64_t)e->id + 1) << 32 | fr->lineno), v;
	size_t cur = 0;

	v = htab__next(&w->frames, h, &cur);
	if (v) {
		w_get(w, v - 1);
		return;
	}
	w_filename(w, fr->filename);
	w_uint(w, fr->lineno);
	w_op(w, OP_TUPLE2);
	if (htab__add(&w->frames, h, w_memoize(w) + 1) && !w->err)
		w->err = -ENOMEM;
}

static void w_traceback(struct writer *w, const struct pytm_traceback *tb)
{
	const struct itb *e = container_of(tb, struct itb, tb);
	unsigned int i;

	if (w->tb_memo[e->id]) {
		w_get(w, w->tb_memo[e->id] - 1);
		return;
	}
	if (tb->nframe > 3)
		w_op(w, OP_MARK);
	for (i = 0; i < tb->nframe && !w->err; i++)
		w_frame(w, &tb->frames[i]);
	switch (tb->nframe) {
	case 1:
		w_op(w, OP_TUPLE1);
		break;
	case 2:
		w_op(w, OP_TUPLE2);
		break;
	case 3:
		w_op(w, OP_TUPLE3);
		break;
	default:
		w_op(w, OP_TUPLE);
		break;
	}
	w->tb_memo[e->id] = w_memoize(w) + 1;
}

static void w_global(struct writer *w, uint32_t module_memo, const char *name)
{
	w_get(w, module_memo);
	w_unicode(w, name, strlen(name));
	w_memoize(w);
	w_op(w, OP_STACK_GLOBAL);
	w_memoize(w);
}

static void w_snapshot(struct writer *w, const struct snapshot *s,
		       enum pytm_pickle_layout layout)
{
	static const char key_traces[] = "traces", key_list[] = "_traces";
	static const char key_limit[] = "traceback_limit";
	const struct pytm_trace *t;
	uint32_t module;
	size_t i, batch;

	w_op(w, OP_PROTO);
	w_le(w, 4, 1);
	/* Snapshot.__new__(Snapshot) */
	w_unicode(w, "tracemalloc", strlen("tracemalloc"));
	module = w_memoize(w);
	w_unicode(w, "Snapshot", strlen("Snapshot"));
	w_memoize(w);
	w_op(w, OP_STACK_GLOBAL);
	w_memoize(w);
	w_op(w, OP_EMPTY_TUPLE);
	w_op(w, OP_NEWOBJ);
	w_memoize(w);
	/* its __dict__ */
	w_op(w, OP_EMPTY_DICT);
	w_memoize(w);
	w_op(w, OP_MARK);
	w_unicode(w, key_traces, strlen(key_traces));
	w_memoize(w);
	/* _Traces.__new__(_Traces), __dict__ = {'_traces': [...]} */
	w_global(w, module, "_Traces");
	w_op(w, OP_EMPTY_TUPLE);
	w_op(w, OP_NEWOBJ);
	w_memoize(w);
	w_op(w, OP_EMPTY_DICT);
	w_memoize(w);
	w_unicode(w, key_list, strlen(key_list));
	w_memoize(w);
	w_op(w, OP_EMPTY_LIST);
	w_memoize(w);
	for (i = 0; i < s->ntraces && !w->err; i += batch) {
		size_t j;

		batch = s->ntraces - i < PICKLE_BATCH ? s->ntraces - i
						      : PICKLE_BATCH;
		w_op(w, OP_MARK);
		for (j = i; j < i + batch && !w->err; j++) {
			t = &s->traces[j];
			if (layout == PYTM_PICKLE_39)
				w_op(w, OP_MARK);
			w_uint(w, t->domain);
			w_uint(w, t->size);
			w_traceback(w, t->tb);
			if (layout == PYTM_PICKLE_39) {
				w_uint(w, t->tb->total_nframe);
				w_op(w, OP_TUPLE);
			} else {
				w_op(w, OP_TUPLE3);
			}
		}
		w_op(w, OP_APPENDS);
	}
	w_op(w, OP_SETITEM);
	w_op(w, OP_BUILD);
	w_unicode(w, key_limit, strlen(key_limit));
	w_memoize(w);
	w_uint(w, s->traceback_limit < 0 ? 0 : (uint64_t)s->traceback_limit);
	w_op(w, OP_SETITEMS);
	w_op(w, OP_BUILD);
	w_op(w, OP_STOP);
}

/* The pickle of S on F (not flushed). */
static int write_stream(const struct snapshot *s, FILE *f, enum pytm_pickle_layout layout)
{
	struct writer w = { .f = f };
	int err;

	if (!s || !f || (layout != PYTM_PICKLE_38 && layout != PYTM_PICKLE_39))
		return -EINVAL;
	w.str_memo = calloc(s->strs.count + 1, sizeof(*w.str_memo));
	w.tb_memo = calloc(s->tbs.count + 1, sizeof(*w.tb_memo));
	if (!w.str_memo || !w.tb_memo || htab__init(&w.frames, 1024)) {
		err = -ENOMEM;
		goto cleanup;
	}
	errno = 0;
	w_snapshot(&w, s, layout);
	err = w.err;
cleanup:
	free(w.str_memo);
	free(w.tb_memo);
	htab__free(&w.frames);
	return err;
}

int snapshot__write_stream(const struct snapshot *s, FILE *f, enum pytm_pickle_layout layout)
{
	int err = write_stream(s, f, layout);

	if (!err && fflush(f))
		err = -errno;
	return err;
}

int snapshot__write(const struct snapshot *s, const char *path,
		    enum pytm_pickle_layout layout)
{
	struct atomic_file af;
	int err;

	if (!s || !path ||
	    (layout != PYTM_PICKLE_38 && layout != PYTM_PICKLE_39))
		return -EINVAL;
	err = atomic_file__open(&af, path);
	if (err)
		return err;
	err = write_stream(s, af.f, layout);
	if (err) {
		atomic_file__abort(&af);
		return err;
	}
	return atomic_file__commit(&af);
}

/* ======================= reader ======================= */

enum vtype {
	V_INT = 1,
	V_STR,
	V_TUPLE,
	V_LIST,
	V_DICT,
	V_CLASS,
	V_INST,
};

enum { CLS_SNAPSHOT = 1, CLS_TRACES };

struct obj;

/* A stack or memo slot: ints and strings inline, containers by pointer. */
struct val {
	uint8_t type;
	bool neg;			/* V_INT: value is -u */
	union {
		uint64_t u;		/* V_INT magnitude, V_CLASS id */
		const char *s;		/* V_STR, interned in the snapshot */
		struct obj *o;		/* V_TUPLE, V_LIST, V_DICT, V_INST */
	};
};

struct obj {
	uint8_t type;
	uint32_t cls;			/* V_INST */
	struct obj *state;		/* V_INST: dict given by BUILD */
	/* V_TUPLE: frames -> interned traceback, for repeated tracebacks */
	const struct pytm_traceback *tb;
	unsigned int tb_total;
	size_t n, cap;
	struct val *items;		/* V_DICT: key, value, key, value... */
	struct obj *next_heap;		/* lists/dicts own a malloc'ed array */
	struct val inline_items[];	/* tuples */
};

struct vec {
	struct val *v;
	size_t n, cap;
};

struct reader {
	const uint8_t *p, *end, *start;
	struct snapshot *snap;
	struct arena objs;		/* tuples, lists, dicts, instances */
	struct obj *heap;		/* lists/dicts whose items are malloc'ed */
	struct vec stack, memo;
	size_t *marks;
	size_t nmarks, capmarks;
	const uint8_t *op_at;
};

__attribute__((format(printf, 2, 3)))
static int fail(struct reader *r, const char *fmt, ...)
{
	char msg[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (r->op_at)
		return error__set(-EINVAL, "not a tracemalloc snapshot: %s at offset %zu",
				  msg, (size_t)(r->op_at - r->start));
	return error__set(-EINVAL, "not a tracemalloc snapshot: %s", msg);
}

static int nomem(struct reader *r)
{
	return error__set(-ENOMEM, "out of memory");
}

static int vec_push(struct vec *v, struct val x)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 256;
		struct val *n;

		if (cap > SIZE_MAX / sizeof(*n))
			return -ENOMEM;
		n = realloc(v->v, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		v->v = n;
		v->cap = cap;
	}
	v->v[v->n++] = x;
	return 0;
}

static int push(struct reader *r, struct val x)
{
	return vec_push(&r->stack, x) ? nomem(r) : 0;
}

/* Items above the innermost mark (none is an error). */
static int pop_mark(struct reader *r, size_t *from)
{
	if (!r->nmarks)
		return fail(r, "no MARK on the stack");
	*from = r->marks[--r->nmarks];
	return 0;
}

/* Stack items at or above the innermost mark are off limits to plain pops. */
static size_t floor_(const struct reader *r)
{
	return r->nmarks ? r->marks[r->nmarks - 1] : 0;
}

static int pop(struct reader *r, struct val *out)
{
	if (r->stack.n <= floor_(r))
		return fail(r, "stack underflow");
	*out = r->stack.v[--r->stack.n];
	return 0;
}

static int need(struct reader *r, size_t n)
{
	if ((size_t)(r->end - r->p) < n)
		return fail(r, "truncated data");
	return 0;
}

static uint64_t get_le(struct reader *r, int n)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < n; i++)
		v |= (uint64_t)r->p[i] << (8 * i);
	r->p += n;
	return v;
}

static struct obj *new_obj(struct reader *r, uint8_t type, size_t ninline)
{
	struct obj *o;

	if (ninline > (SIZE_MAX - sizeof(*o)) / sizeof(struct val))
		return NULL;
	o = arena__alloc(&r->objs, sizeof(*o) + ninline * sizeof(struct val));
	if (!o)
		return NULL;
	memset(o, 0, sizeof(*o));
	o->type = type;
	if (type == V_TUPLE) {
		o->items = o->inline_items;
		o->n = o->cap = ninline;
	} else if (type == V_LIST || type == V_DICT) {
		o->next_heap = r->heap;
		r->heap = o;
	}
	return o;
}

static int obj_append(struct reader *r, struct obj *o, const struct val *x,
		      size_t n)
{
	if (!n)
		return 0;
	if (n > SIZE_MAX / 2 - o->n)
		return nomem(r);
	if (o->n + n > o->cap) {
		size_t cap = o->cap ? o->cap : 16;
		struct val *items;

		while (cap < o->n + n)
			cap *= 2;
		if (cap > SIZE_MAX / sizeof(*items))
			return nomem(r);
		items = realloc(o->items, cap * sizeof(*items));
		if (!items)
			return nomem(r);
		o->items = items;
		o->cap = cap;
	}
	memcpy(o->items + o->n, x, n * sizeof(*x));
	o->n += n;
	return 0;
}

static int op_string(struct reader *r, size_t len)
{
	const uint8_t *s;
	struct val v = { .type = V_STR };
	size_t i, n;

	if (len > LOAD_MAX_STR)
		return fail(r, "string of %zu bytes is too long", len);
	if (need(r, len))
		return -EINVAL;
	s = r->p;
	for (i = 0; i < len; i += n) {
		if (!s[i])
			return fail(r, "string contains NUL");
		n = utf8_seq(s + i, len - i, NULL);
		if (!n)
			return fail(r, "string is not UTF-8");
	}
	v.s = intern_len(r->snap, (const char *)s, len);
	if (!v.s)
		return nomem(r);
	r->p += len;
	return push(r, v);
}

/* LONG1: little-endian two's complement of N bytes, kept within +-2^64. */
static int op_long1(struct reader *r)
{
	struct val v = { .type = V_INT };
	uint8_t b[9];
	size_t n;
	bool neg;
	unsigned int i, carry;

	if (need(r, 1))
		return -EINVAL;
	n = get_le(r, 1);
	if (n > sizeof(b))
		return fail(r, "integer of %zu bytes is out of range", n);
	if (need(r, n))
		return -EINVAL;
	memcpy(b, r->p, n);
	r->p += n;
	neg = n && (b[n - 1] & 0x80);
	if (neg) {
		/* magnitude = two's complement negation */
		for (i = 0, carry = 1; i < n; i++) {
			unsigned int x = (uint8_t)~b[i] + carry;

			b[i] = x & 0xff;
			carry = x >> 8;
		}
	}
	if (n == 9 && b[8])
		return fail(r, "integer out of range");
	for (i = 0; i < n && i < 8; i++)
		v.u |= (uint64_t)b[i] << (8 * i);
	v.neg = neg && v.u;
	return push(r, v);
}

static int op_tuple(struct reader *r, size_t from)
{
	size_t n = r->stack.n - from;
	struct obj *o = new_obj(r, V_TUPLE, n);
	struct val v = { .type = V_TUPLE };

	if (!o)
		return nomem(r);
	if (n)
		memcpy(o->items, r->stack.v + from, n * sizeof(struct val));
	r->stack.n = from;
	v.o = o;
	return push(r, v);
}

/* Text from the file, fit for a one-line message on a terminal. */
static const char *printable(char *buf, size_t len, const char *s)
{
	size_t i;

	for (i = 0; i + 1 < len && s[i]; i++)
		buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	buf[i] = '\0';
	return buf;
}

static int op_stack_global(struct reader *r)
{
	char m[41], n[41];
	struct val name = {}, module = {}, v = { .type = V_CLASS };

	if (pop(r, &name) || pop(r, &module))
		return -EINVAL;
	if (name.type != V_STR || module.type != V_STR)
		return fail(r, "STACK_GLOBAL needs two strings");
	if (!strcmp(module.s, "tracemalloc") && !strcmp(name.s, "Snapshot"))
		v.u = CLS_SNAPSHOT;
	else if (!strcmp(module.s, "tracemalloc") && !strcmp(name.s, "_Traces"))
		v.u = CLS_TRACES;
	else
		return fail(r, "refusing global %s.%s",
			    printable(m, sizeof(m), module.s),
			    printable(n, sizeof(n), name.s));
	return push(r, v);
}

static int op_newobj(struct reader *r)
{
	struct val args = {}, cls = {}, v = { .type = V_INST };

	if (pop(r, &args) || pop(r, &cls))
		return -EINVAL;
	if (cls.type != V_CLASS)
		return fail(r, "NEWOBJ on something that is not a class");
	if (args.type != V_TUPLE || args.o->n)
		return fail(r, "NEWOBJ with arguments");
	v.o = new_obj(r, V_INST, 0);
	if (!v.o)
		return nomem(r);
	v.o->cls = cls.u;
	return push(r, v);
}

static int op_setitems(struct reader *r, size_t from)
{
	struct val *d;
	size_t i, k;

	/* the dict sits right under the items (and under the mark, if any) */
	if (from == 0 || from - 1 < floor_(r) ||
	    r->stack.v[from - 1].type != V_DICT)
		return fail(r, "SETITEM(S) without a dict");
	d = &r->stack.v[from - 1];
	if ((r->stack.n - from) % 2)
		return fail(r, "odd number of items for SETITEMS");
	for (i = from; i < r->stack.n; i += 2) {
		struct val *key = &r->stack.v[i];

		if (key->type != V_STR)
			return fail(r, "dict key is not a string");
		/* a repeated key replaces the value, as in Python */
		for (k = 0; k < d->o->n; k += 2) {
			if (d->o->items[k].s == key->s)
				break;
		}
		if (k < d->o->n) {
			d->o->items[k + 1] = r->stack.v[i + 1];
			continue;
		}
		if (d->o->n >= 2 * LOAD_MAX_DICT)
			return fail(r, "dict too large");
		if (obj_append(r, d->o, key, 2))
			return -ENOMEM;
	}
	r->stack.n = from;
	return 0;
}

static int op_appends(struct reader *r, size_t from)
{
	struct obj *l;

	if (from == 0 || from - 1 < floor_(r) ||
	    r->stack.v[from - 1].type != V_LIST)
		return fail(r, "APPEND(S) without a list");
	l = r->stack.v[from - 1].o;
	if (obj_append(r, l, r->stack.v + from, r->stack.n - from))
		return -ENOMEM;
	r->stack.n = from;
	return 0;
}

static int op_build(struct reader *r)
{
	struct val state = {}, *inst;

	if (pop(r, &state))
		return -EINVAL;
	if (r->stack.n <= floor_(r))
		return fail(r, "BUILD without an object");
	inst = &r->stack.v[r->stack.n - 1];
	if (inst->type != V_INST || inst->o->state)
		return fail(r, "BUILD on something that is not a new object");
	if (state.type != V_DICT)
		return fail(r, "BUILD state is not a dict");
	inst->o->state = state.o;
	return 0;
}

static int run(struct reader *r)
{
	struct val v = {};
	size_t from = 0, idx;
	uint8_t op;
	int err;

	if (need(r, 2) || r->p[0] != OP_PROTO)
		return fail(r, "no pickle protocol header");
	if (r->p[1] < 4 || r->p[1] > 5)
		return fail(r, "unsupported pickle protocol %u", r->p[1]);
	r->p += 2;
	for (;;) {
		r->op_at = r->p;
		if (need(r, 1))
			return -EINVAL;
		op = *r->p++;
		err = 0;
		switch (op) {
		case OP_FRAME:
			/* a read-ahead hint: only its length is checked */
			if (need(r, 8))
				return -EINVAL;
			if (get_le(r, 8) > (uint64_t)(r->end - r->p))
				return fail(r, "truncated data");
			break;
		case OP_SHORT_BINUNICODE:
			if (need(r, 1))
				return -EINVAL;
			err = op_string(r, get_le(r, 1));
			break;
		case OP_BINUNICODE:
			if (need(r, 4))
				return -EINVAL;
			err = op_string(r, get_le(r, 4));
			break;
		case OP_MEMOIZE:
			if (r->stack.n <= floor_(r))
				return fail(r, "MEMOIZE on an empty stack");
			if (vec_push(&r->memo, r->stack.v[r->stack.n - 1]))
				return nomem(r);
			break;
		case OP_BINGET:
		case OP_LONG_BINGET:
			if (need(r, op == OP_BINGET ? 1 : 4))
				return -EINVAL;
			idx = get_le(r, op == OP_BINGET ? 1 : 4);
			if (idx >= r->memo.n)
				return fail(r, "memo entry %zu missing", idx);
			err = push(r, r->memo.v[idx]);
			break;
		case OP_MARK:
			if (r->nmarks == r->capmarks) {
				size_t cap = r->capmarks ? r->capmarks * 2 : 64;
				size_t *m = realloc(r->marks, cap * sizeof(*m));

				if (!m)
					return nomem(r);
				r->marks = m;
				r->capmarks = cap;
			}
			r->marks[r->nmarks++] = r->stack.n;
			break;
		case OP_BININT1:
		case OP_BININT2:
		case OP_BININT:
			if (need(r, op == OP_BININT1 ? 1 : op == OP_BININT2 ? 2 : 4))
				return -EINVAL;
			v.type = V_INT;
			v.neg = false;
			if (op == OP_BININT) {
				int32_t x = (int32_t)(uint32_t)get_le(r, 4);

				v.neg = x < 0;
				v.u = x < 0 ? -(int64_t)x : x;
			} else {
				v.u = get_le(r, op == OP_BININT1 ? 1 : 2);
			}
			err = push(r, v);
			break;
		case OP_LONG1:
			err = op_long1(r);
			break;
		case OP_EMPTY_TUPLE:
			err = op_tuple(r, r->stack.n);
			break;
		case OP_TUPLE1:
		case OP_TUPLE2:
		case OP_TUPLE3:
			from = op - OP_TUPLE1 + 1;
			if (r->stack.n - floor_(r) < from)
				return fail(r, "stack underflow");
			err = op_tuple(r, r->stack.n - from);
			break;
		case OP_TUPLE:
			if (pop_mark(r, &from))
				return -EINVAL;
			err = op_tuple(r, from);
			break;
		case OP_EMPTY_LIST:
		case OP_EMPTY_DICT:
			v.type = op == OP_EMPTY_LIST ? V_LIST : V_DICT;
			v.o = new_obj(r, v.type, 0);
			if (!v.o)
				return nomem(r);
			err = push(r, v);
			break;
		case OP_APPEND:
			if (r->stack.n - floor_(r) < 2)
				return fail(r, "stack underflow");
			err = op_appends(r, r->stack.n - 1);
			break;
		case OP_APPENDS:
			if (pop_mark(r, &from))
				return -EINVAL;
			err = op_appends(r, from);
			break;
		case OP_SETITEM:
			if (r->stack.n - floor_(r) < 3)
				return fail(r, "stack underflow");
			err = op_setitems(r, r->stack.n - 2);
			break;
		case OP_SETITEMS:
			if (pop_mark(r, &from))
				return -EINVAL;
			err = op_setitems(r, from);
			break;
		case OP_STACK_GLOBAL:
			err = op_stack_global(r);
			break;
		case OP_NEWOBJ:
			err = op_newobj(r);
			break;
		case OP_BUILD:
			err = op_build(r);
			break;
		case OP_STOP:
			if (r->nmarks || r->stack.n != 1)
				return fail(r, "STOP with a malformed stack");
			if (r->p != r->end)
				return fail(r, "data after STOP");
			return 0;
		default:
			return fail(r, "opcode 0x%02x is not allowed", op);
		}
		if (err)
			return err;
	}
}

/* dict[key] for a state dict, NULL when absent */
static const struct val *dict_get(const struct obj *d, const char *key)
{
	size_t k;

	for (k = 0; k < d->n; k += 2) {
		if (!strcmp(d->items[k].s, key))
			return &d->items[k + 1];
	}
	return NULL;
}

/* The __dict__ of an instance of CLS that holds exactly NKEYS keys. */
static const struct obj *instance(struct reader *r, const struct val *v,
				  uint32_t cls, const char *what, size_t nkeys)
{
	const char *name = cls == CLS_SNAPSHOT ? "Snapshot" : "_Traces";

	if (v->type != V_INST || v->o->cls != cls) {
		fail(r, "%s is not a tracemalloc.%s", what, name);
		return NULL;
	}
	if (!v->o->state || v->o->state->n != 2 * nkeys) {
		fail(r, "%s has unexpected attributes", what);
		return NULL;
	}
	return v->o->state;
}

static bool int_in(const struct val *v, uint64_t max)
{
	return v->type == V_INT && !v->neg && v->u <= max;
}

/* One frames tuple -> an interned traceback (cached on the tuple). */
static const struct pytm_traceback *to_traceback(struct reader *r,
		struct obj *t, unsigned int *total, bool has_total)
{
	struct pytm_frame_info *frames;
	const struct pytm_traceback *tb = NULL;
	size_t i;

	if (t->n < 1 || t->n > LOAD_MAX_NFRAME) {
		fail(r, "trace with %zu frames", t->n);
		return NULL;
	}
	if (!has_total)
		*total = t->n;
	if (t->tb && t->tb_total == *total)
		return t->tb;
	frames = malloc(t->n * sizeof(*frames));
	if (!frames) {
		nomem(r);
		return NULL;
	}
	for (i = 0; i < t->n; i++) {
		const struct val *f = &t->items[i], *fn, *ln;

		if (f->type != V_TUPLE || f->o->n != 2) {
			fail(r, "frame is not a (filename, lineno) tuple");
			goto cleanup;
		}
		fn = &f->o->items[0];
		ln = &f->o->items[1];
		if (fn->type != V_STR || !int_in(ln, UINT_MAX)) {
			fail(r, "frame is not a (filename, lineno) tuple");
			goto cleanup;
		}
		frames[i] = (struct pytm_frame_info){ .filename = fn->s, .lineno = ln->u };
	}
	tb = snapshot__traceback(r->snap, frames, t->n, *total);
	if (!tb) {
		nomem(r);
		goto cleanup;
	}
	t->tb = tb;
	t->tb_total = *total;

cleanup:
	free(frames);
	return tb;
}

/* The object graph -> the snapshot, checking every piece on the way. */
static int convert(struct reader *r)
{
	const struct obj *state, *tstate;
	const struct val *traces, *limit, *list;
	const struct pytm_traceback *tb;
	size_t i;
	int err;

	r->op_at = NULL;
	state = instance(r, &r->stack.v[0], CLS_SNAPSHOT, "top object", 2);
	if (!state)
		return -EINVAL;
	traces = dict_get(state, "traces");
	limit = dict_get(state, "traceback_limit");
	if (!traces || !limit)
		return fail(r, "Snapshot has unexpected attributes");
	if (!int_in(limit, INT_MAX))
		return fail(r, "bad traceback_limit");
	r->snap->traceback_limit = limit->u;
	tstate = instance(r, traces, CLS_TRACES, "Snapshot.traces", 1);
	if (!tstate)
		return -EINVAL;
	list = dict_get(tstate, "_traces");
	if (!list)
		return fail(r, "_Traces has unexpected attributes");
	if (list->type != V_LIST && list->type != V_TUPLE)
		return fail(r, "_Traces._traces is not a list");
	for (i = 0; i < list->o->n; i++) {
		const struct val *t = &list->o->items[i], *it;
		unsigned int total = 0;

		if (t->type != V_TUPLE || t->o->n < 3 || t->o->n > 4)
			return fail(r, "trace %zu is not a trace tuple", i);
		it = t->o->items;
		if (!int_in(&it[0], UINT_MAX) || !int_in(&it[1], UINT64_MAX) ||
		    it[2].type != V_TUPLE ||
		    (t->o->n == 4 && !int_in(&it[3], UINT_MAX)))
			return fail(r, "trace %zu is not a trace tuple", i);
		if (t->o->n == 4)
			total = it[3].u;
		tb = to_traceback(r, it[2].o, &total, t->o->n == 4);
		if (!tb)
			return -EINVAL;
		err = snapshot__add(r->snap, it[0].u, it[1].u, tb);
		if (err)
			return err == -ENOMEM ? nomem(r) : err;
	}
	return 0;
}

static int read_file(const char *path, uint8_t **buf, size_t *len)
{
	struct stat st;
	uint8_t *b = NULL;
	size_t n = 0;
	ssize_t got;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		error__set(ret, "%s", strerror(-ret));
		return ret;
	}
	if (fstat(fd, &st)) {
		ret = -errno;
		error__set(ret, "%s", strerror(-ret));
		goto cleanup;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -EINVAL;
		error__set(ret, "not a regular file");
		goto cleanup;
	}
	if ((uint64_t)st.st_size > LOAD_MAX_FILE) {
		ret = -EFBIG;
		error__set(ret, "file larger than %llu bytes",
			 (unsigned long long)LOAD_MAX_FILE);
		goto cleanup;
	}
	b = malloc(st.st_size + 1);
	if (!b) {
		ret = -ENOMEM;
		error__set(ret, "out of memory");
		goto cleanup;
	}
	/* read to EOF, but never past the bound (the file may grow) */
	while ((got = read(fd, b + n, st.st_size + 1 - n)) != 0) {
		if (got < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			error__set(ret, "%s", strerror(-ret));
			goto cleanup;
		}
		n += got;
		if (n > (size_t)st.st_size) {
			ret = -EINVAL;
			error__set(ret, "file changed while reading it");
			goto cleanup;
		}
	}
	*buf = b;
	*len = n;
	b = NULL;
	ret = 0;

cleanup:
	free(b);
	close(fd);
	return ret;
}

int snapshot__load(const char *path, struct snapshot **out)
{
	uint8_t *buf = NULL;
	size_t len = 0;
	int ret;

	if (!path || !out)
		return error__set(-EINVAL, "invalid argument");
	*out = NULL;
	ret = read_file(path, &buf, &len);
	if (ret)
		return ret;
	ret = snapshot__load_mem(buf, len, out);
	free(buf);
	return ret;
}

int snapshot__load_mem(const uint8_t *buf, size_t len, struct snapshot **out)
{
	struct reader r = {};
	struct obj *o;
	int ret;

	if (!buf || !out)
		return error__set(-EINVAL, "invalid argument");
	*out = NULL;
	r.start = r.p = buf;
	r.end = buf + len;
	r.snap = snapshot__new(0);
	if (!r.snap) {
		ret = nomem(&r);
		goto cleanup;
	}
	ret = run(&r);
	if (!ret)
		ret = convert(&r);
	if (!ret) {
		*out = r.snap;
		r.snap = NULL;
	}

cleanup:
	for (o = r.heap; o; o = o->next_heap)
		free(o->items);
	arena__free(&r.objs);
	free(r.stack.v);
	free(r.memo.v);
	free(r.marks);
	snapshot__free(r.snap);
	return ret;
}
