/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The injected page's layout, shared by the code that runs in the target
 * (page/sampler.c, linked by page/page.lds) and the tracer that fills it
 * (user/attach/redirect.c). Offsets are from the start of the page's
 * mapping in the target. Plain structs only.
 *
 *   0x0000  header: magic, then the original allocator functions
 *   0x0100  code: the exact-mode trampolines (hand-emitted, 12 x 128 bytes)
 *   0x0800  code: the sampler, the recorder and the reference tracer (this directory),
 *           both in every page, so that a page's code never changes under
 *           a thread running in it, whichever mode the next tracer chooses
 *   0x4000  inject's stub page (user/attach/inject.c)
 *   0x5000  data: private anonymous. Its first page is zeroed in forked
 *           children (MADV_WIPEONFORK): struct pytm_page_ctl, what is the
 *           process's own (armed, counters). The rest a child inherits:
 *           struct pytm_page_keep (whether it stays redirected, the
 *           sampler's configuration and Poisson processes), then the
 *           sampled set's bucket counts, then its buckets, so that a child
 *           traced from its first allocation on knows which of the blocks
 *           it inherited were sampled. Untouched pages cost the target
 *           nothing; reading them maps the shared zero page.
 */
#ifndef __PYTM_PAGE_H
#define __PYTM_PAGE_H

#include <stdint.h>
#include "pytm.h"

#define PYTM_PAGE_CODE_LEN	0x4000		/* header + code: four pages */
#define PYTM_PAGE_ORIG_OFF	0x10		/* void *orig[3][4] */
#define PYTM_PAGE_CODE_OFF	0x100
#define PYTM_PAGE_SAMPLER_OFF	0x800
#define PYTM_PAGE_DATA_OFF	0x5000		/* code, then inject's stub page */

/* Offsets inside the data region. */
#define PYTM_DATA_CTL		0x0
#define PYTM_DATA_WIPED		0x1000		/* the part zeroed in children */
#define PYTM_DATA_KEEP		0x1000
#define PYTM_DATA_REC		0x1100		/* struct pytm_page_rec */
#define PYTM_DATA_COUNTS	0x2000		/* uint8_t per bucket */
#define PYTM_SET_MAX_BUCKETS	(1u << 16)
#define PYTM_SET_WAYS		8		/* slots per bucket: one cache line */
#define PYTM_DATA_SLOTS		(PYTM_DATA_COUNTS + PYTM_SET_MAX_BUCKETS)
#define PYTM_DATA_LEN		(PYTM_DATA_SLOTS + PYTM_SET_MAX_BUCKETS * PYTM_SET_WAYS * 8)
#define PYTM_CODE_KNOWN		256		/* struct pytm_page_ctl.code_known */

/*
 * The process's own part (wiped in forked children): `armed` and `set_up`
 * written by the tracer, the rest updated by the target's threads with
 * atomics. Groups that different threads write sit on their own lines.
 */
struct pytm_page_ctl {
	/* line 0: written by the tracer */
	uint8_t armed;			/* a tracer is attached: pass the sites */
	uint8_t set_up;			/* a tracer set this process's sampler up:
					 * 0 in a forked child (page/sampler.c) */
	uint8_t pad0[6];
	uint64_t pad1[7];
	/* line 1: written by the GIL holder */
	uint64_t outer;			/* the thread inside an obj/mem call of
					 * ours (its %fs:0) */
	uint64_t last_new;		/* exact: the block the obj domain's
					 * malloc/calloc returned last (see
					 * pytm_reftrace) */
	uint64_t pad2[6];
	/* line 2: counters, read by the tracer */
	uint64_t samples;		/* sampled blocks passed to the alloc site */
	uint64_t frees;			/* frees of sampled blocks passed to the free site */
	uint64_t lost_full;		/* sampled, but their bucket was full: not recorded */
	uint64_t lost_bytes;		/* estimated bytes those stood for */
	uint64_t realloc_failed;	/* a sampled block's realloc failed: trace dropped */
	/* The recorder (where samples, frees and lost_full count BPF's way). */
	uint64_t stall_tail;		/* the ring's tail when it was last full */
	uint64_t stall_count;		/* full rings in a row since, tail unmoved */
	uint64_t restamp_lost;		/* an object made in a recorded block,
					 * the ring full: not re-stamped */
	/* line 3: the recorder's waits for room in a full ring (pg_rec_wait) */
	uint64_t wait_tail;		/* the tail + 1 when a wait last gave up */
	uint64_t waits;			/* waits that found room */
	uint64_t wait_timeouts;		/* waits that gave up: BPF's way */
	uint64_t pad3[5];
	/*
	 * The recorder: code objects the set holds, direct-mapped by address
	 * (pg_code_known), so that a frame's usually costs one load, not a
	 * set lookup. Written by any thread, a hint checked against the set.
	 */
	uint64_t code_known[PYTM_CODE_KNOWN];
};

/*
 * What a forked child inherits, written by the tracer before it redirects
 * the tables (configuration) and by the target's threads (line 1).
 *
 * A child finds its own part wiped (not armed, not set up). Unless its
 * parent's tracer follows forks, it points the tables that still lead to
 * the page back at the originals at its first allocator call, so that it
 * pays nothing more (page/sampler.c, pg_unhook). Else it goes on as its
 * parent did, through the children's sites, which the tracer probes for
 * every process (the parent's own sites may be what the kernel made of
 * them for the parent alone), with the sampled set as it was at the fork.
 * The table addresses are the parent's, hence the child's.
 */
struct pytm_page_keep {
	/* line 0: configuration */
	uint8_t follow;			/* the tracer follows forks: stay redirected */
	uint8_t set_shift;		/* 64 - log2(buckets in use) */
	uint8_t gil_plain;		/* obj/mem calls are serialized by one GIL:
					 * their countdown needs no locked op */
	uint8_t pad0[5];
	uint64_t tables[3];		/* PyMemAllocatorEx of raw, mem, obj; 0: none */
	uint64_t rate;			/* R: mean bytes between samples; 0: exact */
	/* 3.13+: the runtime's reference tracer (page/sampler.c, pytm_reftrace) */
	uint64_t ref_slot;		/* &_PyRuntime.ref_tracer.tracer_func; 0: none */
	uint64_t ref_prev;		/* the tracer before ours, called first */
	uint16_t ob_type;		/* offsetof(PyObject, ob_type) */
	uint16_t tp_flags;		/* offsetof(PyTypeObject, tp_flags) */
	uint8_t gc_head;		/* sizeof(PyGC_Head): before a GC object */
	uint8_t pad1[3];
	/* line 1: the Poisson processes over allocated bytes */
	int64_t countdown;		/* raw domain: bytes before the next point */
	int64_t countdown_gil;		/* obj and mem domains: the same */
	uint64_t prng;			/* splitmix64 counter (fetch-add) */
	uint64_t pad2[5];
};

/*
 * The in-target recorder (exact mode without a kernel entry per event,
 * page/sampler.c): written by the tracer before it redirects the tables.
 * In the part a child inherits, but a child never records: its own part
 * is wiped (not armed), and the tracer that records does not follow forks.
 */
struct pytm_page_rec {
	uint64_t ring;			/* struct pytm_ring_hdr in the target (a
					 * shared mapping); 0: not recording */
	uint64_t slots;			/* its slots */
	uint64_t runtime;		/* &_PyRuntime */
	int64_t tls;			/* _Py_tss_tstate from the thread pointer... */
	uint32_t max_frames;		/* --frames */
	uint32_t max_total;		/* frames counted */
	uint8_t tls_ok;			/* ...once this says so: the tracer may find
					 * it after attaching, and writes it first
					 * (a write of 8 bytes may be seen torn, of
					 * one byte not) */
	uint8_t pad0[7];
	uint64_t pad[2];
	struct pytm_offsets off;	/* validated by the tracer */
};

/*
 * PyTypeObject.tp_flags bits that tell where an object's block starts
 * (page/sampler.c, pytm_reftrace), and that the tracer checks on types it
 * knows before it installs that (user/session/tracee.c).
 */
#define PYTM_TPFLAGS_PREHEADER		(3ULL << 3)	/* MANAGED_WEAKREF | MANAGED_DICT */
#define PYTM_TPFLAGS_READY		(1ULL << 12)
#define PYTM_TPFLAGS_HAVE_GC		(1ULL << 14)
#define PYTM_TPFLAGS_TUPLE_SUBCLASS	(1ULL << 26)

_Static_assert(sizeof(struct pytm_page_ctl) == 256 + 8 * PYTM_CODE_KNOWN,
	       "ctl: four cache lines, then the code objects known");
_Static_assert(PYTM_DATA_CTL + sizeof(struct pytm_page_ctl) <= PYTM_DATA_WIPED,
	       "ctl: in the part wiped in children");
_Static_assert(sizeof(struct pytm_page_keep) == 128, "keep: two cache lines");
_Static_assert(PYTM_DATA_KEEP + sizeof(struct pytm_page_keep) <= PYTM_DATA_REC &&
	       PYTM_DATA_REC + sizeof(struct pytm_page_rec) <= PYTM_DATA_COUNTS,
	       "rec: after keep, in its page");

#endif /* __PYTM_PAGE_H */
