// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "util.h"

bool pytm_verbose;
bool pytm_quiet;
char pytm_last_warning[512];

static void vmsg(const char *fmt, va_list ap)
{
	char buf[1024];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	fprintf(stderr, "pytm-bpf: %s\n", buf);
}

void warn(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (pytm_quiet)
		vsnprintf(pytm_last_warning, sizeof(pytm_last_warning), fmt, ap);
	else
		vmsg(fmt, ap);
	va_end(ap);
}

void vlog(const char *fmt, ...)
{
	va_list ap;

	if (!pytm_verbose)
		return;
	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
}

/* Length of the valid UTF-8 sequence at S (N bytes left), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t need, i;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0 && s[0] >= 0xc2)
		need = 2;
	else if ((s[0] & 0xf0) == 0xe0)
		need = 3;
	else if ((s[0] & 0xf8) == 0xf0 && s[0] <= 0xf4)
		need = 4;
	else
		return 0;
	if (need > n)
		return 0;
	for (i = 1; i < need; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return need;
}

void str_sanitize(char *dst, size_t len, const char *src, size_t srclen)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t i = 0, o = 0, n;

	if (!len)
		return;
	while (i < srclen && s[i]) {
		n = utf8_len(s + i, srclen - i);
		if (n == 1 && (s[i] < 0x20 || s[i] == 0x7f))
			n = 0;
		if (n) {
			if (o + n >= len)
				break;
			memcpy(dst + o, s + i, n);
			o += n;
			i += n;
		} else {
			if (o + 4 >= len)
				break;
			snprintf(dst + o, 5, "\\x%02x", s[i]);
			o += 4;
			i++;
		}
	}
	dst[o] = '\0';
}
