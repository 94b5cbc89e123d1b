// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include "hash.h"

uint64_t hash__bytes(uint64_t seed, const void *p, size_t len)
{
	const unsigned char *s = p;
	uint64_t h = hash__mix64(seed ^ (len * 0x9e3779b97f4a7c15ULL));
	uint64_t w;

	while (len >= 8) {
		memcpy(&w, s, 8);
		h = hash__mix64(h ^ w) + 0x9e3779b97f4a7c15ULL;
		s += 8;
		len -= 8;
	}
	w = 0;
	memcpy(&w, s, len);
	return hash__mix64(h ^ w ^ 0x5bd1e995);
}

uint64_t hash__str(uint64_t seed, const char *s)
{
	return hash__bytes(seed, s, strlen(s));
}

uint64_t hash__seed(void)
{
	uint64_t seed;
	struct timespec ts;

	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == sizeof(seed))
		return seed;
	/* No entropy yet (early boot): still differs per process and run. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return hash__mix64((uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^
			   (uint64_t)(uintptr_t)&seed);
}
