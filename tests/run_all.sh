#!/bin/sh
# `make test`: every suite, then one closing line summing them all.
BUILD=${1:-build}
log=$(mktemp); trap 'rm -f "$log"' EXIT
status=0
run() { "$@" 2>&1 | tee -a "$log"; rc=$(cat "$log.rc" 2>/dev/null || echo 0); }
for suite in "sh tests/run_c.sh $BUILD" "./machrt tests/lua/run.lua" "sh tests/host/run.sh"; do
    echo "== $suite"
    { $suite; echo $? > "$log.rc"; } 2>&1 | tee -a "$log"
    [ "$(cat "$log.rc")" = 0 ] || status=1
done
rm -f "$log.rc"
passed=0; failed=0; skipped=0
for l in $(grep -E '^[a-z-]+: [0-9]+ passed, [0-9]+ failed' "$log" | sed -E 's/^[a-z-]+: ([0-9]+) passed, ([0-9]+) failed(, ([0-9]+) skipped)?.*/\1:\2:\4/'); do
    passed=$((passed + ${l%%:*})); rest=${l#*:}; failed=$((failed + ${rest%%:*}))
    s=${rest#*:}; skipped=$((skipped + ${s:-0}))
done
[ "$status" = 0 ] || [ "$failed" != 0 ] || failed=1
echo "total: $passed passed, $failed failed, $skipped skipped"
exit $status
