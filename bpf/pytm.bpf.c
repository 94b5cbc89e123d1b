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

#include "maps.bpf.h"
#include "stack.bpf.h"
#include "trace.bpf.h"

/*
 * Does nothing: the kernel self-test's probe (user/attach/sites.c), and
 * every site's program under --bench-empty (the bare cost of a probe hit).
 */
SEC("uprobe")
int BPF_KPROBE(site_empty)
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
	return injected_alloc(ctx, PT_REGS_RC(ctx), 0, PT_REGS_PARM2(ctx), false);
}

/* Site after calloc: rax = block, rsi = nelem, rdx = elsize. */
SEC("uprobe")
int BPF_KPROBE(site_calloc)
{
	return injected_alloc(ctx, PT_REGS_RC(ctx), 0, PT_REGS_PARM2(ctx) * PT_REGS_PARM3(ctx), false);
}

/* Site after realloc: rax = new block, rsi = old block, rdx = size. */
SEC("uprobe")
int BPF_KPROBE(site_realloc)
{
	return injected_alloc(ctx, PT_REGS_RC(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx), true);
}

/* Site before free: rsi = block. */
SEC("uprobe")
int BPF_KPROBE(site_free)
{
	return on_free(PT_REGS_PARM2(ctx));
}

/*
 * The sampler's sites (page/sampler.c): only sampled blocks pass them.
 * Alloc: rdi = block, rsi = size, rdx = the bytes it stands for.
 */
SEC("uprobe")
int BPF_KPROBE(sample_alloc, __u64 ptr, __u64 size, __u64 weight)
{
	return record_block(0, ptr, size, weight);
}

/* Free of a sampled block, before it is freed: rdi = block. */
SEC("uprobe")
int BPF_KPROBE(sample_free, __u64 ptr)
{
	return on_free(ptr);
}

/*
 * The in-target recorder's ring was full at a free (page/sampler.c):
 * rdi = the block, rsi = the event's number. The tracer drops the block
 * in order with what the ring holds (user/session/rec_drain.c).
 */
SEC("uprobe")
int BPF_KPROBE(rec_tomb, __u64 ptr, __u64 clock)
{
	struct pytm_event *ev;
	struct pytm_proc *p;
	__u32 pid;

	p = this_proc(&pid);
	if (!p)
		return 0;
	p->nevents++;
	on_free(ptr);	/* a code object's id goes, as on any free */
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_lost(p, PYTM_LOST_RINGBUF);
		return 0;
	}
	ev->type = PYTM_EV_TOMB;
	ev->pid = pid;
	ev->code_id = 0;
	ev->pad = 0;
	ev->code_addr = ptr;
	ev->clock = clock;
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/*
 * The in-target recorder flagged a code object it had not seen, in the
 * event numbered rsi (page/sampler.c): rdi = the code object, whose frame
 * runs. What the resolver reads of it is copied now (struct
 * pytm_code_event): the tracer's drain comes to the event later, maybe
 * after the code object's free (and another one at its address) or the
 * process's exec. Into the process's own ring buffer, which its drain
 * reads before the event (no wakeup: nobody sleeps on it); full, into the
 * event thread's.
 */
SEC("uprobe")
int BPF_KPROBE(rec_code, __u64 code, __u64 clock)
{
	struct pytm_code_event *ce;
	struct pytm_proc *p;
	void *ring;
	__u32 pid;

	p = this_proc(&pid);
	if (!p)
		return 0;
	ring = bpf_map_lookup_elem(&rec_codes, &pid);
	if (ring) {
		ce = bpf_ringbuf_reserve(ring, sizeof(*ce), 0);
		if (ce) {
			code_copy(ce, p, pid, PYTM_EV_REC_CODE, 0, code, clock);
			bpf_ringbuf_submit(ce, BPF_RB_NO_WAKEUP);
			return 0;
		}
	}
	ce = bpf_ringbuf_reserve(&events, sizeof(*ce), 0);
	if (!ce)
		return 0;	/* the drain reads it when it comes to it */
	__sync_fetch_and_add(&p->rec_codes_spilled, 1);
	code_copy(ce, p, pid, PYTM_EV_REC_CODE, 0, code, clock);
	bpf_ringbuf_submit(ce, 0);
	return 0;
}

/*
 * The page's reference tracer (3.13+): an object created in a block
 * that may be traced, i.e. taken from a free list. rdi = the block.
 */
SEC("uprobe")
int BPF_KPROBE(site_newref, __u64 ptr)
{
	return restamp(ptr);
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
	return record_block(domain, ptr, size, size);
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
		p->nblocks = 0;
	} else if (ctl->op == PYTM_CTL_INHERIT) {
		account(p, ctl->arg);
	} else if (ctl->op == PYTM_CTL_INHERITED) {
		p->inheriting = 0;
	} else if (ctl->op == PYTM_CTL_FORK_DONE) {
		if (p->forking)
			__sync_fetch_and_add(&p->forking, -1);
		return p->forking;
	} else if (ctl->op == PYTM_CTL_REC_CLOCK) {
		p->rec_clock = ctl->arg;
	} else if (ctl->op == PYTM_CTL_PEAK_MARK) {
		p->peak_step = 0;
		p->peak_ns = ctl->arg;
	} else if (ctl->op == PYTM_CTL_NGEN) {
		p->ngen = ctl->arg;
	} else if (ctl->op == PYTM_CTL_ENTRIES) {
		__sync_fetch_and_add(&p->nblocks, ctl->arg);
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
	ev->clock = 0;
	ev->code_addr = 0;
	bpf_ringbuf_submit(ev, 0);
}

/*
 * A traced process that execs is another program now; under --all every
 * new program might be a Python to trace. Raw tracepoints attach by name,
 * without tracefs.
 */
SEC("raw_tp/sched_process_exec")
int handle_exec(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct pytm_proc *p = bpf_map_lookup_elem(&procs, &pid);

	if (p)
		p->execed = 1;
	announce(PYTM_EV_EXEC, pid);
	return 0;
}

/*
 * A traced process forked: its child (a process of its own, not a thread,
 * and not a vfork child that shares its memory until it execs) is one to
 * follow. Runs in the parent, before the child first runs.
 */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ppid = BPF_CORE_READ(parent, tgid), cpid = BPF_CORE_READ(child, tgid);
	struct pytm_proc *pp, *cp;
	struct pytm_event *ev;

	if (cpid == ppid || BPF_CORE_READ(child, mm) == BPF_CORE_READ(parent, mm))
		return 0;
	pp = bpf_map_lookup_elem(&procs, &ppid);
	if (!pp || pp->execed)
		return 0;
	/*
	 * The child passes the page's children's sites from its first
	 * allocation on (sampled: its first sample), as a process of its own
	 * whose blocks go to its parent's map; it starts with none (user
	 * space copies what it inherited).
	 */
	if (!bpf_map_update_elem(&procs, &cpid, pp, BPF_NOEXIST)) {
		cp = bpf_map_lookup_elem(&procs, &cpid);
		if (cp) {
			cp->current = 0;
			cp->peak = 0;
			cp->nevents = 0;
			__builtin_memset(cp->lost, 0, sizeof(cp->lost));
			cp->exited = 0;
			cp->exit_code = 0;
			cp->frozen = 0;
			cp->inheriting = 1;
			cp->code_parent = ppid;
			cp->code_fork_id = next_code_id;
			cp->forking = 0;
			cp->peak_mark = 0;
			cp->peak_ns = 0;
			cp->nblocks = 0;	/* its own; its ngen is its parent's */
			/* From here the parent keeps what it frees: the copy needs it. */
			__sync_fetch_and_add(&pp->forking, 1);
			cp->fork_ns = bpf_ktime_get_ns();
			/*
			 * Its parent's recorder: where its ring was at the fork
			 * (read here, in the parent). The ring stays the
			 * parent's: the child goes BPF's way (page/sampler.c).
			 */
			cp->rec_fork = pp->rec_clock ? read_ptr(pp->rec_clock) + 1 : 0;
			cp->rec_clock = 0;
			cp->rec_frozen = 0;
			cp->blocks_pid = bpf_map_lookup_elem(&blocks, &ppid) ? ppid : pp->blocks_pid;
		}
	}
	ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev)
		return 0;
	ev->type = PYTM_EV_FORK;
	ev->pid = cpid;
	ev->code_id = 0;
	ev->pad = 0;
	ev->clock = 0;
	ev->code_addr = ppid;
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/* Entry of Py_FinalizeEx: keep the live set as it is now. */
SEC("uprobe")
int BPF_KPROBE(finalize_enter)
{
	struct pytm_proc *p;
	__u32 pid;

	p = this_proc(&pid);
	if (!p)
		return 0;
	p->frozen = 1;
	if (p->rec_clock) {
		/* The recorder's events numbered from the head on are after it. */
		__u64 clock = read_ptr(p->rec_clock);

		p->rec_frozen = clock + 1;
	}
	return 0;
}

/* A traced process is gone once its last thread exits: say how. */
SEC("raw_tp/sched_process_exit")
int handle_exit(void *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct pytm_proc *p;

	p = bpf_map_lookup_elem(&procs, &pid);
	if (!p)
		return 0;
	if (BPF_CORE_READ(task, signal, live.counter) == 0) {
		/* Set before this tracepoint: the status a parent's wait() sees. */
		p->exit_code = BPF_CORE_READ(task, exit_code);
		p->exited = 1;
		announce(PYTM_EV_EXIT, pid);
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
