#!/usr/bin/env bash
# `nfrepo mount` figures (issue 15), on one local repository:
#
#   scripts/bench-mount.sh [--only read|find|open|all]
#
#   read  sequential read of a 1 GB dump (`snapshot --stdin --profile dump`,
#         16 KiB chunks) through the mount: `dd bs=1M` to /dev/null, cold
#         (fresh mount, page cache dropped); peak RSS of the mount process.
#         The same bytes through `restic mount` and `borg mount` (borg
#         1.2, repokey-blake2, its default lz4; needs python3-llfuse) when
#         installed, the tools alternating run by run.
#   find  `find MOUNT/sources/tree/latest/ -type f | wc -l` over a 50 000-file
#         tree (500 directories of 100 files, 1-8 kB each), on a fresh mount
#         with the page cache dropped.
#   open  from starting `nfrepo mount` to listing /snapshots of a repository
#         with 1 000 snapshots (made once, cached in $BENCH_DIR), with no
#         local cache and with the cache the previous mount left.
#
# Each figure is measured REPEAT times (default 3) on a fresh mount; the
# script prints every run, then the median and the min-max spread.
#
# Needs root (or fusermount3) and /dev/fuse.
#
# Environment:
#   BENCH_DIR    work dir (default /tmp/nfrepo-mountbench)
#   NFREPO_BIN   the binary (default: build target/dist/nfrepo)
#   REPEAT       runs per figure (default 3)
set -euo pipefail

ONLY=all
while [[ $# -gt 0 ]]; do
	case "$1" in
	--only) ONLY="$2"; shift 2 ;;
	*) echo "usage: $0 [--only read|find|open|all]" >&2; exit 2 ;;
	esac
done
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
BENCH_DIR="${BENCH_DIR:-/tmp/nfrepo-mountbench}"
# shellcheck disable=SC2119 # the binary alone: no CARGO_ARGS
[[ -n "${NFREPO_BIN:-}" ]] || build_nfrepo
mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"
export NFREPO_PASSWORD=bench-password
MNT="$BENCH_DIR/mnt"
REPEAT="${REPEAT:-3}"
mkdir -p "$MNT"
MOUNT_PID=""

now() { date +%s.%N; }
elapsed() { python3 -c "print('%.2f' % ($2 - $1))"; }
summary() { # LABEL UNIT VALUES...: median and spread
	local label="$1" unit="$2"
	shift 2
	python3 -c "
import statistics, sys
v = sorted(float(x) for x in sys.argv[3:])
print('%s: median %.2f %s (min %.2f, max %.2f, %d runs)' % (sys.argv[1], statistics.median(v), sys.argv[2], v[0], v[-1], len(v)))
" "$label" "$unit" "$@"
}

repo_init() { # NAME
	if [[ ! -d "$1" ]]; then
		NFREPO_CACHE_DIR="$PWD/cache-$1" "$NFREPO_BIN" --repo "file://$PWD/$1" init \
			--kdf-memory-kib 64 --kdf-iterations 1 >/dev/null
	fi
}

nf() { # REPO ARGS...
	local repo="$1"
	shift
	NFREPO_CACHE_DIR="$PWD/cache-$repo" "$NFREPO_BIN" --repo "file://$PWD/$repo" "$@"
}

ensure_unmounted() {
	if mountpoint -q "$MNT"; then
		echo "$MNT is still mounted (a stale mount?): fusermount3 -u $MNT" >&2
		exit 1
	fi
}

wait_mounted() { # WHO LOG [PATH]: waits (30 s at most) until PATH (default $MNT/snapshots) shows
	local shows="${3:-$MNT/snapshots}"
	for _ in $(seq 1 3000); do
		mountpoint -q "$MNT" && [[ -e "$shows" ]] && return 0
		sleep 0.01
	done
	echo "$1 did not come up; log:" >&2
	cat "$2" >&2
	exit 1
}

mount_repo() { # REPO: mounts, waits until /snapshots lists
	ensure_unmounted
	# exec: $! is the mount process itself (its RSS is measured, its
	# SIGTERM unmounts).
	(NFREPO_CACHE_DIR="$PWD/cache-$1" exec "$NFREPO_BIN" --repo "file://$PWD/$1" mount "$MNT" 2>"$BENCH_DIR/mount.log") &
	MOUNT_PID=$!
	wait_mounted "nfrepo mount" "$BENCH_DIR/mount.log"
}

unmount_repo() {
	[[ -n "$MOUNT_PID" ]] || return 0
	local peer="${1:-}"
	kill -TERM "$MOUNT_PID"
	wait "$MOUNT_PID" || true
	MOUNT_PID=""
	if [[ -n "$peer" ]]; then
		# restic leaves its mount behind on SIGTERM.
		mountpoint -q "$MNT" && umount "$MNT"
	elif mountpoint -q "$MNT"; then
		echo "SIGTERM left $MNT mounted" >&2
		exit 1
	fi
}
trap unmount_repo EXIT

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

gen_dump() { # the 1 GB sysbench-shaped dump, on stdout (the same bytes every time)
	python3 -c "
import sys, random
random.seed(15)
out = sys.stdout.buffer
left = 1_000_000_000
row = 0
while left > 0:
    line = b'INSERT INTO sbtest1 VALUES (%d,%d,\'%s\',\'%s\');\n' % (row, random.randrange(10**6),
        ('%011d-' % random.randrange(10**11)).encode() * 5, ('%011d-' % random.randrange(10**11)).encode() * 4)
    out.write(line[:left])
    left -= len(line)
    row += 1
"
}

# peer_mount TOOL: restic's or borg's mount of the same dump, for the
# side-by-side read; prints nothing, sets MOUNT_PID.
peer_mount() {
	ensure_unmounted
	case "$1" in
	restic)
		(RESTIC_REPOSITORY="$PWD/restic-dump" RESTIC_PASSWORD=bench-password exec restic mount --no-lock "$MNT" >"$BENCH_DIR/peer-mount.log" 2>&1) &
		MOUNT_PID=$!
		wait_mounted "restic mount" "$BENCH_DIR/peer-mount.log"
		;;
	borg)
		(BORG_PASSPHRASE=bench-password exec borg mount -f "$PWD/borg-dump" "$MNT" >"$BENCH_DIR/peer-mount.log" 2>&1) &
		MOUNT_PID=$!
		wait_mounted "borg mount" "$BENCH_DIR/peer-mount.log" "$MNT/dump/dump.sql"
		;;
	esac
}

# peer_file TOOL: the dump's path in that tool's mount.
peer_file() {
	case "$1" in
	restic) echo "$MNT/snapshots/latest/dump.sql" ;;
	borg) echo "$MNT/dump/dump.sql" ;;
	esac
}

if [[ "$ONLY" == read || "$ONLY" == all ]]; then
	repo_init repo-dump
	have=$(nf repo-dump --json snapshots --source dump | python3 -c "import json,sys; print(len(json.load(sys.stdin)))")
	if [[ "$have" == 0 ]]; then
		gen_dump | nf repo-dump snapshot --stdin --name dump.sql --source dump --profile dump >/dev/null
	fi
	peers=()
	if command -v restic >/dev/null; then
		peers+=(restic)
		if [[ ! -f restic-dump/config ]]; then
			RESTIC_PASSWORD=bench-password restic init --repo "$PWD/restic-dump" >/dev/null
			gen_dump | RESTIC_PASSWORD=bench-password restic --repo "$PWD/restic-dump" backup \
				--stdin --stdin-filename dump.sql >/dev/null
		fi
	else
		echo "restic is not installed: measured without it" >&2
	fi
	# borg's own interpreter (Debian's python3) must have llfuse.
	if command -v borg >/dev/null && "$(sed -n '1s/^#! *//p' "$(command -v borg)")" -c 'import llfuse' 2>/dev/null; then
		peers+=(borg)
		if [[ ! -d borg-dump ]]; then
			BORG_PASSPHRASE=bench-password BORG_DISPLAY_PASSPHRASE=n borg init -e repokey-blake2 "$PWD/borg-dump" </dev/null
			gen_dump | BORG_PASSPHRASE=bench-password borg create --stdin-name dump.sql "$PWD/borg-dump::dump" -
		fi
	else
		echo "borg or python3-llfuse is not installed: measured without borg" >&2
	fi
	declare -A speeds rsses
	for run in $(seq 1 "$REPEAT"); do
		# The tools alternate run by run, so both see the same machine.
		for tool in nfrepo "${peers[@]}"; do
			drop_caches
			if [[ "$tool" == nfrepo ]]; then
				mount_repo repo-dump
				file="$MNT/sources/dump/latest/dump.sql"
			else
				peer_mount "$tool"
				file=$(peer_file "$tool")
			fi
			start=$(now)
			bytes=$(dd if="$file" of=/dev/null bs=1M 2>&1 | awk '/bytes/ {print $1}')
			end=$(now)
			rss=$(awk '/VmHWM/ {print $2}' "/proc/$MOUNT_PID/status")
			secs=$(elapsed "$start" "$end")
			speed=$(python3 -c "print('%.0f' % ($bytes / $secs / 1e6))")
			echo "read run $run, $tool: $bytes bytes in ${secs}s = $speed MB/s, mount peak RSS $((rss / 1024)) MiB"
			speeds[$tool]+="$speed "
			rsses[$tool]+="$((rss / 1024)) "
			if [[ "$tool" == nfrepo ]]; then unmount_repo; else unmount_repo peer; fi
		done
	done
	for tool in nfrepo "${peers[@]}"; do
		# shellcheck disable=SC2086 # the lists are space-separated numbers
		summary "read, $tool" "MB/s" ${speeds[$tool]}
		# shellcheck disable=SC2086
		summary "read peak RSS, $tool" "MiB" ${rsses[$tool]}
	done
fi

if [[ "$ONLY" == find || "$ONLY" == all ]]; then
	repo_init repo-tree
	if [[ ! -d tree ]]; then
		python3 - <<'PY'
import os, random
random.seed(50)
for d in range(500):
    p = os.path.join("tree", f"d{d // 50:02}", f"s{d:03}")
    os.makedirs(p, exist_ok=True)
    for f in range(100):
        with open(os.path.join(p, f"f{f:03}.txt"), "wb") as fh:
            fh.write(os.urandom(random.randrange(1000, 8000)))
PY
		nf repo-tree snapshot tree --source tree >/dev/null
	fi
	times=()
	for run in $(seq 1 "$REPEAT"); do
		drop_caches
		mount_repo repo-tree
		start=$(now)
		# `latest/`: `latest` is a symlink, which find (-P) does not
		# follow as a starting point.
		count=$(find "$MNT/sources/tree/latest/" -type f | wc -l)
		[[ "$count" == 50000 ]] || { echo "find saw $count files, not 50000" >&2; exit 1; }
		end=$(now)
		echo "find run $run: $count files in $(elapsed "$start" "$end")s"
		times+=("$(elapsed "$start" "$end")")
		unmount_repo
	done
	summary "find" "s" "${times[@]}"
fi

if [[ "$ONLY" == open || "$ONLY" == all ]]; then
	repo_init repo-many
	have=$(nf repo-many --json snapshots | python3 -c "import json,sys; print(len(json.load(sys.stdin)))")
	for i in $(seq "$((have + 1))" 1000); do
		echo "snapshot $i" | nf repo-many snapshot --stdin --name s.txt --source "s$((i % 20))" \
			--tag env=prod --tag type=config >/dev/null
	done
	for cache in cold warm; do
		times=()
		for run in $(seq 1 "$REPEAT"); do
			# cold: no local cache (every snapshot header read from the
			# repository); warm: the cache the previous mount left.
			[[ "$cache" == cold ]] && rm -rf "$PWD/cache-repo-many"
			drop_caches
			start=$(now)
			mount_repo repo-many
			count=$(find "$MNT/snapshots" -mindepth 1 -maxdepth 1 | wc -l)
			end=$(now)
			echo "open ($cache cache) run $run: $count snapshots listed $(elapsed "$start" "$end")s after starting the mount"
			times+=("$(elapsed "$start" "$end")")
			unmount_repo
		done
		summary "open ($cache cache)" "s" "${times[@]}"
	done
fi
