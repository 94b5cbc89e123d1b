/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The Python stack of the current thread: its thread state, then its frames
 * (code object ids and instruction offsets), as tracemalloc walks them. */
#ifndef __PYTM_STACK_BPF_H__
#define __PYTM_STACK_BPF_H__

#include "maps.bpf.h"
#include "stack_hash.h"

/* State of the thread-state search, one bpf_loop() step per thread state. */
struct tstate_walk {
	struct pytm_proc *p;
	__u64 fsbase;
	__u64 interp;
	__u64 ts;
	__u64 found;
};

static long tstate_step(__u32 i, void *data)
{
	struct tstate_walk *w = data;
	struct pytm_proc *p = w->p;

	if (!w->ts) {
		/* Next interpreter. */
		if (!w->interp)
			return 1;
		w->ts = read_ptr(w->interp + p->off.interp_threads_head);
		w->interp = read_ptr(w->interp + p->off.interp_next);
		return 0;
	}
	if (read_ptr(w->ts + p->off.tstate_thread_id) == w->fsbase) {
		w->found = w->ts;
		return 1;
	}
	w->ts = read_ptr(w->ts + p->off.tstate_next);
	return 0;
}

/*
 * The current thread's PyThreadState, as PyGILState_GetThisThreadState()
 * sees it: the one whose thread_id is this thread's pthread_self(), which
 * on x86-64 is the fs base. Cached per task, re-validated on use from the
 * same read that yields the frame pointer (*FRAMEP).
 */
static __u64 find_tstate(struct pytm_proc *p, struct task_ctx *t, __u8 *buf, __u64 *framep)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct tstate_walk w = { .p = p };

	w.fsbase = BPF_CORE_READ(task, thread.fsbase);
	if (t->tstate && t->fsbase == w.fsbase &&
	    !read_head(buf, p->tstate_read, t->tstate) &&
	    buf_u64(buf, p->off.tstate_thread_id) == w.fsbase) {
		*framep = buf_u64(buf, p->off.tstate_frame);
		return t->tstate;
	}

	w.interp = read_ptr(p->runtime + p->off.runtime_interpreters_head);
	bpf_loop(4096, tstate_step, &w, 0);
	t->tstate = w.found;
	t->fsbase = w.fsbase;
	*framep = w.found ? read_ptr(w.found + p->off.tstate_frame) : 0;
	return w.found;
}

/*
 * Per CPU, direct-mapped: recently used code objects and stack ids, so that
 * the common case costs an array access instead of a hash lookup. A code
 * object's entry is valid only for the code epoch it was filled in: every
 * free of a known code object starts a new epoch.
 */
#define CODE_CACHE	512	/* 32 KiB in all: the per-CPU value limit */
#define STACK_CACHE	1024

struct code_slot {
	__u64 addr;
	__u32 pid;
	__u32 epoch;
	struct code_info ci;
};

struct caches {
	struct code_slot code[CODE_CACHE];
	__u64 stack[STACK_CACHE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct caches);
} cache SEC(".maps");

__u32 code_epoch = 0;

/*
 * What tells the code object at ADDR from another that took its address
 * later. Sampled mode sees the free of sampled blocks only, so a known
 * address may hold a new code object: it is told by these fields.
 */
static __always_inline __u64 code_fingerprint(struct pytm_proc *p, __u64 addr)
{
	__u64 filename = 0, name = 0, table = 0;
	__s32 line = 0;

	bpf_probe_read_user(&filename, sizeof(filename), (void *)(addr + p->off.code_filename));
	bpf_probe_read_user(&name, sizeof(name), (void *)(addr + p->off.code_name));
	bpf_probe_read_user(&table, sizeof(table), (void *)(addr + p->off.code_linetable));
	bpf_probe_read_user(&line, sizeof(line), (void *)(addr + p->off.code_firstlineno));
	return (filename * 0x9e3779b97f4a7c15ULL) ^ (name * 0xbf58476d1ce4e5b9ULL) ^
	       (table * 0x94d049bb133111ebULL) ^ (__u32)line;
}

/*
 * Id (and cached fields) of the code object at ADDR; new ones are
 * announced. FP: its fingerprint in sampled mode (else unused).
 */
static __always_inline struct code_info *code_info(struct pytm_proc *p, __u32 pid, __u64 addr,
						   __u64 fp, struct code_info *tmp)
{
	struct pytm_code_key key = { .pid = pid, .addr = addr };
	struct pytm_event *ev;
	struct code_info *ci;
	long err;

	ci = bpf_map_lookup_elem(&codes, &key);
	if (ci) {
		if (!p->sampled || ci->fp == fp)
			return ci;
		/* Another code object at a known address: forget the old one. */
		bpf_map_delete_elem(&codes, &key);
		__sync_fetch_and_add(&code_epoch, 1);
	} else if (p->code_parent) {
		/* Inherited: the parent's id, if it had one before the fork. */
		struct pytm_code_key pk = { .pid = p->code_parent, .addr = addr };

		ci = bpf_map_lookup_elem(&codes, &pk);
		if (ci && ci->id <= p->code_fork_id) {
			*tmp = *ci;
			if (bpf_map_update_elem(&codes, &key, tmp, BPF_NOEXIST) == -EEXIST)
				return bpf_map_lookup_elem(&codes, &key) ?: tmp;
			return tmp;
		}
	}

	tmp->id = __sync_fetch_and_add(&next_code_id, 1) + 1;
	tmp->fp = fp;
	tmp->firsttraceable = 0;
	if (p->off.code_firsttraceable != PYTM_OFF_NONE)
		bpf_probe_read_user(&tmp->firsttraceable, sizeof(tmp->firsttraceable),
				    (void *)(addr + p->off.code_firsttraceable));
	err = bpf_map_update_elem(&codes, &key, tmp, BPF_NOEXIST);
	if (err == -EEXIST) {
		ci = bpf_map_lookup_elem(&codes, &key);
		return ci ?: tmp;
	}
	if (err) {
		count_lost(p, PYTM_LOST_CODES_FULL);
		tmp->id = 0;
		return tmp;
	}
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		/* Forget it, so that the next sighting announces it again. */
		bpf_map_delete_elem(&codes, &key);
		count_lost(p, PYTM_LOST_RINGBUF);
		tmp->id = 0;
		return tmp;
	}
	ev->type = PYTM_EV_CODE;
	ev->pid = pid;
	ev->code_id = tmp->id;
	ev->pad = 0;
	ev->clock = 0;
	ev->code_addr = addr;
	bpf_ringbuf_submit(ev, 0);
	return tmp;
}

/* State of the frame walk, one bpf_loop() step per frame. */
struct frame_walk {
	struct pytm_proc *p;
	struct scratch *sc;
	struct caches *caches;
	__u64 frame;
	__u32 pid;
	__u32 n;
	__u32 total;
	__u32 limit;			/* frames to walk: total_nframe counts those */
};

/* code_info() through this CPU's cache. */
static __always_inline struct code_info *cached_code_info(struct frame_walk *w, __u64 code,
							  struct code_info *tmp)
{
	__u32 epoch = code_epoch, pid = w->pid;
	struct code_slot *slot;
	struct code_info *ci;
	__u64 fp = w->p->sampled ? code_fingerprint(w->p, code) : 0;

	slot = &w->caches->code[(code >> 4) & (CODE_CACHE - 1)];
	if (slot->addr == code && slot->pid == pid && slot->epoch == epoch &&
	    slot->ci.fp == fp)
		return &slot->ci;
	ci = code_info(w->p, pid, code, fp, tmp);
	if (ci->id) {
		slot->addr = code;
		slot->pid = pid;
		slot->epoch = epoch;
		slot->ci = *ci;
	}
	return ci;
}

static long frame_step(__u32 i, void *data)
{
	struct frame_walk *w = data;
	struct pytm_proc *p = w->p;
	__u64 frame = w->frame, code, start, instr;
	struct code_info *ci = NULL, tmp;
	__u8 *buf = w->sc->buf;
	__s32 lasti = -1, first = 0;
	__u8 owner;

	if (!frame || w->total >= w->limit)
		return 1;
	if (w->n >= p->max_frames && p->off.layout == PYTM_LAYOUT_FRAMEOBJ) {
		/* Beyond the limit only the count matters. */
		w->frame = read_ptr(frame + p->off.frame_back);
		w->total++;
		return 0;
	}
	/* One read for back, code, position and owner. */
	if (read_head(buf, p->frame_read, frame)) {
		count_lost(p, PYTM_LOST_FRAME_READ);
		return 1;
	}
	w->frame = buf_u64(buf, p->off.frame_back);
	code = buf_u64(buf, p->off.frame_code) & ~(__u64)p->off.frame_tag_bits;
	if (p->off.layout == PYTM_LAYOUT_FRAMEOBJ) {
		if (!code) {
			count_lost(p, PYTM_LOST_FRAME_READ);
			return 1;
		}
		lasti = buf_s32(buf, p->off.frame_lasti);
		ci = cached_code_info(w, code, &tmp);
	} else {
		owner = buf_u8(buf, p->off.frame_owner);
		if (owner == p->off.owner_cstack)
			return 0;	/* a shim frame of the C stack */
		if (!code) {
			count_lost(p, PYTM_LOST_FRAME_READ);
			return 1;
		}
		instr = buf_u64(buf, p->off.frame_lasti);
		start = code + p->off.code_adaptive;
		if (w->n < p->max_frames) {
			ci = cached_code_info(w, code, &tmp);
			first = ci->firsttraceable;
		} else if (owner != p->off.owner_generator &&
			   p->off.code_firsttraceable != PYTM_OFF_NONE) {
			/* Beyond the limit: read, not announced (the code object is not kept). */
			bpf_probe_read_user(&first, sizeof(first),
					    (void *)(code + p->off.code_firsttraceable));
		}
		/* Incomplete: the frame has not started its code yet. */
		if (owner != p->off.owner_generator &&
		    (__s64)instr < (__s64)(start + 2 * (__s64)first))
			return 0;
		if (!ci) {
			/* Beyond the limit only the count matters, of what tracemalloc counts. */
			w->total++;
			return 0;
		}
		/* In code units; arithmetic shift keeps -1 for "before the first". */
		lasti = (__s32)(((__s64)instr - (__s64)start) >> 1);
	}
	w->sc->s.frames[w->n & (PYTM_MAX_FRAMES - 1)] = PYTM_FRAME(ci->id, lasti);
	w->n++;
	w->total++;
	return 0;
}

/*
 * Walk the thread's frames into the scratch stack, most recent first,
 * skipping what tracemalloc skips (incomplete frames, C-stack shims), and
 * intern it. Returns the stack id, 0 for no Python frame.
 */
static __u64 walk_stack(struct pytm_proc *p, struct task_ctx *t, __u32 pid)
{
	struct frame_walk w = { .p = p, .pid = pid };
	__u32 zero = 0;
	__u64 h, frame = 0, *slot;
	long err;

	w.sc = bpf_map_lookup_elem(&scratch, &zero);
	w.caches = bpf_map_lookup_elem(&cache, &zero);
	if (!w.sc || !w.caches)
		return 0;
	if (!find_tstate(p, t, w.sc->buf, &frame)) {
		count_lost(p, PYTM_LOST_NO_TSTATE);
		return 0;
	}
	if (p->off.layout == PYTM_LAYOUT_CFRAME && frame)
		frame = read_ptr(frame + p->off.cframe_current_frame);
	w.frame = frame;
	w.limit = p->max_total;
	bpf_loop(PYTM_MAX_FRAMES + 1024, frame_step, &w, 0);
	if (!w.n)
		return 0;
	w.sc->s.nframe = w.n;
	/* The walk stopped at its limit with frames left: count them or not. */
	w.sc->s.total_nframe = w.total;

	h = pytm_stack_hash(w.sc->s.frames, w.n, w.total);
	/* Most stacks are known: this CPU's cache, then a lockless lookup. */
	slot = &w.caches->stack[h & (STACK_CACHE - 1)];
	if (*slot == h)
		return h;
	if (!bpf_map_lookup_elem(&stacks, &h)) {
		err = bpf_map_update_elem(&stacks, &h, &w.sc->s, BPF_NOEXIST);
		if (err && err != -EEXIST) {
			count_lost(p, PYTM_LOST_STACKS_FULL);
			return 0;
		}
	}
	*slot = h;
	return h;
}

#endif /* __PYTM_STACK_BPF_H__ */
