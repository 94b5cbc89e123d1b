// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * pprof's profile.proto (google/pprof, proto/profile.proto) encoded by
 * hand: varint fields, length-delimited fields and nested messages are all
 * the format needs, so no protobuf library is a dependency.
 *
 * Two passes. The first interns strings, functions and locations (one per
 * distinct frame) for the whole profile; stacks (sequences of location ids,
 * where the live and the allocs tracebacks of the same code meet) and
 * their samples (one per domain) process by process. The second writes the
 * message, gzipped 64 KiB at a time.
 *
 * Snapshots intern their strings and tracebacks, and all of them are alive
 * while we encode, so a pointer stands for its content: a trace finds its
 * stack through its traceback pointer and a frame its location through its
 * string pointers; content is hashed only the first time a pointer shows up.
 * What costs is memory latency (a million traces come in hash order), so
 * the tables a trace goes through are per process, hence small.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include "hash.h"
#include "htab.h"
#include "pprof.h"
#include "snapshot.h"
#include "util.h"

/* Field numbers of profile.proto (only those we write). */
enum {
	PROFILE_SAMPLE_TYPE		= 1,
	PROFILE_SAMPLE			= 2,
	PROFILE_MAPPING			= 3,
	PROFILE_LOCATION		= 4,
	PROFILE_FUNCTION		= 5,
	PROFILE_STRING_TABLE		= 6,
	PROFILE_TIME_NANOS		= 9,
	PROFILE_DURATION_NANOS		= 10,
	PROFILE_PERIOD_TYPE		= 11,
	PROFILE_PERIOD			= 12,
	PROFILE_DEFAULT_SAMPLE_TYPE	= 14,
};
enum { VALUE_TYPE_TYPE = 1, VALUE_TYPE_UNIT = 2 };
enum { SAMPLE_LOCATION_ID = 1, SAMPLE_VALUE = 2, SAMPLE_LABEL = 3 };
enum { LABEL_KEY = 1, LABEL_STR = 2, LABEL_NUM = 3 };
enum {
	MAPPING_ID			= 1,
	MAPPING_FILENAME		= 5,
	MAPPING_HAS_FUNCTIONS		= 7,
	MAPPING_HAS_FILENAMES		= 8,
	MAPPING_HAS_LINE_NUMBERS	= 9,
};
enum { LOCATION_ID = 1, LOCATION_MAPPING_ID = 2, LOCATION_LINE = 4 };
enum { LINE_FUNCTION_ID = 1, LINE_LINE = 2 };
enum {
	FUNCTION_ID = 1, FUNCTION_NAME = 2, /* system_name = 3: left out */
	FUNCTION_FILENAME = 4, FUNCTION_START_LINE = 5,
};

#define WIRE_VARINT	0
#define WIRE_LEN	2

#define PB_DEPTH	4		/* we nest 2 deep: Sample > Label */
#define PB_CHUNK	(64 * 1024)	/* bytes handed to deflate at a time */

#define MAPPING_ID_PYTHON 1		/* the one mapping */

/* The strings every profile has, interned first: their ids are these. */
enum {
	S_EMPTY,			/* string_table[0] must be "" */
	S_ALLOC_OBJECTS, S_ALLOC_SPACE, S_INUSE_OBJECTS, S_INUSE_SPACE,
	S_COUNT, S_BYTES, S_SPACE,
	S_PID, S_PPID, S_CONTAINER, S_DOMAIN,
	S_PYTHON, S_UNKNOWN,
	S_FIXED
};
static const char *const fixed_strs[S_FIXED] = {
	[S_EMPTY] = "",
	[S_ALLOC_OBJECTS] = "alloc_objects", [S_ALLOC_SPACE] = "alloc_space",
	[S_INUSE_OBJECTS] = "inuse_objects", [S_INUSE_SPACE] = "inuse_space",
	[S_COUNT] = "count", [S_BYTES] = "bytes", [S_SPACE] = "space",
	[S_PID] = "pid", [S_PPID] = "ppid", [S_CONTAINER] = "container",
	[S_DOMAIN] = "domain",
	[S_PYTHON] = "python", [S_UNKNOWN] = "<unknown>",
};

/* A sample's values, in Go's order; exact mode writes the inuse pair only. */
enum { V_ALLOC_OBJECTS, V_ALLOC_SPACE, V_INUSE_OBJECTS, V_INUSE_SPACE, V_N };

/* ======================= protobuf writer ======================= */

struct pb {
	uint8_t *buf;			/* not yet gzipped */
	size_t len, cap;
	size_t open[PB_DEPTH];		/* where each open message's body begins */
	int depth;
	z_stream z;
	struct pprof_buf *out;
	int err;			/* the first error; nothing is written after it */
};

static bool pb_room(struct pb *w, size_t n)
{
	size_t cap;
	uint8_t *p;

	if (w->err)
		return false;
	if (w->cap - w->len >= n)
		return true;
	cap = w->cap ? w->cap : 2 * PB_CHUNK;
	while (cap - w->len < n) {
		if (cap > SIZE_MAX / 2) {
			w->err = -ENOMEM;
			return false;
		}
		cap *= 2;
	}
	p = realloc(w->buf, cap);
	if (!p) {
		w->err = -ENOMEM;
		return false;
	}
	w->buf = p;
	w->cap = cap;
	return true;
}

static size_t varint_len(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
	while (v >= 0x80) {
		*p++ = (uint8_t)v | 0x80;
		v >>= 7;
	}
	*p++ = (uint8_t)v;
	return p;
}

static void pb_varint(struct pb *w, uint64_t v)
{
	if (pb_room(w, 10))
		w->len = put_varint(w->buf + w->len, v) - w->buf;
}

static void pb_key(struct pb *w, int field, int wire)
{
	pb_varint(w, (uint64_t)field << 3 | wire);
}

/*
 * A varint field: uint64, bool, or int64 as its two's complement (what
 * protobuf does). Zero is proto3's default, left out as protobuf does.
 */
static void pb_uint(struct pb *w, int field, uint64_t v)
{
	if (!v)
		return;
	pb_key(w, field, WIRE_VARINT);
	pb_varint(w, v);
}

static void pb_bytes(struct pb *w, int field, const void *p, size_t n)
{
	pb_key(w, field, WIRE_LEN);
	pb_varint(w, n);
	if (pb_room(w, n)) {
		memcpy(w->buf + w->len, p, n);
		w->len += n;
	}
}

/*
 * A nested message or packed field, whose length is known at pb_end():
 * one byte is kept for it, and the body moved up in the (rare: 128 bytes
 * or more) case that the length needs more.
 */
static void pb_begin(struct pb *w, int field)
{
	if (w->err)
		return;
	if (w->depth == PB_DEPTH) {
		w->err = -EINVAL;	/* a bug of ours; never with data */
		return;
	}
	pb_key(w, field, WIRE_LEN);
	if (pb_room(w, 1))
		w->len++;
	w->open[w->depth++] = w->len;
}

static void pb_end(struct pb *w)
{
	size_t start, n, k;

	if (w->err || !w->depth)
		return;
	start = w->open[--w->depth];
	n = w->len - start;
	k = varint_len(n);
	if (k > 1) {
		if (!pb_room(w, k - 1))
			return;
		memmove(w->buf + start + k - 1, w->buf + start, n);
		w->len += k - 1;
	}
	put_varint(w->buf + start - 1, n);
}

/* Gzip what is buffered onto W->out; FINISH ends the gzip stream. */
static void pb_deflate(struct pb *w, bool finish)
{
	struct pprof_buf *o = w->out;
	size_t cap;
	uint8_t *p;
	int ret;

	if (w->err)
		return;
	w->z.next_in = w->buf;
	w->z.avail_in = w->len;	/* < 4 GiB: flushed after every chunk */
	do {
		if (o->cap - o->len < PB_CHUNK) {
			cap = o->cap ? o->cap * 2 : 4 * PB_CHUNK;
			p = cap > o->cap ? realloc(o->data, cap) : NULL;
			if (!p) {
				w->err = -ENOMEM;
				return;
			}
			o->data = p;
			o->cap = cap;
		}
		w->z.next_out = o->data + o->len;
		w->z.avail_out = o->cap - o->len > UINT_MAX ? UINT_MAX : o->cap - o->len;
		ret = deflate(&w->z, finish ? Z_FINISH : Z_NO_FLUSH);
		o->len = w->z.next_out - o->data;
		/* Z_BUF_ERROR only says that no progress was possible: not fatal. */
		if (ret == Z_STREAM_ERROR) {
			w->err = -EIO;
			return;
		}
	} while (w->z.avail_in || (finish && ret != Z_STREAM_END));
	w->len = 0;
}

/* Between top-level fields: gzip once a chunk is buffered. */
static void pb_flush(struct pb *w)
{
	if (!w->depth && w->len >= PB_CHUNK)
		pb_deflate(w, false);
}

/* ======================= interning ======================= */

struct func {
	uint32_t name, filename;	/* string ids */
	unsigned int start_line;
};

struct loc {
	uint32_t func;			/* function id (index + 1) */
	unsigned int line;
};

/* A frame as a snapshot has it (interned pointers), and its location. */
struct frame_ent {
	const char *filename, *name;
	unsigned int lineno, firstlineno;
	uint32_t loc;			/* location id (index + 1) */
};

struct tb_ent {
	const struct pytm_traceback *tb;
	uint32_t stack;
};

/*
 * A stack (location ids) of one process: stacks are per process, so that
 * a stack's samples (one per domain) hang off it.
 */
struct stack {
	size_t off;			/* in enc.ids */
	uint32_t n;
	uint32_t sample;		/* its first sample (index + 1), or 0 */
};

struct sample {
	uint32_t stack, domain, proc;
	uint32_t next;			/* the stack's next one (index + 1), or 0 */
	int64_t v[V_N];
};

struct proc_labels {
	int64_t pid;
	int64_t ppid;			/* 0: none */
	uint32_t container;		/* string id; 0: none */
};

struct enc {
	uint64_t seed;
	/* Each table maps a hash to an index + 1 into the array beside it. */
	struct htab str_t, func_t, loc_t, frame_t;
	struct htab stack_t, tb_t;	/* the current process's */
	/*
	 * The current process has allocs: its live and allocs tracebacks
	 * (different pointers) meet by content. Without, a snapshot's
	 * tracebacks are distinct already (it interned them): no content
	 * lookups, and no table as big as the tracebacks to fill.
	 */
	bool merge;
	const char **strs;
	size_t nstr, capstr;
	struct func *funcs;
	size_t nfunc, capfunc;
	struct loc *locs;
	size_t nloc, caploc;
	struct frame_ent *frames;
	size_t nframe, capframe;
	struct stack *stacks;
	size_t nstack, capstack;
	uint32_t *ids;			/* every stack's location ids, end to end */
	size_t nid, capid;
	struct sample *samples;
	size_t nsample, capsample;
	struct proc_labels *procs;
	struct tb_ent *tbs;		/* the current process's tracebacks */
	size_t ntb, captb;
};

/* Ids are 32-bit, and htab values index + 1: plenty (4G frames, samples). */
#define ID_MAX		(UINT32_MAX - 1)


#define PUSH(e, arr, n, cap) \
	array__push((void **)&(e)->arr, &(e)->n, &(e)->cap, sizeof(*(e)->arr))

static uint64_t mix3(uint64_t seed, uint64_t a, uint64_t b, uint64_t c)
{
	return hash__mix64(hash__mix64(hash__mix64(seed ^ a) ^ b) ^ c);
}

/* The string's id; S is kept, not copied (it lives in a snapshot, or is static). */
static int str_id(struct enc *e, const char *s, uint32_t *id)
{
	uint64_t h = hash__str(e->seed, s), v;
	size_t cur = 0;
	const char **p;

	while ((v = htab__next(&e->str_t, h, &cur)))
		if (!strcmp(e->strs[v - 1], s)) {
			*id = v - 1;
			return 0;
		}
	p = PUSH(e, strs, nstr, capstr);
	if (!p || htab__add(&e->str_t, h, e->nstr)) {
		e->nstr -= !!p;
		return -ENOMEM;
	}
	*p = s;
	*id = e->nstr - 1;
	return 0;
}

static int func_id(struct enc *e, uint32_t name, uint32_t filename,
		   unsigned int start_line, uint32_t *id)
{
	uint64_t h = mix3(e->seed, name, filename, start_line), v;
	size_t cur = 0;
	struct func *f;

	while ((v = htab__next(&e->func_t, h, &cur))) {
		f = &e->funcs[v - 1];
		if (f->name == name && f->filename == filename &&
		    f->start_line == start_line) {
			*id = v;
			return 0;
		}
	}
	f = PUSH(e, funcs, nfunc, capfunc);
	if (!f || htab__add(&e->func_t, h, e->nfunc)) {
		e->nfunc -= !!f;
		return -ENOMEM;
	}
	f->name = name;
	f->filename = filename;
	f->start_line = start_line;
	*id = e->nfunc;
	return 0;
}

static int loc_id(struct enc *e, uint32_t func, unsigned int line, uint32_t *id)
{
	uint64_t h = mix3(e->seed, func, line, 0), v;
	size_t cur = 0;
	struct loc *l;

	while ((v = htab__next(&e->loc_t, h, &cur))) {
		l = &e->locs[v - 1];
		if (l->func == func && l->line == line) {
			*id = v;
			return 0;
		}
	}
	l = PUSH(e, locs, nloc, caploc);
	if (!l || htab__add(&e->loc_t, h, e->nloc)) {
		e->nloc -= !!l;
		return -ENOMEM;
	}
	l->func = func;
	l->line = line;
	*id = e->nloc;
	return 0;
}

/*
 * The location of frame F: by its pointers first (the same pointer is the
 * same string while the snapshots live); by content the first time.
 */
static int frame_loc(struct enc *e, const struct pytm_frame_info *f, uint32_t *loc)
{
	uint64_t h = mix3(e->seed, (uintptr_t)f->filename, (uintptr_t)f->name,
			  (uint64_t)f->lineno << 32 | f->firstlineno), v;
	uint32_t name, filename, func;
	const char *unknown;
	struct frame_ent *fe;
	size_t cur = 0;
	int err;

	while ((v = htab__next(&e->frame_t, h, &cur))) {
		fe = &e->frames[v - 1];
		if (fe->filename == f->filename && fe->name == f->name &&
		    fe->lineno == f->lineno && fe->firstlineno == f->firstlineno) {
			*loc = fe->loc;
			return 0;
		}
	}
	/* No name (a frame loaded from a pickle): tracemalloc's word for it. */
	unknown = fixed_strs[S_UNKNOWN];
	err = str_id(e, f->name ? f->name : unknown, &name);
	if (!err)
		err = str_id(e, f->filename ? f->filename : unknown, &filename);
	if (!err)
		err = func_id(e, name, filename, f->firstlineno, &func);
	if (!err)
		err = loc_id(e, func, f->lineno, loc);
	if (err)
		return err;
	fe = PUSH(e, frames, nframe, capframe);
	if (!fe || htab__add(&e->frame_t, h, e->nframe)) {
		e->nframe -= !!fe;
		return -ENOMEM;
	}
	fe->filename = f->filename;
	fe->name = f->name;
	fe->lineno = f->lineno;
	fe->firstlineno = f->firstlineno;
	fe->loc = *loc;
	return 0;
}

/*
 * The stack of traceback TB in the current process: its location ids, most
 * recent call first (pprof's order too). A traceback cut at the traceback
 * limit (total_nframe > nframe) stays as it is: pprof has no mark for a
 * truncated stack, and its root is then the outermost frame kept.
 */
static int tb_stack(struct enc *e, const struct pytm_traceback *tb, uint32_t *stack)
{
	size_t cur = 0, off, cap, k;
	struct stack *st;
	uint64_t h = 0, v;
	uint32_t *ids;
	int err;

	/* Its ids go at the end of the pool, kept if they are a new stack. */
	off = e->nid;
	if (tb->nframe > e->capid - off) {
		cap = e->capid ? e->capid : 4096;
		while (cap - off < tb->nframe) {
			if (cap > SIZE_MAX / 2 / sizeof(*ids))
				return -ENOMEM;
			cap *= 2;
		}
		ids = realloc(e->ids, cap * sizeof(*ids));
		if (!ids)
			return -ENOMEM;
		e->ids = ids;
		e->capid = cap;
	}
	for (k = 0; k < tb->nframe; k++) {
		err = frame_loc(e, &tb->frames[k], &e->ids[off + k]);
		if (err)
			return err;
	}
	if (e->merge) {
		h = hash__bytes(e->seed, e->ids + off, tb->nframe * sizeof(*ids));
		while ((v = htab__next(&e->stack_t, h, &cur))) {
			st = &e->stacks[v - 1];
			if (st->n == tb->nframe && !memcmp(e->ids + st->off, e->ids + off,
							   st->n * sizeof(*ids))) {
				*stack = v - 1;
				return 0;
			}
		}
	}
	st = PUSH(e, stacks, nstack, capstack);
	if (!st || (e->merge && htab__add(&e->stack_t, h, e->nstack))) {
		e->nstack -= !!st;
		return -ENOMEM;
	}
	st->off = off;
	st->n = tb->nframe;
	e->nid += tb->nframe;
	*stack = e->nstack - 1;
	return 0;
}

/* The sample of STACK (the current process's) in DOMAIN. */
static struct sample *sample_get(struct enc *e, uint32_t stack,
				 unsigned int domain, uint32_t proc)
{
	struct sample *sp;
	uint32_t i;

	/* Few domains per stack: a short list. */
	for (i = e->stacks[stack].sample; i; i = sp->next) {
		sp = &e->samples[i - 1];
		if (sp->domain == domain)
			return sp;
	}
	sp = PUSH(e, samples, nsample, capsample);
	if (!sp)
		return NULL;
	sp->stack = stack;
	sp->domain = domain;
	sp->proc = proc;
	sp->next = e->stacks[stack].sample;
	e->stacks[stack].sample = e->nsample;
	return sp;
}

/* pprof's values are int64: a sum past it stays at the top. */
static inline void add_sat(int64_t *v, uint64_t x)
{
	*v = x > (uint64_t)(INT64_MAX - *v) ? INT64_MAX : *v + (int64_t)x;
}

/* The stack of traceback TB (of the current process), looked up by pointer. */
static int tb_stack_cached(struct enc *e, const struct pytm_traceback *tb,
			   uint32_t *stack)
{
	uint64_t h = hash__mix64(e->seed ^ (uintptr_t)tb), v;
	struct tb_ent *te;
	size_t cur = 0;
	int err;

	while ((v = htab__next(&e->tb_t, h, &cur)))
		if (e->tbs[v - 1].tb == tb) {
			*stack = e->tbs[v - 1].stack;
			return 0;
		}
	err = tb_stack(e, tb, stack);
	if (err)
		return err;
	te = PUSH(e, tbs, ntb, captb);
	if (!te || htab__add(&e->tb_t, h, e->ntb)) {
		e->ntb -= !!te;
		return -ENOMEM;
	}
	te->tb = tb;
	te->stack = *stack;
	return 0;
}

/* Every trace of S into process PROC's samples, at values V and V + 1. */
static int add_snapshot(struct enc *e, const struct snapshot *s, uint32_t proc, int v)
{
	const struct pytm_trace *t = snapshot__traces(s);
	const struct pytm_traceback *tb = NULL;
	size_t n = snapshot__count(s), i;
	struct sample *sp = NULL;
	uint32_t stack = 0;
	int err;

	for (i = 0; i < n; i++) {
		/* Traces of a traceback often come in runs. */
		if (t[i].tb != tb) {
			tb = t[i].tb;
			err = tb_stack_cached(e, tb, &stack);
			if (err)
				return err;
			sp = NULL;
		}
		if (!sp || t[i].domain != sp->domain) {
			sp = sample_get(e, stack, t[i].domain, proc);
			if (!sp)
				return -ENOMEM;
		}
		add_sat(&sp->v[v], t[i].count);
		add_sat(&sp->v[v + 1], t[i].size);
	}
	return 0;
}

static void enc__free(struct enc *e)
{
	htab__free(&e->str_t);
	htab__free(&e->func_t);
	htab__free(&e->loc_t);
	htab__free(&e->frame_t);
	htab__free(&e->stack_t);
	htab__free(&e->tb_t);
	free(e->strs);
	free(e->funcs);
	free(e->locs);
	free(e->frames);
	free(e->stacks);
	free(e->ids);
	free(e->samples);
	free(e->procs);
	free(e->tbs);
}

/* ======================= the message ======================= */

static void emit_value_type(struct pb *w, int field, uint32_t type, uint32_t unit)
{
	pb_begin(w, field);
	pb_uint(w, VALUE_TYPE_TYPE, type);
	pb_uint(w, VALUE_TYPE_UNIT, unit);
	pb_end(w);
}

static void emit_label(struct pb *w, uint32_t key, uint32_t str, int64_t num)
{
	pb_begin(w, SAMPLE_LABEL);
	pb_uint(w, LABEL_KEY, key);
	pb_uint(w, LABEL_STR, str);
	pb_uint(w, LABEL_NUM, (uint64_t)num);
	pb_end(w);
}

static bool utf8_clean(uint32_t cp, size_t n)
{
	return n && !utf8_is_control(cp) && !utf8_is_surrogate(cp);
}

/*
 * A string as strict UTF-8 decoders (protobuf's own, for proto3 strings)
 * accept it: bytes that are not UTF-8, encoded surrogates (file names that
 * Python decoded with surrogateescape) and control characters become
 * \xNN, as in the tool's other outputs.
 */
static void emit_string(struct pb *w, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t len = strlen(str), i, n;
	uint32_t cp;

	for (i = 0; i < len; i += n) {
		n = utf8_seq(s + i, len - i, &cp);
		if (!utf8_clean(cp, n))
			break;
	}
	if (i == len) {
		pb_bytes(w, PROFILE_STRING_TABLE, s, len);
		return;
	}
	pb_begin(w, PROFILE_STRING_TABLE);
	if (!pb_room(w, 4 * len))
		return;
	for (i = 0; i < len; i += n) {
		n = utf8_seq(s + i, len - i, &cp);
		if (utf8_clean(cp, n)) {
			memcpy(w->buf + w->len, s + i, n);
			w->len += n;
		} else {
			w->buf[w->len++] = '\\';
			w->buf[w->len++] = 'x';
			w->buf[w->len++] = "0123456789abcdef"[s[i] >> 4];
			w->buf[w->len++] = "0123456789abcdef"[s[i] & 15];
			n = 1;
		}
	}
	pb_end(w);
}

static void emit_sample(struct pb *w, const struct enc *e, const struct sample *sp,
			int v0, bool pid_label)
{
	const struct stack *st = &e->stacks[sp->stack];
	const struct proc_labels *pl = &e->procs[sp->proc];
	uint32_t k;
	int v;

	pb_begin(w, PROFILE_SAMPLE);
	pb_begin(w, SAMPLE_LOCATION_ID);
	for (k = 0; k < st->n; k++)
		pb_varint(w, e->ids[st->off + k]);
	pb_end(w);
	pb_begin(w, SAMPLE_VALUE);
	for (v = v0; v < V_N; v++)
		pb_varint(w, sp->v[v]);
	pb_end(w);
	if (pid_label)
		emit_label(w, S_PID, 0, pl->pid);
	if (pl->ppid)
		emit_label(w, S_PPID, 0, pl->ppid);
	if (pl->container)
		emit_label(w, S_CONTAINER, pl->container, 0);
	if (sp->domain)
		emit_label(w, S_DOMAIN, 0, sp->domain);
	pb_end(w);
}

static void emit_profile(struct pb *w, const struct enc *e, const struct pprof_opts *o,
			 bool allocs, bool pid_label)
{
	int v0 = allocs ? V_ALLOC_OBJECTS : V_INUSE_OBJECTS;
	size_t i;

	if (allocs) {
		emit_value_type(w, PROFILE_SAMPLE_TYPE, S_ALLOC_OBJECTS, S_COUNT);
		emit_value_type(w, PROFILE_SAMPLE_TYPE, S_ALLOC_SPACE, S_BYTES);
	}
	emit_value_type(w, PROFILE_SAMPLE_TYPE, S_INUSE_OBJECTS, S_COUNT);
	emit_value_type(w, PROFILE_SAMPLE_TYPE, S_INUSE_SPACE, S_BYTES);
	pb_uint(w, PROFILE_DEFAULT_SAMPLE_TYPE,
		allocs && o->alloc_default ? S_ALLOC_SPACE : S_INUSE_SPACE);
	emit_value_type(w, PROFILE_PERIOD_TYPE, S_SPACE, S_BYTES);
	pb_uint(w, PROFILE_PERIOD, o->period > INT64_MAX ? INT64_MAX : o->period);
	pb_uint(w, PROFILE_TIME_NANOS, (uint64_t)o->time_nanos);
	pb_uint(w, PROFILE_DURATION_NANOS, (uint64_t)o->duration_nanos);

	for (i = 0; i < e->nsample; i++) {
		emit_sample(w, e, &e->samples[i], v0, pid_label);
		pb_flush(w);
	}

	/* Symbolized already: pprof must not look for a binary to read. */
	pb_begin(w, PROFILE_MAPPING);
	pb_uint(w, MAPPING_ID, MAPPING_ID_PYTHON);
	pb_uint(w, MAPPING_FILENAME, S_PYTHON);
	pb_uint(w, MAPPING_HAS_FUNCTIONS, 1);
	pb_uint(w, MAPPING_HAS_FILENAMES, 1);
	pb_uint(w, MAPPING_HAS_LINE_NUMBERS, 1);
	pb_end(w);

	/* Address 0: a Python frame has none; its line is what locates it. */
	for (i = 0; i < e->nloc; i++) {
		pb_begin(w, PROFILE_LOCATION);
		pb_uint(w, LOCATION_ID, i + 1);
		pb_uint(w, LOCATION_MAPPING_ID, MAPPING_ID_PYTHON);
		pb_begin(w, LOCATION_LINE);
		pb_uint(w, LINE_FUNCTION_ID, e->locs[i].func);
		pb_uint(w, LINE_LINE, e->locs[i].line);
		pb_end(w);
		pb_end(w);
		pb_flush(w);
	}

	for (i = 0; i < e->nfunc; i++) {
		pb_begin(w, PROFILE_FUNCTION);
		pb_uint(w, FUNCTION_ID, i + 1);
		/*
		 * No system_name: pprof takes name == system_name for a name
		 * yet to demangle, and its C++ heuristics strip "<...>":
		 * "<module>", "<listcomp>", "<lambda>" would become "".
		 */
		pb_uint(w, FUNCTION_NAME, e->funcs[i].name);
		pb_uint(w, FUNCTION_FILENAME, e->funcs[i].filename);
		pb_uint(w, FUNCTION_START_LINE, e->funcs[i].start_line);
		pb_end(w);
		pb_flush(w);
	}

	for (i = 0; i < e->nstr; i++) {
		emit_string(w, e->strs[i]);
		pb_flush(w);
	}
}

int pprof__encode(const struct pprof_proc *procs, int n,
		  const struct pprof_opts *o, struct pprof_buf *out)
{
	struct enc e = {};
	struct pb w = {};
	bool allocs = false, z_open = false;
	uint32_t id;
	int err = 0, i;

	if (out)
		memset(out, 0, sizeof(*out));
	if (!out || !o || n < 0 || (n && !procs))
		return error__set(-EINVAL, "invalid argument");
	e.seed = hash__seed();
	for (i = 0; i < S_FIXED && !err; i++)
		err = str_id(&e, fixed_strs[i], &id);
	if (err)
		goto cleanup;
	e.procs = calloc(n ? n : 1, sizeof(*e.procs));
	if (!e.procs) {
		err = -ENOMEM;
		goto cleanup;
	}
	for (i = 0; i < n; i++) {
		/* Stacks are per process: their samples hang off them. */
		htab__free(&e.stack_t);
		htab__free(&e.tb_t);
		e.ntb = 0;
		e.merge = procs[i].allocs != NULL;
		e.procs[i].pid = procs[i].pid;
		e.procs[i].ppid = procs[i].ppid;
		if (procs[i].container && procs[i].container[0]) {
			err = str_id(&e, procs[i].container, &e.procs[i].container);
			if (err)
				goto cleanup;
		}
		err = add_snapshot(&e, procs[i].live, i, V_INUSE_OBJECTS);
		if (!err && procs[i].allocs)
			err = add_snapshot(&e, procs[i].allocs, i, V_ALLOC_OBJECTS);
		if (err)
			goto cleanup;
		allocs |= procs[i].allocs != NULL;
	}

	/* Go's runtime writes its profiles at BestSpeed too: scrapes are many. */
	if (deflateInit2(&w.z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8,
			 Z_DEFAULT_STRATEGY) != Z_OK) {
		err = -ENOMEM;
		goto cleanup;
	}
	z_open = true;
	w.out = out;
	/* Several processes: a pid label keeps their samples apart. */
	emit_profile(&w, &e, o, allocs, o->pid_label || n > 1);
	pb_deflate(&w, true);
	err = w.err;

cleanup:
	if (z_open)
		deflateEnd(&w.z);
	free(w.buf);
	enc__free(&e);
	if (err) {
		pprof_buf__free(out);
		if (err == -ENOMEM)
			error__set(err, "out of memory");
		else
			error__set(err, "pprof: %s", strerror(-err));
	}
	return err;
}

void pprof_buf__free(struct pprof_buf *b)
{
	if (!b)
		return;
	free(b->data);
	memset(b, 0, sizeof(*b));
}

int pprof__write(const char *path, const struct pprof_proc *procs, int n,
		 const struct pprof_opts *o)
{
	struct atomic_file af;
	struct pprof_buf b = {};
	int err;

	if (!path)
		return error__set(-EINVAL, "invalid argument");
	err = pprof__encode(procs, n, o, &b);
	if (err)
		return err;		/* its reason is set */
	err = atomic_file__open(&af, path);
	if (!err) {
		if (fwrite(b.data, 1, b.len, af.f) != b.len) {
			err = -errno ?: -EIO;
			atomic_file__abort(&af);
		} else {
			err = atomic_file__commit(&af);
		}
	}
	if (err)
		error__set(err, "%s: %s", path, strerror(-err));
	pprof_buf__free(&b);
	return err;
}
