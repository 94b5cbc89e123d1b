/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Shared between pytm.bpf.c and user space: plain structs, __u64-style types. */
#ifndef __PYTM_H
#define __PYTM_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define PYTM_MAX_FRAMES		128	/* --frames upper bound */
#define PYTM_STASH_DEPTH	4	/* nested allocator calls per thread */

/* How a CPython version chains its frames. */
enum pytm_frame_layout {
	PYTM_LAYOUT_FRAMEOBJ = 1,	/* 3.8-3.10: tstate->frame, PyFrameObject */
	PYTM_LAYOUT_CFRAME = 2,		/* 3.11-3.12: tstate->cframe->current_frame */
	PYTM_LAYOUT_DIRECT = 3,		/* 3.13+: tstate->current_frame */
};

/* How the frame's instruction position is stored. */
enum pytm_lasti_kind {
	PYTM_LASTI_INT_BYTES = 1,	/* 3.8-3.9: int f_lasti, in bytes */
	PYTM_LASTI_INT_UNITS = 2,	/* 3.10: int f_lasti, in code units */
	PYTM_LASTI_PREV_INSTR = 3,	/* 3.11-3.12: _Py_CODEUNIT *prev_instr */
	PYTM_LASTI_INSTR_PTR = 4,	/* 3.13+: _Py_CODEUNIT *instr_ptr (running now) */
};

/*
 * Struct offsets of one CPython version (bytes; 0xffff = absent). Filled in
 * user space from the generated table (3.8-3.12) or _Py_DebugOffsets (3.13+).
 */
#define PYTM_OFF_NONE 0xffff
struct pytm_offsets {
	__u32 hexversion;		/* PY_VERSION_HEX of the headers used */
	__u16 layout;			/* enum pytm_frame_layout */
	__u16 lasti_kind;		/* enum pytm_lasti_kind */
	/* _PyRuntimeState */
	__u16 runtime_interpreters_head;
	/* PyInterpreterState */
	__u16 interp_next;
	__u16 interp_threads_head;
	/* PyThreadState */
	__u16 tstate_next;
	__u16 tstate_interp;
	__u16 tstate_thread_id;		/* unsigned long, pthread_self() */
	__u16 tstate_native_thread_id;	/* 3.11+ */
	__u16 tstate_frame;		/* frame / cframe / current_frame */
	/* _PyCFrame (3.11-3.12) */
	__u16 cframe_current_frame;
	/* PyFrameObject or _PyInterpreterFrame */
	__u16 frame_back;		/* f_back / previous */
	__u16 frame_code;		/* f_code / f_executable */
	__u16 frame_lasti;		/* f_lasti / prev_instr / instr_ptr */
	__u16 frame_owner;		/* char owner, 3.11+ */
	__u8 owner_generator;		/* FRAME_OWNED_BY_GENERATOR */
	__u8 owner_cstack;		/* owner of the C entry (shim) frame: 3.12-3.13
					 * FRAME_OWNED_BY_CSTACK, 3.14
					 * FRAME_OWNED_BY_INTERPRETER; else 0xff */
	__u16 frame_tag_bits;		/* mask of tag bits in f_executable (3.14) */
	/* PyObject / PyVarObject */
	__u16 object_type;		/* ob_type */
	__u16 varobject_size;		/* ob_size */
	/* PyCodeObject */
	__u16 code_filename;
	__u16 code_name;
	__u16 code_qualname;		/* 3.11+ */
	__u16 code_firstlineno;
	__u16 code_linetable;		/* co_lnotab (3.8-3.9) / co_linetable */
	__u16 code_firsttraceable;	/* _co_firsttraceable, 3.11+ */
	__u16 code_adaptive;		/* co_code_adaptive, 3.11+ */
	__u16 code_code;		/* co_code (bytes), 3.8-3.10 */
	/* PyBytesObject */
	__u16 bytes_sval;
	/* PyUnicodeObject */
	__u16 unicode_length;
	__u16 unicode_state;
	__u16 unicode_ascii_size;	/* sizeof(PyASCIIObject) */
	__u16 unicode_compact_size;	/* sizeof(PyCompactUnicodeObject) */
	/* _PyRuntimeState: autoTSSkey._key (pthread key of the tstate), <=3.12 */
	__u16 runtime_tss_key;
	/* PyTypeObject: tp_flags, 3.13+ GIL builds (the page's reference
	 * tracer, not BPF); 0: unknown */
	__u16 type_flags;
	/* _PyRuntimeState: gilstate.tstate_current, the GIL holder's thread
	 * state (3.8-3.11; the in-target recorder, not BPF) */
	__u16 runtime_tstate_current;
	__u16 pad;
};

/* Allocator entry points, one BPF program each. */
enum pytm_alloc_kind {
	PYTM_MALLOC = 0,
	PYTM_CALLOC = 1,
	PYTM_REALLOC = 2,
	PYTM_FREE = 3,
};

/* Events that could not be recorded; counted per process, never silent. */
enum pytm_lost {
	PYTM_LOST_BLOCKS_FULL = 0,	/* live-block map full */
	PYTM_LOST_STACKS_FULL,		/* stack map full: block kept, frames lost */
	PYTM_LOST_CODES_FULL,		/* code-object map full: frame unknown */
	PYTM_LOST_RINGBUF,		/* code announcement dropped */
	PYTM_LOST_FRAME_READ,		/* unreadable frame: stack truncated */
	PYTM_LOST_STASH,		/* nested calls deeper than the stash */
	PYTM_LOST_NO_TSTATE,		/* no thread state found (frames unknown) */
	PYTM_LOST_TASK_STORAGE,		/* no per-thread storage: event dropped */
	PYTM_LOST_ALLOCS_FULL,		/* sampled: allocation-totals map full */
	PYTM_LOST_PEAK_FULL,		/* --peak: freed-since-peak map full */
	PYTM_LOST_MAX,
};

/* Per traced process: updated with atomics from BPF. */
struct pytm_proc {
	__u64 runtime;			/* address of _PyRuntime in the target */
	__u32 max_frames;		/* frames recorded per traceback (--frames) */
	__u32 max_total;		/* frames walked, counted in total_nframe */
	__u32 tstate_read;		/* bytes of a PyThreadState head read at once */
	__u32 frame_read;		/* bytes of a frame head read at once */
	__u32 sampled;			/* sampled mode: sizes are weighted */
	/*
	 * Interpreter finalization began (Py_FinalizeEx): the live set stays
	 * as it was then (the snapshot the final report takes), while the
	 * counters go on to the end (see PYTM_DOMAIN_LATE).
	 */
	__u32 frozen;
	__s64 current;			/* traced bytes now (estimated when sampled) */
	__s64 peak;			/* maximum of current */
	__u64 nevents;			/* allocator events seen */
	__u64 lost[PYTM_LOST_MAX];
	__u32 exited;			/* its last thread exited... */
	__u32 exit_code;		/* ...with this wait status */
	/*
	 * A forked child whose inherited blocks user space is still copying
	 * from its parent: a free of an address not yet known leaves a
	 * tombstone (PYTM_DOMAIN_TOMB), so that the copy skips that block.
	 */
	__u32 inheriting;
	/*
	 * A forked child's blocks live in its parent's map (the same map
	 * object, under the child's pid): BPF finds it under this pid until
	 * user space has entered it under the child's own.
	 */
	__u32 blocks_pid;
	/* It called execve: what it runs now is another program (events ignored). */
	__u32 execed;
	/*
	 * A forked child takes its parent's ids for the code objects it
	 * inherited (ids up to code_fork_id, given before the fork) instead of
	 * announcing them again: read from the parent, they need not be read
	 * from a child that may be gone by then.
	 */
	__u32 code_parent;
	__u32 code_fork_id;
	/*
	 * Children forked and not yet given their inherited blocks: while
	 * any, blocks it frees are kept a while in the freed map (their
	 * copies need the set as it was at the fork).
	 */
	__u32 forking;
	__u64 fork_ns;			/* a forked child: when (bpf_ktime_get_ns) */
	/*
	 * --peak: the live set is known as it was at peak_ns, when traced
	 * memory last reached peak_mark, the first value above the mark
	 * before by more than peak_step millionths: blocks born by then and
	 * still live, and those freed since (the peak_freed map).
	 */
	__u32 peak_step;		/* ppm; 0: not kept */
	__u32 pad3;
	__s64 peak_mark;
	__u64 peak_ns;
	/*
	 * The in-target recorder (user/session/rec_drain.c): where its ring's
	 * head is in the target (0: not recording), and at the freeze the
	 * head's value + 1, so that the tracer tells the events before it
	 * (numbered below) from those after (page/ring.c).
	 */
	__u64 rec_clock;
	__u64 rec_frozen;
	/*
	 * A forked child of a recording process: its parent's ring head at
	 * the fork + 1 (0: none), so that the tracer copies its parent's
	 * blocks as they were then (rec_drain.c, recorder__inherit).
	 */
	__u64 rec_fork;
	/*
	 * Code objects the recorder's page showed that BPF sent the event
	 * thread's way (the process's own code ring buffer was full): the
	 * drain waits for those before it reads one from the target.
	 */
	__u64 rec_codes_spilled;
	/*
	 * Its live-block maps: generations in use (see PYTM_GENS; 0 counts as
	 * 1), and the entries BPF put in them, less those it took out (the
	 * tracer makes a new generation as they fill).
	 */
	__s64 nblocks;
	__u32 ngen;
	__u32 pad4;
	struct pytm_offsets off;
};

/*
 * A process's live blocks are in up to PYTM_GENS hash maps, generations
 * the tracer makes as they fill, each twice the size of the one before
 * (a hash map cannot grow, and one sized for the largest heap would cost
 * its buckets' memory in every process). The outer map holds generation
 * G of process PID under PYTM_GEN_KEY(PID, G); new blocks go into the
 * newest, and a block stays where it went until it is freed.
 */
#define PYTM_GENS		8
#define PYTM_GEN_SHIFT		22	/* pids are below 2^22 (PID_MAX_LIMIT) */
#define PYTM_GEN_KEY(pid, g)	((__u32)(pid) | (__u32)(g) << PYTM_GEN_SHIFT)

/*
 * Block keys while frozen, in the domain's top bits: blocks allocated after
 * the freeze (LATE: counted, not in the snapshot), and blocks of the frozen
 * set freed since (GONE: in the snapshot, no longer counted; their address
 * may be reused by a LATE block). Snapshots skip LATE and clear GONE.
 */
#define PYTM_DOMAIN_LATE	0x80000000u
#define PYTM_DOMAIN_GONE	0x40000000u
/* Not a block: see pytm_proc.inheriting. Snapshots skip it. */
#define PYTM_DOMAIN_TOMB	0x20000000u
#define PYTM_DOMAIN_MASK	0x1fffffffu

/* Live block key: tracemalloc's (domain, address), per process. */
struct pytm_block_key {
	__u32 pid;
	__u32 domain;
	__u64 addr;
};

struct pytm_block {
	__u64 size;
	__u64 stack_id;			/* key in the stacks map; 0: no frames */
	__u64 weight;			/* bytes it stands for: size, or when
					 * sampled size / (1 - exp(-size/R)) */
	__u64 born;			/* bpf_ktime_get_ns() at its allocation */
};

/* A block its process freed while it had children to copy it to. */
struct pytm_freed {
	struct pytm_block b;
	__u64 freed;			/* bpf_ktime_get_ns() at its free */
};

/*
 * A frame: code-object id (assigned by BPF, announced on the ring buffer)
 * in the high 32 bits, instruction offset in code units (signed; -1 before
 * the first instruction) in the low 32 bits. Id 0 = unknown code object.
 */
#define PYTM_FRAME(id, lasti)	(((__u64)(id) << 32) | (__u32)(lasti))
#define PYTM_FRAME_ID(f)	((__u32)((f) >> 32))
#define PYTM_FRAME_LASTI(f)	((__s32)(__u32)(f))

struct pytm_stack {
	__u32 nframe;			/* frames[] used, most recent first */
	__u32 total_nframe;		/* frames in the thread's stack */
	__u64 frames[PYTM_MAX_FRAMES];
};

/*
 * Sampled mode: what was allocated since attach, per (process, domain,
 * traceback), freed or not (pprof's alloc_objects / alloc_space).
 */
struct pytm_alloc_key {
	__u32 pid;
	__u32 domain;
	__u64 stack_id;
};

#define PYTM_ALLOC_OBJ_SHIFT	16	/* objects in fixed point */

struct pytm_alloc {
	__u64 bytes;			/* estimated: sum of weights */
	__u64 objects;			/* estimated, << PYTM_ALLOC_OBJ_SHIFT */
};

struct pytm_code_key {
	__u32 pid;
	__u32 pad;
	__u64 addr;
};

/* Ring buffer records. */
/*
 * Changes to a process's counters made from user space, run in the kernel
 * (BPF_PROG_RUN of a syscall program) so that they touch only the fields
 * they change, not counters that events update meanwhile.
 */
enum pytm_ctl_op {
	PYTM_CTL_RESET_PEAK = 1,	/* peak = current */
	PYTM_CTL_CLEAR = 2,		/* current = peak = 0 */
	PYTM_CTL_INHERIT = 3,		/* current += arg (a forked child's inherited blocks) */
	PYTM_CTL_INHERITED = 4,		/* the inherited set is in: no more tombstones */
	PYTM_CTL_FORK_DONE = 5,		/* a parent: one child less to copy to (returns
					 * how many are left) */
	PYTM_CTL_REC_CLOCK = 6,		/* rec_clock = arg (the recorder's ring) */
	PYTM_CTL_PEAK_MARK = 7,		/* peak_ns = arg, peak_step = 0: the
					 * recorder's drain makes the marks */
	PYTM_CTL_NGEN = 8,		/* ngen = arg (its live-block maps) */
	PYTM_CTL_ENTRIES = 9,		/* nblocks += arg (entries put in by user space) */
};

struct pytm_ctl {
	__u32 pid;
	__u32 op;
	__s64 arg;
};

enum pytm_event_type {
	PYTM_EV_CODE = 1,		/* new code object: read it now */
	PYTM_EV_EXEC = 2,		/* a process called execve (--all) */
	PYTM_EV_EXIT = 3,		/* the last thread of a traced process exited */
	PYTM_EV_FORK = 4,		/* a traced process forked: pid is the child,
					 * code_addr its parent */
	PYTM_EV_TOMB = 5,		/* the recorder's ring was full at a free:
					 * code_addr is the block, clock its number */
	PYTM_EV_REC_CODE = 6,		/* the recorder's first event (clock) with a
					 * frame of code object code_addr: read it now */
};

struct pytm_event {
	__u32 type;
	__u32 pid;
	__u32 code_id;
	__u32 pad;
	__u64 code_addr;
	__u64 clock;
};

/*
 * PYTM_EV_REC_CODE: the memory the resolver reads of a code object,
 * copied at the code site while its frame runs (the code object itself
 * up to its last field read, its file name and name str objects, its line
 * table bytes object), so that a code object freed at once, or a process
 * that calls execve, is still read right. A region that did not fit or
 * could not be read has len 0 or is cut short: the rest is read live.
 */
enum {
	PYTM_CAP_CODE,
	PYTM_CAP_FILENAME,
	PYTM_CAP_NAME,
	PYTM_CAP_TABLE,
	PYTM_CAP_N,
};
#define PYTM_CAP_CODE_LEN	256
#define PYTM_CAP_STR_LEN	1024
#define PYTM_CAP_TABLE_LEN	4096

struct pytm_cap_region {
	__u64 addr;
	__u32 len;
	__u32 pad;
};

struct pytm_code_event {
	struct pytm_event ev;
	struct pytm_cap_region r[PYTM_CAP_N];
	__u8 code[PYTM_CAP_CODE_LEN];
	__u8 filename[PYTM_CAP_STR_LEN];
	__u8 name[PYTM_CAP_STR_LEN];
	__u8 table[PYTM_CAP_TABLE_LEN];
};

#endif /* __PYTM_H */
