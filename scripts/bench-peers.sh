#!/usr/bin/env bash
# Runs nfrepo and every peer installable here on the same data, run after
# run with the tools alternating, and prints a table of medians, spreads,
# the best peer per row and nfrepo against it.
#
#   scripts/bench-peers.sh [--only dump|pgdump|tree|redis|all] [--runs N]
#                          [--tools nfrepo,restic,rustic,borg,bupstash]
#                          [--no-s3] [--remote-s3 MS,MBPS] [--fresh-fs] [--cold]
#                          [--quick] [--prepare-only]
#
# --only SETS  the data sets to measure (default all), one or several
#              comma-separated: --only dump,redis.
# --runs N     rounds (default 3); in round r the tools start at the r-th
#              one, so none always runs first or last.
# --tools LIST which tools to measure (default all). `borg` is two columns,
#              borg-lz4 (borg's default compression) and borg-zstd3
#              (`--compression zstd,3`); either can be named alone.
# --no-s3      skip the S3 rows (they also go when no S3 server answers).
#              Take the local restore rows from such a pass: in a pass with
#              the S3 rows every peer's local restore of the dump took about
#              twice as long as in one without them (rustic 4.5 against
#              2.4 s, 2026-12-06), nfrepo's hardly longer; the cause was not
#              found (SeaweedFS was idle during the restores).
# --remote-s3 MS,MBPS  reach the S3 server as a remote one: every tool
#              talks to it through `remote-s3` (crates/nfrepo-testing,
#              built by this script), a proxy that holds every byte MS
#              milliseconds in each direction and caps what each connection
#              carries back at MBPS MB/s (0: no cap). 10,100 is roughly S3
#              from another region's machine (a 20 ms round trip; S3 serves
#              on the order of 100 MB/s per connection). The loopback S3
#              answers at once and without such a cap, so without this a
#              tool that puts its reads on few connections looks as fast
#              as one that spreads them.
# --fresh-fs   restore every run into a new ext4 file system (as root: a
#              sparse image in $BENCH_DIR on a loop device with direct I/O,
#              made with mkfs.ext4 before the run, unmounted after), as a
#              restore onto a new volume does. Without it the target is a
#              directory on $BENCH_DIR's file system, emptied between runs;
#              there ext4 skips the inodes of files deleted in the last
#              minutes when it makes new ones, scanning inode tables for
#              them (`recently_deleted`), which took most of the tree's
#              restore time (10-22 s for every tool, against about 4.5 s
#              into a new file system).
# --cold       drop the page cache (as root: `echo 3 > drop_caches`, after
#              `sync`) just before every tool's timed restore, so each reads
#              its repository from the disk, as a recovery does. Without it
#              a restore reads whatever its backups left in the cache: since
#              2026-12-07 nfrepo writes its packs around the page cache
#              (O_DIRECT) and reads them from the disk, while every peer's
#              just-written pack files are still cached.
# --quick      tiny data sets (about 30 MB each, in $BENCH_DIR/data-quick)
#              for a smoke test of the script in a few minutes.
# --prepare-only  make (or check) the cached data sets and exit.
#
# Peers: restic (Debian's `restic`), rustic (`cargo install rustic-rs
# --locked`, installed by this script when missing), borg (Debian's
# `borgbackup`, `--encryption repokey` where the CPU has SHA instructions,
# else repokey-blake2, as borg's docs advise), bupstash (`cargo install
# bupstash --locked`, installed by this script when missing; needs Debian's
# libsodium-dev and pkg-config); Debian packages are installed with apt
# when missing. Each tool uses its default compression (restic: zstd
# "auto"; rustic: zstd at its default level; bupstash: zstd:3; nfrepo: its
# profiles' default) except borg's two columns. Each tool also encrypts
# as its `init` does by default: restic and rustic AES-256-CTR with
# Poly1305-AES, bupstash XChaCha20-Poly1305 (libsodium crypto_box), borg
# as above, nfrepo AES-256-GCM on a CPU with hardware AES, else
# XChaCha20-Poly1305 (format-spec/sealing.md, "Choosing a cipher"). A
# peer that cannot be installed is left out with a note.
#
# Data sets, made once and cached in $BENCH_DIR/data (default /tmp/nfrepo-bench):
#   dump  a real MariaDB (127.0.0.1:13316, socket in its datadir) loaded by
#         sysbench (8 tables x 600000 rows, about 1 GB of dump); dump1.sql is
#         `mysqldump --single-transaction`, then 60 s of `sysbench
#         oltp_write_only`, then dump2.sql.
#   pgdump  a PostgreSQL 15 (127.0.0.1:15433, cluster and socket in
#         $BENCH_DIR/data/postgres, run as user postgres when root) loaded by
#         `pgbench -i -s 70` (about 1 GB of dump); pgdump1.sql is a plain
#         `pg_dump`, then 60 s of `pgbench -c 4 -j 2`, then pgdump2.sql.
#   redis  a private redis-server (127.0.0.1:16389, data in
#         $BENCH_DIR/data/redis) loaded through `redis-cli --pipe` with
#         generated strings (JSON-like values, 150-450 random bytes each in
#         base64) and small hashes (8 fields: names, e-mails, numbers, a few
#         words), about 300 MB of RDB; redis1.rdb is the dump.rdb of `SAVE`,
#         then 1 % of the keys get new values (SET of a string, HSET of two
#         fields of a hash; no key is added, so the RDB keeps its key order),
#         then redis2.rdb.
#   tree  a copy of /usr/share + /usr/lib capped at 1.5 GB; tree.changes
#         lists 1 % of its files (every 100th non-empty one), whose original
#         bytes are kept in tree-orig/.
# Delete $BENCH_DIR/data (or one data set's files) to make them again.
#
# Each run starts every tool on fresh encrypted repositories (init not
# timed) and measures wall time, bytes added (`du -sb` of the repository
# before and after) and peak RSS (`/usr/bin/time -f %M`) of:
#   - the first backup, of dump1 (pgdump1, redis1) or of the tree; a dump
#     is backed up from stdin by every tool (nfrepo: `snapshot --stdin
#     --name NAME --profile P`, P being the profile a source of that kind
#     uses: rows for the MariaDB dump and the Redis RDB, dump for the
#     PostgreSQL dump (format-spec/chunking.md); bupstash: `put -`);
#   - the incremental: dump2 (pgdump2, redis2) from stdin; for the tree,
#     the same live path again after 1 % of its files were changed in
#     place (64 bytes overwritten in the middle: same inode and size; the
#     other files keep inode, mtime and ctime, so every tool's file cache
#     works: nfrepo's parent snapshot, restic's and rustic's parent,
#     borg's files cache, bupstash's send log (`--send-log` in the cache)).
#     The tree is put back (same files, same inodes) before every first
#     backup; rustic's stream backups run with --force (see put_stdin_cmd);
#   - the restore of that incremental from the local directory, timed as
#     `sh -c "TOOL restore ... && sync"` into an empty target (emptied and
#     synced before each run), then checked (a dump: `cmp` with the source;
#     the tree: file count and bytes, and the changed files' contents);
#   - nfrepo's restore with `--verify`, as its own row;
#   - with S3 (SeaweedFS on loopback): the same two backups into a fresh
#     repository on S3, and the restore from there, timed the same way.
#     borg and bupstash have no S3 backend ("-" in the table).
# Every tool keeps its local cache (it is the machine that made the
# backups), in $BENCH_DIR/cache.
#
# fsync: the `&& sync` puts every tool's restored data on disk before the
# clock stops, whatever the tool syncs itself: nfrepo syncs nothing per file
# and does one syncfs(2) of the target at the end (README, "fsync policy");
# restic 0.14 and rustic 0.11 write restored files without fsync; borg 1.2's
# extract does not fsync; bupstash 0.12's restore and get fsync only their
# query cache, not what they restore (rustic and bupstash checked with
# `strace -f -e trace=fsync,fdatasync,syncfs` on this machine).
#
# The table shows, per row, the median over the runs and the min-max spread,
# the best peer (lowest time, bytes or RSS; highest MB/s) and nfrepo against
# it: for times and MB/s a speed ratio (best peer's time / nfrepo's time;
# above 1 nfrepo is faster), for bytes and RSS nfrepo's / the best peer's
# (below 1 nfrepo is smaller); a peer whose restore of a data set came back
# wrong in any run is not taken as that data set's best peer. It goes to $BENCH_DIR/results.md, the raw
# values to $BENCH_DIR/results.tsv (tool, key, value, run) and the tools'
# output to $BENCH_DIR/logs/.
#
# Environment:
#   BENCH_DIR          work dir (default /tmp/nfrepo-bench)
#   NFREPO_BIN         nfrepo binary to use (default: cargo build --profile dist -p nfrepo-cli)
#   RUSTIC_BIN, BUPSTASH_BIN  the peers' binaries (default: PATH, then ~/.cargo/bin)
#   BENCH_TABLE_SIZE   sysbench rows per table (default 600000)
#   BENCH_PG_SCALE     pgbench scale factor (default 70; a cached pgdump made
#                      at another scale is made again)
#   NFREPO_PG_BIN      PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   BENCH_TREE_BYTES   size cap of the file tree (default 1500000000)
#   BENCH_REDIS_BYTES  size of the generated Redis data (default 300000000;
#                      a cached RDB of another size is made again)
#   BENCH_S3_ENDPOINT  S3 endpoint (default $NFREPO_TEST_S3_ENDPOINT, else
#                      http://127.0.0.1:18333, started with
#                      scripts/start-seaweedfs.sh in $BENCH_DIR/seaweedfs if
#                      nothing answers there); bucket, keys and filer from
#                      NFREPO_TEST_S3_BUCKET (nfrepo-test),
#                      NFREPO_TEST_S3_ACCESS_KEY / _SECRET_KEY
#                      (nfrepo-test / nfrepo-test-secret) and BENCH_S3_FILER
#                      (http://127.0.0.1:18888, used to delete each run's
#                      prefix)
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
	exit "${1:-0}"
}

ALL_TOOLS=(nfrepo restic rustic borg-lz4 borg-zstd3 bupstash)
ONLY=all
RUNS=3
QUICK=0
PREPARE_ONLY=0
USE_S3=1
FRESH_FS=0
COLD=0
REMOTE_S3=""
WANT_TOOLS=("${ALL_TOOLS[@]}")
only_valid() { [[ "$1" =~ ^(dump|pgdump|tree|redis)(,(dump|pgdump|tree|redis))*$|^all$ ]]; }
# parse_tools LIST: sets WANT_TOOLS from a comma-separated LIST.
parse_tools() {
	local name t
	WANT_TOOLS=()
	IFS=, read -r -a names <<<"$1"
	for name in "${names[@]}"; do
		case "$name" in
		borg) WANT_TOOLS+=(borg-lz4 borg-zstd3) ;;
		*)
			for t in "${ALL_TOOLS[@]}"; do
				[[ "$t" == "$name" ]] && WANT_TOOLS+=("$t") && continue 2
			done
			die "--tools takes a comma-separated list of ${ALL_TOOLS[*]} (or borg for both borg columns); not: $name"
			;;
		esac
	done
	((${#WANT_TOOLS[@]} > 0)) || die "--tools names no tool"
}
while (($# > 0)); do
	case "$1" in
	--only | --only=*)
		if [[ "$1" == --only ]]; then
			ONLY="${2:-}"
			shift
		else
			ONLY="${1#--only=}"
		fi
		shift
		only_valid "$ONLY" || die "--only takes dump, pgdump, tree, redis (or several, comma-separated) or all"
		;;
	--runs | --runs=*)
		if [[ "$1" == --runs ]]; then
			RUNS="${2:-}"
			shift
		else
			RUNS="${1#--runs=}"
		fi
		shift
		[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs takes a positive number"
		;;
	--tools | --tools=*)
		if [[ "$1" == --tools ]]; then
			parse_tools "${2:-}"
			shift
		else
			parse_tools "${1#--tools=}"
		fi
		shift
		;;
	--no-s3)
		USE_S3=0
		shift
		;;
	--fresh-fs)
		FRESH_FS=1
		shift
		;;
	--cold)
		COLD=1
		shift
		;;
	--remote-s3 | --remote-s3=*)
		if [[ "$1" == --remote-s3 ]]; then
			REMOTE_S3="${2:-}"
			shift
		else
			REMOTE_S3="${1#--remote-s3=}"
		fi
		shift
		[[ "$REMOTE_S3" =~ ^[0-9]+(\.[0-9]+)?,[0-9]+(\.[0-9]+)?$ ]] || die "--remote-s3 takes MS,MBPS (e.g. 10,100)"
		;;
	--quick)
		QUICK=1
		shift
		;;
	--prepare-only)
		PREPARE_ONLY=1
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
wants() { [[ "$ONLY" == all || ",$ONLY," == *",$1,"* ]]; }

BENCH_DIR="${BENCH_DIR:-/tmp/nfrepo-bench}"
mkdir -p "$BENCH_DIR"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd)"
if ((QUICK)); then
	# Tiny data sets of their own, so a smoke test never replaces the real ones.
	DATA="$BENCH_DIR/data-quick"
	TABLE_SIZE="${BENCH_TABLE_SIZE:-20000}"
	PG_SCALE="${BENCH_PG_SCALE:-2}"
	TREE_CAP="${BENCH_TREE_BYTES:-60000000}"
	REDIS_BYTES="${BENCH_REDIS_BYTES:-20000000}"
	WRITE_SECONDS=10
else
	DATA="$BENCH_DIR/data"
	TABLE_SIZE="${BENCH_TABLE_SIZE:-600000}"
	PG_SCALE="${BENCH_PG_SCALE:-70}"
	TREE_CAP="${BENCH_TREE_BYTES:-1500000000}"
	REDIS_BYTES="${BENCH_REDIS_BYTES:-300000000}"
	WRITE_SECONDS=60
fi
[[ "$PG_SCALE" =~ ^[1-9][0-9]*$ ]] || die "BENCH_PG_SCALE takes a positive number"
[[ "$REDIS_BYTES" =~ ^[1-9][0-9]*$ ]] || die "BENCH_REDIS_BYTES takes a positive number"
if ((COLD)); then
	((EUID == 0)) || die "--cold drops the page cache: run it as root"
fi
if ((FRESH_FS)); then
	((EUID == 0)) || die "--fresh-fs mounts file systems: run it as root"
	command -v mkfs.ext4 >/dev/null && command -v losetup >/dev/null ||
		die "--fresh-fs needs mkfs.ext4 (e2fsprogs) and losetup (mount)"
fi
# A sparse image: only what a restore writes takes room.
RESTORE_FS_BYTES=$((8 << 30))
REPOS="$BENCH_DIR/repos"
RESTORE="$BENCH_DIR/restore"
LOGS="$BENCH_DIR/logs"
CACHE="$BENCH_DIR/cache"
TABLES=8
MDB_DIR="$DATA/mariadb"
MDB_SOCK="$MDB_DIR/sock"
# Not 13306, where scripts/start-mariadb.sh puts the tests' server.
MDB_PORT=13316
PG_BIN="${NFREPO_PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_DIR="$DATA/postgres"
# Not 15432, where scripts/start-postgres.sh puts the tests' server.
PG_PORT=15433
PGBENCH_CLIENTS=4
PGBENCH_THREADS=2
REDIS_DIR="$DATA/redis"
# Not 16379, where scripts/start-redis.sh puts the tests' server.
REDIS_PORT=16389
RESULTS_TSV="$BENCH_DIR/results.tsv"
TIMEF="$LOGS/time.out"
mkdir -p "$DATA" "$REPOS" "$RESTORE" "$LOGS"

# Every tool encrypts with this password; every cache lives in the work dir.
PASSWORD=nfrepo-bench-password
export NFREPO_PASSWORD="$PASSWORD" RESTIC_PASSWORD="$PASSWORD" RUSTIC_PASSWORD="$PASSWORD" BORG_PASSPHRASE="$PASSWORD"
export XDG_CACHE_HOME="$CACHE" BORG_BASE_DIR="$CACHE/borg"
export BUPSTASH_KEY="$BENCH_DIR/bupstash.key" BUPSTASH_REPOSITORY="$REPOS/bupstash"
export BUPSTASH_QUERY_CACHE="$CACHE/bupstash.qcache"
unset NFREPO_REPOSITORY NFREPO_PASSWORD_FILE NFREPO_CACHE_DIR NFREPO_CONFIG \
	RESTIC_REPOSITORY RESTIC_PASSWORD_FILE RUSTIC_REPOSITORY RUSTIC_PASSWORD_FILE RUSTIC_USE_PROFILE BORG_REPO

MDB_PID=""
PG_PID=""
REDIS_PID=""
WEED_PID=""
PROXY_PID=""
S3_PREFIX_ROOT="bench-peers-$$-$(date +%s)"
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
	if [[ -n "$REDIS_PID" ]]; then
		stop_pid "$REDIS_PID" redis-server 60
	fi
	if ((USE_S3)) && [[ -n "${S3_BUCKET:-}" ]]; then
		s3_delete "$S3_PREFIX_ROOT"
	fi
	if [[ -n "$PROXY_PID" ]]; then
		stop_pid "$PROXY_PID" remote-s3 10
	fi
	if [[ -n "$WEED_PID" ]]; then
		stop_pid "$WEED_PID" SeaweedFS 30
	fi
	# A tree changed in place is put back, so the cached data set stays whole.
	if [[ -s "$DATA/tree.changes" && -e "$DATA/tree.dirty" ]]; then
		tree_edit revert
	fi
	local target
	for target in "$RESTORE"/*; do
		[[ -d "$target" ]] && release_target "$target"
	done
	rm -rf "$REPOS" "$RESTORE" "$CACHE"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools

ensure_apt_packages time
if wants dump; then
	ensure_apt_packages mariadb-server mariadb-client sysbench
fi
if wants pgdump; then
	[[ -x "$PG_BIN/postgres" && -x "$PG_BIN/pgbench" && -x "$PG_BIN/pg_dump" ]] ||
		die "no PostgreSQL 15 binaries (postgres, pgbench, pg_dump) in $PG_BIN; set NFREPO_PG_BIN"
fi
if wants redis; then
	if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
		ensure_apt_packages redis-server
	fi
fi

# tool_path NAME ENVVAR: the binary named by ENVVAR, else NAME on PATH, else
# ~/.cargo/bin/NAME; empty when none is there.
tool_path() {
	local from_env="${!2:-}"
	if [[ -n "$from_env" ]]; then
		[[ -x "$from_env" ]] && echo "$from_env"
	elif command -v "$1" >/dev/null 2>&1; then
		command -v "$1"
	elif [[ -x "$HOME/.cargo/bin/$1" ]]; then
		echo "$HOME/.cargo/bin/$1"
	fi
	return 0
}
wants_tool() { [[ " ${WANT_TOOLS[*]} " == *" $1 "* ]]; }

# cargo_target_dir: where this tree's cargo builds go.
cargo_target_dir() {
	(cd "$NFREPO_ROOT" && cargo metadata --format-version 1 --no-deps |
		python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
}

if ((PREPARE_ONLY == 0)); then
	if wants_tool restic; then
		ensure_apt_packages restic
	fi
	if wants_tool borg-lz4 || wants_tool borg-zstd3; then
		ensure_apt_packages borgbackup
	fi
	# cargo_install CRATE: `cargo install CRATE --locked`, its output in the logs.
	cargo_install() {
		log "installing $1 (cargo install $1 --locked; output in $LOGS/$1-install.log)"
		cargo install "$1" --locked >"$LOGS/$1-install.log" 2>&1 || tail -n 20 "$LOGS/$1-install.log" >&2
	}
	RUSTIC="$(tool_path rustic RUSTIC_BIN)"
	if wants_tool rustic && [[ -z "$RUSTIC" && -z "${RUSTIC_BIN:-}" ]]; then
		cargo_install rustic-rs
		RUSTIC="$(tool_path rustic RUSTIC_BIN)"
	fi
	BUPSTASH="$(tool_path bupstash BUPSTASH_BIN)"
	if wants_tool bupstash && [[ -z "$BUPSTASH" && -z "${BUPSTASH_BIN:-}" ]]; then
		ensure_apt_packages libsodium-dev pkg-config
		cargo_install bupstash
		BUPSTASH="$(tool_path bupstash BUPSTASH_BIN)"
	fi
	if [[ -z "${NFREPO_BIN:-}" ]] && wants_tool nfrepo; then
		log "building nfrepo (cargo build --profile dist -p nfrepo-cli; output in $LOGS/build.log)"
		if (cd "$NFREPO_ROOT" && cargo build --profile dist -p nfrepo-cli) >"$LOGS/build.log" 2>&1; then
			NFREPO_BIN="$(cargo_target_dir)/dist/nfrepo"
		else
			tail -n 20 "$LOGS/build.log" >&2
		fi
	fi
	# BORG_ENCRYPTION: borg's docs advise repokey (HMAC-SHA256) where the CPU
	# has SHA instructions, repokey-blake2 elsewhere.
	BORG_ENCRYPTION=repokey-blake2
	if grep -qw sha_ni /proc/cpuinfo; then
		BORG_ENCRYPTION=repokey
	fi
	TOOLS=()
	NOTES=()
	for tool in "${WANT_TOOLS[@]}"; do
		case "$tool" in
		nfrepo) [[ -n "${NFREPO_BIN:-}" && -x "${NFREPO_BIN:-}" ]] || {
			NOTES+=("nfrepo: no binary (build failed?), left out")
			continue
		} ;;
		restic) command -v restic >/dev/null || {
			NOTES+=("restic: not installed (apt-get install restic), left out")
			continue
		} ;;
		rustic) [[ -n "$RUSTIC" ]] || {
			NOTES+=("rustic: not installed (cargo install rustic-rs --locked), left out")
			continue
		} ;;
		borg-*) command -v borg >/dev/null || {
			NOTES+=("$tool: borg is not installed (apt-get install borgbackup), left out")
			continue
		} ;;
		bupstash) [[ -n "$BUPSTASH" ]] || {
			NOTES+=("bupstash: not installed (cargo install bupstash --locked failed?), left out")
			continue
		} ;;
		esac
		TOOLS+=("$tool")
	done
	for note in "${NOTES[@]}"; do log "WARNING: $note"; done
	((${#TOOLS[@]} > 0)) || die "no tool to measure"
	if wants_tool bupstash && [[ -n "$BUPSTASH" && ! -s "$BUPSTASH_KEY" ]]; then
		"$BUPSTASH" new-key -o "$BUPSTASH_KEY" >>"$LOGS/bupstash.log" 2>&1
	fi
fi

# ---------------------------------------------------------------- S3

S3_ENDPOINT="${BENCH_S3_ENDPOINT:-${NFREPO_TEST_S3_ENDPOINT:-http://127.0.0.1:18333}}"
S3_BUCKET="${NFREPO_TEST_S3_BUCKET:-nfrepo-test}"
S3_ACCESS_KEY="${NFREPO_TEST_S3_ACCESS_KEY:-nfrepo-test}"
S3_SECRET_KEY="${NFREPO_TEST_S3_SECRET_KEY:-nfrepo-test-secret}"
S3_FILER="${BENCH_S3_FILER:-http://127.0.0.1:18888}"
export NFREPO_S3_ACCESS_KEY_ID="$S3_ACCESS_KEY" NFREPO_S3_SECRET_ACCESS_KEY="$S3_SECRET_KEY"
export AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY"

# s3_delete PREFIX: removes everything under PREFIX of the bucket (through
# SeaweedFS's filer, as scripts/bench-dr.sh does).
s3_delete() {
	curl -s -X DELETE "$S3_FILER/buckets/$S3_BUCKET/$1/?recursive=true&ignoreRecursiveError=true" >/dev/null || true
}

if ((USE_S3 && PREPARE_ONLY == 0)); then
	if ! s3_head_bucket "$S3_ENDPOINT" "$S3_BUCKET" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >/dev/null; then
		if [[ "$S3_ENDPOINT" == http://127.0.0.1:18333 ]] && ! port_open 18333; then
			log "starting SeaweedFS in $BENCH_DIR/seaweedfs"
			WEED_PID="$("$NFREPO_ROOT/scripts/start-seaweedfs.sh" "$BENCH_DIR/seaweedfs")" ||
				die "SeaweedFS did not start (or run with --no-s3)"
		else
			log "WARNING: no S3 bucket $S3_BUCKET answers at $S3_ENDPOINT: no S3 rows"
			USE_S3=0
		fi
	fi
fi

# With --remote-s3, every tool reaches S3 through the proxy (its port is
# free: port_open), which forwards to the server's address.
S3_SERVER="$S3_ENDPOINT"
if ((USE_S3 && PREPARE_ONLY == 0)) && [[ -n "$REMOTE_S3" ]]; then
	[[ "$S3_SERVER" == http://* ]] || die "--remote-s3 relays plain HTTP only, not $S3_SERVER"
	log "building remote-s3"
	cargo build --release --manifest-path "$NFREPO_ROOT/Cargo.toml" -p nfrepo-testing --bin remote-s3 \
		>>"$LOGS/remote-s3-build.log" 2>&1 || die "cannot build remote-s3 (see $LOGS/remote-s3-build.log)"
	proxy_port=18399
	while port_open "$proxy_port"; do proxy_port=$((proxy_port + 1)); done
	spawn_detached "$BENCH_DIR/remote-s3.pid" "$LOGS/remote-s3.log" \
		"$(cargo_target_dir)/release/remote-s3" "127.0.0.1:$proxy_port" "${S3_SERVER#http://}" \
		"${REMOTE_S3%,*}" "${REMOTE_S3#*,}"
	for _ in $(seq 50); do port_open "$proxy_port" && break; sleep 0.1; done
	port_open "$proxy_port" || die "remote-s3 did not start (see $LOGS/remote-s3.log)"
	PROXY_PID="$(cat "$BENCH_DIR/remote-s3.pid")"
	S3_ENDPOINT="http://127.0.0.1:$proxy_port"
	log "S3 through remote-s3 at $S3_ENDPOINT: ${REMOTE_S3%,*} ms each way, ${REMOTE_S3#*,} MB/s per connection"
fi

# ---------------------------------------------------------------- commands

# can_s3 TOOL: whether TOOL can keep a repository on S3.
can_s3() { [[ "$1" == nfrepo || "$1" == restic || "$1" == rustic ]]; }

# repo_of TOOL WHERE: the repository's path (local) or S3 prefix (s3).
repo_of() {
	if [[ "$2" == local ]]; then echo "$REPOS/$1"; else echo "$S3_PREFIX_ROOT/$1-$RUN"; fi
}

# base_cmd TOOL WHERE: sets CMD to the tool's command with its repository
# (borg names the repository per command: REPO is set for it).
base_cmd() {
	local tool="$1" where="$2" repo profile
	repo="$(repo_of "$tool" "$where")"
	REPO="$repo"
	case "$tool:$where" in
	nfrepo:local) CMD=("$NFREPO_BIN" --repo "file://$repo") ;;
	nfrepo:s3) CMD=("$NFREPO_BIN" --repo "s3://$S3_BUCKET/$repo?endpoint=$S3_ENDPOINT&region=us-east-1") ;;
	restic:local) CMD=(restic -r "$repo" --cache-dir "$CACHE/restic") ;;
	restic:s3) CMD=(restic -r "s3:$S3_ENDPOINT/$S3_BUCKET/$repo" --cache-dir "$CACHE/restic") ;;
	rustic:local) CMD=("$RUSTIC" --no-progress -r "$repo" --cache-dir "$CACHE/rustic") ;;
	rustic:s3)
		# rustic reaches S3 through OpenDAL, configured in a profile file.
		profile="$BENCH_DIR/rustic-s3"
		cat >"$profile.toml" <<EOF
[repository]
repository = "opendal:s3"
[repository.options]
bucket = "$S3_BUCKET"
root = "/$repo"
endpoint = "$S3_ENDPOINT"
region = "us-east-1"
access_key_id = "$S3_ACCESS_KEY"
secret_access_key = "$S3_SECRET_KEY"
EOF
		CMD=("$RUSTIC" --no-progress -P "$profile" --cache-dir "$CACHE/rustic")
		;;
	borg-*:local) CMD=(borg) ;;
	bupstash:local) CMD=("$BUPSTASH") ;;
	*) die "$tool has no $where repository" ;;
	esac
}

borg_compression() { if [[ "$1" == borg-zstd3 ]]; then echo zstd,3; else echo lz4; fi; }

# init_cmd TOOL WHERE
init_cmd() {
	base_cmd "$1" "$2"
	case "$1" in
	borg-*) CMD+=(init --encryption "$BORG_ENCRYPTION" "$REPO") ;;
	bupstash) CMD+=(init -r "$REPO") ;;
	*) CMD+=(init) ;;
	esac
}

# put_stdin_cmd TOOL WHERE NAME STEP: backs up stdin as a stream named NAME.
put_stdin_cmd() {
	local tool="$1" name="$3" step="$4"
	base_cmd "$tool" "$2"
	case "$tool" in
	nfrepo) CMD+=(snapshot --stdin --name "$name" --profile "$STREAM_PROFILE") ;;
	restic) CMD+=(backup --stdin --stdin-filename "$name") ;;
	# rustic 0.11.3/0.11.4 take the stream for unchanged when the parent
	# snapshot has a file of the same name and commit the parent's content
	# (rustic-rs/rustic#1793, fixed by rustic_core#536: no parent for
	# stdin): --force does what the fix does.
	rustic) CMD+=(backup --force --stdin-filename "$name" -) ;;
	borg-*) CMD+=(create --compression "$(borg_compression "$tool")" --stdin-name "$name" "$REPO::a$step" -) ;;
	bupstash) CMD+=(put -q --send-log "$CACHE/bupstash.sendlog" "step=$step" "name=$name" -) ;;
	esac
}

# put_tree_cmd TOOL WHERE DIR STEP
put_tree_cmd() {
	local tool="$1" dir="$3" step="$4"
	base_cmd "$tool" "$2"
	case "$tool" in
	nfrepo) CMD+=(snapshot "$dir") ;;
	restic | rustic) CMD+=(backup "$dir") ;;
	borg-*) CMD+=(create --compression "$(borg_compression "$tool")" "$REPO::a$step" "$dir") ;;
	bupstash) CMD+=(put -q --send-log "$CACHE/bupstash.sendlog" "step=$step" "$dir") ;;
	esac
}

# restore_cmd TOOL WHERE TARGET KIND [--verify]: the restore of the last
# backup (step 2) into the empty directory TARGET, then `sync`, as one
# `sh -c`. KIND is stream (a dump named $STREAM_NAME) or tree.
restore_cmd() {
	local tool="$1" target="$3" kind="$4" verify=("${@:5}")
	base_cmd "$tool" "$2"
	case "$tool" in
	nfrepo) CMD+=(restore latest --target "$target" "${verify[@]}") ;;
	restic) CMD+=(restore latest --target "$target") ;;
	rustic) CMD+=(restore latest "$target") ;;
	borg-*) CMD+=(extract "$REPO::a2") ;;
	bupstash)
		if [[ "$kind" == stream ]]; then
			# `get` writes the stream to stdout.
			# shellcheck disable=SC2016 # $1, $@ belong to the inner shell
			CMD=(sh -c 'f="$1"; shift; "$@" >"$f" && sync' sh "$target/$STREAM_NAME" "${CMD[@]}" get step=2)
			return 0
		fi
		CMD+=(restore --into "$target" step=2)
		;;
	esac
	# borg extracts into the working directory.
	# shellcheck disable=SC2016 # $1, $@ belong to the inner shell
	CMD=(sh -c 'cd "$1" && shift && "$@" && sync' sh "$target" "${CMD[@]}")
}

# timed TOOL LABEL: runs CMD (stdin passes through) and sets M_SECS (wall
# time) and M_RSS (peak RSS, MiB; of the largest process under CMD).
# Returns CMD's exit status.
timed() {
	local tool="$1" label="$2" t0 rc=0
	printf '\n+ [%s] %s\n' "$label" "${CMD[*]}" >>"$LOGS/$tool.log"
	t0="$(now_ns)"
	/usr/bin/time -f %M -o "$TIMEF" "${CMD[@]}" >>"$LOGS/$tool.log" 2>&1 || rc=$?
	M_SECS="$(awk -v ns="$(($(now_ns) - t0))" 'BEGIN { printf "%.3f", ns / 1e9 }')"
	M_RSS="$(tail -n 1 "$TIMEF" | awk '{ printf "%.1f", $1 / 1024 }')"
	if ((rc != 0)); then
		log "$tool: '$label' failed (exit $rc); see $LOGS/$tool.log"
		tail -n 5 "$LOGS/$tool.log" >&2
		return "$rc"
	fi
	log "$tool: $label ${M_SECS}s, peak RSS ${M_RSS} MiB"
}

# record TOOL KEY VALUE: one measurement of this run.
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$RUN" >>"$RESULTS_TSV"; }

repo_bytes() { du -sb "$REPOS/$1" | cut -f1; }
file_bytes() { stat -c %s "$1"; }
# tree_stats DIR: "FILES BYTES" over the regular files below DIR.
tree_stats() { find "$1" -type f -printf '%s\n' | awk '{ n++; b += $1 } END { printf "%d %d\n", n + 0, b + 0 }'; }
mb_per_s() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.3f", b / 1e6 / s }'; }
mb() { awk -v b="$1" 'BEGIN { printf "%.3f", b / 1e6 }'; }

# fresh_target DIR: an empty directory, with whatever was deleted synced away.
fresh_target() {
	release_target "$1"
	mkdir -p "$1"
	if ((FRESH_FS)); then
		local dev
		truncate -s "$RESTORE_FS_BYTES" "$1.img"
		dev="$(losetup --direct-io=on --find --show "$1.img")" || die "losetup failed on $1.img"
		mkfs.ext4 -q -F "$dev" || die "mkfs.ext4 failed on $dev"
		mount "$dev" "$1" || die "mounting $dev on $1 failed"
	fi
	sync
}

# release_target DIR: removes a restore target, unmounting and detaching
# its file system if --fresh-fs made one.
release_target() {
	local dev
	if mountpoint -q "$1"; then
		dev="$(findmnt -n -o SOURCE "$1")"
		umount "$1" || die "unmounting $1 failed"
		losetup -d "$dev" 2>/dev/null || true
	fi
	rm -rf "$1" "$1.img"
}

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

# cached SET PARAM WHAT: whether SET's two dumps are cached and were made
# with the PARAM recorded in SET.done (WHAT names it); if not, removes them.
cached() {
	local marker="$DATA/$1.done" f1 f2
	f1="$(set_file "$1" 1)"
	f2="$(set_file "$1" 2)"
	if [[ -s "$marker" && -s "$f1" && -s "$f2" ]]; then
		if [[ "$(cat "$marker")" == "$2" ]]; then
			log "using cached $f1 and $(basename "$f2")"
			return 0
		fi
		log "cached $1 data set was made with $3 $(cat "$marker"), not $2: making it again"
	fi
	rm -f "$marker" "$f1" "$f2"
	return 1
}

prepare_pgdump() {
	local marker="$DATA/pgdump.done"
	cached pgdump "$PG_SCALE" "pgbench scale" && return 0
	rm -rf "$PG_DIR"
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


redis_cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

start_redis() {
	local i
	if port_open "$REDIS_PORT"; then
		die "port 127.0.0.1:$REDIS_PORT is already in use"
	fi
	rm -rf "$REDIS_DIR"
	mkdir -p "$REDIS_DIR"
	spawn_detached "$BENCH_DIR/redis.pid" "$LOGS/redis.log" \
		redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$REDIS_DIR" --dbfilename dump.rdb \
		--save "" --appendonly no
	for ((i = 0; i < 300; i++)); do
		if redis_cli ping 2>/dev/null | grep -q PONG; then
			REDIS_PID="$(cat "$BENCH_DIR/redis.pid")"
			log "Redis ready on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
			return 0
		fi
		if [[ -s "$BENCH_DIR/redis.pid" ]] && ! kill -0 "$(cat "$BENCH_DIR/redis.pid")" 2>/dev/null; then
			break
		fi
		sleep 0.2
	done
	tail -n 30 "$LOGS/redis.log" >&2
	die "Redis did not start"
}

# redis_stream load BYTES KEYS_FILE | redis_stream change KEYS_FILE: the
# Redis protocol that loads about BYTES of strings and hashes (and writes
# their counts to KEYS_FILE), or that changes 1 % of those keys. Seeded, so
# the same on every machine.
redis_stream() {
	python3 - "$@" <<'PY'
import base64, random, sys
mode = sys.argv[1]
out = sys.stdout.buffer
buf = []
def cmd(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    buf.append(b"".join(parts))
    if len(buf) >= 2000:
        out.write(b"".join(buf))
        buf.clear()
words = (b"alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         b"november oscar papa quebec romeo sierra tango uniform victor whiskey xray").split()
cities = [b"Berlin", b"Paris", b"Lisbon", b"Oslo", b"Vienna", b"Prague", b"Madrid", b"Rome", b"Dublin"]
def session(rnd, i):
    payload = base64.b64encode(rnd.randbytes(rnd.randint(150, 450)))
    return (b'{"user":%d,"token":"%s","ts":%d,"agent":"Mozilla/5.0 (X11; Linux x86_64)","data":"%s"}'
            % (i, rnd.randbytes(16).hex().encode(), 1700000000 + rnd.randint(0, 10**7), payload))
def user(rnd, i):
    name = rnd.choice(words).capitalize() + b" " + rnd.choice(words).capitalize()
    return [b"name", name, b"email", b"user%d@example.com" % i, b"city", rnd.choice(cities),
            b"score", b"%d" % rnd.randint(0, 10**6), b"created", b"%d" % (1600000000 + rnd.randint(0, 10**8)),
            b"last_login", b"%d" % (1700000000 + rnd.randint(0, 10**7)),
            b"bio", b" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 8))),
            b"avatar", rnd.randbytes(8).hex().encode()]
if mode == "load":
    target, keys_file = int(sys.argv[2]), sys.argv[3]
    rnd = random.Random(1)
    sent = strings = hashes = 0
    while sent < target:
        # Two strings for every three hashes: about 60 % of the bytes in strings.
        if strings * 3 < hashes * 2:
            v = session(rnd, strings)
            cmd(b"SET", b"session:%08d" % strings, v)
            sent += len(v) + 30
            strings += 1
        else:
            fields = user(rnd, hashes)
            cmd(b"HSET", b"user:%08d" % hashes, *fields)
            sent += sum(len(f) for f in fields) + 40
            hashes += 1
    with open(keys_file, "w") as f:
        f.write("%d %d\n" % (strings, hashes))
else:
    strings, hashes = map(int, open(sys.argv[2]).read().split())
    rnd = random.Random(2)
    for i in rnd.sample(range(strings), max(1, strings // 100)):
        cmd(b"SET", b"session:%08d" % i, session(rnd, i))
    for i in rnd.sample(range(hashes), max(1, hashes // 100)):
        cmd(b"HSET", b"user:%08d" % i, b"score", b"%d" % rnd.randint(0, 10**6),
            b"last_login", b"%d" % (1710000000 + rnd.randint(0, 10**7)))
out.write(b"".join(buf))
PY
}

# redis_pipe LOG: loads the protocol on stdin with `redis-cli --pipe`;
# fails unless every command succeeded.
redis_pipe() {
	redis_cli --pipe >"$1" 2>&1 || {
		tail -n 5 "$1" >&2
		die "redis-cli --pipe failed"
	}
	grep -q 'errors: 0,' "$1" || {
		tail -n 5 "$1" >&2
		die "redis-cli --pipe reported errors"
	}
}

redis_save() { # FILE
	log "SAVE to $1"
	[[ "$(redis_cli SAVE)" == OK ]] || die "Redis SAVE failed"
	cp "$REDIS_DIR/dump.rdb" "$1.tmp"
	mv "$1.tmp" "$1"
}

prepare_redis() {
	local marker="$DATA/redis.done"
	cached redis "$REDIS_BYTES" "BENCH_REDIS_BYTES" && return 0
	start_redis
	log "loading Redis with about $REDIS_BYTES bytes of strings and hashes"
	redis_stream load "$REDIS_BYTES" "$DATA/redis.keys" | redis_pipe "$LOGS/redis-load.log"
	# The key table grew while loading: give Redis's active rehashing time to
	# finish, so both SAVEs walk the same table in the same order.
	sleep 5
	redis_save "$DATA/redis1.rdb"
	log "changing 1 % of the keys ($(awk '{ printf "%d strings, %d hashes", $1 / 100, $2 / 100 }' "$DATA/redis.keys"))"
	redis_stream change "$DATA/redis.keys" | redis_pipe "$LOGS/redis-change.log"
	redis_save "$DATA/redis2.rdb"
	redis_cli SHUTDOWN NOSAVE >/dev/null 2>&1 || true
	stop_pid "$REDIS_PID" redis-server 60
	REDIS_PID=""
	rm -rf "$REDIS_DIR"
	echo "$REDIS_BYTES" >"$marker"
}

# tree_edit change|revert: changes the files listed in tree.changes in place
# (64 bytes in the middle of each: same inode, same size), or writes their
# original bytes (tree-orig/N) back into the same files. tree.dirty says
# whether the tree is changed.
tree_edit() {
	python3 - "$1" "$DATA" <<'PY'
import os, sys
mode, data = sys.argv[1], sys.argv[2]
paths = open(os.path.join(data, "tree.changes"), "rb").read().split(b"\0")[:-1]
for n, rel in enumerate(paths):
    path = os.path.join(os.fsencode(data), b"tree", rel)
    with open(path, "r+b") as f:
        if mode == "change":
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size // 2 - 32))
            f.write(os.urandom(min(64, size)))
        else:
            orig = open(os.path.join(data, "tree-orig", str(n)), "rb").read()
            f.write(orig)
            f.truncate(len(orig))
PY
	if [[ "$1" == change ]]; then
		: >"$DATA/tree.dirty"
	else
		rm -f "$DATA/tree.dirty"
	fi
}

copy_tree() {
	log "copying /usr/share and /usr/lib into $DATA/tree (cap $TREE_CAP bytes)"
	rm -rf "$DATA/tree" "$DATA/tree-orig" "$DATA/tree.changes" "$DATA/tree.dirty"
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
	# Every 100th non-empty regular file, in sorted order, is the 1 % that
	# changes before each incremental; its original bytes are kept aside.
	tree_stats "$DATA/tree" >"$DATA/tree.done"
}

prepare_tree() {
	if [[ -s "$DATA/tree.done" && -s "$DATA/tree.changes" ]]; then
		log "using cached file tree $DATA/tree"
		if [[ -e "$DATA/tree.dirty" ]]; then
			log "putting back the files an interrupted run changed"
			tree_edit revert
		fi
		return 0
	fi
	if [[ ! -s "$DATA/tree.done" ]]; then
		copy_tree
	fi
	log "keeping aside the 1 % of the tree's files that change before each incremental"
	rm -rf "$DATA/tree-orig" "$DATA/tree.changes" "$DATA/tree.dirty"
	mkdir -p "$DATA/tree-orig"
	python3 - "$DATA" >"$DATA/tree.changes" <<'PY'
import os, shutil, sys
data = os.fsencode(sys.argv[1])
top = os.path.join(data, b"tree")
files = []
for root, dirs, names in os.walk(top):
    for name in names:
        path = os.path.join(root, name)
        if not os.path.islink(path) and os.path.isfile(path) and os.path.getsize(path) > 0:
            files.append(os.path.relpath(path, top))
files.sort()
for n, rel in enumerate(files[::100]):
    shutil.copyfile(os.path.join(top, rel), os.path.join(data, b"tree-orig", b"%d" % n))
    sys.stdout.buffer.write(rel + b"\0")
PY
}

# ---------------------------------------------------------------- benchmarks

# set_file SET N: the data set's Nth dump.
set_file() {
	case "$1" in
	redis) echo "$DATA/redis$2.rdb" ;;
	*) echo "$DATA/$1$2.sql" ;;
	esac
}
# stream_name SET: the name a dump of SET is stored under.
stream_name() {
	case "$1" in
	redis) echo dump.rdb ;;
	*) echo "$1.sql" ;;
	esac
}

# stream_profile SET: the chunk profile nfrepo gives a source of SET's kind.
stream_profile() {
	case "$1" in
	pgdump) echo dump ;;
	*) echo rows ;;
	esac
}

# tree_root TARGET: where the tree landed under TARGET (tools restore it at
# its absolute path, or its contents at the top).
tree_root() {
	local first dir
	first="$(head -z -n 1 "$DATA/tree.changes" | tr -d '\0')"
	for dir in "$1$DATA/tree" "$1/tree" "$1"; do
		if [[ -f "$dir/$first" ]]; then
			echo "$dir"
			return 0
		fi
	done
	return 1
}

# restored_ok SET TARGET: whether TARGET holds what the last backup of SET
# backed up (see the header).
restored_ok() {
	local set="$1" target="$2" out root rel
	if [[ "$set" == tree ]]; then
		if [[ "$(tree_stats "$target")" != "$(cat "$DATA/tree.done")" ]]; then
			log "restored tree has $(tree_stats "$target") (files bytes), expected $(cat "$DATA/tree.done")"
			return 1
		fi
		root="$(tree_root "$target")" || {
			log "cannot find the tree's files under $target"
			return 1
		}
		while IFS= read -r -d '' rel; do
			cmp -s "$root/$rel" "$DATA/tree/$rel" || {
				log "restored $rel differs from the changed file"
				return 1
			}
		done <"$DATA/tree.changes"
		return 0
	fi
	out="$(find "$target" -type f -name "$STREAM_NAME")"
	if [[ -n "$out" && "$(wc -l <<<"$out")" == 1 ]] && cmp -s "$out" "$(set_file "$set" 2)"; then
		return 0
	fi
	log "the restored $STREAM_NAME differs from $(set_file "$set" 2) (or is missing)"
	return 1
}

# put_cmd TOOL WHERE SET STEP: the backup command of step 1 (first) or 2
# (incremental) of SET; sets CMD and IN (the file to redirect stdin from).
put_cmd() {
	local tool="$1" where="$2" set="$3" step="$4"
	if [[ "$set" == tree ]]; then
		put_tree_cmd "$tool" "$where" "$DATA/tree" "$step"
		IN=/dev/null
	else
		IN="$(set_file "$set" "$step")"
		put_stdin_cmd "$tool" "$where" "$STREAM_NAME" "$step"
	fi
}

# restore_row TOOL WHERE SET PREFIX [--verify]: one timed restore into an
# empty target, recorded under SET_PREFIX*.
restore_row() {
	local tool="$1" where="$2" set="$3" prefix="$4" target="$RESTORE/$1" kind=stream bytes
	[[ "$set" == tree ]] && kind=tree
	fresh_target "$target"
	if ((COLD)); then
		sync
		echo 3 >/proc/sys/vm/drop_caches || die "cannot drop the page cache (--cold)"
	fi
	restore_cmd "$tool" "$where" "$target" "$kind" "${@:5}"
	timed "$tool" "$set $prefix" </dev/null || return 1
	record "$tool" "${set}_${prefix}_s" "$M_SECS"
	if [[ "$set" == tree ]]; then
		bytes="$(awk '{ print $2 }' "$DATA/tree.done")"
	else
		bytes="$(file_bytes "$(set_file "$set" 2)")"
	fi
	record "$tool" "${set}_${prefix}_mbs" "$(mb_per_s "$bytes" "$M_SECS")"
	record "$tool" "${set}_${prefix}_rss" "$M_RSS"
	if restored_ok "$set" "$target"; then
		record "$tool" "${set}_${prefix}_ok" 1
	else
		log "$tool: $set $prefix: wrong restore"
		record "$tool" "${set}_${prefix}_ok" 0
	fi
	release_target "$target"
}

# bench_tool TOOL SET: one run of TOOL on SET (see the header).
bench_tool() {
	local tool="$1" set="$2" s0 s1 s2 bytes1 s3=0
	STREAM_NAME="$(stream_name "$set")"
	STREAM_PROFILE="$(stream_profile "$set")"
	if [[ "$set" == tree ]]; then
		bytes1="$(awk '{ print $2 }' "$DATA/tree.done")"
		[[ ! -e "$DATA/tree.dirty" ]] || tree_edit revert
	else
		bytes1="$(file_bytes "$(set_file "$set" 1)")"
	fi
	if ((USE_S3)) && can_s3 "$tool"; then
		s3=1
	fi
	rm -rf "${REPOS:?}/$tool" "${CACHE:?}"
	mkdir -p "$CACHE"
	init_cmd "$tool" local
	timed "$tool" init </dev/null || return 1
	s0="$(repo_bytes "$tool")"

	put_cmd "$tool" local "$set" 1
	timed "$tool" "$set first backup" <"$IN" || return 1
	record "$tool" "${set}_first_s" "$M_SECS"
	record "$tool" "${set}_first_mbs" "$(mb_per_s "$bytes1" "$M_SECS")"
	record "$tool" "${set}_first_rss" "$M_RSS"
	s1="$(repo_bytes "$tool")"
	record "$tool" "${set}_first_added_mb" "$(mb $((s1 - s0)))"
	if ((s3)); then
		init_cmd "$tool" s3
		timed "$tool" "init on S3" </dev/null || return 1
		put_cmd "$tool" s3 "$set" 1
		timed "$tool" "$set first backup to S3" <"$IN" || return 1
		record "$tool" "${set}_s3first_s" "$M_SECS"
	fi

	[[ "$set" != tree ]] || tree_edit change
	put_cmd "$tool" local "$set" 2
	timed "$tool" "$set incremental" <"$IN" || return 1
	record "$tool" "${set}_incr_s" "$M_SECS"
	record "$tool" "${set}_incr_rss" "$M_RSS"
	s2="$(repo_bytes "$tool")"
	record "$tool" "${set}_incr_added_mb" "$(mb $((s2 - s1)))"
	record "$tool" "${set}_repo_mb" "$(mb "$s2")"
	if ((s3)); then
		put_cmd "$tool" s3 "$set" 2
		timed "$tool" "$set incremental to S3" <"$IN" || return 1
		record "$tool" "${set}_s3incr_s" "$M_SECS"
	fi

	restore_row "$tool" local "$set" restore || return 1
	if [[ "$tool" == nfrepo ]]; then
		restore_row "$tool" local "$set" verify --verify || return 1
	fi
	if ((s3)); then
		restore_row "$tool" s3 "$set" s3restore || return 1
		s3_delete "$(repo_of "$tool" s3)"
	fi
	rm -rf "${REPOS:?}/$tool"
}

# run_bench SET: RUNS rounds; round r starts with the r-th tool.
run_bench() {
	local set="$1" i n="${#TOOLS[@]}" tool
	for ((RUN = 1; RUN <= RUNS; RUN++)); do
		for ((i = 0; i < n; i++)); do
			tool="${TOOLS[$(((i + RUN - 1) % n))]}"
			log "== $set, run $RUN/$RUNS: $tool"
			if [[ "$set" == tree ]]; then
				warm "$DATA/tree"
			else
				warm "$(set_file "$set" 1)" "$(set_file "$set" 2)"
			fi
			bench_tool "$tool" "$set" || record "$tool" "${set}_failed" 1
			[[ ! -e "$DATA/tree.dirty" ]] || tree_edit revert
			rm -rf "${REPOS:?}/$tool" "${RESTORE:?}/$tool"
		done
	done
}

SETS=()
for set in dump pgdump redis tree; do
	wants "$set" || continue
	SETS+=("$set")
	"prepare_$set"
done
((PREPARE_ONLY == 0)) || exit 0

: >"$RESULTS_TSV"
RUN=0
for set in "${SETS[@]}"; do
	run_bench "$set"
done

# ---------------------------------------------------------------- report

# stats TOOL KEY: "MEDIAN MIN MAX COUNT" of the recorded values ("- - - 0" without any).
stats() {
	awk -F'\t' -v t="$1" -v k="$2" '$1 == t && $2 == k { v[n++] = $3 + 0 }
		END {
			if (n == 0) { print "- - - 0"; exit }
			for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
			m = (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
			print m, v[0], v[n - 1], n
		}' "$RESULTS_TSV"
}
fmt_num() { awk -v x="$1" 'BEGIN { printf (x < 10 ? "%.2f" : (x < 1000 ? "%.1f" : "%.0f")), x }'; }
# cell MEDIAN MIN MAX COUNT: "median (min–max)", or the median alone for one run.
cell() {
	if (($4 == 0)); then
		echo "n/a"
	elif (($4 == 1)); then
		fmt_num "$1"
	else
		echo "$(fmt_num "$1") ($(fmt_num "$2")–$(fmt_num "$3"))"
	fi
}
# all_ok TOOL KEY: yes when every run verified, NO when one did not, n/a without data.
all_ok() {
	awk -F'\t' -v t="$1" -v k="$2" '$1 == t && $2 == k { n++; bad += ($3 != 1) }
		END { print (n == 0 ? "n/a" : (bad ? "NO" : "yes")) }' "$RESULTS_TSV"
}
failures() { awk -F'\t' -v t="$1" -v k="$2_failed" '$1 == t && $2 == k { n++ } END { print n + 0 }' "$RESULTS_TSV"; }

# applies TOOL ROW_KEY: whether TOOL can have a value in the row.
applies() {
	case "$2" in
	*_verify_*) [[ "$1" == nfrepo ]] ;;
	*_s3*) can_s3 "$1" && ((USE_S3)) ;;
	*) return 0 ;;
	esac
}

# Rows: KEY SUFFIX|label|kind. time: seconds (speed ratio best/nfrepo);
# rate: MB/s (nfrepo/best); bytes, rss: lower is better (nfrepo/best);
# verify: nfrepo's --verify restore against the peers' plain restores; ok:
# the restore check.
ROWS=(
	"first_s|first backup, s|time"
	"first_mbs|first backup, MB/s|rate"
	"first_added_mb|first backup, MB added|bytes"
	"first_rss|first backup, peak RSS MiB|rss"
	"incr_s|incremental, s|time"
	"incr_added_mb|incremental, MB added|bytes"
	"incr_rss|incremental, peak RSS MiB|rss"
	"restore_s|restore (local) + sync, s|time"
	"restore_mbs|restore (local) + sync, MB/s|rate"
	"restore_rss|restore (local), peak RSS MiB|rss"
	"verify_s|restore --verify (local) + sync, s|verify"
	"verify_rss|restore --verify (local), peak RSS MiB|rss"
	"s3first_s|first backup to S3, s|time"
	"s3incr_s|incremental to S3, s|time"
	"s3restore_s|restore from S3 + sync, s|time"
	"s3restore_mbs|restore from S3 + sync, MB/s|rate"
	"s3restore_rss|restore from S3, peak RSS MiB|rss"
	"restore_ok|restore identical to the source|ok"
	"verify_ok|restore --verify identical to the source|ok"
	"s3restore_ok|restore from S3 identical to the source|ok"
)

# report_row SET ROW: one line of the table.
report_row() {
	local set="$1" key="$1_${2%%|*}" rest="${2#*|}" label kind tool line best="" best_v="" v peer_key
	local -a st
	label="${rest%|*}"
	kind="${rest##*|}"
	line="| $set: $label |"
	for tool in "${TOOLS[@]}"; do
		if ! applies "$tool" "$key"; then
			line+=" – |"
		elif [[ "$kind" == ok ]]; then
			line+=" $(all_ok "$tool" "$key") |"
		else
			read -r -a st < <(stats "$tool" "$key")
			line+=" $(cell "${st[@]}") |"
		fi
	done
	[[ "$kind" == ok ]] && {
		echo "$line | |"
		return 0
	}
	# The best peer: for --verify, the fastest plain restore.
	peer_key="$key"
	[[ "$kind" == verify ]] && peer_key="${set}_restore_s"
	for tool in "${TOOLS[@]}"; do
		if [[ "$tool" == nfrepo ]] || ! applies "$tool" "$peer_key"; then
			continue
		fi
		# A peer that restored something else is nobody's benchmark.
		if [[ "$(all_ok "$tool" "${set}_restore_ok")" == NO || "$(all_ok "$tool" "${set}_s3restore_ok")" == NO ]]; then
			continue
		fi
		read -r -a st < <(stats "$tool" "$peer_key")
		((st[3] > 0)) || continue
		v="${st[0]}"
		if [[ -z "$best" ]] || awk -v a="$v" -v b="$best_v" -v k="$kind" \
			'BEGIN { exit !(k == "rate" ? a > b : a < b) }'; then
			best="$tool"
			best_v="$v"
		fi
	done
	read -r -a st < <(stats nfrepo "$key")
	if [[ -z "$best" ]]; then
		echo "$line – | – |"
		return 0
	fi
	line+=" $best $(fmt_num "$best_v") |"
	if ! [[ " ${TOOLS[*]} " == *" nfrepo "* ]] || ((st[3] == 0)); then
		echo "$line n/a |"
		return 0
	fi
	case "$kind" in
	time | verify) line+=" $(awk -v b="$best_v" -v a="${st[0]}" 'BEGIN { printf "%.2f× speed", (a > 0 ? b / a : 0) }')" ;;
	rate) line+=" $(awk -v b="$best_v" -v a="${st[0]}" 'BEGIN { printf "%.2f× speed", (b > 0 ? a / b : 0) }')" ;;
	bytes) line+=" $(awk -v b="$best_v" -v a="${st[0]}" 'BEGIN { if (b > 0) printf "%.2f× bytes", a / b; else print "n/a" }')" ;;
	rss) line+=" $(awk -v b="$best_v" -v a="${st[0]}" 'BEGIN { printf "%.2f× RSS", (b > 0 ? a / b : 0) }')" ;;
	esac
	if [[ "$kind" == verify ]]; then
		local -a plain
		read -r -a plain < <(stats nfrepo "${set}_restore_s")
		if ((plain[3] > 0)); then
			line+="; $(awk -v v="${st[0]}" -v p="${plain[0]}" 'BEGIN { printf "%+.0f %% over nfrepo'"'"'s restore", (v / p - 1) * 100 }')"
		fi
	fi
	echo "$line |"
}

version_of() {
	case "$1" in
	nfrepo) "$NFREPO_BIN" --version 2>/dev/null | head -n 1 ;;
	restic) restic version | head -n 1 ;;
	rustic) "$RUSTIC" --version | head -n 1 ;;
	borg-*) echo "$(borg --version), --encryption $BORG_ENCRYPTION, --compression $(borg_compression "$1")" ;;
	bupstash) "$BUPSTASH" version 2>/dev/null | head -n 1 ;;
	esac
}

report() {
	local row set tool header sep
	echo "# nfrepo against its peers"
	echo
	echo "- $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; median of $RUNS run(s) (min–max); MB = 10^6 bytes"
	for tool in "${TOOLS[@]}"; do
		echo "- $tool: $(version_of "$tool")"
	done
	echo "- nfrepo binary: $NFREPO_BIN (git $(git -C "$NFREPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') of the script)"
	for note in "${NOTES[@]}"; do echo "- $note"; done
	if ((FRESH_FS)); then
		echo "- restores: each into a new ext4 file system (loop device with direct I/O, --fresh-fs), then \`sync\`"
	else
		echo "- restores: each into an emptied directory of $BENCH_DIR's file system ($(findmnt -n -o FSTYPE --target "$BENCH_DIR")), then \`sync\`"
	fi
	if ((COLD)); then
		echo "- restores: the page cache dropped before each (--cold): every repository read from the disk"
	fi
	for set in "${SETS[@]}"; do
		case "$set" in
		dump) echo "- dump: dump1.sql $(mb "$(file_bytes "$DATA/dump1.sql")") MB, dump2.sql $(mb "$(file_bytes "$DATA/dump2.sql")") MB ($TABLES x $TABLE_SIZE sysbench rows, ${WRITE_SECONDS}s of oltp_write_only between them)" ;;
		pgdump) echo "- pgdump: pgdump1.sql $(mb "$(file_bytes "$DATA/pgdump1.sql")") MB, pgdump2.sql $(mb "$(file_bytes "$DATA/pgdump2.sql")") MB (plain pg_dump of PostgreSQL $("$PG_BIN/postgres" --version | awk '{ print $3 }') at pgbench scale $(cat "$DATA/pgdump.done"), ${WRITE_SECONDS}s of pgbench -c $PGBENCH_CLIENTS -j $PGBENCH_THREADS between them)" ;;
		redis) echo "- redis: redis1.rdb $(mb "$(file_bytes "$DATA/redis1.rdb")") MB, redis2.rdb $(mb "$(file_bytes "$DATA/redis2.rdb")") MB ($(redis-server --version | awk '{ print $3 }'); $(awk '{ printf "%d strings, %d hashes, 1 %% of each changed", $1, $2 }' "$DATA/redis.keys") between them)" ;;
		tree) echo "- tree: $(awk '{ printf "%d files, %.1f MB", $1, $2 / 1e6 }' "$DATA/tree.done") from /usr/share and /usr/lib; $(tr -cd '\0' <"$DATA/tree.changes" | wc -c) files changed in place before the incremental" ;;
		esac
	done
	if ((USE_S3)); then
		echo "- S3: $S3_SERVER (SeaweedFS on loopback), bucket $S3_BUCKET; borg and bupstash have no S3 backend (–)"
		if [[ -n "$REMOTE_S3" ]]; then
			echo "- S3 reached as a remote server: through remote-s3, ${REMOTE_S3%,*} ms each way, ${REMOTE_S3#*,} MB/s per connection (--remote-s3)"
		fi
	else
		echo "- no S3 rows (--no-s3, or no S3 server)"
	fi
	echo "- every restore is timed as \`sh -c \"TOOL restore … && sync\"\` into an empty, synced target"
	echo "- best peer: lowest time, bytes or RSS, highest MB/s; nfrepo ÷ best: speed = best peer's time / nfrepo's (above 1: nfrepo faster), bytes and RSS = nfrepo's / best peer's (below 1: nfrepo smaller); the --verify row is set against the peers' plain restores; a peer whose restore of a data set came back wrong is not taken as that data set's best peer"
	echo
	header="| metric |"
	sep="|---|"
	for tool in "${TOOLS[@]}"; do
		header+=" $tool |"
		sep+="---:|"
	done
	echo "$header best peer | nfrepo ÷ best |"
	echo "$sep---|---|"
	for set in "${SETS[@]}"; do
		for row in "${ROWS[@]}"; do
			case "$row" in
			verify_*) [[ " ${TOOLS[*]} " == *" nfrepo "* ]] || continue ;;
			s3*) ((USE_S3)) || continue ;;
			esac
			report_row "$set" "$row"
		done
		if grep -q $'\t'"${set}_failed"$'\t' "$RESULTS_TSV"; then
			header="| $set: runs that failed |"
			for tool in "${TOOLS[@]}"; do header+=" $(failures "$tool" "$set") |"; done
			echo "$header | |"
		fi
	done
}

report | tee "$BENCH_DIR/results.md"
log "results in $BENCH_DIR/results.md, raw values in $RESULTS_TSV, tool output in $LOGS/"
