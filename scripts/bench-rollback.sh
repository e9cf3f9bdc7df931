#!/usr/bin/env bash
# Measures `rollback --to last-good` of a deployment artifact (issue 9: the
# whole rollback must take at most 60 s for a 500 MB artifact).
#
#   scripts/bench-rollback.sh [--mb N] [--runs N]
#
# Builds nfrepo (release), makes an artifact of N MB (default 500: one large
# binary plus 2,000 small static files, incompressible), snapshots it and
# marks it good, deploys a second release (every file changed), then times
# `rollback SOURCE --to last-good --force` and checks the files equal the
# good release. Prints the median and the spread of the runs.
set -euo pipefail
# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$NFREPO_ROOT"

MB=500
RUNS=3
while (($# > 0)); do
	case "$1" in
	--mb) MB="$2"; shift 2 ;;
	--runs) RUNS="$2"; shift 2 ;;
	*) die "unknown argument $1" ;;
	esac
done

# shellcheck disable=SC2119 # the binary alone: no CARGO_ARGS
build_nfrepo
BIN="$NFREPO_BIN"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/nfrepo-bench-rollback.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

export NFREPO_REPOSITORY="file://$WORK/repo" NFREPO_PASSWORD=bench NFREPO_CACHE_DIR="$WORK/cache"
RELEASE="$WORK/srv/app/current"
cat >"$WORK/nfrepo.toml" <<TOML
[sources.app]
kind = "artifact"
paths = ["$RELEASE"]
TOML
"$BIN" init --kdf-memory-kib 8192 --kdf-iterations 1 >/dev/null

# release N: one binary of (MB - 20) MB and 2,000 files of 10 KB, all new bytes.
make_release() {
	rm -rf "$RELEASE"
	mkdir -p "$RELEASE/static"
	head -c "$(((MB - 20) * 1000000))" /dev/urandom >"$RELEASE/app.bin"
	python3 - "$RELEASE/static" <<'PY'
import os, sys
for i in range(2000):
    with open(os.path.join(sys.argv[1], f"asset-{i:04}.js"), "wb") as f:
        f.write(os.urandom(10000))
PY
}

times=()
for ((run = 1; run <= RUNS; run++)); do
	make_release
	good="$("$BIN" --config "$WORK/nfrepo.toml" --json snapshot --source app | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot_id"])')"
	"$BIN" mark-good "$good" >/dev/null
	expected="$(cd "$RELEASE" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)"
	make_release
	"$BIN" --config "$WORK/nfrepo.toml" snapshot --source app >/dev/null
	start="$(now_ns)"
	"$BIN" --config "$WORK/nfrepo.toml" --quiet rollback app --to last-good --force --no-health-check
	end="$(now_ns)"
	got="$(cd "$RELEASE" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum)"
	[[ "$got" == "$expected" ]] || die "run $run: files after the rollback differ from the good release"
	times+=("$(((end - start) / 1000000))")
	log "run $run: rollback of a $MB MB artifact took ${times[-1]} ms"
done
sorted="$(printf '%s\n' "${times[@]}" | sort -n)"
median="$(sed -n "$(((RUNS + 1) / 2))p" <<<"$sorted")"
echo "rollback --to last-good, $MB MB artifact, $RUNS runs: median ${median} ms (min $(head -1 <<<"$sorted"), max $(tail -1 <<<"$sorted"))"
