// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * What a user types: --control command lines, numbers and sizes, --serve
 * addresses, filters and their fnmatch patterns. The input is split at
 * NUL bytes: its first byte picks the reader, the pieces are its text.
 */
#include <stdlib.h>
#include <string.h>
#include "control.h"
#include "http.h"
#include "report.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
	struct report_filter *f;
	struct control_cmd cmd;
	struct http_opts ho;
	char *text, *second;
	long long v;

	if (len < 1)
		return 0;
	text = malloc(len + 1);
	if (!text)
		return 0;
	memcpy(text, data + 1, len - 1);
	text[len - 1] = '\0';
	text[len] = '\0';
	second = text + strlen(text) + 1;	/* after the first NUL, or "" */
	if (second > text + len - 1)
		second = text + len;
	error__quiet(true);
	switch (data[0] % 6) {
	case 0:
		control__parse(text, &cmd);
		if (cmd.kind == CONTROL_SNAPSHOT && !cmd.path)
			abort();
		break;
	case 1:
		parse_num(text, -1000, 1LL << 40, &v);
		parse_size(text, 0, 1LL << 40, &v);
		break;
	case 2:
		memset(&ho, 0, sizeof(ho));
		http__parse_addr(text, &ho);
		break;
	case 3:
		f = calloc(1, sizeof(*f));
		if (f) {
			report__parse_filter(f, text, true, false);
			free(f);
		}
		break;
	default:
		report__fnmatch(text, second);
		break;
	}
	free(text);
	return 0;
}
