// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Line numbers of CPython code objects, computed from the bytes of their
 * line table the way each interpreter's PyCode_Addr2Line does it.
 *
 * Three formats:
 *  - 3.6-3.9 co_lnotab: pairs (byte delta: unsigned, line delta: signed).
 *  - 3.10 co_linetable: pairs (byte delta: unsigned, line delta: signed,
 *    -128 = "no line"), each pair one address range.
 *  - 3.11+ location table: entries of a first byte 1kkkkLLL (kind k,
 *    L+1 code units) and, for some kinds, varints (line delta, columns).
 *
 * The table comes from another process's memory: every read is bounded by
 * LEN, every loop by LEN, line arithmetic is done in 64 bits, and whatever
 * does not decode gives -1.
 */
#include <stdint.h>
#include <stddef.h>
#include <limits.h>
#include "linetable.h"

#define PY_VER(major, minor)	(((uint32_t)(major) << 24) | ((uint32_t)(minor) << 16))

/* 3.11+ location entry kinds (Include/cpython/code.h). */
enum {
	LOC_ONE_LINE0 = 10,
	LOC_ONE_LINE1 = 11,
	LOC_ONE_LINE2 = 12,
	LOC_NO_COLUMNS = 13,
	LOC_LONG = 14,
	LOC_NONE = 15,
};

/* Lines outside int's range only come from garbage: call that bad data. */
static int line_ok(int64_t line)
{
	return line >= INT_MIN && line <= INT_MAX;
}

/*
 * 3.6-3.9: walk (addr, line) pairs until the address passes ADDRQ. The
 * interpreter never reports "no line": it answers firstlineno even for a
 * negative ADDRQ or an empty table; an odd trailing byte is ignored.
 */
static int lnotab__addr2line(const uint8_t *t, size_t len, int firstlineno,
			     int addrq)
{
	int64_t line = firstlineno, addr = 0;
	size_t i;

	for (i = 0; i + 1 < len; i += 2) {
		addr += t[i];
		if (addr > addrq)
			break;
		line += (int8_t)t[i + 1];
	}
	return line_ok(line) ? (int)line : -1;
}

/*
 * 3.10: each pair is a range [start, start + delta) of line += ldelta, or
 * of no line when ldelta is -128 (the line then stays where it was).
 * Empty ranges only move the line. Past the last range: -1.
 */
static int linetable310__addr2line(const uint8_t *t, size_t len,
				   int firstlineno, int addrq)
{
	int64_t line = firstlineno, end = 0;
	size_t i;

	if (addrq < 0)
		return firstlineno;
	for (i = 0; i + 1 < len; i += 2) {
		int ldelta = (int8_t)t[i + 1];
		int ar_line;

		end += t[i];
		if (ldelta != -128)
			line += ldelta;
		if (!line_ok(line))
			return -1;
		ar_line = ldelta == -128 ? -1 : (int)line;
		/* Ranges are visited in order, so ADDRQ >= their start. */
		if (addrq < end)
			return ar_line;
	}
	return -1;
}

/*
 * A 3.11+ signed varint at T[*I]: 6-bit chunks, least significant first,
 * bit 6 = more follow; bit 0 of the value is the sign. 0 and *I moved past
 * it, or -1 when it runs off the table or is wider than any line delta.
 */
static int loctable__svarint(const uint8_t *t, size_t len, size_t *i,
			     int64_t *out)
{
	uint64_t val = 0;
	unsigned int shift = 0;
	uint8_t b;

	do {
		if (*i >= len || shift > 30)
			return -1;
		b = t[(*i)++];
		val |= (uint64_t)(b & 63) << shift;
		shift += 6;
	} while (b & 64);
	/* The interpreter keeps 32 bits of it (unsigned int). */
	val &= 0xffffffffu;
	*out = (val & 1) ? -(int64_t)(val >> 1) : (int64_t)(val >> 1);
	return 0;
}

/*
 * 3.11-3.14 location table. An entry starts with a byte that has bit 7 set;
 * the bytes after it, up to the next such byte, are its varints. Kinds
 * 13 and 14 carry a line delta as their first varint, 11 and 12 imply +1
 * and +2, every other kind keeps the line; only a first byte of 0xf8-0xff
 * (kind 15) means "no line". Negative ADDRQ: firstlineno; past the
 * end: -1.
 */
static int loctable__addr2line(const uint8_t *t, size_t len, int firstlineno,
			       int addrq)
{
	int64_t line = firstlineno, end = 0, delta;
	size_t i = 0, v;
	uint8_t b;
	int ar_line;

	if (addrq < 0)
		return firstlineno;
	while (i < len) {
		b = t[i];
		switch ((b >> 3) & 15) {
		case LOC_NO_COLUMNS:
		case LOC_LONG:
			v = i + 1;
			if (loctable__svarint(t, len, &v, &delta))
				return -1;
			line += delta;
			break;
		case LOC_ONE_LINE1:
			line += 1;
			break;
		case LOC_ONE_LINE2:
			line += 2;
			break;
		default:
			break;
		}
		if (!line_ok(line))
			return -1;
		ar_line = (b >> 3) == 0x1f ? -1 : (int)line;
		end += ((b & 7) + 1) * 2;
		/* Skip the entry's varints: to the next byte with bit 7 set. */
		for (i++; i < len && !(t[i] & 128); i++)
			;
		if (addrq < end)
			return ar_line;
	}
	return -1;
}

int linetable__addr2line(uint32_t hexversion, const uint8_t *table,
			 size_t len, int firstlineno, int addrq)
{
	uint32_t ver = hexversion & 0xffff0000u;

	if (!table)
		len = 0;
	if (ver >= PY_VER(3, 6) && ver < PY_VER(3, 10))
		return lnotab__addr2line(table, len, firstlineno, addrq);
	if (ver == PY_VER(3, 10))
		return linetable310__addr2line(table, len, firstlineno, addrq);
	if (ver >= PY_VER(3, 11) && ver <= PY_VER(3, 14))
		return loctable__addr2line(table, len, firstlineno, addrq);
	/* A format we do not know: no line rather than a wrong one. */
	return -1;
}
