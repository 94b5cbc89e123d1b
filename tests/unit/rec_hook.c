// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The recorder's stack walk (page/recorder.c) inside a real interpreter,
 * without injection: a shared library that tests/workloads/rec_check.py
 * loads with ctypes. It hooks the obj domain (PyMem_SetAllocator, over
 * whatever was there: tracemalloc's hook when it runs) and, while
 * enabled, walks the allocating thread's frames at each allocation, as
 * the page will: the walk's offsets are pytm-bpf's own for this version
 * (the generated table, or _Py_DebugOffsets on 3.13+). The thread state
 * comes from PyGILState_GetThisThreadState(), as BPF finds it.
 * No Python headers: the few declarations below are the stable C API's.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include "pyoffsets.h"
#include "recorder.h"

typedef struct {
	void *ctx;
	void *(*malloc)(void *ctx, size_t size);
	void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
	void *(*realloc)(void *ctx, void *ptr, size_t new_size);
	void (*free)(void *ctx, void *ptr);
} PyMemAllocatorEx;

#define PYMEM_DOMAIN_OBJ 2
void PyMem_GetAllocator(int domain, PyMemAllocatorEx *allocator);
void PyMem_SetAllocator(int domain, PyMemAllocatorEx *allocator);
void *PyGILState_GetThisThreadState(void);

#define RECORDS	32768
#define FRAMES	32

struct record {
	uint64_t ptr;
	uint32_t n, total;
	struct pytm_rec_frame frames[FRAMES];
};

static struct record records[RECORDS];
static unsigned int nrecords, dropped;
static struct pytm_offsets off;
static uint32_t max_frames, max_total;
static PyMemAllocatorEx orig;
static volatile int enabled;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void record(void *p)
{
	struct pytm_rec_frame frames[FRAMES];
	uint32_t n, total;
	struct record *r;

	if (!p || !enabled)
		return;
	n = pytm_rec_walk(&off, max_frames, max_total,
			  (uint64_t)(uintptr_t)PyGILState_GetThisThreadState(), frames, &total);
	pthread_mutex_lock(&lock);
	if (nrecords < RECORDS) {
		r = &records[nrecords++];
		r->ptr = (uint64_t)(uintptr_t)p;
		r->n = n;
		r->total = total;
		memcpy(r->frames, frames, n * sizeof(frames[0]));
	} else {
		dropped++;
	}
	pthread_mutex_unlock(&lock);
}

static void *hook_malloc(void *ctx, size_t size)
{
	void *p = orig.malloc(orig.ctx, size);

	record(p);
	return p;
}

static void *hook_calloc(void *ctx, size_t nelem, size_t elsize)
{
	void *p = orig.calloc(orig.ctx, nelem, elsize);

	record(p);
	return p;
}

static void *hook_realloc(void *ctx, void *ptr, size_t size)
{
	void *p = orig.realloc(orig.ctx, ptr, size);

	record(p);
	return p;
}

static void hook_free(void *ctx, void *ptr)
{
	orig.free(orig.ctx, ptr);
}

/*
 * Offsets for HEXVERSION (sys.hexversion), hook the obj domain. Frames
 * kept and counted: MAXF (at most 32 here), MAXT. 0, or -1 when the
 * version has no offsets.
 */
int rec_setup(unsigned int hexversion, unsigned int maxf, unsigned int maxt)
{
	static PyMemAllocatorEx hook = { NULL, hook_malloc, hook_calloc, hook_realloc, hook_free };
	const struct pytm_offsets *o;
	void *runtime;

	if (hexversion >= 0x030d0000) {
		runtime = dlsym(RTLD_DEFAULT, "_PyRuntime");
		if (!runtime || pyoffsets__from_debug(runtime, 4096, &off))
			return -1;
	} else {
		o = pyoffsets__lookup(hexversion);
		if (!o)
			return -1;
		off = *o;
	}
	max_frames = maxf > FRAMES ? FRAMES : maxf;
	max_total = maxt;
	PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &orig);
	PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &hook);
	return 0;
}

void rec_enable(int on)
{
	enabled = on;
}

unsigned int rec_dropped(void)
{
	return dropped;
}

/* lasti of the offsets' kind: 1 bytes (3.8-3.9), else code units. */
int rec_lasti_kind(void)
{
	return off.lasti_kind;
}

/*
 * The latest record of block PTR: its frames (code, lasti) into CODES and
 * LASTI (room for FRAMES), its count in *TOTAL. Returns the frames kept,
 * or -1 if PTR was not recorded.
 */
int rec_find(uint64_t ptr, uint64_t *codes, int32_t *lasti, uint32_t *total)
{
	unsigned int i, k;

	for (i = nrecords; i-- > 0;) {
		if (records[i].ptr != ptr)
			continue;
		for (k = 0; k < records[i].n; k++) {
			codes[k] = records[i].frames[k].code;
			lasti[k] = records[i].frames[k].lasti;
		}
		*total = records[i].total;
		return (int)records[i].n;
	}
	return -1;
}
