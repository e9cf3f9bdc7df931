#!/usr/bin/env bash
# Disaster-recovery figures (issue 11, item 6): replication throughput,
# `--watch` lag, and drill RTO. Each part can be run alone (--only PART).
#
#   scripts/bench-dr.sh [--only replicate|listing|watch|drill] [--runs N]
#                       [--repl-mb MB] [--jobs N] [--peer restic|rustic|all] [--objects N]
#                       [--watch-mb MB] [--watch-seconds S]
#                       [--size-mb MB] [--sysbench-db DB | --sysbench-dump FILE]
#                       [--load-jobs N[,M…]]
#
# replicate: S3 -> S3 between the two loopback SeaweedFS instances
#   (region 1 $NFREPO_TEST_S3_ENDPOINT, region 2 $NFREPO_TEST_S3_ENDPOINT_2,
#   bucket $NFREPO_TEST_S3_BUCKET; scripts/start-seaweedfs.sh starts them).
#   A repository in region 1 gets one snapshot of --repl-mb MB (default
#   1000) of random (incompressible) data; each run is one `nfrepo
#   replicate --to` into a fresh prefix of region 2 under /usr/bin/time -v:
#   throughput = bytes copied / wall time of the whole command (start-up and
#   listings included), and its peak RSS. Median of --runs (default 3).
#   --jobs N is passed to replicate (default: replicate's own, 8).
#   --peer restic also runs, in each run right after nfrepo's, Debian's
#   `restic copy --from-repo` of a restic repository in region 1 holding
#   the same data into a fresh restic repository in region 2 (initialised
#   with --copy-chunker-params beforehand, not timed), under the same
#   /usr/bin/time -v; throughput = the data's bytes / wall time.
#   --peer rustic does the same with `rustic copy --init --target PROFILE`
#   (rustic-rs from `cargo install rustic-rs --locked`; both repositories
#   on S3 through rustic's OpenDAL backend, described by profile files in
#   $BENCH_DIR). --peer all runs both; --peer is repeatable.
# listing: peak RSS of `nfrepo replicate` on a repository of many small
#   objects: --objects N (default 200000) packs of 100 to 300 random bytes,
#   written straight into a file:// repository as files named by their
#   BLAKE3 (python3's blake3 module, installed with pip if missing). One
#   pass copies them all into a fresh prefix of region 2, a second pass
#   copies nothing (the two listings compared); each under /usr/bin/time -v.
# watch: `nfrepo replicate --watch --interval 10s` runs into a fresh
#   prefix of region 2 while a backup of a --watch-mb MB (default 1000)
#   dump is written into region 1, paced to last --watch-seconds (default
#   300: "a 5-minute backup"); the lag is the time from the end of the
#   snapshot command (its commit) to the snapshot's first appearance in
#   `nfrepo snapshots` of the replica (polled every second). One run.
# drill: the RTO of `nfrepo drill` for a MariaDB dump of about --size-mb
#   MB (default 1000) restored into a fresh server (mariadb-install-db +
#   mariadbd on a free port), median of --runs.
#
# The drill's database `bench_dr` is made once on the test MariaDB
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
# --sysbench-db DB drills the sysbench data set of scripts/bench-peers.sh
# (`sysbench oltp_read_write --tables=8 --table-size=600000 prepare`, about
# 1 GB of dump) already loaded in database DB of the test MariaDB: it is
# backed up with `snapshot --source db` as a mysql source (so with its
# dump-time row counts, which the drill checks) and left in place.
# --load-jobs 1,2 runs each drill once per setting of `drill --load-jobs`
# in every round (so both see the same machine) and reports each setting's
# median; without it, the drill's default (one connection per core, at
# most 4).
# --sysbench-dump FILE drills the same data set from a dump file (such as
# bench-peers.sh's cached dump1.sql), stored with `snapshot --stdin --name
# sbtest.sql` as a mysql source; such a snapshot has no row-count facts, so
# only the load and the query are checked.
#
# Environment: BENCH_DIR (default /tmp/nfrepo-bench-dr), NFREPO_BIN (default:
# a release build of this tree), NFREPO_TEST_MYSQL_URL, NFREPO_TEST_S3_*.
# The S3 prefixes it made are deleted at the end through SeaweedFS's filer
# (ports 18888 and 18988 unless FILER_1/FILER_2 say otherwise).
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# time_v FILE: "SECONDS RSS_MIB CPU_SECONDS" from the report `/usr/bin/time -v -o FILE` wrote.
time_v() {
	python3 - "$1" <<'PY'
import re, sys
timing = open(sys.argv[1]).read()
def field(label):
    return re.search(re.escape(label) + r": (\S+)", timing).group(1)
h, m, s = (["0", "0"] + field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":"))[-3:]
seconds = int(h) * 3600 + int(m) * 60 + float(s)
rss_mib = int(field("Maximum resident set size (kbytes)")) / 1024
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
print("%.3f %.1f %.1f" % (seconds, rss_mib, cpu))
PY
}

RUNS=3
SIZE_MB=1000
SYSBENCH_DUMP=""
SYSBENCH_DB=""
ONLY=""
REPL_MB=1000
WATCH_MB=1000
WATCH_SECONDS=300
JOBS=()
PEER=""
PEERS=()
OBJECTS=200000
LOAD_JOBS=(default)
number() { [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || die "$1 takes a positive number"; }
while (($# > 0)); do
	case "$1" in
	--only)
		[[ "${2:-}" =~ ^(replicate|listing|watch|drill)$ ]] || die "--only takes replicate, listing, watch or drill"
		ONLY="$2"
		shift 2
		;;
	--repl-mb | --watch-mb | --watch-seconds | --jobs | --objects)
		number "$1" "${2:-}"
		case "$1" in
		--repl-mb) REPL_MB="$2" ;;
		--jobs) JOBS=(--jobs "$2") ;;
		--objects) OBJECTS="$2" ;;
		--watch-mb) WATCH_MB="$2" ;;
		--watch-seconds) WATCH_SECONDS="$2" ;;
		esac
		shift 2
		;;
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
	--peer)
		case "${2:-}" in
		restic | rustic) PEERS+=("$2") ;;
		all) PEERS=(restic rustic) ;;
		*) die "--peer takes restic, rustic or all (repeatable)" ;;
		esac
		PEER=1
		shift 2
		;;
	--sysbench-db)
		[[ "${2:-}" =~ ^[A-Za-z0-9_]+$ ]] || die "--sysbench-db takes a database name"
		SYSBENCH_DB="$2"
		shift 2
		;;
	--sysbench-dump)
		[[ -s "${2:-}" ]] || die "--sysbench-dump takes an existing dump file"
		SYSBENCH_DUMP="$2"
		shift 2
		;;
	--load-jobs)
		[[ "${2:-}" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--load-jobs takes N or N,M,…"
		IFS=, read -r -a LOAD_JOBS <<<"$2"
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

# shellcheck disable=SC2119 # the binary alone: no CARGO_ARGS
[[ -n "${NFREPO_BIN:-}" ]] || build_nfrepo

rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/logs"
LOGS="$BENCH_DIR/logs"
export NFREPO_PASSWORD=bench
export NFREPO_CACHE_DIR="$BENCH_DIR/cache"

wanted() { [[ -z "$ONLY" || "$ONLY" == "$1" ]]; }

# --- S3 -> S3 replication and --watch lag ------------------------------------

if wanted replicate || wanted listing || wanted watch; then
	for v in NFREPO_TEST_S3_ENDPOINT NFREPO_TEST_S3_ENDPOINT_2 NFREPO_TEST_S3_BUCKET NFREPO_TEST_S3_ACCESS_KEY NFREPO_TEST_S3_SECRET_KEY; do
		[[ -n "${!v:-}" ]] || die "$v is not set (source /tmp/nfrepo-dev-env.sh, or scripts/start-seaweedfs.sh twice)"
	done
	export NFREPO_S3_ACCESS_KEY_ID="$NFREPO_TEST_S3_ACCESS_KEY" NFREPO_S3_SECRET_ACCESS_KEY="$NFREPO_TEST_S3_SECRET_KEY"
	RUN_ID="bench-dr-$$-$(date +%s)"
	s3_url() { echo "s3://$NFREPO_TEST_S3_BUCKET/$RUN_ID/$2?endpoint=$1&region=us-east-1"; }
	cleanup_s3() {
		curl -s -X DELETE "${FILER_1:-http://127.0.0.1:18888}/buckets/$NFREPO_TEST_S3_BUCKET/$RUN_ID/?recursive=true&ignoreRecursiveError=true" >/dev/null || true
		curl -s -X DELETE "${FILER_2:-http://127.0.0.1:18988}/buckets/$NFREPO_TEST_S3_BUCKET/$RUN_ID/?recursive=true&ignoreRecursiveError=true" >/dev/null || true
	}
	trap 'cleanup_s3; [[ -n "${WATCHER:-}" ]] && kill "$WATCHER" 2>/dev/null || true' EXIT
	# Incompressible bytes at a steady rate: SIZE_MB over SECONDS (0: as fast as possible).
	paced() {
		python3 - "$1" "$2" <<'PY'
import os, sys, time
total, seconds = int(sys.argv[1]) * 1000000, float(sys.argv[2])
chunk, sent, start = 1 << 20, 0, time.monotonic()
out = sys.stdout.buffer
while sent < total:
    n = min(chunk, total - sent)
    out.write(os.urandom(n))
    sent += n
    if seconds > 0:
        ahead = start + seconds * sent / total - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
out.flush()
PY
	}
	median_line() { sort -n | python3 -c '
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
vals = [float(r[0]) for r in rows]
print("median %s (min %s, max %s; runs: %s)" % (rows[(len(rows) - 1) // 2][0], min(vals), max(vals), " ".join(r[0] for r in rows)))'; }
fi

if wanted replicate; then
	SRC=$(s3_url "$NFREPO_TEST_S3_ENDPOINT" src)
	"$NFREPO_BIN" -r "$SRC" init --kdf-memory-kib 65536 >>"$LOGS/nfrepo.log" 2>&1
	log "replicate: backing up $REPL_MB MB of random data into region 1"
	paced "$REPL_MB" 0 >"$BENCH_DIR/random.bin"
	"$NFREPO_BIN" -r "$SRC" snapshot --stdin --name random.bin <"$BENCH_DIR/random.bin" >>"$LOGS/nfrepo.log" 2>&1
	if [[ -n "$PEER" ]]; then
		export AWS_ACCESS_KEY_ID="$NFREPO_TEST_S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$NFREPO_TEST_S3_SECRET_KEY"
		export RESTIC_PASSWORD=bench RESTIC_FROM_PASSWORD=bench
		restic_url() { echo "s3:$1/$NFREPO_TEST_S3_BUCKET/$RUN_ID/$2"; }
		# rustic_profile NAME ENDPOINT PREFIX: a profile file for a rustic
		# repository on S3 (rustic's copy targets are profiles); prints the
		# profile's path without `.toml`, as `rustic -P` takes it.
		rustic_profile() {
			cat >"$BENCH_DIR/rustic-$1.toml" <<EOF
[repository]
repository = "opendal:s3"
password = "bench"
no-cache = true
[repository.options]
bucket = "$NFREPO_TEST_S3_BUCKET"
root = "/$RUN_ID/$3"
endpoint = "$2"
region = "us-east-1"
access_key_id = "$NFREPO_TEST_S3_ACCESS_KEY"
secret_access_key = "$NFREPO_TEST_S3_SECRET_KEY"
EOF
			echo "$BENCH_DIR/rustic-$1"
		}
		for peer in "${PEERS[@]}"; do
			case "$peer" in
			restic)
				command -v restic >/dev/null || ensure_apt_packages restic
				RESTIC_SRC=$(restic_url "$NFREPO_TEST_S3_ENDPOINT" restic-src)
				restic -r "$RESTIC_SRC" init >>"$LOGS/restic.log" 2>&1
				(cd "$BENCH_DIR" && restic -r "$RESTIC_SRC" backup random.bin >>"$LOGS/restic.log" 2>&1)
				;;
			rustic)
				command -v rustic >/dev/null || die "rustic is not installed (cargo install rustic-rs --locked)"
				RUSTIC_SRC=$(rustic_profile src "$NFREPO_TEST_S3_ENDPOINT" rustic-src)
				rustic -P "$RUSTIC_SRC" init >>"$LOGS/rustic.log" 2>&1
				(cd "$BENCH_DIR" && rustic -P "$RUSTIC_SRC" backup random.bin >>"$LOGS/rustic.log" 2>&1)
				;;
			esac
		done
		declare -A PEER_THROUGHPUT PEER_RSS
	fi
	rm -f "$BENCH_DIR/random.bin"
	THROUGHPUT=() RSS=() CPU_NOTES=()
	# CPU seconds used so far by every SeaweedFS process (both regions):
	# with nfrepo's own, it tells whether the two cores were the limit.
	weed_cpu() {
		local tick pid total=0
		tick=$(getconf CLK_TCK)
		for pid in $(pgrep -x weed); do
			total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
		done
		python3 -c "print('%.1f' % ($total / $tick))"
	}
	for ((run = 1; run <= RUNS; run++)); do
		dst=$(s3_url "$NFREPO_TEST_S3_ENDPOINT_2" "replica-$run")
		weed_before=$(weed_cpu)
		/usr/bin/time -v -o "$LOGS/replicate-$run.time" "$NFREPO_BIN" --json -r "$SRC" replicate "${JOBS[@]}" --to "$dst" >"$LOGS/replicate-$run.json" 2>>"$LOGS/nfrepo.log" ||
			die "replicate run $run failed (see $LOGS)"
		read -r wall rss cpu < <(time_v "$LOGS/replicate-$run.time")
		mbps=$(python3 -c 'import json, sys; print("%.1f" % (json.load(open(sys.argv[1]))[0]["copied_bytes"] / float(sys.argv[2]) / 1e6))' \
			"$LOGS/replicate-$run.json" "$wall")
		weed_used=$(python3 -c "print('%.1f' % ($(weed_cpu) - $weed_before))")
		log "replicate run $run: $mbps MB/s, peak RSS $rss MiB; CPU: nfrepo ${cpu}s, SeaweedFS ${weed_used}s, in ${wall}s of wall time on $(nproc) cores"
		THROUGHPUT+=("$mbps") RSS+=("$rss") CPU_NOTES+=("nfrepo ${cpu}s + SeaweedFS ${weed_used}s of CPU in ${wall}s")
		for peer in "${PEERS[@]}"; do
			# Each peer copies the same data into a fresh repository of
			# region 2, right after nfrepo's run.
			case "$peer" in
			restic)
				rdst=$(restic_url "$NFREPO_TEST_S3_ENDPOINT_2" "restic-replica-$run")
				restic -r "$rdst" init --copy-chunker-params --from-repo "$RESTIC_SRC" >>"$LOGS/restic.log" 2>&1
				copy=(restic -r "$rdst" copy --from-repo "$RESTIC_SRC")
				;;
			rustic)
				rdst=$(rustic_profile "replica-$run" "$NFREPO_TEST_S3_ENDPOINT_2" "rustic-replica-$run")
				copy=(rustic -P "$RUSTIC_SRC" copy --init --target "$rdst")
				;;
			esac
			/usr/bin/time -v -o "$LOGS/$peer-copy-$run.time" "${copy[@]}" >>"$LOGS/$peer.log" 2>&1 ||
				die "$peer copy run $run failed (see $LOGS/$peer.log)"
			read -r wall rss _ < <(time_v "$LOGS/$peer-copy-$run.time")
			mbps=$(python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) / float(sys.argv[2])))' "$REPL_MB" "$wall")
			log "$peer copy run $run: $mbps MB/s, peak RSS $rss MiB"
			PEER_THROUGHPUT[$peer]+="$mbps "
			PEER_RSS[$peer]+="$rss "
		done
	done
	echo
	echo "S3 -> S3 replication of $REPL_MB MB (loopback SeaweedFS, ${JOBS[*]:---jobs 8}), $RUNS runs"
	echo "  throughput MB/s: $(printf '%s\n' "${THROUGHPUT[@]}" | median_line)"
	echo "  peak RSS MiB:    $(printf '%s\n' "${RSS[@]}" | median_line)"
	printf '  CPU: %s\n' "${CPU_NOTES[@]}"
	for peer in "${PEERS[@]}"; do
		echo "$peer copy of the same data, same servers, $RUNS runs (each right after nfrepo's)"
		# shellcheck disable=SC2086 # space-separated numbers
		echo "  throughput MB/s: $(printf '%s\n' ${PEER_THROUGHPUT[$peer]} | median_line)"
		# shellcheck disable=SC2086
		echo "  peak RSS MiB:    $(printf '%s\n' ${PEER_RSS[$peer]} | median_line)"
	done
fi

if wanted listing; then
	python3 -c 'import blake3' 2>/dev/null || pip_install blake3
	MANY="$BENCH_DIR/many"
	"$NFREPO_BIN" -r "file://$MANY" init --kdf-memory-kib 65536 >>"$LOGS/nfrepo.log" 2>&1
	log "listing: writing $OBJECTS small packs into file://$MANY"
	python3 - "$MANY" "$OBJECTS" <<'PY'
import os, sys, blake3
root, count = sys.argv[1], int(sys.argv[2])
made = set()
for i in range(count):
    data = os.urandom(100 + i % 201)
    name = blake3.blake3(data).hexdigest()
    d = os.path.join(root, "data", name[:2])
    if name[:2] not in made:
        os.makedirs(d, exist_ok=True)
        made.add(name[:2])
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
PY
	dst=$(s3_url "$NFREPO_TEST_S3_ENDPOINT_2" many-replica)
	echo
	echo "replicate of $OBJECTS small packs, file:// -> S3 (region 2)"
	for pass in copy in-sync; do
		/usr/bin/time -v -o "$LOGS/listing-$pass.time" "$NFREPO_BIN" --json -r "file://$MANY" replicate "${JOBS[@]}" --to "$dst" \
			>"$LOGS/listing-$pass.json" 2>>"$LOGS/nfrepo.log" || die "replicate ($pass) failed (see $LOGS)"
		read -r wall rss _ < <(time_v "$LOGS/listing-$pass.time")
		python3 -c 'import json, sys; print("  %-8s %7d objects copied in %6.1fs, peak RSS %s MiB" % (sys.argv[1], json.load(open(sys.argv[2]))[0]["copied_objects"], float(sys.argv[3]), sys.argv[4]))' \
			"$pass" "$LOGS/listing-$pass.json" "$wall" "$rss"
	done
fi

if wanted watch; then
	SRC=$(s3_url "$NFREPO_TEST_S3_ENDPOINT" watch-src)
	DST=$(s3_url "$NFREPO_TEST_S3_ENDPOINT_2" watch-replica)
	"$NFREPO_BIN" -r "$SRC" init --kdf-memory-kib 65536 >>"$LOGS/nfrepo.log" 2>&1
	"$NFREPO_BIN" -r "$SRC" replicate --to "$DST" >>"$LOGS/nfrepo.log" 2>&1
	"$NFREPO_BIN" -r "$SRC" replicate --watch --interval 10s --to "$DST" >>"$LOGS/watch.log" 2>&1 &
	WATCHER=$!
	log "watch: a $WATCH_MB MB backup paced over ${WATCH_SECONDS}s into region 1 while replicate --watch runs"
	paced "$WATCH_MB" "$WATCH_SECONDS" | "$NFREPO_BIN" --json -r "$SRC" snapshot --stdin --name dump.sql >"$LOGS/watch-snapshot.json" 2>>"$LOGS/nfrepo.log"
	committed=$(date +%s.%N)
	id=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d.get("snapshot_id") or "")' "$LOGS/watch-snapshot.json")
	[[ -n "$id" ]] || die "no snapshot id in $LOGS/watch-snapshot.json"
	lag=""
	for ((i = 0; i < 600; i++)); do
		if "$NFREPO_BIN" --json -r "$DST" snapshots 2>/dev/null | grep -q "${id:0:8}"; then
			lag=$(python3 -c "import time; print('%.1f' % (time.time() - $committed))")
			break
		fi
		sleep 1
	done
	kill "$WATCHER" 2>/dev/null || true
	wait "$WATCHER" 2>/dev/null || true
	WATCHER=""
	[[ -n "$lag" ]] || die "snapshot $id did not reach the replica within 10 minutes (see $LOGS/watch.log)"
	echo
	echo "replication lag with replicate --watch --interval 10s after a ${WATCH_SECONDS}s backup of $WATCH_MB MB: ${lag}s (commit to visible on the replica)"
fi

wanted drill || exit 0

"${MYSQL[@]}" -e 'SELECT 1' >/dev/null || die "no MariaDB at $URL (scripts/start-mariadb.sh starts one)"
cat >"$BENCH_DIR/nfrepo.toml" <<EOF
[repository]
url = "file://$BENCH_DIR/repo"
password_env = "NFREPO_PASSWORD"

[sources.db]
kind = "mysql"
connection = "$URL/${SYSBENCH_DB:-bench_dr}"

[sources.db.drill]
queries = ["SELECT count(*) > 0 FROM $([[ -n "$SYSBENCH_DUMP$SYSBENCH_DB" ]] && echo sbtest1 || echo t1)"]
EOF
export NFREPO_CONFIG="$BENCH_DIR/nfrepo.toml"
"$NFREPO_BIN" init --kdf-memory-kib 65536 >"$LOGS/nfrepo.log" 2>&1

if [[ -n "$SYSBENCH_DUMP" ]]; then
	log "storing $SYSBENCH_DUMP as the dump of source db"
	"$NFREPO_BIN" snapshot --stdin --name sbtest.sql --source db <"$SYSBENCH_DUMP" >>"$LOGS/nfrepo.log" 2>&1
	WHAT="sysbench dump $(basename "$SYSBENCH_DUMP")"
elif [[ -n "$SYSBENCH_DB" ]]; then
	log "backing up sysbench database $SYSBENCH_DB"
	"$NFREPO_BIN" snapshot --source db >>"$LOGS/nfrepo.log" 2>&1
	WHAT="sysbench MariaDB dump ($SYSBENCH_DB)"
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

declare -A RESULTS=()
for ((run = 1; run <= RUNS; run++)); do
	# Each setting once per round, so a change in the machine's load
	# touches every setting alike.
	for jobs in "${LOAD_JOBS[@]}"; do
		out="$LOGS/drill-$jobs-$run.json"
		args=()
		[[ "$jobs" == default ]] || args=(--load-jobs "$jobs")
		"$NFREPO_BIN" --json drill db "${args[@]}" >"$out" 2>>"$LOGS/nfrepo.log" ||
			die "drill run $run failed (see $out and $LOGS/nfrepo.log)"
		rto=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rto_seconds"])' "$out")
		log "run $run, load jobs $jobs: RTO ${rto}s"
		RESULTS[$jobs]+="$rto $out"$'\n'
	done
done

for jobs in "${LOAD_JOBS[@]}"; do
	echo
	echo "drill RTO of a ${DUMP_BYTES}-byte $WHAT into a fresh MariaDB, load jobs: $jobs, $RUNS runs"
	printf '%s' "${RESULTS[$jobs]}" | sort -n | python3 -c '
import json, sys
runs = [l.split() for l in sys.stdin if l.strip()]
rtos = [float(r[0]) for r in runs]
median = runs[(len(runs) - 1) // 2]
print("median %.1fs (min %.1fs, max %.1fs)" % (float(median[0]), min(rtos), max(rtos)))
record = json.load(open(median[1]))
for phase in record["phases"]:
    print("  %-14s %.1fs" % (phase["name"], phase["seconds"]))
print("  rpo            %.0fs (age of the snapshot)" % record["rpo_seconds"])'
done
if [[ -z "$SYSBENCH_DUMP$SYSBENCH_DB" ]]; then
	"${MYSQL[@]}" -e "DROP DATABASE IF EXISTS bench_dr"
fi
