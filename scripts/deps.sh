#!/bin/sh
# Installs the Debian packages machrt needs, only those that are missing.
# Called by `make deps` (and so by `make`, `make test` and `make run`);
# `deps.sh dist` (make deps-dist, run by make test) adds what the Slurm
# test starts: slurmctld, slurmd and munge; `deps.sh bench` adds GNU time.
set -eu
PACKAGES="gcc g++ make pkg-config lua5.4 liblua5.4-dev libreadline-dev libopenblas-openmp-dev
libcjson-dev check libsndfile1-dev libfftw3-dev libsoxr-dev libcairo2-dev libssl-dev
libopenmpi-dev openmpi-bin libdnnl-dev"
[ "${1:-}" = dist ] && PACKAGES="slurm-wlm munge"
# `make bench` (deps.sh bench) times whole runs with GNU time (bench/e2e.lua).
[ "${1:-}" = bench ] && PACKAGES="$PACKAGES time"
# `make fuzz` (deps.sh fuzz) also needs clang with libFuzzer, its sanitizer
# runtimes and its OpenMP; ordinary builds do not.
if [ "${1:-}" = fuzz ]; then
    PACKAGES="$PACKAGES clang libclang-rt-14-dev libomp-14-dev"
fi
missing=""
for p in $PACKAGES; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        *"install ok installed"*) ;;
        *) missing="$missing $p" ;;
    esac
done
[ -z "$missing" ] && exit 0
echo "machrt: installing missing Debian packages:$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "machrt: need root (or sudo) to install:$missing" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends $missing
