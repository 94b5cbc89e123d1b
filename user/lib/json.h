/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one JSON writer: compact documents, one per line (JSON Lines), for
 * every machine-readable output of the tool.
 *
 * Strings are written as JSON requires (", \ and control characters
 * escaped); bytes that are not UTF-8 (a target's file names are
 * untrusted) become lone surrogates U+DC80..U+DCFF, as Python's
 * "surrogateescape" decodes them: json.loads() then os.fsencode() gives
 * the original bytes back.
 */
#ifndef __PYTM_JSON_H
#define __PYTM_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_DEPTH 32

struct json {
	FILE *out;
	int depth;
	bool first[JSON_MAX_DEPTH];	/* nothing written yet at this depth */
	bool named;			/* a member name was just written */
	bool html;			/* inside an HTML <script>: <, > and & escaped too */
};

void json__init(struct json *j, FILE *out);
void json__begin_object(struct json *j);
/* Closing the outermost value ends the document with a newline. */
void json__end_object(struct json *j);
void json__begin_array(struct json *j);
void json__end_array(struct json *j);
/* A member name in an object; its value follows. */
void json__name(struct json *j, const char *name);
void json__string(struct json *j, const char *s);	/* NULL: null */
void json__uint(struct json *j, uint64_t v);
void json__int(struct json *j, int64_t v);
void json__u128(struct json *j, unsigned __int128 v);
void json__s128(struct json *j, __int128 v);
/* A finite double, shortest round-trip form; NaN and infinities: null. */
void json__double(struct json *j, double v);
void json__bool(struct json *j, bool v);
void json__null(struct json *j);
/* Write the escaped body of a JSON string (no quotes) for S. */
void json__put_escaped(FILE *out, const char *s);

#endif /* __PYTM_JSON_H */
