#!/usr/bin/env bash
# Chunk profiles against each other on the dumps of scripts/bench-peers.sh
# (issue 14, item 4; the figures are in format-spec/chunking.md).
#
#   scripts/bench-profiles.sh [--data DIR] [--runs N] [--profiles "dump rows"]
#                             [--only mysql|postgres|redis]
#
# For each data set (two dumps of one database, the second after a minute
# of writes) and each profile, run after run with the profiles alternated:
# a new local repository; `snapshot --stdin --profile P` of the first dump
# (first backup, empty cache); the second dump as its incremental; then
# `restore latest` into an empty directory followed by `sync`. Printed per
# data set and profile: the median and min–max wall time of each step, the
# bytes the incremental added to the repository (median), and the first
# backup's peak RSS (median).
#
# The data sets are the ones bench-peers.sh makes and caches (run it once
# with `--only dump,pgdump,redis`): dump1.sql/dump2.sql (MariaDB),
# pgdump1.sql/pgdump2.sql (PostgreSQL), redis1.rdb/redis2.rdb (Redis).
#
# Environment:
#   BENCH_DIR    work dir (default /tmp/nfrepo-profilebench)
#   NFREPO_BIN   the nfrepo binary (default: built from this tree)
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

DATA=/tmp/nfrepo-bench/data
RUNS=3
PROFILES="dump rows"
ONLY=""
while [[ $# -gt 0 ]]; do
	case "$1" in
	--data) DATA="$2"; shift 2 ;;
	--runs) RUNS="$2"; shift 2 ;;
	--profiles) PROFILES="$2"; shift 2 ;;
	--only) ONLY="$2"; shift 2 ;;
	*) die "usage: $0 [--data DIR] [--runs N] [--profiles \"dump rows\"] [--only mysql|postgres|redis]" ;;
	esac
done
BENCH_DIR="${BENCH_DIR:-/tmp/nfrepo-profilebench}"
# shellcheck disable=SC2119 # the binary alone: no CARGO_ARGS
[[ -n "${NFREPO_BIN:-}" ]] || build_nfrepo
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"

sets=()
for set in mysql:dump1.sql:dump2.sql postgres:pgdump1.sql:pgdump2.sql redis:redis1.rdb:redis2.rdb; do
	name="${set%%:*}"
	[[ -z "$ONLY" || "$ONLY" == "$name" ]] || continue
	rest="${set#*:}"
	for f in "${rest%%:*}" "${rest#*:}"; do
		[[ -f "$DATA/$f" ]] || die "$DATA/$f is missing: make it with scripts/bench-peers.sh"
	done
	sets+=("$name:$DATA/${rest%%:*}:$DATA/${rest#*:}")
done

python3 - "$NFREPO_BIN" "$BENCH_DIR" "$RUNS" "$PROFILES" "${sets[@]}" <<'PY'
import os, shutil, statistics, subprocess, sys, time

nfrepo, work, runs, profiles, sets = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split(), sys.argv[5:]
env = dict(os.environ, NFREPO_PASSWORD="bench-password")

def du(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)

def run_one(cmd, stdin_path=None):
    script = 'exec "$@"' if stdin_path is None else 'exec "$@" < "$0"'
    args = ["/usr/bin/time", "-f", "%e %M", "sh", "-c", script, stdin_path or "-", *cmd]
    out = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
    wall, rss = out.stderr.decode().strip().splitlines()[-1].split()
    return float(wall), int(rss)

def spread(xs):
    return f"{statistics.median(xs):.2f} s ({min(xs):.2f}–{max(xs):.2f})"

for s in sets:
    name, first, second = s.split(":")
    results = {p: {"first": [], "incr": [], "restore": [], "added": [], "rss": []} for p in profiles}
    for _ in range(runs):
        for p in profiles:
            repo, cache, target = (os.path.join(work, x) for x in ("repo", "cache", "target"))
            for d in (repo, cache, target):
                shutil.rmtree(d, ignore_errors=True)
            os.makedirs(target)
            env["NFREPO_CACHE_DIR"] = cache
            base = [nfrepo, "--quiet", "--repo", repo]
            subprocess.run(base + ["init"], env=env, stdout=subprocess.DEVNULL, check=True)
            put = base + ["snapshot", "--stdin", "--name", "dump", "--source", name, "--profile", p]
            subprocess.run(["sync"], check=True)
            wall, rss = run_one(put, first)
            results[p]["first"].append(wall)
            results[p]["rss"].append(rss)
            size = du(repo)
            subprocess.run(["sync"], check=True)
            wall, _ = run_one(put, second)
            results[p]["incr"].append(wall)
            results[p]["added"].append(du(repo) - size)
            subprocess.run(["sync"], check=True)
            wall, _ = run_one(["sh", "-c", '"$@" && sync', "sh", *base, "restore", "latest", "--target", target])
            results[p]["restore"].append(wall)
    for p in profiles:
        r = results[p]
        print(
            f"{name} {p}: first {spread(r['first'])}, incremental {spread(r['incr'])}, "
            f"added {statistics.median(r['added']) / 1e6:.1f} MB, restore {spread(r['restore'])}, "
            f"first backup peak RSS {statistics.median(r['rss']) / 1024:.0f} MiB"
        )
    sys.stdout.flush()
PY
