// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * utf8_seq against an independent encoder: every code point's encoding is
 * accepted with its value, and every other 1-3 byte prefix (plus each
 * 4-byte lead with every continuation shape) is refused. Then
 * str_sanitize: what it escapes and where it cuts.
 */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
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

int main(void)
{
	test_utf8();
	test_sanitize();
	return unit_done("util");
}
