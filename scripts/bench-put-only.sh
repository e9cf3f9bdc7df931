#!/usr/bin/env bash
# Re-run of an unchanged file tree: a put-only credential (change detection
# by the host's known-files record, format-spec/put-only.md) against the
# password (change detection by the parent snapshot), on the same data.
#
#   scripts/bench-put-only.sh [--runs N]
#
# The tree: 20 000 files of random bytes (2 kB to 150 kB, 949 MB) in 200
# directories, made once in $BENCH_DIR/tree. Two fresh repositories, one
# backed up with the password and one with a credential from `key add
# --put-only`; each tree is backed up N times (default 5), then once more
# with the credential and --no-cache (no record: every file read again).
# Printed per run: wall time and the snapshot summary's files, unchanged
# files, bytes read and bytes added.
#
# Environment:
#   BENCH_DIR    work dir (default /tmp/nfrepo-putonlybench)
#   NFREPO_BIN   the binary (default: build target/dist/nfrepo)
set -euo pipefail

RUNS=5
while [[ $# -gt 0 ]]; do
	case "$1" in
	--runs) RUNS="$2"; shift 2 ;;
	*) echo "usage: $0 [--runs N]" >&2; exit 2 ;;
	esac
done
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
BENCH_DIR="${BENCH_DIR:-/tmp/nfrepo-putonlybench}"
# shellcheck disable=SC2119 # the binary alone: no CARGO_ARGS
[[ -n "${NFREPO_BIN:-}" ]] || build_nfrepo
mkdir -p "$BENCH_DIR"
cd "$BENCH_DIR"
if [[ ! -d tree ]]; then
	python3 - <<'PY'
import os, random
random.seed(7)
for d in range(200):
    p = os.path.join("tree", f"d{d:03}", f"s{d % 7}")
    os.makedirs(p, exist_ok=True)
    for f in range(100):
        with open(os.path.join(p, f"f{f:03}.bin"), "wb") as fh:
            fh.write(os.urandom(random.choice([2000, 8000, 20000, 60000, 150000])))
PY
fi
export NFREPO_PASSWORD=bench-password
rm -rf repo-pw repo-po cache-pw cache-po po.credential
for r in pw po; do
	NFREPO_CACHE_DIR="$PWD/cache-$r" "$NFREPO_BIN" --repo "file://$PWD/repo-$r" init \
		--kdf-memory-kib 64 --kdf-iterations 1 >/dev/null
done
NFREPO_CACHE_DIR="$PWD/cache-po" "$NFREPO_BIN" --repo "file://$PWD/repo-po" \
	key add --put-only --label bench --output "$PWD/po.credential" >/dev/null

run() { # label, then the command
	local label="$1" start end
	shift
	start=$(date +%s.%N)
	"$@" >out.json
	end=$(date +%s.%N)
	python3 -c "import json; d = json.load(open('out.json'))['summary']; \
print('%-22s %6.2fs files=%d unchanged=%d read=%d added=%d' % ('$label', $end - $start, \
d['files'], d['files_unchanged'], d['bytes_read'], d['bytes_added_raw']))"
}
for i in $(seq 1 "$RUNS"); do
	run "password run $i" env NFREPO_CACHE_DIR="$PWD/cache-pw" \
		"$NFREPO_BIN" --repo "file://$PWD/repo-pw" --json snapshot tree --source tree
	run "put-only run $i" env -u NFREPO_PASSWORD NFREPO_CACHE_DIR="$PWD/cache-po" \
		NFREPO_CREDENTIAL_FILE="$PWD/po.credential" \
		"$NFREPO_BIN" --repo "file://$PWD/repo-po" --json snapshot tree --source tree
done
run "put-only, no cache" env -u NFREPO_PASSWORD NFREPO_CREDENTIAL_FILE="$PWD/po.credential" \
	"$NFREPO_BIN" --repo "file://$PWD/repo-po" --no-cache --json snapshot tree --source tree
