// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Struct offsets of CPython versions: the generated 3.8-3.12 table, and the
 * _Py_DebugOffsets block that 3.13+ keep at the start of _PyRuntime.
 */
#include <string.h>
#include "pyoffsets.h"
#include "pyoffsets_table.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

const struct pytm_offsets *pyoffsets__lookup(uint32_t hexversion)
{
	uint32_t major = hexversion >> 24, minor = (hexversion >> 16) & 0xff;
	size_t i;

	/* 3.13+ publish their own offsets; the table's 3.13 entry is a check. */
	if (major != 3 || minor < 8 || minor > 12)
		return NULL;
	for (i = 0; i < ARRAY_SIZE(pyoffsets_table); i++) {
		if ((pyoffsets_table[i].hexversion >> 16) == (hexversion >> 16))
			return &pyoffsets_table[i];
	}
	return NULL;
}

/*
 * Mirrors of _Py_DebugOffsets (Include/internal/pycore_runtime.h in 3.13,
 * pycore_debug_offsets.h in 3.14): every member is a uint64_t, so there is
 * no padding and the layout is the member order. CPython promises it
 * stable within a minor version only, hence one mirror per minor version.
 * Sections we do not read are kept whole so the following ones land right.
 */
struct debug_head {
	char cookie[8];			/* "xdebugpy" */
	__u64 version;			/* PY_VERSION_HEX */
	__u64 free_threaded;
};

struct debug_runtime {
	__u64 size;
	__u64 finalizing;
	__u64 interpreters_head;
};

struct debug_tstate {
	__u64 size;
	__u64 prev;
	__u64 next;
	__u64 interp;
	__u64 current_frame;
	__u64 thread_id;
	__u64 native_thread_id;
	__u64 datastack_chunk;
	__u64 status;
};

struct debug_pyobject {
	__u64 size;
	__u64 ob_type;
};

struct debug_varobj {			/* tuple, list: size, ob_item, ob_size */
	__u64 size;
	__u64 ob_item;
	__u64 ob_size;
};

struct debug_bytes {
	__u64 size;
	__u64 ob_size;
	__u64 ob_sval;
};

struct debug_unicode {
	__u64 size;			/* sizeof(PyUnicodeObject) */
	__u64 state;
	__u64 length;
	__u64 asciiobject_size;
};

struct debug_offsets_313 {
	struct debug_head head;
	struct debug_runtime runtime_state;
	struct {
		__u64 size;
		__u64 id;
		__u64 next;
		__u64 threads_head;
		__u64 gc;
		__u64 imports_modules;
		__u64 sysdict;
		__u64 builtins;
		__u64 ceval_gil;
		__u64 gil_runtime_state;
		__u64 gil_runtime_state_enabled;
		__u64 gil_runtime_state_locked;
		__u64 gil_runtime_state_holder;
	} interpreter_state;
	struct debug_tstate thread_state;
	struct {
		__u64 size;
		__u64 previous;
		__u64 executable;
		__u64 instr_ptr;
		__u64 localsplus;
		__u64 owner;
	} interpreter_frame;
	struct {
		__u64 size;
		__u64 filename;
		__u64 name;
		__u64 qualname;
		__u64 linetable;
		__u64 firstlineno;
		__u64 argcount;
		__u64 localsplusnames;
		__u64 localspluskinds;
		__u64 co_code_adaptive;
	} code_object;
	struct debug_pyobject pyobject;
	__u64 type_object[4];
	struct debug_varobj tuple_object;
	struct debug_varobj list_object;
	__u64 dict_object[3];
	__u64 float_object[2];
	__u64 long_object[3];
	struct debug_bytes bytes_object;
	struct debug_unicode unicode_object;
	__u64 gc[2];
};

/* 3.14 added sections and fields in the middle: a separate mirror. */
struct debug_offsets_314 {
	struct debug_head head;
	struct debug_runtime runtime_state;
	struct {
		__u64 size;
		__u64 id;
		__u64 next;
		__u64 threads_head;
		__u64 threads_main;
		__u64 gc;
		__u64 imports_modules;
		__u64 sysdict;
		__u64 builtins;
		__u64 ceval_gil;
		__u64 gil_runtime_state;
		__u64 gil_runtime_state_enabled;
		__u64 gil_runtime_state_locked;
		__u64 gil_runtime_state_holder;
		__u64 code_object_generation;
		__u64 tlbc_generation;
	} interpreter_state;
	struct debug_tstate thread_state;
	struct {
		__u64 size;
		__u64 previous;
		__u64 executable;
		__u64 instr_ptr;
		__u64 localsplus;
		__u64 owner;
		__u64 stackpointer;
		__u64 tlbc_index;	/* 0 unless free-threaded */
	} interpreter_frame;
	struct {
		__u64 size;
		__u64 filename;
		__u64 name;
		__u64 qualname;
		__u64 linetable;
		__u64 firstlineno;
		__u64 argcount;
		__u64 localsplusnames;
		__u64 localspluskinds;
		__u64 co_code_adaptive;
		__u64 co_tlbc;		/* 0 unless free-threaded */
	} code_object;
	struct debug_pyobject pyobject;
	__u64 type_object[4];
	struct debug_varobj tuple_object;
	struct debug_varobj list_object;
	__u64 set_object[4];
	__u64 dict_object[3];
	__u64 float_object[2];
	__u64 long_object[3];
	struct debug_bytes bytes_object;
	struct debug_unicode unicode_object;
	__u64 gc[2];
	__u64 gen_object[4];
	__u64 llist_node[2];
	__u64 debugger_support[6];
};

_Static_assert(sizeof(struct debug_offsets_313) == 584,
	       "3.13 _Py_DebugOffsets is 584 bytes");
_Static_assert(sizeof(struct debug_offsets_314) == 760,
	       "3.14 _Py_DebugOffsets is 760 bytes");

/* Fields of both mirrors that we use, widened for checking. */
struct debug_fields {
	__u64 version, free_threaded;
	__u64 runtime_size, interpreters_head;
	__u64 interp_size, interp_next, threads_head;
	__u64 tstate_size, tstate_next, tstate_interp, tstate_frame;
	__u64 thread_id, native_thread_id;
	__u64 frame_size, previous, executable, instr_ptr, owner;
	__u64 code_size, filename, name, qualname, linetable, firstlineno;
	__u64 adaptive, tlbc;
	__u64 object_size, ob_type;
	__u64 type_size, tp_flags;
	__u64 var_size, ob_size;
	__u64 bytes_size, ob_sval;
	__u64 unicode_size, state, length, ascii_size;
};

#define COPY_COMMON(f, d) do {						\
	(f)->version = (d)->head.version;				\
	(f)->free_threaded = (d)->head.free_threaded;			\
	(f)->runtime_size = (d)->runtime_state.size;			\
	(f)->interpreters_head = (d)->runtime_state.interpreters_head;	\
	(f)->interp_size = (d)->interpreter_state.size;			\
	(f)->interp_next = (d)->interpreter_state.next;			\
	(f)->threads_head = (d)->interpreter_state.threads_head;	\
	(f)->tstate_size = (d)->thread_state.size;			\
	(f)->tstate_next = (d)->thread_state.next;			\
	(f)->tstate_interp = (d)->thread_state.interp;			\
	(f)->tstate_frame = (d)->thread_state.current_frame;		\
	(f)->thread_id = (d)->thread_state.thread_id;			\
	(f)->native_thread_id = (d)->thread_state.native_thread_id;	\
	(f)->frame_size = (d)->interpreter_frame.size;			\
	(f)->previous = (d)->interpreter_frame.previous;		\
	(f)->executable = (d)->interpreter_frame.executable;		\
	(f)->instr_ptr = (d)->interpreter_frame.instr_ptr;		\
	(f)->owner = (d)->interpreter_frame.owner;			\
	(f)->code_size = (d)->code_object.size;				\
	(f)->filename = (d)->code_object.filename;			\
	(f)->name = (d)->code_object.name;				\
	(f)->qualname = (d)->code_object.qualname;			\
	(f)->linetable = (d)->code_object.linetable;			\
	(f)->firstlineno = (d)->code_object.firstlineno;		\
	(f)->adaptive = (d)->code_object.co_code_adaptive;		\
	(f)->object_size = (d)->pyobject.size;				\
	(f)->ob_type = (d)->pyobject.ob_type;				\
	(f)->type_size = (d)->type_object[0];				\
	(f)->tp_flags = (d)->type_object[3];				\
	(f)->var_size = (d)->tuple_object.size;				\
	(f)->ob_size = (d)->tuple_object.ob_size;			\
	(f)->bytes_size = (d)->bytes_object.size;			\
	(f)->ob_sval = (d)->bytes_object.ob_sval;			\
	(f)->unicode_size = (d)->unicode_object.size;			\
	(f)->state = (d)->unicode_object.state;				\
	(f)->length = (d)->unicode_object.length;			\
	(f)->ascii_size = (d)->unicode_object.asciiobject_size;		\
} while (0)

/*
 * A WIDTH-byte field at offset OFF inside a struct of SIZE bytes, small
 * enough for a __u16 offset: anything else is garbage or a layout we do
 * not understand.
 */
static int field_ok(__u64 off, __u64 width, __u64 size)
{
	return size < (1ULL << 32) && off < PYTM_OFF_NONE &&
	       off + width <= size;
}

/* Sizes the debug offsets leave out, per minor version (see below). */
struct debug_derived {
	__u8 owner_generator;
	__u8 owner_entry;
	__u16 tag_bits;
};

static int debug__fill(const struct debug_fields *f,
		       const struct debug_derived *d,
		       struct pytm_offsets *out)
{
	const __u64 ptr = sizeof(__u64);
	__u64 firsttraceable, compact;

	/* Every offset must point inside its struct (sizes included). */
	if (!field_ok(f->interpreters_head, ptr, f->runtime_size) ||
	    !field_ok(f->interp_next, ptr, f->interp_size) ||
	    !field_ok(f->threads_head, ptr, f->interp_size) ||
	    !field_ok(f->tstate_next, ptr, f->tstate_size) ||
	    !field_ok(f->tstate_interp, ptr, f->tstate_size) ||
	    !field_ok(f->tstate_frame, ptr, f->tstate_size) ||
	    !field_ok(f->thread_id, ptr, f->tstate_size) ||
	    !field_ok(f->native_thread_id, ptr, f->tstate_size) ||
	    !field_ok(f->previous, ptr, f->frame_size) ||
	    !field_ok(f->executable, ptr, f->frame_size) ||
	    !field_ok(f->instr_ptr, ptr, f->frame_size) ||
	    !field_ok(f->owner, 1, f->frame_size) ||
	    !field_ok(f->filename, ptr, f->code_size) ||
	    !field_ok(f->name, ptr, f->code_size) ||
	    !field_ok(f->qualname, ptr, f->code_size) ||
	    !field_ok(f->linetable, ptr, f->code_size) ||
	    !field_ok(f->firstlineno, 4, f->code_size) ||
	    !field_ok(f->adaptive, 1, f->code_size) ||
	    !field_ok(f->ob_type, ptr, f->object_size) ||
	    !field_ok(f->ob_size, ptr, f->var_size) ||
	    !field_ok(f->ob_sval, 1, f->bytes_size) ||
	    !field_ok(f->length, ptr, f->ascii_size) ||
	    !field_ok(f->state, 4, f->ascii_size) ||
	    !field_ok(f->ascii_size, 0, f->unicode_size))
		return -1;

	/*
	 * Not in _Py_DebugOffsets: _co_firsttraceable. In 3.13 and 3.14 (GIL
	 * builds) PyCodeObject ends "int _co_firsttraceable; void *co_extra;
	 * char co_code_adaptive[]", the int following a pointer-sized field,
	 * so it sits two words before the bytecode. Checked against the
	 * 3.13.0 headers by the unit test (tools/gen_offsets.py).
	 */
	if (f->adaptive < 2 * ptr)
		return -1;
	firsttraceable = f->adaptive - 2 * ptr;
	if (firsttraceable <= f->linetable || firsttraceable <= f->qualname)
		return -1;

	/*
	 * Not in _Py_DebugOffsets: sizeof(PyCompactUnicodeObject), where
	 * non-ASCII compact data starts. It is PyASCIIObject plus
	 * Py_ssize_t utf8_length and char *utf8, and PyUnicodeObject adds one
	 * data pointer after it: both derivations must agree.
	 */
	compact = f->ascii_size + 2 * ptr;
	if (compact + ptr != f->unicode_size)
		return -1;

	memset(out, 0, sizeof(*out));
	out->hexversion = (__u32)f->version;
	out->layout = PYTM_LAYOUT_DIRECT;
	out->lasti_kind = PYTM_LASTI_INSTR_PTR;
	out->runtime_interpreters_head = f->interpreters_head;
	out->interp_next = f->interp_next;
	out->interp_threads_head = f->threads_head;
	out->tstate_next = f->tstate_next;
	out->tstate_interp = f->tstate_interp;
	out->tstate_thread_id = f->thread_id;
	out->tstate_native_thread_id = f->native_thread_id;
	out->tstate_frame = f->tstate_frame;
	out->cframe_current_frame = PYTM_OFF_NONE;
	out->frame_back = f->previous;
	out->frame_code = f->executable;
	out->frame_lasti = f->instr_ptr;
	out->frame_owner = f->owner;
	out->owner_generator = d->owner_generator;
	out->owner_cstack = d->owner_entry;
	out->frame_tag_bits = d->tag_bits;
	out->object_type = f->ob_type;
	out->varobject_size = f->ob_size;
	out->code_filename = f->filename;
	out->code_name = f->name;
	out->code_qualname = f->qualname;
	out->code_firstlineno = f->firstlineno;
	out->code_linetable = f->linetable;
	out->code_firsttraceable = firsttraceable;
	out->code_adaptive = f->adaptive;
	out->code_code = PYTM_OFF_NONE;
	out->bytes_sval = f->ob_sval;
	out->unicode_length = f->length;
	out->unicode_state = f->state;
	out->unicode_ascii_size = f->ascii_size;
	out->unicode_compact_size = compact;
	/* 3.13+ keep the current tstate in a thread-local, not the TSS key. */
	out->runtime_tss_key = PYTM_OFF_NONE;
	out->runtime_tstate_current = PYTM_OFF_NONE;
	/* For the reference tracer's block address (GC header before objects). */
	if (!f->free_threaded && field_ok(f->tp_flags, 8, f->type_size))
		out->type_flags = f->tp_flags;
	return 0;
}

int pyoffsets__from_debug(const void *buf, size_t len,
			  struct pytm_offsets *out)
{
	struct debug_offsets_313 d313;
	struct debug_offsets_314 d314;
	struct debug_fields f;
	struct debug_head head;
	struct debug_derived derived;
	__u64 minor;

	if (!buf || !out || len < sizeof(head))
		return -1;
	memcpy(&head, buf, sizeof(head));
	if (memcmp(head.cookie, "xdebugpy", sizeof(head.cookie)))
		return -1;
	/*
	 * The layout is only promised for one minor version, and it moved
	 * during pre-releases: accept final releases (level 0xF) only.
	 */
	if ((head.version >> 24) != 3 || (head.version & 0xf0) != 0xf0 ||
	    head.free_threaded > 1)
		return -1;
	minor = (head.version >> 16) & 0xff;

	memset(&f, 0, sizeof(f));
	switch (minor) {
	case 13:
		if (len < sizeof(d313))
			return -1;
		memcpy(&d313, buf, sizeof(d313));
		COPY_COMMON(&f, &d313);
		/*
		 * enum _frameowner of 3.12/3.13: THREAD 0, GENERATOR 1,
		 * FRAME_OBJECT 2, CSTACK 3 (the entry frame, whose
		 * f_executable is Py_None). f_executable is a plain pointer.
		 */
		derived = (struct debug_derived){
			.owner_generator = 1, .owner_entry = 3, .tag_bits = 0,
		};
		break;
	case 14:
		if (len < sizeof(d314))
			return -1;
		memcpy(&d314, buf, sizeof(d314));
		COPY_COMMON(&f, &d314);
		f.tlbc = d314.code_object.co_tlbc;
		/*
		 * Free-threaded 3.14 runs per-thread copies of the bytecode:
		 * instr_ptr points into co_tlbc[frame->tlbc_index], not
		 * co_code_adaptive, which struct pytm_offsets cannot express.
		 */
		if (f.free_threaded || f.tlbc)
			return -1;
		/*
		 * 3.14 renumbered enum _frameowner: THREAD 0, GENERATOR 1,
		 * FRAME_OBJECT 2, INTERPRETER 3, CSTACK 4. The C entry frame
		 * of _PyEval_EvalFrameDefault is now owned by INTERPRETER
		 * (CSTACK is never assigned), and CPython's own readers skip
		 * owner >= INTERPRETER: report 3 as the entry-frame owner.
		 *
		 * f_executable is a _PyStackRef. Py_TAG_BITS is 1 in 3.14
		 * (Py_TAG_REFCNT, or Py_TAG_DEFERRED free-threaded) but tagged
		 * ints set bit 1 too (Py_INT_TAG 3) and 3.15 widens the mask to
		 * 3; objects are at least 8-byte aligned, so clearing both low
		 * bits is right for every code-object reference.
		 */
		derived = (struct debug_derived){
			.owner_generator = 1, .owner_entry = 3, .tag_bits = 3,
		};
		break;
	default:
		return -1;
	}
	return debug__fill(&f, &derived, out);
}
