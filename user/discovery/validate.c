// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "target.h"
#include "util.h"
#include "validate.h"

#define MAX_THREADS	1024
#define MAX_FRAMES	256

static uint64_t rd(const struct target *t, uint64_t addr, int *bad)
{
	uint64_t v = 0;

	if (target__read(t, addr, &v, sizeof(v)))
		*bad = 1;
	return v;
}

/* Is the object at ADDR of type TYPE? */
static bool is_type(const struct target *t, const struct pytm_offsets *o,
		    uint64_t addr, uint64_t type)
{
	int bad = 0;

	return addr && rd(t, addr + o->object_type, &bad) == type && !bad;
}

/* The innermost frame of TSTATE (see top_frame() in the BPF program). */
static uint64_t first_frame(const struct target *t, const struct pytm_offsets *o,
			    uint64_t ts, int *bad)
{
	uint64_t f = rd(t, ts + o->tstate_frame, bad);

	if (o->layout == PYTM_LAYOUT_CFRAME && f)
		f = rd(t, f + o->cframe_current_frame, bad);
	return f;
}

int validate__offsets(const struct target *t, const struct pytm_offsets *o,
		      char *why, size_t len)
{
	uint64_t code_type = target__symbol(t, "PyCode_Type");
	uint64_t str_type = target__symbol(t, "PyUnicode_Type");
	uint64_t interp, ts, frame, code, owner_interp;
	int nts = 0, nframes, ncodes = 0, bad = 0;
	uint8_t owner;

	if (!code_type || !str_type) {
		snprintf(why, len, "no PyCode_Type or PyUnicode_Type symbol");
		return -EPROTO;
	}
	interp = rd(t, t->runtime + o->runtime_interpreters_head, &bad);
	if (bad || !interp) {
		snprintf(why, len, "no interpreter at _PyRuntime+%u", o->runtime_interpreters_head);
		return -EPROTO;
	}
	ts = rd(t, interp + o->interp_threads_head, &bad);
	for (; ts && nts < MAX_THREADS; nts++) {
		owner_interp = rd(t, ts + o->tstate_interp, &bad);
		if (bad || owner_interp != interp) {
			snprintf(why, len, "thread state 0x%llx does not point back to its interpreter",
				 (unsigned long long)ts);
			return -EPROTO;
		}
		/* 3.11-3.12 always point to a _PyCFrame, the root one when idle. */
		if (o->layout == PYTM_LAYOUT_CFRAME && !rd(t, ts + o->tstate_frame, &bad)) {
			snprintf(why, len, "thread state 0x%llx has no _PyCFrame",
				 (unsigned long long)ts);
			return -EPROTO;
		}
		frame = first_frame(t, o, ts, &bad);
		for (nframes = 0; frame && !bad && nframes < MAX_FRAMES; nframes++) {
			code = rd(t, frame + o->frame_code, &bad) & ~(uint64_t)o->frame_tag_bits;
			owner = 0;
			if (o->frame_owner != PYTM_OFF_NONE &&
			    target__read(t, frame + o->frame_owner, &owner, 1))
				bad = 1;
			/* C-stack shims hold no code object (3.13: None). */
			if (!bad && owner != o->owner_cstack) {
				if (!is_type(t, o, code, code_type)) {
					snprintf(why, len, "frame 0x%llx: 0x%llx is not a code object",
						 (unsigned long long)frame, (unsigned long long)code);
					return -EPROTO;
				}
				if (!is_type(t, o, rd(t, code + o->code_filename, &bad), str_type)) {
					snprintf(why, len, "code object 0x%llx: co_filename is not a str",
						 (unsigned long long)code);
					return -EPROTO;
				}
				ncodes++;
			}
			frame = rd(t, frame + o->frame_back, &bad);
		}
		if (bad)
			break;
		ts = rd(t, ts + o->tstate_next, &bad);
	}
	if (bad) {
		snprintf(why, len, "unreadable pointer on the way from _PyRuntime to the frames");
		return -EPROTO;
	}
	if (!nts) {
		snprintf(why, len, "the interpreter has no thread state");
		return -EPROTO;
	}
	/* A process with no Python frame at all cannot disprove them. */
	if (!ncodes)
		warn("process %d runs no Python code now: its struct offsets could not be fully checked",
		     t->pid);
	vlog("offsets agree with the process: %d thread states, %d code objects", nts, ncodes);
	return 0;
}

static const struct {
	const char *name;
	size_t off;
} fields[] = {
#define F(x) { #x, offsetof(struct pytm_offsets, x) }
	F(runtime_interpreters_head), F(interp_next), F(interp_threads_head),
	F(tstate_next), F(tstate_interp), F(tstate_thread_id), F(tstate_frame),
	F(cframe_current_frame), F(frame_back), F(frame_code), F(frame_lasti),
	F(frame_owner), F(code_filename), F(code_firstlineno), F(code_linetable),
	F(code_firsttraceable), F(code_adaptive),
#undef F
};

int validate__override(struct pytm_offsets *off, const char *assignment)
{
	const char *eq = strchr(assignment, '=');
	char *end;
	unsigned long v;
	size_t i, n;

	if (!eq)
		return -EINVAL;
	n = eq - assignment;
	errno = 0;
	v = strtoul(eq + 1, &end, 0);
	if (errno || end == eq + 1 || *end || v > 0xffff)
		return -EINVAL;
	for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		if (strlen(fields[i].name) == n && !strncmp(fields[i].name, assignment, n)) {
			*(__u16 *)((char *)off + fields[i].off) = v;
			return 0;
		}
	}
	return -ENOENT;
}
