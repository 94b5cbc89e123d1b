/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The maps, the per-thread context, and the small helpers every program uses. */
#ifndef __PYTM_MAPS_BPF_H__
#define __PYTM_MAPS_BPF_H__

#define EEXIST 17
#define E2BIG 7

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

/* Sampled mode: allocations since attach per traceback (sized like stacks). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, struct pytm_alloc_key);
	__type(value, struct pytm_alloc);
} allocs SEC(".maps");

/* Blocks freed by processes with children still to copy (pytm_proc.forking). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 16);
	__type(key, struct pytm_block_key);
	__type(value, struct pytm_freed);
} freed SEC(".maps");

/* What the walk needs of a code object, read once when first seen. */
struct code_info {
	__u32 id;
	__s32 firsttraceable;		/* _co_firsttraceable, 3.11+ */
	__u64 fp;			/* code_fingerprint(), sampled mode; else 0 */
};

/* Code objects seen: (pid, address) -> id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 18);
	__type(key, struct pytm_code_key);
	__type(value, struct code_info);
} codes SEC(".maps");

/*
 * Events for user space (struct pytm_event). A code object's announcement
 * carries a copy of it (struct pytm_code_event, 6.5 KiB): ~2,500 of them
 * before the event thread must have read some, as at a large program's
 * start.
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24);
} events SEC(".maps");

/*
 * The recorder's code objects, one ring buffer per process (pid -> its own,
 * made by user space): its drain reads it before the events that show
 * them, in order, so that none is late (page/sampler.c, rec_code).
 */
struct rec_codes_ring {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__array(values, struct rec_codes_ring);
} rec_codes SEC(".maps");


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
	if (cur > p->peak) {
		p->peak = cur;
		/* --peak: a new mark when the peak grew by a step. */
		if (p->peak_step && (__u64)cur * 1000000 >
				    (__u64)p->peak_mark * (1000000 + p->peak_step)) {
			p->peak_mark = cur;
			p->peak_ns = bpf_ktime_get_ns();
		}
	}
}

/*
 * Blocks live at a process's peak mark (born by its peak_ns) that it freed
 * since, with when (pytm_freed.freed): the peak snapshot's other half.
 * Entries freed before the latest mark are stale; user space clears them.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1 << 20);
	__type(key, struct pytm_block_key);
	__type(value, struct pytm_freed);
} peak_freed SEC(".maps");

/* Block B of KEY goes (freed, or replaced at its address): keep it if the peak had it. */
static __always_inline void peak_keep(struct pytm_proc *p, const struct pytm_block_key *key,
				      const struct pytm_block *b)
{
	struct pytm_freed f;

	if (!p->peak_ns || b->born > p->peak_ns)
		return;
	f.b = *b;
	f.freed = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&peak_freed, key, &f, BPF_ANY))
		count_lost(p, PYTM_LOST_PEAK_FULL);
}

#endif /* __PYTM_MAPS_BPF_H__ */
