// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "hash.h"
#include "util.h"

bool pytm_verbose;
static __thread bool quiet;
static __thread char last[ERROR_MAX];

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
	if (quiet)
		error__vset(0, NULL, fmt, ap);
	else
		vmsg(fmt, ap);
	va_end(ap);
}

int error__vset(int err, const char *who, const char *fmt, va_list ap)
{
	char buf[ERROR_MAX];

	/* Through a copy: the arguments may hold error__last() itself. */
	vsnprintf(buf, sizeof(buf), fmt, ap);
	memcpy(last, buf, sizeof(last));
	if (who)
		vlog("%s: %s", who, last);
	else
		vlog("%s", last);
	return err;
}

int error__set(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err = error__vset(err, NULL, fmt, ap);
	va_end(ap);
	return err;
}

const char *error__last(void)
{
	return last;
}

void error__clear(void)
{
	last[0] = '\0';
}

void error__quiet(bool on)
{
	quiet = on;
	if (on)
		last[0] = '\0';
}

void error__save(struct error_saved *e)
{
	memcpy(e->msg, last, sizeof(e->msg));
}

void error__restore(const struct error_saved *e)
{
	memcpy(last, e->msg, sizeof(last));
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

size_t utf8_seq(const unsigned char *s, size_t len, uint32_t *cpp)
{
	unsigned char c = s[0];
	size_t n, i;
	uint32_t cp;

	if (c < 0x80) {
		n = 1;
		cp = c;
		goto out;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2;
		cp = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3;
		cp = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	/* Overlong forms and code points past U+10FFFF. */
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
out:
	if (cpp)
		*cpp = cp;
	return n;
}

void str_sanitize(char *dst, size_t len, const char *src, size_t srclen)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t i = 0, o = 0, n;
	uint32_t cp;

	if (!len)
		return;
	while (i < srclen && s[i]) {
		n = utf8_seq(s + i, srclen - i, &cp);
		/* Controls: C0, DEL, and C1 (U+0080-U+009F, CSI among them). */
		if (n && utf8_is_control(cp))
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

int parse_num(const char *s, long long min, long long max, long long *out)
{
	char *end;
	long long v;

	if (!s || *s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int parse_size(const char *s, long long min, long long max, long long *out)
{
	char digits[24];
	size_t n = s ? strlen(s) : 0;
	int shift = 0;
	long long v;

	if (n && strchr("kKMG", s[n - 1])) {
		shift = s[n - 1] == 'M' ? 20 : s[n - 1] == 'G' ? 30 : 10;
		n--;
	}
	if (!n || n >= sizeof(digits))
		return -EINVAL;
	memcpy(digits, s, n);
	digits[n] = '\0';
	if (parse_num(digits, 0, LLONG_MAX >> shift, &v))
		return -EINVAL;
	v <<= shift;
	if (v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

void run_parallel(void *(*fn)(void *), void *const *items, int n)
{
	pthread_t *th = n > 0 ? calloc(n, sizeof(*th)) : NULL;
	bool *started = n > 0 ? calloc(n, sizeof(*started)) : NULL;
	int i;

	for (i = 0; i < n; i++) {
		if (th && started && !pthread_create(&th[i], NULL, fn, items[i]))
			started[i] = true;
		else
			fn(items[i]);
	}
	for (i = 0; th && started && i < n; i++)
		if (started[i])
			pthread_join(th[i], NULL);
	free(th);
	free(started);
}

double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

double real_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void *array__push(void **v, size_t *n, size_t *cap, size_t elem)
{
	size_t c;
	void *p;

	if (*n == *cap) {
		c = *cap ? *cap * 2 : 256;
		if (c > SIZE_MAX / elem)
			return NULL;
		p = realloc(*v, c * elem);
		if (!p)
			return NULL;
		*v = p;
		*cap = c;
	}
	p = (char *)*v + (*n)++ * elem;
	memset(p, 0, elem);
	return p;
}

int atomic_file__open(struct atomic_file *af, const char *path)
{
	size_t len = strlen(path) + sizeof(".0123456789abcdef");
	int fd = -1, tries, err;

	memset(af, 0, sizeof(*af));
	af->path = path;
	af->tmp = malloc(len);
	if (!af->tmp)
		return -ENOMEM;
	/*
	 * Same directory, so that rename() is atomic. O_EXCL rather than
	 * mkstemp(), whose files are 0600: the umask decides, as for any
	 * file the user asks for.
	 */
	for (tries = 0; fd < 0 && tries < 16; tries++) {
		snprintf(af->tmp, len, "%s.%016llx", path, (unsigned long long)hash__seed());
		fd = open(af->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
		if (fd < 0 && errno != EEXIST)
			break;
	}
	if (fd < 0) {
		err = -errno;
		free(af->tmp);
		af->tmp = NULL;
		return err;
	}
	af->f = fdopen(fd, "wb");
	if (!af->f) {
		err = -errno;
		close(fd);
		atomic_file__abort(af);
		return err;
	}
	return 0;
}

int atomic_file__commit(struct atomic_file *af)
{
	int err = 0;

	if (fflush(af->f) || ferror(af->f) || fsync(fileno(af->f)))
		err = errno ? -errno : -EIO;
	if (fclose(af->f) && !err)
		err = -errno;
	af->f = NULL;
	if (!err && rename(af->tmp, af->path))
		err = -errno;
	if (err) {
		atomic_file__abort(af);
		return err;
	}
	free(af->tmp);
	af->tmp = NULL;
	return 0;
}

void atomic_file__abort(struct atomic_file *af)
{
	if (af->f)
		fclose(af->f);
	af->f = NULL;
	if (af->tmp)
		unlink(af->tmp);
	free(af->tmp);
	af->tmp = NULL;
}
