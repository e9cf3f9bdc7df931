#!/usr/bin/env bash
# PostgreSQL point-in-time recovery under a continuous write load: how far
# the newest recoverable moment lags behind, and what it costs in
# repository bytes, against a dump every 5 minutes (issue 16, item 3).
#
#   scripts/bench-pitr.sh [MINUTES] [SCALE] [TPS]
#
# A private PostgreSQL 15 cluster (127.0.0.1:25432, as the postgres user)
# with archive_mode = on, archive_timeout = 60 s and
# archive_command = 'nfrepo wal-push %p' through a running `nfrepo agent`,
# into repository A (file://). `pgbench -i -s SCALE` (default 20, ~300 MB),
# a base backup, then `pgbench -R TPS` (default 200) for MINUTES (default 15)
# minutes. Every 10 s `nfrepo status --json pg` gives the newest recoverable
# moment; its lag is the time now minus that moment. Meanwhile, every 5
# minutes a `pg_dump` of the same database goes into repository B through
# `snapshot --stdin --profile dump`, as a setup without WAL archiving would
# need for the same RPO. At the end a second base backup shows what one
# adds after the run. Prints: lag (median, max), WAL written, repository A's
# growth by WAL, repository B's growth per dump, the second base backup's
# added bytes, and the agent's peak RSS.
#
# Uses target/release/nfrepo (or $NFREPO_BIN).
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

MINUTES="${1:-15}"
SCALE="${2:-20}"
TPS="${3:-200}"
PORT=25432
PG="${NFREPO_PG_BIN:-/usr/lib/postgresql/15/bin}"
BIN="${NFREPO_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/release/nfrepo}"
[[ -x "$BIN" ]] || die "no binary at $BIN (cargo build --release, or set NFREPO_BIN)"
[[ -x "$PG/postgres" ]] || die "no PostgreSQL binaries in $PG"
((EUID == 0)) || die "run as root: the cluster and the agent run as the postgres user"
id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
port_open "$PORT" && die "127.0.0.1:$PORT is in use"

WORK="$(mktemp -d /var/tmp/bench-pitr.XXXXXX)"
AGENT=""
LOAD=""
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
	[[ -n "$LOAD" ]] && kill "$LOAD" 2>/dev/null
	[[ -n "$AGENT" ]] && kill "$AGENT" 2>/dev/null
	as_pg "$PG/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT
chmod 755 "$WORK"
cp "$BIN" "$WORK/nfrepo"
chmod 755 "$WORK/nfrepo"
echo "bench-password" >"$WORK/pass"
for repo in a b; do
	cat >"$WORK/$repo.toml" <<EOF
[repository]
url = "file://$WORK/repo-$repo"
password_file = "$WORK/pass"

[agent]
socket = "$WORK/run/agent.sock"

[sources.pg]
kind = "postgres"
method = "basebackup"
connection = "postgres://postgres@127.0.0.1:$PORT"
EOF
done
chown -R postgres "$WORK"
chmod 600 "$WORK/pass"
nf() { # nf a|b ARGS...: nfrepo on repository A or B, as postgres
	local repo="$1"
	shift
	as_pg "$WORK/nfrepo" --config "$WORK/$repo.toml" --cache-dir "$WORK/cache-$repo" "$@"
}
bytes_of() { du -sb "$1" | cut -f1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
psql_pg() { as_pg "$PG/psql" -X -A -t -q -h 127.0.0.1 -p "$PORT" -U postgres -d bench -c "$1"; }

nf a --quiet init --kdf-memory-kib 65536 --kdf-iterations 3
nf b --quiet init --kdf-memory-kib 65536 --kdf-iterations 3
as_pg "$PG/initdb" -D "$WORK/data" -A trust -U postgres >"$WORK/initdb.log" 2>&1 || die "initdb failed"
as_pg "$PG/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w -t 60 -o "-p $PORT -k $WORK \
	-c listen_addresses=127.0.0.1 -c wal_level=replica -c archive_mode=on -c archive_timeout=60 \
	-c archive_command='$WORK/nfrepo --config $WORK/a.toml --cache-dir $WORK/cache-a --quiet wal-push %p'" \
	start >/dev/null || die "PostgreSQL did not start: $(tail -n 20 "$WORK/postgres.log")"
nf a agent >"$WORK/agent.out" 2>"$WORK/agent.log" &
AGENT=$!
wait_agent "$WORK/run/agent.sock" "$WORK/agent.log"
# The agent runs under runuser in a subshell: find the nfrepo process itself.
AGENT_PID="$(pgrep -n -f "^$WORK/nfrepo --config $WORK/a.toml .* agent\$")" || die "cannot find the agent's process"

as_pg "$PG/createdb" -h 127.0.0.1 -p "$PORT" -U postgres bench
log "pgbench -i -s $SCALE"
as_pg pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PORT" -U postgres bench >"$WORK/pgbench-init.log" 2>&1
log "base backup"
base1="$(nf a --json snapshot --source pg)"
log "base backup: $(echo "$base1" | python3 -c 'import json,sys; s=json.load(sys.stdin)["summary"]; print(s["bytes"], "bytes,", s["bytes_added_stored"], "stored")')"
wal_start="$(psql_pg "SELECT pg_current_wal_lsn()")"
repo_a_start="$(bytes_of "$WORK/repo-a")"
repo_b_start="$(bytes_of "$WORK/repo-b")"

log "pgbench -R $TPS for $MINUTES min; status every 10 s, a dump into repository B every 5 min"
as_pg pgbench -R "$TPS" -T "$((MINUTES * 60))" -c 4 -j 2 -h 127.0.0.1 -p "$PORT" -U postgres bench \
	>"$WORK/pgbench.log" 2>&1 &
LOAD=$!
: >"$WORK/lags"
: >"$WORK/dumps"
start_s=$(date +%s)
next_dump=$start_s
while kill -0 "$LOAD" 2>/dev/null; do
	now=$(date +%s)
	if ((now >= next_dump)); then
		as_pg "$PG/pg_dump" -h 127.0.0.1 -p "$PORT" -U postgres bench |
			nf b --json snapshot --stdin --name bench.sql --source pg-dump --profile dump >"$WORK/dump.json"
		python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["summary"]; print(s["bytes"], s["bytes_added_stored"])' \
			"$WORK/dump.json" >>"$WORK/dumps"
		next_dump=$((next_dump + 300))
	fi
	# A gap would make status fail: that is a finding, not an abort.
	status="$(nf a --json status pg || true)"
	echo "$status" | python3 -c '
import json, sys, time
s = json.load(sys.stdin)[0]
age = s.get("newest_recoverable_age_seconds")
print(age if age is not None else "none", "gap" if s.get("error") else "whole")' >>"$WORK/lags"
	sleep 10
done
wait "$LOAD" || die "pgbench failed: $(tail -n 5 "$WORK/pgbench.log")"
LOAD=""
# Let the last segment close and reach the repository.
psql_pg "SELECT pg_switch_wal()" >/dev/null
sleep 5
wal_end="$(psql_pg "SELECT pg_current_wal_lsn()")"
wal_bytes="$(psql_pg "SELECT pg_wal_lsn_diff('$wal_end', '$wal_start')::bigint")"
repo_a_wal="$(($(bytes_of "$WORK/repo-a") - repo_a_start))"
log "second base backup"
base2="$(nf a --json snapshot --source pg)"
base2_added="$(echo "$base2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["bytes_added_stored"])')"
repo_b_growth="$(($(bytes_of "$WORK/repo-b") - repo_b_start))"
hwm="$(awk '/VmHWM/ {printf "%.1f MiB", $2 / 1024}' "/proc/$AGENT_PID/status" 2>/dev/null || echo "?")"

read -r lag_median lag_max samples gaps < <(python3 - "$WORK/lags" <<'PYEND'
import sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
ages = sorted(int(a) for a, _ in rows if a != "none")
gaps = sum(1 for _, g in rows if g == "gap")
median = ages[(len(ages) - 1) // 2] if ages else -1
print(median, ages[-1] if ages else -1, len(rows), gaps)
PYEND
)
dumps="$(wc -l <"$WORK/dumps")"
dump_first="$(awk 'NR == 1 { print $2 + 0 }' "$WORK/dumps")"
dump_later="$(awk 'NR > 1 { s += $2; n++ } END { print (n ? int(s / n) : 0) }' "$WORK/dumps")"
dump_size="$(awk 'END { print $1 + 0 }' "$WORK/dumps")"
tx="$(awk '/number of transactions actually processed/ {print $NF}' "$WORK/pgbench.log" | cut -d/ -f1)"
log "pgbench: ${tx:-?} transactions in $MINUTES min (scale $SCALE, -R $TPS)"
log "newest recoverable moment behind now: median ${lag_median} s, max ${lag_max} s over $samples samples ($gaps with a gap)"
log "WAL written: $(mib "$wal_bytes"); repository A grew by $(mib "$repo_a_wal") archiving it"
log "dumps every 5 min: $dumps dumps of $(mib "$dump_size"): the first added $(mib "$dump_first"), each later one $(mib "$dump_later") on average; repository B grew by $(mib "$repo_b_growth")"
log "second base backup after the run added $(mib "$base2_added")"
log "agent peak RSS: $hwm"
