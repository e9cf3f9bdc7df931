#!/usr/bin/env bash
# Times a restore of a PostgreSQL dump straight into a server, nfrepo against
# the peers that can do it the same way (a stored dump piped into psql).
#
#   scripts/bench-restore-into.sh [--runs N] [--scale S]
#
# The database is made once with `pgbench -i -s S` (default 20, about 300 MB
# of plain pg_dump) on the server at $NFREPO_TEST_POSTGRES_URL's host and port
# (scripts/start-postgres.sh: 127.0.0.1:15432, user postgres). Each tool backs
# the dump up once into a fresh encrypted repository, then each run restores
# it into the same server, runs alternated:
#
#   nfrepo  restore pg@latest --into postgres://…/bench_target --force --drop-old
#           (staged into a new database, verified, row counts checked, switched in)
#   restic  dropdb; createdb; restic dump latest bench.sql | psql --single-transaction -v ON_ERROR_STOP=1
#   borg    dropdb; createdb; borg extract --stdout ::a | psql --single-transaction -v ON_ERROR_STOP=1
#
# The peers' pipelines are what an operator would script with them; they
# replace the live database in place (it is gone while they load), which
# nfrepo never does, so nfrepo's extra work (a verified load into a staging
# database, COUNT(*) per table, the rename) is inside its time.
# Prints the median and min–max wall time per tool, and the ratio to the
# best peer; tools that are not installed (restic, borg: apt-get install
# restic borgbackup) are left out with a note.
#
# Environment: BENCH_DIR (default /tmp/nfrepo-bench-into), NFREPO_BIN,
# NFREPO_PG_BIN (default /usr/lib/postgresql/15/bin).
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

RUNS=3
SCALE=20
while (($# > 0)); do
	case "$1" in
	--runs)
		[[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive number"
		RUNS="$2"
		shift 2
		;;
	--scale)
		[[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--scale takes a positive number"
		SCALE="$2"
		shift 2
		;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown argument: $1" ;;
	esac
done

PG_BIN="${NFREPO_PG_BIN:-/usr/lib/postgresql/15/bin}"
BENCH_DIR="${BENCH_DIR:-/tmp/nfrepo-bench-into}"
URL="${NFREPO_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:15432}"
HOSTPORT="${URL#*@}"
HOST="${HOSTPORT%:*}"
PORT="${HOSTPORT##*:}"
PGARGS=(-h "$HOST" -p "$PORT" -U postgres)
export PGCONNECT_TIMEOUT=10

# shellcheck disable=SC2119 # the binary alone: no CARGO_ARGS
[[ -n "${NFREPO_BIN:-}" ]] || build_nfrepo
"$PG_BIN/psql" "${PGARGS[@]}" -d postgres -Atc 'select 1' >/dev/null ||
	die "no PostgreSQL at $HOST:$PORT (scripts/start-postgres.sh starts one)"

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/logs"
LOGS="$BENCH_DIR/logs"
export NFREPO_PASSWORD=bench RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench
export NFREPO_CACHE_DIR="$BENCH_DIR/cache"

log "making bench_source with pgbench -i -s $SCALE"
"$PG_BIN/dropdb" "${PGARGS[@]}" --if-exists bench_source
"$PG_BIN/createdb" "${PGARGS[@]}" bench_source
"$PG_BIN/pgbench" "${PGARGS[@]}" -i -q -s "$SCALE" bench_source >"$LOGS/pgbench.log" 2>&1

cat >"$BENCH_DIR/nfrepo.toml" <<EOF
[repository]
url = "file://$BENCH_DIR/nfrepo-repo"
password_env = "NFREPO_PASSWORD"

[sources.pg]
kind = "postgres"
connection = "$URL"
databases = ["bench_source"]
bin_dir = "$PG_BIN"
EOF
export NFREPO_CONFIG="$BENCH_DIR/nfrepo.toml"
"$NFREPO_BIN" init --kdf-memory-kib 65536 >"$LOGS/nfrepo.log" 2>&1
"$NFREPO_BIN" snapshot --source pg >>"$LOGS/nfrepo.log" 2>&1
DUMP_BYTES=$("$NFREPO_BIN" --json snapshots | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["extra"]["dump.bench_source.sql.bytes"])' 2>/dev/null || echo "?")

TOOLS=(nfrepo)
if command -v restic >/dev/null; then
	restic init -q -r "$BENCH_DIR/restic-repo" >"$LOGS/restic.log" 2>&1
	"$PG_BIN/pg_dump" "${PGARGS[@]}" bench_source |
		restic backup -q -r "$BENCH_DIR/restic-repo" --stdin --stdin-filename bench.sql >>"$LOGS/restic.log" 2>&1
	TOOLS+=(restic)
else
	log "restic not installed: left out"
fi
if command -v borg >/dev/null; then
	export BORG_REPO="$BENCH_DIR/borg-repo"
	borg init -e repokey-blake2 >"$LOGS/borg.log" 2>&1
	"$PG_BIN/pg_dump" "${PGARGS[@]}" bench_source |
		borg create --compression zstd,3 --stdin-name bench.sql ::a - >>"$LOGS/borg.log" 2>&1
	TOOLS+=(borg)
else
	log "borg not installed: left out"
fi

fresh_target() {
	"$PG_BIN/dropdb" "${PGARGS[@]}" --if-exists bench_target
	"$PG_BIN/createdb" "${PGARGS[@]}" bench_target
}

load() {
	"$PG_BIN/psql" "${PGARGS[@]}" -q -X --single-transaction -v ON_ERROR_STOP=1 -d bench_target >/dev/null
}

restore_once() {
	case "$1" in
	nfrepo) "$NFREPO_BIN" -q restore pg@latest --into "$URL/bench_target" --force --drop-old ;;
	restic) fresh_target && restic dump -q -r "$BENCH_DIR/restic-repo" latest bench.sql | load ;;
	borg) fresh_target && borg extract --stdout ::a | load ;;
	esac
}

declare -A TIMES
fresh_target
for ((run = 1; run <= RUNS; run++)); do
	for tool in "${TOOLS[@]}"; do
		start=$(now_ns)
		restore_once "$tool" >>"$LOGS/$tool.log" 2>&1 || die "$tool restore failed (see $LOGS/$tool.log)"
		TIMES[$tool]+="$(($(now_ns) - start)) "
		rows=$("$PG_BIN/psql" "${PGARGS[@]}" -d bench_target -Atc 'select count(*) from pgbench_accounts')
		((rows == SCALE * 100000)) || die "$tool restored $rows rows of pgbench_accounts"
		log "run $run $tool: $(fmt_secs "$(($(now_ns) - start))")"
	done
done

stats() { tr ' ' '\n' | sed '/^$/d' | sort -n | awk '{a[NR]=$1} END {printf "%.2f %.2f %.2f\n", a[int((NR+1)/2)]/1e9, a[1]/1e9, a[NR]/1e9}'; }
echo
echo "restore of a ${DUMP_BYTES}-byte pg_dump (pgbench -s $SCALE) into PostgreSQL, $RUNS runs"
printf '%-8s %10s %16s %14s\n' tool median min-max "vs best peer"
best=""
for tool in "${TOOLS[@]}"; do
	[[ "$tool" == nfrepo ]] && continue
	read -r med _ _ < <(echo "${TIMES[$tool]}" | stats)
	if [[ -z "$best" ]] || awk -v a="$med" -v b="$best" 'BEGIN { exit !(a < b) }'; then best="$med"; fi
done
for tool in "${TOOLS[@]}"; do
	read -r med lo hi < <(echo "${TIMES[$tool]}" | stats)
	ratio="-"
	[[ -n "$best" ]] && ratio=$(awk -v a="$med" -v b="$best" 'BEGIN { printf "%.2fx", a / b }')
	printf '%-8s %9ss %7ss-%6ss %14s\n' "$tool" "$med" "$lo" "$hi" "$ratio"
done
"$PG_BIN/dropdb" "${PGARGS[@]}" --if-exists bench_target
"$PG_BIN/dropdb" "${PGARGS[@]}" --if-exists bench_source
