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

/* Copy up to CAP bytes (LEN) at ADDR into DST, as region R. */
static __always_inline void cap_copy(struct pytm_cap_region *r, void *dst, __u32 cap,
				     __u64 addr, __u64 len)
{
	r->addr = addr;
	r->len = 0;
	r->pad = 0;
	if (!addr)
		return;
	if (len > cap)
		len = cap;
	if (len && !bpf_probe_read_user(dst, len, (void *)addr))
		r->len = len;
}

/* A str object at ADDR: its header and characters, up to CAP bytes. */
static __always_inline void cap_str(const struct pytm_proc *p, struct pytm_cap_region *r,
				    void *dst, __u32 cap, __u64 addr)
{
	__s64 length = 0;
	__u32 state = 0;
	__u64 head;

	if (addr) {
		bpf_probe_read_user(&length, sizeof(length), (void *)(addr + p->off.unicode_length));
		bpf_probe_read_user(&state, sizeof(state), (void *)(addr + p->off.unicode_state));
	}
	/* state: interned:2, kind:3, compact:1, ascii:1 (as the resolver reads it) */
	head = state & (1 << 6) ? p->off.unicode_ascii_size : p->off.unicode_compact_size;
	if (length < 0 || length > cap)
		length = cap;
	cap_copy(r, dst, cap, addr, head + (__u64)length * ((state >> 2) & 7));
}

static __always_inline __u32 field_end(__u32 end, __u16 off)
{
	return off != PYTM_OFF_NONE && off + 8u > end ? off + 8u : end;
}

/*
 * CE: an event of TYPE for code object CODE of process P (ID, CLOCK), with
 * a copy of what the resolver reads of it, taken while its frame runs: by
 * the time user space reads the event, the code object may be freed and
 * another one at its address (struct pytm_code_event).
 */
static __always_inline void code_copy(struct pytm_code_event *ce, const struct pytm_proc *p,
				      __u32 pid, __u32 type, __u32 id, __u64 code, __u64 clock)
{
	__u64 table, tlen = 0;
	__u32 end = 0;

	ce->ev.type = type;
	ce->ev.pid = pid;
	ce->ev.code_id = id;
	ce->ev.pad = 0;
	ce->ev.code_addr = code;
	ce->ev.clock = clock;
	end = field_end(end, p->off.object_type);
	end = field_end(end, p->off.code_filename);
	end = field_end(end, p->off.code_name);
	end = field_end(end, p->off.code_qualname);
	end = field_end(end, p->off.code_firstlineno);
	end = field_end(end, p->off.code_linetable);
	cap_copy(&ce->r[PYTM_CAP_CODE], ce->code, PYTM_CAP_CODE_LEN, code, end);
	cap_str(p, &ce->r[PYTM_CAP_FILENAME], ce->filename, PYTM_CAP_STR_LEN,
		read_ptr(code + p->off.code_filename));
	cap_str(p, &ce->r[PYTM_CAP_NAME], ce->name, PYTM_CAP_STR_LEN,
		read_ptr(code + (p->off.code_qualname != PYTM_OFF_NONE ? p->off.code_qualname :
								 p->off.code_name)));
	table = read_ptr(code + p->off.code_linetable);
	if (table)
		bpf_probe_read_user(&tlen, sizeof(tlen), (void *)(table + p->off.varobject_size));
	if ((__s64)tlen < 0 || tlen > PYTM_CAP_TABLE_LEN)
		tlen = PYTM_CAP_TABLE_LEN;
	cap_copy(&ce->r[PYTM_CAP_TABLE], ce->table, PYTM_CAP_TABLE_LEN, table,
		 p->off.bytes_sval + tlen);
}

/*
 * Id (and cached fields) of the code object at ADDR; new ones are
 * announced. FP: its fingerprint in sampled mode (else unused).
 */
static __always_inline struct code_info *code_info(struct pytm_proc *p, __u32 pid, __u64 addr,
						   __u64 fp, struct code_info *tmp)
{
	struct pytm_code_key key = { .pid = pid, .addr = addr };
	struct pytm_code_event *ce;
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
	ce = bpf_ringbuf_reserve(&events, sizeof(*ce), 0);
	if (!ce) {
		/* Forget it, so that the next sighting announces it again. */
		bpf_map_delete_elem(&codes, &key);
		count_lost(p, PYTM_LOST_RINGBUF);
		tmp->id = 0;
		return tmp;
	}
	code_copy(ce, p, pid, PYTM_EV_CODE, tmp->id, addr, 0);
	bpf_ringbuf_submit(ce, 0);
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
