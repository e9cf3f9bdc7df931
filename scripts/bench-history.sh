#!/usr/bin/env bash
# Cost of one run against the length of the history (issue 14, item 7): a
# tiny `snapshot --stdin` and `nfrepo snapshots` in a repository holding N
# snapshots (each with its own packs and index delta, as a 5-minute
# schedule leaves them), on a local directory and on S3.
#
#   scripts/bench-history.sh [--counts "0 10000"] [--runs N] [--only local|s3]
#
# One repository per backend grows through the counts: the history is added
# by the `seed_history` example (one process writing each snapshot's packs,
# index delta and snapshot as `snapshot --stdin` commits them, 32 snapshots
# at a time: 10,000 take about 20 s on a local directory and 2 min on the
# loopback SeaweedFS), then each command runs once to warm the local cache,
# as a cron job finds it, and --runs times (default 7) measured. Printed
# per count: the median, min and max wall time of each command, its median
# CPU time (user + system of the process, from getrusage: the steadier
# figure on a shared machine), and the system calls of one more run of each
# (`strace -c -f`: total and futex).
#
# Environment:
#   BENCH_DIR    work dir (default /tmp/nfrepo-historybench)
#   NFREPO_BIN   the nfrepo binary; SEED_BIN the seed_history example
#                (default: both built from this tree into target/dist)
#   BEFORE_BIN   optional: another nfrepo build, run interleaved with
#                NFREPO_BIN (each with its own cache, each first every
#                other run), one row per build
#   NFREPO_TEST_S3_* (scripts/start-seaweedfs.sh) for the S3 runs; the
#   prefix made is deleted at the end through the SeaweedFS filer
#   (FILER, default http://127.0.0.1:18888).
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

COUNTS="0 10000"
RUNS=7
ONLY=""
while [[ $# -gt 0 ]]; do
	case "$1" in
	--counts) COUNTS="$2"; shift 2 ;;
	--runs) RUNS="$2"; shift 2 ;;
	--only) ONLY="$2"; shift 2 ;;
	*) echo "usage: $0 [--counts \"0 10000\"] [--runs N] [--only local|s3]" >&2; exit 2 ;;
	esac
done
BENCH_DIR="${BENCH_DIR:-/tmp/nfrepo-historybench}"
if [[ -z "${NFREPO_BIN:-}" || -z "${SEED_BIN:-}" ]]; then
	build_nfrepo -p nfrepo-sources --example seed_history
	SEED_BIN="${SEED_BIN:-$BUILD_DIR/examples/seed_history}"
fi
command -v strace >/dev/null || die "strace is needed (apt-get install -y strace)"
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"
export NFREPO_PASSWORD=bench-password

# measure LABEL URL CACHE: prints one line per command for the current count.
measure() {
	local label="$1" url="$2" cache="$3"
		python3 - "$label" "$url" "$cache" "$RUNS" "$NFREPO_BIN" "${BEFORE_BIN:-}" <<'PY'
import os, resource, statistics, subprocess, sys, time
label, url, cache, runs, nfrepo, before = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
# Each build has its own cache; with BEFORE_BIN the two alternate, each
# going first every other run, so that both meet the same load.
builds = {"": (nfrepo, cache)}
if before:
    builds = {"after": (nfrepo, cache), "before": (before, cache + "-before")}
def argv(binary, name):
    if name == "snapshots":
        return [binary, "--repo", url, "--quiet", "snapshots"], b""
    return [binary, "--repo", url, "--quiet", "snapshot", "--stdin", "--name", "db.sql", "--source", "bench"], b"one row\n"
def run(build, name):
    binary, build_cache = builds[build]
    args, stdin = argv(binary, name)
    env = dict(os.environ, NFREPO_CACHE_DIR=build_cache)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run(args, input=stdin, env=env, stdout=subprocess.DEVNULL, check=True)
    wall = time.monotonic() - start
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, now.ru_utime - used.ru_utime + now.ru_stime - used.ru_stime
for name in ["snapshot --stdin", "snapshots"]:
    # One warm-up run each: the cache is filled as the previous cron run left it.
    for build in builds:
        run(build, name)
    measured = {build: [] for build in builds}
    for i in range(runs):
        order = list(builds) if i % 2 == 0 else list(reversed(builds))
        for build in order:
            measured[build].append(run(build, name))
    for build, results in measured.items():
        times, cpus = [r[0] for r in results], [r[1] for r in results]
        binary, build_cache = builds[build]
        args, stdin = argv(binary, name)
        env = dict(os.environ, NFREPO_CACHE_DIR=build_cache)
        subprocess.run(["strace", "-c", "-f", "-o", "strace.txt"] + args, input=stdin, env=env,
                       stdout=subprocess.DEVNULL, check=True)
        # strace -c rows: % time, seconds, usecs/call, calls, [errors,] name.
        calls = {}
        for line in open("strace.txt"):
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit():
                calls[parts[-1]] = int(parts[3])
        total, futex = calls.get("total", 0), calls.get("futex", 0)
        shown = f"{name} ({build})" if build else name
        print(f"| {label} | {shown} | {statistics.median(times):.3f} | {min(times):.3f}–{max(times):.3f} | {statistics.median(cpus):.4f} | {total} | {futex} |", flush=True)
PY
}

# run_backend LABEL URL: grows one repository through the counts.
run_backend() {
	local label="$1" url="$2" have=0 count builds=1
	[[ -n "${BEFORE_BIN:-}" ]] && builds=2
	local cache="$BENCH_DIR/cache-$label"
	"$NFREPO_BIN" --repo "$url" --quiet init --kdf-memory-kib 64 --kdf-iterations 1 >/dev/null
	for count in $COUNTS; do
		if ((count > have)); then
			"$SEED_BIN" "$url" $((count - have))
			have=$count
		fi
		measure "$label, $count snapshots" "$url" "$cache"
		# Each snapshot run (warm-up, measured, traced) added one, per build.
		have=$((have + (RUNS + 2) * builds))
	done
}

echo "| repository | command | median s | min–max s | CPU median s | syscalls | futex |"
echo "|---|---|---|---|---|---|---|"
if [[ "$ONLY" != s3 ]]; then
	run_backend local "file://$BENCH_DIR/repo"
fi
if [[ "$ONLY" != local ]]; then
	if [[ -z "${NFREPO_TEST_S3_ENDPOINT:-}" ]]; then
		echo "NFREPO_TEST_S3_* not set: skipping S3 (source /tmp/nfrepo-dev-env.sh or run scripts/start-seaweedfs.sh)" >&2
	else
		export NFREPO_S3_ACCESS_KEY_ID="$NFREPO_TEST_S3_ACCESS_KEY" NFREPO_S3_SECRET_ACCESS_KEY="$NFREPO_TEST_S3_SECRET_KEY"
		PREFIX="bench-history-$$"
		trap 'curl -s -X DELETE "${FILER:-http://127.0.0.1:18888}/buckets/$NFREPO_TEST_S3_BUCKET/$PREFIX/?recursive=true&ignoreRecursiveError=true" >/dev/null || true' EXIT
		run_backend s3 "s3://$NFREPO_TEST_S3_BUCKET/$PREFIX?endpoint=$NFREPO_TEST_S3_ENDPOINT&region=us-east-1"
	fi
fi
