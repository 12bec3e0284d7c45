#!/bin/sh
# `make fuzz`: runs each libFuzzer target for FUZZ_SECONDS (default 60) from
# its committed seeds plus the corpus it grew on earlier runs, then prints
# one line per target: executions, corpus size and findings (crashes, leaks,
# timeouts, out-of-memory inputs, saved under $BUILD/fuzz/findings/<target>/).
# Run from the repository root (the CSV target loads modules/).
BUILD=${1:-build-fuzz}
shift
SECONDS_EACH=${FUZZ_SECONDS:-60}
status=0
for t in "$@"; do
    dir=$BUILD/fuzz
    corpus=$dir/corpus/$t
    findings=$dir/findings/$t
    log=$dir/$t.log
    mkdir -p "$corpus" "$findings"
    # One thread: the fuzzer measures the parsers, not OpenMP start-up.
    # Leaks inside third-party libraries are listed in tests/lsan.supp.
    LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0" \
    OMP_NUM_THREADS=1 "$dir/fuzz_$t" -max_total_time="$SECONDS_EACH" -timeout=20 \
        -rss_limit_mb=3072 -malloc_limit_mb=1536 -print_final_stats=1 \
        -artifact_prefix="$findings/" "$corpus" "tests/fuzz/seeds/$t" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    found=$(find "$findings" -type f | wc -l)
    echo "fuzz $t: ${runs:-?} executions in $SECONDS_EACH s, corpus $(ls "$corpus" | wc -l) inputs," \
         "$found findings (exit $rc, log $log)"
    [ "$rc" = 0 ] && [ "$found" = 0 ] || status=1
done
exit $status
