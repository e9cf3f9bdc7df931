#!/usr/bin/env bash
# `nfrepo mount` figures (issue 15), on one local repository:
#
#   scripts/bench-mount.sh [--only read|find|open|all]
#
#   read  sequential read of a 1 GB dump (`snapshot --stdin --profile dump`,
#         16 KiB chunks) through the mount: `dd bs=1M` to /dev/null, cold
#         (fresh mount, page cache dropped); peak RSS of the mount process.
#   find  `find MOUNT/sources/tree/latest -type f | wc -l` over a 50 000-file
#         tree (500 directories of 100 files, 1-8 kB each), on a fresh mount.
#   open  from starting `nfrepo mount` to listing /snapshots of a repository
#         with 1 000 snapshots (made once, cached in $BENCH_DIR).
#
# Needs root (or fusermount3) and /dev/fuse.
#
# Environment:
#   BENCH_DIR    work dir (default /tmp/nfrepo-mountbench)
#   NFREPO_BIN   the binary (default: build target/release/nfrepo)
set -euo pipefail

ONLY=all
while [[ $# -gt 0 ]]; do
	case "$1" in
	--only) ONLY="$2"; shift 2 ;;
	*) echo "usage: $0 [--only read|find|open|all]" >&2; exit 2 ;;
	esac
done
NFREPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH_DIR="${BENCH_DIR:-/tmp/nfrepo-mountbench}"
if [[ -z "${NFREPO_BIN:-}" ]]; then
	cargo build --release -p nfrepo-cli --quiet --manifest-path "$NFREPO_ROOT/Cargo.toml"
	NFREPO_BIN="$NFREPO_ROOT/target/release/nfrepo"
fi
mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"
export NFREPO_PASSWORD=bench-password
MNT="$BENCH_DIR/mnt"
mkdir -p "$MNT"
MOUNT_PID=""

now() { date +%s.%N; }
elapsed() { python3 -c "print('%.2f' % ($2 - $1))"; }

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

mount_repo() { # REPO: mounts, waits until /snapshots lists
	nf "$1" mount "$MNT" 2>"$BENCH_DIR/mount.log" &
	MOUNT_PID=$!
	for _ in $(seq 1 600); do
		[[ -d "$MNT/snapshots" ]] && return 0
		sleep 0.01
	done
	echo "mount did not come up; log:" >&2
	cat "$BENCH_DIR/mount.log" >&2
	exit 1
}

unmount_repo() {
	[[ -n "$MOUNT_PID" ]] || return 0
	kill -TERM "$MOUNT_PID"
	wait "$MOUNT_PID" || true
	MOUNT_PID=""
}
trap unmount_repo EXIT

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }

if [[ "$ONLY" == read || "$ONLY" == all ]]; then
	repo_init repo-dump
	if [[ -z "$(nf repo-dump snapshots --source dump 2>/dev/null | tail -n +2)" ]]; then
		python3 -c "
import sys, random
random.seed(15)
out = sys.stdout.buffer
row = 0
while row < 7_000_000:
    out.write(b'INSERT INTO sbtest1 VALUES (%d,%d,\'%s\',\'%s\');\n' % (row, random.randrange(10**6),
        ('%011d-' % random.randrange(10**11)).encode() * 5, ('%011d-' % random.randrange(10**11)).encode() * 4))
    row += 1
" | head -c 1000000000 | nf repo-dump snapshot --stdin --name dump.sql --source dump --profile dump >/dev/null
	fi
	drop_caches
	mount_repo repo-dump
	start=$(now)
	bytes=$(dd if="$MNT/sources/dump/latest/dump.sql" of=/dev/null bs=1M 2>&1 | awk '/bytes/ {print $1}')
	end=$(now)
	rss=$(awk '/VmHWM/ {print $2}' "/proc/$MOUNT_PID/status")
	secs=$(elapsed "$start" "$end")
	echo "read: $bytes bytes in ${secs}s = $(python3 -c "print('%.0f' % ($bytes / $secs / 1e6))") MB/s, mount peak RSS $((rss / 1024)) MiB"
	unmount_repo
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
	mount_repo repo-tree
	start=$(now)
	count=$(find "$MNT/sources/tree/latest" -type f | wc -l)
	end=$(now)
	echo "find: $count files in $(elapsed "$start" "$end")s"
	unmount_repo
fi

if [[ "$ONLY" == open || "$ONLY" == all ]]; then
	repo_init repo-many
	have=$(nf repo-many --json snapshots | python3 -c "import json,sys; print(len(json.load(sys.stdin)))")
	for i in $(seq "$((have + 1))" 1000); do
		echo "snapshot $i" | nf repo-many snapshot --stdin --name s.txt --source "s$((i % 20))" \
			--tag env=prod --tag type=config >/dev/null
	done
	start=$(now)
	mount_repo repo-many
	count=$(ls "$MNT/snapshots" | wc -l)
	end=$(now)
	echo "open: $count snapshots listed $(elapsed "$start" "$end")s after starting the mount"
	unmount_repo
fi
