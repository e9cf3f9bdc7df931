#!/usr/bin/env bash
# Point-in-time recovery under a continuous write load: how far the newest
# recoverable moment lags behind, and what it costs in repository bytes,
# against a dump every 5 minutes (issue 16, item 3).
#
#   scripts/bench-pitr.sh [postgres|mysql] [MINUTES] [SCALE] [TPS]
#
# postgres (default): a private PostgreSQL 15 cluster (127.0.0.1:25432, as
# the postgres user) with archive_mode = on, archive_timeout = 60 s and
# archive_command = 'nfrepo wal-push %p' through a running `nfrepo agent`,
# into repository A (file://). `pgbench -i -s SCALE` (default 20, ~340 MB),
# a base backup, then `pgbench -R TPS` (default 200).
#
# mysql: the MariaDB of scripts/start-mariadb.sh (127.0.0.1:13306, binlog
# on; start it first), database `bench_pitr` (dropped first). A source with
# `binlog = true` (the default 60 s `binlog_interval`) streams its binlogs
# through the agent into repository A after a first dump;
# `sysbench oltp_write_only` prepares 4 tables of SCALE × 20,000 rows
# (SCALE 20: ~340 MB) and writes at TPS transactions/s.
#
# Either way the load runs for MINUTES (default 11) minutes. Every 10 s
# `nfrepo status --json` gives the newest recoverable moment; its lag is the
# time now minus that moment. Meanwhile, every 5 minutes a dump of the same
# database goes into repository B, as a setup without the change log would
# need for the same RPO. At the end a new base backup (or dump) into A shows
# what one adds after the run. Prints: lag (median, max), the log volume the
# server wrote, repository A's growth by it, repository B's growth per
# dump, the new base backup's added bytes, and the agent's peak RSS.
#
# Uses target/dist/nfrepo (or $NFREPO_BIN).
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

KIND="${1:-postgres}"
MINUTES="${2:-11}"
SCALE="${3:-20}"
TPS="${4:-200}"
BIN="${NFREPO_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/dist/nfrepo}"
[[ -x "$BIN" ]] || die "no binary at $BIN (cargo build --profile dist -p nfrepo-cli, or set NFREPO_BIN)"
((EUID == 0)) || die "run as root (the PostgreSQL cluster and its agent run as the postgres user)"

WORK="$(mktemp -d /var/tmp/bench-pitr.XXXXXX)"
AGENT=""
LOAD=""
PG="${NFREPO_PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_PORT=25432
MY=(mariadb --no-defaults --protocol=TCP -h 127.0.0.1 -P 13306 -uroot)
AS=()
cleanup() {
	[[ -n "$LOAD" ]] && kill "$LOAD" 2>/dev/null
	[[ -n "$AGENT" ]] && kill "$AGENT" 2>/dev/null
	if [[ "$KIND" == postgres ]]; then
		"${AS[@]}" "$PG/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT
chmod 755 "$WORK"
cp "$BIN" "$WORK/nfrepo"
chmod 755 "$WORK/nfrepo"
echo "bench-password" >"$WORK/pass"

case "$KIND" in
postgres)
	[[ -x "$PG/postgres" ]] || die "no PostgreSQL binaries in $PG"
	id postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
	port_open "$PG_PORT" && die "127.0.0.1:$PG_PORT is in use"
	AS=(runuser -u postgres --)
	SOURCE=pg
	source_a="kind = \"postgres\"
method = \"basebackup\"
connection = \"postgres://postgres@127.0.0.1:$PG_PORT\""
	source_b="kind = \"postgres\"
connection = \"postgres://postgres@127.0.0.1:$PG_PORT\"
databases = [\"bench\"]"
	;;
mysql)
	port_open 13306 || die "no MariaDB on 127.0.0.1:13306: run scripts/start-mariadb.sh DIR first"
	command -v sysbench >/dev/null || die "sysbench is missing (apt-get install -y sysbench)"
	SOURCE=m
	source_a="kind = \"mysql\"
connection = \"mysql://root@127.0.0.1:13306\"
databases = [\"bench_pitr\"]
binlog = true"
	source_b="kind = \"mysql\"
connection = \"mysql://root@127.0.0.1:13306\"
databases = [\"bench_pitr\"]"
	;;
*) die "KIND is postgres or mysql" ;;
esac
for repo in a b; do
	source_var="source_$repo"
	cat >"$WORK/$repo.toml" <<EOF
[repository]
url = "file://$WORK/repo-$repo"
password_file = "$WORK/pass"

[agent]
socket = "$WORK/run/agent.sock"

[sources.$SOURCE]
${!source_var}
EOF
done
[[ "$KIND" == postgres ]] && chown -R postgres "$WORK"
chmod 600 "$WORK/pass"
nf() { # nf a|b ARGS...: nfrepo on repository A or B
	local repo="$1"
	shift
	"${AS[@]}" "$WORK/nfrepo" --config "$WORK/$repo.toml" --cache-dir "$WORK/cache-$repo" "$@"
}
bytes_of() { du -sb "$1" | cut -f1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
added() { python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["bytes_added_stored"])'; }
psql_pg() { "${AS[@]}" "$PG/psql" -X -A -t -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bench -c "$1"; }
# The server's change log written so far, in bytes.
log_position() {
	case "$KIND" in
	postgres) psql_pg "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint" ;;
	mysql) "${MY[@]}" -N -e "SHOW BINARY LOGS" | awk '{ s += $2 } END { print s + 0 }' ;;
	esac
}
start_agent() {
	nf a agent >"$WORK/agent.out" 2>"$WORK/agent.log" &
	AGENT=$!
	wait_agent "$WORK/run/agent.sock" "$WORK/agent.log"
}
dump_into_b() { nf b --json snapshot --source "$SOURCE" | added; }

nf a --quiet init --kdf-memory-kib 65536 --kdf-iterations 3
nf b --quiet init --kdf-memory-kib 65536 --kdf-iterations 3
case "$KIND" in
postgres)
	"${AS[@]}" "$PG/initdb" -D "$WORK/data" -A trust -U postgres >"$WORK/initdb.log" 2>&1 || die "initdb failed"
	"${AS[@]}" "$PG/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w -t 60 -o "-p $PG_PORT -k $WORK \
		-c listen_addresses=127.0.0.1 -c wal_level=replica -c archive_mode=on -c archive_timeout=60 \
		-c archive_command='$WORK/nfrepo --config $WORK/a.toml --cache-dir $WORK/cache-a --quiet wal-push %p'" \
		start >/dev/null || die "PostgreSQL did not start: $(tail -n 20 "$WORK/postgres.log")"
	start_agent
	"${AS[@]}" "$PG/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench
	log "pgbench -i -s $SCALE"
	"${AS[@]}" pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench >"$WORK/init.log" 2>&1
	LOAD_CMD=("${AS[@]}" pgbench -R "$TPS" -T "$((MINUTES * 60))" -c 4 -j 2 -h 127.0.0.1 -p "$PG_PORT"
		-U postgres bench)
	;;
mysql)
	"${MY[@]}" -e "DROP DATABASE IF EXISTS bench_pitr; CREATE DATABASE bench_pitr"
	SB=(sysbench oltp_write_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port=13306
		--mysql-user=root --mysql-db=bench_pitr --tables=4 --table-size="$((SCALE * 20000))")
	log "sysbench prepare: 4 tables of $((SCALE * 20000)) rows"
	"${SB[@]}" prepare >"$WORK/init.log" 2>&1 || die "sysbench prepare failed: $(tail -n 5 "$WORK/init.log")"
	LOAD_CMD=("${SB[@]}" --threads=4 --rate="$TPS" --time="$((MINUTES * 60))" run)
	# Binlog files are archived whole from the dump's file on: start a new one,
	# so the preparation's inserts are not counted as the load's.
	"${MY[@]}" -e "FLUSH BINARY LOGS"
	;;
esac
AGENT_PID=""
log "first base backup or dump into repository A"
first="$(nf a --json snapshot --source "$SOURCE" | added)"
log "it stored $(mib "$first")"
[[ "$KIND" == mysql ]] && start_agent
# The agent runs in a subshell (under runuser for PostgreSQL): find the nfrepo process itself.
AGENT_PID="$(pgrep -n -f "^$WORK/nfrepo --config $WORK/a.toml .* agent\$")" || die "cannot find the agent's process"
log_start="$(log_position)"
repo_a_start="$(bytes_of "$WORK/repo-a")"
repo_b_start="$(bytes_of "$WORK/repo-b")"

log "load at $TPS tx/s for $MINUTES min; status every 10 s, a dump into repository B every 5 min"
"${LOAD_CMD[@]}" >"$WORK/load.log" 2>&1 &
LOAD=$!
: >"$WORK/lags"
: >"$WORK/dumps"
next_dump=$(date +%s)
while kill -0 "$LOAD" 2>/dev/null; do
	if (($(date +%s) >= next_dump)); then
		dump_into_b >>"$WORK/dumps"
		next_dump=$((next_dump + 300))
	fi
	# A gap makes status fail: that is a finding, not an abort.
	{ nf a --json status "$SOURCE" || true; } | python3 -c '
import json, sys
s = json.load(sys.stdin)[0]
age = s.get("newest_recoverable_age_seconds")
print(age if age is not None else "none", "gap" if s.get("error") else "whole")' >>"$WORK/lags"
	sleep 10
done
wait "$LOAD" || die "the load failed: $(tail -n 5 "$WORK/load.log")"
LOAD=""
# Let the last segment or binlog batch reach the repository.
[[ "$KIND" == postgres ]] && psql_pg "SELECT pg_switch_wal()" >/dev/null
sleep 5
log_bytes="$(($(log_position) - log_start))"
repo_a_log="$(($(bytes_of "$WORK/repo-a") - repo_a_start))"
repo_b_growth="$(($(bytes_of "$WORK/repo-b") - repo_b_start))"
log "a new base backup or dump into repository A"
second="$(nf a --json snapshot --source "$SOURCE" | added)"
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
dump_first="$(awk 'NR == 1 { print $1 + 0 }' "$WORK/dumps")"
dump_later="$(awk 'NR > 1 { s += $1; n++ } END { print (n ? int(s / n) : 0) }' "$WORK/dumps")"
log "$KIND, $MINUTES min at $TPS tx/s (scale $SCALE): $(grep -E 'number of transactions actually processed|transactions:' "$WORK/load.log" | head -n 1 | tr -s ' ')"
log "newest recoverable moment behind now: median ${lag_median} s, max ${lag_max} s over $samples samples ($gaps with a gap)"
log "change log written by the server: $(mib "$log_bytes"); repository A grew by $(mib "$repo_a_log") archiving it"
log "dumps every 5 min: $dumps; the first added $(mib "$dump_first"), each later one $(mib "$dump_later") on average; repository B grew by $(mib "$repo_b_growth")"
log "first base backup or dump into A stored $(mib "$first"); a new one after the run added $(mib "$second")"
log "agent peak RSS: $hwm"
