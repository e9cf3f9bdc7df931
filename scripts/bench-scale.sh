#!/usr/bin/env bash
# Memory and time of every command against the size of the repository
# (issue 14, item 6): peak RSS must stay under 100 MiB, flat in the number
# of blobs.
#
#   scripts/bench-scale.sh [--blobs N] [--snapshots N] [--read-data SUBSET] [--keep] [--only LIST]
#
# A local file:// repository is filled by the `seed_scale` example with N
# tiny distinct blobs (default 1,000,000) in --snapshots snapshots (default
# 20) of source `scale`, written through the engine's own backup writer:
# real packs, index deltas, trees and snapshots. Then each command runs
# once with the local cache warm, as a cron job finds it, timed with
# `/usr/bin/time -f '%e %M'` (wall seconds, peak RSS in KiB):
#
#   snapshot --stdin   a tiny stream snapshot of another source
#   snapshots          the list
#   check              structure (trees, index, pack listing)
#   check --read-data  every pack, or --read-data SUBSET (e.g. 10%)
#   restore            one snapshot of `scale` (N / snapshots files)
#   forget             --keep-last half the snapshots of `scale`
#   gc (plan)          marks the forgotten packs (--grace 0s)
#   gc (sweep)         deletes them, rewrites the index
#   check (after gc)   structure again
#
# --only runs some of the groups stdin, snapshots, check, read-data,
# restore, gc (forget, gc plan and sweep, check after), comma-separated.
# The commands run on a copy of the seeded repository and its cache; with
# --keep a seeded repository of the same --blobs is reused (to compare two
# builds on the same repository). Everything lives in $BENCH_DIR (default
# /tmp/nfrepo-scalebench); command output goes to $BENCH_DIR/logs/.
#
# Environment:
#   BENCH_DIR    work dir
#   NFREPO_BIN   the nfrepo binary; SEED_BIN the seed_scale example
#                (default: both built from this tree with cargo --profile dist)
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

BLOBS=1000000
SNAPSHOTS=20
READ_DATA=""
KEEP=0
ONLY="stdin,snapshots,check,read-data,restore,gc"
while (($# > 0)); do
	case "$1" in
	--blobs)
		BLOBS="${2:?}"
		shift 2
		;;
	--snapshots)
		SNAPSHOTS="${2:?}"
		shift 2
		;;
	--read-data)
		READ_DATA="${2:?}"
		shift 2
		;;
	--keep)
		KEEP=1
		shift
		;;
	--only)
		ONLY="${2:?}"
		shift 2
		;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown argument: $1" ;;
	esac
done
[[ "$BLOBS" =~ ^[0-9]+$ && "$SNAPSHOTS" =~ ^[0-9]+$ ]] || die "counts must be numbers"
((SNAPSHOTS >= 2)) || die "--snapshots must be at least 2"

if [[ -z "${NFREPO_BIN:-}" || -z "${SEED_BIN:-}" ]]; then
	build_nfrepo -p nfrepo-sources --example seed_scale
	SEED_BIN="${SEED_BIN:-$BUILD_DIR/examples/seed_scale}"
fi

BENCH_DIR="${BENCH_DIR:-/tmp/nfrepo-scalebench}"
SEED="$BENCH_DIR/seed-$BLOBS"
REPO="$BENCH_DIR/repo"
LOGS="$BENCH_DIR/logs"
export NFREPO_PASSWORD=bench-scale
mkdir -p "$LOGS"

if ((KEEP == 0)) || [[ ! -e "$SEED/.seeded" ]]; then
	rm -rf "$SEED"
	mkdir -p "$SEED"
	NFREPO_REPOSITORY="file://$SEED/repo" NFREPO_CACHE_DIR="$SEED/cache" \
		"$NFREPO_BIN" init --quiet --kdf-memory-kib 64 --kdf-iterations 1 >"$LOGS/init.log" 2>&1
	log "seeding $BLOBS blobs in $SNAPSHOTS snapshots"
	start="$(now_ns)"
	/usr/bin/time -f '%e %M' -o "$LOGS/seed.time" \
		"$SEED_BIN" "file://$SEED/repo" "$BLOBS" "$SNAPSHOTS" "$SEED/cache" 2>"$LOGS/seed.log"
	log "seeded in $(fmt_secs "$(($(now_ns) - start))"), $(du -sh "$SEED/repo" | cut -f1)"
	touch "$SEED/.seeded"
fi
# Every run works on a copy, so the seeded repository can be measured again.
rm -rf "$REPO" "$BENCH_DIR/cache"
cp -a "$SEED/repo" "$REPO"
cp -a "$SEED/cache" "$BENCH_DIR/cache"
export NFREPO_REPOSITORY="file://$REPO" NFREPO_CACHE_DIR="$BENCH_DIR/cache"

# run NAME CMD...: runs CMD once, prints a table row (wall s, peak RSS MiB).
run() {
	local name="$1" file
	shift
	file="$LOGS/$(tr -c 'a-z0-9' '-' <<<"$name")"
	log "$name"
	if ! /usr/bin/time -f '%e %M' -o "$file.time" "$@" >"$file.log" 2>&1 </dev/null; then
		log "  failed (exit $?): see $file.log"
	fi
	awk -v n="$name" 'END { printf "| %s | %.2f | %.1f |\n", n, $1, $2 / 1024 }' "$file.time"
}

half=$((SNAPSHOTS / 2))
first_scale="$("$NFREPO_BIN" --json snapshots --source scale | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')"
read_data=(--read-data)
[[ -n "$READ_DATA" ]] && read_data=(--read-data-subset "$READ_DATA")

echo
echo "$BLOBS blobs in $SNAPSHOTS snapshots, $(du -sh "$REPO" | cut -f1) on disk ($(date -u +%F), load $(cut -d' ' -f1 /proc/loadavg))"
echo
echo "| command | wall s | peak RSS MiB |"
echo "|---|---:|---:|"
wanted() { [[ ",$ONLY," == *",$1,"* ]]; }
rm -rf "$BENCH_DIR/restored"
if wanted stdin; then
	run "snapshot --stdin" sh -c "echo one row | '$NFREPO_BIN' --quiet snapshot --stdin --name db.sql --source tiny"
fi
wanted snapshots && run "snapshots" "$NFREPO_BIN" snapshots
wanted check && run "check" "$NFREPO_BIN" check
wanted read-data && run "check ${read_data[*]}" "$NFREPO_BIN" check "${read_data[@]}"
if wanted restore; then
	run "restore (1 snapshot)" "$NFREPO_BIN" restore "$first_scale" --target "$BENCH_DIR/restored"
	rm -rf "$BENCH_DIR/restored"
fi
if wanted gc; then
	run "forget --keep-last $half" "$NFREPO_BIN" forget --source scale --keep-last "$half"
	run "gc (plan)" "$NFREPO_BIN" gc --grace 0s
	run "gc (sweep)" "$NFREPO_BIN" gc --grace 0s
	run "check (after gc)" "$NFREPO_BIN" check
fi
