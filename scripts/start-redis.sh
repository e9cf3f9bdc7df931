#!/usr/bin/env bash
# Starts a loopback-only Redis for tests.
#
#   scripts/start-redis.sh DIR
#
# The data directory (dump.rdb, appendonlydir), redis.log and redis.pid live
# in DIR. On success prints the server's pid on stdout and leaves it running
# in the background; stop it with `kill PID`. Running it again while that
# server is up just prints the same pid.
#
# Redis: 127.0.0.1:16379, no password, AOF on (so appendonlydir exists).
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

(($# == 1)) || die "usage: $0 DIR"
mkdir -p "$1"
DIR="$(cd "$1" && pwd)"
PORT="${NFREPO_REDIS_PORT:-16379}"
TIMEOUT_S=30

if [[ -s "$DIR/redis.pid" ]] && kill -0 "$(cat "$DIR/redis.pid")" 2>/dev/null &&
	redis-cli -h 127.0.0.1 -p "$PORT" ping >/dev/null 2>&1; then
	log "Redis already running on 127.0.0.1:$PORT (pid $(cat "$DIR/redis.pid"))"
	cat "$DIR/redis.pid"
	exit 0
fi
port_open "$PORT" && die "port 127.0.0.1:$PORT is already in use (another Redis? stop it first)"

redis-server --port "$PORT" --bind 127.0.0.1 --dir "$DIR" --daemonize yes \
	--pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" --appendonly yes --save ""

deadline=$((SECONDS + TIMEOUT_S))
while ((SECONDS < deadline)); do
	if [[ -s "$DIR/redis.pid" ]] && redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG; then
		log "Redis ready on 127.0.0.1:$PORT (pid $(cat "$DIR/redis.pid"), log $DIR/redis.log)"
		cat "$DIR/redis.pid"
		exit 0
	fi
	sleep 0.2
done
log "Redis did not answer on 127.0.0.1:$PORT within ${TIMEOUT_S}s; last lines of $DIR/redis.log:"
tail -n 40 "$DIR/redis.log" >&2 || true
exit 1
