// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * pytm-bpf: CPython's allocator events, with the Python stack of the thread
 * that made them, recorded the way tracemalloc records them.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "pytm.h"

#define EEXIST 17

/*
 * The frame limits (--frames, and how deep total_nframe counts) live in
 * struct pytm_proc, not in rodata: a limit the verifier knows as a constant
 * makes it track the walk's counters precisely, and then it must explore
 * every iteration of the bpf_loop() callback apart.
 */

/* Traced processes: pid -> configuration and counters. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct pytm_proc);
} procs SEC(".maps");

/*
 * Live blocks, one map per process (pid -> its own hash map, made by user
 * space with --max-blocks entries): a process that fills its map loses only
 * its own events, and an exit frees its map at once.
 */
struct blocks_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* hash inner maps may differ in size */
	__uint(max_entries, 1);
	/* Sizes, not types: libbpf 1.1 cannot size an inner map's BTF key. */
	__uint(key_size, sizeof(struct pytm_block_key));
	__uint(value_size, sizeof(struct pytm_block));
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__array(values, struct blocks_map);
} blocks SEC(".maps");

/* Interned stacks: hash of the frames -> frames. Value size follows --frames. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, __u64);
	__type(value, struct pytm_stack);
} stacks SEC(".maps");

/* What the walk needs of a code object, read once when first seen. */
struct code_info {
	__u32 id;
	__s32 firsttraceable;		/* _co_firsttraceable, 3.11+ */
};

/* Code objects seen: (pid, address) -> id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 18);
	__type(key, struct pytm_code_key);
	__type(value, struct code_info);
} codes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

/* --bench-empty: the probe sites do nothing (measures the bare probe cost). */
const volatile bool empty_probe = false;

#define CHUNK 256	/* bytes of a struct read at once (power of two) */

/*
 * Per CPU: where a stack is built before it is hashed and interned, and
 * where the head of a thread state or frame is read in one go, so that
 * one bpf_probe_read_user() serves all the fields the walk needs.
 */
struct scratch {
	struct pytm_stack s;
	__u8 buf[CHUNK + 8];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/*
 * One allocator call in progress on a thread, from entry to return, with
 * the stack pointer at its entry (pointing at its return address): a
 * return matches its own entry, and an entry whose return went unseen (a
 * call that began while the probes were being attached) is recognized as
 * ended as soon as the thread runs at or above its stack level again.
 */
struct call {
	__u64 ptr;
	__u64 size;
	__u64 sp;
};

/* Per thread: the cached thread state and the calls in progress. */
struct task_ctx {
	__u64 tstate;
	__u64 fsbase;
	__u32 depth;
	__u32 pad;
	struct call calls[PYTM_STASH_DEPTH];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} tasks SEC(".maps");

__u32 next_code_id = 0;

static __always_inline __u64 read_ptr(__u64 addr)
{
	__u64 v = 0;

	if (bpf_probe_read_user(&v, sizeof(v), (void *)addr))
		return 0;
	return v;
}

/* Fields of a struct head read into BUF: offsets are bounded for the verifier. */
static __always_inline __u64 buf_u64(const __u8 *buf, __u32 off)
{
	return *(const __u64 *)(buf + (off & (CHUNK - 8)));
}

static __always_inline __s32 buf_s32(const __u8 *buf, __u32 off)
{
	return *(const __s32 *)(buf + (off & (CHUNK - 4)));
}

static __always_inline __u8 buf_u8(const __u8 *buf, __u32 off)
{
	return buf[off & (CHUNK - 1)];
}

/* Read the first LEN (<= CHUNK) bytes of the struct at ADDR into BUF. */
static __always_inline long read_head(__u8 *buf, __u32 len, __u64 addr)
{
	if (len > CHUNK)
		len = CHUNK;
	return bpf_probe_read_user(buf, len, (void *)addr);
}

static __always_inline void count_lost(struct pytm_proc *p, int what)
{
	if (what >= 0 && what < PYTM_LOST_MAX)
		__sync_fetch_and_add(&p->lost[what], 1);
}

static __always_inline void account(struct pytm_proc *p, __s64 delta)
{
	__s64 cur = __sync_fetch_and_add(&p->current, delta) + delta;

	/* Racy between CPUs, like any peak; off by at most one event. */
	if (cur > p->peak)
		p->peak = cur;
}

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
#define CODE_CACHE	1024
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

/* Id (and cached fields) of the code object at ADDR; new ones are announced. */
static __always_inline struct code_info *code_info(struct pytm_proc *p, __u32 pid, __u64 addr,
						   struct code_info *tmp)
{
	struct pytm_code_key key = { .pid = pid, .addr = addr };
	struct pytm_event *ev;
	struct code_info *ci;
	long err;

	ci = bpf_map_lookup_elem(&codes, &key);
	if (ci)
		return ci;

	tmp->id = __sync_fetch_and_add(&next_code_id, 1) + 1;
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

	slot = &w->caches->code[(code >> 4) & (CODE_CACHE - 1)];
	if (slot->addr == code && slot->pid == pid && slot->epoch == epoch)
		return &slot->ci;
	ci = code_info(w->p, pid, code, tmp);
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
	struct code_info *ci, tmp;
	__u8 *buf = w->sc->buf;
	__s32 lasti = -1;
	__u8 owner;

	if (!frame || w->total >= w->limit)
		return 1;
	if (w->n >= p->max_frames) {
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
		ci = cached_code_info(w, code, &tmp);
		/* Incomplete: the frame has not started its code yet. */
		if (owner != p->off.owner_generator &&
		    (__s64)instr < (__s64)(start + 2 * (__s64)ci->firsttraceable))
			return 0;
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
	__u32 zero = 0, i;
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

	/*
	 * A multiply-xorshift mix per frame (every input bit reaches every
	 * output bit), the counts folded in last: 64 bits, so that distinct
	 * stacks of one run collide with negligible probability.
	 */
	h = 0x9e3779b97f4a7c15ULL;
	for (i = 0; i < PYTM_MAX_FRAMES; i++) {
		if (i >= w.n)
			break;
		h ^= w.sc->s.frames[i];
		h *= 0xbf58476d1ce4e5b9ULL;
		h ^= h >> 31;
	}
	h ^= (__u64)w.total << 32 | w.n;
	h *= 0x94d049bb133111ebULL;
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 32;
	if (!h)
		h = 1;
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

static __always_inline void remove_trace(struct pytm_proc *p, __u32 pid,
					 __u32 domain, __u64 addr)
{
	struct pytm_block_key key = { .pid = pid, .domain = domain, .addr = addr };
	struct pytm_block *b;
	void *map;
	__s64 size;

	map = bpf_map_lookup_elem(&blocks, &pid);
	if (!map)
		return;
	b = bpf_map_lookup_elem(map, &key);
	if (!b)
		return;
	size = b->size;
	if (bpf_map_delete_elem(map, &key) == 0)
		account(p, -size);
}

static void add_trace(struct pytm_proc *p, struct task_ctx *t,
		      struct pytm_block_key *key, __u64 size)
{
	struct pytm_block nb, *b;
	void *map;
	__s64 old;
	long err;

	nb.size = size;
	nb.stack_id = walk_stack(p, t, key->pid);

	map = bpf_map_lookup_elem(&blocks, &key->pid);
	if (!map)
		return;
	/* Usually a new address: one insert, no lookup before it. */
	err = bpf_map_update_elem(map, key, &nb, BPF_NOEXIST);
	if (!err) {
		account(p, size);
		return;
	}
	b = err == -EEXIST ? bpf_map_lookup_elem(map, key) : NULL;
	if (!b) {
		count_lost(p, PYTM_LOST_BLOCKS_FULL);
		return;
	}
	/* Already tracked (tracemalloc_add_trace does the same). */
	old = b->size;
	b->size = nb.size;
	b->stack_id = nb.stack_id;
	account(p, (__s64)size - old);
}

static __always_inline struct task_ctx *task_ctx(void)
{
	return bpf_task_storage_get(&tasks, bpf_get_current_task_btf(), 0,
				    BPF_LOCAL_STORAGE_GET_F_CREATE);
}

static __always_inline struct pytm_proc *this_proc(__u32 *pid)
{
	*pid = bpf_get_current_pid_tgid() >> 32;
	return bpf_map_lookup_elem(&procs, pid);
}

/*
 * The stash is indexed with constants only (unrolled loops): the verifier
 * cannot bound an index read back from map memory.
 */

/* Drop calls at stack level SP or below: they have returned unseen. */
static __always_inline __u32 stash_heal(struct task_ctx *t, __u64 sp)
{
	__u32 d = t->depth;
	int i;

	if (d > PYTM_STASH_DEPTH)
		d = PYTM_STASH_DEPTH;
#pragma unroll
	for (i = PYTM_STASH_DEPTH - 1; i >= 0; i--) {
		if ((__u32)i >= d)
			continue;
		if (t->calls[i].sp > sp)
			break;
		d = i;
	}
	t->depth = d;
	return d;
}

/* A call begins with its return address at SP. */
static __always_inline void stash_push(struct pytm_proc *p, struct task_ctx *t,
				       __u64 sp, __u64 ptr, __u64 size)
{
	__u32 d = stash_heal(t, sp);
	int i;

	if (d >= PYTM_STASH_DEPTH) {
		count_lost(p, PYTM_LOST_STASH);
		return;
	}
#pragma unroll
	for (i = 0; i < PYTM_STASH_DEPTH; i++) {
		if ((__u32)i != d)
			continue;
		t->calls[i].ptr = ptr;
		t->calls[i].size = size;
		t->calls[i].sp = sp;
	}
	t->depth = d + 1;
}

/*
 * The call whose entry had SP returns: pop it into *C (false if its entry
 * went unseen). *OUTER tells whether a call of ours is still in progress
 * above it, i.e. whether this one is nested.
 */
static __always_inline bool stash_pop(struct task_ctx *t, __u64 sp, struct call *c,
				      bool *outer)
{
	__u32 d = stash_heal(t, sp - 1);
	bool found = false;
	int i;

#pragma unroll
	for (i = 0; i < PYTM_STASH_DEPTH; i++) {
		if ((__u32)i + 1 != d || t->calls[i].sp != sp)
			continue;
		*c = t->calls[i];
		d = i;
		t->depth = d;
		found = true;
	}
	*outer = d > 0;
	return found;
}

/* Entry of malloc/calloc/realloc: remember the arguments until return. */
static __always_inline int call_enter(struct pt_regs *ctx, __u64 ptr, __u64 size)
{
	struct pytm_proc *p;
	struct task_ctx *t;
	__u32 pid;

	p = this_proc(&pid);
	if (!p)
		return 0;
	t = task_ctx();
	if (!t) {
		count_lost(p, PYTM_LOST_TASK_STORAGE);
		return 0;
	}
	stash_push(p, t, PT_REGS_SP(ctx), ptr, size);
	return 0;
}

/*
 * Return of malloc/calloc/realloc. As in tracemalloc, only the outermost
 * call records: an allocator call made inside another (pymalloc falling
 * back to the raw allocator, arena bookkeeping) is reentrant.
 */
static __always_inline int call_return(struct pt_regs *ctx, int kind, __u64 ret)
{
	struct pytm_proc *p;
	struct pytm_block_key key;
	struct task_ctx *t;
	struct call c;
	bool outer;
	__u32 pid;

	p = this_proc(&pid);
	if (!p)
		return 0;
	t = bpf_task_storage_get(&tasks, bpf_get_current_task_btf(), 0, 0);
	if (!t)
		return 0;
	/* The return address is popped: the entry saw the stack 8 bytes lower. */
	if (!stash_pop(t, PT_REGS_SP(ctx) - 8, &c, &outer))
		return 0;
	p->nevents++;	/* a statistic: a rare lost increment is fine */
	if (!ret)
		return 0;

	if (kind == PYTM_REALLOC) {
		if (outer) {
			if (c.ptr)
				remove_trace(p, pid, 0, c.ptr);
			return 0;
		}
		if (c.ptr && c.ptr != ret)
			remove_trace(p, pid, 0, c.ptr);
	} else if (outer) {
		return 0;
	}
	key.pid = pid;
	key.domain = 0;
	key.addr = ret;
	add_trace(p, t, &key, c.size);
	return 0;
}

static __always_inline int on_free(__u64 ptr)
{
	struct pytm_code_key ck;
	struct pytm_proc *p;
	__u32 pid;

	if (!ptr)
		return 0;
	p = this_proc(&pid);
	if (!p)
		return 0;
	p->nevents++;
	remove_trace(p, pid, 0, ptr);
	/* A freed code object: its address may come back as another one. */
	ck.pid = pid;
	ck.pad = 0;
	ck.addr = ptr;
	if (bpf_map_lookup_elem(&codes, &ck)) {
		bpf_map_delete_elem(&codes, &ck);
		__sync_fetch_and_add(&code_epoch, 1);
	}
	return 0;
}

/*
 * Injected mode: the allocator tables point to trampolines that call the
 * previous allocator, then pass a 5-byte NOP with the result and the
 * arguments in registers. One probe hit per event, no uretprobe. Over the
 * default allocators an inner call returns the outer call's block, so the
 * outer one just rewrites it; over other hooks, entry sites count nesting.
 */
static __always_inline int injected_alloc(struct pt_regs *ctx, __u64 ret, __u64 old,
					  __u64 size, bool realloc)
{
	struct call c;
	struct pytm_block_key key;
	struct pytm_proc *p;
	struct task_ctx *t;
	bool nested = false;
	__u32 pid;

	p = this_proc(&pid);
	if (!p)
		return 0;
	p->nevents++;
	t = task_ctx();
	if (!t) {
		count_lost(p, PYTM_LOST_TASK_STORAGE);
		return 0;
	}
	/*
	 * With a hook layer below us (debug hooks, tracemalloc), an inner call
	 * (pymalloc's large blocks going to the raw allocator) can return
	 * another address than the outer one: as in tracemalloc, only the
	 * outermost call records; an inner realloc only drops the old block.
	 */
	if (t->depth)	/* entry sites probed: the exit site sees their stack */
		stash_pop(t, PT_REGS_SP(ctx), &c, &nested);
	if (!ret)
		return 0;
	if (realloc && old && (old != ret || nested))
		remove_trace(p, pid, 0, old);
	if (nested)
		return 0;
	key.pid = pid;
	key.domain = 0;
	key.addr = ret;
	add_trace(p, t, &key, size);
	return 0;
}

/* The kernel self-test's probe (user/sites.c): nothing to record. */
SEC("uprobe")
int BPF_KPROBE(site_check)
{
	return 0;
}

/* Entry of malloc/calloc/realloc trampolines (probed over hook layers). */
SEC("uprobe")
int BPF_KPROBE(site_enter)
{
	return call_enter(ctx, 0, 0);	/* only the nesting matters here */
}

/* Site after malloc: rax = block, rsi = size. */
SEC("uprobe")
int BPF_KPROBE(site_malloc)
{
	if (empty_probe)
		return 0;
	return injected_alloc(ctx, PT_REGS_RC(ctx), 0, PT_REGS_PARM2(ctx), false);
}

/* Site after calloc: rax = block, rsi = nelem, rdx = elsize. */
SEC("uprobe")
int BPF_KPROBE(site_calloc)
{
	if (empty_probe)
		return 0;
	return injected_alloc(ctx, PT_REGS_RC(ctx), 0, PT_REGS_PARM2(ctx) * PT_REGS_PARM3(ctx), false);
}

/* Site after realloc: rax = new block, rsi = old block, rdx = size. */
SEC("uprobe")
int BPF_KPROBE(site_realloc)
{
	if (empty_probe)
		return 0;
	return injected_alloc(ctx, PT_REGS_RC(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx), true);
}

/* Site before free: rsi = block. */
SEC("uprobe")
int BPF_KPROBE(site_free)
{
	if (empty_probe)
		return 0;
	return on_free(PT_REGS_PARM2(ctx));
}

/* void *malloc(void *actx, size_t size) */
SEC("uprobe")
int BPF_KPROBE(malloc_enter, void *actx, __u64 size)
{
	return call_enter(ctx, 0, size);
}

SEC("uretprobe")
int BPF_KRETPROBE(malloc_return, void *ret)
{
	return call_return(ctx, PYTM_MALLOC, (__u64)ret);
}

/* void *calloc(void *actx, size_t nelem, size_t elsize) */
SEC("uprobe")
int BPF_KPROBE(calloc_enter, void *actx, __u64 nelem, __u64 elsize)
{
	return call_enter(ctx, 0, nelem * elsize);
}

SEC("uretprobe")
int BPF_KRETPROBE(calloc_return, void *ret)
{
	return call_return(ctx, PYTM_CALLOC, (__u64)ret);
}

/* void *realloc(void *actx, void *ptr, size_t new_size) */
SEC("uprobe")
int BPF_KPROBE(realloc_enter, void *actx, void *ptr, __u64 size)
{
	return call_enter(ctx, (__u64)ptr, size);
}

SEC("uretprobe")
int BPF_KRETPROBE(realloc_return, void *ret)
{
	return call_return(ctx, PYTM_REALLOC, (__u64)ret);
}

/* void free(void *actx, void *ptr) */
SEC("uprobe")
int BPF_KPROBE(free_enter, void *actx, void *ptr)
{
	return on_free((__u64)ptr);
}

/* int PyTraceMalloc_Track(unsigned int domain, uintptr_t ptr, size_t size) */
SEC("uprobe")
int BPF_KPROBE(track_enter, unsigned int domain, __u64 ptr, __u64 size)
{
	struct pytm_block_key key;
	struct pytm_proc *p;
	struct task_ctx *t;
	__u32 pid;

	p = this_proc(&pid);
	if (!p)
		return 0;
	t = task_ctx();
	if (!t)
		return 0;
	p->nevents++;
	key.pid = pid;
	key.domain = domain;
	key.addr = ptr;
	add_trace(p, t, &key, size);
	return 0;
}

/* int PyTraceMalloc_Untrack(unsigned int domain, uintptr_t ptr) */
SEC("uprobe")
int BPF_KPROBE(untrack_enter, unsigned int domain, __u64 ptr)
{
	struct pytm_proc *p;
	__u32 pid;

	p = this_proc(&pid);
	if (!p)
		return 0;
	p->nevents++;
	remove_trace(p, pid, domain, ptr);
	return 0;
}

/* Run by user space (BPF_PROG_RUN): see struct pytm_ctl. */
SEC("syscall")
int control(struct pytm_ctl *ctl)
{
	__u32 pid = ctl->pid;
	struct pytm_proc *p;

	p = bpf_map_lookup_elem(&procs, &pid);
	if (!p)
		return -2;	/* -ENOENT */
	if (ctl->op == PYTM_CTL_RESET_PEAK) {
		p->peak = p->current;
	} else if (ctl->op == PYTM_CTL_CLEAR) {
		p->current = 0;
		p->peak = 0;
	} else {
		return -22;	/* -EINVAL */
	}
	return 0;
}

static __always_inline void announce(__u32 type, __u32 pid)
{
	struct pytm_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);

	if (!ev)
		return;
	ev->type = type;
	ev->pid = pid;
	ev->code_id = 0;
	ev->pad = 0;
	ev->code_addr = 0;
	bpf_ringbuf_submit(ev, 0);
}

/* --all: every new program might be a Python to trace. Raw tracepoints
 * attach by name, without tracefs. */
SEC("raw_tp/sched_process_exec")
int handle_exec(void *ctx)
{
	announce(PYTM_EV_EXEC, bpf_get_current_pid_tgid() >> 32);
	return 0;
}

/* A traced process is gone once its last thread exits. */
SEC("raw_tp/sched_process_exit")
int handle_exit(void *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 pid = bpf_get_current_pid_tgid() >> 32;

	if (!bpf_map_lookup_elem(&procs, &pid))
		return 0;
	if (BPF_CORE_READ(task, signal, live.counter) == 0)
		announce(PYTM_EV_EXIT, pid);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
