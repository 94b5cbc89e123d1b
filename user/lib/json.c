// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "json.h"
#include "util.h"

void json__init(struct json *j, FILE *out)
{
	memset(j, 0, sizeof(*j));
	j->out = out;
	j->first[0] = true;
}

/* Comma before any value but the first of its container, or a member's. */
static void sep(struct json *j)
{
	if (j->named) {
		j->named = false;
		return;
	}
	if (!j->first[j->depth])
		fputc(',', j->out);
	j->first[j->depth] = false;
}

static void open_(struct json *j, char c)
{
	sep(j);
	fputc(c, j->out);
	if (j->depth < JSON_MAX_DEPTH - 1)
		j->depth++;
	j->first[j->depth] = true;
}

static void close_(struct json *j, char c)
{
	fputc(c, j->out);
	if (j->depth > 0)
		j->depth--;
	if (!j->depth) {
		fputc('\n', j->out);
		j->first[0] = true;
	}
}

void json__begin_object(struct json *j) { open_(j, '{'); }
void json__end_object(struct json *j) { close_(j, '}'); }
void json__begin_array(struct json *j) { open_(j, '['); }
void json__end_array(struct json *j) { close_(j, ']'); }

static void put_escaped(FILE *out, const char *str, bool html)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t len = strlen(str), i = 0, n;
	uint32_t cp;

	while (i < len) {
		n = utf8_seq(s + i, len - i, &cp);
		/* Encoded surrogates are not text either: escape their bytes. */
		if (n == 3 && utf8_is_surrogate(cp))
			n = 0;
		if (!n) {
			fprintf(out, "\\udc%02x", s[i]);	/* surrogateescape */
			i++;
			continue;
		}
		if (n == 1) {
			switch (s[i]) {
			case '"': fputs("\\\"", out); break;
			case '\\': fputs("\\\\", out); break;
			case '\n': fputs("\\n", out); break;
			case '\t': fputs("\\t", out); break;
			case '\r': fputs("\\r", out); break;
			default:
				/* In HTML, no "</script>" and no markup. */
				if (s[i] < 0x20 || s[i] == 0x7f ||
				    (html && (s[i] == '<' || s[i] == '>' || s[i] == '&')))
					fprintf(out, "\\u%04x", s[i]);
				else
					fputc(s[i], out);
			}
		} else if (utf8_is_control(cp)) {
			/* C1 controls (U+0080-U+009F): terminals act on some (CSI). */
			fprintf(out, "\\u%04x", cp);
		} else {
			fwrite(s + i, 1, n, out);
		}
		i += n;
	}
}

void json__put_escaped(FILE *out, const char *str)
{
	put_escaped(out, str, false);
}

void json__name(struct json *j, const char *name)
{
	sep(j);
	fputc('"', j->out);
	put_escaped(j->out, name, j->html);
	fputs("\":", j->out);
	j->named = true;
}

void json__string(struct json *j, const char *s)
{
	if (!s) {
		json__null(j);
		return;
	}
	sep(j);
	fputc('"', j->out);
	put_escaped(j->out, s, j->html);
	fputc('"', j->out);
}

void json__uint(struct json *j, uint64_t v)
{
	sep(j);
	fprintf(j->out, "%llu", (unsigned long long)v);
}

void json__int(struct json *j, int64_t v)
{
	sep(j);
	fprintf(j->out, "%lld", (long long)v);
}

void json__u128(struct json *j, unsigned __int128 v)
{
	char buf[48], *p = buf + sizeof(buf) - 1;

	sep(j);
	*p = '\0';
	do {
		*--p = '0' + (int)(v % 10);
		v /= 10;
	} while (v);
	fputs(p, j->out);
}

void json__s128(struct json *j, __int128 v)
{
	if (v < 0) {
		sep(j);
		fputc('-', j->out);
		j->named = true;	/* no separator before the digits */
		json__u128(j, -(unsigned __int128)v);
		return;
	}
	json__u128(j, (unsigned __int128)v);
}

void json__double(struct json *j, double v)
{
	char buf[64];
	int prec;

	if (!isfinite(v)) {
		json__null(j);
		return;
	}
	/*
	 * The shortest form that reads back as the same double, without an
	 * exponent where plain digits do (400, not 4e+02).
	 */
	for (prec = 1; prec <= 17; prec++) {
		snprintf(buf, sizeof(buf), "%.*g", prec, v);
		if (strtod(buf, NULL) == v &&
		    (!strchr(buf, 'e') || fabs(v) >= 1e16 || fabs(v) < 1e-4))
			break;
	}
	sep(j);
	fputs(buf, j->out);
}

void json__bool(struct json *j, bool v)
{
	sep(j);
	fputs(v ? "true" : "false", j->out);
}

void json__null(struct json *j)
{
	sep(j);
	fputs("null", j->out);
}
