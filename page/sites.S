/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The sampler's probe sites: called as C functions, so the arguments are
 * in rdi, rsi, rdx when the probed NOP runs. Each holds both NOP kinds;
 * the tracer probes the one it chose (user/attach/redirect.c), the other
 * runs as a NOP. Only an armed process calls them (page/sampler.c), so a
 * forked child never runs what the kernel made of a probed 5-byte NOP:
 * it calls the children's sites below.
 */
	.text
	.globl	pytm_site_alloc
	.hidden	pytm_site_alloc
	.type	pytm_site_alloc, @function
pytm_site_alloc:			/* (ptr, size, weight) */
	.byte	0x0f, 0x1f, 0x44, 0x00, 0x00		/* nop5 */
	.byte	0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00	/* nop6 */
	ret
	.size	pytm_site_alloc, . - pytm_site_alloc

	.globl	pytm_site_free
	.hidden	pytm_site_free
	.type	pytm_site_free, @function
pytm_site_free:				/* (ptr) */
	.byte	0x0f, 0x1f, 0x44, 0x00, 0x00
	.byte	0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00
	ret
	.size	pytm_site_free, . - pytm_site_free

/* An object created in a block that may be traced (pytm_reftrace): (ptr) */
	.globl	pytm_site_newref
	.hidden	pytm_site_newref
	.type	pytm_site_newref, @function
pytm_site_newref:
	.byte	0x0f, 0x1f, 0x44, 0x00, 0x00
	.byte	0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00
	ret
	.size	pytm_site_newref, . - pytm_site_newref

/* The recorder's ring was full at a free (page/sampler.c): (ptr, clock) */
	.globl	pytm_site_tomb
	.hidden	pytm_site_tomb
	.type	pytm_site_tomb, @function
pytm_site_tomb:
	.byte	0x0f, 0x1f, 0x44, 0x00, 0x00
	.byte	0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00
	ret
	.size	pytm_site_tomb, . - pytm_site_tomb

/*
 * The recorder flagged a code object it had not seen (page/sampler.c):
 * (code, clock). The tracer reads it now, while its frame runs.
 */
	.globl	pytm_site_code
	.hidden	pytm_site_code
	.type	pytm_site_code, @function
pytm_site_code:
	.byte	0x0f, 0x1f, 0x44, 0x00, 0x00
	.byte	0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00
	ret
	.size	pytm_site_code, . - pytm_site_code

/*
 * The same for a forked child that its parent's tracer follows, before
 * its own attach: 6-byte NOPs only, which the tracer probes for every
 * process mapping the page (never rewritten into a call of the parent's).
 */
	.globl	pytm_site_child_alloc
	.hidden	pytm_site_child_alloc
	.type	pytm_site_child_alloc, @function
pytm_site_child_alloc:			/* (ptr, size, weight) */
	.byte	0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00
	ret
	.size	pytm_site_child_alloc, . - pytm_site_child_alloc

	.globl	pytm_site_child_free
	.hidden	pytm_site_child_free
	.type	pytm_site_child_free, @function
pytm_site_child_free:			/* (ptr) */
	.byte	0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00
	ret
	.size	pytm_site_child_free, . - pytm_site_child_free

	.globl	pytm_site_child_newref
	.hidden	pytm_site_child_newref
	.type	pytm_site_child_newref, @function
pytm_site_child_newref:			/* (ptr) */
	.byte	0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00
	ret
	.size	pytm_site_child_newref, . - pytm_site_child_newref

/*
 * The tail of the exact-mode trampolines' children's sites (user/attach/
 * redirect.c jumps here after the site's NOP): a forked child whose
 * parent's tracer does not follow forks puts its tables back (C, below,
 * pg_unhook). Runs between a trampoline's call and its return or tail
 * jump, where every argument and the result may still be live: all
 * caller-saved registers are kept, the stack aligned for C.
 */
	.globl	pytm_child_tail
	.hidden	pytm_child_tail
	.type	pytm_child_tail, @function
pytm_child_tail:
	cmpb	$0, pytm_keep(%rip)		/* pytm_page_keep.follow */
	jne	1f
	push	%rbp
	mov	%rsp, %rbp
	and	$-16, %rsp
	push	%rax
	push	%rcx
	push	%rdx
	push	%rsi
	push	%rdi
	push	%r8
	push	%r9
	push	%r10
	push	%r11
	sub	$8, %rsp			/* 10 slots: aligned for the call */
	call	pg_unhook
	add	$8, %rsp
	pop	%r11
	pop	%r10
	pop	%r9
	pop	%r8
	pop	%rdi
	pop	%rsi
	pop	%rdx
	pop	%rcx
	pop	%rax
	mov	%rbp, %rsp
	pop	%rbp
1:	ret
	.size	pytm_child_tail, . - pytm_child_tail

	.section .note.GNU-stack, "", @progbits
