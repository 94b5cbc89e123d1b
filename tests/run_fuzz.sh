#!/bin/sh
# Run libFuzzer targets: SECONDS FINDINGS_DIR TARGET...
# Each runs every input of its corpus (tests/fuzz/corpus/NAME, NAME being
# the target's name without "fuzz_") once, its regression inputs among
# them, then fuzzes from it for SECONDS; new inputs go to a scratch
# directory, crashes to FINDINGS_DIR. Ends with "fuzz: N passed, N failed".
secs=$1; findings=$2; shift 2
mkdir -p "$findings"
passed=0; failed=0
for t in "$@"; do
	name=$(basename "$t")
	corpus=tests/fuzz/corpus/${name#fuzz_}
	if [ -z "$(ls "$corpus" 2>/dev/null)" ]; then
		echo "$name: no corpus in $corpus"; failed=$((failed + 1)); continue
	fi
	work=$(mktemp -d)
	if "$t" -runs=0 "$corpus" > "$work/log" 2>&1 &&
	   "$t" -max_total_time="$secs" -timeout=10 -max_len=65536 -print_final_stats=1 \
		-artifact_prefix="$findings/$name-" "$work" "$corpus" > "$work/log" 2>&1; then
		execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
		echo "$name: ok, $execs executions in $secs s, corpus $(ls "$corpus" | wc -l) + $(ls "$work" | grep -vc '^log$') new"
		passed=$((passed + 1))
	else
		echo "$name: FAILED (findings in $findings)"; tail -n 40 "$work/log"
		failed=$((failed + 1))
	fi
	rm -rf "$work"
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
