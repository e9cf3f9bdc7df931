#!/usr/bin/env bash
# Garbage collection at scale: nfrepo gc against restic prune on the same
# repository history, in one go.
#
#   scripts/bench-gc.sh [--snapshots N] [--files-per-snapshot N]
#
# The history: N snapshots (default 105), each of a new directory of small
# files with distinct content (default 10,000 per snapshot), so the
# repository holds about N x files blobs (1.05 M by default: one blob per
# small file in both tools). Then both tools forget all but the 50 newest
# snapshots and reclaim the space: `restic prune`, and nfrepo's two gc runs
# (plan, then sweep; `--grace 0s` so the sweep may follow at once).
#
# Measured: wall time and peak RSS (`/usr/bin/time -f %M`) of each reclaim
# run, and the repository size before and after. Data and repositories live
# in $BENCH_DIR (default /tmp/nfrepo-gcbench); the tools' output goes to
# $BENCH_DIR/logs/. The file sets are made once and reused.
#
# Environment:
#   BENCH_DIR    work dir (default /tmp/nfrepo-gcbench)
#   NFREPO_BIN   nfrepo binary to use (default: cargo build --profile dist -p nfrepo-cli)
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

SNAPSHOTS=105
PER_SNAPSHOT=10000
KEEP=50
while (($# > 0)); do
	case "$1" in
	--snapshots)
		SNAPSHOTS="${2:?}"
		shift 2
		;;
	--files-per-snapshot)
		PER_SNAPSHOT="${2:?}"
		shift 2
		;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown argument: $1" ;;
	esac
done
[[ "$SNAPSHOTS" =~ ^[0-9]+$ && "$PER_SNAPSHOT" =~ ^[0-9]+$ ]] || die "counts must be numbers"
((SNAPSHOTS > KEEP)) || die "--snapshots must be more than $KEEP"

BENCH_DIR="${BENCH_DIR:-/tmp/nfrepo-gcbench}"
DATA="$BENCH_DIR/data-$PER_SNAPSHOT"
LOGS="$BENCH_DIR/logs"
mkdir -p "$DATA" "$LOGS"

command -v restic >/dev/null || ensure_apt_packages restic
# shellcheck disable=SC2119 # the binary alone: no CARGO_ARGS
[[ -n "${NFREPO_BIN:-}" ]] || build_nfrepo

log "making $SNAPSHOTS sets of $PER_SNAPSHOT small files in $DATA (once)"
python3 - "$DATA" "$SNAPSHOTS" "$PER_SNAPSHOT" <<'EOF'
import hashlib, os, sys
root, sets, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for s in range(sets):
    d = os.path.join(root, f"s{s:04d}")
    if os.path.exists(os.path.join(d, ".done")):
        continue
    os.makedirs(d, exist_ok=True)
    for f in range(per):
        seed = f"{s}-{f}".encode()
        body = hashlib.sha256(seed).hexdigest() * (1 + f % 4)
        with open(os.path.join(d, f"f{f:05d}.txt"), "w") as out:
            out.write(body)
    open(os.path.join(d, ".done"), "w").close()
EOF

export RESTIC_PASSWORD=bench-gc NFREPO_PASSWORD=bench-gc
export RESTIC_REPOSITORY="$BENCH_DIR/restic" NFREPO_REPOSITORY="$BENCH_DIR/nfrepo"
export RESTIC_CACHE_DIR="$BENCH_DIR/cache/restic" NFREPO_CACHE_DIR="$BENCH_DIR/cache/nfrepo"
rm -rf "$RESTIC_REPOSITORY" "$NFREPO_REPOSITORY" "$BENCH_DIR/cache"

log "restic: $SNAPSHOTS backups"
restic init >"$LOGS/restic-init.log" 2>&1
for dir in "$DATA"/s*; do
	restic backup --host bench --quiet "$dir" >>"$LOGS/restic-backup.log" 2>&1
done
log "nfrepo: $SNAPSHOTS backups"
"$NFREPO_BIN" init --quiet >"$LOGS/nfrepo-init.log" 2>&1
for dir in "$DATA"/s*; do
	"$NFREPO_BIN" snapshot --source bench --no-parent --quiet "$dir" >>"$LOGS/nfrepo-backup.log" 2>&1
done

size_mb() { du -sb "$1" | awk '{printf "%.1f", $1 / 1e6}'; }
# timed NAME CMD...: runs CMD, prints "seconds rss_mib" and logs to $LOGS/NAME.log.
timed() {
	local name="$1" start end
	shift
	start="$(now_ns)"
	/usr/bin/time -f '%M' -o "$LOGS/$name.rss" "$@" >"$LOGS/$name.log" 2>&1
	end="$(now_ns)"
	printf '%s %s\n' "$(fmt_secs "$((end - start))")" "$(($(cat "$LOGS/$name.rss") / 1024))"
}

blobs="$("$NFREPO_BIN" --json gc --dry-run --grace 0s | python3 -c 'import json,sys; print(json.load(sys.stdin)["referenced_blobs"])')"
restic_before="$(size_mb "$RESTIC_REPOSITORY")"
nfrepo_before="$(size_mb "$NFREPO_REPOSITORY")"

restic forget --host bench --group-by host --keep-last "$KEEP" >"$LOGS/restic-forget.log" 2>&1
"$NFREPO_BIN" forget --source bench --keep-last "$KEEP" --quiet >"$LOGS/nfrepo-forget.log" 2>&1

read -r restic_secs restic_rss < <(timed restic-prune restic prune)
read -r plan_secs plan_rss < <(timed nfrepo-gc-plan "$NFREPO_BIN" gc --grace 0s)
read -r sweep_secs sweep_rss < <(timed nfrepo-gc-sweep "$NFREPO_BIN" gc --grace 0s)

cat <<EOF

$SNAPSHOTS snapshots of $PER_SNAPSHOT new small files each; $blobs blobs referenced in nfrepo before forget;
forget --keep-last $KEEP, then reclaim.

| | restic prune | nfrepo gc (plan) | nfrepo gc (sweep) |
|---|---:|---:|---:|
| wall time | $restic_secs | $plan_secs | $sweep_secs |
| peak RSS, MiB | $restic_rss | $plan_rss | $sweep_rss |

| repository size, MB | restic | nfrepo |
|---|---:|---:|
| before forget | $restic_before | $nfrepo_before |
| after reclaim | $(size_mb "$RESTIC_REPOSITORY") | $(size_mb "$NFREPO_REPOSITORY") |
EOF
