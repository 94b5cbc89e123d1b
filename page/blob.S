/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The linked sampler (PYTM_PAGE_BIN: $(OUTPUT)/page/page.bin), as bytes in the tracer. */
	.section .rodata
	.globl	pytm_page_blob
	.globl	pytm_page_blob_end
	.balign	16
pytm_page_blob:
	.incbin	PYTM_PAGE_BIN
pytm_page_blob_end:

	.section .note.GNU-stack, "", @progbits
