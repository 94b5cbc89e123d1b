// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * utf8_seq against an independent encoder: every code point's encoding is
 * accepted with its value, and every other 1-3 byte prefix (plus each
 * 4-byte lead with every continuation shape) is refused. Then
 * str_sanitize: what it escapes and where it cuts. parse_num's bounds and
 * refusals; the JSON writer's strings (every code point, every stray byte)
 * and numbers (round trips).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "htab.h"
#include "json.h"
#include "unit.h"
#include "util.h"

/* Plain encoder, surrogates included (surrogatepass). */
static size_t encode(uint32_t cp, unsigned char *b)
{
	if (cp < 0x80) {
		b[0] = cp;
		return 1;
	}
	if (cp < 0x800) {
		b[0] = 0xc0 | cp >> 6;
		b[1] = 0x80 | (cp & 0x3f);
		return 2;
	}
	if (cp < 0x10000) {
		b[0] = 0xe0 | cp >> 12;
		b[1] = 0x80 | (cp >> 6 & 0x3f);
		b[2] = 0x80 | (cp & 0x3f);
		return 3;
	}
	b[0] = 0xf0 | cp >> 18;
	b[1] = 0x80 | (cp >> 12 & 0x3f);
	b[2] = 0x80 | (cp >> 6 & 0x3f);
	b[3] = 0x80 | (cp & 0x3f);
	return 4;
}

/* Decode with the reference: the code point of B[0..N) if it is one. */
static int64_t reference(const unsigned char *b, size_t n)
{
	unsigned char e[4];
	uint32_t cp, lo, hi;

	/* Only the candidates a lead byte allows; the encoder decides. */
	lo = n == 1 ? 0 : n == 2 ? 0x80 : n == 3 ? 0x800 : 0x10000;
	hi = n == 1 ? 0x7f : n == 2 ? 0x7ff : n == 3 ? 0xffff : 0x10ffff;
	cp = 0;
	if (n == 1)
		cp = b[0];
	else
		cp = b[0] & (0x7f >> n);
	for (size_t i = 1; i < n; i++)
		cp = cp << 6 | (b[i] & 0x3f);
	if (cp < lo || cp > hi || encode(cp, e) != n || memcmp(e, b, n))
		return -1;
	return cp;
}

/* Whether utf8_seq agrees with the reference on B[0..N); says where not. */
static bool seq_ok(const unsigned char *b, size_t n)
{
	int64_t want = reference(b, n);
	uint32_t cp = 0xffffffff;
	size_t got = utf8_seq(b, n, &cp);

	/* A shorter valid sequence at the front is not this one. */
	if (got && got < n)
		return true;
	if (want < 0 ? got == 0 : got == n && cp == want)
		return true;
	fprintf(stderr, "utf8_seq(%02x %02x %02x %02x, %zu): %zu, U+%04X; want %lld\n",
		b[0], n > 1 ? b[1] : 0, n > 2 ? b[2] : 0, n > 3 ? b[3] : 0, n, got, cp,
		(long long)want);
	return false;
}

static void test_utf8(void)
{
	static const unsigned char cont[] = { 0x00, 0x41, 0x7f, 0x80, 0x9f, 0xa0, 0xbf, 0xc0, 0xff };
	unsigned char b[4];
	uint32_t cp, got;
	size_t n, i, j, k;
	int bad = 0;

	for (cp = 0; cp <= 0x10ffff; cp++) {
		n = encode(cp, b);
		if (utf8_seq(b, n, &got) != n || got != cp)
			bad++;
		/* One byte short: never accepted. */
		if (n > 1 && utf8_seq(b, n - 1, NULL))
			bad++;
	}
	CHECK(bad == 0, "%d code points decoded wrong", bad);
	/* One check per lead byte: every 1-3 byte input starting with it. */
	for (i = 0; i < 256; i++) {
		bool ok = true;

		b[0] = i;
		ok &= seq_ok(b, 1);
		for (j = 0; j < 256; j++) {
			b[1] = j;
			ok &= seq_ok(b, 2);
			for (k = 0; k < 256; k++) {
				b[2] = k;
				ok &= seq_ok(b, 3);
			}
		}
		if (i >= 0xf0) {
			for (j = 0; j < sizeof(cont); j++)
				for (k = 0; k < sizeof(cont); k++)
					for (n = 0; n < sizeof(cont); n++) {
						b[1] = cont[j] ^ (j & 1 ? 0x10 : 0);
						b[2] = cont[k];
						b[3] = cont[n];
						ok &= seq_ok(b, 4);
					}
		}
		CHECK(ok, "inputs led by %02zx", i);
	}
	CHECK(utf8_seq((const unsigned char *)"\xf4\x90\x80\x80", 4, NULL) == 0,
	      "U+110000 accepted");
	CHECK(utf8_seq((const unsigned char *)"\xed\xa0\x80", 3, NULL) == 3,
	      "an encoded surrogate refused");
}

static void sanitize(const char *src, size_t len, size_t cap, const char *want)
{
	char out[64];

	memset(out, 'Z', sizeof(out));
	str_sanitize(out, cap, src, len);
	CHECK(!strcmp(out, want), "sanitize(%zu bytes, cap %zu): \"%s\", want \"%s\"",
	      len, cap, out, want);
}

static void test_sanitize(void)
{
	sanitize("plain.py", 8, 64, "plain.py");
	sanitize("a\nb\x1b[2J", 8, 64, "a\\x0ab\\x1b[2J");
	sanitize("\x7f", 1, 64, "\\x7f");
	sanitize("caf\xc3\xa9.py", 8, 64, "caf\xc3\xa9.py");
	sanitize("bad\xff.py", 7, 64, "bad\\xff.py");
	sanitize("\xc3", 1, 64, "\\xc3");			/* cut sequence */
	sanitize("\xe0\x80\x80", 3, 64, "\\xe0\\x80\\x80");	/* overlong */
	sanitize("stop\0here", 9, 64, "stop");
	/* Room for 5 bytes + NUL: "\xc3\xa9" would not fit whole after "abcd". */
	sanitize("abcd\xc3\xa9", 6, 6, "abcd");
	sanitize("ab\x01", 3, 6, "ab");				/* no half escape */
	sanitize("abc", 3, 1, "");
}

static void test_parse_num(void)
{
	static const char *const bad[] = {
		"", "-1", "+1", " 1", "1 ", "1x", "0x10", "1e3", "11", "99999999999999999999",
	};
	long long v = -7;
	size_t i;

	CHECK(parse_num("0", 0, 10, &v) == 0 && v == 0, "0 -> %lld", v);
	CHECK(parse_num("10", 0, 10, &v) == 0 && v == 10, "10 -> %lld", v);
	CHECK(parse_num("007", 0, 10, &v) == 0 && v == 7, "007 -> %lld", v);
	CHECK(parse_num("9223372036854775807", 0, LLONG_MAX, &v) == 0 && v == LLONG_MAX,
	      "LLONG_MAX -> %lld", v);
	CHECK(parse_num("5", 6, 10, &v) == -EINVAL, "below the minimum");
	CHECK(parse_num(NULL, 0, 10, &v) == -EINVAL, "NULL");
	for (i = 0, v = -7; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK(parse_num(bad[i], 0, 10, &v) == -EINVAL && v == -7,
		      "'%s' accepted as %lld", bad[i], v);
}

/* What json__put_escaped writes for the LEN bytes at S. */
static char *escaped(const char *s)
{
	static char buf[256];
	FILE *f = fmemopen(buf, sizeof(buf), "w");

	json__put_escaped(f, s);
	fclose(f);
	return buf;
}

static void test_json_strings(void)
{
	unsigned char in[8], want[16];
	char *got;
	uint32_t cp;
	size_t n;
	int b, bad = 0;

	/* Every character but controls (C0, DEL, C1), '"' and '\' goes through as it is. */
	for (cp = 0x20; cp <= 0x10ffff; cp++) {
		if (cp == '"' || cp == '\\' || (cp >= 0x7f && cp < 0xa0) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			continue;
		n = encode(cp, in);
		in[n] = '\0';
		got = escaped((char *)in);
		if (strlen(got) != n || memcmp(got, in, n))
			bad++;
	}
	CHECK(!bad, "%d code points not written as themselves", bad);
	/* C1 controls as \\uXXXX: a terminal in UTF-8 acts on U+009B (CSI). */
	for (cp = 0x80, bad = 0; cp < 0xa0; cp++) {
		char u[8];

		n = encode(cp, in);
		in[n] = '\0';
		snprintf(u, sizeof(u), "\\u%04x", cp);
		bad += strcmp(escaped((char *)in), u) != 0;
	}
	CHECK(!bad, "%d C1 controls not escaped", bad);
	/* Controls as \uXXXX (or their short forms); quote and backslash escaped. */
	for (b = 1; b < 0x20; b++) {
		in[0] = b;
		in[1] = '\0';
		got = escaped((char *)in);
		if (b == '\n' || b == '\t' || b == '\r')
			snprintf((char *)want, sizeof(want), "\\%c", b == '\n' ? 'n' : b == '\t' ? 't' : 'r');
		else
			snprintf((char *)want, sizeof(want), "\\u%04x", b);
		CHECK(!strcmp(got, (char *)want), "byte %#x -> '%s'", b, got);
	}
	CHECK(!strcmp(escaped("\x7f"), "\\u007f"), "DEL -> '%s'", escaped("\x7f"));
	CHECK(!strcmp(escaped("a\"b\\c"), "a\\\"b\\\\c"), "quote, backslash -> '%s'",
	      escaped("a\"b\\c"));
	/* Bytes that are not UTF-8, and encoded surrogates: one \udcXX each. */
	for (b = 0x80; b < 0x100; b++) {
		in[0] = 'x';
		in[1] = b;
		in[2] = 'y';
		in[3] = '\0';
		got = escaped((char *)in);
		snprintf((char *)want, sizeof(want), "x\\udc%02xy", b);
		CHECK(!strcmp(got, (char *)want), "x %#x y -> '%s'", b, got);
	}
	CHECK(!strcmp(escaped("\xed\xb3\xbf"), "\\udced\\udcb3\\udcbf"),
	      "encoded surrogate -> '%s'", escaped("\xed\xb3\xbf"));
}

static void test_json_numbers(void)
{
	static const double exact[] = { 0, 1, 400, 84.5, 1e15, 123456789012345.0 };
	char buf[512];
	unsigned int seed = 1;
	struct json j;
	FILE *f;
	size_t i;
	int bad = 0;

	/* Whole numbers below 1e16 print as digits; others round-trip. */
	for (i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
		f = fmemopen(buf, sizeof(buf), "w");
		json__init(&j, f);
		json__double(&j, exact[i]);
		fclose(f);
		CHECK(!strchr(buf, 'e') && strtod(buf, NULL) == exact[i], "%.17g -> '%s'",
		      exact[i], buf);
	}
	for (i = 0; i < 100000; i++) {
		double v = (double)rand_r(&seed) / rand_r(&seed) * pow(10, rand_r(&seed) % 40 - 20);

		f = fmemopen(buf, sizeof(buf), "w");
		json__init(&j, f);
		json__double(&j, v);
		fclose(f);
		if (strtod(buf, NULL) != v)
			bad++;
	}
	CHECK(!bad, "%d of 100000 doubles did not read back", bad);
	f = fmemopen(buf, sizeof(buf), "w");
	json__init(&j, f);
	json__begin_array(&j);
	json__double(&j, NAN);
	json__s128(&j, -((__int128)1 << 100));
	json__u128(&j, 0);
	json__int(&j, -5);
	json__begin_object(&j);
	json__name(&j, "k");
	json__bool(&j, true);
	json__name(&j, "s");
	json__string(&j, NULL);
	json__end_object(&j);
	json__end_array(&j);
	fclose(f);
	CHECK(!strcmp(buf, "[null,-1267650600228229401496703205376,0,-5,{\"k\":true,\"s\":null}]\n"),
	      "document '%s'", buf);
}

/*
 * The one hash table against a plain array: random adds and removes of
 * keys that collide on purpose (few distinct hashes), every key found
 * while stored and not after, the count right, across growth.
 */
static void test_htab(void)
{
	enum { N = 20000, KEYS = 4096 };
	static uint8_t in[KEYS + 1];
	struct htab t;
	uint64_t seed = 12345, v, k, h;
	size_t cur, count = 0, i;
	int bad = 0, found;

	CHECK(htab__init(&t, 16) == 0, "init");
	for (i = 0; i < N; i++) {
		seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
		k = 1 + (seed >> 33) % KEYS;
		h = k % 97;	/* many keys per hash: long probe runs */
		if (in[k]) {
			bad += htab__remove(&t, h, k) != 0;
			in[k] = 0;
			count--;
		} else {
			bad += htab__add(&t, h, k) != 0;
			in[k] = 1;
			count++;
		}
		if (i % 1000)
			continue;
		for (k = 1; k <= KEYS; k++) {
			found = 0;
			cur = 0;
			while ((v = htab__next(&t, k % 97, &cur)))
				found |= v == k;
			bad += found != in[k];
		}
	}
	CHECK(!bad && t.count == count, "%d wrong, count %zu of %zu", bad, t.count, count);
	CHECK(htab__remove(&t, 5, KEYS + 7) == -ENOENT, "absent key");
	htab__free(&t);
}

int main(void)
{
	test_utf8();
	test_sanitize();
	test_parse_num();
	test_json_strings();
	test_json_numbers();
	test_htab();
	return unit_done("util");
}
