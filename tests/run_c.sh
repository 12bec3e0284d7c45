#!/bin/sh
# Runs every Check suite in $1/tests and prints "c: N passed, N failed, N skipped"
# (a suite says "SKIP n: why" for cases it left out: tu_skip in check_util.h).
BUILD=${1:-build}
passed=0; failed=0; skipped=0; status=0
for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    out=$("$t" 2>&1); rc=$?
    printf '%s\n' "$out" | grep -vE '^Running suite' || true
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+%: Checks: ' | tail -n 1)
    if [ -z "$line" ]; then
        echo "$(basename "$t"): no Check summary (exit $rc)"; failed=$((failed + 1)); status=1; continue
    fi
    for k in $(printf '%s\n' "$out" | sed -nE 's/^SKIP ([0-9]+): .*/\1/p'); do skipped=$((skipped + k)); done
    n=$(echo "$line" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
    f=$(echo "$line" | sed -E 's/.*Failures: ([0-9]+).*/\1/')
    e=$(echo "$line" | sed -E 's/.*Errors: ([0-9]+).*/\1/')
    passed=$((passed + n - f - e)); failed=$((failed + f + e))
    [ "$rc" = 0 ] && [ $((f + e)) = 0 ] || status=1
done
echo "c: $passed passed, $failed failed, $skipped skipped"
exit $status
