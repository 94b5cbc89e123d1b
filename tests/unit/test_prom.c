// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The Accept negotiation of /metrics. The exposition itself is checked by
 * the real reader: Prometheus in tests/test_serve.py.
 */
#include "prom.h"
#include "unit.h"

static void test_accept(void)
{
	static const struct {
		const char *accept;
		bool om;
	} cases[] = {
		/* What Prometheus 2.42 sends. */
		{ "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
		  "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", true },
		/* What Prometheus sends with OpenMetrics turned off. */
		{ "text/plain;version=0.0.4;q=1,*/*;q=0.1", false },
		{ NULL, false },
		{ "", false },
		{ "*/*", false },
		{ "application/openmetrics-text", true },
		{ "application/openmetrics-text; q=0.2, text/plain", false },
		{ "text/plain; q=0.2, application/openmetrics-text; q=0.9", true },
		{ "application/openmetrics-text;q=0", false },
		{ "application/json", false },
		{ "application/openmetrics-text; version=1.0.0; q=0.5, text/*; q=0.5", true },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CHECK(prom__wants_openmetrics(cases[i].accept) == cases[i].om,
		      "Accept: %s", cases[i].accept ?: "(none)");
}

int main(void)
{
	test_accept();
	return unit_done("prom");
}
