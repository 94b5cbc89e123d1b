/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The sampler's probe sites: called as C functions, so the arguments are
 * in rdi, rsi, rdx when the probed NOP runs. Each holds both NOP kinds;
 * the tracer probes the one it chose (user/attach/redirect.c), the other
 * runs as a NOP. Only an armed process calls them (page/sampler.c), so a
 * forked child never runs what the kernel made of a probed 5-byte NOP.
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

	.section .note.GNU-stack, "", @progbits
