/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Trace bookkeeping: live blocks in, out, and moved; the per-thread stash
 * of allocator calls in progress; the shared bodies of the probes. */
#ifndef __PYTM_TRACE_BPF_H__
#define __PYTM_TRACE_BPF_H__

#include "maps.bpf.h"
#include "stack.bpf.h"

/*
 * Generation G of process PID's live-block maps (see PYTM_GEN_KEY); a
 * forked child's are its parent's (see pytm_proc.blocks_pid).
 */
static __always_inline void *proc_blocks_gen(struct pytm_proc *p, __u32 pid, __u32 g)
{
	__u32 key = PYTM_GEN_KEY(pid, g);
	void *map = bpf_map_lookup_elem(&blocks, &key);

	if (!map && p->blocks_pid) {
		key = PYTM_GEN_KEY(p->blocks_pid, g);
		map = bpf_map_lookup_elem(&blocks, &key);
	}
	return map;
}

static __always_inline __u32 proc_ngen(const struct pytm_proc *p)
{
	__u32 n = p->ngen;

	return n < 1 ? 1 : n > PYTM_GENS ? PYTM_GENS : n;
}

/* The newest generation: where new entries go. */
static __always_inline void *proc_blocks(struct pytm_proc *p, __u32 pid)
{
	return proc_blocks_gen(p, pid, proc_ngen(p) - 1);
}

/*
 * KEY's entry in the generations below N, newest first (most frees are
 * of young blocks), and the map that holds it in *MAPP; NULL if none.
 */
static __always_inline struct pytm_block *find_block_below(struct pytm_proc *p, __u32 pid,
							   const struct pytm_block_key *key,
							   void **mapp, __u32 n)
{
	struct pytm_block *b;
	void *map;

#pragma unroll
	for (int g = PYTM_GENS - 1; g >= 0; g--) {
		if (g >= n)
			continue;
		map = proc_blocks_gen(p, pid, g);
		if (!map)
			continue;
		b = bpf_map_lookup_elem(map, key);
		if (b) {
			*mapp = map;
			return b;
		}
	}
	return NULL;
}

/* KEY's entry in any generation (see find_block_below). */
static __always_inline struct pytm_block *find_block(struct pytm_proc *p, __u32 pid,
						     const struct pytm_block_key *key,
						     void **mapp)
{
	return find_block_below(p, pid, key, mapp, proc_ngen(p));
}

/*
 * The newest generation is full (the tracer makes the next one late):
 * NB under KEY into an older one that has room since its blocks were
 * freed. 0, or the error of the last insert.
 */
static __always_inline long insert_older(struct pytm_proc *p, __u32 pid,
					 const struct pytm_block_key *key,
					 const struct pytm_block *nb)
{
	__u32 n = proc_ngen(p);
	long err = -E2BIG;
	void *map;

#pragma unroll
	for (int g = PYTM_GENS - 2; g >= 0; g--) {
		if (g + 1 >= n)
			continue;
		map = proc_blocks_gen(p, pid, g);
		if (!map)
			continue;
		err = bpf_map_update_elem(map, key, nb, BPF_NOEXIST);
		if (err != -E2BIG)
			return err;
	}
	return err;
}

/* One entry less in its maps (see pytm_proc.nblocks). */
static __always_inline void entry_gone(struct pytm_proc *p)
{
	__sync_fetch_and_add(&p->nblocks, -1);
}

static __always_inline void remove_trace(struct pytm_proc *p, __u32 pid,
					 __u32 domain, __u64 addr)
{
	struct pytm_block_key key = { .pid = pid, .domain = domain, .addr = addr };
	struct pytm_block *b, gone;
	void *map = NULL;
	__s64 size;

	if (p->frozen) {
		/* A block born after the freeze goes as any block would... */
		key.domain = domain | PYTM_DOMAIN_LATE;
		b = find_block(p, pid, &key, &map);
		if (b && map) {
			size = b->weight;
			if (bpf_map_delete_elem(map, &key) == 0) {
				account(p, -size);
				entry_gone(p);
			}
			return;
		}
		/* ...one of the frozen set stays in it, under another key. */
		key.domain = domain;
		b = find_block(p, pid, &key, &map);
		if (!b || !map)
			return;
		gone = *b;
		if (bpf_map_delete_elem(map, &key))
			return;
		account(p, -(__s64)gone.weight);
		/* In the same map: it has room for it now. */
		key.domain = domain | PYTM_DOMAIN_GONE;
		if (bpf_map_update_elem(map, &key, &gone, BPF_ANY))
			entry_gone(p);
		return;
	}
	b = find_block(p, pid, &key, &map);
	if (!b || !map) {
		if (p->inheriting) {
			/* Maybe inherited and not copied yet: keep it out of the copy. */
			static const struct pytm_block tomb;

			map = proc_blocks(p, pid);
			key.domain = domain | PYTM_DOMAIN_TOMB;
			if (map && !bpf_map_update_elem(map, &key, &tomb, BPF_NOEXIST))
				__sync_fetch_and_add(&p->nblocks, 1);
		}
		return;
	}
	peak_keep(p, &key, b);
	if (p->forking) {
		/* A child forked before may still need it (see tracee__inherit). */
		struct pytm_freed f = { .b = *b, .freed = bpf_ktime_get_ns() };

		bpf_map_update_elem(&freed, &key, &f, BPF_NOEXIST);
	}
	size = b->weight;
	if (bpf_map_delete_elem(map, &key) == 0) {
		account(p, -size);
		entry_gone(p);
	}
}

/* Sampled: one more allocation of SIZE standing for WEIGHT bytes under KEY. */
static __always_inline void count_alloc(struct pytm_proc *p, struct pytm_alloc_key *key,
					__u64 size, __u64 weight)
{
	static const struct pytm_alloc zero;
	struct pytm_alloc *a;

	a = bpf_map_lookup_elem(&allocs, key);
	if (!a) {
		bpf_map_update_elem(&allocs, key, &zero, BPF_NOEXIST);
		a = bpf_map_lookup_elem(&allocs, key);
		if (!a) {
			count_lost(p, PYTM_LOST_ALLOCS_FULL);
			return;
		}
	}
	__sync_fetch_and_add(&a->bytes, weight);
	/* weight / size blocks: 1 / P(sampled), in fixed point. */
	__sync_fetch_and_add(&a->objects, size ? (weight << PYTM_ALLOC_OBJ_SHIFT) / size :
					  1ULL << PYTM_ALLOC_OBJ_SHIFT);
}

/* A new live block of SIZE bytes that stands for WEIGHT bytes. */
static void add_trace(struct pytm_proc *p, struct task_ctx *t,
		      struct pytm_block_key *key, __u64 size, __u64 weight)
{
	struct pytm_block nb, *b;
	void *map, *old_map = NULL;
	__s64 old;
	long err;

	nb.size = size;
	nb.weight = weight;
	nb.born = bpf_ktime_get_ns();
	if (p->frozen) {
		/* Finalizing: counted to the end, kept out of the frozen set. */
		key->domain |= PYTM_DOMAIN_LATE;
		nb.stack_id = 0;
	} else {
		nb.stack_id = walk_stack(p, t, key->pid);
	}
	if (p->sampled) {
		struct pytm_alloc_key ak = {
			.pid = key->pid, .domain = key->domain & PYTM_DOMAIN_MASK,
			.stack_id = nb.stack_id,
		};

		count_alloc(p, &ak, size, weight);
	}

	map = proc_blocks(p, key->pid);
	if (!map)
		return;
	/*
	 * Tracked in an older generation (its free unseen): updated there.
	 * In the newest, the insert below says so.
	 */
	b = proc_ngen(p) > 1 ? find_block_below(p, key->pid, key, &old_map, proc_ngen(p) - 1) :
			       NULL;
	if (!b) {
		/* Usually a new address: one insert, no lookup before it. */
		err = bpf_map_update_elem(map, key, &nb, BPF_NOEXIST);
		if (err == -E2BIG && proc_ngen(p) > 1)
			err = insert_older(p, key->pid, key, &nb);
		if (!err) {
			account(p, weight);
			__sync_fetch_and_add(&p->nblocks, 1);
			return;
		}
		b = err == -EEXIST ? bpf_map_lookup_elem(map, key) : NULL;
	}
	if (!b) {
		/* Late blocks are not reported: no room for them loses nothing shown. */
		if (!p->frozen)
			count_lost(p, PYTM_LOST_BLOCKS_FULL);
		return;
	}
	/* Already tracked (tracemalloc_add_trace does the same). */
	peak_keep(p, key, b);
	old = b->weight;
	b->size = nb.size;
	b->weight = nb.weight;
	b->stack_id = nb.stack_id;
	b->born = nb.born;
	account(p, (__s64)weight - old);
}

static __always_inline struct task_ctx *task_ctx(void)
{
	return bpf_task_storage_get(&tasks, bpf_get_current_task_btf(), 0,
				    BPF_LOCAL_STORAGE_GET_F_CREATE);
}

static __always_inline struct pytm_proc *this_proc(__u32 *pid)
{
	struct pytm_proc *p;

	*pid = bpf_get_current_pid_tgid() >> 32;
	p = bpf_map_lookup_elem(&procs, pid);
	/* After an exec, probes by pid on the same binary see another program. */
	return p && !p->execed ? p : NULL;
}

/* This thread's context, or NULL with the event counted as lost. */
static __always_inline struct task_ctx *proc_task_ctx(struct pytm_proc *p)
{
	struct task_ctx *t = task_ctx();

	if (!t)
		count_lost(p, PYTM_LOST_TASK_STORAGE);
	return t;
}

/*
 * The start of an event that records a block: its process (the event
 * counted) and this thread's context; NULL if the process is not traced
 * or the thread has no context (counted as lost).
 */
static __always_inline struct pytm_proc *event_proc(__u32 *pid, struct task_ctx **t)
{
	struct pytm_proc *p = this_proc(pid);

	if (!p)
		return NULL;
	p->nevents++;
	*t = proc_task_ctx(p);
	return *t ? p : NULL;
}

/* An event that carries all it needs: a block of SIZE (standing for WEIGHT) at PTR. */
static __always_inline int record_block(__u32 domain, __u64 ptr, __u64 size, __u64 weight)
{
	struct pytm_block_key key;
	struct pytm_proc *p;
	struct task_ctx *t;
	__u32 pid;

	p = event_proc(&pid, &t);
	if (!p)
		return 0;
	key.pid = pid;
	key.domain = domain;
	key.addr = ptr;
	add_trace(p, t, &key, size, weight);
	return 0;
}

/*
 * An object was created in the block at PTR, a block that may be traced
 * (3.13+: the page's reference tracer, for objects taken from a free
 * list): as tracemalloc's _PyTraceMalloc_TraceRef does, the block now
 * belongs to the creating traceback. Its age restarts with it (the old
 * object is gone). Untraced blocks are left alone.
 */
static __always_inline int restamp(__u64 ptr)
{
	struct pytm_block_key key;
	struct pytm_block *b;
	struct pytm_proc *p;
	struct task_ctx *t;
	__u64 id;
	void *map = NULL;
	__u32 pid;

	p = event_proc(&pid, &t);
	if (!p || p->frozen)
		return 0;
	key.pid = pid;
	key.domain = 0;
	key.addr = ptr;
	if (!find_block(p, pid, &key, &map))
		return 0;
	id = walk_stack(p, t, pid);
	/* Looked up again: the walk may take long, the block may be gone. */
	b = find_block(p, pid, &key, &map);
	if (!b)
		return 0;
	peak_keep(p, &key, b);
	b->stack_id = id;
	b->born = bpf_ktime_get_ns();
	return 0;
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
	t = proc_task_ctx(p);
	if (!t)
		return 0;
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
	add_trace(p, t, &key, c.size, c.size);
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
 * arguments in registers. One probe hit per event, no uretprobe. A raw
 * call made inside an obj/mem call of the same thread does not pass its
 * site (the trampolines mark the outer call: user/attach/redirect.c);
 * over other hooks, entry sites count nesting.
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

	p = event_proc(&pid, &t);
	if (!p)
		return 0;
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
	add_trace(p, t, &key, size, size);
	return 0;
}

#endif /* __PYTM_TRACE_BPF_H__ */
