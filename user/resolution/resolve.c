// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "linetable.h"
#include "resolve.h"
#include "target.h"
#include "util.h"

#define MAX_FILENAME	4096		/* bytes read of a filename */
#define MAX_LINETABLE	(1 << 20)	/* bytes read of a line table */

struct code {
	char *filename;			/* sanitized UTF-8; NULL: unread */
	char *name;			/* co_qualname (3.11+) or co_name; may be NULL */
	int firstlineno;
	uint8_t *table;
	size_t table_len;
};

struct resolver {
	const struct target *t;
	struct pytm_offsets off;
	uint64_t code_type;		/* &PyCode_Type */
	struct code *codes;		/* by id */
	uint32_t ncodes;
	uint64_t nread, nfailed;
	bool retry;			/* a failed read is tried again elsewhere */
	const struct resolver_mem *mem;	/* copies read before the target */
	size_t nmem;
};

struct resolver *resolver__new(const struct target *t,
			       const struct pytm_offsets *off)
{
	struct resolver *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->t = t;
	r->off = *off;
	r->code_type = target__symbol(t, "PyCode_Type");
	return r;
}

void resolver__free(struct resolver *r)
{
	uint32_t i;

	if (!r)
		return;
	for (i = 0; i < r->ncodes; i++) {
		free(r->codes[i].filename);
		free(r->codes[i].name);
		free(r->codes[i].table);
	}
	free(r->codes);
	free(r);
}

/* LEN bytes at ADDR: from a copy that holds them all, else the target now. */
static int rd(const struct resolver *r, uint64_t addr, void *buf, size_t len)
{
	const struct resolver_mem *m;
	size_t i;

	for (i = 0; i < r->nmem; i++) {
		m = &r->mem[i];
		if (addr >= m->addr && addr - m->addr <= m->len && len <= m->len - (addr - m->addr)) {
			memcpy(buf, (const uint8_t *)m->bytes + (addr - m->addr), len);
			return 0;
		}
	}
	return target__read(r->t, addr, buf, len);
}

static uint64_t rd_ptr(const struct resolver *r, uint64_t addr)
{
	uint64_t v = 0;

	return rd(r, addr, &v, sizeof(v)) ? 0 : v;
}

/* Append code point CP as UTF-8. */
static size_t put_utf8(char *o, uint32_t cp)
{
	if (cp < 0x80) {
		o[0] = cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = 0xc0 | cp >> 6;
		o[1] = 0x80 | (cp & 0x3f);
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = 0xe0 | cp >> 12;
		o[1] = 0x80 | ((cp >> 6) & 0x3f);
		o[2] = 0x80 | (cp & 0x3f);
		return 3;
	}
	o[0] = 0xf0 | cp >> 18;
	o[1] = 0x80 | ((cp >> 12) & 0x3f);
	o[2] = 0x80 | ((cp >> 6) & 0x3f);
	o[3] = 0x80 | (cp & 0x3f);
	return 4;
}

/* A compact str object at ADDR, as sanitized UTF-8 (malloc'd). */
static char *read_str(const struct resolver *r, uint64_t addr)
{
	const struct pytm_offsets *o = &r->off;
	uint32_t state = 0, kind, cp;
	int64_t length = 0;
	uint8_t *raw = NULL;
	char *utf8 = NULL, *out = NULL;
	size_t n, i, u = 0;
	uint64_t data;

	if (!addr || rd(r, addr + o->unicode_length, &length, sizeof(length)) ||
	    rd(r, addr + o->unicode_state, &state, sizeof(state)))
		return NULL;
	/* state: interned:2, kind:3, compact:1, ascii:1 (3.8-3.13) */
	kind = (state >> 2) & 7;
	if (!(state & (1 << 5)) || length < 0 || (kind != 1 && kind != 2 && kind != 4))
		return NULL;
	n = length > MAX_FILENAME ? MAX_FILENAME : (size_t)length;
	data = addr + ((state & (1 << 6)) ? o->unicode_ascii_size : o->unicode_compact_size);
	raw = malloc(n * kind + 1);
	utf8 = malloc(n * 4 + 1);
	if (!raw || !utf8 || rd(r, data, raw, n * kind))
		goto cleanup;
	for (i = 0; i < n; i++) {
		if (kind == 1)
			cp = raw[i];
		else if (kind == 2)
			cp = ((uint16_t *)raw)[i];
		else
			cp = ((uint32_t *)raw)[i];
		if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			cp = 0xfffd;	/* lone surrogates: not printable as UTF-8 */
		u += put_utf8(utf8 + u, cp);
	}
	out = malloc(u * 4 + 1);
	if (out)
		str_sanitize(out, u * 4 + 1, utf8, u);
cleanup:
	free(raw);
	free(utf8);
	return out;
}

/* Room for code ID. */
static int grow(struct resolver *r, uint32_t id)
{
	struct code *nc;
	uint32_t n;

	if (id < r->ncodes)
		return 0;
	n = r->ncodes ? r->ncodes : 1024;
	while (n <= id)
		n *= 2;
	nc = realloc(r->codes, n * sizeof(*nc));
	if (!nc)
		return -ENOMEM;
	memset(nc + r->ncodes, 0, (n - r->ncodes) * sizeof(*nc));
	r->codes = nc;
	r->ncodes = n;
	return 0;
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

int resolver__inherit(struct resolver *r, const struct resolver *from)
{
	const struct code *f;
	struct code *c;
	uint32_t id;

	/* Code ids are the session's, never reused: the same id is the same code. */
	for (id = 0; id < from->ncodes; id++) {
		f = &from->codes[id];
		if (!f->filename || (id < r->ncodes && r->codes[id].filename))
			continue;
		if (grow(r, id))
			return -ENOMEM;
		c = &r->codes[id];
		c->filename = strdup(f->filename);
		c->name = dup_or_null(f->name);
		c->firstlineno = f->firstlineno;
		c->table = f->table_len ? malloc(f->table_len) : NULL;
		if (!c->filename || (f->name && !c->name) || (f->table_len && !c->table)) {
			free(c->filename);
			free(c->name);
			free(c->table);
			memset(c, 0, sizeof(*c));
			return -ENOMEM;
		}
		if (c->table)
			memcpy(c->table, f->table, f->table_len);
		c->table_len = f->table_len;
	}
	return 0;
}

int resolver__add_code(struct resolver *r, uint32_t id, uint64_t addr)
{
	return resolver__add_code_from(r, NULL, id, addr);
}

size_t resolver__event_mem(const void *data, size_t size, struct resolver_mem mem[PYTM_CAP_N])
{
	const struct pytm_code_event *ce = data;
	const uint8_t *bytes[PYTM_CAP_N] = { ce->code, ce->filename, ce->name, ce->table };
	const uint32_t cap[PYTM_CAP_N] = { sizeof(ce->code), sizeof(ce->filename),
					   sizeof(ce->name), sizeof(ce->table) };
	size_t i, n = 0;

	if (size < sizeof(*ce))
		return 0;	/* an announcement without copies */
	for (i = 0; i < PYTM_CAP_N; i++)
		if (ce->r[i].len && ce->r[i].len <= cap[i])
			mem[n++] = (struct resolver_mem){ ce->r[i].addr, bytes[i], ce->r[i].len };
	return n;
}

int resolver__add_code_copied(struct resolver *r, uint32_t id, uint64_t addr,
			      const struct resolver_mem *mem, size_t nmem)
{
	int err;

	r->mem = mem;
	r->nmem = nmem;
	err = resolver__add_code_from(r, NULL, id, addr);
	r->mem = NULL;
	r->nmem = 0;
	return err;
}

int resolver__add_code_from(struct resolver *r, const struct target *from, uint32_t id,
			    uint64_t addr)
{
	const struct pytm_offsets *o = &r->off;
	const struct target *own = r->t;
	struct code c = {};
	uint64_t type, fname, table;
	int64_t tlen = 0;
	int err = -EINVAL;

	if (grow(r, id))
		return -ENOMEM;
	if (from)
		r->t = from;	/* the readers below read r->t */
	type = rd_ptr(r, addr + o->object_type);
	if (!type || (r->code_type && type != r->code_type))
		goto fail;
	if (rd(r, addr + o->code_firstlineno, &c.firstlineno,
			 sizeof(c.firstlineno)))
		goto fail;
	fname = rd_ptr(r, addr + o->code_filename);
	c.filename = read_str(r, fname);
	if (!c.filename)
		goto fail;
	/* Only profiles that name functions use it: unreadable is not fatal. */
	if (o->code_qualname != PYTM_OFF_NONE)
		c.name = read_str(r, rd_ptr(r, addr + o->code_qualname));
	if (!c.name && o->code_name != PYTM_OFF_NONE)
		c.name = read_str(r, rd_ptr(r, addr + o->code_name));
	table = rd_ptr(r, addr + o->code_linetable);
	if (table && rd(r, table + o->varobject_size, &tlen, sizeof(tlen)) == 0 &&
	    tlen > 0 && tlen <= MAX_LINETABLE) {
		c.table = malloc(tlen);
		if (c.table && rd(r, table + o->bytes_sval, c.table, tlen) == 0)
			c.table_len = tlen;
	}
	free(r->codes[id].filename);
	free(r->codes[id].name);
	free(r->codes[id].table);
	r->codes[id] = c;
	r->nread++;
	r->t = own;
	return 0;
fail:
	free(c.filename);
	r->t = own;
	/* The caller may try elsewhere: only a last try counts as a failure. */
	if (from || !r->retry) {
		r->nfailed++;
		vlog("code object %u at 0x%llx: unreadable", id, (unsigned long long)addr);
	}
	return err;
}

void resolver__set_retry(struct resolver *r, bool retry)
{
	r->retry = retry;
}

void resolver__frame(struct resolver *r, uint64_t frame, struct snapshot *s,
		     struct pytm_frame_info *out)
{
	uint32_t id = PYTM_FRAME_ID(frame);
	int32_t lasti = PYTM_FRAME_LASTI(frame);
	const struct code *c;
	int addrq, line;

	if (id >= r->ncodes || !r->codes[id].filename) {
		*out = (struct pytm_frame_info){ .filename = snapshot__intern(s, "<unknown>") };
		return;
	}
	c = &r->codes[id];
	/* PyCode_Addr2Line takes bytes; 3.10+ count lasti in code units. */
	addrq = r->off.lasti_kind == PYTM_LASTI_INT_BYTES ? lasti : lasti * 2;
	line = linetable__addr2line(r->off.hexversion, c->table, c->table_len,
				    c->firstlineno, addrq);
	out->filename = snapshot__intern(s, c->filename);
	out->lineno = line < 0 ? 0 : line;
	out->name = c->name ? snapshot__intern(s, c->name) : NULL;
	out->firstlineno = c->firstlineno < 0 ? 0 : c->firstlineno;
}

void resolver__stats(const struct resolver *r, uint64_t *nread, uint64_t *nfailed)
{
	*nread = r->nread;
	*nfailed = r->nfailed;
}
