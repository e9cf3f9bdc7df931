#!/usr/bin/env bash
# wal-push latency per 16 MiB segment through a running `nfrepo agent`, and
# the agent's peak RSS, on a local file:// repository.
#
#   scripts/bench-wal-push.sh [SEGMENTS] [KIND]
#
# SEGMENTS (default 20) segments are made up front, KIND `random` (default:
# incompressible, the worst case for compression and dedup) or `text`
# (repeated INSERT text: compresses well). Each push is
# one `nfrepo wal-push` process, timed from start to exit as
# archive_command would see it. Prints the median, min and max latency and
# the agent's VmHWM. Uses target/dist/nfrepo (or $NFREPO_BIN).
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

N="${1:-20}"
KIND="${2:-random}"
BIN="${NFREPO_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/dist/nfrepo}"
[[ -x "$BIN" ]] || die "no binary at $BIN (cargo build --profile dist -p nfrepo-cli, or set NFREPO_BIN)"
WORK="$(mktemp -d)"
AGENT=""
trap 'kill "$AGENT" 2>/dev/null || true; rm -rf "$WORK"' EXIT
chmod 700 "$WORK"
echo "bench-password" >"$WORK/pass"
chmod 600 "$WORK/pass"
cat >"$WORK/nfrepo.toml" <<EOF
[repository]
url = "file://$WORK/repo"
password_file = "$WORK/pass"

[agent]
socket = "$WORK/run/agent.sock"

[sources.pg]
kind = "postgres"
method = "basebackup"
connection = "postgres://postgres@127.0.0.1:15432"
EOF
N_CFG=(--config "$WORK/nfrepo.toml" --cache-dir "$WORK/cache")
"$BIN" "${N_CFG[@]}" --quiet init --kdf-memory-kib 64 --kdf-iterations 1
mkdir -p "$WORK/wal"
for i in $(seq 1 "$N"); do
	name="$(printf '000000010000000000%06X' "$i")"
	case "$KIND" in
	random) head -c $((16 << 20)) /dev/urandom >"$WORK/wal/$name" ;;
	text) # yes ends on SIGPIPE once head has enough: not a failure.
		yes "INSERT INTO pgbench_history VALUES ($i, $RANDOM, $RANDOM, now(), 'filler')" |
			head -c $((16 << 20)) >"$WORK/wal/$name" || true ;;
	*) die "KIND is random or text" ;;
	esac
done
"$BIN" "${N_CFG[@]}" agent >"$WORK/agent.out" 2>"$WORK/agent.log" &
AGENT=$!
wait_agent "$WORK/run/agent.sock" "$WORK/agent.log"
: >"$WORK/times"
for f in "$WORK"/wal/*; do
	start=$(date +%s%N)
	"$BIN" "${N_CFG[@]}" --quiet wal-push "$f"
	end=$(date +%s%N)
	echo $(((end - start) / 1000000)) >>"$WORK/times"
done
sort -n "$WORK/times" >"$WORK/sorted"
median=$(sed -n "$(((N + 1) / 2))p" "$WORK/sorted")
hwm=$(awk '/VmHWM/ {print $2 / 1024 " MiB"}' "/proc/$AGENT/status")
log "wal-push of $N $KIND 16 MiB segments: median ${median} ms, min $(head -n1 "$WORK/sorted") ms, max $(tail -n1 "$WORK/sorted") ms; agent peak RSS $hwm"
du -sh "$WORK/repo" >&2
