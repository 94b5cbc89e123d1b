/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Check a version's struct offsets against a live process before use. */
#ifndef __PYTM_VALIDATE_H
#define __PYTM_VALIDATE_H

#include <stddef.h>
#include "pytm.h"

struct target;

/*
 * Walk interpreters -> thread states -> frames -> code objects of T with
 * OFF and check every pointer and type on the way. 0 when they agree;
 * -EPROTO with the first disagreement in WHY otherwise.
 */
int validate__offsets(const struct target *t, const struct pytm_offsets *off,
		      char *why, size_t len);
/* Apply "field=value" to OFF (a debugging aid: --debug-offset). */
int validate__override(struct pytm_offsets *off, const char *assignment);

#endif /* __PYTM_VALIDATE_H */
