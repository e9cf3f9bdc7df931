#!/usr/bin/env bash
# Starts a loopback-only SeaweedFS (`weed mini`) as the S3 server for tests.
#
#   scripts/start-seaweedfs.sh DIR [PORT_SET]
#
# PORT_SET picks the instance: 1 (the default) or 2, a second region beside
# the first, e.g. for replication tests. Each of weed's servers also listens
# on its port + 10000 for gRPC, so set 2 is not DESIGN.md §5's 28333/29333/
# 29340/28888: those are exactly set 1's gRPC ports.
#
# Data, DIR/s3.json, DIR/weed.log and DIR/weed.pid live in DIR. On success
# prints the server's pid (also its process-group id) on stdout and leaves it
# running in the background; stop it with `kill -- -PID`. Running it again
# while that server is up just prints the same pid.
#
# S3: endpoint http://127.0.0.1:18333 (port set 2: http://127.0.0.1:18533),
#     bucket nfrepo-test, access key nfrepo-test, secret key nfrepo-test-secret;
#     and bucket nfrepo-lock, made with S3 Object Lock enabled (versioned), for
#     the object-lock tests (SeaweedFS enforces retention: format-spec/object-lock.md).
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

(($# == 1 || $# == 2)) || die "usage: $0 DIR [PORT_SET (1 or 2)]"
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"

case "${2:-1}" in
1) S3_PORT=18333 MASTER_PORT=19333 VOLUME_PORT=19340 FILER_PORT=18888 ;;
2) S3_PORT=18533 MASTER_PORT=19533 VOLUME_PORT=19540 FILER_PORT=18988 ;;
*) die "unknown port set ${2}: expected 1 or 2" ;;
esac
BUCKET=nfrepo-test
LOCK_BUCKET=nfrepo-lock
ACCESS_KEY=nfrepo-test
SECRET_KEY=nfrepo-test-secret
ENDPOINT="http://127.0.0.1:$S3_PORT"
TIMEOUT_S=60

# Idempotent: a server from an earlier run on DIR that still answers is reused.
if [[ -s "$DIR/weed.pid" ]]; then
	old_pid="$(cat "$DIR/weed.pid")"
	if kill -0 "$old_pid" 2>/dev/null &&
		s3_head_bucket "$ENDPOINT" "$BUCKET" "$ACCESS_KEY" "$SECRET_KEY" >/dev/null; then
		s3_ensure_lock_bucket "$ENDPOINT" "$LOCK_BUCKET" "$ACCESS_KEY" "$SECRET_KEY" ||
			die "cannot create the object-lock bucket $LOCK_BUCKET on $ENDPOINT"
		log "SeaweedFS already running on $ENDPOINT (pid $old_pid)"
		echo "$old_pid"
		exit 0
	fi
	rm -f "$DIR/weed.pid"
fi
for port in "$S3_PORT" "$MASTER_PORT" "$VOLUME_PORT" "$FILER_PORT" \
	$((S3_PORT + 10000)) $((MASTER_PORT + 10000)) $((VOLUME_PORT + 10000)) $((FILER_PORT + 10000)); do
	if port_open "$port"; then
		die "port 127.0.0.1:$port is already in use (another SeaweedFS? stop it first)"
	fi
done

WEED="$(weed_bin)"

cat >"$DIR/s3.json" <<EOF
{
  "identities": [
    {
      "name": "nfrepo-test",
      "credentials": [
        { "accessKey": "$ACCESS_KEY", "secretKey": "$SECRET_KEY" }
      ],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }
  ]
}
EOF

# Volumes of 256 MiB instead of weed's 1 GiB, and a fixed ceiling of 1000
# of them. Left to itself (`-volume.max=0`) weed allows free disk / volume
# size volumes and recounts as the disk fills, so once other work (a fresh
# clone's builds, 13 GiB) had used most of the disk it refused every new
# volume, and each write then failed with InternalError ("No writable volumes
# and no free volumes left") with hundreds of MiB still free: six S3 tests
# failed so in one CI run, and with 182 MiB free on a 3 GiB disk weed took
# one bucket and refused the next five, where a fixed ceiling took all six.
# Volumes grow as written and reserve nothing, so the ceiling costs nothing;
# the real limit stays the disk, where weed turns its volumes read-only at
# 1 % free (test.sh warns before that).
spawn_detached "$DIR/weed.pid" "$DIR/weed.log" \
	"$WEED" mini -dir="$DIR" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
	-webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 \
	-s3.config="$DIR/s3.json" -s3.port="$S3_PORT" -master.port="$MASTER_PORT" \
	-volume.port="$VOLUME_PORT" -filer.port="$FILER_PORT" -bucket="$BUCKET" \
	-master.volumeSizeLimitMB=256 -volume.max=1000

started=0
pid=""
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
	if ((started == 0)) && [[ -n "$pid" ]]; then
		stop_pid "$pid" SeaweedFS
		rm -f "$DIR/weed.pid"
	fi
}
trap cleanup EXIT

# Wait for the wrapper to record the pid, then for a signed HEAD of the bucket
# to succeed: the S3 port can open before the bucket exists.
deadline=$((SECONDS + TIMEOUT_S))
status=000
while ((SECONDS < deadline)); do
	[[ -z "$pid" && -s "$DIR/weed.pid" ]] && pid="$(cat "$DIR/weed.pid")"
	if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
		log "SeaweedFS exited during start-up; last lines of $DIR/weed.log:"
		tail -n 40 "$DIR/weed.log" >&2 || true
		exit 1
	fi
	if [[ -n "$pid" ]] && status="$(s3_head_bucket "$ENDPOINT" "$BUCKET" "$ACCESS_KEY" "$SECRET_KEY")"; then
		s3_ensure_lock_bucket "$ENDPOINT" "$LOCK_BUCKET" "$ACCESS_KEY" "$SECRET_KEY" ||
			die "cannot create the object-lock bucket $LOCK_BUCKET on $ENDPOINT"
		started=1
		log "SeaweedFS ready on $ENDPOINT (bucket $BUCKET, pid $pid, log $DIR/weed.log)"
		echo "$pid"
		exit 0
	fi
	sleep 0.3
done

log "SeaweedFS did not answer on $ENDPOINT within ${TIMEOUT_S}s (last HEAD status $status); last lines of $DIR/weed.log:"
tail -n 40 "$DIR/weed.log" >&2 || true
exit 1
