// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The recorder (page/recorder.c, page/ring.c) inside a real interpreter,
 * without injection: a shared library that tests/workloads/rec_check.py
 * loads with ctypes. It hooks the obj domain (PyMem_SetAllocator, over
 * whatever was there: tracemalloc's hook when it runs) and, while
 * enabled, records each event into a ring as the page will, the
 * allocations with the thread's frames walked into their slot: the
 * walk's offsets are pytm-bpf's own for this version (the generated
 * table, or _Py_DebugOffsets on 3.13+). The thread state is found the
 * recorder's way (pytm_rec_tstate: the GIL holder until 3.11, the
 * thread-local from 3.12) and checked against
 * PyGILState_GetThisThreadState() at every event. The test then drains
 * the ring as the tracer will.
 * No Python headers: the few declarations below are the stable C API's.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sys/uio.h>
#include <unistd.h>
#include <stdint.h>
#include <string.h>
#include "pyoffsets.h"
#include "recorder.h"
#include "ring.h"

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

#define SLOTS	65536
#define FRAMES	32
#define SLOT	PYTM_REC_SLOT_SIZE(FRAMES)

/* The ring the hook writes, and what was read from it (rec_drain). */
static struct pytm_ring_hdr ring = { .slots = SLOTS, .slot_size = SLOT };
static uint8_t slots[SLOTS * SLOT];

struct record {
	uint64_t clock;
	struct pytm_rec_event ev;
	struct pytm_rec_frame frames[FRAMES];
};

static struct record records[SLOTS];
/* Where the recorder finds the thread state (pytm_rec_tstate). */
static uint64_t runtime;
static int64_t tls;
static unsigned int tstate_wrong, tstate_none;
static unsigned int nrecords;
static struct pytm_offsets off;
static uint32_t max_frames, max_total;
static PyMemAllocatorEx orig;
static volatile int enabled;

static void record(int kind, void *p, void *old, size_t size)
{
	struct pytm_rec_event ev = {
		.kind = kind, .domain = PYMEM_DOMAIN_OBJ, .ptr = (uint64_t)(uintptr_t)p,
		.size = size, .old = (uint64_t)(uintptr_t)old,
	};
	uint64_t clock, ts, want;

	if (!p || !enabled)
		return;
	/* The recorder's own way (obj calls hold the GIL), checked against the API's. */
	ts = pytm_rec_tstate(&off, runtime, tls, 1);
	want = (uint64_t)(uintptr_t)PyGILState_GetThisThreadState();
	if (!ts)
		tstate_none++;
	else if (ts != want)
		tstate_wrong++;
	pytm_rec_record(&ring, slots, &off, max_frames, max_total, ts ? ts : want, &ev, &clock);
}

static void *hook_malloc(void *ctx, size_t size)
{
	void *p = orig.malloc(orig.ctx, size);

	record(PYTM_REC_ALLOC, p, NULL, size);
	return p;
}

static void *hook_calloc(void *ctx, size_t nelem, size_t elsize)
{
	void *p = orig.calloc(orig.ctx, nelem, elsize);

	record(PYTM_REC_ALLOC, p, NULL, nelem * elsize);
	return p;
}

static void *hook_realloc(void *ctx, void *ptr, size_t size)
{
	void *p = orig.realloc(orig.ctx, ptr, size);

	record(PYTM_REC_REALLOC, p, ptr, size);
	return p;
}

/* As the page does: the free's event before the block can be reused. */
static void hook_free(void *ctx, void *ptr)
{
	record(PYTM_REC_FREE, ptr, NULL, 0);
	orig.free(orig.ctx, ptr);
}

/*
 * 3.12+: where _Py_tss_tstate is from the thread pointer, found as the
 * tracer will find it from outside: the one word below this thread's
 * thread pointer (its static TLS, 64 KiB at most) that holds its thread
 * state. 0 if not exactly one does.
 */
static int64_t find_tls(void)
{
	uint64_t tp = (uint64_t)pthread_self(), want, page[512];	/* glibc x86-64: the TCB */
	int64_t found = 0, base;
	int n = 0, i;

	want = (uint64_t)(uintptr_t)PyGILState_GetThisThreadState();
	/* Page by page downwards, read as from outside: what lies below may be unmapped. */
	for (base = (int64_t)(tp & ~4095ULL); want && base > (int64_t)tp - 65536; base -= 4096) {
		struct iovec local = { page, sizeof(page) };
		struct iovec remote = { (void *)(uintptr_t)base, sizeof(page) };

		if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != sizeof(page))
			break;
		for (i = 0; i < 512; i++) {
			if ((uint64_t)base + 8 * i >= tp || page[i] != want)
				continue;
			found = base + 8 * i - (int64_t)tp;
			n++;
		}
	}
	return n == 1 ? found : 0;
}

/* The offset this thread found for itself (0: not exactly one place). */
long long rec_tls_offset(void)
{
	return (long long)find_tls();
}

/* How the recorder found thread states: "tls", "gil" or "none"; and how often it was wrong. */
const char *rec_tstate_way(void)
{
	return tls ? "tls" : off.runtime_tstate_current != PYTM_OFF_NONE ? "gil" : "none";
}

unsigned int rec_tstate_wrong(void)
{
	return tstate_wrong + tstate_none;
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
	void *rt = dlsym(RTLD_DEFAULT, "_PyRuntime");

	if (!rt)
		return -1;
	runtime = (uint64_t)(uintptr_t)rt;
	if (hexversion >= 0x030d0000) {
		if (pyoffsets__from_debug(rt, 4096, &off))
			return -1;
	} else {
		o = pyoffsets__lookup(hexversion);
		if (!o)
			return -1;
		off = *o;
	}
	if (hexversion >= 0x030c0000)
		tls = find_tls();
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

/* Events the ring had no room for. */
unsigned int rec_dropped(void)
{
	return (unsigned int)ring.full;
}

/* lasti of the offsets' kind: 1 bytes (3.8-3.9), else code units. */
int rec_lasti_kind(void)
{
	return off.lasti_kind;
}

/*
 * Read what the ring holds into the records (the tracer's side). Returns
 * the events read, or -1 if their clocks are not increasing (one thread
 * at a time allocates here: the GIL), or the ring was left unread.
 */
int rec_drain(void)
{
	const struct pytm_ring_slot *s;
	int n = 0;

	while ((s = pytm_ring_peek(&ring, slots))) {
		struct record *r = &records[nrecords % SLOTS];

		r->clock = s->clock;
		memcpy(&r->ev, s->data, SLOT - sizeof(*s));
		pytm_ring_release(&ring);
		if (nrecords && r->clock <= records[(nrecords - 1) % SLOTS].clock)
			return -1;
		nrecords++;
		n++;
	}
	return ring.head == ring.tail ? n : -1;
}

/*
 * The latest allocation event of block PTR, if no free of it followed:
 * its frames (code, lasti) into CODES and LASTI (room for FRAMES), its
 * count in *TOTAL. Returns the frames kept, -1 if PTR was not recorded,
 * -2 if it was freed after.
 */
int rec_find(uint64_t ptr, uint64_t *codes, int32_t *lasti, uint32_t *total)
{
	unsigned int i, k, first = nrecords > SLOTS ? nrecords - SLOTS : 0;
	const struct record *r;

	for (i = nrecords; i-- > first;) {
		r = &records[i % SLOTS];
		if (r->ev.ptr != ptr)
			continue;
		if (r->ev.kind == PYTM_REC_FREE)
			return -2;
		for (k = 0; k < r->ev.nframe; k++) {
			codes[k] = r->ev.frames[k].code;
			lasti[k] = r->ev.frames[k].lasti;
		}
		*total = r->ev.total;
		return r->ev.nframe;
	}
	return -1;
}
