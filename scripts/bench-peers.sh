#!/usr/bin/env bash
# Runs nfrepo and restic on the same data and prints a table of ratios.
#
#   scripts/bench-peers.sh [--only dump|pgdump|tree|all] [--runs N]
#
# Data sets, made once and cached in $BENCH_DIR/data (default /tmp/nfrepo-bench):
#   dump  a real MariaDB (127.0.0.1:13306, socket in its datadir) loaded by
#         sysbench (8 tables x 600000 rows, about 1 GB of dump); dump1.sql is
#         `mysqldump --single-transaction`, then 60 s of `sysbench
#         oltp_write_only`, then dump2.sql.
#   pgdump  a PostgreSQL 15 (127.0.0.1:15433, cluster and socket in
#         $BENCH_DIR/data/postgres, run as user postgres when root) loaded by
#         `pgbench -i -s 70` (about 1 GB of dump); pgdump1.sql is a plain
#         `pg_dump`, then 60 s of `pgbench -c 4 -j 2`, then pgdump2.sql.
#   tree  a copy of /usr/share + /usr/lib capped at 1.5 GB.
# Delete $BENCH_DIR/data to make them again.
#
# Each run starts both tools on fresh, encrypted repositories in $BENCH_DIR
# with their default compression and measures wall time, bytes added
# (`du -sb` of the repository) and peak RSS (`/usr/bin/time -f %M`). The table
# shows the median over the runs and goes to $BENCH_DIR/results.md too; the
# tools' output goes to $BENCH_DIR/logs/.
#
# Environment:
#   BENCH_DIR          work dir (default /tmp/nfrepo-bench)
#   NFREPO_BIN         nfrepo binary to use (default: cargo build --release -p nfrepo-cli)
#   BENCH_TABLE_SIZE   sysbench rows per table (default 600000)
#   BENCH_PG_SCALE     pgbench scale factor (default 70; a cached pgdump made
#                      at another scale is made again)
#   NFREPO_PG_BIN      PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   BENCH_TREE_BYTES   size cap of the file tree (default 1500000000)
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
	exit "${1:-0}"
}

ONLY=all
RUNS=3
only_valid() { [[ "$1" == dump || "$1" == pgdump || "$1" == tree || "$1" == all ]]; }
while (($# > 0)); do
	case "$1" in
	--only)
		only_valid "${2:-}" || die "--only takes dump, pgdump, tree or all"
		ONLY="$2"
		shift 2
		;;
	--only=*)
		ONLY="${1#--only=}"
		only_valid "$ONLY" || die "--only takes dump, pgdump, tree or all"
		shift
		;;
	--runs)
		[[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive number"
		RUNS="$2"
		shift 2
		;;
	--runs=*)
		RUNS="${1#--runs=}"
		[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive number"
		shift
		;;
	-h | --help) usage 0 ;;
	*)
		log "unknown argument: $1"
		usage 2 >&2
		;;
	esac
done
# wants SET: true when this invocation measures the data set SET.
wants() { [[ "$ONLY" == all || "$ONLY" == "$1" ]]; }

BENCH_DIR="${BENCH_DIR:-/tmp/nfrepo-bench}"
mkdir -p "$BENCH_DIR"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"
DATA="$BENCH_DIR/data"
REPOS="$BENCH_DIR/repos"
RESTORE="$BENCH_DIR/restore"
LOGS="$BENCH_DIR/logs"
TABLE_SIZE="${BENCH_TABLE_SIZE:-600000}"
TABLES=8
WRITE_SECONDS=60
TREE_CAP="${BENCH_TREE_BYTES:-1500000000}"
MDB_DIR="$DATA/mariadb"
MDB_SOCK="$MDB_DIR/sock"
MDB_PORT=13306
PG_SCALE="${BENCH_PG_SCALE:-70}"
[[ "$PG_SCALE" =~ ^[1-9][0-9]*$ ]] || die "BENCH_PG_SCALE takes a positive number"
PG_BIN="${NFREPO_PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_DIR="$DATA/postgres"
# Not 15432, where scripts/start-postgres.sh puts the tests' server.
PG_PORT=15433
PGBENCH_CLIENTS=4
PGBENCH_THREADS=2
RESULTS_TSV="$BENCH_DIR/results.tsv"
TIMEF="$LOGS/time.out"
mkdir -p "$DATA" "$REPOS" "$RESTORE" "$LOGS"
: >"$RESULTS_TSV"

# Both tools encrypt with this password; both caches live in the work dir.
export NFREPO_PASSWORD=nfrepo-bench-password RESTIC_PASSWORD=nfrepo-bench-password
export XDG_CACHE_HOME="$BENCH_DIR/cache"
unset NFREPO_REPOSITORY NFREPO_PASSWORD_FILE RESTIC_REPOSITORY RESTIC_PASSWORD_FILE

MDB_PID=""
PG_PID=""
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	local rc=$?
	set +e
	if [[ -n "$MDB_PID" ]]; then
		stop_pid "$MDB_PID" mariadbd 120
	fi
	if [[ -n "$PG_PID" ]]; then
		stop_postgres
	fi
	rm -rf "$REPOS" "$RESTORE"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools

ensure_apt_packages restic time
if wants dump; then
	ensure_apt_packages mariadb-server mariadb-client sysbench
fi
if wants pgdump; then
	[[ -x "$PG_BIN/postgres" && -x "$PG_BIN/pgbench" && -x "$PG_BIN/pg_dump" ]] ||
		die "no PostgreSQL 15 binaries (postgres, pgbench, pg_dump) in $PG_BIN; set NFREPO_PG_BIN"
fi

TOOLS=(nfrepo restic)
if [[ -z "${NFREPO_BIN:-}" ]]; then
	log "building nfrepo (cargo build --release -p nfrepo-cli; output in $LOGS/build.log)"
	if (cd "$NFREPO_ROOT" && cargo build --release -p nfrepo-cli) >"$LOGS/build.log" 2>&1; then
		NFREPO_BIN="$(cd "$NFREPO_ROOT" && cargo metadata --format-version 1 --no-deps |
			python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release/nfrepo"
	else
		tail -n 20 "$LOGS/build.log" >&2
	fi
fi
if [[ -z "${NFREPO_BIN:-}" || ! -x "${NFREPO_BIN:-}" ]]; then
	log "WARNING: no nfrepo binary (build failed?): measuring restic only"
	TOOLS=(restic)
fi

# tool_argv TOOL: sets ARGV to the tool's command with its repository.
tool_argv() {
	case "$1" in
	nfrepo) ARGV=("$NFREPO_BIN" --repo "file://$REPOS/nfrepo") ;;
	restic) ARGV=(restic -r "$REPOS/restic" --cache-dir "$XDG_CACHE_HOME/restic") ;;
	*) die "unknown tool $1" ;;
	esac
}

# timed TOOL LABEL ARGS...: runs the tool (stdin passes through) and sets
# M_SECS (wall time) and M_RSS (peak RSS, MiB). Returns the tool's exit status.
timed() {
	local tool="$1" label="$2" t0 rc=0
	shift 2
	tool_argv "$tool"
	printf '\n+ [%s] %s %s\n' "$label" "${ARGV[*]}" "$*" >>"$LOGS/$tool.log"
	t0="$(now_ns)"
	/usr/bin/time -f %M -o "$TIMEF" "${ARGV[@]}" "$@" >>"$LOGS/$tool.log" 2>&1 || rc=$?
	M_SECS="$(awk -v ns="$(($(now_ns) - t0))" 'BEGIN { printf "%.3f", ns / 1e9 }')"
	M_RSS="$(tail -n 1 "$TIMEF" | awk '{ printf "%.1f", $1 / 1024 }')"
	if ((rc != 0)); then
		log "$tool: '$label' failed (exit $rc); see $LOGS/$tool.log"
		tail -n 5 "$LOGS/$tool.log" >&2
		return "$rc"
	fi
	log "$tool: $label ${M_SECS}s, peak RSS ${M_RSS} MiB"
}

# record TOOL KEY VALUE
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS_TSV"; }

fresh_repo() {
	rm -rf "${REPOS:?}/$1" "${XDG_CACHE_HOME:?}"
	timed "$1" init init
}

repo_bytes() { du -sb "$REPOS/$1" | cut -f1; }
file_bytes() { stat -c %s "$1"; }
# tree_stats DIR: "FILES BYTES" over the regular files below DIR.
tree_stats() { find "$1" -type f -printf '%s\n' | awk '{ n++; b += $1 } END { printf "%d %d\n", n, b }'; }
mb_per_s() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.3f", b / 1e6 / s }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.3f", b / 1e6 }'; }

backup_stdin() { # TOOL LABEL FILE
	case "$1" in
	nfrepo) timed nfrepo "$2" snapshot --stdin --name dump.sql --profile dump <"$3" ;;
	restic) timed restic "$2" backup --stdin --stdin-filename dump.sql <"$3" ;;
	esac
}
backup_tree() { # TOOL LABEL DIR
	case "$1" in
	nfrepo) timed nfrepo "$2" snapshot "$3" </dev/null ;;
	restic) timed restic "$2" backup "$3" </dev/null ;;
	esac
}
restore_latest() { timed "$1" "$2" restore latest --target "$3" </dev/null; }

warm() { find "$@" -type f -exec cat {} + >/dev/null; }

# ---------------------------------------------------------------- data sets

mdb_client() { mariadb --no-defaults --socket="$MDB_SOCK" -uroot "$@"; }
sysbench_args() {
	printf '%s\n' --db-driver=mysql --mysql-socket="$MDB_SOCK" --mysql-user=root --mysql-db=sbtest \
		--tables="$TABLES" --table-size="$TABLE_SIZE"
}
dump_db() { # FILE
	log "dumping to $1"
	mysqldump --no-defaults --socket="$MDB_SOCK" -uroot --single-transaction --databases sbtest >"$1.tmp"
	mv "$1.tmp" "$1"
}

start_mariadb() {
	local mariadbd i
	mariadbd="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
	if port_open "$MDB_PORT"; then
		die "port 127.0.0.1:$MDB_PORT is already in use"
	fi
	spawn_detached "$BENCH_DIR/mariadbd.pid" "$LOGS/mariadbd.log" \
		"$mariadbd" --no-defaults --datadir="$MDB_DIR" --socket="$MDB_SOCK" --port="$MDB_PORT" \
		--bind-address=127.0.0.1 --user=root
	for ((i = 0; i < 300; i++)); do
		[[ -z "$MDB_PID" && -s "$BENCH_DIR/mariadbd.pid" ]] && MDB_PID="$(cat "$BENCH_DIR/mariadbd.pid")"
		if mariadb-admin --no-defaults --socket="$MDB_SOCK" -uroot ping >/dev/null 2>&1; then
			log "MariaDB ready on 127.0.0.1:$MDB_PORT (pid $MDB_PID)"
			return 0
		fi
		if [[ -n "$MDB_PID" ]] && ! kill -0 "$MDB_PID" 2>/dev/null; then
			break
		fi
		sleep 0.2
	done
	tail -n 30 "$LOGS/mariadbd.log" >&2
	die "MariaDB did not start"
}

stop_mariadb() {
	stop_pid "$MDB_PID" mariadbd 120
	MDB_PID=""
}

prepare_dump() {
	local args
	mapfile -t args < <(sysbench_args)
	if [[ -s "$DATA/dump1.sql" && -s "$DATA/dump2.sql" ]]; then
		log "using cached $DATA/dump1.sql and dump2.sql"
		return 0
	fi
	if [[ ! -s "$DATA/dump1.sql" ]]; then
		log "loading MariaDB with sysbench: $TABLES tables x $TABLE_SIZE rows"
		rm -rf "$MDB_DIR" "$DATA/dump2.sql"
		mkdir -p "$MDB_DIR"
		mariadb-install-db --no-defaults --datadir="$MDB_DIR" --user=root \
			--auth-root-authentication-method=normal --skip-test-db >"$LOGS/mariadb-install.log" 2>&1
		start_mariadb
		mdb_client -e 'CREATE DATABASE IF NOT EXISTS sbtest'
		sysbench oltp_read_write "${args[@]}" --threads=2 prepare >"$LOGS/sysbench-prepare.log" 2>&1
		dump_db "$DATA/dump1.sql"
	else
		start_mariadb
	fi
	log "sysbench oltp_write_only for ${WRITE_SECONDS}s"
	sysbench oltp_write_only "${args[@]}" --threads=2 --time="$WRITE_SECONDS" run >"$LOGS/sysbench-run.log" 2>&1
	dump_db "$DATA/dump2.sql"
	stop_mariadb
	rm -rf "$MDB_DIR"
}

# The server refuses to run as root: as root, it and its tools run as postgres.
AS_PG=()
if ((EUID == 0)); then
	AS_PG=(runuser -u postgres --)
fi
pg_tool() { # TOOL ARGS...: a PostgreSQL client tool on the benchmark server
	local tool="$1"
	shift
	"$PG_BIN/$tool" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"
}

start_postgres() {
	local i
	if port_open "$PG_PORT"; then
		die "port 127.0.0.1:$PG_PORT is already in use"
	fi
	mkdir -p "$PG_DIR"
	if ((EUID == 0)); then
		if ! id postgres >/dev/null 2>&1; then
			log "creating system user postgres"
			useradd --system --no-create-home --shell /usr/sbin/nologin postgres
		fi
		chmod 755 "$PG_DIR"
		chown postgres "$PG_DIR"
		runuser -u postgres -- test -w "$PG_DIR" ||
			die "user postgres cannot reach $PG_DIR: make $BENCH_DIR and its parents traversable (chmod o+x)"
	fi
	if [[ ! -s "$PG_DIR/data/PG_VERSION" ]]; then
		(cd "$PG_DIR" && "${AS_PG[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres) \
			>"$LOGS/initdb.log" 2>&1 || {
			tail -n 30 "$LOGS/initdb.log" >&2
			die "initdb failed"
		}
	fi
	# pg_ctl's log file is opened by the server, so it lives in PG_DIR.
	if ! (cd "$PG_DIR" && "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -w -t 120 \
		-o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1" start) >>"$LOGS/pg_ctl.log" 2>&1; then
		tail -n 30 "$PG_DIR/postgres.log" >&2 || true
		die "PostgreSQL did not start"
	fi
	PG_PID="$(head -n 1 "$PG_DIR/data/postmaster.pid")"
	for ((i = 0; i < 300; i++)); do
		if pg_tool pg_isready -q; then
			log "PostgreSQL ready on 127.0.0.1:$PG_PORT (pid $PG_PID)"
			return 0
		fi
		sleep 0.2
	done
	die "PostgreSQL started but does not answer on 127.0.0.1:$PG_PORT"
}

# stop_postgres: fast shutdown (rolls back open transactions), then the pid.
stop_postgres() {
	log "stopping PostgreSQL (pid $PG_PID)"
	(cd "$PG_DIR" && "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 120 stop) \
		>>"$LOGS/pg_ctl.log" 2>&1 || stop_pid "$PG_PID" postgres 120
	cp -f "$PG_DIR/postgres.log" "$LOGS/postgres.log" 2>/dev/null
	PG_PID=""
}

pg_dump_db() { # FILE
	log "pg_dump to $1"
	pg_tool pg_dump --format=plain pgbench >"$1.tmp"
	mv "$1.tmp" "$1"
}

prepare_pgdump() {
	local marker="$DATA/pgdump.done"
	if [[ -s "$marker" && -s "$DATA/pgdump1.sql" && -s "$DATA/pgdump2.sql" ]]; then
		if [[ "$(cat "$marker")" == "$PG_SCALE" ]]; then
			log "using cached $DATA/pgdump1.sql and pgdump2.sql"
			return 0
		fi
		log "cached pgdump is pgbench scale $(cat "$marker"), not $PG_SCALE: making it again"
	fi
	rm -rf "$PG_DIR" "$marker" "$DATA/pgdump1.sql" "$DATA/pgdump2.sql"
	start_postgres
	log "loading PostgreSQL with pgbench -i -s $PG_SCALE"
	if ! { pg_tool psql -q -v ON_ERROR_STOP=1 -d postgres -c 'CREATE DATABASE pgbench' &&
		pg_tool pgbench -i -s "$PG_SCALE" pgbench; } >"$LOGS/pgbench-init.log" 2>&1; then
		tail -n 20 "$LOGS/pgbench-init.log" >&2
		die "pgbench -i failed"
	fi
	pg_dump_db "$DATA/pgdump1.sql"
	log "pgbench -c $PGBENCH_CLIENTS -j $PGBENCH_THREADS for ${WRITE_SECONDS}s"
	pg_tool pgbench -c "$PGBENCH_CLIENTS" -j "$PGBENCH_THREADS" -T "$WRITE_SECONDS" pgbench \
		>"$LOGS/pgbench-run.log" 2>&1 || {
		tail -n 20 "$LOGS/pgbench-run.log" >&2
		die "pgbench run failed"
	}
	pg_dump_db "$DATA/pgdump2.sql"
	stop_postgres
	rm -rf "$PG_DIR"
	echo "$PG_SCALE" >"$marker"
}

prepare_tree() {
	if [[ -s "$DATA/tree.done" ]]; then
		log "using cached file tree $DATA/tree"
		return 0
	fi
	log "copying /usr/share and /usr/lib into $DATA/tree (cap $TREE_CAP bytes)"
	rm -rf "$DATA/tree"
	mkdir -p "$DATA/tree"
	# Directories, regular files and symlinks in sorted walk order until the cap.
	python3 - "$TREE_CAP" >"$DATA/tree.list" <<'PY'
import os, sys
cap, total, out = int(sys.argv[1]), 0, sys.stdout.buffer
def emit(path):
    out.write(os.fsencode(path.lstrip("/")) + b"\0")
for top in ("/usr/share", "/usr/lib"):
    for root, dirs, files in os.walk(top):
        dirs.sort()
        emit(root)
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = os.path.join(root, name)
            st = os.lstat(path)
            if not (os.path.isfile(path) or os.path.islink(path)):
                continue
            size = 0 if os.path.islink(path) else st.st_size
            if total + size > cap:
                sys.exit(0)
            total += size
            emit(path)
PY
	tar -C / --null --no-recursion -T "$DATA/tree.list" -cf - | tar -C "$DATA/tree" -xf -
	tree_stats "$DATA/tree" >"$DATA/tree.done"
}

# ---------------------------------------------------------------- benchmarks

# bench_dump_tool TOOL SET: SET is a dump data set (dump, pgdump) whose files
# are $DATA/SET1.sql and SET2.sql; the results are recorded under SET_*.
bench_dump_tool() {
	local tool="$1" set="$2" d1="$DATA/${2}1.sql" d2="$DATA/${2}2.sql" s1 s2 out
	fresh_repo "$tool" || return 1
	backup_stdin "$tool" "${set}1 first backup" "$d1" || return 1
	record "$tool" "${set}_first_mbs" "$(mb_per_s "$(file_bytes "$d1")" "$M_SECS")"
	record "$tool" "${set}_first_s" "$M_SECS"
	record "$tool" "${set}_first_rss" "$M_RSS"
	s1="$(repo_bytes "$tool")"
	backup_stdin "$tool" "${set}2 incremental" "$d2" || return 1
	s2="$(repo_bytes "$tool")"
	record "$tool" "${set}_incr_s" "$M_SECS"
	record "$tool" "${set}_incr_added_mb" "$(mb $((s2 - s1)))"
	record "$tool" "${set}_incr_rss" "$M_RSS"
	record "$tool" "${set}_repo_mb" "$(mb "$s2")"
	rm -rf "${RESTORE:?}/$tool"
	restore_latest "$tool" "${set}2 restore" "$RESTORE/$tool" || return 1
	record "$tool" "${set}_restore_mbs" "$(mb_per_s "$(file_bytes "$d2")" "$M_SECS")"
	record "$tool" "${set}_restore_rss" "$M_RSS"
	out="$(find "$RESTORE/$tool" -type f -name dump.sql)"
	if [[ -n "$out" && "$(wc -l <<<"$out")" == 1 ]] && cmp -s "$out" "$d2"; then
		record "$tool" "${set}_restore_ok" 1
	else
		log "$tool: the restored dump.sql differs from ${set}2.sql (or is missing)"
		record "$tool" "${set}_restore_ok" 0
	fi
	rm -rf "${RESTORE:?}/$tool" "${REPOS:?}/$tool"
}

bench_tree_tool() { # TOOL
	local tool="$1" tree="$DATA/tree" bytes s
	bytes="$(awk '{ print $2 }' "$DATA/tree.done")"
	fresh_repo "$tool" || return 1
	backup_tree "$tool" "tree first backup" "$tree" || return 1
	record "$tool" tree_first_mbs "$(mb_per_s "$bytes" "$M_SECS")"
	record "$tool" tree_first_s "$M_SECS"
	record "$tool" tree_first_rss "$M_RSS"
	s="$(repo_bytes "$tool")"
	backup_tree "$tool" "tree unchanged re-run" "$tree" || return 1
	record "$tool" tree_rerun_s "$M_SECS"
	record "$tool" tree_rerun_rss "$M_RSS"
	record "$tool" tree_rerun_added_mb "$(mb $(($(repo_bytes "$tool") - s)))"
	record "$tool" tree_repo_mb "$(mb "$(repo_bytes "$tool")")"
	rm -rf "${RESTORE:?}/$tool"
	restore_latest "$tool" "tree restore" "$RESTORE/$tool" || return 1
	record "$tool" tree_restore_mbs "$(mb_per_s "$bytes" "$M_SECS")"
	record "$tool" tree_restore_rss "$M_RSS"
	if [[ "$(tree_stats "$RESTORE/$tool")" == "$(cat "$DATA/tree.done")" ]]; then
		record "$tool" tree_restore_ok 1
	else
		log "$tool: restored tree has $(tree_stats "$RESTORE/$tool") (files bytes), expected $(cat "$DATA/tree.done")"
		record "$tool" tree_restore_ok 0
	fi
	rm -rf "${RESTORE:?}/$tool" "${REPOS:?}/$tool"
}

# run_bench SET: RUNS rounds; the tools' order alternates between rounds.
run_bench() {
	local set="$1" run tool order
	for ((run = 1; run <= RUNS; run++)); do
		order=("${TOOLS[@]}")
		if ((run % 2 == 0 && ${#TOOLS[@]} == 2)); then
			order=("${TOOLS[1]}" "${TOOLS[0]}")
		fi
		for tool in "${order[@]}"; do
			log "== $set, run $run/$RUNS: $tool"
			case "$set" in
			dump | pgdump)
				warm "$DATA/${set}1.sql" "$DATA/${set}2.sql"
				bench_dump_tool "$tool" "$set" || record "$tool" "${set}_failed" 1
				;;
			tree)
				warm "$DATA/tree"
				bench_tree_tool "$tool" || record "$tool" "${set}_failed" 1
				;;
			esac
		done
	done
}

if wants dump; then
	prepare_dump
	run_bench dump
fi
if wants pgdump; then
	prepare_pgdump
	run_bench pgdump
fi
if wants tree; then
	prepare_tree
	run_bench tree
fi

# ---------------------------------------------------------------- report

# median TOOL KEY: median of the recorded values, or "n/a".
median() {
	awk -F'\t' -v t="$1" -v k="$2" '$1 == t && $2 == k { v[n++] = $3 }
		END {
			if (n == 0) { print "n/a"; exit }
			for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
			m = (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
			printf "%s\n", m
		}' "$RESULTS_TSV"
}
fmt_num() { awk -v x="$1" 'BEGIN { if (x == "n/a") print x; else printf (x < 10 ? "%.2f" : "%.1f"), x }'; }
ratio() {
	if [[ "$1" == n/a || "$2" == n/a ]]; then echo n/a; else
		awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "n/a"; else printf "%.2f", a / b }'
	fi
}
# all_ok TOOL KEY: yes when every run verified, NO when one did not, n/a without data.
all_ok() {
	awk -F'\t' -v t="$1" -v k="$2" '$1 == t && $2 == k { n++; bad += ($3 != 1) }
		END { print (n == 0 ? "n/a" : (bad ? "NO" : "yes")) }' "$RESULTS_TSV"
}

failures() { awk -F'\t' -v t="$1" -v k="$2_failed" '$1 == t && $2 == k { n++ } END { print n + 0 }' "$RESULTS_TSV"; }

ROWS=(
	"dump_first_mbs|dump1 first backup, MB/s (higher is better)"
	"dump_first_s|dump1 first backup, s"
	"dump_incr_s|dump2 incremental, s"
	"dump_incr_added_mb|dump2 incremental, MB added to the repository"
	"dump_repo_mb|repository size after dump1 + dump2, MB"
	"dump_restore_mbs|dump2 restore, MB/s (higher is better)"
	"dump_first_rss|peak RSS, dump1 first backup, MiB"
	"dump_incr_rss|peak RSS, dump2 incremental, MiB"
	"dump_restore_rss|peak RSS, dump2 restore, MiB"
	"pgdump_first_mbs|pg_dump (pgbench) pgdump1 first backup, MB/s (higher is better)"
	"pgdump_first_s|pg_dump (pgbench) pgdump1 first backup, s"
	"pgdump_incr_s|pg_dump (pgbench) pgdump2 incremental, s"
	"pgdump_incr_added_mb|pg_dump (pgbench) pgdump2 incremental, MB added to the repository"
	"pgdump_repo_mb|pg_dump (pgbench) repository size after pgdump1 + pgdump2, MB"
	"pgdump_restore_mbs|pg_dump (pgbench) pgdump2 restore, MB/s (higher is better)"
	"pgdump_first_rss|pg_dump (pgbench) peak RSS, pgdump1 first backup, MiB"
	"pgdump_incr_rss|pg_dump (pgbench) peak RSS, pgdump2 incremental, MiB"
	"pgdump_restore_rss|pg_dump (pgbench) peak RSS, pgdump2 restore, MiB"
	"tree_first_mbs|tree first backup, MB/s (higher is better)"
	"tree_first_s|tree first backup, s"
	"tree_rerun_s|tree unchanged re-run, s"
	"tree_rerun_added_mb|tree unchanged re-run, MB added"
	"tree_repo_mb|repository size after the tree, MB"
	"tree_restore_mbs|tree restore, MB/s (higher is better)"
	"tree_first_rss|peak RSS, tree first backup, MiB"
	"tree_rerun_rss|peak RSS, tree unchanged re-run, MiB"
	"tree_restore_rss|peak RSS, tree restore, MiB"
)

report() {
	local row key label a b sets=() set
	echo "# nfrepo vs restic"
	echo
	echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB; median of $RUNS run(s); MB = 10^6 bytes"
	echo "- nfrepo: ${NFREPO_BIN:-not built} (git $(git -C "$NFREPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
	echo "- restic: $(restic version | head -n 1)"
	if wants dump; then
		sets+=(dump)
		echo "- dump: dump1.sql $(mb "$(file_bytes "$DATA/dump1.sql")") MB, dump2.sql $(mb "$(file_bytes "$DATA/dump2.sql")") MB ($TABLES x $TABLE_SIZE sysbench rows, ${WRITE_SECONDS}s of oltp_write_only between them)"
	fi
	if wants pgdump; then
		sets+=(pgdump)
		echo "- pgdump: pgdump1.sql $(mb "$(file_bytes "$DATA/pgdump1.sql")") MB, pgdump2.sql $(mb "$(file_bytes "$DATA/pgdump2.sql")") MB (plain pg_dump of PostgreSQL $("$PG_BIN/postgres" --version | awk '{ print $3 }') at pgbench scale $(cat "$DATA/pgdump.done"), ${WRITE_SECONDS}s of pgbench -c $PGBENCH_CLIENTS -j $PGBENCH_THREADS between them)"
	fi
	if wants tree; then
		sets+=(tree)
		echo "- tree: $(awk '{ printf "%d files, %.1f MB", $1, $2 / 1e6 }' "$DATA/tree.done") from /usr/share and /usr/lib"
	fi
	echo "- ratio = nfrepo / restic"
	echo
	echo "| metric | nfrepo | restic | ratio |"
	echo "|---|---:|---:|---:|"
	for row in "${ROWS[@]}"; do
		key="${row%%|*}"
		label="${row#*|}"
		[[ " ${sets[*]} " == *" ${key%%_*} "* ]] || continue
		a="$(median nfrepo "$key")"
		b="$(median restic "$key")"
		echo "| $label | $(fmt_num "$a") | $(fmt_num "$b") | $(ratio "$a" "$b") |"
	done
	for set in "${sets[@]}"; do
		label="$set"
		[[ "$set" == pgdump ]] && label="pg_dump (pgbench)"
		echo "| $label restore identical to the source | $(all_ok nfrepo "${set}_restore_ok") | $(all_ok restic "${set}_restore_ok") | |"
		if grep -q $'\t'"${set}_failed"$'\t' "$RESULTS_TSV"; then
			echo "| $set runs that failed | $(failures nfrepo "$set") | $(failures restic "$set") | |"
		fi
	done
}

report | tee "$BENCH_DIR/results.md"
log "results in $BENCH_DIR/results.md, raw values in $RESULTS_TSV, tool output in $LOGS/"
