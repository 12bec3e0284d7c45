#!/bin/sh
# Checks of the machrt host program, run from the repository root after
# `make`: options, the arg table, error reporting and exit status, the REPL
# on piped stdin, module resolution from another directory, and the C module
# loaded by the stock lua5.4 interpreter. Prints "host: N passed, N failed".
BUILD=${1:-build}
ROOT=$(pwd -P) # the host resolves its own path with realpath
BIN="$ROOT/machrt"
SO="$ROOT/$BUILD/lua/machrt.so"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/machrt-host.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

passed=0
failed=0

# A hung REPL must fail the check, not stall `make test`.
if command -v timeout >/dev/null 2>&1; then TO="timeout 30"; else TO=""; fi

show() { sed -n '1,15s/^/#     /p' "$1"; }

pass() { passed=$((passed + 1)); echo "ok - $1"; }
fail() {
    failed=$((failed + 1))
    echo "not ok - $1"
    [ -n "${2:-}" ] && echo "#   $2"
    echo "#   exit status: $rc"
    echo "#   stdout:"; show "$tmp/out"
    echo "#   stderr:"; show "$tmp/err"
}

# run CMD...       stdin from /dev/null
# feed TEXT CMD... stdin is TEXT
run() { $TO "$@" </dev/null >"$tmp/out" 2>"$tmp/err"; rc=$?; }
feed() {
    printf '%s\n' "$1" >"$tmp/in"; shift
    $TO "$@" <"$tmp/in" >"$tmp/out" 2>"$tmp/err"; rc=$?
}

# check NAME CONDITION [EXPLANATION]: CONDITION is shell code over $rc and
# the files $tmp/out, $tmp/err.
check() { if eval "$2"; then pass "$1"; else fail "$1" "${3:-expected: $2}"; fi; }

out_is() { [ "$(cat "$tmp/out")" = "$1" ]; }
out_has() { grep -qF -- "$1" "$tmp/out"; }
err_has() { grep -qF -- "$1" "$tmp/err"; }
out_empty() { [ ! -s "$tmp/out" ]; }

if [ ! -x "$BIN" ]; then
    rc=-; : >"$tmp/out"; : >"$tmp/err"
    fail "machrt binary exists" "no executable at $BIN (run make first)"
    echo "host: $passed passed, $failed failed"
    exit 1
fi

# ---- options ----------------------------------------------------------------
run "$BIN" --version
check "--version prints 'machrt X.Y.Z (Lua 5.4.x)' and exits 0" \
    '[ $rc = 0 ] && grep -Eqx "machrt [0-9]+\.[0-9]+\.[0-9]+ \(Lua 5\.4\.[0-9]+\)" "$tmp/out"'

run "$BIN" --help
check "--help prints usage and exits 0" '[ $rc = 0 ] && out_has "usage:"'

run "$BIN" --no-such-option
check "unknown option is a usage error with exit 1" \
    '[ $rc = 1 ] && err_has "usage:" && err_has "--no-such-option"'

# ---- scripts and -e -----------------------------------------------------------
cat >"$tmp/args.lua" <<'EOF'
print(arg[0], arg[1], arg[2], #arg)
print(select("#", ...), ...)
EOF
run "$BIN" "$tmp/args.lua" alpha "b c"
check "script sees arg[0], arg[1], arg[2] and ..." \
    'out_is "$(printf "%s\t%s\t%s\t%s\n%s\t%s\t%s" "$tmp/args.lua" alpha "b c" 2 2 alpha "b c")"'

run "$BIN" -e 'print(6 * 7)'
check "-e CODE runs the code" '[ $rc = 0 ] && out_is 42'

printf 'print(x, arg[-1], arg[-2], arg[-3])\n' >"$tmp/neg.lua"
run "$BIN" -e 'x = 7' "$tmp/neg.lua"
check "-e runs before the script; options get negative arg indices" \
    '[ $rc = 0 ] && out_is "$(printf "7\tx = 7\t-e\t%s" "$BIN")"'

printf 'print(greeting .. ", " .. arg[1])\n' >"$tmp/greet.lua"
run "$BIN" -e 'greeting = "hello"' "$tmp/greet.lua" world
check "-e combined with a script shares globals" '[ $rc = 0 ] && out_is "hello, world"'

run "$BIN" -e 'os.exit(3)'
check "os.exit status is the process status" '[ $rc = 3 ]'

# ---- errors -----------------------------------------------------------------
printf 'local function inner() error("deliberate failure") end\ninner()\nprint("unreachable")\n' \
    >"$tmp/fail.lua"
run "$BIN" "$tmp/fail.lua"
check "runtime error: exit 1, message and traceback on stderr, nothing on stdout" \
    '[ $rc = 1 ] && err_has "deliberate failure" && err_has "stack traceback" && err_has "inner" && out_empty'

run "$BIN" -e 'error("from -e")'
check "error in -e exits 1 with traceback" '[ $rc = 1 ] && err_has "from -e" && err_has "stack traceback"'

run "$BIN" -e 'error(setmetatable({}, {__tostring = function() return "custom error object" end}))'
check "error object with __tostring is printed through it" \
    '[ $rc = 1 ] && err_has "custom error object" && err_has "stack traceback"'

printf 'local x = = 1\n' >"$tmp/syntax.lua"
run "$BIN" "$tmp/syntax.lua"
check "syntax error exits 1 naming the file" '[ $rc = 1 ] && err_has "syntax.lua:1:" && out_empty'

run "$BIN" "$tmp/does-not-exist.lua"
check "missing script exits 1 naming the file" '[ $rc = 1 ] && err_has "does-not-exist.lua"'

# ---- user errors, tracebacks on request, Ctrl-C ----------------------------------
run "$BIN" -e 'error("dataset.folds: no fold 9", 0)'
user_rc=$rc; user_err=$(cat "$tmp/err")
printf 'error("x.lua:3: attempt to index a nil value", 0)\n' >"$tmp/relay.lua"
run "$BIN" "$tmp/relay.lua"
check "a user's error (error(msg, 0)) is one line and exit 2; one that carries a code position is a bug (traceback, exit 1)" \
    '[ $user_rc = 2 ] && [ "$user_err" = "machrt: dataset.folds: no fold 9" ] && [ $rc = 1 ] && err_has "stack traceback"'

run "$BIN" --traceback -e 'error("dataset.folds: no fold 9", 0)'
check "--traceback shows the traceback of a user's error too, still exit 2" \
    '[ $rc = 2 ] && err_has "no fold 9" && err_has "stack traceback"'

rc=0; MACHRT_TRACEBACK=1 $TO "$BIN" -e 'error("dataset.folds: no fold 9", 0)' </dev/null >"$tmp/out" 2>"$tmp/err" || rc=$?
check "MACHRT_TRACEBACK=1 shows it as well" '[ $rc = 2 ] && err_has "stack traceback"'

printf 'print(#arg, table.concat(arg, " "))\nerror("no fold 9", 0)\n' >"$tmp/args.lua"
run "$BIN" "$tmp/args.lua" a --traceback b
check "--traceback after any script is the host's: taken out of arg, the traceback shown" \
    '[ $rc = 2 ] && out_is "2	a b" && err_has "no fold 9" && err_has "stack traceback"'

run "$BIN" scripts/predict.lua --traceback --run "$tmp/no-run" --input x.wav
check "a script with its own option parser accepts --traceback after it (predict.lua)" \
    '[ $rc = 2 ] && err_has "is not a run folder" && err_has "stack traceback" && ! err_has "unknown option"'

run "$BIN" experiments/resnet34.lua --training.epochs=1.5 --architecture.pool=max
check "a bad experiment setting: the keys and their rules, no traceback, exit 2" \
    '[ $rc = 2 ] && err_has "training.epochs = 1.5: expects an integer >= 1" \
     && err_has "architecture.pool = '"'"'max'"'"': expects one of GeM, Avg" && ! err_has "stack traceback" \
     && [ $(wc -l <"$tmp/err") = 3 ]'

run "$BIN" experiments/resnet34.lua --no-such-flag
check "a bad flag of an experiment: one line, exit 2" \
    '[ $rc = 2 ] && [ $(wc -l <"$tmp/err") = 1 ] && err_has "cannot read argument '"'"'--no-such-flag'"'"'"'

run "$BIN" experiments/resnet34.lua --dataset.data_folder="$tmp" --dataset.train_dataframe="$tmp/none.csv"
check "a missing file: named, one line, exit 2" \
    '[ $rc = 2 ] && err_has "dataset.train_dataframe = '"'"'$tmp/none.csv'"'"': no such file" && ! err_has "stack traceback"'

run "$BIN" experiments/resnet34.lua --architecture.pool=avg --help
check "--help checks the values (any case) and lists the allowed ones" \
    '[ $rc = 0 ] && out_has "  architecture.pool = Avg" && out_has "one of GeM, Avg: pooling"'

# Ctrl-C in a training run: exit 130, the checkpoint of the last finished
# epoch intact, and the command that continues the run.
"$BIN" scripts/synth.lua --out "$tmp/corpus" --clips 20 --seed 3 --quiet >/dev/null 2>&1
run "$BIN" experiments/resnet34.lua --dataset.data_folder="$tmp/corpus" \
    --dataset.train_dataframe="$tmp/corpus/dataset.csv" --output_directory="$tmp/runs_big" \
    --architecture.width=4 --training.batch_size=64
check "a batch larger than the training data (found with the data): named, no traceback, exit 2" \
    '[ $rc = 2 ] && err_has "batch size 64 is larger than the 16 items" && ! err_has "stack traceback"'
"$BIN" experiments/resnet34.lua --dataset.data_folder="$tmp/corpus" \
    --dataset.train_dataframe="$tmp/corpus/dataset.csv" --output_directory="$tmp/runs" \
    --architecture.width=4 --training.epochs=50 --training.batch_size=4 \
    --audio.training_chunk_seconds=2 --prediction.inference_chunk_seconds=2 \
    --training.run_interpretations=false --training.build_scoring_pipelines=false \
    </dev/null >"$tmp/out" 2>"$tmp/err" &
pid=$!
ckpt="$tmp/runs/final_machinetype_audio_classification/fold4/checkpoint.safetensors"
i=0
while [ ! -f "$ckpt" ] && [ $i -lt 600 ] && kill -0 $pid 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
kill -INT $pid 2>/dev/null
wait $pid; rc=$?
cp "$tmp/err" "$tmp/int_err"
$TO "$BIN" -e "local mt = require 'machrt'; local _, m = mt.load('$ckpt'); assert(m['machrt.run'])" \
    </dev/null >/dev/null 2>&1; load_rc=$?
cp "$tmp/int_err" "$tmp/err"
check "Ctrl-C during training: exit 130, the --resume command, no traceback, a checkpoint that loads" \
    '[ $rc = 130 ] && err_has "machrt: interrupted (Ctrl-C)" && err_has "holds epoch" \
     && err_has "experiments/resnet34.lua --resume $tmp/runs/final_machinetype_audio_classification/fold4" \
     && ! err_has "stack traceback" && [ $load_rc = 0 ]'

# ---- REPL on piped stdin ------------------------------------------------------
feed '1+1
"a".."b"
error("repl failure")
for i = 1, 3 do
  io.write(i, ";")
end
print("")
local t = {1, 2, 3}
#{4, 5, 6}
nil
x = 10
x * 2' "$BIN"
check "REPL prints expression values" \
    '[ $rc = 0 ] && [ "$(sed -n 1,2p "$tmp/out")" = "$(printf "2\nab")" ]'
check "REPL reports an error line with traceback and keeps going" \
    'err_has "repl failure" && err_has "stack traceback" && out_has 20'
check "REPL runs a statement spread over several lines" 'out_has "1;2;3;"'
check "REPL output has nothing but the values" \
    '[ "$(cat "$tmp/out")" = "$(printf "2\nab\n1;2;3;\n3\nnil\n20")" ]'

feed '{"fan", "pump", n = 2, deep = {1, {2}}}
mt.ones{2}:sum(), audio ~= nil, nn ~= nil, optim ~= nil, data ~= nil' "$BIN"
check "REPL shows tables by value and has the usual modules as globals" \
    '[ $rc = 0 ] && out_is "$(printf "{\"fan\", \"pump\", deep = {1, {...}}, n = 2}\n2.0\ttrue\ttrue\ttrue\ttrue")"'

feed 'print(require("machrt") ~= nil)' "$BIN"
check "REPL can require machrt" '[ $rc = 0 ] && out_is true'

printf 'answer = 41\nprint("script ran")\n' >"$tmp/init.lua"
feed 'answer + 1' "$BIN" -i "$tmp/init.lua"
check "-i runs the script, then the REPL" '[ $rc = 0 ] && out_is "$(printf "script ran\n42")"'

feed 'print("from stdin", ...)' "$BIN" - p q
check "machrt - runs stdin as a script with args" '[ $rc = 0 ] && out_is "$(printf "from stdin\tp\tq")"'

# ---- modules ----------------------------------------------------------------
cat >"$tmp/req.lua" <<'EOF'
local mt = require "machrt"
assert(type(mt) == "table", "require 'machrt' returned " .. type(mt))
assert(mt.tensor ~= nil, "machrt.tensor missing")
print("loaded")
EOF
rc=0; (cd /tmp && $TO "$BIN" "$tmp/req.lua" </dev/null >"$tmp/out" 2>"$tmp/err") || rc=$?
check "require 'machrt' works from another directory" '[ $rc = 0 ] && out_is loaded'

# A build tree uses <repo>/modules; without one the install prefix's copy.
if [ -d "$ROOT/modules" ]; then MODS="$ROOT/modules"; else MODS="*/share/machrt/modules"; fi
MODPATH="$MODS/?.lua;$MODS/?/init.lua;"
rc=0; (cd /tmp && unset LUA_PATH LUA_PATH_5_4 && $TO "$BIN" -e 'print(package.path)' \
    </dev/null >"$tmp/out" 2>"$tmp/err") || rc=$?
# Pattern match: "?" in the expected path also matches the literal "?".
path_is() {
    case "$(cat "$tmp/out")" in $1) return 0 ;; esac
    return 1
}
check "package.path starts with the machrt modules" \
    '[ $rc = 0 ] && path_is "$MODPATH*"'

rc=0; (cd /tmp && unset LUA_PATH_5_4 && LUA_PATH='/nonexistent/?.lua' $TO "$BIN" \
    -e 'print(package.path)' </dev/null >"$tmp/out" 2>"$tmp/err") || rc=$?
check "LUA_PATH is honoured after the machrt modules" \
    '[ $rc = 0 ] && path_is "$MODPATH/nonexistent/?.lua"'

if command -v lua5.4 >/dev/null 2>&1; then
    run lua5.4 -e "package.cpath = '$ROOT/$BUILD/lua/?.so;' .. package.cpath" "$tmp/req.lua"
    check "stock lua5.4 loads $BUILD/lua/machrt.so" '[ -f "$SO" ] && [ $rc = 0 ] && out_is loaded'
else
    rc=-; : >"$tmp/out"; : >"$tmp/err"
    fail "stock lua5.4 loads $BUILD/lua/machrt.so" "lua5.4 is not installed"
fi

echo "host: $passed passed, $failed failed"
[ "$failed" = 0 ]
