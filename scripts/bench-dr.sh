#!/usr/bin/env bash
# Disaster-recovery figures (issue 11, item 6), drill part: the RTO of
# `nfrepo drill` for a MariaDB dump of about SIZE MB restored into a fresh
# server (mariadb-install-db + mariadbd on a free port), median of runs.
#
#   scripts/bench-dr.sh [--runs N] [--size-mb MB] [--sysbench-dump FILE]
#
# The database `bench_dr` is made once on the test MariaDB
# ($NFREPO_TEST_MYSQL_URL, default mysql://root@127.0.0.1:13306; see
# scripts/start-mariadb.sh) from generated rows (4 InnoDB tables of
# (id, k, c, pad) rows shaped like sysbench's, about SIZE MB of dump in all;
# default 1000) and backed up once with `snapshot --source db` (so the
# snapshot holds the dump-time row counts). Each run is then one
# `nfrepo --json drill db`: a fresh server, the staged restore with its row
# count check, and the sanity query `SELECT count(*) > 0 FROM t1`; the RTO
# is the drill's own `rto_seconds` (start of the drill to a verified,
# query-ready service), and each phase is printed for the median run.
#
# --sysbench-dump FILE drills the sysbench data set of scripts/bench-peers.sh
# instead (its cached $BENCH_DIR/data/dump1.sql, stored with
# `snapshot --stdin --name sbtest.sql` as a mysql source; such a snapshot has
# no row-count facts, so only the load and the query are checked).
#
# Environment: BENCH_DIR (default /tmp/nfrepo-bench-dr), NFREPO_BIN (default:
# a release build of this tree), NFREPO_TEST_MYSQL_URL.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

RUNS=3
SIZE_MB=1000
SYSBENCH_DUMP=""
while (($# > 0)); do
	case "$1" in
	--runs)
		[[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive number"
		RUNS="$2"
		shift 2
		;;
	--size-mb)
		[[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--size-mb takes a positive number"
		SIZE_MB="$2"
		shift 2
		;;
	--sysbench-dump)
		[[ -s "${2:-}" ]] || die "--sysbench-dump takes an existing dump file"
		SYSBENCH_DUMP="$2"
		shift 2
		;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown argument: $1" ;;
	esac
done

BENCH_DIR="${BENCH_DIR:-/tmp/nfrepo-bench-dr}"
URL="${NFREPO_TEST_MYSQL_URL:-mysql://root@127.0.0.1:13306}"
URL="${URL%/}"
HOSTPORT="${URL#*@}"
MYSQL=(mysql --no-defaults --protocol=TCP -h "${HOSTPORT%:*}" -P "${HOSTPORT##*:}" -uroot --batch --skip-column-names)

if [[ -z "${NFREPO_BIN:-}" ]]; then
	(cd "$NFREPO_ROOT" && cargo build --release -q -p nfrepo-cli)
	NFREPO_BIN="${CARGO_TARGET_DIR:-$NFREPO_ROOT/target}/release/nfrepo"
fi
"${MYSQL[@]}" -e 'SELECT 1' >/dev/null || die "no MariaDB at $URL (scripts/start-mariadb.sh starts one)"

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/logs"
LOGS="$BENCH_DIR/logs"
export NFREPO_PASSWORD=bench
export NFREPO_CACHE_DIR="$BENCH_DIR/cache"
cat >"$BENCH_DIR/nfrepo.toml" <<EOF
[repository]
url = "file://$BENCH_DIR/repo"
password_env = "NFREPO_PASSWORD"

[sources.db]
kind = "mysql"
connection = "$URL/bench_dr"

[sources.db.drill]
queries = ["SELECT count(*) > 0 FROM $([[ -n "$SYSBENCH_DUMP" ]] && echo sbtest1 || echo t1)"]
EOF
export NFREPO_CONFIG="$BENCH_DIR/nfrepo.toml"
"$NFREPO_BIN" init --kdf-memory-kib 65536 >"$LOGS/nfrepo.log" 2>&1

if [[ -n "$SYSBENCH_DUMP" ]]; then
	log "storing $SYSBENCH_DUMP as the dump of source db"
	"$NFREPO_BIN" snapshot --stdin --name sbtest.sql --source db <"$SYSBENCH_DUMP" >>"$LOGS/nfrepo.log" 2>&1
	WHAT="sysbench dump $(basename "$SYSBENCH_DUMP")"
else
	# A dumped row is about 200 bytes: (id, k, 'c' of 120, 'pad' of 64).
	ROWS=$((SIZE_MB * 1000000 / 200 / 4))
	log "making bench_dr: 4 tables x $ROWS generated rows (about $SIZE_MB MB of dump)"
	"${MYSQL[@]}" -e "DROP DATABASE IF EXISTS bench_dr; CREATE DATABASE bench_dr"
	for t in 1 2 3 4; do
		"${MYSQL[@]}" bench_dr -e "CREATE TABLE t$t (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL, pad CHAR(64) NOT NULL, KEY (k)) ENGINE=InnoDB;
			INSERT INTO t$t SELECT seq, seq * 7919 % $ROWS, REPEAT(LPAD(HEX(seq * $t), 12, '0'), 10), REPEAT(MD5(seq), 2) FROM seq_1_to_$ROWS"
	done
	log "backing up bench_dr"
	"$NFREPO_BIN" snapshot --source db >>"$LOGS/nfrepo.log" 2>&1
	WHAT="generated MariaDB dump"
fi
DUMP_BYTES=$("$NFREPO_BIN" --json snapshots | python3 -c '
import json, sys
extra = dict(json.load(sys.stdin)[-1].get("extra") or {})
print(sum(int(v) for k, v in extra.items() if k.startswith("dump.") and k.endswith(".bytes")) or "?")' 2>/dev/null || echo "?")

RESULTS=()
for ((run = 1; run <= RUNS; run++)); do
	out="$LOGS/drill-$run.json"
	"$NFREPO_BIN" --json drill db >"$out" 2>>"$LOGS/nfrepo.log" || die "drill run $run failed (see $out and $LOGS/nfrepo.log)"
	rto=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rto_seconds"])' "$out")
	log "run $run: RTO ${rto}s"
	RESULTS+=("$rto $out")
done

echo
echo "drill RTO of a ${DUMP_BYTES}-byte $WHAT into a fresh MariaDB, $RUNS runs"
printf '%s\n' "${RESULTS[@]}" | sort -n | python3 -c '
import json, sys
runs = [l.split() for l in sys.stdin if l.strip()]
rtos = [float(r[0]) for r in runs]
median = runs[(len(runs) - 1) // 2]
print("median %.1fs (min %.1fs, max %.1fs)" % (float(median[0]), min(rtos), max(rtos)))
record = json.load(open(median[1]))
for phase in record["phases"]:
    print("  %-14s %.1fs" % (phase["name"], phase["seconds"]))
print("  rpo            %.0fs (age of the snapshot)" % record["rpo_seconds"])'
if [[ -z "$SYSBENCH_DUMP" ]]; then
	"${MYSQL[@]}" -e "DROP DATABASE IF EXISTS bench_dr"
fi
